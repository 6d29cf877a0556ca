//! HLS egress end to end: real ffmpeg publishes the sample media over RTMP into the real `popline`; real
//! ffmpeg plays `http://HOST/APP/STREAM/index.m3u8` (fMP4 segments) from the cores' HTTP listener; ffprobe
//! and a full decode check what arrived. Also: LL-HLS parts, blocking playlist reload and preload hints;
//! a forbid stops HLS at once with 403; sessions are counted once across cores.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// One GET on a connection of its own (`Connection: close`); returns (status, headers, body).
fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: pop\r\nConnection: close\r\n{extra}\r\n").as_bytes())
        .unwrap();
    let mut all = Vec::new();
    socket.read_to_end(&mut all).unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(all.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, all[end..].to_vec())
}

/// Plays a live HLS playlist from its first segment into `out` until the playlist ends.
fn play_hls(url: &str, out: &std::path::Path) -> std::process::Child {
    play_with(url, &["-live_start_index", "0"], out, "mp4")
}

fn round_trip(file_name: &str, width: u32, height: u32, low_latency: bool) {
    let scratch = Scratch::new("hls");
    let mut config = base_config(&scratch.0);
    if low_latency {
        config.push_str("[apps.live]\nlow_latency_hls = true\n");
    }
    let node = Popline::start(&scratch.0, &config);
    let expected = probe(&media(file_name)).video_packets;
    let egress = node.egress.unwrap();
    let recording = scratch.path("played.mp4");
    // The player asks before the publisher starts: the playlist waits for the first segment.
    let player = play_hls(&format!("http://{egress}/live/hls/index.m3u8"), &recording);
    std::thread::sleep(Duration::from_millis(500));
    let publisher = publish(&media(file_name), &node.url("live/hls"));
    let (published, err) = wait(publisher, Duration::from_secs(60));
    assert!(published, "publisher: {err}\n{}", node.log_text());
    // After the grace period the playlist ends (EXT-X-ENDLIST) and ffmpeg finishes.
    let (played, err) = wait(player, Duration::from_secs(30));
    assert!(played, "player: {err}\n{}", node.log_text());
    let probe = assert_whole_playback(&recording, expected, width, height);
    println!("HLS {file_name} (low latency {low_latency}): {probe:?}");
    assert!(node.log_text().contains("HLS packaging starts"));
}

#[test]
fn hls_baseline_plays_back_whole_and_decodes() {
    round_trip("h264-aac-360p25-baseline.flv", 640, 360, false);
}

#[test]
fn ll_hls_bframes_plays_back_whole_and_decodes() {
    round_trip("h264-aac-720p30-bframes.flv", 1280, 720, true);
}

/// The value of `NAME=` in a tag line's attributes.
fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(',').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| k.ends_with(name))
            .map(|(_, v)| v.trim_matches('"'))
    })
}

#[test]
fn ll_hls_blocks_playlist_reloads_and_hinted_parts_until_they_exist() {
    let scratch = Scratch::new("llhls");
    let mut config = base_config(&scratch.0);
    config.push_str("[apps.live]\nlow_latency_hls = true\n");
    let node = Popline::start(&scratch.0, &config);
    let egress = node.egress.unwrap();
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &node.url("live/ll"));
    // A viewer without a session gets a multivariant playlist whose one variant carries its new session.
    let (status, head, body) = get(egress, "/live/ll/index.m3u8", "");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: application/vnd.apple.mpegurl"),
        "{head}"
    );
    let master = String::from_utf8(body).unwrap();
    println!("{master}");
    assert!(master.contains("#EXT-X-STREAM-INF:BANDWIDTH="), "{master}");
    assert!(
        master.contains("CODECS=\"avc1.")
            && master.contains("mp4a.40.2")
            && master.contains("RESOLUTION=1280x720")
    );
    let variant = master
        .lines()
        .find(|l| l.starts_with("index.m3u8?session="))
        .unwrap()
        .to_string();
    let cookie = variant.trim_start_matches("index.m3u8?session=").to_string();
    let (status, head, body) = get(egress, &format!("/live/ll/{variant}"), "");
    assert_eq!(status, 200, "{head}");
    let text = String::from_utf8(body).unwrap();
    println!("{text}");
    assert!(
        text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"),
        "{text}"
    );
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.500"), "{text}");
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{text}");
    let hint = text
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))
        .unwrap();
    let uri = attribute(hint, "URI").unwrap();
    let (msn, part) = uri
        .trim_start_matches("part-")
        .split(".m4s")
        .next()
        .unwrap()
        .split_once('.')
        .unwrap();
    // The hinted part does not exist yet: a request for it waits until it does, then gets it whole.
    let started = Instant::now();
    let (status, head, part_bytes) = get(egress, &format!("/live/ll/{uri}"), "");
    let waited = started.elapsed();
    assert_eq!(status, 200, "{head}");
    assert_eq!(&part_bytes[4..8], b"moof");
    println!("the hinted part {msn}.{part} came after {waited:?}");
    // A blocking reload for the part after it returns once that exists, and lists it.
    let next = part.parse::<usize>().unwrap() + 1;
    let started = Instant::now();
    let (status, _, body) = get(
        egress,
        &format!("/live/ll/index.m3u8?_HLS_msn={msn}&_HLS_part={next}"),
        &format!("Cookie: popline_hls={cookie}\r\n"),
    );
    let waited = started.elapsed();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let listed = format!("part-{msn}.{next}.m4s");
    let next_segment = format!("part-{}.0.m4s", msn.parse::<u64>().unwrap() + 1);
    assert!(
        text.contains(&listed) || text.contains(&next_segment),
        "{listed} not in:\n{text}"
    );
    assert!(waited < Duration::from_secs(3), "blocked {waited:?}");
    println!("a blocking reload for {msn}.{next} answered after {waited:?}");
    // Both requests carried the same session: one session.
    let (_, streams) = node.api("GET", "/api/v1/streams", None);
    assert!(streams.contains("\"hls_sessions\":1"), "{streams}");
    // Parts and segments outside the window are not found, with a reason.
    let (status, _, why) = get(egress, "/live/ll/seg-999.m4s", "");
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&why).contains("not in the window"));
    let _ = wait(publisher, Duration::from_secs(30));
}

#[test]
fn a_forbid_stops_hls_at_once_with_403_and_sessions_count_once() {
    let scratch = Scratch::new("hls-forbid");
    let node = Popline::start(&scratch.0, &base_config(&scratch.0));
    let egress = node.egress.unwrap();
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &node.url("live/fb"));
    let (status, head, _) = get(egress, "/live/fb/index.m3u8", "");
    assert_eq!(status, 200, "{head}");
    // Two more sessions, by query token and by cookie; the first playlist request made a fourth.
    get(egress, "/live/fb/index.m3u8?session=aa", "");
    get(egress, "/live/fb/index.m3u8?session=aa", "");
    get(egress, "/live/fb/index.m3u8", "Cookie: popline_hls=bb\r\n");
    let (_, streams) = node.api("GET", "/api/v1/streams", None);
    assert!(streams.contains("\"hls_sessions\":3"), "{streams}");
    let (_, metrics) = node.api("GET", "/metrics", None);
    assert!(
        metrics.contains("popline_stream_hls_sessions{stream=\"live/fb\"} 3"),
        "{metrics}"
    );
    // A segment request waiting for the segment in progress is answered 403 by the forbid.
    let waiting = std::thread::spawn(move || {
        let (_, _, body) = get(egress, "/live/fb/index.m3u8", "");
        let text = String::from_utf8_lossy(&body).to_string();
        let open = text
            .lines()
            .filter_map(|l| l.strip_prefix("seg-"))
            .filter_map(|l| l.split('.').next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        get(egress, &format!("/live/fb/seg-{open}.m4s"), "")
    });
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = node.api(
        "POST",
        "/api/v1/streams/live/fb/forbid",
        Some(r#"{"duration_s":60,"reason":"hls forbid test"}"#),
    );
    assert_eq!(status, 200);
    let (status, _, why) = waiting.join().unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&why));
    assert!(String::from_utf8_lossy(&why).contains("hls forbid test"));
    let (status, _, why) = get(egress, "/live/fb/index.m3u8", "");
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&why).contains("hls forbid test"));
    let (status, _, _) = get(egress, "/live/fb/seg-0.m4s", "");
    assert_eq!(status, 403);
    let _ = wait(publisher, Duration::from_secs(5));
}

/// The next answer on a kept-alive connection (its body by `Content-Length`): (status, head, body).
/// `pending` keeps what was read past it.
fn read_answer(socket: &mut TcpStream, pending: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    let mut buf = [0u8; 64 << 10];
    let end = loop {
        if let Some(p) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed before an answer");
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    while pending.len() < end + length {
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed in the middle of an answer");
        pending.extend_from_slice(&buf[..n]);
    }
    let body = pending[end..end + length].to_vec();
    pending.drain(..end + length);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, body)
}

/// The node's `connections_accepted` (every listener, every core).
fn connections_accepted(node: &Popline) -> u64 {
    let (_, stats) = node.api("GET", "/api/v1/stats", None);
    stats
        .split("\"connections_accepted\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no connections_accepted in {stats}"))
}

/// HTTP/1.1 keep-alive on the egress port: a playlist, the init segment and a segment over one TCP
/// connection (the node accepted one connection for the three); `Connection: close` is answered and then
/// closes it; a kept-alive connection left idle is closed after `egress.keepalive_idle_ms`.
#[test]
fn one_kept_alive_connection_serves_playlist_init_and_segment() {
    let scratch = Scratch::new("hls-keepalive");
    let config = base_config(&scratch.0).replace("[egress]\n", "[egress]\nkeepalive_idle_ms = 500\n");
    let node = Popline::start(&scratch.0, &config);
    let egress = node.egress.unwrap();
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &node.url("live/ka"));
    assert!(wait_until(Duration::from_secs(10), || {
        node.api("GET", "/api/v1/streams", None).1.contains("live/ka")
    }));
    let before = connections_accepted(&node);
    let mut socket = TcpStream::connect(egress).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut pending = Vec::new();
    let mut ask = |socket: &mut TcpStream, path: &str, extra: &str| {
        socket
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: pop\r\n{extra}\r\n").as_bytes())
            .unwrap();
        read_answer(socket, &mut pending)
    };
    // The first playlist waits for the first segment, then lists it.
    let (status, head, body) = ask(&mut socket, "/live/ka/index.m3u8?session=be0c", "");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Connection: keep-alive\r\n"), "{head}");
    let playlist = String::from_utf8(body).unwrap();
    let init = playlist
        .split("URI=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let segment = playlist
        .lines()
        .find(|l| l.starts_with("seg-"))
        .unwrap_or_else(|| panic!("no segment in:\n{playlist}"))
        .to_string();
    let (status, head, body) = ask(&mut socket, &format!("/live/ka/{init}"), "");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Connection: keep-alive\r\n"), "{head}");
    assert_eq!(&body[4..8], b"ftyp");
    let (status, head, body) = ask(&mut socket, &format!("/live/ka/{segment}"), "");
    assert_eq!(status, 200, "{head}");
    assert_eq!(&body[4..8], b"moof");
    assert_eq!(
        connections_accepted(&node),
        before + 1,
        "three answers, one connection"
    );
    // `Connection: close`: answered, then the end of the stream.
    let (status, head, _) = ask(
        &mut socket,
        &format!("/live/ka/{segment}"),
        "Connection: close\r\n",
    );
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    let mut rest = Vec::new();
    socket.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty() && pending.is_empty());
    // Idle past keepalive_idle_ms (500 ms here) after an answer: the node closes the connection.
    let mut idle = TcpStream::connect(egress).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut pending = Vec::new();
    idle.write_all(format!("GET /live/ka/{init} HTTP/1.1\r\nHost: pop\r\n\r\n").as_bytes())
        .unwrap();
    let (status, _, _) = read_answer(&mut idle, &mut pending);
    assert_eq!(status, 200);
    let started = Instant::now();
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    println!(
        "the idle connection was closed {:?} after its answer",
        started.elapsed()
    );
    assert!(node
        .log_text()
        .contains("keep-alive idle (egress.keepalive_idle_ms)"));
    let _ = wait(publisher, Duration::from_secs(30));
}
