//! Automatic fallback to epoll where io_uring is refused, as under Docker's default seccomp profile: a child
//! process (this test binary, re-run) installs a seccomp filter that answers `io_uring_setup` with `EPERM`,
//! then opens a socket with the `auto` backend and moves datagrams through it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use engine::{Backend, BackendChoice, DatagramIo, IoConfig, UdpConfig, UdpSocket};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "POPLINE_ENGINE_SECCOMP_CHILD";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Runs only in the child: under the filter, `auto` must land on epoll, and the socket must work.
#[test]
fn child_under_seccomp() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    engine::seccomp::deny_io_uring_setup().unwrap();
    let refused = engine::uring::probe().unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EPERM));

    let forced = DatagramIo::open(
        UdpSocket::bind(loopback(), &UdpConfig::default()).unwrap(),
        &IoConfig {
            backend: BackendChoice::Uring,
            ..IoConfig::default()
        },
    );
    assert!(
        forced.is_err(),
        "a forced uring backend fails where io_uring is refused"
    );

    let socket = UdpSocket::bind(loopback(), &UdpConfig::default()).unwrap();
    let mut io = DatagramIo::open(socket, &IoConfig::default()).unwrap();
    assert_eq!(io.backend(), Backend::Epoll);
    let reason = io.fallback_reason().unwrap_or_default().to_string();
    assert!(reason.contains("not permitted"), "{reason}");

    let peer = std::net::UdpSocket::bind(loopback()).unwrap();
    peer.send_to(b"through epoll", io.socket().local_addr()).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.is_empty() && Instant::now() < deadline {
        io.wait(Some(Duration::from_millis(50))).unwrap();
        io.receive(8, &mut |_, bytes, _| got.push(bytes.to_vec()));
    }
    assert_eq!(got, vec![b"through epoll".to_vec()]);
    println!("SECCOMP-CHILD-OK backend={}", io.backend().name());
}

#[test]
fn auto_backend_falls_back_to_epoll_when_seccomp_refuses_io_uring() {
    let out = engine::seccomp::rerun_test_in_child("child_under_seccomp", CHILD_ENV).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains("SECCOMP-CHILD-OK backend=epoll"),
        "{stdout}\n{stderr}"
    );
    // Outside the filter this process gets io_uring.
    let io = DatagramIo::open(
        UdpSocket::bind(loopback(), &UdpConfig::default()).unwrap(),
        &IoConfig::default(),
    )
    .unwrap();
    assert_eq!(io.backend(), Backend::Uring);
}
