//! SDP reading and the media-anchoring rewrite (RFC 4566, RFC 3264 offer/answer, RFC 3605
//! `a=rtcp`, RFC 5761 rtcp-mux).
//!
//! [`parse`] extracts what the relay needs per m-line (address, ports, payload types, direction);
//! [`rewrite`] is a pure function that points every `c=`, `m=` port and `a=rtcp` at the relay and
//! leaves every other line byte-for-byte as it was (the `o=` address becomes the relay's too) (codecs, telephone-event, direction, crypto,
//! unknown attributes). Hold stays visible: `c=0.0.0.0` and port 0 are kept as they are.
//!
//! ICE (RFC 8839) is removed from anchored SDP: candidates name the parties' own addresses, and
//! if they stayed, the parties could find a path around the relay (and private addresses would
//! leak to the other side). The relay is the only path.
//!
//! Not here: codec negotiation or transcoding, ICE-lite (not offered).

use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("SDP is not text")]
    NotText,
    #[error("SDP line {0} is malformed")]
    BadLine(usize),
    #[error("SDP has no usable connection address for m-line {0}")]
    NoAddress(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attr(a: &str) -> Option<Direction> {
        Some(match a {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
    /// Effective connection address (media-level `c=`, else session-level).
    pub addr: IpAddr,
    pub rtcp_port: Option<u16>,
    pub rtcp_mux: bool,
    pub direction: Direction,
    /// `a=rtpmap` entries: payload type -> "encoding/clock[/channels]".
    pub rtpmap: Vec<(u8, String)>,
    /// `a=crypto` lines (SDES, RFC 4568): the keys this side sends with.
    pub crypto: Vec<Crypto>,
    /// `a=label` (RFC 4574): how SIPREC metadata names this m-line's stream.
    pub label: Option<String>,
}

/// One `a=crypto:<tag> <suite> inline:<key||salt base64>[|lifetime][|MKI:len] ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: String,
    /// The base64 `inline:` key and salt, as written.
    pub key_b64: String,
    /// An MKI is present (each packet then carries it; not supported for analysis).
    pub mki: bool,
}

fn parse_crypto(v: &str) -> Option<Crypto> {
    let mut it = v.split_whitespace();
    let tag = it.next()?.parse().ok()?;
    let suite = it.next()?.to_string();
    // The first key parameter; several keys (RFC 4568 §6.1) are rare and not analysed.
    let kp = it.next()?.strip_prefix("inline:")?;
    let mut parts = kp.split('|');
    let key_b64 = parts.next()?.to_string();
    let mki = parts.any(|p| p.contains(':'));
    Some(Crypto { tag, suite, key_b64, mki })
}

impl Media {
    /// The profile says SRTP (SDES or DTLS keys: RTP/SAVP, RTP/SAVPF, UDP/TLS/RTP/SAVP(F)).
    /// Best-effort SRTP (RTP/AVP with `a=crypto` on both sides) is decided by the pair.
    pub fn encrypted(&self) -> bool {
        self.proto.contains("SAVP")
    }
    /// On hold from this side's point of view: it will not receive media (RFC 3264 §8.4), or the
    /// legacy `c=0.0.0.0` form (RFC 2543), or the stream is disabled (port 0).
    pub fn on_hold(&self) -> bool {
        self.port == 0 || self.addr.is_unspecified() || matches!(self.direction, Direction::SendOnly | Direction::Inactive)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub media: Vec<Media>,
}

fn parse_c(v: &str, n: usize) -> Result<IpAddr, SdpError> {
    // c=IN IP4 192.0.2.1[/ttl]
    let mut it = v.split_whitespace();
    let (_net, _ty, addr) = (it.next(), it.next(), it.next().ok_or(SdpError::BadLine(n))?);
    addr.split('/').next().unwrap_or(addr).parse().map_err(|_| SdpError::BadLine(n))
}

fn lines(sdp: &[u8]) -> Result<Vec<&str>, SdpError> {
    let text = std::str::from_utf8(sdp).map_err(|_| SdpError::NotText)?;
    Ok(text.split('\n').map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()).collect())
}

/// Read the media descriptions of an SDP body.
pub fn parse(sdp: &[u8]) -> Result<Session, SdpError> {
    let mut session_addr: Option<IpAddr> = None;
    let mut session_dir = Direction::SendRecv;
    let mut media: Vec<(Media, Option<IpAddr>, bool)> = Vec::new();
    for (n, line) in lines(sdp)?.into_iter().enumerate() {
        let n = n + 1;
        let (ty, v) = line.split_once('=').ok_or(SdpError::BadLine(n))?;
        match (ty, media.last_mut()) {
            ("c", None) => session_addr = Some(parse_c(v, n)?),
            ("c", Some(m)) => m.1 = Some(parse_c(v, n)?),
            ("m", _) => {
                let mut it = v.split_whitespace();
                let kind = it.next().ok_or(SdpError::BadLine(n))?.to_string();
                let port_s = it.next().ok_or(SdpError::BadLine(n))?;
                let port: u16 = port_s.split('/').next().unwrap_or("").parse().map_err(|_| SdpError::BadLine(n))?;
                let proto = it.next().ok_or(SdpError::BadLine(n))?.to_string();
                let formats = it.map(str::to_string).collect();
                media.push((
                    Media {
                        kind,
                        port,
                        proto,
                        formats,
                        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        rtcp_port: None,
                        rtcp_mux: false,
                        direction: session_dir,
                        rtpmap: Vec::new(),
                        crypto: Vec::new(),
                        label: None,
                    },
                    None,
                    false,
                ));
            }
            ("a", m) => {
                let (name, val) = v.split_once(':').unwrap_or((v, ""));
                match (name, m) {
                    (d, None) if Direction::from_attr(d).is_some() => session_dir = Direction::from_attr(d).unwrap_or_default(),
                    (d, Some(m)) if Direction::from_attr(d).is_some() => {
                        m.0.direction = Direction::from_attr(d).unwrap_or_default();
                        m.2 = true;
                    }
                    ("rtcp", Some(m)) => {
                        let p = val.split_whitespace().next().unwrap_or("");
                        m.0.rtcp_port = Some(p.parse().map_err(|_| SdpError::BadLine(n))?);
                    }
                    ("rtcp-mux", Some(m)) => m.0.rtcp_mux = true,
                    ("label", Some(m)) => m.0.label = Some(val.trim().to_string()),
                    // Unparseable crypto lines are ignored (the stream is then not analysed).
                    ("crypto", Some(m)) => m.0.crypto.extend(parse_crypto(val)),
                    ("rtpmap", Some(m)) => {
                        let (pt, enc) = val.split_once(' ').ok_or(SdpError::BadLine(n))?;
                        let pt: u8 = pt.trim().parse().map_err(|_| SdpError::BadLine(n))?;
                        m.0.rtpmap.push((pt, enc.trim().to_string()));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (i, (mut m, addr, own_dir)) in media.into_iter().enumerate() {
        m.addr = addr.or(session_addr).ok_or(SdpError::NoAddress(i))?;
        if !own_dir {
            m.direction = session_dir;
        }
        out.push(m);
    }
    Ok(Session { media: out })
}

/// Relay ports for one m-line: where the receiving party must send RTP and RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPorts {
    pub rtp: u16,
    pub rtcp: u16,
}

/// Point the SDP at the relay: `c=` to `relay`, each m-line's port to `ports[i].rtp`, `a=rtcp`
/// to `ports[i].rtcp` (or to the RTP port when the original multiplexed RTCP on it). Held
/// (`0.0.0.0`) addresses and disabled (port 0) streams are kept. Every other line is unchanged.
pub fn rewrite(sdp: &[u8], relay: IpAddr, ports: &[Option<RelayPorts>]) -> Result<Vec<u8>, SdpError> {
    let parsed = parse(sdp)?;
    let family = if relay.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::with_capacity(sdp.len() + 64);
    let mut idx: Option<usize> = None;
    for (n, line) in lines(sdp)?.into_iter().enumerate() {
        let (ty, v) = line.split_once('=').ok_or(SdpError::BadLine(n + 1))?;
        match ty {
            // The origin names the sender's own host (often a private address): the relay's.
            "o" => {
                let f: Vec<&str> = v.split_whitespace().collect();
                if f.len() == 6 {
                    out.push_str(&format!("o={} {} {} IN {family} {relay}", f[0], f[1], f[2]));
                } else {
                    out.push_str(line);
                }
            }
            "c" => {
                let addr = parse_c(v, n + 1)?;
                if addr.is_unspecified() {
                    out.push_str(line);
                } else {
                    out.push_str(&format!("c=IN {family} {relay}"));
                }
            }
            "m" => {
                let i = idx.map_or(0, |i| i + 1);
                idx = Some(i);
                let m = &parsed.media[i];
                if m.port == 0 {
                    out.push_str(line);
                } else {
                    // Split as parse() does (any whitespace) and print with single spaces.
                    let mut parts = v.split_whitespace();
                    let kind = parts.next().unwrap_or("");
                    let port = parts.next().unwrap_or("");
                    let rest: Vec<&str> = parts.collect();
                    let suffix = port.split_once('/').map(|(_, c)| format!("/{c}")).unwrap_or_default();
                    let p = ports.get(i).copied().flatten().ok_or(SdpError::BadLine(n + 1))?;
                    out.push_str(&format!("m={kind} {}{suffix} {}", p.rtp, rest.join(" ")));
                }
            }
            // A disabled stream (port 0) keeps its attributes as they are.
            "a" if v.starts_with("rtcp:") && idx.is_some_and(|i| parsed.media[i].port != 0) => {
                let m = &parsed.media[idx.unwrap_or(0)];
                let p = ports.get(idx.unwrap_or(0)).copied().flatten().ok_or(SdpError::BadLine(n + 1))?;
                let port = if m.rtcp_port == Some(m.port) { p.rtp } else { p.rtcp };
                let has_addr = v.split_whitespace().count() >= 4;
                if has_addr {
                    out.push_str(&format!("a=rtcp:{port} IN {family} {relay}"));
                } else {
                    out.push_str(&format!("a=rtcp:{port}"));
                }
            }
            "a" if is_ice(v) => continue,
            _ => out.push_str(line),
        }
        out.push_str("\r\n");
    }
    Ok(out.into_bytes())
}

/// Make the relay an ICE-lite agent in an anchored SDP (RFC 8839): `a=ice-lite` at session level
/// and, for every active m-line, credentials and the relay's host candidates. Called on the
/// output of [`rewrite`], which has removed the sender's ICE.
pub fn add_ice_lite(
    sdp: &[u8],
    relay: IpAddr,
    ports: &[Option<RelayPorts>],
    c: &crate::media::stun::IceCredentials,
) -> Result<Vec<u8>, SdpError> {
    let parsed = parse(sdp)?;
    let mut out = String::with_capacity(sdp.len() + 256);
    let mut idx: Option<usize> = None;
    let mut lite_done = false;
    let close = |out: &mut String, i: Option<usize>| {
        if let Some(i) = i {
            if let (Some(m), Some(Some(p))) = (parsed.media.get(i), ports.get(i)) {
                if m.port != 0 {
                    let rtcp = (!m.rtcp_mux).then_some(p.rtcp);
                    out.push_str(&crate::media::stun::sdp_lines(c, relay, p.rtp, rtcp));
                }
            }
        }
    };
    for line in lines(sdp)? {
        if line.starts_with("m=") {
            if !lite_done {
                out.push_str("a=ice-lite\r\n");
                lite_done = true;
            }
            close(&mut out, idx);
            idx = Some(idx.map_or(0, |i| i + 1));
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    close(&mut out, idx);
    Ok(out.into_bytes())
}

/// ICE attributes (RFC 8839 §5): removed when anchoring.
fn is_ice(attr: &str) -> bool {
    let name = attr.split(':').next().unwrap_or("");
    matches!(
        name,
        "candidate"
            | "ice-ufrag"
            | "ice-pwd"
            | "ice-options"
            | "ice-lite"
            | "ice-mismatch"
            | "remote-candidates"
            | "end-of-candidates"
            | "ice-pacing"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_media_and_hold() {
        let s = parse(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\nm=audio 0 RTP/AVP 8\r\nc=IN IP4 0.0.0.0\r\na=inactive\r\n").unwrap();
        assert_eq!(s.media.len(), 2);
        assert_eq!(s.media[0].direction, Direction::SendOnly);
        assert!(s.media[0].on_hold());
        assert_eq!(s.media[0].rtpmap, vec![(101, "telephone-event/8000".to_string())]);
        assert!(s.media[1].addr.is_unspecified());
    }

    #[test]
    fn ice_is_removed_and_disabled_streams_need_no_ports() {
        let sdp = b"v=0\r\no=- 1 1 IN IP4 192.168.1.5\r\ns=-\r\nc=IN IP4 192.168.1.5\r\nt=0 0\r\na=ice-lite\r\nm=audio 4000 RTP/AVP 0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=candidate:1 1 UDP 2130706431 192.168.1.5 4000 typ host\r\na=candidate:2 1 UDP 1694498815 198.51.100.7 40000 typ srflx raddr 192.168.1.5 rport 4000\r\na=end-of-candidates\r\na=sendrecv\r\nm=video 0 RTP/AVP 96\r\n";
        let out = rewrite(sdp, "10.0.0.9".parse().unwrap(), &[Some(RelayPorts { rtp: 30000, rtcp: 30001 }), None]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("candidate") && !text.contains("ice-"), "{text}");
        assert!(!text.contains("192.168.1.5") && !text.contains("198.51.100.7"), "no private or reflexive address leaks: {text}");
        assert!(text.contains("m=audio 30000 RTP/AVP 0\r\n") && text.contains("a=sendrecv\r\n") && text.contains("m=video 0 RTP/AVP 96"));
        assert!(rewrite(sdp, "10.0.0.9".parse().unwrap(), &[None, None]).is_err(), "an active stream needs ports");
    }

    #[test]
    fn bad_sdp_is_an_error() {
        assert!(parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n").is_err());
        assert_eq!(parse(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n"), Err(SdpError::NoAddress(0)));
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn ice_lite_lines_are_added_per_active_stream() {
        let sdp = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\nm=video 0 RTP/AVP 96\r\nm=audio 4002 RTP/AVP 0\r\na=rtcp-mux\r\n";
        let ports = [Some(RelayPorts { rtp: 30000, rtcp: 30001 }), None, Some(RelayPorts { rtp: 30004, rtcp: 30005 })];
        let relay: IpAddr = "10.0.0.9".parse().unwrap();
        let anchored = rewrite(sdp, relay, &ports).unwrap();
        let c = crate::media::stun::IceCredentials { ufrag: "abcdEFGH".into(), pwd: "0123456789abcdefghijklmn".into() };
        let out = String::from_utf8(add_ice_lite(&anchored, relay, &ports, &c).unwrap()).unwrap();
        assert_eq!(out.matches("a=ice-lite").count(), 1);
        assert!(out.contains("a=sendrecv\r\na=ice-ufrag:abcdEFGH\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=candidate:1 1 UDP 2130706431 10.0.0.9 30000 typ host\r\na=candidate:1 2 UDP 2130706430 10.0.0.9 30001 typ host\r\na=end-of-candidates\r\nm=video 0"), "{out}");
        assert!(out.contains("a=candidate:1 1 UDP 2130706431 10.0.0.9 30004 typ host\r\na=end-of-candidates\r\n"), "{out}");
        assert!(!out.contains("30005"), "no RTCP candidate with rtcp-mux: {out}");
        let back = parse(out.as_bytes()).unwrap();
        assert_eq!(back.media.len(), 3);
    }
}
