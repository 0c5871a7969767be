//! SIPREC recording server (RFC 7866 protocol, RFC 7865 metadata): an SBC or proxy (Cisco CUBE,
//! Oracle/Acme, AudioCodes, Ribbon, OpenSIPS `siprec`, jambonz, Twilio) forks each call's two
//! directions to Hearken as a recording session; Hearken answers receive-only and analyses the
//! call like an inline one (input `siprec`). It never sits in the call's path.
//!
//! [`body`] splits the multipart body, [`metadata`] reads who sends which stream, [`core`] is
//! the SIP side (sans-IO); `io::siprec` receives the media.

pub mod body;
pub mod core;
pub mod metadata;
