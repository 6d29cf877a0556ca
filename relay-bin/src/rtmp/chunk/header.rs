//! Chunk headers (RTMP 1.0, 5.3.1): the basic header (format and chunk stream id), the message header its
//! format carries, and the extended timestamp. Parsed from a prefix of the bytes, with every length checked;
//! a prefix too short says how long the header is as far as it tells.

use crate::rtmp::byte_reader::Reader;

/// RTMP's initial chunk size in both directions (and rml_rtmp's), in bytes.
pub const INITIAL_CHUNK_SIZE: u32 = 128;

/// The largest chunk size RTMP allows (the spec caps it at the largest message length, 2^24 - 1 bytes).
pub const RTMP_MAX_CHUNK_SIZE: u32 = 0x00FF_FFFF;

/// The 24-bit timestamp value that says an extended (32-bit) timestamp follows the header.
pub const EXTENDED_TIMESTAMP_MARK: u32 = 0x00FF_FFFF;

/// The longest chunk header: basic header (3 bytes) + type 0 message header (11) + extended timestamp (4).
pub const MAX_HEADER_BYTES: usize = 18;

/// Message header length by chunk format (fmt 0, 1, 2, 3), in bytes.
const MESSAGE_HEADER_BYTES: [usize; 4] = [11, 7, 3, 0];

/// How far a header parse got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse<T> {
    /// The bytes end inside the header, which is at least `needed` bytes long (always more than were given).
    Incomplete {
        /// Header length as far as the bytes so far tell, in bytes.
        needed: usize,
    },
    /// The whole header.
    Complete(T),
}

/// A chunk's basic header: its format and chunk stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasicHeader {
    /// Chunk format, 0 to 3: which message header fields follow (0 all, 1 no stream id, 2 the timestamp
    /// delta only, 3 none).
    pub fmt: u8,
    /// Chunk stream id (2 to 65 599; 0 and 1 select the 2- and 3-byte forms, 2 is protocol control).
    pub csid: u32,
    /// Length of the basic header, in bytes (1 to 3).
    pub len: usize,
}

impl BasicHeader {
    /// Reads the basic header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Parse<BasicHeader> {
        let mut reader = Reader::new(bytes);
        match Self::read(&mut reader) {
            Some(header) => Parse::Complete(header),
            None => Parse::Incomplete {
                // Only the 2-byte (csid field 0) and 3-byte (field 1) forms can be cut short.
                needed: match bytes.first().map(|first| first & 0x3F) {
                    None => 1,
                    Some(0) => 2,
                    Some(_) => 3,
                },
            },
        }
    }

    fn read(reader: &mut Reader<'_>) -> Option<BasicHeader> {
        let first = reader.u8()?;
        let csid = match first & 0x3F {
            0 => 64 + u32::from(reader.u8()?),
            1 => {
                let (low, high) = (reader.u8()?, reader.u8()?);
                64 + u32::from(low) + 256 * u32::from(high)
            }
            id => u32::from(id),
        };
        Some(BasicHeader {
            fmt: first >> 6,
            csid,
            len: reader.position(),
        })
    }
}

/// A complete chunk header, with the fields its format carries (the rest come from the chunk stream's
/// previous header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Chunk format (0 to 3).
    pub fmt: u8,
    /// Chunk stream id.
    pub csid: u32,
    /// The 24-bit timestamp (fmt 0) or timestamp delta (fmt 1, 2) field; 0xFFFFFF means an extended timestamp
    /// follows, on this chunk and on every fmt 3 chunk after it.
    pub timestamp_field: Option<u32>,
    /// Message length (fmt 0, 1), in bytes.
    pub length: Option<u32>,
    /// Message type id (fmt 0, 1).
    pub type_id: Option<u8>,
    /// Message stream id (fmt 0; little-endian on the wire).
    pub stream_id: Option<u32>,
    /// The extended timestamp, present when the timestamp field in force is 0xFFFFFF.
    pub extended_timestamp: Option<u32>,
    /// Length of the whole header, in bytes (1 to [`MAX_HEADER_BYTES`]).
    pub len: usize,
}

impl ChunkHeader {
    /// Reads the chunk header at the start of `bytes`. `remembered_timestamp_field` is the timestamp field of
    /// the chunk stream's previous header, if any: a fmt 3 header carries an extended timestamp when that field
    /// is 0xFFFFFF (as rml_rtmp, ffmpeg and Flash read it).
    pub fn parse(bytes: &[u8], remembered_timestamp_field: Option<u32>) -> Parse<ChunkHeader> {
        let basic = match BasicHeader::parse(bytes) {
            Parse::Complete(basic) => basic,
            Parse::Incomplete { needed } => return Parse::Incomplete { needed },
        };
        let message_header = MESSAGE_HEADER_BYTES
            .get(usize::from(basic.fmt))
            .copied()
            .unwrap_or(0);
        let fixed = basic.len + message_header;
        let mut reader = Reader::new(bytes);
        let mut header = ChunkHeader {
            fmt: basic.fmt,
            csid: basic.csid,
            timestamp_field: None,
            length: None,
            type_id: None,
            stream_id: None,
            extended_timestamp: None,
            len: fixed,
        };
        if reader.skip(basic.len).is_none() || header.read_message_header(&mut reader).is_none() {
            return Parse::Incomplete { needed: fixed };
        }
        let field = header.timestamp_field.or(remembered_timestamp_field);
        if field == Some(EXTENDED_TIMESTAMP_MARK) {
            match reader.be32() {
                Some(extended) => header.extended_timestamp = Some(extended),
                None => return Parse::Incomplete { needed: fixed + 4 },
            }
            header.len = fixed + 4;
        }
        Parse::Complete(header)
    }

    /// Reads the fields of the message header the format carries.
    fn read_message_header(&mut self, reader: &mut Reader<'_>) -> Option<()> {
        if self.fmt <= 2 {
            self.timestamp_field = Some(reader.be24()?);
        }
        if self.fmt <= 1 {
            self.length = Some(reader.be24()?);
            self.type_id = Some(reader.u8()?);
        }
        if self.fmt == 0 {
            self.stream_id = Some(reader.le32()?);
        }
        Some(())
    }

    /// The timestamp (fmt 0) or delta (fmt 1, 2) this header carries, in milliseconds: the extended
    /// timestamp when there is one, else the 24-bit field. `None` for fmt 3.
    pub fn timestamp_ms(&self) -> Option<u32> {
        self.timestamp_field
            .map(|field| self.extended_timestamp.unwrap_or(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::test_stream::{basic_header, raw_chunk};
    use proptest::prelude::*;

    fn complete(bytes: &[u8], remembered: Option<u32>) -> ChunkHeader {
        match ChunkHeader::parse(bytes, remembered) {
            Parse::Complete(header) => header,
            Parse::Incomplete { needed } => panic!("incomplete, needs {needed}"),
        }
    }

    #[test]
    fn basic_header_forms() {
        for (csid, len) in [(2u32, 1usize), (63, 1), (64, 2), (319, 2), (320, 3), (65_599, 3)] {
            let mut bytes = Vec::new();
            basic_header(&mut bytes, 2, csid);
            assert_eq!(
                BasicHeader::parse(&bytes),
                Parse::Complete(BasicHeader { fmt: 2, csid, len })
            );
            for cut in 0..len {
                assert_eq!(
                    BasicHeader::parse(&bytes[..cut]),
                    Parse::Incomplete {
                        needed: if cut == 0 { 1 } else { len }
                    }
                );
            }
        }
    }

    #[test]
    fn every_format_carries_its_fields() {
        let full = complete(&raw_chunk(0, 5, 40, 300, 9, 1, None, &[]), None);
        assert_eq!(
            full,
            ChunkHeader {
                fmt: 0,
                csid: 5,
                timestamp_field: Some(40),
                length: Some(300),
                type_id: Some(9),
                stream_id: Some(1),
                extended_timestamp: None,
                len: 12,
            }
        );
        let delta = complete(&raw_chunk(1, 5, 33, 20, 8, 0, None, &[]), None);
        assert_eq!(
            (delta.length, delta.type_id, delta.stream_id, delta.len),
            (Some(20), Some(8), None, 8)
        );
        let time = complete(&raw_chunk(2, 5, 33, 0, 0, 0, None, &[]), None);
        assert_eq!((time.timestamp_ms(), time.length, time.len), (Some(33), None, 4));
        let empty = complete(&raw_chunk(3, 5, 0, 0, 0, 0, None, &[]), Some(33));
        assert_eq!((empty.timestamp_ms(), empty.len), (None, 1));
    }

    #[test]
    fn extended_timestamps_follow_the_field_in_force() {
        let bytes = raw_chunk(0, 6, 0xFF_FFFF, 1, 9, 1, Some(0x0100_0000), &[]);
        let header = complete(&bytes, None);
        assert_eq!((header.timestamp_ms(), header.len), (Some(0x0100_0000), 16));
        assert_eq!(
            ChunkHeader::parse(&bytes[..12], None),
            Parse::Incomplete { needed: 16 }
        );
        // fmt 3 reads one when the chunk stream's last field was 0xFFFFFF, and only then.
        let continuation = [0xC6, 0x01, 0xFF, 0xFF, 0xFF];
        let header = complete(&continuation, Some(0xFF_FFFF));
        assert_eq!((header.extended_timestamp, header.len), (Some(0x01FF_FFFF), 5));
        assert_eq!(complete(&continuation, Some(7)).len, 1);
        assert_eq!(complete(&continuation, None).len, 1);
    }

    proptest! {
        /// Any prefix of a header is incomplete with a growing `needed` that never overshoots; garbage
        /// never panics.
        #[test]
        fn prefixes_ask_for_what_the_header_needs(
            bytes in prop::collection::vec(any::<u8>(), 0..24),
            remembered in prop::option::of(prop_oneof![Just(0xFF_FFFFu32), any::<u32>()]),
        ) {
            match ChunkHeader::parse(&bytes, remembered) {
                Parse::Complete(header) => {
                    prop_assert!(header.len <= bytes.len() && header.len <= MAX_HEADER_BYTES);
                    prop_assert_eq!(
                        ChunkHeader::parse(&bytes[..header.len], remembered),
                        Parse::Complete(header)
                    );
                    for cut in 0..header.len {
                        match ChunkHeader::parse(&bytes[..cut], remembered) {
                            Parse::Incomplete { needed } => prop_assert!(needed > cut && needed <= header.len),
                            Parse::Complete(_) => prop_assert!(false, "complete at {cut}"),
                        }
                    }
                }
                Parse::Incomplete { needed } => prop_assert!(needed > bytes.len() && needed <= MAX_HEADER_BYTES),
            }
        }
    }
}
