//! Media-stream input driver: the WebSocket endpoints platforms stream call audio to
//! ([`router`]: `/stream/twilio`, `/stream/jambonz`, `/stream/audiofork`, `/stream/asterisk`,
//! `/stream/audiohook`, on the HTTP listener and, with `streams.tls_listen`, over TLS) and the
//! AudioSocket TCP listener. Each connection is a call or one party of a call: the dialect core
//! (`stream::*`) turns frames into events; the call is started in the analysis like any other
//! (its input label the dialect), its audio goes to the analysis as RTP frames of a PCMU plan
//! through the same bounded tap the relay uses (dropped and counted when analysis is behind),
//! and the stream's end ends the call. One broken stream never affects another: each has its
//! own task, its malformed frames are counted and skipped, and what it sends over its rate
//! budget ([`crate::stream::RateGuard`]) is dropped and counted.
//!
//! Not here: the dialects' message formats (stream::*), analysis.

use crate::call::{AnalysisCmd, CallId, CallMeta, EndReason, Input, MediaFrame, MediaPlan, Party};
use crate::stream::twilio::{TwilioConfig, TwilioSession};
use crate::stream::{RateGuard, StreamEvent};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Counters the metrics export.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub started: AtomicU64,
    /// Stream connections open now (counted from the upgrade or accept, so connections that
    /// never start a call are bounded by `streams.max_streams` too).
    pub active: AtomicU64,
    pub frames: AtomicU64,
    /// Audio frames not analysed: the analysis queue was full.
    pub frames_dropped: AtomicU64,
    pub malformed: AtomicU64,
    /// Streams refused: no or a wrong token or signature, a format that cannot be measured, or
    /// over `streams.max_streams`.
    pub refused: AtomicU64,
    /// Messages or audio over a stream's rate budget, dropped.
    pub over_rate: AtomicU64,
    /// TLS handshakes on `streams.tls_listen` that failed or timed out, or were refused over
    /// the per-source handshake cap.
    pub tls_handshake_failed: AtomicU64,
    /// Started streams closed because nothing arrived for `IDLE_LIMIT`.
    pub idle_closed: AtomicU64,
}

/// Genesys AudioHook credentials: the integration's API key and, when set, its client secret
/// (base64-decoded), which makes the request signature mandatory.
#[derive(Debug, Clone)]
pub struct AudioHookAuth {
    pub api_key: String,
    pub secret: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct StreamState {
    pub tokens: Arc<Vec<String>>,
    pub twilio: Arc<TwilioConfig>,
    /// Twilio's auth token: when set, every Twilio stream must carry a valid
    /// `X-Twilio-Signature`.
    pub twilio_auth_token: Option<Arc<String>>,
    /// The public `wss://host[:port]` the platforms are given (behind a TLS proxy); empty: taken
    /// from the request's Host header. Used to check request signatures.
    pub public_url: Arc<String>,
    /// None: the AudioHook input is off.
    pub audiohook: Option<Arc<AudioHookAuth>>,
    pub max_streams: u64,
    pub tap: mpsc::Sender<MediaFrame>,
    /// std's Sender is not Sync on older toolchains: shared behind a mutex, used once per call.
    pub ctl: Arc<Mutex<std::sync::mpsc::Sender<AnalysisCmd>>>,
    pub stats: Arc<StreamStats>,
    pub next_id: Arc<AtomicU64>,
    /// Stereo linear-PCM streams: the channel (0 left, 1 right) that is the customer.
    pub l16_customer_channel: usize,
    /// Inputs whose parties arrive on separate connections (AudioSocket, chan_websocket).
    pub legs: Arc<Legs>,
    /// `streams.max_streams` slots: a connection holds one from its upgrade or accept on.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Connections per source that have not started a call yet (bounded per source, so nobody
    /// can hold every slot with connections that never authenticate).
    pub pending: PendingTable,
    /// AudioHook signature nonces seen in the last 30 s (a signed request is not replayable).
    pub nonces: Arc<Mutex<HashMap<String, Instant>>>,
}

impl StreamState {
    /// A state with the given settings and fresh counters, slots and tables.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tokens: Vec<String>,
        twilio: TwilioConfig,
        max_streams: u64,
        tap: mpsc::Sender<MediaFrame>,
        ctl: std::sync::mpsc::Sender<AnalysisCmd>,
        stats: Arc<StreamStats>,
        first_id: u64,
        l16_customer_channel: usize,
    ) -> StreamState {
        StreamState {
            tokens: Arc::new(tokens),
            twilio: Arc::new(twilio),
            twilio_auth_token: None,
            public_url: Arc::new(String::new()),
            audiohook: None,
            max_streams,
            tap,
            ctl: Arc::new(Mutex::new(ctl)),
            stats,
            next_id: Arc::new(AtomicU64::new(first_id)),
            l16_customer_channel,
            legs: Default::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(max_streams.min(tokio::sync::Semaphore::MAX_PERMITS as u64) as usize)),
            pending: Default::default(),
            nonces: Default::default(),
        }
    }
}

/// Connections one source may have open before they start a call.
const PENDING_PER_SOURCE: u32 = 16;
/// A started stream with nothing arriving for this long is closed.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// The WebSocket stream endpoints.
pub fn router(state: StreamState) -> Router {
    Router::new()
        .route("/stream/twilio", get(twilio_handler))
        .route("/stream/jambonz", get(jambonz_handler))
        .route("/stream/audiofork", get(audiofork_handler))
        .route("/stream/asterisk", get(chanws_handler))
        .route("/stream/audiohook", get(audiohook_handler))
        .with_state(state)
}

/// One open stream connection: it holds a `streams.max_streams` slot and, until its call
/// starts, one of its source's pending places; counted in `active` while it lives.
pub struct Connection {
    stats: Arc<StreamStats>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    pending: Option<(PendingTable, IpAddr)>,
}

/// Not-started connections per source.
type PendingTable = Arc<Mutex<HashMap<IpAddr, u32>>>;

/// The answer to a connection over a limit.
fn unavailable(why: &'static str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
}

impl Connection {
    /// The connection started its call: it no longer counts against its source's pending budget.
    fn started(&mut self) {
        if let Some((table, ip)) = self.pending.take() {
            let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = t.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    t.remove(&ip);
                }
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.started();
        self.stats.active.fetch_sub(1, Relaxed);
    }
}

/// A stream must start its call within this long of connecting, or it is closed.
const START_WITHIN: Duration = Duration::from_secs(10);

/// The next WebSocket message; None when the connection is over, when a stream that has not
/// started its call yet passes `START_WITHIN` since it `opened` (closed and counted as refused:
/// a firm deadline, however many frames it sends), or when a started one is silent for
/// `IDLE_LIMIT` (closed and counted).
async fn next_message(socket: &mut WebSocket, started: bool, opened: Instant, stats: &StreamStats) -> Option<Result<Message, axum::Error>> {
    let limit = if started { Some(IDLE_LIMIT) } else { START_WITHIN.checked_sub(opened.elapsed()) };
    let r = match limit {
        Some(l) if !l.is_zero() => tokio::time::timeout(l, socket.recv()).await.ok(),
        _ => None,
    };
    match r {
        Some(m) => m,
        None if started => {
            stats.idle_closed.fetch_add(1, Relaxed);
            tracing::debug!("media stream closed: nothing received for 60 s");
            None
        }
        None => {
            stats.refused.fetch_add(1, Relaxed);
            tracing::debug!("media stream closed: no call started within 10 s");
            None
        }
    }
}

/// A stream connection's frame, once past its deadlines and rate budget.
enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// The sender closed the connection cleanly (a close frame).
    Closed,
}

/// The next text or binary frame within the connection's message budget (frames over it are
/// dropped and counted), or `Frame::Closed`; None when the connection broke or a deadline of
/// [`next_message`] passed.
async fn next_frame(socket: &mut WebSocket, started: bool, feed: &mut Feed, s: &StreamState) -> Option<Frame> {
    loop {
        let frame = match next_message(socket, started, feed.opened, &s.stats).await? {
            Ok(Message::Text(t)) => Frame::Text(t),
            Ok(Message::Binary(b)) => Frame::Binary(b),
            Ok(Message::Close(_)) => return Some(Frame::Closed),
            Err(_) => return None,
            Ok(_) => continue,
        };
        if feed.message(s) {
            return Some(frame);
        }
    }
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// One connection's feed into the analysis: its rate budget and RTP numbering per party.
struct Feed {
    opened: Instant,
    guard: RateGuard,
    seq: [u16; 2],
    ts: [u32; 2],
}

impl Feed {
    fn new() -> Feed {
        Feed { opened: Instant::now(), guard: RateGuard::default(), seq: [0; 2], ts: [0; 2] }
    }

    /// A message arrived: false (counted) when it is over the stream's message rate.
    fn message(&mut self, s: &StreamState) -> bool {
        let ok = self.guard.message(self.opened.elapsed());
        if !ok {
            s.stats.over_rate.fetch_add(1, Relaxed);
        }
        ok
    }

    /// `payload` (8 kHz µ-law) of `party` into the analysis, numbered in sequence, or at the
    /// platform's own sequence number and timestamp (`at`). Over the audio budget: dropped and
    /// counted.
    fn audio(&mut self, s: &StreamState, call: CallId, party: Party, payload: &[u8], at: Option<(u16, u32)>) {
        let i = party.idx();
        let (mut seq, mut ts) = at.unwrap_or((self.seq[i].wrapping_add(1), self.ts[i]));
        // At most 100 ms per analysis frame: a sender's huge frame takes no more of the shared
        // queue than its audio is worth.
        for chunk in payload.chunks(800) {
            // The timeline moves on even for audio dropped over the budget.
            self.seq[i] = seq;
            self.ts[i] = ts.wrapping_add(chunk.len() as u32);
            if self.guard.audio(self.opened.elapsed(), party, chunk.len() as f64 / 8.0) {
                s.tap_ulaw(call, party, seq, ts, chunk);
            } else {
                s.stats.over_rate.fetch_add(1, Relaxed);
            }
            (seq, ts) = (seq.wrapping_add(1), self.ts[i]);
        }
    }
}

/// Calls whose parties arrive on separate connections, joined by a key.
#[derive(Default)]
pub struct Legs {
    /// key → (call, parties connected now: bit per party, the source of the first leg)
    calls: Mutex<HashMap<String, (CallId, u8, IpAddr)>>,
}

impl Legs {
    /// `party` of the call `key` connected from `src`: its call (started by `start` for the
    /// first leg), or None when that party of that call is already connected, or the call's
    /// first leg came from another address (a key cannot be taken over from elsewhere).
    fn join(&self, key: &str, party: Party, src: IpAddr, start: impl FnOnce() -> CallId) -> Option<CallId> {
        let mut t = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let bit = 1u8 << party.idx();
        match t.get_mut(key) {
            Some((_, mask, first)) if *mask & bit != 0 || *first != src => None,
            Some((id, mask, _)) => {
                *mask |= bit;
                Some(*id)
            }
            None => {
                let id = start();
                t.insert(key.to_string(), (id, bit, src));
                Some(id)
            }
        }
    }

    /// `party` of `key` left: true when it was the call's last leg (the call ends).
    fn leave(&self, key: &str, party: Party) -> bool {
        let mut t = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let Some((_, mask, _)) = t.get_mut(key) else { return false };
        *mask &= !(1u8 << party.idx());
        if *mask == 0 {
            t.remove(key);
            true
        } else {
            false
        }
    }
}

impl StreamState {
    /// One frame of µ-law audio of `party` into the analysis, as the PCMU RTP it already reads
    /// (8 kHz clock): dropped and counted when the analysis is behind, never waited for.
    fn tap_ulaw(&self, call: CallId, party: Party, seq: u16, ts: u32, payload: &[u8]) {
        let packet = crate::rtp::build(0, seq, ts, 0x5100 + party.idx() as u32, payload);
        let Ok(header) = crate::rtp::parse_rtp(&packet) else { return };
        self.stats.frames.fetch_add(1, Relaxed);
        match self.tap.try_reserve() {
            Ok(permit) => permit.send(MediaFrame { call, party, stream: 0, arrival: Instant::now(), header, packet, encrypted: false }),
            Err(_) => {
                self.stats.frames_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// A stream's call starts: its id, the analysis told (a PCMU plan), counted.
    fn start_call(&self, input: Input, agent_id: String, queue: String) -> CallId {
        let id = CallId(self.next_id.fetch_add(1, Relaxed));
        tracing::info!(call = %id, agent = %agent_id, input = input.label(), "media stream call started");
        let meta = CallMeta { agent_id, queue, customer_name: None, input };
        self.cmd(AnalysisCmd::Start { call: id, meta });
        self.cmd(AnalysisCmd::Negotiated { call: id, plan: pcmu_plan() });
        self.stats.started.fetch_add(1, Relaxed);
        id
    }

    fn end_call(&self, id: CallId, reason: EndReason) {
        self.cmd(AnalysisCmd::End { call: id, reason });
        tracing::info!(call = %id, reason = reason.label(), "media stream call ended");
    }

    fn cmd(&self, c: AnalysisCmd) {
        let _ = self.ctl.lock().unwrap_or_else(|e| e.into_inner()).send(c);
    }

    fn token_ok(&self, t: Option<&str>) -> bool {
        t.is_some_and(|t| self.tokens.iter().any(|k| same(k.as_bytes(), t.as_bytes())))
    }

    /// A slot for a new connection from `src`, or why not (counted; answered 503): over
    /// `streams.max_streams`, or `src` already has `PENDING_PER_SOURCE` connections that have
    /// not started a call.
    pub fn admit(&self, src: IpAddr) -> Result<Connection, &'static str> {
        let busy = |s: &StreamState, why: &'static str| {
            s.stats.refused.fetch_add(1, Relaxed);
            tracing::debug!(reason = why, "media stream connection refused");
            why
        };
        let Ok(slot) = self.slots.clone().try_acquire_owned() else { return Err(busy(self, "stream limit reached")) };
        {
            let mut t = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let n = t.entry(src).or_insert(0);
            if *n >= PENDING_PER_SOURCE {
                return Err(busy(self, "too many connections from this source that have not started a call"));
            }
            *n += 1;
        }
        self.stats.active.fetch_add(1, Relaxed);
        Ok(Connection { stats: self.stats.clone(), _slot: slot, pending: Some((self.pending.clone(), src)) })
    }

    /// Refuse an upgrade request (counted).
    fn refuse(&self, status: StatusCode, why: &'static str) -> Response {
        self.stats.refused.fetch_add(1, Relaxed);
        tracing::info!(reason = why, "media stream refused");
        (status, format!("{why}\n")).into_response()
    }

    /// The URLs a platform may have signed for this request: the configured public URL, or
    /// `wss://` + Host (with and without the default port, as Twilio's own validators try).
    fn signed_urls(&self, headers: &HeaderMap, uri: &axum::http::Uri) -> Vec<String> {
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        if !self.public_url.is_empty() {
            return vec![format!("{}{pq}", self.public_url.trim_end_matches('/'))];
        }
        let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default();
        match host.strip_suffix(":443") {
            Some(bare) => vec![format!("wss://{bare}{pq}"), format!("wss://{host}{pq}")],
            // With no port, Twilio may have signed the URL with or without the default one;
            // another port is part of the URL as it is.
            None if !host.contains(':') || host.ends_with(']') => vec![format!("wss://{host}{pq}"), format!("wss://{host}:443{pq}")],
            None => vec![format!("wss://{host}{pq}")],
        }
    }
}

/// Twilio's request signature: base64 HMAC-SHA1 of the URL, keyed with the auth token (a
/// WebSocket upgrade is a GET: no parameters are appended).
pub fn twilio_signature(auth_token: &str, url: &str) -> String {
    use base64::Engine;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, url.as_bytes()).as_ref())
}

/// The plan every µ-law stream negotiates: one audio stream, PCMU.
fn pcmu_plan() -> MediaPlan {
    let mut plan = MediaPlan::default();
    if let Ok(s) = crate::sdp::parse(b"v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n") {
        plan.learn(Party::Customer, &s);
        plan.learn(Party::Agent, &s);
    }
    plan
}

pub async fn twilio_handler(
    ws: WebSocketUpgrade,
    State(s): State<StreamState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(token) = &s.twilio_auth_token {
        let sig = headers.get("x-twilio-signature").and_then(|h| h.to_str().ok()).unwrap_or_default();
        if !s.signed_urls(&headers, &uri).iter().any(|u| same(twilio_signature(token, u).as_bytes(), sig.as_bytes())) {
            return s.refuse(StatusCode::FORBIDDEN, "X-Twilio-Signature missing or not valid for this URL");
        }
    }
    let conn = match s.admit(peer.ip()) {
        Ok(c) => c,
        Err(why) => return unavailable(why),
    };
    ws.max_message_size(256 * 1024).max_frame_size(256 * 1024).on_upgrade(move |socket| serve_twilio(socket, s, conn))
}

async fn serve_twilio(mut socket: WebSocket, s: StreamState, mut conn: Connection) {
    let mut session = TwilioSession::default();
    let mut feed = Feed::new();
    let mut call: Option<CallId> = None;
    let mut reason = EndReason::Closed;
    while let Some(frame) = next_frame(&mut socket, call.is_some(), &mut feed, &s).await {
        let text = match frame {
            Frame::Text(t) => t,
            Frame::Closed => break,
            Frame::Binary(_) => {
                s.stats.malformed.fetch_add(1, Relaxed);
                continue;
            }
        };
        match session.handle_text(&text, &s.twilio) {
            Ok(StreamEvent::Start { agent_id, queue, token }) => {
                if call.is_some() {
                    s.stats.malformed.fetch_add(1, Relaxed);
                    continue;
                }
                if !s.token_ok(token.as_deref()) {
                    s.stats.refused.fetch_add(1, Relaxed);
                    tracing::info!("media stream refused: unknown or missing token");
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                call = Some(s.start_call(Input::Twilio, agent_id, queue));
                conn.started();
            }
            Ok(StreamEvent::Audio { party, seq, timestamp_ms, payload }) => {
                let Some(id) = call else { continue };
                feed.audio(&s, id, party, &payload, Some((seq as u16, (timestamp_ms * 8) as u32)));
            }
            Ok(StreamEvent::Stop) => {
                reason = EndReason::Bye;
                break;
            }
            Ok(StreamEvent::Nothing) => {}
            Err(e) => {
                s.stats.malformed.fetch_add(1, Relaxed);
                tracing::debug!(error = ?e, "media stream frame refused");
            }
        }
    }
    if let Some(id) = call {
        s.end_call(id, reason);
    }
}

/// Accept AudioSocket legs (Asterisk's `AudioSocket(uuid,host:port)`) from allowed sources.
pub async fn run_audiosocket(listener: tokio::net::TcpListener, s: StreamState, allow: Vec<crate::net::SourcePattern>) {
    loop {
        let (sock, src) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "AudioSocket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if !allow.iter().any(|p| p.matches(src)) {
            s.stats.refused.fetch_add(1, Relaxed);
            tracing::debug!(source = %src.ip(), "AudioSocket connection from a source not in streams.audiosocket_allow");
            continue;
        }
        let Ok(conn) = s.admit(src.ip()) else { continue };
        tokio::spawn(audiosocket_leg(sock, src.ip(), s.clone(), conn));
    }
}

async fn audiosocket_leg(mut sock: tokio::net::TcpStream, src: IpAddr, s: StreamState, mut conn: Connection) {
    use crate::stream::audiosocket::{join_key, Frame, Parser};
    use tokio::io::AsyncReadExt;
    let mut parser = Parser::default();
    let mut buf = vec![0u8; 8192];
    let mut leg: Option<(String, CallId, Party)> = None;
    let mut feed = Feed::new();
    let mut hung_up = false;
    'read: loop {
        // The UUID must come within START_WITHIN; after that a leg may be silent up to 30 s.
        let wait = if leg.is_none() { START_WITHIN.saturating_sub(feed.opened.elapsed()) } else { Duration::from_secs(30) };
        let n = match tokio::time::timeout(wait, sock.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        parser.push(&buf[..n]);
        loop {
            let frame = match parser.next() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    s.stats.malformed.fetch_add(1, Relaxed);
                    tracing::debug!(error = e, "AudioSocket frame refused, leg closed");
                    break 'read;
                }
            };
            if !feed.message(&s) {
                continue;
            }
            match (frame, &leg) {
                (Frame::Uuid(uuid), None) => {
                    let (key, party) = join_key(&uuid);
                    let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
                    let key = format!("audiosocket:{key}");
                    match s.legs.join(&key, party, src, || s.start_call(Input::AudioSocket, "unknown".into(), "default".into())) {
                        Some(id) => {
                            leg = Some((key, id, party));
                            conn.started();
                        }
                        None => {
                            s.stats.refused.fetch_add(1, Relaxed);
                            tracing::info!("AudioSocket leg refused: that party of the call is already connected");
                            break 'read;
                        }
                    }
                }
                (Frame::Audio(pcm), Some((_, id, party))) => {
                    let payload: Vec<u8> = pcm.iter().map(|x| crate::codec::g711::encode_ulaw(*x)).collect();
                    feed.audio(&s, *id, *party, &payload, None);
                }
                (Frame::Hangup, _) => {
                    hung_up = true;
                    break 'read;
                }
                (Frame::Dtmf(_), _) => {}
                (Frame::Error(_) | Frame::Unsupported(_), _) | (Frame::Uuid(_), Some(_)) | (Frame::Audio(_), None) => {
                    s.stats.malformed.fetch_add(1, Relaxed);
                }
            }
        }
    }
    // The leg is over; the call ends with its last leg.
    if let Some((key, id, party)) = leg {
        if s.legs.leave(&key, party) {
            s.end_call(id, if hung_up { EndReason::Bye } else { EndReason::Closed });
        }
    }
}

/// URL query of the linear-PCM endpoints (audio_fork passes its settings this way; jambonz
/// may too, and sends the rest as metadata) and of chan_websocket (Asterisk appends the dial
/// string's `v()` parameters).
#[derive(Debug, Default, serde::Deserialize)]
pub struct StreamQuery {
    token: Option<String>,
    rate: Option<u32>,
    mix: Option<String>,
    agent: Option<String>,
    queue: Option<String>,
    /// chan_websocket: the key that joins the two parties' connections, and this one's party.
    call: Option<String>,
    party: Option<String>,
}

/// jambonz `listen`: metadata text, then binary L16 frames.
async fn jambonz_handler(
    ws: WebSocketUpgrade,
    State(s): State<StreamState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<StreamQuery>,
) -> Response {
    l16_upgrade(ws, s, peer, q, Input::Jambonz)
}

/// FreeSWITCH mod_audio_fork / mod_audio_stream: the same, settings in the query.
async fn audiofork_handler(
    ws: WebSocketUpgrade,
    State(s): State<StreamState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<StreamQuery>,
) -> Response {
    l16_upgrade(ws, s, peer, q, Input::AudioFork)
}

fn l16_upgrade(ws: WebSocketUpgrade, s: StreamState, peer: SocketAddr, q: StreamQuery, input: Input) -> Response {
    // A token in the URL is checked before the upgrade (jambonz may send it in the metadata
    // instead, checked with the first audio).
    if q.token.is_some() && !s.token_ok(q.token.as_deref()) {
        return s.refuse(StatusCode::UNAUTHORIZED, "unknown token");
    }
    let conn = match s.admit(peer.ip()) {
        Ok(c) => c,
        Err(why) => return unavailable(why),
    };
    ws.protocols(["audio.jambonz.org", "audiostream.drachtio.org"])
        .max_message_size(1024 * 1024)
        .max_frame_size(1024 * 1024)
        .on_upgrade(move |socket| serve_l16(socket, s, conn, q, input))
}

/// Close a stream with a reason the platform logs (1008: policy violation), counted refused.
async fn close_refused(socket: &mut WebSocket, s: &StreamState, code: u16, why: &'static str) {
    s.stats.refused.fetch_add(1, Relaxed);
    tracing::info!(reason = why, "media stream refused");
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: why.into() }))).await;
}

async fn serve_l16(mut socket: WebSocket, s: StreamState, mut conn: Connection, q: StreamQuery, input: Input) {
    use crate::stream::l16::{L16Format, Mix};
    let mut down = [crate::stream::Downsampler::new(8000), crate::stream::Downsampler::new(8000)];
    let mut feed = Feed::new();
    let mut fmt = L16Format {
        rate: q.rate.unwrap_or(8000),
        mix: q.mix.as_deref().and_then(Mix::parse).unwrap_or(Mix::Stereo),
        customer_channel: s.l16_customer_channel,
        agent_id: crate::call::sanitize_label(q.agent.as_deref().unwrap_or("unknown")),
        queue: q.queue.as_deref().map(crate::call::sanitize_label).unwrap_or_else(|| "default".into()),
        token: q.token,
    };
    let mut call: Option<CallId> = None;
    let mut reason = EndReason::Closed;
    while let Some(frame) = next_frame(&mut socket, call.is_some(), &mut feed, &s).await {
        match frame {
            Frame::Text(t) if call.is_none() => {
                if fmt.apply_metadata(&t).is_err() {
                    s.stats.malformed.fetch_add(1, Relaxed);
                }
            }
            Frame::Text(_) => {
                s.stats.malformed.fetch_add(1, Relaxed);
            }
            Frame::Binary(data) => {
                let id = match call {
                    Some(id) => id,
                    None => {
                        let refusal = if !s.token_ok(fmt.token.as_deref()) { Some("unknown or missing token") } else { fmt.refusal() };
                        if let Some(why) = refusal {
                            close_refused(&mut socket, &s, 1008, why).await;
                            return;
                        }
                        let id = s.start_call(input, fmt.agent_id.clone(), fmt.queue.clone());
                        conn.started();
                        down = [crate::stream::Downsampler::new(fmt.rate), crate::stream::Downsampler::new(fmt.rate)];
                        call = Some(id);
                        id
                    }
                };
                let Ok(parties) = fmt.split(&data) else {
                    s.stats.malformed.fetch_add(1, Relaxed);
                    continue;
                };
                for party in Party::ALL {
                    let pcm = down[party.idx()].push(&parties[party.idx()]);
                    let payload: Vec<u8> = pcm.iter().map(|x| crate::codec::g711::encode_ulaw(*x)).collect();
                    feed.audio(&s, id, party, &payload, None);
                }
            }
            Frame::Closed => {
                reason = EndReason::Bye;
                break;
            }
        }
    }
    if let Some(id) = call {
        s.end_call(id, reason);
    }
}

/// The password of an `Authorization: Basic` header (Asterisk's websocket_client.conf
/// `username`/`password`).
fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let v = headers.get("authorization")?.to_str().ok()?.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(v.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
}

/// Asterisk chan_websocket: one connection per party (see `stream::chanws`).
async fn chanws_handler(
    ws: WebSocketUpgrade,
    State(s): State<StreamState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    if !s.token_ok(q.token.as_deref()) && !s.token_ok(basic_password(&headers).as_deref()) {
        return s.refuse(StatusCode::UNAUTHORIZED, "unknown or missing token (v(token=...) or websocket_client.conf password)");
    }
    let party = match q.party.as_deref() {
        Some("customer") => Party::Customer,
        Some("agent") => Party::Agent,
        _ => {
            return s
                .refuse(StatusCode::BAD_REQUEST, "party=customer or party=agent is required: a chan_websocket channel carries one voice")
        }
    };
    let Some(key) = q.call.as_deref().filter(|k| !k.is_empty() && k.len() <= 128) else {
        return s.refuse(StatusCode::BAD_REQUEST, "call=<key> is required: it joins the customer's and the agent's connections");
    };
    let key = format!("chan_websocket:{key}");
    let conn = match s.admit(peer.ip()) {
        Ok(c) => c,
        Err(why) => return unavailable(why),
    };
    ws.protocols(["media"])
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| serve_chanws(socket, s, conn, peer.ip(), q, key, party))
}

async fn serve_chanws(mut socket: WebSocket, s: StreamState, mut conn: Connection, src: IpAddr, q: StreamQuery, key: String, party: Party) {
    use crate::stream::chanws::{parse_control, Control, Format};
    let mut feed = Feed::new();
    let mut format: Option<Format> = None;
    let mut call: Option<CallId> = None;
    let mut down = crate::stream::Downsampler::new(8000);
    let mut reason = EndReason::Closed;
    while let Some(frame) = next_frame(&mut socket, call.is_some(), &mut feed, &s).await {
        match frame {
            Frame::Text(t) => match parse_control(&t) {
                Ok(Control::MediaStart { format: name }) if call.is_none() => {
                    let Some(f) = Format::parse(&name) else {
                        close_refused(&mut socket, &s, 1003, "media format not taken: use c(ulaw), c(alaw) or c(slin...)").await;
                        return;
                    };
                    let agent = crate::call::sanitize_label(q.agent.as_deref().unwrap_or("unknown"));
                    let queue = q.queue.as_deref().map(crate::call::sanitize_label).unwrap_or_else(|| "default".into());
                    match s.legs.join(&key, party, src, || s.start_call(Input::ChanWebsocket, agent, queue)) {
                        Some(id) => {
                            conn.started();
                            (format, call) = (Some(f), Some(id));
                            down = crate::stream::Downsampler::new(f.rate());
                        }
                        None => {
                            close_refused(
                                &mut socket,
                                &s,
                                1008,
                                "that party of this call is already connected (or the call is another source's)",
                            )
                            .await;
                            return;
                        }
                    }
                }
                Ok(Control::MediaStart { .. }) => {
                    s.stats.malformed.fetch_add(1, Relaxed);
                }
                Ok(Control::Other(_)) => {}
                Err(e) => {
                    s.stats.malformed.fetch_add(1, Relaxed);
                    tracing::debug!(error = ?e, "chan_websocket control message refused");
                }
            },
            Frame::Binary(data) => {
                let (Some(id), Some(f)) = (call, format) else {
                    // Media before MEDIA_START: its format is not known yet.
                    s.stats.malformed.fetch_add(1, Relaxed);
                    continue;
                };
                match f.to_ulaw(&data, &mut down) {
                    Ok((payload, _)) => feed.audio(&s, id, party, &payload, None),
                    Err(_) => {
                        s.stats.malformed.fetch_add(1, Relaxed);
                    }
                }
            }
            Frame::Closed => {
                reason = EndReason::Bye;
                break;
            }
        }
    }
    if let Some(id) = call {
        if s.legs.leave(&key, party) {
            s.end_call(id, reason);
        }
    }
}

/// Genesys AudioHook: API key and (with a client secret) the RFC 9421 signature on the upgrade.
async fn audiohook_handler(
    ws: WebSocketUpgrade,
    State(s): State<StreamState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let Some(auth) = s.audiohook.clone() else {
        return s.refuse(StatusCode::NOT_FOUND, "the AudioHook input is not configured (streams.audiohook_api_key)");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    if !header("x-api-key").is_some_and(|k| same(k.as_bytes(), auth.api_key.as_bytes())) {
        return s.refuse(StatusCode::UNAUTHORIZED, "X-API-KEY missing or unknown");
    }
    let Some(org) = header("audiohook-organization-id") else {
        return s.refuse(StatusCode::UNAUTHORIZED, "Audiohook-Organization-Id missing");
    };
    if let Some(secret) = &auth.secret {
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        // Behind a proxy, the authority the client signed is the public URL's.
        let authority = match s.public_url.split_once("://") {
            Some((_, rest)) => rest.split('/').next().unwrap_or_default().to_string(),
            None => header("host").unwrap_or_default(),
        };
        match crate::stream::audiohook::verify_signature(&header, target, &authority, secret, crate::sys::unix_now_s() as u64) {
            Err(why) => return s.refuse(StatusCode::UNAUTHORIZED, why),
            Ok(nonce) => {
                let mut seen = s.nonces.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                seen.retain(|_, t| now.duration_since(*t) < Duration::from_secs(30));
                if seen.insert(nonce, now).is_some() {
                    return s.refuse(StatusCode::UNAUTHORIZED, "signature replayed (nonce already seen)");
                }
            }
        }
    }
    let conn = match s.admit(peer.ip()) {
        Ok(c) => c,
        Err(why) => return unavailable(why),
    };
    ws.max_message_size(256 * 1024).max_frame_size(256 * 1024).on_upgrade(move |socket| serve_audiohook(socket, s, conn, org))
}

async fn serve_audiohook(mut socket: WebSocket, s: StreamState, mut conn: Connection, org: String) {
    use crate::stream::audiohook::{AudioHookSession, HookEvent};
    let mut feed = Feed::new();
    let mut session = AudioHookSession::new(Some(org));
    let mut call: Option<CallId> = None;
    let mut reason = EndReason::Closed;
    // A probe or a refused session starts no call: the start deadline still closes it if the
    // client does not.
    while let Some(frame) = next_frame(&mut socket, call.is_some(), &mut feed, &s).await {
        match frame {
            Frame::Text(t) => {
                let (replies, ev) = session.handle_text(&t);
                for r in replies {
                    if socket.send(Message::Text(r)).await.is_err() {
                        break;
                    }
                }
                match ev {
                    Ok(HookEvent::Start { agent_id, queue, probe, .. }) => {
                        if probe {
                            tracing::info!("AudioHook connection probe answered");
                        } else {
                            call = Some(s.start_call(Input::AudioHook, agent_id, queue));
                            conn.started();
                        }
                    }
                    Ok(HookEvent::Refused(why)) => {
                        s.stats.refused.fetch_add(1, Relaxed);
                        tracing::info!(reason = why, "AudioHook session refused");
                    }
                    Ok(HookEvent::ClientError(code)) => tracing::info!(code, "AudioHook client reported an error"),
                    Ok(HookEvent::Close) => {
                        reason = EndReason::Bye;
                        break;
                    }
                    Ok(HookEvent::Paused | HookEvent::Resumed | HookEvent::Nothing) => {}
                    Err(e) => {
                        s.stats.malformed.fetch_add(1, Relaxed);
                        tracing::debug!(error = ?e, "AudioHook message refused");
                    }
                }
            }
            Frame::Binary(data) => match (call, session.handle_binary(&data)) {
                (Some(id), Ok(parties)) => {
                    for party in Party::ALL {
                        feed.audio(&s, id, party, &parties[party.idx()], None);
                    }
                }
                // A probe's audio is not measured.
                (None, Ok(_)) => {}
                (_, Err(_)) => {
                    s.stats.malformed.fetch_add(1, Relaxed);
                }
            },
            Frame::Closed => break,
        }
    }
    if session.seq_gaps > 0 {
        tracing::debug!(gaps = session.seq_gaps, "AudioHook client sequence numbers had gaps");
    }
    if let Some(id) = call {
        s.end_call(id, reason);
    }
}
