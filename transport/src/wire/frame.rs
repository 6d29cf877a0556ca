//! The frames carried inside a data packet's protected payload.
//!
//! ```text
//! 0x00 PADDING   (the rest of the payload)
//! 0x01 PING
//! 0x02 ACK       largest | ack_delay_us | range_count | first_range | (gap | range)*      (RFC 9000 §19.3 layout)
//! 0x03 FRAGMENT  stream | seq | kind u8 | frame_len | offset | age_us | budget_us+1 (0 = none) | len | data
//! 0x04 DROPPED   stream | seq | kind u8 | reason u8
//! 0x05 CLOSE     code | reason_len | reason (UTF-8)
//! 0x06 PATH_CHALLENGE  data u64   (RFC 9000 §19.17: the peer must echo it from the path it came on)
//! 0x07 PATH_RESPONSE   data u64
//! 0x08 TAIL_PROBE      (follows a burst's last packet: not ack-eliciting, but a packet carrying it that
//!                       reveals a gap, or comes while a gap is still fresh, is acknowledged at once)
//! ```
//! All integers are varints unless a width is given.

use super::codec::{put_varint, varint_len, Reader, StackBytes, WireError};
use crate::media::{DropReason, MediaKind};
use std::ops::{Range, RangeInclusive};

/// Most ACK ranges one ACK frame may carry (decoder bound and encoder cap).
pub const MAX_ACK_RANGES: usize = 64;
/// Largest media frame the protocol carries, in bytes (also the receiver's default limit, so that a sender
/// never queues a frame its peer will refuse).
pub const MAX_FRAME_LEN: u32 = 16 << 20;
/// Longest close reason kept, in bytes.
pub const MAX_REASON_LEN: usize = 256;

const PADDING: u8 = 0x00;
const PING: u8 = 0x01;
const ACK: u8 = 0x02;
const FRAGMENT: u8 = 0x03;
const DROPPED: u8 = 0x04;
const CLOSE: u8 = 0x05;
const PATH_CHALLENGE: u8 = 0x06;
const PATH_RESPONSE: u8 = 0x07;
const TAIL_PROBE: u8 = 0x08;

/// Bytes of a PATH_CHALLENGE or PATH_RESPONSE frame.
pub const PATH_FRAME_LEN: usize = 9;

/// Acknowledged packet-number ranges, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckFrame {
    /// Time the receiver held the largest packet before acknowledging it, in microseconds.
    pub ack_delay_us: u64,
    /// Disjoint ranges in descending order; the first one holds the largest acknowledged packet.
    pub ranges: Vec<RangeInclusive<u64>>,
}

impl AckFrame {
    /// The largest acknowledged packet number.
    pub fn largest(&self) -> Option<u64> {
        self.ranges.first().map(|r| *r.end())
    }

    /// Appends the frame, writing at most [`MAX_ACK_RANGES`] ranges.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let Some(first) = self.ranges.first() else { return };
        let ranges = &self.ranges[..self.ranges.len().min(MAX_ACK_RANGES)];
        out.push(ACK);
        put_varint(out, *first.end());
        put_varint(out, self.ack_delay_us);
        put_varint(out, (ranges.len() - 1) as u64);
        put_varint(out, first.end() - first.start());
        let mut prev_start = *first.start();
        for r in &ranges[1..] {
            put_varint(out, prev_start.saturating_sub(*r.end()).saturating_sub(2));
            put_varint(out, r.end() - r.start());
            prev_start = *r.start();
        }
    }

    /// An upper bound on the encoded size.
    pub fn max_encoded_len(&self) -> usize {
        1 + 8 + 8 + 2 + self.ranges.len().min(MAX_ACK_RANGES) * 16
    }

    fn decode(r: &mut Reader<'_>) -> Result<AckFrame, WireError> {
        let largest = r.varint()?;
        let ack_delay_us = r.varint()?;
        let count = r.length("ack range count", MAX_ACK_RANGES - 1)?;
        let first = r.varint()?;
        let start = largest.checked_sub(first).ok_or(WireError::Invalid {
            field: "ack range",
            value: first,
        })?;
        let mut ranges = Vec::with_capacity(count + 1);
        ranges.push(start..=largest);
        let mut prev_start = start;
        for _ in 0..count {
            let gap = r.varint()?;
            let len = r.varint()?;
            let end =
                prev_start
                    .checked_sub(gap)
                    .and_then(|v| v.checked_sub(2))
                    .ok_or(WireError::Invalid {
                        field: "ack gap",
                        value: gap,
                    })?;
            let start = end.checked_sub(len).ok_or(WireError::Invalid {
                field: "ack range",
                value: len,
            })?;
            ranges.push(start..=end);
            prev_start = start;
        }
        Ok(AckFrame { ack_delay_us, ranges })
    }
}

/// The header of one fragment of a media frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Stream the frame belongs to.
    pub stream: u32,
    /// The frame's sequence number in its stream.
    pub seq: u64,
    /// The frame's kind.
    pub kind: MediaKind,
    /// Whole frame length in bytes.
    pub frame_len: u32,
    /// Offset of this fragment in the frame.
    pub offset: u32,
    /// The frame's estimated age when this fragment reaches the receiver, in microseconds.
    pub age_us: u64,
    /// End-to-end latency budget from capture, in microseconds; `None` = no deadline.
    pub budget_us: Option<u64>,
}

/// Largest age a fragment header carries, in microseconds (about 17.9 minutes): older frames are sent as this
/// old, so the field never takes more than 4 bytes and a frame's fragment size holds for its whole life.
pub const MAX_AGE_US: u64 = (1 << 30) - 1;

impl FragmentHeader {
    /// The longest encoding of any fragment header: the type and kind bytes, and seven varints of at most 8
    /// bytes each.
    pub const MAX_LEN: usize = 2 + 7 * 8;

    /// The most bytes the header of any fragment of this frame can take, whatever its offset, its age and
    /// its data length (up to `max_data_len`): sizes a frame's fragments so every one, first send or repair,
    /// fits the same room.
    pub fn max_encoded_len(
        stream: u32,
        seq: u64,
        frame_len: u32,
        budget_us: Option<u64>,
        max_data_len: usize,
    ) -> usize {
        1 + varint_len(u64::from(stream))
            + varint_len(seq)
            + 1
            + 2 * varint_len(u64::from(frame_len))
            + varint_len(MAX_AGE_US)
            + varint_len(budget_us.map_or(0, |b| b.saturating_add(1)))
            + varint_len(max_data_len as u64)
    }

    /// Encoded size of this header followed by `data_len` bytes, excluding the data.
    pub fn encoded_len(&self, data_len: usize) -> usize {
        1 + varint_len(u64::from(self.stream))
            + varint_len(self.seq)
            + 1
            + varint_len(u64::from(self.frame_len))
            + varint_len(u64::from(self.offset))
            + varint_len(self.age_us.min(MAX_AGE_US))
            + varint_len(self.budget_us.map_or(0, |b| b.saturating_add(1)))
            + varint_len(data_len as u64)
    }

    /// Appends the fragment header and `data`.
    pub fn encode(&self, data: &[u8], out: &mut Vec<u8>) {
        let mut h = StackBytes::<{ FragmentHeader::MAX_LEN + 8 }>::default();
        h.u8(FRAGMENT);
        h.varint(u64::from(self.stream));
        h.varint(self.seq);
        h.u8(self.kind.code());
        h.varint(u64::from(self.frame_len));
        h.varint(u64::from(self.offset));
        h.varint(self.age_us.min(MAX_AGE_US));
        h.varint(self.budget_us.map_or(0, |b| b.saturating_add(1)));
        h.varint(data.len() as u64);
        out.reserve(h.as_slice().len() + data.len());
        out.extend_from_slice(h.as_slice());
        out.extend_from_slice(data);
    }
}

/// A frame the sender gave up on, so the receiver stops waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DroppedNotice {
    /// Stream.
    pub stream: u32,
    /// The dropped frame's sequence number.
    pub seq: u64,
    /// Its kind (the receiver needs it to know whether the GOP broke).
    pub kind: MediaKind,
    /// Why it was dropped.
    pub reason: DropReason,
}

impl DroppedNotice {
    /// Upper bound on the encoded size.
    pub const MAX_LEN: usize = 1 + 5 + 9 + 2;

    /// Appends the frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(DROPPED);
        put_varint(out, u64::from(self.stream));
        put_varint(out, self.seq);
        out.push(self.kind.code());
        out.push(self.reason.code());
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Padding to the end of the payload.
    Padding,
    /// Asks for an acknowledgement.
    Ping,
    /// Acknowledgement ranges.
    Ack(AckFrame),
    /// A piece of a media frame; `data` is its range within the payload.
    Fragment(FragmentHeader, Range<usize>),
    /// A frame the sender dropped.
    Dropped(DroppedNotice),
    /// The peer closes the connection.
    Close {
        /// Application or protocol error code (0 = no error).
        code: u64,
        /// Human-readable reason.
        reason: String,
    },
    /// The peer checks that we receive on the path it came from: answer with a PATH_RESPONSE.
    PathChallenge(u64),
    /// The answer to our PATH_CHALLENGE.
    PathResponse(u64),
    /// Sent a little after a burst's last packet, so that the receiver sees a gap at once if that packet was
    /// lost. Not ack-eliciting: a receiver acknowledges its packet at once only if it reveals a gap or a gap
    /// is still fresh (else with the next ACK), so a burst that arrived whole costs no ACK more.
    TailProbe,
}

impl Frame {
    /// True for frames that ask the receiver to acknowledge the packet.
    pub fn is_ack_eliciting(&self) -> bool {
        !matches!(
            self,
            Frame::Padding | Frame::Ack(_) | Frame::Close { .. } | Frame::TailProbe
        )
    }
}

/// Appends a TAIL_PROBE frame.
pub fn encode_tail_probe(out: &mut Vec<u8>) {
    out.push(TAIL_PROBE);
}

/// Appends a PING frame.
pub fn encode_ping(out: &mut Vec<u8>) {
    out.push(PING);
}

/// Appends a PATH_CHALLENGE frame.
pub fn encode_path_challenge(data: u64, out: &mut Vec<u8>) {
    out.push(PATH_CHALLENGE);
    out.extend_from_slice(&data.to_be_bytes());
}

/// Appends a PATH_RESPONSE frame.
pub fn encode_path_response(data: u64, out: &mut Vec<u8>) {
    out.push(PATH_RESPONSE);
    out.extend_from_slice(&data.to_be_bytes());
}

/// Appends a CLOSE frame.
pub fn encode_close(code: u64, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out.push(CLOSE);
    put_varint(out, code);
    put_varint(out, end as u64);
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// Iterates over the frames of a decrypted payload. After the first error it yields nothing more: a packet
/// with one bad frame is malformed as a whole.
#[derive(Debug)]
pub struct Frames<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> Frames<'a> {
    /// Starts decoding `payload`.
    pub fn new(payload: &'a [u8]) -> Self {
        Frames {
            r: Reader::new(payload),
            failed: false,
        }
    }

    /// Reads the `stream | seq | kind` prefix that FRAGMENT and DROPPED share.
    fn frame_ref(&mut self) -> Result<(u32, u64, MediaKind), WireError> {
        let stream = self.r.varint_u32("stream id")?;
        let seq = self.r.varint()?;
        let code = self.r.u8()?;
        let kind = MediaKind::from_code(code).ok_or(WireError::Invalid {
            field: "media kind",
            value: u64::from(code),
        })?;
        Ok((stream, seq, kind))
    }

    fn next_frame(&mut self) -> Result<Frame, WireError> {
        let ty = self.r.u8()?;
        Ok(match ty {
            PADDING => {
                let n = self.r.remaining();
                self.r.take(n)?;
                Frame::Padding
            }
            PING => Frame::Ping,
            TAIL_PROBE => Frame::TailProbe,
            ACK => Frame::Ack(AckFrame::decode(&mut self.r)?),
            FRAGMENT => {
                let (stream, seq, kind) = self.frame_ref()?;
                let frame_len = self.r.varint_u32("frame length")?;
                if frame_len > MAX_FRAME_LEN {
                    return Err(WireError::Invalid {
                        field: "frame length",
                        value: u64::from(frame_len),
                    });
                }
                let offset = self.r.varint_u32("fragment offset")?;
                let age_us = self.r.varint()?;
                let budget = self.r.varint()?;
                let len = self.r.length("fragment length", self.r.remaining())?;
                if u64::from(offset) + len as u64 > u64::from(frame_len) {
                    return Err(WireError::Invalid {
                        field: "fragment end",
                        value: u64::from(offset) + len as u64,
                    });
                }
                let start = self.r.position();
                self.r.take(len)?;
                let header = FragmentHeader {
                    stream,
                    seq,
                    kind,
                    frame_len,
                    offset,
                    age_us,
                    budget_us: budget.checked_sub(1),
                };
                Frame::Fragment(header, start..start + len)
            }
            DROPPED => {
                let (stream, seq, kind) = self.frame_ref()?;
                let code = self.r.u8()?;
                let reason = DropReason::from_code(code).ok_or(WireError::Invalid {
                    field: "drop reason",
                    value: u64::from(code),
                })?;
                Frame::Dropped(DroppedNotice {
                    stream,
                    seq,
                    kind,
                    reason,
                })
            }
            CLOSE => {
                let code = self.r.varint()?;
                let len = self.r.length("close reason length", MAX_REASON_LEN)?;
                let reason = String::from_utf8_lossy(self.r.take(len)?).into_owned();
                Frame::Close { code, reason }
            }
            PATH_CHALLENGE => Frame::PathChallenge(self.r.u64()?),
            PATH_RESPONSE => Frame::PathResponse(self.r.u64()?),
            other => {
                return Err(WireError::UnknownType {
                    what: "frame",
                    code: other,
                })
            }
        })
    }
}

impl Iterator for Frames<'_> {
    type Item = Result<Frame, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let f = self.next_frame();
        self.failed = f.is_err();
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(payload: &[u8]) -> Result<Vec<Frame>, WireError> {
        Frames::new(payload).collect()
    }

    #[test]
    fn every_frame_round_trips() {
        let mut out = Vec::new();
        let ack = AckFrame {
            ack_delay_us: 250,
            ranges: vec![90..=100, 50..=80, 10..=10, 0..=3],
        };
        ack.encode(&mut out);
        let frag = FragmentHeader {
            stream: 3,
            seq: 77,
            kind: MediaKind::Key,
            frame_len: 5000,
            offset: 1200,
            age_us: 51_000,
            budget_us: Some(280_000),
        };
        frag.encode(b"hello", &mut out);
        let frag_start = out.len() - 5;
        let notice = DroppedNotice {
            stream: 3,
            seq: 78,
            kind: MediaKind::Disposable,
            reason: DropReason::Deadline,
        };
        notice.encode(&mut out);
        encode_ping(&mut out);
        encode_tail_probe(&mut out);
        encode_close(7, "bye", &mut out);
        out.extend_from_slice(&[0, 0, 0]);
        let frames = decode_all(&out).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::Ack(ack),
                Frame::Fragment(frag, frag_start..frag_start + 5),
                Frame::Dropped(notice),
                Frame::Ping,
                Frame::TailProbe,
                Frame::Close {
                    code: 7,
                    reason: "bye".into()
                },
                Frame::Padding,
            ]
        );
        assert_eq!(frag.encoded_len(5), 1 + 1 + 2 + 1 + 2 + 2 + 4 + 4 + 1);
    }

    #[test]
    fn hostile_fields_are_rejected() {
        let mut out = Vec::new();
        let frag = FragmentHeader {
            stream: 1,
            seq: 0,
            kind: MediaKind::Audio,
            frame_len: 4,
            offset: 2,
            age_us: 0,
            budget_us: None,
        };
        frag.encode(b"abc", &mut out);
        assert!(matches!(
            decode_all(&out),
            Err(WireError::Invalid {
                field: "fragment end",
                ..
            })
        ));
        assert!(
            decode_all(&[ACK, 5, 0, 0, 9]).is_err(),
            "first range larger than largest"
        );
        assert!(decode_all(&[0x77]).is_err());
        assert!(decode_all(&[ACK, 5, 0, 0x7f]).is_err(), "too many ranges");
    }

    proptest! {
        #[test]
        fn ack_ranges_round_trip(mut points in proptest::collection::btree_set(0u64..10_000, 1..40)) {
            // Build disjoint, non-adjacent ranges from sorted points.
            let mut ranges: Vec<RangeInclusive<u64>> = Vec::new();
            for p in std::mem::take(&mut points).into_iter().rev() {
                match ranges.last_mut() {
                    Some(r) if *r.start() == p + 1 => *r = p..=*r.end(),
                    Some(r) if *r.start() <= p + 1 => {}
                    _ => ranges.push(p..=p),
                }
            }
            let ack = AckFrame { ack_delay_us: 9, ranges };
            let mut out = Vec::new();
            ack.encode(&mut out);
            prop_assert!(out.len() <= ack.max_encoded_len());
            prop_assert_eq!(decode_all(&out).unwrap(), vec![Frame::Ack(ack)]);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            for f in Frames::new(&bytes) {
                if let Ok(Frame::Fragment(_, range)) = f {
                    prop_assert!(range.end <= bytes.len());
                }
            }
        }
    }
}
