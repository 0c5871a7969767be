//! The whisper channel as agents and supervisors use it: a WebSocket per agent, authenticated by
//! token. During a real call (sipp + corpus audio replayed as RTP), the call's agent receives its
//! call start, live snapshots, listening events (the interruptions) and nudges; another agent's
//! token receives nothing of it; a supervisor sees everything; a bad token is refused.

mod common;
use common::*;
use serde_json::Value;
use std::net::TcpStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tungstenite::{stream::MaybeTlsStream, WebSocket};

#[allow(clippy::result_large_err)]
fn connect(port: u16, token: &str) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, tungstenite::Error> {
    let (ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}/whisper?token={token}"))?;
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    }
    Ok(ws)
}

/// Collect every JSON message a subscriber gets until `stop` says so.
fn collect(mut ws: WebSocket<MaybeTlsStream<TcpStream>>, stop: mpsc::Receiver<()>) -> std::thread::JoinHandle<Vec<Value>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            if stop.try_recv().is_ok() {
                return got;
            }
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => got.push(serde_json::from_str(&t).unwrap()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return got,
            }
        }
    })
}

#[test]
fn agents_get_only_their_own_calls_and_bad_tokens_are_refused() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev/d02_agent_interrupts");
    let (cust, agent) = (read_leg(&scenario.join("customer.wav")), read_leg(&scenario.join("agent.wav")));
    let (pbx, agent_port) = (free_port(), free_port());
    let cfg = "[whisper]\nsupervisors = [\"sup-token-123\"]\n[whisper.agents]\nagent1 = \"agent1-token\"\nagent2 = \"agent2-token\"\n";
    let h = Hearken::start(pbx, agent_port, cfg);

    // A bad or missing token is refused before the upgrade.
    for bad in ["nope-nope-nope", ""] {
        match connect(h.http_port, bad) {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
            other => panic!("token {bad:?} not refused: {:?}", other.map(|_| ())),
        }
    }
    let subs: Vec<(mpsc::Sender<()>, std::thread::JoinHandle<Vec<Value>>)> = ["agent1-token", "agent2-token", "sup-token-123"]
        .iter()
        .map(|t| {
            let (tx, rx) = mpsc::channel();
            (tx, collect(connect(h.http_port, t).unwrap(), rx))
        })
        .collect();
    let t0 = Instant::now();
    let (_, rec) = call_with_audio_on(&h, pbx, agent_port, &cust, &agent);
    std::thread::sleep(Duration::from_millis(500));
    let got: Vec<Vec<Value>> = subs
        .into_iter()
        .map(|(tx, j)| {
            let _ = tx.send(());
            j.join().unwrap()
        })
        .collect();
    let (a1, a2, sup) = (&got[0], &got[1], &got[2]);
    let types = |v: &Vec<Value>, t: &str| v.iter().filter(|m| m["type"] == t).count();
    assert_eq!(a1[0]["type"], "hello");
    assert_eq!(a1[0]["agent"], "agent1");
    assert_eq!(types(a1, "call_start"), 1, "{a1:?}");
    assert_eq!(types(a1, "call_end"), 1);
    assert!(types(a1, "snapshot") >= 3, "live snapshots about every second ({:?} of call)", t0.elapsed());
    let interruptions = a1.iter().filter(|m| m["type"] == "event" && m["event"]["kind"] == "interruption").count();
    assert_eq!(interruptions as u64, rec["summary"]["interruptions"]["count"].as_u64().unwrap(), "{a1:?}");
    // The nudge for the interruption reaches agent1 (once: the cooldown holds the second).
    let nudges: Vec<&Value> = a1.iter().filter(|m| m["type"] == "nudge").collect();
    assert!(nudges.iter().any(|n| n["kind"] == "interruption" && n["call"] == rec["id"]), "{a1:?}");
    assert!(nudges.iter().all(|n| n["text"].as_str().is_some_and(|t| !t.is_empty())));
    // Agent 2 had no call: it hears nothing but its hello.
    assert_eq!(a2.len(), 1, "agent2 received someone else's messages: {a2:?}");
    // Every message is one of the typed messages, and each field it carries is documented.
    let doc = whisper_doc();
    for m in a1.iter().chain(sup) {
        let typed: hearken::publish::whisper::WhisperMessage =
            serde_json::from_value(m.clone()).unwrap_or_else(|e| panic!("not a WhisperMessage ({e}): {m}"));
        assert_eq!(&serde_json::to_value(&typed).unwrap(), m, "typed round trip changes the message");
        let row = doc_row(&doc, m["type"].as_str().unwrap());
        for k in m.as_object().unwrap().keys().filter(|k| *k != "type") {
            assert!(
                row.contains(&format!("`{k}`")) || row.contains(&format!("`{k} ")),
                "field {k} of {} not in docs/whisper.md: {row}",
                m["type"]
            );
        }
    }
    // The call_end message carries the very record /records/:id serves.
    let end = a1.iter().find(|m| m["type"] == "call_end").unwrap();
    assert_eq!(end["record"], rec, "call_end record differs from /records/:id");
    // The supervisor sees agent1's call too.
    assert_eq!(types(sup, "call_start"), 1);
    assert!(sup.iter().all(|m| m["type"] == "hello" || m["agent"] == "agent1"));
}

/// With the audio cue on, the nudge plays a tone into the agent-bound media only: the agent leg
/// receives packets that differ from what the PBX sent (the cue), everything else is identical,
/// and the customer leg is byte-identical to what the agent side sent.
#[test]
fn audio_cue_reaches_the_agent_leg_only() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev/d02_agent_interrupts");
    let (cust, agent) = (read_leg(&scenario.join("customer.wav")), read_leg(&scenario.join("agent.wav")));
    let (pbx, agent_port) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent_port, "[cue]\nenabled = true\nduration_ms = 200\n");
    let (cap, rec) = call_with_audio_on(&h, pbx, agent_port, &cust, &agent);
    assert!(rec["notes"].is_array());
    // Customer leg: every packet the agent side sent arrives unchanged, in order.
    assert_eq!(cap.received_by_pbx, cap.sent_by_agent, "the customer must never hear the cue");
    // Agent leg: same count; the packets that differ are one contiguous cue of ~200 ms.
    assert_eq!(cap.received_by_agent.len(), cap.sent_by_pbx.len());
    let differ: Vec<usize> =
        cap.received_by_agent.iter().zip(&cap.sent_by_pbx).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect();
    assert!(!differ.is_empty(), "no cue on the agent leg");
    assert!((9..=12).contains(&differ.len()), "a 200 ms cue spans about 10 packets: {differ:?}");
    assert!(differ.windows(2).all(|w| w[1] == w[0] + 1), "one contiguous cue: {differ:?}");
    // Headers are untouched: only payload bytes change.
    for &i in &differ {
        assert_eq!(cap.received_by_agent[i][..12], cap.sent_by_pbx[i][..12]);
    }
}

fn whisper_doc() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/whisper.md")).unwrap()
}

/// The table row of docs/whisper.md that documents message type `t`.
fn doc_row(doc: &str, t: &str) -> String {
    doc.lines().find(|l| l.starts_with(&format!("| `{t}` |"))).unwrap_or_else(|| panic!("type {t} not in docs/whisper.md")).to_string()
}

/// docs/whisper.md stays true: its examples parse as the typed messages, and its table lists
/// exactly the message types Hearken sends.
#[test]
fn whisper_doc_matches_the_message_types() {
    let doc = whisper_doc();
    let example = doc.split("## Example").nth(1).expect("an Example section");
    let lines: Vec<&str> = example.lines().filter(|l| l.starts_with('{')).collect();
    assert!(lines.len() >= 5, "examples: {lines:?}");
    let mut seen = std::collections::BTreeSet::new();
    for l in lines {
        let m: hearken::publish::whisper::WhisperMessage =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("example does not parse ({e}): {l}"));
        let v = serde_json::to_value(&m).unwrap();
        seen.insert(v["type"].as_str().unwrap().to_string());
    }
    let documented: std::collections::BTreeSet<String> =
        doc.lines().filter_map(|l| l.strip_prefix("| `").and_then(|r| r.split('`').next()).map(str::to_string)).collect();
    let all: std::collections::BTreeSet<String> =
        ["hello", "call_start", "snapshot", "event", "phrase", "nudge", "call_end"].iter().map(|s| s.to_string()).collect();
    assert_eq!(documented, all, "the table documents exactly the message types");
    assert!(seen.is_subset(&all));
    // A message that is not one of them is refused, not silently accepted.
    assert!(serde_json::from_str::<hearken::publish::whisper::WhisperMessage>(r#"{"type":"nudge","call":1}"#).is_err());
    assert!(serde_json::from_str::<hearken::publish::whisper::WhisperMessage>(r#"{"type":"gossip"}"#).is_err());
}
