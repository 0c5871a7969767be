//! `analysis-bench`: the per-leg cost of call analysis (decode + VAD + turn-taking) on one core,
//! as a multiple of real time, on the corpus recordings.
//!
//! Setup (not timed): every corpus scenario's two legs are read and G.711 µ-law encoded into
//! 20 ms RTP payloads (160 bytes), as they would arrive from the relay.
//!
//! Timed, single-threaded, each repeated over all scenarios until at least `--seconds` have
//! passed (after one untimed warm-up pass):
//! - `full`: per 20 ms packet and leg, [`Decoder::decode_into`] (PCMU) then
//!   [`CallAnalysis::push`] (10 ms frames → VAD → turn-taking), events polled, summary at the end.
//! - `decode`: the PCMU decoding alone.
//! - `vad`: the detector alone on the decoded PCM, one decision per 10 ms frame and leg.
//! - `turns`: [`TurnTaking`] alone on precomputed (speech, strong) decisions of both legs
//!   (`handle_decisions`, which `handle_frame` wraps), events polled, summary at the end.
//!
//! `full`, `vad` and `turns` run once per VAD kind (energy, webrtc). CPU time is the process's
//! user + system time from `getrusage(RUSAGE_SELF)` (µs resolution), cross-checked against
//! `/proc/self/stat` utime + stime (clock ticks); the bench has one thread, so that is one core.
//! "Per leg" divides the CPU time evenly between the two legs: a leg-second of audio per
//! (CPU-second / 2). The turn analyzer is shared by both legs, so its half is an attribution.
//!
//! Output: a table, then one JSON line (starts with `{"bench":"analysis"`).

use anyhow::{bail, Result};
use clap::Parser;
use hearken::analysis::pipeline::{analyze_pcm, AnalysisConfig, CallAnalysis};
use hearken::analysis::turns::{Party, TurnParams, TurnTaking};
use hearken::analysis::vad::{self, EnergyParams, VadKind, FRAME, RATE};
use hearken::analysis::wav;
use hearken::codec::{g711, Codec, Decoder};
use hearken::sys::{cpu_s, machine_busy_s, Who};
use serde_json::json;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Samples per RTP packet (20 ms at 8 kHz).
const PACKET: usize = 160;
/// The goal from the issue: at least this many times real time per leg on one core.
const GOAL_X: f64 = 1000.0;

/// Per-leg analysis cost (decode + VAD + turns) as a multiple of real time, on one core.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Corpus directory with one sub-directory per scenario (customer.wav, agent.wav).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/dev"))]
    corpus: PathBuf,
    /// Minimum measured time per stage, seconds.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
}

// ---------------------------------------------------------------------------------------------
// CPU time

// ---------------------------------------------------------------------------------------------
// Corpus

struct Scenario {
    name: String,
    /// The WAV samples per leg (customer, agent).
    wav: [Vec<i16>; 2],
    /// Decoded PCM per leg: the µ-law round trip of the WAV, what the timed path analyses.
    pcm: [Vec<i16>; 2],
    /// Samples the µ-law round trip changed.
    changed: usize,
    /// 20 ms µ-law payloads per leg.
    payloads: [Vec<Vec<u8>>; 2],
    /// Call length, seconds (the longer leg).
    duration_s: f64,
}

fn load_corpus(dir: &Path) -> Result<Vec<Scenario>> {
    let calls = wav::read_calls(dir)?;
    if calls.is_empty() {
        bail!("no scenarios (customer.wav + agent.wav) under {}", dir.display());
    }
    let mut out = Vec::new();
    for (name, legs) in calls {
        let mut payloads: [Vec<Vec<u8>>; 2] = Default::default();
        let mut pcm: [Vec<i16>; 2] = Default::default();
        for i in 0..2 {
            for chunk in legs[i].chunks(PACKET) {
                let mut p = Vec::with_capacity(PACKET);
                g711::encode_ulaw_into(chunk, &mut p);
                payloads[i].push(p);
            }
            let mut dec = Decoder::new(Codec::Pcmu)?;
            for p in &payloads[i] {
                dec.decode_into(p, &mut pcm[i])?;
            }
        }
        let n = legs[0].len().max(legs[1].len());
        let changed = (0..2).map(|i| pcm[i].iter().zip(&legs[i]).filter(|(a, b)| a != b).count()).sum();
        out.push(Scenario { name, wav: legs, pcm, changed, payloads, duration_s: n as f64 / RATE as f64 });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Stages

fn cfg_for(kind: VadKind) -> AnalysisConfig {
    AnalysisConfig { vad: kind, ..Default::default() }
}

fn kind_name(kind: VadKind) -> &'static str {
    match kind {
        VadKind::Energy => "energy",
        VadKind::Webrtc => "webrtc",
    }
}

/// The live path: decode each leg's packet and push it at its sample position.
fn run_full(corpus: &[Scenario], cfg: &AnalysisConfig, buf: &mut Vec<i16>) -> u64 {
    let mut sink = 0u64;
    for s in corpus {
        let mut decs = [Decoder::new(Codec::Pcmu).expect("pcmu"), Decoder::new(Codec::Pcmu).expect("pcmu")];
        let mut a = CallAnalysis::new(cfg, FRAME);
        let n = s.payloads[0].len().max(s.payloads[1].len());
        for k in 0..n {
            for (i, party) in [Party::Customer, Party::Agent].into_iter().enumerate() {
                let Some(p) = s.payloads[i].get(k) else {
                    continue;
                };
                buf.clear();
                let _ = decs[i].decode_into(p, buf);
                a.push(party, (k * PACKET) as u64, buf);
            }
            while a.poll_event().is_some() {
                sink += 1;
            }
        }
        let sum = a.finish();
        while a.poll_event().is_some() {
            sink += 1;
        }
        sink += sum.utterances.len() as u64;
    }
    sink
}

fn run_decode(corpus: &[Scenario], buf: &mut Vec<i16>) -> u64 {
    let mut sink = 0u64;
    for s in corpus {
        for leg in &s.payloads {
            let mut dec = Decoder::new(Codec::Pcmu).expect("pcmu");
            for p in leg {
                buf.clear();
                let _ = dec.decode_into(black_box(p), buf);
                sink = sink.wrapping_add(black_box(&*buf)[buf.len() / 2] as u64);
            }
        }
    }
    sink
}

fn run_vad(corpus: &[Scenario], kind: VadKind) -> u64 {
    let params = EnergyParams::default();
    let mut sink = 0u64;
    for s in corpus {
        for leg in &s.pcm {
            let mut v = vad::make(kind, &params);
            for f in leg.chunks_exact(FRAME) {
                let d = v.decide(black_box(f));
                sink += d.speech as u64 + d.strong as u64;
            }
        }
    }
    sink
}

type Decisions = Vec<[(bool, bool); 2]>;

/// Per scenario, per 10 ms frame: (speech, strong) of both legs, as the pipeline feeds them.
fn precompute_decisions(corpus: &[Scenario], kind: VadKind) -> Vec<Decisions> {
    let params = EnergyParams::default();
    corpus
        .iter()
        .map(|s| {
            let mut v = [vad::make(kind, &params), vad::make(kind, &params)];
            let n = s.pcm[0].len().max(s.pcm[1].len()) / FRAME;
            (0..n)
                .map(|k| {
                    let mut d = [(false, false); 2];
                    for i in 0..2 {
                        let mut f = [0i16; FRAME];
                        for (j, x) in f.iter_mut().enumerate() {
                            *x = s.pcm[i].get(k * FRAME + j).copied().unwrap_or(0);
                        }
                        let r = v[i].decide(&f);
                        d[i] = (r.speech, r.strong);
                    }
                    d
                })
                .collect()
        })
        .collect()
}

fn run_turns(decisions: &[Decisions], params: &TurnParams) -> u64 {
    let mut sink = 0u64;
    for sc in decisions {
        let mut t = TurnTaking::new(params.clone(), 10);
        for d in sc {
            t.handle_decisions(black_box(*d));
            while t.poll_event().is_some() {
                sink += 1;
            }
        }
        let sum = t.finish();
        sink += sum.utterances.len() as u64;
    }
    sink
}

// ---------------------------------------------------------------------------------------------
// Measurement

struct Measurement {
    stage: String,
    vad: Option<&'static str>,
    passes: u64,
    wall_s: f64,
    cpu_s: f64,
    cpu_stat_s: f64,
    /// CPU seconds other processes used on the machine during the window.
    other_cpu_s: f64,
    /// Call seconds (both legs) per pass.
    call_s_per_pass: f64,
}

impl Measurement {
    fn call_s(&self) -> f64 {
        self.call_s_per_pass * self.passes as f64
    }
    /// Call seconds (two legs each) per CPU second.
    fn call_x(&self) -> f64 {
        self.call_s() / self.cpu_s
    }
    /// Leg-seconds per CPU second: per leg, the CPU time split evenly between the two legs.
    fn leg_x(&self) -> f64 {
        2.0 * self.call_x()
    }
    /// Nanoseconds of CPU per 10 ms frame per leg.
    fn ns_per_leg_frame(&self) -> f64 {
        self.cpu_s * 1e9 / (self.call_s() * 100.0 * 2.0)
    }
    fn json(&self) -> serde_json::Value {
        json!({
            "stage": self.stage,
            "vad": self.vad,
            "passes": self.passes,
            "wall_s": round3(self.wall_s),
            "cpu_s": round3(self.cpu_s),
            "cpu_stat_s": round3(self.cpu_stat_s),
            "other_cpu_s": round3(self.other_cpu_s),
            "call_audio_s": round3(self.call_s()),
            "call_x_realtime": self.call_x().round(),
            "per_leg_x_realtime": self.leg_x().round(),
            "wall_per_leg_x_realtime": (2.0 * self.call_s() / self.wall_s).round(),
            "ns_per_leg_frame": round3(self.ns_per_leg_frame()),
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One untimed warm-up pass, then passes until `min` has elapsed.
fn measure(stage: &str, vad: Option<&'static str>, call_s_per_pass: f64, min: Duration, mut pass: impl FnMut() -> u64) -> Measurement {
    black_box(pass());
    let (c0, s0, m0, t0) =
        (cpu_s(Who::Process), hearken::sys::stat_cpu_s(std::path::Path::new("/proc/self/stat")), machine_busy_s(), Instant::now());
    let mut passes = 0u64;
    while t0.elapsed() < min || passes == 0 {
        black_box(pass());
        passes += 1;
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let (c1, s1, m1) = (cpu_s(Who::Process), hearken::sys::stat_cpu_s(std::path::Path::new("/proc/self/stat")), machine_busy_s());
    Measurement {
        stage: stage.to_string(),
        vad,
        passes,
        wall_s,
        cpu_s: c1 - c0,
        cpu_stat_s: s1 - s0,
        other_cpu_s: (m1 - m0 - (s1 - s0)).max(0.0),
        call_s_per_pass,
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be a positive number");
    }
    let min = Duration::from_secs_f64(args.seconds);
    let corpus = load_corpus(&args.corpus)?;
    let call_s: f64 = corpus.iter().map(|s| s.duration_s).sum();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = hearken::sys::cpu_model();
    println!(
        "analysis-bench: {} scenarios, {:.1} s of call audio per pass ({:.1} leg-seconds), \
         ≥ {:.1} s per stage, 1 thread; nproc {nproc}, CPU {cpu}",
        corpus.len(),
        call_s,
        2.0 * call_s,
        args.seconds
    );

    let changed: usize = corpus.iter().map(|s| s.changed).sum();
    let samples: usize = corpus.iter().map(|s| s.wav[0].len() + s.wav[1].len()).sum();
    // The bench's packet path must give exactly what `hearken analyze` gives on the same PCM;
    // and note whether re-encoding the corpus WAVs changes the analysis at all.
    let mut same_as_wav = Vec::new();
    for kind in [VadKind::Energy, VadKind::Webrtc] {
        let cfg = cfg_for(kind);
        let mut same = 0;
        for s in &corpus {
            let (want, _) = analyze_pcm(&s.pcm[0], &s.pcm[1], &cfg, FRAME, None);
            let (from_wav, _) = analyze_pcm(&s.wav[0], &s.wav[1], &cfg, FRAME, None);
            same += (from_wav == want) as usize;
            let mut decs = [Decoder::new(Codec::Pcmu)?, Decoder::new(Codec::Pcmu)?];
            let mut a = CallAnalysis::new(&cfg, FRAME);
            let mut buf = Vec::new();
            for k in 0..s.payloads[0].len().max(s.payloads[1].len()) {
                for (i, party) in [Party::Customer, Party::Agent].into_iter().enumerate() {
                    if let Some(p) = s.payloads[i].get(k) {
                        buf.clear();
                        decs[i].decode_into(p, &mut buf)?;
                        a.push(party, (k * PACKET) as u64, &buf);
                    }
                }
            }
            if a.finish() != want {
                bail!("{} ({}): packet-path summary differs from analyze_pcm", s.name, kind_name(kind));
            }
        }
        same_as_wav.push(format!("{} {same}/{}", kind_name(kind), corpus.len()));
    }
    println!(
        "µ-law re-encode of the WAVs changed {changed} of {samples} samples ({:.0} %); summaries \
         from the re-encoded audio equal those from the WAVs in: {}. Packet path = analyze_pcm: ok.",
        100.0 * changed as f64 / samples.max(1) as f64,
        same_as_wav.join(", ")
    );

    let mut results: Vec<Measurement> = Vec::new();
    let mut buf: Vec<i16> = Vec::with_capacity(PACKET);
    results.push(measure("decode", None, call_s, min, || run_decode(&corpus, &mut buf)));
    for kind in [VadKind::Energy, VadKind::Webrtc] {
        let name = kind_name(kind);
        let cfg = cfg_for(kind);
        results.push(measure("full", Some(name), call_s, min, || run_full(&corpus, &cfg, &mut buf)));
        results.push(measure("vad", Some(name), call_s, min, || run_vad(&corpus, kind)));
        let decisions = precompute_decisions(&corpus, kind);
        let params = TurnParams::default();
        results.push(measure("turns", Some(name), call_s, min, || run_turns(&decisions, &params)));
    }

    // Table.
    println!();
    println!(
        "{:<8} {:<7} {:>6} {:>7} {:>7} {:>9} {:>12} {:>12} {:>9}",
        "stage", "vad", "passes", "wall s", "cpu s", "ns/frame", "call ×RT", "per leg ×RT", "of full"
    );
    let full_ns = |vad: Option<&str>| results.iter().find(|m| m.stage == "full" && m.vad == vad).map(|m| m.ns_per_leg_frame());
    for kind in ["energy", "webrtc"] {
        for stage in ["full", "decode", "vad", "turns"] {
            let Some(m) = results.iter().find(|m| m.stage == stage && (m.vad == Some(kind) || m.vad.is_none())) else {
                continue;
            };
            let share = full_ns(Some(kind)).map(|f| format!("{:.0} %", 100.0 * m.ns_per_leg_frame() / f)).unwrap_or_default();
            println!(
                "{:<8} {:<7} {:>6} {:>7.2} {:>7.2} {:>9.1} {:>12.0} {:>12.0} {:>9}",
                m.stage,
                m.vad.unwrap_or("-"),
                m.passes,
                m.wall_s,
                m.cpu_s,
                m.ns_per_leg_frame(),
                m.call_x(),
                m.leg_x(),
                share
            );
        }
        if let Some(f) = full_ns(Some(kind)) {
            let parts: f64 = results
                .iter()
                .filter(|m| (m.stage == "decode" && m.vad.is_none()) || ((m.stage == "vad" || m.stage == "turns") && m.vad == Some(kind)))
                .map(|m| m.ns_per_leg_frame())
                .sum();
            println!(
                "{:<8} {:<7} {:>6} {:>7} {:>7} {:>9.1} {:>12} {:>12} {:>9}",
                "(rest)",
                kind,
                "",
                "",
                "",
                f - parts,
                "",
                "",
                format!("{:.0} %", 100.0 * (f - parts) / f)
            );
        }
        println!();
    }
    println!(
        "ns/frame: CPU ns per 10 ms frame per leg. per leg ×RT: leg-seconds of audio per \
         CPU-second (CPU time split evenly between the two legs). (rest): full minus the \
         separately timed stages (CallAnalysis buffering and frame copies, event polling)."
    );
    for m in &results {
        if m.other_cpu_s > 0.05 * m.wall_s {
            println!(
                "WARNING: {} {}: other processes used {:.2} CPU-s during the {:.2} s window; \
                 CPU time is the more robust figure, but caches and SMT siblings are shared",
                m.stage,
                m.vad.unwrap_or("-"),
                m.other_cpu_s,
                m.wall_s
            );
        }
    }
    let goal: Vec<String> = results
        .iter()
        .filter(|m| m.stage == "full")
        .map(|m| format!("{}: {:.0}× per leg ({})", m.vad.unwrap_or("-"), m.leg_x(), if m.leg_x() >= GOAL_X { "meets" } else { "BELOW" }))
        .collect();
    println!("goal ≥ {GOAL_X:.0}× real time per leg: {}", goal.join(", "));

    let line = json!({
        "bench": "analysis",
        "nproc": nproc,
        "cpu": cpu,
        "scenarios": corpus.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "call_audio_s_per_pass": round3(call_s),
        "min_seconds": args.seconds,
        "goal_per_leg_x_realtime": GOAL_X,
        "results": results.iter().map(Measurement::json).collect::<Vec<_>>(),
    });
    println!("{line}");
    Ok(())
}
