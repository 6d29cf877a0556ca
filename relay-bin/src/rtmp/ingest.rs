//! Ingest: a publisher's RTMP media messages become [`Frame`]s.
//!
//! One [`Ingest`] per publishing connection: it classifies each FLV tag (kind, codec, composition time),
//! puts its timestamp on the stream's unwrapped, corrected timeline and encodes the frame's wire form once.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;

use crate::media::flv_tag::{
    classify_audio, AudioCodec, AudioTag, TagError, VideoClassifier, VideoCodec, VideoTag,
};
use crate::media::timestamps::Timeline;
use crate::media::{Frame, MediaKind, Track};

/// Counters of one publisher's ingest.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestStats {
    /// Frames built.
    pub frames: u64,
    /// Payload bytes received in media messages.
    pub bytes: u64,
    /// Keyframes received.
    pub keyframes: u64,
    /// Media messages refused (empty tag bodies).
    pub refused: u64,
    /// Media messages whose codec payload did not parse, passed on classified by their FLV header only.
    pub unparsed: u64,
}

/// The per-publisher ingest state.
#[derive(Debug)]
pub struct Ingest {
    video: VideoClassifier,
    timeline: Timeline,
    video_codec: Option<VideoCodec>,
    audio_codec: Option<AudioCodec>,
    /// The latest dts of any track (metadata takes it).
    last_dts: u64,
    stats: IngestStats,
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest::new()
    }
}

impl Ingest {
    /// Ingest for a new publisher.
    pub fn new() -> Ingest {
        Ingest {
            video: VideoClassifier::new(),
            timeline: Timeline::new(),
            video_codec: None,
            audio_codec: None,
            last_dts: 0,
            stats: IngestStats::default(),
        }
    }

    /// A video message (FLV video tag body) with its RTMP timestamp.
    pub fn video(&mut self, body: Bytes, timestamp: u32, now: Instant) -> Result<Frame, TagError> {
        if body.is_empty() {
            self.stats.refused += 1;
            return Err(TagError::Empty);
        }
        let tag = match self.video.classify(&body) {
            Ok(tag) => tag,
            Err(_) => {
                // The codec payload did not parse (truncated NAL units, a short config record): a relay passes
                // it on as the publisher sent it, classified from the FLV header alone.
                self.stats.unparsed += 1;
                fallback_video_tag(&body)
            }
        };
        self.video_codec = Some(tag.codec);
        let dts_ms = self.timeline.dts(Track::Video, timestamp);
        let pts_ms = dts_ms.saturating_add_signed(i64::from(tag.composition_ms));
        if tag.kind == MediaKind::Key {
            self.stats.keyframes += 1;
        }
        Ok(self.frame(tag.kind, Track::Video, dts_ms, pts_ms, body, now))
    }

    /// An audio message (FLV audio tag body) with its RTMP timestamp.
    pub fn audio(&mut self, body: Bytes, timestamp: u32, now: Instant) -> Result<Frame, TagError> {
        if body.is_empty() {
            self.stats.refused += 1;
            return Err(TagError::Empty);
        }
        let tag = classify_audio(&body).unwrap_or_else(|_| {
            self.stats.unparsed += 1;
            AudioTag {
                kind: MediaKind::Audio,
                codec: AudioCodec::Other(u32::from(body.first().copied().unwrap_or(0) >> 4)),
            }
        });
        self.audio_codec = Some(tag.codec);
        let dts_ms = self.timeline.dts(Track::Audio, timestamp);
        Ok(self.frame(tag.kind, Track::Audio, dts_ms, dts_ms, body, now))
    }

    /// Stream metadata (`@setDataFrame onMetaData`), re-encoded as the `onMetaData` data message players expect.
    pub fn metadata(&mut self, metadata: &StreamMetadata, now: Instant) -> Frame {
        let body = Bytes::from(encode_metadata(metadata));
        let dts_ms = self.last_dts;
        self.frame(MediaKind::Metadata, Track::Data, dts_ms, dts_ms, body, now)
    }

    /// The video codec seen last.
    pub fn video_codec(&self) -> Option<VideoCodec> {
        self.video_codec
    }

    /// The audio codec seen last.
    pub fn audio_codec(&self) -> Option<AudioCodec> {
        self.audio_codec
    }

    /// Timestamps corrected so far (wrap-around is not a correction; steps back and jumps are).
    pub fn timestamp_corrections(&self) -> u64 {
        self.timeline.corrections()
    }

    /// The ingest counters.
    pub fn stats(&self) -> IngestStats {
        self.stats
    }

    fn frame(
        &mut self,
        kind: MediaKind,
        track: Track,
        dts_ms: u64,
        pts_ms: u64,
        body: Bytes,
        now: Instant,
    ) -> Frame {
        self.stats.frames += 1;
        self.last_dts = self.last_dts.max(dts_ms);
        self.stats.bytes += body.len() as u64;
        Frame::new(kind, track, dts_ms, pts_ms, body, now)
    }
}

/// A video tag's kind from its first byte only (legacy or enhanced header), for payloads that do not parse.
fn fallback_video_tag(body: &[u8]) -> VideoTag {
    let first = body.first().copied().unwrap_or(0);
    let enhanced = first & 0x80 != 0;
    let (frame_type, sequence_start) = if enhanced {
        ((first >> 4) & 0x07, first & 0x0f == 0)
    } else {
        (
            first >> 4,
            matches!(first & 0x0f, 7 | 12) && body.get(1) == Some(&0),
        )
    };
    let kind = match frame_type {
        _ if sequence_start => MediaKind::SeqHeader,
        1 | 4 => MediaKind::Key,
        3 | 5 => MediaKind::Disposable,
        _ => MediaKind::Inter,
    };
    VideoTag {
        kind,
        codec: VideoCodec::Other(u32::from(first & 0x0f)),
        composition_ms: 0,
    }
}

/// `onMetaData` with the fields rml_rtmp parsed from the publisher's metadata.
fn encode_metadata(metadata: &StreamMetadata) -> Vec<u8> {
    let mut properties = HashMap::new();
    let mut number = |name: &str, value: Option<f64>| {
        if let Some(value) = value {
            properties.insert(name.to_string(), Amf0Value::Number(value));
        }
    };
    number("width", metadata.video_width.map(f64::from));
    number("height", metadata.video_height.map(f64::from));
    number("videocodecid", metadata.video_codec_id.map(f64::from));
    number("videodatarate", metadata.video_bitrate_kbps.map(f64::from));
    number("framerate", metadata.video_frame_rate.map(f64::from));
    number("audiocodecid", metadata.audio_codec_id.map(f64::from));
    number("audiodatarate", metadata.audio_bitrate_kbps.map(f64::from));
    number("audiosamplerate", metadata.audio_sample_rate.map(f64::from));
    number("audiochannels", metadata.audio_channels.map(f64::from));
    if let Some(stereo) = metadata.audio_is_stereo {
        properties.insert("stereo".to_string(), Amf0Value::Boolean(stereo));
    }
    if let Some(encoder) = &metadata.encoder {
        properties.insert("encoder".to_string(), Amf0Value::Utf8String(encoder.clone()));
    }
    let values = vec![
        Amf0Value::Utf8String("onMetaData".to_string()),
        Amf0Value::Object(properties),
    ];
    rml_amf0::serialize(&values).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_amf0() {
        let mut metadata = StreamMetadata::new();
        metadata.video_width = Some(1280);
        metadata.encoder = Some("obs".to_string());
        let body = encode_metadata(&metadata);
        let values = rml_amf0::deserialize(&mut std::io::Cursor::new(&body)).unwrap();
        assert_eq!(values[0], Amf0Value::Utf8String("onMetaData".to_string()));
        let Amf0Value::Object(props) = &values[1] else {
            panic!("not an object")
        };
        assert_eq!(props["width"], Amf0Value::Number(1280.0));
    }

    #[test]
    fn video_frames_carry_kind_timestamps_and_wire() {
        let mut ingest = Ingest::new();
        let now = Instant::now();
        // AVC keyframe NALU packet: frame type 1, codec 7, packet type 1, composition time 40 ms.
        let body = Bytes::from(vec![0x17, 1, 0, 0, 40, 0, 0, 0, 1, 0x65]);
        let frame = ingest.video(body, 1000, now).unwrap();
        assert_eq!(frame.kind, MediaKind::Key);
        assert_eq!(frame.dts_ms, 1000);
        assert_eq!(frame.pts_ms, 1040);
        assert_eq!(crate::rtmp::wire::frame_chunks(&frame, 4096).len(), 12 + 10);
        assert!(ingest.video(Bytes::new(), 1040, now).is_err());
        assert_eq!(ingest.stats().refused, 1);
        // A keyframe whose NAL units are garbage still passes, as a keyframe.
        let garbage = Bytes::from(vec![0x17, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(ingest.video(garbage, 1080, now).unwrap().kind, MediaKind::Key);
        assert_eq!(ingest.stats().unparsed, 1);
    }
}
