//! The call record: one typed shape for everything Hearken keeps or reports about a finished
//! call. The same [`CallRecord`] is printed by `hearken analyze --json`, served at
//! `/records/:id`, carried by the whisper `call_end` message, and stored through a
//! [`RecordStore`] (the in-memory ring today; durable stores plug in behind the same trait).
//!
//! No phone numbers, URIs or SIP Call-IDs: the internal call id, the agent id and queue labels,
//! the measured figures, and (with ASR) the transcript, which is personal data and treated so.
//!
//! Not here: how records are built (analysis::call), HTTP (io::http).

use crate::analysis::asr::TranscriptSegment;
use crate::analysis::live::LiveSummary;
use crate::analysis::phrases::PhraseSummary;
use crate::analysis::turns::TurnEvent;
use crate::call::{CallId, EndReason, Input};
use crate::coach::Nudge;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallRecord {
    /// Internal call id (0 for a recording analysed offline). Restarts at 1 with each process:
    /// `uid` is the record's lasting name.
    pub id: CallId,
    /// Unique across restarts and nodes: start time (Unix ms), node, call id. Empty offline.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    pub agent_id: String,
    pub queue: String,
    pub input: Input,
    /// Unix seconds when the call ended (when the analysis finished, offline).
    pub ended_unix_s: u64,
    pub reason: EndReason,
    /// Voice-activity detector the figures come from (`energy`, `webrtc`).
    pub vad: String,
    /// Every metric of the call (DESIGN §2) and, for RTP input, receive quality per leg.
    pub summary: LiveSummary,
    /// Listening events in audio order, as they were emitted live.
    pub events: Vec<TurnEvent>,
    /// Recognised speech of both legs (empty when ASR is off).
    pub transcript: Vec<TranscriptSegment>,
    /// Phrase signals found in the transcript (None when ASR is off).
    pub phrases: Option<PhraseSummary>,
    /// Post-call coaching notes.
    pub notes: Vec<Nudge>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record store: {0}")]
    Backend(String),
}

/// Where a stored call is: still up, finished, or up when the process stopped (crash, kill).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    Live,
    Ended,
    Interrupted,
}

impl RecordState {
    pub fn label(self) -> &'static str {
        match self {
            RecordState::Live => "live",
            RecordState::Ended => "ended",
            RecordState::Interrupted => "interrupted",
        }
    }
    pub fn parse(s: &str) -> Option<RecordState> {
        match s {
            "live" => Some(RecordState::Live),
            "ended" => Some(RecordState::Ended),
            "interrupted" => Some(RecordState::Interrupted),
            _ => None,
        }
    }
}

/// A call as the store knows it: its identity, where it is, and the record once it ended (or
/// the figures measured until the process stopped, for an interrupted one).
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    pub uid: String,
    pub id: CallId,
    pub agent_id: String,
    pub queue: String,
    pub input: Input,
    pub state: RecordState,
    pub started_unix_s: u64,
    pub ended_unix_s: Option<u64>,
    pub reason: Option<String>,
    /// The whole record (ended calls).
    #[serde(skip)]
    pub record: Option<Arc<CallRecord>>,
    /// What a live or interrupted call had measured at its last progress report.
    pub progress: Option<Progress>,
}

/// A live call's figures so far (from its snapshots).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    pub position_s: f64,
    pub talk_time_customer_s: f64,
    pub talk_time_agent_s: f64,
    pub talk_ratio_agent: Option<f64>,
}

/// A call that started: what the store keeps until it ends.
#[derive(Debug, Clone)]
pub struct Started {
    pub uid: String,
    pub id: CallId,
    pub agent_id: String,
    pub queue: String,
    pub input: Input,
    pub started_unix_s: u64,
}

/// Filters for listing records (all optional) and a page.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub agent: Option<String>,
    pub queue: Option<String>,
    pub input: Option<String>,
    /// Ended (or started, for live ones) at or after / before, Unix seconds.
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// Only these states (default: ended and interrupted).
    pub states: Vec<RecordState>,
    pub min_interruptions_by_agent: Option<u64>,
    pub min_talk_ratio_agent: Option<f64>,
    pub max_talk_ratio_agent: Option<f64>,
    pub limit: usize,
    pub offset: usize,
}

impl Query {
    pub fn states(&self) -> Vec<RecordState> {
        if self.states.is_empty() {
            vec![RecordState::Ended, RecordState::Interrupted]
        } else {
            self.states.clone()
        }
    }
    /// Whether a stored call passes the filters (the page aside).
    pub fn matches(&self, s: &Stored) -> bool {
        let t = s.ended_unix_s.unwrap_or(s.started_unix_s);
        let turns = s.record.as_ref().map(|r| &r.summary.turns);
        self.states().contains(&s.state)
            && self.agent.as_ref().is_none_or(|a| *a == s.agent_id)
            && self.queue.as_ref().is_none_or(|q| *q == s.queue)
            && self.input.as_ref().is_none_or(|i| i == s.input.label())
            && self.since.is_none_or(|x| t >= x)
            && self.until.is_none_or(|x| t < x)
            && self.min_interruptions_by_agent.is_none_or(|n| turns.is_some_and(|t| t.interruptions.by_agent as u64 >= n))
            && self.min_talk_ratio_agent.is_none_or(|x| turns.and_then(|t| t.talk_ratio_agent).is_some_and(|r| r >= x))
            && self.max_talk_ratio_agent.is_none_or(|x| turns.and_then(|t| t.talk_ratio_agent).is_some_and(|r| r <= x))
    }
}

/// Where call records go. Implementations must be cheap to call from the analysis thread (a
/// durable store queues the write to its own writer).
pub trait RecordStore: Send + Sync {
    /// A call started (a durable store keeps a row that says so, so a crash leaves a trace).
    fn started(&self, _call: Started) {}
    /// A live call's figures so far.
    fn progress(&self, _uid: &str, _p: Progress) {}
    /// A call ended: its record.
    fn put(&self, record: CallRecord) -> Result<(), StoreError>;
    /// One call by uid, or by internal call id (the newest with that id).
    fn get(&self, key: &str) -> Option<Stored>;
    /// Calls matching `q`, newest first.
    fn query(&self, q: &Query) -> Vec<Stored>;
    /// Remove an ended or interrupted call by uid (data-subject requests); whether there was one.
    fn delete(&self, key: &str) -> bool;
    /// Writes queued but not yet stored, and writes lost (queue full, backend errors).
    fn pending(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// The stored form of an ended record.
pub fn stored_of(r: &Arc<CallRecord>) -> Stored {
    Stored {
        uid: r.uid.clone(),
        id: r.id,
        agent_id: r.agent_id.clone(),
        queue: r.queue.clone(),
        input: r.input,
        state: RecordState::Ended,
        started_unix_s: r.ended_unix_s.saturating_sub(r.summary.turns.call_duration_s as u64),
        ended_unix_s: Some(r.ended_unix_s),
        reason: Some(r.reason.label().to_string()),
        record: Some(r.clone()),
        progress: None,
    }
}

/// The newest `capacity` records in memory (lost on restart): `records.store = "memory"`.
pub struct MemoryStore {
    inner: Mutex<VecDeque<Arc<CallRecord>>>,
    capacity: usize,
}

impl MemoryStore {
    pub const DEFAULT_CAPACITY: usize = 500;
    pub fn new(capacity: usize) -> Self {
        MemoryStore { inner: Mutex::new(VecDeque::new()), capacity: capacity.max(1) }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl RecordStore for MemoryStore {
    fn put(&self, r: CallRecord) -> Result<(), StoreError> {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while q.len() >= self.capacity {
            q.pop_front();
        }
        q.push_back(Arc::new(r));
        Ok(())
    }
    fn get(&self, key: &str) -> Option<Stored> {
        let q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let id = key.parse::<u64>().ok();
        q.iter().rev().find(|r| r.uid == key || Some(r.id.0) == id).map(stored_of)
    }
    fn query(&self, q: &Query) -> Vec<Stored> {
        let all = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        all.iter().rev().map(stored_of).filter(|s| q.matches(s)).skip(q.offset).take(limit).collect()
    }
    fn delete(&self, key: &str) -> bool {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = q.len();
        q.retain(|r| r.uid != key);
        q.len() != before
    }
}

/// A shared handle to the configured store.
pub type Records = Arc<dyn RecordStore>;

impl std::fmt::Debug for dyn RecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordStore")
    }
}

/// Transcript text as stored at rest when `records.mask_transcripts` is on: digits become `#`
/// (card, phone and order numbers, spelled or not) and e-mail addresses `***@***`.
pub fn mask_text(text: &str) -> String {
    // Recognisers write digits as words ("four one one one"): those are numbers too.
    const NUMBER_WORDS: [&str; 12] = ["zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "double"];
    text.split(' ')
        .map(|w| {
            if w.contains('@') && w.len() > 2 {
                "***@***".to_string()
            } else if NUMBER_WORDS.contains(&w.to_ascii_lowercase().trim_matches(|c: char| !c.is_alphanumeric())) {
                "#".to_string()
            } else {
                w.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub mod postgres;
pub mod sqlite;
pub mod store;
