//! Analysis driver: one dedicated OS thread that drains the tap queue and the call control
//! messages, runs a [`LiveCall`] per call, and files a [`CallRecord`] when a call ends. It never
//! blocks the relay: the relay only ever `try_reserve`s on the tap queue, and control messages are
//! a few per call.
//!
//! Not here: the analysis itself (`analysis::live`), HTTP (io::http reads the records).

use crate::analysis::asr::{AsrOutput, AsrPool, CallStreams, TranscriptSegment};
use crate::analysis::live::{LiveCall, LiveSummary};
use crate::analysis::pipeline::AnalysisConfig;
use crate::analysis::turns::{Party, TurnEvent};
use crate::io::media::TapFrame;
use crate::sdp;
use crate::sip::proxy::Side;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Call lifecycle messages from the media manager.
#[derive(Debug)]
pub enum Control {
    Start { call: u64, meta: crate::sip::proxy::CallMeta },
    Sdp { call: u64, session: sdp::Session, on_hold: bool },
    End { call: u64, reason: &'static str },
}

pub fn party(side: Side) -> Party {
    match side {
        Side::Pbx => Party::Customer,
        Side::Agent => Party::Agent,
    }
}

/// What is kept of a finished call (no numbers, URIs or Call-IDs).
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub id: u64,
    pub agent_id: String,
    pub ended_unix_s: u64,
    pub reason: &'static str,
    pub summary: LiveSummary,
    pub events: Vec<TurnEvent>,
    /// Recognised speech of both legs (empty when ASR is off).
    pub transcript: Vec<TranscriptSegment>,
    /// Phrase signals found in the transcript (None when ASR is off).
    pub phrases: Option<crate::analysis::phrases::PhraseSummary>,
    /// Post-call coaching notes.
    pub notes: Vec<crate::coach::Nudge>,
}

#[derive(Clone, Default)]
pub struct Records {
    inner: Arc<Mutex<VecDeque<Arc<CallRecord>>>>,
}

impl Records {
    const KEEP: usize = 500;
    pub fn push(&self, r: CallRecord) {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == Self::KEEP {
            q.pop_front();
        }
        q.push_back(Arc::new(r));
    }
    pub fn list(&self) -> Vec<Arc<CallRecord>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
    pub fn get(&self, id: u64) -> Option<Arc<CallRecord>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().find(|r| r.id == id).cloned()
    }
}

/// Where analysis results go: Prometheus and the whisper channel.
#[derive(Clone)]
pub struct Publisher {
    pub metrics: crate::publish::metrics::Metrics,
    pub whisper: crate::publish::whisper::WhisperHub,
    /// Audio cue into the agent's ear on a nudge, when enabled.
    pub cue: Option<(crate::io::media::CueBus, Arc<[i16]>)>,
    /// Nudge policy settings.
    pub coach: Arc<crate::coach::CoachConfig>,
}

/// A nudge for the agent: counted, whispered, and (if enabled) a cue in the agent's ear.
fn send_nudge(publisher: &Publisher, call: u64, agent: &str, queue: &str, n: &crate::coach::Nudge) {
    publisher.metrics.record_nudge(agent, queue, n.kind.label());
    tracing::debug!(call, agent, kind = n.kind.label(), "nudge");
    publisher.whisper.send(
        agent,
        &serde_json::json!({"type": "nudge", "call": call, "agent": agent, "kind": n.kind.label(), "text": n.text, "at": n.at, "post_call": n.post_call, "time": unix_s()}),
    );
    if !n.post_call {
        if let Some((bus, samples)) = &publisher.cue {
            bus.play(call, samples.clone());
        }
    }
}

fn unix_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

struct Active {
    agent_id: String,
    queue: String,
    last_snapshot: Instant,
    live: LiveCall,
    events: Vec<TurnEvent>,
    streams: CallStreams,
    transcript: Vec<TranscriptSegment>,
    phrases: Option<crate::analysis::phrases::PhraseDetector>,
    coach: crate::coach::NudgePolicy,
}

impl Active {
    fn drain_nudges(&mut self, publisher: &Publisher, call: u64) {
        while let Some(n) = self.coach.poll_nudge() {
            send_nudge(publisher, call, &self.agent_id, &self.queue, &n);
        }
    }
}

/// A call that has ended but still has utterances in recognition.
struct Finishing {
    record: CallRecord,
    queue: String,
    streams: CallStreams,
    phrases: Option<crate::analysis::phrases::PhraseDetector>,
    coach: crate::coach::NudgePolicy,
    deadline: Instant,
}

/// Speech recognition for the live driver: the pool and where its results come back.
pub struct LiveAsr {
    pub pool: AsrPool,
    pub results: std_mpsc::Receiver<AsrOutput>,
    pub config: crate::analysis::asr::AsrConfig,
    pub pack: crate::analysis::phrases::PhrasePack,
}

/// Spawn the analysis thread. It ends when both senders are gone.
pub fn spawn(
    cfg: AnalysisConfig,
    asr: Option<LiveAsr>,
    publisher: Publisher,
    mut tap: mpsc::Receiver<TapFrame>,
    control: std_mpsc::Receiver<Control>,
    records: Records,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("hearken-analysis".into())
        .spawn(move || {
            let epoch = Instant::now();
            let ms = |t: Instant| t.duration_since(epoch).as_millis() as u64;
            let mut calls: HashMap<u64, Active> = HashMap::new();
            let mut finishing: HashMap<u64, Finishing> = HashMap::new();
            let mut last_tick = Instant::now();
            let (mut tap_open, mut ctl_open) = (true, true);
            while tap_open || ctl_open {
                let mut busy = false;
                loop {
                    match control.try_recv() {
                        Ok(msg) => {
                            busy = true;
                            handle_control(&cfg, asr.as_ref(), &publisher, &mut calls, &mut finishing, &records, msg, ms(Instant::now()));
                        }
                        Err(std_mpsc::TryRecvError::Empty) => break,
                        Err(std_mpsc::TryRecvError::Disconnected) => {
                            ctl_open = false;
                            break;
                        }
                    }
                }
                for _ in 0..4096 {
                    match tap.try_recv() {
                        Ok(f) => {
                            busy = true;
                            if let Some(a) = calls.get_mut(&f.call) {
                                a.live.handle_packet(party(f.leg), &f.header, f.payload(), ms(f.arrival));
                            }
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            tap_open = false;
                            break;
                        }
                    }
                }
                if let Some(asr) = asr.as_ref() {
                    while let Ok(out) = asr.results.try_recv() {
                        busy = true;
                        if let AsrOutput::Final { call, segment } = out {
                            deliver(&publisher, &mut calls, &mut finishing, call, segment);
                        }
                    }
                }
                if last_tick.elapsed() >= Duration::from_millis(20) {
                    last_tick = Instant::now();
                    let now = ms(last_tick);
                    for (id, a) in calls.iter_mut() {
                        a.live.handle_tick(now);
                        while let Some(e) = a.live.poll_event() {
                            tracing::debug!(call = id, agent = %a.agent_id, event = ?e, "listening event");
                            publisher.metrics.record_event(&a.agent_id, &a.queue, &e);
                            publisher.whisper.send(
                                &a.agent_id,
                                &serde_json::json!({"type": "event", "call": id, "agent": a.agent_id, "event": e, "time": unix_s()}),
                            );
                            a.coach.handle_turn_event(&e);
                            a.events.push(e);
                        }
                        let talk = [a.live.talk_time(Party::Customer), a.live.talk_time(Party::Agent)];
                        a.coach.handle_tick(a.live.position_s(), talk, a.live.on_hold());
                        a.drain_nudges(&publisher, *id);
                        if a.last_snapshot.elapsed() >= Duration::from_secs(1) {
                            a.last_snapshot = last_tick;
                            let (c, g) = (a.live.talk_time(Party::Customer), a.live.talk_time(Party::Agent));
                            let snap = serde_json::json!({
                                "type": "snapshot", "call": id, "agent": a.agent_id, "queue": a.queue,
                                "position_s": (a.live.position_s() * 10.0).round() / 10.0,
                                "talk_time_s": {"customer": (c * 10.0).round() / 10.0, "agent": (g * 10.0).round() / 10.0},
                                "talk_ratio_agent": if c + g > 0.0 { Some(((g / (c + g)) * 1000.0).round() / 1000.0) } else { None },
                                "time": unix_s(),
                            });
                            publisher.whisper.send(&a.agent_id, &snap);
                        }
                        if let Some(asr) = asr.as_ref() {
                            while let Some((p, c)) = a.live.poll_asr() {
                                a.streams.handle(&asr.pool, *id, p, c);
                            }
                        }
                    }
                    // Calls whose last utterances are recognised (or waited for long enough).
                    let done: Vec<u64> =
                        finishing.iter().filter(|(_, f)| f.streams.outstanding == 0 || f.deadline <= last_tick).map(|(k, _)| *k).collect();
                    for id in done {
                        if let Some(f) = finishing.remove(&id) {
                            finish_record(&publisher, &records, f);
                        }
                    }
                }
                if !busy {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
        .expect("spawn analysis thread")
}

/// Phrase events of a call: counted and whispered (kind and time only; the matched words stay in
/// the record).
fn publish_phrases(
    publisher: &Publisher,
    call: u64,
    agent: &str,
    queue: &str,
    d: &mut crate::analysis::phrases::PhraseDetector,
    coach: &mut crate::coach::NudgePolicy,
) {
    while let Some(e) = d.poll_event() {
        publisher.metrics.record_phrase(agent, queue, e.kind.label(), e.party);
        publisher.whisper.send(
            agent,
            &serde_json::json!({"type": "phrase", "call": call, "agent": agent, "kind": e.kind.label(), "party": e.party, "at": e.at, "time": unix_s()}),
        );
        coach.handle_phrase_event(&e);
    }
}

/// A recognised utterance: into its call's transcript and phrase detector (live or finishing).
fn deliver(
    publisher: &Publisher,
    calls: &mut HashMap<u64, Active>,
    finishing: &mut HashMap<u64, Finishing>,
    call: u64,
    segment: TranscriptSegment,
) {
    let keep = !segment.text.trim().is_empty();
    if let Some(a) = calls.get_mut(&call) {
        a.streams.outstanding = a.streams.outstanding.saturating_sub(1);
        if keep {
            tracing::trace!(call, party = segment.party.name(), text = %segment.text, "transcript");
            if let Some(d) = a.phrases.as_mut() {
                d.handle_time(segment.end);
                d.handle_segment(&segment);
                publish_phrases(publisher, call, &a.agent_id, &a.queue, d, &mut a.coach);
            }
            a.transcript.push(segment);
            a.drain_nudges(publisher, call);
        }
    } else if let Some(f) = finishing.get_mut(&call) {
        f.streams.outstanding = f.streams.outstanding.saturating_sub(1);
        if keep {
            if let Some(d) = f.phrases.as_mut() {
                d.handle_time(segment.end);
                d.handle_segment(&segment);
                publish_phrases(publisher, call, &f.record.agent_id, &f.queue, d, &mut f.coach);
            }
            f.record.transcript.push(segment);
        }
    }
}

/// File a finished call: phrase summary, per-call metrics, whisper call_end, the record.
fn finish_record(publisher: &Publisher, records: &Records, mut f: Finishing) {
    let r = &mut f.record;
    r.transcript.sort_by(|a, b| a.start.total_cmp(&b.start));
    let t = &r.summary.turns;
    if let Some(mut d) = f.phrases.take() {
        let mut p = d.finish(t.call_duration_s, [t.talk_time_s.customer, t.talk_time_s.agent]);
        p.backchannel_check = d.check_backchannels(&t.backchannels.events, &r.transcript);
        publish_phrases(publisher, r.id, &r.agent_id, &f.queue, &mut d, &mut f.coach);
        r.phrases = Some(p);
    }
    // Post-call notes (closing without thanks / next steps, ...), after any last live nudges.
    let mut notes = Vec::new();
    while let Some(n) = f.coach.poll_nudge() {
        send_nudge(publisher, r.id, &r.agent_id, &f.queue, &n);
    }
    for n in f.coach.finish(&r.summary.turns, r.phrases.as_ref()) {
        send_nudge(publisher, r.id, &r.agent_id, &f.queue, &n);
        notes.push(n);
    }
    let t = &r.summary.turns;
    let pace = r.phrases.as_ref().map_or([None, None], |p| [p.pace_wpm.customer, p.pace_wpm.agent]);
    publisher.metrics.record_call(&r.agent_id, &f.queue, r.reason, &r.summary, pace);
    publisher.whisper.send(
        &r.agent_id,
        &serde_json::json!({
            "type": "call_end", "call": r.id, "agent": r.agent_id, "reason": r.reason, "time": unix_s(),
            "summary": {
                "call_duration_s": t.call_duration_s,
                "talk_ratio_agent": t.talk_ratio_agent,
                "interruptions": {"by_agent": t.interruptions.by_agent, "by_customer": t.interruptions.by_customer},
                "backchannels": t.backchannels.count,
                "dead_air": t.dead_air,
                "agent_response_latency": t.agent_response_latency,
                "longest_monologue": t.longest_monologue,
                "phrases": r.phrases.as_ref().map(|p| serde_json::json!({"counts": p.counts, "closing": p.closing, "read_back": p.read_back, "not_read_back": p.not_read_back})),
            },
            "notes": notes,
        }),
    );
    r.notes = notes;
    records.push(f.record);
}

#[allow(clippy::too_many_arguments)]
fn handle_control(
    cfg: &AnalysisConfig,
    asr: Option<&LiveAsr>,
    publisher: &Publisher,
    calls: &mut HashMap<u64, Active>,
    finishing: &mut HashMap<u64, Finishing>,
    records: &Records,
    msg: Control,
    now: u64,
) {
    match msg {
        Control::Start { call, meta } => {
            let agent_id = meta.agent_id.clone();
            publisher.whisper.send(
                &agent_id,
                &serde_json::json!({"type": "call_start", "call": call, "agent": agent_id, "queue": meta.queue, "time": unix_s()}),
            );
            calls.entry(call).or_insert_with(|| {
                let mut live = LiveCall::new(cfg, now);
                if let Some(a) = asr {
                    live.enable_asr(&a.config);
                }
                let phrases = asr.map(|a| {
                    let mut d = crate::analysis::phrases::PhraseDetector::new(a.pack.clone(), a.config.phrase_params.clone());
                    d.set_customer_name(meta.customer_name.clone());
                    d
                });
                Active {
                    agent_id,
                    queue: meta.queue.clone(),
                    last_snapshot: Instant::now(),
                    live,
                    events: Vec::new(),
                    streams: CallStreams::default(),
                    transcript: Vec::new(),
                    phrases,
                    coach: crate::coach::NudgePolicy::new(&publisher.coach, &meta.queue, asr.is_some()),
                }
            });
        }
        Control::Sdp { call, session, on_hold } => {
            if let Some(a) = calls.get_mut(&call) {
                a.live.handle_sdp(&session, on_hold);
            }
        }
        Control::End { call, reason } => {
            if let Some(mut a) = calls.remove(&call) {
                a.live.handle_tick(now);
                while let Some(e) = a.live.poll_event() {
                    publisher.metrics.record_event(&a.agent_id, &a.queue, &e);
                    a.coach.handle_turn_event(&e);
                    a.events.push(e);
                }
                let (summary, cmds) = a.live.finish_with_asr(now);
                if let Some(asr) = asr {
                    for (p, c) in cmds {
                        a.streams.handle(&asr.pool, call, p, c);
                    }
                }
                let t = &summary.turns;
                tracing::info!(
                    call,
                    agent = %a.agent_id,
                    duration_s = t.call_duration_s,
                    talk_ratio_agent = ?t.talk_ratio_agent,
                    interruptions_by_agent = t.interruptions.by_agent,
                    dead_air_gt_5s = t.dead_air.get("gt_5s").map_or(0, |d| d.count),
                    "call analysed"
                );
                let ended = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let record = CallRecord {
                    id: call,
                    agent_id: a.agent_id,
                    ended_unix_s: ended,
                    reason,
                    summary,
                    events: a.events,
                    transcript: a.transcript,
                    phrases: None,
                    notes: Vec::new(),
                };
                // Wait (bounded) for the last utterances to come out of recognition.
                let f = Finishing {
                    record,
                    queue: a.queue,
                    streams: a.streams,
                    phrases: a.phrases,
                    coach: a.coach,
                    deadline: Instant::now() + Duration::from_secs(15),
                };
                if f.streams.outstanding == 0 {
                    finish_record(publisher, records, f);
                } else {
                    finishing.insert(call, f);
                }
            }
        }
    }
}
