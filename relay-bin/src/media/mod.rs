//! The media model: FLV tags become [`Frame`]s with a kind and timestamps; the GOP cache keeps what a new
//! viewer needs to start at once.

pub mod describe;
pub mod flv_tag;
pub mod frame;
pub mod gop_cache;
pub mod timestamps;

pub use frame::{Frame, MediaKind, Track};
