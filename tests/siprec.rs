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
        .filter_map(|r| h.get(&format!("/records/{}", r["uid"].as_str().unwrap_or_default())).and_then(|b| serde_json::from_str(&b).ok()))
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

/// SIPREC over a lossy UDP link: a forwarder in the test drops one datagram in five, both ways,
/// between sipp (the SRC) and Hearken. Every recording session still starts and ends: sipp
/// retransmits its INVITE and BYE, Hearken its 200 until the ACK and, for a BYE whose 200 was
/// lost, the 200 again (not 481).
#[test]
fn recording_sessions_over_a_lossy_link() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let h = hearken("");
    let fwd = UdpSocket::bind("127.0.0.1:0").unwrap();
    fwd.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let fwd_addr = fwd.local_addr().unwrap();
    let sipp_port = free_port();
    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let relay = {
        let (stop, dropped, sip) = (stop.clone(), dropped.clone(), h.sip_port);
        std::thread::spawn(move || {
            let (mut rng, mut buf) = (5u64, vec![0u8; 65536]);
            while !stop.load(Relaxed) {
                let Ok((n, from)) = fwd.recv_from(&mut buf) else { continue };
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if (rng >> 33) % 5 == 0 {
                    dropped.fetch_add(1, Relaxed);
                    continue;
                }
                let to = if from.port() == sip { ("127.0.0.1", sipp_port) } else { ("127.0.0.1", sip) };
                let _ = fwd.send_to(&buf[..n], to);
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    // Each session records a call of its own (its own sipSessionID and group).
    let body = fixture("rfc7866.body")
        .replace("[media_port1]", "40400")
        .replace("[media_port2]", "40402")
        .replace("<sipSessionID>6f1c2a9e", "<sipSessionID>[call_number]-6f1c2a9e")
        .replace("group_id=\"XS4Kk8QXSwih9uO5fC1OEA==\"", "group_id=\"[call_number]-XS4Kk8QXSwih9uO5fC1OEA==\"");
    let scen = scenario(
        dir.path(),
        "src_siprec.xml",
        &[
            ("HEADERS", "Require: siprec\n      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src".into()),
            ("BOUNDARY", "hearken-siprec-boundary".into()),
            ("BODY", body.trim_end().to_string()),
            ("PHASES", "  <pause milliseconds=\"1500\"/>\n".into()),
        ],
    );
    let sessions = 20;
    let out = sipp_run(
        dir.path(),
        &scen,
        sipp_port,
        &fwd_addr.to_string(),
        &["-m", &sessions.to_string(), "-r", "4", "-l", "10"],
        Duration::from_secs(180),
    );
    stop.store(true, Relaxed);
    relay.join().unwrap();
    out.unwrap_or_else(|e| panic!("every session over the lossy link: {e}\n{}", h.log()));
    wait_for(Duration::from_secs(40), "every session ended", || metric(&h.get("/metrics").unwrap(), "hearken_siprec_sessions_active") == 0);
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_siprec_sessions_total"), sessions, "{m}");
    let recs = wait_records(&h, sessions as usize);
    let byes = recs.iter().filter(|r| r["reason"] == "bye").count();
    eprintln!("siprec lossy link: {sessions} of {sessions} sessions, {byes} ended by BYE, {} datagrams dropped", dropped.load(Relaxed));
    assert_eq!(byes, sessions as usize, "every session ended by its BYE");
    assert!(dropped.load(Relaxed) >= 20, "the link lost datagrams");
}

/// Hearken is killed (SIGKILL) in the middle of a recording session and started again. The
/// recording client keeps streaming to the old ports for a while (nothing answers there, and
/// nothing is analysed from it), its BYE for the old session gets 481 (the dialog is gone, as
/// RFC 3261 says), and the recording session it starts again is analysed from then on. The
/// session the crash cut is recorded as interrupted (durable records).
#[test]
fn restart_during_a_recording_session() {
    let mut h = hearken("");
    let (_truth, cust, agent, n) = corpus_call("d02_agent_interrupts");
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    sip.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let me = sip.local_addr().unwrap();
    let media = [UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap()];
    let body = fixture("rfc7866.body")
        .replace("[media_port1]", &media[0].local_addr().unwrap().port().to_string())
        .replace("[media_port2]", &media[1].local_addr().unwrap().port().to_string())
        .replace("\r\n", "\n");
    let request = |h: &Hearken, m: String| -> String {
        let m = m.replace("{IP}", "127.0.0.1").replace("{PORT}", &me.port().to_string()).replace('\n', "\r\n");
        sip.send_to(m.as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
        let mut buf = [0u8; 8192];
        loop {
            let k = sip.recv(&mut buf).expect("a response");
            let r = String::from_utf8_lossy(&buf[..k]).to_string();
            if !r.starts_with("SIP/2.0 100") {
                return r;
            }
        }
    };
    let ports = |ok: &str| -> Vec<u16> {
        ok.lines().filter_map(|l| l.strip_prefix("m=audio ")).filter_map(|l| l.split(' ').next()?.parse().ok()).collect()
    };
    let tag = |ok: &str| ok.lines().find(|l| l.starts_with("To:")).and_then(|l| l.split("tag=").nth(1)).unwrap().trim().to_string();
    let ct = "multipart/mixed;boundary=hearken-siprec-boundary";
    let in_dialog = |method: &str, call_id: &str, cseq: u32, tag: &str| {
        format!(
            "{method} sip:srs@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {{IP}}:{{PORT}};branch=z9hG4bK{method}{call_id}\nFrom: <sip:src@{{IP}}>;tag=t1\nTo: <sip:srs@127.0.0.1>;tag={tag}\nCall-ID: {call_id}\nCSeq: {cseq} {method}\nMax-Forwards: 70\nContent-Length: 0\n\n"
        )
    };
    let stream = |ports: &[u16], frames: std::ops::Range<usize>| {
        let start = Instant::now();
        for (i, k) in frames.enumerate() {
            for (leg, pcm) in [&cust, &agent].iter().enumerate() {
                let ulaw: Vec<u8> = frame_of(pcm, k).iter().map(|s| hearken::codec::g711::encode_ulaw(*s)).collect();
                let pkt = hearken::rtp::build(0, k as u16, k as u32 * 160, 0x5150 + leg as u32, &ulaw);
                let _ = media[leg].send_to(&pkt, ("127.0.0.1", ports[leg]));
            }
            pace(start, 5 * (i as u64 + 1));
        }
    };

    let ack = |h: &Hearken, call_id: &str, tag: &str| {
        let m =
            in_dialog("ACK", call_id, 1, tag).replace("{IP}", "127.0.0.1").replace("{PORT}", &me.port().to_string()).replace('\n', "\r\n");
        sip.send_to(m.as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    };
    let ok = request(&h, invite("before-crash", ct, &body));
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let (old_ports, old_tag) = (ports(&ok), tag(&ok));
    ack(&h, "before-crash", &old_tag);
    let half = n / 2;
    stream(&old_ports, 0..half);
    assert_eq!(h.calls().len(), 1, "the recording session is a live call");

    h.kill9_and_restart();
    // The client has not noticed: its audio keeps going to the old ports for a second.
    stream(&old_ports, half..half + 50);
    assert!(h.calls().is_empty(), "no call from audio without a session: {:?}", h.calls());
    let gone = request(&h, in_dialog("BYE", "before-crash", 2, &old_tag));
    assert!(gone.starts_with("SIP/2.0 481"), "the old dialog is gone: {gone}");

    // The client records the call again, with a new session: analysed from there on.
    let ok = request(&h, invite("after-restart", ct, &body));
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let (new_ports, new_tag) = (ports(&ok), tag(&ok));
    ack(&h, "after-restart", &new_tag);
    stream(&new_ports, half + 50..n);
    let bye = request(&h, in_dialog("BYE", "after-restart", 2, &new_tag));
    assert!(bye.starts_with("SIP/2.0 200"), "{bye}");
    // Two records: the session the crash cut (interrupted, durable records) and the new one.
    let recs = wait_records(&h, 2);
    assert_eq!(recs.len(), 2, "{recs:?}");
    let cut = recs.iter().find(|r| r["state"] == "interrupted").unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!((cut["agent_id"].as_str(), cut["reason"].as_str()), (Some("agent7"), Some("restart")));
    let rec = recs.iter().find(|r| r["reason"] == "bye").unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!((rec["input"].as_str(), rec["agent_id"].as_str(), rec["reason"].as_str()), (Some("siprec"), Some("agent7"), Some("bye")));
    let dur = rec["summary"]["call_duration_s"].as_f64().unwrap();
    let expect = (n - half - 50) as f64 * 0.02;
    assert!((dur - expect).abs() < 1.5, "the record covers the audio after the restart: {dur} s, expected about {expect} s");
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_siprec_sessions_total"), 1);
    assert_eq!(metric(&m, "hearken_siprec_sessions_active"), 0);
    eprintln!("siprec restart: old BYE 481, new session analysed, record {dur:.1} s (expected {expect:.1} s)");
}

/// The recording client OpenSIPS's `siprec` module is, with its media plane real: a call runs
/// through rtpengine (offer/answer as a proxy's rtpengine module sends them), and the recording
/// session is set up the way OpenSIPS does it (modules/siprec, read from its source at
/// 8f4f1e1b; OpenSIPS itself is not packaged for Debian): rtpengine `subscribe request` with
/// flags `all` and `siprec` gives the SDP (one `m=` per party, `a=label`, `a=sendonly`,
/// connection lines per m-line), the INVITE carries it and the metadata OpenSIPS writes
/// (`OSS-unique-boundary-42`, lowercase `datamode`, single-quoted namespace, tab indents, labels
/// tied to participants through rtpengine's `tag-medias`), and Hearken's answer goes back to
/// rtpengine as `subscribe answer`. The audio Hearken analyses is what rtpengine forks.
#[test]
fn opensips_style_recording_with_rtpengine_forking_the_media() {
    use common::rtpengine::Rtpengine;
    use hearken::ng::Ben;
    let mut rtp = Rtpengine::start(30);
    let h = hearken("");
    let (truth, cust, agent, n) = corpus_call("d06_response_latency");
    let (cs, ag) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
    let call_id = "a84b4c76e66710@pc33.example.com";
    let (cust_to, agent_to) =
        rtp.setup(call_id, ("127.0.0.1", cs.local_addr().unwrap().port()), ("127.0.0.1", ag.local_addr().unwrap().port()));

    let sub = rtp
        .call(&Ben::dict(&[
            ("command", Ben::s("subscribe request")),
            ("call-id", Ben::s(call_id)),
            ("flags", Ben::List(vec![Ben::s("all"), Ben::s("siprec")])),
        ]))
        .expect("subscribe request answered");
    assert_eq!(sub.str("result").as_deref(), Some("ok"), "{sub:?}");
    let sdp = sub.str("sdp").unwrap();
    let sub_tag = sub.str("to-tag").unwrap();
    // rtpengine's labels per monologue tag: the caller (from-tag `pbx`) is the customer.
    let mut labels = std::collections::HashMap::new();
    if let Some(Ben::List(tms)) = sub.get("tag-medias") {
        for tm in tms {
            if let Some(Ben::List(ms)) = tm.get("medias") {
                for m in ms {
                    labels.insert(tm.str("tag").unwrap(), m.str("label").unwrap());
                }
            }
        }
    }
    let (cl, al) = (labels["pbx"].clone(), labels["agent"].clone());
    assert!(sdp.contains(&format!("a=label:{cl}")) && sdp.contains("a=sendonly"), "{sdp}");

    let (sess, p_cust, p_agent, s_cust, s_agent) = (
        "Hx0pGJ3bQkC2C6b3bnqS3w==",
        "t7b1p4n0SYqkK1xq8M8m2g==",
        "Zk0dV2m+RZ2sXh2mD8L0vA==",
        "Q1n2m0pZQ4yH7hQ6cVb5dA==",
        "uD3kz1Y7T0qf9cJrW2m3xg==",
    );
    let at = "2026-11-29T16:15:26+0000";
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<recording xmlns='urn:ietf:params:xml:ns:recording:1'>\r\n\
         \t<datamode>complete</datamode>\r\n\
         \t<session session_id=\"{sess}\">\r\n\t\t<sipSessionID>{call_id}</sipSessionID>\r\n\t</session>\r\n\
         \t<participant participant_id=\"{p_cust}\">\r\n\t\t<nameID aor=\"sip:+15551234567@carrier.example.net\">\r\n\t\t\t<name>Alice</name>\r\n\t\t</nameID>\r\n\t</participant>\r\n\
         \t<participant participant_id=\"{p_agent}\">\r\n\t\t<nameID aor=\"sip:agent7@agents.example.com\"/>\r\n\t</participant>\r\n\
         \t<stream stream_id=\"{s_cust}\" session_id=\"{sess}\">\r\n\t\t<label>{cl}</label>\r\n\t</stream>\r\n\
         \t<stream stream_id=\"{s_agent}\" session_id=\"{sess}\">\r\n\t\t<label>{al}</label>\r\n\t</stream>\r\n\
         \t<sessionrecordingassoc session_id=\"{sess}\">\r\n\t\t<associate-time>{at}</associate-time>\r\n\t</sessionrecordingassoc>\r\n\
         \t<participantsessionassoc participant_id=\"{p_cust}\" session_id=\"{sess}\">\r\n\t\t<associate-time>{at}</associate-time>\r\n\t</participantsessionassoc>\r\n\
         \t<participantsessionassoc participant_id=\"{p_agent}\" session_id=\"{sess}\">\r\n\t\t<associate-time>{at}</associate-time>\r\n\t</participantsessionassoc>\r\n\
         \t<participantstreamassoc participant_id=\"{p_cust}\">\r\n\t\t<send>{s_cust}</send>\r\n\t\t<recv>{s_agent}</recv>\r\n\t</participantstreamassoc>\r\n\
         \t<participantstreamassoc participant_id=\"{p_agent}\">\r\n\t\t<send>{s_agent}</send>\r\n\t\t<recv>{s_cust}</recv>\r\n\t</participantstreamassoc>\r\n\
         </recording>"
    );
    let b = "OSS-unique-boundary-42";
    let body = format!(
        "--{b}\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--{b}\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{xml}\r\n--{b}--\r\n"
    );
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    sip.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let me = sip.local_addr().unwrap();
    let srs = format!("sip:srs@127.0.0.1:{}", h.sip_port);
    let (rs_call, from_tag) = ("B2B.421.7784823.1764433000.1804289383", "9f86d081884c7d659a2feaa0c55ad015-a1b2");
    let invite = format!(
        "INVITE {srs} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK1a2b.3c4d.0\r\nTo: <{srs}>\r\nFrom: <{srs}>;tag={from_tag}\r\n\
         CSeq: 1 INVITE\r\nCall-ID: {rs_call}\r\nMax-Forwards: 70\r\nContent-Length: {}\r\nUser-Agent: OpenSIPS (4.0.0 (x86_64/linux))\r\n\
         Require: siprec\r\nContent-Type: multipart/mixed;boundary={b}\r\nContact: <sip:{me}>;+sip.src\r\n\r\n{body}",
        body.len()
    );
    sip.send_to(invite.as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    let mut buf = [0u8; 8192];
    let ok = loop {
        let k = sip.recv(&mut buf).expect("the SRS answers");
        let r = String::from_utf8_lossy(&buf[..k]).to_string();
        if !r.starts_with("SIP/2.0 100") {
            break r;
        }
    };
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}\n{}", h.log());
    let tag = ok.lines().find(|l| l.starts_with("To:")).and_then(|l| l.split("tag=").nth(1)).unwrap().trim().to_string();
    let answer_sdp = ok.split("\r\n\r\n").nth(1).unwrap().to_string();
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} {srs} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{method}.{cseq}\r\nTo: <{srs}>;tag={tag}\r\nFrom: <{srs}>;tag={from_tag}\r\n\
             CSeq: {cseq} {method}\r\nCall-ID: {rs_call}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\nContact: <sip:{me}>;+sip.src\r\n\r\n"
        )
    };
    sip.send_to(in_dialog("ACK", 1).as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    let ans = rtp
        .call(&Ben::dict(&[
            ("command", Ben::s("subscribe answer")),
            ("call-id", Ben::s(call_id)),
            ("to-tag", Ben::s(&sub_tag)),
            ("sdp", Ben::s(&answer_sdp)),
        ]))
        .expect("subscribe answer answered");
    assert_eq!(ans.str("result").as_deref(), Some("ok"), "{ans:?}\n{answer_sdp}");

    // The call's audio through rtpengine, 4× real time; rtpengine forks it to Hearken.
    let start = Instant::now();
    for k in 0..n {
        for (sock, pcm, to, ssrc) in [(&cs, &cust, cust_to, 0x1111u32), (&ag, &agent, agent_to, 0x2222)] {
            let ulaw: Vec<u8> = frame_of(pcm, k).iter().map(|s| hearken::codec::g711::encode_ulaw(*s)).collect();
            sock.send_to(&hearken::rtp::build(0, k as u16, k as u32 * 160, ssrc, &ulaw), ("127.0.0.1", to)).unwrap();
        }
        pace(start, 5 * (k as u64 + 1));
    }
    std::thread::sleep(Duration::from_millis(300));
    sip.send_to(in_dialog("BYE", 2).as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    let k = sip.recv(&mut buf).expect("BYE answered");
    assert!(String::from_utf8_lossy(&buf[..k]).starts_with("SIP/2.0 200"));
    let recs = wait_records(&h, 1);
    let rec = &recs[0];
    assert_eq!((rec["input"].as_str(), rec["agent_id"].as_str(), rec["reason"].as_str()), (Some("siprec"), Some("agent7"), Some("bye")));
    let ratio = assert_meets_corpus(rec, &truth, "rtpengine-forked SIPREC");
    eprintln!(
        "siprec via rtpengine subscribe (labels customer {cl}, agent {al}): talk ratio {ratio} (truth {})",
        truth["metrics"]["talk_ratio_agent"]
    );
}
