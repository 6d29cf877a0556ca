//! The relay benchmark's stream: synthetic H.264/AAC at 30 fps, a keyframe every 2 s and `P B B` between
//! keyframes (frames sized I:P:B = 10:1:0.5, as the simulator's and `compare`'s live stream), with real
//! decode order and composition time offsets, so a relay sees what an encoder with B-frames sends.
//!
//! B-frames are non-reference slices (`nal_ref_idc` 0, NAL header `0x01`): popline classifies them
//! disposable and may drop them first; P slices (`0x41`) and the IDR slice (`0x65`) are references.
//! The stream is a [`MediaSource`], so the fanout harness's publisher sends it and stamps each frame.

use crate::fanout::flv::{self, FlvTag, CODEC_AVC, TAG_AUDIO, TAG_VIDEO};
use crate::fanout::sei;
use crate::fanout::source::MediaSource;
use anyhow::{bail, Result};
use bytes::Bytes;
use rml_rtmp::sessions::StreamMetadata;

/// Video frames per second.
pub const FPS: u32 = 30;
/// Keyframe interval, in milliseconds.
pub const GOP_MS: u32 = 2000;
/// Frames per GOP.
pub const FRAMES_PER_GOP: usize = (FPS * GOP_MS / 1000) as usize;
/// Sizes of I, P and B frames in half-units (10 : 1 : 0.5).
const HALF_UNITS: [u64; 3] = [20, 2, 1];
/// Most of the bitrate the audio takes, in bits/s.
const AUDIO_BPS: u64 = 128_000;
/// AAC sample rate, in Hz (1024 samples per frame).
const AAC_SAMPLE_RATE: u64 = 48_000;
/// A plausible main-profile SPS (1280x720) and PPS: relays pass them on, nobody decodes them.
const SPS: [u8; 25] = [
    0x67, 0x4d, 0x40, 0x1f, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
    0x00, 0x03, 0x00, 0xc8, 0x3c, 0x58, 0xba, 0x80,
];
const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];
/// AudioSpecificConfig of AAC-LC, 48 kHz, stereo.
const AAC_CONFIG: [u8; 2] = [0x11, 0x90];

/// A video frame's role in decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// The IDR frame that starts a GOP.
    Key,
    /// A P frame: later frames of the GOP reference it.
    Reference,
    /// A B frame: nothing references it.
    Disposable,
}

impl FrameKind {
    /// The kind of a stamped video message, from its FLV frame type and the first slice NAL unit after the
    /// stamp (at the offset [`MediaSource::stamped`] puts it), as far as `prefix` holds it.
    pub fn of_message(prefix: &[u8]) -> Option<FrameKind> {
        if prefix.first()? >> 4 == 1 {
            return Some(FrameKind::Key);
        }
        let nal = *prefix.get(5 + 4 + sei::SEI_NAL_LEN + 4)?;
        Some(if nal & 0x60 == 0 {
            FrameKind::Disposable
        } else {
            FrameKind::Reference
        })
    }
}

/// The kind of each frame of a GOP, in decode order: `I P B B P B B ... P B` (display order
/// `I B B P B B P ... B P`).
pub fn gop_pattern() -> Vec<FrameKind> {
    let mut kinds = vec![FrameKind::Key];
    let mut displayed = 1;
    while displayed < FRAMES_PER_GOP {
        // A P frame `min(3, left)` display slots ahead, then the B frames before it.
        let step = (FRAMES_PER_GOP - displayed).min(3);
        kinds.push(FrameKind::Reference);
        kinds.extend(std::iter::repeat_n(FrameKind::Disposable, step - 1));
        displayed += step;
    }
    kinds
}

/// The display index of each frame of [`gop_pattern`], in decode order.
fn display_order() -> Vec<usize> {
    let mut order = vec![0];
    let mut displayed = 1;
    while displayed < FRAMES_PER_GOP {
        let step = (FRAMES_PER_GOP - displayed).min(3);
        order.push(displayed + step - 1);
        order.extend(displayed..displayed + step - 1);
        displayed += step;
    }
    order
}

/// Milliseconds of frame `i` (30 fps does not divide a millisecond: rounded down, never drifting).
fn frame_ms(i: usize) -> u32 {
    (i as u64 * 1000 / u64::from(FPS)) as u32
}

/// The kind of the publisher's video frame number `seq` (it sends [`gop_pattern`] over and over).
pub fn kind_of(seq: u32) -> FrameKind {
    let pattern = gop_pattern();
    pattern[seq as usize % pattern.len()]
}

/// When the publisher is due to send video frame `seq`, in milliseconds after its first frame (its decode
/// timestamp: the publisher paces frames by it, so this is the frame's capture time on its schedule).
pub fn due_ms(seq: u32) -> u64 {
    let gop = seq as usize / FRAMES_PER_GOP;
    gop as u64 * u64::from(GOP_MS) + u64::from(frame_ms(seq as usize % FRAMES_PER_GOP))
}

/// The stream at `bitrate_bps` (FLV payloads, SEI stamps included).
pub fn source(bitrate_bps: u64) -> Result<MediaSource> {
    if bitrate_bps < 100_000 {
        bail!("stream bitrate {bitrate_bps} bit/s is too low (at least 100 kbit/s)");
    }
    let audio_bps = AUDIO_BPS.min(bitrate_bps / 8);
    let video_bps = bitrate_bps - audio_bps;
    let kinds = gop_pattern();
    let half_units: u64 = kinds.iter().map(|k| HALF_UNITS[*k as usize]).sum();
    let gop_bytes = video_bps * u64::from(GOP_MS) / 8000;
    let unit = gop_bytes / half_units;
    // Each frame carries the FLV header (5), a length (4), the SEI stamp, the slice's length (4).
    let overhead = (5 + 4 + sei::SEI_NAL_LEN + 4) as u64;

    let mut avc_config = vec![0x17, 0x00, 0, 0, 0, 0x01, SPS[1], SPS[2], SPS[3], 0xff, 0xe1];
    avc_config.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
    avc_config.extend_from_slice(&SPS);
    avc_config.push(0x01);
    avc_config.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
    avc_config.extend_from_slice(&PPS);
    let mut aac_config = vec![0xaf, 0x00];
    aac_config.extend_from_slice(&AAC_CONFIG);
    let headers = vec![
        FlvTag {
            tag_type: TAG_VIDEO,
            timestamp_ms: 0,
            data: Bytes::from(avc_config),
        },
        FlvTag {
            tag_type: TAG_AUDIO,
            timestamp_ms: 0,
            data: Bytes::from(aac_config),
        },
    ];

    let mut body = Vec::new();
    for (i, (kind, display)) in kinds.iter().zip(display_order()).enumerate() {
        let total = unit * HALF_UNITS[*kind as usize];
        let len = usize::try_from(total.saturating_sub(overhead).max(16)).unwrap_or(16);
        let dts = frame_ms(i);
        // Presentation one frame after decode for the first frame, so no offset is negative.
        let cts = frame_ms(display + 1).saturating_sub(dts);
        let (frame_type, nal) = match kind {
            FrameKind::Key => (0x17, 0x65),
            FrameKind::Reference => (0x27, 0x41),
            FrameKind::Disposable => (0x27, 0x01),
        };
        let mut data = vec![frame_type, 0x01];
        data.extend_from_slice(&cts.to_be_bytes()[1..]);
        data.extend_from_slice(&(len as u32).to_be_bytes());
        data.push(nal);
        data.resize(data.len() + len - 1, 0xa5);
        body.push(FlvTag {
            tag_type: TAG_VIDEO,
            timestamp_ms: dts,
            data: Bytes::from(data),
        });
    }
    let audio_frame_bytes = usize::try_from((audio_bps / 8 * 1024 / AAC_SAMPLE_RATE).max(8)).unwrap_or(8);
    for i in 0u64.. {
        let ts = i * 1024 * 1000 / AAC_SAMPLE_RATE;
        if ts >= u64::from(GOP_MS) {
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
    metadata.video_width = Some(1280);
    metadata.video_height = Some(720);
    metadata.video_codec_id = Some(u32::from(CODEC_AVC));
    metadata.video_frame_rate = Some(FPS as f32);
    metadata.video_bitrate_kbps = u32::try_from(video_bps / 1000).ok();
    metadata.audio_codec_id = Some(u32::from(flv::SOUND_AAC));
    metadata.audio_bitrate_kbps = u32::try_from(audio_bps / 1000).ok();
    metadata.audio_sample_rate = Some(AAC_SAMPLE_RATE as u32);
    metadata.audio_channels = Some(2);
    metadata.audio_is_stereo = Some(true);
    metadata.encoder = Some("popline-bench relay (synthetic, B-frames)".into());
    Ok(MediaSource {
        description: format!(
            "synthetic {} kbit/s, 30 fps, GOP 2 s, B-frames",
            bitrate_bps / 1000
        ),
        headers,
        body,
        loop_ms: GOP_MS,
        nalu_length_size: 4,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::sei::Stamp;

    #[test]
    fn the_stream_has_b_frames_in_decode_order_at_the_bitrate() {
        let kinds = gop_pattern();
        assert_eq!(kinds.len(), FRAMES_PER_GOP);
        assert_eq!(
            &kinds[..4],
            &[
                FrameKind::Key,
                FrameKind::Reference,
                FrameKind::Disposable,
                FrameKind::Disposable
            ]
        );
        let mut order = display_order();
        order.sort_unstable();
        assert_eq!(order, (0..FRAMES_PER_GOP).collect::<Vec<_>>());

        let source = source(6_000_000).unwrap();
        let bps = source.bitrate_bps() as f64;
        assert!((bps / 6e6 - 1.0).abs() < 0.03, "{bps} bit/s");
        assert_eq!(source.gop_ms(), GOP_MS);
        let video: Vec<_> = source.body.iter().filter(|t| t.tag_type == TAG_VIDEO).collect();
        assert_eq!(video.len(), FRAMES_PER_GOP);
        for (tag, kind) in video.iter().zip(&kinds) {
            let sent = source.stamped(tag, Stamp { send_us: 5, seq: 1 });
            assert_eq!(FrameKind::of_message(&sent[..64]), Some(*kind));
            assert_eq!(sei::find_stamp(&sent[..64]), Some(Stamp { send_us: 5, seq: 1 }));
        }
        // Decode timestamps rise; presentation is never before decode.
        assert!(video.windows(2).all(|w| w[0].timestamp_ms < w[1].timestamp_ms));
    }
}
