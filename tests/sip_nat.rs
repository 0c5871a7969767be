//! Agents who register through Hearken to a real registrar (issue 14). The PBX is a real
//! Kamailio 5.6 acting as registrar and proxy (tests/fixtures/kamailio-registrar.cfg: usrloc,
//! registrar with its default path handling, record_route, lookup); the customer is sipp.
//!
//! 1. NAT: the agent's datagrams pass a NAT inside the test that gives them another source port,
//!    and the agent's Via and Contact name its private address (10.99.0.7, unreachable from
//!    here). It registers through Hearken; two calls from the customer reach it through the
//!    registrar's Path, and the PBX side's BYE (sipp → Kamailio → Hearken) reaches it too. The
//!    agent is the test's own code (a UAS as RFC 3261 describes), so nothing but the NAT path
//!    can deliver those requests.
//! 2. A real softphone: baresip registers through Hearken (its outbound proxy) to Kamailio
//!    without `Supported: path`; the customer's call goes through Hearken and carries the agent
//!    id of the registered address-of-record.

mod common;
use common::baresip::{phone_with_account, Who};
use common::kamailio::Kamailio;
use common::*;
use hearken::sip::message::Message;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A NAT: datagrams from `inside` (the agent) leave from `outside` (another port) towards
/// `server`; whatever reaches `outside` goes back to the agent.
fn nat(inside: UdpSocket, outside: UdpSocket, agent: SocketAddr, server: SocketAddr, stop: Arc<AtomicBool>) {
    for (from, to, dest) in [(inside.try_clone().unwrap(), outside.try_clone().unwrap(), Some(server)), (outside, inside, Some(agent))] {
        let stop = stop.clone();
        from.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Relaxed) {
                if let Ok(n) = from.recv(&mut buf) {
                    let _ = to.send_to(&buf[..n], dest.unwrap());
                }
            }
        });
    }
}

fn response(req: &Message, code: u16, reason: &str, to_tag: &str, contact: &str, body: &str) -> Vec<u8> {
    let mut r = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.values("via") {
        r.push_str(&format!("Via: {v}\r\n"));
    }
    for v in req.values("record-route") {
        r.push_str(&format!("Record-Route: {v}\r\n"));
    }
    let to = req.header("to").unwrap_or_default();
    let to = if to.contains("tag=") { to.to_string() } else { format!("{to};tag={to_tag}") };
    r.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
        req.header("from").unwrap_or_default(),
        req.call_id(),
        req.header("cseq").unwrap_or_default()
    ));
    if !contact.is_empty() {
        r.push_str(&format!("Contact: {contact}\r\n"));
    }
    if body.is_empty() {
        r.push_str("Content-Length: 0\r\n\r\n");
    } else {
        r.push_str(&format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    }
    r.into_bytes()
}

/// The customer (sipp, tests/sipp/uac_call.xml: in-dialog requests follow the Record-Route set)
/// calls agent7 at the registrar `calls` times, each call `hold_ms` long.
fn customer_calls(kam_port: u16, calls: usize, hold_ms: u64) -> Result<std::process::Output, String> {
    let dir = tempfile::tempdir().unwrap();
    let scen =
        scenario(dir.path(), "uac_call.xml", &[("AGENT", "agent7".into()), ("PLAY", String::new()), ("HOLD_MS", hold_ms.to_string())]);
    sipp_run(
        dir.path(),
        &scen,
        free_port(),
        &format!("127.0.0.1:{kam_port}"),
        &["-m", &calls.to_string(), "-r", "1"],
        Duration::from_secs(60),
    )
}

#[test]
fn an_agent_behind_nat_gets_new_calls_and_the_pbx_bye() {
    let kam_port = free_port();
    let kam = Kamailio::registrar(kam_port);
    let h = Hearken::start(kam_port, free_port(), "");
    let hearken_sip: SocketAddr = format!("127.0.0.1:{}", h.sip_port).parse().unwrap();
    let agent = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    agent.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let (inside, outside) = (UdpSocket::bind((AGENT_IP, 0)).unwrap(), UdpSocket::bind((AGENT_IP, 0)).unwrap());
    let (nat_inside, public) = (inside.local_addr().unwrap(), outside.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    nat(inside, outside, agent.local_addr().unwrap(), hearken_sip, stop.clone());
    let media = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    let private = "10.99.0.7:5060";
    let contact = format!("<sip:agent7@{private}>");

    // REGISTER through Hearken, from behind the NAT.
    let reg = format!(
        "REGISTER sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP {private};branch=z9hG4bKnatreg1\r\nMax-Forwards: 70\r\n\
         From: <sip:agent7@pbx.example.com>;tag=r1\r\nTo: <sip:agent7@pbx.example.com>\r\nCall-ID: natreg1@10.99.0.7\r\nCSeq: 1 REGISTER\r\n\
         Contact: {contact}\r\nExpires: 300\r\nUser-Agent: test-phone\r\nContent-Length: 0\r\n\r\n"
    );
    agent.send_to(reg.as_bytes(), nat_inside).unwrap();
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    let ok = loop {
        assert!(t0.elapsed() < Duration::from_secs(5), "no answer to REGISTER\n{}\n{}", kam.log(), h.log());
        if let Ok(n) = agent.recv(&mut buf) {
            let r = String::from_utf8_lossy(&buf[..n]).to_string();
            if !r.starts_with("SIP/2.0 1") {
                break r;
            }
        }
    };
    assert!(ok.starts_with("SIP/2.0 200"), "REGISTER: {ok}\n{}", kam.log());
    let klog = kam.log();
    let line = klog.lines().find(|l| l.contains("REGISTER of agent7")).unwrap_or_else(|| panic!("{klog}"));
    assert!(line.contains(&format!("path=[<sip:127.0.0.1:{};lr>]", h.sip_port)), "the registrar got our Path: {line}");
    assert!(line.contains(&format!("alias={}~{}~1", public.ip(), public.port())), "the Contact carries the NAT's address: {line}");

    // The agent: answers INVITEs, ACKs and BYEs, always through the NAT.
    let agent_thread = {
        let stop = stop.clone();
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 {AGENT_IP}\r\ns=-\r\nc=IN IP4 {AGENT_IP}\r\nt=0 0\r\nm=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
            media.local_addr().unwrap().port()
        );
        std::thread::spawn(move || {
            let (mut invites, mut acks, mut byes) = (0, 0, 0);
            let mut buf = vec![0u8; 65536];
            while !stop.load(Relaxed) && byes < 2 {
                let Ok(n) = agent.recv(&mut buf) else { continue };
                let Ok(m) = Message::parse(&buf[..n]) else { continue };
                let reply = match m.method() {
                    Some("INVITE") => {
                        invites += 1;
                        assert_eq!(m.uri(), Some(format!("sip:agent7@{private}").as_str()), "the alias is removed before the phone");
                        response(&m, 200, "OK", "agent7tag", &contact, &sdp)
                    }
                    Some("ACK") => {
                        acks += 1;
                        continue;
                    }
                    Some("BYE") => {
                        byes += 1;
                        response(&m, 200, "OK", "agent7tag", "", "")
                    }
                    Some(_) => response(&m, 200, "OK", "agent7tag", "", ""),
                    None => continue,
                };
                agent.send_to(&reply, nat_inside).unwrap();
            }
            (invites, acks, byes)
        })
    };

    let out = customer_calls(kam_port, 2, 1000);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    let (invites, acks, byes) = agent_thread.join().unwrap();
    out.unwrap_or_else(|e| panic!("the customer's calls: {e}\nkamailio:\n{}\nhearken:\n{}", kam.log(), h.log()));
    assert_eq!((invites, acks, byes), (2, 2, 2), "both calls and both BYEs reached the agent behind the NAT");
    wait_for(Duration::from_secs(10), "two records", || {
        serde_json::from_str::<serde_json::Value>(&h.get("/records").unwrap_or_default())
            .ok()
            .and_then(|v| v["records"].as_array().map(|a| a.len()))
            == Some(2)
    });
    let rec = latest_record(&h);
    assert_eq!((rec["agent_id"].as_str(), rec["reason"].as_str()), (Some("agent7"), Some("bye")), "{rec}");
    let m = h.get("/metrics").unwrap();
    assert!(metric(&m, "hearken_sip_contacts_aliased_total") >= 3, "the REGISTER and both 200s: {m}");
    eprintln!("NAT: REGISTER aliased to {public}, 2 calls and 2 BYEs reached the agent through it");
}

#[test]
fn a_softphone_registers_through_hearken_without_supported_path() {
    require("baresip");
    let kam_port = free_port();
    let kam = Kamailio::registrar(kam_port);
    let h = Hearken::start(kam_port, free_port(), "");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let wav = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev/d01_quick_turns/agent.wav");
    let account =
        format!("<sip:agent7@pbx.example.com>;regint=300;outbound=\"sip:127.0.0.1:{};lr\";answermode=auto;audio_codecs=PCMU", h.sip_port);
    let _phone = phone_with_account(
        &dir.path().join("agent"),
        Who { ip: AGENT_IP, port, user: "agent7", wav: &wav, rtp: media_range(10) },
        &account,
        "",
        &["-s"], // SIP trace: what the phone sends, to check it says nothing of Path
    );
    let blog = || std::fs::read_to_string(dir.path().join("agent/baresip.log")).unwrap_or_default();
    wait_for(Duration::from_secs(15), "baresip registered through Hearken", || kam.log().contains("REGISTER of agent7"));
    std::thread::sleep(Duration::from_millis(500));
    let reg = blog();
    let sent = reg.split("REGISTER sip:").nth(1).unwrap_or_else(|| panic!("baresip's REGISTER in its SIP trace:\n{reg}"));
    let sent = sent.split("\r\n\r\n").next().unwrap_or(sent).to_ascii_lowercase();
    assert!(!sent.lines().any(|l| l.starts_with("supported:") && l.contains("path")), "baresip does not say Supported: path:\n{sent}");
    let klog = kam.log();
    let line = klog.lines().find(|l| l.contains("REGISTER of agent7")).unwrap();
    assert!(line.contains(&format!("path=[<sip:127.0.0.1:{};lr>]", h.sip_port)), "Path added all the same: {line}");

    let out = customer_calls(kam_port, 1, 2000);
    out.unwrap_or_else(|e| panic!("the call to the softphone: {e}\nkamailio:\n{}\nhearken:\n{}\nbaresip:\n{}", kam.log(), h.log(), blog()));
    let rec = latest_record(&h);
    assert_eq!(rec["agent_id"], "agent7", "the registered AoR's user, not the Contact's: {rec}");
    assert_eq!((rec["input"].as_str(), rec["reason"].as_str()), (Some("relay"), Some("bye")));
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_sip_unknown_agent_byes_total"), 0);
    assert!(
        kam.log().contains(&format!("via [sip:127.0.0.1:{};lr]", h.sip_port)),
        "the registrar routed the call through Hearken:\n{}",
        kam.log()
    );
    eprintln!("baresip via Hearken to Kamailio: registered with our Path, call through Hearken, agent id {}", rec["agent_id"]);
}
