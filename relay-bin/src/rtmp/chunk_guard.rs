//! [`ChunkGuard`]: validates a peer's RTMP chunk stream, byte for byte, before rml_rtmp parses it.
//!
//! rml_rtmp 0.8 trusts its peer in ways a public ingest cannot afford:
//! - its chunk deserializer keeps ONE payload buffer for all chunk streams, so a chunk on another chunk
//!   stream (or a new header with a shorter length) in the middle of a message makes `length - received`
//!   underflow: a panic in debug builds, an attempt to reserve ~2^64 bytes in release builds;
//! - it accepts chunk sizes up to 2^31 and messages up to 16 MiB and buffers them whole;
//! - on a delta header whose 24-bit timestamp is 0xFFFFFF it computes `extended - 0xFFFFFF`, which underflows
//!   when the peer sends a smaller extended timestamp;
//! - rml_amf0 parses nested objects recursively (a deeply nested object overflows the stack: an abort);
//! - its message layer indexes the AMF values it got: a command with fewer than three values, or an
//!   `@setDataFrame` with fewer than three, panics (`Vec::drain(..3)`, `data[0]`, `data.remove(1)`).
//!
//! The guard tracks the chunk stream exactly as rml's deserializer parses it (same basic and message headers,
//! same extended-timestamp rule, same chunk-size changes at the same message boundary) and refuses what rml
//! cannot survive. It buffers no media: only an incomplete chunk header (at most 18 bytes) and the payload of
//! the messages it must read (AMF commands and data, `SetChunkSize`, `WindowAcknowledgementSize`), each
//! bounded by [`GuardLimits::max_command_bytes`]. Once it has refused, it keeps refusing: the caller ends the
//! session.
//!
//! `Abort` (type 2) passes like any small message and changes nothing: rml_rtmp ignores it, so it cannot cut
//! a half-received message short (and an `Abort` sent in the middle of one is refused as interleaving).
//! Every byte after the handshake must pass here, the handshake's leftover bytes included.

use thiserror::Error;

/// RTMP's initial chunk size in both directions (and rml_rtmp's), in bytes.
pub const INITIAL_CHUNK_SIZE: u32 = 128;

/// The largest chunk size RTMP allows (the spec caps it at the largest message length, 2^24 - 1 bytes).
pub const RTMP_MAX_CHUNK_SIZE: u32 = 0x00FF_FFFF;

/// The 24-bit timestamp value that says an extended timestamp follows the header.
const EXTENDED_TIMESTAMP_MARK: u32 = 0x00FF_FFFF;

/// Basic header (at most 3 bytes) + type 0 message header (11) + extended timestamp (4).
const MAX_HEADER_BYTES: usize = 18;

/// Message header length by chunk format (fmt 0, 1, 2, 3).
const MESSAGE_HEADER_BYTES: [usize; 4] = [11, 7, 3, 0];

/// `WindowAcknowledgementSize` values above this would let rml_rtmp's `u32` count of unacknowledged bytes
/// overflow (it adds each read's length before comparing).
const MAX_WINDOW_ACK_SIZE: u32 = 0x7FFF_FFFF;

/// An assembled AMF payload keeps at most this much capacity between messages.
const RETAINED_PAYLOAD_CAPACITY: usize = 4096;

const TYPE_SET_CHUNK_SIZE: u8 = 1;
const TYPE_WINDOW_ACK_SIZE: u8 = 5;
const TYPE_AMF3_DATA: u8 = 15;
const TYPE_AMF3_COMMAND: u8 = 17;
const TYPE_AMF0_DATA: u8 = 18;
const TYPE_AMF0_SHARED_OBJECT: u8 = 19;
const TYPE_AMF0_COMMAND: u8 = 20;

const AMF_NUMBER: u8 = 0x00;
const AMF_BOOLEAN: u8 = 0x01;
const AMF_STRING: u8 = 0x02;
const AMF_OBJECT: u8 = 0x03;
const AMF_NULL: u8 = 0x05;
const AMF_UNDEFINED: u8 = 0x06;
const AMF_REFERENCE: u8 = 0x07;
const AMF_ECMA_ARRAY: u8 = 0x08;
const AMF_OBJECT_END: u8 = 0x09;
const AMF_STRICT_ARRAY: u8 = 0x0A;
const AMF_DATE: u8 = 0x0B;
const AMF_LONG_STRING: u8 = 0x0C;
const AMF_XML_DOCUMENT: u8 = 0x0F;
const AMF_TYPED_OBJECT: u8 = 0x10;
const AMF_AVMPLUS: u8 = 0x11;

/// The first value of the data message rml_rtmp indexes into.
const SET_DATA_FRAME: &[u8] = b"@setDataFrame";

/// How much a peer may make the guard (and rml_rtmp behind it) hold, and how deep its AMF may nest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardLimits {
    /// Largest message of any type, in bytes (rml_rtmp buffers a message whole). Default 8 MiB: a 4K keyframe
    /// fits.
    pub max_message_bytes: usize,
    /// Largest AMF message (types 15, 17, 18, 19, 20) and protocol control message (types 1 to 6), in bytes;
    /// the guard assembles these to read them. Default 64 KiB.
    pub max_command_bytes: usize,
    /// Largest chunk size a peer may set, in bytes. Default 16 777 215, the RTMP maximum; a size of 0, above
    /// this, or with the top bit set is refused.
    pub max_chunk_size: u32,
    /// Deepest nesting of AMF0 objects, ECMA arrays and strict arrays. Default 16.
    pub max_amf_depth: usize,
    /// Most distinct chunk stream ids a peer may use (rml_rtmp remembers a header per id, forever).
    /// Default 64.
    pub max_chunk_streams: usize,
    /// Most AMF command messages (types 17, 20) one connection may send. rml_rtmp keeps an entry for every
    /// `createStream` and every request the node has not answered, for the session's life: this bounds them.
    /// A publisher or player sends a handful. Default 256.
    pub max_commands: u64,
}

impl Default for GuardLimits {
    fn default() -> Self {
        GuardLimits {
            max_message_bytes: 8 * 1024 * 1024,
            max_command_bytes: 64 * 1024,
            max_chunk_size: RTMP_MAX_CHUNK_SIZE,
            max_amf_depth: 16,
            max_chunk_streams: 64,
            max_commands: 256,
        }
    }
}

/// What the peer sent that the guard refused. Chunk stream ids (`csid`) and message type ids are the peer's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GuardError {
    /// A message longer than its type may be.
    #[error(
        "message of {length} bytes, type {type_id}, on chunk stream {csid}: over the {limit}-byte limit"
    )]
    MessageTooLarge {
        /// Chunk stream id.
        csid: u32,
        /// Message type id.
        type_id: u8,
        /// Length in the header, in bytes.
        length: u32,
        /// The limit for this type, in bytes.
        limit: usize,
    },
    /// A `SetChunkSize` of 0, above the limit, or with the top bit set.
    #[error("chunk size {size} out of range (1..={limit})")]
    ChunkSizeOutOfRange {
        /// The size the peer asked for, in bytes.
        size: u32,
        /// The largest size allowed, in bytes.
        limit: u32,
    },
    /// A chunk on a chunk stream while a message on another one is half received (rml_rtmp keeps one payload
    /// buffer: it cannot interleave).
    #[error("chunk on chunk stream {got} while a message on chunk stream {in_progress} is half received")]
    InterleavedChunkStreams {
        /// The chunk stream with the unfinished message.
        in_progress: u32,
        /// The chunk stream of the new chunk.
        got: u32,
    },
    /// A compressed header (fmt 1, 2 or 3) on a chunk stream that never had a full (fmt 0) one.
    #[error("fmt {fmt} chunk header on chunk stream {csid}, which has no previous header")]
    NoPreviousHeader {
        /// Chunk stream id.
        csid: u32,
        /// The header's format (1, 2 or 3).
        fmt: u8,
    },
    /// More distinct chunk stream ids than the limit.
    #[error("more than {limit} chunk streams")]
    TooManyChunkStreams {
        /// The most chunk streams allowed.
        limit: usize,
    },
    /// A new header in the middle of a message that changes the message's length.
    #[error("chunk stream {csid}: message length changed from {in_progress} to {got} bytes mid-message")]
    LengthChanged {
        /// Chunk stream id.
        csid: u32,
        /// Length of the half-received message, in bytes.
        in_progress: u32,
        /// Length in the new header, in bytes.
        got: u32,
    },
    /// A new header in the middle of a message that changes the message's type.
    #[error("chunk stream {csid}: message type changed from {in_progress} to {got} mid-message")]
    TypeChanged {
        /// Chunk stream id.
        csid: u32,
        /// Type of the half-received message.
        in_progress: u8,
        /// Type in the new header.
        got: u8,
    },
    /// A delta header (fmt 1, 2 or 3) starting a message with an extended timestamp below 0xFFFFFF (rml_rtmp
    /// subtracts 0xFFFFFF from it).
    #[error("chunk stream {csid}: extended timestamp delta {value} below 0xFFFFFF")]
    ExtendedTimestampTooSmall {
        /// Chunk stream id.
        csid: u32,
        /// The extended timestamp the peer sent.
        value: u32,
    },
    /// A `SetChunkSize` or `WindowAcknowledgementSize` shorter than its 4-byte value.
    #[error("control message of type {type_id} is {length} bytes, shorter than 4")]
    ShortControlMessage {
        /// Message type id.
        type_id: u8,
        /// Message length, in bytes.
        length: u32,
    },
    /// A `WindowAcknowledgementSize` above 2^31 - 1 bytes.
    #[error("window acknowledgement size {size} above 2147483647")]
    WindowAckSizeOutOfRange {
        /// The size the peer sent, in bytes.
        size: u32,
    },
    /// AMF0 objects or arrays nested deeper than the limit.
    #[error("AMF0 nested {depth} deep, over the limit of {limit}")]
    AmfTooDeep {
        /// The depth reached when the guard stopped.
        depth: usize,
        /// The deepest nesting allowed.
        limit: usize,
    },
    /// AMF0 that does not parse: a length past the end of the message, an unknown marker, a misplaced end
    /// marker.
    #[error("malformed AMF0 at payload offset {offset}: {reason}")]
    MalformedAmf {
        /// Offset in the message payload, in bytes.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// An AMF3 value (the AVM+ marker 0x11), which rml_rtmp cannot parse either.
    #[error("AMF3 value (AVM+ marker) at payload offset {offset}: unsupported")]
    Amf3Unsupported {
        /// Offset in the message payload, in bytes.
        offset: usize,
    },
    /// More command messages than [`GuardLimits::max_commands`].
    #[error("more than {limit} AMF command messages on one connection")]
    TooManyCommands {
        /// The limit.
        limit: u64,
    },
    /// A command, or an `@setDataFrame` data message, with fewer top-level values than rml_rtmp indexes.
    #[error("AMF message of type {type_id} has {values} values, needs at least {needed}")]
    MissingAmfValues {
        /// Message type id.
        type_id: u8,
        /// How many top-level values it had.
        values: usize,
        /// How many rml_rtmp needs.
        needed: usize,
    },
}

/// What the guard remembers of a chunk stream's last header (as rml_rtmp does, to expand compressed headers).
#[derive(Debug, Clone, Copy)]
struct StreamHeader {
    csid: u32,
    length: u32,
    type_id: u8,
    /// The 24-bit timestamp (or delta) field: 0xFFFFFF means every chunk carries an extended timestamp.
    timestamp_field: u32,
}

/// The message being received (at most one: rml_rtmp cannot interleave).
#[derive(Debug, Clone, Copy)]
struct Message {
    csid: u32,
    length: u32,
    type_id: u8,
    received: u32,
}

/// A complete chunk header, as read.
#[derive(Debug, Clone, Copy)]
struct ChunkHeader {
    fmt: u8,
    csid: u32,
    timestamp_field: Option<u32>,
    length: Option<u32>,
    type_id: Option<u8>,
    extended_timestamp: Option<u32>,
}

enum HeaderStep {
    /// The header is this many bytes long as far as the bytes so far tell.
    NeedBytes(usize),
    Complete(ChunkHeader),
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    Header,
    /// Payload bytes left in the current chunk.
    Payload {
        left: u32,
    },
}

/// Validates a peer's RTMP chunk stream incrementally; see the module docs.
#[derive(Debug)]
pub struct ChunkGuard {
    limits: GuardLimits,
    chunk_size: u32,
    streams: Vec<StreamHeader>,
    current: Option<Message>,
    stage: Stage,
    header: [u8; MAX_HEADER_BYTES],
    header_len: usize,
    /// The payload of the current message when the guard must read it.
    payload: Vec<u8>,
    messages: u64,
    /// AMF command messages seen.
    commands: u64,
    bytes: u64,
    failed: Option<GuardError>,
}

impl ChunkGuard {
    /// A guard for a session that has just finished its handshake (inbound chunk size 128).
    pub fn new(limits: GuardLimits) -> Self {
        ChunkGuard {
            limits,
            chunk_size: INITIAL_CHUNK_SIZE,
            streams: Vec::new(),
            current: None,
            stage: Stage::Header,
            header: [0; MAX_HEADER_BYTES],
            header_len: 0,
            payload: Vec::new(),
            messages: 0,
            commands: 0,
            bytes: 0,
            failed: None,
        }
    }

    /// Checks the next bytes the peer sent, in order, before they go to rml_rtmp. `Ok` means rml_rtmp may
    /// have them; an error means the session must end (and every later call returns the same error).
    pub fn inspect(&mut self, bytes: &[u8]) -> Result<(), GuardError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.consume(bytes) {
            Ok(()) => {
                self.bytes = self
                    .bytes
                    .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
                Ok(())
            }
            Err(error) => {
                self.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Complete messages passed so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Bytes passed so far (a refused call adds nothing).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The peer's current chunk size, in bytes (128 until it sends `SetChunkSize`).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    fn consume(&mut self, mut input: &[u8]) -> Result<(), GuardError> {
        while !input.is_empty() {
            match self.stage {
                Stage::Header => match self.parse_header()? {
                    HeaderStep::NeedBytes(need) => {
                        // `need` always exceeds `header_len` (the header is asked to grow only when a read
                        // in it ran short), so this takes at least one byte.
                        let take = need.saturating_sub(self.header_len).min(input.len());
                        let (head, rest) = input.split_at(take);
                        let end = self.header_len + take;
                        if let Some(slot) = self.header.get_mut(self.header_len..end) {
                            slot.copy_from_slice(head);
                        }
                        self.header_len = end;
                        input = rest;
                    }
                    HeaderStep::Complete(header) => self.start_chunk(header)?,
                },
                Stage::Payload { left } => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    let (bytes, rest) = input.split_at(take);
                    input = rest;
                    self.take_payload(bytes)?;
                }
            }
        }
        // A header completed by the last byte is acted on now, as rml_rtmp does: a zero-length message (or
        // a refusal) must not wait for the next read.
        if matches!(self.stage, Stage::Header) && self.header_len > 0 {
            if let HeaderStep::Complete(header) = self.parse_header()? {
                self.start_chunk(header)?;
            }
        }
        Ok(())
    }

    /// Reads the buffered header bytes as far as they go.
    fn parse_header(&self) -> Result<HeaderStep, GuardError> {
        let bytes = self.header.get(..self.header_len).unwrap_or_default();
        let mut reader = Reader::new(bytes);
        let Some(first) = reader.u8() else {
            return Ok(HeaderStep::NeedBytes(1));
        };
        let fmt = first >> 6;
        let csid = match first & 0x3F {
            0 => match reader.u8() {
                Some(byte) => 64 + u32::from(byte),
                None => return Ok(HeaderStep::NeedBytes(2)),
            },
            1 => match (reader.u8(), reader.u8()) {
                (Some(low), Some(high)) => 64 + u32::from(low) + 256 * u32::from(high),
                _ => return Ok(HeaderStep::NeedBytes(3)),
            },
            id => u32::from(id),
        };
        let previous = self.streams.iter().find(|stream| stream.csid == csid);
        if fmt != 0 && previous.is_none() {
            return Err(GuardError::NoPreviousHeader { csid, fmt });
        }
        let message_header = MESSAGE_HEADER_BYTES.get(usize::from(fmt)).copied().unwrap_or(0);
        let fixed = reader.position() + message_header;
        let need_fixed = HeaderStep::NeedBytes(fixed);
        let mut header = ChunkHeader {
            fmt,
            csid,
            timestamp_field: None,
            length: None,
            type_id: None,
            extended_timestamp: None,
        };
        if fmt <= 2 {
            let Some(timestamp) = reader.be24() else {
                return Ok(need_fixed);
            };
            header.timestamp_field = Some(timestamp);
        }
        if fmt <= 1 {
            let (Some(length), Some(type_id)) = (reader.be24(), reader.u8()) else {
                return Ok(need_fixed);
            };
            header.length = Some(length);
            header.type_id = Some(type_id);
        }
        if fmt == 0 && reader.skip(4).is_none() {
            // The message stream id: rml_rtmp keeps it, the guard has no use for it.
            return Ok(need_fixed);
        }
        // rml_rtmp reads an extended timestamp whenever the field in force is 0xFFFFFF: the one just read, or
        // for fmt 3 the one remembered from the chunk stream's previous header.
        let field = header
            .timestamp_field
            .or(previous.map(|stream| stream.timestamp_field));
        if field == Some(EXTENDED_TIMESTAMP_MARK) {
            match reader.be32() {
                Some(extended) => header.extended_timestamp = Some(extended),
                None => return Ok(HeaderStep::NeedBytes(fixed + 4)),
            }
        }
        Ok(HeaderStep::Complete(header))
    }

    /// Applies a complete chunk header: checks it against the message in progress and the limits.
    fn start_chunk(&mut self, header: ChunkHeader) -> Result<(), GuardError> {
        self.header_len = 0;
        let csid = header.csid;
        let previous = self.streams.iter().position(|stream| stream.csid == csid);
        let mut stream = if header.fmt == 0 {
            // A full header starts from nothing, as in rml_rtmp.
            StreamHeader {
                csid,
                length: 0,
                type_id: 0,
                timestamp_field: 0,
            }
        } else {
            match previous.and_then(|index| self.streams.get(index)) {
                Some(stream) => *stream,
                None => {
                    return Err(GuardError::NoPreviousHeader {
                        csid,
                        fmt: header.fmt,
                    })
                }
            }
        };
        if let Some(field) = header.timestamp_field {
            stream.timestamp_field = field;
        }
        if let Some(length) = header.length {
            stream.length = length;
        }
        if let Some(type_id) = header.type_id {
            stream.type_id = type_id;
        }

        match self.current {
            Some(message) => {
                if message.csid != csid {
                    return Err(GuardError::InterleavedChunkStreams {
                        in_progress: message.csid,
                        got: csid,
                    });
                }
                if message.length != stream.length {
                    return Err(GuardError::LengthChanged {
                        csid,
                        in_progress: message.length,
                        got: stream.length,
                    });
                }
                if message.type_id != stream.type_id {
                    return Err(GuardError::TypeChanged {
                        csid,
                        in_progress: message.type_id,
                        got: stream.type_id,
                    });
                }
            }
            None => {
                let limit = self.limit_for(stream.type_id);
                if usize::try_from(stream.length).map_or(true, |length| length > limit) {
                    return Err(GuardError::MessageTooLarge {
                        csid,
                        type_id: stream.type_id,
                        length: stream.length,
                        limit,
                    });
                }
                // rml_rtmp adds `extended - 0xFFFFFF` to the timestamp on the first chunk of a message with a
                // delta header; mid-message it ignores the value.
                if let Some(value) = header.extended_timestamp {
                    if header.fmt != 0 && value < EXTENDED_TIMESTAMP_MARK {
                        return Err(GuardError::ExtendedTimestampTooSmall { csid, value });
                    }
                }
            }
        }

        match previous.and_then(|index| self.streams.get_mut(index)) {
            Some(slot) => *slot = stream,
            None => {
                if self.streams.len() >= self.limits.max_chunk_streams {
                    return Err(GuardError::TooManyChunkStreams {
                        limit: self.limits.max_chunk_streams,
                    });
                }
                self.streams.push(stream);
            }
        }

        let message = match self.current {
            Some(message) => message,
            None => {
                let message = Message {
                    csid,
                    length: stream.length,
                    type_id: stream.type_id,
                    received: 0,
                };
                self.payload.clear();
                if self.payload.capacity() > RETAINED_PAYLOAD_CAPACITY {
                    self.payload = Vec::new();
                }
                if reads_payload(message.type_id) {
                    // Bounded by `max_command_bytes`, checked above.
                    self.payload.reserve(usize::try_from(message.length).unwrap_or(0));
                }
                self.current = Some(message);
                message
            }
        };
        // rml_rtmp's rule: a message longer than the chunk size comes in chunk-size pieces. A message in
        // progress is always longer than the chunk size (the size changes only between messages), so its
        // remaining bytes are what rml computes too.
        let remaining = message.length.saturating_sub(message.received);
        let left = if message.length > self.chunk_size {
            remaining.min(self.chunk_size)
        } else {
            message.length
        };
        self.stage = Stage::Payload { left };
        if left == 0 {
            self.take_payload(&[])?;
        }
        Ok(())
    }

    /// Counts (and for the types it reads, keeps) payload bytes of the current chunk.
    fn take_payload(&mut self, bytes: &[u8]) -> Result<(), GuardError> {
        let Stage::Payload { left } = self.stage else {
            return Ok(());
        };
        let Some(mut message) = self.current else {
            self.stage = Stage::Header;
            return Ok(());
        };
        let count = u32::try_from(bytes.len()).unwrap_or(u32::MAX).min(left);
        if reads_payload(message.type_id) {
            self.payload.extend_from_slice(bytes);
        }
        message.received = message.received.saturating_add(count);
        let left = left - count;
        if left > 0 {
            self.stage = Stage::Payload { left };
            self.current = Some(message);
            return Ok(());
        }
        self.stage = Stage::Header;
        if message.received < message.length {
            self.current = Some(message);
            return Ok(());
        }
        self.current = None;
        self.messages += 1;
        self.finish_message(message)
    }

    /// Reads a complete message the guard must understand; applies `SetChunkSize` as rml_rtmp does (before
    /// the next message is parsed).
    fn finish_message(&mut self, message: Message) -> Result<(), GuardError> {
        let payload = self.payload.as_slice();
        match message.type_id {
            TYPE_SET_CHUNK_SIZE => {
                let size = control_value(payload, message)?;
                if size == 0 || size > self.limits.max_chunk_size || size & 0x8000_0000 != 0 {
                    return Err(GuardError::ChunkSizeOutOfRange {
                        size,
                        limit: self.limits.max_chunk_size,
                    });
                }
                self.chunk_size = size;
            }
            TYPE_WINDOW_ACK_SIZE => {
                let size = control_value(payload, message)?;
                if size > MAX_WINDOW_ACK_SIZE {
                    return Err(GuardError::WindowAckSizeOutOfRange { size });
                }
            }
            // rml_rtmp reads "AMF3" data (15) as plain AMF0 from the first byte.
            TYPE_AMF0_DATA | TYPE_AMF3_DATA => {
                let summary = check_amf0(payload, 0, self.limits.max_amf_depth)?;
                // rml_rtmp indexes the two values after `@setDataFrame`.
                if summary.first_is_set_data_frame && summary.values < 3 {
                    return Err(GuardError::MissingAmfValues {
                        type_id: message.type_id,
                        values: summary.values,
                        needed: 3,
                    });
                }
            }
            TYPE_AMF0_COMMAND | TYPE_AMF3_COMMAND => {
                self.commands += 1;
                if self.commands > self.limits.max_commands {
                    return Err(GuardError::TooManyCommands {
                        limit: self.limits.max_commands,
                    });
                }
                // rml_rtmp skips a leading 0 byte of an "AMF3" command and reads the rest as AMF0.
                let start = usize::from(message.type_id == TYPE_AMF3_COMMAND && payload.first() == Some(&0));
                let summary = check_amf0(payload, start, self.limits.max_amf_depth)?;
                // rml_rtmp drains the name, transaction id and command object: `drain(..3)` panics on fewer.
                if summary.values < 3 {
                    return Err(GuardError::MissingAmfValues {
                        type_id: message.type_id,
                        values: summary.values,
                        needed: 3,
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn limit_for(&self, type_id: u8) -> usize {
        match type_id {
            1..=6
            | TYPE_AMF3_DATA
            | TYPE_AMF3_COMMAND
            | TYPE_AMF0_DATA
            | TYPE_AMF0_SHARED_OBJECT
            | TYPE_AMF0_COMMAND => self.limits.max_command_bytes,
            _ => self.limits.max_message_bytes,
        }
    }
}

/// Whether the guard keeps a message's payload to read it when complete.
fn reads_payload(type_id: u8) -> bool {
    matches!(
        type_id,
        TYPE_SET_CHUNK_SIZE
            | TYPE_WINDOW_ACK_SIZE
            | TYPE_AMF3_DATA
            | TYPE_AMF3_COMMAND
            | TYPE_AMF0_DATA
            | TYPE_AMF0_COMMAND
    )
}

/// The big-endian `u32` a 4-byte control message carries (rml_rtmp ignores any bytes after it).
fn control_value(payload: &[u8], message: Message) -> Result<u32, GuardError> {
    Reader::new(payload)
        .be32()
        .ok_or(GuardError::ShortControlMessage {
            type_id: message.type_id,
            length: message.length,
        })
}

/// What the AMF0 walk learned about a message's top-level values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AmfSummary {
    /// Top-level values, counted as rml_amf0 counts them (it stops at the end or at a top-level 0x09).
    values: usize,
    /// The first value is the string `@setDataFrame`.
    first_is_set_data_frame: bool,
}

/// An open container in the AMF0 walk.
enum Frame {
    /// An object, ECMA array or typed object: properties until an empty name and 0x09.
    Object,
    /// A strict array with this many values still to come.
    StrictArray { left: u32 },
}

/// Walks AMF0 values from `start` to the end of `data` without recursion: checks every length is inside
/// `data`, every marker is known, and containers nest at most `max_depth` deep. Mirrors rml_amf0's parse
/// wherever that parse succeeds, so the depth seen here is the depth rml_amf0 would recurse to.
fn check_amf0(data: &[u8], start: usize, max_depth: usize) -> Result<AmfSummary, GuardError> {
    let mut reader = Reader::new(data);
    if reader.skip(start).is_none() {
        return Err(malformed(0, "payload shorter than its prefix"));
    }
    let mut summary = AmfSummary {
        values: 0,
        first_is_set_data_frame: false,
    };
    let mut stack: Vec<Frame> = Vec::new();
    loop {
        let marker = match stack.last_mut() {
            None => match reader.u8() {
                // rml_amf0 ends the value list at the end of the data or at a top-level object-end marker.
                None | Some(AMF_OBJECT_END) => return Ok(summary),
                Some(marker) => {
                    summary.values += 1;
                    marker
                }
            },
            Some(Frame::Object) => {
                let at = reader.position();
                let name_len = reader
                    .be16()
                    .ok_or(malformed(at, "property name length past the end"))?;
                if name_len == 0 {
                    match reader.u8() {
                        Some(AMF_OBJECT_END) => {
                            stack.pop();
                            continue;
                        }
                        Some(_) => return Err(malformed(at, "empty property name without object end")),
                        None => return Err(malformed(at, "object end past the end")),
                    }
                }
                reader
                    .skip(usize::from(name_len))
                    .ok_or(malformed(at, "property name past the end"))?;
                let at = reader.position();
                match reader.u8() {
                    None => return Err(malformed(at, "property value past the end")),
                    Some(AMF_OBJECT_END) => {
                        return Err(malformed(at, "object end in place of a property value"))
                    }
                    Some(marker) => marker,
                }
            }
            Some(Frame::StrictArray { left }) => {
                if *left == 0 {
                    stack.pop();
                    continue;
                }
                *left -= 1;
                let at = reader.position();
                match reader.u8() {
                    None => return Err(malformed(at, "strict array shorter than its count")),
                    Some(AMF_OBJECT_END) => {
                        return Err(malformed(at, "object end in place of an array value"))
                    }
                    Some(marker) => marker,
                }
            }
        };
        let at = reader.position().saturating_sub(1);
        let top_level = stack.is_empty();
        let past_end = || malformed(at, "value past the end of the message");
        match marker {
            AMF_NUMBER => reader.skip(8).ok_or_else(past_end)?,
            AMF_BOOLEAN => reader.skip(1).ok_or_else(past_end)?,
            AMF_STRING => {
                let text = reader
                    .be16()
                    .and_then(|len| reader.take(usize::from(len)))
                    .ok_or_else(past_end)?;
                if top_level && summary.values == 1 && text == SET_DATA_FRAME {
                    summary.first_is_set_data_frame = true;
                }
            }
            AMF_NULL | AMF_UNDEFINED => {}
            AMF_REFERENCE => reader.skip(2).ok_or_else(past_end)?,
            AMF_DATE => reader.skip(10).ok_or_else(past_end)?,
            AMF_LONG_STRING | AMF_XML_DOCUMENT => reader
                .be32()
                .and_then(|len| reader.skip(usize::try_from(len).ok()?))
                .ok_or_else(past_end)?,
            AMF_OBJECT => open(&mut stack, Frame::Object, max_depth)?,
            AMF_ECMA_ARRAY => {
                // The count is advisory: rml_amf0 (and real encoders) end the array like an object.
                reader.skip(4).ok_or_else(past_end)?;
                open(&mut stack, Frame::Object, max_depth)?;
            }
            AMF_TYPED_OBJECT => {
                reader
                    .be16()
                    .and_then(|len| reader.skip(usize::from(len)))
                    .ok_or_else(past_end)?;
                open(&mut stack, Frame::Object, max_depth)?;
            }
            AMF_STRICT_ARRAY => {
                let left = reader.be32().ok_or_else(past_end)?;
                open(&mut stack, Frame::StrictArray { left }, max_depth)?;
            }
            AMF_AVMPLUS => return Err(GuardError::Amf3Unsupported { offset: at }),
            _ => return Err(malformed(at, "unknown marker")),
        }
    }
}

/// Opens a container, refusing one nested deeper than `max_depth`.
fn open(stack: &mut Vec<Frame>, frame: Frame, max_depth: usize) -> Result<(), GuardError> {
    if stack.len() >= max_depth {
        return Err(GuardError::AmfTooDeep {
            depth: stack.len() + 1,
            limit: max_depth,
        });
    }
    stack.push(frame);
    Ok(())
}

fn malformed(offset: usize, reason: &'static str) -> GuardError {
    GuardError::MalformedAmf { offset, reason }
}

/// A bounds-checked big-endian reader over peer bytes: every read returns `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    fn position(&self) -> usize {
        self.position
    }

    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(count)?;
        let bytes = self.bytes.get(self.position..end)?;
        self.position = end;
        Some(bytes)
    }

    fn skip(&mut self, count: usize) -> Option<()> {
        self.take(count).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn be16(&mut self) -> Option<u16> {
        let bytes: [u8; 2] = self.take(2)?.try_into().ok()?;
        Some(u16::from_be_bytes(bytes))
    }

    fn be24(&mut self) -> Option<u32> {
        let [a, b, c]: [u8; 3] = self.take(3)?.try_into().ok()?;
        Some(u32::from_be_bytes([0, a, b, c]))
    }

    fn be32(&mut self) -> Option<u32> {
        let bytes: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_be_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use rml_amf0::Amf0Value;
    use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
    use rml_rtmp::messages::{MessagePayload, RtmpMessage, UserControlEventType};
    use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
    use rml_rtmp::time::RtmpTimestamp;
    use std::collections::HashMap;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    // ---- building chunk streams -------------------------------------------------------------------------

    fn serialize(
        serializer: &mut ChunkSerializer,
        message: RtmpMessage,
        timestamp: u32,
        stream_id: u32,
    ) -> Vec<u8> {
        let payload = message
            .into_message_payload(RtmpTimestamp::new(timestamp), stream_id)
            .unwrap();
        serializer.serialize(&payload, false, false).unwrap().bytes
    }

    fn basic_header(out: &mut Vec<u8>, fmt: u8, csid: u32) {
        if csid < 64 {
            out.push(fmt << 6 | csid as u8);
        } else if csid < 320 {
            out.push(fmt << 6);
            out.push((csid - 64) as u8);
        } else {
            let id = csid - 64;
            out.extend_from_slice(&[fmt << 6 | 1, id as u8, (id >> 8) as u8]);
        }
    }

    /// One chunk with the header fields written as given (`timestamp` is the raw 24-bit field).
    #[allow(clippy::too_many_arguments)]
    fn raw_chunk(
        fmt: u8,
        csid: u32,
        timestamp: u32,
        length: u32,
        type_id: u8,
        stream_id: u32,
        extended: Option<u32>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        basic_header(&mut out, fmt, csid);
        if fmt <= 2 {
            out.extend_from_slice(&timestamp.to_be_bytes()[1..]);
        }
        if fmt <= 1 {
            out.extend_from_slice(&length.to_be_bytes()[1..]);
            out.push(type_id);
        }
        if fmt == 0 {
            out.extend_from_slice(&stream_id.to_le_bytes());
        }
        if let Some(extended) = extended {
            out.extend_from_slice(&extended.to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    /// A whole message: a fmt 0 chunk, then fmt 3 chunks of `chunk_size` bytes.
    fn message_chunks(csid: u32, type_id: u8, stream_id: u32, payload: &[u8], chunk_size: usize) -> Vec<u8> {
        let length = payload.len() as u32;
        let mut pieces = payload.chunks(chunk_size);
        let first = pieces.next().unwrap_or(&[]);
        let mut out = raw_chunk(0, csid, 0, length, type_id, stream_id, None, first);
        for piece in pieces {
            out.extend(raw_chunk(3, csid, 0, 0, 0, 0, None, piece));
        }
        out
    }

    fn set_chunk_size(size: u32) -> Vec<u8> {
        raw_chunk(0, 2, 0, 4, 1, 0, None, &size.to_be_bytes())
    }

    fn amf_string(out: &mut Vec<u8>, text: &str) {
        out.push(AMF_STRING);
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }

    fn amf_number(out: &mut Vec<u8>, value: f64) {
        out.push(AMF_NUMBER);
        out.extend_from_slice(&value.to_be_bytes());
    }

    fn amf_property(out: &mut Vec<u8>, name: &str) {
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
    }

    fn amf_object_end(out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 0, AMF_OBJECT_END]);
    }

    /// `depth` objects, each the value of property "a" of the one around it.
    fn nested_objects(out: &mut Vec<u8>, depth: usize) {
        for level in 0..depth {
            if level > 0 {
                amf_property(out, "a");
            }
            out.push(AMF_OBJECT);
        }
        for _ in 0..depth {
            amf_object_end(out);
        }
    }

    fn guard() -> ChunkGuard {
        ChunkGuard::new(GuardLimits::default())
    }

    /// Feeds `reads` to rml_rtmp's deserializer as its server session would (applying `SetChunkSize`);
    /// returns the messages.
    fn rml_messages(reads: &[&[u8]]) -> Vec<MessagePayload> {
        let mut deserializer = ChunkDeserializer::new();
        let mut messages = Vec::new();
        for read in reads {
            let mut input = *read;
            while let Some(payload) = deserializer.get_next_message(input).unwrap() {
                if let Ok(RtmpMessage::SetChunkSize { size }) = payload.to_rtmp_message() {
                    deserializer.set_max_chunk_size(size as usize).unwrap();
                }
                messages.push(payload);
                input = &[];
            }
        }
        messages
    }

    fn connect_command(app: &str) -> RtmpMessage {
        let mut properties = HashMap::new();
        properties.insert("app".to_string(), Amf0Value::Utf8String(app.to_string()));
        properties.insert(
            "type".to_string(),
            Amf0Value::Utf8String("nonprivate".to_string()),
        );
        properties.insert(
            "flashVer".to_string(),
            Amf0Value::Utf8String("FMLE/3.0 (compatible; Lavf61)".to_string()),
        );
        properties.insert(
            "tcUrl".to_string(),
            Amf0Value::Utf8String(format!("rtmp://pop.example/{app}")),
        );
        RtmpMessage::Amf0Command {
            command_name: "connect".to_string(),
            transaction_id: 1.0,
            command_object: Amf0Value::Object(properties),
            additional_arguments: Vec::new(),
        }
    }

    fn command(name: &str, transaction_id: f64, arguments: Vec<Amf0Value>) -> RtmpMessage {
        RtmpMessage::Amf0Command {
            command_name: name.to_string(),
            transaction_id,
            command_object: Amf0Value::Null,
            additional_arguments: arguments,
        }
    }

    /// What ffmpeg sends to publish `key` on app `live`, one packet per write.
    fn ffmpeg_publish() -> Vec<Vec<u8>> {
        let mut serializer = ChunkSerializer::new();
        let mut packets = vec![
            serializer
                .set_max_chunk_size(4096, RtmpTimestamp::new(0))
                .unwrap()
                .bytes,
        ];
        packets.push(serialize(&mut serializer, connect_command("live"), 0, 0));
        packets.push(serialize(
            &mut serializer,
            RtmpMessage::WindowAcknowledgement { size: 2_500_000 },
            0,
            0,
        ));
        let key = || Amf0Value::Utf8String("key".to_string());
        packets.push(serialize(
            &mut serializer,
            command("releaseStream", 2.0, vec![key()]),
            0,
            0,
        ));
        packets.push(serialize(
            &mut serializer,
            command("FCPublish", 3.0, vec![key()]),
            0,
            0,
        ));
        packets.push(serialize(
            &mut serializer,
            command("createStream", 4.0, Vec::new()),
            0,
            0,
        ));
        let live = Amf0Value::Utf8String("live".to_string());
        packets.push(serialize(
            &mut serializer,
            command("publish", 5.0, vec![key(), live]),
            0,
            1,
        ));
        let mut metadata = HashMap::new();
        metadata.insert("width".to_string(), Amf0Value::Number(3840.0));
        metadata.insert("height".to_string(), Amf0Value::Number(2160.0));
        metadata.insert("videocodecid".to_string(), Amf0Value::Number(7.0));
        let data_frame = RtmpMessage::Amf0Data {
            values: vec![
                Amf0Value::Utf8String("@setDataFrame".to_string()),
                Amf0Value::Utf8String("onMetaData".to_string()),
                Amf0Value::Object(metadata),
            ],
        };
        packets.push(serialize(&mut serializer, data_frame, 0, 1));
        let video = |len: usize, fill: u8| RtmpMessage::VideoData {
            data: Bytes::from(vec![fill; len]),
        };
        let audio = |len: usize| RtmpMessage::AudioData {
            data: Bytes::from(vec![0xAF; len]),
        };
        packets.push(serialize(&mut serializer, video(48, 0x17), 0, 1));
        packets.push(serialize(&mut serializer, audio(4), 0, 1));
        packets.push(serialize(&mut serializer, video(300_000, 0x17), 0, 1));
        for frame in 1..20u32 {
            packets.push(serialize(&mut serializer, audio(300), frame * 21, 1));
            packets.push(serialize(&mut serializer, video(9_000, 0x27), frame * 33, 1));
        }
        packets
    }

    // ---- whole streams ----------------------------------------------------------------------------------

    #[test]
    fn ffmpeg_publish_passes_in_one_piece_and_byte_by_byte() {
        let packets = ffmpeg_publish();
        let all: Vec<u8> = packets.concat();

        let mut whole = guard();
        whole.inspect(&all).unwrap();
        assert_eq!(whole.messages(), packets.len() as u64);
        assert_eq!(whole.bytes(), all.len() as u64);
        assert_eq!(whole.chunk_size(), 4096);

        let mut bytewise = guard();
        for byte in &all {
            bytewise.inspect(std::slice::from_ref(byte)).unwrap();
        }
        assert_eq!(bytewise.messages(), packets.len() as u64);
        assert_eq!(rml_messages(&[&all]).len(), packets.len());
    }

    #[test]
    fn ffmpeg_publish_reaches_the_session_through_the_guard() {
        let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
        let mut guard = guard();
        let (mut connected, mut published, mut video) = (false, false, 0);
        for packet in ffmpeg_publish() {
            guard.inspect(&packet).unwrap();
            let mut results = session.handle_input(&packet).unwrap();
            while let Some(result) = results.pop() {
                let ServerSessionResult::RaisedEvent(event) = result else {
                    continue;
                };
                match event {
                    ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                        connected = true;
                        results.extend(session.accept_request(request_id).unwrap());
                    }
                    ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                        published = true;
                        results.extend(session.accept_request(request_id).unwrap());
                    }
                    ServerSessionEvent::VideoDataReceived { .. } => video += 1,
                    _ => {}
                }
            }
        }
        assert!(connected && published);
        assert_eq!(video, 21);
    }

    #[test]
    fn set_chunk_size_then_large_video_split_at_the_new_size() {
        let mut serializer = ChunkSerializer::new();
        let mut bytes = serializer
            .set_max_chunk_size(60_000, RtmpTimestamp::new(0))
            .unwrap()
            .bytes;
        let video = RtmpMessage::VideoData {
            data: Bytes::from(vec![7u8; 1_000_000]),
        };
        bytes.extend(serialize(&mut serializer, video, 40, 1));
        // 17 chunks of at most 60 000 bytes: misread at 128, the stream would not parse.
        let mut guard = guard();
        guard.inspect(&bytes).unwrap();
        assert_eq!((guard.messages(), guard.chunk_size()), (2, 60_000));
        assert!(matches!(guard.stage, Stage::Header) && guard.current.is_none());
        assert_eq!(rml_messages(&[&bytes])[1].data.len(), 1_000_000);
    }

    #[test]
    fn chunk_size_change_applies_after_its_message_only() {
        // The SetChunkSize and the first chunk of the next message come in one read.
        let mut bytes = set_chunk_size(1);
        bytes.extend(message_chunks(5, 8, 1, &[1, 2, 3], 1));
        let mut guard = guard();
        guard.inspect(&bytes).unwrap();
        assert_eq!((guard.messages(), guard.chunk_size()), (2, 1));
        assert_eq!(rml_messages(&[&bytes])[1].data.as_ref(), &[1, 2, 3]);
    }

    #[test]
    fn zero_length_message_completes_with_its_header() {
        let mut guard = guard();
        guard.inspect(&raw_chunk(0, 4, 0, 0, 9, 1, None, &[])).unwrap();
        assert_eq!(guard.messages(), 1);
    }

    // ---- sizes --------------------------------------------------------------------------------------------

    #[test]
    fn sixteen_mib_message_is_refused_before_anything_is_buffered() {
        let mut guard = guard();
        guard.inspect(&set_chunk_size(RTMP_MAX_CHUNK_SIZE)).unwrap();
        let header = raw_chunk(0, 4, 0, 0xFF_FFFF, 9, 1, None, &[]);
        let error = guard.inspect(&header).unwrap_err();
        assert_eq!(
            error,
            GuardError::MessageTooLarge {
                csid: 4,
                type_id: 9,
                length: 0xFF_FFFF,
                limit: 8 << 20
            }
        );
        // Nothing kept but the 4-byte SetChunkSize before it.
        assert!(guard.payload.capacity() <= 8);
    }

    #[test]
    fn commands_and_control_messages_have_the_command_limit() {
        let limits = GuardLimits::default();
        for type_id in [1, 4, 6, 15, 17, 18, 19, 20] {
            let mut guard = guard();
            let header = raw_chunk(0, 3, 0, 64 * 1024 + 1, type_id, 0, None, &[]);
            assert!(matches!(
                guard.inspect(&header),
                Err(GuardError::MessageTooLarge { limit, .. }) if limit == limits.max_command_bytes
            ));
        }
        // Unknown and media types: the message limit.
        guard()
            .inspect(&raw_chunk(0, 3, 0, 64 * 1024 + 1, 0, 0, None, &[]))
            .unwrap();
        guard()
            .inspect(&raw_chunk(0, 3, 0, 8 << 20, 9, 0, None, &[]))
            .unwrap();
    }

    #[test]
    fn chunk_sizes_out_of_range_are_refused() {
        for size in [0, RTMP_MAX_CHUNK_SIZE + 1, 0x8000_0000, u32::MAX] {
            let error = guard().inspect(&set_chunk_size(size)).unwrap_err();
            assert_eq!(
                error,
                GuardError::ChunkSizeOutOfRange {
                    size,
                    limit: RTMP_MAX_CHUNK_SIZE
                }
            );
        }
        let mut guard = guard();
        guard.inspect(&set_chunk_size(RTMP_MAX_CHUNK_SIZE)).unwrap();
        assert_eq!(guard.chunk_size(), RTMP_MAX_CHUNK_SIZE);
    }

    #[test]
    fn short_set_chunk_size_is_refused() {
        let error = guard()
            .inspect(&raw_chunk(0, 2, 0, 2, 1, 0, None, &[0, 1]))
            .unwrap_err();
        assert_eq!(
            error,
            GuardError::ShortControlMessage {
                type_id: 1,
                length: 2
            }
        );
    }

    #[test]
    fn window_ack_size_that_would_overflow_rml_is_refused() {
        let ack = |size: u32| raw_chunk(0, 2, 0, 4, 5, 0, None, &size.to_be_bytes());
        guard().inspect(&ack(2_500_000)).unwrap();
        let error = guard().inspect(&ack(0x8000_0000)).unwrap_err();
        assert_eq!(error, GuardError::WindowAckSizeOutOfRange { size: 0x8000_0000 });
    }

    #[test]
    fn a_flood_of_create_stream_commands_is_refused() {
        let mut guard = ChunkGuard::new(GuardLimits {
            max_commands: 10,
            ..GuardLimits::default()
        });
        let mut serializer = ChunkSerializer::new();
        for i in 0..10 {
            let bytes = serialize(
                &mut serializer,
                command("createStream", f64::from(i), Vec::new()),
                0,
                0,
            );
            guard.inspect(&bytes).unwrap();
        }
        let bytes = serialize(&mut serializer, command("createStream", 11.0, Vec::new()), 0, 0);
        assert_eq!(
            guard.inspect(&bytes),
            Err(GuardError::TooManyCommands { limit: 10 })
        );
    }

    #[test]
    fn too_many_chunk_streams_are_refused() {
        let mut guard = ChunkGuard::new(GuardLimits {
            max_chunk_streams: 3,
            ..GuardLimits::default()
        });
        for csid in [3, 64 + 200, 64 + 1 + 256 * 2] {
            guard
                .inspect(&raw_chunk(0, csid, 0, 1, 8, 1, None, &[0]))
                .unwrap();
        }
        // A known chunk stream is fine, a fourth one is not.
        guard.inspect(&raw_chunk(1, 3, 10, 1, 8, 0, None, &[0])).unwrap();
        let error = guard
            .inspect(&raw_chunk(0, 4, 0, 1, 8, 1, None, &[0]))
            .unwrap_err();
        assert_eq!(error, GuardError::TooManyChunkStreams { limit: 3 });
    }

    // ---- chunk stream structure -------------------------------------------------------------------------

    #[test]
    fn interleaved_chunk_streams_are_refused() {
        let video = message_chunks(6, 9, 1, &[9; 300], 128);
        let mut guard = guard();
        guard.inspect(&video[..12 + 128]).unwrap();
        let audio = raw_chunk(0, 4, 0, 100, 8, 1, None, &[8; 100]);
        let error = guard.inspect(&audio).unwrap_err();
        assert_eq!(
            error,
            GuardError::InterleavedChunkStreams {
                in_progress: 6,
                got: 4
            }
        );
    }

    #[test]
    fn abort_is_a_plain_message_and_cannot_interrupt_one() {
        // rml_rtmp ignores Abort (it discards nothing), so the guard does too.
        let abort = raw_chunk(0, 2, 0, 4, 2, 0, None, &6u32.to_be_bytes());
        let mut guard = guard();
        guard.inspect(&abort).unwrap();
        let video = message_chunks(6, 9, 1, &[9; 300], 128);
        guard.inspect(&video[..12 + 128]).unwrap();
        let error = guard
            .inspect(&raw_chunk(1, 2, 0, 4, 2, 0, None, &6u32.to_be_bytes()))
            .unwrap_err();
        assert_eq!(
            error,
            GuardError::InterleavedChunkStreams {
                in_progress: 6,
                got: 2
            }
        );
    }

    #[test]
    fn compressed_header_on_an_unknown_chunk_stream_is_refused_at_once() {
        for (fmt, first) in [(3u8, 0xC5u8), (2, 0x85), (1, 0x45)] {
            let error = guard().inspect(&[first]).unwrap_err();
            assert_eq!(error, GuardError::NoPreviousHeader { csid: 5, fmt });
        }
    }

    #[test]
    fn header_changing_length_or_type_mid_message_is_refused() {
        let video = message_chunks(6, 9, 1, &[9; 300], 128);
        let mut guard_length = guard();
        guard_length.inspect(&video[..12 + 128]).unwrap();
        let error = guard_length
            .inspect(&raw_chunk(1, 6, 0, 10, 9, 0, None, &[]))
            .unwrap_err();
        assert_eq!(
            error,
            GuardError::LengthChanged {
                csid: 6,
                in_progress: 300,
                got: 10
            }
        );

        let mut guard_type = guard();
        guard_type.inspect(&video[..12 + 128]).unwrap();
        let error = guard_type
            .inspect(&raw_chunk(1, 6, 0, 300, 20, 0, None, &[]))
            .unwrap_err();
        assert_eq!(
            error,
            GuardError::TypeChanged {
                csid: 6,
                in_progress: 9,
                got: 20
            }
        );
    }

    #[test]
    fn repeated_full_header_mid_message_continues_it_as_rml_does() {
        let mut bytes = raw_chunk(0, 6, 0, 300, 9, 1, None, &[1; 128]);
        bytes.extend(raw_chunk(0, 6, 0, 300, 9, 1, None, &[2; 128]));
        bytes.extend(raw_chunk(2, 6, 5, 0, 0, 0, None, &[3; 44]));
        let mut guard = guard();
        guard.inspect(&bytes).unwrap();
        assert_eq!(guard.messages(), 1);
        assert_eq!(rml_messages(&[&bytes])[0].data.len(), 300);
    }

    // ---- extended timestamps --------------------------------------------------------------------------

    #[test]
    fn extended_timestamp_on_fmt3_continuation_is_read_as_rml_reads_it() {
        // rml_rtmp's own test stream: chunk size 4, a fmt 0 header with ts 0xFFFFFF and an extended
        // timestamp, then a fmt 3 continuation that carries the extended timestamp again.
        let mut bytes = set_chunk_size(4);
        bytes.extend([
            0x06, 0xff, 0xff, 0xff, 0, 0, 7, 9, 1, 0, 0, 0, 0x01, 0xff, 0xff, 0xff, 1, 2, 3, 4,
        ]);
        bytes.extend([0xc6, 0x01, 0xff, 0xff, 0xff, 5, 6, 7]);
        // And a new message on the same chunk stream with fmt 3: ts field still 0xFFFFFF.
        bytes.extend([
            0xc6, 0x01, 0x00, 0x00, 0x00, 1, 2, 3, 4, 0xc6, 0x01, 0x00, 0x00, 0x00, 5, 6, 7,
        ]);

        let mut whole = guard();
        whole.inspect(&bytes).unwrap();
        assert_eq!(whole.messages(), 3);
        let mut bytewise = guard();
        for byte in &bytes {
            bytewise.inspect(std::slice::from_ref(byte)).unwrap();
        }
        assert_eq!(bytewise.messages(), 3);

        let messages = rml_messages(&[&bytes]);
        assert_eq!(messages[1].timestamp, RtmpTimestamp::new(0x01ff_ffff));
        assert_eq!(messages[1].data.as_ref(), &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(messages[2].data.as_ref(), &[1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn extended_timestamp_from_rml_serializer_passes() {
        let mut serializer = ChunkSerializer::new();
        let mut bytes = Vec::new();
        for timestamp in [0x00FF_FFFE, 0x00FF_FFFF, 0x0100_0000, 0x0200_0000, 5] {
            let video = RtmpMessage::VideoData {
                data: Bytes::from(vec![1u8; 500]),
            };
            bytes.extend(serialize(&mut serializer, video, timestamp, 1));
        }
        let mut guard = guard();
        guard.inspect(&bytes).unwrap();
        assert_eq!(guard.messages(), 5);
        assert_eq!(rml_messages(&[&bytes]).len(), 5);
    }

    /// A delta header starting a message with an extended timestamp below 0xFFFFFF.
    fn small_extended_delta(fmt: u8) -> Vec<u8> {
        let mut bytes = raw_chunk(0, 6, 0xFF_FFFF, 1, 9, 1, Some(0x0100_0000), &[1]);
        bytes.extend(raw_chunk(fmt, 6, 0xFF_FFFF, 1, 9, 1, Some(5), &[2]));
        bytes
    }

    #[test]
    fn small_extended_timestamp_delta_is_refused() {
        for fmt in [1, 2, 3] {
            let error = guard().inspect(&small_extended_delta(fmt)).unwrap_err();
            assert_eq!(error, GuardError::ExtendedTimestampTooSmall { csid: 6, value: 5 });
        }
        // On a full header the value is absolute: fine.
        guard()
            .inspect(&raw_chunk(0, 6, 0xFF_FFFF, 1, 9, 1, Some(5), &[1]))
            .unwrap();
    }

    // ---- AMF --------------------------------------------------------------------------------------------

    fn command_payload(depth: usize) -> Vec<u8> {
        let mut payload = Vec::new();
        amf_string(&mut payload, "connect");
        amf_number(&mut payload, 1.0);
        nested_objects(&mut payload, depth);
        payload
    }

    #[test]
    fn command_nested_ten_thousand_deep_is_refused() {
        let payload = command_payload(10_000);
        let limits = GuardLimits {
            max_command_bytes: 1 << 20,
            ..GuardLimits::default()
        };
        let mut guard = ChunkGuard::new(limits);
        let error = guard
            .inspect(&message_chunks(3, 20, 0, &payload, 128))
            .unwrap_err();
        assert_eq!(error, GuardError::AmfTooDeep { depth: 17, limit: 16 });
    }

    #[test]
    fn nesting_at_the_limit_passes() {
        let payload = command_payload(16);
        let mut guard = guard();
        guard.inspect(&message_chunks(3, 20, 0, &payload, 128)).unwrap();
        assert!(matches!(
            rml_messages(&[&message_chunks(3, 20, 0, &payload, 128)])[0].to_rtmp_message(),
            Ok(RtmpMessage::Amf0Command { .. })
        ));
    }

    #[test]
    fn a_million_levels_are_walked_without_recursion() {
        // A recursive walk would overflow a test thread's 2 MiB stack long before this depth.
        let mut payload = Vec::new();
        for _ in 0..1_000_000 {
            payload.extend_from_slice(&[AMF_STRICT_ARRAY, 0, 0, 0, 1]);
        }
        payload.push(AMF_NULL);
        let summary = check_amf0(&payload, 0, usize::MAX).unwrap();
        assert_eq!(summary.values, 1);
        assert_eq!(
            check_amf0(&payload, 0, 16),
            Err(GuardError::AmfTooDeep { depth: 17, limit: 16 })
        );
    }

    #[test]
    fn every_amf0_marker_is_walked() {
        let mut payload = Vec::new();
        amf_number(&mut payload, 1.5);
        payload.extend_from_slice(&[AMF_BOOLEAN, 1, AMF_NULL, AMF_UNDEFINED, AMF_REFERENCE, 0, 1]);
        payload.extend_from_slice(&[AMF_DATE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&[AMF_LONG_STRING, 0, 0, 0, 2, b'h', b'i']);
        payload.extend_from_slice(&[AMF_XML_DOCUMENT, 0, 0, 0, 1, b'<']);
        payload.extend_from_slice(&[AMF_ECMA_ARRAY, 0, 0, 0, 1]);
        amf_property(&mut payload, "k");
        amf_string(&mut payload, "v");
        amf_object_end(&mut payload);
        payload.extend_from_slice(&[AMF_STRICT_ARRAY, 0, 0, 0, 2, AMF_NULL, AMF_OBJECT]);
        amf_object_end(&mut payload);
        payload.extend_from_slice(&[AMF_TYPED_OBJECT, 0, 1, b'C']);
        amf_property(&mut payload, "x");
        amf_number(&mut payload, 2.0);
        amf_object_end(&mut payload);
        let summary = check_amf0(&payload, 0, 16).unwrap();
        assert_eq!(
            summary,
            AmfSummary {
                values: 11,
                first_is_set_data_frame: false
            }
        );
    }

    #[test]
    fn malformed_amf0_is_refused() {
        let malformed =
            |payload: &[u8]| matches!(check_amf0(payload, 0, 16), Err(GuardError::MalformedAmf { .. }));
        assert!(malformed(&[AMF_NUMBER, 0, 0]));
        assert!(malformed(&[AMF_STRING, 0, 5, b'a']));
        assert!(malformed(&[AMF_LONG_STRING, 0xFF, 0xFF, 0xFF, 0xFF, b'a']));
        assert!(malformed(&[AMF_OBJECT, 0, 1, b'a']));
        assert!(malformed(&[AMF_OBJECT, 0, 1, b'a', AMF_OBJECT_END]));
        assert!(malformed(&[AMF_OBJECT, 0, 0, AMF_NULL]));
        assert!(malformed(&[AMF_OBJECT]));
        assert!(malformed(&[AMF_STRICT_ARRAY, 0, 0, 0, 3, AMF_NULL]));
        assert!(malformed(&[AMF_STRICT_ARRAY, 0, 0, 0, 3, AMF_OBJECT_END]));
        assert!(malformed(&[0x04]));
        assert!(malformed(&[0x0D]));
        assert!(malformed(&[0xFF]));
        assert_eq!(
            check_amf0(&[AMF_NULL, AMF_AVMPLUS, 0x01], 0, 16),
            Err(GuardError::Amf3Unsupported { offset: 1 })
        );
        let error = check_amf0(&[AMF_NULL, AMF_STRING, 0, 9], 0, 16).unwrap_err();
        assert_eq!(
            error,
            GuardError::MalformedAmf {
                offset: 1,
                reason: "value past the end of the message"
            }
        );
    }

    #[test]
    fn top_level_object_end_stops_the_walk_as_in_rml() {
        let summary = check_amf0(&[AMF_NULL, AMF_OBJECT_END, 0xFF, 0xFF], 0, 16).unwrap();
        assert_eq!(summary.values, 1);
    }

    #[test]
    fn command_with_fewer_than_three_values_is_refused_where_rml_panics() {
        let mut payload = Vec::new();
        amf_string(&mut payload, "connect");
        amf_number(&mut payload, 1.0);
        let error = guard()
            .inspect(&message_chunks(3, 20, 0, &payload, 128))
            .unwrap_err();
        assert_eq!(
            error,
            GuardError::MissingAmfValues {
                type_id: 20,
                values: 2,
                needed: 3
            }
        );
        // rml_rtmp's `arguments.drain(..3)`:
        let message = MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id: 20,
            message_stream_id: 0,
            data: Bytes::from(payload),
        };
        assert!(catch_unwind(AssertUnwindSafe(|| message.to_rtmp_message())).is_err());
    }

    #[test]
    fn set_data_frame_needs_three_values() {
        let mut short = Vec::new();
        amf_string(&mut short, "@setDataFrame");
        amf_string(&mut short, "onMetaData");
        let error = guard()
            .inspect(&message_chunks(3, 18, 1, &short, 128))
            .unwrap_err();
        assert_eq!(
            error,
            GuardError::MissingAmfValues {
                type_id: 18,
                values: 2,
                needed: 3
            }
        );

        let mut full = short.clone();
        full.extend_from_slice(&[AMF_ECMA_ARRAY, 0, 0, 0, 0, 0, 0, AMF_OBJECT_END]);
        guard().inspect(&message_chunks(3, 18, 1, &full, 128)).unwrap();
        // Other data messages may be short.
        let mut other = Vec::new();
        amf_string(&mut other, "onTextData");
        guard().inspect(&message_chunks(3, 18, 1, &other, 128)).unwrap();
    }

    #[test]
    fn amf3_command_skips_its_leading_zero_and_amf3_data_does_not() {
        let mut command = vec![0];
        command.extend(command_payload(2));
        guard().inspect(&message_chunks(3, 17, 0, &command, 128)).unwrap();
        // rml reads type 15 from the first byte: 0 is a number marker, so the string length is misread.
        let mut data = vec![0];
        amf_string(&mut data, "@setDataFrame");
        assert!(matches!(
            guard().inspect(&message_chunks(3, 15, 1, &data, 128)),
            Err(GuardError::MalformedAmf { .. })
        ));
        let mut avmplus = vec![0, AMF_AVMPLUS, 0x06];
        avmplus.extend(command_payload(1));
        assert!(matches!(
            guard().inspect(&message_chunks(3, 17, 0, &avmplus, 128)),
            Err(GuardError::Amf3Unsupported { offset: 1 })
        ));
    }

    // ---- state ----------------------------------------------------------------------------------------

    #[test]
    fn refusal_is_sticky_and_counts_no_bytes() {
        let mut guard = guard();
        guard.inspect(&raw_chunk(0, 4, 0, 1, 9, 1, None, &[1])).unwrap();
        let bytes = guard.bytes();
        let error = guard.inspect(&[0xC5]).unwrap_err();
        assert_eq!(guard.inspect(&[]), Err(error.clone()));
        assert_eq!(
            guard.inspect(&raw_chunk(0, 4, 0, 1, 9, 1, None, &[1])),
            Err(error)
        );
        assert_eq!(guard.bytes(), bytes);
    }

    /// The refusals above are not theoretical: rml_rtmp panics on these streams.
    #[cfg(debug_assertions)]
    #[test]
    fn rml_panics_on_streams_the_guard_refuses() {
        // Interleaving: a shorter message on another chunk stream while 128 bytes of the video are buffered
        // makes `length - received` underflow.
        let video = message_chunks(6, 9, 1, &[9; 300], 128);
        let mut interleaved = video[..12 + 128].to_vec();
        interleaved.extend(raw_chunk(0, 4, 0, 100, 8, 1, None, &[8; 100]));
        assert!(guard().inspect(&interleaved).is_err());
        assert!(catch_unwind(|| rml_messages(&[&interleaved])).is_err());

        for fmt in [1, 2, 3] {
            let stream = small_extended_delta(fmt);
            assert!(catch_unwind(|| rml_messages(&[&stream])).is_err());
        }
    }

    // ---- cross-check against rml_rtmp -------------------------------------------------------------------

    /// One piece of a generated chunk stream.
    #[derive(Debug, Clone)]
    enum Piece {
        /// A message through rml's serializer (valid chunking at the serializer's chunk size).
        Message {
            kind: u8,
            size: usize,
            timestamp: u32,
            stream_id: u32,
        },
        /// A `SetChunkSize` of any value, raw (the serializer does not follow it).
        ChunkSize(u32),
        /// A `SetChunkSize` through the serializer, which then uses it.
        SerializerChunkSize(u32),
        /// Raw chunks with arbitrary header fields.
        Raw {
            fmt: u8,
            csid: u32,
            timestamp: u32,
            length: u32,
            type_id: u8,
            extended: u32,
            payload: RawPayload,
        },
        /// Arbitrary AMF top-level values as a command (20, 17) or data (18, 15) message.
        Amf {
            type_id: u8,
            prefix: bool,
            values: Vec<u8>,
        },
    }

    /// What payload a raw piece carries.
    #[derive(Debug, Clone, Copy)]
    enum RawPayload {
        /// The whole message, in chunks of the chunk size the generator believes in force.
        Whole,
        /// Only its first chunk: the message stays half received.
        FirstChunk,
        /// This many bytes, whatever the header says.
        Bytes(usize),
    }

    fn message_piece() -> impl Strategy<Value = Piece> {
        let timestamp = prop_oneof![0u32..100, 0xFF_FFF0u32..0x0100_0010];
        (0u8..10, 0usize..600, timestamp, 0u32..3).prop_map(|(kind, size, timestamp, stream_id)| {
            Piece::Message {
                kind,
                size,
                timestamp,
                stream_id,
            }
        })
    }

    /// Pieces a well-behaved peer sends: the stream stays in sync and every message is valid.
    fn benign_piece() -> impl Strategy<Value = Piece> {
        // The serializer uses chunk streams 2 to 6; raw chunks here use 7 (6 in all: the test's limit).
        let raw = (
            0u32..100,
            0u32..400,
            prop::sample::select(vec![0u8, 3, 4, 6, 8, 9, 22, 99]),
        )
            .prop_map(|(timestamp, length, type_id)| Piece::Raw {
                fmt: 0,
                csid: 7,
                timestamp,
                length,
                type_id,
                extended: 0,
                payload: RawPayload::Whole,
            });
        let amf = (
            prop::sample::select(vec![20u8, 17, 18, 15]),
            prop::collection::vec(0u8..12, 0..4),
        )
            .prop_map(|(type_id, values)| Piece::Amf {
                type_id,
                prefix: true,
                values,
            });
        prop_oneof![
            8 => message_piece(),
            2 => prop_oneof![1u32..400, Just(4096), Just(65_536)].prop_map(Piece::SerializerChunkSize),
            2 => raw,
            2 => amf,
        ]
    }

    /// Any piece: header fields, sizes, chunk sizes and AMF a hostile peer might send.
    fn piece() -> impl Strategy<Value = Piece> {
        let csid = prop_oneof![6 => 2u32..8, 1 => prop::sample::select(vec![64u32, 319, 320, 65_599])];
        let fmt = prop_oneof![3 => Just(0u8), 1 => 1u8..4];
        let timestamp = prop_oneof![3 => 0u32..100, 1 => Just(0xFF_FFFF)];
        let extended = prop_oneof![0u32..10, Just(0xFF_FFFF), 0x0100_0000u32..0x0100_0010];
        let type_id = prop_oneof![
            8 => prop::sample::select(vec![0u8, 3, 4, 6, 8, 9, 22, 99]),
            2 => prop::sample::select(vec![1u8, 2, 5, 15, 17, 18, 19, 20]),
        ];
        let chunk_size = prop_oneof![
            6 => 1u32..300,
            1 => Just(4096),
            1 => Just(0),
            1 => Just(0x7FFF_FFFF),
            1 => Just(0x8000_0000)
        ];
        let payload = prop_oneof![
            2 => Just(RawPayload::Whole),
            2 => Just(RawPayload::FirstChunk),
            1 => (0usize..300).prop_map(RawPayload::Bytes),
        ];
        let raw = (fmt, csid, timestamp, 0u32..400, type_id, extended, payload).prop_map(
            |(fmt, csid, timestamp, length, type_id, extended, payload)| Piece::Raw {
                fmt,
                csid,
                timestamp,
                length,
                type_id,
                extended,
                payload,
            },
        );
        let amf_code = prop_oneof![4 => 0u8..12, 1 => 12u8..15];
        let amf_type = prop::sample::select(vec![20u8, 17, 18, 15]);
        let amf = (
            amf_type,
            prop::bool::weighted(0.7),
            prop::collection::vec(amf_code, 0..6),
        )
            .prop_map(|(type_id, prefix, values)| Piece::Amf {
                type_id,
                prefix,
                values,
            });
        prop_oneof![
            3 => message_piece(),
            2 => chunk_size.prop_map(Piece::ChunkSize),
            1 => (1u32..400).prop_map(Piece::SerializerChunkSize),
            4 => raw,
            3 => amf,
        ]
    }

    /// A template AMF value by code (some valid, some hostile).
    fn amf_value(out: &mut Vec<u8>, code: u8) {
        match code {
            0 => amf_number(out, 1.0),
            1 => out.extend_from_slice(&[AMF_BOOLEAN, 1]),
            2 => amf_string(out, "live"),
            3 => out.push(AMF_NULL),
            4 => {
                out.push(AMF_OBJECT);
                amf_property(out, "app");
                amf_string(out, "live");
                amf_object_end(out);
            }
            5 => nested_objects(out, 3),
            6 => out.extend_from_slice(&[AMF_STRICT_ARRAY, 0, 0, 0, 1, AMF_NULL]),
            7 => out.extend_from_slice(&[AMF_ECMA_ARRAY, 0, 0, 0, 9, 0, 0, AMF_OBJECT_END]),
            8 => amf_string(out, "connect"),
            9 => amf_string(out, "publish"),
            10 => amf_string(out, "@setDataFrame"),
            11 => amf_string(out, "onMetaData"),
            12 => out.extend_from_slice(&[AMF_STRING, 0, 50, b'x']),
            13 => nested_objects(out, 6),
            _ => out.extend_from_slice(&[AMF_AVMPLUS, 1]),
        }
    }

    fn build_stream(pieces: &[Piece]) -> Vec<u8> {
        let mut serializer = ChunkSerializer::new();
        let mut out = Vec::new();
        let mut chunk_size = INITIAL_CHUNK_SIZE as usize;
        // Per raw chunk stream: the message length and timestamp field in force.
        let mut known: HashMap<u32, (u32, u32)> = HashMap::new();
        for piece in pieces {
            match piece {
                Piece::Message {
                    kind,
                    size,
                    timestamp,
                    stream_id,
                } => {
                    let data = || Bytes::from(vec![0x17; *size]);
                    let message = match kind {
                        0 => RtmpMessage::VideoData { data: data() },
                        1 => RtmpMessage::AudioData { data: data() },
                        2 => connect_command("live"),
                        3 => command("createStream", 2.0, Vec::new()),
                        4 => command(
                            "publish",
                            3.0,
                            vec![
                                Amf0Value::Utf8String("key".into()),
                                Amf0Value::Utf8String("live".into()),
                            ],
                        ),
                        5 => command("play", 3.0, vec![Amf0Value::Utf8String("key".into())]),
                        6 => RtmpMessage::WindowAcknowledgement { size: *size as u32 },
                        7 => RtmpMessage::UserControl {
                            event_type: UserControlEventType::PingRequest,
                            stream_id: None,
                            buffer_length: None,
                            timestamp: Some(RtmpTimestamp::new(*timestamp)),
                        },
                        8 => RtmpMessage::Abort {
                            stream_id: *stream_id,
                        },
                        _ => RtmpMessage::Unknown {
                            type_id: 22,
                            data: data(),
                        },
                    };
                    out.extend(serialize(&mut serializer, message, *timestamp, *stream_id));
                }
                Piece::ChunkSize(size) => {
                    if (1..=RTMP_MAX_CHUNK_SIZE).contains(size) {
                        chunk_size = *size as usize;
                    }
                    out.extend(set_chunk_size(*size))
                }
                Piece::SerializerChunkSize(size) => {
                    chunk_size = *size as usize;
                    let packet = serializer
                        .set_max_chunk_size(*size, RtmpTimestamp::new(0))
                        .unwrap();
                    out.extend(packet.bytes)
                }
                Piece::Raw {
                    fmt,
                    csid,
                    timestamp,
                    length,
                    type_id,
                    extended,
                    payload,
                } => {
                    // What the receiver will use for the fields a compressed header leaves out.
                    let (known_length, known_field) =
                        known.get(csid).copied().unwrap_or((*length, *timestamp));
                    let (length, field) = match fmt {
                        0 | 1 => (*length, *timestamp),
                        2 => (known_length, *timestamp),
                        _ => (known_length, known_field),
                    };
                    known.insert(*csid, (length, field));
                    let extended = (field == 0xFF_FFFF).then_some(*extended);
                    let (body, chunk, chunks) = match payload {
                        RawPayload::Whole => (vec![0x42; length as usize], chunk_size, usize::MAX),
                        RawPayload::FirstChunk => (vec![0x42; length as usize], chunk_size, 1),
                        RawPayload::Bytes(count) => (vec![0x42; *count], usize::MAX, 1),
                    };
                    let mut pieces = body.chunks(chunk).take(chunks);
                    let first = pieces.next().unwrap_or(&[]);
                    out.extend(raw_chunk(
                        *fmt, *csid, *timestamp, length, *type_id, 1, extended, first,
                    ));
                    for piece in pieces {
                        out.extend(raw_chunk(3, *csid, 0, 0, 0, 0, extended, piece));
                    }
                }
                Piece::Amf {
                    type_id,
                    prefix,
                    values,
                } => {
                    let mut data = Vec::new();
                    if *type_id == 17 {
                        data.push(0);
                    }
                    // A command's name, transaction id and object, or `@setDataFrame onMetaData {..}`.
                    let prefix: &[u8] = match (prefix, type_id) {
                        (false, _) => &[],
                        (true, 17 | 20) => &[8, 0, 4],
                        (true, _) => &[10, 11, 4],
                    };
                    for code in prefix.iter().chain(values) {
                        amf_value(&mut data, *code);
                    }
                    let message = RtmpMessage::Unknown {
                        type_id: *type_id,
                        data: Bytes::from(data),
                    };
                    out.extend(serialize(&mut serializer, message, 0, 1));
                }
            }
        }
        out
    }

    fn split<'a>(mut bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut reads = Vec::new();
        let mut next = sizes.iter().cycle();
        while !bytes.is_empty() {
            let size = next.next().copied().unwrap_or(usize::MAX).clamp(1, bytes.len());
            let (read, rest) = bytes.split_at(size);
            reads.push(read);
            bytes = rest;
        }
        reads
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2048,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever the guard accepts, rml_rtmp's deserializer and server session digest without panicking,
        /// and the deserializer finds exactly the messages the guard counted; how the stream is split into
        /// reads changes nothing.
        #[test]
        fn rml_survives_what_the_guard_accepts(
            benign in prop::collection::vec(benign_piece(), 0..20),
            hostile in prop::collection::vec(piece(), 0..5),
            flip in prop::option::weighted(0.3, (any::<usize>(), 1u8..=255)),
            sizes in prop::collection::vec(prop_oneof![1usize..20, 20usize..2000], 1..6),
        ) {
            let pieces: Vec<Piece> = benign.into_iter().chain(hostile).collect();
            let mut stream = build_stream(&pieces);
            if let (Some((at, xor)), false) = (flip, stream.is_empty()) {
                let len = stream.len();
                stream[at % len] ^= xor;
            }

            // Byte by byte: where exactly the guard refuses, and how many messages came before.
            let mut bytewise = ChunkGuard::new(test_limits());
            let (mut accepted, mut messages, mut refusal) = (0, 0, None);
            for byte in &stream {
                messages = bytewise.messages();
                if let Err(error) = bytewise.inspect(std::slice::from_ref(byte)) {
                    refusal = Some(error);
                    break;
                }
                accepted += 1;
                messages = bytewise.messages();
            }

            // In reads: the same verdict, at the read holding that byte.
            let mut guard = ChunkGuard::new(test_limits());
            let mut end = 0;
            for read in split(&stream, &sizes) {
                end += read.len();
                match guard.inspect(read) {
                    Ok(()) => prop_assert!(end <= accepted),
                    Err(error) => {
                        prop_assert!(end > accepted);
                        prop_assert_eq!(Some(error), refusal.clone());
                        break;
                    }
                }
            }

            // Everything before the refused byte, in the same reads, to rml_rtmp.
            let prefix = split(&stream[..accepted], &sizes);
            prop_assert_eq!(rml_messages(&prefix).len() as u64, messages);
            let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
            for read in &prefix {
                let Ok(mut results) = session.handle_input(read) else { break };
                while let Some(result) = results.pop() {
                    if let ServerSessionResult::RaisedEvent(
                        ServerSessionEvent::ConnectionRequested { request_id, .. }
                        | ServerSessionEvent::PublishStreamRequested { request_id, .. }
                        | ServerSessionEvent::PlayStreamRequested { request_id, .. },
                    ) = result
                    {
                        if let Ok(more) = session.accept_request(request_id) {
                            results.extend(more);
                        }
                    }
                }
            }
        }
    }

    fn test_limits() -> GuardLimits {
        GuardLimits {
            max_message_bytes: 64 * 1024,
            max_command_bytes: 4096,
            max_amf_depth: 4,
            max_chunk_streams: 6,
            ..GuardLimits::default()
        }
    }
}
