//! Delivery-rate estimation, after draft-cheng-iccrg-delivery-rate-estimation (the estimator BBR uses).
//!
//! Every packet carries a [`RateSnapshot`] of the connection's delivery state taken when it was sent. When it is
//! acknowledged, the bytes delivered between the snapshot and now, divided by the longer of the send interval and
//! the ACK interval, give a [`RateSample`]. Taking the longer of the two keeps ACK compression (a burst of ACKs
//! after a stall) from producing rates above what the path delivers.
//!
//! A sample taken while the sender was application-limited measures the application, not the path: it is marked
//! [`RateSample::is_app_limited`] so that a bandwidth filter uses it only when it raises the estimate.

use std::time::{Duration, Instant};

use super::{AckedPacket, SentPacket};

/// The connection's delivery state when a packet was sent, stored with the packet and handed back on its ACK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateSnapshot {
    /// Total bytes delivered (acknowledged) on the connection when the packet was sent.
    pub delivered_bytes: u64,
    /// When `delivered_bytes` last changed before the packet was sent (`None` before the first send).
    pub delivered_time: Option<Instant>,
    /// Send time of the packet that started the current send interval (`None` before the first send).
    pub first_sent_time: Option<Instant>,
    /// True when the connection was application-limited when the packet was sent.
    pub is_app_limited: bool,
}

/// One delivery-rate measurement, produced by an ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSample {
    /// Bytes delivered over `interval`, per second.
    pub delivery_rate_bytes_per_s: u64,
    /// The measurement interval: the longer of the send and the ACK intervals.
    pub interval: Duration,
    /// Bytes delivered over `interval`.
    pub delivered: u64,
    /// Total bytes delivered when the newest acknowledged packet was sent (the start of the sample).
    pub prior_delivered: u64,
    /// True when the newest acknowledged packet was sent while application-limited.
    pub is_app_limited: bool,
    /// Round-trip time of the newest acknowledged packet.
    pub rtt: Duration,
}

/// The delivery-rate estimator a controller embeds: call [`on_sent`](Self::on_sent) for every packet and
/// [`on_ack`](Self::on_ack) for every ACK.
#[derive(Debug, Clone, Default)]
pub struct DeliveryRateSampler {
    /// Total bytes acknowledged.
    delivered_bytes: u64,
    /// When `delivered_bytes` last grew.
    delivered_time: Option<Instant>,
    /// Send time of the newest packet acknowledged so far (start of the next send interval).
    first_sent_time: Option<Instant>,
    /// While non-zero: the connection is application-limited until `delivered_bytes` passes this mark.
    app_limited_until_bytes: u64,
}

impl DeliveryRateSampler {
    /// A sampler with nothing sent yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes acknowledged so far.
    pub fn delivered_bytes(&self) -> u64 {
        self.delivered_bytes
    }

    /// True while samples are marked application-limited.
    pub fn is_app_limited(&self) -> bool {
        self.app_limited_until_bytes != 0
    }

    /// Records a packet leaving and returns the snapshot to store with it.
    pub fn on_sent(&mut self, packet: &SentPacket) -> RateSnapshot {
        if packet.bytes_in_flight == 0 || self.delivered_time.is_none() {
            // Nothing in flight: a new send interval starts here, and the idle time before it is not a
            // delivery interval.
            self.first_sent_time = Some(packet.now);
            self.delivered_time = Some(packet.now);
        }
        if packet.app_limited {
            // The bubble lasts until everything in flight, this packet included, has been delivered.
            self.app_limited_until_bytes = self
                .delivered_bytes
                .saturating_add(packet.bytes_in_flight)
                .saturating_add(packet.bytes)
                .max(1);
        }
        RateSnapshot {
            delivered_bytes: self.delivered_bytes,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            is_app_limited: self.app_limited_until_bytes != 0,
        }
    }

    /// Processes the packets one ACK newly acknowledged (oldest first) and returns a rate sample, or `None`
    /// when the ACK gives no reliable one: nothing acknowledged, or an interval shorter than `min_rtt`
    /// (pass `Duration::ZERO` when unknown).
    pub fn on_ack(&mut self, now: Instant, acked: &[AckedPacket], min_rtt: Duration) -> Option<RateSample> {
        let mut newest: Option<&AckedPacket> = None;
        for packet in acked {
            self.delivered_bytes = self.delivered_bytes.saturating_add(packet.bytes);
            self.delivered_time = Some(now);
            let is_newer = match newest {
                None => true,
                Some(n) => {
                    packet.snapshot.delivered_bytes > n.snapshot.delivered_bytes
                        || (packet.snapshot.delivered_bytes == n.snapshot.delivered_bytes
                            && packet.sent_time >= n.sent_time)
                }
            };
            if is_newer {
                newest = Some(packet);
                // The next sample's send interval starts at this packet's send time.
                self.first_sent_time = Some(packet.sent_time);
            }
        }
        if self.app_limited_until_bytes != 0 && self.delivered_bytes > self.app_limited_until_bytes {
            self.app_limited_until_bytes = 0;
        }
        let newest = newest?;
        let snapshot = newest.snapshot;
        let prior_time = snapshot.delivered_time?;
        let first_sent = snapshot.first_sent_time.unwrap_or(newest.sent_time);
        let send_elapsed = newest.sent_time.saturating_duration_since(first_sent);
        let ack_elapsed = now.saturating_duration_since(prior_time);
        let interval = send_elapsed.max(ack_elapsed);
        let delivered = self.delivered_bytes.saturating_sub(snapshot.delivered_bytes);
        if interval.is_zero() || interval < min_rtt {
            return None;
        }
        Some(RateSample {
            delivery_rate_bytes_per_s: rate_bytes_per_s(delivered, interval),
            interval,
            delivered,
            prior_delivered: snapshot.delivered_bytes,
            is_app_limited: snapshot.is_app_limited,
            rtt: now.saturating_duration_since(newest.sent_time),
        })
    }
}

/// `bytes / interval` in bytes per second, saturating; 0 for an empty interval.
pub fn rate_bytes_per_s(bytes: u64, interval: Duration) -> u64 {
    let nanos = interval.as_nanos();
    if nanos == 0 {
        return 0;
    }
    let rate = u128::from(bytes).saturating_mul(1_000_000_000) / nanos;
    u64::try_from(rate).unwrap_or(u64::MAX)
}

/// Bytes sent in `interval` at `rate_bytes_per_s`, saturating.
pub fn bytes_in(rate_bytes_per_s: u64, interval: Duration) -> u64 {
    let bytes = u128::from(rate_bytes_per_s).saturating_mul(interval.as_nanos()) / 1_000_000_000;
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// An ACK clock: packets of 1,000 bytes leave every `gap`, each acknowledged one `rtt` later.
    #[test]
    fn samples_equal_the_ack_clock_rate() {
        let start = Instant::now();
        let mut sampler = DeliveryRateSampler::new();
        let gap = Duration::from_micros(100); // 10 MB/s
        let rtt = Duration::from_millis(50);
        let mut in_flight: VecDeque<AckedPacket> = VecDeque::new();
        let mut bytes_in_flight = 0u64;
        let mut samples = Vec::new();
        for i in 0..5_000u32 {
            let now = start + gap * i;
            while in_flight.front().is_some_and(|p| p.sent_time + rtt <= now) {
                let Some(p) = in_flight.pop_front() else { break };
                bytes_in_flight -= p.bytes;
                if let Some(s) = sampler.on_ack(p.sent_time + rtt, &[p], rtt) {
                    samples.push(s);
                }
            }
            let sent = SentPacket {
                now,
                bytes: 1_000,
                bytes_in_flight,
                app_limited: false,
            };
            let snapshot = sampler.on_sent(&sent);
            bytes_in_flight += 1_000;
            in_flight.push_back(AckedPacket {
                sent_time: now,
                bytes: 1_000,
                snapshot,
            });
        }
        assert!(samples.len() > 4_000);
        // Samples from the first flight measure from the first send; the ACK clock is steady after it.
        let steady: Vec<_> = samples.iter().filter(|s| s.prior_delivered > 0).collect();
        assert!(steady.len() > 3_500);
        for s in steady {
            let err = s.delivery_rate_bytes_per_s.abs_diff(10_000_000);
            assert!(err <= 10_000_000 / 100, "sample {s:?}");
            assert!(!s.is_app_limited);
            assert_eq!(s.rtt, rtt);
        }
    }

    /// A burst of ACKs arriving at once (ACK compression) must not produce a rate above the send rate.
    #[test]
    fn ack_compression_is_bounded_by_the_send_interval() {
        let start = Instant::now();
        let mut sampler = DeliveryRateSampler::new();
        let gap = Duration::from_millis(1); // 1 MB/s
        let mut packets = Vec::new();
        for i in 0..100u32 {
            let now = start + gap * i;
            let sent = SentPacket {
                now,
                bytes: 1_000,
                bytes_in_flight: u64::from(i) * 1_000,
                app_limited: false,
            };
            packets.push(AckedPacket {
                sent_time: now,
                bytes: 1_000,
                snapshot: sampler.on_sent(&sent),
            });
        }
        // Everything acknowledged in one ACK, 200 ms after the first send.
        let s = sampler
            .on_ack(start + Duration::from_millis(200), &packets, Duration::ZERO)
            .unwrap();
        // delivered 100 kB over max(send 99 ms, ack 200 ms) = 500 kB/s.
        assert_eq!(s.delivered, 100_000);
        assert_eq!(s.interval, Duration::from_millis(200));
        assert_eq!(s.delivery_rate_bytes_per_s, 500_000);
        assert_eq!(s.prior_delivered, 0);
    }

    #[test]
    fn app_limited_marks_last_until_the_bubble_is_delivered() {
        let start = Instant::now();
        let mut sampler = DeliveryRateSampler::new();
        let ms = Duration::from_millis(1);
        let a = SentPacket {
            now: start,
            bytes: 1_000,
            bytes_in_flight: 0,
            app_limited: true,
        };
        let sa = sampler.on_sent(&a);
        assert!(sa.is_app_limited);
        let b = SentPacket {
            now: start + ms,
            bytes: 1_000,
            bytes_in_flight: 1_000,
            app_limited: false,
        };
        let sb = sampler.on_sent(&b);
        assert!(sb.is_app_limited, "still inside the bubble");
        let pa = AckedPacket {
            sent_time: start,
            bytes: 1_000,
            snapshot: sa,
        };
        let s = sampler.on_ack(start + 10 * ms, &[pa], Duration::ZERO).unwrap();
        assert!(s.is_app_limited);
        assert!(sampler.is_app_limited());
        let pb = AckedPacket {
            sent_time: start + ms,
            bytes: 1_000,
            snapshot: sb,
        };
        sampler.on_ack(start + 11 * ms, &[pb], Duration::ZERO);
        assert!(!sampler.is_app_limited(), "bubble delivered");
        let c = SentPacket {
            now: start + 12 * ms,
            bytes: 1_000,
            bytes_in_flight: 0,
            app_limited: false,
        };
        assert!(!sampler.on_sent(&c).is_app_limited);
    }

    #[test]
    fn rate_helpers_guard_zero_and_overflow() {
        assert_eq!(rate_bytes_per_s(1_000, Duration::ZERO), 0);
        assert_eq!(rate_bytes_per_s(u64::MAX, Duration::from_nanos(1)), u64::MAX);
        assert_eq!(bytes_in(1_000_000, Duration::from_millis(10)), 10_000);
        assert_eq!(bytes_in(u64::MAX, Duration::from_secs(1_000)), u64::MAX);
    }
}
