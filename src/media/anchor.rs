//! Anchoring media for one SDP offer or answer: allocate relay ports for its m-lines, tell the
//! media plane what the sender announced, and rewrite the SDP so that the *other* party sends to
//! the relay. Shared by every control plane that puts Hearken in the media path (the built-in
//! SIP proxy today, rtpengine ng next).
//!
//! Not here: deciding which party sent the SDP (the control plane knows), SIP status codes (the
//! caller maps [`AnchorError`]).

use crate::call::{CallId, CallMeta, MediaControl, OpenError, Party};
use crate::sdp;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    #[error("SDP cannot be parsed or rewritten")]
    BadSdp,
    /// The media plane refused (ports, call or stream limits).
    #[error(transparent)]
    Open(#[from] OpenError),
}

impl AnchorError {
    /// The SIP status a proxy answers with (RFC 3261 §21.4.26 for 488, §21.5.4 for 503).
    pub fn sip_status(self) -> u16 {
        match self {
            AnchorError::BadSdp | AnchorError::Open(OpenError::TooManyStreams) => 488,
            AnchorError::Open(OpenError::PortsExhausted | OpenError::TooManyCalls) => 503,
        }
    }
    /// The reason phrase that goes with [`Self::sip_status`].
    pub fn sip_reason(self) -> &'static str {
        match self {
            AnchorError::BadSdp => "Not Acceptable Here",
            AnchorError::Open(OpenError::TooManyStreams) => "Too Many Media Streams",
            AnchorError::Open(OpenError::PortsExhausted) => "Relay Ports Exhausted",
            AnchorError::Open(OpenError::TooManyCalls) => "Call Limit Reached",
        }
    }
    /// Seconds for a `Retry-After` on a 503 (RFC 3261 §20.33): capacity comes back as calls end.
    pub fn retry_after(self) -> Option<u32> {
        (self.sip_status() == 503).then_some(5)
    }
}

/// What an anchored SDP became.
#[derive(Debug)]
pub struct Anchored {
    /// The SDP to send on to the other party (relay address and ports in it).
    pub body: Vec<u8>,
    /// The sender's SDP as parsed (m-line count, codecs, direction).
    pub session: sdp::Session,
}

/// Anchor `body`, sent by `sender` on `call`, at `host` (the address written into the SDP).
pub fn anchor(
    body: &[u8],
    call: CallId,
    meta: &CallMeta,
    sender: Party,
    host: IpAddr,
    media: &mut dyn MediaControl,
) -> Result<Anchored, AnchorError> {
    let session = sdp::parse(body).map_err(|_| AnchorError::BadSdp)?;
    let active: Vec<bool> = session.media.iter().map(|m| m.port != 0).collect();
    let ports = media.open(call, meta, &active)?;
    media.remote(call, sender, &session);
    let facing: Vec<Option<sdp::RelayPorts>> = ports.iter().map(|p| p.map(|p| p.facing(sender.other()))).collect();
    let mut body = sdp::rewrite(body, host, &facing).map_err(|_| AnchorError::BadSdp)?;
    if let Some(c) = media.ice(call, sender.other()) {
        body = sdp::add_ice_lite(&body, host, &facing, &c).map_err(|_| AnchorError::BadSdp)?;
    }
    Ok(Anchored { body, session })
}
