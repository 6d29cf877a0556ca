//! The control plane's view of the node: what the admin API may ask of the data-plane cores.
//!
//! The admin API never touches a core's sockets: it calls [`NodeControl`], whose implementation
//! (`node::NodeHandle`) sends bounded messages to the cores and waits (briefly) for their answers.

use std::net::SocketAddr;

use serde::Serialize;

use crate::stream_key::StreamKey;

/// A client connection's id, unique in this process (the owning core is in the top 16 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ClientId(pub u64);

impl ClientId {
    /// The id of the `sequence`-th connection accepted by core `core`.
    pub fn new(core: usize, sequence: u64) -> ClientId {
        ClientId(((core as u64 & 0xffff) << 48) | (sequence & 0xffff_ffff_ffff))
    }

    /// The core that owns the connection.
    pub fn core(self) -> usize {
        (self.0 >> 48) as usize
    }
}

/// What a client connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientRole {
    /// Handshake or connect in progress: neither publishing nor playing yet.
    Connecting,
    /// Publishing a stream.
    Publisher,
    /// Playing a stream.
    Viewer,
}

/// One client connection, as `GET /api/v1/clients` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    /// The connection's id (for `DELETE /api/v1/clients/{id}`).
    pub id: ClientId,
    /// What it does.
    pub role: ClientRole,
    /// The stream it publishes or plays, once known.
    pub stream: Option<StreamKey>,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The core that serves it.
    pub core: usize,
    /// Milliseconds since the connection was accepted.
    pub connected_ms: u64,
    /// Bytes read from the peer.
    pub bytes_in: u64,
    /// Bytes written to the peer.
    pub bytes_out: u64,
    /// Frames dropped for this viewer by its drop policy.
    pub frames_dropped: u64,
    /// Bytes waiting in this viewer's send queue.
    pub queue_bytes: u64,
    /// The protocol it speaks: `rtmp` or `http-flv` (`http` before its request is read).
    pub protocol: &'static str,
}

/// One live stream, as `GET /api/v1/streams` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    /// `app/stream`.
    pub stream: StreamKey,
    /// The core that owns the stream (by hash of its key).
    pub owner_core: usize,
    /// The publishing client, if one is publishing here now.
    pub publisher: Option<ClientId>,
    /// The node where the stream is published, when it arrives from the PoP mesh.
    pub origin: Option<String>,
    /// Mesh links the stream crossed to get here (0: published here).
    pub hops: u8,
    /// The stream's home in the PoP mesh as this node sees it now (rendezvous order over the app's live
    /// origins), when the mesh is on.
    pub home: Option<String>,
    /// Viewers on all cores (RTMP and HTTP-FLV connections).
    pub viewers: u64,
    /// HLS viewer sessions seen within `egress.hls_idle_ms`, on all cores (each counted once).
    pub hls_sessions: u64,
    /// Bytes sent to the stream's viewers on all cores, those that left included (while the stream exists
    /// on its owner core).
    pub bytes_out: u64,
    /// Frames received from the publisher.
    pub frames_in: u64,
    /// Payload bytes received from the publisher.
    pub bytes_in: u64,
    /// Frames in the GOP cache now.
    pub gop_cache_frames: u64,
    /// Milliseconds since the publisher started.
    pub publishing_ms: u64,
    /// Codecs, picture size, frame rate and bitrate (flattened into the stream's JSON object).
    #[serde(flatten)]
    pub media: crate::media::describe::MediaInfo,
}

/// Node-wide counters, for `GET /api/v1/stats` and `GET /metrics`. Counters only grow; gauges are "now".
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeStats {
    /// IO backend in use (`epoll` or `uring`).
    pub backend: &'static str,
    /// Data-plane cores.
    pub cores: usize,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Connections open now (gauge).
    pub connections: u64,
    /// Publishers now (gauge).
    pub publishers: u64,
    /// Viewers now (gauge).
    pub viewers: u64,
    /// Of them, HTTP viewers (HTTP-FLV).
    pub http_viewers: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections refused or closed for bad input (protocol errors, hostile sizes, timeouts).
    pub connections_rejected: u64,
    /// Publish or play requests refused (ban, auth, duplicate publisher, bad name).
    pub requests_refused: u64,
    /// Clients kicked by the API or by a ban.
    pub clients_kicked: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Frames received from publishers.
    pub frames_in: u64,
    /// Frames queued to viewers.
    pub frames_out: u64,
    /// Frames dropped by viewer drop policies.
    pub frames_dropped: u64,
    /// Viewers disconnected because their queue hit its bound (policy `none`).
    pub viewers_overflowed: u64,
    /// Cross-core messages dropped because a core's inbox was full.
    pub inbox_full: u64,
    /// Streams from the PoP mesh that resumed after their source failed.
    pub mesh_failovers: u64,
    /// The failovers' gaps (source lost to its next frame), summed, in milliseconds.
    pub mesh_failover_gap_ms: u64,
    /// Streams being recorded now.
    pub recordings: u64,
    /// Recording files finished (closed and synced).
    pub recording_files: u64,
    /// Bytes written to recordings.
    pub recording_bytes: u64,
    /// Recordings stopped by a write error (disk full).
    pub recording_errors: u64,
    /// Frames lost to the recorder's full queue.
    pub recording_frames_lost: u64,
    /// The newest recording write error.
    pub recording_last_error: Option<String>,
    /// How often each hardening limit was hit.
    pub limit_hits: LimitHits,
}

/// How often each hardening limit was hit since start: `limit_hits` in `GET /api/v1/stats`, and
/// `popline_limit_hits_total{limit="NAME"}` in `/metrics` (the field names are the label values).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LimitHits {
    /// Clients closed with more than `rtmp.max_control_queue_bytes` of unread protocol answers.
    pub control_queue: u64,
    /// Sequence headers or metadata replaced in a viewer's queue by a newer one before being written.
    pub headers_replaced: u64,
    /// Sessions ended for a `WindowAcknowledgementSize` below `rtmp.min_window_ack_bytes`.
    pub window_ack: u64,
    /// Players told `NetStream.Play.StreamNotFound` after `rtmp.play_wait_ms`.
    pub play_wait: u64,
    /// Clients closed after `rtmp.write_stall_timeout_ms` without write progress.
    pub write_stall: u64,
    /// Connections refused at `rtmp.max_connections_per_ip`.
    pub per_ip: u64,
    /// Connections refused to keep `rtmp.fd_reserve` descriptors free.
    pub fd_reserve: u64,
    /// Publishes refused at once: `auth.on_publish_max_pending` hook calls already waiting or in flight.
    pub hook_busy: u64,
}

impl LimitHits {
    /// Each limit's name (the metric's `limit` label) and count.
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("control_queue", self.control_queue),
            ("headers_replaced", self.headers_replaced),
            ("window_ack", self.window_ack),
            ("play_wait", self.play_wait),
            ("write_stall", self.write_stall),
            ("per_ip", self.per_ip),
            ("fd_reserve", self.fd_reserve),
            ("hook_busy", self.hook_busy),
        ]
    }
}

/// What the admin API can ask of the running node. Implemented by the node; every call is bounded in time.
pub trait NodeControl: Send + Sync + 'static {
    /// Every live stream (with or without a publisher right now).
    fn streams(&self) -> Vec<StreamInfo>;
    /// Every client connection.
    fn clients(&self) -> Vec<ClientInfo>;
    /// Node-wide counters.
    fn stats(&self) -> NodeStats;
    /// Closes one client's connection; `false` when no such client exists.
    fn kick_client(&self, id: ClientId) -> bool;
    /// `Ok` while the data plane is whole; `Err` with why not (a core's thread panicked: its clients and
    /// streams are gone). `GET /healthz` answers 503 with it.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    /// Closes the publisher and every viewer of `stream` on every core; returns how many were closed.
    /// Returns once every core has acted (or after a bounded wait).
    fn kick_stream(&self, stream: &StreamKey) -> u64;
    /// Sends a ban decided here to every node of the PoP mesh (each persists it and stops the stream). Does
    /// nothing when the mesh is off.
    fn forbid_everywhere(&self, stream: &StreamKey, until_unix_ms: Option<u64>, reason: &str) {
        let _ = (stream, until_unix_ms, reason);
    }
    /// Sends the lift of a ban decided here to every node of the PoP mesh. Does nothing when the mesh is off.
    fn unforbid_everywhere(&self, stream: &StreamKey) {
        let _ = stream;
    }
    /// The mesh's links (`None`: the mesh is off).
    fn links(&self) -> Option<Vec<crate::node::mesh_port::LinkInfo>> {
        None
    }
    /// The latest keyframe of `stream` with its sequence header, for a snapshot. Errors: not live here
    /// ([`SnapshotError::NotFound`]), no keyframe yet, or the stream's core did not answer.
    ///
    /// [`SnapshotError::NotFound`]: crate::snapshot::SnapshotError::NotFound
    fn keyframe(
        &self,
        stream: &StreamKey,
    ) -> Result<crate::snapshot::Keyframe, crate::snapshot::SnapshotError> {
        Err(crate::snapshot::SnapshotError::NotFound(format!(
            "no stream {stream} here"
        )))
    }
    /// The renditions a transcode makes of `stream` now, and their audio bitrate in kbit/s (`None`: no
    /// transcode), for its HLS multivariant playlist.
    fn set_renditions(
        &self,
        stream: &StreamKey,
        renditions: Option<(Vec<crate::transcode::ladder::Rendition>, u32)>,
    ) {
        let _ = (stream, renditions);
    }
    /// Records `stream` (`on`) or stops recording it. `Ok(live)`: done, and whether the stream is live (a
    /// live stream starts recording at once, another when it starts); `Err`: why not (recording is off).
    fn record(&self, stream: &StreamKey, on: bool) -> Result<bool, String> {
        let _ = (stream, on);
        Err("recording is not available".to_string())
    }
}
