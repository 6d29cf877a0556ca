//! [`MeshCore`]: one node's mesh decisions, sans-IO. It is fed `now`, link events, peers' control messages
//! and frames, and the node's local events (a stream published here, a first viewer of a stream that is
//! not, the last viewer gone, a forbid), and answers with [`MeshAction`]s: messages and frames for peers,
//! remote streams for the node's viewers, bans to apply. It owns no socket, no clock and no thread, so a
//! deterministic harness can run many of them in virtual time.
//!
//! The rules:
//! - A stream's home is its first live origin in rendezvous order ([`placement::home_among`]): this node,
//!   or a peer whose link is up. Every decision below is re-evaluated when a link comes up or goes down
//!   ([`MeshCore::link_up`], [`MeshCore::link_down`]), which is the failover.
//! - Push: the node where a stream is published sends it to its home (an `Open`, then its frames).
//! - Pull: a node with viewers of a stream it does not have asks the home (`Pull`); the home answers with an
//!   `Open` and the frames, now or as soon as it has the stream. After the last viewer leaves, the pull stays
//!   for the grace period ([`MeshParams::pull_grace`]), so a viewer who comes back reuses it, then `Unpull`.
//! - Relay: a node forwards each frame of a stream to every peer it carries it for, keeping the frame's
//!   capture time and budget (the transport carries both), so each hop knows what earlier hops spent.
//! - Bans: each node numbers its own bans; a ban goes to every peer, each node forwards a ban it learns
//!   once, and `Hello` carries the highest number held per deciding node, so a node that was down gets what
//!   it missed when its links come back. A banned stream is stopped on every node that carries it.

use super::placement::{self, Origin};
use super::wire::{CloseReason, Control, FIRST_MEDIA_STREAM};
use crate::media::frame::{Frame, MediaKind};
use crate::stream_key::StreamKey;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// A peer node's id.
pub type PeerId = String;

/// The first wait before pushing again to a home that refused the push (see `StreamState::push_refusals`).
const PUSH_RETRY_FIRST: Duration = Duration::from_millis(100);

/// What a [`MeshCore`] is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshParams {
    /// This node's id.
    pub me: PeerId,
    /// The nodes that may be home to an app's streams, per app.
    pub origins: HashMap<String, Vec<Origin>>,
    /// The origins of an app not listed in `origins`.
    pub default_origins: Vec<Origin>,
    /// How long a pull outlives its last viewer.
    pub pull_grace: Duration,
    /// How long to wait before asking again after a home answered `NotFound`.
    pub retry_after: Duration,
    /// The most streams this node keeps mesh state for: a peer's `Open` or `Pull` of a new stream beyond it
    /// is refused (and counted), so no peer can grow this node's memory without bound.
    pub max_streams: usize,
}

/// Counters of a [`MeshCore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Peers' `Open`s and `Pull`s of new streams refused at [`MeshParams::max_streams`].
    pub refused_over_max_streams: u64,
    /// Peers' `Open`s refused because nothing here asked for them (an old home's late answer).
    pub refused_unasked_opens: u64,
}

/// A ban as the mesh carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRecord {
    /// The node that decided it.
    pub origin: PeerId,
    /// Its number among that node's bans.
    pub seq: u64,
    /// The stream key.
    pub key: String,
    /// When it ends (Unix ms); `None`: never.
    pub until_unix_ms: Option<u64>,
    /// Why.
    pub reason: String,
    /// Who decided it.
    pub by: String,
}

impl BanRecord {
    fn to_control(&self) -> Control {
        Control::Ban {
            origin: self.origin.clone(),
            seq: self.seq,
            key: self.key.clone(),
            until_unix_ms: self.until_unix_ms,
            reason: self.reason.clone(),
            by: self.by.clone(),
        }
    }
}

/// What the node must do.
#[derive(Debug, Clone)]
pub enum MeshAction {
    /// Send a control message on the link to `peer` (its control stream).
    Control {
        /// The peer.
        peer: PeerId,
        /// The message.
        msg: Control,
    },
    /// Send a frame of a carried stream to `peer` on transport stream `stream`.
    Frame {
        /// The peer.
        peer: PeerId,
        /// The link's transport stream for this stream.
        stream: u32,
        /// The frame (its body shared, not copied).
        frame: Frame,
        /// Part of what a peer that starts carrying the stream gets first (its sequence headers and current
        /// GOP): older than live frames, it must not be dropped as late on its way (the node gives it a
        /// fresh deadline), or the peer's first viewers wait for the next keyframe.
        prime: bool,
    },
    /// A stream published elsewhere now arrives here: serve it to local viewers (they start at a keyframe).
    RemoteStarted {
        /// The stream.
        key: StreamKey,
        /// The node where it is published.
        origin: PeerId,
        /// Links it crossed to get here.
        hops: u8,
    },
    /// A frame of a remote stream, for local viewers.
    Deliver {
        /// The stream.
        key: StreamKey,
        /// The frame.
        frame: Frame,
    },
    /// A remote stream stopped arriving (its source ended or was forbidden). With `reason` `Moved` a new
    /// source is being asked for: viewers stay and resume at the next keyframe.
    RemoteEnded {
        /// The stream.
        key: StreamKey,
        /// Why.
        reason: CloseReason,
    },
    /// A ban learnt from a peer: persist it, kick the stream's publisher and viewers here.
    Ban(BanRecord),
}

/// Where this node gets a stream from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// Published here.
    Local,
    /// Arrives from `peer` on its transport stream `stream`.
    Remote { peer: PeerId, stream: u32 },
}

#[derive(Debug, Default)]
struct StreamState {
    source: Option<Source>,
    /// Peers this node sends the stream to, and the transport stream each gets.
    sending: HashMap<PeerId, u32>,
    /// Of those, the peers whose stream has reached a keyframe (before it, only essential frames go: a
    /// peer never gets a frame whose reference it did not get).
    started: HashSet<PeerId>,
    /// Local delivery reached a keyframe since the source last changed.
    deliver_started: bool,
    /// The current GOP as it came from the source (from its keyframe on), and the newest essential frame
    /// (sequence header, metadata) per track and kind: what a peer that starts carrying the stream gets
    /// first, so its viewers start at once. Shared bodies, no copies; bounded by [`MAX_GOP_BYTES`].
    gop: Vec<Frame>,
    gop_bytes: usize,
    headers: Vec<Frame>,
    /// The peer asked for it (a pull), if any.
    pulled_from: Option<PeerId>,
    /// Local viewers want it.
    viewers: bool,
    /// The pull ends then (the grace period after the last viewer).
    unpull_at: Option<Instant>,
    /// Peers that asked for it before this node had it.
    waiting: HashSet<PeerId>,
    /// A home said it does not have it: ask again then.
    retry_at: Option<Instant>,
    /// The home this node pushes it to (published here, home elsewhere).
    push_to: Option<PeerId>,
    /// The node where it is published, as the source's `Open` said (remote sources only).
    origin: Option<PeerId>,
    /// Pushes of this publication the would-be home refused in a row (it had not yet seen the old home
    /// fail): the next try comes sooner than `retry_after`, 100 ms doubling up to it.
    push_refusals: u32,
}

impl StreamState {
    fn idle(&self) -> bool {
        self.source.is_none()
            && self.sending.is_empty()
            && self.pulled_from.is_none()
            && !self.viewers
            && self.waiting.is_empty()
            && self.push_to.is_none()
    }
}

#[derive(Debug, Default)]
struct Link {
    up: bool,
    /// The next transport stream id this node opens towards the peer (never reused on one connection).
    next_stream: u32,
    /// Streams the peer sends here: transport stream -> key.
    incoming: HashMap<u32, StreamKey>,
}

/// One node's mesh state machine.
#[derive(Debug)]
pub struct MeshCore {
    params: MeshParams,
    links: HashMap<PeerId, Link>,
    streams: HashMap<StreamKey, StreamState>,
    /// Every ban known, by deciding node and number.
    bans: HashMap<PeerId, BTreeMap<u64, BanRecord>>,
    /// The latest wall time seen (Unix ms), to tell live bans from expired ones.
    unix_ms: u64,
    stats: MeshStats,
    actions: VecDeque<MeshAction>,
}

impl MeshCore {
    /// A node with no link up yet.
    pub fn new(params: MeshParams) -> MeshCore {
        MeshCore {
            params,
            links: HashMap::new(),
            streams: HashMap::new(),
            bans: HashMap::new(),
            unix_ms: 0,
            stats: MeshStats::default(),
            actions: VecDeque::new(),
        }
    }

    /// Loads bans persisted by an earlier run (at start, before any link is up): they count as known, so
    /// peers send only what is newer.
    pub fn restore_bans(&mut self, bans: impl IntoIterator<Item = BanRecord>) {
        for b in bans {
            self.bans.entry(b.origin.clone()).or_default().insert(b.seq, b);
        }
    }

    /// Streams this node holds mesh state for.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The counters.
    pub fn stats(&self) -> MeshStats {
        self.stats
    }

    /// Whether a peer may make this node hold state for `key` (one it does not hold yet counts against
    /// [`MeshParams::max_streams`]).
    fn admit(&mut self, key: &StreamKey) -> bool {
        if self.streams.contains_key(key) || self.streams.len() < self.params.max_streams {
            return true;
        }
        self.stats.refused_over_max_streams += 1;
        false
    }

    /// What the node was configured with.
    pub fn params(&self) -> &MeshParams {
        &self.params
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.params.me
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<MeshAction> {
        self.actions.pop_front()
    }

    /// The earliest time [`Self::tick`] has work (a grace period or a retry ending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.streams
            .values()
            .flat_map(|s| [s.unpull_at, s.retry_at])
            .flatten()
            .min()
    }

    /// The home of `key` as this node sees it now.
    pub fn home_of(&self, key: &StreamKey) -> Option<PeerId> {
        let origins = self
            .params
            .origins
            .get(key.app())
            .unwrap_or(&self.params.default_origins);
        placement::home_among(key.as_str(), origins, |o| {
            o.id == self.params.me || self.links.get(&o.id).is_some_and(|l| l.up)
        })
        .map(|o| o.id.clone())
    }

    /// Where this node gets `key` from now: `Some("")` published here, `Some(peer)` from that peer, `None`
    /// not at all (for the links API and tests).
    pub fn source_of(&self, key: &StreamKey) -> Option<&str> {
        match &self.streams.get(key)?.source {
            Some(Source::Local) => Some(""),
            Some(Source::Remote { peer, .. }) => Some(peer),
            None => None,
        }
    }

    /// A one-line description of what this node does with `key` (for logs and failing tests).
    pub fn describe(&self, key: &StreamKey) -> String {
        match self.streams.get(key) {
            None => "not carried".to_string(),
            Some(s) => format!(
                "source {:?}, sending to {:?}, pulled from {:?}, push to {:?}, viewers {}, waiting {:?}, retry {}",
                s.source,
                s.sending.keys().collect::<Vec<_>>(),
                s.pulled_from,
                s.push_to,
                s.viewers,
                s.waiting,
                s.retry_at.is_some()
            ),
        }
    }

    /// Streams this node sends to `peer`, and streams `peer` sends here (for the links API).
    pub fn streams_on(&self, peer: &str) -> (u64, u64) {
        let out = self
            .streams
            .values()
            .filter(|s| s.sending.contains_key(peer))
            .count() as u64;
        let inn = self.links.get(peer).map_or(0, |l| l.incoming.len() as u64);
        (out, inn)
    }

    /// Every ban known (for the node's persistence and API).
    pub fn bans(&self) -> impl Iterator<Item = &BanRecord> {
        self.bans.values().flat_map(|b| b.values())
    }

    /// Whether `key` is banned (as of the last wall time seen): its latest record (the highest number, which
    /// grows with the deciding node's wall clock) is a ban still running, not a lift or an expired ban.
    pub fn is_banned(&self, key: &str) -> bool {
        self.latest_ban(key)
            .is_some_and(|b| b.until_unix_ms.is_none_or(|until| until > self.unix_ms))
    }

    /// The latest record of `key`: a ban, or the lift of one.
    pub fn latest_ban(&self, key: &str) -> Option<&BanRecord> {
        self.bans()
            .filter(|b| b.key == key)
            .max_by_key(|b| (b.seq, &b.origin))
    }

    /// The link to `peer` is up (its handshake completed): greet it and re-place every stream.
    pub fn link_up(&mut self, now: Instant, peer: &str) {
        let link = self.links.entry(peer.to_string()).or_default();
        if link.up {
            return;
        }
        *link = Link {
            up: true,
            next_stream: FIRST_MEDIA_STREAM,
            incoming: HashMap::new(),
        };
        let bans_through = self
            .bans
            .iter()
            .filter_map(|(origin, b)| b.keys().next_back().map(|&seq| (origin.clone(), seq)))
            .collect();
        self.send(
            peer,
            Control::Hello {
                node: self.params.me.clone(),
                bans_through,
            },
        );
        self.reconcile_all(now);
    }

    /// The link to `peer` is gone: what it carried stops, and every stream is re-placed (failover).
    pub fn link_down(&mut self, now: Instant, peer: &str) {
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        link.up = false;
        link.incoming.clear();
        for (key, s) in &mut self.streams {
            s.sending.remove(peer);
            s.waiting.remove(peer);
            if s.push_to.as_deref() == Some(peer) {
                s.push_to = None;
            }
            if s.pulled_from.as_deref() == Some(peer) {
                s.pulled_from = None;
            }
            if matches!(&s.source, Some(Source::Remote { peer: p, .. }) if p == peer) {
                s.source = None;
                self.actions.push_back(MeshAction::RemoteEnded {
                    key: key.clone(),
                    reason: CloseReason::Moved,
                });
            }
        }
        self.reconcile_all(now);
    }

    /// A stream is published here.
    pub fn local_publish(&mut self, now: Instant, key: &StreamKey) {
        let s = self.streams.entry(key.clone()).or_default();
        s.source = Some(Source::Local);
        s.push_refusals = 0;
        // A new publication: nothing of an earlier one is replayed to peers.
        s.gop.clear();
        s.gop_bytes = 0;
        s.headers.clear();
        self.serve_waiting(key, 0);
        self.reconcile(now, key);
    }

    /// The stream published here stopped.
    pub fn local_unpublish(&mut self, now: Instant, key: &StreamKey) {
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        if s.source != Some(Source::Local) {
            return;
        }
        s.source = None;
        self.close_all_sending(key, CloseReason::Unpublished);
        self.reconcile(now, key);
    }

    /// A frame of a stream published here: to every peer that carries it.
    pub fn local_frame(&mut self, key: &StreamKey, frame: &Frame) {
        if let Some(s) = self
            .streams
            .get_mut(key)
            .filter(|s| s.source == Some(Source::Local))
        {
            forward(s, frame, &mut self.actions);
        }
    }

    /// A local viewer wants `key`, which may not be published here: pull it from its home if it is not.
    pub fn viewer_wants(&mut self, now: Instant, key: &StreamKey) {
        let s = self.streams.entry(key.clone()).or_default();
        s.viewers = true;
        s.unpull_at = None;
        self.reconcile(now, key);
    }

    /// The last local viewer of `key` left: its pull ends after the grace period.
    pub fn viewers_gone(&mut self, now: Instant, key: &StreamKey) {
        if let Some(s) = self.streams.get_mut(key) {
            s.viewers = false;
            if s.pulled_from.is_some() {
                s.unpull_at = Some(now + self.params.pull_grace);
            }
        }
    }

    /// The wall clock moved on to `unix_ms` (bans' expiry and numbering). It never goes back: a clock
    /// stepped back keeps the latest time seen.
    pub fn set_wall_clock(&mut self, unix_ms: u64) {
        self.unix_ms = self.unix_ms.max(unix_ms);
    }

    /// Runs what is due: pulls past their grace period end, `NotFound` pulls are asked again.
    pub fn tick(&mut self, now: Instant, unix_ms: u64) {
        self.set_wall_clock(unix_ms);
        let due: Vec<StreamKey> = self
            .streams
            .iter()
            .filter(|(_, s)| s.unpull_at.is_some_and(|t| t <= now) || s.retry_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(s) = self.streams.get_mut(&key) {
                if s.unpull_at.is_some_and(|t| t <= now) {
                    s.unpull_at = None;
                    if end_pull(s, &key, &mut self.actions) {
                        // The node's record of the stream goes with the pull.
                        self.actions.push_back(MeshAction::RemoteEnded {
                            key: key.clone(),
                            reason: CloseReason::Unpulled,
                        });
                    }
                }
                if s.retry_at.is_some_and(|t| t <= now) {
                    s.retry_at = None;
                    s.pulled_from = None;
                }
            }
            self.reconcile(now, &key);
        }
    }

    /// An operator forbids `key` here: the ban is numbered, replicated to every peer, and the stream stopped
    /// wherever this node carries it. Returns the record (the node persists and applies it).
    pub fn forbid(
        &mut self,
        now: Instant,
        key: &StreamKey,
        until_unix_ms: Option<u64>,
        reason: &str,
        by: &str,
    ) -> BanRecord {
        let me = self.params.me.clone();
        // Numbered from the wall clock (at least one past the last): a node that restarted without its mesh
        // state never reuses a number its peers hold already. And past every record of `key` this node
        // knows, whichever node numbered it (a Lamport clock): a lift decided after a ban wins over it even
        // where the lifting node's clock is behind the banning node's.
        let after_key = self
            .latest_ban(key.as_str())
            .map_or(0, |b| b.seq.saturating_add(1));
        let seq = self
            .bans
            .get(&me)
            .and_then(|b| b.keys().next_back())
            .map_or(1, |s| s + 1)
            .max(self.unix_ms)
            .max(after_key);
        let ban = BanRecord {
            origin: me,
            seq,
            key: key.to_string(),
            until_unix_ms,
            reason: reason.to_string(),
            by: by.to_string(),
        };
        self.learn_ban(now, None, ban.clone());
        ban
    }

    /// An operator lifts the ban of `key` here: a lift (a record that ends at once, numbered after the ban)
    /// is replicated to every peer like a ban, so every node lifts it, and a node that was down learns it
    /// when it reconnects. `None` when `key` is not banned.
    pub fn unforbid(&mut self, now: Instant, key: &StreamKey, by: &str) -> Option<BanRecord> {
        if !self.is_banned(key.as_str()) {
            return None;
        }
        Some(self.forbid(now, key, Some(0), "lifted", by))
    }

    /// A control message from `peer`.
    pub fn control(&mut self, now: Instant, peer: &str, msg: Control) {
        if !self.links.get(peer).is_some_and(|l| l.up) {
            return;
        }
        match msg {
            Control::Hello { bans_through, .. } => {
                let theirs: HashMap<String, u64> = bans_through.into_iter().collect();
                let missing: Vec<Control> = self
                    .bans()
                    .filter(|b| theirs.get(&b.origin).is_none_or(|&through| b.seq > through))
                    .map(BanRecord::to_control)
                    .collect();
                for m in missing {
                    self.send(peer, m);
                }
            }
            Control::Open {
                stream,
                key,
                origin,
                hops,
            } => self.on_open(now, peer, stream, &key, origin, hops),
            Control::Close { stream, reason } => self.on_close(now, peer, stream, reason),
            Control::Pull { key } => self.on_pull(peer, &key),
            Control::Unpull { key } => {
                if let Ok(key) = StreamKey::parse(&key) {
                    if let Some(s) = self.streams.get_mut(&key) {
                        s.waiting.remove(peer);
                        // A refused push is tried again after `retry_after` (or when placement next
                        // changes): the home may not know yet that it is the home (it has not seen the old
                        // home's link fail), and it never asks for a push.
                        if s.push_to.as_deref() == Some(peer) {
                            s.push_to = None;
                            let soon = PUSH_RETRY_FIRST.saturating_mul(1 << s.push_refusals.min(16));
                            s.push_refusals = s.push_refusals.saturating_add(1);
                            s.retry_at = Some(now + soon.min(self.params.retry_after));
                        }
                        if let Some(stream) = s.sending.remove(peer) {
                            self.send(
                                peer,
                                Control::Close {
                                    stream,
                                    reason: CloseReason::Unpulled,
                                },
                            );
                        }
                    }
                }
            }
            Control::NotFound { key } => {
                if let Ok(key) = StreamKey::parse(&key) {
                    let retry = now + self.params.retry_after;
                    if let Some(s) = self.streams.get_mut(&key) {
                        if s.pulled_from.as_deref() == Some(peer) && s.source.is_none() {
                            s.retry_at = Some(retry);
                        }
                    }
                }
            }
            Control::Ban {
                origin,
                seq,
                key,
                until_unix_ms,
                reason,
                by,
            } => {
                let ban = BanRecord {
                    origin,
                    seq,
                    key,
                    until_unix_ms,
                    reason,
                    by,
                };
                self.learn_ban(now, Some(peer), ban);
            }
        }
    }

    /// A frame from `peer` on its transport stream `stream`: to local viewers and every peer this node
    /// relays the stream to. Frames of a stream that is not (or no longer) this node's source are dropped.
    pub fn frame(&mut self, peer: &str, stream: u32, frame: Frame) {
        let Some(key) = self
            .links
            .get(peer)
            .and_then(|l| l.incoming.get(&stream))
            .cloned()
        else {
            return;
        };
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        let from_source =
            matches!(&s.source, Some(Source::Remote { peer: p, stream: st }) if p == peer && *st == stream);
        if !from_source {
            return;
        }
        forward(s, &frame, &mut self.actions);
        if s.deliver_started || starts(&frame) || frame.kind.is_essential() {
            s.deliver_started |= starts(&frame);
            self.actions.push_back(MeshAction::Deliver { key, frame });
        }
    }

    fn send(&mut self, peer: &str, msg: Control) {
        self.actions.push_back(MeshAction::Control {
            peer: peer.to_string(),
            msg,
        });
    }

    fn open_stream_to(&mut self, peer: &str, key: &StreamKey, hops: u8) -> Option<u32> {
        let link = self.links.get_mut(peer).filter(|l| l.up)?;
        let stream = link.next_stream;
        link.next_stream = link.next_stream.wrapping_add(1).max(FIRST_MEDIA_STREAM);
        // The node where the stream is published, carried hop to hop (not the peer it came from).
        let origin = match self.streams.get(key) {
            Some(StreamState {
                source: Some(Source::Remote { .. }),
                origin: Some(origin),
                ..
            }) => origin.clone(),
            _ => self.params.me.clone(),
        };
        self.send(
            peer,
            Control::Open {
                stream,
                key: key.to_string(),
                origin,
                hops,
            },
        );
        Some(stream)
    }

    /// Answers every peer that asked for `key` before this node had it.
    fn serve_waiting(&mut self, key: &StreamKey, hops: u8) {
        let waiting: Vec<PeerId> = self
            .streams
            .get_mut(key)
            .map(|s| s.waiting.drain().collect())
            .unwrap_or_default();
        for peer in waiting {
            if let Some(stream) = self.open_stream_to(&peer, key, hops) {
                if let Some(s) = self.streams.get_mut(key) {
                    add_sending(s, peer, stream, &mut self.actions);
                }
            }
        }
    }

    fn close_all_sending(&mut self, key: &StreamKey, reason: CloseReason) {
        let sending: Vec<(PeerId, u32)> = self
            .streams
            .get_mut(key)
            .map(|s| {
                s.push_to = None;
                s.sending.drain().collect()
            })
            .unwrap_or_default();
        for (peer, stream) in sending {
            self.send(&peer, Control::Close { stream, reason });
        }
    }

    fn on_open(&mut self, now: Instant, peer: &str, stream: u32, key: &str, origin: PeerId, hops: u8) {
        let Ok(key) = StreamKey::parse(key) else {
            return;
        };
        if !self.admit(&key) {
            self.send(peer, Control::Unpull { key: key.to_string() });
            return;
        }
        let home = self.home_of(&key);
        let me = self.params.me.clone();
        let s = self.streams.entry(key.clone()).or_default();
        if s.source == Some(Source::Local) {
            // Published here: another node's copy is not needed.
            return;
        }
        // Taken as the source: what this node pulled from that peer, or, at the home, a push from the
        // publisher's node (which wins) or any copy while there is none. Anything else (an old home's late
        // answer, a banned stream) is refused: the sender stops sending it.
        let pulled = s.pulled_from.as_deref() == Some(peer);
        let pushed_home = home.as_deref() == Some(me.as_str()) && (hops == 0 || s.source.is_none());
        if self.is_banned(key.as_str()) || !(pulled || pushed_home) {
            if !self.is_banned(key.as_str()) {
                self.stats.refused_unasked_opens += 1;
            }
            if self.streams.get(&key).is_some_and(StreamState::idle) {
                self.streams.remove(&key);
            }
            self.send(peer, Control::Unpull { key: key.to_string() });
            return;
        }
        if let Some(link) = self.links.get_mut(peer) {
            link.incoming.insert(stream, key.clone());
        }
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        s.source = Some(Source::Remote {
            peer: peer.to_string(),
            stream,
        });
        s.origin = Some(origin.clone());
        s.retry_at = None;
        // A new source: local viewers resume at its first keyframe, and so does every peer this node relays
        // to (their streams restart with the source).
        s.deliver_started = false;
        s.started.clear();
        s.gop.clear();
        s.gop_bytes = 0;
        self.actions.push_back(MeshAction::RemoteStarted {
            key: key.clone(),
            origin,
            hops: hops.saturating_add(1),
        });
        self.serve_waiting(&key, hops.saturating_add(1));
        self.reconcile(now, &key);
    }

    fn on_close(&mut self, now: Instant, peer: &str, stream: u32, reason: CloseReason) {
        let Some(key) = self.links.get_mut(peer).and_then(|l| l.incoming.remove(&stream)) else {
            return;
        };
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if matches!(&s.source, Some(Source::Remote { peer: p, stream: st }) if p == peer && *st == stream) {
            s.source = None;
            if s.pulled_from.as_deref() == Some(peer) {
                s.pulled_from = None;
            }
            self.actions.push_back(MeshAction::RemoteEnded {
                key: key.clone(),
                reason,
            });
            // Pass the end on to the nodes this one relays to (their viewers see it too).
            if reason != CloseReason::Moved {
                self.close_all_sending(&key, reason);
            }
            self.reconcile(now, &key);
        }
    }

    fn on_pull(&mut self, peer: &str, key: &str) {
        let Ok(key) = StreamKey::parse(key) else {
            return;
        };
        if self.is_banned(key.as_str()) || !self.admit(&key) {
            self.send(peer, Control::NotFound { key: key.to_string() });
            return;
        }
        let home = self.home_of(&key);
        let s = self.streams.entry(key.clone()).or_default();
        if s.sending.contains_key(peer) {
            return;
        }
        let hops = match &s.source {
            Some(Source::Local) => Some(0),
            Some(Source::Remote { .. }) => Some(1),
            None => None,
        };
        match hops {
            Some(hops) => {
                if let Some(stream) = self.open_stream_to(peer, &key, hops) {
                    if let Some(s) = self.streams.get_mut(&key) {
                        add_sending(s, peer.to_string(), stream, &mut self.actions);
                    }
                }
            }
            // The home waits for the publisher's push; any other node says it does not have it.
            None if home.as_deref() == Some(self.params.me.as_str()) => {
                s.waiting.insert(peer.to_string());
            }
            None => {
                if s.idle() {
                    self.streams.remove(&key);
                }
                self.send(peer, Control::NotFound { key: key.to_string() });
            }
        }
    }

    fn learn_ban(&mut self, now: Instant, from: Option<&str>, ban: BanRecord) {
        let known = self.bans.entry(ban.origin.clone()).or_default();
        if known.contains_key(&ban.seq) {
            return;
        }
        known.insert(ban.seq, ban.clone());
        // On to every other peer (each forwards a ban once: a flood that ends).
        let peers: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(p, l)| l.up && Some(p.as_str()) != from)
            .map(|(p, _)| p.clone())
            .collect();
        for p in peers {
            self.send(&p, ban.to_control());
        }
        if from.is_some() {
            self.actions.push_back(MeshAction::Ban(ban.clone()));
        }
        let Ok(key) = StreamKey::parse(&ban.key) else {
            return;
        };
        if !self.is_banned(key.as_str()) {
            return;
        }
        // Stop the stream everywhere this node carries it.
        self.close_all_sending(&key, CloseReason::Forbidden);
        if let Some(s) = self.streams.get_mut(&key) {
            if end_pull(s, &key, &mut self.actions) {
                self.actions.push_back(MeshAction::RemoteEnded {
                    key: key.clone(),
                    reason: CloseReason::Forbidden,
                });
            }
            s.viewers = false;
            s.waiting.clear();
            s.unpull_at = None;
            s.retry_at = None;
        }
        let _ = now;
    }

    fn reconcile_all(&mut self, now: Instant) {
        let keys: Vec<StreamKey> = self.streams.keys().cloned().collect();
        for key in keys {
            self.reconcile(now, &key);
        }
    }

    /// Brings `key`'s push and pull in line with its current home.
    fn reconcile(&mut self, _now: Instant, key: &StreamKey) {
        if self.is_banned(key.as_str()) {
            return;
        }
        let me = self.params.me.clone();
        let home = self.home_of(key);
        let Some(s) = self.streams.get(key) else {
            return;
        };
        let local = s.source == Some(Source::Local);
        // Push: published here, home elsewhere.
        let want_push = if local {
            home.clone().filter(|h| *h != me)
        } else {
            None
        };
        if s.push_to != want_push {
            if let Some(old) = s.push_to.clone() {
                if let Some(stream) = self.streams.get_mut(key).and_then(|s| s.sending.remove(&old)) {
                    self.send(
                        &old,
                        Control::Close {
                            stream,
                            reason: CloseReason::Moved,
                        },
                    );
                }
            }
            let opened = want_push
                .as_ref()
                .and_then(|h| self.open_stream_to(h, key, 0).map(|st| (h.clone(), st)));
            if let Some(s) = self.streams.get_mut(key) {
                s.push_to = opened.as_ref().map(|(h, _)| h.clone());
                if let Some((h, st)) = opened {
                    add_sending(s, h, st, &mut self.actions);
                }
            }
        }
        // Pull: viewers here (or a grace period running), not published here, home elsewhere.
        let Some(s) = self.streams.get(key) else {
            return;
        };
        let needed = s.viewers || s.unpull_at.is_some();
        let want_pull = if needed && !local {
            home.filter(|h| *h != me)
        } else {
            None
        };
        if s.retry_at.is_some() {
            return;
        }
        if s.pulled_from != want_pull {
            if let Some(old) = s.pulled_from.clone() {
                if self.links.get(&old).is_some_and(|l| l.up) {
                    self.send(&old, Control::Unpull { key: key.to_string() });
                }
            }
            if let Some(h) = &want_pull {
                self.send(h, Control::Pull { key: key.to_string() });
            }
            if let Some(s) = self.streams.get_mut(key) {
                s.pulled_from = want_pull;
            }
        }
        if self.streams.get(key).is_some_and(StreamState::idle) {
            self.streams.remove(key);
        }
    }
}

/// The most bytes of one stream's GOP kept to start new peers; past it the GOP is dropped and a new peer
/// starts at the next keyframe.
pub const MAX_GOP_BYTES: usize = 16 << 20;

/// Starts carrying the stream to `peer` on transport stream `stream`: the essential frames and the GOP so
/// far go first, so that the peer's viewers start at once.
fn add_sending(s: &mut StreamState, peer: PeerId, stream: u32, actions: &mut VecDeque<MeshAction>) {
    let starts_now = s.gop.first().is_some_and(starts);
    for frame in s
        .headers
        .iter()
        .chain(if starts_now { s.gop.iter() } else { [].iter() })
    {
        actions.push_back(MeshAction::Frame {
            peer: peer.clone(),
            stream,
            frame: frame.clone(),
            prime: true,
        });
    }
    if starts_now {
        s.started.insert(peer.clone());
    } else {
        s.started.remove(&peer);
    }
    s.sending.insert(peer, stream);
}

/// Keeps `frame` of the stream's source for peers that start later (see [`StreamState::gop`]).
fn remember(s: &mut StreamState, frame: &Frame) {
    if frame.kind.is_essential() {
        s.headers
            .retain(|h| !(h.track == frame.track && h.kind == frame.kind));
        s.headers.push(frame.clone());
        return;
    }
    if starts(frame) {
        s.gop.clear();
        s.gop_bytes = 0;
    } else if s.gop.is_empty() {
        return;
    }
    s.gop_bytes += frame.body.len();
    if s.gop_bytes > MAX_GOP_BYTES {
        s.gop.clear();
        s.gop_bytes = 0;
        return;
    }
    s.gop.push(frame.clone());
}

/// Ends the pull of `key` (an `Unpull` to the peer it came from) and drops a remote source. Returns whether
/// there was one.
fn end_pull(s: &mut StreamState, key: &StreamKey, actions: &mut VecDeque<MeshAction>) -> bool {
    if let Some(home) = s.pulled_from.take() {
        actions.push_back(MeshAction::Control {
            peer: home,
            msg: Control::Unpull { key: key.to_string() },
        });
    }
    let remote = matches!(s.source, Some(Source::Remote { .. }));
    if remote {
        s.source = None;
    }
    remote
}

/// Whether `frame` starts a decodable run: a keyframe.
fn starts(frame: &Frame) -> bool {
    frame.kind == MediaKind::Key
}

/// Sends `frame` to every peer that carries the stream: to a peer whose stream has not reached a keyframe
/// yet, only a keyframe (which starts it) or an essential frame (sequence headers, metadata).
fn forward(s: &mut StreamState, frame: &Frame, actions: &mut VecDeque<MeshAction>) {
    remember(s, frame);
    for (peer, &stream) in &s.sending {
        let started = s.started.contains(peer);
        if started || starts(frame) || frame.kind.is_essential() {
            if !started && starts(frame) {
                s.started.insert(peer.clone());
            }
            actions.push_back(MeshAction::Frame {
                peer: peer.clone(),
                stream,
                frame: frame.clone(),
                prime: false,
            });
        }
    }
}
