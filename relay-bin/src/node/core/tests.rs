//! The node's decisions with no socket and no clock: several [`NodeCore`]s of one node, their inboxes
//! pumped in order, and rml_rtmp client sessions standing in for publishers and players, in virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use rml_rtmp::handshake::{Handshake, PeerType};
use rml_rtmp::sessions::{ClientSessionEvent, PublishRequestType};
use rml_rtmp::time::RtmpTimestamp;

use super::test_client::{Client, INTER, KEYFRAME, SEQ_HEADER};
use super::{NodeCore, Protocol, Written};
use crate::bans::BanStore;
use crate::config::Config;
use crate::node::clients::Token;
use crate::node::hooks::{HookJob, HookRunner};
use crate::node::mailbox::{CoreMsg, Mailbox};
use crate::node::shared::Shared;
use crate::stream_key::StreamKey;

/// A socket whose send buffer is full.
struct FullSocket;

impl std::io::Write for FullSocket {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One node's cores, its clients and a virtual clock.
struct Harness {
    shared: Arc<Shared>,
    cores: Vec<NodeCore>,
    inboxes: Vec<Receiver<CoreMsg>>,
    clients: Vec<Client>,
    /// HTTP viewers: core, token, bytes received, closed.
    http: Vec<HttpViewer>,
    now: Instant,
}

/// An HTTP egress client: what it received, and whether the core closed it.
struct HttpViewer {
    core: usize,
    token: Token,
    received: Vec<u8>,
    closed: bool,
}

impl Harness {
    fn new(cores: usize, configure: impl FnOnce(&mut Config)) -> Harness {
        Harness::build(cores, configure, None)
    }

    /// A node in a PoP mesh: core 0 is the mesh core (the test stands in for its mesh runner).
    fn with_mesh(cores: usize) -> Harness {
        Harness::build(cores, |c| c.mesh.id = "test".into(), None)
    }

    /// A harness whose `on_publish` hook calls (at most `max_pending`) go to the returned queue: the test
    /// answers them.
    fn with_hook(cores: usize, max_pending: usize) -> (Harness, Receiver<HookJob>) {
        let (runner, jobs) = HookRunner::detached(max_pending);
        (Harness::build(cores, |_| {}, Some(runner)), jobs)
    }

    fn build(cores: usize, configure: impl FnOnce(&mut Config), hooks: Option<HookRunner>) -> Harness {
        let mut config = Config::default();
        config.rtmp.write_coalesce_ms = 0;
        configure(&mut config);
        let bans = Arc::new(BanStore::open(None).unwrap());
        let mut mailboxes = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..cores {
            let waker = Arc::new(engine::Waker::new().unwrap());
            let (mailbox, inbox) = Mailbox::new(1024, waker);
            mailboxes.push(mailbox);
            inboxes.push(inbox);
        }
        let mesh = !config.mesh.id.is_empty();
        let mut shared = Shared::new(config, bans, mailboxes);
        shared.hooks = hooks;
        shared.mesh_core = mesh.then_some(crate::node::mesh_port::MESH_CORE);
        let shared = Arc::new(shared);
        let now = shared.started;
        let cores = (0..cores)
            .map(|i| NodeCore::new(i, shared.clone(), now))
            .collect();
        Harness {
            shared,
            cores,
            inboxes,
            clients: Vec::new(),
            http: Vec::new(),
            now,
        }
    }

    fn owner(&self, stream: &str) -> usize {
        self.shared.owner_of(&StreamKey::new("live", stream).unwrap())
    }

    /// Moves every byte and message until nothing moves.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for (core, inbox) in self.cores.iter_mut().zip(&self.inboxes) {
                while let Ok(message) = inbox.try_recv() {
                    core.message(self.now, message);
                    moved = true;
                }
            }
            for client in self
                .clients
                .iter_mut()
                .filter(|c| !c.closed && !c.outbox.is_empty())
            {
                let bytes = std::mem::take(&mut client.outbox);
                self.cores[client.core].input(self.now, client.token, &bytes);
                moved = true;
            }
            for core in 0..self.cores.len() {
                let mut tokens = Vec::new();
                self.cores[core].take_due_writes(self.now, &mut tokens);
                for token in tokens {
                    if self.client_mut(core, token).is_some_and(|c| !c.reading) {
                        // A full socket: nothing taken, write again when writable (never, here).
                        let written = self.cores[core].write_client(self.now, token, &mut FullSocket);
                        assert_ne!(written, Written::Drained);
                        continue;
                    }
                    let mut wire = Vec::new();
                    let written = self.cores[core].write_client(self.now, token, &mut wire);
                    assert_ne!(written, Written::Pending, "a Vec takes everything");
                    if let Some(client) = self.client_mut(core, token) {
                        if !wire.is_empty() {
                            client.receive(&wire);
                            moved = true;
                        }
                    } else if let Some(viewer) = self.http_mut(core, token) {
                        moved |= !wire.is_empty();
                        viewer.received.extend_from_slice(&wire);
                    }
                }
                let mut closed = Vec::new();
                self.cores[core].take_closed(&mut closed);
                for (token, _) in closed {
                    if let Some(client) = self.client_mut(core, token) {
                        client.closed = true;
                        moved = true;
                    }
                    if let Some(viewer) = self.http_mut(core, token) {
                        viewer.closed = true;
                        moved = true;
                    }
                }
                self.cores[core].take_wakes(|_| {});
            }
            if !moved {
                return;
            }
        }
        panic!("the cores never settled");
    }

    fn http_mut(&mut self, core: usize, token: Token) -> Option<&mut HttpViewer> {
        self.http
            .iter_mut()
            .find(|v| v.core == core && v.token == token && !v.closed)
    }

    /// An HTTP connection on `core` that sends `request`; returns its index in `http`.
    fn http_request(&mut self, core: usize, request: &str) -> usize {
        let peer = SocketAddr::from(([192, 0, 2, 2], 40_000 + self.http.len() as u16));
        let token = self.cores[core]
            .accept_as(self.now, peer, Protocol::Http)
            .expect("accepted");
        self.http.push(HttpViewer {
            core,
            token,
            received: Vec::new(),
            closed: false,
        });
        self.cores[core].input(self.now, token, request.as_bytes());
        self.pump();
        self.http.len() - 1
    }

    /// Sends `request` on HTTP connection `v` (kept alive after its last answer) and moves everything.
    fn http_send(&mut self, v: usize, request: &str) {
        let (core, token) = (self.http[v].core, self.http[v].token);
        assert!(!self.http[v].closed, "connection {v} is closed");
        self.cores[core].input(self.now, token, request.as_bytes());
        self.pump();
    }

    fn client_mut(&mut self, core: usize, token: Token) -> Option<&mut Client> {
        self.clients
            .iter_mut()
            .find(|c| c.core == core && c.token == token && !c.closed)
    }

    /// What client `c`'s core reports of it (`None` once it is closed).
    fn info(&mut self, c: usize) -> Option<crate::control::ClientInfo> {
        let (core, token) = (self.clients[c].core, self.clients[c].token);
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.cores[core].message(self.now, CoreMsg::Query { reply });
        let report = answer.try_recv().unwrap();
        let _ = token;
        let peer = SocketAddr::from(([192, 0, 2, 1], 40_000 + c as u16));
        report.clients.into_iter().find(|info| info.peer == peer)
    }

    /// Stream `stream`'s viewer count and bytes sent, summed over the cores' reports (as the node's handle
    /// does for `GET /api/v1/streams`).
    fn stream_out(&mut self, stream: &str) -> (u64, u64) {
        let key = StreamKey::new("live", stream).unwrap();
        let mut total = (0, 0);
        for core in &mut self.cores {
            let (reply, answer) = crossbeam_channel::bounded(1);
            core.message(self.now, CoreMsg::Query { reply });
            for (k, viewers, bytes) in answer.try_recv().unwrap().viewers {
                if k == key {
                    total.0 += viewers;
                    total.1 += bytes;
                }
            }
        }
        total
    }

    /// Advances the clock by `by`, running the cores' housekeeping on the way.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while self.now < end {
            self.now = (self.now + super::TICK).min(end);
            for core in &mut self.cores {
                core.tick(self.now);
            }
            self.pump();
        }
    }

    /// A TCP connection accepted on `core` and handshaken; returns the client's index.
    fn accept(&mut self, core: usize) -> usize {
        let peer = SocketAddr::from(([192, 0, 2, 1], 40_000 + self.clients.len() as u16));
        let token = self.cores[core].accept(self.now, peer).expect("accepted");
        let mut handshake = Handshake::new(PeerType::Client);
        let outbox = handshake.generate_outbound_p0_and_p1().unwrap();
        self.clients.push(Client {
            core,
            token,
            handshake: Some(handshake),
            session: None,
            events: Vec::new(),
            outbox,
            closed: false,
            reading: true,
        });
        self.pump();
        self.clients.len() - 1
    }

    /// A client on `core` connected to app `live`.
    fn connect(&mut self, core: usize) -> usize {
        let c = self.accept(core);
        let result = self.clients[c]
            .session()
            .request_connection("live".into())
            .unwrap();
        self.clients[c].apply(vec![result]);
        self.pump();
        assert!(self.clients[c].saw(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted)));
        c
    }

    fn publisher(&mut self, core: usize, stream: &str) -> usize {
        let c = self.connect(core);
        let result = self.clients[c]
            .session()
            .request_publishing(stream.into(), PublishRequestType::Live)
            .unwrap();
        self.clients[c].apply(vec![result]);
        self.pump();
        c
    }

    fn viewer(&mut self, core: usize, stream: &str) -> usize {
        let c = self.connect(core);
        let result = self.clients[c].session().request_playback(stream.into()).unwrap();
        self.clients[c].apply(vec![result]);
        self.pump();
        c
    }

    fn send_video(&mut self, c: usize, body: &'static [u8], timestamp: u32) {
        let result = self.clients[c]
            .session()
            .publish_video_data(Bytes::from_static(body), RtmpTimestamp::new(timestamp), false)
            .unwrap();
        self.clients[c].apply(vec![result]);
        self.pump();
    }
}

fn accepted_publish(e: &ClientSessionEvent) -> bool {
    matches!(e, ClientSessionEvent::PublishRequestAccepted)
}

fn accepted_play(e: &ClientSessionEvent) -> bool {
    matches!(e, ClientSessionEvent::PlaybackRequestAccepted)
}

#[test]
fn frames_cross_from_a_publisher_on_one_core_to_viewers_on_every_core() {
    let mut h = Harness::new(3, |_| {});
    let owner = h.owner("shop42");
    let publisher_core = (owner + 1) % 3;
    let viewers: Vec<usize> = (0..3).map(|core| h.viewer(core, "shop42")).collect();
    let p = h.publisher(publisher_core, "shop42");
    assert!(h.clients[p].saw(accepted_publish));
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    h.send_video(p, INTER, 40);
    for (core, &v) in viewers.iter().enumerate() {
        assert!(h.clients[v].saw(accepted_play), "viewer on core {core}");
        assert_eq!(
            h.clients[v].video(),
            vec![(0, 0x17), (0, 0x17), (40, 0x27)],
            "viewer on core {core} (owner {owner}, publisher on {publisher_core})"
        );
    }
}

#[test]
fn a_late_viewer_starts_at_once_from_the_gop_cache() {
    let mut h = Harness::new(2, |_| {});
    let p = h.publisher(0, "late");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, INTER, 0); // before any keyframe: no viewer may ever get it
    h.send_video(p, KEYFRAME, 40);
    h.send_video(p, INTER, 80);
    for core in 0..2 {
        let v = h.viewer(core, "late");
        assert_eq!(
            h.clients[v].video(),
            vec![(0, 0x17), (40, 0x17), (80, 0x27)],
            "late viewer on core {core}"
        );
    }
}

/// Issue 17, item 25: a stream's bytes out add up its viewers' on every core, and never go back when a
/// viewer leaves (the last on its core included).
#[test]
fn a_streams_bytes_out_sum_its_viewers_and_never_go_back() {
    let mut h = Harness::new(3, |_| {});
    let owner = h.owner("count");
    let others: Vec<usize> = (0..3).filter(|&c| c != owner).collect();
    let on_owner = h.viewer(owner, "count");
    let elsewhere = h.viewer(others[0], "count");
    let p = h.publisher(others[1], "count");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    for t in 1..20 {
        h.send_video(p, INTER, t * 40);
    }
    let sent: u64 = [on_owner, elsewhere]
        .iter()
        .map(|&v| h.info(v).unwrap().bytes_out)
        .sum();
    assert!(sent > 0);
    assert_eq!(h.stream_out("count"), (2, sent));
    // The only viewer on its core leaves: that core drops the stream, the owner keeps its bytes.
    let (core, token) = (h.clients[elsewhere].core, h.clients[elsewhere].token);
    h.cores[core].connection_lost(h.now, token, "test");
    h.clients[elsewhere].closed = true;
    h.pump();
    assert_eq!(h.stream_out("count"), (1, sent));
    h.send_video(p, INTER, 800);
    let (viewers, after) = h.stream_out("count");
    assert_eq!(viewers, 1);
    assert!(after > sent, "{after} after {sent}");
}

#[test]
fn a_second_publisher_of_a_stream_is_refused() {
    let mut h = Harness::new(2, |_| {});
    let first = h.publisher(0, "dup");
    assert!(h.clients[first].saw(accepted_publish));
    let second = h.publisher(1, "dup");
    assert!(!h.clients[second].saw(accepted_publish));
    assert!(
        h.clients[second].closed,
        "refused publisher is closed after its answer"
    );
    assert!(!h.clients[first].closed);
}

#[test]
fn a_forbidden_stream_is_refused_and_a_kick_closes_its_clients_on_every_core() {
    let mut h = Harness::new(2, |_| {});
    let p = h.publisher(0, "banned");
    let viewers = [h.viewer(0, "banned"), h.viewer(1, "banned")];
    let bystander = h.viewer(1, "other");
    h.send_video(p, SEQ_HEADER, 0);
    h.shared
        .bans
        .forbid(StreamKey::new("live", "banned").unwrap(), None, "policy".into())
        .unwrap();
    let mut kicked = 0;
    for core in 0..2 {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let key = StreamKey::new("live", "banned").unwrap();
        h.cores[core].message(h.now, CoreMsg::KickStream { key, reply });
        kicked += answer.try_recv().unwrap();
    }
    h.pump();
    assert_eq!(kicked, 3);
    assert!(h.clients[p].closed);
    assert!(viewers.iter().all(|&v| h.clients[v].closed));
    assert!(!h.clients[bystander].closed);
    // While the ban lasts, neither publish nor play is accepted.
    let again = h.publisher(1, "banned");
    assert!(!h.clients[again].saw(accepted_publish));
    let viewer = h.viewer(0, "banned");
    assert!(!h.clients[viewer].saw(accepted_play));
}

#[test]
fn garbage_closes_that_client_alone() {
    let mut h = Harness::new(1, |_| {});
    let p = h.publisher(0, "steady");
    let v = h.viewer(0, "steady");
    let bad = h.connect(0);
    // A chunk on stream 2 announcing a 16 MiB command: over max_command_bytes.
    h.clients[bad]
        .outbox
        .extend_from_slice(&[0x02, 0, 0, 0, 0xff, 0xff, 0xff, 0x14, 0, 0, 0, 0]);
    h.pump();
    assert!(h.clients[bad].closed);
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    assert!(!h.clients[v].closed);
    assert_eq!(h.clients[v].video().len(), 2);
}

#[test]
fn a_connection_that_neither_publishes_nor_plays_is_closed_at_the_handshake_timeout() {
    let mut h = Harness::new(1, |c| c.rtmp.handshake_timeout_ms = 1_000);
    let idle = h.connect(0);
    let p = h.publisher(0, "busy");
    h.advance(Duration::from_millis(900));
    assert!(!h.clients[idle].closed);
    h.advance(Duration::from_millis(200));
    assert!(h.clients[idle].closed);
    assert!(
        !h.clients[p].closed,
        "a publisher is not closed by the handshake timeout"
    );
    assert_eq!(h.cores[0].client_count(), 1);
}

#[test]
fn viewers_are_written_once_per_coalescing_interval() {
    let mut h = Harness::new(1, |c| c.rtmp.write_coalesce_ms = 100);
    let p = h.publisher(0, "coalesced");
    let v = h.viewer(0, "coalesced");
    h.advance(Duration::from_millis(100));
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    let first = h.clients[v].video().len();
    h.send_video(p, INTER, 40);
    h.send_video(p, INTER, 80);
    // Nothing more reaches the viewer until the interval has passed; then everything in one write.
    assert_eq!(h.clients[v].video().len(), first);
    h.advance(Duration::from_millis(100));
    assert_eq!(h.clients[v].video().len(), 4);
}

#[test]
fn a_cores_viewers_are_written_on_different_phases_of_the_interval() {
    // 80 ms over 8 groups: the viewers in slots 1 and 2 are written 10 ms apart, not in one burst.
    let mut h = Harness::new(1, |c| c.rtmp.write_coalesce_ms = 80);
    let p = h.publisher(0, "phases");
    let v1 = h.viewer(0, "phases");
    let v2 = h.viewer(0, "phases");
    let slots: Vec<u64> = [v1, v2]
        .iter()
        .map(|&v| h.clients[v].token & 0xffff_ffff)
        .collect();
    assert_eq!(slots[1], slots[0] + 1, "neighbouring slots: {slots:?}");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    // A frame every 20 ms for 800 ms, time stepped 1 ms at a time: note when each viewer's writes land.
    let mut writes: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut seen = [h.clients[v1].video().len(), h.clients[v2].video().len()];
    for ms in 1..=800u64 {
        if ms % 20 == 0 {
            h.send_video(p, INTER, ms as u32);
        }
        h.advance(Duration::from_millis(1));
        for (i, &v) in [v1, v2].iter().enumerate() {
            let n = h.clients[v].video().len();
            if n != seen[i] {
                seen[i] = n;
                writes[i].push(ms);
            }
        }
    }
    // Past the first interval, each viewer is written once an interval, on its own phase, 10 ms apart.
    let steady = |w: &[u64]| w.iter().copied().filter(|&t| t > 160).collect::<Vec<_>>();
    let (a, b) = (steady(&writes[0]), steady(&writes[1]));
    assert!(a.len() >= 7 && b.len() >= 7, "{writes:?}");
    for w in [&a, &b] {
        assert!(w.windows(2).all(|p| p[1] - p[0] == 80), "once an interval: {w:?}");
    }
    assert_eq!(
        (b[0] % 80 + 80 - a[0] % 80) % 80,
        10,
        "one phase (80 ms / 8) apart: {writes:?}"
    );
    h.advance(Duration::from_millis(80));
    let got = [h.clients[v1].video().len(), h.clients[v2].video().len()];
    assert_eq!(got, [42, 42], "every frame reached both within an interval");
}

#[test]
fn a_viewer_that_never_reads_keeps_one_header_per_track_however_many_are_sent() {
    // Issue 17, item 12: sequence headers bypassed the queue's bound, so a publisher sending them in a loop
    // grew a stalled viewer's memory without bound.
    let mut h = Harness::new(1, |_| {});
    let p = h.publisher(0, "headers");
    let v = h.viewer(0, "headers");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    h.clients[v].reading = false;
    for i in 0..3000 {
        h.send_video(p, SEQ_HEADER, 40 + i);
    }
    let queued = h.info(v).unwrap().queue_bytes;
    assert!(
        queued < 4096,
        "{queued} bytes queued for a viewer that never reads"
    );
    h.clients[v].reading = true;
    h.send_video(p, KEYFRAME, 4000);
    h.send_video(p, INTER, 4040);
    let video = h.clients[v].video();
    assert_eq!(
        video[video.len() - 3..].to_vec(),
        vec![(3039, 0x17), (4000, 0x17), (4040, 0x27)],
        "the newest header, then the stream from its next keyframe"
    );
}

#[test]
fn a_client_that_never_reads_the_answers_it_asks_for_is_closed() {
    // Issue 17, item 12: rml_rtmp answers every ping; the control queue had no bound.
    let mut h = Harness::new(1, |_| {});
    let c = h.connect(0);
    let bystander = h.connect(0);
    h.clients[c].reading = false;
    // PingRequest (user control event 6) on chunk stream 2: 18 bytes asking for an 18-byte answer.
    let ping = [0x02, 0, 0, 0, 0, 0, 6, 0x04, 0, 0, 0, 0, 0, 6, 0, 0, 0, 1];
    for _ in 0..10_000 {
        h.clients[c].outbox.extend_from_slice(&ping);
    }
    h.pump();
    assert!(
        h.clients[c].closed,
        "a client with 180 KB of unread answers stays open"
    );
    assert!(!h.clients[bystander].closed);
    let hits = &h.shared.counters[0].limits.control_queue;
    assert_eq!(hits.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn a_player_of_a_stream_nobody_publishes_hears_stream_not_found_after_the_wait() {
    // Issue 17, items 13 and 21: such a player waited (and held its slot) forever, silently.
    let mut h = Harness::new(2, |_| {});
    let waiting = [h.viewer(0, "nobody"), h.viewer(1, "nobody")];
    let served = h.viewer(1, "later");
    h.advance(Duration::from_secs(20));
    let p = h.publisher(0, "later");
    h.send_video(p, SEQ_HEADER, 0);
    h.advance(Duration::from_secs(9));
    assert!(
        waiting.iter().all(|&v| !h.clients[v].closed),
        "closed before rtmp.play_wait_ms"
    );
    h.advance(Duration::from_millis(1_100));
    for v in waiting {
        assert!(
            h.clients[v].closed,
            "a player of an unpublished stream is still open after 30 s"
        );
        assert!(h.clients[v].saw(|e| matches!(
            e,
            ClientSessionEvent::UnhandleableOnStatusCode { code } if code == "NetStream.Play.StreamNotFound"
        )));
    }
    assert!(!h.clients[served].closed, "a player whose stream went live stays");
    assert_eq!(h.cores[0].client_count() + h.cores[1].client_count(), 2);
}

#[test]
fn a_viewer_whose_writes_stall_is_closed_and_a_reading_one_is_not() {
    // Issue 17, item 13: a viewer that stopped reading stayed until TCP gave up (about 15 min).
    let mut h = Harness::new(1, |_| {});
    let p = h.publisher(0, "stall");
    let stuck = h.viewer(0, "stall");
    let fine = h.viewer(0, "stall");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    h.clients[stuck].reading = false;
    for second in 1..=40u32 {
        h.send_video(p, INTER, second * 1000);
        h.advance(Duration::from_secs(1));
    }
    assert!(
        h.clients[stuck].closed,
        "a viewer that reads nothing for 40 s is still open"
    );
    assert!(!h.clients[fine].closed && !h.clients[p].closed);
    let hits = &h.shared.counters[0].limits.write_stall;
    assert_eq!(hits.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn connections_past_the_per_ip_cap_or_into_the_fd_reserve_are_refused() {
    // Issue 17, item 13: no per-IP cap, and nothing kept descriptors free for bans and hooks.
    let mut h = Harness::new(2, |c| c.rtmp.max_connections_per_ip = 3);
    let one = SocketAddr::from(([198, 51, 100, 7], 1000));
    let other = SocketAddr::from(([198, 51, 100, 8], 1000));
    let mut tokens = Vec::new();
    for i in 0..3 {
        tokens.push(h.cores[i % 2].accept(h.now, one).expect("under the cap"));
    }
    assert!(
        h.cores[1].accept(h.now, one).is_none(),
        "a 4th connection from one address"
    );
    assert!(
        h.cores[0].accept(h.now, other).is_some(),
        "another address is not capped"
    );
    // One closes: its address may connect again.
    h.cores[0].connection_lost(h.now, tokens[0], "test");
    assert!(h.cores[0].accept(h.now, one).is_some());
    let limits = &h.shared.counters[1].limits;
    assert_eq!(limits.per_ip.load(std::sync::atomic::Ordering::Relaxed), 1);
    // 4 connections open; a limit of 4 + fd_reserve descriptors leaves no room for a 5th.
    let reserve = h.shared.config.rtmp.fd_reserve;
    assert_eq!(h.shared.connections(), 4);
    h.shared
        .fd_limit
        .store(4 + reserve, std::sync::atomic::Ordering::Relaxed);
    let third = SocketAddr::from(([198, 51, 100, 9], 1000));
    assert!(h.cores[0].accept(h.now, third).is_none());
    let limits = &h.shared.counters[0].limits;
    assert_eq!(limits.fd_reserve.load(std::sync::atomic::Ordering::Relaxed), 1);
    h.shared
        .fd_limit
        .store(5 + reserve, std::sync::atomic::Ordering::Relaxed);
    assert!(h.cores[0].accept(h.now, third).is_some());
}

/// Answers an `on_publish` call as the hook would.
fn answer(h: &mut Harness, job: HookJob, verdict: Result<(), String>) {
    let message = CoreMsg::HookVerdict {
        token: job.token,
        client: job.client,
        request_id: job.request_id,
        key: job.key.clone(),
        verdict,
    };
    h.cores[job.core].message(h.now, message);
    h.pump();
}

#[test]
fn the_stream_key_is_claimed_only_once_the_hook_allows() {
    // Issue 17, item 16: the key was claimed before the hook answered, so a publisher the hook would refuse
    // (or a slow hook) blocked the stream's legitimate publisher.
    let (mut h, jobs) = Harness::with_hook(2, 16);
    let intruder = h.publisher(0, "shop");
    let owner = h.publisher(1, "shop");
    assert!(
        !h.clients[owner].closed,
        "a second publisher is refused before the hook allowed the first"
    );
    let first = jobs.try_recv().unwrap();
    let second = jobs.try_recv().unwrap();
    answer(&mut h, first, Err("not yours".to_string()));
    answer(&mut h, second, Ok(()));
    assert!(h.clients[intruder].closed && !h.clients[intruder].saw(accepted_publish));
    assert!(h.clients[owner].saw(accepted_publish));
    assert_eq!(
        h.shared.publisher_of(&StreamKey::new("live", "shop").unwrap()),
        Some(h.info(owner).unwrap().id)
    );
}

#[test]
fn hook_calls_waiting_or_in_flight_are_bounded() {
    let (mut h, jobs) = Harness::with_hook(1, 2);
    let a = h.publisher(0, "a");
    let b = h.publisher(0, "b");
    let c = h.publisher(0, "c");
    assert!(!h.clients[a].closed && !h.clients[b].closed);
    assert!(
        h.clients[c].closed,
        "a third call past on_publish_max_pending = 2 waits"
    );
    assert_eq!(
        h.shared.counters[0]
            .limits
            .hook_busy
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // One call ends (its job, and slot, go): another publish may ask.
    let first = jobs.try_recv().unwrap();
    answer(&mut h, first, Ok(()));
    let d = h.publisher(0, "d");
    assert!(!h.clients[d].closed);
    assert_eq!(h.shared.hooks.as_ref().unwrap().pending(), 2);
}

/// A frame as a mesh link delivers it.
fn remote(kind: crate::media::MediaKind, body: &'static [u8], dts: u64, now: Instant) -> crate::media::Frame {
    crate::media::Frame::new(
        kind,
        crate::media::Track::Video,
        dts,
        dts,
        Bytes::from_static(body),
        now,
    )
}

/// What the mesh core's runner was told since the last call, by name.
fn mesh_inputs(h: &mut Harness) -> Vec<String> {
    let mut inputs = Vec::new();
    h.cores[0].take_mesh_inputs(&mut inputs);
    inputs
        .iter()
        .map(|i| match i {
            crate::node::mesh_port::MeshInput::Published(k) => format!("published {k}"),
            crate::node::mesh_port::MeshInput::Unpublished(k) => format!("unpublished {k}"),
            crate::node::mesh_port::MeshInput::Frame(k, f) => format!("frame {k} {}", f.dts_ms),
            crate::node::mesh_port::MeshInput::Wanted(k) => format!("wanted {k}"),
            crate::node::mesh_port::MeshInput::Unwanted(k) => format!("unwanted {k}"),
            crate::node::mesh_port::MeshInput::Forbid { key, .. } => format!("forbid {key}"),
            crate::node::mesh_port::MeshInput::Unforbid { key } => format!("unforbid {key}"),
            crate::node::mesh_port::MeshInput::Links { .. } => "links".to_string(),
            crate::node::mesh_port::MeshInput::Homes { .. } => "homes".to_string(),
        })
        .collect()
}

#[test]
fn a_stream_from_the_mesh_reaches_viewers_on_every_core_and_continues_across_a_failover() {
    use crate::media::MediaKind::{Inter, Key, SeqHeader};
    let mut h = Harness::with_mesh(2);
    let key = StreamKey::new("live", "far").unwrap();
    // A viewer on each core: the node asks the mesh for the stream once.
    let viewers = [h.viewer(0, "far"), h.viewer(1, "far")];
    assert_eq!(mesh_inputs(&mut h), vec!["wanted live/far"]);

    // The mesh runner (on core 0) hands the stream to its owner core, whichever it is.
    let now = h.now;
    h.cores[0].remote_started(now, key.clone(), "jkt".into(), 2);
    for (kind, body, dts) in [
        (SeqHeader, SEQ_HEADER, 0),
        (Key, KEYFRAME, 0),
        (Inter, INTER, 40),
        (Inter, INTER, 80),
    ] {
        assert!(h.cores[0].remote_frame(now, key.clone(), remote(kind, body, dts, now)));
        h.pump();
    }
    for &v in &viewers {
        assert_eq!(
            h.clients[v].video(),
            vec![(0, 0x17), (0, 0x17), (40, 0x27), (80, 0x27)]
        );
    }

    // Failover: the source moves; the next one of the same publication sends its GOP from the keyframe.
    // What the viewers have is skipped; they continue with 120 and 160, with no restart.
    h.cores[0].remote_ended(now, key.clone(), true);
    h.pump();
    h.cores[0].remote_started(now, key.clone(), "jkt".into(), 1);
    let prime = [
        (SeqHeader, SEQ_HEADER, 0),
        (Key, KEYFRAME, 0),
        (Inter, INTER, 40),
        (Inter, INTER, 80),
        (Inter, INTER, 120),
        (Inter, INTER, 160),
    ];
    for (kind, body, dts) in prime {
        h.cores[0].remote_frame(now, key.clone(), remote(kind, body, dts, now));
        h.pump();
    }
    for &v in &viewers {
        let video = h.clients[v].video();
        let times: Vec<u32> = video.iter().map(|&(t, _)| t).collect();
        assert_eq!(times, vec![0, 0, 40, 80, 120, 160], "no duplicate, no restart");
    }

    // A source of another publication restarts the viewers at its first keyframe.
    h.cores[0].remote_ended(now, key.clone(), true);
    h.cores[0].remote_started(now, key.clone(), "mnl".into(), 1);
    h.pump();
    for (kind, body, dts) in [(Inter, INTER, 5000), (Key, KEYFRAME, 5040), (Inter, INTER, 5080)] {
        h.cores[0].remote_frame(now, key.clone(), remote(kind, body, dts, now));
        h.pump();
    }
    for &v in &viewers {
        let times: Vec<u32> = h.clients[v].video().iter().map(|&(t, _)| t).collect();
        assert_eq!(
            times[6..],
            [5040, 5080],
            "the inter frame before the keyframe is not sent"
        );
    }
    assert!(
        mesh_inputs(&mut h).is_empty(),
        "a remote stream is not sent back to the mesh"
    );

    // The last viewer gone: the node tells the mesh once.
    for &v in &viewers {
        let (core, token) = (h.clients[v].core, h.clients[v].token);
        let now = h.now;
        h.cores[core].connection_lost(now, token, "test");
        h.clients[v].closed = true;
        h.pump();
    }
    assert_eq!(mesh_inputs(&mut h), vec!["unwanted live/far"]);
}

#[test]
fn a_local_publisher_is_reported_to_the_mesh_with_its_frames() {
    let mut h = Harness::with_mesh(2);
    let p = h.publisher(1, "near");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    h.send_video(p, INTER, 40);
    assert_eq!(
        mesh_inputs(&mut h),
        vec![
            "published live/near",
            "frame live/near 0",
            "frame live/near 0",
            "frame live/near 40"
        ]
    );
    // A viewer of a stream published here does not make the node ask the mesh.
    h.viewer(0, "near");
    h.viewer(1, "near");
    assert!(mesh_inputs(&mut h).is_empty());
    let (core, token) = (h.clients[p].core, h.clients[p].token);
    let now = h.now;
    h.cores[core].connection_lost(now, token, "test");
    h.clients[p].closed = true;
    h.pump();
    // The publisher left: the stream is unpublished, and its viewers (who stay for the grace period) may
    // get it from another node where it is published next.
    assert_eq!(
        mesh_inputs(&mut h),
        vec!["unpublished live/near", "wanted live/near"]
    );
}

/// The FLV tags in an HTTP-FLV response (head, then a chunked body): (tag type, timestamp, first body
/// byte), and whether the body ended (the last chunk).
fn flv_tags(received: &[u8]) -> (Vec<(u8, u32, u8)>, bool) {
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut rest = &received[head_end..];
    let mut body = Vec::new();
    let mut ended = false;
    while let Some(line) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line]).unwrap(), 16).unwrap();
        if size == 0 {
            ended = true;
            break;
        }
        body.extend_from_slice(&rest[line + 2..line + 2 + size]);
        rest = &rest[line + 2 + size + 2..];
    }
    assert_eq!(&body[..13], &crate::egress::http_flv::FLV_FILE_HEADER);
    let mut tags = Vec::new();
    let mut at = 13;
    while at < body.len() {
        let size = u32::from_be_bytes([0, body[at + 1], body[at + 2], body[at + 3]]) as usize;
        let ts = u32::from_be_bytes([body[at + 7], body[at + 4], body[at + 5], body[at + 6]]);
        tags.push((body[at], ts, body[at + 11]));
        let previous = u32::from_be_bytes(body[at + 11 + size..at + 15 + size].try_into().unwrap());
        assert_eq!(previous as usize, 11 + size, "previous tag size");
        at += 11 + size + 4;
    }
    (tags, ended)
}

#[test]
fn an_http_flv_viewer_gets_a_200_then_flv_tags_from_the_gop_cache_and_live() {
    let mut h = Harness::new(2, |_| {});
    let owner = h.owner("web");
    let p = h.publisher(owner, "web");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, INTER, 0); // before any keyframe: never sent
    h.send_video(p, KEYFRAME, 40);
    let other = (owner + 1) % 2;
    let v = h.http_request(other, "GET /live/web.flv?x=1 HTTP/1.1\r\nHost: pop\r\n\r\n");
    h.send_video(p, INTER, 80);
    let received = h.http[v].received.clone();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Transfer-Encoding: chunked"));
    let (tags, ended) = flv_tags(&received);
    assert_eq!(tags, vec![(9, 0, 0x17), (9, 40, 0x17), (9, 80, 0x27)]);
    assert!(!ended);
    let info = h.cores[other]
        .clients
        .iter()
        .map(|(_, c)| c.queue.form())
        .collect::<Vec<_>>();
    assert!(info.contains(&crate::fanout::WireForm::HttpFlv { chunked: true }));
}

#[test]
fn an_http_viewer_of_a_stream_nobody_publishes_hears_404_and_nothing_after() {
    let mut h = Harness::new(1, |c| c.rtmp.play_wait_ms = 500);
    let v = h.http_request(0, "GET /live/late.flv HTTP/1.1\r\n\r\n");
    assert!(h.http[v].received.is_empty(), "the answer waits for the stream");
    h.advance(Duration::from_millis(600));
    let text = String::from_utf8_lossy(&h.http[v].received).to_string();
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
    assert!(text.contains("live/late is not published"), "{text}");
    // Had the publisher come before the close flushed, no 200 or tag would follow the 404.
    let p = h.publisher(0, "late");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    assert_eq!(String::from_utf8_lossy(&h.http[v].received), text);
    assert!(h.http[v].closed);
}

#[test]
fn the_end_of_a_stream_ends_the_chunked_body_and_a_ban_answers_403() {
    let mut h = Harness::new(1, |c| c.rtmp.unpublish_grace_ms = 200);
    let p = h.publisher(0, "end");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    let v = h.http_request(0, "GET /live/end.flv HTTP/1.1\r\n\r\n");
    let token = h.clients[p].token;
    h.cores[0].connection_lost(h.now, token, "test: publisher gone");
    h.clients[p].closed = true;
    h.advance(Duration::from_millis(400));
    let (tags, ended) = flv_tags(&h.http[v].received);
    assert_eq!(tags.len(), 2);
    assert!(ended, "the last chunk ends the body");
    assert!(h.http[v].closed);
    h.shared
        .bans
        .forbid(StreamKey::new("live", "end").unwrap(), None, "test ban".into())
        .unwrap();
    let v = h.http_request(0, "GET /live/end.flv HTTP/1.1\r\n\r\n");
    let text = String::from_utf8_lossy(&h.http[v].received).to_string();
    assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
    assert!(text.ends_with("is forbidden: test ban\n"), "{text}");
}

/// HLS is packaged once, on the stream's owner core: a request on another core waits there for the first
/// segment and is answered through the inbox; the segment it lists is served to a request on any core.
#[test]
fn hls_requests_on_any_core_are_answered_by_the_owners_packaging() {
    let mut h = Harness::new(2, |_| {});
    let owner = h.owner("tv");
    let other = (owner + 1) % 2;
    let p = h.publisher(owner, "tv");
    let v = h.http_request(other, "GET /live/tv/index.m3u8 HTTP/1.1\r\n\r\n");
    assert!(h.http[v].received.is_empty(), "the playlist waits for a segment");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    for t in 1..50 {
        h.send_video(p, INTER, t * 40);
    }
    h.send_video(p, KEYFRAME, 2_000);
    h.send_video(p, INTER, 2_040);
    let text = String::from_utf8_lossy(&h.http[v].received).to_string();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Set-Cookie: popline_hls="), "{text}");
    // No session yet: the multivariant playlist, whose variant carries the new session.
    let variant = text
        .lines()
        .find(|l| l.starts_with("index.m3u8?session="))
        .unwrap()
        .to_string();
    // HTTP/1.1: the connection stays open for the next request.
    assert!(text.contains("Connection: keep-alive\r\n"), "{text}");
    assert!(!h.http[v].closed);
    let m = h.http_request(other, &format!("GET /live/tv/{variant} HTTP/1.1\r\n\r\n"));
    let text = String::from_utf8_lossy(&h.http[m].received).to_string();
    let session = variant.trim_start_matches("index.m3u8?");
    assert!(!text.contains("Set-Cookie"), "{text}");
    assert!(
        text.contains(&format!("#EXTINF:2.000,\nseg-0.m4s?{session}")),
        "{text}"
    );
    for core in [owner, other] {
        let s = h.http_request(core, "GET /live/tv/seg-0.m4s HTTP/1.1\r\n\r\n");
        let received = &h.http[s].received;
        let body = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(&received[body + 4..body + 8], b"moof", "segment from core {core}");
    }
    let s = h.http_request(other, "GET /live/tv/seg-7.m4s HTTP/1.1\r\n\r\n");
    assert!(String::from_utf8_lossy(&h.http[s].received).starts_with("HTTP/1.1 404"));
}

/// The answers in an HTTP connection's bytes, in order: status, `Connection` header, body (by
/// `Content-Length`).
fn http_answers(received: &[u8]) -> Vec<(u16, String, Vec<u8>)> {
    let mut answers = Vec::new();
    let mut rest = received;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).to_string();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let connection = header("Connection:").unwrap();
        let length: usize = header("Content-Length:").map_or(0, |l| l.parse().unwrap());
        let body = rest[end + 4..end + 4 + length].to_vec();
        rest = &rest[end + 4 + length..];
        answers.push((status, connection, body));
    }
    assert!(rest.is_empty(), "bytes after the last answer");
    answers
}

/// Publishes the rest of the 2 s GOP whose keyframe was at `from_ms` and the keyframe that closes it (a
/// segment at the default target).
fn publish_gop(h: &mut Harness, p: usize, from_ms: u32) {
    for t in 1..50 {
        h.send_video(p, INTER, from_ms + t * 40);
    }
    h.send_video(p, KEYFRAME, from_ms + 2_000);
}

/// HTTP keep-alive: one connection (on a core other than the stream's owner) gets the playlist it waited
/// for, then the init segment and a segment, each answered in turn on the same connection; a request with
/// `Connection: close` is answered and the connection closed.
#[test]
fn a_kept_alive_connection_serves_one_request_after_another_and_closes_when_asked() {
    let mut h = Harness::new(2, |_| {});
    let owner = h.owner("ka");
    let other = (owner + 1) % 2;
    let p = h.publisher(owner, "ka");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    let v = h.http_request(
        other,
        "GET /live/ka/index.m3u8?session=ab HTTP/1.1\r\nHost: pop\r\n\r\n",
    );
    assert!(h.http[v].received.is_empty(), "the playlist waits for a segment");
    publish_gop(&mut h, p, 0);
    let answers = http_answers(&h.http[v].received);
    assert_eq!(answers.len(), 1);
    let (status, connection, playlist) = &answers[0];
    assert_eq!((*status, connection.as_str()), (200, "keep-alive"));
    let playlist = String::from_utf8_lossy(playlist).to_string();
    let init = playlist
        .split("URI=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    assert!(!h.http[v].closed);
    h.http_send(v, &format!("GET /live/ka/{init} HTTP/1.1\r\n\r\n"));
    h.http_send(v, "GET /live/ka/seg-0.m4s?session=ab HTTP/1.1\r\n\r\n");
    let answers = http_answers(&h.http[v].received);
    assert_eq!(answers.len(), 3, "{playlist}");
    assert_eq!((answers[1].0, answers[1].1.as_str()), (200, "keep-alive"));
    assert_eq!(&answers[1].2[4..8], b"ftyp");
    assert_eq!((answers[2].0, answers[2].1.as_str()), (200, "keep-alive"));
    assert_eq!(&answers[2].2[4..8], b"moof");
    assert!(!h.http[v].closed);
    h.http_send(v, "GET /live/ka/seg-0.m4s HTTP/1.1\r\nConnection: close\r\n\r\n");
    let answers = http_answers(&h.http[v].received);
    assert_eq!(answers.len(), 4);
    assert_eq!((answers[3].0, answers[3].1.as_str()), (200, "close"));
    assert!(h.http[v].closed);
}

/// Pipelining: a request sent while the one before it waits (parked) is read only once that one is
/// answered, and the answers come in order.
#[test]
fn a_request_sent_ahead_waits_for_the_answer_before_it() {
    let mut h = Harness::new(1, |_| {});
    let p = h.publisher(0, "pl");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    // The second request could be answered at once; it must wait behind the first.
    let v = h.http_request(
        0,
        "GET /live/pl/index.m3u8?session=ab HTTP/1.1\r\n\r\nOPTIONS /live/pl/index.m3u8 HTTP/1.1\r\n\r\n",
    );
    assert!(h.http[v].received.is_empty(), "nothing before the first answer");
    publish_gop(&mut h, p, 0);
    let answers = http_answers(&h.http[v].received);
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, vec![200, 204]);
    assert!(!h.http[v].closed);
    // Many small requests in one read are answered in turn (a loop, not a recursion per request).
    let many = "OPTIONS /live/pl/index.m3u8 HTTP/1.1\r\n\r\n".repeat(150);
    h.http_send(v, &many);
    assert_eq!(http_answers(&h.http[v].received).len(), 152);
    // More than a head's worth sent ahead while a request waits: that answer is the last.
    h.http_send(v, "GET /live/pl/seg-1.m4s?session=ab HTTP/1.1\r\n\r\n");
    let flood = format!("GET /live/pl/x.flv HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9_000));
    h.http_send(v, &flood);
    publish_gop(&mut h, p, 2_000);
    let answers = http_answers(&h.http[v].received);
    assert_eq!(answers.len(), 153);
    assert_eq!((answers[152].0, answers[152].1.as_str()), (200, "keep-alive"));
    assert!(h.http[v].closed, "closed after the answer the flood followed");
}

/// A kept-alive connection with no request for `egress.keepalive_idle_ms` after its last answer is closed
/// (a partial head does not keep it); the handshake timeout, meant for a connection's first request, does
/// not close it before.
#[test]
fn an_idle_kept_alive_connection_is_closed_after_keepalive_idle_ms() {
    let mut h = Harness::new(1, |c| {
        c.egress.keepalive_idle_ms = 1_000;
        c.rtmp.handshake_timeout_ms = 300;
    });
    let p = h.publisher(0, "idle");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    let v = h.http_request(0, "GET /live/idle/index.m3u8?session=ab HTTP/1.1\r\n\r\n");
    publish_gop(&mut h, p, 0);
    assert_eq!(http_answers(&h.http[v].received).len(), 1);
    h.advance(Duration::from_millis(600));
    assert!(
        !h.http[v].closed,
        "past the handshake timeout, within the idle one"
    );
    h.http_send(v, "GET /live/idle/seg-0.m4s HTT");
    h.advance(Duration::from_millis(500));
    assert!(h.http[v].closed, "idle for keepalive_idle_ms");
    assert_eq!(http_answers(&h.http[v].received).len(), 1);
    // A connection that never sends a request still meets the handshake timeout.
    let silent = h.http_request(0, "");
    h.advance(Duration::from_millis(400));
    assert!(h.http[silent].closed);
}

/// The bounds of keep-alive: at most `egress.keepalive_max_requests` requests per connection; HTTP/1.0 only
/// with `Connection: keep-alive`; `keepalive_idle_ms = 0` turns it off; a refused head closes.
#[test]
fn keep_alive_ends_at_the_request_bound_and_as_the_client_or_config_says() {
    let mut h = Harness::new(1, |c| c.egress.keepalive_max_requests = 2);
    let v = h.http_request(0, "OPTIONS /live/a/index.m3u8 HTTP/1.1\r\n\r\n");
    h.http_send(v, "OPTIONS /live/a/index.m3u8 HTTP/1.1\r\n\r\n");
    let connections: Vec<String> = http_answers(&h.http[v].received)
        .into_iter()
        .map(|a| a.1)
        .collect();
    assert_eq!(connections, vec!["keep-alive", "close"]);
    assert!(h.http[v].closed);
    let v = h.http_request(0, "GET /nowhere HTTP/1.0\r\n\r\n");
    assert_eq!(http_answers(&h.http[v].received)[0].0, 404);
    assert!(h.http[v].closed, "HTTP/1.0 closes by default");
    let v = h.http_request(0, "GET /nowhere HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(http_answers(&h.http[v].received)[0].1, "keep-alive");
    assert!(!h.http[v].closed);
    h.http_send(v, "\x03 not http\r\n\r\n");
    assert_eq!(http_answers(&h.http[v].received)[1].0, 400);
    assert!(h.http[v].closed, "a head that cannot be read ends the connection");
    let mut h = Harness::new(1, |c| c.egress.keepalive_idle_ms = 0);
    let v = h.http_request(0, "OPTIONS /live/a/index.m3u8 HTTP/1.1\r\n\r\n");
    assert_eq!(http_answers(&h.http[v].received)[0].1, "close");
    assert!(h.http[v].closed);
}

/// A connection that closes while its request waits is forgotten by the stream's owner at once, through
/// the owner's index (no scan of its streams): here and from another core.
#[test]
fn a_closed_connection_forgets_its_parked_request_on_the_owner() {
    let mut h = Harness::new(2, |_| {});
    let owner = h.owner("fg");
    let other = (owner + 1) % 2;
    let p = h.publisher(owner, "fg");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    let local = h.http_request(owner, "GET /live/fg/index.m3u8?session=a1 HTTP/1.1\r\n\r\n");
    let remote = h.http_request(other, "GET /live/fg/index.m3u8?session=a2 HTTP/1.1\r\n\r\n");
    let kept = h.http_request(other, "GET /live/fg/index.m3u8?session=a3 HTTP/1.1\r\n\r\n");
    assert_eq!(h.cores[owner].hls_parked_count(), (3, 3));
    let token = h.http[local].token;
    h.cores[owner].connection_lost(h.now, token, "test: peer gone");
    h.http[local].closed = true;
    assert_eq!(h.cores[owner].hls_parked_count(), (2, 2));
    let token = h.http[remote].token;
    h.cores[other].connection_lost(h.now, token, "test: peer gone");
    h.http[remote].closed = true;
    h.pump();
    assert_eq!(h.cores[owner].hls_parked_count(), (1, 1));
    publish_gop(&mut h, p, 0);
    assert_eq!(h.cores[owner].hls_parked_count(), (0, 0));
    assert_eq!(http_answers(&h.http[kept].received)[0].0, 200);
}

/// An owner's answer lost to the viewer's core's full inbox would leave the request waiting for ever (a
/// kept-alive connection too): once no parked request could still wait, the viewer's core answers `503`, and
/// the connection serves its next request.
#[test]
fn an_answer_lost_to_a_full_inbox_is_answered_503_when_it_cannot_come_any_more() {
    let mut h = Harness::new(2, |c| c.rtmp.play_wait_ms = 1_000);
    let owner = h.owner("lost");
    let other = (owner + 1) % 2;
    let p = h.publisher(owner, "lost");
    h.send_video(p, SEQ_HEADER, 0);
    h.send_video(p, KEYFRAME, 0);
    let v = h.http_request(other, "GET /live/lost/index.m3u8?session=ab HTTP/1.1\r\n\r\n");
    for t in 1..50 {
        h.send_video(p, INTER, t * 40);
    }
    // The closing keyframe reaches the owner while the viewer's core's inbox is full: the answer is lost.
    let result = h.clients[p]
        .session()
        .publish_video_data(Bytes::from_static(KEYFRAME), RtmpTimestamp::new(2_000), false)
        .unwrap();
    h.clients[p].apply(vec![result]);
    let filler = StreamKey::new("live", "filler").unwrap();
    while h.shared.mailboxes[other]
        .post(CoreMsg::StreamEnded { key: filler.clone() })
        .is_ok()
    {}
    let bytes = std::mem::take(&mut h.clients[p].outbox);
    let token = h.clients[p].token;
    h.cores[owner].input(h.now, token, &bytes);
    h.pump();
    assert!(h.http[v].received.is_empty(), "the answer was lost");
    // The longest wait: 3 x hls_target_ms (6 s) > play_wait_ms, plus a second's grace.
    h.advance(Duration::from_millis(6_900));
    assert!(h.http[v].received.is_empty(), "not before the longest wait");
    h.advance(Duration::from_millis(300));
    let answers = http_answers(&h.http[v].received);
    assert_eq!((answers.len(), answers[0].0), (1, 503));
    assert!(!h.http[v].closed);
    h.http_send(v, "GET /live/lost/index.m3u8?session=ab HTTP/1.1\r\n\r\n");
    let answers = http_answers(&h.http[v].received);
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[1].0, 200);
}
