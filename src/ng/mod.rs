//! rtpengine's ng control protocol (docs/ng_control_protocol.md in rtpengine): datagrams of
//! `COOKIE SPACE BENCODED-DICT`. Today: the bencode codec, used by the relay benchmark and the
//! differential tests to drive rtpengine; the ng control plane of Hearken itself builds on it.
//!
//! Not here: sockets (callers own them).

use std::collections::BTreeMap;

pub mod core;

/// A bencode value could not be decoded (the text says where it went wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BencodeError(pub &'static str);

/// A bencode value (BEP 3): integers, byte strings, lists, dictionaries with sorted keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Ben {
    Int(i64),
    Str(Vec<u8>),
    List(Vec<Ben>),
    Dict(BTreeMap<Vec<u8>, Ben>),
}

impl Ben {
    pub fn s(v: &str) -> Ben {
        Ben::Str(v.as_bytes().to_vec())
    }
    pub fn dict(pairs: &[(&str, Ben)]) -> Ben {
        Ben::Dict(pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.clone())).collect())
    }
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Ben::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Ben::Str(s) => {
                out.extend_from_slice(format!("{}:", s.len()).as_bytes());
                out.extend_from_slice(s);
            }
            Ben::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode(out);
                }
                out.push(b'e');
            }
            // BTreeMap: keys come out sorted, as bencode requires.
            Ben::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Ben::Str(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }
    /// Decode one value from the start of `b`; returns it and the bytes used.
    pub fn decode(b: &[u8], depth: usize) -> Result<(Ben, usize), BencodeError> {
        if depth > 32 {
            return Err(BencodeError("bencode nested too deeply"));
        }
        match b.first() {
            Some(b'i') => {
                let end = b.iter().position(|c| *c == b'e').ok_or(BencodeError("bencode int"))?;
                let v = std::str::from_utf8(&b[1..end]).ok().and_then(|s| s.parse().ok()).ok_or(BencodeError("bencode int"))?;
                Ok((Ben::Int(v), end + 1))
            }
            Some(b'l') | Some(b'd') => {
                let is_dict = b[0] == b'd';
                let mut pos = 1;
                let mut list = Vec::new();
                let mut dict = BTreeMap::new();
                loop {
                    match b.get(pos) {
                        None => return Err(BencodeError("bencode: unterminated container")),
                        Some(b'e') => {
                            pos += 1;
                            break;
                        }
                        Some(_) => {
                            let (v, n) = Ben::decode(&b[pos..], depth + 1)?;
                            pos += n;
                            if is_dict {
                                let Ben::Str(k) = v else {
                                    return Err(BencodeError("bencode: dict key is not a string"));
                                };
                                let (val, n) = Ben::decode(&b[pos..], depth + 1)?;
                                pos += n;
                                dict.insert(k, val);
                            } else {
                                list.push(v);
                            }
                        }
                    }
                }
                Ok((if is_dict { Ben::Dict(dict) } else { Ben::List(list) }, pos))
            }
            Some(c) if c.is_ascii_digit() => {
                let colon = b.iter().position(|c| *c == b':').ok_or(BencodeError("bencode str"))?;
                let len: usize =
                    std::str::from_utf8(&b[..colon]).ok().and_then(|s| s.parse().ok()).ok_or(BencodeError("bencode str length"))?;
                let end = (colon + 1).checked_add(len).ok_or(BencodeError("bencode: string length overflows"))?;
                let s = b.get(colon + 1..end).ok_or(BencodeError("bencode: string runs past the end"))?;
                Ok((Ben::Str(s.to_vec()), end))
            }
            _ => Err(BencodeError("bencode: unexpected byte")),
        }
    }
    pub fn get(&self, key: &str) -> Option<&Ben> {
        match self {
            Ben::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }
    pub fn str(&self, key: &str) -> Option<String> {
        match self.get(key) {
            Some(Ben::Str(s)) => Some(String::from_utf8_lossy(s).to_string()),
            _ => None,
        }
    }
}

/// One ng datagram: the cookie and the encoded dictionary.
pub fn datagram(cookie: &str, msg: &Ben) -> Vec<u8> {
    let mut data = format!("{cookie} ").into_bytes();
    msg.encode(&mut data);
    data
}

/// Split an ng datagram into its cookie and decoded value.
pub fn parse_datagram(d: &[u8]) -> Result<(&[u8], Ben), BencodeError> {
    let sp = d.iter().position(|c| *c == b' ').ok_or(BencodeError("ng: no cookie"))?;
    let (v, _) = Ben::decode(&d[sp + 1..], 0)?;
    Ok((&d[..sp], v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let v = Ben::dict(&[("command", Ben::s("ping")), ("n", Ben::Int(-3)), ("l", Ben::List(vec![Ben::s("a")]))]);
        let d = datagram("c1", &v);
        assert_eq!(d, b"c1 d7:command4:ping1:ll1:ae1:ni-3ee".to_vec());
        let (cookie, back) = parse_datagram(&d).unwrap();
        assert_eq!((cookie, back), (&b"c1"[..], v));
        for bad in [&b"c1 i12"[..], b"nocookie", b"c1 x", b"c1 99999999999999999999:a", b"c1 18446744073709551615:a", b"c1 l"] {
            assert!(parse_datagram(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse_datagram(b"c1 d7:command").is_err());
        assert!(parse_datagram(b"c1 di1ei2ee").is_err(), "keys must be strings");
    }
}
