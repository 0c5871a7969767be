//! Twilio Media Streams input (issue 11): a test client that follows Twilio's published
//! WebSocket messages exactly (https://www.twilio.com/docs/voice/media-streams/websocket-messages:
//! `connected`, `start` with `mediaFormat` and `customParameters`, `media` with `track`, `chunk`,
//! `timestamp` and base64 µ-law `payload` — numbers as strings, as Twilio sends them — `mark`,
//! `stop`) streams a corpus call in real time, both tracks (`<Stream track="both_tracks">`), to
//! Hearken's `/stream/twilio`. Twilio itself cannot run here; the message shapes are Twilio's.
//! The call is analysed like an inline one: the record's metrics meet the corpus tolerances, a
//! bad token is refused, malformed frames are counted and skipped.

mod common;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use tungstenite::{stream::MaybeTlsStream, Message, WebSocket};

fn connect(port: u16) -> WebSocket<MaybeTlsStream<TcpStream>> {
    tungstenite::connect(format!("ws://127.0.0.1:{port}/stream/twilio")).expect("stream endpoint").0
}

fn start(token: &str) -> String {
    json!({
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "ACtest",
            "streamSid": "MZtest",
            "callSid": "CAtest",
            "tracks": ["inbound", "outbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"token": token, "agent": "agent3", "queue": "sales"}
        },
        "streamSid": "MZtest"
    })
    .to_string()
}

#[test]
fn a_twilio_stream_is_analysed_like_an_inline_call() {
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent, "[streams]\ntokens = [\"twilio-stream-token\"]\n");

    // A bad token: the stream is closed before any audio is taken.
    let mut bad = connect(h.http_port);
    bad.send(Message::Text(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string())).unwrap();
    bad.send(Message::Text(start("wrong-token-123"))).unwrap();
    let closed = matches!(bad.read(), Ok(Message::Close(_)) | Err(_));
    assert!(closed, "a wrong token closes the stream");
    wait_for(Duration::from_secs(5), "refusal counted", || metric(&h.get("/metrics").unwrap(), "hearken_streams_refused_total") == 1);

    // A connection that never starts a call is closed after 10 s (it would otherwise hold a
    // stream slot): opened now, checked at the end.
    let idle = connect(h.http_port);

    let name = "d02_agent_interrupts";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev").join(name);
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let (cust, agent_pcm) = (read_leg(&dir.join("customer.wav")), read_leg(&dir.join("agent.wav")));
    let mut ws = connect(h.http_port);
    ws.send(Message::Text(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string())).unwrap();
    ws.send(Message::Text(start("twilio-stream-token"))).unwrap();
    // Junk between real frames: counted and skipped, the stream goes on.
    ws.send(Message::Text("{not json".into())).unwrap();
    ws.send(Message::Binary(vec![1, 2, 3])).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let n = cust.len().max(agent_pcm.len()) / 160;
    let t0 = Instant::now();
    let mut seq = 1u64;
    for k in 0..n {
        for (track, pcm) in [("inbound", &cust), ("outbound", &agent_pcm)] {
            let mut frame = [0i16; 160];
            if let Some(src) = pcm.get(k * 160..((k + 1) * 160).min(pcm.len())) {
                frame[..src.len()].copy_from_slice(src);
            }
            let payload: Vec<u8> = frame.iter().map(|s| hearken::codec::g711::encode_ulaw(*s)).collect();
            seq += 1;
            let m = json!({
                "event": "media",
                "sequenceNumber": seq.to_string(),
                "media": {"track": track, "chunk": (k + 1).to_string(), "timestamp": (k * 20).to_string(), "payload": b64.encode(&payload)},
                "streamSid": "MZtest"
            });
            ws.send(Message::Text(m.to_string())).unwrap();
        }
        if k % 250 == 0 {
            ws.send(Message::Text(
                json!({"event": "mark", "sequenceNumber": "0", "streamSid": "MZtest", "mark": {"name": "m"}}).to_string(),
            ))
            .unwrap();
        }
        // Real time: frame k leaves at k × 20 ms.
        let due = t0 + Duration::from_millis(20 * (k as u64 + 1));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    ws.send(Message::Text(
        json!({"event": "stop", "sequenceNumber": "9999", "streamSid": "MZtest", "stop": {"accountSid": "ACtest", "callSid": "CAtest"}})
            .to_string(),
    ))
    .unwrap();
    let _ = ws.close(None);

    let rec = latest_record(&h);
    assert_eq!(rec["input"], "stream");
    assert_eq!(rec["agent_id"], "agent3");
    assert_eq!(rec["queue"], "sales");
    assert_eq!(rec["reason"], "bye", "stop ends the call");
    let s = &rec["summary"];
    let want = truth["metrics"]["talk_ratio_agent"].as_f64().unwrap();
    let ratio = assert_meets_corpus(&rec, &truth, "twilio");
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_stream_malformed_total"), 2, "{m}");
    assert_eq!(metric(&m, "hearken_stream_frames_dropped_total"), 0);
    assert_eq!(metric(&m, "hearken_stream_frames_total"), 2 * n as u64);
    assert_eq!(metric(&m, "hearken_streams_active"), 0, "the idle connection was closed too");
    assert_eq!(metric(&m, "hearken_streams_refused_total"), 2, "the bad token and the idle connection: {m}");
    drop(idle);
    eprintln!("twilio stream: talk ratio {ratio} (truth {want}), interruptions {}", s["interruptions"]);
}
