//! Live analysis of one call (sans-IO): RTP packets of both legs → jitter/reorder stage →
//! decoder chosen from the SDP payload map → PCM placed at its audio position → the shared
//! [`CallAnalysis`] pipeline. Also keeps RFC 3550 receive statistics and a MOS estimate per leg.
//!
//! Audio position: a leg's first packet is placed at its arrival time relative to the call's
//! analysis start; later packets follow their RTP timestamps, so network jitter does not move
//! speech. A new SSRC or a timestamp jump re-anchors on arrival time. Legs that send nothing
//! (hold, silence suppression) are filled with silence once wall-clock time passes the
//! configured lag, so the other leg's analysis never stalls.
//!
//! Not here: threads, channels, clocks (the driver passes `now_ms`), metrics publishing.

use super::jitter::{Frame, JitterStage};
use super::pipeline::{AnalysisConfig, CallAnalysis};
use super::quality::{QualityStats, QualitySummary};
use super::turns::{CallSummary, Party, TurnEvent};
use super::vad::{FRAME, RATE};
use crate::call::MediaPlan;
use crate::codec::{Codec, Decoder, PayloadMap};
use crate::rtp::RtpHeader;
use serde::{Deserialize, Serialize};

/// Jitter stage depth.
const DEPTH_MS: u32 = 60;
/// How far behind wall-clock time a silent leg is declared silent.
const LAG_MS: u64 = 400;
/// Two consecutive frames whose timestamps are further apart than their arrival times by more
/// than this re-anchor the leg on arrival time: a sender that restarted or jumped its
/// timestamps (forwards or backwards) is followed, instead of its audio being placed in the past
/// (and dropped as late) or far in the future. Network jitter is far smaller; a slow clock
/// drift never adds up to it between two frames, and silence suppression moves both alike.
const MAX_TS_JUMP_MS: i64 = 1000;

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct LegStats {
    pub packets: u64,
    pub decode_errors: u64,
    pub non_speech_packets: u64,
    pub unknown_payload: u64,
    pub late_audio_dropped: u64,
    /// Packets of an m-line other than the analysed one (a second audio stream, video).
    #[serde(default)]
    pub other_stream_packets: u64,
    /// Times the leg's audio position was re-anchored on arrival time (timestamp jumps, new
    /// SSRC mid-stream, sequence restarts).
    #[serde(default)]
    pub resyncs: u64,
    /// SRTP packets decrypted for analysis (SDES keys).
    #[serde(default)]
    pub srtp_decrypted: u64,
    /// SRTP packets not analysed: no key (DTLS-SRTP, or no usable `a=crypto`).
    #[serde(default)]
    pub srtp_no_key: u64,
    /// SRTP packets that did not authenticate or decrypt.
    #[serde(default)]
    pub srtp_failed: u64,
}

struct Leg {
    jitter: Option<JitterStage>,
    clock: u32,
    decoder: Option<Decoder>,
    /// (RTP timestamp, audio position in samples, release time in ms) of the last frame placed.
    anchor: Option<(u32, u64, u64)>,
    ssrc: Option<u32>,
    quality: Option<QualityStats>,
    last_codec: Codec,
    stats: LegStats,
    pcm: Vec<i16>,
}

impl Leg {
    fn new() -> Self {
        Leg {
            jitter: None,
            clock: 8000,
            decoder: None,
            anchor: None,
            ssrc: None,
            quality: None,
            last_codec: Codec::Unknown,
            stats: LegStats::default(),
            pcm: Vec::new(),
        }
    }
}

/// Every figure of a call: the turn-taking summary and, for RTP input, receive quality per leg.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveSummary {
    #[serde(flatten)]
    pub turns: CallSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<LegQuality>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LegQuality {
    pub customer: Option<QualitySummary>,
    pub agent: Option<QualitySummary>,
    pub customer_stats: LegStats,
    pub agent_stats: LegStats,
}

pub struct LiveCall {
    analysis: CallAnalysis,
    legs: [Leg; 2],
    payloads: PayloadMap,
    /// The m-line analysed (the first audio one of the negotiated plan); None without a plan
    /// (a capture): every stream is taken.
    stream: Option<usize>,
    start_ms: u64,
}

impl LiveCall {
    /// `now_ms`: the call's analysis start (audio position 0).
    pub fn new(cfg: &AnalysisConfig, now_ms: u64) -> Self {
        LiveCall {
            analysis: CallAnalysis::new(cfg, FRAME),
            legs: [Leg::new(), Leg::new()],
            payloads: PayloadMap::default(),
            stream: None,
            start_ms: now_ms,
        }
    }

    /// Payload types known without SDP (e.g. a capture): `(pt, "opus/48000/2")`.
    pub fn add_rtpmap(&mut self, entries: &[(u8, String)]) {
        for (pt, enc) in entries {
            if let Some(f) = PayloadMap::from_rtpmap(&[(*pt, enc.clone())]).format(*pt) {
                self.payloads.insert(*pt, f);
            }
        }
    }

    /// The media plan after an offer or answer: the analysed stream and its payload map
    /// (decided here, once per negotiation), and the hold state.
    pub fn handle_plan(&mut self, plan: &MediaPlan) {
        if let Some(p) = plan.primary_audio() {
            self.stream = Some(p.index);
            self.payloads = p.payloads.clone();
        }
        if plan.on_hold != self.analysis.turns().on_hold() {
            self.analysis.handle_hold(plan.on_hold);
        }
    }

    /// One tapped SRTP packet of `party`: decrypted (None) or why not.
    pub fn count_srtp(&mut self, party: Party, drop: Option<crate::media::srtp::SrtpDrop>) {
        let s = &mut self.legs[party.idx()].stats;
        match drop {
            None => s.srtp_decrypted += 1,
            Some(crate::media::srtp::SrtpDrop::NoKey) => s.srtp_no_key += 1,
            Some(crate::media::srtp::SrtpDrop::Failed) => s.srtp_failed += 1,
        }
    }

    /// Decoded 8 kHz PCM of `party`, its first sample at `at_ms` on the driver's clock.
    pub fn handle_pcm(&mut self, party: Party, at_ms: u64, pcm: &[i16]) {
        let pos = at_ms.saturating_sub(self.start_ms) * (RATE as u64 / 1000);
        let leg = &mut self.legs[party.idx()];
        leg.stats.packets += 1;
        self.analysis.push(party, pos, pcm);
    }

    fn handle_rtp(&mut self, party: Party, header: &RtpHeader, payload: &[u8], arrival_ms: u64) {
        let fmt = self.payloads.format(header.payload_type);
        let leg = &mut self.legs[party.idx()];
        leg.stats.packets += 1;
        let Some(fmt) = fmt else {
            leg.stats.unknown_payload += 1;
            return;
        };
        if leg.jitter.is_none() || leg.clock != fmt.clock_rate {
            leg.clock = fmt.clock_rate;
            leg.jitter = Some(JitterStage::new(fmt.clock_rate, DEPTH_MS));
            leg.quality = Some(QualityStats::new(fmt.clock_rate));
            leg.anchor = None;
        }
        if leg.ssrc != Some(header.ssrc) {
            if leg.ssrc.is_some() {
                leg.stats.resyncs += 1;
                if let Some(q) = leg.quality.as_mut() {
                    q.new_source();
                }
            }
            leg.ssrc = Some(header.ssrc);
            leg.anchor = None;
        }
        if let Some(q) = leg.quality.as_mut() {
            q.on_packet(header.sequence, header.timestamp, arrival_ms);
        }
        if let Some(j) = leg.jitter.as_mut() {
            j.push(header, payload, arrival_ms);
        }
        self.drain(party, arrival_ms);
    }

    fn drain(&mut self, party: Party, now_ms: u64) {
        loop {
            let leg = &mut self.legs[party.idx()];
            let Some(frame) = leg.jitter.as_mut().and_then(|j| j.pop(now_ms)) else {
                break;
            };
            self.handle_jitter_frame(party, frame, now_ms);
        }
    }

    fn handle_jitter_frame(&mut self, party: Party, frame: Frame, now_ms: u64) {
        let start_ms = self.start_ms;
        let (ts, payload) = match &frame {
            Frame::Packet { timestamp, payload, .. } => (*timestamp, Some(payload.as_slice())),
            Frame::Lost { timestamp, .. } => (*timestamp, None),
        };
        let leg = &mut self.legs[party.idx()];
        // Audio position of this frame.
        let arrival_pos = now_ms.saturating_sub(start_ms) * (RATE as u64 / 1000);
        let pos = match leg.anchor {
            Some((ts0, pos0, at0)) => {
                let d = ts.wrapping_sub(ts0) as i32 as i64;
                let d_ms = d * 1000 / leg.clock as i64;
                let p = pos0 as i64 + d * RATE as i64 / leg.clock as i64;
                // Lost frames carry interpolated timestamps and come out when the gap is found,
                // long after their time: only real packets can show a jump.
                let jumped = payload.is_some() && (d_ms - (now_ms as i64 - at0 as i64)).abs() > MAX_TS_JUMP_MS;
                if jumped || p < 0 {
                    leg.stats.resyncs += 1;
                    arrival_pos
                } else {
                    p as u64
                }
            }
            None => arrival_pos,
        };
        // Follow the stream: the next frame is placed relative to this one, so only a jump
        // between consecutive frames (not the call's length) re-anchors on arrival time.
        leg.anchor = Some((ts, pos, now_ms));
        leg.pcm.clear();
        match payload {
            Some(payload) => {
                // Which payload type: the jitter stage keeps payloads only, so decode with the
                // codec the leg last saw for this clock; G.711/Opus switch rarely mid-call.
                let codec = leg.last_codec;
                if let Some(d) = leg.decoder.as_mut() {
                    if d.decode_into(payload, &mut leg.pcm).is_err() {
                        leg.stats.decode_errors += 1;
                    }
                } else if codec != Codec::Unknown {
                    leg.stats.decode_errors += 1;
                }
            }
            None => {
                if let Some(d) = leg.decoder.as_mut() {
                    let n = d.last_frame_samples();
                    d.conceal_into(n, &mut leg.pcm);
                }
            }
        }
        if !leg.pcm.is_empty() {
            let pcm = std::mem::take(&mut leg.pcm);
            self.analysis.push(party, pos, &pcm);
            self.legs[party.idx()].pcm = pcm;
        }
    }

    /// Choose the decoder for a payload type before its packets come out of the jitter stage.
    fn ensure_decoder(&mut self, party: Party, pt: u8) {
        let codec = self.payloads.codec(pt);
        let leg = &mut self.legs[party.idx()];
        if !codec.is_speech() {
            leg.stats.non_speech_packets += 1;
            return;
        }
        if leg.last_codec != codec {
            leg.last_codec = codec;
            leg.decoder = Decoder::new(codec).ok();
        }
    }

    /// A tapped RTP packet of m-line `stream` (arrival time in ms on the driver's clock).
    pub fn handle_packet(&mut self, party: Party, stream: usize, header: &RtpHeader, payload: &[u8], arrival_ms: u64) {
        if self.stream.is_some_and(|s| s != stream) {
            self.legs[party.idx()].stats.other_stream_packets += 1;
            return;
        }
        if self.payloads.format(header.payload_type).is_none() {
            // A payload type the negotiation never mentioned: counted as such, not as
            // "non-speech" (telephone-event, comfort noise), and never decoded.
            let leg = &mut self.legs[party.idx()];
            leg.stats.packets += 1;
            leg.stats.unknown_payload += 1;
            return;
        }
        let codec = self.payloads.codec(header.payload_type);
        if codec.is_speech() {
            self.ensure_decoder(party, header.payload_type);
            self.handle_rtp(party, header, payload, arrival_ms);
        } else {
            // Telephone-event and comfort noise: not speech, but they count for quality.
            self.ensure_decoder(party, header.payload_type);
            let leg = &mut self.legs[party.idx()];
            leg.stats.packets += 1;
        }
    }

    /// Timers: release due jitter frames and declare silent legs silent up to `now − lag`.
    pub fn handle_tick(&mut self, now_ms: u64) {
        for party in Party::ALL {
            self.drain(party, now_ms);
        }
        let upto_ms = now_ms.saturating_sub(self.start_ms).saturating_sub(LAG_MS);
        let upto = upto_ms * (RATE as u64 / 1000) / FRAME as u64 * FRAME as u64;
        self.analysis.advance_to(upto);
    }

    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.analysis.poll_event()
    }

    /// Gate speech to ASR (see [`CallAnalysis::enable_asr`]).
    pub fn enable_asr(&mut self, cfg: &super::asr::AsrConfig) {
        self.analysis.enable_asr(cfg.preroll_ms, cfg.tail_ms, cfg.max_utterance_s);
    }

    pub fn poll_asr(&mut self) -> Option<(Party, super::asr::GateCmd)> {
        self.analysis.poll_asr()
    }

    pub fn position_s(&self) -> f64 {
        self.analysis.position_s()
    }

    pub fn on_hold(&self) -> bool {
        self.analysis.turns().on_hold()
    }

    pub fn talk_time(&self, party: Party) -> f64 {
        self.analysis.turns().talk_time(party)
    }

    /// End of call: flush the jitter stages, analyse what is left, summarise.
    pub fn finish(self, now_ms: u64) -> LiveSummary {
        self.finish_with_asr(now_ms).0
    }

    /// [`Self::finish`], also returning the last ASR commands (closing open utterances).
    pub fn finish_with_asr(mut self, now_ms: u64) -> (LiveSummary, Vec<(Party, super::asr::GateCmd)>) {
        for party in Party::ALL {
            let frames = self.legs[party.idx()].jitter.as_mut().map(|j| j.flush()).unwrap_or_default();
            for f in frames {
                self.handle_jitter_frame(party, f, now_ms);
            }
        }
        let turns = self.analysis.finish();
        let mut cmds = Vec::new();
        while let Some(c) = self.analysis.poll_asr() {
            cmds.push(c);
        }
        let q = |l: &Leg| l.quality.as_ref().map(|q| q.summary(l.last_codec));
        let summary = LiveSummary {
            turns,
            quality: Some(LegQuality {
                customer: q(&self.legs[0]),
                agent: q(&self.legs[1]),
                customer_stats: self.legs[0].stats.clone(),
                agent_stats: self.legs[1].stats.clone(),
            }),
        };
        (summary, cmds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::g711;

    #[test]
    fn rtp_stream_through_jitter_and_decoder_reaches_the_analyzer() {
        let mut call = LiveCall::new(&AnalysisConfig::default(), 1_000);
        // 0.5 s of silence (ringback, "hello?" not yet), 2 s of bursts on the customer leg, then
        // silence; agent silent; packets reordered in pairs.
        // Bursts (300 ms on, 200 ms off, bridged into one segment): the detector's noise floor
        // needs pauses, a steady tone would be taken for noise.
        let mut tone = vec![0i16; 4000];
        tone.extend((0..16000).map(|i| if i % 4000 >= 2400 { 0 } else { ((i as f64 * 0.35).sin() * 8000.0) as i16 }));
        let mut pkts = Vec::new();
        for k in 0..200u32 {
            let pcm: Vec<i16> = tone.get(k as usize * 160..k as usize * 160 + 160).map_or(vec![0; 160], |s| s.to_vec());
            let payload: Vec<u8> = pcm.iter().map(|&s| g711::encode_ulaw(s)).collect();
            pkts.push((k, crate::rtp::build(0, k as u16, k * 160, 7, &payload)));
        }
        for pair in pkts.chunks(2).rev().collect::<Vec<_>>().into_iter().rev() {
            for (k, p) in pair.iter().rev() {
                let h = crate::rtp::parse_rtp(p).unwrap();
                call.handle_packet(Party::Customer, 0, &h, &p[h.payload_offset..], 1_000 + *k as u64 * 20);
            }
            call.handle_tick(1_000 + pair[1].0 as u64 * 20);
        }
        call.handle_tick(6_000);
        let s = call.finish(6_000);
        // Bursts from 0.5 to 2.3 s (pauses bridged), placed 60 ms late (the jitter depth at
        // the first packet), plus 50 ms of hangover.
        let seg = &s.turns.segments.customer;
        assert_eq!(seg.len(), 1, "{seg:?}");
        assert!((seg[0][0] - 0.56).abs() < 0.03 && (seg[0][1] - 2.41).abs() < 0.03, "{seg:?}");
        assert_eq!(s.turns.talk_time_s.agent, 0.0);
        let q = s.quality.unwrap().customer.unwrap();
        assert_eq!(q.lost, 0);
        assert!(q.mos > 4.0);
    }
}
