//! Every Prometheus metric Hearken exports, defined in one place (docs/metrics.md lists them).
//!
//! Conventions: `hearken_` prefix, base units (seconds, ratios), counters end in `_total` (the
//! OpenMetrics encoder appends it), labels only from bounded sets: agent id, queue, leg/party,
//! reason, kind. Never a call id, number or URI.
//!
//! Relay and SIP counters live as atomics on the packet path and are read at scrape time by a
//! collector; listening figures are recorded by the analysis thread when events happen and when
//! a call ends.
//!
//! Not here: HTTP serving (io::http), deciding what an event is (analysis, coach).

use crate::analysis::asr::AsrStats;
use crate::analysis::turns::{Party, TurnEvent};
use crate::media::ports::PortPool;
use crate::media::session::DropReason;
use crate::media::stats::RelayStats;
use crate::record::CallRecord;
use crate::sip::proxy::SipStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub agent: String,
    pub queue: String,
    /// How the call's audio arrived (`relay`, `ng`, `twilio`, ...: [`crate::call::Input`]).
    pub input: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentPartyLabels {
    pub agent: String,
    pub queue: String,
    /// How the call's audio arrived (`relay`, `ng`, `twilio`, ...: [`crate::call::Input`]).
    pub input: String,
    /// customer or agent.
    pub party: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentKindLabels {
    pub agent: String,
    pub queue: String,
    /// How the call's audio arrived (`relay`, `ng`, `twilio`, ...: [`crate::call::Input`]).
    pub input: String,
    pub kind: String,
    pub party: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NudgeLabels {
    pub agent: String,
    pub queue: String,
    /// How the call's audio arrived (`relay`, `ng`, `twilio`, ...: [`crate::call::Input`]).
    pub input: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LegLabels {
    pub leg: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

const RATIO_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0];
const LATENCY_BUCKETS: &[f64] = &[0.0, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];
const JITTER_BUCKETS: &[f64] = &[0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2];
const LOSS_BUCKETS: &[f64] = &[0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2];
const MOS_BUCKETS: &[f64] = &[1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.2, 4.4];
const PACE_BUCKETS: &[f64] = &[60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0];

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn ratio_hist() -> Histogram {
    Histogram::new(RATIO_BUCKETS.iter().copied())
}
fn latency_hist() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}
fn jitter_hist() -> Histogram {
    Histogram::new(JITTER_BUCKETS.iter().copied())
}
fn loss_hist() -> Histogram {
    Histogram::new(LOSS_BUCKETS.iter().copied())
}
fn mos_hist() -> Histogram {
    Histogram::new(MOS_BUCKETS.iter().copied())
}
fn pace_hist() -> Histogram {
    Histogram::new(PACE_BUCKETS.iter().copied())
}

/// The listening, quality and nudge metrics recorded by the analysis side.
#[derive(Clone)]
pub struct Metrics {
    pub calls_analysed: Family<AgentLabels, Counter>,
    pub talk_ratio_agent: HistFamily<AgentLabels>,
    pub interruptions: Family<AgentPartyLabels, Counter>,
    pub backchannels: Family<AgentPartyLabels, Counter>,
    pub dead_air_events: Family<AgentLabels, Counter>,
    pub dead_air_seconds: Family<AgentLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub response_latency: HistFamily<AgentPartyLabels>,
    pub monologues_over_threshold: Family<AgentPartyLabels, Counter>,
    pub phrase_hits: Family<AgentKindLabels, Counter>,
    pub pace: HistFamily<AgentPartyLabels>,
    pub rtp_loss: HistFamily<LegLabels>,
    pub rtp_jitter: HistFamily<LegLabels>,
    pub rtp_mos: HistFamily<LegLabels>,
    pub nudges: Family<NudgeLabels, Counter>,
    pub calls_ended: Family<ReasonLabels, Counter>,
    /// Bounds the agent and queue label values (they come from the wire on every input).
    pub labels: std::sync::Arc<LabelCap>,
}

/// Agent ids and queue names given a label of their own so far, and the queues seen with each
/// agent (with their count): looked up without allocating, since every published event asks.
#[derive(Default)]
struct SeenLabels {
    agents: std::collections::HashSet<String>,
    queues: std::collections::HashSet<String>,
    pairs: std::collections::HashMap<String, std::collections::HashSet<String>>,
    pair_count: usize,
}

/// At most `max_agents` distinct agent label values and `max_queues` queue values are
/// exported; calls of agents or queues beyond them are labelled `other` and counted, so a
/// sender that invents ids cannot blow up Prometheus.
pub struct LabelCap {
    seen: std::sync::Mutex<SeenLabels>,
    pub max_agents: usize,
    pub max_queues: usize,
    pub overflow: Counter,
}

impl LabelCap {
    pub fn new(max_agents: usize, max_queues: usize) -> LabelCap {
        LabelCap { seen: Default::default(), max_agents, max_queues, overflow: Counter::default() }
    }

    /// `agent` and `queue` as exported: themselves, or `other` over the caps. Agent–queue
    /// pairs are bounded too (by the agent cap), since every series carries both.
    pub fn bound<'a>(&self, agent: &'a str, queue: &'a str) -> (&'a str, &'a str) {
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let seen = &mut *g;
        if seen.pairs.get(agent).is_some_and(|qs| qs.contains(queue)) {
            return (agent, queue);
        }
        let keep = |set: &mut std::collections::HashSet<String>, v: &'a str, max: usize| -> &'a str {
            if set.contains(v) || (set.len() < max && set.insert(v.to_string())) {
                v
            } else {
                "other"
            }
        };
        let (a, q) = (keep(&mut seen.agents, agent, self.max_agents), keep(&mut seen.queues, queue, self.max_queues));
        let within = seen.pair_count < self.max_agents.saturating_mul(2);
        if a != "other" && q != "other" && within {
            seen.pairs.entry(a.to_string()).or_default().insert(q.to_string());
            seen.pair_count += 1;
            return (a, q);
        }
        self.overflow.inc();
        if within {
            (a, q)
        } else {
            ("other", "other")
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            calls_analysed: Family::default(),
            talk_ratio_agent: Family::new_with_constructor(ratio_hist),
            interruptions: Family::default(),
            backchannels: Family::default(),
            dead_air_events: Family::default(),
            dead_air_seconds: Family::default(),
            response_latency: Family::new_with_constructor(latency_hist),
            monologues_over_threshold: Family::default(),
            phrase_hits: Family::default(),
            pace: Family::new_with_constructor(pace_hist),
            rtp_loss: Family::new_with_constructor(loss_hist),
            rtp_jitter: Family::new_with_constructor(jitter_hist),
            rtp_mos: Family::new_with_constructor(mos_hist),
            nudges: Family::default(),
            calls_ended: Family::default(),
            labels: std::sync::Arc::new(LabelCap::new(5000, 500)),
        }
    }
}

/// Who a call's figures are labelled with: agent, queue, input.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub agent: &'a str,
    pub queue: &'a str,
    pub input: crate::call::Input,
}

impl Metrics {
    /// The labels of a call's figures, within the label caps.
    pub fn who<'a>(&self, agent: &'a str, queue: &'a str, input: crate::call::Input) -> Who<'a> {
        let (agent, queue) = self.labels.bound(agent, queue);
        Who { agent, queue, input }
    }
}

fn al(w: Who) -> AgentLabels {
    AgentLabels { agent: w.agent.into(), queue: w.queue.into(), input: w.input.label().into() }
}
fn apl(w: Who, party: Party) -> AgentPartyLabels {
    AgentPartyLabels { agent: w.agent.into(), queue: w.queue.into(), input: w.input.label().into(), party: party.name().into() }
}

impl Metrics {
    /// A live listening event of a call (counted as it happens, so wallboards move during calls).
    pub fn record_event(&self, w: Who, e: &TurnEvent) {
        match e {
            TurnEvent::Interruption { by, .. } => {
                self.interruptions.get_or_create(&apl(w, *by)).inc();
            }
            TurnEvent::Backchannel { by, .. } => {
                self.backchannels.get_or_create(&apl(w, *by)).inc();
            }
            TurnEvent::DeadAirStarted { .. } => {
                self.dead_air_events.get_or_create(&al(w)).inc();
            }
            TurnEvent::DeadAirEnded { duration_s, .. } => {
                self.dead_air_seconds.get_or_create(&al(w)).inc_by(*duration_s);
            }
            TurnEvent::Response { to, latency_s, .. } => {
                self.response_latency.get_or_create(&apl(w, *to)).observe(latency_s.max(0.0));
            }
            TurnEvent::MonologueOverThreshold { party, .. } => {
                self.monologues_over_threshold.get_or_create(&apl(w, *party)).inc();
            }
        }
    }

    /// A phrase hit (kind label from the phrase module).
    pub fn record_phrase(&self, w: Who, kind: &str, party: Party) {
        self.phrase_hits
            .get_or_create(&AgentKindLabels {
                agent: w.agent.into(),
                queue: w.queue.into(),
                input: w.input.label().into(),
                kind: kind.into(),
                party: party.name().into(),
            })
            .inc();
    }

    pub fn record_nudge(&self, w: Who, kind: &str) {
        self.nudges
            .get_or_create(&NudgeLabels { agent: w.agent.into(), queue: w.queue.into(), input: w.input.label().into(), kind: kind.into() })
            .inc();
    }

    /// End of a call: per-call figures.
    pub fn record_call(&self, r: &CallRecord) {
        let (w, s) = (self.who(&r.agent_id, &r.queue, r.input), &r.summary);
        let pace_wpm = r.phrases.as_ref().map_or([None, None], |p| [p.pace_wpm.customer, p.pace_wpm.agent]);
        self.calls_ended.get_or_create(&ReasonLabels { reason: r.reason.label().into() }).inc();
        self.calls_analysed.get_or_create(&al(w)).inc();
        if let Some(r) = s.turns.talk_ratio_agent {
            self.talk_ratio_agent.get_or_create(&al(w)).observe(r);
        }
        for (p, wpm) in [(Party::Customer, pace_wpm[0]), (Party::Agent, pace_wpm[1])] {
            if let Some(wpm) = wpm {
                self.pace.get_or_create(&apl(w, p)).observe(wpm);
            }
        }
        let no_quality = crate::analysis::live::LegQuality::default();
        let quality = s.quality.as_ref().unwrap_or(&no_quality);
        for (leg, q) in [("customer", &quality.customer), ("agent", &quality.agent)] {
            if let Some(q) = q {
                let l = LegLabels { leg: leg.into() };
                self.rtp_loss.get_or_create(&l).observe(q.loss_fraction);
                self.rtp_jitter.get_or_create(&l).observe(q.jitter_ms / 1000.0);
                self.rtp_mos.get_or_create(&l).observe(q.mos);
            }
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register("calls_analysed", "Calls analysed, by agent and queue", self.calls_analysed.clone());
        r.register(
            "label_overflow",
            "Calls whose agent or queue label was exported as `other`: over limits.max_agent_labels / max_queue_labels",
            self.labels.overflow.clone(),
        );
        r.register(
            "calls_ended",
            "Calls ended, by reason (bye, cancelled, rejected, sip_timeout, rtp_timeout, dead_leg, setup_timeout, closed)",
            self.calls_ended.clone(),
        );
        r.register("talk_ratio_agent", "Agent share of talk time per call (agent / (agent + customer))", self.talk_ratio_agent.clone());
        r.register("interruptions", "Interruptions, by who interrupted (party)", self.interruptions.clone());
        r.register("backchannels", "Back-channels (mm-hm, yeah) while the other party talks, by party", self.backchannels.clone());
        r.register("dead_air_events", "Silences longer than the dead-air threshold, not on hold", self.dead_air_events.clone());
        r.register("dead_air_seconds", "Seconds of dead air (from the threshold-crossing gaps)", self.dead_air_seconds.clone());
        r.register(
            "response_latency_seconds",
            "Time from the end of one party's turn to the other's reply, by responder",
            self.response_latency.clone(),
        );
        r.register(
            "monologues_over_threshold",
            "Runs of one party's speech longer than the monologue threshold",
            self.monologues_over_threshold.clone(),
        );
        r.register("phrase_hits", "Active-listening phrases recognised (ASR), by kind and party", self.phrase_hits.clone());
        r.register("pace_words_per_minute", "Recognised words per minute of own speech, per call", self.pace.clone());
        r.register("rtp_loss_ratio", "RTP packet loss fraction per call leg", self.rtp_loss.clone());
        r.register("rtp_jitter_seconds", "RFC 3550 interarrival jitter per call leg", self.rtp_jitter.clone());
        r.register("rtp_mos", "E-model (G.107) MOS estimate per call leg", self.rtp_mos.clone());
        r.register("nudges", "Nudges sent to agents, by kind", self.nudges.clone());
    }
}

/// Relay, SIP and ASR counters read from their atomics at scrape time.
#[derive(Debug)]
pub struct LiveCounters {
    pub relay: Arc<RelayStats>,
    pub sip: Arc<SipStats>,
    pub pool: Arc<Mutex<PortPool>>,
    pub asr: Option<Arc<AsrStats>>,
    /// The ng control plane's counters (when `ng.listen` is set).
    pub ng: Option<Arc<crate::ng::core::NgStats>>,
    /// The cluster broker's counters (when `cluster.broker` is set).
    pub broker: Option<Arc<crate::io::broker::BrokerStats>>,
    /// Media-stream inputs.
    pub streams: Option<Arc<crate::io::stream::StreamStats>>,
    /// The SIPREC recording server (when `siprec.enabled`).
    pub siprec: Option<(Arc<crate::siprec::core::SrsStats>, Arc<crate::io::siprec::RecvStats>)>,
    /// The record store (its write queue).
    pub records: Option<crate::record::Records>,
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for LiveCounters {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = &self.relay;
        let s = &self.sip;
        gauge(&mut enc, "calls_active", "Calls with media anchored now", r.active_calls.load(Relaxed) as f64)?;
        counter(&mut enc, "relay_packets_forwarded", "RTP/RTCP packets forwarded", r.forwarded_packets.load(Relaxed))?;
        counter(&mut enc, "relay_bytes_forwarded", "RTP/RTCP bytes forwarded", r.forwarded_bytes.load(Relaxed))?;
        {
            let c = ConstCounter::new(0u64);
            let mut m = enc.encode_descriptor("relay_packets_dropped", "Packets dropped, by reason", None, c.metric_type())?;
            for d in DropReason::ALL {
                let labels = ReasonLabels { reason: d.label().into() };
                ConstCounter::new(r.dropped(d)).encode(m.encode_family(&labels)?)?;
            }
        }
        counter(&mut enc, "relay_send_errors", "Forwarding sends that failed", r.send_errors.load(Relaxed))?;
        counter(&mut enc, "tap_frames", "RTP packets handed to analysis", r.tap_frames.load(Relaxed))?;
        counter(&mut enc, "tap_dropped", "RTP packets not analysed because the analysis queue was full", r.tap_dropped.load(Relaxed))?;
        counter(
            &mut enc,
            "rtp_timeouts",
            "Calls whose media ended because every leg was silent for media.rtp_timeout_s",
            r.rtp_timeouts.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "relay_dead_legs",
            "Calls ended because one leg sent nothing (no RTP, RTCP or DTLS) for media.dead_leg_timeout_s",
            r.dead_legs.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "relay_setup_timeouts",
            "Media sessions freed because their offer/answer never completed",
            r.setup_timeouts.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "relay_srtp_packets",
            "SRTP packets forwarded untouched (analysed when SDES keys are in the SDP)",
            r.srtp_packets.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "relay_cues_skipped_srtp",
            "Audio cues not played because the agent leg is SRTP",
            r.cues_skipped_srtp.load(Relaxed),
        )?;
        counter(&mut enc, "relay_stun_answered", "ICE connectivity checks answered (media.ice = lite)", r.stun_answered.load(Relaxed))?;
        counter(
            &mut enc,
            "relay_endpoint_moves",
            "Learned media endpoints that moved (NAT rebinding, handover, announced address replacing a provisional one)",
            r.endpoint_moves.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "relay_endpoint_moves_refused",
            "New media sources refused by the learning policy after the learning window",
            r.moves_refused.load(Relaxed),
        )?;
        let (used, cap) = {
            let p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            (p.in_use(), p.capacity())
        };
        gauge(&mut enc, "relay_port_pairs_in_use", "Relay port pairs in use", used as f64)?;
        gauge(&mut enc, "relay_port_pairs", "Relay port pairs configured", cap as f64)?;
        counter(&mut enc, "sip_requests", "SIP requests received", s.requests.load(Relaxed))?;
        counter(&mut enc, "sip_responses", "SIP responses received", s.responses.load(Relaxed))?;
        counter(&mut enc, "sip_malformed", "SIP messages that did not parse (answered 400 when possible)", s.malformed.load(Relaxed))?;
        counter(&mut enc, "sip_retransmissions", "SIP requests absorbed as retransmissions", s.retransmissions.load(Relaxed))?;
        counter(
            &mut enc,
            "sip_ports_exhausted",
            "INVITEs answered 503 because the relay port range was full",
            s.ports_exhausted.load(Relaxed),
        )?;
        counter(&mut enc, "calls_started", "Calls (initial INVITEs) seen", s.calls_started.load(Relaxed))?;
        counter(&mut enc, "sip_rate_limited", "New calls answered 503 by the per-source rate limit", s.rate_limited.load(Relaxed))?;
        counter(
            &mut enc,
            "sip_client_retransmissions",
            "Requests Hearken forwarded again over UDP because no response came (Timers A and E)",
            s.client_retransmissions.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_timeouts",
            "Transactions answered 408 upstream (no response: Timers B/F; no final: Timer C, with a CANCEL downstream)",
            s.timeouts.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_unreachable",
            "Requests whose next hop did not resolve or connect: 503 upstream",
            s.unreachable.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_forbidden",
            "Requests from sources that are neither the PBX nor in agents.allow: 403",
            s.forbidden.load(Relaxed),
        )?;
        counter(&mut enc, "sip_loops", "Requests that came back through Hearken: 482", s.loops.load(Relaxed))?;
        counter(
            &mut enc,
            "sip_flood_dropped",
            "Requests dropped unanswered: their source was over limits.requests_per_source_per_s",
            s.flood_dropped.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_over_transactions",
            "Requests answered 503: the transaction table was full",
            s.over_transactions.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_connections_refused",
            "SIP TCP/TLS connections closed at accept: over limits.max_sip_connections",
            s.connections_refused.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_idle_connections_closed",
            "SIP TCP/TLS connections closed after limits.sip_idle_timeout_s of silence",
            s.idle_connections_closed.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_accept_errors",
            "accept() errors on the SIP TCP listeners (each pauses accepting 100 ms)",
            s.accept_errors.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_invalid",
            "Requests that parsed but cannot be handled (bad Via or Request-URI, control characters, unknown URI scheme, Proxy-Require): 400/416/420",
            s.invalid.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_over_limit",
            "New calls refused by limits.max_calls (503) or limits.max_streams_per_call (488)",
            s.over_limit.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_teardowns",
            "Dialogs Hearken ended itself with a BYE to both sides when their media ended",
            s.teardowns.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_resumed_dialogs",
            "In-dialog requests with SDP for a dialog this process did not know (after a restart), anchored anew",
            s.resumed_dialogs.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_contacts_aliased",
            "Agent messages whose Contact got Hearken's alias (agents.contact_alias: behind NAT, or over TCP)",
            s.contacts_aliased.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_offers_rolled_back",
            "In-dialog offers (re-INVITE, UPDATE) refused downstream whose media changes were undone",
            s.offers_rolled_back.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_size_to_tcp",
            "Requests over 1300 bytes sent over TCP instead of UDP (RFC 3261 section 18.1.1)",
            s.size_to_tcp.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_size_fallback_udp",
            "Large requests sent over UDP after all because the TCP connection failed",
            s.size_fallback_udp.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sip_unknown_agent_byes",
            "BYEs from agents for calls Hearken never saw: calls that bypassed Hearken (or began before a restart)",
            s.unknown_agent_byes.load(Relaxed),
        )?;
        if let Some(store) = &self.records {
            let (queued, lost) = store.pending();
            gauge(&mut enc, "records_queued", "Record writes waiting for the store's writer", queued as f64)?;
            counter(&mut enc, "records_lost", "Record writes lost: the store's queue was full or the write failed", lost)?;
        }
        if let Some((r, m)) = &self.siprec {
            gauge(&mut enc, "siprec_sessions_active", "SIPREC recording sessions up now", r.active.load(Relaxed) as f64)?;
            counter(&mut enc, "siprec_sessions", "SIPREC recording sessions answered", r.sessions.load(Relaxed))?;
            counter(&mut enc, "siprec_refused", "Recording INVITEs from sources not in siprec.allow (403)", r.refused.load(Relaxed))?;
            counter(
                &mut enc,
                "siprec_malformed",
                "Recording INVITEs with a body or SDP that cannot be read (400)",
                r.malformed.load(Relaxed),
            )?;
            counter(&mut enc, "siprec_unsupported", "Recording INVITEs with no audio Hearken decodes (488)", r.unsupported.load(Relaxed))?;
            counter(&mut enc, "siprec_busy", "Recording INVITEs over siprec.max_sessions or without ports (503)", r.busy.load(Relaxed))?;
            counter(
                &mut enc,
                "siprec_duplicates",
                "Recording sessions of a call already recorded (kept as standby copies)",
                r.duplicates.load(Relaxed),
            )?;
            counter(
                &mut enc,
                "siprec_unmeasured",
                "Recording sessions answered but not measured (one mixed stream)",
                r.unmeasured.load(Relaxed),
            )?;
            counter(
                &mut enc,
                "siprec_metadata_errors",
                "Recording metadata documents that could not be read",
                r.metadata_errors.load(Relaxed),
            )?;
            counter(&mut enc, "siprec_transfers", "Recorded calls handed to another agent (metadata update)", r.transfers.load(Relaxed))?;
            counter(&mut enc, "siprec_pauses", "Recording sessions paused by the recording client", r.pauses.load(Relaxed))?;
            counter(&mut enc, "siprec_packets", "RTP packets received on recording sessions", m.packets.load(Relaxed))?;
            counter(
                &mut enc,
                "siprec_foreign_packets",
                "Packets on recording ports from a source that is neither the session's SDP address nor an allowed client (dropped)",
                m.foreign.load(Relaxed),
            )?;
            counter(
                &mut enc,
                "siprec_malformed_packets",
                "Packets on recording ports that were not RTP or did not decrypt",
                m.malformed.load(Relaxed),
            )?;
            counter(
                &mut enc,
                "siprec_tap_dropped",
                "Recording packets not analysed: the analysis queue was full",
                m.tap_dropped.load(Relaxed),
            )?;
        }
        if let Some(st) = &self.streams {
            gauge(
                &mut enc,
                "streams_active",
                "Media-stream input connections open now (all dialects, AudioSocket legs)",
                st.active.load(Relaxed) as f64,
            )?;
            counter(
                &mut enc,
                "streams_started",
                "Media-stream calls started (a call each; two legs of one call count once)",
                st.started.load(Relaxed),
            )?;
            counter(&mut enc, "stream_frames", "Audio frames received on media streams", st.frames.load(Relaxed))?;
            counter(
                &mut enc,
                "stream_frames_dropped",
                "Stream audio frames not analysed: the analysis queue was full",
                st.frames_dropped.load(Relaxed),
            )?;
            counter(
                &mut enc,
                "stream_malformed",
                "Stream frames that were not the dialect's messages (skipped)",
                st.malformed.load(Relaxed),
            )?;
            counter(
                &mut enc,
                "streams_refused",
                "Streams refused: a wrong or missing token, API key or signature, a format that cannot give turn metrics, a duplicate leg, or over streams.max_streams",
                st.refused.load(Relaxed),
            )?;
            counter(
                &mut enc,
                "stream_over_rate",
                "Stream messages or audio over a stream's rate budget (dropped)",
                st.over_rate.load(Relaxed),
            )?;
            counter(
                &mut enc,
                "stream_idle_closed",
                "Started streams closed because nothing arrived for 60 s",
                st.idle_closed.load(Relaxed),
            )?;
            counter(
                &mut enc,
                "stream_tls_handshake_failed",
                "TLS handshakes on streams.tls_listen that failed, timed out (5 s) or were over the per-source cap",
                st.tls_handshake_failed.load(Relaxed),
            )?;
        }
        if let Some(b) = &self.broker {
            gauge(&mut enc, "broker_connected", "1 while connected to the cluster broker", b.connected.load(Relaxed) as f64)?;
            counter(&mut enc, "broker_published", "Whisper messages published to the other nodes", b.published.load(Relaxed))?;
            counter(&mut enc, "broker_received", "Whisper messages received from the other nodes", b.received.load(Relaxed))?;
            counter(&mut enc, "broker_dropped", "Whisper messages not published (broker slow or down)", b.dropped.load(Relaxed))?;
            counter(&mut enc, "broker_reconnects", "Reconnections to the cluster broker", b.reconnects.load(Relaxed))?;
        }
        if let Some(n) = &self.ng {
            counter(
                &mut enc,
                "ng_commands",
                "ng commands executed (retransmissions answered from the cache not counted)",
                n.commands.load(Relaxed),
            )?;
            counter(&mut enc, "ng_errors", "ng commands answered result=error", n.errors.load(Relaxed))?;
            counter(&mut enc, "ng_retransmissions", "ng commands answered from the reply cache", n.retransmissions.load(Relaxed))?;
            counter(&mut enc, "ng_malformed", "ng datagrams that were not a cookie and a bencode dictionary", n.malformed.load(Relaxed))?;
            counter(&mut enc, "ng_ignored_flags", "ng keys accepted without effect (unknown to Hearken)", n.ignored_flags.load(Relaxed))?;
            counter(&mut enc, "ng_refused", "ng datagrams from sources not in ng.allow, dropped", n.refused.load(Relaxed))?;
            counter(&mut enc, "ng_calls_started", "Calls created by an ng offer", n.calls_started.load(Relaxed))?;
            counter(&mut enc, "ng_calls_ended", "ng calls ended (delete, or the media plane's timeouts)", n.calls_ended.load(Relaxed))?;
            counter(&mut enc, "ng_teardowns", "Media timeouts reported to Kamailio (dlg.terminate_dlg)", n.teardowns.load(Relaxed))?;
            counter(
                &mut enc,
                "ng_teardown_errors",
                "Teardown callbacks that failed (no answer, HTTP error, XML-RPC fault)",
                n.teardown_errors.load(Relaxed),
            )?;
        }
        if let Some(a) = &self.asr {
            counter(&mut enc, "asr_utterances", "Utterances recognised", a.utterances.load(Relaxed))?;
            counter(
                &mut enc,
                "asr_skipped_utterances",
                "Utterances not recognised because ASR was behind",
                a.skipped_utterances.load(Relaxed),
            )?;
            counter(
                &mut enc,
                "asr_truncated_utterances",
                "Utterances cut short because ASR fell behind",
                a.truncated_utterances.load(Relaxed),
            )?;
            gauge(&mut enc, "asr_real_time_factor", "ASR CPU time per second of recognised audio", a.real_time_factor())?;
        }
        Ok(())
    }
}

/// The registry with everything: `hearken_` prefix.
pub fn registry(metrics: &Metrics, live: LiveCounters) -> Registry {
    let mut r = Registry::with_prefix("hearken");
    metrics.register(&mut r);
    r.register_collector(Box::new(live));
    r
}

pub fn encode(r: &Registry) -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_and_queue_labels_are_capped() {
        let cap = LabelCap::new(2, 1);
        assert_eq!(cap.bound("a1", "q1"), ("a1", "q1"));
        assert_eq!(cap.bound("a2", "q2"), ("a2", "other"));
        assert_eq!(cap.bound("a3", "q1"), ("other", "q1"));
        assert_eq!(cap.bound("a1", "q1"), ("a1", "q1"), "known values stay");
        assert_eq!(cap.overflow.get(), 2);
    }
}
