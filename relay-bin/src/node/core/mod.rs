//! [`NodeCore`]: the decisions of one data-plane core, sans-IO.
//!
//! A core's share of the node (its clients, the streams it owns or has viewers of, their GOP caches and
//! viewer queues, publish/play/auth outcomes, kick and forbid) as a state machine: the IO loop around it
//! ([`crate::node::io_loop`]) feeds it `now`, accepted connections, the bytes clients sent and inbox
//! messages, and performs what it asks: write a client's queued bytes, close a connection, wake a core. It
//! owns no socket and reads no clock (every entry point takes `now`), so unit tests drive it with buffers and
//! a virtual clock, and a harness can run several cores (or nodes) deterministically.
//!
//! The files, by concept: `session.rs` (RTMP session events: connect, publish, play, auth, media in),
//! `flow.rs` (a stream's frames from publisher to owner to subscribed cores to viewer queues), `admin.rs`
//! (inbox messages, kick, reports), `lifecycle.rs` (timeouts, grace periods, closing a client), `http.rs`
//! (HTTP egress clients: their requests, keep-alive, the answers, the end of an HTTP-FLV body), `hls.rs` (HLS
//! packaged at the owner core, requests waiting on it).

mod admin;
mod flow;
mod flush;
pub(crate) mod hls;
mod http;
mod lifecycle;
mod record;
mod remote;
mod session;
#[cfg(test)]
pub(crate) mod test_client;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use rml_rtmp::sessions::ServerSessionEvent;
use tracing::{debug, warn};

use crate::control::ClientId;
use crate::fanout::ViewerQueue;
use crate::node::clients::{Slots, Token};
use crate::node::mailbox::{CoreMsg, SendError};
use crate::node::shared::{CoreCounters, Shared};
use crate::node::streams::LocalStream;
use crate::rtmp::chunk_guard::{GuardError, GuardLimits};
use crate::rtmp::connection::{ConnectionError, RtmpConnection};
use crate::rtmp::ingest::Ingest;
use crate::stream_key::StreamKey;

/// Housekeeping period: timeouts, grace periods.
pub const TICK: Duration = Duration::from_millis(50);
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
        /// When it asked to play (it waits at most `rtmp.play_wait_ms` for a stream that is not live).
        since: Instant,
    },
}

/// The protocol a connection speaks, by the listener that accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `rtmp.listen`: RTMP publishers and players.
    Rtmp,
    /// `egress.listen`: HTTP viewers (HTTP-FLV).
    Http,
}

/// A connection's protocol state. Not boxed: RTMP clients are most of a core's clients, and a box would cost
/// each an allocation and an indirection to save an HTTP viewer's slot 240 bytes.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Session {
    /// The RTMP handshake and session (chunk guard, rml_rtmp).
    Rtmp(RtmpConnection),
    /// An HTTP client: its request heads, kept alive between them or an HTTP-FLV viewer.
    Http(http::HttpSession),
}

/// One client connection as the core sees it: its protocol session and its queue, no socket.
#[derive(Debug)]
struct Client {
    id: ClientId,
    peer: SocketAddr,
    accepted_at: Instant,
    last_input: Instant,
    session: Session,
    role: Role,
    app: Option<String>,
    queue: ViewerQueue,
    /// In the list of clients with bytes to write.
    dirty: bool,
    /// Close once the queue is written (or at this deadline).
    closing: Option<(Instant, &'static str)>,
    /// A publish request waits for the `on_publish` hook.
    hook_pending: bool,
    /// Since when its writes have made no progress (bytes queued that the connection does not take).
    stalled_since: Option<Instant>,
    bytes_in: u64,
}

/// What became of a client after [`NodeCore::write_client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Everything queued was written: nothing to wait for.
    Drained,
    /// Bytes remain (the connection took what it could): write again when it is writable.
    Pending,
    /// The client is gone (write error, or it was closing and its queue is written): see
    /// [`NodeCore::take_closed`].
    Closed,
}

/// How the IO loop should close a connection the core closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// At once: whatever is still in flight to the peer is dropped (kick, forbid, bad input, timeouts).
    Now,
    /// Once the bytes already handed to the connection are written: the client was closing (a refusal,
    /// the end of a stream) and its last messages must reach it.
    AfterFlush,
}

/// One data-plane core's state machine.
pub struct NodeCore {
    index: usize,
    shared: Arc<Shared>,
    counters: Arc<CoreCounters>,
    clients: Slots<Client>,
    streams: HashMap<StreamKey, LocalStream, foldhash::fast::RandomState>,
    /// Clients with bytes to write at once, in the order they got them (all but viewers under coalescing).
    dirty: Vec<Token>,
    /// Viewers with bytes to write, by their phase of the coalescing interval.
    viewer_flush: flush::FlushSchedule,
    /// Cores posted to since the last [`NodeCore::take_wakes`].
    wake: Vec<bool>,
    /// Connections the core closed; the IO loop closes their sockets.
    closed: Vec<(Token, Close)>,
    next_sequence: u64,
    events: Vec<ServerSessionEvent>,
    out: Vec<Bytes>,
    guard_limits: GuardLimits,
    next_tick: Instant,
    /// The `now` of the entry point being handled.
    now: Instant,
    stop: bool,
    /// Local events for the PoP mesh, on the mesh core ([`NodeCore::take_mesh_inputs`]).
    mesh: Vec<crate::node::mesh_port::MeshInput>,
    /// HLS requests parked on this core's streams, by their connection (core, token): what each waits on, so
    /// a closed connection is forgotten at once.
    hls_parked: HashMap<hls::ParkedId, StreamKey, foldhash::fast::RandomState>,
    /// Kept-alive HTTP connections whose next request (sent ahead) is to be read, and whether that loop runs.
    http_next: Vec<Token>,
    http_reading: bool,
}

/// Lists `client` (`token`) for a write, once: a viewer under coalescing for its phase, anyone else at once.
fn list_for_write(
    token: Token,
    client: &mut Client,
    now_list: &mut Vec<Token>,
    viewers: &mut flush::FlushSchedule,
) {
    if client.dirty {
        return;
    }
    client.dirty = true;
    let coalesced =
        matches!(client.role, Role::Viewer { .. }) && client.closing.is_none() && viewers.coalesces();
    if coalesced {
        viewers.push(token);
    } else {
        now_list.push(token);
    }
}

impl std::fmt::Debug for NodeCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCore")
            .field("index", &self.index)
            .field("clients", &self.clients.len())
            .field("streams", &self.streams.len())
            .finish()
    }
}

impl NodeCore {
    /// Core `index` of the node whose shared state is `shared`, started at `now`.
    pub fn new(index: usize, shared: Arc<Shared>, now: Instant) -> NodeCore {
        let rtmp = &shared.config.rtmp;
        let guard_limits = GuardLimits {
            max_message_bytes: rtmp.max_message_bytes,
            max_command_bytes: rtmp.max_command_bytes,
            min_window_ack_size: rtmp.min_window_ack_bytes,
            ..GuardLimits::default()
        };
        let counters = shared.counters.get(index).cloned().unwrap_or_default();
        let write_coalesce = Duration::from_millis(shared.config.rtmp.write_coalesce_ms);
        let cores = shared.cores();
        NodeCore {
            index,
            counters,
            clients: Slots::default(),
            streams: HashMap::default(),
            dirty: Vec::new(),
            viewer_flush: flush::FlushSchedule::new(write_coalesce, now),
            wake: vec![false; cores],
            closed: Vec::new(),
            next_sequence: 0,
            events: Vec::new(),
            out: Vec::new(),
            guard_limits,
            shared,
            next_tick: now + TICK,
            now,
            stop: false,
            mesh: Vec::new(),
            hls_parked: HashMap::default(),
            http_next: Vec::new(),
            http_reading: false,
        }
    }

    /// This core's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Connections open on this core.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Client `token` is open on this core.
    pub fn has_client(&self, token: Token) -> bool {
        self.clients.get(token).is_some()
    }

    /// A [`CoreMsg::Shutdown`] arrived: the IO loop should call [`NodeCore::shutdown`] and stop.
    pub fn is_stopped(&self) -> bool {
        self.stop
    }

    /// A connection the IO loop accepted from `peer`. `None` when the core refuses it (at
    /// `max_connections_per_core`, at `max_connections_per_ip`, or within `fd_reserve` of the open file
    /// limit): the IO loop closes the socket.
    pub fn accept(&mut self, now: Instant, peer: SocketAddr) -> Option<Token> {
        self.accept_as(now, peer, Protocol::Rtmp)
    }

    /// As [`NodeCore::accept`], for a connection that speaks `protocol` (by the listener that accepted it).
    pub fn accept_as(&mut self, now: Instant, peer: SocketAddr, protocol: Protocol) -> Option<Token> {
        self.now = now;
        CoreCounters::add(&self.counters.accepted, 1);
        let rtmp = &self.shared.config.rtmp;
        if self.clients.len() >= rtmp.max_connections_per_core {
            CoreCounters::add(&self.counters.rejected, 1);
            warn!(core = self.index, %peer, "connection refused: core at max_connections_per_core");
            return None;
        }
        let fd_limit = self.shared.fd_limit.load(std::sync::atomic::Ordering::Relaxed);
        if self.shared.connections().saturating_add(rtmp.fd_reserve) >= fd_limit {
            CoreCounters::add(&self.counters.rejected, 1);
            CoreCounters::add(&self.counters.limits.fd_reserve, 1);
            debug!(core = self.index, %peer, fd_limit, "connection refused: within rtmp.fd_reserve of the open file limit");
            return None;
        }
        let per_ip = rtmp.max_connections_per_ip;
        if per_ip > 0 && !self.shared.admit_ip(peer.ip(), per_ip) {
            CoreCounters::add(&self.counters.rejected, 1);
            CoreCounters::add(&self.counters.limits.per_ip, 1);
            debug!(core = self.index, %peer, "connection refused: rtmp.max_connections_per_ip from this address");
            return None;
        }
        self.next_sequence += 1;
        let id = ClientId::new(self.index, self.next_sequence);
        let fanout = &self.shared.config.fanout;
        let client = Client {
            id,
            peer,
            accepted_at: now,
            last_input: now,
            session: match protocol {
                Protocol::Rtmp => Session::Rtmp(RtmpConnection::new(
                    self.guard_limits.clone(),
                    self.shared.config.rtmp.chunk_size,
                )),
                Protocol::Http => Session::Http(http::HttpSession::new(&self.shared.config.egress)),
            },
            role: Role::Connecting,
            app: None,
            queue: ViewerQueue::new(
                fanout.drop_policy,
                fanout.viewer_queue_bytes,
                Duration::from_millis(fanout.latency_budget_ms),
                self.shared.config.rtmp.chunk_size as usize,
            ),
            dirty: false,
            closing: None,
            hook_pending: false,
            stalled_since: None,
            bytes_in: 0,
        };
        let token = self.clients.insert(client);
        CoreCounters::add(&self.counters.connections, 1);
        debug!(core = self.index, client = id.0, %peer, ?protocol, "connection accepted");
        Some(token)
    }

    /// Bytes client `token` sent: through the RTMP session (chunk guard first), or an HTTP viewer's request
    /// reader, then acted on. Bad input closes that client alone, with a logged reason.
    pub fn input(&mut self, now: Instant, token: Token, bytes: &[u8]) {
        self.now = now;
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        client.bytes_in += bytes.len() as u64;
        client.last_input = now;
        CoreCounters::add(&self.counters.bytes_in, bytes.len() as u64);
        let rtmp = match &mut client.session {
            Session::Rtmp(rtmp) => rtmp,
            Session::Http(_) => return self.on_http_input(token, bytes),
        };
        let mut events = std::mem::take(&mut self.events);
        let mut out = std::mem::take(&mut self.out);
        let result = rtmp.feed(bytes, &mut events, &mut out);
        for bytes in out.drain(..) {
            client.queue.push_control(bytes);
        }
        self.out = out;
        list_for_write(token, client, &mut self.dirty, &mut self.viewer_flush);
        if let Err(error) = result {
            events.clear();
            self.events = events;
            let (id, peer) = (client.id, client.peer);
            warn!(core = self.index, client = id.0, %peer, %error, "closing client: bad input");
            CoreCounters::add(&self.counters.rejected, 1);
            if matches!(
                error,
                ConnectionError::Guard(GuardError::WindowAckSizeOutOfRange { .. })
            ) {
                CoreCounters::add(&self.counters.limits.window_ack, 1);
            }
            self.close(token, "protocol error");
            return;
        }
        let control = client.queue.control_bytes();
        if control > self.shared.config.rtmp.max_control_queue_bytes {
            events.clear();
            self.events = events;
            let (id, peer) = (client.id, client.peer);
            warn!(
                core = self.index,
                client = id.0,
                %peer,
                control_bytes = control,
                "closing client: it does not read the answers it asks for (rtmp.max_control_queue_bytes)"
            );
            CoreCounters::add(&self.counters.rejected, 1);
            CoreCounters::add(&self.counters.limits.control_queue, 1);
            self.close(token, "control queue over rtmp.max_control_queue_bytes");
            return;
        }
        for event in events.drain(..) {
            self.on_session_event(token, event);
        }
        self.events = events;
    }

    /// The connection of `token` ended on the IO side (the peer closed it, or a read failed): `reason` is
    /// logged. The IO loop has closed the socket already; the token is not reported by
    /// [`NodeCore::take_closed`].
    pub fn connection_lost(&mut self, now: Instant, token: Token, reason: &'static str) {
        self.now = now;
        self.close(token, reason);
        self.closed.retain(|&(t, _)| t != token);
    }

    /// One message from the core's inbox (another core, the admin API, the hook runner).
    pub fn message(&mut self, now: Instant, message: CoreMsg) {
        self.now = now;
        self.handle_message(message);
    }

    /// When the core next needs [`NodeCore::tick`] or [`NodeCore::take_due_writes`] called, whatever
    /// arrives before.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.next_tick;
        if !self.dirty.is_empty() {
            at = at.min(self.now);
        }
        if let Some(due) = self.viewer_flush.next_due() {
            at = at.min(due);
        }
        at
    }

    /// Runs the housekeeping (timeouts, grace periods) if its period has come.
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
        if now >= self.next_tick {
            self.on_tick(now);
            self.next_tick = now + TICK;
        }
    }

    /// The clients to write now, in `out`. Under `write_coalesce_ms` a viewer is written once per interval,
    /// on its group's phase of it (the frames of the interval go in one write; the core's flush schedule
    /// spreads its viewers over the interval); everyone else (handshakes, commands, closing clients) at
    /// once. Those not due stay listed for a later call.
    pub fn take_due_writes(&mut self, now: Instant, out: &mut Vec<Token>) {
        self.now = now;
        self.viewer_flush.take_due(now, &mut self.dirty);
        for token in self.dirty.drain(..) {
            if let Some(client) = self.clients.get_mut(token) {
                client.dirty = false;
                out.push(token);
            }
        }
    }

    /// Writes what client `token` has queued into `sink` (its socket, in the IO loop: one vectored write
    /// of shared frames; `WouldBlock` when the socket is full).
    pub fn write_client(&mut self, now: Instant, token: Token, sink: &mut impl Write) -> Written {
        self.now = now;
        let Some(client) = self.clients.get_mut(token) else {
            return Written::Closed;
        };
        let written = match client.queue.write_to(sink) {
            Ok(written) => written,
            Err(_) => {
                self.close(token, "write error (peer gone)");
                return Written::Closed;
            }
        };
        CoreCounters::add(&self.counters.bytes_out, written as u64);
        self.after_write(token, written)
    }

    /// Hands what client `token` has queued to `send` (an io_uring connection's queue: the frames' shared
    /// `Bytes`, whole, no copy) until `send` refuses a buffer (returns `false`: the connection's queue is
    /// at its bound, it reports when it drains) or nothing is left.
    pub fn send_client(&mut self, now: Instant, token: Token, send: impl FnMut(Bytes) -> bool) -> Written {
        self.now = now;
        let Some(client) = self.clients.get_mut(token) else {
            return Written::Closed;
        };
        let handed = client.queue.send_with(send);
        CoreCounters::add(&self.counters.bytes_out, handed as u64);
        self.after_write(token, handed)
    }

    /// What is left of client `token` after a write: bytes still queued, or a closing client whose last
    /// bytes are out (closed now), or nothing.
    fn after_write(&mut self, token: Token, written: usize) -> Written {
        let now = self.now;
        let Some(client) = self.clients.get_mut(token) else {
            return Written::Closed;
        };
        if !client.queue.is_empty() {
            // Bytes remain: the write stalls from now, unless it stalled already and took nothing.
            if written > 0 || client.stalled_since.is_none() {
                client.stalled_since = Some(now);
            }
            return Written::Pending;
        }
        client.stalled_since = None;
        if let Some((_, reason)) = client.closing {
            self.close_as(token, reason, Close::AfterFlush);
            return Written::Closed;
        }
        if matches!(client.session, Session::Http(_)) {
            self.http_idle(token, now);
        }
        Written::Drained
    }

    /// Client `token`'s connection is writable again: it goes back on the list to write.
    pub fn writable(&mut self, token: Token) {
        self.mark_dirty(token);
    }

    /// The connections the core closed since the last call, and how: the IO loop closes their sockets.
    pub fn take_closed(&mut self, out: &mut Vec<(Token, Close)>) {
        out.append(&mut self.closed);
    }

    /// Handles what waits in `inbox` (at most 8192 messages, so sockets get a turn).
    pub fn drain_inbox(&mut self, now: Instant, inbox: &Receiver<CoreMsg>) {
        for _ in 0..INBOX_BUDGET {
            let Ok(message) = inbox.try_recv() else {
                return;
            };
            self.message(now, message);
        }
    }

    /// Wakes (once each) the cores this one posted messages to since the last call: an eventfd write per
    /// core, the IO loop's to make.
    pub fn wake_posted(&mut self) {
        let shared = self.shared.clone();
        self.take_wakes(|core| {
            if let Some(mailbox) = shared.mailboxes.get(core) {
                mailbox.wake();
            }
        });
    }

    /// The cores this one posted messages to since the last call: the IO loop wakes each once.
    pub fn take_wakes(&mut self, mut wake: impl FnMut(usize)) {
        for (core, flag) in self.wake.iter_mut().enumerate() {
            if std::mem::take(flag) {
                wake(core);
            }
        }
    }

    /// Closes every client (the node is stopping); their tokens go to [`NodeCore::take_closed`].
    pub fn shutdown(&mut self, now: Instant) {
        self.now = now;
        let tokens: Vec<Token> = self.clients.iter().map(|(token, _)| token).collect();
        for token in tokens {
            self.close(token, "node shutting down");
        }
    }

    fn mark_dirty(&mut self, token: Token) {
        if let Some(client) = self.clients.get_mut(token) {
            list_for_write(token, client, &mut self.dirty, &mut self.viewer_flush);
        }
    }

    fn post(&mut self, core: usize, message: CoreMsg) -> Result<(), SendError> {
        post_to(&self.shared, &mut self.wake, &self.counters, core, message)
    }
}

/// Posts `message` to core `core` (woken when the IO loop next calls [`NodeCore::take_wakes`]) and counts a
/// full inbox. It takes the fields it needs rather than the core, so a caller holding one of the core's
/// streams can use it.
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
