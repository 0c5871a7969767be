//! Asterisk chan_websocket input (issue 11). Asterisk cannot run here; the test client does what
//! Asterisk's `chan_websocket.c` and `res_websocket_client.c` do on the wire, from their source
//! and the "WebSocket channel driver" documentation: for each of two ARI snoop channels (the
//! customer's and the agent's voice) it opens a WebSocket to the `uri` of a `per_call_config`
//! websocket_client.conf connection, with the dial string's `v()` parameters as the query, the
//! subprotocol `media`, and `Authorization: Basic` from `username`/`password`; it sends
//! `MEDIA_START` (plain text on one leg, the JSON form `f(json)` on the other), then the
//! channel's audio as headerless binary frames (ulaw on one leg, slin16 on the other), 20 ms
//! each in real time, and ends with a close frame (1000). The two connections are one call; its
//! record meets the corpus tolerances. A wrong password, a missing party, a second
//! connection for the same party and a leg from another address are refused; media before MEDIA_START is counted.

mod common;
use base64::Engine;
use common::*;
use std::net::TcpStream;
use std::time::Instant;
use tungstenite::client::IntoClientRequest;
use tungstenite::{stream::MaybeTlsStream, Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// The connection, or the HTTP status it was refused with.
fn connect(port: u16, query: &str, password: Option<&str>) -> Result<Ws, u16> {
    let mut req = format!("ws://127.0.0.1:{port}/stream/asterisk?{query}").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "media".parse().unwrap());
    if let Some(p) = password {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("asterisk:{p}"));
        req.headers_mut().insert("Authorization", format!("Basic {basic}").parse().unwrap());
    }
    match tungstenite::connect(req) {
        Ok((ws, resp)) => {
            assert_eq!(resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap()), Some("media"));
            Ok(ws)
        }
        Err(tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[test]
fn two_chan_websocket_channels_are_one_analysed_call() {
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent, "[streams]\ntokens = [\"asterisk-ws-secret\"]\n");
    let port = h.http_port;
    let q = |party: &str| format!("call=pbx1-1732812345.101&party={party}&agent=agent4&queue=support");

    // Refusals before any call: a wrong password, no party.
    assert_eq!(connect(port, &q("customer"), Some("wrong-password")).err(), Some(401));
    assert_eq!(connect(port, "call=x&token=asterisk-ws-secret", None).err(), Some(400));

    let (truth, cust, agent_pcm, n) = corpus_call("d03_backchannels");
    // The customer's channel: websocket_client.conf password, plain-text control, ulaw.
    let mut c = connect(port, &q("customer"), Some("asterisk-ws-secret")).unwrap();
    // Media before MEDIA_START: its format is unknown, counted and skipped.
    c.send(Message::Binary(vec![0xff; 160])).unwrap();
    c.send(Message::Text(
        "MEDIA_START connection_id:5f0c3e1a-8f7a-4a6e-9d55-0d1f6b7c2a11 channel:WebSocket/hearken/0x7f3a5c00a1b0 channel_id:pbx1-1732812345.102 format:ulaw optimal_frame_size:160 ptime:20".into(),
    ))
    .unwrap();
    // Someone else with a valid token, from another address, tries to take the agent's place in
    // this call: refused (a call's legs come from the address of its first leg).
    let mut req = format!("ws://127.0.0.1:{port}/stream/asterisk?{}&token=asterisk-ws-secret", q("agent")).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "media".parse().unwrap());
    let (mut squat, _) = tungstenite::client(req, connect_from("127.0.0.3", port).expect("connect from 127.0.0.3")).unwrap();
    squat
        .send(Message::Text(
            "MEDIA_START connection_id:y channel:WebSocket/x/0x2 channel_id:evil-1.1 format:ulaw optimal_frame_size:160 ptime:20".into(),
        ))
        .unwrap();
    match squat.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1008, "{f:?}"),
        other => panic!("a leg from another address should be refused, got {other:?}"),
    }
    // The agent's channel: token in the v() parameters, f(json) control, slin16.
    let mut a = connect(port, &format!("{}&token=asterisk-ws-secret", q("agent")), None).unwrap();
    a.send(Message::Text(
        r#"{"event":"MEDIA_START","connection_id":"0a9d2c4e-1b3f-4e5a-8c7d-6f5e4d3c2b1a","channel":"WebSocket/hearken/0x7f3a5c00a2c0","channel_id":"pbx1-1732812345.103","format":"slin16","optimal_frame_size":640,"ptime":20,"channel_variables":{"MEDIA_WEBSOCKET_CONNECTION_ID":"0a9d2c4e-1b3f-4e5a-8c7d-6f5e4d3c2b1a"}}"#.into(),
    ))
    .unwrap();
    // A third connection for the customer of the same call is refused.
    let mut dup = connect(port, &q("customer"), Some("asterisk-ws-secret")).unwrap();
    dup.send(Message::Text(
        "MEDIA_START connection_id:x channel:WebSocket/hearken/0x1 channel_id:pbx1-1.1 format:ulaw optimal_frame_size:160 ptime:20".into(),
    ))
    .unwrap();
    match dup.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1008, "{f:?}"),
        other => panic!("the duplicate leg should be closed, got {other:?}"),
    }

    let t0 = Instant::now();
    for k in 0..n {
        let ulaw: Vec<u8> = frame_of(&cust, k).iter().map(|s| hearken::codec::g711::encode_ulaw(*s)).collect();
        c.send(Message::Binary(ulaw)).unwrap();
        // slin16: each 8 kHz sample twice (Asterisk would have transcoded to 16 kHz).
        let slin16: Vec<u8> = frame_of(&agent_pcm, k).iter().flat_map(|s| [s.to_le_bytes(), s.to_le_bytes()].concat()).collect();
        a.send(Message::Binary(slin16)).unwrap();
        if k % 250 == 0 {
            c.send(Message::Text("MEDIA_XOFF".into())).unwrap();
            a.send(Message::Text(r#"{"event":"DTMF_END","channel_id":"pbx1-1732812345.103","digit":"5"}"#.into())).unwrap();
        }
        pace(t0, 20 * (k as u64 + 1));
    }
    // Asterisk hangs the snoop channels up: a close frame each, no text event.
    for ws in [&mut c, &mut a] {
        ws.close(Some(tungstenite::protocol::CloseFrame { code: 1000u16.into(), reason: "".into() })).unwrap();
        while ws.read().is_ok() {}
    }

    let rec = latest_record(&h);
    assert_eq!(rec["input"], "chan_websocket");
    assert_eq!((rec["agent_id"].as_str(), rec["queue"].as_str()), (Some("agent4"), Some("support")));
    assert_eq!(rec["reason"], "bye");
    let ratio = assert_meets_corpus(&rec, &truth, "chan_websocket");
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_streams_started_total"), 1, "two connections, one call: {m}");
    assert_eq!(metric(&m, "hearken_stream_malformed_total"), 1, "the frame before MEDIA_START");
    assert_eq!(metric(&m, "hearken_stream_frames_total"), 2 * n as u64);
    assert_eq!(metric(&m, "hearken_streams_refused_total"), 4, "wrong password, no party, another address, duplicate leg: {m}");
    assert!(m.contains("input=\"chan_websocket\""), "per-call metrics carry the input label");
    eprintln!("chan_websocket: talk ratio {ratio} (truth {}), {n} frames per leg", truth["metrics"]["talk_ratio_agent"]);
}
