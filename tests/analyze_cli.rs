//! `hearken analyze` as a user runs it: the binary on corpus WAVs, a stereo WAV, a pcap with two
//! RTP streams (same pipeline as live calls), and bad files that must get a clear error.

use hearken::analysis::wav;
use hearken::codec::g711;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev").join(name);
    assert!(p.is_dir(), "corpus scenario {} missing", p.display());
    p
}

fn analyze(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hearken")).arg("analyze").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn json(args: &[&str]) -> Value {
    let (code, out, err) = analyze(&[args, &["--json"]].concat());
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn json_has_every_documented_field() {
    let d = corpus("d02_agent_interrupts");
    let o = json(&["--customer", d.join("customer.wav").to_str().unwrap(), "--agent", d.join("agent.wav").to_str().unwrap()]);
    for k in [
        "call_duration_s",
        "talk_time_s",
        "talk_ratio_agent",
        "overlap_s",
        "interruptions",
        "backchannels",
        "dead_air",
        "silent_gaps",
        "responses",
        "agent_response_latency",
        "customer_response_latency",
        "longest_monologue",
        "segments",
    ] {
        assert!(!o["summary"][k].is_null(), "missing {k}");
    }
    // The same record shape a live call files.
    for k in ["id", "input", "reason", "vad", "summary", "events", "transcript", "notes"] {
        assert!(!o[k].is_null(), "missing {k}");
    }
    assert_eq!((o["input"].as_str(), o["reason"].as_str()), (Some("file"), Some("end_of_input")));
    let back: hearken::record::CallRecord = serde_json::from_value(o.clone()).expect("the record reads back");
    assert_eq!(serde_json::to_value(&back).unwrap(), o);
    for k in ["gt_3s", "gt_5s", "gt_6s", "gt_10s"] {
        assert!(o["summary"]["dead_air"][k]["count"].is_u64() && o["summary"]["dead_air"][k]["total_s"].is_number(), "{k}");
    }
    assert!(
        o["summary"]["interruptions"]["events"][0]["by"].is_string() && o["summary"]["interruptions"]["events"][0]["overlap_s"].is_number()
    );
    assert!(o["summary"]["talk_time_s"]["customer"].is_number() && o["summary"]["talk_time_s"]["agent"].is_number());
    assert!(o["summary"]["longest_monologue"]["customer"]["longest_s"].is_number());
    // And the readable report.
    let (code, out, _) =
        analyze(&["--customer", d.join("customer.wav").to_str().unwrap(), "--agent", d.join("agent.wav").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("Interruptions 2 (by agent 2, by customer 0)"), "{out}");
}

#[test]
fn stereo_wav_equals_two_mono_wavs() {
    let d = corpus("d03_backchannels");
    let c = wav::read(&d.join("customer.wav")).unwrap().samples.remove(0);
    let a = wav::read(&d.join("agent.wav")).unwrap().samples.remove(0);
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("call.wav");
    wav::write(&st, 8000, &[&c, &a]).unwrap();
    let mut mono = json(&["--customer", d.join("customer.wav").to_str().unwrap(), "--agent", d.join("agent.wav").to_str().unwrap()]);
    let mut stereo = json(&["--stereo", st.to_str().unwrap()]);
    // Everything but the wall-clock time the analysis finished.
    mono["ended_unix_s"] = 0.into();
    stereo["ended_unix_s"] = 0.into();
    assert_eq!(mono, stereo);
}

/// Write a pcap (Ethernet/IPv4/UDP) with one PCMU stream per leg, 20 ms packets, the customer's
/// first packet leading.
fn write_pcap(path: &Path, legs: [&[i16]; 2]) {
    let mut b: Vec<u8> = Vec::new();
    b.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    let n = legs[0].len().max(legs[1].len()) / 160;
    for k in 0..n {
        for (i, pcm) in legs.iter().enumerate() {
            let payload: Vec<u8> = pcm.get(k * 160..k * 160 + 160).unwrap_or(&[0; 160]).iter().map(|&s| g711::encode_ulaw(s)).collect();
            let rtp = hearken::rtp::build(0, k as u16, (k * 160) as u32, 100 + i as u32, &payload);
            let udp_len = 8 + rtp.len();
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0x08, 0x00]);
            let ip_len = 20 + udp_len;
            f.extend_from_slice(&[0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 0, 0x40, 0, 64, 17, 0, 0]);
            f.extend_from_slice(&[10, 0, 0, 1 + i as u8, 10, 0, 0, 2 - i as u8]);
            f.extend_from_slice(&(4000 + i as u16 * 2).to_be_bytes());
            f.extend_from_slice(&(5000u16).to_be_bytes());
            f.extend_from_slice(&(udp_len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&rtp);
            let t_us = k as u64 * 20_000 + i as u64 * 300;
            b.extend_from_slice(&((t_us / 1_000_000) as u32).to_le_bytes());
            b.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&f);
        }
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn pcap_with_two_rtp_streams_matches_the_wavs() {
    let d = corpus("d03_backchannels");
    let c = wav::read(&d.join("customer.wav")).unwrap().samples.remove(0);
    let a = wav::read(&d.join("agent.wav")).unwrap().samples.remove(0);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("call.pcap");
    write_pcap(&p, [&c, &a]);
    let w = json(&["--customer", d.join("customer.wav").to_str().unwrap(), "--agent", d.join("agent.wav").to_str().unwrap()]);
    let r = json(&["--pcap", p.to_str().unwrap()]);
    let shift = r["summary"]["segments"]["customer"][0][0].as_f64().unwrap() - w["summary"]["segments"]["customer"][0][0].as_f64().unwrap();
    assert!(shift.abs() < 0.1, "pcap timeline starts at the first packet: shift {shift}");
    for party in ["customer", "agent"] {
        let (x, y) = (r["summary"]["talk_time_s"][party].as_f64().unwrap(), w["summary"]["talk_time_s"][party].as_f64().unwrap());
        assert!((x - y).abs() <= 0.1, "{party}: {x} vs {y}");
    }
    assert_eq!(r["summary"]["backchannels"]["count"], w["summary"]["backchannels"]["count"]);
    assert_eq!(r["summary"]["interruptions"]["count"], w["summary"]["interruptions"]["count"]);
    assert_eq!(r["summary"]["responses"].as_array().unwrap().len(), w["summary"]["responses"].as_array().unwrap().len());
    assert_eq!(r["summary"]["quality"]["customer"]["packets_received"], (c.len() / 160) as u64);
    assert_eq!(r["summary"]["quality"]["agent"]["lost"], 0);
    // --swap-legs exchanges the parties.
    let s = json(&["--pcap", p.to_str().unwrap(), "--swap-legs"]);
    assert_eq!(s["summary"]["talk_time_s"]["agent"], r["summary"]["talk_time_s"]["customer"]);
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().to_string();
    std::fs::write(p("text.wav"), "this is not audio").unwrap();
    wav::write(Path::new(&p("r16.wav")), 16000, &[&[1, 2, 3]]).unwrap();
    wav::write(Path::new(&p("empty.wav")), 8000, &[&[]]).unwrap();
    wav::write(Path::new(&p("mono.wav")), 8000, &[&[1, 2, 3, 4]]).unwrap();
    let full = std::fs::read(p("mono.wav")).unwrap();
    std::fs::write(p("cut.wav"), &full[..30]).unwrap();
    let d = corpus("d01_quick_turns");
    let good = d.join("agent.wav").to_string_lossy().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--customer".into(), p("text.wav"), "--agent".into(), good.clone()], "not a WAV file"),
        (vec!["--customer".into(), p("r16.wav"), "--agent".into(), good.clone()], "16000 Hz"),
        (vec!["--customer".into(), p("empty.wav"), "--agent".into(), good.clone()], "no audio"),
        (vec!["--customer".into(), p("cut.wav"), "--agent".into(), good.clone()], "truncated"),
        (vec!["--customer".into(), p("missing.wav"), "--agent".into(), good.clone()], "cannot read"),
        (vec!["--stereo".into(), p("mono.wav")], "expected a stereo file"),
        (vec!["--pcap".into(), "/usr/share/sip-tester/g711a.pcap".into()], "needs two RTP streams"),
        (vec!["--pcap".into(), p("text.wav")], "not a pcap file"),
    ];
    for (args, want) in cases {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (code, _, err) = analyze(&a);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(want) && !err.contains("panicked"), "{args:?}: {err}");
    }
    let (code, _, err) = analyze(&[]);
    assert_eq!(code, 2, "{err}");
}
