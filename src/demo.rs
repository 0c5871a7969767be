//! `hearken demo-call`: drives one real call through a running Hearken over loopback, for a
//! newcomer to see it work: a PBX (SIP UAC + RTP) and an agent phone (SIP UAS + RTP) play a
//! two-party conversation through the relay in real time, while the agent's whisper channel is
//! printed as it arrives; at the end the call record and the main Prometheus figures are shown.
//!
//! Audio: a corpus conversation when ../shared/corpus is next to the checkout, else an English
//! dialogue synthesised with espeak-ng (installed by `make run`), with the agent talking over
//! the customer once.
//!
//! Not here: anything the daemon needs — this is a client of the daemon's public interfaces.

use crate::analysis::wav;
use crate::config::Config;
use crate::sip::message::{Message, SipUri};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The two legs of the demo conversation, 8 kHz.
fn conversation(workdir: &Path) -> Result<(Vec<i16>, Vec<i16>, String)> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev/d02_agent_interrupts");
    if corpus.join("customer.wav").exists() {
        let c = wav::read(&corpus.join("customer.wav"))?.samples.remove(0);
        let a = wav::read(&corpus.join("agent.wav"))?.samples.remove(0);
        return Ok((c, a, format!("corpus call {}", corpus.display())));
    }
    let say = |text: &str, name: &str| -> Result<Vec<i16>> {
        let raw = workdir.join(format!("{name}-raw.wav"));
        let out = workdir.join(format!("{name}.wav"));
        let ok = std::process::Command::new("espeak-ng").args(["-v", "en-us", "-s", "150", "-w"]).arg(&raw).arg(text).status();
        if !ok.map(|s| s.success()).unwrap_or(false) {
            bail!("espeak-ng is needed for the demo audio (run `make run`, which installs it)");
        }
        let ok = std::process::Command::new("sox")
            .arg(&raw)
            .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
            .arg(&out)
            .status();
        if !ok.map(|s| s.success()).unwrap_or(false) {
            bail!("sox is needed for the demo audio (run `make run`, which installs it)");
        }
        Ok(wav::read(&out)?.samples.remove(0))
    };
    let lines: [(&str, f64, &str); 5] = [
        ("agent", 0.5, "Thank you for calling, this is Sam. How can I help you today?"),
        (
            "customer",
            4.5,
            "Hi. My internet has been dropping every evening for a week, and I have already restarted the router twice, and it still",
        ),
        ("agent", 8.0, "Okay, okay, I can see your account here, let me just run a line test for you."),
        ("customer", 15.0, "Right. It usually happens around eight o'clock."),
        ("agent", 31.0, "Thanks for waiting. The line test shows errors, so I will book an engineer for tomorrow morning."),
    ];
    let (mut c, mut a) = (vec![0i16; 8000 * 40], vec![0i16; 8000 * 40]);
    for (i, (who, at, text)) in lines.iter().enumerate() {
        let pcm = say(text, &format!("line{i}"))?;
        let leg = if *who == "agent" { &mut a } else { &mut c };
        let o = (*at * 8000.0) as usize;
        for (k, s) in pcm.iter().enumerate() {
            if let Some(x) = leg.get_mut(o + k) {
                *x = *s;
            }
        }
    }
    Ok((c, a, "synthesised dialogue (espeak-ng)".into()))
}

fn recv_sip(sock: &UdpSocket, want: impl Fn(&Message) -> bool, what: &str) -> Result<(Message, SocketAddr)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if let Ok(m) = Message::parse(&buf[..n]) {
                if want(&m) {
                    return Ok((m, from));
                }
            }
        }
    }
    bail!("no {what} from Hearken within 10 s: is it running with the default config (make run)?")
}

fn sdp(port: u16) -> String {
    format!("v=0\r\no=demo 1 1 IN IP4 127.0.0.1\r\ns=demo\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")
}

fn relay_port(m: &Message) -> Result<SocketAddr> {
    let s = crate::sdp::parse(&m.body).context("SDP from Hearken")?;
    let a = s.media.first().ok_or_else(|| anyhow!("no m-line in Hearken's SDP"))?;
    Ok(SocketAddr::new(a.addr, a.port))
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Print the agent's whisper messages as they come.
fn whisper_printer(http: &str, token: &str) -> Option<std::thread::JoinHandle<()>> {
    let url = format!("ws://{http}/whisper?token={token}");
    let (mut ws, _) = tungstenite::connect(url).ok()?;
    Some(std::thread::spawn(move || {
        while let Ok(m) = ws.read() {
            let tungstenite::Message::Text(t) = m else { continue };
            use crate::publish::whisper::WhisperMessage as W;
            let Ok(m) = serde_json::from_str::<W>(&t) else {
                println!("  .. (message not understood)");
                continue;
            };
            match m {
                W::Nudge { agent, text, .. } => println!("  >> NUDGE to {agent}: {text}"),
                W::Event { event, .. } => {
                    let v = serde_json::to_value(&event).unwrap_or_default();
                    println!("  .. event {} at {:.1} s", v["kind"].as_str().unwrap_or("?"), v["at"].as_f64().unwrap_or(0.0));
                }
                W::Snapshot { .. } => {}
                W::CallEnd { record, .. } => {
                    let t = &record.summary.turns;
                    let notes: Vec<&str> = record.notes.iter().map(|n| n.text.as_str()).collect();
                    println!(
                        "  .. call summary: agent talk share {:?}, interruptions by agent {}, post-call notes: {notes:?}",
                        t.talk_ratio_agent, t.interruptions.by_agent
                    );
                    return;
                }
                other => println!("  .. {}", serde_json::to_value(&other).map(|v| v["type"].to_string()).unwrap_or_default()),
            }
        }
    }))
}

pub fn run(config: Option<PathBuf>) -> Result<()> {
    let cfg = Config::load(config.as_deref())?;
    let hearken = SocketAddr::new(cfg.sip_advertise(), cfg.sip.listen.port());
    let pbx_addr: SocketAddr = cfg
        .pbx
        .addresses
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("the demo plays the PBX: pbx.addresses[0] must be ip:port (it is in config/hearken.toml)"))?;
    let agent_route =
        cfg.agents.route.as_deref().and_then(crate::sip::proxy::Target::parse).ok_or_else(|| anyhow!("the demo needs agents.route"))?;
    let agent_addr: SocketAddr =
        format!("{}:{}", agent_route.host, agent_route.port).parse().context("agents.route must be ip:port for the demo")?;
    let http = cfg.http.listen.clone();
    let token = cfg.whisper.agents.get("agent7").cloned();

    let work = std::env::temp_dir().join(format!("hearken-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let (cust, agent, source) = conversation(&work)?;
    println!("Hearken demo: one call through {hearken}, audio: {source} ({:.0} s)", cust.len() as f64 / 8000.0);

    let printer = match &token {
        Some(t) => whisper_printer(&http, t),
        None => None,
    };
    if printer.is_some() {
        println!("Listening on the whisper channel as agent7 (ws://{http}/whisper?token=...)");
    }
    play_call(hearken, pbx_addr, agent_addr, "agent7", &cust, &agent, |_| {
        println!("Call up. Playing both legs in real time; the agent interrupts the customer early on...");
    })?;
    println!("Call ended.");
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(list) = http_get(&http, "/records") {
        let v: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
        if let Some(last) = v["records"].as_array().and_then(|a| a.last()) {
            println!("Call record (http://{http}/records/{}): {}", last["id"], last);
        }
    }
    if let Some(m) = http_get(&http, "/metrics") {
        println!("A few Prometheus lines (http://{http}/metrics):");
        for l in m.lines().filter(|l| {
            !l.starts_with('#')
                && (l.starts_with("hearken_interruptions_total")
                    || l.starts_with("hearken_nudges_total")
                    || l.starts_with("hearken_calls_analysed_total")
                    || l.starts_with("hearken_relay_packets_forwarded_total"))
        }) {
            println!("  {l}");
        }
    }
    drop(printer);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Play one call through Hearken: a PBX at `pbx_addr` calls `agent_id` (routed by Hearken to
/// the phone at `agent_addr`), both legs stream their audio as PCMU in real time, the PBX hangs
/// up. `on_answer` runs once the call is up; returns when the media started (wall clock), so a
/// caller can relate audio positions to arrival times.
pub fn play_call(
    hearken: SocketAddr,
    pbx_addr: SocketAddr,
    agent_addr: SocketAddr,
    agent_id: &str,
    cust: &[i16],
    agent: &[i16],
    on_answer: impl FnOnce(Instant),
) -> Result<Instant> {
    let pbx = UdpSocket::bind(pbx_addr).with_context(|| format!("bind the demo PBX at {pbx_addr}"))?;
    let phone = UdpSocket::bind(agent_addr).with_context(|| format!("bind the demo agent phone at {agent_addr}"))?;
    let pbx_media = UdpSocket::bind("127.0.0.1:0")?;
    let phone_media = UdpSocket::bind("127.0.0.1:0")?;

    // INVITE from the PBX to agent7 via Hearken.
    // Unique per call (a process may play several): Call-ID, tags and branches.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let uniq = format!(
        "{}x{n}x{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
    );
    let call_id = format!("demo-{uniq}@127.0.0.1");
    let body = sdp(pbx_media.local_addr()?.port());
    let invite = format!(
        "INVITE sip:{agent_id}@{hearken} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx_addr};branch=z9hG4bKdemo1{uniq}\r\nMax-Forwards: 70\r\nFrom: \"Demo Customer\" <sip:customer@{pbx_addr}>;tag=pbx{uniq}\r\nTo: <sip:{agent_id}@{hearken}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@{pbx_addr}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    pbx.send_to(invite.as_bytes(), hearken)?;
    let (inv, from) = recv_sip(&phone, |m| m.method() == Some("INVITE"), "INVITE at the agent phone")?;
    let to_agent = relay_port(&inv)?;
    let mut ok = inv.response(200, "OK", Some("phone1"));
    for rr in inv.values("record-route") {
        ok.push_back("Record-Route", rr);
    }
    ok.push_back("Contact", format!("<sip:{agent_id}@{agent_addr}>"));
    ok.set("content-type", "Content-Type", "application/sdp");
    ok.body = sdp(phone_media.local_addr()?.port()).into_bytes();
    phone.send_to(&ok.to_bytes(), from)?;
    let (answer, _) = recv_sip(&pbx, |m| m.status() == Some(200), "200 OK at the PBX")?;
    let to_pbx_side = relay_port(&answer)?;
    let routes: Vec<String> = answer.values("record-route").into_iter().rev().collect();
    let to_tag = answer.header("to").and_then(|t| crate::sip::message::param(t, "tag")).unwrap_or_default();
    let contact = answer
        .header("contact")
        .and_then(SipUri::parse)
        .map(|u| format!("sip:{agent_id}@{}:{}", u.host, u.port.unwrap_or(5060)))
        .unwrap_or(format!("sip:{agent_id}@{agent_addr}"));
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        let route: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
        format!(
            "{method} {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx_addr};branch={branch}\r\nMax-Forwards: 70\r\n{route}From: \"Demo Customer\" <sip:customer@{pbx_addr}>;tag=pbx{uniq}\r\nTo: <sip:{agent_id}@{hearken}>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    pbx.send_to(in_dialog("ACK", 1, &format!("z9hG4bKdemo2{uniq}")).as_bytes(), hearken)?;
    let start = Instant::now();
    on_answer(start);

    // Both legs, 20 ms PCMU packets, real time.
    let n = cust.len().max(agent.len()) / 160;
    for k in 0..n {
        for (pcm, sock, to, ssrc) in [(cust, &pbx_media, to_pbx_side, 0x0c0f_fee0u32), (agent, &phone_media, to_agent, 0x0a9e_0700)] {
            let payload: Vec<u8> =
                pcm.get(k * 160..k * 160 + 160).unwrap_or(&[0; 160]).iter().map(|&s| crate::codec::g711::encode_ulaw(s)).collect();
            sock.send_to(&crate::rtp::build(0, k as u16, (k * 160) as u32, ssrc, &payload), to)?;
        }
        let due = start + Duration::from_millis(20 * (k as u64 + 1));
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
    }
    pbx.send_to(in_dialog("BYE", 2, &format!("z9hG4bKdemo3{uniq}")).as_bytes(), hearken)?;
    let (bye, bye_from) = recv_sip(&phone, |m| m.method() == Some("BYE"), "BYE at the agent phone")?;
    phone.send_to(&bye.response(200, "OK", None).to_bytes(), bye_from)?;
    let _ = recv_sip(&pbx, |m| m.status() == Some(200), "200 OK to BYE")?;
    Ok(start)
}
