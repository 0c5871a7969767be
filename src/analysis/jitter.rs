//! Per-leg reorder stage between the tap and the decoder (sans-IO: arrival times are passed in).
//!
//! Packets of one SSRC go in as they arrive; frames come out in sequence order, with a `Lost`
//! frame for every missing sequence number so the decoder can conceal it. A packet is released
//! when it is the next expected one, or when it has waited `depth_ms` (then the gap before it is
//! declared lost). Duplicates and packets older than what was already released are dropped and
//! counted. Sequence numbers are extended past 16-bit wrap-around (RFC 3550 §A.1); timestamps are
//! only compared with wrapping arithmetic.
//!
//! Not here: playout timing or clock-drift compensation (analysis runs on media time, not on a
//! loudspeaker), decoding, RTCP, loss/jitter statistics (`analysis::quality`).
use std::collections::{BTreeMap, VecDeque};

use crate::rtp::RtpHeader;

/// A sequence gap bigger than this is a discontinuity (sender restart, long outage), not loss:
/// no `Lost` frames are produced for it. Same bound as RFC 3550 §A.1 MAX_DROPOUT.
const MAX_DROPOUT: i64 = 3000;
/// A packet this far behind what was released is a sign of a sequence restart rather than
/// lateness; two in a row restart the stage (RFC 3550 §A.1 MAX_MISORDER / bad_seq).
const MAX_MISORDER: i64 = 100;
/// A gap of more than this many packets that arrives faster than 5 ms per missing packet is a
/// sequence jump (the sender renumbered), not loss: packets are never shorter than 10 ms, so
/// that many lost packets take at least twice as long to go by.
const JUMP_MIN: i64 = 50;
/// Bound on buffered packets (≈ 10 s of 20 ms packets): protects memory if `pop` is not driven.
const MAX_BUFFERED: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Packet {
        timestamp: u32,
        seq: u16,
        payload: Vec<u8>,
        marker: bool,
    },
    /// The packet with this sequence number never arrived in time. `timestamp` is interpolated
    /// between its neighbours.
    Lost {
        timestamp: u32,
        seq: u16,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JitterStats {
    pub released: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub late: u64,
    pub ssrc_changes: u64,
    /// Sequence discontinuities (jump beyond MAX_DROPOUT, or a confirmed restart).
    pub resyncs: u64,
    /// Packets dropped because the buffer was full.
    pub overflow: u64,
}

#[derive(Debug)]
struct Entry {
    timestamp: u32,
    payload: Vec<u8>,
    marker: bool,
    arrival_ms: u64,
}

#[derive(Debug)]
pub struct JitterStage {
    clock_rate: u32,
    depth_ms: u64,
    ssrc: Option<u32>,
    /// Buffered packets by extended sequence number.
    buffer: BTreeMap<i64, Entry>,
    /// Frames already decided (drained on SSRC change or restart), returned before anything else.
    ready: VecDeque<Frame>,
    /// Extended sequence number of the next frame to release; None until the first release.
    next: Option<i64>,
    /// Highest extended sequence number pushed: the reference for extending the next one.
    highest: Option<i64>,
    /// Extended sequence number and timestamp of the last released packet.
    last: Option<(i64, u32)>,
    /// Arrival time of the last released packet.
    last_arrival: Option<u64>,
    /// Bit i set: sequence `next - 1 - i` was released as a packet (for duplicate detection).
    history: u64,
    /// RFC 3550 §A.1 `bad_seq`: the sequence number that would confirm a restart.
    bad_seq: Option<u16>,
    stats: JitterStats,
}

impl JitterStage {
    /// `clock_rate`: RTP clock of the codec (8000 for G.711, 48000 for Opus), used to guess the
    /// timestamp of lost packets when no neighbour tells. `depth_ms`: how long a packet may wait
    /// for the ones before it (e.g. 60).
    pub fn new(clock_rate: u32, depth_ms: u32) -> Self {
        JitterStage {
            clock_rate: clock_rate.max(1),
            depth_ms: depth_ms as u64,
            ssrc: None,
            buffer: BTreeMap::new(),
            ready: VecDeque::new(),
            next: None,
            highest: None,
            last: None,
            last_arrival: None,
            history: 0,
            bad_seq: None,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// SSRC of the stream being reordered (the latest one seen).
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Packets waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Earliest time at which `pop` may release something without new input: the time the head
    /// packet becomes `depth_ms` old, or `None` when the buffer is empty. A ready frame gives 0.
    pub fn release_at(&self) -> Option<u64> {
        if !self.ready.is_empty() {
            return Some(0);
        }
        let (&seq, head) = self.buffer.first_key_value()?;
        if Some(seq) == self.next {
            return Some(0);
        }
        Some(head.arrival_ms.saturating_add(self.depth_ms))
    }

    pub fn push(&mut self, header: &RtpHeader, payload: &[u8], arrival_ms: u64) {
        match self.ssrc {
            Some(ssrc) if ssrc == header.ssrc => {}
            Some(_) => {
                self.stats.ssrc_changes += 1;
                self.restart();
                self.ssrc = Some(header.ssrc);
            }
            None => self.ssrc = Some(header.ssrc),
        }
        let seq = header.sequence;
        let ext = self.extend(seq);

        if let Some(next) = self.next {
            if ext < next {
                let behind = next - 1 - ext;
                if behind < 64 && self.history & (1 << behind) != 0 {
                    self.stats.duplicates += 1;
                    return;
                }
                if next - ext > MAX_MISORDER {
                    if self.bad_seq == Some(seq) {
                        // Two consecutive packets agree on a new sequence space (RFC 3550 §A.1).
                        self.stats.resyncs += 1;
                        self.restart();
                        let ext = self.extend(seq);
                        self.insert(ext, header, payload, arrival_ms);
                        return;
                    }
                    self.bad_seq = Some(seq.wrapping_add(1));
                }
                self.stats.late += 1;
                return;
            }
        }
        self.bad_seq = None;
        if self.buffer.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        if self.buffer.len() >= MAX_BUFFERED {
            self.stats.overflow += 1;
            return;
        }
        self.insert(ext, header, payload, arrival_ms);
    }

    /// Next frame in sequence order, if one may be released at `now_ms`. Call until `None`.
    pub fn pop(&mut self, now_ms: u64) -> Option<Frame> {
        if let Some(frame) = self.ready.pop_front() {
            return Some(frame);
        }
        self.release(Some(now_ms))
    }

    /// End of stream: everything still buffered, in order, with `Lost` frames for the gaps.
    pub fn flush(&mut self) -> Vec<Frame> {
        let mut out: Vec<Frame> = self.ready.drain(..).collect();
        while let Some(frame) = self.release(None) {
            out.push(frame);
        }
        out
    }

    fn insert(&mut self, ext: i64, header: &RtpHeader, payload: &[u8], arrival_ms: u64) {
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.buffer.insert(ext, Entry { timestamp: header.timestamp, payload: payload.to_vec(), marker: header.marker, arrival_ms });
    }

    /// Extend a 16-bit sequence number to the one closest to the highest seen.
    fn extend(&self, seq: u16) -> i64 {
        match self.highest {
            // Offset the first one so that early reordered packets stay positive.
            None => (1 << 16) + seq as i64,
            Some(h) => h + seq.wrapping_sub(h as u16) as i16 as i64,
        }
    }

    /// Queue whatever is buffered for the old stream and forget its sequence space.
    fn restart(&mut self) {
        while let Some(frame) = self.release(None) {
            self.ready.push_back(frame);
        }
        self.next = None;
        self.highest = None;
        self.last = None;
        self.history = 0;
        self.bad_seq = None;
    }

    /// One release decision. `now_ms: None` forces release regardless of age (flush).
    fn release(&mut self, now_ms: Option<u64>) -> Option<Frame> {
        let (&head, entry) = self.buffer.first_key_value()?;
        let ripe = match now_ms {
            None => true,
            Some(now) => now.saturating_sub(entry.arrival_ms) >= self.depth_ms,
        };
        match self.next {
            Some(next) if next == head => {}
            Some(next) => {
                if !ripe {
                    return None;
                }
                let jumped = head - next > JUMP_MIN
                    && self.last_arrival.is_some_and(|a| (entry.arrival_ms.saturating_sub(a) as i64) < (head - next) * 5);
                if head - next > MAX_DROPOUT || jumped {
                    self.stats.resyncs += 1;
                    self.history = 0;
                    self.last = None;
                } else {
                    return Some(self.emit_lost(next, head, entry.timestamp));
                }
            }
            None if !ripe => return None,
            None => {}
        }
        let entry = self.buffer.remove(&head)?;
        self.next = Some(head + 1);
        self.last = Some((head, entry.timestamp));
        self.last_arrival = Some(entry.arrival_ms);
        self.history = (self.history << 1) | 1;
        self.stats.released += 1;
        Some(Frame::Packet { timestamp: entry.timestamp, seq: head as u16, payload: entry.payload, marker: entry.marker })
    }

    fn emit_lost(&mut self, seq: i64, head: i64, head_ts: u32) -> Frame {
        // Interpolate between the last released packet and the head; without a usable neighbour
        // assume 20 ms packets.
        let default_step = self.clock_rate / 50;
        let timestamp = match self.last {
            Some((last_seq, last_ts)) => {
                let span = head_ts.wrapping_sub(last_ts);
                let steps = (head - last_seq) as u32;
                let step = if span < 1 << 31 && steps > 0 { span / steps } else { default_step };
                last_ts.wrapping_add(step.wrapping_mul((seq - last_seq) as u32))
            }
            None => head_ts.wrapping_sub(default_step.wrapping_mul((head - seq) as u32)),
        };
        self.next = Some(seq + 1);
        self.history <<= 1;
        self.stats.lost += 1;
        Frame::Lost { timestamp, seq: seq as u16 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: u32 = 0x1234_5678;

    fn header(seq: u16, ts: u32, ssrc: u32) -> RtpHeader {
        RtpHeader { marker: false, payload_type: 0, sequence: seq, timestamp: ts, ssrc, payload_offset: 12, payload_len: 1 }
    }

    fn push(j: &mut JitterStage, seq: u16, ts: u32, at: u64) {
        j.push(&header(seq, ts, SSRC), &[seq as u8], at);
    }

    fn drain(j: &mut JitterStage, now: u64) -> Vec<Frame> {
        std::iter::from_fn(|| j.pop(now)).collect()
    }

    /// (seq, lost?) for compact assertions.
    fn seqs(frames: &[Frame]) -> Vec<(u16, bool)> {
        frames
            .iter()
            .map(|f| match f {
                Frame::Packet { seq, .. } => (*seq, false),
                Frame::Lost { seq, .. } => (*seq, true),
            })
            .collect()
    }

    #[test]
    fn in_order_stream_flows_after_initial_depth() {
        let mut j = JitterStage::new(8000, 60);
        push(&mut j, 10, 1600, 0);
        assert_eq!(j.pop(0), None, "first packet waits for possible earlier ones");
        assert_eq!(j.release_at(), Some(60));
        push(&mut j, 11, 1760, 20);
        push(&mut j, 12, 1920, 40);
        let out = drain(&mut j, 60);
        assert_eq!(seqs(&out), vec![(10, false), (11, false), (12, false)]);
        assert_eq!(out[0], Frame::Packet { timestamp: 1600, seq: 10, payload: vec![10], marker: false });
        // From now on the next expected packet leaves at once.
        push(&mut j, 13, 2080, 60);
        assert_eq!(seqs(&drain(&mut j, 60)), vec![(13, false)]);
        assert_eq!(j.stats().released, 4);
    }

    #[test]
    fn reorder_within_depth_is_fixed() {
        let mut j = JitterStage::new(8000, 60);
        push(&mut j, 1, 160, 0);
        let mut out = drain(&mut j, 60);
        push(&mut j, 3, 480, 60);
        push(&mut j, 4, 640, 70);
        out.extend(drain(&mut j, 80));
        push(&mut j, 2, 320, 90); // 30 ms late, within depth
        out.extend(drain(&mut j, 90));
        assert_eq!(seqs(&out), vec![(1, false), (2, false), (3, false), (4, false)]);
        assert_eq!(j.stats().lost, 0);
        // Reordering before the first release is fixed too.
        let mut j = JitterStage::new(8000, 60);
        push(&mut j, 101, 320, 0);
        push(&mut j, 100, 160, 10);
        // The head (100) waits its own depth.
        assert_eq!(j.release_at(), Some(70));
        assert_eq!(seqs(&drain(&mut j, 70)), vec![(100, false), (101, false)]);
    }

    #[test]
    fn loss_is_declared_after_depth_with_interpolated_timestamps() {
        let mut j = JitterStage::new(8000, 60);
        push(&mut j, 1, 1000, 0);
        drain(&mut j, 60);
        push(&mut j, 4, 1480, 80);
        assert_eq!(j.pop(100), None, "waits for 2 and 3");
        assert_eq!(j.release_at(), Some(140));
        let out = drain(&mut j, 140);
        assert_eq!(out[..2], [Frame::Lost { timestamp: 1160, seq: 2 }, Frame::Lost { timestamp: 1320, seq: 3 }]);
        assert_eq!(seqs(&out[2..]), vec![(4, false)]);
        // The lost ones arriving now are late.
        push(&mut j, 3, 1320, 150);
        assert!(drain(&mut j, 150).is_empty());
        let s = j.stats();
        assert_eq!((s.lost, s.late, s.duplicates), (2, 1, 0));
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut j = JitterStage::new(8000, 60);
        push(&mut j, 5, 0, 0);
        push(&mut j, 5, 0, 1); // duplicate while buffered
        let mut out = drain(&mut j, 60);
        push(&mut j, 5, 0, 61); // duplicate after release
        push(&mut j, 6, 160, 62);
        out.extend(drain(&mut j, 62));
        assert_eq!(seqs(&out), vec![(5, false), (6, false)]);
        let s = j.stats();
        assert_eq!((s.duplicates, s.late), (2, 0));
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let mut j = JitterStage::new(8000, 60);
        let base_ts = u32::MAX - 300;
        let mut t = 0;
        let mut out = Vec::new();
        // 65533, 65534, 65535, (0 lost), 1, 2 with the timestamp wrapping too; 2 before 1.
        for (seq, k) in [(65533u16, 0u32), (65534, 1), (65535, 2), (2, 5), (1, 4)] {
            push(&mut j, seq, base_ts.wrapping_add(k * 160), t);
            t += 20;
            out.extend(drain(&mut j, t));
        }
        out.extend(drain(&mut j, t + 100));
        assert_eq!(seqs(&out), vec![(65533, false), (65534, false), (65535, false), (0, true), (1, false), (2, false)]);
        assert_eq!(out[3], Frame::Lost { timestamp: base_ts.wrapping_add(3 * 160), seq: 0 });
        assert_eq!(j.stats().late, 0);
    }

    #[test]
    fn ssrc_change_resets_but_keeps_buffered_audio() {
        let mut j = JitterStage::new(8000, 60);
        push(&mut j, 100, 0, 0);
        push(&mut j, 101, 160, 20);
        // New source with an unrelated sequence space, before the old packets were released.
        j.push(&header(7, 999_000, 0xbeef), &[1], 30);
        let out = drain(&mut j, 30);
        assert_eq!(seqs(&out), vec![(100, false), (101, false)]);
        assert_eq!(j.ssrc(), Some(0xbeef));
        j.push(&header(8, 999_160, 0xbeef), &[2], 40);
        assert_eq!(seqs(&drain(&mut j, 90)), vec![(7, false), (8, false)]);
        let s = j.stats();
        assert_eq!((s.ssrc_changes, s.late, s.lost), (1, 0, 0));
    }

    #[test]
    fn big_jumps_resync_without_flooding_lost_frames() {
        let mut j = JitterStage::new(8000, 60);
        push(&mut j, 1, 0, 0);
        drain(&mut j, 60);
        // Forward jump past MAX_DROPOUT.
        push(&mut j, 20_000, 5_000_000, 80);
        let out = drain(&mut j, 140);
        assert_eq!(seqs(&out), vec![(20_000, false)]);
        // Backward restart: the first far-behind packet is late, the next one confirms.
        push(&mut j, 500, 0, 200);
        push(&mut j, 501, 160, 220);
        push(&mut j, 502, 320, 240);
        let out = drain(&mut j, 300);
        assert_eq!(seqs(&out), vec![(501, false), (502, false)]);
        let s = j.stats();
        assert_eq!((s.resyncs, s.late, s.lost), (2, 1, 0));
    }

    #[test]
    fn flush_releases_everything_in_order() {
        let mut j = JitterStage::new(48000, 60);
        push(&mut j, 10, 0, 0);
        push(&mut j, 13, 2880, 5);
        push(&mut j, 11, 960, 6);
        let out = j.flush();
        assert_eq!(seqs(&out), vec![(10, false), (11, false), (12, true), (13, false)]);
        assert_eq!(out[2], Frame::Lost { timestamp: 1920, seq: 12 });
        assert!(j.flush().is_empty());
        assert_eq!(j.pop(u64::MAX), None);
    }

    #[test]
    fn buffer_is_bounded() {
        let mut j = JitterStage::new(8000, 60);
        for i in 0..(MAX_BUFFERED as u16 + 10) {
            push(&mut j, i, i as u32 * 160, 0);
        }
        assert_eq!(j.buffered(), MAX_BUFFERED);
        assert_eq!(j.stats().overflow, 10);
    }
}
