//! The analysis pipeline shared by live calls and `hearken analyze`: per leg 8 kHz PCM →
//! 10 ms frames → VAD → [`TurnTaking`]. [`CallAnalysis`] accepts each leg's PCM at its audio
//! position (samples since call start), in any interleaving, and advances both legs in
//! lockstep up to the position both have reached (or that the caller declares complete, for a
//! leg that sends nothing: hold, silence suppression, a dead leg).
//!
//! Not here: RTP, jitter, decoding (the live driver does that and calls [`CallAnalysis::push`]).

use super::asr::{AsrGate, GateCmd};
use super::turns::{CallSummary, Party, TurnEvent, TurnParams, TurnTaking};
use super::vad::{self, Vad, VadKind, FRAME};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Voice-activity detector: `energy` (default) or `webrtc`.
    pub vad: VadKind,
    pub energy: vad::EnergyParams,
    pub turns: TurnParams,
}

struct Leg {
    vad: Box<dyn Vad>,
    /// Position of the first audio received: before it there is no media at all, and the VAD
    /// is not fed (zeros there would pull its noise floor to digital silence).
    first: Option<u64>,
    /// PCM not yet consumed; `buf[0]` is at sample position `base`.
    buf: Vec<i16>,
    base: u64,
}

impl Leg {
    fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }
}

pub struct CallAnalysis {
    legs: [Leg; 2],
    /// VAD-gated ASR streams per leg, when speech recognition is on.
    gates: Option<[AsrGate; 2]>,
    asr_cmds: std::collections::VecDeque<(Party, GateCmd)>,
    turns: TurnTaking,
    frame: usize,
    /// Frames consumed so far.
    pos: u64,
}

impl CallAnalysis {
    /// `frame_samples`: 80 (10 ms) normally; 160 (20 ms) also works.
    pub fn new(cfg: &AnalysisConfig, frame_samples: usize) -> Self {
        let leg = || Leg { vad: vad::make(cfg.vad, &cfg.energy), first: None, buf: Vec::new(), base: 0 };
        CallAnalysis {
            legs: [leg(), leg()],
            gates: None,
            asr_cmds: Default::default(),
            turns: TurnTaking::new(cfg.turns.clone(), (frame_samples as u32 * 1000) / vad::RATE),
            frame: frame_samples,
            pos: 0,
        }
    }

    /// Turn on ASR gating: speech (VAD onset with `preroll_ms` before it, until `tail_ms` of
    /// silence) is handed out as [`GateCmd`]s through [`Self::poll_asr`].
    pub fn enable_asr(&mut self, preroll_ms: u32, tail_ms: u32, max_utterance_s: u32) {
        let frame_ms = (self.frame as u32 * 1000) / vad::RATE;
        let g = || AsrGate::new(vad::RATE, preroll_ms, tail_ms, max_utterance_s, frame_ms);
        self.gates = Some([g(), g()]);
    }

    /// Next ASR stream command (party, command), in audio order per party.
    pub fn poll_asr(&mut self) -> Option<(Party, GateCmd)> {
        self.asr_cmds.pop_front()
    }

    /// PCM of `party` starting at sample position `at`. Gaps before it are silence; samples
    /// before what was already consumed are ignored (late).
    pub fn push(&mut self, party: Party, at: u64, pcm: &[i16]) {
        let leg = &mut self.legs[party.idx()];
        if leg.first.is_none() && !pcm.is_empty() {
            leg.first = Some(at);
        }
        let end = leg.end();
        let (at, pcm) = if at < end {
            let skip = (end - at) as usize;
            if skip >= pcm.len() {
                return;
            }
            (end, &pcm[skip..])
        } else {
            (at, pcm)
        };
        leg.buf.resize(leg.buf.len() + (at - end) as usize, 0);
        leg.buf.extend_from_slice(pcm);
        self.advance(None);
    }

    /// Treat both legs as complete up to `upto` samples (missing audio is silence), e.g. a leg
    /// that stopped sending.
    pub fn advance_to(&mut self, upto: u64) {
        self.advance(Some(upto));
    }

    fn advance(&mut self, upto: Option<u64>) {
        let frame = self.frame as u64;
        loop {
            let next_end = (self.pos + 1) * frame;
            let ready = self.legs.iter().all(|l| l.end() >= next_end) || upto.is_some_and(|u| u >= next_end);
            if !ready {
                break;
            }
            let mut decisions = [(false, false); 2];
            for (i, leg) in self.legs.iter_mut().enumerate() {
                let start = (self.pos * frame) as usize - leg.base as usize;
                let mut f = [0i16; 320];
                let f = &mut f[..self.frame];
                for (k, s) in f.iter_mut().enumerate() {
                    *s = leg.buf.get(start + k).copied().unwrap_or(0);
                }
                if leg.first.is_some_and(|first| first <= self.pos * frame) {
                    let d = leg.vad.decide(f);
                    decisions[i] = (d.speech, d.strong);
                }
                if let Some(gates) = self.gates.as_mut() {
                    let mut out = Vec::new();
                    let pos_s = (self.pos * frame) as f64 / vad::RATE as f64;
                    gates[i].handle_frame(pos_s, f, decisions[i].0, vad::RATE, &mut out);
                    let party = if i == 0 { Party::Customer } else { Party::Agent };
                    self.asr_cmds.extend(out.into_iter().map(|c| (party, c)));
                }
            }
            self.turns.handle_decisions(decisions);
            self.pos += 1;
            // Drop consumed audio now and then.
            for leg in self.legs.iter_mut() {
                let consumed = (self.pos * frame).saturating_sub(leg.base) as usize;
                if consumed >= 8000 {
                    let n = consumed.min(leg.buf.len());
                    leg.buf.drain(..n);
                    leg.base += n as u64;
                }
            }
        }
    }

    pub fn handle_hold(&mut self, on: bool) {
        self.turns.handle_hold(on);
    }
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.turns.poll_event()
    }
    /// Audio position analysed so far, seconds.
    pub fn position_s(&self) -> f64 {
        self.turns.position()
    }
    pub fn turns(&self) -> &TurnTaking {
        &self.turns
    }

    /// Consume what is buffered (both legs padded with silence to the longer one) and summarise.
    pub fn finish(&mut self) -> CallSummary {
        let end = self.legs.iter().map(|l| l.end()).max().unwrap_or(0);
        let whole = end / self.frame as u64 * self.frame as u64;
        self.advance(Some(whole));
        if let Some(gates) = self.gates.as_mut() {
            for (i, g) in gates.iter_mut().enumerate() {
                let mut out = Vec::new();
                g.finish(&mut out);
                let party = if i == 0 { Party::Customer } else { Party::Agent };
                self.asr_cmds.extend(out.into_iter().map(|c| (party, c)));
            }
        }
        self.turns.finish()
    }
}

/// Where gated speech goes during offline analysis: the ASR settings and a sink for commands.
pub type AsrSink<'a> = (&'a super::asr::AsrConfig, &'a mut dyn FnMut(Party, GateCmd));

/// Analyse two whole legs (offline). With `asr`, gated speech goes to the sink as it is found.
pub fn analyze_pcm(
    customer: &[i16],
    agent: &[i16],
    cfg: &AnalysisConfig,
    frame_samples: usize,
    mut asr: Option<AsrSink<'_>>,
) -> (CallSummary, Vec<TurnEvent>) {
    let mut a = CallAnalysis::new(cfg, frame_samples);
    if let Some((c, _)) = asr.as_ref() {
        a.enable_asr(c.preroll_ms, c.tail_ms, c.max_utterance_s);
    }
    let mut events = Vec::new();
    let mut pump = |a: &mut CallAnalysis, events: &mut Vec<TurnEvent>| {
        while let Some(e) = a.poll_event() {
            events.push(e);
        }
        while let Some((p, c)) = a.poll_asr() {
            if let Some((_, sink)) = asr.as_mut() {
                sink(p, c);
            }
        }
    };
    // Feed in 20 ms chunks, as RTP would.
    let n = customer.len().max(agent.len());
    let mut i = 0;
    while i < n {
        let j = (i + 160).min(n);
        for (party, pcm) in [(Party::Customer, customer), (Party::Agent, agent)] {
            if i < pcm.len() {
                a.push(party, i as u64, &pcm[i..j.min(pcm.len())]);
            }
        }
        a.advance_to(j as u64 / FRAME as u64 * FRAME as u64);
        pump(&mut a, &mut events);
        i = j;
    }
    let s = a.finish();
    pump(&mut a, &mut events);
    (s, events)
}
