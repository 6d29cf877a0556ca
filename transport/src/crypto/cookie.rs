//! Stateless address-validation cookies (like QUIC Retry tokens or WireGuard cookies): a server answers a first
//! packet with a cookie and keeps no per-peer state until the peer echoes it back, which proves it receives
//! packets at its claimed address.
//!
//! A cookie is the issue time (8 bytes, seconds on the server's clock, big-endian) followed by the first 16
//! bytes of HMAC-SHA256 over that time, the peer's address and port, and the client's connection id.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ring::hmac;

use super::error::CryptoError;
use super::keys::random_bytes;

/// Length of a cookie on the wire, in bytes.
pub const COOKIE_LEN: usize = 24;

/// How long a cookie stays valid unless [`CookieJar::with_lifetime_secs`] says otherwise, in seconds.
pub const DEFAULT_COOKIE_LIFETIME_SECS: u64 = 30;

const TIME_LEN: usize = 8;
const MAC_LEN: usize = COOKIE_LEN - TIME_LEN;
const DOMAIN: &[u8] = b"popline cookie v1";
/// Domain label, time, address family, IPv6-sized address, port, connection id.
const INPUT_LEN: usize = DOMAIN.len() + TIME_LEN + 1 + 16 + 2 + 8;

/// Issues and verifies cookies under a secret that only this server knows.
///
/// `Debug` shows no secret.
pub struct CookieJar {
    current: hmac::Key,
    previous: Option<hmac::Key>,
    lifetime_secs: u64,
}

impl CookieJar {
    /// A jar with a fresh random secret and the default lifetime.
    pub fn new() -> Result<Self, CryptoError> {
        Ok(Self::with_secret(random_bytes::<32>()?))
    }

    /// A jar with the given secret (for tests, or for servers behind one address that must agree).
    pub fn with_secret(secret: [u8; 32]) -> Self {
        Self {
            current: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            previous: None,
            lifetime_secs: DEFAULT_COOKIE_LIFETIME_SECS,
        }
    }

    /// Sets how long a cookie stays valid after it is issued, in seconds.
    pub fn with_lifetime_secs(mut self, lifetime_secs: u64) -> Self {
        self.lifetime_secs = lifetime_secs;
        self
    }

    /// How long a cookie stays valid after it is issued, in seconds.
    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }

    /// A cookie bound to `peer` (address and port) and `client_cid`, issued at `now_secs` (seconds on the
    /// caller's clock, which must be the one later passed to [`CookieJar::verify`]).
    pub fn issue(&self, now_secs: u64, peer: SocketAddr, client_cid: u64) -> [u8; COOKIE_LEN] {
        let mut cookie = [0u8; COOKIE_LEN];
        let (time, mac) = cookie.split_at_mut(TIME_LEN);
        time.copy_from_slice(&now_secs.to_be_bytes());
        let tag = mac_of(&self.current, now_secs, peer, client_cid);
        for (out, t) in mac.iter_mut().zip(tag.as_ref()) {
            *out = *t;
        }
        cookie
    }

    /// True if `cookie` was issued by this jar (under the current or the previous secret) for this address and
    /// connection id, no more than the lifetime before `now_secs` and not after it.
    ///
    /// The MAC comparison does not stop at the first differing byte.
    pub fn verify(&self, now_secs: u64, peer: SocketAddr, client_cid: u64, cookie: &[u8]) -> bool {
        let Some((time, mac)) = cookie.split_first_chunk::<TIME_LEN>() else {
            return false;
        };
        if mac.len() != MAC_LEN {
            return false;
        }
        let issued = u64::from_be_bytes(*time);
        match now_secs.checked_sub(issued) {
            Some(age) if age <= self.lifetime_secs => {}
            _ => return false,
        }
        let current = mac_matches(&mac_of(&self.current, issued, peer, client_cid), mac);
        let previous = self
            .previous
            .as_ref()
            .is_some_and(|key| mac_matches(&mac_of(key, issued, peer, client_cid), mac));
        current | previous
    }

    /// Replaces the secret with a fresh random one. Cookies of the replaced secret stay valid (within their
    /// lifetime) until the next rotation; older ones are invalid from now on.
    pub fn rotate(&mut self) -> Result<(), CryptoError> {
        self.rotate_to(random_bytes::<32>()?);
        Ok(())
    }

    /// [`CookieJar::rotate`] to a given secret.
    pub fn rotate_to(&mut self, secret: [u8; 32]) {
        let next = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        self.previous = Some(std::mem::replace(&mut self.current, next));
    }
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieJar")
            .field("lifetime_secs", &self.lifetime_secs)
            .field("has_previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

fn mac_of(key: &hmac::Key, issued: u64, peer: SocketAddr, client_cid: u64) -> hmac::Tag {
    let mut input = [0u8; INPUT_LEN];
    let (domain, rest) = input.split_at_mut(DOMAIN.len());
    domain.copy_from_slice(DOMAIN);
    let (time, rest) = rest.split_at_mut(TIME_LEN);
    time.copy_from_slice(&issued.to_be_bytes());
    let (family, rest) = rest.split_at_mut(1);
    let (addr, rest) = rest.split_at_mut(16);
    // An IPv4 peer seen through a dual-stack socket as ::ffff:a.b.c.d gets the same cookie as plain a.b.c.d.
    match peer.ip().to_canonical() {
        IpAddr::V4(ip) => {
            family.copy_from_slice(&[4]);
            for (o, b) in addr.iter_mut().zip(ip.octets()) {
                *o = b;
            }
        }
        IpAddr::V6(ip) => {
            family.copy_from_slice(&[6]);
            addr.copy_from_slice(&ip.octets());
        }
    }
    let (port, cid) = rest.split_at_mut(2);
    port.copy_from_slice(&peer.port().to_be_bytes());
    cid.copy_from_slice(&client_cid.to_be_bytes());
    hmac::sign(key, &input)
}

/// Compares the first [`MAC_LEN`] bytes of `tag` with `mac` without an early exit.
fn mac_matches(tag: &hmac::Tag, mac: &[u8]) -> bool {
    let tag = tag.as_ref();
    if tag.len() < MAC_LEN || mac.len() != MAC_LEN {
        return false;
    }
    let diff = tag.iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn jar() -> CookieJar {
        CookieJar::with_secret([3; 32])
    }

    #[test]
    fn verifies_for_same_address_and_cid_within_lifetime() {
        let j = jar();
        let peer = addr("192.0.2.7:4433");
        let c = j.issue(1000, peer, 77);
        assert_eq!(c.len(), COOKIE_LEN);
        assert_eq!(&c[..8], &1000u64.to_be_bytes());
        assert!(j.verify(1000, peer, 77, &c));
        assert!(j.verify(1000 + DEFAULT_COOKIE_LIFETIME_SECS, peer, 77, &c));
        assert!(CookieJar::new().is_ok());
    }

    #[test]
    fn fails_for_other_address_port_or_cid() {
        let j = jar();
        let c = j.issue(1000, addr("192.0.2.7:4433"), 77);
        assert!(!j.verify(1000, addr("192.0.2.8:4433"), 77, &c));
        assert!(!j.verify(1000, addr("192.0.2.7:4434"), 77, &c));
        assert!(!j.verify(1000, addr("192.0.2.7:4433"), 78, &c));
        assert!(!j.verify(1000, addr("[2001:db8::7]:4433"), 77, &c));
    }

    #[test]
    fn ipv4_mapped_is_same_peer() {
        let j = jar();
        let c = j.issue(5, addr("192.0.2.7:9"), 1);
        assert!(j.verify(5, addr("[::ffff:192.0.2.7]:9"), 1, &c));
        let c6 = j.issue(5, addr("[2001:db8::1]:9"), 1);
        assert!(j.verify(5, addr("[2001:db8::1]:9"), 1, &c6));
        assert!(!j.verify(5, addr("[2001:db8::2]:9"), 1, &c6));
    }

    #[test]
    fn expired_and_future_cookies_fail() {
        let j = jar().with_lifetime_secs(10);
        assert_eq!(j.lifetime_secs(), 10);
        let peer = addr("192.0.2.7:4433");
        let c = j.issue(1000, peer, 1);
        assert!(j.verify(1010, peer, 1, &c));
        assert!(!j.verify(1011, peer, 1, &c));
        assert!(!j.verify(999, peer, 1, &c), "issued in the future");
        let late = j.issue(u64::MAX, peer, 1);
        assert!(j.verify(u64::MAX, peer, 1, &late));
    }

    #[test]
    fn tampered_or_misshapen_cookies_fail() {
        let j = jar();
        let peer = addr("192.0.2.7:4433");
        let c = j.issue(1000, peer, 1);
        for i in 0..COOKIE_LEN {
            for bit in 0..8 {
                let mut t = c;
                t[i] ^= 1 << bit;
                assert!(!j.verify(1000, peer, 1, &t), "flip byte {i} bit {bit}");
            }
        }
        assert!(!j.verify(1000, peer, 1, &c[..COOKIE_LEN - 1]));
        assert!(!j.verify(1000, peer, 1, &[c.as_slice(), &[0]].concat()));
        assert!(!j.verify(1000, peer, 1, &[]));
        assert!(
            !CookieJar::with_secret([4; 32]).verify(1000, peer, 1, &c),
            "other secret"
        );
    }

    #[test]
    fn rotation_keeps_previous_secret_for_one_rotation() {
        let mut j = jar();
        let peer = addr("198.51.100.1:1");
        let c0 = j.issue(100, peer, 9);
        j.rotate().unwrap();
        assert!(j.verify(100, peer, 9, &c0), "previous secret still valid");
        let c1 = j.issue(100, peer, 9);
        assert_ne!(c0, c1);
        assert!(j.verify(100, peer, 9, &c1));
        j.rotate().unwrap();
        assert!(!j.verify(100, peer, 9, &c0), "invalid after two rotations");
        assert!(j.verify(100, peer, 9, &c1));
    }
}
