//! Trace-driven link rate in mahimahi's format: each line is a time in milliseconds at which the link can
//! deliver one 1500-byte packet (several lines with the same time are several packets in that millisecond);
//! the trace repeats with a period of its last timestamp.
//!
//! The emulator's link model takes a rate schedule, so the trace becomes one rate per millisecond: `n`
//! opportunities in a millisecond are `n x 1500 x 8` bits per millisecond, i.e. `n x 12 Mbit/s`. Over any
//! span of whole milliseconds the link then carries what mahimahi's would; within a millisecond it
//! serializes packets evenly instead of in bursts at the opportunity instants.

use anyhow::{bail, Result};
use std::time::Duration;
use transport::sim::RateChange;

/// Bytes one delivery opportunity carries (mahimahi's MTU-sized packet).
pub const OPPORTUNITY_BYTES: u64 = 1500;

/// A parsed trace: opportunities per millisecond over one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// `per_ms[i]`: opportunities in millisecond `i` of the period.
    per_ms: Vec<u32>,
}

impl Trace {
    /// Parses a trace; refuses times that go backwards, non-numbers and an empty trace.
    pub fn parse(text: &str) -> Result<Trace> {
        let mut times = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Ok(t) = line.parse::<u64>() else {
                bail!("line {}: {line:?} is not a time in milliseconds", n + 1);
            };
            if times.last().is_some_and(|&last| t < last) {
                bail!("line {}: time {t} ms goes back", n + 1);
            }
            if t > 86_400_000 {
                bail!("line {}: {t} ms is longer than a day", n + 1);
            }
            times.push(t);
        }
        let Some(&last) = times.last() else {
            bail!("the trace is empty");
        };
        // The period is the last timestamp (as mahimahi repeats it); at least one millisecond.
        let period = last.max(1) as usize;
        let mut per_ms = vec![0u32; period];
        for t in times {
            // Time `period` wraps to 0 of the next repetition, as in mahimahi.
            let i = (t as usize) % period;
            per_ms[i] = per_ms[i].saturating_add(1);
        }
        Ok(Trace { per_ms })
    }

    /// Length of one period.
    #[cfg(test)]
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.per_ms.len() as u64)
    }

    /// The rate of millisecond `i` (of the repeated trace), in bit/s.
    fn rate_at(&self, i: usize) -> u64 {
        u64::from(self.per_ms[i % self.per_ms.len()]) * OPPORTUNITY_BYTES * 8 * 1000
    }

    /// The mean rate over a period, in bit/s.
    pub fn mean_rate_bps(&self) -> u64 {
        let total: u64 = self.per_ms.iter().map(|&n| u64::from(n)).sum();
        total * OPPORTUNITY_BYTES * 8 * 1000 / self.per_ms.len() as u64
    }

    /// The rate at time 0, and the changes after it up to `horizon` (repeating the trace; only where the
    /// rate changes).
    pub fn rate_schedule(&self, horizon: Duration) -> (u64, Vec<RateChange>) {
        let first = self.rate_at(0);
        let mut last = first;
        let mut changes = Vec::new();
        let end = horizon.as_millis().min(u128::from(u32::MAX)) as usize;
        for i in 1..end {
            let r = self.rate_at(i);
            if r != last {
                changes.push(RateChange {
                    at: Duration::from_millis(i as u64),
                    rate_bps: r,
                });
                last = r;
            }
        }
        (first, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_becomes_a_per_millisecond_rate_that_repeats() {
        // Period 4 ms: 2 opportunities at 1 ms, one at 3 ms, and the line at 4 ms wraps to 0.
        let t = Trace::parse("1\n1\n3\n4\n").unwrap();
        assert_eq!(t.period(), Duration::from_millis(4));
        assert_eq!(t.per_ms, vec![1, 2, 0, 1]);
        // 4 opportunities of 1500 B per 4 ms = 12 Mbit/s.
        assert_eq!(t.mean_rate_bps(), 12_000_000);
        let (first, changes) = t.rate_schedule(Duration::from_millis(9));
        assert_eq!(first, 12_000_000);
        let got: Vec<(u64, u64)> = changes
            .iter()
            .map(|c| (c.at.as_millis() as u64, c.rate_bps))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 24_000_000),
                (2, 0),
                (3, 12_000_000),
                (5, 24_000_000),
                (6, 0),
                (7, 12_000_000)
            ]
        );
    }

    #[test]
    fn bad_traces_are_refused() {
        assert!(Trace::parse("").is_err());
        assert!(Trace::parse("5\n3\n").is_err(), "time goes back");
        assert!(Trace::parse("1\nx\n").is_err());
        assert!(Trace::parse("-1\n").is_err());
    }

    #[test]
    fn the_shipped_trace_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../netem-scripts/traces/cellular.trace");
        let t = Trace::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mean = t.mean_rate_bps();
        assert!((5_000_000..=30_000_000).contains(&mean), "{mean}");
    }
}
