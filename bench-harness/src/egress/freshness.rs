//! Freshness: the age of the newest media a player can fetch, over time, sans-IO.
//!
//! Glass-to-playlist latency ([`super::glass`]) says how soon a segment or part is listed once its last frame
//! was captured; it does not say how old what a player can fetch is, which is what a live viewer waits on: a
//! 2 s segment is listed a few ms after its last frame, and then stays the newest thing to fetch for 2 s.
//! Each playlist read gives the newest unit it lists (the newest complete segment for plain HLS, the newest
//! part for LL-HLS) and, from the publisher's log, the capture time of the newest frame in it
//! ([`NewestSeen`]). Between two reads the player knows only what the earlier one listed, so the age at time
//! t is t minus that capture time: a sawtooth that drops when something newer is listed. It is sampled on a
//! fixed grid ([`STEP_US`]) from the first read to the last, so every moment of the run weighs the same
//! whether the playlist was read every 5 ms (interval polling) or only when something new appeared
//! (blocking reload, where sampling at the reads alone would see only the fresh moments).

use crate::fanout::percentile::percentile_of_sorted;

/// The grid the age is sampled on, in microseconds.
pub const STEP_US: u64 = 1_000;

/// One playlist read: when it arrived whole, and the capture time of the newest frame of the newest unit it
/// listed, both in microseconds on [`crate::fanout::clock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewestSeen {
    /// When the read arrived.
    pub seen_us: u64,
    /// When the newest frame of the newest unit listed was captured (sent by the publisher).
    pub capture_us: u64,
}

/// The age of the newest fetchable media at every `step_us` from the first read to the last (exclusive),
/// in microseconds, in time order. `reads` are in arrival order.
pub fn ages_us(reads: &[NewestSeen], step_us: u64) -> Vec<u64> {
    let (Some(first), Some(last)) = (reads.first(), reads.last()) else {
        return Vec::new();
    };
    let step = step_us.max(1);
    let mut ages = Vec::with_capacity(((last.seen_us - first.seen_us) / step) as usize);
    let mut current = 0;
    let mut t = first.seen_us;
    while t < last.seen_us {
        while reads.get(current + 1).is_some_and(|r| r.seen_us <= t) {
            current += 1;
        }
        ages.push(t.saturating_sub(reads[current].capture_us));
        t += step;
    }
    ages
}

/// The distribution of the age over a run, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Freshness {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Freshness {
    /// The age over the run that `reads` saw; `None` without two reads.
    pub fn of(reads: &[NewestSeen]) -> Option<Freshness> {
        let mut ages = ages_us(reads, STEP_US);
        if ages.is_empty() {
            return None;
        }
        let mean_us = ages.iter().map(|&a| a as f64).sum::<f64>() / ages.len() as f64;
        ages.sort_unstable();
        let ms = |us: Option<u64>| us.map_or(f64::NAN, |us| us as f64 / 1e3);
        Some(Freshness {
            p50_ms: ms(percentile_of_sorted(&ages, 50.0)),
            p99_ms: ms(percentile_of_sorted(&ages, 99.0)),
            mean_ms: mean_us / 1e3,
            max_ms: ms(ages.last().copied()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(seen_ms: u64, capture_ms: u64) -> NewestSeen {
        NewestSeen {
            seen_us: seen_ms * 1000,
            capture_us: capture_ms * 1000,
        }
    }

    #[test]
    fn the_age_is_a_sawtooth_sampled_over_time_not_at_the_reads() {
        // Parts of 500 ms each listed 10 ms after their newest frame (a blocking reload's reads).
        let reads = [read(1_000, 990), read(1_500, 1_490), read(2_000, 1_990)];
        let ages = ages_us(&reads, 1_000);
        assert_eq!(ages.len(), 1_000);
        assert_eq!(ages[0], 10_000);
        assert_eq!(ages[499], 509_000, "just before the next part is listed");
        assert_eq!(ages[500], 10_000);
        let f = Freshness::of(&reads).unwrap();
        assert!((f.mean_ms - 259.5).abs() < 1e-9, "{f:?}");
        assert_eq!(f.p50_ms, 259.0);
        assert_eq!(f.p99_ms, 504.0);
        assert_eq!(f.max_ms, 509.0);
        // Read every 100 ms, the same 2 s segment stays the newest: the age grows between new ones.
        let reads: Vec<NewestSeen> = (0..=40)
            .map(|i| read(10_000 + i * 100, 9_995 + (i / 20) * 2_000))
            .collect();
        let f = Freshness::of(&reads).unwrap();
        assert_eq!(f.max_ms, 2_004.0);
        assert!((f.mean_ms - 1_004.5).abs() < 1e-9, "{f:?}");
        // Fewer than two reads: no span of time to sample.
        assert_eq!(Freshness::of(&reads[..1]), None);
        assert!(ages_us(&[], 1_000).is_empty());
    }
}
