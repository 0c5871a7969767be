//! Twilio Media Streams (and the Telnyx / SignalWire equivalents, which follow the same message
//! format): JSON text frames `connected`, `start`, `media`, `mark`, `dtmf`, `stop`
//! (https://www.twilio.com/docs/voice/media-streams/websocket-messages). Audio is base64 µ-law,
//! 8 kHz mono, one track per direction with `tracks="both_tracks"`: `inbound` is what the caller
//! (the customer) says, `outbound` what Twilio plays to the caller — the agent's voice when the
//! call is bridged to an agent. Which track is the customer is configurable.
//!
//! Twilio does not pass query strings on the stream URL: the token, the agent id and the queue
//! come as `<Parameter>`s of the `<Stream>`, i.e. `start.customParameters`.

use super::{FrameError, StreamEvent};
use crate::call::{sanitize_label, Party};
use base64::Engine;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// The track that carries the customer: `inbound` (the caller) by default.
    pub customer_track: String,
    /// customParameters keys for the agent id, the queue and the token.
    pub agent_key: String,
    pub queue_key: String,
    pub token_key: String,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        TwilioConfig { customer_track: "inbound".into(), agent_key: "agent".into(), queue_key: "queue".into(), token_key: "token".into() }
    }
}

/// One Twilio stream's state.
#[derive(Debug, Default)]
pub struct TwilioSession {
    started: bool,
    /// Fallback sequence numbers when a frame has no `chunk` (per track).
    next_chunk: [u32; 2],
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn as_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        // Twilio sends sequence numbers, chunks and timestamps as strings.
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl TwilioSession {
    pub fn handle_text(&mut self, text: &str, cfg: &TwilioConfig) -> Result<StreamEvent, FrameError> {
        let v: Value = serde_json::from_str(text).map_err(|_| FrameError::NotJson)?;
        let event = v.get("event").and_then(Value::as_str).ok_or(FrameError::MissingField)?;
        match event {
            "connected" | "mark" | "dtmf" => Ok(StreamEvent::Nothing),
            "start" => {
                let start = v.get("start").ok_or(FrameError::MissingField)?;
                let fmt = start.get("mediaFormat");
                let enc = fmt.and_then(|f| f.get("encoding")).and_then(Value::as_str).unwrap_or("audio/x-mulaw");
                let rate = as_u64(fmt.and_then(|f| f.get("sampleRate"))).unwrap_or(8000);
                if enc != "audio/x-mulaw" || rate != 8000 {
                    return Err(FrameError::Unsupported);
                }
                let params = start.get("customParameters");
                let param = |k: &str| params.and_then(|p| p.get(k)).and_then(Value::as_str).map(str::to_string);
                self.started = true;
                Ok(StreamEvent::Start {
                    agent_id: sanitize_label(&param(&cfg.agent_key).unwrap_or_default()),
                    queue: param(&cfg.queue_key).map(|q| sanitize_label(&q)).unwrap_or_else(|| "default".into()),
                    token: param(&cfg.token_key),
                })
            }
            "media" => {
                if !self.started {
                    return Err(FrameError::NotStarted);
                }
                let track = field(&v, &["media", "track"]).and_then(Value::as_str).unwrap_or("inbound");
                let party = if track == cfg.customer_track { Party::Customer } else { Party::Agent };
                let payload = field(&v, &["media", "payload"]).and_then(Value::as_str).ok_or(FrameError::MissingField)?;
                let payload = base64::engine::general_purpose::STANDARD.decode(payload).map_err(|_| FrameError::BadPayload)?;
                if payload.is_empty() || payload.len() > 8000 {
                    return Err(FrameError::BadPayload);
                }
                let timestamp_ms = as_u64(field(&v, &["media", "timestamp"])).ok_or(FrameError::MissingField)?;
                let seq = match as_u64(field(&v, &["media", "chunk"])) {
                    Some(c) => c as u32,
                    None => self.next_chunk[party.idx()],
                };
                self.next_chunk[party.idx()] = seq.wrapping_add(1);
                Ok(StreamEvent::Audio { party, seq, timestamp_ms, payload })
            }
            "stop" => Ok(StreamEvent::Stop),
            _ => Err(FrameError::UnknownEvent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_messages_in_order() {
        let cfg = TwilioConfig::default();
        let mut s = TwilioSession::default();
        assert_eq!(s.handle_text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#, &cfg), Ok(StreamEvent::Nothing));
        assert_eq!(
            s.handle_text(r#"{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"//8="},"streamSid":"MZ1"}"#, &cfg),
            Err(FrameError::NotStarted)
        );
        let start = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound","outbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"agent":"agent7","queue":"billing","token":"s3cret-token"}},"streamSid":"MZ1"}"#;
        assert_eq!(
            s.handle_text(start, &cfg),
            Ok(StreamEvent::Start { agent_id: "agent7".into(), queue: "billing".into(), token: Some("s3cret-token".into()) })
        );
        let media = r#"{"event":"media","sequenceNumber":"3","media":{"track":"outbound","chunk":"1","timestamp":"20","payload":"//8="},"streamSid":"MZ1"}"#;
        assert_eq!(
            s.handle_text(media, &cfg),
            Ok(StreamEvent::Audio { party: Party::Agent, seq: 1, timestamp_ms: 20, payload: vec![0xff, 0xff] })
        );
        assert_eq!(s.handle_text(r#"{"event":"mark","mark":{"name":"x"}}"#, &cfg), Ok(StreamEvent::Nothing));
        assert_eq!(s.handle_text(r#"{"event":"stop","stop":{"accountSid":"AC1","callSid":"CA1"}}"#, &cfg), Ok(StreamEvent::Stop));
        // Malformed frames are refused with a reason.
        for (bad, why) in [
            ("not json", FrameError::NotJson),
            (r#"{"no":"event"}"#, FrameError::MissingField),
            (r#"{"event":"party"}"#, FrameError::UnknownEvent),
            (r#"{"event":"media","media":{"track":"inbound","timestamp":"1","payload":"***"}}"#, FrameError::BadPayload),
            (r#"{"event":"media","media":{"track":"inbound","payload":"//8="}}"#, FrameError::MissingField),
        ] {
            assert_eq!(s.handle_text(bad, &cfg), Err(why), "{bad}");
        }
        let mut s2 = TwilioSession::default();
        let l16 = start.replace("audio/x-mulaw", "audio/l16");
        assert_eq!(s2.handle_text(&l16, &cfg), Err(FrameError::Unsupported));
    }
}
