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
//! The guard reads the chunk stream with the node's chunk decoder ([`crate::rtmp::chunk`]), which parses it
//! exactly as rml's deserializer does (same basic and message headers, same extended-timestamp rule, same
//! chunk-size changes at the same message boundary) and, with interleaving off, refuses the chunk structure
//! rml cannot follow. On top of it the guard refuses the rest of what rml cannot survive: small extended
//! timestamp deltas, out-of-range window sizes, AMF it would choke on (`amf0_walk.rs`), a flood of commands.
//! It buffers no media: only an incomplete chunk header (at most 18 bytes, in the decoder) and the payload of
//! the messages it must read (AMF commands and data, `WindowAcknowledgementSize`), each bounded by
//! [`GuardLimits::max_command_bytes`]. Once it has refused, it keeps refusing: the caller ends the session.
//!
//! `Abort` (type 2) passes like any small message and changes nothing: rml_rtmp ignores it, so it cannot cut
//! a half-received message short (and an `Abort` sent in the middle of one is refused as interleaving).
//! Every byte after the handshake must pass here, the handshake's leftover bytes included.

mod amf0_walk;
pub mod error;
pub mod limits;
#[cfg(test)]
mod rml_cross_check;
#[cfg(test)]
mod test_amf0;
#[cfg(test)]
mod tests;

pub use error::GuardError;
pub use limits::GuardLimits;

use crate::rtmp::byte_reader::Reader;
use crate::rtmp::chunk::header::EXTENDED_TIMESTAMP_MARK;
use crate::rtmp::chunk::{Chunk, ChunkDecoder, ChunkEvent, MessageHeader};
use crate::rtmp::message_type::{AMF0_COMMAND, AMF0_DATA, AMF3_COMMAND, AMF3_DATA, WINDOW_ACK_SIZE};
use amf0_walk::check_amf0;

/// `WindowAcknowledgementSize` values above this would let rml_rtmp's `u32` count of unacknowledged bytes
/// overflow (it adds each read's length before comparing).
const MAX_WINDOW_ACK_SIZE: u32 = 0x7FFF_FFFF;

/// An assembled AMF payload keeps at most this much capacity between messages.
const RETAINED_PAYLOAD_CAPACITY: usize = 4096;

/// Validates a peer's RTMP chunk stream incrementally; see the module docs.
#[derive(Debug)]
pub struct ChunkGuard {
    limits: GuardLimits,
    decoder: ChunkDecoder,
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
            decoder: ChunkDecoder::new(limits.chunk_limits()),
            limits,
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
        self.decoder.chunk_size()
    }

    fn consume(&mut self, mut input: &[u8]) -> Result<(), GuardError> {
        // The decoder acts on a header as soon as its last byte is in, as rml_rtmp does: a zero-length
        // message (or a refusal) does not wait for the next read.
        while let Some(event) = self.decoder.next_event(&mut input)? {
            match event {
                ChunkEvent::Chunk(chunk) => self.start_chunk(&chunk)?,
                ChunkEvent::Payload { type_id, bytes, .. } => {
                    if reads_payload(type_id) {
                        self.payload.extend_from_slice(bytes);
                    }
                }
                ChunkEvent::MessageEnd(message) => {
                    self.messages += 1;
                    self.finish_message(message)?;
                }
            }
        }
        Ok(())
    }

    /// Checks what rml_rtmp would do with a chunk's header the decoder accepted; readies the payload buffer
    /// for a new message.
    fn start_chunk(&mut self, chunk: &Chunk) -> Result<(), GuardError> {
        if !chunk.starts_message {
            return Ok(());
        }
        let message = chunk.message;
        // rml_rtmp adds `extended - 0xFFFFFF` to the timestamp on the first chunk of a message with a delta
        // header; mid-message it ignores the value.
        if let Some(value) = chunk.extended_timestamp {
            if chunk.fmt != 0 && value < EXTENDED_TIMESTAMP_MARK {
                return Err(GuardError::ExtendedTimestampTooSmall {
                    csid: message.csid,
                    value,
                });
            }
        }
        self.payload.clear();
        if self.payload.capacity() > RETAINED_PAYLOAD_CAPACITY {
            self.payload = Vec::new();
        }
        if reads_payload(message.type_id) {
            // Bounded by `max_command_bytes`, which the decoder checked.
            self.payload.reserve(usize::try_from(message.length).unwrap_or(0));
        }
        Ok(())
    }

    /// Reads a complete message the guard must understand (the decoder has applied a `SetChunkSize`).
    fn finish_message(&mut self, message: MessageHeader) -> Result<(), GuardError> {
        let payload = self.payload.as_slice();
        match message.type_id {
            WINDOW_ACK_SIZE => {
                // rml_rtmp reads the first 4 bytes and ignores any after them.
                let size = Reader::new(payload)
                    .be32()
                    .ok_or(GuardError::ShortControlMessage {
                        type_id: message.type_id,
                        length: message.length,
                    })?;
                // Below the floor, rml_rtmp would queue an acknowledgement for nearly every read.
                if size > MAX_WINDOW_ACK_SIZE || size < self.limits.min_window_ack_size {
                    return Err(GuardError::WindowAckSizeOutOfRange {
                        size,
                        min: self.limits.min_window_ack_size,
                    });
                }
            }
            // rml_rtmp reads "AMF3" data (15) as plain AMF0 from the first byte.
            AMF0_DATA | AMF3_DATA => {
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
            AMF0_COMMAND | AMF3_COMMAND => {
                self.commands += 1;
                if self.commands > self.limits.max_commands {
                    return Err(GuardError::TooManyCommands {
                        limit: self.limits.max_commands,
                    });
                }
                // rml_rtmp skips a leading 0 byte of an "AMF3" command and reads the rest as AMF0.
                let start = usize::from(message.type_id == AMF3_COMMAND && payload.first() == Some(&0));
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
}

/// Whether the guard keeps a message's payload to read it when complete.
fn reads_payload(type_id: u8) -> bool {
    matches!(
        type_id,
        WINDOW_ACK_SIZE | AMF3_DATA | AMF3_COMMAND | AMF0_DATA | AMF0_COMMAND
    )
}
