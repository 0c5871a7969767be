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
    /// Internal call id (0 for a recording analysed offline).
    pub id: CallId,
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

/// Where finished call records go. Implementations must be cheap to call from the analysis
/// thread (a durable store queues the write to its own writer).
pub trait RecordStore: Send + Sync {
    fn put(&self, record: CallRecord) -> Result<(), StoreError>;
    fn get(&self, id: CallId) -> Option<Arc<CallRecord>>;
    /// All kept records, oldest first.
    fn list(&self) -> Vec<Arc<CallRecord>>;
}

/// The newest `capacity` records in memory (lost on restart).
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
    fn get(&self, id: CallId) -> Option<Arc<CallRecord>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().find(|r| r.id == id).cloned()
    }
    fn list(&self) -> Vec<Arc<CallRecord>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}

/// A shared handle to the configured store.
pub type Records = Arc<dyn RecordStore>;
