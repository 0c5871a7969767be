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
    // Hostile connections from the same source: 14 more that never start a call, and one that
    // sends junk every 100 ms without ever starting. With `idle` that is 16 not-started
    // connections from 127.0.0.1, the most one source may hold: the next one gets 503. Each is
    // closed 10 s after it opened, however much it sends.
    let more_idle: Vec<_> = (0..14).map(|_| connect(h.http_port)).collect();
    let mut junk = connect(h.http_port);
    match tungstenite::connect(format!("ws://127.0.0.1:{}/stream/twilio", h.http_port)) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a 17th not-started connection from one source should get 503: {other:?}", other = other.map(|_| ())),
    }
    let junk_sender = std::thread::spawn(move || {
        if let MaybeTlsStream::Plain(t) = junk.get_mut() {
            t.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if junk.send(Message::Text(r#"{"event":"mark","mark":{"name":"x"}}"#.into())).is_err() {
                return t0.elapsed();
            }
            match junk.read() {
                Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return t0.elapsed()
                }
                Err(tungstenite::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return t0.elapsed(),
                Ok(_) => {}
            }
        }
        t0.elapsed()
    });
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
    assert_eq!(rec["input"], "twilio");
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
    assert_eq!(
        metric(&m, "hearken_streams_refused_total"),
        18,
        "the bad token, 16 connections that never started (closed at 10 s) and the 503: {m}"
    );
    let junk_closed = junk_sender.join().unwrap();
    assert!(junk_closed < Duration::from_secs(12), "a connection sending junk is closed at the start deadline too: {junk_closed:?}");
    drop((idle, more_idle));
    eprintln!("twilio stream: talk ratio {ratio} (truth {want}), interruptions {}", s["interruptions"]);
}

/// Twilio's `X-Twilio-Signature` on the upgrade: base64 HMAC-SHA1 of the stream URL keyed with
/// the account's auth token (https://www.twilio.com/docs/usage/security#validating-requests),
/// computed here from Twilio's description, not Hearken's code.
fn signed(port: u16, url: &str, auth_token: &str) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, u16> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{port}/stream/twilio").into_client_request().unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, url.as_bytes()).as_ref());
    req.headers_mut().insert("X-Twilio-Signature", sig.parse().unwrap());
    match tungstenite::connect(req) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

fn media(track: &str, k: usize, payload: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
    json!({"event": "media", "sequenceNumber": (k + 2).to_string(), "media": {"track": track, "chunk": (k + 1).to_string(), "timestamp": (k * 20).to_string(), "payload": b64}, "streamSid": "MZtest"}).to_string()
}

#[test]
fn twilio_signatures_are_checked_and_a_flooding_stream_harms_no_other() {
    let (pbx, agent) = (free_port(), free_port());
    let auth = "0123456789abcdef0123456789abcdef";
    let h = Hearken::start(pbx, agent, &format!("[streams]\ntokens = [\"twilio-stream-token\"]\ntwilio_auth_token = \"{auth}\"\n"));
    let port = h.http_port;
    // No signature, a signature for another URL, a signature with another auth token: 403.
    assert_eq!(
        tungstenite::connect(format!("ws://127.0.0.1:{port}/stream/twilio"))
            .err()
            .map(|e| matches!(e, tungstenite::Error::Http(r) if r.status() == 403)),
        Some(true)
    );
    let url = format!("wss://127.0.0.1:{port}/stream/twilio");
    assert_eq!(signed(port, &format!("wss://127.0.0.1:{port}/stream/other"), auth).err(), Some(403));
    assert_eq!(signed(port, &url, "fedcba9876543210fedcba9876543210").err(), Some(403));
    assert_eq!(metric(&h.get("/metrics").unwrap(), "hearken_streams_refused_total"), 3);

    // A well-behaved stream: 6 s of d01 in real time, while another stream floods.
    let (_, cust, agent_pcm, _) = corpus_call("d01_quick_turns");
    let mut good = signed(port, &url, auth).expect("a valid signature is accepted");
    let mut flood = signed(port, &url, auth).unwrap();
    good.send(Message::Text(start("twilio-stream-token").replace("agent3", "agent-good"))).unwrap();
    flood.send(Message::Text(start("twilio-stream-token").replace("agent3", "agent-flood"))).unwrap();
    let flooder = std::thread::spawn(move || {
        // A minute of audio in well under a second, then junk messages.
        let silence = [0xffu8; 160];
        for k in 0..3000 {
            flood.send(Message::Text(media("inbound", k, &silence))).unwrap();
        }
        for _ in 0..3000 {
            flood.send(Message::Text(r#"{"event":"mark","mark":{"name":"x"}}"#.into())).unwrap();
        }
        let _ = flood.close(None);
        while flood.read().is_ok() {}
    });
    let t0 = Instant::now();
    for k in 0..300 {
        for (track, pcm) in [("inbound", &cust), ("outbound", &agent_pcm)] {
            let ulaw: Vec<u8> = frame_of(pcm, k).iter().map(|s| hearken::codec::g711::encode_ulaw(*s)).collect();
            good.send(Message::Text(media(track, k, &ulaw))).unwrap();
        }
        pace(t0, 20 * (k as u64 + 1));
    }
    flooder.join().unwrap();
    good.send(Message::Text(json!({"event": "stop", "sequenceNumber": "999", "streamSid": "MZtest", "stop": {}}).to_string())).unwrap();
    let _ = good.close(None);

    wait_for(Duration::from_secs(20), "both records", || {
        let list: Value = serde_json::from_str(&h.get("/records").unwrap_or_default()).unwrap_or_default();
        list["records"].as_array().is_some_and(|a| a.len() == 2)
    });
    let list: Value = serde_json::from_str(&h.get("/records").unwrap()).unwrap();
    let id = list["records"].as_array().unwrap().iter().find(|r| r["agent_id"] == "agent-good").unwrap()["id"].as_u64().unwrap();
    let rec: Value = serde_json::from_str(&h.get(&format!("/records/{id}")).unwrap()).unwrap();
    assert_eq!(rec["reason"], "bye", "the good stream ended with its stop");
    assert!(rec["summary"]["talk_time_s"]["customer"].as_f64().unwrap() > 1.0, "{rec}");
    assert!(rec["summary"]["talk_time_s"]["agent"].as_f64().unwrap() > 1.0, "{rec}");
    let m = h.get("/metrics").unwrap();
    let over = metric(&m, "hearken_stream_over_rate_total");
    let frames = metric(&m, "hearken_stream_frames_total");
    // The good stream's 600 frames all pass; of the flood's 3000, about the 10 s burst budget.
    assert!(over >= 2000, "the flood was cut: {over} over rate\n{m}");
    assert!((600 + 150..=600 + 450).contains(&frames), "good 600 + flood within its budget: {frames}");
    assert_eq!(metric(&m, "hearken_stream_frames_dropped_total"), 0);
    assert_eq!(metric(&m, "hearken_streams_active"), 0);
    eprintln!("twilio flood: {over} messages/frames over rate, {frames} frames analysed");
}

/// Hearken is killed (SIGKILL) in the middle of a live stream and started again. The platform
/// side notices at once (its socket fails, nothing hangs), the call is gone from `/calls` of the
/// new process, and the stream the platform opens again for the same call (a new `streamSid`,
/// as a `<Start><Stream>` issued again gives) is analysed from there on; the stream the crash
/// cut is recorded as interrupted (durable records).
#[test]
fn restart_during_a_live_stream() {
    let (pbx, agent) = (free_port(), free_port());
    let mut h = Hearken::start(pbx, agent, "[streams]\ntokens = [\"twilio-stream-token\"]\n");
    let (_truth, cust, agent_pcm, _n) = corpus_call("d01_quick_turns");
    let b64 = base64::engine::general_purpose::STANDARD;
    let frame = |track: &str, k: usize, sid: &str| {
        let pcm = if track == "inbound" { &cust } else { &agent_pcm };
        let payload: Vec<u8> = frame_of(pcm, k).iter().map(|s| hearken::codec::g711::encode_ulaw(*s)).collect();
        json!({"event": "media", "sequenceNumber": (k + 2).to_string(), "media": {"track": track, "chunk": (k + 1).to_string(), "timestamp": (k * 20).to_string(), "payload": b64.encode(&payload)}, "streamSid": sid}).to_string()
    };
    let open = |h: &Hearken, sid: &str| {
        let mut ws = connect(h.http_port);
        ws.send(Message::Text(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string())).unwrap();
        ws.send(Message::Text(start("twilio-stream-token").replace("MZtest", sid))).unwrap();
        ws
    };
    // Real time, frames `from..to`; the first send error (the server gone) ends it early.
    let play = |ws: &mut WebSocket<MaybeTlsStream<TcpStream>>, from: usize, to: usize, sid: &str| -> Result<(), String> {
        let t0 = Instant::now();
        for k in from..to {
            ws.send(Message::Text(frame("inbound", k, sid))).map_err(|e| e.to_string())?;
            ws.send(Message::Text(frame("outbound", k, sid))).map_err(|e| e.to_string())?;
            pace(t0, 20 * (k - from + 1) as u64);
        }
        Ok(())
    };

    let mut ws = open(&h, "MZbefore");
    play(&mut ws, 0, 150, "MZbefore").unwrap();
    let calls = h.calls();
    assert!(calls.len() == 1 && calls[0]["input"] == "twilio" && calls[0]["agent_id"] == "agent3", "{calls:?}");

    h.kill9_and_restart();
    let t = Instant::now();
    let err = play(&mut ws, 150, 400, "MZbefore").expect_err("the platform's socket fails when Hearken is gone");
    eprintln!("twilio restart: the platform saw {err} after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(2), "the platform notices at once, not after a timeout: {:?}", t.elapsed());
    assert!(h.calls().is_empty(), "{:?}", h.calls());

    let mut ws = open(&h, "MZafter");
    play(&mut ws, 400, 650, "MZafter").unwrap();
    ws.send(Message::Text(
        json!({"event": "stop", "sequenceNumber": "999", "streamSid": "MZafter", "stop": {"accountSid": "ACtest", "callSid": "CAtest"}})
            .to_string(),
    ))
    .unwrap();
    let _ = ws.close(None);
    wait_for(Duration::from_secs(20), "the new stream's record", || h.get("/records?state=ended").is_some_and(|b| b.contains("\"uid\"")));
    let rec = latest_record(&h);
    assert_eq!((rec["input"].as_str(), rec["agent_id"].as_str(), rec["reason"].as_str()), (Some("twilio"), Some("agent3"), Some("bye")));
    let dur = rec["summary"]["call_duration_s"].as_f64().unwrap();
    assert!((dur - 5.0).abs() < 1.0, "the record covers the stream after the restart: {dur} s");
    assert!(h.calls().is_empty());
    let list: Value = serde_json::from_str(&h.get("/records?state=interrupted").unwrap()).unwrap();
    let cut = &list["records"][0];
    assert_eq!(
        (cut["input"].as_str(), cut["agent_id"].as_str(), cut["reason"].as_str()),
        (Some("twilio"), Some("agent3"), Some("restart")),
        "{list}"
    );
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_stream_frames_total"), 500, "{m}");
}
