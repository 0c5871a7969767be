//! Receive side of recording sessions ([`crate::siprec::core::Recorder`]): ports from the relay's
//! pool (RTP on `p`, RTCP on `p + 1`, read and dropped), one task per port that checks the
//! source, decrypts SDES-SRTP, and taps each packet to the analysis as its party's RTP through
//! the same bounded queue the relay uses (dropped and counted when full, never waited for). A
//! session that receives nothing for the RTP timeout (while not paused) is reported, so the core
//! ends it with a BYE.
//!
//! Not here: SIP (siprec::core), analysis.

use crate::call::{AnalysisCmd, MediaFrame, OpenError};
use crate::media::ports::PortPool;
use crate::media::srtp::SrtpRx;
use crate::net::SourcePattern;
use crate::siprec::core::{Recorder, RsMedia, SrsStats};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Receive-side counters.
#[derive(Debug, Default)]
pub struct RecvStats {
    pub packets: AtomicU64,
    /// From a source that is neither the session's SDP address nor an allowed recording client.
    pub foreign: AtomicU64,
    /// Not RTP, or SRTP that did not authenticate.
    pub malformed: AtomicU64,
    /// The analysis queue was full.
    pub tap_dropped: AtomicU64,
}

struct Running {
    cfg: watch::Sender<RsMedia>,
}

pub struct RecorderDriver {
    pool: Arc<Mutex<PortPool>>,
    bind: IpAddr,
    allow: Arc<Vec<SourcePattern>>,
    tap: mpsc::Sender<MediaFrame>,
    ctl: std::sync::mpsc::Sender<AnalysisCmd>,
    rtp_timeout: Duration,
    /// Sockets bound by `open`, waiting for their session's first `configure`.
    bound: HashMap<u16, (UdpSocket, UdpSocket)>,
    running: HashMap<u64, Running>,
    timeouts: mpsc::UnboundedSender<u64>,
    pub stats: Arc<RecvStats>,
    pub srs: Arc<SrsStats>,
}

impl RecorderDriver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: Arc<Mutex<PortPool>>,
        bind: IpAddr,
        allow: Vec<SourcePattern>,
        tap: mpsc::Sender<MediaFrame>,
        ctl: std::sync::mpsc::Sender<AnalysisCmd>,
        rtp_timeout: Duration,
        timeouts: mpsc::UnboundedSender<u64>,
        srs: Arc<SrsStats>,
    ) -> Self {
        RecorderDriver {
            pool,
            bind,
            allow: Arc::new(allow),
            tap,
            ctl,
            rtp_timeout,
            bound: HashMap::new(),
            running: HashMap::new(),
            timeouts,
            stats: Default::default(),
            srs,
        }
    }
}

impl Recorder for RecorderDriver {
    fn open(&mut self, n: usize) -> Result<Vec<u16>, OpenError> {
        let mut got = Vec::new();
        let now = Instant::now();
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..n {
            let Some((p, rtp, rtcp)) = crate::io::media::take_bound_pair(&mut pool, self.bind, now) else { break };
            self.bound.insert(p, (rtp, rtcp));
            got.push(p);
        }
        if got.len() < n {
            for p in got {
                self.bound.remove(&p);
                pool.release(p, now);
            }
            return Err(OpenError::PortsExhausted);
        }
        Ok(got)
    }

    fn configure(&mut self, rs: u64, media: RsMedia) {
        if let Some(r) = self.running.get(&rs) {
            let _ = r.cfg.send(media);
            return;
        }
        let ports: Vec<u16> = media.streams.iter().map(|s| s.port).collect();
        let (tx, rx) = watch::channel(media);
        let last = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        for (i, p) in ports.iter().enumerate() {
            let Some((rtp, rtcp)) = self.bound.remove(p) else { continue };
            tokio::spawn(receive(i, rtp, rtcp, rx.clone(), self.allow.clone(), self.tap.clone(), self.stats.clone(), last.clone(), t0));
        }
        // The session's RTP timeout: nothing on any port, while not paused.
        let (timeout, report, mut watch_rx) = (self.rtp_timeout, self.timeouts.clone(), rx);
        tokio::spawn(async move {
            // The last sign of life: a packet, the start, or the end of a pause.
            let mut mark = Instant::now();
            loop {
                tokio::select! {
                    r = watch_rx.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let paused = watch_rx.borrow().streams.iter().all(|s| !s.active);
                mark = mark.max(t0 + Duration::from_millis(last.load(Relaxed)));
                if paused {
                    mark = Instant::now();
                } else if mark.elapsed() >= timeout {
                    let _ = report.send(rs);
                    return;
                }
            }
        });
        self.running.insert(rs, Running { cfg: tx });
    }

    fn close(&mut self, rs: u64, ports: &[u16]) {
        // Dropping the watch sender stops the session's tasks (their sockets close with them).
        self.running.remove(&rs);
        let now = Instant::now();
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        for p in ports {
            self.bound.remove(p);
            pool.release(*p, now);
        }
    }

    fn analysis(&mut self, cmd: AnalysisCmd) {
        let _ = self.ctl.send(cmd);
    }
}

/// One port of a recording session: its packets to the analysis.
#[allow(clippy::too_many_arguments)]
async fn receive(
    index: usize,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    mut cfg: watch::Receiver<RsMedia>,
    allow: Arc<Vec<SourcePattern>>,
    tap: mpsc::Sender<MediaFrame>,
    stats: Arc<RecvStats>,
    last: Arc<AtomicU64>,
    t0: Instant,
) {
    let mut buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 2048];
    let mut srtp: Option<SrtpRx> = None;
    loop {
        let (n, src) = tokio::select! {
            r = rtp.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
            // RTCP is read so it does not pile up; the analysis does not use it.
            _ = rtcp.recv_from(&mut rtcp_buf) => continue,
            r = cfg.changed() => { if r.is_err() { return } continue }
        };
        // What this port carries now, read in place (no per-packet copy of the stream's key):
        // the decryption context follows a key change.
        let (call, party, source, active, encrypted) = {
            let c = cfg.borrow();
            let Some(s) = c.streams.get(index) else { continue };
            match &s.key {
                Some(key) if srtp.as_ref().is_none_or(|r| r.key() != key) => srtp = SrtpRx::new(key),
                Some(_) => {}
                None => srtp = None,
            }
            (c.call, s.party, s.source, s.active, s.key.is_some())
        };
        if src.ip() != source && !allow.iter().any(|p| p.matches(src)) {
            stats.foreign.fetch_add(1, Relaxed);
            continue;
        }
        stats.packets.fetch_add(1, Relaxed);
        last.store(t0.elapsed().as_millis() as u64, Relaxed);
        let (Some(call), Some(party), true) = (call, party, active) else { continue };
        let packet = match encrypted {
            true => match srtp.as_mut().map(|r| r.decrypt(&buf[..n])) {
                Some(Ok(p)) => p,
                _ => {
                    stats.malformed.fetch_add(1, Relaxed);
                    continue;
                }
            },
            false => buf[..n].to_vec(),
        };
        let Ok(header) = crate::rtp::parse_rtp(&packet) else {
            stats.malformed.fetch_add(1, Relaxed);
            continue;
        };
        match tap.try_reserve() {
            Ok(permit) => permit.send(MediaFrame { call, party, stream: 0, arrival: Instant::now(), header, packet, encrypted: false }),
            Err(_) => {
                stats.tap_dropped.fetch_add(1, Relaxed);
            }
        }
    }
}
