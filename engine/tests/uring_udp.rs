//! The io_uring UDP socket on real loopback sockets: GSO sends, GRO and multishot receives, the buffer ring
//! running dry, and resources given back at drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use engine::uring::udp::UringUdpConfig;
use engine::uring::UringUdp;
use engine::{UdpConfig, UdpSocket};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn uring(config: UringUdpConfig) -> UringUdp {
    let socket = UdpSocket::bind(loopback(), &UdpConfig::default()).unwrap();
    UringUdp::new(socket, &config).unwrap()
}

/// Reaps until `want` datagrams (segments) arrived or 5 s pass; returns them with their sources.
fn receive(u: &mut UringUdp, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        u.wait(Some(Duration::from_millis(50))).unwrap();
        u.reap(&mut |from, bytes, segment| {
            for d in engine::offload::segments(&bytes, segment) {
                got.push((from, d.to_vec()));
            }
        });
    }
    got
}

#[test]
fn one_gso_send_arrives_as_separate_datagrams() {
    let mut tx = uring(UringUdpConfig::default());
    assert!(tx.gso(), "loopback takes GSO");
    let rx = std::net::UdpSocket::bind(loopback()).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let buf = tx.send_buffer().unwrap();
    for i in 0..10u8 {
        buf.extend(std::iter::repeat_n(i, 1200));
    }
    buf.extend([99u8; 500]); // a shorter last segment
    tx.queue_send(rx.local_addr().unwrap(), 1200).unwrap();
    tx.wait(Some(Duration::ZERO)).unwrap();
    let mut seen = Vec::new();
    let mut b = [0u8; 2000];
    for _ in 0..11 {
        let (n, from) = rx.recv_from(&mut b).unwrap();
        assert_eq!(from, tx.socket().local_addr());
        seen.push((n, b[0]));
    }
    let mut expect: Vec<(usize, u8)> = (0..10u8).map(|i| (1200, i)).collect();
    expect.push((500, 99));
    assert_eq!(seen, expect);
    // The slot comes back with its completion.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tx.sends_in_flight() > 0 && Instant::now() < deadline {
        tx.wait(Some(Duration::from_millis(10))).unwrap();
        tx.reap(&mut |_, _, _| {});
    }
    assert_eq!(tx.sends_in_flight(), 0);
    assert_eq!(tx.stats().send_completions, 1);
    assert_eq!(tx.stats().send_errors, 0);
}

#[test]
fn multishot_receive_with_gro_delivers_every_datagram_in_order() {
    let mut rx = uring(UringUdpConfig::default());
    assert!(rx.gro());
    let tx = std::net::UdpSocket::bind(loopback()).unwrap();
    let to = rx.socket().local_addr();
    rx.wait(Some(Duration::ZERO)).unwrap(); // arms the receive
    for i in 0..500u32 {
        let mut d = vec![0u8; 1000];
        d[..4].copy_from_slice(&i.to_be_bytes());
        tx.send_to(&d, to).unwrap();
    }
    let got = receive(&mut rx, 500);
    assert_eq!(got.len(), 500);
    for (i, (from, d)) in got.iter().enumerate() {
        assert_eq!(*from, tx.local_addr().unwrap());
        assert_eq!(d.len(), 1000);
        assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()), i as u32);
    }
    let s = rx.stats();
    let b = rx.buffer_stats();
    assert_eq!(
        b.taken, s.recv_completions,
        "each completion handed over its buffer"
    );
    if b.taken - b.copied > 8 {
        // The test copied each datagram and dropped the buffer: allocations come back for reuse.
        assert!(b.reclaimed > 0, "{b:?}");
    }
    assert!(s.recv_completions >= 1 && s.recv_completions <= 500, "{s:?}");
    assert_eq!(s.recv_errors, 0);
}

#[test]
fn a_dry_buffer_ring_is_counted_and_receiving_resumes() {
    // Two small buffers and no GRO: a burst of 300 datagrams between two reaps must run the ring dry.
    let mut rx = uring(UringUdpConfig {
        buffer_count: 2,
        buffer_bytes: 2048,
        gro: false,
        ..UringUdpConfig::default()
    });
    let tx = std::net::UdpSocket::bind(loopback()).unwrap();
    let to = rx.socket().local_addr();
    rx.wait(Some(Duration::ZERO)).unwrap();
    for _ in 0..300 {
        tx.send_to(&[1u8; 100], to).unwrap();
    }
    // Let the kernel run the receive's task work against the empty ring before reaping anything.
    std::thread::sleep(Duration::from_millis(50));
    let got = receive(&mut rx, 300);
    let s = rx.stats();
    assert!(s.recv_no_buffers >= 1, "the ring ran dry: {s:?}");
    assert!(s.recv_rearmed >= 1, "{s:?}");
    assert_eq!(
        got.len(),
        300,
        "datagrams wait in the socket buffer, none lost: {s:?}"
    );
    let b = rx.buffer_stats();
    // 100-byte datagrams are copied out, their buffers straight back in the ring.
    assert_eq!(b.copied, b.taken, "{b:?}");
    assert_eq!(b.allocated, 0, "{b:?}");
    // And the socket still works after the re-arm.
    tx.send_to(b"after", to).unwrap();
    let after = receive(&mut rx, 1);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].1, b"after");
}

#[test]
fn an_oversized_datagram_is_counted_and_dropped() {
    let mut rx = uring(UringUdpConfig {
        buffer_bytes: 512,
        gro: false,
        ..UringUdpConfig::default()
    });
    let tx = std::net::UdpSocket::bind(loopback()).unwrap();
    let to = rx.socket().local_addr();
    rx.wait(Some(Duration::ZERO)).unwrap();
    tx.send_to(&[7u8; 4000], to).unwrap();
    tx.send_to(&[8u8; 100], to).unwrap();
    let got = receive(&mut rx, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, vec![8u8; 100]);
    assert_eq!(rx.stats().recv_truncated, 1);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn dropping_the_socket_closes_the_ring_and_the_socket() {
    // Other tests run in parallel threads and open fds too: measure over many drops and allow slack.
    let before = open_fds();
    for _ in 0..50 {
        let mut u = uring(UringUdpConfig::default());
        u.wait(Some(Duration::ZERO)).unwrap(); // armed receive in flight at drop
        let b = u.send_buffer().unwrap();
        b.extend_from_slice(&[0u8; 100]);
        u.queue_send(SocketAddr::from(([127, 0, 0, 1], 9)), 100).unwrap();
        drop(u);
    }
    let after = open_fds();
    assert!(after <= before + 8, "fds leaked: {before} -> {after}");
}

/// A one-datagram receive is copied out and its buffer goes straight back (copy-break); a larger one is
/// handed over and replaced.
#[test]
fn small_receives_are_copied_and_large_ones_handed_over() {
    let mut rx = uring(UringUdpConfig::default());
    let tx = std::net::UdpSocket::bind(loopback()).unwrap();
    let to = rx.socket().local_addr();
    rx.wait(Some(Duration::ZERO)).unwrap();
    tx.send_to(&[7u8; 1_200], to).unwrap();
    let got = receive(&mut rx, 1);
    assert_eq!(got[0].1, vec![7u8; 1_200]);
    let b = rx.buffer_stats();
    assert_eq!((b.taken, b.copied, b.allocated), (1, 1, 0), "{b:?}");
    tx.send_to(&[8u8; 8_000], to).unwrap();
    let got = receive(&mut rx, 1);
    assert_eq!(got[0].1, vec![8u8; 8_000]);
    let b = rx.buffer_stats();
    assert_eq!((b.taken, b.copied), (2, 1), "{b:?}");
    assert_eq!(b.allocated + b.reclaimed, 1, "{b:?}");
}

/// A send's completion, ready as a batched wait begins (a UDP send completes while it is submitted), does
/// not end the wait: the wait goes on until a datagram arrives, and one reap hands out both. (Before, the
/// wait returned with only the send's completion, and the caller's loop made a pass for nothing.) Where the
/// kernel cannot batch waits (before 6.12), a wait ends at its first completion and this does not apply.
#[test]
fn a_sends_completion_does_not_end_a_batched_wait() {
    let mut u = uring(UringUdpConfig {
        ring: engine::uring::RingConfig {
            batch: engine::uring::WaitBatch::PACED,
            ..engine::uring::RingConfig::default()
        },
        ..UringUdpConfig::default()
    });
    let batching = u.features().min_wait;
    println!("kernel batches waits: {batching}");
    let addr = u.socket().local_addr();
    // Arm the receive.
    u.wait(Some(Duration::from_millis(1))).unwrap();
    u.reap(&mut |_, _, _| panic!("nothing was sent to it"));

    // One send to a socket that never answers, and a datagram to ours 50 ms later.
    let sink = std::net::UdpSocket::bind(loopback()).unwrap();
    let buf = u.send_buffer().expect("a free send slot");
    buf.extend_from_slice(b"to the sink");
    let len = buf.len();
    u.queue_send(sink.local_addr().unwrap(), len).unwrap();
    let peer = std::thread::spawn(move || {
        let s = std::net::UdpSocket::bind(loopback()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.send_to(b"late", addr).unwrap();
    });
    u.wait(Some(Duration::from_secs(5))).unwrap();
    let mut got = 0;
    u.reap(&mut |_, bytes, _| {
        assert_eq!(&bytes[..], b"late");
        got += 1;
    });
    peer.join().unwrap();
    assert_eq!(u.stats().send_completions, 1, "{:?}", u.stats());
    if batching {
        assert_eq!(
            got, 1,
            "the wait ended at the send's completion, before the datagram"
        );
    }
    let mut b = [0u8; 64];
    sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(sink.recv(&mut b).unwrap(), len, "the send went out");
}
