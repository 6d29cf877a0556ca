//! Media egress over HTTP, served by the data-plane cores on the engine (not by the admin API's runtime):
//! [`http`] reads a viewer's request and writes the node's answers; [`http_flv`] is the HTTP-FLV output
//! (each frame's FLV tag encoded once, shared by every HTTP-FLV viewer on every core); [`hls`] packages a
//! stream as fMP4 segments and parts with its playlists.
//!
//! An HTTP viewer is a viewer like an RTMP one: the same GOP-cache start, viewer queue, drop policy and byte
//! bound, listed in `/api/v1/clients`, kicked, stopped by a forbid, counted in stats.

pub mod hls;
pub mod http;
pub mod http_flv;
