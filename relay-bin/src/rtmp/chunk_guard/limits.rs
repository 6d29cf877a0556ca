//! [`GuardLimits`]: how much a peer may make the guard (and rml_rtmp behind it) hold, and how deep its AMF may
//! nest.

use crate::rtmp::chunk::{ChunkLimits, RTMP_MAX_CHUNK_SIZE};

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
    /// Smallest `WindowAcknowledgementSize` a peer may set, in bytes: rml_rtmp queues an acknowledgement each
    /// time that many bytes arrived, so a tiny window makes one per read. Default 4096.
    pub min_window_ack_size: u32,
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
            min_window_ack_size: 4096,
        }
    }
}

impl GuardLimits {
    /// The chunk decoder's share of the limits: no interleaving, since rml_rtmp keeps one payload buffer.
    pub fn chunk_limits(&self) -> ChunkLimits {
        ChunkLimits {
            max_message_bytes: self.max_message_bytes,
            max_command_bytes: self.max_command_bytes,
            max_chunk_size: self.max_chunk_size,
            max_chunk_streams: self.max_chunk_streams,
            interleaving: false,
        }
    }
}
