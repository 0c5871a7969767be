//! The `hearken` command: `run` starts the relay daemon, `check-config` validates a config.

use clap::{Parser, Subcommand};
use hearken::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Hearken: a SIP-aware RTP relay that sits between your PBX and your agents, forwards every
/// call's media untouched, and measures how well agents listen.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay: SIP proxy on sip.listen, RTP relay on media.port_min..port_max, status on
    /// http.listen. Every key can be overridden as HEARKEN_SECTION__KEY (e.g. HEARKEN_SIP__LISTEN).
    Run {
        /// Config file (TOML). Without it, built-in defaults plus environment overrides.
        #[arg(short, long, env = "HEARKEN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Analyse a recorded call through the same pipeline as live calls: two mono WAVs
    /// (--customer and --agent), one stereo WAV (--stereo), or a pcap with the two RTP streams
    /// (--pcap). WAVs are 8 kHz 16-bit PCM. Prints a report, or one JSON object with --json.
    Analyze {
        /// The customer's leg (mono WAV).
        #[arg(long, requires = "agent", conflicts_with = "stereo")]
        customer: Option<PathBuf>,
        /// The agent's leg (mono WAV).
        #[arg(long, requires = "customer")]
        agent: Option<PathBuf>,
        /// Both legs in one stereo WAV: left = customer, right = agent.
        #[arg(long, conflicts_with = "customer")]
        stereo: Option<PathBuf>,
        /// A pcap with the call's two RTP streams (G.711 by static payload type; name dynamic
        /// ones with --rtpmap). The first stream to appear is the customer.
        #[arg(long, conflicts_with_all = ["customer", "stereo"])]
        pcap: Option<PathBuf>,
        /// With --pcap: the first stream is the agent.
        #[arg(long, requires = "pcap")]
        swap_legs: bool,
        /// With --pcap: a dynamic payload type, e.g. "111 opus/48000/2" (repeatable).
        #[arg(long, requires = "pcap")]
        rtpmap: Vec<String>,
        /// Print JSON instead of the report.
        #[arg(long)]
        json: bool,
        /// Config file whose [analysis] section sets thresholds and the VAD.
        #[arg(short, long, env = "HEARKEN_CONFIG")]
        config: Option<PathBuf>,
        /// Override the VAD: energy or webrtc.
        #[arg(long)]
        vad: Option<String>,
        /// A Vosk model folder: recognise speech too (overrides asr.model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// The phrase pack of the model's language, e.g. config/phrases/ko.toml (overrides
        /// asr.phrases; default English).
        #[arg(long, requires = "model")]
        phrases: Option<PathBuf>,
        /// Analysis frame in ms (10 or 20).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(10..=20))]
        frame_ms: u32,
    },
    /// Drive one demo call through a running Hearken (as `make run` does): a PBX and an agent
    /// phone on loopback play a two-party conversation through the relay while the agent's
    /// whisper channel is printed; then the call record and Prometheus figures are shown.
    DemoCall {
        #[arg(short, long, env = "HEARKEN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Load and validate a config, print the effective settings, and exit (0 = valid).
    CheckConfig {
        #[arg(short, long, env = "HEARKEN_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn init_logging(cfg: &Config) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("HEARKEN_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cfg.log.format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hearken: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg);
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("hearken: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(hearken::daemon::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hearken: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Analyze { customer, agent, stereo, pcap, swap_legs, rtpmap, model, phrases, json, config, vad, frame_ms } => {
            let mut cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hearken: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(v) = vad {
                cfg.analysis.vad = match v.as_str() {
                    "energy" => hearken::analysis::vad::VadKind::Energy,
                    "webrtc" => hearken::analysis::vad::VadKind::Webrtc,
                    other => {
                        eprintln!("hearken: --vad {other}: expected energy or webrtc");
                        return ExitCode::from(2);
                    }
                };
            }
            let mut map = Vec::new();
            for m in &rtpmap {
                let parsed = m.split_once(' ').and_then(|(pt, enc)| Some((pt.trim().parse::<u8>().ok()?, enc.trim().to_string())));
                match parsed {
                    Some(e) => map.push(e),
                    None => {
                        eprintln!("hearken: --rtpmap {m:?}: expected \"PT encoding/clock[/channels]\", e.g. \"111 opus/48000/2\"");
                        return ExitCode::from(2);
                    }
                }
            }
            let input = match (customer, agent, stereo, pcap) {
                (Some(c), Some(a), None, None) => hearken::analyze::Input::Pair(c, a),
                (None, None, Some(s), None) => hearken::analyze::Input::Stereo(s),
                (None, None, None, Some(p)) => hearken::analyze::Input::Pcap { path: p, swap: swap_legs, rtpmap: map },
                _ => {
                    eprintln!("hearken: analyze needs --customer C.wav --agent A.wav, or --stereo S.wav, or --pcap CALL.pcap");
                    return ExitCode::from(2);
                }
            };
            if let Some(m) = model {
                if !m.join("am").is_dir() && !m.join("conf").is_dir() {
                    eprintln!("hearken: --model {}: not a Vosk model folder (no am/ or conf/ inside)", m.display());
                    return ExitCode::from(2);
                }
                cfg.asr.model = m.display().to_string();
            }
            if let Some(p) = phrases {
                if let Err(e) = hearken::analysis::phrases::PhrasePack::load(&p) {
                    eprintln!("hearken: --phrases {}: {e}", p.display());
                    return ExitCode::from(2);
                }
                cfg.asr.phrases = p.display().to_string();
            }
            match hearken::analyze::run(&input, &cfg.analysis, &cfg.asr, frame_ms) {
                Ok(out) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                    } else {
                        print!("{}", hearken::analyze::report(&out));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hearken: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::DemoCall { config } => match hearken::demo::run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hearken demo-call: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::CheckConfig { config } => match Config::load(config.as_deref()) {
            Ok(c) => {
                println!("config ok: {c:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hearken: {e}");
                ExitCode::from(2)
            }
        },
    }
}
