//! Nudge latency benchmark: how long after the triggering audio event the agent's whisper
//! channel delivers the nudge. A release `hearken` runs with the cooldowns set to zero; corpus
//! calls with agent interruptions (d02) are played through it in real time by a PBX and an agent
//! phone on loopback; a WebSocket client subscribed as the agent timestamps every nudge.
//!
//! Trigger: an interruption becomes certain when the interrupter has talked over the other party
//! for the back-channel length (1.0 s) — truth `at` + 1.0 s on the call's audio timeline, which
//! the player maps to wall time (packet k of the WAV leaves at start + 20 ms · k). Latency =
//! nudge arrival − trigger. Goal: ≤ 400 ms.
//!
//! Usage: nudge-bench [--calls N] [--hearken PATH]

use anyhow::{Context, Result};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port free for UDP and TCP, from a block below the ephemeral range (32768–60999), so no
/// socket opened meanwhile by another process can take it between this probe and its use.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(27000);
    loop {
        let p = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(p < 28000, "no free port in 27000-27999");
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let calls: usize = arg("--calls").map(|v| v.parse()).transpose()?.unwrap_or(3);
    let bin = arg("--hearken").map(PathBuf::from).unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("hearken"));
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev/d02_agent_interrupts");
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(scenario.join("truth.json")).context("corpus truth")?)?;
    let triggers: Vec<f64> = truth["metrics"]["interruptions"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["by"] == "agent")
        .map(|e| e["at"].as_f64().unwrap() + truth["params"]["backchannel_max_s"].as_f64().unwrap_or(1.0))
        .collect();
    let cust = hearken::analysis::wav::read(&scenario.join("customer.wav"))?.samples.remove(0);
    let agent = hearken::analysis::wav::read(&scenario.join("agent.wav"))?.samples.remove(0);

    let dir = std::env::temp_dir().join(format!("nudge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (sip, http, pbx, phone) = (free_port(), free_port(), free_port(), free_port());
    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\n[pbx]\naddresses = [\"127.0.0.1:{pbx}\"]\nroute = \"127.0.0.1:{pbx}\"\n[agents]\nroute = \"127.0.0.1:{phone}\"\n\
         [media]\nport_min = 26000\nport_max = 26999\n[http]\nlisten = \"127.0.0.1:{http}\"\n[log]\nlevel = \"warn\"\n\
         [whisper.agents]\nagent7 = \"bench-agent7-token\"\n[coach]\ncooldown_s = 0.001\nmin_gap_s = 0.001\n"
    );
    std::fs::write(dir.join("hearken.toml"), cfg)?;
    let child = std::process::Command::new(&bin)
        .args(["run", "--config"])
        .arg(dir.join("hearken.toml"))
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    // Killed on every way out, errors included.
    struct Daemon(std::process::Child);
    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let daemon = Daemon(child);
    let ready = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        if ready.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("hearken did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{http}/whisper?token=bench-agent7-token"))?;
    let nudges: Arc<Mutex<Vec<(Instant, serde_json::Value)>>> = Default::default();
    let sink = nudges.clone();
    std::thread::spawn(move || {
        while let Ok(m) = ws.read() {
            if let tungstenite::Message::Text(t) = m {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
                    if v["type"] == "nudge" && v["kind"] == "interruption" {
                        sink.lock().unwrap().push((at, v));
                    }
                }
            }
        }
    });
    let hearken: SocketAddr = format!("127.0.0.1:{sip}").parse()?;
    let mut latencies = Vec::new();
    for c in 0..calls {
        let before = nudges.lock().unwrap().len();
        let start = hearken::demo::play_call(
            hearken,
            format!("127.0.0.1:{pbx}").parse()?,
            format!("127.0.0.1:{phone}").parse()?,
            "agent7",
            &cust,
            &agent,
            |_| {},
        )?;
        std::thread::sleep(Duration::from_millis(500));
        let got: Vec<Instant> = nudges.lock().unwrap()[before..].iter().map(|(t, _)| *t).collect();
        for (i, trig) in triggers.iter().enumerate() {
            let due = start + Duration::from_secs_f64(*trig);
            match got.get(i) {
                Some(t) => {
                    let ms =
                        t.saturating_duration_since(due).as_secs_f64() * 1000.0 - due.saturating_duration_since(*t).as_secs_f64() * 1000.0;
                    println!("call {c}: interruption {i}: nudge {ms:.0} ms after the trigger");
                    latencies.push(ms);
                }
                None => println!("call {c}: interruption {i}: no nudge"),
            }
        }
    }
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort_by(f64::total_cmp);
    if latencies.is_empty() {
        anyhow::bail!("no nudges received");
    }
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "nudge latency over {} interruptions: min {:.0} ms, p50 {:.0} ms, max {:.0} ms (goal <= 400 ms)",
        latencies.len(),
        latencies[0],
        p(0.5),
        latencies[latencies.len() - 1]
    );
    println!(
        "{}",
        serde_json::json!({"bench": "nudge", "interruptions": calls * triggers.len(), "samples": latencies.len(), "min_ms": latencies[0], "p50_ms": p(0.5), "max_ms": latencies[latencies.len() - 1]})
    );
    Ok(())
}
