//! FLV tag bodies (the payload of RTMP audio and video messages) classified into a [`MediaKind`] and a codec,
//! for legacy FLV and Enhanced RTMP (veovera v1/v2).
//!
//! The bytes come from a publisher, so every read is bounds-checked and a malformed body is a [`TagError`].
//! H.264 and HEVC frames that no other frame references are found from their NAL headers, because FLV
//! writers (ffmpeg among them) mark every non-key frame as a plain inter frame.

use thiserror::Error;

use super::frame::MediaKind;

/// Why a tag body could not be classified.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TagError {
    /// The message carried no bytes at all.
    #[error("empty FLV tag body")]
    Empty,
    /// The body ends before a field its header announces.
    #[error("FLV tag body truncated: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the field needs the body to hold (from the start of the body).
        needed: usize,
        /// Bytes the body holds.
        got: usize,
    },
    /// A length-prefixed NAL unit claims more bytes than the body has left.
    #[error("NAL unit at body offset {offset} claims {length} bytes but only {remaining} remain")]
    BadNalLength {
        /// Offset of the NAL unit's length prefix in the tag body.
        offset: usize,
        /// The length the prefix claims.
        length: usize,
        /// Bytes left in the body after the prefix.
        remaining: usize,
    },
}

/// A video codec, from the legacy codec id or the Enhanced RTMP FourCC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264 / AVC (legacy id 7, FourCC `avc1`).
    H264,
    /// H.265 / HEVC (legacy id 12 as some servers send it, FourCC `hvc1`).
    Hevc,
    /// AV1 (FourCC `av01`).
    Av1,
    /// VP9 (FourCC `vp09`).
    Vp9,
    /// Any other codec: the legacy codec id, or the FourCC as a big-endian `u32` (0 when none was sent).
    Other(u32),
}

impl VideoCodec {
    /// The codec's name in logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::Hevc => "hevc",
            VideoCodec::Av1 => "av1",
            VideoCodec::Vp9 => "vp9",
            VideoCodec::Other(_) => "other",
        }
    }

    fn from_fourcc(fourcc: u32) -> Self {
        match &fourcc.to_be_bytes() {
            b"avc1" => VideoCodec::H264,
            b"hvc1" => VideoCodec::Hevc,
            b"av01" => VideoCodec::Av1,
            b"vp09" => VideoCodec::Vp9,
            _ => VideoCodec::Other(fourcc),
        }
    }
}

/// An audio codec, from the legacy sound format or the Enhanced RTMP FourCC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// AAC (sound format 10, FourCC `mp4a`).
    Aac,
    /// MP3 (sound formats 2 and 14, FourCC `.mp3`).
    Mp3,
    /// Opus (FourCC `Opus`).
    Opus,
    /// Any other codec: the legacy sound format, or the FourCC as a big-endian `u32` (0 when none was sent).
    Other(u32),
}

impl AudioCodec {
    /// The codec's name in logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Aac => "aac",
            AudioCodec::Mp3 => "mp3",
            AudioCodec::Opus => "opus",
            AudioCodec::Other(_) => "other",
        }
    }

    fn from_fourcc(fourcc: u32) -> Self {
        match &fourcc.to_be_bytes() {
            b"mp4a" => AudioCodec::Aac,
            b".mp3" => AudioCodec::Mp3,
            b"Opus" => AudioCodec::Opus,
            _ => AudioCodec::Other(fourcc),
        }
    }
}

/// What a video tag body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTag {
    /// The frame's kind: `SeqHeader`, `Metadata`, `Key`, `Inter` or `Disposable`.
    pub kind: MediaKind,
    /// The codec that carries it.
    pub codec: VideoCodec,
    /// Composition time offset (pts - dts) in milliseconds; 0 where the format has none.
    pub composition_ms: i32,
}

/// What an audio tag body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTag {
    /// `SeqHeader` for a decoder configuration, `Audio` otherwise.
    pub kind: MediaKind,
    /// The codec that carries it.
    pub codec: AudioCodec,
}

// Enhanced RTMP packet types (video; audio shares 0, 1, 2, 5 as multitrack and 7).
const PKT_SEQUENCE_START: u8 = 0;
const PKT_CODED_FRAMES: u8 = 1;
const PKT_SEQUENCE_END: u8 = 2;
const PKT_CODED_FRAMES_X: u8 = 3;
const PKT_METADATA: u8 = 4;
const PKT_MPEG2TS_SEQUENCE_START: u8 = 5;
const PKT_MULTITRACK: u8 = 6;
const PKT_MOD_EX: u8 = 7;
const AUDIO_PKT_MULTICHANNEL_CONFIG: u8 = 4;
const AUDIO_PKT_MULTITRACK: u8 = 5;
/// Multitrack type "many tracks, many codecs": no shared FourCC follows.
const MULTITRACK_MANY_CODECS: u8 = 2;
/// NAL length size when no decoder configuration record was seen (what every encoder uses).
const DEFAULT_NAL_LENGTH_SIZE: usize = 4;

/// Classifies one publisher's video tags. Stateful: it remembers the NAL length size from the last
/// AVC/HEVC sequence header, which the following frames need to be walked.
#[derive(Debug, Clone)]
pub struct VideoClassifier {
    avc_length_size: usize,
    hevc_length_size: usize,
}

impl Default for VideoClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl VideoClassifier {
    /// A classifier that has seen no sequence header yet (NAL length size 4).
    pub fn new() -> Self {
        let length_size = DEFAULT_NAL_LENGTH_SIZE;
        VideoClassifier {
            avc_length_size: length_size,
            hevc_length_size: length_size,
        }
    }

    /// Classifies a video tag body.
    ///
    /// Choices where the formats leave room:
    /// - end of sequence (legacy AVC packet type 2, enhanced SequenceEnd) is `Inter`, whatever its frame type
    ///   says (ffmpeg marks it as a keyframe), so that it never starts a GOP;
    /// - a command frame (frame type 5) is `Disposable`: nothing references it;
    /// - enhanced Metadata (HDR info and the like) is `Metadata`;
    /// - a Multitrack packet is classified from its inner packet type (sequence starts are `SeqHeader`) and
    ///   otherwise from the frame type only; its codec is the shared FourCC, or `Other(0)` when tracks differ;
    /// - an H.264 frame is `Key` for frame type 1 or 4 or when it holds an IDR NAL unit (HEVC: an IRAP,
    ///   types 16..=21); `Disposable` for frame type 3, or when it holds at least one VCL NAL unit and no NAL
    ///   unit with `nal_ref_idc != 0` (HEVC: every VCL NAL unit is a sub-layer non-reference type, even and
    ///   <= 14, and no parameter set rides along); `Inter` otherwise;
    /// - a sequence header too short to hold the NAL length size is an error.
    pub fn classify(&mut self, body: &[u8]) -> Result<VideoTag, TagError> {
        let b0 = *body.first().ok_or(TagError::Empty)?;
        if b0 & 0x80 != 0 {
            self.classify_enhanced(body, b0)
        } else {
            self.classify_legacy(body, b0)
        }
    }

    fn classify_legacy(&mut self, body: &[u8], b0: u8) -> Result<VideoTag, TagError> {
        let frame_type = b0 >> 4;
        let codec = match b0 & 0x0f {
            7 => VideoCodec::H264,
            12 => VideoCodec::Hevc,
            id => VideoCodec::Other(u32::from(id)),
        };
        if frame_type == 5 || !matches!(codec, VideoCodec::H264 | VideoCodec::Hevc) {
            return Ok(video_tag(kind_from_frame_type(frame_type), codec, 0));
        }
        let packet_type = byte(body, 1)?;
        let composition_ms = si24(body, 2)?;
        let kind = match packet_type {
            0 => {
                self.learn_length_size(codec, body, 5)?;
                MediaKind::SeqHeader
            }
            1 => self.coded_kind(codec, frame_type, body, 5)?,
            2 => MediaKind::Inter,
            _ => kind_from_frame_type(frame_type),
        };
        Ok(video_tag(kind, codec, composition_ms))
    }

    fn classify_enhanced(&mut self, body: &[u8], b0: u8) -> Result<VideoTag, TagError> {
        let frame_type = (b0 >> 4) & 0x07;
        let (packet_type, pos) = skip_mod_ex(body, b0 & 0x0f, 1)?;
        if packet_type != PKT_METADATA && frame_type == 5 {
            // Command frame: one command byte, no FourCC.
            return Ok(video_tag(MediaKind::Disposable, VideoCodec::Other(0), 0));
        }
        if packet_type == PKT_MULTITRACK {
            let (inner, fourcc) = multitrack_header(body, pos)?;
            let kind = match inner {
                PKT_SEQUENCE_START | PKT_MPEG2TS_SEQUENCE_START => MediaKind::SeqHeader,
                PKT_METADATA => MediaKind::Metadata,
                _ => kind_from_frame_type(frame_type),
            };
            return Ok(video_tag(kind, VideoCodec::from_fourcc(fourcc), 0));
        }
        let codec = VideoCodec::from_fourcc(fourcc(body, pos)?);
        let data = pos + 4;
        let nal_codec = matches!(codec, VideoCodec::H264 | VideoCodec::Hevc);
        let mut composition_ms = 0;
        let kind = match packet_type {
            PKT_SEQUENCE_START => {
                self.learn_length_size(codec, body, data)?;
                MediaKind::SeqHeader
            }
            PKT_MPEG2TS_SEQUENCE_START => MediaKind::SeqHeader,
            PKT_METADATA => MediaKind::Metadata,
            PKT_SEQUENCE_END => MediaKind::Inter,
            PKT_CODED_FRAMES if nal_codec => {
                composition_ms = si24(body, data)?;
                self.coded_kind(codec, frame_type, body, data + 3)?
            }
            PKT_CODED_FRAMES_X if nal_codec => self.coded_kind(codec, frame_type, body, data)?,
            _ => kind_from_frame_type(frame_type),
        };
        Ok(video_tag(kind, codec, composition_ms))
    }

    /// Reads the NAL length size from the AVC/HEVC decoder configuration record at `record` in `body`.
    fn learn_length_size(&mut self, codec: VideoCodec, body: &[u8], record: usize) -> Result<(), TagError> {
        match codec {
            // AVCDecoderConfigurationRecord byte 4: 6 reserved bits | lengthSizeMinusOne.
            VideoCodec::H264 => self.avc_length_size = usize::from(byte(body, record + 4)? & 0x03) + 1,
            // HEVCDecoderConfigurationRecord byte 21: constantFrameRate etc. | lengthSizeMinusOne.
            VideoCodec::Hevc => self.hevc_length_size = usize::from(byte(body, record + 21)? & 0x03) + 1,
            _ => {}
        }
        Ok(())
    }

    /// Kind of an H.264/HEVC coded frame whose length-prefixed NAL units start at `start` in `body`.
    fn coded_kind(
        &self,
        codec: VideoCodec,
        frame_type: u8,
        body: &[u8],
        start: usize,
    ) -> Result<MediaKind, TagError> {
        let hevc = codec == VideoCodec::Hevc;
        let length_size = if hevc {
            self.hevc_length_size
        } else {
            self.avc_length_size
        };
        let (mut key, mut any_vcl, mut referenced) = (false, false, false);
        let mut pos = start;
        while pos < body.len() {
            let prefix = body
                .get(pos..pos + length_size)
                .ok_or_else(|| truncated(pos + length_size, body))?;
            let length = prefix.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            let nal_start = pos + length_size;
            let remaining = body.len() - nal_start;
            if length > remaining {
                return Err(TagError::BadNalLength {
                    offset: pos,
                    length,
                    remaining,
                });
            }
            // A zero-length NAL unit has no header: padding some muxers write, skipped.
            if let Some(&header) = body.get(nal_start).filter(|_| length > 0) {
                if hevc {
                    let nal_type = (header >> 1) & 0x3f;
                    if nal_type < 32 {
                        any_vcl = true;
                        key |= (16..=21).contains(&nal_type);
                        referenced |= !(nal_type % 2 == 0 && nal_type <= 14);
                    } else {
                        // VPS, SPS, PPS sent in band: later frames need them.
                        referenced |= (32..=34).contains(&nal_type);
                    }
                } else {
                    let nal_type = header & 0x1f;
                    any_vcl |= (1..=5).contains(&nal_type);
                    key |= nal_type == 5;
                    // Parameter sets carry nal_ref_idc != 0 too; SEI, AUD and filler carry 0.
                    referenced |= (header >> 5) & 0x03 != 0;
                }
            }
            pos = nal_start + length;
        }
        Ok(if frame_type == 1 || frame_type == 4 || key {
            MediaKind::Key
        } else if frame_type == 3 || (any_vcl && !referenced) {
            MediaKind::Disposable
        } else {
            MediaKind::Inter
        })
    }
}

/// Classifies an audio tag body.
///
/// Legacy AAC packet type 0 and Enhanced RTMP SequenceStart and MultichannelConfig are `SeqHeader`; a
/// Multitrack packet is `SeqHeader` when its inner packet type is one of those; everything else is `Audio`.
pub fn classify_audio(body: &[u8]) -> Result<AudioTag, TagError> {
    let b0 = *body.first().ok_or(TagError::Empty)?;
    let kind = |config: bool| {
        if config {
            MediaKind::SeqHeader
        } else {
            MediaKind::Audio
        }
    };
    let is_config = |packet_type| matches!(packet_type, PKT_SEQUENCE_START | AUDIO_PKT_MULTICHANNEL_CONFIG);
    let (kind, codec) = match b0 >> 4 {
        10 => (kind(byte(body, 1)? == 0), AudioCodec::Aac),
        2 | 14 => (MediaKind::Audio, AudioCodec::Mp3),
        9 => {
            let (packet_type, pos) = skip_mod_ex(body, b0 & 0x0f, 1)?;
            let (packet_type, fourcc) = if packet_type == AUDIO_PKT_MULTITRACK {
                multitrack_header(body, pos)?
            } else {
                (packet_type, fourcc(body, pos)?)
            };
            (kind(is_config(packet_type)), AudioCodec::from_fourcc(fourcc))
        }
        format => (MediaKind::Audio, AudioCodec::Other(u32::from(format))),
    };
    Ok(AudioTag { kind, codec })
}

fn video_tag(kind: MediaKind, codec: VideoCodec, composition_ms: i32) -> VideoTag {
    VideoTag {
        kind,
        codec,
        composition_ms,
    }
}

/// Kind from the FLV frame type alone: 1 and 4 key, 3 and 5 disposable, anything else inter.
fn kind_from_frame_type(frame_type: u8) -> MediaKind {
    match frame_type {
        1 | 4 => MediaKind::Key,
        3 | 5 => MediaKind::Disposable,
        _ => MediaKind::Inter,
    }
}

/// Skips Enhanced RTMP v2 ModEx prefixes (packet type 7) starting at `pos`; returns the real packet type and
/// where the rest of the header starts.
fn skip_mod_ex(body: &[u8], mut packet_type: u8, mut pos: usize) -> Result<(u8, usize), TagError> {
    while packet_type == PKT_MOD_EX {
        let mut size = usize::from(byte(body, pos)?) + 1;
        pos += 1;
        if size == 256 {
            size = usize::from(u16::from_be_bytes([byte(body, pos)?, byte(body, pos + 1)?])) + 1;
            pos += 2;
        }
        // ModEx data, then UI4 modifier type | UI4 packet type.
        pos += size;
        packet_type = byte(body, pos)? & 0x0f;
        pos += 1;
    }
    Ok((packet_type, pos))
}

/// Reads a Multitrack header at `pos`: returns the inner packet type and the shared FourCC (0 if none).
fn multitrack_header(body: &[u8], pos: usize) -> Result<(u8, u32), TagError> {
    let b = byte(body, pos)?;
    let fourcc = if b >> 4 == MULTITRACK_MANY_CODECS {
        0
    } else {
        fourcc(body, pos + 1)?
    };
    Ok((b & 0x0f, fourcc))
}

fn truncated(needed: usize, body: &[u8]) -> TagError {
    TagError::Truncated {
        needed,
        got: body.len(),
    }
}

fn byte(body: &[u8], at: usize) -> Result<u8, TagError> {
    body.get(at).copied().ok_or_else(|| truncated(at + 1, body))
}

fn fourcc(body: &[u8], at: usize) -> Result<u32, TagError> {
    match body.get(at..at + 4) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(truncated(at + 4, body)),
    }
}

/// A signed 24-bit big-endian integer (composition time), sign-extended.
fn si24(body: &[u8], at: usize) -> Result<i32, TagError> {
    match body.get(at..at + 3) {
        Some(&[a, b, c]) => Ok(i32::from_be_bytes([a, b, c, 0]) >> 8),
        _ => Err(truncated(at + 3, body)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use MediaKind::{Audio, Disposable, Inter, Key, Metadata, SeqHeader};
    use VideoCodec::{Av1, Hevc, Vp9, H264};

    /// An AVCDecoderConfigurationRecord (Baseline 3.0, one SPS, one PPS) in a legacy tag.
    fn avc_seq_header(length_size_minus_one: u8) -> Vec<u8> {
        let mut b = b"\x17\0\0\0\0\x01\x42\xc0\x1e\xff\xe1\0\x04\x67\x42\xc0\x1e\x01\0\x02\x68\xce".to_vec();
        b[9] = 0xfc | length_size_minus_one;
        b
    }

    /// A legacy AVC NALU tag: frame type, composition time, NAL units with 4-byte lengths.
    fn avc(frame_type: u8, cts: [u8; 3], nals: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![(frame_type << 4) | 7, 1, cts[0], cts[1], cts[2]];
        for nal in nals {
            b.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            b.extend_from_slice(nal);
        }
        b
    }

    /// An Enhanced RTMP header byte and FourCC followed by `rest`.
    fn ex(b0: u8, fourcc: &[u8; 4], rest: &[u8]) -> Vec<u8> {
        [&[b0][..], fourcc, rest].concat()
    }

    fn other(fourcc: &[u8; 4]) -> u32 {
        u32::from_be_bytes(*fourcc)
    }

    #[test]
    fn avc_gop_by_hand() {
        let mut c = VideoClassifier::new();
        assert_eq!(
            c.classify(&avc_seq_header(3)).unwrap(),
            video_tag(SeqHeader, H264, 0)
        );
        #[rustfmt::skip]
        let cases: [(Vec<u8>, MediaKind, i32); 8] = [
            // SEI (ref_idc 0) + IDR slice (ref_idc 3), pts 80 ms after dts.
            (avc(1, [0, 0, 0x50], &[&[0x06, 5, 1, 0x80], &[0x65, 0x88, 0x84]]), Key, 80),
            // P slice, ref_idc 2.
            (avc(2, [0; 3], &[&[0x41, 0x9a]]), Inter, 0),
            // Non-reference B slice (ref_idc 0) marked as inter, as ffmpeg writes it.
            (avc(2, [0, 0, 0x28], &[&[0x01, 0x9e]]), Disposable, 40),
            // An IDR NAL unit makes a keyframe whatever the frame type says.
            (avc(2, [0; 3], &[&[0x65, 0x88]]), Key, 0),
            (avc(3, [0; 3], &[&[0x41]]), Disposable, 0),
            // In-band SPS keeps a non-reference slice referenced.
            (avc(2, [0; 3], &[&[0x67, 0x42], &[0x01]]), Inter, 0),
            // End of sequence marked as a keyframe (as ffmpeg writes it) never starts a GOP.
            (vec![0x17, 2, 0, 0, 0], Inter, 0),
            // Command frame.
            (vec![0x57, 0], Disposable, 0),
        ];
        for (body, kind, cts) in cases {
            assert_eq!(
                c.classify(&body).unwrap(),
                video_tag(kind, H264, cts),
                "{body:02x?}"
            );
        }
    }

    #[test]
    fn length_size_from_seq_header_and_errors() {
        let mut c = VideoClassifier::new();
        c.classify(&avc_seq_header(1)).unwrap();
        // Two NAL units with 2-byte lengths: SEI then a non-reference slice.
        let body = [0x27, 1, 0, 0, 0, 0, 2, 0x06, 0x05, 0, 2, 0x01, 0x9e];
        assert_eq!(c.classify(&body).unwrap().kind, Disposable);
        // With the default 4-byte lengths the same bytes claim a NAL unit of 0x20605 bytes.
        let mut fresh = VideoClassifier::new();
        let error = fresh.classify(&body).unwrap_err();
        assert_eq!(
            error,
            TagError::BadNalLength {
                offset: 5,
                length: 0x0002_0605,
                remaining: 4
            }
        );
        assert!(error
            .to_string()
            .contains("offset 5 claims 132613 bytes but only 4 remain"));
        #[rustfmt::skip]
        let cases: [(&[u8], TagError); 4] = [
            (&[0x27, 1, 0, 0, 0, 0, 0], truncated(9, &[0; 7])),
            (&[0x27, 1, 0], truncated(5, &[0; 3])),
            (&[0x17, 0, 0, 0, 0, 1, 0x42], truncated(10, &[0; 7])),
            (&[], TagError::Empty),
        ];
        for (body, error) in cases {
            assert_eq!(fresh.classify(body), Err(error));
        }
    }

    #[test]
    fn composition_time_sign_extends() {
        let mut c = VideoClassifier::new();
        for (cts, ms) in [
            ([0xff; 3], -1),
            ([0xff, 0xff, 0xd8], -40),
            ([0x7f, 0xff, 0xff], 0x7f_ffff),
        ] {
            assert_eq!(c.classify(&avc(2, cts, &[&[0x41]])).unwrap().composition_ms, ms);
        }
    }

    #[test]
    fn enhanced_video() {
        let mut c = VideoClassifier::new();
        // HEVCDecoderConfigurationRecord whose byte 21 says 2-byte NAL lengths.
        let mut hvcc = [0u8; 23];
        hvcc[21] = 0xf1;
        let hevc = |nal_type: u8| ex(0xa3, b"hvc1", &[0, 3, nal_type << 1, 1, 0xaf]);
        #[rustfmt::skip]
        let cases = [
            // IsExHeader | frame type 2 | CodedFramesX, `avc1`, one non-reference slice.
            (ex(0xa3, b"avc1", &[0, 0, 0, 2, 0x01, 0x9e]), Disposable, H264, 0),
            // CodedFrames carries a composition time before the NAL units.
            (ex(0x91, b"avc1", &[0xff, 0xff, 0xfe, 0, 0, 0, 2, 0x65, 0x88]), Key, H264, -2),
            // A ModEx prefix (one byte of data, then the real packet type) before CodedFramesX.
            (ex(0xa7, b"\0\xaa\x03a", b"vc1\0\0\0\x01\x41"), Inter, H264, 0),
            (ex(0x90, b"hvc1", &hvcc), SeqHeader, Hevc, 0),
            // TRAIL_N (type 0) with 2-byte lengths, TRAIL_R (1), IDR_W_RADL (19).
            (hevc(0), Disposable, Hevc, 0),
            (hevc(1), Inter, Hevc, 0),
            (hevc(19), Key, Hevc, 0),
            (ex(0x91, b"av01", &[1, 2]), Key, Av1, 0),
            (ex(0x94, b"vp09", &[1, 2]), Metadata, Vp9, 0),
            (ex(0xa5, b"vp09", &[1, 2]), SeqHeader, Vp9, 0),
            (ex(0xa1, b"xyz9", &[1, 2]), Inter, VideoCodec::Other(other(b"xyz9")), 0),
            // Multitrack: one track whose inner packet is SequenceStart; many codecs (no FourCC).
            (ex(0x96, b"\0av0", b"1"), SeqHeader, Av1, 0),
            (vec![0xa6, 0x21, 0, 0, 0], Inter, VideoCodec::Other(0), 0),
            // Command frame (frame type 5): no FourCC.
            (vec![0xd1, 0], Disposable, VideoCodec::Other(0), 0),
        ];
        for (body, kind, codec, cts) in cases {
            assert_eq!(
                c.classify(&body).unwrap(),
                video_tag(kind, codec, cts),
                "{body:02x?}"
            );
        }
        let short_hvcc = ex(0x90, b"hvc1", &[1, 2, 3]);
        assert_eq!(c.classify(&short_hvcc), Err(truncated(27, &short_hvcc)));
        assert_eq!(c.classify(&[0x96]), Err(truncated(2, &[0x96])));
    }

    #[test]
    fn unknown_legacy_codec_by_frame_type() {
        let mut c = VideoClassifier::new();
        for (b0, kind) in [(0x12, Key), (0x42, Key), (0x24, Inter), (0x32, Disposable)] {
            let codec = VideoCodec::Other(u32::from(b0 & 0xf));
            assert_eq!(c.classify(&[b0]).unwrap(), video_tag(kind, codec, 0));
        }
        assert_eq!(VideoCodec::Other(2).name(), "other");
    }

    #[test]
    fn audio_tags() {
        #[rustfmt::skip]
        let cases = [
            (vec![0xaf, 0, 0x12, 0x10], SeqHeader, AudioCodec::Aac),
            (vec![0xaf, 1, 0x21, 0x00], Audio, AudioCodec::Aac),
            (vec![0x2f, 0xff], Audio, AudioCodec::Mp3),
            (vec![0xe2], Audio, AudioCodec::Mp3),
            (vec![0x6e, 0], Audio, AudioCodec::Other(6)),
            (ex(0x90, b"Opus", &[0]), SeqHeader, AudioCodec::Opus),
            (ex(0x91, b"Opus", &[0]), Audio, AudioCodec::Opus),
            (ex(0x92, b"mp4a", &[]), Audio, AudioCodec::Aac),
            (ex(0x94, b"fLaC", &[0]), SeqHeader, AudioCodec::Other(other(b"fLaC"))),
            (ex(0x91, b".mp3", &[0]), Audio, AudioCodec::Mp3),
            (ex(0x91, b"ac-3", &[0]), Audio, AudioCodec::Other(other(b"ac-3"))),
            // Multitrack, one track: inner SequenceStart, then inner CodedFrames.
            (ex(0x95, b"\0Opu", b"s"), SeqHeader, AudioCodec::Opus),
            (ex(0x95, b"\x01Opu", b"s"), Audio, AudioCodec::Opus),
        ];
        for (body, kind, codec) in cases {
            assert_eq!(classify_audio(&body), Ok(AudioTag { kind, codec }), "{body:02x?}");
        }
        assert_eq!(classify_audio(&[0xaf]), Err(truncated(2, &[0xaf])));
        assert_eq!(classify_audio(&[0x91, b'O']), Err(truncated(5, &[0; 2])));
        assert_eq!(classify_audio(&[]), Err(TagError::Empty));
        assert_eq!(AudioCodec::Opus.name(), "opus");
    }

    /// Walks an FLV file: counts of video kinds, end-of-sequence tags, and AAC frames (not headers).
    fn walk_flv(name: &str) -> Option<(HashMap<MediaKind, usize>, usize, usize)> {
        let path = format!("{}/../../shared/media/{name}", env!("CARGO_MANIFEST_DIR"));
        let Ok(data) = std::fs::read(&path) else {
            println!("skipping: {path} not found");
            return None;
        };
        let mut c = VideoClassifier::new();
        let (mut kinds, mut sequence_ends, mut audio) = (HashMap::new(), 0, 0);
        let mut pos = 13;
        while pos + 11 <= data.len() {
            let size = u32::from_be_bytes([0, data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
            let body = &data[pos + 11..pos + 11 + size];
            if data[pos] == 9 {
                let tag = c.classify(body).unwrap();
                assert_eq!(tag.codec, H264);
                sequence_ends += usize::from(body[1] == 2);
                *kinds.entry(tag.kind).or_insert(0) += 1;
            } else if data[pos] == 8 {
                let tag = classify_audio(body).unwrap();
                assert_eq!(tag.codec, AudioCodec::Aac);
                audio += usize::from(tag.kind == Audio);
            }
            pos += 11 + size + 4;
        }
        assert_eq!(pos, data.len());
        println!("{name}: video {kinds:?}, {sequence_ends} end-of-sequence tag(s), {audio} AAC frames");
        Some((kinds, sequence_ends, audio))
    }

    #[test]
    fn sample_files() {
        let n = |m: &HashMap<MediaKind, usize>, kinds: &[MediaKind]| {
            kinds
                .iter()
                .map(|k| m.get(k).copied().unwrap_or(0))
                .sum::<usize>()
        };
        if let Some((m, sequence_ends, audio)) = walk_flv("h264-aac-720p30-bframes.flv") {
            let counts = [SeqHeader, Key, Disposable, Inter].map(|k| n(&m, &[k]));
            assert_eq!(counts, [1, 10, 212, 379]);
            // 600 coded frames, plus the end-of-sequence tag counted as `Inter`.
            assert_eq!(
                (n(&m, &[Key, Inter, Disposable]), sequence_ends, audio),
                (601, 1, 939)
            );
        }
        if let Some((m, sequence_ends, audio)) = walk_flv("h264-aac-360p25-baseline.flv") {
            let counts = [SeqHeader, Key, Disposable, Inter].map(|k| n(&m, &[k]));
            assert_eq!(counts, [1, 5, 0, 246]);
            assert_eq!(
                (n(&m, &[Key, Inter, Disposable]), sequence_ends, audio),
                (251, 1, 432)
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..64), length_size in 0u8..5) {
            let mut c = VideoClassifier::new();
            if length_size > 0 {
                c.classify(&avc_seq_header(length_size - 1)).unwrap();
            }
            let _ = c.classify(&body);
            let _ = classify_audio(&body);
            // The same bytes behind every header that leads to a deeper parser.
            for header in [&b"\x17\x01\0\0\0"[..], b"\x2c\x01\0\0\0", b"\xa1avc1", b"\xa3hvc1", b"\x90hvc1", b"\x97"] {
                let _ = c.classify(&[header, &body].concat());
                let _ = classify_audio(&[header, &body].concat());
            }
        }
    }
}
