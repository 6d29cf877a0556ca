//! A reader of FLV files (the publisher's `--source PATH.flv`): the file header, then tags, each with its
//! type, timestamp and body. Bodies are the payloads of RTMP audio/video/data messages as they are.
//!
//! Checks lengths before every field; a truncated last tag ends the file (recorders leave them), anything
//! else malformed is an error naming the offset.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::path::Path;

/// FLV tag type of audio.
pub const TAG_AUDIO: u8 = 8;
/// FLV tag type of video.
pub const TAG_VIDEO: u8 = 9;
/// FLV tag type of script data (`onMetaData`).
pub const TAG_SCRIPT: u8 = 18;
/// FLV video codec id of H.264/AVC.
pub const CODEC_AVC: u8 = 7;
/// FLV audio format of AAC.
pub const SOUND_AAC: u8 = 10;

/// One FLV tag.
#[derive(Debug, Clone)]
pub struct FlvTag {
    /// [`TAG_AUDIO`], [`TAG_VIDEO`] or [`TAG_SCRIPT`] (others are skipped on reading).
    pub tag_type: u8,
    /// Decoding timestamp, in milliseconds.
    pub timestamp_ms: u32,
    /// The tag body.
    pub data: Bytes,
}

impl FlvTag {
    /// A video tag of a keyframe (frame type 1), sequence headers included.
    pub fn is_keyframe(&self) -> bool {
        self.tag_type == TAG_VIDEO && self.data.first().is_some_and(|b| b >> 4 == 1)
    }

    /// An AVC or AAC sequence header (decoder configuration), which players need before any frame.
    pub fn is_sequence_header(&self) -> bool {
        let (Some(&first), Some(&second)) = (self.data.first(), self.data.get(1)) else {
            return false;
        };
        match self.tag_type {
            TAG_VIDEO => first & 0x0f == CODEC_AVC && second == 0,
            TAG_AUDIO => first >> 4 == SOUND_AAC && second == 0,
            _ => false,
        }
    }

    /// An AVC coded frame (AVCPacketType 1): the kind that carries the publisher's SEI stamp.
    pub fn is_avc_nalu(&self) -> bool {
        self.tag_type == TAG_VIDEO
            && self.data.len() >= 5
            && self.data[0] & 0x0f == CODEC_AVC
            && self.data[1] == 1
    }
}

/// Reads every audio, video and script tag of an FLV file.
pub fn read_file(path: &Path) -> Result<Vec<FlvTag>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&Bytes::from(bytes)).with_context(|| format!("parsing FLV {}", path.display()))
}

/// Parses a whole FLV file held in memory (tag bodies share `file`'s buffer).
pub fn parse(file: &Bytes) -> Result<Vec<FlvTag>> {
    if file.len() < 9 || &file[..3] != b"FLV" {
        bail!("not an FLV file (no FLV signature)");
    }
    let data_offset = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize;
    if data_offset < 9 || data_offset > file.len() {
        bail!("FLV header size {data_offset} out of range");
    }
    // After the header: PreviousTagSize0, then (tag, PreviousTagSize) pairs.
    let mut at = data_offset + 4;
    let mut tags = Vec::new();
    while at + 11 <= file.len() {
        let h = &file[at..at + 11];
        // Bit 5 of the type byte is the encryption filter flag; the type is the low 5 bits.
        let tag_type = h[0] & 0x1f;
        let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
        let timestamp_ms =
            (u32::from(h[7]) << 24) | (u32::from(h[4]) << 16) | (u32::from(h[5]) << 8) | u32::from(h[6]);
        let body = at + 11;
        if body + size > file.len() {
            break;
        }
        if matches!(tag_type, TAG_AUDIO | TAG_VIDEO | TAG_SCRIPT) {
            tags.push(FlvTag {
                tag_type,
                timestamp_ms,
                data: file.slice(body..body + size),
            });
        }
        at = body + size + 4;
    }
    if tags.is_empty() {
        bail!("no tags");
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_shared_sample_file() {
        let path = Path::new("/work/shared/media/h264-aac-360p25-baseline.flv");
        if !path.exists() {
            eprintln!("skipping: {} is missing", path.display());
            return;
        }
        let tags = read_file(path).unwrap();
        let video: Vec<_> = tags.iter().filter(|t| t.tag_type == TAG_VIDEO).collect();
        let audio: Vec<_> = tags.iter().filter(|t| t.tag_type == TAG_AUDIO).collect();
        assert!(
            video.len() > 25 && audio.len() > 25,
            "{} video, {} audio tags",
            video.len(),
            audio.len()
        );
        assert!(video[0].is_sequence_header() && video[0].is_keyframe());
        assert!(audio.iter().any(|t| t.is_sequence_header()));
        assert!(video[1].is_avc_nalu() && video[1].is_keyframe());
        assert!(video.iter().filter(|t| t.is_keyframe()).count() >= 2);
        // DTS never goes back, and a 25 fps file spans about 40 ms per video frame.
        assert!(video.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
        let span = video[video.len() - 1].timestamp_ms - video[1].timestamp_ms;
        let per_frame = f64::from(span) / (video.len() - 2) as f64;
        assert!((30.0..50.0).contains(&per_frame), "{per_frame} ms per frame");
    }

    #[test]
    fn rejects_garbage_and_stops_at_a_truncated_tag() {
        assert!(parse(&Bytes::from_static(b"NOTFLV")).is_err());
        let mut file = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        file.extend_from_slice(&[9, 0, 0, 2, 0, 0, 40, 0, 0, 0, 0, 0x27, 0x01, 0, 0, 0, 13]);
        file.extend_from_slice(&[8, 0, 0, 9, 0, 0, 50, 0, 0, 0, 0, 0xaf]);
        let tags = parse(&Bytes::from(file)).unwrap();
        assert_eq!(tags.len(), 1);
        assert_eq!(
            (tags[0].tag_type, tags[0].timestamp_ms, tags[0].data.len()),
            (9, 40, 2)
        );
    }
}
