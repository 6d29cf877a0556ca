//! Endpoint-level behaviour over the simulated network: handshake, authentication, address validation,
//! amplification, bad input, replay, key rotation, and frames of every size arriving intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use transport::crypto::StaticKeypair;
use transport::sim::{Link, LinkConfig, LossModel};
use transport::{Endpoint, EndpointConfig, Event, MediaFrame, MediaKind, StreamId};

/// Two endpoints joined by a pair of links, driven in virtual time.
struct Pair {
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    ab: Link<BytesMut>,
    ba: Link<BytesMut>,
    buf: Vec<u8>,
    /// Every datagram b sent to a, in bytes, and every one a sent to b.
    b_sent_bytes: u64,
    a_sent_bytes: u64,
    a_events: Vec<Event>,
    b_events: Vec<Event>,
    /// b's connection, once it reported one.
    b_conn: Option<transport::ConnectionHandle>,
    /// Copies of datagrams a sent, for replay tests.
    a_sent: Vec<Vec<u8>>,
    /// When set, a's datagrams are appended one after another to this buffer (as a driver builds a GSO
    /// batch) with `poll_transmit_append`, after a marker that must stay as it is.
    a_batch: Option<Vec<u8>>,
}

/// What `Pair::a_batch` starts with.
const BATCH_MARKER: &[u8] = b"earlier datagrams of the batch";

impl Pair {
    fn new(a_cfg: EndpointConfig, b_cfg: EndpointConfig, link: LinkConfig) -> Self {
        let now = Instant::now();
        Pair {
            now,
            a: Endpoint::new(a_cfg, now).unwrap(),
            b: Endpoint::new(b_cfg, now).unwrap(),
            a_addr: "127.0.0.1:4000".parse().unwrap(),
            b_addr: "127.0.0.2:5000".parse().unwrap(),
            ab: Link::new(link.clone(), 7, now),
            ba: Link::new(link, 8, now),
            buf: Vec::new(),
            b_sent_bytes: 0,
            a_sent_bytes: 0,
            a_events: Vec::new(),
            b_events: Vec::new(),
            b_conn: None,
            a_sent: Vec::new(),
            a_batch: None,
        }
    }

    fn step(&mut self) -> bool {
        let now = self.now;
        if let Some(batch) = self.a_batch.as_mut() {
            while let Some(t) = self.a.poll_transmit_append(now, batch) {
                assert!(batch.starts_with(BATCH_MARKER), "what was in the buffer stays");
                let datagram = &batch[batch.len() - t.size..];
                self.a_sent_bytes += t.size as u64;
                self.a_sent.push(datagram.to_vec());
                self.ab.send(now, t.size, BytesMut::from(datagram));
            }
            let before = batch.len();
            assert!(self.a.poll_transmit_append(now, batch).is_none());
            assert_eq!(batch.len(), before, "nothing appended when nothing is ready");
        }
        while let Some(t) = self.a.poll_transmit(now, &mut self.buf) {
            self.a_sent_bytes += t.size as u64;
            self.a_sent.push(self.buf.clone());
            self.ab.send(now, t.size, BytesMut::from(&self.buf[..]));
        }
        while let Some(t) = self.b.poll_transmit(now, &mut self.buf) {
            self.b_sent_bytes += t.size as u64;
            self.ba.send(now, t.size, BytesMut::from(&self.buf[..]));
        }
        while let Some((_, e)) = self.a.poll_event() {
            self.a_events.push(e);
        }
        while let Some((h, e)) = self.b.poll_event() {
            if matches!(e, Event::Connected { .. }) {
                self.b_conn = Some(h);
            }
            self.b_events.push(e);
        }
        let next = [
            self.ab.next_delivery(),
            self.ba.next_delivery(),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = next.max(now + Duration::from_micros(1));
        let now = self.now;
        while let Some((_, d)) = self.ab.deliver(now) {
            self.b.handle_datagram(now, self.a_addr, d);
        }
        while let Some((_, d)) = self.ba.deliver(now) {
            self.a.handle_datagram(now, self.b_addr, d);
        }
        self.a.handle_timeout(now);
        self.b.handle_timeout(now);
        true
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end && self.step() {}
    }

    fn connected(events: &[Event]) -> bool {
        events.iter().any(|e| matches!(e, Event::Connected { .. }))
    }

    fn frames(events: &[Event]) -> Vec<(u64, Bytes)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(f) => Some((f.seq, f.bytes.clone())),
                _ => None,
            })
            .collect()
    }
}

fn configs() -> (EndpointConfig, EndpointConfig, [u8; 32]) {
    let a = StaticKeypair::generate().unwrap();
    let b = StaticKeypair::generate().unwrap();
    let b_pub = b.public;
    let mut b_cfg = EndpointConfig::new(b);
    b_cfg.authorized_peers = vec![a.public];
    let mut a_cfg = EndpointConfig::new(a);
    a_cfg.accept_incoming = false;
    (a_cfg, b_cfg, b_pub)
}

fn link(rtt_ms: u64) -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(rtt_ms / 2),
        ..LinkConfig::default()
    }
}

#[test]
fn handshake_completes_with_a_cookie_round_trip_and_mutual_authentication() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let a_pub = a_cfg.keypair.public;
    let mut p = Pair::new(a_cfg, b_cfg, link(100));
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(450));
    assert!(Pair::connected(&p.a_events), "client connected");
    assert!(p
        .b_events
        .iter()
        .any(|e| matches!(e, Event::Connected { peer_static } if *peer_static == a_pub)));
    assert_eq!(p.b.stats().retries_sent, 1, "the server demanded a cookie first");
    assert_eq!(p.b.stats().accepted, 1);
    // Amplification: before the client proved its address, the server answered with far less than 3x.
    assert!(p.b_sent_bytes < 3 * p.a_sent_bytes);
    p.a.send_frame(ch, StreamId(0), frame(MediaKind::Key, 5000))
        .unwrap();
    p.run_for(Duration::from_millis(300));
    assert_eq!(Pair::frames(&p.b_events).len(), 1);
}

#[test]
fn a_wrong_server_key_or_an_unauthorized_client_never_connects() {
    let (a_cfg, b_cfg, _) = configs();
    let impostor = StaticKeypair::generate().unwrap().public;
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    p.a.connect(p.now, p.b_addr, impostor).unwrap();
    p.run_for(Duration::from_secs(5));
    assert!(!Pair::connected(&p.a_events));
    assert!(p.b.stats().refused_initials >= 1);
    assert_eq!(
        p.b.connection_count(),
        0,
        "no server state for a failed handshake"
    );

    let (a_cfg, mut b_cfg, b_pub) = configs();
    b_cfg.authorized_peers = vec![StaticKeypair::generate().unwrap().public];
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_secs(1));
    assert!(!Pair::connected(&p.a_events));
    assert_eq!(p.b.connection_count(), 0);
}

/// A server accepts only the peers it was told about: by default (no list, no PSK) nobody, counted; a listed
/// key, a shared PSK or an explicit `accept_any_peer` lets the client in.
#[test]
fn an_unlisted_peer_is_refused_by_default_and_counted() {
    let run = |b_cfg: EndpointConfig, a_cfg: EndpointConfig, b_pub| {
        let mut p = Pair::new(a_cfg, b_cfg, link(20));
        p.a.connect(p.now, p.b_addr, b_pub).unwrap();
        p.run_for(Duration::from_secs(1));
        (Pair::connected(&p.a_events), p.b.connection_count(), p.b.stats())
    };
    // Default config: nobody is authorized.
    let (a_cfg, _, _) = configs();
    let b = StaticKeypair::generate().unwrap();
    let b_pub = b.public;
    let (connected, conns, st) = run(EndpointConfig::new(b.clone()), a_cfg, b_pub);
    assert!(!connected, "an unlisted client must not connect by default");
    assert_eq!(conns, 0);
    assert!(st.unauthorized_peers >= 1, "{st:?}");
    // Explicit open acceptance.
    let (a_cfg, _, _) = configs();
    let mut open = EndpointConfig::new(b.clone());
    open.accept_any_peer = true;
    assert!(run(open, a_cfg, b_pub).0);
    // A PSK authorizes whoever knows it.
    let (mut a_cfg, _, _) = configs();
    a_cfg.psk = Some([5; 32]);
    let mut psk = EndpointConfig::new(b);
    psk.psk = Some([5; 32]);
    assert!(run(psk, a_cfg, b_pub).0);
}

/// A message 1 replayed from elsewhere (within a cookie's life, or with no cookie demanded) must not make the
/// server report a peer: the server reports Connected only on the client's first authenticated packet, and
/// refuses a message 1 whose timestamp is not later than the last one it accepted from that key.
#[test]
fn a_replayed_first_handshake_message_creates_no_peer() {
    let (a_cfg, mut b_cfg, b_pub) = configs();
    b_cfg.require_cookie = false;
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(300));
    let connected = |e: &[Event]| e.iter().filter(|e| matches!(e, Event::Connected { .. })).count();
    assert_eq!(connected(&p.b_events), 1);
    let initial = p.a_sent.first().cloned().unwrap();
    // The attacker replays it from its own address, with a connection id of its own.
    let mut replay = initial.clone();
    replay[10..18].copy_from_slice(&777u64.to_be_bytes());
    let attacker: SocketAddr = "127.0.0.66:6666".parse().unwrap();
    let now = p.now;
    p.b.handle_datagram(now, attacker, BytesMut::from(&replay[..]));
    p.b.handle_datagram(now, attacker, BytesMut::from(&initial[..]));
    p.run_for(Duration::from_millis(300));
    assert_eq!(connected(&p.b_events), 1, "a replayed message 1 made a peer");
    assert_eq!(
        p.b.connection_count(),
        1,
        "a replayed message 1 made server state"
    );
    assert_eq!(p.b.stats().replayed_initials, 2);
}

#[test]
fn a_wrong_psk_is_refused() {
    let (mut a_cfg, mut b_cfg, b_pub) = configs();
    a_cfg.psk = Some([1; 32]);
    b_cfg.psk = Some([2; 32]);
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_secs(1));
    assert!(!Pair::connected(&p.a_events));
}

#[test]
fn a_forged_handshake_reply_does_not_stop_the_client_from_connecting() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let mut p = Pair::new(a_cfg, b_cfg, link(100));
    p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.step(); // the first Initial leaves
              // The client's connection id is in clear in its Initial (long header: type, version, dst, src).
    let initial = p.a_sent.first().cloned().unwrap();
    let client_cid = u64::from_be_bytes(initial[10..18].try_into().unwrap());
    let mut forged = Vec::new();
    transport::wire::packet::write_handshake(&mut forged, client_cid, 99, &[0x42; 80]);
    let now = p.now;
    p.a.handle_datagram(now, p.b_addr, BytesMut::from(&forged[..]));
    p.run_for(Duration::from_secs(3));
    assert!(
        Pair::connected(&p.a_events),
        "the client still connects after a forged reply"
    );
}

fn frame(kind: MediaKind, len: usize) -> MediaFrame {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    MediaFrame {
        kind,
        bytes: Bytes::from(bytes),
        capture: Instant::now(),
        budget: None,
    }
}

#[test]
fn garbage_forged_and_replayed_datagrams_are_counted_and_harmless() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(200));
    assert!(Pair::connected(&p.a_events));
    for i in 0..50u64 {
        p.a.send_frame(ch, StreamId(3), frame(MediaKind::Key, 3000 + i as usize))
            .unwrap();
    }
    p.run_for(Duration::from_millis(100));
    let now = p.now;
    let attacker: SocketAddr = "127.0.0.9:6666".parse().unwrap();
    let mut rng = transport::sim::SimRng::new(99);
    for len in [0usize, 1, 5, 17, 18, 40, 1199, 1200, 1400, 9000] {
        let junk: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        p.b.handle_datagram(now, attacker, BytesMut::from(&junk[..]));
        // Junk that looks like a data packet for the live connection: fails authentication.
        let mut forged = p.a_sent.last().cloned().unwrap();
        let last = forged.len() - 1;
        forged[last] ^= 0x55;
        p.b.handle_datagram(now, attacker, BytesMut::from(&forged[..]));
    }
    // Replays of everything the client sent.
    let sent = p.a_sent.clone();
    for d in &sent {
        p.b.handle_datagram(now, p.a_addr, BytesMut::from(&d[..]));
    }
    let st = p.b.stats();
    assert!(st.malformed + st.unknown_connection + st.refused_initials > 0);
    let server_conn = p.b_events.iter().any(|e| matches!(e, Event::Connected { .. }));
    assert!(server_conn);
    p.run_for(Duration::from_secs(2));
    let got = Pair::frames(&p.b_events);
    assert_eq!(
        got.len(),
        50,
        "every frame delivered exactly once despite the replays"
    );
    for (i, (seq, bytes)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(bytes, &frame(MediaKind::Key, 3000 + i).bytes);
    }
}

#[test]
fn frames_of_every_size_arrive_intact_over_a_lossy_reordering_path() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let lossy = LinkConfig {
        delay: Duration::from_millis(30),
        jitter: Duration::from_millis(5),
        reorder: true,
        loss: LossModel::Bernoulli { p: 0.05 },
        duplicate: 0.01,
        ..LinkConfig::default()
    };
    let mut p = Pair::new(a_cfg, b_cfg, lossy);
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_secs(2));
    assert!(Pair::connected(&p.a_events));
    let mut rng = transport::sim::SimRng::new(5);
    let sizes: Vec<usize> = (0..200)
        .map(|i| match i % 4 {
            0 => rng.below(3) as usize,
            1 => rng.below(1400) as usize,
            2 => 1300 + rng.below(200) as usize,
            _ => rng.below(200_000) as usize,
        })
        .collect();
    for &n in &sizes {
        p.a.send_frame(ch, StreamId(1), frame(MediaKind::Key, n)).unwrap();
    }
    p.run_for(Duration::from_secs(20));
    let got = Pair::frames(&p.b_events);
    assert_eq!(got.len(), sizes.len());
    for ((seq, bytes), n) in got.iter().zip(&sizes) {
        assert_eq!(
            bytes,
            &frame(MediaKind::Key, *n).bytes,
            "frame {seq} of {n} bytes"
        );
    }
}

#[test]
fn datagrams_appended_into_one_batch_buffer_carry_the_connection() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    p.a_batch = Some(BATCH_MARKER.to_vec());
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(200));
    assert!(
        Pair::connected(&p.a_events),
        "the handshake too goes out appended"
    );
    let sizes = [1usize, 1000, 1500, 40_000, 300_000];
    for (i, &n) in sizes.iter().enumerate() {
        p.a.send_frame(ch, StreamId(1), frame(MediaKind::Key, n + i))
            .unwrap();
    }
    p.run_for(Duration::from_secs(3));
    let got = Pair::frames(&p.b_events);
    assert_eq!(got.len(), sizes.len());
    for (i, (_, bytes)) in got.iter().enumerate() {
        assert_eq!(bytes, &frame(MediaKind::Key, sizes[i] + i).bytes);
    }
    let batch = p.a_batch.as_ref().unwrap();
    let sent: usize = p.a_sent.iter().map(Vec::len).sum();
    assert_eq!(
        batch.len(),
        BATCH_MARKER.len() + sent,
        "every datagram appended, nothing else"
    );
}

/// A bulk frame leaves in packets of exactly the full size (each fragment fills its packet, the few bytes
/// its header's varints leave are padding), so a driver can send them in one GSO batch; only the frame's
/// last packet is shorter. The full size is the datagram size less what rounds the sealed payload down to
/// whole AES blocks, and every packet's payload is whole blocks.
#[test]
fn a_large_frame_leaves_in_packets_of_exactly_the_datagram_size() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let datagram = a_cfg.connection.max_datagram_bytes;
    let overhead = 17 + transport::crypto::TAG_LEN;
    let block = transport::crypto::BLOCK_LEN;
    let mtu = overhead + (datagram - overhead) / block * block;
    assert_eq!(a_cfg.connection.full_packet_bytes(), mtu);
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(200));
    // Past the startup priming (whose padded packets are also full-size), so only fragments are counted.
    p.run_for(Duration::from_secs(2));
    let before = p.a_sent.len();
    // 300 kB: offsets past 16 KiB take longer varints than the first fragments' offsets.
    p.a.send_frame(ch, StreamId(1), frame(MediaKind::Key, 300_000))
        .unwrap();
    p.run_for(Duration::from_secs(2));
    assert_eq!(Pair::frames(&p.b_events).len(), 1);
    let data: Vec<usize> = p.a_sent[before..]
        .iter()
        .map(Vec::len)
        .filter(|&n| n > 100)
        .collect();
    let full = data.iter().filter(|&&n| n == mtu).count();
    assert!(data.iter().all(|&n| n <= mtu), "{data:?}");
    assert!(
        p.a_sent[before..]
            .iter()
            .all(|d| (d.len() - overhead) % block == 0),
        "payloads not in whole blocks: {:?}",
        p.a_sent[before..].iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        full + 1 >= data.len() && data.len() >= 300_000 / mtu,
        "{full} of {} packets at {mtu} bytes: {data:?}",
        data.len()
    );
    // And the fragments use the room: at most a few bytes of each full packet are padding.
    let st = p.a.connection_stats(ch).unwrap();
    assert!(
        (data.len() as u64) <= 300_000u64.div_ceil(mtu as u64 - 17 - 16 - 24),
        "{} packets for 300 kB: {st:?}",
        data.len()
    );
}

#[test]
fn keys_rotate_and_traffic_continues() {
    let (mut a_cfg, mut b_cfg, b_pub) = configs();
    a_cfg.connection.key_update_packets = 50;
    b_cfg.connection.key_update_packets = 50;
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(200));
    for _ in 0..100 {
        p.a.send_frame(ch, StreamId(0), frame(MediaKind::Key, 10_000))
            .unwrap();
    }
    p.run_for(Duration::from_secs(5));
    assert_eq!(Pair::frames(&p.b_events).len(), 100);
    let st = p.a.connection_stats(ch).unwrap();
    assert!(st.key_updates >= 3, "key updates: {}", st.key_updates);
}

/// Sends one recognisable frame; returns whether its bytes were visible on the wire and how many frames the
/// peer got.
fn marker_on_the_wire(encryption: bool) -> (bool, usize) {
    let (mut a_cfg, mut b_cfg, b_pub) = configs();
    a_cfg.connection.encryption = encryption;
    b_cfg.connection.encryption = encryption;
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(200));
    let marker = b"plainly visible payload";
    let frame = MediaFrame {
        kind: MediaKind::Metadata,
        bytes: Bytes::from_static(marker),
        capture: p.now,
        budget: None,
    };
    p.a.send_frame(ch, StreamId(0), frame).unwrap();
    p.run_for(Duration::from_millis(100));
    let visible = p
        .a_sent
        .iter()
        .any(|d| d.windows(marker.len()).any(|w| w == marker));
    (visible, Pair::frames(&p.b_events).len())
}

#[test]
fn plaintext_only_by_explicit_config_and_then_still_works() {
    assert_eq!(marker_on_the_wire(false), (true, 1), "plaintext when configured");
    assert_eq!(
        marker_on_the_wire(true),
        (false, 1),
        "never visible with the default config"
    );
}

#[test]
fn an_idle_peer_times_out() {
    let (mut a_cfg, b_cfg, b_pub) = configs();
    a_cfg.connection.idle_timeout = Duration::from_secs(3);
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    let old = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(200));
    assert!(Pair::connected(&p.a_events));
    // Cut the path: nothing more arrives.
    p.ba = Link::new(
        LinkConfig {
            loss: LossModel::Bernoulli { p: 1.0 },
            ..LinkConfig::default()
        },
        1,
        p.now,
    );
    p.run_for(Duration::from_secs(5));
    assert!(p.a_events.iter().any(|e| matches!(e, Event::Closed { .. })));
    assert_eq!(p.a.connection_count(), 0);
    // The reaped connection's handle stays dead, even once its slot holds a new connection.
    let fresh = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    assert_ne!(old, fresh);
    assert!(p
        .a
        .send_frame(old, StreamId(0), frame(MediaKind::Key, 10))
        .is_err());
    assert!(p.a.connection(old).is_none());
    assert!(p.a.connection(fresh).is_some());
}

/// Startup priming: an idle new connection on a 100 Mbit/s, 100 ms path learns the path's rate within its
/// priming time (so a live stream's keyframes leave at the path's rate, not the stream's), stays within the
/// byte budget, and learns nothing with priming off.
#[test]
fn startup_priming_finds_the_path_rate_before_any_frame() {
    let path = || LinkConfig {
        delay: Duration::from_millis(50),
        rate_bps: Some(100_000_000),
        queue_bytes: 1_250_000,
        loss: LossModel::Bernoulli { p: 0.01 },
        ..LinkConfig::default()
    };
    for priming in [true, false] {
        let (mut a_cfg, b_cfg, b_pub) = configs();
        if !priming {
            a_cfg.connection.startup_priming = Duration::ZERO;
        }
        let mut p = Pair::new(a_cfg, b_cfg, path());
        let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
        p.run_for(Duration::from_millis(2500));
        assert!(Pair::connected(&p.a_events));
        let st = p.a.connection_stats(ch).unwrap();
        let bw_mbps = st.congestion.bandwidth_estimate_bytes_per_s as f64 * 8.0 / 1e6;
        if priming {
            assert!(
                bw_mbps > 60.0,
                "estimate {bw_mbps:.1} Mbit/s after priming: {st:?}"
            );
            assert!(st.priming_packets > 0 && st.priming_bytes <= 32 << 20, "{st:?}");
            assert_ne!(st.congestion_phase, "startup", "startup ended on the path's rate");
        } else {
            assert_eq!(st.priming_packets, 0);
            assert!(
                bw_mbps < 5.0,
                "without priming an idle connection learns nothing: {bw_mbps}"
            );
        }
    }
}

/// Runs `ep` alone (nothing delivered to it) until `end`; returns the bytes it sent to `to`, and to others.
fn run_alone(ep: &mut Endpoint, mut now: Instant, end: Instant, to: SocketAddr) -> (usize, usize) {
    let (mut to_bytes, mut other) = (0, 0);
    let mut buf = Vec::new();
    while now < end {
        ep.handle_timeout(now);
        while let Some(t) = ep.poll_transmit(now, &mut buf) {
            if t.destination == to {
                to_bytes += t.size;
            } else {
                other += t.size;
            }
        }
        while ep.poll_event().is_some() {}
        let Some(next) = ep.poll_timeout() else { break };
        now = next.max(now + Duration::from_millis(1));
    }
    (to_bytes, other)
}

/// With no cookie demanded, one spoofed Initial must not make the server send the victim more than three
/// times its size (handshake reply, probes, keepalives, startup priming) before the client's first
/// authenticated packet proves the address.
#[test]
fn an_unvalidated_address_gets_at_most_three_times_what_it_sent() {
    let (a_cfg, mut b_cfg, b_pub) = configs();
    b_cfg.require_cookie = false;
    let now = Instant::now();
    let mut a = Endpoint::new(a_cfg, now).unwrap();
    let mut b = Endpoint::new(b_cfg, now).unwrap();
    let b_addr: SocketAddr = "127.0.0.2:5000".parse().unwrap();
    let victim: SocketAddr = "127.0.0.99:9999".parse().unwrap();
    a.connect(now, b_addr, b_pub).unwrap();
    let mut buf = Vec::new();
    let t = a.poll_transmit(now, &mut buf).unwrap();
    let initial = buf[..t.size].to_vec();
    b.handle_datagram(now, victim, BytesMut::from(&initial[..]));
    let (to_victim, _) = run_alone(&mut b, now, now + Duration::from_secs(20), victim);
    assert!(
        to_victim <= 3 * initial.len(),
        "{to_victim} bytes sent for a {}-byte Initial",
        initial.len()
    );
}

/// A peer's newest packet arriving from a new address (here an on-path attacker's copy, sent from a victim's
/// address first) moves the connection there only on probation: at most three times what came from there
/// is sent until the path answers a PATH_CHALLENGE, and without an answer the connection goes back.
#[test]
fn a_spoofed_migration_is_validated_and_reverted() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(500));
    assert!(Pair::connected(&p.a_events));
    // Data from a, delivered to b at once; b's ACK is the packet the attacker races from the victim's
    // address.
    p.a.send_frame(ch, StreamId(0), frame(MediaKind::Key, 1_000_000))
        .unwrap();
    let mut now = p.now;
    let mut buf = Vec::new();
    while let Some(t) = p.a.poll_transmit(now, &mut buf) {
        p.b.handle_datagram(now, p.a_addr, BytesMut::from(&buf[..t.size]));
    }
    now += Duration::from_millis(10);
    p.b.handle_timeout(now);
    let t = p.b.poll_transmit(now, &mut buf).unwrap();
    let spoofed = buf[..t.size].to_vec();
    let victim: SocketAddr = "127.0.0.99:9999".parse().unwrap();
    p.a.handle_datagram(now, victim, BytesMut::from(&spoofed[..]));
    let (to_victim, _) = run_alone(&mut p.a, now, now + Duration::from_secs(3), victim);
    assert!(
        to_victim <= 3 * spoofed.len(),
        "{to_victim} bytes to the victim for one {}-byte packet",
        spoofed.len()
    );
    let c = p.a.connection(ch).unwrap();
    assert_eq!(c.remote(), p.b_addr, "back on the validated path");
    let st = c.stats();
    assert_eq!((st.migrations, st.path_validation_failures), (1, 1), "{st:?}");
}

/// A real NAT rebinding: the client's packets start coming from a new address; the server validates it and
/// stays there, and frames keep flowing.
#[test]
fn a_rebinding_peer_is_validated_and_followed() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(500));
    p.a_addr = "127.0.0.77:4077".parse().unwrap();
    for _ in 0..20 {
        p.a.send_frame(ch, StreamId(0), frame(MediaKind::Key, 20_000))
            .unwrap();
    }
    p.run_for(Duration::from_secs(3));
    assert_eq!(Pair::frames(&p.b_events).len(), 20);
    let b = p.b.connection(p.b_conn.unwrap()).unwrap();
    assert_eq!(b.remote(), p.a_addr);
    let st = b.stats();
    assert_eq!(
        (st.migrations, st.path_validations, st.path_validation_failures),
        (1, 1, 0),
        "{st:?}"
    );
}

/// An Initial that claims a client's address and connection id but carries no valid cookie must not tear
/// down that client's half-open connection: the cookie is checked first.
#[test]
fn an_initial_without_a_cookie_does_not_tear_down_a_half_open_connection() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let now = Instant::now();
    let mut a = Endpoint::new(a_cfg, now).unwrap();
    let mut b = Endpoint::new(b_cfg, now).unwrap();
    let a_addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let b_addr: SocketAddr = "127.0.0.2:5000".parse().unwrap();
    a.connect(now, b_addr, b_pub).unwrap();
    let mut buf = Vec::new();
    // Initial, Retry, Initial with the cookie: b holds a half-open connection.
    for _ in 0..2 {
        let t = a.poll_transmit(now, &mut buf).unwrap();
        let initial = buf[..t.size].to_vec();
        b.handle_datagram(now, a_addr, BytesMut::from(&initial[..]));
        if let Some(t) = b.poll_transmit(now, &mut buf) {
            if b.connection_count() == 0 {
                a.handle_datagram(now, b_addr, BytesMut::from(&buf[..t.size]));
            }
        }
    }
    assert_eq!(b.connection_count(), 1, "half-open");
    let client_cid = {
        let t = a.poll_transmit(now + Duration::from_secs(1), &mut buf).unwrap();
        u64::from_be_bytes(buf[..t.size][10..18].try_into().unwrap())
    };
    // The attacker's Initial: the client's address and id, another message, no cookie (or a bad one).
    for cookie in [&[][..], &[0x55; 40][..]] {
        let mut forged = Vec::new();
        transport::wire::packet::write_initial(&mut forged, 0, client_cid, cookie, &[0x42; 200]);
        b.handle_datagram(now, a_addr, BytesMut::from(&forged[..]));
    }
    let closed = std::iter::from_fn(|| b.poll_event())
        .filter(|(_, e)| matches!(e, Event::Closed { .. }))
        .count();
    assert_eq!(closed, 0, "the half-open connection was torn down");
    assert_eq!(b.connection_count(), 1);
    assert_eq!(b.stats().bad_cookies, 1);
}

/// Initials from one source IP beyond the per-source rate are dropped before any DH work.
#[test]
fn handshakes_from_one_source_are_rate_limited() {
    let (_, mut b_cfg, _) = configs();
    b_cfg.require_cookie = false;
    b_cfg.handshake_rate_per_source = 10;
    b_cfg.handshake_burst_per_source = 5;
    let b_pub = b_cfg.keypair.public;
    let now = Instant::now();
    let mut b = Endpoint::new(b_cfg, now).unwrap();
    let b_addr: SocketAddr = "127.0.0.2:5000".parse().unwrap();
    let mut buf = Vec::new();
    for i in 0..100u16 {
        let mut cfg = EndpointConfig::new(StaticKeypair::generate().unwrap());
        cfg.accept_incoming = false;
        let mut fake = Endpoint::new(cfg, now).unwrap();
        fake.connect(now, b_addr, b_pub).unwrap();
        let t = fake.poll_transmit(now, &mut buf).unwrap();
        let from = SocketAddr::from(([10, 0, 0, 1], 1000 + i));
        b.handle_datagram(now, from, BytesMut::from(&buf[..t.size]));
    }
    let st = b.stats();
    // Unlisted keys: each Initial that got DH work was refused as unauthorized.
    assert_eq!(st.unauthorized_peers, 5, "{st:?}");
    assert_eq!(st.handshakes_rate_limited, 95, "{st:?}");
    // Another source is not affected, and the first one gets its rate back with time.
    let mut cfg = EndpointConfig::new(StaticKeypair::generate().unwrap());
    cfg.accept_incoming = false;
    let mut fake = Endpoint::new(cfg, now).unwrap();
    fake.connect(now, b_addr, b_pub).unwrap();
    let t = fake.poll_transmit(now, &mut buf).unwrap();
    b.handle_datagram(
        now,
        SocketAddr::from(([10, 0, 0, 2], 1000)),
        BytesMut::from(&buf[..t.size]),
    );
    b.handle_datagram(
        now + Duration::from_secs(1),
        SocketAddr::from(([10, 0, 0, 1], 999)),
        BytesMut::from(&buf[..t.size]),
    );
    assert_eq!(b.stats().unauthorized_peers, 7);
}

/// RFC 9001 section 6.6: AES-GCM keys rotate every 2^23 packets at the latest.
#[test]
fn keys_rotate_within_the_aes_gcm_limit_by_default() {
    assert!(transport::ConnectionConfig::default().key_update_packets <= 1 << 23);
}

/// Plaintext packets crafted for b's connection (encryption off on both sides, so the test can write them).
fn crafted(dst_cid: u64, pn: u64, key_phase: bool, frames: &[u8]) -> BytesMut {
    let mut v = Vec::new();
    transport::wire::packet::write_data_header(
        &mut v,
        &transport::wire::packet::DataHeader {
            dst_cid,
            packet_number: pn,
            key_phase,
        },
    );
    v.extend_from_slice(frames);
    BytesMut::from(&v[..])
}

/// A connected plaintext pair, and b's connection id (from a's last packet).
fn plaintext_pair() -> (Pair, u64) {
    plaintext_pair_with(|_| {})
}

/// [`plaintext_pair`] with b's config adjusted.
fn plaintext_pair_with(adjust: impl FnOnce(&mut EndpointConfig)) -> (Pair, u64) {
    let (mut a_cfg, mut b_cfg, b_pub) = configs();
    adjust(&mut b_cfg);
    a_cfg.connection.encryption = false;
    b_cfg.connection.encryption = false;
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(500));
    assert!(p.b_conn.is_some());
    let last = p.a_sent.last().unwrap().clone();
    let dst_cid = match transport::wire::packet::parse(&last) {
        Ok(transport::wire::packet::Packet::Data(h)) => h.dst_cid,
        other => unreachable!("a data packet, not {other:?}"),
    };
    (p, dst_cid)
}

/// The peer may not move to another key phase before we acknowledged a packet of its current one: a
/// packet flipping the phase again at once is refused, not a key derivation.
#[test]
fn consecutive_peer_key_updates_are_refused() {
    let (mut p, cid) = plaintext_pair();
    let h = p.b_conn.unwrap();
    let before = p.b.connection_stats(h).unwrap().packets_received;
    let now = p.now;
    let ping = [0x01u8];
    p.b.handle_datagram(now, p.a_addr, crafted(cid, 1_000_000, true, &ping));
    p.b.handle_datagram(now, p.a_addr, crafted(cid, 1_000_001, false, &ping));
    p.b.handle_datagram(now, p.a_addr, crafted(cid, 1_000_002, true, &ping));
    let st = p.b.connection_stats(h).unwrap();
    assert_eq!(
        st.packets_received - before,
        2,
        "the second flip was taken: {st:?}"
    );
    assert_eq!(st.peer_key_updates_refused, 1);
}

/// A packet with two ACK frames is malformed: the second is not walked.
#[test]
fn only_one_ack_frame_per_packet_is_handled() {
    let (mut p, cid) = plaintext_pair();
    let h = p.b_conn.unwrap();
    let before = p.b.connection_stats(h).unwrap().malformed;
    let mut frames = Vec::new();
    for _ in 0..10 {
        transport::wire::frame::AckFrame {
            ack_delay_us: 0,
            ranges: vec![0..=0],
        }
        .encode(&mut frames);
    }
    let now = p.now;
    p.b.handle_datagram(now, p.a_addr, crafted(cid, 1_000_000, false, &frames));
    let st = p.b.connection_stats(h).unwrap();
    assert_eq!(st.malformed - before, 1, "{st:?}");
    assert_eq!(st.extra_ack_frames, 1);
}

/// The endpoint-wide receive budget binds before a connection's own: a peer leaving a gap at the head and
/// sending the start of many frames behind it cannot make the endpoint hold more than the budget.
#[test]
fn the_endpoint_receive_budget_bounds_what_peers_make_it_hold() {
    let (mut p, cid) = plaintext_pair_with(|b| b.max_recv_buffered_bytes = 100_000);
    let h = p.b_conn.unwrap();
    let now = p.now;
    for seq in 1..100u64 {
        let mut frames = Vec::new();
        transport::wire::frame::FragmentHeader {
            stream: 7,
            seq,
            kind: MediaKind::Key,
            frame_len: 10_000,
            offset: 0,
            age_us: 0,
            budget_us: None,
        }
        .encode(&[9; 100], &mut frames);
        p.b.handle_datagram(now, p.a_addr, crafted(cid, 1_000_000 + seq, false, &frames));
    }
    assert!(
        p.b.recv_buffered_bytes() <= 100_000,
        "{}",
        p.b.recv_buffered_bytes()
    );
    let st = p.b.connection_stats(h).unwrap();
    assert!(st.recv.refused_over_endpoint_budget > 80, "{:?}", st.recv);
}

/// A node that restarts keeps its identity but not its memory: given the wall clock, its first handshake
/// after the restart is later than any before it, so a server that remembers the earlier ones lets it in
/// (and still refuses replays of them).
#[test]
fn a_restarted_client_with_a_wall_clock_reconnects() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let a_again = a_cfg.clone();
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    let wall = Duration::from_secs(1_800_000_000);
    p.a.set_unix_time(p.now, wall);
    p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(500));
    assert_eq!(p.b.stats().accepted, 1);
    // The restart: a new endpoint, a new monotonic clock origin, the same key; the wall clock moved on.
    p.a = Endpoint::new(a_again, p.now).unwrap();
    p.a.set_unix_time(p.now, wall + Duration::from_secs(5));
    p.a_addr = "127.0.0.1:4001".parse().unwrap();
    p.a_events.clear();
    p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(500));
    assert!(Pair::connected(&p.a_events), "{:?}", p.b.stats());
    assert_eq!(p.b.stats().accepted, 2);
    assert_eq!(p.b.stats().replayed_initials, 0);
}

/// Startup priming waits for the client's first authenticated packet, even when a cookie proved its
/// address: a server that only read message 1 sends message 2 and nothing to fill the window with.
#[test]
fn no_priming_before_the_handshake_is_confirmed() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let now = Instant::now();
    let mut a = Endpoint::new(a_cfg, now).unwrap();
    let mut b = Endpoint::new(b_cfg, now).unwrap();
    let a_addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let b_addr: SocketAddr = "127.0.0.2:5000".parse().unwrap();
    a.connect(now, b_addr, b_pub).unwrap();
    let mut buf = Vec::new();
    // Initial, Retry, Initial with the cookie: b holds a connection it cannot confirm.
    let t = a.poll_transmit(now, &mut buf).unwrap();
    b.handle_datagram(now, a_addr, BytesMut::from(&buf[..t.size]));
    let t = b.poll_transmit(now, &mut buf).unwrap();
    a.handle_datagram(now, b_addr, BytesMut::from(&buf[..t.size]));
    let t = a.poll_transmit(now, &mut buf).unwrap();
    b.handle_datagram(now, a_addr, BytesMut::from(&buf[..t.size]));
    assert_eq!(b.stats().accepted, 1);
    let (to_a, _) = run_alone(&mut b, now, now + Duration::from_secs(2), a_addr);
    assert!(to_a < 1200, "{to_a} bytes before the client confirmed");
}

/// A rebinding peer that only receives (its packets are small ACKs) is validated too: the PATH_CHALLENGE
/// alone fits the amplification budget of a few ACKs, so the sender does not stall on the new path.
#[test]
fn a_rebinding_receiver_is_validated_and_followed() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    p.run_for(Duration::from_millis(500));
    let h = p.b_conn.unwrap();
    for _ in 0..10 {
        p.b.send_frame(h, StreamId(0), frame(MediaKind::Key, 20_000))
            .unwrap();
    }
    p.run_for(Duration::from_millis(30));
    p.a_addr = "127.0.0.77:4077".parse().unwrap();
    for _ in 0..10 {
        p.b.send_frame(h, StreamId(0), frame(MediaKind::Key, 20_000))
            .unwrap();
    }
    p.run_for(Duration::from_secs(2));
    assert_eq!(Pair::frames(&p.a_events).len(), 20);
    let st = p.b.connection_stats(h).unwrap();
    assert_eq!(p.b.connection(h).unwrap().remote(), p.a_addr);
    assert_eq!((st.migrations, st.path_validations), (1, 1), "{st:?}");
}

/// A replay of the client's own earlier Initial (its cookie still valid, its address and id the client's)
/// must not replace the half-open connection of the client's newer handshake.
#[test]
fn a_replayed_older_initial_does_not_replace_a_newer_half_open_connection() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let now = Instant::now();
    let mut a = Endpoint::new(a_cfg, now).unwrap();
    let mut b = Endpoint::new(b_cfg, now).unwrap();
    let a_addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let b_addr: SocketAddr = "127.0.0.2:5000".parse().unwrap();
    a.connect(now, b_addr, b_pub).unwrap();
    let mut buf = Vec::new();
    let t = a.poll_transmit(now, &mut buf).unwrap();
    b.handle_datagram(now, a_addr, BytesMut::from(&buf[..t.size]));
    let t = b.poll_transmit(now, &mut buf).unwrap();
    a.handle_datagram(now, b_addr, BytesMut::from(&buf[..t.size]));
    let t = a.poll_transmit(now, &mut buf).unwrap();
    let first = buf[..t.size].to_vec();
    let client_cid = u64::from_be_bytes(first[10..18].try_into().unwrap());
    b.handle_datagram(now, a_addr, BytesMut::from(&first[..]));
    assert_eq!(b.stats().accepted, 1);
    // A forged reply spends the client's handshake state: it starts over with a new message 1.
    let mut forged = Vec::new();
    transport::wire::packet::write_handshake(&mut forged, client_cid, 99, &[0x42; 80]);
    a.handle_datagram(now, b_addr, BytesMut::from(&forged[..]));
    let later = now + Duration::from_millis(10);
    let t = a.poll_transmit(later, &mut buf).unwrap();
    b.handle_datagram(later, a_addr, BytesMut::from(&buf[..t.size]));
    assert_eq!(b.stats().accepted, 2, "{:?}", b.stats());
    while b.poll_event().is_some() {}
    // The attacker replays the first Initial.
    b.handle_datagram(later, a_addr, BytesMut::from(&first[..]));
    let closed = std::iter::from_fn(|| b.poll_event())
        .filter(|(_, e)| matches!(e, Event::Closed { .. }))
        .count();
    assert_eq!(closed, 0, "the newer half-open connection was torn down");
    assert_eq!(b.connection_count(), 1);
    assert_eq!(b.stats().replayed_initials, 1);
}

/// The receiver's hint for its driver's next wait: once a frame's train is arriving, the rest of it (by the
/// fragments' headers) and about when it should be in (by their spacing), at most the ACK interval; nothing
/// once the frame is complete or the train stalls.
#[test]
fn a_receiver_expects_the_rest_of_a_frames_train() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let interval = b_cfg.connection.ack_interval;
    assert!(!interval.is_zero());
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    // Past the startup priming, whose padding carries no fragment.
    p.run_for(Duration::from_millis(2_500));
    assert_eq!(p.b.receive_batch_hint(p.now), None);
    p.a.send_frame(ch, StreamId(1), frame(MediaKind::Key, 30_000))
        .unwrap();
    // The pacer's first burst, handed to b 100 us apart.
    let mut burst = Vec::new();
    while burst.len() < 6 {
        let mut d = Vec::new();
        if p.a.poll_transmit(p.now, &mut d).is_none() {
            break;
        }
        burst.push(d);
    }
    assert!(burst.len() >= 3, "{} datagrams in the first burst", burst.len());
    let mut at = p.now;
    let mut hint = None;
    for d in &burst {
        at += Duration::from_micros(100);
        p.b.handle_datagram(at, p.a_addr, BytesMut::from(&d[..]));
        hint = p.b.receive_batch_hint(at);
    }
    p.now = at;
    let (expected, delay) = hint.expect("a train is arriving");
    let per_datagram = burst.last().map_or(1, Vec::len);
    let left = 30_000 / per_datagram - burst.len();
    assert!(
        (left.saturating_sub(2)..=left + 2).contains(&(expected as usize)),
        "{expected} datagrams expected after {} of {per_datagram} bytes of 30,000",
        burst.len()
    );
    // About 100 us a datagram, held to the ACK interval.
    let due = (Duration::from_micros(100) * expected).min(interval);
    assert!(delay >= due / 2 && delay <= interval, "{delay:?} for {expected}");
    // The hint lapses an ACK interval after the last fragment.
    assert!(p.b.receive_batch_hint(at + interval * 2).is_none());
    // The whole frame arrives: nothing more is expected.
    p.run_for(Duration::from_secs(1));
    assert_eq!(Pair::frames(&p.b_events).len(), 1);
    assert_eq!(p.b.receive_batch_hint(p.now), None);
}

/// A live frame's train, a few milliseconds long, costs the receiver one ACK (and the sender one wake-up to
/// read it), sent when its last datagram is in; a bulk train is acknowledged along the way.
#[test]
fn a_short_train_is_acknowledged_once_and_a_long_one_along_the_way() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let path = LinkConfig {
        rate_bps: Some(100_000_000),
        ..link(100)
    };
    let mut p = Pair::new(a_cfg, b_cfg, path);
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    // Past the startup priming, and past the NAKs for the gaps its queue drops left.
    p.run_for(Duration::from_secs(3));
    p.a.send_frame(ch, StreamId(1), frame(MediaKind::Audio, 300))
        .unwrap();
    p.run_for(Duration::from_millis(500));
    let bc = p.b_conn.expect("b's connection");
    let b_sent = |p: &Pair| p.b.connection_stats(bc).unwrap().packets_sent;

    // 20 kB, ~15 datagrams: at the path's 100 Mbit/s about 1.7 ms of train, on a 100 ms RTT.
    p.a.send_frame(ch, StreamId(1), frame(MediaKind::Key, 20_000))
        .unwrap();
    // Counted once the train is arriving at b (b may owe an ACK, or a keep-alive, from before).
    while p.b.receive_batch_hint(p.now).is_none() {
        assert!(p.step());
    }
    let before = b_sent(&p);
    p.run_for(Duration::from_millis(300));
    assert_eq!(Pair::frames(&p.b_events).len(), 2);
    assert_eq!(b_sent(&p) - before, 1, "one ACK for the whole train");

    // 200 kB, ~145 datagrams, ~17 ms: longer than an ACK may be held, so acknowledged along the way.
    let before = b_sent(&p);
    p.a.send_frame(ch, StreamId(1), frame(MediaKind::Inter, 200_000))
        .unwrap();
    p.run_for(Duration::from_millis(300));
    assert_eq!(Pair::frames(&p.b_events).len(), 3);
    let acks = b_sent(&p) - before;
    assert!(acks >= 10, "{acks} ACKs for a 17 ms train");
}

#[test]
fn a_tail_probe_costs_no_ack_after_a_whole_frame_and_reveals_a_lost_last_packet_at_once() {
    let (a_cfg, b_cfg, b_pub) = configs();
    let mut p = Pair::new(a_cfg, b_cfg, link(20));
    let ch = p.a.connect(p.now, p.b_addr, b_pub).unwrap();
    // Past the startup priming, whose padding carries no fragment.
    p.run_for(Duration::from_millis(2_500));
    // A first frame: its ACK names the gaps the priming's queue drops left (a NAK, repeated a few times).
    p.a.send_frame(ch, StreamId(1), frame(MediaKind::Audio, 300))
        .unwrap();
    p.run_for(Duration::from_millis(500));
    let probes = |p: &Pair| p.a.connection_stats(ch).unwrap().tail_probes;

    // Hands b what a sends until a's tail probe has left; returns the probe (held back) and whether the
    // frame's datagram reached b (`deliver_frame`).
    fn until_probe(p: &mut Pair, ch: transport::ConnectionHandle, deliver_frame: bool) -> Vec<u8> {
        let before = p.a.connection_stats(ch).unwrap().tail_probes;
        let mut frame_sent = false;
        loop {
            let mut d = Vec::new();
            if p.a.poll_transmit(p.now, &mut d).is_some() {
                if p.a.connection_stats(ch).unwrap().tail_probes > before {
                    return d;
                }
                assert!(!frame_sent, "one datagram for the frame");
                frame_sent = true;
                if deliver_frame {
                    p.b.handle_datagram(p.now, p.a_addr, BytesMut::from(&d[..]));
                }
                continue;
            }
            let next = p.a.poll_timeout().expect("the probe's timer");
            assert!(next <= p.now + Duration::from_millis(50), "no probe within 50 ms");
            p.now = next.max(p.now);
            p.a.handle_timeout(p.now);
        }
    }

    // A whole one-datagram frame: b owes its ACK, and the probe that follows adds nothing to send.
    p.a.send_frame(ch, StreamId(1), frame(MediaKind::Audio, 300))
        .unwrap();
    let probes0 = probes(&p);
    let probe = until_probe(&mut p, ch, true);
    assert_eq!(probes(&p) - probes0, 1, "one probe after the frame");
    let mut ack = Vec::new();
    let owed_before = p.b.poll_timeout();
    p.b.handle_datagram(p.now, p.a_addr, BytesMut::from(&probe[..]));
    assert_eq!(
        p.b.poll_timeout(),
        owed_before,
        "a probe after a whole frame changes none of b's timers"
    );
    if owed_before.is_some_and(|t| t > p.now) {
        assert!(
            p.b.poll_transmit(p.now, &mut ack).is_none(),
            "nothing sent for the probe"
        );
    }
    p.run_for(Duration::from_millis(500));
    assert_eq!(Pair::frames(&p.b_events).len(), 2);

    // The next frame's only datagram is lost: the probe that follows it makes b NAK at once.
    p.a.send_frame(ch, StreamId(1), frame(MediaKind::Audio, 300))
        .unwrap();
    let probe = until_probe(&mut p, ch, false);
    p.b.handle_datagram(p.now, p.a_addr, BytesMut::from(&probe[..]));
    let mut ack = Vec::new();
    assert!(
        p.b.poll_transmit(p.now, &mut ack).is_some(),
        "b acknowledges the probe at once: it reveals the lost packet"
    );
    // The repair follows, and the frame arrives.
    p.a.handle_datagram(p.now, p.b_addr, BytesMut::from(&ack[..]));
    p.run_for(Duration::from_millis(500));
    assert_eq!(Pair::frames(&p.b_events).len(), 3, "the lost frame was repaired");
}
