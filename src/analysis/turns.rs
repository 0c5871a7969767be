//! Turn-taking analyzer (sans-IO, driven by audio position): turns per-frame VAD decisions of both
//! parties into speech segments, utterances, live events and a call summary, with the metric
//! definitions of DESIGN §2 (the same ones the corpus truth uses).
//!
//! - **Segments**: speech frames with pauses shorter than `bridge_s` (0.3 s) bridged.
//! - **Utterances**: a party's segments with gaps shorter than `utterance_gap_s` joined.
//! - **Back-channel**: an utterance of at most `backchannel_max_s` (1.0 s) that overlaps the other
//!   party's speech, or an isolated one of at most `isolated_backchannel_max_s` (0.5 s). Without
//!   ASR this is how "mm-hm" during the other's talk is told from a short answer ("yes, that's
//!   right") given in the clear; with ASR, back-channel words confirm it.
//! - Interruptions, responses, dead air, monologues as defined in DESIGN §2.
//!
//! Live events are emitted as soon as they are certain (an interruption once the interrupter has
//! talked past the back-channel length, dead air once the silence passes its threshold); the
//! summary is recomputed from all segments at the end, so live and offline analysis of the same
//! audio give the same summary.
//!
//! Not here: audio, VAD, codecs (the pipeline feeds decisions), wall-clock time.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

pub use crate::call::Party;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TurnParams {
    pub bridge_s: f64,
    pub utterance_gap_s: f64,
    /// Speech shorter than this (after bridging) is ignored as a click or noise burst.
    pub min_segment_s: f64,
    /// A segment needs at least this share of strong frames (frames that pass the VAD's strict
    /// onset threshold); quieter ones are background: other people in the room, line noise.
    pub min_strong_fraction: f64,
    pub backchannel_max_s: f64,
    pub isolated_backchannel_max_s: f64,
    pub interruption_min_overlap_s: f64,
    pub monologue_max_gap_s: f64,
    pub dead_air_thresholds_s: Vec<f64>,
    /// Live dead-air event after this much silence.
    pub dead_air_event_s: f64,
    /// Live monologue event once a run is this long.
    pub monologue_event_s: f64,
    /// Silent gaps at least this long are listed in the summary.
    pub silent_gap_min_s: f64,
    /// A response faster than this "jumped in".
    pub fast_response_s: f64,
}

impl Default for TurnParams {
    fn default() -> Self {
        TurnParams {
            bridge_s: 0.3,
            utterance_gap_s: 0.3,
            min_segment_s: 0.05,
            min_strong_fraction: 0.1,
            backchannel_max_s: 1.0,
            isolated_backchannel_max_s: 0.5,
            interruption_min_overlap_s: 0.2,
            monologue_max_gap_s: 2.0,
            dead_air_thresholds_s: vec![3.0, 5.0, 6.0, 10.0],
            dead_air_event_s: 5.0,
            monologue_event_s: 45.0,
            silent_gap_min_s: 1.0,
            fast_response_s: 0.2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Utterance {
    pub party: Party,
    pub start: f64,
    pub end: f64,
    pub backchannel: bool,
}

impl Utterance {
    pub fn len(&self) -> f64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TurnEvent {
    Interruption {
        by: Party,
        at: f64,
        overlap_s: f64,
    },
    Backchannel {
        by: Party,
        at: f64,
        duration_s: f64,
    },
    /// `to` answered `from`; `prev_run_s` is how long `from` had been talking (its run of
    /// utterances with gaps up to the monologue gap) before the reply.
    Response {
        from: Party,
        to: Party,
        at: f64,
        latency_s: f64,
        prev_run_s: f64,
    },
    DeadAirStarted {
        at: f64,
    },
    DeadAirEnded {
        at: f64,
        duration_s: f64,
    },
    MonologueOverThreshold {
        party: Party,
        at: f64,
        length_s: f64,
    },
}

impl TurnEvent {
    pub fn at(&self) -> f64 {
        match self {
            TurnEvent::Interruption { at, .. }
            | TurnEvent::Backchannel { at, .. }
            | TurnEvent::Response { at, .. }
            | TurnEvent::DeadAirStarted { at }
            | TurnEvent::DeadAirEnded { at, .. }
            | TurnEvent::MonologueOverThreshold { at, .. } => *at,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct PartyState {
    /// Open segment: (start, end of last speech frame).
    seg: Option<(f64, f64)>,
    /// Frames and strong frames in the open segment.
    seg_frames: (u32, u32),
    segments: Vec<(f64, f64)>,
    /// Open utterance built from accepted segments.
    utt: Option<(f64, f64)>,
    /// Start of the utterance already reported (live) as an interruption.
    reported_start: Option<f64>,
    /// Current monologue run start and whether it was reported.
    run: Option<(f64, f64)>,
    run_reported: bool,
}

/// The analyzer. Feed one frame per party at a time with [`TurnTaking::handle_frame`].
#[derive(Debug, Clone)]
pub struct TurnTaking {
    p: TurnParams,
    frame_s: f64,
    frames: u64,
    parties: [PartyState; 2],
    utterances: Vec<Utterance>,
    holds: Vec<(f64, f64)>,
    hold_since: Option<f64>,
    last_speech_end: Option<f64>,
    dead_air_open: bool,
    events: VecDeque<TurnEvent>,
}

impl TurnTaking {
    /// `frame_ms`: the duration of one VAD decision (10 or 20 ms).
    pub fn new(p: TurnParams, frame_ms: u32) -> Self {
        TurnTaking {
            p,
            frame_s: frame_ms as f64 / 1000.0,
            frames: 0,
            parties: Default::default(),
            utterances: Vec::new(),
            holds: Vec::new(),
            hold_since: None,
            last_speech_end: None,
            dead_air_open: false,
            events: VecDeque::new(),
        }
    }

    pub fn params(&self) -> &TurnParams {
        &self.p
    }

    /// Audio position (seconds since call start) of the next frame.
    pub fn position(&self) -> f64 {
        self.frames as f64 * self.frame_s
    }

    /// The call went on or off hold at the current position (no dead air while held).
    pub fn handle_hold(&mut self, on: bool) {
        let now = self.position();
        match (on, self.hold_since) {
            (true, None) => self.hold_since = Some(now),
            (false, Some(s)) => {
                self.holds.push((s, now));
                self.hold_since = None;
            }
            _ => {}
        }
    }

    pub fn on_hold(&self) -> bool {
        self.hold_since.is_some()
    }

    /// One frame of VAD decisions for both parties (every speech frame counted as strong).
    pub fn handle_frame(&mut self, customer: bool, agent: bool) {
        self.handle_decisions([(customer, customer), (agent, agent)]);
    }

    /// One frame for both parties: (speech, strong) per party, customer first.
    pub fn handle_decisions(&mut self, d: [(bool, bool); 2]) {
        let (customer, agent) = (d[0].0, d[1].0);
        let start = self.position();
        self.frames += 1;
        let end = self.position();
        for (party, (speech, strong)) in [(Party::Customer, d[0]), (Party::Agent, d[1])] {
            self.frame_for(party, speech, strong, start, end);
        }
        if customer || agent {
            if self.dead_air_open {
                let since = self.last_speech_end.unwrap_or(start);
                self.events.push_back(TurnEvent::DeadAirEnded { at: start, duration_s: round(start - since) });
                self.dead_air_open = false;
            }
            self.last_speech_end = Some(end);
        } else if let Some(last) = self.last_speech_end {
            if !self.dead_air_open && !self.on_hold() && end - last > self.p.dead_air_event_s {
                self.dead_air_open = true;
                self.events.push_back(TurnEvent::DeadAirStarted { at: round(last + self.p.dead_air_event_s) });
            }
        }
        self.check_live_interruptions();
    }

    fn frame_for(&mut self, party: Party, speech: bool, strong: bool, start: f64, end: f64) {
        let bridge = self.p.bridge_s;
        let st = &mut self.parties[party.idx()];
        if speech {
            match st.seg {
                Some((s, last)) if start - last < bridge - 1e-9 => st.seg = Some((s, end)),
                Some(_) => {
                    self.close_segment(party);
                    self.parties[party.idx()].seg = Some((start, end));
                }
                None => st.seg = Some((start, end)),
            }
            let f = &mut self.parties[party.idx()].seg_frames;
            f.0 += 1;
            f.1 += strong as u32;
        } else if let Some((_, last)) = st.seg {
            if end - last >= bridge - 1e-9 {
                self.close_segment(party);
            }
        }
        let st = &self.parties[party.idx()];
        if st.seg.is_none() {
            if let Some((_, ue)) = st.utt {
                if end - ue >= self.p.utterance_gap_s - 1e-9 {
                    self.close_utterance(party);
                }
            }
        }
    }

    fn close_segment(&mut self, party: Party) {
        let st = &mut self.parties[party.idx()];
        let Some((s, e)) = st.seg.take() else { return };
        let (frames, strong) = std::mem::take(&mut st.seg_frames);
        if e - s < self.p.min_segment_s - 1e-9 || (strong as f64) < self.p.min_strong_fraction * frames as f64 {
            return;
        }
        st.segments.push((s, e));
        match st.utt {
            Some((us, ue)) if s - ue < self.p.utterance_gap_s - 1e-9 => st.utt = Some((us, e)),
            Some(_) => {
                self.close_utterance(party);
                self.parties[party.idx()].utt = Some((s, e));
            }
            None => st.utt = Some((s, e)),
        }
    }

    /// Speech of `party` (closed and open segments) intersecting `[a, b)`.
    fn speech_overlap(&self, party: Party, a: f64, b: f64) -> f64 {
        let st = &self.parties[party.idx()];
        st.segments.iter().chain(st.seg.iter()).map(|&(s, e)| (e.min(b) - s.max(a)).max(0.0)).sum()
    }

    /// Some of `[a, b]` was on hold (a finished hold or the one going on).
    fn held_between(&self, a: f64, b: f64) -> bool {
        self.holds.iter().any(|&(s, e)| s < b && e > a) || self.hold_since.is_some_and(|s| s < b)
    }

    fn is_backchannel(&self, party: Party, start: f64, end: f64) -> bool {
        let len = end - start;
        len <= self.p.backchannel_max_s + 1e-9
            && (len <= self.p.isolated_backchannel_max_s + 1e-9 || self.speech_overlap(party.other(), start, end) > 0.0)
    }

    fn close_utterance(&mut self, party: Party) {
        let Some((start, end)) = self.parties[party.idx()].utt.take() else {
            return;
        };
        let reported = self.parties[party.idx()].reported_start.is_some_and(|r| (r - start).abs() < 1e-9);
        let u = Utterance { party, start, end, backchannel: self.is_backchannel(party, start, end) };
        self.utterances.push(u);
        if u.backchannel {
            self.events.push_back(TurnEvent::Backchannel { by: party, at: round(start), duration_s: round(u.len()) });
            return;
        }
        let interrupting = interrupted(&self.utterances, &u, self.p.interruption_min_overlap_s).is_some();
        if interrupting && !reported {
            if let Some((_, ov)) = interrupted(&self.utterances, &u, self.p.interruption_min_overlap_s) {
                self.events.push_back(TurnEvent::Interruption { by: party, at: round(start), overlap_s: round(ov) });
            }
        }
        if !interrupting {
            // A pause that spans a hold is not a response latency: the floor was suspended.
            let resp = response_to(&self.utterances, &u).filter(|&(_, lat)| !self.held_between(start - lat, start));
            if let Some((from, latency)) = resp {
                let prev_run_s = self.parties[from.idx()].run.map_or(0.0, |(rs, re)| re - rs);
                self.events.push_back(TurnEvent::Response {
                    from,
                    to: party,
                    at: round(start),
                    latency_s: round(latency),
                    prev_run_s: round(prev_run_s),
                });
            }
        }
        // Monologue runs: broken by the other party's non-back-channel utterance or a long gap.
        let other = party.other();
        let broken_by_other = self.utterances.iter().any(|o| {
            o.party == other && !o.backchannel && o.start > self.parties[party.idx()].run.map_or(f64::INFINITY, |r| r.1) && o.start < start
        });
        let st = &mut self.parties[party.idx()];
        st.run = match st.run {
            Some((rs, re)) if !broken_by_other && start - re <= self.p.monologue_max_gap_s + 1e-9 => Some((rs, end)),
            _ => {
                st.run_reported = false;
                Some((start, end))
            }
        };
        if let Some((rs, re)) = st.run {
            if !st.run_reported && re - rs >= self.p.monologue_event_s {
                st.run_reported = true;
                self.events.push_back(TurnEvent::MonologueOverThreshold { party, at: round(re), length_s: round(re - rs) });
            }
        }
    }

    /// Report an interruption as soon as the interrupter has talked past the back-channel length
    /// over the other party, instead of waiting for the utterance to end.
    fn check_live_interruptions(&mut self) {
        for party in Party::ALL {
            let st = &self.parties[party.idx()];
            // The utterance in progress: the open one, or the open segment that will start one.
            let (us, se) = match (st.utt, st.seg) {
                (Some((us, _)), Some((_, se))) => (us, se),
                (None, Some((ss, se))) => (ss, se),
                _ => continue,
            };
            if st.reported_start.is_some_and(|r| (r - us).abs() < 1e-9) {
                continue;
            }
            if se - us <= self.p.backchannel_max_s {
                continue;
            }
            let cur = Utterance { party, start: us, end: se, backchannel: false };
            // The other party's utterances so far, the open one included.
            let o = &self.parties[party.other().idx()];
            let mut others: Vec<Utterance> = self.utterances.iter().filter(|u| u.party != party).copied().collect();
            if let Some((os, oe)) = o.utt {
                let oe = o.seg.map_or(oe, |s| s.1);
                others.push(Utterance { party: party.other(), start: os, end: oe, backchannel: oe - os <= self.p.backchannel_max_s });
            } else if let Some((os, oe)) = o.seg {
                others.push(Utterance { party: party.other(), start: os, end: oe, backchannel: oe - os <= self.p.backchannel_max_s });
            }
            if let Some((_, ov)) = interrupted(&others, &cur, self.p.interruption_min_overlap_s) {
                self.parties[party.idx()].reported_start = Some(us);
                self.events.push_back(TurnEvent::Interruption { by: party, at: round(us), overlap_s: round(ov) });
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// Current talk time per party (closed segments plus the open one), for live snapshots.
    pub fn talk_time(&self, party: Party) -> f64 {
        let st = &self.parties[party.idx()];
        st.segments.iter().chain(st.seg.iter()).map(|(s, e)| e - s).sum()
    }

    /// Close everything at the current position and compute the summary.
    pub fn finish(&mut self) -> CallSummary {
        for party in Party::ALL {
            self.close_segment(party);
            self.close_utterance(party);
        }
        self.handle_hold(false);
        let duration = self.position();
        let segs = [self.parties[0].segments.clone(), self.parties[1].segments.clone()];
        let mut utts = self.utterances.clone();
        utts.sort_by(|a, b| a.start.total_cmp(&b.start));
        summarize(&self.p, duration, &segs, &utts, &self.holds)
    }
}

fn round(x: f64) -> f64 {
    round_to(x, 1000.0)
}

/// `x` rounded to `1 / scale`. `+ 0.0` turns -0.0 (e.g. an empty f64 sum) into 0.0, so reports
/// and live messages never show "-0.0".
pub(crate) fn round_to(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale + 0.0
}

/// If `x` interrupts a non-back-channel utterance of the other party: (that utterance's start,
/// overlap length). Y started first and kept talking at least `min` after X started.
fn interrupted(all: &[Utterance], x: &Utterance, min: f64) -> Option<(f64, f64)> {
    all.iter()
        .filter(|y| y.party != x.party && !y.backchannel && y.start < x.start && y.end - x.start >= min - 1e-9)
        .map(|y| (y.start, y.end.min(x.end) - x.start))
        .next()
}

/// If `q` is a response: (previous speaker, latency). The most recently ended earlier
/// non-back-channel utterance must be the other party's.
fn response_to(all: &[Utterance], q: &Utterance) -> Option<(Party, f64)> {
    let p = all
        .iter()
        .filter(|p| !p.backchannel && p.start < q.start && !(p.party == q.party && p.start == q.start))
        .max_by(|a, b| a.end.total_cmp(&b.end))?;
    (p.party != q.party).then_some((p.party, q.start - p.end))
}

// ---------------------------------------------------------------------------------------------
// Summary

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct PerParty<T> {
    pub customer: T,
    pub agent: T,
}

impl<T> PerParty<T> {
    pub fn get(&self, p: Party) -> &T {
        match p {
            Party::Customer => &self.customer,
            Party::Agent => &self.agent,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InterruptionEvent {
    pub by: Party,
    pub of: Party,
    pub at: f64,
    pub overlap_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Interruptions {
    pub count: usize,
    pub by_agent: usize,
    pub by_customer: usize,
    pub events: Vec<InterruptionEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackchannelEvent {
    pub by: Party,
    pub at: f64,
    pub duration_s: f64,
    /// Started while the other party was talking.
    pub in_overlap: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Backchannels {
    pub count: usize,
    pub by_agent: usize,
    pub by_customer: usize,
    pub events: Vec<BackchannelEvent>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct CountTotal {
    pub count: usize,
    pub total_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gap {
    pub start: f64,
    pub end: f64,
    pub duration_s: f64,
    /// Part of the gap spent on hold (not dead air).
    pub on_hold_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub from: Party,
    pub to: Party,
    pub at: f64,
    pub latency_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Latency {
    pub count: usize,
    pub mean_s: Option<f64>,
    pub min_s: Option<f64>,
    pub max_s: Option<f64>,
    /// Responses faster than `fast_response_s` ("jumped in").
    pub too_fast: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Monologue {
    pub longest_s: f64,
    pub start: Option<f64>,
    pub end: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallSummary {
    pub call_duration_s: f64,
    pub talk_time_s: PerParty<f64>,
    pub talk_ratio_agent: Option<f64>,
    pub talk_share_of_call: PerParty<f64>,
    pub overlap_s: f64,
    pub interruptions: Interruptions,
    pub backchannels: Backchannels,
    pub dead_air: BTreeMap<String, CountTotal>,
    pub silent_gaps: Vec<Gap>,
    pub leading_silence_s: f64,
    pub trailing_silence_s: f64,
    pub hold_s: f64,
    pub responses: Vec<Response>,
    pub agent_response_latency: Latency,
    pub customer_response_latency: Latency,
    pub longest_monologue: PerParty<Monologue>,
    /// Floor changes (responses and interruptions) per minute.
    pub interactivity_per_min: f64,
    pub segments: PerParty<Vec<[f64; 2]>>,
    pub utterances: Vec<Utterance>,
}

fn intersect_len(a: &[(f64, f64)], b: &[(f64, f64)]) -> f64 {
    let (mut i, mut j, mut total) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        let s = a[i].0.max(b[j].0);
        let e = a[i].1.min(b[j].1);
        if e > s {
            total += e - s;
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
}

fn union(a: &[(f64, f64)], b: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, f64)> = a.iter().chain(b).copied().collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (s, e) in all {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn latency(rs: &[Response], to: Party, fast: f64) -> Latency {
    let l: Vec<f64> = rs.iter().filter(|r| r.to == to).map(|r| r.latency_s).collect();
    if l.is_empty() {
        return Latency::default();
    }
    Latency {
        count: l.len(),
        mean_s: Some(round(l.iter().sum::<f64>() / l.len() as f64)),
        min_s: l.iter().copied().reduce(f64::min),
        max_s: l.iter().copied().reduce(f64::max),
        too_fast: l.iter().filter(|x| **x < fast).count(),
    }
}

/// The call summary from final segments and utterances (sorted by start).
pub fn summarize(p: &TurnParams, duration: f64, segs: &[Vec<(f64, f64)>; 2], utts: &[Utterance], holds: &[(f64, f64)]) -> CallSummary {
    let talk = |i: usize| segs[i].iter().map(|(s, e)| e - s).sum::<f64>();
    let (tc, ta) = (talk(0), talk(1));
    let overlap = intersect_len(&segs[0], &segs[1]);

    let mut interruptions = Interruptions::default();
    let mut interrupting = vec![false; utts.len()];
    for (i, x) in utts.iter().enumerate().filter(|(_, u)| !u.backchannel) {
        for y in utts.iter().filter(|y| y.party != x.party && !y.backchannel) {
            if y.start < x.start && y.end - x.start >= p.interruption_min_overlap_s - 1e-9 {
                interrupting[i] = true;
                interruptions.events.push(InterruptionEvent {
                    by: x.party,
                    of: y.party,
                    at: round(x.start),
                    overlap_s: round(y.end.min(x.end) - x.start),
                });
            }
        }
    }
    interruptions.count = interruptions.events.len();
    interruptions.by_agent = interruptions.events.iter().filter(|e| e.by == Party::Agent).count();
    interruptions.by_customer = interruptions.count - interruptions.by_agent;

    let mut backchannels = Backchannels::default();
    for u in utts.iter().filter(|u| u.backchannel) {
        let other = &segs[u.party.other().idx()];
        let in_overlap = other.iter().any(|&(s, e)| s <= u.start && u.start < e);
        backchannels.events.push(BackchannelEvent { by: u.party, at: round(u.start), duration_s: round(u.len()), in_overlap });
    }
    backchannels.count = backchannels.events.len();
    backchannels.by_agent = backchannels.events.iter().filter(|e| e.by == Party::Agent).count();
    backchannels.by_customer = backchannels.count - backchannels.by_agent;

    let speech = union(&segs[0], &segs[1]);
    let hold_in = |a: f64, b: f64| holds.iter().map(|&(s, e)| (e.min(b) - s.max(a)).max(0.0)).sum::<f64>();
    let mut gaps = Vec::new();
    for w in speech.windows(2) {
        let (a, b) = (w[0].1, w[1].0);
        gaps.push(Gap { start: round(a), end: round(b), duration_s: round(b - a), on_hold_s: round(hold_in(a, b)) });
    }
    let mut dead_air = BTreeMap::new();
    for &t in &p.dead_air_thresholds_s {
        let mut ct = CountTotal::default();
        for g in &gaps {
            let d = g.duration_s - g.on_hold_s;
            if d > t + 1e-9 {
                ct.count += 1;
                ct.total_s = round(ct.total_s + d);
            }
        }
        dead_air.insert(format!("gt_{}s", fmt_num(t)), ct);
    }
    let silent_gaps = gaps.into_iter().filter(|g| g.duration_s >= p.silent_gap_min_s - 1e-9).collect();

    let mut responses = Vec::new();
    for (i, q) in utts.iter().enumerate() {
        if q.backchannel || interrupting[i] {
            continue;
        }
        if let Some((from, lat)) = response_to(&utts[..i], q).filter(|&(_, lat)| hold_in(q.start - lat, q.start) <= 0.0) {
            responses.push(Response { from, to: q.party, at: round(q.start), latency_s: round(lat) });
        }
    }

    let mut longest = PerParty::<Monologue>::default();
    for party in Party::ALL {
        let mut best = Monologue::default();
        let mut run: Option<(f64, f64)> = None;
        for u in utts.iter().filter(|u| !u.backchannel) {
            if u.party != party {
                run = None;
                continue;
            }
            run = match run {
                Some((s, e)) if u.start - e <= p.monologue_max_gap_s + 1e-9 => Some((s, e.max(u.end))),
                _ => Some((u.start, u.end)),
            };
            let (s, e) = run.unwrap_or((u.start, u.end));
            if e - s > best.longest_s {
                best = Monologue { longest_s: round(e - s), start: Some(round(s)), end: Some(round(e)) };
            }
        }
        match party {
            Party::Customer => longest.customer = best,
            Party::Agent => longest.agent = best,
        }
    }

    let first = speech.first().map(|s| s.0);
    let last = speech.last().map(|s| s.1);
    let switches = responses.len() + interruptions.count;
    let seg_out = |i: usize| segs[i].iter().map(|&(s, e)| [round(s), round(e)]).collect();
    CallSummary {
        call_duration_s: round(duration),
        talk_time_s: PerParty { customer: round(tc), agent: round(ta) },
        talk_ratio_agent: (tc + ta > 0.0).then(|| round(ta / (tc + ta))),
        talk_share_of_call: PerParty {
            customer: if duration > 0.0 { round(tc / duration) } else { 0.0 },
            agent: if duration > 0.0 { round(ta / duration) } else { 0.0 },
        },
        overlap_s: round(overlap),
        interruptions,
        backchannels,
        dead_air,
        silent_gaps,
        leading_silence_s: round(first.unwrap_or(duration)),
        trailing_silence_s: round(last.map_or(0.0, |l| duration - l)),
        hold_s: round(holds.iter().map(|(s, e)| e - s).sum()),
        agent_response_latency: latency(&responses, Party::Agent, p.fast_response_s),
        customer_response_latency: latency(&responses, Party::Customer, p.fast_response_s),
        responses,
        longest_monologue: longest,
        interactivity_per_min: if duration > 0.0 { round(switches as f64 * 60.0 / duration) } else { 0.0 },
        segments: PerParty { customer: seg_out(0), agent: seg_out(1) },
        utterances: utts.to_vec(),
    }
}

fn fmt_num(t: f64) -> String {
    if t.fract() == 0.0 {
        format!("{}", t as i64)
    } else {
        format!("{t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive the analyzer from speech intervals (seconds) for both parties.
    fn run(c: &[(f64, f64)], a: &[(f64, f64)], dur: f64, frame_ms: u32) -> (CallSummary, Vec<TurnEvent>) {
        let mut t = TurnTaking::new(TurnParams::default(), frame_ms);
        let f = frame_ms as f64 / 1000.0;
        let on = |iv: &[(f64, f64)], x: f64| iv.iter().any(|&(s, e)| x + f / 2.0 >= s && x + f / 2.0 < e);
        let n = (dur / f).round() as usize;
        let mut ev = Vec::new();
        for i in 0..n {
            let x = i as f64 * f;
            t.handle_frame(on(c, x), on(a, x));
            while let Some(e) = t.poll_event() {
                ev.push(e);
            }
        }
        let s = t.finish();
        while let Some(e) = t.poll_event() {
            ev.push(e);
        }
        (s, ev)
    }

    #[test]
    fn quick_turns_responses_and_ratio() {
        let c = [(3.0, 6.0), (9.0, 11.0)];
        let a = [(0.5, 2.5), (6.4, 8.5), (11.25, 14.0)];
        let (s, ev) = run(&c, &a, 16.0, 10);
        assert_eq!(s.talk_time_s.customer, 5.0);
        assert_eq!(s.talk_time_s.agent, 6.85);
        assert_eq!(s.interruptions.count, 0);
        assert_eq!(s.responses.len(), 4);
        assert_eq!(s.agent_response_latency.count, 2);
        assert!((s.agent_response_latency.mean_s.unwrap() - 0.325).abs() < 0.011);
        assert!(ev.iter().any(|e| matches!(e, TurnEvent::Response { to: Party::Agent, .. })));
        assert_eq!(s.leading_silence_s, 0.5);
    }

    #[test]
    fn interruption_and_backchannel() {
        // Customer talks 0.5–7; agent says "mm" at 2.0 (0.3 s) and interrupts at 4.0 for 2.5 s.
        let c = [(0.5, 7.0)];
        let a = [(2.0, 2.3), (4.0, 6.5)];
        let (s, ev) = run(&c, &a, 8.0, 10);
        assert_eq!(s.interruptions.by_agent, 1);
        assert_eq!(s.interruptions.by_customer, 0);
        assert_eq!(s.backchannels.count, 1);
        assert!(s.backchannels.events[0].in_overlap);
        // Reported live once the agent has talked past 1.0 s over the customer.
        assert!(ev.iter().any(|e| matches!(e, TurnEvent::Interruption { by: Party::Agent, at, .. } if *at == 4.0)), "{ev:?}");
        assert!((s.overlap_s - 2.8).abs() < 0.011);
    }

    #[test]
    fn dead_air_counts_hold_aware() {
        let c = [(0.5, 2.0), (9.0, 10.0), (25.0, 27.0)];
        let a = [(2.5, 3.0)];
        let mut t = TurnTaking::new(TurnParams::default(), 10);
        for i in 0..2800 {
            let x = i as f64 * 0.01 + 0.005;
            if i == 1200 {
                t.handle_hold(true);
            }
            if i == 2300 {
                t.handle_hold(false);
            }
            let on = |iv: &[(f64, f64)]| iv.iter().any(|&(s, e)| x >= s && x < e);
            t.handle_frame(on(&c), on(&a));
        }
        let s = t.finish();
        // Gaps: 3.0–9.0 (6 s) and 10–25 (15 s, of which 11 s on hold -> 4 s dead air).
        assert_eq!(s.dead_air["gt_5s"].count, 1);
        assert_eq!(s.dead_air["gt_3s"].count, 2);
        assert_eq!(s.dead_air["gt_10s"].count, 0);
        assert_eq!(s.hold_s, 11.0);
    }

    #[test]
    fn monologue_runs_join_short_gaps() {
        let a = [(1.0, 5.0), (6.0, 10.0), (11.5, 14.0), (17.0, 18.0)];
        let c = [(7.0, 7.3)]; // a back-channel does not break the run
        let (s, _) = run(&c, &a, 20.0, 10);
        assert_eq!(s.longest_monologue.agent.longest_s, 13.0);
    }
}
