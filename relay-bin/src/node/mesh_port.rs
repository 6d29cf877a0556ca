//! [`MeshInput`]: what a node core tells the PoP mesh, and [`LinkInfo`]: what the mesh says of its links.
//!
//! The mesh ([`crate::mesh::core::MeshCore`] and the node's transport endpoint) runs on one core, the mesh
//! core ([`MESH_CORE`]). A stream's owner core reports its local events (a publisher started or left, a
//! frame of a local publisher, the first viewer anywhere on the node of a stream not published here, the
//! last one gone) as `MeshInput`s: kept for the mesh runner when the owner is the mesh core, posted to the
//! mesh core's inbox otherwise. Streams that arrive from the mesh go the other way, to their owner core, as
//! a remote publisher ([`crate::node::mailbox::CoreMsg::RemoteStart`] and the rest).

use crossbeam_channel::Sender;
use serde::Serialize;

use crate::media::Frame;
use crate::stream_key::StreamKey;

/// The core that runs the mesh (its links share that core's ring with its RTMP clients).
pub const MESH_CORE: usize = 0;

/// A node core's event for the mesh.
#[derive(Debug)]
pub enum MeshInput {
    /// A local publisher started on the stream.
    Published(StreamKey),
    /// The local publisher left.
    Unpublished(StreamKey),
    /// A frame of a local publisher.
    Frame(StreamKey, Frame),
    /// Viewers on this node want a stream that is not published here.
    Wanted(StreamKey),
    /// No viewer on this node wants the stream any more.
    Unwanted(StreamKey),
    /// An operator forbade the stream on this node: every node of the mesh must stop it.
    Forbid {
        /// The stream.
        key: StreamKey,
        /// When the ban ends (Unix ms); `None`: until lifted.
        until_unix_ms: Option<u64>,
        /// Why.
        reason: String,
    },
    /// An operator lifted the stream's ban on this node: every node of the mesh lifts it.
    Unforbid {
        /// The stream.
        key: StreamKey,
    },
    /// The admin API asks for the home of each stream, as this node sees it now.
    Homes {
        /// The streams.
        keys: Vec<StreamKey>,
        /// Answered with each stream's home (`None`: no live origin), in order.
        reply: Sender<Vec<Option<String>>>,
    },
    /// The admin API asks for the links' state.
    Links {
        /// Answered with one entry per configured peer.
        reply: Sender<Vec<LinkInfo>>,
    },
}

/// Frames of one kind a link's sender dropped for one reason.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DroppedFrames {
    /// The frame kind (`key`, `inter`, `disposable`, `audio`, `seq_header`, `metadata`).
    pub kind: &'static str,
    /// `deadline`, `dependency` or `queue_full`.
    pub reason: &'static str,
    /// How many.
    pub frames: u64,
}

/// One mesh link, as `GET /api/v1/links` lists it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LinkInfo {
    /// The peer's node id.
    pub peer: String,
    /// The peer's mesh address.
    pub addr: String,
    /// `up` (handshake done), `connecting`, or `down` (waiting to dial again, or for the peer to dial).
    pub state: &'static str,
    /// This node dials the link (the node with the smaller id dials).
    pub dials: bool,
    /// Times the link came up since the node started.
    pub ups: u64,
    /// Smoothed round-trip time, ms.
    pub rtt_ms: f64,
    /// Payload bytes sent for the first time since the link came up.
    pub payload_bytes: u64,
    /// Payload bytes sent again after a loss (repairs).
    pub repair_bytes: u64,
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Datagrams declared lost.
    pub packets_lost: u64,
    /// Frames dropped before delivery because they could not arrive before their deadline.
    pub dropped_deadline: u64,
    /// Frames dropped because a frame they depend on was dropped.
    pub dropped_dependency: u64,
    /// Frames dropped because the link's send queue was full.
    pub dropped_queue_full: u64,
    /// Frames whose deadline passed while still unacknowledged (dropped ones included).
    pub deadline_misses: u64,
    /// The dropped frames by kind and reason (only the counts that are not zero).
    pub dropped: Vec<DroppedFrames>,
    /// The sender's estimate of the path's bandwidth, bit/s.
    pub bandwidth_bps: u64,
    /// Mesh streams carried to the peer now.
    pub streams_out: u64,
    /// Mesh streams arriving from the peer now.
    pub streams_in: u64,
}
