//! SIP edge cases through the real relay: CANCEL before answer, hold/unhold re-INVITEs,
//! REGISTER through the proxy, 100 concurrent calls, port exhaustion, malformed input.
//! Peers are real sipp instances; raw datagrams where the point is a broken message.

mod common;
use common::*;
use std::net::UdpSocket;
use std::time::Duration;

fn fail(e: String, h: &Hearken) -> ! {
    panic!("{e}\n--- hearken log:\n{}", h.log())
}

#[test]
fn cancel_before_answer_ends_the_call_and_frees_ports() {
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent, "");
    let dir = tempfile::tempdir().unwrap();
    let uas = Sipp::spawn(dir.path(), "uas_cancel.xml", agent, &["-m", "1"]);
    sipp_run(dir.path(), "uac_cancel.xml", pbx, &format!("127.0.0.1:{}", h.sip_port), &["-m", "1"], Duration::from_secs(20))
        .unwrap_or_else(|e| fail(e, &h));
    uas.wait(Duration::from_secs(10)).unwrap_or_else(|e| fail(e, &h));
    h.wait_idle();
    let s = h.status();
    assert_eq!(s["sip"]["calls_ended"], 1, "{s}");
    assert!(h.log().contains("reason=\"cancelled\""), "{}", h.log());
}

#[test]
fn reinvite_hold_and_unhold_keep_the_call_anchored() {
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent, "");
    let dir = tempfile::tempdir().unwrap();
    let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", "42000".into())]);
    let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", "1"]);
    let remote = format!("127.0.0.1:{}", h.sip_port);
    let d = dir.path().to_path_buf();
    let uac = std::thread::spawn(move || sipp_run(&d, "uac_hold.xml", pbx, &remote, &["-m", "1"], Duration::from_secs(30)));
    // Watch the call: it must show on hold after the sendonly re-INVITE, then off hold again,
    // with the same relay ports throughout.
    let (mut saw_hold, mut saw_unhold, mut ports) = (false, false, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline && !uac.is_finished() {
        if let Some(c) = h.calls().first() {
            let p = (c["streams"][0]["customer_port"].clone(), c["streams"][0]["agent_port"].clone());
            if p.0.as_u64().unwrap_or(0) != 0 {
                assert!(ports.is_none() || ports.as_ref() == Some(&p), "relay ports changed on re-INVITE");
                ports = Some(p);
            }
            if c["on_hold"] == true {
                saw_hold = true;
            } else if saw_hold {
                saw_unhold = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    uac.join().unwrap().unwrap_or_else(|e| fail(e, &h));
    uas.wait(Duration::from_secs(10)).unwrap_or_else(|e| fail(e, &h));
    assert!(saw_hold && saw_unhold, "hold seen: {saw_hold}, unhold seen: {saw_unhold}");
    h.wait_idle();
}

#[test]
fn register_is_proxied_to_the_pbx_with_path() {
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent, "");
    let dir = tempfile::tempdir().unwrap();
    // Here the PBX is the server (registrar) and the agent the client.
    let registrar = Sipp::spawn_on(dir.path(), "uas_register.xml", PBX_IP, pbx, &["-m", "1"]);
    sipp_run_on(
        dir.path(),
        "uac_register.xml",
        AGENT_IP,
        agent,
        &format!("127.0.0.1:{}", h.sip_port),
        &["-m", "1"],
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| fail(e, &h));
    registrar.wait(Duration::from_secs(10)).unwrap_or_else(|e| fail(e, &h));
    assert_eq!(h.status()["sip"]["calls_started"], 0);
}

#[test]
fn hundred_concurrent_calls() {
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start_with(pbx, agent, media_range(220), "", "", "");
    let dir = tempfile::tempdir().unwrap();
    let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", "42010".into())]);
    let uac = scenario(
        dir.path(),
        "uac_call.xml",
        &[("AGENT", "agent[call_number]".into()), ("PLAY", String::new()), ("HOLD_MS", "4000".into())],
    );
    let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", "100"]);
    let remote = format!("127.0.0.1:{}", h.sip_port);
    let d = dir.path().to_path_buf();
    let run =
        std::thread::spawn(move || sipp_run(&d, &uac, pbx, &remote, &["-m", "100", "-r", "100", "-l", "100"], Duration::from_secs(60)));
    let mut peak = 0;
    while !run.is_finished() {
        peak = peak.max(h.status()["relay"]["active_calls"].as_u64().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(200));
    }
    run.join().unwrap().unwrap_or_else(|e| fail(e, &h));
    uas.wait(Duration::from_secs(20)).unwrap_or_else(|e| fail(e, &h));
    h.wait_idle();
    let s = h.status();
    assert_eq!(s["sip"]["calls_started"], 100, "{s}");
    assert_eq!(s["sip"]["calls_ended"], 100, "{s}");
    // 100 calls of 4 s each started at 100/s: most of them are up at the same time.
    assert!(peak >= 50, "peak concurrent calls {peak}");
}

/// A raw SIP request from the PBX address.
fn raw(method: &str, via_port: u16, call_id: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:agentx@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK{call_id}\r\nFrom: <sip:c@x>;tag=1\r\nTo: <sip:agentx@x>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn exchange(sock: &UdpSocket, to: u16, msg: &[u8]) -> Option<String> {
    sock.send_to(msg, ("127.0.0.1", to)).unwrap();
    let mut buf = [0u8; 4096];
    // Skip 100 Trying.
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let s = String::from_utf8_lossy(&buf[..n]).to_string();
                if !s.starts_with("SIP/2.0 100 ") {
                    return Some(s);
                }
            }
            Err(_) => return None,
        }
    }
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 43000 RTP/AVP 0\r\n";

#[test]
fn port_exhaustion_answers_503_and_recovers() {
    let (pbx, agent) = (free_port(), free_port());
    // One call needs two pairs: room for exactly one call.
    let (lo, _) = media_range(2);
    let h = Hearken::start_with(pbx, agent, (lo, lo + 3), "", "", "");
    let dir = tempfile::tempdir().unwrap();
    let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", "42020".into())]);
    let uac = scenario(dir.path(), "uac_call.xml", &[("AGENT", "a1".into()), ("PLAY", String::new()), ("HOLD_MS", "3000".into())]);
    let uas_p = Sipp::spawn(dir.path(), &uas, agent, &["-m", "1"]);
    let remote = format!("127.0.0.1:{}", h.sip_port);
    let (d, u, r) = (dir.path().to_path_buf(), uac.clone(), remote.clone());
    let first = std::thread::spawn(move || sipp_run(&d, &u, pbx, &r, &["-m", "1"], Duration::from_secs(20)));
    wait_for(Duration::from_secs(10), "first call up", || h.status()["relay"]["active_calls"] == 1);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = sock.local_addr().unwrap().port();
    let resp = exchange(&sock, h.sip_port, raw("INVITE", port, "exhaust1", "Content-Type: application/sdp\r\n", SDP).as_bytes())
        .expect("an answer");
    assert!(resp.starts_with("SIP/2.0 503 "), "{resp}");
    first.join().unwrap().unwrap_or_else(|e| fail(e, &h));
    uas_p.wait(Duration::from_secs(10)).unwrap_or_else(|e| fail(e, &h));
    h.wait_idle();
    // Ports came back: the next call works.
    let dir2 = tempfile::tempdir().unwrap();
    let uas = scenario(dir2.path(), "uas_call.xml", &[("MEDIA_PORT", "42020".into())]);
    let uac = scenario(dir2.path(), "uac_call.xml", &[("AGENT", "a1".into()), ("PLAY", String::new()), ("HOLD_MS", "200".into())]);
    let uas_p = Sipp::spawn(dir2.path(), &uas, agent, &["-m", "1"]);
    sipp_run(dir2.path(), &uac, pbx, &remote, &["-m", "1"], Duration::from_secs(20)).unwrap_or_else(|e| fail(e, &h));
    uas_p.wait(Duration::from_secs(10)).unwrap_or_else(|e| fail(e, &h));
    assert!(h.status()["sip"]["ports_exhausted"].as_u64().unwrap() >= 1);
}

#[test]
fn malformed_messages_get_clear_answers_and_break_nothing() {
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent, "");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let me = sock.local_addr().unwrap().port();
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("garbage", b"hello world\r\n\r\n".to_vec(), None),
        ("binary", vec![0, 159, 146, 150, 0, 13, 10, 13, 10], None),
        ("content-length past the end", raw("OPTIONS", me, "m1", "", "").replace("Content-Length: 0", "Content-Length: 500").into_bytes(), Some("400")),
        ("no call-id", raw("OPTIONS", me, "m2", "", "").replace("Call-ID: m2\r\n", "").into_bytes(), Some("400")),
        ("bad cseq", raw("OPTIONS", me, "m3", "", "").replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS").into_bytes(), Some("400")),
        ("cseq method mismatch", raw("OPTIONS", me, "m4", "", "").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE").into_bytes(), Some("400")),
        ("max-forwards zero", raw("OPTIONS", me, "m5", "Max-Forwards: 0\r\n", "").into_bytes(), Some("483")),
        ("bad max-forwards", raw("OPTIONS", me, "m6", "Max-Forwards: lots\r\n", "").into_bytes(), Some("400")),
        ("header without colon", raw("OPTIONS", me, "m7", "Broken header line\r\n", "").into_bytes(), Some("400")),
        ("broken sdp", raw("INVITE", me, "m8", "Content-Type: application/sdp\r\n", "v=0\r\nm=audio notaport RTP/AVP 0\r\n").into_bytes(), Some("488")),
        ("stray response", b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKnope\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".to_vec(), None),
        ("oversized", vec![b'A'; 65_000], None),
    ];
    for (name, msg, want) in &cases {
        let got = exchange(&sock, h.sip_port, msg);
        match (want, got) {
            (None, None) => {}
            (Some(code), Some(r)) => assert!(r.starts_with(&format!("SIP/2.0 {code} ")), "{name}: got {r}"),
            (w, g) => panic!("{name}: wanted {w:?}, got {g:?}"),
        }
    }
    // Over TCP, a message that cannot be framed is answered and the connection closed.
    {
        use std::io::{Read, Write};
        let mut t = std::net::TcpStream::connect(("127.0.0.1", h.sip_port)).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        t.write_all(raw("OPTIONS", me, "t1", "", "").replace("Content-Length: 0", "Content-Length: zero").as_bytes()).unwrap();
        let mut out = String::new();
        let _ = t.read_to_string(&mut out);
        assert!(out.starts_with("SIP/2.0 400 "), "tcp: {out}");
    }
    let s = h.status();
    assert!(s["sip"]["malformed"].as_u64().unwrap() >= 6, "{s}");
    assert!(s["sip"]["stray_responses"].as_u64().unwrap() >= 1, "{s}");

    // An unknown method is proxied like any other request (RFC 3261 §16: proxies forward methods
    // they do not understand). The agent side here is a plain socket that answers 200.
    let agent_sock = UdpSocket::bind(("127.0.0.2", agent)).unwrap();
    agent_sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let foobar = raw("FOOBAR", me, "u1", "", "").replace("sip:agentx@127.0.0.1 ", &format!("sip:agentx@127.0.0.1:{} ", h.sip_port));
    sock.send_to(foobar.as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, from) = agent_sock.recv_from(&mut buf).expect("FOOBAR forwarded to the agent");
    let fwd = hearken::sip::message::Message::parse(&buf[..n]).unwrap();
    assert_eq!(fwd.method(), Some("FOOBAR"));
    assert_eq!(fwd.values("via").len(), 2);
    // The request had no Max-Forwards: the proxy adds 70 (RFC 3261 §16.6 step 3).
    assert_eq!(fwd.header("max-forwards"), Some("70"));
    agent_sock.send_to(&fwd.response(200, "OK", Some("z")).to_bytes(), from).unwrap();
    let mut b = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut b).expect("200 for FOOBAR relayed back");
    let r = String::from_utf8_lossy(&b[..n]).to_string();
    assert!(r.starts_with("SIP/2.0 200 OK"), "{r}");
    assert_eq!(hearken::sip::message::Message::parse(r.as_bytes()).unwrap().values("via").len(), 1);

    // And a real call still works afterwards.
    let dir = tempfile::tempdir().unwrap();
    drop(agent_sock);
    let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", "42030".into())]);
    let uac = scenario(dir.path(), "uac_call.xml", &[("AGENT", "a1".into()), ("PLAY", String::new()), ("HOLD_MS", "200".into())]);
    let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", "1"]);
    sipp_run(dir.path(), &uac, pbx, &format!("127.0.0.1:{}", h.sip_port), &["-m", "1"], Duration::from_secs(20))
        .unwrap_or_else(|e| fail(e, &h));
    uas.wait(Duration::from_secs(10)).unwrap_or_else(|e| fail(e, &h));
}

#[test]
fn silent_call_ends_on_rtp_timeout_with_bye_to_both_sides() {
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start_with(pbx, agent, media_range(4), "", "", "rtp_timeout_s = 2");
    let dir = tempfile::tempdir().unwrap();
    let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", "42040".into())]);
    // Nobody sends RTP. Hearken ends the call: a BYE to the PBX (which answers 200) and to the
    // agent (its scenario ends on a BYE).
    let uac = scenario(
        dir.path(),
        "uac_wait_bye.xml",
        &[
            ("AGENT", "quiet".into()),
            ("PLAY", String::new()),
            ("WAIT_MS", "10000".into()),
            ("BYE_CHECK", "Reason: SIP;cause=408;text=.hearken: [a-z_]+".into()),
        ],
    );
    let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", "1"]);
    let remote = format!("127.0.0.1:{}", h.sip_port);
    sipp_run(dir.path(), &uac, pbx, &remote, &["-m", "1"], Duration::from_secs(30)).unwrap_or_else(|e| fail(e, &h));
    uas.wait(Duration::from_secs(10)).unwrap_or_else(|e| fail(e, &h));
    wait_for(Duration::from_secs(10), "rtp timeout reported", || h.status()["relay"]["rtp_timeouts"] == 1);
    h.wait_idle();
    assert!(h.log().contains("no media on any leg"), "{}", h.log());
    let m = h.get("/metrics").expect("metrics");
    assert!(m.contains("hearken_sip_teardowns_total 1"), "{m}");
}

/// A confused or hostile peer sends an INVITE with 245 m-lines (244 of them disabled, port 0):
/// it gets 488 and takes no ports, and the next PBX call still works. Disabled streams get no
/// ports at all.
#[test]
fn an_invite_with_hundreds_of_mlines_takes_no_ports() {
    let (pbx, agent) = (free_port(), free_port());
    let (lo, _) = media_range(4);
    let h = Hearken::start_with(pbx, agent, (lo, lo + 7), "", "", "");
    let mut body = String::from("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 43000 RTP/AVP 0\r\n");
    for _ in 0..244 {
        body.push_str("m=audio 0 RTP/AVP 0\r\n");
    }
    // From a source that is not the PBX (an agent-side address).
    let sock = UdpSocket::bind("127.0.0.3:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = sock.local_addr().unwrap().port();
    let resp = exchange(&sock, h.sip_port, raw("INVITE", port, "mlines1", "Content-Type: application/sdp\r\n", &body).as_bytes())
        .expect("an answer");
    assert!(resp.starts_with("SIP/2.0 488 "), "{resp}");
    assert_eq!(h.status()["relay"]["port_pairs_in_use"], 0);
    // Two m-lines, one disabled: one stream's ports only (two pairs: PBX side and agent side).
    let two =
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 43000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n";
    let agent_sock = UdpSocket::bind((AGENT_IP, agent)).unwrap();
    agent_sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let pbx_sock = UdpSocket::bind((PBX_IP, pbx)).unwrap();
    pbx_sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let invite = raw("INVITE", pbx, "mlines2", "Content-Type: application/sdp\r\n", two)
        .replace("sip:agentx@127.0.0.1 ", &format!("sip:agentx@127.0.0.1:{} ", h.sip_port));
    pbx_sock.send_to(invite.as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    let mut buf = [0u8; 8192];
    let (n, _) = agent_sock.recv_from(&mut buf).unwrap_or_else(|e| panic!("the INVITE reaches the agent ({e}): {}", h.log()));
    let fwd = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(fwd.contains("m=video 0 RTP/AVP 96"), "{fwd}");
    assert_eq!(h.status()["relay"]["port_pairs_in_use"], 2, "ports for the active stream only");
    let m = h.get("/metrics").unwrap();
    assert!(m.contains("hearken_sip_over_limit_total 1"), "{m}");
}

/// Behind 1:1 NAT the relay binds one address and advertises another: the SDP the agent gets
/// names the advertised address, and media bound on the local one still flows.
#[test]
fn media_advertise_is_written_into_sdp() {
    let (pbx, agent) = (free_port(), free_port());
    let (lo, hi) = media_range(4);
    let h = Hearken::start_with(pbx, agent, (lo, hi), "", "", "address = \"127.0.0.1\"\nadvertise = \"192.0.2.50\"");
    let agent_sock = UdpSocket::bind((AGENT_IP, agent)).unwrap();
    agent_sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let pbx_sock = UdpSocket::bind((PBX_IP, pbx)).unwrap();
    let invite = raw("INVITE", pbx, "adv1", "Content-Type: application/sdp\r\n", SDP)
        .replace("sip:agentx@127.0.0.1 ", &format!("sip:agentx@127.0.0.1:{} ", h.sip_port));
    pbx_sock.send_to(invite.as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    let mut buf = [0u8; 8192];
    let (n, _) = agent_sock.recv_from(&mut buf).expect("the INVITE reaches the agent");
    let fwd = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(fwd.contains("c=IN IP4 192.0.2.50\r\n") && fwd.contains("o=- 1 1 IN IP4 192.0.2.50\r\n"), "{fwd}");
    let port: u16 = fwd.split("m=audio ").nth(1).and_then(|r| r.split(' ').next()).and_then(|p| p.parse().ok()).unwrap();
    // The relay port is bound on 127.0.0.1: a packet to it is received (and dropped: the agent
    // has not answered, so nothing may come from its side yet).
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    wait_for(Duration::from_secs(15), "a packet reached the relay", || {
        rtp.send_to(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff], ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        h.status()["relay"]["dropped"]["source_mismatch"].as_u64().unwrap_or(0) >= 1
    });
}

/// Two named interfaces: the PBX side on IPv4, the agents on IPv6. Each side is told the relay
/// address of its own interface, and the relay bridges the media between the two families.
#[test]
fn named_interfaces_bridge_ipv4_and_ipv6() {
    use common::raw_sip::*;
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start_with(
        pbx,
        agent,
        media_range(4),
        "",
        "",
        "customer_interface = \"internal\"\nagent_interface = \"external\"\n\
         [media.interfaces.internal]\naddress = \"127.0.0.1\"\n[media.interfaces.external]\naddress = \"::1\"",
    );
    let sig_pbx = UdpSocket::bind((PBX_IP, pbx)).unwrap();
    let sig_agent = UdpSocket::bind((AGENT_IP, agent)).unwrap();
    sig_pbx.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    sig_agent.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let pbx_media = UdpSocket::bind((PBX_IP, 0)).unwrap();
    let agent_media = UdpSocket::bind("[::1]:0").unwrap();
    pbx_media.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    agent_media.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let c = place_call_with(
        &h,
        &sig_pbx,
        &sig_agent,
        "v6bridge",
        (PBX_IP, pbx_media.local_addr().unwrap().port()),
        ("::1", agent_media.local_addr().unwrap().port()),
    );
    assert!(c.agent_sdp.contains("c=IN IP6 ::1\r\n"), "the agent is told the IPv6 interface: {}", c.agent_sdp);
    assert!(c.pbx_sdp.contains("c=IN IP4 127.0.0.1\r\n"), "the PBX the IPv4 one: {}", c.pbx_sdp);
    // Each side sends to the relay on its own family, and hears the other.
    for seq in 1..=5u16 {
        pbx_media.send_to(&rtp(seq, 0x11), ("127.0.0.1", c.relay_pbx)).unwrap();
        agent_media.send_to(&rtp(seq, 0x22), ("::1", c.relay_agent)).unwrap();
    }
    let mut buf = [0u8; 2048];
    let (n, from) = agent_media.recv_from(&mut buf).expect("the customer's RTP reaches the IPv6 agent");
    assert!(from.is_ipv6() && n > 12 && buf[12] == 0x11, "{from}");
    let (n, from) = pbx_media.recv_from(&mut buf).expect("the agent's RTP reaches the IPv4 PBX");
    assert!(from.is_ipv4() && n > 12 && buf[12] == 0x22, "{from}");
}
