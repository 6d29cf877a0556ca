//! [`ChunkError`]: what in a peer's chunk stream the decoder cannot follow or its limits refuse.

use thiserror::Error;

/// Why the decoder stopped. Chunk stream ids (`csid`) and message type ids are the peer's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkError {
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
    /// A `SetChunkSize` shorter than its 4-byte value.
    #[error("control message of type {type_id} is {length} bytes, shorter than 4")]
    ShortControlMessage {
        /// Message type id.
        type_id: u8,
        /// Message length, in bytes.
        length: u32,
    },
    /// A chunk on a chunk stream while a message on another one is half received, where
    /// [`super::ChunkLimits::interleaving`] is off.
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
}
