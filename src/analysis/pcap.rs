//! Reading RTP from a pcap capture for `hearken analyze --pcap`: classic pcap (either byte
//! order, µs or ns timestamps), Ethernet / Linux cooked / raw IP / BSD null links, IPv4 and IPv6,
//! UDP. Streams are told apart by source, destination and SSRC; RTCP and non-RTP UDP are skipped.
//!
//! Not here: pcapng, IP fragment reassembly, TCP.

use crate::rtp::{self, Packet};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("{0}: not a pcap file (pcapng is not supported: convert with `editcap -F pcap IN OUT`)")]
    NotPcap(String),
    #[error("{0}: unsupported link type {1}")]
    LinkType(String, u32),
    #[error("{0}: needs two RTP streams (customer and agent), found {1}")]
    Streams(String, usize),
}

#[derive(Debug, Clone)]
pub struct RtpPacket {
    /// Capture time, ms since the first packet of the capture.
    pub at_ms: u64,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ssrc: u32,
    pub packets: Vec<RtpPacket>,
}

fn ip_udp(pkt: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let v = pkt.first()? >> 4;
    let (src, dst, rest) = match v {
        4 => {
            let ihl = (pkt[0] & 0x0f) as usize * 4;
            if pkt.len() < ihl + 8 || pkt[9] != 17 || ihl < 20 {
                return None;
            }
            // Fragments other than the first carry no UDP header.
            if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff != 0 {
                return None;
            }
            let s = IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]));
            let d = IpAddr::V4(Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]));
            (s, d, &pkt[ihl..])
        }
        6 => {
            if pkt.len() < 48 || pkt[6] != 17 {
                return None;
            }
            let s: [u8; 16] = pkt[8..24].try_into().ok()?;
            let d: [u8; 16] = pkt[24..40].try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)), &pkt[40..])
        }
        _ => return None,
    };
    let sp = u16::from_be_bytes([rest[0], rest[1]]);
    let dp = u16::from_be_bytes([rest[2], rest[3]]);
    let len = (u16::from_be_bytes([rest[4], rest[5]]) as usize).clamp(8, rest.len());
    Some((SocketAddr::new(src, sp), SocketAddr::new(dst, dp), &rest[8..len]))
}

/// All RTP streams in a capture, in order of first appearance.
pub fn read_streams(b: &[u8], name: &str) -> Result<Vec<Stream>, PcapError> {
    if b.len() < 24 {
        return Err(PcapError::NotPcap(name.into()));
    }
    let (le, nanos) = match &b[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => return Err(PcapError::NotPcap(name.into())),
    };
    let u32_at = |o: usize| {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link = u32_at(20);
    let mut streams: Vec<Stream> = Vec::new();
    let mut index: HashMap<(SocketAddr, SocketAddr, u32), usize> = HashMap::new();
    let mut first_us: Option<u64> = None;
    let mut off = 24;
    while off + 16 <= b.len() {
        let (sec, frac, incl) = (u32_at(off) as u64, u32_at(off + 4) as u64, u32_at(off + 8) as usize);
        let us = sec * 1_000_000 + if nanos { frac / 1000 } else { frac };
        let end = (off + 16).saturating_add(incl).min(b.len());
        let frame = &b[off + 16..end];
        off = end;
        let l3 = match link {
            1 => {
                // Ethernet, with any 802.1Q tags.
                let mut o = 12;
                while frame.len() >= o + 2 && matches!(u16::from_be_bytes([frame[o], frame[o + 1]]), 0x8100 | 0x88a8) {
                    o += 4;
                }
                frame.get(o + 2..)
            }
            113 => frame.get(16..),
            0 | 108 => frame.get(4..),
            101 | 228 | 229 => Some(frame),
            l => return Err(PcapError::LinkType(name.into(), l)),
        };
        let Some((src, dst, payload)) = l3.and_then(ip_udp) else {
            continue;
        };
        let Ok(Packet::Rtp(h)) = rtp::classify(payload) else {
            continue;
        };
        let t0 = *first_us.get_or_insert(us);
        let key = (src, dst, h.ssrc);
        let i = *index.entry(key).or_insert_with(|| {
            streams.push(Stream { src, dst, ssrc: h.ssrc, packets: Vec::new() });
            streams.len() - 1
        });
        streams[i].packets.push(RtpPacket { at_ms: us.saturating_sub(t0) / 1000, data: payload.to_vec() });
    }
    // A handful of packets that happen to parse as RTP are not a stream.
    streams.retain(|s| s.packets.len() >= 5);
    Ok(streams)
}
