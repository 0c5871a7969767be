//! Media-stream inputs: platforms that hand a call's audio to analytics as a stream per call
//! (issue 11). Each dialect is a sans-IO core that turns the platform's frames into the call
//! domain's events ([`StreamEvent`]); the driver (`io::stream`) feeds them to the analysis as a
//! call of input `stream`. Hearken only receives: nothing here can harm a call.
//!
//! Dialects today: Twilio Media Streams ([`twilio`]), jambonz `listen` and FreeSWITCH
//! mod_audio_fork ([`l16`]), Asterisk AudioSocket ([`audiosocket`]).
//! Not here: sockets and WebSocket framing (the driver), decoding (the analysis).

pub mod audiosocket;
pub mod l16;
pub mod twilio;

use crate::call::Party;

/// What a stream frame means for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The stream describes its call: who the agent is, the queue, the platform's call id.
    Start { agent_id: String, queue: String, token: Option<String> },
    /// 20 ms (or so) of µ-law audio of one party: its sequence number and its media timestamp
    /// in milliseconds from the start of the stream.
    Audio { party: Party, seq: u32, timestamp_ms: u64, payload: Vec<u8> },
    /// The platform ended the stream.
    Stop,
    /// A frame that needs no action (connected, mark, dtmf).
    Nothing,
}

/// Why a frame was refused (counted; the stream goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    NotJson,
    UnknownEvent,
    MissingField,
    BadPayload,
    /// Audio before `start`.
    NotStarted,
    /// A media format this input does not take.
    Unsupported,
}
