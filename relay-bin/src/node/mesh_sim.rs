//! The PoP mesh of whole nodes in virtual time: five nodes, each a sans-IO [`NodeCore`] with its
//! [`MeshNode`] and a real `transport::Endpoint` (handshakes, AEAD, congestion control, the frame scheduler),
//! joined pairwise by `transport::sim` links with delay and loss; RTMP publishers and players are rml_rtmp
//! client sessions on the nodes' cores. Links fail and heal, a node is killed and restarted, a stream is
//! forbidden on one node. Every seed asserts: every player's video is decodable (an inter frame only right
//! after its reference, never a timestamp going back), players get the stream again once the mesh heals,
//! the live nodes agree on the stream's home, and the ban reached every live node and stopped the stream.
//! `MESH_SIM_SEEDS` (default 10) and `MESH_SIM_SEED` (the first) run more seeds or replay one; a failure
//! names its seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Receiver;
use rml_rtmp::handshake::{Handshake, PeerType};
use rml_rtmp::sessions::{ClientSessionEvent, PublishRequestType};
use rml_rtmp::time::RtmpTimestamp;
use transport::crypto::StaticKeypair;
use transport::sim::{Link, LinkConfig, LossModel, Outage, SimRng};
use transport::Endpoint;

use super::core::test_client::{Client, INTER, KEYFRAME, SEQ_HEADER};
use super::core::NodeCore;
use super::mailbox::{CoreMsg, Mailbox};
use super::mesh_node::MeshNode;
use super::mesh_port::{MeshInput, MESH_CORE};
use super::shared::Shared;
use crate::bans::BanStore;
use crate::config::Config;
use crate::mesh::config::{MeshSetup, Peer};
use crate::mesh::core::MeshParams;
use crate::mesh::placement::Origin;
use crate::stream_key::StreamKey;

const STEP: Duration = Duration::from_millis(2);
const FRAME_EVERY: Duration = Duration::from_millis(40);
/// A keyframe every 25 frames (1 s).
const GOP: u64 = 25;
const RUN: Duration = Duration::from_secs(22);
/// Reconnecting (link timeout, redial backoff, handshake), re-placing and a keyframe take at most this long
/// once the failures end: players are checked from then on.
const SETTLE: Duration = Duration::from_secs(3);
/// Failures (link outages, the killed node) all end by then; the last seconds check that the mesh healed.
const HEALED_BY: Duration = Duration::from_secs(15);
const NODES: usize = 5;
/// The wall clock the nodes start at (handshake timestamps must grow across a node's restart).
const UNIX_START: Duration = Duration::from_secs(1_800_000_000);

/// A player's video: (timestamp, first body byte, second body byte) per message.
type Video = Vec<(u32, u8, u8)>;

/// What a client does once connected.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    Publish,
    Play,
}

struct SimClient {
    rtmp: Client,
    want: Want,
    stream: &'static str,
    /// 0: handshaking, 1: connect asked, 2: publish/play asked.
    stage: u8,
    /// Publisher: frames sent so far.
    sent: u64,
    /// Player: which run of the node it watched (a restarted node's players are new clients).
    label: String,
}

/// A node while it runs.
struct Live {
    shared: Arc<Shared>,
    core: NodeCore,
    inbox: Receiver<CoreMsg>,
    mesh: MeshNode,
    endpoint: Endpoint,
    clients: Vec<SimClient>,
    next_peer_port: u16,
}

struct SimNode {
    id: String,
    keypair: StaticKeypair,
    addr: SocketAddr,
    live: Option<Live>,
    runs: u32,
}

struct Sim {
    t0: Instant,
    now: Instant,
    nodes: Vec<SimNode>,
    /// Directed links: (from, to).
    links: HashMap<(usize, usize), Link<(SocketAddr, BytesMut)>>,
    buf: Vec<u8>,
    /// Finished players' video: label -> (timestamp, keyframe, sequence header) in arrival order.
    finished: Vec<(String, Video)>,
}

fn setup_of(nodes: &[SimNode], me: usize) -> MeshSetup {
    let origins: Vec<Origin> = nodes.iter().map(|n| Origin::new(n.id.clone())).collect();
    MeshSetup {
        listen: nodes[me].addr,
        keypair: nodes[me].keypair.clone(),
        peers: nodes
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != me)
            .map(|(_, n)| Peer {
                id: n.id.clone(),
                addr: n.addr,
                public_key: n.keypair.public,
            })
            .collect(),
        params: MeshParams {
            me: nodes[me].id.clone(),
            origins: HashMap::new(),
            default_origins: origins,
            pull_grace: Duration::from_secs(2),
            retry_after: Duration::from_millis(500),
            max_streams: 1000,
        },
        frame_budget: Duration::from_secs(1),
        link_timeout: Duration::from_millis(800),
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let t0 = Instant::now();
        let mut rng = SimRng::new(seed);
        let nodes: Vec<SimNode> = (0..NODES)
            .map(|i| {
                // Every byte drawn: X25519 clamps the low bits of the first one, so keys that differ only
                // there would be one key.
                let mut private = [0u8; 32];
                for chunk in private.chunks_mut(8) {
                    chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
                }
                SimNode {
                    id: format!("n{i}"),
                    keypair: StaticKeypair::from_private(private).unwrap(),
                    addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 4433)),
                    live: None,
                    runs: 0,
                }
            })
            .collect();
        let mut links = HashMap::new();
        for a in 0..NODES {
            for b in a + 1..NODES {
                let delay = Duration::from_millis(5 + rng.below(40));
                let loss = rng.next_f64() * 0.02;
                let mut outages = Vec::new();
                if rng.chance(0.3) {
                    outages.push(Outage {
                        start: Duration::from_millis(3_000 + rng.below(8_000)),
                        duration: Duration::from_millis(300 + rng.below(2_700)),
                    });
                }
                for (from, to) in [(a, b), (b, a)] {
                    let config = LinkConfig {
                        delay,
                        loss: LossModel::Bernoulli { p: loss },
                        outages: outages.clone(),
                        ..LinkConfig::default()
                    };
                    links.insert((from, to), Link::new(config, rng.next_u64(), t0));
                }
            }
        }
        let mut sim = Sim {
            t0,
            now: t0,
            nodes,
            links,
            buf: Vec::with_capacity(64 * 1024),
            finished: Vec::new(),
        };
        for i in 0..NODES {
            sim.start_node(i);
        }
        sim
    }

    fn start_node(&mut self, i: usize) {
        let mut config = Config::default();
        config.rtmp.write_coalesce_ms = 0;
        config.mesh.id = self.nodes[i].id.clone();
        let bans = Arc::new(BanStore::open(None).unwrap());
        let waker = Arc::new(engine::Waker::new().unwrap());
        let (mailbox, inbox) = Mailbox::new(65_536, waker);
        let mut shared = Shared::new(config, bans, vec![mailbox]);
        shared.mesh_core = Some(MESH_CORE);
        let shared = Arc::new(shared);
        let setup = setup_of(&self.nodes, i);
        let mut endpoint = Endpoint::new(MeshNode::endpoint_config(&setup), self.now).unwrap();
        endpoint.set_unix_time(self.now, UNIX_START + (self.now - self.t0));
        let node = &mut self.nodes[i];
        node.runs += 1;
        node.live = Some(Live {
            core: NodeCore::new(0, shared.clone(), self.now),
            mesh: MeshNode::new(shared.clone(), setup, self.now),
            shared,
            inbox,
            endpoint,
            clients: Vec::new(),
            next_peer_port: 40_000,
        });
    }

    fn kill(&mut self, i: usize) {
        if let Some(live) = self.nodes[i].live.take() {
            for c in live.clients {
                if c.want == Want::Play {
                    self.finished.push((c.label, video_of(&c.rtmp)));
                }
            }
        }
    }

    fn add_client(&mut self, i: usize, want: Want, stream: &'static str) {
        let now = self.now;
        let runs = self.nodes[i].runs;
        let id = self.nodes[i].id.clone();
        let live = self.nodes[i].live.as_mut().unwrap();
        let peer = SocketAddr::from(([192, 0, 2, 1], live.next_peer_port));
        live.next_peer_port += 1;
        let token = live.core.accept(now, peer).unwrap();
        let mut handshake = Handshake::new(PeerType::Client);
        let outbox = handshake.generate_outbound_p0_and_p1().unwrap();
        let index = live.clients.len();
        live.clients.push(SimClient {
            rtmp: Client {
                core: 0,
                token,
                handshake: Some(handshake),
                session: None,
                events: Vec::new(),
                outbox,
                closed: false,
                reading: true,
            },
            want,
            stream,
            stage: 0,
            sent: 0,
            label: format!("{id} run {runs} client {index} ({want:?} {stream})"),
        });
    }

    /// One step of every live node.
    fn step(&mut self) {
        let now = self.now;
        let unix_ms = (UNIX_START + (now - self.t0)).as_millis() as u64;
        // Datagrams due at each live node.
        let mut arrivals: Vec<(usize, SocketAddr, BytesMut)> = Vec::new();
        for (&(_, to), link) in self.links.iter_mut() {
            while let Some((_, (from, bytes))) = link.deliver(now) {
                arrivals.push((to, from, bytes));
            }
        }
        for (to, from, bytes) in arrivals {
            let _span = tracing::info_span!("node", id = %self.nodes[to].id).entered();
            if let Some(live) = self.nodes[to].live.as_mut() {
                live.endpoint.handle_datagram(now, from, bytes);
            }
        }
        for i in 0..NODES {
            let _span = tracing::info_span!("node", id = %self.nodes[i].id).entered();
            let Some(live) = self.nodes[i].live.as_mut() else {
                continue;
            };
            if live.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                live.endpoint.handle_timeout(now);
            }
            live.core.tick(now);
            pump(live, now);
            live.mesh.run(now, unix_ms, &mut live.endpoint, &mut live.core);
            pump(live, now);
            drive_clients(live, now, self.t0);
            pump(live, now);
            live.mesh.run(now, unix_ms, &mut live.endpoint, &mut live.core);
            // What the endpoint sends goes on the links.
            let from = self.nodes[i].addr;
            let addrs: Vec<SocketAddr> = self.nodes.iter().map(|n| n.addr).collect();
            let live = self.nodes[i].live.as_mut().unwrap();
            loop {
                self.buf.clear();
                let Some(transmit) = live.endpoint.poll_transmit(now, &mut self.buf) else {
                    break;
                };
                let Some(to) = addrs.iter().position(|&a| a == transmit.destination) else {
                    continue;
                };
                if let Some(link) = self.links.get_mut(&(i, to)) {
                    let bytes = BytesMut::from(&self.buf[..transmit.size]);
                    link.send(now, transmit.size, (from, bytes));
                }
            }
        }
        self.now += STEP;
    }

    fn run_until(&mut self, at: Duration) {
        while self.now - self.t0 < at {
            self.step();
        }
    }

    fn live(&mut self, i: usize) -> &mut Live {
        self.nodes[i].live.as_mut().unwrap()
    }
}

/// Moves messages and bytes within a node until nothing moves.
fn pump(live: &mut Live, now: Instant) {
    for _ in 0..100 {
        let mut moved = false;
        while let Ok(message) = live.inbox.try_recv() {
            live.core.message(now, message);
            moved = true;
        }
        for c in live
            .clients
            .iter_mut()
            .filter(|c| !c.rtmp.closed && !c.rtmp.outbox.is_empty())
        {
            let bytes = std::mem::take(&mut c.rtmp.outbox);
            live.core.input(now, c.rtmp.token, &bytes);
            moved = true;
        }
        let mut tokens = Vec::new();
        live.core.take_due_writes(now, &mut tokens);
        for token in tokens {
            let mut wire = Vec::new();
            live.core.write_client(now, token, &mut wire);
            if let Some(c) = live
                .clients
                .iter_mut()
                .find(|c| c.rtmp.token == token && !c.rtmp.closed)
            {
                if !wire.is_empty() {
                    c.rtmp.receive(&wire);
                    moved = true;
                }
            }
        }
        let mut closed = Vec::new();
        live.core.take_closed(&mut closed);
        for (token, _) in closed {
            if let Some(c) = live
                .clients
                .iter_mut()
                .find(|c| c.rtmp.token == token && !c.rtmp.closed)
            {
                c.rtmp.closed = true;
                moved = true;
            }
        }
        live.core.take_wakes(|_| {});
        if !moved {
            return;
        }
    }
}

/// Moves each client along: connect, publish or play, and a publisher's frames on their schedule.
fn drive_clients(live: &mut Live, now: Instant, t0: Instant) {
    for c in live.clients.iter_mut().filter(|c| !c.rtmp.closed) {
        if c.rtmp.session.is_none() {
            continue;
        }
        if c.stage == 0 {
            let r = c.rtmp.session().request_connection("live".into()).unwrap();
            c.rtmp.apply(vec![r]);
            c.stage = 1;
        } else if c.stage == 1
            && c.rtmp
                .saw(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))
        {
            let r = match c.want {
                Want::Publish => c
                    .rtmp
                    .session()
                    .request_publishing(c.stream.into(), PublishRequestType::Live),
                Want::Play => c.rtmp.session().request_playback(c.stream.into()),
            }
            .unwrap();
            c.rtmp.apply(vec![r]);
            c.stage = 2;
        } else if c.stage == 2
            && c.want == Want::Publish
            && c.rtmp
                .saw(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
        {
            // Frames on the wall clock of the run: frame n at n * 40 ms (from the first one).
            let due = (now - t0).as_millis() as u64 / FRAME_EVERY.as_millis() as u64;
            while c.sent <= due {
                let n = c.sent;
                let (body, ts): (&'static [u8], u64) = if n == 0 {
                    (SEQ_HEADER, 0)
                } else if (n - 1) % GOP == 0 {
                    (KEYFRAME, (n - 1) * 40)
                } else {
                    (INTER, (n - 1) * 40)
                };
                let r = c
                    .rtmp
                    .session()
                    .publish_video_data(Bytes::from_static(body), RtmpTimestamp::new(ts as u32), false)
                    .unwrap();
                c.rtmp.apply(vec![r]);
                c.sent += 1;
            }
        }
    }
}

/// A player's video: (timestamp, first body byte, second body byte) per message.
fn video_of(client: &Client) -> Vec<(u32, u8, u8)> {
    client
        .events
        .iter()
        .filter_map(|e| match e {
            ClientSessionEvent::VideoDataReceived { data, timestamp } => Some((
                timestamp.value,
                data.first().copied().unwrap_or(0),
                data.get(1).copied().unwrap_or(0),
            )),
            _ => None,
        })
        .collect()
}

/// Every frame decodable: a picture (not a sequence header) that is an inter frame comes right after its
/// reference (the picture 40 ms before); a keyframe may follow any gap; timestamps never go back.
fn check_decodable(seed: u64, label: &str, video: &[(u32, u8, u8)]) {
    let mut last: Option<u32> = None;
    for &(ts, first, second) in video {
        if second == 0 {
            continue; // a sequence header
        }
        let key = first >> 4 == 1;
        if let Some(prev) = last {
            assert!(ts > prev, "seed {seed}: {label}: timestamp {ts} after {prev}");
            assert!(
                key || ts == prev + 40,
                "seed {seed}: {label}: inter frame at {ts} after {prev}: its reference was lost"
            );
        } else {
            assert!(
                key,
                "seed {seed}: {label}: the first picture at {ts} is not a keyframe"
            );
        }
        last = Some(ts);
    }
}

fn scenario(seed: u64) {
    let mut sim = Sim::new(seed);
    let mut rng = SimRng::new(seed ^ 0x5eed);
    let publisher_node = rng.below(NODES as u64) as usize;
    let others: Vec<usize> = (0..NODES).filter(|&n| n != publisher_node).collect();
    let viewer_nodes = [others[rng.below(4) as usize], others[rng.below(4) as usize]];
    let victim = others[rng.below(4) as usize];
    let kill_at = Duration::from_millis(4_000 + rng.below(5_000));
    let restart_at = kill_at + Duration::from_millis(1_000 + rng.below(4_000));
    let bad_publisher = others[rng.below(4) as usize];
    let bad_viewer = rng.below(NODES as u64) as usize;
    let forbid_at_node = rng.below(NODES as u64) as usize;

    sim.run_until(Duration::from_millis(500));
    sim.add_client(publisher_node, Want::Publish, "good");
    for &v in &viewer_nodes {
        sim.add_client(v, Want::Play, "good");
    }
    sim.run_until(Duration::from_millis(1_500));
    if bad_publisher != victim && bad_viewer != victim {
        sim.add_client(bad_publisher, Want::Publish, "bad");
        sim.add_client(bad_viewer, Want::Play, "bad");
    }
    sim.run_until(kill_at);
    sim.kill(victim);
    sim.run_until(restart_at.min(HEALED_BY - Duration::from_secs(1)));
    sim.start_node(victim);
    if viewer_nodes.contains(&victim) {
        sim.add_client(victim, Want::Play, "good");
    }
    sim.run_until(HEALED_BY);
    // Forbid `live/bad` on one node (as the admin API does: ban, kick here, tell the mesh).
    let bad = StreamKey::parse("live/bad").unwrap();
    let now = sim.now;
    {
        let live = sim.live(forbid_at_node);
        live.shared.bans.forbid(bad.clone(), None, "sim".into()).unwrap();
        let (reply, _answer) = crossbeam_channel::bounded(1);
        live.core.message(
            now,
            CoreMsg::KickStream {
                key: bad.clone(),
                reply,
            },
        );
        live.core.message(
            now,
            CoreMsg::Mesh(MeshInput::Forbid {
                key: bad.clone(),
                until_unix_ms: None,
                reason: "sim".into(),
            }),
        );
    }
    sim.run_until(HEALED_BY + SETTLE);
    let frames_at_heal: Vec<(String, usize)> = viewers(&sim)
        .into_iter()
        .map(|(label, video)| (label, video.len()))
        .collect();
    sim.run_until(RUN);

    let describe = |sim: &Sim| -> String {
        sim.nodes
            .iter()
            .filter_map(|n| n.live.as_ref().map(|l| (n, l)))
            .map(|(n, l)| {
                let clients: Vec<String> = l
                    .clients
                    .iter()
                    .map(|c| {
                        format!(
                            "{} stage {} closed {} events {}",
                            c.label,
                            c.stage,
                            c.rtmp.closed,
                            c.rtmp.events.len()
                        )
                    })
                    .collect();
                format!(
                    "{}: {}; clients {clients:?}",
                    n.id,
                    l.mesh.mesh().describe(&StreamKey::parse("live/good").unwrap())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Decodable, for every player that ever ran.
    for (label, video) in viewers(&sim).into_iter().chain(sim.finished.clone()) {
        check_decodable(seed, &label, &video);
    }
    // Healed: every player of the good stream gets it (at least 75 of the 100 frames of the last 4 s).
    for (label, video) in viewers(&sim) {
        if !label.contains("good") {
            continue;
        }
        let before = frames_at_heal
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(0, |(_, n)| *n);
        assert!(
            video.len() >= before + 75,
            "seed {seed}: {label} got {} frames after the mesh healed (publisher at n{publisher_node}, victim \
             n{victim}; timestamps after the heal {:?})\n{}",
            video.len() - before.min(video.len()),
            video.get(before..).map(|v| v.iter().map(|f| f.0).collect::<Vec<_>>()),
            describe(&sim)
        );
    }
    // One home, agreed by every live node.
    let good = StreamKey::parse("live/good").unwrap();
    let homes: Vec<Option<String>> = sim
        .nodes
        .iter()
        .filter_map(|n| n.live.as_ref())
        .map(|l| l.mesh.mesh().home_of(&good))
        .collect();
    assert!(
        homes.windows(2).all(|w| w[0] == w[1]) && homes[0].is_some(),
        "seed {seed}: homes {homes:?}"
    );
    // The ban reached every live node and stopped the stream there.
    for node in &sim.nodes {
        let live = node.live.as_ref().unwrap();
        assert!(
            live.shared.bans.check(&bad).is_some(),
            "seed {seed}: {} does not hold the ban decided on n{forbid_at_node}",
            node.id
        );
        for c in live.clients.iter().filter(|c| c.stream == "bad") {
            assert!(
                c.rtmp.closed,
                "seed {seed}: {} still open on {}",
                c.label, node.id
            );
        }
    }
}

/// The players now running, with their video so far.
fn viewers(sim: &Sim) -> Vec<(String, Video)> {
    sim.nodes
        .iter()
        .filter_map(|n| n.live.as_ref())
        .flat_map(|l| l.clients.iter())
        .filter(|c| c.want == Want::Play)
        .map(|c| (c.label.clone(), video_of(&c.rtmp)))
        .collect()
}

#[test]
fn five_nodes_with_failing_links_and_a_restarted_node_keep_players_decodable_and_bans_everywhere() {
    let seeds: u64 = std::env::var("MESH_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let first: u64 = std::env::var("MESH_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    if let Ok(filter) = std::env::var("MESH_SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    for seed in first..first + seeds {
        let started = std::time::Instant::now();
        scenario(seed);
        println!("seed {seed}: ok in {:?}", started.elapsed());
    }
}
