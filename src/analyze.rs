//! `hearken analyze`: offline analysis of a recorded call through the same pipeline as live
//! calls, and the human-readable report.
//!
//! Not here: the metrics themselves (`analysis::turns`).

use crate::analysis::asr::{AsrConfig, AsrOutput, AsrPool, CallStreams, GateCmd, TranscriptSegment, VoskEngine};
use crate::analysis::pipeline::{analyze_pcm, AnalysisConfig};
use crate::analysis::turns::{CallSummary, Party, TurnEvent};
use crate::analysis::vad::FRAME;
use crate::analysis::wav;
use crate::record::CallRecord;
use std::fmt::Write as _;
use std::path::PathBuf;

pub enum Input {
    Pair(PathBuf, PathBuf),
    Stereo(PathBuf),
    /// A capture with the call's two RTP streams: the first to appear is the customer unless
    /// `swap`; `rtpmap` names dynamic payload types (`111 opus/48000/2`).
    Pcap {
        path: PathBuf,
        swap: bool,
        rtpmap: Vec<(u8, String)>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Wav(#[from] wav::WavError),
    #[error("{0}: expected a mono file for one leg, got {1} channels (use --stereo for a two-channel file)")]
    NotMono(String, u16),
    #[error("{0}: expected a stereo file (left = customer, right = agent), got {1} channel(s)")]
    NotStereo(String, u16),
    #[error("{path}: cannot read: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Pcap(#[from] crate::analysis::pcap::PcapError),
    #[error(transparent)]
    Asr(#[from] crate::analysis::asr::AsrError),
    #[error("speech recognition did not finish ({0} utterance(s) outstanding)")]
    AsrTimeout(usize),
    #[error("asr.phrases {0}: {1}")]
    Phrases(String, String),
}

/// Speech recognition for one offline analysis: a pool, the call's streams, the results.
struct OfflineAsr {
    pool: AsrPool,
    streams: CallStreams,
    rx: std::sync::mpsc::Receiver<AsrOutput>,
}

impl OfflineAsr {
    fn start(cfg: &AsrConfig) -> Result<Option<OfflineAsr>, AnalyzeError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let engine = VoskEngine::load(std::path::Path::new(cfg.model.trim()), crate::analysis::vad::RATE)?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Offline nothing is real time: let the queue hold the whole call.
        let pool = AsrPool::start(std::sync::Arc::new(engine), cfg.workers, 3600.0, cfg.pooled, crate::analysis::vad::RATE, tx);
        Ok(Some(OfflineAsr { pool, streams: CallStreams::default(), rx }))
    }
    fn handle(&mut self, party: Party, cmd: GateCmd) {
        self.streams.handle(&self.pool, crate::call::CallId(0), party, cmd);
    }
    /// Wait for every utterance to come back; the transcript in time order.
    fn collect(self) -> Result<Vec<TranscriptSegment>, AnalyzeError> {
        let mut out = Vec::new();
        let mut left = self.streams.outstanding;
        while left > 0 {
            match self.rx.recv_timeout(std::time::Duration::from_secs(300)) {
                Ok(AsrOutput::Final { segment, .. }) => {
                    left -= 1;
                    if !segment.text.trim().is_empty() {
                        out.push(segment);
                    }
                }
                Ok(AsrOutput::Partial { .. }) => {}
                Err(_) => return Err(AnalyzeError::AsrTimeout(left)),
            }
        }
        out.sort_by(|a, b| a.start.total_cmp(&b.start));
        Ok(out)
    }
}

/// What `hearken analyze` produces: the same call record a live call files.
pub type AnalyzeOutput = CallRecord;

/// A recording's record: no call id, agent or queue; ended when the analysis finished.
fn file_record(
    turns: CallSummary,
    quality: Option<crate::analysis::live::LegQuality>,
    events: Vec<TurnEvent>,
    cfg: &AnalysisConfig,
    transcript: Option<Vec<TranscriptSegment>>,
    phrases: Option<crate::analysis::phrases::PhraseSummary>,
) -> CallRecord {
    CallRecord {
        id: crate::call::CallId(0),
        uid: String::new(),
        agent_id: String::new(),
        queue: String::new(),
        input: crate::call::Input::File,
        ended_unix_s: crate::sys::unix_now_s() as u64,
        reason: crate::call::EndReason::EndOfInput,
        vad: cfg.vad.name().to_string(),
        summary: crate::analysis::live::LiveSummary { turns, quality },
        events,
        transcript: transcript.unwrap_or_default(),
        phrases,
        notes: Vec::new(),
    }
}

fn phrases_for(
    asr_cfg: &AsrConfig,
    transcript: Option<&[TranscriptSegment]>,
    s: &CallSummary,
) -> Result<Option<crate::analysis::phrases::PhraseSummary>, AnalyzeError> {
    let Some(t) = transcript else { return Ok(None) };
    let pack = asr_cfg.phrase_pack().map_err(|e| AnalyzeError::Phrases(asr_cfg.phrases.clone(), e.to_string()))?;
    Ok(Some(crate::analysis::asr::detect_phrases(pack, asr_cfg.phrase_params.clone(), t, None, s)))
}

/// A capture through the live pipeline: jitter stage, decoder, RTP-timestamp placement.
fn run_pcap(
    path: &std::path::Path,
    swap: bool,
    rtpmap: &[(u8, String)],
    cfg: &AnalysisConfig,
    mut asr: Option<OfflineAsr>,
    asr_cfg: &AsrConfig,
) -> Result<AnalyzeOutput, AnalyzeError> {
    use crate::analysis::live::LiveCall;
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| AnalyzeError::Io { path: name.clone(), source: e })?;
    let mut streams = crate::analysis::pcap::read_streams(&bytes, &name)?;
    if streams.len() < 2 {
        return Err(crate::analysis::pcap::PcapError::Streams(name, streams.len()).into());
    }
    // The two biggest streams, in order of appearance.
    let mut order: Vec<usize> = (0..streams.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(streams[i].packets.len()));
    let mut two = [order[0], order[1]];
    two.sort_unstable();
    if swap {
        two.swap(0, 1);
    }
    let agent = std::mem::take(&mut streams[two[1]].packets);
    let customer = std::mem::take(&mut streams[two[0]].packets);
    let mut all: Vec<(u64, Party, Vec<u8>)> = customer
        .into_iter()
        .map(|p| (p.at_ms, Party::Customer, p.data))
        .chain(agent.into_iter().map(|p| (p.at_ms, Party::Agent, p.data)))
        .collect();
    all.sort_by_key(|p| p.0);
    let mut live = LiveCall::new(cfg, 0);
    live.add_rtpmap(rtpmap);
    if asr.is_some() {
        live.enable_asr(asr_cfg);
    }
    let mut events = Vec::new();
    let mut next_tick = 0;
    let mut last = 0;
    for (at, party, data) in &all {
        while next_tick <= *at {
            live.handle_tick(next_tick);
            next_tick += 20;
        }
        if let Ok(h) = crate::rtp::parse_rtp(data) {
            live.handle_packet(*party, 0, &h, &data[h.payload_offset..h.payload_offset + h.payload_len], *at);
        }
        while let Some(e) = live.poll_event() {
            events.push(e);
        }
        while let Some((p, c)) = live.poll_asr() {
            if let Some(a) = asr.as_mut() {
                a.handle(p, c);
            }
        }
        last = *at;
    }
    live.handle_tick(last + 100);
    while let Some(e) = live.poll_event() {
        events.push(e);
    }
    let (done, cmds) = live.finish_with_asr(last + 100);
    if let Some(a) = asr.as_mut() {
        for (p, c) in cmds {
            a.handle(p, c);
        }
    }
    let transcript = asr.map(OfflineAsr::collect).transpose()?;
    let phrases = phrases_for(asr_cfg, transcript.as_deref(), &done.turns)?;
    Ok(file_record(done.turns, done.quality, events, cfg, transcript, phrases))
}

pub fn run(input: &Input, cfg: &AnalysisConfig, asr_cfg: &AsrConfig, frame_ms: u32) -> Result<AnalyzeOutput, AnalyzeError> {
    let mut asr = OfflineAsr::start(asr_cfg)?;
    let (c, a) = match input {
        Input::Pcap { path, swap, rtpmap } => return run_pcap(path, *swap, rtpmap, cfg, asr, asr_cfg),
        Input::Pair(c, a) => {
            let wc = wav::read(c)?;
            let wa = wav::read(a)?;
            if wc.channels != 1 {
                return Err(AnalyzeError::NotMono(c.display().to_string(), wc.channels));
            }
            if wa.channels != 1 {
                return Err(AnalyzeError::NotMono(a.display().to_string(), wa.channels));
            }
            (wc.samples.into_iter().next().unwrap_or_default(), wa.samples.into_iter().next().unwrap_or_default())
        }
        Input::Stereo(s) => {
            let w = wav::read(s)?;
            if w.channels != 2 {
                return Err(AnalyzeError::NotStereo(s.display().to_string(), w.channels));
            }
            let mut it = w.samples.into_iter();
            (it.next().unwrap_or_default(), it.next().unwrap_or_default())
        }
    };
    let frame = FRAME * (frame_ms as usize / 10).max(1);
    let (summary, events) = match asr.as_mut() {
        Some(x) => {
            let mut sink = |p: Party, c: GateCmd| x.handle(p, c);
            analyze_pcm(&c, &a, cfg, frame, Some((asr_cfg, &mut sink)))
        }
        None => analyze_pcm(&c, &a, cfg, frame, None),
    };
    let transcript = asr.map(OfflineAsr::collect).transpose()?;
    let phrases = phrases_for(asr_cfg, transcript.as_deref(), &summary)?;
    Ok(file_record(summary, None, events, cfg, transcript, phrases))
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.2} s"))
}

/// The readable report.
pub fn report(o: &AnalyzeOutput) -> String {
    let s = &o.summary.turns;
    let mut r = String::new();
    let _ = writeln!(r, "Call: {:.1} s   (VAD: {})", s.call_duration_s, o.vad);
    let _ = writeln!(
        r,
        "Talk time     customer {:.1} s   agent {:.1} s   agent share {}",
        s.talk_time_s.customer,
        s.talk_time_s.agent,
        s.talk_ratio_agent.map_or("-".into(), |x| format!("{:.0} %", x * 100.0))
    );
    let _ = writeln!(r, "Overlap       {:.1} s   interactivity {:.1} switches/min", s.overlap_s, s.interactivity_per_min);
    let _ = writeln!(
        r,
        "Interruptions {} (by agent {}, by customer {})",
        s.interruptions.count, s.interruptions.by_agent, s.interruptions.by_customer
    );
    for e in &s.interruptions.events {
        let _ = writeln!(r, "  {:>7.2} s  {} interrupts {} ({:.1} s overlap)", e.at, e.by.name(), e.of.name(), e.overlap_s);
    }
    let _ = writeln!(
        r,
        "Back-channels {} (by agent {}, by customer {})",
        s.backchannels.count, s.backchannels.by_agent, s.backchannels.by_customer
    );
    let _ = write!(r, "Dead air     ");
    // By threshold, not by key text ("gt_10s" sorts before "gt_3s").
    let mut dead: Vec<_> = s.dead_air.iter().collect();
    dead.sort_by(|a, b| {
        let t = |k: &str| k.trim_start_matches("gt_").trim_end_matches('s').parse::<f64>().unwrap_or(f64::MAX);
        t(a.0).total_cmp(&t(b.0))
    });
    for (k, v) in dead {
        let _ = write!(r, " {k}: {} ({:.1} s)", v.count, v.total_s);
    }
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "Silence       leading {:.1} s   trailing {:.1} s   on hold {:.1} s",
        s.leading_silence_s, s.trailing_silence_s, s.hold_s
    );
    for (who, l) in [(Party::Agent, &s.agent_response_latency), (Party::Customer, &s.customer_response_latency)] {
        let _ = writeln!(
            r,
            "Response latency ({:8}) n={} mean {} min {} max {}  too fast: {}",
            who.name(),
            l.count,
            opt(l.mean_s),
            opt(l.min_s),
            opt(l.max_s),
            l.too_fast
        );
    }
    let _ = writeln!(
        r,
        "Longest monologue  customer {:.1} s   agent {:.1} s",
        s.longest_monologue.customer.longest_s, s.longest_monologue.agent.longest_s
    );
    if !s.silent_gaps.is_empty() {
        let _ = writeln!(r, "Silent gaps ≥ 1 s:");
        for g in &s.silent_gaps {
            let _ = writeln!(
                r,
                "  {:>7.2} – {:>7.2} s  ({:.1} s{})",
                g.start,
                g.end,
                g.duration_s,
                if g.on_hold_s > 0.0 { format!(", {:.1} s on hold", g.on_hold_s) } else { String::new() }
            );
        }
    }
    if let Some(p) = &o.phrases {
        let c = |kind: crate::analysis::phrases::PhraseKind| {
            let v = p.counts.get(kind.label()).cloned().unwrap_or_default();
            format!("{}/{}", v.agent, v.customer)
        };
        use crate::analysis::phrases::PhraseKind as K;
        let _ = writeln!(r, "Phrases ({}), agent/customer:", p.language);
        let _ = writeln!(
            r,
            "  acknowledgement {}   back-channel words {}   empathy {}   paraphrase {}   open questions {}   closed questions {}",
            c(K::Acknowledgement),
            c(K::Backchannel),
            c(K::Empathy),
            c(K::Paraphrase),
            c(K::OpenQuestion),
            c(K::ClosedQuestion)
        );
        let _ = writeln!(
            r,
            "  spelled {} (read back {}, not read back {})   customer's name used {}   closing: thanks {}, next steps {}",
            p.spelled,
            p.read_back,
            p.not_read_back,
            p.customer_name_uses,
            if p.closing.thanks { "yes" } else { "no" },
            if p.closing.next_steps { "yes" } else { "no" }
        );
        let _ = writeln!(
            r,
            "  pace (words/min of own talk) customer {} agent {}   back-channels by their words: confirmed {}, content {}, unheard {}",
            p.pace_wpm.customer.map_or("-".into(), |x| format!("{x:.0}")),
            p.pace_wpm.agent.map_or("-".into(), |x| format!("{x:.0}")),
            p.backchannel_check.confirmed,
            p.backchannel_check.content,
            p.backchannel_check.unheard
        );
    }
    if o.phrases.is_some() {
        let t = &o.transcript;
        let _ = writeln!(r, "Transcript ({} segments):", t.len());
        for seg in t.iter().filter(|s| !s.text.is_empty()) {
            let _ = writeln!(r, "  {:>7.2} s  {:8} {}", seg.start, seg.party.name(), seg.text);
        }
    }
    r
}
