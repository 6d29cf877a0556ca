//! Static X25519 identity keys and the system random number generator.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};

use super::error::CryptoError;

/// Length of an X25519 public or private key, in bytes.
pub const KEY_LEN: usize = 32;

/// A node's long-term X25519 keypair: its identity in the Noise IK handshake.
///
/// `Debug` prints the public key only.
#[derive(Clone)]
pub struct StaticKeypair {
    /// The private scalar (clamped by X25519 when used). Keep it secret.
    pub private: [u8; KEY_LEN],
    /// The public key, what peers put in their configuration to authorize this node.
    pub public: [u8; KEY_LEN],
}

impl StaticKeypair {
    /// Generates a fresh keypair from the system random number generator.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::from_private(random_bytes::<KEY_LEN>()?)
    }

    /// Builds the keypair of a configured private key, deriving its public key.
    ///
    /// Fails with [`CryptoError::BadKey`] on an all-zero key, which is always a configuration mistake.
    pub fn from_private(private: [u8; KEY_LEN]) -> Result<Self, CryptoError> {
        if private == [0; KEY_LEN] {
            return Err(CryptoError::BadKey);
        }
        let mut dh = x25519()?;
        dh.set(&private);
        let public: [u8; KEY_LEN] = dh.pubkey().try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self { private, public })
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &Hex(&self.public))
            .field("private", &"<redacted>")
            .finish()
    }
}

/// Fills an array from the system random number generator (`ring::rand::SystemRandom`).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// True if `public` is a point of small order (or otherwise yields an all-zero X25519 result with `private`):
/// such a key makes a Diffie-Hellman output anyone can compute, so it is never a legitimate identity.
pub(crate) fn is_weak_public(private: &[u8; KEY_LEN], public: &[u8; KEY_LEN]) -> Result<bool, CryptoError> {
    let mut dh = x25519()?;
    dh.set(private);
    let mut shared = [0u8; KEY_LEN];
    dh.dh(public, &mut shared)?;
    Ok(shared == [0; KEY_LEN])
}

fn x25519() -> Result<Box<dyn snow::types::Dh>, CryptoError> {
    DefaultResolver
        .resolve_dh(&DHChoice::Curve25519)
        .ok_or_else(|| CryptoError::Handshake("X25519 unavailable".into()))
}

/// Lower-case hex for `Debug` output of public values.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_private_derives_rfc7748_public_key() {
        // RFC 7748 section 6.1, Alice.
        let private = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let kp = StaticKeypair::from_private(private).unwrap();
        assert_eq!(kp.public, public);
    }

    #[test]
    fn generate_gives_distinct_keys_and_debug_hides_private() {
        let a = StaticKeypair::generate().unwrap();
        let b = StaticKeypair::generate().unwrap();
        assert_ne!(a.private, b.private);
        assert_ne!(a.public, b.public);
        let shown = format!("{a:?}");
        assert!(shown.contains(&format!("{:?}", Hex(&a.public))));
        assert!(!shown.contains(&format!("{:?}", Hex(&a.private))));
    }

    #[test]
    fn zero_private_key_is_rejected() {
        assert!(matches!(
            StaticKeypair::from_private([0; 32]),
            Err(CryptoError::BadKey)
        ));
    }

    #[test]
    fn small_order_point_is_weak() {
        let kp = StaticKeypair::generate().unwrap();
        assert!(is_weak_public(&kp.private, &[0; 32]).unwrap());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(is_weak_public(&kp.private, &one).unwrap());
        let other = StaticKeypair::generate().unwrap();
        assert!(!is_weak_public(&kp.private, &other.public).unwrap());
    }

    #[test]
    fn random_bytes_differ() {
        assert_ne!(random_bytes::<32>().unwrap(), random_bytes::<32>().unwrap());
    }

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
