//! The recording server's SIP core (sans-IO, time passed in): it answers recording sessions
//! (RFC 7866) as a UAS — the recording INVITE with receive-only SDP on Hearken's ports,
//! re-INVITEs and UPDATEs that pause, resume or change the metadata, BYE, CANCEL, OPTIONS
//! pings — and turns them into analysed calls: which m-line is the customer's and which the
//! agent's (from the metadata and [`Roles`]), who the agent is, when a transfer hands the call to
//! another agent, and which of several recording sessions of one call (redundant SRCs) feeds the
//! analysis. Hearken only receives: a session it cannot measure is still answered, so the
//! recording client never fails the call because of Hearken.
//!
//! Not here: sockets and the receive tasks (io::siprec implements [`Recorder`]), XML (metadata),
//! MIME (body).

use super::body;
use super::metadata::{aor_user, Metadata, Roles};
use crate::call::{sanitize_label, AnalysisCmd, CallId, CallMeta, EndReason, Input, MediaPlan, OpenError, Party};
use crate::media::srtp::SdesKey;
use crate::net::SourcePattern;
use crate::sip::message::{param, Header, Message};
use crate::sip::proxy::{Action, Dest, Peer, Transport};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the core needs from the media side.
pub trait Recorder {
    /// Receive ports for `n` m-lines, or why not.
    fn open(&mut self, n: usize) -> Result<Vec<u16>, OpenError>;
    /// What recording session `rs`'s ports carry now.
    fn configure(&mut self, rs: u64, media: RsMedia);
    /// The session is over: stop receiving, release `ports`.
    fn close(&mut self, rs: u64, ports: &[u16]);
    /// A command for the analysis.
    fn analysis(&mut self, cmd: AnalysisCmd);
}

/// One recording session's receive configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RsMedia {
    /// The analysed call its audio feeds; None while it is a standby copy of another session.
    pub call: Option<CallId>,
    pub streams: Vec<RecvStream>,
}

/// One receive port.
#[derive(Debug, Clone, PartialEq)]
pub struct RecvStream {
    pub port: u16,
    /// Whose voice this m-line carries (None: received, not analysed).
    pub party: Option<Party>,
    /// Where the recording client sends from (its SDP address): other sources are dropped.
    pub source: IpAddr,
    /// SDES key the client encrypts with.
    pub key: Option<SdesKey>,
    /// false while the client has paused the stream (`a=inactive`).
    pub active: bool,
}

#[derive(Debug, Clone)]
pub struct SrsConfig {
    /// Host and port for our Contact.
    pub host: String,
    pub port: u16,
    /// The address written into our SDP.
    pub media_host: IpAddr,
    /// Recording clients allowed (others get 403).
    pub allow: Vec<SourcePattern>,
    pub max_sessions: usize,
    pub roles: Roles,
    /// A header of the recording INVITE that names the agent / the queue (e.g. `X-Agent-Id`).
    pub agent_id_header: Option<String>,
    pub queue_header: Option<String>,
}

/// Counters the metrics export.
#[derive(Debug, Default)]
pub struct SrsStats {
    pub sessions: AtomicU64,
    pub active: AtomicU64,
    pub refused: AtomicU64,
    pub malformed: AtomicU64,
    pub unsupported: AtomicU64,
    pub busy: AtomicU64,
    /// Sessions that duplicate another session of the same call (a standby copy).
    pub duplicates: AtomicU64,
    pub metadata_errors: AtomicU64,
    pub transfers: AtomicU64,
    /// Sessions answered but not measurable (one mixed stream).
    pub unmeasured: AtomicU64,
    pub pauses: AtomicU64,
}

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// At most this many audio m-lines in a recording session.
const MAX_MLINES: usize = 4;
/// Ended sessions remembered for retransmitted BYEs (a bound against a BYE flood).
const MAX_ENDED: usize = 10_000;

/// A 2xx being retransmitted until its ACK (UDP).
#[derive(Debug)]
struct Pending2xx {
    data: Vec<u8>,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

#[derive(Debug)]
struct Session {
    id: u64,
    peer: Peer,
    /// The request's From (their tag), To (with ours), their Contact URI: for our BYE.
    from: String,
    to: String,
    remote_target: String,
    our_cseq: u32,
    ports: Vec<u16>,
    /// Per answered m-line: the offer's m-line index.
    mlines: Vec<usize>,
    offer: crate::sdp::Session,
    meta: Metadata,
    /// The key that joins recording sessions of one call.
    call_key: String,
    /// The last INVITE's CSeq and our final response (retransmissions get it again).
    last_invite: Option<(u32, Vec<u8>)>,
    pending: Option<Pending2xx>,
    agent_id: String,
    queue: String,
    /// Per answered m-line: the party it carries.
    parties: Vec<Option<Party>>,
    paused: bool,
    /// Our SDES keys per answered m-line (answer lines), stable over re-INVITEs.
    our_crypto: Vec<Option<String>>,
}

/// Recording sessions of one call; the first (primary) feeds the analysis.
#[derive(Debug)]
struct Group {
    call: CallId,
    members: Vec<String>,
}

pub struct SrsCore {
    cfg: SrsConfig,
    pub stats: Arc<SrsStats>,
    /// Call-ID → session.
    sessions: HashMap<String, Session>,
    groups: HashMap<String, Group>,
    /// Call-ID → (when, CSeq of the BYE that ended it): a retransmitted BYE (its 200 lost)
    /// gets 200 again for 64·T1 (RFC 3261 §17.2.2, Timer J) instead of 481.
    ended: HashMap<String, (Instant, u32)>,
    /// The same, oldest first, for expiry without a scan.
    ended_order: std::collections::VecDeque<(Instant, String)>,
    next_rs: u64,
    next_call: u64,
    tag_seed: u64,
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_le_bytes(b)
}

impl SrsCore {
    /// Calls get ids from `first_call` (a range of their own).
    pub fn new(cfg: SrsConfig, stats: Arc<SrsStats>, first_call: u64) -> SrsCore {
        SrsCore {
            cfg,
            stats,
            sessions: HashMap::new(),
            groups: HashMap::new(),
            ended: HashMap::new(),
            ended_order: Default::default(),
            next_rs: 1,
            next_call: first_call,
            tag_seed: rand_u64(),
        }
    }

    /// Whether a message is the recording server's: a recording INVITE (metadata part,
    /// `Require: siprec` or `+sip.src` in Contact), anything in one of its dialogs, or an
    /// OPTIONS ping from a recording client.
    pub fn claims(&self, msg: &Message, peer: &Peer) -> bool {
        if self.sessions.contains_key(msg.call_id()) || (msg.method() == Some("BYE") && self.ended.contains_key(msg.call_id())) {
            return true;
        }
        match msg.method() {
            Some("INVITE") => {
                let ct = msg.content_type().unwrap_or_default().to_ascii_lowercase();
                let metadata = ct.starts_with("multipart/") && msg.body.windows(15).any(|w| w.eq_ignore_ascii_case(b"rs-metadata+xml"))
                    || ct.starts_with("multipart/") && msg.body.windows(22).any(|w| w.eq_ignore_ascii_case(b"application/rs-metadata"));
                let require = msg.values("require").iter().any(|v| v.eq_ignore_ascii_case("siprec"));
                let src = msg.header("contact").is_some_and(|c| c.contains("+sip.src"));
                metadata || require || src
            }
            Some("OPTIONS") => {
                self.cfg.allow.iter().any(|p| p.matches(peer.addr)) && param(msg.header("to").unwrap_or(""), "tag").is_none()
            }
            // A request in a dialog of ours that this process no longer knows (after a
            // restart): our To tags start with `srs`; it gets 481.
            Some(_) => param(msg.header("to").unwrap_or(""), "tag").is_some_and(|t| t.starts_with("srs")),
            _ => false,
        }
    }

    pub fn active_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The recording sessions now: (id, ports, the call it feeds, input label) for `/calls`.
    pub fn snapshot(&self) -> Vec<(u64, Vec<u16>, Option<CallId>)> {
        self.sessions
            .iter()
            .map(|(k, s)| (s.id, s.ports.clone(), self.groups.get(&s.call_key).filter(|g| g.members.first() == Some(k)).map(|g| g.call)))
            .collect()
    }

    fn send(to: &Peer, m: &Message) -> Action {
        Action::Send { to: Dest::Peer(*to), data: m.to_bytes() }
    }

    fn reply(msg: &Message, peer: &Peer, code: u16, reason: &str, tag: Option<&str>) -> Action {
        let mut r = msg.response(code, reason, tag);
        if code == 503 {
            r.push_back("Retry-After", "5");
        }
        Self::send(peer, &r)
    }

    pub fn handle_message(&mut self, msg: Message, peer: Peer, now: Instant, rec: &mut dyn Recorder) -> Vec<Action> {
        let Some(method) = msg.method().map(str::to_string) else {
            // Responses: to our BYEs; nothing to do.
            return Vec::new();
        };
        let call_id = msg.call_id().to_string();
        if method != "ACK" && !self.cfg.allow.iter().any(|p| p.matches(peer.addr)) {
            self.stats.refused.fetch_add(1, Relaxed);
            tracing::info!(source = %peer.addr.ip(), "recording session from a source not in siprec.allow: 403");
            return vec![Self::reply(&msg, &peer, 403, "Forbidden", None)];
        }
        let to_tag = param(msg.header("to").unwrap_or(""), "tag");
        match method.as_str() {
            "OPTIONS" => {
                let mut r = msg.response(200, "OK", None);
                r.push_back("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO");
                r.push_back("Supported", "siprec");
                r.push_back("Accept", "application/sdp, application/rs-metadata+xml, application/rs-metadata");
                vec![Self::send(&peer, &r)]
            }
            "INVITE" if to_tag.is_none() => self.initial_invite(msg, peer, now, rec),
            "INVITE" | "UPDATE" => self.in_dialog_offer(msg, peer, now, rec, &method),
            "ACK" => {
                if let Some(s) = self.sessions.get_mut(&call_id) {
                    s.pending = None;
                }
                Vec::new()
            }
            "BYE" => match self.sessions.contains_key(&call_id) {
                true => {
                    let out = vec![Self::reply(&msg, &peer, 200, "OK", None)];
                    self.end_session(&call_id, EndReason::Bye, rec);
                    if self.ended.len() < MAX_ENDED {
                        self.ended_order.push_back((now, call_id.clone()));
                        self.ended.insert(call_id, (now, msg.cseq().map_or(0, |c| c.0)));
                    }
                    out
                }
                // The same BYE again: its 200 was lost.
                false if self.ended.get(&call_id).is_some_and(|(_, c)| Some(*c) == msg.cseq().map(|c| c.0)) => {
                    vec![Self::reply(&msg, &peer, 200, "OK", None)]
                }
                false => vec![Self::reply(&msg, &peer, 481, "Call/Transaction Does Not Exist", None)],
            },
            "CANCEL" => {
                // Recording INVITEs are answered at once: a CANCEL finds nothing to cancel.
                vec![Self::reply(&msg, &peer, 481, "Call/Transaction Does Not Exist", None)]
            }
            _ if self.sessions.contains_key(&call_id) => vec![Self::reply(&msg, &peer, 200, "OK", None)],
            _ => vec![Self::reply(&msg, &peer, 481, "Call/Transaction Does Not Exist", None)],
        }
    }

    fn bad(&self, msg: &Message, peer: &Peer, code: u16, why: &str) -> Vec<Action> {
        match code {
            400 => self.stats.malformed.fetch_add(1, Relaxed),
            488 => self.stats.unsupported.fetch_add(1, Relaxed),
            _ => self.stats.busy.fetch_add(1, Relaxed),
        };
        tracing::info!(status = code, reason = why, "recording INVITE refused");
        let reason = match code {
            400 => "Bad Request",
            488 => "Not Acceptable Here",
            _ => "Service Unavailable",
        };
        let mut r = msg.response(code, reason, None);
        r.push_back("Warning", format!("399 hearken \"{}\"", why.replace('"', "'")));
        if code == 503 {
            r.push_back("Retry-After", "5");
        }
        vec![Self::send(peer, &r)]
    }

    /// The m-lines Hearken receives (offer indexes): audio with a port and a codec it decodes.
    fn receivable(offer: &crate::sdp::Session) -> Vec<usize> {
        offer
            .media
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                m.kind == "audio"
                    && m.port != 0
                    && m.formats.iter().any(|f| {
                        use crate::codec::{Codec, PayloadMap};
                        f.parse::<u8>()
                            .ok()
                            .is_some_and(|pt| matches!(PayloadMap::from_media(m).codec(pt), Codec::Pcmu | Codec::Pcma | Codec::Opus))
                    })
            })
            .map(|(i, _)| i)
            .take(MAX_MLINES)
            .collect()
    }

    fn initial_invite(&mut self, msg: Message, peer: Peer, now: Instant, rec: &mut dyn Recorder) -> Vec<Action> {
        let call_id = msg.call_id().to_string();
        let cseq = msg.cseq().map_or(0, |c| c.0);
        if let Some(s) = self.sessions.get(&call_id) {
            // A retransmission of the INVITE we answered.
            return match &s.last_invite {
                Some((c, data)) if *c == cseq => vec![Action::Send { to: Dest::Peer(peer), data: data.clone() }],
                _ => Vec::new(),
            };
        }
        let body = match body::parse(msg.content_type(), &msg.body) {
            Ok(b) => b,
            Err(why) => return self.bad(&msg, &peer, 400, why),
        };
        let Some(sdp_bytes) = body.sdp else { return self.bad(&msg, &peer, 400, "a recording INVITE without SDP") };
        let offer = match crate::sdp::parse(&sdp_bytes) {
            Ok(o) => o,
            Err(e) => return self.bad(&msg, &peer, 400, &format!("SDP: {e}")),
        };
        let mlines = Self::receivable(&offer);
        if mlines.is_empty() {
            return self.bad(&msg, &peer, 488, "no audio stream in a codec Hearken decodes");
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            return self.bad(&msg, &peer, 503, "siprec.max_sessions reached");
        }
        let mut meta = Metadata::default();
        if let Some(xml) = &body.metadata {
            if let Err(e) = meta.apply(xml) {
                self.stats.metadata_errors.fetch_add(1, Relaxed);
                tracing::info!(error = %e, "recording metadata not readable: streams mapped by m-line order");
            }
        }
        let ports = match rec.open(mlines.len()) {
            Ok(p) => p,
            Err(e) => return self.bad(&msg, &peer, 503, &format!("no receive ports: {e:?}")),
        };
        self.tag_seed = self.tag_seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let our_tag = format!("srs{:x}", self.tag_seed);
        let rs = self.next_rs;
        self.next_rs += 1;
        let call_key = meta.call_key.clone().unwrap_or_else(|| format!("callid:{call_id}"));
        let to = format!("{};tag={our_tag}", msg.header("to").unwrap_or(""));
        let remote_target = msg
            .header("contact")
            .and_then(|c| c.split_once('<').and_then(|(_, r)| r.split_once('>')).map(|(u, _)| u.to_string()))
            .unwrap_or_else(|| format!("sip:{}", peer.addr));
        let header = |h: &Option<String>| h.as_deref().and_then(|name| msg.header(&name.to_ascii_lowercase())).map(sanitize_label);
        let mut s = Session {
            id: rs,
            peer,
            from: msg.header("from").unwrap_or("").to_string(),
            to,
            remote_target,
            our_cseq: 1,
            ports,
            mlines: mlines.clone(),
            offer,
            meta,
            call_key: call_key.clone(),
            last_invite: None,
            pending: None,
            agent_id: header(&self.cfg.agent_id_header).unwrap_or_default(),
            queue: header(&self.cfg.queue_header).unwrap_or_else(|| "default".into()),
            parties: Vec::new(),
            paused: false,
            our_crypto: Vec::new(),
        };
        let header_agent = !s.agent_id.is_empty();
        self.assign_roles(&mut s, header_agent);
        let measurable = s.parties.iter().flatten().count() == 2;
        self.stats.sessions.fetch_add(1, Relaxed);
        // Join the call's group, or start it.
        let call = if !measurable {
            self.stats.unmeasured.fetch_add(1, Relaxed);
            tracing::info!(
                rs,
                "recording session answered, not measured: it has one audio stream (both voices mixed cannot give turn metrics)"
            );
            None
        } else if let Some(g) = self.groups.get_mut(&call_key) {
            g.members.push(call_id.clone());
            self.stats.duplicates.fetch_add(1, Relaxed);
            tracing::info!(rs, call = %g.call, "second recording session of a call: kept as a standby copy");
            None
        } else {
            let call = self.start_call(&s, rec);
            self.groups.insert(call_key.clone(), Group { call, members: vec![call_id.clone()] });
            Some(call)
        };
        tracing::info!(rs, ports = ?s.ports, agent = %s.agent_id, "recording session started");
        rec.configure(rs, self.media_of(&s, call));
        let answer = self.answer(&mut s);
        let mut ok = msg.response(200, "OK", Some(&our_tag));
        ok.push_back("Contact", format!("<sip:srs@{}:{}>;+sip.srs", self.cfg.host, self.cfg.port));
        ok.push_back("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO");
        ok.set("content-type", "Content-Type", "application/sdp");
        ok.set("content-length", "Content-Length", answer.len().to_string());
        ok.body = answer;
        let data = ok.to_bytes();
        s.last_invite = Some((cseq, data.clone()));
        if peer.transport == Transport::Udp {
            s.pending = Some(Pending2xx { data: data.clone(), next: now + T1, interval: T1, give_up: now + T1 * 64 });
        }
        self.stats.active.store(self.sessions.len() as u64 + 1, Relaxed);
        self.sessions.insert(call_id, s);
        vec![Action::Send { to: Dest::Peer(peer), data }]
    }

    /// Which answered m-line carries whom, and the agent id from the metadata.
    fn assign_roles(&self, s: &mut Session, keep_agent_id: bool) {
        let n = s.mlines.len();
        s.parties = vec![None; n];
        if n < 2 {
            return;
        }
        let label = |i: usize| s.offer.media[s.mlines[i]].label.clone().unwrap_or_default();
        let senders = [s.meta.sender_of(&label(0)), s.meta.sender_of(&label(1))];
        let c = self.cfg.roles.customer_index(senders);
        s.parties[c] = Some(Party::Customer);
        s.parties[1 - c] = Some(Party::Agent);
        if !keep_agent_id {
            s.agent_id = senders[1 - c].and_then(|p| aor_user(&p.aor)).map(|u| sanitize_label(&u)).unwrap_or_else(|| "unknown".into());
        }
    }

    fn start_call(&mut self, s: &Session, rec: &mut dyn Recorder) -> CallId {
        let call = CallId(self.next_call);
        self.next_call += 1;
        let meta = CallMeta { agent_id: s.agent_id.clone(), queue: s.queue.clone(), customer_name: None, input: Input::Siprec };
        rec.analysis(AnalysisCmd::Start { call, meta });
        rec.analysis(AnalysisCmd::Negotiated { call, plan: self.plan(s) });
        tracing::info!(%call, agent = %s.agent_id, "recorded call analysed");
        call
    }

    /// The analysis plan: one audio stream whose payloads are the offer's (both m-lines are
    /// analysed as stream 0, each as its party), on hold while paused.
    fn plan(&self, s: &Session) -> MediaPlan {
        let mut plan = MediaPlan::default();
        let mut text = String::from("v=0\r\nc=IN IP4 0.0.0.0\r\n");
        if let Some(&i) = s.mlines.first() {
            let m = &s.offer.media[i];
            text.push_str(&format!("m=audio 9 RTP/AVP {}\r\n", m.formats.join(" ")));
            for (pt, enc) in &m.rtpmap {
                text.push_str(&format!("a=rtpmap:{pt} {enc}\r\n"));
            }
        }
        if let Ok(sdp) = crate::sdp::parse(text.as_bytes()) {
            plan.learn(Party::Customer, &sdp);
            plan.learn(Party::Agent, &sdp);
        }
        plan.on_hold = s.paused;
        plan
    }

    fn media_of(&self, s: &Session, call: Option<CallId>) -> RsMedia {
        let streams = s
            .mlines
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let m = &s.offer.media[i];
                RecvStream {
                    port: s.ports[k],
                    party: s.parties.get(k).copied().flatten(),
                    source: m.addr,
                    key: m.crypto.iter().find_map(SdesKey::from_crypto),
                    active: !matches!(m.direction, crate::sdp::Direction::Inactive | crate::sdp::Direction::RecvOnly),
                }
            })
            .collect();
        RsMedia { call, streams }
    }

    /// Our SDP answer: every offered m-line in order, the received ones on our ports and
    /// receive-only, the others rejected (port 0).
    fn answer(&mut self, s: &mut Session) -> Vec<u8> {
        let mut out = format!(
            "v=0\r\no=hearken {id} {v} IN IP{ipv} {h}\r\ns=hearken recording\r\nc=IN IP{ipv} {h}\r\nt=0 0\r\n",
            id = s.id,
            v = s.our_cseq + s.last_invite.as_ref().map_or(0, |l| l.0),
            h = self.cfg.media_host,
            ipv = if self.cfg.media_host.is_ipv4() { 4 } else { 6 }
        );
        if s.our_crypto.len() < s.mlines.len() {
            s.our_crypto.resize(s.mlines.len(), None);
        }
        for (i, m) in s.offer.media.iter().enumerate() {
            match s.mlines.iter().position(|&x| x == i) {
                Some(k) => {
                    out.push_str(&format!("m={} {} {} {}\r\n", m.kind, s.ports[k], m.proto, m.formats.join(" ")));
                    for (pt, enc) in &m.rtpmap {
                        out.push_str(&format!("a=rtpmap:{pt} {enc}\r\n"));
                    }
                    // SDES: answer the first suite offered with a key of our own (we never send).
                    if let Some(c) = m.crypto.iter().find(|c| SdesKey::from_crypto(c).is_some()) {
                        let line = s.our_crypto[k].get_or_insert_with(|| {
                            use base64::Engine;
                            let mut key = [0u8; 30];
                            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key);
                            format!("a=crypto:{} {} inline:{}", c.tag, c.suite, base64::engine::general_purpose::STANDARD.encode(key))
                        });
                        out.push_str(line);
                        out.push_str("\r\n");
                    }
                    let dir = if matches!(m.direction, crate::sdp::Direction::Inactive) { "inactive" } else { "recvonly" };
                    out.push_str(&format!("a={dir}\r\n"));
                    if let Some(l) = &m.label {
                        out.push_str(&format!("a=label:{l}\r\n"));
                    }
                }
                None => out.push_str(&format!("m={} 0 {} {}\r\n", m.kind, m.proto, m.formats.join(" "))),
            }
        }
        out.into_bytes()
    }

    fn in_dialog_offer(&mut self, msg: Message, peer: Peer, now: Instant, rec: &mut dyn Recorder, method: &str) -> Vec<Action> {
        let call_id = msg.call_id().to_string();
        let cseq = msg.cseq().map_or(0, |c| c.0);
        let Some(mut s) = self.sessions.remove(&call_id) else {
            return vec![Self::reply(&msg, &peer, 481, "Call/Transaction Does Not Exist", None)];
        };
        if method == "INVITE" {
            if let Some((c, data)) = &s.last_invite {
                if *c == cseq {
                    let out = vec![Action::Send { to: Dest::Peer(peer), data: data.clone() }];
                    self.sessions.insert(call_id, s);
                    return out;
                }
            }
        }
        let body = match body::parse(msg.content_type(), &msg.body) {
            Ok(b) => b,
            Err(why) => {
                self.sessions.insert(call_id, s);
                return self.bad(&msg, &peer, 400, why);
            }
        };
        if let Some(xml) = &body.metadata {
            if let Err(e) = s.meta.apply(xml) {
                self.stats.metadata_errors.fetch_add(1, Relaxed);
                tracing::info!(error = %e, "recording metadata update not readable: kept what was known");
            }
        }
        if let Some(sdp) = &body.sdp {
            match crate::sdp::parse(sdp) {
                // The m-lines keep their ports: the offer is taken as it maps onto them.
                Ok(o) if o.media.len() >= s.offer.media.len() => s.offer = o,
                Ok(_) | Err(_) => {
                    self.sessions.insert(call_id, s);
                    return self.bad(&msg, &peer, 488, "a re-offer that drops m-lines of the recording session");
                }
            }
        }
        let paused = s
            .mlines
            .iter()
            .all(|&i| matches!(s.offer.media[i].direction, crate::sdp::Direction::Inactive | crate::sdp::Direction::RecvOnly));
        let old_agent = s.agent_id.clone();
        let header_agent = self.cfg.agent_id_header.as_deref().and_then(|h| msg.header(&h.to_ascii_lowercase())).map(sanitize_label);
        if let Some(a) = &header_agent {
            s.agent_id = a.clone();
        }
        self.assign_roles(&mut s, header_agent.is_some());
        let primary = self.groups.get(&s.call_key).filter(|g| g.members.first() == Some(&call_id)).map(|g| g.call);
        let mut call = primary;
        if let Some(old) = primary {
            if s.agent_id != old_agent && s.agent_id != "unknown" {
                // A transfer: this agent's part ends; the next agent's is a call of its own.
                self.stats.transfers.fetch_add(1, Relaxed);
                rec.analysis(AnalysisCmd::End { call: old, reason: EndReason::Transfer });
                s.paused = paused;
                let new = self.start_call(&s, rec);
                if let Some(g) = self.groups.get_mut(&s.call_key) {
                    g.call = new;
                }
                tracing::info!(from = %old, to = %new, agent = %s.agent_id, "recorded call transferred to another agent");
                call = Some(new);
            } else if paused != s.paused {
                s.paused = paused;
                if paused {
                    self.stats.pauses.fetch_add(1, Relaxed);
                }
                rec.analysis(AnalysisCmd::Negotiated { call: old, plan: self.plan(&s) });
            }
        }
        s.paused = paused;
        rec.configure(s.id, self.media_of(&s, call));
        let mut ok = msg.response(200, "OK", None);
        ok.push_back("Contact", format!("<sip:srs@{}:{}>;+sip.srs", self.cfg.host, self.cfg.port));
        if body.sdp.is_some() {
            s.our_cseq += 1;
            let answer = self.answer(&mut s);
            ok.set("content-type", "Content-Type", "application/sdp");
            ok.set("content-length", "Content-Length", answer.len().to_string());
            ok.body = answer;
        }
        let data = ok.to_bytes();
        if method == "INVITE" {
            s.last_invite = Some((cseq, data.clone()));
            if peer.transport == Transport::Udp {
                s.pending = Some(Pending2xx { data: data.clone(), next: now + T1, interval: T1, give_up: now + T1 * 64 });
            }
        }
        self.sessions.insert(call_id, s);
        vec![Action::Send { to: Dest::Peer(peer), data }]
    }

    /// A session is over: its ports released, its call ended or handed to a standby copy.
    fn end_session(&mut self, call_id: &str, reason: EndReason, rec: &mut dyn Recorder) {
        let Some(s) = self.sessions.remove(call_id) else { return };
        rec.close(s.id, &s.ports);
        self.stats.active.store(self.sessions.len() as u64, Relaxed);
        tracing::info!(rs = s.id, reason = reason.label(), "recording session ended");
        let Some(g) = self.groups.get_mut(&s.call_key) else { return };
        let was_primary = g.members.first().map(String::as_str) == Some(call_id);
        g.members.retain(|m| m != call_id);
        if !was_primary {
            return;
        }
        match g.members.first().cloned() {
            // The standby copy takes over: the call goes on from its audio.
            Some(next) => {
                let call = g.call;
                if let Some(n) = self.sessions.get(&next) {
                    tracing::info!(%call, rs = n.id, "standby recording session takes over the call");
                    rec.configure(n.id, self.media_of(n, Some(call)));
                }
            }
            None => {
                let call = g.call;
                self.groups.remove(&s.call_key);
                rec.analysis(AnalysisCmd::End { call, reason });
            }
        }
    }

    /// The media side saw nothing on session `rs` for the RTP timeout: it is ended, with a BYE
    /// to its recording client.
    pub fn handle_media_timeout(&mut self, rs: u64, rec: &mut dyn Recorder) -> Vec<Action> {
        let Some(call_id) = self.sessions.iter().find(|(_, s)| s.id == rs).map(|(k, _)| k.clone()) else { return Vec::new() };
        let bye = self.sessions.get_mut(&call_id).map(|s| {
            s.our_cseq += 1;
            let mut m = Message {
                start: crate::sip::message::StartLine::Request {
                    method: "BYE".into(),
                    uri: s.remote_target.clone(),
                    version: "SIP/2.0".into(),
                },
                headers: Vec::new(),
                body: Vec::new(),
            };
            let proto = s.peer.transport.via_name();
            m.headers
                .push(Header::new("Via", format!("SIP/2.0/{proto} {}:{};branch=z9hG4bKsrs{:x}", self.cfg.host, self.cfg.port, rand_u64())));
            m.headers.push(Header::new("Max-Forwards", "70"));
            m.headers.push(Header::new("From", s.to.clone()));
            m.headers.push(Header::new("To", s.from.clone()));
            m.headers.push(Header::new("Call-ID", call_id.clone()));
            m.headers.push(Header::new("CSeq", format!("{} BYE", s.our_cseq + 1000)));
            m.headers.push(Header::new("Content-Length", "0"));
            Action::Send { to: Dest::Peer(s.peer), data: m.to_bytes() }
        });
        self.end_session(&call_id, EndReason::RtpTimeout, rec);
        bye.into_iter().collect()
    }

    /// The next 2xx retransmission due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.sessions.values().filter_map(|s| s.pending.as_ref().map(|p| p.next));
        pending.chain(self.ended_order.front().map(|(t, _)| *t + T1 * 64)).min()
    }

    /// Retransmit 2xx not yet ACKed; a session whose ACK never comes ends.
    pub fn handle_timeout(&mut self, now: Instant, rec: &mut dyn Recorder) -> Vec<Action> {
        while let Some((t, id)) = self.ended_order.front() {
            if now.saturating_duration_since(*t) < T1 * 64 {
                break;
            }
            if self.ended.get(id).is_some_and(|(e, _)| e == t) {
                self.ended.remove(id);
            }
            self.ended_order.pop_front();
        }
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (k, s) in self.sessions.iter_mut() {
            let Some(p) = s.pending.as_mut() else { continue };
            if now >= p.give_up {
                dead.push(k.clone());
                s.pending = None;
            } else if now >= p.next {
                out.push(Action::Send { to: Dest::Peer(s.peer), data: p.data.clone() });
                p.interval = (p.interval * 2).min(T2);
                p.next = now + p.interval;
            }
        }
        for k in dead {
            tracing::info!("recording session: no ACK for our 200 OK, ended");
            self.end_session(&k, EndReason::SetupTimeout, rec);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        next_port: u16,
        configured: Vec<(u64, RsMedia)>,
        closed: Vec<u64>,
        cmds: Vec<AnalysisCmd>,
    }

    impl Recorder for Fake {
        fn open(&mut self, n: usize) -> Result<Vec<u16>, OpenError> {
            Ok((0..n)
                .map(|_| {
                    self.next_port += 2;
                    30000 + self.next_port
                })
                .collect())
        }
        fn configure(&mut self, rs: u64, media: RsMedia) {
            self.configured.push((rs, media));
        }
        fn close(&mut self, rs: u64, _: &[u16]) {
            self.closed.push(rs);
        }
        fn analysis(&mut self, cmd: AnalysisCmd) {
            self.cmds.push(cmd);
        }
    }

    fn core() -> SrsCore {
        SrsCore::new(
            SrsConfig {
                host: "127.0.0.1".into(),
                port: 5060,
                media_host: "127.0.0.1".parse().unwrap(),
                allow: vec![SourcePattern::parse("10.0.0.9").unwrap()],
                max_sessions: 10,
                roles: Roles { agent_aor: vec!["sip:*@agents.example.com".into()], ..Default::default() },
                agent_id_header: None,
                queue_header: Some("X-Queue".into()),
            },
            Arc::default(),
            1 << 34,
        )
    }

    fn peer() -> Peer {
        Peer { addr: "10.0.0.9:5060".parse().unwrap(), transport: Transport::Udp, conn: None }
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/siprec/{name}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .replace("[media_port1]", "4000")
            .replace("[media_port2]", "4002")
    }

    fn request(method: &str, call_id: &str, cseq: u32, to_tag: Option<&str>, ct: &str, body: &str) -> Message {
        let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let text = format!(
            "{method} sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK{call_id}{cseq}\r\nFrom: <sip:src@10.0.0.9>;tag=s1\r\nTo: <sip:srs@127.0.0.1>{tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContact: <sip:src@10.0.0.9>;+sip.src\r\nX-Queue: claims\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Message::parse(text.as_bytes()).unwrap()
    }

    fn sent(a: &[Action]) -> Message {
        let Action::Send { data, .. } = &a[0];
        Message::parse(data).unwrap()
    }

    const CT: &str = "multipart/mixed;boundary=hearken-siprec-boundary";

    #[test]
    fn a_recording_session_from_invite_to_bye_with_a_transfer() {
        let (mut c, mut r, t0) = (core(), Fake::default(), Instant::now());
        let inv = request("INVITE", "rs1", 101, None, CT, &fixture("rfc7866.body"));
        assert!(c.claims(&inv, &peer()));
        let ok = sent(&c.handle_message(inv.clone(), peer(), t0, &mut r));
        assert_eq!(ok.status(), Some(200));
        let body = String::from_utf8_lossy(&ok.body).to_string();
        assert_eq!(body.matches("a=recvonly").count(), 2, "{body}");
        assert!(
            body.contains("m=audio 30002 RTP/AVP 0 101") && body.contains("a=label:1") && body.contains("c=IN IP4 127.0.0.1"),
            "{body}"
        );
        assert!(ok.header("contact").unwrap().contains("+sip.srs"));
        let tag = param(ok.header("to").unwrap(), "tag").unwrap();
        let AnalysisCmd::Start { call, meta } = &r.cmds[0] else { panic!("{:?}", r.cmds) };
        assert_eq!((meta.agent_id.as_str(), meta.queue.as_str(), meta.input), ("agent7", "claims", Input::Siprec));
        let call = *call;
        let parties: Vec<_> = r.configured[0].1.streams.iter().map(|s| s.party).collect();
        assert_eq!(parties, vec![Some(Party::Customer), Some(Party::Agent)]);
        // A retransmitted INVITE gets the same 200; the 200 is retransmitted until the ACK.
        assert_eq!(c.handle_message(inv, peer(), t0, &mut r)[0], Action::Send { to: Dest::Peer(peer()), data: ok.to_bytes() });
        assert_eq!(c.handle_timeout(t0 + T1, &mut r).len(), 1);
        c.handle_message(request("ACK", "rs1", 101, Some(&tag), "application/sdp", ""), peer(), t0, &mut r);
        assert!(c.handle_timeout(t0 + T1 * 70, &mut r).is_empty() && r.closed.is_empty(), "ACKed: no retransmission, no timeout");
        // Pause: a=inactive on both m-lines → the plan goes on hold.
        let sdp = fixture("rfc7866.body")
            .split("Content-Type: application/sdp\r\n\r\n")
            .nth(1)
            .unwrap()
            .split("\r\n--")
            .next()
            .unwrap()
            .to_string();
        let inactive = sdp.replace("a=sendonly", "a=inactive");
        let ok = sent(&c.handle_message(request("INVITE", "rs1", 102, Some(&tag), "application/sdp", &inactive), peer(), t0, &mut r));
        assert!(String::from_utf8_lossy(&ok.body).contains("a=inactive"));
        assert!(matches!(r.cmds.last(), Some(AnalysisCmd::Negotiated { plan, .. }) if plan.on_hold));
        assert!(r.configured.last().unwrap().1.streams.iter().all(|s| !s.active));
        // Transfer: the update moves the agent stream to agent9 → a call of its own.
        let ok =
            sent(&c.handle_message(request("INVITE", "rs1", 103, Some(&tag), CT, &fixture("update_transfer.body")), peer(), t0, &mut r));
        assert_eq!(ok.status(), Some(200));
        let n = r.cmds.len();
        assert!(
            matches!(r.cmds[n - 3], AnalysisCmd::End { call: c0, reason: EndReason::Transfer } if c0 == call),
            "{:?}",
            &r.cmds[n - 3..]
        );
        let AnalysisCmd::Start { call: call2, meta } = &r.cmds[n - 2] else { panic!() };
        assert_eq!(meta.agent_id, "agent9");
        let call2 = *call2;
        assert_eq!(c.stats.transfers.load(Relaxed), 1);
        // BYE ends it: 200, ports released, the record of agent9's part.
        let ok = sent(&c.handle_message(request("BYE", "rs1", 104, Some(&tag), "application/sdp", ""), peer(), t0, &mut r));
        assert_eq!(ok.status(), Some(200));
        assert!(matches!(r.cmds.last(), Some(AnalysisCmd::End { call: c2, reason: EndReason::Bye }) if *c2 == call2));
        assert_eq!((r.closed.clone(), c.active_sessions()), (vec![1], 0));
        // Its 200 was lost: the same BYE again gets 200 (nothing ends twice); another CSeq, or
        // the same after Timer J (32 s), gets 481.
        let cmds = r.cmds.len();
        let again = sent(&c.handle_message(request("BYE", "rs1", 104, Some(&tag), "application/sdp", ""), peer(), t0, &mut r));
        assert_eq!((again.status(), r.cmds.len()), (Some(200), cmds));
        let other = sent(&c.handle_message(request("BYE", "rs1", 105, Some(&tag), "application/sdp", ""), peer(), t0, &mut r));
        assert_eq!(other.status(), Some(481));
        assert_eq!(c.poll_timeout(), Some(t0 + T1 * 64));
        c.handle_timeout(t0 + T1 * 64, &mut r);
        let late = sent(&c.handle_message(request("BYE", "rs1", 104, Some(&tag), "application/sdp", ""), peer(), t0, &mut r));
        assert_eq!((late.status(), c.poll_timeout()), (Some(481), None));
    }

    #[test]
    fn two_recording_clients_of_one_call_make_one_analysed_call() {
        let (mut c, mut r, t0) = (core(), Fake::default(), Instant::now());
        let body = fixture("rfc7866.body");
        c.handle_message(request("INVITE", "a", 1, None, CT, &body), peer(), t0, &mut r);
        c.handle_message(
            request("INVITE", "b", 1, None, CT, &body.replace("m0HX4qDDT2yOFSp9kLbD9A==", "other-session-id")),
            peer(),
            t0,
            &mut r,
        );
        let starts = r.cmds.iter().filter(|c| matches!(c, AnalysisCmd::Start { .. })).count();
        assert_eq!(starts, 1, "the same Session-ID: one call");
        assert_eq!(r.configured[1].1.call, None, "the second is a standby copy");
        assert_eq!(c.stats.duplicates.load(Relaxed), 1);
        // The primary ends first: the standby takes over, the call goes on.
        c.handle_message(request("BYE", "a", 2, Some("x"), "application/sdp", ""), peer(), t0, &mut r);
        assert!(!r.cmds.iter().any(|c| matches!(c, AnalysisCmd::End { .. })));
        assert_eq!(r.configured.last().map(|(rs, m)| (*rs, m.call.is_some())), Some((2, true)));
        c.handle_message(request("BYE", "b", 2, Some("x"), "application/sdp", ""), peer(), t0, &mut r);
        assert_eq!(r.cmds.iter().filter(|c| matches!(c, AnalysisCmd::End { reason: EndReason::Bye, .. })).count(), 1);
    }

    #[test]
    fn bad_requests_and_strangers() {
        let (mut c, mut r, t0) = (core(), Fake::default(), Instant::now());
        let stranger = Peer { addr: "10.0.0.66:5060".parse().unwrap(), ..peer() };
        let body = fixture("rfc7866.body");
        assert_eq!(sent(&c.handle_message(request("INVITE", "x1", 1, None, CT, &body), stranger, t0, &mut r)).status(), Some(403));
        assert_eq!(
            sent(&c.handle_message(request("INVITE", "x2", 1, None, "multipart/mixed", &body), peer(), t0, &mut r)).status(),
            Some(400)
        );
        let no_audio = body.replace("m=audio", "m=video");
        assert_eq!(sent(&c.handle_message(request("INVITE", "x3", 1, None, CT, &no_audio), peer(), t0, &mut r)).status(), Some(488));
        // One mixed stream: answered (never fail the call), not measured.
        let one =
            "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\na=label:1\r\n";
        assert_eq!(
            sent(&c.handle_message(request("INVITE", "x4", 1, None, "application/sdp", one), peer(), t0, &mut r)).status(),
            Some(200)
        );
        assert!(r.cmds.is_empty() && c.stats.unmeasured.load(Relaxed) == 1);
        // Never ACKed: given up after 64 × T1, ports released.
        let mut resent = 0;
        let mut t = t0;
        while c.active_sessions() > 0 && t < t0 + Duration::from_secs(60) {
            t += Duration::from_millis(100);
            resent += c.handle_timeout(t, &mut r).len();
        }
        assert_eq!((c.active_sessions(), r.closed.len()), (0, 1));
        assert!((7..=12).contains(&resent), "{resent} retransmissions");
        // Media timeout: a BYE to the client.
        c.handle_message(request("INVITE", "x5", 1, None, CT, &body), peer(), t0, &mut r);
        let bye = c.handle_media_timeout(2, &mut r);
        let m = sent(&bye);
        assert_eq!((m.method(), m.call_id()), (Some("BYE"), "x5"));
        assert!(m.header("from").unwrap().contains("tag=srs") && m.header("to").unwrap().contains("tag=s1"));
    }
}
