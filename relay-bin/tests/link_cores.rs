//! The transport on several cores sharing one port: connections spread over the cores by the reuseport
//! hash and stay on the core that accepted them; commands posted to an idle core wake it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use engine::{BackendChoice, IoConfig, UdpConfig};
use relay::link::{CoresConfig, DriverConfig, TransportCores, TransportDriver};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use transport::crypto::StaticKeypair;
use transport::{Endpoint, EndpointConfig, Event, MediaFrame, MediaKind, StreamId};

const CLIENTS: usize = 16;
const FRAMES: usize = 5;

fn run(backend: BackendChoice) {
    let server_key = StaticKeypair::generate().unwrap();
    let server_pub = server_key.public;
    let client_keys: Vec<StaticKeypair> = (0..CLIENTS).map(|_| StaticKeypair::generate().unwrap()).collect();
    let client_pubs: Vec<[u8; 32]> = client_keys.iter().map(|k| k.public).collect();
    let per_core: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let frames = Arc::new(AtomicU64::new(0));
    let (pc, fr) = (per_core.clone(), frames.clone());
    let io = IoConfig {
        backend,
        ..IoConfig::default()
    };
    let mut cores = TransportCores::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        CoresConfig {
            cores: 2,
            pin: false,
            driver: DriverConfig {
                io,
                ..DriverConfig::default()
            },
            // Long idle waits: only the waker can make a posted command run promptly.
            max_wait: Duration::from_secs(30),
            ..CoresConfig::default()
        },
        move |core| {
            let mut cfg = EndpointConfig::new(server_key.clone());
            cfg.authorized_peers = client_pubs.clone();
            let ep = Endpoint::new(cfg, Instant::now()).map_err(std::io::Error::other)?;
            let (pc, fr) = (pc.clone(), fr.clone());
            Ok((ep, move |_: &mut Endpoint, _, e: Event| match e {
                Event::Connected { .. } => {
                    pc[core].fetch_add(1, Ordering::Relaxed);
                }
                Event::Frame(_) => {
                    fr.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }))
        },
    )
    .unwrap();
    let server = cores.local_addr();

    // Every client on this thread, each on its own socket (its own source port).
    let mut clients: Vec<TransportDriver> = client_keys
        .into_iter()
        .map(|key| {
            let mut cfg = EndpointConfig::new(key);
            cfg.accept_incoming = false;
            let ep = Endpoint::new(cfg, Instant::now()).unwrap();
            let mut d = TransportDriver::bind(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                &UdpConfig::default(),
                ep,
                DriverConfig {
                    io: IoConfig {
                        backend: BackendChoice::Epoll,
                        ..IoConfig::default()
                    },
                    ..DriverConfig::default()
                },
            )
            .unwrap();
            let ch = d
                .endpoint_mut()
                .connect(Instant::now(), server, server_pub)
                .unwrap();
            for i in 0..FRAMES {
                let f = MediaFrame {
                    kind: MediaKind::Key,
                    bytes: Bytes::from(vec![i as u8; 10_000]),
                    capture: Instant::now(),
                    budget: None,
                };
                d.endpoint_mut().send_frame(ch, StreamId(1), f).unwrap();
            }
            d
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while frames.load(Ordering::Relaxed) < (CLIENTS * FRAMES) as u64 && Instant::now() < deadline {
        for c in &mut clients {
            c.poll(Duration::ZERO).unwrap();
            while c.poll_event().is_some() {}
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        frames.load(Ordering::Relaxed),
        (CLIENTS * FRAMES) as u64,
        "{backend:?}"
    );
    let (a, b) = (
        per_core[0].load(Ordering::Relaxed),
        per_core[1].load(Ordering::Relaxed),
    );
    assert_eq!(
        a + b,
        CLIENTS as u64,
        "each connection accepted once, on one core ({backend:?})"
    );
    // 16 source ports on two sockets: all on one core has probability 2^-15.
    assert!(a > 0 && b > 0, "connections spread over both cores: {a} + {b}");

    // A command posted to an idle core runs at once (its waker ends a 30 s wait).
    let (tx, rx) = mpsc::channel();
    cores
        .post(
            1,
            Box::new(move |ep: &mut Endpoint| tx.send(ep.connection_count()).unwrap()),
        )
        .unwrap();
    let n = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the posted command ran");
    assert_eq!(n as u64, b);
    assert!(cores.post(7, Box::new(|_| {})).is_err(), "no core 7");

    let reports = cores.stop();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert!(r.error.is_none(), "{r:?}");
        assert!(
            r.iteration_us[0] <= r.iteration_us[1] && r.iteration_us[1] <= r.iteration_us[2],
            "{r:?}"
        );
        assert_eq!(r.backend, engine::Backend::from_choice(backend));
    }
    assert_eq!(reports[1].commands, 1);
    assert_eq!(
        reports.iter().map(|r| r.endpoint.accepted).sum::<u64>(),
        CLIENTS as u64
    );
}

#[test]
fn connections_spread_over_cores_and_stay_there_on_both_backends() {
    run(BackendChoice::Uring);
    run(BackendChoice::Epoll);
}
