//! Active-listening phrase signals (sans-IO, driven by ASR results and audio position): turns the
//! final ASR results of both parties into phrase events and a per-call summary, with the rules of
//! DESIGN §1 that need words rather than timing.
//!
//! - **Matching** is lexical, on normalised word sequences (lowercase, punctuation dropped,
//!   hyphens split), because Vosk gives lowercase words without punctuation. Multi-word phrases
//!   match as contiguous word runs, the longest phrase first. Every list comes from a language
//!   pack ([`PhrasePack`], one TOML file per language under `config/phrases/`).
//! - **Per utterance**: back-channel (the whole utterance is back-channel words), acknowledgement,
//!   empathy, thanks, next steps (both parties), distress cues (customer), paraphrase by cue or by
//!   content-word overlap with the customer's previous turn (agent), open/closed question by its
//!   opening words or a tag at its end (both), use of the customer's name (agent).
//! - **Spelled sequences**: runs of letters, spelling-alphabet words and digits given by the
//!   customer; the agent reading one back within `readback_window_s` is a read-back, otherwise the
//!   window's expiry (in [`PhraseDetector::handle_time`] or at [`PhraseDetector::finish`]) is a
//!   missed read-back.
//! - **Summary**: counts per party, pace (words per minute of own talk time, which the turn
//!   analyzer measures), closing (thanks and next steps by the agent at the end of the call),
//!   empathy after distress, long customer stories and whether the agent paraphrased them.
//!
//! Not here: ASR, audio, clocks, logging. Transcript text, evidence and the customer's name are
//! personal data: this module never logs them; events carry them to the call record only.
//! Negation, sarcasm, sentence boundaries inside one ASR result and number words above nine
//! ("twenty five") are out of reach of word lists; see docs/analysis.md, "Phrase signals".

use super::turns::{BackchannelEvent, Party, PerParty};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;

/// How far outside a back-channel's timing its words may lie (ASR word times vs VAD edges).
pub const BACKCHANNEL_SLACK_S: f64 = 0.3;

/// Longest spelled sequence kept (symbols beyond it are dropped): bounds the read-back comparison.
const MAX_SPELLED: usize = 64;
/// Agent spelled runs remembered for read-backs of customer sequences finalised later.
const MAX_AGENT_RUNS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Input

/// One recognised word, as in Vosk's `result` array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
    #[serde(default = "full_conf")]
    pub conf: f32,
}

fn full_conf() -> f32 {
    1.0
}

/// One final ASR result of one party. When `words` is empty, `text` is split on whitespace and the
/// words are spread evenly over `start..end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptSegment {
    pub party: Party,
    pub start: f64,
    pub end: f64,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub words: Vec<Word>,
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, thiserror::Error)]
pub enum PhraseError {
    #[error("cannot read phrase pack {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("phrase pack is not valid TOML: {0}")]
    Syntax(String),
    #[error("phrase key `{key}`: {msg}")]
    Key { key: String, msg: String },
}

fn key_err(key: impl Into<String>, msg: impl Into<String>) -> PhraseError {
    PhraseError::Key { key: key.into(), msg: msg.into() }
}

// ---------------------------------------------------------------------------------------------
// Parameters

/// Thresholds of the phrase rules (per queue, like the turn parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhraseParams {
    /// The agent must start reading a spelled sequence back within this long after it ended.
    pub readback_window_s: f64,
    /// Thanks and next steps count for the closing in this last part of the call.
    pub closing_window_s: f64,
    /// A spelled sequence has at least this many symbols ("double five" is two).
    pub min_spelled_tokens: usize,
    /// Share of the customer turn's content words the agent must repeat for a paraphrase.
    pub paraphrase_overlap: f64,
    /// ... and at least this many of them.
    pub paraphrase_min_shared: usize,
    /// A customer turn at least this long is a long story (the agent should confirm it).
    pub long_story_s: f64,
    /// Agent empathy this soon after a customer distress cue answers it.
    pub empathy_window_s: f64,
    /// Read-back: the longest common subsequence covers this share of the longer sequence.
    pub readback_match: f64,
    /// Spelled runs of one party separated by at most this much are one sequence (ASR results
    /// end at pauses, and people spell in chunks).
    pub spell_join_gap_s: f64,
    /// How far ASR results trail the audio position given to `handle_time`: windows expire only
    /// this much after their end, so a result still in the recognizer is not missed.
    pub asr_lag_s: f64,
}

impl Default for PhraseParams {
    fn default() -> Self {
        PhraseParams {
            readback_window_s: 30.0,
            closing_window_s: 60.0,
            min_spelled_tokens: 4,
            paraphrase_overlap: 0.3,
            paraphrase_min_shared: 3,
            long_story_s: 20.0,
            empathy_window_s: 30.0,
            readback_match: 0.8,
            spell_join_gap_s: 2.0,
            asr_lag_s: 2.0,
        }
    }
}

impl PhraseParams {
    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<(), PhraseError> {
        let secs = [
            ("readback_window_s", self.readback_window_s),
            ("closing_window_s", self.closing_window_s),
            ("long_story_s", self.long_story_s),
            ("empathy_window_s", self.empathy_window_s),
            ("spell_join_gap_s", self.spell_join_gap_s),
            ("asr_lag_s", self.asr_lag_s),
        ];
        for (k, v) in secs {
            if !(v.is_finite() && v >= 0.0) {
                return Err(key_err(k, "must be a non-negative number of seconds"));
            }
        }
        for (k, v) in [("paraphrase_overlap", self.paraphrase_overlap), ("readback_match", self.readback_match)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(key_err(k, "must be between 0 and 1"));
            }
        }
        if self.min_spelled_tokens < 2 {
            return Err(key_err("min_spelled_tokens", "must be at least 2"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Events and summary

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhraseKind {
    Backchannel,
    Acknowledgement,
    Empathy,
    Paraphrase,
    OpenQuestion,
    ClosedQuestion,
    SpelledSequence,
    ReadBack,
    NotReadBack,
    Thanks,
    NextSteps,
    CustomerName,
    DistressCue,
}

impl PhraseKind {
    pub const ALL: [PhraseKind; 13] = [
        PhraseKind::Backchannel,
        PhraseKind::Acknowledgement,
        PhraseKind::Empathy,
        PhraseKind::Paraphrase,
        PhraseKind::OpenQuestion,
        PhraseKind::ClosedQuestion,
        PhraseKind::SpelledSequence,
        PhraseKind::ReadBack,
        PhraseKind::NotReadBack,
        PhraseKind::Thanks,
        PhraseKind::NextSteps,
        PhraseKind::CustomerName,
        PhraseKind::DistressCue,
    ];

    /// The metric label (same as the serde name).
    pub fn label(self) -> &'static str {
        match self {
            PhraseKind::Backchannel => "backchannel",
            PhraseKind::Acknowledgement => "acknowledgement",
            PhraseKind::Empathy => "empathy",
            PhraseKind::Paraphrase => "paraphrase",
            PhraseKind::OpenQuestion => "open_question",
            PhraseKind::ClosedQuestion => "closed_question",
            PhraseKind::SpelledSequence => "spelled_sequence",
            PhraseKind::ReadBack => "read_back",
            PhraseKind::NotReadBack => "not_read_back",
            PhraseKind::Thanks => "thanks",
            PhraseKind::NextSteps => "next_steps",
            PhraseKind::CustomerName => "customer_name",
            PhraseKind::DistressCue => "distress_cue",
        }
    }
}

/// One phrase hit. `evidence` holds the matched words (normalised), the spelled string, or the
/// question: personal data, for call records only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhraseEvent {
    pub kind: PhraseKind,
    pub party: Party,
    /// Audio position (s) of the first matched word; for `NotReadBack`, the window's end.
    pub at: f64,
    pub evidence: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Closing {
    /// Start of the closing window (call end minus `closing_window_s`, not below 0).
    pub window_start: f64,
    pub thanks: bool,
    pub next_steps: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmpathyAfterDistress {
    pub distress_cues: usize,
    /// Distress cues followed by agent empathy within `empathy_window_s`.
    pub answered_cues: usize,
    /// Agent empathy phrases within `empathy_window_s` after some distress cue.
    pub empathy_phrases: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LongStories {
    /// Customer turns of at least `long_story_s`.
    pub count: usize,
    /// ... followed by an agent paraphrase before the customer's next turn.
    pub paraphrased: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhraseSummary {
    pub language: String,
    /// Events per kind label and party; every kind is present.
    pub counts: BTreeMap<String, PerParty<usize>>,
    /// Recognised words per party.
    pub words: PerParty<usize>,
    /// Words per minute of the party's own talk time; `None` without talk time.
    pub pace_wpm: PerParty<Option<f64>>,
    pub spelled: usize,
    pub read_back: usize,
    pub not_read_back: usize,
    pub closing: Closing,
    pub empathy_after_distress: EmpathyAfterDistress,
    pub long_stories: LongStories,
    pub customer_name_uses: usize,
    /// What the words say about the back-channels the timing found.
    pub backchannel_check: BackchannelCheck,
    /// All events in time order.
    pub events: Vec<PhraseEvent>,
}

/// What the transcript says about a back-channel found by timing (a short run of speech,
/// ≤ `backchannel_max_s`). The timing decides the count; this tells whether the words agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackchannelVerdict {
    /// Back-channel or acknowledgement words ("mm-hmm", "right", "okay").
    Confirmed,
    /// Other words: a short reply or a bid for the turn, not a listening signal.
    Content,
    /// No recognised words (ASR heard nothing it could name, or skipped the utterance).
    Unheard,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckedBackchannel {
    pub by: Party,
    pub at: f64,
    pub verdict: BackchannelVerdict,
    /// The normalised words heard in the back-channel (empty when unheard).
    pub words: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BackchannelCheck {
    pub confirmed: usize,
    pub content: usize,
    pub unheard: usize,
    pub events: Vec<CheckedBackchannel>,
}

impl PhraseSummary {
    pub fn count(&self, kind: PhraseKind, party: Party) -> usize {
        self.counts.get(kind.label()).map_or(0, |c| *c.get(party))
    }
}

// ---------------------------------------------------------------------------------------------
// Normalisation

/// ASR placeholders that are not words ("[unk]", "<unk>", "[noise]").
fn is_placeholder(w: &str) -> bool {
    (w.starts_with('[') && w.ends_with(']')) || (w.starts_with('<') && w.ends_with('>'))
}

/// One ASR word to zero or more normalised words: lowercase, typographic apostrophes made plain,
/// split at hyphens, underscores and whitespace, everything but letters, digits and inner
/// apostrophes dropped.
fn normalise_word(w: &str) -> Vec<String> {
    let w = w.trim();
    if is_placeholder(w) {
        return Vec::new();
    }
    w.to_lowercase()
        .split(|c: char| c == '-' || c == '_' || c == '\u{2010}' || c == '\u{2013}' || c.is_whitespace())
        .map(|part| {
            part.chars()
                .map(|c| if matches!(c, '\u{2019}' | '\u{2018}' | '`' | '\u{b4}') { '\'' } else { c })
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
                .trim_matches('\'')
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn normalise_text(s: &str) -> Vec<String> {
    s.split_whitespace().flat_map(normalise_word).collect()
}

/// Normalised words of a segment, each with the times of the ASR word it came from, and the
/// number of ASR words (for pace).
struct Tokens {
    words: Vec<String>,
    times: Vec<(f64, f64)>,
    asr_words: usize,
}

fn tokens(seg: &TranscriptSegment) -> Tokens {
    let mut t = Tokens { words: Vec::new(), times: Vec::new(), asr_words: 0 };
    if !seg.words.is_empty() {
        for w in &seg.words {
            let parts = normalise_word(&w.word);
            if !parts.is_empty() {
                t.asr_words += 1;
            }
            for p in parts {
                t.words.push(p);
                t.times.push((w.start, w.end));
            }
        }
        return t;
    }
    let raw: Vec<&str> = seg.text.split_whitespace().filter(|w| !normalise_word(w).is_empty()).collect();
    let step = if raw.is_empty() { 0.0 } else { (seg.end - seg.start) / raw.len() as f64 };
    for (i, w) in raw.iter().enumerate() {
        let (s, e) = (seg.start + step * i as f64, seg.start + step * (i + 1) as f64);
        t.asr_words += 1;
        for p in normalise_word(w) {
            t.words.push(p);
            t.times.push((s, e));
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Phrase sets

/// Phrases indexed by first word, longest first.
#[derive(Debug, Clone)]
struct PhraseSet<T> {
    by_first: HashMap<String, Vec<(Vec<String>, T)>>,
}

impl<T> Default for PhraseSet<T> {
    fn default() -> Self {
        PhraseSet { by_first: HashMap::new() }
    }
}

impl<T: Clone + PartialEq> PhraseSet<T> {
    fn insert(&mut self, phrase: Vec<String>, v: T) {
        let Some(first) = phrase.first().cloned() else { return };
        let list = self.by_first.entry(first).or_default();
        if !list.iter().any(|(p, x)| *p == phrase && *x == v) {
            list.push((phrase, v));
            list.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        }
    }

    /// The length of the longest phrase starting at `i` and every value stored for that length.
    fn longest_at(&self, words: &[String], i: usize) -> Option<(usize, Vec<&T>)> {
        let rest = words.get(i..)?;
        let list = self.by_first.get(rest.first()?)?;
        let len = list.iter().find(|(p, _)| rest.starts_with(p))?.0.len();
        Some((len, list.iter().filter(|(p, _)| p.len() == len && rest.starts_with(p)).map(|(_, v)| v).collect()))
    }

    fn len_at(&self, words: &[String], i: usize) -> Option<usize> {
        self.longest_at(words, i).map(|(l, _)| l)
    }

    /// Non-overlapping matches, scanning left to right, longest first: (start, len, values).
    fn scan(&self, words: &[String]) -> Vec<(usize, usize, Vec<&T>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < words.len() {
            match self.longest_at(words, i) {
                Some((len, vals)) => {
                    out.push((i, len, vals));
                    i += len;
                }
                None => i += 1,
            }
        }
        out
    }
}

fn phrase_list(key: &str, list: &[String]) -> Result<Vec<Vec<String>>, PhraseError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let t = normalise_text(s);
            if t.is_empty() {
                Err(key_err(format!("{key}[{i}]"), "is empty after normalisation"))
            } else {
                Ok(t)
            }
        })
        .collect()
}

fn phrase_set(key: &str, list: &[String]) -> Result<PhraseSet<()>, PhraseError> {
    let mut set = PhraseSet::default();
    for p in phrase_list(key, list)? {
        set.insert(p, ());
    }
    Ok(set)
}

fn word_set(key: &str, list: &[String]) -> Result<HashSet<String>, PhraseError> {
    let mut out = HashSet::new();
    for (i, p) in phrase_list(key, list)?.into_iter().enumerate() {
        match <[String; 1]>::try_from(p) {
            Ok([w]) => {
                out.insert(w);
            }
            Err(_) => return Err(key_err(format!("{key}[{i}]"), "must be a single word")),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Language pack

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    language: String,
    backchannel: Vec<String>,
    #[serde(default)]
    fillers: Vec<String>,
    acknowledgement: Vec<String>,
    empathy: Vec<String>,
    thanks: Vec<String>,
    next_steps: Vec<String>,
    distress: Vec<String>,
    paraphrase_cues: Vec<String>,
    stopwords: Vec<String>,
    #[serde(default)]
    stem_suffixes: Vec<String>,
    #[serde(default = "default_stem_min_chars")]
    stem_min_chars: usize,
    questions: QuestionsFile,
    spelling: SpellingFile,
    #[serde(default)]
    names: NamesFile,
}

fn default_stem_min_chars() -> usize {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionsFile {
    open: Vec<String>,
    #[serde(default)]
    closed: Vec<String>,
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    not_tags: Vec<String>,
    #[serde(default = "default_tag_min_words")]
    tag_min_words: usize,
    #[serde(default)]
    closed_suffixes: Vec<String>,
    #[serde(default)]
    statements: Vec<String>,
    #[serde(default)]
    lead_in: Vec<String>,
    #[serde(default = "default_min_words")]
    min_words: usize,
}

fn default_tag_min_words() -> usize {
    3
}
fn default_min_words() -> usize {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpellingFile {
    #[serde(default)]
    single_letters: bool,
    #[serde(default)]
    split_words: bool,
    words: BTreeMap<String, String>,
    #[serde(default)]
    repeat: BTreeMap<String, u32>,
    #[serde(default)]
    separators: Vec<String>,
    #[serde(default)]
    as_in: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamesFile {
    #[serde(default)]
    titles: Vec<String>,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    match_prefix: bool,
}

/// One spelled symbol; `alt` is the other reading of an ambiguous word ("oh": 0 or o).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sym {
    c: char,
    alt: Option<char>,
}

impl Sym {
    fn plain(c: char) -> Self {
        Sym { c, alt: None }
    }
    fn same(self, o: Sym) -> bool {
        self.c == o.c || self.alt == Some(o.c) || o.alt == Some(self.c) || (self.alt.is_some() && self.alt == o.alt)
    }
}

/// A language's phrase lists, compiled for matching. Load with [`PhrasePack::from_toml`].
#[derive(Debug, Clone)]
pub struct PhrasePack {
    language: String,
    backchannel: PhraseSet<()>,
    fillers: HashSet<String>,
    /// Acknowledgement, empathy, thanks, next steps: one set so the longest phrase wins
    /// ("i understand how frustrating" is empathy, not an acknowledgement).
    phrases: PhraseSet<PhraseKind>,
    distress: PhraseSet<()>,
    paraphrase_cues: PhraseSet<()>,
    stopwords: HashSet<String>,
    stem_suffixes: Vec<String>,
    stem_min_chars: usize,
    q_open: PhraseSet<()>,
    q_closed: PhraseSet<()>,
    q_subjects: HashSet<String>,
    q_tags: Vec<Vec<String>>,
    q_not_tags: Vec<Vec<String>>,
    q_tag_min_words: usize,
    q_closed_suffixes: Vec<String>,
    q_statements: PhraseSet<()>,
    q_lead_in: PhraseSet<()>,
    q_min_words: usize,
    spell_words: PhraseSet<Sym>,
    spell_single: HashMap<String, Sym>,
    single_letters: bool,
    split_words: bool,
    repeat: HashMap<String, u32>,
    separators: HashSet<String>,
    as_in: PhraseSet<()>,
    name_titles: HashSet<String>,
    name_ignore: HashSet<String>,
    name_prefix: bool,
}

impl PhrasePack {
    /// Parses and compiles a pack; errors name the key (`questions.open[3]`, `spelling.words.alpha`).
    pub fn from_toml(text: &str) -> Result<PhrasePack, PhraseError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| PhraseError::Syntax(e.to_string()))?;
        let file: PackFile = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            // A missing field is reported at its parent; name the field itself.
            let key = match msg.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
                Some(field) if path == "." => field.to_string(),
                Some(field) => format!("{path}.{field}"),
                None => path,
            };
            PhraseError::Key { key, msg }
        })?;
        Self::compile(file)
    }

    pub fn load(path: &Path) -> Result<PhrasePack, PhraseError> {
        let text = std::fs::read_to_string(path).map_err(|source| PhraseError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text)
    }

    /// The English pack shipped in `config/phrases/en.toml`.
    pub fn builtin_en() -> PhrasePack {
        Self::from_toml(include_str!("../../config/phrases/en.toml")).expect("config/phrases/en.toml is valid (unit-tested)")
    }

    /// The Korean pack shipped in `config/phrases/ko.toml`.
    pub fn builtin_ko() -> PhrasePack {
        Self::from_toml(include_str!("../../config/phrases/ko.toml")).expect("config/phrases/ko.toml is valid (unit-tested)")
    }

    pub fn language(&self) -> &str {
        &self.language
    }

    fn compile(f: PackFile) -> Result<PhrasePack, PhraseError> {
        if f.language.trim().is_empty() {
            return Err(key_err("language", "must not be empty"));
        }
        let mut phrases = PhraseSet::default();
        for (key, list, kind) in [
            ("acknowledgement", &f.acknowledgement, PhraseKind::Acknowledgement),
            ("empathy", &f.empathy, PhraseKind::Empathy),
            ("thanks", &f.thanks, PhraseKind::Thanks),
            ("next_steps", &f.next_steps, PhraseKind::NextSteps),
        ] {
            for p in phrase_list(key, list)? {
                phrases.insert(p, kind);
            }
        }
        let mut spell_words = PhraseSet::default();
        let mut spell_single = HashMap::new();
        for (word, value) in &f.spelling.words {
            let key = format!("spelling.words.{word}");
            let phrase = normalise_text(word);
            if phrase.is_empty() {
                return Err(key_err(key, "is empty after normalisation"));
            }
            let sym = parse_sym(value).ok_or_else(|| key_err(&key, "must be one symbol, or two as \"x|y\""))?;
            if let [w] = phrase.as_slice() {
                spell_single.insert(w.clone(), sym);
            }
            spell_words.insert(phrase, sym);
        }
        let mut repeat = HashMap::new();
        for (word, n) in &f.spelling.repeat {
            let key = format!("spelling.repeat.{word}");
            let w = match normalise_text(word).as_slice() {
                [w] => w.clone(),
                _ => return Err(key_err(key, "must be a single word")),
            };
            if !(2..=9).contains(n) {
                return Err(key_err(key, "must be between 2 and 9"));
            }
            repeat.insert(w, *n);
        }
        let q = &f.questions;
        let mut stem_suffixes: Vec<String> = f.stem_suffixes.iter().map(|s| s.to_lowercase()).filter(|s| !s.is_empty()).collect();
        stem_suffixes.sort_by_key(|s| std::cmp::Reverse(s.chars().count()));
        Ok(PhrasePack {
            language: f.language,
            backchannel: phrase_set("backchannel", &f.backchannel)?,
            fillers: word_set("fillers", &f.fillers)?,
            phrases,
            distress: phrase_set("distress", &f.distress)?,
            paraphrase_cues: phrase_set("paraphrase_cues", &f.paraphrase_cues)?,
            stopwords: word_set("stopwords", &f.stopwords)?,
            stem_suffixes,
            stem_min_chars: f.stem_min_chars.max(1),
            q_open: phrase_set("questions.open", &q.open)?,
            q_closed: phrase_set("questions.closed", &q.closed)?,
            q_subjects: word_set("questions.subjects", &q.subjects)?,
            q_tags: {
                let mut t = phrase_list("questions.tags", &q.tags)?;
                t.sort_by_key(|p| std::cmp::Reverse(p.len()));
                t
            },
            q_not_tags: phrase_list("questions.not_tags", &q.not_tags)?,
            q_tag_min_words: q.tag_min_words,
            q_closed_suffixes: q.closed_suffixes.iter().map(|s| s.to_lowercase()).filter(|s| !s.is_empty()).collect(),
            q_statements: phrase_set("questions.statements", &q.statements)?,
            q_lead_in: phrase_set("questions.lead_in", &q.lead_in)?,
            q_min_words: q.min_words.max(1),
            spell_words,
            spell_single,
            single_letters: f.spelling.single_letters,
            split_words: f.spelling.split_words,
            repeat,
            separators: word_set("spelling.separators", &f.spelling.separators)?,
            as_in: phrase_set("spelling.as_in", &f.spelling.as_in)?,
            name_titles: word_set("names.titles", &f.names.titles)?,
            name_ignore: word_set("names.ignore", &f.names.ignore)?,
            name_prefix: f.names.match_prefix,
        })
    }

    /// Content word for the paraphrase overlap: not a stopword, not a spelling token, stemmed.
    fn content_word(&self, w: &str) -> Option<String> {
        if self.stopwords.contains(w) || self.fillers.contains(w) || self.spell_one(std::slice::from_ref(&w.to_string()), 0).is_some() {
            return None;
        }
        let n = w.chars().count();
        for s in &self.stem_suffixes {
            if w.ends_with(s.as_str()) && n - s.chars().count() >= self.stem_min_chars {
                return Some(w[..w.len() - s.len()].to_string());
            }
        }
        Some(w.to_string())
    }

    fn content_words(&self, words: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for w in words {
            if let Some(c) = self.content_word(w) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// Symbols spelled by the token(s) at `i` without a repeater: (symbols, words consumed,
    /// consumed word is a bare single letter).
    fn spell_one(&self, words: &[String], i: usize) -> Option<(Vec<Sym>, usize, bool)> {
        if let Some((len, vals)) = self.spell_words.longest_at(words, i) {
            return Some((vec![*vals[0]], len, false));
        }
        let w = words.get(i)?;
        let mut chars = w.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            if self.single_letters && c.is_ascii_lowercase() {
                return Some((vec![Sym::plain(c)], 1, true));
            }
        }
        if w.chars().all(|c| c.is_ascii_digit()) {
            return Some((w.chars().map(Sym::plain).collect(), 1, false));
        }
        if self.split_words && w.chars().count() >= 2 {
            let mut syms = Vec::new();
            for c in w.chars() {
                let s = c.to_string();
                match self.spell_single.get(&s) {
                    Some(sym) => syms.push(*sym),
                    None if self.separators.contains(&s) => {}
                    None => return None,
                }
            }
            if !syms.is_empty() {
                return Some((syms, 1, false));
            }
        }
        None
    }

    /// [`Self::spell_one`] with an optional repeater ("double five").
    fn spell_at(&self, words: &[String], i: usize) -> Option<(Vec<Sym>, usize, bool)> {
        if let Some(one) = self.spell_one(words, i) {
            return Some(one);
        }
        let n = *self.repeat.get(words.get(i)?)?;
        let (syms, len, letter) = self.spell_one(words, i + 1)?;
        match syms.as_slice() {
            [s] => Some((vec![*s; n as usize], len + 1, letter)),
            _ => None,
        }
    }

    fn is_gap_word(&self, w: &str) -> bool {
        self.fillers.contains(w) || self.separators.contains(w)
    }

    /// Spelled runs in one utterance.
    fn spell_runs(&self, words: &[String], times: &[(f64, f64)]) -> Vec<RunPiece> {
        let mut out: Vec<RunPiece> = Vec::new();
        let mut cur: Option<RunPiece> = None;
        let mut i = 0;
        while i < words.len() {
            if let Some((syms, len, letter)) = self.spell_at(words, i) {
                let r = cur.get_or_insert_with(|| RunPiece {
                    run: Run { syms: Vec::new(), start: times[i].0, end: times[i].1 },
                    first: i,
                    last: i,
                });
                for s in syms {
                    if r.run.syms.len() < MAX_SPELLED {
                        r.run.syms.push(s);
                    }
                }
                i += len;
                r.run.end = times[i - 1].1;
                r.last = i;
                if letter {
                    // "s as in sierra": skip the phrase and the example word.
                    if let Some(alen) = self.as_in.len_at(words, i) {
                        let c = r.run.syms.last().map(|s| s.c);
                        if words.get(i + alen).is_some_and(|w| c.is_some_and(|c| w.starts_with(c))) {
                            i += alen + 1;
                            r.run.end = times[i - 1].1;
                            r.last = i;
                        }
                    }
                }
                continue;
            }
            if cur.is_some() && self.is_gap_word(&words[i]) && self.spell_at(words, i + 1).is_some() {
                i += 1;
                continue;
            }
            out.extend(cur.take());
            i += 1;
        }
        out.extend(cur);
        out
    }

    /// For each back-channel the timing found, the words the same party said during it (±
    /// [`BACKCHANNEL_SLACK_S`] for ASR word-time jitter): back-channel words or a short
    /// acknowledgement confirm it, other words make it content, no words leave it unheard.
    pub fn check_backchannels(&self, backchannels: &[BackchannelEvent], transcript: &[TranscriptSegment]) -> BackchannelCheck {
        let mut check = BackchannelCheck::default();
        for bc in backchannels {
            let (from, to) = (bc.at - BACKCHANNEL_SLACK_S, bc.at + bc.duration_s + BACKCHANNEL_SLACK_S);
            let mut words = Vec::new();
            for seg in transcript.iter().filter(|s| s.party == bc.by && s.end >= from && s.start <= to) {
                let t = tokens(seg);
                for (w, &(ws, we)) in t.words.into_iter().zip(&t.times) {
                    if we >= from && ws <= to {
                        words.push(w);
                    }
                }
            }
            let verdict = if words.is_empty() {
                BackchannelVerdict::Unheard
            } else if self.is_backchannel_words(&words) || self.is_short_acknowledgement(&words) {
                BackchannelVerdict::Confirmed
            } else {
                BackchannelVerdict::Content
            };
            match verdict {
                BackchannelVerdict::Confirmed => check.confirmed += 1,
                BackchannelVerdict::Content => check.content += 1,
                BackchannelVerdict::Unheard => check.unheard += 1,
            }
            check.events.push(CheckedBackchannel { by: bc.by, at: bc.at, verdict, words: words.join(" ") });
        }
        check
    }

    /// Every word is a filler or part of an acknowledgement phrase ("okay got it").
    fn is_short_acknowledgement(&self, words: &[String]) -> bool {
        let mut covered = vec![false; words.len()];
        for (i, w) in words.iter().enumerate() {
            covered[i] = self.fillers.contains(w);
        }
        let mut any = false;
        for (i, len, kinds) in self.phrases.scan(words) {
            if kinds.contains(&&PhraseKind::Acknowledgement) {
                any = true;
                covered[i..i + len].iter_mut().for_each(|c| *c = true);
            }
        }
        any && covered.iter().all(|&c| c)
    }

    fn is_backchannel_words(&self, words: &[String]) -> bool {
        if words.is_empty() {
            return false;
        }
        // reach[i] = words[..i] is covered: 0 no, 1 only by fillers, 2 with a back-channel phrase.
        let mut reach = vec![0u8; words.len() + 1];
        reach[0] = 1;
        for i in 0..words.len() {
            if reach[i] == 0 {
                continue;
            }
            if self.fillers.contains(&words[i]) {
                reach[i + 1] = reach[i + 1].max(reach[i]);
            }
            if let Some(list) = self.backchannel.by_first.get(&words[i]) {
                for (p, _) in list {
                    if words[i..].starts_with(p) {
                        reach[i + p.len()] = 2;
                    }
                }
            }
        }
        reach[words.len()] == 2
    }

    /// Open or closed question, judged by the first words (after lead-ins and fillers), an
    /// interrogative ending of the last word, or a tag at the end. Returns the kind and the index
    /// of the first word of the question.
    fn question(&self, words: &[String]) -> Option<(PhraseKind, usize)> {
        let mut i = 0;
        while i < words.len() {
            if self.fillers.contains(&words[i]) {
                i += 1;
            } else if let Some(l) = self.q_lead_in.len_at(words, i) {
                i += l;
            } else {
                break;
            }
        }
        let rest = words.get(i..).unwrap_or_default();
        if rest.len() < self.q_min_words {
            return None;
        }
        let statement = self.q_statements.len_at(words, i).is_some();
        if !statement && self.q_open.len_at(words, i).is_some() {
            return Some((PhraseKind::OpenQuestion, i));
        }
        if !statement {
            if let Some(l) = self.q_closed.len_at(words, i) {
                if self.q_subjects.is_empty() || words.get(i + l).is_some_and(|w| self.q_subjects.contains(w)) {
                    return Some((PhraseKind::ClosedQuestion, i));
                }
            }
        }
        let last = rest.last()?;
        if self.q_closed_suffixes.iter().any(|s| last.ends_with(s.as_str())) {
            return Some((PhraseKind::ClosedQuestion, i));
        }
        let tagged = self.q_tags.iter().any(|t| rest.ends_with(t) && rest.len() - t.len() >= self.q_tag_min_words);
        if tagged && !self.q_not_tags.iter().any(|t| rest.ends_with(t)) {
            return Some((PhraseKind::ClosedQuestion, i));
        }
        None
    }
}

fn parse_sym(v: &str) -> Option<Sym> {
    let v = v.to_lowercase();
    let mut parts = v.split('|');
    let one = |s: Option<&str>| -> Option<char> {
        let mut c = s?.chars();
        match (c.next(), c.next()) {
            (Some(x), None) if x.is_alphanumeric() => Some(x),
            _ => None,
        }
    };
    let c = one(parts.next())?;
    let alt = match parts.next() {
        None => None,
        s => Some(one(s)?),
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Sym { c, alt })
}

/// Whether a whole utterance is made only of back-channel words ("mm-hm", "yeah", "uh huh",
/// "okay"; fillers allowed, at least one back-channel phrase).
pub fn is_backchannel_word(pack: &PhrasePack, text: &str) -> bool {
    pack.is_backchannel_words(&normalise_text(text))
}

// ---------------------------------------------------------------------------------------------
// Spelled runs

#[derive(Debug, Clone, PartialEq)]
struct Run {
    syms: Vec<Sym>,
    start: f64,
    end: f64,
}

impl Run {
    /// The normalised string; ambiguous symbols take the kind (digit or letter) most of the
    /// others have.
    fn text(&self) -> String {
        let fixed = self.syms.iter().filter(|s| s.alt.is_none());
        let digits = fixed.clone().filter(|s| s.c.is_numeric()).count();
        let letters = fixed.filter(|s| !s.c.is_numeric()).count();
        self.syms
            .iter()
            .map(|s| match s.alt {
                Some(a) if (digits >= letters) == a.is_numeric() && (digits >= letters) != s.c.is_numeric() => a,
                _ => s.c,
            })
            .collect()
    }
}

struct RunPiece {
    run: Run,
    first: usize,
    last: usize,
}

/// Length of the longest common subsequence.
fn lcs(a: &[Sym], b: &[Sym]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x.same(*y) { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Detector

#[derive(Debug, Clone)]
struct CustomerSegment {
    start: f64,
    end: f64,
    content: Vec<String>,
}

/// The detector for one call. Feed final ASR results with [`PhraseDetector::handle_segment`] and
/// the audio position with [`PhraseDetector::handle_time`]; take events with
/// [`PhraseDetector::poll_event`].
#[derive(Debug, Clone)]
pub struct PhraseDetector {
    pack: PhrasePack,
    p: PhraseParams,
    /// Normalised first token of the customer's name.
    name: Option<String>,
    events: VecDeque<PhraseEvent>,
    log: Vec<PhraseEvent>,
    words: [usize; 2],
    /// A spelled run per party that ended its utterance and may continue in the next one.
    open_runs: [Option<Run>; 2],
    /// Customer sequences awaiting a read-back.
    pending: Vec<Run>,
    agent_runs: VecDeque<Run>,
    /// Customer utterances that are not back-channels, by start.
    customer: Vec<CustomerSegment>,
    /// Starts of agent utterances that are not back-channels; they end customer turns.
    agent_starts: Vec<f64>,
    /// Customer turns (by the start of their first utterance) already paraphrased by overlap.
    paraphrased: HashSet<u64>,
}

impl PhraseDetector {
    pub fn new(pack: PhrasePack, params: PhraseParams) -> Self {
        PhraseDetector {
            pack,
            p: params,
            name: None,
            events: VecDeque::new(),
            log: Vec::new(),
            words: [0; 2],
            open_runs: [None, None],
            pending: Vec::new(),
            agent_runs: VecDeque::new(),
            customer: Vec::new(),
            agent_starts: Vec::new(),
            paraphrased: HashSet::new(),
        }
    }

    pub fn params(&self) -> &PhraseParams {
        &self.p
    }

    pub fn pack(&self) -> &PhrasePack {
        &self.pack
    }

    /// The customer's name (from the SIP display name). Only its first usable word is matched:
    /// titles, ignored placeholders ("anonymous"), words with digits, one-letter words and
    /// stopwords ("will", "may") are skipped, since they would match ordinary speech.
    pub fn set_customer_name(&mut self, name: Option<String>) {
        self.name = name.and_then(|n| {
            normalise_text(&n.replace([',', '.', '"'], " "))
                .into_iter()
                .find(|w| !self.pack.name_titles.contains(w) && !w.chars().any(|c| c.is_numeric()) && w.chars().count() >= 2)
        });
        if self.name.as_ref().is_some_and(|w| self.pack.name_ignore.contains(w) || self.pack.stopwords.contains(w)) {
            self.name = None;
        }
    }

    fn emit(&mut self, kind: PhraseKind, party: Party, at: f64, evidence: String) {
        let e = PhraseEvent { kind, party, at, evidence };
        self.log.push(e.clone());
        self.events.push_back(e);
    }

    pub fn poll_event(&mut self) -> Option<PhraseEvent> {
        self.events.pop_front()
    }

    pub fn handle_segment(&mut self, seg: &TranscriptSegment) {
        let t = tokens(seg);
        if t.words.is_empty() {
            return;
        }
        let party = seg.party;
        self.words[party.idx()] += t.asr_words;
        let words = &t.words;
        let at = |i: usize| t.times[i].0;
        let text = |a: usize, b: usize| words[a..b].join(" ");

        if self.pack.is_backchannel_words(words) {
            self.emit(PhraseKind::Backchannel, party, at(0), text(0, words.len()));
            return;
        }

        if party == Party::Agent {
            self.paraphrase(seg, &t);
            self.agent_starts.push(seg.start);
        } else {
            let content = self.pack.content_words(words);
            let pos = self.customer.partition_point(|c| c.start <= seg.start);
            self.customer.insert(pos, CustomerSegment { start: seg.start, end: seg.end, content });
        }

        let mut hits = Vec::new();
        for (i, len, kinds) in self.pack.phrases.scan(words) {
            for k in kinds {
                hits.push((*k, i, len));
            }
        }
        if party == Party::Customer {
            for (i, len, _) in self.pack.distress.scan(words) {
                hits.push((PhraseKind::DistressCue, i, len));
            }
        }
        for (kind, i, len) in hits {
            self.emit(kind, party, at(i), text(i, i + len));
        }

        if party == Party::Agent {
            if let Some(name) = self.name.clone() {
                let poss = format!("{name}'s");
                for (i, w) in words.iter().enumerate() {
                    if *w == name || *w == poss || (self.pack.name_prefix && w.starts_with(name.as_str())) {
                        self.emit(PhraseKind::CustomerName, party, at(i), w.clone());
                    }
                }
            }
        }

        if let Some((kind, i)) = self.pack.question(words) {
            self.emit(kind, party, at(i), text(i, words.len()));
        }

        let pieces = self.pack.spell_runs(words, &t.times);
        self.handle_runs(party, words, pieces);
    }

    /// Agent paraphrase: a cue phrase, or enough content words of the customer's previous turn.
    fn paraphrase(&mut self, seg: &TranscriptSegment, t: &Tokens) {
        let turn = self.turn_before(seg.start);
        if let Some((i, len, _)) = self.pack.paraphrase_cues.scan(&t.words).into_iter().next() {
            self.emit(PhraseKind::Paraphrase, Party::Agent, t.times[i].0, t.words[i..i + len].join(" "));
            if let Some((id, _)) = turn {
                self.paraphrased.insert(id);
            }
            return;
        }
        let Some((id, content)) = turn else { return };
        if self.paraphrased.contains(&id) || content.is_empty() {
            return;
        }
        let agent = self.pack.content_words(&t.words);
        let shared: Vec<&String> = content.iter().filter(|w| agent.contains(w)).collect();
        if shared.len() >= self.p.paraphrase_min_shared && shared.len() as f64 >= self.p.paraphrase_overlap * content.len() as f64 {
            let evidence = shared.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
            self.paraphrased.insert(id);
            self.emit(PhraseKind::Paraphrase, Party::Agent, t.times[0].0, evidence);
        }
    }

    /// The customer turn before an agent utterance starting at `t`: the customer's utterances
    /// back from the last one started before `t`, up to an agent utterance started in between.
    /// Returns the turn's id and content words.
    fn turn_before(&self, t: f64) -> Option<(u64, Vec<String>)> {
        let last = self.customer.partition_point(|c| c.start < t).checked_sub(1)?;
        let mut first = last;
        while first > 0 {
            let (a, b) = (self.customer[first - 1].start, self.customer[first].start);
            if self.agent_starts.iter().any(|&s| s > a && s < b) {
                break;
            }
            first -= 1;
        }
        let mut content: Vec<String> = Vec::new();
        for c in &self.customer[first..=last] {
            for w in &c.content {
                if !content.contains(w) {
                    content.push(w.clone());
                }
            }
        }
        Some((self.customer[first].start.to_bits(), content))
    }

    fn handle_runs(&mut self, party: Party, words: &[String], pieces: Vec<RunPiece>) {
        let gap = |w: &[String]| w.iter().all(|w| self.pack.is_gap_word(w));
        // (run, nothing but gap words before it, nothing but gap words after it)
        let mut runs: Vec<(Run, bool, bool)> = pieces.into_iter().map(|p| (p.run, gap(&words[..p.first]), gap(&words[p.last..]))).collect();
        if let Some(open) = self.open_runs[party.idx()].take() {
            match runs.first_mut() {
                Some((r, true, _)) if r.start - open.end <= self.p.spell_join_gap_s && r.start >= open.start => {
                    let mut syms = open.syms;
                    syms.extend(r.syms.iter().copied());
                    syms.truncate(MAX_SPELLED);
                    *r = Run { syms, start: open.start, end: r.end };
                }
                _ => self.close_run(party, open),
            }
        }
        if party == Party::Agent {
            if let Some((first, _, _)) = runs.first() {
                // The agent spelling after the customer's run ends it: that is the read-back.
                if let Some(c) = self.open_runs[Party::Customer.idx()].take_if(|c| c.end < first.start) {
                    self.close_run(Party::Customer, c);
                }
            }
        }
        let n = runs.len();
        for (k, (run, _, at_tail)) in runs.into_iter().enumerate() {
            if k + 1 == n && at_tail {
                if party == Party::Agent {
                    self.check_readback(&run);
                }
                self.open_runs[party.idx()] = Some(run);
            } else {
                self.close_run(party, run);
            }
        }
    }

    fn close_run(&mut self, party: Party, run: Run) {
        match party {
            Party::Agent => {
                self.check_readback(&run);
                self.agent_runs.push_back(run);
                if self.agent_runs.len() > MAX_AGENT_RUNS {
                    self.agent_runs.pop_front();
                }
            }
            Party::Customer => {
                if run.syms.len() < self.p.min_spelled_tokens {
                    return;
                }
                self.emit(PhraseKind::SpelledSequence, Party::Customer, run.start, run.text());
                let agent = self.agent_runs.iter().chain(self.open_runs[Party::Agent.idx()].as_ref()).find(|a| self.reads_back(&run, a));
                match agent.cloned() {
                    Some(a) => self.emit(PhraseKind::ReadBack, Party::Agent, a.start, a.text()),
                    None => self.pending.push(run),
                }
            }
        }
    }

    fn reads_back(&self, cust: &Run, agent: &Run) -> bool {
        let longer = cust.syms.len().max(agent.syms.len());
        agent.start > cust.start
            && agent.start <= cust.end + self.p.readback_window_s
            && lcs(&cust.syms, &agent.syms) as f64 >= self.p.readback_match * longer as f64
    }

    /// An agent run (open or closed) against the customer sequences awaiting a read-back.
    fn check_readback(&mut self, agent: &Run) {
        let (hit, rest): (Vec<Run>, Vec<Run>) = std::mem::take(&mut self.pending).into_iter().partition(|c| self.reads_back(c, agent));
        self.pending = rest;
        if !hit.is_empty() {
            self.emit(PhraseKind::ReadBack, Party::Agent, agent.start, agent.text());
        }
    }

    /// Audio position reached (s): closes spelled runs that can no longer continue and expires
    /// read-back windows, each `asr_lag_s` late so results still in the recognizer count.
    pub fn handle_time(&mut self, now: f64) {
        for party in Party::ALL {
            let join_until = self.p.spell_join_gap_s + self.p.asr_lag_s;
            if let Some(run) = self.open_runs[party.idx()].take_if(|r| now > r.end + join_until) {
                self.close_run(party, run);
            }
        }
        let window = self.p.readback_window_s;
        let lag = self.p.asr_lag_s;
        let (expired, rest): (Vec<Run>, Vec<Run>) = std::mem::take(&mut self.pending).into_iter().partition(|c| now > c.end + window + lag);
        self.pending = rest;
        for c in expired {
            self.emit(PhraseKind::NotReadBack, Party::Customer, c.end + window, c.text());
        }
    }

    /// Checks the timing's back-channels against the words recognised in them; see
    /// [`PhrasePack::check_backchannels`].
    pub fn check_backchannels(&self, backchannels: &[BackchannelEvent], transcript: &[TranscriptSegment]) -> BackchannelCheck {
        self.pack.check_backchannels(backchannels, transcript)
    }

    /// Ends the call: closes open runs, expires every remaining read-back window, and summarises.
    /// `talk_time_s` is [customer, agent] from the turn analyzer.
    pub fn finish(&mut self, call_end: f64, talk_time_s: [f64; 2]) -> PhraseSummary {
        if let Some(run) = self.open_runs[Party::Agent.idx()].take() {
            self.close_run(Party::Agent, run);
        }
        if let Some(run) = self.open_runs[Party::Customer.idx()].take() {
            self.close_run(Party::Customer, run);
        }
        for c in std::mem::take(&mut self.pending) {
            self.emit(PhraseKind::NotReadBack, Party::Customer, (c.end + self.p.readback_window_s).min(call_end), c.text());
        }
        self.summary(call_end, talk_time_s)
    }

    fn summary(&self, call_end: f64, talk: [f64; 2]) -> PhraseSummary {
        let mut events = self.log.clone();
        events.sort_by(|a, b| a.at.total_cmp(&b.at));
        let mut counts: BTreeMap<String, PerParty<usize>> =
            PhraseKind::ALL.iter().map(|k| (k.label().to_string(), PerParty::default())).collect();
        for e in &events {
            if let Some(c) = counts.get_mut(e.kind.label()) {
                match e.party {
                    Party::Customer => c.customer += 1,
                    Party::Agent => c.agent += 1,
                }
            }
        }
        let times = |kind: PhraseKind, party: Party| -> Vec<f64> {
            events.iter().filter(|e| e.kind == kind && e.party == party).map(|e| e.at).collect()
        };
        let total = |kind: PhraseKind| events.iter().filter(|e| e.kind == kind).count();

        let window_start = (call_end - self.p.closing_window_s).max(0.0);
        let in_closing = |kind| times(kind, Party::Agent).iter().any(|&t| t >= window_start);
        let closing = Closing { window_start, thanks: in_closing(PhraseKind::Thanks), next_steps: in_closing(PhraseKind::NextSteps) };

        let distress = times(PhraseKind::DistressCue, Party::Customer);
        let empathy = times(PhraseKind::Empathy, Party::Agent);
        let w = self.p.empathy_window_s;
        let answers = |d: f64, e: f64| e >= d && e - d <= w;
        let empathy_after_distress = EmpathyAfterDistress {
            distress_cues: distress.len(),
            answered_cues: distress.iter().filter(|&&d| empathy.iter().any(|&e| answers(d, e))).count(),
            empathy_phrases: empathy.iter().filter(|&&e| distress.iter().any(|&d| answers(d, e))).count(),
        };

        let paraphrases = times(PhraseKind::Paraphrase, Party::Agent);
        let turns = self.customer_turns();
        let mut long_stories = LongStories::default();
        for (k, &(s, e)) in turns.iter().enumerate() {
            if e - s < self.p.long_story_s {
                continue;
            }
            long_stories.count += 1;
            let next = turns.get(k + 1).map_or(f64::INFINITY, |t| t.0);
            if paraphrases.iter().any(|&t| t > s && t < next) {
                long_stories.paraphrased += 1;
            }
        }

        let pace = |p: Party| {
            let t = talk[p.idx()];
            (t.is_finite() && t > 0.0).then(|| self.words[p.idx()] as f64 * 60.0 / t)
        };
        PhraseSummary {
            language: self.pack.language.clone(),
            counts,
            words: PerParty { customer: self.words[0], agent: self.words[1] },
            pace_wpm: PerParty { customer: pace(Party::Customer), agent: pace(Party::Agent) },
            spelled: total(PhraseKind::SpelledSequence),
            read_back: total(PhraseKind::ReadBack),
            not_read_back: total(PhraseKind::NotReadBack),
            closing,
            empathy_after_distress,
            long_stories,
            customer_name_uses: total(PhraseKind::CustomerName),
            backchannel_check: BackchannelCheck::default(),
            events,
        }
    }

    /// Customer turns as (start, end): runs of customer utterances with no agent utterance
    /// (other than a back-channel) starting in between.
    fn customer_turns(&self) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = Vec::new();
        let mut prev_start = f64::NEG_INFINITY;
        for c in &self.customer {
            let split = self.agent_starts.iter().any(|&s| s > prev_start && s < c.start);
            match out.last_mut() {
                Some(t) if !split => t.1 = t.1.max(c.end),
                _ => out.push((c.start, c.end)),
            }
            prev_start = c.start;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        normalise_text(s)
    }

    fn spelled(pack: &PhrasePack, s: &str) -> Vec<String> {
        let words = w(s);
        let times: Vec<(f64, f64)> = (0..words.len()).map(|i| (i as f64, i as f64 + 0.5)).collect();
        pack.spell_runs(&words, &times).into_iter().map(|p| p.run.text()).collect()
    }

    #[test]
    fn builtin_packs_compile() {
        assert_eq!(PhrasePack::builtin_en().language(), "en");
        assert_eq!(PhrasePack::builtin_ko().language(), "ko");
    }

    #[test]
    fn normalisation() {
        assert_eq!(w("Mm-hm, I’m SURE!"), ["mm", "hm", "i'm", "sure"]);
        assert_eq!(w("[unk] okay <unk> 'quoted'"), ["okay", "quoted"]);
        assert_eq!(w("x-ray"), ["x", "ray"]);
        assert!(w("?! -- ...").is_empty());
    }

    #[test]
    fn spelled_runs() {
        let en = PhrasePack::builtin_en();
        assert_eq!(spelled(&en, "it's b as in bravo seven seven four double two nine"), ["b774229"]);
        assert_eq!(spelled(&en, "my code is alpha x-ray five oh"), ["ax5o"]);
        assert_eq!(spelled(&en, "alpha x-ray five oh five"), ["ax505"]);
        assert_eq!(spelled(&en, "j o n e s"), ["jones"]);
        assert_eq!(spelled(&en, "five oh two one dash one two"), ["502112"]);
        assert_eq!(spelled(&en, "four five um six then seven"), ["456", "7"]);
        assert_eq!(spelled(&en, "double u double u"), ["ww"]);
        assert!(spelled(&en, "i need it for tomorrow").iter().all(|r| r.len() == 1));
        let ko = PhrasePack::builtin_ko();
        assert_eq!(spelled(&ko, "공일공 일이삼사 오육칠팔"), ["01012345678"]);
        assert_eq!(spelled(&ko, "공일공에 일 이 삼 사"), ["0101234"]);
    }

    #[test]
    fn lcs_treats_oh_as_zero_or_o() {
        let en = PhrasePack::builtin_en();
        let run = |s: &str| {
            let words = w(s);
            let times = vec![(0.0, 0.1); words.len()];
            en.spell_runs(&words, &times).remove(0).run.syms
        };
        assert_eq!(lcs(&run("five oh two one"), &run("five zero two one")), 4);
        assert_eq!(lcs(&run("j o h n"), &run("j oh h n")), 4);
        assert_eq!(lcs(&run("one two three four"), &run("one three four five")), 3);
    }

    #[test]
    fn questions() {
        let en = PhrasePack::builtin_en();
        let q = |s: &str| en.question(&w(s)).map(|(k, _)| k);
        use PhraseKind::{ClosedQuestion as C, OpenQuestion as O};
        assert_eq!(q("what happened when you called"), Some(O));
        assert_eq!(q("okay so how can i help you today"), Some(O));
        assert_eq!(q("could you describe the noise"), Some(O));
        assert_eq!(q("walk me through what you did"), Some(O));
        assert_eq!(q("did you receive the email"), Some(C));
        assert_eq!(q("um is it the card ending in four two"), Some(C));
        assert_eq!(q("and the delivery was on the third right"), Some(C));
        assert_eq!(q("the address is correct"), None);
        assert_eq!(q("yes that's right"), None);
        assert_eq!(q("have a great day"), None);
        assert_eq!(q("can't believe this happened again"), None);
        assert_eq!(q("what i'll do is send you a label"), None);
        assert_eq!(q("what"), None);
        let ko = PhrasePack::builtin_ko();
        let kq = |s: &str| ko.question(&w(s)).map(|(k, _)| k);
        assert_eq!(kq("네 어떻게 도와드릴까요"), Some(O));
        assert_eq!(kq("혹시 주문번호 있으세요"), Some(C));
        assert_eq!(kq("배송지 변경 가능한가요"), Some(C));
        assert_eq!(kq("주문 취소하고 싶어요"), None);
    }

    #[test]
    fn backchannels() {
        let en = PhrasePack::builtin_en();
        for s in ["mm-hm", "Yeah.", "uh huh", "okay", "oh okay yeah", "um right", "I see"] {
            assert!(is_backchannel_word(&en, s), "{s}");
        }
        for s in ["", "um", "yeah i think so", "okay so the order", "no"] {
            assert!(!is_backchannel_word(&en, s), "{s}");
        }
    }

    #[test]
    fn content_words_and_stems() {
        let en = PhrasePack::builtin_en();
        assert_eq!(en.content_words(&w("i was charged twice for the charges")), ["charg", "twic"]);
        let ko = PhrasePack::builtin_ko();
        assert_eq!(ko.content_words(&w("주문이 주문을 배송지에서")), ["주문", "배송지"]);
    }

    #[test]
    fn pack_errors_name_the_key() {
        let en = include_str!("../../config/phrases/en.toml");
        let key = |text: &str| match PhrasePack::from_toml(text) {
            Err(PhraseError::Key { key, .. }) => key,
            other => panic!("expected a key error, got {other:?}"),
        };
        assert_eq!(key(&en.replace("language = \"en\"", "language = \"en\"\nlanguag = \"x\"")), "languag");
        assert_eq!(key(&en.replace("empathy = [", "empathy_ = [")), "empathy_");
        assert_eq!(key(&en.replace("thanks = [", "thanks = 3\nthanks_old = [")), "thanks");
        assert_eq!(key(&en.replace("[questions]\n", "[questions]\nopne = []\n")), "questions.opne");
        assert_eq!(key(&en.replace("alpha = \"a\"", "alpha = \"ab\"")), "spelling.words.alpha");
        assert_eq!(key(&en.replace("double = 2", "double = 1")), "spelling.repeat.double");
        assert_eq!(key(&en.replace("fillers = [\"um\"", "fillers = [\"um hm\"")), "fillers[0]");
        assert_eq!(key(&en.replace("\"thank you\", \"thanks\",", "\"!!\", \"thanks\",")), "thanks[0]");
        assert!(matches!(PhrasePack::from_toml("language = "), Err(PhraseError::Syntax(_))));
        let no_questions = en.split("[questions]").next().unwrap_or_default().to_string();
        assert_eq!(key(&no_questions), "questions");
    }

    #[test]
    fn params_validate_and_parse() {
        assert!(PhraseParams::default().validate().is_ok());
        let p: PhraseParams = toml::from_str("readback_window_s = 45.0").unwrap();
        assert_eq!((p.readback_window_s, p.closing_window_s), (45.0, 60.0));
        assert!(toml::from_str::<PhraseParams>("readback_window = 45.0").is_err());
        let bad = PhraseParams { paraphrase_overlap: 1.5, ..Default::default() };
        assert!(matches!(bad.validate(), Err(PhraseError::Key { key, .. }) if key == "paraphrase_overlap"));
    }

    #[test]
    fn text_without_words_is_spread_over_the_segment() {
        let seg = TranscriptSegment { party: Party::Agent, start: 10.0, end: 12.0, text: "thank you [unk] sarah".into(), words: vec![] };
        let t = tokens(&seg);
        assert_eq!(t.words, ["thank", "you", "sarah"]);
        assert_eq!(t.asr_words, 3);
        assert!((t.times[2].0 - (10.0 + 4.0 / 3.0)).abs() < 1e-9);
    }

    #[test]
    fn nonsense_input_does_not_panic() {
        let mut d = PhraseDetector::new(PhrasePack::builtin_en(), PhraseParams::default());
        d.set_customer_name(Some("+15551234567".into()));
        for (s, e, text) in
            [(f64::NAN, f64::NAN, "one two three four five"), (5.0, 1.0, "double"), (1.0, 2.0, "double double"), (0.0, 0.0, "---")]
        {
            for party in Party::ALL {
                d.handle_segment(&TranscriptSegment { party, start: s, end: e, text: text.into(), words: vec![] });
            }
        }
        d.handle_time(f64::NAN);
        d.handle_time(1e9);
        let s = d.finish(f64::NAN, [f64::NAN, -1.0]);
        assert_eq!(s.pace_wpm, PerParty { customer: None, agent: None });
    }
}
