//! A real SDES-SRTP call between two real SIP phones (baresip, Debian's `baresip-core`, its
//! `srtp` module with `mediaenc=srtp-mand`: RTP/SAVP with `a=crypto`) through Hearken, playing a
//! corpus call (customer and agent WAVs). Hearken forwards the ciphertext untouched (both phones
//! decrypt and authenticate every packet, or they would report errors) and analyses a decrypted
//! copy: the metrics equal those of the same call made in the clear, within the corpus
//! tolerances, and meet the corpus truth for talk ratio.

mod common;
use common::baresip::corpus_call;
use common::*;
use serde_json::Value;
use std::path::Path;

const SCENARIO: &str = "d02_agent_interrupts";

#[test]
fn sdes_srtp_call_between_real_phones_is_measured_like_the_plain_call() {
    require("baresip");
    let plain = corpus_call(SCENARIO, "", "").record;
    let r = corpus_call(SCENARIO, ";mediaenc=srtp-mand", "");
    let (srtp, logs) = (r.record, r.logs);
    assert!(metric(&r.metrics, "hearken_relay_srtp_packets_total") > 1000, "SRTP forwarded:\n{logs}");
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
