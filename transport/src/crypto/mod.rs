//! The transport's cryptography.
//!
//! - [`handshake`]: Noise IK (optionally with a pre-shared key) between two static keys, via `snow`; yields
//!   [`SessionKeys`].
//! - [`aead`]: per-packet AES-256-GCM under those keys with the packet number as nonce, and key generations.
//! - [`cookie`]: stateless address-validation cookies, so a server keeps no state for an unproven address.
//! - [`replay`]: the anti-replay window over authenticated packet numbers.
//! - [`keys`]: static identity keys and randomness.
//!
//! Nothing here reads a clock: time comes in as an argument.

pub mod aead;
pub mod cookie;
pub mod error;
pub mod handshake;
pub mod keys;
pub mod replay;

pub use aead::{whole_blocks, PacketKey, BLOCK_LEN, TAG_LEN};
pub use cookie::{CookieJar, COOKIE_LEN, DEFAULT_COOKIE_LIFETIME_SECS};
pub use error::CryptoError;
pub use handshake::{InitiatorHandshake, ResponderHandshake, SessionKeys};
pub use keys::{random_bytes, StaticKeypair};
pub use replay::{ReplayWindow, REPLAY_WINDOW};
