//! The live stream every variant carries, and how its frames are judged at the receiver.
//!
//! Frames come from [`transport::sim::media::LiveSource`] (the simulator's synthetic H.264/AAC stream: 30 fps,
//! GOP 2 s, `P B B` between keyframes sized I:P:B = 10:1:0.5, AAC-like audio), at their capture times on the
//! wall clock. Each frame's payload starts with a [`FrameHeader`]: its sequence number, capture time and
//! length, so a receiver on any transport can tell which frame arrived and how late, without trusting the
//! transport's own bookkeeping. Capture times are nanoseconds since an `epoch` [`Instant`] both sides share
//! (sender and receiver threads live in one process, whose `CLOCK_MONOTONIC` every namespace shares).
//!
//! A frame is on time when its last byte reaches the receiving application within the budget of its
//! capture; a frame that never arrives complete is not. Frames captured during the warm-up are sent but not
//! judged, for every variant alike.

use anyhow::{bail, Result};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use transport::sim::media::{LiveParams, LiveSource};
use transport::MediaKind;

/// Bytes of [`FrameHeader`] at the start of every frame's payload.
pub const HEADER_BYTES: usize = 24;
/// Marks a frame header (`PLF1`), so a receiver refuses bytes that are not one.
const MAGIC: u32 = 0x504c_4631;

/// What starts every frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame's number in the stream, from 0.
    pub seq: u64,
    /// Capture time, nanoseconds since the run's epoch.
    pub capture_ns: u64,
    /// The whole frame's length in bytes, header included.
    pub len: u32,
}

impl FrameHeader {
    /// The header's wire form.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&self.len.to_be_bytes());
        b[8..16].copy_from_slice(&self.seq.to_be_bytes());
        b[16..24].copy_from_slice(&self.capture_ns.to_be_bytes());
        b
    }

    /// Parses the header at the start of `b`.
    pub fn decode(b: &[u8]) -> Result<FrameHeader> {
        let Some(h) = b.get(..HEADER_BYTES) else {
            bail!("frame of {} bytes is shorter than its header", b.len());
        };
        let word =
            |r: std::ops::Range<usize>| -> u64 { h[r].iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)) };
        if word(0..4) != u64::from(MAGIC) {
            bail!("not a frame header");
        }
        Ok(FrameHeader {
            len: word(4..8) as u32,
            seq: word(8..16),
            capture_ns: word(16..24),
        })
    }
}

/// A frame as the sender hands it to a transport.
#[derive(Debug, Clone)]
pub struct LiveFrame {
    /// The frame's number in the stream.
    pub seq: u64,
    /// Video key/inter/disposable, audio, or the sequence header.
    pub kind: MediaKind,
    /// Capture time.
    pub capture: Instant,
    /// The payload: a [`FrameHeader`] and then filler, `len` bytes in all.
    pub bytes: Bytes,
}

/// What the sender sent, for the judge.
#[derive(Debug, Clone, Copy)]
pub struct SentFrame {
    /// The frame's number.
    pub seq: u64,
    /// Capture time.
    pub capture: Instant,
    /// Payload bytes.
    pub len: usize,
}

/// The live source with headers stamped into each frame.
#[derive(Debug)]
pub struct LiveStream {
    source: LiveSource,
    epoch: Instant,
    next_seq: u64,
}

impl LiveStream {
    /// A stream of `bitrate_bps` (30 fps, GOP 2 s, 2 B-frames, 128 kbit/s of audio) whose first frame is
    /// captured at `start`; capture times are stamped relative to `epoch`.
    pub fn new(bitrate_bps: u64, epoch: Instant, start: Instant) -> LiveStream {
        let params = LiveParams {
            bitrate_bps,
            ..LiveParams::default()
        };
        LiveStream {
            source: LiveSource::new(params, start),
            epoch,
            next_seq: 0,
        }
    }

    /// When the next frame is captured.
    pub fn next_due(&self) -> Instant {
        self.source.next_due()
    }

    /// The next frame, if it is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<LiveFrame> {
        let f = self.source.poll(now)?;
        let len = f.bytes.len().max(HEADER_BYTES);
        let seq = self.next_seq;
        self.next_seq += 1;
        let header = FrameHeader {
            seq,
            capture_ns: nanos_since(self.epoch, f.capture),
            len: u32::try_from(len).unwrap_or(u32::MAX),
        };
        let mut b = BytesMut::with_capacity(len);
        b.put_slice(&header.encode());
        b.put_bytes(0x5a, len - HEADER_BYTES);
        Some(LiveFrame {
            seq,
            kind: f.kind,
            capture: f.capture,
            bytes: b.freeze(),
        })
    }
}

/// Nanoseconds from `epoch` to `t` (0 if `t` is earlier).
pub fn nanos_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Frame arrivals at the receiver: the first complete arrival of each sequence number.
#[derive(Debug, Default)]
pub struct Arrivals {
    at: HashMap<u64, Instant>,
}

impl Arrivals {
    /// Records that frame `seq` arrived complete at `now` (a repeat keeps the first time).
    pub fn record(&mut self, seq: u64, now: Instant) {
        self.at.entry(seq).or_insert(now);
    }

    /// Records a complete frame by its header.
    pub fn record_frame(&mut self, bytes: &[u8], now: Instant) -> Result<()> {
        let h = FrameHeader::decode(bytes)?;
        if h.len as usize != bytes.len() {
            bail!(
                "frame {} has {} bytes, its header says {}",
                h.seq,
                bytes.len(),
                h.len
            );
        }
        self.record(h.seq, now);
        Ok(())
    }

    /// When frame `seq` arrived complete, if it did.
    pub fn arrival(&self, seq: u64) -> Option<Instant> {
        self.at.get(&seq).copied()
    }

    /// Frames recorded.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.at.len()
    }
}

/// Splits a byte stream (TCP, one QUIC stream) of back-to-back frames into frames, recording each arrival
/// when its last byte is read.
#[derive(Debug, Default)]
pub struct StreamFramer {
    head: Vec<u8>,
    seq: u64,
    remaining: usize,
}

impl StreamFramer {
    /// Feeds bytes read at `now`; fails on bytes that are not a frame header where one should start.
    pub fn feed(&mut self, mut data: &[u8], now: Instant, arrivals: &mut Arrivals) -> Result<()> {
        while !data.is_empty() {
            if self.remaining == 0 {
                let take = (HEADER_BYTES - self.head.len()).min(data.len());
                let (h, rest) = data.split_at(take);
                self.head.extend_from_slice(h);
                data = rest;
                if self.head.len() == HEADER_BYTES {
                    let h = FrameHeader::decode(&self.head)?;
                    self.head.clear();
                    if (h.len as usize) < HEADER_BYTES {
                        bail!("frame {} claims {} bytes, less than its header", h.seq, h.len);
                    }
                    self.seq = h.seq;
                    self.remaining = h.len as usize - HEADER_BYTES;
                    if self.remaining == 0 {
                        arrivals.record(self.seq, now);
                    }
                }
            } else {
                let take = self.remaining.min(data.len());
                data = data.get(take..).unwrap_or_default();
                self.remaining -= take;
                if self.remaining == 0 {
                    arrivals.record(self.seq, now);
                }
            }
        }
        Ok(())
    }
}

/// How the judged frames fared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveResult {
    /// Frames captured in the measured window.
    pub frames_sent: u64,
    /// Of those, frames that arrived complete within the budget.
    pub frames_on_time: u64,
    /// Of those, frames that arrived complete at all (on time or late).
    pub frames_delivered: u64,
    /// Payload bytes of the delivered frames.
    pub bytes_delivered: u64,
    /// Median capture-to-arrival latency of the delivered frames, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub latency_p99_ms: f64,
}

/// Judges the frames captured in `[from, until)` against `budget`.
pub fn judge(
    sent: &[SentFrame],
    arrivals: &Arrivals,
    from: Instant,
    until: Instant,
    budget: Duration,
) -> LiveResult {
    let mut r = LiveResult::default();
    let mut latencies: Vec<Duration> = Vec::new();
    for f in sent.iter().filter(|f| f.capture >= from && f.capture < until) {
        r.frames_sent += 1;
        if let Some(&at) = arrivals.at.get(&f.seq) {
            let latency = at.saturating_duration_since(f.capture);
            latencies.push(latency);
            r.frames_delivered += 1;
            r.bytes_delivered += f.len as u64;
            if latency <= budget {
                r.frames_on_time += 1;
            }
        }
    }
    latencies.sort_unstable();
    r.latency_p50_ms = percentile_ms(&latencies, 0.50);
    r.latency_p99_ms = percentile_ms(&latencies, 0.99);
    r
}

/// The `q` quantile (nearest rank) of sorted durations, in ms; 0 when empty.
fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_the_judge_counts_late_and_missing_frames() {
        let h = FrameHeader {
            seq: 7,
            capture_ns: 123_456_789,
            len: 1000,
        };
        assert_eq!(FrameHeader::decode(&h.encode()).unwrap(), h);
        assert!(FrameHeader::decode(&[0u8; 30]).is_err());
        assert!(FrameHeader::decode(&[0u8; 3]).is_err());

        let epoch = Instant::now();
        let mut s = LiveStream::new(6_000_000, epoch, epoch);
        let mut sent = Vec::new();
        let mut arrivals = Arrivals::default();
        let until = epoch + Duration::from_secs(2);
        while s.next_due() < until {
            let now = s.next_due();
            let f = s.poll(now).unwrap();
            let h = FrameHeader::decode(&f.bytes).unwrap();
            assert_eq!((h.seq, h.len as usize), (f.seq, f.bytes.len()));
            sent.push(SentFrame {
                seq: f.seq,
                capture: f.capture,
                len: f.bytes.len(),
            });
            // Every third frame is 300 ms late, every tenth never comes.
            if f.seq % 10 == 9 {
                continue;
            }
            let late = if f.seq % 3 == 0 { 300 } else { 50 };
            arrivals
                .record_frame(&f.bytes, now + Duration::from_millis(late))
                .unwrap();
        }
        let r = judge(&sent, &arrivals, epoch, until, Duration::from_millis(280));
        // The same frames through the stream framer, cut at odd places, arrive whole.
        let mut framer = StreamFramer::default();
        let mut via_stream = Arrivals::default();
        let mut s2 = LiveStream::new(6_000_000, epoch, epoch);
        let mut all = Vec::new();
        for _ in 0..40 {
            let now = s2.next_due();
            all.extend_from_slice(&s2.poll(now).unwrap().bytes);
        }
        for piece in all.chunks(1000) {
            framer.feed(piece, epoch, &mut via_stream).unwrap();
        }
        assert_eq!(via_stream.count(), 40);
        assert_eq!(r.frames_sent, sent.len() as u64);
        let missing = sent.iter().filter(|f| f.seq % 10 == 9).count() as u64;
        let late = sent.iter().filter(|f| f.seq % 10 != 9 && f.seq % 3 == 0).count() as u64;
        assert_eq!(r.frames_delivered, r.frames_sent - missing);
        assert_eq!(r.frames_on_time, r.frames_delivered - late);
        assert!((r.latency_p50_ms - 50.0).abs() < 1.0, "{r:?}");
        assert!((r.latency_p99_ms - 300.0).abs() < 1.0, "{r:?}");
    }
}
