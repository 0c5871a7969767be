//! Anchoring media for one SDP offer or answer: allocate relay ports for its m-lines, tell the
//! media plane what the sender announced, and rewrite the SDP so that the *other* party sends to
//! the relay. Shared by every control plane that puts Hearken in the media path (the built-in
//! SIP proxy today, rtpengine ng next).
//!
//! Not here: deciding which party sent the SDP (the control plane knows), SIP status codes (the
//! caller maps [`AnchorError`]).

use crate::call::{CallId, CallMeta, MediaControl, Party, PortsExhausted};
use crate::sdp;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    #[error("SDP cannot be parsed or rewritten")]
    BadSdp,
    #[error("relay port range exhausted")]
    PortsExhausted,
}

impl AnchorError {
    /// The SIP status a proxy answers with (RFC 3261 §21.4.26 for 488, §21.5.4 for 503).
    pub fn sip_status(self) -> u16 {
        match self {
            AnchorError::BadSdp => 488,
            AnchorError::PortsExhausted => 503,
        }
    }
}

impl From<PortsExhausted> for AnchorError {
    fn from(_: PortsExhausted) -> Self {
        AnchorError::PortsExhausted
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
    let ports = media.open(call, meta, session.media.len())?;
    media.remote(call, sender, &session);
    let facing: Vec<sdp::RelayPorts> = ports.iter().map(|p| p.facing(sender.other())).collect();
    let body = sdp::rewrite(body, host, &facing).map_err(|_| AnchorError::BadSdp)?;
    Ok(Anchored { body, session })
}
