//! Per-call media session core (sans-IO): for every m-line, two legs (customer/PBX side and agent
//! side), each with the address its SDP announced and the source latched from its first packet.
//! [`MediaSession::handle_packet`] gives a per-packet verdict (forward where, tap or not, drop why);
//! [`MediaSession::handle_timeout`] reports a leg that went silent past the RTP timeout.
//!
//! Latching (symmetric RTP, "comedia"): the first valid packet on a leg's port fixes the peer's
//! source; later packets from any other source are dropped and counted, which stops RTP bleed
//! (a stranger injecting into or stealing a call's stream). A new SDP address from that side
//! (re-INVITE) re-opens latching.
//!
//! Not here: sockets and timers (the call task), decoding (analysis reads the tap).

use crate::call::Party;
use crate::rtp::{self, Packet, RtpHeader};
use crate::sdp;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Rtp,
    Rtcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not RTP/RTCP version 2, or lengths inconsistent.
    Malformed,
    /// From a source other than the latched one (RTP bleed).
    SourceMismatch,
    /// The other side has not announced where to send yet, or is held with 0.0.0.0.
    NoDestination,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [DropReason::Malformed, DropReason::SourceMismatch, DropReason::NoDestination];
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::SourceMismatch => "source_mismatch",
            DropReason::NoDestination => "no_destination",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the packet unchanged from our socket (`stream`, facing `out_side`, `out_port`) to `to`.
    Forward {
        stream: usize,
        out_side: Party,
        out_port: Port,
        to: SocketAddr,
        tap: Option<RtpHeader>,
    },
    Drop(DropReason),
}

#[derive(Debug, Default, Clone)]
pub struct LegCounters {
    pub rtp_in: u64,
    pub rtcp_in: u64,
    pub forwarded: u64,
    pub bytes_forwarded: u64,
    pub dropped: [u64; 3],
}

#[derive(Debug, Default, Clone)]
struct Leg {
    announced_rtp: Option<SocketAddr>,
    announced_rtcp: Option<SocketAddr>,
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    rtcp_mux: bool,
    on_hold: bool,
    last_rx: Option<Instant>,
    counters: LegCounters,
}

#[derive(Debug, Default, Clone)]
struct Stream {
    legs: [Leg; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// This leg sent nothing for the timeout: the session is over.
    RtpTimeout(Party),
}

#[derive(Debug)]
pub struct MediaSession {
    streams: Vec<Stream>,
    rtp_timeout: Duration,
    hold_timeout: Duration,
    /// When both sides had announced media (the timeout clock starts then).
    settled_at: Option<Instant>,
    ended: bool,
}

impl MediaSession {
    pub fn new(rtp_timeout: Duration, hold_timeout: Duration) -> Self {
        MediaSession { streams: Vec::new(), rtp_timeout, hold_timeout, settled_at: None, ended: false }
    }

    /// `side` announced its media (SDP offer or answer it sent).
    pub fn handle_remote(&mut self, side: Party, session: &sdp::Session, now: Instant) {
        if self.streams.len() < session.media.len() {
            self.streams.resize_with(session.media.len(), Stream::default);
        }
        for (i, m) in session.media.iter().enumerate() {
            let leg = &mut self.streams[i].legs[side.idx()];
            let rtp = (!m.addr.is_unspecified() && m.port != 0).then(|| SocketAddr::new(m.addr, m.port));
            let rtcp = rtp.map(|a| {
                let p = if m.rtcp_mux { m.port } else { m.rtcp_port.unwrap_or(m.port.wrapping_add(1)) };
                SocketAddr::new(a.ip(), p)
            });
            if rtp.is_some() && rtp != leg.announced_rtp {
                // New address (first SDP or a re-INVITE that moved): learn the source again.
                leg.latched_rtp = None;
                leg.latched_rtcp = None;
            }
            if rtp.is_some() {
                leg.announced_rtp = rtp;
                leg.announced_rtcp = rtcp;
            }
            leg.rtcp_mux = m.rtcp_mux;
            leg.on_hold = m.on_hold();
        }
        if self.settled_at.is_none() && self.streams.iter().any(|s| s.legs.iter().all(|l| l.announced_rtp.is_some())) {
            self.settled_at = Some(now);
        }
    }

    /// Either side's SDP puts the call on hold.
    pub fn on_hold(&self) -> bool {
        self.streams.iter().any(|s| s.legs.iter().any(|l| l.on_hold))
    }

    /// A datagram arrived on our port facing `from_side` (so `from_side` sent it).
    pub fn handle_packet(&mut self, stream: usize, from_side: Party, port: Port, src: SocketAddr, data: &[u8], now: Instant) -> Verdict {
        let Some(s) = self.streams.get_mut(stream) else {
            return Verdict::Drop(DropReason::NoDestination);
        };
        let kind = match port {
            Port::Rtp => rtp::classify(data),
            Port::Rtcp => rtp::check_rtcp(data).map(|_| Packet::Rtcp),
        };
        let (leg, other) = {
            let [a, b] = &mut s.legs;
            if from_side == Party::Customer {
                (a, &*b)
            } else {
                (b, &*a)
            }
        };
        let kind = match kind {
            Ok(k) => k,
            Err(_) => return drop(leg, DropReason::Malformed),
        };
        let latched = match port {
            Port::Rtp => &mut leg.latched_rtp,
            Port::Rtcp => &mut leg.latched_rtcp,
        };
        match latched {
            Some(l) if *l != src => return drop(leg, DropReason::SourceMismatch),
            Some(_) => {}
            None => *latched = Some(src),
        }
        leg.last_rx = Some(now);
        let (to, out_port) = match kind {
            Packet::Rtp(_) => {
                leg.counters.rtp_in += 1;
                (other.latched_rtp.or(other.announced_rtp), Port::Rtp)
            }
            Packet::Rtcp => {
                leg.counters.rtcp_in += 1;
                if other.rtcp_mux {
                    (other.latched_rtp.or(other.announced_rtp), Port::Rtp)
                } else {
                    (other.latched_rtcp.or(other.announced_rtcp), Port::Rtcp)
                }
            }
        };
        let Some(to) = to else {
            return drop(leg, DropReason::NoDestination);
        };
        leg.counters.forwarded += 1;
        leg.counters.bytes_forwarded += data.len() as u64;
        let tap = match kind {
            Packet::Rtp(h) => Some(h),
            Packet::Rtcp => None,
        };
        Verdict::Forward { stream, out_side: from_side.other(), out_port, to, tap }
    }

    /// When [`Self::handle_timeout`] next has something to say.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let settled = self.settled_at?;
        let limit = if self.on_hold() { self.hold_timeout } else { self.rtp_timeout };
        self.streams
            .iter()
            .flat_map(|s| s.legs.iter())
            .filter(|l| l.announced_rtp.is_some())
            .map(|l| l.last_rx.unwrap_or(settled).max(settled) + limit)
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<MediaEvent> {
        let deadline = self.poll_timeout()?;
        if now < deadline {
            return None;
        }
        let settled = self.settled_at?;
        let limit = if self.on_hold() { self.hold_timeout } else { self.rtp_timeout };
        for s in &self.streams {
            for (i, l) in s.legs.iter().enumerate() {
                if l.announced_rtp.is_some() && l.last_rx.unwrap_or(settled).max(settled) + limit <= now {
                    self.ended = true;
                    return Some(MediaEvent::RtpTimeout(if i == 0 { Party::Customer } else { Party::Agent }));
                }
            }
        }
        None
    }

    pub fn counters(&self, stream: usize, side: Party) -> Option<&LegCounters> {
        self.streams.get(stream).map(|s| &s.legs[side.idx()].counters)
    }
    pub fn latched(&self, stream: usize, side: Party) -> Option<SocketAddr> {
        self.streams.get(stream).and_then(|s| s.legs[side.idx()].latched_rtp)
    }
}

fn drop(leg: &mut Leg, r: DropReason) -> Verdict {
    leg.counters.dropped[r as usize] += 1;
    Verdict::Drop(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::build;

    fn sdp(addr: &str, port: u16, extra: &str) -> sdp::Session {
        sdp::parse(format!("v=0\r\nc=IN IP4 {addr}\r\nm=audio {port} RTP/AVP 0\r\n{extra}").as_bytes()).unwrap()
    }
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwards_latches_and_blocks_bleed() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(Duration::from_secs(30), Duration::from_secs(3600));
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, ""), t0);
        let p = build(0, 1, 0, 1, &[0; 160]);
        // Agent side has not answered yet.
        assert_eq!(m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &p, t0), Verdict::Drop(DropReason::NoDestination));
        m.handle_remote(Party::Agent, &sdp("10.0.0.2", 5000, ""), t0);
        match m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &p, t0) {
            Verdict::Forward { to, out_side, tap, .. } => {
                assert_eq!((to, out_side), (sa("10.0.0.2:5000"), Party::Agent));
                assert_eq!(tap.unwrap().payload_len, 160);
            }
            v => panic!("{v:?}"),
        }
        // Agent sends from behind NAT: latch to the real source, and send there.
        m.handle_packet(0, Party::Agent, Port::Rtp, sa("192.0.2.9:7000"), &p, t0);
        match m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &p, t0) {
            Verdict::Forward { to, .. } => assert_eq!(to, sa("192.0.2.9:7000")),
            v => panic!("{v:?}"),
        }
        // A stranger is dropped.
        assert_eq!(m.handle_packet(0, Party::Agent, Port::Rtp, sa("203.0.113.5:1"), &p, t0), Verdict::Drop(DropReason::SourceMismatch));
        assert_eq!(
            m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &[1, 2, 3], t0),
            Verdict::Drop(DropReason::Malformed)
        );
        assert_eq!(m.counters(0, Party::Agent).unwrap().dropped[DropReason::SourceMismatch as usize], 1);
        // A re-INVITE moving the agent re-opens latching.
        m.handle_remote(Party::Agent, &sdp("10.0.0.3", 5002, ""), t0);
        assert!(m.latched(0, Party::Agent).is_none());
    }

    #[test]
    fn rtcp_mux_and_timeout() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(Duration::from_secs(30), Duration::from_secs(3600));
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, "a=rtcp-mux\r\n"), t0);
        m.handle_remote(Party::Agent, &sdp("10.0.0.2", 5000, ""), t0);
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        match m.handle_packet(0, Party::Agent, Port::Rtcp, sa("10.0.0.2:5001"), &rr, t0) {
            Verdict::Forward { to, out_port, tap, .. } => {
                assert_eq!((to, out_port, tap), (sa("10.0.0.1:4000"), Port::Rtp, None))
            }
            v => panic!("{v:?}"),
        }
        let p = build(0, 1, 0, 1, &[0; 160]);
        m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &p, t0 + Duration::from_secs(20));
        assert_eq!(m.handle_timeout(t0 + Duration::from_secs(29)), None);
        // The agent leg's RTCP does not keep its RTP alive... but RTCP counts as activity.
        assert_eq!(m.handle_timeout(t0 + Duration::from_secs(31)), Some(MediaEvent::RtpTimeout(Party::Agent)));
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn hold_uses_hold_timeout() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(Duration::from_secs(30), Duration::from_secs(3600));
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, "a=sendonly\r\n"), t0);
        m.handle_remote(Party::Agent, &sdp("10.0.0.2", 5000, "a=recvonly\r\n"), t0);
        assert!(m.on_hold());
        assert_eq!(m.handle_timeout(t0 + Duration::from_secs(600)), None);
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, ""), t0);
        assert!(!m.on_hold());
    }
}
