//! TLS for the stream endpoints (`streams.tls_listen`): platforms such as Twilio and Genesys
//! connect from the internet and only speak `wss://`. A plain TCP accept loop, a rustls
//! handshake (bounded in time and in connections), then the same axum router over HTTP/1.1
//! with WebSocket upgrades.
//!
//! Not here: what the endpoints do (io::stream).

use crate::io::stream::StreamStats;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// A config key and why its value cannot be used.
#[derive(Debug)]
pub struct LoadError {
    pub key: String,
    pub why: String,
}

fn certs_of(path: &str, key: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, LoadError> {
    let err = |why: String| LoadError { key: key.to_string(), why };
    let pem = std::fs::read(path).map_err(|e| err(format!("cannot read {path}: {e}")))?;
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<_, _>>().map_err(|e| err(format!("{path} is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(format!("{path} holds no certificate")));
    }
    Ok(certs)
}

/// A client config that verifies servers against the CA certificates in `ca` (config key
/// `key`): for SIP over TLS connections Hearken opens itself.
pub fn client(ca: &str, key: &str) -> Result<Arc<rustls::ClientConfig>, LoadError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_of(ca, key)? {
        roots.add(c).map_err(|e| LoadError { key: key.to_string(), why: format!("not a usable CA certificate: {e}") })?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError { key: key.to_string(), why: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The server config from a PEM certificate chain and private key (config keys
/// `<section>.tls_cert` / `<section>.tls_key`) and, when `client_ca` is set
/// (`<section>.tls_client_ca`), client certificates required and verified against it.
pub fn load(section: &str, cert: &str, key: &str, client_ca: &str) -> Result<Arc<rustls::ServerConfig>, LoadError> {
    let k = |name: &str| format!("{section}.{name}");
    let err = |key: String, why: String| LoadError { key, why };
    if cert.is_empty() {
        return Err(err(k("tls_cert"), "is required with a TLS listener".into()));
    }
    if key.is_empty() {
        return Err(err(k("tls_key"), "is required with a TLS listener".into()));
    }
    let certs = certs_of(cert, &k("tls_cert"))?;
    let pem = std::fs::read(key).map_err(|e| err(k("tls_key"), format!("cannot read {key}: {e}")))?;
    let private = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| err(k("tls_key"), format!("{key} is not PEM: {e}")))?
        .ok_or_else(|| err(k("tls_key"), format!("{key} holds no private key")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(k("tls_cert"), e.to_string()))?;
    let builder = if client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs_of(client_ca, &k("tls_client_ca"))? {
            roots.add(c).map_err(|e| err(k("tls_client_ca"), format!("not a usable CA certificate: {e}")))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| err(k("tls_client_ca"), e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder
        .with_single_cert(certs, private)
        .map_err(|e| err(k("tls_key"), format!("does not match the certificate or is not usable: {e}")))?;
    Ok(Arc::new(config))
}

/// TLS handshakes one source may have in progress at once.
const HANDSHAKES_PER_SOURCE: u32 = 8;

/// Serve `app` over TLS on `listener`: at most `max_connections` at once (more are closed and
/// counted as refused streams), handshakes within 5 s and at most `HANDSHAKES_PER_SOURCE` in
/// progress per source (failures and refusals counted), so idle connections cannot hold the
/// listener shut.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
    max_connections: usize,
    stats: Arc<StreamStats>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.min(tokio::sync::Semaphore::MAX_PERMITS)));
    let handshaking: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>> = Default::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "TLS stream listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Relaxed);
            continue;
        };
        {
            let mut h = handshaking.lock().unwrap_or_else(|e| e.into_inner());
            let n = h.entry(peer.ip()).or_insert(0);
            if *n >= HANDSHAKES_PER_SOURCE {
                stats.tls_handshake_failed.fetch_add(1, Relaxed);
                continue;
            }
            *n += 1;
        }
        let (acceptor, app, stats, handshaking) = (acceptor.clone(), app.clone(), stats.clone(), handshaking.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let r = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await;
            {
                let mut h = handshaking.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = h.get_mut(&peer.ip()) {
                    *n -= 1;
                    if *n == 0 {
                        h.remove(&peer.ip());
                    }
                }
            }
            let Ok(Ok(tls)) = r else {
                stats.tls_handshake_failed.fetch_add(1, Relaxed);
                return;
            };
            // The handlers see the client's address as on the plain listener.
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades();
            let _ = conn.await;
        });
    }
}
