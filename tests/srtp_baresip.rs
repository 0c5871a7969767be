//! A real SDES-SRTP call between two real SIP phones (baresip, Debian's `baresip-core`, its
//! `srtp` module with `mediaenc=srtp-mand`: RTP/SAVP with `a=crypto`) through Hearken, playing a
//! corpus call (customer and agent WAVs). Hearken forwards the ciphertext untouched (both phones
//! decrypt and authenticate every packet, or they would report errors) and analyses a decrypted
//! copy: the metrics equal those of the same call made in the clear, within the corpus
//! tolerances, and meet the corpus truth for talk ratio.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SCENARIO: &str = "d02_agent_interrupts";

struct Phone {
    child: std::process::Child,
}
impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Who a phone is: SIP address, user, what it plays, its RTP port range.
struct Who<'a> {
    ip: &'a str,
    port: u16,
    user: &'a str,
    wav: &'a Path,
    rtp: (u16, u16),
}

/// A baresip phone in `dir`: listens on `ip:port`, sends `wav`, auto-answers; `mediaenc` as
/// given ("" for plain RTP).
fn phone(dir: &Path, who: Who, mediaenc: &str, extra_args: &[&str]) -> Phone {
    let Who { ip, port, user, wav, rtp } = who;
    std::fs::create_dir_all(dir).unwrap();
    let config = format!(
        "poll_method epoll\nsip_listen {ip}:{port}\naudio_player aufile,{}\naudio_source aufile,{}\naudio_alert aufile,/dev/null\n\
         audio_srate 8000\naudio_channels 1\nrtp_ports {}-{}\nmodule_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
         module srtp.so\nmodule_app account.so\nmodule_app menu.so\n",
        dir.join("heard.wav").display(),
        wav.display(),
        rtp.0,
        rtp.1
    );
    std::fs::write(dir.join("config"), config).unwrap();
    let enc = if mediaenc.is_empty() { String::new() } else { format!(";mediaenc={mediaenc}") };
    std::fs::write(dir.join("accounts"), format!("<sip:{user}@{ip}:{port}>;regint=0;answermode=auto;audio_codecs=PCMU{enc}\n")).unwrap();
    let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(dir)
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start baresip");
    Phone { child }
}

/// One call of the corpus scenario through a fresh Hearken; returns the record and the logs.
fn call(mediaenc: &str) -> (Value, String) {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev").join(SCENARIO);
    let secs = (hound_len(&corpus.join("customer.wav")) + 1.5).ceil() as u64;
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent, "");
    let dir = tempfile::tempdir().unwrap();
    let (a_rtp, c_rtp) = (media_range(10), media_range(10));
    let (a_wav, c_wav) = (corpus.join("agent.wav"), corpus.join("customer.wav"));
    let _agent =
        phone(&dir.path().join("agent"), Who { ip: AGENT_IP, port: agent, user: "agent7", wav: &a_wav, rtp: a_rtp }, mediaenc, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let dial = format!("/dial sip:agent7@127.0.0.1:{}", h.sip_port);
    let secs_s = secs.to_string();
    let mut caller = phone(
        &dir.path().join("caller"),
        Who { ip: PBX_IP, port: pbx, user: "cust", wav: &c_wav, rtp: c_rtp },
        mediaenc,
        &["-e", &dial, "-t", &secs_s],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(secs + 20);
    while caller.child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the caller did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut rec = Value::Null;
    wait_for(Duration::from_secs(30), "call record", || {
        let list: Value = serde_json::from_str(&h.get("/records").unwrap_or_default()).unwrap_or_default();
        let Some(id) = list["records"].as_array().and_then(|a| a.first()).and_then(|r| r["id"].as_u64()) else { return false };
        match h.get(&format!("/records/{id}")) {
            Some(b) => {
                rec = serde_json::from_str(&b).unwrap();
                true
            }
            None => false,
        }
    });
    let logs = format!(
        "caller:\n{}\nagent:\n{}\nhearken:\n{}",
        std::fs::read_to_string(dir.path().join("caller/baresip.log")).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("agent/baresip.log")).unwrap_or_default(),
        h.log()
    );
    let m = h.get("/metrics").unwrap();
    if !mediaenc.is_empty() {
        let srtp = m.lines().find(|l| l.starts_with("hearken_relay_srtp_packets_total ")).unwrap_or("");
        assert!(srtp.split(' ').nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) > 1000, "SRTP forwarded: {srtp}\n{logs}");
    }
    (rec, logs)
}

fn hound_len(p: &Path) -> f64 {
    read_leg(p).len() as f64 / 8000.0
}

#[test]
fn sdes_srtp_call_between_real_phones_is_measured_like_the_plain_call() {
    require("baresip");
    let (plain, _) = call("");
    let (srtp, logs) = call("srtp-mand");
    let (p, s) = (&plain["summary"], &srtp["summary"]);
    eprintln!(
        "plain: talk {} ratio {} interruptions {} responses {}\nsrtp:  talk {} ratio {} interruptions {} responses {}\nsrtp quality: {}",
        p["talk_time_s"],
        p["talk_ratio_agent"],
        p["interruptions"],
        p["responses"].as_array().map_or(0, Vec::len),
        s["talk_time_s"],
        s["talk_ratio_agent"],
        s["interruptions"],
        s["responses"].as_array().map_or(0, Vec::len),
        s["quality"]
    );
    assert!(logs.contains("RTP/SAVP") || logs.to_ascii_lowercase().contains("srtp"), "the phones negotiated SRTP:\n{logs}");
    assert!(!logs.contains("failed to decrypt RTP"), "every packet decrypted at the phones:\n{logs}");
    let q = &s["quality"];
    for leg in ["customer_stats", "agent_stats"] {
        assert!(q[leg]["srtp_decrypted"].as_u64().unwrap_or(0) > 1000, "{leg}: {q}");
        assert_eq!(q[leg]["srtp_failed"], 0, "{leg}: {q}");
        assert_eq!(q[leg]["srtp_no_key"], 0, "{leg}: {q}");
    }
    assert_eq!(p["quality"]["customer_stats"]["srtp_decrypted"].as_u64().unwrap_or(0), 0, "the plain call is plain");
    // Same metrics as the plain call within the corpus tolerances.
    for party in ["customer", "agent"] {
        let (a, b) = (p["talk_time_s"][party].as_f64().unwrap(), s["talk_time_s"][party].as_f64().unwrap());
        assert!(a > 3.0 && (a - b).abs() <= 0.25, "{party} talk time: plain {a}, srtp {b}");
    }
    let (ra, rb) = (p["talk_ratio_agent"].as_f64().unwrap(), s["talk_ratio_agent"].as_f64().unwrap());
    assert!((ra - rb).abs() <= 0.03, "talk ratio: plain {ra}, srtp {rb}");
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev").join(SCENARIO).join("truth.json"))
            .unwrap(),
    )
    .unwrap();
    let want = truth["metrics"]["talk_ratio_agent"].as_f64().unwrap();
    assert!((rb - want).abs() <= 0.03, "srtp talk ratio {rb} vs truth {want}");
    for k in ["by_agent", "by_customer"] {
        assert_eq!(s["interruptions"][k], p["interruptions"][k], "interruptions {k}: plain {p}, srtp {s}");
    }
    assert_eq!(s["responses"].as_array().map(Vec::len), p["responses"].as_array().map(Vec::len), "responses");
}
