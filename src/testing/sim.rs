//! A deterministic simulation of whole calls: a fake clock and an in-memory network around the
//! real cores — the SIP proxy ([`Proxy`]), the media session ([`MediaSession`]) per call, and
//! the per-call analysis ([`CallCore`]) with the nudge policy. A scripted PBX and agent exchange
//! SIP through the proxy and RTP through the relay; minutes of call run in milliseconds.
//!
//! The loop follows quinn-proto's test `Pair` and str0m's `progress`: every step delivers what
//! is in flight, then advances the clock to the next 20 ms and fires due timers (proxy
//! transactions, RTP timeout, analysis ticks).
//!
//! Not here: sockets, threads, the tokio drivers (the integration tests cover those with real
//! peers).

use crate::analysis::call::{CallCore, Output};
use crate::analysis::pipeline::AnalysisConfig;
use crate::call::{AnalysisCmd, CallId, CallMeta, EndReason, MediaControl, MediaPlan, OpenError, Party, StreamPorts};
use crate::coach::CoachConfig;
use crate::codec::g711;
use crate::media::session::{MediaPolicy, MediaSession, Port, Verdict};
use crate::net::SourcePattern;
use crate::record::CallRecord;
use crate::sdp::{self, RelayPorts};
use crate::sip::message::{Message, Via};
use crate::sip::proxy::{Action, Dest, Peer, Proxy, ProxyConfig, SipStats, Target, Transport};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PBX: &str = "10.0.0.1:5060";
pub const AGENT: &str = "10.0.0.2:5060";
pub const HEARKEN: &str = "10.0.0.9:5060";
pub const PBX_RTP: &str = "10.0.0.1:4000";
pub const AGENT_RTP: &str = "10.0.0.2:5000";
const STEP: Duration = Duration::from_millis(20);

/// The media plane in memory: real [`MediaSession`] cores, ports from a counter.
struct SimMedia {
    now: Instant,
    calls: HashMap<CallId, (MediaSession, Vec<Option<StreamPorts>>, MediaPlan)>,
    next_port: u16,
    cmds: Vec<AnalysisCmd>,
    policy: MediaPolicy,
}

impl MediaControl for SimMedia {
    fn open(&mut self, call: CallId, meta: &CallMeta, active: &[bool]) -> Result<Vec<Option<StreamPorts>>, OpenError> {
        if !self.calls.contains_key(&call) {
            let s = MediaSession::new(self.policy.clone(), self.now);
            self.calls.insert(call, (s, Vec::new(), MediaPlan::default()));
            self.cmds.push(AnalysisCmd::Start { call, meta: meta.clone() });
        }
        let (_, ports, _) = self.calls.get_mut(&call).expect("inserted");
        ports.resize(ports.len().max(active.len()), None);
        for (slot, on) in ports.iter_mut().zip(active) {
            if *on && slot.is_none() {
                let p = 30000 + self.next_port * 4;
                self.next_port += 1;
                *slot = Some(StreamPorts { customer: RelayPorts { rtp: p, rtcp: p + 1 }, agent: RelayPorts { rtp: p + 2, rtcp: p + 3 } });
            }
        }
        Ok(ports.clone())
    }
    fn remote(&mut self, call: CallId, party: Party, session: &sdp::Session) {
        if let Some((s, _, plan)) = self.calls.get_mut(&call) {
            s.handle_remote(party, session, self.now);
            plan.learn(party, session);
            self.cmds.push(AnalysisCmd::Negotiated { call, plan: plan.clone() });
        }
    }
    fn close(&mut self, call: CallId, reason: EndReason) {
        if self.calls.remove(&call).is_some() {
            self.cmds.push(AnalysisCmd::End { call, reason });
        }
    }
}

/// One simulated deployment: PBX, Hearken (proxy + relay + analysis), one agent phone.
pub struct Sim {
    pub t0: Instant,
    pub now: Instant,
    pub proxy: Proxy,
    media: SimMedia,
    pub analysis: HashMap<CallId, CallCore>,
    /// Everything the analysis said, per call, in order.
    pub outputs: Vec<(CallId, Output)>,
    /// SIP messages delivered to the PBX and to the agent (oldest first).
    pub pbx_inbox: Vec<Message>,
    pub agent_inbox: Vec<Message>,
    /// RTP packets the relay delivered to each party.
    pub delivered: [usize; 2],
    /// Datagrams the relay sent, by destination address.
    pub delivered_to: HashMap<SocketAddr, usize>,
    /// RTP sequence number of the scripted phones' next packet.
    seq: u16,
    cfg: AnalysisConfig,
    coach: CoachConfig,
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("constant address")
}

impl Sim {
    pub fn new() -> Sim {
        let t0 = Instant::now();
        let me = sa(HEARKEN);
        let proxy = Proxy::new(
            ProxyConfig {
                host: me.ip(),
                port: me.port(),
                media_hosts: [me.ip(); 2],
                pbx_sources: vec![SourcePattern { ip: sa(PBX).ip(), port: None }],
                pbx_route: Target::parse(PBX).expect("constant"),
                agents_route: Target::parse(AGENT),
                agent_id_header: None,
                queue_header: None,
                linger: Duration::from_secs(32),
                new_calls_per_source_per_s: 0.0,
                guards: Default::default(),
                tls_port: None,
                agents_iface: None,
            },
            Arc::new(SipStats::default()),
        );
        Sim {
            t0,
            now: t0,
            proxy,
            media: SimMedia { now: t0, calls: HashMap::new(), next_port: 0, cmds: Vec::new(), policy: MediaPolicy::default() },
            analysis: HashMap::new(),
            outputs: Vec::new(),
            pbx_inbox: Vec::new(),
            agent_inbox: Vec::new(),
            delivered: [0, 0],
            delivered_to: HashMap::new(),
            seq: 0,
            cfg: AnalysisConfig::default(),
            coach: CoachConfig::default(),
        }
    }

    fn ms(&self) -> u64 {
        self.now.duration_since(self.t0).as_millis() as u64
    }

    /// Send SIP text from the PBX (`Party::Customer`) or the agent phone.
    pub fn sip(&mut self, from: Party, text: &str) {
        let addr = sa(if from == Party::Customer { PBX } else { AGENT });
        let msg = Message::parse(text.as_bytes()).expect("scripted SIP parses");
        self.media.now = self.now;
        let actions = self.proxy.handle_message(msg, Peer { addr, transport: Transport::Udp, conn: None }, self.now, &mut self.media);
        self.route(actions);
        self.run_analysis_cmds();
    }

    fn route(&mut self, actions: Vec<Action>) {
        for Action::Send { to, data } in actions {
            let ip = match &to {
                Dest::Peer(p) => p.addr.ip().to_string(),
                Dest::Target(t) => t.host.clone(),
            };
            let msg = Message::parse(&data).expect("the proxy sends SIP that parses");
            if ip == sa(PBX).ip().to_string() {
                self.pbx_inbox.push(msg);
            } else {
                self.agent_inbox.push(msg);
            }
        }
    }

    fn run_analysis_cmds(&mut self) {
        let now = self.ms();
        for cmd in std::mem::take(&mut self.media.cmds) {
            match cmd {
                AnalysisCmd::Start { call, meta } => {
                    self.analysis.insert(call, CallCore::new(call, meta, &self.cfg, &self.coach, None, now));
                }
                AnalysisCmd::Negotiated { call, plan } => {
                    if let Some(c) = self.analysis.get_mut(&call) {
                        c.handle_negotiated(&plan);
                    }
                }
                AnalysisCmd::End { call, reason } => {
                    if let Some(c) = self.analysis.get_mut(&call) {
                        c.handle_end(reason, now, 0, None);
                    }
                }
            }
        }
        self.collect();
    }

    fn collect(&mut self) {
        for (id, c) in self.analysis.iter_mut() {
            while let Some(o) = c.poll_output() {
                self.outputs.push((*id, o));
            }
        }
    }

    /// One RTP packet from `from`'s phone on the first m-line of `call`, through the relay.
    pub fn rtp(&mut self, call: CallId, from: Party, packet: &[u8]) {
        let src = sa(if from == Party::Customer { PBX_RTP } else { AGENT_RTP });
        self.rtp_from(call, from, src, packet);
    }

    /// One datagram from `src` arriving on the relay port that faces `to_port_of`'s side of
    /// `call` (a stranger, a NAT rebinding, or the party's own phone).
    pub fn rtp_from(&mut self, call: CallId, to_port_of: Party, src: SocketAddr, packet: &[u8]) {
        let from = to_port_of;
        let Some((session, _, _)) = self.media.calls.get_mut(&call) else { return };
        if let Verdict::Forward { out_side, tap, to, .. } = session.handle_packet(0, from, Port::Rtp, src, packet, self.now) {
            self.delivered[out_side.idx()] += 1;
            *self.delivered_to.entry(to).or_default() += 1;
            let encrypted = session.is_encrypted(0);
            if let (Some(h), Some(core)) = (tap, self.analysis.get_mut(&call)) {
                let ms = self.now.duration_since(self.t0).as_millis() as u64;
                if encrypted {
                    core.handle_srtp(from, 0, packet, ms);
                } else {
                    core.handle_rtp(from, 0, &h, &packet[h.payload_offset..h.payload_offset + h.payload_len], ms);
                }
            }
        }
    }

    /// Bytes that do not parse as SIP, from the PBX's address: the proxy answers 400 when it can.
    pub fn junk(&mut self, bytes: &[u8]) {
        let peer = Peer { addr: sa(PBX), transport: Transport::Udp, conn: None };
        let actions = self.proxy.handle_malformed(bytes, peer, "unparseable");
        self.route(actions);
    }

    /// Advance the clock by `d` in 20 ms steps, firing due timers; `each` runs at every step
    /// (to send media).
    pub fn run_for(&mut self, d: Duration, mut each: impl FnMut(&mut Sim)) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            self.media.now = self.now;
            each(self);
            if self.proxy.poll_timeout().is_some_and(|t| t <= self.now) {
                let actions = self.proxy.handle_timeout(self.now, &mut self.media);
                self.route(actions);
            }
            let mut ended = Vec::new();
            for (id, (s, _, _)) in self.media.calls.iter_mut() {
                if let Some(ev) = s.handle_timeout(self.now) {
                    ended.push((*id, ev.end_reason()));
                }
            }
            for (id, reason) in ended {
                // The media plane ended the call by itself: tell the control plane and analysis.
                self.media.calls.remove(&id);
                let actions = self.proxy.handle_media_ended(id, reason, self.now);
                self.route(actions);
                self.media.cmds.push(AnalysisCmd::End { call: id, reason });
            }
            self.run_analysis_cmds();
            let now = self.ms();
            for c in self.analysis.values_mut() {
                c.handle_tick(now, None);
            }
            self.collect();
        }
    }

    /// Both phones send 20 ms frames with payload type `pt` for `d`, speaking or silent (None:
    /// that phone sends nothing, e.g. the held party).
    pub fn talk(&mut self, call: CallId, d: Duration, pt: u8, customer: Option<bool>, agent: Option<bool>) {
        self.run_for(d, |s| {
            s.seq = s.seq.wrapping_add(1);
            let seq = s.seq;
            for (party, speaking) in [(Party::Customer, customer), (Party::Agent, agent)] {
                if let Some(on) = speaking {
                    s.rtp(call, party, &frame(pt, seq, on));
                }
            }
        });
    }

    pub fn records(&self) -> Vec<&CallRecord> {
        self.outputs.iter().filter_map(|(_, o)| if let Output::Record(r) = o { Some(&**r) } else { None }).collect()
    }

    pub fn media_calls(&self) -> usize {
        self.media.calls.len()
    }

    /// The media plane's rules for calls opened from now on.
    pub fn set_media_policy(&mut self, p: MediaPolicy) {
        self.media.policy = p;
    }

    /// The relay-side counters of one leg of the first stream.
    pub fn leg_counters(&self, call: CallId, party: Party) -> Option<crate::media::session::LegCounters> {
        self.media.calls.get(&call).and_then(|(s, _, _)| s.counters(0, party).cloned())
    }
}

// ------------------------------------------------------------------------------------------------
// Scripted endpoints.

pub fn offer_sdp(ip: &str, port: u16, pt: u8, extra: &str) -> String {
    let name = if pt == 8 { "PCMA" } else { "PCMU" };
    format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {name}/8000\r\n{extra}")
}

/// A request from the PBX (customer side) to agent42, with an optional SDP body.
pub fn pbx_request(method: &str, cseq: u32, branch: &str, to_tag: Option<&str>, sdp: Option<&str>) -> String {
    let to = match to_tag {
        Some(t) => format!("<sip:agent42@pbx>;tag={t}"),
        None => "<sip:agent42@pbx>".into(),
    };
    let (ct, body) = match sdp {
        Some(b) => ("Content-Type: application/sdp\r\n", b),
        None => ("", ""),
    };
    format!(
        "{method} sip:agent42@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch={branch}\r\nFrom: <sip:cust@pbx>;tag=c1\r\nTo: {to}\r\nCall-ID: sim-call-1\r\nCSeq: {cseq} {method}\r\nContact: <sip:pbx@10.0.0.1>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The agent's response to the last request it received.
pub fn agent_response(sim: &Sim, code: u16, reason: &str, sdp: Option<&str>) -> String {
    let req = sim.agent_inbox.iter().rev().find(|m| m.is_request() && m.method() != Some("ACK")).expect("a request at the agent");
    let mut r = req.response(code, reason, Some("a1"));
    if let Some(b) = sdp {
        r.set("content-type", "Content-Type", "application/sdp");
        r.body = b.as_bytes().to_vec();
    }
    String::from_utf8(r.to_bytes()).expect("utf-8")
}

/// The PBX sends BYE (CSeq `cseq`, branch `branch`), the agent answers 200, the call settles.
pub fn pbx_hangs_up(sim: &mut Sim, cseq: u32, branch: &str) {
    sim.sip(Party::Customer, &pbx_request("BYE", cseq, branch, Some("a1"), None));
    let ok = agent_response(sim, 200, "OK", None);
    sim.sip(Party::Agent, &ok);
    sim.run_for(Duration::from_millis(100), |_| {});
}

/// 20 ms of audio: tone bursts (speech-like for the energy VAD) or silence, G.711-encoded.
pub fn frame(pt: u8, seq: u16, speaking: bool) -> Vec<u8> {
    let pcm: Vec<i16> = (0..160)
        .map(|i| {
            let t = seq as usize * 160 + i;
            // 300 ms on, 200 ms off while speaking: the detector's noise floor needs pauses.
            if speaking && t % 4000 < 2400 {
                ((t as f64 * 0.35).sin() * 8000.0) as i16
            } else {
                0
            }
        })
        .collect();
    let payload: Vec<u8> = pcm.iter().map(|&s| if pt == 8 { g711::encode_alaw(s) } else { g711::encode_ulaw(s) }).collect();
    crate::rtp::build(pt, seq, seq as u32 * 160, if pt == 8 { 0xa1 } else { 0x11 }, &payload)
}

/// Set up a call: INVITE from the PBX, 200 with SDP from the agent, ACK. Returns its id.
pub fn answered_call(sim: &mut Sim, pt: u8) -> CallId {
    sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKinv1", None, Some(&offer_sdp("10.0.0.1", 4000, pt, ""))));
    let ok = agent_response(sim, 200, "OK", Some(&offer_sdp("10.0.0.2", 5000, pt, "")));
    sim.sip(Party::Agent, &ok);
    sim.sip(Party::Customer, &pbx_request("ACK", 1, "z9hG4bKack1", Some("a1"), None));
    *sim.analysis.keys().next().expect("the call reached analysis")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coach::NudgeKind;

    fn nudges(sim: &Sim) -> Vec<NudgeKind> {
        sim.outputs.iter().filter_map(|(_, o)| if let Output::Nudge(n) = o { Some(n.kind) } else { None }).collect()
    }

    /// Both parties stop sending: after the RTP timeout the media ends by itself, the proxy
    /// forgets the call, and the record says why.
    #[test]
    fn rtp_timeout_ends_the_call_with_a_record() {
        let wall = std::time::Instant::now();
        let mut sim = Sim::new();
        let id = answered_call(&mut sim, 0);
        sim.talk(id, Duration::from_secs(5), 0, Some(true), Some(false));
        assert!(sim.delivered[0] > 200 && sim.delivered[1] > 200, "media flows both ways: {:?}", sim.delivered);
        sim.run_for(Duration::from_secs(31), |_| {});
        assert_eq!(sim.media_calls(), 0, "media ended");
        assert_eq!(sim.proxy.active_calls().count(), 0, "the proxy forgot the call");
        let r = sim.records();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reason, EndReason::RtpTimeout);
        assert!(r[0].summary.turns.talk_time_s.customer > 2.0, "{:?}", r[0].summary.turns.talk_time_s);
        assert!(wall.elapsed() < Duration::from_secs(5), "36 s of call in {:?}", wall.elapsed());
    }

    /// The customer talks, then nobody says anything: the dead-air nudge fires once the silence
    /// passes `coach.dead_air_s` (10 s), and the record counts the gap.
    #[test]
    fn dead_air_nudge_after_ten_seconds_of_silence() {
        let mut sim = Sim::new();
        let id = answered_call(&mut sim, 0);
        sim.talk(id, Duration::from_secs(4), 0, Some(true), Some(false));
        sim.talk(id, Duration::from_secs(9), 0, Some(false), Some(false));
        assert!(!nudges(&sim).contains(&NudgeKind::DeadAir), "not yet at 9 s: {:?}", nudges(&sim));
        sim.talk(id, Duration::from_secs(3), 0, Some(false), Some(false));
        assert_eq!(nudges(&sim).iter().filter(|k| **k == NudgeKind::DeadAir).count(), 1, "{:?}", nudges(&sim));
        // The agent answers, then hangs up.
        sim.talk(id, Duration::from_secs(2), 0, Some(false), Some(true));
        pbx_hangs_up(&mut sim, 2, "z9hG4bKbye1");
        let r = sim.records();
        assert_eq!(r[0].reason, EndReason::Bye);
        assert!(r[0].summary.turns.dead_air["gt_10s"].count >= 1, "{:?}", r[0].summary.turns.dead_air);
    }

    /// The PBX puts the agent on hold (sendonly, answered recvonly) for 20 s: no dead-air nudge,
    /// hold time in the record; after unhold the call goes on.
    #[test]
    fn hold_and_unhold_is_never_dead_air() {
        let mut sim = Sim::new();
        let id = answered_call(&mut sim, 0);
        sim.talk(id, Duration::from_secs(3), 0, Some(true), Some(false));
        sim.sip(
            Party::Customer,
            &pbx_request("INVITE", 2, "z9hG4bKhold", Some("a1"), Some(&offer_sdp("10.0.0.1", 4000, 0, "a=sendonly\r\n"))),
        );
        let ok = agent_response(&sim, 200, "OK", Some(&offer_sdp("10.0.0.2", 5000, 0, "a=recvonly\r\n")));
        sim.sip(Party::Agent, &ok);
        sim.sip(Party::Customer, &pbx_request("ACK", 2, "z9hG4bKack2", Some("a1"), None));
        sim.talk(id, Duration::from_secs(20), 0, Some(false), None);
        assert!(!nudges(&sim).contains(&NudgeKind::DeadAir), "hold is not dead air: {:?}", nudges(&sim));
        sim.sip(Party::Customer, &pbx_request("INVITE", 3, "z9hG4bKunhold", Some("a1"), Some(&offer_sdp("10.0.0.1", 4000, 0, ""))));
        let ok = agent_response(&sim, 200, "OK", Some(&offer_sdp("10.0.0.2", 5000, 0, "")));
        sim.sip(Party::Agent, &ok);
        sim.talk(id, Duration::from_secs(3), 0, Some(false), Some(true));
        pbx_hangs_up(&mut sim, 4, "z9hG4bKbye2");
        let t = &sim.records()[0].summary.turns;
        assert!(t.hold_s > 15.0, "hold time {}", t.hold_s);
        assert_eq!(t.dead_air["gt_10s"].count, 0, "{:?}", t.dead_air);
        assert!(t.talk_time_s.agent > 1.0, "audio after unhold analysed: {:?}", t.talk_time_s);
    }

    /// A re-INVITE switches the call from PCMU to PCMA: the plan is decided again at
    /// negotiation and both halves of the call are decoded.
    #[test]
    fn reinvite_codec_change_keeps_decoding() {
        let mut sim = Sim::new();
        let id = answered_call(&mut sim, 0);
        sim.talk(id, Duration::from_secs(3), 0, Some(true), Some(false));
        sim.sip(Party::Customer, &pbx_request("INVITE", 2, "z9hG4bKre", Some("a1"), Some(&offer_sdp("10.0.0.1", 4000, 8, ""))));
        let ok = agent_response(&sim, 200, "OK", Some(&offer_sdp("10.0.0.2", 5000, 8, "")));
        sim.sip(Party::Agent, &ok);
        sim.talk(id, Duration::from_secs(3), 8, Some(false), Some(true));
        sim.sip(Party::Agent, "BYE sip:pbx@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKab\r\nFrom: <sip:agent42@pbx>;tag=a1\r\nTo: <sip:cust@pbx>;tag=c1\r\nCall-ID: sim-call-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n");
        let bye = sim.pbx_inbox.last().expect("BYE reached the PBX").clone();
        assert_eq!(bye.method(), Some("BYE"));
        let ok = String::from_utf8(bye.response(200, "OK", None).to_bytes()).unwrap();
        sim.sip(Party::Customer, &ok);
        sim.run_for(Duration::from_millis(100), |_| {});
        let r = sim.records()[0];
        let q = r.summary.quality.as_ref().unwrap();
        assert_eq!((q.customer_stats.decode_errors, q.agent_stats.decode_errors), (0, 0));
        assert_eq!((q.customer_stats.unknown_payload, q.agent_stats.unknown_payload), (0, 0));
        let t = &r.summary.turns;
        assert!(t.talk_time_s.customer > 1.0 && t.talk_time_s.agent > 1.0, "both codecs decoded: {:?}", t.talk_time_s);
    }

    /// CANCEL before the answer: 200 to the CANCEL, CANCEL on to the agent, 487 back; media
    /// freed and the record says cancelled.
    #[test]
    fn cancel_before_answer_frees_media() {
        let mut sim = Sim::new();
        sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKinv9", None, Some(&offer_sdp("10.0.0.1", 4000, 0, ""))));
        let ringing = agent_response(&sim, 180, "Ringing", None);
        sim.sip(Party::Agent, &ringing);
        sim.run_for(Duration::from_secs(2), |_| {});
        sim.sip(Party::Customer, &pbx_request("CANCEL", 1, "z9hG4bKinv9", None, None));
        assert!(sim.pbx_inbox.iter().any(|m| m.status() == Some(200) && m.cseq().is_some_and(|c| c.1 == "CANCEL")));
        let cancel = sim.agent_inbox.last().unwrap();
        assert_eq!(cancel.method(), Some("CANCEL"));
        let inv_branch =
            sim.agent_inbox.iter().find(|m| m.method() == Some("INVITE")).and_then(|m| Via::parse(&m.values("via")[0])).unwrap().branch;
        assert_eq!(Via::parse(&cancel.values("via")[0]).unwrap().branch, inv_branch, "CANCEL on the INVITE's branch");
        let invite = sim.agent_inbox.iter().find(|m| m.method() == Some("INVITE")).unwrap().clone();
        let r487 = String::from_utf8(invite.response(487, "Request Terminated", Some("a1")).to_bytes()).unwrap();
        sim.sip(Party::Agent, &r487);
        sim.run_for(Duration::from_millis(100), |_| {});
        assert_eq!(sim.media_calls(), 0);
        assert!(sim.pbx_inbox.iter().any(|m| m.status() == Some(487)));
        assert_eq!(sim.records()[0].reason, EndReason::Cancelled);
    }

    /// A hostile network and a confused peer around one call: the PBX's INVITE retransmitted
    /// (its 100 Trying was lost), junk datagrams at the SIP port, a stranger's RTP at the
    /// customer-facing relay port once the PBX has latched, and the agent's phone sending a
    /// payload type nobody negotiated. The call has one analysis, the stranger reaches no
    /// party, and the figures are those of the real audio.
    #[test]
    fn hostile_network_and_confused_peer_do_not_disturb_the_call() {
        let mut sim = Sim::new();
        let invite = pbx_request("INVITE", 1, "z9hG4bKinv5", None, Some(&offer_sdp("10.0.0.1", 4000, 0, "")));
        sim.sip(Party::Customer, &invite);
        sim.sip(Party::Customer, &invite);
        assert_eq!(sim.analysis.len(), 1, "a retransmitted INVITE is the same call");
        let invites_at_agent = sim.agent_inbox.iter().filter(|m| m.method() == Some("INVITE")).count();
        let ok = agent_response(&sim, 200, "OK", Some(&offer_sdp("10.0.0.2", 5000, 0, "")));
        sim.sip(Party::Agent, &ok);
        // The 200 is lost on its way to the PBX: the PBX retransmits the INVITE, the proxy
        // answers with the 200 itself and does not ring the agent again.
        sim.sip(Party::Customer, &invite);
        assert_eq!(sim.agent_inbox.iter().filter(|m| m.method() == Some("INVITE")).count(), invites_at_agent);
        assert_eq!(sim.pbx_inbox.iter().filter(|m| m.status() == Some(200)).count(), 2);
        sim.sip(Party::Customer, &pbx_request("ACK", 1, "z9hG4bKack5", Some("a1"), None));
        let id = *sim.analysis.keys().next().unwrap();
        let before = sim.pbx_inbox.len();
        // Junk: binary noise gets nothing; a request that cannot be framed gets a 400.
        sim.junk(&[0u8, 0xff, 0x13, 0x37]);
        assert_eq!(sim.pbx_inbox.len(), before, "nothing to answer");
        sim.junk(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKj2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: j2\r\nCSeq: 1 INVITE\r\nContent-Length: 99999999999\r\n\r\n");
        assert!(
            sim.pbx_inbox[before..].iter().all(|m| m.status() == Some(400)),
            "junk gets 400 or nothing: {:?}",
            &sim.pbx_inbox[before..]
        );
        sim.talk(id, Duration::from_secs(3), 0, Some(true), Some(false));
        let delivered = sim.delivered;
        let stranger: SocketAddr = "203.0.113.7:9999".parse().unwrap();
        for k in 0..20u16 {
            sim.rtp_from(id, Party::Customer, stranger, &frame(0, 5000 + k, true));
        }
        assert_eq!(sim.delivered, delivered, "a stranger's packets reach no party");
        // The agent's phone sends payload type 99, never negotiated.
        for k in 0..10u16 {
            sim.rtp(id, Party::Agent, &crate::rtp::build(99, 9000 + k, 0, 0x99, &[0u8; 160]));
        }
        sim.talk(id, Duration::from_secs(2), 0, Some(false), Some(false));
        pbx_hangs_up(&mut sim, 2, "z9hG4bKbye5");
        let r = sim.records();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reason, EndReason::Bye);
        let q = r[0].summary.quality.as_ref().unwrap();
        assert_eq!(q.agent_stats.unknown_payload, 10, "{q:?}");
        assert_eq!((q.customer_stats.decode_errors, q.agent_stats.decode_errors), (0, 0));
        let t = &r[0].summary.turns;
        assert_eq!(t.talk_time_s.agent, 0.0, "the unknown payload is not taken for speech");
        assert!(t.talk_time_s.customer > 2.0 && t.talk_time_s.customer < 3.2, "only the PBX's audio: {:?}", t.talk_time_s);
    }

    /// An INVITE the agent never answers: sent again until 64×T1, then 408 to the PBX and the
    /// call ends (Timer B), driven by the proxy's own deadlines.
    #[test]
    fn an_unanswered_invite_is_retried_then_answered_408() {
        let mut sim = Sim::new();
        sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKinv7", None, Some(&offer_sdp("10.0.0.1", 4000, 0, ""))));
        sim.run_for(Duration::from_secs(33), |_| {});
        assert_eq!(sim.agent_inbox.iter().filter(|m| m.method() == Some("INVITE")).count(), 7, "the first and six retransmissions");
        assert!(sim.pbx_inbox.iter().any(|m| m.status() == Some(408)));
        assert_eq!(sim.media_calls(), 0);
        assert_eq!(sim.records()[0].reason, EndReason::SipTimeout);
    }

    /// A lossy link: the first two INVITEs towards the agent are lost. The third arrives and the
    /// call connects and is measured, instead of being lost with the first datagram.
    #[test]
    fn a_lost_invite_is_sent_again_and_the_call_connects() {
        let mut sim = Sim::new();
        sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKlost", None, Some(&offer_sdp("10.0.0.1", 4000, 0, ""))));
        sim.agent_inbox.clear();
        // Lost: whatever reached the agent in the next second.
        sim.run_for(Duration::from_millis(1000), |_| {});
        sim.agent_inbox.clear();
        sim.run_for(Duration::from_millis(600), |_| {});
        assert_eq!(sim.agent_inbox.iter().filter(|m| m.method() == Some("INVITE")).count(), 1, "the third try, at 1.5 s");
        let ok = agent_response(&sim, 200, "OK", Some(&offer_sdp("10.0.0.2", 5000, 0, "")));
        sim.sip(Party::Agent, &ok);
        sim.sip(Party::Customer, &pbx_request("ACK", 1, "z9hG4bKlosta", Some("a1"), None));
        let id = *sim.analysis.keys().next().unwrap();
        sim.talk(id, Duration::from_secs(3), 0, Some(true), Some(false));
        assert!(sim.pbx_inbox.iter().any(|m| m.status() == Some(200)));
        assert_eq!(sim.media_calls(), 1, "the call is up");
        pbx_hangs_up(&mut sim, 2, "z9hG4bKlostb");
        assert_eq!(sim.records()[0].reason, EndReason::Bye);
    }

    // ---------------------------------------------------------------------------------------
    // Issue 12: a media plane that never harms a call. One scenario per finding.

    fn max_latency(r: &CallRecord) -> f64 {
        r.summary.turns.responses.iter().map(|x| x.latency_s).fold(0.0, f64::max)
    }

    /// A stray packet reaches the customer-facing port before the PBX's first RTP. The PBX's
    /// own (announced) address takes the leg over at its first packet: the stranger receives
    /// none of the agent's audio after that, and the PBX's audio all reaches the agent.
    #[test]
    fn a_stray_packet_before_the_pbx_does_not_hijack_the_leg() {
        let mut sim = Sim::new();
        sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKs1", None, Some(&offer_sdp("10.0.0.1", 4000, 0, ""))));
        let ok = agent_response(&sim, 200, "OK", Some(&offer_sdp("10.0.0.2", 5000, 0, "")));
        sim.sip(Party::Agent, &ok);
        sim.sip(Party::Customer, &pbx_request("ACK", 1, "z9hG4bKs1a", Some("a1"), None));
        let id = *sim.analysis.keys().next().unwrap();
        let stranger: SocketAddr = "203.0.113.7:9999".parse().unwrap();
        sim.rtp_from(id, Party::Customer, stranger, &frame(0, 1, true));
        sim.talk(id, Duration::from_secs(2), 0, Some(true), Some(true));
        let before = sim.delivered_to.get(&stranger).copied().unwrap_or(0);
        for k in 0..10u16 {
            sim.rtp_from(id, Party::Customer, stranger, &frame(0, 7000 + k, true));
        }
        sim.talk(id, Duration::from_secs(1), 0, Some(true), Some(true));
        assert_eq!(sim.delivered_to.get(&stranger).copied().unwrap_or(0), before, "no audio to the stranger once the PBX spoke");
        assert_eq!(before, 0, "the PBX spoke in the same step, before the agent's first packet");
        let pbx: SocketAddr = PBX_RTP.parse().unwrap();
        assert!(sim.delivered_to[&pbx] >= 149, "the agent's audio reaches the PBX: {}", sim.delivered_to[&pbx]);
        let c = sim.leg_counters(id, Party::Customer).unwrap();
        assert_eq!(c.dropped[crate::media::session::DropReason::SourceMismatch as usize], 10);
        assert_eq!(c.endpoint_moves, 1, "the stranger's provisional endpoint was replaced");
    }

    /// The agent's NAT rebinds (same IP, new port) mid-call: the relay follows after the old
    /// port went quiet, the agent's audio keeps flowing, and the call is not ended by the RTP
    /// timeout while both talk.
    #[test]
    fn a_nat_rebinding_is_followed_and_does_not_end_the_call() {
        let mut sim = Sim::new();
        // The agent's phone is behind NAT: its SDP names its private address, its packets come
        // from the NAT's public one (10.0.0.2:5000 here).
        sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKnat", None, Some(&offer_sdp("10.0.0.1", 4000, 0, ""))));
        let ok = agent_response(&sim, 200, "OK", Some(&offer_sdp("192.168.1.20", 5000, 0, "")));
        sim.sip(Party::Agent, &ok);
        sim.sip(Party::Customer, &pbx_request("ACK", 1, "z9hG4bKnat2", Some("a1"), None));
        let id = *sim.analysis.keys().next().unwrap();
        sim.talk(id, Duration::from_secs(5), 0, Some(true), Some(true));
        let old: SocketAddr = AGENT_RTP.parse().unwrap();
        assert!(sim.delivered_to.get(&old).copied().unwrap_or(0) >= 249, "the customer's audio goes to the NAT's address");
        let new: SocketAddr = "10.0.0.2:5990".parse().unwrap();
        let delivered = sim.delivered[Party::Customer.idx()];
        let mut seq = 20_000u16;
        sim.run_for(Duration::from_secs(40), |s| {
            seq = seq.wrapping_add(1);
            s.rtp(id, Party::Customer, &frame(0, seq, true));
            s.rtp_from(id, Party::Agent, new, &frame(0, seq, true));
        });
        let got = sim.delivered[Party::Customer.idx()] - delivered;
        assert!(got >= 1980, "agent audio after rebinding: {got} of 2000");
        assert_eq!(sim.media_calls(), 1, "media still up");
        let c = sim.leg_counters(id, Party::Agent).unwrap();
        assert_eq!(c.endpoint_moves, 1);
        assert!(sim.delivered_to[&new] >= 1980, "and the customer's audio follows the agent to its new port");
        pbx_hangs_up(&mut sim, 2, "z9hG4bKbyeN");
        assert_eq!(sim.records()[0].reason, EndReason::Bye);
    }

    /// Under `strict` learning, the same rebinding is refused and counted, never followed.
    #[test]
    fn strict_learning_refuses_a_rebinding() {
        let mut sim = Sim::new();
        sim.set_media_policy(MediaPolicy { learning: crate::media::session::Learning::Strict, ..Default::default() });
        let id = answered_call(&mut sim, 0);
        sim.talk(id, Duration::from_secs(5), 0, Some(true), Some(true));
        let new: SocketAddr = "10.0.0.2:5990".parse().unwrap();
        for k in 0..20u16 {
            sim.rtp_from(id, Party::Agent, new, &frame(0, 9000 + k, true));
        }
        assert_eq!(sim.delivered_to.get(&new), None);
        let c = sim.leg_counters(id, Party::Agent).unwrap();
        assert_eq!((c.endpoint_moves, c.moves_refused), (0, 20));
    }

    /// The agent is muted (its phone sends RTCP only... here: nothing but silence frames every
    /// second is not needed — it sends comfort-noise-free silence packets) while the customer
    /// talks for two minutes: one-way silence never ends the call.
    #[test]
    fn one_silent_leg_never_ends_the_call() {
        let mut sim = Sim::new();
        let id = answered_call(&mut sim, 0);
        // The agent's phone keeps its stream up with silence (a muted phone).
        sim.talk(id, Duration::from_secs(120), 0, Some(true), Some(false));
        assert_eq!(sim.media_calls(), 1);
        // A one-way announcement: the agent sends nothing at all but RTCP every 5 s.
        let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 1];
        let mut n = 0u32;
        sim.run_for(Duration::from_secs(120), |s| {
            n += 1;
            s.seq = s.seq.wrapping_add(1);
            let seq = s.seq;
            s.rtp(id, Party::Customer, &frame(0, seq, true));
            if n.is_multiple_of(250) {
                s.rtp(id, Party::Agent, &rr);
            }
        });
        assert_eq!(sim.media_calls(), 1, "RTCP keeps a silent leg alive");
        pbx_hangs_up(&mut sim, 2, "z9hG4bKbyeM");
        assert_eq!(sim.records()[0].reason, EndReason::Bye);
    }

    /// The agent's phone dies: it sends nothing any more. After the dead-leg timeout the call is
    /// torn down with a BYE to both sides (CSeq and tags from the dialog), and the record says
    /// why.
    #[test]
    fn a_dead_phone_ends_the_call_with_bye_to_both_sides() {
        let mut sim = Sim::new();
        let id = answered_call(&mut sim, 0);
        sim.talk(id, Duration::from_secs(5), 0, Some(true), Some(true));
        let (pbx_before, agent_before) = (sim.pbx_inbox.len(), sim.agent_inbox.len());
        sim.talk(id, Duration::from_secs(29), 0, Some(true), None);
        assert_eq!(sim.media_calls(), 1, "not before the dead-leg timeout");
        sim.talk(id, Duration::from_secs(2), 0, Some(true), None);
        assert_eq!(sim.media_calls(), 0, "the dead leg ended the media");
        let bye_pbx = sim.pbx_inbox[pbx_before..].iter().find(|m| m.method() == Some("BYE")).expect("BYE to the PBX").clone();
        let bye_agent = sim.agent_inbox[agent_before..].iter().find(|m| m.method() == Some("BYE")).expect("BYE to the agent").clone();
        // To the PBX, as if from the agent: From carries the agent's tag, To the PBX's.
        assert!(bye_pbx.header("from").unwrap().contains("tag=a1") && bye_pbx.header("to").unwrap().contains("tag=c1"));
        assert_eq!(bye_pbx.uri(), Some("sip:pbx@10.0.0.1"), "the PBX's Contact");
        assert!(bye_agent.header("from").unwrap().contains("tag=c1") && bye_agent.header("to").unwrap().contains("tag=a1"));
        assert_eq!(bye_agent.cseq().unwrap().0, 2, "the PBX's next CSeq");
        assert!(bye_pbx.header("reason").unwrap().contains("dead_leg"));
        // Both answer 200: the proxy absorbs the responses.
        let inbox = sim.pbx_inbox.len();
        let ok = String::from_utf8(bye_pbx.response(200, "OK", None).to_bytes()).unwrap();
        sim.sip(Party::Customer, &ok);
        let ok = String::from_utf8(bye_agent.response(200, "OK", None).to_bytes()).unwrap();
        sim.sip(Party::Agent, &ok);
        sim.run_for(Duration::from_secs(5), |_| {});
        assert_eq!(sim.pbx_inbox.len(), inbox, "answered: no retransmission, nothing forwarded");
        let r = sim.records();
        assert_eq!(r[0].reason, EndReason::DeadLeg);
        assert_eq!(sim.proxy.active_calls().count(), 0);
    }

    /// Our BYE to a party that does not answer is retransmitted (Timer E) over UDP.
    #[test]
    fn teardown_bye_is_retransmitted_until_answered() {
        let mut sim = Sim::new();
        let id = answered_call(&mut sim, 0);
        sim.talk(id, Duration::from_secs(2), 0, Some(true), Some(true));
        sim.talk(id, Duration::from_secs(31), 0, None, None);
        let byes = |inbox: &[Message]| inbox.iter().filter(|m| m.method() == Some("BYE")).count();
        assert!(byes(&sim.pbx_inbox) >= 1 && byes(&sim.agent_inbox) >= 1);
        sim.run_for(Duration::from_secs(40), |_| {});
        assert!(byes(&sim.agent_inbox) >= 8, "retransmitted: {}", byes(&sim.agent_inbox));
        assert!(byes(&sim.agent_inbox) <= 12, "and given up after 64*T1: {}", byes(&sim.agent_inbox));
        assert_eq!(sim.records()[0].reason, EndReason::RtpTimeout);
    }

    /// An INVITE without SDP, answered with an SDP offer, never ACKed (a scanner or a lost
    /// ACK): the ports are freed after 64*T1 and the dialog is torn down.
    #[test]
    fn an_answer_never_acked_frees_its_ports() {
        let mut sim = Sim::new();
        sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKn1", None, None));
        let ok = agent_response(&sim, 200, "OK", Some(&offer_sdp("10.0.0.2", 5000, 0, "")));
        sim.sip(Party::Agent, &ok);
        assert_eq!(sim.media_calls(), 1);
        sim.run_for(Duration::from_secs(31), |_| {});
        assert_eq!(sim.media_calls(), 1);
        sim.run_for(Duration::from_secs(2), |_| {});
        assert_eq!(sim.media_calls(), 0, "freed after 64*T1 without ACK");
        assert_eq!(sim.records()[0].reason, EndReason::SetupTimeout);
        assert!(sim.agent_inbox.iter().any(|m| m.method() == Some("BYE")), "the answering side is told");
    }

    /// After a restart, a re-INVITE with SDP arrives for a dialog this process never saw: it is
    /// anchored anew (the agent is told to send to the relay), never passed un-anchored.
    #[test]
    fn a_reinvite_for_an_unknown_dialog_is_anchored() {
        let mut sim = Sim::new();
        sim.sip(Party::Customer, &pbx_request("INVITE", 7, "z9hG4bKre7", Some("a1"), Some(&offer_sdp("10.0.0.1", 4000, 0, ""))));
        let fwd = sim.agent_inbox.iter().find(|m| m.method() == Some("INVITE")).expect("forwarded");
        let body = String::from_utf8_lossy(&fwd.body);
        assert!(body.contains("c=IN IP4 10.0.0.9") && !body.contains("m=audio 4000"), "anchored: {body}");
        let ok = agent_response(&sim, 200, "OK", Some(&offer_sdp("10.0.0.2", 5000, 0, "")));
        sim.sip(Party::Agent, &ok);
        let back = sim.pbx_inbox.iter().rev().find(|m| m.status() == Some(200)).unwrap();
        assert!(String::from_utf8_lossy(&back.body).contains("c=IN IP4 10.0.0.9"), "the answer too");
        assert_eq!(sim.proxy.stats.resumed_dialogs.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(sim.media_calls(), 1);
    }

    /// A normal hold (sendonly offer, recvonly answer) for 20 s: no dead air, no response
    /// latency across the hold, no nudge.
    #[test]
    fn hold_is_never_a_response_latency() {
        let mut sim = Sim::new();
        let id = answered_call(&mut sim, 0);
        sim.talk(id, Duration::from_secs(3), 0, Some(true), Some(false));
        sim.sip(
            Party::Customer,
            &pbx_request("INVITE", 2, "z9hG4bKh2", Some("a1"), Some(&offer_sdp("10.0.0.1", 4000, 0, "a=sendonly\r\n"))),
        );
        let ok = agent_response(&sim, 200, "OK", Some(&offer_sdp("10.0.0.2", 5000, 0, "a=recvonly\r\n")));
        sim.sip(Party::Agent, &ok);
        sim.sip(Party::Customer, &pbx_request("ACK", 2, "z9hG4bKh2a", Some("a1"), None));
        sim.talk(id, Duration::from_secs(20), 0, None, None);
        assert_eq!(sim.media_calls(), 1, "hold has its own timeout");
        sim.sip(Party::Customer, &pbx_request("INVITE", 3, "z9hG4bKh3", Some("a1"), Some(&offer_sdp("10.0.0.1", 4000, 0, ""))));
        let ok = agent_response(&sim, 200, "OK", Some(&offer_sdp("10.0.0.2", 5000, 0, "")));
        sim.sip(Party::Agent, &ok);
        sim.talk(id, Duration::from_secs(3), 0, Some(false), Some(true));
        pbx_hangs_up(&mut sim, 4, "z9hG4bKh4");
        let r = sim.records()[0];
        assert!(r.summary.turns.hold_s > 19.0, "{}", r.summary.turns.hold_s);
        assert!(max_latency(r) < 5.0, "no latency across the hold: {:?}", r.summary.turns.responses);
        assert_eq!(r.summary.turns.dead_air["gt_10s"].count, 0);
        let all: Vec<_> = sim.outputs.iter().filter_map(|(_, o)| if let Output::Nudge(n) = o { Some(n.clone()) } else { None }).collect();
        assert!(!nudges(&sim).contains(&NudgeKind::DeadAir), "{all:?}");
    }

    /// Same SSRC, sequence back by 350 and timestamp back by 7 s (a sender that restarted its
    /// counters), then a forward jump of +1000: the analysis resynchronises, keeps the leg's
    /// audio, and the loss figure is not inflated.
    #[test]
    fn sequence_and_timestamp_jumps_keep_the_audio() {
        let mut sim = Sim::new();
        let id = answered_call(&mut sim, 0);
        let mut seq: u16 = 1000;
        let mut ts: u32 = 1_000_000;
        let ssrc = std::cell::Cell::new(0x11u32);
        let send = |sim: &mut Sim, secs: u64, seq: &mut u16, ts: &mut u32| {
            sim.run_for(Duration::from_secs(secs), |s| {
                *seq = seq.wrapping_add(1);
                *ts = ts.wrapping_add(160);
                let mut p = frame(0, *seq, true);
                p[4..8].copy_from_slice(&ts.to_be_bytes());
                p[8..12].copy_from_slice(&ssrc.get().to_be_bytes());
                s.rtp(id, Party::Customer, &p);
                s.rtp(id, Party::Agent, &frame(0, *seq, false));
            });
        };
        send(&mut sim, 10, &mut seq, &mut ts);
        seq = seq.wrapping_sub(350);
        ts = ts.wrapping_sub(7 * 8000);
        send(&mut sim, 10, &mut seq, &mut ts);
        seq = seq.wrapping_add(1000);
        send(&mut sim, 10, &mut seq, &mut ts);
        // A new SSRC (the PBX switched the call to another media server), new sequence space.
        ssrc.set(0x5eed);
        seq = seq.wrapping_add(20_000);
        ts = ts.wrapping_add(123_456_789);
        send(&mut sim, 5, &mut seq, &mut ts);
        pbx_hangs_up(&mut sim, 2, "z9hG4bKj1");
        let r = sim.records()[0];
        let t = &r.summary.turns;
        assert!(t.talk_time_s.customer > 20.0, "the customer's audio after the jumps is analysed: {:?}", t.talk_time_s);
        let q = r.summary.quality.as_ref().unwrap();
        let lq = q.customer.as_ref().expect("customer quality");
        assert!(lq.loss_fraction < 0.01, "a sequence jump is not loss: {lq:?}");
        assert!(q.customer_stats.resyncs >= 2, "resynchronisations are counted: {:?}", q.customer_stats);
    }

    fn answer(inv: &Message, code: u16, tag: &str, sdp: Option<&str>) -> String {
        let mut r = inv.response(code, if code == 200 { "OK" } else { "Busy Here" }, Some(tag));
        r.push_back("Contact", format!("<sip:{tag}@10.0.0.2>"));
        if let Some(b) = sdp {
            r.set("content-type", "Content-Type", "application/sdp");
            r.body = b.as_bytes().to_vec();
        }
        String::from_utf8(r.to_bytes()).unwrap()
    }
    fn relay_port(m: &Message) -> u16 {
        let body = String::from_utf8_lossy(&m.body).to_string();
        body.split("m=audio ").nth(1).and_then(|r| r.split(' ').next()).and_then(|p| p.parse().ok()).expect("an m=audio line")
    }

    /// An upstream proxy forks one Call-ID to two agents through Hearken (two INVITE
    /// transactions). Each branch has its own relay ports; the 486 on one ends only that
    /// branch, and the other branch's 200 is anchored.
    #[test]
    fn upstream_forking_gives_each_branch_its_own_media() {
        let mut sim = Sim::new();
        let offer = offer_sdp("10.0.0.1", 4000, 0, "");
        sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKforkA", None, Some(&offer)));
        sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKforkB", None, Some(&offer)));
        let invites: Vec<Message> = sim.agent_inbox.iter().filter(|m| m.method() == Some("INVITE")).cloned().collect();
        assert_eq!(invites.len(), 2);
        assert_ne!(relay_port(&invites[0]), relay_port(&invites[1]), "each branch is offered its own relay port");
        assert_eq!(sim.media_calls(), 2);
        sim.sip(Party::Agent, &answer(&invites[0], 486, "busy", None));
        assert_eq!(sim.media_calls(), 1, "the busy branch's media is freed, the other's kept");
        sim.sip(Party::Agent, &answer(&invites[1], 200, "b2", Some(&offer_sdp("10.0.0.2", 5000, 0, ""))));
        let ok = sim.pbx_inbox.iter().rev().find(|m| m.status() == Some(200)).expect("200 at the PBX");
        assert!(String::from_utf8_lossy(&ok.body).contains("c=IN IP4 10.0.0.9"), "anchored");
        let r = sim.records();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reason, EndReason::Rejected(486));
    }

    /// A downstream fork answers one INVITE twice (two To tags). Both 2xx are anchored, each
    /// on its own ports; the PBX keeps the first and BYEs the second, which ends only the second.
    #[test]
    fn two_2xx_from_a_downstream_fork_are_each_anchored() {
        let mut sim = Sim::new();
        sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKdf", None, Some(&offer_sdp("10.0.0.1", 4000, 0, ""))));
        let inv = sim.agent_inbox.iter().find(|m| m.method() == Some("INVITE")).unwrap().clone();
        sim.sip(Party::Agent, &answer(&inv, 200, "x1", Some(&offer_sdp("10.0.0.2", 5000, 0, ""))));
        sim.sip(Party::Agent, &answer(&inv, 200, "y2", Some(&offer_sdp("10.0.0.3", 6000, 0, ""))));
        let oks: Vec<Message> = sim.pbx_inbox.iter().filter(|m| m.status() == Some(200)).cloned().collect();
        assert_eq!(oks.len(), 2);
        assert!(oks.iter().all(|m| String::from_utf8_lossy(&m.body).contains("c=IN IP4 10.0.0.9")), "both anchored");
        assert_ne!(relay_port(&oks[0]), relay_port(&oks[1]), "each dialog has its own customer-facing port");
        assert_eq!(sim.media_calls(), 2);
        // The PBX ACKs both and BYEs the second dialog.
        sim.sip(Party::Customer, &pbx_request("ACK", 1, "z9hG4bKdfa1", Some("x1"), None));
        sim.sip(Party::Customer, &pbx_request("ACK", 1, "z9hG4bKdfa2", Some("y2"), None));
        sim.sip(Party::Customer, &pbx_request("BYE", 2, "z9hG4bKdfb", Some("y2"), None));
        let bye = sim.agent_inbox.iter().rev().find(|m| m.method() == Some("BYE")).unwrap().clone();
        let ok = String::from_utf8(bye.response(200, "OK", None).to_bytes()).unwrap();
        sim.sip(Party::Agent, &ok);
        assert_eq!(sim.media_calls(), 1, "only the second dialog ended");
        assert_eq!(sim.proxy.active_calls().count(), 1);
        // The first dialog's media still flows.
        let id = sim.proxy.active_calls().next().unwrap().id;
        let before = sim.delivered;
        sim.talk(id, Duration::from_secs(1), 0, Some(true), Some(true));
        assert!(sim.delivered[0] > before[0] && sim.delivered[1] > before[1], "{:?} -> {:?}", before, sim.delivered);
    }

    /// An SDES-SRTP call (RTP/SAVP, a=crypto on both sides): the relay forwards the ciphertext
    /// untouched, analysis decrypts its copy with each sender's key and measures the call like a
    /// plain one. A DTLS-SRTP leg (no SDES key) is counted, not analysed.
    #[test]
    fn sdes_srtp_calls_are_analysed_from_a_decrypted_copy() {
        use base64::Engine;
        use rtc_srtp::context::Context;
        use rtc_srtp::protection_profile::ProtectionProfile;
        let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
        let (kc, ka): (Vec<u8>, Vec<u8>) = ((0..30).collect(), (100..130).collect());
        let savp = |ip: &str, port: u16, key: &[u8]| {
            format!(
                "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
                b64(key)
            )
        };
        let run = |encrypted: bool| {
            let mut sim = Sim::new();
            let (offer, answer) = if encrypted {
                (savp("10.0.0.1", 4000, &kc), savp("10.0.0.2", 5000, &ka))
            } else {
                (offer_sdp("10.0.0.1", 4000, 0, ""), offer_sdp("10.0.0.2", 5000, 0, ""))
            };
            sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKsr", None, Some(&offer)));
            let fwd = sim.agent_inbox.iter().find(|m| m.method() == Some("INVITE")).unwrap();
            assert_eq!(String::from_utf8_lossy(&fwd.body).contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80"), encrypted, "keys pass through");
            let ok = agent_response(&sim, 200, "OK", Some(&answer));
            sim.sip(Party::Agent, &ok);
            sim.sip(Party::Customer, &pbx_request("ACK", 1, "z9hG4bKsra", Some("a1"), None));
            let id = *sim.analysis.keys().next().unwrap();
            let p = rtc_srtp::crypto::default_provider().unwrap();
            let ctx = |k: &[u8]| Context::new(&k[..16], &k[16..], ProtectionProfile::Aes128CmHmacSha1_80, None, None, p.crypto()).unwrap();
            let (mut tc, mut ta) = (ctx(&kc), ctx(&ka));
            let mut seq = 0u16;
            for (secs, c_on, a_on) in [(4u64, true, false), (3, false, true), (3, true, false)] {
                sim.run_for(Duration::from_secs(secs), |s| {
                    seq = seq.wrapping_add(1);
                    let (mut c, mut a) = (frame(0, seq, c_on), frame(0, seq, a_on));
                    if encrypted {
                        c = tc.encrypt_rtp(&c).unwrap().to_vec();
                        a = ta.encrypt_rtp(&a).unwrap().to_vec();
                    }
                    s.rtp(id, Party::Customer, &c);
                    s.rtp(id, Party::Agent, &a);
                });
            }
            pbx_hangs_up(&mut sim, 2, "z9hG4bKsrb");
            sim.records()[0].clone()
        };
        let (plain, srtp) = (run(false), run(true));
        let (tp, ts) = (&plain.summary.turns, &srtp.summary.turns);
        for (a, b) in [(tp.talk_time_s.customer, ts.talk_time_s.customer), (tp.talk_time_s.agent, ts.talk_time_s.agent)] {
            assert!(a > 2.0 && (a - b).abs() < 0.05, "plain {a} vs srtp {b}");
        }
        assert_eq!(tp.responses.len(), ts.responses.len());
        let q = srtp.summary.quality.as_ref().unwrap();
        assert!(q.customer_stats.srtp_decrypted >= 490 && q.agent_stats.srtp_decrypted >= 490, "{q:?}");
        assert_eq!((q.customer_stats.srtp_failed, q.customer_stats.srtp_no_key), (0, 0));

        // DTLS-SRTP: no SDES key anywhere; forwarded, counted, not analysed.
        let mut sim = Sim::new();
        let dtls = |ip: &str, port: u16| {
            format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\na=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\n")
        };
        sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKdt", None, Some(&dtls("10.0.0.1", 4000))));
        let ok = agent_response(&sim, 200, "OK", Some(&dtls("10.0.0.2", 5000)));
        sim.sip(Party::Agent, &ok);
        let id = *sim.analysis.keys().next().unwrap();
        sim.talk(id, Duration::from_secs(2), 0, Some(true), Some(true));
        assert!(sim.delivered[0] >= 99 && sim.delivered[1] >= 99, "forwarded: {:?}", sim.delivered);
        pbx_hangs_up(&mut sim, 2, "z9hG4bKdtb");
        let r = sim.records()[0].clone();
        let q = r.summary.quality.as_ref().unwrap();
        assert!(q.customer_stats.srtp_no_key >= 99, "{q:?}");
        assert_eq!(r.summary.turns.talk_time_s.customer, 0.0, "ciphertext is never taken for speech");
    }

    /// A forking proxy downstream plays early media from two branches (two 183s with SDP and
    /// different To tags): each branch's early media has its own relay ports; when one branch
    /// answers, the other's ports are freed.
    #[test]
    fn early_media_from_two_branches_then_one_answers() {
        let mut sim = Sim::new();
        sim.sip(Party::Customer, &pbx_request("INVITE", 1, "z9hG4bKem", None, Some(&offer_sdp("10.0.0.1", 4000, 0, ""))));
        let inv = sim.agent_inbox.iter().find(|m| m.method() == Some("INVITE")).unwrap().clone();
        let early = |code: u16, tag: &str, ip: &str, port: u16| {
            let mut r = inv.response(code, if code == 183 { "Session Progress" } else { "OK" }, Some(tag));
            r.push_back("Contact", format!("<sip:{tag}@{ip}>"));
            r.set("content-type", "Content-Type", "application/sdp");
            r.body = offer_sdp(ip, port, 0, "").into_bytes();
            String::from_utf8(r.to_bytes()).unwrap()
        };
        sim.sip(Party::Agent, &early(183, "e1", "10.0.0.2", 5000));
        sim.sip(Party::Agent, &early(183, "e2", "10.0.0.3", 6000));
        let progress: Vec<Message> = sim.pbx_inbox.iter().filter(|m| m.status() == Some(183)).cloned().collect();
        assert_eq!(progress.len(), 2);
        assert_ne!(relay_port(&progress[0]), relay_port(&progress[1]), "each branch's early media has its own relay port");
        assert_eq!(sim.media_calls(), 2);
        sim.sip(Party::Agent, &early(200, "e2", "10.0.0.3", 6000));
        assert_eq!(sim.media_calls(), 1, "the branch that did not answer freed its ports");
        let ok = sim.pbx_inbox.iter().rev().find(|m| m.status() == Some(200)).unwrap();
        assert_eq!(relay_port(ok), relay_port(&progress[1]), "the answer is on the answering branch's ports");
        assert_eq!(sim.proxy.active_calls().count(), 1);
    }
}
