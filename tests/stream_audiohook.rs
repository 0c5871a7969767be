//! Genesys Cloud AudioHook Monitor input (issue 11), over TLS. Genesys cannot run here; the test
//! client follows the AudioHook protocol reference and its reference implementation
//! (purecloudlabs/audiohook-reference-implementation): the upgrade request carries
//! `Audiohook-Organization-Id`, `-Session-Id`, `-Correlation-Id`, `X-API-KEY` and an RFC 9421
//! signature (`Signature-Input` / `Signature`, HMAC-SHA256 with the base64-decoded client
//! secret, built here from the RFC, not from Hearken's code); the session is `open` (three media
//! offers as Genesys makes them) → `opened`, `ping` → `pong` (1 s after opened, then every 5 s),
//! `paused`/`resumed`, `close` → `closed`, with sequence numbers on both sides; audio is binary
//! PCMU 8 kHz, external and internal samples interleaved, 100 ms per frame, in real time. The
//! connection probe Genesys makes when an integration is saved is answered and not measured; a
//! wrong API key or a bad signature is refused with 401; a mono-only offer is refused with a
//! `disconnect` that says why.

mod common;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const API_KEY: &str = "hearken-audiohook-key-0001";
const SECRET: &[u8] = b"the integration's client secret!";
const ORG: &str = "d7934305-0972-4844-938e-9060eef73d05";

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

struct Client {
    ws: WebSocket<Tls>,
    seq: u64,
    server_seq: u64,
    samples: u64,
    session: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The upgrade request, signed as the AudioHook client signs it (RFC 9421 §2.5).
fn request(port: u16, session: &str, key: &str, secret: Option<&[u8]>) -> tungstenite::handshake::client::Request {
    let target = "/stream/audiohook";
    let authority = format!("localhost:{port}");
    let mut req = format!("wss://{authority}{target}").into_client_request().unwrap();
    let correlation = "e160e428-53e2-487c-977d-96989bf5c99d";
    let h = req.headers_mut();
    h.insert("Audiohook-Organization-Id", ORG.parse().unwrap());
    h.insert("Audiohook-Session-Id", session.parse().unwrap());
    h.insert("Audiohook-Correlation-Id", correlation.parse().unwrap());
    h.insert("X-API-KEY", key.parse().unwrap());
    if let Some(secret) = secret {
        let created = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let nonce = b64().encode(rand_bytes());
        let params = format!(
            "(\"@request-target\" \"@authority\" \"audiohook-organization-id\" \"audiohook-session-id\" \"audiohook-correlation-id\" \"x-api-key\");keyid=\"{key}\";nonce=\"{nonce}\";alg=\"hmac-sha256\";created={created};expires={}",
            created + 30
        );
        let base = format!(
            "\"@request-target\": {target}\n\"@authority\": {authority}\n\"audiohook-organization-id\": {ORG}\n\"audiohook-session-id\": {session}\n\"audiohook-correlation-id\": {correlation}\n\"x-api-key\": {key}\n\"@signature-params\": {params}"
        );
        let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), base.as_bytes());
        h.insert("Signature-Input", format!("sig1={params}").parse().unwrap());
        h.insert("Signature", format!("sig1=:{}:", b64().encode(mac.as_ref())).parse().unwrap());
    }
    req
}

fn rand_bytes() -> [u8; 18] {
    let mut b = [0u8; 18];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b
}

fn tls_config(ca: &rcgen::CertifiedKey) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn connect(port: u16, tls: &Arc<rustls::ClientConfig>, session: &str, key: &str, secret: Option<&[u8]>) -> Result<Client, u16> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let conn = rustls::ClientConnection::new(tls.clone(), "localhost".try_into().unwrap()).unwrap();
    match tungstenite::client(request(port, session, key, secret), rustls::StreamOwned::new(conn, tcp)) {
        Ok((ws, _)) => Ok(Client { ws, seq: 0, server_seq: 0, samples: 0, session: session.into() }),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => Err(r.status().as_u16()),
        Err(e) => panic!("handshake: {e}"),
    }
}

impl Client {
    fn send(&mut self, kind: &str, parameters: Value) {
        self.seq += 1;
        let m = json!({
            "version": "2", "id": self.session, "type": kind, "seq": self.seq, "serverseq": self.server_seq,
            "position": format!("PT{:.2}S", self.samples as f64 / 8000.0), "parameters": parameters
        });
        self.ws.send(Message::Text(m.to_string())).unwrap();
    }

    /// The server's next text message, checked for its numbering.
    fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().expect("a server message") {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["version"], "2");
                    assert_eq!(v["id"], self.session.as_str());
                    assert_eq!(v["seq"].as_u64(), Some(self.server_seq + 1), "server seq without gaps: {v}");
                    self.server_seq += 1;
                    return v;
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn open(&mut self, conversation: &str, media: Value) -> Value {
        self.send(
            "open",
            json!({
                "organizationId": ORG, "conversationId": conversation,
                "participant": {"id": "883efee8-3d6c-4537-b500-6d7ca4b92fa0", "ani": "+1-555-555-1234", "aniName": "John Doe", "dnis": "+1-800-555-6789"},
                "media": media, "language": "en-US", "customConfig": {"agent": "agent6", "queue": "claims"}
            }),
        );
        self.recv()
    }

    fn close(&mut self) {
        self.send("close", json!({"reason": "end"}));
        let closed = self.recv();
        assert_eq!((closed["type"].as_str(), closed["clientseq"].as_u64()), (Some("closed"), Some(self.seq)), "{closed}");
        let _ = self.ws.close(None);
        while self.ws.read().is_ok() {}
    }
}

fn offers() -> Value {
    json!([
        {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000},
        {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000},
        {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}
    ])
}

#[test]
fn an_audiohook_session_over_tls_is_analysed_like_an_inline_call() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ca.cert.pem()).unwrap();
    std::fs::write(&key, ca.key_pair.serialize_pem()).unwrap();
    let tls_port = free_port();
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start(
        pbx,
        agent,
        &format!(
            "[streams]\ntls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\naudiohook_api_key = \"{API_KEY}\"\naudiohook_client_secret = \"{}\"\n",
            cert.display(),
            key.display(),
            b64().encode(SECRET)
        ),
    );
    let tls = tls_config(&ca);
    let refused = || metric(&h.get("/metrics").unwrap(), "hearken_streams_refused_total");

    // Refused on the upgrade: a wrong API key, an unsigned request, a signature with another secret.
    let session = "30b0e395-84d3-4570-ac13-9a62d8f514c0";
    assert_eq!(connect(tls_port, &tls, session, "not-the-key-0000", Some(SECRET)).err(), Some(401));
    assert_eq!(connect(tls_port, &tls, session, API_KEY, None).err(), Some(401));
    assert_eq!(connect(tls_port, &tls, session, API_KEY, Some(b"some other secret")).err(), Some(401));
    assert_eq!(refused(), 3);

    // The connection probe: answered, nothing measured.
    let mut probe = connect(tls_port, &tls, "00000000-0000-0000-0000-000000000001", API_KEY, Some(SECRET)).unwrap();
    let opened = probe.open("00000000-0000-0000-0000-000000000000", offers());
    assert_eq!((opened["type"].as_str(), opened["clientseq"].as_u64()), (Some("opened"), Some(1)), "{opened}");
    probe.close();

    // Mono only: both voices are not apart, refused with a reason.
    let mut mono = connect(tls_port, &tls, "7a1b2c3d-0000-4000-8000-000000000002", API_KEY, Some(SECRET)).unwrap();
    let d = mono
        .open("090eaa2f-72fa-480a-83e0-8667ff89c0ec", json!([{"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}]));
    assert_eq!((d["type"].as_str(), d["parameters"]["reason"].as_str()), (Some("disconnect"), Some("error")), "{d}");
    assert!(d["parameters"]["info"].as_str().unwrap().contains("turn metrics"));
    mono.close();
    assert_eq!(refused(), 4);
    assert_eq!(metric(&h.get("/metrics").unwrap(), "hearken_streams_started_total"), 0, "neither the probe nor the mono session is a call");

    // The real session.
    let (truth, cust, agent_pcm, n) = corpus_call("d01_quick_turns");
    let mut c = connect(tls_port, &tls, "5b1a3c2d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", API_KEY, Some(SECRET)).unwrap();
    let opened = c.open("090eaa2f-72fa-480a-83e0-8667ff89c0ec", offers());
    assert_eq!(opened["type"], "opened", "{opened}");
    assert_eq!(opened["parameters"]["media"], json!([offers()[0]]), "the stereo offer, verbatim");
    let t0 = Instant::now();
    let mut next_ping = 50; // frames of 20 ms: 1 s after opened, then every 5 s
    for k in (0..n).step_by(5) {
        // 100 ms of both parties: external (customer) and internal (agent) samples interleaved.
        let mut frame = Vec::with_capacity(1600);
        for j in k..k + 5 {
            let (e, i) = (frame_of(&cust, j), frame_of(&agent_pcm, j));
            for s in 0..160 {
                frame.push(hearken::codec::g711::encode_ulaw(e[s]));
                frame.push(hearken::codec::g711::encode_ulaw(i[s]));
            }
        }
        c.ws.send(Message::Binary(frame)).unwrap();
        c.samples += 800;
        if k >= next_ping {
            c.send("ping", json!({"rtt": "PT0.012S"}));
            let pong = c.recv();
            assert_eq!((pong["type"].as_str(), pong["clientseq"].as_u64()), (Some("pong"), Some(c.seq)), "{pong}");
            next_ping = k + 250;
        }
        if k == 500 {
            // A pause (e.g. secure data entry) with a frame the client should not have sent.
            c.send("paused", json!({}));
            c.ws.send(Message::Binary(vec![0xff; 1600])).unwrap();
            c.send("resumed", json!({"start": format!("PT{:.2}S", c.samples as f64 / 8000.0), "discarded": "PT0S"}));
        }
        pace(t0, 20 * (k as u64 + 5));
    }
    c.close();

    let rec = latest_record(&h);
    assert_eq!(rec["input"], "audiohook");
    assert_eq!((rec["agent_id"].as_str(), rec["queue"].as_str()), (Some("agent6"), Some("claims")));
    assert_eq!(rec["reason"], "bye");
    let ratio = assert_meets_corpus(&rec, &truth, "audiohook");
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_streams_started_total"), 1);
    assert_eq!(metric(&m, "hearken_stream_malformed_total"), 1, "the frame sent while paused: {m}");
    assert_eq!(metric(&m, "hearken_stream_frames_dropped_total"), 0);
    assert_eq!(metric(&m, "hearken_stream_tls_handshake_failed_total"), 0);
    eprintln!("audiohook over TLS: talk ratio {ratio} (truth {}), {} frames", truth["metrics"]["talk_ratio_agent"], n / 5);
}
