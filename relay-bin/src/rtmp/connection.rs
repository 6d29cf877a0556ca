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

use crate::rtmp::chunk::header::{BasicHeader, ChunkHeader, Parse, EXTENDED_TIMESTAMP_MARK};
use crate::rtmp::chunk_guard::{ChunkGuard, GuardError, GuardLimits};
use crate::rtmp::{message_type, wire};
use rml_amf0::Amf0Value;

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

    /// An `onStatus` error with `code` (e.g. `NetStream.Play.StreamNotFound`) and `description` for the
    /// player on message stream `stream_id`, as one command message with a full header on a chunk stream
    /// rml_rtmp does not use ([`wire::CSID_STATUS`]), so rml's header compression stays valid.
    pub fn play_error(&self, stream_id: u32, code: &str, description: &str) -> Bytes {
        let status: std::collections::HashMap<String, Amf0Value> =
            [("level", "error"), ("code", code), ("description", description)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), Amf0Value::Utf8String(v.to_string())))
                .collect();
        let values = vec![
            Amf0Value::Utf8String("onStatus".to_string()),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            Amf0Value::Object(status),
        ];
        let body = rml_amf0::serialize(&values).unwrap_or_default();
        wire::encode_chunks(
            wire::CSID_STATUS,
            message_type::AMF0_COMMAND,
            stream_id,
            0,
            &body,
            self.chunk_size as usize,
        )
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
    let (Parse::Complete(basic), Parse::Complete(header)) =
        (BasicHeader::parse(packet), ChunkHeader::parse(packet, None))
    else {
        return;
    };
    let full_data_header = header.fmt == 0 && header.type_id == Some(message_type::AMF0_DATA);
    let stamped = !matches!(header.timestamp_field, Some(0) | Some(EXTENDED_TIMESTAMP_MARK));
    if full_data_header && stamped {
        let mut patched = packet.to_vec();
        // The 24-bit timestamp field comes right after the basic header.
        if let Some(field) = patched.get_mut(basic.len..basic.len + 3) {
            field.copy_from_slice(&[0, 0, 0]);
        }
        *packet = Bytes::from(patched);
    }
}

/// rml_rtmp also sends `onStatus(NetStream.Data.Start)` as a data message on play: ffmpeg turns it into a
/// phantom data track, and nginx-rtmp does not send it. It is the last message rml writes on its data chunk
/// stream (the node writes metadata on its own), so leaving it out cannot break rml's header compression.
fn is_data_start_notice(packet: &Bytes) -> bool {
    // A type 0 or type 1 chunk header carries the message type.
    let data_message = matches!(
        ChunkHeader::parse(packet, None),
        Parse::Complete(header) if header.type_id == Some(message_type::AMF0_DATA)
    );
    data_message && packet.windows(8).any(|w| w == b"onStatus")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::test_stream::raw_chunk;

    #[test]
    fn a_full_data_header_gets_timestamp_zero_and_nothing_else_changes() {
        for csid in [3, 100, 400] {
            let mut packet = Bytes::from(raw_chunk(0, csid, 1234, 5, 18, 1, None, b"hello"));
            zero_data_message_timestamp(&mut packet);
            assert_eq!(packet.as_ref(), raw_chunk(0, csid, 0, 5, 18, 1, None, b"hello"));
        }
        for unchanged in [
            raw_chunk(0, 3, 0xFF_FFFF, 5, 18, 1, Some(0x0100_0000), b"hello"),
            raw_chunk(1, 3, 1234, 5, 18, 1, None, b"hello"),
            raw_chunk(0, 3, 1234, 5, 20, 1, None, b"hello"),
        ] {
            let mut packet = Bytes::from(unchanged.clone());
            zero_data_message_timestamp(&mut packet);
            assert_eq!(packet.as_ref(), unchanged);
        }
    }

    #[test]
    fn the_data_start_notice_is_a_data_message_saying_on_status() {
        let notice = |fmt, type_id| {
            Bytes::from(raw_chunk(
                fmt,
                5,
                0,
                12,
                type_id,
                1,
                None,
                b"\x02\x00\x08onStatus",
            ))
        };
        assert!(is_data_start_notice(&notice(0, 18)));
        assert!(is_data_start_notice(&notice(1, 18)));
        assert!(!is_data_start_notice(&notice(0, 20)));
        assert!(!is_data_start_notice(&notice(2, 18)));
        assert!(!is_data_start_notice(&Bytes::from(raw_chunk(
            0, 5, 0, 5, 18, 1, None, b"hello"
        ))));
    }
}
