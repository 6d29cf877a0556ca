//! The Noise IK handshake (`snow`): mutual authentication by static keys, where the initiator already knows the
//! responder's static key, with a pre-shared key mixed in (psk2) when one is configured.
//!
//! Two messages, one round trip:
//! - message 1 (initiator to responder): ephemeral key, encrypted static key, encrypted payload:
//!   [`MESSAGE1_OVERHEAD`] + payload bytes;
//! - message 2 (responder to initiator): ephemeral key, encrypted payload: [`MESSAGE2_OVERHEAD`] + payload bytes.
//!
//! A message 1 can be replayed by anyone who saw it (a property of IK); a replay yields a responder state that
//! nobody can complete, so the caller must not act on message 1's payload before the connection is confirmed,
//! and must rate-limit handshakes behind a [`super::cookie::CookieJar`].
//!
//! The packet keys are the two halves of the Noise split: `snow` 0.10 exposes them only behind its
//! `risky-raw-split` feature, so they are taken here through a crypto resolver whose split ciphers remember the
//! key they are given (see `SplitCapture`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::HandshakeState;

use super::aead::PacketKey;
use super::error::CryptoError;
use super::keys::{is_weak_public, StaticKeypair, KEY_LEN};

/// Noise protocol name without a pre-shared key.
pub const NOISE_IK: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Noise protocol name with a pre-shared key mixed in at the end of message 2.
pub const NOISE_IK_PSK2: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Hashed into the handshake so that no other protocol's messages ever verify.
pub const PROLOGUE: &[u8] = b"popline v1";

/// Bytes message 1 adds to its payload: ephemeral key (32), encrypted static key (32 + 16), payload tag (16).
pub const MESSAGE1_OVERHEAD: usize = 32 + 32 + 16 + 16;
/// Bytes message 2 adds to its payload: ephemeral key (32), payload tag (16).
pub const MESSAGE2_OVERHEAD: usize = 32 + 16;
/// Largest handshake message Noise allows, in bytes.
pub const MAX_MESSAGE_LEN: usize = 65_535;

/// Directional packet keys from the handshake split: the initiator's `send` is the responder's `recv`.
#[derive(Debug)]
pub struct SessionKeys {
    /// Seals the packets this side sends.
    pub send: PacketKey,
    /// Opens the packets this side receives.
    pub recv: PacketKey,
}

impl SessionKeys {
    /// Keys that neither encrypt nor authenticate, for when the configuration turns encryption off explicitly.
    pub fn plaintext() -> Self {
        Self {
            send: PacketKey::plaintext(),
            recv: PacketKey::plaintext(),
        }
    }
}

/// The initiator's side between sending message 1 and reading message 2.
pub struct InitiatorHandshake {
    state: HandshakeState,
    split: SplitSlots,
}

impl InitiatorHandshake {
    /// Builds message 1 to the responder whose static public key is `remote_static`, carrying `payload`
    /// (encrypted; a few dozen bytes of transport parameters). `psk` must match the responder's.
    pub fn start(
        local: &StaticKeypair,
        remote_static: &[u8; 32],
        psk: Option<&[u8; 32]>,
        payload: &[u8],
    ) -> Result<(Self, Vec<u8>), CryptoError> {
        if is_weak_public(&local.private, remote_static)? {
            return Err(CryptoError::BadKey);
        }
        let (mut state, split) = build(local, Some(remote_static), psk)?;
        let message = write(&mut state, payload, MESSAGE1_OVERHEAD)?;
        Ok((Self { state, split }, message))
    }

    /// Reads message 2; returns the session keys and the responder's payload.
    pub fn finish(mut self, message2: &[u8]) -> Result<(SessionKeys, Vec<u8>), CryptoError> {
        let payload = read(&mut self.state, message2)?;
        let (initiator_to_responder, responder_to_initiator) = take_split(&self.state, &self.split)?;
        let keys = SessionKeys {
            send: PacketKey::new(initiator_to_responder)?,
            recv: PacketKey::new(responder_to_initiator)?,
        };
        Ok((keys, payload))
    }
}

impl std::fmt::Debug for InitiatorHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitiatorHandshake").finish_non_exhaustive()
    }
}

/// The responder's side between reading message 1 and writing message 2.
pub struct ResponderHandshake {
    state: HandshakeState,
    split: SplitSlots,
}

impl ResponderHandshake {
    /// Reads message 1; returns the initiator's static public key (the caller decides whether it is authorized
    /// before answering) and its payload.
    pub fn read_init(
        local: &StaticKeypair,
        psk: Option<&[u8; 32]>,
        message1: &[u8],
    ) -> Result<(Self, [u8; 32], Vec<u8>), CryptoError> {
        let (mut state, split) = build(local, None, psk)?;
        let payload = read(&mut state, message1)?;
        let remote: [u8; KEY_LEN] = state
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| CryptoError::Handshake("no initiator static key".into()))?;
        // A small-order "static key" needs no private key: no identity may be one.
        if is_weak_public(&local.private, &remote)? {
            return Err(CryptoError::BadKey);
        }
        Ok((Self { state, split }, remote, payload))
    }

    /// Writes message 2 carrying `payload` (encrypted); returns the session keys and the message.
    pub fn respond(mut self, payload: &[u8]) -> Result<(SessionKeys, Vec<u8>), CryptoError> {
        let message = write(&mut self.state, payload, MESSAGE2_OVERHEAD)?;
        let (initiator_to_responder, responder_to_initiator) = take_split(&self.state, &self.split)?;
        let keys = SessionKeys {
            send: PacketKey::new(responder_to_initiator)?,
            recv: PacketKey::new(initiator_to_responder)?,
        };
        Ok((keys, message))
    }
}

impl std::fmt::Debug for ResponderHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponderHandshake").finish_non_exhaustive()
    }
}

fn build(
    local: &StaticKeypair,
    remote_static: Option<&[u8; 32]>,
    psk: Option<&[u8; 32]>,
) -> Result<(HandshakeState, SplitSlots), CryptoError> {
    let name = if psk.is_some() { NOISE_IK_PSK2 } else { NOISE_IK };
    let params: NoiseParams = name.parse()?;
    let split = SplitSlots::default();
    let resolver = SplitCapture {
        inner: DefaultResolver,
        ciphers_resolved: AtomicUsize::new(0),
        split: split.clone(),
    };
    let mut builder = snow::Builder::with_resolver(params, Box::new(resolver))
        .prologue(PROLOGUE)?
        .local_private_key(&local.private)?;
    if let Some(psk) = psk {
        builder = builder.psk(2, psk)?;
    }
    let state = match remote_static {
        Some(rs) => builder.remote_public_key(rs)?.build_initiator()?,
        None => builder.build_responder()?,
    };
    Ok((state, split))
}

fn write(state: &mut HandshakeState, payload: &[u8], overhead: usize) -> Result<Vec<u8>, CryptoError> {
    let len = payload.len().saturating_add(overhead);
    if len > MAX_MESSAGE_LEN {
        return Err(CryptoError::Handshake(format!(
            "payload of {} bytes does not fit in a handshake message",
            payload.len()
        )));
    }
    let mut message = vec![0u8; len];
    let written = state.write_message(payload, &mut message)?;
    message.truncate(written);
    Ok(message)
}

fn read(state: &mut HandshakeState, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(CryptoError::Handshake(format!(
            "message of {} bytes is too long",
            message.len()
        )));
    }
    // The payload is never longer than the message that carries it.
    let mut payload = vec![0u8; message.len()];
    let len = state.read_message(message, &mut payload)?;
    payload.truncate(len);
    Ok(payload)
}

/// Both halves of the split: (initiator to responder, responder to initiator).
fn take_split(state: &HandshakeState, split: &SplitSlots) -> Result<([u8; 32], [u8; 32]), CryptoError> {
    if !state.is_handshake_finished() {
        return Err(CryptoError::Handshake("handshake not finished".into()));
    }
    let slots = split.lock();
    match *slots {
        // Each split cipher is keyed exactly once, by Split(). Anything else means snow resolved its ciphers in
        // another order than expected: refuse rather than guess.
        [SplitSlot {
            key: Some(k1),
            sets: 1,
        }, SplitSlot {
            key: Some(k2),
            sets: 1,
        }] => Ok((k1, k2)),
        _ => Err(CryptoError::Handshake("split keys unavailable".into())),
    }
}

#[derive(Clone, Copy, Default)]
struct SplitSlot {
    key: Option<[u8; 32]>,
    /// How often the cipher was keyed.
    sets: u32,
}

/// Where the two split ciphers leave their keys.
#[derive(Clone, Default)]
struct SplitSlots(Arc<Mutex<[SplitSlot; 2]>>);

impl SplitSlots {
    fn lock(&self) -> std::sync::MutexGuard<'_, [SplitSlot; 2]> {
        // Nothing can panic while the lock is held, but a poisoned lock still holds plain data.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `snow`'s default resolver, except that the second and third ciphers it resolves (the ones `Builder` makes
/// for the transport `CipherStates`, which `Split()` keys) also record their key in [`SplitSlots`]. The first
/// is the handshake's own cipher and is left alone.
struct SplitCapture {
    inner: DefaultResolver,
    ciphers_resolved: AtomicUsize,
    split: SplitSlots,
}

impl CryptoResolver for SplitCapture {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.inner.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        self.inner.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.inner.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        let cipher = self.inner.resolve_cipher(choice)?;
        let slot = match self.ciphers_resolved.fetch_add(1, Ordering::Relaxed) {
            1 => 0,
            2 => 1,
            _ => return Some(cipher),
        };
        Some(Box::new(CapturingCipher {
            inner: cipher,
            slot,
            split: self.split.clone(),
        }))
    }
}

struct CapturingCipher {
    inner: Box<dyn Cipher>,
    slot: usize,
    split: SplitSlots,
}

impl Cipher for CapturingCipher {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn set(&mut self, key: &[u8; 32]) {
        self.inner.set(key);
        if let Some(slot) = self.split.lock().get_mut(self.slot) {
            slot.key = Some(*key);
            slot.sets = slot.sets.saturating_add(1);
        }
    }

    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        self.inner.encrypt(nonce, authtext, plaintext, out)
    }

    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        self.inner.decrypt(nonce, authtext, ciphertext, out)
    }

    fn rekey(&mut self) {
        // Not used: the transport never runs snow's transport mode.
        self.inner.rekey();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::aead::TAG_LEN;
    use proptest::prelude::*;

    struct Pair {
        client: StaticKeypair,
        server: StaticKeypair,
    }

    fn pair() -> Pair {
        Pair {
            client: StaticKeypair::from_private([1; 32]).unwrap(),
            server: StaticKeypair::from_private([2; 32]).unwrap(),
        }
    }

    const PSK: [u8; 32] = [9; 32];

    fn handshake(p: &Pair, psk: Option<&[u8; 32]>) -> (SessionKeys, SessionKeys) {
        let (init, m1) =
            InitiatorHandshake::start(&p.client, &p.server.public, psk, b"client params").unwrap();
        let (resp, client_static, payload1) = ResponderHandshake::read_init(&p.server, psk, &m1).unwrap();
        assert_eq!(client_static, p.client.public);
        assert_eq!(payload1, b"client params");
        let (server_keys, m2) = resp.respond(b"server params").unwrap();
        let (client_keys, payload2) = init.finish(&m2).unwrap();
        assert_eq!(payload2, b"server params");
        (client_keys, server_keys)
    }

    fn assert_keys_match(client: &SessionKeys, server: &SessionKeys) {
        for (tx, rx, pn) in [
            (&client.send, &server.recv, 1u64),
            (&server.send, &client.recv, 2),
        ] {
            let mut buf = b"HDRpayload".to_vec();
            tx.seal(pn, &mut buf, 3).unwrap();
            assert_eq!(buf.len(), 10 + TAG_LEN);
            assert_eq!(rx.open(pn, &mut buf, 3).unwrap(), 7);
            assert_eq!(&buf[3..10], b"payload");
        }
        // Directions differ: a side cannot open what it sent itself.
        let mut buf = b"HDRpayload".to_vec();
        client.send.seal(3, &mut buf, 3).unwrap();
        assert!(client.recv.open(3, &mut buf, 3).is_err());
    }

    #[test]
    fn round_trip_without_psk() {
        let p = pair();
        let (c, s) = handshake(&p, None);
        assert_keys_match(&c, &s);
    }

    #[test]
    fn round_trip_with_psk() {
        let p = pair();
        let (c, s) = handshake(&p, Some(&PSK));
        assert_keys_match(&c, &s);
        let (c2, _) = handshake(&p, Some(&PSK));
        // Fresh ephemerals: fresh keys every handshake.
        let mut buf = b"HDRpayload".to_vec();
        c2.send.seal(1, &mut buf, 3).unwrap();
        assert!(s.recv.open(1, &mut buf, 3).is_err());
    }

    #[test]
    fn next_generation_agrees_across_sides() {
        let p = pair();
        let (c, s) = handshake(&p, None);
        let (c1, s1) = (
            c.send.next_generation().unwrap(),
            s.recv.next_generation().unwrap(),
        );
        let mut buf = b"HDRpayload".to_vec();
        c1.seal(5, &mut buf, 3).unwrap();
        assert!(s.recv.open(5, &mut buf.clone(), 3).is_err());
        assert_eq!(s1.open(5, &mut buf, 3).unwrap(), 7);
    }

    #[test]
    fn wire_sizes() {
        let p = pair();
        let payload = [7u8; 32];
        for psk in [None, Some(&PSK)] {
            let (init, m1) = InitiatorHandshake::start(&p.client, &p.server.public, psk, &payload).unwrap();
            assert_eq!(m1.len(), 32 + MESSAGE1_OVERHEAD);
            assert_eq!(m1.len(), 128);
            let (resp, _, _) = ResponderHandshake::read_init(&p.server, psk, &m1).unwrap();
            let (_, m2) = resp.respond(&payload).unwrap();
            assert_eq!(m2.len(), 32 + MESSAGE2_OVERHEAD);
            assert_eq!(m2.len(), 80);
            init.finish(&m2).unwrap();
        }
    }

    /// The captured keys really are snow's split: what snow's own transport mode encrypts, ChaCha20-Poly1305
    /// under the captured key opens. Guards the resolver's assumption about snow's cipher order.
    #[test]
    fn captured_keys_are_the_noise_split() {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
        let p = pair();
        let (mut init, split_i) = build(&p.client, Some(&p.server.public), Some(&PSK)).unwrap();
        let (mut resp, split_r) = build(&p.server, None, Some(&PSK)).unwrap();
        let m1 = write(&mut init, b"", MESSAGE1_OVERHEAD).unwrap();
        read(&mut resp, &m1).unwrap();
        let m2 = write(&mut resp, b"", MESSAGE2_OVERHEAD).unwrap();
        read(&mut init, &m2).unwrap();
        let (i1, i2) = take_split(&init, &split_i).unwrap();
        assert_eq!((i1, i2), take_split(&resp, &split_r).unwrap());
        assert_ne!(i1, i2);

        let mut transport = init.into_transport_mode().unwrap();
        let mut ct = vec![0u8; 64];
        let n = transport.write_message(b"split check", &mut ct).unwrap();
        ct.truncate(n);
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &i1).unwrap());
        // Noise ChaChaPoly nonce: 4 zero bytes, then the 64-bit counter little-endian (counter 0 here).
        let nonce = Nonce::assume_unique_for_key([0; 12]);
        let pt = key.open_in_place(nonce, Aad::empty(), &mut ct).unwrap();
        assert_eq!(pt, b"split check");
    }

    #[test]
    fn wrong_responder_key_fails() {
        let p = pair();
        let impostor = StaticKeypair::from_private([3; 32]).unwrap();
        let (_, m1) = InitiatorHandshake::start(&p.client, &impostor.public, None, b"x").unwrap();
        assert!(ResponderHandshake::read_init(&p.server, None, &m1).is_err());

        // An impostor responder that somehow got message 1 meant for it cannot answer as the real server.
        let (init, m1) = InitiatorHandshake::start(&p.client, &p.server.public, None, b"x").unwrap();
        let (resp, _, _) = ResponderHandshake::read_init(&p.server, None, &m1).unwrap();
        let (_, m2) = resp.respond(b"y").unwrap();
        let (other_init, _) = InitiatorHandshake::start(&p.client, &p.server.public, None, b"x").unwrap();
        assert!(
            other_init.finish(&m2).is_err(),
            "message 2 is bound to its message 1"
        );
        init.finish(&m2).unwrap();
    }

    #[test]
    fn psk_mismatch_fails() {
        let p = pair();
        let other = [8u8; 32];
        for (ipsk, rpsk) in [(Some(&PSK), Some(&other)), (Some(&PSK), None), (None, Some(&PSK))] {
            let (init, m1) = InitiatorHandshake::start(&p.client, &p.server.public, ipsk, b"x").unwrap();
            // psk2 is mixed in after message 1, so a psk mismatch shows in message 2 (or message 1 when the
            // protocol names differ).
            match ResponderHandshake::read_init(&p.server, rpsk, &m1) {
                Err(_) => {}
                Ok((resp, _, _)) => {
                    let (_, m2) = resp.respond(b"y").unwrap();
                    assert!(init.finish(&m2).is_err());
                }
            }
        }
    }

    #[test]
    fn tampered_messages_fail() {
        let p = pair();
        let (_, m1) = InitiatorHandshake::start(&p.client, &p.server.public, Some(&PSK), b"params").unwrap();
        for i in 0..m1.len() {
            let mut t = m1.clone();
            t[i] ^= 0x80;
            assert!(
                ResponderHandshake::read_init(&p.server, Some(&PSK), &t).is_err(),
                "byte {i}"
            );
        }
        let (init, m1) =
            InitiatorHandshake::start(&p.client, &p.server.public, Some(&PSK), b"params").unwrap();
        let (resp, _, _) = ResponderHandshake::read_init(&p.server, Some(&PSK), &m1).unwrap();
        let (_, m2) = resp.respond(b"answer").unwrap();
        for i in 0..m2.len() {
            let (init_i, _) =
                InitiatorHandshake::start(&p.client, &p.server.public, Some(&PSK), b"").unwrap();
            let mut t = m2.clone();
            t[i] ^= 0x80;
            assert!(init_i.finish(&t).is_err(), "byte {i}");
        }
        let mut t = m2.clone();
        t[0] ^= 1;
        assert!(init.finish(&t).is_err());
    }

    #[test]
    fn other_prologue_fails() {
        let p = pair();
        let params: NoiseParams = NOISE_IK.parse().unwrap();
        let mut other = snow::Builder::new(params)
            .prologue(b"something else")
            .unwrap()
            .local_private_key(&p.client.private)
            .unwrap()
            .remote_public_key(&p.server.public)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut m1 = vec![0u8; 200];
        let n = other.write_message(b"hi", &mut m1).unwrap();
        m1.truncate(n);
        assert!(ResponderHandshake::read_init(&p.server, None, &m1).is_err());
    }

    #[test]
    fn truncated_and_garbage_messages_fail() {
        let p = pair();
        let (init, m1) = InitiatorHandshake::start(&p.client, &p.server.public, None, b"params").unwrap();
        for len in 0..m1.len() {
            assert!(
                ResponderHandshake::read_init(&p.server, None, &m1[..len]).is_err(),
                "len {len}"
            );
        }
        assert!(ResponderHandshake::read_init(&p.server, None, &vec![0u8; MAX_MESSAGE_LEN + 1]).is_err());
        let (resp, _, _) = ResponderHandshake::read_init(&p.server, None, &m1).unwrap();
        let (_, m2) = resp.respond(b"answer").unwrap();
        assert!(init.finish(&m2[..m2.len() - 1]).is_err());
        let (init, _) = InitiatorHandshake::start(&p.client, &p.server.public, None, b"params").unwrap();
        assert!(init.finish(&[]).is_err());
    }

    #[test]
    fn weak_keys_and_oversized_payloads_rejected() {
        let p = pair();
        assert!(matches!(
            InitiatorHandshake::start(&p.client, &[0; 32], None, b""),
            Err(CryptoError::BadKey)
        ));
        let big = vec![0u8; MAX_MESSAGE_LEN];
        assert!(InitiatorHandshake::start(&p.client, &p.server.public, None, &big).is_err());
        let max = vec![0u8; MAX_MESSAGE_LEN - MESSAGE1_OVERHEAD];
        let (_, m1) = InitiatorHandshake::start(&p.client, &p.server.public, None, &max).unwrap();
        assert_eq!(m1.len(), MAX_MESSAGE_LEN);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn read_init_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let p = pair();
            prop_assert!(ResponderHandshake::read_init(&p.server, None, &bytes).is_err());
            prop_assert!(ResponderHandshake::read_init(&p.server, Some(&PSK), &bytes).is_err());
        }

        #[test]
        fn finish_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let p = pair();
            let (init, _) = InitiatorHandshake::start(&p.client, &p.server.public, Some(&PSK), b"x").unwrap();
            prop_assert!(init.finish(&bytes).is_err());
        }
    }
}
