//! An incremental reader of the RTMP chunk stream a server sends to a player, cheap enough for thousands.
//!
//! It tracks, per chunk stream, what the chunk headers compress away (message type, length, stream id,
//! timestamp and delta, whether an extended timestamp follows) and hands each complete message to a callback.
//! Payloads are not assembled: control and command messages (small, and needed whole) are captured up to
//! [`MAX_CONTROL_MESSAGE_BYTES`]; of every other message (audio, video, data) only the first
//! [`MEDIA_PREFIX_BYTES`] are kept, enough for the FLV tag header and the publisher's SEI send time. The rest
//! of each payload is skipped where it lies in the read buffer, without a copy.
//!
//! `SetChunkSize` (type 1) and `Abort` (type 2) take effect inside the reader, since they change how the very
//! next bytes parse; the callback sees them too.

use anyhow::{bail, Result};

/// Most chunk streams one connection may use (servers use a handful; a peer cannot make us track more).
pub const MAX_CHUNK_STREAMS: usize = 64;
/// Largest control or command message captured whole, in bytes; a bigger one ends the session.
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 64 * 1024;
/// Bytes kept from the start of every audio, video or data message.
pub const MEDIA_PREFIX_BYTES: usize = 64;
// Players read the publisher's stamp from the prefix.
const _: () = assert!(MEDIA_PREFIX_BYTES >= super::sei::SEARCH_PREFIX_BYTES);
/// Chunk size before the peer's first `SetChunkSize` (RTMP 1.0, 5.4.1).
const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Largest chunk size honoured: no message is longer than 2^24 - 1 bytes, so bigger chunks change nothing.
const MAX_CHUNK_SIZE: u32 = 0x00ff_ffff;
/// A 24-bit timestamp field with this value means a 32-bit extended timestamp follows.
const EXTENDED_TIMESTAMP: u32 = 0x00ff_ffff;
/// Longest chunk header: 3-byte basic header, 11-byte type-0 message header, 4-byte extended timestamp.
const MAX_HEADER_BYTES: usize = 18;

/// RTMP message type ids (RTMP 1.0, 5.4 and 7.1).
pub mod message_type {
    /// Protocol control: the sender's new chunk size.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Protocol control: drop the partial message of a chunk stream.
    pub const ABORT: u8 = 2;
    /// Protocol control: bytes received so far.
    pub const ACKNOWLEDGEMENT: u8 = 3;
    /// User control event (stream begin, ping, buffer length...).
    pub const USER_CONTROL: u8 = 4;
    /// Protocol control: how many bytes the peer may receive between acknowledgements.
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Protocol control: the sender's output bandwidth limit.
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio data (an FLV audio tag body).
    pub const AUDIO: u8 = 8;
    /// Video data (an FLV video tag body).
    pub const VIDEO: u8 = 9;
    /// AMF3 command.
    pub const COMMAND_AMF3: u8 = 17;
    /// AMF0 command (`_result`, `onStatus`...).
    pub const COMMAND_AMF0: u8 = 20;
}

/// A complete message, as the callback sees it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// RTMP message type id (see [`message_type`]).
    pub type_id: u8,
    /// Message stream id.
    #[allow(dead_code)] // Players need neither; the tests check that the reader tracks them.
    pub stream_id: u32,
    /// RTMP timestamp, in milliseconds.
    #[allow(dead_code)]
    pub timestamp_ms: u32,
    /// Length of the whole payload, in bytes.
    pub length: u32,
    /// The whole payload for control and command messages, its first [`MEDIA_PREFIX_BYTES`] otherwise.
    pub payload: &'a [u8],
}

/// What the reader remembers of one chunk stream.
#[derive(Debug)]
struct ChunkStream {
    csid: u32,
    timestamp_ms: u32,
    delta_ms: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The last type 0/1/2 header carried an extended timestamp, so its type-3 chunks carry one too.
    extended: bool,
    /// Payload bytes of the current message still to come (0 between messages).
    remaining: u32,
    captured: Vec<u8>,
}

impl ChunkStream {
    fn capture_limit(&self) -> usize {
        if captures_whole(self.type_id) {
            MAX_CONTROL_MESSAGE_BYTES
        } else {
            MEDIA_PREFIX_BYTES
        }
    }
}

/// Control and command messages are read whole.
fn captures_whole(type_id: u8) -> bool {
    use message_type::*;
    matches!(
        type_id,
        SET_CHUNK_SIZE
            | ABORT
            | ACKNOWLEDGEMENT
            | USER_CONTROL
            | WINDOW_ACK_SIZE
            | SET_PEER_BANDWIDTH
            | COMMAND_AMF3
            | COMMAND_AMF0
    )
}

/// Where the reader is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a chunk header into `header`.
    Header,
    /// Inside a chunk's payload: `left` bytes of it still to come, for `streams[stream]`.
    Payload { stream: usize, left: u32 },
}

/// The incremental chunk reader of one connection (server to client direction).
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: u32,
    streams: Vec<ChunkStream>,
    header: [u8; MAX_HEADER_BYTES],
    header_len: usize,
    state: State,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkReader {
    /// A reader at the start of a chunk stream (right after the handshake).
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            header: [0; MAX_HEADER_BYTES],
            header_len: 0,
            state: State::Header,
        }
    }

    /// The peer's current chunk size, in bytes.
    #[cfg(test)]
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Parses `data` (the next bytes from the peer, any split) and calls `on_message` for each message it
    /// completes, in order. An error means the stream is broken; the reader must not be fed again.
    pub fn feed(&mut self, mut data: &[u8], mut on_message: impl FnMut(&Message<'_>)) -> Result<()> {
        while !data.is_empty() {
            match self.state {
                State::Header => {
                    let need = self.header_needed();
                    let take = (need - self.header_len).min(data.len());
                    self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                    self.header_len += take;
                    data = &data[take..];
                    // The needed length grows as the header reveals its format; stop only when it is stable.
                    if self.header_len == need && self.header_needed() == need {
                        self.apply_header(&mut on_message)?;
                    }
                }
                State::Payload { stream, left } => {
                    let take = (left as usize).min(data.len());
                    let s = &mut self.streams[stream];
                    let room = s.capture_limit().saturating_sub(s.captured.len()).min(take);
                    s.captured.extend_from_slice(&data[..room]);
                    data = &data[take..];
                    // `take <= left <= remaining`: the cast is lossless and nothing underflows.
                    let take = take as u32;
                    s.remaining -= take;
                    let left = left - take;
                    if left > 0 {
                        self.state = State::Payload { stream, left };
                    } else {
                        self.state = State::Header;
                        if s.remaining == 0 {
                            self.finish_message(stream, &mut on_message)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Total bytes of the header being collected, as far as the bytes so far tell.
    fn header_needed(&self) -> usize {
        let h = &self.header[..self.header_len];
        let Some(&first) = h.first() else {
            return 1;
        };
        let basic = match first & 0x3f {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        if h.len() < basic {
            return basic;
        }
        let fmt = first >> 6;
        let message_header = [11, 7, 3, 0][usize::from(fmt)];
        if h.len() < basic + message_header {
            return basic + message_header;
        }
        let extended = if fmt < 3 {
            be24(&h[basic..basic + 3]) == EXTENDED_TIMESTAMP
        } else {
            let csid = csid_of(h);
            self.streams.iter().any(|s| s.csid == csid && s.extended)
        };
        basic + message_header + if extended { 4 } else { 0 }
    }

    /// Applies a complete chunk header: updates its chunk stream and moves to the chunk's payload.
    fn apply_header(&mut self, on_message: &mut impl FnMut(&Message<'_>)) -> Result<()> {
        let h = self.header;
        let h = &h[..self.header_len];
        self.header_len = 0;
        let fmt = h[0] >> 6;
        let csid = csid_of(h);
        let basic = match h[0] & 0x3f {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        let mh = &h[basic..];
        let idx = match self.streams.iter().position(|s| s.csid == csid) {
            Some(i) => i,
            None => {
                if fmt != 0 {
                    bail!("chunk stream {csid} starts with a type-{fmt} header (needs type 0)");
                }
                if self.streams.len() >= MAX_CHUNK_STREAMS {
                    bail!("more than {MAX_CHUNK_STREAMS} chunk streams");
                }
                self.streams.push(ChunkStream {
                    csid,
                    timestamp_ms: 0,
                    delta_ms: 0,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    extended: false,
                    remaining: 0,
                    captured: Vec::new(),
                });
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[idx];
        let new_message = if fmt < 3 {
            let field = be24(&mh[0..3]);
            s.extended = field == EXTENDED_TIMESTAMP;
            let time = if s.extended {
                let ext = &mh[mh.len() - 4..];
                u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]])
            } else {
                field
            };
            if s.remaining != 0 {
                bail!("chunk stream {csid}: a new message header before the last message ended");
            }
            if fmt <= 1 {
                s.length = be24(&mh[3..6]);
                s.type_id = mh[6];
            }
            if fmt == 0 {
                s.stream_id = u32::from_le_bytes([mh[7], mh[8], mh[9], mh[10]]);
                s.timestamp_ms = time;
                // A type-3 header that starts a new message after a type 0 adds the type 0's timestamp
                // field as its delta (as FFmpeg and rml_rtmp do).
                s.delta_ms = time;
            } else {
                s.delta_ms = time;
                s.timestamp_ms = s.timestamp_ms.wrapping_add(time);
            }
            true
        } else if s.remaining == 0 {
            s.timestamp_ms = s.timestamp_ms.wrapping_add(s.delta_ms);
            true
        } else {
            false
        };
        if new_message {
            if captures_whole(s.type_id) && s.length as usize > MAX_CONTROL_MESSAGE_BYTES {
                bail!(
                    "chunk stream {csid}: a {}-byte message of type {} (limit {MAX_CONTROL_MESSAGE_BYTES})",
                    s.length,
                    s.type_id
                );
            }
            s.remaining = s.length;
            s.captured.clear();
            if s.remaining == 0 {
                self.state = State::Header;
                return self.finish_message(idx, on_message);
            }
        }
        self.state = State::Payload {
            stream: idx,
            left: s.remaining.min(self.chunk_size),
        };
        Ok(())
    }

    /// Hands a complete message to the callback, then applies the protocol controls that change parsing.
    fn finish_message(&mut self, idx: usize, on_message: &mut impl FnMut(&Message<'_>)) -> Result<()> {
        let s = &self.streams[idx];
        let message = Message {
            type_id: s.type_id,
            stream_id: s.stream_id,
            timestamp_ms: s.timestamp_ms,
            length: s.length,
            payload: &s.captured,
        };
        on_message(&message);
        let control = match message.payload {
            [a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        };
        match (message.type_id, control) {
            (message_type::SET_CHUNK_SIZE, Some(size)) => {
                let size = size & 0x7fff_ffff;
                if size == 0 {
                    bail!("SetChunkSize 0");
                }
                self.chunk_size = size.min(MAX_CHUNK_SIZE);
            }
            (message_type::ABORT, Some(csid)) => {
                if let Some(other) = self.streams.iter_mut().find(|o| o.csid == csid) {
                    other.remaining = 0;
                    other.captured.clear();
                }
            }
            (message_type::SET_CHUNK_SIZE | message_type::ABORT, None) => {
                bail!(
                    "a {}-byte control message of type {}",
                    message.length,
                    message.type_id
                );
            }
            _ => {}
        }
        Ok(())
    }
}

/// The chunk stream id of a basic header (`h` holds at least the whole basic header).
fn csid_of(h: &[u8]) -> u32 {
    match h[0] & 0x3f {
        0 => 64 + u32::from(h[1]),
        1 => 64 + u32::from(h[1]) + 256 * u32::from(h[2]),
        x => u32::from(x),
    }
}

fn be24(b: &[u8]) -> u32 {
    u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    /// What a test expects the reader to report for one message.
    #[derive(Debug, PartialEq)]
    struct Seen {
        type_id: u8,
        stream_id: u32,
        timestamp_ms: u32,
        length: u32,
        payload: Vec<u8>,
    }

    /// Serializes messages with rml_rtmp and records what the reader should report for each.
    struct Builder {
        ser: ChunkSerializer,
        wire: Vec<u8>,
        expected: Vec<Seen>,
    }

    impl Builder {
        fn push(&mut self, type_id: u8, sid: u32, ts: u32, data: Bytes) {
            let m = MessagePayload {
                timestamp: RtmpTimestamp::new(ts),
                type_id,
                message_stream_id: sid,
                data,
            };
            self.wire
                .extend_from_slice(&self.ser.serialize(&m, false, false).unwrap().bytes);
            let keep = if captures_whole(type_id) {
                m.data.len()
            } else {
                m.data.len().min(MEDIA_PREFIX_BYTES)
            };
            self.expected.push(Seen {
                type_id,
                stream_id: sid,
                timestamp_ms: ts,
                length: m.data.len() as u32,
                payload: m.data[..keep].to_vec(),
            });
        }
    }

    fn payload(len: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn tracks_headers_of_a_chunk_stream_from_rml_rtmps_serializer() {
        let mut b = Builder {
            ser: ChunkSerializer::new(),
            wire: Vec::new(),
            expected: Vec::new(),
        };
        // At the default 128-byte chunks: a command that spans chunks, a window size. (rml_rtmp writes no
        // chunk at all for an empty message; the hand-made stream below has one.)
        b.push(20, 0, 0, payload(300, 1));
        b.push(5, 0, 0, Bytes::from_static(&[0, 0x4c, 0x4b, 0x40]));
        // The reader must switch chunk size exactly at the SetChunkSize message.
        let packet = b.ser.set_max_chunk_size(4096, RtmpTimestamp::new(0)).unwrap();
        b.wire.extend_from_slice(&packet.bytes);
        b.expected.push(Seen {
            type_id: 1,
            stream_id: 0,
            timestamp_ms: 0,
            length: 4,
            payload: vec![0, 0, 16, 0],
        });
        // Media with type 0/1/2/3 headers: same and different lengths, steady and changing deltas.
        for (i, (ts, len)) in [
            (0, 9000),
            (40, 2500),
            (80, 2500),
            (120, 2500),
            (160, 100),
            (200, 100),
        ]
        .into_iter()
        .enumerate()
        {
            b.push(9, 1, ts, payload(len, i as u8));
            b.push(8, 1, ts + 3, payload(180, i as u8));
        }
        // Extended timestamps, on a message that spans chunks (type-3 chunks repeat the extension) and after.
        b.push(9, 1, 0x0100_0000, payload(10_000, 7));
        b.push(9, 1, 0x0100_0028, payload(10_000, 8));
        b.push(9, 1, 0x0100_0050, payload(300, 9));
        let Builder { wire, expected, .. } = b;

        for split in [1usize, 2, 3, 7, 100, 4095, 4096, 4097, usize::MAX] {
            let mut reader = ChunkReader::new();
            let mut seen = Vec::new();
            for piece in wire.chunks(split.min(wire.len())) {
                reader
                    .feed(piece, |m| {
                        seen.push(Seen {
                            type_id: m.type_id,
                            stream_id: m.stream_id,
                            timestamp_ms: m.timestamp_ms,
                            length: m.length,
                            payload: m.payload.to_vec(),
                        })
                    })
                    .unwrap();
            }
            assert_eq!(seen, expected, "split {split}");
            assert_eq!(reader.chunk_size(), 4096);
        }
    }

    #[test]
    fn interleaved_chunk_streams_and_bad_input() {
        // Two messages on csids 4 and 5 interleaved chunk by chunk (as a server may send them), 2-byte csid.
        let mut wire = vec![0x04, 0, 0, 10, 0, 0, 200, 9, 1, 0, 0, 0];
        wire.extend_from_slice(&[0xaa; 128]);
        wire.extend_from_slice(&[0x00, 10, 0, 0, 20, 0, 0, 5, 8, 1, 0, 0, 0, 1, 2, 3, 4, 5]);
        wire.push(0xc4);
        wire.extend_from_slice(&[0xbb; 72]);
        // An empty data message on csid 3.
        wire.extend_from_slice(&[0x03, 0, 0, 7, 0, 0, 0, 18, 1, 0, 0, 0]);
        let mut seen = Vec::new();
        let mut reader = ChunkReader::new();
        reader
            .feed(&wire, |m| {
                seen.push((m.type_id, m.timestamp_ms, m.length, m.payload.len()))
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![(8, 20, 5, 5), (9, 10, 200, MEDIA_PREFIX_BYTES), (18, 7, 0, 0)]
        );

        // A type-1 header on an unknown chunk stream, an oversized command and a zero chunk size are errors.
        assert!(ChunkReader::new()
            .feed(&[0x43, 0, 0, 0, 0, 0, 1, 9], |_| {})
            .is_err());
        assert!(ChunkReader::new()
            .feed(&[0x03, 0, 0, 0, 0x10, 0, 0, 20, 0, 0, 0, 0], |_| {})
            .is_err());
        let zero = [0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(ChunkReader::new().feed(&zero, |_| {}).is_err());
    }
}
