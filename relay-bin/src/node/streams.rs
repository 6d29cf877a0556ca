//! [`LocalStream`]: what one core holds of one stream: its local viewers and a GOP cache, plus, on the
//! stream's owner core, the publisher and the cores subscribed to it.

use std::time::Instant;

use crate::control::ClientId;
use crate::media::gop_cache::GopCache;
use crate::media::{Frame, MediaKind, Track};
use crate::node::clients::Token;

/// One subscribed core, as its stream's owner sees it.
#[derive(Debug, Clone, Copy)]
pub struct Subscriber {
    /// The core.
    pub core: usize,
    /// A frame to it was lost to a full inbox: skip its video until the next keyframe.
    pub needs_key: bool,
}

/// Where a stream that arrives from the PoP mesh is published.
#[derive(Debug, Clone)]
pub struct RemoteSource {
    /// The node where it is published.
    pub origin: String,
    /// Links it crossed to get here.
    pub hops: u8,
}

/// Owner-only state of a stream.
#[derive(Debug, Default)]
pub struct OwnerState {
    /// The publishing client, while one publishes.
    pub publisher: Option<ClientId>,
    /// Cores with viewers of the stream.
    pub subscribers: Vec<Subscriber>,
    /// Frames received since the node started.
    pub frames_in: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// When the current publisher started.
    pub publishing_since: Option<Instant>,
    /// Bytes sent to viewers on other cores that no longer hold the stream (each core's count, handed over
    /// with its `Unsubscribe`), so the stream's count never goes back.
    pub bytes_out_departed: u64,
    /// The stream arrives from another node of the mesh (no local publisher).
    pub remote: Option<RemoteSource>,
    /// The mesh was told this node's viewers want the stream (and not yet that they stopped).
    pub mesh_wanted: bool,
    /// A frame of the local publisher did not reach the mesh core: skip video to the next keyframe.
    pub mesh_needs_key: bool,
    /// The decode timestamp of the newest frame from the remote source.
    pub remote_last_dts: Option<u64>,
    /// The remote source moved (failover): the node it was published at, and the newest frame's decode
    /// timestamp. A new source of the same publication continues the stream where it stopped (what the
    /// viewers already have is skipped); any other source restarts the viewers at a keyframe.
    pub resume: Option<(String, u64)>,
    /// The remote source was lost (failover) at this instant and no frame of the next one has arrived yet.
    pub moved_at: Option<Instant>,
    /// Static pushes carry the stream (a rule matched when its publisher started).
    pub relayed: bool,
    /// A frame for the static pushes was lost: skip video to the next keyframe.
    pub relay_needs_key: bool,
    /// The stream is to be recorded (decided when it starts, or by the admin API).
    pub record_wanted: bool,
    /// The recorder was told to start it (and not yet to stop).
    pub recording: bool,
    /// A frame for the recorder was lost: skip video to the next keyframe.
    pub record_needs_key: bool,
}

/// What one core holds of one stream.
#[derive(Debug)]
pub struct LocalStream {
    /// Viewers on this core.
    pub viewers: Vec<Token>,
    /// Metadata, sequence headers and the current GOP, for instant start.
    pub gop: GopCache,
    /// This core subscribed to the owner and waits for the snapshot.
    pub awaiting_snapshot: bool,
    /// The publisher left at this instant; viewers are closed after the grace period.
    pub ended_at: Option<Instant>,
    /// Present on the owner core only.
    pub owner: Option<OwnerState>,
    /// A publisher is live (as far as this core knows: the owner's word, or a frame seen).
    pub live: bool,
    /// Bytes sent to this core's viewers of the stream that have left.
    pub bytes_out_closed: u64,
    /// The stream's HLS packaging on this core, while HLS viewers ask for it.
    pub hls: Option<Box<crate::node::core::hls::HlsStream>>,
}

impl LocalStream {
    /// An empty stream record; `owner` on the owning core.
    pub fn new(gop_cache_bytes: usize, owner: bool) -> LocalStream {
        LocalStream {
            viewers: Vec::new(),
            gop: GopCache::new(gop_cache_bytes),
            awaiting_snapshot: false,
            ended_at: None,
            owner: owner.then(OwnerState::default),
            bytes_out_closed: 0,
            live: false,
            hls: None,
        }
    }

    /// Nothing keeps this record alive: no viewers here and, on the owner, no publisher (local or remote)
    /// or subscriber.
    pub fn is_unused(&self) -> bool {
        !self.has_local_demand()
            && self.owner.as_ref().is_none_or(|owner| {
                owner.publisher.is_none() && owner.remote.is_none() && owner.subscribers.is_empty()
            })
    }
}

impl LocalStream {
    /// Someone on this core wants the stream: a viewer, or HLS packaging.
    pub fn has_local_demand(&self) -> bool {
        !self.viewers.is_empty() || self.hls.is_some()
    }
}

/// Whether a path that lost a frame (`needs_key`) may carry `frame`; updates `needs_key` on a keyframe.
/// Audio, metadata and sequence headers always pass; video waits for the next keyframe.
pub fn passes_after_loss(needs_key: &mut bool, frame: &Frame) -> bool {
    if !*needs_key || frame.track != Track::Video || frame.kind.is_essential() {
        return true;
    }
    if frame.kind == MediaKind::Key {
        *needs_key = false;
        return true;
    }
    false
}
