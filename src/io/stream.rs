//! Media-stream input driver: the WebSocket endpoints platforms stream call audio to
//! (`/stream/twilio`), on the HTTP listener. Each connection is one call: the dialect core
//! (`stream::twilio`) turns frames into events; the call is started in the analysis like any
//! other (input `stream`), its µ-law audio goes to the analysis as RTP frames of a PCMU plan
//! through the same bounded tap the relay uses (dropped and counted when analysis is behind),
//! and the stream's end ends the call. One broken stream never affects another: each has its
//! own task, and its malformed frames are counted and skipped.
//!
//! Not here: the dialects' message formats (stream::*), analysis.

use crate::call::{AnalysisCmd, CallId, CallMeta, EndReason, Input, MediaFrame, MediaPlan, Party};
use crate::stream::twilio::{TwilioConfig, TwilioSession};
use crate::stream::StreamEvent;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
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
    /// Streams refused: no or a wrong token, or over `streams.max_streams`.
    pub refused: AtomicU64,
}

#[derive(Clone)]
pub struct StreamState {
    pub tokens: Arc<Vec<String>>,
    pub twilio: Arc<TwilioConfig>,
    pub max_streams: u64,
    pub tap: mpsc::Sender<MediaFrame>,
    /// std's Sender is not Sync on older toolchains: shared behind a mutex, used once per call.
    pub ctl: Arc<Mutex<std::sync::mpsc::Sender<AnalysisCmd>>>,
    pub stats: Arc<StreamStats>,
    pub next_id: Arc<AtomicU64>,
    /// Stereo linear-PCM streams: the channel (0 left, 1 right) that is the customer.
    pub l16_customer_channel: usize,
}

/// One open stream connection: counted in `active` while it lives.
struct Connection(Arc<StreamStats>);

impl Connection {
    fn open(stats: &Arc<StreamStats>) -> Connection {
        stats.active.fetch_add(1, Relaxed);
        Connection(stats.clone())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// A stream must start its call within this long of connecting, or it is closed.
const START_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The next WebSocket message; None when the connection is over, or when a stream that has not
/// started its call yet passes `START_WITHIN` since it `opened` (closed and counted as refused).
async fn next_message(socket: &mut WebSocket, started: bool, opened: Instant, stats: &StreamStats) -> Option<Result<Message, axum::Error>> {
    if started {
        return socket.recv().await;
    }
    match tokio::time::timeout(START_WITHIN.saturating_sub(opened.elapsed()), socket.recv()).await {
        Ok(m) => m,
        Err(_) => {
            stats.refused.fetch_add(1, Relaxed);
            tracing::debug!("media stream closed: no call started within 10 s");
            None
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
    fn start_call(&self, agent_id: String, queue: String) -> CallId {
        let id = CallId(self.next_id.fetch_add(1, Relaxed));
        tracing::info!(call = %id, agent = %agent_id, "media stream call started");
        let meta = CallMeta { agent_id, queue, customer_name: None, input: Input::Stream };
        self.cmd(AnalysisCmd::Start { call: id, meta });
        self.cmd(AnalysisCmd::Negotiated { call: id, plan: pcmu_plan() });
        self.stats.started.fetch_add(1, Relaxed);
        id
    }

    fn cmd(&self, c: AnalysisCmd) {
        let _ = self.ctl.lock().unwrap_or_else(|e| e.into_inner()).send(c);
    }
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

pub async fn twilio_handler(ws: WebSocketUpgrade, State(s): State<StreamState>) -> Response {
    if s.stats.active.load(Relaxed) >= s.max_streams {
        s.stats.refused.fetch_add(1, Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "stream limit reached\n").into_response();
    }
    ws.max_message_size(256 * 1024).on_upgrade(move |socket| serve_twilio(socket, s))
}

async fn serve_twilio(mut socket: WebSocket, s: StreamState) {
    let _conn = Connection::open(&s.stats);
    let mut session = TwilioSession::default();
    let mut call: Option<CallId> = None;
    let mut reason = EndReason::Closed;
    let opened = Instant::now();
    while let Some(msg) = next_message(&mut socket, call.is_some(), opened, &s.stats).await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(Message::Binary(_)) => {
                s.stats.malformed.fetch_add(1, Relaxed);
                continue;
            }
            Ok(_) => continue,
        };
        match session.handle_text(&text, &s.twilio) {
            Ok(StreamEvent::Start { agent_id, queue, token }) => {
                if call.is_some() {
                    s.stats.malformed.fetch_add(1, Relaxed);
                    continue;
                }
                if !token.as_ref().is_some_and(|t| s.tokens.iter().any(|k| k == t)) {
                    s.stats.refused.fetch_add(1, Relaxed);
                    tracing::info!("media stream refused: unknown or missing token");
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                call = Some(s.start_call(agent_id, queue));
            }
            Ok(StreamEvent::Audio { party, seq, timestamp_ms, payload }) => {
                let Some(id) = call else { continue };
                s.tap_ulaw(id, party, seq as u16, (timestamp_ms * 8) as u32, &payload);
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
        s.cmd(AnalysisCmd::End { call: id, reason });
        tracing::info!(call = %id, reason = reason.label(), "media stream ended");
    }
}

/// Legs of AudioSocket calls joined by their key (see `stream::audiosocket::join_key`).
#[derive(Default)]
pub struct AudioSocketCalls {
    calls: Mutex<std::collections::HashMap<[u8; 16], (CallId, u8)>>,
}

/// Accept AudioSocket legs (Asterisk's `AudioSocket(uuid,host:port)`) from allowed sources.
pub async fn run_audiosocket(listener: tokio::net::TcpListener, s: StreamState, allow: Vec<crate::net::SourcePattern>) {
    let calls = Arc::new(AudioSocketCalls::default());
    loop {
        let Ok((sock, src)) = listener.accept().await else { continue };
        if !allow.iter().any(|p| p.matches(src)) {
            s.stats.refused.fetch_add(1, Relaxed);
            tracing::debug!(source = %src.ip(), "AudioSocket connection from a source not in streams.audiosocket_allow");
            continue;
        }
        if s.stats.active.load(Relaxed) >= s.max_streams {
            s.stats.refused.fetch_add(1, Relaxed);
            continue;
        }
        tokio::spawn(audiosocket_leg(sock, s.clone(), calls.clone()));
    }
}

async fn audiosocket_leg(mut sock: tokio::net::TcpStream, s: StreamState, calls: Arc<AudioSocketCalls>) {
    let _conn = Connection::open(&s.stats);
    use crate::stream::audiosocket::{join_key, Frame, Parser};
    use tokio::io::AsyncReadExt;
    let mut parser = Parser::default();
    let mut buf = vec![0u8; 8192];
    let mut leg: Option<([u8; 16], CallId, Party)> = None;
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut hung_up = false;
    'read: loop {
        // The UUID must come within START_WITHIN; after that a leg may be silent up to 30 s.
        let wait = if leg.is_none() { START_WITHIN } else { std::time::Duration::from_secs(30) };
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
            match (frame, &leg) {
                (Frame::Uuid(uuid), None) => {
                    let (key, party) = join_key(&uuid);
                    let mut table = calls.calls.lock().unwrap_or_else(|e| e.into_inner());
                    let id = match table.get_mut(&key) {
                        Some((id, open)) => {
                            *open += 1;
                            *id
                        }
                        None => {
                            let id = s.start_call("unknown".into(), "default".into());
                            table.insert(key, (id, 1));
                            id
                        }
                    };
                    leg = Some((key, id, party));
                }
                (Frame::Audio(pcm), Some((_, id, party))) => {
                    let payload: Vec<u8> = pcm.iter().map(|x| crate::codec::g711::encode_ulaw(*x)).collect();
                    seq = seq.wrapping_add(1);
                    s.tap_ulaw(*id, *party, seq, ts, &payload);
                    ts = ts.wrapping_add(pcm.len() as u32);
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
    if let Some((key, id, _)) = leg {
        let last = {
            let mut table = calls.calls.lock().unwrap_or_else(|e| e.into_inner());
            match table.get_mut(&key) {
                Some((_, open)) if *open > 1 => {
                    *open -= 1;
                    false
                }
                _ => {
                    table.remove(&key);
                    true
                }
            }
        };
        if last {
            let reason = if hung_up { EndReason::Bye } else { EndReason::Closed };
            s.cmd(AnalysisCmd::End { call: id, reason });
            tracing::info!(call = %id, reason = reason.label(), "AudioSocket call ended");
        }
    }
}

/// URL query of the linear-PCM endpoints (audio_fork passes its settings this way; jambonz
/// may too, and sends the rest as metadata).
#[derive(Debug, Default, serde::Deserialize)]
pub struct L16Query {
    token: Option<String>,
    rate: Option<u32>,
    mix: Option<String>,
    agent: Option<String>,
    queue: Option<String>,
}

/// jambonz `listen` and FreeSWITCH mod_audio_fork: metadata text, then binary L16 frames.
pub async fn l16_handler(
    ws: WebSocketUpgrade,
    State(s): State<StreamState>,
    axum::extract::Query(q): axum::extract::Query<L16Query>,
) -> Response {
    if s.stats.active.load(Relaxed) >= s.max_streams {
        s.stats.refused.fetch_add(1, Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "stream limit reached\n").into_response();
    }
    ws.protocols(["audio.jambonz.org", "audiostream.drachtio.org"])
        .max_message_size(1024 * 1024)
        .on_upgrade(move |socket| serve_l16(socket, s, q))
}

async fn serve_l16(mut socket: WebSocket, s: StreamState, q: L16Query) {
    use crate::stream::l16::{L16Format, Mix};
    let _conn = Connection::open(&s.stats);
    let opened = Instant::now();
    let mut fmt = L16Format {
        rate: q.rate.unwrap_or(8000),
        mix: q.mix.as_deref().and_then(Mix::parse).unwrap_or(Mix::Stereo),
        customer_channel: s.l16_customer_channel,
        agent_id: crate::call::sanitize_label(q.agent.as_deref().unwrap_or("unknown")),
        queue: q.queue.as_deref().map(crate::call::sanitize_label).unwrap_or_else(|| "default".into()),
        token: q.token,
    };
    let mut call: Option<CallId> = None;
    let mut ts = [0u32; 2];
    let mut seq = [0u16; 2];
    let mut reason = EndReason::Closed;
    while let Some(msg) = next_message(&mut socket, call.is_some(), opened, &s.stats).await {
        match msg {
            Ok(Message::Text(t)) if call.is_none() => {
                if fmt.apply_metadata(&t).is_err() {
                    s.stats.malformed.fetch_add(1, Relaxed);
                }
            }
            Ok(Message::Text(_)) => {
                s.stats.malformed.fetch_add(1, Relaxed);
            }
            Ok(Message::Binary(data)) => {
                let id = match call {
                    Some(id) => id,
                    None => {
                        let refusal = if !fmt.token.as_ref().is_some_and(|t| s.tokens.iter().any(|k| k == t)) {
                            Some("unknown or missing token")
                        } else {
                            fmt.refusal()
                        };
                        if let Some(why) = refusal {
                            s.stats.refused.fetch_add(1, Relaxed);
                            tracing::info!(reason = why, "linear-PCM media stream refused");
                            let close = axum::extract::ws::CloseFrame { code: 1008, reason: why.into() };
                            let _ = socket.send(Message::Close(Some(close))).await;
                            return;
                        }
                        let id = s.start_call(fmt.agent_id.clone(), fmt.queue.clone());
                        call = Some(id);
                        id
                    }
                };
                let Ok(parties) = fmt.split(&data) else {
                    s.stats.malformed.fetch_add(1, Relaxed);
                    continue;
                };
                for party in Party::ALL {
                    let pcm = &parties[party.idx()];
                    let payload: Vec<u8> = pcm.iter().map(|x| crate::codec::g711::encode_ulaw(*x)).collect();
                    let i = party.idx();
                    seq[i] = seq[i].wrapping_add(1);
                    s.tap_ulaw(id, party, seq[i], ts[i], &payload);
                    ts[i] = ts[i].wrapping_add(pcm.len() as u32);
                }
            }
            Ok(Message::Close(_)) => {
                reason = EndReason::Bye;
                break;
            }
            Err(_) => break,
            Ok(_) => {}
        }
    }
    if let Some(id) = call {
        s.cmd(AnalysisCmd::End { call: id, reason });
        tracing::info!(call = %id, reason = reason.label(), "linear-PCM media stream ended");
    }
}
