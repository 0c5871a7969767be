//! The durable stores' common front: one thread owns the database connection (SQLite or
//! PostgreSQL, a [`Backend`]); the analysis thread and the HTTP handlers hand it work through a
//! bounded queue (writes: fire and forget, dropped and counted when the queue is full; reads:
//! answered on a reply channel). Masking at rest and the progress throttle live here, so both
//! databases behave the same (tests/records_store.rs runs one contract against both).
//!
//! Not here: SQL (record::sqlite, record::postgres).

use super::{mask_text, CallRecord, Progress, Query, RecordStore, Started, StoreError, Stored};
use crate::call::{CallId, Input};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Work waiting for the store's thread at most; more writes are dropped and counted.
const QUEUE: usize = 20_000;
/// A live call's figures are written at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// One database, driven from the store's own thread.
pub trait Backend: Send + 'static {
    fn started(&mut self, s: &Started) -> Result<(), StoreError>;
    fn progress(&mut self, uid: &str, p: &Progress) -> Result<(), StoreError>;
    fn ended(&mut self, r: &CallRecord) -> Result<(), StoreError>;
    /// By uid, or the newest call with that internal id.
    fn get(&mut self, key: &str) -> Result<Option<Stored>, StoreError>;
    /// Rows in the query's states (and agent / queue / input when given), newest first; the
    /// front applies the other filters and the page.
    fn candidates(&mut self, q: &Query) -> Result<Vec<Stored>, StoreError>;
    fn delete(&mut self, key: &str) -> Result<bool, StoreError>;
    /// Remove records that ended (or were interrupted) before `cutoff` (Unix s); how many.
    fn sweep(&mut self, cutoff: u64) -> Result<usize, StoreError>;
}

/// A row as both databases give it back.
pub struct RawRow {
    pub uid: String,
    pub call_id: i64,
    pub agent_id: String,
    pub queue: String,
    pub input: String,
    pub state: String,
    pub started_unix_s: i64,
    pub ended_unix_s: Option<i64>,
    pub reason: Option<String>,
    pub progress: Option<String>,
    pub body: Option<String>,
}

impl RawRow {
    pub fn stored(self) -> Stored {
        Stored {
            uid: self.uid,
            id: CallId(self.call_id as u64),
            agent_id: self.agent_id,
            queue: self.queue,
            input: Input::from_label(&self.input).unwrap_or_default(),
            state: super::RecordState::parse(&self.state).unwrap_or(super::RecordState::Interrupted),
            started_unix_s: self.started_unix_s as u64,
            ended_unix_s: self.ended_unix_s.map(|v| v as u64),
            reason: self.reason,
            record: self.body.and_then(|b| serde_json::from_str(&b).ok()).map(Arc::new),
            progress: self.progress.and_then(|p| serde_json::from_str(&p).ok()),
        }
    }
}

/// The columns every query selects, in [`RawRow`] order.
pub const COLUMNS: &str = "uid, call_id, agent_id, queue, input, state, started_unix_s, ended_unix_s, reason, progress, body";

enum Work {
    Started(Started),
    Progress(String, Progress),
    Ended(Box<CallRecord>),
    Get(String, SyncSender<Option<Stored>>),
    Query(Box<Query>, SyncSender<Vec<Stored>>),
    Delete(String, SyncSender<bool>),
}

pub struct ThreadStore {
    tx: SyncSender<Work>,
    queued: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    mask: bool,
    last_progress: Mutex<std::collections::HashMap<String, Instant>>,
}

impl ThreadStore {
    /// Run `backend` on a thread of its own; `retention_days` 0 keeps records for ever.
    pub fn spawn<B: Backend>(name: &str, backend: B, retention_days: u32, mask: bool) -> Result<ThreadStore, StoreError> {
        let (tx, rx) = sync_channel(QUEUE);
        let (queued, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (q, l) = (queued.clone(), lost.clone());
        std::thread::Builder::new()
            .name(format!("records-{name}"))
            .spawn(move || run(backend, rx, q, l, retention_days))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(ThreadStore { tx, queued, lost, mask, last_progress: Mutex::default() })
    }

    fn send(&self, w: Work) -> bool {
        // Under a backlog, a live call's progress is the first thing to give up (not counted:
        // nothing of the record is lost); the end of a call and requests wait for room instead.
        let backlog = self.queued.load(Relaxed) > QUEUE as u64 / 2;
        let w = match w {
            Work::Progress(..) if backlog => return false,
            w @ (Work::Ended(_) | Work::Delete(..)) => {
                self.queued.fetch_add(1, Relaxed);
                if self.tx.send(w).is_err() {
                    self.queued.fetch_sub(1, Relaxed);
                    self.lost.fetch_add(1, Relaxed);
                    return false;
                }
                return true;
            }
            w => w,
        };
        match self.tx.try_send(w) {
            Ok(()) => {
                self.queued.fetch_add(1, Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.lost.fetch_add(1, Relaxed);
                tracing::warn!("record store queue full: work dropped");
                false
            }
        }
    }

    fn ask<T>(&self, make: impl FnOnce(SyncSender<T>) -> Work, otherwise: T) -> T {
        let (tx, rx) = sync_channel(1);
        if !self.send(make(tx)) {
            return otherwise;
        }
        rx.recv_timeout(Duration::from_secs(30)).unwrap_or(otherwise)
    }
}

fn run<B: Backend>(mut b: B, rx: Receiver<Work>, queued: Arc<AtomicU64>, lost: Arc<AtomicU64>, retention_days: u32) {
    // Retention: at start, then hourly.
    let mut next_sweep = Instant::now();
    loop {
        let w = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(w) => Some(w),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let result = match w {
            None => Ok(()),
            Some(w) => {
                queued.fetch_sub(1, Relaxed);
                match w {
                    Work::Started(s) => b.started(&s),
                    Work::Progress(uid, p) => b.progress(&uid, &p),
                    Work::Ended(r) => b.ended(&r),
                    Work::Get(key, reply) => b.get(&key).map(|r| {
                        let _ = reply.send(r);
                    }),
                    Work::Query(q, reply) => b.candidates(&q).map(|rows| {
                        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
                        let _ = reply.send(rows.into_iter().filter(|s| q.matches(s)).skip(q.offset).take(limit).collect());
                    }),
                    Work::Delete(key, reply) => b.delete(&key).map(|d| {
                        let _ = reply.send(d);
                    }),
                }
            }
        };
        if let Err(e) = result {
            lost.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "record store: work failed");
        }
        if retention_days > 0 && Instant::now() >= next_sweep {
            let cutoff = (crate::sys::unix_now_s() as u64).saturating_sub(u64::from(retention_days) * 86_400);
            match b.sweep(cutoff) {
                Ok(n) if n > 0 => tracing::info!(records = n, "records past records.retention_days removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
            }
            next_sweep = Instant::now() + Duration::from_secs(3600);
        }
    }
}

impl RecordStore for ThreadStore {
    fn started(&self, call: Started) {
        self.send(Work::Started(call));
    }

    fn progress(&self, uid: &str, p: Progress) {
        let mut last = self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.get(uid).is_some_and(|t| now.duration_since(*t) < PROGRESS_EVERY) {
            return;
        }
        last.insert(uid.to_string(), now);
        drop(last);
        self.send(Work::Progress(uid.to_string(), p));
    }

    fn put(&self, mut record: CallRecord) -> Result<(), StoreError> {
        self.last_progress.lock().unwrap_or_else(|e| e.into_inner()).remove(&record.uid);
        if record.uid.is_empty() {
            record.uid = format!("{}-local-{}", crate::sys::unix_now_s() as u64 * 1000, record.id.0);
        }
        if self.mask {
            for seg in &mut record.transcript {
                seg.text = mask_text(&seg.text);
                for w in &mut seg.words {
                    w.word = mask_text(&w.word);
                }
            }
            // Phrase evidence holds the matched words and spelled strings (card, order numbers).
            if let Some(p) = &mut record.phrases {
                for e in &mut p.events {
                    e.evidence = mask_text(&e.evidence);
                }
            }
        }
        self.send(Work::Ended(Box::new(record)));
        Ok(())
    }

    fn get(&self, key: &str) -> Option<Stored> {
        self.ask(|tx| Work::Get(key.to_string(), tx), None)
    }

    fn query(&self, q: &Query) -> Vec<Stored> {
        self.ask(|tx| Work::Query(Box::new(q.clone()), tx), Vec::new())
    }

    fn delete(&self, key: &str) -> bool {
        self.ask(|tx| Work::Delete(key.to_string(), tx), false)
    }

    fn pending(&self) -> (u64, u64) {
        (self.queued.load(Relaxed), self.lost.load(Relaxed))
    }
}
