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
    /// Load and validate a config, print the effective settings, and exit (0 = valid).
    CheckConfig {
        #[arg(short, long, env = "HEARKEN_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARKEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
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
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
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
