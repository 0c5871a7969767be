//! Phrase signals on transcript fixtures: hand-written English calls under
//! `tests/fixtures/transcripts/` (Vosk-style word lists with times, both parties) fed as a live
//! driver would (each final result at its end time, after advancing the audio position), plus
//! synthetic segments for windows, tolerances, the Korean pack and pack errors.

use hearken::analysis::phrases::{
    is_backchannel_word, PhraseDetector, PhraseError, PhraseEvent, PhraseKind, PhrasePack, PhraseParams, PhraseSummary, TranscriptSegment,
    Word,
};
use hearken::analysis::turns::Party::{self, Agent, Customer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    #[allow(dead_code)]
    description: String,
    language: String,
    customer_name: Option<String>,
    call_end: f64,
    talk_time_s: [f64; 2],
    segments: Vec<TranscriptSegment>,
}

struct Run {
    summary: PhraseSummary,
    /// Events polled before `finish`.
    live: Vec<PhraseEvent>,
    fixture: Fixture,
}

fn load(name: &str) -> Fixture {
    let path = format!("{}/tests/fixtures/transcripts/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn run_fixture(name: &str) -> Run {
    let fixture = load(name);
    assert_eq!(fixture.language, "en");
    let mut d = PhraseDetector::new(PhrasePack::builtin_en(), PhraseParams::default());
    d.set_customer_name(fixture.customer_name.clone());
    let mut segs = fixture.segments.clone();
    segs.sort_by(|a, b| a.end.total_cmp(&b.end));
    let mut live = Vec::new();
    for s in &segs {
        d.handle_time(s.end);
        d.handle_segment(s);
        live.extend(std::iter::from_fn(|| d.poll_event()));
    }
    d.handle_time(fixture.call_end);
    live.extend(std::iter::from_fn(|| d.poll_event()));
    let summary = d.finish(fixture.call_end, fixture.talk_time_s);
    Run { summary, live, fixture }
}

fn of(events: &[PhraseEvent], kind: PhraseKind) -> Vec<&PhraseEvent> {
    events.iter().filter(|e| e.kind == kind).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// A segment with evenly timed words (0.4 s per word).
fn seg(party: Party, start: f64, text: &str) -> TranscriptSegment {
    let words: Vec<Word> = text
        .split_whitespace()
        .enumerate()
        .map(|(i, w)| Word { word: w.to_string(), start: start + 0.4 * i as f64, end: start + 0.4 * i as f64 + 0.35, conf: 1.0 })
        .collect();
    let end = words.last().map_or(start, |w| w.end);
    TranscriptSegment { party, start, end, text: text.to_string(), words }
}

fn detector() -> PhraseDetector {
    PhraseDetector::new(PhrasePack::builtin_en(), PhraseParams::default())
}

fn drain(d: &mut PhraseDetector) -> Vec<PhraseEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

// ---------------------------------------------------------------------------------------------
// Fixtures

#[test]
fn order_number_spelled_in_chunks_is_read_back() {
    let r = run_fixture("order_readback.json");
    let s = &r.summary;
    assert_eq!((s.spelled, s.read_back, s.not_read_back), (1, 1, 0));
    let spelled = of(&s.events, PhraseKind::SpelledSequence);
    assert_eq!(spelled[0].evidence, "b774229", "'b as in bravo seven seven four' + 'double two nine'");
    assert_eq!((spelled[0].party, spelled[0].at), (Customer, 15.54));
    let rb = of(&r.live, PhraseKind::ReadBack);
    assert_eq!(rb.len(), 1, "the read-back is reported live, not only at finish");
    assert_eq!((rb[0].party, rb[0].at, rb[0].evidence.as_str()), (Agent, 22.66, "b774229"));

    // "sarah" at 10.5 and in the closing; evidence is the word as spoken.
    assert_eq!(s.customer_name_uses, 2);
    let names: Vec<(f64, &str)> = of(&s.events, PhraseKind::CustomerName).iter().map(|e| (e.at, e.evidence.as_str())).collect();
    assert_eq!(names, [(11.86, "sarah"), (112.75, "sarah")]);

    assert!(s.closing.thanks && s.closing.next_steps);
    assert_eq!(s.closing.window_start, 62.0);
    assert_eq!(s.count(PhraseKind::NextSteps, Agent), 3, "i've created / you will receive / business days");
    assert_eq!((s.count(PhraseKind::Thanks, Agent), s.count(PhraseKind::Thanks, Customer)), (3, 1));
    assert_eq!(s.count(PhraseKind::Empathy, Agent), 1);
    assert_eq!(s.count(PhraseKind::Backchannel, Customer), 1, "mm-hm");
    // how can i help / could you give me, is that correct, is there anything else
    assert_eq!((s.count(PhraseKind::OpenQuestion, Agent), s.count(PhraseKind::ClosedQuestion, Agent)), (1, 3));
    assert_eq!((s.count(PhraseKind::OpenQuestion, Customer), s.count(PhraseKind::ClosedQuestion, Customer)), (0, 0));
    assert_eq!(s.empathy_after_distress.distress_cues, 0);
}

#[test]
fn spelled_email_not_read_back_expires_after_the_window() {
    let r = run_fixture("email_no_readback.json");
    let s = &r.summary;
    assert_eq!((s.spelled, s.read_back, s.not_read_back), (1, 0, 1));
    assert_eq!(of(&s.events, PhraseKind::SpelledSequence)[0].evidence, "dokafor", "o is a letter among letters");
    // Reported by handle_time once the position passed end (12.34) + 30 s window + 2 s ASR lag.
    let nrb = of(&r.live, PhraseKind::NotReadBack);
    assert_eq!(nrb.len(), 1);
    assert!(close(nrb[0].at, 42.34), "{}", nrb[0].at);
    assert_eq!((nrb[0].party, nrb[0].evidence.as_str()), (Customer, "dokafor"));

    assert!(!s.closing.thanks && !s.closing.next_steps);
    let e = &s.empathy_after_distress;
    assert_eq!((e.distress_cues, e.answered_cues, e.empathy_phrases), (2, 0, 0), "third time, frustrated; no empathy");
    let cues: Vec<&str> = of(&s.events, PhraseKind::DistressCue).iter().map(|e| e.evidence.as_str()).collect();
    assert_eq!(cues, ["third time", "frustrated"]);
    // "Mr. David Okafor": the title is skipped, "david" is never said.
    assert_eq!(s.customer_name_uses, 0);
    assert_eq!(s.count(PhraseKind::Backchannel, Agent), 1, "okay got it");
    // what's your email / when did the problem start; did you try
    assert_eq!((s.count(PhraseKind::OpenQuestion, Agent), s.count(PhraseKind::ClosedQuestion, Agent)), (2, 1));
    assert_eq!(s.count(PhraseKind::Paraphrase, Agent), 0);
}

#[test]
fn billing_call_paraphrases_empathy_and_questions() {
    let r = run_fixture("billing_paraphrase.json");
    let s = &r.summary;
    let para = of(&s.events, PhraseKind::Paraphrase);
    assert_eq!(para.len(), 2);
    assert_eq!((para[0].at, para[0].evidence.as_str()), (33.0, "so what you're saying"), "by cue");
    // By overlap: 7 of the 9 content words of "yes eighty pounds both times and my bank says both
    // payments cleared from my account" (stems; "two" is a spelling token, not content).
    assert_eq!((para[1].at, para[1].evidence.as_str()), (55.5, "eighty pound both bank payment clear account"));

    let e = &s.empathy_after_distress;
    assert_eq!((e.distress_cues, e.answered_cues, e.empathy_phrases), (1, 1, 2), "upset; i'm so sorry + that must be really");
    assert_eq!((s.long_stories.count, s.long_stories.paraphrased), (1, 1), "the 22 s opening story was paraphrased");

    assert_eq!((s.count(PhraseKind::OpenQuestion, Agent), s.count(PhraseKind::ClosedQuestion, Agent)), (2, 2));
    assert_eq!((s.count(PhraseKind::OpenQuestion, Customer), s.count(PhraseKind::ClosedQuestion, Customer)), (1, 0));
    let open: Vec<&str> = of(&s.events, PhraseKind::OpenQuestion).iter().map(|e| e.evidence.as_str()).collect();
    assert_eq!(open, ["what can i help you with", "can you tell me the date of the second payment", "how long will the refund take"]);

    assert!(s.closing.thanks && s.closing.next_steps);
    assert_eq!(s.count(PhraseKind::NextSteps, Agent), 4);
    assert_eq!((s.count(PhraseKind::Backchannel, Agent), s.count(PhraseKind::Backchannel, Customer)), (1, 1));
    assert_eq!(s.customer_name_uses, 0);
}

#[test]
fn pace_is_words_per_minute_of_own_talk_time() {
    let r = run_fixture("order_readback.json");
    let s = &r.summary;
    assert_eq!(r.fixture.talk_time_s, [9.6, 24.93]);
    assert_eq!((s.words.customer, s.words.agent), (34, 87));
    assert!(close(s.pace_wpm.customer.unwrap(), 34.0 * 60.0 / 9.6));
    assert!(close(s.pace_wpm.agent.unwrap(), 87.0 * 60.0 / 24.93));

    // Text without word times; ASR placeholders are not words; no talk time gives no pace.
    let mut d = detector();
    d.handle_segment(&TranscriptSegment {
        party: Customer,
        start: 0.0,
        end: 4.0,
        text: "one two three [unk] four five".into(),
        words: vec![],
    });
    d.handle_segment(&TranscriptSegment { party: Customer, start: 5.0, end: 8.0, text: "six seven eight nine ten".into(), words: vec![] });
    let s = d.finish(10.0, [4.0, 0.0]);
    assert_eq!(s.words.customer, 10);
    assert_eq!(s.pace_wpm.customer, Some(150.0));
    assert_eq!(s.pace_wpm.agent, None);
}

#[test]
fn events_serialise_in_snake_case_and_round_trip() {
    let r = run_fixture("billing_paraphrase.json");
    let json = serde_json::to_value(&r.summary).unwrap();
    assert_eq!(json["counts"]["open_question"]["agent"], 2);
    assert_eq!(json["closing"]["next_steps"], true);
    let back: Vec<PhraseEvent> = serde_json::from_value(json["events"].clone()).unwrap();
    assert_eq!(back, r.summary.events);
    for k in PhraseKind::ALL {
        assert_eq!(serde_json::to_value(k).unwrap(), k.label());
        assert!(r.summary.counts.contains_key(k.label()));
    }
    let mut sorted = r.summary.events.clone();
    sorted.sort_by(|a, b| a.at.total_cmp(&b.at));
    assert_eq!(sorted, r.summary.events);
}

// ---------------------------------------------------------------------------------------------
// Read-back windows and tolerance

#[test]
fn read_back_after_the_window_does_not_count() {
    let mut d = detector();
    d.handle_segment(&seg(Customer, 10.0, "my number is four five one two eight eight")); // run 11.2-13.55
    d.handle_time(40.0);
    d.handle_segment(&seg(Agent, 48.0, "four five one two eight eight"));
    d.handle_time(60.0);
    let ev = drain(&mut d);
    assert_eq!(of(&ev, PhraseKind::ReadBack).len(), 0);
    let nrb = of(&ev, PhraseKind::NotReadBack);
    assert_eq!(nrb.len(), 1);
    assert!(close(nrb[0].at, 43.55), "{}", nrb[0].at);
    let s = d.finish(70.0, [5.0, 5.0]);
    assert_eq!((s.spelled, s.read_back, s.not_read_back), (1, 0, 1));
}

#[test]
fn read_back_arriving_late_from_asr_still_counts() {
    let mut d = detector();
    d.handle_segment(&seg(Customer, 10.0, "four five one two eight eight")); // ends 12.35
                                                                             // The audio position has passed the window (42.35) but not window + ASR lag (44.35), and the
                                                                             // agent's read-back started inside the window.
    d.handle_time(44.0);
    d.handle_segment(&seg(Agent, 42.0, "four five one two eight eight"));
    d.handle_time(100.0);
    let s = d.finish(100.0, [5.0, 5.0]);
    assert_eq!((s.read_back, s.not_read_back), (1, 0));
}

#[test]
fn read_back_tolerates_one_slip_in_ten_but_not_three_in_eight() {
    let mut d = detector();
    d.handle_segment(&seg(Customer, 0.0, "zero seven seven one two three four five six nine"));
    d.handle_segment(&seg(Agent, 6.0, "oh seven seven one two three four five six eight"));
    let ev = drain(&mut d);
    assert_eq!(of(&ev, PhraseKind::SpelledSequence)[0].evidence, "0771234569");
    assert_eq!(of(&ev, PhraseKind::ReadBack)[0].evidence, "0771234568", "oh is zero among digits");

    let mut d = detector();
    d.handle_segment(&seg(Customer, 0.0, "one two three four five six seven eight"));
    d.handle_segment(&seg(Agent, 5.0, "one two three nine nine nine seven eight"));
    let s = d.finish(60.0, [1.0, 1.0]);
    assert_eq!((s.read_back, s.not_read_back), (0, 1));
}

#[test]
fn read_back_in_two_agent_chunks_and_short_runs_are_not_sequences() {
    let mut d = detector();
    d.handle_segment(&seg(Customer, 0.0, "it's k nine two"));
    d.handle_segment(&seg(Customer, 2.0, "x-ray seven"));
    d.handle_segment(&seg(Agent, 5.0, "okay k nine"));
    d.handle_segment(&seg(Agent, 6.5, "two x seven"));
    // Three symbols only: not a spelled sequence.
    d.handle_segment(&seg(Customer, 20.0, "i have two or three"));
    let s = d.finish(30.0, [1.0, 1.0]);
    assert_eq!((s.spelled, s.read_back, s.not_read_back), (1, 1, 0));
    assert_eq!(of(&s.events, PhraseKind::SpelledSequence)[0].evidence, "k92x7");
}

// ---------------------------------------------------------------------------------------------
// Paraphrase, empathy, closing, names, back-channels

#[test]
fn paraphrase_by_cue_and_by_overlap_in_isolation() {
    let mut d = detector();
    d.handle_segment(&seg(Customer, 0.0, "the heating in my flat stopped working on sunday night"));
    d.handle_segment(&seg(Agent, 5.0, "okay just to confirm this is the boiler"));
    d.handle_segment(&seg(Customer, 9.0, "the engineer visited tuesday but the radiator upstairs still leaks water"));
    // engineer, visit(ed), radiator, upstair(s), leak(s), water of 8 content words: 6 >= 3 and 0.75 >= 0.3
    d.handle_segment(&seg(Agent, 15.0, "so the engineer visited and the upstairs radiator leaks water"));
    // Only one overlap paraphrase per customer turn.
    d.handle_segment(&seg(Agent, 20.0, "the engineer visited the upstairs radiator and it leaks water"));
    d.handle_segment(&seg(Customer, 25.0, "i also need a new thermostat for the kitchen"));
    // Two shared content words are not enough.
    d.handle_segment(&seg(Agent, 29.0, "a kitchen thermostat sure"));
    let p: Vec<(f64, String)> = of(&drain(&mut d), PhraseKind::Paraphrase).iter().map(|e| (e.at, e.evidence.clone())).collect();
    assert_eq!(p, [(5.4, "just to confirm".to_string()), (15.0, "engineer visit radiator upstair leak water".to_string())]);
}

#[test]
fn empathy_counts_only_within_thirty_seconds_after_distress() {
    let mut d = detector();
    d.handle_segment(&seg(Agent, 0.0, "i'm sorry for the wait")); // before any distress
    d.handle_segment(&seg(Customer, 10.0, "this is unacceptable"));
    d.handle_segment(&seg(Agent, 15.0, "i completely understand and i apologize"));
    d.handle_segment(&seg(Agent, 45.0, "sorry about that"));
    let s = d.finish(60.0, [1.0, 1.0]);
    assert_eq!(s.count(PhraseKind::Empathy, Agent), 4);
    let e = &s.empathy_after_distress;
    assert_eq!((e.distress_cues, e.answered_cues, e.empathy_phrases), (1, 1, 2));
}

#[test]
fn closing_needs_thanks_and_next_steps_in_the_last_minute() {
    let mut d = detector();
    d.handle_segment(&seg(Agent, 10.0, "thank you for calling i'll send you the form"));
    d.handle_segment(&seg(Agent, 150.0, "thanks bye"));
    let s = d.finish(180.0, [1.0, 1.0]);
    assert_eq!((s.closing.window_start, s.closing.thanks, s.closing.next_steps), (120.0, true, false));
    assert_eq!(s.count(PhraseKind::NextSteps, Agent), 1);

    let mut d = detector();
    d.handle_segment(&seg(Customer, 150.0, "thank you i will call you back"));
    let s = d.finish(180.0, [1.0, 1.0]);
    assert!(!s.closing.thanks && !s.closing.next_steps, "the customer's thanks is not the agent's closing");
}

#[test]
fn customer_name_matching() {
    let mut d = detector();
    d.set_customer_name(Some("Dr. Anna-Lena Berg".into()));
    d.handle_segment(&seg(Agent, 0.0, "hello Anna I have Anna's file here"));
    d.handle_segment(&seg(Customer, 3.0, "yes this is anna"));
    d.handle_segment(&seg(Agent, 6.0, "annabelle is my colleague"));
    let names: Vec<String> = of(&drain(&mut d), PhraseKind::CustomerName).iter().map(|e| e.evidence.clone()).collect();
    assert_eq!(names, ["anna", "anna's"]);

    // A first name that is an ordinary word would match ordinary speech; numbers are not names.
    for name in ["Will Smith", "+4930123456", "Anonymous", ""] {
        let mut d = detector();
        d.set_customer_name(Some(name.into()));
        d.handle_segment(&seg(Agent, 0.0, "i will send it to anonymous smith will"));
        assert_eq!(of(&drain(&mut d), PhraseKind::CustomerName).len(), 0, "{name}");
    }
}

#[test]
fn backchannel_word_detection() {
    let en = PhrasePack::builtin_en();
    for s in ["mm-hm", "Mm-hm.", "yeah", "uh huh", "uh-huh", "okay", "OK", "yeah yeah", "oh okay", "um right", "I see"] {
        assert!(is_backchannel_word(&en, s), "{s}");
    }
    for s in ["", "um", "yeah that's the one", "okay so the order", "no", "[unk]"] {
        assert!(!is_backchannel_word(&en, s), "{s}");
    }
    // A back-channel utterance is only a back-channel: no acknowledgement or question from it.
    let mut d = detector();
    d.handle_segment(&seg(Agent, 0.0, "got it"));
    d.handle_segment(&seg(Agent, 2.0, "right i understand"));
    let kinds: Vec<PhraseKind> = drain(&mut d).iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [PhraseKind::Backchannel, PhraseKind::Acknowledgement]);
}

#[test]
fn open_and_closed_questions_per_party() {
    let mut d = detector();
    for (p, t) in [
        (Agent, "what seems to be the problem"),
        (Agent, "okay tell me more about the noise"),
        (Agent, "could you describe what it sounds like"),
        (Agent, "do you have the receipt"),
        (Agent, "and it started after the update right"),
        (Agent, "what i'll do is book an engineer"),
        (Agent, "have a nice day"),
        (Customer, "can you send someone today"),
        (Customer, "why does it keep happening"),
        (Customer, "that's right"),
    ] {
        d.handle_segment(&seg(p, 0.0, t));
    }
    let s = d.finish(10.0, [1.0, 1.0]);
    assert_eq!((s.count(PhraseKind::OpenQuestion, Agent), s.count(PhraseKind::ClosedQuestion, Agent)), (3, 2));
    assert_eq!((s.count(PhraseKind::OpenQuestion, Customer), s.count(PhraseKind::ClosedQuestion, Customer)), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// Korean pack

#[test]
fn korean_pack_loads_and_detects() {
    let path = format!("{}/config/phrases/ko.toml", env!("CARGO_MANIFEST_DIR"));
    let ko = PhrasePack::load(std::path::Path::new(&path)).unwrap();
    assert_eq!(ko.language(), "ko");
    assert!(is_backchannel_word(&ko, "네"));
    assert!(is_backchannel_word(&ko, "아 네"));
    assert!(!is_backchannel_word(&ko, "감사합니다"));

    let mut d = PhraseDetector::new(ko, PhraseParams::default());
    d.set_customer_name(Some("김민수".into()));
    d.handle_segment(&seg(Agent, 0.0, "네 어떻게 도와드릴까요"));
    d.handle_segment(&seg(Customer, 3.0, "배송이 너무 늦어서 짜증나요"));
    d.handle_segment(&seg(Agent, 6.0, "불편을 드려 죄송합니다 김민수 고객님"));
    d.handle_segment(&seg(Customer, 9.0, "네"));
    d.handle_segment(&seg(Customer, 10.0, "제 번호는 공일공 일이삼사 오육칠팔"));
    d.handle_segment(&seg(Agent, 14.0, "공일공 일이삼사 오육칠팔 맞으시죠"));
    d.handle_segment(&seg(Customer, 17.0, "네"));
    d.handle_segment(&seg(Agent, 18.0, "김민수님 문자로 안내 드리겠습니다 감사합니다"));
    let s = d.finish(30.0, [10.0, 10.0]);
    assert_eq!(s.language, "ko");
    assert_eq!(s.count(PhraseKind::Backchannel, Customer), 2);
    assert_eq!(s.count(PhraseKind::Thanks, Agent), 1);
    assert_eq!(s.count(PhraseKind::Empathy, Agent), 1, "죄송합니다");
    assert_eq!(s.count(PhraseKind::DistressCue, Customer), 1);
    assert_eq!((s.count(PhraseKind::OpenQuestion, Agent), s.count(PhraseKind::ClosedQuestion, Agent)), (1, 1));
    assert_eq!((s.spelled, s.read_back), (1, 1));
    assert_eq!(of(&s.events, PhraseKind::SpelledSequence)[0].evidence, "01012345678");
    assert_eq!(s.customer_name_uses, 2, "김민수 and 김민수님");
    assert!(s.closing.thanks && s.closing.next_steps);
    let e = &s.empathy_after_distress;
    assert_eq!((e.distress_cues, e.answered_cues), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// Pack and parameter errors

#[test]
fn bad_pack_errors_name_the_key() {
    let en = std::fs::read_to_string(format!("{}/config/phrases/en.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let err = |text: &str| match PhrasePack::from_toml(text) {
        Err(e @ PhraseError::Key { .. }) => e.to_string(),
        other => panic!("expected a key error, got {:?}", other.map(|p| p.language().to_string())),
    };
    let e = err(&en.replace("open = [", "open = \"what\"\nopen_list = ["));
    assert!(e.starts_with("phrase key `questions.open`: invalid type"), "{e}");
    let e = err(&en.replace("[spelling]\n", "[spelling]\nsingle_leters = true\n"));
    assert!(e.starts_with("phrase key `spelling.single_leters`: unknown field"), "{e}");
    let e = err(&en.replace("distress = [", "distres = ["));
    assert!(e.starts_with("phrase key `distres`"), "{e}");
    let e = err(&en.replace("bravo = \"b\"", "bravo = \"bee\""));
    assert_eq!(e, "phrase key `spelling.words.bravo`: must be one symbol, or two as \"x|y\"");
    let e = err(&en.replace("\"i understand\", \"i see\",", "\"i understand\", \"...\","));
    assert_eq!(e, "phrase key `acknowledgement[1]`: is empty after normalisation");
    let e = err("language = \"xx\"\nbackchannel = []\n");
    assert!(e.starts_with("phrase key `acknowledgement`: missing field"), "{e}");

    assert!(matches!(PhrasePack::from_toml("language = [\n"), Err(PhraseError::Syntax(_))));
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("xx.toml");
    assert!(matches!(PhrasePack::load(&missing), Err(PhraseError::Read { .. })));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, en.replace("stem_min_chars = 3", "stem_min_chars = \"three\"")).unwrap();
    assert!(PhrasePack::load(&bad).unwrap_err().to_string().contains("`stem_min_chars`"));
}

#[test]
fn params_parse_with_defaults_and_reject_unknown_keys() {
    let p: PhraseParams = toml::from_str("readback_window_s = 45.0\nmin_spelled_tokens = 5").unwrap();
    assert_eq!(
        (p.readback_window_s, p.min_spelled_tokens, p.closing_window_s, p.paraphrase_overlap, p.long_story_s),
        (45.0, 5, 60.0, 0.3, 20.0)
    );
    assert!(p.validate().is_ok());
    let e = toml::from_str::<PhraseParams>("readback_window = 45.0").unwrap_err().to_string();
    assert!(e.contains("readback_window"), "{e}");
    let bad = PhraseParams { readback_window_s: -1.0, ..PhraseParams::default() };
    assert_eq!(bad.validate().unwrap_err().to_string(), "phrase key `readback_window_s`: must be a non-negative number of seconds");
}

#[test]
fn backchannels_found_by_timing_are_checked_against_their_words() {
    use hearken::analysis::phrases::BackchannelVerdict::{Confirmed, Content, Unheard};
    use hearken::analysis::turns::BackchannelEvent;
    let bc = |by: Party, at: f64, duration_s: f64| BackchannelEvent { by, at, duration_s, in_overlap: true };
    let transcript = vec![
        seg(Customer, 0.0, "so the package never arrived and the tracking says delivered"),
        seg(Agent, 1.2, "mm-hmm"),      // a back-channel word
        seg(Agent, 2.5, "okay got it"), // an acknowledgement phrase (0.4 s per word: 1.15 s)
        seg(Agent, 6.0, "no wait"),     // a bid for the turn, not a listening signal
        seg(Customer, 8.0, "yeah"),     // the customer's back-channel
    ];
    let timing = [
        bc(Agent, 1.25, 0.4),
        bc(Agent, 2.45, 1.0),
        bc(Agent, 6.1, 0.7),
        bc(Agent, 12.0, 0.5), // nothing recognised there
        bc(Customer, 7.9, 0.5),
        bc(Customer, 1.3, 0.3), // the customer's words at 1.3 are part of a long sentence
    ];
    let check = detector().check_backchannels(&timing, &transcript);
    let verdicts: Vec<_> = check.events.iter().map(|e| (e.by, e.at, e.verdict, e.words.as_str())).collect();
    assert_eq!(
        verdicts,
        [
            (Agent, 1.25, Confirmed, "mm hmm"),
            (Agent, 2.45, Confirmed, "okay got it"),
            (Agent, 6.1, Content, "no wait"),
            (Agent, 12.0, Unheard, ""),
            (Customer, 7.9, Confirmed, "yeah"),
            (Customer, 1.3, Content, "package never arrived"),
        ]
    );
    assert_eq!((check.confirmed, check.content, check.unheard), (3, 2, 1));

    // Korean back-channel words confirm with the Korean pack.
    let ko = PhraseDetector::new(PhrasePack::builtin_ko(), PhraseParams::default());
    let c = ko.check_backchannels(&[bc(Agent, 0.0, 0.4)], &[seg(Agent, 0.0, "네")]);
    assert_eq!(c.events[0].verdict, Confirmed, "{:?}", c.events);
}
