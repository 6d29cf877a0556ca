//! One core's TCP and UDP on one io_uring ([`CoreIo`]): a TCP echo and a UDP echo served by the same ring and
//! the same thread, against real loopback clients; a cross-core waker ends a wait; and the drivers' fds and
//! buffers are released at drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use engine::uring::udp::UringUdpConfig;
use engine::uring::{CoreEvent, CoreIo, RingConfig, TcpEvent, UdpId, UringTcpConfig, WaitBatch};
use engine::{UdpConfig, UdpSocket, Waker};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Echoes TCP bytes and UDP datagrams on one ring until `stop`; returns the ring's `io_uring_enter` count and
/// the number of completions each kind of event came in.
fn serve(stop: Arc<AtomicBool>) -> (SocketAddr, SocketAddr, thread::JoinHandle<(u64, u64, u64)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let mut io = CoreIo::new(&RingConfig::default()).unwrap();
        let tcp = io.listen(listener, UringTcpConfig::default()).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpConfig::default()).unwrap();
        let udp_addr = socket.local_addr();
        let udp = io.add_udp(socket, &UringUdpConfig::default()).unwrap();
        tx.send(udp_addr).unwrap();
        let (mut tcp_events, mut datagrams) = (0u64, 0u64);
        while !stop.load(Ordering::Acquire) {
            io.wait(Some(Duration::from_millis(10))).unwrap();
            let mut echo = Vec::new();
            let mut back: Vec<(UdpId, SocketAddr, Vec<u8>)> = Vec::new();
            io.reap(&mut |e| match e {
                CoreEvent::Tcp(listener, TcpEvent::Data(id, d)) => {
                    assert_eq!(listener, tcp);
                    tcp_events += 1;
                    echo.push((id, Bytes::copy_from_slice(d)));
                }
                CoreEvent::Tcp(..) => tcp_events += 1,
                CoreEvent::Datagram {
                    socket,
                    from,
                    bytes,
                    segment,
                } => {
                    datagrams += 1;
                    assert_eq!(segment, None, "the client sends one datagram at a time");
                    back.push((socket, from, bytes.to_vec()));
                }
            });
            for (id, d) in echo {
                io.tcp(tcp).unwrap().send(id, d).unwrap();
            }
            for (socket, from, bytes) in back {
                assert_eq!(socket, udp);
                let buf = io.udp(socket).unwrap().send_buffer().unwrap();
                buf.extend_from_slice(&bytes);
                let len = buf.len();
                io.udp_queue_send(socket, from, len).unwrap();
            }
        }
        (io.enters(), tcp_events, datagrams)
    });
    let udp_addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    (tcp_addr, udp_addr, handle)
}

#[test]
fn one_ring_serves_tcp_and_udp_on_one_thread() {
    let stop = Arc::new(AtomicBool::new(false));
    let (tcp_addr, udp_addr, server) = serve(stop.clone());

    let tcp_client = thread::spawn(move || {
        let mut s = TcpStream::connect(tcp_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let mut w = s.try_clone().unwrap();
        let sent = data.clone();
        let writer = thread::spawn(move || w.write_all(&sent).unwrap());
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).unwrap();
        writer.join().unwrap();
        assert!(back == data, "the TCP echo differs");
    });

    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..200u32 {
        let msg = format!("datagram {i}");
        client.send_to(msg.as_bytes(), udp_addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from, udp_addr);
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    tcp_client.join().unwrap();
    stop.store(true, Ordering::Release);
    let (enters, tcp_events, datagrams) = server.join().unwrap();
    assert!(tcp_events >= 3, "accept, data, close: {tcp_events}");
    assert_eq!(datagrams, 200);
    assert!(enters > 0);
}

#[test]
fn a_waker_ends_the_wait_of_a_ring_with_both_drivers() {
    let mut io = CoreIo::new(&RingConfig::default()).unwrap();
    io.listen(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        UringTcpConfig::default(),
    )
    .unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpConfig::default()).unwrap();
    io.add_udp(socket, &UringUdpConfig::default()).unwrap();
    let waker = Arc::new(Waker::new().unwrap());
    io.watch(waker.as_raw_fd());
    // Arm everything first: nothing is ready, so a short wait times out.
    io.wait(Some(Duration::from_millis(1))).unwrap();
    io.reap(&mut |e| panic!("nothing should happen: {e:?}"));
    let w = waker.clone();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        w.wake();
    });
    let start = Instant::now();
    io.wait(Some(Duration::from_secs(10))).unwrap();
    let waited = start.elapsed();
    t.join().unwrap();
    assert!(
        waited < Duration::from_secs(5),
        "the waker did not end the wait ({waited:?})"
    );
    io.reap(&mut |e| panic!("only the waker: {e:?}"));
    assert!(io.take_woken(), "the wake is reported");
    assert!(!io.take_woken(), "once");
    assert!(waker.drain() >= 1);
    // Woken again after the drain: the multishot poll fires for each new wake.
    waker.wake();
    io.wait(Some(Duration::from_secs(10))).unwrap();
    io.reap(&mut |e| panic!("only the waker: {e:?}"));
    assert!(io.take_woken());
}

/// Two listeners on one core (the node's RTMP and HTTP ports): each connection's events name the listener
/// that accepted it, and each driver sends on its own connections.
#[test]
fn two_listeners_on_one_core_keep_their_connections_apart() {
    let mut io = CoreIo::new(&RingConfig::default()).unwrap();
    let (a, b) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let id_a = io.listen(a, UringTcpConfig::default()).unwrap();
    let id_b = io.listen(b, UringTcpConfig::default()).unwrap();
    assert_ne!(id_a, id_b);
    let mut client_a = TcpStream::connect(addr_a).unwrap();
    let mut client_b = TcpStream::connect(addr_b).unwrap();
    client_a.write_all(b"to a").unwrap();
    client_b.write_all(b"to b").unwrap();
    let mut got: Vec<(engine::uring::TcpId, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 2 && Instant::now() < deadline {
        io.wait(Some(Duration::from_millis(10))).unwrap();
        let mut echo = Vec::new();
        io.reap(&mut |e| {
            if let CoreEvent::Tcp(listener, TcpEvent::Data(id, d)) = e {
                got.push((listener, d.to_vec()));
                echo.push((listener, id, Bytes::copy_from_slice(d)));
            }
        });
        for (listener, id, d) in echo {
            io.tcp(listener).unwrap().send(id, d).unwrap();
        }
    }
    got.sort();
    assert_eq!(got, vec![(id_a, b"to a".to_vec()), (id_b, b"to b".to_vec())]);
    io.wait(Some(Duration::from_millis(10))).unwrap();
    let mut buf = [0u8; 4];
    client_a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to a");
    client_b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to b");
    assert_eq!(io.tcp_ref(id_a).unwrap().connection_count(), 1);
    assert_eq!(io.tcp_ref(id_b).unwrap().connection_count(), 1);
}

#[test]
fn dropping_the_core_closes_its_sockets() {
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    // Warm up whatever the first ring allocates once per process.
    drop(CoreIo::new(&RingConfig::default()).unwrap());
    let before = fds();
    for _ in 0..5 {
        let mut io = CoreIo::new(&RingConfig::default()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        io.listen(listener, UringTcpConfig::default()).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpConfig::default()).unwrap();
        io.add_udp(socket, &UringUdpConfig::default()).unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut accepted = false;
        while !accepted && Instant::now() < deadline {
            io.wait(Some(Duration::from_millis(10))).unwrap();
            io.reap(&mut |e| accepted |= matches!(e, CoreEvent::Tcp(_, TcpEvent::Accepted(..))));
        }
        assert!(accepted);
        drop(io);
        drop(client);
    }
    // Other tests run in parallel threads of this process: allow their few descriptors.
    let after = fds();
    assert!(after <= before + 8, "descriptors leaked: {before} -> {after}");
}

/// A core whose ring batches its waits ([`engine::uring::WaitBatch`]) and one UDP socket on it.
fn batching_core(batch: WaitBatch) -> (CoreIo, SocketAddr) {
    let mut io = CoreIo::new(&RingConfig {
        batch,
        ..RingConfig::default()
    })
    .unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpConfig::default()).unwrap();
    let addr = socket.local_addr();
    io.add_udp(socket, &UringUdpConfig::default()).unwrap();
    // Arm the receive: nothing is ready, so a short wait times out.
    io.wait(Some(Duration::from_millis(1))).unwrap();
    io.reap(&mut |e| panic!("nothing should happen: {e:?}"));
    (io, addr)
}

/// Four datagrams to `addr`, `gap` apart, the first at once; then one wait of `io`: how many it brought.
fn datagrams_in_one_wait(io: &mut CoreIo, addr: SocketAddr, gap: Duration) -> usize {
    let sender = thread::spawn(move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..4u8 {
            s.send_to(&[i; 100], addr).unwrap();
            thread::sleep(gap);
        }
    });
    io.wait(Some(Duration::from_secs(5))).unwrap();
    let mut got = 0;
    io.reap(&mut |e| {
        if matches!(e, CoreEvent::Datagram { .. }) {
            got += 1;
        }
    });
    sender.join().unwrap();
    got
}

/// Datagrams that trickle in share one wake-up while the batch's delay lasts (where the kernel can, 6.12+);
/// a timer sooner than that delay still ends the wait on time, and an idle wait with no limit does not end.
#[test]
fn a_batched_wait_gathers_a_trickle_and_keeps_its_timeout() {
    let batch = WaitBatch {
        completions: 16,
        max_delay: Duration::from_millis(150),
    };
    let (mut io, addr) = batching_core(batch);
    let batching = io.features().min_wait;
    println!("kernel batches waits: {batching}");

    // A timer sooner than the batch delay ends the wait at its own time.
    let start = Instant::now();
    io.wait(Some(Duration::from_millis(10))).unwrap();
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_millis(100),
        "a 10 ms timeout waited {waited:?}"
    );

    // Four datagrams 10 ms apart: one wait returns with all four.
    let got = datagrams_in_one_wait(&mut io, addr, Duration::from_millis(10));
    if batching {
        assert_eq!(got, 4, "the trickle shares one wake-up");
    } else {
        assert!(got >= 1);
    }

    // With nothing arriving and no limit, the wait does not end at the batch delay: a waker ends it.
    let waker = Arc::new(Waker::new().unwrap());
    io.watch(waker.as_raw_fd());
    let w = waker.clone();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(400));
        w.wake();
    });
    let start = Instant::now();
    io.wait(None).unwrap();
    let waited = start.elapsed();
    t.join().unwrap();
    io.reap(&mut |_| {});
    assert!(
        waited >= Duration::from_millis(300),
        "an idle wait with no limit ended after {waited:?}"
    );
}

/// With batching off, a wait ends at its first completion.
#[test]
fn an_unbatched_wait_ends_at_the_first_datagram() {
    let (mut io, addr) = batching_core(WaitBatch::OFF);
    let got = datagrams_in_one_wait(&mut io, addr, Duration::from_millis(100));
    assert!((1..4).contains(&got), "{got} datagrams in the first wake-up");
}

/// A wait widened for a train (`WaitBatch::for_train`) gathers the train's datagrams in one wake-up and
/// ends by the train's delay, not at a longer timeout; a plain ring's batch stays off, and a train of one
/// changes nothing.
#[test]
fn a_train_wait_gathers_the_train_within_its_delay() {
    assert_eq!(
        WaitBatch::OFF.for_train(Some((8, Duration::from_secs(1)))),
        WaitBatch::OFF
    );
    assert_eq!(
        WaitBatch::PACED.for_train(Some((1, Duration::from_secs(1)))),
        WaitBatch::PACED
    );
    let wide = WaitBatch::PACED.for_train(Some((1_000, Duration::from_millis(1))));
    assert_eq!(wide.completions, engine::uring::MAX_TRAIN_COMPLETIONS);
    assert_eq!(wide.max_delay, Duration::from_millis(1));
    // A delay shorter than the batch's own keeps the batch's.
    let short = WaitBatch::PACED.for_train(Some((4, Duration::from_micros(10))));
    assert_eq!(short.max_delay, WaitBatch::PACED.max_delay);

    let (mut io, addr) = batching_core(WaitBatch::PACED);
    let batching = io.features().min_wait;
    // Four datagrams 20 ms apart, the last at 60 ms: a train due in within 100 ms.
    io.set_wait_batch(WaitBatch::PACED.for_train(Some((4, Duration::from_millis(100)))));
    assert_eq!(io.wait_batch().completions, 4);
    let start = Instant::now();
    let got = datagrams_in_one_wait(&mut io, addr, Duration::from_millis(20));
    let waited = start.elapsed();
    if batching {
        assert_eq!(got, 4, "the train shares one wake-up");
        assert!(waited >= Duration::from_millis(55), "{waited:?}");
    } else {
        assert!(got >= 1);
    }
    assert!(
        waited < Duration::from_secs(1),
        "the wait went on for {waited:?}, past the train's delay, towards its 5 s timeout"
    );
}
