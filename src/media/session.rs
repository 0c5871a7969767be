//! Per-call media session core (sans-IO): for every m-line, two legs (customer/PBX side and agent
//! side), each with the address its SDP announced and the endpoint learned from its packets.
//! [`MediaSession::handle_packet`] gives a per-packet verdict (forward where, tap or not, drop
//! why); [`MediaSession::handle_timeout`] reports when the call's media is over.
//!
//! **Endpoint learning** (rtpengine's "heuristic" learning, with its early return). Nothing is
//! accepted on a leg before both sides have announced their media (the offer/answer is done):
//! before that, the port was never given to anyone who may legitimately send. Then a packet from
//! the exact address and port the leg's SDP announced is that party, always, and fixes the
//! endpoint at once. Otherwise, during a learning window that opens with the leg's first packet,
//! the best source seen so far is the endpoint (same IP as announced beats any other address),
//! so a phone behind NAT is heard from its first packet, and a stranger who got there first is
//! replaced the moment the real party shows up. After the window the endpoint is locked:
//! packets from anyone else are dropped and counted, and reach no party. What happens when a
//! locked endpoint goes quiet and a new source appears is the [`Learning`] policy: `heuristic`
//! follows a NAT rebinding (same IP, new port), `strict` never moves, `handover` follows any
//! new source. Either way the move is counted.
//!
//! **Demultiplexing** (RFC 7983 by first byte): STUN (0–3) is dropped and counted (Hearken
//! removes ICE from the SDP it anchors, so the relay is the only path), DTLS (20–63) is
//! forwarded untouched (DTLS-SRTP between the parties), RTP/RTCP (128–191) is checked and
//! forwarded, anything else is malformed. Streams that do not carry RTP (T.38 `udptl`) are
//! forwarded as they come.
//!
//! **Activity**: every accepted packet (RTP, RTCP, DTLS) is activity of its leg. The media is
//! over when *every* leg has been silent for the RTP timeout (the hold timeout while on hold),
//! or when one leg that should be sending has sent nothing at all for the dead-leg timeout (a
//! muted phone still sends comfort noise or RTCP; a dead one sends nothing). Silence of one
//! party alone never ends a call before that. A session whose offer/answer never completes is
//! ended after the setup timeout.
//!
//! Not here: sockets and timers (the call task), decoding (analysis reads the tap), SIP.

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
    /// Not STUN, DTLS, RTP or RTCP (RFC 7983), or lengths inconsistent.
    Malformed,
    /// From a source other than the leg's endpoint (RTP bleed, injection, a stale stream).
    SourceMismatch,
    /// The other side has not announced where to send yet, or is held with 0.0.0.0.
    NoDestination,
    /// A STUN packet (ICE connectivity check or consent): ICE is removed from anchored SDP.
    Stun,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [DropReason::Malformed, DropReason::SourceMismatch, DropReason::NoDestination, DropReason::Stun];
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::SourceMismatch => "source_mismatch",
            DropReason::NoDestination => "no_destination",
            DropReason::Stun => "stun",
        }
    }
}

/// What a locked endpoint may do when its packets start coming from somewhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Learning {
    /// Follow a NAT rebinding (same IP, new port) once the old port has gone quiet.
    #[default]
    Heuristic,
    /// Never move a locked endpoint (rtpengine's `strict-source`).
    Strict,
    /// Follow any new source once the old one has gone quiet (rtpengine's `media-handover`).
    Handover,
}

/// The media plane's timing and learning rules (from `[media]`).
#[derive(Debug, Clone)]
pub struct MediaPolicy {
    pub learning: Learning,
    pub learning_window: Duration,
    /// How long a locked endpoint must be silent before a new source may take over.
    pub handover_after: Duration,
    /// Every leg silent this long: the media is over.
    pub rtp_timeout: Duration,
    /// The same while the call is on hold.
    pub hold_timeout: Duration,
    /// One leg that should send has sent nothing (no RTP, RTCP or DTLS) this long: it is dead.
    pub dead_leg_timeout: Duration,
    /// The offer/answer never completed (one side never announced media) this long after the
    /// session opened.
    pub setup_timeout: Duration,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        MediaPolicy {
            learning: Learning::Heuristic,
            learning_window: Duration::from_secs(3),
            handover_after: Duration::from_millis(200),
            rtp_timeout: Duration::from_secs(30),
            hold_timeout: Duration::from_secs(3600),
            dead_leg_timeout: Duration::from_secs(30),
            setup_timeout: Duration::from_secs(240),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send the packet unchanged from our socket (`stream`, facing `out_side`, `out_port`) to `to`.
    /// `tap` is set for RTP on an RTP stream.
    Forward {
        stream: usize,
        out_side: Party,
        out_port: Port,
        to: SocketAddr,
        tap: Option<RtpHeader>,
    },
    /// Answer from the socket the datagram came in on (an ICE connectivity check, ICE-lite).
    Reply {
        stream: usize,
        side: Party,
        port: Port,
        to: SocketAddr,
        data: Vec<u8>,
    },
    Drop(DropReason),
}

#[derive(Debug, Default, Clone)]
pub struct LegCounters {
    pub rtp_in: u64,
    pub rtcp_in: u64,
    pub dtls_in: u64,
    pub forwarded: u64,
    pub bytes_forwarded: u64,
    pub dropped: [u64; 4],
    /// The endpoint moved after it was locked (NAT rebinding or handover), or the announced
    /// address replaced a provisional one.
    pub endpoint_moves: u64,
    /// A new source was refused by the policy after the window (counted in `dropped` too).
    pub moves_refused: u64,
    /// SRTP packets forwarded (their tapped copies are decrypted by analysis when SDES keys
    /// are known).
    pub srtp_in: u64,
    /// ICE connectivity checks answered (ICE-lite).
    pub stun_answered: u64,
}

/// How well a source matches what the leg announced: exact beats same IP beats anything.
fn rank(src: SocketAddr, announced: Option<SocketAddr>) -> u8 {
    match announced {
        Some(a) if a == src => 3,
        Some(a) if a.ip() == src.ip() => 2,
        _ => 1,
    }
}

#[derive(Debug, Default, Clone)]
struct Endpoint {
    announced: Option<SocketAddr>,
    learned: Option<SocketAddr>,
    /// When the learned source last sent (for handover).
    last_from_learned: Option<Instant>,
    /// Learning window end; None until the first packet after (re-)announcement.
    window_end: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    Yes,
    Moved,
    Refused,
}

impl Endpoint {
    fn announce(&mut self, addr: Option<SocketAddr>) {
        if addr.is_some() && addr != self.announced {
            // New address (first SDP or a re-INVITE that moved): learn again.
            self.learned = None;
            self.window_end = None;
        }
        if addr.is_some() {
            self.announced = addr;
        }
    }

    fn dest(&self) -> Option<SocketAddr> {
        self.learned.or(self.announced)
    }

    fn accept(&mut self, src: SocketAddr, now: Instant, policy: &MediaPolicy) -> Accept {
        let out = match self.learned {
            Some(l) if l == src => Accept::Yes,
            // The announced address is the party, whatever came first.
            _ if Some(src) == self.announced => {
                let moved = self.learned.is_some();
                self.learned = Some(src);
                if moved {
                    Accept::Moved
                } else {
                    Accept::Yes
                }
            }
            None => {
                self.learned = Some(src);
                self.window_end.get_or_insert(now + policy.learning_window);
                Accept::Yes
            }
            // In the learning window, a better match replaces the provisional endpoint at once.
            Some(l) if self.window_end.is_some_and(|w| now < w) && rank(src, self.announced) > rank(l, self.announced) => {
                self.learned = Some(src);
                Accept::Moved
            }
            Some(l) => {
                let quiet = self.last_from_learned.is_none_or(|t| now >= t + policy.handover_after);
                let allowed = match policy.learning {
                    Learning::Strict => false,
                    // A NAT rebinding keeps the IP; an endpoint heard at its announced address
                    // is not behind NAT and does not move.
                    Learning::Heuristic => l.ip() == src.ip() && Some(l) != self.announced,
                    Learning::Handover => true,
                };
                if quiet && allowed {
                    self.learned = Some(src);
                    Accept::Moved
                } else {
                    return Accept::Refused;
                }
            }
        };
        self.last_from_learned = Some(now);
        out
    }
}

#[derive(Debug, Default, Clone)]
struct Leg {
    rtp: Endpoint,
    rtcp: Endpoint,
    /// This side's latest SDP offered or accepted rtcp-mux.
    rtcp_mux: bool,
    /// This side's SDP says it will send (sendrecv/sendonly, real address, port not 0).
    sends: bool,
    on_hold: bool,
    last_rx: Option<Instant>,
    counters: LegCounters,
}

#[derive(Debug, Default, Clone)]
struct Stream {
    legs: [Leg; 2],
    /// The m-line carries RTP (not udptl or another raw protocol).
    rtp: bool,
    /// Either side's m-line has an SRTP profile (SDES or DTLS keys).
    savp: bool,
    /// Each side's latest SDP carried `a=crypto` (best-effort SRTP when both did).
    crypto: [bool; 2],
}

impl Stream {
    /// The payload is ciphertext: an SRTP profile, or SDES keys on both sides.
    fn encrypted(&self) -> bool {
        self.savp || (self.crypto[0] && self.crypto[1])
    }

    /// RTCP goes to `to`'s RTP port only when both sides agreed on rtcp-mux (RFC 5761 §5.1.1);
    /// while only the offer is known, the offerer's wish stands.
    fn mux_towards(&self, to: Party) -> bool {
        let (l, o) = (&self.legs[to.idx()], &self.legs[to.other().idx()]);
        l.rtcp_mux && (o.rtp.announced.is_none() || o.rtcp_mux)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// Every leg sent nothing for the RTP (or hold) timeout.
    RtpTimeout,
    /// This party's leg, which should be sending, sent nothing for the dead-leg timeout.
    DeadLeg(Party),
    /// One side never announced its media within the setup timeout.
    SetupTimeout,
}

impl MediaEvent {
    /// How the call ended, for records, metrics and the control plane.
    pub fn end_reason(self) -> crate::call::EndReason {
        match self {
            MediaEvent::RtpTimeout => crate::call::EndReason::RtpTimeout,
            MediaEvent::DeadLeg(_) => crate::call::EndReason::DeadLeg,
            MediaEvent::SetupTimeout => crate::call::EndReason::SetupTimeout,
        }
    }
}

#[derive(Debug)]
pub struct MediaSession {
    streams: Vec<Stream>,
    /// ICE-lite credentials of the relay side facing each party (`media.ice = "lite"`).
    ice: [Option<crate::media::stun::IceCredentials>; 2],
    policy: MediaPolicy,
    opened_at: Instant,
    /// When both sides had announced media (the timeout clocks start then).
    settled_at: Option<Instant>,
    ended: bool,
}

impl MediaSession {
    pub fn new(policy: MediaPolicy, now: Instant) -> Self {
        MediaSession { streams: Vec::new(), ice: [None, None], policy, opened_at: now, settled_at: None, ended: false }
    }

    /// Act as an ICE-lite agent towards `party` with these credentials (those in the SDP sent to
    /// it): its connectivity checks are answered and prove its address.
    pub fn set_ice(&mut self, party: Party, c: crate::media::stun::IceCredentials) {
        self.ice[party.idx()] = Some(c);
    }

    /// `side` announced its media (SDP offer or answer it sent).
    pub fn handle_remote(&mut self, side: Party, session: &sdp::Session, now: Instant) {
        if self.streams.len() < session.media.len() {
            self.streams.resize_with(session.media.len(), Stream::default);
        }
        for (i, m) in session.media.iter().enumerate() {
            let s = &mut self.streams[i];
            s.rtp = m.proto.contains("RTP");
            s.savp |= m.encrypted();
            s.crypto[side.idx()] = !m.crypto.is_empty();
            let leg = &mut s.legs[side.idx()];
            let rtp = (!m.addr.is_unspecified() && m.port != 0).then(|| SocketAddr::new(m.addr, m.port));
            // Where RTCP goes when it is not multiplexed: an offer of rtcp-mux that is not
            // accepted falls back to the `a=rtcp` port or RTP + 1 (RFC 5761 §5.1.1).
            let rtcp = rtp.map(|a| SocketAddr::new(a.ip(), m.rtcp_port.unwrap_or(m.port.wrapping_add(1))));
            leg.rtp.announce(rtp);
            leg.rtcp.announce(rtcp);
            leg.rtcp_mux = m.rtcp_mux;
            leg.on_hold = m.on_hold();
            leg.sends = rtp.is_some() && matches!(m.direction, sdp::Direction::SendRecv | sdp::Direction::SendOnly);
        }
        if self.settled_at.is_none() && self.streams.iter().any(|s| s.legs.iter().all(|l| l.rtp.announced.is_some())) {
            self.settled_at = Some(now);
        }
    }

    /// Either side's SDP puts the call on hold.
    pub fn on_hold(&self) -> bool {
        self.streams.iter().any(|s| s.legs.iter().any(|l| l.on_hold))
    }

    /// The m-line carries RTP (as opposed to T.38 udptl).
    pub fn is_rtp(&self, stream: usize) -> bool {
        self.streams.get(stream).is_some_and(|s| s.rtp)
    }

    /// The stream's payload is encrypted (SRTP): it is forwarded untouched and never mixed
    /// into; its tapped copies must be decrypted before analysis (SDES keys from the SDP).
    pub fn is_encrypted(&self, stream: usize) -> bool {
        self.streams.get(stream).is_some_and(|s| s.encrypted())
    }

    /// A datagram arrived on our port facing `from_side` (so `from_side` sent it).
    pub fn handle_packet(&mut self, stream: usize, from_side: Party, port: Port, src: SocketAddr, data: &[u8], now: Instant) -> Verdict {
        let policy = &self.policy;
        let ice = self.ice[from_side.idx()].as_ref();
        let Some(s) = self.streams.get_mut(stream) else {
            return Verdict::Drop(DropReason::NoDestination);
        };
        let mux_to_other = s.mux_towards(from_side.other());
        let is_rtp_stream = s.rtp;
        let encrypted = s.encrypted();
        let (leg, other) = {
            let [a, b] = &mut s.legs;
            if from_side == Party::Customer {
                (a, &*b)
            } else {
                (b, &*a)
            }
        };
        // RFC 7983 §7: the first byte tells the protocol.
        #[derive(PartialEq)]
        enum Kind {
            Rtp(RtpHeader),
            Rtcp,
            Dtls,
            Raw,
        }
        let kind = if !is_rtp_stream {
            Kind::Raw
        } else {
            match data.first().copied().unwrap_or(0) {
                0..=3 => {
                    // An authenticated connectivity check (ICE-lite) is answered, and proves the
                    // sender holds the credentials of the SDP we sent it: its address is the
                    // leg's endpoint.
                    let Some(c) = ice else { return drop(leg, DropReason::Stun) };
                    let Ok(resp) = crate::media::stun::answer_check(data, src, c) else { return drop(leg, DropReason::Stun) };
                    let ep = match port {
                        Port::Rtp => &mut leg.rtp,
                        Port::Rtcp => &mut leg.rtcp,
                    };
                    if ep.learned.is_some_and(|l| l != src) {
                        leg.counters.endpoint_moves += 1;
                    }
                    ep.learned = Some(src);
                    ep.last_from_learned = Some(now);
                    ep.window_end.get_or_insert(now);
                    leg.last_rx = Some(now);
                    leg.counters.stun_answered += 1;
                    return Verdict::Reply { stream, side: from_side, port, to: src, data: resp };
                }
                20..=63 => Kind::Dtls,
                128..=191 => {
                    // SRTCP carries its index and tag after the compound packet: only its
                    // header can be checked.
                    let rtcp_type = data.len() >= 2 && (192..=223).contains(&data[1]);
                    let k = match (port, encrypted) {
                        (Port::Rtp, false) => rtp::classify(data),
                        (Port::Rtcp, false) => rtp::check_rtcp(data).map(|_| Packet::Rtcp),
                        (Port::Rtcp, true) => rtp::check_srtcp(data).map(|_| Packet::Rtcp),
                        (Port::Rtp, true) if rtcp_type => rtp::check_srtcp(data).map(|_| Packet::Rtcp),
                        (Port::Rtp, true) => rtp::parse_rtp(data).map(Packet::Rtp),
                    };
                    match k {
                        Ok(Packet::Rtp(h)) => Kind::Rtp(h),
                        Ok(Packet::Rtcp) => Kind::Rtcp,
                        Err(_) => return drop(leg, DropReason::Malformed),
                    }
                }
                _ => return drop(leg, DropReason::Malformed),
            }
        };
        // Nothing is learned before the offer/answer is complete: until this side has announced
        // its media nobody may send from it (early media needs SDP too), and until the other
        // side has, this port was never handed to anyone. Stale streams of calls from before a
        // restart that hit a reused port are dropped here, during the whole ringing time.
        let own = match port {
            Port::Rtp => leg.rtp.announced,
            Port::Rtcp => leg.rtcp.announced,
        };
        if own.is_none() {
            return drop(leg, DropReason::SourceMismatch);
        }
        if other.rtp.announced.is_none() {
            return drop(leg, DropReason::NoDestination);
        }
        // RTCP multiplexed on the RTP port comes from the RTP endpoint.
        let ep = match port {
            Port::Rtp => &mut leg.rtp,
            Port::Rtcp => &mut leg.rtcp,
        };
        match ep.accept(src, now, policy) {
            Accept::Yes => {}
            Accept::Moved => leg.counters.endpoint_moves += 1,
            Accept::Refused => {
                if ep.window_end.is_none_or(|w| now >= w) {
                    leg.counters.moves_refused += 1;
                }
                return drop(leg, DropReason::SourceMismatch);
            }
        }
        leg.last_rx = Some(now);
        let (to, out_port) = match kind {
            Kind::Rtp(_) => {
                leg.counters.rtp_in += 1;
                (other.rtp.dest(), Port::Rtp)
            }
            Kind::Rtcp => {
                leg.counters.rtcp_in += 1;
                if mux_to_other {
                    (other.rtp.dest(), Port::Rtp)
                } else {
                    (other.rtcp.dest(), Port::Rtcp)
                }
            }
            Kind::Dtls => {
                leg.counters.dtls_in += 1;
                (other.rtp.dest(), Port::Rtp)
            }
            Kind::Raw => match port {
                Port::Rtp => (other.rtp.dest(), Port::Rtp),
                Port::Rtcp => (other.rtcp.dest(), Port::Rtcp),
            },
        };
        let Some(to) = to else {
            return drop(leg, DropReason::NoDestination);
        };
        leg.counters.forwarded += 1;
        leg.counters.bytes_forwarded += data.len() as u64;
        let tap = match kind {
            Kind::Rtp(h) => {
                if encrypted {
                    leg.counters.srtp_in += 1;
                }
                Some(h)
            }
            _ => None,
        };
        Verdict::Forward { stream, out_side: from_side.other(), out_port, to, tap }
    }

    fn legs(&self) -> impl Iterator<Item = (Party, &Leg)> {
        self.streams.iter().flat_map(|s| Party::ALL.into_iter().zip(s.legs.iter())).filter(|(_, l)| l.rtp.announced.is_some())
    }

    /// When [`Self::handle_timeout`] next has something to say.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let Some(settled) = self.settled_at else {
            return Some(self.opened_at + self.policy.setup_timeout);
        };
        let hold = self.on_hold();
        let all = if hold { self.policy.hold_timeout } else { self.policy.rtp_timeout };
        let heard = |l: &Leg| l.last_rx.unwrap_or(settled).max(settled);
        // Every leg silent: the latest activity plus the timeout.
        let all_silent = self.legs().map(|(_, l)| heard(l)).max().map(|t| t + all);
        // One leg dead (not while on hold: the held side may send nothing at all).
        let dead =
            if hold { None } else { self.legs().filter(|(_, l)| l.sends).map(|(_, l)| heard(l) + self.policy.dead_leg_timeout).min() };
        match (all_silent, dead) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<MediaEvent> {
        let deadline = self.poll_timeout()?;
        if now < deadline {
            return None;
        }
        let Some(settled) = self.settled_at else {
            self.ended = true;
            return Some(MediaEvent::SetupTimeout);
        };
        let hold = self.on_hold();
        let all = if hold { self.policy.hold_timeout } else { self.policy.rtp_timeout };
        let heard = |l: &Leg| l.last_rx.unwrap_or(settled).max(settled);
        if self.legs().all(|(_, l)| heard(l) + all <= now) {
            self.ended = true;
            return Some(MediaEvent::RtpTimeout);
        }
        if !hold {
            let dead = self.legs().find(|(_, l)| l.sends && heard(l) + self.policy.dead_leg_timeout <= now).map(|(p, _)| p);
            if let Some(p) = dead {
                self.ended = true;
                return Some(MediaEvent::DeadLeg(p));
            }
        }
        None
    }

    pub fn counters(&self, stream: usize, side: Party) -> Option<&LegCounters> {
        self.streams.get(stream).map(|s| &s.legs[side.idx()].counters)
    }
    /// The RTP endpoint learned for a leg (where its packets come from and ours go).
    pub fn latched(&self, stream: usize, side: Party) -> Option<SocketAddr> {
        self.streams.get(stream).and_then(|s| s.legs[side.idx()].rtp.learned)
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
    fn session(t0: Instant) -> MediaSession {
        MediaSession::new(MediaPolicy::default(), t0)
    }
    fn to(v: Verdict) -> Option<SocketAddr> {
        match v {
            Verdict::Forward { to, .. } => Some(to),
            Verdict::Reply { .. } | Verdict::Drop(_) => None,
        }
    }
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn forwards_and_learns_behind_nat() {
        let t0 = Instant::now();
        let mut m = session(t0);
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
        // Agent sends from behind NAT: learned from its first packet, and sent to there.
        m.handle_packet(0, Party::Agent, Port::Rtp, sa("192.0.2.9:7000"), &p, t0);
        assert_eq!(to(m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &p, t0)), Some(sa("192.0.2.9:7000")));
        // After the window, a stranger is dropped.
        let t = t0 + Duration::from_secs(4);
        assert_eq!(m.handle_packet(0, Party::Agent, Port::Rtp, sa("203.0.113.5:1"), &p, t), Verdict::Drop(DropReason::SourceMismatch));
        assert_eq!(
            m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &[0x80, 2, 3], t),
            Verdict::Drop(DropReason::Malformed)
        );
        assert_eq!(m.counters(0, Party::Agent).unwrap().dropped[DropReason::SourceMismatch as usize], 1);
        // A re-INVITE moving the agent re-opens learning.
        m.handle_remote(Party::Agent, &sdp("10.0.0.3", 5002, ""), t);
        assert!(m.latched(0, Party::Agent).is_none());
    }

    /// A stranger's packet reaches the port before the PBX's first RTP: the PBX's own address
    /// (as announced) takes over at once, and the stranger never gets audio again.
    #[test]
    fn stranger_first_is_replaced_by_the_announced_source() {
        let t0 = Instant::now();
        let mut m = session(t0);
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, ""), t0);
        m.handle_remote(Party::Agent, &sdp("10.0.0.2", 5000, ""), t0);
        let p = build(0, 1, 0, 1, &[0; 160]);
        m.handle_packet(0, Party::Customer, Port::Rtp, sa("203.0.113.5:1"), &p, t0);
        assert_eq!(m.latched(0, Party::Customer), Some(sa("203.0.113.5:1")));
        m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &p, t0 + 40 * MS);
        assert_eq!(m.latched(0, Party::Customer), Some(sa("10.0.0.1:4000")));
        assert_eq!(to(m.handle_packet(0, Party::Agent, Port::Rtp, sa("10.0.0.2:5000"), &p, t0 + 60 * MS)), Some(sa("10.0.0.1:4000")));
        assert_eq!(
            m.handle_packet(0, Party::Customer, Port::Rtp, sa("203.0.113.5:1"), &p, t0 + 80 * MS),
            Verdict::Drop(DropReason::SourceMismatch)
        );
        // Even long after the window.
        let late = t0 + Duration::from_secs(10);
        assert_eq!(
            m.handle_packet(0, Party::Customer, Port::Rtp, sa("203.0.113.5:1"), &p, late),
            Verdict::Drop(DropReason::SourceMismatch)
        );
    }

    #[test]
    fn nat_rebinding_is_followed_by_policy() {
        for (policy, follows) in [(Learning::Heuristic, true), (Learning::Strict, false), (Learning::Handover, true)] {
            let t0 = Instant::now();
            let mut m = MediaSession::new(MediaPolicy { learning: policy, ..Default::default() }, t0);
            m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, ""), t0);
            m.handle_remote(Party::Agent, &sdp("192.168.1.5", 5000, ""), t0);
            let p = build(0, 1, 0, 1, &[0; 160]);
            let mut t = t0;
            for _ in 0..200 {
                t += 20 * MS;
                m.handle_packet(0, Party::Agent, Port::Rtp, sa("198.51.100.7:40000"), &p, t);
            }
            // Rebinding: same public IP, new port; the old port goes quiet.
            let mut forwarded = 0;
            for _ in 0..20 {
                t += 20 * MS;
                forwarded += to(m.handle_packet(0, Party::Agent, Port::Rtp, sa("198.51.100.7:40002"), &p, t)).is_some() as usize;
            }
            let c = m.counters(0, Party::Agent).unwrap();
            if follows {
                assert!(forwarded >= 10, "{policy:?}: {forwarded} of 20");
                assert_eq!(c.endpoint_moves, 1, "{policy:?}");
                assert_eq!(m.latched(0, Party::Agent), Some(sa("198.51.100.7:40002")));
            } else {
                assert_eq!(forwarded, 0, "{policy:?}");
                assert_eq!(c.moves_refused, 20);
            }
            // A different IP: only handover follows.
            t += Duration::from_secs(1);
            let v = m.handle_packet(0, Party::Agent, Port::Rtp, sa("203.0.113.9:1"), &p, t);
            assert_eq!(to(v).is_some(), policy == Learning::Handover, "{policy:?}");
        }
    }

    /// rtcp-mux offered by the customer side but not accepted: RTCP to the customer goes to its
    /// RTCP port, not its RTP port.
    #[test]
    fn rtcp_mux_only_when_both_agree() {
        let t0 = Instant::now();
        let mut m = session(t0);
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, "a=rtcp-mux\r\n"), t0);
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        // The answer does not accept rtcp-mux.
        m.handle_remote(Party::Agent, &sdp("10.0.0.2", 5000, ""), t0);
        match m.handle_packet(0, Party::Agent, Port::Rtcp, sa("10.0.0.2:5001"), &rr, t0) {
            Verdict::Forward { to, out_port, tap, .. } => assert_eq!((to, out_port, tap), (sa("10.0.0.1:4001"), Port::Rtcp, None)),
            v => panic!("{v:?}"),
        }
        m.handle_remote(Party::Agent, &sdp("10.0.0.2", 5000, "a=rtcp-mux\r\n"), t0);
        match m.handle_packet(0, Party::Agent, Port::Rtp, sa("10.0.0.2:5000"), &rr, t0) {
            Verdict::Forward { to, out_port, .. } => assert_eq!((to, out_port), (sa("10.0.0.1:4000"), Port::Rtp)),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn one_way_silence_does_not_end_media_but_a_dead_leg_does() {
        let t0 = Instant::now();
        let mut m = session(t0);
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, ""), t0);
        m.handle_remote(Party::Agent, &sdp("10.0.0.2", 5000, ""), t0);
        let p = build(0, 1, 0, 1, &[0; 160]);
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        // The agent is muted: only RTCP every 5 s. The customer talks for two minutes.
        let mut t = t0;
        for k in 0..6000u32 {
            t += 20 * MS;
            m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &p, t);
            if k % 250 == 0 {
                m.handle_packet(0, Party::Agent, Port::Rtcp, sa("10.0.0.2:5001"), &rr, t);
            }
            assert_eq!(m.handle_timeout(t), None, "at {k}");
        }
        // The agent's phone dies: nothing more from it.
        let dead_from = t;
        loop {
            t += 20 * MS;
            m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &p, t);
            if let Some(e) = m.handle_timeout(t) {
                assert_eq!(e, MediaEvent::DeadLeg(Party::Agent));
                let after = t - dead_from;
                assert!(after > Duration::from_secs(25) && after <= Duration::from_secs(30), "{after:?}");
                break;
            }
        }
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn all_silent_ends_media_and_hold_uses_hold_timeout() {
        let t0 = Instant::now();
        let mut m = session(t0);
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, ""), t0);
        m.handle_remote(Party::Agent, &sdp("10.0.0.2", 5000, ""), t0);
        assert_eq!(m.handle_timeout(t0 + Duration::from_secs(29)), None);
        assert_eq!(m.handle_timeout(t0 + Duration::from_secs(30)), Some(MediaEvent::RtpTimeout));

        let mut m = session(t0);
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, "a=sendonly\r\n"), t0);
        m.handle_remote(Party::Agent, &sdp("10.0.0.2", 5000, "a=recvonly\r\n"), t0);
        assert!(m.on_hold());
        assert_eq!(m.handle_timeout(t0 + Duration::from_secs(600)), None);
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, ""), t0);
        assert!(!m.on_hold());
    }

    #[test]
    fn setup_that_never_completes_times_out() {
        let t0 = Instant::now();
        let mut m = session(t0);
        m.handle_remote(Party::Agent, &sdp("10.0.0.2", 5000, ""), t0);
        assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(240)));
        assert_eq!(m.handle_timeout(t0 + Duration::from_secs(240)), Some(MediaEvent::SetupTimeout));
    }

    #[test]
    fn stun_dtls_and_udptl_are_demultiplexed() {
        let t0 = Instant::now();
        let mut m = session(t0);
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, ""), t0);
        m.handle_remote(Party::Agent, &sdp("10.0.0.2", 5000, ""), t0);
        let stun = [0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &stun, t0), Verdict::Drop(DropReason::Stun));
        let dtls = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        match m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &dtls, t0) {
            Verdict::Forward { to, tap, .. } => assert_eq!((to, tap), (sa("10.0.0.2:5000"), None)),
            v => panic!("{v:?}"),
        }
        let t38 = sdp::parse(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=image 4100 udptl t38\r\n").unwrap();
        let mut m = session(t0);
        m.handle_remote(Party::Customer, &t38, t0);
        m.handle_remote(Party::Agent, &sdp::parse(b"v=0\r\nc=IN IP4 10.0.0.2\r\nm=image 5100 udptl t38\r\n").unwrap(), t0);
        assert_eq!(
            to(m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4100"), &[0, 1, 2, 3, 4], t0)),
            Some(sa("10.0.0.2:5100"))
        );
    }

    /// ICE-lite: a connectivity check with our credentials is answered from the port it came
    /// to and makes its source the endpoint; a check without them is dropped.
    #[test]
    fn ice_lite_answers_checks_and_learns_from_them() {
        use crate::media::stun::{binding_request, IceCredentials};
        let t0 = Instant::now();
        let mut m = session(t0);
        let ours = IceCredentials { ufrag: "relayAgt".into(), pwd: "0123456789abcdefghijklmn".into() };
        m.set_ice(Party::Agent, ours.clone());
        m.handle_remote(Party::Customer, &sdp("10.0.0.1", 4000, ""), t0);
        m.handle_remote(Party::Agent, &sdp("192.168.1.5", 5000, ""), t0);
        let check = binding_request([1; 12], "relayAgt:phone", &ours.pwd);
        match m.handle_packet(0, Party::Agent, Port::Rtp, sa("198.51.100.7:40000"), &check, t0) {
            Verdict::Reply { side, port, to, data, .. } => {
                assert_eq!((side, port, to), (Party::Agent, Port::Rtp, sa("198.51.100.7:40000")));
                assert_eq!(&data[0..2], &[0x01, 0x01]);
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(m.latched(0, Party::Agent), Some(sa("198.51.100.7:40000")), "the checked address is the endpoint");
        let p = build(0, 1, 0, 1, &[0; 160]);
        assert_eq!(to(m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &p, t0)), Some(sa("198.51.100.7:40000")));
        let forged = binding_request([2; 12], "relayAgt:phone", "not-the-password");
        assert_eq!(m.handle_packet(0, Party::Agent, Port::Rtp, sa("203.0.113.9:1"), &forged, t0), Verdict::Drop(DropReason::Stun));
        assert_eq!(m.counters(0, Party::Agent).unwrap().stun_answered, 1);
        // No credentials towards the customer: its STUN is dropped.
        assert_eq!(m.handle_packet(0, Party::Customer, Port::Rtp, sa("10.0.0.1:4000"), &check, t0), Verdict::Drop(DropReason::Stun));
    }
}
