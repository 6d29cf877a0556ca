//! [`Core`]: one data-plane thread: its listener, its clients, its share of the streams, its inbox.
//!
//! The loop: wait for readiness (or the next tick), accept, read and parse clients' input, handle inbox
//! messages, then write every viewer that got frames in this iteration (one `writev` each) and wake the
//! cores that were sent messages (one eventfd write each). Nothing is locked per frame.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use engine::{Events, Interest, Listener, Poller, Waker};
use rml_rtmp::sessions::ServerSessionEvent;
use tracing::{debug, info, warn};

use crate::auth::{self, OnPublishRequest};
use crate::config::FanoutConfig;
use crate::control::{ClientId, ClientInfo, ClientRole, StreamInfo};
use crate::fanout::{Pushed, ViewerQueue};
use crate::media::Frame;
use crate::node::clients::{Slots, Token};
use crate::node::hooks::HookJob;
use crate::node::mailbox::{CoreMsg, CoreReport, SendError};
use crate::node::shared::{CoreCounters, Shared};
use crate::node::streams::{passes_after_loss, LocalStream, Subscriber};
use crate::rtmp::chunk_guard::GuardLimits;
use crate::rtmp::connection::RtmpConnection;
use crate::rtmp::ingest::Ingest;
use crate::stream_key::{split_query, StreamKey};

const LISTENER: Token = u64::MAX;
const WAKER: Token = u64::MAX - 1;
/// Housekeeping period: timeouts, grace periods.
const TICK: Duration = Duration::from_millis(50);
/// Most bytes read from one client per readiness report (fairness between clients).
const READ_BUDGET: usize = 256 << 10;
/// Most inbox messages handled per loop iteration before sockets get a turn.
const INBOX_BUDGET: usize = 8192;
/// How long a closing viewer may take to drain its queue.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// What a client does.
#[derive(Debug)]
enum Role {
    Connecting,
    Publisher {
        key: StreamKey,
        ingest: Box<Ingest>,
        /// A frame to the owner was lost: skip video to the next keyframe.
        needs_key: bool,
    },
    Viewer {
        key: StreamKey,
        stream_id: u32,
    },
}

#[derive(Debug)]
struct Client {
    id: ClientId,
    socket: TcpStream,
    peer: SocketAddr,
    accepted_at: Instant,
    last_input: Instant,
    rtmp: RtmpConnection,
    role: Role,
    app: Option<String>,
    queue: ViewerQueue,
    /// Registered for writability (the socket was full).
    want_write: bool,
    /// In this iteration's list of clients to write.
    dirty: bool,
    /// Close once the queue is written (or at this deadline).
    closing: Option<(Instant, &'static str)>,
    /// A publish request waits for the `on_publish` hook.
    hook_pending: bool,
    bytes_in: u64,
}

/// One data-plane core.
pub struct Core {
    index: usize,
    shared: Arc<Shared>,
    counters: Arc<CoreCounters>,
    poller: Poller,
    listener: Listener,
    inbox: Receiver<CoreMsg>,
    waker: Arc<Waker>,
    clients: Slots<Client>,
    streams: HashMap<StreamKey, LocalStream, foldhash::fast::RandomState>,
    dirty: Vec<Token>,
    wake: Vec<bool>,
    next_sequence: u64,
    read_buf: Vec<u8>,
    events: Vec<ServerSessionEvent>,
    out: Vec<Bytes>,
    guard_limits: GuardLimits,
    /// Viewers are written no sooner than this (see `rtmp.write_coalesce_ms`).
    next_flush: Instant,
    write_coalesce: Duration,
    /// The listener is unregistered after an accept error (out of fds) until the next tick.
    accept_paused: bool,
    stop: bool,
}

impl Core {
    /// A core with its (already bound) listener, inbox and waker.
    pub fn new(
        index: usize,
        shared: Arc<Shared>,
        listener: Listener,
        inbox: Receiver<CoreMsg>,
        waker: Arc<Waker>,
    ) -> io::Result<Core> {
        let poller = Poller::new()?;
        poller.add(listener.as_raw_fd(), LISTENER, Interest::READABLE)?;
        poller.add(waker.as_raw_fd(), WAKER, Interest::READABLE)?;
        let rtmp = &shared.config.rtmp;
        let guard_limits = GuardLimits {
            max_message_bytes: rtmp.max_message_bytes,
            max_command_bytes: rtmp.max_command_bytes,
            ..GuardLimits::default()
        };
        let counters = shared.counters.get(index).cloned().unwrap_or_default();
        let write_coalesce = Duration::from_millis(shared.config.rtmp.write_coalesce_ms);
        let cores = shared.cores();
        Ok(Core {
            index,
            counters,
            poller,
            listener,
            inbox,
            waker,
            clients: Slots::default(),
            streams: HashMap::default(),
            dirty: Vec::new(),
            wake: vec![false; cores],
            next_sequence: 0,
            read_buf: vec![0; 64 << 10],
            events: Vec::new(),
            out: Vec::new(),
            guard_limits,
            shared,
            accept_paused: false,
            next_flush: Instant::now(),
            write_coalesce,
            stop: false,
        })
    }

    /// Runs until [`CoreMsg::Shutdown`].
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        while !self.stop {
            let mut deadline = next_tick;
            if !self.dirty.is_empty() {
                deadline = deadline.min(self.next_flush);
            }
            if let Err(error) = self.poller.wait_until(&mut events, Some(deadline)) {
                warn!(core = self.index, %error, "poller wait failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            for readiness in events.iter() {
                match readiness.token {
                    LISTENER => self.accept_all(),
                    WAKER => {
                        self.waker.drain();
                    }
                    token => {
                        if readiness.readable {
                            self.on_readable(token);
                        }
                        if readiness.writable {
                            self.mark_dirty(token);
                        }
                    }
                }
            }
            self.drain_inbox();
            self.flush_dirty();
            self.wake_cores();
            let now = Instant::now();
            if now >= next_tick {
                self.on_tick(now);
                next_tick = now + TICK;
            }
        }
        let tokens: Vec<Token> = self.clients.iter().map(|(token, _)| token).collect();
        for token in tokens {
            self.close(token, "node shutting down");
        }
        self.wake_cores();
    }

    // ---- accept and read ----

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok(Some((socket, peer))) => self.on_accept(socket, peer),
                Ok(None) => return,
                Err(error) => {
                    // EMFILE and friends: the listener stays readable, so stop watching it until the next
                    // tick instead of spinning on it.
                    warn!(core = self.index, %error, "accept failed; pausing accepts for one tick");
                    if self.poller.delete(self.listener.as_raw_fd()).is_ok() {
                        self.accept_paused = true;
                    }
                    return;
                }
            }
        }
    }

    fn on_accept(&mut self, socket: TcpStream, peer: SocketAddr) {
        CoreCounters::add(&self.counters.accepted, 1);
        if self.clients.len() >= self.shared.config.rtmp.max_connections_per_core {
            CoreCounters::add(&self.counters.rejected, 1);
            warn!(core = self.index, %peer, "connection refused: core at max_connections_per_core");
            return;
        }
        self.next_sequence += 1;
        let id = ClientId::new(self.index, self.next_sequence);
        let now = Instant::now();
        let fanout = &self.shared.config.fanout;
        let client = Client {
            id,
            peer,
            accepted_at: now,
            last_input: now,
            rtmp: RtmpConnection::new(self.guard_limits.clone(), self.shared.config.rtmp.chunk_size),
            role: Role::Connecting,
            app: None,
            queue: ViewerQueue::new(
                fanout.drop_policy,
                fanout.viewer_queue_bytes,
                Duration::from_millis(fanout.latency_budget_ms),
            ),
            want_write: false,
            dirty: false,
            closing: None,
            hook_pending: false,
            bytes_in: 0,
            socket,
        };
        let fd = client.socket.as_raw_fd();
        let token = self.clients.insert(client);
        if let Err(error) = self.poller.add(fd, token, Interest::READABLE) {
            warn!(core = self.index, %peer, %error, "cannot register connection");
            self.clients.remove(token);
            return;
        }
        CoreCounters::add(&self.counters.connections, 1);
        debug!(core = self.index, client = id.0, %peer, "connection accepted");
    }

    fn on_readable(&mut self, token: Token) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(client) = self.clients.get_mut(token) else {
                return;
            };
            let read = match client.socket.read(&mut self.read_buf) {
                Ok(0) => {
                    self.close(token, "peer closed the connection");
                    return;
                }
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(token, "read error");
                    return;
                }
            };
            client.bytes_in += read as u64;
            client.last_input = Instant::now();
            CoreCounters::add(&self.counters.bytes_in, read as u64);
            let mut events = std::mem::take(&mut self.events);
            let mut out = std::mem::take(&mut self.out);
            let input = self.read_buf.get(..read).unwrap_or_default();
            let result = client.rtmp.feed(input, &mut events, &mut out);
            for bytes in out.drain(..) {
                client.queue.push_control(bytes);
            }
            self.out = out;
            if !client.dirty {
                client.dirty = true;
                self.dirty.push(token);
            }
            if let Err(error) = result {
                events.clear();
                self.events = events;
                let (id, peer) = (client.id, client.peer);
                warn!(core = self.index, client = id.0, %peer, %error, "closing client: bad input");
                CoreCounters::add(&self.counters.rejected, 1);
                self.close(token, "protocol error");
                return;
            }
            for event in events.drain(..) {
                self.on_session_event(token, event);
            }
            self.events = events;
            budget = budget.saturating_sub(read);
            if budget == 0 || read < self.read_buf.len() {
                return;
            }
        }
    }

    // ---- RTMP session events ----

    fn on_session_event(&mut self, token: Token, event: ServerSessionEvent) {
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
        let mut events = Vec::new();
        let mut out = Vec::new();
        let result = client.rtmp.accept(request_id, &mut events, &mut out);
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
        let mut out = Vec::new();
        let _ = client.rtmp.reject(request_id, code, why, &mut out);
        for bytes in out {
            client.queue.push_control(bytes);
        }
        client.closing = Some((Instant::now() + CLOSE_FLUSH, "request refused"));
        self.mark_dirty(token);
    }

    fn stream_key(
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
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Err(error) = auth::verify_publish(secret.as_bytes(), &key, query.as_deref(), now_s) {
                let why = format!("publish to {key} not authorised: {error}");
                return self.refuse(token, request_id, "NetStream.Publish.Rejected", &why);
            }
        }
        let Some(id) = self.clients.get(token).map(|c| c.id) else {
            return;
        };
        if let Err(current) = self.shared.claim(&key, id) {
            let why = format!("stream {key} is already published by client {}", current.0);
            return self.refuse(token, request_id, "NetStream.Publish.BadName", &why);
        }
        if let Some(hooks) = &self.shared.hooks {
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
            };
            client.hook_pending = true;
            if !hooks.submit(job) {
                client.hook_pending = false;
                self.shared.release(&key, id);
                return self.refuse(
                    token,
                    request_id,
                    "NetStream.Publish.Rejected",
                    "on_publish hook overloaded",
                );
            }
            return;
        }
        self.start_publishing(token, request_id, key, id);
    }

    /// The `on_publish` hook answered (or failed: fail closed).
    fn on_hook_verdict(
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
            // The client left while the hook was asked: free its claim.
            self.shared.release(&key, client);
            return;
        };
        waiting.hook_pending = false;
        match verdict {
            Ok(()) => self.start_publishing(token, request_id, key, client),
            Err(reason) => {
                self.shared.release(&key, client);
                let why = format!("publish to {key} refused by on_publish: {reason}");
                self.refuse(token, request_id, "NetStream.Publish.Rejected", &why);
            }
        }
    }

    fn start_publishing(&mut self, token: Token, request_id: u32, key: StreamKey, id: ClientId) {
        let chunk_size = self.shared.config.rtmp.chunk_size as usize;
        if let Some(client) = self.clients.get_mut(token) {
            client.role = Role::Publisher {
                key: key.clone(),
                ingest: Box::new(Ingest::new(chunk_size)),
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
        let now = Instant::now();
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

    // ---- streams ----

    fn gop_cache_bytes(&self, key: &StreamKey) -> usize {
        self.shared.config.fanout_for(key.app()).gop_cache_bytes
    }

    /// Owner: a frame from the publisher (local or from another core).
    fn on_ingest(&mut self, key: &StreamKey, frame: Frame, now: Instant) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        let Some(owner) = stream.owner.as_mut() else {
            return;
        };
        owner.frames_in += 1;
        owner.bytes_in += frame.body.len() as u64;
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
        self.deliver_local(key, frame, now);
    }

    /// Any core: a frame of a stream with viewers here goes to the GOP cache and every local viewer's queue.
    fn deliver_local(&mut self, key: &StreamKey, frame: Frame, now: Instant) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        stream.ended_at = None;
        stream.gop.push(&frame);
        let mut overflowed = Vec::new();
        let (mut queued, mut dropped) = (0u64, 0u64);
        for &token in &stream.viewers {
            let Some(client) = self.clients.get_mut(token) else {
                continue;
            };
            match client.queue.push(&frame, now) {
                Pushed::Queued => {
                    queued += 1;
                    if !client.dirty {
                        client.dirty = true;
                        self.dirty.push(token);
                    }
                }
                Pushed::Dropped => dropped += 1,
                Pushed::Overflow => overflowed.push(token),
            }
        }
        CoreCounters::add(&self.counters.frames_out, queued);
        CoreCounters::add(&self.counters.frames_dropped, dropped);
        for token in overflowed {
            CoreCounters::add(&self.counters.viewers_overflowed, 1);
            self.close(token, "viewer queue full (drop policy none)");
        }
    }

    fn attach_viewer(&mut self, token: Token, key: &StreamKey) {
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
            let now = Instant::now();
            if let Some(client) = self.clients.get_mut(token) {
                for frame in stream.gop.start_frames() {
                    let _ = client.queue.push(frame, now);
                }
            }
            self.mark_dirty(token);
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

    fn detach_viewer(&mut self, token: Token, key: &StreamKey) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        if let Some(position) = stream.viewers.iter().position(|&t| t == token) {
            stream.viewers.swap_remove(position);
        }
        if stream.is_unused() {
            let owned = stream.owner.is_some();
            self.streams.remove(key);
            if !owned {
                self.send_to_owner(
                    key,
                    CoreMsg::Unsubscribe {
                        key: key.clone(),
                        core: self.index,
                    },
                );
            }
        }
    }

    /// The stream's publisher changed: every local viewer skips video until the new publisher's keyframe
    /// (an inter frame of the new publisher does not decode against the old one's pictures).
    fn resync_viewers(&mut self, key: &StreamKey) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        stream.gop.clear();
        for &token in &stream.viewers {
            if let Some(client) = self.clients.get_mut(token) {
                client.queue.wait_for_keyframe();
            }
        }
    }

    fn on_publish_start(&mut self, key: StreamKey, publisher: ClientId) {
        self.resync_viewers(&key);
        let gop_bytes = self.gop_cache_bytes(&key);
        let stream = self
            .streams
            .entry(key.clone())
            .or_insert_with(|| LocalStream::new(gop_bytes, true));
        stream.gop.clear();
        stream.ended_at = None;
        let mut subscribers = Vec::new();
        if let Some(owner) = stream.owner.as_mut() {
            owner.publisher = Some(publisher);
            owner.publishing_since = Some(Instant::now());
            for subscriber in &mut owner.subscribers {
                subscriber.needs_key = false;
                subscribers.push(subscriber.core);
            }
        }
        for core in subscribers {
            let _ = self.post(core, CoreMsg::PublisherChanged { key: key.clone() });
        }
    }

    fn on_publish_end(&mut self, key: StreamKey, publisher: ClientId) {
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
        stream.gop.clear();
        stream.ended_at = Some(Instant::now());
        let unused = stream.is_unused();
        self.resync_viewers(&key);
        for core in subscribers {
            let _ = self.post(core, CoreMsg::StreamEnded { key: key.clone() });
        }
        if unused {
            self.streams.remove(&key);
        }
    }

    fn on_subscribe(&mut self, key: StreamKey, core: usize) {
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
        let live = owner.publisher.is_some();
        let frames: Vec<Frame> = stream.gop.start_frames().cloned().collect();
        if self.post(core, CoreMsg::Snapshot { key, frames, live }).is_err() {
            warn!(core = self.index, to = core, "snapshot lost: inbox full");
        }
    }

    fn on_unsubscribe(&mut self, key: StreamKey, core: usize) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if let Some(owner) = stream.owner.as_mut() {
            owner.subscribers.retain(|s| s.core != core);
        }
        if stream.is_unused() {
            self.streams.remove(&key);
        }
    }

    fn on_snapshot(&mut self, key: StreamKey, frames: Vec<Frame>, live: bool) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if !stream.awaiting_snapshot {
            return;
        }
        stream.awaiting_snapshot = false;
        // Not live: the viewers wait for a publisher (as for a stream never published); the grace period
        // applies only to viewers who watched a publisher leave.
        let _ = live;
        let now = Instant::now();
        for frame in &frames {
            stream.gop.push(frame);
        }
        let viewers = stream.viewers.clone();
        for token in viewers {
            if let Some(client) = self.clients.get_mut(token) {
                for frame in &frames {
                    let _ = client.queue.push(frame, now);
                }
            }
            self.mark_dirty(token);
        }
    }

    fn on_stream_ended(&mut self, key: StreamKey) {
        self.resync_viewers(&key);
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.ended_at = Some(Instant::now());
        }
    }

    // ---- inbox ----

    fn drain_inbox(&mut self) {
        for _ in 0..INBOX_BUDGET {
            let Ok(message) = self.inbox.try_recv() else {
                return;
            };
            self.handle_message(message, Instant::now());
        }
    }

    /// Acts on one cross-core message (from the inbox, or from this core to itself).
    fn handle_message(&mut self, message: CoreMsg, now: Instant) {
        match message {
            CoreMsg::PublishStart { key, publisher } => self.on_publish_start(key, publisher),
            CoreMsg::Ingest { key, frame } => self.on_ingest(&key, frame, now),
            CoreMsg::PublishEnd { key, publisher } => self.on_publish_end(key, publisher),
            CoreMsg::Subscribe { key, core } => self.on_subscribe(key, core),
            CoreMsg::Unsubscribe { key, core } => self.on_unsubscribe(key, core),
            CoreMsg::Snapshot { key, frames, live } => self.on_snapshot(key, frames, live),
            CoreMsg::Fanout { key, frame } => self.deliver_local(&key, frame, now),
            CoreMsg::StreamEnded { key } => self.on_stream_ended(key),
            CoreMsg::PublisherChanged { key } => self.resync_viewers(&key),
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
            CoreMsg::Shutdown => self.stop = true,
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
                }
            })
            .collect();
        let mut owned = Vec::new();
        let mut viewers = Vec::new();
        for (key, stream) in &self.streams {
            viewers.push((key.clone(), stream.viewers.len() as u64));
            if let Some(owner) = &stream.owner {
                owned.push(StreamInfo {
                    stream: key.clone(),
                    owner_core: self.index,
                    publisher: owner.publisher,
                    viewers: 0,
                    frames_in: owner.frames_in,
                    bytes_in: owner.bytes_in,
                    gop_cache_frames: stream.gop.frames() as u64,
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
        }
    }

    // ---- output ----

    fn mark_dirty(&mut self, token: Token) {
        if let Some(client) = self.clients.get_mut(token) {
            if !client.dirty {
                client.dirty = true;
                self.dirty.push(token);
            }
        }
    }

    /// Writes dirty clients. Viewers are written at most once per `write_coalesce_ms` (the frames of the
    /// interval go in one `writev`); everyone else (handshakes, commands, closing clients) at once.
    fn flush_dirty(&mut self) {
        let now = Instant::now();
        let all = now >= self.next_flush;
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut wrote_viewers = false;
        for &token in &dirty {
            let coalesced = self
                .clients
                .get(token)
                .is_some_and(|c| matches!(c.role, Role::Viewer { .. }) && c.closing.is_none());
            if coalesced && !all {
                // Stays dirty: written at the next flush.
                self.dirty.push(token);
                continue;
            }
            wrote_viewers |= coalesced;
            self.flush(token);
        }
        if wrote_viewers {
            self.next_flush = now + self.write_coalesce;
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn flush(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        client.dirty = false;
        let result = client.queue.write_to(&mut client.socket);
        match result {
            Ok(written) => CoreCounters::add(&self.counters.bytes_out, written as u64),
            Err(_) => {
                self.close(token, "write error (peer gone)");
                return;
            }
        }
        let empty = client.queue.is_empty();
        if empty && client.closing.is_some() {
            let reason = client.closing.map_or("closing", |(_, reason)| reason);
            self.close(token, reason);
            return;
        }
        let want_write = !empty;
        if want_write != client.want_write {
            client.want_write = want_write;
            let interest = if want_write {
                Interest::BOTH
            } else {
                Interest::READABLE
            };
            let _ = self.poller.modify(client.socket.as_raw_fd(), token, interest);
        }
    }

    fn post(&mut self, core: usize, message: CoreMsg) -> Result<(), SendError> {
        post_to(&self.shared, &mut self.wake, &self.counters, core, message)
    }

    /// Sends a message about `key` to its owner, or handles it here when this core owns it.
    fn send_to_owner(&mut self, key: &StreamKey, message: CoreMsg) {
        let owner = self.shared.owner_of(key);
        if owner == self.index {
            self.handle_message(message, Instant::now());
            return;
        }
        if self.post(owner, message).is_err() {
            warn!(core = self.index, to = owner, stream = %key, "control message to owner lost: inbox full");
        }
    }

    fn wake_cores(&mut self) {
        for (core, flag) in self.wake.iter_mut().enumerate() {
            if std::mem::take(flag) {
                if let Some(mailbox) = self.shared.mailboxes.get(core) {
                    mailbox.wake();
                }
            }
        }
    }

    // ---- timers and closing ----

    fn on_tick(&mut self, now: Instant) {
        if self.accept_paused
            && self
                .poller
                .add(self.listener.as_raw_fd(), LISTENER, Interest::READABLE)
                .is_ok()
        {
            self.accept_paused = false;
        }
        let rtmp = &self.shared.config.rtmp;
        let handshake_timeout = Duration::from_millis(rtmp.handshake_timeout_ms);
        let idle_timeout = Duration::from_millis(rtmp.idle_timeout_ms);
        let grace = Duration::from_millis(rtmp.unpublish_grace_ms);
        let mut expired: Vec<(Token, &'static str)> = Vec::new();
        for (token, client) in self.clients.iter() {
            if let Some((deadline, _)) = client.closing {
                if now >= deadline {
                    expired.push((token, "close flush timed out"));
                }
                continue;
            }
            match client.role {
                Role::Connecting if now.saturating_duration_since(client.accepted_at) > handshake_timeout => {
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
            self.close(token, reason);
        }
        // Viewers of streams whose publisher left more than the grace period ago are told the stream is over.
        let mut finished = Vec::new();
        for stream in self.streams.values_mut() {
            if let Some(ended) = stream.ended_at {
                if now.saturating_duration_since(ended) > grace {
                    stream.ended_at = None;
                    finished.extend(stream.viewers.iter().copied());
                }
            }
        }
        for token in finished {
            self.finish_viewer(token, now);
        }
    }

    fn finish_viewer(&mut self, token: Token, now: Instant) {
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        let Role::Viewer { stream_id, .. } = client.role else {
            return;
        };
        let mut out = Vec::new();
        client.rtmp.finish_playing(stream_id, &mut out);
        for bytes in out {
            client.queue.push_control(bytes);
        }
        client.closing = Some((now + CLOSE_FLUSH, "stream ended (publisher gone)"));
        self.mark_dirty(token);
    }

    fn close(&mut self, token: Token, reason: &str) {
        let Some(client) = self.clients.remove(token) else {
            return;
        };
        let _ = self.poller.delete(client.socket.as_raw_fd());
        let _ = client.socket.shutdown(Shutdown::Both);
        CoreCounters::sub(&self.counters.connections, 1);
        let stats = client.queue.stats();
        let lived_ms = client.accepted_at.elapsed().as_millis() as u64;
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
            Role::Connecting => {}
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
                self.detach_viewer(token, &key);
            }
        }
    }
}

/// Posts `message` to core `core` (woken at the end of the loop iteration) and counts a full inbox. It takes
/// the fields it needs rather than the core, so a caller holding one of the core's streams can use it.
fn post_to(
    shared: &Shared,
    wake: &mut [bool],
    counters: &CoreCounters,
    core: usize,
    message: CoreMsg,
) -> Result<(), SendError> {
    let Some(mailbox) = shared.mailboxes.get(core) else {
        return Err(SendError::Gone);
    };
    let result = mailbox.post(message);
    match result {
        Ok(()) => {
            if let Some(flag) = wake.get_mut(core) {
                *flag = true;
            }
        }
        Err(SendError::Full) => CoreCounters::add(&counters.inbox_full, 1),
        Err(SendError::Gone) => {}
    }
    result
}

fn client_stream(client: &Client) -> Option<&StreamKey> {
    match &client.role {
        Role::Connecting => None,
        Role::Publisher { key, .. } | Role::Viewer { key, .. } => Some(key),
    }
}
