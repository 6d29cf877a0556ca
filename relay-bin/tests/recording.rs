//! Recording (DVR) end to end with the real binary: files rolled by duration, each opened by ffprobe after a
//! SIGKILL mid-recording (the finished ones whole, the one in progress playable); recording turned on and
//! off by the API and stopped by a forbid (what was recorded is kept); a full disk stops recording with an
//! error in the log, the stats and `/metrics` while streaming goes on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// The `.flv` files under `dir`, oldest name first.
fn recordings(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "flv") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn config(scratch: &Scratch, extra: &str) -> String {
    let mut config = base_config(&scratch.0);
    config.push_str(&format!(
        "[recording]\npath = \"{}\"\nroll_s = 4\n{extra}",
        scratch.path("rec").display()
    ));
    config
}

#[test]
fn a_sigkill_mid_recording_leaves_every_file_playable() {
    let scratch = Scratch::new("rec-kill");
    let node = Popline::start(&scratch.0, &config(&scratch, "[apps.live]\nrecord = true\n"));
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &node.url("live/cam"));
    // About 11 s of the 20 s file: two finished 4 s files and one in progress.
    std::thread::sleep(Duration::from_millis(11_000));
    node.kill9();
    let _ = wait(publisher, Duration::from_secs(5));
    let files = recordings(&scratch.path("rec"));
    println!("after SIGKILL: {files:?}");
    assert!(files.len() >= 3, "expected at least 3 files, got {files:?}");
    for file in &files {
        assert!(
            file.starts_with(scratch.path("rec").join("live/cam")),
            "{file:?} is under APP/STREAM"
        );
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("cam-20") && name.ends_with("Z.flv"),
            "named with the UTC start: {name}"
        );
    }
    let (in_progress, finished) = files.split_last().unwrap();
    for file in finished {
        let d = duration_s(file).unwrap_or_else(|e| panic!("{file:?} does not open: {e}"));
        println!("{}: {d:.3} s", file.display());
        assert!((3.9..=4.2).contains(&d), "{file:?} lasts {d} s, expected 4 s");
        let probe = probe(file);
        assert!(probe.first_video_is_key && probe.monotonic, "{file:?}: {probe:?}");
        assert_eq!(
            (probe.video_codec.as_str(), probe.audio_codec.as_str()),
            ("h264", "aac")
        );
    }
    let probe = probe(in_progress);
    println!("{} (in progress): {probe:?}", in_progress.display());
    assert!(
        probe.video_packets > 0,
        "the file in progress opens and has frames"
    );
    assert!(probe.first_video_is_key);
}

#[test]
fn the_api_turns_recording_on_and_off_and_a_forbid_stops_it() {
    let scratch = Scratch::new("rec-api");
    let node = Popline::start(&scratch.0, &config(&scratch, ""));
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &node.url("live/api"));
    assert!(wait_until(Duration::from_secs(10), || {
        node.api("GET", "/api/v1/streams", None).1.contains("live/api")
    }));
    assert!(
        recordings(&scratch.path("rec")).is_empty(),
        "nothing is recorded unless asked"
    );
    let (status, body) = node.api("POST", "/api/v1/streams/live/api/record", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"recording\":true") && body.contains("\"live\":true"),
        "{body}"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        node.api("GET", "/api/v1/stats", None)
            .1
            .contains("\"recordings\":1")
    }));
    std::thread::sleep(Duration::from_millis(3_000));
    let (status, _) = node.api("DELETE", "/api/v1/streams/live/api/record", None);
    assert_eq!(status, 200);
    assert!(wait_until(Duration::from_secs(5), || {
        node.api("GET", "/api/v1/stats", None)
            .1
            .contains("\"recordings\":0")
    }));
    let files = recordings(&scratch.path("rec"));
    assert_eq!(files.len(), 1, "{files:?}");
    let first = duration_s(&files[0]).unwrap();
    println!("recorded by the API: {first:.3} s");
    // It starts at once from the GOP cache's keyframe: at least the 3 s asked, at most a GOP more.
    assert!((2.5..=5.5).contains(&first), "{first}");
    // On again, then a forbid: recording stops, the file is kept and opens.
    node.api("POST", "/api/v1/streams/live/api/record", None);
    std::thread::sleep(Duration::from_millis(2_000));
    let (status, _) = node.api(
        "POST",
        "/api/v1/streams/live/api/forbid",
        Some(r#"{"duration_s":60,"reason":"rec test"}"#),
    );
    assert_eq!(status, 200);
    assert!(wait_until(Duration::from_secs(5), || {
        node.api("GET", "/api/v1/stats", None)
            .1
            .contains("\"recordings\":0")
    }));
    let files = recordings(&scratch.path("rec"));
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        let d = duration_s(file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        assert!(d > 1.0, "{file:?}: {d}");
    }
    assert!(node.log_text().contains("reason=\"stream forbidden\""));
    let _ = wait(publisher, Duration::from_secs(5));
}

/// Mounts a tmpfs of `size` at `dir` (root only); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount(8)");
        assert!(
            status.success(),
            "mounting a tmpfs for the disk-full test needs root"
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_recording_with_an_error_and_streaming_goes_on() {
    let scratch = Scratch::new("rec-full");
    let _disk = Tmpfs::mount(&scratch.path("rec"), "512k");
    let node = Popline::start(&scratch.0, &config(&scratch, "[apps.live]\nrecord = true\n"));
    let url = node.url("live/full");
    let recording = scratch.path("played.flv");
    let player = play(&url, &recording);
    std::thread::sleep(Duration::from_millis(700));
    let publisher = publish(&media("h264-aac-360p25-baseline.flv"), &url);
    assert!(wait_until(Duration::from_secs(15), || {
        node.api("GET", "/api/v1/stats", None)
            .1
            .contains("\"recording_errors\":1")
    }));
    let (_, stats) = node.api("GET", "/api/v1/stats", None);
    println!("{stats}");
    assert!(stats.contains("No space left on device"), "{stats}");
    let (_, metrics) = node.api("GET", "/metrics", None);
    assert!(metrics.contains("popline_recording_errors_total 1"), "{metrics}");
    assert!(node.log_text().contains("recording stops: write failed"));
    // The stream went on: the player gets the whole file.
    let (published, err) = wait(publisher, Duration::from_secs(30));
    assert!(published, "{err}");
    let (played, err) = wait(player, Duration::from_secs(20));
    assert!(played, "{err}");
    let expected = probe(&media("h264-aac-360p25-baseline.flv")).video_packets;
    assert_whole_playback(&recording, expected, 640, 360);
    // What was written before the disk filled still opens.
    for file in recordings(&scratch.path("rec")) {
        assert!(probe(&file).video_packets > 0, "{file:?}");
    }
    drop(node);
}
