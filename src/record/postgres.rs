//! Call records in PostgreSQL (`records.store = "postgres"`, `records.url`), for several nodes
//! sharing one database: each node marks only its own `live` rows `interrupted` when it starts.
//! The schema is versioned in `hearken_schema` and migrated forward in a transaction.
//!
//! Not here: the queue, masking, the progress throttle (record::store).

use super::store::{Backend, RawRow, ThreadStore, COLUMNS};
use super::{CallRecord, Progress, Query, StoreError, Stored};
use postgres::{Client, NoTls};

const SCHEMA_VERSION: i32 = 1;

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub struct PgBackend {
    c: Client,
    node: String,
}

/// Connect to `url` for `node` (run before the async runtime needs the thread: the client
/// blocks).
pub fn open(url: &str, node: &str, retention_days: u32, mask: bool) -> Result<ThreadStore, StoreError> {
    ThreadStore::spawn("postgres", PgBackend::connect(url, node)?, retention_days, mask)
}

fn row(r: &postgres::Row) -> Stored {
    RawRow {
        uid: r.get(0),
        call_id: r.get(1),
        agent_id: r.get(2),
        queue: r.get(3),
        input: r.get(4),
        state: r.get(5),
        started_unix_s: r.get(6),
        ended_unix_s: r.get(7),
        reason: r.get(8),
        progress: r.get(9),
        body: r.get(10),
    }
    .stored()
}

impl PgBackend {
    pub fn connect(url: &str, node: &str) -> Result<PgBackend, StoreError> {
        // postgres::Client runs its own runtime: never inside a tokio worker.
        let (url, node) = (url.to_string(), node.to_string());
        std::thread::spawn(move || -> Result<PgBackend, StoreError> {
            let mut c = Client::connect(&url, NoTls).map_err(|e| StoreError::Backend(format!("records.url: cannot connect: {e}")))?;
            let mut tx = c.transaction().map_err(err)?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS hearken_schema (version INTEGER NOT NULL)").map_err(err)?;
            let v: i32 = tx.query_opt("SELECT max(version) FROM hearken_schema", &[]).map_err(err)?.and_then(|r| r.get(0)).unwrap_or(0);
            if v > SCHEMA_VERSION {
                return Err(StoreError::Backend(format!(
                    "records.url holds schema version {v}, newer than this Hearken ({SCHEMA_VERSION})"
                )));
            }
            if v < 1 {
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS records (
                         uid TEXT PRIMARY KEY, node TEXT NOT NULL, call_id BIGINT NOT NULL, agent_id TEXT NOT NULL,
                         queue TEXT NOT NULL, input TEXT NOT NULL, state TEXT NOT NULL, started_unix_s BIGINT NOT NULL,
                         ended_unix_s BIGINT, reason TEXT, talk_ratio_agent DOUBLE PRECISION, interruptions_by_agent BIGINT,
                         progress TEXT, body TEXT, seq BIGSERIAL);
                     CREATE INDEX IF NOT EXISTS records_time ON records (ended_unix_s);
                     CREATE INDEX IF NOT EXISTS records_agent ON records (agent_id, ended_unix_s);
                     CREATE INDEX IF NOT EXISTS records_call ON records (call_id);
                     INSERT INTO hearken_schema (version) VALUES (1);",
                )
                .map_err(err)?;
            }
            let n = tx
                .execute("UPDATE records SET state = 'interrupted', reason = 'restart' WHERE state = 'live' AND node = $1", &[&node])
                .map_err(err)?;
            tx.commit().map_err(err)?;
            if n > 0 {
                tracing::warn!(calls = n, "calls that were up when this node last stopped are recorded as interrupted");
            }
            Ok(PgBackend { c, node })
        })
        .join()
        .map_err(|_| StoreError::Backend("records.url: connecting panicked".into()))?
    }
}

impl Backend for PgBackend {
    fn started(&mut self, s: &super::Started) -> Result<(), StoreError> {
        self.c
            .execute(
                "INSERT INTO records (uid, node, call_id, agent_id, queue, input, state, started_unix_s) VALUES ($1, $2, $3, $4, $5, $6, 'live', $7)
                 ON CONFLICT (uid) DO NOTHING",
                &[&s.uid, &self.node, &(s.id.0 as i64), &s.agent_id, &s.queue, &s.input.label(), &(s.started_unix_s as i64)],
            )
            .map(|_| ())
            .map_err(err)
    }

    fn progress(&mut self, uid: &str, p: &Progress) -> Result<(), StoreError> {
        let json = serde_json::to_string(p).map_err(err)?;
        self.c.execute("UPDATE records SET progress = $2 WHERE uid = $1 AND state = 'live'", &[&uid, &json]).map(|_| ()).map_err(err)
    }

    fn ended(&mut self, r: &CallRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(r).map_err(err)?;
        let t = &r.summary.turns;
        let started = r.ended_unix_s.saturating_sub(t.call_duration_s as u64) as i64;
        self.c
            .execute(
                "INSERT INTO records (uid, node, call_id, agent_id, queue, input, state, started_unix_s, ended_unix_s, reason, talk_ratio_agent, interruptions_by_agent, body)
                 VALUES ($1, $2, $3, $4, $5, $6, 'ended', $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (uid) DO UPDATE SET state = 'ended', agent_id = $4, queue = $5, ended_unix_s = $8, reason = $9,
                     talk_ratio_agent = $10, interruptions_by_agent = $11, body = $12, progress = NULL",
                &[
                    &r.uid,
                    &self.node,
                    &(r.id.0 as i64),
                    &r.agent_id,
                    &r.queue,
                    &r.input.label(),
                    &started,
                    &(r.ended_unix_s as i64),
                    &r.reason.label(),
                    &t.talk_ratio_agent,
                    &(t.interruptions.by_agent as i64),
                    &body,
                ],
            )
            .map(|_| ())
            .map_err(err)
    }

    fn get(&mut self, key: &str) -> Result<Option<Stored>, StoreError> {
        if let Some(r) = self.c.query_opt(&format!("SELECT {COLUMNS} FROM records WHERE uid = $1"), &[&key]).map_err(err)? {
            return Ok(Some(row(&r)));
        }
        let Ok(id) = key.parse::<i64>() else { return Ok(None) };
        let r = self
            .c
            .query_opt(&format!("SELECT {COLUMNS} FROM records WHERE call_id = $1 ORDER BY started_unix_s DESC, seq DESC LIMIT 1"), &[&id])
            .map_err(err)?;
        Ok(r.as_ref().map(row))
    }

    fn candidates(&mut self, q: &Query) -> Result<Vec<Stored>, StoreError> {
        let states: Vec<String> = q.states().iter().map(|s| s.label().to_string()).collect();
        let rows = self
            .c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM records WHERE state = ANY($1) AND ($2::TEXT IS NULL OR agent_id = $2) AND ($3::TEXT IS NULL OR queue = $3)
                     AND ($4::TEXT IS NULL OR input = $4) ORDER BY COALESCE(ended_unix_s, started_unix_s) DESC, seq DESC"
                ),
                &[&states, &q.agent, &q.queue, &q.input],
            )
            .map_err(err)?;
        Ok(rows.iter().map(row).collect())
    }

    fn delete(&mut self, key: &str) -> Result<bool, StoreError> {
        // By uid only (call ids repeat across restarts), and never a call still up.
        let n = self.c.execute("DELETE FROM records WHERE uid = $1 AND state <> 'live'", &[&key]).map_err(err)?;
        Ok(n > 0)
    }

    fn sweep(&mut self, cutoff: u64) -> Result<usize, StoreError> {
        self.c
            .execute("DELETE FROM records WHERE state <> 'live' AND COALESCE(ended_unix_s, started_unix_s) < $1", &[&(cutoff as i64)])
            .map(|n| n as usize)
            .map_err(err)
    }
}
