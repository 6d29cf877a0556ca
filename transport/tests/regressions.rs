//! Regression tests for defects found in review: each failed before its fix.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use std::time::{Duration, Instant};
use transport::connection::ack_tracker::AckTracker;
use transport::connection::reassembly::{FragmentOutcome, Reassembler, RecvLimits};
use transport::connection::send_queue::{PathTiming, PushError, SendQueue};
use transport::wire::frame::FragmentHeader;
use transport::{DropReason, MediaFrame, MediaKind};

const TIMING: PathTiming = PathTiming {
    one_way: Duration::from_millis(10),
    repair_round: Duration::from_millis(30),
};

fn hdr(seq: u64, len: u32, offset: u32) -> FragmentHeader {
    FragmentHeader {
        stream: 1,
        seq,
        kind: MediaKind::Audio,
        frame_len: len,
        offset,
        age_us: 0,
        budget_us: None,
    }
}

fn frame(kind: MediaKind, now: Instant, budget: Option<Duration>) -> MediaFrame {
    MediaFrame {
        kind,
        bytes: Bytes::from(vec![1u8; 100]),
        capture: now,
        budget,
    }
}

fn notices(q: &mut SendQueue) -> Vec<(u64, DropReason)> {
    std::iter::from_fn(|| q.pop_notice())
        .map(|n| (n.seq, n.reason))
        .collect()
}

/// Complete frames waiting behind a missing one count against the receiver's byte bound.
#[test]
fn frames_waiting_behind_a_gap_count_against_the_buffer_bound() {
    let now = Instant::now();
    let mut r = Reassembler::new(RecvLimits {
        max_buffered_bytes: 10_000,
        ..RecvLimits::default()
    });
    let data = Bytes::from(vec![7u8; 1000]);
    let mut refused = 0;
    for seq in 1..=300u64 {
        for i in 0..4u32 {
            if r.on_fragment(now, &hdr(seq, 4000, i * 1000), data.clone()) == FragmentOutcome::Refused {
                refused += 1;
            }
        }
        if r.on_fragment(now, &hdr(1000 + seq, 1000, 0), data.clone()) == FragmentOutcome::Refused {
            refused += 1;
        }
    }
    assert!(r.buffered_bytes() <= 10_000, "held {}", r.buffered_bytes());
    assert!(refused > 1000);
}

/// A frame larger than a receiver accepts is refused at the sender, not black-holed at the receiver.
#[test]
fn frames_over_the_protocol_limit_are_refused_at_the_sender() {
    let now = Instant::now();
    let mut q = SendQueue::new(1200, 1 << 30);
    let big = MediaFrame {
        kind: MediaKind::Key,
        bytes: Bytes::from(vec![0u8; 17 << 20]),
        capture: now,
        budget: None,
    };
    assert!(matches!(q.push(1, big), Err(PushError::TooLarge(_))));
    assert!(RecvLimits::default().max_frame_bytes >= transport::wire::frame::MAX_FRAME_LEN);
}

/// An old GOP's inter frame that expires after the next keyframe was queued breaks only its own GOP.
#[test]
fn a_late_drop_in_the_old_gop_leaves_the_new_gop_alone() {
    for key_acked in [true, false] {
        let now = Instant::now();
        let mut q = SendQueue::new(1200, 1 << 30);
        q.push(1, frame(MediaKind::Key, now, None)).unwrap(); // 0
        q.push(1, frame(MediaKind::Inter, now, Some(Duration::from_millis(100))))
            .unwrap(); // 1: old GOP
        q.push(1, frame(MediaKind::Key, now, None)).unwrap(); // 2: new GOP
        if key_acked {
            let e0 = q.next_fragment(now, 1400, TIMING).unwrap();
            let e2 = q.next_fragment(now, 1400, TIMING).unwrap();
            q.on_acked(&e0.chunk);
            q.on_acked(&e2.chunk);
        }
        q.push(1, frame(MediaKind::Inter, now, None)).unwrap(); // 3: depends on 2
        q.expire(now + Duration::from_millis(200), TIMING);
        q.push(1, frame(MediaKind::Inter, now, None)).unwrap(); // 4
        assert_eq!(
            notices(&mut q),
            vec![(1, DropReason::Deadline)],
            "key acked: {key_acked}"
        );
    }
}

/// A long-budget frame queued first does not hide an expired frame queued after it.
#[test]
fn expiry_is_not_blocked_by_an_earlier_long_budget_frame() {
    let now = Instant::now();
    let mut q = SendQueue::new(1200, 1 << 30);
    q.push(1, frame(MediaKind::Audio, now, Some(Duration::from_secs(60))))
        .unwrap();
    q.push(
        2,
        frame(MediaKind::Disposable, now, Some(Duration::from_millis(100))),
    )
    .unwrap();
    assert!(q.next_expiry(TIMING).unwrap() < now + Duration::from_millis(100));
    q.expire(now + Duration::from_secs(5), TIMING);
    assert_eq!(notices(&mut q), vec![(0, DropReason::Deadline)]);
}

/// Packet numbers at the top of the range do not overflow the ACK tracker.
#[test]
fn the_ack_tracker_survives_extreme_packet_numbers() {
    let now = Instant::now();
    let mut t = AckTracker::new(2, Duration::from_millis(5), Duration::from_millis(20));
    t.on_packet(now, u64::MAX, true);
    t.on_packet(now, 5, true);
    t.on_packet(now, u64::MAX - 1, true);
    assert_eq!(t.largest(), Some(u64::MAX));
}
