//! Fan-out: per-viewer queues with drop policies.

pub mod viewer_queue;

pub use viewer_queue::{Pushed, QueueStats, ViewerQueue, WireForm};
