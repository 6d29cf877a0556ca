//! Wire formats: packet headers, the frames inside packets, and the integer encodings they use.
//!
//! Every decoder here reads through [`codec::Reader`], which checks each length before touching a byte and
//! returns [`WireError`] instead of panicking: any datagram from the network, however malformed, decodes to
//! either a value or an error.

pub mod codec;
pub mod frame;
pub mod packet;

pub use codec::{Reader, WireError};

/// The protocol version carried in every long-header packet.
pub const PROTOCOL_VERSION: u8 = 1;
