//! An incremental reader of the RTMP messages a server sends to a player, cheap enough for thousands: the
//! relay's chunk decoder ([`relay::rtmp::chunk::ChunkDecoder`], interleaved chunk streams allowed) and what a
//! player keeps of each message.
//!
//! Payloads are not assembled: control and command messages (small, and needed whole) are captured up to
//! [`MAX_CONTROL_MESSAGE_BYTES`]; of every other message (audio, video, data) only the first
//! [`MEDIA_PREFIX_BYTES`] are kept, enough for the FLV tag header and the publisher's SEI send time. The rest
//! of each payload is skipped where it lies in the read buffer, without a copy (the decoder hands out slices
//! of it, and reads a chunk header in place when the read holds all of it).
//!
//! `SetChunkSize` (type 1) takes effect inside the decoder and `Abort` (type 2) here, since they change how the
//! very next bytes parse; the callback sees them too.

use anyhow::{bail, Result};
use relay::rtmp::chunk::{ChunkDecoder, ChunkEvent, ChunkLimits};
pub use relay::rtmp::message_type;

/// Most chunk streams one connection may use (servers use a handful; a peer cannot make us track more).
pub const MAX_CHUNK_STREAMS: usize = 64;
/// Largest control, command or data message, in bytes (the decoder's command limit); a bigger one ends the
/// session.
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 64 * 1024;
/// Bytes kept from the start of every audio, video or data message.
pub const MEDIA_PREFIX_BYTES: usize = 64;
// Players read the publisher's stamp from the prefix.
const _: () = assert!(MEDIA_PREFIX_BYTES >= super::sei::SEARCH_PREFIX_BYTES);

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
    #[allow(dead_code)]
    pub length: u32,
    /// The whole payload for control and command messages, its first [`MEDIA_PREFIX_BYTES`] otherwise.
    pub payload: &'a [u8],
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
            | AMF3_COMMAND
            | AMF0_COMMAND
    )
}

/// What the reader keeps of the message in progress on one chunk stream.
#[derive(Debug)]
struct Capture {
    csid: u32,
    bytes: Vec<u8>,
}

/// The incremental chunk reader of one connection (server to client direction).
#[derive(Debug)]
pub struct ChunkReader {
    decoder: ChunkDecoder,
    /// One per chunk stream seen (at most [`MAX_CHUNK_STREAMS`]: the decoder refuses more).
    captures: Vec<Capture>,
    /// The capture of the chunk whose payload is coming.
    current: usize,
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
            decoder: ChunkDecoder::new(ChunkLimits {
                max_command_bytes: MAX_CONTROL_MESSAGE_BYTES,
                max_chunk_streams: MAX_CHUNK_STREAMS,
                interleaving: true,
                ..ChunkLimits::default()
            }),
            captures: Vec::new(),
            current: 0,
        }
    }

    /// The peer's current chunk size, in bytes.
    #[cfg(test)]
    pub fn chunk_size(&self) -> u32 {
        self.decoder.chunk_size()
    }

    /// Parses `data` (the next bytes from the peer, any split) and calls `on_message` for each message it
    /// completes, in order. An error means the stream is broken; the reader must not be fed again.
    pub fn feed(&mut self, mut data: &[u8], mut on_message: impl FnMut(&Message<'_>)) -> Result<()> {
        while let Some(event) = self.decoder.next_event(&mut data)? {
            match event {
                ChunkEvent::Chunk(chunk) => {
                    let csid = chunk.message.csid;
                    self.current = match self.captures.iter().position(|c| c.csid == csid) {
                        Some(index) => index,
                        None => {
                            self.captures.push(Capture {
                                csid,
                                bytes: Vec::new(),
                            });
                            self.captures.len() - 1
                        }
                    };
                    if chunk.starts_message {
                        if let Some(capture) = self.captures.get_mut(self.current) {
                            capture.bytes.clear();
                        }
                    }
                }
                ChunkEvent::Payload { type_id, bytes, .. } => {
                    let limit = if captures_whole(type_id) {
                        MAX_CONTROL_MESSAGE_BYTES
                    } else {
                        MEDIA_PREFIX_BYTES
                    };
                    if let Some(capture) = self.captures.get_mut(self.current) {
                        let room = limit.saturating_sub(capture.bytes.len()).min(bytes.len());
                        capture.bytes.extend_from_slice(&bytes[..room]);
                    }
                }
                ChunkEvent::MessageEnd(header) => {
                    // The chunk that ended the message is the current one.
                    let payload = self
                        .captures
                        .get(self.current)
                        .filter(|c| c.csid == header.csid)
                        .map_or(&[][..], |c| c.bytes.as_slice());
                    on_message(&Message {
                        type_id: header.type_id,
                        stream_id: header.stream_id,
                        timestamp_ms: header.timestamp_ms,
                        length: header.length,
                        payload,
                    });
                    if header.type_id == message_type::ABORT {
                        let Some(&[a, b, c, d]) = payload.get(..4) else {
                            bail!("a {}-byte Abort message", header.length);
                        };
                        self.decoder.abort(u32::from_be_bytes([a, b, c, d]));
                    }
                }
            }
        }
        Ok(())
    }
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
