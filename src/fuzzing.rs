//! Bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*` (cargo-fuzz + libFuzzer) and by
//! the stable `tests/fuzz_smoke.rs`, so the same invariants are checked with or without a fuzzer.
//!
//! Each function takes arbitrary bytes, never panics on any input that the code under test
//! handles correctly, and asserts the invariants of its parser: a panic here is a finding.
//!
//! Not here: seeds and mutations (the smoke test and `fuzz/seeds/`).

use crate::call::{CallId, CallMeta, EndReason, MediaControl, OpenError, Party, StreamPorts};
use crate::io::sip::StreamFramer;
use crate::net::SourcePattern;
use crate::rtp::{self, Packet};
use crate::sdp::{self, RelayPorts};
use crate::sip::message::{content_length, header_end, param, split_values, Header, Message, SipUri, Via, MAX_MESSAGE};
use crate::sip::proxy::{Action, Dest, Peer, Proxy, ProxyConfig, SipStats, Target, Transport};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The relay address and ports `sdp` rewrites with.
pub const RELAY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
pub const RELAY_PAIR: RelayPorts = RelayPorts { rtp: 30000, rtcp: 30001 };
pub const RELAY_PORTS: [Option<RelayPorts>; 4] = [Some(RELAY_PAIR); 4];

fn without_length(headers: &[Header]) -> Vec<&Header> {
    headers.iter().filter(|h| h.key() != "content-length").collect()
}

/// `Message::parse` on arbitrary bytes; for every message that parses: the accessors hold up,
/// printing and parsing again gives the same start line, headers (Content-Length aside, which
/// printing corrects) and body, printing is then a fixed point, and edits the proxy makes (new
/// top Via, Max-Forwards, local responses) print as messages that parse.
pub fn sip_message(data: &[u8]) {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    // Mandatory headers were checked by parse.
    for key in ["via", "call-id", "cseq", "from", "to"] {
        assert!(msg.header(key).is_some(), "parsed without {key}");
    }
    let (_, cseq_method) = msg.cseq().expect("parse checks CSeq");
    assert!(!cseq_method.is_empty());
    assert!(msg.is_request() == msg.method().is_some());
    assert!(msg.is_request() != msg.status().is_some());
    if let Some(code) = msg.status() {
        assert!((100..700).contains(&code));
    }
    if let Some(l) = msg.header("content-length") {
        assert_eq!(l.parse::<usize>().ok(), Some(msg.body.len()));
    }
    exercise_accessors(&msg);

    let out = msg.to_bytes();
    // Printing turns bare LF into CRLF and may add Content-Length, so a message near the size
    // limit can print past it; such a message cannot be sent by the proxy either.
    if out.len() > MAX_MESSAGE {
        return;
    }
    let again =
        Message::parse(&out).unwrap_or_else(|e| panic!("printed message does not parse again ({e}): {:?}", String::from_utf8_lossy(&out)));
    assert_eq!(again.start, msg.start);
    assert_eq!(again.body, msg.body);
    assert_eq!(without_length(&again.headers), without_length(&msg.headers));
    for h in again.headers.iter().filter(|h| h.key() == "content-length") {
        assert_eq!(h.value.parse::<usize>().ok(), Some(again.body.len()));
    }
    assert_eq!(again.to_bytes(), out, "printing is not a fixed point");

    // A stream transport frames the printed message as exactly one message.
    let end = header_end(&out).expect("printed message has a header end");
    assert_eq!(end + content_length(&out[..end]).expect("printed Content-Length"), out.len());
    let mut framer = StreamFramer::default();
    framer.push(&out);
    assert_eq!(framer.next(), Ok(Some(out.clone())));
    assert_eq!(framer.next(), Ok(None));

    // Edits the proxy makes keep the message well-formed: note the source on the upstream Via,
    // push our own Via and Record-Route, count Max-Forwards down; the next hop pops our Via.
    let mut edited = msg.clone();
    if let Some(first) = msg.values("via").first() {
        edited.replace_first_value("via", format!("{first};received=192.0.2.9"));
    }
    let upstream = edited.values("via");
    let ours = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfuzz";
    edited.push_front("Via", ours);
    edited.set("max-forwards", "Max-Forwards", "69");
    edited.push_front("Record-Route", "<sip:192.0.2.1:5060;lr>");
    let printed = edited.to_bytes();
    if printed.len() <= MAX_MESSAGE {
        let mut back = Message::parse(&printed).expect("edited message parses");
        assert_eq!(back.values("via").first().map(String::as_str), Some(ours));
        assert_eq!(back.header("max-forwards"), Some("69"));
        assert_eq!(back.body, msg.body);
        assert_eq!(back.pop_first_value("via").as_deref(), Some(ours));
        assert_eq!(back.values("via"), upstream);
    }
    if msg.is_request() {
        let r = msg.response(487, "Request Terminated", Some("fz1"));
        let r = Message::parse(&r.to_bytes()).expect("a local response parses");
        assert_eq!(r.status(), Some(487));
        assert_eq!(r.call_id(), msg.call_id());
        assert_eq!(r.cseq(), msg.cseq());
        assert_eq!(r.values("via"), msg.values("via"));
        assert!(r.header("to").and_then(|t| param(t, "tag")).is_some());
    }
}

fn exercise_accessors(msg: &Message) {
    for key in ["via", "route", "record-route", "contact", "path", "supported"] {
        for v in msg.values(key) {
            assert!(!v.is_empty() && v.trim() == v);
            let _ = Via::parse(&v);
            let _ = SipUri::parse(&v);
        }
    }
    if let Some(u) = msg.uri() {
        let _ = SipUri::parse(u);
    }
    for key in ["from", "to"] {
        let v = msg.header(key).unwrap_or("");
        let _ = SipUri::parse(v);
        let _ = param(v, "tag");
        let _ = split_values(v);
    }
    if msg.has_sdp() {
        let _ = sdp::parse(&msg.body);
    }
}

/// Splits `data` into chunk lengths from a byte of it, so the fuzzer controls the chunking.
fn chunk_lengths(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut state = u32::from(data.first().copied().unwrap_or(0)) | 0x100;
    std::iter::from_fn(move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        Some(1 + (state % 97) as usize)
    })
}

/// What a framer made of a stream: the frames, then the bytes it gave up on (if it did).
struct Framed {
    frames: Vec<Vec<u8>>,
    failed: Option<Vec<u8>>,
}

fn frame(data: &[u8], lengths: &mut dyn Iterator<Item = usize>) -> Framed {
    let mut framer = StreamFramer::default();
    let mut out = Framed { frames: Vec::new(), failed: None };
    // Position in `data` of the next byte not yet handed out: frames and the failed bytes are
    // the stream itself, in order, less the CR/LF keep-alives between messages.
    let mut pos = 0;
    let mut fed = 0;
    while fed < data.len() {
        let n = lengths.next().unwrap_or(1).min(data.len() - fed);
        framer.push(&data[fed..fed + n]);
        fed += n;
        loop {
            match framer.next() {
                Ok(Some(m)) => {
                    while pos < fed && (data[pos] == b'\r' || data[pos] == b'\n') {
                        pos += 1;
                    }
                    assert!(!m.is_empty(), "empty frame");
                    assert!(m.len() <= MAX_MESSAGE, "frame over the size limit");
                    assert_eq!(&data[pos..pos + m.len()], &m[..], "frame is not the next bytes of the stream");
                    pos += m.len();
                    let end = header_end(&m).expect("a frame has a header end");
                    let len = content_length(&m[..end]).expect("a frame has a valid length");
                    assert_eq!(end + len, m.len());
                    let _ = Message::parse(&m);
                    out.frames.push(m);
                }
                Ok(None) => break,
                Err(rest) => {
                    // The driver drops the connection here.
                    while pos < fed && (data[pos] == b'\r' || data[pos] == b'\n') {
                        pos += 1;
                    }
                    assert_eq!(&data[pos..fed], &rest[..], "failed bytes are not the rest");
                    out.failed = Some(rest);
                    return out;
                }
            }
        }
    }
    out
}

/// `StreamFramer` fed the bytes in chunks (sizes chosen by the first byte), in one piece and,
/// for short inputs, byte by byte: every frame is the next stretch of the stream, carries its
/// own Content-Length, and the framing does not depend on how the bytes arrived.
pub fn sip_stream(data: &[u8]) {
    let chunked = frame(data, &mut chunk_lengths(data));
    let whole = frame(data, &mut std::iter::once(data.len().max(1)));
    // The bytes given up on are whatever had arrived when framing failed; the frames before
    // that, and whether it failed at all, do not depend on the chunking.
    let outcome = |f: Framed| (f.frames, f.failed.is_some());
    let whole = outcome(whole);
    assert_eq!(outcome(chunked), whole, "framing depends on chunk boundaries");
    // Byte by byte costs a header search per byte: short inputs only.
    if data.len() <= 256 {
        let bytewise = frame(data, &mut std::iter::repeat(1));
        assert_eq!(outcome(bytewise), whole, "framing depends on chunk boundaries");
    }
}

/// `sdp::parse`, and for SDP that parses, `sdp::rewrite` onto the relay: it succeeds whenever
/// there are relay ports for every m-line, its output parses again with the same m-lines,
/// formats, directions and codecs, pointing at the relay except for held or disabled streams,
/// and rewriting is idempotent.
pub fn sdp(data: &[u8]) {
    let Ok(session) = sdp::parse(data) else {
        assert!(sdp::rewrite(data, RELAY, &RELAY_PORTS).is_err());
        return;
    };
    for m in &session.media {
        let _ = m.on_hold();
    }
    let out = match sdp::rewrite(data, RELAY, &RELAY_PORTS) {
        Ok(out) => out,
        Err(e) => {
            assert!(session.media.len() > RELAY_PORTS.len(), "SDP parses but does not rewrite: {e}");
            return;
        }
    };
    assert!(session.media.len() <= RELAY_PORTS.len());
    let again = sdp::parse(&out).unwrap_or_else(|e| panic!("rewritten SDP does not parse ({e}): {:?}", String::from_utf8_lossy(&out)));
    assert_eq!(again.media.len(), session.media.len());
    for (before, after) in session.media.iter().zip(&again.media) {
        assert_eq!(after.kind, before.kind);
        assert_eq!(after.proto, before.proto);
        assert_eq!(after.formats, before.formats);
        assert_eq!(after.direction, before.direction);
        assert_eq!(after.rtpmap, before.rtpmap);
        assert_eq!(after.rtcp_mux, before.rtcp_mux);
        assert_eq!(after.on_hold(), before.on_hold());
        if before.port == 0 {
            assert_eq!(after.port, 0);
        } else {
            assert_eq!(after.port, RELAY_PAIR.rtp, "m-line port not rewritten");
        }
        if before.addr.is_unspecified() {
            assert_eq!(after.addr, before.addr);
        } else {
            assert_eq!(after.addr, RELAY, "connection address not rewritten");
        }
        if before.port == 0 {
            // A disabled stream keeps its attributes.
            assert_eq!(after.rtcp_port, before.rtcp_port);
        } else if let Some(p) = before.rtcp_port {
            let want = if p == before.port { RELAY_PAIR.rtp } else { RELAY_PAIR.rtcp };
            assert_eq!(after.rtcp_port, Some(want));
        } else {
            assert_eq!(after.rtcp_port, None);
        }
    }
    let twice = sdp::rewrite(&out, RELAY, &RELAY_PORTS).expect("rewritten SDP rewrites");
    assert_eq!(twice, out, "rewrite is not idempotent");
}

/// `rtp::classify`, `rtp::check_rtcp` and `rtp::parse_rtp` agree with each other, and what they
/// accept really has the structure they claim (payload inside the packet, RTCP length words
/// covering the datagram exactly).
pub fn rtp(data: &[u8]) {
    let rtcp = rtp::check_rtcp(data);
    if rtcp.is_ok() {
        assert!(data.len() >= 8);
        let mut off = 0;
        while off < data.len() {
            assert_eq!(data[off] >> 6, 2);
            off += (usize::from(u16::from_be_bytes([data[off + 2], data[off + 3]])) + 1) * 4;
        }
        assert_eq!(off, data.len());
    }
    let rtp = rtp::parse_rtp(data);
    if let Ok(h) = rtp {
        assert!(data.len() >= 12 && data[0] >> 6 == 2);
        assert!(h.payload_offset >= 12 + 4 * usize::from(data[0] & 0x0f));
        assert!(h.payload_offset + h.payload_len <= data.len());
        assert_eq!(h.payload_type, data[1] & 0x7f);
        assert_eq!(h.marker, data[1] & 0x80 != 0);
        let payload = &data[h.payload_offset..h.payload_offset + h.payload_len];
        let rebuilt = rtp::build(h.payload_type, h.sequence, h.timestamp, h.ssrc, payload);
        let r = rtp::parse_rtp(&rebuilt).expect("a built packet parses");
        assert_eq!(
            (r.payload_type, r.sequence, r.timestamp, r.ssrc, r.payload_len),
            (h.payload_type, h.sequence, h.timestamp, h.ssrc, h.payload_len)
        );
    }
    let muxed_rtcp = data.len() >= 2 && (192..=223).contains(&data[1]);
    match rtp::classify(data) {
        Ok(Packet::Rtcp) => assert!(muxed_rtcp && rtcp.is_ok()),
        Ok(Packet::Rtp(h)) => assert!(!muxed_rtcp && rtp == Ok(h)),
        Err(e) if muxed_rtcp => assert_eq!(rtcp, Err(e)),
        Err(e) => assert_eq!(rtp, Err(e)),
    }
}

/// A `MediaControl` that hands out ports from a counter and checks how the proxy uses it.
#[derive(Default)]
struct FakeMedia {
    ports: HashMap<CallId, Vec<Option<StreamPorts>>>,
    closed: HashSet<CallId>,
    closes: Vec<(CallId, EndReason)>,
    next_port: u16,
    exhausted: bool,
}

impl MediaControl for FakeMedia {
    fn open(&mut self, call: CallId, _meta: &CallMeta, active: &[bool]) -> Result<Vec<Option<StreamPorts>>, OpenError> {
        assert!(!self.closed.contains(&call), "open after close of call {call}");
        if self.exhausted {
            return Err(OpenError::PortsExhausted);
        }
        let have = self.ports.entry(call).or_default();
        have.resize(have.len().max(active.len()), None);
        for (slot, on) in have.iter_mut().zip(active) {
            if *on && slot.is_none() {
                let base = 20000 + self.next_port.wrapping_mul(4) % 40000;
                self.next_port = self.next_port.wrapping_add(1);
                *slot = Some(StreamPorts {
                    customer: RelayPorts { rtp: base, rtcp: base + 1 },
                    agent: RelayPorts { rtp: base + 2, rtcp: base + 3 },
                });
            }
        }
        Ok(have.clone())
    }
    fn remote(&mut self, call: CallId, _side: Party, session: &sdp::Session) {
        assert!(!self.closed.contains(&call), "remote after close of call {call}");
        let opened = self.ports.get(&call).map_or(0, Vec::len);
        assert!(opened >= session.media.len(), "remote without ports");
    }
    fn close(&mut self, call: CallId, reason: EndReason) {
        assert!(self.closed.insert(call), "call {call} closed twice");
        self.closes.push((call, reason));
    }
}

/// The proxy's own address in [`proxy`].
pub const PROXY_ADDR: &str = "10.0.0.10:5060";
/// The PBX in [`proxy`] (records starting `P`/`p`).
pub const PBX_ADDR: &str = "10.0.0.1:5060";
/// An agent phone in [`proxy`] (records starting `A`/`a`).
pub const AGENT_ADDR: &str = "10.0.1.7:5062";
/// Separates the records of a [`proxy`] input.
pub const RECORD_SEPARATOR: &[u8] = b"\n~~~\n";
/// In a `P`/`A` record, replaced by the branch of the last request the proxy forwarded, so that
/// responses written by hand (or by the fuzzer) can match a transaction.
pub const BRANCH_PLACEHOLDER: &[u8] = b"$BRANCH$";

fn split_records(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(p) = rest.windows(RECORD_SEPARATOR.len()).position(|w| w == RECORD_SEPARATOR) {
        out.push(&rest[..p]);
        rest = &rest[p + RECORD_SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

/// `hay` with every occurrence of `needle` replaced by `with` (left to right, non-overlapping).
pub fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// What [`run_proxy`] saw: everything the proxy sent, in order, and how calls ended.
#[derive(Debug, Default)]
pub struct ProxyRun {
    pub sent: Vec<Action>,
    /// `MediaControl::close` calls, in order.
    pub closed: Vec<(CallId, EndReason)>,
    pub calls_started: u64,
    pub calls_ended: u64,
    /// Calls still up after every transaction expired.
    pub active_calls: usize,
}

/// The proxy core fed a scenario, checking its invariants; see [`run_proxy`].
pub fn proxy(data: &[u8]) {
    run_proxy(data);
}

/// The proxy core fed a scenario: records separated by [`RECORD_SEPARATOR`], each one control
/// byte and its bytes.
///
/// - `P`/`p`: a datagram (UDP) / stream message (TCP) from the PBX; `A`/`a`: the same from the
///   agent. It goes to `handle_message` if it parses, else to `handle_malformed`.
///   [`BRANCH_PLACEHOLDER`] in it becomes the branch of the last request the proxy forwarded.
/// - `R`: the next hop answers the last request the proxy forwarded: three digits of status
///   code, optionally ` METHOD` to answer the last forwarded request of that method instead,
///   optionally a line feed and an SDP body.
/// - `T`: time passes by the decimal number of seconds that follows, then `handle_timeout`.
/// - `X`: relay ports run out (or come back) from now on.
///
/// Nothing may panic; what the proxy sends parses as SIP, forwarded requests carry our Via,
/// local answers to garbage are 400s going back to the sender, and the media layer is driven
/// consistently (no use of a call after it was closed, no call closed twice, no transaction
/// outlives its timers).
pub fn run_proxy(data: &[u8]) -> ProxyRun {
    let pbx: SocketAddr = PBX_ADDR.parse().expect("constant");
    let agent: SocketAddr = AGENT_ADDR.parse().expect("constant");
    let me: SocketAddr = PROXY_ADDR.parse().expect("constant");
    let cfg = ProxyConfig {
        host: me.ip(),
        port: me.port(),
        media_hosts: [RELAY; 2],
        pbx_sources: vec![SourcePattern { ip: pbx.ip(), port: None }],
        pbx_route: Target::parse(PBX_ADDR).expect("constant"),
        agents_route: Target::parse(&format!("sip:{AGENT_ADDR};transport=tcp")),
        agent_id_header: Some("X-Agent-Id".into()),
        queue_header: Some("X-Queue".into()),
        linger: Duration::from_secs(32),
        new_calls_per_source_per_s: 0.0,
        guards: Default::default(),
        tls_port: None,
        agents_iface: None,
    };
    let stats = Arc::new(SipStats::default());
    let mut proxy = Proxy::new(cfg, stats.clone());
    let mut media = FakeMedia::default();
    let mut now = Instant::now();
    // Last request forwarded, and the last one of each method: (next hop, bytes).
    let mut last_forward: Option<(Target, Vec<u8>)> = None;
    let mut forwarded_by_method: HashMap<String, (Target, Vec<u8>)> = HashMap::new();
    let (mut handled, mut malformed) = (0u64, 0u64);
    let mut run = ProxyRun::default();

    for record in split_records(data) {
        let Some((&ctrl, body)) = record.split_first() else {
            continue;
        };
        now += Duration::from_millis(10);
        let (bytes, peer) = match ctrl {
            b'P' | b'p' | b'A' | b'a' => {
                let addr = if ctrl.eq_ignore_ascii_case(&b'P') { pbx } else { agent };
                let transport = if ctrl.is_ascii_uppercase() { Transport::Udp } else { Transport::Tcp };
                let conn = (transport == Transport::Tcp).then_some(u64::from(ctrl));
                let branch = last_forward
                    .as_ref()
                    .and_then(|(_, b)| Message::parse(b).ok())
                    .and_then(|m| m.values("via").into_iter().next())
                    .and_then(|v| Via::parse(&v))
                    .and_then(|v| v.branch)
                    .unwrap_or_default();
                let bytes = replace_all(body, BRANCH_PLACEHOLDER, branch.as_bytes());
                (bytes, Peer { addr, transport, conn })
            }
            b'R' => {
                let code = body
                    .get(..3)
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .and_then(|c| c.parse::<u16>().ok())
                    .filter(|c| (100..700).contains(c))
                    .unwrap_or(200);
                let rest = body.get(3..).unwrap_or_default();
                let (line, sdp) = match rest.iter().position(|b| *b == b'\n') {
                    Some(p) => (&rest[..p], &rest[p + 1..]),
                    None => (rest, &[][..]),
                };
                let method = String::from_utf8_lossy(line).trim().to_string();
                let answered = if method.is_empty() { last_forward.as_ref() } else { forwarded_by_method.get(&method) };
                let Some((target, req)) = answered else {
                    continue;
                };
                let Ok(req) = Message::parse(req) else {
                    continue;
                };
                let mut resp = req.response(code, "Fuzz", Some("nexthop"));
                if !sdp.is_empty() {
                    resp.set("content-type", "Content-Type", "application/sdp");
                    resp.body = sdp.to_vec();
                }
                let addr = target.host.parse().map_or(pbx, |ip| SocketAddr::new(ip, target.port));
                let transport = target.transport;
                let conn = (transport == Transport::Tcp).then_some(7);
                (resp.to_bytes(), Peer { addr, transport, conn })
            }
            b'T' => {
                let secs = std::str::from_utf8(body).ok().and_then(|s| s.trim().parse::<u16>().ok()).unwrap_or(1);
                now += Duration::from_secs(u64::from(secs));
                for action in proxy.handle_timeout(now, &mut media) {
                    let Action::Send { to, data } = &action;
                    check_sent(to, data);
                    run.sent.push(action);
                }
                continue;
            }
            b'X' => {
                media.exhausted = !media.exhausted;
                continue;
            }
            _ => continue,
        };
        let actions = match Message::parse(&bytes) {
            Ok(msg) => {
                handled += 1;
                proxy.handle_message(msg, peer, now, &mut media)
            }
            Err(e) => {
                malformed += 1;
                let actions = proxy.handle_malformed(&bytes, peer, &e.to_string());
                for Action::Send { to, data } in &actions {
                    assert_eq!(to, &Dest::Peer(peer), "a 400 goes back where it came from");
                    assert!(
                        data.starts_with(b"SIP/2.0 400 ") || data.starts_with(b"SIP/2.0 505 "),
                        "only 400s (505 for another SIP version) for garbage"
                    );
                }
                actions
            }
        };
        for action in actions {
            let Action::Send { to, data } = &action;
            check_sent(to, data);
            if let Dest::Target(t) = to {
                if let Some(m) = Message::parse(data).ok().filter(Message::is_request) {
                    let method = m.method().unwrap_or_default().to_string();
                    forwarded_by_method.insert(method, (t.clone(), data.clone()));
                    last_forward = Some((t.clone(), data.clone()));
                }
            }
            run.sent.push(action);
        }
    }
    assert_eq!(stats.requests.load(Relaxed) + stats.responses.load(Relaxed), handled);
    assert_eq!(stats.malformed.load(Relaxed), malformed);
    // Every transaction expires eventually: Timer C for INVITE, the linger time for the rest.
    // Firing timers may start transactions of their own (a BYE when an answer was never
    // ACKed); those expire too.
    let mut at = now + Duration::from_secs(3600);
    for _ in 0..1000 {
        for Action::Send { to, data } in proxy.handle_timeout(at, &mut media) {
            check_sent(&to, &data);
        }
        match proxy.poll_timeout() {
            Some(next) => at = at.max(next),
            None => break,
        }
    }
    assert_eq!(proxy.transaction_count(), 0, "transactions outlive their timers (now {at:?}): {:?}", proxy.transactions_debug());
    for call in proxy.active_calls() {
        assert!(!media.closed.contains(&call.id), "closed call still active");
    }
    run.closed = media.closes;
    run.calls_started = stats.calls_started.load(Relaxed);
    run.calls_ended = stats.calls_ended.load(Relaxed);
    run.active_calls = proxy.active_calls().count();
    assert_eq!(run.calls_ended, run.closed.len() as u64);
    assert_eq!(run.calls_started, run.calls_ended + run.active_calls as u64);
    run
}

fn check_sent(to: &Dest, data: &[u8]) {
    assert!(!data.is_empty());
    let Ok(msg) = Message::parse(data) else {
        // Local 400s (505s for another SIP version) to salvaged garbage may lack headers a full
        // message needs; everything else the proxy sends was parsed and edited, and must parse
        // again.
        assert!(
            data.starts_with(b"SIP/2.0 400 ") || data.starts_with(b"SIP/2.0 505 ") || data.len() > MAX_MESSAGE,
            "the proxy sent a message that does not parse: {:?}",
            String::from_utf8_lossy(data)
        );
        return;
    };
    if let (Dest::Target(_), true) = (to, msg.is_request()) {
        let top = msg.values("via").into_iter().next().unwrap_or_default();
        let via = Via::parse(&top).expect("our Via parses");
        assert!(via.branch.is_some_and(|b| b.starts_with("z9hG4bKhk")), "forwarded request without our branch: {top}");
        assert_eq!(format!("{}:{}", via.host, via.port.unwrap_or(5060)), PROXY_ADDR);
    }
}

/// The SIPREC recording server core over a scenario of SIP messages from one recording client
/// (records separated by [`RECORD_SEPARATOR`]; each a whole message: INVITE, re-INVITE,
/// UPDATE, ACK, BYE...), then timers far ahead. Invariants: everything the core sends parses as
/// SIP; a 2xx to an INVITE or UPDATE carries SDP that receives only (every m-line `recvonly`,
/// `inactive` or port 0); the recorder is configured and closed only for sessions it opened,
/// each closed once; once timers ran out, no session is left that was never ACKed.
pub fn siprec(data: &[u8]) {
    use crate::siprec::core::{Recorder, RsMedia, SrsConfig, SrsCore, SrsStats};
    #[derive(Default)]
    struct Rec {
        next: u16,
        configured: HashSet<u64>,
        closed: HashSet<u64>,
    }
    impl Recorder for Rec {
        fn open(&mut self, n: usize) -> Result<Vec<u16>, OpenError> {
            if self.next > 2000 {
                return Err(OpenError::PortsExhausted);
            }
            Ok((0..n)
                .map(|_| {
                    self.next += 2;
                    30000 + self.next
                })
                .collect())
        }
        fn configure(&mut self, rs: u64, media: RsMedia) {
            assert!(!self.closed.contains(&rs), "session {rs} configured after it was closed");
            assert!(media.streams.len() <= 4, "at most 4 receive streams");
            self.configured.insert(rs);
        }
        fn close(&mut self, rs: u64, _ports: &[u16]) {
            assert!(self.closed.insert(rs), "session {rs} closed twice");
        }
        fn analysis(&mut self, _cmd: crate::call::AnalysisCmd) {}
    }
    let cfg = SrsConfig {
        host: "127.0.0.1".into(),
        port: 5060,
        media_host: RELAY,
        allow: vec![SourcePattern { ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), port: None }],
        max_sessions: 8,
        roles: crate::siprec::metadata::Roles { agent_aor: vec!["sip:*@agents.example.com".into()], ..Default::default() },
        agent_id_header: Some("X-Agent-Id".into()),
        queue_header: Some("X-Queue".into()),
    };
    let mut core = SrsCore::new(cfg, Arc::new(SrsStats::default()), 1);
    let mut rec = Rec::default();
    let src = Peer { addr: "10.0.0.5:5060".parse().expect("constant"), transport: Transport::Udp, conn: None };
    let t0 = Instant::now();
    let check = |actions: &[Action]| {
        for Action::Send { data, .. } in actions {
            let m = Message::parse(data)
                .unwrap_or_else(|e| panic!("the SRS sent what does not parse ({e:?}): {}", String::from_utf8_lossy(data)));
            let invite_2xx = m.status().is_some_and(|s| (200..300).contains(&s))
                && m.cseq().is_some_and(|(_, method)| method == "INVITE" || method == "UPDATE");
            if invite_2xx && !m.body.is_empty() {
                let answer = sdp::parse(&m.body).unwrap_or_else(|e| panic!("our SDP answer does not parse ({e:?})"));
                for media in &answer.media {
                    assert!(
                        media.port == 0 || matches!(media.direction, sdp::Direction::RecvOnly | sdp::Direction::Inactive),
                        "the SRS must only receive: {:?}",
                        media.direction
                    );
                }
            }
        }
    };
    for (i, record) in split_records(data).into_iter().enumerate() {
        let Ok(msg) = Message::parse(record) else { continue };
        if !core.claims(&msg, &src) {
            continue;
        }
        let out = core.handle_message(msg, src, t0 + Duration::from_millis(10 * i as u64), &mut rec);
        check(&out);
    }
    for secs in [1u64, 4, 16, 40, 70] {
        let out = core.handle_timeout(t0 + Duration::from_secs(secs), &mut rec);
        check(&out);
    }
    assert!(rec.closed.iter().all(|rs| rec.configured.contains(rs)), "closed a session never configured");
}

/// The media-stream dialects on arbitrary frames. The first byte picks the dialect; the rest
/// is its frames (text frames split at newlines; binary for the L16, AudioSocket and AudioHook
/// audio). Invariants: no panic; decoded audio is bounded by its input (no frame yields more
/// than it carried, after resampling); the two L16 channels come out the same length.
pub fn stream(data: &[u8]) {
    use crate::stream::{audiohook, audiosocket, chanws, l16, twilio};
    let Some((&which, rest)) = data.split_first() else { return };
    let texts = || rest.split(|b| *b == b'\n').map(|t| String::from_utf8_lossy(t).into_owned());
    match which % 5 {
        0 => {
            let (mut s, cfg) = (twilio::TwilioSession::default(), twilio::TwilioConfig::default());
            for t in texts() {
                let _ = s.handle_text(&t, &cfg);
            }
        }
        1 => {
            let mut f = l16::L16Format {
                rate: 8000,
                mix: l16::Mix::Stereo,
                customer_channel: 0,
                agent_id: "unknown".into(),
                queue: "default".into(),
                token: None,
            };
            let (meta, audio) = rest.split_at(rest.iter().position(|b| *b == 0).unwrap_or(rest.len()));
            let _ = f.apply_metadata(&String::from_utf8_lossy(meta));
            if let Ok([a, b]) = f.split(audio) {
                assert_eq!(a.len(), b.len(), "both channels of a stereo frame");
                assert!(a.len() <= audio.len() / 2, "more samples than the frame carried");
            }
        }
        2 => {
            let mut p = audiosocket::Parser::default();
            for chunk in rest.chunks(7) {
                p.push(chunk);
                while let Ok(Some(f)) = p.next() {
                    if let audiosocket::Frame::Audio(samples) = f {
                        assert!(samples.len() <= rest.len(), "more samples than bytes");
                    }
                }
            }
        }
        3 => {
            for t in texts() {
                if let Ok(chanws::Control::MediaStart { format }) = chanws::parse_control(&t) {
                    if let Some(fmt) = chanws::Format::parse(&format) {
                        let mut down = crate::stream::Downsampler::new(fmt.rate());
                        if let Ok((ulaw, _ms)) = fmt.to_ulaw(rest, &mut down) {
                            assert!(ulaw.len() <= rest.len(), "more µ-law bytes than input");
                        }
                    }
                }
            }
        }
        _ => {
            let mut s = audiohook::AudioHookSession::new(Some("org".into()));
            let (text, audio) = rest.split_at(rest.iter().position(|b| *b == 0).unwrap_or(rest.len()));
            for t in String::from_utf8_lossy(text).split('\n') {
                let _ = s.handle_text(t);
            }
            if let Ok([a, b]) = s.handle_binary(audio) {
                assert!(a.len() + b.len() <= audio.len(), "more audio than the frame carried");
            }
        }
    }
}
