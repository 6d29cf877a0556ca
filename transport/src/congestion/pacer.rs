//! The pacer: spreads packets at the controller's pacing rate with a small burst allowance.
//!
//! A token bucket refilled at the pacing rate. Its depth is the larger of the configured burst and 1 ms worth of
//! the rate, never more than [`MAX_BURST_BYTES`] (four full GSO batches), so an idle connection never saves up
//! more than a short burst of credit. This follows what the kernel lets paced TCP do: about 1 ms of the pacing
//! rate per round of transmission (`tcp_tso_autosize`, TSQ), in send units of at most 64 KiB. At WAN rates
//! (below ~2 Gbit/s) a burst is 1 ms of the rate; above that it is a few full send calls, which is what keeps
//! the per-byte cost of the socket low when a loop iteration takes tens of microseconds. Credit is
//! kept in byte-nanoseconds so that no fraction of a byte is lost between calls.

use std::time::{Duration, Instant};

use super::MAX_DATAGRAM_BYTES;

/// Default burst, in packets.
pub const DEFAULT_BURST_PACKETS: u32 = 2;
/// The largest configured burst, in packets.
pub const MAX_BURST_PACKETS: u32 = 16;
/// The bucket never holds more than this many bytes, whatever the rate or configuration: four GSO batches (a
/// send call carries at most 64 KiB). One batch was measured 10-20% slower on loopback at 6-7 Gbit/s: a loop
/// iteration there takes longer than one batch lasts at the rate, so the bucket overflowed between flushes.
pub const MAX_BURST_BYTES: u64 = 256 * 1024;
/// The bucket holds at least this much time's worth of the pacing rate (up to the packet cap): at high rates a
/// timer cannot fire often enough to send packet by packet.
pub const BURST_TIME: Duration = Duration::from_millis(1);

/// The pacing round ([`Pacer::with_round`], `ConnectionConfig::pacing_round`, the default there): when a
/// packet must wait, the pacer lets this much time's worth of the rate accrue (at most half the bucket, at least
/// the packet) before it releases packets again, so the flow leaves in rounds of a few packets, one timer and one
/// GSO batch each, instead of one timer per packet (at 100 Mbit/s a packet lasts 110 us). The kernel's paced TCP
/// sends ~1 ms rounds (`tcp_tso_autosize`). Measured: on a 94 Mbit/s, 1%-loss path it took the sender's CPU per
/// GB from 33.9 to 20.9 s at the same goodput (`popline-bench compare`); sharing a 100 Mbit/s, 1-BDP bottleneck
/// with CUBIC in the simulator, popline's share of the fair rate is the same with and without rounds within 0.1
/// (RTT 5-100 ms: 1.72, 1.37, 1.55, 1.33, 0.92 with rounds against 1.71, 1.26, 1.48, 1.26, 0.94 without).
pub const PACING_ROUND: Duration = Duration::from_micros(500);

const NANOS_PER_S: u128 = 1_000_000_000;

/// A token-bucket pacer. It never reads a clock: every call carries `now`.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Configured burst, in packets (clamped to `1..=MAX_BURST_PACKETS`).
    burst_packets: u32,
    /// Credit in byte-nanoseconds-per-second units: bytes x 10^9.
    credit: u128,
    /// When the credit was last brought up to date (`None` before the first call: the bucket starts full).
    last_update: Option<Instant>,
    /// The rate the bucket was last refilled at, in bytes per second.
    rate_bytes_per_s: u64,
    /// The bucket depth at `rate_bytes_per_s`, in credit units. Kept with the rate, not computed per packet:
    /// it takes a 128-bit division, and the rate changes once per ACK at most.
    capacity: u128,
    /// See [`Pacer::with_round`]; zero: none.
    round: Duration,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new(DEFAULT_BURST_PACKETS)
    }
}

impl Pacer {
    /// A pacer that allows bursts of `burst_packets` full-size packets (clamped to `1..=MAX_BURST_PACKETS`),
    /// or 1 ms worth of the rate if larger, capped at [`MAX_BURST_BYTES`]. The bucket starts full.
    pub fn new(burst_packets: u32) -> Self {
        Pacer {
            burst_packets: burst_packets.clamp(1, MAX_BURST_PACKETS),
            credit: 0,
            last_update: None,
            rate_bytes_per_s: 0,
            capacity: 0,
            round: Duration::ZERO,
        }
    }

    /// When a packet must wait, wait until `round` of the rate has accrued (at most half the bucket, at least
    /// the packet): see [`PACING_ROUND`]. Zero (the default) waits for the packet alone.
    pub fn with_round(mut self, round: Duration) -> Self {
        self.round = round;
        self
    }

    /// The bucket depth at `rate_bytes_per_s`, in bytes.
    pub fn burst_bytes(&self, rate_bytes_per_s: u64) -> u64 {
        let configured = u64::from(self.burst_packets).saturating_mul(MAX_DATAGRAM_BYTES);
        let one_ms = super::delivery_rate::bytes_in(rate_bytes_per_s, BURST_TIME);
        configured.max(one_ms).min(MAX_BURST_BYTES)
    }

    /// Brings the credit up to `now` at `rate_bytes_per_s`, capped at the bucket depth.
    fn refill(&mut self, now: Instant, rate_bytes_per_s: u64) {
        if self.last_update == Some(now) && self.rate_bytes_per_s == rate_bytes_per_s {
            // Already up to date (the packets of one flush share their `now`): nothing to add, and the
            // credit is already within this rate's bucket.
            return;
        }
        if rate_bytes_per_s != self.rate_bytes_per_s {
            // A u64 of bytes times 10^9 fits a u128 (below 2^94).
            self.capacity = u128::from(self.burst_bytes(rate_bytes_per_s)) * NANOS_PER_S;
        }
        let capacity = self.capacity;
        match self.last_update {
            None => self.credit = capacity,
            Some(last) => {
                // Two u64 factors: the product fits a u128, so no overflow check is needed.
                let elapsed_ns =
                    u64::try_from(now.saturating_duration_since(last).as_nanos()).unwrap_or(u64::MAX);
                let added = u128::from(rate_bytes_per_s) * u128::from(elapsed_ns);
                self.credit = self.credit.saturating_add(added).min(capacity);
            }
        }
        if self.last_update.is_none_or(|last| now > last) {
            self.last_update = Some(now);
        }
        self.rate_bytes_per_s = rate_bytes_per_s;
    }

    /// Whether a packet of `packet_bytes` may leave at `now` at `rate_bytes_per_s`: `None` means now, `Some(t)`
    /// means not before `t` (with a round, [`Pacer::with_round`], when the round has accrued; a sender woken
    /// earlier, by an ACK, may send what has accrued by then). A rate of 0 means the controller
    /// gives no rate: the pacer does not hold packets (the congestion window still limits them). A packet larger
    /// than the bucket leaves once the bucket is full.
    pub fn delay(&mut self, now: Instant, packet_bytes: u64, rate_bytes_per_s: u64) -> Option<Instant> {
        if rate_bytes_per_s == 0 {
            return None;
        }
        self.refill(now, rate_bytes_per_s);
        // `refill` brought `capacity` to this rate.
        let cost = (u128::from(packet_bytes) * NANOS_PER_S).min(self.capacity);
        if self.credit >= cost {
            return None;
        }
        // Wait for a round's worth, if asked to (see PACING_ROUND), not just for this packet.
        let round = (u128::from(rate_bytes_per_s) * self.round.as_nanos())
            .min(self.capacity / 2)
            .max(cost);
        let missing = round - self.credit;
        let rate = u128::from(rate_bytes_per_s);
        let wait_ns = missing.div_ceil(rate);
        let wait = Duration::from_nanos(u64::try_from(wait_ns).unwrap_or(u64::MAX));
        Some(now.checked_add(wait).unwrap_or(now + Duration::from_secs(3_600)))
    }

    /// Records that a packet of `packet_bytes` left at `now`.
    pub fn on_sent(&mut self, now: Instant, packet_bytes: u64) {
        let rate = self.rate_bytes_per_s;
        if rate == 0 {
            self.last_update = Some(now);
            return;
        }
        self.refill(now, rate);
        self.credit = self.credit.saturating_sub(u128::from(packet_bytes) * NANOS_PER_S);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends as fast as the pacer allows for `duration` and returns the send times.
    fn drive(pacer: &mut Pacer, start: Instant, duration: Duration, bytes: u64, rate: u64) -> Vec<Instant> {
        let mut now = start;
        let mut sent = Vec::new();
        while now < start + duration {
            match pacer.delay(now, bytes, rate) {
                None => {
                    pacer.on_sent(now, bytes);
                    sent.push(now);
                }
                Some(t) => {
                    assert!(t > now);
                    now = t;
                }
            }
        }
        sent
    }

    #[test]
    fn spaces_packets_at_the_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(2);
        let rate = 1_400_000; // 1,000 packets per second
        let sent = drive(&mut pacer, start, Duration::from_secs(1), 1_400, rate);
        // Initial burst of 2, then one per millisecond.
        assert!((1_000..=1_003).contains(&sent.len()), "{}", sent.len());
        assert_eq!(sent[0], sent[1]);
        for w in sent[2..].windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= Duration::from_micros(999) && gap <= Duration::from_micros(1_001),
                "{gap:?}"
            );
        }
    }

    #[test]
    fn fast_flows_leave_in_rounds_at_the_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(4).with_round(PACING_ROUND);
        let rate = 12_500_000; // 100 Mbit/s: a 1,400-byte packet lasts 112 us
        let sent = drive(&mut pacer, start, Duration::from_secs(1), 1_400, rate);
        // The rate holds (one bucket of 12.5 kB more at the start)...
        let expected = (rate + 12_500) / 1_400;
        assert!(
            sent.len().abs_diff(expected as usize) <= 2,
            "{} vs {expected}",
            sent.len()
        );
        // ...in rounds of about half a millisecond: ~4.5 packets per distinct send time, not one.
        let mut rounds = sent.clone();
        rounds.dedup();
        assert!(
            rounds.len() < sent.len() / 4 + 2,
            "{} rounds for {} packets",
            rounds.len(),
            sent.len()
        );
        for w in rounds[1..].windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= Duration::from_micros(400) && gap <= Duration::from_micros(560),
                "{gap:?}"
            );
        }
    }

    #[test]
    fn idle_time_does_not_accumulate_credit() {
        let start = Instant::now();
        let mut pacer = Pacer::new(4);
        let rate = 1_400_000;
        drive(&mut pacer, start, Duration::from_millis(100), 1_400, rate);
        // Ten idle seconds, then see how many leave at once.
        let later = start + Duration::from_secs(10);
        let mut burst = 0;
        while pacer.delay(later, 1_400, rate).is_none() {
            pacer.on_sent(later, 1_400);
            burst += 1;
            assert!(burst <= 100);
        }
        assert_eq!(burst, 4);
    }

    #[test]
    fn burst_is_one_ms_of_rate_capped_at_four_gso_batches() {
        let pacer = Pacer::new(2);
        assert_eq!(pacer.burst_bytes(1_000), 2 * MAX_DATAGRAM_BYTES);
        assert_eq!(pacer.burst_bytes(10_000_000), 10_000); // 80 Mbit/s: 1 ms = 10 kB
        assert_eq!(pacer.burst_bytes(50_000_000), 50_000); // 400 Mbit/s: 1 ms = 50 kB
        assert_eq!(pacer.burst_bytes(1_000_000_000), MAX_BURST_BYTES); // 8 Gbit/s: four GSO batches
        assert_eq!(Pacer::new(1_000).burst_bytes(1), 16 * MAX_DATAGRAM_BYTES);
    }

    #[test]
    fn huge_and_zero_rates_are_safe() {
        let start = Instant::now();
        let mut pacer = Pacer::default();
        assert_eq!(pacer.delay(start, 1_400, 0), None);
        pacer.on_sent(start, 1_400);
        let sent = drive(&mut pacer, start, Duration::from_micros(10), 1_400, u64::MAX);
        assert!(sent.len() > 16);
        // A packet larger than the bucket still leaves once the bucket is full.
        let mut pacer = Pacer::new(1);
        let t = pacer.delay(start, 1_000_000, 1_000);
        assert_eq!(t, None);
        pacer.on_sent(start, 1_000_000);
        let t = pacer.delay(start, 1_000_000, 1_000).unwrap();
        assert!(t > start);
        // Slow rate: the wait is exact.
        let mut pacer = Pacer::new(1);
        assert_eq!(pacer.delay(start, 1_400, 1_400), None);
        pacer.on_sent(start, 1_400);
        assert_eq!(
            pacer.delay(start, 1_400, 1_400),
            Some(start + Duration::from_secs(1))
        );
    }
}
