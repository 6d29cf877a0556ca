//! Two `TransportDriver`s on real UDP sockets on 127.0.0.1: the encrypted handshake, frames of every size
//! delivered intact and in order, and garbage datagrams counted and harmless.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use engine::{Backend, BackendChoice, IoConfig, UdpConfig};
use relay::link::{DriverConfig, TransportDriver};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};
use transport::crypto::StaticKeypair;
use transport::{Endpoint, EndpointConfig, EndpointStats, Event, MediaFrame, MediaKind, StreamId};

/// Every test gives up well before the 10 s budget.
const TEST_DEADLINE: Duration = Duration::from_secs(8);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A small deterministic generator (the tests must not depend on a seed from the environment).
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
        self.next() % n
    }
}

fn payload(index: usize, len: usize) -> Bytes {
    (0..len)
        .map(|i| ((i * 31 + index * 7) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn frame(index: usize, len: usize) -> MediaFrame {
    MediaFrame {
        kind: MediaKind::Key,
        bytes: payload(index, len),
        capture: Instant::now(),
        budget: None,
    }
}

/// Sizes from 1 byte to 200 KB: tiny, single-packet, around the packet size, and multi-packet.
fn sizes(count: usize) -> Vec<usize> {
    let mut rng = Lcg(5);
    let mut v: Vec<usize> = (0..count)
        .map(|i| match i % 4 {
            0 => 1 + rng.below(3) as usize,
            1 => 1 + rng.below(1400) as usize,
            2 => 1300 + rng.below(200) as usize,
            _ => 1 + rng.below(200_000) as usize,
        })
        .collect();
    // The edges, whatever the generator did.
    v[0] = 1;
    if count > 3 {
        v[3] = 200_000;
    }
    v
}

struct ServerResult {
    frames: Vec<(u32, u64, Bytes)>,
    peer: Option<[u8; 32]>,
    gaps: usize,
    stats: EndpointStats,
}

/// Runs a server driver until it has `expected` frames (or the deadline). With `garbage_expected > 0` it
/// first waits for that many datagrams, checks they left no state, and sends its address again.
fn spawn_server(
    cfg: EndpointConfig,
    expected: usize,
    addr_tx: mpsc::Sender<SocketAddr>,
    done: Arc<AtomicBool>,
    garbage_expected: u64,
    backend: BackendChoice,
) -> thread::JoinHandle<ServerResult> {
    thread::spawn(move || {
        let deadline = Instant::now() + TEST_DEADLINE;
        let ep = Endpoint::new(cfg, Instant::now()).unwrap();
        let mut d =
            TransportDriver::bind(loopback(), &UdpConfig::default(), ep, driver_config(backend)).unwrap();
        assert_eq!(d.backend(), expected_backend(backend));
        addr_tx.send(d.local_addr()).unwrap();
        // Phase 1 (garbage test only): every garbage datagram is counted and refused, and no state is kept.
        while d.endpoint().stats().datagrams_received < garbage_expected && Instant::now() < deadline {
            d.poll(Duration::from_millis(10)).unwrap();
        }
        if garbage_expected > 0 {
            let st = d.endpoint().stats();
            assert_eq!(
                st.datagrams_received, garbage_expected,
                "every garbage datagram was received"
            );
            assert_eq!(st.accepted, 0);
            assert_eq!(
                d.endpoint().connection_count(),
                0,
                "garbage creates no connection"
            );
            assert_eq!(d.stats().datagrams_received, garbage_expected);
            addr_tx.send(d.local_addr()).unwrap();
        }
        let mut frames = Vec::new();
        let mut peer = None;
        let mut gaps = 0;
        let finished = d
            .run_until(deadline, |_, _, e| {
                match e {
                    Event::Connected { peer_static } => peer = Some(peer_static),
                    Event::Frame(f) => {
                        frames.push((f.stream, f.seq, f.bytes));
                        if frames.len() == expected {
                            return ControlFlow::Break(());
                        }
                    }
                    Event::Gap(_) => gaps += 1,
                    Event::Closed { reason } => panic!("server connection closed: {reason:?}"),
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        done.store(true, Ordering::SeqCst);
        assert!(
            finished,
            "server got {} of {expected} frames before the deadline",
            frames.len()
        );
        ServerResult {
            frames,
            peer,
            gaps,
            stats: d.endpoint().stats(),
        }
    })
}

/// Connects to `server`, sends `sizes` as frames on stream 1, and keeps driving until `done`.
fn spawn_client(
    cfg: EndpointConfig,
    server: SocketAddr,
    server_pub: [u8; 32],
    sizes: Vec<usize>,
    done: Arc<AtomicBool>,
    backend: BackendChoice,
) -> thread::JoinHandle<relay::link::DriverStats> {
    thread::spawn(move || {
        let deadline = Instant::now() + TEST_DEADLINE;
        let ep = Endpoint::new(cfg, Instant::now()).unwrap();
        let mut d =
            TransportDriver::bind(loopback(), &UdpConfig::default(), ep, driver_config(backend)).unwrap();
        assert_eq!(d.backend(), expected_backend(backend));
        let ch = d
            .endpoint_mut()
            .connect(Instant::now(), server, server_pub)
            .unwrap();
        let connected = d
            .run_until(deadline, |_, _, e| match e {
                Event::Connected { .. } => ControlFlow::Break(()),
                Event::Closed { reason } => panic!("client connection closed: {reason:?}"),
                _ => ControlFlow::Continue(()),
            })
            .unwrap();
        assert!(connected, "handshake did not complete in time");
        for (i, &n) in sizes.iter().enumerate() {
            d.endpoint_mut().send_frame(ch, StreamId(1), frame(i, n)).unwrap();
        }
        while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
            d.poll(Duration::from_millis(5)).unwrap();
            while let Some((_, e)) = d.poll_event() {
                if let Event::Closed { reason } = e {
                    panic!("client connection closed: {reason:?}");
                }
            }
        }
        d.stats()
    })
}

fn check_frames(r: &ServerResult, sizes: &[usize]) {
    assert_eq!(r.gaps, 0, "reliable frames have no gaps");
    assert_eq!(r.frames.len(), sizes.len());
    for (i, ((stream, seq, bytes), &n)) in r.frames.iter().zip(sizes).enumerate() {
        assert_eq!(*stream, 1);
        assert_eq!(*seq, i as u64, "in order");
        assert_eq!(bytes.len(), n, "frame {i}");
        assert!(*bytes == payload(i, n), "frame {i} of {n} bytes intact");
    }
}

fn configs() -> (EndpointConfig, EndpointConfig, [u8; 32], [u8; 32]) {
    let client = StaticKeypair::generate().unwrap();
    let server = StaticKeypair::generate().unwrap();
    let client_pub = client.public;
    let server_pub = server.public;
    let mut client_cfg = EndpointConfig::new(client);
    client_cfg.accept_incoming = false;
    let mut server_cfg = EndpointConfig::new(server);
    server_cfg.authorized_peers = vec![client_pub];
    (client_cfg, server_cfg, client_pub, server_pub)
}

/// The engine's tests run on both backends.
const BACKENDS: [BackendChoice; 2] = [BackendChoice::Uring, BackendChoice::Epoll];

fn driver_config(backend: BackendChoice) -> DriverConfig {
    DriverConfig {
        io: IoConfig {
            backend,
            ..IoConfig::default()
        },
        ..DriverConfig::default()
    }
}

fn expected_backend(backend: BackendChoice) -> Backend {
    match backend {
        BackendChoice::Epoll => Backend::Epoll,
        _ => Backend::Uring,
    }
}

#[test]
fn two_drivers_handshake_and_deliver_200_frames_of_mixed_sizes_in_order() {
    for backend in BACKENDS {
        handshake_and_deliver(backend);
    }
}

#[test]
fn garbage_datagrams_are_counted_and_harmless() {
    for backend in BACKENDS {
        garbage(backend);
    }
}

fn handshake_and_deliver(backend: BackendChoice) {
    let (client_cfg, server_cfg, client_pub, server_pub) = configs();
    let sizes = sizes(200);
    let done = Arc::new(AtomicBool::new(false));
    let (addr_tx, addr_rx) = mpsc::channel();
    let server = spawn_server(server_cfg, sizes.len(), addr_tx, done.clone(), 0, backend);
    let server_addr = addr_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let client = spawn_client(
        client_cfg,
        server_addr,
        server_pub,
        sizes.clone(),
        done.clone(),
        backend,
    );
    let client_stats = client.join().unwrap();
    let r = server.join().unwrap();
    assert_eq!(
        r.peer,
        Some(client_pub),
        "the server authenticated the client's static key"
    );
    assert_eq!(r.stats.retries_sent, 1, "the server demanded a cookie first");
    assert_eq!(r.stats.accepted, 1);
    check_frames(&r, &sizes);
    let total: usize = sizes.iter().sum();
    assert!(
        client_stats.bytes_sent >= total as u64,
        "{} bytes sent for {total} bytes of frames",
        client_stats.bytes_sent
    );
}

fn garbage(backend: BackendChoice) {
    let (client_cfg, server_cfg, _, server_pub) = configs();
    let sizes = sizes(40);
    let done = Arc::new(AtomicBool::new(false));
    let (addr_tx, addr_rx) = mpsc::channel();
    const GARBAGE: u64 = 120;
    let server = spawn_server(server_cfg, sizes.len(), addr_tx, done.clone(), GARBAGE, backend);
    let server_addr = addr_rx.recv_timeout(Duration::from_secs(5)).unwrap();

    let attacker = std::net::UdpSocket::bind(loopback()).unwrap();
    let mut rng = Lcg(99);
    let lens = [0usize, 1, 5, 17, 18, 40, 1199, 1200, 1400, 9000];
    let mut junk = |i: u64| -> Vec<u8> {
        let len = lens[i as usize % lens.len()];
        (0..len).map(|_| rng.next() as u8).collect()
    };
    // Phase 1: garbage alone, checked by the server before any client exists.
    for i in 0..GARBAGE {
        attacker.send_to(&junk(i), server_addr).unwrap();
        if i % 16 == 15 {
            // Stay far below the receive buffer (loopback drops nothing it has room for).
            thread::sleep(Duration::from_millis(2));
        }
    }
    let server_addr2 = addr_rx.recv_timeout(TEST_DEADLINE).unwrap();
    assert_eq!(server_addr, server_addr2);

    // Phase 2: garbage while a client transfers.
    let client = spawn_client(
        client_cfg,
        server_addr,
        server_pub,
        sizes.clone(),
        done.clone(),
        backend,
    );
    let mut i = 0;
    while !done.load(Ordering::SeqCst) && i < 2_000 {
        attacker.send_to(&junk(i), server_addr).unwrap();
        i += 1;
        thread::sleep(Duration::from_millis(1));
    }
    client.join().unwrap();
    let r = server.join().unwrap();
    check_frames(&r, &sizes);
    assert!(r.stats.datagrams_received >= GARBAGE);
    assert!(r.stats.malformed + r.stats.unknown_connection + r.stats.refused_initials > 0);
    assert_eq!(r.stats.accepted, 1, "only the real client");
}

#[test]
fn a_flood_of_connection_attempts_leaves_no_state_and_real_clients_still_connect() {
    for backend in BACKENDS {
        initial_flood(backend);
    }
}

fn initial_flood(backend: BackendChoice) {
    const ATTEMPTS: u64 = 300;
    let (client_cfg, server_cfg, _, server_pub) = configs();
    let ep = Endpoint::new(server_cfg, Instant::now()).unwrap();
    let mut server =
        TransportDriver::bind(loopback(), &UdpConfig::default(), ep, driver_config(backend)).unwrap();
    let server_addr = server.local_addr();
    // Real Initials from 300 would-be clients that never answer the server's Retry.
    let attacker = std::net::UdpSocket::bind(loopback()).unwrap();
    let mut buf = Vec::new();
    for i in 0..ATTEMPTS {
        let mut cfg = EndpointConfig::new(StaticKeypair::generate().unwrap());
        cfg.accept_incoming = false;
        let mut fake = Endpoint::new(cfg, Instant::now()).unwrap();
        fake.connect(Instant::now(), server_addr, server_pub).unwrap();
        let t = fake.poll_transmit(Instant::now(), &mut buf).unwrap();
        attacker.send_to(&buf[..t.size], server_addr).unwrap();
        if i % 32 == 31 {
            server.poll(Duration::from_millis(1)).unwrap();
        }
    }
    let deadline = Instant::now() + TEST_DEADLINE;
    while server.endpoint().stats().datagrams_received < ATTEMPTS && Instant::now() < deadline {
        server.poll(Duration::from_millis(5)).unwrap();
    }
    let st = server.endpoint().stats();
    assert_eq!(st.datagrams_received, ATTEMPTS, "{st:?}");
    assert_eq!(st.accepted, 0, "{st:?}");
    assert_eq!(
        server.endpoint().connection_count(),
        0,
        "no state before a cookie comes back"
    );
    assert!(st.retries_sent + st.stateless_dropped >= ATTEMPTS, "{st:?}");

    // A real client connects at once afterwards.
    let ep = Endpoint::new(client_cfg, Instant::now()).unwrap();
    let mut client =
        TransportDriver::bind(loopback(), &UdpConfig::default(), ep, driver_config(backend)).unwrap();
    client
        .endpoint_mut()
        .connect(Instant::now(), server_addr, server_pub)
        .unwrap();
    let mut up = false;
    while !up && Instant::now() < deadline {
        client.poll(Duration::from_millis(1)).unwrap();
        server.poll(Duration::from_millis(1)).unwrap();
        while let Some((_, e)) = client.poll_event() {
            up |= matches!(e, Event::Connected { .. });
        }
    }
    assert!(up, "the real client connected after the flood ({backend:?})");
    assert_eq!(server.endpoint().stats().accepted, 1);
}
