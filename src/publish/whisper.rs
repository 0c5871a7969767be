//! The whisper channel: an authenticated WebSocket per agent (`GET /whisper`) carrying JSON
//! messages for that agent's calls — call start, live metric snapshots (~1 s), listening
//! events, nudges, call end with the post-call summary. Supervisor tokens see every agent.
//! The message schema is in docs/whisper.md.
//!
//! Auth: `Authorization: Bearer TOKEN` or `?token=TOKEN` (browsers cannot set headers on a
//! WebSocket). Unknown tokens get 401 before the upgrade.
//!
//! Not here: what the messages say (the analysis thread builds them).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
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

/// One message for one agent's subscribers (and supervisors).
#[derive(Debug)]
pub struct WhisperMsg {
    pub agent: String,
    pub json: String,
}

#[derive(Clone)]
pub struct WhisperHub {
    tx: broadcast::Sender<Arc<WhisperMsg>>,
    pub sent: Arc<AtomicU64>,
    pub lagged: Arc<AtomicU64>,
}

impl Default for WhisperHub {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(1024);
        WhisperHub { tx, sent: Default::default(), lagged: Default::default() }
    }
}

impl WhisperHub {
    /// Publish to `agent`'s subscribers. Never blocks; nobody listening is fine.
    pub fn send(&self, agent: &str, value: &serde_json::Value) {
        let json = value.to_string();
        if self.tx.send(Arc::new(WhisperMsg { agent: agent.to_string(), json })).is_ok() {
            self.sent.fetch_add(1, Relaxed);
        }
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

#[derive(Debug, Clone, PartialEq)]
enum Scope {
    Agent(String),
    All,
}

/// Compare without an early exit on the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorise(cfg: &WhisperConfig, token: &str) -> Option<Scope> {
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
        Scope::Agent(a) => serde_json::json!({"type": "hello", "agent": a}),
        Scope::All => serde_json::json!({"type": "hello", "supervisor": true}),
    };
    if socket.send(Message::Text(hello.to_string())).await.is_err() {
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
