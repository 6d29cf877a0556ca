//! `cargo fuzz run rtmp_input`: a client's bytes through rml_rtmp's server handshake, then, read by read,
//! through `relay::rtmp::chunk_guard::ChunkGuard` (the chunk decoder `relay::rtmp::chunk` and the guard's
//! checks) and (only what it passes) rml_rtmp's `ServerSession`, which accepts every connect, publish and play
//! request. Stops at the first guard or session error. A crash here is input the guard (or its decoder)
//! passed and rml_rtmp could not survive, or a panic in the decoder itself.
//!
//! Input: byte 0 picks the handshake (even: a canned one, so the fuzzer starts in the session; odd: the
//! input's own bytes), byte 1 how the rest is cut into reads, the rest is what the client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::rtmp::chunk_guard::{ChunkGuard, GuardLimits};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};

/// Read sizes the input picks from (the last: whatever is left).
const READ_SIZES: [usize; 8] = [1, 2, 3, 7, 16, 128, 1500, usize::MAX];

/// RTMP handshake packet size (C1, C2).
const PACKET: usize = 1536;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let [mode, cut, rest @ ..] = data else { return };
    let mut reads = Reads {
        rest,
        pattern: *cut,
        count: 0,
    };
    let mut handshake = Handshake::new(PeerType::Server);
    let leftover = if mode & 1 == 0 {
        // C0 = 3, an all-zero C1 (no digest: the original handshake), any C2.
        let mut canned = vec![3u8];
        canned.resize(1 + 2 * PACKET, 0);
        match handshake.process_bytes(&canned) {
            Ok(HandshakeProcessResult::Completed { remaining_bytes, .. }) => remaining_bytes,
            _ => return,
        }
    } else {
        loop {
            let Some(read) = reads.next() else { return };
            match handshake.process_bytes(read) {
                Ok(HandshakeProcessResult::InProgress { .. }) => {}
                Ok(HandshakeProcessResult::Completed { remaining_bytes, .. }) => break remaining_bytes,
                Err(_) => return,
            }
        }
    };

    let mut guard = ChunkGuard::new(GuardLimits::default());
    let Ok((mut session, _)) = ServerSession::new(ServerSessionConfig::new()) else {
        return;
    };
    if !feed(&mut guard, &mut session, &leftover) {
        return;
    }
    while let Some(read) = reads.next() {
        if !feed(&mut guard, &mut session, read) {
            return;
        }
    }
}

/// One read: the guard first, then the session. `false` when either refused it.
fn feed(guard: &mut ChunkGuard, session: &mut ServerSession, read: &[u8]) -> bool {
    if read.is_empty() {
        return true;
    }
    if guard.inspect(read).is_err() {
        return false;
    }
    let Ok(mut results) = session.handle_input(read) else {
        return false;
    };
    while let Some(result) = results.pop() {
        if let ServerSessionResult::RaisedEvent(
            ServerSessionEvent::ConnectionRequested { request_id, .. }
            | ServerSessionEvent::PublishStreamRequested { request_id, .. }
            | ServerSessionEvent::PlayStreamRequested { request_id, .. },
        ) = result
        {
            match session.accept_request(request_id) {
                Ok(more) => results.extend(more),
                Err(_) => return false,
            }
        }
    }
    true
}

/// The input cut into reads of sizes the `pattern` byte picks.
struct Reads<'a> {
    rest: &'a [u8],
    pattern: u8,
    count: u32,
}

impl<'a> Iterator for Reads<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let pick = usize::from(self.pattern.rotate_right(self.count % 8)) % READ_SIZES.len();
        self.count = self.count.wrapping_add(1);
        let size = READ_SIZES
            .get(pick)
            .copied()
            .unwrap_or(usize::MAX)
            .min(self.rest.len());
        let (read, rest) = self.rest.split_at(size);
        self.rest = rest;
        Some(read)
    }
}
