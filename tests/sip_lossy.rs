//! A lossy link between Hearken and the agents (issue 14): a UDP forwarder inside the test drops
//! 20 % of the datagrams Hearken sends towards a sipp agent (the INVITEs). The PBX (sipp) places
//! 50 calls; every one connects and is torn down. Before Hearken retransmitted the requests it
//! forwards (RFC 3261 Timers A and E), a lost INVITE towards the agent lost the call: Hearken
//! answers 100 Trying at once, so the PBX stops retransmitting.
//!
//! The second test loses a fifth both ways, in-dialog requests included. sipp as the agent does
//! not answer a retransmitted BYE once its call is over, so there the agent is a careful phone of
//! the test's own (RFC 3261 UAS behaviour: 2xx retransmitted until ACK, every BYE answered).

mod common;
use common::*;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Relays datagrams between `front` (facing Hearken) and `back` (facing the agent at
/// `agent_port`), dropping one in five of those towards the agent and, with `both_ways`, of
/// those back (deterministic sequences). Returns the counts of relayed and dropped datagrams.
fn lossy_forwarder(
    front: UdpSocket,
    back: UdpSocket,
    hearken_sip: u16,
    agent_port: u16,
    both_ways: bool,
    stop: Arc<AtomicBool>,
) -> Arc<[AtomicU64; 2]> {
    let counts: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    for (from, to, dest, seed) in [
        (front.try_clone().unwrap(), back.try_clone().unwrap(), (AGENT_IP, agent_port), Some(7u64)),
        (back, front, (PBX_IP, hearken_sip), both_ways.then_some(11u64)),
    ] {
        let (stop, counts) = (stop.clone(), counts.clone());
        from.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        std::thread::spawn(move || {
            let lossy = seed.is_some();
            let mut rng = seed.unwrap_or(0);
            let mut buf = vec![0u8; 65536];
            while !stop.load(Relaxed) {
                let Ok(n) = from.recv(&mut buf) else { continue };
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if lossy && (rng >> 33) % 5 == 0 {
                    counts[1].fetch_add(1, Relaxed);
                    continue;
                }
                counts[0].fetch_add(1, Relaxed);
                let _ = to.send_to(&buf[..n], dest);
            }
        });
    }
    counts
}

/// A UDP port free on the agents' address right now.
fn free_agent_port() -> u16 {
    UdpSocket::bind((AGENT_IP, 0)).unwrap().local_addr().unwrap().port()
}

/// Both runs in one test, one after the other: two lossy links, two sipp PBXs and two
/// Hearkens at once on two cores make the timing of each run the other's.
#[test]
fn fifty_calls_complete_over_lossy_links() {
    invites_to_the_agent_lost();
    lost_both_ways();
}

fn invites_to_the_agent_lost() {
    // The forwarder's front port is bound first and kept: no other socket can take it.
    let front = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    let fwd = front.local_addr().unwrap().port();
    let (pbx, agent) = (free_port(), free_agent_port());
    // Hearken's agent route is the forwarder's front port.
    let h = Hearken::start_with(pbx, fwd, media_range(120), "", "", "");
    let back = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = lossy_forwarder(front, back, h.sip_port, agent, false, stop.clone());
    let dir = tempfile::tempdir().unwrap();
    let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", "42010".into())]);
    let uac = scenario(
        dir.path(),
        "uac_call.xml",
        &[("AGENT", "agent[call_number]".into()), ("PLAY", String::new()), ("HOLD_MS", "1000".into())],
    );
    let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", "50"]);
    let remote = format!("127.0.0.1:{}", h.sip_port);
    let d = dir.path().to_path_buf();
    let run = std::thread::spawn(move || sipp_run(&d, &uac, pbx, &remote, &["-m", "50", "-r", "10", "-l", "50"], Duration::from_secs(240)));
    let result = run.join().unwrap();
    let uas_result = uas.wait(Duration::from_secs(60));
    eprintln!("agent sipp: {uas_result:?}");
    stop.store(true, Relaxed);
    result.unwrap_or_else(|e| panic!("not every call completed: {e}\n{}", h.log()));
    h.wait_idle();
    let s = h.status();
    assert_eq!(s["sip"]["calls_started"], 50, "{s}");
    assert_eq!(s["sip"]["calls_ended"], 50, "{s}");
    let m = h.get("/metrics").unwrap();
    let retx = metric(&m, "hearken_sip_client_retransmissions_total");
    let (relayed, dropped) = (counts[0].load(Relaxed), counts[1].load(Relaxed));
    assert!(dropped >= 5, "the link really lost datagrams: {dropped} of {}", relayed + dropped);
    assert!(retx > 0, "Hearken retransmitted what was lost");
    eprintln!(
        "lossy link: {dropped} of {} datagrams dropped, Hearken retransmitted {retx} requests, 50 of 50 calls completed",
        relayed + dropped
    );
}

/// A careful agent phone of our own (sipp as the agent does not answer a retransmitted BYE once
/// its call is over): answers INVITE with 180 and 200 (the 200 retransmitted from T1 up to T2
/// until the ACK, RFC 3261 §13.3.1.4), a retransmitted INVITE with its last response, and every
/// BYE with 200. Its Contact is `contact_port`, so in-dialog requests cross the lossy link too.
fn careful_agent(sock: UdpSocket, contact_port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    use hearken::sip::message::Message;
    use std::collections::HashMap;
    use std::time::Instant;
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        // Call-ID → (last response, where it went, next retransmission, interval, acked)
        let mut calls: HashMap<String, (Vec<u8>, std::net::SocketAddr, Instant, Duration, bool)> = HashMap::new();
        let (mut answered, mut byes) = (0u64, 0u64);
        let mut buf = vec![0u8; 65536];
        while !stop.load(Relaxed) {
            if let Ok((n, src)) = sock.recv_from(&mut buf) {
                let Ok(req) = Message::parse(&buf[..n]) else { continue };
                let cid = req.call_id().to_string();
                match req.method() {
                    Some("INVITE") => match calls.get(&cid) {
                        Some((last, _, _, _, _)) => {
                            let _ = sock.send_to(last, src);
                        }
                        None => {
                            let tag = format!("ag{}", calls.len());
                            let contact = format!("<sip:agent@{AGENT_IP}:{contact_port}>");
                            let mut ringing = req.response(180, "Ringing", Some(&tag));
                            ringing.push_back("Contact", contact.clone());
                            let _ = sock.send_to(&ringing.to_bytes(), src);
                            let sdp = format!("v=0\r\no=- 1 1 IN IP4 {AGENT_IP}\r\ns=-\r\nc=IN IP4 {AGENT_IP}\r\nt=0 0\r\nm=audio 42020 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n");
                            let mut ok = req.response(200, "OK", Some(&tag));
                            ok.push_back("Contact", contact);
                            ok.set("content-type", "Content-Type", "application/sdp");
                            ok.set("content-length", "Content-Length", sdp.len().to_string());
                            ok.body = sdp.into_bytes();
                            let data = ok.to_bytes();
                            let _ = sock.send_to(&data, src);
                            answered += 1;
                            calls.insert(cid, (data, src, Instant::now() + Duration::from_millis(500), Duration::from_millis(500), false));
                        }
                    },
                    Some("ACK") => {
                        if let Some(c) = calls.get_mut(&cid) {
                            c.4 = true;
                        }
                    }
                    Some("BYE") => {
                        byes += 1;
                        let _ = sock.send_to(&req.response(200, "OK", None).to_bytes(), src);
                    }
                    Some(_) => {
                        let _ = sock.send_to(&req.response(200, "OK", None).to_bytes(), src);
                    }
                    None => {}
                }
            }
            let now = Instant::now();
            for (data, to, next, interval, acked) in calls.values_mut() {
                if !*acked && now >= *next {
                    let _ = sock.send_to(data, *to);
                    *interval = (*interval * 2).min(Duration::from_secs(4));
                    *next = now + *interval;
                }
            }
        }
        (answered, byes)
    })
}

fn lost_both_ways() {
    let front = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    let fwd = front.local_addr().unwrap().port();
    let agent_sock = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    let (pbx, agent) = (free_port(), agent_sock.local_addr().unwrap().port());
    let h = Hearken::start_with(pbx, fwd, media_range(120), "", "", "");
    let back = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = lossy_forwarder(front, back, h.sip_port, agent, true, stop.clone());
    let phone = careful_agent(agent_sock, fwd, stop.clone());
    let dir = tempfile::tempdir().unwrap();
    let uac = scenario(
        dir.path(),
        "uac_call.xml",
        &[("AGENT", "agent[call_number]".into()), ("PLAY", String::new()), ("HOLD_MS", "1000".into())],
    );
    let remote = format!("127.0.0.1:{}", h.sip_port);
    let d = dir.path().to_path_buf();
    let result = sipp_run(&d, &uac, pbx, &remote, &["-m", "50", "-r", "10", "-l", "50"], Duration::from_secs(300));
    h.wait_idle();
    stop.store(true, Relaxed);
    let (answered, byes) = phone.join().unwrap();
    result.unwrap_or_else(|e| panic!("not every call completed: {e}\n{}", h.log()));
    let s = h.status();
    assert_eq!(s["sip"]["calls_started"], 50, "{s}");
    assert_eq!(s["sip"]["calls_ended"], 50, "{s}");
    let m = h.get("/metrics").unwrap();
    let retx = metric(&m, "hearken_sip_client_retransmissions_total");
    let (relayed, dropped) = (counts[0].load(Relaxed), counts[1].load(Relaxed));
    assert!(dropped * 10 >= (relayed + dropped), "about a fifth lost: {dropped} of {}", relayed + dropped);
    assert_eq!(answered, 50);
    assert!(byes >= 50, "every call's BYE reached the phone (some more than once): {byes}");
    eprintln!(
        "lossy both ways: {dropped} of {} datagrams dropped, Hearken retransmitted {retx} requests, the phone saw {byes} BYEs for 50 calls; 50 of 50 completed",
        relayed + dropped
    );
}
