//! A stream's frames on their way: publisher core -> owner core (GOP cache, subscribed cores) -> every core
//! with viewers (its GOP cache replica, each viewer's queue with the app's drop policy); viewers joining
//! (GOP-cache start, a snapshot from the owner) and leaving; publishers starting and ending.

use std::time::Instant;

use tracing::warn;

use super::{post_to, NodeCore};
use crate::control::ClientId;
use crate::fanout::Pushed;
use crate::media::Frame;
use crate::node::clients::Token;
use crate::node::mailbox::CoreMsg;
use crate::node::mesh_port::MeshInput;
use crate::node::shared::CoreCounters;
use crate::node::shared::Shared;
use crate::node::streams::OwnerState;
use crate::node::streams::{passes_after_loss, LocalStream, Subscriber};
use crate::relays::RelayEvent;
use crate::stream_key::StreamKey;

impl NodeCore {
    pub(super) fn gop_cache_bytes(&self, key: &StreamKey) -> usize {
        self.shared.config.fanout_for(key.app()).gop_cache_bytes
    }

    /// Owner: a frame from the publisher (local or from another core).
    pub(super) fn on_ingest(&mut self, key: &StreamKey, frame: Frame, now: Instant) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        let Some(owner) = stream.owner.as_mut() else {
            return;
        };
        owner.frames_in += 1;
        owner.bytes_in += frame.body.len() as u64;
        let for_mesh = owner.publisher.is_some()
            && self.shared.mesh_core.is_some()
            && passes_after_loss(&mut owner.mesh_needs_key, &frame);
        if owner.relayed && owner.publisher.is_some() {
            relay_frame(&self.shared, owner, key, &frame);
        }
        if owner.record_wanted {
            super::record::record_frame(&self.shared, owner, key, &frame);
        }
        for subscriber in owner.subscribers.iter_mut() {
            if !passes_after_loss(&mut subscriber.needs_key, &frame) {
                continue;
            }
            let message = CoreMsg::Fanout {
                key: key.clone(),
                frame: frame.clone(),
            };
            if post_to(
                &self.shared,
                &mut self.wake,
                &self.counters,
                subscriber.core,
                message,
            )
            .is_err()
            {
                subscriber.needs_key = true;
            }
        }
        if for_mesh && !self.tell_mesh(MeshInput::Frame(key.clone(), frame.clone())) {
            if let Some(owner) = self.streams.get_mut(key).and_then(|s| s.owner.as_mut()) {
                owner.mesh_needs_key = true;
            }
        }
        self.deliver_local(key, frame, now);
    }

    /// Any core: a frame of a stream with viewers here goes to the GOP cache and every local viewer's queue.
    pub(super) fn deliver_local(&mut self, key: &StreamKey, frame: Frame, now: Instant) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        stream.ended_at = None;
        stream.live = true;
        stream.gop.push(&frame);
        let mut overflowed = Vec::new();
        let (mut queued, mut dropped) = (0u64, 0u64);
        for &token in &stream.viewers {
            let Some(client) = self.clients.get_mut(token) else {
                continue;
            };
            let replaced = client.queue.stats().headers_replaced;
            let pushed = client.queue.push(&frame, now);
            if client.queue.stats().headers_replaced != replaced {
                CoreCounters::add(&self.counters.limits.headers_replaced, 1);
            }
            match pushed {
                Pushed::Queued => {
                    queued += 1;
                    super::list_for_write(token, client, &mut self.dirty, &mut self.viewer_flush);
                }
                Pushed::Dropped => dropped += 1,
                Pushed::Overflow => overflowed.push(token),
            }
        }
        let packaged = match stream.hls.as_mut() {
            Some(hls) => hls.push(&frame, self.shared.unix_time_ms(frame.capture), now),
            None => false,
        };
        CoreCounters::add(&self.counters.frames_out, queued);
        CoreCounters::add(&self.counters.frames_dropped, dropped);
        if packaged {
            self.hls_changed(key);
        }
        for token in overflowed {
            CoreCounters::add(&self.counters.viewers_overflowed, 1);
            self.close(token, "viewer queue full (drop policy none)");
        }
    }

    pub(super) fn attach_viewer(&mut self, token: Token, key: &StreamKey) {
        let owner = self.shared.owner_of(key);
        let is_owner = owner == self.index;
        let gop_bytes = self.gop_cache_bytes(key);
        let mut subscribe = false;
        let stream = self.streams.entry(key.clone()).or_insert_with(|| {
            let mut stream = LocalStream::new(gop_bytes, is_owner);
            if !is_owner {
                stream.awaiting_snapshot = true;
                subscribe = true;
            }
            stream
        });
        stream.viewers.push(token);
        if !stream.awaiting_snapshot {
            let now = self.now;
            if let Some(client) = self.clients.get_mut(token) {
                for frame in stream.gop.start_frames() {
                    let _ = client.queue.push(frame, now);
                }
            }
            self.mark_dirty(token);
        }
        if is_owner {
            self.update_mesh_demand(key);
        }
        if subscribe {
            self.send_to_owner(
                key,
                CoreMsg::Subscribe {
                    key: key.clone(),
                    core: self.index,
                },
            );
        }
    }

    /// Viewer `token` of `key` left, having been sent `bytes_out` bytes.
    pub(super) fn detach_viewer(&mut self, token: Token, key: &StreamKey, bytes_out: u64) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        stream.bytes_out_closed += bytes_out;
        if let Some(position) = stream.viewers.iter().position(|&t| t == token) {
            stream.viewers.swap_remove(position);
        }
        if stream.owner.is_some() {
            self.update_mesh_demand(key);
        }
        self.release_stream_if_unused(key);
    }

    /// Forgets `key` on this core once nothing here uses it (and tells the owner this core no longer
    /// wants it).
    pub(super) fn release_stream_if_unused(&mut self, key: &StreamKey) {
        if self.streams.get(key).is_some_and(|s| s.owner.is_some()) {
            self.update_mesh_demand(key);
        }
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        if stream.is_unused() {
            let owned = stream.owner.is_some();
            let bytes_out = stream.bytes_out_closed;
            self.streams.remove(key);
            if !owned {
                self.send_to_owner(
                    key,
                    CoreMsg::Unsubscribe {
                        key: key.clone(),
                        core: self.index,
                        bytes_out,
                    },
                );
            }
        }
    }

    /// The stream's publisher changed: every local viewer skips video until the new publisher's keyframe
    /// (an inter frame of the new publisher does not decode against the old one's pictures).
    pub(super) fn resync_viewers(&mut self, key: &StreamKey) {
        let now = self.now;
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        stream.gop.clear();
        if let Some(hls) = stream.hls.as_mut() {
            hls.discontinue(now);
        }
        for &token in &stream.viewers {
            if let Some(client) = self.clients.get_mut(token) {
                client.queue.wait_for_keyframe();
            }
        }
    }

    pub(super) fn on_publish_start(&mut self, key: StreamKey, publisher: ClientId) {
        self.resync_viewers(&key);
        let gop_bytes = self.gop_cache_bytes(&key);
        let stream = self
            .streams
            .entry(key.clone())
            .or_insert_with(|| LocalStream::new(gop_bytes, true));
        stream.gop.clear();
        stream.ended_at = None;
        stream.live = true;
        let mut subscribers = Vec::new();
        if let Some(owner) = stream.owner.as_mut() {
            owner.publisher = Some(publisher);
            owner.publishing_since = Some(self.now);
            for subscriber in &mut owner.subscribers {
                subscriber.needs_key = false;
                subscribers.push(subscriber.core);
            }
        }
        for core in subscribers {
            let _ = self.post(core, CoreMsg::PublisherChanged { key: key.clone() });
        }
        self.start_local_publication(&key);
        self.start_relays(&key);
        self.record_decide(&key);
    }

    pub(super) fn on_publish_end(&mut self, key: StreamKey, publisher: ClientId) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        let Some(owner) = stream.owner.as_mut() else {
            return;
        };
        if owner.publisher != Some(publisher) {
            return;
        }
        owner.publisher = None;
        owner.publishing_since = None;
        let subscribers: Vec<usize> = owner.subscribers.iter().map(|s| s.core).collect();
        self.record_stop(&key, "publisher left", false);
        let Some(owner) = self.streams.get_mut(&key).and_then(|s| s.owner.as_mut()) else {
            return;
        };
        if std::mem::take(&mut owner.relayed) {
            tell_relays(&self.shared, RelayEvent::Unpublished(key.clone()));
        }
        self.tell_mesh(MeshInput::Unpublished(key.clone()));
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        stream.gop.clear();
        stream.ended_at = Some(self.now);
        stream.live = false;
        let unused = stream.is_unused();
        self.resync_viewers(&key);
        for core in subscribers {
            let _ = self.post(core, CoreMsg::StreamEnded { key: key.clone() });
        }
        // Viewers that stay may get the stream from another node where it is published next.
        self.update_mesh_demand(&key);
        if unused {
            self.streams.remove(&key);
        }
    }

    pub(super) fn on_subscribe(&mut self, key: StreamKey, core: usize) {
        let gop_bytes = self.gop_cache_bytes(&key);
        let stream = self
            .streams
            .entry(key.clone())
            .or_insert_with(|| LocalStream::new(gop_bytes, true));
        let Some(owner) = stream.owner.as_mut() else {
            return;
        };
        if !owner.subscribers.iter().any(|s| s.core == core) {
            owner.subscribers.push(Subscriber {
                core,
                needs_key: false,
            });
        }
        let live = owner.publisher.is_some() || owner.remote.is_some();
        let frames: Vec<Frame> = stream.gop.start_frames().cloned().collect();
        self.update_mesh_demand(&key);
        if self.post(core, CoreMsg::Snapshot { key, frames, live }).is_err() {
            warn!(core = self.index, to = core, "snapshot lost: inbox full");
        }
    }

    pub(super) fn on_unsubscribe(&mut self, key: StreamKey, core: usize, bytes_out: u64) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if let Some(owner) = stream.owner.as_mut() {
            owner.subscribers.retain(|s| s.core != core);
            owner.bytes_out_departed += bytes_out;
        }
        self.update_mesh_demand(&key);
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if stream.is_unused() {
            self.streams.remove(&key);
        }
    }

    pub(super) fn on_snapshot(&mut self, key: StreamKey, frames: Vec<Frame>, live: bool) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if !stream.awaiting_snapshot {
            return;
        }
        stream.awaiting_snapshot = false;
        // Not live: the viewers wait for a publisher (as for a stream never published, at most
        // `rtmp.play_wait_ms`); the grace period applies only to viewers who watched a publisher leave.
        stream.live = live;
        let now = self.now;
        for frame in &frames {
            stream.gop.push(frame);
        }
        let viewers = stream.viewers.clone();
        let mut packaged = false;
        if let Some(hls) = stream.hls.as_mut() {
            for frame in &frames {
                packaged |= hls.push(frame, self.shared.unix_time_ms(frame.capture), now);
            }
        }
        for token in viewers {
            if let Some(client) = self.clients.get_mut(token) {
                for frame in &frames {
                    let _ = client.queue.push(frame, now);
                }
            }
            self.mark_dirty(token);
        }
        if packaged {
            self.hls_changed(&key);
        }
    }

    pub(super) fn on_stream_ended(&mut self, key: StreamKey) {
        self.resync_viewers(&key);
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.ended_at = Some(self.now);
            stream.live = false;
        }
    }

    /// Subscriber: the owner says a new publisher started.
    pub(super) fn on_publisher_changed(&mut self, key: StreamKey) {
        self.resync_viewers(&key);
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.live = true;
            stream.ended_at = None;
        }
    }

    /// Sends a message about `key` to its owner, or handles it here when this core owns it.
    pub(super) fn send_to_owner(&mut self, key: &StreamKey, message: CoreMsg) {
        let owner = self.shared.owner_of(key);
        if owner == self.index {
            self.handle_message(message);
            return;
        }
        if self.post(owner, message).is_err() {
            warn!(core = self.index, to = owner, stream = %key, "control message to owner lost: inbox full");
        }
    }
}

impl NodeCore {
    /// Owner: a publisher started on `key`: the static pushes whose rules match carry it from now on.
    fn start_relays(&mut self, key: &StreamKey) {
        if self.shared.relay_events.is_none() {
            return;
        }
        let relayed = self.shared.config.relays.push.iter().any(|r| r.matches(key));
        if let Some(owner) = self.streams.get_mut(key).and_then(|s| s.owner.as_mut()) {
            owner.relayed = relayed;
            owner.relay_needs_key = false;
        }
        if relayed {
            tell_relays(&self.shared, RelayEvent::Published(key.clone()));
        }
    }
}

/// Queues `event` for the static pushes without waiting (a core never blocks); `false` when the queue is
/// full.
fn tell_relays(shared: &Shared, event: RelayEvent) -> bool {
    let Some(events) = &shared.relay_events else {
        return false;
    };
    match events.try_send(event) {
        Ok(()) => true,
        Err(error) => {
            if !matches!(error.into_inner(), RelayEvent::Frame(..)) {
                warn!("a static push event was lost: the pushes' queue is full");
            }
            false
        }
    }
}

/// Hands a frame of a relayed stream to the static pushes; a lost one makes them wait for a keyframe.
fn relay_frame(shared: &Shared, owner: &mut OwnerState, key: &StreamKey, frame: &Frame) {
    if !passes_after_loss(&mut owner.relay_needs_key, frame) {
        return;
    }
    if !tell_relays(shared, RelayEvent::Frame(key.clone(), frame.clone())) {
        owner.relay_needs_key = true;
        tell_relays(shared, RelayEvent::Lost(key.clone()));
    }
}
