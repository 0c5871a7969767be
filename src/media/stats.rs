//! Relay-wide counters, written by the call tasks and read by /status and Prometheus.
//!
//! Not here: per-call counters (the session core keeps those).

use crate::media::session::DropReason;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Relay-wide counters (exported on /status, later /metrics).
#[derive(Debug, Default)]
pub struct RelayStats {
    pub forwarded_packets: AtomicU64,
    pub forwarded_bytes: AtomicU64,
    pub dropped: [AtomicU64; 4],
    pub send_errors: AtomicU64,
    pub tap_frames: AtomicU64,
    pub tap_dropped: AtomicU64,
    pub active_calls: AtomicU64,
    pub rtp_timeouts: AtomicU64,
    pub dead_legs: AtomicU64,
    pub setup_timeouts: AtomicU64,
    /// SRTP packets forwarded untouched (tapped for analysis, which decrypts them with SDES keys).
    pub srtp_packets: AtomicU64,
    /// Audio cues not played because the agent leg is SRTP.
    pub cues_skipped_srtp: AtomicU64,
    pub endpoint_moves: AtomicU64,
    /// ICE connectivity checks answered (ICE-lite).
    pub stun_answered: AtomicU64,
    pub moves_refused: AtomicU64,
}

impl RelayStats {
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize].load(Relaxed)
    }
}
