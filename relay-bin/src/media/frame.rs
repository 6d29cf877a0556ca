//! [`Frame`]: one FLV tag of a live stream, as every consumer of the node sees it.

use std::time::Instant;

use bytes::Bytes;

/// What a frame is to a decoder: decides how it is cached, prioritised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Stream metadata (`onMetaData`).
    Meta,
    /// A decoder configuration record (AVC/HEVC/AV1 sequence header, AAC AudioSpecificConfig).
    SeqHeader,
    /// A video frame a decoder can start on (IDR / keyframe).
    Key,
    /// A video frame that others may reference.
    Inter,
    /// A video frame no other frame references (non-reference B-frame): the first to drop.
    Disposable,
    /// An audio frame.
    Audio,
}

impl FrameKind {
    /// Metadata or a sequence header: a decoder needs it, so no policy ever drops it.
    pub fn is_essential(self) -> bool {
        matches!(self, FrameKind::Meta | FrameKind::SeqHeader)
    }

    /// The kind's name in logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Meta => "meta",
            FrameKind::SeqHeader => "seq_header",
            FrameKind::Key => "key",
            FrameKind::Inter => "inter",
            FrameKind::Disposable => "disposable",
            FrameKind::Audio => "audio",
        }
    }
}

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
    pub kind: FrameKind,
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
    /// When the node received the frame from its publisher (for latency budgets and added-latency stats).
    pub received_at: Instant,
}

impl Frame {
    /// Bytes this frame costs a viewer queue (its wire form).
    pub fn cost_bytes(&self) -> usize {
        self.wire.len()
    }
}
