//! The media playlist of a live stream, rendered from its [`HlsMuxer`]: plain HLS (complete segments) or
//! low-latency HLS (parts, blocking reload, preload hint), RFC 8216bis.
//!
//! Written by hand: the text is a few tags, and the crates for it (`m3u8-rs`) do not model LL-HLS's
//! `EXT-X-PART`, `EXT-X-PRELOAD-HINT` and `EXT-X-SERVER-CONTROL`. The tests parse what this writes with
//! `m3u8-rs` (plain HLS) to check it is a playlist other code reads.

use std::fmt::Write;

use super::muxer::{HlsMuxer, Segment};
use crate::bans::rfc3339_ms;

/// Segments at the end of the window whose parts are listed (LL-HLS wants parts for the last three target
/// durations).
const SEGMENTS_WITH_PARTS: usize = 3;

/// How to render.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlaylistOptions<'a> {
    /// Low-latency HLS: parts, blocking reload, preload hint.
    pub low_latency: bool,
    /// A viewer session token, appended to every URI (`?session=...`).
    pub session: Option<&'a str>,
}

/// Another variant of a stream in its multivariant playlist: a rendition of an ABR ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Its stream's name (a sibling of the source's: `../NAME/index.m3u8`).
    pub stream: String,
    /// `BANDWIDTH`, bit/s.
    pub bandwidth: u64,
    /// `RESOLUTION`.
    pub width: u32,
    /// `RESOLUTION`.
    pub height: u32,
    /// `CODECS`.
    pub codecs: String,
}

/// A multivariant playlist with the stream as its first variant, `index.m3u8?session=SESSION`, then each
/// of `renditions` (`../NAME/index.m3u8?session=SESSION`): what a viewer without a session gets first, so
/// that every URL it reloads carries its session. `None` while the stream has no complete segment (its
/// codecs and rate are known from the first).
pub fn multivariant_playlist(
    muxer: &HlsMuxer,
    low_latency: bool,
    session: &str,
    renditions: &[Variant],
) -> Option<String> {
    let segments: Vec<&Segment> = muxer.segments().collect();
    if segments.is_empty() {
        return None;
    }
    let bytes: usize = segments.iter().map(|s| s.len()).sum();
    let ms: u64 = segments.iter().map(|s| s.duration_ms()).sum::<u64>().max(1);
    let bandwidth = (bytes as u64 * 8 * 1_000 / ms).max(1);
    let mut codecs = Vec::new();
    let mut resolution = String::new();
    if let Some(video) = muxer.video_track() {
        if let [_, profile, compatibility, level, ..] = video.avc_config[..] {
            codecs.push(format!("avc1.{profile:02x}{compatibility:02x}{level:02x}"));
        }
        if video.width > 0 && video.height > 0 {
            resolution = format!(",RESOLUTION={}x{}", video.width, video.height);
        }
    }
    if let Some(audio) = muxer.audio_track() {
        codecs.push(format!("mp4a.40.{}", audio.object_type));
    }
    let mut out = String::with_capacity(256);
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{}", if low_latency { 9 } else { 7 });
    let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
    let _ = writeln!(
        out,
        "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{}\"{resolution}",
        codecs.join(",")
    );
    let _ = writeln!(out, "index.m3u8?session={session}");
    for r in renditions {
        // No RESOLUTION while the source's picture size is not known.
        let resolution = if r.width > 0 {
            format!(",RESOLUTION={}x{}", r.width, r.height)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{}\"{resolution}",
            r.bandwidth, r.codecs
        );
        let _ = writeln!(out, "../{}/index.m3u8?session={session}", r.stream);
    }
    Some(out)
}

/// The playlist of `muxer`, or `None` while it has no complete segment (with low latency too: players that
/// read no parts, ffmpeg's among them, need a segment to start).
pub fn media_playlist(muxer: &HlsMuxer, options: PlaylistOptions<'_>) -> Option<String> {
    let complete: Vec<&Segment> = muxer.segments().collect();
    let open = muxer.open().filter(|s| !s.is_empty() && options.low_latency);
    if complete.is_empty() {
        return None;
    }
    let config = muxer.config();
    let query = options.session.map_or(String::new(), |s| format!("?session={s}"));
    let longest = complete
        .iter()
        .map(|s| s.duration_ms())
        .max()
        .unwrap_or(0)
        .max(config.target_ms)
        .max(1_000);
    let first_msn = complete.first().map_or(0, |s| s.msn);
    let mut out = String::with_capacity(1024);
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{}", if options.low_latency { 9 } else { 7 });
    // Each segment's duration rounded to the nearest second must not exceed it (RFC 8216, 4.3.3.1).
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", (longest + 500) / 1_000);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
    if muxer.discontinuity_sequence() > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            muxer.discontinuity_sequence()
        );
    }
    let part_target = config.part_target_ms as f64 / 1_000.0;
    if options.low_latency {
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
            part_target * 3.0
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
    }
    let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
    let listed = complete.len() + usize::from(open.is_some());
    let mut map: Option<u32> = None;
    for (i, segment) in complete.iter().copied().chain(open).enumerate() {
        if segment.discontinuity && i > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
        }
        if map != Some(segment.init_version) {
            map = Some(segment.init_version);
            // The same URI for every viewer: a player re-appends an init segment whose URI changed.
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"init-{}.mp4\"", segment.init_version);
        }
        let _ = writeln!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            rfc3339_ms(segment.start_unix_ms)
        );
        if options.low_latency && listed - i <= SEGMENTS_WITH_PARTS + 1 {
            for (index, part) in segment.parts.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "#EXT-X-PART:DURATION={:.3},URI=\"part-{}.{index}.m4s{query}\"{}",
                    part.duration_ms as f64 / 1_000.0,
                    segment.msn,
                    if part.independent { ",INDEPENDENT=YES" } else { "" }
                );
            }
        }
        let is_open = muxer.open().is_some_and(|o| o.msn == segment.msn);
        if !is_open {
            let _ = writeln!(out, "#EXTINF:{:.3},", segment.duration_ms() as f64 / 1_000.0);
            let _ = writeln!(out, "seg-{}.m4s{query}", segment.msn);
        }
    }
    if options.low_latency {
        if let Some((msn, index)) = muxer.next_part() {
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-{msn}.{index}.m4s{query}\""
            );
        }
    }
    if muxer.ended() {
        let _ = writeln!(out, "#EXT-X-ENDLIST");
    }
    Some(out)
}
