//! The audio cue: a short tone (or prompt) mixed into the agent-bound media only, so the agent
//! hears a nudge the customer never hears. Sans-IO: [`CueMixer::mix`] rewrites one agent-bound
//! RTP payload while a cue plays; every other packet is forwarded untouched.
//!
//! G.711 is decoded, mixed and re-encoded sample by sample (same payload length). Opus is
//! decoded, mixed and re-encoded with a per-call encoder at the same frame size; only during the
//! cue, so the cost follows cue time, not call time.
//!
//! Not here: deciding when to play (the coach), sockets (the call task).

use crate::codec::{g711, Codec};
use std::sync::Arc;

#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CueConfig {
    /// Off by default: agents must opt in to a sound in their ear.
    pub enabled: bool,
    pub tone_hz: f64,
    pub duration_ms: u32,
    /// Peak level of the tone.
    pub level_dbfs: f64,
    /// Optional prompt instead of the tone: an 8 kHz mono 16-bit WAV.
    pub file: String,
}

impl Default for CueConfig {
    fn default() -> Self {
        CueConfig { enabled: false, tone_hz: 880.0, duration_ms: 180, level_dbfs: -20.0, file: String::new() }
    }
}

impl CueConfig {
    /// The cue as 8 kHz samples (tone with 10 ms fades, or the prompt file).
    pub fn samples(&self) -> Result<Arc<[i16]>, String> {
        if !self.file.is_empty() {
            let w = crate::analysis::wav::read(std::path::Path::new(&self.file)).map_err(|e| e.to_string())?;
            if w.channels != 1 {
                return Err(format!("{}: the cue prompt must be mono", self.file));
            }
            return Ok(w.samples.into_iter().next().unwrap_or_default().into());
        }
        let n = (8 * self.duration_ms) as usize;
        let amp = 32767.0 * 10f64.powf(self.level_dbfs / 20.0);
        let fade = 80.0;
        Ok((0..n)
            .map(|i| {
                let env = (i as f64 / fade).min((n - i) as f64 / fade).min(1.0);
                (amp * env * (2.0 * std::f64::consts::PI * self.tone_hz * i as f64 / 8000.0).sin()) as i16
            })
            .collect::<Vec<_>>()
            .into())
    }
}

/// Mixes one cue into a stream of agent-bound payloads.
pub struct CueMixer {
    cue: Arc<[i16]>,
    /// Position in the cue, in 8 kHz samples.
    pos: usize,
    opus: Option<(opus::Decoder, opus::Encoder)>,
}

impl CueMixer {
    pub fn new(cue: Arc<[i16]>) -> Self {
        CueMixer { cue, pos: 0, opus: None }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.cue.len()
    }

    fn next(&mut self) -> i32 {
        let s = self.cue.get(self.pos).copied().unwrap_or(0) as i32;
        self.pos += 1;
        s
    }

    /// Mix into `payload` (of `codec`); returns the new payload, or None to forward unchanged
    /// (not a speech codec, or Opus that does not decode).
    pub fn mix(&mut self, codec: Codec, payload: &[u8]) -> Option<Vec<u8>> {
        match codec {
            Codec::Pcmu | Codec::Pcma => {
                let out = payload
                    .iter()
                    .map(|&b| {
                        let s = if codec == Codec::Pcmu { g711::decode_ulaw(b) } else { g711::decode_alaw(b) } as i32;
                        let m = (s + self.next()).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
                        if codec == Codec::Pcmu {
                            g711::encode_ulaw(m)
                        } else {
                            g711::encode_alaw(m)
                        }
                    })
                    .collect();
                Some(out)
            }
            Codec::Opus => {
                if self.opus.is_none() {
                    let d = opus::Decoder::new(48000, opus::Channels::Mono).ok()?;
                    let e = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).ok()?;
                    self.opus = Some((d, e));
                }
                let (d, e) = self.opus.as_mut()?;
                let mut pcm = vec![0i16; 5760];
                let n = d.decode(payload, &mut pcm, false).ok()?;
                pcm.truncate(n);
                // The cue is 8 kHz: each cue sample covers six 48 kHz samples.
                for chunk in pcm.chunks_mut(6) {
                    let c = self.cue.get(self.pos).copied().unwrap_or(0) as i32;
                    self.pos += 1;
                    for s in chunk {
                        *s = (*s as i32 + c).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
                    }
                }
                let mut out = vec![0u8; 1500];
                let len = e.encode(&pcm, &mut out).ok()?;
                out.truncate(len);
                Some(out)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_cue_is_mixed_then_stops() {
        let cue = CueConfig { duration_ms: 30, ..Default::default() }.samples().unwrap();
        assert_eq!(cue.len(), 240);
        let mut m = CueMixer::new(cue);
        let silence = vec![g711::encode_ulaw(0); 160];
        let a = m.mix(Codec::Pcmu, &silence).unwrap();
        assert_eq!(a.len(), 160);
        assert_ne!(a, silence, "the tone is audible");
        assert!(!m.done());
        let b = m.mix(Codec::Pcmu, &silence).unwrap();
        assert_ne!(&b[..80], &silence[..80]);
        assert!(m.done());
        assert_eq!(m.mix(Codec::TelephoneEvent, &[1, 2, 3]), None);
    }

    #[test]
    fn opus_cue_reencodes() {
        let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let mut pkt = vec![0u8; 400];
        let n = enc.encode(&vec![0i16; 960], &mut pkt).unwrap();
        pkt.truncate(n);
        let mut m = CueMixer::new(CueConfig::default().samples().unwrap());
        let out = m.mix(Codec::Opus, &pkt).expect("re-encoded");
        let mut dec = opus::Decoder::new(48000, opus::Channels::Mono).unwrap();
        let mut pcm = vec![0i16; 960];
        dec.decode(&out, &mut pcm, false).unwrap();
        assert!(pcm.iter().map(|s| s.unsigned_abs()).max().unwrap() > 500, "the tone survives encoding");
        assert_eq!(m.mix(Codec::Opus, b"not opus at all"), None);
    }
}
