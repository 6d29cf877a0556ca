//! Issue 17's node limits against the real binary, on both IO backends: TCP keepalive on accepted
//! connections, the per-IP connection cap (refused, counted in `/metrics`), a player of a stream nobody
//! publishes told `NetStream.Play.StreamNotFound` after `rtmp.play_wait_ms`, and a viewer that stopped
//! reading closed after `rtmp.write_stall_timeout_ms`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// What `ss` says of the node's established connections on `port` (timers included).
fn sockets_on(port: u16) -> String {
    let output = Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("ss (iproute2) must be installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn limits_on(backend: &str) {
    let scratch = Scratch::new(&format!("limits-{backend}"));
    // The held connections send nothing: a long handshake timeout keeps them.
    let config = base_config_on(&scratch.0, backend)
        .replace("handshake_timeout_ms = 3000", "handshake_timeout_ms = 60000")
        .replace(
            "[rtmp]\n",
            "[rtmp]\ntcp_keepalive_s = 7\nmax_connections_per_ip = 4\nplay_wait_ms = 500\n",
        );
    let node = Popline::start(&scratch.0, &config);

    // Keepalive: every accepted connection carries a keepalive timer (old code: none, only TCP_NODELAY).
    let mut held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(node.rtmp).unwrap()).collect();
    assert!(
        wait_until(Duration::from_secs(3), || sockets_on(node.rtmp.port())
            .lines()
            .filter(|l| l.contains("keepalive"))
            .count()
            == 3),
        "{backend}: no keepalive timer on accepted connections:\n{}",
        sockets_on(node.rtmp.port())
    );

    // A player of a stream nobody publishes hears StreamNotFound after play_wait_ms and ends.
    let started = Instant::now();
    let player = play(&node.url("live/nobody"), &scratch.path("nobody.flv"));
    let (ok, stderr) = wait(player, Duration::from_secs(10));
    assert!(
        !ok,
        "{backend}: playing a stream nobody publishes succeeded: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{backend}: the player waited {:?}",
        started.elapsed()
    );
    assert!(
        node.log_text().contains("play: stream not found"),
        "{backend}: not logged:\n{}",
        node.log_text()
    );

    // Per-IP cap: 3 held + 1 more from 127.0.0.1 fill it; the next is closed at once.
    held.push(TcpStream::connect(node.rtmp).unwrap());
    // The 4th must be accepted before the 5th connects (the two cores accept in any order).
    assert!(
        wait_until(Duration::from_secs(3), || node
            .api("GET", "/api/v1/stats", None)
            .1
            .contains("\"connections\":4,")),
        "{backend}: the node does not hold 4 connections: {}",
        node.api("GET", "/api/v1/stats", None).1
    );
    let mut over = TcpStream::connect(node.rtmp).unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(3)),
        "{backend}: a 5th connection from one address stayed open"
    );
    let (status, metrics) = node.api("GET", "/metrics", None);
    assert_eq!(status, 200);
    for line in [
        "popline_limit_hits_total{limit=\"per_ip\"} 1",
        "popline_limit_hits_total{limit=\"play_wait\"} 1",
    ] {
        assert!(
            metrics.contains(line),
            "{backend}: no `{line}` in /metrics:\n{metrics}"
        );
    }
    drop(held);
}

/// An AVC keyframe of about `bytes` bytes (one IDR NAL unit).
fn keyframe(bytes: usize) -> bytes::Bytes {
    let nal = bytes.max(16);
    let mut body = vec![0x17, 1, 0, 0, 0];
    body.extend_from_slice(&(nal as u32).to_be_bytes());
    body.push(0x65);
    body.resize(body.len() + nal - 1, 0x42);
    bytes::Bytes::from(body)
}

fn stalled_viewer_on(backend: &str) {
    let scratch = Scratch::new(&format!("stall-{backend}"));
    let config =
        base_config_on(&scratch.0, backend).replace("[rtmp]\n", "[rtmp]\nwrite_stall_timeout_ms = 1000\n");
    let node = Popline::start(&scratch.0, &config);
    // A player with a 4 KiB receive buffer that never reads after play starts.
    let mut stuck = rtmp_client::Client::connect(node.rtmp, "live", Some(4096));
    stuck.play("flood");
    let mut publisher = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(publisher.try_publish("flood"));
    let frame = keyframe(64 << 10);
    let stats = || node.api("GET", "/api/v1/stats", None).1;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut timestamp = 0;
    while Instant::now() < deadline && !stats().contains("\"write_stall\":1") {
        for _ in 0..10 {
            publisher.send_media(true, frame.clone(), timestamp);
            timestamp += 40;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = stats();
    assert!(
        stats.contains("\"write_stall\":1") && stats.contains("\"viewers\":0"),
        "{backend}: a viewer that reads nothing is still served: {stats}"
    );
    assert!(node.log_text().contains("write stalled"), "{backend}: not logged");
    drop(stuck);
}

#[test]
fn a_viewer_that_stops_reading_is_closed_on_io_uring() {
    stalled_viewer_on("uring");
}

#[test]
fn a_viewer_that_stops_reading_is_closed_on_epoll() {
    stalled_viewer_on("epoll");
}

#[test]
fn limits_hold_on_io_uring() {
    limits_on("uring");
}

#[test]
fn limits_hold_on_epoll() {
    limits_on("epoll");
}
