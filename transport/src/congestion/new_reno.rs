//! NewReno as RFC 9002 (section 7 and appendix B) specifies it, kept for comparison with the default controller.
//!
//! Slow start doubles the window each round trip until the first loss or `ssthresh`; congestion avoidance adds
//! one maximum datagram per window acknowledged. A loss of a packet sent after the current recovery period began
//! halves the window once; losses of packets sent before it belong to the same congestion event. Persistent
//! congestion (losses spanning more than three probe timeouts with nothing acknowledged between them) or a
//! retransmission timeout collapses the window to the minimum.

use std::time::{Duration, Instant};

use super::delivery_rate::{rate_bytes_per_s, DeliveryRateSampler};
use super::{AckEvent, Controller, ControllerStats, RateSnapshot, SentPacket, MAX_DATAGRAM_BYTES};

/// Initial window: RFC 9002's `min(10 * max_datagram_size, max(14720, 2 * max_datagram_size))`, in bytes.
pub const INITIAL_WINDOW_BYTES: u64 = 10 * MAX_DATAGRAM_BYTES;
/// Minimum window: two datagrams (RFC 9002 `kMinimumWindow`), in bytes.
pub const MINIMUM_WINDOW_BYTES: u64 = 2 * MAX_DATAGRAM_BYTES;
/// Pacing rate = `PACING_GAIN` x cwnd / srtt, so that pacing never holds back a window-limited sender.
pub const PACING_GAIN: f64 = 1.25;
/// RTT assumed for pacing before the first sample. RFC 9002 says 333 ms for timers; pacing the first window
/// over a guess that large would make the first flight needlessly slow on the 20-300 ms paths we serve.
pub const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Persistent congestion: losses spanning this many probe timeouts (RFC 9002 `kPersistentCongestionThreshold`).
pub const PERSISTENT_CONGESTION_THRESHOLD: u32 = 3;

/// Pacing rate for a window-based controller: `PACING_GAIN * cwnd / srtt` in bytes per second.
pub(crate) fn window_pacing_rate(cwnd_bytes: u64, srtt: Option<Duration>) -> u64 {
    let srtt = srtt.filter(|d| !d.is_zero()).unwrap_or(INITIAL_RTT);
    let rate = rate_bytes_per_s(cwnd_bytes, srtt) as f64 * PACING_GAIN;
    if rate >= u64::MAX as f64 {
        u64::MAX
    } else {
        rate as u64
    }
}

/// RFC 9002 persistent congestion, approximated with what an [`AckEvent`] carries: the lost packets span more than
/// three PTOs (PTO taken as `srtt + max(srtt / 2, 1 ms)`, the RTT variance term not being reported), and no packet
/// acknowledged by the same ACK was sent inside that span.
pub(crate) fn is_persistent_congestion(event: &AckEvent<'_>) -> bool {
    let (Some(first), Some(last)) = (event.lost.first(), event.lost.last()) else {
        return false;
    };
    let srtt = event.rtt.smoothed;
    if srtt.is_zero() {
        return false;
    }
    let pto = srtt.saturating_add((srtt / 2).max(Duration::from_millis(1)));
    let span = last.sent_time.saturating_duration_since(first.sent_time);
    if span <= pto.saturating_mul(PERSISTENT_CONGESTION_THRESHOLD) {
        return false;
    }
    !event
        .acked
        .iter()
        .any(|a| a.sent_time > first.sent_time && a.sent_time < last.sent_time)
}

/// RFC 9002 NewReno.
#[derive(Debug, Clone)]
pub struct NewReno {
    cwnd_bytes: u64,
    ssthresh_bytes: u64,
    /// Bytes acknowledged in congestion avoidance since the window last grew.
    bytes_acked: u64,
    /// Start of the current recovery period; losses of packets sent before it do not reduce the window again.
    recovery_start: Option<Instant>,
    srtt: Option<Duration>,
    sampler: DeliveryRateSampler,
    delivery_rate_bytes_per_s: u64,
    congestion_events: u64,
}

impl NewReno {
    /// A controller in slow start with the initial window.
    pub fn new(_now: Instant) -> Self {
        NewReno {
            cwnd_bytes: INITIAL_WINDOW_BYTES,
            ssthresh_bytes: u64::MAX,
            bytes_acked: 0,
            recovery_start: None,
            srtt: None,
            sampler: DeliveryRateSampler::new(),
            delivery_rate_bytes_per_s: 0,
            congestion_events: 0,
        }
    }

    /// The slow-start threshold in bytes (`u64::MAX` before the first loss).
    pub fn ssthresh(&self) -> u64 {
        self.ssthresh_bytes
    }

    fn in_recovery(&self, sent_time: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent_time <= start)
    }

    fn on_congestion_event(&mut self, now: Instant, sent_time: Instant) {
        if self.in_recovery(sent_time) {
            return;
        }
        self.recovery_start = Some(now);
        self.ssthresh_bytes = (self.cwnd_bytes / 2).max(MINIMUM_WINDOW_BYTES);
        self.cwnd_bytes = self.ssthresh_bytes;
        self.bytes_acked = 0;
        self.congestion_events = self.congestion_events.saturating_add(1);
    }
}

impl Controller for NewReno {
    fn name(&self) -> &'static str {
        "newreno"
    }

    fn on_sent(&mut self, packet: &SentPacket) -> RateSnapshot {
        self.sampler.on_sent(packet)
    }

    fn on_ack(&mut self, event: &AckEvent<'_>) {
        self.srtt = Some(event.rtt.smoothed).filter(|d| !d.is_zero()).or(self.srtt);
        if let Some(sample) = self.sampler.on_ack(event.now, event.acked, Duration::ZERO) {
            self.delivery_rate_bytes_per_s = sample.delivery_rate_bytes_per_s;
        }
        for packet in event.acked {
            // No growth for packets sent before recovery began, nor while the application limits the flow.
            if self.in_recovery(packet.sent_time) || packet.snapshot.is_app_limited {
                continue;
            }
            if self.cwnd_bytes < self.ssthresh_bytes {
                self.cwnd_bytes = self.cwnd_bytes.saturating_add(packet.bytes);
            } else {
                self.bytes_acked = self.bytes_acked.saturating_add(packet.bytes);
                if self.bytes_acked >= self.cwnd_bytes {
                    self.bytes_acked -= self.cwnd_bytes;
                    self.cwnd_bytes = self.cwnd_bytes.saturating_add(MAX_DATAGRAM_BYTES);
                }
            }
        }
        if let Some(newest_lost) = event.lost.last() {
            self.on_congestion_event(event.now, newest_lost.sent_time);
            if is_persistent_congestion(event) {
                self.cwnd_bytes = MINIMUM_WINDOW_BYTES;
                self.bytes_acked = 0;
            }
        }
    }

    fn on_retransmission_timeout(&mut self, now: Instant) {
        self.ssthresh_bytes = (self.cwnd_bytes / 2).max(MINIMUM_WINDOW_BYTES);
        self.cwnd_bytes = MINIMUM_WINDOW_BYTES;
        self.bytes_acked = 0;
        self.recovery_start = Some(now);
        self.congestion_events = self.congestion_events.saturating_add(1);
    }

    fn window(&self) -> u64 {
        self.cwnd_bytes
    }

    fn pacing_rate(&self) -> u64 {
        window_pacing_rate(self.cwnd_bytes, self.srtt)
    }

    fn stats(&self) -> ControllerStats {
        ControllerStats {
            cwnd_bytes: self.cwnd_bytes,
            pacing_rate_bytes_per_s: self.pacing_rate(),
            bandwidth_estimate_bytes_per_s: 0,
            delivery_rate_bytes_per_s: self.delivery_rate_bytes_per_s,
            congestion_events: self.congestion_events,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{AckedPacket, LostPacket, RttSnapshot};
    use super::*;

    pub(crate) const MSS: u64 = MAX_DATAGRAM_BYTES;

    pub(crate) fn rtt(ms: u64) -> RttSnapshot {
        let d = Duration::from_millis(ms);
        RttSnapshot {
            latest: Some(d),
            min: d,
            smoothed: d,
        }
    }

    pub(crate) fn acked(sent_time: Instant) -> AckedPacket {
        AckedPacket {
            sent_time,
            bytes: MSS,
            snapshot: RateSnapshot::default(),
        }
    }

    pub(crate) fn ack(c: &mut dyn Controller, now: Instant, sent: Instant, n: usize) {
        let packets = vec![acked(sent); n];
        c.on_ack(&AckEvent {
            now,
            acked: &packets,
            lost: &[],
            rtt: rtt(100),
            bytes_in_flight: 0,
        });
    }

    pub(crate) fn lose(c: &mut dyn Controller, now: Instant, sent: Instant) {
        let lost = [LostPacket {
            sent_time: sent,
            bytes: MSS,
        }];
        c.on_ack(&AckEvent {
            now,
            acked: &[],
            lost: &lost,
            rtt: rtt(100),
            bytes_in_flight: 0,
        });
    }

    #[test]
    fn slow_start_then_halves_once_per_recovery_period() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut c = NewReno::new(t0);
        assert_eq!(c.window(), INITIAL_WINDOW_BYTES);
        ack(&mut c, t0 + 100 * ms, t0, 10);
        assert_eq!(
            c.window(),
            2 * INITIAL_WINDOW_BYTES,
            "slow start doubles per window"
        );
        let before = c.window();
        lose(&mut c, t0 + 200 * ms, t0 + 100 * ms);
        assert_eq!(c.window(), before / 2);
        assert_eq!(c.ssthresh(), before / 2);
        // More losses of packets sent before recovery began: same congestion event.
        lose(&mut c, t0 + 201 * ms, t0 + 150 * ms);
        lose(&mut c, t0 + 202 * ms, t0 + 200 * ms);
        assert_eq!(c.window(), before / 2);
        // ACKs of packets sent before recovery do not grow the window.
        ack(&mut c, t0 + 203 * ms, t0 + 199 * ms, 10);
        assert_eq!(c.window(), before / 2);
        // A loss of a packet sent after recovery began is a new event.
        lose(&mut c, t0 + 400 * ms, t0 + 300 * ms);
        assert_eq!(c.window(), before / 4);
        assert_eq!(c.stats().congestion_events, 2);
    }

    #[test]
    fn avoidance_grows_one_datagram_per_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut c = NewReno::new(t0);
        ack(&mut c, t0 + 100 * ms, t0, 30); // cwnd 40 MSS
        lose(&mut c, t0 + 200 * ms, t0 + 100 * ms); // 20 MSS
        let w = c.window();
        assert_eq!(w, 20 * MSS);
        let mut now = t0 + 300 * ms;
        for round in 0..10u64 {
            let packets = c.window() / MSS;
            ack(&mut c, now, now - 100 * ms + ms, packets as usize);
            now += 100 * ms;
            assert_eq!(c.window(), w + (round + 1) * MSS);
        }
        // Pacing: 1.25 x cwnd / srtt.
        let expected = (c.window() * 10) as f64 * 1.25;
        assert!((c.pacing_rate() as f64 - expected).abs() < 2.0);
    }

    #[test]
    fn timeout_and_persistent_congestion_collapse_the_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut c = NewReno::new(t0);
        ack(&mut c, t0 + 100 * ms, t0, 30);
        c.on_retransmission_timeout(t0 + 500 * ms);
        assert_eq!(c.window(), MINIMUM_WINDOW_BYTES);

        let mut c = NewReno::new(t0);
        ack(&mut c, t0 + 100 * ms, t0, 30);
        let lost = [
            LostPacket {
                sent_time: t0 + 200 * ms,
                bytes: MSS,
            },
            LostPacket {
                sent_time: t0 + 900 * ms,
                bytes: MSS,
            },
        ];
        c.on_ack(&AckEvent {
            now: t0 + ms * 1_000,
            acked: &[],
            lost: &lost,
            rtt: rtt(100),
            bytes_in_flight: 0,
        });
        assert_eq!(c.window(), MINIMUM_WINDOW_BYTES);
    }
}
