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
        .route("/records/:id", get(record))
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

async fn calls(State(s): State<HttpState>) -> Json<Value> {
    let reg = s.registry.lock().unwrap_or_else(|e| e.into_inner());
    let mut list: Vec<_> = reg.values().cloned().collect();
    list.sort_by_key(|c| c.id);
    Json(json!({ "calls": list }))
}

/// Finished calls, newest last: id, agent, end time, reason and the headline figures.
async fn records(State(s): State<HttpState>) -> Json<Value> {
    let list: Vec<Value> = s
        .records
        .list()
        .iter()
        .map(|r| {
            let t = &r.summary.turns;
            json!({
                "id": r.id,
                "agent_id": r.agent_id,
                "ended_unix_s": r.ended_unix_s,
                "reason": r.reason,
                "call_duration_s": t.call_duration_s,
                "talk_ratio_agent": t.talk_ratio_agent,
                "interruptions": {"by_agent": t.interruptions.by_agent, "by_customer": t.interruptions.by_customer},
            })
        })
        .collect();
    Json(json!({ "records": list }))
}

/// One finished call: the full summary (same fields as `hearken analyze --json`), quality and
/// the live events.
async fn record(State(s): State<HttpState>, Path(id): Path<u64>) -> Result<Json<Value>, StatusCode> {
    let r = s.records.get(crate::call::CallId(id)).ok_or(StatusCode::NOT_FOUND)?;
    serde_json::to_value(&*r).map(Json).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}
