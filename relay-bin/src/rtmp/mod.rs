//! RTMP: the hardened input path (the chunk decoder and the chunk guard in front of rml_rtmp), ingest,
//! playback and the shared wire encoding of frames.

pub(crate) mod byte_reader;
pub mod chunk;
pub mod chunk_guard;
pub mod connection;
pub mod ingest;
pub mod message_type;
pub mod wire;
