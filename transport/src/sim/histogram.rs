//! [`Histogram`]: durations (queueing delays, latencies) in simulation, on the `hdrhistogram` crate.
//!
//! A thin adapter: `hdrhistogram` (the Rust port of Gil Tene's HdrHistogram) holds the buckets, at two
//! significant digits (percentiles within 1%), growing only up to the largest value recorded; this type adds
//! [`Duration`]s in and out and keeps count, sum, min and max exact, so a mean or a maximum is never a
//! bucket's edge.

use std::time::Duration;

/// Significant decimal digits the buckets keep: percentiles are within 1% of the true value.
const SIGNIFICANT_DIGITS: u8 = 2;

/// The largest value `hdrhistogram` tracks; longer durations are bucketed here.
const HIGHEST_TRACKABLE_NS: u64 = i64::MAX as u64;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A histogram of durations in bounded memory, with exact count, min, max and mean and percentiles within 1%.
///
/// Durations longer than `u64::MAX` nanoseconds are recorded as that (and bucketed at the largest value
/// `hdrhistogram` tracks, about 292 years).
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// The buckets; `None` until the first record, so an unused histogram costs nothing.
    buckets: Option<hdrhistogram::Histogram<u64>>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

/// An empty, auto-resizing bucket array (`None` only if `hdrhistogram` refused the constant precision).
fn new_buckets() -> Option<hdrhistogram::Histogram<u64>> {
    hdrhistogram::Histogram::new(SIGNIFICANT_DIGITS).ok()
}

impl Histogram {
    /// An empty histogram; it allocates on its first record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one duration.
    #[inline]
    pub fn record(&mut self, d: Duration) {
        self.record_n(d, 1);
    }

    /// Records `n` occurrences of a duration.
    pub fn record_n(&mut self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = nanos(d);
        if self.buckets.is_none() {
            self.buckets = new_buckets();
        }
        if let Some(b) = self.buckets.as_mut() {
            // The buckets grow on demand up to the largest value hdrhistogram tracks (i64::MAX).
            let _ = b.record_n(ns.min(HIGHEST_TRACKABLE_NS), n);
        }
        if self.count == 0 {
            self.min_ns = ns;
            self.max_ns = ns;
        } else {
            self.min_ns = self.min_ns.min(ns);
            self.max_ns = self.max_ns.max(ns);
        }
        self.count += n;
        self.sum_ns += u128::from(ns) * u128::from(n);
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Nothing recorded yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The shortest duration recorded (exact), zero when empty.
    pub fn min(&self) -> Duration {
        Duration::from_nanos(self.min_ns)
    }

    /// The longest duration recorded (exact), zero when empty.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// The mean (exact), zero when empty.
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let mean = self.sum_ns / u128::from(self.count);
        Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX))
    }

    /// The `q`-th percentile (0-100; NaN counts as 0), within 1%, and never outside [min, max]; zero when
    /// empty.
    pub fn percentile(&self, q: f64) -> Duration {
        let Some(b) = self.buckets.as_ref().filter(|_| self.count > 0) else {
            return Duration::ZERO;
        };
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 100.0) };
        if q <= 0.0 {
            return self.min();
        }
        if q >= 100.0 {
            return self.max();
        }
        // `value_at_quantile` answers a bucket's highest value; its midpoint halves the error.
        let high = b.value_at_quantile(q / 100.0);
        let low = b.lowest_equivalent(high);
        let mid = low + high.saturating_sub(low) / 2;
        Duration::from_nanos(mid.clamp(self.min_ns, self.max_ns))
    }

    /// Adds everything `other` recorded.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        match (self.buckets.as_mut(), other.buckets.as_ref()) {
            (Some(mine), Some(theirs)) => {
                // Both auto-resize, so the only error (a value out of range) cannot happen.
                let _ = mine.add(theirs);
            }
            (None, Some(theirs)) => self.buckets = Some(theirs.clone()),
            _ => {}
        }
        if self.count == 0 {
            self.min_ns = other.min_ns;
            self.max_ns = other.max_ns;
        } else {
            self.min_ns = self.min_ns.min(other.min_ns);
            self.max_ns = self.max_ns.max(other.max_ns);
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
    }

    /// Forgets everything recorded (keeps the buckets' memory).
    pub fn clear(&mut self) {
        if let Some(b) = self.buckets.as_mut() {
            b.reset();
        }
        self.count = 0;
        self.sum_ns = 0;
        self.min_ns = 0;
        self.max_ns = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty() {
        let h = Histogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.min(), Duration::ZERO);
        assert_eq!(h.max(), Duration::ZERO);
        assert_eq!(h.mean(), Duration::ZERO);
        assert_eq!(h.percentile(50.0), Duration::ZERO);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for ns in 1..=100u64 {
            h.record(Duration::from_nanos(ns));
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.min(), Duration::from_nanos(1));
        assert_eq!(h.max(), Duration::from_nanos(100));
        assert_eq!(h.percentile(50.0), Duration::from_nanos(50));
        assert_eq!(h.percentile(95.0), Duration::from_nanos(95));
        assert_eq!(h.percentile(0.0), Duration::from_nanos(1));
        assert_eq!(h.percentile(100.0), Duration::from_nanos(100));
        assert_eq!(h.mean(), Duration::from_nanos(50));
    }

    #[test]
    fn percentiles_within_one_percent() {
        let mut h = Histogram::new();
        for us in 1..=100_000u64 {
            h.record(Duration::from_micros(us));
        }
        for q in [1.0, 10.0, 50.0, 90.0, 95.0, 99.0, 99.9] {
            let got = h.percentile(q).as_nanos() as f64;
            let want = q / 100.0 * 100_000.0 * 1_000.0;
            assert!((got - want).abs() / want < 0.01, "p{q}: {got} vs {want}");
        }
        assert_eq!(h.mean(), Duration::from_nanos(50_000_500));
        assert_eq!(h.max(), Duration::from_millis(100));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let mut h = Histogram::new();
        h.record(Duration::MAX);
        h.record(Duration::from_secs(1));
        assert_eq!(h.count(), 2);
        assert_eq!(h.max(), Duration::from_nanos(u64::MAX));
        assert!(h.percentile(99.0) > Duration::from_secs(1 << 33));
        let p50 = h.percentile(50.0).as_nanos() as f64;
        assert!((p50 - 1e9).abs() / 1e9 < 0.01, "p50 {p50}");
    }

    #[test]
    fn merge_equals_recording_both() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        let mut both = Histogram::new();
        for i in 0..1000u64 {
            let d = Duration::from_micros(i * 37 % 5000);
            if i % 3 == 0 {
                a.record(d);
            } else {
                b.record(Duration::from_millis(i));
                both.record(Duration::from_millis(i));
                continue;
            }
            both.record(d);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged.count(), both.count());
        assert_eq!(merged.min(), both.min());
        assert_eq!(merged.max(), both.max());
        assert_eq!(merged.mean(), both.mean());
        for q in [0.0, 25.0, 50.0, 75.0, 99.0, 100.0] {
            assert_eq!(merged.percentile(q), both.percentile(q));
        }
        let mut empty = Histogram::new();
        empty.merge(&a);
        assert_eq!(empty.count(), a.count());
        assert_eq!(empty.min(), a.min());
        a.clear();
        assert!(a.is_empty());
        assert_eq!(a.percentile(50.0), Duration::ZERO);
    }
}
