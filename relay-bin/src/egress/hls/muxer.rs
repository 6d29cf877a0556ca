//! [`HlsMuxer`]: one stream's live HLS, sans-IO: frames in (with their wall-clock time), fMP4 parts and
//! segments out, in a sliding window.
//!
//! Cutting: a part closes when the next video frame would make it longer than the part target (at most
//! `part_target_ms`, as LL-HLS requires); a segment closes at the first keyframe at or past the target
//! duration, so every segment starts on a keyframe and is its GOP(s). A segment is its parts, each a whole
//! `moof` + `mdat` fragment, so a segment request is answered with the parts' buffers in order, and a part's
//! samples are slices of the frames' bodies (the GOP cache holds the same bytes): the window costs its
//! `moof` headers and references. A video sample's duration is known when the next video frame arrives, so
//! the newest video frame is held until then. Audio follows video's cuts (audio-only streams cut on audio).
//! A new sequence header (codec change) ends the open segment; what follows has a new init segment and a
//! discontinuity.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::fmp4::{self, Fragment, Run, Sample, AAC_FRAME_SAMPLES, VIDEO_TIMESCALE};

/// Video timescale ticks per millisecond.
const TICKS_PER_MS: u64 = VIDEO_TIMESCALE as u64 / 1_000;
use super::tracks::{self, AudioTrack, VideoTrack};
use crate::media::{Frame, MediaKind, Track};

/// How a stream is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuxerConfig {
    /// Segment target duration (a segment ends at the first keyframe at or past it).
    pub target_ms: u64,
    /// Part target duration (LL-HLS parts are at most this long).
    pub part_target_ms: u64,
    /// Complete segments kept (the playlist's window).
    pub window: usize,
    /// A segment over this many bytes ends at the next frame even without a keyframe (a publisher that
    /// never sends one cannot grow it without bound).
    pub max_segment_bytes: usize,
}

impl Default for MuxerConfig {
    fn default() -> Self {
        MuxerConfig {
            target_ms: 2_000,
            part_target_ms: 500,
            window: 6,
            max_segment_bytes: 32 << 20,
        }
    }
}

/// One LL-HLS part: a whole fMP4 fragment.
#[derive(Debug, Clone)]
pub struct Part {
    /// Its duration in milliseconds.
    pub duration_ms: u64,
    /// It starts with a keyframe.
    pub independent: bool,
    /// The fragment's buffers.
    pub fragment: Fragment,
}

/// One segment: its parts, in order.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its media sequence number.
    pub msn: u64,
    /// Its parts (the open segment's so far).
    pub parts: Vec<Part>,
    /// Wall-clock time of its first frame (Unix ms): `EXT-X-PROGRAM-DATE-TIME`.
    pub start_unix_ms: u64,
    /// A discontinuity (new init segment) comes before it.
    pub discontinuity: bool,
    /// The version of the init segment it needs.
    pub init_version: u32,
}

impl Segment {
    /// Its duration: its parts' durations.
    pub fn duration_ms(&self) -> u64 {
        self.parts.iter().map(|p| p.duration_ms).sum()
    }

    /// Its bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.fragment.len).sum()
    }

    /// No part yet.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Its buffers, parts in order.
    pub fn buffers(&self) -> impl Iterator<Item = &Bytes> {
        self.parts.iter().flat_map(|p| p.fragment.bytes.iter())
    }
}

/// A frame waiting to become a sample.
#[derive(Debug, Clone)]
struct Pending {
    dts_ms: u64,
    pts_ms: u64,
    data: Bytes,
    key: bool,
    capture: Instant,
    duration_ms: u64,
}

/// What a push changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changed {
    /// A part was completed (and the playlist changed).
    pub part: bool,
    /// A segment was completed.
    pub segment: bool,
}

/// One stream's live HLS on one core.
#[derive(Debug)]
pub struct HlsMuxer {
    config: MuxerConfig,
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    /// The init segments the window's segments need (version, bytes), the newest last.
    inits: Vec<(u32, Bytes)>,
    next_init_version: u32,
    segments: VecDeque<Segment>,
    open: Option<Segment>,
    /// Discontinuities that slid out of the window (`EXT-X-DISCONTINUITY-SEQUENCE`).
    discontinuity_sequence: u64,
    next_msn: u64,
    fragment_sequence: u32,
    part_video: Vec<Pending>,
    part_audio: Vec<Pending>,
    part_start_ms: Option<u64>,
    part_independent: bool,
    segment_start_ms: u64,
    segment_bytes: usize,
    held_video: Option<Pending>,
    video_interval_ms: u64,
    /// The first keyframe's composition offset (its B-frame delay), taken off every video sample's (signed
    /// offsets, `trun` version 1): video is presented from its first keyframe's decode time, with the audio,
    /// not that much later (no hole at the start for a player to skip).
    cts_shift_ms: u64,
    started: bool,
    discontinuity_next: bool,
    ended: bool,
    /// Why the stream cannot be packaged (an unsupported codec), if so.
    refused: Option<String>,
    /// Glass-to-playlist delays of parts completed since the last [`HlsMuxer::take_delays`]: the newest
    /// frame's capture to the part's completion.
    delays: Vec<Duration>,
}

impl HlsMuxer {
    /// A muxer waiting for sequence headers and a keyframe.
    pub fn new(config: MuxerConfig) -> HlsMuxer {
        HlsMuxer {
            config,
            video: None,
            audio: None,
            inits: Vec::new(),
            next_init_version: 0,
            segments: VecDeque::new(),
            open: None,
            discontinuity_sequence: 0,
            next_msn: 0,
            fragment_sequence: 1,
            part_video: Vec::new(),
            part_audio: Vec::new(),
            part_start_ms: None,
            part_independent: false,
            segment_start_ms: 0,
            segment_bytes: 0,
            held_video: None,
            video_interval_ms: 33,
            cts_shift_ms: 0,
            started: false,
            discontinuity_next: false,
            ended: false,
            refused: None,
            delays: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MuxerConfig {
        &self.config
    }

    /// Takes one frame of the stream, captured at wall-clock `unix_ms`, arriving at `now`.
    pub fn push(&mut self, frame: &Frame, unix_ms: u64, now: Instant) -> Changed {
        if self.ended {
            // A publisher came back after the end: a new run of the stream.
            self.ended = false;
            self.discontinuity_next = true;
        }
        match (frame.kind, frame.track) {
            (MediaKind::Metadata, _) | (_, Track::Data) => Changed::default(),
            (MediaKind::SeqHeader, Track::Video) => {
                self.set_video(tracks::video_track(&frame.body).map_err(|e| e.to_string()), now)
            }
            (MediaKind::SeqHeader, Track::Audio) => {
                self.set_audio(tracks::audio_track(&frame.body).map_err(|e| e.to_string()), now)
            }
            (_, Track::Video) => self.push_video(frame, unix_ms, now),
            (_, Track::Audio) => self.push_audio(frame, unix_ms, now),
        }
    }

    fn set_video(&mut self, track: Result<VideoTrack, String>, now: Instant) -> Changed {
        match track {
            Ok(track) if self.video.as_ref() == Some(&track) => Changed::default(),
            Ok(track) => {
                let changed = self.restart(now);
                self.video = Some(track);
                self.refused = None;
                changed
            }
            Err(why) => {
                let changed = self.restart(now);
                self.video = None;
                self.refused = Some(why);
                changed
            }
        }
    }

    fn set_audio(&mut self, track: Result<AudioTrack, String>, now: Instant) -> Changed {
        match track {
            Ok(track) if self.audio == Some(track) => Changed::default(),
            Ok(track) => {
                let changed = self.restart(now);
                self.audio = Some(track);
                changed
            }
            // Audio HLS cannot carry (not AAC) is left out; video goes on.
            Err(_) => Changed::default(),
        }
    }

    /// New tracks: what is open is completed, and what follows starts at a keyframe with a new init.
    fn restart(&mut self, now: Instant) -> Changed {
        let changed = if self.started {
            self.close_all(now)
        } else {
            Changed::default()
        };
        self.started = false;
        self.discontinuity_next = true;
        self.part_audio.clear();
        changed
    }

    fn push_video(&mut self, frame: &Frame, unix_ms: u64, now: Instant) -> Changed {
        if self.video.is_none() {
            return Changed::default();
        }
        // AVC NALU packets only (type 1); an end-of-sequence (2) carries no picture.
        if frame.body.get(1) != Some(&1) || frame.body.len() <= 5 {
            return Changed::default();
        }
        let key = frame.kind == MediaKind::Key;
        if !self.started {
            if !key || !self.start(unix_ms, frame.dts_ms) {
                return Changed::default();
            }
            self.cts_shift_ms = frame.pts_ms.saturating_sub(frame.dts_ms);
        }
        let sample = Pending {
            dts_ms: frame.dts_ms,
            pts_ms: frame.pts_ms.max(frame.dts_ms),
            data: frame.body.slice(5..),
            key,
            capture: frame.capture,
            duration_ms: 0,
        };
        let mut changed = Changed::default();
        if let Some(mut held) = self.held_video.take() {
            let gap = sample.dts_ms.saturating_sub(held.dts_ms);
            if gap > 0 && gap < 10_000 {
                self.video_interval_ms = gap;
            }
            held.duration_ms = if gap > 0 { gap } else { self.video_interval_ms };
            self.segment_bytes += held.data.len();
            self.part_video.push(held);
            changed = self.cut_before(sample.dts_ms, key, unix_ms, now);
        }
        self.held_video = Some(sample);
        changed
    }

    fn push_audio(&mut self, frame: &Frame, unix_ms: u64, now: Instant) -> Changed {
        if self.audio.is_none() || frame.body.get(1) != Some(&1) || frame.body.len() <= 2 {
            return Changed::default();
        }
        let audio_only = self.video.is_none();
        if !self.started && (!audio_only || !self.start(unix_ms, frame.dts_ms)) {
            return Changed::default();
        }
        let mut changed = Changed::default();
        if audio_only && !self.part_audio.is_empty() {
            changed = self.cut_before(frame.dts_ms, true, unix_ms, now);
        }
        self.segment_bytes += frame.body.len() - 2;
        self.part_audio.push(Pending {
            dts_ms: frame.dts_ms,
            pts_ms: frame.dts_ms,
            data: frame.body.slice(2..),
            key: true,
            capture: frame.capture,
            duration_ms: 0,
        });
        changed
    }

    /// Starts packaging at a keyframe (or an audio-only stream's first frame): builds the init segment.
    fn start(&mut self, unix_ms: u64, dts_ms: u64) -> bool {
        match fmp4::init_segment(self.video.as_ref(), self.audio.as_ref()) {
            Ok(bytes) => {
                let version = self.next_init_version;
                self.next_init_version += 1;
                self.inits.push((version, bytes));
                self.started = true;
                self.open_segment(unix_ms, dts_ms, true);
                true
            }
            Err(error) => {
                self.refused = Some(error.to_string());
                false
            }
        }
    }

    fn open_segment(&mut self, unix_ms: u64, dts_ms: u64, independent: bool) {
        let discontinuity = std::mem::take(&mut self.discontinuity_next);
        self.open = Some(Segment {
            msn: self.next_msn,
            parts: Vec::new(),
            start_unix_ms: unix_ms,
            discontinuity,
            init_version: self.inits.last().map_or(0, |(v, _)| *v),
        });
        self.next_msn += 1;
        self.segment_start_ms = dts_ms;
        self.segment_bytes = 0;
        self.part_start_ms = Some(dts_ms);
        self.part_independent = independent;
    }

    /// A frame at `dts_ms` (`key`: it may start a segment) comes next: close the part, and the segment, if
    /// it belongs after them.
    fn cut_before(&mut self, dts_ms: u64, key: bool, unix_ms: u64, now: Instant) -> Changed {
        let Some(part_start) = self.part_start_ms else {
            return Changed::default();
        };
        let segment_due = key && dts_ms.saturating_sub(self.segment_start_ms) >= self.config.target_ms;
        let oversized = self.segment_bytes >= self.config.max_segment_bytes;
        let interval = if self.video.is_some() {
            self.video_interval_ms
        } else {
            0
        };
        let part_due = dts_ms.saturating_sub(part_start) + interval > self.config.part_target_ms;
        let mut changed = Changed::default();
        if segment_due || oversized {
            changed.part = self.close_part(dts_ms, now);
            changed.segment = self.close_segment();
            self.open_segment(unix_ms, dts_ms, key);
        } else if part_due {
            changed.part = self.close_part(dts_ms, now);
            self.part_start_ms = Some(dts_ms);
            self.part_independent = key;
        }
        changed
    }

    /// Closes the open part at `end_ms` (the next frame's dts): its video, and the audio before `end_ms`.
    fn close_part(&mut self, end_ms: u64, now: Instant) -> bool {
        let Some(start) = self.part_start_ms else {
            return false;
        };
        let split = self
            .part_audio
            .iter()
            .position(|a| a.dts_ms >= end_ms)
            .unwrap_or(self.part_audio.len());
        let audio: Vec<Pending> = self.part_audio.drain(..split).collect();
        let video = std::mem::take(&mut self.part_video);
        if video.is_empty() && audio.is_empty() {
            return false;
        }
        let newest = video.iter().chain(&audio).map(|p| p.capture).max();
        let video_run = Run {
            base_decode_time: video.first().map_or(0, |v| v.dts_ms * TICKS_PER_MS),
            samples: video
                .iter()
                .map(|v| Sample {
                    data: v.data.clone(),
                    duration: (v.duration_ms * TICKS_PER_MS).min(u64::from(u32::MAX)) as u32,
                    composition_offset: ((v.pts_ms.saturating_sub(v.dts_ms) as i64
                        - self.cts_shift_ms as i64)
                        * TICKS_PER_MS as i64)
                        .clamp(i64::from(i32::MIN), i64::from(i32::MAX))
                        as i32,
                    sync: v.key,
                })
                .collect(),
        };
        let rate = self.audio.map_or(48_000, |a| u64::from(a.sample_rate));
        let audio_run = Run {
            base_decode_time: audio.first().map_or(0, |a| a.dts_ms * rate / 1_000),
            samples: audio
                .iter()
                .map(|a| Sample {
                    data: a.data.clone(),
                    duration: AAC_FRAME_SAMPLES,
                    composition_offset: 0,
                    sync: true,
                })
                .collect(),
        };
        let fragment = match fmp4::fragment(self.fragment_sequence, &video_run, &audio_run) {
            Ok(fragment) => fragment,
            Err(error) => {
                self.refused = Some(error.to_string());
                return false;
            }
        };
        self.fragment_sequence = self.fragment_sequence.wrapping_add(1);
        let part = Part {
            duration_ms: end_ms.saturating_sub(start).max(1),
            independent: self.part_independent,
            fragment,
        };
        if let Some(open) = &mut self.open {
            open.parts.push(part);
        }
        if let Some(newest) = newest {
            self.delays.push(now.saturating_duration_since(newest));
        }
        true
    }

    fn close_segment(&mut self) -> bool {
        let Some(open) = self.open.take() else {
            return false;
        };
        if open.is_empty() {
            return false;
        }
        self.segments.push_back(open);
        while self.segments.len() > self.config.window.max(1) {
            if self.segments.pop_front().is_some_and(|s| s.discontinuity) {
                self.discontinuity_sequence += 1;
            }
        }
        // Init segments no segment of the window needs any more go (the newest stays).
        let oldest = self.segments.front().map_or(u32::MAX, |s| s.init_version);
        let newest = self.inits.last().map(|(v, _)| *v);
        self.inits.retain(|(v, _)| *v >= oldest || Some(*v) == newest);
        true
    }

    /// Closes everything open (the held video frame takes the last interval as its duration).
    fn close_all(&mut self, now: Instant) -> Changed {
        let mut end = self.part_audio.last().map_or(0, |a| a.dts_ms + 23);
        if let Some(mut held) = self.held_video.take() {
            held.duration_ms = self.video_interval_ms;
            end = end.max(held.dts_ms + held.duration_ms);
            self.part_video.push(held);
        }
        let part = self.close_part(end.max(self.part_start_ms.unwrap_or(0) + 1), now);
        self.part_start_ms = None;
        let segment = self.close_segment();
        Changed { part, segment }
    }

    /// The stream's publisher changed: what is open is completed, and what follows starts at the new
    /// publisher's keyframe after a discontinuity (its timestamps start anew).
    pub fn discontinue(&mut self, now: Instant) -> Changed {
        self.restart(now)
    }

    /// The stream ended (its publisher left and the grace period passed): what is open is completed and the
    /// playlist says so (`EXT-X-ENDLIST`).
    pub fn finish(&mut self, now: Instant) -> Changed {
        let changed = if self.started {
            self.close_all(now)
        } else {
            Changed::default()
        };
        self.started = false;
        self.ended = true;
        changed
    }

    /// The stream ended.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Why the stream cannot be packaged, if it cannot (an unsupported codec).
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// The init segment of `version`, while a segment of the window needs it.
    pub fn init(&self, version: u32) -> Option<&Bytes> {
        self.inits.iter().find(|(v, _)| *v == version).map(|(_, b)| b)
    }

    /// The complete segments, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    /// The video track being packaged, if any.
    pub fn video_track(&self) -> Option<&VideoTrack> {
        self.video.as_ref()
    }

    /// The audio track being packaged, if any.
    pub fn audio_track(&self) -> Option<&AudioTrack> {
        self.audio.as_ref()
    }

    /// Discontinuities before the window's first segment.
    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    /// The segment in progress, if any.
    pub fn open(&self) -> Option<&Segment> {
        self.open.as_ref()
    }

    /// Complete segment `msn`.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.msn == msn)
    }

    /// Part `index` of segment `msn` (complete or in progress).
    pub fn part(&self, msn: u64, index: usize) -> Option<&Part> {
        self.segments
            .iter()
            .chain(self.open.iter())
            .find(|s| s.msn == msn)
            .and_then(|s| s.parts.get(index))
    }

    /// Whether part `index` of segment `msn` exists or is past (a later segment began): a blocking request
    /// for it can be answered.
    pub fn reached(&self, msn: u64, index: Option<usize>) -> bool {
        let Some(open) = &self.open else {
            return self.segments.back().is_some_and(|s| s.msn >= msn) || self.ended;
        };
        match index {
            None => open.msn > msn,
            Some(index) => open.msn > msn || (open.msn == msn && open.parts.len() > index),
        }
    }

    /// The next part's address (`EXT-X-PRELOAD-HINT`): the open segment's next part.
    pub fn next_part(&self) -> Option<(u64, usize)> {
        self.open.as_ref().map(|s| (s.msn, s.parts.len()))
    }

    /// Bytes the window holds (segments and the open one), frames' bodies included (they are shared with the
    /// GOP cache while it holds them).
    pub fn held_bytes(&self) -> usize {
        self.segments
            .iter()
            .chain(self.open.iter())
            .map(Segment::len)
            .sum()
    }

    /// Glass-to-playlist delays of the parts completed since the last call.
    pub fn take_delays(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.delays)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// An AVC sequence header (Constrained Baseline 640x360).
    pub(crate) fn avc_header() -> Bytes {
        let sps: &[u8] = &[
            0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04,
            0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x58, 0xba, 0x80,
        ];
        let mut body = vec![0x17, 0x00, 0, 0, 0, 1, 0x42, 0xc0, 0x1e, 0xff, 0xe1];
        body.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        body.extend_from_slice(sps);
        body.extend_from_slice(&[1, 0, 4, 0x68, 0xce, 0x3c, 0x80]);
        Bytes::from(body)
    }

    fn frame(kind: MediaKind, track: Track, dts: u64, body: Bytes, t0: Instant) -> Frame {
        Frame::new(kind, track, dts, dts, body, t0 + Duration::from_millis(dts))
    }

    fn video(key: bool, n: u8) -> Bytes {
        let b0 = if key { 0x17 } else { 0x27 };
        Bytes::from(vec![b0, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, n])
    }

    /// 30 fps video with a keyframe every `gop` frames and AAC at 44.1 kHz, for `frames` frames.
    fn run(muxer: &mut HlsMuxer, frames: u64, gop: u64, t0: Instant) -> Vec<Changed> {
        let mut changes = Vec::new();
        muxer.push(
            &frame(MediaKind::SeqHeader, Track::Video, 0, avc_header(), t0),
            0,
            t0,
        );
        let aac = Bytes::from_static(&[0xaf, 0x00, 0x12, 0x10]);
        muxer.push(&frame(MediaKind::SeqHeader, Track::Audio, 0, aac, t0), 0, t0);
        let mut audio_dts = 0u64;
        for i in 0..frames {
            let dts = i * 1000 / 30;
            while audio_dts <= dts {
                let f = frame(
                    MediaKind::Audio,
                    Track::Audio,
                    audio_dts,
                    Bytes::from_static(&[0xaf, 1, 9, 9]),
                    t0,
                );
                changes.push(muxer.push(&f, audio_dts, t0 + Duration::from_millis(audio_dts)));
                audio_dts += 23;
            }
            let key = i % gop == 0;
            let kind = if key { MediaKind::Key } else { MediaKind::Inter };
            let f = frame(kind, Track::Video, dts, video(key, i as u8), t0);
            changes.push(muxer.push(&f, 1_000_000 + dts, t0 + Duration::from_millis(dts)));
        }
        changes
    }

    #[test]
    fn segments_start_on_keyframes_at_the_target_and_parts_stay_under_theirs() {
        let t0 = Instant::now();
        let mut m = HlsMuxer::new(MuxerConfig::default());
        run(&mut m, 30 * 9, 60, t0);
        let segments: Vec<&Segment> = m.segments().collect();
        assert_eq!(segments.len(), 4, "9 s of 2 s GOPs: 4 complete, one open");
        for s in &segments {
            assert!(s.parts[0].independent, "segment {} starts on a keyframe", s.msn);
            assert!((1_990..=2_010).contains(&s.duration_ms()), "{}", s.duration_ms());
            for p in &s.parts {
                assert!(p.duration_ms <= 500, "part of {} ms", p.duration_ms);
                assert!(p.duration_ms >= 400, "part of {} ms", p.duration_ms);
            }
            assert_eq!(s.len(), s.buffers().map(Bytes::len).sum::<usize>());
        }
        assert_eq!(segments[0].start_unix_ms, 1_000_000);
        assert_eq!(segments[1].start_unix_ms, 1_000_000 + 2_000);
        assert!(m.init(0).is_some());
        assert!(m.reached(4, Some(0)));
        assert!(!m.reached(5, None));
        assert!(m.take_delays().iter().all(|d| *d < Duration::from_millis(100)));
    }

    #[test]
    fn the_window_slides_and_finish_completes_the_open_segment() {
        let t0 = Instant::now();
        let mut m = HlsMuxer::new(MuxerConfig {
            window: 3,
            ..MuxerConfig::default()
        });
        run(&mut m, 30 * 20, 60, t0);
        let msns: Vec<u64> = m.segments().map(|s| s.msn).collect();
        assert_eq!(msns, vec![6, 7, 8]);
        let changed = m.finish(t0 + Duration::from_secs(30));
        assert!(changed.segment);
        assert!(m.ended());
        assert_eq!(m.segments().last().unwrap().msn, 9);
        assert!(m.open().is_none());
    }

    #[test]
    fn a_fragment_is_moof_then_mdat_with_the_samples_not_copied() {
        let t0 = Instant::now();
        let mut m = HlsMuxer::new(MuxerConfig::default());
        run(&mut m, 30 * 3, 60, t0);
        let part = m.part(0, 0).unwrap();
        let bytes = &part.fragment.bytes;
        assert_eq!(&bytes[0][4..8], b"moof");
        assert_eq!(&bytes[1][4..8], b"mdat");
        let mdat_len = u32::from_be_bytes(bytes[1][..4].try_into().unwrap()) as usize;
        assert_eq!(bytes[0].len() + mdat_len, part.fragment.len);
        // The first video sample is the keyframe's NAL units, a slice of the frame's body.
        assert_eq!(&bytes[2][..], &[0, 0, 0, 2, 0x65, 0]);
    }

    #[test]
    fn video_waits_for_a_keyframe_and_a_new_header_starts_a_discontinuity() {
        let t0 = Instant::now();
        let mut m = HlsMuxer::new(MuxerConfig::default());
        m.push(
            &frame(MediaKind::SeqHeader, Track::Video, 0, avc_header(), t0),
            0,
            t0,
        );
        m.push(
            &frame(MediaKind::Inter, Track::Video, 0, video(false, 0), t0),
            0,
            t0,
        );
        assert!(m.open().is_none(), "no segment before a keyframe");
        run(&mut m, 30 * 5, 60, t0);
        let mut other = avc_header().to_vec();
        other[8] = 0x1f; // another level: another configuration
        m.push(
            &frame(MediaKind::SeqHeader, Track::Video, 5_000, Bytes::from(other), t0),
            0,
            t0,
        );
        let f = frame(MediaKind::Key, Track::Video, 5_033, video(true, 1), t0);
        m.push(&f, 0, t0);
        assert!(m.open().unwrap().discontinuity);
        assert_eq!(m.open().unwrap().init_version, 1);
        assert!(m.init(1).is_some());
        assert!(
            m.init(0).is_some(),
            "segments of the window still need the first init"
        );
    }

    #[test]
    fn an_unsupported_codec_is_refused_with_a_reason() {
        let t0 = Instant::now();
        let mut m = HlsMuxer::new(MuxerConfig::default());
        // Enhanced RTMP HEVC sequence start.
        let hevc = Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1', 1, 2, 3]);
        m.push(&frame(MediaKind::SeqHeader, Track::Video, 0, hevc, t0), 0, t0);
        assert!(m.refused().unwrap().contains("H.264 only"), "{:?}", m.refused());
    }
}
