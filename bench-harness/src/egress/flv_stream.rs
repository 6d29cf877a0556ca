//! An incremental reader of an FLV byte stream (an HTTP-FLV response body), cheap enough for thousands of
//! players: the file header is checked and skipped, then each tag's 11-byte header is read and of its body
//! only the first [`MEDIA_PREFIX_BYTES`] are kept (the FLV audio/video header and the publisher's SEI stamp,
//! as the RTMP players keep of each message); the rest is skipped where it lies in the input. A tag is handed
//! out once its body and its previous-tag size have been read, as the RTMP reader hands out a message once
//! it is complete, so that lag means the same for both.

use crate::fanout::chunk_reader::MEDIA_PREFIX_BYTES;
use anyhow::{bail, Result};

/// Bytes of the FLV file header before its `DataOffset` takes over.
const FILE_HEADER_BYTES: usize = 9;
/// Bytes of a tag header.
const TAG_HEADER_BYTES: usize = 11;
/// Bytes of a previous-tag-size field.
const PREVIOUS_TAG_SIZE_BYTES: usize = 4;
/// Largest file header accepted (`DataOffset`; 9 in every FLV file written so far).
const MAX_FILE_HEADER_BYTES: u32 = 1024;

/// What the reader hands out of each tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagPrefix<'a> {
    /// FLV tag type: 8 audio, 9 video, 18 script data.
    pub tag_type: u8,
    /// The tag's timestamp, in ms (24 bits and the extension byte).
    pub timestamp_ms: u32,
    /// Length of the whole body, in bytes.
    pub data_size: u32,
    /// The body's first [`MEDIA_PREFIX_BYTES`] (all of it when shorter).
    pub prefix: &'a [u8],
}

/// Where the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the 9-byte file header.
    FileHeader,
    /// Skipping the rest of the file header and the first previous-tag size: bytes left.
    SkipHeader(u32),
    /// Reading a tag header.
    TagHeader,
    /// Reading a tag's body: bytes left.
    Body(u32),
    /// Reading the previous-tag size after a body.
    PreviousTagSize,
}

/// The incremental reader of one FLV stream.
#[derive(Debug)]
pub struct FlvStreamReader {
    state: State,
    /// The header being read (file or tag), or the previous-tag size.
    header: [u8; TAG_HEADER_BYTES],
    filled: usize,
    tag_type: u8,
    timestamp_ms: u32,
    data_size: u32,
    prefix: Vec<u8>,
}

impl Default for FlvStreamReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FlvStreamReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self {
            state: State::FileHeader,
            header: [0; TAG_HEADER_BYTES],
            filled: 0,
            tag_type: 0,
            timestamp_ms: 0,
            data_size: 0,
            prefix: Vec::with_capacity(MEDIA_PREFIX_BYTES),
        }
    }

    /// Reads `input`, calling `on_tag` for each tag completed in it.
    pub fn feed(&mut self, mut input: &[u8], mut on_tag: impl FnMut(&TagPrefix<'_>)) -> Result<()> {
        while !input.is_empty() {
            match self.state {
                State::FileHeader => {
                    if !self.fill(&mut input, FILE_HEADER_BYTES) {
                        break;
                    }
                    let h = &self.header;
                    if &h[..3] != b"FLV" {
                        bail!("not an FLV stream (starts with {:02x?})", &h[..3]);
                    }
                    let offset = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
                    if !(FILE_HEADER_BYTES as u32..=MAX_FILE_HEADER_BYTES).contains(&offset) {
                        bail!("FLV header size {offset} out of range");
                    }
                    self.state = State::SkipHeader(offset - FILE_HEADER_BYTES as u32 + 4);
                }
                State::SkipHeader(left) => {
                    let n = (left as usize).min(input.len());
                    input = &input[n..];
                    let left = left - n as u32;
                    self.state = if left == 0 {
                        State::TagHeader
                    } else {
                        State::SkipHeader(left)
                    };
                }
                State::TagHeader => {
                    if !self.fill(&mut input, TAG_HEADER_BYTES) {
                        break;
                    }
                    let h = &self.header;
                    if h[0] & 0x20 != 0 {
                        bail!("an encrypted FLV tag (filter bit set)");
                    }
                    self.tag_type = h[0] & 0x1f;
                    self.data_size = u32::from_be_bytes([0, h[1], h[2], h[3]]);
                    self.timestamp_ms = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
                    self.prefix.clear();
                    self.state = if self.data_size == 0 {
                        State::PreviousTagSize
                    } else {
                        State::Body(self.data_size)
                    };
                }
                State::Body(left) => {
                    let n = (left as usize).min(input.len());
                    let room = MEDIA_PREFIX_BYTES - self.prefix.len();
                    self.prefix.extend_from_slice(&input[..n.min(room)]);
                    input = &input[n..];
                    let left = left - n as u32;
                    self.state = if left == 0 {
                        State::PreviousTagSize
                    } else {
                        State::Body(left)
                    };
                }
                State::PreviousTagSize => {
                    if !self.fill(&mut input, PREVIOUS_TAG_SIZE_BYTES) {
                        break;
                    }
                    let h = &self.header;
                    let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                    if size != self.data_size + TAG_HEADER_BYTES as u32 {
                        bail!(
                            "previous tag size {size} after a tag of {} bytes (expected {})",
                            self.data_size,
                            self.data_size + TAG_HEADER_BYTES as u32
                        );
                    }
                    on_tag(&TagPrefix {
                        tag_type: self.tag_type,
                        timestamp_ms: self.timestamp_ms,
                        data_size: self.data_size,
                        prefix: &self.prefix,
                    });
                    self.state = State::TagHeader;
                }
            }
        }
        Ok(())
    }

    /// Fills `header` to `len` bytes from `input`; whether it is full (then `filled` starts over).
    fn fill(&mut self, input: &mut &[u8], len: usize) -> bool {
        let n = (len - self.filled).min(input.len());
        self.header[self.filled..self.filled + n].copy_from_slice(&input[..n]);
        self.filled += n;
        *input = &input[n..];
        if self.filled < len {
            return false;
        }
        self.filled = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An FLV tag with its previous-tag size, as a server writes it.
    fn tag(tag_type: u8, timestamp_ms: u32, body: &[u8]) -> Vec<u8> {
        let mut t = vec![tag_type];
        t.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        t.extend_from_slice(&timestamp_ms.to_be_bytes()[1..]);
        t.push((timestamp_ms >> 24) as u8);
        t.extend_from_slice(&[0, 0, 0]);
        t.extend_from_slice(body);
        t.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        t
    }

    fn stream() -> Vec<u8> {
        let mut s = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        s.extend(tag(18, 0, b"\x02\x00\x0aonMetaData"));
        s.extend(tag(9, 0, &[0x17, 0, 0, 0, 0, 1, 2, 3]));
        let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        s.extend(tag(9, 0x0102_0304, &big));
        s.extend(tag(8, 40, &[0xaf, 0x01, 9]));
        s.extend(tag(9, 80, &[]));
        s
    }

    #[test]
    fn reads_tags_however_the_reads_split_them() {
        let s = stream();
        for step in [1, 2, 3, 7, 11, 64, 500, s.len()] {
            let mut r = FlvStreamReader::new();
            let mut seen = Vec::new();
            for piece in s.chunks(step) {
                r.feed(piece, |t| {
                    seen.push((t.tag_type, t.timestamp_ms, t.data_size, t.prefix.to_vec()));
                })
                .unwrap();
            }
            assert_eq!(seen.len(), 5, "step {step}");
            assert_eq!(seen[0].0, 18);
            assert_eq!(seen[1], (9, 0, 8, vec![0x17, 0, 0, 0, 0, 1, 2, 3]));
            assert_eq!((seen[2].1, seen[2].2), (0x0102_0304, 1000), "extended timestamp");
            assert_eq!(seen[2].3.len(), MEDIA_PREFIX_BYTES, "only a prefix is kept");
            assert_eq!(seen[2].3[63], 63);
            assert_eq!(seen[3], (8, 40, 3, vec![0xaf, 0x01, 9]));
            assert_eq!(seen[4], (9, 80, 0, vec![]));
        }
    }

    #[test]
    fn a_tag_is_handed_out_only_once_complete() {
        let s = stream();
        let mut r = FlvStreamReader::new();
        let mut n = 0;
        // Everything but the last byte of the last previous-tag size.
        r.feed(&s[..s.len() - 1], |_| n += 1).unwrap();
        assert_eq!(n, 4);
        r.feed(&s[s.len() - 1..], |_| n += 1).unwrap();
        assert_eq!(n, 5);
    }

    #[test]
    fn refuses_what_is_not_flv() {
        let mut r = FlvStreamReader::new();
        assert!(r.feed(b"HTTP/1.1 200 OK\r\n", |_| {}).is_err());
        let mut bad = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        let mut t = tag(9, 0, b"abc");
        let last = t.len() - 1;
        t[last] ^= 1;
        bad.extend(t);
        assert!(
            FlvStreamReader::new().feed(&bad, |_| {}).is_err(),
            "wrong previous tag size"
        );
        let huge_header = b"FLV\x01\x05\xff\x00\x00\x09";
        assert!(FlvStreamReader::new().feed(huge_header, |_| {}).is_err());
    }
}
