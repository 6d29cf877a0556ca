//! HTTP-FLV: a live stream as an FLV file that never ends, in an HTTP/1.1 chunked response (HTTP/1.0: the
//! body until the connection closes), as flv.js, mpegts.js, ffmpeg and VLC play it.
//!
//! A frame's HTTP-FLV form is its FLV tag (11-byte tag header, the body as the publisher sent it, the 4-byte
//! previous-tag size) wrapped as one HTTP chunk (`SIZE\r\n` ... `\r\n`): it depends on the frame alone, so it is
//! encoded once, by the first HTTP-FLV viewer on any core, kept in the frame's shared
//! [`Encodings`](crate::media::frame::Encodings), and every viewer's queue holds a reference to it. An
//! HTTP/1.0 viewer gets the tag without the chunk framing: a slice of the same bytes, no copy.

use bytes::{BufMut, Bytes, BytesMut};

use crate::egress::http::{response_head, Persistence};
use crate::media::{Frame, Track};

/// The FLV file header (signature, version 1, audio and video present, header size 9) and the first
/// previous-tag size (0): what an FLV body starts with.
pub const FLV_FILE_HEADER: [u8; 13] = [b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0];

/// The last chunk of a chunked body: the stream ended and the response is complete.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// FLV tag header bytes before a tag's body.
const TAG_HEADER: usize = 11;
/// The previous-tag-size field after a tag's body.
const PREVIOUS_TAG_SIZE: usize = 4;

/// The FLV tag type of `track` (the RTMP message type ids are FLV's tag types).
fn tag_type(track: Track) -> u8 {
    track.message_type()
}

/// The HTTP-FLV form of `frame`: its FLV tag as one HTTP chunk when `chunked`, else the bare tag (a slice of
/// the same shared bytes). Encoded by the first caller, shared with every other. The tag carries the
/// unwrapped dts modulo 2^32 (24 bits and the extension byte), data tags (`onMetaData`) at 0, as the RTMP
/// output does.
pub fn frame_tag(frame: &Frame, chunked: bool) -> Bytes {
    let framed = frame
        .encodings
        .http_flv
        .get_or_init(|| encode_chunk(frame))
        .clone();
    if chunked {
        return framed;
    }
    let tag_len = TAG_HEADER + frame.body.len() + PREVIOUS_TAG_SIZE;
    let prefix = chunk_prefix_len(tag_len);
    framed.slice(prefix..prefix + tag_len)
}

/// Bytes of the chunk-size line (`SIZE\r\n`) before a chunk of `len` bytes.
fn chunk_prefix_len(len: usize) -> usize {
    format!("{len:x}").len() + 2
}

fn encode_chunk(frame: &Frame) -> Bytes {
    let body = &frame.body;
    let tag_len = TAG_HEADER + body.len() + PREVIOUS_TAG_SIZE;
    let size_line = format!("{tag_len:x}\r\n");
    let mut out = BytesMut::with_capacity(size_line.len() + tag_len + 2);
    out.put_slice(size_line.as_bytes());
    let timestamp = if frame.track == Track::Data {
        0
    } else {
        frame.dts_ms as u32
    };
    // Ingest bounds a message far below 2^24 bytes (rtmp.max_message_bytes), FLV's data size field.
    let data_size = (body.len() as u32).min(0xFF_FFFF);
    out.put_u8(tag_type(frame.track));
    out.put_slice(&data_size.to_be_bytes()[1..]);
    out.put_slice(&(timestamp & 0xFF_FFFF).to_be_bytes()[1..]);
    out.put_u8((timestamp >> 24) as u8);
    out.put_slice(&[0, 0, 0]);
    out.put_slice(body);
    out.put_u32(TAG_HEADER as u32 + data_size);
    out.put_slice(b"\r\n");
    out.freeze()
}

/// What an HTTP-FLV viewer gets before its first tag: the `200 OK` head and, unless `head_only`, the FLV
/// file header (as a chunk when `chunked`). The body never ends: the response owns its connection
/// (`Connection: close`).
pub fn preamble(cors: &str, chunked: bool, head_only: bool) -> Bytes {
    let mut headers = vec!["Content-Type: video/x-flv", "Cache-Control: no-cache"];
    if chunked {
        headers.push("Transfer-Encoding: chunked");
    }
    let head = response_head(200, "OK", cors, Persistence::Close, &headers);
    if head_only {
        return head;
    }
    let mut out = BytesMut::with_capacity(head.len() + FLV_FILE_HEADER.len() + 8);
    out.put_slice(&head);
    if chunked {
        out.put_slice(format!("{:x}\r\n", FLV_FILE_HEADER.len()).as_bytes());
        out.put_slice(&FLV_FILE_HEADER);
        out.put_slice(b"\r\n");
    } else {
        out.put_slice(&FLV_FILE_HEADER);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::media::MediaKind;
    use std::time::Instant;

    fn frame(track: Track, dts: u64, body: &'static [u8]) -> Frame {
        Frame::new(
            MediaKind::Key,
            track,
            dts,
            dts,
            Bytes::from_static(body),
            Instant::now(),
        )
    }

    #[test]
    fn a_tag_is_one_chunk_with_the_flv_layout() {
        let f = frame(Track::Video, 0x0123_4567, b"\x17\x01abc");
        let chunk = frame_tag(&f, true);
        // 11 + 5 + 4 = 20 = 0x14.
        assert!(chunk.starts_with(b"14\r\n"));
        assert!(chunk.ends_with(b"\r\n"));
        let tag = &chunk[4..chunk.len() - 2];
        assert_eq!(tag.len(), 20);
        assert_eq!(tag[0], 9, "video tag");
        assert_eq!(&tag[1..4], &[0, 0, 5], "data size");
        assert_eq!(&tag[4..7], &[0x23, 0x45, 0x67], "timestamp, low 24 bits");
        assert_eq!(tag[7], 0x01, "timestamp extension: the high byte");
        assert_eq!(&tag[8..11], &[0, 0, 0], "stream id");
        assert_eq!(&tag[11..16], b"\x17\x01abc");
        assert_eq!(
            &tag[16..],
            &16u32.to_be_bytes(),
            "previous tag size: header + body"
        );
    }

    #[test]
    fn every_viewer_shares_one_encoding_and_http_1_0_gets_a_slice_of_it() {
        let f = frame(Track::Audio, 40, b"\xaf\x01xy");
        let a = frame_tag(&f, true);
        let b = frame_tag(&f.clone(), true);
        assert_eq!(a.as_ptr(), b.as_ptr(), "one encoding");
        let bare = frame_tag(&f, false);
        assert_eq!(bare.as_ptr(), a[4..].as_ptr(), "no copy for HTTP/1.0");
        assert_eq!(bare.len(), 11 + 4 + 4);
        assert_eq!(bare[0], 8);
    }

    #[test]
    fn metadata_goes_at_timestamp_zero() {
        let f = frame(Track::Data, 5_000, b"\x02\x00\x0aonMetaData");
        let bare = frame_tag(&f, false);
        assert_eq!(bare[0], 18);
        assert_eq!(&bare[4..8], &[0, 0, 0, 0]);
    }

    #[test]
    fn the_preamble_starts_an_flv_file() {
        let p = preamble("*", true, false);
        let text = String::from_utf8_lossy(&p);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
        assert!(text.contains("Content-Type: video/x-flv\r\n"));
        assert!(p.ends_with(b"\r\n\r\nd\r\nFLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00\r\n"));
        let p = preamble("", false, false);
        assert!(p.ends_with(&FLV_FILE_HEADER));
        assert!(!String::from_utf8_lossy(&p).contains("chunked"));
        let p = preamble("*", true, true);
        assert!(p.ends_with(b"\r\n\r\n"));
    }
}
