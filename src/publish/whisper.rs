//! The whisper channel: an authenticated WebSocket per agent (`GET /whisper`) carrying JSON
//! messages for that agent's calls — call start, live metric snapshots (~1 s), listening
//! events, nudges, call end with the post-call summary. Supervisor tokens see every agent.
//! The message schema is in docs/whisper.md.
//!
//! Auth: `Authorization: Bearer TOKEN` or `?token=TOKEN` (browsers cannot set headers on a
//! WebSocket). Unknown tokens get 401 before the upgrade.
//!
//! Not here: what the messages say (the analysis thread builds them).

use crate::analysis::phrases::PhraseKind;
use crate::analysis::turns::{PerParty, TurnEvent};
use crate::call::{CallId, EndReason, Party};
use crate::coach::NudgeKind;
use crate::record::CallRecord;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WhisperConfig {
    /// agent id → token. An agent's token sees only that agent's calls.
    pub agents: HashMap<String, String>,
    /// Tokens that see every agent (supervisors, wallboards).
    pub supervisors: Vec<String>,
}

/// Every message the whisper channel sends (server → client JSON text frames). docs/whisper.md
/// documents each variant; `tests/whisper.rs` checks the document against this type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WhisperMessage {
    /// On connect: whose calls this connection sees.
    Hello {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        supervisor: Option<bool>,
    },
    CallStart {
        call: CallId,
        agent: String,
        queue: String,
        time: f64,
    },
    /// Live figures, about every second during the call.
    Snapshot {
        call: CallId,
        agent: String,
        queue: String,
        position_s: f64,
        talk_time_s: PerParty<f64>,
        talk_ratio_agent: Option<f64>,
        time: f64,
    },
    /// A listening event.
    Event {
        call: CallId,
        agent: String,
        event: TurnEvent,
        time: f64,
    },
    /// A phrase signal (ASR on). The matched words stay in the record.
    Phrase {
        call: CallId,
        agent: String,
        kind: PhraseKind,
        party: Party,
        at: f64,
        time: f64,
    },
    Nudge {
        call: CallId,
        agent: String,
        kind: NudgeKind,
        text: String,
        at: f64,
        post_call: bool,
        time: f64,
    },
    /// After the call, once the last utterances are recognised: the call record.
    CallEnd {
        call: CallId,
        agent: String,
        reason: EndReason,
        record: Box<CallRecord>,
        time: f64,
    },
}

impl WhisperMessage {
    /// The agent whose subscribers get it (None: connection-local, e.g. `hello`).
    pub fn agent(&self) -> Option<&str> {
        match self {
            WhisperMessage::Hello { .. } => None,
            WhisperMessage::CallStart { agent, .. }
            | WhisperMessage::Snapshot { agent, .. }
            | WhisperMessage::Event { agent, .. }
            | WhisperMessage::Phrase { agent, .. }
            | WhisperMessage::Nudge { agent, .. }
            | WhisperMessage::CallEnd { agent, .. } => Some(agent),
        }
    }
}

/// One message for one agent's subscribers (and supervisors).
#[derive(Debug)]
pub struct WhisperMsg {
    pub agent: String,
    pub json: String,
}

/// Where a node's messages go for the other nodes of a cluster (the broker's outbox).
type Outbox = (tokio::sync::mpsc::Sender<Arc<WhisperMsg>>, Arc<crate::io::broker::BrokerStats>);

#[derive(Clone)]
pub struct WhisperHub {
    tx: broadcast::Sender<Arc<WhisperMsg>>,
    pub sent: Arc<AtomicU64>,
    pub lagged: Arc<AtomicU64>,
    outbox: Arc<std::sync::OnceLock<Outbox>>,
}

impl Default for WhisperHub {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(1024);
        WhisperHub { tx, sent: Default::default(), lagged: Default::default(), outbox: Default::default() }
    }
}

impl WhisperHub {
    /// Publish to the message's agent's subscribers on this node, and to the other nodes of the
    /// cluster when there is a broker. Never blocks; nobody listening is fine.
    pub fn send(&self, msg: &WhisperMessage) {
        let Some(agent) = msg.agent() else { return };
        let Ok(json) = serde_json::to_string(msg) else { return };
        let m = Arc::new(WhisperMsg { agent: agent.to_string(), json });
        if let Some((out, stats)) = self.outbox.get() {
            if out.try_send(m.clone()).is_err() {
                stats.dropped.fetch_add(1, Relaxed);
            }
        }
        if self.tx.send(m).is_ok() {
            self.sent.fetch_add(1, Relaxed);
        }
    }
    /// A message another node published: to this node's subscribers only.
    pub fn deliver(&self, m: Arc<WhisperMsg>) {
        if self.tx.send(m).is_ok() {
            self.sent.fetch_add(1, Relaxed);
        }
    }
    /// Route this node's messages to the cluster broker as well (set once at start).
    pub fn set_outbox(&self, tx: tokio::sync::mpsc::Sender<Arc<WhisperMsg>>, stats: Arc<crate::io::broker::BrokerStats>) {
        let _ = self.outbox.set((tx, stats));
    }
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WhisperMsg>> {
        self.tx.subscribe()
    }
}

#[derive(Clone)]
pub struct WhisperState {
    pub hub: WhisperHub,
    pub config: Arc<WhisperConfig>,
}

/// What a token sees: one agent's calls, or every call.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Agent(String),
    All,
}

/// Compare without an early exit on the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn authorise(cfg: &WhisperConfig, token: &str) -> Option<Scope> {
    if token.is_empty() {
        return None;
    }
    if cfg.supervisors.iter().any(|t| same(t, token)) {
        return Some(Scope::All);
    }
    cfg.agents.iter().find(|(_, t)| same(t, token)).map(|(a, _)| Scope::Agent(a.clone()))
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

pub async fn handler(ws: WebSocketUpgrade, State(s): State<WhisperState>, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::to_string);
    let token = bearer.or(q.token).unwrap_or_default();
    let Some(scope) = authorise(&s.config, &token) else {
        return (StatusCode::UNAUTHORIZED, "unknown or missing whisper token\n").into_response();
    };
    let rx = s.hub.subscribe();
    let lagged = s.hub.lagged.clone();
    ws.on_upgrade(move |socket| serve(socket, scope, rx, lagged))
}

async fn serve(mut socket: WebSocket, scope: Scope, mut rx: broadcast::Receiver<Arc<WhisperMsg>>, lagged: Arc<AtomicU64>) {
    let hello = match &scope {
        Scope::Agent(a) => WhisperMessage::Hello { agent: Some(a.clone()), supervisor: None },
        Scope::All => WhisperMessage::Hello { agent: None, supervisor: Some(true) },
    };
    let hello = serde_json::to_string(&hello).unwrap_or_default();
    if socket.send(Message::Text(hello)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(m) => {
                    let mine = match &scope { Scope::All => true, Scope::Agent(a) => *a == m.agent };
                    if mine && socket.send(Message::Text(m.json.clone())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    lagged.fetch_add(n, Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_scope_subscribers() {
        let cfg = WhisperConfig { agents: [("agent7".to_string(), "t7".to_string())].into(), supervisors: vec!["sup".into()] };
        assert_eq!(authorise(&cfg, "t7"), Some(Scope::Agent("agent7".into())));
        assert_eq!(authorise(&cfg, "sup"), Some(Scope::All));
        assert_eq!(authorise(&cfg, "t8"), None);
        assert_eq!(authorise(&cfg, ""), None);
    }
}
