//! RTP and RTCP header validation (RFC 3550 §5.1, §6.4; RFC 5761 §4 for demultiplexing).
//!
//! The relay forwards packets unchanged; this module only decides whether a datagram is
//! well-formed RTP or RTCP and, for RTP, hands the header fields and the payload range to the tap.
//! Not here: SRTP, jitter buffers, statistics (analysis computes loss and jitter from the tap).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Offset of the payload in the packet.
    pub payload_offset: usize,
    /// Length of the payload (padding removed).
    pub payload_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("shorter than the fixed header")]
    Short,
    #[error("version is not 2")]
    Version,
    #[error("CSRC list, extension or padding runs past the end")]
    Length,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    Rtp(RtpHeader),
    Rtcp,
}

/// Classify a datagram received on a media port. With rtcp-mux, RTCP packet types 192–223 occupy
/// the second byte where RTP would put marker + payload type 64–95 (RFC 5761 §4).
pub fn classify(buf: &[u8]) -> Result<Packet, RtpError> {
    if buf.len() >= 2 && (192..=223).contains(&buf[1]) {
        check_rtcp(buf)?;
        return Ok(Packet::Rtcp);
    }
    parse_rtp(buf).map(Packet::Rtp)
}

/// Validate a compound RTCP packet: version 2 and consistent length fields (RFC 3550 §6.4.1).
pub fn check_rtcp(buf: &[u8]) -> Result<(), RtpError> {
    if buf.len() < 8 {
        return Err(RtpError::Short);
    }
    let mut off = 0;
    while off < buf.len() {
        if buf.len() - off < 4 {
            return Err(RtpError::Length);
        }
        if buf[off] >> 6 != 2 {
            return Err(RtpError::Version);
        }
        let words = u16::from_be_bytes([buf[off + 2], buf[off + 3]]) as usize;
        off += (words + 1) * 4;
        if off > buf.len() {
            return Err(RtpError::Length);
        }
    }
    Ok(())
}

/// Validate an SRTCP packet (RFC 3711 §3.4): an RTCP header in the clear (version 2, packet
/// type 192–223), then the encrypted rest, the E flag with the index, and the tag. Only the
/// header can be checked without the keys.
pub fn check_srtcp(buf: &[u8]) -> Result<(), RtpError> {
    if buf.len() < 8 + 4 + 4 {
        return Err(RtpError::Short);
    }
    if buf[0] >> 6 != 2 {
        return Err(RtpError::Version);
    }
    if !(192..=223).contains(&buf[1]) {
        return Err(RtpError::Length);
    }
    Ok(())
}

pub fn parse_rtp(buf: &[u8]) -> Result<RtpHeader, RtpError> {
    if buf.len() < 12 {
        return Err(RtpError::Short);
    }
    if buf[0] >> 6 != 2 {
        return Err(RtpError::Version);
    }
    let padding = buf[0] & 0x20 != 0;
    let extension = buf[0] & 0x10 != 0;
    let cc = (buf[0] & 0x0f) as usize;
    let mut off = 12 + cc * 4;
    if extension {
        if buf.len() < off + 4 {
            return Err(RtpError::Length);
        }
        let words = u16::from_be_bytes([buf[off + 2], buf[off + 3]]) as usize;
        off += 4 + words * 4;
    }
    if off > buf.len() {
        return Err(RtpError::Length);
    }
    let mut end = buf.len();
    if padding {
        let pad = buf[end - 1] as usize;
        if pad == 0 || off + pad > end {
            return Err(RtpError::Length);
        }
        end -= pad;
    }
    Ok(RtpHeader {
        marker: buf[1] & 0x80 != 0,
        payload_type: buf[1] & 0x7f,
        sequence: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        payload_offset: off,
        payload_len: end - off,
    })
}

/// Build an RTP packet (tests, benchmarks, demo traffic).
pub fn build(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.extend_from_slice(&[0x80, pt & 0x7f]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects() {
        let p = build(8, 7, 160, 0xdead, &[1, 2, 3]);
        let h = parse_rtp(&p).unwrap();
        assert_eq!((h.payload_type, h.sequence, h.timestamp, h.ssrc), (8, 7, 160, 0xdead));
        assert_eq!(&p[h.payload_offset..h.payload_offset + h.payload_len], &[1, 2, 3]);
        assert_eq!(parse_rtp(&p[..5]), Err(RtpError::Short));
        let mut bad = p.clone();
        bad[0] = 0x40;
        assert_eq!(parse_rtp(&bad), Err(RtpError::Version));
        let mut cc = p.clone();
        cc[0] = 0x8f;
        assert_eq!(parse_rtp(&cc), Err(RtpError::Length));
        let mut pad = p.clone();
        pad[0] |= 0x20;
        *pad.last_mut().unwrap() = 200;
        assert_eq!(parse_rtp(&pad), Err(RtpError::Length));
    }

    #[test]
    fn rtcp_demux() {
        // Receiver report, no blocks: V=2, PT=201, length=1 (8 bytes).
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert_eq!(classify(&rr), Ok(Packet::Rtcp));
        assert!(classify(&[0x80, 201, 0, 9, 0, 0, 0, 1]).is_err());
    }
}
