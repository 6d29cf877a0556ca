//! A transport link and TCP viewers on one core ([`CoreLink`] on an [`engine::uring::CoreIo`]): one ring,
//! one thread, one wait. A peer PoP (a standalone `TransportDriver` on another thread) connects over real
//! UDP on 127.0.0.1 and sends 300 frames of mixed sizes; the core hands each frame's bytes, as it arrives,
//! to its TCP viewer, which reads them all intact and in order. Garbage datagrams on the link's socket are
//! counted and harm neither the link nor the viewer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use engine::uring::{CoreEvent, CoreIo, RingConfig, TcpConnId, TcpEvent, UringTcpConfig};
use engine::{BackendChoice, IoConfig, UdpConfig, UdpSocket};
use relay::link::{CoreLink, DriverConfig, TransportDriver};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};
use transport::crypto::StaticKeypair;
use transport::{Endpoint, EndpointConfig, Event, MediaFrame, MediaKind, StreamId};

const TEST_DEADLINE: Duration = Duration::from_secs(20);
const FRAMES: usize = 300;
const GARBAGE: u64 = 50;

fn payload(index: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + index * 7) % 251) as u8).collect()
}

/// 1 byte to 120 KB, so frames span one packet and many.
fn size(i: usize) -> usize {
    match i % 5 {
        0 => 1 + i % 7,
        1 => 1000 + i,
        2 => 1400,
        3 => 20_000 + 97 * i,
        _ => 120_000,
    }
}

/// What the core thread reports.
struct CoreReport {
    frames: usize,
    link_datagrams: u64,
    endpoint_datagrams: u64,
    accepted: u64,
    enters: u64,
}

/// The core: one ring, a TCP listener for the viewer, a transport link for the peer PoP. Every frame the
/// link delivers goes to the viewer's TCP connection in the same iteration.
fn run_core(
    listener: TcpListener,
    server_cfg: EndpointConfig,
    addr_tx: mpsc::Sender<SocketAddr>,
    done: Arc<AtomicBool>,
) -> CoreReport {
    let deadline = Instant::now() + TEST_DEADLINE;
    let mut io = CoreIo::new(&RingConfig::default()).unwrap();
    let tcp = io.listen(listener, UringTcpConfig::default()).unwrap();
    let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &UdpConfig::default()).unwrap();
    let config = DriverConfig {
        io: IoConfig {
            backend: BackendChoice::Uring,
            ..IoConfig::default()
        },
        ..DriverConfig::default()
    };
    let endpoint = Endpoint::new(server_cfg, Instant::now()).unwrap();
    let mut link = CoreLink::open(&mut io, socket, endpoint, &config).unwrap();
    addr_tx.send(link.local_addr()).unwrap();
    let mut viewer: Option<TcpConnId> = None;
    let mut frames = 0usize;
    let mut held: Vec<Bytes> = Vec::new();
    while !done.load(Ordering::Acquire) && Instant::now() < deadline {
        let now = Instant::now();
        let next = link
            .poll_timeout(now)
            .map_or(Duration::from_millis(20), |t| t.saturating_duration_since(now))
            .min(Duration::from_millis(20));
        io.wait(Some(next)).unwrap();
        let now = Instant::now();
        let link_socket = link.socket();
        io.reap(&mut |e| match e {
            CoreEvent::Tcp(_, TcpEvent::Accepted(id, _)) => viewer = Some(id),
            CoreEvent::Tcp(..) => {}
            CoreEvent::Datagram {
                socket,
                from,
                bytes,
                segment,
            } => {
                assert_eq!(socket, link_socket);
                link.on_datagram(now, from, bytes, segment);
            }
        });
        link.step(&mut io, now).unwrap();
        while let Some((_, e)) = link.poll_event() {
            match e {
                Event::Frame(f) => {
                    frames += 1;
                    held.push(f.bytes);
                }
                Event::Closed { reason } => panic!("the link closed: {reason:?}"),
                Event::Connected { .. } | Event::Gap(_) => {}
            }
        }
        // Frames go to the viewer once it is there (it connects before the peer sends).
        if let (Some(id), Some(tcp)) = (viewer, io.tcp(tcp)) {
            for b in held.drain(..) {
                tcp.send(id, b).unwrap();
            }
        }
        // The ACKs the frames called for leave with the next wait.
        link.step(&mut io, now).unwrap();
    }
    let stats = link.endpoint().stats();
    CoreReport {
        frames,
        link_datagrams: link.stats().datagrams_received,
        endpoint_datagrams: stats.datagrams_received,
        accepted: stats.accepted,
        enters: io.enters(),
    }
}

#[test]
fn a_frame_from_a_pop_link_reaches_a_tcp_viewer_on_the_same_core() {
    let client = StaticKeypair::generate().unwrap();
    let server = StaticKeypair::generate().unwrap();
    let server_pub = server.public;
    let client_pub = client.public;
    let mut client_cfg = EndpointConfig::new(client);
    client_cfg.accept_incoming = false;
    let mut server_cfg = EndpointConfig::new(server);
    server_cfg.authorized_peers = vec![client_pub];

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = listener.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (addr_tx, addr_rx) = mpsc::channel();
    let core = {
        let done = done.clone();
        thread::spawn(move || run_core(listener, server_cfg, addr_tx, done))
    };
    let link_addr = addr_rx.recv_timeout(Duration::from_secs(5)).unwrap();

    // The viewer connects first and reads every byte the core forwards.
    let mut viewer = TcpStream::connect(tcp_addr).unwrap();
    viewer.set_read_timeout(Some(TEST_DEADLINE)).unwrap();
    let expected: Vec<u8> = (0..FRAMES).flat_map(|i| payload(i, size(i))).collect();
    let reader = {
        let len = expected.len();
        thread::spawn(move || {
            let mut got = vec![0u8; len];
            viewer.read_exact(&mut got).unwrap();
            got
        })
    };
    thread::sleep(Duration::from_millis(100));

    // Garbage first: counted by the endpoint, no connection, nothing forwarded.
    let garbage = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..GARBAGE {
        garbage
            .send_to(&payload(i as usize, 1 + (i as usize * 37) % 1400), link_addr)
            .unwrap();
    }

    // The peer PoP, driven until the viewer has everything.
    let peer_done = done.clone();
    let peer = thread::spawn(move || {
        let deadline = Instant::now() + TEST_DEADLINE;
        let ep = Endpoint::new(client_cfg, Instant::now()).unwrap();
        let mut d = TransportDriver::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &UdpConfig::default(),
            ep,
            DriverConfig::default(),
        )
        .unwrap();
        let ch = d
            .endpoint_mut()
            .connect(Instant::now(), link_addr, server_pub)
            .unwrap();
        let connected = d
            .run_until(deadline, |_, _, e| match e {
                Event::Connected { .. } => ControlFlow::Break(()),
                Event::Closed { reason } => panic!("peer connection closed: {reason:?}"),
                _ => ControlFlow::Continue(()),
            })
            .unwrap();
        assert!(connected, "the handshake with the core's link did not complete");
        for i in 0..FRAMES {
            let frame = MediaFrame {
                kind: MediaKind::Key,
                bytes: payload(i, size(i)).into(),
                capture: Instant::now(),
                budget: None,
            };
            d.endpoint_mut().send_frame(ch, StreamId(1), frame).unwrap();
        }
        while !peer_done.load(Ordering::Acquire) && Instant::now() < deadline {
            d.poll(Duration::from_millis(5)).unwrap();
            while let Some((_, e)) = d.poll_event() {
                if let Event::Closed { reason } = e {
                    panic!("peer connection closed: {reason:?}");
                }
            }
        }
    });
    let got = reader.join().unwrap();
    done.store(true, Ordering::Release);
    let report = core.join().unwrap();
    peer.join().unwrap();
    assert_eq!(report.frames, FRAMES);
    assert!(got == expected, "the viewer's bytes differ from the frames sent");
    assert_eq!(report.accepted, 1, "garbage opened no connection");
    assert_eq!(
        report.endpoint_datagrams, report.link_datagrams,
        "every datagram the ring received reached the endpoint"
    );
    assert!(report.link_datagrams > FRAMES as u64 + GARBAGE);
    assert!(report.enters > 0);
}
