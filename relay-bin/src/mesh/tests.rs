//! Several [`MeshCore`]s joined by links in virtual time: every message and frame takes the link's one-way
//! delay, a link can be cut and restored, a node can be cut off from everyone (killed) and come back. The
//! harness only moves what the cores ask to send; every decision is theirs.

use super::core::{BanRecord, MeshAction, MeshCore, MeshParams, PeerId};
use super::placement::{self, Origin};
use super::wire::{CloseReason, Control};
use crate::media::frame::{Frame, MediaKind, Track};
use crate::stream_key::StreamKey;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// One-way delay of every link.
const DELAY: Duration = Duration::from_millis(40);

enum Payload {
    Control(Control),
    Frame(u32, Frame),
}

struct InFlight {
    at: Instant,
    from: PeerId,
    to: PeerId,
    payload: Payload,
}

#[derive(Default)]
struct Seen {
    /// Frames delivered to local viewers, per stream: (dts, arrival).
    delivered: HashMap<String, Vec<(u64, Instant)>>,
    started: Vec<(String, PeerId, u8)>,
    ended: Vec<(String, CloseReason)>,
    bans: Vec<BanRecord>,
    /// Control messages received, by kind name.
    controls: Vec<String>,
    /// Per stream, in order: `None` when a new source started, else a delivered frame's (dts, keyframe).
    log: HashMap<String, Vec<Option<(u64, bool)>>>,
}

struct Net {
    t0: Instant,
    now: Instant,
    nodes: BTreeMap<PeerId, MeshCore>,
    up: HashSet<(PeerId, PeerId)>,
    wire: VecDeque<InFlight>,
    seen: HashMap<PeerId, Seen>,
}

fn pair(a: &str, b: &str) -> (PeerId, PeerId) {
    if a < b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

fn key(k: &str) -> StreamKey {
    StreamKey::parse(k).unwrap()
}

impl Net {
    /// Nodes `ids`, every app's origins `origins`, all links down.
    fn new(ids: &[&str], origins: &[&str]) -> Net {
        let t0 = Instant::now();
        let nodes = ids
            .iter()
            .map(|id| {
                let params = MeshParams {
                    me: id.to_string(),
                    origins: HashMap::new(),
                    default_origins: origins.iter().map(|o| Origin::new(*o)).collect(),
                    pull_grace: Duration::from_secs(5),
                    retry_after: Duration::from_millis(500),
                    max_streams: 1000,
                };
                (id.to_string(), MeshCore::new(params))
            })
            .collect();
        Net {
            t0,
            now: t0,
            nodes,
            up: HashSet::new(),
            wire: VecDeque::new(),
            seen: ids.iter().map(|id| (id.to_string(), Seen::default())).collect(),
        }
    }

    fn node(&mut self, id: &str) -> &mut MeshCore {
        self.nodes.get_mut(id).unwrap()
    }

    fn connect(&mut self, a: &str, b: &str) {
        self.up.insert(pair(a, b));
        let now = self.now;
        self.node(a).link_up(now, b);
        self.node(b).link_up(now, a);
        self.pump();
    }

    fn connect_all(&mut self) {
        let ids: Vec<PeerId> = self.nodes.keys().cloned().collect();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                self.connect(a, b);
            }
        }
    }

    fn cut(&mut self, a: &str, b: &str) {
        self.up.remove(&pair(a, b));
        // What was in flight on the link is lost with it.
        self.wire.retain(|m| pair(&m.from, &m.to) != pair(a, b));
        let now = self.now;
        self.node(a).link_down(now, b);
        self.node(b).link_down(now, a);
        self.pump();
    }

    /// Cuts every link of `id` (the node died, or lost its network).
    fn isolate(&mut self, id: &str) {
        let peers: Vec<PeerId> = self.nodes.keys().filter(|p| *p != id).cloned().collect();
        for p in peers {
            if self.up.contains(&pair(id, &p)) {
                self.cut(id, &p);
            }
        }
    }

    /// `id` crashes and starts again: cut off, its state lost but for its persisted bans, links down until
    /// they are restored.
    fn restart(&mut self, id: &str) {
        self.isolate(id);
        let old = self.nodes.remove(id).unwrap();
        let persisted: Vec<BanRecord> = old.bans().cloned().collect();
        let mut fresh = MeshCore::new(old.params().clone());
        fresh.restore_bans(persisted);
        self.nodes.insert(id.to_string(), fresh);
    }

    /// Moves every action of every node onto the wire or into `seen`.
    fn pump(&mut self) {
        let ids: Vec<PeerId> = self.nodes.keys().cloned().collect();
        for id in ids {
            while let Some(a) = self.nodes.get_mut(&id).and_then(MeshCore::poll_action) {
                let seen = self.seen.get_mut(&id).unwrap();
                let (to, payload) = match a {
                    MeshAction::Control { peer, msg } => (peer, Payload::Control(msg)),
                    MeshAction::Frame {
                        peer, stream, frame, ..
                    } => (peer, Payload::Frame(stream, frame)),
                    MeshAction::Deliver { key, frame } => {
                        seen.log
                            .entry(key.to_string())
                            .or_default()
                            .push(Some((frame.dts_ms, frame.kind == MediaKind::Key)));
                        seen.delivered
                            .entry(key.to_string())
                            .or_default()
                            .push((frame.dts_ms, self.now));
                        continue;
                    }
                    MeshAction::RemoteStarted { key, origin, hops } => {
                        seen.log.entry(key.to_string()).or_default().push(None);
                        seen.started.push((key.to_string(), origin, hops));
                        continue;
                    }
                    MeshAction::RemoteEnded { key, reason } => {
                        seen.ended.push((key.to_string(), reason));
                        continue;
                    }
                    MeshAction::Ban(b) => {
                        seen.bans.push(b);
                        continue;
                    }
                };
                if self.up.contains(&pair(&id, &to)) {
                    self.wire.push_back(InFlight {
                        at: self.now + DELAY,
                        from: id.clone(),
                        to,
                        payload,
                    });
                }
            }
        }
    }

    /// Advances virtual time to `until`, delivering what arrives and running timers, in order.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.pump();
            let next_msg = self.wire.iter().map(|m| m.at).min();
            let next_timer = self.nodes.values().filter_map(MeshCore::poll_timeout).min();
            let next = [next_msg, next_timer].into_iter().flatten().min();
            let Some(next) = next.filter(|&t| t <= until) else {
                self.now = until;
                return;
            };
            self.now = self.now.max(next);
            let now = self.now;
            let unix_ms = 1_800_000_000_000 + (now - self.t0).as_millis() as u64;
            // Every message due now, in the order sent.
            let mut due = Vec::new();
            let mut rest = VecDeque::new();
            for m in self.wire.drain(..) {
                if m.at <= now {
                    due.push(m);
                } else {
                    rest.push_back(m);
                }
            }
            self.wire = rest;
            for m in due {
                let node = self.nodes.get_mut(&m.to).unwrap();
                match m.payload {
                    Payload::Control(msg) => {
                        self.seen
                            .get_mut(&m.to)
                            .unwrap()
                            .controls
                            .push(control_name(&msg).into());
                        node.control(now, &m.from, msg);
                    }
                    Payload::Frame(stream, frame) => node.frame(&m.from, stream, frame),
                }
            }
            for node in self.nodes.values_mut() {
                node.tick(now, unix_ms);
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Publishes `k` at `at` and sends frames (one every 40 ms, a keyframe every 2 s) for `d`.
    fn stream_for(&mut self, at: &str, k: &str, first_dts: u64, d: Duration) -> u64 {
        let key = key(k);
        let mut dts = first_dts;
        let end = self.now + d;
        while self.now < end {
            let kind = if dts % 2000 == 0 {
                MediaKind::Key
            } else {
                MediaKind::Inter
            };
            let frame = Frame::new(
                kind,
                Track::Video,
                dts,
                dts,
                Bytes::from_static(b"frame"),
                self.now,
            );
            self.node(at).local_frame(&key, &frame);
            dts += 40;
            self.run_for(Duration::from_millis(40));
        }
        dts
    }

    fn delivered(&self, node: &str, k: &str) -> &[(u64, Instant)] {
        self.seen[node].delivered.get(k).map_or(&[], Vec::as_slice)
    }
}

fn control_name(c: &Control) -> &'static str {
    match c {
        Control::Hello { .. } => "hello",
        Control::Open { .. } => "open",
        Control::Close { .. } => "close",
        Control::Pull { .. } => "pull",
        Control::Unpull { .. } => "unpull",
        Control::NotFound { .. } => "notfound",
        Control::Ban { .. } => "ban",
    }
}

/// A key whose failover order over `origins` starts with `first` then `second`.
fn key_ranked(origins: &[&str], first: &str, second: &str) -> String {
    let os: Vec<Origin> = origins.iter().map(|o| Origin::new(*o)).collect();
    (0..10_000)
        .map(|i| format!("live/s{i}"))
        .find(|k| {
            let r = placement::rank(k, &os);
            r[0].id == first && r[1].id == second
        })
        .unwrap()
}

#[test]
fn a_stream_published_at_one_pop_reaches_viewers_at_another_through_its_home() {
    let mut net = Net::new(&["a", "b", "c"], &["b"]);
    net.connect_all();
    let k = "live/sale";
    let now = net.now;
    net.node("a").local_publish(now, &key(k));
    net.node("c").viewer_wants(now, &key(k));
    net.run_for(Duration::from_millis(200));
    net.stream_for("a", k, 0, Duration::from_secs(4));
    net.run_for(Duration::from_millis(200));
    // A pushed to its home B, C pulled from B: C got every frame, two hops from A, in order.
    let c = net.delivered("c", k);
    assert_eq!(c.len(), 100, "{}", c.len());
    assert!(c.windows(2).all(|w| w[0].0 < w[1].0), "in order");
    assert_eq!(
        net.seen["c"].started,
        vec![(k.to_string(), "a".to_string(), 2)],
        "published at A, two hops away"
    );
    assert_eq!(net.delivered("b", k).len(), 100, "the home has it too");
    assert!(
        net.delivered("a", k).is_empty(),
        "the publisher's PoP does not get its own stream back"
    );
}

#[test]
fn an_edge_stops_pulling_after_the_grace_period_and_a_returning_viewer_reuses_the_pull() {
    let mut net = Net::new(&["a", "b", "c"], &["b"]);
    net.connect_all();
    let k = "live/grace";
    let now = net.now;
    net.node("a").local_publish(now, &key(k));
    net.node("c").viewer_wants(now, &key(k));
    net.stream_for("a", k, 0, Duration::from_secs(1));
    let now = net.now;
    net.node("c").viewers_gone(now, &key(k));
    net.stream_for("a", k, 1000, Duration::from_secs(2));
    // Back within the grace period: no new pull.
    let now = net.now;
    net.node("c").viewer_wants(now, &key(k));
    let pulls = |n: &Net| n.seen["b"].controls.iter().filter(|c| *c == "pull").count();
    assert_eq!(pulls(&net), 1);
    net.stream_for("a", k, 3000, Duration::from_secs(1));
    let now = net.now;
    net.node("c").viewers_gone(now, &key(k));
    net.stream_for("a", k, 4000, Duration::from_secs(7));
    assert_eq!(pulls(&net), 1);
    assert!(
        net.seen["b"].controls.iter().any(|c| c == "unpull"),
        "the pull ended after the grace"
    );
    let got = net.delivered("c", k).len();
    net.stream_for("a", k, 11_000, Duration::from_secs(1));
    assert_eq!(net.delivered("c", k).len(), got, "nothing more reaches C");
}

#[test]
fn when_the_home_dies_the_stream_moves_to_the_next_origin_within_a_second() {
    let origins = ["b", "d"];
    let k = key_ranked(&origins, "b", "d");
    let mut net = Net::new(&["a", "b", "c", "d"], &origins);
    net.connect_all();
    let now = net.now;
    net.node("a").local_publish(now, &key(&k));
    net.node("c").viewer_wants(now, &key(&k));
    let dts = net.stream_for("a", &k, 0, Duration::from_secs(2));
    assert!(!net.delivered("c", &k).is_empty());
    let failed_at = net.now;
    net.isolate("b");
    let dts = net.stream_for("a", &k, dts, Duration::from_secs(2));
    // C resumed through D: the first frame after the failure arrived within a second of it.
    let after: Vec<&(u64, Instant)> = net
        .delivered("c", &k)
        .iter()
        .filter(|(_, t)| *t > failed_at)
        .collect();
    let first = after.first().expect("C resumed");
    let gap = first.1 - failed_at;
    assert!(gap < Duration::from_secs(1), "gap {gap:?}");
    assert!(net.seen["c"].ended.iter().any(|(_, r)| *r == CloseReason::Moved));
    assert_eq!(
        net.seen["c"].started.last().unwrap().1,
        "a",
        "origin stays the publisher's PoP"
    );
    // B comes back: it is home again; the stream moves back, and C keeps getting frames.
    net.connect_all();
    let before = net.delivered("c", &k).len();
    net.stream_for("a", &k, dts, Duration::from_secs(2));
    assert!(
        net.delivered("c", &k).len() >= before + 45,
        "C kept receiving after B returned"
    );
}

#[test]
fn a_push_the_next_home_refuses_before_it_sees_the_old_home_fail_is_tried_again() {
    // Found by the real-process failover test: A saw home B die first and pushed to D, which still saw B
    // up, refused the push (it was not the home yet) and never asked for it once it was; A did not try
    // again, as placement did not change again for A. The stream never came back.
    let origins = ["b", "d"];
    let k = key_ranked(&origins, "b", "d");
    let mut net = Net::new(&["a", "b", "c", "d"], &origins);
    net.connect_all();
    let now = net.now;
    net.node("a").local_publish(now, &key(&k));
    net.node("c").viewer_wants(now, &key(&k));
    let dts = net.stream_for("a", &k, 0, Duration::from_secs(1));
    // A sees B fail; D and C do not yet (their link timeouts have not fired).
    net.cut("a", "b");
    let dts = net.stream_for("a", &k, dts, Duration::from_millis(300));
    let got = net.delivered("c", &k).len();
    // Then they do.
    net.isolate("b");
    net.stream_for("a", &k, dts, Duration::from_secs(2));
    assert!(
        net.delivered("c", &k).len() > got + 20,
        "the stream reaches C again through D: {}",
        net.nodes["d"].describe(&key(&k))
    );
    assert_eq!(net.nodes["d"].source_of(&key(&k)), Some("a"));
}

#[test]
fn a_ban_on_any_node_reaches_every_node_and_stops_the_stream_everywhere() {
    let mut net = Net::new(&["a", "b", "c", "e"], &["b"]);
    net.connect_all();
    net.isolate("e"); // down while the ban is decided
    let k = "live/unlawful";
    let now = net.now;
    net.node("a").local_publish(now, &key(k));
    net.node("c").viewer_wants(now, &key(k));
    net.stream_for("a", k, 0, Duration::from_secs(1));
    let now = net.now;
    let ban = net
        .node("c")
        .forbid(now, &key(k), None, "unlawful content", "ops");
    net.run_for(DELAY * 2 + Duration::from_millis(50));
    // Every live node learnt it within one link delay (+ the flood's second hop at most).
    for n in ["a", "b"] {
        assert_eq!(net.seen[n].bans, vec![ban.clone()], "{n}");
        assert!(net.nodes[n].is_banned(k));
    }
    let got = net.delivered("c", k).len();
    net.stream_for("a", k, 1000, Duration::from_secs(1));
    assert_eq!(net.delivered("c", k).len(), got, "the stream stopped");
    assert!(net.seen["c"]
        .ended
        .iter()
        .any(|(_, r)| *r == CloseReason::Forbidden));
    // E was down: it learns the ban when its links come back.
    assert!(net.seen["e"].bans.is_empty());
    net.connect("e", "b");
    net.run_for(DELAY * 3);
    assert_eq!(net.seen["e"].bans, vec![ban.clone()]);
    // And a second ban from E is E's own, numbered from its wall clock (so a restarted E never reuses a
    // number its peers hold).
    let now = net.now;
    let second = net
        .node("e")
        .forbid(now, &key("live/other"), Some(1), "test", "ops");
    assert_eq!(second.origin.as_str(), "e");
    assert!(second.seq >= 1);
    net.run_for(DELAY * 3);
    assert_eq!(net.seen["b"].bans.len(), 2);
    // Each node forwards a ban once: the flood ends.
    let bans_received: usize = net
        .seen
        .values()
        .map(|s| s.controls.iter().filter(|c| *c == "ban").count())
        .sum();
    assert!(bans_received <= 4 * 3 * 2, "{bans_received}");
}

#[test]
fn a_lift_on_any_node_reaches_every_node_and_a_node_that_was_down_learns_it() {
    let mut net = Net::new(&["a", "b", "c", "d"], &["b"]);
    net.connect_all();
    let k = key("live/lifted");
    let now = net.now;
    net.node("c").forbid(now, &k, None, "mistake", "ops");
    net.run_for(DELAY * 3);
    for n in ["a", "b", "c", "d"] {
        assert!(net.nodes[n].is_banned(k.as_str()), "{n} holds the ban");
    }
    net.isolate("d"); // down while the ban is lifted
    net.run_for(DELAY); // later than the ban on every clock
    let now = net.now;
    let lift = net.node("a").unforbid(now, &k, "ops").expect("banned, so lifted");
    assert!(
        net.node("a").unforbid(now, &k, "ops").is_none(),
        "nothing left to lift"
    );
    net.run_for(DELAY * 3);
    for n in ["a", "b", "c"] {
        assert!(!net.nodes[n].is_banned(k.as_str()), "{n} lifted it");
    }
    assert!(net.nodes["d"].is_banned(k.as_str()));
    net.connect("d", "b");
    net.run_for(DELAY * 3);
    assert!(
        !net.nodes["d"].is_banned(k.as_str()),
        "d learnt the lift when it came back"
    );
    assert!(net.seen["d"].bans.contains(&lift));
    // A new ban after the lift stands again everywhere.
    net.connect_all();
    let now = net.now;
    net.node("d").forbid(now, &k, None, "again", "ops");
    net.run_for(DELAY * 3);
    for n in ["a", "b", "c", "d"] {
        assert!(net.nodes[n].is_banned(k.as_str()), "{n} holds the new ban");
    }
}

#[test]
fn a_lift_wins_over_the_ban_it_follows_even_from_a_node_whose_clock_is_behind() {
    let mut net = Net::new(&["a", "b", "c"], &["b"]);
    net.connect_all();
    let k = key("live/skewed");
    let now = net.now;
    let wall = 1_800_000_000_000 + (now - net.t0).as_millis() as u64;
    // C's clock runs a minute ahead of the others'.
    net.node("c").tick(now, wall + 60_000);
    let ban = net.node("c").forbid(now, &k, None, "unlawful", "ops");
    net.run_for(DELAY * 3);
    assert!(net.nodes["b"].is_banned(k.as_str()), "b holds the ban");
    // B lifts it a moment later by its own clock, which is behind the ban's number.
    let now = net.now;
    let lift = net.node("b").unforbid(now, &k, "ops").expect("banned, so lifted");
    assert!(
        lift.seq > ban.seq,
        "the lift ({}) is numbered after the ban it follows ({})",
        lift.seq,
        ban.seq
    );
    net.run_for(DELAY * 3);
    for n in ["a", "b", "c"] {
        assert!(!net.nodes[n].is_banned(k.as_str()), "{n} lifted it");
    }
}

#[test]
fn a_pull_for_a_stream_nobody_publishes_is_answered_and_retried() {
    let mut net = Net::new(&["b", "c"], &["b"]);
    net.connect_all();
    let k = "live/later";
    let now = net.now;
    net.node("c").viewer_wants(now, &key(k));
    net.run_for(Duration::from_secs(2));
    // The home waits for a push: no NotFound, no storm of pulls.
    assert_eq!(net.seen["b"].controls.iter().filter(|c| *c == "pull").count(), 1);
    let now = net.now;
    net.node("b").local_publish(now, &key(k));
    net.stream_for("b", k, 0, Duration::from_secs(1));
    assert_eq!(
        net.delivered("c", k).len(),
        25,
        "the waiting pull was served from the first frame"
    );
}

/// A hostile (or confused) peer cannot grow a node's state: pulls of streams nobody publishes at a node
/// that is not their home, and opens nobody asked for, leave nothing; pulls that wait at the home are
/// bounded by `max_streams` and counted.
#[test]
fn a_peer_flooding_pulls_and_opens_leaves_bounded_state() {
    let mut net = Net::new(&["b", "x"], &["b"]);
    net.connect_all();
    let now = net.now;
    for i in 0..5_000u32 {
        let key = format!("live/flood{i}");
        net.node("b")
            .control(now, "x", Control::Pull { key: key.clone() });
        net.node("x").control(
            now,
            "b",
            Control::Open {
                stream: i + 1,
                key,
                origin: "b".into(),
                hops: 0,
            },
        );
    }
    net.pump();
    // B is home to every key: it keeps the waiting pulls, up to its bound.
    assert_eq!(net.nodes["b"].stream_count(), 1000);
    assert_eq!(net.nodes["b"].stats().refused_over_max_streams, 4000);
    // X asked for nothing: every open is refused and nothing stays.
    assert_eq!(net.nodes["x"].stream_count(), 0);
    assert_eq!(net.nodes["x"].stats().refused_unasked_opens, 5000);
    // X is not home: its answers to pulls leave nothing either.
    let now = net.now;
    for i in 0..3_000u32 {
        net.node("x").control(
            now,
            "b",
            Control::Pull {
                key: format!("live/other{i}"),
            },
        );
    }
    assert_eq!(net.nodes["x"].stream_count(), 0);
}

/// A small deterministic generator for the scenario tests.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One random run: 5 nodes, 3 origins, 3 streams published at random nodes with viewers at others; 30 s of
/// links cut and restored and nodes cut off and back; a ban now and then; then everything heals for 6 s.
fn scenario(seed: u64) {
    let ids = ["a", "b", "c", "d", "e"];
    let mut rng = Lcg(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut net = Net::new(&ids, &["b", "c", "d"]);
    net.connect_all();
    let keys: Vec<String> = (0..3).map(|i| format!("live/s{seed}-{i}")).collect();
    let mut publishers = Vec::new();
    let mut viewers: HashSet<(String, &str)> = HashSet::new();
    let now = net.now;
    for k in &keys {
        let at = ids[rng.below(5) as usize];
        publishers.push(at);
        net.node(at).local_publish(now, &key(k));
        for _ in 0..2 {
            let v = ids[rng.below(5) as usize];
            if v != at {
                net.node(v).viewer_wants(now, &key(k));
                viewers.insert((k.clone(), v));
            }
        }
    }
    let mut banned: HashSet<String> = HashSet::new();
    let mut dts = 0u64;
    for tick in 0..(36_000 / 40) {
        let healing = tick >= 30_000 / 40;
        if healing && tick == 30_000 / 40 {
            net.connect_all();
        }
        if !healing && tick % 25 == 0 {
            let (x, y) = (ids[rng.below(5) as usize], ids[rng.below(5) as usize]);
            if x != y {
                if rng.chance(20) {
                    net.cut(x, y);
                } else if rng.chance(40) && !net.up.contains(&pair(x, y)) {
                    net.connect(x, y);
                }
            }
            if rng.chance(5) {
                net.isolate(x);
            }
            // A node with no publisher and no viewer (a home, a relay) restarts: its state is gone but for
            // the bans it persisted.
            let busy = publishers.contains(&x) || viewers.iter().any(|(_, v)| *v == x);
            if !busy && rng.chance(3) {
                net.restart(x);
            }
            if rng.chance(3) {
                let k = &keys[rng.below(3) as usize];
                let now = net.now;
                let by = ids[rng.below(5) as usize];
                if !net.nodes[by].is_banned(k) {
                    net.node(by).forbid(now, &key(k), None, "test", "ops");
                    banned.insert(k.clone());
                }
            }
        }
        let kind = if dts % 2000 == 0 {
            MediaKind::Key
        } else {
            MediaKind::Inter
        };
        for (k, at) in keys.iter().zip(&publishers) {
            if banned.contains(k) {
                continue;
            }
            let frame = Frame::new(kind, Track::Video, dts, dts, Bytes::from_static(b"f"), net.now);
            net.node(at).local_frame(&key(k), &frame);
        }
        dts += 40;
        net.run_for(Duration::from_millis(40));
    }
    let healed_at = net.t0 + Duration::from_secs(31);
    for id in ids {
        let seen = &net.seen[id];
        // Decodable: after a new source, and after any discontinuity, the next frame is a keyframe.
        for (k, log) in &seen.log {
            let mut prev: Option<u64> = None;
            for e in log {
                match *e {
                    None => prev = None,
                    Some((d, key)) => {
                        let continues = prev.is_some_and(|p| d == p + 40);
                        assert!(
                            continues || key,
                            "seed {seed}: {id} got {k} frame {d} after {prev:?} without a keyframe"
                        );
                        prev = Some(d);
                    }
                }
            }
        }
        // Every ban reached every node once the links healed.
        for k in &banned {
            assert!(
                net.nodes[id].is_banned(k),
                "seed {seed}: {id} never learnt the ban of {k}"
            );
        }
    }
    // Streams flow again once placement has settled: one home each, and every viewer gets frames.
    for (k, at) in keys.iter().zip(&publishers) {
        if banned.contains(k) {
            continue;
        }
        let home = net.nodes[*at].home_of(&key(k)).unwrap();
        for id in ids {
            assert_eq!(
                net.nodes[id].home_of(&key(k)).as_deref(),
                Some(home.as_str()),
                "seed {seed}"
            );
        }
        assert!(
            net.nodes[&home].source_of(&key(k)).is_some(),
            "seed {seed}: home {home} lacks {k}"
        );
        for id in ids {
            if !viewers.contains(&(k.clone(), id)) {
                continue;
            }
            let late = net
                .delivered(id, k)
                .iter()
                .filter(|(_, t)| *t > healed_at)
                .count();
            if late < 100 {
                let states: Vec<String> = ids
                    .iter()
                    .map(|n| format!("{n}: {}", net.nodes[*n].describe(&key(k))))
                    .collect();
                panic!(
                    "seed {seed}: {id} got {late} frames of {k} after healing (published at {at}, home {home})\n{}",
                    states.join("\n")
                );
            }
        }
    }
}

#[test]
fn many_seeds_of_failing_links_and_nodes_keep_every_viewer_decodable_and_every_ban_everywhere() {
    let seeds: u64 = std::env::var("MESH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let first: u64 = std::env::var("MESH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for seed in first..first + seeds {
        scenario(seed);
    }
}
