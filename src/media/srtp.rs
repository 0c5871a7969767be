//! SDES-SRTP (RFC 4568 keys in `a=crypto`, RFC 3711 packets) for analysis: the relay forwards
//! SRTP untouched; the tapped copy of a packet is decrypted here, off the forwarding path, with
//! the key its sender announced, so encrypted calls are measured like plain ones.
//!
//! Which key: in SDES each side's `a=crypto` line carries the key *it sends with*. The offer may
//! list several lines; the answer picks one tag and gives its own key. [`SdesKeys::learn`]
//! follows the offer/answer pair to the key each party uses.
//!
//! Not here: DTLS-SRTP (keys are negotiated in a handshake between the parties; those legs are
//! forwarded and counted, not analysed), encrypting (nothing is ever mixed into SRTP), MKI.

use crate::call::Party;
use crate::sdp::Crypto;
use base64::Engine;
use rtc_srtp::context::Context;
use rtc_srtp::protection_profile::ProtectionProfile;

/// One party's sending key, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesKey {
    pub suite: String,
    /// Master key then master salt.
    pub key_salt: Vec<u8>,
}

impl std::fmt::Debug for SdesKey {
    // Keys are secrets: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SdesKey({}, {} bytes)", self.suite, self.key_salt.len())
    }
}

/// The profile and key/salt lengths of an SDES crypto suite (RFC 4568 §6.2, RFC 6188, RFC 7714).
fn profile(suite: &str) -> Option<(ProtectionProfile, usize, usize)> {
    Some(match suite {
        "AES_CM_128_HMAC_SHA1_80" => (ProtectionProfile::Aes128CmHmacSha1_80, 16, 14),
        "AES_CM_128_HMAC_SHA1_32" => (ProtectionProfile::Aes128CmHmacSha1_32, 16, 14),
        "AES_256_CM_HMAC_SHA1_80" | "AES_CM_256_HMAC_SHA1_80" => (ProtectionProfile::Aes256CmHmacSha1_80, 32, 14),
        "AES_256_CM_HMAC_SHA1_32" | "AES_CM_256_HMAC_SHA1_32" => (ProtectionProfile::Aes256CmHmacSha1_32, 32, 14),
        "AEAD_AES_128_GCM" => (ProtectionProfile::AeadAes128Gcm, 16, 12),
        "AEAD_AES_256_GCM" => (ProtectionProfile::AeadAes256Gcm, 32, 12),
        _ => return None,
    })
}

impl SdesKey {
    /// Decode a crypto line; None for an unknown suite, an MKI, or a key of the wrong length.
    pub fn from_crypto(c: &Crypto) -> Option<SdesKey> {
        let (_, k, s) = profile(&c.suite)?;
        if c.mki {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD.decode(c.key_b64.trim()).ok()?;
        (raw.len() == k + s).then(|| SdesKey { suite: c.suite.clone(), key_salt: raw })
    }
}

/// The SDES keys of one stream as the offer/answer settled them: what each party sends with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdesKeys {
    /// The crypto lines each party last announced.
    announced: [Vec<Crypto>; 2],
    /// The key each party sends with (decided once the answer chose a tag).
    pub sending: [Option<SdesKey>; 2],
}

impl SdesKeys {
    /// `party`'s latest SDP carried `a=crypto`.
    pub fn announced_by(&self, party: Party) -> bool {
        !self.announced[party.idx()].is_empty()
    }
    /// `party` announced these crypto lines (its offer or answer).
    pub fn learn(&mut self, party: Party, lines: &[Crypto]) {
        self.announced[party.idx()] = lines.to_vec();
        let other = party.other();
        // An answer has one line; its tag selects the offerer's line (RFC 4568 §5.1.2).
        if let [answer] = lines {
            if let Some(offered) = self.announced[other.idx()].iter().find(|c| c.tag == answer.tag) {
                self.sending[other.idx()] = SdesKey::from_crypto(offered);
            }
        }
        // Until an answer says otherwise, a party sends with its first usable line.
        self.sending[party.idx()] = lines.iter().find_map(SdesKey::from_crypto);
        if lines.is_empty() {
            self.sending[party.idx()] = None;
        }
    }
}

/// Why a tapped SRTP packet was not analysed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpDrop {
    /// No SDES key for this party (DTLS-SRTP, or no usable `a=crypto`).
    NoKey,
    /// Authentication or decryption failed (wrong key, corrupt packet, replay).
    Failed,
}

/// Decrypts one party's SRTP packets.
pub struct SrtpRx {
    key: SdesKey,
    ctx: Context,
}

impl SrtpRx {
    pub fn new(key: &SdesKey) -> Option<SrtpRx> {
        let (profile, k, _) = profile(&key.suite)?;
        let provider = rtc_srtp::crypto::default_provider().ok()?;
        let (master, salt) = key.key_salt.split_at(k);
        // No replay protection: the relay already forwarded the packet; analysis only reads it.
        let ctx = Context::new(master, salt, profile, None, None, provider.crypto()).ok()?;
        Some(SrtpRx { key: key.clone(), ctx })
    }
    pub fn key(&self) -> &SdesKey {
        &self.key
    }
    /// The plain RTP packet of an SRTP packet.
    pub fn decrypt(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpDrop> {
        self.ctx.decrypt_rtp(packet).map(|b| b.to_vec()).map_err(|_| SrtpDrop::Failed)
    }
}

impl std::fmt::Debug for SrtpRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrtpRx({:?})", self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(tag: u32, suite: &str, key: &[u8]) -> Crypto {
        Crypto { tag, suite: suite.into(), key_b64: base64::engine::general_purpose::STANDARD.encode(key), mki: false }
    }

    #[test]
    fn the_answer_selects_the_offerers_key() {
        let (k1, k2, k3) = ([1u8; 30], [2u8; 30], [3u8; 30]);
        let mut keys = SdesKeys::default();
        keys.learn(Party::Customer, &[line(1, "AES_CM_128_HMAC_SHA1_80", &k1), line(2, "AES_CM_128_HMAC_SHA1_32", &k2)]);
        keys.learn(Party::Agent, &[line(2, "AES_CM_128_HMAC_SHA1_32", &k3)]);
        assert_eq!(keys.sending[0].as_ref().unwrap().key_salt, k2.to_vec(), "the offerer sends with the chosen tag's key");
        assert_eq!(keys.sending[1].as_ref().unwrap().key_salt, k3.to_vec());
        assert!(SdesKey::from_crypto(&line(1, "AES_CM_128_HMAC_SHA1_80", &[0u8; 29])).is_none(), "wrong length");
        assert!(SdesKey::from_crypto(&line(1, "F8_128_HMAC_SHA1_80", &k1)).is_none(), "unsupported suite");
        assert!(format!("{:?}", keys).contains("30 bytes") && !format!("{:?}", keys.sending[0]).contains("[1,"));
    }

    #[test]
    fn decrypts_what_a_sender_encrypted() {
        let key = SdesKey { suite: "AES_CM_128_HMAC_SHA1_80".into(), key_salt: (0..30).collect() };
        let provider = rtc_srtp::crypto::default_provider().unwrap();
        let mut tx =
            Context::new(&key.key_salt[..16], &key.key_salt[16..], ProtectionProfile::Aes128CmHmacSha1_80, None, None, provider.crypto())
                .unwrap();
        let plain = crate::rtp::build(0, 7, 1120, 0x1234, &[0x55; 160]);
        let srtp = tx.encrypt_rtp(&plain).unwrap().to_vec();
        assert_ne!(&srtp[12..172], &plain[12..], "payload encrypted");
        let mut rx = SrtpRx::new(&key).unwrap();
        assert_eq!(rx.decrypt(&srtp).unwrap(), plain);
        let mut bad = srtp.clone();
        bad[20] ^= 1;
        assert_eq!(rx.decrypt(&bad), Err(SrtpDrop::Failed), "tampered packets fail authentication");
    }
}
