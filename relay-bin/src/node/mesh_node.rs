//! [`MeshNode`]: one node's PoP mesh, sans-IO. It joins the node's [`MeshCore`] (which stream goes where),
//! the node's transport `Endpoint` (one encrypted connection per peer; lent by the caller at each call) and
//! the mesh core's [`NodeCore`] (local events in, remote streams out to their owner cores). It reads no
//! clock and touches no socket: [`crate::node::mesh_runner::MeshRunner`] runs it on the mesh core's ring,
//! and the mesh simulation runs several over `transport::sim` links in virtual time.
//!
//! Links: the node with the smaller id dials, the other accepts (only the configured peers' keys), so a
//! pair has one connection. A link that drops is dialled again with a backoff (200 ms doubling to 1 s);
//! a peer is known by the key it proved in the handshake, never by its address.
//!
//! On a link, transport stream 0 carries [`Control`] messages (reliable, in order) and each carried stream
//! its own transport stream, each frame a [`MediaHeader`] and the body, made once per frame and shared by
//! every link ([`crate::media::frame::Encodings::mesh`]). A frame keeps its capture time and end-to-end
//! budget from hop to hop; one published here starts with `mesh.frame_budget_ms`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use transport::{ConnectionHandle, Endpoint, EndpointConfig, Event, MediaFrame, MediaKind, StreamId};

use crate::media::Frame;
use crate::mesh::config::{MeshSetup, Peer};
use crate::mesh::core::{BanRecord, MeshAction, MeshCore};
use crate::mesh::wire::{CloseReason, Control, MediaHeader, CONTROL_STREAM};
use crate::node::core::NodeCore;
use crate::node::mailbox::CoreMsg;
use crate::node::mesh_port::{DroppedFrames, LinkInfo, MeshInput};
use crate::node::shared::Shared;
use crate::node::streams::passes_after_loss;
use crate::stream_key::StreamKey;

/// First wait before dialling a link again; doubles up to [`MAX_REDIAL`].
const FIRST_REDIAL: Duration = Duration::from_millis(200);
/// Longest wait between two dials of one link.
const MAX_REDIAL: Duration = Duration::from_secs(1);
/// How often the mesh core's timers (pull grace periods, retries) are looked at, at the latest.
const MESH_TICK: Duration = Duration::from_millis(50);

/// One configured peer and its link.
#[derive(Debug)]
struct PeerLink {
    peer: Peer,
    /// This node dials (its id is the smaller).
    dials: bool,
    /// The connection, from dial or handshake to close.
    conn: Option<ConnectionHandle>,
    /// Its handshake completed.
    up: bool,
    next_dial: Instant,
    backoff: Duration,
    ups: u64,
}

/// One node's mesh, sans-IO.
#[derive(Debug)]
pub struct MeshNode {
    mesh: MeshCore,
    peers: Vec<PeerLink>,
    by_conn: HashMap<ConnectionHandle, usize>,
    frame_budget: Duration,
    shared: Arc<Shared>,
    inputs: Vec<MeshInput>,
    /// Streams whose last remote frame did not reach its owner core: video resumes at a keyframe.
    needs_key: HashSet<StreamKey>,
    next_tick: Instant,
    /// The wall clock (Unix ms) of the current step.
    unix_ms: u64,
    /// Control messages from peers that did not decode.
    bad_controls: u64,
}

impl MeshNode {
    /// The transport endpoint's settings for `setup`: only the peers' keys may connect, and a link silent
    /// for `mesh.link_timeout_ms` is closed (keepalives every quarter of it).
    pub fn endpoint_config(setup: &MeshSetup) -> EndpointConfig {
        let mut config = EndpointConfig::new(setup.keypair.clone());
        config.authorized_peers = setup.peers.iter().map(|p| p.public_key).collect();
        config.max_connections = setup.peers.len().saturating_mul(2).max(4);
        config.connection.idle_timeout = setup.link_timeout;
        config.connection.keepalive = setup.link_timeout / 4;
        config
    }

    /// The mesh of `setup` on the node whose shared state is `shared`, with no link up yet.
    pub fn new(shared: Arc<Shared>, setup: MeshSetup, now: Instant) -> MeshNode {
        let me = setup.params.me.clone();
        let peers = setup
            .peers
            .into_iter()
            .map(|peer| PeerLink {
                dials: me < peer.id,
                peer,
                conn: None,
                up: false,
                next_dial: now,
                backoff: FIRST_REDIAL,
                ups: 0,
            })
            .collect();
        MeshNode {
            mesh: MeshCore::new(setup.params),
            peers,
            by_conn: HashMap::new(),
            frame_budget: setup.frame_budget,
            shared,
            inputs: Vec::new(),
            needs_key: HashSet::new(),
            next_tick: now,
            unix_ms: 0,
            bad_controls: 0,
        }
    }

    /// The node's mesh decisions (for inspection and tests).
    pub fn mesh(&self) -> &MeshCore {
        &self.mesh
    }

    /// When [`MeshNode::run`] must be called at the latest (the endpoint's own timers aside).
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.next_tick;
        for p in &self.peers {
            if p.dials && p.conn.is_none() {
                at = at.min(p.next_dial);
            }
        }
        at
    }

    /// One step at `now` (`unix_ms`: the wall clock, for bans): the node's local events, the links'
    /// events, the mesh's decisions, dials and timers. What it sends is queued on `endpoint`; the caller
    /// transmits it.
    pub fn run(&mut self, now: Instant, unix_ms: u64, endpoint: &mut Endpoint, core: &mut NodeCore) {
        self.unix_ms = unix_ms;
        // Before the inputs: a forbid or a lift is numbered from this clock, not the last tick's.
        self.mesh.set_wall_clock(unix_ms);
        let mut inputs = std::mem::take(&mut self.inputs);
        core.take_mesh_inputs(&mut inputs);
        for input in inputs.drain(..) {
            self.apply(now, endpoint, input);
        }
        self.inputs = inputs;
        self.dial(now, endpoint);
        while let Some((conn, event)) = endpoint.poll_event() {
            self.on_event(now, endpoint, conn, event);
        }
        if now >= self.next_tick || self.mesh.poll_timeout().is_some_and(|t| t <= now) {
            self.mesh.tick(now, unix_ms);
            self.next_tick = now + MESH_TICK;
        }
        while let Some(action) = self.mesh.poll_action() {
            self.perform(now, endpoint, core, action);
        }
    }

    fn apply(&mut self, now: Instant, endpoint: &Endpoint, input: MeshInput) {
        match input {
            MeshInput::Published(key) => self.mesh.local_publish(now, &key),
            MeshInput::Unpublished(key) => self.mesh.local_unpublish(now, &key),
            MeshInput::Frame(key, frame) => self.mesh.local_frame(&key, &frame),
            MeshInput::Wanted(key) => self.mesh.viewer_wants(now, &key),
            MeshInput::Unwanted(key) => self.mesh.viewers_gone(now, &key),
            MeshInput::Forbid {
                key,
                until_unix_ms,
                reason,
            } => {
                let ban = self.mesh.forbid(now, &key, until_unix_ms, &reason, "admin");
                info!(stream = %key, seq = ban.seq, "mesh: forbid sent to every node");
            }
            MeshInput::Unforbid { key } => {
                if let Some(lift) = self.mesh.unforbid(now, &key, "admin") {
                    info!(stream = %key, seq = lift.seq, "mesh: lift of the ban sent to every node");
                }
            }
            MeshInput::Homes { keys, reply } => {
                let _ = reply.send(keys.iter().map(|k| self.mesh.home_of(k)).collect());
            }
            MeshInput::Links { reply } => {
                let _ = reply.send(self.links(endpoint));
            }
        }
    }

    fn dial(&mut self, now: Instant, endpoint: &mut Endpoint) {
        for (index, p) in self.peers.iter_mut().enumerate() {
            if !p.dials || p.conn.is_some() || now < p.next_dial {
                continue;
            }
            match endpoint.connect(now, p.peer.addr, p.peer.public_key) {
                Ok(conn) => {
                    debug!(peer = %p.peer.id, addr = %p.peer.addr, "mesh: dialling");
                    p.conn = Some(conn);
                    self.by_conn.insert(conn, index);
                }
                Err(error) => {
                    warn!(peer = %p.peer.id, %error, "mesh: cannot dial");
                    p.next_dial = now + p.backoff;
                    p.backoff = (p.backoff * 2).min(MAX_REDIAL);
                }
            }
        }
    }

    fn on_event(&mut self, now: Instant, endpoint: &mut Endpoint, conn: ConnectionHandle, event: Event) {
        match event {
            Event::Connected { peer_static } => {
                let Some(index) = self.peers.iter().position(|p| p.peer.public_key == peer_static) else {
                    // The endpoint accepts listed keys only; a key listed twice is refused by the config.
                    let _ = endpoint.close(conn, 1, "unknown node");
                    return;
                };
                let p = &mut self.peers[index];
                if let Some(old) = p.conn.filter(|&old| old != conn) {
                    // The peer restarted and connected anew: the new connection replaces the old one.
                    self.by_conn.remove(&old);
                    let _ = endpoint.close(old, 0, "replaced by a new connection");
                    if p.up {
                        p.up = false;
                        self.mesh.link_down(now, &p.peer.id);
                    }
                }
                let p = &mut self.peers[index];
                p.conn = Some(conn);
                p.up = true;
                p.ups += 1;
                p.backoff = FIRST_REDIAL;
                self.by_conn.insert(conn, index);
                info!(peer = %p.peer.id, addr = %p.peer.addr, "mesh link up");
                let id = p.peer.id.clone();
                self.mesh.link_up(now, &id);
            }
            Event::Frame(delivered) => {
                let Some(peer) = self.peer_of(conn) else {
                    return;
                };
                if delivered.stream == CONTROL_STREAM {
                    match Control::decode(&delivered.bytes) {
                        Ok(msg) => self.mesh.control(now, &peer, msg),
                        Err(error) => {
                            self.bad_controls += 1;
                            warn!(%peer, %error, "mesh: control message from a peer does not decode; ignored");
                        }
                    }
                    return;
                }
                match MediaHeader::decode(&delivered.bytes) {
                    Ok((header, body)) => {
                        let frame = Frame {
                            kind: delivered.kind,
                            track: header.track,
                            dts_ms: header.dts_ms,
                            pts_ms: header.pts_ms,
                            body,
                            capture: delivered.capture,
                            budget: delivered.budget,
                            encodings: Default::default(),
                        };
                        self.mesh.frame(&peer, delivered.stream, frame);
                    }
                    Err(error) => {
                        debug!(%peer, stream = delivered.stream, %error, "mesh: malformed frame from a peer dropped");
                    }
                }
            }
            Event::Gap(gap) => {
                debug!(
                    stream = gap.stream,
                    frames = gap.frames,
                    "mesh: frames lost on a link; resumed at a keyframe"
                );
            }
            Event::Closed { reason } => {
                let Some(index) = self.by_conn.remove(&conn) else {
                    return;
                };
                let p = &mut self.peers[index];
                if p.conn != Some(conn) {
                    return;
                }
                p.conn = None;
                p.next_dial = now + p.backoff;
                p.backoff = (p.backoff * 2).min(MAX_REDIAL);
                if p.up {
                    p.up = false;
                    warn!(peer = %p.peer.id, ?reason, "mesh link down: its streams fail over");
                    let id = p.peer.id.clone();
                    self.mesh.link_down(now, &id);
                } else {
                    debug!(peer = %p.peer.id, ?reason, "mesh: link attempt ended");
                }
            }
        }
    }

    fn peer_of(&self, conn: ConnectionHandle) -> Option<String> {
        self.by_conn
            .get(&conn)
            .and_then(|&i| self.peers.get(i))
            .filter(|p| p.up)
            .map(|p| p.peer.id.clone())
    }

    fn conn_of(&self, peer: &str) -> Option<ConnectionHandle> {
        self.peers
            .iter()
            .find(|p| p.peer.id == peer && p.up)
            .and_then(|p| p.conn)
    }

    fn perform(&mut self, now: Instant, endpoint: &mut Endpoint, core: &mut NodeCore, action: MeshAction) {
        match action {
            MeshAction::Control { peer, msg } => {
                let Some(conn) = self.conn_of(&peer) else {
                    return;
                };
                let frame = MediaFrame {
                    kind: MediaKind::Metadata,
                    bytes: msg.encode(),
                    capture: now,
                    budget: None,
                };
                if let Err(error) = endpoint.send_frame(conn, StreamId(CONTROL_STREAM), frame) {
                    warn!(%peer, %error, "mesh: control message not sent");
                }
            }
            MeshAction::Frame {
                peer,
                stream,
                frame,
                prime,
            } => {
                let Some(conn) = self.conn_of(&peer) else {
                    return;
                };
                let bytes = frame
                    .encodings
                    .mesh
                    .get_or_init(|| {
                        MediaHeader {
                            track: frame.track,
                            dts_ms: frame.dts_ms,
                            pts_ms: frame.pts_ms,
                        }
                        .encode_with(&frame.body)
                    })
                    .clone();
                let media = MediaFrame {
                    kind: frame.kind,
                    bytes,
                    capture: frame.capture,
                    budget: self.budget_of(now, &frame, prime),
                };
                if let Err(error) = endpoint.send_frame(conn, StreamId(stream), media) {
                    debug!(%peer, stream, %error, "mesh: frame not queued on the link");
                }
            }
            MeshAction::RemoteStarted { key, origin, hops } => {
                self.needs_key.remove(&key);
                core.remote_started(now, key, origin, hops);
            }
            MeshAction::Deliver { key, frame } => {
                let mut needs_key = self.needs_key.contains(&key);
                if !passes_after_loss(&mut needs_key, &frame) {
                    return;
                }
                if needs_key {
                    self.needs_key.insert(key.clone());
                } else {
                    self.needs_key.remove(&key);
                }
                if !core.remote_frame(now, key.clone(), frame) {
                    self.needs_key.insert(key);
                }
            }
            MeshAction::RemoteEnded { key, reason } => {
                self.needs_key.remove(&key);
                // A source that moved, or that this node let go of to take another (Unpulled), may be
                // followed by one of the same publication: the viewers continue where they are.
                let may_continue = matches!(reason, CloseReason::Moved | CloseReason::Unpulled);
                core.remote_ended(now, key, may_continue);
            }
            MeshAction::Ban(ban) => self.apply_ban(&ban),
        }
    }

    /// The end-to-end budget a frame travels a link with. Sequence headers and metadata go reliably, however
    /// late (a decoder needs them; they are small). A frame that primes a peer (its current GOP, older than
    /// live) gets the link's budget from now, so it is not dropped as late and the peer's viewers start at
    /// once. Every other frame keeps the budget it carries (what earlier hops spent counts), or starts with
    /// `mesh.frame_budget_ms` at its first hop.
    fn budget_of(&self, now: Instant, frame: &Frame, prime: bool) -> Option<Duration> {
        if frame.kind.is_essential() {
            return None;
        }
        if prime {
            return Some(now.saturating_duration_since(frame.capture) + self.frame_budget);
        }
        Some(frame.budget.unwrap_or(self.frame_budget))
    }

    /// A ban (or the lift of one) another node decided: the stream's state here follows the latest record
    /// the mesh holds (records from different nodes may arrive out of order): a ban is persisted and the
    /// stream's clients on every core are closed; a lift removes the ban here.
    fn apply_ban(&mut self, ban: &BanRecord) {
        let Ok(key) = StreamKey::parse(&ban.key) else {
            return;
        };
        let now_ms = self.unix_ms;
        if !self.mesh.is_banned(key.as_str()) {
            match self.shared.bans.unforbid_at(now_ms, &key) {
                Ok(saved) if saved.value.is_some() => {
                    info!(stream = %key, origin = %ban.origin, "stream's ban lifted by another node of the mesh");
                }
                Ok(_) => {}
                Err(error) => warn!(stream = %key, %error, "mesh lift of a ban could not be recorded"),
            }
            return;
        }
        let Some(latest) = self.mesh.latest_ban(key.as_str()).cloned() else {
            return;
        };
        let duration = latest
            .until_unix_ms
            .map(|until| Duration::from_millis(until.saturating_sub(now_ms).max(1)));
        let reason = format!("{} (forbidden on node {})", latest.reason, latest.origin);
        match self.shared.bans.forbid_at(now_ms, key.clone(), duration, reason) {
            Ok(saved) => {
                if let Some(error) = saved.unsaved {
                    warn!(stream = %key, %error, "mesh ban applied but not saved to the ban file");
                }
            }
            Err(error) => {
                warn!(stream = %key, %error, "mesh ban could not be recorded; its clients are closed anyway")
            }
        }
        info!(stream = %key, origin = %latest.origin, reason = %latest.reason, "stream forbidden by another node of the mesh");
        for mailbox in &self.shared.mailboxes {
            let (reply, _answer) = crossbeam_channel::bounded(1);
            let _ = mailbox.send(CoreMsg::KickStream {
                key: key.clone(),
                reply,
            });
        }
    }

    /// Every configured peer's link, for `GET /api/v1/links`.
    pub fn links(&self, endpoint: &Endpoint) -> Vec<LinkInfo> {
        self.peers
            .iter()
            .map(|p| {
                let mut info = LinkInfo {
                    peer: p.peer.id.clone(),
                    addr: p.peer.addr.to_string(),
                    state: match (p.conn.is_some(), p.up) {
                        (_, true) => "up",
                        (true, false) => "connecting",
                        (false, false) => "down",
                    },
                    dials: p.dials,
                    ups: p.ups,
                    ..LinkInfo::default()
                };
                if let Some(stats) = p.conn.filter(|_| p.up).and_then(|c| endpoint.connection_stats(c)) {
                    info.rtt_ms = stats.rtt.as_secs_f64() * 1000.0;
                    info.payload_bytes = stats.send.payload_bytes_first;
                    info.repair_bytes = stats.send.payload_bytes_repair;
                    info.packets_sent = stats.packets_sent;
                    info.packets_lost = stats.packets_lost;
                    for kind in transport::MediaKind::ALL {
                        let Some(counts) = stats.send.by_kind.get(usize::from(kind.code())) else {
                            continue;
                        };
                        info.dropped_deadline += counts.dropped_deadline;
                        info.dropped_dependency += counts.dropped_dependency;
                        info.dropped_queue_full += counts.dropped_queue_full;
                        for (reason, frames) in [
                            ("deadline", counts.dropped_deadline),
                            ("dependency", counts.dropped_dependency),
                            ("queue_full", counts.dropped_queue_full),
                        ] {
                            if frames > 0 {
                                info.dropped.push(DroppedFrames {
                                    kind: kind.name(),
                                    reason,
                                    frames,
                                });
                            }
                        }
                    }
                    info.deadline_misses = stats.send.deadline_misses;
                    info.bandwidth_bps = stats.congestion.bandwidth_estimate_bytes_per_s.saturating_mul(8);
                }
                let (out, inn) = self.mesh.streams_on(&p.peer.id);
                info.streams_out = out;
                info.streams_in = inn;
                info
            })
            .collect()
    }

    /// Control messages from peers that did not decode.
    pub fn bad_controls(&self) -> u64 {
        self.bad_controls
    }
}
