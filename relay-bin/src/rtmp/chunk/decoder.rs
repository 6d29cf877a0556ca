//! [`ChunkDecoder`]: the incremental, sans-IO RTMP chunk stream decoder (RTMP 1.0, 5.3).
//!
//! The caller hands it the bytes it read, in order and cut anywhere, and pulls [`ChunkEvent`]s: a chunk's
//! header with the message it belongs to, the chunk's payload as slices of the caller's bytes (no copy, no
//! message assembled), and the end of each message. What to keep of a payload is the caller's choice.
//!
//! It remembers, per chunk stream, what compressed headers leave out (length, type, stream id, timestamp and
//! delta, whether an extended timestamp follows: the rule rml_rtmp, ffmpeg and Flash follow, a fmt 3 chunk
//! carries one whenever the chunk stream's last timestamp field was 0xFFFFFF), and the message each chunk
//! stream has half received. A new fmt 0, 1 or 2 header in the middle of a message continues it (as rml_rtmp
//! does) if it keeps the message's length and type. `SetChunkSize` takes effect inside the decoder when its
//! message ends, since it changes how the very next bytes parse; `Abort` is the caller's to apply
//! ([`ChunkDecoder::abort`]). Every bound a peer could push is in [`ChunkLimits`]. It buffers at most one
//! incomplete chunk header (18 bytes) and never panics; after an error it keeps returning that error.

use crate::rtmp::chunk::error::ChunkError;
use crate::rtmp::chunk::header::{BasicHeader, ChunkHeader, Parse, INITIAL_CHUNK_SIZE, MAX_HEADER_BYTES};
use crate::rtmp::chunk::limits::ChunkLimits;
use crate::rtmp::message_type;

/// A message as its first chunk header (with the chunk stream's remembered fields) describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// Chunk stream id it arrives on.
    pub csid: u32,
    /// Message type id (see [`crate::rtmp::message_type`]).
    pub type_id: u8,
    /// Payload length, in bytes.
    pub length: u32,
    /// Message stream id.
    pub stream_id: u32,
    /// Timestamp, in milliseconds (absolute from fmt 0, plus the deltas of later headers; wraps at 2^32).
    pub timestamp_ms: u32,
}

/// One chunk's header, as it applies to its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Chunk format (0 to 3).
    pub fmt: u8,
    /// The message the chunk belongs to.
    pub message: MessageHeader,
    /// The chunk is its message's first.
    pub starts_message: bool,
    /// The extended timestamp the chunk carried, if any (for a fmt 3 chunk, a repeat of the last one in
    /// well-formed streams).
    pub extended_timestamp: Option<u32>,
    /// Payload bytes that follow the header, in bytes (0 only for an empty message).
    pub payload_len: u32,
}

/// What the decoder found next in the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEvent<'a> {
    /// A complete chunk header. Its payload follows as [`ChunkEvent::Payload`]s, then (if the chunk ends its
    /// message) [`ChunkEvent::MessageEnd`].
    Chunk(Chunk),
    /// Payload bytes of the current chunk, as they lie in the input.
    Payload {
        /// Chunk stream id.
        csid: u32,
        /// Message type id.
        type_id: u8,
        /// The bytes (a chunk's payload comes in as many pieces as the reads cut it into).
        bytes: &'a [u8],
    },
    /// The message is complete (a `SetChunkSize` has taken effect).
    MessageEnd(MessageHeader),
}

/// What a chunk stream's headers left in force.
#[derive(Debug, Clone, Copy, Default)]
struct Remembered {
    /// The last 24-bit timestamp field: 0xFFFFFF means fmt 3 chunks carry an extended timestamp.
    timestamp_field: u32,
    timestamp_ms: u32,
    /// Added to the timestamp by a fmt 3 chunk that starts a message (fmt 0 sets it to its timestamp, as
    /// rml_rtmp and ffmpeg do).
    delta_ms: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

/// A message half received.
#[derive(Debug, Clone, Copy)]
struct InProgress {
    header: MessageHeader,
    received: u32,
    /// The first payload bytes of a `SetChunkSize`.
    control: [u8; 4],
}

#[derive(Debug, Clone, Copy)]
struct ChunkStream {
    csid: u32,
    remembered: Remembered,
    message: Option<InProgress>,
}

/// Where the decoder is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Reading a chunk header (`header_len` bytes of it buffered).
    Header,
    /// Inside a chunk's payload: `left` bytes to come, for `streams[stream]`.
    Payload { stream: usize, left: u32 },
    /// `streams[stream]`'s message is complete; its end is the next event.
    End { stream: usize },
}

/// The chunk stream decoder of one direction of one connection; see the module docs.
#[derive(Debug, Clone)]
pub struct ChunkDecoder {
    limits: ChunkLimits,
    chunk_size: u32,
    streams: Vec<ChunkStream>,
    stage: Stage,
    header: [u8; MAX_HEADER_BYTES],
    header_len: usize,
    failed: Option<ChunkError>,
}

impl ChunkDecoder {
    /// A decoder at the start of a chunk stream (right after the handshake: chunk size 128).
    pub fn new(limits: ChunkLimits) -> Self {
        ChunkDecoder {
            limits,
            chunk_size: INITIAL_CHUNK_SIZE,
            streams: Vec::new(),
            stage: Stage::Header,
            header: [0; MAX_HEADER_BYTES],
            header_len: 0,
            failed: None,
        }
    }

    /// The peer's current chunk size, in bytes (128 until its first `SetChunkSize` ends).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &ChunkLimits {
        &self.limits
    }

    /// Between messages: no header bytes buffered, no payload pending, no message half received.
    pub fn is_idle(&self) -> bool {
        matches!(self.stage, Stage::Header)
            && self.header_len == 0
            && self.streams.iter().all(|stream| stream.message.is_none())
    }

    /// The next event from `input`, consuming the bytes it covers (`input` is advanced past them); `None` when
    /// the input is used up (an incomplete header is kept for the next call). Call it until `None` before
    /// reading more; an event that needs no bytes (a message's end) comes even from an empty input.
    pub fn next_event<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<ChunkEvent<'a>>, ChunkError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.step(input);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// Drops the message half received on `csid` (what RTMP's `Abort` asks; rml_rtmp ignores it, so the
    /// guard does not call this). Takes effect at once: the rest of a chunk in progress is skipped.
    pub fn abort(&mut self, csid: u32) {
        if let Some(stream) = self.streams.iter_mut().find(|stream| stream.csid == csid) {
            stream.message = None;
        }
    }

    fn step<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<ChunkEvent<'a>>, ChunkError> {
        loop {
            match self.stage {
                Stage::Header => return self.read_header(input),
                Stage::Payload { stream, left } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    if let Some(event) = self.read_payload(stream, left, input) {
                        return Ok(Some(event));
                    }
                }
                Stage::End { stream } => {
                    self.stage = Stage::Header;
                    if let Some(event) = self.end_message(stream)? {
                        return Ok(Some(event));
                    }
                }
            }
        }
    }

    /// Reads a chunk header: straight from the input when it holds the whole header, else through `header`.
    fn read_header<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<ChunkEvent<'a>>, ChunkError> {
        if self.header_len == 0 {
            if input.is_empty() {
                return Ok(None);
            }
            return match self.parse_header(input)? {
                Parse::Complete(header) => {
                    *input = input.get(header.len..).unwrap_or_default();
                    self.start_chunk(header)
                        .map(|chunk| Some(ChunkEvent::Chunk(chunk)))
                }
                Parse::Incomplete { .. } => {
                    // Shorter than a header, so it fits the buffer.
                    let take = input.len().min(MAX_HEADER_BYTES);
                    if let (Some(slot), Some(bytes)) = (self.header.get_mut(..take), input.get(..take)) {
                        slot.copy_from_slice(bytes);
                    }
                    self.header_len = take;
                    *input = input.get(take..).unwrap_or_default();
                    Ok(None)
                }
            };
        }
        loop {
            let buffered = self.header.get(..self.header_len).unwrap_or_default();
            match self.parse_header(buffered)? {
                Parse::Complete(header) => {
                    self.header_len = 0;
                    return self
                        .start_chunk(header)
                        .map(|chunk| Some(ChunkEvent::Chunk(chunk)));
                }
                Parse::Incomplete { needed } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    // `needed` exceeds what was parsed, so this takes at least one byte (`max(1)` makes
                    // sure of it: the loop always moves on).
                    let take = needed.saturating_sub(self.header_len).max(1).min(input.len());
                    let end = self.header_len + take;
                    if let (Some(slot), Some(bytes)) =
                        (self.header.get_mut(self.header_len..end), input.get(..take))
                    {
                        slot.copy_from_slice(bytes);
                    }
                    self.header_len = end;
                    *input = input.get(take..).unwrap_or_default();
                }
            }
        }
    }

    /// Parses a header prefix; refuses a compressed header on an unknown chunk stream as soon as its basic
    /// header is complete.
    fn parse_header(&self, bytes: &[u8]) -> Result<Parse<ChunkHeader>, ChunkError> {
        let basic = match BasicHeader::parse(bytes) {
            Parse::Complete(basic) => basic,
            Parse::Incomplete { needed } => return Ok(Parse::Incomplete { needed }),
        };
        let remembered = match self.stream(basic.csid) {
            Some(stream) => Some(stream.remembered.timestamp_field),
            None if basic.fmt == 0 => None,
            None => {
                return Err(ChunkError::NoPreviousHeader {
                    csid: basic.csid,
                    fmt: basic.fmt,
                })
            }
        };
        Ok(ChunkHeader::parse(bytes, remembered))
    }

    fn stream(&self, csid: u32) -> Option<&ChunkStream> {
        self.streams.iter().find(|stream| stream.csid == csid)
    }

    /// Applies a complete chunk header to its chunk stream: checks it against the message in progress and
    /// the limits, and moves to the chunk's payload.
    fn start_chunk(&mut self, header: ChunkHeader) -> Result<Chunk, ChunkError> {
        let csid = header.csid;
        if !self.limits.interleaving {
            if let Some(open) = self
                .streams
                .iter()
                .find(|stream| stream.csid != csid && stream.message.is_some())
            {
                return Err(ChunkError::InterleavedChunkStreams {
                    in_progress: open.csid,
                    got: csid,
                });
            }
        }
        let index = self.streams.iter().position(|stream| stream.csid == csid);
        let previous = index.and_then(|index| self.streams.get(index)).copied();
        let mut remembered = match (previous, header.fmt) {
            // A full header starts from nothing, as in rml_rtmp.
            (_, 0) => Remembered::default(),
            (Some(stream), _) => stream.remembered,
            (None, fmt) => return Err(ChunkError::NoPreviousHeader { csid, fmt }),
        };
        let in_progress = previous.and_then(|stream| stream.message);
        if let Some(field) = header.timestamp_field {
            remembered.timestamp_field = field;
        }
        if let Some(length) = header.length {
            remembered.length = length;
        }
        if let Some(type_id) = header.type_id {
            remembered.type_id = type_id;
        }
        if let Some(stream_id) = header.stream_id {
            remembered.stream_id = stream_id;
        }
        match (header.fmt, header.timestamp_ms()) {
            (0, Some(timestamp)) => {
                remembered.timestamp_ms = timestamp;
                remembered.delta_ms = timestamp;
            }
            (_, Some(delta)) => {
                remembered.delta_ms = delta;
                remembered.timestamp_ms = remembered.timestamp_ms.wrapping_add(delta);
            }
            (_, None) if in_progress.is_none() => {
                remembered.timestamp_ms = remembered.timestamp_ms.wrapping_add(remembered.delta_ms);
            }
            (_, None) => {}
        }

        let message = match in_progress {
            Some(message) => {
                if message.header.length != remembered.length {
                    return Err(ChunkError::LengthChanged {
                        csid,
                        in_progress: message.header.length,
                        got: remembered.length,
                    });
                }
                if message.header.type_id != remembered.type_id {
                    return Err(ChunkError::TypeChanged {
                        csid,
                        in_progress: message.header.type_id,
                        got: remembered.type_id,
                    });
                }
                message
            }
            None => {
                let limit = if message_type::is_control_or_amf(remembered.type_id) {
                    self.limits.max_command_bytes
                } else {
                    self.limits.max_message_bytes
                };
                if usize::try_from(remembered.length).map_or(true, |length| length > limit) {
                    return Err(ChunkError::MessageTooLarge {
                        csid,
                        type_id: remembered.type_id,
                        length: remembered.length,
                        limit,
                    });
                }
                InProgress {
                    header: MessageHeader {
                        csid,
                        type_id: remembered.type_id,
                        length: remembered.length,
                        stream_id: remembered.stream_id,
                        timestamp_ms: remembered.timestamp_ms,
                    },
                    received: 0,
                    control: [0; 4],
                }
            }
        };

        let updated = ChunkStream {
            csid,
            remembered,
            message: Some(message),
        };
        let index = match index.and_then(|index| self.streams.get_mut(index).map(|slot| (index, slot))) {
            Some((index, slot)) => {
                *slot = updated;
                index
            }
            None => {
                if self.streams.len() >= self.limits.max_chunk_streams {
                    return Err(ChunkError::TooManyChunkStreams {
                        limit: self.limits.max_chunk_streams,
                    });
                }
                self.streams.push(updated);
                self.streams.len() - 1
            }
        };

        // A message longer than the chunk size comes in chunk-size pieces. (rml_rtmp sends the whole
        // message when it is no longer than the chunk size: the same thing, since a message cannot be half
        // received there unless the size changed under it, which only interleaving allows.)
        let payload_len = message
            .header
            .length
            .saturating_sub(message.received)
            .min(self.chunk_size);
        self.stage = if payload_len == 0 {
            Stage::End { stream: index }
        } else {
            Stage::Payload {
                stream: index,
                left: payload_len,
            }
        };
        Ok(Chunk {
            fmt: header.fmt,
            message: message.header,
            starts_message: in_progress.is_none(),
            extended_timestamp: header.extended_timestamp,
            payload_len,
        })
    }

    /// Takes what `input` holds of the current chunk's payload (`input` is not empty). `None` when the
    /// message was aborted: the bytes are skipped.
    fn read_payload<'a>(&mut self, stream: usize, left: u32, input: &mut &'a [u8]) -> Option<ChunkEvent<'a>> {
        let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
        let (bytes, rest) = input.split_at(take);
        *input = rest;
        // `take <= left`, so it fits and nothing underflows.
        let count = u32::try_from(take).unwrap_or(left).min(left);
        let left = left - count;
        let message = self
            .streams
            .get_mut(stream)
            .and_then(|stream| stream.message.as_mut());
        let Some(message) = message else {
            self.stage = if left > 0 {
                Stage::Payload { stream, left }
            } else {
                Stage::Header
            };
            return None;
        };
        if message.header.type_id == message_type::SET_CHUNK_SIZE {
            let start = usize::try_from(message.received).unwrap_or(usize::MAX);
            for (slot, byte) in message.control.iter_mut().skip(start).zip(bytes) {
                *slot = *byte;
            }
        }
        message.received = message.received.saturating_add(count);
        self.stage = if left > 0 {
            Stage::Payload { stream, left }
        } else if message.received >= message.header.length {
            Stage::End { stream }
        } else {
            Stage::Header
        };
        Some(ChunkEvent::Payload {
            csid: message.header.csid,
            type_id: message.header.type_id,
            bytes,
        })
    }

    /// Ends `streams[stream]`'s message, applying a `SetChunkSize`. `None` when it was aborted.
    fn end_message<'a>(&mut self, stream: usize) -> Result<Option<ChunkEvent<'a>>, ChunkError> {
        let Some(message) = self
            .streams
            .get_mut(stream)
            .and_then(|stream| stream.message.take())
        else {
            return Ok(None);
        };
        let header = message.header;
        if header.type_id == message_type::SET_CHUNK_SIZE {
            // rml_rtmp reads the first 4 bytes and ignores any after them.
            if header.length < 4 {
                return Err(ChunkError::ShortControlMessage {
                    type_id: header.type_id,
                    length: header.length,
                });
            }
            let size = u32::from_be_bytes(message.control);
            if size == 0 || size > self.limits.max_chunk_size || size & 0x8000_0000 != 0 {
                return Err(ChunkError::ChunkSizeOutOfRange {
                    size,
                    limit: self.limits.max_chunk_size,
                });
            }
            self.chunk_size = size;
        }
        Ok(Some(ChunkEvent::MessageEnd(header)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::header::{EXTENDED_TIMESTAMP_MARK, RTMP_MAX_CHUNK_SIZE};
    use crate::rtmp::chunk::test_stream::{
        message_chunks, raw_chunk, rml_messages, serialize, set_chunk_size, split,
    };
    use bytes::Bytes;
    use proptest::prelude::*;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::RtmpMessage;
    use rml_rtmp::time::RtmpTimestamp;
    use std::collections::HashMap;

    /// An event with its payload copied out (consecutive payload pieces of one chunk merged).
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Chunk(Chunk),
        Payload(u32, u8, Vec<u8>),
        End(MessageHeader),
    }

    /// Feeds `reads` in turn; the events until the input ends or the decoder refuses it, and the refusal.
    fn events(limits: ChunkLimits, reads: &[&[u8]]) -> (Vec<Seen>, Option<ChunkError>) {
        let mut decoder = ChunkDecoder::new(limits);
        let mut seen = Vec::new();
        for read in reads {
            let mut input = *read;
            loop {
                match decoder.next_event(&mut input) {
                    Ok(None) => break,
                    Ok(Some(ChunkEvent::Chunk(chunk))) => seen.push(Seen::Chunk(chunk)),
                    Ok(Some(ChunkEvent::Payload { csid, type_id, bytes })) => match seen.last_mut() {
                        Some(Seen::Payload(last, _, piece)) if *last == csid => {
                            piece.extend_from_slice(bytes)
                        }
                        _ => seen.push(Seen::Payload(csid, type_id, bytes.to_vec())),
                    },
                    Ok(Some(ChunkEvent::MessageEnd(header))) => seen.push(Seen::End(header)),
                    Err(error) => return (seen, Some(error)),
                }
            }
            assert!(input.is_empty(), "input left after None");
        }
        (seen, None)
    }

    /// The complete messages in `events`, payloads assembled per chunk stream.
    fn messages(seen: &[Seen]) -> Vec<(MessageHeader, Vec<u8>)> {
        let mut partial: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut done = Vec::new();
        for event in seen {
            match event {
                Seen::Chunk(chunk) if chunk.starts_message => {
                    partial.insert(chunk.message.csid, Vec::new());
                }
                Seen::Chunk(_) => {}
                Seen::Payload(csid, _, bytes) => partial.entry(*csid).or_default().extend_from_slice(bytes),
                Seen::End(header) => done.push((*header, partial.remove(&header.csid).unwrap_or_default())),
            }
        }
        done
    }

    fn refusing_interleaving() -> ChunkLimits {
        ChunkLimits {
            interleaving: false,
            ..ChunkLimits::default()
        }
    }

    /// A message as sent: type id, message stream id, timestamp, payload.
    type Sent = (u8, u32, u32, Vec<u8>);

    /// rml_rtmp's serializer output, and what each message is.
    fn serializer_stream() -> (Vec<u8>, Vec<Sent>) {
        let mut serializer = ChunkSerializer::new();
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let mut sent = vec![
            // At 128-byte chunks: a command that spans chunks, a window size.
            (20, 0, 0, vec![2; 300]),
            (5, 0, 0, vec![0, 0x4C, 0x4B, 0x40]),
        ];
        for (type_id, stream_id, timestamp, data) in sent.drain(..) {
            let message = RtmpMessage::Unknown {
                type_id,
                data: Bytes::from(data.clone()),
            };
            wire.extend(serialize(&mut serializer, message, timestamp, stream_id));
            expected.push((type_id, stream_id, timestamp, data));
        }
        // Then 4096-byte chunks.
        let packet = serializer
            .set_max_chunk_size(4096, RtmpTimestamp::new(0))
            .unwrap();
        wire.extend(packet.bytes);
        expected.push((1, 0, 0, vec![0, 0, 16, 0]));
        // Media with fmt 0/1/2/3 headers: same and different lengths, steady and changing deltas.
        for (i, (timestamp, len)) in [
            (0, 9000),
            (40, 2500),
            (80, 2500),
            (120, 2500),
            (160, 100),
            (200, 100),
        ]
        .into_iter()
        .enumerate()
        {
            sent.push((9, 1, timestamp, vec![i as u8; len]));
            sent.push((8, 1, timestamp + 3, vec![!(i as u8); 180]));
        }
        // Extended timestamps, on messages that span chunks (fmt 3 chunks repeat the extension) and after.
        for (timestamp, len) in [(0x0100_0000, 10_000), (0x0100_0028, 10_000), (0x0100_0050, 300)] {
            sent.push((9, 1, timestamp, vec![7; len]));
        }
        for (type_id, stream_id, timestamp, data) in sent {
            let message = RtmpMessage::Unknown {
                type_id,
                data: Bytes::from(data.clone()),
            };
            wire.extend(serialize(&mut serializer, message, timestamp, stream_id));
            expected.push((type_id, stream_id, timestamp, data));
        }
        (wire, expected)
    }

    // ---- messages ----------------------------------------------------------------------------------------

    #[test]
    fn rml_serializer_stream_decodes_as_rml_decodes_it_however_it_is_read() {
        let (wire, expected) = serializer_stream();
        let rml = rml_messages(&[&wire]);
        assert_eq!(rml.len(), expected.len());
        for size in [1usize, 2, 3, 7, 100, 4095, 4096, 4097, usize::MAX] {
            let (seen, error) = events(ChunkLimits::default(), &split(&wire, &[size]));
            assert_eq!(error, None);
            let got: Vec<_> = messages(&seen)
                .into_iter()
                .map(|(header, payload)| (header.type_id, header.stream_id, header.timestamp_ms, payload))
                .collect();
            assert_eq!(got, expected, "reads of {size}");
            for ((header, payload), reference) in messages(&seen).iter().zip(&rml) {
                assert_eq!(header.type_id, reference.type_id);
                assert_eq!(header.timestamp_ms, reference.timestamp.value);
                assert_eq!(payload.as_slice(), reference.data.as_ref());
            }
        }
    }

    #[test]
    fn payload_is_a_slice_of_the_input() {
        let wire = message_chunks(5, 9, 1, &[7; 300], 128);
        let mut decoder = ChunkDecoder::new(ChunkLimits::default());
        let mut input = wire.as_slice();
        let range = wire.as_ptr_range();
        let mut pieces = 0;
        while let Some(event) = decoder.next_event(&mut input).unwrap() {
            if let ChunkEvent::Payload { bytes, .. } = event {
                assert!(range.contains(&bytes.as_ptr()));
                pieces += 1;
            }
        }
        assert_eq!(pieces, 3);
        assert!(decoder.is_idle());
    }

    #[test]
    fn empty_message_ends_with_its_header() {
        let wire = raw_chunk(0, 4, 7, 0, 18, 1, None, &[]);
        let mut decoder = ChunkDecoder::new(ChunkLimits::default());
        let mut input = wire.as_slice();
        let Some(ChunkEvent::Chunk(chunk)) = decoder.next_event(&mut input).unwrap() else {
            panic!("no chunk");
        };
        assert!(input.is_empty() && chunk.starts_message && chunk.payload_len == 0);
        assert_eq!(
            decoder.next_event(&mut input).unwrap(),
            Some(ChunkEvent::MessageEnd(chunk.message))
        );
        assert_eq!(decoder.next_event(&mut input).unwrap(), None);
    }

    #[test]
    fn interleaved_messages_are_followed_or_refused() {
        // Video on csid 4 (200 bytes), audio on csid 74 (2-byte basic header) between its chunks, then an
        // empty data message on csid 3.
        let mut wire = raw_chunk(0, 4, 10, 200, 9, 1, None, &[0xAA; 128]);
        wire.extend(raw_chunk(0, 74, 20, 5, 8, 1, None, &[1, 2, 3, 4, 5]));
        wire.extend(raw_chunk(3, 4, 0, 0, 0, 0, None, &[0xBB; 72]));
        wire.extend(raw_chunk(0, 3, 7, 0, 18, 1, None, &[]));
        let (seen, error) = events(ChunkLimits::default(), &[&wire]);
        assert_eq!(error, None);
        let got: Vec<_> = messages(&seen)
            .into_iter()
            .map(|(header, payload)| (header.csid, header.type_id, header.timestamp_ms, payload.len()))
            .collect();
        assert_eq!(got, vec![(74, 8, 20, 5), (4, 9, 10, 200), (3, 18, 7, 0)]);

        let (_, error) = events(refusing_interleaving(), &[&wire]);
        assert_eq!(
            error,
            Some(ChunkError::InterleavedChunkStreams {
                in_progress: 4,
                got: 74
            })
        );
    }

    #[test]
    fn timestamps_follow_deltas_and_extended_fields() {
        let mut wire = raw_chunk(0, 6, 100, 1, 9, 1, None, &[0]);
        // fmt 3 starting a message after fmt 0 adds the fmt 0 timestamp (rml_rtmp and ffmpeg do).
        wire.extend(raw_chunk(3, 6, 0, 0, 0, 0, None, &[0]));
        wire.extend(raw_chunk(1, 6, 40, 1, 8, 0, None, &[0]));
        wire.extend(raw_chunk(2, 6, 5, 0, 0, 0, None, &[0]));
        wire.extend(raw_chunk(3, 6, 0, 0, 0, 0, None, &[0]));
        wire.extend(raw_chunk(
            2,
            6,
            EXTENDED_TIMESTAMP_MARK,
            0,
            0,
            0,
            Some(0x0100_0000),
            &[0],
        ));
        // The extended field rides on every fmt 3 chunk while the field in force is 0xFFFFFF.
        wire.extend(raw_chunk(3, 6, 0, 0, 0, 0, Some(0x0100_0000), &[0]));
        let (seen, error) = events(ChunkLimits::default(), &[&wire]);
        assert_eq!(error, None);
        let stamps: Vec<_> = messages(&seen)
            .iter()
            .map(|(header, _)| (header.type_id, header.timestamp_ms))
            .collect();
        assert_eq!(
            stamps,
            vec![
                (9, 100),
                (9, 200),
                (8, 240),
                (8, 245),
                (8, 250),
                (8, 0x0100_00FA),
                (8, 0x0200_00FA)
            ]
        );
    }

    // ---- chunk size, abort --------------------------------------------------------------------------------

    #[test]
    fn set_chunk_size_takes_effect_when_its_message_ends() {
        // The SetChunkSize and the next message in one read, the SetChunkSize itself cut in 1-byte chunks.
        let mut wire = set_chunk_size(1);
        wire.extend(message_chunks(5, 8, 1, &[1, 2, 3], 1));
        wire.extend(raw_chunk(0, 2, 0, 4, 1, 0, None, &[0]));
        for byte in 300u32.to_be_bytes().into_iter().skip(1) {
            wire.extend(raw_chunk(3, 2, 0, 0, 0, 0, None, &[byte]));
        }
        wire.extend(message_chunks(5, 8, 1, &[9; 300], 300));
        let mut decoder = ChunkDecoder::new(ChunkLimits::default());
        let mut input = wire.as_slice();
        let mut sizes = Vec::new();
        while let Some(event) = decoder.next_event(&mut input).unwrap() {
            if let ChunkEvent::MessageEnd(header) = event {
                sizes.push((header.type_id, decoder.chunk_size()));
            }
        }
        assert_eq!(sizes, vec![(1, 1), (8, 1), (1, 300), (8, 300)]);
    }

    #[test]
    fn chunk_sizes_out_of_range_and_short_are_refused() {
        for size in [0, RTMP_MAX_CHUNK_SIZE + 1, 0x8000_0000, u32::MAX] {
            let (_, error) = events(ChunkLimits::default(), &[&set_chunk_size(size)]);
            assert_eq!(
                error,
                Some(ChunkError::ChunkSizeOutOfRange {
                    size,
                    limit: RTMP_MAX_CHUNK_SIZE
                })
            );
        }
        let limits = ChunkLimits {
            max_chunk_size: 4096,
            ..ChunkLimits::default()
        };
        let (_, error) = events(limits, &[&set_chunk_size(4097)]);
        assert_eq!(
            error,
            Some(ChunkError::ChunkSizeOutOfRange {
                size: 4097,
                limit: 4096
            })
        );
        let (_, error) = events(
            ChunkLimits::default(),
            &[&raw_chunk(0, 2, 0, 3, 1, 0, None, &[0, 1, 0])],
        );
        assert_eq!(
            error,
            Some(ChunkError::ShortControlMessage {
                type_id: 1,
                length: 3
            })
        );
    }

    #[test]
    fn abort_drops_a_half_received_message() {
        let video = message_chunks(6, 9, 1, &[9; 300], 128);
        let mut decoder = ChunkDecoder::new(ChunkLimits::default());
        let mut input = &video[..12 + 128];
        while decoder.next_event(&mut input).unwrap().is_some() {}
        assert!(!decoder.is_idle());
        decoder.abort(6);
        assert!(decoder.is_idle());
        // The next fmt 3 chunk on csid 6 starts a new 300-byte message.
        let rest = raw_chunk(3, 6, 0, 0, 0, 0, None, &[1; 128]);
        let mut input = rest.as_slice();
        let Some(ChunkEvent::Chunk(chunk)) = decoder.next_event(&mut input).unwrap() else {
            panic!("no chunk");
        };
        assert!(chunk.starts_message);
        assert_eq!(chunk.message.length, 300);
    }

    #[test]
    fn abort_inside_a_chunk_skips_the_rest_of_it() {
        let mut wire = message_chunks(6, 9, 1, &[9; 100], 128);
        wire.extend(raw_chunk(0, 4, 0, 1, 8, 1, None, &[1]));
        let mut decoder = ChunkDecoder::new(ChunkLimits::default());
        let mut input = &wire[..20];
        while decoder.next_event(&mut input).unwrap().is_some() {}
        decoder.abort(6);
        let mut input = &wire[20..];
        let mut ends = Vec::new();
        while let Some(event) = decoder.next_event(&mut input).unwrap() {
            if let ChunkEvent::MessageEnd(header) = event {
                ends.push(header.csid);
            }
        }
        assert_eq!(ends, vec![4]);
    }

    // ---- limits and structure ---------------------------------------------------------------------------

    #[test]
    fn control_and_amf_messages_have_the_command_limit() {
        for type_id in [1, 2, 3, 4, 5, 6, 15, 17, 18, 19, 20] {
            let (_, error) = events(
                ChunkLimits::default(),
                &[&raw_chunk(0, 3, 0, 64 * 1024 + 1, type_id, 0, None, &[])],
            );
            assert_eq!(
                error,
                Some(ChunkError::MessageTooLarge {
                    csid: 3,
                    type_id,
                    length: 64 * 1024 + 1,
                    limit: 64 * 1024
                })
            );
        }
        let limits = ChunkLimits {
            max_message_bytes: 1000,
            ..ChunkLimits::default()
        };
        let (_, error) = events(limits.clone(), &[&raw_chunk(0, 3, 0, 1000, 9, 0, None, &[])]);
        assert_eq!(error, None);
        let (_, error) = events(limits, &[&raw_chunk(0, 3, 0, 1001, 9, 0, None, &[])]);
        assert!(matches!(
            error,
            Some(ChunkError::MessageTooLarge { limit: 1000, .. })
        ));
    }

    #[test]
    fn chunk_streams_are_bounded_and_need_a_full_header_first() {
        let limits = ChunkLimits {
            max_chunk_streams: 2,
            ..ChunkLimits::default()
        };
        let mut wire = raw_chunk(0, 3, 0, 1, 8, 1, None, &[0]);
        wire.extend(raw_chunk(0, 400, 0, 1, 8, 1, None, &[0]));
        wire.extend(raw_chunk(2, 3, 0, 0, 0, 0, None, &[0]));
        let (seen, error) = events(limits.clone(), &[&wire]);
        assert_eq!((messages(&seen).len(), error), (3, None));
        wire.extend(raw_chunk(0, 5, 0, 1, 8, 1, None, &[0]));
        let (_, error) = events(limits, &[&wire]);
        assert_eq!(error, Some(ChunkError::TooManyChunkStreams { limit: 2 }));

        // Refused as soon as the basic header is in.
        let (_, error) = events(ChunkLimits::default(), &[&[0x40, 7]]);
        assert_eq!(error, Some(ChunkError::NoPreviousHeader { csid: 71, fmt: 1 }));
    }

    #[test]
    fn repeated_header_mid_message_continues_it_unless_it_changes_it() {
        let mut wire = raw_chunk(0, 6, 0, 300, 9, 1, None, &[1; 128]);
        wire.extend(raw_chunk(0, 6, 0, 300, 9, 1, None, &[2; 128]));
        wire.extend(raw_chunk(2, 6, 5, 0, 0, 0, None, &[3; 44]));
        let (seen, error) = events(ChunkLimits::default(), &[&wire]);
        assert_eq!(error, None);
        let messages = messages(&seen);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].1.len(), 300);

        let mut changed = raw_chunk(0, 6, 0, 300, 9, 1, None, &[1; 128]);
        changed.extend(raw_chunk(1, 6, 0, 300, 8, 0, None, &[]));
        let (_, error) = events(ChunkLimits::default(), &[&changed]);
        assert_eq!(
            error,
            Some(ChunkError::TypeChanged {
                csid: 6,
                in_progress: 9,
                got: 8
            })
        );
    }

    #[test]
    fn refusal_is_sticky() {
        let mut decoder = ChunkDecoder::new(ChunkLimits::default());
        let mut input: &[u8] = &[0xC5];
        let error = decoder.next_event(&mut input).unwrap_err();
        let mut input = raw_chunk(0, 4, 0, 1, 9, 1, None, &[1]);
        assert_eq!(decoder.next_event(&mut input.as_slice()), Err(error.clone()));
        input.clear();
        assert_eq!(decoder.next_event(&mut input.as_slice()), Err(error));
    }

    // ---- properties ---------------------------------------------------------------------------------------

    /// A message for rml_rtmp's serializer: type, payload size, timestamp, message stream id.
    fn message() -> impl Strategy<Value = (u8, usize, u32, u32)> {
        let timestamp = prop_oneof![0u32..100, 0xFF_FFF0u32..0x0100_0010, any::<u32>()];
        (
            prop::sample::select(vec![3u8, 8, 9, 18, 20, 22]),
            0usize..700,
            timestamp,
            0u32..3,
        )
    }

    /// A message for rml_rtmp's serializer (type id, payload size, timestamp, message stream id), and a chunk
    /// size to set before it.
    type Piece = ((u8, usize, u32, u32), Option<u32>);

    /// Messages (with chunk size changes) through rml_rtmp's serializer.
    fn valid_stream(pieces: &[Piece]) -> Vec<u8> {
        let mut serializer = ChunkSerializer::new();
        let mut wire = Vec::new();
        for ((type_id, size, timestamp, stream_id), chunk_size) in pieces {
            if let Some(size) = chunk_size {
                let packet = serializer
                    .set_max_chunk_size(*size, RtmpTimestamp::new(0))
                    .unwrap();
                wire.extend(packet.bytes);
            }
            let message = RtmpMessage::Unknown {
                type_id: *type_id,
                data: Bytes::from(vec![*type_id; *size]),
            };
            wire.extend(serialize(&mut serializer, message, *timestamp, *stream_id));
        }
        wire
    }

    fn pieces() -> impl Strategy<Value = Vec<Piece>> {
        prop::collection::vec(
            (
                message(),
                prop::option::weighted(0.2, prop_oneof![1u32..300, Just(4096)]),
            ),
            0..12,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1024,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Garbage, or a valid stream with bytes flipped, never panics the decoder, and how it is cut into
        /// reads changes neither the events nor the verdict.
        #[test]
        fn any_split_gives_the_same_events_and_garbage_never_panics(
            garbage in prop::collection::vec(any::<u8>(), 0..600),
            pieces in pieces(),
            flips in prop::collection::vec((any::<usize>(), 1u8..=255), 0..3),
            use_garbage in any::<bool>(),
            interleaving in any::<bool>(),
            sizes in prop::collection::vec(prop_oneof![1usize..20, 20usize..2000], 1..6),
        ) {
            let mut stream = if use_garbage { garbage } else { valid_stream(&pieces) };
            let len = stream.len();
            for (at, xor) in flips {
                if len > 0 {
                    stream[at % len] ^= xor;
                }
            }
            let limits = ChunkLimits { interleaving, max_chunk_streams: 8, ..ChunkLimits::default() };
            let whole = events(limits.clone(), &[&stream]);
            prop_assert_eq!(&events(limits.clone(), &split(&stream, &sizes)), &whole);
            let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
            prop_assert_eq!(&events(limits, &bytewise), &whole);
        }

        /// Whatever rml_rtmp's serializer writes, the decoder reads as rml_rtmp's deserializer does.
        #[test]
        fn valid_streams_decode_as_rml_decodes_them(
            pieces in pieces(),
            sizes in prop::collection::vec(prop_oneof![1usize..20, 20usize..2000], 1..6),
        ) {
            let stream = valid_stream(&pieces);
            let (seen, error) = events(ChunkLimits::default(), &split(&stream, &sizes));
            prop_assert_eq!(error, None);
            let got = messages(&seen);
            let rml = rml_messages(&[&stream]);
            prop_assert_eq!(got.len(), rml.len());
            for ((header, payload), reference) in got.iter().zip(&rml) {
                prop_assert_eq!(header.type_id, reference.type_id);
                prop_assert_eq!(header.stream_id, reference.message_stream_id);
                prop_assert_eq!(header.timestamp_ms, reference.timestamp.value);
                prop_assert_eq!(payload.as_slice(), reference.data.as_ref());
            }
        }
    }
}
