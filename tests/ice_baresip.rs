//! ICE-lite towards real ICE agents (issue 12): two baresip phones with `medianat=ice` (full
//! ICE, RFC 8445) call each other through Hearken with `media.ice = "lite"`. Each phone gets an
//! SDP in which the relay is an ICE-lite agent with its own credentials and one host candidate;
//! the phones run their connectivity checks against the relay, Hearken answers them (MESSAGE-
//! INTEGRITY with its password, FINGERPRINT), ICE completes on both phones, and the call's audio
//! flows through the relay and is analysed.

mod common;
use common::baresip::corpus_call;
use common::*;
use serde_json::Value;
use std::path::Path;

const SCENARIO: &str = "d03_backchannels";

#[test]
fn ice_agents_complete_their_checks_against_the_relay() {
    require("baresip");
    let r = corpus_call(SCENARIO, ";medianat=ice", "ice = \"lite\"");
    let logs = &r.logs;
    assert_eq!(logs.matches("connectivity check is complete").count(), 2, "ICE completed on both phones:\n{logs}");
    assert_eq!(logs.matches("mnat 'ice' connected: raddr 127.0.0.1:").count(), 2, "both selected the relay:\n{logs}");
    let answered = metric(&r.metrics, "hearken_relay_stun_answered_total");
    assert!(answered >= 2, "checks answered: {answered}\n{}", r.metrics);
    assert!(metric(&r.metrics, "hearken_relay_packets_forwarded_total") > 1000);
    let s = &r.record["summary"];
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev").join(SCENARIO).join("truth.json"))
            .unwrap(),
    )
    .unwrap();
    let (got, want) = (s["talk_ratio_agent"].as_f64().unwrap_or(f64::NAN), truth["metrics"]["talk_ratio_agent"].as_f64().unwrap());
    assert!((got - want).abs() <= 0.03, "talk ratio {got} vs truth {want}");
    eprintln!("ICE-lite: {answered} checks answered; talk ratio {got} (truth {want})");
}
