//! What the transport carries: media frames with a kind, a priority and an end-to-end deadline.

use bytes::Bytes;
use std::fmt;
use std::time::{Duration, Instant};

/// Identifies one live stream multiplexed on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

/// A frame's position in its stream, counted from 0 by the sender in the order `send_frame` was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameSeq(pub u64);

/// What a frame is, which decides its priority and what depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Codec configuration (AVC/AAC sequence header): nothing decodes without it.
    SeqHeader,
    /// Stream metadata (`onMetaData`).
    Metadata,
    /// One audio frame; audio frames do not depend on each other.
    Audio,
    /// A video keyframe: starts a GOP, depends on nothing earlier.
    Key,
    /// A video frame that later frames of its GOP may reference.
    Inter,
    /// A video frame nothing references (e.g. a non-reference B-frame): dropping it costs only itself.
    Disposable,
}

impl MediaKind {
    /// Every kind, highest priority first.
    pub const ALL: [MediaKind; 6] = [
        MediaKind::SeqHeader,
        MediaKind::Metadata,
        MediaKind::Audio,
        MediaKind::Key,
        MediaKind::Inter,
        MediaKind::Disposable,
    ];

    /// Scheduling class, 0 = sent first and dropped last. Sequence headers and metadata share class 0.
    pub fn priority(self) -> usize {
        match self {
            MediaKind::SeqHeader | MediaKind::Metadata => 0,
            MediaKind::Audio => 1,
            MediaKind::Key => 2,
            MediaKind::Inter => 3,
            MediaKind::Disposable => 4,
        }
    }

    /// Number of scheduling classes.
    pub const PRIORITY_CLASSES: usize = 5;

    /// True for video frames, whose decodability depends on the GOP.
    pub fn is_video(self) -> bool {
        matches!(self, MediaKind::Key | MediaKind::Inter | MediaKind::Disposable)
    }

    /// Metadata or a sequence header: a decoder needs it, so no drop policy ever drops it.
    pub fn is_essential(self) -> bool {
        matches!(self, MediaKind::SeqHeader | MediaKind::Metadata)
    }

    /// True when losing this frame makes the rest of its GOP undecodable.
    pub fn breaks_gop_when_lost(self) -> bool {
        matches!(self, MediaKind::Key | MediaKind::Inter)
    }

    /// The one-byte code on the wire.
    pub fn code(self) -> u8 {
        match self {
            MediaKind::SeqHeader => 0,
            MediaKind::Metadata => 1,
            MediaKind::Audio => 2,
            MediaKind::Key => 3,
            MediaKind::Inter => 4,
            MediaKind::Disposable => 5,
        }
    }

    /// Decodes the one-byte wire code.
    pub fn from_code(code: u8) -> Option<MediaKind> {
        MediaKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// A short lowercase name for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::SeqHeader => "seq_header",
            MediaKind::Metadata => "metadata",
            MediaKind::Audio => "audio",
            MediaKind::Key => "key",
            MediaKind::Inter => "inter",
            MediaKind::Disposable => "disposable",
        }
    }
}

/// A media frame handed to [`crate::Endpoint::send_frame`].
#[derive(Debug, Clone)]
pub struct MediaFrame {
    /// What the frame is.
    pub kind: MediaKind,
    /// The payload, shared by reference: the transport never copies it on the send side.
    pub bytes: Bytes,
    /// When the frame was captured (on the first hop) or its estimated capture time (on later hops).
    pub capture: Instant,
    /// End-to-end latency budget from `capture`; `None` = deliver reliably, however late (bulk data).
    pub budget: Option<Duration>,
}

impl MediaFrame {
    /// The instant after which the frame is useless to the viewer, if it has a budget.
    pub fn deadline(&self) -> Option<Instant> {
        self.budget.and_then(|b| self.capture.checked_add(b))
    }
}

/// Why a frame was dropped instead of delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// It could no longer reach the receiver before its deadline.
    Deadline,
    /// A frame it depends on (earlier in its GOP) was dropped.
    Dependency,
    /// The sender's queue for the stream was over its byte limit.
    QueueFull,
}

impl DropReason {
    /// The one-byte code on the wire.
    pub fn code(self) -> u8 {
        match self {
            DropReason::Deadline => 0,
            DropReason::Dependency => 1,
            DropReason::QueueFull => 2,
        }
    }

    /// Decodes the one-byte wire code.
    pub fn from_code(code: u8) -> Option<DropReason> {
        match code {
            0 => Some(DropReason::Deadline),
            1 => Some(DropReason::Dependency),
            2 => Some(DropReason::QueueFull),
            _ => None,
        }
    }

    /// A short lowercase name for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Deadline => "deadline",
            DropReason::Dependency => "dependency",
            DropReason::QueueFull => "queue_full",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_the_documented_order() {
        let ranks: Vec<usize> = MediaKind::ALL.iter().map(|k| k.priority()).collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]));
        assert!(MediaKind::Audio.priority() < MediaKind::Key.priority());
        assert!(MediaKind::Inter.priority() < MediaKind::Disposable.priority());
    }

    #[test]
    fn codes_round_trip() {
        for k in MediaKind::ALL {
            assert_eq!(MediaKind::from_code(k.code()), Some(k));
        }
        assert_eq!(MediaKind::from_code(200), None);
        for r in [
            DropReason::Deadline,
            DropReason::Dependency,
            DropReason::QueueFull,
        ] {
            assert_eq!(DropReason::from_code(r.code()), Some(r));
        }
    }
}
