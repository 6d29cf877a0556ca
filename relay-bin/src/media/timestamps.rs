//! [`Timeline`]: a publisher's 32-bit RTMP timestamps turned into a 64-bit, per-track monotonic dts.
//!
//! RTMP timestamps are milliseconds that wrap at 2^32 (about 49.7 days), and publishers send them out of step:
//! a restart at 0 on the same connection, a clock jump, a frame a few milliseconds behind its predecessor.
//! Viewers' players and the GOP cache need a dts that never goes back within a track, so the timeline
//! unwraps and corrects, and counts what it corrected.

use super::frame::Track;

/// A backward step of a track at least this large (ms) is a restart, not jitter: the timeline rebases.
const MAX_BACKWARD_STEP_MS: i64 = 1_000;
/// A forward step beyond the latest dts of any track larger than this (ms) is a clock jump: the timeline
/// rebases.
const MAX_FORWARD_STEP_MS: i64 = 60_000;

/// Turns one publisher's RTMP timestamps into dts values in milliseconds.
///
/// The rules, in order:
/// 1. The first timestamp maps to itself.
/// 2. Every later timestamp is unwrapped from the previous raw timestamp of *any* track (audio, video and
///    data share one clock): the 32-bit difference is read as an `i32`, so `0xFFFF_FF00` followed by
///    `0x0000_0100` moves forward 512 ms. The unwrapped time plus the current offset (0 at first) is the
///    candidate dts.
/// 3. If the candidate is more than 60 s past the latest dts of any track (a clock jump), or at least 1 s
///    before the last dts of its own track (a publisher restarting at 0 on the same connection), the
///    timeline rebases: it picks a new offset so that this frame lands 1 ms after the latest dts of any
///    track, and following frames of every track keep that offset.
/// 4. Otherwise a candidate before its track's last dts (a small backward step) is clamped to that dts.
///
/// A track's first frame is checked only for the forward jump (an audio track may start some seconds
/// behind video; rebasing for that would break A/V sync) and is clamped to 0 at least. Tracks are
/// independent otherwise: audio slightly behind video is left alone. A data message (metadata, cue point)
/// never rebases: encoders often stamp those 0 or from another clock, so one that would is stamped with the
/// latest dts of any track and its raw timestamp is not used to unwrap the next one. Each rebase or clamp
/// counts once in [`Timeline::corrections`].
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The previous raw timestamp of any track; `None` before the first.
    last_raw: Option<u32>,
    /// `last_raw` unwrapped onto 64 bits.
    unwrapped_ms: i64,
    /// Added to the unwrapped time to make the candidate dts; changed only by a rebase.
    offset_ms: i64,
    last_audio_ms: Option<i64>,
    last_video_ms: Option<i64>,
    last_data_ms: Option<i64>,
    /// The latest dts handed out on any track.
    max_dts_ms: i64,
    corrections: u64,
}

impl Timeline {
    /// A timeline that has seen no timestamp yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dts in milliseconds of a frame of `track` whose RTMP timestamp is `ts` (ms, wrapping at 2^32).
    pub fn dts(&mut self, track: Track, ts: u32) -> u64 {
        let Some(last_raw) = self.last_raw else {
            self.last_raw = Some(ts);
            self.unwrapped_ms = i64::from(ts);
            self.max_dts_ms = i64::from(ts);
            *self.last_mut(track) = Some(i64::from(ts));
            return u64::from(ts);
        };
        // Reinterpreting the wrapped difference as signed is the point: it unwraps across 2^32.
        let step = i64::from(ts.wrapping_sub(last_raw) as i32);
        let unwrapped_ms = self.unwrapped_ms.saturating_add(step);
        let candidate = unwrapped_ms.saturating_add(self.offset_ms);
        let last = *self.last_mut(track);
        let jump = candidate.saturating_sub(self.max_dts_ms) > MAX_FORWARD_STEP_MS
            || last.is_some_and(|last| last.saturating_sub(candidate) >= MAX_BACKWARD_STEP_MS);
        let dts = if jump && track == Track::Data {
            // Stamped "now", and its raw timestamp is not taken as the clock's.
            self.corrections += 1;
            self.max_dts_ms
        } else {
            self.last_raw = Some(ts);
            self.unwrapped_ms = unwrapped_ms;
            let floor = last.unwrap_or(0);
            if jump {
                self.rebase()
            } else if candidate < floor {
                self.corrections += 1;
                floor
            } else {
                candidate
            }
        };
        *self.last_mut(track) = Some(dts);
        self.max_dts_ms = self.max_dts_ms.max(dts);
        u64::try_from(dts).unwrap_or(0)
    }

    /// How many timestamps were corrected (clamped or rebased) so far.
    pub fn corrections(&self) -> u64 {
        self.corrections
    }

    /// Moves the offset so that the current frame lands 1 ms after the latest dts of any track.
    fn rebase(&mut self) -> i64 {
        let dts = self.max_dts_ms.saturating_add(1);
        self.offset_ms = dts.saturating_sub(self.unwrapped_ms);
        self.corrections += 1;
        dts
    }

    fn last_mut(&mut self, track: Track) -> &mut Option<i64> {
        match track {
            Track::Audio => &mut self.last_audio_ms,
            Track::Video => &mut self.last_video_ms,
            Track::Data => &mut self.last_data_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_maps_to_itself_and_wraps_forward() {
        let mut t = Timeline::new();
        assert_eq!(t.dts(Track::Video, 0xFFFF_FF00), 0xFFFF_FF00);
        assert_eq!(t.dts(Track::Audio, 0xFFFF_FF80), 0xFFFF_FF80);
        assert_eq!(t.dts(Track::Video, 0x0000_0100), 0xFFFF_FF00 + 512);
        assert_eq!(t.dts(Track::Video, 0x0000_0200), 0x1_0000_0200);
        assert_eq!(t.corrections(), 0);
    }

    #[test]
    fn small_backward_step_is_clamped() {
        let mut t = Timeline::new();
        assert_eq!(t.dts(Track::Video, 1000), 1000);
        assert_eq!(t.dts(Track::Video, 1040), 1040);
        assert_eq!(t.dts(Track::Video, 1020), 1040);
        assert_eq!(t.corrections(), 1);
        // The next frame is not shifted: only that one was clamped.
        assert_eq!(t.dts(Track::Video, 1080), 1080);
        assert_eq!(t.corrections(), 1);
    }

    #[test]
    fn restart_at_zero_rebases() {
        let mut t = Timeline::new();
        for i in 0..100u32 {
            t.dts(Track::Video, 100_000 + i * 40);
            t.dts(Track::Audio, 100_010 + i * 40);
        }
        let max: u64 = 100_010 + 99 * 40;
        // The publisher restarts at 0 on the same connection.
        assert_eq!(t.dts(Track::Video, 0), max + 1);
        assert_eq!(t.dts(Track::Audio, 10), max + 11);
        assert_eq!(t.dts(Track::Video, 40), max + 41);
        assert_eq!(t.corrections(), 1);
    }

    #[test]
    fn forward_jump_rebases() {
        let mut t = Timeline::new();
        assert_eq!(t.dts(Track::Video, 5_000), 5_000);
        assert_eq!(t.dts(Track::Audio, 5_020), 5_020);
        // 59 s forward is kept (a pause), 61 s more is a jump.
        assert_eq!(t.dts(Track::Video, 64_000), 64_000);
        assert_eq!(t.dts(Track::Video, 125_001), 64_001);
        assert_eq!(t.dts(Track::Audio, 125_021), 64_021);
        assert_eq!(t.corrections(), 1);
    }

    #[test]
    fn tracks_slightly_out_of_order_are_left_alone() {
        let mut t = Timeline::new();
        let input = [
            (Track::Video, 0),
            (Track::Audio, 0),
            (Track::Video, 40),
            (Track::Audio, 23),
            (Track::Audio, 46),
            (Track::Video, 80),
            (Track::Audio, 69),
            (Track::Data, 50),
        ];
        for (track, ts) in input {
            assert_eq!(t.dts(track, ts), u64::from(ts));
        }
        assert_eq!(t.corrections(), 0);
        // A track starting well behind the others is not rebased either.
        let mut t = Timeline::new();
        assert_eq!(t.dts(Track::Video, 3_000), 3_000);
        assert_eq!(t.dts(Track::Audio, 0), 0);
        assert_eq!(t.dts(Track::Video, 3_040), 3_040);
        assert_eq!(t.corrections(), 0);
    }

    #[test]
    fn data_never_rebases() {
        let mut t = Timeline::new();
        assert_eq!(t.dts(Track::Data, 0), 0);
        assert_eq!(t.dts(Track::Video, 50_000), 50_000);
        // Metadata stamped 0 mid-stream: stamped "now", the timeline is untouched.
        assert_eq!(t.dts(Track::Data, 5_000), 5_000);
        assert_eq!(t.dts(Track::Data, 0), 50_000);
        assert_eq!(t.dts(Track::Video, 50_040), 50_040);
        assert_eq!(t.dts(Track::Data, 0x9000_0000), 50_040);
        assert_eq!(t.dts(Track::Video, 50_080), 50_080);
        assert_eq!(t.corrections(), 2);
    }

    fn track() -> impl Strategy<Value = Track> {
        prop_oneof![Just(Track::Audio), Just(Track::Video), Just(Track::Data)]
    }

    proptest! {
        #[test]
        fn per_track_non_decreasing(
            input in proptest::collection::vec((track(), any::<u32>(), any::<bool>()), 1..200),
        ) {
            let mut t = Timeline::new();
            let mut last: [Option<u64>; 3] = [None; 3];
            let mut prev = 0u32;
            for (track, ts, near) in input {
                // Half the steps are small (jitter, wraps), half arbitrary.
                let ts = if near { prev.wrapping_add(ts % 4_000).wrapping_sub(1_500) } else { ts };
                prev = ts;
                let dts = t.dts(track, ts);
                let slot = &mut last[track as usize];
                if let Some(l) = *slot {
                    prop_assert!(dts >= l, "{track:?}: {dts} after {l}");
                }
                *slot = Some(dts);
            }
        }
    }
}
