//! The guard against rml_rtmp itself: whatever the guard passes, rml_rtmp's deserializer and server session
//! digest without panicking, and find the messages the guard counted, however the stream is cut into reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::amf0_walk::{
    AMF_AVMPLUS, AMF_BOOLEAN, AMF_ECMA_ARRAY, AMF_NULL, AMF_OBJECT, AMF_OBJECT_END, AMF_STRICT_ARRAY,
    AMF_STRING,
};
use super::test_amf0::{
    amf_number, amf_object_end, amf_property, amf_string, command, connect_command, nested_objects,
};
use super::*;
use crate::rtmp::chunk::test_stream::{raw_chunk, rml_messages, serialize, set_chunk_size, split};
use crate::rtmp::chunk::{INITIAL_CHUNK_SIZE, RTMP_MAX_CHUNK_SIZE};
use bytes::Bytes;
use proptest::prelude::*;
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::{RtmpMessage, UserControlEventType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;

/// One piece of a generated chunk stream.
#[derive(Debug, Clone)]
enum Piece {
    /// A message through rml's serializer (valid chunking at the serializer's chunk size).
    Message {
        kind: u8,
        size: usize,
        timestamp: u32,
        stream_id: u32,
    },
    /// A `SetChunkSize` of any value, raw (the serializer does not follow it).
    ChunkSize(u32),
    /// A `SetChunkSize` through the serializer, which then uses it.
    SerializerChunkSize(u32),
    /// Raw chunks with arbitrary header fields.
    Raw {
        fmt: u8,
        csid: u32,
        timestamp: u32,
        length: u32,
        type_id: u8,
        extended: u32,
        payload: RawPayload,
    },
    /// Arbitrary AMF top-level values as a command (20, 17) or data (18, 15) message.
    Amf {
        type_id: u8,
        prefix: bool,
        values: Vec<u8>,
    },
}

/// What payload a raw piece carries.
#[derive(Debug, Clone, Copy)]
enum RawPayload {
    /// The whole message, in chunks of the chunk size the generator believes in force.
    Whole,
    /// Only its first chunk: the message stays half received.
    FirstChunk,
    /// This many bytes, whatever the header says.
    Bytes(usize),
}

fn message_piece() -> impl Strategy<Value = Piece> {
    let timestamp = prop_oneof![0u32..100, 0xFF_FFF0u32..0x0100_0010];
    (0u8..10, 0usize..600, timestamp, 0u32..3).prop_map(|(kind, size, timestamp, stream_id)| Piece::Message {
        kind,
        size,
        timestamp,
        stream_id,
    })
}

/// Pieces a well-behaved peer sends: the stream stays in sync and every message is valid.
fn benign_piece() -> impl Strategy<Value = Piece> {
    // The serializer uses chunk streams 2 to 6; raw chunks here use 7 (6 in all: the test's limit).
    let raw = (
        0u32..100,
        0u32..400,
        prop::sample::select(vec![0u8, 3, 4, 6, 8, 9, 22, 99]),
    )
        .prop_map(|(timestamp, length, type_id)| Piece::Raw {
            fmt: 0,
            csid: 7,
            timestamp,
            length,
            type_id,
            extended: 0,
            payload: RawPayload::Whole,
        });
    let amf = (
        prop::sample::select(vec![20u8, 17, 18, 15]),
        prop::collection::vec(0u8..12, 0..4),
    )
        .prop_map(|(type_id, values)| Piece::Amf {
            type_id,
            prefix: true,
            values,
        });
    prop_oneof![
        8 => message_piece(),
        2 => prop_oneof![1u32..400, Just(4096), Just(65_536)].prop_map(Piece::SerializerChunkSize),
        2 => raw,
        2 => amf,
    ]
}

/// Any piece: header fields, sizes, chunk sizes and AMF a hostile peer might send.
fn piece() -> impl Strategy<Value = Piece> {
    let csid = prop_oneof![6 => 2u32..8, 1 => prop::sample::select(vec![64u32, 319, 320, 65_599])];
    let fmt = prop_oneof![3 => Just(0u8), 1 => 1u8..4];
    let timestamp = prop_oneof![3 => 0u32..100, 1 => Just(0xFF_FFFF)];
    let extended = prop_oneof![0u32..10, Just(0xFF_FFFF), 0x0100_0000u32..0x0100_0010];
    let type_id = prop_oneof![
        8 => prop::sample::select(vec![0u8, 3, 4, 6, 8, 9, 22, 99]),
        2 => prop::sample::select(vec![1u8, 2, 5, 15, 17, 18, 19, 20]),
    ];
    let chunk_size = prop_oneof![
        6 => 1u32..300,
        1 => Just(4096),
        1 => Just(0),
        1 => Just(0x7FFF_FFFF),
        1 => Just(0x8000_0000)
    ];
    let payload = prop_oneof![
        2 => Just(RawPayload::Whole),
        2 => Just(RawPayload::FirstChunk),
        1 => (0usize..300).prop_map(RawPayload::Bytes),
    ];
    let raw = (fmt, csid, timestamp, 0u32..400, type_id, extended, payload).prop_map(
        |(fmt, csid, timestamp, length, type_id, extended, payload)| Piece::Raw {
            fmt,
            csid,
            timestamp,
            length,
            type_id,
            extended,
            payload,
        },
    );
    let amf_code = prop_oneof![4 => 0u8..12, 1 => 12u8..15];
    let amf_type = prop::sample::select(vec![20u8, 17, 18, 15]);
    let amf = (
        amf_type,
        prop::bool::weighted(0.7),
        prop::collection::vec(amf_code, 0..6),
    )
        .prop_map(|(type_id, prefix, values)| Piece::Amf {
            type_id,
            prefix,
            values,
        });
    prop_oneof![
        3 => message_piece(),
        2 => chunk_size.prop_map(Piece::ChunkSize),
        1 => (1u32..400).prop_map(Piece::SerializerChunkSize),
        4 => raw,
        3 => amf,
    ]
}

/// A template AMF value by code (some valid, some hostile).
fn amf_value(out: &mut Vec<u8>, code: u8) {
    match code {
        0 => amf_number(out, 1.0),
        1 => out.extend_from_slice(&[AMF_BOOLEAN, 1]),
        2 => amf_string(out, "live"),
        3 => out.push(AMF_NULL),
        4 => {
            out.push(AMF_OBJECT);
            amf_property(out, "app");
            amf_string(out, "live");
            amf_object_end(out);
        }
        5 => nested_objects(out, 3),
        6 => out.extend_from_slice(&[AMF_STRICT_ARRAY, 0, 0, 0, 1, AMF_NULL]),
        7 => out.extend_from_slice(&[AMF_ECMA_ARRAY, 0, 0, 0, 9, 0, 0, AMF_OBJECT_END]),
        8 => amf_string(out, "connect"),
        9 => amf_string(out, "publish"),
        10 => amf_string(out, "@setDataFrame"),
        11 => amf_string(out, "onMetaData"),
        12 => out.extend_from_slice(&[AMF_STRING, 0, 50, b'x']),
        13 => nested_objects(out, 6),
        _ => out.extend_from_slice(&[AMF_AVMPLUS, 1]),
    }
}

fn build_stream(pieces: &[Piece]) -> Vec<u8> {
    let mut serializer = ChunkSerializer::new();
    let mut out = Vec::new();
    let mut chunk_size = INITIAL_CHUNK_SIZE as usize;
    // Per raw chunk stream: the message length and timestamp field in force.
    let mut known: HashMap<u32, (u32, u32)> = HashMap::new();
    for piece in pieces {
        match piece {
            Piece::Message {
                kind,
                size,
                timestamp,
                stream_id,
            } => {
                let data = || Bytes::from(vec![0x17; *size]);
                let message = match kind {
                    0 => RtmpMessage::VideoData { data: data() },
                    1 => RtmpMessage::AudioData { data: data() },
                    2 => connect_command("live"),
                    3 => command("createStream", 2.0, Vec::new()),
                    4 => command(
                        "publish",
                        3.0,
                        vec![
                            Amf0Value::Utf8String("key".into()),
                            Amf0Value::Utf8String("live".into()),
                        ],
                    ),
                    5 => command("play", 3.0, vec![Amf0Value::Utf8String("key".into())]),
                    6 => RtmpMessage::WindowAcknowledgement {
                        // Both sides of the 4096-byte floor.
                        size: (*size as u32) << 4,
                    },
                    7 => RtmpMessage::UserControl {
                        event_type: UserControlEventType::PingRequest,
                        stream_id: None,
                        buffer_length: None,
                        timestamp: Some(RtmpTimestamp::new(*timestamp)),
                    },
                    8 => RtmpMessage::Abort {
                        stream_id: *stream_id,
                    },
                    _ => RtmpMessage::Unknown {
                        type_id: 22,
                        data: data(),
                    },
                };
                out.extend(serialize(&mut serializer, message, *timestamp, *stream_id));
            }
            Piece::ChunkSize(size) => {
                if (1..=RTMP_MAX_CHUNK_SIZE).contains(size) {
                    chunk_size = *size as usize;
                }
                out.extend(set_chunk_size(*size))
            }
            Piece::SerializerChunkSize(size) => {
                chunk_size = *size as usize;
                let packet = serializer
                    .set_max_chunk_size(*size, RtmpTimestamp::new(0))
                    .unwrap();
                out.extend(packet.bytes)
            }
            Piece::Raw {
                fmt,
                csid,
                timestamp,
                length,
                type_id,
                extended,
                payload,
            } => {
                // What the receiver will use for the fields a compressed header leaves out.
                let (known_length, known_field) = known.get(csid).copied().unwrap_or((*length, *timestamp));
                let (length, field) = match fmt {
                    0 | 1 => (*length, *timestamp),
                    2 => (known_length, *timestamp),
                    _ => (known_length, known_field),
                };
                known.insert(*csid, (length, field));
                let extended = (field == 0xFF_FFFF).then_some(*extended);
                let (body, chunk, chunks) = match payload {
                    RawPayload::Whole => (vec![0x42; length as usize], chunk_size, usize::MAX),
                    RawPayload::FirstChunk => (vec![0x42; length as usize], chunk_size, 1),
                    RawPayload::Bytes(count) => (vec![0x42; *count], usize::MAX, 1),
                };
                let mut pieces = body.chunks(chunk).take(chunks);
                let first = pieces.next().unwrap_or(&[]);
                out.extend(raw_chunk(
                    *fmt, *csid, *timestamp, length, *type_id, 1, extended, first,
                ));
                for piece in pieces {
                    out.extend(raw_chunk(3, *csid, 0, 0, 0, 0, extended, piece));
                }
            }
            Piece::Amf {
                type_id,
                prefix,
                values,
            } => {
                let mut data = Vec::new();
                if *type_id == 17 {
                    data.push(0);
                }
                // A command's name, transaction id and object, or `@setDataFrame onMetaData {..}`.
                let prefix: &[u8] = match (prefix, type_id) {
                    (false, _) => &[],
                    (true, 17 | 20) => &[8, 0, 4],
                    (true, _) => &[10, 11, 4],
                };
                for code in prefix.iter().chain(values) {
                    amf_value(&mut data, *code);
                }
                let message = RtmpMessage::Unknown {
                    type_id: *type_id,
                    data: Bytes::from(data),
                };
                out.extend(serialize(&mut serializer, message, 0, 1));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever the guard accepts, rml_rtmp's deserializer and server session digest without panicking,
    /// and the deserializer finds exactly the messages the guard counted; how the stream is split into
    /// reads changes nothing.
    #[test]
    fn rml_survives_what_the_guard_accepts(
        benign in prop::collection::vec(benign_piece(), 0..20),
        hostile in prop::collection::vec(piece(), 0..5),
        flip in prop::option::weighted(0.3, (any::<usize>(), 1u8..=255)),
        sizes in prop::collection::vec(prop_oneof![1usize..20, 20usize..2000], 1..6),
    ) {
        let pieces: Vec<Piece> = benign.into_iter().chain(hostile).collect();
        let mut stream = build_stream(&pieces);
        if let (Some((at, xor)), false) = (flip, stream.is_empty()) {
            let len = stream.len();
            stream[at % len] ^= xor;
        }

        // Byte by byte: where exactly the guard refuses, and how many messages came before.
        let mut bytewise = ChunkGuard::new(test_limits());
        let (mut accepted, mut messages, mut refusal) = (0, 0, None);
        for byte in &stream {
            messages = bytewise.messages();
            if let Err(error) = bytewise.inspect(std::slice::from_ref(byte)) {
                refusal = Some(error);
                break;
            }
            accepted += 1;
            messages = bytewise.messages();
        }

        // In reads: the same verdict, at the read holding that byte.
        let mut guard = ChunkGuard::new(test_limits());
        let mut end = 0;
        for read in split(&stream, &sizes) {
            end += read.len();
            match guard.inspect(read) {
                Ok(()) => prop_assert!(end <= accepted),
                Err(error) => {
                    prop_assert!(end > accepted);
                    prop_assert_eq!(Some(error), refusal.clone());
                    break;
                }
            }
        }

        // Everything before the refused byte, in the same reads, to rml_rtmp.
        let prefix = split(&stream[..accepted], &sizes);
        prop_assert_eq!(rml_messages(&prefix).len() as u64, messages);
        let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
        for read in &prefix {
            let Ok(mut results) = session.handle_input(read) else { break };
            while let Some(result) = results.pop() {
                if let ServerSessionResult::RaisedEvent(
                    ServerSessionEvent::ConnectionRequested { request_id, .. }
                    | ServerSessionEvent::PublishStreamRequested { request_id, .. }
                    | ServerSessionEvent::PlayStreamRequested { request_id, .. },
                ) = result
                {
                    if let Ok(more) = session.accept_request(request_id) {
                        results.extend(more);
                    }
                }
            }
        }
    }
}

fn test_limits() -> GuardLimits {
    GuardLimits {
        max_message_bytes: 64 * 1024,
        max_command_bytes: 4096,
        max_amf_depth: 4,
        max_chunk_streams: 6,
        ..GuardLimits::default()
    }
}
