//! A client's life on the core: handshake and idle timeouts, the unpublish grace period for viewers, the wait
//! of players of a stream nobody publishes (`NetStream.Play.StreamNotFound` after `rtmp.play_wait_ms`), and
//! closing (the session-end log line, counters, the publisher's claim released, the viewer detached).

use std::time::{Duration, Instant};

use tracing::info;

use super::{Close, NodeCore, Role, Session, CLOSE_FLUSH};
use crate::node::clients::Token;
use crate::node::mailbox::CoreMsg;
use crate::node::shared::CoreCounters;

/// How much longer than `rtmp.play_wait_ms` a viewer waits when its core never heard from the stream's owner.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(1);

impl NodeCore {
    pub(super) fn on_tick(&mut self, now: Instant) {
        let rtmp = &self.shared.config.rtmp;
        let handshake_timeout = Duration::from_millis(rtmp.handshake_timeout_ms);
        let idle_timeout = Duration::from_millis(rtmp.idle_timeout_ms);
        let grace = Duration::from_millis(rtmp.unpublish_grace_ms);
        let play_wait = Duration::from_millis(rtmp.play_wait_ms);
        let keepalive_idle = Duration::from_millis(self.shared.config.egress.keepalive_idle_ms);
        let answer_wait = super::http::answer_wait(&self.shared.config);
        let mut lost = Vec::new();
        let write_stall =
            (rtmp.write_stall_timeout_ms > 0).then(|| Duration::from_millis(rtmp.write_stall_timeout_ms));
        let mut expired: Vec<(Token, &'static str)> = Vec::new();
        for (token, client) in self.clients.iter() {
            if let Some((deadline, _)) = client.closing {
                if now >= deadline {
                    expired.push((token, "close flush timed out"));
                }
                continue;
            }
            if let (Some(since), Some(limit)) = (client.stalled_since, write_stall) {
                if now.saturating_duration_since(since) >= limit {
                    expired.push((token, "write stalled (rtmp.write_stall_timeout_ms)"));
                    continue;
                }
            }
            if super::http::answer_lost(&client.session, now, answer_wait) {
                lost.push(token);
                continue;
            }
            match client.role {
                // A kept-alive HTTP connection between requests has its own idle bound.
                Role::Connecting if super::http::idle_expired(&client.session, now, keepalive_idle) => {
                    expired.push((token, "keep-alive idle (egress.keepalive_idle_ms)"));
                }
                // An HTTP request waiting for its answer (parked HLS), or a connection that has had answers
                // (kept alive), is not a slow handshake.
                Role::Connecting
                    if now.saturating_duration_since(client.accepted_at) > handshake_timeout
                        && !matches!(&client.session, Session::Http(http)
                            if http.reader.is_waiting() || http.reader.requests_read() > 0) =>
                {
                    expired.push((token, "handshake timeout (no publish or play in time)"));
                }
                Role::Publisher { .. } if now.saturating_duration_since(client.last_input) > idle_timeout => {
                    expired.push((token, "publisher idle timeout"));
                }
                _ => {}
            }
        }
        for (token, reason) in expired {
            if reason.starts_with("handshake") {
                CoreCounters::add(&self.counters.rejected, 1);
            }
            if reason.starts_with("write stalled") {
                CoreCounters::add(&self.counters.limits.write_stall, 1);
            }
            if reason.starts_with("keep-alive idle") {
                // Its last answer may still be on its way out of the connection's send queue.
                self.close_as(token, reason, Close::AfterFlush);
                continue;
            }
            self.close(token, reason);
        }
        for token in lost {
            self.http_answer_lost(token);
        }
        // Viewers of streams whose publisher left more than the grace period ago are told the stream is over,
        // and their HLS playlists end.
        let mut finished = Vec::new();
        let mut hls_ended = Vec::new();
        for (key, stream) in self.streams.iter_mut() {
            if let Some(ended) = stream.ended_at {
                if now.saturating_duration_since(ended) > grace {
                    stream.ended_at = None;
                    finished.extend(stream.viewers.iter().copied());
                    if let Some(hls) = stream.hls.as_mut() {
                        hls.finish(now);
                        hls_ended.push(key.clone());
                    }
                }
            }
        }
        for token in finished {
            self.finish_viewer(token, now);
        }
        for key in hls_ended {
            self.hls_changed(&key);
        }
        self.hls_tick(now);
        // Players of a stream nobody publishes wait at most `play_wait_ms`, then hear it was not found.
        let mut not_found = Vec::new();
        for stream in self.streams.values() {
            if stream.live || stream.ended_at.is_some() {
                continue;
            }
            // The owner's snapshot says within microseconds whether the stream is live; a lost one must not
            // hold its viewers forever either.
            let wait = play_wait
                + if stream.awaiting_snapshot {
                    SNAPSHOT_WAIT
                } else {
                    Duration::ZERO
                };
            for &token in &stream.viewers {
                let Some(client) = self.clients.get(token) else {
                    continue;
                };
                if let (None, Role::Viewer { since, .. }) = (client.closing, &client.role) {
                    if now.saturating_duration_since(*since) >= wait {
                        not_found.push(token);
                    }
                }
            }
        }
        for token in not_found {
            self.stream_not_found(token, now);
        }
    }

    /// Tells viewer `token` its stream is not published (`NetStream.Play.StreamNotFound`) and closes it once
    /// that is written.
    fn stream_not_found(&mut self, token: Token, now: Instant) {
        let wait_ms = self.shared.config.rtmp.play_wait_ms;
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        let Role::Viewer { key, stream_id, .. } = &client.role else {
            return;
        };
        let why = format!("stream {key} is not published (waited {wait_ms} ms, rtmp.play_wait_ms)");
        info!(core = self.index, client = client.id.0, peer = %client.peer, stream = %key, "play: stream not found");
        match &mut client.session {
            Session::Rtmp(rtmp) => {
                let status = rtmp.play_error(*stream_id, "NetStream.Play.StreamNotFound", &why);
                client.queue.push_control(status);
            }
            Session::Http(_) => {
                let cors = &self.shared.config.egress.cors_allow_origin;
                let end = super::http::end_of_body(&mut client.queue, cors, 404, "Not Found", &why);
                client.queue.push_control(end);
            }
        }
        client.closing = Some((now + CLOSE_FLUSH, "stream not found (rtmp.play_wait_ms)"));
        CoreCounters::add(&self.counters.limits.play_wait, 1);
        self.mark_dirty(token);
    }

    fn finish_viewer(&mut self, token: Token, now: Instant) {
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        let Role::Viewer { stream_id, .. } = client.role else {
            return;
        };
        match &mut client.session {
            Session::Rtmp(rtmp) => {
                let mut out = Vec::new();
                rtmp.finish_playing(stream_id, &mut out);
                for bytes in out {
                    client.queue.push_control(bytes);
                }
            }
            Session::Http(_) => {
                let why = "the stream ended (its publisher left)";
                let cors = &self.shared.config.egress.cors_allow_origin;
                let end = super::http::end_of_body(&mut client.queue, cors, 404, "Not Found", why);
                client.queue.push_control(end);
            }
        }
        client.closing = Some((now + CLOSE_FLUSH, "stream ended (publisher gone)"));
        self.mark_dirty(token);
    }

    pub(super) fn close(&mut self, token: Token, reason: &str) {
        self.close_as(token, reason, Close::Now);
    }

    /// Closes client `token`; the IO loop closes its connection as `how` says.
    pub(super) fn close_as(&mut self, token: Token, reason: &str, how: Close) {
        let Some(client) = self.clients.remove(token) else {
            return;
        };
        self.closed.push((token, how));
        CoreCounters::sub(&self.counters.connections, 1);
        if self.shared.config.rtmp.max_connections_per_ip > 0 {
            self.shared.release_ip(client.peer.ip());
        }
        let stats = client.queue.stats();
        let lived_ms = self.now.saturating_duration_since(client.accepted_at).as_millis() as u64;
        let (role, stream) = match &client.role {
            Role::Connecting => ("connecting", None),
            Role::Publisher { key, .. } => ("publisher", Some(key.clone())),
            Role::Viewer { key, .. } => ("viewer", Some(key.clone())),
        };
        info!(
            core = self.index,
            client = client.id.0,
            peer = %client.peer,
            role,
            stream = stream.as_ref().map_or("-", |k| k.as_str()),
            reason,
            duration_ms = lived_ms,
            bytes_in = client.bytes_in,
            bytes_out = stats.bytes_written,
            frames_dropped = stats.frames_dropped,
            "session end"
        );
        match client.role {
            Role::Connecting => {
                if let Session::Http(http) = &client.session {
                    // Its request may wait on a stream here, or at the owner core it was posted to.
                    self.hls_forget((self.index, token));
                    if let Some((owner, _)) = http.hls_posted.filter(|&(o, _)| o != self.index) {
                        let core = self.index;
                        let _ = self.post(owner, CoreMsg::HlsForget { core, token });
                    }
                }
            }
            Role::Publisher { key, .. } => {
                CoreCounters::sub(&self.counters.publishers, 1);
                self.shared.release(&key, client.id);
                self.send_to_owner(
                    &key,
                    CoreMsg::PublishEnd {
                        key: key.clone(),
                        publisher: client.id,
                    },
                );
            }
            Role::Viewer { key, .. } => {
                CoreCounters::sub(&self.counters.viewers, 1);
                if matches!(client.session, Session::Http(_)) {
                    CoreCounters::sub(&self.counters.http_viewers, 1);
                }
                self.detach_viewer(token, &key, stats.bytes_written);
            }
        }
    }
}
