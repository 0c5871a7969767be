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

/// A network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    pub fn parse(s: &str) -> Option<Net> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() { max } else { p.trim().parse().ok()? };
        (prefix <= max).then_some(Net { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u8) {
            match ip {
                IpAddr::V4(v) => (u32::from(v) as u128, 32),
                IpAddr::V6(v) => match v.to_ipv4_mapped() {
                    Some(v4) => (u32::from(v4) as u128, 32),
                    None => (u128::from(v), 128),
                },
            }
        };
        let ((a, la), (b, lb)) = (bits(self.addr), bits(ip));
        if la != lb {
            return false;
        }
        let shift = la - self.prefix.min(la);
        if shift >= 128 {
            return true;
        }
        (a >> shift) == (b >> shift)
    }
}

/// Private, loopback, link-local, carrier-grade NAT and unique-local networks: where agents'
/// phones are, unless configured otherwise.
pub const PRIVATE_NETS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
];

#[cfg(test)]
mod net_tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.200.3.4".parse().unwrap()) && !n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.1.1".parse().unwrap()), "v4-mapped");
        assert!(Net::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Net::parse("fc00::/7").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(!Net::parse("fc00::/7").unwrap().contains("2001:db8::1".parse().unwrap()));
        assert_eq!(Net::parse("192.0.2.7").unwrap().prefix, 32);
        assert!(Net::parse("10.0.0.0/33").is_none() && Net::parse("nope/8").is_none());
        assert!(PRIVATE_NETS.iter().all(|n| Net::parse(n).is_some()));
    }
}
