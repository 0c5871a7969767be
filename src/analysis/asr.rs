//! Streaming speech recognition, VAD-gated and pooled.
//!
//! - [`Engine`] / [`Recognizer`]: the engine behind a small trait; [`VoskEngine`] shares one
//!   `Arc<vosk::Model>` (Send + Sync) and hands out recognizers.
//! - [`AsrPool`]: dedicated worker threads (never relay or analysis threads). Speech arrives as
//!   streams: `open` at VAD onset (with pre-roll), `audio` while speech lasts, `close` after the
//!   tail. A stream sticks to one worker; each worker keeps a small pool of recognizers and
//!   resets them between utterances instead of creating one per leg forever (an active Vosk
//!   recognizer grows to tens of MiB, and glibc keeps that memory after drop).
//! - Queues are bounded: when a worker cannot keep up, a new utterance is skipped and counted,
//!   and an utterance already streaming is cut short — the relay and the timing metrics never
//!   wait for ASR.
//!
//! Word times come back relative to the stream start and are mapped onto the call's audio
//! position (seconds since call start).
//!
//! Not here: deciding what is speech (the pipeline's VAD), phrase logic (`phrases`).

pub use super::phrases::{TranscriptSegment, Word};
use super::turns::Party;
use crate::call::CallId;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

/// Speech recognition settings (`[asr]`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AsrConfig {
    /// A Vosk model folder. Empty: speech recognition is off, everything else works.
    pub model: String,
    /// Phrase pack (TOML) for the model's language.
    pub phrases: String,
    /// Recognition worker threads.
    pub workers: usize,
    /// Seconds of audio a worker may have queued before new speech is skipped (and counted).
    pub queue_s: f64,
    /// Idle recognizers kept per worker for reuse.
    pub pooled: usize,
    /// Audio kept before the VAD onset, and silence awaited before closing an utterance.
    pub preroll_ms: u32,
    pub tail_ms: u32,
    /// Longer utterances are cut into pieces (bounds recognizer memory).
    pub max_utterance_s: u32,
    /// Phrase-signal thresholds (read-back window, closing window, ...).
    pub phrase_params: super::phrases::PhraseParams,
}

impl Default for AsrConfig {
    fn default() -> Self {
        AsrConfig {
            model: String::new(),
            phrases: "config/phrases/en.toml".into(),
            workers: 1,
            queue_s: 20.0,
            pooled: 4,
            preroll_ms: 300,
            tail_ms: 400,
            max_utterance_s: 30,
            phrase_params: Default::default(),
        }
    }
}

impl AsrConfig {
    pub fn enabled(&self) -> bool {
        !self.model.trim().is_empty()
    }

    /// The phrase pack named by `asr.phrases`. The default path falls back to the built-in
    /// English pack when run from outside the source tree.
    pub fn phrase_pack(&self) -> Result<super::phrases::PhrasePack, super::phrases::PhraseError> {
        let p = Path::new(&self.phrases);
        if !p.exists() && self.phrases == AsrConfig::default().phrases {
            return Ok(super::phrases::PhrasePack::builtin_en());
        }
        super::phrases::PhrasePack::load(p)
    }
}

/// Run phrase detection over a finished transcript (time order), as the live path does segment
/// by segment.
pub fn detect_phrases(
    pack: super::phrases::PhrasePack,
    params: super::phrases::PhraseParams,
    transcript: &[TranscriptSegment],
    customer_name: Option<String>,
    turns: &super::turns::CallSummary,
) -> super::phrases::PhraseSummary {
    let mut d = super::phrases::PhraseDetector::new(pack, params);
    d.set_customer_name(customer_name);
    for seg in transcript {
        d.handle_time(seg.end);
        d.handle_segment(seg);
    }
    let mut summary = d.finish(turns.call_duration_s, [turns.talk_time_s.customer, turns.talk_time_s.agent]);
    summary.backchannel_check = d.check_backchannels(&turns.backchannels.events, transcript);
    summary
}

/// Recognised text of one utterance; times relative to the start of its audio.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recognized {
    pub text: String,
    pub words: Vec<Word>,
}

pub trait Recognizer: Send {
    /// Feed audio. Word times of [`Self::finish`] are relative to the first sample fed after the
    /// previous `finish`.
    fn accept(&mut self, pcm: &[i16]);
    /// Current hypothesis (partial result), cheap enough to call now and then.
    fn partial(&mut self) -> String;
    /// End of the utterance: the final result; the recognizer is then reset for reuse.
    fn finish(&mut self) -> Recognized;
}

pub trait Engine: Send + Sync {
    fn recognizer(&self) -> Result<Box<dyn Recognizer>, AsrError>;
    fn name(&self) -> String;
}

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("asr.model: {0} is not a Vosk model folder (expected am/, conf/ inside)")]
    NotAModel(String),
    #[error("asr.model: Vosk could not load the model at {0}")]
    Load(String),
    #[error("Vosk could not create a recognizer")]
    Recognizer,
}

pub struct VoskEngine {
    model: Arc<vosk::Model>,
    path: String,
    rate: f32,
}

impl VoskEngine {
    /// Load a model folder (1–2 s and ~500 MiB for the small Korean model).
    pub fn load(path: &Path, sample_rate: u32) -> Result<Self, AsrError> {
        let p = path.display().to_string();
        if !path.join("am").is_dir() && !path.join("conf").is_dir() {
            return Err(AsrError::NotAModel(p));
        }
        vosk::set_log_level(vosk::LogLevel::Error);
        let model = vosk::Model::new(p.clone()).ok_or_else(|| AsrError::Load(p.clone()))?;
        Ok(VoskEngine { model: Arc::new(model), path: p, rate: sample_rate as f32 })
    }
}

/// Vosk keeps counting time across `reset()`: word times are seconds since the recognizer was
/// created, so the samples fed before the current utterance are subtracted.
struct VoskRecognizer {
    rec: vosk::Recognizer,
    rate: f64,
    fed: u64,
    utterance_start: u64,
}

impl Recognizer for VoskRecognizer {
    fn accept(&mut self, pcm: &[i16]) {
        let _ = self.rec.accept_waveform(pcm);
        self.fed += pcm.len() as u64;
    }
    fn partial(&mut self) -> String {
        self.rec.partial_result().partial.to_string()
    }
    fn finish(&mut self) -> Recognized {
        let base = self.utterance_start as f64 / self.rate;
        let out = match self.rec.final_result().single() {
            Some(r) => Recognized {
                text: r.text.to_string(),
                words: r
                    .result
                    .iter()
                    .map(|w| Word {
                        word: w.word.to_string(),
                        start: (w.start as f64 - base).max(0.0),
                        end: (w.end as f64 - base).max(0.0),
                        conf: w.conf,
                    })
                    .collect(),
            },
            None => Recognized::default(),
        };
        self.rec.reset();
        self.utterance_start = self.fed;
        out
    }
}

impl Engine for VoskEngine {
    fn recognizer(&self) -> Result<Box<dyn Recognizer>, AsrError> {
        let mut rec = vosk::Recognizer::new(&self.model, self.rate).ok_or(AsrError::Recognizer)?;
        rec.set_words(true);
        Ok(Box::new(VoskRecognizer { rec, rate: self.rate as f64, fed: 0, utterance_start: 0 }))
    }
    fn name(&self) -> String {
        format!("vosk:{}", self.path)
    }
}

/// Feeds one call's gate commands into the pool: tracks each party's open stream.
#[derive(Default)]
pub struct CallStreams {
    open: [Option<u64>; 2],
    cut: [bool; 2],
    /// Streams opened and not yet reported back by the pool.
    pub outstanding: usize,
}

impl CallStreams {
    pub fn handle(&mut self, pool: &dyn crate::analysis::call::AsrSink, call: CallId, party: Party, cmd: GateCmd) {
        let i = party.idx();
        match cmd {
            GateCmd::Open { start_s, pcm } => {
                self.open[i] = pool.open(call, party, start_s, pcm);
                self.cut[i] = false;
                if self.open[i].is_some() {
                    self.outstanding += 1;
                }
            }
            GateCmd::Audio(pcm) => {
                if let (Some(id), false) = (self.open[i], self.cut[i]) {
                    self.cut[i] = !pool.audio(id, pcm);
                }
            }
            GateCmd::Close => {
                if let Some(id) = self.open[i].take() {
                    pool.close(id);
                }
            }
        }
    }
}

/// What the pool reports back.
#[derive(Debug, Clone)]
pub enum AsrOutput {
    Partial { call: CallId, party: Party, text: String },
    Final { call: CallId, segment: TranscriptSegment },
}

#[derive(Debug, Default)]
pub struct AsrStats {
    pub utterances: AtomicU64,
    pub skipped_utterances: AtomicU64,
    pub truncated_utterances: AtomicU64,
    /// Seconds of audio recognised, in milliseconds.
    pub audio_ms: AtomicU64,
    /// Worker CPU time spent recognising, in microseconds.
    pub busy_us: AtomicU64,
    pub recognizers_created: AtomicU64,
}

impl AsrStats {
    /// Real-time factor of recognition so far (busy time / audio time).
    pub fn real_time_factor(&self) -> f64 {
        let a = self.audio_ms.load(Relaxed) as f64 * 1000.0;
        if a == 0.0 {
            0.0
        } else {
            self.busy_us.load(Relaxed) as f64 / a
        }
    }
}

enum Job {
    Open { id: u64, call: CallId, party: Party, start_s: f64, pcm: Vec<i16> },
    Audio { id: u64, pcm: Vec<i16> },
    Close { id: u64 },
}

struct Stream {
    call: CallId,
    party: Party,
    start_s: f64,
    samples: u64,
    rec: Box<dyn Recognizer>,
    last_partial: Instant,
}

struct WorkerHandle {
    tx: mpsc::Sender<Job>,
    /// Audio samples queued to this worker and not yet recognised: the back-pressure budget.
    pending: Arc<AtomicUsize>,
}

/// The worker pool. Cheap to clone (a handle).
#[derive(Clone)]
pub struct AsrPool {
    workers: Arc<Vec<WorkerHandle>>,
    budget: usize,
    next_id: Arc<AtomicU64>,
    pub stats: Arc<AsrStats>,
    rate: u32,
    /// Streams cut short by back-pressure: their remaining audio is not sent.
    cut: Arc<Mutex<std::collections::HashSet<u64>>>,
}

impl AsrPool {
    /// `workers` threads; each accepts at most `queue_s` seconds of not-yet-recognised audio
    /// before new speech is skipped; up to `pooled` idle recognizers are kept per worker.
    pub fn start(engine: Arc<dyn Engine>, workers: usize, queue_s: f64, pooled: usize, rate: u32, out: mpsc::Sender<AsrOutput>) -> AsrPool {
        let stats = Arc::new(AsrStats::default());
        let mut handles = Vec::new();
        for w in 0..workers.max(1) {
            let (tx, rx) = mpsc::channel::<Job>();
            let pending = Arc::new(AtomicUsize::new(0));
            handles.push(WorkerHandle { tx, pending: pending.clone() });
            let (engine, out, stats) = (engine.clone(), out.clone(), stats.clone());
            std::thread::Builder::new()
                .name(format!("hearken-asr-{w}"))
                .spawn(move || worker(engine, rx, out, stats, pooled, rate, pending))
                .expect("spawn asr worker");
        }
        let budget = (queue_s.max(0.1) * rate as f64) as usize;
        AsrPool { workers: Arc::new(handles), budget, next_id: Arc::new(AtomicU64::new(1)), stats, rate, cut: Default::default() }
    }

    fn worker_for(&self, id: u64) -> &WorkerHandle {
        &self.workers[(id % self.workers.len() as u64) as usize]
    }

    /// Queue audio within the budget; false when the worker is too far behind.
    fn send_audio(&self, id: u64, job: Job, samples: usize) -> bool {
        let w = self.worker_for(id);
        if w.pending.load(Relaxed) + samples > self.budget {
            return false;
        }
        w.pending.fetch_add(samples, Relaxed);
        if w.tx.send(job).is_err() {
            w.pending.fetch_sub(samples, Relaxed);
            return false;
        }
        true
    }

    /// Start an utterance (VAD onset). Returns its stream id, or None when the pool is behind
    /// (the utterance is skipped and counted).
    pub fn open(&self, call: CallId, party: Party, start_s: f64, preroll: Vec<i16>) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Relaxed);
        let n = preroll.len();
        if self.send_audio(id, Job::Open { id, call, party, start_s, pcm: preroll }, n) {
            Some(id)
        } else {
            self.stats.skipped_utterances.fetch_add(1, Relaxed);
            None
        }
    }

    /// More audio of a stream. False once the stream has been cut short (the pool fell behind):
    /// the rest of the utterance is not recognised, what came before still is.
    pub fn audio(&self, id: u64, pcm: Vec<i16>) -> bool {
        let mut cut = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        if cut.contains(&id) {
            return false;
        }
        let n = pcm.len();
        if self.send_audio(id, Job::Audio { id, pcm }, n) {
            return true;
        }
        cut.insert(id);
        self.stats.truncated_utterances.fetch_add(1, Relaxed);
        false
    }

    /// End of an utterance: the final result will come out of the pool. Always delivered.
    pub fn close(&self, id: u64) {
        self.cut.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        let _ = self.worker_for(id).tx.send(Job::Close { id });
    }

    pub fn sample_rate(&self) -> u32 {
        self.rate
    }
}

fn worker(
    engine: Arc<dyn Engine>,
    rx: mpsc::Receiver<Job>,
    out: mpsc::Sender<AsrOutput>,
    stats: Arc<AsrStats>,
    pooled: usize,
    rate: u32,
    pending: Arc<AtomicUsize>,
) {
    let mut idle: Vec<Box<dyn Recognizer>> = Vec::new();
    let mut streams: HashMap<u64, Stream> = HashMap::new();
    while let Ok(job) = rx.recv() {
        let t0 = Instant::now();
        match job {
            Job::Open { id, call, party, start_s, pcm } => {
                pending.fetch_sub(pcm.len(), Relaxed);
                let rec = match idle.pop() {
                    Some(r) => Some(r),
                    None => match engine.recognizer() {
                        Ok(r) => {
                            stats.recognizers_created.fetch_add(1, Relaxed);
                            Some(r)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "asr recognizer unavailable");
                            None
                        }
                    },
                };
                match rec {
                    Some(mut rec) => {
                        rec.accept(&pcm);
                        streams.insert(id, Stream { call, party, start_s, samples: pcm.len() as u64, rec, last_partial: Instant::now() });
                    }
                    None => {
                        let segment = TranscriptSegment { party, start: start_s, end: start_s, text: String::new(), words: Vec::new() };
                        let _ = out.send(AsrOutput::Final { call, segment });
                    }
                }
            }
            Job::Audio { id, pcm } => {
                pending.fetch_sub(pcm.len(), Relaxed);
                if let Some(s) = streams.get_mut(&id) {
                    s.rec.accept(&pcm);
                    s.samples += pcm.len() as u64;
                    if s.last_partial.elapsed().as_millis() >= 500 {
                        s.last_partial = Instant::now();
                        let text = s.rec.partial();
                        if !text.is_empty() {
                            let _ = out.send(AsrOutput::Partial { call: s.call, party: s.party, text });
                        }
                    }
                }
            }
            Job::Close { id } => {
                if let Some(mut s) = streams.remove(&id) {
                    let r = s.rec.finish();
                    stats.utterances.fetch_add(1, Relaxed);
                    stats.audio_ms.fetch_add(s.samples * 1000 / rate as u64, Relaxed);
                    if idle.len() < pooled {
                        idle.push(s.rec);
                    } else {
                        // A burst needed more recognizers than the pool keeps: this one goes,
                        // and its tens of MiB go back to the system rather than stay in the heap.
                        drop(s.rec);
                        crate::sys::release_heap();
                    }
                    // Always reported, empty or not, so a consumer can count its streams home.
                    let words: Vec<Word> =
                        r.words.into_iter().map(|w| Word { start: s.start_s + w.start, end: s.start_s + w.end, ..w }).collect();
                    let start = words.first().map_or(s.start_s, |w| w.start);
                    let end = words.last().map_or(s.start_s + s.samples as f64 / rate as f64, |w| w.end);
                    let segment = TranscriptSegment { party: s.party, start, end, text: r.text, words };
                    let _ = out.send(AsrOutput::Final { call: s.call, segment });
                }
            }
        }
        stats.busy_us.fetch_add(t0.elapsed().as_micros() as u64, Relaxed);
    }
}

/// Per-leg VAD gate: turns frame decisions into ASR stream commands with pre-roll and tail.
/// Sans-IO; the pipeline feeds it every frame.
#[derive(Debug)]
pub struct AsrGate {
    preroll: std::collections::VecDeque<i16>,
    preroll_samples: usize,
    tail_frames: u32,
    max_samples: usize,
    open: bool,
    silent_frames: u32,
    streamed: usize,
}

/// What the gate asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum GateCmd {
    /// Speech began; `start_s` is where `pcm` (pre-roll + this frame) begins.
    Open {
        start_s: f64,
        pcm: Vec<i16>,
    },
    Audio(Vec<i16>),
    Close,
}

impl AsrGate {
    /// `preroll_ms` of audio before onset, `tail_ms` of silence before closing, utterances cut
    /// at `max_s`.
    pub fn new(rate: u32, preroll_ms: u32, tail_ms: u32, max_s: u32, frame_ms: u32) -> Self {
        let preroll_samples = (rate * preroll_ms / 1000) as usize;
        AsrGate {
            preroll: std::collections::VecDeque::with_capacity(preroll_samples + 320),
            preroll_samples,
            tail_frames: tail_ms / frame_ms.max(1),
            max_samples: (rate * max_s) as usize,
            open: false,
            silent_frames: 0,
            streamed: 0,
        }
    }

    /// One frame at position `pos_s` with its VAD decision.
    pub fn handle_frame(&mut self, pos_s: f64, frame: &[i16], speech: bool, rate: u32, out: &mut Vec<GateCmd>) {
        if self.open {
            out.push(GateCmd::Audio(frame.to_vec()));
            self.streamed += frame.len();
            self.silent_frames = if speech { 0 } else { self.silent_frames + 1 };
            if self.silent_frames >= self.tail_frames || self.streamed >= self.max_samples {
                out.push(GateCmd::Close);
                self.open = false;
                self.preroll.clear();
            }
            return;
        }
        if speech {
            let mut pcm: Vec<i16> = self.preroll.drain(..).collect();
            let start_s = pos_s - pcm.len() as f64 / rate as f64;
            pcm.extend_from_slice(frame);
            self.streamed = pcm.len();
            self.silent_frames = 0;
            self.open = true;
            out.push(GateCmd::Open { start_s, pcm });
        } else {
            self.preroll.extend(frame.iter().copied());
            while self.preroll.len() > self.preroll_samples {
                self.preroll.pop_front();
            }
        }
    }

    /// End of audio: close an open stream.
    pub fn finish(&mut self, out: &mut Vec<GateCmd>) {
        if self.open {
            self.open = false;
            out.push(GateCmd::Close);
        }
    }
}

impl crate::analysis::call::AsrSink for AsrPool {
    fn open(&self, call: CallId, party: Party, start_s: f64, pcm: Vec<i16>) -> Option<u64> {
        AsrPool::open(self, call, party, start_s, pcm)
    }
    fn audio(&self, stream: u64, pcm: Vec<i16>) -> bool {
        AsrPool::audio(self, stream, pcm)
    }
    fn close(&self, stream: u64) {
        AsrPool::close(self, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_streams_speech_with_preroll_and_tail() {
        let mut g = AsrGate::new(8000, 300, 200, 30, 10);
        let mut out = Vec::new();
        let f = [1i16; 80];
        for i in 0..50 {
            g.handle_frame(i as f64 * 0.01, &f, false, 8000, &mut out);
        }
        assert!(out.is_empty());
        g.handle_frame(0.5, &f, true, 8000, &mut out);
        match &out[0] {
            GateCmd::Open { start_s, pcm } => {
                assert!((start_s - 0.2).abs() < 1e-9);
                assert_eq!(pcm.len(), 2400 + 80);
            }
            c => panic!("{c:?}"),
        }
        out.clear();
        for i in 0..19 {
            g.handle_frame(0.51 + i as f64 * 0.01, &f, false, 8000, &mut out);
        }
        assert!(!out.contains(&GateCmd::Close));
        g.handle_frame(0.70, &f, false, 8000, &mut out);
        assert_eq!(out.last(), Some(&GateCmd::Close));
    }

    struct Fake(usize);
    impl Recognizer for Fake {
        fn accept(&mut self, pcm: &[i16]) {
            self.0 += pcm.len();
        }
        fn partial(&mut self) -> String {
            String::new()
        }
        fn finish(&mut self) -> Recognized {
            let n = std::mem::take(&mut self.0);
            Recognized { text: format!("{n}"), words: vec![Word { word: format!("{n}"), start: 0.1, end: 0.2, conf: 1.0 }] }
        }
    }
    struct FakeEngine;
    impl Engine for FakeEngine {
        fn recognizer(&self) -> Result<Box<dyn Recognizer>, AsrError> {
            Ok(Box::new(Fake(0)))
        }
        fn name(&self) -> String {
            "fake".into()
        }
    }

    #[test]
    fn pool_maps_word_times_and_reuses_recognizers() {
        let (tx, rx) = mpsc::channel();
        let pool = AsrPool::start(Arc::new(FakeEngine), 1, 5.0, 2, 8000, tx);
        for k in 0..5 {
            let id = pool.open(CallId(7), Party::Agent, 10.0 * k as f64, vec![0; 800]).unwrap();
            assert!(pool.audio(id, vec![0; 800]));
            pool.close(id);
        }
        let mut finals = Vec::new();
        while finals.len() < 5 {
            if let AsrOutput::Final { segment, .. } = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap() {
                finals.push(segment);
            }
        }
        assert_eq!(finals[3].text, "1600");
        assert!((finals[3].words[0].start - 30.1).abs() < 1e-9);
        assert_eq!(pool.stats.recognizers_created.load(Relaxed), 1, "one recognizer, reset and reused");
        assert_eq!(pool.stats.utterances.load(Relaxed), 5);
    }
}
