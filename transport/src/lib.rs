//! `transport`: the popline protocol, sans-IO.
//!
//! A UDP protocol that carries live media *frames*, each with a priority and an end-to-end deadline, between
//! points of presence. It retransmits what can still arrive in time, drops whole what cannot, never hands the
//! application a frame whose reference was lost, controls congestion with a model-based controller that is not
//! fooled by random loss, and authenticates and encrypts every packet.
//!
//! The crate never touches a socket, a thread or a clock: every entry point takes `now`, and the caller moves
//! datagrams. That is what lets the same code run on io_uring, on epoll, and in `sim` (feature `sim`), the
//! deterministic virtual-time link the tests and the `popline-bench sim` benchmark use.
//!
//! Layers, bottom up: [`wire`] (packet and frame formats), [`crypto`] (Noise handshake, packet AEAD,
//! cookies, replay window), [`congestion`] (controllers and pacing), [`connection`] (reliability, the frame
//! scheduler and reassembly), [`Endpoint`] (demultiplexing and handshakes).
//!
//! Features (off by default, so the node carries neither): `sim`, the simulator; `fuzzing`, the fuzz targets'
//! bodies.
#![forbid(unsafe_code)]

pub mod config;
pub mod congestion;
pub mod connection;
pub mod crypto;
pub mod endpoint;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod media;
#[cfg(feature = "sim")]
pub mod sim;
pub mod wire;

pub use config::{ConnectionConfig, EndpointConfig};
pub use connection::reassembly::{DeliveredFrame, Gap};
pub use connection::stats::ConnectionStats;
pub use connection::{CloseReason, Event};
pub use endpoint::{ConnectionHandle, Endpoint, EndpointError, EndpointStats, Transmit};
pub use media::{DropReason, FrameSeq, MediaFrame, MediaKind, StreamId};
