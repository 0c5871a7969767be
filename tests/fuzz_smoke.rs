//! Stable stand-in for the cargo-fuzz targets: every `hearken::fuzzing` body runs over the seed
//! corpus in `fuzz/seeds/<target>/` and over deterministic mutations of it (xorshift PRNG with a
//! fixed seed), and the seeds themselves are checked to parse the way a real peer's traffic must.

use hearken::call::EndReason;
use hearken::fuzzing::{self, RECORD_SEPARATOR, RELAY, RELAY_PORTS};
use hearken::io::sip::StreamFramer;
use hearken::rtp::{self, Packet};
use hearken::sdp::{self, Direction};
use hearken::sip::message::{Message, ParseError};
use hearken::sip::proxy::{Action, Dest};
use std::path::Path;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform-ish in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("dir entry").path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("seed readable"))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 4, "too few seeds for {target}");
    out
}

fn seed<'a>(all: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &all.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no seed {name}")).1
}

const INSERTS: &[&[u8]] = &[
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\n\n",
    b"\r\n ",
    b"\r\n\t",
    b":",
    b",",
    b"\0",
    b" ",
    b";",
    b"<",
    b">",
    b"\"",
    b"=",
    b"/",
    b"\xff",
    b"\xc3",
    b"[",
    b"]",
    b"@",
    b"\\",
];
const NUMBERS: &[&[u8]] = &[
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"4294967296",
    b"65536",
    b"65535",
    b"70000",
    b"-1",
    b"+0",
    b"0",
    b"",
    b" 12",
    b"0x10",
];
const BYTES: &[u8] = &[0x00, 0xff, 0x7f, 0x80, 0x81, 0xbf, 0xc0, 0xc8, 0xc9, 0xdf, 0xe0, 0x20];

fn line_bounds(data: &[u8], at: usize) -> (usize, usize) {
    let start = data[..at].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let end = data[at..].iter().position(|b| *b == b'\n').map_or(data.len(), |p| at + p + 1);
    (start, end)
}

/// One to three random edits of `data`; `others` are spliced from.
fn mutate(rng: &mut Rng, data: &[u8], others: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(d.len() + 1);
        match rng.below(12) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 => d.truncate(at),
            2 => {
                let ins = rng.pick(INSERTS);
                d.splice(at..at, ins.iter().copied());
            }
            3 if !d.is_empty() => {
                // Duplicate a line.
                let (s, e) = line_bounds(&d, at.min(d.len() - 1));
                let line = d[s..e].to_vec();
                d.splice(e..e, line);
            }
            4 if !d.is_empty() => {
                let (s, e) = line_bounds(&d, at.min(d.len() - 1));
                d.drain(s..e);
            }
            5 => {
                // Replace a run of digits (lengths, ports, codes, CSeq) with an odd number;
                // half the time the one after a Content-Length header.
                let from = find(&d, b"Content-Length:").or_else(|| find(&d, b"\nl:")).filter(|_| rng.below(2) == 0).unwrap_or(at);
                if let Some(s) = d[from.min(d.len())..].iter().position(u8::is_ascii_digit) {
                    let s = from + s;
                    let len = d[s..].iter().take_while(|b| b.is_ascii_digit()).count();
                    let n = rng.pick(NUMBERS);
                    d.splice(s..s + len, n.iter().copied());
                }
            }
            6 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = *rng.pick(BYTES);
            }
            7 => {
                let (_, other) = rng.pick(others);
                if !other.is_empty() {
                    let s = rng.below(other.len());
                    let e = s + rng.below(other.len() - s + 1).min(200);
                    d.splice(at..at, other[s..e].iter().copied());
                }
            }
            8 => {
                d = if rng.below(2) == 0 { fuzzing::replace_all(&d, b"\r\n", b"\n") } else { fuzzing::replace_all(&d, b"\n", b"\r\n") };
            }
            9 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(d.len() + 1);
                    d.insert(at, rng.next() as u8);
                }
            }
            10 if d.len() >= 4 => {
                // Binary formats: a plausible header byte or a 16-bit length word.
                let i = rng.below(d.len() - 1);
                let word = (rng.below(0x40) as u16).to_be_bytes();
                d[i..i + 2].copy_from_slice(&word);
            }
            _ => {
                // Swap two lines.
                if !d.is_empty() {
                    let (s1, e1) = line_bounds(&d, rng.below(d.len()));
                    let line = d[s1..e1].to_vec();
                    d.drain(s1..e1);
                    let at = rng.below(d.len() + 1);
                    let (s2, _) = line_bounds(&d, at.min(d.len().saturating_sub(1)));
                    d.splice(s2..s2, line);
                }
            }
        }
    }
    d
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs `body` over the seeds and `cases` mutations of them; returns how many mutants `ok`
/// accepted, so a test can check the mutations reach both sides of the parser.
fn run_mutations(target: &str, cases: usize, seed: u64, body: fn(&[u8]), ok: impl Fn(&[u8]) -> bool) -> usize {
    let corpus = seeds(target);
    for (name, data) in &corpus {
        let r = std::panic::catch_unwind(|| body(data));
        assert!(r.is_ok(), "{target}: seed {name} failed");
    }
    let mut rng = Rng(seed);
    let mut accepted = 0;
    for case in 0..cases {
        let (_, base) = rng.pick(&corpus);
        let input = mutate(&mut rng, base, &corpus);
        if std::panic::catch_unwind(|| body(&input)).is_err() {
            let path = std::env::temp_dir().join(format!("hearken-fuzz-{target}-{case}.bin"));
            let _ = std::fs::write(&path, &input);
            panic!("{target}: mutant {case} failed (saved to {}): {:?}", path.display(), String::from_utf8_lossy(&input));
        }
        accepted += usize::from(ok(&input));
    }
    accepted
}

fn check_mix(target: &str, accepted: usize, cases: usize) {
    eprintln!("{target}: {cases} mutants, {accepted} accepted by the parser");
    assert!(
        accepted * 20 > cases && accepted * 20 < cases * 19,
        "{target}: mutations should keep 5–95% of inputs valid, kept {accepted}/{cases}"
    );
}

#[test]
fn sip_message_seeds_and_mutants() {
    let corpus = seeds("sip_message");
    for (name, data) in &corpus {
        let m = Message::parse(data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = Message::parse(&m.to_bytes()).unwrap();
        assert_eq!((&again.start, &again.body), (&m.start, &m.body), "{name}");
        if m.header("content-length").is_some() {
            assert_eq!(again, m, "{name}: a message with Content-Length prints verbatim");
            assert_eq!(m.to_bytes(), *data, "{name}: printed byte for byte");
        }
    }
    let compact = Message::parse(seed(&corpus, "invite_compact_folded_multivia.sip")).unwrap();
    assert_eq!(compact.values("via").len(), 3);
    assert_eq!(compact.values("route").len(), 2);
    assert_eq!(compact.header("subject"), Some("a folded subject line over three lines"));
    assert_eq!(compact.call_id(), "compact-1@pbx");
    assert!(compact.has_sdp());
    assert_eq!(compact.values("to"), vec!["\"Agent, Nine\" <sip:agent9@pbx>"]);
    let lf = Message::parse(seed(&corpus, "options_bare_lf.sip")).unwrap();
    assert_eq!(lf.header("max-forwards"), Some("0"));
    assert!(lf.body.is_empty());

    // Content-Length that cannot be honoured is an error, never a huge allocation or a panic.
    let invite = seed(&corpus, "invite_sdp.sip");
    let with_len = |n: &str| {
        let text = String::from_utf8(invite.to_vec()).unwrap();
        let len = Message::parse(invite).unwrap().body.len();
        text.replace(&format!("Content-Length: {len}"), &format!("Content-Length: {n}"))
    };
    for n in ["18446744073709551615", "4294967296", "65536"] {
        assert_eq!(Message::parse(with_len(n).as_bytes()), Err(ParseError::Truncated));
    }
    for n in ["18446744073709551616", "-1", "x", "0x10"] {
        assert_eq!(Message::parse(with_len(n).as_bytes()), Err(ParseError::BadContentLength));
    }

    let cases = 12_000;
    let ok = run_mutations("sip_message", cases, 0x5eed_0001, fuzzing::sip_message, |d| Message::parse(d).is_ok());
    check_mix("sip_message", ok, cases);
}

fn frames(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut f = StreamFramer::default();
    let mut out = Vec::new();
    for c in chunks {
        f.push(c);
        loop {
            match f.next() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

#[test]
fn sip_stream_seeds_and_mutants() {
    let corpus = seeds("sip_stream");
    for (name, want) in [
        ("two_messages_keepalive.bin", 2),
        ("three_messages.bin", 3),
        ("bare_lf_then_crlf.bin", 2),
        ("partial_tail.bin", 1),
        ("keepalive_only.bin", 0),
    ] {
        let data = seed(&corpus, name);
        let (got, failed) = frames(&[data]);
        assert!(!failed, "{name}");
        assert_eq!(got.len(), want, "{name}");
        for m in &got {
            Message::parse(m).unwrap_or_else(|e| panic!("{name}: frame does not parse: {e}"));
        }
        if find(data, b"\n\n").is_none() {
            // (bare-LF streams: see `known_issue_bare_lf_stream_framing_depends_on_chunking`)
            let (bytewise, _) = frames(&data.chunks(1).collect::<Vec<_>>());
            assert_eq!(bytewise, got, "{name}: framing byte by byte");
        }
    }
    // A Content-Length that cannot fit is a framing error (connection dropped), not a wait.
    for n in ["18446744073709551615", "18446744073709551600", "65536", "x"] {
        let msg = format!("BYE sip:a@b SIP/2.0\r\nContent-Length: {n}\r\n\r\nabc");
        assert!(frames(&[msg.as_bytes()]).1, "Content-Length {n}");
    }

    let cases = 6_000;
    let ok = run_mutations("sip_stream", cases, 0x5eed_0002, fuzzing::sip_stream, |d| {
        let (got, failed) = frames(&[d]);
        !failed && !got.is_empty()
    });
    check_mix("sip_stream", ok, cases);
}

#[test]
fn sdp_seeds_and_mutants() {
    let corpus = seeds("sdp");
    for (name, data) in &corpus {
        let s = sdp::parse(data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!s.media.is_empty(), "{name}");
        let out = sdp::rewrite(data, RELAY, &RELAY_PORTS).unwrap();
        let r = sdp::parse(&out).unwrap();
        for (a, b) in s.media.iter().zip(&r.media) {
            assert_eq!(b.port, if a.port == 0 { 0 } else { 30000 }, "{name}");
        }
    }
    let get = |n: &str| sdp::parse(seed(&corpus, n)).unwrap();
    assert!(get("hold_sendonly.sdp").media[0].on_hold());
    assert!(get("hold_legacy_zero_addr.sdp").media[0].on_hold());
    assert_eq!(get("inactive_session_level.sdp").media[0].direction, Direction::Inactive);
    assert!(!get("basic_offer.sdp").media[0].on_hold());
    let multi = get("multiple_mlines.sdp");
    assert_eq!(multi.media.len(), 4);
    assert_eq!(multi.media[1].addr.to_string(), "10.0.0.2");
    assert!(multi.media[2].on_hold() && !multi.media[3].on_hold());
    let mux = get("rtcp_mux_opus.sdp");
    assert!(mux.media[0].rtcp_mux && mux.media[0].rtcp_port == Some(5004));
    let out = sdp::rewrite(seed(&corpus, "rtcp_mux_opus.sdp"), RELAY, &RELAY_PORTS).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("a=rtcp:30000 IN IP4 127.0.0.1\r\n"), "{text}");
    assert!(text.contains("a=fmtp:111 minptime=10;useinbandfec=1\r\n"));
    let te = get("basic_offer.sdp");
    assert!(te.media[0].rtpmap.contains(&(101, "telephone-event/8000".to_string())));

    let cases = 10_000;
    let ok = run_mutations("sdp", cases, 0x5eed_0003, fuzzing::sdp, |d| sdp::parse(d).is_ok());
    check_mix("sdp", ok, cases);
}

#[test]
fn rtp_seeds_and_mutants() {
    let corpus = seeds("rtp");
    for (name, data) in &corpus {
        let c = rtp::classify(data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(matches!(c, Packet::Rtcp), name.starts_with("rtcp_"), "{name}");
    }
    let Ok(Packet::Rtp(h)) = rtp::classify(seed(&corpus, "csrc_ext_pad.bin")) else {
        panic!("csrc_ext_pad.bin is RTP");
    };
    assert_eq!((h.payload_offset, h.payload_len), (12 + 8 + 8, 80));
    let Ok(Packet::Rtp(h)) = rtp::classify(seed(&corpus, "telephone_event.bin")) else {
        panic!("telephone_event.bin is RTP");
    };
    assert!(h.marker && h.payload_type == 101 && h.payload_len == 4);

    let cases = 12_000;
    let ok = run_mutations("rtp", cases, 0x5eed_0004, fuzzing::rtp, |d| rtp::classify(d).is_ok());
    check_mix("rtp", ok, cases);
}

fn sent_text(a: &Action) -> (String, String) {
    let Action::Send { to, data } = a;
    let to = match to {
        Dest::Peer(p) => p.addr.to_string(),
        Dest::Target(t) => format!("{}:{}", t.host, t.port),
    };
    let first = String::from_utf8_lossy(data).lines().next().unwrap_or("").to_string();
    (to, first)
}

fn proxy_seed(corpus: &[(String, Vec<u8>)], name: &str) -> (fuzzing::ProxyRun, Vec<String>) {
    let run = fuzzing::run_proxy(seed(corpus, name));
    let lines = run
        .sent
        .iter()
        .map(|a| {
            let (to, first) = sent_text(a);
            format!("{to} {first}")
        })
        .collect();
    (run, lines)
}

#[test]
fn proxy_seeds_and_mutants() {
    let corpus = seeds("proxy");
    for (_, data) in &corpus {
        // Scenarios are records of SIP text; keep them readable.
        assert!(data.windows(RECORD_SEPARATOR.len()).any(|w| w == RECORD_SEPARATOR));
    }

    let (run, sent) = proxy_seed(&corpus, "inbound_call_answered_and_hung_up.scn");
    assert_eq!(run.calls_started, 1);
    assert_eq!(run.closed.len(), 1, "{sent:#?}");
    assert_eq!(run.closed[0].1, EndReason::Bye);
    assert_eq!(sent[0], "10.0.0.1:5060 SIP/2.0 100 Trying");
    assert!(sent[1].starts_with("10.0.1.7:5062 INVITE sip:agent7@10.0.0.10"));
    assert!(sent.contains(&"10.0.0.1:5060 SIP/2.0 200 Fuzz".to_string()));
    assert!(sent.contains(&"10.0.0.1:5060 BYE sip:pbx@10.0.0.1:5060 SIP/2.0".to_string()));
    assert!(sent.contains(&"10.0.1.7:5062 SIP/2.0 200 OK".to_string()));
    // The answer forwarded to the PBX points at the relay.
    let answer = run
        .sent
        .iter()
        .map(|Action::Send { data, .. }| Message::parse(data).unwrap())
        .find(|m| m.status() == Some(200) && m.has_sdp())
        .expect("a 200 with SDP");
    let media = sdp::parse(&answer.body).unwrap().media;
    assert_eq!(media[0].addr, RELAY);

    let (run, sent) = proxy_seed(&corpus, "inbound_call_cancelled.scn");
    assert_eq!(run.closed, vec![(hearken::call::CallId(1), EndReason::Cancelled)], "{sent:#?}");
    assert!(sent.iter().any(|s| s.ends_with("SIP/2.0 200 OK")));
    assert!(sent.iter().any(|s| s.contains(" CANCEL sip:agent7@10.0.0.10")));
    assert!(sent.iter().any(|s| s.ends_with("SIP/2.0 487 Fuzz")));

    let (run, sent) = proxy_seed(&corpus, "outbound_call_rejected_tcp.scn");
    assert_eq!(run.closed, vec![(hearken::call::CallId(1), EndReason::Rejected(486))], "{sent:#?}");

    let (run, sent) = proxy_seed(&corpus, "outbound_call_ports_exhausted.scn");
    assert!(sent.contains(&"10.0.1.7:5062 SIP/2.0 503 Relay Ports Exhausted".to_string()));
    assert_eq!(run.closed, vec![(hearken::call::CallId(1), EndReason::Rejected(503))], "{sent:#?}");
    assert_eq!((run.calls_started, run.active_calls), (2, 1));

    let (_, sent) = proxy_seed(&corpus, "register_options_garbage.scn");
    assert!(sent[0].starts_with("10.0.0.1:5060 REGISTER"), "{sent:#?}");
    assert!(sent.contains(&"10.0.0.1:5060 SIP/2.0 483 Too Many Hops".to_string()));
    assert!(sent.contains(&"10.0.0.1:5060 SIP/2.0 400 Bad Request".to_string()));
    let Action::Send { data, .. } = &fuzzing::run_proxy(seed(&corpus, "register_options_garbage.scn")).sent[0];
    assert!(Message::parse(data).unwrap().header("path").is_some());

    // Timer C after a provisional CANCELs downstream and waits for the final: the 200 that
    // crosses the CANCEL is still forwarded (anchored), and with no ACK the call ends then.
    let (run, sent) = proxy_seed(&corpus, "timer_c_expiry.scn");
    assert!(sent.iter().any(|s| s.starts_with("10.0.1.7:5062 CANCEL")), "{sent:#?}");
    assert!(sent.iter().any(|s| s.starts_with("10.0.0.1:5060 SIP/2.0 200")), "{sent:#?}");
    assert_eq!(run.closed, vec![(hearken::call::CallId(1), EndReason::SetupTimeout)], "{sent:#?}");

    let (run, _) = proxy_seed(&corpus, "notify_and_stray_responses.scn");
    assert_eq!(run.calls_started, 0);

    let cases = 5_000;
    let ok = run_mutations("proxy", cases, 0x5eed_0005, fuzzing::proxy, |d| fuzzing::run_proxy(d).calls_started > 0);
    check_mix("proxy", ok, cases);
}

// Bugs these targets found (fixed): each test states the correct
// behaviour (regression tests for bugs the fuzzer found).

#[test]
fn regression_bare_lf_stream_framing_depends_on_chunking() {
    // A bare-LF message with a body, then a CRLF message on the same TCP connection.
    let a = b"OPTIONS sip:a SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nl: 3\n\nabc";
    let b = b"BYE sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    let stream = [&a[..], &b[..]].concat();
    let (bytewise, _) = frames(&stream.chunks(1).collect::<Vec<_>>());
    assert_eq!(bytewise, vec![a.to_vec(), b.to_vec()]);
    // All at once, the header part of `a` is taken to run to the end of `b`.
    let (whole, _) = frames(&[&stream]);
    assert_eq!(whole, bytewise);
}

#[test]
fn regression_sdp_rewrite_of_m_line_with_tabs_or_double_spaces() {
    for m in ["m=audio\t4000\tRTP/AVP\t0", "m=audio  4000 RTP/AVP 0"] {
        let text = format!("v=0\r\nc=IN IP4 10.0.0.1\r\n{m}\r\n");
        let before = sdp::parse(text.as_bytes()).unwrap();
        let out = sdp::rewrite(text.as_bytes(), RELAY, &RELAY_PORTS).unwrap();
        let after = sdp::parse(&out).unwrap();
        assert_eq!(after.media[0].port, 30000, "{m:?}: port not rewritten");
        assert_eq!(after.media[0].proto, before.media[0].proto, "{m:?}: proto changed");
    }
    // Whitespace other than a space after the port: the rewritten m-line loses its proto and
    // formats and no longer parses (found by `cargo fuzz run sdp`).
    let text = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 100\r\0RTP/AVP 0\r\n";
    assert!(sdp::parse(text.as_bytes()).is_ok());
    let out = sdp::rewrite(text.as_bytes(), RELAY, &RELAY_PORTS).unwrap();
    assert!(sdp::parse(&out).is_ok(), "{:?}", String::from_utf8_lossy(&out));
}

#[test]
fn regression_folded_line_taken_for_content_length_on_tcp() {
    let a = b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nX-Note: a\r\n l: 5\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
    let m = Message::parse(a).unwrap();
    assert_eq!((m.header("x-note"), m.body.len()), (Some("a l: 5"), 0));
    let b = b"BYE sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    // On TCP the framer takes ` l: 5` for the length and eats 5 bytes of the next message.
    let (got, _) = frames(&[&[&a[..], &b[..]].concat()]);
    assert_eq!(got, vec![a.to_vec(), b.to_vec()]);
}

#[test]
fn siprec_seeds_and_mutants() {
    // Every seed is a recording session that starts (the vendors' bodies, a pause and a transfer).
    for (name, data) in &seeds("siprec") {
        let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
        assert!(first.starts_with(b"INVITE "), "{name}");
    }
    let cases = 4_000;
    let ok = run_mutations("siprec", cases, 0x5eed_0006, fuzzing::siprec, |d| {
        Message::parse(d.split(|b| *b == b'~').next().unwrap_or_default()).is_ok()
    });
    check_mix("siprec", ok, cases);
}

#[test]
fn stream_seeds_and_mutants() {
    use hearken::stream::audiosocket::{Frame, Parser};
    // The AudioSocket seed is what Asterisk sends: UUID, 20 ms of 8 kHz and of 16 kHz audio
    // (brought down to 8 kHz), a DTMF digit, hang-up.
    let corpus = seeds("stream");
    let mut p = Parser::default();
    p.push(&seed(&corpus, "audiosocket.bin")[1..]);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = p.next() {
        frames.push(match f {
            Frame::Audio(s) => format!("audio {}", s.len()),
            other => format!("{other:?}").split('(').next().unwrap_or_default().to_string(),
        });
    }
    assert_eq!(frames, ["Uuid", "audio 160", "audio 160", "Dtmf", "Hangup"]);
    let cases = 12_000;
    let ok = run_mutations("stream", cases, 0x5eed_0007, fuzzing::stream, |d| {
        d.split(|b| *b == b'\n').any(|t| serde_json::from_slice::<serde_json::Value>(t.get(1..).unwrap_or_default()).is_ok())
    });
    eprintln!("stream: {cases} mutants, {ok} with a text frame that is still JSON");
}

/// Found by the `proxy` target (2026-11-29): a transaction whose timers all ran out stayed in
/// the table.
#[test]
fn regression_transaction_outlives_its_timers() {
    let data =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz/proxy-transaction-outlives-timers.bin")).unwrap();
    fuzzing::proxy(&data);
}
