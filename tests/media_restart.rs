//! Restart safety of the media plane with live calls (issue 12): ten calls are up with their
//! PBX streams running, Hearken is killed with SIGKILL and started again on the same config,
//! the old PBX streams keep arriving at their old relay ports, and ten new calls are placed.
//! Hearken must never put an old call's audio into a new call (or the other way round), and an
//! old dialog's re-INVITE must be anchored anew, not passed on with the PBX's own addresses.
//!
//! The PBX and the agents are raw UDP sockets speaking SIP and RTP by hand, so the test controls
//! exactly when each stream starts.

mod common;
use common::raw_sip::*;
use common::*;
use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const OLD: u8 = 0xaa;
const NEW_PBX: u8 = 0xbb;
const NEW_AGENT: u8 = 0xcc;

/// A stream of 20 ms packets from `sock` to `port` until `stop`.
fn stream(sock: UdpSocket, port: u16, fill: u8, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seq = 0u16;
        while !stop.load(Ordering::Relaxed) {
            seq = seq.wrapping_add(1);
            let _ = sock.send_to(&rtp(seq, fill), ("127.0.0.1", port));
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Count received packets by fill byte until `stop`.
fn counter(sock: UdpSocket, counts: Arc<Mutex<HashMap<u8, usize>>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if n > 12 {
                    *counts.lock().unwrap().entry(buf[12]).or_default() += 1;
                }
            }
        }
    })
}

#[test]
fn restart_with_live_calls_never_crosses_streams() {
    let (pbx_port, agent_port) = (free_port(), free_port());
    // 30 port pairs (15 calls): after the restart the new calls must share the range with the
    // old calls' still-running streams.
    let (lo, _) = media_range(30);
    let mut h = Hearken::start_with(pbx_port, agent_port, (lo, lo + 59), "", "", "");
    let pbx = UdpSocket::bind((PBX_IP, pbx_port)).unwrap();
    let agent = UdpSocket::bind((AGENT_IP, agent_port)).unwrap();
    pbx.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    agent.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();

    // Ten calls up, each PBX stream running (the agents' streams too).
    let mut old_calls = Vec::new();
    let mut old_pbx_counts = Vec::new();
    for i in 0..10 {
        let (pm, am) = (UdpSocket::bind((PBX_IP, 0)).unwrap(), UdpSocket::bind((AGENT_IP, 0)).unwrap());
        let c = place_call(&h, &pbx, &agent, &format!("old{i}"), pm.local_addr().unwrap().port(), am.local_addr().unwrap().port());
        threads.push(stream(pm.try_clone().unwrap(), c.relay_pbx, OLD, stop.clone()));
        threads.push(stream(am, c.relay_agent, OLD, stop.clone()));
        // What the old customers (PBX media sockets) hear from now on.
        let counts = Arc::new(Mutex::new(HashMap::new()));
        threads.push(counter(pm, counts.clone(), stop.clone()));
        old_pbx_counts.push(counts);
        old_calls.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let first_ports: Vec<u16> = old_calls.iter().map(|c| c.relay_pbx).collect();

    h.kill9_and_restart();
    for c in &old_pbx_counts {
        c.lock().unwrap().clear();
    }

    // Ten new calls while the old streams keep arriving. Each new PBX starts its stream as soon
    // as it has the 200; each new agent 200 ms after answering.
    let mut new_agent_counts = Vec::new();
    let mut new_ports = Vec::new();
    for i in 0..10 {
        let (pm, am) = (UdpSocket::bind((PBX_IP, 0)).unwrap(), UdpSocket::bind((AGENT_IP, 0)).unwrap());
        let c = place_call(&h, &pbx, &agent, &format!("new{i}"), pm.local_addr().unwrap().port(), am.local_addr().unwrap().port());
        new_ports.push(c.relay_pbx);
        threads.push(stream(pm, c.relay_pbx, NEW_PBX, stop.clone()));
        let counts = Arc::new(Mutex::new(HashMap::new()));
        threads.push(counter(am.try_clone().unwrap(), counts.clone(), stop.clone()));
        new_agent_counts.push(counts);
        let (s, port) = (stop.clone(), c.relay_agent);
        threads.push(std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut seq = 0u16;
            while !s.load(Ordering::Relaxed) {
                seq = seq.wrapping_add(1);
                let _ = am.send_to(&rtp(seq, NEW_AGENT), ("127.0.0.1", port));
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(3));

    // An old dialog's re-INVITE reaches the restarted process: anchored anew.
    let old = &old_calls[0];
    let body = sdp(PBX_IP, 47_000);
    let reinvite = format!(
        "INVITE sip:agent7@{AGENT_IP}:{agent_port} SIP/2.0\r\nVia: SIP/2.0/UDP {PBX_IP}:{pbx_port};branch=z9hG4bKre{}\r\nRoute: <sip:127.0.0.1:{};lr>\r\nFrom: <sip:cust@pbx>;tag=p{}\r\nTo: <sip:agent7@pbx>;tag={}\r\nCall-ID: {}\r\nCSeq: 2 INVITE\r\nContact: <sip:pbx@{PBX_IP}:{pbx_port}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        old.call_id, h.sip_port, old.call_id, old.to_tag, old.call_id, body.len()
    );
    pbx.send_to(reinvite.as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    let fwd = recv_until(&agent, "re-INVITE at the agent", |m| m.starts_with("INVITE ") && m.contains("CSeq: 2 INVITE"));
    let (relay_lo, relay_hi) = h.media;
    let p = audio_port(&fwd);
    assert!(fwd.contains("c=IN IP4 127.0.0.1") && (relay_lo..=relay_hi).contains(&p), "re-INVITE anchored on the relay: {fwd}");

    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let m = h.get("/metrics").unwrap();
    assert!(m.contains("hearken_sip_resumed_dialogs_total 1"), "{m}");

    // No old customer hears a new agent.
    for (i, c) in old_pbx_counts.iter().enumerate() {
        let c = c.lock().unwrap();
        assert_eq!(c.get(&NEW_AGENT).copied().unwrap_or(0), 0, "old call {i} got a new agent's audio: {c:?}");
    }
    // Every new agent hears its own customer, and at most a packet or two of an old stream
    // (one that hit the same port between the answer and the new PBX's first packet).
    let mut leaked = 0;
    for (i, c) in new_agent_counts.iter().enumerate() {
        let c = c.lock().unwrap();
        let own = c.get(&NEW_PBX).copied().unwrap_or(0);
        assert!(own >= 100, "new call {i}: its own customer's audio reached the agent {own} times: {c:?}");
        leaked += c.get(&OLD).copied().unwrap_or(0);
    }
    assert!(leaked <= 10, "{leaked} old packets reached new agents");
    // Ports are not handed out again from the bottom of the range in the same order.
    assert_ne!(first_ports, new_ports, "the restarted process reused the same ports in the same order");
    eprintln!("old ports {first_ports:?}\nnew ports {new_ports:?}\nold packets at new agents: {leaked}");
}
