//! A synthetic live stream for simulations, and the viewer-side checker that judges what arrived.
//!
//! The source produces what an H.264/AAC encoder with B-frames produces, in decode order: a keyframe every
//! GOP, then `P B B P B B ...` (P = inter frames later frames reference, B = disposable), sized I:P:B =
//! 10:1:0.5, plus AAC-like audio frames at 48 kHz / 1024 samples. The checker knows every frame the source
//! made, so it can tell on-time from late, and catches any delivered frame whose reference was not delivered.

use super::histogram::Histogram;
use crate::media::{MediaFrame, MediaKind};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Parameters of the synthetic stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveParams {
    /// Total stream bitrate (video + audio), bits per second.
    pub bitrate_bps: u64,
    /// Video frames per second.
    pub fps: u32,
    /// GOP duration.
    pub gop: Duration,
    /// B-frames between reference frames (0 = none).
    pub b_frames: u32,
    /// Audio bitrate, bits per second.
    pub audio_bps: u64,
    /// End-to-end latency budget of every frame.
    pub budget: Duration,
}

impl Default for LiveParams {
    fn default() -> Self {
        LiveParams {
            bitrate_bps: 6_000_000,
            fps: 30,
            gop: Duration::from_secs(2),
            b_frames: 2,
            audio_bps: 128_000,
            budget: Duration::from_millis(280),
        }
    }
}

const AUDIO_FRAME: Duration = Duration::from_nanos(21_333_333); // 1024 samples at 48 kHz

/// Generates the stream's frames at their capture times.
#[derive(Debug)]
pub struct LiveSource {
    params: LiveParams,
    start: Instant,
    video_index: u64,
    audio_index: u64,
    headers_sent: bool,
    unit_bytes: f64,
    gop_frames: u64,
    payload: Bytes,
}

impl LiveSource {
    /// A source whose first frame is captured at `start`.
    pub fn new(params: LiveParams, start: Instant) -> Self {
        let fps = u64::from(params.fps.max(1));
        let gop_frames = (params.gop.as_secs_f64() * fps as f64).round().max(1.0) as u64;
        let mut weight = 0.0;
        for k in 0..gop_frames {
            weight += match Self::kind_at(k, params.b_frames) {
                MediaKind::Key => 10.0,
                MediaKind::Inter => 1.0,
                _ => 0.5,
            };
        }
        let video_bps = params.bitrate_bps.saturating_sub(params.audio_bps) as f64;
        let gop_bytes = video_bps / 8.0 * gop_frames as f64 / fps as f64;
        let unit_bytes = gop_bytes / weight;
        let largest = (unit_bytes * 10.0).ceil() as usize + 1024;
        LiveSource {
            params,
            start,
            video_index: 0,
            audio_index: 0,
            headers_sent: false,
            unit_bytes,
            gop_frames,
            payload: Bytes::from(vec![0x5a; largest]),
        }
    }

    fn kind_at(k: u64, b_frames: u32) -> MediaKind {
        if k == 0 {
            MediaKind::Key
        } else if (k - 1) % u64::from(b_frames + 1) == 0 {
            MediaKind::Inter
        } else {
            MediaKind::Disposable
        }
    }

    /// Frames per GOP.
    pub fn gop_frames(&self) -> u64 {
        self.gop_frames
    }

    fn video_time(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / f64::from(self.params.fps.max(1)))
    }

    fn audio_time(&self, i: u64) -> Instant {
        self.start + AUDIO_FRAME * i as u32
    }

    /// When the next frame is captured.
    pub fn next_due(&self) -> Instant {
        if !self.headers_sent {
            return self.start;
        }
        self.video_time(self.video_index)
            .min(self.audio_time(self.audio_index))
    }

    /// The next frame if it is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<MediaFrame> {
        let budget = Some(self.params.budget);
        if !self.headers_sent {
            if now < self.start {
                return None;
            }
            self.headers_sent = true;
            return Some(MediaFrame {
                kind: MediaKind::SeqHeader,
                bytes: self.payload.slice(..64),
                capture: self.start,
                budget,
            });
        }
        let v = self.video_time(self.video_index);
        let a = self.audio_time(self.audio_index);
        if v.min(a) > now {
            return None;
        }
        if a < v {
            self.audio_index += 1;
            let size = (self.params.audio_bps as f64 / 8.0 * AUDIO_FRAME.as_secs_f64()).round() as usize;
            return Some(MediaFrame {
                kind: MediaKind::Audio,
                bytes: self.payload.slice(..size.clamp(1, self.payload.len())),
                capture: a,
                budget,
            });
        }
        let k = self.video_index % self.gop_frames;
        self.video_index += 1;
        let kind = Self::kind_at(k, self.params.b_frames);
        let units = match kind {
            MediaKind::Key => 10.0,
            MediaKind::Inter => 1.0,
            _ => 0.5,
        };
        let size = (self.unit_bytes * units).round() as usize;
        Some(MediaFrame {
            kind,
            bytes: self.payload.slice(..size.clamp(1, self.payload.len())),
            capture: v,
            budget,
        })
    }
}

/// What happened to one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameOutcome {
    /// Kind.
    pub kind: MediaKind,
    /// Capture time.
    pub capture: Instant,
    /// Payload size.
    pub bytes: usize,
    /// When the viewer got it, if it did.
    pub delivered: Option<Instant>,
}

/// The viewer: records every frame sent and judges every frame delivered.
#[derive(Debug, Default)]
pub struct Checker {
    /// One entry per frame sent, indexed by sequence number.
    pub frames: Vec<FrameOutcome>,
    budget: Duration,
    next_expected: u64,
    broken: bool,
    /// Frames delivered within budget.
    pub on_time: u64,
    /// Frames delivered.
    pub delivered: u64,
    /// Payload bytes delivered.
    pub delivered_bytes: u64,
    /// Frames delivered although a frame they reference was not: must stay 0.
    pub undecodable_delivered: u64,
    /// Frames delivered out of sequence order: must stay 0.
    pub out_of_order: u64,
    /// Capture-to-delivery latency of delivered frames.
    pub latency: Histogram,
}

impl Checker {
    /// A checker for frames with the given budget.
    pub fn new(budget: Duration) -> Self {
        Checker {
            budget,
            ..Checker::default()
        }
    }

    /// Records a frame the source handed to the sender (with the sequence number it got).
    pub fn on_sent(&mut self, seq: u64, frame: &MediaFrame) {
        let outcome = FrameOutcome {
            kind: frame.kind,
            capture: frame.capture,
            bytes: frame.bytes.len(),
            delivered: None,
        };
        let idx = seq as usize;
        if self.frames.len() <= idx {
            self.frames.resize(idx + 1, outcome);
        }
        if let Some(slot) = self.frames.get_mut(idx) {
            *slot = outcome;
        }
    }

    /// Judges a delivered frame.
    pub fn on_delivered(&mut self, now: Instant, seq: u64, len: usize) {
        if seq < self.next_expected {
            self.out_of_order += 1;
            return;
        }
        // Everything skipped between the previous delivery and this one was lost to the viewer.
        for s in self.next_expected..seq {
            if self
                .frames
                .get(s as usize)
                .is_some_and(|f| f.kind.breaks_gop_when_lost())
            {
                self.broken = true;
            }
        }
        self.next_expected = seq + 1;
        let Some(f) = self.frames.get_mut(seq as usize) else {
            return;
        };
        f.delivered = Some(now);
        match f.kind {
            MediaKind::Key => self.broken = false,
            MediaKind::Inter | MediaKind::Disposable if self.broken => self.undecodable_delivered += 1,
            _ => {}
        }
        let latency = now.saturating_duration_since(f.capture);
        self.latency.record(latency);
        self.delivered += 1;
        self.delivered_bytes += len as u64;
        if latency <= self.budget {
            self.on_time += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_has_the_configured_bitrate_and_gop_structure() {
        let t0 = Instant::now();
        let mut src = LiveSource::new(LiveParams::default(), t0);
        let end = t0 + Duration::from_secs(10);
        let mut bytes = 0usize;
        let mut kinds = Vec::new();
        while src.next_due() < end {
            let now = src.next_due();
            let f = src.poll(now).unwrap();
            assert_eq!(f.capture, now);
            bytes += f.bytes.len();
            kinds.push(f.kind);
        }
        let bps = bytes as f64 * 8.0 / 10.0;
        assert!((bps / 6e6 - 1.0).abs() < 0.02, "bitrate {bps}");
        let video: Vec<_> = kinds.iter().filter(|k| k.is_video()).copied().collect();
        assert_eq!(video.len(), 300);
        assert_eq!(video.iter().filter(|k| **k == MediaKind::Key).count(), 5);
        assert_eq!(
            &video[..5],
            &[
                MediaKind::Key,
                MediaKind::Inter,
                MediaKind::Disposable,
                MediaKind::Disposable,
                MediaKind::Inter
            ]
        );
        let audio = kinds.iter().filter(|k| **k == MediaKind::Audio).count();
        assert!((468..=470).contains(&audio), "audio frames {audio}");
    }

    #[test]
    fn the_checker_catches_an_undecodable_delivery() {
        let t0 = Instant::now();
        let mut c = Checker::new(Duration::from_millis(100));
        let mk = |kind| MediaFrame {
            kind,
            bytes: Bytes::from_static(b"x"),
            capture: t0,
            budget: None,
        };
        for (i, k) in [
            MediaKind::Key,
            MediaKind::Inter,
            MediaKind::Disposable,
            MediaKind::Key,
        ]
        .into_iter()
        .enumerate()
        {
            c.on_sent(i as u64, &mk(k));
        }
        c.on_delivered(t0, 0, 1);
        c.on_delivered(t0 + Duration::from_millis(200), 2, 1); // skipped the inter frame: undecodable, and late
        c.on_delivered(t0, 3, 1);
        assert_eq!(c.undecodable_delivered, 1);
        assert_eq!(c.on_time, 2);
        assert_eq!(c.delivered, 3);
    }
}
