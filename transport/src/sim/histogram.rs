//! [`Histogram`]: a fixed-memory histogram of [`Duration`]s, for queueing delays and latencies in simulation.
//!
//! Log-linear buckets over nanoseconds, in the manner of HdrHistogram: values below 128 ns have a bucket each,
//! and every power of two above that is split into 64 equal buckets. A bucket is at most 1/64 of its lower
//! edge wide and a percentile is reported as its bucket's midpoint, so the relative error is at most 0.8%.
//! The whole `u64` range of nanoseconds (584 years) fits in 3,776 buckets; the bucket array grows only up to
//! the largest value recorded, so a histogram of milliseconds stays near 11 KiB.

use std::time::Duration;

/// log2 of the number of buckets per power of two (64), which sets the relative precision.
const SUB_BITS: u32 = 6;
const SUB_COUNT: u64 = 1 << SUB_BITS;
/// Values below this many nanoseconds are recorded exactly.
const LINEAR_LIMIT: u64 = 2 * SUB_COUNT;
/// Buckets needed for the whole `u64` range.
const MAX_BUCKETS: usize = (LINEAR_LIMIT + (64 - SUB_BITS as u64 - 1) * SUB_COUNT) as usize;

/// The bucket holding `ns`.
#[inline]
fn bucket_of(ns: u64) -> usize {
    if ns < LINEAR_LIMIT {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros();
    let shift = msb - SUB_BITS;
    let mantissa = (ns >> shift) - SUB_COUNT;
    (LINEAR_LIMIT + u64::from(shift - 1) * SUB_COUNT + mantissa) as usize
}

/// The smallest value and the width of bucket `index`, in nanoseconds.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let i = index as u64;
    if i < LINEAR_LIMIT {
        return (i, 1);
    }
    let shift = (i - LINEAR_LIMIT) / SUB_COUNT + 1;
    let mantissa = (i - LINEAR_LIMIT) % SUB_COUNT + SUB_COUNT;
    (mantissa << shift, 1 << shift)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A histogram of durations in bounded memory, with exact count, min, max and mean and percentiles within 0.8%.
///
/// Durations longer than `u64::MAX` nanoseconds are recorded as that.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// Bucket counts, grown on demand up to [`MAX_BUCKETS`].
    counts: Vec<u64>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
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

    /// Records `n` occurrences of the same duration.
    pub fn record_n(&mut self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = nanos(d);
        let index = bucket_of(ns);
        if index >= self.counts.len() {
            self.grow(index);
        }
        if let Some(c) = self.counts.get_mut(index) {
            *c += n;
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

    #[cold]
    fn grow(&mut self, index: usize) {
        // Grow in steps of a power of two's worth of buckets so that a rising series resizes rarely.
        let len = (index + 1 + SUB_COUNT as usize).min(MAX_BUCKETS);
        self.counts.resize(len, 0);
    }

    /// The number of durations recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The smallest duration recorded, exactly; `Duration::ZERO` when empty.
    pub fn min(&self) -> Duration {
        Duration::from_nanos(self.min_ns)
    }

    /// The largest duration recorded, exactly; `Duration::ZERO` when empty.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// The arithmetic mean of the durations recorded, to the nanosecond; `Duration::ZERO` when empty.
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let mean = self.sum_ns / u128::from(self.count);
        Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX))
    }

    /// The `q`th percentile (`q` in `[0, 100]`, clamped): the smallest recorded value that at least `q`% of the
    /// records do not exceed, within 0.8%. `q = 0` is the exact minimum and `q = 100` the exact maximum;
    /// `Duration::ZERO` when empty.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 100.0) };
        if q <= 0.0 {
            return self.min();
        }
        if q >= 100.0 {
            return self.max();
        }
        let rank = ((q / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (index, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket_bounds(index);
                let mid = low + (width - 1) / 2;
                return Duration::from_nanos(mid.clamp(self.min_ns, self.max_ns));
            }
        }
        self.max()
    }

    /// Adds every record of `other` to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
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

    /// Forgets every record, keeping the allocation.
    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
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
    fn buckets_are_contiguous_and_cover_u64() {
        for index in 0..MAX_BUCKETS {
            let (low, width) = bucket_bounds(index);
            assert_eq!(bucket_of(low), index);
            assert_eq!(bucket_of(low + (width - 1)), index);
            assert!(width == 1 || (width as f64) / (low as f64) <= 1.0 / 64.0 + 1e-12);
            if index + 1 < MAX_BUCKETS {
                assert_eq!(bucket_of(low + width), index + 1);
            }
        }
        assert_eq!(bucket_of(u64::MAX), MAX_BUCKETS - 1);
    }

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
        assert!(h.counts.len() < MAX_BUCKETS);
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
