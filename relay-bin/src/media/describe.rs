//! [`MediaInfo`]: what a live stream carries (codecs, picture size, frame rate, bitrate), told from what its
//! GOP cache holds: the sequence headers name the codecs, the publisher's `onMetaData` gives the picture size
//! and frame rate, and the current GOP's frames give the bitrate actually received. Read on the admin path
//! only (`GET /api/v1/streams`), never per frame.

use serde::Serialize;

use super::flv_tag::{classify_audio, VideoClassifier};
use super::frame::{Frame, MediaKind, Track};

/// Shortest span of frames a bitrate is measured over, in milliseconds (a GOP just started says nothing yet).
const MIN_BITRATE_SPAN_MS: u64 = 500;

/// What a live stream carries; each field `None` until known.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MediaInfo {
    /// Video codec: `h264`, `hevc`, `av1`, `vp9` or `other` (from the video sequence header).
    pub video_codec: Option<&'static str>,
    /// Picture width in pixels (from `onMetaData`).
    pub width: Option<u32>,
    /// Picture height in pixels (from `onMetaData`).
    pub height: Option<u32>,
    /// Frames per second (from `onMetaData`).
    pub frame_rate: Option<f64>,
    /// Audio codec: `aac`, `mp3`, `opus` or `other` (from the audio sequence header, else the first audio
    /// frame cached).
    pub audio_codec: Option<&'static str>,
    /// Bits per second received, audio and video, over the current GOP (at least half a second of it), in
    /// kbit/s.
    pub bitrate_kbps: Option<u64>,
    /// The decode timestamp of the newest audio or video frame held (ms on the stream's timeline): how far
    /// the stream has come (a transcode's lag is its source's less its rendition's).
    pub newest_dts_ms: Option<u64>,
}

/// Describes a stream from its GOP cache's frames (`GopCache::start_frames`: metadata, sequence headers, then
/// the current GOP).
pub fn describe<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> MediaInfo {
    let mut info = MediaInfo::default();
    let mut bytes: u64 = 0;
    let mut first_dts: Option<u64> = None;
    let mut last_dts: u64 = 0;
    for frame in frames {
        match (frame.kind, frame.track) {
            (MediaKind::Metadata, _) => read_metadata(&frame.body, &mut info),
            (MediaKind::SeqHeader, Track::Video) => {
                info.video_codec = VideoClassifier::new()
                    .classify(&frame.body)
                    .ok()
                    .map(|tag| tag.codec.name());
            }
            (MediaKind::SeqHeader, Track::Audio) => {
                info.audio_codec = classify_audio(&frame.body).ok().map(|tag| tag.codec.name());
            }
            (MediaKind::SeqHeader, Track::Data) => {}
            (_, track) => {
                if track == Track::Audio && info.audio_codec.is_none() {
                    info.audio_codec = classify_audio(&frame.body).ok().map(|tag| tag.codec.name());
                }
                bytes += frame.body.len() as u64;
                first_dts = Some(first_dts.map_or(frame.dts_ms, |first| first.min(frame.dts_ms)));
                last_dts = last_dts.max(frame.dts_ms);
            }
        }
    }
    if let Some(first) = first_dts {
        info.newest_dts_ms = Some(last_dts);
        let span_ms = last_dts.saturating_sub(first);
        if span_ms >= MIN_BITRATE_SPAN_MS {
            // bits / ms = kbit/s.
            info.bitrate_kbps = Some(bytes * 8 / span_ms);
        }
    }
    info
}

/// Fills the picture size and frame rate from an `onMetaData` body (AMF0: the name, then an object or an
/// ECMA array of properties). Anything that does not parse is ignored.
fn read_metadata(body: &[u8], info: &mut MediaInfo) {
    let Ok(values) = rml_amf0::deserialize(&mut std::io::Cursor::new(body)) else {
        return;
    };
    for value in values {
        let Some(properties) = value.get_object_properties() else {
            continue;
        };
        let number = |name: &str| match properties.get(name) {
            Some(rml_amf0::Amf0Value::Number(n)) if n.is_finite() && *n > 0.0 => Some(*n),
            _ => None,
        };
        let pixels = |name: &str| number(name).filter(|n| *n <= 65_535.0).map(|n| n as u32);
        info.width = pixels("width").or(info.width);
        info.height = pixels("height").or(info.height);
        info.frame_rate = number("framerate").or(info.frame_rate);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;
    use std::collections::HashMap;
    use std::time::Instant;

    fn frame(kind: MediaKind, track: Track, dts_ms: u64, body: &[u8]) -> Frame {
        Frame::new(
            kind,
            track,
            dts_ms,
            dts_ms,
            Bytes::copy_from_slice(body),
            Instant::now(),
        )
    }

    #[test]
    fn codecs_size_rate_and_bitrate() {
        let mut properties = HashMap::new();
        properties.insert("width".to_string(), rml_amf0::Amf0Value::Number(1280.0));
        properties.insert("height".to_string(), rml_amf0::Amf0Value::Number(720.0));
        properties.insert("framerate".to_string(), rml_amf0::Amf0Value::Number(30.0));
        let meta = rml_amf0::serialize(&vec![
            rml_amf0::Amf0Value::Utf8String("onMetaData".to_string()),
            rml_amf0::Amf0Value::Object(properties),
        ])
        .unwrap();
        // AVC sequence header (keyframe, codec 7, packet type 0) with a 4-byte NAL length size.
        let avc_header = b"\x17\0\0\0\0\x01\x42\xc0\x1e\xff\xe1\0\x04\x67\x42\xc0\x1e\x01\0\x02\x68\xce";
        let aac_header = [0xaf, 0x00, 0x12, 0x10];
        let mut frames = vec![
            frame(MediaKind::Metadata, Track::Data, 0, &meta),
            frame(MediaKind::SeqHeader, Track::Video, 0, avc_header),
            frame(MediaKind::SeqHeader, Track::Audio, 0, &aac_header),
        ];
        // One second of 125,000 bytes: 1,000 kbit/s.
        for i in 0..=10u64 {
            let size = if i == 10 { 0 } else { 12_500 };
            frames.push(frame(MediaKind::Inter, Track::Video, i * 100, &vec![0x27; size]));
        }
        let info = describe(&frames);
        assert_eq!(info.video_codec, Some("h264"));
        assert_eq!(info.audio_codec, Some("aac"));
        assert_eq!(
            (info.width, info.height, info.frame_rate),
            (Some(1280), Some(720), Some(30.0))
        );
        assert_eq!(info.bitrate_kbps, Some(1_000));
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["video_codec"], "h264");
    }

    #[test]
    fn nothing_known_yet_and_garbage_are_none() {
        assert_eq!(describe(&[]), MediaInfo::default());
        let frames = [
            frame(MediaKind::Metadata, Track::Data, 0, b"\xff\x00garbage"),
            frame(MediaKind::Key, Track::Video, 0, b"\x17\x01\0\0\0"),
        ];
        let info = describe(&frames);
        assert_eq!((info.width, info.bitrate_kbps), (None, None));
    }
}
