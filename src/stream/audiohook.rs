//! Genesys Cloud AudioHook Monitor (protocol version 2): the client (Genesys) opens a WebSocket
//! per conversation and runs a small JSON session over text frames — `open`/`opened`,
//! `ping`/`pong`, `paused`/`resumed` (and the server's `pause`/`resume`), `update`, `discarded`,
//! `error`, `close`/`closed` — with audio in binary frames after `opened`: PCMU at 8 kHz,
//! samples of the selected channels interleaved in the order of the `channels` array.
//! `external` is the customer (the caller), `internal` the agent.
//!
//! Every message carries `version`, `id` (the session id), `type`, `seq` and `parameters`; the
//! server numbers its own messages from 1 and echoes the last client `seq` as `clientseq`
//! (a `pong` echoes its `ping`'s).
//!
//! Authentication is on the upgrade request: `X-API-KEY` must be the configured key and, when a
//! client secret is configured, the request carries an RFC 9421 HTTP message signature
//! (`Signature-Input` / `Signature`, HMAC-SHA256 keyed with the base64-decoded client secret)
//! over `@request-target`, `@authority`, `audiohook-organization-id`, `audiohook-session-id`,
//! `audiohook-correlation-id` and `x-api-key` ([`verify_signature`]).
//!
//! Sources: the Genesys AudioHook protocol reference and its reference implementation
//! (purecloudlabs/audiohook-reference-implementation), whose documentation example is the
//! signature test below.

use super::FrameError;
use crate::call::{sanitize_label, Party};
use serde_json::{json, Value};

/// What a text message means for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    /// The session is open: start the call (not for a connection probe).
    Start {
        agent_id: String,
        queue: String,
        probe: bool,
        organization_id: String,
    },
    Paused,
    Resumed,
    /// The client closed the session (`close`); `closed` has been answered.
    Close,
    /// The session cannot be measured (or is not allowed): the reason has been sent in a
    /// `disconnect`.
    Refused(&'static str),
    /// The client reported an error (`error` message): its code.
    ClientError(u64),
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Opening,
    Open,
    Paused,
    /// Refused at `open`: nothing more is taken but `ping` and `close`.
    Refused,
    Closed,
}

/// One AudioHook session's protocol state.
#[derive(Debug)]
pub struct AudioHookSession {
    state: State,
    id: String,
    /// The last client `seq` seen, and the last server `seq` sent.
    client_seq: u64,
    server_seq: u64,
    /// For each interleaved channel, the party it carries.
    channels: Vec<Party>,
    /// Client messages whose `seq` did not follow the previous one (logged, not fatal).
    pub seq_gaps: u64,
    /// The organization the upgrade request was signed for: `open` must name the same one.
    organization: Option<String>,
}

impl Default for AudioHookSession {
    fn default() -> Self {
        AudioHookSession::new(None)
    }
}

const NULL_UUID: &str = "00000000-0000-0000-0000-000000000000";

impl AudioHookSession {
    /// A session whose `open` must name `organization` (the `Audiohook-Organization-Id` the
    /// upgrade request was authenticated with), when given.
    pub fn new(organization: Option<String>) -> AudioHookSession {
        AudioHookSession {
            state: State::Opening,
            id: String::new(),
            client_seq: 0,
            server_seq: 0,
            channels: Vec::new(),
            seq_gaps: 0,
            organization,
        }
    }

    /// A server message of `kind` with `parameters`, numbered and acknowledging `clientseq`.
    fn message(&mut self, kind: &str, clientseq: u64, parameters: Value) -> String {
        self.server_seq += 1;
        json!({"version": "2", "type": kind, "seq": self.server_seq, "clientseq": clientseq, "id": self.id, "parameters": parameters})
            .to_string()
    }

    /// Ask the client to end the session (it then runs `close`/`closed`).
    pub fn disconnect(&mut self, reason: &str, info: &str) -> String {
        let seq = self.client_seq;
        self.message("disconnect", seq, json!({"reason": reason, "info": info}))
    }

    /// One text message: the replies to send (in order) and what it means.
    pub fn handle_text(&mut self, text: &str) -> (Vec<String>, Result<HookEvent, FrameError>) {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => return (Vec::new(), Err(FrameError::NotJson)),
        };
        let (Some(kind), Some(seq)) = (v.get("type").and_then(Value::as_str), v.get("seq").and_then(Value::as_u64)) else {
            return (Vec::new(), Err(FrameError::MissingField));
        };
        if Some(seq) != self.client_seq.checked_add(1) {
            self.seq_gaps += 1;
        }
        self.client_seq = seq;
        if let Some(id) = v.get("id").and_then(Value::as_str) {
            if self.id.is_empty() {
                self.id = id.chars().take(64).collect();
            }
        }
        let params = v.get("parameters").cloned().unwrap_or(Value::Null);
        match (kind, self.state) {
            ("open", State::Opening) => self.open(seq, &params),
            ("ping", _) => (vec![self.message("pong", seq, json!({}))], Ok(HookEvent::Nothing)),
            ("paused", State::Open) => {
                self.state = State::Paused;
                (Vec::new(), Ok(HookEvent::Paused))
            }
            ("resumed", State::Paused) => {
                self.state = State::Open;
                (Vec::new(), Ok(HookEvent::Resumed))
            }
            // Repeated (idempotent) pause or resume confirmations.
            ("paused" | "resumed", State::Open | State::Paused) => (Vec::new(), Ok(HookEvent::Nothing)),
            ("close", _) => {
                self.state = State::Closed;
                (vec![self.message("closed", seq, json!({}))], Ok(HookEvent::Close))
            }
            ("update", _) | ("discarded", _) => (Vec::new(), Ok(HookEvent::Nothing)),
            ("error", _) => {
                let code = params.get("code").and_then(Value::as_u64).unwrap_or(0);
                (Vec::new(), Ok(HookEvent::ClientError(code)))
            }
            _ => (Vec::new(), Err(FrameError::UnknownEvent)),
        }
    }

    fn open(&mut self, seq: u64, p: &Value) -> (Vec<String>, Result<HookEvent, FrameError>) {
        let organization_id = p.get("organizationId").and_then(Value::as_str).unwrap_or_default().to_string();
        if self.organization.as_ref().is_some_and(|o| *o != organization_id) {
            self.state = State::Refused;
            let why = "organizationId differs from the Audiohook-Organization-Id the request was signed with";
            return (vec![self.disconnect("unauthorized", why)], Ok(HookEvent::Refused(why)));
        }
        let conversation = p.get("conversationId").and_then(Value::as_str).unwrap_or_default();
        let probe = conversation == NULL_UUID;
        let offers = p.get("media").and_then(Value::as_array).cloned().unwrap_or_default();
        // The first PCMU 8 kHz offer that carries both parties, each in its own channel.
        let pick = offers.iter().find(|m| {
            let chans = channels_of(m);
            m.get("format").and_then(Value::as_str) == Some("PCMU")
                && m.get("rate").and_then(Value::as_u64) == Some(8000)
                && chans.len() == 2
                && chans.contains(&Party::Customer)
                && chans.contains(&Party::Agent)
        });
        let Some(media) = pick.cloned() else {
            if probe {
                // A connection probe may offer anything: it is answered, nothing is measured.
                self.state = State::Open;
                return (vec![self.message("opened", seq, json!({"startPaused": false, "media": []}))], Ok(HookEvent::Nothing));
            }
            let why = "no PCMU 8 kHz stereo media with the external and internal channels offered: turn metrics need both parties apart";
            self.state = State::Refused;
            return (vec![self.disconnect("error", why)], Ok(HookEvent::Refused(why)));
        };
        self.channels = channels_of(&media);
        self.state = State::Open;
        let custom = p.get("customConfig");
        let s = |k: &str| custom.and_then(|c| c.get(k)).and_then(Value::as_str).map(sanitize_label);
        let reply = self.message("opened", seq, json!({"startPaused": false, "media": [media]}));
        (
            vec![reply],
            Ok(HookEvent::Start {
                agent_id: s("agent").unwrap_or_else(|| "unknown".into()),
                queue: s("queue").unwrap_or_else(|| "default".into()),
                probe,
                organization_id,
            }),
        )
    }

    /// One binary frame: µ-law samples per party (customer, agent).
    pub fn handle_binary(&self, data: &[u8]) -> Result<[Vec<u8>; 2], FrameError> {
        match self.state {
            State::Open => {}
            State::Opening => return Err(FrameError::NotStarted),
            // Audio while paused, refused or after close: the protocol forbids it.
            State::Paused | State::Refused | State::Closed => return Err(FrameError::Unsupported),
        }
        let n = self.channels.len();
        if n == 0 || data.is_empty() || !data.len().is_multiple_of(n) {
            return Err(FrameError::BadPayload);
        }
        let mut out = [Vec::with_capacity(data.len() / n), Vec::with_capacity(data.len() / n)];
        for frame in data.chunks_exact(n) {
            for (i, &b) in frame.iter().enumerate() {
                out[self.channels[i].idx()].push(b);
            }
        }
        Ok(out)
    }
}

fn channels_of(media: &Value) -> Vec<Party> {
    media
        .get("channels")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| match c.as_str() {
                    Some("external") => Some(Party::Customer),
                    Some("internal") => Some(Party::Agent),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The components an AudioHook signature must cover.
const COVERED: [&str; 6] =
    ["@request-target", "@authority", "audiohook-organization-id", "audiohook-session-id", "audiohook-correlation-id", "x-api-key"];

/// The members of an RFC 8941 dictionary header (`label=value, label=value`), split at commas
/// outside quotes and parentheses.
fn dictionary(v: &str) -> Vec<(&str, &str)> {
    let (mut out, mut start, mut depth, mut quoted) = (Vec::new(), 0, 0i32, false);
    for (i, c) in v.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&v[start..]);
    out.into_iter().filter_map(|m| m.trim().split_once('=')).map(|(k, v)| (k.trim(), v.trim())).collect()
}

/// Check an upgrade request's RFC 9421 signature. `header` looks a request header up by its
/// lower-case name; `target` is the path and query; `authority` the host the client addressed
/// (the Host header, or the configured public URL's host behind a proxy); `secret` the decoded
/// client secret; `now` unix seconds. A signature may be at most 10 s old (3 s of clock skew
/// allowed). Returns the signature's nonce, for the caller's replay check.
pub fn verify_signature(
    header: &dyn Fn(&str) -> Option<String>,
    target: &str,
    authority: &str,
    secret: &[u8],
    now: u64,
) -> Result<String, &'static str> {
    let input = header("signature-input").ok_or("no Signature-Input")?;
    let sig = header("signature").ok_or("no Signature")?;
    // The first signature of the request and the Signature member of the same label.
    let inputs = dictionary(&input);
    let (label, list) = *inputs.first().ok_or("Signature-Input is not label=value")?;
    let sigs = dictionary(&sig);
    let mac = sigs.iter().find(|(l, _)| *l == label).map(|(_, v)| *v).ok_or("no Signature for the Signature-Input label")?;
    let mac = mac.strip_prefix(':').and_then(|s| s.strip_suffix(':')).ok_or("Signature is not a byte sequence")?;
    let mac = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(mac).map_err(|_| "Signature is not base64")?
    };
    let inner = list.strip_prefix('(').and_then(|r| r.split_once(')')).ok_or("Signature-Input has no component list")?;
    let components: Vec<&str> = inner.0.split_whitespace().map(|c| c.trim_matches('"')).collect();
    if COVERED.iter().any(|c| !components.contains(c)) {
        return Err("the signature does not cover every required component");
    }
    let mut p = std::collections::HashMap::new();
    for kv in inner.1.split(';').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or("bad signature parameter")?;
        if p.insert(k.trim(), v.trim().trim_matches('"')).is_some() {
            return Err("a signature parameter is repeated");
        }
    }
    if p.get("alg").is_some_and(|a| *a != "hmac-sha256") {
        return Err("signature algorithm is not hmac-sha256");
    }
    if p.get("keyid").copied() != header("x-api-key").as_deref() {
        return Err("keyid is not the X-API-KEY");
    }
    let nonce = p.get("nonce").filter(|n| n.len() >= 22).ok_or("nonce missing or too short")?.to_string();
    let created: u64 = p.get("created").and_then(|c| c.parse().ok()).ok_or("no created time")?;
    if created > now.saturating_add(3) || now > created.saturating_add(13) {
        return Err("signature too old or from the future");
    }
    if let Some(exp) = p.get("expires") {
        let exp: u64 = exp.parse().map_err(|_| "expires is not a number")?;
        if now > exp.saturating_add(3) {
            return Err("signature expired");
        }
    }
    let mut base = String::new();
    for c in &components {
        let value = match *c {
            "@request-target" => target.to_string(),
            "@authority" => authority.to_ascii_lowercase(),
            name => header(name).ok_or("a covered header is missing")?.trim().to_string(),
        };
        base.push_str(&format!("\"{c}\": {value}\n"));
    }
    base.push_str(&format!("\"@signature-params\": {list}"));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, base.as_bytes(), &mac).map_err(|_| "signature does not match")?;
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut h: Vec<(String, String)> = vec![
            ("host".into(), "audiohook.example.com".into()),
            ("audiohook-organization-id".into(), "d7934305-0972-4844-938e-9060eef73d05".into()),
            ("audiohook-session-id".into(), "30b0e395-84d3-4570-ac13-9a62d8f514c0".into()),
            ("audiohook-correlation-id".into(), "e160e428-53e2-487c-977d-96989bf5c99d".into()),
            ("x-api-key".into(), "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh".into()),
            ("signature-input".into(), "sig1=(\"@request-target\" \"@authority\" \"audiohook-organization-id\" \"audiohook-session-id\" \"audiohook-correlation-id\" \"x-api-key\");keyid=\"SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh\";nonce=\"VGhpc0lzQVVuaXF1ZU5vbmNl\";alg=\"hmac-sha256\";created=1641013200;expires=3282026430".into()),
            ("signature".into(), "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:".into()),
        ];
        for (k, v) in extra {
            h.retain(|(n, _)| n != k);
            h.push((k.to_string(), v.to_string()));
        }
        move |name: &str| h.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_documented_signature_example_verifies() {
        // The AudioHook documentation's example (also the reference implementation's test).
        let secret = b"MySuperSecretKeyTellNo-1!2@3#4$5";
        let target = "/api/v1/voicebiometrics/ws";
        let host = "audiohook.example.com";
        let verify = |h: &dyn Fn(&str) -> Option<String>, target: &str, secret: &[u8], now: u64| {
            verify_signature(h, target, host, secret, now).map(|_| ())
        };
        assert_eq!(verify_signature(&headers(&[]), target, host, secret, 1641013205), Ok("VGhpc0lzQVVuaXF1ZU5vbmNl".into()));
        assert!(verify_signature(&headers(&[]), target, "other.example.com", secret, 1641013205).is_err());
        // Anything changed fails.
        assert!(verify(&headers(&[]), "/other", secret, 1641013205).is_err());
        assert!(verify(&headers(&[]), target, b"another secret", 1641013205).is_err());
        assert!(verify(&headers(&[("audiohook-session-id", "x")]), target, secret, 1641013205).is_err());
        assert_eq!(verify(&headers(&[]), target, secret, 1641013300), Err("signature too old or from the future"));
        assert_eq!(verify(&headers(&[("x-api-key", "other")]), target, secret, 1641013205), Err("keyid is not the X-API-KEY"));
        // A second signature in the headers does not disturb the first.
        let two_in = format!("{}, sig2=(\"@authority\");keyid=\"k\";created=1", headers(&[])("signature-input").unwrap());
        let two_sig = format!("{}, sig2=:AAAA:", headers(&[])("signature").unwrap());
        assert_eq!(verify(&headers(&[("signature-input", &two_in), ("signature", &two_sig)]), target, secret, 1641013205), Ok(()));
        // Overflowing or malformed times are refused, not a panic.
        let huge = headers(&[])("signature-input").unwrap().replace("expires=3282026430", "expires=18446744073709551615");
        assert!(verify(&headers(&[("signature-input", &huge)]), target, secret, 1641013205).is_err(), "the MAC no longer matches");
        let bad = headers(&[])("signature-input").unwrap().replace("expires=3282026430", "expires=soon");
        assert_eq!(verify(&headers(&[("signature-input", &bad)]), target, secret, 1641013205), Err("expires is not a number"));
        let dup = headers(&[])("signature-input").unwrap().replace(";alg=", ";created=1641013200;alg=");
        assert_eq!(verify(&headers(&[("signature-input", &dup)]), target, secret, 1641013205), Err("a signature parameter is repeated"));
        let fewer = "sig1=(\"@request-target\" \"@authority\");keyid=\"SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh\";nonce=\"VGhpc0lzQVVuaXF1ZU5vbmNl\";alg=\"hmac-sha256\";created=1641013200";
        assert!(verify(&headers(&[("signature-input", fewer)]), target, secret, 1641013205).is_err());
        assert_eq!(verify(&headers(&[("signature", "sig1=:!!:")]), target, secret, 1641013205), Err("Signature is not base64"));
    }

    fn open(conversation: &str, media: &str) -> String {
        format!(
            r#"{{"version":"2","type":"open","seq":1,"serverseq":0,"id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT0S","parameters":{{"organizationId":"d7934305-0972-4844-938e-9060eef73d05","conversationId":"{conversation}","participant":{{"id":"883efee8-3d6c-4537-b500-6d7ca4b92fa0","ani":"+1-555-555-1234","aniName":"John Doe","dnis":"+1-800-555-6789"}},"media":{media},"language":"en-US","customConfig":{{"agent":"agent9","queue":"sales"}}}}}}"#
        )
    }

    const OFFER: &str = r#"[{"type":"audio","format":"PCMU","channels":["external","internal"],"rate":8000},{"type":"audio","format":"PCMU","channels":["external"],"rate":8000},{"type":"audio","format":"PCMU","channels":["internal"],"rate":8000}]"#;

    #[test]
    fn a_session_from_open_to_closed() {
        let mut s = AudioHookSession::default();
        assert_eq!(s.handle_binary(&[0xff, 0x7f]), Err(FrameError::NotStarted));
        let (replies, ev) = s.handle_text(&open("090eaa2f-72fa-480a-83e0-8667ff89c0ec", OFFER));
        assert_eq!(
            ev,
            Ok(HookEvent::Start {
                agent_id: "agent9".into(),
                queue: "sales".into(),
                probe: false,
                organization_id: "d7934305-0972-4844-938e-9060eef73d05".into()
            })
        );
        let opened: Value = serde_json::from_str(&replies[0]).unwrap();
        assert_eq!((opened["type"].as_str(), opened["seq"].as_u64(), opened["clientseq"].as_u64()), (Some("opened"), Some(1), Some(1)));
        assert_eq!(opened["parameters"]["media"][0], serde_json::from_str::<Value>(OFFER).unwrap()[0], "one offered entry, verbatim");
        assert_eq!(opened["id"], "e160e428-53e2-487c-977d-96989bf5c99d");
        // External first: e0 i0 e1 i1.
        assert_eq!(s.handle_binary(&[1, 2, 3, 4]), Ok([vec![1, 3], vec![2, 4]]));
        assert_eq!(s.handle_binary(&[1, 2, 3]), Err(FrameError::BadPayload));
        let (r, ev) = s.handle_text(r#"{"version":"2","type":"ping","seq":2,"serverseq":1,"id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT1S","parameters":{"rtt":"PT0.05S"}}"#);
        let pong: Value = serde_json::from_str(&r[0]).unwrap();
        assert_eq!(
            (pong["type"].as_str(), pong["seq"].as_u64(), pong["clientseq"].as_u64(), ev),
            (Some("pong"), Some(2), Some(2), Ok(HookEvent::Nothing))
        );
        let (_, ev) = s.handle_text(r#"{"version":"2","type":"paused","seq":3,"serverseq":2,"id":"x","position":"PT2S","parameters":{}}"#);
        assert_eq!(ev, Ok(HookEvent::Paused));
        assert_eq!(s.handle_binary(&[1, 2]), Err(FrameError::Unsupported), "no audio while paused");
        let (_, ev) = s.handle_text(r#"{"version":"2","type":"resumed","seq":4,"serverseq":2,"id":"x","position":"PT2S","parameters":{"start":"PT2S","discarded":"PT5S"}}"#);
        assert_eq!(ev, Ok(HookEvent::Resumed));
        assert!(s.handle_binary(&[1, 2]).is_ok());
        // A gap in the client's numbering is counted, not fatal.
        let (_, ev) = s.handle_text(
            r#"{"version":"2","type":"update","seq":9,"serverseq":2,"id":"x","position":"PT3S","parameters":{"language":"es-ES"}}"#,
        );
        assert_eq!((ev, s.seq_gaps), (Ok(HookEvent::Nothing), 1));
        let (r, ev) = s.handle_text(
            r#"{"version":"2","type":"close","seq":10,"serverseq":2,"id":"x","position":"PT4S","parameters":{"reason":"end"}}"#,
        );
        let closed: Value = serde_json::from_str(&r[0]).unwrap();
        assert_eq!(
            (closed["type"].as_str(), closed["seq"].as_u64(), closed["clientseq"].as_u64(), ev),
            (Some("closed"), Some(3), Some(10), Ok(HookEvent::Close))
        );
        // Malformed messages.
        assert_eq!(s.handle_text("{").1, Err(FrameError::NotJson));
        assert_eq!(s.handle_text(r#"{"type":"ping"}"#).1, Err(FrameError::MissingField));
        assert_eq!(s.handle_text(r#"{"type":"dance","seq":11}"#).1, Err(FrameError::UnknownEvent));
    }

    #[test]
    fn probes_and_mono_offers() {
        // The connection probe: answered, not measured.
        let mut p = AudioHookSession::default();
        let (r, ev) = p.handle_text(&open(NULL_UUID, OFFER));
        assert!(matches!(ev, Ok(HookEvent::Start { probe: true, .. })), "{ev:?}");
        assert!(r[0].contains("\"opened\""));
        // Only mono offered: both voices are not apart, so the session is refused with a reason.
        let mut m = AudioHookSession::default();
        let (r, ev) = m.handle_text(&open(
            "090eaa2f-72fa-480a-83e0-8667ff89c0ec",
            r#"[{"type":"audio","format":"PCMU","channels":["external"],"rate":8000}]"#,
        ));
        assert!(matches!(ev, Ok(HookEvent::Refused(_))));
        let d: Value = serde_json::from_str(&r[0]).unwrap();
        assert_eq!((d["type"].as_str(), d["parameters"]["reason"].as_str()), (Some("disconnect"), Some("error")));
        // An open for another organization than the signed one: disconnected as unauthorized.
        let mut o = AudioHookSession::new(Some("another-org".into()));
        let (r, ev) = o.handle_text(&open("090eaa2f-72fa-480a-83e0-8667ff89c0ec", OFFER));
        assert!(matches!(ev, Ok(HookEvent::Refused(_))));
        assert!(r[0].contains("\"unauthorized\"") && !r.iter().any(|m| m.contains("\"opened\"")));
        assert_eq!(o.handle_binary(&[1, 2]), Err(FrameError::Unsupported));
        // A huge seq does not overflow.
        let (_, ev) = o.handle_text(r#"{"type":"ping","seq":18446744073709551615}"#);
        let (_, ev2) = o.handle_text(r#"{"type":"ping","seq":1}"#);
        assert_eq!((ev, ev2), (Ok(HookEvent::Nothing), Ok(HookEvent::Nothing)));
        // Internal first is taken too, channels mapped by name.
        let mut i = AudioHookSession::default();
        let _ = i.handle_text(&open(
            "090eaa2f-72fa-480a-83e0-8667ff89c0ec",
            r#"[{"type":"audio","format":"PCMU","channels":["internal","external"],"rate":8000}]"#,
        ));
        assert_eq!(i.handle_binary(&[1, 2]), Ok([vec![2], vec![1]]));
    }
}
