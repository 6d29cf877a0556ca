//! [`GuardError`]: what the peer sent that the guard refused.

use thiserror::Error;

use crate::rtmp::chunk::ChunkError;

/// What the peer sent that the guard refused. Chunk stream ids (`csid`) and message type ids are the peer's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GuardError {
    /// The chunk stream itself: sizes, chunk streams, headers, interleaving (refused by the chunk decoder).
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// A delta header (fmt 1, 2 or 3) starting a message with an extended timestamp below 0xFFFFFF (rml_rtmp
    /// subtracts 0xFFFFFF from it).
    #[error("chunk stream {csid}: extended timestamp delta {value} below 0xFFFFFF")]
    ExtendedTimestampTooSmall {
        /// Chunk stream id.
        csid: u32,
        /// The extended timestamp the peer sent.
        value: u32,
    },
    /// A `WindowAcknowledgementSize` shorter than its 4-byte value (a short `SetChunkSize` is the decoder's
    /// [`ChunkError::ShortControlMessage`]).
    #[error("control message of type {type_id} is {length} bytes, shorter than 4")]
    ShortControlMessage {
        /// Message type id.
        type_id: u8,
        /// Message length, in bytes.
        length: u32,
    },
    /// A `WindowAcknowledgementSize` above 2^31 - 1 bytes, or below [`super::GuardLimits::min_window_ack_size`]
    /// (rml_rtmp queues an acknowledgement whenever that many bytes arrived: a tiny window makes one per read).
    #[error("window acknowledgement size {size} outside {min}..=2147483647")]
    WindowAckSizeOutOfRange {
        /// The size the peer sent, in bytes.
        size: u32,
        /// The smallest size allowed.
        min: u32,
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
    /// More command messages than [`super::GuardLimits::max_commands`].
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
