//! Media driver: binds relay ports and runs one owner task per call that moves datagrams
//! between the legs according to [`MediaSession`] verdicts. A packet is forwarded first and only
//! then offered to the tap, through a bounded queue: when analysis is behind, the frame is dropped
//! and counted, and the relay never waits. Sends are non-blocking (`try_send_to`).
//!
//! Not here: what the verdicts are (session core), SIP (the SIP driver calls [`MediaManager`]).

use crate::call::{AnalysisCmd, CallId, CallMeta, EndReason, MediaControl, MediaFrame, MediaPlan, OpenError, Party, StreamPorts};
use crate::media::ports::PortPool;
use crate::media::session::{DropReason, MediaEvent, MediaPolicy, MediaSession, Port, Verdict};
pub use crate::media::stats::RelayStats;
use crate::sdp::{self, RelayPorts};
use serde::Serialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A call as shown on /calls: no numbers, URIs or Call-IDs, only the internal id.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CallSnapshot {
    pub id: CallId,
    pub agent_id: String,
    /// How the call's audio arrives (`relay`, `ng`, `siprec`, `twilio`, …).
    pub input: crate::call::Input,
    pub streams: Vec<StreamSnapshot>,
    pub on_hold: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct StreamSnapshot {
    /// Relay ports the customer (PBX) side sends to.
    pub customer_port: u16,
    /// Relay ports the agent side sends to.
    pub agent_port: u16,
    pub customer: LegSnapshot,
    pub agent: LegSnapshot,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct LegSnapshot {
    pub latched: Option<SocketAddr>,
    pub rtp_in: u64,
    pub rtcp_in: u64,
    pub forwarded: u64,
    pub dropped_malformed: u64,
    pub dropped_source_mismatch: u64,
    pub dropped_no_destination: u64,
    pub dropped_stun: u64,
    pub dtls_in: u64,
    pub endpoint_moves: u64,
    pub moves_refused: u64,
}

pub type Registry = Arc<Mutex<HashMap<CallId, CallSnapshot>>>;

enum CallCmd {
    /// `Party`'s SDP, with the call's media plan as the manager has learned it from both sides.
    Remote(Party, Box<(sdp::Session, MediaPlan)>),
    AddStream(usize, Box<StreamSockets>),
    Close(EndReason),
    Cue(Arc<[i16]>),
}

/// Lets the analysis side play an audio cue into a call's agent-bound media.
#[derive(Clone, Default)]
pub struct CueBus(Arc<Mutex<HashMap<CallId, mpsc::UnboundedSender<CallCmd>>>>);

impl CueBus {
    /// Start `cue` on `call`'s agent leg; false if the call has no media (any more).
    pub fn play(&self, call: CallId, cue: Arc<[i16]>) -> bool {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&call).is_some_and(|tx| tx.send(CallCmd::Cue(cue)).is_ok())
    }
    fn add(&self, call: CallId, tx: mpsc::UnboundedSender<CallCmd>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(call, tx);
    }
    fn remove(&self, call: CallId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&call);
    }
}

/// The four sockets of one m-line: [PBX-facing RTP, PBX-facing RTCP, agent-facing RTP, agent-facing RTCP].
pub struct StreamSockets {
    socks: [UdpSocket; 4],
    ports: StreamPorts,
}

fn sock_index(side: Party, port: Port) -> usize {
    side.idx() * 2 + if port == Port::Rtp { 0 } else { 1 }
}

struct CallHandle {
    tx: mpsc::UnboundedSender<CallCmd>,
    /// ICE-lite credentials per facing party (ICE-lite only).
    ice: Option<[crate::media::stun::IceCredentials; 2]>,
    ports: Vec<Option<StreamPorts>>,
    /// What analysis is told after each offer/answer.
    plan: MediaPlan,
}

#[derive(Clone)]
pub struct MediaSettings {
    /// Address the relay ports facing each party are bound on (one interface or two).
    pub bind: [IpAddr; 2],
    pub policy: MediaPolicy,
    /// Concurrent calls (0: as many as the port range holds).
    pub max_calls: usize,
    /// m-lines one call may have.
    pub max_streams: usize,
    /// Act as an ICE-lite agent (`media.ice = "lite"`).
    pub ice_lite: bool,
}

/// Owns port allocation and the call tasks; driven by the SIP driver through [`MediaControl`].
pub struct MediaManager {
    settings: MediaSettings,
    pool: Arc<Mutex<PortPool>>,
    calls: HashMap<CallId, CallHandle>,
    tap: mpsc::Sender<MediaFrame>,
    stats: Arc<RelayStats>,
    ended: mpsc::UnboundedSender<(CallId, EndReason)>,
    pub registry: Registry,
    analysis: std::sync::mpsc::Sender<AnalysisCmd>,
    pub cues: CueBus,
}

impl MediaManager {
    pub fn new(
        settings: MediaSettings,
        pool: Arc<Mutex<PortPool>>,
        tap: mpsc::Sender<MediaFrame>,
        stats: Arc<RelayStats>,
        ended: mpsc::UnboundedSender<(CallId, EndReason)>,
        analysis: std::sync::mpsc::Sender<AnalysisCmd>,
        cues: CueBus,
    ) -> Self {
        MediaManager { settings, pool, calls: HashMap::new(), tap, stats, ended, registry: Default::default(), analysis, cues }
    }

    fn take_pair(&self, taken: &mut Vec<u16>, side: Party) -> Option<(u16, UdpSocket, UdpSocket)> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let pair = take_bound_pair(&mut pool, self.settings.bind[side.idx()], Instant::now())?;
        taken.push(pair.0);
        Some(pair)
    }

    fn allocate_stream(&self) -> Result<StreamSockets, OpenError> {
        let mut taken = Vec::new();
        let pbx = self.take_pair(&mut taken, Party::Customer);
        let agent = if pbx.is_some() { self.take_pair(&mut taken, Party::Agent) } else { None };
        match (pbx, agent) {
            (Some((pp, pr, pc)), Some((ap, ar, ac))) => Ok(StreamSockets {
                socks: [pr, pc, ar, ac],
                ports: StreamPorts { customer: RelayPorts { rtp: pp, rtcp: pp + 1 }, agent: RelayPorts { rtp: ap, rtcp: ap + 1 } },
            }),
            _ => {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                for p in taken {
                    pool.release(p, now);
                }
                Err(OpenError::PortsExhausted)
            }
        }
    }
}

/// Bind one port pair on `ip`: RTP on `p`, RTCP on `p + 1`.
pub fn bind_pair(ip: IpAddr, p: u16) -> Option<(UdpSocket, UdpSocket)> {
    let bind = |port| -> std::io::Result<UdpSocket> {
        let s = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
        s.set_nonblocking(true)?;
        UdpSocket::from_std(s)
    };
    Some((bind(p).ok()?, bind(p + 1).ok()?))
}

/// Take a port pair from `pool` and bind it on `ip`: pairs someone else holds are left for
/// later (skipped), and None when the pool has no pair left to try.
pub fn take_bound_pair(pool: &mut PortPool, ip: IpAddr, now: Instant) -> Option<(u16, UdpSocket, UdpSocket)> {
    for _ in 0..pool.capacity() {
        let p = pool.take(now)?;
        match bind_pair(ip, p) {
            Some((a, b)) => return Some((p, a, b)),
            None => pool.skip(p, now),
        }
    }
    None
}

impl MediaControl for MediaManager {
    fn open(&mut self, call: CallId, meta: &CallMeta, active: &[bool]) -> Result<Vec<Option<StreamPorts>>, OpenError> {
        let agent_id = meta.agent_id.as_str();
        if active.len() > self.settings.max_streams {
            return Err(OpenError::TooManyStreams);
        }
        if !self.calls.contains_key(&call) && self.settings.max_calls > 0 && self.calls.len() >= self.settings.max_calls {
            return Err(OpenError::TooManyCalls);
        }
        let have: Vec<bool> = self.calls.get(&call).map_or_else(Vec::new, |c| c.ports.iter().map(Option::is_some).collect());
        let mut new = Vec::new();
        // Ports only for m-lines that are active and have none yet (port 0 streams get none).
        for (i, on) in active.iter().enumerate() {
            if !*on || have.get(i).copied().unwrap_or(false) {
                continue;
            }
            match self.allocate_stream() {
                Ok(s) => new.push((i, s)),
                Err(e) => {
                    // Give back what this round took; dropping the sockets closes them.
                    let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                    let now = Instant::now();
                    for (_, s) in new {
                        pool.release(s.ports.customer.rtp, now);
                        pool.release(s.ports.agent.rtp, now);
                    }
                    return Err(e);
                }
            }
        }
        if !self.calls.contains_key(&call) {
            let (tx, rx) = mpsc::unbounded_channel();
            self.cues.add(call, tx.clone());
            let ice = self
                .settings
                .ice_lite
                .then(|| [crate::media::stun::IceCredentials::random(), crate::media::stun::IceCredentials::random()]);
            let mut session = MediaSession::new(self.settings.policy.clone(), Instant::now());
            if let Some(c) = &ice {
                for p in Party::ALL {
                    session.set_ice(p, c[p.idx()].clone());
                }
            }
            let task = CallTask {
                id: call,
                streams: Vec::new(),
                plan: MediaPlan::default(),
                cue: None,
                session,
                tap: self.tap.clone(),
                stats: self.stats.clone(),
                pool: self.pool.clone(),
                registry: self.registry.clone(),
                ended: self.ended.clone(),
                published_moves: (0, 0),
            };
            self.registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(call, CallSnapshot { id: call, agent_id: agent_id.to_string(), ..Default::default() });
            self.stats.active_calls.fetch_add(1, Relaxed);
            let _ = self.analysis.send(AnalysisCmd::Start { call, meta: meta.clone() });
            let span = tracing::info_span!("call", id = %call, agent = %agent_id);
            tokio::spawn(tracing::Instrument::instrument(task.run(rx), span));
            self.calls.insert(call, CallHandle { tx, ice, ports: Vec::new(), plan: MediaPlan::default() });
        }
        let h = self.calls.get_mut(&call).expect("inserted above");
        if h.ports.len() < active.len() {
            h.ports.resize(active.len(), None);
        }
        for (i, s) in new {
            h.ports[i] = Some(s.ports);
            let _ = h.tx.send(CallCmd::AddStream(i, Box::new(s)));
        }
        Ok(h.ports.clone())
    }

    fn remote(&mut self, call: CallId, side: Party, session: &sdp::Session) {
        if let Some(h) = self.calls.get_mut(&call) {
            h.plan.learn(side, session);
            let _ = h.tx.send(CallCmd::Remote(side, Box::new((session.clone(), h.plan.clone()))));
            let _ = self.analysis.send(AnalysisCmd::Negotiated { call, plan: h.plan.clone() });
        }
    }

    fn ice(&self, call: CallId, party: Party) -> Option<crate::media::stun::IceCredentials> {
        self.calls.get(&call).and_then(|h| h.ice.as_ref()).map(|c| c[party.idx()].clone())
    }

    fn close(&mut self, call: CallId, reason: EndReason) {
        if let Some(h) = self.calls.remove(&call) {
            self.cues.remove(call);
            let _ = h.tx.send(CallCmd::Close(reason));
            let _ = self.analysis.send(AnalysisCmd::End { call, reason });
        }
    }
}

impl MediaManager {
    /// The call task ended by itself (media timeout, dead leg): forget its handle.
    pub fn forget(&mut self, call: CallId, reason: EndReason) {
        if self.calls.remove(&call).is_some() {
            self.cues.remove(call);
            let _ = self.analysis.send(AnalysisCmd::End { call, reason });
        }
    }
}

struct CallTask {
    id: CallId,
    /// Sockets per m-line (None for a disabled stream).
    streams: Vec<Option<StreamSockets>>,
    /// Payload types per stream (for the cue, which must know the codec it mixes into).
    plan: MediaPlan,
    cue: Option<crate::media::cue::CueMixer>,
    session: MediaSession,
    tap: mpsc::Sender<MediaFrame>,
    stats: Arc<RelayStats>,
    pool: Arc<Mutex<PortPool>>,
    registry: Registry,
    ended: mpsc::UnboundedSender<(CallId, EndReason)>,
    /// Endpoint moves and refusals already added to the relay-wide counters.
    published_moves: (u64, u64),
}

impl CallTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<CallCmd>) {
        let mut buf = vec![0u8; 2048];
        let mut snapshot = tokio::time::interval(Duration::from_millis(500));
        let mut reason = EndReason::Closed;
        let mut start = 0usize;
        // The RTP-timeout timer is armed lazily: the deadline moves with every packet, but the
        // timer is only re-armed when it fires (then the session decides whether it really
        // expired) or when the deadline moves earlier — not once per packet.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            let deadline = self.session.poll_timeout();
            if let Some(d) = deadline {
                if armed.is_none_or(|a| d < a) {
                    timer.as_mut().reset(tokio::time::Instant::from_std(d));
                    armed = Some(d);
                }
            } else {
                armed = None;
            }
            tokio::select! {
                cmd = rx.recv() => {
                    match cmd {
                        Some(CallCmd::Remote(side, r)) => {
                            let (s, plan) = *r;
                            self.plan = plan;
                            self.session.handle_remote(side, &s, Instant::now())
                        }
                        Some(CallCmd::Cue(c)) => self.cue = Some(crate::media::cue::CueMixer::new(c)),
                        Some(CallCmd::AddStream(i, s)) => {
                            if self.streams.len() <= i {
                                self.streams.resize_with(i + 1, || None);
                            }
                            self.streams[i] = Some(*s);
                        }
                        Some(CallCmd::Close(r)) => { reason = r; break }
                        None => break,
                    }
                    // /calls shows a new stream or SDP at once, not at the next periodic snapshot.
                    self.publish();
                }
                (i, n, src) = recv_any(&self.streams, &mut buf, &mut start) => {
                    self.handle_datagram(i, &buf[..n], src);
                }
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    if let Some(ev) = self.session.handle_timeout(Instant::now()) {
                        match ev {
                            MediaEvent::RtpTimeout => {
                                tracing::info!("no media on any leg for the rtp timeout, media session ended");
                                self.stats.rtp_timeouts.fetch_add(1, Relaxed);
                            }
                            MediaEvent::DeadLeg(side) => {
                                tracing::info!(leg = side.name(), "leg sent nothing for the dead-leg timeout, media session ended");
                                self.stats.dead_legs.fetch_add(1, Relaxed);
                            }
                            MediaEvent::SetupTimeout => {
                                tracing::info!("offer/answer never completed, media session ended");
                                self.stats.setup_timeouts.fetch_add(1, Relaxed);
                            }
                        }
                        reason = ev.end_reason();
                        let _ = self.ended.send((self.id, reason));
                        break;
                    }
                }
                _ = snapshot.tick() => self.publish(),
            }
        }
        self.publish();
        tracing::debug!(reason = reason.label(), "media session closed");
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
        let ports: Vec<StreamPorts> = self.streams.iter().flatten().map(|s| s.ports).collect();
        // Close the sockets before the ports go back to the pool.
        self.streams.clear();
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for p in ports {
            pool.release(p.customer.rtp, now);
            pool.release(p.agent.rtp, now);
        }
        self.stats.active_calls.fetch_sub(1, Relaxed);
    }

    fn handle_datagram(&mut self, i: usize, data: &[u8], src: SocketAddr) {
        let (stream, sock) = (i / 4, i % 4);
        let side = if sock < 2 { Party::Customer } else { Party::Agent };
        let port = if sock % 2 == 0 { Port::Rtp } else { Port::Rtcp };
        let now = Instant::now();
        match self.session.handle_packet(stream, side, port, src, data, now) {
            Verdict::Forward { stream, out_side, out_port, to, tap } => {
                let Some(out) = self.streams.get(stream).and_then(Option::as_ref).map(|s| &s.socks[sock_index(out_side, out_port)]) else {
                    return;
                };
                // SRTP: nothing is mixed into the ciphertext (its authentication would break);
                // the tapped copy is decrypted by analysis.
                let encrypted = self.session.is_encrypted(stream);
                if encrypted && tap.is_some() {
                    self.stats.srtp_packets.fetch_add(1, Relaxed);
                    if self.cue.take().is_some() {
                        tracing::info!("audio cue not played: the agent leg is SRTP");
                        self.stats.cues_skipped_srtp.fetch_add(1, Relaxed);
                    }
                }
                // The cue goes into agent-bound RTP only; everything else is sent as received.
                let mixed = match (&mut self.cue, out_side, tap) {
                    (Some(mixer), Party::Agent, Some(h)) => {
                        let payload = &data[h.payload_offset..h.payload_offset + h.payload_len];
                        let codec =
                            self.plan.streams.get(stream).map_or(crate::codec::Codec::Unknown, |p| p.payloads.codec(h.payload_type));
                        let new = mixer.mix(codec, payload).map(|p| {
                            let mut pkt = data[..h.payload_offset].to_vec();
                            pkt[0] &= !0x20; // the new payload carries no padding
                            pkt.extend_from_slice(&p);
                            pkt
                        });
                        if mixer.done() {
                            self.cue = None;
                        }
                        new
                    }
                    _ => None,
                };
                let data_out: &[u8] = mixed.as_deref().unwrap_or(data);
                match out.try_send_to(data_out, to) {
                    Ok(_) => {
                        self.stats.forwarded_packets.fetch_add(1, Relaxed);
                        self.stats.forwarded_bytes.fetch_add(data_out.len() as u64, Relaxed);
                    }
                    Err(_) => {
                        self.stats.send_errors.fetch_add(1, Relaxed);
                    }
                }
                // Forwarded first; now the tap, which never waits.
                if let Some(header) = tap {
                    match self.tap.try_reserve() {
                        Ok(permit) => {
                            permit.send(MediaFrame {
                                call: self.id,
                                party: side,
                                stream,
                                arrival: now,
                                header,
                                packet: data.to_vec(),
                                encrypted,
                            });
                            self.stats.tap_frames.fetch_add(1, Relaxed);
                        }
                        Err(_) => {
                            self.stats.tap_dropped.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
            Verdict::Reply { stream, side, port, to, data } => {
                if let Some(s) = self.streams.get(stream).and_then(Option::as_ref) {
                    match s.socks[sock_index(side, port)].try_send_to(&data, to) {
                        Ok(_) => self.stats.stun_answered.fetch_add(1, Relaxed),
                        Err(_) => self.stats.send_errors.fetch_add(1, Relaxed),
                    };
                }
            }
            Verdict::Drop(r) => {
                self.stats.dropped[r as usize].fetch_add(1, Relaxed);
                tracing::trace!(reason = r.label(), %src, "media packet dropped");
            }
        }
    }

    fn publish(&mut self) {
        // Endpoint moves into the relay-wide counters (deltas since the last publish).
        let (mut moves, mut refused) = (0, 0);
        for i in 0..self.streams.len() {
            for side in Party::ALL {
                if let Some(c) = self.session.counters(i, side) {
                    moves += c.endpoint_moves;
                    refused += c.moves_refused;
                }
            }
        }
        self.stats.endpoint_moves.fetch_add(moves - self.published_moves.0, Relaxed);
        self.stats.moves_refused.fetch_add(refused - self.published_moves.1, Relaxed);
        self.published_moves = (moves, refused);
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let Some(snap) = reg.get_mut(&self.id) else {
            return;
        };
        snap.on_hold = self.session.on_hold();
        snap.streams = self
            .streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
            .map(|(i, s)| {
                let leg = |side| {
                    let c = self.session.counters(i, side).cloned().unwrap_or_default();
                    LegSnapshot {
                        latched: self.session.latched(i, side),
                        rtp_in: c.rtp_in,
                        rtcp_in: c.rtcp_in,
                        forwarded: c.forwarded,
                        dropped_malformed: c.dropped[DropReason::Malformed as usize],
                        dropped_source_mismatch: c.dropped[DropReason::SourceMismatch as usize],
                        dropped_no_destination: c.dropped[DropReason::NoDestination as usize],
                        dropped_stun: c.dropped[DropReason::Stun as usize],
                        dtls_in: c.dtls_in,
                        endpoint_moves: c.endpoint_moves,
                        moves_refused: c.moves_refused,
                    }
                };
                StreamSnapshot {
                    customer_port: s.ports.customer.rtp,
                    agent_port: s.ports.agent.rtp,
                    customer: leg(Party::Customer),
                    agent: leg(Party::Agent),
                }
            })
            .collect();
    }
}

/// Receive from whichever socket of the call is ready, starting the scan at a rotating index so
/// one busy socket cannot starve the others. Returns (socket index, length, source).
async fn recv_any(streams: &[Option<StreamSockets>], buf: &mut [u8], start: &mut usize) -> (usize, usize, SocketAddr) {
    std::future::poll_fn(|cx| {
        let total = streams.len() * 4;
        for k in 0..total {
            let i = (*start + k) % total;
            let Some(s) = &streams[i / 4] else { continue };
            let mut rb = ReadBuf::new(buf);
            match s.socks[i % 4].poll_recv_from(cx, &mut rb) {
                Poll::Ready(Ok(src)) => {
                    *start = i + 1;
                    return Poll::Ready((i, rb.filled().len(), src));
                }
                // ICMP port unreachable and the like: ignore, and poll again soon so this socket's
                // waker is registered.
                Poll::Ready(Err(_)) => cx.waker().wake_by_ref(),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}
