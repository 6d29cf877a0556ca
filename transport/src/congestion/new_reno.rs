//! NewReno as RFC 9002 (section 7 and appendix B) specifies it, kept for comparison with the default controller.
//!
//! Slow start doubles the window each round trip until the first loss or `ssthresh`; congestion avoidance adds
//! one maximum datagram per window acknowledged. A loss of a packet sent after the current recovery period began
//! halves the window once; losses of packets sent before it belong to the same congestion event. Persistent
//! congestion (losses spanning more than three probe timeouts with nothing acknowledged between them) or a
//! retransmission timeout collapses the window to the minimum.

use std::time::Instant;

use super::loss_based::{GrowthRule, LossBased, Window};
pub use super::loss_based::{
    INITIAL_RTT, INITIAL_WINDOW_BYTES, MINIMUM_WINDOW_BYTES, PACING_GAIN, PERSISTENT_CONGESTION_THRESHOLD,
};
use super::MAX_DATAGRAM_BYTES;

/// RFC 9002 NewReno.
pub type NewReno = LossBased<RenoGrowth>;

/// NewReno's own rules: one datagram per window acknowledged in congestion avoidance, halving on congestion.
#[derive(Debug, Clone, Default)]
pub struct RenoGrowth {
    /// Bytes acknowledged in congestion avoidance since the window last grew.
    bytes_acked: u64,
}

impl GrowthRule for RenoGrowth {
    const NAME: &'static str = "newreno";

    fn on_avoidance_ack(&mut self, window: &mut Window, _now: Instant, acked_bytes: u64) {
        self.bytes_acked = self.bytes_acked.saturating_add(acked_bytes);
        if self.bytes_acked >= window.cwnd_bytes {
            self.bytes_acked -= window.cwnd_bytes;
            window.cwnd_bytes = window.cwnd_bytes.saturating_add(MAX_DATAGRAM_BYTES);
        }
    }

    fn on_congestion_event(&mut self, window: &mut Window) {
        window.ssthresh_bytes = (window.cwnd_bytes / 2).max(MINIMUM_WINDOW_BYTES);
        window.cwnd_bytes = window.ssthresh_bytes;
        self.bytes_acked = 0;
    }

    fn on_retransmission_timeout(&mut self, window: &mut Window) {
        window.ssthresh_bytes = (window.cwnd_bytes / 2).max(MINIMUM_WINDOW_BYTES);
    }

    fn on_collapse(&mut self) {
        self.bytes_acked = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::loss_based::tests::{ack, lose, rtt, MSS};
    use super::super::{AckEvent, Controller, LostPacket};
    use super::*;

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
