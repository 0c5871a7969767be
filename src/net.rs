//! Network address helpers shared by the control planes: source allowlists.
//!
//! Not here: sockets (io), SIP URIs (sip::message).

use std::net::{IpAddr, SocketAddr};

/// A trusted source: an IP, optionally with a port (`pbx.addresses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePattern {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl SourcePattern {
    /// `ip` or `ip:port`.
    pub fn parse(s: &str) -> Option<SourcePattern> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Some(SourcePattern { ip: sa.ip(), port: Some(sa.port()) });
        }
        s.parse::<IpAddr>().ok().map(|ip| SourcePattern { ip, port: None })
    }
    pub fn matches(&self, a: SocketAddr) -> bool {
        self.ip == a.ip() && self.port.is_none_or(|p| p == a.port())
    }
}
