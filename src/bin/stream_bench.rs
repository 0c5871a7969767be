//! `stream-bench`: memory and CPU per media stream. Starts the `hearken` binary next to this one
//! with a stream token, opens N Twilio Media Streams (the published message format, both tracks,
//! 50 µ-law frames per second per track, a speech-like on/off tone) for S seconds, and reports
//! Hearken's resident memory (idle and with all streams up) and CPU time per stream, frames
//! dropped, and the calls analysed. No timing is asserted anywhere; the figures go to
//! docs/benchmarks.md with the command and the machine.

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::Parser;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Concurrent streams.
    #[arg(long, default_value_t = 200)]
    streams: usize,
    /// Seconds of audio per stream.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The hearken binary (default: next to this one).
    #[arg(long)]
    hearken: Option<PathBuf>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(str::to_string)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find(|l| l.starts_with(&format!("{name} "))).and_then(|l| l.split(' ').nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bin = match &args.hearken {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("hearken"),
    };
    let dir = tempfile_dir()?;
    let (sip, http) = (free_port(), free_port());
    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[streams]\ntokens = [\"bench-stream-token\"]\nmax_streams = {}\n[log]\nlevel = \"warn\"\n",
        args.streams + 10
    );
    std::fs::write(dir.join("hearken.toml"), cfg)?;
    let mut child = Command::new(&bin)
        .arg("run")
        .arg("--config")
        .arg(dir.join("hearken.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start hearken")?;
    let pid = child.id();
    let ready = Instant::now() + Duration::from_secs(10);
    while get(http, "/healthz").is_none() {
        if Instant::now() > ready {
            let _ = child.kill();
            bail!("hearken did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle_kib = rss_kib(pid);
    let cpu0 = hearken::sys::stat_cpu_s(&PathBuf::from(format!("/proc/{pid}/stat")));
    let frames = (args.seconds * 50) as usize;
    let b64 = base64::engine::general_purpose::STANDARD;
    // Two payloads: a 300 Hz tone (speech-like for the energy VAD) and silence, µ-law.
    let tone: Vec<u8> = (0..160).map(|i| hearken::codec::g711::encode_ulaw(((i as f64 * 0.235).sin() * 8000.0) as i16)).collect();
    let quiet: Vec<u8> = vec![0xff; 160];
    let (tone, quiet) = (b64.encode(&tone), b64.encode(&quiet));
    let t0 = Instant::now() + Duration::from_millis(200);
    let mut peak = 0u64;
    let threads: Vec<_> = (0..args.streams)
        .map(|n| {
            let (tone, quiet) = (tone.clone(), quiet.clone());
            std::thread::spawn(move || -> Result<()> {
                let (mut ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{http}/stream/twilio"))?;
                let start = serde_json::json!({"event":"start","sequenceNumber":"1","start":{"streamSid":format!("MZ{n}"),"callSid":format!("CA{n}"),"tracks":["inbound","outbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"token":"bench-stream-token","agent":format!("agent{}", n % 50)}},"streamSid":format!("MZ{n}")});
                ws.send(tungstenite::Message::Text(start.to_string()))?;
                // Stagger the streams across a frame time.
                std::thread::sleep(Duration::from_micros((n as u64 * 20_000) / 200));
                for k in 0..frames {
                    for (track, talking) in [("inbound", (k / 100) % 2 == 0), ("outbound", (k / 100) % 2 == 1)] {
                        let p = if talking { &tone } else { &quiet };
                        let m = format!(
                            "{{\"event\":\"media\",\"sequenceNumber\":\"{}\",\"media\":{{\"track\":\"{track}\",\"chunk\":\"{}\",\"timestamp\":\"{}\",\"payload\":\"{p}\"}},\"streamSid\":\"MZ{n}\"}}",
                            2 * k + 2,
                            k + 1,
                            k * 20
                        );
                        ws.send(tungstenite::Message::Text(m))?;
                    }
                    let due = t0 + Duration::from_millis(20 * (k as u64 + 1));
                    if let Some(d) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                }
                ws.send(tungstenite::Message::Text("{\"event\":\"stop\",\"sequenceNumber\":\"0\",\"stop\":{}}".into()))?;
                let _ = ws.close(None);
                Ok(())
            })
        })
        .collect();
    let window_end = t0 + Duration::from_secs(args.seconds);
    while Instant::now() < window_end {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut failed = 0;
    for t in threads {
        if !matches!(t.join(), Ok(Ok(()))) {
            failed += 1;
        }
    }
    let cpu1 = hearken::sys::stat_cpu_s(&PathBuf::from(format!("/proc/{pid}/stat")));
    std::thread::sleep(Duration::from_secs(2));
    let m = get(http, "/metrics").unwrap_or_default();
    let records = get(http, "/records").map(|r| r.matches("\"id\"").count()).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    let per_stream_kib = (peak.saturating_sub(idle_kib)) as f64 / args.streams as f64;
    let cpu = cpu1 - cpu0;
    println!(
        "stream-bench: {} Twilio streams x {} s, 2 tracks x 50 frames/s each; {} cores ({})",
        args.streams,
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        hearken::sys::cpu_model()
    );
    println!(
        "  hearken RSS idle {:.1} MiB, peak {:.1} MiB: {:.0} KiB per stream",
        idle_kib as f64 / 1024.0,
        peak as f64 / 1024.0,
        per_stream_kib
    );
    println!(
        "  hearken CPU {:.2} s over {} s: {:.2} % of a core per stream",
        cpu,
        args.seconds,
        100.0 * cpu / args.seconds as f64 / args.streams as f64
    );
    println!(
        "  frames {} (dropped {}), malformed {}, streams started {}, records {}, client failures {}",
        metric(&m, "hearken_stream_frames_total"),
        metric(&m, "hearken_stream_frames_dropped_total"),
        metric(&m, "hearken_stream_malformed_total"),
        metric(&m, "hearken_streams_started_total"),
        records,
        failed
    );
    println!(
        "{}",
        serde_json::json!({"bench":"streams","streams":args.streams,"seconds":args.seconds,"rss_idle_kib":idle_kib,"rss_peak_kib":peak,
            "kib_per_stream":per_stream_kib,"cpu_s":cpu,"cpu_pct_per_stream":100.0*cpu/args.seconds as f64/args.streams as f64,
            "frames":metric(&m,"hearken_stream_frames_total"),"dropped":metric(&m,"hearken_stream_frames_dropped_total"),
            "started":metric(&m,"hearken_streams_started_total"),"records":records,"client_failures":failed})
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("stream-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
