//! When the publisher sent each tag: its media time (the RTMP timestamp) and its send time, in order. An HLS
//! segment or part names its media time (its end, by accumulated durations); this log turns that into the
//! capture time of the newest frame in it, the start of the glass-to-playlist latency
//! ([`crate::egress`]). Kept only when asked for (a few entries per frame: 16 MiB holds about 17 hours of a
//! 25 fps stream with AAC), by [`super::publisher::Publisher::start_logged`].

use std::sync::{Mutex, MutexGuard};

/// One tag as the publisher sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Its media time: the RTMP timestamp, in ms, continued across the source's loops.
    pub ts_ms: u64,
    /// When it was handed to the socket, in microseconds on [`super::clock`] (the stamp of a video frame).
    pub send_us: u64,
    /// A video keyframe (a segment can start with it).
    pub keyframe: bool,
}

/// The tags one publisher sent, in sending order (media times never go back: the source's tags are in
/// timestamp order and each loop continues the last).
#[derive(Debug, Default)]
pub struct SendLog {
    sent: Mutex<Vec<Sent>>,
}

impl SendLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Sent>> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one tag sent.
    pub fn record(&self, sent: Sent) {
        self.lock().push(sent);
    }

    /// The newest tag with a media time before `end_ms`: the newest frame of a segment or part that ends at
    /// `end_ms` (a server closes one when the frame at its end arrives, so it holds every frame before it).
    /// `None` while nothing that old was sent, or when `end_ms` is past the newest tag sent (the server
    /// cannot know yet where it ends: the media timeline and the server's disagree).
    pub fn newest_before(&self, end_ms: u64) -> Option<Sent> {
        let sent = self.lock();
        if sent.last().is_none_or(|last| last.ts_ms < end_ms) {
            return None;
        }
        let after = sent.partition_point(|s| s.ts_ms < end_ms);
        after.checked_sub(1).map(|i| sent[i])
    }

    /// The first tag at or after `ts_ms`: the first frame of a segment or part that starts there.
    pub fn first_at(&self, ts_ms: u64) -> Option<Sent> {
        let sent = self.lock();
        sent.get(sent.partition_point(|s| s.ts_ms < ts_ms)).copied()
    }

    /// The keyframe whose send time is nearest `at_us` (on the clock), and how far from it, in microseconds.
    pub fn keyframe_nearest(&self, at_us: u64) -> Option<(Sent, u64)> {
        self.lock()
            .iter()
            .filter(|s| s.keyframe)
            .map(|s| (*s, s.send_us.abs_diff(at_us)))
            .min_by_key(|(_, d)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> SendLog {
        let log = SendLog::new();
        // 25 fps video with a keyframe every 2 s, AAC between, sent at media time + 1 s (+ 0.2 ms jitter).
        for i in 0..200u64 {
            log.record(Sent {
                ts_ms: i * 40,
                send_us: 1_000_000 + i * 40_000 + 200,
                keyframe: i % 50 == 0,
            });
            log.record(Sent {
                ts_ms: i * 40 + 23,
                send_us: 1_000_000 + (i * 40 + 23) * 1000,
                keyframe: false,
            });
        }
        log
    }

    #[test]
    fn maps_a_segment_end_to_its_newest_frame() {
        let log = log();
        assert_eq!(log.lock().len(), 400);
        // A segment [0, 2000) ends at the keyframe of 2000: its newest frame is the audio at 1983.
        let newest = log.newest_before(2000).unwrap();
        assert_eq!((newest.ts_ms, newest.send_us), (1983, 2_983_000));
        assert_eq!(log.newest_before(1).unwrap().ts_ms, 0);
        assert_eq!(log.newest_before(0), None, "nothing before the first tag");
        assert_eq!(log.newest_before(7_983).unwrap().ts_ms, 7_960);
        assert_eq!(
            log.newest_before(7_984),
            None,
            "past the newest tag sent: unknown yet"
        );
        assert_eq!(log.first_at(2000).unwrap().send_us, 3_000_200);
        assert_eq!(log.first_at(1990).unwrap().ts_ms, 2000);
        assert_eq!(log.first_at(9_000), None);
    }

    #[test]
    fn finds_the_keyframe_sent_nearest_a_wall_time() {
        let log = log();
        let (key, off) = log.keyframe_nearest(3_000_000).unwrap();
        assert_eq!((key.ts_ms, off), (2000, 200));
        assert_eq!(log.keyframe_nearest(3_900_000).unwrap().0.ts_ms, 2000);
        assert_eq!(log.keyframe_nearest(4_100_000).unwrap().0.ts_ms, 4000);
        assert_eq!(SendLog::new().keyframe_nearest(0), None);
    }
}
