//! Hearken: a SIP-aware RTP relay for contact centres that measures active listening.
//!
//! Cores are sans-IO (`sip::proxy`, `media::session`, `sdp`, `rtp`); `io` holds the drivers.
pub mod analysis;
pub mod analyze;
pub mod call;
pub mod coach;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod demo;
#[cfg(feature = "testing")]
pub mod fuzzing;
pub mod io;
pub mod media;
pub mod net;
pub mod ng;
pub mod publish;
pub mod record;
pub mod rtp;
pub mod sdp;
pub mod sip;
pub mod siprec;
pub mod stream;
pub mod sys;
#[cfg(test)]
mod testing;
