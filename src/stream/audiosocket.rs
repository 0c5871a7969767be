//! Asterisk AudioSocket (res_audiosocket / chan_audiosocket): a TCP stream per call leg of
//! frames `type (1 byte) | length (2 bytes, big-endian) | payload`. Types: 0x00 hang-up, 0x01
//! the leg's UUID (16 bytes, first), 0x03 DTMF, 0x10 signed linear 16-bit little-endian mono at
//! 8 kHz, 0x11–0x18 the same at 12/16/24/32/44.1/48/96/192 kHz (added in 2025; the values of
//! `enum ast_audiosocket_msg_kind` in Asterisk's `include/asterisk/res_audiosocket.h`), 0xff
//! error. Hearken analyses at 8 kHz: higher rates are brought down to it ([`super::to_8k`]).
//!
//! Two legs make one call: AudioSocket carries no metadata beyond the UUID, so the dialplan
//! gives both legs of a call the same UUID except for its last hex digit, whose low bit says
//! the party (even: customer, odd: agent). [`join_key`] reads that.

use crate::call::Party;

pub const HANGUP: u8 = 0x00;
pub const UUID: u8 = 0x01;
pub const DTMF: u8 = 0x03;
pub const SLIN8: u8 = 0x10;
pub const SLIN16: u8 = 0x12;
pub const ERROR: u8 = 0xff;

/// The sample rate of an audio frame type, None for other types.
pub fn rate_of(kind: u8) -> Option<u32> {
    Some(match kind {
        0x10 => 8000,
        0x11 => 12000,
        0x12 => 16000,
        0x13 => 24000,
        0x14 => 32000,
        0x15 => 44100,
        0x16 => 48000,
        0x17 => 96000,
        0x18 => 192000,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hangup,
    Uuid([u8; 16]),
    Dtmf(u8),
    /// 8 kHz samples (higher rates already brought down), and the ms of audio they hold.
    Audio(Vec<i16>),
    Error(u8),
    /// A type this input does not take (future types): counted, skipped.
    Unsupported(u8),
}

/// Splits a TCP byte stream into frames.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf` (consumed bytes are dropped once per push).
    at: usize,
    /// Brings higher rates down to 8 kHz (a leg that changes rate gets a new one).
    down: Option<super::Downsampler>,
}

impl Parser {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.drain(..self.at);
        self.at = 0;
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, None if more bytes are needed, Err for a frame that cannot be
    /// what its type says (the connection is then closed).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Frame>, &'static str> {
        let b = &self.buf[self.at..];
        if b.len() < 3 {
            return Ok(None);
        }
        let (kind, len) = (b[0], u16::from_be_bytes([b[1], b[2]]) as usize);
        if b.len() < 3 + len {
            return Ok(None);
        }
        let p: Vec<u8> = b[3..3 + len].to_vec();
        self.at += 3 + len;
        let pcm = |p: &[u8]| -> Vec<i16> { p.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect() };
        Ok(Some(match kind {
            HANGUP => Frame::Hangup,
            UUID => Frame::Uuid(p.as_slice().try_into().map_err(|_| "UUID frame is not 16 bytes")?),
            DTMF => Frame::Dtmf(*p.first().ok_or("empty DTMF frame")?),
            kind if rate_of(kind).is_some() => {
                if !p.len().is_multiple_of(2) {
                    return Err("odd audio length");
                }
                let rate = rate_of(kind).unwrap_or(8000);
                let down = match &mut self.down {
                    Some(d) if d.rate() == rate => d,
                    d => d.insert(super::Downsampler::new(rate)),
                };
                Frame::Audio(down.push(&pcm(&p)))
            }
            ERROR => Frame::Error(p.first().copied().unwrap_or(0)),
            other => Frame::Unsupported(other),
        }))
    }
}

/// The call a leg belongs to and its party: the UUID without the low bit of its last byte, and
/// that bit (0 customer, 1 agent).
pub fn join_key(uuid: &[u8; 16]) -> ([u8; 16], Party) {
    let mut k = *uuid;
    let party = if k[15] & 1 == 0 { Party::Customer } else { Party::Agent };
    k[15] &= !1;
    (k, party)
}

/// An AudioSocket frame (tests and tools: the Asterisk side).
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads_and_legs_join() {
        let uuid: [u8; 16] = [0x4d, 0xbb, 0x12, 0xf0, 0, 1, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x21];
        let mut bytes = frame(UUID, &uuid);
        let pcm: Vec<u8> = (0..160i16).flat_map(|s| (s * 10).to_le_bytes()).collect();
        bytes.extend(frame(SLIN8, &pcm));
        bytes.extend(frame(DTMF, b"5"));
        bytes.extend(frame(SLIN16, &[1, 0, 3, 0]));
        bytes.extend(frame(0x16, &[0; 24]));
        bytes.extend(frame(0x42, &[0; 8]));
        bytes.extend(frame(HANGUP, &[]));
        let mut p = Parser::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(7) {
            p.push(chunk);
            while let Some(f) = p.next().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got[0], Frame::Uuid(uuid));
        assert_eq!(got[1], Frame::Audio((0..160i16).map(|s| s * 10).collect()));
        assert_eq!(got[2], Frame::Dtmf(b'5'));
        assert_eq!(got[3], Frame::Audio(vec![2]));
        assert_eq!(got[4], Frame::Audio(vec![0, 0]), "48 kHz: 6 samples make one at 8 kHz");
        assert_eq!(got[5], Frame::Unsupported(0x42));
        assert_eq!(got[6], Frame::Hangup);
        let (k1, p1) = join_key(&uuid);
        let mut other = uuid;
        other[15] = 0x20;
        let (k2, p2) = join_key(&other);
        assert_eq!((k1, p1, p2), (k2, Party::Agent, Party::Customer));
        let mut bad = Parser::default();
        bad.push(&frame(UUID, &[1, 2, 3]));
        assert!(bad.next().is_err());
        bad = Parser::default();
        bad.push(&frame(SLIN8, &[1, 2, 3]));
        assert!(bad.next().is_err());
        // Every rate Asterisk sends is taken: 20 ms at each gives 160 samples at 8 kHz.
        for kind in 0x10..=0x18u8 {
            let rate = rate_of(kind).unwrap();
            let mut p = Parser::default();
            let mut n = 0;
            for _ in 0..50 {
                p.push(&frame(kind, &vec![0u8; rate as usize / 50 * 2]));
                if let Some(Frame::Audio(a)) = p.next().unwrap() {
                    n += a.len();
                }
            }
            assert!((7999..=8000).contains(&n), "kind {kind:#x}: {n} samples in a second");
        }
    }
}
