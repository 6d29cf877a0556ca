//! [`ChunkLimits`]: how much state a peer's chunk stream may make the decoder keep, and whether it may
//! interleave messages.

use crate::rtmp::chunk::header::RTMP_MAX_CHUNK_SIZE;

/// Bounds the decoder enforces on a peer's chunk stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest message of a media or other type, in bytes. Default 2^24 - 1, the RTMP maximum.
    pub max_message_bytes: usize,
    /// Largest protocol control (types 1 to 6) or AMF message (15, 17, 18, 19, 20), in bytes: their receiver
    /// reads them whole ([`crate::rtmp::message_type::is_control_or_amf`]). Default 64 KiB.
    pub max_command_bytes: usize,
    /// Largest chunk size a peer may set, in bytes. Default 16 777 215, the RTMP maximum; a size of 0, above
    /// this, or with the top bit set is refused.
    pub max_chunk_size: u32,
    /// Most distinct chunk stream ids a peer may use (a header is remembered per id, for the session's life).
    /// Default 64.
    pub max_chunk_streams: usize,
    /// Whether a chunk of one chunk stream may come while a message of another is half received (RTMP
    /// allows it; rml_rtmp cannot follow it). Default true.
    pub interleaving: bool,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_message_bytes: RTMP_MAX_CHUNK_SIZE as usize,
            max_command_bytes: 64 * 1024,
            max_chunk_size: RTMP_MAX_CHUNK_SIZE,
            max_chunk_streams: 64,
            interleaving: true,
        }
    }
}
