//! The per-call analysis core (sans-IO): everything Hearken works out about one call, from its
//! audio frames to its record. It composes the jitter/decode stage and VAD ([`LiveCall`]), the
//! turn analyzer, VAD-gated speech recognition bookkeeping, the phrase detector and the nudge
//! policy, and says what to publish through [`CallCore::poll_output`].
//!
//! Inputs (`handle_*`): the media plan from negotiation, tapped RTP frames with their stream, PCM
//! from stream inputs, recognised utterances, ticks, and the end of the call. Time is passed in
//! (`now_ms` on the driver's monotonic clock; wall-clock Unix seconds only for the record).
//! Outputs: listening events, phrase events, nudges, live snapshots (only when a figure moved,
//! with a heartbeat), and finally the [`CallRecord`]. Where the audio came from (relay, a
//! recording session, a PCM stream) does not matter here.
//!
//! Not here: threads, channels, sockets, the ASR worker pool (reached through [`AsrSink`]),
//! Prometheus and WebSocket publishing (the driver maps outputs to them).

use super::asr::{AsrConfig, CallStreams, GateCmd, TranscriptSegment};
use super::live::LiveCall;
use super::phrases::{PhraseDetector, PhraseEvent, PhrasePack};
use super::pipeline::AnalysisConfig;
use super::turns::{round_to as round, Party, PerParty, TurnEvent};
use crate::call::{CallId, CallMeta, EndReason, MediaPlan};
use crate::coach::{CoachConfig, Nudge, NudgePolicy};
use crate::record::CallRecord;
use crate::rtp::RtpHeader;
use std::collections::VecDeque;

/// How often live figures are re-checked for a snapshot, and the longest gap between two.
const SNAPSHOT_EVERY_MS: u64 = 1_000;
const SNAPSHOT_HEARTBEAT_MS: u64 = 5_000;
/// How long a finished call waits for its last utterances to come out of recognition.
const FINISH_WAIT_MS: u64 = 15_000;

/// Where gated speech goes: the ASR worker pool in the daemon, a recorder in tests.
pub trait AsrSink {
    /// A new utterance stream; None when the pool refuses it (behind; counted there).
    fn open(&self, call: CallId, party: Party, start_s: f64, pcm: Vec<i16>) -> Option<u64>;
    /// More audio; false when the stream was cut.
    fn audio(&self, stream: u64, pcm: Vec<i16>) -> bool;
    fn close(&self, stream: u64);
}

/// Speech recognition settings for a call (the phrase pack and gate parameters).
#[derive(Clone)]
pub struct AsrSettings {
    pub config: AsrConfig,
    pub pack: PhrasePack,
}

/// Live figures of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub position_s: f64,
    pub talk_time_s: PerParty<f64>,
    pub talk_ratio_agent: Option<f64>,
}

#[derive(Debug, Clone)]
pub enum Output {
    Event(TurnEvent),
    Phrase(PhraseEvent),
    Nudge(Nudge),
    Snapshot(Snapshot),
    /// The call is fully analysed; nothing follows.
    Record(Box<CallRecord>),
}

/// An ended call waiting for its last utterances to come out of recognition.
struct Ending {
    deadline_ms: u64,
    record: CallRecord,
}

pub struct CallCore {
    id: CallId,
    meta: CallMeta,
    vad: &'static str,
    /// Until the call ends.
    live: Option<LiveCall>,
    events: Vec<TurnEvent>,
    transcript: Vec<TranscriptSegment>,
    phrases: Option<PhraseDetector>,
    coach: NudgePolicy,
    asr: Option<CallStreams>,
    out: VecDeque<Output>,
    last_snapshot: Option<(u64, Snapshot)>,
    ending: Option<Ending>,
    done: bool,
    /// SDES keys per stream, from the plan; decryptors per party, made on first use.
    sdes: Vec<crate::media::srtp::SdesKeys>,
    srtp: [Option<crate::media::srtp::SrtpRx>; 2],
}

impl CallCore {
    /// A call starting at `now_ms` (audio position 0).
    pub fn new(id: CallId, meta: CallMeta, cfg: &AnalysisConfig, coach: &CoachConfig, asr: Option<&AsrSettings>, now_ms: u64) -> Self {
        let mut live = LiveCall::new(cfg, now_ms);
        let phrases = asr.map(|a| {
            live.enable_asr(&a.config);
            let mut d = PhraseDetector::new(a.pack.clone(), a.config.phrase_params.clone());
            d.set_customer_name(meta.customer_name.clone());
            d
        });
        CallCore {
            id,
            coach: NudgePolicy::new(coach, &meta.queue, asr.is_some()),
            meta,
            vad: cfg.vad.name(),
            live: Some(live),
            events: Vec::new(),
            transcript: Vec::new(),
            phrases,
            asr: asr.map(|_| CallStreams::default()),
            out: VecDeque::new(),
            last_snapshot: None,
            ending: None,
            done: false,
            sdes: Vec::new(),
            srtp: [None, None],
        }
    }

    pub fn meta(&self) -> &CallMeta {
        &self.meta
    }

    /// An offer or answer settled the media plan: codecs per stream, hold.
    pub fn handle_negotiated(&mut self, plan: &MediaPlan) {
        self.sdes = plan.streams.iter().map(|s| s.sdes.clone()).collect();
        if let Some(l) = self.live.as_mut() {
            l.handle_plan(plan);
        }
    }

    /// A tapped SRTP packet (the whole packet, as forwarded): decrypted with the key `party`
    /// announced (SDES), then analysed as RTP. Without a key (DTLS-SRTP) or when it does not
    /// authenticate, it is counted and not analysed.
    pub fn handle_srtp(&mut self, party: Party, stream: usize, packet: &[u8], arrival_ms: u64) {
        use crate::media::srtp::{SrtpDrop, SrtpRx};
        let key = self.sdes.get(stream).and_then(|k| k.sending[party.idx()].clone());
        let slot = &mut self.srtp[party.idx()];
        let result = match key {
            None => Err(SrtpDrop::NoKey),
            Some(key) => {
                if slot.as_ref().is_none_or(|rx| rx.key() != &key) {
                    *slot = SrtpRx::new(&key);
                }
                match slot.as_mut() {
                    Some(rx) => rx.decrypt(packet),
                    None => Err(SrtpDrop::NoKey),
                }
            }
        };
        let plain = result.and_then(|p| crate::rtp::parse_rtp(&p).map(|h| (p, h)).map_err(|_| SrtpDrop::Failed));
        if let Some(l) = self.live.as_mut() {
            l.count_srtp(party, plain.as_ref().err().copied());
        }
        if let Ok((p, h)) = plain {
            self.handle_rtp(party, stream, &h, &p[h.payload_offset..h.payload_offset + h.payload_len], arrival_ms);
        }
    }

    /// A tapped RTP packet of `party` on m-line `stream` (arrival on the driver's clock, ms).
    pub fn handle_rtp(&mut self, party: Party, stream: usize, header: &RtpHeader, payload: &[u8], arrival_ms: u64) {
        if let Some(l) = self.live.as_mut() {
            l.handle_packet(party, stream, header, payload, arrival_ms);
        }
    }

    /// Decoded 8 kHz PCM of `party` whose first sample belongs at `at_ms` on the driver's clock
    /// (inputs that deliver audio rather than RTP).
    pub fn handle_pcm(&mut self, party: Party, at_ms: u64, pcm: &[i16]) {
        if let Some(l) = self.live.as_mut() {
            l.handle_pcm(party, at_ms, pcm);
        }
    }

    /// A recognised utterance of this call (live or while finishing).
    pub fn handle_transcript(&mut self, segment: TranscriptSegment) {
        if let Some(s) = self.asr.as_mut() {
            s.outstanding = s.outstanding.saturating_sub(1);
        }
        if segment.text.trim().is_empty() {
            return;
        }
        tracing::trace!(call = %self.id, party = segment.party.name(), text = %segment.text, "transcript");
        if let Some(d) = self.phrases.as_mut() {
            d.handle_time(segment.end);
            d.handle_segment(&segment);
            while let Some(e) = d.poll_event() {
                self.coach.handle_phrase_event(&e);
                self.out.push_back(Output::Phrase(e));
            }
        }
        self.transcript.push(segment);
        self.drain_nudges();
    }

    /// Timers: jitter release, silent legs, live events, nudges, snapshots; gated speech to
    /// `asr`. While finishing, files the record once recognition is done or has waited enough.
    pub fn handle_tick(&mut self, now_ms: u64, asr: Option<&dyn AsrSink>) {
        if let Some(mut live) = self.live.take() {
            live.handle_tick(now_ms);
            self.drain_live(&mut live, asr);
            let talk = [live.talk_time(Party::Customer), live.talk_time(Party::Agent)];
            self.coach.handle_tick(live.position_s(), talk, live.on_hold());
            self.drain_nudges();
            self.snapshot(&live, now_ms);
            self.live = Some(live);
        } else if let Some(e) = &self.ending {
            let outstanding = self.asr.as_ref().map_or(0, |s| s.outstanding);
            if outstanding == 0 || now_ms >= e.deadline_ms {
                self.file_record();
            }
        }
    }

    /// The call ended (`ended_unix_s`: wall clock, for the record).
    pub fn handle_end(&mut self, reason: EndReason, now_ms: u64, ended_unix_s: u64, asr: Option<&dyn AsrSink>) {
        let Some(mut live) = self.live.take() else { return };
        live.handle_tick(now_ms);
        self.drain_live(&mut live, asr);
        self.drain_nudges();
        let (summary, cmds) = live.finish_with_asr(now_ms);
        self.feed_asr(cmds, asr);
        let t = &summary.turns;
        tracing::info!(
            call = %self.id,
            agent = %self.meta.agent_id,
            duration_s = t.call_duration_s,
            talk_ratio_agent = ?t.talk_ratio_agent,
            interruptions_by_agent = t.interruptions.by_agent,
            "call analysed"
        );
        let record = CallRecord {
            id: self.id,
            uid: String::new(),
            agent_id: self.meta.agent_id.clone(),
            queue: self.meta.queue.clone(),
            input: self.meta.input,
            ended_unix_s,
            reason,
            vad: self.vad.to_string(),
            summary,
            events: std::mem::take(&mut self.events),
            transcript: Vec::new(),
            phrases: None,
            notes: Vec::new(),
        };
        self.ending = Some(Ending { deadline_ms: now_ms + FINISH_WAIT_MS, record });
        // Without recognition in flight the record is filed at once.
        self.handle_tick(now_ms, asr);
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The record has been handed out; the driver can forget the call.
    pub fn is_done(&self) -> bool {
        self.done && self.out.is_empty()
    }

    fn drain_live(&mut self, live: &mut LiveCall, asr: Option<&dyn AsrSink>) {
        while let Some(e) = live.poll_event() {
            tracing::debug!(call = %self.id, agent = %self.meta.agent_id, event = ?e, "listening event");
            self.coach.handle_turn_event(&e);
            self.events.push(e.clone());
            self.out.push_back(Output::Event(e));
        }
        let mut cmds = Vec::new();
        while let Some(c) = live.poll_asr() {
            cmds.push(c);
        }
        self.feed_asr(cmds, asr);
    }

    fn feed_asr(&mut self, cmds: Vec<(Party, GateCmd)>, asr: Option<&dyn AsrSink>) {
        if let (Some(streams), Some(sink)) = (self.asr.as_mut(), asr) {
            for (p, c) in cmds {
                streams.handle(sink, self.id, p, c);
            }
        }
    }

    fn drain_nudges(&mut self) {
        while let Some(n) = self.coach.poll_nudge() {
            self.out.push_back(Output::Nudge(n));
        }
    }

    fn snapshot(&mut self, live: &LiveCall, now_ms: u64) {
        if self.last_snapshot.as_ref().is_some_and(|(t, _)| now_ms < t + SNAPSHOT_EVERY_MS) {
            return;
        }
        let (c, g) = (live.talk_time(Party::Customer), live.talk_time(Party::Agent));
        let snap = Snapshot {
            position_s: round(live.position_s(), 10.0),
            talk_time_s: PerParty { customer: round(c, 10.0), agent: round(g, 10.0) },
            talk_ratio_agent: (c + g > 0.0).then(|| round(g / (c + g), 1000.0)),
        };
        // Only when a figure moved (talk time or ratio), plus a heartbeat.
        let changed = match &self.last_snapshot {
            None => true,
            Some((t, prev)) => {
                prev.talk_time_s != snap.talk_time_s
                    || prev.talk_ratio_agent != snap.talk_ratio_agent
                    || now_ms >= t + SNAPSHOT_HEARTBEAT_MS
            }
        };
        if changed {
            self.last_snapshot = Some((now_ms, snap.clone()));
            self.out.push_back(Output::Snapshot(snap));
        }
    }

    /// Phrase summary, post-call notes, and the record.
    fn file_record(&mut self) {
        let Some(Ending { mut record, .. }) = self.ending.take() else { return };
        let mut transcript = std::mem::take(&mut self.transcript);
        transcript.sort_by(|a, b| a.start.total_cmp(&b.start));
        let t = &record.summary.turns;
        if let Some(mut d) = self.phrases.take() {
            let mut p = d.finish(t.call_duration_s, [t.talk_time_s.customer, t.talk_time_s.agent]);
            p.backchannel_check = d.check_backchannels(&t.backchannels.events, &transcript);
            while let Some(e) = d.poll_event() {
                self.coach.handle_phrase_event(&e);
                self.out.push_back(Output::Phrase(e));
            }
            record.phrases = Some(p);
        }
        // Live nudges still pending, then the post-call notes.
        self.drain_nudges();
        let notes = self.coach.finish(&record.summary.turns, record.phrases.as_ref());
        for n in &notes {
            self.out.push_back(Output::Nudge(n.clone()));
        }
        record.notes = notes;
        record.transcript = transcript;
        self.out.push_back(Output::Record(Box::new(record)));
        self.done = true;
    }
}
