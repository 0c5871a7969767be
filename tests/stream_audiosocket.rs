//! Asterisk AudioSocket input (issue 11): two TCP legs of a corpus call — the customer's and the
//! agent's, as two `AudioSocket(uuid,host:port)` applications in the dialplan send them, with
//! UUIDs that differ only in the last bit — framed exactly as Asterisk's res_audiosocket frames
//! them (type, 16-bit big-endian length, payload: UUID first, then 20 ms of 8 kHz signed linear
//! little-endian audio per frame, hang-up last), streamed in real time. Asterisk cannot run here;
//! the framing is the published one. Hearken joins the legs into one call and analyses it within
//! the corpus tolerances; a source outside the allowlist is refused.

mod common;
use common::*;
use hearken::stream::audiosocket::{frame, HANGUP, SLIN8, UUID};
use serde_json::Value;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn two_audiosocket_legs_are_one_analysed_call() {
    let (pbx, agent, as_port) = (free_port(), free_port(), free_port());
    let h = Hearken::start(
        pbx,
        agent,
        &format!("[streams]\naudiosocket_listen = \"127.0.0.1:{as_port}\"\naudiosocket_allow = [\"127.0.0.1\"]\n"),
    );
    // A source outside the allowlist (127.0.0.3) is refused.
    drop(connect_from("127.0.0.3", as_port).expect("connect from 127.0.0.3"));
    wait_for(Duration::from_secs(5), "the stranger refused", || metric(&h.get("/metrics").unwrap(), "hearken_streams_refused_total") >= 1);

    let name = "d02_agent_interrupts";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev").join(name);
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let legs = [(read_leg(&dir.join("customer.wav")), 0x40u8), (read_leg(&dir.join("agent.wav")), 0x41u8)];
    let n = legs.iter().map(|(p, _)| p.len()).max().unwrap() / 160;
    let mut socks: Vec<TcpStream> = legs
        .iter()
        .map(|(_, last)| {
            let mut s = TcpStream::connect(("127.0.0.1", as_port)).unwrap();
            let mut uuid = [0x5au8; 16];
            uuid[15] = *last;
            s.write_all(&frame(UUID, &uuid)).unwrap();
            s
        })
        .collect();
    let t0 = Instant::now();
    for k in 0..n {
        for (i, (pcm, _)) in legs.iter().enumerate() {
            let mut f = [0i16; 160];
            if let Some(src) = pcm.get(k * 160..((k + 1) * 160).min(pcm.len())) {
                f[..src.len()].copy_from_slice(src);
            }
            let bytes: Vec<u8> = f.iter().flat_map(|s| s.to_le_bytes()).collect();
            socks[i].write_all(&frame(SLIN8, &bytes)).unwrap();
        }
        let due = t0 + Duration::from_millis(20 * (k as u64 + 1));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    for s in socks.iter_mut() {
        s.write_all(&frame(HANGUP, &[])).unwrap();
    }
    let rec = latest_record(&h);
    assert_eq!(rec["input"], "audiosocket");
    assert_eq!(rec["reason"], "bye");
    let s = &rec["summary"];
    let want = truth["metrics"]["talk_ratio_agent"].as_f64().unwrap();
    let ratio = assert_meets_corpus(&rec, &truth, "audiosocket");
    let m = h.get("/metrics").unwrap();
    assert_eq!(metric(&m, "hearken_streams_started_total"), 1, "two legs, one call: {m}");
    assert_eq!(metric(&m, "hearken_stream_frames_total"), 2 * n as u64);
    eprintln!("audiosocket: talk ratio {ratio} (truth {want}), interruptions {}", s["interruptions"]);
}
