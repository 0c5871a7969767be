//! Configuration: TOML file + `HEARKEN_SECTION__KEY=value` environment overrides, validated into
//! typed settings. Every error names the key path (e.g. `media.port_min`).
//!
//! Not here: reloading at run time.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    #[error("config key `{key}`: {msg}")]
    Key { key: String, msg: String },
}

fn key_err(key: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Key { key: key.to_string(), msg: msg.into() }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sip: SipConfig,
    pub pbx: PbxConfig,
    pub agents: AgentsConfig,
    pub media: MediaConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub analysis: crate::analysis::pipeline::AnalysisConfig,
    pub asr: crate::analysis::asr::AsrConfig,
    pub whisper: crate::publish::whisper::WhisperConfig,
    pub cue: crate::media::cue::CueConfig,
    pub coach: crate::coach::CoachConfig,
    pub limits: LimitsConfig,
    pub ng: NgConfigFile,
    pub cluster: ClusterConfig,
    pub streams: StreamsConfig,
    pub siprec: SiprecConfig,
    pub records: RecordsConfig,
}

/// `[records]`: where call records are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// `sqlite` (durable: one file per node), `postgres` (several nodes, one database: `url`)
    /// or `memory` (the newest 500, lost on restart).
    pub store: String,
    /// PostgreSQL connection URL (`postgresql://user:password@host:5432/hearken`).
    pub url: String,
    /// The SQLite file, created on first run; a relative path is taken from the config
    /// file's folder.
    pub path: String,
    /// Records older than this many days are removed (0: kept for ever).
    pub retention_days: u32,
    /// Transcript text is stored with digits as `#` and e-mail addresses as `***@***`.
    pub mask_transcripts: bool,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig { store: "sqlite".into(), url: String::new(), path: "records.db".into(), retention_days: 90, mask_transcripts: true }
    }
}

/// `[siprec]`: the SIPREC recording server on the SIP listener (`sip.listen`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiprecConfig {
    /// Answer recording sessions (INVITEs with recording metadata, `Require: siprec` or
    /// `+sip.src`) from the sources in `allow`.
    pub enabled: bool,
    /// Recording clients (SBC / proxy addresses) allowed; others get 403.
    pub allow: Vec<String>,
    /// Concurrent recording sessions; more get 503.
    pub max_sessions: usize,
    /// AoR patterns (`*`, `?`) of participants that are agents, e.g. `sip:*@agents.example.com`.
    pub agent_aor: Vec<String>,
    /// AoR patterns of participants that are customers (when agents cannot be told by AoR).
    pub customer_aor: Vec<String>,
    /// When no pattern or sender flag decides: the m-line that carries the customer, `first`
    /// (the caller's, the recording clients' default) or `second`.
    pub customer_stream: String,
    /// A header of the recording INVITE (or re-INVITE) that names the agent, e.g. `X-Agent-Id`;
    /// empty: the agent participant's AoR user part.
    pub agent_id_header: String,
    /// A header that names the queue; empty: `default`.
    pub queue_header: String,
    /// SIP over TLS for recording clients (`0.0.0.0:5061`); empty: off.
    pub tls_listen: String,
    /// PEM certificate chain and key for `tls_listen`.
    pub tls_cert: String,
    pub tls_key: String,
    /// PEM CA certificates: when set, recording clients must present a certificate signed by
    /// one of them (mutual TLS).
    pub tls_client_ca: String,
}

impl Default for SiprecConfig {
    fn default() -> Self {
        SiprecConfig {
            enabled: false,
            allow: Vec::new(),
            max_sessions: 500,
            agent_aor: Vec::new(),
            customer_aor: Vec::new(),
            customer_stream: "first".into(),
            agent_id_header: String::new(),
            queue_header: String::new(),
            tls_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_client_ca: String::new(),
        }
    }
}

/// `[streams]`: media-stream inputs (Twilio Media Streams on `/stream/twilio` of http.listen).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// Tokens a stream must present (Twilio: `<Parameter name="token" value="..."/>`); none:
    /// every stream is refused.
    pub tokens: Vec<String>,
    /// Concurrent streams; more get 503.
    pub max_streams: u64,
    /// Twilio: the track that is the customer (`inbound`: the caller).
    pub twilio_customer_track: String,
    /// Stereo linear-PCM streams (jambonz, FreeSWITCH audio_fork): the channel that is the
    /// customer, `left` (the caller) or `right`.
    pub stereo_customer_channel: String,
    /// TCP address for Asterisk AudioSocket legs; empty: off.
    pub audiosocket_listen: String,
    /// Sources allowed to connect AudioSocket legs (AudioSocket has no authentication).
    pub audiosocket_allow: Vec<String>,
    /// Twilio account auth token: when set, Twilio streams must carry a valid
    /// `X-Twilio-Signature` (besides the token parameter).
    pub twilio_auth_token: String,
    /// The public base URL the platforms connect to (`wss://media.example.com`), when Hearken is
    /// behind a TLS proxy: request signatures are checked against it. Empty: from the Host header.
    pub public_url: String,
    /// Genesys AudioHook: the integration's API key; empty: `/stream/audiohook` is off.
    pub audiohook_api_key: String,
    /// Genesys AudioHook: the integration's client secret (base64, as Genesys shows it); when
    /// set, every connection must carry a valid request signature.
    pub audiohook_client_secret: String,
    /// TLS listener for the stream endpoints only (`0.0.0.0:8443`); empty: off.
    pub tls_listen: String,
    /// PEM certificate chain and private key for `tls_listen`.
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            tokens: Vec::new(),
            max_streams: 500,
            twilio_customer_track: "inbound".into(),
            stereo_customer_channel: "left".into(),
            audiosocket_listen: String::new(),
            audiosocket_allow: vec!["127.0.0.1".into()],
            twilio_auth_token: String::new(),
            public_url: String::new(),
            audiohook_api_key: String::new(),
            audiohook_client_secret: String::new(),
            tls_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// `[cluster]`: several nodes behind one Kamailio rtpengine set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The broker that fans whisper messages out to every node (`redis://host:port`, or
    /// `nats://host:port`); empty: single node.
    pub broker: String,
    /// This node's name (unique in the cluster).
    pub node: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { broker: String::new(), node: "hearken".into() }
    }
}

/// `[ng]`: the rtpengine ng control plane for Kamailio / OpenSIPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NgConfigFile {
    /// UDP address for ng commands (Kamailio's `rtpengine_sock`); empty disables ng.
    pub listen: String,
    /// Sources allowed to send commands (`ip` or `ip:port`); default loopback only.
    pub allow: Vec<String>,
    /// Which party sends the first offer when no label says: `customer` or `agent`.
    pub offerer: crate::call::Party,
    /// `label` values that name the offerer's party.
    pub customer_label: String,
    pub agent_label: String,
    /// Without a label: the ng `direction` (rtpengine interface name) whose offers come from the
    /// customer side; offers with another direction are the agent's. Empty: not used.
    pub customer_direction: String,
    /// Keys carrying the agent id and the queue (`rtpengine_offer("... agent-id=$rU")`).
    pub agent_id_key: String,
    pub queue_key: String,
    /// Seconds a deleted call's media stays up when `delete` names no `delete-delay`.
    pub delete_delay_s: u64,
    /// Where a call whose media ended by itself is reported, as rtpengine's `b2b-url` with
    /// `xmlrpc-format = 2`: XML-RPC `dlg.terminate_dlg` (Kamailio's xmlrpc + dialog modules),
    /// e.g. `http://127.0.0.1:5060/RPC2`. Empty: not reported (Kamailio learns at the next
    /// command, as with rtpengine without b2b-url).
    pub teardown_url: String,
}

impl Default for NgConfigFile {
    fn default() -> Self {
        NgConfigFile {
            listen: String::new(),
            allow: vec!["127.0.0.1".into()],
            offerer: crate::call::Party::Customer,
            customer_label: "customer".into(),
            agent_label: "agent".into(),
            customer_direction: String::new(),
            agent_id_key: "agent-id".into(),
            queue_key: "queue".into(),
            delete_delay_s: 5,
            teardown_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Run the built-in SIP proxy (false: ng only).
    pub enabled: bool,
    /// Address the proxy listens on, UDP and TCP.
    pub listen: SocketAddr,
    /// Address written into Via and Record-Route; defaults to the listen address, and must be
    /// set when listening on a wildcard address.
    pub advertise: Option<IpAddr>,
    /// Seconds a finished transaction is remembered for retransmissions (64×T1 = 32 s).
    pub transaction_linger_s: u64,
    /// Timer C (RFC 3261 §16.6): seconds an INVITE may wait for a provisional or final response
    /// before it is CANCELled downstream and answered 408 upstream; over 180.
    pub timer_c_s: u64,
    /// Other names of this proxy (hostnames, aliases) recognised in Route and Request-URI.
    pub aliases: Vec<String>,
    /// A listener of the agent side's own (UDP and TCP), e.g. on the agents' network while
    /// `listen` faces the PBX: requests to agents leave from it and name it in Via and
    /// Record-Route. Empty: `listen` serves both sides.
    pub agents_listen: Option<SocketAddr>,
    /// Address written into Via and Record-Route for the agent side (default: its listen
    /// address; required when that is a wildcard).
    pub agents_advertise: Option<IpAddr>,
    /// SIP over TLS for phones and PBXs (e.g. `0.0.0.0:5061`); empty: off.
    pub tls_listen: String,
    /// PEM certificate chain and private key of that listener.
    pub tls_cert: String,
    pub tls_key: String,
    /// PEM CA certificates that next hops Hearken connects to over TLS (`sips:` or
    /// `;transport=tls` routes) must be signed by; empty: Hearken opens no TLS connections
    /// itself and reaches TLS phones only over the connections they opened.
    pub tls_ca: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PbxConfig {
    /// Sources (`ip` or `ip:port`) whose requests come from the PBX: their leg is the customer leg.
    pub addresses: Vec<String>,
    /// Next hop for out-of-dialog requests from agents (REGISTER, agent-originated INVITE):
    /// a SIP URI or `host:port`, `;transport=tcp` to use TCP.
    pub route: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// Next hop for PBX requests addressed to Hearken itself (optional). Requests whose
    /// Request-URI names another host go there.
    pub route: Option<String>,
    /// Header carrying the agent id (e.g. `X-Agent-Id`); default is the agent-side user part.
    pub agent_id_header: Option<String>,
    /// Header carrying the queue (e.g. `X-Queue`); default queue is `default`.
    pub queue_header: Option<String>,
    /// Networks (CIDR) agents' requests may come from; requests from elsewhere that are not the
    /// PBX get 403. Default: private, loopback and link-local networks. `["0.0.0.0/0", "::/0"]`
    /// allows any.
    pub allow: Option<Vec<String>>,
    /// When agents' REGISTERs get Hearken's Path: `always` (default: a phone that does not say
    /// `Supported: path` is then still reached through Hearken), `when_supported`, `never`.
    pub path: crate::sip::proxy::PathMode,
    /// When agents' Contacts get `;alias=ip~port~transport` (where their messages really came
    /// from) so requests reach phones behind NAT and TCP phones over their own connection:
    /// `auto` (default: the Contact is not the source address, or TCP), `always`, `never`.
    pub contact_alias: crate::sip::proxy::ContactAlias,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Address the relay binds its RTP ports on (default: the SIP advertised address).
    pub address: Option<IpAddr>,
    /// Address written into SDP, when peers reach the relay at another address than it binds
    /// (1:1 NAT on a cloud host). Default: `address`.
    pub advertise: Option<IpAddr>,
    pub port_min: u16,
    pub port_max: u16,
    /// Seconds a freed port pair rests before it is handed out again (when others are free).
    pub port_cooldown_s: u64,
    /// Every leg of a call silent this long ends the call's media.
    pub rtp_timeout_s: u64,
    /// The same while the call is on hold.
    pub hold_timeout_s: u64,
    /// One leg that should be sending sends nothing at all (no RTP, RTCP or DTLS) this long:
    /// it is dead, and the call is torn down.
    pub dead_leg_timeout_s: u64,
    /// An offer/answer that never completes frees its ports after this long.
    pub setup_timeout_s: u64,
    /// Endpoint learning policy: `heuristic`, `strict` or `handover`.
    pub learning: crate::media::session::Learning,
    /// ICE in anchored SDP: `remove` (the relay is the only path) or `lite` (the relay is also an
    /// ICE-lite agent and answers connectivity checks, for peers that require ICE).
    pub ice: IceMode,
    /// Learning window after a leg's first packet, in milliseconds.
    pub learning_window_ms: u64,
    /// How long a learned endpoint must be silent before a new source may take over.
    pub handover_after_ms: u64,
    /// Frames queued towards analysis before the tap starts dropping.
    pub tap_queue: usize,
    /// Named interfaces (`[media.interfaces.NAME]`), e.g. `internal` facing the PBX and
    /// `external` facing remote agents; IPv4 and IPv6 may be mixed (the relay bridges them).
    pub interfaces: std::collections::BTreeMap<String, InterfaceConfig>,
    /// The interface facing the customer side (PBX); default: `address`/`advertise` above.
    pub customer_interface: Option<String>,
    /// The interface facing the agents; default: `address`/`advertise` above.
    pub agent_interface: Option<String>,
}

/// One relay interface: where its ports are bound, and what is written into SDP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    pub address: IpAddr,
    /// Default: `address`. Needed when `address` is a wildcard or behind 1:1 NAT.
    pub advertise: Option<IpAddr>,
}

/// How Hearken treats ICE in the SDP it anchors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceMode {
    #[default]
    Remove,
    Lite,
}

/// Admission limits: what one source or the whole node may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent calls with media on this node (0: as many as the port range holds).
    pub max_calls: usize,
    /// m-lines one call may have (more: 488).
    pub max_streams_per_call: usize,
    /// New calls per second that one source address other than the PBX (`pbx.addresses`) may
    /// start (burst: twice this; over: 503 with Retry-After). 0 disables the limit.
    pub new_calls_per_source_per_s: f64,
    /// SIP requests per second one source other than the PBX may send (burst twice this);
    /// over it, requests are dropped unanswered (as Kamailio's pike does). 0 disables.
    pub requests_per_source_per_s: f64,
    /// SIP transactions held at once; new requests over it get 503.
    pub max_transactions: usize,
    /// SIP TCP/TLS connections at once; more are closed at accept.
    pub max_sip_connections: usize,
    /// Seconds a SIP TCP/TLS connection may stay silent before it is closed (phones keep their
    /// connections alive with CRLF pings well within this).
    pub sip_idle_timeout_s: u64,
    /// Distinct agent ids exported as Prometheus label values; calls of further agents are
    /// labelled `other` (`hearken_label_overflow_total`). Agent ids come from the wire.
    pub max_agent_labels: usize,
    /// Distinct queue names exported as label values; further queues are labelled `other`.
    pub max_queue_labels: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_calls: 0,
            max_streams_per_call: 4,
            new_calls_per_source_per_s: 20.0,
            requests_per_source_per_s: 200.0,
            max_transactions: 100_000,
            max_sip_connections: 1000,
            sip_idle_timeout_s: 600,
            max_agent_labels: 5000,
            max_queue_labels: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Status and metrics endpoint; empty string disables it.
    pub listen: String,
    /// `/records` and `/calls` answer only with a token (`Authorization: Bearer …` or
    /// `?token=`): a `whisper.supervisors` token sees every call, a `whisper.agents` token only
    /// that agent's. Off: they are as open as `listen` (keep it on a private address).
    pub require_tokens: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter, e.g. `info` or `hearken=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            enabled: true,
            listen: "127.0.0.1:5060".parse().unwrap(),
            advertise: None,
            transaction_linger_s: 32,
            timer_c_s: 185,
            aliases: Vec::new(),
            agents_listen: None,
            agents_advertise: None,
            tls_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
        }
    }
}
impl Default for PbxConfig {
    fn default() -> Self {
        PbxConfig { addresses: vec!["127.0.0.1:5080".into()], route: "127.0.0.1:5080".into() }
    }
}
impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            address: None,
            advertise: None,
            port_min: 30000,
            port_max: 30999,
            port_cooldown_s: 60,
            rtp_timeout_s: 30,
            hold_timeout_s: 3600,
            dead_leg_timeout_s: 30,
            setup_timeout_s: 240,
            learning: Default::default(),
            ice: IceMode::Remove,
            learning_window_ms: 3000,
            handover_after_ms: 200,
            tap_queue: 4096,
            interfaces: Default::default(),
            customer_interface: None,
            agent_interface: None,
        }
    }
}
impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "127.0.0.1:9090".into(), require_tokens: false }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: "text".into() }
    }
}

pub use crate::net::SourcePattern;

impl Config {
    /// Load from a file (if given) and the process environment, then validate.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError::Read { path: p.display().to_string(), source: e })?,
            None => String::new(),
        };
        let mut cfg = Self::from_parts(&text, std::env::vars())?;
        // A relative records path is the config file's neighbour, not the working folder's.
        if let Some(dir) = path.and_then(Path::parent) {
            if Path::new(&cfg.records.path).is_relative() {
                cfg.records.path = dir.join(&cfg.records.path).display().to_string();
            }
        }
        Ok(cfg)
    }

    /// Parse TOML text, apply `HEARKEN_SECTION__KEY` overrides, validate.
    pub fn from_parts(text: &str, env: impl Iterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut value: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
        for (k, v) in env {
            let Some(path) = k.strip_prefix("HEARKEN_") else {
                continue;
            };
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if parts.len() != 2 {
                continue;
            }
            // Values are TOML when they parse as such (numbers, arrays), strings otherwise.
            let parsed: toml::Value =
                format!("v = {v}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v")).unwrap_or(toml::Value::String(v));
            let section = value.entry(parts[0].clone()).or_insert_with(|| toml::Value::Table(Default::default()));
            match section.as_table_mut() {
                Some(t) => {
                    t.insert(parts[1].clone(), parsed);
                }
                None => return Err(key_err(&parts[0], "is not a table")),
            }
        }
        let cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Key { key, msg: e.into_inner().to_string() }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.sip.tls_ca.is_empty() && self.sip.tls_listen.is_empty() {
            return Err(key_err("sip.tls_ca", "needs sip.tls_listen: the next hop's requests back come over TLS to Hearken"));
        }
        if !self.sip.tls_listen.is_empty() && self.sip.tls_listen.parse::<SocketAddr>().is_err() {
            return Err(key_err("sip.tls_listen", "must be an address and port, e.g. 0.0.0.0:5061"));
        }
        if !matches!(self.records.store.as_str(), "sqlite" | "postgres" | "memory") {
            return Err(key_err("records.store", "must be `sqlite`, `postgres` or `memory`"));
        }
        if self.records.store == "postgres" && self.records.url.trim().is_empty() {
            return Err(key_err("records.url", "must be set with records.store = \"postgres\""));
        }
        if self.records.store == "sqlite" && self.records.path.trim().is_empty() {
            return Err(key_err("records.path", "must name the SQLite file"));
        }
        if self.sip.agents_listen.is_some_and(|a| a.ip().is_unspecified()) && self.sip.agents_advertise.is_none() {
            return Err(key_err("sip.agents_advertise", "must be set when sip.agents_listen is a wildcard address"));
        }
        if self.sip.listen.ip().is_unspecified() && self.sip.advertise.is_none() {
            return Err(key_err("sip.advertise", "must be set when sip.listen is a wildcard address"));
        }
        let m = &self.media;
        if !m.port_min.is_multiple_of(2) {
            return Err(key_err("media.port_min", "must be even (RTP on even ports, RFC 3550 §11)"));
        }
        if m.port_min < 1024 || m.port_max <= m.port_min + 1 {
            return Err(key_err("media.port_max", "range must hold at least one port pair above 1023"));
        }
        if m.tap_queue == 0 {
            return Err(key_err("media.tap_queue", "must be at least 1"));
        }
        for (k, v) in [
            ("media.rtp_timeout_s", m.rtp_timeout_s),
            ("media.hold_timeout_s", m.hold_timeout_s),
            ("media.dead_leg_timeout_s", m.dead_leg_timeout_s),
            ("media.setup_timeout_s", m.setup_timeout_s),
        ] {
            if v == 0 {
                return Err(key_err(k, "must be at least 1"));
            }
        }
        if m.learning_window_ms > 60_000 {
            return Err(key_err("media.learning_window_ms", "must be at most 60000"));
        }
        if let Some(a) = m.advertise {
            if a.is_unspecified() {
                return Err(key_err("media.advertise", "must be a concrete address peers can reach"));
            }
        }
        if m.address.is_some_and(|a| a.is_unspecified()) && m.advertise.is_none() {
            return Err(key_err("media.advertise", "must be set when media.address is a wildcard address"));
        }
        for (name, i) in &m.interfaces {
            if i.address.is_unspecified() && i.advertise.is_none_or(|a| a.is_unspecified()) {
                return Err(key_err(
                    &format!("media.interfaces.{name}.advertise"),
                    "must be a concrete address when the interface binds a wildcard address",
                ));
            }
        }
        for (key, v) in [("media.customer_interface", &m.customer_interface), ("media.agent_interface", &m.agent_interface)] {
            if let Some(name) = v {
                if !m.interfaces.contains_key(name) {
                    return Err(key_err(key, format!("names no [media.interfaces.{name}]")));
                }
            }
        }
        let n = &self.ng;
        if !n.listen.is_empty() && n.listen.parse::<SocketAddr>().is_err() {
            return Err(key_err("ng.listen", "is not ip:port (or empty to disable ng)"));
        }
        for a in &n.allow {
            SourcePattern::parse(a).ok_or_else(|| key_err("ng.allow", format!("`{a}` is not an ip or ip:port")))?;
        }
        if !n.teardown_url.is_empty() && crate::ng::core::terminate_dlg_request(&n.teardown_url, "", "", "").is_none() {
            return Err(key_err("ng.teardown_url", "must be an http:// URL (Kamailio's xmlrpc module), or empty"));
        }
        if !self.sip.enabled && n.listen.is_empty() {
            return Err(key_err("sip.enabled", "with the proxy off, ng.listen must be set (nothing would control the relay)"));
        }
        if !self.cluster.broker.is_empty() && crate::io::broker::parse_url(&self.cluster.broker).is_none() {
            return Err(key_err("cluster.broker", "must be redis://host:port or nats://host:port (or empty for a single node)"));
        }
        if self.cluster.node.is_empty() || self.cluster.node.contains(['\n', ' ']) {
            return Err(key_err("cluster.node", "must be a non-empty name without spaces"));
        }
        if self.sip.timer_c_s <= 180 || self.sip.timer_c_s > 3600 {
            return Err(key_err("sip.timer_c_s", "must be over 180 (RFC 3261 §16.6: more than 3 minutes) and at most 3600"));
        }
        self.agent_sources()?;
        if self.siprec.enabled {
            if !self.sip.enabled {
                return Err(key_err("siprec.enabled", "the recording server answers on the SIP listener: sip.enabled must be true"));
            }
            if self.siprec.allow.is_empty() {
                return Err(key_err(
                    "siprec.allow",
                    "must list the recording clients' addresses (SIPREC has no other authentication here)",
                ));
            }
        }
        for a in &self.siprec.allow {
            SourcePattern::parse(a).ok_or_else(|| key_err("siprec.allow", format!("`{a}` is not an ip or ip:port")))?;
        }
        if !matches!(self.siprec.customer_stream.as_str(), "first" | "second") {
            return Err(key_err("siprec.customer_stream", "must be `first` or `second`"));
        }
        let sr = &self.siprec;
        if !sr.tls_listen.is_empty() {
            if sr.tls_listen.parse::<SocketAddr>().is_err() {
                return Err(key_err("siprec.tls_listen", "is not ip:port (or empty to disable SIP over TLS)"));
            }
            if let Err(e) = crate::io::tls::load("siprec", &sr.tls_cert, &sr.tls_key, &sr.tls_client_ca) {
                return Err(key_err(&e.key, e.why));
            }
        }
        if self.siprec.max_sessions == 0 {
            return Err(key_err("siprec.max_sessions", "must be at least 1"));
        }
        if !(1..=100_000).contains(&self.streams.max_streams) {
            return Err(key_err("streams.max_streams", "must be between 1 and 100000"));
        }
        if self.streams.tokens.iter().any(|t| t.len() < 8) {
            return Err(key_err("streams.tokens", "tokens must be at least 8 characters"));
        }
        if !self.streams.audiosocket_listen.is_empty() && self.streams.audiosocket_listen.parse::<SocketAddr>().is_err() {
            return Err(key_err("streams.audiosocket_listen", "is not ip:port (or empty to disable AudioSocket)"));
        }
        for a in &self.streams.audiosocket_allow {
            SourcePattern::parse(a).ok_or_else(|| key_err("streams.audiosocket_allow", format!("`{a}` is not an ip or ip:port")))?;
        }
        if !matches!(self.streams.stereo_customer_channel.as_str(), "left" | "right") {
            return Err(key_err("streams.stereo_customer_channel", "must be `left` or `right`"));
        }
        if !matches!(self.streams.twilio_customer_track.as_str(), "inbound" | "outbound") {
            return Err(key_err("streams.twilio_customer_track", "must be `inbound` or `outbound`"));
        }
        let st = &self.streams;
        if !(st.public_url.is_empty() || st.public_url.starts_with("wss://") || st.public_url.starts_with("ws://")) {
            return Err(key_err("streams.public_url", "must start with wss:// (or ws://)"));
        }
        if !st.audiohook_client_secret.is_empty() {
            if st.audiohook_api_key.is_empty() {
                return Err(key_err("streams.audiohook_client_secret", "is set but streams.audiohook_api_key is empty"));
            }
            if self.audiohook_secret().is_none() {
                return Err(key_err("streams.audiohook_client_secret", "is not base64 (paste it as Genesys shows it)"));
            }
        }
        if !st.audiohook_api_key.is_empty() && st.audiohook_api_key.len() < 8 {
            return Err(key_err("streams.audiohook_api_key", "must be at least 8 characters"));
        }
        if !st.tls_listen.is_empty() {
            if st.tls_listen.parse::<SocketAddr>().is_err() {
                return Err(key_err("streams.tls_listen", "is not ip:port (or empty to disable TLS)"));
            }
            if let Err(e) = crate::io::tls::load("streams", &st.tls_cert, &st.tls_key, "") {
                return Err(key_err(&e.key, e.why));
            }
        }
        if st.tls_listen.is_empty() && (!st.tls_cert.is_empty() || !st.tls_key.is_empty()) {
            return Err(key_err("streams.tls_listen", "is empty but streams.tls_cert / tls_key are set"));
        }
        let l = &self.limits;
        if l.requests_per_source_per_s < 0.0 || !l.requests_per_source_per_s.is_finite() {
            return Err(key_err("limits.requests_per_source_per_s", "must be 0 (off) or a positive rate"));
        }
        if l.max_transactions < 100 {
            return Err(key_err("limits.max_transactions", "must be at least 100"));
        }
        if l.max_agent_labels == 0 || l.max_queue_labels == 0 {
            let key = if l.max_agent_labels == 0 { "limits.max_agent_labels" } else { "limits.max_queue_labels" };
            return Err(key_err(key, "must be at least 1"));
        }
        if l.max_sip_connections == 0 {
            return Err(key_err("limits.max_sip_connections", "must be at least 1"));
        }
        if l.sip_idle_timeout_s < 30 {
            return Err(key_err("limits.sip_idle_timeout_s", "must be at least 30 (keep-alives come every 25–120 s)"));
        }
        if l.max_streams_per_call == 0 || l.max_streams_per_call > 64 {
            return Err(key_err("limits.max_streams_per_call", "must be between 1 and 64"));
        }
        if !(l.new_calls_per_source_per_s.is_finite() && l.new_calls_per_source_per_s >= 0.0) {
            return Err(key_err("limits.new_calls_per_source_per_s", "must be a number ≥ 0 (0 disables the limit)"));
        }
        self.pbx_sources()?;
        crate::sip::proxy::Target::parse(&self.pbx.route).ok_or_else(|| key_err("pbx.route", "is not host:port or a SIP URI"))?;
        if let Some(r) = &self.agents.route {
            crate::sip::proxy::Target::parse(r).ok_or_else(|| key_err("agents.route", "is not host:port or a SIP URI"))?;
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<SocketAddr>().is_err() {
            return Err(key_err("http.listen", "is not ip:port (or empty to disable)"));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(key_err("log.format", "must be `text` or `json`"));
        }
        let t = &self.analysis.turns;
        for (k, v) in [
            ("analysis.turns.bridge_s", t.bridge_s),
            ("analysis.turns.utterance_gap_s", t.utterance_gap_s),
            ("analysis.turns.backchannel_max_s", t.backchannel_max_s),
            ("analysis.turns.interruption_min_overlap_s", t.interruption_min_overlap_s),
            ("analysis.turns.monologue_max_gap_s", t.monologue_max_gap_s),
            ("analysis.turns.dead_air_event_s", t.dead_air_event_s),
            ("analysis.turns.monologue_event_s", t.monologue_event_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(key_err(k, "must be a positive number of seconds"));
            }
        }
        if t.dead_air_thresholds_s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(key_err("analysis.turns.dead_air_thresholds_s", "must be positive numbers of seconds"));
        }
        let a = &self.asr;
        if a.enabled() {
            let m = std::path::Path::new(a.model.trim());
            if !m.join("am").is_dir() && !m.join("conf").is_dir() {
                return Err(key_err("asr.model", format!("`{}` is not a Vosk model folder (no am/ or conf/ inside)", a.model)));
            }
            if let Err(e) = a.phrase_pack() {
                return Err(key_err("asr.phrases", e.to_string()));
            }
        }
        if let Err(e) = a.phrase_params.validate() {
            return Err(key_err("asr.phrase_params", e.to_string()));
        }
        if a.workers == 0 || a.workers > 64 {
            return Err(key_err("asr.workers", "must be between 1 and 64"));
        }
        if !(a.queue_s.is_finite() && a.queue_s > 0.0) {
            return Err(key_err("asr.queue_s", "must be a positive number of seconds"));
        }
        if a.max_utterance_s == 0 || a.tail_ms == 0 {
            return Err(key_err("asr.max_utterance_s", "and asr.tail_ms must be positive"));
        }
        for (agent, token) in &self.whisper.agents {
            if token.len() < 8 {
                return Err(key_err(&format!("whisper.agents.{agent}"), "token must be at least 8 characters"));
            }
        }
        if self.whisper.supervisors.iter().any(|t| t.len() < 8) {
            return Err(key_err("whisper.supervisors", "tokens must be at least 8 characters"));
        }
        if let Err(crate::coach::CoachError::Key { key, msg }) = self.coach.validate() {
            return Err(key_err(&key, msg));
        }
        let c = &self.cue;
        if !(c.tone_hz > 20.0 && c.tone_hz < 3900.0) {
            return Err(key_err("cue.tone_hz", "must be between 20 and 3900 Hz (narrowband)"));
        }
        if c.duration_ms == 0 || c.duration_ms > 2000 {
            return Err(key_err("cue.duration_ms", "must be 1..=2000"));
        }
        if !(c.level_dbfs <= 0.0 && c.level_dbfs >= -60.0) {
            return Err(key_err("cue.level_dbfs", "must be between -60 and 0"));
        }
        if c.enabled {
            if let Err(e) = c.samples() {
                return Err(key_err("cue.file", e));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(key_err("log.level", "is not a tracing filter"));
        }
        Ok(())
    }

    /// The AudioHook client secret, base64-decoded; None when unset or not base64.
    pub fn audiohook_secret(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let s = self.streams.audiohook_client_secret.trim();
        (!s.is_empty()).then(|| base64::engine::general_purpose::STANDARD.decode(s).ok()).flatten()
    }

    /// `agents.allow` as networks (default: private networks).
    pub fn agent_sources(&self) -> Result<Vec<crate::net::Net>, ConfigError> {
        match &self.agents.allow {
            None => Ok(crate::net::PRIVATE_NETS.iter().filter_map(|n| crate::net::Net::parse(n)).collect()),
            Some(list) => list
                .iter()
                .map(|n| {
                    crate::net::Net::parse(n).ok_or_else(|| key_err("agents.allow", format!("`{n}` is not an address or CIDR network")))
                })
                .collect(),
        }
    }

    pub fn pbx_sources(&self) -> Result<Vec<SourcePattern>, ConfigError> {
        self.pbx
            .addresses
            .iter()
            .map(|s| SourcePattern::parse(s).ok_or_else(|| key_err("pbx.addresses", format!("`{s}` is not an ip or ip:port"))))
            .collect()
    }

    /// Address written into Via / Record-Route.
    pub fn sip_advertise(&self) -> IpAddr {
        self.sip.advertise.unwrap_or(self.sip.listen.ip())
    }
    /// The agent side's own listener as agents reach it (address, port), when configured.
    pub fn agents_iface(&self) -> Option<(IpAddr, u16)> {
        self.sip.agents_listen.map(|a| (self.sip.agents_advertise.unwrap_or(a.ip()), a.port()))
    }
    /// Address for RTP.
    /// Where the relay binds its ports (the default interface).
    pub fn media_address(&self) -> IpAddr {
        self.media.address.unwrap_or_else(|| self.sip_advertise())
    }
    /// What the relay writes into SDP (the default interface).
    pub fn media_advertise(&self) -> IpAddr {
        self.media.advertise.unwrap_or_else(|| self.media_address())
    }
    fn interface_for(&self, party: crate::call::Party) -> Option<&InterfaceConfig> {
        let name = match party {
            crate::call::Party::Customer => self.media.customer_interface.as_ref(),
            crate::call::Party::Agent => self.media.agent_interface.as_ref(),
        }?;
        self.media.interfaces.get(name)
    }
    /// Where the relay ports facing `party` are bound.
    pub fn media_bind(&self, party: crate::call::Party) -> IpAddr {
        self.interface_for(party).map_or_else(|| self.media_address(), |i| i.address)
    }
    /// The relay address written into SDP sent to `party`.
    pub fn media_advertise_for(&self, party: crate::call::Party) -> IpAddr {
        self.interface_for(party).map_or_else(|| self.media_advertise(), |i| i.advertise.unwrap_or(i.address))
    }
    /// The media plane's learning and timing rules.
    pub fn media_policy(&self) -> crate::media::session::MediaPolicy {
        let m = &self.media;
        crate::media::session::MediaPolicy {
            learning: m.learning,
            learning_window: Duration::from_millis(m.learning_window_ms),
            handover_after: Duration::from_millis(m.handover_after_ms),
            rtp_timeout: Duration::from_secs(m.rtp_timeout_s),
            hold_timeout: Duration::from_secs(m.hold_timeout_s),
            dead_leg_timeout: Duration::from_secs(m.dead_leg_timeout_s),
            setup_timeout: Duration::from_secs(m.setup_timeout_s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(t: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_parts(t, env.iter().map(|(a, b)| (a.to_string(), b.to_string())))
    }

    #[test]
    fn shipped_default_config_loads() {
        let text = include_str!("../config/hearken.toml");
        load(text, &[]).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[media]\nport_min = \"x\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("media.port_min"), "{e}");
        let e = load("[media]\nport_min = 30001\n", &[]).unwrap_err().to_string();
        assert!(e.contains("media.port_min"), "{e}");
        let e = load("[sip]\nlisten = \"nonsense\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("sip.listen"), "{e}");
        let e = load("[sip]\nbogus = 1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = load("[pbx]\naddresses = [\"pbx.example\"]\n", &[]).unwrap_err().to_string();
        assert!(e.contains("pbx.addresses"), "{e}");
        let e = load("[sip]\nlisten = \"0.0.0.0:5060\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("sip.advertise"), "{e}");
        let e = load("[coach]\ntalk_share_max = 2.0\n", &[]).unwrap_err().to_string();
        assert_eq!(e.matches("config key").count(), 1, "{e}");
        assert!(e.contains("`coach.talk_share_max`"), "{e}");
        let e = load("[coach.queues.billing]\ndead_air_s = -1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("coach.queues.billing.dead_air_s"), "{e}");
        let e = load("[coach]\nenabled = [\"shouting\"]\n", &[]).unwrap_err().to_string();
        assert!(e.contains("coach") && e.contains("shouting"), "{e}");
    }

    #[test]
    fn env_overrides() {
        let c = load(
            "",
            &[("HEARKEN_MEDIA__PORT_MIN", "40000"), ("HEARKEN_MEDIA__PORT_MAX", "40100"), ("HEARKEN_PBX__ROUTE", "10.0.0.1:5060")],
        )
        .unwrap();
        assert_eq!(c.media.port_min, 40000);
        assert_eq!(c.pbx.route, "10.0.0.1:5060");
        let e = load("", &[("HEARKEN_MEDIA__PORT_MIN", "abc")]).unwrap_err().to_string();
        assert!(e.contains("media.port_min"), "{e}");
    }

    #[test]
    fn media_plane_keys_are_checked_by_name() {
        let err = |t: &str| Config::from_parts(t, std::iter::empty()).unwrap_err().to_string();
        assert!(err("[media]\ncustomer_interface = \"pbx\"\n").contains("media.customer_interface"));
        assert!(err("[media]\nlearning = \"latch\"\n").contains("media.learning"));
        assert!(err("[media]\ndead_leg_timeout_s = 0\n").contains("media.dead_leg_timeout_s"));
        assert!(err("[media.interfaces.ext]\naddress = \"0.0.0.0\"\n").contains("media.interfaces.ext.advertise"));
        assert!(err("[limits]\nmax_streams_per_call = 0\n").contains("limits.max_streams_per_call"));
        assert!(err("[limits]\nnew_calls_per_source_per_s = -1\n").contains("limits.new_calls_per_source_per_s"));
        assert!(err("[ng]\nlisten = \"localhost\"\n").contains("ng.listen"));
        assert!(err("[ng]\nlisten = \"127.0.0.1:22222\"\nallow = [\"kamailio\"]\n").contains("ng.allow"));
        assert!(err("[ng]\nlisten = \"127.0.0.1:22222\"\nteardown_url = \"https://k/RPC2\"\n").contains("ng.teardown_url"));
        assert!(err("[sip]\nenabled = false\n").contains("sip.enabled"), "proxy off and no ng: nothing controls the relay");
        assert!(err("[cluster]\nbroker = \"amqp://x:1\"\n").contains("cluster.broker"));
        assert!(err("[streams]\ntokens = [\"short\"]\n").contains("streams.tokens"));
        // Stream auth and TLS keys: each mistake names its key.
        assert!(err("[streams]\nmax_streams = 0\n").contains("streams.max_streams"));
        assert!(err("[siprec]\nenabled = true\n").contains("siprec.allow"));
        assert!(err("[sip]\ntimer_c_s = 60\n").contains("sip.timer_c_s"));
        assert!(err("[agents]\nallow = [\"10.0.0.0/40\"]\n").contains("agents.allow"));
        assert!(err("[siprec]\nallow = [\"sbc.example\"]\n").contains("siprec.allow"));
        assert!(err("[siprec]\ncustomer_stream = \"third\"\n").contains("siprec.customer_stream"));
        assert!(err("[sip]\ntls_ca = \"/etc/ca.pem\"\n").contains("sip.tls_ca"));
        assert!(err("[records]\nstore = \"postgres\"\n").contains("records.url"));
        assert!(err("[records]\nstore = \"mysql\"\n").contains("records.store"));
        assert!(err("[limits]\nmax_agent_labels = 0\n").contains("limits.max_agent_labels"));
        assert!(err("[siprec]\ntls_listen = \"127.0.0.1:5061\"\n").contains("siprec.tls_cert"));
        assert!(err("[siprec]\ntls_listen = \"nope\"\n").contains("siprec.tls_listen"));
        assert!(err("[sip]\nenabled = false\n[ng]\nlisten = \"127.0.0.1:2223\"\n[siprec]\nenabled = true\nallow = [\"10.0.0.1\"]\n")
            .contains("siprec.enabled"));
        assert!(err("[streams]\npublic_url = \"https://x\"\n").contains("streams.public_url"));
        assert!(err("[streams]\naudiohook_client_secret = \"c2VjcmV0\"\n").contains("streams.audiohook_client_secret"));
        assert!(err("[streams]\naudiohook_api_key = \"key-12345\"\naudiohook_client_secret = \"not base64!\"\n")
            .contains("streams.audiohook_client_secret"));
        assert!(err("[streams]\naudiohook_api_key = \"short\"\n").contains("streams.audiohook_api_key"));
        assert!(err("[streams]\ntls_listen = \"0.0.0.0\"\n").contains("streams.tls_listen"));
        assert!(err("[streams]\ntls_listen = \"127.0.0.1:8443\"\n").contains("streams.tls_cert"));
        assert!(err(
            "[streams]\ntls_listen = \"127.0.0.1:8443\"\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n"
        )
        .contains("streams.tls_cert"));
        assert!(err("[streams]\ntls_cert = \"/etc/cert.pem\"\n").contains("streams.tls_listen"));
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let j = junk.display();
        assert!(err(&format!("[streams]\ntls_listen = \"127.0.0.1:8443\"\ntls_cert = \"{j}\"\ntls_key = \"{j}\"\n"))
            .contains("streams.tls_cert"));
        let ok = Config::from_parts(
            "[media]\nagent_interface = \"ext\"\nlearning = \"strict\"\n[media.interfaces.ext]\naddress = \"0.0.0.0\"\nadvertise = \"203.0.113.4\"\n",
            std::iter::empty(),
        )
        .unwrap();
        assert_eq!(ok.media_advertise_for(crate::call::Party::Agent).to_string(), "203.0.113.4");
        assert_eq!(ok.media_bind(crate::call::Party::Agent).to_string(), "0.0.0.0");
        assert_eq!(ok.media_bind(crate::call::Party::Customer).to_string(), "127.0.0.1");
        assert_eq!(ok.media_policy().learning, crate::media::session::Learning::Strict);
    }
}
