//! Test harness: starts the real `hearken` binary on free loopback ports with a generated config,
//! runs real sipp peers, and reads the status endpoint. Everything binds 127.0.0.1 only.
#![allow(dead_code)]

pub mod baresip;
pub mod kamailio;
pub mod raw_sip;
pub mod rtpengine;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The PBX side (customer leg) runs on this loopback address, Hearken too.
pub const PBX_IP: &str = "127.0.0.1";
/// Agents run on another loopback address, so Hearken tells the sides apart by IP as in a real
/// deployment (TCP source ports are ephemeral).
pub const AGENT_IP: &str = "127.0.0.2";

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A block of `pairs` port pairs for media that is free right now (every port probed), below
/// the kernel's ephemeral range. Blocks handed out in this test binary never overlap; other
/// processes' ports are skipped by probing (the relay also skips pairs it cannot bind).
pub fn media_range(pairs: u16) -> (u16, u16) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let width = pairs as u32 * 2 + 2;
    // Start somewhere different per test binary so consecutive binaries do not reuse ports
    // that may still be in TIME_WAIT-like states in peers.
    let seed = (std::process::id() % 16) * 600;
    for _ in 0..200 {
        let slot = NEXT.fetch_add(width, Ordering::SeqCst);
        let base = 20000 + (seed + slot) % 12000;
        let base = (base & !1) as u16;
        let end = base + width as u16 - 1;
        if end >= 32000 {
            continue;
        }
        let free = (base..=end).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if free {
            return (base, end);
        }
    }
    panic!("no free block of {pairs} RTP port pairs below 32000 on 127.0.0.1");
}

pub fn require(tool: &str) {
    let ok = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "`{tool}` is not installed: run `make test` (scripts/setup.sh installs it)");
}

pub struct Hearken {
    child: Child,
    pub sip_port: u16,
    pub http_port: u16,
    pub dir: tempfile::TempDir,
    pub media: (u16, u16),
}

impl Hearken {
    /// Start Hearken with the PBX at `pbx_port` and the agents' default route at `agent_port`.
    /// `extra` is appended to the config (whole sections only).
    pub fn start(pbx_port: u16, agent_port: u16, extra: &str) -> Hearken {
        Self::start_with(pbx_port, agent_port, media_range(60), "", extra, "")
    }

    /// `route_params` is appended to both routes (e.g. `;transport=tcp`); `media_extra` to the
    /// [media] section.
    pub fn start_with(pbx_port: u16, agent_port: u16, media: (u16, u16), route_params: &str, extra: &str, media_extra: &str) -> Hearken {
        Self::start_with_sip(pbx_port, agent_port, media, route_params, "", extra, media_extra)
    }

    /// `sip_extra` is appended to the [sip] section (e.g. the TLS listener).
    pub fn start_with_sip(
        pbx_port: u16,
        agent_port: u16,
        media: (u16, u16),
        route_params: &str,
        sip_extra: &str,
        extra: &str,
        media_extra: &str,
    ) -> Hearken {
        let dir = tempfile::tempdir().unwrap();
        let sip_port = free_port();
        let http_port = free_port();
        let timeout = if media_extra.contains("rtp_timeout_s") { "" } else { "rtp_timeout_s = 30" };
        let cfg = format!(
            "[sip]\nlisten = \"127.0.0.1:{sip_port}\"\n{sip_extra}\n\
             [pbx]\naddresses = [\"{PBX_IP}\"]\nroute = \"sip:{PBX_IP}:{pbx_port}{route_params}\"\n\
             [agents]\nroute = \"sip:{AGENT_IP}:{agent_port}{route_params}\"\n\
             [media]\nport_min = {}\nport_max = {}\n{timeout}\n{media_extra}\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [log]\nlevel = \"hearken=debug\"\n{extra}",
            media.0, media.1
        );
        let path = dir.path().join("hearken.toml");
        std::fs::write(&path, cfg).unwrap();
        let child = Self::spawn(dir.path(), "hearken.log");
        let h = Hearken { child, sip_port, http_port, dir, media };
        wait_for(Duration::from_secs(20), "hearken /healthz", || h.get("/healthz").is_some());
        h
    }

    /// Hearken on a whole config of the test's own (`sip_port` and `http_port` as it sets them).
    pub fn from_config(cfg: &str, sip_port: u16, http_port: u16, media: (u16, u16)) -> Hearken {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hearken.toml"), cfg).unwrap();
        let child = Self::spawn(dir.path(), "hearken.log");
        let h = Hearken { child, sip_port, http_port, dir, media };
        wait_for(Duration::from_secs(20), "hearken /healthz", || h.get("/healthz").is_some());
        h
    }

    /// Hearken with the SIP proxy off (`sip.enabled = false`): an ng-only media relay.
    pub fn start_ng_only(ng_port: u16, media: (u16, u16)) -> Hearken {
        let dir = tempfile::tempdir().unwrap();
        let (sip_port, http_port) = (free_port(), free_port());
        let cfg = format!(
            "[sip]\nenabled = false\nlisten = \"127.0.0.1:{sip_port}\"\n[ng]\nlisten = \"127.0.0.1:{ng_port}\"\ndelete_delay_s = 0\n\
             [media]\nport_min = {}\nport_max = {}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[log]\nlevel = \"hearken=debug\"\n",
            media.0, media.1
        );
        std::fs::write(dir.path().join("hearken.toml"), cfg).unwrap();
        let child = Self::spawn(dir.path(), "hearken.log");
        let h = Hearken { child, sip_port, http_port, dir, media };
        wait_for(Duration::from_secs(20), "hearken /healthz", || h.get("/healthz").is_some());
        h
    }

    fn spawn(dir: &std::path::Path, log: &str) -> Child {
        let log = std::fs::File::create(dir.join(log)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_hearken"))
            .args(["run", "--config"])
            .arg(dir.join("hearken.toml"))
            .env_remove("HEARKEN_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hearken")
    }

    /// kill -9 the process (no shutdown, nothing flushed), then start it again on the same
    /// config; its log goes on in `hearken.log` (the first run's is kept as `hearken.1.log`).
    pub fn kill9_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
        let _ = std::fs::rename(self.dir.path().join("hearken.log"), self.dir.path().join("hearken.1.log"));
        self.child = Self::spawn(self.dir.path(), "hearken.log");
        wait_for(Duration::from_secs(20), "hearken /healthz after restart", || self.get("/healthz").is_some());
    }

    /// GET a path from the status endpoint; None if it is not answering.
    pub fn get(&self, path: &str) -> Option<String> {
        http_get(self.http_port, path)
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.get("/status").expect("status endpoint")).unwrap()
    }
    pub fn calls(&self) -> Vec<Value> {
        let v: Value = serde_json::from_str(&self.get("/calls").expect("calls endpoint")).unwrap();
        v["calls"].as_array().cloned().unwrap_or_default()
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hearken.log")).unwrap_or_default()
    }
    /// Wait until no call is active and every port pair is back in the pool.
    pub fn wait_idle(&self) {
        wait_for(Duration::from_secs(10), "all calls ended and ports freed", || {
            let s = self.status();
            s["relay"]["active_calls"] == 0 && s["relay"]["port_pairs_in_use"] == 0
        });
    }
}

impl Drop for Hearken {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(body.to_string())
}

pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}");
}

pub fn sipp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp")
}

/// A sipp process. Killed on drop.
pub struct Sipp {
    child: Option<Child>,
    pub name: String,
    pub dir: PathBuf,
}

/// Common sipp arguments: loopback only, no stdin, a free control port, errors traced to a file.
fn sipp_cmd(dir: &Path, scenario: &str, ip: &str, port: u16, args: &[&str]) -> Command {
    require("sipp");
    let mut c = Command::new("sipp");
    if let Some(name) = scenario.strip_prefix("builtin:") {
        c.args(["-sn", name]);
    } else {
        c.arg("-sf").arg(if Path::new(scenario).is_absolute() { PathBuf::from(scenario) } else { sipp_dir().join(scenario) });
    }
    c.args(["-i", ip, "-mi", ip, "-nostdin", "-trace_err", "-trace_msg"])
        .args(["-p", &port.to_string()])
        .args(["-cp", &free_port().to_string()])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null());
    c
}

impl Sipp {
    /// Start a sipp in the background on the agent address (a UAS usually).
    pub fn spawn(dir: &Path, scenario: &str, port: u16, args: &[&str]) -> Sipp {
        Self::spawn_on(dir, scenario, AGENT_IP, port, args)
    }

    pub fn spawn_on(dir: &Path, scenario: &str, ip: &str, port: u16, args: &[&str]) -> Sipp {
        let log = std::fs::File::create(dir.join(format!("sipp-{port}.out"))).unwrap();
        let child = sipp_cmd(dir, scenario, ip, port, args).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start sipp");
        // Give it a moment to bind its socket.
        wait_for(Duration::from_secs(5), "sipp bound", || UdpSocket::bind((ip, port)).is_err() || TcpListener::bind((ip, port)).is_err());
        Sipp { child: Some(child), name: scenario.to_string(), dir: dir.to_path_buf() }
    }

    /// Wait for a background sipp to exit; Err with its output if it failed or overran.
    pub fn wait(mut self, limit: Duration) -> Result<(), String> {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return if st.success() { Ok(()) } else { Err(format!("{} exited with {st}: {}", self.name, logs(&self.dir))) };
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not finish in {limit:?}: {}", self.name, logs(&self.dir)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run sipp to completion on the PBX address (a UAC usually) with a time limit.
pub fn sipp_run(dir: &Path, scenario: &str, port: u16, remote: &str, args: &[&str], limit: Duration) -> Result<Output, String> {
    sipp_run_on(dir, scenario, PBX_IP, port, remote, args, limit)
}

pub fn sipp_run_on(
    dir: &Path,
    scenario: &str,
    ip: &str,
    port: u16,
    remote: &str,
    args: &[&str],
    limit: Duration,
) -> Result<Output, String> {
    let mut c = sipp_cmd(dir, scenario, ip, port, args);
    c.arg(remote).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("start sipp");
    let start = Instant::now();
    loop {
        if let Some(_st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return if out.status.success() {
                Ok(out)
            } else {
                Err(format!("{scenario} failed ({}): {}\n{}", out.status, String::from_utf8_lossy(&out.stderr), logs(dir)))
            };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{scenario} did not finish in {limit:?}: {}", logs(dir)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tail of every sipp error/message log in `dir`, for failure messages.
pub fn logs(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.ends_with("errors.log") || n.ends_with("messages.log") || n.ends_with(".out") {
                let t = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: String = t.chars().rev().take(6000).collect::<Vec<_>>().into_iter().rev().collect();
                out.push_str(&format!("\n==== {n}\n{tail}"));
            }
        }
    }
    out
}

/// Write a scenario generated from a template with `{{KEY}}` substitutions into `dir`.
pub fn scenario(dir: &Path, template: &str, subs: &[(&str, String)]) -> String {
    let mut t = std::fs::read_to_string(sipp_dir().join(template)).unwrap();
    for (k, v) in subs {
        t = t.replace(&format!("{{{{{k}}}}}"), v);
    }
    // Defaults for optional template keys.
    t = t.replace("{{PBX_MEDIA_PORT}}", "[auto_media_port]");
    t = t.replace("{{FORMATS}}", TestCodec::Pcmu.formats());
    t = t.replace("{{RTPMAPS}}", TestCodec::Pcmu.rtpmaps());
    let path = dir.join(template);
    std::fs::write(&path, t).unwrap();
    path.to_string_lossy().to_string()
}

/// Debian's sipp sample: one PCMA stream of 236 packets.
pub const G711A_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

/// The UAS and UAC scenarios of a call in which the PBX side (sipp) plays [`G711A_PCAP`] and
/// the agent side announces `media_port`; the call lasts `hold_ms` after its ACK.
pub fn pcap_call_scenarios(dir: &Path, media_port: u16, hold_ms: u64) -> (String, String) {
    assert!(Path::new(G711A_PCAP).exists(), "{G711A_PCAP} missing: install sip-tester (make test does)");
    std::fs::create_dir_all(dir.join("pcap")).unwrap();
    let _ = std::os::unix::fs::symlink(G711A_PCAP, dir.join("pcap/g711a.pcap"));
    let uas = scenario(dir, "uas_call.xml", &[("MEDIA_PORT", media_port.to_string())]);
    let uac = scenario(
        dir,
        "uac_call.xml",
        &[
            ("AGENT", "agent9".into()),
            ("PLAY", "<nop><action><exec play_pcap_audio=\"pcap/g711a.pcap\"/></action></nop>".into()),
            ("HOLD_MS", hold_ms.to_string()),
        ],
    );
    (uas, uac)
}

/// Read a mono WAV leg.
pub fn read_leg(p: &Path) -> Vec<i16> {
    hearken::analysis::wav::read(p).unwrap().samples.remove(0)
}

/// Set up a call with sipp through Hearken, replay both legs as PCMU RTP at 4x, hang up, and
/// return Hearken with the call's record.
pub fn call_with_audio(cust: &[i16], agent_pcm: &[i16], extra_cfg: &str) -> (Hearken, serde_json::Value) {
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent, extra_cfg);
    let rec = call_with_audio_on(&h, pbx, agent, cust, agent_pcm).1;
    (h, rec)
}

/// RTP of a replayed call: what each side sent, and what each side received from the relay.
#[derive(Default)]
pub struct Capture {
    pub sent_by_pbx: Vec<Vec<u8>>,
    pub sent_by_agent: Vec<Vec<u8>>,
    pub received_by_pbx: Vec<Vec<u8>>,
    pub received_by_agent: Vec<Vec<u8>>,
}

fn receive_all(sock: UdpSocket, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                got.push(buf[..n].to_vec());
            }
        }
        got
    })
}

/// How a replayed call's audio goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestCodec {
    /// PCMU, payload type 0 (the SDP offers PCMA, PCMU and telephone-event).
    Pcmu,
    /// Opus, dynamic payload type 111 (`opus/48000/2`, 48 kHz RTP clock), encoded from the
    /// 8 kHz leg by libopus.
    Opus,
}

impl TestCodec {
    pub fn formats(self) -> &'static str {
        match self {
            TestCodec::Pcmu => "8 0 101",
            TestCodec::Opus => "111 101",
        }
    }

    pub fn rtpmaps(self) -> &'static str {
        match self {
            TestCodec::Pcmu => "a=rtpmap:8 PCMA/8000\n      a=rtpmap:0 PCMU/8000\n      a=rtpmap:101 telephone-event/8000",
            TestCodec::Opus => "a=rtpmap:111 opus/48000/2\n      a=fmtp:111 useinbandfec=1\n      a=rtpmap:101 telephone-event/8000",
        }
    }
}

/// Per leg: 20 ms of PCM in, one RTP payload out, with the payload type and timestamp step.
struct LegEncoder {
    codec: TestCodec,
    opus: Option<opus::Encoder>,
}

impl LegEncoder {
    fn new(codec: TestCodec) -> Self {
        let opus = (codec == TestCodec::Opus).then(|| opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip).unwrap());
        LegEncoder { codec, opus }
    }

    /// (payload type, timestamp units per 20 ms, payload)
    fn encode(&mut self, pcm: &[i16]) -> (u8, u32, Vec<u8>) {
        match self.codec {
            TestCodec::Pcmu => (0, 160, pcm.iter().map(|&s| hearken::codec::g711::encode_ulaw(s)).collect()),
            TestCodec::Opus => (111, 960, self.opus.as_mut().unwrap().encode_vec(pcm, 1500).unwrap()),
        }
    }
}

/// The same on an already running Hearken (whose PBX and agent ports are `pbx`, `agent`).
pub fn call_with_audio_on(h: &Hearken, pbx: u16, agent: u16, cust: &[i16], agent_pcm: &[i16]) -> (Capture, serde_json::Value) {
    call_with_codec_on(h, pbx, agent, cust, agent_pcm, TestCodec::Pcmu)
}

/// The same with the legs' audio sent in `codec` (negotiated in the SDP of both sides).
pub fn call_with_codec_on(
    h: &Hearken,
    pbx: u16,
    agent: u16,
    cust: &[i16],
    agent_pcm: &[i16],
    codec: TestCodec,
) -> (Capture, serde_json::Value) {
    call_through(h, h.sip_port, pbx, agent, cust, agent_pcm, codec)
}

/// A replayed corpus call whose SIP goes to `sip_port` (Hearken's own proxy, or a Kamailio
/// that drives Hearken over ng) from the PBX at `pbx` to the agent at `agent`.
pub fn call_through(
    h: &Hearken,
    sip_port: u16,
    pbx: u16,
    agent: u16,
    cust: &[i16],
    agent_pcm: &[i16],
    codec: TestCodec,
) -> (Capture, serde_json::Value) {
    let records = |h: &Hearken| -> usize {
        let v: serde_json::Value = serde_json::from_str(&h.get("/records").unwrap_or_default()).unwrap_or_default();
        v["records"].as_array().map_or(0, |a| a.len())
    };
    let before = records(h);
    let dir = tempfile::tempdir().unwrap();
    let pbx_media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let agent_media = UdpSocket::bind((AGENT_IP, 0)).unwrap();
    let sdp_codec = [("FORMATS", codec.formats().to_string()), ("RTPMAPS", codec.rtpmaps().to_string())];
    let uas = scenario(
        dir.path(),
        "uas_call.xml",
        &[("MEDIA_PORT", agent_media.local_addr().unwrap().port().to_string()), sdp_codec[0].clone(), sdp_codec[1].clone()],
    );
    let call_s = cust.len() as f64 / 8000.0;
    let hold_ms = (call_s / 4.0 * 1000.0) as u64 + 4000;
    let uac = scenario(
        dir.path(),
        "uac_call.xml",
        &[
            ("AGENT", "agent1".into()),
            ("PLAY", String::new()),
            ("HOLD_MS", hold_ms.to_string()),
            ("PBX_MEDIA_PORT", pbx_media.local_addr().unwrap().port().to_string()),
            sdp_codec[0].clone(),
            sdp_codec[1].clone(),
        ],
    );
    let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", "1"]);
    let remote = format!("127.0.0.1:{sip_port}");
    let d = dir.path().to_path_buf();
    let uac = std::thread::spawn(move || sipp_run(&d, &uac, pbx, &remote, &["-m", "1"], Duration::from_secs(120)));
    // Wait for the answer: both legs announced, relay ports known.
    let mut ports = (0u16, 0u16);
    wait_for(Duration::from_secs(10), "call up", || {
        let calls = h.calls();
        if let Some(c) = calls.first() {
            let s = &c["streams"][0];
            ports = (s["customer_port"].as_u64().unwrap_or(0) as u16, s["agent_port"].as_u64().unwrap_or(0) as u16);
        }
        let log = h.log();
        ports.0 != 0 && (log.contains("call answered") || log.contains("ng call answered"))
    });
    // Replay both legs at 4x: one 20 ms packet per leg every 5 ms.
    let start = Instant::now();
    let n = cust.len().max(agent_pcm.len()) / 160;
    let mut cap = Capture::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rx_pbx = receive_all(pbx_media.try_clone().unwrap(), stop.clone());
    let rx_agent = receive_all(agent_media.try_clone().unwrap(), stop.clone());
    let mut encoders = [LegEncoder::new(codec), LegEncoder::new(codec)];
    for k in 0..n {
        for (i, (pcm, sock, port, ssrc)) in
            [(cust, &pbx_media, ports.0, 0x1111), (agent_pcm, &agent_media, ports.1, 0x2222)].into_iter().enumerate()
        {
            let mut frame = [0i16; 160];
            if let Some(src) = pcm.get(k * 160..(k * 160 + 160).min(pcm.len())) {
                frame[..src.len()].copy_from_slice(src);
            }
            let (pt, step, payload) = encoders[i].encode(&frame);
            let pkt = hearken::rtp::build(pt, k as u16, k as u32 * step, ssrc, &payload);
            sock.send_to(&pkt, ("127.0.0.1", port)).unwrap();
            if i == 0 {
                cap.sent_by_pbx.push(pkt);
            } else {
                cap.sent_by_agent.push(pkt);
            }
        }
        let due = start + Duration::from_micros(5000 * (k as u64 + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    cap.received_by_pbx = rx_pbx.join().unwrap();
    cap.received_by_agent = rx_agent.join().unwrap();
    uac.join().unwrap().unwrap_or_else(|e| panic!("{e}\n{}", h.log()));
    uas.wait(Duration::from_secs(10)).unwrap();
    let mut rec = serde_json::Value::Null;
    wait_for(Duration::from_secs(30), "call record", || {
        let list: serde_json::Value = serde_json::from_str(&h.get("/records").unwrap_or_default()).unwrap_or_default();
        let Some(id) = list["records"].as_array().and_then(|a| a.get(before)).and_then(|r| r["id"].as_u64()) else { return false };
        match h.get(&format!("/records/{id}")) {
            Some(b) => {
                rec = serde_json::from_str(&b).unwrap();
                true
            }
            None => false,
        }
    });
    let s = h.status();
    assert_eq!(s["relay"]["tap_dropped"], 0, "{s}");
    (cap, rec)
}

/// A counter's or gauge's value in a Prometheus text exposition (0 when absent).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Wait for the newest call record on `h` and return it.
pub fn latest_record(h: &Hearken) -> serde_json::Value {
    let mut rec = serde_json::Value::Null;
    wait_for(Duration::from_secs(30), "a call record", || {
        let list: serde_json::Value = serde_json::from_str(&h.get("/records").unwrap_or_default()).unwrap_or_default();
        // The newest (the list is oldest first), by uid: call ids start again after a restart.
        match list["records"].as_array().and_then(|a| a.last()).and_then(|r| r["uid"].as_str()) {
            Some(uid) => {
                rec = serde_json::from_str(&h.get(&format!("/records/{uid}")).unwrap()).unwrap();
                true
            }
            None => false,
        }
    });
    rec
}

/// A record's talk ratio within 0.03 of the corpus truth and its interruption counts equal to
/// the truth's (the corpus tolerances); returns the ratio for the report line.
pub fn assert_meets_corpus(rec: &serde_json::Value, truth: &serde_json::Value, what: &str) -> f64 {
    let (s, t) = (&rec["summary"], &truth["metrics"]);
    let (ratio, want) = (s["talk_ratio_agent"].as_f64().unwrap(), t["talk_ratio_agent"].as_f64().unwrap());
    assert!((ratio - want).abs() <= 0.03, "{what}: talk ratio {ratio} vs truth {want}");
    for k in ["by_agent", "by_customer"] {
        assert_eq!(s["interruptions"][k], t["interruptions"][k], "{what}: interruptions {k}");
    }
    ratio
}

/// A corpus call: its truth and both legs' 8 kHz samples (customer, agent), and its length in
/// 20 ms frames.
pub fn corpus_call(name: &str) -> (serde_json::Value, Vec<i16>, Vec<i16>, usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev").join(name);
    let truth = serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let (c, a) = (read_leg(&dir.join("customer.wav")), read_leg(&dir.join("agent.wav")));
    let n = c.len().max(a.len()).div_ceil(160);
    (truth, c, a, n)
}

/// Frame `k` (20 ms, 160 samples, zero-padded past the end) of a leg.
pub fn frame_of(pcm: &[i16], k: usize) -> [i16; 160] {
    let mut f = [0i16; 160];
    if let Some(src) = pcm.get((k * 160).min(pcm.len())..((k + 1) * 160).min(pcm.len())) {
        f[..src.len()].copy_from_slice(src);
    }
    f
}

/// Real time: wait until `ms` after `t0`.
pub fn pace(t0: std::time::Instant, ms: u64) {
    if let Some(d) = (t0 + Duration::from_millis(ms)).checked_duration_since(std::time::Instant::now()) {
        std::thread::sleep(d);
    }
}

/// A blocking TCP connection to 127.0.0.1:`port` from the loopback source address `src_ip`
/// (another "host" on loopback).
pub fn connect_from(src_ip: &str, port: u16) -> Option<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let st = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().ok()?;
        s.bind(format!("{src_ip}:0").parse().ok()?).ok()?;
        s.connect(format!("127.0.0.1:{port}").parse().ok()?).await.ok()?.into_std().ok()
    })?;
    st.set_nonblocking(false).ok()?;
    Some(st)
}
