//! The SIP proxy core (RFC 3261 §16): a transaction-stateful proxy that sits between the PBX
//! (customer side) and the agents, Record-Routes itself onto every dialog and anchors media by
//! rewriting every SDP offer and answer. Sans-IO: it takes parsed messages with their source and
//! the current time, and returns what to send; ports come from a [`MediaControl`] the driver owns.
//!
//! Transactions: our Via branch is derived from the upstream branch (RFC 3261 §16.11), so an
//! INVITE, its CANCEL and its non-2xx ACK share one downstream branch exactly as upstream. UDP
//! retransmissions are absorbed: a request seen again is answered with the last response, or
//! re-forwarded while no response has come. CANCEL is answered here and sent on (§16.10).
//!
//! Timers are data: [`Proxy::poll_timeout`] gives the next transaction deadline, and the driver
//! calls [`Proxy::handle_timeout`] when it comes.
//!
//! Calls are keyed by transaction and dialog, not by Call-ID: each initial INVITE transaction
//! (an upstream proxy forking one Call-ID to several agents through Hearken) is a call of its
//! own with its own relay ports, so a 486 on one branch ends only that branch; a second 2xx
//! with another To tag (downstream forking, RFC 3261 §16.7 step 5) becomes a call of its own
//! too, anchored on fresh ports, so whichever dialog the caller keeps has its media and the one
//! it BYEs ends cleanly. In-dialog requests find their call by Call-ID and tags.
//!
//! Not here: sockets, DNS, clocks, authentication, forking of our own (one target per
//! request).

use super::message::{param, split_values, Message, SipUri, StartLine, Via};
use crate::call::{sanitize_label, CallId, CallMeta, EndReason, Input, MediaControl, OpenError, Party};
use crate::media::anchor::{self, AnchorError};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BRANCH_PREFIX: &str = "z9hG4bKhk";
/// Timer C (RFC 3261 §16.6 step 11): how long an INVITE may stay unanswered.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// A connection-oriented transport (TCP, TLS): replies and requests reuse the connection.
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }
}

/// Where a message came from: address, transport and (for TCP) the connection it arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
    pub conn: Option<u64>,
}

/// A next hop: host (IP literal or name for the driver to resolve), port, transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// The transport was named (`;transport=`), so the §18.1.1 size rule does not change it.
    pub explicit: bool,
}

impl Target {
    /// `host:port`, `host`, or a SIP URI (`sip:host:port;transport=tcp`).
    pub fn parse(s: &str) -> Option<Target> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let uri = if s.starts_with("sip:") || s.starts_with("sips:") || s.starts_with('<') {
            SipUri::parse(s)?
        } else {
            SipUri::parse(&format!("sip:{s}"))?
        };
        Some(Target::from_uri(&uri))
    }
    fn from_uri(u: &SipUri) -> Target {
        let transport = match (u.secure, u.transport.as_deref()) {
            (true, _) | (_, Some("TLS")) => Transport::Tls,
            (_, Some("TCP")) => Transport::Tcp,
            _ => Transport::Udp,
        };
        let port = u.port.unwrap_or(if transport == Transport::Tls { 5061 } else { 5060 });
        Target { host: u.host.clone(), port, transport, explicit: u.secure || u.transport.is_some() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Back to a peer we heard from (responses, 100 Trying, errors).
    Peer(Peer),
    /// Forward to a next hop.
    Target(Target),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send { to: Dest, data: Vec<u8> },
}

impl Action {
    pub fn data(&self) -> Vec<u8> {
        let Action::Send { data, .. } = self;
        data.clone()
    }
}

/// Counters the driver exports.
#[derive(Debug, Default)]
pub struct SipStats {
    pub requests: AtomicU64,
    pub responses: AtomicU64,
    pub malformed: AtomicU64,
    pub answered_locally: AtomicU64,
    pub retransmissions: AtomicU64,
    pub stray_responses: AtomicU64,
    pub ports_exhausted: AtomicU64,
    pub bad_sdp: AtomicU64,
    pub calls_started: AtomicU64,
    pub calls_ended: AtomicU64,
    /// New calls refused by the per-source rate limit (503).
    pub rate_limited: AtomicU64,
    /// New calls refused by the media plane's limits (concurrent calls, streams per call).
    pub over_limit: AtomicU64,
    /// Dialogs Hearken tore down itself (BYE to both sides) when their media ended.
    pub teardowns: AtomicU64,
    /// In-dialog requests with SDP for a dialog Hearken did not know (after a restart), anchored
    /// anew.
    pub resumed_dialogs: AtomicU64,
    /// Requests forwarded again over UDP because no response came (Timers A and E).
    pub client_retransmissions: AtomicU64,
    /// Transactions that got no response (Timers B and F) or no final one (Timer C): answered
    /// 408 upstream.
    pub timeouts: AtomicU64,
    /// Requests whose next hop did not resolve or could not be connected: answered 503.
    pub unreachable: AtomicU64,
    /// Requests from sources that are neither the PBX nor in `agents.allow`: 403.
    pub forbidden: AtomicU64,
    /// Requests that came back to Hearken (loop): 482.
    pub loops: AtomicU64,
    /// Requests that parsed but cannot be handled as they are (bad Via or Request-URI, control
    /// characters, an unknown URI scheme, Proxy-Require): 400, 416 or 420, never forwarded.
    pub invalid: AtomicU64,
    /// Requests dropped unanswered: their source (not the PBX) sent over
    /// `limits.requests_per_source_per_s`.
    pub flood_dropped: AtomicU64,
    /// Requests answered 503 because the transaction table was full.
    pub over_transactions: AtomicU64,
    /// TCP/TLS connections closed at accept: over `limits.max_sip_connections`.
    pub connections_refused: AtomicU64,
    /// TCP/TLS connections closed after `limits.sip_idle_timeout_s` without data.
    pub idle_connections_closed: AtomicU64,
    /// accept() errors on the SIP TCP listeners (each pauses accepting 100 ms).
    pub accept_errors: AtomicU64,
    /// Agent messages whose Contact got Hearken's alias (`agents.contact_alias`: NAT, TCP).
    pub contacts_aliased: AtomicU64,
    /// In-dialog offers refused downstream whose media changes were undone.
    pub offers_rolled_back: AtomicU64,
    /// Requests over 1300 bytes sent over TCP instead of UDP (RFC 3261 §18.1.1).
    pub size_to_tcp: AtomicU64,
    /// Of those, sent over UDP after all because the TCP connection failed.
    pub size_fallback_udp: AtomicU64,
    /// BYEs from agents for calls Hearken never saw: calls that reached the agent without
    /// passing through Hearken (or began before a restart).
    pub unknown_agent_byes: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Our address and port as written into Via and Record-Route.
    pub host: IpAddr,
    pub port: u16,
    /// Address written into rewritten SDP, by the party that receives it (the relay's
    /// interface facing the customer side, and facing the agents).
    pub media_hosts: [IpAddr; 2],
    pub pbx_sources: Vec<crate::net::SourcePattern>,
    pub pbx_route: Target,
    pub agents_route: Option<Target>,
    pub agent_id_header: Option<String>,
    pub queue_header: Option<String>,
    pub linger: Duration,
    /// New calls per second one source IP may start (0: no limit); burst twice that.
    pub new_calls_per_source_per_s: f64,
    /// Timers, who may be an agent, flood limits (defaults: [`ProxyGuards::default`]).
    pub guards: ProxyGuards,
    /// The SIP-over-TLS listener's port (`sip.tls_listen`), for Via and Record-Route on TLS.
    pub tls_port: Option<u16>,
    /// The agent side's own listener (`sip.agents_listen`): its advertised address and port,
    /// for Via and Record-Route towards agents. None: one listener for both sides.
    pub agents_iface: Option<(IpAddr, u16)>,
}

/// The proxy's timers and protections.
#[derive(Debug, Clone)]
pub struct ProxyGuards {
    /// Timer C (RFC 3261 §16.6 step 11): how long an INVITE may go without a provisional or
    /// final response before Hearken CANCELs it downstream and answers 408 upstream.
    pub timer_c: Duration,
    /// Networks agents' requests may come from (others get 403); empty: any.
    pub agent_sources: Vec<crate::net::Net>,
    /// Names of this proxy (hostnames, aliases) besides its address, for Route and Request-URI.
    pub aliases: Vec<String>,
    /// Requests per second one source other than the PBX may send (0: no limit); burst twice
    /// that. Over it, requests are dropped unanswered, as Kamailio's pike does.
    pub requests_per_source_per_s: f64,
    /// Transactions held at once; new requests over it get 503.
    pub max_transactions: usize,
    /// When agents' REGISTERs get a Path (RFC 3327) so the registrar reaches them through us.
    pub path: PathMode,
    /// When agents' Contacts get the address their messages really came from (NAT).
    pub contact_alias: ContactAlias,
}

impl Default for ProxyGuards {
    /// Lenient settings for tests and tools: Timer C 180 s, any agent source, no rate limit,
    /// Path only when the phone supports it.
    fn default() -> Self {
        ProxyGuards {
            timer_c: Duration::from_secs(180),
            agent_sources: Vec::new(),
            aliases: Vec::new(),
            requests_per_source_per_s: 0.0,
            max_transactions: 100_000,
            path: PathMode::WhenSupported,
            contact_alias: ContactAlias::Auto,
        }
    }
}

/// `agents.contact_alias`: when an agent's Contact (in its REGISTER, INVITE, re-INVITE and
/// their responses) gets `;alias=ip~port~transport`, the address and transport its message
/// really came from, in the manner of Kamailio's `add_contact_alias()`. The PBX (or registrar)
/// then addresses requests to that Contact, and Hearken, the next hop through Path or
/// Record-Route, sends them to the alias address (removing the parameter): a phone behind NAT,
/// whose Contact names its private address, is reached at its public one, and a TCP phone over
/// the connection it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactAlias {
    /// When the Contact's address or port is not where the message came from, or over TCP.
    #[default]
    Auto,
    Always,
    Never,
}

/// The Kamailio-style alias value of a peer: `ip~port~t` (t: 1 UDP, 2 TCP).
fn alias_of(p: &Peer) -> String {
    let t = match p.transport {
        Transport::Udp => 1,
        Transport::Tcp => 2,
        Transport::Tls => 3,
    };
    format!("{}~{}~{t}", p.addr.ip(), p.addr.port())
}

/// A Contact value with `;alias=` added to its URI (`*` and values that already have one are
/// kept). A bare URI becomes a name-addr, since its parameters would be header parameters.
fn with_alias(contact: &str, alias: &str) -> String {
    let c = contact.trim();
    if c == "*" {
        return c.to_string();
    }
    // An alias the phone wrote itself is never trusted: only the one Hearken adds counts.
    let stripped;
    let c = match take_alias(c) {
        Some((rest, _, _)) => {
            stripped = rest;
            stripped.as_str()
        }
        None => c,
    };
    match c.find('<').zip(c.find('>')) {
        Some((a, b)) if a < b => format!("{};alias={alias}{}", &c[..b], &c[b..]),
        _ => {
            let (uri, header_params) = c.split_once(';').map_or((c, ""), |(u, p)| (u, p));
            let sep = if header_params.is_empty() { "" } else { ";" };
            format!("<{uri};alias={alias}>{sep}{header_params}")
        }
    }
}

/// The alias parameter of a Request-URI, parsed, and the URI without it.
fn take_alias(uri: &str) -> Option<(String, SocketAddr, Transport)> {
    let lower = uri.to_ascii_lowercase();
    let start = lower.find(";alias=")?;
    let rest = &uri[start + 7..];
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let mut parts = rest[..end].split('~');
    let ip: IpAddr = parts.next()?.trim_matches(['[', ']']).parse().ok()?;
    let port: u16 = parts.next()?.parse().ok().filter(|p| *p != 0)?;
    let transport = match parts.next() {
        Some("2") => Transport::Tcp,
        Some("3") => Transport::Tls,
        Some("1") | None => Transport::Udp,
        _ => return None,
    };
    Some((format!("{}{}", &uri[..start], &rest[end..]), SocketAddr::new(ip, port), transport))
}

/// `agents.path`: when a REGISTER from an agent gets our Path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMode {
    /// Always (a phone that does not say `Supported: path` would otherwise be reached directly,
    /// bypassing Hearken); the registrar must accept Path without it, as Kamailio's does.
    #[default]
    Always,
    /// Only when the phone says `Supported: path` (for registrars that enforce RFC 3327 §5.2).
    WhenSupported,
    Never,
}

#[derive(Debug)]
struct Txn {
    /// Sent over TCP only because of its size (§18.1.1): over UDP if TCP cannot connect.
    udp_fallback: bool,
    upstream: Peer,
    /// Party the request came from.
    side: Party,
    call_id: String,
    forwarded: Option<(Dest, Vec<u8>)>,
    last_response: Option<Vec<u8>>,
    final_seen: bool,
    /// A CANCEL we generated: its responses stop here.
    generated: bool,
    initial_invite: bool,
    expires: Instant,
    /// A request we send over UDP — ours, or one we forward — is retransmitted until a response
    /// (Timers A and E: next time, interval).
    retx: Option<(Instant, Duration)>,
    /// When the transaction gives up without a response (Timers B and F; for an INVITE, without
    /// any response at all).
    give_up: Option<Instant>,
    /// A provisional response came.
    provisional: bool,
    /// Timer C fired after a provisional: the CANCEL went downstream, the final is awaited.
    cancelled: bool,
    /// Hearken answered it itself (408, 503): the ACK of that answer stops here.
    local_final: bool,
}

#[derive(Debug)]
pub struct CallInfo {
    pub id: CallId,
    pub agent_id: String,
    pub meta: CallMeta,
    /// Party that sent the initial INVITE.
    pub caller: Party,
    pub answered: bool,
    pub streams: usize,
    dialog: Dialog,
    /// A 2xx to the INVITE went out and no ACK has come yet: end the call at this time.
    ack_deadline: Option<Instant>,
    /// The SDP offer of the initial INVITE as received (a downstream fork is anchored on it).
    offer: Option<Vec<u8>>,
    /// Index key in `Proxy::dialogs` once the dialog is known.
    dialog_key: Option<DialogKey>,
    /// The downstream dialog (To tag) this call's media belongs to, once a response brought it.
    tag: Option<String>,
    /// Each side's last SDP (as it sent it), given to the media plane.
    sdp: [Option<crate::sdp::Session>; 2],
    /// Each side's SDP as of the last completed offer/answer (a 2xx to INVITE or UPDATE): a
    /// side whose in-dialog offer is refused (a final non-2xx) goes back to it.
    committed: [Option<crate::sdp::Session>; 2],
    /// Each side has offered or answered with ICE.
    ice: [bool; 2],
}

/// Call-ID and the two tags, smaller tag first (either party may send in-dialog requests).
type DialogKey = (String, String, String);

fn dialog_key(call_id: &str, a: &str, b: &str) -> DialogKey {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    (call_id.to_string(), x.to_string(), y.to_string())
}

/// What Hearken needs to end a dialog itself: for each party, where to send (its Contact, the
/// route set towards it, the address its messages came from) and the CSeq it last used.
#[derive(Debug, Default, Clone)]
struct Dialog {
    /// The SIP Call-ID (calls are keyed by transaction and dialog, not by Call-ID alone).
    call_id: String,
    /// From and To of the initial INVITE (To with the callee's tag once it answered).
    from: String,
    to: String,
    contact: [Option<String>; 2],
    peer: [Option<Peer>; 2],
    /// Record-Route entries between Hearken and each party, in the order a request towards it
    /// carries them as Route.
    routes: [Vec<String>; 2],
    cseq: [u32; 2],
    confirmed: bool,
}

/// T1 and T2 (RFC 3261 §17.1.1.1): retransmission interval start and cap.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

pub struct Proxy {
    cfg: ProxyConfig,
    hasher: std::collections::hash_map::RandomState,
    txns: HashMap<(String, String), Txn>,
    /// Transaction deadlines, earliest first (timers as data: the driver asks [`Proxy::poll_timeout`]).
    timers: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, (String, String))>>,
    /// Calls by key: Call-ID and branch of the initial INVITE, joined by a line feed (plus the
    /// To tag for a downstream fork).
    calls: HashMap<String, CallInfo>,
    by_id: HashMap<CallId, String>,
    /// Established or early dialogs, to find an in-dialog request's call.
    dialogs: HashMap<DialogKey, String>,
    /// ACK deadlines of answered calls, earliest first (stale entries skipped).
    call_timers: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, CallId)>>,
    /// New-call token buckets per source IP: (tokens, last refill).
    buckets: HashMap<IpAddr, (f64, Instant)>,
    /// Request token buckets per source IP (flood limit).
    req_buckets: HashMap<IpAddr, (f64, Instant)>,
    next_call: u64,
    pub stats: Arc<SipStats>,
}

impl Proxy {
    pub fn new(cfg: ProxyConfig, stats: Arc<SipStats>) -> Proxy {
        Proxy {
            cfg,
            hasher: Default::default(),
            txns: HashMap::new(),
            timers: Default::default(),
            calls: HashMap::new(),
            by_id: HashMap::new(),
            dialogs: HashMap::new(),
            call_timers: Default::default(),
            buckets: HashMap::new(),
            req_buckets: HashMap::new(),
            next_call: 1,
            stats,
        }
    }

    pub fn side_of(&self, addr: SocketAddr) -> Party {
        if self.cfg.pbx_sources.iter().any(|p| p.matches(addr)) {
            Party::Customer
        } else {
            Party::Agent
        }
    }

    pub fn active_calls(&self) -> impl Iterator<Item = &CallInfo> {
        self.calls.values()
    }
    /// The transactions held now, for the fuzzing invariants' failure messages.
    pub fn transactions_debug(&self) -> Vec<String> {
        self.txns
            .iter()
            .map(|(k, t)| {
                format!(
                    "{k:?} expires={:?} retx={:?} give_up={:?} final={} udp_fallback={}",
                    t.expires, t.retx, t.give_up, t.final_seen, t.udp_fallback
                )
            })
            .collect()
    }

    pub fn transaction_count(&self) -> usize {
        self.txns.len()
    }

    /// Answer for bytes that did not parse: a 400 if enough of a request is there to answer
    /// (RFC 3261 §16.3 step 1), otherwise nothing.
    pub fn handle_malformed(&mut self, raw: &[u8], from: Peer, why: &str) -> Vec<Action> {
        self.stats.malformed.fetch_add(1, Relaxed);
        let Some(req) = salvage_request(raw) else {
            return Vec::new();
        };
        self.stats.answered_locally.fetch_add(1, Relaxed);
        // A request of another SIP version gets 505 (RFC 3261 §8.2.2.1... §21.5.7).
        let other_version = matches!(&req.start, StartLine::Request { version, .. } if version != "SIP/2.0");
        let mut r = if other_version { req.response(505, "Version Not Supported", None) } else { req.response(400, "Bad Request", None) };
        r.push_back("Warning", format!("399 hearken \"{why}\""));
        vec![Action::Send { to: Dest::Peer(from), data: r.to_bytes() }]
    }

    /// Whether a request from `ip` (not the PBX) is within `requests_per_source_per_s`.
    fn within_request_rate(&mut self, ip: IpAddr, now: Instant) -> bool {
        let rate = self.cfg.guards.requests_per_source_per_s;
        if rate <= 0.0 {
            return true;
        }
        if self.req_buckets.len() > 100_000 {
            // A spread-out flood: forget the old buckets rather than grow without bound.
            self.req_buckets.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(2));
        }
        let (tokens, last) = self.req_buckets.entry(ip).or_insert((rate * 2.0, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate * 2.0);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn handle_message(&mut self, msg: Message, from: Peer, now: Instant, media: &mut dyn MediaControl) -> Vec<Action> {
        if msg.is_request() && self.side_of(from.addr) == Party::Agent && !self.within_request_rate(from.addr.ip(), now) {
            self.stats.flood_dropped.fetch_add(1, Relaxed);
            return Vec::new();
        }
        if msg.is_request() {
            self.stats.requests.fetch_add(1, Relaxed);
            self.handle_request(msg, from, now, media)
        } else {
            self.stats.responses.fetch_add(1, Relaxed);
            self.handle_response(msg, from, now, media)
        }
    }

    fn local(&self, req: &Message, from: Peer, code: u16, reason: &str) -> Action {
        self.local_retry(req, from, code, reason, None)
    }

    /// A local answer, with `Retry-After` when capacity will come back (RFC 3261 §21.5.4).
    fn local_retry(&self, req: &Message, from: Peer, code: u16, reason: &str, retry_after: Option<u32>) -> Action {
        self.stats.answered_locally.fetch_add(1, Relaxed);
        let tag = format!("hk{:x}", self.hash(&[req.call_id(), "tag"]) & 0xffff_ffff);
        let mut r = req.response(code, reason, Some(&tag));
        if let Some(s) = retry_after {
            r.push_back("Retry-After", s.to_string());
        }
        Action::Send { to: Dest::Peer(from), data: r.to_bytes() }
    }

    /// Take a token from `ip`'s new-call bucket (false: over the rate).
    fn admit_new_call(&mut self, ip: IpAddr, now: Instant) -> bool {
        let rate = self.cfg.new_calls_per_source_per_s;
        if rate <= 0.0 {
            return true;
        }
        let burst = (2.0 * rate).max(1.0);
        if self.buckets.len() > 10_000 {
            // Full buckets carry no state: forget them.
            self.buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn hash(&self, parts: &[&str]) -> u64 {
        let mut h = self.hasher.build_hasher();
        for p in parts {
            h.write(p.as_bytes());
            h.write_u8(0);
        }
        h.finish()
    }

    /// Our branch for a request: derived from the upstream transaction identity so that
    /// CANCEL and non-2xx ACK map to the INVITE's branch (RFC 3261 §16.11, §17.2.3), and from
    /// the fields that tell a loop from a spiral (§16.6 step 8: Request-URI, From tag, Call-ID,
    /// CSeq number; not the To tag, which the ACK of a non-2xx adds).
    fn derive_branch(&self, msg: &Message) -> String {
        let top = msg.values("via").into_iter().next().unwrap_or_default();
        self.branch_below(msg, &top)
    }

    /// The branch we would give `msg` had `top` been its topmost Via when it reached us.
    fn branch_below(&self, msg: &Message, top: &str) -> String {
        let via = Via::parse(top);
        let txn = match via.as_ref().and_then(|v| v.branch.clone()) {
            Some(b) if b.starts_with("z9hG4bK") => {
                format!("{b}|{}:{:?}", via.as_ref().map_or("", |v| &v.host), via.as_ref().and_then(|v| v.port))
            }
            // RFC 2543 peers: the transaction is Request-URI, To tag, From tag, Call-ID, CSeq
            // number and top Via (§17.2.3).
            _ => top.to_string(),
        };
        let cseq = msg.cseq().map(|c| c.0).unwrap_or(0).to_string();
        let from_tag = msg.header("from").and_then(|f| param(f, "tag")).unwrap_or_default();
        format!("{BRANCH_PREFIX}{:016x}", self.hash(&[&txn, msg.uri().unwrap_or(""), msg.call_id(), &cseq, &from_tag]))
    }

    /// §16.3 step 4: the request carries a Via of ours whose branch is what we would compute
    /// again now (same transaction below it, same Request-URI): it came back unchanged, a loop.
    /// A request that passes us again with another Request-URI is spiralling, and goes on.
    fn is_loop(&self, msg: &Message) -> bool {
        let vias = msg.values("via");
        vias.iter().enumerate().any(|(i, v)| {
            let Some(via) = Via::parse(v) else { return false };
            let ours = via.branch.as_deref().is_some_and(|b| b.starts_with(BRANCH_PREFIX)) && self.is_us(&via.host, via.port);
            ours && vias.get(i + 1).is_some_and(|below| via.branch.as_deref() == Some(self.branch_below(msg, below).as_str()))
        })
    }

    fn is_us(&self, host: &str, port: Option<u16>) -> bool {
        let h = host.trim_matches(['[', ']']);
        let named = h.parse::<IpAddr>().ok() == Some(self.cfg.host) || self.cfg.guards.aliases.iter().any(|a| a.eq_ignore_ascii_case(h));
        let port = port.unwrap_or(5060);
        let agents = self.cfg.agents_iface.is_some_and(|(ip, p)| h.parse::<IpAddr>().ok() == Some(ip) && port == p);
        agents || (named && (port == self.cfg.port || Some(port) == self.cfg.tls_port))
    }

    /// Our address and port as the party on `side` reaches us over `t`: the agent side's own
    /// listener when there is one, the TLS listener for TLS, the SIP listener otherwise.
    fn addr_for(&self, side: Party, t: Transport) -> (String, u16) {
        match (t, side, self.cfg.agents_iface) {
            (Transport::Tls, _, _) => (self.host_text(), self.cfg.tls_port.unwrap_or(self.cfg.port)),
            (_, Party::Agent, Some((ip, port))) => (if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() }, port),
            _ => (self.host_text(), self.cfg.port),
        }
    }

    /// Why a request cannot be handled as it is, as the status and reason to answer (RFC 3261
    /// §16.3, §8.2.2): a top Via without a usable host or port, a Request-URI that is not a URI
    /// (400) or of a scheme a SIP proxy cannot route (416), control characters in a header (400),
    /// a `Proxy-Require` (420: this proxy supports no extension that needs it).
    fn check_request(&self, msg: &Message) -> Option<(u16, &'static str)> {
        let top = msg.values("via").into_iter().next()?;
        let via = Via::parse(&top);
        let host_ok = via.as_ref().is_some_and(|v| {
            !v.host.is_empty()
                && v.host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:_".contains(&b))
                && v.branch.as_deref() != Some("")
        });
        if !host_ok {
            return Some((400, "Bad Via"));
        }
        if let Some(rport) = param(&top, "rport") {
            if !rport.is_empty() && rport.parse::<u16>().is_err() {
                return Some((400, "Bad Via rport"));
            }
        }
        // Control characters only as quoted-pairs (`\` followed by the byte, RFC 3261 §25.1).
        let stray_control = |v: &str| {
            v.as_bytes().windows(2).any(|w| w[1] != b'\t' && w[1].is_ascii_control() && w[0] != b'\\')
                || v.as_bytes().first().is_some_and(|b| *b != b'\t' && b.is_ascii_control())
        };
        if msg.headers.iter().any(|h| stray_control(&h.value)) {
            return Some((400, "Control Characters In Header"));
        }
        // Empty header-field separators (`;;`, `,,`, a trailing `;`).
        for name in ["via", "contact"] {
            let raw: Vec<&str> = msg.headers.iter().filter(|h| h.key() == name).map(|h| h.value.as_str()).collect();
            if raw.iter().any(|v| {
                let v = v.trim();
                v.contains(";;") || v.ends_with(';') || v.ends_with(',') || v.contains(",,") || v.contains(";,") || v.contains(",;")
            }) {
                return Some((400, "Empty Header Field Separators"));
            }
        }
        // Single-value headers given more than once, or with several values.
        for name in ["from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type"] {
            if msg.headers.iter().filter(|h| h.key() == name).count() > 1 || split_values(msg.header(name).unwrap_or("")).len() > 1 {
                return Some((400, "Multiple Values In Single-Value Header"));
            }
        }
        // Quotes must balance in name-addr headers (an unterminated display name).
        for name in ["from", "to", "contact", "route", "record-route"] {
            for h in msg.headers.iter().filter(|h| h.key() == name) {
                let mut open = false;
                let mut escaped = false;
                for b in h.value.bytes() {
                    match (escaped, b) {
                        (true, _) => escaped = false,
                        (false, b'\\') if open => escaped = true,
                        (false, b'"') => open = !open,
                        _ => {}
                    }
                }
                if open {
                    return Some((400, "Unterminated Quoted String"));
                }
            }
        }
        if msg.cseq().is_none() {
            return Some((400, "Bad CSeq"));
        }
        let uri = msg.uri().unwrap_or("");
        let scheme = uri.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sip" | "sips") => {
                // An IPv6 host must be in brackets (RFC 5118 §4.2): a colon left in the host.
                if SipUri::parse(uri).is_none_or(|u| u.host.is_empty() || (u.host.contains(':') && !uri.contains('['))) {
                    return Some((400, "Bad Request-URI"));
                }
            }
            Some("tel") => {}
            Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) => {
                return Some((416, "Unsupported URI Scheme"));
            }
            _ => return Some((400, "Bad Request-URI")),
        }
        if !msg.values("proxy-require").is_empty() {
            return Some((420, "Bad Extension"));
        }
        None
    }

    /// Add the alias of `from` to every Contact of an agent's message when
    /// `agents.contact_alias` says so.
    fn alias_contacts(&self, msg: &mut Message, from: Peer) {
        let contacts = msg.values("contact");
        if contacts.is_empty() || self.cfg.guards.contact_alias == ContactAlias::Never {
            return;
        }
        // A Contact carrying an alias the phone wrote itself always gets ours instead.
        let forged = contacts.iter().any(|c| c.to_ascii_lowercase().contains(";alias="));
        let behind_nat = |c: &str| match SipUri::parse(c) {
            Some(u) => {
                from.transport.is_stream()
                    || u.host.trim_matches(['[', ']']).parse::<IpAddr>().ok() != Some(from.addr.ip())
                    || u.port.unwrap_or(5060) != from.addr.port()
            }
            None => false,
        };
        if self.cfg.guards.contact_alias == ContactAlias::Auto && !forged && !contacts.iter().any(|c| behind_nat(c)) {
            return;
        }
        let alias = alias_of(&from);
        let new: Vec<String> = contacts.iter().map(|c| with_alias(c, &alias)).collect();
        msg.headers.retain(|h| h.key() != "contact");
        msg.push_back("Contact", new.join(", "));
        self.stats.contacts_aliased.fetch_add(1, Relaxed);
    }

    fn handle_request(&mut self, mut msg: Message, from: Peer, now: Instant, media: &mut dyn MediaControl) -> Vec<Action> {
        let method = msg.method().unwrap_or("").to_string();
        let Some((_, cseq_method)) = msg.cseq() else {
            return vec![self.local(&msg, from, 400, "Bad CSeq")];
        };
        if cseq_method != method {
            return vec![self.local(&msg, from, 400, "CSeq Method Mismatch")];
        }
        let side = self.side_of(from.addr);
        // Who may be an agent: the PBX's trust in its proxy must not be lent to any source.
        if side == Party::Agent
            && !self.cfg.guards.agent_sources.is_empty()
            && !self.cfg.guards.agent_sources.iter().any(|n| n.contains(from.addr.ip()))
        {
            self.stats.forbidden.fetch_add(1, Relaxed);
            tracing::debug!(source = %from.addr.ip(), "request from a source that is neither the PBX nor in agents.allow: 403");
            return if method == "ACK" { Vec::new() } else { vec![self.local(&msg, from, 403, "Forbidden")] };
        }
        if let Some((code, reason)) = self.check_request(&msg) {
            self.stats.invalid.fetch_add(1, Relaxed);
            if method == "ACK" {
                return Vec::new();
            }
            let mut r = match Message::parse(&self.local(&msg, from, code, reason).data()) {
                Ok(r) => r,
                Err(_) => return Vec::new(),
            };
            if code == 420 {
                r.push_back("Unsupported", msg.values("proxy-require").join(", "));
            }
            return vec![Action::Send { to: Dest::Peer(from), data: r.to_bytes() }];
        }
        if self.is_loop(&msg) {
            self.stats.loops.fetch_add(1, Relaxed);
            return if method == "ACK" { Vec::new() } else { vec![self.local(&msg, from, 482, "Loop Detected")] };
        }
        let branch = self.derive_branch(&msg);
        // The ACK of a non-2xx final Hearken sent itself is hop by hop: it stops here (§17.2.1).
        if method == "ACK" && self.txns.get(&(branch.clone(), "INVITE".to_string())).is_some_and(|t| t.local_final) {
            return Vec::new();
        }

        // A retransmission of a request we already handle (RFC 3261 §17.2).
        if method != "ACK" {
            if let Some(t) = self.txns.get(&(branch.clone(), method.clone())) {
                self.stats.retransmissions.fetch_add(1, Relaxed);
                if from.transport == Transport::Udp {
                    if let Some(r) = &t.last_response {
                        return vec![Action::Send { to: Dest::Peer(from), data: r.clone() }];
                    }
                    // Over TCP/TLS the request is on its way (or its connection failed, and the
                    // fallback decides): only a UDP copy is sent again.
                    if let Some((d @ Dest::Target(Target { transport: Transport::Udp, .. }), b)) = &t.forwarded {
                        return vec![Action::Send { to: d.clone(), data: b.clone() }];
                    }
                }
                return Vec::new();
            }
        }

        // Max-Forwards (§16.3 step 3, §16.6 step 3).
        match msg.header("max-forwards").map(|v| v.parse::<u32>()) {
            Some(Ok(0)) => return if method == "ACK" { Vec::new() } else { vec![self.local(&msg, from, 483, "Too Many Hops")] },
            Some(Ok(n)) => msg.set("max-forwards", "Max-Forwards", (n - 1).to_string()),
            Some(Err(_)) => return vec![self.local(&msg, from, 400, "Bad Max-Forwards")],
            None => msg.set("max-forwards", "Max-Forwards", "70"),
        }

        if method != "ACK" && self.txns.len() >= self.cfg.guards.max_transactions {
            self.stats.over_transactions.fetch_add(1, Relaxed);
            return vec![self.local_retry(&msg, from, 503, "Transaction Table Full", Some(5))];
        }
        if method == "CANCEL" {
            return self.handle_cancel(msg, from, branch, now);
        }

        // A strict router (RFC 2543) put our Record-Route URI into the Request-URI and the real
        // target last in Route: restore it (§16.4).
        let ruri_is_us = msg.uri().and_then(SipUri::parse).is_some_and(|u| self.is_us(&u.host, u.port) && u.user.is_none());
        if ruri_is_us && !msg.values("route").is_empty() {
            if let Some(last) = msg.pop_last_value("route") {
                let uri = last.trim();
                let uri = uri.strip_prefix('<').and_then(|u| u.split_once('>')).map_or(uri, |(u, _)| u);
                msg.set_uri(uri.to_string());
            }
        }
        // Route pre-processing: drop Route entries that name us (§16.4, loose routing).
        loop {
            let routes = msg.values("route");
            match routes.first().and_then(|r| SipUri::parse(r)) {
                Some(u) if self.is_us(&u.host, u.port) => {
                    msg.pop_first_value("route");
                }
                _ => break,
            }
        }
        let in_dialog = msg.header("to").and_then(|t| param(t, "tag")).is_some();
        // A request from the PBX side to an agent Contact that carries our alias: to the address
        // (and connection) the agent's messages came from, the parameter removed. Only to
        // networks agents may be on: the alias must not make Hearken a relay to anywhere.
        let aliased = match (side, msg.values("route").is_empty(), msg.uri().and_then(take_alias)) {
            (Party::Customer, true, Some((uri, addr, transport)))
                if (self.cfg.guards.agent_sources.is_empty() || self.cfg.guards.agent_sources.iter().any(|n| n.contains(addr.ip())))
                    && !self.is_us(&addr.ip().to_string(), Some(addr.port()))
                    && self.side_of(addr) == Party::Agent =>
            {
                msg.set_uri(uri);
                Some(Target { host: addr.ip().to_string(), port: addr.port(), transport, explicit: true })
            }
            _ => None,
        };
        let target = if let Some(t) = aliased {
            Some(t)
        } else if let Some(r) = msg.values("route").first().and_then(|r| SipUri::parse(r)) {
            Some(Target::from_uri(&r))
        } else {
            let ruri = msg.uri().and_then(SipUri::parse);
            let ruri_is_us = ruri.as_ref().is_none_or(|u| self.is_us(&u.host, u.port));
            match (side, in_dialog, ruri) {
                (_, true, Some(u)) if !ruri_is_us => Some(Target::from_uri(&u)),
                (Party::Agent, _, _) => Some(self.cfg.pbx_route.clone()),
                (Party::Customer, _, Some(u)) if !ruri_is_us => Some(Target::from_uri(&u)),
                (Party::Customer, _, _) => self.cfg.agents_route.clone(),
            }
        };
        let Some(target) = target else {
            return if method == "ACK" { Vec::new() } else { vec![self.local(&msg, from, 404, "No Route To Agent")] };
        };

        let sip_call_id = msg.call_id().to_string();
        let existing = if in_dialog { self.find_dialog(&msg) } else { None };
        // In a dialog we know, the sender is told by its tag, not its address: a party's new
        // connection may come from another address (a phone's TCP or TLS connection from an
        // address the PBX shares, a NAT rebinding).
        // Only that way round: a request from an agent network never becomes the customer's.
        let side = match existing.as_ref().and_then(|k| self.calls.get(k)) {
            Some(c) if side == Party::Customer => {
                let from_tag = msg.header("from").and_then(|f| param(f, "tag"));
                if from_tag.is_some() && from_tag == param(&c.dialog.from, "tag") {
                    c.caller
                } else {
                    c.caller.other()
                }
            }
            _ => side,
        };
        if method == "BYE" && side == Party::Agent && existing.is_none() {
            self.stats.unknown_agent_byes.fetch_add(1, Relaxed);
            tracing::debug!(source = %from.addr.ip(), "BYE from an agent for a call Hearken never saw (bypassed, or older than this process)");
        }
        // After a restart, a re-INVITE or UPDATE with SDP may arrive for a dialog this process
        // never saw: it is anchored anew (as a call of its own) rather than passed un-anchored,
        // which would let its media bypass the relay.
        let resumed = in_dialog && matches!(method.as_str(), "INVITE" | "UPDATE") && msg.has_sdp() && existing.is_none();
        let initial_invite = (method == "INVITE" && !in_dialog) || resumed;
        // Each initial INVITE transaction is a call of its own (upstream forking).
        let call_id = if initial_invite { format!("{sip_call_id}\n{branch}") } else { existing.unwrap_or_default() };
        // The PBX is the contact centre's own trunk: its volume is bounded by limits.max_calls;
        // every other source is held to the per-source rate.
        if initial_invite && side == Party::Agent && !self.admit_new_call(from.addr.ip(), now) {
            self.stats.rate_limited.fetch_add(1, Relaxed);
            tracing::debug!(source = %from.addr.ip(), "new call over the per-source rate, 503");
            return vec![self.local_retry(&msg, from, 503, "Call Rate Exceeded", Some(1))];
        }
        if resumed {
            self.stats.resumed_dialogs.fetch_add(1, Relaxed);
        }
        if let Some(c) = self.calls.get_mut(&call_id) {
            let d = &mut c.dialog;
            if let Some((n, _)) = msg.cseq() {
                d.cseq[side.idx()] = d.cseq[side.idx()].max(n);
            }
            if method == "ACK" {
                c.ack_deadline = None;
            }
        }
        if initial_invite {
            let id = CallId(self.next_call);
            self.next_call += 1;
            let agent_id = self.agent_id(&msg, side);
            let queue = self
                .cfg
                .queue_header
                .as_deref()
                .and_then(|h| msg.header(&h.to_ascii_lowercase()))
                .map(sanitize_label)
                .unwrap_or_else(|| "default".into());
            let named = if side == Party::Customer { msg.header("from") } else { msg.header("to") };
            let customer_name = named.and_then(display_name);
            let meta = CallMeta { agent_id: agent_id.clone(), queue, customer_name, input: Input::Relay };
            let mut dialog = Dialog {
                call_id: sip_call_id.clone(),
                from: msg.header("from").unwrap_or_default().to_string(),
                to: msg.header("to").unwrap_or_default().to_string(),
                ..Default::default()
            };
            dialog.contact[side.idx()] = msg.header("contact").map(addr_spec);
            dialog.peer[side.idx()] = Some(from);
            // Record-Route entries already in the INVITE lead back to its sender, in order.
            dialog.routes[side.idx()] = msg.values("record-route");
            dialog.cseq[side.idx()] = msg.cseq().map_or(1, |c| c.0);
            self.calls.insert(
                call_id.clone(),
                CallInfo {
                    id,
                    agent_id,
                    meta,
                    caller: side,
                    answered: false,
                    streams: 0,
                    dialog,
                    ack_deadline: None,
                    offer: msg.has_sdp().then(|| msg.body.clone()),
                    dialog_key: None,
                    tag: None,
                    sdp: [None, None],
                    committed: [None, None],
                    ice: [false, false],
                },
            );
            if resumed {
                self.index_dialog(&call_id, &msg);
            }
            self.by_id.insert(id, call_id.clone());
            self.stats.calls_started.fetch_add(1, Relaxed);
        }
        if msg.has_sdp() && self.calls.contains_key(&call_id) {
            if let Err(e) = self.anchor(&mut msg, &call_id, side, media) {
                if initial_invite {
                    self.end_call(&call_id, EndReason::Rejected(e.sip_status()), media);
                }
                if matches!(e, AnchorError::Open(OpenError::TooManyCalls | OpenError::TooManyStreams)) {
                    self.stats.over_limit.fetch_add(1, Relaxed);
                }
                return match method.as_str() {
                    "ACK" => Vec::new(),
                    _ => vec![self.local_retry(&msg, from, e.sip_status(), e.sip_reason(), e.retry_after())],
                };
            }
        }

        // Upstream Via: note where it really came from (RFC 3261 §18.2.1, RFC 3581 §4).
        let upstream_transport = from.transport;
        if let Some(v) = msg.values("via").first().cloned() {
            if let Some(via) = Via::parse(&v) {
                let mut nv = v.clone();
                if via.host.parse::<IpAddr>().ok() != Some(from.addr.ip()) && via.received.is_none() {
                    nv.push_str(&format!(";received={}", from.addr.ip()));
                }
                if via.rport == Some(None) {
                    nv = nv.replacen(";rport", &format!(";rport={}", from.addr.port()), 1);
                    if via.received.is_none() && !nv.contains(";received=") {
                        nv.push_str(&format!(";received={}", from.addr.ip()));
                    }
                }
                if nv != v {
                    msg.replace_first_value("via", nv);
                }
            }
        }
        let hundred = (method == "INVITE").then(|| msg.response(100, "Trying", None).to_bytes());
        // RFC 3261 §18.1.1: a request over 1300 bytes (with the Via and Record-Route we add)
        // goes over TCP when it would have gone over UDP, unless the URI asked for UDP; if that
        // connection cannot be made it is sent over UDP after all (handle_unreachable).
        let mut target = target;
        let mut size_switched = false;
        if target.transport == Transport::Udp && !target.explicit && msg.to_bytes().len() + 200 > 1300 {
            target.transport = Transport::Tcp;
            size_switched = true;
            self.stats.size_to_tcp.fetch_add(1, Relaxed);
        }
        let host = self.host_text();
        let (via_host, via_port) = self.addr_for(side.other(), target.transport);
        msg.push_front("Via", format!("SIP/2.0/{} {via_host}:{via_port};branch={branch}", target.transport.via_name()));
        if matches!(method.as_str(), "INVITE" | "SUBSCRIBE" | "REFER" | "NOTIFY") {
            let rr = |side: Party, t: Transport| {
                let (h, p) = self.addr_for(side, t);
                match t {
                    Transport::Udp => format!("<sip:{h}:{p};lr>"),
                    Transport::Tcp => format!("<sip:{h}:{p};lr;transport=tcp>"),
                    Transport::Tls => format!("<sip:{h}:{p};lr;transport=tls>"),
                }
            };
            let (up, down) = (rr(side, upstream_transport), rr(side.other(), target.transport));
            if up == down {
                msg.push_front("Record-Route", down);
            } else {
                // RFC 5658 double Record-Route: each side is told the interface and transport
                // it reaches us by (the callee reads the top entry, the caller the bottom one).
                msg.push_front("Record-Route", up);
                msg.push_front("Record-Route", down);
            }
        }
        let path = match self.cfg.guards.path {
            PathMode::Always => true,
            PathMode::WhenSupported => msg.values("supported").iter().any(|s| s.eq_ignore_ascii_case("path")),
            PathMode::Never => false,
        };
        if method == "REGISTER" && side == Party::Agent && path {
            // RFC 3327: the registrar sends requests for this contact back through us. A phone
            // that does not say `Supported: path` gets it said for it, so a registrar that
            // enforces §5.2 (Kamailio's default path_mode) keeps the Path rather than refuse.
            msg.push_front("Path", format!("<sip:{host}:{};lr>", self.cfg.port));
            if !msg.values("supported").iter().any(|s| s.eq_ignore_ascii_case("path")) {
                msg.push_back("Supported", "path");
            }
        }
        if side == Party::Agent {
            self.alias_contacts(&mut msg, from);
        }
        if method == "BYE" {
            if let Some(c) = self.calls.get(&call_id) {
                tracing::info!(call = %c.id, agent = %c.agent_id, from = side.name(), "call hangup");
            }
        }
        let data = msg.to_bytes();
        let mut out = Vec::with_capacity(2);
        if let Some(h) = hundred {
            out.push(Action::Send { to: Dest::Peer(from), data: h });
        }
        out.push(Action::Send { to: Dest::Target(target.clone()), data: data.clone() });
        if method != "ACK" {
            let life = if method == "INVITE" { self.cfg.guards.timer_c } else { self.cfg.linger };
            self.arm((branch.clone(), method.clone()), now + life);
            // Over UDP, the forwarded request is sent again until a response comes (§17.1).
            let retx = (target.transport == Transport::Udp).then_some((now + T1, T1));
            if let Some((at, _)) = retx {
                self.arm((branch.clone(), method.clone()), at);
            }
            let give_up = now + 64 * T1;
            self.arm((branch.clone(), method.clone()), give_up);
            self.txns.insert(
                (branch, method),
                Txn {
                    udp_fallback: size_switched,
                    upstream: from,
                    side,
                    call_id,
                    forwarded: Some((Dest::Target(target), data)),
                    last_response: None,
                    final_seen: false,
                    generated: false,
                    initial_invite,
                    expires: now + life,
                    retx,
                    give_up: Some(give_up),
                    provisional: false,
                    cancelled: false,
                    local_final: false,
                },
            );
        }
        out
    }

    fn handle_cancel(&mut self, msg: Message, from: Peer, branch: String, now: Instant) -> Vec<Action> {
        let key = (branch.clone(), "INVITE".to_string());
        let Some(t) = self.txns.get(&key) else {
            return vec![self.local(&msg, from, 481, "Call/Transaction Does Not Exist")];
        };
        let ok = self.local(&msg, from, 200, "OK");
        if t.final_seen {
            return vec![ok];
        }
        let mut out = vec![ok.clone()];
        out.extend(self.cancel_downstream(&key, from, now));
        // A retransmission of this CANCEL gets the same 200 (§17.2.3), it is not sent on again.
        if let (Some(t), Action::Send { data, .. }) = (self.txns.get_mut(&(branch, "CANCEL".into())), ok) {
            t.last_response = Some(data);
        }
        out
    }

    /// A CANCEL for the INVITE transaction `key`, as it was forwarded (§9.1: same Request-URI,
    /// Call-ID, To, From, CSeq number and top Via; Route copied), kept as a generated
    /// transaction (retransmitted over UDP; its responses stop here).
    fn cancel_downstream(&mut self, key: &(String, String), upstream: Peer, now: Instant) -> Option<Action> {
        let t = self.txns.get(key)?;
        let (dest, bytes) = t.forwarded.clone()?;
        let inv = Message::parse(&bytes).ok()?;
        let mut headers = Vec::new();
        for h in &inv.headers {
            match h.key().as_str() {
                "from" | "to" | "call-id" | "route" => headers.push(h.clone()),
                _ => {}
            }
        }
        let top_via = inv.values("via").into_iter().next().unwrap_or_default();
        let mut cancel = Message {
            start: StartLine::Request { method: "CANCEL".into(), uri: inv.uri().unwrap_or("").to_string(), version: "SIP/2.0".into() },
            headers,
            body: Vec::new(),
        };
        cancel.push_front("Via", top_via);
        cancel.push_back("Max-Forwards", "70");
        cancel.push_back("CSeq", format!("{} CANCEL", inv.cseq().map(|c| c.0).unwrap_or(1)));
        let data = cancel.to_bytes();
        let (call_id, side) = (t.call_id.clone(), t.side);
        let udp = matches!(&dest, Dest::Target(t) if t.transport == Transport::Udp)
            || matches!(&dest, Dest::Peer(p) if p.transport == Transport::Udp);
        let retx = udp.then_some((now + T1, T1));
        let ckey = (key.0.clone(), "CANCEL".to_string());
        self.arm(ckey.clone(), now + self.cfg.linger);
        if let Some((at, _)) = retx {
            self.arm(ckey.clone(), at);
        }
        self.txns.insert(
            ckey,
            Txn {
                udp_fallback: false,
                upstream,
                side,
                call_id,
                forwarded: Some((dest.clone(), data.clone())),
                last_response: None,
                final_seen: false,
                generated: true,
                initial_invite: false,
                expires: now + self.cfg.linger,
                retx,
                give_up: None,
                provisional: false,
                cancelled: false,
                local_final: false,
            },
        );
        Some(Action::Send { to: dest, data })
    }

    /// A final response `code` to the upstream side of transaction `key`, built from the request
    /// as forwarded (our Via removed), remembered for retransmissions.
    /// An in-dialog offer from `side` refused (by the far end, or by Hearken itself: 408, 503):
    /// the offerer's media goes back to what the last completed offer/answer gave it (RFC 3261
    /// §14.1: the session is unchanged). Per side, so two offers crossing (glare, 491) each go
    /// back to their own; with ICE the addresses the checks selected are kept.
    fn roll_back_offer(&mut self, call_id: &str, side: Party, code: u16, media: &mut dyn MediaControl) {
        let Some(c) = self.calls.get_mut(call_id) else { return };
        let x = side.idx();
        let mut back = c.committed[x].clone();
        if let (true, Some(b), Some(r)) = (c.ice[x], back.as_mut(), c.sdp[x].as_ref()) {
            for (m, n) in b.media.iter_mut().zip(&r.media) {
                (m.addr, m.port, m.rtcp_port) = (n.addr, n.port, n.rtcp_port);
            }
        }
        if let Some(s) = back.filter(|s| c.sdp[x].as_ref() != Some(s)) {
            media.remote(c.id, side, &s);
            c.sdp[x] = Some(s);
            self.stats.offers_rolled_back.fetch_add(1, Relaxed);
            tracing::info!(call = %c.id, status = code, "in-dialog offer refused: media back to the previous SDP");
        }
    }

    fn respond_upstream(&mut self, key: &(String, String), code: u16, reason: &str, media: &mut dyn MediaControl) -> Option<Action> {
        let t = self.txns.get_mut(key)?;
        if (key.1 == "INVITE" || key.1 == "UPDATE") && !t.initial_invite && !t.final_seen {
            let (call_id, side) = (t.call_id.clone(), t.side);
            self.roll_back_offer(&call_id, side, code, media);
        }
        let t = self.txns.get_mut(key)?;
        // Whatever happens below, this transaction has its final now (a local one, or none
        // that could be sent): it expires at its linger time instead of firing again.
        t.final_seen = true;
        let (_, bytes) = t.forwarded.as_ref()?;
        let mut req = Message::parse(bytes).ok()?;
        req.pop_first_value("via");
        if req.values("via").is_empty() || key.1 == "ACK" {
            return None;
        }
        let r = req.response(code, reason, None).to_bytes();
        t.last_response = Some(r.clone());
        t.final_seen = true;
        t.local_final = true;
        t.retx = None;
        Some(Action::Send { to: Dest::Peer(t.upstream), data: r })
    }

    /// The driver could not deliver a request we forwarded (its next hop did not resolve, or a
    /// TCP connection to it failed): 503 upstream (§16.9), and the call ends if it was one.
    pub fn handle_unreachable(&mut self, data: &[u8], now: Instant, media: &mut dyn MediaControl) -> Vec<Action> {
        let Ok(msg) = Message::parse(data) else { return Vec::new() };
        let (Some(method), Some(branch)) =
            (msg.method().map(str::to_string), msg.values("via").first().and_then(|v| Via::parse(v)).and_then(|v| v.branch))
        else {
            return Vec::new();
        };
        let key = (branch, method);
        let Some(t) = self.txns.get_mut(&key) else { return Vec::new() };
        if t.final_seen || t.generated {
            return Vec::new();
        }
        // Sent over TCP for its size only: over UDP after all (§18.1.1), Via changed to match.
        // A failure of a transport the request no longer uses (the fallback already happened).
        if matches!(&t.forwarded, Some((Dest::Target(f), _)) if f.transport == Transport::Udp)
            && msg.values("via").first().is_some_and(|v| !v.contains("/UDP "))
        {
            return Vec::new();
        }
        if t.udp_fallback {
            t.udp_fallback = false;
            if let Some((Dest::Target(target), _)) = &t.forwarded {
                let mut m = msg.clone();
                if let Some(v) = m.values("via").first() {
                    m.replace_first_value("via", v.replacen("SIP/2.0/TCP", "SIP/2.0/UDP", 1));
                }
                // Our Record-Route towards this hop named TCP: UDP now (one entry again when
                // the other side is on UDP too).
                let rr = m.values("record-route");
                if let Some(top) = rr.first().filter(|v| v.contains(";transport=tcp")) {
                    let udp = top.replacen(";transport=tcp", "", 1);
                    if rr.get(1) == Some(&udp) {
                        m.pop_first_value("record-route");
                    } else {
                        m.replace_first_value("record-route", udp);
                    }
                }
                let target = Target { transport: Transport::Udp, explicit: true, ..target.clone() };
                let data = m.to_bytes();
                t.forwarded = Some((Dest::Target(target.clone()), data.clone()));
                t.retx = Some((now + T1, T1));
                self.arm(key, now + T1);
                self.stats.size_fallback_udp.fetch_add(1, Relaxed);
                tracing::info!("TCP for a large request failed: sent over UDP");
                return vec![Action::Send { to: Dest::Target(target), data }];
            }
        }
        let (call_id, initial) = (t.call_id.clone(), t.initial_invite);
        self.stats.unreachable.fetch_add(1, Relaxed);
        tracing::info!(method = %key.1, "next hop unreachable: 503 upstream");
        let out = self.respond_upstream(&key, 503, "Service Unavailable", media).into_iter().collect();
        if initial {
            self.end_call(&call_id, EndReason::Rejected(503), media);
        }
        out
    }

    fn handle_response(&mut self, mut msg: Message, from: Peer, now: Instant, media: &mut dyn MediaControl) -> Vec<Action> {
        let top = msg.values("via").into_iter().next().unwrap_or_default();
        let Some(via) = Via::parse(&top) else {
            self.stats.stray_responses.fetch_add(1, Relaxed);
            return Vec::new();
        };
        let ours = via.branch.as_deref().is_some_and(|b| b.starts_with(BRANCH_PREFIX)) && self.is_us(&via.host, via.port);
        let Some((_, method)) = msg.cseq() else {
            return Vec::new();
        };
        let code = msg.status().unwrap_or(0);
        if !ours {
            self.stats.stray_responses.fetch_add(1, Relaxed);
            return Vec::new();
        }
        let key = (via.branch.clone().unwrap_or_default(), method.clone());
        msg.pop_first_value("via");
        let Some(t) = self.txns.get(&key) else {
            // Transaction gone (e.g. a late 2xx retransmission): route statelessly by the next
            // Via (§16.11).
            self.stats.stray_responses.fetch_add(1, Relaxed);
            return match msg.values("via").first().and_then(|v| Via::parse(v)) {
                Some(next) => {
                    let host = next.received.clone().unwrap_or(next.host.clone());
                    let port = next.rport.flatten().or(next.port).unwrap_or(5060);
                    let transport = match next.transport.as_str() {
                        "TCP" => Transport::Tcp,
                        "TLS" => Transport::Tls,
                        _ => Transport::Udp,
                    };
                    vec![Action::Send { to: Dest::Target(Target { host, port, transport, explicit: true }), data: msg.to_bytes() }]
                }
                None => Vec::new(),
            };
        };
        if t.generated {
            if code >= 200 {
                if let Some(t) = self.txns.get_mut(&key) {
                    t.final_seen = true;
                    t.retx = None;
                }
            }
            return Vec::new();
        }
        let (upstream, req_side, mut call_id, initial) = (t.upstream, t.side, t.call_id.clone(), t.initial_invite);
        // Client transaction timers (§17.1): an INVITE stops retransmitting at any response and
        // restarts Timer C at each provisional (§16.7 step 2); a non-INVITE retransmits at T2
        // after a provisional and stops at the final.
        let timer_c = self.cfg.guards.timer_c;
        let mut rearm = Vec::new();
        if let Some(t) = self.txns.get_mut(&key) {
            if method == "INVITE" {
                t.retx = None;
                t.give_up = None;
                if (101..200).contains(&code) && !t.final_seen && !t.cancelled {
                    t.expires = now + timer_c;
                    rearm.push(t.expires);
                }
            } else if code < 200 {
                if let Some((at, _)) = t.retx {
                    t.retx = Some((at.max(now), T2));
                }
            } else {
                t.retx = None;
                t.give_up = None;
            }
            if code < 200 {
                t.provisional = true;
            }
        }
        for at in rearm {
            self.arm(key.clone(), at);
        }
        // 100 Trying is hop by hop: it stops here (§16.7 step 5).
        if code == 100 {
            return Vec::new();
        }
        if !initial && (method == "INVITE" || method == "UPDATE") && code >= 300 {
            self.roll_back_offer(&call_id, req_side, code, media);
        }
        if msg.values("via").is_empty() {
            return Vec::new();
        }
        // Each downstream dialog (To tag) that brings media — early media in a 18x, or the 2xx —
        // has its own relay ports: the first one binds the call, others fork calls of their own.
        let dialog_tag = msg.header("to").and_then(|v| param(v, "tag"));
        let brings_media = (101..300).contains(&code) && (msg.has_sdp() || code >= 200);
        if let (true, true, Some(to_tag)) = (method == "INVITE" && initial, brings_media, dialog_tag.as_deref()) {
            match self.calls.get_mut(&call_id).map(|c| c.tag.get_or_insert_with(|| to_tag.to_string()).clone()) {
                Some(bound) if bound != to_tag => call_id = self.fork_for(&call_id, to_tag, media),
                _ => {}
            }
        }
        // An answer that cannot be anchored is passed on unchanged so the call still works.
        if msg.has_sdp() && self.calls.contains_key(&call_id) && code < 300 {
            // Counted in `anchor` (bad SDP or ports exhausted); the answer goes on as it is.
            let _ = self.anchor(&mut msg, &call_id, req_side.other(), media);
        }
        if (method == "INVITE" || method == "UPDATE") && (200..300).contains(&code) {
            if let Some(c) = self.calls.get_mut(&call_id) {
                c.committed = c.sdp.clone();
            }
        }
        if req_side == Party::Customer && code < 300 {
            self.alias_contacts(&mut msg, from);
        }
        let data = msg.to_bytes();
        let mut rearm = None;
        if let Some(t) = self.txns.get_mut(&key) {
            t.last_response = Some(data.clone());
            if code >= 200 && !t.final_seen {
                t.final_seen = true;
                t.expires = now + self.cfg.linger;
                rearm = Some(t.expires);
            }
        }
        if let Some(at) = rearm {
            self.arm(key.clone(), at);
        }
        if method == "INVITE" && initial {
            if code >= 300 {
                let reason = if code == 487 { EndReason::Cancelled } else { EndReason::Rejected(code) };
                self.end_call(&call_id, reason, media);
            } else if (200..300).contains(&code) {
                let callee = req_side.other();
                let us = |v: &String| SipUri::parse(v).is_some_and(|u| self.is_us(&u.host, u.port));
                let rr = msg.values("record-route");
                // Entries above ours were added downstream: towards the callee, nearest first.
                let downstream: Vec<String> = rr.iter().take_while(|v| !us(v)).cloned().collect();
                if let Some(c) = self.calls.get_mut(&call_id) {
                    let d = &mut c.dialog;
                    d.to = msg.header("to").unwrap_or_default().to_string();
                    d.contact[callee.idx()] = msg.header("contact").map(addr_spec);
                    d.peer[callee.idx()] = Some(from);
                    d.routes[callee.idx()] = downstream.into_iter().rev().collect();
                    d.confirmed = true;
                    if !c.answered {
                        c.answered = true;
                        tracing::info!(call = %c.id, agent = %c.agent_id, "call answered");
                        // RFC 3261 §13.3.1.4: without an ACK within 64×T1 the dialog is dead.
                        let at = now + 64 * T1;
                        c.ack_deadline = Some(at);
                        self.call_timers.push(std::cmp::Reverse((at, c.id)));
                    }
                }
                self.index_dialog(&call_id, &msg);
                // Early dialogs of the same INVITE that did not answer lost (RFC 3261 §13.2.2.4
                // ends them at the caller): their ports go back now.
                let base = t_key_base(&call_id);
                let losers: Vec<String> = self
                    .calls
                    .iter()
                    .filter(|(k, c)| k.as_str() != call_id && t_key_base(k) == base && !c.dialog.confirmed)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in losers {
                    self.end_call(&k, EndReason::Closed, media);
                }
            }
        }
        if method == "BYE" && code >= 200 {
            self.end_call(&call_id, EndReason::Bye, media);
        }
        vec![Action::Send { to: Dest::Peer(upstream), data }]
    }

    /// The call an in-dialog request belongs to: by Call-ID and tags, or (an early dialog, a
    /// dialog whose answer Hearken did not see) the one call with that Call-ID when there is
    /// only one.
    fn find_dialog(&self, msg: &Message) -> Option<String> {
        let cid = msg.call_id();
        let tag = |h: &str| msg.header(h).and_then(|v| param(v, "tag")).unwrap_or_default();
        if let Some(k) = self.dialogs.get(&dialog_key(cid, &tag("from"), &tag("to"))) {
            return Some(k.clone());
        }
        // Unambiguous by Call-ID alone (no fork): tolerant of a peer that got a tag wrong.
        let mut it = self.calls.iter().filter(|(_, c)| c.dialog.call_id == cid);
        match (it.next(), it.next()) {
            (Some((k, _)), None) => Some(k.clone()),
            _ => None,
        }
    }

    /// Remember the dialog (Call-ID and both tags of `msg`) as `key`'s.
    fn index_dialog(&mut self, key: &str, msg: &Message) {
        let tag = |h: &str| msg.header(h).and_then(|v| param(v, "tag"));
        let (Some(a), Some(b)) = (tag("from"), tag("to")) else { return };
        let dk = dialog_key(msg.call_id(), &a, &b);
        if let Some(c) = self.calls.get_mut(key) {
            if let Some(old) = c.dialog_key.replace(dk.clone()) {
                self.dialogs.remove(&old);
            }
            self.dialogs.insert(dk, key.to_string());
        }
    }

    /// Media from another downstream dialog (another To tag: a forking proxy's second branch,
    /// in early media or a second 2xx) for an INVITE whose call already has its dialog: a call
    /// of its own, anchored on fresh ports from the original offer, so each branch's early media
    /// reaches the caller and the caller can keep or end either dialog. Returns the key to
    /// handle the response under.
    fn fork_for(&mut self, key: &str, to_tag: &str, media: &mut dyn MediaControl) -> String {
        let fork_key = format!("{key}\n{to_tag}");
        if self.calls.contains_key(&fork_key) {
            return fork_key;
        }
        let Some(base) = self.calls.get(key) else { return key.to_string() };
        let id = CallId(self.next_call);
        self.next_call += 1;
        let mut dialog = base.dialog.clone();
        dialog.confirmed = false;
        let info = CallInfo {
            id,
            agent_id: base.agent_id.clone(),
            meta: base.meta.clone(),
            caller: base.caller,
            answered: false,
            streams: 0,
            dialog,
            ack_deadline: None,
            offer: base.offer.clone(),
            dialog_key: None,
            tag: Some(to_tag.to_string()),
            sdp: [None, None],
            committed: [None, None],
            ice: [false, false],
        };
        let (offer, meta, caller) = (info.offer.clone(), info.meta.clone(), info.caller);
        self.calls.insert(fork_key.clone(), info);
        self.by_id.insert(id, fork_key.clone());
        self.stats.calls_started.fetch_add(1, Relaxed);
        tracing::info!(call = %id, "another downstream dialog brought media: a call of its own");
        if let Some(offer) = offer {
            // The caller's side as it offered: announced to the new call's media plane.
            let _ = anchor::anchor(&offer, id, &meta, caller, self.media_host(caller.other()), media);
        }
        fork_key
    }

    /// Rewrite the SDP of `msg` (sent by `sender`) to point at the relay.
    fn anchor(&mut self, msg: &mut Message, call_id: &str, sender: Party, media: &mut dyn MediaControl) -> Result<(), AnchorError> {
        let host = self.media_host(sender.other());
        let call = self.calls.get_mut(call_id).ok_or(AnchorError::BadSdp)?;
        match anchor::anchor(&msg.body, call.id, &call.meta, sender, host, media) {
            Ok(a) => {
                call.streams = call.streams.max(a.session.media.len());
                call.sdp[sender.idx()] = Some(a.session);
                call.ice[sender.idx()] |= msg.body.windows(10).any(|w| w.eq_ignore_ascii_case(b"a=ice-ufra"));
                msg.body = a.body;
                Ok(())
            }
            Err(e) => {
                match e {
                    AnchorError::BadSdp => self.stats.bad_sdp.fetch_add(1, Relaxed),
                    AnchorError::Open(OpenError::PortsExhausted) => self.stats.ports_exhausted.fetch_add(1, Relaxed),
                    AnchorError::Open(_) => 0,
                };
                Err(e)
            }
        }
    }

    /// The relay address `receiver` is told to send media to.
    fn media_host(&self, receiver: Party) -> IpAddr {
        self.cfg.media_hosts[receiver.idx()]
    }

    fn agent_id(&self, msg: &Message, sender: Party) -> String {
        let raw = if let Some(h) = self.cfg.agent_id_header.as_deref().and_then(|h| msg.header(&h.to_ascii_lowercase())) {
            Some(h.to_string())
        } else if sender == Party::Customer {
            // The dialled address of record (To), not the Request-URI: once the registrar has
            // resolved the AoR, the Request-URI is the phone's Contact (`agent7-0x55be…`).
            msg.header("to").and_then(SipUri::parse).and_then(|u| u.user).or_else(|| msg.uri().and_then(SipUri::parse).and_then(|u| u.user))
        } else {
            msg.header("from").and_then(SipUri::parse).and_then(|u| u.user)
        };
        sanitize_label(raw.as_deref().unwrap_or(""))
    }

    fn end_call(&mut self, call_id: &str, reason: EndReason, media: &mut dyn MediaControl) {
        if let Some(c) = self.calls.remove(call_id) {
            self.by_id.remove(&c.id);
            if let Some(dk) = &c.dialog_key {
                self.dialogs.remove(dk);
            }
            self.stats.calls_ended.fetch_add(1, Relaxed);
            tracing::info!(call = %c.id, agent = %c.agent_id, reason = reason.label(), "call ended");
            media.close(c.id, reason);
        }
    }

    /// The media plane ended a call on its own (no media, a dead leg, an offer/answer that
    /// never completed): forget it, and if its dialog was established, end it at both parties
    /// with a BYE each (route set, Contact and CSeq from the dialog) so nobody sits on a dead
    /// line and the PBX's resources are freed.
    pub fn handle_media_ended(&mut self, call: CallId, reason: EndReason, now: Instant) -> Vec<Action> {
        let Some(cid) = self.by_id.remove(&call) else {
            return Vec::new();
        };
        let Some(c) = self.calls.remove(&cid) else {
            return Vec::new();
        };
        if let Some(dk) = &c.dialog_key {
            self.dialogs.remove(dk);
        }
        self.stats.calls_ended.fetch_add(1, Relaxed);
        tracing::info!(call = %c.id, agent = %c.agent_id, reason = reason.label(), "call ended by the media plane");
        self.teardown(&cid, &c, reason, now)
    }

    /// BYE to both parties of an established dialog (nothing for one that never confirmed).
    fn teardown(&mut self, call_id: &str, c: &CallInfo, reason: EndReason, now: Instant) -> Vec<Action> {
        if !c.dialog.confirmed {
            return Vec::new();
        }
        self.stats.teardowns.fetch_add(1, Relaxed);
        let mut out = Vec::new();
        for to in Party::ALL {
            if let Some(a) = self.bye_towards(call_id, c, to, reason, now) {
                out.push(a);
            }
        }
        out
    }

    /// A BYE to `to`, as if sent by the other party (RFC 3261 §15.1.1, §12.2.1.1).
    fn bye_towards(&mut self, call_id: &str, c: &CallInfo, to: Party, reason: EndReason, now: Instant) -> Option<Action> {
        let d = &c.dialog;
        let (from_h, to_h) = if to == c.caller { (&d.to, &d.from) } else { (&d.from, &d.to) };
        let uri = d.contact[to.idx()].clone().unwrap_or_else(|| addr_spec(to_h));
        // It becomes a request line: a URI with spaces or control characters cannot be sent.
        if uri.is_empty() || !uri.contains(':') || uri.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return None;
        }
        let routes = &d.routes[to.idx()];
        let dest = match (routes.first().and_then(|r| SipUri::parse(r)), d.peer[to.idx()]) {
            (Some(r), _) => Dest::Target(Target::from_uri(&r)),
            (None, Some(p)) => Dest::Peer(p),
            (None, None) => Dest::Target(Target::from_uri(&SipUri::parse(&uri)?)),
        };
        let transport = match &dest {
            Dest::Peer(p) => p.transport,
            Dest::Target(t) => t.transport,
        };
        let branch = format!("{BRANCH_PREFIX}{:016x}", self.hash(&[call_id, to.name(), "teardown"]));
        let (via_host, via_port) = self.addr_for(to, transport);
        let mut bye = Message {
            start: StartLine::Request { method: "BYE".into(), uri, version: "SIP/2.0".into() },
            headers: Vec::new(),
            body: Vec::new(),
        };
        bye.push_back("Via", format!("SIP/2.0/{} {via_host}:{via_port};branch={branch}", transport.via_name()));
        bye.push_back("Max-Forwards", "70");
        for r in routes {
            bye.push_back("Route", r.clone());
        }
        bye.push_back("From", from_h.clone());
        bye.push_back("To", to_h.clone());
        bye.push_back("Call-ID", d.call_id.clone());
        let cseq = d.cseq[to.other().idx()].saturating_add(1);
        bye.push_back("CSeq", format!("{cseq} BYE"));
        // RFC 3326: why the call ended.
        bye.push_back("Reason", format!("SIP;cause=408;text=\"hearken: {}\"", reason.label()));
        bye.push_back("User-Agent", "Hearken");
        bye.push_back("Content-Length", "0");
        let data = bye.to_bytes();
        let key = (branch, "BYE".to_string());
        let expires = now + 64 * T1;
        let retx = (transport == Transport::Udp).then_some((now + T1, T1));
        self.arm(key.clone(), expires);
        if let Some((at, _)) = retx {
            self.arm(key.clone(), at);
        }
        self.txns.insert(
            key,
            Txn {
                udp_fallback: false,
                upstream: Peer { addr: SocketAddr::new(self.cfg.host, self.cfg.port), transport, conn: None },
                side: to.other(),
                call_id: call_id.to_string(),
                forwarded: Some((dest.clone(), data.clone())),
                last_response: None,
                final_seen: false,
                give_up: None,
                provisional: false,
                cancelled: false,
                local_final: false,
                generated: true,
                initial_invite: false,
                expires,
                retx,
            },
        );
        Some(Action::Send { to: dest, data })
    }

    fn host_text(&self) -> String {
        match self.cfg.host {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        }
    }

    /// Put a transaction's deadline in the timer table (an earlier entry for the same key goes
    /// stale: it is skipped when it comes up).
    fn arm(&mut self, key: (String, String), at: Instant) {
        self.timers.push(std::cmp::Reverse((at, key)));
    }

    /// The earliest deadline (transactions, retransmissions, ACK waits), for the driver to sleep
    /// until (None: nothing pending).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut txn = None;
        while let Some(std::cmp::Reverse((at, key))) = self.timers.peek() {
            if self.txns.get(key).is_some_and(|t| t.expires == *at || t.give_up == Some(*at) || t.retx.is_some_and(|r| r.0 == *at)) {
                txn = Some(*at);
                break;
            }
            self.timers.pop();
        }
        let mut call = None;
        while let Some(std::cmp::Reverse((at, id))) = self.call_timers.peek() {
            let live = self.by_id.get(id).and_then(|cid| self.calls.get(cid)).is_some_and(|c| c.ack_deadline == Some(*at));
            if live {
                call = Some(*at);
                break;
            }
            self.call_timers.pop();
        }
        match (txn, call) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fire what is due at `now`: retransmit our own requests, expire transactions (an INVITE
    /// left unanswered past Timer C or a BYE that never got a final response still ends its
    /// call), and end answered calls that never got their ACK.
    pub fn handle_timeout(&mut self, now: Instant, media: &mut dyn MediaControl) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(std::cmp::Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(std::cmp::Reverse((at, key))) = self.timers.pop() else { break };
            let Some(t) = self.txns.get_mut(&key) else { continue };
            // Timers A and E: send the request again (an INVITE stops at its first response).
            if t.retx.is_some_and(|r| r.0 == at) {
                let invite = key.1 == "INVITE";
                if let (Some((_, interval)), false, Some((dest, data))) =
                    (t.retx, t.final_seen || (invite && t.provisional), t.forwarded.clone())
                {
                    let next = if invite { interval * 2 } else { (interval * 2).min(T2) };
                    t.retx = Some((at + next, next));
                    if !t.generated {
                        self.stats.client_retransmissions.fetch_add(1, Relaxed);
                    }
                    out.push(Action::Send { to: dest, data });
                    self.arm(key, at + next);
                } else {
                    t.retx = None;
                }
                continue;
            }
            // Timers B and F: no response at all (INVITE) or no final (others): 408 upstream.
            if t.give_up == Some(at) {
                t.give_up = None;
                if t.final_seen || t.generated {
                    continue;
                }
                let (call_id, initial) = (t.call_id.clone(), t.initial_invite);
                t.expires = at + self.cfg.linger;
                self.stats.timeouts.fetch_add(1, Relaxed);
                tracing::info!(method = %key.1, "no response downstream within 64*T1: 408 upstream");
                out.extend(self.respond_upstream(&key, 408, "Request Timeout", media));
                if initial || key.1 == "BYE" {
                    self.end_call(&call_id, EndReason::SipTimeout, media);
                }
                self.arm(key, at + self.cfg.linger);
                continue;
            }
            if t.expires != at {
                continue;
            }
            // Timer C (§16.8): a provisional came but no final: CANCEL downstream and wait for
            // its 487 a while; no provisional (or still nothing after the CANCEL): 408 upstream.
            if key.1 == "INVITE" && !t.final_seen && !t.generated {
                let (upstream, call_id, initial) = (t.upstream, t.call_id.clone(), t.initial_invite);
                self.stats.timeouts.fetch_add(1, Relaxed);
                if t.provisional && !t.cancelled {
                    t.cancelled = true;
                    t.expires = at + 64 * T1;
                    tracing::info!("Timer C: no final response, CANCEL downstream");
                    self.arm(key.clone(), at + 64 * T1);
                    out.extend(self.cancel_downstream(&key, upstream, at));
                    continue;
                }
                t.expires = at + self.cfg.linger;
                tracing::info!("Timer C: no final response, 408 upstream");
                out.extend(self.respond_upstream(&key, 408, "Request Timeout", media));
                if initial {
                    self.end_call(&call_id, EndReason::SipTimeout, media);
                }
                self.arm(key, at + self.cfg.linger);
                continue;
            }
            if let Some(t) = self.txns.remove(&key) {
                if (t.initial_invite || key.1 == "BYE") && !t.final_seen && !t.generated {
                    self.end_call(&t.call_id, EndReason::SipTimeout, media);
                }
            }
        }
        while let Some(std::cmp::Reverse((at, id))) = self.call_timers.peek() {
            if *at > now {
                break;
            }
            let (at, id) = (*at, *id);
            self.call_timers.pop();
            let Some(cid) = self.by_id.get(&id).cloned() else { continue };
            if self.calls.get(&cid).is_none_or(|c| c.ack_deadline != Some(at)) {
                continue;
            }
            tracing::info!(call = %id, "no ACK for the 2xx within 64*T1, ending the call");
            if let Some(c) = self.calls.remove(&cid) {
                self.by_id.remove(&id);
                if let Some(dk) = &c.dialog_key {
                    self.dialogs.remove(dk);
                }
                self.stats.calls_ended.fetch_add(1, Relaxed);
                media.close(id, EndReason::SetupTimeout);
                out.extend(self.teardown(&cid, &c, EndReason::SetupTimeout, now));
            }
        }
        out
    }
}

/// The transaction part of a call key (`Call-ID LF branch`, without a fork's `LF tag`; a line
/// feed cannot occur inside a header value).
fn t_key_base(key: &str) -> &str {
    match key.match_indices('\n').nth(1) {
        Some((i, _)) => &key[..i],
        None => key,
    }
}

/// The URI of a name-addr or addr-spec header value (`"N" <sip:a@b>;tag=1` gives `sip:a@b`).
fn addr_spec(v: &str) -> String {
    let v = v.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.split(';').next().unwrap_or(v).trim().to_string(),
    }
}

/// The display name of a name-addr (`"Jane Doe" <sip:...>` or `Jane <sip:...>`), if any.
fn display_name(v: &str) -> Option<String> {
    let lt = v.find('<')?;
    let name = v[..lt].trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.chars().take(64).collect())
}

/// Pull enough out of unparseable bytes to answer 400: a request line and the headers a
/// response needs (Via, From, To, Call-ID, CSeq). None when it is not a request at all.
fn salvage_request(raw: &[u8]) -> Option<Message> {
    let text = String::from_utf8_lossy(&raw[..raw.len().min(super::message::MAX_MESSAGE)]);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let first = lines.next()?.trim_end();
    let mut parts = first.split(' ');
    let method = parts.next()?;
    let version = first.rsplit(' ').next().unwrap_or("");
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)) || !version.starts_with("SIP/")
    {
        return None;
    }
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            let k = super::message::canonical(n.trim());
            if matches!(k.as_str(), "via" | "from" | "to" | "call-id" | "cseq") {
                headers.push(super::message::Header::new(n.trim(), v.trim()));
            }
        }
    }
    let m = Message {
        start: StartLine::Request { method: method.into(), uri: "sip:invalid".into(), version: version.into() },
        headers,
        body: Vec::new(),
    };
    // Without a Via there is nowhere to send a response (§18.2.2).
    if m.header("via").is_none() || split_values(m.header("via").unwrap_or("")).is_empty() {
        return None;
    }
    if m.method() == Some("ACK") {
        return None;
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{OpenError, StreamPorts};
    use crate::net::SourcePattern;
    use crate::sdp;

    #[derive(Default)]
    struct FakeMedia {
        opened: Vec<(CallId, String, usize)>,
        remotes: Vec<(CallId, Party)>,
        /// The first m-line's port each `remote` call gave.
        remote_ports: Vec<(Party, u16)>,
        closed: Vec<(CallId, EndReason)>,
        exhausted: bool,
    }
    impl MediaControl for FakeMedia {
        fn open(&mut self, call: CallId, meta: &CallMeta, active: &[bool]) -> Result<Vec<Option<StreamPorts>>, OpenError> {
            let agent = &meta.agent_id;
            if self.exhausted {
                return Err(OpenError::PortsExhausted);
            }
            self.opened.push((call, agent.to_string(), active.len()));
            Ok((0..active.len() as u16)
                .map(|i| {
                    Some(StreamPorts {
                        customer: sdp::RelayPorts { rtp: 30000 + 4 * i, rtcp: 30001 + 4 * i },
                        agent: sdp::RelayPorts { rtp: 30002 + 4 * i, rtcp: 30003 + 4 * i },
                    })
                })
                .collect())
        }
        fn remote(&mut self, call: CallId, side: Party, s: &sdp::Session) {
            self.remotes.push((call, side));
            self.remote_ports.push((side, s.media.first().map_or(0, |m| m.port)));
        }
        fn close(&mut self, call: CallId, reason: EndReason) {
            self.closed.push((call, reason));
        }
    }

    const PBX: &str = "10.0.0.1:5060";
    const AGENT: &str = "10.0.0.2:5060";

    fn proxy() -> Proxy {
        Proxy::new(
            ProxyConfig {
                host: "10.0.0.9".parse().unwrap(),
                port: 5060,
                media_hosts: ["10.0.0.9".parse().unwrap(); 2],
                pbx_sources: vec![SourcePattern { ip: "10.0.0.1".parse().unwrap(), port: None }],
                pbx_route: Target::parse("10.0.0.1:5060").unwrap(),
                agents_route: Target::parse("10.0.0.2:5060"),
                agent_id_header: None,
                queue_header: None,
                linger: Duration::from_secs(32),
                new_calls_per_source_per_s: 0.0,
                guards: Default::default(),
                tls_port: None,
                agents_iface: None,
            },
            Arc::new(SipStats::default()),
        )
    }
    fn peer(a: &str) -> Peer {
        Peer { addr: a.parse().unwrap(), transport: Transport::Udp, conn: None }
    }
    fn invite() -> Message {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let text = format!(
            "INVITE sip:agent42@10.0.0.9 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc\r\nf: <sip:cust@pbx>;tag=1\r\nt: <sip:agent42@pbx>\r\ni: call-1\r\nCSeq: 1 INVITE\r\nX-Custom:   odd   spacing\r\nc: application/sdp\r\nl: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        Message::parse(text.as_bytes()).unwrap()
    }
    fn sent(actions: &[Action]) -> Vec<(Dest, Message)> {
        actions.iter().map(|Action::Send { to, data }| (to.clone(), Message::parse(data).unwrap())).collect()
    }

    #[test]
    fn invite_is_anchored_record_routed_and_passes_unknown_headers() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let out = sent(&p.handle_message(invite(), peer(PBX), t0, &mut m));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].1.status(), Some(100));
        let (dest, fwd) = &out[1];
        assert_eq!(dest, &Dest::Target(Target::parse("10.0.0.2:5060").unwrap()));
        let text = String::from_utf8(fwd.to_bytes()).unwrap();
        assert!(text.contains("X-Custom:   odd   spacing\r\n"), "{text}");
        assert!(text.contains("f: <sip:cust@pbx>;tag=1\r\n"), "compact form kept: {text}");
        assert!(text.contains("Record-Route: <sip:10.0.0.9:5060;lr>"));
        assert!(text.contains("m=audio 30002 RTP/AVP 0"), "agent sees the agent-facing port: {text}");
        assert!(text.contains("c=IN IP4 10.0.0.9"));
        assert_eq!(fwd.values("via").len(), 2);
        assert_eq!(fwd.header("max-forwards"), Some("70"));
        assert_eq!(m.opened, vec![(CallId(1), "agent42".to_string(), 1)]);
        assert_eq!(m.remotes, vec![(CallId(1), Party::Customer)]);
    }

    #[test]
    fn retransmission_is_absorbed_and_answer_is_anchored() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let out = sent(&p.handle_message(invite(), peer(PBX), t0, &mut m));
        let fwd = out[1].1.clone();
        // The agent answers with SDP.
        let mut ok = fwd.response(200, "OK", Some("ag"));
        ok.set("content-type", "Content-Type", "application/sdp");
        ok.body = b"v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n".to_vec();
        let back = sent(&p.handle_message(ok, peer(AGENT), t0, &mut m));
        assert_eq!(back[0].0, Dest::Peer(peer(PBX)));
        let text = String::from_utf8(back[0].1.to_bytes()).unwrap();
        assert!(text.contains("m=audio 30000 "), "PBX sees the PBX-facing port: {text}");
        assert_eq!(back[0].1.values("via").len(), 1);
        // The PBX did not get the 200 and retransmits the INVITE: the proxy resends the 200
        // itself instead of forwarding again.
        let again = sent(&p.handle_message(invite(), peer(PBX), t0 + Duration::from_millis(500), &mut m));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1.status(), Some(200));
        assert_eq!(m.opened.len(), 2, "the answer reuses the call's ports (open called again, same call)");
        assert!(m.opened.iter().all(|o| o.0 == CallId(1)));
    }

    #[test]
    fn a_refused_reinvite_puts_the_media_back() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let out = sent(&p.handle_message(invite(), peer(PBX), t0, &mut m));
        let mut ok = out[1].1.response(200, "OK", Some("ag"));
        ok.set("content-type", "Content-Type", "application/sdp");
        ok.set("contact", "Contact", "<sip:agent42@10.0.0.2>");
        ok.body = b"v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n".to_vec();
        p.handle_message(ok, peer(AGENT), t0, &mut m);
        assert_eq!(m.remote_ports, vec![(Party::Customer, 4000), (Party::Agent, 5000)]);
        // The PBX moves its media (port 4100); the agent refuses (488): back to 4000 / 5000.
        let sdp = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4100 RTP/AVP 0\r\n";
        let re = format!(
            "INVITE sip:agent42@10.0.0.2 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKre1\nFrom: <sip:cust@pbx>;tag=1\nTo: <sip:agent42@pbx>;tag=ag\nCall-ID: call-1\nCSeq: 2 INVITE\nMax-Forwards: 70\nContent-Type: application/sdp\nContent-Length: {}\n\n{sdp}",
            sdp.len()
        );
        let out = req(&mut p, &mut m, PBX, t0, &re);
        let fwd = out.iter().find(|(_, x)| x.method() == Some("INVITE")).unwrap().1.clone();
        assert_eq!(m.remote_ports.last(), Some(&(Party::Customer, 4100)), "the offer is applied at once");
        let refused = fwd.response(488, "Not Acceptable Here", Some("ag"));
        let back = sent(&p.handle_message(refused, peer(AGENT), t0, &mut m));
        assert_eq!(back[0].1.status(), Some(488));
        assert_eq!(m.remote_ports.last(), Some(&(Party::Customer, 4000)), "rolled back; the agent's side was not touched");
        assert_eq!(p.stats.offers_rolled_back.load(Relaxed), 1);
        // An accepted one stays.
        let re2 = re.replace("z9hG4bKre1", "z9hG4bKre2").replace("CSeq: 2", "CSeq: 3").replace("4100", "4200");
        let out = req(&mut p, &mut m, PBX, t0, &re2);
        let fwd = out.iter().find(|(_, x)| x.method() == Some("INVITE")).unwrap().1.clone();
        let mut ok = fwd.response(200, "OK", Some("ag"));
        ok.set("content-type", "Content-Type", "application/sdp");
        ok.body = b"v=0\r\no=- 2 3 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n".to_vec();
        p.handle_message(ok, peer(AGENT), t0, &mut m);
        assert_eq!(&m.remote_ports[m.remote_ports.len() - 2..], &[(Party::Customer, 4200), (Party::Agent, 5000)]);
        assert_eq!(p.stats.offers_rolled_back.load(Relaxed), 1);
        // One Hearken refuses itself (the agent cannot be reached: 503 upstream): back too.
        let re3 = re.replace("z9hG4bKre1", "z9hG4bKre3").replace("CSeq: 2", "CSeq: 4").replace("4100", "4300");
        let out = req(&mut p, &mut m, PBX, t0, &re3);
        let fwd = out.iter().find(|(_, x)| x.method() == Some("INVITE")).unwrap().1.clone();
        assert_eq!(m.remote_ports.last(), Some(&(Party::Customer, 4300)));
        let back = sent(&p.handle_unreachable(&fwd.to_bytes(), t0, &mut m));
        assert_eq!(back[0].1.status(), Some(503));
        assert_eq!(m.remote_ports.last(), Some(&(Party::Customer, 4200)), "back to the last completed offer/answer");
        assert_eq!(p.stats.offers_rolled_back.load(Relaxed), 2);
    }

    #[test]
    fn an_in_dialog_request_is_sided_by_its_tag_not_its_address() {
        // The agent's re-INVITE comes over a new connection from an address the PBX shares
        // (a phone's TCP connection out of a host's main address): still the agent's offer.
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let out = sent(&p.handle_message(invite(), peer(PBX), t0, &mut m));
        let mut ok = out[1].1.response(200, "OK", Some("ag"));
        ok.set("content-type", "Content-Type", "application/sdp");
        ok.body = b"v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n".to_vec();
        p.handle_message(ok, peer(AGENT), t0, &mut m);
        let sdp = "v=0\r\no=- 2 3 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5002 RTP/AVP 0\r\n";
        let re = format!(
            "INVITE sip:cust@10.0.0.1 SIP/2.0\nVia: SIP/2.0/TCP 10.0.0.1:40111;branch=z9hG4bKagre\nFrom: <sip:agent42@pbx>;tag=ag\nTo: <sip:cust@pbx>;tag=1\nCall-ID: call-1\nCSeq: 7 INVITE\nMax-Forwards: 70\nContent-Type: application/sdp\nContent-Length: {}\n\n{sdp}",
            sdp.len()
        );
        let msg = Message::parse(re.replace('\n', "\r\n").as_bytes()).unwrap();
        let tcp = Peer { addr: "10.0.0.1:40111".parse().unwrap(), transport: Transport::Tcp, conn: Some(9) };
        p.handle_message(msg, tcp, t0, &mut m);
        assert_eq!(m.remote_ports.last(), Some(&(Party::Agent, 5002)), "{:?}", m.remote_ports);
    }

    #[test]
    fn cancel_is_answered_and_sent_on_with_the_invite_branch() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let out = sent(&p.handle_message(invite(), peer(PBX), t0, &mut m));
        let fwd_branch = Via::parse(&out[1].1.values("via")[0]).unwrap().branch;
        let cancel = Message::parse(b"CANCEL sip:agent42@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc\r\nFrom: <sip:cust@pbx>;tag=1\r\nTo: <sip:agent42@pbx>\r\nCall-ID: call-1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").unwrap();
        let out = sent(&p.handle_message(cancel, peer(PBX), t0, &mut m));
        assert_eq!(out[0].1.status(), Some(200));
        assert_eq!(out[1].1.method(), Some("CANCEL"));
        assert_eq!(Via::parse(&out[1].1.values("via")[0]).unwrap().branch, fwd_branch);
        assert_eq!(out[1].1.values("via").len(), 1);
        // The 487 ends the call and frees its media.
        let inv_fwd = Message::parse(&{
            let mut i = invite();
            i.push_front("Via", format!("SIP/2.0/UDP 10.0.0.9:5060;branch={}", fwd_branch.clone().unwrap()));
            i.to_bytes()
        })
        .unwrap();
        let r487 = inv_fwd.response(487, "Request Terminated", Some("ag"));
        let back = sent(&p.handle_message(r487, peer(AGENT), t0, &mut m));
        assert_eq!(back[0].1.status(), Some(487));
        assert_eq!(m.closed, vec![(CallId(1), EndReason::Cancelled)]);
    }

    /// Send `text` (LF line ends) from `from` and return what the proxy sends.
    fn req(p: &mut Proxy, m: &mut FakeMedia, from: &str, t: Instant, text: &str) -> Vec<(Dest, Message)> {
        let text = text.replace('\n', "\r\n");
        sent(&p.handle_message(Message::parse(text.as_bytes()).unwrap(), peer(from), t, m))
    }

    #[test]
    fn forwarded_requests_are_retransmitted_and_time_out_with_408() {
        // An INVITE nobody answers: sent again at T1, 2T1, 4T1 … (Timer A), 408 upstream at
        // 64×T1 (Timer B) and the call ends; no forwarding of it after that.
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        p.handle_message(invite(), peer(PBX), t0, &mut m);
        let mut sends = Vec::new();
        let mut t = t0;
        while t < t0 + Duration::from_secs(40) {
            t += Duration::from_millis(50);
            sends.extend(sent(&p.handle_timeout(t, &mut m)).into_iter().map(|(d, msg)| (t.duration_since(t0).as_millis(), d, msg)));
        }
        let invites: Vec<u128> = sends.iter().filter(|(_, _, msg)| msg.method() == Some("INVITE")).map(|(ms, _, _)| *ms).collect();
        assert_eq!(invites.len(), 6, "retransmitted at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s: {invites:?}");
        assert!((450..=550).contains(&invites[0]) && (1450..=1550).contains(&invites[1]));
        let r408: Vec<_> = sends.iter().filter(|(_, _, msg)| msg.status() == Some(408)).collect();
        assert_eq!(r408.len(), 1);
        assert_eq!(r408[0].1, Dest::Peer(peer(PBX)));
        assert_eq!(r408[0].2.values("via").len(), 1, "our Via removed");
        assert_eq!(m.closed, vec![(CallId(1), EndReason::SipTimeout)]);
        assert_eq!(p.stats.client_retransmissions.load(Relaxed), 6);
        // The PBX retransmits its INVITE: it gets the 408 again, nothing goes to the agent.
        let again = sent(&p.handle_message(invite(), peer(PBX), t, &mut m));
        assert_eq!(again.iter().map(|(_, m)| m.status()).collect::<Vec<_>>(), vec![Some(408)]);
        // The PBX's ACK of that 408 stops at Hearken.
        let ack = "ACK sip:agent42@10.0.0.9 SIP/2.0\nv: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc\nf: <sip:cust@pbx>;tag=1\nt: <sip:agent42@pbx>\ni: call-1\nCSeq: 1 ACK\nContent-Length: 0\n\n";
        assert!(req(&mut p, &mut m, PBX, t, ack).is_empty());
    }

    #[test]
    fn timer_c_cancels_downstream_then_answers_408_and_a_provisional_resets_it() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let out = sent(&p.handle_message(invite(), peer(PBX), t0, &mut m));
        let fwd = out[1].1.clone();
        // The agent's 100 stops the retransmissions and is not forwarded; its 180 is.
        let trying = sent(&p.handle_message(fwd.response(100, "Trying", None), peer(AGENT), t0, &mut m));
        assert!(trying.is_empty(), "100 Trying is hop by hop");
        let ringing = sent(&p.handle_message(fwd.response(180, "Ringing", Some("ag")), peer(AGENT), t0 + Duration::from_secs(1), &mut m));
        assert_eq!(ringing[0].1.status(), Some(180));
        assert!(sent(&p.handle_timeout(t0 + Duration::from_secs(60), &mut m)).is_empty(), "no retransmission after a response");
        // Another provisional at 100 s restarts Timer C: nothing at 181 s.
        p.handle_message(fwd.response(183, "Session Progress", Some("ag")), peer(AGENT), t0 + Duration::from_secs(100), &mut m);
        assert!(sent(&p.handle_timeout(t0 + Duration::from_secs(181), &mut m)).is_empty());
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(280)));
        // Timer C: CANCEL downstream (retransmitted over UDP), the call still up.
        let c = sent(&p.handle_timeout(t0 + Duration::from_secs(280), &mut m));
        assert_eq!((c.len(), c[0].1.method()), (1, Some("CANCEL")));
        assert_eq!(c[0].0, Dest::Target(Target::parse("10.0.0.2:5060").unwrap()));
        assert!(m.closed.is_empty());
        assert_eq!(sent(&p.handle_timeout(t0 + Duration::from_millis(280_500), &mut m))[0].1.method(), Some("CANCEL"));
        // No 487 either: 408 upstream 64×T1 later, the call ends.
        let mut last = Vec::new();
        let mut t = t0 + Duration::from_secs(281);
        while t < t0 + Duration::from_secs(315) {
            t += Duration::from_millis(100);
            last.extend(sent(&p.handle_timeout(t, &mut m)));
        }
        assert_eq!(last.iter().filter(|(_, x)| x.status() == Some(408)).count(), 1);
        assert_eq!(m.closed, vec![(CallId(1), EndReason::SipTimeout)]);
    }

    #[test]
    fn a_retransmitted_cancel_is_answered_not_sent_on_again() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let out = sent(&p.handle_message(invite(), peer(PBX), t0, &mut m));
        p.handle_message(out[1].1.response(180, "Ringing", Some("ag")), peer(AGENT), t0, &mut m);
        let cancel = "CANCEL sip:agent42@10.0.0.9 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc\nFrom: <sip:cust@pbx>;tag=1\nTo: <sip:agent42@pbx>\nCall-ID: call-1\nCSeq: 1 CANCEL\nContent-Length: 0\n\n";
        let first = req(&mut p, &mut m, PBX, t0, cancel);
        assert_eq!(
            first.iter().map(|(_, x)| (x.status(), x.method())).collect::<Vec<_>>(),
            vec![(Some(200), None), (None, Some("CANCEL"))]
        );
        let again = req(&mut p, &mut m, PBX, t0 + Duration::from_millis(500), cancel);
        assert_eq!(again.iter().map(|(_, x)| x.status()).collect::<Vec<_>>(), vec![Some(200)], "answered again, not forwarded");
    }

    #[test]
    fn a_large_request_goes_over_tcp_and_falls_back_to_udp() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let mut big = invite();
        big.push_back("X-Padding", "x".repeat(1200));
        let out = sent(&p.handle_message(big, peer(PBX), t0, &mut m));
        let (dest, fwd) = &out[1];
        assert!(matches!(dest, Dest::Target(t) if t.transport == Transport::Tcp), "{dest:?}");
        assert!(fwd.values("via")[0].starts_with("SIP/2.0/TCP "), "{:?}", fwd.values("via"));
        assert_eq!(fwd.values("record-route").len(), 2, "UDP upstream, TCP downstream: double Record-Route");
        // The TCP connection cannot be made: the same request over UDP, Via changed to match.
        let back = sent(&p.handle_unreachable(&fwd.to_bytes(), t0, &mut m));
        assert!(matches!(&back[0].0, Dest::Target(t) if t.transport == Transport::Udp), "{back:?}");
        assert!(back[0].1.values("via")[0].starts_with("SIP/2.0/UDP "));
        assert_eq!(back[0].1.method(), Some("INVITE"));
        // Retransmitted over UDP like any UDP request; a second failure is a 503.
        let retx = sent(&p.handle_timeout(t0 + T1, &mut m));
        assert!(retx.iter().any(|(d, x)| x.method() == Some("INVITE") && matches!(d, Dest::Target(t) if t.transport == Transport::Udp)));
        let fail = sent(&p.handle_unreachable(&back[0].1.to_bytes(), t0, &mut m));
        assert_eq!(fail[0].1.status(), Some(503));
        assert_eq!((p.stats.size_to_tcp.load(Relaxed), p.stats.size_fallback_udp.load(Relaxed)), (1, 1));
        // A small one stays on UDP; a URI that names UDP keeps it whatever the size.
        let small = sent(&proxy().handle_message(invite(), peer(PBX), t0, &mut m));
        assert!(matches!(&small[1].0, Dest::Target(t) if t.transport == Transport::Udp));
        let mut named = proxy();
        named.cfg.agents_route = Target::parse("sip:10.0.0.2:5060;transport=udp");
        let mut big = invite();
        big.push_back("X-Padding", "x".repeat(1200));
        let out = sent(&named.handle_message(big, peer(PBX), t0, &mut m));
        assert!(matches!(&out[1].0, Dest::Target(t) if t.transport == Transport::Udp));
    }

    #[test]
    fn unreachable_next_hop_answers_503() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let out = p.handle_message(invite(), peer(PBX), t0, &mut m);
        let forwarded = out[1].data();
        let back = sent(&p.handle_unreachable(&forwarded, t0, &mut m));
        assert_eq!((back[0].0.clone(), back[0].1.status()), (Dest::Peer(peer(PBX)), Some(503)));
        assert_eq!(m.closed, vec![(CallId(1), EndReason::Rejected(503))]);
        assert!(p.handle_unreachable(&forwarded, t0, &mut m).is_empty(), "once");
    }

    #[test]
    fn junk_unusual_and_hostile_requests() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let base = |ruri: &str, via: &str, extra: &str| {
            format!("INVITE {ruri} SIP/2.0\nVia: {via}\nFrom: <sip:cust@pbx>;tag=1\nTo: <sip:agent42@pbx>\nCall-ID: j-{}\nCSeq: 1 INVITE\nMax-Forwards: 70\n{extra}Content-Length: 0\n\n", ruri.len() + via.len() + extra.len())
        };
        let good_via = "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKj1";
        for (ruri, via, extra, want) in [
            ("sip:agent42@10.0.0.9", "SIP/2.0/UDP ;;;;branch=z9hG4bKx", "", 400),
            ("sip:agent42@10.0.0.9", "SIP/2.0/UDP 10.0.0.1:99999;branch=z9hG4bKx", "", 400),
            ("sip:agent42@10.0.0.9", "SIP/2.0/UDP 10.0.0.1;rport=abc;branch=z9hG4bKx", "", 400),
            ("sip::::::", good_via, "", 400),
            ("mailto:agent42@example.com", good_via, "", 416),
            ("sip:agent42@10.0.0.9", good_via, "Proxy-Require: foo, bar\n", 420),
            ("sip:agent42@10.0.0.9", good_via, "X-Evil: a\u{0}b\n", 400),
        ] {
            let out = req(&mut p, &mut m, PBX, t0, &base(ruri, via, extra));
            assert_eq!(out.len(), 1, "{ruri} {via} {extra:?}: answered, not forwarded: {out:?}");
            assert_eq!(out[0].1.status(), Some(want), "{ruri} {via} {extra:?}");
            if want == 420 {
                assert_eq!(out[0].1.header("unsupported"), Some("foo, bar"));
            }
        }
        assert!(m.opened.is_empty(), "no junk rang a phone");
        // A tel: URI is routable.
        assert_eq!(req(&mut p, &mut m, PBX, t0, &base("tel:+15551230000", good_via, "")).len(), 2);
        // What we forwarded comes back unchanged (the next hop added its Via): a loop, 482.
        // Back with another Request-URI (retargeted by the PBX): a spiral, forwarded again.
        let first = req(&mut p, &mut m, PBX, t0, &base("sip:agent42@10.0.0.1", good_via, ""));
        let fwd = first.iter().find(|(_, x)| x.method().is_some()).unwrap().1.clone();
        let mut back = fwd.clone();
        back.push_front("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKpbxloop");
        let out = sent(&p.handle_message(back.clone(), peer(PBX), t0, &mut m));
        assert_eq!(out[0].1.status(), Some(482), "{:?}", out);
        back.set_uri("sip:agent43@10.0.0.2".into());
        back.replace_first_value("via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKpbxspiral".into());
        let out = sent(&p.handle_message(back, peer(PBX), t0, &mut m));
        assert!(out.iter().any(|(_, x)| x.method() == Some("INVITE")), "a spiral goes on: {out:?}");
        // A source that is neither the PBX nor an allowed agent network: 403.
        let mut strict = proxy();
        strict.cfg.guards.agent_sources = vec![crate::net::Net::parse("10.0.0.0/24").unwrap()];
        let out = req(&mut strict, &mut m, "192.0.2.66:5060", t0, &base("sip:100@10.0.0.9", good_via, ""));
        assert_eq!((out.len(), out[0].1.status()), (1, Some(403)));
        assert_eq!(strict.stats.forbidden.load(Relaxed), 1);
        // Our hostname in a Route is us (no loop through DNS).
        let mut named = proxy();
        named.cfg.guards.aliases = vec!["sbc.example.com".into()];
        let out = req(&mut named, &mut m, PBX, t0, &base("sip:agent42@10.0.0.9", good_via, "Route: <sip:sbc.example.com;lr>\n"));
        assert!(out[1].1.values("route").is_empty(), "our own Route entry removed");
    }

    #[test]
    fn a_flooding_source_is_dropped_and_the_transaction_table_is_bounded() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        p.cfg.guards.requests_per_source_per_s = 50.0;
        let options = |i: u32| {
            format!("OPTIONS sip:10.0.0.9 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.77;branch=z9hG4bKfl{i}\nFrom: <sip:x@y>;tag=1\nTo: <sip:10.0.0.9>\nCall-ID: fl{i}\nCSeq: 1 OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n")
        };
        let answered = (0..1000).filter(|i| !req(&mut p, &mut m, "10.0.0.77:5060", t0, &options(*i)).is_empty()).count();
        assert_eq!(answered, 100, "the burst (twice the rate) passes, the rest is dropped");
        assert_eq!(p.stats.flood_dropped.load(Relaxed), 900);
        // A second later the source has a second's worth again; the PBX is never limited.
        let later =
            (1000..1100).filter(|i| !req(&mut p, &mut m, "10.0.0.77:5060", t0 + Duration::from_secs(1), &options(*i)).is_empty()).count();
        assert_eq!(later, 50);
        assert!((0..300).all(|i| !req(&mut p, &mut m, PBX, t0, &options(5000 + i).replace("10.0.0.77", "10.0.0.1")).is_empty()));
        // The transaction table is bounded: over it, 503.
        let mut small = proxy();
        small.cfg.guards.max_transactions = 10;
        for i in 0..10 {
            req(&mut small, &mut m, PBX, t0, &options(i).replace("10.0.0.77", "10.0.0.1"));
        }
        let out = req(&mut small, &mut m, PBX, t0, &options(99).replace("10.0.0.77", "10.0.0.1"));
        assert_eq!(out[0].1.status(), Some(503));
        assert_eq!(small.stats.over_transactions.load(Relaxed), 1);
    }

    #[test]
    fn path_for_every_agent_register_and_double_record_route_across_transports() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        p.cfg.guards.path = PathMode::Always;
        let reg = "REGISTER sip:pbx SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.2;rport;branch=z9hG4bKrp\nFrom: <sip:agent7@pbx>;tag=9\nTo: <sip:agent7@pbx>\nCall-ID: rp1\nCSeq: 1 REGISTER\nContact: <sip:agent7-0x55be@10.0.0.2:5062>\nContent-Length: 0\n\n";
        let out = req(&mut p, &mut m, AGENT, t0, reg);
        assert!(out[0].1.header("path").is_some(), "a phone without Supported: path still gets our Path");
        p.cfg.guards.path = PathMode::WhenSupported;
        let out = req(&mut p, &mut m, AGENT, t0, &reg.replace("rp1", "rp2").replace("z9hG4bKrp", "z9hG4bKrq"));
        assert!(out[0].1.header("path").is_none());
        // The PBX's INVITE to a registered phone: the agent id is the dialled AoR, not the Contact.
        let inv = "INVITE sip:agent7-0x55be@10.0.0.2:5062 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKaor\nFrom: <sip:cust@pbx>;tag=1\nTo: <sip:agent7@pbx>\nCall-ID: aor1\nCSeq: 1 INVITE\nMax-Forwards: 70\nContent-Length: 0\n\n";
        req(&mut p, &mut m, PBX, t0, inv);
        assert_eq!(p.active_calls().next().map(|c| c.agent_id.clone()), Some("agent7".into()));
        // PBX over UDP, agents over TCP: two Record-Routes, each with its side's transport.
        let mut tcp = proxy();
        tcp.cfg.agents_route = Target::parse("sip:10.0.0.2:5060;transport=tcp");
        let out = sent(&tcp.handle_message(invite(), peer(PBX), t0, &mut m));
        let rr = out[1].1.values("record-route");
        assert_eq!(
            rr,
            vec!["<sip:10.0.0.9:5060;lr;transport=tcp>".to_string(), "<sip:10.0.0.9:5060;lr>".to_string()],
            "top for the callee (TCP)"
        );
        let same = sent(&proxy().handle_message(invite(), peer(PBX), t0, &mut m));
        assert_eq!(same[1].1.values("record-route").len(), 1, "one entry when both sides use the same transport");
    }

    #[test]
    fn agents_behind_nat_are_reached_at_their_real_address() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        p.cfg.guards.path = PathMode::Always;
        p.cfg.guards.agent_sources = vec![crate::net::Net::parse("10.0.0.0/8").unwrap()];
        // A phone behind NAT: its Contact names 192.168.1.7:5060, its datagrams come from
        // 10.0.0.2:40123. The REGISTER gets Path, `Supported: path` and the alias.
        let nat = "10.0.0.2:40123";
        let reg = "REGISTER sip:pbx SIP/2.0\nVia: SIP/2.0/UDP 192.168.1.7:5060;branch=z9hG4bKnat1\nFrom: <sip:agent7@pbx>;tag=9\nTo: <sip:agent7@pbx>\nCall-ID: nat1\nCSeq: 1 REGISTER\nContact: <sip:agent7@192.168.1.7:5060>;expires=60\nContent-Length: 0\n\n";
        let out = req(&mut p, &mut m, nat, t0, reg);
        let r = &out[0].1;
        assert!(
            r.header("path").is_some() && r.values("supported").contains(&"path".to_string()),
            "{}",
            String::from_utf8_lossy(&r.to_bytes())
        );
        assert_eq!(r.values("contact"), vec!["<sip:agent7@192.168.1.7:5060;alias=10.0.0.2~40123~1>;expires=60".to_string()]);
        // The registrar's INVITE to that Contact, through our Path: to the alias address, with
        // the parameter gone from the Request-URI.
        let inv = "INVITE sip:agent7@192.168.1.7:5060;alias=10.0.0.2~40123~1 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKnat2\nRoute: <sip:10.0.0.9:5060;lr>\nFrom: <sip:cust@pbx>;tag=1\nTo: <sip:agent7@pbx>\nCall-ID: nat2\nCSeq: 1 INVITE\nMax-Forwards: 70\nContent-Length: 0\n\n";
        let out = req(&mut p, &mut m, PBX, t0, inv);
        let fwd = out.iter().find(|(_, m)| m.method() == Some("INVITE")).expect("forwarded");
        assert_eq!(fwd.0, Dest::Target(Target { host: "10.0.0.2".into(), port: 40123, transport: Transport::Udp, explicit: true }));
        assert_eq!(fwd.1.uri(), Some("sip:agent7@192.168.1.7:5060"));
        // Its 200 carries the private Contact again: aliased on the way to the PBX.
        let branch = Via::parse(&fwd.1.values("via")[0]).unwrap().branch.unwrap();
        let ok = format!("SIP/2.0 200 OK\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch={branch}\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKnat2\nFrom: <sip:cust@pbx>;tag=1\nTo: <sip:agent7@pbx>;tag=a7\nCall-ID: nat2\nCSeq: 1 INVITE\nContact: sip:agent7@192.168.1.7:5060\nContent-Length: 0\n\n").replace("\n", "\r\n");
        let out = sent(&p.handle_message(Message::parse(ok.as_bytes()).unwrap(), peer(nat), t0, &mut m));
        assert_eq!(out[0].1.values("contact"), vec!["<sip:agent7@192.168.1.7:5060;alias=10.0.0.2~40123~1>".to_string()]);
        // An alias pointing outside agents.allow is not followed (no relay to anywhere).
        let evil = inv.replace("10.0.0.2~40123", "203.0.113.5~5060").replace("nat2", "nat3").replace("z9hG4bKnat2", "z9hG4bKnat3");
        let out = req(&mut p, &mut m, PBX, t0, &evil);
        let fwd = out.iter().find(|(_, m)| m.method() == Some("INVITE")).expect("forwarded");
        assert_eq!(fwd.0, Dest::Target(Target { host: "192.168.1.7".into(), port: 5060, transport: Transport::Udp, explicit: false }));
        // A phone whose Contact is where it sends from gets no alias; over TCP it always does.
        let plain = reg.replace("192.168.1.7", "10.0.0.2").replace("nat1", "nat4").replace("z9hG4bKnat1", "z9hG4bKnat4");
        let out = req(&mut p, &mut m, "10.0.0.2:5060", t0, &plain);
        assert!(!out[0].1.values("contact")[0].contains("alias"));
        let msg = Message::parse(plain.replace("nat4", "nat5").replace("\n", "\r\n").as_bytes()).unwrap();
        let tcp = Peer { addr: "10.0.0.2:5060".parse().unwrap(), transport: Transport::Tcp, conn: Some(3) };
        let out = sent(&p.handle_message(msg, tcp, t0, &mut m));
        assert!(out[0].1.values("contact")[0].contains(";alias=10.0.0.2~5060~2>"), "{:?}", out[0].1.values("contact"));
        assert_eq!(p.stats.contacts_aliased.load(Relaxed), 3);
        // A phone that writes an alias of its own (pointing anywhere) gets ours instead, even
        // when its Contact is where it sends from.
        let forged = plain
            .replace("<sip:agent7@10.0.0.2:5060>", "<sip:agent7@10.0.0.2:5060;alias=127.0.0.1~6379~2>")
            .replace("nat4", "nat6")
            .replace("z9hG4bKnat4", "z9hG4bKnat6");
        let out = req(&mut p, &mut m, "10.0.0.2:5060", t0, &forged);
        assert_eq!(out[0].1.values("contact"), vec!["<sip:agent7@10.0.0.2:5060;alias=10.0.0.2~5060~1>;expires=60".to_string()]);
        // An alias naming Hearken itself or the PBX is not followed.
        for target in ["10.0.0.9~5060", "10.0.0.1~5060"] {
            let to_us = inv.replace("10.0.0.2~40123", target).replace("nat2", "nat7").replace("z9hG4bKnat2", &format!("z9hG4bK{target}"));
            let out = req(&mut p, &mut m, PBX, t0, &to_us);
            assert!(
                out.iter().all(|(d, _)| !matches!(d, Dest::Target(t) if t.host == target.split('~').next().unwrap() && t.port == 5060)),
                "{target}: {out:?}"
            );
        }
    }

    #[test]
    fn a_strict_routers_request_uri_is_restored() {
        // An RFC 2543 strict router puts our Record-Route URI into the Request-URI and the
        // remote target last in Route.
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let bye = "BYE sip:10.0.0.9:5060;lr SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKsr1\nFrom: <sip:cust@pbx>;tag=1\nTo: <sip:agent42@pbx>;tag=ag\nCall-ID: strict-1\nCSeq: 2 BYE\nMax-Forwards: 70\nRoute: <sip:agent42@10.0.0.2:5062>\nContent-Length: 0\n\n";
        let out = req(&mut p, &mut m, PBX, t0, bye);
        assert_eq!(out[0].1.uri(), Some("sip:agent42@10.0.0.2:5062"), "{:?}", out[0].1);
        assert!(out[0].1.values("route").is_empty());
        assert_eq!(out[0].0, Dest::Target(Target::parse("10.0.0.2:5062").unwrap()));
    }

    #[test]
    fn exhausted_ports_answer_503_and_free_the_call() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia { exhausted: true, ..Default::default() }, Instant::now());
        let out = sent(&p.handle_message(invite(), peer(PBX), t0, &mut m));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.status(), Some(503));
        assert_eq!(p.active_calls().count(), 0);
    }

    #[test]
    fn agent_requests_go_to_the_pbx_and_responses_not_ours_are_dropped() {
        let (mut p, mut m, t0) = (proxy(), FakeMedia::default(), Instant::now());
        let reg = Message::parse(b"REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;rport;branch=z9hG4bKr1\r\nFrom: <sip:agent1@pbx>;tag=9\r\nTo: <sip:agent1@pbx>\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\nSupported: path\r\nContent-Length: 0\r\n\r\n").unwrap();
        let out = sent(&p.handle_message(reg, peer("10.0.0.2:5062"), t0, &mut m));
        assert_eq!(out[0].0, Dest::Target(Target::parse("10.0.0.1:5060").unwrap()));
        assert!(out[0].1.header("path").is_some());
        let up = Via::parse(&out[0].1.values("via")[1]).unwrap();
        assert_eq!(up.rport, Some(Some(5062)));
        let stray = Message::parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKother\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(p.handle_message(stray, peer(AGENT), t0, &mut m).is_empty());
    }
}
