//! Popline: the default, model-based controller (BBR-like), tolerant of random loss, backing off on queueing
//! delay with loss.
//!
//! # Model
//! The controller keeps two numbers about the path: the bottleneck bandwidth `btlbw` (a windowed maximum of
//! delivery-rate samples over [`BW_WINDOW_ROUNDS`] *path-limited* round trips) and the minimum RTT `min_rtt` (over
//! [`MIN_RTT_WINDOW`]). Their product is the bandwidth-delay product `BDP`. It paces at `pacing_gain x btlbw` and
//! caps bytes in flight at `cwnd_gain x BDP + EXTRA_CWND_PACKETS` datagrams.
//!
//! # Application-limited rounds
//! A live stream is app-limited except in its keyframe bursts, and a burst shorter than a round trip yields only
//! app-limited samples. Only a round with at least one non-app-limited sample advances the filter's clock, so
//! idle and app-limited stretches keep the estimate (as BBRv2/v3 keep `bw_hi`), and an app-limited sample enters
//! the filter only when it raises the estimate. Without this the estimate expired one second after the warm-up
//! and fell to the P-frame rate, the next keyframe took 400+ ms to pace out and the GOP was lost. Only a
//! congestion round (below) brings a held estimate down.
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
//!   probe's queue is removed (at most `(gain - 1) / (1 - PROBE_DOWN_GAIN) x up + min_rtt`); then *Cruise* at
//!   gain 1.0. The probe is short because the product's target is a 95th-percentile queueing delay of 10 ms:
//!   25 ms at +25 % makes at most ~6 ms of queue.
//!   Probing escalates (BBRv3's exponential probe-up, in gain): once the samples of the Up packets are back (the
//!   ACK of a packet sent after Up ended), a probe that raised the estimate by at least
//!   [`PROBE_SUCCESS_FRACTION`] of what it could show (`(gain - 1) x min(1, up / min_rtt)`, and at least
//!   [`PROBE_MIN_GROWTH`]) without queueing is a success: the step grows by one and the next Up starts at once,
//!   at gain `1 + 0.25 x 2^step` (capped at [`STARTUP_GAIN`], at most [`MAX_PROBE_STEP`] steps) for a whole
//!   min RTT. A probe that finds nothing resets the step to 0 (steady state: one short probe per cycle); one
//!   during which the sender ran out of data proves nothing and keeps it. From 3.6 to 100 Mbit/s at 100 ms RTT
//!   this takes about 1.5 s instead of minutes.
//! - **ProbeRtt**: when `min_rtt` has not been confirmed for [`MIN_RTT_WINDOW`] (a sample within the queue-free
//!   margin of it confirms it, so a flow that keeps no queue never needs this), the window is held to
//!   `max(BDP / 2, MIN_CWND_PACKETS)` — gentler than BBRv1's four packets — for [`PROBE_RTT_DURATION`] and at
//!   least one round, and the smallest RTT seen becomes `min_rtt`. Then back to ProbeBw (or Startup).
//!
//! A retransmission timeout holds the window to [`MIN_CWND_PACKETS`] until the next ACK but keeps the model: the
//! path may only have paused (outages of 100 ms to 2 s are common between PoPs).

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::delivery_rate::{bytes_in, rate_bytes_per_s, DeliveryRateSampler, RateSample};
use super::{AckEvent, Controller, ControllerStats, RateSnapshot, SentPacket, MAX_DATAGRAM_BYTES};

/// Extra window for late or bunched ACKs, as time at the estimated rate.
pub const ACK_AGGREGATION_ALLOWANCE: Duration = Duration::from_millis(2);

/// Rounds after Startup ends in which losses are taken as Startup's own overshoot, not as congestion.
pub const STARTUP_AFTERMATH_ROUNDS: u64 = 3;

/// Bytes a burst probe sends at the pre-congestion rate (16 full datagrams: about 50 ms of queue on a path
/// squeezed to 3.6 Mbit/s, short enough for audio behind it to stay within a 280 ms budget).
pub const BURST_PROBE_BYTES: u64 = 16 * MAX_DATAGRAM_BYTES;
/// A burst probe is tried only when the estimate fell below this fraction of the pre-congestion rate (a
/// squeeze, not the ordinary back-off after a probe).
pub const BURST_BELOW: f64 = 0.5;
/// How long the pre-congestion rate stays a burst probe's ceiling.
pub const BURST_MEMORY: Duration = Duration::from_secs(30);

/// The own-queue watch acts only when the path delivers less than this fraction of the estimate.
pub const SLOWED_FRACTION: f64 = 0.5;

/// A round that offered this many times what it delivered, with a standing queue and while app-limited, means
/// the path slowed below the application's rate.
pub const SELF_QUEUE_RATIO: f64 = 1.2;

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
/// Up-probes escalate at most this many steps (gain `1 + 0.25 x 2^step`, capped at [`STARTUP_GAIN`]).
pub const MAX_PROBE_STEP: u32 = 4;
/// An up-probe succeeded when the estimate grew by at least this fraction of what the probe could show.
pub const PROBE_SUCCESS_FRACTION: f64 = 0.5;
/// ... and by at least this much in any case (sampling noise under random loss is a few percent).
pub const PROBE_MIN_GROWTH: f64 = 0.02;
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
    /// `(round, max)` of the last [`RoundMaxFilter::get`] since the slots last changed: the estimate is read
    /// several times per packet sent and changes at most once per ACK.
    cached: Cell<Option<(u64, u64)>>,
}

impl RoundMaxFilter {
    fn slot(round: u64) -> usize {
        (round % BW_WINDOW_ROUNDS) as usize
    }

    fn update(&mut self, round: u64, value: u64) {
        self.cached.set(None);
        let slot = &mut self.slots[Self::slot(round)];
        if slot.0 != round {
            *slot = (round, value);
        } else {
            slot.1 = slot.1.max(value);
        }
    }

    fn get(&self, round: u64) -> u64 {
        if let Some((r, max)) = self.cached.get() {
            if r == round {
                return max;
            }
        }
        let max = self
            .slots
            .iter()
            .filter(|(r, _)| *r <= round && r.saturating_add(BW_WINDOW_ROUNDS) > round)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0);
        self.cached.set(Some((round, max)));
        max
    }

    fn reset(&mut self, round: u64, value: u64) {
        self.cached.set(None);
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

/// An up-probe waiting for its verdict: the samples of the packets it sent arrive about one round trip after
/// it ended.
#[derive(Debug, Clone, Copy)]
struct ProbeEval {
    /// The bandwidth estimate when the probe began.
    start_bw: u64,
    /// When the Up phase ended (zero until it has); the verdict comes with the first ACK of a packet sent after.
    up_end: Option<Instant>,
    /// Growth of the estimate that the probe could show if the path had the room: `(gain - 1) x min(1, up /
    /// min_rtt)`.
    expected_growth: f64,
    /// The Up phase ended early because the RTT rose.
    cut_short: bool,
    /// The sender ran out of data during the probe: a probe that found nothing proves nothing.
    app_limited: bool,
    /// Largest queueing delay of a packet sent during the probe, above the cycle's base.
    max_queue: Duration,
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
    /// Bytes sent during the round.
    sent_bytes: u64,
    /// Whether the sender ran out of data at some point in the round.
    app_limited: bool,
    /// When the round began (the ACK that ended the previous one).
    started: Option<Instant>,
}

/// A burst probe's packet train: the bottleneck spaces its packets at its own rate, so the spacing of their
/// ACKs measures that rate even when the flow was idle just before (where a delivery-rate sample, whose
/// interval starts at the previous ACK, would not).
#[derive(Debug, Clone, Copy)]
struct Train {
    first_sent: Instant,
    last_sent: Instant,
    sent_bytes: u64,
    first_ack: Option<Instant>,
    last_ack: Option<Instant>,
    acked_bytes: u64,
    bytes_after_first_ack: u64,
}

impl Train {
    /// Records ACKed packets; returns the train's rate once most of it is acknowledged.
    fn on_acked(&mut self, now: Instant, acked: &[super::AckedPacket]) -> Option<u64> {
        for p in acked
            .iter()
            .filter(|p| p.sent_time >= self.first_sent && p.sent_time <= self.last_sent)
        {
            self.acked_bytes = self.acked_bytes.saturating_add(p.bytes);
            match self.first_ack {
                None => self.first_ack = Some(now),
                Some(_) => {
                    self.bytes_after_first_ack = self.bytes_after_first_ack.saturating_add(p.bytes);
                    self.last_ack = Some(now);
                }
            }
        }
        if self.acked_bytes * 4 < self.sent_bytes * 3 || self.bytes_after_first_ack * 2 < self.sent_bytes {
            return None;
        }
        let spread = self.last_ack?.saturating_duration_since(self.first_ack?);
        if spread.is_zero() {
            return None;
        }
        Some(rate_bytes_per_s(self.bytes_after_first_ack, spread))
    }
}

/// Since when every RTT sample has shown a queue, and what we sent and got delivered since.
#[derive(Debug, Clone, Copy)]
struct QueueWatch {
    since: Instant,
    sent_at: u64,
    delivered_at: u64,
    app_limited: bool,
}

/// The default model-based controller. See the module documentation.
#[derive(Debug, Clone)]
pub struct Popline {
    mode: Mode,
    sampler: DeliveryRateSampler,
    bw_filter: RoundMaxFilter,
    round: u64,
    /// Rounds that carried at least one non-app-limited rate sample: the bandwidth filter's clock. An
    /// app-limited round measures the application, not the path, so it does not age the estimate.
    bw_round: u64,
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
    /// The round in which Startup ended.
    startup_exit_round: u64,
    cycle_start: Instant,
    phase_start: Instant,
    up_duration: Duration,
    /// Pacing gain of the last up-probe.
    up_gain: f64,
    /// Queueing delay when the current probe cycle began (a competitor's standing queue is not ours).
    cycle_base_queue_delay: Duration,
    /// Escalation step of the up-probe: 0 in steady state, +1 per up-probe that found bandwidth.
    probe_step: u32,
    /// The up-probe whose outcome is still to be judged, if any.
    probe_eval: Option<ProbeEval>,
    cwnd_bytes: u64,
    pacing_rate_bytes_per_s: u64,
    rto_restricted: bool,
    /// Samples of packets sent before the last reset of the estimate (their `prior_delivered` is below this)
    /// measure the rate before the back-off and may not raise the estimate again.
    reset_delivered_mark: u64,
    /// The estimate before the last congestion reset, and when it was recorded: what the path carried
    /// before it slowed, the ceiling of a burst probe.
    bw_before_reset: u64,
    bw_before_reset_stamp: Instant,
    /// Whether the previous packet left the sender with nothing more to send.
    was_app_limited: bool,
    /// Bytes the current burst probe may still send at the ceiling rate.
    burst_credit: u64,
    last_burst: Option<Instant>,
    /// The packet train of the current burst probe, measured by its ACK dispersion.
    train: Option<Train>,
    /// Bytes ever sent (for the own-queue watch).
    total_sent_bytes: u64,
    /// Tracks a queue that has stood since some instant, to tell whether we built it.
    queue_watch: Option<QueueWatch>,
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
            bw_round: 0,
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
            startup_exit_round: 0,
            cycle_start: now,
            phase_start: now,
            up_duration: Duration::ZERO,
            up_gain: PROBE_UP_GAIN,
            cycle_base_queue_delay: Duration::ZERO,
            probe_step: 0,
            probe_eval: None,
            cwnd_bytes,
            pacing_rate_bytes_per_s: scale(rate_bytes_per_s(cwnd_bytes, INITIAL_RTT), STARTUP_GAIN),
            rto_restricted: false,
            reset_delivered_mark: 0,
            bw_before_reset: 0,
            bw_before_reset_stamp: now,
            was_app_limited: false,
            burst_credit: 0,
            last_burst: None,
            train: None,
            total_sent_bytes: 0,
            queue_watch: None,
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
        self.bw_filter.get(self.bw_round)
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

    /// The up-probe's pacing gain at the current escalation step: `1 + (PROBE_UP_GAIN - 1) x 2^step`, at most
    /// [`STARTUP_GAIN`].
    fn probe_up_gain(&self) -> f64 {
        let step = self.probe_step.min(MAX_PROBE_STEP);
        (1.0 + (PROBE_UP_GAIN - 1.0) * f64::from(1u32 << step)).min(STARTUP_GAIN)
    }

    /// How long the up-probe lasts: `min(min_rtt, PROBE_UP_MAX)` in steady state, a whole min RTT once
    /// escalated (a delivery-rate sample averages over a round trip, so only a probe that long shows its whole
    /// gain).
    fn probe_up_duration(&self, min_rtt: Duration) -> Duration {
        if self.probe_step == 0 {
            min_rtt.min(PROBE_UP_MAX)
        } else {
            min_rtt
        }
    }

    fn pacing_gain(&self) -> f64 {
        match self.mode {
            Mode::Startup => STARTUP_GAIN,
            Mode::Drain { gain, .. } => gain,
            Mode::ProbeBw(ProbePhase::Up) => self.probe_up_gain(),
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
            self.bw_filter.update(self.bw_round, value);
        }
    }

    /// Closes the round that just ended: loss accounting, congestion detection, Startup's exit.
    fn end_round(&mut self, now: Instant) {
        let stats = std::mem::take(&mut self.round_stats);
        self.round_stats.started = Some(now);
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
        // A round that lost more than the compensation cap is an outage or a burst, not the path's random loss:
        // it would otherwise inflate the compensation (and the pacing rate) for rounds to come.
        if queue_free
            && total >= LOSS_ROUND_MIN_PACKETS * MAX_DATAGRAM_BYTES
            && round_loss <= MAX_LOSS_COMPENSATION
        {
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
                self.startup_exit_round = self.round;
                if (standing_queue || excess_loss) && stats.max_rate_bytes_per_s > 0 {
                    // The bottleneck was saturated this round: what it delivered is its rate.
                    let delivered = scale(stats.max_rate_bytes_per_s, 1.0 / (1.0 - self.random_loss_rate));
                    self.bw_filter
                        .reset(self.bw_round, delivered.min(self.bandwidth_estimate()).max(1));
                }
                let deadline = now + min_rtt.saturating_mul(DRAIN_MAX_MIN_RTTS);
                self.mode = Mode::Drain {
                    gain: DRAIN_GAIN,
                    deadline,
                };
            }
            return;
        }

        // A queue we build ourselves while the application limits us: we offered more than the path delivered
        // in a round that never saw the queue drain. The path got slower (a squeeze); its delivery rate, which
        // is the bottleneck's rate while the queue stands, replaces the estimate at once, without waiting for
        // the buffer to overflow. Loss-based flows sharing the queue do not trigger this: with a standing queue
        // that is not ours, what we send is what gets delivered.
        // Startup's overshoot is detected as loss for a couple of rounds after Startup ends; Drain already
        // removes that queue and the estimate is already the saturated rate, so it is not a new congestion
        // signal (taking it as one cut the estimate to 0.7 C and cost seconds at 200 ms RTT).
        let startup_aftermath =
            self.round <= self.startup_exit_round.saturating_add(STARTUP_AFTERMATH_ROUNDS);
        if standing_queue && stats.lost_bytes > 0 && !startup_aftermath {
            let delivered = stats
                .max_rate_bytes_per_s
                .max(stats.max_app_limited_rate_bytes_per_s);
            let self_inflicted = false;
            let backoff = CONGESTION_BACKOFF;
            if delivered > 0 {
                let target =
                    scale(delivered, backoff / (1.0 - self.random_loss_rate)).min(self.bandwidth_estimate());
                self.reset_delivered_mark = self.sampler.delivered_bytes();
                let before = self.bandwidth_estimate();
                if before > self.bw_before_reset
                    || now.saturating_duration_since(self.bw_before_reset_stamp) > BURST_MEMORY
                {
                    self.bw_before_reset = before;
                }
                self.bw_before_reset_stamp = now;
                self.bw_filter.reset(self.bw_round, target.max(1));
                self.congestion_events = self.congestion_events.saturating_add(1);
                if !matches!(self.mode, Mode::ProbeRtt { .. }) {
                    self.mode = Mode::Drain {
                        gain: CONGESTION_DRAIN_GAIN,
                        // A self-made queue is drained until in flight is back to one BDP (the Drain exit),
                        // however many min RTTs that takes (bounded); a loss episode drains for one.
                        deadline: now
                            + if self_inflicted {
                                min_rtt * DRAIN_MAX_MIN_RTTS * 2
                            } else {
                                min_rtt
                            },
                    };
                }
            }
        }
    }

    /// A burst probe: when a backlog starts after an app-limited spell, the path shows no queue, and the
    /// estimate sits below what the path carried before its last congestion reset (within [`BURST_MEMORY`]),
    /// the first [`BURST_PROBE_BYTES`] of the backlog leave at that old rate. An app-limited live flow only
    /// has backlogs at keyframes, so this is how it learns that a squeezed path came back: the burst's ACK
    /// spacing shows the bottleneck's rate. If the path is still slow, the burst costs at most
    /// `BURST_PROBE_BYTES` of queue (about 130 ms at 3.6 Mbit/s), once per min RTT at most.
    fn maybe_burst_probe(&mut self, packet: &SentPacket) {
        let starts_backlog = self.was_app_limited && !packet.app_limited;
        self.was_app_limited = packet.app_limited;
        if self.burst_credit > 0 {
            if let Some(t) = self.train.as_mut() {
                t.last_sent = packet.now;
                t.sent_bytes = t.sent_bytes.saturating_add(packet.bytes);
            }
        }
        self.burst_credit = self.burst_credit.saturating_sub(packet.bytes);
        let (Some(min_rtt), Some(latest)) = (self.min_rtt, self.latest_rtt) else {
            return;
        };
        // Cheapest test first: this runs for every packet sent, and a backlog rarely starts.
        if starts_backlog
            && packet.now.saturating_duration_since(self.bw_before_reset_stamp) <= BURST_MEMORY
            && self
                .last_burst
                .is_none_or(|t| packet.now.saturating_duration_since(t) >= min_rtt)
            && matches!(self.mode, Mode::ProbeBw(_))
            && self.queue_delay(latest) <= queue_free_margin(min_rtt)
            && (self.bandwidth_estimate() as f64) < BURST_BELOW * self.bw_before_reset as f64
        {
            self.burst_credit = BURST_PROBE_BYTES.saturating_sub(packet.bytes);
            self.last_burst = Some(packet.now);
            self.train = Some(Train {
                first_sent: packet.now,
                last_sent: packet.now,
                sent_bytes: packet.bytes,
                first_ack: None,
                last_ack: None,
                acked_bytes: 0,
                bytes_after_first_ack: 0,
            });
        }
    }

    /// Notices, within half a min RTT, a queue we are building ourselves while the application limits us:
    /// every RTT sample shows a queue, and we offered more than the path delivered meanwhile. The path got
    /// slower (a squeeze); what it delivered since the queue appeared is its rate. Waiting for the buffer to
    /// overflow would put seconds of queue ahead of the stream's audio. A loss-based flow's standing queue does
    /// not trigger this: with a queue that is not ours, what we send is what gets delivered.
    fn watch_own_queue(&mut self, now: Instant, latest: Option<Duration>, lost: bool) -> Option<u64> {
        let (Some(min_rtt), Some(latest)) = (self.min_rtt, latest) else {
            return None;
        };
        let queued = self.queue_delay(latest) > standing_queue_margin(min_rtt) / 2;
        if lost || !queued || !matches!(self.mode, Mode::ProbeBw(_)) {
            self.queue_watch = None;
            return None;
        }
        let (total_sent, delivered_now) = (self.total_sent_bytes, self.sampler.delivered_bytes());
        let w = *self.queue_watch.get_or_insert(QueueWatch {
            since: now,
            sent_at: total_sent,
            delivered_at: delivered_now,
            app_limited: self.was_app_limited,
        });
        let elapsed = now.saturating_duration_since(w.since);
        if elapsed < min_rtt / 2 {
            return None;
        }
        let sent = total_sent.saturating_sub(w.sent_at);
        let delivered = delivered_now.saturating_sub(w.delivered_at);
        let rate = rate_bytes_per_s(delivered, elapsed);
        // A burst we sent faster than the link (a keyframe) also queues, but drains at the rate we know; only
        // a path delivering far less than the estimate has slowed.
        let slowed = (rate as f64) < SLOWED_FRACTION * self.bandwidth_estimate() as f64;
        let enough = delivered >= 10 * MAX_DATAGRAM_BYTES;
        if w.app_limited && slowed && enough && sent as f64 > SELF_QUEUE_RATIO * delivered as f64 {
            self.queue_watch = None;
            return Some(rate);
        }
        None
    }

    /// The path's rate fell to `rate`: take it as the estimate at once and drain the queue we built.
    fn on_path_slowed(&mut self, now: Instant, rate: u64) {
        let before = self.bandwidth_estimate();
        if rate >= before {
            return;
        }
        if before > self.bw_before_reset
            || now.saturating_duration_since(self.bw_before_reset_stamp) > BURST_MEMORY
        {
            self.bw_before_reset = before;
        }
        self.bw_before_reset_stamp = now;
        self.reset_delivered_mark = self.sampler.delivered_bytes();
        self.bw_filter.reset(self.bw_round, rate.max(1));
        self.congestion_events = self.congestion_events.saturating_add(1);
        let min_rtt = self.min_rtt.unwrap_or(INITIAL_RTT);
        self.mode = Mode::Drain {
            gain: CONGESTION_DRAIN_GAIN,
            deadline: now + min_rtt * DRAIN_MAX_MIN_RTTS * 2,
        };
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        self.probe_step = 0;
        self.probe_eval = None;
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
                        let rtt_rose = queue_delay > self.cycle_base_queue_delay.saturating_add(margin);
                        if in_phase >= self.probe_up_duration(min_rtt) || rtt_rose {
                            let expected_growth = (self.probe_up_gain() - 1.0)
                                * (in_phase.as_secs_f64() / min_rtt.as_secs_f64()).min(1.0);
                            if let Some(eval) = self.probe_eval.as_mut() {
                                eval.up_end = Some(now);
                                eval.cut_short = rtt_rose;
                                eval.expected_growth = expected_growth;
                            }
                            self.up_duration = in_phase;
                            self.up_gain = self.probe_up_gain();
                            self.mode = Mode::ProbeBw(ProbePhase::Down);
                            self.phase_start = now;
                        }
                    }
                    ProbePhase::Down => {
                        let bdp = self.bdp_bytes().unwrap_or(0);
                        // The probe queued at most `(gain - 1) x up` worth of the estimate, and Down removes
                        // `(1 - PROBE_DOWN_GAIN)` of it per unit of time; in flight shows the queue gone a round
                        // trip later at worst.
                        let drain = self
                            .up_duration
                            .mul_f64((self.up_gain - 1.0).max(0.0) / (1.0 - PROBE_DOWN_GAIN))
                            .max(self.up_duration);
                        if bytes_in_flight <= bdp || in_phase >= drain.saturating_add(min_rtt) {
                            self.mode = Mode::ProbeBw(ProbePhase::Cruise);
                            self.phase_start = now;
                        }
                    }
                    ProbePhase::Cruise => {
                        let cycle = min_rtt.saturating_mul(PROBE_CYCLE_MIN_RTTS);
                        if now.saturating_duration_since(self.cycle_start) >= cycle {
                            self.start_up_probe(now, queue_delay);
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

    fn start_up_probe(&mut self, now: Instant, queue_delay: Duration) {
        self.cycle_start = now;
        self.phase_start = now;
        self.cycle_base_queue_delay = queue_delay;
        self.mode = Mode::ProbeBw(ProbePhase::Up);
        self.probe_eval = Some(ProbeEval {
            start_bw: self.bandwidth_estimate(),
            up_end: None,
            expected_growth: 0.0,
            cut_short: false,
            app_limited: false,
            max_queue: Duration::ZERO,
        });
    }

    /// Judges the pending up-probe once the ACK of a packet sent after it arrives. A probe that raised the
    /// estimate by at least half of what it could show ([`PROBE_SUCCESS_FRACTION`]) without queueing is a
    /// success: the next one starts at once, one step larger. A probe that found nothing resets the step, unless
    /// the sender was application-limited (then it proves nothing and the step is kept).
    fn judge_probe(&mut self, now: Instant, newest_sent: Option<Instant>, latest_rtt: Option<Duration>) {
        let Some(min_rtt) = self.min_rtt else { return };
        let Some(eval) = self.probe_eval.as_mut() else {
            return;
        };
        if let Some(rtt) = latest_rtt {
            let queue = rtt
                .saturating_sub(min_rtt)
                .saturating_sub(self.cycle_base_queue_delay);
            eval.max_queue = eval.max_queue.max(queue);
        }
        let Some(up_end) = eval.up_end else { return };
        let sent_after = newest_sent.is_some_and(|t| t >= up_end);
        // Packets sent during the probe may all be lost: give up waiting two round trips after it ended.
        let timed_out = now.saturating_duration_since(up_end) >= min_rtt.saturating_mul(2);
        if !sent_after && !timed_out {
            return;
        }
        let eval = *eval;
        self.probe_eval = None;
        let threshold = 1.0 + (eval.expected_growth * PROBE_SUCCESS_FRACTION).max(PROBE_MIN_GROWTH);
        let grew = self.bandwidth_estimate() as f64 >= eval.start_bw as f64 * threshold;
        let queue_free = !eval.cut_short && eval.max_queue <= queue_free_margin(min_rtt);
        if grew && queue_free {
            self.probe_step = (self.probe_step + 1).min(MAX_PROBE_STEP);
            if let Mode::ProbeBw(ProbePhase::Down | ProbePhase::Cruise) = self.mode {
                let queue_delay = self.latest_rtt.map_or(Duration::ZERO, |r| self.queue_delay(r));
                self.start_up_probe(now, queue_delay);
            }
        } else if !(eval.app_limited && queue_free) {
            self.probe_step = 0;
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
            // Plus room for ACKs that arrive late or in bunches (delayed ACKs, a busy receiver): on a path of
            // tens of microseconds the BDP alone would starve the window whenever the receiver is scheduled late.
            Some(bdp) => scale(bdp, self.cwnd_gain())
                .saturating_add(EXTRA_CWND_PACKETS * MAX_DATAGRAM_BYTES)
                .saturating_add(bytes_in(bw, ACK_AGGREGATION_ALLOWANCE)),
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
    fn phase(&self) -> &'static str {
        match self.mode {
            Mode::Startup => "startup",
            Mode::Drain { .. } => "drain",
            Mode::ProbeBw(ProbePhase::Up) => "up",
            Mode::ProbeBw(ProbePhase::Down) => "down",
            Mode::ProbeBw(ProbePhase::Cruise) => "cruise",
            Mode::ProbeRtt { .. } => "probe_rtt",
        }
    }

    fn name(&self) -> &'static str {
        "popline"
    }

    fn on_sent(&mut self, packet: &SentPacket) -> RateSnapshot {
        self.total_sent_bytes = self.total_sent_bytes.saturating_add(packet.bytes);
        if let Some(w) = self.queue_watch.as_mut() {
            w.app_limited |= packet.app_limited;
        }
        self.maybe_burst_probe(packet);
        self.round_stats.sent_bytes = self.round_stats.sent_bytes.saturating_add(packet.bytes);
        self.round_stats.app_limited |= packet.app_limited;
        if packet.app_limited && self.mode == Mode::ProbeBw(ProbePhase::Up) {
            if let Some(eval) = self.probe_eval.as_mut() {
                eval.app_limited = true;
            }
        }
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
        if let Some(train) = self.train.as_mut() {
            if let Some(rate) = train.on_acked(now, event.acked) {
                self.train = None;
                // Never above what the path carried before: a compressed ACK train must not inflate the model.
                let rate = rate.min(self.bw_before_reset);
                if rate > self.bandwidth_estimate() {
                    self.bw_filter.update(self.bw_round, rate);
                }
            } else if now.saturating_duration_since(train.last_sent) > self.min_rtt.unwrap_or(INITIAL_RTT) * 4
            {
                self.train = None;
            }
        }
        if round_started {
            self.next_round_delivered = self.sampler.delivered_bytes();
            let path_limited = self.round_stats.max_rate_bytes_per_s > 0;
            self.end_round(now);
            self.round = self.round.saturating_add(1);
            if path_limited {
                self.bw_round = self.bw_round.saturating_add(1);
            }
        }
        if let Some(rate) = self.watch_own_queue(now, event.rtt.latest, !event.lost.is_empty()) {
            self.on_path_slowed(now, rate);
        }
        self.update_mode(now, event.bytes_in_flight, round_started);
        if matches!(self.mode, Mode::ProbeBw(_)) {
            let newest_sent = event.acked.iter().map(|p| p.sent_time).max();
            self.judge_probe(now, newest_sent, event.rtt.latest.filter(|d| !d.is_zero()));
        } else {
            self.probe_step = 0;
            self.probe_eval = None;
        }
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
        // The BDP (a 128-bit division) only where it matters: this runs for every packet sent.
        match self.mode {
            Mode::ProbeRtt { .. } => match self.bdp_bytes() {
                Some(bdp) => self.cwnd_bytes.min((bdp / 2).max(min_cwnd)),
                None => self.cwnd_bytes,
            },
            _ => self.cwnd_bytes,
        }
    }

    fn pacing_rate(&self) -> u64 {
        if self.burst_credit > 0 {
            return self.pacing_rate_bytes_per_s.max(self.bw_before_reset);
        }
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
