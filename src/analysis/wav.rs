//! WAV reading for `hearken analyze`: RIFF/WAVE, PCM 16-bit, 8000 Hz, mono or stereo (left =
//! customer, right = agent). Every problem is a clear error, never a panic.
//!
//! Not here: resampling or other formats (convert with `sox in.wav -r 8000 -b 16 out.wav`).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("{path}: cannot read: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}: not a WAV file (no RIFF/WAVE header)")]
    NotWav(String),
    #[error("{0}: truncated (a chunk runs past the end of the file)")]
    Truncated(String),
    #[error("{0}: no `fmt ` chunk")]
    NoFormat(String),
    #[error("{0}: no `data` chunk")]
    NoData(String),
    #[error("{path}: {what} not supported: {detail} (convert with `sox IN -r 8000 -b 16 -e signed-integer OUT.wav`)")]
    Unsupported { path: String, what: &'static str, detail: String },
    #[error("{0}: contains no audio")]
    Empty(String),
}

#[derive(Debug, Clone)]
pub struct Wav {
    pub rate: u32,
    pub channels: u16,
    /// One Vec per channel.
    pub samples: Vec<Vec<i16>>,
}

/// A two-leg call: its name and the [customer, agent] samples.
pub type Call = (String, [Vec<i16>; 2]);

/// Two-leg calls in the corpus layout: every sub-folder of `dir` holding `customer.wav` and
/// `agent.wav` (mono), in name order, as (folder name, [customer, agent] samples).
pub fn read_calls(dir: &Path) -> Result<Vec<Call>, WavError> {
    let entries = std::fs::read_dir(dir).map_err(|e| WavError::Io { path: dir.display().to_string(), source: e })?;
    let mut dirs: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("customer.wav").is_file() && p.join("agent.wav").is_file())
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for d in dirs {
        let mut legs: [Vec<i16>; 2] = Default::default();
        for (leg, f) in legs.iter_mut().zip(["customer.wav", "agent.wav"]) {
            let path = d.join(f);
            let w = read(&path)?;
            if w.channels != 1 {
                return Err(WavError::Unsupported {
                    path: path.display().to_string(),
                    what: "channels",
                    detail: format!("{} (a leg is mono)", w.channels),
                });
            }
            *leg = w.samples.into_iter().next().unwrap_or_default();
        }
        out.push((d.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(), legs));
    }
    Ok(out)
}

pub fn read(path: &Path) -> Result<Wav, WavError> {
    let p = path.display().to_string();
    let b = std::fs::read(path).map_err(|e| WavError::Io { path: p.clone(), source: e })?;
    parse(&b, &p)
}

pub fn parse(b: &[u8], p: &str) -> Result<Wav, WavError> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err(WavError::NotWav(p.into()));
    }
    let mut off = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    let mut data: Option<&[u8]> = None;
    while off + 8 <= b.len() {
        let id = &b[off..off + 4];
        let len = u32::from_le_bytes([b[off + 4], b[off + 5], b[off + 6], b[off + 7]]) as usize;
        let body_start = off + 8;
        let body_end = body_start.checked_add(len).ok_or_else(|| WavError::Truncated(p.into()))?;
        if id == b"data" {
            // A data chunk cut short (or with a streaming length) keeps what is there, whole
            // samples only; a header-only file is an error below.
            data = Some(&b[body_start..body_end.min(b.len())]);
            if body_end > b.len() && len != u32::MAX as usize && len != 0 {
                return Err(WavError::Truncated(p.into()));
            }
            break;
        }
        if body_end > b.len() {
            return Err(WavError::Truncated(p.into()));
        }
        if id == b"fmt " {
            if len < 16 {
                return Err(WavError::Truncated(p.into()));
            }
            let f = &b[body_start..body_end];
            let tag = u16::from_le_bytes([f[0], f[1]]);
            let ch = u16::from_le_bytes([f[2], f[3]]);
            let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
            let bits = u16::from_le_bytes([f[14], f[15]]);
            fmt = Some((tag, ch, rate, bits));
        }
        off = body_end + (len & 1);
    }
    let (tag, ch, rate, bits) = fmt.ok_or_else(|| WavError::NoFormat(p.into()))?;
    let data = data.ok_or_else(|| WavError::NoData(p.into()))?;
    // 1 = PCM, 0xFFFE = WAVE_FORMAT_EXTENSIBLE (PCM subformat assumed when 16-bit).
    if tag != 1 && tag != 0xfffe {
        return Err(WavError::Unsupported { path: p.into(), what: "encoding", detail: format!("format tag {tag} (need PCM)") });
    }
    if bits != 16 {
        return Err(WavError::Unsupported { path: p.into(), what: "sample size", detail: format!("{bits} bits (need 16)") });
    }
    if rate != 8000 {
        return Err(WavError::Unsupported { path: p.into(), what: "sample rate", detail: format!("{rate} Hz (need 8000 Hz)") });
    }
    if ch == 0 || ch > 2 {
        return Err(WavError::Unsupported {
            path: p.into(),
            what: "channel count",
            detail: format!("{ch} (need 1, or 2 = customer left, agent right)"),
        });
    }
    let frame = 2 * ch as usize;
    let n = data.len() / frame;
    if n == 0 {
        return Err(WavError::Empty(p.into()));
    }
    let mut samples = vec![Vec::with_capacity(n); ch as usize];
    for i in 0..n {
        for (c, out) in samples.iter_mut().enumerate() {
            let o = i * frame + c * 2;
            out.push(i16::from_le_bytes([data[o], data[o + 1]]));
        }
    }
    Ok(Wav { rate, channels: ch, samples })
}

/// Write a mono or stereo 16-bit WAV (tests and demos).
pub fn write(path: &Path, rate: u32, channels: &[&[i16]]) -> std::io::Result<()> {
    let n = channels.iter().map(|c| c.len()).max().unwrap_or(0);
    let ch = channels.len() as u16;
    let data_len = (n * 2 * ch as usize) as u32;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&ch.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2 * ch as u32).to_le_bytes());
    b.extend_from_slice(&(2 * ch).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..n {
        for c in channels {
            b.extend_from_slice(&c.get(i).copied().unwrap_or(0).to_le_bytes());
        }
    }
    std::fs::write(path, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.wav");
        write(&f, 8000, &[&[1, 2, 3], &[4, 5, 6]]).unwrap();
        let w = read(&f).unwrap();
        assert_eq!(w.samples, vec![vec![1, 2, 3], vec![4, 5, 6]]);
        let b = std::fs::read(&f).unwrap();
        assert!(matches!(parse(&b[..30], "x"), Err(WavError::Truncated(_))));
        assert!(matches!(parse(b"hello", "x"), Err(WavError::NotWav(_))));
        let mut r16 = b.clone();
        r16[24..28].copy_from_slice(&16000u32.to_le_bytes());
        assert!(parse(&r16, "x").unwrap_err().to_string().contains("16000 Hz"));
        write(&f, 8000, &[&[]]).unwrap();
        assert!(matches!(read(&f), Err(WavError::Empty(_))));
        let mut cut = b.clone();
        cut.truncate(b.len() - 3);
        assert!(matches!(parse(&cut, "x"), Err(WavError::Truncated(_))));
    }
}
