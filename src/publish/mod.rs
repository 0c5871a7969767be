//! Publishing: Prometheus metrics ([`metrics`]).
pub mod metrics;
