//! Floods while calls are up (issue 14), at the sizes the issue names and with the default
//! limits: 10 000 junk datagrams, 1 100 idle TCP connections (the cap is 1 000), and an INVITE
//! storm from one agent-side source — while 20 calls run through Hearken, each with a
//! 236-packet RTP stream (sipp plays Debian's g711a.pcap). Every packet of every call arrives,
//! the 20 calls complete, a new call with a corpus recording connects afterwards and is
//! analysed, and every kind of abuse is counted.

mod common;
use common::*;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn calls_keep_their_media_and_new_calls_connect_during_floods() {
    hearken::sys::raise_nofile(8192);
    // The storm's INVITEs come from the agent side and go to pbx.route: a port where nothing
    // listens. The live calls come from the PBX (any port on 127.0.0.1).
    let (black_hole, agent) = (free_port(), free_port());
    let h = Hearken::start_with(black_hole, agent, media_range(60), "", "[limits]\nsip_idle_timeout_s = 30\n", "");
    let sip = h.sip_port;
    let stop = Arc::new(AtomicBool::new(false));
    let mut floods = Vec::new();
    // Junk datagrams.
    floods.push(std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.5:0").unwrap();
        for i in 0..10_000u32 {
            let junk = format!("\x00\x01garbage {i} \u{fffd}\r\n\r\n");
            let _ = s.send_to(junk.as_bytes(), ("127.0.0.1", sip));
            if i.is_multiple_of(500) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }));
    // An INVITE storm from one source, far over its rates (200 requests/s, 20 new calls/s).
    let storm_stop = stop.clone();
    floods.push(std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.6:0").unwrap();
        let mut i = 0u32;
        while !storm_stop.load(Relaxed) && i < 30_000 {
            let m = format!(
                "INVITE sip:storm{i}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.6:5060;branch=z9hG4bKst{i}\r\nFrom: <sip:a@b>;tag={i}\r\nTo: <sip:storm{i}@y>\r\nCall-ID: storm{i}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = s.send_to(m.as_bytes(), ("127.0.0.1", sip));
            i += 1;
            if i.is_multiple_of(200) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }));
    // Idle TCP connections: 1 100 against the default cap of 1 000.
    let idle: Vec<TcpStream> = (0..1100).filter_map(|_| TcpStream::connect(("127.0.0.1", sip)).ok()).collect();
    wait_for(Duration::from_secs(10), "connections over the cap refused", || {
        metric(&h.get("/metrics").unwrap(), "hearken_sip_connections_refused_total") >= 100
    });

    // 20 calls at once, each playing 236 RTP packets from the PBX side.
    let dir = tempfile::tempdir().unwrap();
    let media = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    media.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let (uas, uac) = pcap_call_scenarios(dir.path(), media.local_addr().unwrap().port(), 9000);
    let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", "20"]);
    let remote = format!("127.0.0.1:{sip}");
    let dpath = dir.path().to_path_buf();
    let uac = std::thread::spawn(move || {
        sipp_run(&dpath, &uac, free_port(), &remote, &["-m", "20", "-l", "20", "-r", "20"], Duration::from_secs(60))
    });
    let mut per_call: HashMap<SocketAddr, usize> = HashMap::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(30);
    while per_call.values().sum::<usize>() < 20 * 236 && Instant::now() < deadline {
        if let Ok((_, src)) = media.recv_from(&mut buf) {
            *per_call.entry(src).or_default() += 1;
        }
    }
    uac.join().unwrap().unwrap_or_else(|e| panic!("the 20 calls: {e}\n--- hearken log:\n{}", h.log()));
    uas.wait(Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}"));
    stop.store(true, Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    let counts: Vec<usize> = per_call.values().copied().collect();
    let relay: String = h
        .get("/metrics")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("hearken_relay") || l.starts_with("hearken_media"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!((per_call.len(), counts.iter().sum::<usize>()), (20, 20 * 236), "every packet of every call arrived: {counts:?}\n{relay}");

    // A new call after the floods connects and is analysed.
    let (truth, cust, agent_pcm, _) = corpus_call("d01_quick_turns");
    let (cap, rec) = call_with_audio_on(&h, free_port(), agent, &cust, &agent_pcm);
    assert_eq!(cap.received_by_agent.len(), cap.sent_by_pbx.len(), "every packet of the customer reached the agent");
    assert_eq!(cap.received_by_pbx.len(), cap.sent_by_agent.len(), "every packet of the agent reached the customer");
    let ratio = assert_meets_corpus(&rec, &truth, "call after the floods");
    let m = h.get("/metrics").unwrap();
    let (junk, dropped, limited, refused) = (
        metric(&m, "hearken_sip_malformed_total"),
        metric(&m, "hearken_sip_flood_dropped_total"),
        metric(&m, "hearken_sip_rate_limited_total"),
        metric(&m, "hearken_sip_connections_refused_total"),
    );
    // What the kernel's receive buffer dropped in the bursts is not counted (nor seen).
    assert!(junk >= 2_000, "junk counted: {junk}");
    assert!(dropped > 1000, "the storm was cut: {dropped}");
    assert!(limited > 0, "new calls over the per-source rate got 503: {m}");
    assert!(refused >= 100, "connections over the cap closed: {refused}");
    drop(idle);
    eprintln!(
        "floods: {junk} of 10000 junk datagrams counted, {dropped} storm requests dropped and {limited} storm INVITEs answered 503, {refused} of 1100 connections refused; 20 calls kept all 236 packets each; a new call connected (talk ratio {ratio})"
    );
}

/// RFC 5626 §4.4.1: a phone's double-CRLF keep-alive on its TCP connection gets a CRLF pong.
#[test]
fn tcp_keepalive_pings_get_a_pong() {
    use std::io::{Read, Write};
    let h = Hearken::start(free_port(), free_port(), "");
    let mut c = TcpStream::connect(("127.0.0.1", h.sip_port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        c.write_all(b"\r\n\r\n").unwrap();
        let mut pong = [0u8; 2];
        c.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"\r\n");
    }
}
