//! HTTP-FLV egress end to end: real ffmpeg publishes the sample media over RTMP into the real `popline`;
//! real ffmpeg plays `http://HOST/APP/STREAM.flv` from the cores' HTTP listener; ffprobe and a full decode
//! check what arrived. Also: a late viewer starts from the GOP cache, HTTP viewers are listed, counted,
//! kicked and stopped by a forbid, and bad requests get the status that says why while others play on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

fn flv_url(node: &Popline, app_stream: &str) -> String {
    format!("http://{}/{app_stream}.flv", node.egress.expect("egress is on"))
}

/// Plays `file` over HTTP-FLV with the viewer waiting before the publisher starts; checks the recording.
fn round_trip(file_name: &str, width: u32, height: u32, backend: &str) {
    let scratch = Scratch::new("httpflv");
    let node = Popline::start(&scratch.0, &base_config_on(&scratch.0, backend));
    let expected = probe(&media(file_name)).video_packets;
    let recording = scratch.path("played.flv");
    let player = play(&flv_url(&node, "live/rt"), &recording);
    std::thread::sleep(Duration::from_millis(700));
    let publisher = publish(&media(file_name), &node.url("live/rt"));
    let (published, err) = wait(publisher, Duration::from_secs(60));
    assert!(published, "publisher: {err}\n{}", node.log_text());
    // The publisher left: after the grace period the body ends (the last chunk) and ffmpeg exits cleanly.
    let (played, err) = wait(player, Duration::from_secs(20));
    assert!(played, "player: {err}\n{}", node.log_text());
    let probe = assert_whole_playback(&recording, expected, width, height);
    println!("HTTP-FLV {file_name} on {backend}: {probe:?}");
    let log = node.log_text();
    assert!(log.contains("protocol=\"http-flv\""), "log:\n{log}");
}

#[test]
fn http_flv_baseline_plays_back_whole_and_decodes() {
    round_trip("h264-aac-360p25-baseline.flv", 640, 360, "uring");
}

#[test]
fn http_flv_bframes_plays_back_whole_and_decodes() {
    round_trip("h264-aac-720p30-bframes.flv", 1280, 720, "uring");
}

#[test]
fn http_flv_plays_back_whole_on_the_epoll_backend() {
    round_trip("h264-aac-360p25-baseline.flv", 640, 360, "epoll");
}

/// A raw HTTP request; returns the socket (for what follows) and the answer's head.
fn request(addr: SocketAddr, text: &str) -> (TcpStream, String, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    socket.write_all(text.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(got.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    let rest = got[end..].to_vec();
    (socket, head, rest)
}

/// Reads a chunked FLV body from `socket` (after `rest`) until the first video tag; returns its timestamp
/// (ms) and whether it is a keyframe.
fn first_video_tag(socket: &mut TcpStream, mut rest: Vec<u8>) -> (u32, bool) {
    // De-chunk as bytes arrive.
    let mut body = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Take whole chunks out of `rest`.
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
            if rest.len() < line_end + 2 + size + 2 {
                break;
            }
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest.drain(..line_end + 2 + size + 2);
        }
        // Walk the FLV body: the 13-byte header, then tags.
        if body.len() > 13 {
            assert_eq!(&body[..3], b"FLV");
            let mut at = 13;
            while at + 11 <= body.len() {
                let size = u32::from_be_bytes([0, body[at + 1], body[at + 2], body[at + 3]]) as usize;
                if body[at] == 9 && at + 12 <= body.len() {
                    let ts = u32::from_be_bytes([body[at + 7], body[at + 4], body[at + 5], body[at + 6]]);
                    return (ts, body[at + 11] >> 4 == 1);
                }
                at += 11 + size + 4;
            }
        }
        assert!(Instant::now() < deadline, "no video tag within 10 s");
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed before a video tag");
        rest.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_late_http_flv_viewer_starts_at_once_from_the_gop_cache() {
    let scratch = Scratch::new("httpflv-late");
    let node = Popline::start(&scratch.0, &base_config(&scratch.0));
    let publisher = publish(&media("h264-aac-360p25-baseline.flv"), &node.url("live/late"));
    std::thread::sleep(Duration::from_millis(3_000));
    // Raw: the head, CORS, and the first video tag is the cached GOP's keyframe (2 s GOPs: ~2000 ms, not
    // the next one at ~4000 ms that a viewer without the cache would wait for).
    let egress = node.egress.unwrap();
    let (mut socket, head, rest) = request(egress, "GET /live/late.flv HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: video/x-flv\r\n"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    assert!(head.contains("Access-Control-Allow-Origin: *\r\n"), "{head}");
    let (ts, key) = first_video_tag(&mut socket, rest);
    println!("late HTTP-FLV viewer: first video tag at {ts} ms, key {key}");
    assert!(key, "the first video tag is a keyframe");
    assert!(
        ts < 3_000,
        "the first video tag ({ts} ms) is not from the GOP cache"
    );
    drop(socket);
    // And with ffmpeg: the rest of the stream, whole and decodable.
    let recording = scratch.path("late.flv");
    let player = play(&flv_url(&node, "live/late"), &recording);
    let (published, err) = wait(publisher, Duration::from_secs(30));
    assert!(published, "publisher: {err}");
    let (ok, err) = wait(player, Duration::from_secs(20));
    assert!(ok, "player: {err}\n{}", node.log_text());
    let probe = probe(&recording);
    println!("late HTTP-FLV viewer (ffmpeg): {probe:?}");
    assert!(probe.first_video_is_key);
    assert!(probe.monotonic);
    assert!(
        probe.video_packets >= 100 && probe.video_packets <= 250,
        "{} frames",
        probe.video_packets
    );
    let errors = decode_errors(&recording);
    assert!(errors.trim().is_empty(), "decode errors: {errors}");
}

/// Whether `text` (a JSON array of clients) lists an `http-flv` viewer of `stream`.
fn lists_http_viewer(text: &str, stream: &str) -> bool {
    let clients: serde_json::Value = serde_json::from_str(text).unwrap();
    clients
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["protocol"] == "http-flv" && c["role"] == "viewer" && c["stream"] == stream)
}

/// The client id of the HTTP-FLV viewer connected from `socket`.
fn http_viewer_id(node: &Popline, socket: &TcpStream) -> Option<u64> {
    let peer = socket.local_addr().unwrap().to_string();
    let (_, text) = node.api("GET", "/api/v1/clients", None);
    let clients: serde_json::Value = serde_json::from_str(&text).unwrap();
    clients.as_array().unwrap().iter().find_map(|c| {
        (c["protocol"] == "http-flv" && c["peer"] == peer.as_str()).then(|| c["id"].as_u64().unwrap())
    })
}

#[test]
fn http_flv_viewers_are_listed_counted_kicked_and_stopped_by_a_forbid() {
    let scratch = Scratch::new("httpflv-admin");
    let node = Popline::start(&scratch.0, &base_config(&scratch.0));
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &node.url("live/adm"));
    let egress = node.egress.unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        node.api("GET", "/api/v1/streams", None).1.contains("live/adm")
    }));
    let (mut kicked, head, _) = request(egress, "GET /live/adm.flv HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut forbidden, head, _) = request(egress, "GET /live/adm.flv HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("chunked"), "HTTP/1.0 gets no chunked body: {head}");
    assert!(wait_until(Duration::from_secs(5), || {
        let (_, stats) = node.api("GET", "/api/v1/stats", None);
        stats.contains("\"http_viewers\":2")
    }));
    let (_, clients) = node.api("GET", "/api/v1/clients", None);
    assert!(lists_http_viewer(&clients, "live/adm"), "{clients}");
    let (_, metrics) = node.api("GET", "/metrics", None);
    assert!(metrics.contains("popline_http_viewers 2"), "{metrics}");

    // Kick one by id: its connection closes.
    let id = http_viewer_id(&node, &kicked).unwrap();
    let (status, _) = node.api("DELETE", &format!("/api/v1/clients/{id}"), None);
    assert_eq!(status, 204);
    let start = Instant::now();
    let closed = closed_within(&mut kicked, Duration::from_secs(3));
    let (_, clients) = node.api("GET", "/api/v1/clients", None);
    assert!(closed, "the kicked viewer was still served: {clients}");
    println!("kick closed an HTTP-FLV viewer in {:?}", start.elapsed());

    // A forbid stops the other at once, and a new request is answered 403 with the reason.
    let (status, _) = node.api(
        "POST",
        "/api/v1/streams/live/adm/forbid",
        Some(r#"{"duration_s":60,"reason":"policy test"}"#),
    );
    assert_eq!(status, 200);
    assert!(
        closed_within(&mut forbidden, Duration::from_secs(2)),
        "forbid did not stop the viewer"
    );
    let (_, head, rest) = request(egress, "GET /live/adm.flv HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 403 Forbidden"), "{head}");
    assert!(
        String::from_utf8_lossy(&rest).contains("policy test"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    let (ok, _) = wait(publisher, Duration::from_secs(10));
    assert!(!ok, "the forbid kicked the publisher too");
    assert!(wait_until(Duration::from_secs(5), || {
        node.api("GET", "/api/v1/stats", None)
            .1
            .contains("\"http_viewers\":0")
    }));
}

#[test]
fn bad_http_requests_get_a_status_that_says_why_and_others_play_on() {
    let scratch = Scratch::new("httpflv-bad");
    let config = base_config(&scratch.0).replace(
        "unpublish_grace_ms = 300",
        "unpublish_grace_ms = 300\nplay_wait_ms = 500",
    );
    let node = Popline::start(&scratch.0, &config);
    let publisher = publish(&media("h264-aac-360p25-baseline.flv"), &node.url("live/ok"));
    let egress = node.egress.unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        node.api("GET", "/api/v1/streams", None).1.contains("live/ok")
    }));
    let (mut good, head, _) = request(egress, "GET /live/ok.flv HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let status_of = |text: &str| {
        let (_, head, rest) = request(egress, text);
        let status = head.split_whitespace().nth(1).unwrap_or("").to_string();
        (status, String::from_utf8_lossy(&rest).to_string())
    };
    let (status, why) = status_of("GET /live/nobody.flv HTTP/1.1\r\n\r\n");
    assert_eq!(status, "404", "a stream nobody publishes, after play_wait_ms");
    assert!(why.contains("not published"), "{why}");
    assert_eq!(status_of("POST /live/ok.flv HTTP/1.1\r\n\r\n").0, "405");
    assert_eq!(status_of("GET /live/ok.mp4 HTTP/1.1\r\n\r\n").0, "404");
    assert_eq!(status_of("GET /live/a%2fb.flv HTTP/1.1\r\n\r\n").0, "400");
    assert_eq!(status_of("\x03garbage that is not HTTP\r\n\r\n").0, "400");
    let huge = format!("GET /live/ok.flv HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(status_of(&huge).0, "431");
    let (status, _) = status_of("OPTIONS /live/ok.flv HTTP/1.1\r\nOrigin: https://shop.example\r\n\r\n");
    assert_eq!(status, "204");
    // RTMP bytes on the HTTP port are a bad request, not a crash; HTTP on the RTMP port ends that client.
    let mut rtmp_on_http = TcpStream::connect(egress).unwrap();
    rtmp_on_http.write_all(&[3u8; 1537]).unwrap();
    assert!(closed_within(&mut rtmp_on_http, Duration::from_secs(5)));

    // The good viewer still gets bytes.
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        got += good.read(&mut buf).unwrap();
    }
    assert!(got > 10_000, "the good viewer got {got} bytes in 3 s");
    let _ = wait(publisher, Duration::from_secs(20));
    let log = node.log_text();
    assert!(log.contains("HTTP request refused"), "{log}");
}
