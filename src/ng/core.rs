//! The ng control plane (sans-IO): Kamailio's and OpenSIPS's `rtpengine` modules drive Hearken
//! exactly as they drive rtpengine. Commands come in as `COOKIE SPACE BENCODED-DICT` datagrams;
//! [`NgCore::handle_datagram`] returns the reply datagram. A retransmitted command (same source,
//! same cookie) gets the cached reply and is not executed twice.
//!
//! Commands: `ping`, `offer`, `answer`, `delete` (with a delete delay), `query`, `list`,
//! `statistics`. Anchoring is the same [`media::anchor`] the SIP proxy uses, so endpoint
//! learning, SRTP, ICE handling and limits are those of the one media plane.
//!
//! Who is who: the party that sent an SDP is found from the tags. The first offer's `from-tag`
//! belongs to the offerer; which party that is comes from the rules in `[ng]`: the `label` the
//! script sets (`customer_label` / `agent_label`), else `offerer` (default: the customer, as for
//! a PBX calling agents). The agent id is read from the key `agent_id_key` when the script sends
//! it, else from the label of an agent-originated call.
//!
//! When the media plane ends a call by itself (every leg silent, a dead leg), the call is
//! forgotten as rtpengine does, and the driver tells Kamailio the way rtpengine does with
//! `b2b-url` and `xmlrpc-format = 2`: an XML-RPC `dlg.terminate_dlg(call-id, from-tag, to-tag)`
//! to `ng.teardown_url`, so Kamailio's dialog module sends BYE to both parties
//! ([`terminate_dlg_request`]).
//!
//! Not here: sockets (the driver), the media plane's state (behind [`MediaControl`]).

use super::Ben;
use crate::call::{sanitize_label, CallId, CallMeta, EndReason, Input, MediaControl, Party};
use crate::media::anchor::{self, AnchorError};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `[ng]` rules.
#[derive(Debug, Clone)]
pub struct NgConfig {
    /// The party of the first offer when no label says otherwise.
    pub offerer: Party,
    pub customer_label: String,
    pub agent_label: String,
    /// The ng `direction` (rtpengine interface names: the offerer's first) that marks an offer
    /// coming from the customer side, e.g. `external` when customers call in from outside.
    pub customer_direction: Option<String>,
    /// The key carrying the agent id (`rtpengine_offer("... agent-id=$rU")`).
    pub agent_id_key: String,
    /// The key carrying the queue.
    pub queue_key: String,
    /// Seconds a deleted call's media is kept when the command names no `delete-delay`.
    pub delete_delay: Duration,
    /// How long replies are kept for retransmitted commands.
    pub reply_cache: Duration,
    /// Relay addresses written into SDP, by the party that receives it.
    pub media_hosts: [IpAddr; 2],
}

/// Counters the driver exports.
#[derive(Debug, Default)]
pub struct NgStats {
    pub commands: AtomicU64,
    pub errors: AtomicU64,
    pub retransmissions: AtomicU64,
    pub malformed: AtomicU64,
    /// Flags and keys Hearken accepts without acting on them.
    pub ignored_flags: AtomicU64,
    pub calls_started: AtomicU64,
    pub calls_ended: AtomicU64,
    /// Commands from sources not in `ng.allow`, dropped unanswered.
    pub refused: AtomicU64,
    /// Teardown callbacks (XML-RPC `dlg.terminate_dlg`) sent after a media timeout, and failed.
    pub teardowns: AtomicU64,
    pub teardown_errors: AtomicU64,
}

#[derive(Debug)]
struct NgCall {
    id: CallId,
    meta: CallMeta,
    /// The dialog's tags as the first offer and answer named them (From, To).
    from_tag: String,
    to_tag: Option<String>,
    /// Which party each SIP tag belongs to.
    tags: HashMap<String, Party>,
    created_unix: u64,
    last_signal_unix: u64,
    /// Deleted: media closes at this time (delete delay).
    closing: Option<Instant>,
    answered: bool,
}

pub struct NgCore {
    cfg: NgConfig,
    calls: HashMap<String, NgCall>,
    by_id: HashMap<CallId, String>,
    replies: HashMap<(SocketAddr, Vec<u8>), (Instant, Vec<u8>)>,
    next_call: u64,
    pub stats: Arc<NgStats>,
}

/// Keys Hearken understands or knowingly treats as satisfied (its relay always replaces the
/// origin and connection, is symmetric, records every call, removes ICE by default).
const KNOWN: &[&str] = &[
    "command",
    "call-id",
    "from-tag",
    "to-tag",
    "via-branch",
    "sdp",
    "label",
    "ICE",
    "replace",
    "flags",
    "received-from",
    "transport-protocol",
    "direction",
    "record-call",
    "delete-delay",
    "supports",
    "rtcp-mux",
    "SDES",
    "DTLS",
];

/// Flags (in the `flags` list) whose meaning Hearken's media plane already has: it trusts SDP
/// addresses and learns endpoints (trust-address, symmetric, port-latching, strict-source and
/// media-handover are its `media.learning` policy), always records (analyses) the call, and
/// keeps RTCP as negotiated. Others are accepted and counted.
const KNOWN_FLAGS: &[&str] = &[
    "trust-address",
    "SIP-source-address",
    "symmetric",
    "asymmetric",
    "port-latching",
    "strict-source",
    "media-handover",
    "record-call",
    "loop-protect",
    "no-rtcp-attribute",
    "full-rtcp-attribute",
    "reset",
];

fn error(reason: &str) -> Ben {
    Ben::dict(&[("result", Ben::s("error")), ("error-reason", Ben::s(reason))])
}

fn ok(mut pairs: Vec<(&str, Ben)>) -> Ben {
    pairs.push(("result", Ben::s("ok")));
    Ben::dict(&pairs)
}

impl NgCore {
    pub fn new(cfg: NgConfig, stats: Arc<NgStats>, first_call_id: u64) -> NgCore {
        NgCore { cfg, calls: HashMap::new(), by_id: HashMap::new(), replies: HashMap::new(), next_call: first_call_id, stats }
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// One datagram from `from`; the reply to send back (None: not even a cookie to answer).
    pub fn handle_datagram(
        &mut self,
        data: &[u8],
        from: SocketAddr,
        now: Instant,
        unix_s: u64,
        media: &mut dyn MediaControl,
    ) -> Option<Vec<u8>> {
        let sp = data.iter().position(|c| *c == b' ')?;
        let cookie = data[..sp].to_vec();
        if cookie.is_empty() || cookie.len() > 64 {
            self.stats.malformed.fetch_add(1, Relaxed);
            return None;
        }
        if let Some((_, r)) = self.replies.get(&(from, cookie.clone())) {
            self.stats.retransmissions.fetch_add(1, Relaxed);
            return Some(r.clone());
        }
        let reply = match Ben::decode(&data[sp + 1..], 0) {
            Ok((msg @ Ben::Dict(_), _)) => {
                self.stats.commands.fetch_add(1, Relaxed);
                self.command(&msg, now, unix_s, media)
            }
            _ => {
                self.stats.malformed.fetch_add(1, Relaxed);
                error("malformed bencode dictionary")
            }
        };
        if reply.str("result").as_deref() == Some("error") {
            self.stats.errors.fetch_add(1, Relaxed);
        }
        let mut out = cookie.clone();
        out.push(b' ');
        reply.encode(&mut out);
        if self.replies.len() > 100_000 {
            self.expire_replies(now);
        }
        self.replies.insert((from, cookie), (now + self.cfg.reply_cache, out.clone()));
        Some(out)
    }

    fn expire_replies(&mut self, now: Instant) {
        self.replies.retain(|_, (until, _)| *until > now);
    }

    fn command(&mut self, msg: &Ben, now: Instant, unix_s: u64, media: &mut dyn MediaControl) -> Ben {
        let Some(cmd) = msg.str("command") else { return error("no command") };
        if let Ben::Dict(d) = msg {
            let ours = [self.cfg.agent_id_key.as_bytes(), self.cfg.queue_key.as_bytes()];
            let unknown = d.keys().filter(|k| !KNOWN.iter().any(|n| n.as_bytes() == k.as_slice()) && !ours.contains(&k.as_slice())).count();
            let unknown_flags = match d.get(b"flags".as_slice()) {
                Some(Ben::List(l)) => {
                    l.iter().filter(|f| !matches!(f, Ben::Str(s) if KNOWN_FLAGS.iter().any(|k| k.as_bytes() == s.as_slice()))).count()
                }
                _ => 0,
            };
            let unknown = unknown + unknown_flags;
            if unknown > 0 {
                tracing::debug!(unknown, "ng keys accepted and ignored");
                self.stats.ignored_flags.fetch_add(unknown as u64, Relaxed);
            }
        }
        match cmd.as_str() {
            "ping" => Ben::dict(&[("result", Ben::s("pong"))]),
            "offer" | "answer" => self.sdp_command(msg, cmd == "offer", unix_s, media),
            "delete" => self.delete(msg, now),
            "query" => self.query(msg),
            "list" => {
                let limit = match msg.get("limit") {
                    Some(Ben::Int(n)) => (*n).clamp(0, 100_000) as usize,
                    _ => 32,
                };
                let calls = self.calls.keys().take(limit).map(|k| Ben::s(k)).collect();
                ok(vec![("calls", Ben::List(calls))])
            }
            "statistics" => {
                let s = &self.stats;
                ok(vec![(
                    "statistics",
                    Ben::dict(&[
                        ("currentstatistics", Ben::dict(&[("sessionsown", Ben::Int(self.calls.len() as i64))])),
                        (
                            "totalstatistics",
                            Ben::dict(&[
                                ("totalsessions", Ben::Int(s.calls_started.load(Relaxed) as i64)),
                                ("closedsessions", Ben::Int(s.calls_ended.load(Relaxed) as i64)),
                            ]),
                        ),
                    ]),
                )])
            }
            other => error(&format!("unknown command {other}")),
        }
    }

    fn sdp_command(&mut self, msg: &Ben, is_offer: bool, unix_s: u64, media: &mut dyn MediaControl) -> Ben {
        let (Some(call_id), Some(from_tag), Some(sdp)) = (msg.str("call-id"), msg.str("from-tag"), msg.get("sdp")) else {
            return error("missing call-id, from-tag or sdp");
        };
        let Ben::Str(sdp) = sdp else { return error("sdp is not a string") };
        let to_tag = msg.str("to-tag");
        if let Some(tp) = msg.str("transport-protocol") {
            let proto = crate::sdp::parse(sdp).ok().and_then(|s| s.media.first().map(|m| m.proto.clone()));
            if proto.as_deref().is_some_and(|p| p != tp) {
                return error("transport-protocol conversion is not supported (Hearken does not transcode or terminate SRTP)");
            }
        }
        if !is_offer && !self.calls.contains_key(&call_id) {
            return error("Unknown call-id");
        }
        if !self.calls.contains_key(&call_id) {
            let first_direction = match msg.get("direction") {
                Some(Ben::List(l)) => {
                    l.first().and_then(|d| if let Ben::Str(s) = d { std::str::from_utf8(s).ok() } else { None }).map(str::to_string)
                }
                _ => None,
            };
            let offerer = match (msg.str("label"), first_direction, &self.cfg.customer_direction) {
                (Some(l), _, _) if l == self.cfg.customer_label => Party::Customer,
                (Some(l), _, _) if l == self.cfg.agent_label => Party::Agent,
                (_, Some(d), Some(c)) if &d == c => Party::Customer,
                (_, Some(_), Some(_)) => Party::Agent,
                _ => self.cfg.offerer,
            };
            let agent_id = sanitize_label(&msg.str(&self.cfg.agent_id_key).unwrap_or_default());
            let queue = msg.str(&self.cfg.queue_key).map(|q| sanitize_label(&q)).unwrap_or_else(|| "default".into());
            let id = CallId(self.next_call);
            self.next_call += 1;
            let meta = CallMeta { agent_id, queue, customer_name: None, input: Input::Ng };
            let mut tags = HashMap::new();
            tags.insert(from_tag.clone(), offerer);
            if let Some(t) = &to_tag {
                tags.insert(t.clone(), offerer.other());
            }
            self.calls.insert(
                call_id.clone(),
                NgCall {
                    id,
                    meta,
                    from_tag: from_tag.clone(),
                    to_tag: to_tag.clone(),
                    tags,
                    created_unix: unix_s,
                    last_signal_unix: unix_s,
                    closing: None,
                    answered: false,
                },
            );
            self.by_id.insert(id, call_id.clone());
            self.stats.calls_started.fetch_add(1, Relaxed);
            tracing::info!(call = %id, "ng call started");
        }
        let call = self.calls.get_mut(&call_id).expect("present");
        call.last_signal_unix = unix_s;
        if call.to_tag.is_none() && to_tag.is_some() && from_tag == call.from_tag {
            call.to_tag = to_tag.clone();
        }
        call.closing = None;
        // The SDP's sender: the from-tag's party for an offer, the to-tag's for an answer.
        let sender_tag = if is_offer { Some(&from_tag) } else { to_tag.as_ref() };
        let from_party = call.tags.get(&from_tag).copied();
        let sender = match sender_tag.and_then(|t| call.tags.get(t)).copied() {
            Some(p) => p,
            None => {
                // A tag seen for the first time: the other party of the one we know.
                let p = match (is_offer, from_party) {
                    (true, Some(p)) => p,
                    (false, Some(p)) => p.other(),
                    (_, None) => self.cfg.offerer,
                };
                if let Some(t) = sender_tag {
                    call.tags.insert(t.clone(), p);
                }
                p
            }
        };
        let host = self.cfg.media_hosts[sender.other().idx()];
        match anchor::anchor(sdp, call.id, &call.meta, sender, host, media) {
            Ok(a) => {
                if !is_offer && !call.answered {
                    call.answered = true;
                    tracing::info!(call = %call.id, agent = %call.meta.agent_id, "ng call answered");
                }
                ok(vec![("sdp", Ben::Str(a.body))])
            }
            Err(AnchorError::BadSdp) => error("Failed to parse SDP"),
            Err(e) => error(&format!("{e}")),
        }
    }

    fn delete(&mut self, msg: &Ben, now: Instant) -> Ben {
        let Some(call_id) = msg.str("call-id") else { return error("missing call-id") };
        let Some(call) = self.calls.get_mut(&call_id) else { return error("Call-ID not found or tags didn't match") };
        let delay = match msg.get("delete-delay") {
            Some(Ben::Int(n)) => Duration::from_secs((*n).clamp(0, 3600) as u64),
            Some(Ben::Str(s)) => {
                std::str::from_utf8(s).ok().and_then(|s| s.parse().ok()).map_or(self.cfg.delete_delay, Duration::from_secs)
            }
            _ => self.cfg.delete_delay,
        };
        call.closing = Some(now + delay);
        ok(vec![("created", Ben::Int(call.created_unix as i64)), ("last signal", Ben::Int(call.last_signal_unix as i64))])
    }

    fn query(&self, msg: &Ben) -> Ben {
        let Some(call_id) = msg.str("call-id") else { return error("missing call-id") };
        let Some(call) = self.calls.get(&call_id) else { return error("Unknown call-id") };
        let tags =
            call.tags.iter().map(|(t, p)| (t.as_str(), Ben::dict(&[("tag", Ben::s(t)), ("label", Ben::s(p.name()))]))).collect::<Vec<_>>();
        ok(vec![
            ("created", Ben::Int(call.created_unix as i64)),
            ("last signal", Ben::Int(call.last_signal_unix as i64)),
            ("tags", Ben::dict(&tags)),
        ])
    }

    /// The earliest delete-delay deadline or reply expiry (None: nothing pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls.values().filter_map(|c| c.closing).min()
    }

    /// Close calls whose delete delay has passed.
    pub fn handle_timeout(&mut self, now: Instant, media: &mut dyn MediaControl) {
        let due: Vec<String> = self.calls.iter().filter(|(_, c)| c.closing.is_some_and(|t| t <= now)).map(|(k, _)| k.clone()).collect();
        for k in due {
            if let Some(c) = self.calls.remove(&k) {
                self.by_id.remove(&c.id);
                self.stats.calls_ended.fetch_add(1, Relaxed);
                tracing::info!(call = %c.id, "ng call deleted");
                media.close(c.id, EndReason::Bye);
            }
        }
        self.expire_replies(now);
    }

    /// The media plane ended a call by itself (timeouts): forget it, as rtpengine does; a later
    /// `query` or `answer` gets "Unknown call-id", `delete` an error (Kamailio logs it). Returns
    /// the dialog (Call-ID, From tag, To tag) for the teardown callback; None if not an ng call.
    pub fn handle_media_ended(&mut self, call: CallId) -> Option<(String, String, String)> {
        let k = self.by_id.remove(&call)?;
        let c = self.calls.remove(&k)?;
        self.stats.calls_ended.fetch_add(1, Relaxed);
        Some((k, c.from_tag, c.to_tag.unwrap_or_default()))
    }
}

/// The XML-RPC request rtpengine's `xmlrpc-format = 2` sends to Kamailio (`dlg.terminate_dlg`
/// with Call-ID, From tag, To tag), as an HTTP/1.0 POST to `url` (`http://host:port/path`).
/// Returns (host:port, request bytes); None for a URL that is not plain http.
pub fn terminate_dlg_request(url: &str, call_id: &str, from_tag: &str, to_tag: &str) -> Option<(String, Vec<u8>)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/RPC2"),
    };
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let param = |s: &str| format!("<param><value><string>{}</string></value></param>", esc(s));
    let body = format!(
        "<?xml version=\"1.0\"?>\r\n<methodCall><methodName>dlg.terminate_dlg</methodName><params>{}{}{}</params></methodCall>\r\n",
        param(call_id),
        param(from_tag),
        param(to_tag)
    );
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: {hostport}\r\nUser-Agent: Hearken\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Some((hostport.to_string(), req.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{OpenError, StreamPorts};
    use crate::sdp::RelayPorts;

    #[derive(Default)]
    struct FakeMedia {
        opened: Vec<CallId>,
        remotes: Vec<(CallId, Party)>,
        closed: Vec<(CallId, EndReason)>,
        meta: Vec<CallMeta>,
    }
    impl MediaControl for FakeMedia {
        fn open(&mut self, call: CallId, meta: &CallMeta, active: &[bool]) -> Result<Vec<Option<StreamPorts>>, OpenError> {
            self.opened.push(call);
            self.meta.push(meta.clone());
            Ok(active
                .iter()
                .map(|_| {
                    Some(StreamPorts { customer: RelayPorts { rtp: 30000, rtcp: 30001 }, agent: RelayPorts { rtp: 30002, rtcp: 30003 } })
                })
                .collect())
        }
        fn remote(&mut self, call: CallId, party: Party, _s: &crate::sdp::Session) {
            self.remotes.push((call, party));
        }
        fn close(&mut self, call: CallId, reason: EndReason) {
            self.closed.push((call, reason));
        }
    }

    fn core() -> NgCore {
        NgCore::new(
            NgConfig {
                offerer: Party::Customer,
                customer_label: "customer".into(),
                agent_label: "agent".into(),
                customer_direction: Some("external".into()),
                agent_id_key: "agent-id".into(),
                queue_key: "queue".into(),
                delete_delay: Duration::from_secs(0),
                reply_cache: Duration::from_secs(30),
                media_hosts: ["10.0.0.9".parse().unwrap(); 2],
            },
            Arc::new(NgStats::default()),
            1,
        )
    }
    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    const FROM: &str = "10.0.0.5:5060";

    fn send(c: &mut NgCore, m: &mut FakeMedia, cookie: &str, msg: Ben) -> Ben {
        let d = super::super::datagram(cookie, &msg);
        let r = c.handle_datagram(&d, FROM.parse().unwrap(), Instant::now(), 1_700_000_000, m).unwrap();
        let (ck, v) = super::super::parse_datagram(&r).unwrap();
        assert_eq!(ck, cookie.as_bytes());
        v
    }

    #[test]
    fn offer_answer_delete_with_labels_tags_and_retransmissions() {
        let (mut c, mut m) = (core(), FakeMedia::default());
        assert_eq!(send(&mut c, &mut m, "1", Ben::dict(&[("command", Ben::s("ping"))])).str("result").as_deref(), Some("pong"));
        let offer = Ben::dict(&[
            ("command", Ben::s("offer")),
            ("call-id", Ben::s("c1")),
            ("from-tag", Ben::s("ft")),
            ("sdp", Ben::s(SDP)),
            ("label", Ben::s("customer")),
            ("agent-id", Ben::s("agent7")),
            ("some-new-flag", Ben::s("x")),
            ("flags", Ben::List(vec![Ben::s("trust-address"), Ben::s("fancy-new-thing")])),
        ]);
        let r = send(&mut c, &mut m, "2", offer.clone());
        assert_eq!(r.str("result").as_deref(), Some("ok"), "{r:?}");
        assert!(r.str("sdp").unwrap().contains("m=audio 30002 RTP/AVP 0"), "the agent side is told the agent-facing port");
        assert_eq!(m.meta[0].agent_id, "agent7");
        assert_eq!(c.stats.ignored_flags.load(Relaxed), 2, "the unknown key and the unknown flag are counted");
        // The same cookie again: the cached reply, no second anchoring.
        let again = send(&mut c, &mut m, "2", offer);
        assert_eq!(again, r);
        assert_eq!(m.opened.len(), 1);
        let answer = Ben::dict(&[
            ("command", Ben::s("answer")),
            ("call-id", Ben::s("c1")),
            ("from-tag", Ben::s("ft")),
            ("to-tag", Ben::s("tt")),
            ("sdp", Ben::s(&SDP.replace("10.0.0.1", "10.0.0.2"))),
        ]);
        let r = send(&mut c, &mut m, "3", answer);
        assert!(r.str("sdp").unwrap().contains("m=audio 30000 RTP/AVP 0"), "the PBX is told the customer-facing port: {r:?}");
        assert_eq!(m.remotes, vec![(CallId(1), Party::Customer), (CallId(1), Party::Agent)]);
        // A re-INVITE from the agent: its from-tag is the agent's.
        let reoffer = Ben::dict(&[
            ("command", Ben::s("offer")),
            ("call-id", Ben::s("c1")),
            ("from-tag", Ben::s("tt")),
            ("to-tag", Ben::s("ft")),
            ("sdp", Ben::s(&SDP.replace("10.0.0.1", "10.0.0.2"))),
        ]);
        let r = send(&mut c, &mut m, "4", reoffer);
        assert!(r.str("sdp").unwrap().contains("m=audio 30000 "), "towards the customer: {r:?}");
        assert_eq!(m.remotes[2], (CallId(1), Party::Agent));
        let q = send(&mut c, &mut m, "5", Ben::dict(&[("command", Ben::s("query")), ("call-id", Ben::s("c1"))]));
        assert_eq!(q.str("result").as_deref(), Some("ok"));
        let l = send(&mut c, &mut m, "6", Ben::dict(&[("command", Ben::s("list"))]));
        assert_eq!(l.get("calls"), Some(&Ben::List(vec![Ben::s("c1")])));
        let d = send(
            &mut c,
            &mut m,
            "7",
            Ben::dict(&[("command", Ben::s("delete")), ("call-id", Ben::s("c1")), ("delete-delay", Ben::Int(0))]),
        );
        assert_eq!(d.str("result").as_deref(), Some("ok"));
        c.handle_timeout(Instant::now() + Duration::from_millis(1), &mut m);
        assert_eq!(m.closed, vec![(CallId(1), EndReason::Bye)]);
        let q = send(&mut c, &mut m, "8", Ben::dict(&[("command", Ben::s("query")), ("call-id", Ben::s("c1"))]));
        assert_eq!(q.str("result").as_deref(), Some("error"));
    }

    #[test]
    fn errors_are_answered_with_a_reason() {
        let (mut c, mut m) = (core(), FakeMedia::default());
        for (cookie, msg, why) in [
            (
                "a",
                Ben::dict(&[("command", Ben::s("answer")), ("call-id", Ben::s("nope")), ("from-tag", Ben::s("f")), ("sdp", Ben::s(SDP))]),
                "Unknown call-id",
            ),
            ("b", Ben::dict(&[("command", Ben::s("offer")), ("call-id", Ben::s("x"))]), "missing"),
            ("c", Ben::dict(&[("command", Ben::s("fly"))]), "unknown command"),
            (
                "d",
                Ben::dict(&[("command", Ben::s("offer")), ("call-id", Ben::s("y")), ("from-tag", Ben::s("f")), ("sdp", Ben::s("junk"))]),
                "SDP",
            ),
            (
                "e",
                Ben::dict(&[
                    ("command", Ben::s("offer")),
                    ("call-id", Ben::s("z")),
                    ("from-tag", Ben::s("f")),
                    ("sdp", Ben::s(SDP)),
                    ("transport-protocol", Ben::s("RTP/SAVPF")),
                ]),
                "transport-protocol",
            ),
        ] {
            let r = send(&mut c, &mut m, cookie, msg);
            assert_eq!(r.str("result").as_deref(), Some("error"));
            assert!(r.str("error-reason").unwrap().contains(why), "{r:?}");
        }
        let from: SocketAddr = FROM.parse().unwrap();
        let r = c.handle_datagram(b"k1 not-bencode", from, Instant::now(), 0, &mut m).unwrap();
        assert!(String::from_utf8_lossy(&r).contains("error"));
        assert_eq!(c.handle_datagram(b"no-space-at-all", from, Instant::now(), 0, &mut m), None);
    }

    #[test]
    fn terminate_dlg_is_rtpengines_xmlrpc_call() {
        let (hp, req) = terminate_dlg_request("http://127.0.0.1:5060/RPC2", "a<b@c", "ft", "tt").unwrap();
        let text = String::from_utf8(req).unwrap();
        assert_eq!(hp, "127.0.0.1:5060");
        assert!(text.starts_with("POST /RPC2 HTTP/1.0\r\n"));
        assert!(text.contains("<methodName>dlg.terminate_dlg</methodName>"));
        assert!(text.contains("<string>a&lt;b@c</string></value></param><param><value><string>ft</string>"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(terminate_dlg_request("https://x/RPC2", "a", "b", "c").is_none());
    }

    /// Without a label, the ng `direction` decides: an offer from the `external` interface is
    /// the customer's, one from elsewhere the agent's.
    #[test]
    fn direction_names_the_offerer() {
        let (mut c, mut m) = (core(), FakeMedia::default());
        for (n, (dir, party)) in [("external", Party::Customer), ("internal", Party::Agent)].into_iter().enumerate() {
            let offer = Ben::dict(&[
                ("command", Ben::s("offer")),
                ("call-id", Ben::s(&format!("d{n}"))),
                ("from-tag", Ben::s("f")),
                ("sdp", Ben::s(SDP)),
                ("direction", Ben::List(vec![Ben::s(dir), Ben::s("other")])),
            ]);
            assert_eq!(send(&mut c, &mut m, &format!("c{n}"), offer).str("result").as_deref(), Some("ok"));
            assert_eq!(m.remotes.last().unwrap().1, party, "{dir}");
        }
    }
}
