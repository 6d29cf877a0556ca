//! The machinery the loss-based controllers ([`super::new_reno`] and [`super::cubic`]) share, as RFC 9002
//! (section 7) describes it: slow start up to `ssthresh`, one window reduction per recovery period (a loss of a
//! packet sent before the current period began belongs to the same congestion event), the collapse to the
//! minimum window on persistent congestion or a retransmission timeout, and pacing from the window.
//!
//! What differs between the algorithms — how the window grows in congestion avoidance and how far a congestion
//! event reduces it — is a [`GrowthRule`]; [`LossBased`] drives one and is the [`Controller`].

use std::time::{Duration, Instant};

use super::delivery_rate::{rate_bytes_per_s, DeliveryRateSampler};
use super::{
    AckEvent, Controller, ControllerStats, RateSnapshot, RttSnapshot, SentPacket, MAX_DATAGRAM_BYTES,
};

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

/// The window a [`GrowthRule`] grows and reduces, with the smoothed RTT it may consult.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Congestion window, in bytes.
    pub cwnd_bytes: u64,
    /// Slow-start threshold, in bytes (`u64::MAX` before the first congestion event).
    pub ssthresh_bytes: u64,
    /// The newest non-zero smoothed RTT, if any ACK carried one yet.
    pub srtt: Option<Duration>,
}

/// One loss-based algorithm's own rules: how the window grows in congestion avoidance and how a congestion event
/// or a retransmission timeout reduces it. Everything else is [`LossBased`]'s.
pub trait GrowthRule: std::fmt::Debug + Clone + Default + Send {
    /// The controller's name for stats and reports ([`Controller::name`]).
    const NAME: &'static str;

    /// Sees the RTT estimates of every ACK, before any packet of it is counted.
    fn on_rtt(&mut self, _rtt: &RttSnapshot) {}

    /// Congestion avoidance: `acked_bytes` of one packet, sent after the recovery period and not app-limited,
    /// acknowledged at `now` while the window is at or above `ssthresh`.
    fn on_avoidance_ack(&mut self, window: &mut Window, now: Instant, acked_bytes: u64);

    /// A new congestion event (the first loss outside the current recovery period): reduces the window and sets
    /// `ssthresh`.
    fn on_congestion_event(&mut self, window: &mut Window);

    /// A retransmission timeout, before the window collapses to the minimum: sets `ssthresh` from the window.
    fn on_retransmission_timeout(&mut self, window: &mut Window);

    /// The window has just collapsed to [`MINIMUM_WINDOW_BYTES`] (persistent congestion or a retransmission
    /// timeout): forgets any avoidance progress.
    fn on_collapse(&mut self);
}

/// A loss-based controller: the RFC 9002 machinery around one [`GrowthRule`].
#[derive(Debug, Clone)]
pub struct LossBased<R> {
    window: Window,
    /// Start of the current recovery period; losses of packets sent before it do not reduce the window again.
    recovery_start: Option<Instant>,
    sampler: DeliveryRateSampler,
    delivery_rate_bytes_per_s: u64,
    congestion_events: u64,
    rule: R,
}

impl<R: GrowthRule> LossBased<R> {
    /// A controller in slow start with the initial window.
    pub fn new(_now: Instant) -> Self {
        LossBased {
            window: Window {
                cwnd_bytes: INITIAL_WINDOW_BYTES,
                ssthresh_bytes: u64::MAX,
                srtt: None,
            },
            recovery_start: None,
            sampler: DeliveryRateSampler::new(),
            delivery_rate_bytes_per_s: 0,
            congestion_events: 0,
            rule: R::default(),
        }
    }

    /// The slow-start threshold in bytes (`u64::MAX` before the first loss).
    pub fn ssthresh(&self) -> u64 {
        self.window.ssthresh_bytes
    }

    /// The algorithm's own state.
    pub fn rule(&self) -> &R {
        &self.rule
    }

    fn in_recovery(&self, sent_time: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent_time <= start)
    }

    fn on_congestion_event(&mut self, now: Instant, sent_time: Instant) {
        if self.in_recovery(sent_time) {
            return;
        }
        self.recovery_start = Some(now);
        self.congestion_events = self.congestion_events.saturating_add(1);
        self.rule.on_congestion_event(&mut self.window);
    }
}

impl<R: GrowthRule> Controller for LossBased<R> {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn on_sent(&mut self, packet: &SentPacket) -> RateSnapshot {
        self.sampler.on_sent(packet)
    }

    fn on_ack(&mut self, event: &AckEvent<'_>) {
        self.window.srtt = Some(event.rtt.smoothed)
            .filter(|d| !d.is_zero())
            .or(self.window.srtt);
        self.rule.on_rtt(&event.rtt);
        if let Some(sample) = self.sampler.on_ack(event.now, event.acked, Duration::ZERO) {
            self.delivery_rate_bytes_per_s = sample.delivery_rate_bytes_per_s;
        }
        for packet in event.acked {
            // No growth for packets sent before recovery began, nor while the application limits the flow.
            if self.in_recovery(packet.sent_time) || packet.snapshot.is_app_limited {
                continue;
            }
            if self.window.cwnd_bytes < self.window.ssthresh_bytes {
                self.window.cwnd_bytes = self.window.cwnd_bytes.saturating_add(packet.bytes);
            } else {
                self.rule
                    .on_avoidance_ack(&mut self.window, event.now, packet.bytes);
            }
        }
        if let Some(newest_lost) = event.lost.last() {
            self.on_congestion_event(event.now, newest_lost.sent_time);
            if is_persistent_congestion(event) {
                self.window.cwnd_bytes = MINIMUM_WINDOW_BYTES;
                self.rule.on_collapse();
            }
        }
    }

    fn on_retransmission_timeout(&mut self, now: Instant) {
        self.rule.on_retransmission_timeout(&mut self.window);
        self.window.cwnd_bytes = MINIMUM_WINDOW_BYTES;
        self.rule.on_collapse();
        self.recovery_start = Some(now);
        self.congestion_events = self.congestion_events.saturating_add(1);
    }

    fn window(&self) -> u64 {
        self.window.cwnd_bytes
    }

    fn pacing_rate(&self) -> u64 {
        window_pacing_rate(self.window.cwnd_bytes, self.window.srtt)
    }

    fn stats(&self) -> ControllerStats {
        ControllerStats {
            cwnd_bytes: self.window.cwnd_bytes,
            pacing_rate_bytes_per_s: self.pacing_rate(),
            bandwidth_estimate_bytes_per_s: 0,
            delivery_rate_bytes_per_s: self.delivery_rate_bytes_per_s,
            congestion_events: self.congestion_events,
        }
    }
}

/// ACK and loss events for the loss-based controllers' tests.
#[cfg(test)]
pub(crate) mod tests {
    use super::super::{AckedPacket, LostPacket};
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
}
