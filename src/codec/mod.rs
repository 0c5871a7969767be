//! Payload decoding for analysis: RTP payload type -> codec, and codec payload -> PCM.
//!
//! Every decoder produces 16-bit mono PCM at [`OUTPUT_RATE`] (8 kHz), the rate the VAD and the
//! recogniser consume, so no resampler is needed: G.711 is 8 kHz natively and libopus decodes any
//! Opus packet directly at 8 kHz (RFC 6716 §2: the decoder may run at 8/12/16/24/48 kHz whatever
//! the encoder's internal bandwidth). Loss is filled by [`Decoder::conceal`]: Opus packet-loss
//! concealment, silence for G.711.
//!
//! Not here: jitter handling and loss detection (`analysis::jitter`), Opus in-band FEC, DTMF
//! decoding (RFC 4733 events carry no speech and produce no samples), comfort-noise synthesis
//! (RFC 3389), encoding for transcoded legs, stereo output.
pub mod g711;

use crate::sdp::Media;

/// Sample rate of every decoder's output.
pub const OUTPUT_RATE: u32 = 8000;

/// Longest Opus packet is 120 ms (RFC 6716 §3.2.5): 960 samples at 8 kHz.
const MAX_OPUS_SAMPLES: usize = (OUTPUT_RATE as usize) * 120 / 1000;
/// Opus PLC works in multiples of 2.5 ms (libopus `opus_decode` with no data).
const OPUS_PLC_QUANTUM: usize = (OUTPUT_RATE as usize) / 400;
/// Upper bound for one `conceal` call (10 s): the request is usually derived from RTP
/// timestamps, and a wild value must not turn into a giant allocation.
pub const MAX_CONCEAL_SAMPLES: usize = 10 * OUTPUT_RATE as usize;
/// Assumed frame length before the first packet is decoded (20 ms, RFC 3551 §4.2 default ptime).
const DEFAULT_FRAME_SAMPLES: usize = (OUTPUT_RATE as usize) / 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Codec {
    Pcmu,
    Pcma,
    Opus,
    /// RFC 4733 DTMF / telephone events.
    TelephoneEvent,
    /// RFC 3389 comfort noise.
    ComfortNoise,
    Unknown,
}

impl Codec {
    /// Map an `a=rtpmap` encoding name; names are case-insensitive (RFC 4855 §3).
    pub fn from_encoding_name(name: &str) -> Codec {
        if name.eq_ignore_ascii_case("PCMU") {
            Codec::Pcmu
        } else if name.eq_ignore_ascii_case("PCMA") {
            Codec::Pcma
        } else if name.eq_ignore_ascii_case("opus") {
            Codec::Opus
        } else if name.eq_ignore_ascii_case("telephone-event") {
            Codec::TelephoneEvent
        } else if name.eq_ignore_ascii_case("CN") {
            Codec::ComfortNoise
        } else {
            Codec::Unknown
        }
    }

    /// RTP clock rate when the SDP does not say otherwise: 8000 for the RFC 3551 audio formats,
    /// always 48000 for Opus (RFC 7587 §4.1).
    pub fn default_clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            _ => 8_000,
        }
    }

    /// Whether payloads of this codec carry speech.
    pub fn is_speech(self) -> bool {
        matches!(self, Codec::Pcmu | Codec::Pcma | Codec::Opus)
    }
}

/// What one payload type stands for in a negotiated session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadFormat {
    pub codec: Codec,
    /// RTP timestamp clock (Hz).
    pub clock_rate: u32,
}

/// Payload type -> format for one media stream, from the SDP `a=rtpmap` lines plus the static
/// assignments of RFC 3551 §6 that need no rtpmap (0 PCMU, 8 PCMA, 13 CN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadMap {
    // Indexed by the 7-bit payload type.
    formats: [Option<PayloadFormat>; 128],
}

impl Default for PayloadMap {
    fn default() -> Self {
        let mut map = PayloadMap { formats: [None; 128] };
        for (pt, codec) in [(0, Codec::Pcmu), (8, Codec::Pcma), (13, Codec::ComfortNoise)] {
            map.insert(pt, PayloadFormat { codec, clock_rate: 8000 });
        }
        map
    }
}

impl PayloadMap {
    /// The static assignments overlaid with the media section's rtpmap entries.
    pub fn from_media(media: &Media) -> Self {
        Self::from_rtpmap(&media.rtpmap)
    }

    /// The static assignments overlaid with rtpmap entries `(pt, "name/clock[/channels]")`.
    /// Entries with an unparsable clock keep the codec's default clock.
    pub fn from_rtpmap(entries: &[(u8, String)]) -> Self {
        let mut map = Self::default();
        for (pt, value) in entries {
            let mut parts = value.trim().split('/');
            let codec = Codec::from_encoding_name(parts.next().unwrap_or(""));
            let clock_rate =
                parts.next().and_then(|c| c.trim().parse::<u32>().ok()).filter(|&c| c > 0).unwrap_or_else(|| codec.default_clock_rate());
            map.insert(*pt, PayloadFormat { codec, clock_rate });
        }
        map
    }

    /// Set or replace one payload type; payload types above 127 do not exist in RTP and are
    /// ignored.
    pub fn insert(&mut self, pt: u8, format: PayloadFormat) {
        if let Some(slot) = self.formats.get_mut(pt as usize) {
            *slot = Some(format);
        }
    }

    pub fn format(&self, pt: u8) -> Option<PayloadFormat> {
        self.formats.get(pt as usize).copied().flatten()
    }

    pub fn codec(&self, pt: u8) -> Codec {
        self.format(pt).map_or(Codec::Unknown, |f| f.codec)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("no decoder for {0:?}")]
    Unsupported(Codec),
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

/// Decoder for one direction of one leg. Keeps codec state across packets (Opus), so feed it
/// the payloads in sequence order and call [`Decoder::conceal`] for each lost packet.
pub struct Decoder {
    codec: Codec,
    opus: Option<opus::Decoder>,
    last_frame: usize,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("codec", &self.codec).field("last_frame", &self.last_frame).finish()
    }
}

impl Decoder {
    /// A decoder for `codec`. Telephone events and comfort noise get a decoder that produces no
    /// samples; `Unknown` is an error.
    pub fn new(codec: Codec) -> Result<Self, CodecError> {
        let opus = match codec {
            Codec::Unknown => return Err(CodecError::Unsupported(codec)),
            Codec::Opus => Some(opus::Decoder::new(OUTPUT_RATE, opus::Channels::Mono)?),
            _ => None,
        };
        Ok(Decoder { codec, opus, last_frame: DEFAULT_FRAME_SAMPLES })
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Samples produced by the last decoded speech packet (20 ms before the first): the natural
    /// size for concealing one lost packet.
    pub fn last_frame_samples(&self) -> usize {
        self.last_frame
    }

    /// Forget codec state (new SSRC, after a long gap).
    pub fn reset(&mut self) {
        if let Some(dec) = &mut self.opus {
            // Only fails on an invalid decoder pointer; a fresh decoder is the fallback.
            if dec.reset_state().is_err() {
                if let Ok(fresh) = opus::Decoder::new(OUTPUT_RATE, opus::Channels::Mono) {
                    *dec = fresh;
                }
            }
        }
        self.last_frame = DEFAULT_FRAME_SAMPLES;
    }

    /// Decode one RTP payload, appending 8 kHz mono samples to `out`; returns how many were
    /// appended. Telephone events, comfort noise and empty payloads append nothing (their
    /// duration is the caller's RTP-timestamp business). On error `out` is left unchanged.
    pub fn decode_into(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, CodecError> {
        if payload.is_empty() {
            return Ok(0);
        }
        let n = match self.codec {
            Codec::Pcmu => {
                g711::decode_ulaw_into(payload, out);
                payload.len()
            }
            Codec::Pcma => {
                g711::decode_alaw_into(payload, out);
                payload.len()
            }
            Codec::Opus => {
                let Some(dec) = &mut self.opus else {
                    return Err(CodecError::Unsupported(self.codec));
                };
                let start = out.len();
                out.resize(start + MAX_OPUS_SAMPLES, 0);
                match dec.decode(payload, &mut out[start..], false) {
                    Ok(n) => {
                        let n = n.min(MAX_OPUS_SAMPLES);
                        out.truncate(start + n);
                        n
                    }
                    Err(e) => {
                        out.truncate(start);
                        return Err(e.into());
                    }
                }
            }
            Codec::TelephoneEvent | Codec::ComfortNoise => return Ok(0),
            Codec::Unknown => return Err(CodecError::Unsupported(self.codec)),
        };
        if n > 0 {
            self.last_frame = n;
        }
        Ok(n)
    }

    /// [`Decoder::decode_into`] into a fresh vector.
    pub fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, CodecError> {
        let mut out = Vec::with_capacity(MAX_OPUS_SAMPLES);
        self.decode_into(payload, &mut out)?;
        Ok(out)
    }

    /// Fill a gap of `samples` (at 8 kHz, at most [`MAX_CONCEAL_SAMPLES`]) for lost packets,
    /// appending to `out`: Opus packet-loss concealment (which fades to silence by itself over
    /// long gaps), silence for every other codec. Returns how many samples were appended.
    pub fn conceal_into(&mut self, samples: usize, out: &mut Vec<i16>) -> usize {
        let samples = samples.min(MAX_CONCEAL_SAMPLES);
        let start = out.len();
        out.resize(start + samples, 0);
        if let Some(dec) = &mut self.opus {
            let mut scratch = [0i16; MAX_OPUS_SAMPLES];
            let mut done = 0;
            while done < samples {
                let want = (samples - done).min(MAX_OPUS_SAMPLES);
                // PLC needs whole 2.5 ms quanta: round up and drop the excess.
                let ask = want.div_ceil(OPUS_PLC_QUANTUM) * OPUS_PLC_QUANTUM;
                match dec.decode(&[], &mut scratch[..ask], false) {
                    Ok(_) => {
                        out[start + done..start + done + want].copy_from_slice(&scratch[..want]);
                    }
                    // Leave the zeros already in place: silence is the fallback concealment.
                    Err(_) => break,
                }
                done += want;
            }
        }
        samples
    }

    /// [`Decoder::conceal_into`] into a fresh vector.
    pub fn conceal(&mut self, samples: usize) -> Vec<i16> {
        let mut out = Vec::with_capacity(samples.min(MAX_CONCEAL_SAMPLES));
        self.conceal_into(samples, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f32, n: usize, offset: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + offset) as f32 / rate as f32;
                (8000.0 * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        if x.is_empty() {
            return 0.0;
        }
        (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn payload_map_static_and_rtpmap() {
        let d = PayloadMap::default();
        assert_eq!(d.codec(0), Codec::Pcmu);
        assert_eq!(d.codec(8), Codec::Pcma);
        assert_eq!(d.codec(13), Codec::ComfortNoise);
        assert_eq!(d.codec(111), Codec::Unknown);
        assert_eq!(d.codec(200), Codec::Unknown);

        let map = PayloadMap::from_rtpmap(&[
            (111, "opus/48000/2".to_string()),
            (101, "telephone-event/8000".to_string()),
            (102, "TELEPHONE-EVENT/48000".to_string()),
            (96, "VP8/90000".to_string()),
            (97, "pcma/notanumber".to_string()),
            (200, "opus/48000/2".to_string()),
        ]);
        assert_eq!(map.format(111), Some(PayloadFormat { codec: Codec::Opus, clock_rate: 48000 }));
        assert_eq!(map.codec(101), Codec::TelephoneEvent);
        assert_eq!(map.format(102).unwrap().clock_rate, 48000);
        assert_eq!(map.codec(96), Codec::Unknown);
        assert_eq!(map.format(97), Some(PayloadFormat { codec: Codec::Pcma, clock_rate: 8000 }));
        assert_eq!(map.codec(0), Codec::Pcmu, "static types survive");
        assert_eq!(map.codec(200), Codec::Unknown);
    }

    #[test]
    fn payload_map_from_sdp_media() {
        let sdp = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 111 0 8 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n";
        let session = crate::sdp::parse(sdp).unwrap();
        let map = PayloadMap::from_media(&session.media[0]);
        assert_eq!(map.codec(111), Codec::Opus);
        assert_eq!(map.codec(0), Codec::Pcmu);
        assert_eq!(map.codec(8), Codec::Pcma);
        assert_eq!(map.codec(101), Codec::TelephoneEvent);
    }

    #[test]
    fn g711_decoder_and_silence_concealment() {
        let pcm = sine(8000, 440.0, 160, 0);
        let mut mu = Vec::new();
        g711::encode_ulaw_into(&pcm, &mut mu);
        let mut d = Decoder::new(Codec::Pcmu).unwrap();
        let out = d.decode(&mu).unwrap();
        assert_eq!(out.len(), 160);
        assert!(rms(&out) > 5000.0);
        assert_eq!(d.last_frame_samples(), 160);
        assert_eq!(d.conceal(160), vec![0; 160]);

        let mut a = Vec::new();
        g711::encode_alaw_into(&pcm, &mut a);
        let mut d = Decoder::new(Codec::Pcma).unwrap();
        let out = d.decode(&a).unwrap();
        assert_eq!(out.len(), 160);
        for (x, y) in pcm.iter().zip(&out) {
            assert!((*x as i32 - *y as i32).abs() <= 256);
        }
    }

    #[test]
    fn non_speech_and_unknown() {
        let mut te = Decoder::new(Codec::TelephoneEvent).unwrap();
        assert_eq!(te.decode(&[1, 0x8a, 0x03, 0x20]).unwrap(), Vec::<i16>::new());
        assert_eq!(te.conceal(80).len(), 80);
        let mut cn = Decoder::new(Codec::ComfortNoise).unwrap();
        assert!(cn.decode(&[40]).unwrap().is_empty());
        assert!(matches!(Decoder::new(Codec::Unknown), Err(CodecError::Unsupported(Codec::Unknown))));
        let mut d = Decoder::new(Codec::Pcmu).unwrap();
        assert!(d.decode(&[]).unwrap().is_empty());
        assert_eq!(d.conceal(usize::MAX).len(), MAX_CONCEAL_SAMPLES);
    }

    /// Real-world Opus runs with a 48 kHz RTP clock and 20 ms frames; decoding at 8 kHz must
    /// give 160 samples per packet and keep the tone.
    #[test]
    fn opus_decodes_at_8k_and_conceals() {
        let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let mut pcm = Vec::new();
        for i in 0..25 {
            let frame = sine(48000, 440.0, 960, i * 960);
            let packet = enc.encode_vec(&frame, 4000).unwrap();
            let n = dec.decode_into(&packet, &mut pcm).unwrap();
            assert_eq!(n, 160);
        }
        assert_eq!(pcm.len(), 25 * 160);
        // Skip the codec's start-up; 8000 peak sine -> rms ≈ 5657.
        let level = rms(&pcm[1600..]);
        assert!((3500.0..8000.0).contains(&level), "rms {level}");
        assert_eq!(dec.last_frame_samples(), 160);

        // One lost packet: PLC continues the tone rather than going silent.
        let plc = dec.conceal(160);
        assert_eq!(plc.len(), 160);
        assert!(rms(&plc) > 500.0, "plc rms {}", rms(&plc));
        // Sizes that are not whole 2.5 ms quanta, and longer than one Opus packet.
        assert_eq!(dec.conceal(7).len(), 7);
        assert_eq!(dec.conceal(2000).len(), 2000);
        // Decoding resumes after concealment.
        let packet = enc.encode_vec(&sine(48000, 440.0, 960, 0), 4000).unwrap();
        assert_eq!(dec.decode(&packet).unwrap().len(), 160);
        dec.reset();
        assert_eq!(dec.decode(&packet).unwrap().len(), 160);
    }

    #[test]
    fn opus_survives_random_payloads() {
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        // xorshift64*: deterministic, no extra dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let (mut ok, mut err) = (0, 0);
        for _ in 0..20_000 {
            let len = (next() % 1500) as usize;
            let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut out = vec![7i16; 3];
            match dec.decode_into(&payload, &mut out) {
                Ok(n) => {
                    assert!(n <= MAX_OPUS_SAMPLES);
                    assert_eq!(out.len(), 3 + n);
                    ok += 1;
                }
                Err(CodecError::Opus(_)) => {
                    assert_eq!(out, vec![7, 7, 7]);
                    err += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
            if next() % 8 == 0 {
                assert_eq!(dec.conceal(160).len(), 160);
            }
        }
        assert!(ok > 0 && err > 0, "ok {ok} err {err}");
    }
}
