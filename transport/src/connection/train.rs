//! The train arriving now: what is left of the frame whose fragments are coming in, and when it should be in.
//!
//! A sender paces a frame out as a train of datagrams that leave the bottleneck back to back (at 100 Mbit/s,
//! one per ~120 us). A receiver that wakes for each of them does a wake-up's work for a datagram's worth of
//! progress, and cannot deliver the frame before its last datagram anyway. Each fragment's header says how
//! long its frame is and where the fragment sits in it, so the receiver knows how many datagrams of the frame
//! are still to come; with the spacing seen between this train's datagrams (or, for a train's first one,
//! earlier trains'), it also knows about when the last one will be in. A driver may let its next wait run
//! until then ([`TrainTracker::hint`]), gathering the rest in one wake-up, but never longer than the ACK
//! interval (the receiver acknowledges at most that often while packets come fast, so no ACK is held back).
//! The hint lapses when the train stalls (a loss, a window-limited sender, a dropped frame): one ACK interval
//! after the last fragment. The same estimate ([`TrainTracker::eta`]) lets the connection acknowledge a short
//! train once, at its end (see `AckTracker::hold_for_train`).

use std::time::{Duration, Instant};

/// The newest frame whose fragments are arriving in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Train {
    stream: u32,
    seq: u64,
    frame_len: u32,
    /// End of the furthest fragment received (offset + length).
    end: u32,
    /// Bytes per full-size fragment (the length of a fragment that is not the frame's last).
    unit: u32,
    /// Fragments of this train received, and when the first and the latest were handled.
    count: u32,
    first_at: Instant,
    last_at: Instant,
}

impl Train {
    /// Mean time between this train's datagrams so far, once two were seen at different times.
    fn spacing(&self) -> Option<Duration> {
        let span = self.last_at.saturating_duration_since(self.first_at);
        (self.count >= 2 && !span.is_zero()).then(|| span / (self.count - 1))
    }
}

/// The train arriving on one connection, and the datagram spacing of the trains before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrainTracker {
    train: Option<Train>,
    /// Smoothed spacing of finished trains (7/8 old, 1/8 new).
    spacing: Option<Duration>,
}

impl TrainTracker {
    /// Records a fragment of `len` bytes at `offset` of frame `seq` (of `frame_len` bytes) on `stream`,
    /// handled at `now`. A fragment of an older frame of the same stream (a repair) changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn on_fragment(
        &mut self,
        now: Instant,
        stream: u32,
        seq: u64,
        frame_len: u32,
        offset: u32,
        len: u32,
    ) {
        let end = offset.saturating_add(len).min(frame_len);
        let full_size = end < frame_len;
        match &mut self.train {
            Some(t) if t.stream == stream && t.seq == seq => {
                t.end = t.end.max(end);
                if full_size {
                    t.unit = t.unit.max(len);
                }
                t.count = t.count.saturating_add(1);
                t.last_at = now;
            }
            Some(t) if t.stream == stream && seq < t.seq => {}
            _ => {
                if let Some(s) = self.train.and_then(|t| t.spacing()) {
                    self.spacing = Some(self.spacing.map_or(s, |old| (old * 7 + s) / 8));
                }
                self.train = Some(Train {
                    stream,
                    seq,
                    frame_len,
                    end,
                    unit: if full_size { len } else { 0 },
                    count: 1,
                    first_at: now,
                    last_at: now,
                });
            }
        }
    }

    /// Datagrams of the arriving frame still to come, and how long from `now` until the last should be in (at
    /// most `lifetime`; zero when it is late), if its latest fragment came within `lifetime` of `now` and the
    /// spacing is known.
    pub fn hint(&self, now: Instant, lifetime: Duration) -> Option<(u32, Duration)> {
        let eta = self.eta(now, lifetime)?;
        Some((eta.left, eta.end.saturating_duration_since(now).min(lifetime)))
    }

    /// The arriving frame's train as [`Self::hint`] sees it (the same conditions), with its start and its
    /// expected end as instants: what holds a short train's ACK until its end (see `AckTracker`).
    pub fn eta(&self, now: Instant, lifetime: Duration) -> Option<TrainEta> {
        let t = self.train?;
        if t.unit == 0 || t.end >= t.frame_len || now.saturating_duration_since(t.last_at) > lifetime {
            return None;
        }
        let left = (t.frame_len - t.end).div_ceil(t.unit);
        let spacing = t.spacing().or(self.spacing)?;
        // Due from the latest fragment on.
        let end = t.last_at.checked_add(spacing.saturating_mul(left))?;
        Some(TrainEta {
            left,
            first_at: t.first_at,
            end,
        })
    }
}

/// What is left of the arriving train, and when it began and should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainEta {
    /// Datagrams still to come.
    pub left: u32,
    /// When its first datagram was handled.
    pub first_at: Instant,
    /// When its last datagram should be in (in the past when it is late).
    pub end: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    #[test]
    fn counts_the_datagrams_left_and_times_them_by_the_trains_spacing() {
        let t0 = Instant::now();
        let mut t = TrainTracker::default();
        t.on_fragment(t0, 0, 7, 10_000, 0, 1_400);
        // The spacing is not known yet.
        assert_eq!(t.hint(t0, MS), None);
        t.on_fragment(t0 + 100 * US, 0, 7, 10_000, 1_400, 1_400);
        // 7,200 bytes left at 1,400 a datagram: 6 datagrams (the last one short), 100 us apart.
        assert_eq!(t.hint(t0 + 100 * US, MS), Some((6, 600 * US)));
        // The wait is held to the lifetime.
        assert_eq!(t.hint(t0 + 100 * US, 300 * US), Some((6, 300 * US)));
        // The last fragment completes the frame.
        t.on_fragment(t0 + 200 * US, 0, 7, 10_000, 8_400, 1_600);
        assert_eq!(t.hint(t0 + 200 * US, MS), None);
        // The next train's first datagram uses the spacing of the trains before it.
        t.on_fragment(t0 + 30 * MS, 0, 8, 4_200, 0, 1_400);
        assert_eq!(t.hint(t0 + 30 * MS, MS), Some((2, 200 * US)));
    }

    #[test]
    fn a_repair_of_an_older_frame_does_not_move_it_and_a_stall_lapses_it() {
        let t0 = Instant::now();
        let mut t = TrainTracker::default();
        t.on_fragment(t0, 0, 9, 5_600, 0, 1_400);
        t.on_fragment(t0 + 100 * US, 0, 9, 5_600, 1_400, 1_400);
        t.on_fragment(t0 + 150 * US, 0, 8, 2_800, 1_400, 1_400);
        let now = t0 + 100 * US;
        assert_eq!(t.hint(now, MS), Some((2, 200 * US)));
        // 50 us later the rest is due 150 us from then; a late train is due at once.
        assert_eq!(t.hint(now + 50 * US, MS), Some((2, 150 * US)));
        assert_eq!(t.hint(now + MS, MS), Some((2, Duration::ZERO)));
        assert_eq!(t.hint(now + 2 * MS, MS), None);
    }

    #[test]
    fn a_single_fragment_frame_or_a_hostile_header_expects_nothing() {
        let t0 = Instant::now();
        let mut t = TrainTracker::default();
        t.on_fragment(t0, 0, 1, 300, 0, 300);
        assert_eq!(t.hint(t0, MS), None);
        t.on_fragment(t0, 0, 2, 300, u32::MAX, 300);
        assert_eq!(t.hint(t0, MS), None);
        t.on_fragment(t0, 0, 3, u32::MAX, 0, 0);
        assert_eq!(t.hint(t0, MS), None);
    }
}
