//! Transcoding into an ABR ladder: supervised ffmpeg workers that read a live stream from this node and
//! publish its renditions back to it as streams of their own (`STREAM_720p`, ...), keyframes aligned with
//! the source's, so players switch between them (the HLS multivariant playlist of the source lists them).
//!
//! - [`ladder`]: renditions (`"720p 2500k"`), their names, sizes, codecs and the ffmpeg command;
//! - [`plan`]: which streams are transcoded now (sans-IO: the live streams, the ladders, the API, `now`);
//! - [`supervisor`]: the thread that runs the plan's processes and reports them.

pub mod ladder;
pub mod plan;
pub mod supervisor;

pub use supervisor::{TranscodeInfo, TranscodeStats, Transcoder};
