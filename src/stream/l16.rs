//! Linear-PCM media streams: jambonz `listen` (WebSocket subprotocol `audio.jambonz.org`) and
//! FreeSWITCH mod_audio_fork / mod_audio_stream (`audiostream.drachtio.org`). Both send an
//! optional JSON text frame of metadata first, then binary frames of signed 16-bit
//! little-endian PCM: one channel (`mono`: the caller only; `mixed`: both voices summed) or two
//! interleaved (`stereo`: left the caller, right the callee), at 8 or 16 kHz (jambonz also 24–64
//! kHz). Sample rate and mix come from the metadata (`sampleRate`, `mixType`) or the URL query
//! (`rate`, `mix`), as each platform configures them.
//!
//! Turn metrics need the two voices apart: a `mixed` or `mono` stream is refused with a reason.

use super::FrameError;
use crate::call::{sanitize_label, Party};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    Mono,
    Mixed,
    Stereo,
}

impl Mix {
    pub fn parse(s: &str) -> Option<Mix> {
        Some(match s {
            "mono" => Mix::Mono,
            "mixed" => Mix::Mixed,
            "stereo" => Mix::Stereo,
            _ => return None,
        })
    }
}

/// A stream's format and who is who.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L16Format {
    pub rate: u32,
    pub mix: Mix,
    /// Stereo: the channel (0 left, 1 right) that is the customer.
    pub customer_channel: usize,
    pub agent_id: String,
    pub queue: String,
    pub token: Option<String>,
}

impl L16Format {
    /// Apply the metadata frame (jambonz: `sampleRate`, `mixType`, plus the application's own
    /// keys; agent id and queue from `agent`/`queue`, the token from `token`).
    pub fn apply_metadata(&mut self, text: &str) -> Result<(), FrameError> {
        let v: Value = serde_json::from_str(text).map_err(|_| FrameError::NotJson)?;
        if let Some(r) = v.get("sampleRate").and_then(Value::as_u64) {
            self.rate = u32::try_from(r).map_err(|_| FrameError::Unsupported)?;
        }
        if let Some(m) = v.get("mixType").and_then(Value::as_str) {
            self.mix = Mix::parse(m).ok_or(FrameError::Unsupported)?;
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        if let Some(a) = s("agent") {
            self.agent_id = sanitize_label(&a);
        }
        if let Some(q) = s("queue") {
            self.queue = sanitize_label(&q);
        }
        if let Some(t) = s("token") {
            self.token = Some(t);
        }
        Ok(())
    }

    /// Why this stream cannot be measured, if it cannot.
    pub fn refusal(&self) -> Option<&'static str> {
        match self.mix {
            Mix::Mixed => Some("mixed audio: both voices in one channel cannot give turn metrics; send stereo"),
            Mix::Mono => Some("mono audio carries one party only; send stereo"),
            Mix::Stereo if !matches!(self.rate, 8000 | 16000 | 24000 | 32000 | 48000 | 64000) => Some("unsupported sample rate"),
            Mix::Stereo => None,
        }
    }

    /// One binary frame: samples per party (customer, agent) at the stream's rate (the driver
    /// brings them to 8 kHz with a [`super::Downsampler`] per party, carried across frames).
    pub fn split(&self, data: &[u8]) -> Result<[Vec<i16>; 2], FrameError> {
        if !data.len().is_multiple_of(4) || data.is_empty() {
            return Err(FrameError::BadPayload);
        }
        let mut out = [Vec::with_capacity(data.len() / 4), Vec::with_capacity(data.len() / 4)];
        let customer = self.customer_channel.min(1);
        for b in data.chunks_exact(4) {
            let (l, r) = (i16::from_le_bytes([b[0], b[1]]), i16::from_le_bytes([b[2], b[3]]));
            let (c, a) = if customer == 0 { (l, r) } else { (r, l) };
            out[Party::Customer.idx()].push(c);
            out[Party::Agent.idx()].push(a);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt() -> L16Format {
        L16Format { rate: 8000, mix: Mix::Stereo, customer_channel: 0, agent_id: "unknown".into(), queue: "default".into(), token: None }
    }

    #[test]
    fn metadata_then_stereo_frames() {
        let mut f = fmt();
        f.apply_metadata(
            r#"{"callSid":"abc","from":"+1555","to":"100","sampleRate":16000,"mixType":"stereo","agent":"agent5","token":"tok-12345"}"#,
        )
        .unwrap();
        assert_eq!((f.rate, f.mix, f.agent_id.as_str(), f.token.as_deref()), (16000, Mix::Stereo, "agent5", Some("tok-12345")));
        assert_eq!(f.refusal(), None);
        // Two 16 kHz stereo frames: L = 100, 300; R = -2, -4 → one 8 kHz sample each.
        let data: Vec<u8> = [100i16, -2, 300, -4].iter().flat_map(|s| s.to_le_bytes()).collect();
        let [c, a] = f.split(&data).unwrap();
        assert_eq!((&c, &a), (&vec![100, 300], &vec![-2, -4]));
        let mut d = [crate::stream::Downsampler::new(16000), crate::stream::Downsampler::new(16000)];
        assert_eq!((d[0].push(&c), d[1].push(&a)), (vec![200], vec![-3]));
        assert_eq!(f.split(&[1, 2, 3]), Err(FrameError::BadPayload));
        let mut m = fmt();
        m.apply_metadata(r#"{"mixType":"mixed"}"#).unwrap();
        assert!(m.refusal().unwrap().contains("turn metrics"));
        m.apply_metadata(r#"{"mixType":"mono"}"#).unwrap();
        assert!(m.refusal().is_some());
        assert_eq!(m.apply_metadata("nope"), Err(FrameError::NotJson));
        assert_eq!(m.apply_metadata(r#"{"mixType":"surround"}"#), Err(FrameError::Unsupported));
    }
}
