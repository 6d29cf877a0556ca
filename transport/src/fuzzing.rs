//! Entry points for fuzzing: each takes arbitrary bytes and must never panic. The `cargo fuzz` targets in
//! `transport/fuzz/` call them, and `tests/fuzz_smoke.rs` runs them over generated and mutated inputs on
//! every CI run.

use crate::config::EndpointConfig;
use crate::crypto::{ResponderHandshake, StaticKeypair};
use crate::endpoint::Endpoint;
use crate::wire::frame::{Frame, Frames};
use crate::wire::packet;
use bytes::BytesMut;
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
