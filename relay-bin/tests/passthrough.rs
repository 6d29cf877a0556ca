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
