//! Differential test of the ng control plane against rtpengine (issue 13): the same offer /
//! answer / delete sequences go to rtpengine and to Hearken, as Kamailio's module sends them; the
//! SDP replies must mean the same (compared parsed: media kinds, transports, formats, codecs,
//! direction, rtcp-mux, SDES, ICE removed, disabled streams; relay addresses and ports differ by
//! nature), and `query` / `delete` must both succeed.

mod common;
use common::rtpengine::{NgClient, Rtpengine};
use common::*;
use hearken::ng::Ben;
use hearken::sdp;

const SRTP_KEY: &str = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

fn sdp_text(ip: &str, port: u16, media: &str) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n{media}").replace("PORT", &port.to_string())
}

/// What an SDP means for a call, relay addresses and ports left out.
#[derive(Debug, PartialEq)]
struct Meaning {
    kind: String,
    proto: String,
    formats: Vec<String>,
    rtpmap: Vec<(u8, String)>,
    direction: sdp::Direction,
    rtcp_mux: bool,
    disabled: bool,
    /// SDES keys offered. The suites differ by design: rtpengine terminates SRTP and offers
    /// every suite it knows (plus DTLS); Hearken passes the parties' own keys through untouched
    /// (checked separately: its suites are among rtpengine's).
    sdes: bool,
}

fn meaning(body: &str) -> Vec<Meaning> {
    assert!(!body.contains("a=candidate") && !body.contains("a=ice-"), "ICE removed: {body}");
    let s = sdp::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {body}"));
    s.media
        .iter()
        .map(|m| {
            if m.port != 0 {
                assert_eq!(m.addr.to_string(), "127.0.0.1", "relay address: {body}");
            }
            Meaning {
                kind: m.kind.clone(),
                proto: m.proto.clone(),
                formats: m.formats.clone(),
                // A disabled stream's attributes mean nothing (rtpengine drops them, Hearken
                // keeps them as they came).
                rtpmap: if m.port == 0 { Vec::new() } else { m.rtpmap.clone() },
                direction: m.direction,
                rtcp_mux: m.rtcp_mux,
                disabled: m.port == 0,
                sdes: !m.crypto.is_empty(),
            }
        })
        .collect()
}

fn cmd(command: &str, call: &str, from: &str, to: Option<&str>, body: Option<&str>) -> Ben {
    let mut pairs = vec![
        ("command", Ben::s(command)),
        ("call-id", Ben::s(call)),
        ("from-tag", Ben::s(from)),
        ("replace", Ben::List(vec![Ben::s("origin"), Ben::s("session-connection")])),
        ("ICE", Ben::s("remove")),
        ("label", Ben::s("customer")),
    ];
    if let Some(t) = to {
        pairs.push(("to-tag", Ben::s(t)));
    }
    if let Some(b) = body {
        pairs.push(("sdp", Ben::s(b)));
    }
    Ben::dict(&pairs)
}

#[test]
fn ng_replies_mean_what_rtpengines_mean() {
    let mut rtpe = Rtpengine::start(60);
    let ng_port = free_port();
    // ng only: no SIP socket at all (sip.enabled = false).
    let h = Hearken::start_ng_only(ng_port, media_range(40));
    assert!(std::net::UdpSocket::bind(("127.0.0.1", h.sip_port)).is_ok(), "the SIP port is not bound when the proxy is off");
    let mut hk = NgClient::new(ng_port);

    let audio = "m=audio PORT RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n";
    let answer_audio = "m=audio PORT RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    let ice = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=candidate:1 1 UDP 2130706431 192.168.1.5 PORT typ host\r\n";
    // (name, [(command, from-tag, to-tag, sdp from which side: 'c' customer, 'a' agent, media)])
    type Step<'a> = (&'a str, &'a str, Option<&'a str>, char, String);
    let sequences: Vec<(&str, Vec<Step>)> = vec![
        ("plain", vec![("offer", "pbx", None, 'c', audio.into()), ("answer", "pbx", Some("ag"), 'a', answer_audio.into())]),
        (
            "hold and unhold",
            vec![
                ("offer", "pbx", None, 'c', audio.into()),
                ("answer", "pbx", Some("ag"), 'a', answer_audio.into()),
                ("offer", "pbx", Some("ag"), 'c', format!("{answer_audio}a=sendonly\r\n")),
                ("answer", "pbx", Some("ag"), 'a', format!("{answer_audio}a=recvonly\r\n")),
                ("offer", "pbx", Some("ag"), 'c', answer_audio.into()),
                ("answer", "pbx", Some("ag"), 'a', answer_audio.into()),
            ],
        ),
        (
            "re-INVITE with a codec change",
            vec![
                ("offer", "pbx", None, 'c', audio.into()),
                ("answer", "pbx", Some("ag"), 'a', answer_audio.into()),
                ("offer", "pbx", Some("ag"), 'c', "m=audio PORT RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n".into()),
                ("answer", "pbx", Some("ag"), 'a', "m=audio PORT RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n".into()),
            ],
        ),
        (
            "ICE=remove",
            vec![("offer", "pbx", None, 'c', format!("{audio}{ice}")), ("answer", "pbx", Some("ag"), 'a', format!("{answer_audio}{ice}"))],
        ),
        (
            "rtcp-mux",
            vec![
                ("offer", "pbx", None, 'c', format!("{audio}a=rtcp-mux\r\n")),
                ("answer", "pbx", Some("ag"), 'a', format!("{answer_audio}a=rtcp-mux\r\n")),
            ],
        ),
        (
            "two m-lines",
            vec![
                ("offer", "pbx", None, 'c', format!("{audio}m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")),
                ("answer", "pbx", Some("ag"), 'a', format!("{answer_audio}m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")),
            ],
        ),
        (
            "SDES-SRTP",
            vec![
                (
                    "offer",
                    "pbx",
                    None,
                    'c',
                    format!("m=audio PORT RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 {SRTP_KEY}\r\n"),
                ),
                (
                    "answer",
                    "pbx",
                    Some("ag"),
                    'a',
                    format!("m=audio PORT RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 {SRTP_KEY}\r\n"),
                ),
            ],
        ),
    ];
    for (n, (name, steps)) in sequences.iter().enumerate() {
        let call = format!("ngdiff{n}");
        for (i, (command, from, to, side, media)) in steps.iter().enumerate() {
            let (ip, port) = if *side == 'c' { ("10.1.0.1", 4000 + i as u16 * 2) } else { ("10.1.0.2", 5000 + i as u16 * 2) };
            let body = sdp_text(ip, port, media);
            let msg = cmd(command, &call, from, *to, Some(&body));
            let r = rtpe.call(&msg).expect("rtpengine answers");
            let h = hk.call(&msg);
            assert_eq!(r.str("result").as_deref(), Some("ok"), "{name} step {i}: rtpengine {r:?}");
            assert_eq!(h.str("result").as_deref(), Some("ok"), "{name} step {i}: hearken {h:?}");
            let (rs, hs) = (r.str("sdp").unwrap(), h.str("sdp").unwrap());
            let (rm, hm) = (meaning(&rs), meaning(&hs));
            assert_eq!(hm, rm, "{name} step {i} ({command}): the replies differ in meaning\nrtpengine:\n{rs}\nhearken:\n{hs}");
            let suites = |b: &str| {
                sdp::parse(b.as_bytes()).unwrap().media.iter().flat_map(|m| m.crypto.iter().map(|c| c.suite.clone())).collect::<Vec<_>>()
            };
            let rsuites = suites(&rs);
            assert!(suites(&hs).iter().all(|x| rsuites.contains(x)), "{name}: SDES suites");
            if body.contains("a=crypto") {
                assert!(hs.contains(SRTP_KEY), "{name}: Hearken passes the party's own key through: {hs}");
            }
        }
        let q = cmd("query", &call, "pbx", None, None);
        let (rq, hq) = (rtpe.call(&q).expect("query"), hk.call(&q));
        assert_eq!((rq.str("result").as_deref(), hq.str("result").as_deref()), (Some("ok"), Some("ok")), "{name}: query");
        assert!(hq.get("created").is_some() && rq.get("created").is_some());
        let d = cmd("delete", &call, "pbx", Some("ag"), None);
        let (rd, hd) = (rtpe.call(&d).expect("delete"), hk.call(&d));
        assert_eq!((rd.str("result").as_deref(), hd.str("result").as_deref()), (Some("ok"), Some("ok")), "{name}: delete");
        eprintln!("{name}: {} steps, replies equal in meaning", steps.len());
    }
    // A source outside ng.allow (127.0.0.3) gets no answer at all, and is counted.
    let stranger = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
    stranger.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    stranger.send_to(&hearken::ng::datagram("s1", &Ben::dict(&[("command", Ben::s("ping"))])), ("127.0.0.1", ng_port)).unwrap();
    assert!(stranger.recv_from(&mut [0u8; 1024]).is_err(), "no reply to a source outside ng.allow");
    wait_for(std::time::Duration::from_secs(5), "refusal counted", || {
        metric(&h.get("/metrics").unwrap_or_default(), "hearken_ng_refused_total") == 1
    });
    // Both answer an unknown call the same way: an error.
    let q = cmd("query", "never-offered", "x", None, None);
    assert_eq!(rtpe.call(&q).and_then(|r| r.str("result")).as_deref(), Some("error"));
    assert_eq!(hk.call(&q).str("result").as_deref(), Some("error"));
}
