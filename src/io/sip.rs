//! SIP driver: the UDP socket and TCP listener, stream framing by Content-Length (RFC 3261
//! §18.3), name resolution, and one task that owns the [`Proxy`] core and the [`MediaManager`].
//!
//! Not here: SIP logic (the proxy core), media forwarding (the call tasks).

use crate::io::media::MediaManager;
use crate::sip::message::{content_length, header_end, Message, MAX_MESSAGE};
use crate::sip::proxy::{Action, Dest, Peer, Proxy, Target, Transport};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

enum Event {
    Message {
        data: Vec<u8>,
        peer: Peer,
    },
    ConnUp {
        id: u64,
        addr: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    ConnDown {
        id: u64,
    },
    Resolved {
        target: Target,
        addr: Option<SocketAddr>,
        data: Vec<u8>,
    },
    /// A message could not be sent: its next hop did not resolve or a TCP connect failed.
    Unreachable {
        data: Vec<u8>,
    },
}

/// The control-plane task: the SIP proxy (when enabled) and the ng server (when configured)
/// share one media plane, so one task owns both and the [`MediaManager`].
pub struct SipDriver {
    pub proxy: Proxy,
    pub media: MediaManager,
    /// SIP sockets; None when `sip.enabled = false` (ng only).
    pub udp: Option<Arc<UdpSocket>>,
    pub tcp: Option<TcpListener>,
    /// The agent side's own listener (`sip.agents_listen`): what goes to agents leaves from it.
    pub agents_udp: Option<Arc<UdpSocket>>,
    pub agents_tcp: Option<TcpListener>,
    /// Who the PBX is, to pick the socket a datagram leaves from.
    pub pbx_sources: Vec<crate::net::SourcePattern>,
    pub ng: Option<NgDriver>,
    /// The SIPREC recording server, when on.
    pub srs: Option<SrsDriver>,
    /// SIP over TLS for recording clients (`siprec.tls_listen`, mutual TLS when configured).
    pub tls: Option<(TcpListener, std::sync::Arc<rustls::ServerConfig>)>,
    /// SIP over TLS for phones and PBXs (`sip.tls_listen`).
    pub proxy_tls: Option<(TcpListener, std::sync::Arc<rustls::ServerConfig>)>,
    /// Verifies next hops Hearken connects to over TLS (`sip.tls_ca`); None: no such connections.
    pub tls_client: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub limits: ConnLimits,
    pub media_ended: mpsc::UnboundedReceiver<(crate::call::CallId, crate::call::EndReason)>,
}

/// The SIPREC recording server: its SIP core, its receive side, and the sessions whose media
/// timed out.
pub struct SrsDriver {
    pub core: crate::siprec::core::SrsCore,
    pub rec: crate::io::siprec::RecorderDriver,
    pub timeouts: mpsc::UnboundedReceiver<u64>,
}

/// The ng socket, its core and who may send commands.
pub struct NgDriver {
    pub sock: UdpSocket,
    pub core: crate::ng::core::NgCore,
    pub allow: Vec<crate::net::SourcePattern>,
    /// Where media timeouts are reported (XML-RPC `dlg.terminate_dlg`, rtpengine's b2b-url).
    pub teardown_url: Option<String>,
}

async fn recv_opt(s: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn recv_timeout(s: Option<&mut SrsDriver>) -> Option<u64> {
    match s {
        Some(s) => s.timeouts.recv().await,
        None => std::future::pending().await,
    }
}

/// Accept on `l` (never, without one), not before `pause` (set after an accept error, so a
/// listener out of descriptors backs off instead of spinning).
async fn accept_opt(l: Option<&TcpListener>, pause: Option<tokio::time::Instant>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => {
            if let Some(p) = pause {
                tokio::time::sleep_until(p).await;
            }
            l.accept().await
        }
        None => std::future::pending().await,
    }
}

/// Bounds on SIP connections: how many at once, and how long one may stay silent.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub idle: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits { max_connections: 1000, idle: Duration::from_secs(600) }
    }
}

struct State {
    tx: mpsc::Sender<Event>,
    agents_udp: Option<Arc<UdpSocket>>,
    pbx_sources: Vec<crate::net::SourcePattern>,
    tls_client: Option<Arc<rustls::ClientConfig>>,
    conns: HashMap<u64, mpsc::Sender<Vec<u8>>>,
    by_addr: HashMap<SocketAddr, u64>,
    next_conn: Arc<AtomicU64>,
    udp: Option<Arc<UdpSocket>>,
}

impl SipDriver {
    pub async fn run(mut self) {
        let (tx, mut rx) = mpsc::channel::<Event>(4096);
        let next_conn = Arc::new(AtomicU64::new(1));
        let mut st = State {
            tx: tx.clone(),
            agents_udp: self.agents_udp.clone(),
            pbx_sources: self.pbx_sources.clone(),
            tls_client: self.tls_client.clone(),
            conns: HashMap::new(),
            by_addr: HashMap::new(),
            next_conn: next_conn.clone(),
            udp: self.udp.clone(),
        };
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut agents_buf = vec![0u8; if self.agents_udp.is_some() { MAX_MESSAGE } else { 0 }];
        // Connections open now (TCP and TLS), and when accepting may resume after an error.
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut accept_pause: Option<tokio::time::Instant> = None;
        let limits = self.limits;
        let stats = self.proxy.stats.clone();
        let mut ng_buf = vec![0u8; 65536];
        // The proxy's next transaction deadline; a far-off sleep when it has none.
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        loop {
            let mut next = self.proxy.poll_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            if let Some(t) = self.srs.as_ref().and_then(|s| s.core.poll_timeout()) {
                next = next.min(t);
            }
            if let Some(ng) = &self.ng {
                // Delete delays, and a regular sweep of the reply cache.
                next = next.min(ng.core.poll_timeout().unwrap_or(next)).min(Instant::now() + Duration::from_secs(5));
            }
            if timer.deadline() != tokio::time::Instant::from_std(next) {
                timer.as_mut().reset(tokio::time::Instant::from_std(next));
            }
            tokio::select! {
                r = recv_opt(self.udp.as_deref(), &mut buf) => {
                    let Ok((n, src)) = r else { continue };
                    let peer = Peer { addr: src, transport: Transport::Udp, conn: None };
                    let data = buf[..n].to_vec();
                    self.handle_bytes(&data, peer, &mut st);
                }
                r = recv_opt(self.agents_udp.as_deref(), &mut agents_buf) => {
                    let Ok((n, src)) = r else { continue };
                    let peer = Peer { addr: src, transport: Transport::Udp, conn: None };
                    let data = agents_buf[..n].to_vec();
                    self.handle_bytes(&data, peer, &mut st);
                }
                r = recv_opt(self.ng.as_ref().map(|n| &n.sock), &mut ng_buf) => {
                    let Ok((n, src)) = r else { continue };
                    if let Some(ng) = self.ng.as_mut() {
                        if !ng.allow.iter().any(|p| p.matches(src)) {
                            ng.core.stats.refused.fetch_add(1, Relaxed);
                            tracing::debug!(source = %src.ip(), "ng command from a source not in ng.allow, dropped");
                            continue;
                        }
                        let unix = crate::sys::unix_now_s() as u64;
                        if let Some(reply) = ng.core.handle_datagram(&ng_buf[..n], src, Instant::now(), unix, &mut self.media) {
                            let _ = ng.sock.try_send_to(&reply, src);
                        }
                    }
                }
                a = accept_opt(self.tcp.as_ref(), accept_pause) => {
                    tcp_accepted(a, &mut accept_pause, &open, limits, &stats, &tx, &next_conn, &mut st);
                }
                a = accept_opt(self.agents_tcp.as_ref(), accept_pause) => {
                    tcp_accepted(a, &mut accept_pause, &open, limits, &stats, &tx, &next_conn, &mut st);
                }
                a = accept_opt(self.tls.as_ref().map(|t| &t.0), accept_pause) => {
                    if let Some((_, cfg)) = self.tls.as_ref() {
                        tls_accepted(a, &mut accept_pause, cfg, &open, limits, &stats, &tx, &next_conn);
                    }
                }
                a = accept_opt(self.proxy_tls.as_ref().map(|t| &t.0), accept_pause) => {
                    if let Some((_, cfg)) = self.proxy_tls.as_ref() {
                        tls_accepted(a, &mut accept_pause, cfg, &open, limits, &stats, &tx, &next_conn);
                    }
                }
                Some(ev) = rx.recv() => match ev {
                    Event::Message { data, peer } => self.handle_bytes(&data, peer, &mut st),
                    Event::ConnUp { id, addr, writer } => { st.conns.insert(id, writer); st.by_addr.insert(addr, id); }
                    Event::ConnDown { id } => { st.conns.remove(&id); st.by_addr.retain(|_, v| *v != id); }
                    Event::Resolved { target, addr, data } => match addr {
                        Some(a) => send_to_addr(&mut st, a, target.transport, None, Some(&target.host), data),
                        None => {
                            tracing::debug!("next hop did not resolve");
                            let actions = self.proxy.handle_unreachable(&data, Instant::now(), &mut self.media);
                            self.send_actions(actions, &mut st);
                        }
                    },
                    Event::Unreachable { data } => {
                        let actions = self.proxy.handle_unreachable(&data, Instant::now(), &mut self.media);
                        self.send_actions(actions, &mut st);
                    }
                },
                Some(rs) = recv_timeout(self.srs.as_mut()) => {
                    if let Some(srs) = self.srs.as_mut() {
                        let actions = srs.core.handle_media_timeout(rs, &mut srs.rec);
                        self.send_actions(actions, &mut st);
                    }
                }
                Some((id, reason)) = self.media_ended.recv() => {
                    self.media.forget(id, reason);
                    let ended = self.ng.as_mut().and_then(|n| n.core.handle_media_ended(id).map(|d| (d, n.teardown_url.clone(), n.core.stats.clone())));
                    if let Some(((call_id, from_tag, to_tag), url, stats)) = ended {
                        // Tell Kamailio, as rtpengine's b2b-url does, so it BYEs both parties.
                        if let Some(url) = url {
                            if let Some((hp, req)) = crate::ng::core::terminate_dlg_request(&url, &call_id, &from_tag, &to_tag) {
                                tokio::spawn(async move {
                                    let r = tokio::time::timeout(Duration::from_secs(3), async {
                                        let mut s = TcpStream::connect(&hp).await?;
                                        s.write_all(&req).await?;
                                        // Kamailio keeps the connection open: read one response
                                        // (headers, then Content-Length bytes).
                                        let mut resp = Vec::new();
                                        let mut chunk = [0u8; 4096];
                                        loop {
                                            let n = s.read(&mut chunk).await?;
                                            resp.extend_from_slice(&chunk[..n]);
                                            let text = String::from_utf8_lossy(&resp);
                                            if let Some(h) = text.find("\r\n\r\n") {
                                                let len = text[..h]
                                                    .lines()
                                                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                                                    .unwrap_or(0);
                                                if resp.len() >= h + 4 + len {
                                                    break;
                                                }
                                            }
                                            if n == 0 || resp.len() > 65536 {
                                                break;
                                            }
                                        }
                                        Ok::<Vec<u8>, std::io::Error>(resp)
                                    })
                                    .await;
                                    match r {
                                        Ok(Ok(resp)) if resp.starts_with(b"HTTP/1.") && resp.get(9..12) == Some(b"200") && !resp.windows(5).any(|w| w == b"fault") => {
                                            stats.teardowns.fetch_add(1, Relaxed);
                                        }
                                        other => {
                                            stats.teardown_errors.fetch_add(1, Relaxed);
                                            tracing::warn!(ok = other.is_ok(), "teardown callback (dlg.terminate_dlg) failed");
                                        }
                                    }
                                });
                            }
                        }
                    } else {
                        let actions = self.proxy.handle_media_ended(id, reason, Instant::now());
                        self.send_actions(actions, &mut st);
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    let actions = self.proxy.handle_timeout(now, &mut self.media);
                    self.send_actions(actions, &mut st);
                    if let Some(srs) = self.srs.as_mut() {
                        let actions = srs.core.handle_timeout(now, &mut srs.rec);
                        self.send_actions(actions, &mut st);
                    }
                    if let Some(ng) = self.ng.as_mut() {
                        ng.core.handle_timeout(now, &mut self.media);
                    }
                }
            }
        }
    }

    fn handle_bytes(&mut self, data: &[u8], peer: Peer, st: &mut State) {
        // Keep-alives (RFC 5626 §3.5.1): CRLF pings are not messages.
        if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
            return;
        }
        let actions = match Message::parse(data) {
            Ok(msg) => match self.srs.as_mut() {
                Some(srs) if srs.core.claims(&msg, &peer) => srs.core.handle_message(msg, peer, Instant::now(), &mut srs.rec),
                _ => self.proxy.handle_message(msg, peer, Instant::now(), &mut self.media),
            },
            Err(e) => {
                tracing::debug!(error = %e, transport = ?peer.transport, "malformed SIP message");
                self.proxy.handle_malformed(data, peer, &e.to_string())
            }
        };
        self.send_actions(actions, st);
    }

    fn send_actions(&mut self, actions: Vec<Action>, st: &mut State) {
        for Action::Send { to, data } in actions {
            match to {
                Dest::Peer(p) => send_to_addr(st, p.addr, p.transport, p.conn, None, data),
                Dest::Target(t) => match t.host.trim_matches(['[', ']']).parse() {
                    Ok(ip) => send_to_addr(st, SocketAddr::new(ip, t.port), t.transport, None, None, data),
                    Err(_) => {
                        let tx = st.tx.clone();
                        tokio::spawn(async move {
                            let addr = tokio::net::lookup_host((t.host.as_str(), t.port)).await.ok().and_then(|mut i| i.next());
                            let _ = tx.send(Event::Resolved { target: t, addr, data }).await;
                        });
                    }
                },
            }
        }
    }
}

/// A TCP connection accepted on a SIP listener: over the cap it is closed at once; an accept
/// error pauses accepting 100 ms (a listener out of descriptors must not spin).
#[allow(clippy::too_many_arguments)]
fn tcp_accepted(
    a: std::io::Result<(TcpStream, SocketAddr)>,
    pause: &mut Option<tokio::time::Instant>,
    open: &Arc<std::sync::atomic::AtomicUsize>,
    limits: ConnLimits,
    stats: &Arc<crate::sip::proxy::SipStats>,
    tx: &mpsc::Sender<Event>,
    next_conn: &Arc<AtomicU64>,
    st: &mut State,
) {
    *pause = None;
    match a {
        Err(e) => {
            stats.accept_errors.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "SIP TCP accept failed; pausing accepts 100 ms");
            *pause = Some(tokio::time::Instant::now() + Duration::from_millis(100));
        }
        // Dropping the stream closes it: descriptors stay for calls' media.
        Ok(_) if open.load(Relaxed) >= limits.max_connections => {
            stats.connections_refused.fetch_add(1, Relaxed);
        }
        Ok((stream, addr)) => {
            let id = next_conn.fetch_add(1, Relaxed);
            let _ = stream.set_nodelay(true);
            let writer = spawn_conn(stream, addr, Transport::Tcp, id, tx.clone(), Some((open.clone(), limits.idle, stats.clone())));
            st.conns.insert(id, writer);
            st.by_addr.insert(addr, id);
        }
    }
}

/// A TLS connection accepted on one of the SIP TLS listeners: the handshake runs on its own
/// task (5 s at most) and the connection joins once it is up (a client without a valid
/// certificate, when one is required, never gets that far).
#[allow(clippy::too_many_arguments)]
fn tls_accepted(
    a: std::io::Result<(TcpStream, SocketAddr)>,
    pause: &mut Option<tokio::time::Instant>,
    cfg: &Arc<rustls::ServerConfig>,
    open: &Arc<std::sync::atomic::AtomicUsize>,
    limits: ConnLimits,
    stats: &Arc<crate::sip::proxy::SipStats>,
    tx: &mpsc::Sender<Event>,
    next_conn: &Arc<AtomicU64>,
) {
    *pause = None;
    let (stream, addr) = match a {
        Ok(x) => x,
        Err(e) => {
            stats.accept_errors.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "SIP TLS accept failed; pausing accepts 100 ms");
            *pause = Some(tokio::time::Instant::now() + Duration::from_millis(100));
            return;
        }
    };
    if open.load(Relaxed) >= limits.max_connections {
        stats.connections_refused.fetch_add(1, Relaxed);
        return;
    }
    // A connection still in its handshake holds a place too (handshakes are slow to fail).
    open.fetch_add(1, Relaxed);
    let (acceptor, tx, id) = (tokio_rustls::TlsAcceptor::from(cfg.clone()), tx.clone(), next_conn.fetch_add(1, Relaxed));
    let guard = (open.clone(), limits.idle, stats.clone());
    tokio::spawn(async move {
        let _ = stream.set_nodelay(true);
        let r = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await;
        // spawn_conn takes the place again for the connection's life.
        guard.0.fetch_sub(1, Relaxed);
        match r {
            Ok(Ok(tls)) => {
                let writer = spawn_conn(tls, addr, Transport::Tls, id, tx.clone(), Some(guard));
                let _ = tx.send(Event::ConnUp { id, addr, writer }).await;
            }
            _ => tracing::info!(source = %addr.ip(), "SIP over TLS: handshake failed (or no valid client certificate)"),
        }
    });
}

/// Send `data` to `addr`: over UDP, or over the connection to `addr` (the one it came on when
/// `conn` is given), opening one when there is none — for TLS only with `sip.tls_ca`, the
/// server's certificate checked against `name` (or the address).
fn send_to_addr(st: &mut State, addr: SocketAddr, transport: Transport, conn: Option<u64>, name: Option<&str>, data: Vec<u8>) {
    // To the agent side from its own listener, when there is one.
    let agent_side = !st.pbx_sources.iter().any(|p| p.matches(addr));
    if transport == Transport::Udp {
        let udp = if agent_side { st.agents_udp.as_ref().or(st.udp.as_ref()) } else { st.udp.as_ref() };
        let Some(udp) = udp else { return };
        if let Err(e) = udp.try_send_to(&data, addr) {
            tracing::debug!(error = %e, "udp send failed");
        }
        return;
    }
    let id = conn.filter(|c| st.conns.contains_key(c)).or_else(|| st.by_addr.get(&addr).copied());
    if let Some(w) = id.and_then(|i| st.conns.get(&i)) {
        if w.try_send(data).is_err() {
            tracing::debug!("connection backlog full, message dropped");
        }
        return;
    }
    // Open a connection; the first message goes with it.
    let id = st.next_conn.fetch_add(1, Relaxed);
    let tx = st.tx.clone();
    let local =
        if agent_side { st.agents_udp.as_ref().and_then(|u| u.local_addr().ok()).map(|a| SocketAddr::new(a.ip(), 0)) } else { None };
    let tls = match transport {
        Transport::Tls => {
            match (&st.tls_client, rustls::pki_types::ServerName::try_from(name.unwrap_or(&addr.ip().to_string()).to_string())) {
                (Some(cfg), Ok(server)) => Some((tokio_rustls::TlsConnector::from(cfg.clone()), server)),
                _ => {
                    tracing::debug!("no TLS connection to the next hop and no sip.tls_ca to open one");
                    let _ = tx.try_send(Event::Unreachable { data });
                    return;
                }
            }
        }
        _ => None,
    };
    tokio::spawn(async move {
        let connected = tokio::time::timeout(Duration::from_secs(5), async {
            let stream = match local {
                // From the agent side's address, like everything else sent to agents.
                Some(l) => {
                    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
                    sock.bind(l)?;
                    sock.connect(addr).await?
                }
                None => TcpStream::connect(addr).await?,
            };
            let _ = stream.set_nodelay(true);
            Ok::<_, std::io::Error>(match tls {
                None => spawn_conn(stream, addr, Transport::Tcp, id, tx.clone(), None),
                Some((connector, server)) => {
                    spawn_conn(connector.connect(server, stream).await?, addr, Transport::Tls, id, tx.clone(), None)
                }
            })
        })
        .await;
        match connected {
            Ok(Ok(writer)) => {
                let _ = writer.send(data).await;
                let _ = tx.send(Event::ConnUp { id, addr, writer }).await;
            }
            _ => {
                tracing::debug!("connect to next hop failed");
                let _ = tx.send(Event::Unreachable { data }).await;
            }
        }
    });
}

/// Reader + writer tasks for one TCP connection. Returns the writer's queue.
/// An accepted connection's bookkeeping: the open-connection count it holds a place in (given
/// back when it ends), its idle timeout, and the counters.
type ConnGuard = (Arc<std::sync::atomic::AtomicUsize>, Duration, Arc<crate::sip::proxy::SipStats>);

fn spawn_conn<S>(
    stream: S,
    addr: SocketAddr,
    transport: Transport,
    id: u64,
    events: mpsc::Sender<Event>,
    guard: Option<ConnGuard>,
) -> mpsc::Sender<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    if let Some((open, _, _)) = &guard {
        open.fetch_add(1, Relaxed);
    }
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(1024);
    tokio::spawn(async move {
        while let Some(d) = wrx.recv().await {
            if wr.write_all(&d).await.is_err() {
                break;
            }
        }
    });
    let pong = wtx.clone();
    tokio::spawn(async move {
        /// Gives the connection's place back however the reader ends.
        struct Release(Option<Arc<std::sync::atomic::AtomicUsize>>);
        impl Drop for Release {
            fn drop(&mut self) {
                if let Some(open) = &self.0 {
                    open.fetch_sub(1, Relaxed);
                }
            }
        }
        let _release = Release(guard.as_ref().map(|g| g.0.clone()));
        let idle = guard.as_ref().map_or(Duration::from_secs(24 * 3600), |g| g.1);
        let mut framer = StreamFramer::default();
        let mut chunk = vec![0u8; 16 * 1024];
        let peer = Peer { addr, transport, conn: Some(id) };
        loop {
            let n = match tokio::time::timeout(idle, rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => n,
                Err(_) => {
                    if let Some((_, _, stats)) = &guard {
                        stats.idle_connections_closed.fetch_add(1, Relaxed);
                    }
                    break;
                }
            };
            framer.push(&chunk[..n]);
            loop {
                let next = framer.next();
                // RFC 5626 §4.4.1: a double-CRLF ping gets a CRLF pong.
                for _ in 0..std::mem::take(&mut framer.pings) {
                    let _ = pong.try_send(b"\r\n".to_vec());
                }
                match next {
                    Ok(Some(data)) => {
                        if events.send(Event::Message { data, peer }).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(bytes) => {
                        // Cannot find the next message boundary: report the bytes (answered 400
                        // if possible) and drop the connection (RFC 3261 §18.3).
                        let _ = events.send(Event::Message { data: bytes, peer }).await;
                        let _ = events.send(Event::ConnDown { id }).await;
                        return;
                    }
                }
            }
        }
        let _ = events.send(Event::ConnDown { id }).await;
    });
    wtx
}

/// Splits a TCP byte stream into SIP messages using Content-Length (RFC 3261 §18.3).
#[derive(Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// Double-CRLF keep-alive pings seen between messages, not yet answered.
    pub pings: usize,
}

impl StreamFramer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }
    /// Next whole message, None if more bytes are needed, Err(the bytes) if the stream cannot
    /// be framed (no valid Content-Length, or a header part over the size limit).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Vec<u8>>, Vec<u8>> {
        // Leading CRLFs are keep-alives between messages.
        let skip = self.buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
        if skip >= 4 {
            self.pings += self.buf[..skip].windows(4).filter(|w| w == b"\r\n\r\n").count().max(1).min(skip / 4);
        }
        self.buf.drain(..skip);
        let Some(end) = header_end(&self.buf) else {
            if self.buf.len() > MAX_MESSAGE {
                return Err(std::mem::take(&mut self.buf));
            }
            return Ok(None);
        };
        let len = match content_length(&self.buf[..end]) {
            // checked: a Content-Length near usize::MAX must not wrap past the limit.
            Ok(l) if end.checked_add(l).is_some_and(|total| total <= MAX_MESSAGE) => l,
            _ => return Err(std::mem::take(&mut self.buf)),
        };
        if self.buf.len() < end + len {
            return Ok(None);
        }
        let rest = self.buf.split_off(end + len);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_crlf_pings_are_counted_for_a_pong() {
        let mut f = StreamFramer::default();
        f.push(b"\r\n\r\n");
        assert_eq!((f.next(), f.pings), (Ok(None), 1));
        f.pings = 0;
        f.push(b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(f.next(), Ok(Some(_))));
        assert_eq!(f.pings, 1);
        f.pings = 0;
        f.push(b"\r\n");
        assert_eq!((f.next(), f.pings), (Ok(None), 0), "a single CRLF (a pong) is not a ping");
    }

    #[test]
    fn frames_by_content_length_across_chunks() {
        let a = b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP x;branch=z9hG4bK1\r\nl: 3\r\n\r\nabc";
        let b = b"\r\n\r\nBYE sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        let mut f = StreamFramer::default();
        let mut all = a.to_vec();
        all.extend_from_slice(b);
        for chunk in all.chunks(7) {
            f.push(chunk);
        }
        assert_eq!(f.next().unwrap().unwrap(), a.to_vec());
        let second = f.next().unwrap().unwrap();
        assert!(second.starts_with(b"BYE"));
        assert_eq!(f.next().unwrap(), None);
        f.push(b"INVITE sip:a SIP/2.0\r\nContent-Length: x\r\n\r\n");
        assert!(f.next().is_err());
    }
}
