//! Popline: the default, model-based controller (BBR-like), tolerant of random loss, backing off on queueing
//! delay with loss.
//!
//! # Model
//! The controller keeps two numbers about the path: the bottleneck bandwidth `btlbw` (a windowed maximum of
//! delivery-rate samples over [`BW_WINDOW_ROUNDS`] round trips) and the minimum RTT `min_rtt` (over
//! [`MIN_RTT_WINDOW`]). Their product is the bandwidth-delay product `BDP`. It paces at `pacing_gain x btlbw` and
//! caps bytes in flight at `cwnd_gain x BDP + EXTRA_CWND_PACKETS` datagrams.
//!
//! # Random loss versus congestion
//! Loss applied before the bottleneck (radio, a lossy peering link) thins the flow: a flow paced at exactly the
//! link rate `C` is delivered at `(1 - p) C`, and a plain max filter would decay round after round. So:
//! - a round whose average queueing delay stays below `max(2 ms, min_rtt / 8)` counts as queue-free, and its
//!   acknowledged and lost bytes feed the *random-loss rate*, the loss ratio of the last
//!   [`LOSS_HISTORY_ROUNDS`] queue-free rounds, capped at [`MAX_LOSS_COMPENSATION`];
//! - a delivery-rate sample whose own RTT shows no queue (same margin) is divided by `1 - random_loss_rate`
//!   before it enters the filter: it measures what the path would carry without that loss.
//!
//! Loss is congestion only when it comes with queueing delay: a round whose *smallest* RTT sample exceeds
//! `min_rtt + max(5 ms, min_rtt / 4)` (the queue never drained during the round) and that lost packets is a
//! congestion round. It resets the bandwidth filter to [`CONGESTION_BACKOFF`] times what the round actually
//! delivered (loss-compensated by the random-loss rate only) and drains the queue; samples of packets sent before
//! the reset may not raise the estimate again (with a standing queue they still carry the old rate and would
//! undo the back-off within a round). Resetting to what is *delivered*, our share, rather than to a fraction of
//! the old estimate, is what keeps the response proportionate when a competing loss-based flow holds a standing
//! queue; the extra factor of 0.7 (CUBIC's own beta) per loss episode is what made the share fair in the model
//! (with 1.0, popline took 3.4-4.4x CUBIC's throughput on a 1-BDP buffer).
//!
//! # State machine
//! - **Startup**: pacing gain and cwnd gain [`STARTUP_GAIN`] (2/ln 2, which doubles the delivery rate each round).
//!   Leaves for Drain when the bandwidth estimate has not grown by [`STARTUP_GROWTH`] for
//!   [`STARTUP_FULL_BW_ROUNDS`] rounds, or when a round shows a standing queue (so a shallow buffer is not
//!   blown up), or a loss rate above the random-loss rate by [`STARTUP_EXCESS_LOSS`] together with queueing.
//! - **Drain**: pacing gain [`DRAIN_GAIN`] until bytes in flight fall to one BDP (or [`DRAIN_MAX_MIN_RTTS`] min
//!   RTTs pass), then ProbeBw. A congestion round anywhere after Startup also enters Drain, with gain
//!   [`CONGESTION_DRAIN_GAIN`], for at most one min RTT.
//! - **ProbeBw**: a cycle of [`PROBE_CYCLE_MIN_RTTS`] min RTTs: *Up* at [`PROBE_UP_GAIN`] for
//!   `min(min_rtt, PROBE_UP_MAX)` or until the RTT rises by the queue margin above where it was when the cycle
//!   began; *Down* at [`PROBE_DOWN_GAIN`] for as long as Up lasted or until in flight is back to one BDP, so the
//!   probe's queue is removed; then *Cruise* at gain 1.0. The probe is short because the product's target is a
//!   95th-percentile queueing delay of 10 ms: 25 ms at +25 % makes at most ~6 ms of queue.
//! - **ProbeRtt**: when `min_rtt` has not been confirmed for [`MIN_RTT_WINDOW`] (a sample within the queue-free
//!   margin of it confirms it, so a flow that keeps no queue never needs this), the window is held to
//!   `max(BDP / 2, MIN_CWND_PACKETS)` — gentler than BBRv1's four packets — for [`PROBE_RTT_DURATION`] and at
//!   least one round, and the smallest RTT seen becomes `min_rtt`. Then back to ProbeBw (or Startup).
//!
//! A retransmission timeout holds the window to [`MIN_CWND_PACKETS`] until the next ACK but keeps the model: the
//! path may only have paused (outages of 100 ms to 2 s are common between PoPs).

use std::time::{Duration, Instant};

use super::delivery_rate::{bytes_in, rate_bytes_per_s, DeliveryRateSampler, RateSample};
use super::{AckEvent, Controller, ControllerStats, RateSnapshot, SentPacket, MAX_DATAGRAM_BYTES};

/// A congestion round resets the bandwidth estimate to this fraction of what the round delivered.
pub const CONGESTION_BACKOFF: f64 = 0.7;
/// Rounds the bandwidth max filter remembers (BBR's value: long enough to span a probe cycle).
pub const BW_WINDOW_ROUNDS: u64 = 10;
/// How long a min-RTT sample stays valid without confirmation (BBR's value).
pub const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Startup pacing and cwnd gain, 2/ln 2: the smallest gain that doubles the sending rate each round.
pub const STARTUP_GAIN: f64 = 2.885;
/// Drain pacing gain after Startup, the inverse of [`STARTUP_GAIN`]: removes Startup's queue in about a round.
pub const DRAIN_GAIN: f64 = 1.0 / STARTUP_GAIN;
/// Drain pacing gain after a congestion round: half the delivered rate for at most one min RTT.
pub const CONGESTION_DRAIN_GAIN: f64 = 0.5;
/// Drain after Startup gives up after this many min RTTs even if in flight has not fallen to one BDP.
pub const DRAIN_MAX_MIN_RTTS: u32 = 4;
/// Startup continues while the bandwidth estimate grows by this factor per [`STARTUP_FULL_BW_ROUNDS`] rounds.
pub const STARTUP_GROWTH: f64 = 1.25;
/// Rounds without [`STARTUP_GROWTH`] after which the pipe is full.
pub const STARTUP_FULL_BW_ROUNDS: u32 = 3;
/// Startup also ends when a round loses this much more (as a fraction) than the random-loss rate while queueing.
pub const STARTUP_EXCESS_LOSS: f64 = 0.02;
/// cwnd gain in ProbeBw: two BDPs keep a share against loss-based flows that hold a standing queue.
pub const CWND_GAIN: f64 = 2.0;
/// Datagrams added to the window on top of `cwnd_gain x BDP`, for delayed and aggregated ACKs.
pub const EXTRA_CWND_PACKETS: u64 = 4;
/// The window never falls below this many datagrams.
pub const MIN_CWND_PACKETS: u64 = 4;
/// Window before the first bandwidth sample, in datagrams.
pub const INITIAL_CWND_PACKETS: u64 = 10;
/// RTT assumed for the initial pacing rate before any sample.
pub const INITIAL_RTT: Duration = Duration::from_millis(100);
/// ProbeBw's up-probe gain.
pub const PROBE_UP_GAIN: f64 = 1.25;
/// ProbeBw's down (drain) gain after the up-probe.
pub const PROBE_DOWN_GAIN: f64 = 0.75;
/// The up-probe lasts at most this long (or one min RTT if shorter).
pub const PROBE_UP_MAX: Duration = Duration::from_millis(25);
/// A ProbeBw cycle lasts this many min RTTs.
pub const PROBE_CYCLE_MIN_RTTS: u32 = 8;
/// ProbeRtt holds the reduced window at least this long.
pub const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);
/// The random-loss rate is measured over this many queue-free rounds.
pub const LOSS_HISTORY_ROUNDS: usize = 8;
/// Loss compensation never assumes more random loss than this.
pub const MAX_LOSS_COMPENSATION: f64 = 0.2;
/// A round contributes to the random-loss rate only with at least this many datagrams' worth of outcome.
pub const LOSS_ROUND_MIN_PACKETS: u64 = 4;

/// Queueing delay below this is "no queue": `max(2 ms, min_rtt / 8)`.
fn queue_free_margin(min_rtt: Duration) -> Duration {
    (min_rtt / 8).max(Duration::from_millis(2))
}

/// Queueing delay above this for a whole round is a standing queue: `max(5 ms, min_rtt / 4)`.
fn standing_queue_margin(min_rtt: Duration) -> Duration {
    (min_rtt / 4).max(Duration::from_millis(5))
}

fn scale(value: u64, gain: f64) -> u64 {
    let scaled = value as f64 * gain;
    if scaled >= u64::MAX as f64 {
        u64::MAX
    } else if scaled <= 0.0 {
        0
    } else {
        scaled as u64
    }
}

/// A max filter over the last [`BW_WINDOW_ROUNDS`] rounds, one slot per round.
#[derive(Debug, Clone, Default)]
struct RoundMaxFilter {
    slots: [(u64, u64); BW_WINDOW_ROUNDS as usize],
}

impl RoundMaxFilter {
    fn slot(round: u64) -> usize {
        (round % BW_WINDOW_ROUNDS) as usize
    }

    fn update(&mut self, round: u64, value: u64) {
        let slot = &mut self.slots[Self::slot(round)];
        if slot.0 != round {
            *slot = (round, value);
        } else {
            slot.1 = slot.1.max(value);
        }
    }

    fn get(&self, round: u64) -> u64 {
        self.slots
            .iter()
            .filter(|(r, _)| *r <= round && r.saturating_add(BW_WINDOW_ROUNDS) > round)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0)
    }

    fn reset(&mut self, round: u64, value: u64) {
        self.slots = [(u64::MAX, 0); BW_WINDOW_ROUNDS as usize];
        self.slots[Self::slot(round)] = (round, value);
    }
}

/// Where the controller is in its state machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Doubling the rate each round until the pipe is full.
    Startup,
    /// Emptying the queue Startup or congestion made.
    Drain {
        /// Pacing gain while draining.
        gain: f64,
        /// Drain ends at this time even if in flight is still above one BDP.
        deadline: Instant,
    },
    /// Steady state: cruising at the estimate with short probes.
    ProbeBw(ProbePhase),
    /// Refreshing the min-RTT estimate with a reduced window.
    ProbeRtt {
        /// When ProbeRtt began.
        started: Instant,
        /// The round count when it began.
        round: u64,
    },
}

/// A phase of the ProbeBw cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbePhase {
    /// Pacing above the estimate to find more bandwidth.
    Up,
    /// Pacing below it to remove what the probe queued.
    Down,
    /// Pacing at the estimate.
    Cruise,
}

/// Per-round accumulators.
#[derive(Debug, Clone, Copy, Default)]
struct RoundStats {
    acked_bytes: u64,
    lost_bytes: u64,
    min_rtt: Option<Duration>,
    rtt_sum_ns: u128,
    rtt_count: u64,
    /// Largest raw (uncompensated) delivery rate sampled in the round, preferring non-app-limited samples.
    max_rate_bytes_per_s: u64,
    max_app_limited_rate_bytes_per_s: u64,
}

/// The default model-based controller. See the module documentation.
#[derive(Debug, Clone)]
pub struct Popline {
    mode: Mode,
    sampler: DeliveryRateSampler,
    bw_filter: RoundMaxFilter,
    round: u64,
    next_round_delivered: u64,
    round_stats: RoundStats,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Instant,
    /// Smallest RTT seen during the current ProbeRtt.
    probe_rtt_min: Option<Duration>,
    latest_rtt: Option<Duration>,
    /// (acked, lost) bytes of the last queue-free rounds.
    loss_history: [(u64, u64); LOSS_HISTORY_ROUNDS],
    loss_history_next: usize,
    random_loss_rate: f64,
    full_bw_bytes_per_s: u64,
    full_bw_count: u32,
    filled_pipe: bool,
    cycle_start: Instant,
    phase_start: Instant,
    up_duration: Duration,
    /// Queueing delay when the current probe cycle began (a competitor's standing queue is not ours).
    cycle_base_queue_delay: Duration,
    cwnd_bytes: u64,
    pacing_rate_bytes_per_s: u64,
    rto_restricted: bool,
    /// Samples of packets sent before the last reset of the estimate (their `prior_delivered` is below this)
    /// measure the rate before the back-off and may not raise the estimate again.
    reset_delivered_mark: u64,
    delivery_rate_bytes_per_s: u64,
    congestion_events: u64,
}

impl Popline {
    /// A controller in Startup.
    pub fn new(now: Instant) -> Self {
        let cwnd_bytes = INITIAL_CWND_PACKETS * MAX_DATAGRAM_BYTES;
        Popline {
            mode: Mode::Startup,
            sampler: DeliveryRateSampler::new(),
            bw_filter: RoundMaxFilter::default(),
            round: 0,
            next_round_delivered: 0,
            round_stats: RoundStats::default(),
            min_rtt: None,
            min_rtt_stamp: now,
            probe_rtt_min: None,
            latest_rtt: None,
            loss_history: [(0, 0); LOSS_HISTORY_ROUNDS],
            loss_history_next: 0,
            random_loss_rate: 0.0,
            full_bw_bytes_per_s: 0,
            full_bw_count: 0,
            filled_pipe: false,
            cycle_start: now,
            phase_start: now,
            up_duration: Duration::ZERO,
            cycle_base_queue_delay: Duration::ZERO,
            cwnd_bytes,
            pacing_rate_bytes_per_s: scale(rate_bytes_per_s(cwnd_bytes, INITIAL_RTT), STARTUP_GAIN),
            rto_restricted: false,
            reset_delivered_mark: 0,
            delivery_rate_bytes_per_s: 0,
            congestion_events: 0,
        }
    }

    /// The current state.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The bottleneck-bandwidth estimate, in bytes per second (0 before the first sample).
    pub fn bandwidth_estimate(&self) -> u64 {
        self.bw_filter.get(self.round)
    }

    /// The min-RTT estimate, if any sample arrived yet.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The random-loss rate used for compensation (0 to [`MAX_LOSS_COMPENSATION`]).
    pub fn random_loss_rate(&self) -> f64 {
        self.random_loss_rate
    }

    fn bdp_bytes(&self) -> Option<u64> {
        let bw = self.bandwidth_estimate();
        match (bw, self.min_rtt) {
            (0, _) | (_, None) => None,
            (bw, Some(min_rtt)) => Some(bytes_in(bw, min_rtt)),
        }
    }

    fn queue_delay(&self, rtt: Duration) -> Duration {
        self.min_rtt.map_or(Duration::ZERO, |m| rtt.saturating_sub(m))
    }

    fn pacing_gain(&self) -> f64 {
        match self.mode {
            Mode::Startup => STARTUP_GAIN,
            Mode::Drain { gain, .. } => gain,
            Mode::ProbeBw(ProbePhase::Up) => PROBE_UP_GAIN,
            Mode::ProbeBw(ProbePhase::Down) => PROBE_DOWN_GAIN,
            Mode::ProbeBw(ProbePhase::Cruise) | Mode::ProbeRtt { .. } => 1.0,
        }
    }

    fn cwnd_gain(&self) -> f64 {
        match self.mode {
            Mode::Startup => STARTUP_GAIN,
            _ => CWND_GAIN,
        }
    }

    fn update_min_rtt(&mut self, now: Instant, latest: Option<Duration>, connection_min: Duration) {
        if self.min_rtt.is_none() && !connection_min.is_zero() {
            self.min_rtt = Some(connection_min);
            self.min_rtt_stamp = now;
        }
        let Some(sample) = latest.filter(|d| !d.is_zero()) else {
            return;
        };
        self.latest_rtt = Some(sample);
        if let Mode::ProbeRtt { .. } = self.mode {
            self.probe_rtt_min = Some(self.probe_rtt_min.map_or(sample, |m| m.min(sample)));
        }
        match self.min_rtt {
            None => {
                self.min_rtt = Some(sample);
                self.min_rtt_stamp = now;
            }
            Some(min_rtt) if sample <= min_rtt => {
                self.min_rtt = Some(sample);
                self.min_rtt_stamp = now;
            }
            // A sample within the queue-free margin confirms the estimate: the path is still that short.
            Some(min_rtt) if sample <= min_rtt.saturating_add(queue_free_margin(min_rtt) / 2) => {
                self.min_rtt_stamp = now;
            }
            Some(_) => {}
        }
    }

    fn on_rate_sample(&mut self, sample: &RateSample) {
        self.delivery_rate_bytes_per_s = sample.delivery_rate_bytes_per_s;
        let raw = sample.delivery_rate_bytes_per_s;
        if sample.is_app_limited {
            self.round_stats.max_app_limited_rate_bytes_per_s =
                self.round_stats.max_app_limited_rate_bytes_per_s.max(raw);
        } else {
            self.round_stats.max_rate_bytes_per_s = self.round_stats.max_rate_bytes_per_s.max(raw);
        }
        let queue_free = self
            .min_rtt
            .is_some_and(|m| self.queue_delay(sample.rtt) <= queue_free_margin(m));
        let value = if queue_free {
            scale(raw, 1.0 / (1.0 - self.random_loss_rate))
        } else {
            raw
        };
        let stale = sample.prior_delivered < self.reset_delivered_mark;
        let value = if stale {
            value.min(self.bandwidth_estimate())
        } else {
            value
        };
        if !sample.is_app_limited || value >= self.bandwidth_estimate() {
            self.bw_filter.update(self.round, value);
        }
    }

    /// Closes the round that just ended: loss accounting, congestion detection, Startup's exit.
    fn end_round(&mut self, now: Instant) {
        let stats = std::mem::take(&mut self.round_stats);
        let Some(min_rtt) = self.min_rtt else { return };
        let total = stats.acked_bytes.saturating_add(stats.lost_bytes);
        let round_loss = if total == 0 {
            0.0
        } else {
            stats.lost_bytes as f64 / total as f64
        };
        let avg_rtt = if stats.rtt_count == 0 {
            None
        } else {
            let ns = stats.rtt_sum_ns / u128::from(stats.rtt_count);
            Some(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
        };
        let queue_free = avg_rtt.is_some_and(|r| self.queue_delay(r) <= queue_free_margin(min_rtt));
        let standing_queue = stats
            .min_rtt
            .is_some_and(|r| self.queue_delay(r) > standing_queue_margin(min_rtt));
        if queue_free && total >= LOSS_ROUND_MIN_PACKETS * MAX_DATAGRAM_BYTES {
            self.loss_history[self.loss_history_next] = (stats.acked_bytes, stats.lost_bytes);
            self.loss_history_next = (self.loss_history_next + 1) % LOSS_HISTORY_ROUNDS;
            let (acked, lost) = self.loss_history.iter().fold((0u64, 0u64), |(a, l), (ra, rl)| {
                (a.saturating_add(*ra), l.saturating_add(*rl))
            });
            let sum = acked.saturating_add(lost);
            self.random_loss_rate = if sum == 0 {
                0.0
            } else {
                (lost as f64 / sum as f64).min(MAX_LOSS_COMPENSATION)
            };
        }

        if self.mode == Mode::Startup {
            let bw = self.bandwidth_estimate();
            if bw as f64 >= self.full_bw_bytes_per_s as f64 * STARTUP_GROWTH {
                self.full_bw_bytes_per_s = bw;
                self.full_bw_count = 0;
            } else if stats.max_rate_bytes_per_s > 0 {
                self.full_bw_count = self.full_bw_count.saturating_add(1);
            }
            let excess_loss = round_loss > self.random_loss_rate + STARTUP_EXCESS_LOSS && !queue_free;
            if self.full_bw_count >= STARTUP_FULL_BW_ROUNDS || standing_queue || excess_loss {
                self.filled_pipe = true;
                if (standing_queue || excess_loss) && stats.max_rate_bytes_per_s > 0 {
                    // The bottleneck was saturated this round: what it delivered is its rate.
                    let delivered = scale(stats.max_rate_bytes_per_s, 1.0 / (1.0 - self.random_loss_rate));
                    self.bw_filter
                        .reset(self.round, delivered.min(self.bandwidth_estimate()).max(1));
                }
                let deadline = now + min_rtt.saturating_mul(DRAIN_MAX_MIN_RTTS);
                self.mode = Mode::Drain {
                    gain: DRAIN_GAIN,
                    deadline,
                };
            }
            return;
        }

        if standing_queue && stats.lost_bytes > 0 {
            let delivered = if stats.max_rate_bytes_per_s > 0 {
                stats.max_rate_bytes_per_s
            } else {
                stats.max_app_limited_rate_bytes_per_s
            };
            if delivered > 0 {
                let target = scale(delivered, CONGESTION_BACKOFF / (1.0 - self.random_loss_rate))
                    .min(self.bandwidth_estimate());
                self.reset_delivered_mark = self.sampler.delivered_bytes();
                self.bw_filter.reset(self.round, target.max(1));
                self.congestion_events = self.congestion_events.saturating_add(1);
                if !matches!(self.mode, Mode::ProbeRtt { .. }) {
                    self.mode = Mode::Drain {
                        gain: CONGESTION_DRAIN_GAIN,
                        deadline: now + min_rtt,
                    };
                }
            }
        }
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        self.mode = Mode::ProbeBw(ProbePhase::Cruise);
        self.cycle_start = now;
        self.phase_start = now;
        self.cycle_base_queue_delay = self.latest_rtt.map_or(Duration::ZERO, |r| self.queue_delay(r));
    }

    fn update_mode(&mut self, now: Instant, bytes_in_flight: u64, round_started: bool) {
        let Some(min_rtt) = self.min_rtt else { return };
        let margin = queue_free_margin(min_rtt);
        if !matches!(self.mode, Mode::ProbeRtt { .. })
            && now.saturating_duration_since(self.min_rtt_stamp) > MIN_RTT_WINDOW
        {
            self.mode = Mode::ProbeRtt {
                started: now,
                round: self.round,
            };
            self.probe_rtt_min = None;
        }
        match self.mode {
            Mode::Startup => {}
            Mode::Drain { deadline, .. } => {
                let bdp = self.bdp_bytes().unwrap_or(0);
                if bytes_in_flight <= bdp || now >= deadline {
                    self.enter_probe_bw(now);
                }
            }
            Mode::ProbeBw(phase) => {
                let in_phase = now.saturating_duration_since(self.phase_start);
                let queue_delay = self.latest_rtt.map_or(Duration::ZERO, |r| self.queue_delay(r));
                match phase {
                    ProbePhase::Up => {
                        if in_phase >= min_rtt.min(PROBE_UP_MAX)
                            || queue_delay > self.cycle_base_queue_delay.saturating_add(margin)
                        {
                            self.up_duration = in_phase;
                            self.mode = Mode::ProbeBw(ProbePhase::Down);
                            self.phase_start = now;
                        }
                    }
                    ProbePhase::Down => {
                        let bdp = self.bdp_bytes().unwrap_or(0);
                        if in_phase >= self.up_duration || bytes_in_flight <= bdp {
                            self.mode = Mode::ProbeBw(ProbePhase::Cruise);
                            self.phase_start = now;
                        }
                    }
                    ProbePhase::Cruise => {
                        let cycle = min_rtt.saturating_mul(PROBE_CYCLE_MIN_RTTS);
                        if now.saturating_duration_since(self.cycle_start) >= cycle {
                            self.cycle_start = now;
                            self.phase_start = now;
                            self.cycle_base_queue_delay = queue_delay;
                            self.mode = Mode::ProbeBw(ProbePhase::Up);
                        }
                    }
                }
            }
            Mode::ProbeRtt { started, round } => {
                if now.saturating_duration_since(started) >= PROBE_RTT_DURATION
                    && round_started
                    && self.round > round
                {
                    if let Some(m) = self.probe_rtt_min.take() {
                        self.min_rtt = Some(m);
                    }
                    self.min_rtt_stamp = now;
                    if self.filled_pipe {
                        self.enter_probe_bw(now);
                    } else {
                        self.mode = Mode::Startup;
                    }
                }
            }
        }
    }

    fn update_control(&mut self, acked_bytes: u64) {
        let min_cwnd = MIN_CWND_PACKETS * MAX_DATAGRAM_BYTES;
        let bw = self.bandwidth_estimate();
        let rtt = self.min_rtt.unwrap_or(INITIAL_RTT);
        if bw > 0 {
            self.pacing_rate_bytes_per_s = scale(bw, self.pacing_gain()).max(1);
        } else {
            self.pacing_rate_bytes_per_s =
                scale(rate_bytes_per_s(self.cwnd_bytes, rtt), self.pacing_gain()).max(1);
        }
        let target = match self.bdp_bytes() {
            Some(bdp) => scale(bdp, self.cwnd_gain()).saturating_add(EXTRA_CWND_PACKETS * MAX_DATAGRAM_BYTES),
            None => INITIAL_CWND_PACKETS * MAX_DATAGRAM_BYTES,
        };
        if self.filled_pipe {
            self.cwnd_bytes = self.cwnd_bytes.saturating_add(acked_bytes).min(target);
        } else if self.cwnd_bytes < target
            || self.sampler.delivered_bytes() < INITIAL_CWND_PACKETS * MAX_DATAGRAM_BYTES
        {
            self.cwnd_bytes = self.cwnd_bytes.saturating_add(acked_bytes);
        }
        self.cwnd_bytes = self.cwnd_bytes.max(min_cwnd);
    }
}

impl Controller for Popline {
    fn name(&self) -> &'static str {
        "popline"
    }

    fn on_sent(&mut self, packet: &SentPacket) -> RateSnapshot {
        self.sampler.on_sent(packet)
    }

    fn on_ack(&mut self, event: &AckEvent<'_>) {
        let now = event.now;
        self.update_min_rtt(now, event.rtt.latest, event.rtt.min);
        let acked_bytes = event
            .acked
            .iter()
            .fold(0u64, |sum, p| sum.saturating_add(p.bytes));
        let lost_bytes = event.lost.iter().fold(0u64, |sum, p| sum.saturating_add(p.bytes));
        if acked_bytes > 0 {
            self.rto_restricted = false;
        }
        let sample = self
            .sampler
            .on_ack(now, event.acked, self.min_rtt.unwrap_or(Duration::ZERO));

        // A round ends when a packet sent after the previous round ended is acknowledged.
        let newest_prior = event.acked.iter().map(|p| p.snapshot.delivered_bytes).max();
        let round_started = newest_prior.is_some_and(|d| d >= self.next_round_delivered) && acked_bytes > 0;
        let stats = &mut self.round_stats;
        stats.acked_bytes = stats.acked_bytes.saturating_add(acked_bytes);
        stats.lost_bytes = stats.lost_bytes.saturating_add(lost_bytes);
        if let Some(rtt) = event.rtt.latest.filter(|d| !d.is_zero()) {
            stats.min_rtt = Some(stats.min_rtt.map_or(rtt, |m| m.min(rtt)));
            stats.rtt_sum_ns = stats.rtt_sum_ns.saturating_add(rtt.as_nanos());
            stats.rtt_count = stats.rtt_count.saturating_add(1);
        }
        if let Some(sample) = sample {
            self.on_rate_sample(&sample);
        }
        if round_started {
            self.next_round_delivered = self.sampler.delivered_bytes();
            self.end_round(now);
            self.round = self.round.saturating_add(1);
        }
        self.update_mode(now, event.bytes_in_flight, round_started);
        self.update_control(acked_bytes);
    }

    fn on_retransmission_timeout(&mut self, _now: Instant) {
        if !self.rto_restricted {
            self.congestion_events = self.congestion_events.saturating_add(1);
        }
        self.rto_restricted = true;
    }

    fn window(&self) -> u64 {
        let min_cwnd = MIN_CWND_PACKETS * MAX_DATAGRAM_BYTES;
        if self.rto_restricted {
            return min_cwnd;
        }
        match (self.mode, self.bdp_bytes()) {
            (Mode::ProbeRtt { .. }, Some(bdp)) => self.cwnd_bytes.min((bdp / 2).max(min_cwnd)),
            _ => self.cwnd_bytes,
        }
    }

    fn pacing_rate(&self) -> u64 {
        self.pacing_rate_bytes_per_s
    }

    fn stats(&self) -> ControllerStats {
        ControllerStats {
            cwnd_bytes: self.window(),
            pacing_rate_bytes_per_s: self.pacing_rate_bytes_per_s,
            bandwidth_estimate_bytes_per_s: self.bandwidth_estimate(),
            delivery_rate_bytes_per_s: self.delivery_rate_bytes_per_s,
            congestion_events: self.congestion_events,
        }
    }
}

#[cfg(test)]
mod tests;
