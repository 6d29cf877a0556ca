//! What the publisher sends: a synthetic H.264/AAC stream at a chosen bitrate, or the tags of an FLV file,
//! looped with timestamps continued.
//!
//! Either way a source is sequence headers (sent once, first) and a body of audio/video tags with timestamps
//! from 0 that starts at a keyframe; the publisher plays the body over and over, adding the body's duration to
//! the timestamps of each pass, and stamps every coded video frame with an SEI unit ([`super::sei`]).

use super::flv::{self, FlvTag, CODEC_AVC, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use super::sei::{self, Stamp};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rml_rtmp::sessions::StreamMetadata;
use std::path::{Path, PathBuf};

/// Synthetic video frame rate, in frames per second.
const SYNTHETIC_FPS: u32 = 25;
/// Synthetic GOP length, in milliseconds (a keyframe every 2 s, as most live encoders are set up).
const SYNTHETIC_GOP_MS: u32 = 2000;
/// A synthetic keyframe is this many times the size of an inter frame.
const SYNTHETIC_KEY_TO_INTER: u64 = 10;
/// AAC sample rate of the synthetic audio, in Hz (1024 samples per frame: about 43 frames/s).
const AAC_SAMPLE_RATE: u64 = 44_100;
/// Most of the bitrate the synthetic audio takes, in bits/s.
const SYNTHETIC_AUDIO_BPS: u64 = 64_000;
/// A plausible baseline-profile SPS (640x360) and PPS: servers pass them on, nobody decodes them.
const SYNTHETIC_SPS: [u8; 25] = [
    0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
    0x00, 0x03, 0x00, 0xc8, 0x3c, 0x58, 0xba, 0x80,
];
const SYNTHETIC_PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];
/// AudioSpecificConfig of AAC-LC, 44.1 kHz, stereo.
const AAC_CONFIG: [u8; 2] = [0x12, 0x10];

/// Where the publisher's media comes from (`--source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// Generated H.264/AAC at `--bitrate`.
    Synthetic,
    /// The tags of an FLV file.
    File(PathBuf),
}

impl std::str::FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "synthetic" {
            Ok(Self::Synthetic)
        } else if s.is_empty() {
            Err("expected `synthetic` or the path of an .flv file".into())
        } else {
            Ok(Self::File(PathBuf::from(s)))
        }
    }
}

/// A loaded source, shared by the publisher of every server in the run.
#[derive(Debug, Clone)]
pub struct MediaSource {
    /// What it is, for the report (`synthetic 600 kbit/s`, the file's path).
    pub description: String,
    /// Sequence headers, sent once at timestamp 0 before the body.
    pub headers: Vec<FlvTag>,
    /// Audio and video tags, timestamps from 0, starting at a keyframe.
    pub body: Vec<FlvTag>,
    /// Duration of one pass over the body, in milliseconds (the timestamp offset of the next pass).
    pub loop_ms: u32,
    /// Bytes of each NALU length prefix in the AVC frames (from the AVC sequence header; 4 by default).
    pub nalu_length_size: usize,
    /// What the publisher announces in `onMetaData`.
    pub metadata: StreamMetadata,
}

impl MediaSource {
    /// Loads the source `spec` names; `bitrate_bps` sizes the synthetic one.
    pub fn load(spec: &SourceSpec, bitrate_bps: u64) -> Result<Self> {
        match spec {
            SourceSpec::Synthetic => Self::synthetic(bitrate_bps),
            SourceSpec::File(path) => Self::from_flv(path),
        }
    }

    /// Synthetic H.264 (25 fps, a keyframe every 2 s, keyframes 10x inter frames) and AAC (about 43
    /// frames/s) that add up to `bitrate_bps` including FLV headers and the SEI stamps.
    pub fn synthetic(bitrate_bps: u64) -> Result<Self> {
        if bitrate_bps < 50_000 {
            bail!("--bitrate {bitrate_bps} is too low for a synthetic stream (at least 50000 bits/s)");
        }
        let audio_bps = SYNTHETIC_AUDIO_BPS.min(bitrate_bps / 5);
        let video_bps = bitrate_bps - audio_bps;
        let frames_per_gop = u64::from(SYNTHETIC_FPS * SYNTHETIC_GOP_MS / 1000);
        let gop_bytes = video_bps * u64::from(SYNTHETIC_GOP_MS) / 8000;
        let unit = gop_bytes / (SYNTHETIC_KEY_TO_INTER + frames_per_gop - 1);
        // Every frame carries the FLV header (5), a length (4), the SEI stamp and the slice's length (4).
        let overhead = (5 + 4 + sei::SEI_NAL_LEN + 4) as u64;
        let slice = |total: u64| usize::try_from(total.saturating_sub(overhead).max(16)).unwrap_or(16);

        let mut headers = Vec::new();
        let mut avc_config = vec![
            0x17,
            0x00,
            0,
            0,
            0,
            0x01,
            SYNTHETIC_SPS[1],
            SYNTHETIC_SPS[2],
            SYNTHETIC_SPS[3],
        ];
        avc_config.extend_from_slice(&[0xff, 0xe1]);
        avc_config.extend_from_slice(&(SYNTHETIC_SPS.len() as u16).to_be_bytes());
        avc_config.extend_from_slice(&SYNTHETIC_SPS);
        avc_config.push(0x01);
        avc_config.extend_from_slice(&(SYNTHETIC_PPS.len() as u16).to_be_bytes());
        avc_config.extend_from_slice(&SYNTHETIC_PPS);
        headers.push(FlvTag {
            tag_type: TAG_VIDEO,
            timestamp_ms: 0,
            data: Bytes::from(avc_config),
        });
        let mut aac_config = vec![0xaf, 0x00];
        aac_config.extend_from_slice(&AAC_CONFIG);
        headers.push(FlvTag {
            tag_type: TAG_AUDIO,
            timestamp_ms: 0,
            data: Bytes::from(aac_config),
        });

        let mut body = Vec::new();
        let frame_ms = 1000 / SYNTHETIC_FPS;
        for i in 0..frames_per_gop as u32 {
            let key = i == 0;
            let len = slice(if key { unit * SYNTHETIC_KEY_TO_INTER } else { unit });
            let mut data = vec![if key { 0x17 } else { 0x27 }, 0x01, 0, 0, 0];
            data.extend_from_slice(&(len as u32).to_be_bytes());
            data.push(if key { 0x65 } else { 0x41 });
            data.resize(data.len() + len - 1, 0xa5);
            body.push(FlvTag {
                tag_type: TAG_VIDEO,
                timestamp_ms: i * frame_ms,
                data: Bytes::from(data),
            });
        }
        let audio_frame_bytes = usize::try_from((audio_bps / 8 * 1024 / AAC_SAMPLE_RATE).max(8)).unwrap_or(8);
        for i in 0u64.. {
            let ts = i * 1024 * 1000 / AAC_SAMPLE_RATE;
            if ts >= u64::from(SYNTHETIC_GOP_MS) {
                break;
            }
            let mut data = vec![0xaf, 0x01];
            data.resize(2 + audio_frame_bytes, 0x5a);
            body.push(FlvTag {
                tag_type: TAG_AUDIO,
                timestamp_ms: ts as u32,
                data: Bytes::from(data),
            });
        }
        // Video first at equal timestamps; the sort is stable.
        body.sort_by_key(|t| (t.timestamp_ms, t.tag_type != TAG_VIDEO));

        let mut metadata = StreamMetadata::new();
        metadata.video_width = Some(640);
        metadata.video_height = Some(360);
        metadata.video_codec_id = Some(u32::from(CODEC_AVC));
        metadata.video_frame_rate = Some(SYNTHETIC_FPS as f32);
        metadata.video_bitrate_kbps = u32::try_from(video_bps / 1000).ok();
        metadata.audio_codec_id = Some(u32::from(flv::SOUND_AAC));
        metadata.audio_bitrate_kbps = u32::try_from(audio_bps / 1000).ok();
        metadata.audio_sample_rate = Some(AAC_SAMPLE_RATE as u32);
        metadata.audio_channels = Some(2);
        metadata.audio_is_stereo = Some(true);
        metadata.encoder = Some("popline-bench fanout (synthetic)".into());
        Ok(Self {
            description: format!("synthetic {} kbit/s", bitrate_bps / 1000),
            headers,
            body,
            loop_ms: SYNTHETIC_GOP_MS,
            nalu_length_size: 4,
            metadata,
        })
    }

    /// The audio and video tags of an FLV file: its first AVC and AAC sequence headers, then everything from
    /// its first keyframe on.
    pub fn from_flv(path: &Path) -> Result<Self> {
        let tags = flv::read_file(path)?;
        let mut headers: Vec<FlvTag> = Vec::new();
        let mut metadata = StreamMetadata::new();
        for tag in &tags {
            if tag.is_sequence_header() && !headers.iter().any(|h| h.tag_type == tag.tag_type) {
                headers.push(FlvTag {
                    timestamp_ms: 0,
                    ..tag.clone()
                });
            }
            if tag.tag_type == TAG_SCRIPT {
                if let Ok(values) = rml_amf0::deserialize(&mut std::io::Cursor::new(&tag.data[..])) {
                    for value in values {
                        if let Some(properties) = value.get_object_properties() {
                            metadata.apply_metadata_values(properties);
                        }
                    }
                }
            }
        }
        let first_key = tags
            .iter()
            .position(|t| t.is_keyframe() && !t.is_sequence_header())
            .with_context(|| format!("{} has no video keyframe", path.display()))?;
        let mut body: Vec<FlvTag> = tags[first_key..]
            .iter()
            .filter(|t| matches!(t.tag_type, TAG_AUDIO | TAG_VIDEO) && !t.is_sequence_header())
            .cloned()
            .collect();
        let start = body.iter().map(|t| t.timestamp_ms).min().unwrap_or(0);
        for tag in &mut body {
            tag.timestamp_ms -= start;
        }
        let video_ts: Vec<u32> = body
            .iter()
            .filter(|t| t.tag_type == TAG_VIDEO)
            .map(|t| t.timestamp_ms)
            .collect();
        let mut deltas: Vec<u32> = video_ts
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .filter(|&d| d > 0)
            .collect();
        deltas.sort_unstable();
        let frame_ms = deltas.get(deltas.len() / 2).copied().unwrap_or(40);
        let last = body.iter().map(|t| t.timestamp_ms).max().unwrap_or(0);
        let nalu_length_size = headers
            .iter()
            .find(|h| h.tag_type == TAG_VIDEO)
            .and_then(|h| h.data.get(9))
            .map_or(4, |b| usize::from(b & 3) + 1);
        metadata.encoder = Some(format!("popline-bench fanout ({})", path.display()));
        Ok(Self {
            description: path.display().to_string(),
            headers,
            body,
            loop_ms: last + frame_ms,
            nalu_length_size,
            metadata,
        })
    }

    /// The keyframe interval, in milliseconds (the median over the body; one pass if it has one keyframe).
    pub fn gop_ms(&self) -> u32 {
        let keys: Vec<u32> = self
            .body
            .iter()
            .filter(|t| t.is_keyframe())
            .map(|t| t.timestamp_ms)
            .collect();
        let mut gaps: Vec<u32> = keys.windows(2).map(|w| w[1] - w[0]).filter(|&g| g > 0).collect();
        gaps.sort_unstable();
        gaps.get(gaps.len() / 2).copied().unwrap_or(self.loop_ms).max(1)
    }

    /// Bits per second of one pass over the body (what each viewer receives, before RTMP framing).
    pub fn bitrate_bps(&self) -> u64 {
        let bytes: usize = self
            .body
            .iter()
            .map(|t| t.data.len() + sei::SEI_NAL_LEN + 4)
            .sum();
        (bytes as u64) * 8 * 1000 / u64::from(self.loop_ms.max(1))
    }

    /// The body of `tag` as the publisher sends it: AVC coded frames get the SEI stamp as their first NAL
    /// unit, every other tag goes as it is.
    pub fn stamped(&self, tag: &FlvTag, stamp: Stamp) -> Bytes {
        if !tag.is_avc_nalu() {
            return tag.data.clone();
        }
        let mut out = Vec::with_capacity(tag.data.len() + 4 + sei::SEI_NAL_LEN);
        out.extend_from_slice(&tag.data[..5]);
        let len = (sei::SEI_NAL_LEN as u32).to_be_bytes();
        out.extend_from_slice(&len[4 - self.nalu_length_size.clamp(1, 4)..]);
        sei::write_sei_nal(&mut out, stamp);
        out.extend_from_slice(&tag.data[5..]);
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_source_hits_the_bitrate_and_stamps_frames() {
        let source = MediaSource::synthetic(600_000).unwrap();
        let bps = source.bitrate_bps() as f64;
        assert!((bps / 600_000.0 - 1.0).abs() < 0.05, "{bps} bit/s");
        let video: Vec<_> = source.body.iter().filter(|t| t.tag_type == TAG_VIDEO).collect();
        let audio = source.body.iter().filter(|t| t.tag_type == TAG_AUDIO).count();
        assert_eq!(video.len(), 50);
        assert!((85..=88).contains(&audio), "{audio} audio frames in 2 s");
        assert!(video[0].is_keyframe() && !video[1].is_keyframe());
        assert!(video[0].data.len() > 9 * video[1].data.len());
        let stamp = Stamp {
            send_us: 123_456,
            seq: 9,
        };
        let sent = source.stamped(video[1], stamp);
        assert_eq!(sei::find_stamp(&sent[..sei::SEARCH_PREFIX_BYTES]), Some(stamp));
        assert_eq!(sent.len(), video[1].data.len() + 4 + sei::SEI_NAL_LEN);
        assert!(source.headers.iter().all(FlvTag::is_sequence_header));
        assert_eq!(source.gop_ms(), 2000);
    }

    #[test]
    fn flv_source_loops_from_a_keyframe() {
        let path = Path::new("/work/shared/media/h264-aac-360p25-baseline.flv");
        if !path.exists() {
            eprintln!("skipping: {} is missing", path.display());
            return;
        }
        let source = MediaSource::from_flv(path).unwrap();
        assert_eq!(source.headers.len(), 2);
        assert!(source.body[0].is_keyframe() || source.body[0].tag_type == TAG_AUDIO);
        assert!(source.loop_ms > 1000);
        let tag = source.body.iter().find(|t| t.is_avc_nalu()).unwrap();
        let stamp = Stamp { send_us: 1, seq: 2 };
        assert_eq!(sei::find_stamp(&source.stamped(tag, stamp)), Some(stamp));
    }
}
