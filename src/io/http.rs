//! HTTP status endpoint: `/healthz`, `/status` (relay and SIP counters), `/calls` (active calls
//! with ports and per-leg counters; internal ids only, never numbers, URIs or Call-IDs).
//!
//! Not here: Prometheus metrics (they get their own module).

use crate::io::media::{Registry, RelayStats};
use crate::media::ports::PortPool;
use crate::media::session::DropReason;
use crate::sip::proxy::SipStats;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct HttpState {
    pub relay: Arc<RelayStats>,
    pub sip: Arc<SipStats>,
    pub pool: Arc<Mutex<PortPool>>,
    pub registry: Registry,
    pub records: crate::record::Records,
    /// Speech recognition counters; None when ASR is off.
    pub asr: Option<Arc<crate::analysis::asr::AsrStats>>,
    /// Everything for /metrics.
    pub metrics: Arc<prometheus_client::registry::Registry>,
    pub whisper: crate::publish::whisper::WhisperState,
    /// `http.require_tokens`.
    pub require_tokens: bool,
    pub streams: crate::io::stream::StreamState,
}

pub fn router(state: HttpState) -> Router {
    let whisper = Router::new().route("/whisper", get(crate::publish::whisper::handler)).with_state(state.whisper.clone());
    let streams = crate::io::stream::router(state.streams.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/calls", get(calls))
        .route("/records", get(records))
        .route("/records/:id", get(record).delete(delete_record))
        .with_state(state)
        .merge(whisper)
        .merge(streams)
}

async fn metrics(State(s): State<HttpState>) -> impl axum::response::IntoResponse {
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], crate::publish::metrics::encode(&s.metrics))
}

async fn status(State(s): State<HttpState>) -> Json<Value> {
    let r = &s.relay;
    let q = &s.sip;
    let (in_use, capacity) = {
        let p = s.pool.lock().unwrap_or_else(|e| e.into_inner());
        (p.in_use(), p.capacity())
    };
    let dropped: serde_json::Map<String, Value> = DropReason::ALL.iter().map(|d| (d.label().to_string(), json!(r.dropped(*d)))).collect();
    Json(json!({
        "relay": {
            "active_calls": r.active_calls.load(Relaxed),
            "forwarded_packets": r.forwarded_packets.load(Relaxed),
            "forwarded_bytes": r.forwarded_bytes.load(Relaxed),
            "dropped": dropped,
            "send_errors": r.send_errors.load(Relaxed),
            "tap_frames": r.tap_frames.load(Relaxed),
            "tap_dropped": r.tap_dropped.load(Relaxed),
            "rtp_timeouts": r.rtp_timeouts.load(Relaxed),
            "port_pairs_in_use": in_use,
            "port_pairs_total": capacity,
        },
        "asr": match &s.asr {
            None => json!({"enabled": false}),
            Some(a) => json!({
                "enabled": true,
                "utterances": a.utterances.load(Relaxed),
                "skipped_utterances": a.skipped_utterances.load(Relaxed),
                "truncated_utterances": a.truncated_utterances.load(Relaxed),
                "recognizers_created": a.recognizers_created.load(Relaxed),
                "real_time_factor": a.real_time_factor(),
            }),
        },
        "sip": {
            "requests": q.requests.load(Relaxed),
            "responses": q.responses.load(Relaxed),
            "malformed": q.malformed.load(Relaxed),
            "answered_locally": q.answered_locally.load(Relaxed),
            "retransmissions": q.retransmissions.load(Relaxed),
            "stray_responses": q.stray_responses.load(Relaxed),
            "ports_exhausted": q.ports_exhausted.load(Relaxed),
            "bad_sdp": q.bad_sdp.load(Relaxed),
            "calls_started": q.calls_started.load(Relaxed),
            "calls_ended": q.calls_ended.load(Relaxed),
        }
    }))
}

async fn calls(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(t): axum::extract::Query<TokenParam>,
) -> Result<Json<Value>, StatusCode> {
    let who = viewer(&s, &headers, t.token.as_deref()).ok_or(StatusCode::UNAUTHORIZED)?;
    let reg = s.registry.lock().unwrap_or_else(|e| e.into_inner());
    let mut list: Vec<_> =
        reg.values().filter(|c| matches!(&who, Viewer::All) || who == Viewer::Agent(c.agent_id.clone())).cloned().collect();
    list.sort_by_key(|c| c.id);
    Ok(Json(json!({ "calls": list })))
}

use crate::publish::whisper::Scope as Viewer;

/// Who asks, by the whisper tokens: everyone (tokens not required), a supervisor, or one agent;
/// None: refused.
fn viewer(s: &HttpState, headers: &axum::http::HeaderMap, query_token: Option<&str>) -> Option<Viewer> {
    if !s.require_tokens {
        return Some(Viewer::All);
    }
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    crate::publish::whisper::authorise(&s.whisper.config, bearer.or(query_token).unwrap_or_default())
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct TokenParam {
    token: Option<String>,
}

/// `/records` query parameters: filters, a page, and the format.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsParams {
    agent: Option<String>,
    queue: Option<String>,
    input: Option<String>,
    since: Option<u64>,
    until: Option<u64>,
    /// Comma-separated: `ended`, `interrupted`, `live` (default: ended and interrupted).
    state: Option<String>,
    min_interruptions_by_agent: Option<u64>,
    min_talk_ratio_agent: Option<f64>,
    max_talk_ratio_agent: Option<f64>,
    limit: Option<usize>,
    offset: Option<usize>,
    /// `json` (default) or `csv`.
    format: Option<String>,
    token: Option<String>,
}

/// Calls, newest first (`limit` default 100, at most 10 000), filtered; JSON with the headline
/// figures, or CSV.
async fn records(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
    params: Result<axum::extract::Query<RecordsParams>, axum::extract::rejection::QueryRejection>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(axum::extract::Query(p)) = params else {
        return (StatusCode::BAD_REQUEST, "unknown or malformed query parameter\n").into_response();
    };
    let Some(who) = viewer(&s, &headers, p.token.as_deref()) else {
        return (StatusCode::UNAUTHORIZED, "a supervisor or agent token is required\n").into_response();
    };
    // An agent sees only its own calls, whatever it asks for.
    let agent = match who {
        Viewer::All => p.agent,
        Viewer::Agent(a) => Some(a),
    };
    let mut states = Vec::new();
    for st in p.state.as_deref().unwrap_or("").split(',').filter(|x| !x.is_empty()) {
        match crate::record::RecordState::parse(st) {
            Some(x) => states.push(x),
            None => return (StatusCode::BAD_REQUEST, format!("state: `{st}` is not ended, interrupted or live\n")).into_response(),
        }
    }
    let q = crate::record::Query {
        agent,
        queue: p.queue,
        input: p.input,
        since: p.since,
        until: p.until,
        states,
        min_interruptions_by_agent: p.min_interruptions_by_agent,
        min_talk_ratio_agent: p.min_talk_ratio_agent,
        max_talk_ratio_agent: p.max_talk_ratio_agent,
        limit: p.limit.unwrap_or(100).clamp(1, 10_000),
        offset: p.offset.unwrap_or(0).min(1_000_000),
    };
    // The store answers from its own thread: wait for it off the async workers.
    let store = s.records.clone();
    let list = tokio::task::spawn_blocking(move || store.query(&q)).await.unwrap_or_default();
    let row = |r: &crate::record::Stored| {
        let t = r.record.as_ref().map(|x| &x.summary.turns);
        json!({
            "id": r.id,
            "uid": r.uid,
            "state": r.state,
            "agent_id": r.agent_id,
            "queue": r.queue,
            "input": r.input,
            "started_unix_s": r.started_unix_s,
            "ended_unix_s": r.ended_unix_s,
            "reason": r.reason,
            "call_duration_s": t.map(|t| t.call_duration_s).or(r.progress.as_ref().map(|p| p.position_s)),
            "talk_ratio_agent": t.and_then(|t| t.talk_ratio_agent).or(r.progress.as_ref().and_then(|p| p.talk_ratio_agent)),
            "interruptions": t.map(|t| json!({"by_agent": t.interruptions.by_agent, "by_customer": t.interruptions.by_customer})),
        })
    };
    if p.format.as_deref() == Some("csv") {
        let mut out = String::from("uid,id,state,agent_id,queue,input,started_unix_s,ended_unix_s,reason,call_duration_s,talk_ratio_agent,interruptions_by_agent,interruptions_by_customer\n");
        let cell = |v: &Value| match v {
            Value::Null => String::new(),
            Value::String(x) => format!("\"{}\"", x.replace('"', "\"\"")),
            other => other.to_string(),
        };
        for r in &list {
            let v = row(r);
            let cols = [
                "uid",
                "id",
                "state",
                "agent_id",
                "queue",
                "input",
                "started_unix_s",
                "ended_unix_s",
                "reason",
                "call_duration_s",
                "talk_ratio_agent",
            ];
            let mut line: Vec<String> = cols.iter().map(|c| cell(&v[*c])).collect();
            line.push(cell(&v["interruptions"]["by_agent"]));
            line.push(cell(&v["interruptions"]["by_customer"]));
            out.push_str(&line.join(","));
            out.push('\n');
        }
        return ([("content-type", "text/csv; charset=utf-8")], out).into_response();
    }
    // Oldest first within the page, as before (a client appends in time order).
    let mut rows: Vec<Value> = list.iter().map(row).collect();
    rows.reverse();
    Json(json!({ "records": rows })).into_response()
}

/// One call by uid or internal id: the full record of an ended call (same fields as
/// `hearken analyze --json`, plus `uid`), or what is known of a live or interrupted one.
async fn record(
    State(s): State<HttpState>,
    Path(key): Path<String>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(t): axum::extract::Query<TokenParam>,
) -> Result<Json<Value>, StatusCode> {
    let who = viewer(&s, &headers, t.token.as_deref()).ok_or(StatusCode::UNAUTHORIZED)?;
    let store = s.records.clone();
    let r = tokio::task::spawn_blocking(move || store.get(&key)).await.ok().flatten().ok_or(StatusCode::NOT_FOUND)?;
    // Another agent's call does not exist, as far as an agent can tell.
    if matches!(&who, Viewer::Agent(a) if *a != r.agent_id) {
        return Err(StatusCode::NOT_FOUND);
    }
    match &r.record {
        Some(rec) => serde_json::to_value(&**rec).map(Json).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR),
        None => serde_json::to_value(&r).map(Json).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// Remove a call's record (data-subject requests).
async fn delete_record(
    State(s): State<HttpState>,
    Path(key): Path<String>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(t): axum::extract::Query<TokenParam>,
) -> StatusCode {
    // Deleting is for supervisors (data-subject requests), never for agents.
    match viewer(&s, &headers, t.token.as_deref()) {
        Some(Viewer::All) => {}
        Some(Viewer::Agent(_)) => return StatusCode::FORBIDDEN,
        None => return StatusCode::UNAUTHORIZED,
    }
    // Call ids repeat across restarts: deleting names the record by its uid.
    if key.parse::<u64>().is_ok() {
        return StatusCode::BAD_REQUEST;
    }
    let store = s.records.clone();
    if tokio::task::spawn_blocking(move || store.delete(&key)).await.unwrap_or(false) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}
