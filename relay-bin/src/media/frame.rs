//! [`Frame`]: one FLV tag of a live stream, as every consumer of the node sees it, with the [`Encodings`]
//! outputs made of it.

use std::sync::{Arc, OnceLock};
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

/// How long a frame captured at `capture` with `budget` (else `default_budget`) may still wait at `now`;
/// zero once it is late.
pub fn time_left(
    capture: Instant,
    budget: Option<Duration>,
    now: Instant,
    default_budget: Duration,
) -> Duration {
    budget
        .unwrap_or(default_budget)
        .saturating_sub(now.saturating_duration_since(capture))
}

/// Bytes a queue or cache charges for holding a frame, on top of its bytes: the memory that comes with every
/// frame held whatever its size (the frame or queue entry itself, its reference-count blocks, the slot it
/// takes), so a limit in bytes also bounds a flood of tiny frames.
pub const FRAME_OVERHEAD_BYTES: usize = 128;

/// The encodings of one frame that outputs made of it, each made once (by the first viewer of that output on
/// any core) and shared by every viewer of that output. A frame starts with none: an output that no viewer
/// uses costs nothing.
#[derive(Debug, Default)]
pub struct Encodings {
    /// The RTMP output's form: the message as chunks with a full header (`rtmp::wire::frame_chunks`).
    pub rtmp: OnceLock<Bytes>,
    /// The mesh link's form: a `mesh::wire::MediaHeader` then the body (made once, shared by every link).
    pub mesh: OnceLock<Bytes>,
    /// The HTTP-FLV output's form: the FLV tag as one HTTP chunk (`egress::http_flv::frame_tag`).
    pub http_flv: OnceLock<Bytes>,
}

/// One frame of a live stream, protocol-neutral. Cloning it clones two reference counts, never the payload.
#[derive(Debug, Clone)]
pub struct Frame {
    /// What the frame is to a decoder.
    pub kind: MediaKind,
    /// The track (audio, video, data) that carries it.
    pub track: Track,
    /// Decode timestamp in milliseconds on the stream's unwrapped (64-bit), corrected timeline.
    pub dts_ms: u64,
    /// Presentation timestamp in milliseconds (dts + composition offset; equal to dts without B-frames).
    pub pts_ms: u64,
    /// The FLV tag body exactly as the publisher sent it in its RTMP message.
    pub body: Bytes,
    /// When the frame was captured: on the first hop, when the node received it from its publisher; on a
    /// later hop, the capture time the link carried (so every hop's budget counts what earlier hops spent).
    pub capture: Instant,
    /// The frame's end-to-end latency budget from `capture`, where the frame carries one (a mesh link sets
    /// it); `None` means the consuming app's own budget (`fanout.latency_budget_ms`) applies.
    pub budget: Option<Duration>,
    /// What outputs encoded of it, shared by every clone.
    pub encodings: Arc<Encodings>,
}

impl Frame {
    /// A frame with no budget of its own and nothing encoded yet.
    pub fn new(
        kind: MediaKind,
        track: Track,
        dts_ms: u64,
        pts_ms: u64,
        body: Bytes,
        capture: Instant,
    ) -> Frame {
        Frame {
            kind,
            track,
            dts_ms,
            pts_ms,
            body,
            capture,
            budget: None,
            encodings: Arc::default(),
        }
    }

    /// How long the frame may still wait at `now` before it is late: its budget (or `default_budget`) less
    /// the time since capture; zero once it is late.
    pub fn time_left(&self, now: Instant, default_budget: Duration) -> Duration {
        time_left(self.capture, self.budget, now, default_budget)
    }

    /// Bytes this frame costs a cache that holds it: its body and [`FRAME_OVERHEAD_BYTES`] (what outputs
    /// encoded is charged by them).
    pub fn cost_bytes(&self) -> usize {
        self.body.len() + FRAME_OVERHEAD_BYTES
    }
}
