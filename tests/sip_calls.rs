//! Calls through the real relay with real sipp peers: sipp UAC (PBX side) -> Hearken -> sipp UAS
//! (agent side). Needs `sipp` (Debian `sip-tester`; `make test` installs it).

mod common;
use common::*;
use std::net::UdpSocket;
use std::time::Duration;

fn agent_media_socket() -> UdpSocket {
    let s = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

fn plain_call(transport: &str) {
    let (pbx, agent) = (free_port(), free_port());
    let params = if transport == "t1" { ";transport=tcp" } else { "" };
    let h = Hearken::start_with(pbx, agent, media_range(10), params, "", "");
    let dir = tempfile::tempdir().unwrap();
    let media = agent_media_socket();
    let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", media.local_addr().unwrap().port().to_string())]);
    let uac = scenario(dir.path(), "uac_call.xml", &[("AGENT", "agent7".into()), ("PLAY", String::new()), ("HOLD_MS", "500".into())]);
    let t = ["-t", transport];
    let uas = Sipp::spawn(dir.path(), &uas, agent, &[&t[..], &["-m", "1"]].concat());
    let remote = format!("127.0.0.1:{}", h.sip_port);
    sipp_run(dir.path(), &uac, pbx, &remote, &[&t[..], &["-m", "1"]].concat(), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n--- hearken log:\n{}", h.log()));
    uas.wait(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}\n--- hearken log:\n{}", h.log()));
    h.wait_idle();
    let s = h.status();
    assert_eq!(s["sip"]["calls_started"], 1, "{s}");
    assert_eq!(s["sip"]["calls_ended"], 1, "{s}");
    assert_eq!(s["sip"]["malformed"], 0, "{s}");
    let log = h.log();
    assert!(log.contains("call answered") && log.contains("reason=\"bye\""), "{log}");
    assert!(log.contains("agent=agent7"), "agent id from the Request-URI user part: {log}");
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

/// sipp plays Debian's g711a.pcap (236 PCMA packets) from the PBX side through Hearken; the agent
/// side (a socket of this test, announced in the UAS's SDP) must receive every packet unchanged.
/// Meanwhile strangers inject packets into both relay ports: none may be forwarded.
#[test]
fn rtp_from_pcap_arrives_byte_identical_and_strangers_are_dropped() {
    const PCAP: &str = G711A_PCAP;
    assert!(std::path::Path::new(PCAP).exists(), "{PCAP} missing: install sip-tester (make test does)");
    let streams = hearken::analysis::pcap::read_streams(&std::fs::read(PCAP).unwrap(), PCAP).unwrap();
    assert_eq!(streams.len(), 1, "one RTP stream in {PCAP}");
    let expected: Vec<Vec<u8>> = streams.into_iter().next().unwrap().packets.into_iter().map(|p| p.data).collect();
    assert_eq!(expected.len(), 236);

    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent, "");
    let dir = tempfile::tempdir().unwrap();
    let media = agent_media_socket();
    let (uas, uac) = pcap_call_scenarios(dir.path(), media.local_addr().unwrap().port(), 8000);
    let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", "1"]);
    let remote = format!("127.0.0.1:{}", h.sip_port);
    let dpath = dir.path().to_path_buf();
    let uac = std::thread::spawn(move || sipp_run(&dpath, &uac, pbx, &remote, &["-m", "1"], Duration::from_secs(40)));

    let stranger = UdpSocket::bind("127.0.0.3:0").unwrap();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut relay_agent_port = None;
    let mut buf = [0u8; 2048];
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    while got.len() < expected.len() && std::time::Instant::now() < deadline {
        let Ok((n, src)) = media.recv_from(&mut buf) else {
            continue;
        };
        got.push(buf[..n].to_vec());
        if relay_agent_port.is_none() {
            relay_agent_port = Some(src);
            // The agent talks back (latching its leg to this socket)...
            for i in 0..5u16 {
                media.send_to(&hearken::rtp::build(8, i, i as u32 * 160, 77, &[0xd5; 160]), src).unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
            // ...then strangers inject into the agent-facing port and the customer-facing port.
            let mut customer_port = 0u16;
            wait_for(Duration::from_secs(5), "the call's relay ports on /calls", || {
                customer_port = h.calls().first().and_then(|c| c["streams"][0]["customer_port"].as_u64()).unwrap_or(0) as u16;
                customer_port != 0
            });
            for i in 0..20u16 {
                let bleed = hearken::rtp::build(8, 1000 + i, 0, 0xbad, b"STRANGER-STRANGER");
                stranger.send_to(&bleed, src).unwrap();
                stranger.send_to(&bleed, ("127.0.0.1", customer_port)).unwrap();
            }
        }
    }
    uac.join().unwrap().unwrap_or_else(|e| panic!("{e}\n--- hearken log:\n{}", h.log()));
    uas.wait(Duration::from_secs(10)).unwrap();

    assert!(!got.iter().any(|p| p.windows(8).any(|w| w == b"STRANGER")), "a stranger's packet was relayed");
    assert_eq!(got.len(), expected.len(), "every RTP packet of the pcap arrives");
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        let gh = hearken::rtp::parse_rtp(g).unwrap();
        let eh = hearken::rtp::parse_rtp(e).unwrap();
        assert_eq!(&g[gh.payload_offset..], &e[eh.payload_offset..], "payload of packet {i} differs");
        assert_eq!(g, e, "packet {i} differs (the relay must not touch headers either)");
    }
    let s = h.status();
    assert!(s["relay"]["dropped"]["source_mismatch"].as_u64().unwrap() >= 40, "{s}");
    assert!(s["relay"]["tap_frames"].as_u64().unwrap() >= 236 + 5, "tap saw the relayed RTP: {s}");
    assert_eq!(s["relay"]["tap_dropped"], 0, "{s}");
    h.wait_idle();
}

/// RFC 3261 §18.1.1: an INVITE over 1300 bytes (here 2.9 KB, arriving over TCP) leaves Hearken
/// over TCP although the agent's route names no transport. An agent listening on TCP only gets
/// it; an agent on UDP only (the TCP connection is refused) gets it over UDP after all.
#[test]
fn a_large_invite_goes_over_tcp_or_falls_back_to_udp() {
    for (agent_transport, fallback) in [("t1", 0), ("u1", 1)] {
        let (pbx, agent) = (free_port(), free_port());
        let h = Hearken::start_with(pbx, agent, media_range(10), "", "", "");
        let dir = tempfile::tempdir().unwrap();
        let media = agent_media_socket();
        let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", media.local_addr().unwrap().port().to_string())]);
        let uac = scenario(dir.path(), "uac_call.xml", &[("AGENT", "agent7".into()), ("PLAY", String::new()), ("HOLD_MS", "300".into())]);
        let text = std::fs::read_to_string(&uac).unwrap().replace(
            "X-Unknown-Header: passes Through unchanged",
            &format!("X-Unknown-Header: passes Through unchanged\n      X-Padding: {}", "p".repeat(2400)),
        );
        std::fs::write(&uac, text).unwrap();
        let uas = Sipp::spawn(dir.path(), &uas, agent, &["-t", agent_transport, "-m", "1"]);
        let remote = format!("127.0.0.1:{}", h.sip_port);
        sipp_run(dir.path(), &uac, pbx, &remote, &["-t", "t1", "-m", "1"], Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("agent {agent_transport}: {e}\n--- hearken log:\n{}", h.log()));
        uas.wait(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}\n--- hearken log:\n{}", h.log()));
        let m = h.get("/metrics").unwrap();
        assert_eq!(metric(&m, "hearken_sip_size_to_tcp_total"), 1, "agent {agent_transport}: {m}");
        assert_eq!(metric(&m, "hearken_sip_size_fallback_udp_total"), fallback, "agent {agent_transport}");
        h.wait_idle();
    }
}

/// A listener per side (`sip.agents_listen`): the PBX reaches Hearken on 127.0.0.1, the agents
/// on 127.0.0.2. The INVITE reaches the agent from the agent side's listener, naming it in Via
/// and in the top Record-Route (the PBX's entry below it, RFC 5658), and the call completes both
/// ways (the agent's responses and the PBX's ACK and BYE take their own side's address).
#[test]
fn a_call_with_a_listener_per_side() {
    let (pbx_port, agent) = (free_port(), free_port());
    let (sip_port, agents_port, http_port, media) = (free_port(), free_port(), free_port(), media_range(10));
    let h = Hearken::from_config(
        &format!(
            "[sip]\nlisten = \"127.0.0.1:{sip_port}\"\nagents_listen = \"{AGENT_IP}:{agents_port}\"\n\
             [pbx]\naddresses = [\"127.0.0.1\"]\nroute = \"sip:127.0.0.1:{pbx_port}\"\n[agents]\nroute = \"sip:{AGENT_IP}:{agent}\"\n\
             [media]\nport_min = {}\nport_max = {}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[log]\nlevel = \"hearken=debug\"\n",
            media.0, media.1
        ),
        sip_port,
        http_port,
        media,
    );
    let dir = tempfile::tempdir().unwrap();
    let ms = agent_media_socket();
    let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", ms.local_addr().unwrap().port().to_string())]);
    let uac = scenario(dir.path(), "uac_call.xml", &[("AGENT", "agent7".into()), ("PLAY", String::new()), ("HOLD_MS", "300".into())]);
    let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", "1"]);
    sipp_run(dir.path(), &uac, pbx_port, &format!("127.0.0.1:{sip_port}"), &["-m", "1"], Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n--- hearken log:\n{}", h.log()));
    uas.wait(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}\n--- hearken log:\n{}", h.log()));
    let msgs = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("uas_call") && e.file_name().to_string_lossy().ends_with("messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    let invite = msgs.split("INVITE sip:").nth(1).unwrap_or_else(|| panic!("the agent's trace: {msgs}"));
    let invite = invite.split("\n\n").next().unwrap_or(invite);
    assert!(invite.contains(&format!("Via: SIP/2.0/UDP {AGENT_IP}:{agents_port};branch=")), "{invite}");
    assert!(
        invite.contains(&format!("Record-Route: <sip:{AGENT_IP}:{agents_port};lr>"))
            && invite.contains(&format!("Record-Route: <sip:127.0.0.1:{sip_port};lr>")),
        "two Record-Routes, the agent side's on top: {invite}"
    );
    h.wait_idle();
    assert_eq!(h.status()["sip"]["calls_ended"], 1);
}
