//! jambonz `listen` and FreeSWITCH mod_audio_fork inputs (issue 11): clients that follow the
//! published formats — WebSocket subprotocol `audio.jambonz.org` / `audiostream.drachtio.org`, a
//! JSON metadata text frame first (jambonz: `callSid`, `from`, `to`, `sampleRate`, `mixType` and
//! the application's own keys), then binary frames of signed 16-bit little-endian PCM, stereo
//! interleaved (left the caller, right the callee) — stream a corpus call in real time. Neither
//! platform runs here; the framing is theirs. The calls are analysed within the corpus
//! tolerances; a mixed (mono) stream is refused with its reason; a bad token is refused.

mod common;
use common::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::{stream::MaybeTlsStream, Message, WebSocket};

fn connect(port: u16, path: &str, protocol: &str) -> WebSocket<MaybeTlsStream<TcpStream>> {
    let mut req = format!("ws://127.0.0.1:{port}{path}").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (ws, resp) = tungstenite::connect(req).expect("stream endpoint");
    assert_eq!(resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()), Some(protocol), "subprotocol agreed");
    ws
}

/// Stream d02 as stereo L16 at `rate` (16 kHz: each 8 kHz sample doubled), 20 ms per frame.
fn stream(ws: &mut WebSocket<MaybeTlsStream<TcpStream>>, cust: &[i16], agent: &[i16], rate: usize) -> usize {
    let n = cust.len().max(agent.len()) / 160;
    let t0 = Instant::now();
    for k in 0..n {
        let mut bytes = Vec::with_capacity(160 * 4 * rate / 8000);
        for i in 0..160 {
            let (c, a) = (cust.get(k * 160 + i).copied().unwrap_or(0), agent.get(k * 160 + i).copied().unwrap_or(0));
            for _ in 0..rate / 8000 {
                bytes.extend_from_slice(&c.to_le_bytes());
                bytes.extend_from_slice(&a.to_le_bytes());
            }
        }
        ws.send(Message::Binary(bytes)).unwrap();
        let due = t0 + Duration::from_millis(20 * (k as u64 + 1));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let _ = ws.close(None);
    n
}

fn record(h: &Hearken, nth: usize) -> Value {
    let mut rec = Value::Null;
    wait_for(Duration::from_secs(30), "the stream's call record", || {
        let list: Value = serde_json::from_str(&h.get("/records").unwrap_or_default()).unwrap_or_default();
        let ids: Vec<u64> = list["records"].as_array().map(|a| a.iter().filter_map(|r| r["id"].as_u64()).collect()).unwrap_or_default();
        if ids.len() <= nth {
            return false;
        }
        let mut ids = ids;
        ids.sort();
        rec = serde_json::from_str(&h.get(&format!("/records/{}", ids[nth])).unwrap()).unwrap();
        true
    });
    rec
}

#[test]
fn jambonz_and_audio_fork_streams_are_analysed() {
    let (pbx, agent_port) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent_port, "[streams]\ntokens = [\"l16-stream-token\"]\n");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev/d02_agent_interrupts");
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let want = truth["metrics"]["talk_ratio_agent"].as_f64().unwrap();
    let (cust, agent) = (read_leg(&dir.join("customer.wav")), read_leg(&dir.join("agent.wav")));

    // Refusals first: a mixed stream (both voices in one channel) and a bad token.
    let mut mixed = connect(h.http_port, "/stream/jambonz", "audio.jambonz.org");
    mixed
        .send(Message::Text(json!({"callSid": "m1", "sampleRate": 8000, "mixType": "mixed", "token": "l16-stream-token"}).to_string()))
        .unwrap();
    mixed.send(Message::Binary(vec![0; 320])).unwrap();
    match mixed.read() {
        Ok(Message::Close(Some(f))) => assert!(f.reason.contains("turn metrics"), "{f:?}"),
        other => panic!("a mixed stream is refused with its reason: {other:?}"),
    }
    // A wrong token in the URL is refused before the upgrade; one in jambonz metadata with the
    // first audio frame.
    let mut req =
        format!("ws://127.0.0.1:{}/stream/audiofork?token=nope-nope-nope&mix=stereo&rate=8000", h.http_port).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "audiostream.drachtio.org".parse().unwrap());
    match tungstenite::connect(req) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("a wrong URL token gets 401: {:?}", other.map(|_| ())),
    }
    let mut bad = connect(h.http_port, "/stream/jambonz", "audio.jambonz.org");
    bad.send(Message::Text(json!({"sampleRate": 8000, "mixType": "stereo", "token": "nope-nope-nope"}).to_string())).unwrap();
    bad.send(Message::Binary(vec![0; 640])).unwrap();
    match bad.read() {
        Ok(Message::Close(Some(f))) => assert!(f.reason.contains("token"), "{f:?}"),
        other => panic!("a wrong metadata token closes the stream with the reason: {other:?}"),
    }

    // jambonz listen (metadata with the application's keys, then stereo 8 kHz) and FreeSWITCH
    // uuid_audio_fork (settings in the URL, stereo 16 kHz), at the same time.
    let mut j = connect(h.http_port, "/stream/jambonz", "audio.jambonz.org");
    j.send(Message::Text(
        json!({"callSid": "c1", "from": "+15551230000", "to": "100", "sampleRate": 8000, "mixType": "stereo", "agent": "agent4", "queue": "support", "token": "l16-stream-token"})
            .to_string(),
    ))
    .unwrap();
    let mut f =
        connect(h.http_port, "/stream/audiofork?token=l16-stream-token&mix=stereo&rate=16000&agent=agent6", "audiostream.drachtio.org");
    f.send(Message::Text(json!({"uuid": "fs-1"}).to_string())).unwrap();
    let (c2, a2) = (cust.clone(), agent.clone());
    let other = std::thread::spawn(move || stream(&mut f, &c2, &a2, 16000));
    let n = stream(&mut j, &cust, &agent, 8000);
    other.join().unwrap();
    record(&h, 1);
    let by_agent = |id: &str| -> Value {
        let list: Value = serde_json::from_str(&h.get("/records").unwrap()).unwrap();
        let rid = list["records"].as_array().unwrap().iter().find(|r| r["agent_id"] == id).and_then(|r| r["id"].as_u64()).expect("record");
        serde_json::from_str(&h.get(&format!("/records/{rid}")).unwrap()).unwrap()
    };
    let (r, r2) = (by_agent("agent4"), by_agent("agent6"));
    for (name, rec, agent_id) in [("jambonz", &r, "agent4"), ("audio_fork", &r2, "agent6")] {
        assert_eq!(rec["input"], name, "{name}");
        assert_eq!(rec["agent_id"], agent_id, "{name}");
        let ratio = assert_meets_corpus(rec, &truth, name);
        eprintln!("{name}: talk ratio {ratio} (truth {want})");
    }
    assert_eq!(r["queue"], "support");
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_streams_refused_total"), 3, "mixed, URL token, metadata token: {m}");
    assert_eq!(metric(&m, "hearken_streams_started_total"), 2);
    assert!(metric(&m, "hearken_stream_frames_total") >= 4 * n as u64);
}
