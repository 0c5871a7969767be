//! The call domain that no input owns: who is on a call ([`Party`]), what is known about it
//! ([`CallMeta`]), how it ended ([`EndReason`]), how its audio arrives ([`Input`]), and the
//! messages that pass between control planes (the SIP proxy today; rtpengine ng, SIPREC and media
//! streams next), the media plane and the analysis.
//!
//! ```text
//!   control plane ──MediaControl (open/remote/close)──▶ media plane ──MediaFrame──▶ analysis
//!        │                                                   │                        ▲
//!        └────────────── AnalysisCmd (start / negotiated / end) ─────────────────────┘
//! ```
//!
//! A control plane decides *that* there is a call, who its parties are and when it ends; the
//! media plane moves packets and taps copies; analysis turns frames into listening signals. None
//! of them imports another's internals: they meet here.
//!
//! Not here: SIP, SDP rewriting ([`crate::media::anchor`]), sockets.

use crate::rtp::RtpHeader;
use crate::sdp;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// A call's internal id: unique within a process, never a SIP Call-ID (which is personal data
/// in many deployments and unbounded as a label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub u64);

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The two parties of a contact-centre call. In proxy mode the customer is on the PBX side of
/// the relay and the agent on the phone side; other inputs map their own notions (SIPREC
/// participants, stream channels) onto these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Party {
    Customer,
    Agent,
}

impl Party {
    pub const ALL: [Party; 2] = [Party::Customer, Party::Agent];
    pub fn idx(self) -> usize {
        self as usize
    }
    pub fn other(self) -> Party {
        match self {
            Party::Customer => Party::Agent,
            Party::Agent => Party::Customer,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Party::Customer => "customer",
            Party::Agent => "agent",
        }
    }
}

/// How a call's audio reaches Hearken (the `input` label of per-call metrics and records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// Inline: the relay anchors both directions of the call (built-in SIP proxy).
    #[default]
    Relay,
    /// The relay, driven by Kamailio/OpenSIPS over rtpengine's ng protocol.
    Ng,
    /// A recording analysed offline (`hearken analyze`).
    File,
    /// Media streams the platform sends; Hearken only receives. Twilio Media Streams (and the
    /// Telnyx / SignalWire equivalents).
    Twilio,
    /// jambonz `listen`.
    Jambonz,
    /// FreeSWITCH mod_audio_fork / mod_audio_stream.
    #[serde(rename = "audio_fork")]
    AudioFork,
    /// Asterisk chan_websocket (and ARI external media over WebSocket).
    #[serde(rename = "chan_websocket")]
    ChanWebsocket,
    /// Asterisk AudioSocket.
    #[serde(rename = "audiosocket")]
    AudioSocket,
    /// Genesys Cloud AudioHook.
    #[serde(rename = "audiohook")]
    AudioHook,
    /// A SIPREC recording session (RFC 7866) an SBC or proxy forks to Hearken.
    Siprec,
}

impl Input {
    pub fn label(self) -> &'static str {
        match self {
            Input::Relay => "relay",
            Input::Ng => "ng",
            Input::File => "file",
            Input::Twilio => "twilio",
            Input::Jambonz => "jambonz",
            Input::AudioFork => "audio_fork",
            Input::ChanWebsocket => "chan_websocket",
            Input::AudioSocket => "audiosocket",
            Input::AudioHook => "audiohook",
            Input::Siprec => "siprec",
        }
    }
    /// The input a label names (the labels are the serde names).
    pub fn from_label(s: &str) -> Option<Input> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

/// What is known about a call when it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallMeta {
    /// Agent id (sanitised: it becomes a metric label).
    pub agent_id: String,
    /// Queue (sanitised; `default` when unknown).
    pub queue: String,
    /// The customer's display name, for "use the customer's name". Personal data: kept in
    /// memory for the call only, never logged.
    pub customer_name: Option<String>,
    pub input: Input,
}

/// Why a call ended. One type everywhere: media, analysis, metrics labels, records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A party hung up (BYE answered).
    Bye,
    /// The caller cancelled before the answer (487).
    Cancelled,
    /// The call was refused with this final status.
    Rejected(u16),
    /// The signalling timed out (Timer C, or a BYE without a final response).
    SipTimeout,
    /// No media on any stream for the RTP timeout.
    RtpTimeout,
    /// One party's leg sent nothing at all (no RTP, RTCP or DTLS) for the dead-leg timeout.
    DeadLeg,
    /// The offer/answer never completed (no SDP from one side, or no ACK) in time.
    SetupTimeout,
    /// The control plane closed the media without a more specific reason, or Hearken shut down.
    Closed,
    /// A recording or file ran out (offline analysis).
    EndOfInput,
    /// The recorded call was handed to another agent (SIPREC metadata): this agent's part
    /// ends here, the next agent's starts as a call of its own.
    Transfer,
}

impl EndReason {
    pub const LABELS: [&'static str; 10] =
        ["bye", "cancelled", "rejected", "sip_timeout", "rtp_timeout", "dead_leg", "setup_timeout", "closed", "end_of_input", "transfer"];
    pub fn label(self) -> &'static str {
        match self {
            EndReason::Bye => "bye",
            EndReason::Cancelled => "cancelled",
            EndReason::Rejected(_) => "rejected",
            EndReason::SipTimeout => "sip_timeout",
            EndReason::RtpTimeout => "rtp_timeout",
            EndReason::DeadLeg => "dead_leg",
            EndReason::SetupTimeout => "setup_timeout",
            EndReason::Closed => "closed",
            EndReason::EndOfInput => "end_of_input",
            EndReason::Transfer => "transfer",
        }
    }
    /// Inverse of [`Self::label`] (a `rejected` reason read back has lost its status: 0).
    pub fn from_label(s: &str) -> Option<EndReason> {
        Some(match s {
            "bye" => EndReason::Bye,
            "cancelled" => EndReason::Cancelled,
            "rejected" => EndReason::Rejected(0),
            "sip_timeout" => EndReason::SipTimeout,
            "rtp_timeout" => EndReason::RtpTimeout,
            "dead_leg" => EndReason::DeadLeg,
            "setup_timeout" => EndReason::SetupTimeout,
            "closed" => EndReason::Closed,
            "end_of_input" => EndReason::EndOfInput,
            "transfer" => EndReason::Transfer,
            _ => return None,
        })
    }
}

// Serialised as its label: records and whisper messages have always said "bye", "rtp_timeout".
impl Serialize for EndReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

impl<'de> Deserialize<'de> for EndReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EndReason::from_label(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown end reason {s:?}")))
    }
}

/// Relay ports of one m-line: what each party's side is told to send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPorts {
    /// Ports written into SDP sent towards the customer side (the PBX in proxy mode).
    pub customer: sdp::RelayPorts,
    /// Ports written into SDP sent towards the agent.
    pub agent: sdp::RelayPorts,
}

impl StreamPorts {
    /// The ports `party`'s side sends to.
    pub fn facing(&self, party: Party) -> sdp::RelayPorts {
        match party {
            Party::Customer => self.customer,
            Party::Agent => self.agent,
        }
    }
}

/// Why the media plane could not take (more of) a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("relay port range exhausted")]
    PortsExhausted,
    #[error("concurrent call limit reached")]
    TooManyCalls,
    #[error("more media streams than one call may have")]
    TooManyStreams,
}

/// What a control plane needs from the media plane (implemented by the media driver; a fake in
/// unit tests, the in-memory media of the simulation harness in whole-call tests).
pub trait MediaControl {
    /// Make sure `call` has relay ports for every m-line marked active (a stream with port 0
    /// gets none); returns the ports of all m-lines, `None` where there are none.
    fn open(&mut self, call: CallId, meta: &CallMeta, active: &[bool]) -> Result<Vec<Option<StreamPorts>>, OpenError>;
    /// `party`'s side announced this media (its own receive addresses, direction, codecs).
    fn remote(&mut self, call: CallId, party: Party, session: &sdp::Session);
    /// The call is over: stop relaying and free its ports.
    fn close(&mut self, call: CallId, reason: EndReason);
    /// ICE-lite credentials of the relay side facing `party` (`media.ice = "lite"`), to go into
    /// the SDP sent to that party; None when ICE is removed.
    fn ice(&self, _call: CallId, _party: Party) -> Option<crate::media::stun::IceCredentials> {
        None
    }
}

/// Payload types of one negotiated stream (m-line), learned once from the SDP of both sides:
/// the packet path only looks numbers up in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamPlan {
    /// m-line index in the SDP.
    pub index: usize,
    /// `m=audio`.
    pub audio: bool,
    pub payloads: crate::codec::PayloadMap,
    /// SRTP: an SRTP profile, or SDES keys on both sides (best effort).
    pub encrypted: bool,
    /// SDES keys per party (what each sends with), when the SDP carried them.
    pub sdes: crate::media::srtp::SdesKeys,
    savp: bool,
}

/// The media plan of a call after an offer or answer: per stream payload maps, hold state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaPlan {
    pub streams: Vec<StreamPlan>,
    /// The audio is on hold: either party's latest SDP does not both send and receive
    /// (sendonly, recvonly, inactive, `0.0.0.0`, port 0). A hold offer (sendonly) is answered
    /// recvonly, so the pair, not the last SDP alone, decides (RFC 3264 §8.4, RFC 6337 §5.3).
    pub on_hold: bool,
    held_by: [bool; 2],
}

impl MediaPlan {
    /// Merge what `party`'s side announced into the plan (both directions use the negotiated
    /// payload numbers).
    pub fn learn(&mut self, party: Party, session: &sdp::Session) {
        for (i, m) in session.media.iter().enumerate() {
            if self.streams.len() <= i {
                self.streams.push(StreamPlan { index: i, audio: m.kind == "audio", ..Default::default() });
            }
            let s = &mut self.streams[i];
            s.audio = m.kind == "audio";
            s.savp |= m.encrypted();
            s.sdes.learn(party, &m.crypto);
            let both = s.sdes.announced_by(party) && s.sdes.announced_by(party.other());
            s.encrypted = s.savp || both;
            for (pt, enc) in &m.rtpmap {
                if let Some(f) = crate::codec::PayloadMap::from_rtpmap(&[(*pt, enc.clone())]).format(*pt) {
                    s.payloads.insert(*pt, f);
                }
            }
        }
        self.held_by[party.idx()] =
            session.media.iter().any(|m| m.kind == "audio" && (m.on_hold() || m.direction == sdp::Direction::RecvOnly));
        self.on_hold = self.held_by[0] || self.held_by[1];
    }
    /// The stream analysed for listening: the first audio m-line.
    pub fn primary_audio(&self) -> Option<&StreamPlan> {
        self.streams.iter().find(|s| s.audio)
    }
}

/// One RTP packet handed from the media plane to analysis: which call, party and stream, when
/// it arrived, its header, and the whole packet (payload at `header.payload_offset`).
#[derive(Debug, Clone)]
pub struct MediaFrame {
    pub call: CallId,
    pub party: Party,
    pub stream: usize,
    pub arrival: Instant,
    pub header: RtpHeader,
    pub packet: Vec<u8>,
    /// SRTP: `packet` must be decrypted (with the plan's SDES keys) before it is analysed.
    pub encrypted: bool,
}

impl MediaFrame {
    pub fn payload(&self) -> &[u8] {
        &self.packet[self.header.payload_offset..self.header.payload_offset + self.header.payload_len]
    }
}

/// Call lifecycle messages to the analysis, from whichever plane owns the call.
#[derive(Debug)]
pub enum AnalysisCmd {
    Start {
        call: CallId,
        meta: CallMeta,
    },
    /// A new offer or answer settled the media plan.
    Negotiated {
        call: CallId,
        plan: MediaPlan,
    },
    End {
        call: CallId,
        reason: EndReason,
    },
}

/// Agent ids and queues become metric labels: keep them short and plain.
pub fn sanitize_label(s: &str) -> String {
    let t: String = s.chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).take(64).collect();
    if t.is_empty() {
        "unknown".into()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reason_labels_round_trip() {
        for l in EndReason::LABELS {
            assert_eq!(EndReason::from_label(l).unwrap().label(), l);
        }
        assert_eq!(serde_json::to_string(&EndReason::Rejected(486)).unwrap(), "\"rejected\"");
        assert!(serde_json::from_str::<EndReason>("\"nope\"").is_err());
    }

    #[test]
    fn plan_learns_per_stream_payloads_and_hold() {
        let offer = sdp::parse(b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 4000 RTP/AVP 111 8\r\na=rtpmap:111 opus/48000/2\r\na=sendonly\r\n").unwrap();
        let mut plan = MediaPlan::default();
        plan.learn(Party::Customer, &offer);
        assert!(plan.on_hold);
        let a = plan.primary_audio().unwrap();
        assert_eq!(a.index, 1);
        assert_eq!(a.payloads.codec(111), crate::codec::Codec::Opus);
        assert_eq!(a.payloads.codec(8), crate::codec::Codec::Pcma);
        assert_eq!(plan.streams[0].payloads.codec(111), crate::codec::Codec::Unknown);
        // The answer to a hold offer is recvonly: still on hold; a sendrecv re-offer and answer
        // end it.
        let answer = |dir: &str| {
            sdp::parse(
                format!("v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n{dir}")
                    .as_bytes(),
            )
            .unwrap()
        };
        plan.learn(Party::Agent, &answer("a=recvonly\r\n"));
        assert!(plan.on_hold);
        plan.learn(Party::Customer, &answer(""));
        plan.learn(Party::Agent, &answer(""));
        assert!(!plan.on_hold);
    }
}
