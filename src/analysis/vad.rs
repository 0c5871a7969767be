//! Voice-activity detection per leg, behind the small [`Vad`] trait: one decision per 10 ms frame
//! of 8 kHz PCM (80 samples).
//!
//! Two detectors, chosen by config (`analysis.vad`) and compared on the corpus in
//! docs/analysis.md:
//! - [`EnergyVad`] (default): frame energy against an adaptive threshold
//!   `max(noise floor + 7 dB, recent peak − 30 dB, −60 dBFS)` for onsets, looser while speech
//!   lasts (hysteresis). The noise floor is the minimum
//!   100 ms block energy of the last 8 s, the peak a slowly decaying maximum: the causal version
//!   of the rule the corpus truth uses (`max(p99 − 30 dB, p10 + 10 dB)`).
//! - [`WebrtcVad`]: libfvad (the WebRTC GMM detector) through `webrtc-vad`, aggressive mode.
//!
//! Not here: bridging of short pauses and everything about turns (see `turns`).

/// Samples per analysis frame (10 ms at 8 kHz).
pub const FRAME: usize = 80;
pub const RATE: u32 = 8000;

/// One frame's decision: `speech` (with hangover and hysteresis), and `strong` when the frame on
/// its own passes the strict onset threshold. A segment made of weak frames only (crosstalk from
/// other people in the room, line noise) is discarded by the turn analyzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    pub speech: bool,
    pub strong: bool,
}

pub trait Vad: Send {
    /// Decision for one frame (`FRAME` samples, or a multiple).
    fn decide(&mut self, frame: &[i16]) -> Decision;
    fn is_speech(&mut self, frame: &[i16]) -> bool {
        self.decide(frame).speech
    }
    fn name(&self) -> &'static str;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VadKind {
    #[default]
    Energy,
    Webrtc,
}

impl VadKind {
    pub fn name(self) -> &'static str {
        match self {
            VadKind::Energy => "energy",
            VadKind::Webrtc => "webrtc",
        }
    }
}

/// Thresholds of the energy detector (config `[analysis.energy]`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnergyParams {
    /// Speech must be this far above the noise floor.
    pub floor_margin_db: f32,
    /// ...and no further than this below the recent peak.
    pub peak_margin_db: f32,
    /// ...and above this absolute level.
    pub min_dbfs: f32,
    /// Frames kept as speech after the energy drops (word tails).
    pub hangover_frames: u32,
    /// Once in speech, it continues while the energy stays above these looser thresholds
    /// (hysteresis: strict onsets reject crosstalk, loose continuation keeps quiet word tails).
    pub continue_floor_margin_db: f32,
    pub continue_peak_margin_db: f32,
    pub continue_min_dbfs: f32,
}

impl Default for EnergyParams {
    fn default() -> Self {
        EnergyParams {
            floor_margin_db: 7.0,
            peak_margin_db: 30.0,
            min_dbfs: -60.0,
            hangover_frames: 5,
            continue_floor_margin_db: 5.0,
            continue_peak_margin_db: 55.0,
            continue_min_dbfs: -75.0,
        }
    }
}

pub fn make(kind: VadKind, energy: &EnergyParams) -> Box<dyn Vad> {
    match kind {
        VadKind::Energy => Box::new(EnergyVad::new(*energy)),
        VadKind::Webrtc => Box::new(WebrtcVad::new()),
    }
}

/// Frame energy in dBFS (full scale sine ≈ −3 dBFS); digital silence is −100.
pub fn frame_dbfs(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return -100.0;
    }
    let sum: f64 = frame.iter().map(|&s| (s as f64) * (s as f64)).sum();
    let ms = sum / frame.len() as f64 / (32768.0 * 32768.0);
    if ms <= 1e-10 {
        -100.0
    } else {
        (10.0 * ms.log10()) as f32
    }
}

const BLOCK_FRAMES: usize = 10; // 100 ms
const FLOOR_BLOCKS: usize = 80; // 8 s

#[derive(Debug, Clone)]
pub struct EnergyVad {
    /// Energies of the last 100 ms blocks (ring).
    blocks: Vec<f32>,
    next_block: usize,
    acc: f64,
    acc_n: usize,
    peak: f32,
    /// dB the peak decays per frame (0.5 dB/s).
    peak_decay: f32,
    p: EnergyParams,
    hang: u32,
    active: bool,
}

impl Default for EnergyVad {
    fn default() -> Self {
        Self::new(EnergyParams::default())
    }
}

impl EnergyVad {
    pub fn new(p: EnergyParams) -> Self {
        EnergyVad {
            blocks: Vec::with_capacity(FLOOR_BLOCKS),
            next_block: 0,
            acc: 0.0,
            acc_n: 0,
            peak: -40.0,
            peak_decay: 0.005,
            p,
            hang: 0,
            active: false,
        }
    }

    /// Minimum 100 ms block energy of the last 8 s. A call that opens with speech and no pause
    /// has a floor at speech level until the first pause (100 ms) arrives; capping it early
    /// instead makes line noise at call start count as speech (measured on d04).
    fn floor(&self) -> f32 {
        self.blocks.iter().copied().fold(f32::INFINITY, f32::min).min(0.0)
    }
    /// The threshold in force: the onset one, or the looser one while in speech.
    pub fn threshold(&self) -> f32 {
        let floor = if self.blocks.is_empty() { -100.0 } else { self.floor() };
        if self.active {
            (floor + self.p.continue_floor_margin_db).max(self.peak - self.p.continue_peak_margin_db).max(self.p.continue_min_dbfs)
        } else {
            (floor + self.p.floor_margin_db).max(self.peak - self.p.peak_margin_db).max(self.p.min_dbfs)
        }
    }
}

impl Vad for EnergyVad {
    fn decide(&mut self, frame: &[i16]) -> Decision {
        let e = frame_dbfs(frame);
        self.peak = (self.peak - self.peak_decay).max(e);
        let sum: f64 = frame.iter().map(|&s| (s as f64) * (s as f64)).sum();
        self.acc += sum / frame.len().max(1) as f64;
        self.acc_n += 1;
        if self.acc_n == BLOCK_FRAMES {
            let ms = self.acc / BLOCK_FRAMES as f64 / (32768.0 * 32768.0);
            let db = if ms <= 1e-10 { -100.0 } else { (10.0 * ms.log10()) as f32 };
            if self.blocks.len() < FLOOR_BLOCKS {
                self.blocks.push(db);
            } else {
                self.blocks[self.next_block] = db;
            }
            self.next_block = (self.next_block + 1) % FLOOR_BLOCKS;
            self.acc = 0.0;
            self.acc_n = 0;
        }
        let was = self.active;
        self.active = false;
        let strong = e > self.threshold();
        self.active = was;
        let speech = if e > self.threshold() {
            self.active = true;
            self.hang = self.p.hangover_frames;
            true
        } else if self.hang > 0 {
            self.hang -= 1;
            true
        } else {
            self.active = false;
            false
        };
        Decision { speech, strong }
    }
    fn name(&self) -> &'static str {
        "energy"
    }
}

pub struct WebrtcVad {
    inner: webrtc_vad::Vad,
}

// libfvad keeps plain state in its own heap object and has no thread affinity; one leg's detector
// is used by one task at a time, never shared.
unsafe impl Send for WebrtcVad {}

impl WebrtcVad {
    pub fn new() -> Self {
        WebrtcVad { inner: webrtc_vad::Vad::new_with_rate_and_mode(webrtc_vad::SampleRate::Rate8kHz, webrtc_vad::VadMode::Aggressive) }
    }
}

impl Default for WebrtcVad {
    fn default() -> Self {
        Self::new()
    }
}

impl Vad for WebrtcVad {
    fn decide(&mut self, frame: &[i16]) -> Decision {
        let speech = self.inner.is_voice_segment(frame).unwrap_or(false);
        Decision { speech, strong: speech }
    }
    fn name(&self) -> &'static str {
        "webrtc"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amp: f64, n: usize) -> Vec<i16> {
        (0..n).map(|i| (amp * (i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin()) as i16).collect()
    }

    #[test]
    fn energy_detects_loud_against_quiet() {
        let mut v = EnergyVad::default();
        let quiet = tone(30.0, FRAME);
        let loud = tone(3000.0, FRAME);
        for _ in 0..100 {
            assert!(!v.is_speech(&quiet));
        }
        assert!(v.is_speech(&loud));
        // Hangover keeps word tails, then silence is silence.
        let tail: Vec<bool> = (0..8).map(|_| v.is_speech(&[0; FRAME])).collect();
        assert_eq!(tail, [true, true, true, true, true, false, false, false]);
        assert!((frame_dbfs(&tone(32767.0, 800)) + 3.0).abs() < 0.1);
    }

    #[test]
    fn webrtc_runs() {
        let mut v = WebrtcVad::new();
        assert!(!v.is_speech(&[0; FRAME]));
    }
}
