//! Snapshots: a stream's latest keyframe, or a recording's keyframe at a time, as a JPEG.
//!
//! - [`access_unit`]: the keyframe and its sequence header, as the H.264 access unit a decoder reads;
//! - [`picture`]: decoding (OpenH264), scaling and JPEG encoding;
//! - [`worker`]: `popline snapshot-worker`, the child process that runs [`picture`], and its framing;
//! - [`decoders`]: the bounded, supervised pool of those processes (or of `ffmpeg` ones);
//! - [`service`]: the per-keyframe cache in front of the pool;
//! - [`recorded`]: finding a keyframe in a recording;
//! - [`periodic`]: the per-app job that saves snapshots to a folder every few seconds.

pub mod access_unit;
pub mod decoders;
pub mod error;
pub mod periodic;
pub mod picture;
pub mod recorded;
pub mod service;
pub mod worker;

pub use access_unit::Keyframe;
pub use error::SnapshotError;
pub use service::{Snapshot, SnapshotService};
