//! The PoP mesh: which node is a stream's home, and (to come) peers, pushes and pulls over the transport,
//! failover and ban replication.
//!
//! - [`config`]: the `[mesh]` config section, checked into what the mesh runs with, and key files;
//! - [`core`]: [`core::MeshCore`], one node's mesh decisions, sans-IO: push to the home, pull on demand with a
//!   grace period, relay, failover when links die, ban replication;
//! - [`placement`]: a stream's home among an app's origins by weighted rendezvous (HRW) hashing, and the
//!   failover order behind it;
//! - [`wire`]: what PoPs say on a link: control messages ([`wire::Control`]) and each carried frame's header
//!   ([`wire::MediaHeader`]).

pub mod config;
pub mod core;
pub mod placement;
pub mod wire;

#[cfg(test)]
mod tests;
