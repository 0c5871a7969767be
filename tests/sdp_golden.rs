//! Golden SDP rewrite cases: every `tests/sdp_golden/NAME.in.sdp` rewritten for a relay at
//! 203.0.113.10 must equal `NAME.out.sdp` with its placeholders filled in ({RELAY}, {RTPn},
//! {RTCPn} for m-line n). Every line the rewrite does not own is expected verbatim.

use hearken::sdp::{parse, rewrite, RelayPorts};
use std::path::Path;

#[test]
fn golden_rewrites() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdp_golden");
    let relay = "203.0.113.10";
    let ports: Vec<RelayPorts> = (0..4).map(|i| RelayPorts { rtp: 30000 + 2 * i, rtcp: 30001 + 2 * i }).collect();
    let mut n = 0;
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".in.sdp"))
        .collect();
    names.sort();
    for name in names {
        let input = std::fs::read(dir.join(&name)).unwrap();
        let mut want = std::fs::read_to_string(dir.join(name.replace(".in.", ".out."))).unwrap();
        want = want.replace("{RELAY}", relay);
        for (i, p) in ports.iter().enumerate() {
            want = want.replace(&format!("{{RTP{i}}}"), &p.rtp.to_string()).replace(&format!("{{RTCP{i}}}"), &p.rtcp.to_string());
        }
        let slots: Vec<Option<RelayPorts>> = ports.iter().copied().map(Some).collect();
        let got = rewrite(&input, relay.parse().unwrap(), &slots).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(String::from_utf8(got.clone()).unwrap(), want, "{name}");
        // The rewrite keeps what the relay reads: codecs, direction, mux, hold.
        let (a, b) = (parse(&input).unwrap(), parse(&got).unwrap());
        for (x, y) in a.media.iter().zip(&b.media) {
            assert_eq!(
                (&x.formats, &x.rtpmap, x.direction, x.rtcp_mux, x.addr.is_unspecified()),
                (&y.formats, &y.rtpmap, y.direction, y.rtcp_mux, y.addr.is_unspecified()),
                "{name}"
            );
        }
        n += 1;
    }
    assert!(n >= 8, "golden cases found: {n}");
}
