//! Entry points for fuzzing: each takes arbitrary bytes and must never panic. The `cargo fuzz` targets in
//! `transport/fuzz/` call them, and `tests/fuzz_smoke.rs` runs them over generated and mutated inputs on
//! every CI run.

use crate::config::{ConnectionConfig, EndpointConfig};
use crate::connection::{Connection, Event};
use crate::crypto::{ResponderHandshake, StaticKeypair};
use crate::endpoint::{ConnectionHandle, Endpoint};
use crate::media::{DropReason, MediaFrame, MediaKind, StreamId};
use crate::wire::frame::{encode_ping, AckFrame, DroppedNotice, FragmentHeader, Frame, Frames};
use crate::wire::packet::{self, Packet};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Decodes `data` as a datagram header and as a frame payload. Every fragment range returned must lie
/// inside the input.
pub fn packet_decoder(data: &[u8]) {
    let _ = packet::parse(data);
    let _ = packet::peek_dst_cid(data);
    for f in Frames::new(data) {
        if let Ok(Frame::Fragment(_, range)) = f {
            assert!(range.end <= data.len(), "fragment range outside the payload");
        }
    }
}

/// Reads `data` as a Noise message 1 on a responder with a fixed key.
pub fn handshake(data: &[u8]) {
    let Ok(keys) = StaticKeypair::from_private([7; 32]) else {
        return;
    };
    let _ = ResponderHandshake::read_init(&keys, None, data);
    let _ = ResponderHandshake::read_init(&keys, Some(&[9; 32]), data);
}

/// Feeds `data`, split into datagrams at 0xff bytes, to a server endpoint that does not demand cookies (so
/// handshake parsing is reached), from two source addresses, with timers running in between.
pub fn endpoint(data: &[u8]) {
    let Ok(keys) = StaticKeypair::from_private([7; 32]) else {
        return;
    };
    let mut cfg = EndpointConfig::new(keys);
    cfg.require_cookie = false;
    // Any key that completes message 1 gets as far as the fuzzer can take it.
    cfg.accept_any_peer = true;
    let now = Instant::now();
    let Ok(mut ep) = Endpoint::new(cfg, now) else {
        return;
    };
    let peers: [SocketAddr; 2] = [
        SocketAddr::from(([127, 0, 0, 1], 1000)),
        SocketAddr::from(([127, 0, 0, 2], 2000)),
    ];
    let mut buf = Vec::new();
    let mut t = now;
    for (i, chunk) in data.split(|&b| b == 0xff).enumerate() {
        t += Duration::from_millis(3);
        ep.handle_datagram(t, peers[i % 2], BytesMut::from(chunk));
        ep.handle_timeout(t);
        while ep.poll_transmit(t, &mut buf).is_some() {}
        while ep.poll_event().is_some() {}
    }
}

/// Two endpoints (fixed keys, the test AEAD of [`crate::crypto::PacketKey::test_mode`], a key update every 8
/// packets) with their handshake done: the stage for [`connection`].
struct Established {
    now: Instant,
    client: Endpoint,
    server: Endpoint,
    client_conn: ConnectionHandle,
    server_conn: ConnectionHandle,
    client_cid: u64,
    server_cid: u64,
    buf: Vec<u8>,
}

const CLIENT_ADDR: ([u8; 4], u16) = ([10, 0, 0, 1], 1000);
const SERVER_ADDR: ([u8; 4], u16) = ([10, 0, 0, 2], 2000);

impl Established {
    fn new() -> Option<Self> {
        let client_keys = StaticKeypair::from_private([3; 32]).ok()?;
        let server_keys = StaticKeypair::from_private([7; 32]).ok()?;
        let connection = ConnectionConfig {
            test_aead: true,
            key_update_packets: 8,
            ..ConnectionConfig::default()
        };
        let mut scfg = EndpointConfig::new(server_keys.clone());
        scfg.authorized_peers = vec![client_keys.public];
        scfg.require_cookie = false;
        scfg.connection = connection.clone();
        let mut ccfg = EndpointConfig::new(client_keys);
        ccfg.accept_incoming = false;
        ccfg.connection = connection;
        let now = Instant::now();
        let mut client = Endpoint::new(ccfg, now).ok()?;
        let server = Endpoint::new(scfg, now).ok()?;
        let client_conn = client
            .connect(now, SocketAddr::from(SERVER_ADDR), server_keys.public)
            .ok()?;
        let mut e = Established {
            now,
            client,
            server,
            client_conn,
            server_conn: client_conn,
            client_cid: 0,
            server_cid: 0,
            buf: Vec::new(),
        };
        let mut server_conn = None;
        for _ in 0..8 {
            e.exchange(0);
            while let Some((h, ev)) = e.server.poll_event() {
                if matches!(ev, Event::Connected { .. }) {
                    server_conn = Some(h);
                }
            }
            while e.client.poll_event().is_some() {}
            if server_conn.is_some() {
                break;
            }
        }
        e.server_conn = server_conn?;
        e.client_cid = e.client.connection(e.client_conn)?.local_cid();
        e.server_cid = e.server.connection(e.server_conn)?.local_cid();
        Some(e)
    }

    /// Moves what both endpoints send to each other; a set bit `i` of `drop_mask` loses the i-th datagram.
    fn exchange(&mut self, drop_mask: u64) {
        let (c, s) = (SocketAddr::from(CLIENT_ADDR), SocketAddr::from(SERVER_ADDR));
        let mut i = 0u32;
        for _ in 0..64 {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf) {
                moved = true;
                if drop_mask.checked_shr(i).unwrap_or(0) & 1 == 0 {
                    let d = BytesMut::from(&self.buf[..t.size]);
                    self.server.handle_datagram(self.now, c, d);
                }
                i += 1;
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf) {
                moved = true;
                if drop_mask.checked_shr(i).unwrap_or(0) & 1 == 0 {
                    let d = BytesMut::from(&self.buf[..t.size]);
                    self.client.handle_datagram(self.now, s, d);
                }
                i += 1;
            }
            if !moved {
                break;
            }
        }
    }

    fn advance(&mut self, by: Duration, drop_mask: u64) {
        self.now += by;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.exchange(drop_mask);
        while self.client.poll_event().is_some() {}
        while self.server.poll_event().is_some() {}
    }

    /// A data packet for one side, sealed with the test AEAD at the generation its peer sends with plus
    /// `gen_delta` (0 = the current key), packet number near the peer's next one.
    fn inject(&mut self, to_server: bool, gen_delta: u8, pn_delta: i8, frames: &[u8]) {
        let from = if to_server { CLIENT_ADDR } else { SERVER_ADDR };
        self.inject_from(SocketAddr::from(from), to_server, gen_delta, pn_delta, frames);
    }

    /// [`Self::inject`] from any address (a migration when it is not the sender's).
    fn inject_from(&mut self, from: SocketAddr, to_server: bool, gen_delta: u8, pn_delta: i8, frames: &[u8]) {
        let (peer, peer_conn, dst_cid) = if to_server {
            (&self.client, self.client_conn, self.server_cid)
        } else {
            (&self.server, self.server_conn, self.client_cid)
        };
        let Some(st) = peer.connection_stats(peer_conn) else {
            return;
        };
        let generation = (st.key_updates as u32).wrapping_add(u32::from(gen_delta));
        let pn = st.packets_sent.saturating_add_signed(i64::from(pn_delta));
        let mut v = Vec::with_capacity(frames.len() + 32);
        packet::write_data_header(
            &mut v,
            &packet::DataHeader {
                dst_cid,
                packet_number: pn,
                key_phase: generation % 2 == 1,
            },
        );
        v.extend_from_slice(frames);
        v.extend_from_slice(&crate::crypto::PacketKey::test_tag_for(generation));
        let d = BytesMut::from(&v[..]);
        if to_server {
            self.server.handle_datagram(self.now, from, d);
        } else {
            self.client.handle_datagram(self.now, from, d);
        }
    }
}

/// Frames built from `bytes`, four at a time, so that random input makes well-formed frames: ACKs, fragments,
/// DROPPED notices, PINGs, tail probes, path challenges and responses.
fn synth_frames(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in bytes.chunks_exact(4) {
        let (a, b, x, y) = (c[0], c[1], c[2], c[3]);
        match a % 7 {
            0 => AckFrame {
                ack_delay_us: u64::from(b),
                ranges: vec![u64::from(x).saturating_sub(u64::from(y % 8))..=u64::from(x)],
            }
            .encode(&mut out),
            1 | 2 => {
                let frame_len = u32::from(x) * 4 + 1;
                let offset = (u32::from(y) * 3).min(frame_len - 1);
                let len = (frame_len - offset).min(u32::from(b % 64) + 1);
                FragmentHeader {
                    stream: u32::from(b % 3),
                    seq: u64::from(y % 16),
                    kind: MediaKind::from_code(a / 6 % 6).unwrap_or(MediaKind::Key),
                    frame_len,
                    offset,
                    age_us: u64::from(x) * 100,
                    budget_us: (b & 0x80 != 0).then_some(u64::from(y) * 1000),
                }
                .encode(&vec![b; len as usize], &mut out);
            }
            3 => DroppedNotice {
                stream: u32::from(b % 3),
                seq: u64::from(x % 16),
                kind: MediaKind::from_code(y % 6).unwrap_or(MediaKind::Inter),
                reason: DropReason::Deadline,
            }
            .encode(&mut out),
            4 => crate::wire::frame::encode_path_challenge(
                u64::from_be_bytes([a, b, x, y, 0, 0, 0, 0]),
                &mut out,
            ),
            5 => crate::wire::frame::encode_tail_probe(&mut out),
            _ => encode_ping(&mut out),
        }
    }
    out
}

/// Drives an established connection pair (see `Established`) with records from `data`: injected packets
/// for either side (raw or synthesized frames, at the current, next or a later key generation, with packet
/// numbers near or behind the peer's, from the peer's address or another one), frames queued on either side,
/// and time passing with real traffic exchanged and some of it lost. Covers reassembly, recovery, ACK handling and key updates after the
/// handshake; nothing may panic.
pub fn connection(data: &[u8]) {
    let Some(mut e) = Established::new() else {
        return;
    };
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        let to_server = op & 0x08 == 0;
        let gen_delta = (op >> 4) & 0x03;
        let pn_delta = (i16::from(op >> 6) * 3 - 2) as i8;
        match op & 0x07 {
            0 => e.inject(to_server, gen_delta, pn_delta, body),
            1 => {
                let frames = synth_frames(body);
                e.inject(to_server, gen_delta, pn_delta, &frames);
            }
            2 => {
                let mask = body.iter().take(8).fold(0u64, |m, &b| m << 8 | u64::from(b));
                e.advance(Duration::from_millis(u64::from(*len) + 1), mask);
            }
            3 | 4 => {
                let (ep, h) = if op & 0x07 == 3 {
                    (&mut e.client, e.client_conn)
                } else {
                    (&mut e.server, e.server_conn)
                };
                let kind = MediaKind::from_code(op >> 5).unwrap_or(MediaKind::Inter);
                let frame = MediaFrame {
                    kind,
                    bytes: Bytes::from(vec![*len; usize::from(*len) * 37]),
                    capture: e.now,
                    budget: (op & 0x08 != 0).then_some(Duration::from_millis(u64::from(*len) * 4)),
                };
                let _ = ep.send_frame(h, StreamId(u32::from(op >> 6)), frame);
            }
            5 => {
                let d = BytesMut::from(body);
                e.server.handle_datagram(e.now, SocketAddr::from(CLIENT_ADDR), d);
            }
            6 => {
                // From another address: a migration, validated or not by what follows.
                let frames = synth_frames(body);
                let from = SocketAddr::from(([10, 0, 0, 3], 3000 + u16::from(op >> 6)));
                e.inject_from(from, to_server, gen_delta, 8, &frames);
            }
            _ => e.advance(Duration::from_micros(u64::from(*len) * 50), 0),
        }
    }
    for _ in 0..20 {
        e.advance(Duration::from_millis(50), 0);
    }
}

/// A client that sent its message 1 reads `data`, split into datagrams at 0xff bytes: each as a Handshake
/// packet (message 2) addressed to it, as a Retry, as a raw datagram, or XORed into the real message 2 of a
/// responder that read its message 1; timers run in between. Nothing may panic, and the client must never
/// report a connection for a message 2 the real server did not write.
pub fn handshake_response(data: &[u8]) {
    let Ok(client_keys) = StaticKeypair::from_private([3; 32]) else {
        return;
    };
    let Ok(server_keys) = StaticKeypair::from_private([7; 32]) else {
        return;
    };
    let mut cfg = EndpointConfig::new(client_keys);
    cfg.accept_incoming = false;
    let now = Instant::now();
    let Ok(mut client) = Endpoint::new(cfg, now) else {
        return;
    };
    let server = SocketAddr::from(SERVER_ADDR);
    let Ok(ch) = client.connect(now, server, server_keys.public) else {
        return;
    };
    let Some(cid) = client.connection(ch).map(Connection::local_cid) else {
        return;
    };
    let mut buf = Vec::new();
    let mut t = now;
    // The real message 2 for the client's latest message 1 (refreshed when the client starts over).
    let mut real: Option<Vec<u8>> = None;
    for (i, chunk) in data.split(|&b| b == 0xff).enumerate() {
        while let Some(tx) = client.poll_transmit(t, &mut buf) {
            if let Ok(Packet::Initial { message, .. }) = packet::parse(&buf[..tx.size]) {
                real = ResponderHandshake::read_init(&server_keys, None, message)
                    .ok()
                    .and_then(|(r, _, _)| r.respond(b"popline/1").ok())
                    .map(|(_, m2)| m2);
            }
        }
        let mut out = Vec::new();
        match (i % 4, chunk.first()) {
            (0, _) => packet::write_handshake(&mut out, cid, 9, chunk),
            (1, _) => packet::write_retry(&mut out, cid, chunk),
            (2, Some(&sel)) if sel & 1 == 0 => {
                let mut m2 = real.clone().unwrap_or_default();
                for (m, c) in m2.iter_mut().zip(chunk) {
                    *m ^= c;
                }
                packet::write_handshake(&mut out, cid, 9, &m2);
            }
            _ => out.extend_from_slice(chunk),
        }
        client.handle_datagram(t, server, BytesMut::from(&out[..]));
        t += Duration::from_millis(40);
        client.handle_timeout(t);
        while let Some((_, ev)) = client.poll_event() {
            if let Event::Connected { peer_static } = ev {
                assert_eq!(peer_static, server_keys.public, "connected to someone else");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// The stage of [`connection`] is set: the handshake completes, and an injected packet authenticates
    /// (at the current key generation and the next one), so the fuzzer reaches what follows the handshake.
    #[test]
    fn the_connection_target_gets_past_the_handshake() {
        let mut e = Established::new().expect("the handshake completes");
        let received = |e: &Established| {
            e.server
                .connection_stats(e.server_conn)
                .map_or(0, |s| s.packets_received)
        };
        let before = received(&e);
        e.inject(true, 0, 5, &synth_frames(&[1, 0, 10, 0]));
        e.inject(true, 1, 6, &[0x01]);
        assert_eq!(received(&e), before + 2);
        let st = e.server.connection_stats(e.server_conn).unwrap_or_default();
        assert_eq!(st.auth_failures, 0, "{st:?}");
    }
}
