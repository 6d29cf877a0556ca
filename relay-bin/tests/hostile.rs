//! Hostile input: each attack is refused for that one peer while a concurrent stream keeps playing whole.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Connects and completes the RTMP handshake by hand; returns the socket ready for chunks.
fn handshaken(addr: std::net::SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rtmp_client::handshake(&mut socket);
    socket
}

/// A type 0 chunk header on csid 3 (message stream 0).
fn chunk_header(type_id: u8, length: u32) -> Vec<u8> {
    let mut header = vec![0x03, 0, 0, 0];
    header.extend_from_slice(&length.to_be_bytes()[1..]);
    header.push(type_id);
    header.extend_from_slice(&0u32.to_le_bytes());
    header
}

#[test]
fn hostile_peers_are_refused_while_a_stream_keeps_playing() {
    engine::limits::raise_nofile_limit().unwrap();
    let scratch = Scratch::new("hostile");
    let node = Popline::start(&scratch.0, &base_config(&scratch.0));
    let url = node.url("live/steady");
    let recording = scratch.path("steady.flv");
    let player = play(&url, &recording);
    std::thread::sleep(Duration::from_millis(700));
    let publisher = publish(&media("h264-aac-360p25-baseline.flv"), &url);
    std::thread::sleep(Duration::from_millis(1_000));

    // 1,000 idle half-open connections (TCP up, not a byte of RTMP).
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(node.rtmp).unwrap())
        .collect();

    // Random bytes instead of a handshake.
    let mut random = TcpStream::connect(node.rtmp).unwrap();
    let mut seed = 0x1234_5678_u64;
    let garbage: Vec<u8> = (0..65_536)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let _ = random.write_all(&garbage);
    assert!(
        closed_within(&mut random, Duration::from_secs(2)),
        "random bytes must end the session"
    );

    // A truncated handshake: C0 and half of C1, then silence.
    let mut truncated = TcpStream::connect(node.rtmp).unwrap();
    truncated.write_all(&[3u8]).unwrap();
    truncated.write_all(&vec![0u8; 700]).unwrap();

    // A 16 MiB chunk size, then a 16 MiB message.
    let mut huge = handshaken(node.rtmp);
    let mut set_chunk = chunk_header(1, 4);
    set_chunk[0] = 0x02;
    set_chunk.extend_from_slice(&0x00FF_FFFFu32.to_be_bytes());
    huge.write_all(&set_chunk).unwrap();
    huge.write_all(&chunk_header(9, 0x00FF_FFFF)).unwrap();
    let _ = huge.write_all(&vec![0u8; 1 << 20]);
    assert!(
        closed_within(&mut huge, Duration::from_secs(2)),
        "a 16 MiB message must end the session"
    );

    // A connect command holding a huge AMF0 long string (declared 4 GiB).
    let mut amf = handshaken(node.rtmp);
    let mut body = vec![0x02, 0x00, 0x07];
    body.extend_from_slice(b"connect");
    body.extend_from_slice(&[0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
    body.push(0x0C);
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    body.extend_from_slice(&[b'x'; 100]);
    let mut message = chunk_header(20, body.len() as u32);
    message.extend_from_slice(&body);
    let _ = amf.write_all(&message);
    assert!(
        closed_within(&mut amf, Duration::from_secs(2)),
        "a huge AMF string must end the session"
    );

    // The truncated handshake and the idle connections are closed by the handshake timeout (3 s here).
    assert!(
        closed_within(&mut truncated, Duration::from_secs(6)),
        "a truncated handshake must time out"
    );
    let mut still_open = 0;
    for mut socket in idle {
        if !closed_within(&mut socket, Duration::from_millis(5)) {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "idle connections must be closed by the handshake timeout"
    );

    let (published, err) = wait(publisher, Duration::from_secs(30));
    assert!(published, "publisher: {err}");
    let (played, err) = wait(player, Duration::from_secs(20));
    assert!(played, "player: {err}");
    let probe = probe(&recording);
    let expected = probe_frames(&media("h264-aac-360p25-baseline.flv"));
    println!("steady stream under attack: {probe:?}");
    assert!(
        probe.video_packets >= expected * 98 / 100,
        "{} of {expected} frames",
        probe.video_packets
    );
    assert!(decode_errors(&recording).trim().is_empty());
    let (_, stats) = node.api("GET", "/api/v1/stats", None);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    println!("stats: {stats}");
    assert!(stats["connections_rejected"].as_u64().unwrap() >= 1004);
    let log = node.log_text();
    assert!(
        log.contains("bad input"),
        "the log must say why peers were closed"
    );
}

fn probe_frames(file: &std::path::Path) -> usize {
    probe(file).video_packets
}
