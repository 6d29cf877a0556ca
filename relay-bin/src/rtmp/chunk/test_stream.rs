//! Chunk streams for tests: raw chunks with any header fields, whole messages, rml_rtmp's serializer and
//! deserializer as the reference, and a stream cut into reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::time::RtmpTimestamp;

/// `message` through rml_rtmp's serializer (which compresses headers against what it sent before).
pub(crate) fn serialize(
    serializer: &mut ChunkSerializer,
    message: RtmpMessage,
    timestamp: u32,
    stream_id: u32,
) -> Vec<u8> {
    let payload = message
        .into_message_payload(RtmpTimestamp::new(timestamp), stream_id)
        .unwrap();
    serializer.serialize(&payload, false, false).unwrap().bytes
}

/// Appends a basic header of format `fmt` for `csid`, in its shortest form.
pub(crate) fn basic_header(out: &mut Vec<u8>, fmt: u8, csid: u32) {
    if csid < 64 {
        out.push(fmt << 6 | csid as u8);
    } else if csid < 320 {
        out.push(fmt << 6);
        out.push((csid - 64) as u8);
    } else {
        let id = csid - 64;
        out.extend_from_slice(&[fmt << 6 | 1, id as u8, (id >> 8) as u8]);
    }
}

/// One chunk with the header fields written as given (`timestamp` is the raw 24-bit field).
#[allow(clippy::too_many_arguments)]
pub(crate) fn raw_chunk(
    fmt: u8,
    csid: u32,
    timestamp: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: Option<u32>,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    basic_header(&mut out, fmt, csid);
    if fmt <= 2 {
        out.extend_from_slice(&timestamp.to_be_bytes()[1..]);
    }
    if fmt <= 1 {
        out.extend_from_slice(&length.to_be_bytes()[1..]);
        out.push(type_id);
    }
    if fmt == 0 {
        out.extend_from_slice(&stream_id.to_le_bytes());
    }
    if let Some(extended) = extended {
        out.extend_from_slice(&extended.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// A whole message: a fmt 0 chunk, then fmt 3 chunks of `chunk_size` bytes.
pub(crate) fn message_chunks(
    csid: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: usize,
) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut pieces = payload.chunks(chunk_size);
    let first = pieces.next().unwrap_or(&[]);
    let mut out = raw_chunk(0, csid, 0, length, type_id, stream_id, None, first);
    for piece in pieces {
        out.extend(raw_chunk(3, csid, 0, 0, 0, 0, None, piece));
    }
    out
}

/// A `SetChunkSize` of `size` on chunk stream 2.
pub(crate) fn set_chunk_size(size: u32) -> Vec<u8> {
    raw_chunk(0, 2, 0, 4, 1, 0, None, &size.to_be_bytes())
}

/// Feeds `reads` to rml_rtmp's deserializer as its sessions do (applying `SetChunkSize`); returns the
/// messages.
pub(crate) fn rml_messages(reads: &[&[u8]]) -> Vec<MessagePayload> {
    let mut deserializer = ChunkDeserializer::new();
    let mut messages = Vec::new();
    for read in reads {
        let mut input = *read;
        while let Some(payload) = deserializer.get_next_message(input).unwrap() {
            // Only a SetChunkSize is turned into a message: rml_rtmp's message layer panics on some commands.
            if payload.type_id == 1 {
                if let Ok(RtmpMessage::SetChunkSize { size }) = payload.to_rtmp_message() {
                    deserializer.set_max_chunk_size(size as usize).unwrap();
                }
            }
            messages.push(payload);
            input = &[];
        }
    }
    messages
}

/// `bytes` cut into reads of the given sizes, in turn (each at least 1 byte).
pub(crate) fn split<'a>(mut bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut reads = Vec::new();
    let mut next = sizes.iter().cycle();
    while !bytes.is_empty() {
        let size = next.next().copied().unwrap_or(usize::MAX).clamp(1, bytes.len());
        let (read, rest) = bytes.split_at(size);
        reads.push(read);
        bytes = rest;
    }
    reads
}
