//! Resource lifetime: a dropped driver closes its socket and its ring or epoll fd, on both backends.
//!
//! This file holds a single test so that no other test of the same process opens descriptors while it counts
//! them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use engine::{BackendChoice, IoConfig, UdpConfig};
use relay::link::{DriverConfig, TransportDriver};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use transport::crypto::StaticKeypair;
use transport::{Endpoint, EndpointConfig, Event};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn driver(cfg: EndpointConfig, backend: BackendChoice) -> TransportDriver {
    let ep = Endpoint::new(cfg, Instant::now()).unwrap();
    let udp = UdpConfig {
        reuse_port: false,
        ..UdpConfig::default()
    };
    TransportDriver::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &udp,
        ep,
        DriverConfig {
            io: IoConfig {
                backend,
                ..IoConfig::default()
            },
            ..DriverConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn dropping_connected_drivers_closes_every_fd_and_frees_the_ports() {
    for backend in [BackendChoice::Uring, BackendChoice::Epoll] {
        drop_connected_drivers(backend);
    }
    drop_uring_tcp_with_connections();
}

/// A dropped io_uring TCP server closes its ring, its listener and every accepted connection.
fn drop_uring_tcp_with_connections() {
    use engine::uring::{TcpEvent, UringTcp, UringTcpConfig};
    let before = open_fds();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut tcp = UringTcp::new(listener, UringTcpConfig::default()).unwrap();
    let clients: Vec<_> = (0..5)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut accepted = 0;
    while accepted < 5 {
        assert!(Instant::now() < deadline, "accepts did not complete");
        tcp.wait(Some(Duration::from_millis(10))).unwrap();
        tcp.reap(&mut |e| {
            if let TcpEvent::Accepted(..) = e {
                accepted += 1;
            }
        });
    }
    assert_eq!(
        open_fds(),
        before + 2 + 5 + 5,
        "ring, listener, 5 accepted, 5 clients"
    );
    drop(tcp);
    assert_eq!(open_fds(), before + 5, "only the clients' fds remain");
    drop(clients);
    assert_eq!(open_fds(), before);
}

fn drop_connected_drivers(backend: BackendChoice) {
    let before = open_fds();
    let client_key = StaticKeypair::generate().unwrap();
    let server_key = StaticKeypair::generate().unwrap();
    let server_pub = server_key.public;
    let client_pub = client_key.public;
    let mut client_cfg = EndpointConfig::new(client_key);
    client_cfg.accept_incoming = false;
    let mut client = driver(client_cfg, backend);
    let mut server_cfg = EndpointConfig::new(server_key);
    server_cfg.authorized_peers = vec![client_pub];
    let mut server = driver(server_cfg, backend);
    assert_eq!(
        open_fds(),
        before + 4,
        "a socket and a ring or epoll fd per driver ({backend:?})"
    );
    let ports = [client.local_addr(), server.local_addr()];

    // Both drivers on this one thread, taking turns with short waits.
    let server_addr = server.local_addr();
    client
        .endpoint_mut()
        .connect(Instant::now(), server_addr, server_pub)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let (mut client_up, mut server_up) = (false, false);
    while !(client_up && server_up) {
        assert!(Instant::now() < deadline, "handshake did not complete");
        client.poll(Duration::from_millis(1)).unwrap();
        server.poll(Duration::from_millis(1)).unwrap();
        while let Some((_, e)) = client.poll_event() {
            client_up |= matches!(e, Event::Connected { .. });
        }
        while let Some((_, e)) = server.poll_event() {
            server_up |= matches!(e, Event::Connected { .. });
        }
    }
    assert!(
        client.stats().datagrams_sent >= 2,
        "Initial twice (before and after the cookie)"
    );

    drop(client);
    drop(server);
    assert_eq!(open_fds(), before, "every fd closed");
    for addr in ports {
        // Without SO_REUSEPORT/SO_REUSEADDR, binding the same port succeeds only if the old socket is closed.
        std::net::UdpSocket::bind(addr).unwrap();
    }
}
