//! End to end: real ffmpeg publishes the sample media into the real `popline`; real ffmpeg plays it back;
//! ffprobe and a full decode check what arrived.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;

/// Publishes `file` to a fresh node (its cores on `backend`) with a player already waiting, and checks the
/// recording, and that the node runs the backend it reports.
fn round_trip(file_name: &str, expected_frames: usize, width: u32, height: u32, backend: &str) {
    let scratch = Scratch::new("roundtrip");
    let node = Popline::start(&scratch.0, &base_config_on(&scratch.0, backend));
    let (status, stats) = node.api("GET", "/api/v1/stats", None);
    assert_eq!(status, 200);
    assert!(
        stats.contains(&format!("\"backend\":\"{backend}\"")),
        "stats: {stats}"
    );
    let rings = node.io_uring_fds();
    match backend {
        "uring" => assert!(
            rings >= 2,
            "an io_uring per core expected, the process holds {rings}"
        ),
        _ => assert_eq!(rings, 0, "the epoll backend holds no io_uring"),
    }
    let url = node.url("live/roundtrip");
    let recording = scratch.path("played.flv");
    let player = play(&url, &recording);
    // The player waits for the stream; let it get there before the publisher starts.
    std::thread::sleep(Duration::from_millis(700));
    let publisher = publish(&media(file_name), &url);
    let (published, publish_err) = wait(publisher, Duration::from_secs(60));
    assert!(
        published,
        "publisher failed: {publish_err}\nnode log:\n{}",
        node.log_text()
    );
    let (played, play_err) = wait(player, Duration::from_secs(20));
    assert!(
        played,
        "player failed: {play_err}\nnode log:\n{}",
        node.log_text()
    );

    let probe = assert_whole_playback(&recording, expected_frames, width, height);
    println!("{file_name}: {probe:?}");
    let log = node.log_text();
    assert!(
        log.contains("publish start") && log.contains("play start"),
        "log:\n{log}"
    );
}

#[test]
fn baseline_h264_aac_plays_back_whole_and_decodes() {
    let expected = frames_in(&media("h264-aac-360p25-baseline.flv"));
    round_trip("h264-aac-360p25-baseline.flv", expected, 640, 360, "uring");
}

#[test]
fn baseline_h264_aac_plays_back_whole_on_the_epoll_backend() {
    let expected = frames_in(&media("h264-aac-360p25-baseline.flv"));
    round_trip("h264-aac-360p25-baseline.flv", expected, 640, 360, "epoll");
}

#[test]
fn bframes_h264_aac_plays_back_whole_and_decodes() {
    let expected = frames_in(&media("h264-aac-720p30-bframes.flv"));
    round_trip("h264-aac-720p30-bframes.flv", expected, 1280, 720, "uring");
}

fn frames_in(file: &std::path::Path) -> usize {
    probe(file).video_packets
}

#[test]
fn late_joiner_starts_at_once_on_a_keyframe_from_the_gop_cache() {
    let scratch = Scratch::new("late");
    let node = Popline::start(&scratch.0, &base_config(&scratch.0));
    let url = node.url("live/late");
    let publisher = publish(&media("h264-aac-360p25-baseline.flv"), &url);
    std::thread::sleep(Duration::from_millis(3_000));
    // A player sees exactly the publisher's tracks: no phantom data or subtitle track from the server's
    // own notices (|RtmpSampleAccess, NetStream.Data.Start).
    let mut types = live_stream_types(&url);
    types.sort();
    assert_eq!(types, vec!["audio".to_string(), "video".to_string()]);
    // Two late players; on a two-core node at least one of them is on a core that does not own the stream
    // with good probability, and each gets its start from the GOP cache.
    let recordings: Vec<_> = (0..4).map(|i| scratch.path(&format!("late-{i}.flv"))).collect();
    let players: Vec<_> = recordings.iter().map(|r| play(&url, r)).collect();
    let (published, err) = wait(publisher, Duration::from_secs(30));
    assert!(published, "publisher: {err}");
    for (player, recording) in players.into_iter().zip(&recordings) {
        let (ok, err) = wait(player, Duration::from_secs(20));
        assert!(ok, "player: {err}\n{}", node.log_text());
        let probe = probe(recording);
        println!("late joiner: {probe:?}");
        assert!(probe.first_video_is_key);
        assert!(probe.monotonic);
        // Joined ~3 s into a 10 s stream with 2 s GOPs: it gets the GOP in progress (from the 2 s keyframe)
        // and the rest: about 8 s of 25 fps video.
        assert!(
            probe.video_packets >= 150 && probe.video_packets <= 250,
            "{} frames",
            probe.video_packets
        );
        let errors = decode_errors(recording);
        assert!(errors.trim().is_empty(), "decode errors: {errors}");
    }
}

#[test]
fn a_viewer_that_stops_reading_does_not_delay_another_and_stays_bounded() {
    let scratch = Scratch::new("slow");
    let config = format!(
        "{}[fanout]\ndrop_policy = \"gop\"\nviewer_queue_bytes = 262144\nlatency_budget_ms = 500\n",
        base_config(&scratch.0)
    );
    let node = Popline::start(&scratch.0, &config);
    let url = node.url("live/slow");
    let recording = scratch.path("fast.flv");
    // The stuck viewer: plays, then never reads again, with a tiny receive buffer.
    let mut stuck = Vec::new();
    for _ in 0..4 {
        let mut client = rtmp_client::Client::connect(node.rtmp, "live", Some(4096));
        client.play("slow");
        stuck.push(client);
    }
    let player = play(&url, &recording);
    std::thread::sleep(Duration::from_millis(700));
    let started = std::time::Instant::now();
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &url);
    let (published, err) = wait(publisher, Duration::from_secs(60));
    assert!(published, "publisher: {err}");
    let (played, err) = wait(player, Duration::from_secs(20));
    assert!(played, "player: {err}");
    let elapsed = started.elapsed();
    let probe = probe(&recording);
    println!("fast viewer beside stuck ones: {probe:?} in {elapsed:?}");
    let expected = frames_in(&media("h264-aac-720p30-bframes.flv"));
    assert!(
        probe.video_packets >= expected * 98 / 100,
        "{} of {expected}",
        probe.video_packets
    );
    // Real time (20 s) plus grace: the stuck viewers did not slow the publisher or the other viewer.
    assert!(elapsed < Duration::from_secs(26), "took {elapsed:?}");
    let (status, clients) = node.api("GET", "/api/v1/clients", None);
    assert_eq!(status, 200);
    let clients: serde_json::Value = serde_json::from_str(&clients).unwrap();
    for client in clients.as_array().unwrap() {
        let queued = client["queue_bytes"].as_u64().unwrap();
        assert!(queued <= 262_144, "a queue grew past its bound: {client}");
    }
    let (_, stats) = node.api("GET", "/api/v1/stats", None);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    println!("stats: {stats}");
    assert!(
        stats["frames_dropped"].as_u64().unwrap() > 0,
        "the stuck viewers must have had frames dropped"
    );
    drop(stuck);
}

#[test]
fn viewers_on_every_core_get_the_stream_through_the_owner() {
    let scratch = Scratch::new("cores");
    let node = Popline::start(&scratch.0, &base_config(&scratch.0));
    let url = node.url("live/cores");
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &url);
    std::thread::sleep(Duration::from_millis(1_500));
    // The kernel spreads connections over the two cores' listeners by hash: connect until both have viewers.
    let mut viewers = Vec::new();
    let mut cores = std::collections::BTreeSet::new();
    while viewers.len() < 64 && cores.len() < 2 {
        let mut client = rtmp_client::Client::connect(node.rtmp, "live", None);
        client.play("cores");
        viewers.push(client);
        let (_, clients) = node.api("GET", "/api/v1/clients", None);
        let clients: serde_json::Value = serde_json::from_str(&clients).unwrap();
        cores = clients
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["role"] == "viewer")
            .map(|c| c["core"].as_u64().unwrap())
            .collect();
    }
    assert_eq!(cores.len(), 2, "viewers never landed on both cores");
    let (_, streams) = node.api("GET", "/api/v1/streams", None);
    println!("streams: {streams}");
    let streams: serde_json::Value = serde_json::from_str(&streams).unwrap();
    assert_eq!(streams[0]["viewers"].as_u64().unwrap(), viewers.len() as u64);
    for viewer in &mut viewers {
        let received = viewer.read_media(Duration::from_millis(2_000));
        // 30 fps for 2 s, plus the cached GOP the viewer started with.
        assert!(received.video_frames >= 50, "{received:?}");
        assert_eq!(received.started_on_key, Some(true), "{received:?}");
        assert!(received.audio_frames > 0);
    }
    drop(viewers);
    // Done: stop the publisher rather than wait for the end of the file.
    let _ = wait(publisher, Duration::from_millis(1));
}
