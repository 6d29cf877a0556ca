//! The HLS packager alone, checked by real tools: both sample files are read tag by tag into frames, cut
//! by `relay::egress::hls::HlsMuxer` into fMP4 parts and segments, written out with their playlist, and
//! ffprobe and a full ffmpeg decode read them back: codecs, picture size, every frame, no decode error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use relay::egress::hls::{media_playlist, HlsMuxer, MuxerConfig, PlaylistOptions};
use relay::media::{Frame, MediaKind, Track};

/// The frames of an FLV file, as ingest would make them (kinds by tag header, pts from the composition
/// time).
fn flv_frames(path: &std::path::Path) -> Vec<Frame> {
    let data = std::fs::read(path).unwrap();
    let t0 = Instant::now();
    let mut frames = Vec::new();
    let mut at = 13;
    while at + 11 <= data.len() {
        let tag = data[at];
        let size = u32::from_be_bytes([0, data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let ts = u32::from_be_bytes([data[at + 7], data[at + 4], data[at + 5], data[at + 6]]) as u64;
        let body = Bytes::copy_from_slice(&data[at + 11..at + 11 + size]);
        at += 11 + size + 4;
        let (kind, track, pts) = match tag {
            9 => {
                let cts = i32::from_be_bytes([0, body[2], body[3], body[4]]) << 8 >> 8;
                let kind = match (body[0] >> 4, body[1]) {
                    (_, 0) => MediaKind::SeqHeader,
                    (1, _) => MediaKind::Key,
                    _ => MediaKind::Inter,
                };
                (kind, Track::Video, (ts as i64 + cts as i64).max(0) as u64)
            }
            8 => {
                let kind = if body[1] == 0 {
                    MediaKind::SeqHeader
                } else {
                    MediaKind::Audio
                };
                (kind, Track::Audio, ts)
            }
            _ => (MediaKind::Metadata, Track::Data, ts),
        };
        frames.push(Frame::new(
            kind,
            track,
            ts,
            pts,
            body,
            t0 + Duration::from_millis(ts),
        ));
    }
    frames
}

/// Packages `file` and writes the window (large enough for the whole file) to a directory; returns it.
fn package(file: &str, low_latency: bool) -> (Scratch, usize) {
    let scratch = Scratch::new("hls-package");
    let mut muxer = HlsMuxer::new(MuxerConfig {
        window: 100,
        ..MuxerConfig::default()
    });
    let frames = flv_frames(&media(file));
    let t0 = Instant::now();
    for frame in &frames {
        muxer.push(
            frame,
            1_765_000_000_000 + frame.dts_ms,
            t0 + Duration::from_millis(frame.dts_ms),
        );
    }
    muxer.finish(t0 + Duration::from_secs(60));
    assert!(muxer.refused().is_none(), "{:?}", muxer.refused());
    let options = PlaylistOptions {
        low_latency,
        session: None,
    };
    let playlist = media_playlist(&muxer, options).unwrap();
    std::fs::write(scratch.path("index.m3u8"), &playlist).unwrap();
    std::fs::write(scratch.path("init-0.mp4"), muxer.init(0).unwrap()).unwrap();
    let mut segments = 0;
    for segment in muxer.segments() {
        let bytes: Vec<u8> = segment.buffers().flat_map(|b| b.iter().copied()).collect();
        std::fs::write(scratch.path(&format!("seg-{}.m4s", segment.msn)), bytes).unwrap();
        for (i, part) in segment.parts.iter().enumerate() {
            let bytes: Vec<u8> = part
                .fragment
                .bytes
                .iter()
                .flat_map(|b| b.iter().copied())
                .collect();
            std::fs::write(scratch.path(&format!("part-{}.{i}.m4s", segment.msn)), bytes).unwrap();
        }
        segments += 1;
    }
    println!(
        "{file}: {segments} segments; playlist:\n{}",
        &playlist[..playlist.len().min(900)]
    );
    (scratch, segments)
}

fn check(file: &str, width: u32, height: u32, low_latency: bool) {
    let expected = probe(&media(file)).video_packets;
    let (scratch, segments) = package(file, low_latency);
    assert!(segments >= 4, "{segments} segments");
    let playlist = scratch.path("index.m3u8");
    // Remux the playlist into one file and check it as the playback tests check theirs.
    let out = scratch.path("all.mp4");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-allowed_extensions", "ALL", "-i"])
        .arg(&playlist)
        .args(["-c", "copy", "-y"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg could not read the playlist");
    let probe = assert_whole_playback(&out, expected, width, height);
    println!("{file} (low latency {low_latency}): {probe:?}");
    // Every segment alone (init + segment) decodes: each starts on a keyframe.
    let init = std::fs::read(scratch.path("init-0.mp4")).unwrap();
    let mut one = init.clone();
    one.extend(std::fs::read(scratch.path("seg-1.m4s")).unwrap());
    std::fs::write(scratch.path("one.mp4"), one).unwrap();
    let errors = decode_errors(&scratch.path("one.mp4"));
    assert!(errors.trim().is_empty(), "segment 1 alone: {errors}");
}

#[test]
fn the_baseline_sample_packages_into_segments_ffmpeg_plays_whole() {
    check("h264-aac-360p25-baseline.flv", 640, 360, false);
}

#[test]
fn the_bframes_sample_packages_into_segments_ffmpeg_plays_whole() {
    check("h264-aac-720p30-bframes.flv", 1280, 720, true);
}

#[test]
fn the_playlist_is_one_m3u8_rs_reads() {
    let (scratch, segments) = package("h264-aac-360p25-baseline.flv", false);
    let text = std::fs::read(scratch.path("index.m3u8")).unwrap();
    let playlist = match m3u8_rs::parse_playlist_res(&text) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        other => panic!("not a media playlist: {other:?}"),
    };
    assert_eq!(playlist.segments.len(), segments);
    assert!(playlist.end_list);
    assert_eq!(playlist.target_duration, 2);
    for segment in &playlist.segments {
        assert!(
            segment.program_date_time.is_some(),
            "EXT-X-PROGRAM-DATE-TIME on every segment"
        );
        assert!(
            (1.9..=2.1).contains(&segment.duration) || segment.uri == playlist.segments.last().unwrap().uri
        );
    }
}
