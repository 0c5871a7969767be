//! Asterisk chan_websocket (Asterisk 20.16 / 21.11 / 22.6 and later; also ARI `externalMedia`
//! with `transport=websocket`): Asterisk dials `WebSocket/<connection>/c(ulaw)v(...)` and opens
//! one WebSocket per channel to the `uri` of that `websocket_client.conf` connection, with the
//! `v()` parameters appended as the query string. Control messages are text frames — plain text
//! (`MEDIA_START connection_id:… channel:… channel_id:… format:ulaw optimal_frame_size:160
//! ptime:20`) or, with `f(json)` / `control_message_format = json`, one JSON object each
//! (`{"event":"MEDIA_START",…}`) — and media is binary frames of the channel's one format, no
//! header, mono. The call ends with a WebSocket close frame (there is no hang-up text event).
//!
//! One WebSocket carries one party: an ARI snoop with `spy=in` on each leg (or `spy=in` and
//! `spy=out` on the caller) gives each its own channel. The query says which party a connection
//! is (`party=customer|agent`) and which call it belongs to (`call=<key>`, e.g. the bridged
//! channel's `${UNIQUEID}`): the two connections of one key are one call.
//!
//! Source: Asterisk's `channels/chan_websocket.c` and `res/res_websocket_client.c`, and the
//! "WebSocket channel driver" page of the Asterisk documentation.

use super::FrameError;
use serde_json::Value;

/// Media formats a chan_websocket channel may carry that Hearken takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ulaw,
    Alaw,
    /// Signed linear 16-bit little-endian at this rate (`slin`, `slin16`, ... `slin192`).
    Slin(u32),
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "ulaw" => Format::Ulaw,
            "alaw" => Format::Alaw,
            "slin" => Format::Slin(8000),
            "slin12" => Format::Slin(12000),
            "slin16" => Format::Slin(16000),
            "slin24" => Format::Slin(24000),
            "slin32" => Format::Slin(32000),
            "slin44" => Format::Slin(44100),
            "slin48" => Format::Slin(48000),
            "slin96" => Format::Slin(96000),
            "slin192" => Format::Slin(192000),
            _ => return None,
        })
    }

    /// The sample rate.
    pub fn rate(self) -> u32 {
        match self {
            Format::Slin(r) => r,
            _ => 8000,
        }
    }

    /// One binary frame as 8 kHz µ-law (what the analysis reads), and the ms of audio it holds;
    /// `down` brings linear PCM of the format's rate to 8 kHz.
    pub fn to_ulaw(self, data: &[u8], down: &mut super::Downsampler) -> Result<(Vec<u8>, f64), FrameError> {
        match self {
            Format::Ulaw => Ok((data.to_vec(), data.len() as f64 / 8.0)),
            Format::Alaw => Ok((
                data.iter().map(|&a| crate::codec::g711::encode_ulaw(crate::codec::g711::decode_alaw(a))).collect(),
                data.len() as f64 / 8.0,
            )),
            Format::Slin(rate) => {
                if !data.len().is_multiple_of(2) {
                    return Err(FrameError::BadPayload);
                }
                let pcm: Vec<i16> = data.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
                let ms = pcm.len() as f64 * 1000.0 / rate as f64;
                Ok((down.push(&pcm).into_iter().map(crate::codec::g711::encode_ulaw).collect(), ms))
            }
        }
    }
}

/// A control message from Asterisk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The channel's media starts: its format name (`ulaw`, `slin16`, ...).
    MediaStart { format: String },
    /// Events that need no action here (XOFF/XON, STATUS, DTMF_END, marks, ERROR).
    Other(String),
}

/// Parse a text frame, plain-text or JSON.
pub fn parse_control(text: &str) -> Result<Control, FrameError> {
    let text = text.trim();
    if text.starts_with('{') {
        let v: Value = serde_json::from_str(text).map_err(|_| FrameError::NotJson)?;
        let event = v.get("event").and_then(Value::as_str).ok_or(FrameError::MissingField)?;
        return Ok(match event {
            "MEDIA_START" => {
                Control::MediaStart { format: v.get("format").and_then(Value::as_str).ok_or(FrameError::MissingField)?.into() }
            }
            other => Control::Other(other.chars().take(32).collect()),
        });
    }
    let mut words = text.split_whitespace();
    let event = words.next().ok_or(FrameError::MissingField)?;
    if !event.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        return Err(FrameError::UnknownEvent);
    }
    Ok(match event {
        "MEDIA_START" => {
            let format = words.find_map(|w| w.strip_prefix("format:")).ok_or(FrameError::MissingField)?;
            Control::MediaStart { format: format.into() }
        }
        other => Control::Other(other.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_in_both_formats() {
        // The plain-text MEDIA_START Asterisk 22.7+ sends, and its JSON form.
        let plain = "MEDIA_START connection_id:e226e283-2b8c-4f0d-a5f6-1b7b3f7c1c1d channel:WebSocket/hearken/0x7f5c4c012345 channel_id:pbx1-1732812345.101 format:ulaw optimal_frame_size:160 ptime:20";
        assert_eq!(parse_control(plain), Ok(Control::MediaStart { format: "ulaw".into() }));
        let json = r#"{"event":"MEDIA_START","connection_id":"e226e283","channel":"WebSocket/hearken/0x7f5c","channel_id":"pbx1-1732812345.101","format":"slin16","optimal_frame_size":640,"ptime":20,"channel_variables":{"DIALSTATUS":""}}"#;
        assert_eq!(parse_control(json), Ok(Control::MediaStart { format: "slin16".into() }));
        assert_eq!(parse_control("MEDIA_XOFF"), Ok(Control::Other("MEDIA_XOFF".into())));
        assert_eq!(parse_control("DTMF_END digit:5 channel_id:pbx1-1.1"), Ok(Control::Other("DTMF_END".into())));
        assert_eq!(parse_control(r#"{"event":"QUEUE_DRAINED","channel_id":"x"}"#), Ok(Control::Other("QUEUE_DRAINED".into())));
        assert_eq!(parse_control("MEDIA_START channel:x"), Err(FrameError::MissingField));
        assert_eq!(parse_control("{nope"), Err(FrameError::NotJson));
        assert_eq!(parse_control("hello there"), Err(FrameError::UnknownEvent));
        assert_eq!(parse_control(""), Err(FrameError::MissingField));
    }

    #[test]
    fn formats() {
        assert_eq!(Format::parse("slin"), Some(Format::Slin(8000)));
        assert_eq!(Format::parse("slin16"), Some(Format::Slin(16000)));
        assert_eq!(Format::parse("slin44"), Some(Format::Slin(44100)));
        assert_eq!(Format::parse("opus"), None);
        assert_eq!(Format::parse("slin7"), None);
        assert_eq!(Format::parse("slin4294968"), None);
        let mut p = super::super::Downsampler::new(16000);
        assert_eq!(Format::Ulaw.to_ulaw(&[0xff; 160], &mut p), Ok((vec![0xff; 160], 20.0)));
        let (mu, ms) = Format::Alaw.to_ulaw(&[0xd5; 160], &mut p).unwrap();
        assert_eq!((mu.len(), ms), (160, 20.0));
        assert!(crate::codec::g711::decode_ulaw(mu[0]).abs() < 16, "A-law silence stays silence");
        let (mu, ms) = Format::Slin(16000).to_ulaw(&[0; 640], &mut p).unwrap();
        assert_eq!((mu.len(), ms), (160, 20.0));
        assert_eq!(Format::Slin(16000).to_ulaw(&[0; 3], &mut p), Err(FrameError::BadPayload));
    }
}
