//! The guard's behaviour: whole streams from ffmpeg and rml_rtmp, sizes, chunk stream structure, extended
//! timestamps, AMF, and the refusals where rml_rtmp would panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::amf0_walk::{AMF_AVMPLUS, AMF_ECMA_ARRAY, AMF_OBJECT_END};
use super::test_amf0::{amf_number, amf_string, command, connect_command, nested_objects};
use super::*;
use crate::rtmp::chunk::test_stream::{message_chunks, raw_chunk, rml_messages, serialize, set_chunk_size};
use crate::rtmp::chunk::{ChunkError, RTMP_MAX_CHUNK_SIZE};
use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn guard() -> ChunkGuard {
    ChunkGuard::new(GuardLimits::default())
}

/// What ffmpeg sends to publish `key` on app `live`, one packet per write.
fn ffmpeg_publish() -> Vec<Vec<u8>> {
    let mut serializer = ChunkSerializer::new();
    let mut packets = vec![
        serializer
            .set_max_chunk_size(4096, RtmpTimestamp::new(0))
            .unwrap()
            .bytes,
    ];
    packets.push(serialize(&mut serializer, connect_command("live"), 0, 0));
    packets.push(serialize(
        &mut serializer,
        RtmpMessage::WindowAcknowledgement { size: 2_500_000 },
        0,
        0,
    ));
    let key = || Amf0Value::Utf8String("key".to_string());
    packets.push(serialize(
        &mut serializer,
        command("releaseStream", 2.0, vec![key()]),
        0,
        0,
    ));
    packets.push(serialize(
        &mut serializer,
        command("FCPublish", 3.0, vec![key()]),
        0,
        0,
    ));
    packets.push(serialize(
        &mut serializer,
        command("createStream", 4.0, Vec::new()),
        0,
        0,
    ));
    let live = Amf0Value::Utf8String("live".to_string());
    packets.push(serialize(
        &mut serializer,
        command("publish", 5.0, vec![key(), live]),
        0,
        1,
    ));
    let mut metadata = HashMap::new();
    metadata.insert("width".to_string(), Amf0Value::Number(3840.0));
    metadata.insert("height".to_string(), Amf0Value::Number(2160.0));
    metadata.insert("videocodecid".to_string(), Amf0Value::Number(7.0));
    let data_frame = RtmpMessage::Amf0Data {
        values: vec![
            Amf0Value::Utf8String("@setDataFrame".to_string()),
            Amf0Value::Utf8String("onMetaData".to_string()),
            Amf0Value::Object(metadata),
        ],
    };
    packets.push(serialize(&mut serializer, data_frame, 0, 1));
    let video = |len: usize, fill: u8| RtmpMessage::VideoData {
        data: Bytes::from(vec![fill; len]),
    };
    let audio = |len: usize| RtmpMessage::AudioData {
        data: Bytes::from(vec![0xAF; len]),
    };
    packets.push(serialize(&mut serializer, video(48, 0x17), 0, 1));
    packets.push(serialize(&mut serializer, audio(4), 0, 1));
    packets.push(serialize(&mut serializer, video(300_000, 0x17), 0, 1));
    for frame in 1..20u32 {
        packets.push(serialize(&mut serializer, audio(300), frame * 21, 1));
        packets.push(serialize(&mut serializer, video(9_000, 0x27), frame * 33, 1));
    }
    packets
}

// ---- whole streams ----------------------------------------------------------------------------------

#[test]
fn ffmpeg_publish_passes_in_one_piece_and_byte_by_byte() {
    let packets = ffmpeg_publish();
    let all: Vec<u8> = packets.concat();

    let mut whole = guard();
    whole.inspect(&all).unwrap();
    assert_eq!(whole.messages(), packets.len() as u64);
    assert_eq!(whole.bytes(), all.len() as u64);
    assert_eq!(whole.chunk_size(), 4096);

    let mut bytewise = guard();
    for byte in &all {
        bytewise.inspect(std::slice::from_ref(byte)).unwrap();
    }
    assert_eq!(bytewise.messages(), packets.len() as u64);
    assert_eq!(rml_messages(&[&all]).len(), packets.len());
}

#[test]
fn ffmpeg_publish_reaches_the_session_through_the_guard() {
    let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
    let mut guard = guard();
    let (mut connected, mut published, mut video) = (false, false, 0);
    for packet in ffmpeg_publish() {
        guard.inspect(&packet).unwrap();
        let mut results = session.handle_input(&packet).unwrap();
        while let Some(result) = results.pop() {
            let ServerSessionResult::RaisedEvent(event) = result else {
                continue;
            };
            match event {
                ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                    connected = true;
                    results.extend(session.accept_request(request_id).unwrap());
                }
                ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                    published = true;
                    results.extend(session.accept_request(request_id).unwrap());
                }
                ServerSessionEvent::VideoDataReceived { .. } => video += 1,
                _ => {}
            }
        }
    }
    assert!(connected && published);
    assert_eq!(video, 21);
}

#[test]
fn set_chunk_size_then_large_video_split_at_the_new_size() {
    let mut serializer = ChunkSerializer::new();
    let mut bytes = serializer
        .set_max_chunk_size(60_000, RtmpTimestamp::new(0))
        .unwrap()
        .bytes;
    let video = RtmpMessage::VideoData {
        data: Bytes::from(vec![7u8; 1_000_000]),
    };
    bytes.extend(serialize(&mut serializer, video, 40, 1));
    // 17 chunks of at most 60 000 bytes: misread at 128, the stream would not parse.
    let mut guard = guard();
    guard.inspect(&bytes).unwrap();
    assert_eq!((guard.messages(), guard.chunk_size()), (2, 60_000));
    assert!(guard.decoder.is_idle());
    assert_eq!(rml_messages(&[&bytes])[1].data.len(), 1_000_000);
}

#[test]
fn chunk_size_change_applies_after_its_message_only() {
    // The SetChunkSize and the first chunk of the next message come in one read.
    let mut bytes = set_chunk_size(1);
    bytes.extend(message_chunks(5, 8, 1, &[1, 2, 3], 1));
    let mut guard = guard();
    guard.inspect(&bytes).unwrap();
    assert_eq!((guard.messages(), guard.chunk_size()), (2, 1));
    assert_eq!(rml_messages(&[&bytes])[1].data.as_ref(), &[1, 2, 3]);
}

#[test]
fn zero_length_message_completes_with_its_header() {
    let mut guard = guard();
    guard.inspect(&raw_chunk(0, 4, 0, 0, 9, 1, None, &[])).unwrap();
    assert_eq!(guard.messages(), 1);
}

// ---- sizes --------------------------------------------------------------------------------------------

#[test]
fn sixteen_mib_message_is_refused_before_anything_is_buffered() {
    let mut guard = guard();
    guard.inspect(&set_chunk_size(RTMP_MAX_CHUNK_SIZE)).unwrap();
    let header = raw_chunk(0, 4, 0, 0xFF_FFFF, 9, 1, None, &[]);
    let error = guard.inspect(&header).unwrap_err();
    assert_eq!(
        error,
        GuardError::Chunk(ChunkError::MessageTooLarge {
            csid: 4,
            type_id: 9,
            length: 0xFF_FFFF,
            limit: 8 << 20
        })
    );
    // Nothing kept but the 4-byte SetChunkSize before it.
    assert!(guard.payload.capacity() <= 8);
}

#[test]
fn commands_and_control_messages_have_the_command_limit() {
    let limits = GuardLimits::default();
    for type_id in [1, 4, 6, 15, 17, 18, 19, 20] {
        let mut guard = guard();
        let header = raw_chunk(0, 3, 0, 64 * 1024 + 1, type_id, 0, None, &[]);
        assert!(matches!(
            guard.inspect(&header),
            Err(GuardError::Chunk(ChunkError::MessageTooLarge { limit, .. })) if limit == limits.max_command_bytes
        ));
    }
    // Unknown and media types: the message limit.
    guard()
        .inspect(&raw_chunk(0, 3, 0, 64 * 1024 + 1, 0, 0, None, &[]))
        .unwrap();
    guard()
        .inspect(&raw_chunk(0, 3, 0, 8 << 20, 9, 0, None, &[]))
        .unwrap();
}

#[test]
fn chunk_sizes_out_of_range_are_refused() {
    for size in [0, RTMP_MAX_CHUNK_SIZE + 1, 0x8000_0000, u32::MAX] {
        let error = guard().inspect(&set_chunk_size(size)).unwrap_err();
        assert_eq!(
            error,
            GuardError::Chunk(ChunkError::ChunkSizeOutOfRange {
                size,
                limit: RTMP_MAX_CHUNK_SIZE
            })
        );
    }
    let mut guard = guard();
    guard.inspect(&set_chunk_size(RTMP_MAX_CHUNK_SIZE)).unwrap();
    assert_eq!(guard.chunk_size(), RTMP_MAX_CHUNK_SIZE);
}

#[test]
fn short_set_chunk_size_is_refused() {
    let error = guard()
        .inspect(&raw_chunk(0, 2, 0, 2, 1, 0, None, &[0, 1]))
        .unwrap_err();
    assert_eq!(
        error,
        GuardError::Chunk(ChunkError::ShortControlMessage {
            type_id: 1,
            length: 2
        })
    );
}

#[test]
fn window_ack_size_that_would_overflow_rml_is_refused() {
    let ack = |size: u32| raw_chunk(0, 2, 0, 4, 5, 0, None, &size.to_be_bytes());
    guard().inspect(&ack(2_500_000)).unwrap();
    let error = guard().inspect(&ack(0x8000_0000)).unwrap_err();
    assert_eq!(
        error,
        GuardError::WindowAckSizeOutOfRange {
            size: 0x8000_0000,
            min: 4096
        }
    );
}

#[test]
fn a_window_ack_size_so_small_that_rml_would_ack_every_read_is_refused() {
    let ack = |size: u32| raw_chunk(0, 2, 0, 4, 5, 0, None, &size.to_be_bytes());
    guard().inspect(&ack(4096)).unwrap();
    for size in [0, 1, 4095] {
        let error = guard().inspect(&ack(size)).unwrap_err();
        assert_eq!(error, GuardError::WindowAckSizeOutOfRange { size, min: 4096 });
    }
}

#[test]
fn a_flood_of_create_stream_commands_is_refused() {
    let mut guard = ChunkGuard::new(GuardLimits {
        max_commands: 10,
        ..GuardLimits::default()
    });
    let mut serializer = ChunkSerializer::new();
    for i in 0..10 {
        let bytes = serialize(
            &mut serializer,
            command("createStream", f64::from(i), Vec::new()),
            0,
            0,
        );
        guard.inspect(&bytes).unwrap();
    }
    let bytes = serialize(&mut serializer, command("createStream", 11.0, Vec::new()), 0, 0);
    assert_eq!(
        guard.inspect(&bytes),
        Err(GuardError::TooManyCommands { limit: 10 })
    );
}

#[test]
fn too_many_chunk_streams_are_refused() {
    let mut guard = ChunkGuard::new(GuardLimits {
        max_chunk_streams: 3,
        ..GuardLimits::default()
    });
    for csid in [3, 64 + 200, 64 + 1 + 256 * 2] {
        guard
            .inspect(&raw_chunk(0, csid, 0, 1, 8, 1, None, &[0]))
            .unwrap();
    }
    // A known chunk stream is fine, a fourth one is not.
    guard.inspect(&raw_chunk(1, 3, 10, 1, 8, 0, None, &[0])).unwrap();
    let error = guard
        .inspect(&raw_chunk(0, 4, 0, 1, 8, 1, None, &[0]))
        .unwrap_err();
    assert_eq!(
        error,
        GuardError::Chunk(ChunkError::TooManyChunkStreams { limit: 3 })
    );
}

// ---- chunk stream structure -------------------------------------------------------------------------

#[test]
fn interleaved_chunk_streams_are_refused() {
    let video = message_chunks(6, 9, 1, &[9; 300], 128);
    let mut guard = guard();
    guard.inspect(&video[..12 + 128]).unwrap();
    let audio = raw_chunk(0, 4, 0, 100, 8, 1, None, &[8; 100]);
    let error = guard.inspect(&audio).unwrap_err();
    assert_eq!(
        error,
        GuardError::Chunk(ChunkError::InterleavedChunkStreams {
            in_progress: 6,
            got: 4
        })
    );
}

#[test]
fn abort_is_a_plain_message_and_cannot_interrupt_one() {
    // rml_rtmp ignores Abort (it discards nothing), so the guard does too.
    let abort = raw_chunk(0, 2, 0, 4, 2, 0, None, &6u32.to_be_bytes());
    let mut guard = guard();
    guard.inspect(&abort).unwrap();
    let video = message_chunks(6, 9, 1, &[9; 300], 128);
    guard.inspect(&video[..12 + 128]).unwrap();
    let error = guard
        .inspect(&raw_chunk(1, 2, 0, 4, 2, 0, None, &6u32.to_be_bytes()))
        .unwrap_err();
    assert_eq!(
        error,
        GuardError::Chunk(ChunkError::InterleavedChunkStreams {
            in_progress: 6,
            got: 2
        })
    );
}

#[test]
fn compressed_header_on_an_unknown_chunk_stream_is_refused_at_once() {
    for (fmt, first) in [(3u8, 0xC5u8), (2, 0x85), (1, 0x45)] {
        let error = guard().inspect(&[first]).unwrap_err();
        assert_eq!(
            error,
            GuardError::Chunk(ChunkError::NoPreviousHeader { csid: 5, fmt })
        );
    }
}

#[test]
fn header_changing_length_or_type_mid_message_is_refused() {
    let video = message_chunks(6, 9, 1, &[9; 300], 128);
    let mut guard_length = guard();
    guard_length.inspect(&video[..12 + 128]).unwrap();
    let error = guard_length
        .inspect(&raw_chunk(1, 6, 0, 10, 9, 0, None, &[]))
        .unwrap_err();
    assert_eq!(
        error,
        GuardError::Chunk(ChunkError::LengthChanged {
            csid: 6,
            in_progress: 300,
            got: 10
        })
    );

    let mut guard_type = guard();
    guard_type.inspect(&video[..12 + 128]).unwrap();
    let error = guard_type
        .inspect(&raw_chunk(1, 6, 0, 300, 20, 0, None, &[]))
        .unwrap_err();
    assert_eq!(
        error,
        GuardError::Chunk(ChunkError::TypeChanged {
            csid: 6,
            in_progress: 9,
            got: 20
        })
    );
}

#[test]
fn repeated_full_header_mid_message_continues_it_as_rml_does() {
    let mut bytes = raw_chunk(0, 6, 0, 300, 9, 1, None, &[1; 128]);
    bytes.extend(raw_chunk(0, 6, 0, 300, 9, 1, None, &[2; 128]));
    bytes.extend(raw_chunk(2, 6, 5, 0, 0, 0, None, &[3; 44]));
    let mut guard = guard();
    guard.inspect(&bytes).unwrap();
    assert_eq!(guard.messages(), 1);
    assert_eq!(rml_messages(&[&bytes])[0].data.len(), 300);
}

// ---- extended timestamps --------------------------------------------------------------------------

#[test]
fn extended_timestamp_on_fmt3_continuation_is_read_as_rml_reads_it() {
    // rml_rtmp's own test stream: chunk size 4, a fmt 0 header with ts 0xFFFFFF and an extended
    // timestamp, then a fmt 3 continuation that carries the extended timestamp again.
    let mut bytes = set_chunk_size(4);
    bytes.extend([
        0x06, 0xff, 0xff, 0xff, 0, 0, 7, 9, 1, 0, 0, 0, 0x01, 0xff, 0xff, 0xff, 1, 2, 3, 4,
    ]);
    bytes.extend([0xc6, 0x01, 0xff, 0xff, 0xff, 5, 6, 7]);
    // And a new message on the same chunk stream with fmt 3: ts field still 0xFFFFFF.
    bytes.extend([
        0xc6, 0x01, 0x00, 0x00, 0x00, 1, 2, 3, 4, 0xc6, 0x01, 0x00, 0x00, 0x00, 5, 6, 7,
    ]);

    let mut whole = guard();
    whole.inspect(&bytes).unwrap();
    assert_eq!(whole.messages(), 3);
    let mut bytewise = guard();
    for byte in &bytes {
        bytewise.inspect(std::slice::from_ref(byte)).unwrap();
    }
    assert_eq!(bytewise.messages(), 3);

    let messages = rml_messages(&[&bytes]);
    assert_eq!(messages[1].timestamp, RtmpTimestamp::new(0x01ff_ffff));
    assert_eq!(messages[1].data.as_ref(), &[1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(messages[2].data.as_ref(), &[1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn extended_timestamp_from_rml_serializer_passes() {
    let mut serializer = ChunkSerializer::new();
    let mut bytes = Vec::new();
    for timestamp in [0x00FF_FFFE, 0x00FF_FFFF, 0x0100_0000, 0x0200_0000, 5] {
        let video = RtmpMessage::VideoData {
            data: Bytes::from(vec![1u8; 500]),
        };
        bytes.extend(serialize(&mut serializer, video, timestamp, 1));
    }
    let mut guard = guard();
    guard.inspect(&bytes).unwrap();
    assert_eq!(guard.messages(), 5);
    assert_eq!(rml_messages(&[&bytes]).len(), 5);
}

/// A delta header starting a message with an extended timestamp below 0xFFFFFF.
fn small_extended_delta(fmt: u8) -> Vec<u8> {
    let mut bytes = raw_chunk(0, 6, 0xFF_FFFF, 1, 9, 1, Some(0x0100_0000), &[1]);
    bytes.extend(raw_chunk(fmt, 6, 0xFF_FFFF, 1, 9, 1, Some(5), &[2]));
    bytes
}

#[test]
fn small_extended_timestamp_delta_is_refused() {
    for fmt in [1, 2, 3] {
        let error = guard().inspect(&small_extended_delta(fmt)).unwrap_err();
        assert_eq!(error, GuardError::ExtendedTimestampTooSmall { csid: 6, value: 5 });
    }
    // On a full header the value is absolute: fine.
    guard()
        .inspect(&raw_chunk(0, 6, 0xFF_FFFF, 1, 9, 1, Some(5), &[1]))
        .unwrap();
}

// ---- AMF --------------------------------------------------------------------------------------------

fn command_payload(depth: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    amf_string(&mut payload, "connect");
    amf_number(&mut payload, 1.0);
    nested_objects(&mut payload, depth);
    payload
}

#[test]
fn command_nested_ten_thousand_deep_is_refused() {
    let payload = command_payload(10_000);
    let limits = GuardLimits {
        max_command_bytes: 1 << 20,
        ..GuardLimits::default()
    };
    let mut guard = ChunkGuard::new(limits);
    let error = guard
        .inspect(&message_chunks(3, 20, 0, &payload, 128))
        .unwrap_err();
    assert_eq!(error, GuardError::AmfTooDeep { depth: 17, limit: 16 });
}

#[test]
fn nesting_at_the_limit_passes() {
    let payload = command_payload(16);
    let mut guard = guard();
    guard.inspect(&message_chunks(3, 20, 0, &payload, 128)).unwrap();
    assert!(matches!(
        rml_messages(&[&message_chunks(3, 20, 0, &payload, 128)])[0].to_rtmp_message(),
        Ok(RtmpMessage::Amf0Command { .. })
    ));
}

#[test]
fn command_with_fewer_than_three_values_is_refused_where_rml_panics() {
    let mut payload = Vec::new();
    amf_string(&mut payload, "connect");
    amf_number(&mut payload, 1.0);
    let error = guard()
        .inspect(&message_chunks(3, 20, 0, &payload, 128))
        .unwrap_err();
    assert_eq!(
        error,
        GuardError::MissingAmfValues {
            type_id: 20,
            values: 2,
            needed: 3
        }
    );
    // rml_rtmp's `arguments.drain(..3)`:
    let message = MessagePayload {
        timestamp: RtmpTimestamp::new(0),
        type_id: 20,
        message_stream_id: 0,
        data: Bytes::from(payload),
    };
    assert!(catch_unwind(AssertUnwindSafe(|| message.to_rtmp_message())).is_err());
}

#[test]
fn set_data_frame_needs_three_values() {
    let mut short = Vec::new();
    amf_string(&mut short, "@setDataFrame");
    amf_string(&mut short, "onMetaData");
    let error = guard()
        .inspect(&message_chunks(3, 18, 1, &short, 128))
        .unwrap_err();
    assert_eq!(
        error,
        GuardError::MissingAmfValues {
            type_id: 18,
            values: 2,
            needed: 3
        }
    );

    let mut full = short.clone();
    full.extend_from_slice(&[AMF_ECMA_ARRAY, 0, 0, 0, 0, 0, 0, AMF_OBJECT_END]);
    guard().inspect(&message_chunks(3, 18, 1, &full, 128)).unwrap();
    // Other data messages may be short.
    let mut other = Vec::new();
    amf_string(&mut other, "onTextData");
    guard().inspect(&message_chunks(3, 18, 1, &other, 128)).unwrap();
}

#[test]
fn amf3_command_skips_its_leading_zero_and_amf3_data_does_not() {
    let mut command = vec![0];
    command.extend(command_payload(2));
    guard().inspect(&message_chunks(3, 17, 0, &command, 128)).unwrap();
    // rml reads type 15 from the first byte: 0 is a number marker, so the string length is misread.
    let mut data = vec![0];
    amf_string(&mut data, "@setDataFrame");
    assert!(matches!(
        guard().inspect(&message_chunks(3, 15, 1, &data, 128)),
        Err(GuardError::MalformedAmf { .. })
    ));
    let mut avmplus = vec![0, AMF_AVMPLUS, 0x06];
    avmplus.extend(command_payload(1));
    assert!(matches!(
        guard().inspect(&message_chunks(3, 17, 0, &avmplus, 128)),
        Err(GuardError::Amf3Unsupported { offset: 1 })
    ));
}

// ---- state ----------------------------------------------------------------------------------------

#[test]
fn refusal_is_sticky_and_counts_no_bytes() {
    let mut guard = guard();
    guard.inspect(&raw_chunk(0, 4, 0, 1, 9, 1, None, &[1])).unwrap();
    let bytes = guard.bytes();
    let error = guard.inspect(&[0xC5]).unwrap_err();
    assert_eq!(guard.inspect(&[]), Err(error.clone()));
    assert_eq!(
        guard.inspect(&raw_chunk(0, 4, 0, 1, 9, 1, None, &[1])),
        Err(error)
    );
    assert_eq!(guard.bytes(), bytes);
}

/// The refusals above are not theoretical: rml_rtmp panics on these streams.
#[cfg(debug_assertions)]
#[test]
fn rml_panics_on_streams_the_guard_refuses() {
    // Interleaving: a shorter message on another chunk stream while 128 bytes of the video are buffered
    // makes `length - received` underflow.
    let video = message_chunks(6, 9, 1, &[9; 300], 128);
    let mut interleaved = video[..12 + 128].to_vec();
    interleaved.extend(raw_chunk(0, 4, 0, 100, 8, 1, None, &[8; 100]));
    assert!(guard().inspect(&interleaved).is_err());
    assert!(catch_unwind(|| rml_messages(&[&interleaved])).is_err());

    for fmt in [1, 2, 3] {
        let stream = small_extended_delta(fmt);
        assert!(catch_unwind(|| rml_messages(&[&stream])).is_err());
    }
}
