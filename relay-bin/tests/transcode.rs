//! Transcoding end to end with the real binary and ffmpeg: a three-rung ladder from the 720p sample gives
//! three decodable renditions of the right sizes and bitrates (within 15%), keyframes aligned with each
//! other, a multivariant playlist ffprobe reads; a killed worker comes back; a forbid of the source forbids
//! its renditions and stops the worker; the API refuses what it cannot do with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Name, width, height, kbit/s, CODECS (H.264 Main at the level of the size at 30 fps).
const LADDER: [(&str, u32, u32, u32, &str); 3] = [
    ("720p", 1280, 720, 2500, "avc1.4d401f"),
    ("480p", 854, 480, 1000, "avc1.4d401f"),
    ("360p", 640, 360, 600, "avc1.4d401e"),
];

/// Records `seconds` of `url` (stream copy, the stream's own timestamps) into `out`.
fn record(url: &str, seconds: u32, out: &Path) -> Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-rw_timeout",
            "20000000",
            "-i",
            url,
        ])
        .args([
            "-copyts",
            "-c",
            "copy",
            "-t",
            &seconds.to_string(),
            "-f",
            "flv",
            "-y",
        ])
        .arg(out)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Video packets of `file`: (pts in ms, bytes, keyframe).
fn video_packets(file: &Path) -> Vec<(i64, u64, bool)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time,size,flags",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            let pts = (f.next()?.parse::<f64>().ok()? * 1000.0).round() as i64;
            let size = f.next()?.parse().ok()?;
            let key = f.next()?.starts_with('K');
            Some((pts, size, key))
        })
        .collect()
}

fn streams(node: &Popline) -> serde_json::Value {
    serde_json::from_str(&node.api("GET", "/api/v1/streams", None).1).unwrap()
}

fn live(node: &Popline, name: &str) -> bool {
    streams(node)
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["stream"] == name && s["publisher"].is_number())
}

fn transcodes(node: &Popline) -> serde_json::Value {
    serde_json::from_str(&node.api("GET", "/api/v1/transcodes", None).1).unwrap()
}

#[test]
fn a_three_rung_ladder_with_aligned_keyframes_that_survives_its_worker() {
    let scratch = Scratch::new("transcode");
    let config = format!(
        "{}[transcode]\npreset = \"ultrafast\"\nrestart_backoff_ms = 200\n\
         [apps.live]\nrenditions = [\"720p 2500k\", \"480p 1000k\", \"360p 600k\"]\ntranscode = true\n",
        base_config(&scratch.0)
    );
    let node = Popline::start(&scratch.0, &config);
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &node.url("live/cam"));
    assert!(
        wait_until(Duration::from_secs(15), || LADDER
            .iter()
            .all(|(name, ..)| live(&node, &format!("live/cam_{name}")))),
        "the renditions go live: {}\n{}",
        streams(&node),
        node.log_text()
    );
    // Record 7 s of each rendition.
    let players: Vec<_> = LADDER
        .iter()
        .map(|(name, ..)| {
            let out = scratch.path(&format!("{name}.flv"));
            (record(&node.url(&format!("live/cam_{name}")), 7, &out), out)
        })
        .collect();
    // The multivariant playlist lists the source and the three renditions, and ffprobe reads it.
    let egress = node.egress.unwrap();
    // The transcoder lists a rendition once it sees it live (it looks every 500 ms).
    let mut master = String::new();
    let listed = wait_until(Duration::from_secs(5), || {
        let (status, text) = http_request(egress, "GET", "/live/cam/index.m3u8", None, None);
        master = text;
        status == 200
            && LADDER
                .iter()
                .all(|(name, ..)| master.contains(&format!("../cam_{name}/")))
    });
    assert!(listed, "every rendition listed: {master}");
    println!("{master}");
    for (name, w, h, kbps, codecs) in LADDER {
        let variant = format!(
            "BANDWIDTH={},CODECS=\"{codecs},mp4a.40.2\",RESOLUTION={w}x{h}\n../cam_{name}/index.m3u8?session=",
            (kbps + 96) * 1_100
        );
        assert!(master.contains(&variant), "{name}: {variant} in {master}");
    }
    let master_probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(format!("http://{egress}/live/cam/index.m3u8"))
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&master_probe.stdout).to_string();
    println!("ffprobe of the multivariant playlist:\n{seen}");
    for (_, w, h, ..) in LADDER {
        assert!(
            seen.contains(&format!("video,{w},{h}")),
            "ffprobe reads the {w}x{h} variant: {seen}"
        );
    }
    let mut keyframes: Vec<Vec<i64>> = Vec::new();
    for ((name, w, h, kbps, _), (player, out)) in LADDER.iter().zip(players) {
        let (ok, errors) = wait(player, Duration::from_secs(30));
        assert!(ok, "{name}: {errors}");
        let probe = probe(&out);
        assert_eq!((probe.width, probe.height), (*w, *h), "{name}: {probe:?}");
        assert_eq!(probe.video_codec, "h264");
        let errors = decode_errors(&out);
        assert!(errors.is_empty(), "{name} decodes: {errors}");
        let packets = video_packets(&out);
        let span_ms = (packets.last().unwrap().0 - packets[0].0).max(1) as f64;
        let bytes: u64 = packets[..packets.len() - 1].iter().map(|p| p.1).sum();
        let got_kbps = bytes as f64 * 8.0 / span_ms;
        let keys: Vec<i64> = packets.iter().filter(|p| p.2).map(|p| p.0).collect();
        println!("{name}: {w}x{h}, {got_kbps:.0} kbit/s video (asked {kbps}), keyframes at {keys:?}");
        assert!(
            (got_kbps / f64::from(*kbps) - 1.0).abs() <= 0.15,
            "{name}: {got_kbps:.0} kbit/s for {kbps}"
        );
        keyframes.push(keys);
    }
    // Keyframes aligned: within the span all three recorded, each rendition's keyframes are the others'
    // (same timeline: -copyts), every 2 s as the source's GOP.
    let from = keyframes.iter().map(|k| k[0]).max().unwrap();
    let to = keyframes.iter().map(|k| *k.last().unwrap()).min().unwrap();
    let within = |k: &Vec<i64>| {
        k.iter()
            .copied()
            .filter(|t| (from..=to).contains(t))
            .collect::<Vec<_>>()
    };
    let first = within(&keyframes[0]);
    assert!(first.len() >= 2, "at least two shared keyframes: {keyframes:?}");
    for other in &keyframes[1..] {
        let other = within(other);
        assert_eq!(first.len(), other.len(), "{keyframes:?}");
        for (a, b) in first.iter().zip(&other) {
            assert!((a - b).abs() <= 34, "aligned within a frame: {a} vs {b}");
        }
    }
    for pair in first.windows(2) {
        assert!(
            (1_900..=2_100).contains(&(pair[1] - pair[0])),
            "GOP 2 s: {first:?}"
        );
    }
    // The worker's stats.
    let t = transcodes(&node);
    println!("transcodes: {t}");
    let worker = &t[0];
    assert_eq!(worker["state"], "running");
    assert!(worker["cpu_s"].as_f64().unwrap() > 0.0);
    assert!(worker["lag_ms"].is_i64(), "{worker}");
    let pid = worker["pid"].as_u64().unwrap();
    let (_, metrics) = node.api("GET", "/metrics", None);
    assert!(metrics.contains("popline_transcode_workers 1"), "{metrics}");
    assert!(metrics.contains("popline_transcode_lag_milliseconds{stream=\"live/cam\"}"));

    // Kill the worker: it comes back and the renditions are live again.
    Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let t = transcodes(&node);
            t[0]["restarts"] == 1 && t[0]["state"] == "running" && t[0]["pid"].as_u64() != Some(pid)
        }),
        "restarted: {}",
        transcodes(&node)
    );
    assert!(
        wait_until(Duration::from_secs(10), || live(&node, "live/cam_480p")),
        "{}",
        streams(&node)
    );
    assert!(node.log_text().contains("transcode worker ended"));

    // The API: no ladder, a rendition as a source.
    let (status, body) = node.api("POST", "/api/v1/streams/other/x/transcode", None);
    assert_eq!(status, 503);
    assert!(body.contains("no renditions"), "{body}");
    let (status, body) = node.api("POST", "/api/v1/streams/live/cam_720p/transcode", None);
    assert!(status == 503 && body.contains("rendition"), "{body}");

    // Forbid the source: its renditions are forbidden too, and the worker stops.
    let (status, body) = node.api(
        "POST",
        "/api/v1/streams/live/cam/forbid",
        Some(r#"{"duration_s": 60, "reason": "test"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (_, bans) = node.api("GET", "/api/v1/bans", None);
    for (name, ..) in LADDER {
        assert!(
            bans.contains(&format!("live/cam_{name}")),
            "{name} forbidden: {bans}"
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || transcodes(&node)
            .as_array()
            .unwrap()
            .is_empty()),
        "the worker stops: {}",
        transcodes(&node)
    );
    let _ = wait(publisher, Duration::from_secs(10));
}
