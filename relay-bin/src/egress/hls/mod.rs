//! HLS: live streams as fMP4 (CMAF) segments and parts in a sliding window, with plain and low-latency
//! playlists. [`tracks`] reads the sequence headers, [`fmp4`] encodes the boxes (`mp4-atom`), [`muxer`] cuts
//! parts and segments (sans-IO), [`playlist`] renders the `.m3u8`.

pub mod fmp4;
pub mod muxer;
pub mod playlist;
pub mod tracks;

pub use muxer::{Changed, HlsMuxer, MuxerConfig, Part, Segment};
pub use playlist::{media_playlist, multivariant_playlist, PlaylistOptions, Variant};
