//! Wires the daemon together: binds the SIP and HTTP sockets, creates the port pool, the tap
//! queue and its consumer, and runs the SIP driver until shutdown.
//!
//! Not here: CLI parsing and logging setup (main.rs).

use crate::call::MediaFrame;
use crate::config::Config;
use crate::io::http::{router, HttpState};
use crate::io::media::{MediaManager, MediaSettings, RelayStats};
use crate::io::sip::SipDriver;
use crate::media::ports::PortPool;
use crate::sip::proxy::{Proxy, ProxyConfig, SipStats, Target};
use anyhow::Context;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let (udp, tcp, local) = if cfg.sip.enabled {
        let udp =
            tokio::net::UdpSocket::bind(cfg.sip.listen).await.with_context(|| format!("sip.listen: cannot bind UDP {}", cfg.sip.listen))?;
        let tcp = tokio::net::TcpListener::bind(cfg.sip.listen)
            .await
            .with_context(|| format!("sip.listen: cannot bind TCP {}", cfg.sip.listen))?;
        let local = udp.local_addr()?;
        (Some(Arc::new(udp)), Some(tcp), local)
    } else {
        (None, None, cfg.sip.listen)
    };
    // The agent side's own listener, when configured.
    let agents_sockets = match cfg.sip.agents_listen.filter(|_| cfg.sip.enabled) {
        Some(a) => {
            let udp = tokio::net::UdpSocket::bind(a).await.with_context(|| format!("sip.agents_listen: cannot bind UDP {a}"))?;
            let tcp = tokio::net::TcpListener::bind(a).await.with_context(|| format!("sip.agents_listen: cannot bind TCP {a}"))?;
            tracing::info!(addr = %a, "SIP listener for the agent side");
            Some((Arc::new(udp), tcp))
        }
        None => None,
    };
    // SIP over TLS for phones and PBXs, and the client side for connections Hearken opens.
    let proxy_tls = if cfg.sip.enabled && !cfg.sip.tls_listen.is_empty() {
        let config =
            crate::io::tls::load("sip", &cfg.sip.tls_cert, &cfg.sip.tls_key, "").map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.why))?;
        let l = tokio::net::TcpListener::bind(&cfg.sip.tls_listen)
            .await
            .with_context(|| format!("sip.tls_listen: cannot bind {}", cfg.sip.tls_listen))?;
        tracing::info!(addr = %l.local_addr()?, "SIP over TLS listening");
        Some((l, config))
    } else {
        None
    };
    let tls_port = proxy_tls.as_ref().and_then(|(l, _)| l.local_addr().ok()).map(|a| a.port());
    let tls_client = if cfg.sip.tls_ca.is_empty() {
        None
    } else {
        Some(crate::io::tls::client(&cfg.sip.tls_ca, "sip.tls_ca").map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.why))?)
    };
    let ng_sock = if cfg.ng.listen.is_empty() {
        None
    } else {
        let s =
            tokio::net::UdpSocket::bind(&cfg.ng.listen).await.with_context(|| format!("ng.listen: cannot bind UDP {}", cfg.ng.listen))?;
        Some(s)
    };
    let pool = Arc::new(Mutex::new(PortPool::new(cfg.media.port_min, cfg.media.port_max, Duration::from_secs(cfg.media.port_cooldown_s))));
    // Every relay port is a socket: the whole range bound at once needs one descriptor per port,
    // plus SIP, HTTP and the process itself. Raise the soft limit to that (up to the hard limit),
    // and say so when even the hard limit is short (systemd: LimitNOFILE=).
    let ports = (cfg.media.port_max - cfg.media.port_min + 1) as u64;
    let need = ports + 512;
    match crate::sys::raise_nofile(need) {
        Some(have) if have < need => tracing::warn!(
            open_files = have,
            needed = need,
            "open-file limit below what the relay port range needs: calls will get 503 before the range is full; raise it (systemd: LimitNOFILE={need}) or narrow media.port_min..port_max"
        ),
        Some(have) => tracing::debug!(open_files = have, needed = need, "open-file limit"),
        None => tracing::warn!("cannot read the open-file limit"),
    }
    let relay_stats = Arc::new(RelayStats::default());
    let sip_stats = Arc::new(SipStats::default());
    let ng_stats = Arc::new(crate::ng::core::NgStats::default());
    let (tap_tx, tap_rx) = mpsc::channel::<MediaFrame>(cfg.media.tap_queue);
    let (ctl_tx, ctl_rx) = std::sync::mpsc::channel();
    let node = cfg.cluster.node.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.')).collect::<String>();
    let r = &cfg.records;
    let records: crate::record::Records = match r.store.as_str() {
        "memory" => Arc::new(crate::record::MemoryStore::default()),
        "postgres" => {
            let store =
                crate::record::postgres::open(&r.url, &node, r.retention_days, r.mask_transcripts).map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(retention_days = r.retention_days, "call records in PostgreSQL");
            Arc::new(store)
        }
        _ => {
            let path = std::path::Path::new(&r.path);
            let store =
                crate::record::sqlite::open(path, &node, r.retention_days, r.mask_transcripts).map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(path = %path.display(), retention_days = r.retention_days, "call records in SQLite");
            Arc::new(store)
        }
    };
    let asr = if cfg.asr.enabled() {
        let t0 = std::time::Instant::now();
        let engine = crate::analysis::asr::VoskEngine::load(std::path::Path::new(cfg.asr.model.trim()), crate::analysis::vad::RATE)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let pool = crate::analysis::asr::AsrPool::start(
            std::sync::Arc::new(engine),
            cfg.asr.workers,
            cfg.asr.queue_s,
            cfg.asr.pooled,
            crate::analysis::vad::RATE,
            tx,
        );
        tracing::info!(workers = cfg.asr.workers, load_ms = t0.elapsed().as_millis() as u64, "speech recognition on");
        let pack = cfg.asr.phrase_pack().with_context(|| format!("asr.phrases: {}", cfg.asr.phrases))?;
        Some(crate::io::analysis::LiveAsr {
            pool,
            results: rx,
            settings: crate::analysis::call::AsrSettings { config: cfg.asr.clone(), pack },
        })
    } else {
        tracing::info!("speech recognition off (no asr.model configured); timing analysis runs");
        None
    };
    let asr_stats = asr.as_ref().map(|a| a.pool.stats.clone());
    let cues = crate::io::media::CueBus::default();
    let cue = if cfg.cue.enabled {
        let samples = cfg.cue.samples().map_err(|e| anyhow::anyhow!("cue.file: {e}"))?;
        Some((cues.clone(), samples))
    } else {
        None
    };
    let publisher = crate::io::analysis::Publisher {
        metrics: crate::publish::metrics::Metrics {
            labels: std::sync::Arc::new(crate::publish::metrics::LabelCap::new(cfg.limits.max_agent_labels, cfg.limits.max_queue_labels)),
            ..Default::default()
        },
        whisper: Default::default(),
        cue,
        coach: std::sync::Arc::new(cfg.coach.clone()),
        records: records.clone(),
        live: Default::default(),
        node: node.clone().into(),
    };
    crate::io::analysis::spawn(cfg.analysis.clone(), asr, publisher.clone(), tap_rx, ctl_rx);
    let broker_stats = crate::io::broker::parse_url(&cfg.cluster.broker).map(|b| {
        tracing::info!(broker = ?b, node = %cfg.cluster.node, "whisper fan-out through the cluster broker");
        crate::io::broker::spawn(b, cfg.cluster.node.clone(), publisher.whisper.clone())
    });
    let stream_stats = Arc::new(crate::io::stream::StreamStats::default());
    let mut streams = crate::io::stream::StreamState::new(
        cfg.streams.tokens.clone(),
        crate::stream::twilio::TwilioConfig { customer_track: cfg.streams.twilio_customer_track.clone(), ..Default::default() },
        cfg.streams.max_streams,
        tap_tx.clone(),
        ctl_tx.clone(),
        stream_stats.clone(),
        // Stream calls get ids of their own range (proxy from 1, ng from 2^32).
        1 << 33,
        usize::from(cfg.streams.stereo_customer_channel == "right"),
    );
    streams.twilio_auth_token = (!cfg.streams.twilio_auth_token.is_empty()).then(|| Arc::new(cfg.streams.twilio_auth_token.clone()));
    streams.public_url = Arc::new(cfg.streams.public_url.clone());
    streams.audiohook = (!cfg.streams.audiohook_api_key.is_empty()).then(|| {
        Arc::new(crate::io::stream::AudioHookAuth { api_key: cfg.streams.audiohook_api_key.clone(), secret: cfg.audiohook_secret() })
    });
    if !cfg.streams.tls_listen.is_empty() {
        let tls = crate::io::tls::load("streams", &cfg.streams.tls_cert, &cfg.streams.tls_key, "")
            .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.why))?;
        let l = tokio::net::TcpListener::bind(&cfg.streams.tls_listen)
            .await
            .with_context(|| format!("streams.tls_listen: cannot bind {}", cfg.streams.tls_listen))?;
        tracing::info!(addr = %cfg.streams.tls_listen, "media-stream endpoints listening over TLS");
        let max = cfg.streams.max_streams as usize + 64;
        tokio::spawn(crate::io::tls::serve(l, tls, crate::io::stream::router(streams.clone()), max, stream_stats.clone()));
    }
    if !cfg.streams.audiosocket_listen.is_empty() {
        let l = tokio::net::TcpListener::bind(&cfg.streams.audiosocket_listen)
            .await
            .with_context(|| format!("streams.audiosocket_listen: cannot bind {}", cfg.streams.audiosocket_listen))?;
        let allow = cfg.streams.audiosocket_allow.iter().filter_map(|a| crate::net::SourcePattern::parse(a)).collect();
        tracing::info!(addr = %cfg.streams.audiosocket_listen, "AudioSocket input listening");
        tokio::spawn(crate::io::stream::run_audiosocket(l, streams.clone(), allow));
    }
    // The SIPREC recording server: on the SIP listener, media from the relay's port pool.
    let srs_stats = Arc::new(crate::siprec::core::SrsStats::default());
    let srs = cfg.siprec.enabled.then(|| {
        let allow: Vec<_> = cfg.siprec.allow.iter().filter_map(|a| crate::net::SourcePattern::parse(a)).collect();
        let (timeouts_tx, timeouts) = mpsc::unbounded_channel();
        let rec = crate::io::siprec::RecorderDriver::new(
            pool.clone(),
            cfg.media_bind(crate::call::Party::Customer),
            allow.clone(),
            tap_tx.clone(),
            ctl_tx.clone(),
            Duration::from_secs(cfg.media.rtp_timeout_s.max(1)),
            timeouts_tx,
            srs_stats.clone(),
        );
        let none = |h: &str| (!h.is_empty()).then(|| h.to_string());
        let core = crate::siprec::core::SrsCore::new(
            crate::siprec::core::SrsConfig {
                host: cfg.sip_advertise().to_string(),
                port: local.port(),
                media_host: cfg.media_advertise_for(crate::call::Party::Customer),
                allow,
                max_sessions: cfg.siprec.max_sessions,
                roles: crate::siprec::metadata::Roles {
                    agent_aor: cfg.siprec.agent_aor.clone(),
                    customer_aor: cfg.siprec.customer_aor.clone(),
                    customer_stream: usize::from(cfg.siprec.customer_stream == "second"),
                },
                agent_id_header: none(&cfg.siprec.agent_id_header),
                queue_header: none(&cfg.siprec.queue_header),
            },
            srs_stats.clone(),
            // Recorded calls get ids of their own range.
            1 << 34,
        );
        tracing::info!(sip = %local, "SIPREC recording server on");
        crate::io::sip::SrsDriver { core, rec, timeouts }
    });
    let recv_stats = srs.as_ref().map(|s| s.rec.stats.clone());
    let (ended_tx, ended_rx) = mpsc::unbounded_channel();
    let mut media = MediaManager::new(
        MediaSettings {
            bind: [cfg.media_bind(crate::call::Party::Customer), cfg.media_bind(crate::call::Party::Agent)],
            policy: cfg.media_policy(),
            max_calls: cfg.limits.max_calls,
            max_streams: cfg.limits.max_streams_per_call,
            ice_lite: cfg.media.ice == crate::config::IceMode::Lite,
        },
        pool.clone(),
        tap_tx,
        relay_stats.clone(),
        ended_tx,
        ctl_tx,
        cues,
    );
    // One list of live calls for `/calls`: the relay's entries and every other input's.
    media.registry = publisher.live.clone();
    let proxy = Proxy::new(
        ProxyConfig {
            host: cfg.sip_advertise(),
            port: local.port(),
            media_hosts: [cfg.media_advertise_for(crate::call::Party::Customer), cfg.media_advertise_for(crate::call::Party::Agent)],
            pbx_sources: cfg.pbx_sources()?,
            pbx_route: Target::parse(&cfg.pbx.route).context("pbx.route")?,
            agents_route: cfg.agents.route.as_deref().and_then(Target::parse),
            agent_id_header: cfg.agents.agent_id_header.clone(),
            queue_header: cfg.agents.queue_header.clone(),
            linger: Duration::from_secs(cfg.sip.transaction_linger_s),
            new_calls_per_source_per_s: cfg.limits.new_calls_per_source_per_s,
            guards: crate::sip::proxy::ProxyGuards {
                timer_c: Duration::from_secs(cfg.sip.timer_c_s),
                agent_sources: cfg.agent_sources()?,
                aliases: cfg.sip.aliases.iter().map(|a| a.to_ascii_lowercase()).collect(),
                requests_per_source_per_s: cfg.limits.requests_per_source_per_s,
                max_transactions: cfg.limits.max_transactions,
                path: cfg.agents.path,
                contact_alias: cfg.agents.contact_alias,
            },
            tls_port,
            agents_iface: cfg.agents_iface(),
        },
        sip_stats.clone(),
    );
    if !cfg.http.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
            .await
            .with_context(|| format!("http.listen: cannot bind {}", cfg.http.listen))?;
        let registry = crate::publish::metrics::registry(
            &publisher.metrics,
            crate::publish::metrics::LiveCounters {
                relay: relay_stats.clone(),
                sip: sip_stats.clone(),
                pool: pool.clone(),
                asr: asr_stats.clone(),
                ng: (!cfg.ng.listen.is_empty()).then(|| ng_stats.clone()),
                broker: broker_stats.clone(),
                streams: Some(stream_stats.clone()),
                siprec: recv_stats.map(|r| (srs_stats.clone(), r)),
                records: Some(records.clone()),
            },
        );
        let whisper =
            crate::publish::whisper::WhisperState { hub: publisher.whisper.clone(), config: std::sync::Arc::new(cfg.whisper.clone()) };
        let app = router(HttpState {
            relay: relay_stats,
            sip: sip_stats,
            pool: pool.clone(),
            registry: media.registry.clone(),
            records,
            asr: asr_stats,
            metrics: std::sync::Arc::new(registry),
            whisper,
            streams,
            require_tokens: cfg.http.require_tokens,
        });
        tracing::info!(addr = %cfg.http.listen, "status endpoint listening");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await;
        });
    }
    tracing::info!(
        sip = %local,
        media_customer_side = %cfg.media_bind(crate::call::Party::Customer),
        media_agent_side = %cfg.media_bind(crate::call::Party::Agent),
        advertised_customer_side = %cfg.media_advertise_for(crate::call::Party::Customer),
        advertised_agent_side = %cfg.media_advertise_for(crate::call::Party::Agent),
        ports = format!("{}-{}", cfg.media.port_min, cfg.media.port_max),
        "hearken relay running"
    );
    let media_hosts = [cfg.media_advertise_for(crate::call::Party::Customer), cfg.media_advertise_for(crate::call::Party::Agent)];
    let ng = ng_sock.map(|sock| {
        let n = &cfg.ng;
        tracing::info!(ng = %n.listen, "ng control plane listening");
        crate::io::sip::NgDriver {
            sock,
            // ng calls get ids of their own range: the proxy's start at 1.
            core: crate::ng::core::NgCore::new(
                crate::ng::core::NgConfig {
                    offerer: n.offerer,
                    customer_label: n.customer_label.clone(),
                    agent_label: n.agent_label.clone(),
                    customer_direction: (!n.customer_direction.is_empty()).then(|| n.customer_direction.clone()),
                    agent_id_key: n.agent_id_key.clone(),
                    queue_key: n.queue_key.clone(),
                    delete_delay: Duration::from_secs(n.delete_delay_s),
                    reply_cache: Duration::from_secs(30),
                    media_hosts,
                },
                ng_stats.clone(),
                1 << 32,
            ),
            allow: n.allow.iter().filter_map(|a| crate::net::SourcePattern::parse(a)).collect(),
            teardown_url: (!n.teardown_url.is_empty()).then(|| n.teardown_url.clone()),
        }
    });
    if !cfg.sip.enabled {
        tracing::info!("SIP proxy off (sip.enabled = false): ng only");
    }
    let tls = if cfg.siprec.enabled && !cfg.siprec.tls_listen.is_empty() {
        let sr = &cfg.siprec;
        let config = crate::io::tls::load("siprec", &sr.tls_cert, &sr.tls_key, &sr.tls_client_ca)
            .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.why))?;
        let l = tokio::net::TcpListener::bind(&sr.tls_listen)
            .await
            .with_context(|| format!("siprec.tls_listen: cannot bind {}", sr.tls_listen))?;
        tracing::info!(addr = %sr.tls_listen, mutual = !sr.tls_client_ca.is_empty(), "SIP over TLS for recording clients");
        Some((l, config))
    } else {
        None
    };
    let limits = crate::io::sip::ConnLimits {
        max_connections: cfg.limits.max_sip_connections,
        idle: Duration::from_secs(cfg.limits.sip_idle_timeout_s),
    };
    let (agents_udp, agents_tcp) = match agents_sockets {
        Some((u, t)) => (Some(u), Some(t)),
        None => (None, None),
    };
    // What leaves towards these goes out of the PBX-side socket (with `sip.agents_listen`): the
    // PBX's addresses, and pbx.route's next hop when it is not one of them.
    let mut pbx_sources = cfg.pbx_sources()?;
    if let Some(t) = Target::parse(&cfg.pbx.route) {
        if let Ok(ip) = t.host.trim_matches(['[', ']']).parse() {
            pbx_sources.push(crate::net::SourcePattern { ip, port: Some(t.port) });
        }
    }
    let driver = SipDriver {
        proxy,
        media,
        udp,
        tcp,
        agents_udp,
        agents_tcp,
        pbx_sources,
        ng,
        srs,
        tls,
        proxy_tls,
        tls_client,
        limits,
        media_ended: ended_rx,
    };
    tokio::select! {
        _ = driver.run() => {}
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
