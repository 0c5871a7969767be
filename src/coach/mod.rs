//! Nudge policy (sans-IO, one per call): turns the live listening signals of a call — turn
//! events, phrase events, periodic ticks with the cumulative talk times — into short nudges for
//! the agent, rate-limited so an agent is never spammed, and into post-call notes.
//!
//! Rules (DESIGN §1; every threshold is per queue, see [`CoachConfig`]):
//! - **interruption**: the agent interrupted the customer (DESIGN §2; back-channels never count).
//! - **talk share**: the agent's share of talk in the last `talk_share_window_s` is above
//!   `talk_share_max`, judged only once the window holds `talk_share_min_talk_s` of talk. The
//!   window is a full window of call time; after a talk-share nudge the next judgement needs a
//!   fresh full window, so the agent gets time to change course.
//! - **monologue**: an agent run (DESIGN §2 "longest monologue") reaches `monologue_s`. The turn
//!   analyzer reports a run once at its own `monologue_event_s`; a longer `monologue_s` is
//!   followed on ticks while the agent keeps talking, so the effective threshold is the larger one.
//! - **dead air**: silence, not on hold, of `dead_air_s`. The turn analyzer reports dead air at its
//!   own (shorter) threshold; the silence's start is taken from the last tick at which a talk total
//!   grew, and the nudge fires on the tick that passes `dead_air_s`. Time on hold is never counted:
//!   after a hold the silence is measured from the end of the hold. At most one nudge per silence.
//! - **no acknowledgement** (ASR only): the customer talked for `long_story_s` or more and the agent
//!   replied without an acknowledgement, paraphrase, empathy or back-channel phrase between the end
//!   of the story and `acknowledge_within_s` after the reply started. ASR results trail the audio,
//!   so a window is decided `asr_lag_s` after it closes (or after it was opened, when the reply was
//!   reported late), and phrases that arrive before the reply's turn event count too.
//! - **not read back** (ASR only): the phrase detector reports a spelled sequence the agent did not
//!   read back.
//! - **post-call** (ASR only, [`NudgePolicy::finish`]): no thanks, no next steps in the closing;
//!   missed read-backs the live policy never saw.
//!
//! Rate limits: a kind is not repeated within `cooldown_s`, and no two live nudges come within
//! `min_gap_s`. A one-off signal (interruption, missed acknowledgement, missed read-back) that
//! falls inside a limit is dropped and counted ([`NudgePolicy::suppressed`]); a condition that
//! lasts (dead air, talk share, monologue) is retried on later ticks while it holds.
//!
//! Time is the call's audio position in seconds, given by the caller; nothing here reads a clock,
//! logs, or touches sockets. Not here: delivery (whisper channel, audio cue), metrics.

use crate::analysis::phrases::{PhraseEvent, PhraseKind, PhraseSummary};
use crate::analysis::turns::{CallSummary, Party, TurnEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// A run of one party's speech ends when it pauses longer than this (DESIGN §2 monologue gap).
const MONOLOGUE_GAP_S: f64 = 2.0;
/// An acknowledgement may start this much before the customer's story ended by VAD: ASR word
/// times and VAD segment edges differ by a few frames.
const ACK_SLACK_S: f64 = 0.5;
/// Talk-share samples are kept at this spacing (the window needs no finer resolution).
const TALK_SAMPLE_STEP_S: f64 = 0.5;
/// Agent acknowledgement phrases remembered for replies reported after them.
const MAX_RECENT_ACKS: usize = 64;
const EPS: f64 = 1e-9;

// ---------------------------------------------------------------------------------------------
// Nudges

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NudgeKind {
    Interruption,
    TalkShare,
    Monologue,
    DeadAir,
    NoAcknowledgement,
    NotReadBack,
    NoThanks,
    NoNextSteps,
}

impl NudgeKind {
    pub const ALL: [NudgeKind; 8] = [
        NudgeKind::Interruption,
        NudgeKind::TalkShare,
        NudgeKind::Monologue,
        NudgeKind::DeadAir,
        NudgeKind::NoAcknowledgement,
        NudgeKind::NotReadBack,
        NudgeKind::NoThanks,
        NudgeKind::NoNextSteps,
    ];

    /// The metric label and whisper `kind` (same as the serde name).
    pub fn label(self) -> &'static str {
        match self {
            NudgeKind::Interruption => "interruption",
            NudgeKind::TalkShare => "talk_share",
            NudgeKind::Monologue => "monologue",
            NudgeKind::DeadAir => "dead_air",
            NudgeKind::NoAcknowledgement => "no_acknowledgement",
            NudgeKind::NotReadBack => "not_read_back",
            NudgeKind::NoThanks => "no_thanks",
            NudgeKind::NoNextSteps => "no_next_steps",
        }
    }

    /// Kinds that need phrase events, i.e. speech recognition.
    pub fn needs_asr(self) -> bool {
        matches!(self, NudgeKind::NoAcknowledgement | NudgeKind::NotReadBack | NudgeKind::NoThanks | NudgeKind::NoNextSteps)
    }

    /// The shipped text. Placeholders `{window}`, `{monologue}`, `{dead_air}`, `{long_story}` are
    /// replaced by the queue's thresholds ("2 minutes", "45 seconds").
    pub fn default_text(self) -> &'static str {
        match self {
            NudgeKind::Interruption => "You interrupted the customer — let them finish.",
            NudgeKind::TalkShare => "You've done most of the talking for {window} — ask a question and listen.",
            NudgeKind::Monologue => "You've been talking for {monologue} — pause and check in with the customer.",
            NudgeKind::DeadAir => "Long silence — tell the customer what you're doing.",
            NudgeKind::NoAcknowledgement => "The customer explained a lot — acknowledge it or sum it up before you move on.",
            NudgeKind::NotReadBack => "Read those details back to the customer to confirm them.",
            NudgeKind::NoThanks => "You didn't thank the customer at the end of the call.",
            NudgeKind::NoNextSteps => "You didn't tell the customer what happens next.",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

/// One nudge for the agent (live) or one post-call note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nudge {
    pub kind: NudgeKind,
    pub text: String,
    /// Audio position (s) at which the policy decided; the call's end for post-call notes.
    pub at: f64,
    pub post_call: bool,
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CoachError {
    #[error("config key `{key}`: {msg}")]
    Key { key: String, msg: String },
}

/// `[coach]`: thresholds, rate limits, enabled kinds and texts; `[coach.queues.<name>]` overrides
/// any of them for one queue (the queue label of the call, `default` without a queue header).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoachConfig {
    /// Length of the sliding window the agent's talk share is measured over.
    pub talk_share_window_s: f64,
    /// Agent share of the talk in the window (agent / (agent + customer)) above which to nudge.
    pub talk_share_max: f64,
    /// The window must hold at least this much talk (both parties) to be judged.
    pub talk_share_min_talk_s: f64,
    /// Agent monologue length that earns a nudge.
    pub monologue_s: f64,
    /// Silence (not on hold) that earns a nudge.
    pub dead_air_s: f64,
    /// A customer run at least this long is a story the agent should acknowledge.
    pub long_story_s: f64,
    /// ... within this long after the agent's reply starts.
    pub acknowledge_within_s: f64,
    /// How far ASR results trail the audio: acknowledgement windows are decided this much later.
    pub asr_lag_s: f64,
    /// Minimum time between two nudges of the same kind.
    pub cooldown_s: f64,
    /// Minimum time between any two live nudges.
    pub min_gap_s: f64,
    /// Kinds that may fire (all by default; an empty list turns coaching off).
    pub enabled: Vec<NudgeKind>,
    /// Text per kind, replacing the shipped one; kinds not named keep theirs.
    pub texts: BTreeMap<NudgeKind, String>,
    pub queues: BTreeMap<String, QueueCoachConfig>,
}

impl Default for CoachConfig {
    fn default() -> Self {
        CoachConfig {
            talk_share_window_s: 120.0,
            talk_share_max: 0.65,
            talk_share_min_talk_s: 30.0,
            monologue_s: 45.0,
            dead_air_s: 10.0,
            long_story_s: 20.0,
            acknowledge_within_s: 5.0,
            asr_lag_s: 2.0,
            cooldown_s: 60.0,
            min_gap_s: 10.0,
            enabled: NudgeKind::ALL.to_vec(),
            texts: BTreeMap::new(),
            queues: BTreeMap::new(),
        }
    }
}

/// `[coach.queues.<name>]`: any key of `[coach]` (but `queues`); unset keys inherit. `texts`
/// entries are merged over the global ones.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueCoachConfig {
    pub talk_share_window_s: Option<f64>,
    pub talk_share_max: Option<f64>,
    pub talk_share_min_talk_s: Option<f64>,
    pub monologue_s: Option<f64>,
    pub dead_air_s: Option<f64>,
    pub long_story_s: Option<f64>,
    pub acknowledge_within_s: Option<f64>,
    pub asr_lag_s: Option<f64>,
    pub cooldown_s: Option<f64>,
    pub min_gap_s: Option<f64>,
    pub enabled: Option<Vec<NudgeKind>>,
    pub texts: BTreeMap<NudgeKind, String>,
}

/// The settings in effect for one queue (global values with the queue's overrides applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoachSettings {
    pub talk_share_window_s: f64,
    pub talk_share_max: f64,
    pub talk_share_min_talk_s: f64,
    pub monologue_s: f64,
    pub dead_air_s: f64,
    pub long_story_s: f64,
    pub acknowledge_within_s: f64,
    pub asr_lag_s: f64,
    pub cooldown_s: f64,
    pub min_gap_s: f64,
    pub enabled: Vec<NudgeKind>,
    /// Every kind's text, placeholders not yet replaced.
    pub texts: BTreeMap<NudgeKind, String>,
}

impl CoachConfig {
    /// The settings for `queue`; a queue without a section gets the global ones.
    pub fn for_queue(&self, queue: &str) -> CoachSettings {
        self.resolve(self.queues.get(queue).cloned().unwrap_or_default())
    }

    fn resolve(&self, q: QueueCoachConfig) -> CoachSettings {
        let mut texts: BTreeMap<NudgeKind, String> = NudgeKind::ALL.iter().map(|k| (*k, k.default_text().to_string())).collect();
        texts.extend(self.texts.iter().map(|(k, v)| (*k, v.clone())));
        texts.extend(q.texts);
        CoachSettings {
            talk_share_window_s: q.talk_share_window_s.unwrap_or(self.talk_share_window_s),
            talk_share_max: q.talk_share_max.unwrap_or(self.talk_share_max),
            talk_share_min_talk_s: q.talk_share_min_talk_s.unwrap_or(self.talk_share_min_talk_s),
            monologue_s: q.monologue_s.unwrap_or(self.monologue_s),
            dead_air_s: q.dead_air_s.unwrap_or(self.dead_air_s),
            long_story_s: q.long_story_s.unwrap_or(self.long_story_s),
            acknowledge_within_s: q.acknowledge_within_s.unwrap_or(self.acknowledge_within_s),
            asr_lag_s: q.asr_lag_s.unwrap_or(self.asr_lag_s),
            cooldown_s: q.cooldown_s.unwrap_or(self.cooldown_s),
            min_gap_s: q.min_gap_s.unwrap_or(self.min_gap_s),
            enabled: q.enabled.unwrap_or_else(|| self.enabled.clone()),
            texts,
        }
    }

    /// Checks ranges of the global settings and of every queue's; errors name the key path
    /// (`coach.dead_air_s`, `coach.queues.sales.talk_share_max`).
    pub fn validate(&self) -> Result<(), CoachError> {
        self.resolve(QueueCoachConfig::default()).validate("coach")?;
        for (name, q) in &self.queues {
            self.resolve(q.clone()).validate(&format!("coach.queues.{name}"))?;
        }
        Ok(())
    }
}

impl CoachSettings {
    fn validate(&self, prefix: &str) -> Result<(), CoachError> {
        let err = |k: &str, msg: &str| CoachError::Key { key: format!("{prefix}.{k}"), msg: msg.to_string() };
        for (k, v) in [
            ("talk_share_window_s", self.talk_share_window_s),
            ("monologue_s", self.monologue_s),
            ("dead_air_s", self.dead_air_s),
            ("long_story_s", self.long_story_s),
            ("acknowledge_within_s", self.acknowledge_within_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(err(k, "must be a positive number of seconds"));
            }
        }
        for (k, v) in [
            ("talk_share_min_talk_s", self.talk_share_min_talk_s),
            ("asr_lag_s", self.asr_lag_s),
            ("cooldown_s", self.cooldown_s),
            ("min_gap_s", self.min_gap_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(err(k, "must be a non-negative number of seconds"));
            }
        }
        if !(self.talk_share_max > 0.0 && self.talk_share_max <= 1.0) {
            return Err(err("talk_share_max", "must be a share above 0 and at most 1"));
        }
        for (k, t) in &self.texts {
            if t.trim().is_empty() {
                return Err(err(&format!("texts.{}", k.label()), "must not be empty"));
            }
        }
        Ok(())
    }

    /// The text for `kind` with the threshold placeholders filled in.
    pub fn text(&self, kind: NudgeKind) -> String {
        let t = self.texts.get(&kind).map_or(kind.default_text(), |s| s.as_str());
        t.replace("{window}", &human_duration(self.talk_share_window_s))
            .replace("{monologue}", &human_duration(self.monologue_s))
            .replace("{dead_air}", &human_duration(self.dead_air_s))
            .replace("{long_story}", &human_duration(self.long_story_s))
    }

    pub fn is_enabled(&self, kind: NudgeKind) -> bool {
        self.enabled.contains(&kind)
    }
}

/// "2 minutes", "1 minute", "45 seconds", "7.5 seconds".
fn human_duration(s: f64) -> String {
    if s >= 60.0 && (s % 60.0).abs() < EPS {
        let m = (s / 60.0).round();
        if m == 1.0 {
            "1 minute".into()
        } else {
            format!("{m} minutes")
        }
    } else if s == 1.0 {
        "1 second".into()
    } else {
        format!("{s} seconds")
    }
}

// ---------------------------------------------------------------------------------------------
// Policy

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    Sent,
    /// Inside a cooldown or the minimum gap.
    Suppressed,
    /// Kind disabled for the queue, or it needs ASR and there is none.
    Disabled,
}

#[derive(Debug, Clone, Copy)]
struct DeadAir {
    /// Start of the silence (or end of the last hold inside it).
    since: f64,
    done: bool,
}

#[derive(Debug, Clone, Copy)]
struct AgentRun {
    start: f64,
    /// Last time the agent's talk total grew (or the run's end as reported).
    last: f64,
}

#[derive(Debug, Clone, Copy)]
struct AckWindow {
    from: f64,
    to: f64,
    decide_at: f64,
}

/// The per-call nudge policy. Feed it with `handle_*`, take nudges with [`NudgePolicy::poll_nudge`]
/// after each input, and call [`NudgePolicy::finish`] once at the end of the call.
#[derive(Debug, Clone)]
pub struct NudgePolicy {
    s: CoachSettings,
    asr: bool,
    now: f64,
    finished: bool,
    out: VecDeque<Nudge>,
    last_by_kind: [Option<f64>; NudgeKind::ALL.len()],
    last_any: Option<f64>,
    suppressed: usize,
    /// (time, cumulative talk [customer, agent]) samples covering the talk-share window.
    talk: VecDeque<(f64, [f64; 2])>,
    /// Talk-share judgements need a full window after this time (call start or the last nudge).
    talk_share_since: f64,
    totals: [f64; 2],
    last_growth: [Option<f64>; 2],
    on_hold: bool,
    hold_ended: Option<f64>,
    dead_air: Option<DeadAir>,
    agent_run: Option<AgentRun>,
    ack_windows: Vec<AckWindow>,
    recent_acks: VecDeque<f64>,
    not_read_back_seen: usize,
}

impl NudgePolicy {
    /// `queue`: the call's queue label (selects `[coach.queues.<queue>]`); `asr`: phrase events
    /// will be fed (speech recognition is on for this call).
    pub fn new(cfg: &CoachConfig, queue: &str, asr: bool) -> Self {
        Self::with_settings(cfg.for_queue(queue), asr)
    }

    pub fn with_settings(s: CoachSettings, asr: bool) -> Self {
        NudgePolicy {
            s,
            asr,
            now: 0.0,
            finished: false,
            out: VecDeque::new(),
            last_by_kind: [None; NudgeKind::ALL.len()],
            last_any: None,
            suppressed: 0,
            talk: VecDeque::from([(0.0, [0.0, 0.0])]),
            talk_share_since: 0.0,
            totals: [0.0, 0.0],
            last_growth: [None, None],
            on_hold: false,
            hold_ended: None,
            dead_air: None,
            agent_run: None,
            ack_windows: Vec::new(),
            recent_acks: VecDeque::new(),
            not_read_back_seen: 0,
        }
    }

    pub fn settings(&self) -> &CoachSettings {
        &self.s
    }

    /// One-off signals (interruption, missed acknowledgement, missed read-back) dropped by the
    /// cooldown or the minimum gap so far.
    pub fn suppressed(&self) -> usize {
        self.suppressed
    }

    /// The next live nudge, oldest first.
    pub fn poll_nudge(&mut self) -> Option<Nudge> {
        self.out.pop_front()
    }

    fn advance(&mut self, t: f64) {
        if t.is_finite() && t > self.now {
            self.now = t;
        }
    }

    /// `one_off`: the signal will not come again (counted when suppressed); lasting conditions are
    /// retried by their callers instead.
    fn emit(&mut self, kind: NudgeKind, at: f64, one_off: bool) -> Emit {
        if !self.s.is_enabled(kind) || (kind.needs_asr() && !self.asr) {
            return Emit::Disabled;
        }
        let within = |last: Option<f64>, limit: f64| last.is_some_and(|l| at - l < limit - EPS);
        if within(self.last_by_kind[kind.idx()], self.s.cooldown_s) || within(self.last_any, self.s.min_gap_s) {
            self.suppressed += one_off as usize;
            return Emit::Suppressed;
        }
        self.last_by_kind[kind.idx()] = Some(at);
        self.last_any = Some(at);
        self.out.push_back(Nudge { kind, text: self.s.text(kind), at, post_call: false });
        Emit::Sent
    }

    /// A live event of the turn analyzer.
    pub fn handle_turn_event(&mut self, e: &TurnEvent) {
        if self.finished {
            return;
        }
        self.advance(e.at());
        let now = self.now;
        match *e {
            TurnEvent::Interruption { by: Party::Agent, .. } => {
                self.emit(NudgeKind::Interruption, now, true);
            }
            TurnEvent::Interruption { by: Party::Customer, .. } => self.agent_run = None,
            TurnEvent::Backchannel { .. } => {}
            TurnEvent::Response { from, to, at, latency_s, prev_run_s } => {
                if to == Party::Customer {
                    self.agent_run = None;
                }
                if from == Party::Customer && to == Party::Agent && prev_run_s + EPS >= self.s.long_story_s {
                    self.open_ack_window(at - latency_s.max(0.0), at);
                }
            }
            TurnEvent::DeadAirStarted { at } => {
                // The analyzer reports the silence once it is already some seconds old; its start
                // is the last time anyone's talk grew, bounded by the report itself.
                let last_talk = self.last_growth.iter().flatten().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut since = if last_talk.is_finite() && last_talk <= at { last_talk } else { at };
                if let Some(h) = self.hold_ended {
                    since = since.max(h);
                }
                self.dead_air = Some(DeadAir { since, done: false });
                self.check_dead_air();
            }
            TurnEvent::DeadAirEnded { .. } => self.dead_air = None,
            TurnEvent::MonologueOverThreshold { party: Party::Agent, at, length_s } => {
                self.agent_run = Some(AgentRun { start: at - length_s, last: at.max(self.last_growth[1].unwrap_or(at)) });
                self.check_agent_run();
            }
            TurnEvent::MonologueOverThreshold { party: Party::Customer, .. } => {}
        }
    }

    /// A phrase event of the phrase detector (ASR on).
    pub fn handle_phrase_event(&mut self, e: &PhraseEvent) {
        if self.finished {
            return;
        }
        match e.kind {
            PhraseKind::NotReadBack => {
                self.not_read_back_seen += 1;
                self.advance(e.at);
                self.emit(NudgeKind::NotReadBack, self.now, true);
            }
            PhraseKind::Acknowledgement | PhraseKind::Paraphrase | PhraseKind::Empathy | PhraseKind::Backchannel
                if e.party == Party::Agent =>
            {
                self.ack_windows.retain(|w| !(w.from - EPS <= e.at && e.at <= w.to + EPS));
                if self.recent_acks.len() == MAX_RECENT_ACKS {
                    self.recent_acks.pop_front();
                }
                self.recent_acks.push_back(e.at);
            }
            _ => {}
        }
    }

    /// Periodic input (every few tens of ms of audio): the audio position, the cumulative talk
    /// time of [customer, agent] (as the turn analyzer counts it, open segments included) and the
    /// hold state.
    pub fn handle_tick(&mut self, now: f64, talk_time_s: [f64; 2], on_hold: bool) {
        if self.finished {
            return;
        }
        self.advance(now);
        let now = self.now;
        for (i, t) in talk_time_s.iter().enumerate() {
            if *t > self.totals[i] + EPS {
                self.last_growth[i] = Some(now);
            }
            self.totals[i] = *t;
        }
        if self.on_hold && !on_hold {
            self.hold_ended = Some(now);
        }
        self.on_hold = on_hold;

        // Dead air: speech ends it even before the analyzer says so; hold time is not counted.
        if let Some(d) = &mut self.dead_air {
            if self.last_growth.iter().flatten().any(|g| *g > d.since + EPS && *g >= now - EPS) {
                self.dead_air = None;
            } else if on_hold {
                d.since = now;
            } else if let Some(h) = self.hold_ended {
                // A silence reported just as a hold ended (before this tick saw the end) is
                // measured from the end of the hold too.
                d.since = d.since.max(h);
            }
        }
        self.check_dead_air();

        if let Some(r) = &mut self.agent_run {
            if self.last_growth[1] == Some(now) {
                r.last = now;
            } else if now - r.last > MONOLOGUE_GAP_S + EPS {
                self.agent_run = None;
            }
        }
        self.check_agent_run();

        self.check_talk_share(talk_time_s);

        let due: Vec<AckWindow> = self.ack_windows.iter().filter(|w| now + EPS >= w.decide_at).copied().collect();
        if !due.is_empty() {
            self.ack_windows.retain(|w| now + EPS < w.decide_at);
            for _ in due {
                self.emit(NudgeKind::NoAcknowledgement, now, true);
            }
        }
    }

    fn check_dead_air(&mut self) {
        let Some(d) = self.dead_air else { return };
        if d.done || self.on_hold || self.now - d.since + EPS < self.s.dead_air_s {
            return;
        }
        if self.emit(NudgeKind::DeadAir, self.now, false) != Emit::Suppressed {
            self.dead_air = Some(DeadAir { done: true, ..d });
        }
    }

    fn check_agent_run(&mut self) {
        let Some(r) = self.agent_run else { return };
        if r.last - r.start + EPS < self.s.monologue_s {
            return;
        }
        if self.emit(NudgeKind::Monologue, self.now, false) != Emit::Suppressed {
            // One nudge per run.
            self.agent_run = None;
        }
    }

    fn check_talk_share(&mut self, totals: [f64; 2]) {
        let now = self.now;
        if self.talk.back().is_none_or(|b| now - b.0 >= TALK_SAMPLE_STEP_S - EPS) {
            self.talk.push_back((now, totals));
        }
        let cutoff = now - self.s.talk_share_window_s;
        while self.talk.len() >= 2 && self.talk[1].0 <= cutoff + EPS {
            self.talk.pop_front();
        }
        if !self.s.is_enabled(NudgeKind::TalkShare) || self.on_hold || cutoff + EPS < self.talk_share_since {
            return;
        }
        let Some(&(t0, base)) = self.talk.front() else { return };
        if t0 > cutoff + EPS {
            return;
        }
        let c = (totals[0] - base[0]).max(0.0);
        let a = (totals[1] - base[1]).max(0.0);
        if c + a < self.s.talk_share_min_talk_s - EPS || a / (c + a) <= self.s.talk_share_max {
            return;
        }
        if self.emit(NudgeKind::TalkShare, now, false) == Emit::Sent {
            self.talk_share_since = now;
        }
    }

    fn open_ack_window(&mut self, story_end: f64, reply_at: f64) {
        if !self.asr || !self.s.is_enabled(NudgeKind::NoAcknowledgement) {
            return;
        }
        let w = AckWindow {
            from: story_end - ACK_SLACK_S,
            to: reply_at + self.s.acknowledge_within_s,
            decide_at: (reply_at + self.s.acknowledge_within_s).max(self.now) + self.s.asr_lag_s,
        };
        if self.recent_acks.iter().any(|t| w.from - EPS <= *t && *t <= w.to + EPS) {
            return;
        }
        self.ack_windows.push(w);
    }

    /// End of the call: post-call notes (not rate-limited). With `phrases` (ASR on): no thanks and
    /// no next steps in the closing, and read-backs missed at the very end of the call (reported by
    /// the detector's own finish, never seen live). Open acknowledgement windows are dropped: a
    /// live nudge after the call helps nobody. Later input is ignored.
    pub fn finish(&mut self, summary: &CallSummary, phrases: Option<&PhraseSummary>) -> Vec<Nudge> {
        self.finished = true;
        self.ack_windows.clear();
        self.dead_air = None;
        self.agent_run = None;
        let Some(p) = phrases else { return Vec::new() };
        let at = summary.call_duration_s;
        let mut notes = Vec::new();
        let mut note = |kind: NudgeKind| {
            if self.s.is_enabled(kind) {
                notes.push(Nudge { kind, text: self.s.text(kind), at, post_call: true });
            }
        };
        if p.not_read_back > self.not_read_back_seen {
            note(NudgeKind::NotReadBack);
        }
        // A closing needs a call in which the agent spoke at all.
        if summary.talk_time_s.agent > 0.0 {
            if !p.closing.thanks {
                note(NudgeKind::NoThanks);
            }
            if !p.closing.next_steps {
                note(NudgeKind::NoNextSteps);
            }
        }
        notes
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::phrases::{PhraseDetector, PhrasePack, PhraseParams};
    use crate::analysis::turns::{summarize, TurnParams};

    const TICK: f64 = 0.1;

    fn policy(cfg: &CoachConfig, asr: bool) -> NudgePolicy {
        NudgePolicy::new(cfg, "default", asr)
    }

    fn drain(p: &mut NudgePolicy) -> Vec<Nudge> {
        std::iter::from_fn(|| p.poll_nudge()).collect()
    }

    fn kinds(v: &[Nudge]) -> Vec<(NudgeKind, f64)> {
        v.iter().map(|n| (n.kind, (n.at * 10.0).round() / 10.0)).collect()
    }

    /// Ticks from `from` to `to` (exclusive) with talk totals given by `talk(t)`.
    fn ticks(p: &mut NudgePolicy, from: f64, to: f64, hold: bool, talk: impl Fn(f64) -> [f64; 2]) -> Vec<Nudge> {
        let mut out = Vec::new();
        let n = ((to - from) / TICK).round() as usize;
        for i in 0..n {
            let t = from + i as f64 * TICK;
            p.handle_tick(t, talk(t), hold);
            out.extend(drain(p));
        }
        out
    }

    fn interruption(by: Party, at: f64) -> TurnEvent {
        TurnEvent::Interruption { by, at, overlap_s: 0.5 }
    }

    fn phrase(kind: PhraseKind, party: Party, at: f64) -> PhraseEvent {
        PhraseEvent { kind, party, at, evidence: String::new() }
    }

    fn response(from: Party, at: f64, latency_s: f64, prev_run_s: f64) -> TurnEvent {
        TurnEvent::Response { from, to: from.other(), at, latency_s, prev_run_s }
    }

    fn phrase_summary(thanks: bool, next_steps: bool) -> PhraseSummary {
        let mut d = PhraseDetector::new(PhrasePack::builtin_en(), PhraseParams::default());
        let mut s = d.finish(60.0, [20.0, 20.0]);
        s.closing.thanks = thanks;
        s.closing.next_steps = next_steps;
        s
    }

    fn call_summary(agent_talk: bool) -> CallSummary {
        let agent = if agent_talk { vec![(11.0, 30.0)] } else { vec![] };
        summarize(&TurnParams::default(), 60.0, &[vec![(1.0, 10.0)], agent], &[], &[])
    }

    #[test]
    fn defaults_and_texts() {
        let c = CoachConfig::default();
        c.validate().unwrap();
        let s = c.for_queue("any");
        assert_eq!(s.text(NudgeKind::Interruption), "You interrupted the customer — let them finish.");
        assert_eq!(s.text(NudgeKind::TalkShare), "You've done most of the talking for 2 minutes — ask a question and listen.");
        assert_eq!(s.text(NudgeKind::DeadAir), "Long silence — tell the customer what you're doing.");
        assert_eq!(s.text(NudgeKind::Monologue), "You've been talking for 45 seconds — pause and check in with the customer.");
        assert_eq!(human_duration(60.0), "1 minute");
        assert_eq!(human_duration(90.0), "90 seconds");
        assert_eq!(human_duration(7.5), "7.5 seconds");
        for k in NudgeKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::String(k.label().into()));
        }
    }

    #[test]
    fn config_from_toml_with_queue_override() {
        #[derive(Deserialize)]
        struct Root {
            coach: CoachConfig,
        }
        let text = r#"
            [coach]
            dead_air_s = 12
            cooldown_s = 30
            [coach.texts]
            dead_air = "Still there? Say what you're doing."
            [coach.queues.sales]
            dead_air_s = 20.0
            talk_share_max = 0.8
            enabled = ["dead_air", "talk_share"]
            [coach.queues.sales.texts]
            talk_share = "Over {window}: let them talk."
        "#;
        let c: CoachConfig = toml::from_str::<Root>(text).unwrap().coach;
        c.validate().unwrap();
        let d = c.for_queue("default");
        assert_eq!((d.dead_air_s, d.cooldown_s, d.talk_share_max), (12.0, 30.0, 0.65));
        assert_eq!(d.text(NudgeKind::DeadAir), "Still there? Say what you're doing.");
        assert!(d.is_enabled(NudgeKind::Interruption));
        let s = c.for_queue("sales");
        assert_eq!((s.dead_air_s, s.cooldown_s, s.talk_share_max), (20.0, 30.0, 0.8));
        assert_eq!(s.text(NudgeKind::DeadAir), "Still there? Say what you're doing.");
        assert_eq!(s.text(NudgeKind::TalkShare), "Over 2 minutes: let them talk.");
        assert!(!s.is_enabled(NudgeKind::Interruption));

        assert!(toml::from_str::<Root>("[coach]\nbogus = 1\n").is_err());
        assert!(toml::from_str::<Root>("[coach.queues.x]\nbogus = 1\n").is_err());
        assert!(toml::from_str::<Root>("[coach]\nenabled = [\"shouting\"]\n").is_err());
        assert!(toml::from_str::<Root>("[coach.texts]\nshouting = \"x\"\n").is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let c = CoachConfig { talk_share_max: 1.5, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().to_string(), "config key `coach.talk_share_max`: must be a share above 0 and at most 1");
        let mut c = CoachConfig::default();
        c.queues.insert("sales".into(), QueueCoachConfig { dead_air_s: Some(0.0), ..Default::default() });
        assert!(c.validate().unwrap_err().to_string().contains("coach.queues.sales.dead_air_s"));
        let mut c = CoachConfig::default();
        c.texts.insert(NudgeKind::NoThanks, " ".into());
        assert!(c.validate().unwrap_err().to_string().contains("coach.texts.no_thanks"));
        let c = CoachConfig { cooldown_s: -1.0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("coach.cooldown_s"));
    }

    #[test]
    fn agent_interruptions_only() {
        let mut p = policy(&CoachConfig::default(), false);
        p.handle_turn_event(&interruption(Party::Customer, 3.0));
        assert!(p.poll_nudge().is_none());
        p.handle_turn_event(&interruption(Party::Agent, 5.0));
        let n = p.poll_nudge().unwrap();
        assert_eq!((n.kind, n.at, n.post_call), (NudgeKind::Interruption, 5.0, false));
        assert_eq!(n.text, "You interrupted the customer — let them finish.");
        assert!(p.poll_nudge().is_none());
    }

    #[test]
    fn cooldown_per_kind() {
        let mut p = policy(&CoachConfig::default(), false);
        for at in [10.0, 30.0, 69.9, 70.0, 100.0, 131.0] {
            p.handle_turn_event(&interruption(Party::Agent, at));
        }
        assert_eq!(
            kinds(&drain(&mut p)),
            vec![(NudgeKind::Interruption, 10.0), (NudgeKind::Interruption, 70.0), (NudgeKind::Interruption, 131.0)]
        );
        assert_eq!(p.suppressed(), 3);
    }

    #[test]
    fn min_gap_between_kinds() {
        let mut p = policy(&CoachConfig::default(), true);
        p.handle_turn_event(&interruption(Party::Agent, 10.0));
        // A one-off signal inside the gap is dropped.
        p.handle_phrase_event(&phrase(PhraseKind::NotReadBack, Party::Customer, 15.0));
        // A lasting condition (monologue still going) waits for the gap to pass.
        p.handle_turn_event(&TurnEvent::MonologueOverThreshold { party: Party::Agent, at: 16.0, length_s: 45.0 });
        let mut got = drain(&mut p);
        got.extend(ticks(&mut p, 16.0, 22.0, false, |t| [0.0, t]));
        assert_eq!(kinds(&got), vec![(NudgeKind::Interruption, 10.0), (NudgeKind::Monologue, 20.0)]);
        p.handle_phrase_event(&phrase(PhraseKind::NotReadBack, Party::Customer, 30.0));
        assert_eq!(kinds(&drain(&mut p)), vec![(NudgeKind::NotReadBack, 30.0)]);
    }

    #[test]
    fn zero_limits_let_everything_through() {
        let cfg = CoachConfig { cooldown_s: 0.0, min_gap_s: 0.0, ..Default::default() };
        let mut p = policy(&cfg, false);
        for at in [1.0, 1.0, 2.0] {
            p.handle_turn_event(&interruption(Party::Agent, at));
        }
        assert_eq!(drain(&mut p).len(), 3);
    }

    #[test]
    fn talk_share_window() {
        // The agent talks all the time, the customer never: nothing before a full window.
        let mut p = policy(&CoachConfig::default(), false);
        let got = ticks(&mut p, 0.0, 119.5, false, |t| [0.0, t]);
        assert!(got.is_empty(), "{got:?}");
        let got = ticks(&mut p, 119.5, 121.0, false, |t| [0.0, t]);
        assert_eq!(kinds(&got), vec![(NudgeKind::TalkShare, 120.0)]);
        assert_eq!(got[0].text, "You've done most of the talking for 2 minutes — ask a question and listen.");
        // A fresh full window is needed for the next one, although the cooldown ended at 180.
        let got = ticks(&mut p, 121.0, 239.5, false, |t| [0.0, t]);
        assert!(got.is_empty(), "{got:?}");
        let got = ticks(&mut p, 239.5, 241.0, false, |t| [0.0, t]);
        assert_eq!(kinds(&got), vec![(NudgeKind::TalkShare, 240.0)]);
    }

    #[test]
    fn talk_share_slides_and_needs_enough_talk() {
        // 60 % agent (not above 65 %): no nudge.
        let mut p = policy(&CoachConfig::default(), false);
        assert!(ticks(&mut p, 0.0, 300.0, false, |t| [0.4 * t, 0.6 * t]).is_empty());
        // 100 % agent but only 20 s of talk in any 2-minute window: no nudge.
        let mut p = policy(&CoachConfig::default(), false);
        assert!(ticks(&mut p, 0.0, 300.0, false, |t| [0.0, t / 6.0]).is_empty());
        // The customer tells a long story for the first 100 s, then the agent talks from 100 s on:
        // the window slides off the story, and at 200 s holds 20 s customer, 80 s agent (80 %).
        let mut p = policy(&CoachConfig::default(), false);
        let talk = |t: f64| if t < 100.0 { [t, 0.0] } else { [100.0, t - 100.0] };
        let got = ticks(&mut p, 0.0, 290.0, false, talk);
        // Agent share crosses 65 % when (t - 100) / 120 > 0.65, at t ≈ 178 (the next judgement
        // needs a fresh window: 298 s).
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].kind, NudgeKind::TalkShare);
        assert!((got[0].at - 178.0).abs() <= 0.6, "{got:?}");
    }

    /// Both parties talk until `speech_end`, then silence.
    fn talk_until(speech_end: f64) -> impl Fn(f64) -> [f64; 2] {
        move |t: f64| {
            let x = t.min(speech_end) / 2.0;
            [x, x]
        }
    }

    #[test]
    fn dead_air_nudge_after_threshold() {
        let mut p = policy(&CoachConfig::default(), false);
        let talk = talk_until(20.0);
        let mut got = ticks(&mut p, 0.0, 25.0, false, &talk);
        // The analyzer reports dead air at 5 s of silence; the nudge waits for 10 s.
        p.handle_turn_event(&TurnEvent::DeadAirStarted { at: 25.0 });
        got.extend(drain(&mut p));
        assert!(got.is_empty(), "{got:?}");
        let got = ticks(&mut p, 25.0, 40.0, false, &talk);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].kind, NudgeKind::DeadAir);
        assert!((got[0].at - 30.0).abs() <= 0.15, "{got:?}");
    }

    #[test]
    fn dead_air_that_ends_early_is_not_nudged() {
        let mut p = policy(&CoachConfig::default(), false);
        ticks(&mut p, 0.0, 25.0, false, talk_until(20.0));
        p.handle_turn_event(&TurnEvent::DeadAirStarted { at: 25.0 });
        ticks(&mut p, 25.0, 28.0, false, talk_until(20.0));
        p.handle_turn_event(&TurnEvent::DeadAirEnded { at: 28.0, duration_s: 8.0 });
        let talk = |t: f64| if t < 28.0 { [10.0, 10.0] } else { [10.0 + t - 28.0, 10.0] };
        assert!(ticks(&mut p, 28.0, 60.0, false, talk).is_empty());
        // Speech seen on a tick ends the silence even before the analyzer's event.
        let mut p = policy(&CoachConfig::default(), false);
        ticks(&mut p, 0.0, 25.0, false, talk_until(20.0));
        p.handle_turn_event(&TurnEvent::DeadAirStarted { at: 25.0 });
        let talk = |t: f64| if t < 28.0 { [10.0, 10.0] } else { [10.0, 10.0 + t - 28.0] };
        assert!(ticks(&mut p, 25.0, 60.0, false, talk).is_empty());
    }

    #[test]
    fn hold_suppresses_dead_air() {
        let mut p = policy(&CoachConfig::default(), false);
        let talk = talk_until(20.0);
        ticks(&mut p, 0.0, 25.0, false, &talk);
        p.handle_turn_event(&TurnEvent::DeadAirStarted { at: 25.0 });
        // On hold from 26 s to 90 s: silence, but no dead air.
        ticks(&mut p, 25.0, 26.0, false, &talk);
        let got = ticks(&mut p, 26.0, 90.0, true, &talk);
        assert!(got.is_empty(), "{got:?}");
        // Off hold and still silent: counted from the end of the hold.
        let got = ticks(&mut p, 90.0, 110.0, false, &talk);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!((got[0].at - 100.0).abs() <= 0.15, "{got:?}");
        // One nudge per silence.
        assert!(ticks(&mut p, 110.0, 200.0, false, &talk).is_empty());
    }

    #[test]
    fn dead_air_reported_after_hold() {
        // Silence began before a hold; the analyzer reports it only after the hold ended.
        let mut p = policy(&CoachConfig::default(), false);
        let talk = talk_until(20.0);
        ticks(&mut p, 0.0, 22.0, false, &talk);
        ticks(&mut p, 22.0, 60.0, true, &talk);
        ticks(&mut p, 60.0, 60.1, false, &talk);
        p.handle_turn_event(&TurnEvent::DeadAirStarted { at: 25.0 });
        assert!(drain(&mut p).is_empty());
        let got = ticks(&mut p, 60.1, 75.0, false, &talk);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!((got[0].at - 70.0).abs() <= 0.15, "{got:?}");
    }

    #[test]
    fn monologue_at_event_or_followed_on_ticks() {
        let mut p = policy(&CoachConfig::default(), false);
        p.handle_turn_event(&TurnEvent::MonologueOverThreshold { party: Party::Customer, at: 50.0, length_s: 50.0 });
        assert!(p.poll_nudge().is_none());
        p.handle_turn_event(&TurnEvent::MonologueOverThreshold { party: Party::Agent, at: 100.0, length_s: 46.0 });
        assert_eq!(kinds(&drain(&mut p)), vec![(NudgeKind::Monologue, 100.0)]);

        // A queue with a 60 s monologue: the analyzer's 45 s event is followed while the agent
        // keeps talking.
        let mut cfg = CoachConfig::default();
        cfg.queues.insert("long".into(), QueueCoachConfig { monologue_s: Some(60.0), ..Default::default() });
        let mut p = NudgePolicy::new(&cfg, "long", false);
        let agent = |t: f64| [0.0, t];
        ticks(&mut p, 0.0, 45.0, false, agent);
        p.handle_turn_event(&TurnEvent::MonologueOverThreshold { party: Party::Agent, at: 45.0, length_s: 45.0 });
        assert!(drain(&mut p).is_empty());
        let got = ticks(&mut p, 45.0, 70.0, false, agent);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!((got[0].at - 60.0).abs() <= 0.15, "{got:?}");
        assert_eq!(got[0].text, "You've been talking for 1 minute — pause and check in with the customer.");

        // ... but not when the customer takes the floor, or the agent pauses past the run gap.
        let mut p = NudgePolicy::new(&cfg, "long", false);
        ticks(&mut p, 0.0, 45.0, false, agent);
        p.handle_turn_event(&TurnEvent::MonologueOverThreshold { party: Party::Agent, at: 45.0, length_s: 45.0 });
        p.handle_turn_event(&response(Party::Agent, 50.0, 0.5, 50.0));
        assert!(ticks(&mut p, 45.0, 90.0, false, agent).is_empty());
        let mut p = NudgePolicy::new(&cfg, "long", false);
        ticks(&mut p, 0.0, 45.0, false, agent);
        p.handle_turn_event(&TurnEvent::MonologueOverThreshold { party: Party::Agent, at: 45.0, length_s: 45.0 });
        let paused = |t: f64| {
            if t < 50.0 {
                [0.0, t]
            } else if t < 53.0 {
                [0.0, 50.0]
            } else {
                [0.0, t - 3.0]
            }
        };
        assert!(ticks(&mut p, 45.0, 90.0, false, paused).is_empty());
    }

    #[test]
    fn acknowledgement_window_satisfied() {
        // The customer talked 30 s (to 40 s); the agent replied at 41 s with "I see what you mean"
        // at 41.2 s, recognised (and reported) a few seconds later.
        let mut p = policy(&CoachConfig::default(), true);
        let talk = |t: f64| [t.min(40.0), (t - 41.0).max(0.0)];
        ticks(&mut p, 0.0, 44.0, false, talk);
        p.handle_turn_event(&response(Party::Customer, 41.0, 1.0, 30.0));
        ticks(&mut p, 44.0, 46.5, false, talk);
        p.handle_phrase_event(&phrase(PhraseKind::Paraphrase, Party::Agent, 41.2));
        assert!(ticks(&mut p, 46.5, 80.0, false, talk).is_empty());

        // The phrase may be reported before the reply's turn event (a long reply closes late).
        let mut p = policy(&CoachConfig::default(), true);
        ticks(&mut p, 0.0, 44.0, false, talk);
        p.handle_phrase_event(&phrase(PhraseKind::Acknowledgement, Party::Agent, 42.0));
        ticks(&mut p, 44.0, 52.0, false, talk);
        p.handle_turn_event(&response(Party::Customer, 41.0, 1.0, 30.0));
        assert!(ticks(&mut p, 52.0, 80.0, false, talk).is_empty());

        // A back-channel just after the story counts too; the customer's own phrases do not.
        let mut p = policy(&CoachConfig::default(), true);
        ticks(&mut p, 0.0, 44.0, false, talk);
        p.handle_turn_event(&response(Party::Customer, 41.0, 1.0, 30.0));
        p.handle_phrase_event(&phrase(PhraseKind::Acknowledgement, Party::Customer, 41.5));
        p.handle_phrase_event(&phrase(PhraseKind::Backchannel, Party::Agent, 40.2));
        assert!(ticks(&mut p, 44.0, 80.0, false, talk).is_empty());
    }

    #[test]
    fn acknowledgement_window_expired() {
        let mut p = policy(&CoachConfig::default(), true);
        let talk = |t: f64| [t.min(40.0), (t - 41.0).max(0.0)];
        ticks(&mut p, 0.0, 44.0, false, talk);
        p.handle_turn_event(&response(Party::Customer, 41.0, 1.0, 30.0));
        // An acknowledgement well after the window (and an unrelated question) do not help.
        p.handle_phrase_event(&phrase(PhraseKind::OpenQuestion, Party::Agent, 42.0));
        let got = ticks(&mut p, 44.0, 60.0, false, talk);
        p.handle_phrase_event(&phrase(PhraseKind::Acknowledgement, Party::Agent, 55.0));
        // Window 40.5..46 s, decided after the ASR lag: 48 s.
        assert_eq!(kinds(&got), vec![(NudgeKind::NoAcknowledgement, 48.0)]);
        assert_eq!(got[0].text, "The customer explained a lot — acknowledge it or sum it up before you move on.");

        // A reply reported late is decided the ASR lag after its report.
        let mut p = policy(&CoachConfig::default(), true);
        ticks(&mut p, 0.0, 60.0, false, talk);
        p.handle_turn_event(&response(Party::Customer, 41.0, 1.0, 30.0));
        assert_eq!(kinds(&ticks(&mut p, 60.0, 70.0, false, talk)), vec![(NudgeKind::NoAcknowledgement, 61.9)]);
    }

    #[test]
    fn acknowledgement_needs_asr_and_a_long_story() {
        let talk = |t: f64| [t.min(40.0), (t - 41.0).max(0.0)];
        // Without ASR there are no phrase events to judge by.
        let mut p = policy(&CoachConfig::default(), false);
        ticks(&mut p, 0.0, 44.0, false, talk);
        p.handle_turn_event(&response(Party::Customer, 41.0, 1.0, 30.0));
        assert!(ticks(&mut p, 44.0, 80.0, false, talk).is_empty());
        // A short customer turn, or the customer answering the agent, opens no window.
        let mut p = policy(&CoachConfig::default(), true);
        ticks(&mut p, 0.0, 44.0, false, talk);
        p.handle_turn_event(&response(Party::Customer, 41.0, 1.0, 19.0));
        p.handle_turn_event(&response(Party::Agent, 43.0, 1.0, 30.0));
        assert!(ticks(&mut p, 44.0, 80.0, false, talk).is_empty());
    }

    #[test]
    fn per_queue_override() {
        let mut cfg = CoachConfig::default();
        cfg.queues.insert(
            "billing".into(),
            QueueCoachConfig { dead_air_s: Some(20.0), cooldown_s: Some(5.0), min_gap_s: Some(0.0), ..Default::default() },
        );
        let run = |queue: &str| {
            let mut p = NudgePolicy::new(&cfg, queue, false);
            let talk = talk_until(20.0);
            ticks(&mut p, 0.0, 25.0, false, &talk);
            p.handle_turn_event(&TurnEvent::DeadAirStarted { at: 25.0 });
            let mut got = ticks(&mut p, 25.0, 60.0, false, &talk);
            for at in [60.0, 62.0, 66.0] {
                p.handle_turn_event(&interruption(Party::Agent, at));
            }
            got.extend(drain(&mut p));
            kinds(&got)
        };
        assert_eq!(run("default"), vec![(NudgeKind::DeadAir, 30.0), (NudgeKind::Interruption, 60.0)]);
        assert_eq!(run("billing"), vec![(NudgeKind::DeadAir, 40.0), (NudgeKind::Interruption, 60.0), (NudgeKind::Interruption, 66.0)]);
    }

    #[test]
    fn disabled_kind() {
        let cfg = CoachConfig { enabled: vec![NudgeKind::DeadAir, NudgeKind::NoNextSteps], ..Default::default() };
        let mut p = policy(&cfg, true);
        let talk = talk_until(15.0);
        ticks(&mut p, 0.0, 20.0, false, &talk);
        // Disabled kinds neither fire nor count against the rate limits.
        p.handle_turn_event(&interruption(Party::Agent, 20.0));
        p.handle_phrase_event(&phrase(PhraseKind::NotReadBack, Party::Customer, 20.0));
        assert!(p.poll_nudge().is_none());
        assert_eq!(p.suppressed(), 0);
        p.handle_turn_event(&TurnEvent::DeadAirStarted { at: 20.0 });
        assert_eq!(kinds(&ticks(&mut p, 20.0, 30.0, false, &talk)), vec![(NudgeKind::DeadAir, 25.0)]);
        // Nothing at all with an empty list.
        let cfg = CoachConfig { enabled: vec![], ..Default::default() };
        let mut p = policy(&cfg, true);
        p.handle_turn_event(&interruption(Party::Agent, 20.0));
        assert!(ticks(&mut p, 0.0, 300.0, false, |t| [0.0, t]).is_empty());
        assert!(p.finish(&call_summary(true), Some(&phrase_summary(false, false))).is_empty());
    }

    #[test]
    fn post_call_notes() {
        let cfg = CoachConfig::default();
        let mut p = policy(&cfg, true);
        let notes = p.finish(&call_summary(true), Some(&phrase_summary(false, true)));
        assert_eq!(notes.len(), 1);
        assert_eq!((notes[0].kind, notes[0].at, notes[0].post_call), (NudgeKind::NoThanks, 60.0, true));
        assert_eq!(notes[0].text, "You didn't thank the customer at the end of the call.");
        let mut p = policy(&cfg, true);
        let notes = p.finish(&call_summary(true), Some(&phrase_summary(false, false)));
        assert_eq!(notes.iter().map(|n| n.kind).collect::<Vec<_>>(), vec![NudgeKind::NoThanks, NudgeKind::NoNextSteps]);
        let mut p = policy(&cfg, true);
        assert!(p.finish(&call_summary(true), Some(&phrase_summary(true, true))).is_empty());
        // No phrases (ASR off), or no agent speech: no closing notes.
        let mut p = policy(&cfg, false);
        assert!(p.finish(&call_summary(true), None).is_empty());
        let mut p = policy(&cfg, true);
        assert!(p.finish(&call_summary(false), Some(&phrase_summary(false, false))).is_empty());
        // Input after the end is ignored.
        p.handle_turn_event(&interruption(Party::Agent, 70.0));
        assert!(p.poll_nudge().is_none());
    }

    #[test]
    fn post_call_missed_read_back_only_when_not_seen_live() {
        let cfg = CoachConfig::default();
        let mut s = phrase_summary(true, true);
        s.not_read_back = 1;
        let mut p = policy(&cfg, true);
        p.handle_phrase_event(&phrase(PhraseKind::NotReadBack, Party::Customer, 40.0));
        assert_eq!(kinds(&drain(&mut p)), vec![(NudgeKind::NotReadBack, 40.0)]);
        assert!(p.finish(&call_summary(true), Some(&s)).is_empty());
        let mut p = policy(&cfg, true);
        let notes = p.finish(&call_summary(true), Some(&s));
        assert_eq!(notes.iter().map(|n| n.kind).collect::<Vec<_>>(), vec![NudgeKind::NotReadBack]);
    }

    #[test]
    fn nudge_serialises_for_the_whisper_channel() {
        let n = Nudge { kind: NudgeKind::DeadAir, text: "t".into(), at: 12.5, post_call: false };
        assert_eq!(serde_json::to_string(&n).unwrap(), r#"{"kind":"dead_air","text":"t","at":12.5,"post_call":false}"#);
    }
}
