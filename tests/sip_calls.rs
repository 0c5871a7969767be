//! Calls through the real relay with real sipp peers: sipp UAC (PBX side) -> Hearken -> sipp UAS
//! (agent side). Needs `sipp` (Debian `sip-tester`; `make test` installs it).

mod common;
use common::*;
use std::net::UdpSocket;
use std::time::Duration;

fn agent_media_socket() -> UdpSocket {
    let s = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

fn plain_call(transport: &str) {
    let (pbx, agent) = (free_port(), free_port());
    let params = if transport == "t1" {
        ";transport=tcp"
    } else {
        ""
    };
    let h = Hearken::start_with(pbx, agent, media_range(10), params, "", "");
    let dir = tempfile::tempdir().unwrap();
    let media = agent_media_socket();
    let uas = scenario(
        dir.path(),
        "uas_call.xml",
        &[("MEDIA_PORT", media.local_addr().unwrap().port().to_string())],
    );
    let uac = scenario(
        dir.path(),
        "uac_call.xml",
        &[
            ("AGENT", "agent7".into()),
            ("PLAY", String::new()),
            ("HOLD_MS", "500".into()),
        ],
    );
    let t = ["-t", transport];
    let uas = Sipp::spawn(dir.path(), &uas, agent, &[&t[..], &["-m", "1"]].concat());
    let remote = format!("127.0.0.1:{}", h.sip_port);
    sipp_run(
        dir.path(),
        &uac,
        pbx,
        &remote,
        &[&t[..], &["-m", "1"]].concat(),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}\n--- hearken log:\n{}", h.log()));
    uas.wait(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n--- hearken log:\n{}", h.log()));
    h.wait_idle();
    let s = h.status();
    assert_eq!(s["sip"]["calls_started"], 1, "{s}");
    assert_eq!(s["sip"]["calls_ended"], 1, "{s}");
    assert_eq!(s["sip"]["malformed"], 0, "{s}");
    let log = h.log();
    assert!(
        log.contains("call answered") && log.contains("reason=\"bye\""),
        "{log}"
    );
    assert!(
        log.contains("agent=agent7"),
        "agent id from the Request-URI user part: {log}"
    );
    // No personal data above trace: the customer's URI user and the Call-ID never appear.
    assert!(!log.contains("customer@") && !log.contains("pbx@"), "{log}");
}

#[test]
fn call_over_udp_completes_and_frees_ports() {
    plain_call("u1");
}

#[test]
fn call_over_tcp_completes_and_frees_ports() {
    plain_call("t1");
}
