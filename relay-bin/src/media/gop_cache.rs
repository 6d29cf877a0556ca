//! [`GopCache`]: what a new viewer needs to start playing at once: the stream's metadata, its sequence
//! headers, and the current GOP from its keyframe on.

use super::frame::{Frame, MediaKind, Track};

/// One stream's start-up cache, kept by the stream's owner core.
///
/// Rules:
/// - metadata and sequence headers are kept apart from the GOP, the latest of each (video and audio
///   sequence headers told apart by [`Frame::track`]);
/// - a `Key` frame starts a new GOP and releases the previous one;
/// - before the first keyframe (and after an overflow, until the next keyframe) audio and video frames are
///   not kept: a viewer must start on a keyframe;
/// - a video sequence header that differs from the one kept releases the current GOP: its frames were coded
///   against the old configuration, and the encoder sends a keyframe next;
/// - when the GOP's frames cost more than `max_bytes` ([`Frame::cost_bytes`]: body and a per-frame
///   overhead), the GOP is dropped and nothing
///   is kept until the next keyframe; [`GopCache::overflows`] counts it.
#[derive(Debug, Clone)]
pub struct GopCache {
    max_bytes: usize,
    meta: Option<Frame>,
    video_header: Option<Frame>,
    audio_header: Option<Frame>,
    /// The current GOP, its keyframe first; empty while waiting for a keyframe.
    gop: Vec<Frame>,
    gop_bytes: usize,
    overflows: u64,
}

impl GopCache {
    /// An empty cache whose GOP may cost at most `max_bytes` ([`Frame::cost_bytes`]).
    pub fn new(max_bytes: usize) -> Self {
        GopCache {
            max_bytes,
            meta: None,
            video_header: None,
            audio_header: None,
            gop: Vec::new(),
            gop_bytes: 0,
            overflows: 0,
        }
    }

    /// Offers a frame of the stream, in the order received; keeps a clone of it (two reference counts) if a
    /// new viewer would need it.
    pub fn push(&mut self, frame: &Frame) {
        match (frame.kind, frame.track) {
            (MediaKind::Metadata, _) => self.meta = Some(frame.clone()),
            (MediaKind::SeqHeader, Track::Video) => {
                if self
                    .video_header
                    .as_ref()
                    .is_some_and(|old| old.body != frame.body)
                {
                    self.release_gop();
                }
                self.video_header = Some(frame.clone());
            }
            (MediaKind::SeqHeader, Track::Audio) => self.audio_header = Some(frame.clone()),
            // A configuration record on the data track means nothing to a decoder.
            (MediaKind::SeqHeader, Track::Data) => {}
            (MediaKind::Key, _) => {
                self.release_gop();
                self.add(frame);
            }
            (MediaKind::Inter | MediaKind::Disposable | MediaKind::Audio, _) => {
                if self.has_keyframe() {
                    self.add(frame);
                }
            }
        }
    }

    /// What a new viewer is sent first, in order: the latest metadata, the latest video sequence header, the
    /// latest audio sequence header (each if any), then every frame of the current GOP from its keyframe on,
    /// audio and video interleaved as received.
    pub fn start_frames(&self) -> impl Iterator<Item = &Frame> {
        self.meta
            .iter()
            .chain(&self.video_header)
            .chain(&self.audio_header)
            .chain(&self.gop)
    }

    /// Forgets everything (the publisher is gone). The overflow counter is kept.
    pub fn clear(&mut self) {
        self.meta = None;
        self.video_header = None;
        self.audio_header = None;
        self.release_gop();
    }

    /// Frames in the current GOP (metadata and sequence headers not counted).
    pub fn frames(&self) -> usize {
        self.gop.len()
    }

    /// What the current GOP's frames cost ([`Frame::cost_bytes`]; metadata and sequence headers not counted).
    pub fn bytes(&self) -> usize {
        self.gop_bytes
    }

    /// Whether a GOP is being kept, starting with its keyframe.
    pub fn has_keyframe(&self) -> bool {
        !self.gop.is_empty()
    }

    /// The video sequence header in force (if the stream sent one) and the current GOP's keyframe, if one
    /// is held (what a snapshot decodes).
    pub fn keyframe(&self) -> Option<(Option<&Frame>, &Frame)> {
        let key = self.gop.first().filter(|f| f.kind == MediaKind::Key)?;
        Some((self.video_header.as_ref(), key))
    }

    /// How many GOPs were dropped for costing more than `max_bytes`.
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    fn add(&mut self, frame: &Frame) {
        self.gop_bytes = self.gop_bytes.saturating_add(frame.cost_bytes());
        if self.gop_bytes > self.max_bytes {
            self.overflows += 1;
            self.release_gop();
        } else {
            self.gop.push(frame.clone());
        }
    }

    fn release_gop(&mut self) {
        // A fresh Vec rather than `clear()`: one huge GOP must not pin its capacity for the stream's life.
        self.gop = Vec::new();
        self.gop_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;
    use crate::media::frame::FRAME_OVERHEAD_BYTES as O;

    fn frame(kind: MediaKind, track: Track, dts_ms: u64, size: usize) -> Frame {
        // The cache charges a frame its body (`size` bytes) and the overhead `O`.
        let body = Bytes::from(vec![dts_ms as u8; size.max(1)]);
        Frame::new(kind, track, dts_ms, dts_ms, body, Instant::now())
    }

    fn video(kind: MediaKind, dts_ms: u64) -> Frame {
        frame(kind, Track::Video, dts_ms, 100)
    }

    fn audio(dts_ms: u64) -> Frame {
        frame(MediaKind::Audio, Track::Audio, dts_ms, 10)
    }

    fn start(cache: &GopCache) -> Vec<(MediaKind, Track, u64)> {
        cache
            .start_frames()
            .map(|f| (f.kind, f.track, f.dts_ms))
            .collect()
    }

    #[test]
    fn nothing_before_the_first_keyframe() {
        let mut c = GopCache::new(1 << 20);
        c.push(&audio(0));
        c.push(&video(MediaKind::Inter, 0));
        c.push(&video(MediaKind::Disposable, 40));
        assert!(!c.has_keyframe());
        assert_eq!((c.frames(), c.bytes()), (0, 0));
        assert_eq!(c.start_frames().count(), 0);
    }

    #[test]
    fn headers_first_then_the_gop_as_received() {
        let mut c = GopCache::new(1 << 20);
        c.push(&frame(MediaKind::SeqHeader, Track::Audio, 0, 20));
        c.push(&frame(MediaKind::Metadata, Track::Data, 0, 50));
        c.push(&frame(MediaKind::SeqHeader, Track::Video, 0, 30));
        c.push(&video(MediaKind::Key, 0));
        c.push(&audio(10));
        c.push(&video(MediaKind::Disposable, 40));
        c.push(&video(MediaKind::Inter, 80));
        // A later metadata replaces the first one and stays out of the GOP.
        c.push(&frame(MediaKind::Metadata, Track::Data, 90, 50));
        assert_eq!(
            start(&c),
            [
                (MediaKind::Metadata, Track::Data, 90),
                (MediaKind::SeqHeader, Track::Video, 0),
                (MediaKind::SeqHeader, Track::Audio, 0),
                (MediaKind::Key, Track::Video, 0),
                (MediaKind::Audio, Track::Audio, 10),
                (MediaKind::Disposable, Track::Video, 40),
                (MediaKind::Inter, Track::Video, 80),
            ]
        );
        assert_eq!((c.frames(), c.bytes()), (4, 310 + 4 * O));
        assert!(c.has_keyframe());
    }

    #[test]
    fn the_keyframe_a_snapshot_decodes_comes_with_its_header() {
        let mut c = GopCache::new(1 << 20);
        assert!(c.keyframe().is_none());
        c.push(&video(MediaKind::Key, 0));
        let (header, key) = c.keyframe().unwrap();
        assert!(header.is_none());
        assert_eq!(key.dts_ms, 0);
        c.push(&frame(MediaKind::SeqHeader, Track::Video, 1990, 30));
        c.push(&video(MediaKind::Key, 2000));
        c.push(&video(MediaKind::Inter, 2040));
        let (header, key) = c.keyframe().unwrap();
        assert_eq!((header.map(|h| h.dts_ms), key.dts_ms), (Some(1990), 2000));
    }

    #[test]
    fn a_keyframe_starts_a_new_gop() {
        let mut c = GopCache::new(1 << 20);
        c.push(&video(MediaKind::Key, 0));
        c.push(&video(MediaKind::Inter, 40));
        c.push(&audio(50));
        c.push(&video(MediaKind::Key, 2000));
        c.push(&audio(2010));
        assert_eq!(
            start(&c),
            [
                (MediaKind::Key, Track::Video, 2000),
                (MediaKind::Audio, Track::Audio, 2010)
            ]
        );
        assert_eq!((c.frames(), c.bytes()), (2, 110 + 2 * O));
    }

    #[test]
    fn overflow_drops_the_gop_until_the_next_keyframe() {
        let mut c = GopCache::new(350 + 3 * O);
        c.push(&frame(MediaKind::SeqHeader, Track::Video, 0, 30));
        c.push(&video(MediaKind::Key, 0));
        c.push(&video(MediaKind::Inter, 40));
        c.push(&video(MediaKind::Inter, 80));
        assert_eq!((c.bytes(), c.overflows()), (300 + 3 * O, 0));
        c.push(&video(MediaKind::Inter, 120));
        assert_eq!((c.frames(), c.bytes(), c.overflows()), (0, 0, 1));
        assert!(!c.has_keyframe());
        c.push(&video(MediaKind::Inter, 160));
        c.push(&audio(170));
        assert_eq!(c.frames(), 0);
        // Headers survive an overflow.
        assert_eq!(start(&c), [(MediaKind::SeqHeader, Track::Video, 0)]);
        c.push(&video(MediaKind::Key, 2000));
        assert_eq!((c.frames(), c.overflows()), (1, 1));
        // A keyframe alone larger than the budget overflows too.
        c.push(&frame(MediaKind::Key, Track::Video, 4000, 351 + 2 * O));
        assert_eq!((c.frames(), c.overflows()), (0, 2));
    }

    #[test]
    fn a_changed_video_header_releases_the_gop() {
        let mut c = GopCache::new(1 << 20);
        c.push(&frame(MediaKind::SeqHeader, Track::Video, 0, 30));
        c.push(&video(MediaKind::Key, 0));
        // The same header again (some encoders repeat it) keeps the GOP.
        c.push(&frame(MediaKind::SeqHeader, Track::Video, 0, 30));
        assert_eq!(c.frames(), 1);
        // A new configuration (the body differs) releases it.
        c.push(&frame(MediaKind::SeqHeader, Track::Video, 40, 30));
        assert_eq!(c.frames(), 0);
        c.push(&video(MediaKind::Inter, 80));
        assert_eq!(c.frames(), 0);
        assert_eq!(start(&c), [(MediaKind::SeqHeader, Track::Video, 40)]);
    }

    #[test]
    fn clear_keeps_nothing() {
        let mut c = GopCache::new(1 << 20);
        c.push(&frame(MediaKind::Metadata, Track::Data, 0, 50));
        c.push(&frame(MediaKind::SeqHeader, Track::Video, 0, 30));
        c.push(&frame(MediaKind::SeqHeader, Track::Audio, 0, 20));
        c.push(&video(MediaKind::Key, 0));
        c.push(&audio(10));
        c.clear();
        assert_eq!(c.start_frames().count(), 0);
        assert_eq!((c.frames(), c.bytes()), (0, 0));
        assert!(!c.has_keyframe());
        c.push(&audio(20));
        assert_eq!(c.frames(), 0);
    }

    #[test]
    fn a_flood_of_tiny_frames_is_bounded_by_what_each_costs_in_memory() {
        // Issue 17, item 18: the cache counted body bytes only: 1-byte frames filled a 64 KiB budget with
        // 65,000 frames (over 100 bytes of memory each).
        let mut c = GopCache::new(64 << 10);
        c.push(&video(MediaKind::Key, 0));
        for dts in 1..20_000 {
            c.push(&frame(MediaKind::Audio, Track::Audio, dts, 1));
        }
        assert!(c.frames() * 100 <= 64 << 10, "{} frames kept", c.frames());
        assert!(c.overflows() > 0);
    }
}
