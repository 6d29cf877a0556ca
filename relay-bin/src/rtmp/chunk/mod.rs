//! The one RTMP chunk decoder: sans-IO, incremental, bounded, never panicking. The chunk guard
//! ([`crate::rtmp::chunk_guard`]) runs every byte a client sends through it before rml_rtmp, and the
//! benchmark's players (`popline-bench fanout`) read what a server sends with it.
//!
//! - [`header`]: basic and message headers, extended timestamps (a parse of a prefix of the bytes);
//! - [`decoder`]: the chunk stream state machine ([`ChunkDecoder`]) and the events it yields;
//! - [`limits`]: what a peer may make it keep ([`ChunkLimits`]); [`error`]: what it refuses ([`ChunkError`]).

pub mod decoder;
pub mod error;
pub mod header;
pub mod limits;
#[cfg(test)]
pub(crate) mod test_stream;

pub use decoder::{Chunk, ChunkDecoder, ChunkEvent, MessageHeader};
pub use error::ChunkError;
pub use header::{INITIAL_CHUNK_SIZE, RTMP_MAX_CHUNK_SIZE};
pub use limits::ChunkLimits;
