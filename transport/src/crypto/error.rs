//! The one error type of the crypto module.

/// Why a cryptographic operation failed.
///
/// Errors caused by a peer's bytes ([`CryptoError::Handshake`], [`CryptoError::Decrypt`]) end that peer's
/// handshake or drop that packet; they never mean the process is in trouble.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The Noise handshake failed: a message did not verify or decrypt, was malformed or truncated, or the
    /// handshake was misconfigured. The string says which, in `snow`'s words.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// A packet failed authentication (wrong key, wrong packet number, tampered or truncated).
    #[error("packet failed authentication")]
    Decrypt,
    /// Encryption failed (the payload is beyond what the AEAD can encrypt under one nonce).
    #[error("packet encryption failed")]
    Encrypt,
    /// A key is unusable: all zero, or a public key of low order.
    #[error("invalid key material")]
    BadKey,
    /// The operating system's random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// `seal` was asked to treat more bytes as header than the buffer holds.
    #[error("header length {header_len} exceeds buffer length {buf_len}")]
    HeaderTooLong {
        /// The header length the caller passed, in bytes.
        header_len: usize,
        /// The buffer's length, in bytes.
        buf_len: usize,
    },
    /// The key generation counter would overflow: the connection must handshake again.
    #[error("key generations exhausted")]
    KeyExhausted,
}

impl From<snow::Error> for CryptoError {
    fn from(e: snow::Error) -> Self {
        CryptoError::Handshake(e.to_string())
    }
}
