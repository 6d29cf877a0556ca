//! RTMP: the hardened input path (chunk guard in front of rml_rtmp), ingest, playback and the shared wire
//! encoding of frames.

pub mod chunk_guard;
pub mod connection;
pub mod ingest;
pub mod wire;
