//! Round-trip-time estimation (RFC 9002 §5).

use std::time::Duration;

/// Smoothed RTT, its variation and the minimum, from ACK samples.
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
}

impl RttEstimator {
    /// Starts with `initial` as the guess until the first sample.
    pub fn new(initial: Duration) -> Self {
        RttEstimator {
            latest: initial,
            smoothed: None,
            var: initial / 2,
            min: initial,
        }
    }

    /// Feeds one sample (time from send to ACK) and the peer's reported ACK delay.
    pub fn update(&mut self, sample: Duration, ack_delay: Duration) {
        self.latest = sample;
        match self.smoothed {
            None => {
                self.min = sample;
                self.smoothed = Some(sample);
                self.var = sample / 2;
            }
            Some(srtt) => {
                self.min = self.min.min(sample);
                // Subtract the peer's ACK delay only while it does not take the sample below the minimum.
                let adjusted = if sample >= self.min + ack_delay {
                    sample.saturating_sub(ack_delay)
                } else {
                    sample
                };
                let diff = srtt.abs_diff(adjusted);
                self.var = (self.var * 3 + diff) / 4;
                self.smoothed = Some((srtt * 7 + adjusted) / 8);
            }
        }
    }

    /// The newest sample.
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// The smoothed RTT (the initial guess before any sample).
    pub fn smoothed(&self) -> Duration {
        self.smoothed.unwrap_or(self.latest)
    }

    /// The mean deviation.
    pub fn var(&self) -> Duration {
        self.var
    }

    /// The smallest sample seen.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// True once a sample arrived.
    pub fn has_sample(&self) -> bool {
        self.smoothed.is_some()
    }

    /// The probe timeout base: srtt + max(4 rttvar, 1 ms) + the peer's max ACK delay.
    pub fn pto_base(&self, max_ack_delay: Duration) -> Duration {
        self.smoothed() + (self.var * 4).max(Duration::from_millis(1)) + max_ack_delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_on_a_steady_path_and_keeps_the_minimum() {
        let mut rtt = RttEstimator::new(Duration::from_millis(333));
        for i in 0..50 {
            rtt.update(Duration::from_millis(100 + (i % 3)), Duration::ZERO);
        }
        assert!(rtt.smoothed() >= Duration::from_millis(100) && rtt.smoothed() <= Duration::from_millis(102));
        assert_eq!(rtt.min(), Duration::from_millis(100));
        assert!(rtt.var() < Duration::from_millis(3));
    }

    #[test]
    fn ack_delay_is_subtracted_only_above_the_minimum() {
        let mut rtt = RttEstimator::new(Duration::from_millis(100));
        rtt.update(Duration::from_millis(50), Duration::ZERO);
        rtt.update(Duration::from_millis(60), Duration::from_millis(10));
        assert_eq!(rtt.latest(), Duration::from_millis(60));
        // adjusted sample 50 ms: smoothed stays at 50.
        assert_eq!(rtt.smoothed(), Duration::from_millis(50));
    }
}
