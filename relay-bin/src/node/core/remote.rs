//! The node core's side of the PoP mesh: a stream's owner core reports its local events to the mesh
//! ([`MeshInput`]), and serves a stream that arrives from another node as if a publisher sent it (a remote
//! source: no client, the same GOP cache, subscribed cores and viewer queues).

use std::time::Instant;

use tracing::{debug, info, warn};

use super::NodeCore;
use crate::media::Frame;
use crate::node::mailbox::CoreMsg;
use crate::node::mesh_port::MeshInput;
use crate::node::shared::CoreCounters;
use crate::node::streams::{LocalStream, RemoteSource};
use crate::stream_key::StreamKey;

impl NodeCore {
    /// The mesh core: the local events reported since the last call (this core's own, and those other
    /// cores posted to it), for the mesh runner.
    pub fn take_mesh_inputs(&mut self, out: &mut Vec<MeshInput>) {
        out.append(&mut self.mesh);
    }

    /// The mesh core: `key` now arrives from node `origin`, `hops` links away; its owner core serves it.
    pub fn remote_started(&mut self, now: Instant, key: StreamKey, origin: String, hops: u8) {
        self.now = now;
        let message = CoreMsg::RemoteStart {
            key: key.clone(),
            origin,
            hops,
        };
        self.send_to_owner(&key, message);
    }

    /// The mesh core: a frame of a stream that arrives from another node, for its owner core. `false` when
    /// the owner's inbox was full and the frame is lost (the caller then skips video to the next keyframe).
    pub fn remote_frame(&mut self, now: Instant, key: StreamKey, frame: Frame) -> bool {
        self.now = now;
        let owner = self.shared.owner_of(&key);
        if owner == self.index {
            self.on_remote_frame(&key, frame, now);
            return true;
        }
        self.post(owner, CoreMsg::RemoteFrame { key, frame }).is_ok()
    }

    /// The mesh core: `key` stopped arriving from the mesh (`moved`: another source is being asked for).
    pub fn remote_ended(&mut self, now: Instant, key: StreamKey, moved: bool) {
        self.now = now;
        let message = CoreMsg::RemoteEnd {
            key: key.clone(),
            moved,
        };
        self.send_to_owner(&key, message);
    }

    /// Reports `input` to the mesh: kept here on the mesh core, posted to it from any other. `false` when
    /// the mesh is off or the input was lost (a full inbox; media only).
    pub(super) fn tell_mesh(&mut self, input: MeshInput) -> bool {
        let Some(core) = self.shared.mesh_core else {
            return false;
        };
        if core == self.index {
            self.mesh.push(input);
            return true;
        }
        self.post(core, CoreMsg::Mesh(input)).is_ok()
    }

    /// Owner: whether the node's viewers of `key` (here or on subscribed cores) want it from the mesh
    /// changed: the first viewer of a stream not published here asks the mesh for it, the last one gone
    /// lets it go.
    pub(super) fn update_mesh_demand(&mut self, key: &StreamKey) {
        if self.shared.mesh_core.is_none() {
            return;
        }
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        let local_demand = stream.has_local_demand();
        let Some(owner) = stream.owner.as_mut() else {
            return;
        };
        let demand = owner.publisher.is_none() && (local_demand || !owner.subscribers.is_empty());
        if demand == owner.mesh_wanted {
            return;
        }
        owner.mesh_wanted = demand;
        let input = if demand {
            MeshInput::Wanted(key.clone())
        } else {
            MeshInput::Unwanted(key.clone())
        };
        self.tell_mesh(input);
    }

    /// Owner: `key` arrives from node `origin` from now on. A local publisher wins (the mesh does not send a
    /// stream published here; a late start is ignored). After a failover, a source of the same publication
    /// continues the stream for the viewers without a restart.
    pub(super) fn on_remote_start(&mut self, key: StreamKey, origin: String, hops: u8) {
        let now = self.now;
        let gop_bytes = self.gop_cache_bytes(&key);
        let stream = self
            .streams
            .entry(key.clone())
            .or_insert_with(|| LocalStream::new(gop_bytes, true));
        let Some(owner) = stream.owner.as_mut() else {
            return;
        };
        if owner.publisher.is_some() {
            debug!(core = self.index, stream = %key, %origin, "remote source ignored: published here");
            return;
        }
        // The same publication from another path: after a failover (the last source ended as moved), or
        // when the mesh swaps a live source for a better one (no end in between).
        let swapped = owner.remote.as_ref().is_some_and(|r| r.origin == origin);
        let continues = swapped || owner.resume.as_ref().is_some_and(|(o, _)| *o == origin);
        if !continues {
            owner.resume = None;
        } else if owner.resume.is_none() {
            owner.resume = owner.remote_last_dts.map(|last| (origin.clone(), last));
        }
        owner.remote = Some(RemoteSource {
            origin: origin.clone(),
            hops,
        });
        owner.publishing_since.get_or_insert(now);
        stream.ended_at = None;
        stream.live = true;
        if continues {
            info!(core = self.index, stream = %key, %origin, hops, "stream arrives from the mesh again (failover): viewers continue");
            return;
        }
        info!(core = self.index, stream = %key, %origin, hops, "stream arrives from the mesh");
        owner.publishing_since = Some(now);
        let subscribers: Vec<usize> = owner
            .subscribers
            .iter_mut()
            .map(|s| {
                s.needs_key = false;
                s.core
            })
            .collect();
        // Frames of a new source do not decode against the old one's pictures: every viewer resumes at its
        // first keyframe.
        self.resync_viewers(&key);
        for core in subscribers {
            let _ = self.post(core, CoreMsg::PublisherChanged { key: key.clone() });
        }
        self.record_decide(&key);
    }

    /// Owner: a frame of a stream that arrives from the mesh. After a failover to a source of the same
    /// publication, what the viewers already have (decode timestamps up to the last one received) is
    /// skipped: the new source's GOP fills the gap the failure left, or starts at a keyframe after it.
    pub(super) fn on_remote_frame(&mut self, key: &StreamKey, frame: Frame, now: Instant) {
        let Some(owner) = self.streams.get_mut(key).and_then(|s| s.owner.as_mut()) else {
            return;
        };
        if owner.remote.is_none() || owner.publisher.is_some() {
            return;
        }
        if let Some((_, through)) = owner.resume {
            if frame.dts_ms <= through {
                return;
            }
            owner.resume = None;
        }
        owner.remote_last_dts = Some(frame.dts_ms);
        if let Some(lost) = owner.moved_at.take() {
            let gap = now.saturating_duration_since(lost);
            CoreCounters::add(&self.counters.mesh_failovers, 1);
            CoreCounters::add(&self.counters.mesh_failover_gap_ms, gap.as_millis() as u64);
            let origin = owner
                .remote
                .as_ref()
                .map(|r| r.origin.clone())
                .unwrap_or_default();
            info!(core = self.index, stream = %key, %origin, gap_ms = gap.as_millis() as u64, "stream from the mesh resumed after a failover");
        }
        self.on_ingest(key, frame, now);
    }

    /// Owner: `key` stopped arriving from the mesh.
    pub(super) fn on_remote_end(&mut self, key: StreamKey, moved: bool) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        let Some(owner) = stream.owner.as_mut() else {
            return;
        };
        let Some(source) = owner.remote.take() else {
            return;
        };
        owner.publishing_since = None;
        let subscribers: Vec<usize> = owner.subscribers.iter().map(|s| s.core).collect();
        if moved {
            // Failover: the viewers stay (for the unpublish grace period at most) and continue from the next
            // source of the same publication.
            warn!(core = self.index, stream = %key, origin = %source.origin, "mesh source lost; asking the stream's next home");
            if let Some(last) = owner.remote_last_dts {
                owner.resume = Some((source.origin, last));
            }
            owner.moved_at.get_or_insert(self.now);
            stream.ended_at = Some(self.now);
            if stream.is_unused() {
                self.streams.remove(&key);
            }
            return;
        }
        owner.resume = None;
        owner.remote_last_dts = None;
        info!(core = self.index, stream = %key, origin = %source.origin, "stream from the mesh ended");
        self.record_stop(&key, "the stream from the mesh ended", false);
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        stream.ended_at = Some(self.now);
        stream.live = false;
        let unused = stream.is_unused();
        self.resync_viewers(&key);
        for core in subscribers {
            let _ = self.post(core, CoreMsg::StreamEnded { key: key.clone() });
        }
        if unused {
            self.streams.remove(&key);
        }
    }
}

impl NodeCore {
    /// Owner: a local publisher started on `key`: it replaces any remote source, and the mesh carries it.
    pub(super) fn start_local_publication(&mut self, key: &StreamKey) {
        if self.shared.mesh_core.is_none() {
            return;
        }
        if let Some(owner) = self.streams.get_mut(key).and_then(|s| s.owner.as_mut()) {
            owner.remote = None;
            owner.mesh_needs_key = false;
        }
        self.update_mesh_demand(key);
        self.tell_mesh(MeshInput::Published(key.clone()));
    }
}
