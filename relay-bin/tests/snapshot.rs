//! Snapshots end to end with the real binary: a live stream's latest keyframe as a JPEG of the source size
//! whose mean colour matches ffmpeg's decode of the same keyframe (both samples, both decoders), cached per
//! keyframe (many requests, one decode), scaled on request; a recording's keyframe at a time; a codec other
//! than H.264 answered 415 with the node unharmed; a killed worker replaced; the periodic job's files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// One GET with the test token: (status, head, body bytes).
fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer test-token\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let body = response.get(split + 4..).unwrap_or_default().to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, body)
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Mean R, G, B of a picture file (any format ffmpeg reads), and its size.
fn mean_rgb(file: &Path) -> ([f64; 3], (u32, u32)) {
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout).to_string();
    let mut size = text.trim().split(',').map(|v| v.parse::<u32>().unwrap_or(0));
    let size = (size.next().unwrap_or(0), size.next().unwrap_or(0));
    let raw = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    (mean_of(&raw.stdout), size)
}

fn mean_of(rgb: &[u8]) -> [f64; 3] {
    let mut sum = [0f64; 3];
    for px in rgb.chunks_exact(3) {
        for c in 0..3 {
            sum[c] += f64::from(px[c]);
        }
    }
    let n = (rgb.len() / 3).max(1) as f64;
    sum.map(|s| s / n)
}

/// Mean R, G, B of the keyframe of `file` whose presentation time is nearest `pts_ms` (ffmpeg's decode),
/// and how far from `pts_ms` it is.
fn reference_keyframe(file: &Path, pts_ms: u64) -> ([f64; 3], u64) {
    let times = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-skip_frame",
            "nokey",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .unwrap();
    let times: Vec<u64> = String::from_utf8_lossy(&times.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .map(|t| (t * 1000.0).round() as u64)
        .collect();
    let (index, &nearest) = times
        .iter()
        .enumerate()
        .min_by_key(|(_, &t)| t.abs_diff(pts_ms))
        .expect("the file has keyframes");
    let raw = Command::new("ffmpeg")
        .args(["-v", "error", "-skip_frame", "nokey", "-i"])
        .arg(file)
        .args([
            "-vf",
            &format!("select=eq(n\\,{index})"),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .unwrap();
    (mean_of(&raw.stdout), nearest.abs_diff(pts_ms))
}

fn snapshots_config(scratch: &Scratch, extra: &str) -> String {
    format!("{}{extra}", base_config(&scratch.0))
}

/// Waits for the first snapshot of `stream` (the publisher needs a moment to send a keyframe).
fn first_snapshot(node: &Popline, stream: &str) -> (String, Vec<u8>) {
    let path = format!("/api/v1/streams/{stream}/snapshot.jpg");
    let mut last = (0, String::new(), Vec::new());
    for _ in 0..100 {
        last = get(node.http.unwrap(), &path);
        if last.0 == 200 {
            return (last.1, last.2);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no snapshot: {} {}\n{}",
        last.0,
        String::from_utf8_lossy(&last.2),
        node.log_text()
    );
}

fn check_live_snapshot(sample: &str, decoder: &str, size: (u32, u32)) {
    let scratch = Scratch::new(&format!("snap-{decoder}"));
    let node = Popline::start(
        &scratch.0,
        &snapshots_config(&scratch, &format!("[snapshots]\ndecoder = \"{decoder}\"\n")),
    );
    let file = media(sample);
    let publisher = publish(&file, &node.url("live/cam"));
    std::thread::sleep(Duration::from_millis(2_500));
    let started = std::time::Instant::now();
    let (head, jpeg) = first_snapshot(&node, "live/cam");
    println!(
        "{sample} via {decoder}: first snapshot in {:?}",
        started.elapsed()
    );
    assert_eq!(header(&head, "content-type").as_deref(), Some("image/jpeg"));
    assert_eq!(&jpeg[..2], b"\xff\xd8", "a JPEG starts with SOI");
    assert_eq!(&jpeg[jpeg.len() - 2..], b"\xff\xd9", "and ends with EOI");
    let path = scratch.path("snap.jpg");
    std::fs::write(&path, &jpeg).unwrap();
    let (mean, got_size) = mean_rgb(&path);
    assert_eq!(got_size, size, "the source resolution");
    let pts: u64 = header(&head, "x-popline-keyframe-pts-ms")
        .unwrap()
        .parse()
        .unwrap();
    let (reference, off_ms) = reference_keyframe(&file, pts);
    println!("{sample} via {decoder}: keyframe pts {pts} ms (file keyframe {off_ms} ms away), mean {mean:?}, ffmpeg {reference:?}");
    assert!(
        off_ms <= 100,
        "the keyframe at {pts} ms is one of the file's ({off_ms} ms off)"
    );
    for c in 0..3 {
        assert!(
            (mean[c] - reference[c]).abs() <= 4.0,
            "channel {c}: {} vs ffmpeg's {}",
            mean[c],
            reference[c]
        );
    }
    // Scaled.
    let (status, _, small) = get(
        node.http.unwrap(),
        "/api/v1/streams/live/cam/snapshot.jpg?width=320",
    );
    assert_eq!(status, 200);
    std::fs::write(&path, &small).unwrap();
    let expected_h = (size.1 * 320 / size.0) & !1;
    assert_eq!(mean_rgb(&path).1, (320, expected_h));
    let _ = wait(publisher, Duration::from_secs(30));
}

#[test]
fn live_snapshots_match_ffmpegs_decode_of_the_same_keyframe() {
    check_live_snapshot("h264-aac-360p25-baseline.flv", "openh264", (640, 360));
    check_live_snapshot("h264-aac-720p30-bframes.flv", "openh264", (1280, 720));
}

#[test]
fn the_ffmpeg_decoder_makes_the_same_snapshots() {
    check_live_snapshot("h264-aac-360p25-baseline.flv", "ffmpeg", (640, 360));
}

/// Process ids of `popline snapshot-worker` children of `parent`.
fn workers_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && cmdline.contains("snapshot-worker") {
            found.push(pid);
        }
    }
    found
}

#[test]
fn many_requests_cost_one_decode_per_keyframe_and_a_killed_worker_is_replaced() {
    let scratch = Scratch::new("snap-cache");
    let node = Popline::start(
        &scratch.0,
        &snapshots_config(&scratch, "[snapshots]\nworkers = 1\n"),
    );
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &node.url("live/cam"));
    first_snapshot(&node, "live/cam");
    // 40 moderators at once.
    let api = node.http.unwrap();
    let answers: Vec<(u16, String, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..40)
            .map(|_| s.spawn(move || get(api, "/api/v1/streams/live/cam/snapshot.jpg")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut keyframes: Vec<String> = answers
        .iter()
        .map(|(status, head, _)| {
            assert_eq!(*status, 200);
            header(head, "x-popline-keyframe-dts-ms").unwrap()
        })
        .collect();
    keyframes.sort();
    keyframes.dedup();
    let hits = answers
        .iter()
        .filter(|(_, head, _)| header(head, "x-popline-snapshot-cache").as_deref() == Some("hit"))
        .count();
    let (_, stats) = node.api("GET", "/api/v1/stats", None);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let decodes = stats["snapshots"]["decodes"].as_u64().unwrap();
    println!(
        "41 requests over {} keyframes: {decodes} decodes, {hits} of 40 cache hits",
        keyframes.len()
    );
    assert!(
        decodes <= 1 + keyframes.len() as u64,
        "one decode per keyframe: {decodes} for {keyframes:?}"
    );
    assert!(hits >= 40 - keyframes.len(), "{hits} hits");

    // Kill the worker: the next snapshot starts another.
    let mut pid_node = None;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.contains(&node.config.display().to_string()) {
            pid_node = Some(pid);
        }
    }
    let pid_node = pid_node.expect("the node's pid");
    let workers = workers_of(pid_node);
    assert_eq!(workers.len(), 1, "one worker: {workers:?}");
    Command::new("kill")
        .arg("-9")
        .arg(workers[0].to_string())
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2_100));
    let (status, _, _) = get(api, "/api/v1/streams/live/cam/snapshot.jpg?width=200");
    assert_eq!(status, 200, "a new worker answers");
    let now = workers_of(pid_node);
    assert!(now.len() == 1 && now[0] != workers[0], "a new worker: {now:?}");
    assert!(node.log_text().contains("snapshot worker ended while idle"));
    let (_, metrics) = node.api("GET", "/metrics", None);
    assert!(
        metrics.contains("popline_snapshot_worker_restarts_total 1"),
        "{metrics}"
    );
    let _ = wait(publisher, Duration::from_secs(30));
}

#[test]
fn other_codecs_get_415_and_unknown_streams_404() {
    let scratch = Scratch::new("snap-codec");
    let node = Popline::start(&scratch.0, &snapshots_config(&scratch, ""));
    // Sorenson H.263 (FLV codec id 2): no sequence header, keyframes marked.
    let publisher = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "6",
        ])
        .args(["-c:v", "flv1", "-g", "25", "-f", "flv"])
        .arg(node.url("live/old"))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut last = (0, String::new(), Vec::new());
    for _ in 0..50 {
        last = get(node.http.unwrap(), "/api/v1/streams/live/old/snapshot.jpg");
        if last.0 != 404 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = String::from_utf8_lossy(&last.2).to_string();
    println!("{} {body}", last.0);
    assert_eq!(last.0, 415);
    assert!(
        body.contains("Sorenson H.263") && body.contains("H.264 only"),
        "{body}"
    );
    let (status, _, body) = get(node.http.unwrap(), "/api/v1/streams/live/none/snapshot.jpg");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = get(
        node.http.unwrap(),
        "/api/v1/streams/live/old/snapshot.jpg?width=3",
    );
    assert_eq!(status, 400);
    assert_eq!(node.api("GET", "/healthz", None).0, 200);
    let _ = wait(publisher, Duration::from_secs(20));
}

#[test]
fn recordings_snapshot_at_a_time_and_the_periodic_job_keeps_its_files() {
    let scratch = Scratch::new("snap-vod");
    let extra = format!(
        "[recording]\npath = \"{}\"\n[snapshots]\npath = \"{}\"\nkeep = 3\nwidth = 320\n[apps.live]\nrecord = true\nsnapshot_interval_s = 1\n",
        scratch.path("rec").display(),
        scratch.path("shots").display()
    );
    let node = Popline::start(&scratch.0, &snapshots_config(&scratch, &extra));
    let publisher = publish(&media("h264-aac-360p25-baseline.flv"), &node.url("live/cam"));
    let (ok, errors) = wait(publisher, Duration::from_secs(30));
    assert!(ok, "{errors}");
    std::thread::sleep(Duration::from_millis(1_500));
    // The periodic job: at most `keep` files, each a 320-wide JPEG.
    let shots: Vec<_> = std::fs::read_dir(scratch.path("shots/live/cam"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    println!("periodic snapshots: {shots:?}");
    assert_eq!(shots.len(), 3, "keep = 3 of about 10");
    for shot in &shots {
        assert_eq!(mean_rgb(shot).1, (320, 180), "{shot:?}");
    }
    // The recording.
    let (status, listing) = node.api("GET", "/api/v1/recordings", None);
    assert_eq!(status, 200);
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let name = listing[0]["name"].as_str().unwrap().to_string();
    assert!(
        name.starts_with("live/cam/cam-") && name.ends_with(".flv"),
        "{name}"
    );
    let url = |t: &str| {
        format!(
            "/api/v1/recordings/{}/snapshot.jpg?t={t}",
            name.replace('/', "%2F")
        )
    };
    let (status, head, jpeg) = get(node.http.unwrap(), &url("5"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&jpeg));
    let dts: u64 = header(&head, "x-popline-keyframe-dts-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (3_000..=5_000).contains(&dts),
        "the keyframe at or before 5 s: {dts} ms"
    );
    let path = scratch.path("vod.jpg");
    std::fs::write(&path, &jpeg).unwrap();
    assert_eq!(mean_rgb(&path).1, (640, 360));
    let (status, head, _) = get(node.http.unwrap(), &url("0"));
    assert_eq!(
        (status, header(&head, "x-popline-keyframe-dts-ms").as_deref()),
        (200, Some("0"))
    );
    assert_eq!(
        get(
            node.http.unwrap(),
            "/api/v1/recordings/..%2F..%2Fetc%2Fpasswd/snapshot.jpg"
        )
        .0,
        400
    );
    assert_eq!(
        get(
            node.http.unwrap(),
            "/api/v1/recordings/live%2Fcam%2Fnone.flv/snapshot.jpg"
        )
        .0,
        404
    );
    assert_eq!(get(node.http.unwrap(), &url("-1")).0, 400);
}
