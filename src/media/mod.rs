//! Media: the per-call session core ([`session`]) and the relay port pool ([`ports`]).
pub mod anchor;
pub mod cue;
pub mod ports;
pub mod session;
pub mod srtp;
pub mod stats;
pub mod stun;
