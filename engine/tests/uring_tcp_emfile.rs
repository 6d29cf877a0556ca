//! Out of file descriptors: a listener whose accepts fail must not make the ring spin (a multishot accept
//! re-armed at every wait fails again at once); accepts pause, and resume once descriptors are free.
//!
//! This file holds a single test: it lowers the process's descriptor limit, which no other test may see.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use engine::uring::{TcpEvent, UringTcp, UringTcpConfig};
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn nofile() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit that outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0);
    limit
}

fn set_nofile(limit: libc::rlimit) {
    // SAFETY: `limit` is a valid rlimit that outlives the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0);
}

fn highest_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
        .max()
        .unwrap_or(0)
}

#[test]
fn out_of_descriptors_pauses_accepts_instead_of_spinning_and_recovers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut tcp = UringTcp::new(listener, UringTcpConfig::default()).unwrap();
    let mut accepted = 0usize;
    let reap = |tcp: &mut UringTcp| {
        let mut n = 0;
        tcp.reap(&mut |e| {
            if let TcpEvent::Accepted(..) = e {
                n += 1;
            }
        });
        n
    };
    // The clients wait in the backlog; the ring's accept is armed at its first wait, below, which is when
    // the kernel reads the descriptor limit it will honour.
    let clients: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();

    // No descriptor left: the limit at the highest one in use, and every free number below it taken.
    let saved = nofile();
    set_nofile(libc::rlimit {
        rlim_cur: highest_fd() + 1,
        rlim_max: saved.rlim_max,
    });
    let mut fillers = Vec::new();
    while let Ok(f) = File::open("/dev/null") {
        fillers.push(f);
    }
    let before = tcp.stats();
    let started = Instant::now();
    let mut waits = 0;
    while started.elapsed() < Duration::from_millis(300) {
        tcp.wait(Some(Duration::from_millis(10))).unwrap();
        accepted += reap(&mut tcp);
        waits += 1;
    }
    let during = tcp.stats();
    drop(fillers);
    set_nofile(saved);

    assert!(
        during.accept_refused > before.accept_refused,
        "no accept failed: {during:?}"
    );
    assert!(during.accept_pauses >= 1, "{during:?}");
    // Paused, the ring sleeps out each 10 ms wait; spinning, it returned at once thousands of times.
    assert!(
        waits < 100,
        "{waits} waits in 300 ms: the ring spun on the failing accept"
    );

    // Descriptors free again: every waiting client gets in.
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted < clients.len() && Instant::now() < deadline {
        tcp.wait(Some(Duration::from_millis(20))).unwrap();
        accepted += reap(&mut tcp);
    }
    assert_eq!(accepted, clients.len(), "{:?}", tcp.stats());
    assert_eq!(tcp.connection_count(), clients.len());
}
