//! Floods while calls are up (issue 14): 10 000 junk datagrams, 300 idle TCP connections against
//! a cap of 200, and a storm of requests from one source — while a corpus call runs through
//! Hearken. The call's media arrives complete both ways, the call is analysed, a new call
//! connects afterwards, and every kind of abuse is counted.

mod common;
use common::*;
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn calls_keep_their_media_and_new_calls_connect_during_floods() {
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start_with(
        pbx,
        agent,
        media_range(60),
        "",
        "[limits]\nmax_sip_connections = 200\nrequests_per_source_per_s = 100\nsip_idle_timeout_s = 30\n",
        "",
    );
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
    // A storm of in-dialog requests from one source (to a black hole), far over its rate.
    let storm_stop = stop.clone();
    floods.push(std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.6:0").unwrap();
        let mut i = 0u32;
        while !storm_stop.load(Relaxed) && i < 20_000 {
            let m = format!(
                "INFO sip:x@127.0.0.9:9 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.6:5060;branch=z9hG4bKst{i}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>;tag=2\r\nCall-ID: storm{i}\r\nCSeq: 1 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = s.send_to(m.as_bytes(), ("127.0.0.1", sip));
            i += 1;
            if i.is_multiple_of(200) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }));
    // Idle TCP connections: 300 against a cap of 200.
    let idle: Vec<TcpStream> = (0..300).filter_map(|_| TcpStream::connect(("127.0.0.1", sip)).ok()).collect();
    wait_for(Duration::from_secs(10), "connections over the cap refused", || {
        metric(&h.get("/metrics").unwrap(), "hearken_sip_connections_refused_total") >= 100
    });

    // The call.
    let (truth, cust, agent_pcm, _) = corpus_call("d01_quick_turns");
    let (cap, rec) = call_with_audio_on(&h, pbx, agent, &cust, &agent_pcm);
    stop.store(true, Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    assert_eq!(cap.received_by_agent.len(), cap.sent_by_pbx.len(), "every packet of the customer reached the agent");
    assert_eq!(cap.received_by_pbx.len(), cap.sent_by_agent.len(), "every packet of the agent reached the customer");
    let ratio = assert_meets_corpus(&rec, &truth, "call during the floods");

    // A new call after the floods connects too.
    let short: Vec<i16> = cust[..8000 * 4].to_vec();
    let (cap2, _) = call_with_audio_on(&h, pbx, agent, &short, &agent_pcm[..8000 * 4]);
    assert_eq!(cap2.received_by_agent.len(), cap2.sent_by_pbx.len());
    let m = h.get("/metrics").unwrap();
    let (junk, dropped, refused) = (
        metric(&m, "hearken_sip_malformed_total"),
        metric(&m, "hearken_sip_flood_dropped_total"),
        metric(&m, "hearken_sip_connections_refused_total"),
    );
    // What the kernel's receive buffer dropped in the bursts is not counted (nor seen).
    assert!(junk >= 2_000, "junk counted: {junk}");
    assert!(dropped > 1000, "the storm was cut: {dropped}");
    assert!(refused >= 100, "connections over the cap closed: {refused}");
    drop(idle);
    eprintln!("floods: {junk} of 10000 junk datagrams reached Hearken and were counted, {dropped} storm requests dropped, {refused} connections refused; the call kept all its media (talk ratio {ratio}) and a new call connected");
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
