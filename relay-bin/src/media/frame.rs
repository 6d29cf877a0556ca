//! [`Frame`]: one FLV tag of a live stream, as every consumer of the node sees it.

use std::time::{Duration, Instant};

use bytes::Bytes;

pub use transport::MediaKind;

/// Which RTMP message type carries a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// RTMP message type 8.
    Audio,
    /// RTMP message type 9.
    Video,
    /// RTMP message type 18 (AMF0 data).
    Data,
}

impl Track {
    /// The RTMP message type id of this track.
    pub fn message_type(self) -> u8 {
        match self {
            Track::Audio => 8,
            Track::Video => 9,
            Track::Data => 18,
        }
    }
}

/// One frame of a live stream. Cloning it clones two reference counts, never the payload.
#[derive(Debug, Clone)]
pub struct Frame {
    /// What the frame is to a decoder.
    pub kind: MediaKind,
    /// The RTMP message type that carries it.
    pub track: Track,
    /// Decode timestamp in milliseconds on the stream's unwrapped (64-bit), corrected timeline.
    pub dts_ms: u64,
    /// Presentation timestamp in milliseconds (dts + composition offset; equal to dts without B-frames).
    pub pts_ms: u64,
    /// The FLV tag body exactly as the publisher sent it in its RTMP message.
    pub body: Bytes,
    /// The frame as RTMP chunks (full type-0 header, the node's chunk size), encoded once at ingest and
    /// written as is to every viewer.
    pub wire: Bytes,
    /// When the frame was captured: on the first hop, when the node received it from its publisher; on a
    /// later hop, the capture time the link carried (so every hop's budget counts what earlier hops spent).
    pub capture: Instant,
    /// The frame's end-to-end latency budget from `capture`, where the frame carries one (a mesh link sets
    /// it); `None` means the consuming app's own budget (`fanout.latency_budget_ms`) applies.
    pub budget: Option<Duration>,
}

impl Frame {
    /// How long the frame may still wait at `now` before it is late: its budget (or `default_budget`) less
    /// the time since capture; zero once it is late.
    pub fn time_left(&self, now: Instant, default_budget: Duration) -> Duration {
        self.budget
            .unwrap_or(default_budget)
            .saturating_sub(now.saturating_duration_since(self.capture))
    }

    /// Bytes this frame costs a viewer queue (its wire form).
    pub fn cost_bytes(&self) -> usize {
        self.wire.len()
    }
}
