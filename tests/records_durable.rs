//! Durable call records (issue 15, first part): SQLite by default, next to the config file.
//! 50 calls end (Twilio media streams from the test, the platform's message format), 20 more
//! are up, Hearken is killed with SIGKILL: after the restart all 50 records are there, the 20
//! calls that were up are recorded as `interrupted` with what they had measured, and record
//! uids never repeat although call ids start again at 1. Then the HTTP API: filters, pages,
//! CSV, delete.

mod common;
use common::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::{stream::MaybeTlsStream, Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn stream(h: &Hearken, n: usize, agent: &str, frames: usize) -> Ws {
    let mut ws = tungstenite::connect(format!("ws://127.0.0.1:{}/stream/twilio", h.http_port)).expect("stream endpoint").0;
    let sid = format!("MZ{n}");
    ws.send(Message::Text(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string())).unwrap();
    ws.send(Message::Text(
        json!({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {"streamSid": sid, "callSid": format!("CA{n}"),
            "tracks": ["inbound", "outbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"token": "rec-token", "agent": agent, "queue": "sales"}}})
        .to_string(),
    ))
    .unwrap();
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.encode([0xffu8; 160]);
    for k in 0..frames {
        for track in ["inbound", "outbound"] {
            ws.send(Message::Text(
                json!({"event": "media", "sequenceNumber": (k + 2).to_string(), "streamSid": sid,
                    "media": {"track": track, "chunk": (k + 1).to_string(), "timestamp": (k * 20).to_string(), "payload": payload}})
                .to_string(),
            ))
            .unwrap();
        }
    }
    ws
}

fn list(h: &Hearken, query: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&h.get(&format!("/records?{query}")).unwrap_or_default()).unwrap_or_default();
    v["records"].as_array().cloned().unwrap_or_default()
}

#[test]
fn records_survive_kill_9_and_calls_up_at_the_crash_are_recorded_as_interrupted() {
    let mut h = Hearken::start(free_port(), free_port(), "[streams]\ntokens = [\"rec-token\"]\n");
    for n in 0..50 {
        let mut ws = stream(&h, n, if n % 2 == 0 { "agent1" } else { "agent2" }, 5);
        ws.send(Message::Text(json!({"event": "stop", "streamSid": format!("MZ{n}")}).to_string())).unwrap();
        let _ = ws.close(None);
    }
    wait_for(Duration::from_secs(20), "50 records", || list(&h, "limit=1000").len() == 50);
    let live: Vec<Ws> = (50..70).map(|n| stream(&h, n, "agent3", 50)).collect();
    wait_for(Duration::from_secs(20), "20 live calls with progress", || list(&h, "state=live&limit=1000").len() == 20);
    let before: Vec<String> = list(&h, "limit=1000").iter().map(|r| r["uid"].as_str().unwrap().to_string()).collect();

    h.kill9_and_restart();
    drop(live);
    let after = list(&h, "limit=1000");
    let ended: Vec<&Value> = after.iter().filter(|r| r["state"] == "ended").collect();
    let interrupted: Vec<&Value> = after.iter().filter(|r| r["state"] == "interrupted").collect();
    assert_eq!((ended.len(), interrupted.len()), (50, 20), "{after:?}");
    for uid in &before {
        assert!(ended.iter().any(|r| r["uid"] == uid.as_str()), "record {uid} lost");
    }
    assert!(interrupted.iter().all(|r| r["agent_id"] == "agent3" && r["reason"] == "restart"), "{interrupted:?}");
    // A new call after the restart: call id 1 again, a uid of its own.
    let mut ws = stream(&h, 99, "agent1", 5);
    ws.send(Message::Text(json!({"event": "stop", "streamSid": "MZ99"}).to_string())).unwrap();
    let _ = ws.close(None);
    wait_for(Duration::from_secs(10), "the new record", || list(&h, "limit=1000&state=ended").len() == 51);
    let all = list(&h, "limit=1000&state=ended,interrupted");
    let mut uids: Vec<&str> = all.iter().map(|r| r["uid"].as_str().unwrap()).collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 71, "uids never repeat");
    let newest = all.last().unwrap();
    let by_id = h.get(&format!("/records/{}", newest["id"])).unwrap();
    assert!(by_id.contains(newest["uid"].as_str().unwrap()), "a call id finds the newest call with it");

    // Filters, pages, CSV, delete.
    assert_eq!(list(&h, "agent=agent2&limit=1000").len(), 25);
    assert_eq!(list(&h, "input=twilio&state=interrupted&limit=1000").len(), 20);
    assert_eq!(list(&h, "limit=10&offset=60").len(), 10);
    let csv = h.get("/records?format=csv&agent=agent1&limit=1000").unwrap();
    assert_eq!(csv.lines().count(), 1 + 26, "{csv}");
    assert!(csv.starts_with("uid,id,state,agent_id"));
    let uid = ended[0]["uid"].as_str().unwrap().to_string();
    let delete = |key: &str| {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", h.http_port)).unwrap();
        write!(s, "DELETE /records/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split(' ').nth(1).unwrap_or_default().to_string()
    };
    assert_eq!(delete(&uid), "204");
    assert_eq!(delete(&uid), "404", "already gone");
    assert!(h.get(&format!("/records/{uid}")).is_none(), "deleted");
    assert!(h.get("/records?bogus=1").is_none(), "an unknown parameter is refused");
    eprintln!("records: 50 of 50 kept through kill -9, 20 calls up at the crash recorded as interrupted");
}
