//! Codecs the node does not know pass through as opaque tags, and 32-bit timestamps wrap and step back
//! without harm: enhanced-RTMP HEVC (`hvc1`) video and Opus audio, published across the 2^32 ms wrap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;

fn hevc(frame_type: u8, packet_type: u8, payload: &[u8]) -> Bytes {
    let mut body = vec![0x80 | (frame_type << 4) | packet_type];
    body.extend_from_slice(b"hvc1");
    body.extend_from_slice(payload);
    Bytes::from(body)
}

fn opus(packet_type: u8, payload: &[u8]) -> Bytes {
    let mut body = vec![(9 << 4) | packet_type];
    body.extend_from_slice(b"Opus");
    body.extend_from_slice(payload);
    Bytes::from(body)
}

#[test]
fn enhanced_rtmp_hevc_and_opus_pass_through_across_the_timestamp_wrap() {
    let scratch = Scratch::new("opaque");
    let node = Popline::start(&scratch.0, &base_config(&scratch.0));
    let mut player = rtmp_client::Client::connect(node.rtmp, "live", None);
    player.play("opaque");
    let mut publisher = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(publisher.try_publish("opaque"));

    let mut sent = Vec::new();
    let mut send = |publisher: &mut rtmp_client::Client, video: bool, data: Bytes, timestamp: u32| {
        publisher.send_media(video, data.clone(), timestamp);
        sent.push((video, data, timestamp));
    };
    // Sequence starts, then 3 s of 25 fps video (a keyframe each second) and 50 Hz audio, starting 2 s before
    // the 32-bit wrap; one video frame steps 15 ms back in time (a publisher bug the node must survive).
    let start = u32::MAX - 2_000;
    send(&mut publisher, true, hevc(1, 0, &[1, 2, 3, 4, 5]), start);
    send(&mut publisher, false, opus(0, b"OpusHead-config"), start);
    for i in 0..75u32 {
        let mut ts = start.wrapping_add(i * 40);
        if i == 30 {
            ts = ts.wrapping_sub(55);
        }
        let frame_type = if i % 25 == 0 { 1 } else { 2 };
        send(
            &mut publisher,
            true,
            hevc(frame_type, 3, &vec![i as u8; 3000]),
            ts,
        );
        send(
            &mut publisher,
            false,
            opus(1, &[i as u8; 80]),
            start.wrapping_add(i * 40 + 20),
        );
    }
    let received = player.collect_media(sent.len(), Duration::from_secs(10));
    let summary: Vec<(bool, u32, usize)> = received
        .iter()
        .map(|m| (m.video, m.timestamp, m.data.len()))
        .collect();
    assert_eq!(
        received.len(),
        sent.len(),
        "every tag must reach the player: got {summary:?}\n{}",
        node.log_text()
    );
    let video_in: Vec<&Bytes> = sent.iter().filter(|m| m.0).map(|m| &m.1).collect();
    let video_out: Vec<&Bytes> = received.iter().filter(|m| m.video).map(|m| &m.data).collect();
    assert_eq!(
        video_in, video_out,
        "video tags must arrive byte for byte, in order"
    );
    let audio_in: Vec<&Bytes> = sent.iter().filter(|m| !m.0).map(|m| &m.1).collect();
    let audio_out: Vec<&Bytes> = received.iter().filter(|m| !m.video).map(|m| &m.data).collect();
    assert_eq!(
        audio_in, audio_out,
        "audio tags must arrive byte for byte, in order"
    );

    // Per track, timestamps never go back (in 32-bit wrapping arithmetic), and they did cross the wrap.
    for video in [true, false] {
        let stamps: Vec<u32> = received
            .iter()
            .filter(|m| m.video == video)
            .map(|m| m.timestamp)
            .collect();
        for pair in stamps.windows(2) {
            assert!(
                (pair[1].wrapping_sub(pair[0]) as i32) >= 0,
                "{video}: {pair:?} goes back"
            );
        }
        assert!(stamps.first().unwrap() > &u32::MAX.wrapping_sub(3_000));
        assert!(stamps.last().unwrap() < &2_000, "the wrap was crossed");
    }
}

/// An AVC keyframe or inter frame tag (legacy FLV header, NALU packet) with a recognisable payload.
fn avc(key: bool, marker: u8) -> Bytes {
    let mut body = vec![
        if key { 0x17 } else { 0x27 },
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        2,
        0x65,
        marker,
    ];
    body.extend_from_slice(&[marker; 500]);
    Bytes::from(body)
}

#[test]
fn viewers_stay_through_a_publisher_reconnect_within_the_grace_period() {
    let scratch = Scratch::new("reconnect");
    let config = base_config(&scratch.0).replace("unpublish_grace_ms = 300", "unpublish_grace_ms = 3000");
    let node = Popline::start(&scratch.0, &config);
    let mut player = rtmp_client::Client::connect(node.rtmp, "live", None);
    player.play("obs");

    let mut first = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(first.try_publish("obs"));
    first.send_media(true, avc(true, 1), 0);
    first.send_media(true, avc(false, 1), 40);
    let before = player.collect_media(2, Duration::from_secs(5));
    assert_eq!(before.len(), 2);
    drop(first); // the encoder's connection drops (OBS reconnects in a second or two)

    std::thread::sleep(Duration::from_millis(1_000));
    let mut second = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(
        second.try_publish("obs"),
        "the stream must be free for the reconnecting publisher"
    );
    second.send_media(true, avc(false, 2), 0); // an inter frame before any keyframe: not decodable, not sent
    second.send_media(true, avc(true, 2), 40);
    second.send_media(true, avc(false, 2), 80);
    let after = player.collect_media(2, Duration::from_secs(5));
    assert_eq!(
        after.len(),
        2,
        "the viewer keeps playing the new publisher: {after:?}"
    );
    assert_eq!(
        after[0].data,
        avc(true, 2),
        "it resumes on the new publisher's keyframe"
    );
    assert_eq!(after[1].data, avc(false, 2));
}
