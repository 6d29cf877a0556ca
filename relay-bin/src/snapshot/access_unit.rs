//! [`Keyframe`]: a stream's latest keyframe with the sequence header it needs, and its H.264 access unit in
//! Annex-B form (what a decoder reads): parameter sets from the decoder configuration record, then the
//! keyframe's NAL units, each behind a start code.

use bytes::Bytes;

use super::error::SnapshotError;
use crate::egress::hls::tracks::{video_track, TrackError};

/// Most bytes of a keyframe body a snapshot decodes (a 4K intra frame at a high bitrate is a few MiB).
pub const MAX_KEYFRAME_BYTES: usize = 16 << 20;

/// Most pixels of a picture a snapshot decodes (8K UHD); a bigger SPS is refused before any decoding.
pub const MAX_PIXELS: u64 = 7680 * 4320;

/// One keyframe in the form a decoder reads, and the picture size its SPS declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// SPS and PPS, then the frame's NAL units, each behind a start code.
    pub data: Vec<u8>,
    /// Picture width in pixels (cropping applied).
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
}

/// One keyframe as a snapshot needs it: both FLV tag bodies as the publisher sent them.
#[derive(Debug, Clone)]
pub struct Keyframe {
    /// The video sequence header's FLV tag body (`0x17 0x00 ...` + AVCDecoderConfigurationRecord); empty
    /// when the stream sent none (codecs without one).
    pub header: Bytes,
    /// The keyframe's FLV tag body (`0x17 0x01 cts[3]` + length-prefixed NAL units).
    pub body: Bytes,
    /// Its decode timestamp on the stream's timeline, in ms.
    pub dts_ms: u64,
    /// Its presentation timestamp, in ms.
    pub pts_ms: u64,
}

impl Keyframe {
    /// Whether `other` is the same keyframe (the same bytes in memory, not a copy: a cache holding one
    /// keeps its allocation alive, so the address cannot be reused meanwhile).
    pub fn same_as(&self, other: &Keyframe) -> bool {
        self.body.as_ptr() == other.body.as_ptr()
            && self.body.len() == other.body.len()
            && self.dts_ms == other.dts_ms
            && self.header == other.header
    }

    /// The keyframe as one Annex-B access unit: every SPS and PPS of the record, then the frame's NAL units.
    /// Errors: a codec other than H.264 ([`SnapshotError::Codec`]), malformed bytes, or a picture bigger
    /// than [`MAX_PIXELS`].
    pub fn annex_b(&self) -> Result<AccessUnit, SnapshotError> {
        let (&b0, _) = self
            .body
            .split_first()
            .ok_or_else(|| SnapshotError::Malformed("empty keyframe".into()))?;
        if b0 & 0x80 != 0 || b0 & 0x0f != 7 {
            return Err(SnapshotError::Codec(codec_name(&self.body)));
        }
        if self.header.is_empty() {
            return Err(SnapshotError::Malformed(
                "no H.264 sequence header before the keyframe".into(),
            ));
        }
        let track = video_track(&self.header).map_err(|e| match e {
            TrackError::VideoCodec => SnapshotError::Codec(codec_name(&self.header)),
            other => SnapshotError::Malformed(other.to_string()),
        })?;
        let (width, height) = (u32::from(track.width), u32::from(track.height));
        if width == 0 || height == 0 {
            return Err(SnapshotError::Malformed(
                "the SPS declares no picture size".into(),
            ));
        }
        if u64::from(width) * u64::from(height) > MAX_PIXELS {
            return Err(SnapshotError::Malformed(format!(
                "a {width}x{height} picture (at most {MAX_PIXELS} pixels)"
            )));
        }
        if self.body.len() > MAX_KEYFRAME_BYTES {
            return Err(SnapshotError::Malformed(format!(
                "keyframe of {} bytes (at most {MAX_KEYFRAME_BYTES})",
                self.body.len()
            )));
        }
        let mut out = Vec::with_capacity(self.body.len() + track.avc_config.len() + 64);
        parameter_sets(&track.avc_config, &mut out)?;
        let nals = self
            .body
            .get(5..)
            .ok_or_else(|| SnapshotError::Malformed("keyframe header cut short".into()))?;
        let before = out.len();
        length_prefixed(nals, usize::from(track.length_size), &mut out)?;
        if out.len() == before {
            return Err(SnapshotError::Malformed("keyframe without NAL units".into()));
        }
        Ok(AccessUnit {
            data: out,
            width,
            height,
        })
    }
}

/// A codec's name from an FLV video tag's first byte, for the error a viewer reads.
fn codec_name(body: &[u8]) -> String {
    match body.first() {
        None => "none".into(),
        // Enhanced RTMP: a FourCC follows the first byte.
        Some(b) if b & 0x80 != 0 => match body.get(1..5) {
            Some(fourcc) if fourcc.iter().all(u8::is_ascii_graphic) => {
                format!("enhanced RTMP {}", String::from_utf8_lossy(fourcc))
            }
            _ => "enhanced RTMP (unknown FourCC)".into(),
        },
        Some(b) => match b & 0x0f {
            2 => "Sorenson H.263".into(),
            3 => "screen video".into(),
            4 => "VP6".into(),
            5 => "VP6 with alpha".into(),
            6 => "screen video 2".into(),
            7 => "H.264".into(),
            12 => "HEVC (FLV codec id 12)".into(),
            id => format!("FLV video codec id {id}"),
        },
    }
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Appends the SPS and PPS NAL units of an AVCDecoderConfigurationRecord, each behind a start code.
fn parameter_sets(record: &[u8], out: &mut Vec<u8>) -> Result<(), SnapshotError> {
    let malformed = || SnapshotError::Malformed("decoder configuration record cut short".into());
    let mut at = 5usize;
    for mask in [0x1f_u8, 0xff] {
        let count = record.get(at).ok_or_else(malformed)? & mask;
        at += 1;
        for _ in 0..count {
            let len = record.get(at..at + 2).ok_or_else(malformed)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let nal = record.get(at + 2..at + 2 + len).ok_or_else(malformed)?;
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
            at += 2 + len;
        }
    }
    Ok(())
}

/// Appends every NAL unit of `data` (each behind a `size`-byte big-endian length) behind a start code.
fn length_prefixed(mut data: &[u8], size: usize, out: &mut Vec<u8>) -> Result<(), SnapshotError> {
    while !data.is_empty() {
        let prefix = data
            .get(..size)
            .ok_or_else(|| SnapshotError::Malformed("NAL length cut short".into()))?;
        let len = prefix.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
        let nal = data.get(size..size + len).ok_or_else(|| {
            SnapshotError::Malformed(format!("NAL unit of {len} bytes runs past the frame"))
        })?;
        if !nal.is_empty() {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
        data = &data[size + len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 360p sample's SPS (640x360, constrained baseline).
    const SPS: [u8; 25] = [
        0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
        0x00, 0x03, 0x00, 0xc8, 0x3c, 0x58, 0xba, 0x80,
    ];

    /// A sequence header with that SPS and one PPS (`68 ..`), 4-byte NAL lengths.
    fn header() -> Bytes {
        let mut h = vec![0x17, 0, 0, 0, 0, 1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 25];
        h.extend_from_slice(&SPS);
        h.extend_from_slice(&[1, 0, 2, 0x68, 0xce]);
        Bytes::from(h)
    }

    fn keyframe(body: Vec<u8>) -> Keyframe {
        Keyframe {
            header: header(),
            body: Bytes::from(body),
            dts_ms: 0,
            pts_ms: 0,
        }
    }

    #[test]
    fn parameter_sets_then_nal_units_behind_start_codes() {
        let k = keyframe(vec![
            0x17, 1, 0, 0, 0, 0, 0, 0, 3, 0x65, 0xaa, 0xbb, 0, 0, 0, 2, 0x06, 0x01,
        ]);
        let au = k.annex_b().unwrap();
        assert_eq!((au.width, au.height), (640, 360));
        assert_eq!(
            au.data,
            [
                &START_CODE[..],
                &SPS,
                &START_CODE,
                &[0x68, 0xce],
                &START_CODE,
                &[0x65, 0xaa, 0xbb],
                &START_CODE,
                &[0x06, 0x01]
            ]
            .concat()
        );
    }

    #[test]
    fn hevc_and_enhanced_rtmp_are_named_codec_errors() {
        let mut k = keyframe(vec![0x1c, 1, 0, 0, 0, 0, 0, 0, 1, 0x26]);
        assert_eq!(
            k.annex_b().unwrap_err(),
            SnapshotError::Codec("HEVC (FLV codec id 12)".into())
        );
        k.body = Bytes::from_static(b"\x91hvc1\x00\x00\x00\x01\x26");
        let error = k.annex_b().unwrap_err();
        assert_eq!(error, SnapshotError::Codec("enhanced RTMP hvc1".into()));
        assert_eq!(error.status(), 415);
        // A codec without a sequence header (Sorenson H.263) is named too.
        k.header = Bytes::new();
        k.body = Bytes::from_static(b"\x12\x00\x00\x84");
        assert_eq!(
            k.annex_b().unwrap_err(),
            SnapshotError::Codec("Sorenson H.263".into())
        );
        k.body = Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        assert!(matches!(k.annex_b().unwrap_err(), SnapshotError::Malformed(_)));
    }

    #[test]
    fn lengths_past_the_end_are_malformed_not_panics() {
        for body in [
            vec![],
            vec![0x17],
            vec![0x17, 1, 0, 0, 0],
            vec![0x17, 1, 0, 0, 0, 0, 0, 0, 9, 0x65],
            vec![0x17, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            vec![0x17, 1, 0, 0, 0, 0, 0],
        ] {
            let error = keyframe(body.clone()).annex_b().unwrap_err();
            assert!(
                matches!(error, SnapshotError::Malformed(_)),
                "{body:?}: {error:?}"
            );
        }
        let mut k = keyframe(vec![0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        k.header = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 9, 0x67]);
        assert!(matches!(k.annex_b().unwrap_err(), SnapshotError::Malformed(_)));
    }

    #[test]
    fn hostile_spss_are_errors_not_overflows() {
        // `cargo fuzz run snapshot_input` found them: an SPS whose picture size overflowed 32-bit arithmetic,
        // and one whose scaling-list delta did.
        check_fuzz_input(&[
            250, 250, 39, 0, 250, 5, 37, 3, 131, 0, 250, 39, 39, 0, 15, 236, 0, 0, 248, 39, 11, 0, 0, 0, 1,
            0, 0, 0, 1, 39, 0, 0, 0, 42, 107, 170, 107, 255, 255, 108, 61, 39,
        ]);
        check_fuzz_input(&[
            250, 250, 39, 0, 255, 255, 255, 255, 255, 255, 255, 3, 39, 0, 38, 7, 122, 122, 122, 122, 122,
            122, 122, 255, 255, 255, 255, 0, 0, 0, 1, 255, 255, 255, 45, 255, 255, 255, 255, 255, 255, 255,
            255, 255, 255, 255, 255, 255, 255, 255, 255, 122, 122, 39, 39,
        ]);
    }

    /// What the fuzz target does with `input` on its access-unit path, each header also tried as AVC.
    fn check_fuzz_input(input: &[u8]) {
        let rest = &input[2..];
        let (header, body) = rest.split_at(rest.len() * usize::from(input[1]) / 255);
        let k = Keyframe {
            header: Bytes::copy_from_slice(header),
            body: Bytes::copy_from_slice(body),
            dts_ms: 0,
            pts_ms: 0,
        };
        assert!(k.annex_b().is_err());
        let mut header = header.to_vec();
        header[0] = 0x17;
        let k = Keyframe {
            header: Bytes::from(header),
            body: Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]),
            ..k
        };
        assert!(k.annex_b().is_err());
    }

    #[test]
    fn the_same_keyframe_is_the_same_allocation() {
        let a = keyframe(vec![0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        let b = a.clone();
        let c = keyframe(vec![0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        assert!(a.same_as(&b));
        assert!(!a.same_as(&c));
    }
}
