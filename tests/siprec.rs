//! SIPREC recording server (issue 10): sipp acts as the recording client (SRC) with the
//! recording INVITEs vendors send (tests/fixtures/siprec: the RFC 7866/7865 form, Cisco CUBE,
//! Oracle/Acme; written from their published captures, see its README), and the test sends the
//! RTP of a corpus call on the two m-lines (4× real time, as the other call tests do). Hearken
//! answers receive-only on its ports and analyses the call like an inline one. Also: a pause
//! (re-INVITE `a=inactive`) whose audio is not analysed, a metadata update that hands the call to
//! another agent (transfer), an SDES-SRTP recording session, two recording clients for one call,
//! and the answers a confused or hostile client gets (403, 400, 488, 481).

mod common;
use common::*;
use serde_json::Value;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siprec").join(name)).unwrap()
}

fn hearken(extra: &str) -> Hearken {
    Hearken::start(
        free_port(),
        free_port(),
        &format!("[siprec]\nenabled = true\nallow = [\"127.0.0.1\"]\nagent_aor = [\"sip:*@agents.example.com\"]\n{extra}"),
    )
}

/// The receive ports of the `n`th recording session Hearken started (from its log).
fn session_ports(h: &Hearken, n: usize, src: &mut Src) -> Vec<u16> {
    let mut ports = Vec::new();
    wait_for(Duration::from_secs(10), "recording session started", || {
        if src.sipp.as_ref().is_some_and(|t| t.is_finished()) {
            let r = src.sipp.take().unwrap().join().unwrap();
            panic!("the SRC ended before its session started: {r:?}\n{}", h.log());
        }
        let log = h.log();
        let Some(line) = log.lines().filter(|l| l.contains("recording session started")).nth(n) else { return false };
        let Some(list) = line.split("ports=[").nth(1).and_then(|r| r.split(']').next()) else { return false };
        ports = list.split(',').filter_map(|p| p.trim().parse().ok()).collect();
        true
    });
    ports
}

/// A re-INVITE phase of the sipp SRC: wait `after_ms`, then re-INVITE with `body` (`ct` its
/// Content-Type), CSeq `cseq`.
fn reinvite(after_ms: u64, cseq: u32, ct: &str, body: &str) -> String {
    format!(
        r#"  <pause milliseconds="{after_ms}"/>
  <send retrans="500">
    <![CDATA[
      INVITE sip:srs@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:src@[local_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:srs@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Max-Forwards: 70
      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src
      Content-Type: {ct}
      Content-Length: [len]

{body}
    ]]>
  </send>
  <recv response="200"/>
  <send>
    <![CDATA[
      ACK sip:srs@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:src@[local_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:srs@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"#
    )
}

/// One recording client: its sipp, and its two media sockets.
struct Src {
    sipp: Option<std::thread::JoinHandle<Result<std::process::Output, String>>>,
    media: [UdpSocket; 2],
    _dir: tempfile::TempDir,
}

/// Start sipp as an SRC sending `body` (a fixture, ports substituted) with `headers`, then
/// `phases`, then BYE after `end_ms` more.
fn src(h: &Hearken, body: &str, boundary: &str, headers: &str, phases: &str, end_ms: u64) -> Src {
    let dir = tempfile::tempdir().unwrap();
    let media = [UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap()];
    let ports = |t: &str| {
        t.replace("[media_port1]", &media[0].local_addr().unwrap().port().to_string())
            .replace("[media_port2]", &media[1].local_addr().unwrap().port().to_string())
    };
    let body = ports(body);
    let phases = format!("{}  <pause milliseconds=\"{end_ms}\"/>\n", ports(phases));
    let scen = scenario(
        dir.path(),
        "src_siprec.xml",
        &[("HEADERS", headers.to_string()), ("BOUNDARY", boundary.to_string()), ("BODY", body.trim_end().to_string()), ("PHASES", phases)],
    );
    let d = dir.path().to_path_buf();
    let remote = format!("127.0.0.1:{}", h.sip_port);
    let sipp = std::thread::spawn(move || sipp_run(&d, &scen, free_port(), &remote, &["-m", "1"], Duration::from_secs(120)));
    Src { sipp: Some(sipp), media, _dir: dir }
}

/// Send a call's two legs to `ports` from the SRC's media sockets at 4× real time, frames
/// `from..to` (RTP timestamps continue from frame 0); `each` sees every frame index.
fn send_rtp(
    src: &Src,
    ports: &[u16],
    legs: [&[i16]; 2],
    frames: std::ops::Range<usize>,
    mut each: impl FnMut(usize, &mut [u8; 160], usize),
) {
    let start = Instant::now();
    for (n, k) in frames.enumerate() {
        for (i, pcm) in legs.iter().enumerate() {
            let mut ulaw = [0u8; 160];
            for (j, s) in frame_of(pcm, k).iter().enumerate() {
                ulaw[j] = hearken::codec::g711::encode_ulaw(*s);
            }
            each(i, &mut ulaw, k);
            let pkt = hearken::rtp::build(0, k as u16, k as u32 * 160, 0x5150 + i as u32, &ulaw);
            src.media[i].send_to(&pkt, ("127.0.0.1", ports[i])).unwrap();
        }
        pace(start, 5 * (n as u64 + 1));
    }
}

fn finish(h: &Hearken, mut s: Src) {
    s.sipp.take().unwrap().join().unwrap().unwrap_or_else(|e| panic!("sipp SRC: {e}\n{}", h.log()));
}

fn records(h: &Hearken) -> Vec<Value> {
    let list: Value = serde_json::from_str(&h.get("/records").unwrap_or_default()).unwrap_or_default();
    list["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| h.get(&format!("/records/{}", r["id"])).and_then(|b| serde_json::from_str(&b).ok()))
        .collect()
}

fn wait_records(h: &Hearken, n: usize) -> Vec<Value> {
    wait_for(Duration::from_secs(30), "call records", || records(h).len() >= n);
    records(h)
}

#[test]
fn vendor_recording_sessions_are_analysed_like_inline_calls() {
    let h = hearken("[whisper.agents]\nagent7 = \"agent7-whisper-token\"\n");
    // agent7's whisper channel: the agent named by the recording metadata gets its calls.
    let (mut whisper, _) = tungstenite::connect(format!("ws://127.0.0.1:{}/whisper?token=agent7-whisper-token", h.http_port)).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(t) = whisper.get_mut() {
        t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    let (truth, cust, agent, n) = corpus_call("d02_agent_interrupts");
    let call_ms = (n as u64) * 5;
    for (i, (file, boundary, headers)) in [
        (
            "rfc7866.body",
            "hearken-siprec-boundary",
            "Require: siprec\n      Session-ID: 3b7e91c04d2a4f86b1e05c9d27a4f613;remote=00000000000000000000000000000000\n      Accept: application/sdp, application/rs-metadata, application/rs-metadata-request\n      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src",
        ),
        // CUBE sends no Require: siprec, only +sip.src.
        (
            "cisco_cube.body",
            "uniqueBoundary",
            "Cisco-Guid: 0980356114-2369851888-2316328067-3001043479\n      User-Agent: Cisco-SIPGateway/IOS-17.9.4a\n      Contact: <sip:[local_ip]:[local_port]>;+sip.src\n      Mime-Version: 1.0",
        ),
        ("oracle_acme.body", "unique-boundary-1", "Require: siprec\n      Contact: <sip:acmeSrc@[local_ip]:[local_port]>;+sip.src"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = src(&h, &fixture(file), boundary, headers, "", call_ms + 800);
        let ports = session_ports(&h, i, &mut s);
        assert_eq!(ports.len(), 2, "{file}: two receive ports");
        send_rtp(&s, &ports, [&cust, &agent], 0..n, |_, _, _| {});
        finish(&h, s);
        let recs = wait_records(&h, i + 1);
        let rec = recs.iter().max_by_key(|r| r["id"].as_u64()).unwrap();
        assert_eq!(rec["input"], "siprec", "{file}");
        assert_eq!(rec["agent_id"], "agent7", "{file}: the agent from the metadata");
        assert_eq!(rec["reason"], "bye", "{file}");
        let ratio = assert_meets_corpus(rec, &truth, file);
        eprintln!("siprec {file}: talk ratio {ratio} (truth {})", truth["metrics"]["talk_ratio_agent"]);
    }
    let mut ends = 0;
    while ends < 3 {
        let msg = whisper.read().expect("whisper messages for agent7");
        if let tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "call_end" {
                assert_eq!(v["agent"], "agent7");
                ends += 1;
            }
        }
    }
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_siprec_sessions_total"), 3);
    assert_eq!(metric(&m, "hearken_siprec_sessions_active"), 0);
    assert_eq!(metric(&m, "hearken_siprec_tap_dropped_total"), 0);
    assert!(m.contains("input=\"siprec\""), "metrics carry the input label");
}

#[test]
fn pause_transfer_srtp_and_two_recording_clients() {
    let h = hearken("");
    let (truth, cust, agent, n) = corpus_call("d01_quick_turns");
    let call_ms = (n as u64) * 5;
    let base = fixture("rfc7866.body");
    let sdp_only = |dir: &str, version: u32| {
        let sdp = base.split("Content-Type: application/sdp").nth(1).unwrap().split("--hearken-siprec-boundary").next().unwrap();
        sdp.trim().replace("a=sendonly", &format!("a={dir}")).replace("3950132417 3950132417", &format!("3950132417 {version}"))
    };

    // 1. Pause: after the call's audio, the client pauses (a=inactive), sends 3 s of loud tone
    //    anyway, resumes. The tone must not count as the customer's speech.
    let extra_frames = 150 + 100;
    let pause_at = call_ms + 300;
    let phases = format!(
        "{}{}",
        reinvite(pause_at, 102, "application/sdp", &sdp_only("inactive", 3950132418)),
        reinvite(150 * 5 + 400, 103, "application/sdp", &sdp_only("sendonly", 3950132419))
    );
    let mut s = src(
        &h,
        &base,
        "hearken-siprec-boundary",
        "Require: siprec\n      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src",
        &phases,
        100 * 5 + 600,
    );
    let ports = session_ports(&h, 0, &mut s);
    send_rtp(&s, &ports, [&cust, &agent], 0..n, |_, _, _| {});
    wait_for(Duration::from_secs(10), "paused", || metric(&h.get("/metrics").unwrap(), "hearken_siprec_pauses_total") == 1);
    let tone: Vec<i16> = (0..8000 * 4).map(|i| (8000.0 * (i as f64 * 0.3).sin()) as i16).collect();
    let silence = vec![0i16; 8000 * 4];
    // Frames n.. carry the tone on the customer's m-line while paused, then silence.
    let mut shifted = vec![0i16; n * 160];
    shifted.extend_from_slice(&tone[..150 * 160]);
    send_rtp(&s, &ports, [&shifted, &silence], n..n + 150, |_, _, _| {});
    std::thread::sleep(Duration::from_millis(500));
    send_rtp(
        &s,
        &ports,
        [&vec![0i16; (n + extra_frames) * 160], &vec![0i16; (n + extra_frames) * 160]],
        n + 150..n + extra_frames,
        |_, _, _| {},
    );
    finish(&h, s);
    let rec = wait_records(&h, 1).pop().unwrap();
    let ratio = assert_meets_corpus(&rec, &truth, "paused session");
    let paused_customer_talk = rec["summary"]["talk_time_s"]["customer"].as_f64().unwrap();
    eprintln!("siprec pause: talk ratio {ratio} (truth {}), tone while paused not counted", truth["metrics"]["talk_ratio_agent"]);

    // 2. Transfer: halfway, a metadata update hands the agent's stream from agent7 to agent9.
    let half = n / 2;
    let update = fixture("update_transfer.body");
    let mut s = src(
        &h,
        &base,
        "hearken-siprec-boundary",
        "Require: siprec\n      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src",
        &reinvite(half as u64 * 5, 102, "multipart/mixed;boundary=hearken-siprec-boundary", update.trim_end()),
        (n - half) as u64 * 5 + 800,
    );
    // The update's ports are this session's.
    let s_update_ports = session_ports(&h, 1, &mut s);
    send_rtp(&s, &s_update_ports, [&cust, &agent], 0..n, |_, _, _| {});
    finish(&h, s);
    let pause_id = rec["id"].as_u64();
    let recs: Vec<Value> = wait_records(&h, 3).into_iter().filter(|r| r["id"].as_u64() != pause_id).collect();
    let by = |a: &str| recs.iter().find(|r| r["agent_id"] == a).unwrap_or_else(|| panic!("a record for {a}: {recs:?}")).clone();
    let (first, second) = (by("agent7"), by("agent9"));
    assert_eq!(first["reason"], "transfer");
    assert_eq!(second["reason"], "bye");
    let d = |r: &Value| r["summary"]["call_duration_s"].as_f64().unwrap_or(0.0);
    assert!(d(&first) > 3.0 && d(&second) > 3.0, "each agent has its part: {} s and {} s", d(&first), d(&second));

    // 3. SDES-SRTP: RTP/SAVP m-lines with keys; the test encrypts, Hearken decrypts its copy.
    use base64::Engine;
    let keys: [Vec<u8>; 2] = [(0..30).collect(), (50..80).collect()];
    let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
    let mut savp = base.replace("RTP/AVP", "RTP/SAVP");
    for (label, key) in [("a=label:1", &keys[0]), ("a=label:2", &keys[1])] {
        savp = savp.replace(label, &format!("{label}\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}", b64(key)));
    }
    // Another recorded call: its own Session-ID.
    savp = savp.replace("6f1c2a9e0b7d4e35a81c94f2d6b3e07a", "7f1c2a9e0b7d4e35a81c94f2d6b3e07b");
    let mut s = src(
        &h,
        &savp,
        "hearken-siprec-boundary",
        "Require: siprec\n      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src",
        "",
        call_ms + 800,
    );
    let ports = session_ports(&h, 2, &mut s);
    let p = rtc_srtp::crypto::default_provider().unwrap();
    let mut ctx: Vec<_> = keys
        .iter()
        .map(|k| {
            rtc_srtp::context::Context::new(
                &k[..16],
                &k[16..],
                rtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80,
                None,
                None,
                p.crypto(),
            )
            .unwrap()
        })
        .collect();
    let start = Instant::now();
    for k in 0..n {
        for (i, pcm) in [&cust, &agent].iter().enumerate() {
            let ulaw: Vec<u8> = frame_of(pcm, k).iter().map(|s| hearken::codec::g711::encode_ulaw(*s)).collect();
            let pkt = hearken::rtp::build(0, k as u16, k as u32 * 160, 0x7770 + i as u32, &ulaw);
            let enc = ctx[i].encrypt_rtp(&pkt).unwrap().to_vec();
            s.media[i].send_to(&enc, ("127.0.0.1", ports[i])).unwrap();
        }
        pace(start, 5 * (k as u64 + 1));
    }
    finish(&h, s);
    let recs = wait_records(&h, 4);
    let rec = recs.iter().max_by_key(|r| r["id"].as_u64()).unwrap();
    let ratio = assert_meets_corpus(rec, &truth, "SDES-SRTP session");
    eprintln!("siprec SRTP: talk ratio {ratio}");
    // The same call without a pause, through the same pipeline: the paused session's customer
    // talk time is the same (3 s of tone while paused would have added 3 s).
    let plain = rec["summary"]["talk_time_s"]["customer"].as_f64().unwrap();
    assert!((paused_customer_talk - plain).abs() < 0.5, "customer talk {paused_customer_talk} s with the paused tone vs {plain} s without");

    // 4. Two recording clients for one call (redundant SBCs): both send the same call (the same
    //    Session-ID in their metadata); one record, not two.
    let twin = base.replace("6f1c2a9e0b7d4e35a81c94f2d6b3e07a", "8f1c2a9e0b7d4e35a81c94f2d6b3e07c");
    let other_src = twin.replace("m0HX4qDDT2yOFSp9kLbD9A==", "n1HX4qDDT2yOFSp9kLbD9B==");
    let mut s1 = src(
        &h,
        &twin,
        "hearken-siprec-boundary",
        "Require: siprec\n      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src",
        "",
        call_ms + 800,
    );
    let p1 = session_ports(&h, 3, &mut s1);
    let mut s2 = src(
        &h,
        &other_src,
        "hearken-siprec-boundary",
        "Require: siprec\n      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src",
        "",
        call_ms + 1500,
    );
    let p2 = session_ports(&h, 4, &mut s2);
    let start = Instant::now();
    for k in 0..n {
        for (i, pcm) in [&cust, &agent].iter().enumerate() {
            let ulaw: Vec<u8> = frame_of(pcm, k).iter().map(|s| hearken::codec::g711::encode_ulaw(*s)).collect();
            for (s, p) in [(&s1, &p1), (&s2, &p2)] {
                let pkt = hearken::rtp::build(0, k as u16, k as u32 * 160, 0x8880 + i as u32, &ulaw);
                s.media[i].send_to(&pkt, ("127.0.0.1", p[i])).unwrap();
            }
        }
        pace(start, 5 * (k as u64 + 1));
    }
    finish(&h, s1);
    finish(&h, s2);
    let recs = wait_records(&h, 5);
    std::thread::sleep(Duration::from_secs(1));
    let recs_after = records(&h);
    assert_eq!(recs_after.len(), 5, "two recording sessions of one call make one record: {recs:?}");
    let rec = recs_after.iter().max_by_key(|r| r["id"].as_u64()).unwrap();
    let ratio = assert_meets_corpus(rec, &truth, "two recording clients");
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_siprec_duplicates_total"), 1, "{m}");
    assert_eq!(metric(&m, "hearken_siprec_transfers_total"), 1);
    assert_eq!(metric(&m, "hearken_siprec_sessions_active"), 0);
    eprintln!("siprec two SRCs: one record, talk ratio {ratio}");
}

/// A raw SIP request over UDP from `src_ip`; the response's status line and headers.
fn raw(h: &Hearken, src_ip: &str, msg: &str) -> String {
    let sock = UdpSocket::bind((src_ip, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = sock.local_addr().unwrap().port();
    let msg = msg.replace("{PORT}", &port.to_string()).replace("{IP}", src_ip).replace('\n', "\r\n");
    sock.send_to(msg.as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a response");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

fn invite(call_id: &str, ct: &str, body: &str) -> String {
    format!(
        "INVITE sip:srs@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {{IP}}:{{PORT}};branch=z9hG4bK{call_id}\nFrom: <sip:src@{{IP}}>;tag=t1\nTo: <sip:srs@127.0.0.1>\nCall-ID: {call_id}\nCSeq: 1 INVITE\nMax-Forwards: 70\nRequire: siprec\nContact: <sip:src@{{IP}}:{{PORT}}>;+sip.src\nContent-Type: {ct}\nContent-Length: {}\n\n{body}",
        body.len() + body.matches('\n').count()
    )
}

#[test]
fn confused_and_hostile_recording_clients_get_clear_answers() {
    let h = hearken("");
    let good = fixture("rfc7866.body").replace("[media_port1]", "40000").replace("[media_port2]", "40002").replace("\r\n", "\n");
    let ct = "multipart/mixed;boundary=hearken-siprec-boundary";
    // Not an allowed recording client.
    let r = raw(&h, "127.0.0.3", &invite("h1", ct, &good));
    assert!(r.starts_with("SIP/2.0 403"), "{r}");
    // A multipart body without its boundary; SDP that is not SDP; no audio it can decode.
    let r = raw(&h, "127.0.0.1", &invite("h2", "multipart/mixed", &good));
    assert!(r.starts_with("SIP/2.0 400") && r.contains("Warning: 399 hearken"), "{r}");
    let r = raw(&h, "127.0.0.1", &invite("h3", ct, &good.replace("m=audio 40000 RTP/AVP 0 101", "m=audio nonsense")));
    assert!(r.starts_with("SIP/2.0 400") && r.contains("SDP"), "{r}");
    let r = raw(
        &h,
        "127.0.0.1",
        &invite("h4", ct, &good.replace("RTP/AVP 0 101", "RTP/AVP 18").replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000")),
    );
    assert!(r.starts_with("SIP/2.0 488"), "{r}");
    // Metadata that is not XML: answered (the call must not fail because of Hearken), streams by order.
    let r = raw(&h, "127.0.0.1", &invite("h5", ct, &good.replace("<recording xmlns", "<recording <<<")));
    assert!(r.starts_with("SIP/2.0 200") && r.contains("a=recvonly"), "{r}");
    // A BYE for a session that does not exist; an OPTIONS ping.
    let bye = "BYE sip:srs@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {IP}:{PORT};branch=z9hG4bKb1\nFrom: <sip:src@{IP}>;tag=t1\nTo: <sip:srs@127.0.0.1>;tag=srs5eed\nCall-ID: forgotten-after-a-restart\nCSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n";
    assert!(raw(&h, "127.0.0.1", bye).starts_with("SIP/2.0 481"));
    let options = "OPTIONS sip:srs@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {IP}:{PORT};branch=z9hG4bKo1\nFrom: <sip:src@{IP}>;tag=t1\nTo: <sip:srs@127.0.0.1>\nCall-ID: opt1\nCSeq: 1 OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n";
    let r = raw(&h, "127.0.0.1", options);
    assert!(r.starts_with("SIP/2.0 200") && r.contains("siprec"), "{r}");
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_siprec_refused_total"), 1, "{m}");
    assert_eq!(metric(&m, "hearken_siprec_malformed_total"), 2);
    assert_eq!(metric(&m, "hearken_siprec_unsupported_total"), 1);
    assert_eq!(metric(&m, "hearken_siprec_metadata_errors_total"), 1);
    assert_eq!(metric(&m, "hearken_siprec_sessions_active"), 1, "the session with unreadable metadata is up");
    // Its client never ACKs: the 200 is retransmitted, then the session ends and frees its ports.
    wait_for(Duration::from_secs(40), "unACKed session ended", || {
        metric(&h.get("/metrics").unwrap(), "hearken_siprec_sessions_active") == 0
    });
}

/// SIP over TLS with client certificates: a recording client whose certificate is signed by
/// `siprec.tls_client_ca` records; one without a certificate, or with one from another CA, does
/// not get past the handshake.
#[test]
fn recording_clients_over_mutual_tls() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let server = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let ca = |name: &str| {
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("Recording clients CA");
    let (other_ca, other_key) = ca("Someone else's CA");
    let client = |issuer: &rcgen::Certificate, issuer_key: &rcgen::KeyPair| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["sbc1.example.com".into()]).unwrap().signed_by(&key, issuer, issuer_key).unwrap();
        (cert, key)
    };
    let write = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    };
    let (cert, key, cafile) =
        (write("srs.pem", server.cert.pem()), write("srs.key", server.key_pair.serialize_pem()), write("ca.pem", ca_cert.pem()));
    let tls_port = free_port();
    let h = hearken(&format!(
        "tls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\ntls_client_ca = \"{cafile}\"\n"
    ));
    let connect = |client_cert: Option<(rcgen::Certificate, rcgen::KeyPair)>| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server.cert.der().clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match client_cert {
            Some((c, k)) => {
                b.with_client_auth_cert(vec![c.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(k.serialize_der().into())).unwrap()
            }
            None => b.with_no_client_auth(),
        };
        let tcp = std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
        rustls::StreamOwned::new(conn, tcp)
    };
    let body = fixture("rfc7866.body").replace("[media_port1]", "40100").replace("[media_port2]", "40102");
    let invite = |call_id: &str| {
        format!(
            "INVITE sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK{call_id}\r\nFrom: <sip:src@sbc1.example.com>;tag=t1\r\nTo: <sip:srs@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nRequire: siprec\r\nContact: <sips:src@127.0.0.1:5061>;+sip.src\r\nContent-Type: multipart/mixed;boundary=hearken-siprec-boundary\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let exchange = |s: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, msg: &str| -> Option<String> {
        s.write_all(msg.as_bytes()).ok()?;
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).to_string())
    };
    // A client with a certificate from the configured CA: answered.
    let mut good = connect(Some(client(&ca_cert, &ca_key)));
    let ok = exchange(&mut good, &invite("tls-1")).expect("a response over TLS");
    assert!(ok.starts_with("SIP/2.0 200") && ok.contains("a=recvonly"), "{ok}");
    let tag = ok.lines().find(|l| l.starts_with("To:")).and_then(|l| l.split("tag=").nth(1)).unwrap().trim().to_string();
    let bye = format!(
        "BYE sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtlsbye\r\nFrom: <sip:src@sbc1.example.com>;tag=t1\r\nTo: <sip:srs@127.0.0.1>;tag={tag}\r\nCall-ID: tls-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    assert!(exchange(&mut good, &bye).expect("BYE answered").starts_with("SIP/2.0 200"));
    // No certificate, or one from another CA: no SIP at all.
    assert_eq!(exchange(&mut connect(None), &invite("tls-2")), None, "no client certificate");
    assert_eq!(exchange(&mut connect(Some(client(&other_ca, &other_key))), &invite("tls-3")), None, "a certificate from another CA");
    assert_eq!(metric(&h.get("/metrics").unwrap(), "hearken_siprec_sessions_total"), 1);
    assert!(h.log().contains("handshake failed"), "refused handshakes are logged");
}
