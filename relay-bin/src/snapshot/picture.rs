//! Keyframe to JPEG in this process: H.264 decoded by OpenH264 (Cisco's decoder, built from the source the
//! `openh264` crate bundles), converted to RGB, scaled with `fast_image_resize` and encoded with
//! `jpeg-encoder`. The node runs this in a `popline snapshot-worker` child process (see
//! [`super::worker`]), never in its own: a decoder fault on hostile video ends a worker, not the node.

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use openh264::formats::YUVSource;

use super::error::SnapshotError;

/// The smallest width a snapshot may be scaled to.
pub const MIN_WIDTH: u32 = 16;

/// A JPEG picture and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jpeg {
    /// The JPEG file.
    pub bytes: bytes::Bytes,
    /// Its width in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
}

/// Decodes one Annex-B access unit (a keyframe with its parameter sets) and encodes it as JPEG of quality
/// `quality` (1..=100), scaled down to `width` (aspect kept) when that is smaller than the picture.
pub fn jpeg_of(access_unit: &[u8], width: Option<u32>, quality: u8) -> Result<Jpeg, SnapshotError> {
    let decode_error = |e: openh264::Error| SnapshotError::Decode(e.to_string());
    let mut decoder = openh264::decoder::Decoder::new().map_err(decode_error)?;
    let (w, h, rgb) = match decoder.decode(access_unit).map_err(decode_error)? {
        Some(yuv) => rgb_of(&yuv),
        None => {
            let pictures = decoder.flush_remaining().map_err(decode_error)?;
            let yuv = pictures
                .first()
                .ok_or_else(|| SnapshotError::Decode("no picture came out of the keyframe".into()))?;
            rgb_of(yuv)
        }
    };
    let (w, h) = (w as u32, h as u32);
    let (rgb, w, h) = match width.map(|asked| scaled_size(w, h, asked)) {
        Some((sw, sh)) if sw < w => (scale(rgb, (w, h), (sw, sh))?, sw, sh),
        _ => (rgb, w, h),
    };
    let too_big = |_| SnapshotError::Decode(format!("a {w}x{h} picture is too big for JPEG"));
    let (jw, jh) = (
        u16::try_from(w).map_err(too_big)?,
        u16::try_from(h).map_err(too_big)?,
    );
    let mut bytes = Vec::with_capacity(rgb.len() / 8);
    jpeg_encoder::Encoder::new(&mut bytes, quality.clamp(1, 100))
        .encode(&rgb, jw, jh, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| SnapshotError::Decode(format!("JPEG encoding failed: {e}")))?;
    Ok(Jpeg {
        bytes: bytes.into(),
        width: w,
        height: h,
    })
}

/// The picture as packed RGB.
fn rgb_of(yuv: &openh264::decoder::DecodedYUV<'_>) -> (usize, usize, Vec<u8>) {
    let (w, h) = yuv.dimensions();
    let mut rgb = vec![0; w * h * 3];
    yuv.write_rgb8(&mut rgb);
    (w, h, rgb)
}

/// The size a `w` x `h` picture scales to at width `asked` (never wider than the picture, never narrower
/// than [`MIN_WIDTH`]), aspect kept, both sides even.
pub fn scaled_size(w: u32, h: u32, asked: u32) -> (u32, u32) {
    let sw = asked.clamp(MIN_WIDTH, w.max(MIN_WIDTH)) & !1;
    let sh = ((u64::from(h) * u64::from(sw) + u64::from(w) / 2) / u64::from(w.max(1))) as u32;
    (sw, (sh & !1).max(2))
}

fn scale(rgb: Vec<u8>, from: (u32, u32), to: (u32, u32)) -> Result<Vec<u8>, SnapshotError> {
    let error = |e: &dyn std::fmt::Display| SnapshotError::Decode(format!("scaling failed: {e}"));
    let source = Image::from_vec_u8(from.0, from.1, rgb, PixelType::U8x3).map_err(|e| error(&e))?;
    let mut target = Image::new(to.0, to.1, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(&source, &mut target, &options)
        .map_err(|e| error(&e))?;
    Ok(target.into_vec())
}

/// The size a JPEG file declares in its start-of-frame segment, if it is one.
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u32, u32)> {
    if jpeg.get(..2)? != [0xff, 0xd8] {
        return None;
    }
    let mut at = 2;
    loop {
        let marker = jpeg.get(at..at + 4)?;
        if marker[0] != 0xff {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([marker[2], marker[3]]));
        // SOF0..SOF15, bar DHT (C4), JPG (C8) and DAC (CC).
        if (0xc0..=0xcf).contains(&marker[1]) && ![0xc4, 0xc8, 0xcc].contains(&marker[1]) {
            let sof = jpeg.get(at + 4..at + 9)?;
            let h = u32::from(u16::from_be_bytes([sof[1], sof[2]]));
            let w = u32::from(u16::from_be_bytes([sof[3], sof[4]]));
            return Some((w, h));
        }
        at += 2 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_sizes_keep_aspect_and_never_upscale() {
        assert_eq!(scaled_size(1280, 720, 320), (320, 180));
        assert_eq!(scaled_size(1280, 720, 4000), (1280, 720));
        assert_eq!(scaled_size(640, 360, 1), (16, 8));
        assert_eq!(scaled_size(641, 361, 641), (640, 360));
        assert_eq!(scaled_size(0, 0, 100), (16, 2));
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_crash() {
        for input in [
            &b""[..],
            b"\x00\x00\x00\x01",
            b"\x00\x00\x00\x01\x65\xff\xff\xff\xff",
            &[0xab; 4096],
        ] {
            assert!(jpeg_of(input, None, 80).is_err(), "{input:?}");
        }
    }

    #[test]
    fn jpeg_sizes_are_read_from_the_start_of_frame() {
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 50)
            .encode(&[128; 24 * 10 * 3], 24, 10, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        assert_eq!(jpeg_size(&jpeg), Some((24, 10)));
        assert_eq!(jpeg_size(b"not a jpeg"), None);
        assert_eq!(jpeg_size(&jpeg[..20]), None);
    }
}
