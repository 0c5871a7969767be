//! Analysis driver: one dedicated OS thread that owns a [`CallCore`] per call, feeds it the call
//! commands, tapped frames and recognised utterances, ticks it every 20 ms, and publishes what
//! it says: Prometheus, the whisper channel, the audio cue, the record store. It never blocks
//! the relay: the relay only ever `try_reserve`s on the frame queue, and commands are a few per
//! call.
//!
//! Not here: the analysis itself (`analysis::call`), HTTP (io::http reads the record store).

use crate::analysis::asr::{AsrOutput, AsrPool};
use crate::analysis::call::{AsrSettings, AsrSink, CallCore, Output};
use crate::analysis::pipeline::AnalysisConfig;
use crate::call::{AnalysisCmd, CallId, CallMeta, MediaFrame};
use crate::publish::whisper::WhisperMessage;
use crate::record::Records;
use std::collections::HashMap;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Where analysis results go: Prometheus, the whisper channel, the cue, the records.
#[derive(Clone)]
pub struct Publisher {
    pub metrics: crate::publish::metrics::Metrics,
    pub whisper: crate::publish::whisper::WhisperHub,
    /// Audio cue into the agent's ear on a nudge, when enabled.
    pub cue: Option<(crate::io::media::CueBus, Arc<[i16]>)>,
    /// Nudge policy settings.
    pub coach: Arc<crate::coach::CoachConfig>,
    pub records: Records,
    /// The live calls of every input, for `/calls` (the relay adds its per-stream counters).
    pub live: crate::io::media::Registry,
    /// This node's name (`cluster.node`), part of every record's uid.
    pub node: Arc<str>,
}

impl Publisher {
    /// One output of a call's core, published where it belongs.
    pub fn publish(&self, call: CallId, uid: &str, meta: &CallMeta, out: Output) {
        let (agent, queue) = (meta.agent_id.as_str(), meta.queue.as_str());
        let who = self.metrics.who(&meta.agent_id, &meta.queue, meta.input);
        let time = crate::sys::unix_now_s();
        match out {
            Output::Event(e) => {
                self.metrics.record_event(who, &e);
                self.whisper.send(&WhisperMessage::Event { call, agent: agent.into(), event: e, time });
            }
            Output::Phrase(e) => {
                self.metrics.record_phrase(who, e.kind.label(), e.party);
                self.whisper.send(&WhisperMessage::Phrase { call, agent: agent.into(), kind: e.kind, party: e.party, at: e.at, time });
            }
            Output::Nudge(n) => {
                self.metrics.record_nudge(who, n.kind.label());
                tracing::debug!(%call, agent, kind = n.kind.label(), "nudge");
                if !n.post_call {
                    if let Some((bus, samples)) = &self.cue {
                        bus.play(call, samples.clone());
                    }
                }
                self.whisper.send(&WhisperMessage::Nudge {
                    call,
                    agent: agent.into(),
                    kind: n.kind,
                    text: n.text,
                    at: n.at,
                    post_call: n.post_call,
                    time,
                });
            }
            Output::Snapshot(s) => {
                self.records.progress(
                    uid,
                    crate::record::Progress {
                        position_s: s.position_s,
                        talk_time_customer_s: s.talk_time_s.customer,
                        talk_time_agent_s: s.talk_time_s.agent,
                        talk_ratio_agent: s.talk_ratio_agent,
                    },
                );
                self.whisper.send(&WhisperMessage::Snapshot {
                    call,
                    agent: agent.into(),
                    queue: queue.into(),
                    position_s: s.position_s,
                    talk_time_s: s.talk_time_s,
                    talk_ratio_agent: s.talk_ratio_agent,
                    time,
                });
            }
            Output::Record(mut r) => {
                r.uid = uid.to_string();
                self.metrics.record_call(&r);
                self.whisper.send(&WhisperMessage::CallEnd { call, agent: agent.into(), reason: r.reason, record: r.clone(), time });
                if let Err(e) = self.records.put(*r) {
                    tracing::warn!(%call, error = %e, "call record not stored");
                }
            }
        }
    }
}

/// Speech recognition for the live driver: the pool and where its results come back.
pub struct LiveAsr {
    pub pool: AsrPool,
    pub results: std_mpsc::Receiver<AsrOutput>,
    pub settings: AsrSettings,
}

/// The analysis loop's state: one core per call.
struct Driver {
    cfg: AnalysisConfig,
    asr: Option<LiveAsr>,
    publisher: Publisher,
    calls: HashMap<CallId, CallCore>,
    /// Each live call's record uid.
    uids: HashMap<CallId, String>,
    /// Random per process: uids stay unique even for nodes that share a name.
    process_tag: String,
    epoch: Instant,
}

impl Driver {
    fn ms(&self, t: Instant) -> u64 {
        t.duration_since(self.epoch).as_millis() as u64
    }

    fn sink(asr: &Option<LiveAsr>) -> Option<&dyn AsrSink> {
        asr.as_ref().map(|a| &a.pool as &dyn AsrSink)
    }

    fn flush(&mut self, call: CallId) {
        let Some(core) = self.calls.get_mut(&call) else { return };
        let uid = self.uids.get(&call).map_or("", String::as_str);
        while let Some(out) = core.poll_output() {
            self.publisher.publish(call, uid, core.meta(), out);
        }
        if core.is_done() {
            self.calls.remove(&call);
            self.uids.remove(&call);
        }
    }

    fn handle_cmd(&mut self, cmd: AnalysisCmd) {
        let now = self.ms(Instant::now());
        let call = match cmd {
            AnalysisCmd::Start { call, meta } => {
                self.publisher.whisper.send(&WhisperMessage::CallStart {
                    call,
                    agent: meta.agent_id.clone(),
                    queue: meta.queue.clone(),
                    time: crate::sys::unix_now_s(),
                });
                {
                    let mut live = self.publisher.live.lock().unwrap_or_else(|e| e.into_inner());
                    let snap = live.entry(call).or_insert_with(|| crate::io::media::CallSnapshot { id: call, ..Default::default() });
                    snap.agent_id.clone_from(&meta.agent_id);
                    snap.input = meta.input;
                }
                if !self.calls.contains_key(&call) {
                    // Unique across restarts and nodes: start time, node, call id.
                    let started_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
                    let uid = format!("{started_ms}-{}-{}-{}", self.publisher.node, self.process_tag, call.0);
                    self.publisher.records.started(crate::record::Started {
                        uid: uid.clone(),
                        id: call,
                        agent_id: meta.agent_id.clone(),
                        queue: meta.queue.clone(),
                        input: meta.input,
                        started_unix_s: (started_ms / 1000) as u64,
                    });
                    self.uids.insert(call, uid);
                }
                let settings = self.asr.as_ref().map(|a| &a.settings);
                self.calls.entry(call).or_insert_with(|| CallCore::new(call, meta, &self.cfg, &self.publisher.coach, settings, now));
                call
            }
            AnalysisCmd::Negotiated { call, plan } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.handle_negotiated(&plan);
                }
                call
            }
            AnalysisCmd::End { call, reason } => {
                self.publisher.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&call);
                let unix = crate::sys::unix_now_s() as u64;
                if let Some(c) = self.calls.get_mut(&call) {
                    c.handle_end(reason, now, unix, Self::sink(&self.asr));
                }
                call
            }
        };
        self.flush(call);
    }

    fn handle_frame(&mut self, f: MediaFrame) {
        let at = self.ms(f.arrival);
        if let Some(c) = self.calls.get_mut(&f.call) {
            if f.encrypted {
                c.handle_srtp(f.party, f.stream, &f.packet, at);
            } else {
                c.handle_rtp(f.party, f.stream, &f.header, f.payload(), at);
            }
        }
    }

    fn handle_asr(&mut self, out: AsrOutput) {
        if let AsrOutput::Final { call, segment } = out {
            if let Some(c) = self.calls.get_mut(&call) {
                c.handle_transcript(segment);
            }
            self.flush(call);
        }
    }

    fn tick(&mut self) {
        let now = self.ms(Instant::now());
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.calls.get_mut(&id) {
                c.handle_tick(now, Self::sink(&self.asr));
            }
            self.flush(id);
        }
    }
}

/// Spawn the analysis thread. It ends when both senders are gone.
pub fn spawn(
    cfg: AnalysisConfig,
    asr: Option<LiveAsr>,
    publisher: Publisher,
    mut frames: mpsc::Receiver<MediaFrame>,
    control: std_mpsc::Receiver<AnalysisCmd>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("hearken-analysis".into())
        .spawn(move || {
            let process_tag = {
                let mut b = [0u8; 3];
                let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            };
            let mut d = Driver { cfg, asr, publisher, calls: HashMap::new(), uids: HashMap::new(), process_tag, epoch: Instant::now() };
            let mut last_tick = Instant::now();
            let (mut frames_open, mut ctl_open) = (true, true);
            while frames_open || ctl_open {
                let mut busy = false;
                loop {
                    match control.try_recv() {
                        Ok(cmd) => {
                            busy = true;
                            d.handle_cmd(cmd);
                        }
                        Err(std_mpsc::TryRecvError::Empty) => break,
                        Err(std_mpsc::TryRecvError::Disconnected) => {
                            ctl_open = false;
                            break;
                        }
                    }
                }
                for _ in 0..4096 {
                    match frames.try_recv() {
                        Ok(f) => {
                            busy = true;
                            d.handle_frame(f);
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            frames_open = false;
                            break;
                        }
                    }
                }
                while let Some(out) = d.asr.as_ref().and_then(|a| a.results.try_recv().ok()) {
                    busy = true;
                    d.handle_asr(out);
                }
                if last_tick.elapsed() >= Duration::from_millis(20) {
                    last_tick = Instant::now();
                    d.tick();
                }
                if !busy {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
        .expect("spawn analysis thread")
}
