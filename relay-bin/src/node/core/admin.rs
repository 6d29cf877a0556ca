//! Inbox messages: frames and stream events from other cores, the admin API's kicks and queries (forbid
//! kicks a stream's clients on every core), the `on_publish` hook's verdicts, shutdown.

use std::time::Instant;

use super::{client_stream, NodeCore, Role, Session};
use crate::control::{ClientInfo, ClientRole, StreamInfo};
use crate::node::clients::Token;
use crate::node::mailbox::{CoreMsg, CoreReport};
use crate::node::shared::CoreCounters;

impl NodeCore {
    /// Acts on one cross-core message (from the inbox, or from this core to itself).
    pub(super) fn handle_message(&mut self, message: CoreMsg) {
        let now = self.now;
        match message {
            CoreMsg::PublishStart { key, publisher } => self.on_publish_start(key, publisher),
            CoreMsg::Ingest { key, frame } => self.on_ingest(&key, frame, now),
            CoreMsg::PublishEnd { key, publisher } => self.on_publish_end(key, publisher),
            CoreMsg::Subscribe { key, core } => self.on_subscribe(key, core),
            CoreMsg::Unsubscribe { key, core, bytes_out } => self.on_unsubscribe(key, core, bytes_out),
            CoreMsg::Snapshot { key, frames, live } => self.on_snapshot(key, frames, live),
            CoreMsg::Fanout { key, frame } => self.deliver_local(&key, frame, now),
            CoreMsg::StreamEnded { key } => self.on_stream_ended(key),
            CoreMsg::PublisherChanged { key } => self.on_publisher_changed(key),
            CoreMsg::Kick { id, reply } => {
                let token = self.clients.iter().find(|(_, c)| c.id == id).map(|(t, _)| t);
                if let Some(token) = token {
                    CoreCounters::add(&self.counters.kicked, 1);
                    self.close(token, "kicked by the admin API");
                }
                let _ = reply.send(token.is_some());
            }
            CoreMsg::KickStream { key, reply } => {
                let tokens: Vec<Token> = self
                    .clients
                    .iter()
                    .filter(|(_, c)| client_stream(c) == Some(&key))
                    .map(|(t, _)| t)
                    .collect();
                for &token in &tokens {
                    CoreCounters::add(&self.counters.kicked, 1);
                    self.close(token, "stream forbidden");
                }
                // HLS of the stream stops at once: what waits hears why, and nothing more is served.
                let reason = self
                    .shared
                    .bans
                    .check(&key)
                    .map_or_else(|| "forbidden".to_string(), |ban| ban.reason);
                self.hls_detach(&key, Some(&reason));
                self.record_stop(&key, "stream forbidden", true);
                let _ = reply.send(tokens.len() as u64);
            }
            CoreMsg::Query { reply } => {
                let _ = reply.send(self.report(now));
            }
            CoreMsg::HookVerdict {
                token,
                client,
                request_id,
                key,
                verdict,
            } => self.on_hook_verdict(token, client, request_id, key, verdict),
            CoreMsg::Mesh(input) => self.mesh.push(input),
            CoreMsg::RemoteStart { key, origin, hops } => self.on_remote_start(key, origin, hops),
            CoreMsg::RemoteFrame { key, frame } => self.on_remote_frame(&key, frame, now),
            CoreMsg::RemoteEnd { key, moved } => self.on_remote_end(key, moved),
            CoreMsg::HlsRequest(request) => self.on_hls_request_at_owner(*request),
            CoreMsg::HlsAnswer { reply, head, body } => self.on_hls_answer(reply, head, body),
            CoreMsg::HlsForget { core, token } => self.hls_forget((core, token)),
            CoreMsg::Record { key, on, reply } => self.on_record_request(key, on, reply),
            CoreMsg::Keyframe { key, reply } => {
                let answer = self
                    .streams
                    .get(&key)
                    .filter(|s| s.owner.is_some())
                    .map(|stream| {
                        stream
                            .gop
                            .keyframe()
                            .map(|(header, key)| crate::snapshot::Keyframe {
                                header: header.map(|h| h.body.clone()).unwrap_or_default(),
                                body: key.body.clone(),
                                dts_ms: key.dts_ms,
                                pts_ms: key.pts_ms,
                            })
                    });
                let _ = reply.send(answer);
            }
            CoreMsg::Shutdown => self.stop = true,
            #[cfg(test)]
            #[allow(clippy::panic)]
            CoreMsg::PanicForTest => panic!("core {} was asked to panic", self.index),
        }
    }

    fn report(&self, now: Instant) -> CoreReport {
        let clients = self
            .clients
            .iter()
            .map(|(_, c)| {
                let stats = c.queue.stats();
                ClientInfo {
                    id: c.id,
                    role: match c.role {
                        Role::Connecting => ClientRole::Connecting,
                        Role::Publisher { .. } => ClientRole::Publisher,
                        Role::Viewer { .. } => ClientRole::Viewer,
                    },
                    stream: client_stream(c).cloned(),
                    peer: c.peer,
                    core: self.index,
                    connected_ms: now.saturating_duration_since(c.accepted_at).as_millis() as u64,
                    bytes_in: c.bytes_in,
                    bytes_out: stats.bytes_written,
                    frames_dropped: stats.frames_dropped,
                    queue_bytes: c.queue.queued_bytes() as u64,
                    protocol: match (&c.session, &c.role) {
                        (Session::Rtmp(_), _) => "rtmp",
                        (Session::Http(_), Role::Viewer { .. }) => "http-flv",
                        (Session::Http(_), _) => "http",
                    },
                }
            })
            .collect();
        let mut owned = Vec::new();
        let mut viewers = Vec::new();
        let mut hls_sessions = Vec::new();
        for (key, stream) in &self.streams {
            let live_out: u64 = stream
                .viewers
                .iter()
                .filter_map(|&t| self.clients.get(t))
                .map(|c| c.queue.stats().bytes_written)
                .sum();
            let departed = stream.owner.as_ref().map_or(0, |o| o.bytes_out_departed);
            viewers.push((
                key.clone(),
                stream.viewers.len() as u64,
                stream.bytes_out_closed + live_out + departed,
            ));
            if let Some(hls) = &stream.hls {
                hls_sessions.push((key.clone(), hls.sessions().cloned().collect()));
            }
            if let Some(owner) = &stream.owner {
                owned.push(StreamInfo {
                    stream: key.clone(),
                    owner_core: self.index,
                    publisher: owner.publisher,
                    origin: owner.remote.as_ref().map(|r| r.origin.clone()),
                    hops: owner.remote.as_ref().map_or(0, |r| r.hops),
                    home: None,
                    viewers: 0,
                    hls_sessions: 0,
                    bytes_out: 0,
                    frames_in: owner.frames_in,
                    bytes_in: owner.bytes_in,
                    gop_cache_frames: stream.gop.frames() as u64,
                    media: crate::media::describe::describe(stream.gop.start_frames()),
                    publishing_ms: owner
                        .publishing_since
                        .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64),
                });
            }
        }
        CoreReport {
            clients,
            owned,
            viewers,
            hls_sessions,
        }
    }
}
