//! The wire form of a frame: its RTMP message cut into chunks, encoded once and written to every viewer.
//!
//! Every message starts with a full (type 0) chunk header, so its bytes do not depend on what a viewer was
//! sent before: the same `Bytes` can go to every viewer of the stream. Media uses chunk stream ids that
//! rml_rtmp never uses (it uses 2..=6), so rml's header compression on its own chunk streams stays valid.

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::{Frame, Track};

/// Chunk stream id of audio messages written by the node.
pub const CSID_AUDIO: u8 = 7;
/// Chunk stream id of video messages written by the node.
pub const CSID_VIDEO: u8 = 8;
/// Chunk stream id of data (metadata) messages written by the node.
pub const CSID_DATA: u8 = 9;
/// Chunk stream id of the status commands the node writes itself (`onStatus` of a stream not found).
pub const CSID_STATUS: u8 = 10;
/// Message stream id of media sent to players (the stream rml_rtmp's first `createStream` returns).
pub const PLAY_STREAM_ID: u32 = 1;

/// The largest timestamp a chunk header's 24-bit field carries; at or above it the extended field is used.
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;

/// The chunk stream id media of `track` is written on.
pub fn csid_for(track: Track) -> u8 {
    match track {
        Track::Audio => CSID_AUDIO,
        Track::Video => CSID_VIDEO,
        Track::Data => CSID_DATA,
    }
}

/// The RTMP output's form of `frame`: its message as chunks of `chunk_size` (the node's `rtmp.chunk_size`,
/// the one every viewer was told) on [`PLAY_STREAM_ID`], encoded by the first caller and cached in the
/// frame's [`Encodings`](crate::media::frame::Encodings) for every other viewer on every core. RTMP
/// timestamps are 32-bit and wrap: the message carries the unwrapped dts modulo 2^32; data messages
/// (`onMetaData`) go at timestamp 0, as players expect of metadata (ffmpeg's FLV demuxer makes a data message
/// with a timestamp into a stream of its own).
pub fn frame_chunks(frame: &Frame, chunk_size: usize) -> Bytes {
    frame
        .encodings
        .rtmp
        .get_or_init(|| {
            let timestamp = if frame.track == Track::Data {
                0
            } else {
                frame.dts_ms as u32
            };
            encode_message(frame.track, PLAY_STREAM_ID, timestamp, &frame.body, chunk_size)
        })
        .clone()
}

/// Encodes one RTMP message as chunks of at most `chunk_size` payload bytes (the size announced to the
/// peer with SetChunkSize): a type 0 header, then type 3 continuation headers. When the timestamp needs the
/// extended field, every chunk carries it (as the spec, Flash and ffmpeg do).
///
/// `body` must be shorter than 2^24 bytes (the RTMP message length field); ingest bounds it far below that.
pub fn encode_message(track: Track, stream_id: u32, timestamp: u32, body: &[u8], chunk_size: usize) -> Bytes {
    encode_chunks(
        csid_for(track),
        track.message_type(),
        stream_id,
        timestamp,
        body,
        chunk_size,
    )
}

/// As [`encode_message`], for a message of type `type_id` on chunk stream `csid` (2..=63).
pub fn encode_chunks(
    csid: u8,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    body: &[u8],
    chunk_size: usize,
) -> Bytes {
    let chunk_size = chunk_size.max(1);
    let extended = timestamp >= EXTENDED_TIMESTAMP;
    let chunks = body.len().div_ceil(chunk_size).max(1);
    let header_bytes = 12 + (chunks - 1) + if extended { 4 * chunks } else { 0 };
    let mut out = BytesMut::with_capacity(body.len() + header_bytes);

    // Type 0 basic header (fmt 0, one-byte csid) and message header.
    out.put_u8(csid);
    let field = timestamp.min(EXTENDED_TIMESTAMP);
    put_u24(&mut out, field);
    put_u24(&mut out, (body.len() as u32).min(0xFF_FFFF));
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if extended {
        out.put_u32(timestamp);
    }
    let mut chunks_iter = body.chunks(chunk_size);
    if let Some(first) = chunks_iter.next() {
        out.put_slice(first);
    }
    for chunk in chunks_iter {
        out.put_u8(0xC0 | csid);
        if extended {
            out.put_u32(timestamp);
        }
        out.put_slice(chunk);
    }
    out.freeze()
}

fn put_u24(out: &mut BytesMut, value: u32) {
    out.put_u8((value >> 16) as u8);
    out.put_u8((value >> 8) as u8);
    out.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkDeserializer;

    fn decode_all(bytes: &[u8], chunk_size: usize) -> Vec<rml_rtmp::messages::MessagePayload> {
        let mut deserializer = ChunkDeserializer::new();
        deserializer.set_max_chunk_size(chunk_size).unwrap();
        let mut out = Vec::new();
        let mut input = bytes;
        while let Some(message) = deserializer.get_next_message(input).unwrap() {
            out.push(message);
            input = &[];
        }
        out
    }

    #[test]
    fn rml_decodes_what_we_encode_small_and_chunked() {
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for chunk_size in [128usize, 4096, 65_536] {
            let wire = encode_message(Track::Video, 1, 40, &body, chunk_size);
            let messages = decode_all(&wire, chunk_size);
            assert_eq!(messages.len(), 1);
            assert_eq!(messages[0].type_id, 9);
            assert_eq!(messages[0].timestamp.value, 40);
            assert_eq!(messages[0].message_stream_id, 1);
            assert_eq!(&messages[0].data[..], &body[..]);
        }
    }

    #[test]
    fn extended_timestamps_ride_on_every_chunk() {
        let body = vec![7u8; 300];
        let wire = encode_message(Track::Audio, 1, 0x0123_4567, &body, 128);
        // 12-byte header + 4 extended, then two continuation chunks of 1 + 4 bytes of header each.
        assert_eq!(wire.len(), 300 + 12 + 4 + 2 * 5);
        let messages = decode_all(&wire, 128);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].timestamp.value, 0x0123_4567);
        assert_eq!(&messages[0].data[..], &body[..]);
    }

    #[test]
    fn consecutive_messages_decode_independently() {
        let mut all = Vec::new();
        for (i, track) in [Track::Video, Track::Audio, Track::Video].into_iter().enumerate() {
            all.extend_from_slice(&encode_message(track, 1, 1000 + i as u32, &[i as u8; 200], 4096));
        }
        let mut deserializer = ChunkDeserializer::new();
        deserializer.set_max_chunk_size(4096).unwrap();
        let mut got = Vec::new();
        let mut input: &[u8] = &all;
        while let Some(message) = deserializer.get_next_message(input).unwrap() {
            got.push((message.type_id, message.timestamp.value));
            input = &[];
        }
        assert_eq!(got, vec![(9, 1000), (8, 1001), (9, 1002)]);
    }
}
