//! The record stores' contract, run against SQLite (a temp file) and PostgreSQL (Debian's
//! PostgreSQL 15, a throwaway cluster started here on a loopback port; as root, its processes
//! run as `nobody`, since PostgreSQL refuses root): the same calls must give the same answers.

use hearken::call::{CallId, Input};
use hearken::record::{CallRecord, Progress, Query, RecordState, RecordStore, Started};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

struct Pg {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cmd` as `nobody` when this process is root.
fn as_postgres_user(bin: &str) -> Command {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
        c
    } else {
        Command::new(bin)
    }
}

fn start_pg() -> Pg {
    assert!(std::path::Path::new(PG_BIN).join("postgres").exists(), "PostgreSQL 15 is installed by scripts/setup.sh (make test)");
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let data = dir.path().join("data");
    let init = as_postgres_user(&format!("{PG_BIN}/initdb"))
        .args(["-D", data.to_str().unwrap(), "-U", "hearken", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .output()
        .expect("initdb");
    assert!(init.status.success(), "initdb: {}", String::from_utf8_lossy(&init.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = as_postgres_user(&format!("{PG_BIN}/postgres"))
        .args(["-D", data.to_str().unwrap(), "-k", dir.path().to_str().unwrap(), "-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postgres");
    let pg = Pg { child, port, _dir: dir };
    let t = Instant::now();
    while postgres::Client::connect(&pg.url(), postgres::NoTls).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "PostgreSQL did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    pg
}

impl Pg {
    fn url(&self) -> String {
        format!("postgresql://hearken@127.0.0.1:{}/postgres", self.port)
    }
}

fn record(uid: &str, id: u64, agent: &str, ended: u64, by_agent: u64) -> CallRecord {
    let mut r = bare_record(uid, id, agent, ended, by_agent);
    // A phrase hit whose evidence is a spelled card number.
    let mut d = hearken::analysis::phrases::PhraseDetector::new(hearken::analysis::phrases::PhrasePack::builtin_en(), Default::default());
    let mut p = d.finish(10.0, [5.0, 5.0]);
    p.events.push(hearken::analysis::phrases::PhraseEvent {
        kind: hearken::analysis::phrases::PhraseKind::SpelledSequence,
        party: hearken::call::Party::Customer,
        at: 1.0,
        evidence: "4111 1111 1111 1111".into(),
    });
    r.phrases = Some(p);
    r
}

fn bare_record(uid: &str, id: u64, agent: &str, ended: u64, by_agent: u64) -> CallRecord {
    let mut turns = serde_json::to_value(hearken::analysis::turns::TurnTaking::new(Default::default(), 20).finish()).unwrap();
    turns["interruptions"]["by_agent"] = by_agent.into();
    turns["talk_ratio_agent"] = 0.4.into();
    serde_json::from_value(serde_json::json!({
        "id": id, "uid": uid, "agent_id": agent, "queue": "sales", "input": "relay", "ended_unix_s": ended,
        "reason": "bye", "vad": "energy", "summary": turns,
        "events": [], "transcript": [{"party": "customer", "start": 0.0, "end": 1.0, "text": "card 4111 1111 mail me at a@b.example"}],
        "phrases": null, "notes": []
    }))
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn settle(s: &dyn RecordStore) {
    let t = Instant::now();
    while s.pending().0 > 0 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The contract: `open(node)` opens the same database again, as a process restart would.
fn contract(open: &dyn Fn(&str) -> Box<dyn RecordStore>) {
    let t = now();
    {
        let s = open("n1");
        s.started(Started {
            uid: "u1".into(),
            id: CallId(1),
            agent_id: "a1".into(),
            queue: "q".into(),
            input: Input::Relay,
            started_unix_s: t,
        });
        s.started(Started {
            uid: "u2".into(),
            id: CallId(2),
            agent_id: "a2".into(),
            queue: "q".into(),
            input: Input::Twilio,
            started_unix_s: t,
        });
        s.progress("u2", Progress { position_s: 12.0, talk_time_customer_s: 4.0, talk_time_agent_s: 6.0, talk_ratio_agent: Some(0.6) });
        s.put(record("u1", 1, "a1", t, 3)).unwrap();
        s.put(record("old", 9, "a1", t - 40 * 86_400, 0)).unwrap();
        settle(&*s);
        assert_eq!(
            s.query(&Query::default()).iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(),
            ["u1", "old"],
            "live calls are not listed by default"
        );
        assert_eq!(s.query(&Query { states: vec![RecordState::Live], ..Default::default() })[0].uid, "u2");
        let text = s.get("u1").unwrap().record.unwrap().transcript[0].text.clone();
        assert_eq!(text, "card #### #### mail me at ***@***", "masked at rest");
        let got = s.get("u1").unwrap().record.unwrap();
        assert_eq!(got.phrases.as_ref().unwrap().events.last().unwrap().evidence, "#### #### #### ####", "phrase evidence masked too");
        // Another node's live call in the same database (PostgreSQL's case).
        let other = open("n2");
        other.started(Started {
            uid: "x1".into(),
            id: CallId(1),
            agent_id: "a3".into(),
            queue: "q".into(),
            input: Input::Ng,
            started_unix_s: t,
        });
        settle(&*other);
    }
    // Node n1 starts again: its call that was up is interrupted, with what it measured; n2's is not.
    let s = open("n1");
    let all = s.query(&Query::default());
    assert_eq!(
        all.iter().map(|r| (r.uid.as_str(), r.state)).collect::<Vec<_>>(),
        [("u2", RecordState::Interrupted), ("u1", RecordState::Ended)],
        "the record older than retention_days (30) is gone"
    );
    assert_eq!(all[0].progress.as_ref().unwrap().talk_ratio_agent, Some(0.6));
    assert_eq!(all[0].reason.as_deref(), Some("restart"));
    assert_eq!(s.get("x1").map(|r| r.state), Some(RecordState::Live), "another node's live call is left alone");
    assert_eq!(s.get("2").unwrap().uid, "u2", "by call id");
    // Filters and pages.
    assert_eq!(s.query(&Query { agent: Some("a1".into()), ..Default::default() }).len(), 1);
    assert_eq!(s.query(&Query { input: Some("twilio".into()), ..Default::default() }).len(), 1);
    assert_eq!(s.query(&Query { min_interruptions_by_agent: Some(3), ..Default::default() }).len(), 1);
    assert_eq!(s.query(&Query { min_interruptions_by_agent: Some(4), ..Default::default() }).len(), 0);
    assert_eq!(s.query(&Query { limit: 1, offset: 1, ..Default::default() })[0].uid, "u1");
    // Delete (data-subject request).
    assert!(s.delete("u1") && !s.delete("u1"));
    assert!(s.get("u1").is_none());
    assert_eq!(s.pending().1, 0, "nothing lost");
}

#[test]
fn sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/records.db");
    contract(&|node| Box::new(hearken::record::sqlite::open(&path, node, 30, true).unwrap()));
}

#[test]
fn postgres_store_keeps_the_contract() {
    let pg = start_pg();
    let url = pg.url();
    contract(&|node| Box::new(hearken::record::postgres::open(&url, node, 30, true).unwrap()));
    // A newer schema than this Hearken knows is refused, naming the key.
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute("INSERT INTO hearken_schema (version) VALUES (99)").unwrap();
    let e = hearken::record::postgres::open(&url, "n1", 30, true).err().unwrap().to_string();
    assert!(e.contains("records.url") && e.contains("newer"), "{e}");
}
