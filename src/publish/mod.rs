//! Publishing: Prometheus metrics ([`metrics`]) and the agents' whisper channel ([`whisper`]).
pub mod metrics;
pub mod whisper;
