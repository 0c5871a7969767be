//! Drivers: sockets, tasks and timers around the sans-IO cores.
pub mod analysis;
pub mod broker;
pub mod http;
pub mod media;
pub mod sip;
pub mod siprec;
pub mod stream;
pub mod tls;
