//! Media-stream inputs: platforms that hand a call's audio to analytics as a stream per call
//! (issue 11). Each dialect is a sans-IO core that turns the platform's frames into the call
//! domain's events ([`StreamEvent`]); the driver (`io::stream`) feeds them to the analysis as a
//! call of input `stream`. Hearken only receives: nothing here can harm a call.
//!
//! Dialects: Twilio Media Streams ([`twilio`]), jambonz `listen` and FreeSWITCH mod_audio_fork
//! ([`l16`]), Asterisk AudioSocket ([`audiosocket`]) and chan_websocket ([`chanws`]), Genesys
//! Cloud AudioHook ([`audiohook`]).
//! Not here: sockets and WebSocket framing (the driver), decoding (the analysis).

pub mod audiohook;
pub mod audiosocket;
pub mod chanws;
pub mod l16;
pub mod twilio;

use crate::call::Party;
use std::time::Duration;

/// What a stream frame means for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The stream describes its call: who the agent is, the queue, the platform's call id.
    Start { agent_id: String, queue: String, token: Option<String> },
    /// 20 ms (or so) of µ-law audio of one party: its sequence number and its media timestamp
    /// in milliseconds from the start of the stream.
    Audio { party: Party, seq: u32, timestamp_ms: u64, payload: Vec<u8> },
    /// The platform ended the stream.
    Stop,
    /// A frame that needs no action (connected, mark, dtmf).
    Nothing,
}

/// Why a frame was refused (counted; the stream goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    NotJson,
    UnknownEvent,
    MissingField,
    BadPayload,
    /// Audio before `start`.
    NotStarted,
    /// A media format this input does not take.
    Unsupported,
}

/// A token bucket: `cap` units, refilled at `per_s` units per second of (passed-in) time.
#[derive(Debug, Clone)]
struct Bucket {
    level: f64,
    cap: f64,
    per_s: f64,
    last: Duration,
}

impl Bucket {
    fn new(cap: f64, per_s: f64) -> Bucket {
        Bucket { level: cap, cap, per_s, last: Duration::ZERO }
    }

    fn take(&mut self, now: Duration, n: f64) -> bool {
        let dt = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.level = (self.level + dt * self.per_s).min(self.cap);
        if self.level >= n {
            self.level -= n;
            true
        } else {
            false
        }
    }
}

/// Messages a stream may send per second (Twilio sends 50 per track, AudioHook and chan_websocket
/// about 50), and how many at once after a stall.
pub const MAX_MESSAGES_PER_S: f64 = 250.0;
const MESSAGE_BURST: f64 = 400.0;
/// Audio a stream may deliver per second of wall time, per party: real time with a margin...
const AUDIO_RATE: f64 = 1.25;
/// ... and, at once, up to this much buffered audio (a platform catching up after a stall; kept
/// small because the analysis queue is shared with every other call).
const AUDIO_BURST_MS: f64 = 4_000.0;

/// Bounds one stream's input: messages per second and audio per second of wall time, per
/// party. What is over is dropped and counted; the stream goes on. Time is passed in (the
/// stream's age).
#[derive(Debug, Clone)]
pub struct RateGuard {
    messages: Bucket,
    audio: [Bucket; 2],
}

impl Default for RateGuard {
    fn default() -> Self {
        let audio = Bucket::new(AUDIO_BURST_MS, AUDIO_RATE * 1000.0);
        RateGuard { messages: Bucket::new(MESSAGE_BURST, MAX_MESSAGES_PER_S), audio: [audio.clone(), audio] }
    }
}

impl RateGuard {
    /// One message arrived at `now`: false when it is over the rate (drop it).
    pub fn message(&mut self, now: Duration) -> bool {
        self.messages.take(now, 1.0)
    }

    /// `ms` of `party`'s audio arrived at `now`: false when it is over the rate (drop it).
    pub fn audio(&mut self, now: Duration, party: Party, ms: f64) -> bool {
        self.audio[party.idx()].take(now, ms)
    }
}

/// Linear PCM at `rate` Hz to 8 kHz: each output sample is the mean of the input samples its
/// period covers (a box low-pass; enough for voice activity and level). Input not yet used is
/// carried to the next frame, so a stream cut into frames of any size gives the same samples
/// as one long frame.
#[derive(Debug, Clone)]
pub struct Downsampler {
    rate: u32,
    carry: Vec<i16>,
    /// Where, in `carry`, the next output period begins.
    start: f64,
}

impl Downsampler {
    pub fn new(rate: u32) -> Downsampler {
        Downsampler { rate, carry: Vec::new(), start: 0.0 }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn push(&mut self, input: &[i16]) -> Vec<i16> {
        if self.rate <= 8000 {
            return input.to_vec();
        }
        let step = self.rate as f64 / 8000.0;
        self.carry.extend_from_slice(input);
        let mut out = Vec::with_capacity((self.carry.len() as f64 / step) as usize + 1);
        let mut start = self.start;
        while start + step <= self.carry.len() as f64 {
            let a = start as usize;
            let b = ((start + step) as usize).clamp(a + 1, self.carry.len());
            let span = &self.carry[a..b];
            out.push((span.iter().map(|&x| x as i64).sum::<i64>() / span.len() as i64) as i16);
            start += step;
        }
        let used = (start.floor() as usize).min(self.carry.len());
        self.carry.drain(..used);
        self.start = start - used as f64;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_guard_passes_real_time_and_drops_a_flood() {
        let mut g = RateGuard::default();
        // 10 minutes of real time: 20 ms frames of both parties, every one passes.
        for i in 0..30_000u64 {
            let now = Duration::from_millis(i * 20);
            assert!(g.message(now) && g.audio(now, Party::Customer, 20.0) && g.audio(now, Party::Agent, 20.0), "frame {i}");
        }
        // A catch-up burst of 3 s of buffered audio at one instant passes too...
        let now = Duration::from_secs(600);
        assert_eq!((0..150).filter(|_| g.audio(now, Party::Customer, 20.0)).count(), 150);
        // ...but a flood (a minute of audio in a second) is cut to the budget.
        let mut g = RateGuard::default();
        let passed = (0..3000).filter(|i| g.audio(Duration::from_millis(i / 3), Party::Agent, 20.0)).count();
        assert!((200..=300).contains(&passed), "{passed} of 3000 frames passed");
        let messages = (0..5000).filter(|i| g.message(Duration::from_millis(i / 5))).count();
        assert!((400..=700).contains(&messages), "{messages}");
    }

    #[test]
    fn resampling_to_8k_is_frame_size_independent() {
        for rate in [8000u32, 12000, 16000, 24000, 32000, 44100, 48000, 96000, 192000] {
            // One second of a 400 Hz tone.
            let tone: Vec<i16> =
                (0..rate).map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 400.0 * i as f64 / rate as f64).sin()) as i16).collect();
            let whole = Downsampler::new(rate).push(&tone);
            assert!((7999..=8000).contains(&whole.len()), "{rate}: {}", whole.len());
            let mut d = Downsampler::new(rate);
            let pieces: Vec<i16> = tone.chunks(rate as usize / 50 + 7).flat_map(|c| d.push(c)).collect();
            assert!(pieces.len().abs_diff(whole.len()) <= 1, "{rate}: {} vs {}", pieces.len(), whole.len());
            // Equal but for float rounding at a period's edge (one input sample in or out of a box).
            let worst = pieces.iter().zip(&whole).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap_or(0);
            assert!(worst <= 400, "{rate}: samples differ by up to {worst}");
            // The tone keeps its level (a 400 Hz tone passes the box filter nearly unchanged).
            let rms = (whole.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / whole.len() as f64).sqrt();
            assert!((5200.0..5700.0).contains(&rms), "{rate}: rms {rms}");
        }
    }
}
