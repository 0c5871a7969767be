//! Analysis of the tapped media: VAD per leg, turn-taking metrics, and the pipeline that feeds
//! them from WAV files or live RTP alike.
pub mod asr;
pub mod call;
pub mod jitter;
pub mod live;
pub mod pcap;
pub mod phrases;
pub mod pipeline;
pub mod quality;
pub mod turns;
pub mod vad;
pub mod wav;
