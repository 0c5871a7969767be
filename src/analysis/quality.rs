//! Per-leg RTP receive statistics and a listening-quality estimate (sans-IO: arrival times are
//! passed in).
//!
//! Loss follows RFC 3550 §A.1/§A.3 (extended highest sequence number, expected vs received,
//! restart after two consecutive out-of-range packets), with duplicates detected over a 128-packet
//! window and not counted as received. Interarrival jitter is RFC 3550 §6.4.1/§A.8. The MOS is a
//! simplified ITU-T G.107 E-model (see [`estimate_mos`]).
//!
//! Not here: RTCP report generation or parsing, per-SSRC bookkeeping (one stream per instance;
//! the owner makes a new one on SSRC change), burst-loss modelling (BurstR = 1), echo and
//! loudness terms of the full E-model.
use crate::codec::Codec;

/// RFC 3550 §A.1 MAX_DROPOUT / MAX_MISORDER.
/// See `analysis::jitter`: a gap of more than this many packets arriving faster than 5 ms per
/// missing packet is a renumbering, not loss.
const JUMP_MIN: u16 = 50;
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
/// Packets behind the highest one that are still checked for duplication.
const DUP_WINDOW: u64 = 128;

/// What the E-model needs but the relay cannot observe: the delay outside the measured path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelayAssumptions {
    /// Receiving endpoint's jitter buffer. An adaptive buffer grows to about twice the measured
    /// jitter, so the larger of the two is used.
    pub jitter_buffer_ms: f64,
    /// One-way network delay from talker to listener.
    pub network_ms: f64,
    /// Whether the receiving endpoint conceals G.711 loss (G.711 Appendix I PLC).
    pub g711_plc: bool,
}

impl Default for DelayAssumptions {
    fn default() -> Self {
        DelayAssumptions { jitter_buffer_ms: 60.0, network_ms: 40.0, g711_plc: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QualitySummary {
    pub packets_received: u64,
    pub packets_expected: u64,
    pub lost: u64,
    /// lost / expected, 0.0..=1.0.
    pub loss_fraction: f64,
    pub duplicates: u64,
    /// RFC 3550 interarrival jitter, in milliseconds.
    pub jitter_ms: f64,
    /// E-model transmission rating factor R.
    pub r_factor: f64,
    /// Estimated MOS (conversational quality, 1.0..=4.5).
    pub mos: f64,
}

#[derive(Debug, Clone)]
pub struct QualityStats {
    clock_rate: u32,
    assumptions: DelayAssumptions,
    started: bool,
    /// Extended highest sequence number and the extended first one (RFC 3550 §A.1 `cycles` +
    /// `max_seq`, `base_seq`).
    ext_max: i64,
    ext_base: i64,
    max_seq: u16,
    bad_seq: Option<u16>,
    received: u64,
    /// Totals from before a sequence restart.
    prior_expected: u64,
    prior_received: u64,
    duplicates: u64,
    /// Bit i set: `ext_max - i` was received.
    window: u128,
    /// RFC 3550 §A.8 state, in timestamp units.
    transit: Option<u32>,
    jitter: f64,
    last_arrival_ms: Option<u64>,
    /// Sequence restarts and jumps taken as a new sequence space rather than loss.
    pub resyncs: u64,
    /// RFC 3550 §A.1 probation: the last packet (sequence, timestamp, arrival) of a source not
    /// yet validated.
    probe: Option<(u16, u32, u64)>,
}

impl QualityStats {
    /// `clock_rate`: RTP clock of the stream's codec (8000 for G.711, 48000 for Opus).
    pub fn new(clock_rate: u32) -> Self {
        Self::with_assumptions(clock_rate, DelayAssumptions::default())
    }

    pub fn with_assumptions(clock_rate: u32, assumptions: DelayAssumptions) -> Self {
        QualityStats {
            clock_rate: clock_rate.max(1),
            assumptions,
            started: false,
            ext_max: 0,
            ext_base: 0,
            max_seq: 0,
            bad_seq: None,
            received: 0,
            prior_expected: 0,
            prior_received: 0,
            duplicates: 0,
            window: 0,
            transit: None,
            jitter: 0.0,
            last_arrival_ms: None,
            resyncs: 0,
            probe: None,
        }
    }

    /// Account one received RTP packet, in arrival order.
    pub fn on_packet(&mut self, seq: u16, timestamp: u32, arrival_ms: u64) {
        if !self.started {
            // RFC 3550 §A.1 probation (MIN_SEQUENTIAL = 2): a source (or a new SSRC) counts once
            // two packets arrived in sequence; a lone stray packet does not open a sequence space.
            match self.probe {
                Some((p, pts, pat)) if seq == p.wrapping_add(1) => {
                    self.started = true;
                    self.probe = None;
                    self.init_seq(p);
                    self.received = 1;
                    self.update_jitter(pts, pat);
                    // This packet is then accounted as the next one in order, below.
                }
                Some((p, _, _)) if seq == p => {
                    self.duplicates += 1;
                    return;
                }
                _ => {
                    self.probe = Some((seq, timestamp, arrival_ms));
                    self.last_arrival_ms = Some(arrival_ms);
                    return;
                }
            }
        }
        {
            let udelta = seq.wrapping_sub(self.max_seq);
            if udelta == 0 {
                self.duplicates += 1;
                return;
            } else if udelta > JUMP_MIN
                && udelta < MAX_DROPOUT
                && self.last_arrival_ms.is_some_and(|a| arrival_ms.saturating_sub(a) < udelta as u64 * 5)
            {
                // A forward jump that arrived faster than the packets could have been lost:
                // the sender renumbered. A new sequence space, not loss.
                self.resyncs += 1;
                self.prior_expected += self.segment_expected();
                self.prior_received += self.received;
                self.init_seq(seq);
                self.transit = None;
            } else if udelta < MAX_DROPOUT {
                // In order, possibly with a gap.
                self.ext_max += udelta as i64;
                self.max_seq = seq;
                self.window = if (udelta as u64) < DUP_WINDOW { (self.window << udelta) | 1 } else { 1 };
            } else if udelta <= u16::MAX - MAX_MISORDER + 1 {
                // Very large jump: a restart if the next packet follows this one (RFC 3550 §A.1).
                if self.bad_seq != Some(seq) {
                    self.bad_seq = Some(seq.wrapping_add(1));
                    return;
                }
                self.resyncs += 1;
                self.prior_expected += self.segment_expected();
                self.prior_received += self.received;
                self.init_seq(seq);
                self.transit = None;
            } else {
                // Reordered (or duplicated) packet behind the highest.
                let behind = self.max_seq.wrapping_sub(seq) as u64;
                if behind < DUP_WINDOW {
                    let bit = 1u128 << behind;
                    if self.window & bit != 0 {
                        self.duplicates += 1;
                        return;
                    }
                    self.window |= bit;
                }
                self.ext_base = self.ext_base.min(self.ext_max - behind as i64);
            }
        }
        self.received += 1;
        self.last_arrival_ms = Some(arrival_ms);
        self.update_jitter(timestamp, arrival_ms);
    }

    /// A new SSRC on the leg: the old sequence space is closed (its figures kept) and the next
    /// packet starts a new one, as after a confirmed restart (RFC 3550 §A.1).
    pub fn new_source(&mut self) {
        if self.started {
            self.resyncs += 1;
            self.prior_expected += self.segment_expected();
            self.prior_received += self.received;
            self.started = false;
            self.received = 0;
            self.transit = None;
        }
        self.probe = None;
    }

    fn init_seq(&mut self, seq: u16) {
        self.max_seq = seq;
        self.ext_max = seq as i64;
        self.ext_base = seq as i64;
        self.bad_seq = None;
        self.received = 0;
        self.window = 1;
    }

    fn segment_expected(&self) -> u64 {
        if self.received == 0 {
            0
        } else {
            (self.ext_max - self.ext_base + 1) as u64
        }
    }

    /// RFC 3550 §A.8: D is the change in transit time (arrival in timestamp units minus RTP
    /// timestamp), J += (|D| - J) / 16.
    fn update_jitter(&mut self, timestamp: u32, arrival_ms: u64) {
        let arrival = (arrival_ms as u128 * self.clock_rate as u128 / 1000) as u32;
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(prev) = self.transit {
            let d = (transit.wrapping_sub(prev) as i32 as f64).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / self.clock_rate as f64
    }

    pub fn summary(&self, codec: Codec) -> QualitySummary {
        let expected = self.prior_expected + self.segment_expected();
        let received = self.prior_received + self.received;
        let lost = expected.saturating_sub(received);
        let loss_fraction = if expected == 0 { 0.0 } else { lost as f64 / expected as f64 };
        let jitter_ms = self.jitter_ms();
        let (r_factor, mos) = estimate_mos(codec, loss_fraction, jitter_ms, &self.assumptions);
        QualitySummary {
            packets_received: received,
            packets_expected: expected,
            lost,
            loss_fraction,
            duplicates: self.duplicates,
            jitter_ms,
            r_factor,
            mos,
        }
    }
}

/// E-model codec parameters: (Ie, Bpl, codec delay in ms).
///
/// - G.711: Ie = 0; Bpl = 25.1 with G.711 Appendix I PLC, 4.3 without (ITU-T G.113 Appendix I
///   provisional planning values). Delay: 20 ms packetisation (RFC 3551 default ptime).
/// - Opus: no ITU-T value exists. Ie = 2.0, Bpl = 16.0: the narrowband E-model factors fitted for
///   Opus CBR at 11 kbit/s under random loss by Alahmadi, Počta & Melvin, "An Adaptive Bitrate
///   Switching Algorithm for Speech Applications in Context of WebRTC", ACM TOMM 17(4), 2021,
///   doi:10.1145/3458751 (their highest narrowband rate; VoIP Opus usually runs faster, where
///   the narrowband impairment is no larger). Delay: 20 ms frame + 6.5 ms look-ahead (libopus
///   default, 26.5 ms algorithmic delay).
/// - Telephone events, comfort noise, unknown: treated as G.711.
fn codec_parameters(codec: Codec, g711_plc: bool) -> (f64, f64, f64) {
    match codec {
        Codec::Opus => (2.0, 16.0, 26.5),
        _ if g711_plc => (0.0, 25.1, 20.0),
        _ => (0.0, 4.3, 20.0),
    }
}

/// Simplified ITU-T G.107 E-model: R = 93.2 − Id − Ie,eff (default Ro − Is, A = 0).
///
/// - Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl) with BurstR = 1 (G.107, random
///   loss), Ppl in percent.
/// - Id from the one-way mouth-to-ear delay d = jitter buffer + codec + network, with the linear
///   fit of G.107 at default echo settings by Cole & Rosenbluth ("Voice over IP performance
///   monitoring", ACM SIGCOMM CCR 31(2), 2001): Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3).
/// - MOS = 1 + 0.035·R + R·(R − 60)·(100 − R)·7·10⁻⁶ for 0 < R < 100 (G.107 Annex B), 1 below,
///   4.5 above.
///
/// Returns (R, MOS).
pub fn estimate_mos(codec: Codec, loss_fraction: f64, jitter_ms: f64, assumptions: &DelayAssumptions) -> (f64, f64) {
    let (ie, bpl, codec_delay) = codec_parameters(codec, assumptions.g711_plc);
    let ppl = (loss_fraction * 100.0).clamp(0.0, 100.0);
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl);
    let buffer = assumptions.jitter_buffer_ms.max(2.0 * jitter_ms);
    let d = (buffer + codec_delay + assumptions.network_ms).max(0.0);
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let r = 93.2 - id - ie_eff;
    let mos = if r.is_nan() || r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).clamp(1.0, 4.5)
    };
    (r, mos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `n` packets of a 20 ms stream starting at `seq0`, skipping those `drop` rejects, with
    /// arrival jitter from `delay(i)`.
    fn stream(clock: u32, seq0: u16, n: u32, drop: impl Fn(u32) -> bool, delay: impl Fn(u32) -> u64) -> QualityStats {
        let mut q = QualityStats::new(clock);
        let step = clock / 50;
        let ts0 = u32::MAX - 1000;
        for i in 0..n {
            if drop(i) {
                continue;
            }
            q.on_packet(seq0.wrapping_add(i as u16), ts0.wrapping_add(i * step), 1_000 + i as u64 * 20 + delay(i));
        }
        q
    }

    #[test]
    fn clean_g711_stream() {
        // Sequence and timestamp both wrap.
        let q = stream(8000, 65_000, 1000, |_| false, |_| 0);
        let s = q.summary(Codec::Pcmu);
        assert_eq!((s.packets_received, s.packets_expected, s.lost), (1000, 1000, 0));
        assert_eq!(s.loss_fraction, 0.0);
        assert!(s.jitter_ms.abs() < 1e-9, "{}", s.jitter_ms);
        assert!((4.3..=4.45).contains(&s.mos), "mos {}", s.mos);
        // With no delay at all the model tops out at R = 93.2, MOS ≈ 4.41.
        let ideal = DelayAssumptions { jitter_buffer_ms: 0.0, network_ms: 0.0, g711_plc: true };
        let (r, mos) = estimate_mos(Codec::Pcmu, 0.0, 0.0, &ideal);
        assert!((r - (93.2 - 0.024 * 20.0)).abs() < 1e-9);
        assert!((mos - 4.40).abs() < 0.01, "{mos}");
    }

    #[test]
    fn five_percent_loss_lowers_mos() {
        let clean = stream(8000, 1, 1000, |_| false, |_| 0).summary(Codec::Pcma);
        let q = stream(8000, 1, 1000, |i| i % 20 == 10, |_| 0);
        let s = q.summary(Codec::Pcma);
        assert_eq!((s.packets_expected, s.lost), (1000, 50));
        assert!((s.loss_fraction - 0.05).abs() < 1e-12);
        assert!(s.mos < clean.mos - 0.3, "{} vs {}", s.mos, clean.mos);
        assert!((3.5..4.0).contains(&s.mos), "{}", s.mos);
        // Without PLC at the endpoint, the same loss hurts far more (G.113 Bpl 4.3).
        let no_plc = DelayAssumptions { g711_plc: false, ..DelayAssumptions::default() };
        let (_, mos) = estimate_mos(Codec::Pcma, 0.05, 0.0, &no_plc);
        assert!(mos < s.mos - 1.0, "{mos}");
    }

    #[test]
    fn constant_delay_has_no_jitter() {
        let q = stream(48_000, 7, 500, |_| false, |_| 85);
        assert!(q.jitter_ms().abs() < 1e-9);
        let s = q.summary(Codec::Opus);
        assert_eq!(s.lost, 0);
        assert!((4.0..4.45).contains(&s.mos), "{}", s.mos);
    }

    #[test]
    fn alternating_delay_gives_expected_jitter() {
        // Transit alternates 0 / 10 ms, so |D| = 10 ms on every packet and J converges to 10 ms:
        // J_n = 10 · (1 − (15/16)^(n−1)).
        for clock in [8000, 48_000] {
            let q = stream(clock, 0, 400, |_| false, |i| if i % 2 == 1 { 10 } else { 0 });
            assert!((q.jitter_ms() - 10.0).abs() < 1e-6, "{}", q.jitter_ms());
            let q = stream(clock, 0, 5, |_| false, |i| if i % 2 == 1 { 10 } else { 0 });
            let expect = 10.0 * (1.0 - (15.0f64 / 16.0).powi(4));
            assert!((q.jitter_ms() - expect).abs() < 1e-9);
        }
        // High jitter pushes the assumed buffer up and the MOS down.
        let calm = stream(8000, 0, 400, |_| false, |_| 0).summary(Codec::Pcmu);
        let rough = stream(8000, 0, 400, |_| false, |i| (i % 2) as u64 * 120).summary(Codec::Pcmu);
        assert!(rough.mos < calm.mos - 0.2, "{} vs {}", rough.mos, calm.mos);
    }

    #[test]
    fn duplicates_and_reordering_are_not_loss() {
        let mut q = QualityStats::new(8000);
        let order = [10u16, 11, 13, 12, 12, 14, 11, 15, 9];
        for (i, seq) in order.iter().enumerate() {
            q.on_packet(*seq, *seq as u32 * 160, i as u64 * 20);
        }
        let s = q.summary(Codec::Pcmu);
        assert_eq!(s.duplicates, 2);
        assert_eq!((s.packets_received, s.packets_expected, s.lost), (7, 7, 0));
        // A repeat of the very first packet is a duplicate; a source that never sends two packets
        // in sequence is never validated (RFC 3550 §A.1 probation).
        let mut q = QualityStats::new(8000);
        q.on_packet(1, 0, 0);
        q.on_packet(1, 0, 1);
        let s = q.summary(Codec::Pcmu);
        assert_eq!((s.packets_received, s.duplicates), (0, 1));
        q.on_packet(2, 160, 20);
        assert_eq!(q.summary(Codec::Pcmu).packets_received, 2);
    }

    #[test]
    fn sequence_restart_keeps_totals() {
        let mut q = QualityStats::new(8000);
        for i in 0..100u16 {
            q.on_packet(i, i as u32 * 160, i as u64 * 20);
        }
        // A lone stray far-away packet is ignored; two consecutive ones restart the count.
        q.on_packet(40_000, 0, 2000);
        q.on_packet(30_000, 0, 2020);
        q.on_packet(30_001, 160, 2040);
        for i in 2..50u16 {
            if i != 20 {
                q.on_packet(30_000 + i, i as u32 * 160, 2040 + i as u64 * 20);
            }
        }
        // As in RFC 3550 §A.1, the packet that arms the restart (30000) is not counted: the new
        // segment starts at 30001 and runs to 30049 with 30020 missing.
        let s = q.summary(Codec::Pcmu);
        assert_eq!((s.packets_expected, s.packets_received, s.lost), (149, 148, 1));
    }

    #[test]
    fn empty_and_serialised() {
        let s = QualityStats::new(8000).summary(Codec::Pcmu);
        assert_eq!((s.packets_expected, s.lost, s.loss_fraction), (0, 0, 0.0));
        let json = serde_json::to_value(s).unwrap();
        for key in ["packets_received", "packets_expected", "lost", "loss_fraction", "jitter_ms", "mos"] {
            assert!(json.get(key).is_some(), "{key}");
        }
        // Total loss bottoms out at MOS 1.
        let (_, mos) = estimate_mos(Codec::Opus, 1.0, 500.0, &DelayAssumptions::default());
        assert_eq!(mos, 1.0);
    }

    #[test]
    fn a_stray_packet_is_on_probation_and_a_new_source_starts_clean() {
        let mut q = QualityStats::new(8000);
        // A lone packet far from the stream, then the stream.
        q.on_packet(50_000, 0, 0);
        for k in 0..100u16 {
            q.on_packet(100 + k, 160 * k as u32, 20 * k as u64);
        }
        let s = q.summary(Codec::Pcmu);
        assert_eq!((s.packets_received, s.packets_expected, s.lost), (100, 100, 0), "{s:?}");
        // A new SSRC with its own sequence space: the old figures stay, the new ones add up.
        q.new_source();
        for k in 0..50u16 {
            q.on_packet(9000 + k, 160 * k as u32, 3000 + 20 * k as u64);
        }
        let s = q.summary(Codec::Pcmu);
        assert_eq!((s.packets_received, s.packets_expected, s.lost), (150, 150, 0), "{s:?}");
        assert_eq!(q.resyncs, 1);
    }
}
