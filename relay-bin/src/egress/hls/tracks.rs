//! A stream's tracks as fMP4 needs them, read from its FLV sequence headers: the H.264 decoder configuration
//! record (and the picture size, from its first SPS) and the AAC AudioSpecificConfig (object type, sample
//! rate, channels). Everything a publisher sent is checked: a header that does not parse is an error for
//! HLS of that stream alone.

use bytes::Bytes;

/// Why a sequence header cannot feed HLS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    /// Only H.264 (legacy FLV codec id 7) video is packaged for HLS so far.
    #[error("video codec not packaged for HLS (H.264 only)")]
    VideoCodec,
    /// Only AAC (FLV sound format 10) audio is packaged for HLS so far.
    #[error("audio codec not packaged for HLS (AAC only)")]
    AudioCodec,
    /// The header is cut short or malformed.
    #[error("malformed {0} sequence header")]
    Malformed(&'static str),
}

/// An H.264 track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTrack {
    /// The AVCDecoderConfigurationRecord, as the publisher sent it (the `avcC` box's body).
    pub avc_config: Bytes,
    /// Picture width in pixels (from the SPS; 0 if it did not parse).
    pub width: u16,
    /// Picture height in pixels.
    pub height: u16,
    /// Bytes of each NAL unit's length prefix (1, 2 or 4).
    pub length_size: u8,
}

/// An AAC track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTrack {
    /// The audio object type (2: AAC-LC).
    pub object_type: u8,
    /// The sampling frequency index of the AudioSpecificConfig.
    pub frequency_index: u8,
    /// Samples per second.
    pub sample_rate: u32,
    /// The channel configuration.
    pub channels: u8,
}

/// Sample rates by AudioSpecificConfig frequency index.
const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000, 7_350,
];

/// The video track of an FLV video sequence header (`0x17 0x00 cts[3]` + the record).
pub fn video_track(body: &Bytes) -> Result<VideoTrack, TrackError> {
    let (&b0, rest) = body.split_first().ok_or(TrackError::Malformed("video"))?;
    if b0 & 0x80 != 0 || b0 & 0x0f != 7 {
        return Err(TrackError::VideoCodec);
    }
    if rest.first() != Some(&0) || body.len() < 5 + 7 {
        return Err(TrackError::Malformed("video"));
    }
    let record = body.slice(5..);
    let length_size = (record[4] & 0x03) + 1;
    let sps_count = usize::from(record[5] & 0x1f);
    let (width, height) = if sps_count > 0 && record.len() >= 8 {
        let len = usize::from(u16::from_be_bytes([record[6], record[7]]));
        record
            .get(8..8 + len)
            .and_then(sps_picture_size)
            .unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    if length_size == 3 {
        return Err(TrackError::Malformed("video"));
    }
    Ok(VideoTrack {
        avc_config: record,
        width,
        height,
        length_size,
    })
}

/// The audio track of an FLV AAC sequence header (`0xAF 0x00` + the AudioSpecificConfig).
pub fn audio_track(body: &[u8]) -> Result<AudioTrack, TrackError> {
    let (&b0, rest) = body.split_first().ok_or(TrackError::Malformed("audio"))?;
    if b0 >> 4 != 10 {
        return Err(TrackError::AudioCodec);
    }
    let [0, a, b, ..] = rest else {
        return Err(TrackError::Malformed("audio"));
    };
    let object_type = a >> 3;
    let frequency_index = ((a & 0x07) << 1) | (b >> 7);
    let channels = (b >> 3) & 0x0f;
    let sample_rate = *SAMPLE_RATES
        .get(usize::from(frequency_index))
        .ok_or(TrackError::Malformed("audio"))?;
    if object_type == 0 || object_type == 31 || channels == 0 {
        return Err(TrackError::Malformed("audio"));
    }
    Ok(AudioTrack {
        object_type,
        frequency_index,
        sample_rate,
        channels,
    })
}

/// Reads bits of an RBSP (emulation prevention removed), most significant first.
struct Bits {
    data: Vec<u8>,
    at: usize,
}

impl Bits {
    fn new(nal: &[u8]) -> Bits {
        // Remove emulation prevention bytes (00 00 03 -> 00 00).
        let mut data = Vec::with_capacity(nal.len());
        let mut zeros = 0;
        for &b in nal {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            data.push(b);
        }
        Bits { data, at: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.at / 8)?;
        let bit = (byte >> (7 - self.at % 8)) & 1;
        self.at += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Unsigned Exp-Golomb.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    /// Signed Exp-Golomb.
    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        let magnitude = k.div_ceil(2) as i32;
        Some(if k % 2 == 1 { magnitude } else { -magnitude })
    }
}

/// The picture size an H.264 SPS NAL unit (header byte included) describes, cropping applied.
pub fn sps_picture_size(nal: &[u8]) -> Option<(u16, u16)> {
    let mut r = Bits::new(nal.get(1..)?);
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            // delta_scale is -128..=127 (H.264 7.4.2.1.1.1); anything else is not an SPS.
                            let delta = r.se()?;
                            if !(-128..=127).contains(&delta) {
                                return None;
                            }
                            next = (last + delta + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
              // In u64 with checked arithmetic: every field is the publisher's, up to 2^32 - 2.
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut left, mut right, mut top, mut bottom) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? == 1 {
        left = r.ue()?.into();
        right = r.ue()?.into();
        top = r.ue()?.into();
        bottom = r.ue()?.into();
    }
    let frame_mbs_only = u64::from(frame_mbs_only);
    let (sub_width, sub_height) = match chroma_format {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (crop_x, crop_y) = if chroma_format == 0 {
        (1, 2 - frame_mbs_only)
    } else {
        (sub_width, sub_height * (2 - frame_mbs_only))
    };
    let width = (width_mbs * 16).checked_sub((left + right).checked_mul(crop_x)?)?;
    let height =
        ((2 - frame_mbs_only) * height_units * 16).checked_sub((top + bottom).checked_mul(crop_y)?)?;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The SPS of the sample 720p file (x264, Main profile).
    const SPS_720P: &[u8] = &[
        0x67, 0x4d, 0x40, 0x1f, 0xec, 0xa0, 0x28, 0x02, 0xdd, 0x80, 0x88, 0x00, 0x00, 0x03, 0x00, 0x08, 0x00,
        0x00, 0x03, 0x01, 0xe0, 0x78, 0xc1, 0x8c, 0xb0,
    ];
    /// The SPS of the sample 360p file (x264, Constrained Baseline; cropped from 368 lines).
    const SPS_360P: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
        0x00, 0x03, 0x00, 0xc8, 0x3c, 0x58, 0xba, 0x80,
    ];

    #[test]
    fn an_sps_gives_the_picture_size() {
        assert_eq!(sps_picture_size(SPS_720P), Some((1280, 720)));
        assert_eq!(sps_picture_size(SPS_360P), Some((640, 360)));
        assert_eq!(sps_picture_size(&[0x67]), None);
        assert_eq!(sps_picture_size(&[]), None);
    }

    #[test]
    fn an_aac_header_gives_rate_and_channels() {
        // AAC-LC, 44.1 kHz, stereo: 0x12 0x10.
        let track = audio_track(&[0xaf, 0x00, 0x12, 0x10]).unwrap();
        assert_eq!(
            track,
            AudioTrack {
                object_type: 2,
                frequency_index: 4,
                sample_rate: 44_100,
                channels: 2
            }
        );
        assert_eq!(
            audio_track(&[0x2f, 0x00, 0x12, 0x10]),
            Err(TrackError::AudioCodec)
        );
        assert_eq!(
            audio_track(&[0xaf, 0x00, 0x12]),
            Err(TrackError::Malformed("audio"))
        );
        assert_eq!(
            audio_track(&[0xaf, 0x00, 0x17, 0x90]),
            Err(TrackError::Malformed("audio"))
        );
    }

    #[test]
    fn a_video_header_gives_the_record_and_size() {
        let mut body = vec![0x17, 0x00, 0, 0, 0, 1, 0x4d, 0x40, 0x1f, 0xff, 0xe1];
        body.extend_from_slice(&(SPS_720P.len() as u16).to_be_bytes());
        body.extend_from_slice(SPS_720P);
        body.extend_from_slice(&[1, 0, 4, 0x68, 0xeb, 0xe3, 0xcb]);
        let track = video_track(&Bytes::from(body)).unwrap();
        assert_eq!((track.width, track.height, track.length_size), (1280, 720, 4));
        assert_eq!(track.avc_config[0], 1);
        assert_eq!(
            video_track(&Bytes::from_static(&[0x12, 0, 0, 0, 0])),
            Err(TrackError::VideoCodec)
        );
        assert_eq!(
            video_track(&Bytes::from_static(&[0x17, 0, 0, 0, 0, 1])),
            Err(TrackError::Malformed("video"))
        );
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = sps_picture_size(&body);
            let _ = audio_track(&body);
            let _ = video_track(&Bytes::from(body));
        }
    }
}
