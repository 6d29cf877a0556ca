//! RTMP session events: connect, publish and play requests (names, bans, publish tokens, the `on_publish`
//! hook, one publisher per stream), and a publisher's media messages becoming frames.

use std::time::{Duration, Instant};

use rml_rtmp::sessions::ServerSessionEvent;
use tracing::{debug, info, warn};

use super::{NodeCore, Role, Session, CLOSE_FLUSH};
use crate::auth::{self, OnPublishRequest};
use crate::config::FanoutConfig;
use crate::control::ClientId;
use crate::media::Frame;
use crate::node::clients::Token;
use crate::node::hooks::{HookJob, HookSlot};
use crate::node::mailbox::CoreMsg;
use crate::node::shared::CoreCounters;
use crate::node::streams::passes_after_loss;
use crate::rtmp::ingest::Ingest;
use crate::stream_key::{split_query, StreamKey};

impl NodeCore {
    pub(super) fn on_session_event(&mut self, token: Token, event: ServerSessionEvent) {
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                if let Some(client) = self.clients.get_mut(token) {
                    client.app = Some(app_name);
                }
                self.accept_request(token, request_id);
            }
            ServerSessionEvent::ReleaseStreamRequested { request_id, .. } => {
                self.accept_request(token, request_id)
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => self.on_publish_request(token, request_id, &app_name, &stream_key),
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                app_name,
                stream_key,
                stream_id,
                ..
            } => self.on_play_request(token, request_id, &app_name, &stream_key, stream_id),
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                self.on_media(token, |ingest, now| {
                    ingest
                        .video(data, timestamp.value, now)
                        .map_err(|e| e.to_string())
                })
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                self.on_media(token, |ingest, now| {
                    ingest
                        .audio(data, timestamp.value, now)
                        .map_err(|e| e.to_string())
                })
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                self.on_media(token, |ingest, now| Ok(ingest.metadata(&metadata, now)))
            }
            ServerSessionEvent::PublishStreamFinished { .. } => self.close(token, "publisher finished"),
            ServerSessionEvent::PlayStreamFinished { .. } => self.close(token, "player stopped"),
            _ => {}
        }
    }

    fn accept_request(&mut self, token: Token, request_id: u32) {
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        let Session::Rtmp(rtmp) = &mut client.session else {
            return;
        };
        let mut events = Vec::new();
        let mut out = Vec::new();
        let result = rtmp.accept(request_id, &mut events, &mut out);
        for bytes in out {
            client.queue.push_control(bytes);
        }
        self.mark_dirty(token);
        if let Err(error) = result {
            warn!(core = self.index, %error, "cannot accept request");
            self.close(token, "protocol error");
        }
    }

    fn refuse(&mut self, token: Token, request_id: u32, code: &str, why: &str) {
        CoreCounters::add(&self.counters.refused, 1);
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        info!(core = self.index, client = client.id.0, peer = %client.peer, code, reason = why, "request refused");
        let Session::Rtmp(rtmp) = &mut client.session else {
            return;
        };
        let mut out = Vec::new();
        let _ = rtmp.reject(request_id, code, why, &mut out);
        for bytes in out {
            client.queue.push_control(bytes);
        }
        client.closing = Some((self.now + CLOSE_FLUSH, "request refused"));
        self.mark_dirty(token);
    }

    pub(super) fn stream_key(
        &self,
        token: Token,
        app: &str,
        raw_name: &str,
    ) -> Result<(StreamKey, Option<String>), String> {
        if !matches!(self.clients.get(token), Some(c) if matches!(c.role, Role::Connecting) && !c.hook_pending)
        {
            return Err("connection already publishes or plays".to_string());
        }
        let (name, query) = split_query(raw_name);
        let key = StreamKey::new(app, name).map_err(|e| e.to_string())?;
        Ok((key, query.map(str::to_string)))
    }

    fn on_publish_request(&mut self, token: Token, request_id: u32, app: &str, raw_name: &str) {
        let (key, query) = match self.stream_key(token, app, raw_name) {
            Ok(parts) => parts,
            Err(why) => return self.refuse(token, request_id, "NetStream.Publish.BadName", &why),
        };
        if let Some(ban) = self.shared.bans.check(&key) {
            let why = format!("stream {key} is forbidden: {}", ban.reason);
            return self.refuse(token, request_id, "NetStream.Publish.Rejected", &why);
        }
        if let Some(secret) = &self.shared.config.auth.publish_secret {
            let now_s = self.shared.unix_time_s(self.now);
            if let Err(error) = auth::verify_publish(secret.as_bytes(), &key, query.as_deref(), now_s) {
                let why = format!("publish to {key} not authorised: {error}");
                return self.refuse(token, request_id, "NetStream.Publish.Rejected", &why);
            }
        }
        let Some(id) = self.clients.get(token).map(|c| c.id) else {
            return;
        };
        if let Some(hooks) = &self.shared.hooks {
            // The key is claimed only once the hook allows: a publish the hook refuses (or has not answered
            // yet) holds nothing. A stream published already is refused without asking.
            if let Some(current) = self.shared.publisher_of(&key) {
                let why = format!("stream {key} is already published by client {}", current.0);
                return self.refuse(token, request_id, "NetStream.Publish.BadName", &why);
            }
            let Some(client) = self.clients.get_mut(token) else {
                return;
            };
            let job = HookJob {
                request: OnPublishRequest {
                    app: key.app().to_string(),
                    stream: key.stream().to_string(),
                    client_addr: client.peer,
                    client_id: id.0,
                    query,
                },
                core: self.index,
                token,
                client: id,
                request_id,
                key: key.clone(),
                slot: HookSlot::default(),
            };
            client.hook_pending = true;
            if !hooks.submit(job) {
                client.hook_pending = false;
                CoreCounters::add(&self.counters.limits.hook_busy, 1);
                return self.refuse(
                    token,
                    request_id,
                    "NetStream.Publish.Rejected",
                    "on_publish hook overloaded",
                );
            }
            return;
        }
        if let Err(current) = self.shared.claim(&key, id) {
            let why = format!("stream {key} is already published by client {}", current.0);
            return self.refuse(token, request_id, "NetStream.Publish.BadName", &why);
        }
        self.start_publishing(token, request_id, key, id);
    }

    /// The `on_publish` hook answered (or failed: fail closed).
    pub(super) fn on_hook_verdict(
        &mut self,
        token: Token,
        client: ClientId,
        request_id: u32,
        key: StreamKey,
        verdict: Result<(), String>,
    ) {
        let waiting = self
            .clients
            .get_mut(token)
            .filter(|c| c.id == client && c.hook_pending);
        let Some(waiting) = waiting else {
            // The client left while the hook was asked: it claimed nothing.
            return;
        };
        waiting.hook_pending = false;
        match verdict {
            Ok(()) => {
                if let Err(current) = self.shared.claim(&key, client) {
                    let why = format!("stream {key} is already published by client {}", current.0);
                    return self.refuse(token, request_id, "NetStream.Publish.BadName", &why);
                }
                self.start_publishing(token, request_id, key, client)
            }
            Err(reason) => {
                let why = format!("publish to {key} refused by on_publish: {reason}");
                self.refuse(token, request_id, "NetStream.Publish.Rejected", &why);
            }
        }
    }

    fn start_publishing(&mut self, token: Token, request_id: u32, key: StreamKey, id: ClientId) {
        if let Some(client) = self.clients.get_mut(token) {
            client.role = Role::Publisher {
                key: key.clone(),
                ingest: Box::new(Ingest::new()),
                needs_key: false,
            };
            info!(core = self.index, client = id.0, peer = %client.peer, stream = %key, "publish start");
        }
        CoreCounters::add(&self.counters.publishers, 1);
        self.accept_request(token, request_id);
        self.send_to_owner(
            &key,
            CoreMsg::PublishStart {
                key: key.clone(),
                publisher: id,
            },
        );
    }

    fn on_play_request(&mut self, token: Token, request_id: u32, app: &str, raw_name: &str, stream_id: u32) {
        let (key, _query) = match self.stream_key(token, app, raw_name) {
            Ok(parts) => parts,
            Err(why) => return self.refuse(token, request_id, "NetStream.Play.StreamNotFound", &why),
        };
        if let Some(ban) = self.shared.bans.check(&key) {
            let why = format!("stream {key} is forbidden: {}", ban.reason);
            return self.refuse(token, request_id, "NetStream.Play.Failed", &why);
        }
        let fanout: FanoutConfig = self.shared.config.fanout_for(key.app()).clone();
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        client.role = Role::Viewer {
            key: key.clone(),
            stream_id,
            since: self.now,
        };
        client.queue.set_policy(
            fanout.drop_policy,
            fanout.viewer_queue_bytes,
            Duration::from_millis(fanout.latency_budget_ms),
        );
        info!(core = self.index, client = client.id.0, peer = %client.peer, stream = %key, "play start");
        CoreCounters::add(&self.counters.viewers, 1);
        self.accept_request(token, request_id);
        self.attach_viewer(token, &key);
    }

    fn on_media(&mut self, token: Token, build: impl FnOnce(&mut Ingest, Instant) -> Result<Frame, String>) {
        let now = self.now;
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        let Role::Publisher {
            key,
            ingest,
            needs_key,
        } = &mut client.role
        else {
            return;
        };
        let frame = match build(ingest, now) {
            Ok(frame) => frame,
            Err(error) => {
                debug!(core = self.index, client = client.id.0, stream = %key, %error, "media message refused");
                return;
            }
        };
        CoreCounters::add(&self.counters.frames_in, 1);
        let key = key.clone();
        let owner = self.shared.owner_of(&key);
        if owner == self.index {
            self.on_ingest(&key, frame, now);
            return;
        }
        if !passes_after_loss(needs_key, &frame) {
            return;
        }
        let lost = self.post(owner, CoreMsg::Ingest { key, frame }).is_err();
        if lost {
            if let Some(Role::Publisher { needs_key, .. }) = self.clients.get_mut(token).map(|c| &mut c.role)
            {
                *needs_key = true;
            }
        }
    }
}
