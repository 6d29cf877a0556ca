//! `relay`: the popline PoP node (binary `popline`).
//!
//! A frame's path: [`rtmp::ingest`] turns a publisher's RTMP messages into [`media::Frame`]s on the core that
//! accepted it; the stream's owner core ([`node`]) keeps its GOP cache and forwards each frame to the cores
//! that have viewers of it; each core fans it out to its viewers' queues ([`fanout::viewer_queue`], with the
//! app's drop policy), and the core writes each queue's shared wire bytes to its viewer's socket in one
//! `writev`; HTTP viewers ([`egress`]: HTTP-FLV) are viewers of the same queues, fed each frame's FLV tag
//! encoded once. [`link`] runs the transport (`transport::Endpoint`) on the engine's UDP sockets, for the links
//! between PoPs; [`mesh`] decides which stream goes over which link; [`relays`] pushes streams to, and
//! pulls them from, other RTMP servers.

pub mod admin;
pub mod auth;
pub mod bans;
pub mod config;
pub mod control;
pub mod egress;
pub mod fanout;
pub mod link;
pub mod media;
pub mod mesh;
pub mod node;
pub mod recording;
pub mod relays;
pub mod rtmp;
pub mod snapshot;
pub mod startup;
pub mod stream_key;
pub mod transcode;
