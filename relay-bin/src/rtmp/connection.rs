//! [`RtmpConnection`]: one client's RTMP protocol state, sans-IO: handshake, then the chunk guard in front
//! of rml_rtmp's `ServerSession`.
//!
//! The core feeds it the bytes read from the socket and gets back session events and the bytes to send.
//! Every byte after the handshake passes [`ChunkGuard::inspect`] before rml_rtmp sees it, so what rml cannot
//! survive (interleaved chunk streams, hostile sizes, deep AMF) ends this one session with a clear error.

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};

use crate::rtmp::chunk_guard::{ChunkGuard, GuardError, GuardLimits};

/// Why a client's RTMP session ended in error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The RTMP handshake failed (bad version byte, bad digest, ...).
    #[error("RTMP handshake failed: {0:?}")]
    Handshake(HandshakeError),
    /// The chunk stream was refused by the guard.
    #[error("refused RTMP input: {0}")]
    Guard(#[from] GuardError),
    /// rml_rtmp's session refused a message.
    #[error("RTMP session error: {0:?}")]
    Session(ServerSessionError),
}

enum Phase {
    Handshake(Box<Handshake>),
    Session(Box<ServerSession>),
    /// After an error: nothing more is parsed.
    Failed,
}

/// One client's protocol state.
pub struct RtmpConnection {
    phase: Phase,
    guard: ChunkGuard,
    chunk_size: u32,
}

impl std::fmt::Debug for RtmpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            Phase::Handshake(_) => "handshake",
            Phase::Session(_) => "session",
            Phase::Failed => "failed",
        };
        f.debug_struct("RtmpConnection").field("phase", &phase).finish()
    }
}

impl RtmpConnection {
    /// A connection waiting for the client's handshake; outbound chunk size `chunk_size`.
    pub fn new(limits: GuardLimits, chunk_size: u32) -> RtmpConnection {
        RtmpConnection {
            phase: Phase::Handshake(Box::new(Handshake::new(PeerType::Server))),
            guard: ChunkGuard::new(limits),
            chunk_size,
        }
    }

    /// The handshake is done and the session is up.
    pub fn in_session(&self) -> bool {
        matches!(self.phase, Phase::Session(_))
    }

    /// Feeds bytes read from the client. Bytes to send go to `out` in order; session events to `events`.
    pub fn feed(
        &mut self,
        input: &[u8],
        events: &mut Vec<ServerSessionEvent>,
        out: &mut Vec<Bytes>,
    ) -> Result<(), ConnectionError> {
        let result = self.feed_inner(input, events, out);
        if result.is_err() {
            self.phase = Phase::Failed;
        }
        result
    }

    fn feed_inner(
        &mut self,
        input: &[u8],
        events: &mut Vec<ServerSessionEvent>,
        out: &mut Vec<Bytes>,
    ) -> Result<(), ConnectionError> {
        let remaining = match &mut self.phase {
            Phase::Failed => return Ok(()),
            Phase::Session(_) => None,
            Phase::Handshake(handshake) => match handshake.process_bytes(input) {
                Err(error) => return Err(ConnectionError::Handshake(error)),
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    push(out, response_bytes);
                    return Ok(());
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    push(out, response_bytes);
                    let mut config = ServerSessionConfig::new();
                    config.chunk_size = self.chunk_size;
                    let (session, results) = ServerSession::new(config).map_err(ConnectionError::Session)?;
                    self.phase = Phase::Session(Box::new(session));
                    collect(results, events, out);
                    Some(remaining_bytes)
                }
            },
        };
        let input = remaining.as_deref().unwrap_or(input);
        if input.is_empty() {
            return Ok(());
        }
        self.guard.inspect(input)?;
        if let Phase::Session(session) = &mut self.phase {
            let results = session.handle_input(input).map_err(ConnectionError::Session)?;
            collect(results, events, out);
        }
        Ok(())
    }

    /// Accepts a connect, publish or play request.
    pub fn accept(
        &mut self,
        request_id: u32,
        events: &mut Vec<ServerSessionEvent>,
        out: &mut Vec<Bytes>,
    ) -> Result<(), ConnectionError> {
        let Phase::Session(session) = &mut self.phase else {
            return Ok(());
        };
        let results = session
            .accept_request(request_id)
            .map_err(ConnectionError::Session)?;
        let first = out.len();
        collect(results, events, out);
        let mut index = first;
        while let Some(packet) = out.get_mut(index) {
            if is_data_start_notice(packet) {
                out.remove(index);
                continue;
            }
            zero_data_message_timestamp(packet);
            index += 1;
        }
        Ok(())
    }

    /// Refuses a request with an RTMP status `code` (e.g. `NetStream.Publish.BadName`) and a description.
    pub fn reject(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
        out: &mut Vec<Bytes>,
    ) -> Result<(), ConnectionError> {
        let Phase::Session(session) = &mut self.phase else {
            return Ok(());
        };
        let results = session
            .reject_request(request_id, code, description)
            .map_err(ConnectionError::Session)?;
        collect(results, &mut Vec::new(), out);
        Ok(())
    }

    /// Tells a player its stream is over (StreamEOF and `NetStream.Play.Complete`).
    pub fn finish_playing(&mut self, stream_id: u32, out: &mut Vec<Bytes>) {
        if let Phase::Session(session) = &mut self.phase {
            if let Ok(packet) = session.finish_playing(stream_id) {
                push(out, packet.bytes);
            }
        }
    }

    /// Messages the guard has passed.
    pub fn messages_in(&self) -> u64 {
        self.guard.messages()
    }
}

/// rml_rtmp stamps the `|RtmpSampleAccess` data message it sends on play with its session clock; ffmpeg's FLV
/// demuxer treats a data message with a non-zero timestamp as a stream of its own (a phantom subtitle track).
/// Servers (nginx-rtmp, SRS) send it at 0: a full (type 0) header of a data message gets timestamp 0.
fn zero_data_message_timestamp(packet: &mut Bytes) {
    let bytes = packet.as_ref();
    let full_header = bytes.first().is_some_and(|b| b >> 6 == 0 && b & 0x3f >= 2);
    let data_message = bytes.get(7) == Some(&18);
    let extended = bytes.get(1..4) == Some(&[0xff, 0xff, 0xff][..]);
    if full_header && data_message && !extended {
        let mut patched = bytes.to_vec();
        if let Some(field) = patched.get_mut(1..4) {
            field.copy_from_slice(&[0, 0, 0]);
        }
        *packet = Bytes::from(patched);
    }
}

/// rml_rtmp also sends `onStatus(NetStream.Data.Start)` as a data message on play: ffmpeg turns it into a
/// phantom data track, and nginx-rtmp does not send it. It is the last message rml writes on its data chunk
/// stream (the node writes metadata on its own), so leaving it out cannot break rml's header compression.
fn is_data_start_notice(packet: &Bytes) -> bool {
    // A type 0 or type 1 chunk header (one-byte csid) carries the message type at byte 7.
    let typed_header = packet.first().is_some_and(|b| b >> 6 <= 1 && b & 0x3f >= 2);
    let data_message = packet.get(7) == Some(&18);
    typed_header && data_message && packet.windows(8).any(|w| w == b"onStatus")
}

fn push(out: &mut Vec<Bytes>, bytes: Vec<u8>) {
    if !bytes.is_empty() {
        out.push(Bytes::from(bytes));
    }
}

fn collect(results: Vec<ServerSessionResult>, events: &mut Vec<ServerSessionEvent>, out: &mut Vec<Bytes>) {
    for result in results {
        match result {
            ServerSessionResult::OutboundResponse(packet) => push(out, packet.bytes),
            ServerSessionResult::RaisedEvent(event) => events.push(event),
            ServerSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
}
