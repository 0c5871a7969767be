//! Call records in SQLite (`records.store = "sqlite"`, the default): one file per node, created
//! on first run, schema versioned with `PRAGMA user_version` and migrated forward; WAL with
//! synchronous=NORMAL (a record survives a process crash once written; a power cut may lose the
//! last ones). The writer and the queue are record::store's.
//!
//! Not here: the queue, masking, the progress throttle (record::store).

use super::store::{Backend, RawRow, ThreadStore, COLUMNS};
use super::{CallRecord, Progress, Query, StoreError, Stored};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::Duration;

const SCHEMA_VERSION: i64 = 1;

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub struct SqliteBackend {
    c: Connection,
    node: String,
}

/// Open the store at `path` for `node`: rows that node left `live` (it stopped with calls up)
/// become `interrupted`.
pub fn open(path: &Path, node: &str, retention_days: u32, mask: bool) -> Result<ThreadStore, StoreError> {
    ThreadStore::spawn("sqlite", SqliteBackend::open(path, node)?, retention_days, mask)
}

impl SqliteBackend {
    pub fn open(path: &Path, node: &str) -> Result<SqliteBackend, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(format!("records.path: cannot create {}: {e}", dir.display())))?;
        }
        let c = Connection::open(path).map_err(|e| StoreError::Backend(format!("records.path: cannot open {}: {e}", path.display())))?;
        c.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;").map_err(err)?;
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        if v > SCHEMA_VERSION {
            return Err(StoreError::Backend(format!("records.path holds schema version {v}, newer than this Hearken ({SCHEMA_VERSION})")));
        }
        if v < 1 {
            c.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS records (
                     uid TEXT PRIMARY KEY, node TEXT NOT NULL, call_id INTEGER NOT NULL, agent_id TEXT NOT NULL,
                     queue TEXT NOT NULL, input TEXT NOT NULL, state TEXT NOT NULL, started_unix_s INTEGER NOT NULL,
                     ended_unix_s INTEGER, reason TEXT, talk_ratio_agent REAL, interruptions_by_agent INTEGER,
                     progress TEXT, body TEXT);
                 CREATE INDEX IF NOT EXISTS records_time ON records (ended_unix_s);
                 CREATE INDEX IF NOT EXISTS records_agent ON records (agent_id, ended_unix_s);
                 CREATE INDEX IF NOT EXISTS records_call ON records (call_id);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )
            .map_err(err)?;
        }
        let n = c
            .execute("UPDATE records SET state = 'interrupted', reason = 'restart' WHERE state = 'live' AND node = ?1", params![node])
            .map_err(err)?;
        if n > 0 {
            tracing::warn!(calls = n, "calls that were up when Hearken last stopped are recorded as interrupted");
        }
        Ok(SqliteBackend { c, node: node.to_string() })
    }

    fn row(r: &rusqlite::Row) -> rusqlite::Result<Stored> {
        Ok(RawRow {
            uid: r.get(0)?,
            call_id: r.get(1)?,
            agent_id: r.get(2)?,
            queue: r.get(3)?,
            input: r.get(4)?,
            state: r.get(5)?,
            started_unix_s: r.get(6)?,
            ended_unix_s: r.get(7)?,
            reason: r.get(8)?,
            progress: r.get(9)?,
            body: r.get(10)?,
        }
        .stored())
    }
}

impl Backend for SqliteBackend {
    fn started(&mut self, s: &super::Started) -> Result<(), StoreError> {
        self.c
            .execute(
                "INSERT OR IGNORE INTO records (uid, node, call_id, agent_id, queue, input, state, started_unix_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'live', ?7)",
                params![s.uid, self.node, s.id.0 as i64, s.agent_id, s.queue, s.input.label(), s.started_unix_s as i64],
            )
            .map(|_| ())
            .map_err(err)
    }

    fn progress(&mut self, uid: &str, p: &Progress) -> Result<(), StoreError> {
        let json = serde_json::to_string(p).map_err(err)?;
        self.c.execute("UPDATE records SET progress = ?2 WHERE uid = ?1 AND state = 'live'", params![uid, json]).map(|_| ()).map_err(err)
    }

    fn ended(&mut self, r: &CallRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(r).map_err(err)?;
        let t = &r.summary.turns;
        let started = r.ended_unix_s.saturating_sub(t.call_duration_s as u64);
        self.c
            .execute(
                "INSERT INTO records (uid, node, call_id, agent_id, queue, input, state, started_unix_s, ended_unix_s, reason, talk_ratio_agent, interruptions_by_agent, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'ended', ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT(uid) DO UPDATE SET state = 'ended', agent_id = ?4, queue = ?5, ended_unix_s = ?8, reason = ?9,
                     talk_ratio_agent = ?10, interruptions_by_agent = ?11, body = ?12, progress = NULL",
                params![
                    r.uid,
                    self.node,
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
            .map_err(err)
    }

    fn get(&mut self, key: &str) -> Result<Option<Stored>, StoreError> {
        let by_uid =
            self.c.query_row(&format!("SELECT {COLUMNS} FROM records WHERE uid = ?1"), params![key], Self::row).optional().map_err(err)?;
        match (by_uid, key.parse::<i64>()) {
            (Some(s), _) => Ok(Some(s)),
            (None, Ok(id)) => self
                .c
                .query_row(
                    &format!("SELECT {COLUMNS} FROM records WHERE call_id = ?1 ORDER BY started_unix_s DESC, rowid DESC LIMIT 1"),
                    params![id],
                    Self::row,
                )
                .optional()
                .map_err(err),
            (None, Err(_)) => Ok(None),
        }
    }

    fn candidates(&mut self, q: &Query) -> Result<Vec<Stored>, StoreError> {
        let states: Vec<String> = q.states().iter().map(|s| format!("'{}'", s.label())).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM records WHERE state IN ({}) AND (?1 IS NULL OR agent_id = ?1) AND (?2 IS NULL OR queue = ?2) AND (?3 IS NULL OR input = ?3)
             ORDER BY COALESCE(ended_unix_s, started_unix_s) DESC, rowid DESC",
            states.join(",")
        );
        let mut st = self.c.prepare(&sql).map_err(err)?;
        let rows = st.query_map(params![q.agent, q.queue, q.input], Self::row).map_err(err)?;
        Ok(rows.flatten().collect())
    }

    fn delete(&mut self, key: &str) -> Result<bool, StoreError> {
        // By uid only (call ids repeat across restarts), and never a call still up: its record
        // would come back when it ends.
        let n = self.c.execute("DELETE FROM records WHERE uid = ?1 AND state != 'live'", params![key]).map_err(err)?;
        Ok(n > 0)
    }

    fn sweep(&mut self, cutoff: u64) -> Result<usize, StoreError> {
        self.c
            .execute("DELETE FROM records WHERE state != 'live' AND COALESCE(ended_unix_s, started_unix_s) < ?1", params![cutoff as i64])
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        drop(SqliteBackend::open(&path, "n1").unwrap());
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99").unwrap();
        let e = SqliteBackend::open(&path, "n1").err().unwrap().to_string();
        assert!(e.contains("newer"), "{e}");
    }
}
