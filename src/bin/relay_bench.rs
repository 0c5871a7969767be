//! `relay-bench`: Hearken's RTP relay against rtpengine (userspace) on identical traffic.
//!
//! One run, two phases, never at the same time:
//! 1. Hearken: start `hearken run` on a temporary config, set up N calls through it with real SIP
//!    over UDP (the bench plays the PBX and the agents), then send RTP both ways.
//! 2. rtpengine: start it with `table = -1` (userspace forwarding), create the same N sessions
//!    with its ng control protocol (bencode over UDP), then send the same RTP.
//!
//! Traffic: per call one media socket per side, each sending 160-byte PCMU payloads at 50 packets/s
//! to the relay, so 100 packets/s per call go into the relay. Every payload carries the send time
//! (monotonic nanoseconds since the bench started) and a sequence number; the receiving socket on
//! the other side computes the one-way latency through the relay on the same clock.
//!
//! Measured per relay: delivered/sent (loss), latency p50/p99/max, and the relay process's CPU
//! time (utime + stime from /proc/PID/stat) over the traffic window, reported as forwarded
//! packets per CPU-second. Everything binds 127.0.0.1; every wait is bounded.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::time::{sleep_until, timeout_at, Instant as TInstant};

const LOCALHOST: &str = "127.0.0.1";
const PTIME_MS: u64 = 20;
const PACKETS_PER_S: u64 = 1000 / PTIME_MS;
const PAYLOAD_LEN: usize = 160;
/// After the last packet is sent, receivers keep listening this long.
const GRACE: Duration = Duration::from_secs(1);
/// With the sessions set up and before traffic, the relay's idle CPU is measured this long.
const IDLE_WINDOW: Duration = Duration::from_secs(2);

/// Hearken vs rtpengine (userspace) on identical RTP traffic over loopback.
#[derive(Parser, Debug, Clone)]
#[command(about, long_about = None)]
struct Args {
    /// Concurrent calls (each: two legs, 50 packets/s each way).
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// Seconds of traffic per relay.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The hearken binary (default: `hearken` next to this binary).
    #[arg(long)]
    hearken: Option<PathBuf>,
    /// The rtpengine binary.
    #[arg(long, default_value = "/usr/bin/rtpengine")]
    rtpengine: PathBuf,
    /// Measure Hearken only.
    #[arg(long)]
    skip_rtpengine: bool,
    /// Run the rtpengine phase before the Hearken phase (to check for order effects).
    #[arg(long)]
    rtpengine_first: bool,
    /// Keep the temporary directory (configs and relay logs) after the run.
    #[arg(long)]
    keep_workdir: bool,
    /// Set Hearken's calls up through its ng control plane (the same offer/answer commands
    /// rtpengine gets) instead of SIP through its proxy.
    #[arg(long)]
    hearken_ng: bool,
}

// ---------------------------------------------------------------------------------------------
// Clock and small helpers

static START: OnceLock<Instant> = OnceLock::new();

/// Monotonic nanoseconds since the bench started: the clock in every payload.
fn now_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::new(LOCALHOST.parse().expect("literal"), port)
}

/// A port free for UDP (and TCP when `tcp`) on 127.0.0.1 right now.
fn free_port(tcp: bool) -> Result<u16> {
    for _ in 0..50 {
        let u = std::net::UdpSocket::bind(local(0))?;
        let port = u.local_addr()?.port();
        if !tcp || std::net::TcpListener::bind(local(port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on {LOCALHOST}")
}

/// Clock ticks per second for /proc/PID/stat (`getconf CLK_TCK`; 100 if that fails).
fn clk_tck() -> (u64, bool) {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .map_or((100, true), |t| (t, false))
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    hearken::sys::stat_ticks(&stat).map(|(_, t)| t).ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))
}

/// utime + stime of the threads of `pid` whose name starts with `prefix` (Hearken names its
/// analysis thread `hearken-analysis` and its ASR workers `hearken-asr-N`).
fn thread_ticks(pid: u32, prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut sum = 0;
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        match hearken::sys::stat_ticks(&stat) {
            Some((name, ticks)) if name.starts_with(prefix) => sum += ticks,
            _ => {}
        }
    }
    sum
}

/// Busy clock ticks of the whole machine (all cores) from /proc/stat: user, nice, system, irq,
/// softirq, steal.
fn machine_busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().filter(|l| l.starts_with("cpu ")).ok_or_else(|| anyhow!("odd /proc/stat"))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Ok(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// CPU seconds `pid` uses over `d` while the sessions exist but no traffic flows.
async fn idle_cpu(pid: u32, d: Duration, tck: u64) -> Result<f64> {
    let c0 = cpu_ticks(pid)?;
    tokio::time::sleep(d).await;
    Ok((cpu_ticks(pid)? - c0) as f64 / tck as f64)
}

fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// A relay process: killed (and reaped) when dropped, so errors and Ctrl-C clean up too.
struct ChildGuard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Result<ChildGuard> {
        let out = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        Ok(ChildGuard { name, child, log })
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn check_alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited ({st}); last log lines:\n{}", self.name, tail(&self.log, 20));
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Minimal SIP message reading (independent of Hearken's parser)

#[derive(Debug, Clone)]
struct Sip {
    first: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    raw: String,
}

fn long_name(n: &str) -> String {
    let l = n.trim().to_ascii_lowercase();
    match l.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        _ => return l,
    }
    .to_string()
}

impl Sip {
    fn parse(buf: &[u8]) -> Option<Sip> {
        let raw = String::from_utf8_lossy(buf).to_string();
        let split = raw.find("\r\n\r\n")?;
        let head = &raw[..split];
        let mut lines = head.split("\r\n");
        let first = lines.next()?.to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        for l in lines {
            if l.starts_with([' ', '\t']) {
                // Folded continuation line.
                if let Some(h) = headers.last_mut() {
                    h.1.push(' ');
                    h.1.push_str(l.trim());
                }
                continue;
            }
            let (n, v) = l.split_once(':')?;
            headers.push((long_name(n), v.trim().to_string()));
        }
        let body_start = split + 4;
        let mut body = buf.get(body_start..).unwrap_or_default().to_vec();
        if let Some(len) = headers.iter().find(|h| h.0 == "content-length").and_then(|h| h.1.parse::<usize>().ok()) {
            body.truncate(len);
        }
        Some(Sip { first, headers, body, raw })
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.0 == name).map(|h| h.1.as_str())
    }
    /// Every header line with this name, in order (values not split).
    fn lines(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|h| h.0 == name).map(|h| h.1.as_str()).collect()
    }
    /// Every comma-separated value of the headers with this name, in order.
    fn values(&self, name: &str) -> Vec<String> {
        self.lines(name).into_iter().flat_map(split_commas).collect()
    }
    fn status(&self) -> Option<u16> {
        self.first.strip_prefix("SIP/2.0 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok())
    }
    fn method(&self) -> Option<&str> {
        if self.status().is_some() {
            None
        } else {
            self.first.split(' ').next()
        }
    }
    fn call_id(&self) -> &str {
        self.get("call-id").unwrap_or("")
    }
    fn cseq_method(&self) -> &str {
        self.get("cseq").and_then(|c| c.split_whitespace().nth(1)).unwrap_or("")
    }
    /// The first line and headers, for error reports.
    fn head(&self) -> &str {
        self.raw.split("\r\n\r\n").next().unwrap_or("")
    }
}

/// Split a header value on commas outside `<...>` and quotes.
fn split_commas(v: &str) -> Vec<String> {
    let (mut out, mut cur, mut angle, mut quote) = (Vec::new(), String::new(), false, false);
    for ch in v.chars() {
        match ch {
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            '"' => quote = !quote,
            ',' if !angle && !quote => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn sdp_body(session_id: usize, media_port: u16) -> String {
    format!(
        "v=0\r\no=- {session_id} 1 IN IP4 {LOCALHOST}\r\ns=relay-bench\r\nc=IN IP4 {LOCALHOST}\r\nt=0 0\r\n\
         m=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The RTP port an SDP body tells its receiver to send to (first m-line).
fn sdp_port(body: &[u8]) -> Result<SocketAddr> {
    let s = hearken::sdp::parse(body).map_err(|e| anyhow!("bad SDP from relay: {e}"))?;
    let m = s.media.first().ok_or_else(|| anyhow!("SDP from relay has no m-line"))?;
    if m.port == 0 {
        bail!("SDP from relay has port 0");
    }
    Ok(SocketAddr::new(m.addr, m.port))
}

// ---------------------------------------------------------------------------------------------
// Bencode (rtpengine's ng protocol)

use hearken::ng::Ben;

/// rtpengine's ng control channel: `COOKIE SPACE BENCODED-DICT` datagrams.
struct Ng {
    sock: UdpSocket,
    to: SocketAddr,
    next: u64,
}

impl Ng {
    async fn new(to: SocketAddr) -> Result<Ng> {
        Ok(Ng { sock: UdpSocket::bind(local(0)).await?, to, next: 1 })
    }
    /// Send a command and wait for the reply with the same cookie (3 tries, 1 s each).
    async fn call(&mut self, msg: &Ben) -> Result<Ben> {
        let cookie = format!("rb{}", self.next);
        self.next += 1;
        let mut data = format!("{cookie} ").into_bytes();
        msg.encode(&mut data);
        let mut buf = vec![0u8; 65536];
        for _ in 0..3 {
            self.sock.send_to(&data, self.to).await?;
            let deadline = TInstant::now() + Duration::from_secs(1);
            while let Ok(r) = timeout_at(deadline, self.sock.recv_from(&mut buf)).await {
                let (n, _) = r?;
                let reply = &buf[..n];
                let Some(sp) = reply.iter().position(|c| *c == b' ') else {
                    continue;
                };
                if &reply[..sp] != cookie.as_bytes() {
                    continue;
                }
                let (v, _) = Ben::decode(&reply[sp + 1..], 0)?;
                return Ok(v);
            }
        }
        bail!("rtpengine did not answer ng command (cookie {cookie})")
    }
    async fn ok(&mut self, msg: &Ben) -> Result<Ben> {
        let r = self.call(msg).await?;
        match r.str("result").as_deref() {
            Some("ok") => Ok(r),
            other => bail!("rtpengine answered result={other:?}, error-reason={:?}", r.str("error-reason")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Media: the sockets of one call, the paced sender and the receivers

/// One call's media: the PBX-side and agent-side sockets and where each must send.
struct CallMedia {
    pbx: Arc<UdpSocket>,
    agent: Arc<UdpSocket>,
    /// Relay address the PBX side sends to (from the SDP the relay gave the PBX).
    pbx_to: SocketAddr,
    /// Relay address the agent side sends to (from the SDP the relay gave the agent).
    agent_to: SocketAddr,
}

struct MediaPair {
    pbx: Arc<UdpSocket>,
    agent: Arc<UdpSocket>,
}

impl MediaPair {
    async fn bind() -> Result<MediaPair> {
        Ok(MediaPair { pbx: Arc::new(UdpSocket::bind(local(0)).await?), agent: Arc::new(UdpSocket::bind(local(0)).await?) })
    }
    fn ports(&self) -> Result<(u16, u16)> {
        Ok((self.pbx.local_addr()?.port(), self.agent.local_addr()?.port()))
    }
}

#[derive(Default)]
struct RecvStats {
    received: u64,
    duplicates: u64,
    foreign: u64,
    lat_us: Vec<u32>,
}

/// Payload: send time (ns, 8 bytes) | call (4) | sequence (4) | direction (1) | PCMU silence.
fn payload(ts: u64, call: u32, seq: u32, dir: u8) -> [u8; PAYLOAD_LEN] {
    let mut p = [0xffu8; PAYLOAD_LEN];
    p[0..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&call.to_be_bytes());
    p[12..16].copy_from_slice(&seq.to_be_bytes());
    p[16] = dir;
    p
}

/// Receive on one socket until `deadline`; `dir` is the direction expected here
/// (0 = PBX→agent, arriving on the agent socket; 1 = agent→PBX, on the PBX socket).
async fn receiver(sock: Arc<UdpSocket>, call: u32, dir: u8, expected: usize, deadline: TInstant) -> RecvStats {
    let mut st = RecvStats { lat_us: Vec::with_capacity(expected), ..Default::default() };
    let mut seen = vec![false; expected];
    let mut buf = [0u8; 2048];
    while let Ok(r) = timeout_at(deadline, sock.recv_from(&mut buf)).await {
        let Ok((n, _)) = r else { continue };
        let now = now_ns();
        let Ok(h) = hearken::rtp::parse_rtp(&buf[..n]) else {
            st.foreign += 1;
            continue;
        };
        let p = &buf[h.payload_offset..h.payload_offset + h.payload_len];
        if p.len() != PAYLOAD_LEN {
            st.foreign += 1;
            continue;
        }
        let ts = u64::from_be_bytes(p[0..8].try_into().expect("8 bytes"));
        let c = u32::from_be_bytes(p[8..12].try_into().expect("4 bytes"));
        let seq = u32::from_be_bytes(p[12..16].try_into().expect("4 bytes")) as usize;
        if c != call || p[16] != dir || seq >= expected {
            st.foreign += 1;
            continue;
        }
        if seen[seq] {
            st.duplicates += 1;
            continue;
        }
        seen[seq] = true;
        st.received += 1;
        st.lat_us.push((now.saturating_sub(ts) / 1000).min(u32::MAX as u64) as u32);
    }
    st
}

#[derive(Default)]
struct SendStats {
    sent: u64,
    errors: u64,
    /// How late each 1 ms tick fired against the schedule, in microseconds.
    lag_us: Vec<u32>,
}

/// One task paces every call: the 20 ms packet interval is cut into 20 slots of 1 ms, call i
/// sends in slot i % 20, so the load is spread evenly instead of 2N packets at once.
async fn sender(calls: Arc<Vec<CallMedia>>, secs: u64, t0: TInstant) -> SendStats {
    let mut st = SendStats::default();
    let slots = PTIME_MS as usize;
    let ticks = secs * 1000;
    st.lag_us.reserve(ticks as usize);
    for k in 0..ticks {
        let due = t0 + Duration::from_millis(k);
        sleep_until(due).await;
        st.lag_us.push(TInstant::now().saturating_duration_since(due).as_micros() as u32);
        let slot = (k % slots as u64) as usize;
        let seq = (k / slots as u64) as u32;
        for i in (slot..calls.len()).step_by(slots) {
            let c = &calls[i];
            for (dir, sock, to) in [(0u8, &c.pbx, c.pbx_to), (1u8, &c.agent, c.agent_to)] {
                let ssrc = 0x4242_0000 + (i as u32) * 2 + dir as u32;
                let pkt =
                    hearken::rtp::build(0, seq as u16, seq.wrapping_mul(PAYLOAD_LEN as u32), ssrc, &payload(now_ns(), i as u32, seq, dir));
                match sock.send_to(&pkt, to).await {
                    Ok(_) => st.sent += 1,
                    Err(_) => st.errors += 1,
                }
            }
        }
    }
    st
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[derive(Debug, Clone, Default)]
struct PhaseResult {
    relay: &'static str,
    calls: usize,
    setup_ms: f64,
    sent: u64,
    send_errors: u64,
    delivered: u64,
    duplicates: u64,
    foreign: u64,
    lat_p50_us: u32,
    lat_p99_us: u32,
    lat_max_us: u32,
    lat_mean_us: f64,
    relay_cpu_s: f64,
    /// Part of `relay_cpu_s` spent in Hearken's analysis/ASR threads (0 for rtpengine).
    analysis_cpu_s: f64,
    bench_cpu_s: f64,
    /// All cores, every process, over the traffic window.
    machine_busy_s: f64,
    /// Relay CPU with the sessions set up and no traffic, as % of one core.
    idle_cpu_pct: f64,
    window_s: f64,
    sender_lag_p99_us: u32,
    sender_lag_max_us: u32,
    /// Relay's own counters where it has them (Hearken /status).
    relay_counters: serde_json::Value,
}

impl PhaseResult {
    fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        100.0 * (self.sent.saturating_sub(self.delivered)) as f64 / self.sent as f64
    }
    fn pps_per_cpu_s(&self) -> f64 {
        if self.relay_cpu_s > 0.0 {
            self.delivered as f64 / self.relay_cpu_s
        } else {
            f64::INFINITY
        }
    }
    /// Packets per CPU-second of the relay without its analysis threads (SIP + RTP forwarding).
    fn pps_per_relay_only_cpu_s(&self) -> f64 {
        let cpu = self.relay_cpu_s - self.analysis_cpu_s;
        if cpu > 0.0 {
            self.delivered as f64 / cpu
        } else {
            f64::INFINITY
        }
    }
    fn cpu_pct(&self) -> f64 {
        100.0 * self.relay_cpu_s / self.window_s
    }
    /// CPU used during the window by neither the relay nor the bench.
    fn other_cpu_s(&self) -> f64 {
        (self.machine_busy_s - self.relay_cpu_s - self.bench_cpu_s).max(0.0)
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "calls": self.calls,
            "setup_ms": round(self.setup_ms, 1),
            "sent": self.sent,
            "send_errors": self.send_errors,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "foreign": self.foreign,
            "loss_pct": round(self.loss_pct(), 4),
            "latency_us": {
                "p50": self.lat_p50_us,
                "p99": self.lat_p99_us,
                "max": self.lat_max_us,
                "mean": round(self.lat_mean_us, 1),
            },
            "relay_cpu_s": round(self.relay_cpu_s, 3),
            "analysis_cpu_s": round(self.analysis_cpu_s, 3),
            "pkts_per_cpu_s_without_analysis": round(self.pps_per_relay_only_cpu_s(), 0),
            "relay_cpu_pct_of_one_core": round(self.cpu_pct(), 2),
            "window_s": round(self.window_s, 3),
            "pkts_per_cpu_s": round(self.pps_per_cpu_s(), 0),
            "bench_cpu_s": round(self.bench_cpu_s, 3),
            "machine_busy_s": round(self.machine_busy_s, 3),
            "other_cpu_s": round(self.other_cpu_s(), 3),
            "relay_idle_cpu_pct_of_one_core": round(self.idle_cpu_pct, 2),
            "sender_lag_us": {"p99": self.sender_lag_p99_us, "max": self.sender_lag_max_us},
            "relay_counters": self.relay_counters,
        })
    }
}

fn round(v: f64, digits: i32) -> f64 {
    if !v.is_finite() {
        return v;
    }
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// Send RTP through the relay on every call for `secs`, measure delivery, latency and CPU.
async fn traffic(relay: &'static str, pid: u32, calls: Vec<CallMedia>, secs: u64, tck: u64) -> Result<PhaseResult> {
    let n = calls.len();
    let expected = (secs * PACKETS_PER_S) as usize;
    let t0 = TInstant::now() + Duration::from_millis(300);
    let deadline = t0 + Duration::from_secs(secs) + GRACE;
    let mut receivers = Vec::with_capacity(2 * n);
    for (i, c) in calls.iter().enumerate() {
        // dir 0 (PBX→agent) arrives on the agent socket; dir 1 on the PBX socket.
        receivers.push(tokio::spawn(receiver(c.agent.clone(), i as u32, 0, expected, deadline)));
        receivers.push(tokio::spawn(receiver(c.pbx.clone(), i as u32, 1, expected, deadline)));
    }
    let calls = Arc::new(calls);
    let send = tokio::spawn(sender(calls.clone(), secs, t0));
    sleep_until(t0).await;
    let (cpu0, an0, self0, m0, w0) =
        (cpu_ticks(pid)?, thread_ticks(pid, "hearken-a"), cpu_ticks(std::process::id())?, machine_busy_ticks()?, Instant::now());
    let sst = send.await?;
    let mut all = RecvStats::default();
    for r in receivers {
        let r = r.await?;
        all.received += r.received;
        all.duplicates += r.duplicates;
        all.foreign += r.foreign;
        all.lat_us.extend(r.lat_us);
    }
    let (cpu1, an1, self1, m1, window) =
        (cpu_ticks(pid)?, thread_ticks(pid, "hearken-a"), cpu_ticks(std::process::id())?, machine_busy_ticks()?, w0.elapsed());
    all.lat_us.sort_unstable();
    let mut lag = sst.lag_us;
    lag.sort_unstable();
    let mean = if all.lat_us.is_empty() { 0.0 } else { all.lat_us.iter().map(|v| *v as f64).sum::<f64>() / all.lat_us.len() as f64 };
    Ok(PhaseResult {
        relay,
        calls: n,
        sent: sst.sent,
        send_errors: sst.errors,
        delivered: all.received,
        duplicates: all.duplicates,
        foreign: all.foreign,
        lat_p50_us: pct(&all.lat_us, 0.50),
        lat_p99_us: pct(&all.lat_us, 0.99),
        lat_max_us: all.lat_us.last().copied().unwrap_or(0),
        lat_mean_us: mean,
        relay_cpu_s: (cpu1 - cpu0) as f64 / tck as f64,
        analysis_cpu_s: an1.saturating_sub(an0) as f64 / tck as f64,
        bench_cpu_s: (self1 - self0) as f64 / tck as f64,
        machine_busy_s: (m1 - m0) as f64 / tck as f64,
        window_s: window.as_secs_f64(),
        sender_lag_p99_us: pct(&lag, 0.99),
        sender_lag_max_us: lag.last().copied().unwrap_or(0),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Hearken phase: real SIP through the proxy

/// Receive on `sock` until `pick` accepts a message or `deadline` passes. Everything else that
/// arrives is noted in `seen` (for the error report).
async fn recv_sip(
    sock: &UdpSocket,
    deadline: TInstant,
    seen: &mut Vec<String>,
    pick: impl Fn(&Sip) -> bool,
) -> Result<Option<(Sip, SocketAddr)>> {
    let mut buf = vec![0u8; 65536];
    while let Ok(r) = timeout_at(deadline, sock.recv_from(&mut buf)).await {
        let (n, src) = r?;
        match Sip::parse(&buf[..n]) {
            Some(m) if pick(&m) => return Ok(Some((m, src))),
            Some(m) => seen.push(format!("from {src}:\n{}", m.head())),
            None => seen.push(format!("from {src}: unparseable {n} bytes: {:?}", String::from_utf8_lossy(&buf[..n.min(200)]))),
        }
    }
    Ok(None)
}

fn sip_failure(what: &str, sent: &str, seen: &[String]) -> anyhow::Error {
    let mut s = format!("{what}\n--- last message sent ---\n{sent}\n--- other messages received ---");
    if seen.is_empty() {
        s.push_str("\n(none)");
    }
    for m in seen.iter().rev().take(6) {
        let _ = write!(s, "\n{m}");
    }
    anyhow!(s)
}

struct SipEnds {
    pbx: UdpSocket,
    agent: UdpSocket,
    hearken: SocketAddr,
}

/// One call through Hearken: INVITE (PBX) → forwarded INVITE (agent) → 200 OK (agent) →
/// forwarded 200 OK (PBX) → ACK (PBX) → forwarded ACK (agent). Returns the relay addresses.
async fn sip_call(e: &SipEnds, i: usize, m: &MediaPair, warnings: &mut Vec<String>) -> Result<CallMedia> {
    let (pbx_media, agent_media) = m.ports()?;
    let pbx_port = e.pbx.local_addr()?.port();
    let agent_port = e.agent.local_addr()?.port();
    let hport = e.hearken.port();
    let call_id = format!("rb-{i}-{}@{LOCALHOST}", std::process::id());
    let sdp = sdp_body(i, pbx_media);
    let invite = format!(
        "INVITE sip:agent{i}@{LOCALHOST}:{hport} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {LOCALHOST}:{pbx_port};branch=z9hG4bK-rb-inv-{i};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:customer{i}@{LOCALHOST}:{pbx_port}>;tag=pbx{i}\r\n\
         To: <sip:agent{i}@{LOCALHOST}:{hport}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:customer{i}@{LOCALHOST}:{pbx_port}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let mut seen = Vec::new();

    // INVITE, retransmitted up to 4 times (500 ms apart) until it shows up at the agent.
    let mut fwd = None;
    for _ in 0..4 {
        e.pbx.send_to(invite.as_bytes(), e.hearken).await?;
        let dl = TInstant::now() + Duration::from_millis(500);
        fwd = recv_sip(&e.agent, dl, &mut seen, |m| m.method() == Some("INVITE") && m.call_id() == call_id).await?;
        if fwd.is_some() {
            break;
        }
    }
    let Some((inv, _)) = fwd else {
        // What did the PBX side get back (a 4xx/5xx from Hearken?)
        let dl = TInstant::now() + Duration::from_millis(200);
        let _ = recv_sip(&e.pbx, dl, &mut seen, |_| false).await;
        return Err(sip_failure(&format!("call {i}: the INVITE never reached the agent socket"), &invite, &seen));
    };
    let agent_to = sdp_port(&inv.body).with_context(|| format!("call {i}: SDP of the INVITE forwarded to the agent:\n{}", inv.raw))?;
    let vias = inv.lines("via");
    let rr = inv.lines("record-route");
    if vias.len() != 2 || rr.is_empty() {
        warnings.push(format!("call {i}: forwarded INVITE has {} Via lines and {} Record-Route lines", vias.len(), rr.len()));
    }
    let asdp = sdp_body(10_000 + i, agent_media);
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for v in &vias {
        let _ = write!(ok, "Via: {v}\r\n");
    }
    for r in &rr {
        let _ = write!(ok, "Record-Route: {r}\r\n");
    }
    let _ = write!(
        ok,
        "From: {}\r\nTo: {};tag=ag{i}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
         Contact: <sip:agent{i}@{LOCALHOST}:{agent_port}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{asdp}",
        inv.get("from").unwrap_or(""),
        inv.get("to").unwrap_or(""),
        inv.call_id(),
        inv.get("cseq").unwrap_or(""),
        asdp.len()
    );
    // The 200 OK goes to the top Via: Hearken. Retransmitted until it reaches the PBX.
    let mut got = None;
    for _ in 0..4 {
        e.agent.send_to(ok.as_bytes(), e.hearken).await?;
        let dl = TInstant::now() + Duration::from_millis(500);
        got = recv_sip(&e.pbx, dl, &mut seen, |m| m.call_id() == call_id && m.cseq_method() == "INVITE" && m.status() >= Some(200)).await?;
        if got.is_some() {
            break;
        }
    }
    let Some((resp, _)) = got else {
        return Err(sip_failure(&format!("call {i}: the agent's 200 OK never reached the PBX socket"), &ok, &seen));
    };
    if resp.status() != Some(200) {
        return Err(sip_failure(&format!("call {i}: PBX got {} instead of 200", resp.first), &ok, std::slice::from_ref(&resp.raw)));
    }
    if resp.lines("via").len() != 1 {
        warnings.push(format!("call {i}: 200 OK at the PBX has {} Via lines (expected 1)", resp.lines("via").len()));
    }
    let pbx_to = sdp_port(&resp.body).with_context(|| format!("call {i}: SDP of the 200 OK forwarded to the PBX:\n{}", resp.raw))?;
    // ACK: route set = Record-Route of the 2xx, reversed (UAC side); Request-URI = agent contact.
    let to = resp.get("to").unwrap_or("").to_string();
    let mut routes = resp.values("record-route");
    routes.reverse();
    let contact = resp
        .get("contact")
        .and_then(|c| c.split(['<', '>']).nth(1).map(str::to_string))
        .unwrap_or_else(|| format!("sip:agent{i}@{LOCALHOST}:{agent_port}"));
    let mut ack = format!("ACK {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {LOCALHOST}:{pbx_port};branch=z9hG4bK-rb-ack-{i};rport\r\n");
    for r in &routes {
        let _ = write!(ack, "Route: {r}\r\n");
    }
    let _ = write!(
        ack,
        "Max-Forwards: 70\r\nFrom: <sip:customer{i}@{LOCALHOST}:{pbx_port}>;tag=pbx{i}\r\nTo: {to}\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    e.pbx.send_to(ack.as_bytes(), e.hearken).await?;
    let dl = TInstant::now() + Duration::from_millis(1000);
    let acked = recv_sip(&e.agent, dl, &mut seen, |m| m.method() == Some("ACK") && m.call_id() == call_id).await?;
    if acked.is_none() {
        warnings.push(sip_failure(&format!("call {i}: the ACK did not reach the agent within 1 s"), &ack, &seen).to_string());
    }
    Ok(CallMedia { pbx: m.pbx.clone(), agent: m.agent.clone(), pbx_to, agent_to })
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        anyhow::Ok(String::from_utf8_lossy(&out).to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), fut).await.map_err(|_| anyhow!("http {path}: timeout"))?
}

fn port_span(calls: usize) -> u16 {
    // 4 ports per call (RTP + RTCP on each side) plus slack; even.
    let span = (calls * 4 + 400).min(20_000);
    (span + span % 2) as u16
}

async fn hearken_phase(args: &Args, dir: &Path, bin: &Path, tck: u64) -> Result<PhaseResult> {
    let sip_port = free_port(true)?;
    let http_port = free_port(true)?;
    let pbx = UdpSocket::bind(local(0)).await?;
    let agent = UdpSocket::bind(local(0)).await?;
    let (pmin, pmax) = (20_000u16, 20_000 + port_span(args.calls) - 1);
    let ng_port = free_port(false)?;
    let ng_section = if args.hearken_ng { format!("[ng]\nlisten = \"{LOCALHOST}:{ng_port}\"\n\n") } else { String::new() };
    let cfg = format!(
        "[sip]\nlisten = \"{LOCALHOST}:{sip_port}\"\n\n\
         [pbx]\naddresses = [\"{LOCALHOST}:{p}\"]\nroute = \"{LOCALHOST}:{p}\"\n\n\
         [agents]\nroute = \"{LOCALHOST}:{a}\"\n\n\
         [media]\nport_min = {pmin}\nport_max = {pmax}\nrtp_timeout_s = 60\n\n\
         [http]\nlisten = \"{LOCALHOST}:{http_port}\"\n\n\
         {ng_section}[log]\nlevel = \"warn\"\n",
        p = pbx.local_addr()?.port(),
        a = agent.local_addr()?.port(),
    );
    let cfg_path = dir.join("hearken.toml");
    std::fs::write(&cfg_path, cfg)?;
    let mut child = ChildGuard::spawn(
        "hearken",
        Command::new(bin).arg("run").arg("--config").arg(&cfg_path).env_remove("HEARKEN_LOG"),
        dir.join("hearken.log"),
    )?;
    // Ready when /healthz answers.
    let http = local(http_port);
    let ready_by = Instant::now() + Duration::from_secs(10);
    loop {
        child.check_alive()?;
        if let Ok(r) = http_get(http, "/healthz").await {
            if r.starts_with("HTTP/1.") && r.contains(" 200 ") {
                break;
            }
        }
        if Instant::now() > ready_by {
            bail!("hearken did not answer /healthz within 10 s; log:\n{}", tail(&child.log, 20));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let how = if args.hearken_ng { format!("ng {LOCALHOST}:{ng_port}") } else { format!("sip {LOCALHOST}:{sip_port}") };
    eprintln!("hearken: pid {} {how}, media ports {pmin}-{pmax}; setting up {} calls", child.pid(), args.calls);
    let ends = SipEnds { pbx, agent, hearken: local(sip_port) };
    let t = Instant::now();
    let mut warnings = Vec::new();
    let calls = if args.hearken_ng {
        let mut ng = Ng::new(local(ng_port)).await?;
        let pong = ng.call(&Ben::dict(&[("command", Ben::s("ping"))])).await?;
        if pong.str("result").as_deref() != Some("pong") {
            bail!("hearken's ng port answered ping with {pong:?}");
        }
        ng_calls(&mut ng, args.calls, "hearken").await?
    } else {
        let mut calls = Vec::with_capacity(args.calls);
        for i in 0..args.calls {
            let m = MediaPair::bind().await?;
            calls.push(sip_call(&ends, i, &m, &mut warnings).await?);
        }
        calls
    };
    let setup_ms = t.elapsed().as_secs_f64() * 1000.0;
    for w in warnings.iter().take(5) {
        eprintln!("hearken: warning: {w}");
    }
    if warnings.len() > 5 {
        eprintln!("hearken: ... {} warnings in all", warnings.len());
    }
    child.check_alive()?;
    let idle = idle_cpu(child.pid(), IDLE_WINDOW, tck).await?;
    let mut r = traffic("hearken", child.pid(), calls, args.seconds, tck).await?;
    r.setup_ms = setup_ms;
    r.idle_cpu_pct = 100.0 * idle / IDLE_WINDOW.as_secs_f64();
    child.check_alive()?;
    if let Ok(s) = http_get(http, "/status").await {
        if let Some(body) = s.split("\r\n\r\n").nth(1) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
                r.relay_counters = v["relay"].clone();
            }
        }
    }
    Ok(r)
}

/// Set `n` calls up over ng (offer from the PBX side, answer from the agent side), as a
/// Kamailio script would; the same commands for rtpengine and for Hearken's ng port.
async fn ng_calls(ng: &mut Ng, n: usize, relay: &str) -> Result<Vec<CallMedia>> {
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        let m = MediaPair::bind().await?;
        let (pbx_media, agent_media) = m.ports()?;
        let call_id = format!("rb-{relay}-{i}-{}@{LOCALHOST}", std::process::id());
        let (ftag, ttag) = (format!("pbx{i}"), format!("ag{i}"));
        let offer = ng
            .ok(&Ben::dict(&[
                ("command", Ben::s("offer")),
                ("call-id", Ben::s(&call_id)),
                ("from-tag", Ben::s(&ftag)),
                ("sdp", Ben::s(&sdp_body(i, pbx_media))),
            ]))
            .await
            .with_context(|| format!("call {i}: offer"))?;
        let agent_to = sdp_port(offer.str("sdp").unwrap_or_default().as_bytes()).with_context(|| format!("call {i}: offer reply"))?;
        let answer = ng
            .ok(&Ben::dict(&[
                ("command", Ben::s("answer")),
                ("call-id", Ben::s(&call_id)),
                ("from-tag", Ben::s(&ftag)),
                ("to-tag", Ben::s(&ttag)),
                ("sdp", Ben::s(&sdp_body(10_000 + i, agent_media))),
            ]))
            .await
            .with_context(|| format!("call {i}: answer"))?;
        let pbx_to = sdp_port(answer.str("sdp").unwrap_or_default().as_bytes()).with_context(|| format!("call {i}: answer reply"))?;
        calls.push(CallMedia { pbx: m.pbx.clone(), agent: m.agent.clone(), pbx_to, agent_to });
    }
    Ok(calls)
}

// ---------------------------------------------------------------------------------------------
// rtpengine phase: the same sessions over the ng protocol

async fn rtpengine_phase(args: &Args, dir: &Path, tck: u64) -> Result<PhaseResult> {
    let ng_port = free_port(false)?;
    let pmin = 20_000 + port_span(args.calls) + 1000;
    let pmax = pmin + port_span(args.calls) - 1;
    let cfg = format!(
        "[rtpengine]\ntable = -1\ninterface = {LOCALHOST}\nlisten-ng = {LOCALHOST}:{ng_port}\n\
         port-min = {pmin}\nport-max = {pmax}\nforeground = true\nlog-stderr = true\nlog-level = 4\n"
    );
    let cfg_path = dir.join("rtpengine.conf");
    std::fs::write(&cfg_path, cfg)?;
    let mut child = ChildGuard::spawn(
        "rtpengine",
        Command::new(&args.rtpengine)
            .arg(format!("--config-file={}", cfg_path.display()))
            .arg(format!("--pidfile={}", dir.join("rtpengine.pid").display())),
        dir.join("rtpengine.log"),
    )?;
    let mut ng = Ng::new(local(ng_port)).await?;
    let ready_by = Instant::now() + Duration::from_secs(15);
    loop {
        child.check_alive()?;
        let ping = ng.call(&Ben::dict(&[("command", Ben::s("ping"))])).await;
        if matches!(&ping, Ok(r) if r.str("result").as_deref() == Some("pong")) {
            break;
        }
        if Instant::now() > ready_by {
            bail!("rtpengine did not answer ping within 15 s ({ping:?}); log:\n{}", tail(&child.log, 20));
        }
    }
    eprintln!("rtpengine: pid {} ng {LOCALHOST}:{ng_port}, media ports {pmin}-{pmax}; setting up {} calls", child.pid(), args.calls);
    let t = Instant::now();
    let calls = ng_calls(&mut ng, args.calls, "rtpengine").await?;
    let setup_ms = t.elapsed().as_secs_f64() * 1000.0;
    child.check_alive()?;
    let idle = idle_cpu(child.pid(), IDLE_WINDOW, tck).await?;
    let mut r = traffic("rtpengine", child.pid(), calls, args.seconds, tck).await?;
    r.setup_ms = setup_ms;
    r.idle_cpu_pct = 100.0 * idle / IDLE_WINDOW.as_secs_f64();
    child.check_alive()?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Report

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// A table row: label, value of a phase, decimals.
type Row = (&'static str, fn(&PhaseResult) -> f64, usize);

fn report(args: &Args, tck: (u64, bool), phases: &[PhaseResult]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "relay-bench: {} calls x {} s, 2 legs x {} pps each = {} pps into the relay; {} cores ({}); CLK_TCK {}{}",
        args.calls,
        args.seconds,
        PACKETS_PER_S,
        args.calls as u64 * 2 * PACKETS_PER_S,
        cores,
        hearken::sys::cpu_model(),
        tck.0,
        if tck.1 { " (assumed)" } else { "" }
    );
    let h = phases.iter().find(|p| p.relay == "hearken");
    let r = phases.iter().find(|p| p.relay == "rtpengine");
    let rows: Vec<Row> = vec![
        ("call setup (ms, all calls)", |p| p.setup_ms, 1),
        ("packets sent", |p| p.sent as f64, 0),
        ("packets delivered", |p| p.delivered as f64, 0),
        ("loss %", |p| p.loss_pct(), 4),
        ("latency p50 (us)", |p| p.lat_p50_us as f64, 0),
        ("latency p99 (us)", |p| p.lat_p99_us as f64, 0),
        ("latency max (us)", |p| p.lat_max_us as f64, 0),
        ("latency mean (us)", |p| p.lat_mean_us, 1),
        ("relay CPU (s)", |p| p.relay_cpu_s, 2),
        ("relay CPU (% of a core)", |p| p.cpu_pct(), 1),
        ("packets per relay CPU-s", |p| p.pps_per_cpu_s(), 0),
        ("  of which analysis threads (s)", |p| p.analysis_cpu_s, 2),
        ("packets per CPU-s w/o analysis", |p| p.pps_per_relay_only_cpu_s(), 0),
        ("relay CPU idle (% of a core)", |p| p.idle_cpu_pct, 1),
        ("bench CPU (s)", |p| p.bench_cpu_s, 2),
        ("other processes CPU (s)", |p| p.other_cpu_s(), 2),
        ("sender lag p99 (us)", |p| p.sender_lag_p99_us as f64, 0),
    ];
    println!("{:<28} {:>14} {:>14} {:>18}", "", "hearken", "rtpengine", "hearken/rtpengine");
    for (name, f, digits) in &rows {
        let cell = |p: Option<&PhaseResult>| p.map_or("-".to_string(), |p| format!("{:.*}", *digits, f(p)));
        let rat = match (h, r) {
            (Some(h), Some(r)) => ratio(f(h), f(r)).map_or("-".into(), |x| format!("{x:.2}")),
            _ => "-".into(),
        };
        println!("{name:<28} {:>14} {:>14} {:>18}", cell(h), cell(r), rat);
    }
    for p in phases {
        // Anything above a few % of one core besides relay and bench distorts latency and CPU.
        if p.other_cpu_s() > 0.05 * p.window_s {
            println!(
                "WARNING: {}: other processes used {:.2} CPU-s during the {:.1} s window \
                 (machine busy {:.2} of {} core-s); the numbers are disturbed",
                p.relay,
                p.other_cpu_s(),
                p.window_s,
                p.machine_busy_s,
                round(p.window_s * cores as f64, 1)
            );
        }
        if p.duplicates > 0 || p.foreign > 0 || p.send_errors > 0 {
            println!("note: {}: {} duplicates, {} foreign packets, {} send errors", p.relay, p.duplicates, p.foreign, p.send_errors);
        }
    }
    if let Some(h) = h {
        if !h.relay_counters.is_null() {
            println!("hearken /status relay counters: {}", h.relay_counters);
        }
    }
    let mut j = serde_json::json!({
        "bench": "relay",
        "calls": args.calls,
        "seconds": args.seconds,
        "pps_in": args.calls as u64 * 2 * PACKETS_PER_S,
        "payload_bytes": PAYLOAD_LEN,
        "cores": cores,
        "cpu_model": hearken::sys::cpu_model(),
        "clk_tck": tck.0,
        "clk_tck_assumed": tck.1,
        "order": if args.rtpengine_first && !args.skip_rtpengine { "rtpengine-first" } else { "hearken-first" },
    });
    for p in phases {
        j[p.relay] = p.json();
    }
    if let (Some(h), Some(r)) = (h, r) {
        j["ratio_hearken_over_rtpengine"] = serde_json::json!({
            "relay_cpu_s": ratio(h.relay_cpu_s, r.relay_cpu_s).map(|x| round(x, 3)),
            "pkts_per_cpu_s": ratio(h.pps_per_cpu_s(), r.pps_per_cpu_s()).map(|x| round(x, 3)),
            "pkts_per_cpu_s_without_analysis": ratio(h.pps_per_relay_only_cpu_s(), r.pps_per_relay_only_cpu_s()).map(|x| round(x, 3)),
            "latency_p50": ratio(h.lat_p50_us as f64, r.lat_p50_us as f64).map(|x| round(x, 3)),
            "latency_p99": ratio(h.lat_p99_us as f64, r.lat_p99_us as f64).map(|x| round(x, 3)),
        });
    }
    println!("{j}");
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------------------------------------

async fn run(args: Args) -> Result<()> {
    if args.calls == 0 || args.seconds == 0 {
        bail!("--calls and --seconds must be at least 1");
    }
    if args.seconds * PACKETS_PER_S > u16::MAX as u64 {
        bail!("--seconds: at most {} (RTP sequence must not wrap)", u16::MAX as u64 / PACKETS_PER_S);
    }
    if args.calls > 4000 {
        bail!("--calls: at most 4000");
    }
    let bin = match &args.hearken {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.parent().ok_or_else(|| anyhow!("bench binary has no directory"))?.join("hearken"),
    };
    if !bin.exists() {
        bail!("hearken binary not found at {} (build it or pass --hearken)", bin.display());
    }
    if !args.skip_rtpengine && !args.rtpengine.exists() {
        bail!("rtpengine not found at {} (install rtpengine-daemon, pass --rtpengine, or --skip-rtpengine)", args.rtpengine.display());
    }
    let tck = clk_tck();
    let dir = std::env::temp_dir().join(format!("relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = WorkDir { path: dir.clone(), keep: args.keep_workdir };
    let mut phases = Vec::new();
    let mut order = vec!["hearken"];
    if !args.skip_rtpengine {
        order.insert(usize::from(!args.rtpengine_first), "rtpengine");
    }
    for (k, relay) in order.into_iter().enumerate() {
        if k > 0 {
            // Let the kernel settle after the first relay is gone.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        phases.push(match relay {
            "hearken" => hearken_phase(&args, &dir, &bin, tck.0).await.context("hearken phase")?,
            _ => rtpengine_phase(&args, &dir, tck.0).await.context("rtpengine phase")?,
        });
    }
    report(&args, tck, &phases);
    Ok(())
}

struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("relay-bench: work directory kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn main() -> ExitCode {
    START.get_or_init(Instant::now);
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay-bench: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        tokio::select! {
            r = run(args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    // Relay children are killed by their guards when `run` returns or is dropped.
    rt.shutdown_timeout(Duration::from_secs(1));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
