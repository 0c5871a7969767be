//! Durable call records in SQLite (`records.store = "sqlite"`, the default): one file per node,
//! created on first run, schema versioned with `PRAGMA user_version` and migrated forward.
//!
//! A row is written when a call starts (state `live`), updated with the call's figures as it
//! goes (at most every `PROGRESS_EVERY`), and replaced by the record when the call ends
//! (`ended`). A process that stops with calls up (crash, kill -9, power) leaves their rows
//! `live`; the next start marks them `interrupted`, with what was measured until then. Every
//! write goes through one writer thread fed by a bounded queue, so the analysis thread never
//! waits on the disk; each ended record is committed on its own (WAL, synchronous=NORMAL: a
//! record survives a process crash once written; a power cut may lose the last ones).
//!
//! Not here: what a record holds (record::CallRecord), the HTTP API (io::http).

use super::{mask_text, CallRecord, Progress, Query, RecordState, RecordStore, Started, StoreError, Stored};
use crate::call::{CallId, Input};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Writes waiting for the writer thread at most; more are dropped and counted.
const QUEUE: usize = 20_000;
/// A live call's figures are written at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
const SCHEMA_VERSION: i64 = 1;

enum Write {
    Started(Started),
    Progress(String, Progress),
    Ended(Box<CallRecord>),
    Delete(String, SyncSender<bool>),
    Sweep,
}

pub struct SqliteStore {
    tx: SyncSender<Write>,
    read: Mutex<Connection>,
    queued: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    mask: bool,
    last_progress: Mutex<std::collections::HashMap<String, Instant>>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Create or migrate the schema.
fn migrate(c: &Connection) -> Result<(), StoreError> {
    let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
    if v > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!("records.path holds schema version {v}, newer than this Hearken ({SCHEMA_VERSION})")));
    }
    if v < 1 {
        c.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS records (
                 uid TEXT PRIMARY KEY,
                 call_id INTEGER NOT NULL,
                 agent_id TEXT NOT NULL,
                 queue TEXT NOT NULL,
                 input TEXT NOT NULL,
                 state TEXT NOT NULL,
                 started_unix_s INTEGER NOT NULL,
                 ended_unix_s INTEGER,
                 reason TEXT,
                 talk_ratio_agent REAL,
                 interruptions_by_agent INTEGER,
                 progress TEXT,
                 body TEXT
             );
             CREATE INDEX IF NOT EXISTS records_time ON records (ended_unix_s);
             CREATE INDEX IF NOT EXISTS records_agent ON records (agent_id, ended_unix_s);
             CREATE INDEX IF NOT EXISTS records_call ON records (call_id);
             PRAGMA user_version = 1;
             COMMIT;",
        )
        .map_err(err)?;
    }
    Ok(())
}

fn now_s() -> u64 {
    crate::sys::unix_now_s() as u64
}

impl SqliteStore {
    /// Open (creating the file and its folder) and mark calls left `live` by an earlier process
    /// as `interrupted`. `retention_days` 0 keeps records for ever.
    pub fn open(path: &Path, retention_days: u32, mask: bool) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(format!("records.path: cannot create {}: {e}", dir.display())))?;
        }
        let open = || -> Result<Connection, StoreError> {
            let c =
                Connection::open(path).map_err(|e| StoreError::Backend(format!("records.path: cannot open {}: {e}", path.display())))?;
            c.busy_timeout(Duration::from_secs(5)).map_err(err)?;
            c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;").map_err(err)?;
            Ok(c)
        };
        let w = open()?;
        migrate(&w)?;
        let n = w.execute("UPDATE records SET state = 'interrupted', reason = 'restart' WHERE state = 'live'", []).map_err(err)?;
        if n > 0 {
            tracing::warn!(calls = n, "calls that were up when Hearken last stopped are recorded as interrupted");
        }
        let read = open()?;
        let (tx, rx) = sync_channel(QUEUE);
        let (queued, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (q, l) = (queued.clone(), lost.clone());
        std::thread::Builder::new().name("records".into()).spawn(move || writer(w, rx, q, l, retention_days)).map_err(err)?;
        let store = SqliteStore { tx, read: Mutex::new(read), queued, lost, mask, last_progress: Mutex::default() };
        store.send(Write::Sweep);
        Ok(store)
    }

    fn send(&self, w: Write) {
        match self.tx.try_send(w) {
            Ok(()) => {
                self.queued.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.lost.fetch_add(1, Relaxed);
                tracing::warn!("record store queue full: a write was dropped");
            }
        }
    }

    fn row(r: &rusqlite::Row) -> rusqlite::Result<Stored> {
        let body: Option<String> = r.get(11)?;
        let progress: Option<String> = r.get(10)?;
        let input: String = r.get(4)?;
        Ok(Stored {
            uid: r.get(0)?,
            id: CallId(r.get::<_, i64>(1)? as u64),
            agent_id: r.get(2)?,
            queue: r.get(3)?,
            input: Input::from_label(&input).unwrap_or_default(),
            state: RecordState::parse(&r.get::<_, String>(5)?).unwrap_or(RecordState::Interrupted),
            started_unix_s: r.get::<_, i64>(6)? as u64,
            ended_unix_s: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
            reason: r.get(8)?,
            record: body.and_then(|b| serde_json::from_str(&b).ok()).map(Arc::new),
            progress: progress.and_then(|p| serde_json::from_str(&p).ok()),
        })
    }
}

const COLUMNS: &str = "uid, call_id, agent_id, queue, input, state, started_unix_s, ended_unix_s, reason, talk_ratio_agent, progress, body";

fn writer(c: Connection, rx: Receiver<Write>, queued: Arc<AtomicU64>, lost: Arc<AtomicU64>, retention_days: u32) {
    // Retention: at start, then hourly.
    let mut next_sweep = Instant::now();
    loop {
        let w = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(w) => Some(w),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let was_write = w.is_some();
        let r = match w {
            Some(Write::Started(s)) => c
                .execute(
                    "INSERT OR IGNORE INTO records (uid, call_id, agent_id, queue, input, state, started_unix_s) VALUES (?1, ?2, ?3, ?4, ?5, 'live', ?6)",
                    params![s.uid, s.id.0 as i64, s.agent_id, s.queue, s.input.label(), s.started_unix_s as i64],
                )
                .map(|_| ()),
            Some(Write::Progress(uid, p)) => c
                .execute(
                    "UPDATE records SET progress = ?2 WHERE uid = ?1 AND state = 'live'",
                    params![uid, serde_json::to_string(&p).unwrap_or_default()],
                )
                .map(|_| ()),
            Some(Write::Ended(r)) => {
                let body = serde_json::to_string(&*r).unwrap_or_default();
                let t = &r.summary.turns;
                let started = r.ended_unix_s.saturating_sub(t.call_duration_s as u64);
                c.execute(
                    "INSERT INTO records (uid, call_id, agent_id, queue, input, state, started_unix_s, ended_unix_s, reason, talk_ratio_agent, interruptions_by_agent, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'ended', ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT(uid) DO UPDATE SET state = 'ended', agent_id = ?3, queue = ?4, ended_unix_s = ?7, reason = ?8,
                         talk_ratio_agent = ?9, interruptions_by_agent = ?10, body = ?11, progress = NULL",
                    params![
                        r.uid,
                        r.id.0 as i64,
                        r.agent_id,
                        r.queue,
                        r.input.label(),
                        started as i64,
                        r.ended_unix_s as i64,
                        r.reason.label(),
                        t.talk_ratio_agent,
                        t.interruptions.by_agent as i64,
                        body
                    ],
                )
                .map(|_| ())
            }
            Some(Write::Delete(key, reply)) => {
                let n = c.execute("DELETE FROM records WHERE uid = ?1", params![key]).unwrap_or(0)
                    + match key.parse::<i64>() {
                        Ok(id) => c
                            .execute(
                                "DELETE FROM records WHERE uid = (SELECT uid FROM records WHERE call_id = ?1 ORDER BY started_unix_s DESC LIMIT 1)",
                                params![id],
                            )
                            .unwrap_or(0),
                        Err(_) => 0,
                    };
                let _ = reply.send(n > 0);
                Ok(())
            }
            Some(Write::Sweep) | None => Ok(()),
        };
        if was_write {
            queued.fetch_sub(1, Relaxed);
        }
        if let Err(e) = r {
            lost.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "record store write failed");
        }
        if retention_days > 0 && Instant::now() >= next_sweep {
            let cutoff = now_s().saturating_sub(u64::from(retention_days) * 86_400) as i64;
            match c.execute("DELETE FROM records WHERE state != 'live' AND COALESCE(ended_unix_s, started_unix_s) < ?1", params![cutoff]) {
                Ok(n) if n > 0 => tracing::info!(records = n, "records past records.retention_days removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
            }
            next_sweep = Instant::now() + Duration::from_secs(3600);
        }
    }
}

impl RecordStore for SqliteStore {
    fn started(&self, call: Started) {
        self.send(Write::Started(call));
    }

    fn progress(&self, uid: &str, p: Progress) {
        let mut last = self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.get(uid).is_some_and(|t| now.duration_since(*t) < PROGRESS_EVERY) {
            return;
        }
        last.insert(uid.to_string(), now);
        drop(last);
        self.send(Write::Progress(uid.to_string(), p));
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
        }
        self.send(Write::Ended(Box::new(record)));
        Ok(())
    }

    fn get(&self, key: &str) -> Option<Stored> {
        let c = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let by_uid =
            c.query_row(&format!("SELECT {COLUMNS} FROM records WHERE uid = ?1"), params![key], Self::row).optional().ok().flatten();
        by_uid.or_else(|| {
            let id = key.parse::<i64>().ok()?;
            c.query_row(
                &format!("SELECT {COLUMNS} FROM records WHERE call_id = ?1 ORDER BY started_unix_s DESC, rowid DESC LIMIT 1"),
                params![id],
                Self::row,
            )
            .optional()
            .ok()
            .flatten()
        })
    }

    fn query(&self, q: &Query) -> Vec<Stored> {
        let c = self.read.lock().unwrap_or_else(|e| e.into_inner());
        // Cheap filters in SQL, the rest (figures inside the record) on the rows.
        let states: Vec<String> = q.states().iter().map(|s| format!("'{}'", s.label())).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM records WHERE state IN ({}) AND (?1 IS NULL OR agent_id = ?1) AND (?2 IS NULL OR queue = ?2) AND (?3 IS NULL OR input = ?3)
             ORDER BY COALESCE(ended_unix_s, started_unix_s) DESC, rowid DESC",
            states.join(",")
        );
        let Ok(mut st) = c.prepare(&sql) else { return Vec::new() };
        let rows = st.query_map(params![q.agent, q.queue, q.input], Self::row);
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        match rows {
            Ok(rows) => rows.flatten().filter(|s| q.matches(s)).skip(q.offset).take(limit).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn delete(&self, key: &str) -> bool {
        let (tx, rx) = sync_channel(1);
        self.send(Write::Delete(key.to_string(), tx));
        rx.recv_timeout(Duration::from_secs(10)).unwrap_or(false)
    }

    fn pending(&self) -> (u64, u64) {
        (self.queued.load(Relaxed), self.lost.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::EndReason;

    fn record(uid: &str, id: u64, agent: &str, ended: u64) -> CallRecord {
        let turns = crate::analysis::turns::TurnTaking::new(Default::default(), 20).finish();
        let summary = crate::analysis::live::LiveSummary { turns, quality: None };
        let mut r: CallRecord = serde_json::from_value(serde_json::json!({
            "id": id, "uid": uid, "agent_id": agent, "queue": "sales", "input": "relay", "ended_unix_s": ended,
            "reason": "bye", "vad": "energy", "summary": summary,
            "events": [], "transcript": [{"party": "customer", "start": 0.0, "end": 1.0, "text": "card 4111 1111 mail me at a@b.example"}],
            "phrases": null, "notes": []
        }))
        .unwrap();
        r.reason = EndReason::Bye;
        r
    }

    fn wait_written(s: &SqliteStore) {
        let t = Instant::now();
        while s.pending().0 > 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn live_rows_become_interrupted_and_records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/records.db");
        {
            let s = SqliteStore::open(&path, 0, true).unwrap();
            let now = now_s();
            s.started(Started {
                uid: "u1".into(),
                id: CallId(1),
                agent_id: "a1".into(),
                queue: "q".into(),
                input: Input::Relay,
                started_unix_s: now,
            });
            s.started(Started {
                uid: "u2".into(),
                id: CallId(2),
                agent_id: "a2".into(),
                queue: "q".into(),
                input: Input::Twilio,
                started_unix_s: now,
            });
            s.progress("u2", Progress { position_s: 12.0, talk_time_customer_s: 4.0, talk_time_agent_s: 6.0, talk_ratio_agent: Some(0.6) });
            s.put(record("u1", 1, "a1", now)).unwrap();
            wait_written(&s);
            assert_eq!(s.query(&Query::default()).len(), 1, "the live call is not listed by default");
            assert_eq!(s.query(&Query { states: vec![RecordState::Live], ..Default::default() })[0].uid, "u2");
            let got = s.get("u1").unwrap();
            let text = &got.record.unwrap().transcript[0].text;
            assert_eq!(text, "card #### #### mail me at ***@***", "masked at rest");
        }
        // The process is gone with u2 up: reopened, it is interrupted with what it measured.
        let s = SqliteStore::open(&path, 0, true).unwrap();
        let all = s.query(&Query::default());
        assert_eq!(
            all.iter().map(|r| (r.uid.as_str(), r.state)).collect::<Vec<_>>(),
            [("u2", RecordState::Interrupted), ("u1", RecordState::Ended)]
        );
        assert_eq!(all[0].progress.as_ref().unwrap().talk_ratio_agent, Some(0.6));
        assert_eq!(s.get("2").unwrap().uid, "u2", "by call id");
        // Filters, pages, delete.
        assert_eq!(s.query(&Query { agent: Some("a1".into()), ..Default::default() }).len(), 1);
        assert_eq!(s.query(&Query { input: Some("twilio".into()), ..Default::default() }).len(), 1);
        assert_eq!(s.query(&Query { limit: 1, offset: 1, ..Default::default() })[0].uid, "u1");
        assert!(s.delete("u1") && !s.delete("u1"));
        assert!(s.get("u1").is_none());
    }

    #[test]
    fn retention_removes_old_records_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        {
            let s = SqliteStore::open(&path, 0, false).unwrap();
            s.put(record("old", 1, "a", now_s() - 40 * 86_400)).unwrap();
            s.put(record("new", 2, "a", now_s())).unwrap();
            wait_written(&s);
        }
        let s = SqliteStore::open(&path, 30, false).unwrap();
        let t = Instant::now();
        while s.get("old").is_some() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(s.get("old").is_none() && s.get("new").is_some());
        drop(s);
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99").unwrap();
        let e = SqliteStore::open(&path, 30, false).err().unwrap().to_string();
        assert!(e.contains("newer"), "{e}");
    }
}
