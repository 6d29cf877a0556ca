//! CUBIC as RFC 9438 specifies it, kept for comparison with the default controller (it is what a competing TCP
//! flow runs).
//!
//! After a congestion event the window follows `W(t) = C (t - K)^3 + W_max` (in datagrams, `t` in seconds since
//! the event), where `K = cbrt((W_max - cwnd_epoch) / C)` is when it returns to `W_max`. In the Reno-friendly
//! region the window is at least what Reno with the same multiplicative decrease would reach (`W_est`). Fast
//! convergence lowers `W_max` when a flow loses before regaining its previous maximum, releasing bandwidth to
//! newer flows. Slow start, the recovery-period rule and the collapse on persistent congestion or a
//! retransmission timeout are [`super::loss_based`]'s, shared with [`super::new_reno`]. HyStart is not
//! implemented: slow start ends at the first loss, as in RFC 9002.

use std::time::{Duration, Instant};

use super::loss_based::{GrowthRule, LossBased, Window, MINIMUM_WINDOW_BYTES};
use super::{RttSnapshot, MAX_DATAGRAM_BYTES};

/// The cubic constant `C`, in datagrams per second cubed (RFC 9438).
pub const CUBIC_C: f64 = 0.4;
/// Multiplicative decrease factor `beta_cubic` (RFC 9438).
pub const BETA_CUBIC: f64 = 0.7;
/// Reno-friendly additive increase `alpha_cubic = 3 (1 - beta) / (1 + beta)`, datagrams per round trip.
pub const ALPHA_CUBIC: f64 = 3.0 * (1.0 - BETA_CUBIC) / (1.0 + BETA_CUBIC);

const MSS: f64 = MAX_DATAGRAM_BYTES as f64;

/// RFC 9438 CUBIC.
pub type Cubic = LossBased<CubicGrowth>;

/// CUBIC's own rules: the cubic curve and the Reno-friendly estimate in congestion avoidance, the `beta_cubic`
/// reduction with fast convergence on congestion.
#[derive(Debug, Clone, Default)]
pub struct CubicGrowth {
    /// Window before the last reduction, in datagrams.
    w_max: f64,
    /// Seconds from the epoch start to the return to `w_max`.
    k_s: f64,
    /// Start of the current avoidance epoch (reset by each congestion event).
    epoch_start: Option<Instant>,
    /// Reno-friendly estimate, in datagrams.
    w_est: f64,
    min_rtt: Option<Duration>,
}

impl Cubic {
    /// `W(t)` in datagrams for `t` seconds after the epoch start.
    pub fn w_cubic(&self, t_s: f64) -> f64 {
        self.rule().w_cubic(t_s)
    }

    /// `W_max` in datagrams.
    pub fn w_max(&self) -> f64 {
        self.rule().w_max
    }

    /// `K` in seconds.
    pub fn k_s(&self) -> f64 {
        self.rule().k_s
    }
}

fn cwnd_segments(window: &Window) -> f64 {
    window.cwnd_bytes as f64 / MSS
}

fn set_cwnd_segments(window: &mut Window, segments: f64) {
    let bytes = (segments * MSS).max(MINIMUM_WINDOW_BYTES as f64);
    window.cwnd_bytes = if bytes >= u64::MAX as f64 {
        u64::MAX
    } else {
        bytes as u64
    };
}

impl CubicGrowth {
    /// `W(t)` in datagrams for `t` seconds after the epoch start.
    pub fn w_cubic(&self, t_s: f64) -> f64 {
        CUBIC_C * (t_s - self.k_s).powi(3) + self.w_max
    }
}

impl GrowthRule for CubicGrowth {
    const NAME: &'static str = "cubic";

    fn on_rtt(&mut self, rtt: &RttSnapshot) {
        self.min_rtt = Some(rtt.min).filter(|d| !d.is_zero()).or(self.min_rtt);
    }

    fn on_avoidance_ack(&mut self, window: &mut Window, now: Instant, acked_bytes: u64) {
        let cwnd = cwnd_segments(window);
        let epoch_start = match self.epoch_start {
            Some(t) => t,
            None => {
                self.epoch_start = Some(now);
                if cwnd < self.w_max {
                    self.k_s = ((self.w_max - cwnd) / CUBIC_C).cbrt();
                } else {
                    self.k_s = 0.0;
                    self.w_max = cwnd;
                }
                self.w_est = cwnd;
                now
            }
        };
        let t_s = now.saturating_duration_since(epoch_start).as_secs_f64();
        let rtt_s = self.min_rtt.or(window.srtt).map_or(0.1, |d| d.as_secs_f64());
        let acked = acked_bytes as f64 / MSS;
        // Reno-friendly estimate: alpha datagrams per window acknowledged.
        self.w_est += ALPHA_CUBIC * acked / cwnd.max(1.0);
        let w_cubic_now = self.w_cubic(t_s);
        if w_cubic_now < self.w_est {
            set_cwnd_segments(window, self.w_est);
            return;
        }
        // Concave/convex region: aim at W(t + RTT), no faster than 1.5x per RTT.
        let target = self.w_cubic(t_s + rtt_s).clamp(cwnd, 1.5 * cwnd);
        set_cwnd_segments(window, cwnd + (target - cwnd) * acked / cwnd.max(1.0));
    }

    fn on_congestion_event(&mut self, window: &mut Window) {
        let cwnd = cwnd_segments(window);
        // Fast convergence: a flow that lost before regaining its last maximum gives some of it up.
        self.w_max = if cwnd < self.w_max {
            cwnd * (1.0 + BETA_CUBIC) / 2.0
        } else {
            cwnd
        };
        set_cwnd_segments(window, cwnd * BETA_CUBIC);
        window.ssthresh_bytes = window.cwnd_bytes;
        self.epoch_start = None;
    }

    fn on_retransmission_timeout(&mut self, window: &mut Window) {
        window.ssthresh_bytes = ((window.cwnd_bytes as f64 * BETA_CUBIC) as u64).max(MINIMUM_WINDOW_BYTES);
        self.w_max = cwnd_segments(window);
    }

    fn on_collapse(&mut self) {
        self.epoch_start = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::loss_based::tests::{ack, lose, MSS as MSS_BYTES};
    use super::super::Controller;
    use super::*;

    #[test]
    fn reduces_by_beta_and_follows_the_cubic_curve() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut c = Cubic::new(t0);
        ack(&mut c, t0 + 100 * ms, t0, 90); // slow start to 100 datagrams
        assert_eq!(c.window(), 100 * MSS_BYTES);
        lose(&mut c, t0 + 200 * ms, t0 + 100 * ms);
        assert_eq!(c.window(), 70 * MSS_BYTES, "beta = 0.7");
        assert!((c.w_max() - 100.0).abs() < 1e-9);
        // Same recovery period: no second reduction.
        lose(&mut c, t0 + 210 * ms, t0 + 150 * ms);
        assert_eq!(c.window(), 70 * MSS_BYTES);

        // Feed ACKs of 1 datagram every 1 ms (sent after recovery began) and compare with W(t + RTT).
        let k_expected = ((100.0 - 70.0) / CUBIC_C).cbrt();
        let epoch = t0 + 300 * ms;
        let mut now = epoch;
        let mut checked = 0;
        for step in 0..8_000u32 {
            now = epoch + ms * step;
            ack(&mut c, now, now - 100 * ms, 1);
            let t = (now - epoch).as_secs_f64();
            if step % 500 == 499 {
                assert!((c.k_s() - k_expected).abs() < 1e-9);
                let w = c.window() as f64 / MSS_BYTES as f64;
                // One RTT ahead of the curve, never below the Reno-friendly estimate.
                let curve = CUBIC_C * (t + 0.1 - k_expected).powi(3) + 100.0;
                assert!(
                    w >= curve * 0.97 - 1.0 && w <= curve * 1.03 + 1.0,
                    "t={t} w={w} curve={curve}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 16);
        // Around K the window is back at W_max; afterwards it is convex and above it.
        assert!(c.window() > 100 * MSS_BYTES);
        let _ = now;
    }

    #[test]
    fn fast_convergence_lowers_w_max() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut c = Cubic::new(t0);
        ack(&mut c, t0 + 100 * ms, t0, 90);
        lose(&mut c, t0 + 200 * ms, t0 + 100 * ms); // w_max 100, cwnd 70
        lose(&mut c, t0 + 400 * ms, t0 + 300 * ms); // cwnd 70 < w_max: w_max = 70 * 1.7 / 2
        assert!((c.w_max() - 70.0 * 0.85).abs() < 1e-6);
        assert_eq!(c.window(), 49 * MSS_BYTES);
        c.on_retransmission_timeout(t0 + 2_000 * ms);
        assert_eq!(c.window(), MINIMUM_WINDOW_BYTES);
    }
}
