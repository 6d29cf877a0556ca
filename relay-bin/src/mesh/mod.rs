//! The PoP mesh: which node is a stream's home, and (to come) peers, pushes and pulls over the transport,
//! failover and ban replication.
//!
//! - [`placement`]: a stream's home among an app's origins by weighted rendezvous (HRW) hashing, and the
//!   failover order behind it;
//! - [`wire`]: what PoPs say on a link: control messages ([`wire::Control`]) and each carried frame's header
//!   ([`wire::MediaHeader`]).

pub mod placement;
pub mod wire;
