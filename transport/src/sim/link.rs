//! [`Link`]: one direction of a simulated path, in virtual time.
//!
//! The model follows netem's, applied to each packet in this order:
//! 1. **Outage**: a packet that enters while an [`Outage`] is under way is dropped.
//! 2. **Random loss** from the [`LossModel`], at entry, before the queue (as netem does).
//! 3. **Bottleneck** (only with a rate): a FIFO served at the current rate, so a packet of `size_bytes` holds the
//!    line for `size_bytes * 8 / rate_bps` seconds. A packet that would have to wait is tail-dropped when the bytes
//!    already waiting plus its own exceed `queue_bytes`; one that finds the line idle is always taken. A
//!    [`RateChange`] applies to packets that start service at or after its time.
//! 4. **Propagation**: `delay` plus a jitter uniform in `[0, jitter]`, after the last bit leaves the bottleneck.
//!    Without `reorder` a packet is held back so that it never arrives before one sent earlier.
//! 5. **Duplication**: with probability `duplicate` a second copy is delivered (without using the bottleneck).
//!
//! Time is virtual: the caller passes `now` to every call and nothing reads a clock. Internally every instant is
//! kept as nanoseconds since the link's start, which keeps the per-packet cost to a few tens of nanoseconds.
//! Loss, jitter and duplication draw from separate streams forked from the seed, so changing one impairment does
//! not reshuffle the others: the same seed gives the same loss pattern with or without jitter.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use super::histogram::Histogram;
use super::loss::{LossModel, LossProcess};
use super::rng::SimRng;

/// A window during which the link drops everything that enters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// When the outage begins, relative to the link's start instant.
    pub start: Duration,
    /// How long it lasts; packets entering in `[start, start + duration)` are dropped.
    pub duration: Duration,
}

/// A change of the bottleneck rate at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateChange {
    /// When the change happens, relative to the link's start instant.
    pub at: Duration,
    /// The bottleneck rate from then on, in bits per second. 0 stalls the line until the next change.
    pub rate_bps: u64,
}

/// The impairments of one direction of a path.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]`, drawn per packet.
    pub jitter: Duration,
    /// `false`: jitter never reorders (a packet never arrives before one sent earlier); `true`: each packet's
    /// jitter is independent, so packets may overtake each other.
    pub reorder: bool,
    /// Random loss, applied when a packet enters the link, before the queue.
    pub loss: LossModel,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
    /// Bottleneck rate in bits per second; `None` is unlimited (no queue, no serialization delay).
    pub rate_bps: Option<u64>,
    /// Bottleneck queue limit in bytes, tail drop: bytes waiting, not counting the packet in service.
    /// Only used with a rate. The default, `u64::MAX`, never drops.
    pub queue_bytes: u64,
    /// Windows during which every packet entering the link is dropped.
    pub outages: Vec<Outage>,
    /// Bottleneck rate changes; each sets the rate from its time on (and gives an unlimited link a rate).
    pub rate_changes: Vec<RateChange>,
}

impl Default for LinkConfig {
    /// No delay, no jitter, no loss, no duplication, unlimited rate, no outages.
    fn default() -> Self {
        LinkConfig {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: false,
            loss: LossModel::None,
            duplicate: 0.0,
            rate_bps: None,
            queue_bytes: u64::MAX,
            outages: Vec::new(),
            rate_changes: Vec::new(),
        }
    }
}

impl LinkConfig {
    /// The bandwidth-delay product at the initial rate for a round trip of `rtt`, in bytes: `rate * rtt / 8`,
    /// or 0 if the link is unlimited.
    pub fn bdp_bytes(&self, rtt: Duration) -> u64 {
        match self.rate_bps {
            Some(rate_bps) => {
                let bits = u128::from(rate_bps) * rtt.as_nanos() / 1_000_000_000;
                u64::try_from(bits / 8).unwrap_or(u64::MAX)
            }
            None => 0,
        }
    }
}

/// What became of a packet offered to a [`Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted: it will come out of [`Link::deliver`].
    Queued,
    /// Dropped by the random loss model.
    Lost,
    /// Dropped because it entered during an outage.
    Outage,
    /// Tail-dropped by the full bottleneck queue.
    QueueFull,
}

/// Counters of a [`Link`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets offered to [`Link::send`].
    pub offered_packets: u64,
    /// Bytes offered to [`Link::send`].
    pub offered_bytes: u64,
    /// Packets handed out by [`Link::deliver`], duplicates included.
    pub delivered_packets: u64,
    /// Bytes handed out by [`Link::deliver`], duplicates included.
    pub delivered_bytes: u64,
    /// Packets dropped by the random loss model.
    pub lost_packets: u64,
    /// Packets dropped because they entered during an outage.
    pub outage_packets: u64,
    /// Packets tail-dropped by the bottleneck queue.
    pub queue_drop_packets: u64,
    /// Extra copies created by duplication.
    pub duplicated_packets: u64,
}

/// A packet on the link, ordered for the delivery heap by arrival time then send order.
#[derive(Debug)]
struct InFlight<T> {
    /// Arrival time, in nanoseconds since the link's start.
    arrival_ns: u64,
    /// Send order, so that equal arrival times come out first in, first out.
    seq: u64,
    size_bytes: u64,
    packet: T,
}

impl<T> PartialEq for InFlight<T> {
    fn eq(&self, other: &Self) -> bool {
        self.arrival_ns == other.arrival_ns && self.seq == other.seq
    }
}

impl<T> Eq for InFlight<T> {}

impl<T> PartialOrd for InFlight<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for InFlight<T> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.arrival_ns, other.seq).cmp(&(self.arrival_ns, self.seq))
    }
}

/// A packet accepted by the bottleneck: when it starts service, and its size.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    start_ns: u64,
    size_bytes: u64,
}

const NANOS_PER_SEC: u64 = 1_000_000_000;

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One direction of a simulated path, carrying packets of type `T` in virtual time. See the module docs.
#[derive(Debug)]
pub struct Link<T> {
    config: LinkConfig,
    start: Instant,
    loss: LossProcess,
    loss_rng: SimRng,
    jitter_rng: SimRng,
    duplicate_rng: SimRng,
    delay_ns: u64,
    jitter_ns: u64,
    /// Outages as `(start_ns, end_ns)` since the link's start, sorted by start; `next_outage` skips ended ones.
    outages: Vec<(u64, u64)>,
    next_outage: usize,
    /// Rate changes as `(at_ns, rate_bps)`, sorted by time; `next_rate_change` is the first not yet applied.
    rate_changes: Vec<(u64, u64)>,
    next_rate_change: usize,
    /// The rate for packets starting service at `busy_until_ns` or later (until the next change).
    rate_bps: Option<u64>,
    /// When the bottleneck finishes serving every accepted packet.
    busy_until_ns: u64,
    /// Fraction of a nanosecond carried over in `busy_until_ns`, in units of `1 / rate_bps` ns.
    busy_remainder: u64,
    /// Packets accepted by the bottleneck whose service may not have started, oldest first.
    waiting: VecDeque<Waiting>,
    /// Sum of `waiting` sizes.
    waiting_bytes: u64,
    /// Latest arrival scheduled, for the no-reordering guarantee.
    last_arrival_ns: u64,
    seq: u64,
    /// Packets on the wire, when arrival times can only rise in send order.
    fifo: VecDeque<InFlight<T>>,
    /// Packets on the wire, when independent jitter can reorder them.
    heap: BinaryHeap<InFlight<T>>,
    use_heap: bool,
    stats: LinkStats,
    queue_delay: Histogram,
}

impl<T> Link<T> {
    /// The counters so far.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Queueing delay (time between entering the bottleneck queue and starting transmission) of every packet that
    /// went through the bottleneck; packets that found the line idle count as zero. Empty on an unlimited link.
    pub fn queue_delay(&self) -> &Histogram {
        &self.queue_delay
    }

    /// The configuration the link was built with.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The instant outage and rate-change times are relative to.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Bytes waiting in the bottleneck queue at `now`, not counting the packet in service.
    pub fn bytes_queued(&self, now: Instant) -> u64 {
        let now_ns = self.offset_ns(now);
        let started: u64 = self
            .waiting
            .iter()
            .take_while(|w| w.start_ns <= now_ns)
            .map(|w| w.size_bytes)
            .sum();
        self.waiting_bytes - started
    }

    /// Packets on the link (past the bottleneck's entry, not yet delivered), duplicates included.
    pub fn packets_in_flight(&self) -> usize {
        self.fifo.len() + self.heap.len()
    }

    /// The earliest instant at which `deliver` will return a packet, if any packet is on the link.
    pub fn next_delivery(&self) -> Option<Instant> {
        let arrival_ns = if self.use_heap {
            self.heap.peek().map(|p| p.arrival_ns)
        } else {
            self.fifo.front().map(|p| p.arrival_ns)
        }?;
        Some(self.instant_at(arrival_ns))
    }

    /// Removes and returns the next packet whose arrival time is <= now, with that arrival time.
    /// Packets come out in arrival-time order, ties in send order.
    pub fn deliver(&mut self, now: Instant) -> Option<(Instant, T)> {
        let now_ns = self.offset_ns(now);
        let p = if self.use_heap {
            if self.heap.peek()?.arrival_ns > now_ns {
                return None;
            }
            self.heap.pop()?
        } else {
            if self.fifo.front()?.arrival_ns > now_ns {
                return None;
            }
            self.fifo.pop_front()?
        };
        self.stats.delivered_packets += 1;
        self.stats.delivered_bytes += p.size_bytes;
        Some((self.instant_at(p.arrival_ns), p.packet))
    }

    /// Nanoseconds from the link's start to `t` (0 before it).
    #[inline]
    fn offset_ns(&self, t: Instant) -> u64 {
        duration_ns(t.saturating_duration_since(self.start))
    }

    /// The instant `ns` nanoseconds after the link's start.
    #[inline]
    fn instant_at(&self, ns: u64) -> Instant {
        let d = Duration::from_nanos(ns);
        // Unreachable in practice (584 years after start); saturate rather than panic.
        self.start.checked_add(d).unwrap_or(self.start)
    }

    /// Whether `now_ns` falls inside an outage.
    #[inline]
    fn in_outage(&mut self, now_ns: u64) -> bool {
        while let Some(&(start_ns, end_ns)) = self.outages.get(self.next_outage) {
            if end_ns <= now_ns {
                self.next_outage += 1;
                continue;
            }
            return start_ns <= now_ns;
        }
        false
    }

    /// Applies every rate change due at or before `t_ns`.
    #[inline]
    fn apply_rate_changes(&mut self, t_ns: u64) {
        while let Some(&(at_ns, rate_bps)) = self.rate_changes.get(self.next_rate_change) {
            if at_ns > t_ns {
                break;
            }
            self.rate_bps = Some(rate_bps);
            self.busy_remainder = 0;
            self.next_rate_change += 1;
        }
    }

    /// Schedules a packet through the bottleneck entered at `now_ns`: returns when it leaves the bottleneck, or
    /// `None` when the queue drops it.
    #[inline]
    fn through_bottleneck(&mut self, now_ns: u64, size_bytes: u64) -> Option<u64> {
        let mut start_ns = now_ns.max(self.busy_until_ns);
        if start_ns > self.busy_until_ns {
            // The line was idle: nothing carries over.
            self.busy_remainder = 0;
        }
        self.apply_rate_changes(start_ns);
        // A stalled line (rate 0) starts serving again at the next change that gives it a rate.
        while self.rate_bps == Some(0) {
            let (at_ns, _) = *self.rate_changes.get(self.next_rate_change)?;
            start_ns = start_ns.max(at_ns);
            self.apply_rate_changes(start_ns);
        }
        let Some(rate_bps) = self.rate_bps else {
            return Some(now_ns);
        };

        // Forget packets that have started service; what is left waits.
        while let Some(w) = self.waiting.front() {
            if w.start_ns > now_ns {
                break;
            }
            self.waiting_bytes -= w.size_bytes;
            self.waiting.pop_front();
        }
        if start_ns > now_ns {
            if self.waiting_bytes.saturating_add(size_bytes) > self.config.queue_bytes {
                return None;
            }
            self.waiting.push_back(Waiting { start_ns, size_bytes });
            self.waiting_bytes += size_bytes;
        }

        // Serialization time, exact over a run: the sub-nanosecond remainder is carried to the next packet.
        let scaled = u128::from(size_bytes) * 8 * u128::from(NANOS_PER_SEC) + u128::from(self.busy_remainder);
        let rate = u128::from(rate_bps);
        let serialization_ns = u64::try_from(scaled / rate).unwrap_or(u64::MAX);
        self.busy_remainder = (scaled % rate) as u64;
        let finish_ns = start_ns.saturating_add(serialization_ns);
        self.busy_until_ns = finish_ns;
        self.queue_delay.record(Duration::from_nanos(start_ns - now_ns));
        Some(finish_ns)
    }

    #[inline]
    fn jitter_sample_ns(&mut self) -> u64 {
        if self.jitter_ns == 0 {
            0
        } else {
            self.jitter_rng.below(self.jitter_ns.saturating_add(1))
        }
    }

    #[inline]
    fn push(&mut self, arrival_ns: u64, size_bytes: u64, packet: T) {
        let entry = InFlight {
            arrival_ns,
            seq: self.seq,
            size_bytes,
            packet,
        };
        self.seq += 1;
        if self.use_heap {
            self.heap.push(entry);
        } else {
            self.fifo.push_back(entry);
        }
    }
}

impl<T: Clone> Link<T> {
    /// Creates a link with `config`, its randomness drawn from `seed`, with outage and rate-change times counted
    /// from `start`.
    pub fn new(config: LinkConfig, seed: u64, start: Instant) -> Self {
        let mut root = SimRng::new(seed);
        let loss_rng = root.fork();
        let jitter_rng = root.fork();
        let duplicate_rng = root.fork();

        let mut outages: Vec<(u64, u64)> = config
            .outages
            .iter()
            .map(|o| {
                let start_ns = duration_ns(o.start);
                (start_ns, start_ns.saturating_add(duration_ns(o.duration)))
            })
            .filter(|(s, e)| e > s)
            .collect();
        outages.sort_by_key(|&(s, _)| s);
        let mut rate_changes: Vec<(u64, u64)> = config
            .rate_changes
            .iter()
            .map(|c| (duration_ns(c.at), c.rate_bps))
            .collect();
        // Stable: of two changes at the same time, the later in the list wins.
        rate_changes.sort_by_key(|&(at, _)| at);

        let delay_ns = duration_ns(config.delay);
        let jitter_ns = duration_ns(config.jitter);
        let use_heap = config.reorder && jitter_ns > 0;
        Link {
            loss: LossProcess::new(config.loss),
            loss_rng,
            jitter_rng,
            duplicate_rng,
            delay_ns,
            jitter_ns,
            outages,
            next_outage: 0,
            rate_changes,
            next_rate_change: 0,
            rate_bps: config.rate_bps,
            busy_until_ns: 0,
            busy_remainder: 0,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            last_arrival_ns: 0,
            seq: 0,
            fifo: VecDeque::new(),
            heap: BinaryHeap::new(),
            use_heap,
            stats: LinkStats::default(),
            queue_delay: Histogram::new(),
            config,
            start,
        }
    }

    /// Offers a packet of `size_bytes` at `now` (now is non-decreasing across calls; a packet offered before the
    /// link's start counts as offered at the start).
    pub fn send(&mut self, now: Instant, size_bytes: usize, packet: T) -> Verdict {
        let now_ns = self.offset_ns(now);
        let size_bytes = size_bytes as u64;
        self.stats.offered_packets += 1;
        self.stats.offered_bytes += size_bytes;

        if self.in_outage(now_ns) {
            self.stats.outage_packets += 1;
            return Verdict::Outage;
        }
        if self.loss.drop_next(&mut self.loss_rng) {
            self.stats.lost_packets += 1;
            return Verdict::Lost;
        }
        let Some(departure_ns) = self.through_bottleneck(now_ns, size_bytes) else {
            self.stats.queue_drop_packets += 1;
            return Verdict::QueueFull;
        };

        let base_ns = departure_ns.saturating_add(self.delay_ns);
        let mut arrival_ns = base_ns.saturating_add(self.jitter_sample_ns());
        if !self.config.reorder {
            arrival_ns = arrival_ns.max(self.last_arrival_ns);
        }
        self.last_arrival_ns = self.last_arrival_ns.max(arrival_ns);

        if self.duplicate_rng.chance(self.config.duplicate) {
            self.stats.duplicated_packets += 1;
            // With reordering the copy gets its own jitter; without, it follows the original.
            let copy_arrival_ns = if self.use_heap {
                base_ns.saturating_add(self.jitter_sample_ns())
            } else {
                arrival_ns
            };
            self.last_arrival_ns = self.last_arrival_ns.max(copy_arrival_ns);
            self.push(arrival_ns, size_bytes, packet.clone());
            self.push(copy_arrival_ns, size_bytes, packet);
        } else {
            self.push(arrival_ns, size_bytes, packet);
        }
        Verdict::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tests need one real instant as the origin of virtual time; nothing is timed against the clock.
    fn origin() -> Instant {
        Instant::now()
    }

    const MS: Duration = Duration::from_millis(1);

    /// `(send time, packet number, verdict)` of each packet offered.
    type Sent = Vec<(Instant, u64, Verdict)>;
    /// `(arrival, packet number)` of each packet delivered.
    type Got = Vec<(Instant, u64)>;

    /// Drains every packet due by `until`, returning `(arrival, packet)` in delivery order.
    fn drain<T: Clone>(link: &mut Link<T>, until: Instant) -> Vec<(Instant, T)> {
        let mut out = Vec::new();
        while let Some(p) = link.deliver(until) {
            out.push(p);
        }
        out
    }

    /// Offers `size_bytes` packets at `offered_bps` for `span`, delivering as it goes; returns
    /// `(send time, packet number, verdict)` and `(arrival, packet number)` lists.
    fn saturate(
        link: &mut Link<u64>,
        t0: Instant,
        offered_bps: u64,
        size_bytes: usize,
        span: Duration,
    ) -> (Sent, Got) {
        let gap = Duration::from_nanos(size_bytes as u64 * 8 * 1_000_000_000 / offered_bps);
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        let mut now = t0;
        let mut n = 0;
        while now < t0 + span {
            got.extend(drain(link, now));
            sent.push((now, n, link.send(now, size_bytes, n)));
            n += 1;
            now += gap;
        }
        (sent, got)
    }

    #[test]
    fn default_link_delivers_everything_at_once() {
        let t0 = origin();
        let mut link = Link::new(LinkConfig::default(), 1, t0);
        assert_eq!(link.next_delivery(), None);
        assert_eq!(link.send(t0, 100, 'a'), Verdict::Queued);
        assert_eq!(link.send(t0, 100, 'b'), Verdict::Queued);
        assert_eq!(link.next_delivery(), Some(t0));
        assert_eq!(link.deliver(t0), Some((t0, 'a')));
        assert_eq!(link.deliver(t0), Some((t0, 'b')));
        assert_eq!(link.deliver(t0), None);
        assert_eq!(link.stats().delivered_bytes, 200);
        assert_eq!(link.queue_delay().count(), 0);
        assert_eq!(LinkConfig::default().bdp_bytes(Duration::from_millis(100)), 0);
    }

    #[test]
    fn bdp() {
        let config = LinkConfig {
            rate_bps: Some(100_000_000),
            ..LinkConfig::default()
        };
        assert_eq!(config.bdp_bytes(Duration::from_millis(40)), 500_000);
    }

    #[test]
    fn bernoulli_loss_rate() {
        let t0 = origin();
        let config = LinkConfig {
            loss: LossModel::Bernoulli { p: 0.01 },
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, 21, t0);
        let n = 100_000u64;
        for i in 0..n {
            let now = t0 + Duration::from_micros(i * 10);
            link.send(now, 1200, i);
            drain(&mut link, now);
        }
        let s = link.stats();
        let rate = s.lost_packets as f64 / n as f64;
        assert!((rate - 0.01).abs() / 0.01 < 0.1, "loss {rate}");
        assert_eq!(s.delivered_packets + s.lost_packets, n);
    }

    #[test]
    fn gilbert_elliott_bursts_on_the_link() {
        let t0 = origin();
        let (p, r) = (0.005, 0.2);
        let config = LinkConfig {
            loss: LossModel::GilbertElliott {
                p,
                r,
                loss_good: 0.0,
                loss_bad: 1.0,
            },
            ..LinkConfig::default()
        };
        let mut link = Link::new(config.clone(), 4, t0);
        let (mut bursts, mut in_burst) = (0u64, false);
        let n = 400_000u64;
        for i in 0..n {
            let lost = link.send(t0, 100, i) == Verdict::Lost;
            if lost && !in_burst {
                bursts += 1;
            }
            in_burst = lost;
            link.deliver(t0);
        }
        let lost = link.stats().lost_packets as f64;
        let mean = config.loss.mean_loss();
        assert!(
            (lost / n as f64 - mean).abs() / mean < 0.1,
            "loss {} vs {mean}",
            lost / n as f64
        );
        let burst = lost / bursts as f64;
        assert!((burst - 1.0 / r).abs() / (1.0 / r) < 0.1, "mean burst {burst}");
    }

    #[test]
    fn rate_limits_delivery_and_drops_the_excess() {
        let t0 = origin();
        let rate_bps = 10_000_000;
        let size = 1200;
        let config = LinkConfig {
            delay: 20 * MS,
            rate_bps: Some(rate_bps),
            queue_bytes: 30 * size as u64,
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, 2, t0);
        let (sent, mut got) = saturate(&mut link, t0, 2 * rate_bps, size, Duration::from_secs(1));
        got.extend(drain(&mut link, t0 + Duration::from_secs(1) + 20 * MS));
        // What left the bottleneck within the second (and then crossed the 20 ms delay).
        let in_window = got.len() as u64 * size as u64;
        let want = rate_bps / 8;
        let err = (in_window as f64 - want as f64).abs() / want as f64;
        assert!(err < 0.01, "delivered {in_window} bytes in 1 s, want {want}");
        let s = link.stats().clone();
        assert!(s.queue_drop_packets > 0);
        let drops = sent.iter().filter(|x| x.2 == Verdict::QueueFull).count() as u64;
        assert_eq!(drops, s.queue_drop_packets);
        // About half of what was offered at twice the rate is dropped.
        let dropped = s.queue_drop_packets as f64 / s.offered_packets as f64;
        assert!((dropped - 0.5).abs() < 0.03, "dropped {dropped}");
        // Everything accepted is delivered eventually, in order.
        got.extend(drain(&mut link, t0 + Duration::from_secs(10)));
        assert_eq!(got.len() as u64, s.offered_packets - s.queue_drop_packets);
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(link.bytes_queued(t0 + Duration::from_secs(10)), 0);
    }

    #[test]
    fn standing_queue_delay() {
        let t0 = origin();
        let rate_bps = 10_000_000;
        let size = 1200;
        let queue_bytes = 100 * size as u64;
        let config = LinkConfig {
            rate_bps: Some(rate_bps),
            queue_bytes,
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, 3, t0);
        let (_, _) = saturate(&mut link, t0, 2 * rate_bps, size, Duration::from_secs(2));
        let want = Duration::from_nanos(queue_bytes * 8 * 1_000_000_000 / rate_bps);
        let p95 = link.queue_delay().percentile(95.0);
        let err = (p95.as_secs_f64() - want.as_secs_f64()).abs() / want.as_secs_f64();
        assert!(err < 0.02, "p95 {p95:?} vs {want:?}");
        assert!(link.queue_delay().max() <= want + Duration::from_nanos(1));
        assert_eq!(link.queue_delay().min(), Duration::ZERO);
        let now = t0 + Duration::from_secs(2);
        let queued = link.bytes_queued(now);
        assert!(
            queued <= queue_bytes && queued + 2 * size as u64 > queue_bytes,
            "queued {queued}"
        );
    }

    #[test]
    fn delay_and_jitter_bounds_with_reordering() {
        let t0 = origin();
        let (delay, jitter) = (50 * MS, 10 * MS);
        let config = LinkConfig {
            delay,
            jitter,
            reorder: true,
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, 5, t0);
        let mut send_time = Vec::new();
        let mut got = Vec::new();
        for i in 0..5_000u64 {
            let now = t0 + Duration::from_micros(i * 500);
            send_time.push(now);
            link.send(now, 1000, i);
            got.extend(drain(&mut link, now));
        }
        got.extend(drain(&mut link, t0 + Duration::from_secs(10)));
        assert_eq!(got.len(), 5_000);
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for &(at, i) in &got {
            let d = at - send_time[i as usize];
            assert!(d >= delay && d <= delay + jitter, "packet {i} took {d:?}");
            lo = lo.min(d);
            hi = hi.max(d);
        }
        assert!(
            lo < delay + MS / 10 && hi > delay + jitter - MS / 10,
            "spread {lo:?}..{hi:?}"
        );
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "arrival order");
        let overtaken = got.windows(2).filter(|w| w[0].1 > w[1].1).count();
        assert!(overtaken > 100, "only {overtaken} reorderings");
    }

    #[test]
    fn jitter_without_reordering_keeps_order() {
        let t0 = origin();
        let (delay, jitter) = (30 * MS, 10 * MS);
        let config = LinkConfig {
            delay,
            jitter,
            reorder: false,
            rate_bps: Some(50_000_000),
            duplicate: 0.05,
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, 6, t0);
        let mut got = Vec::new();
        for i in 0..5_000u64 {
            let now = t0 + Duration::from_micros(i * 300);
            link.send(now, 1000, i);
            got.extend(drain(&mut link, now));
        }
        got.extend(drain(&mut link, t0 + Duration::from_secs(10)));
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let first = got.first().map(|p| p.0 - t0).unwrap();
        assert!(first >= delay && first <= delay + jitter + MS);
        let s = link.stats();
        assert!(s.duplicated_packets > 150 && s.duplicated_packets < 350, "{s:?}");
        assert_eq!(got.len() as u64, 5_000 + s.duplicated_packets);
        assert_eq!(s.delivered_packets, got.len() as u64);
    }

    #[test]
    fn outages_drop_exactly_the_packets_inside() {
        let t0 = origin();
        let config = LinkConfig {
            delay: 10 * MS,
            outages: vec![
                Outage {
                    start: 300 * MS,
                    duration: 50 * MS,
                },
                Outage {
                    start: 100 * MS,
                    duration: 200 * MS,
                },
            ],
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, 7, t0);
        for i in 0..500u64 {
            let now = t0 + Duration::from_millis(i);
            let verdict = link.send(now, 500, i);
            let inside = (100..350).contains(&i);
            let want = if inside { Verdict::Outage } else { Verdict::Queued };
            assert_eq!(verdict, want, "packet {i}");
        }
        assert_eq!(link.stats().outage_packets, 250);
        let got = drain(&mut link, t0 + Duration::from_secs(1));
        assert_eq!(got.len(), 250);
        assert!(got
            .iter()
            .all(|&(at, i)| at == t0 + Duration::from_millis(i + 10)));
    }

    #[test]
    fn rate_change_mid_run() {
        let t0 = origin();
        let size = 1000;
        let config = LinkConfig {
            rate_bps: Some(8_000_000),
            queue_bytes: 10 * size as u64,
            rate_changes: vec![RateChange {
                at: Duration::from_millis(500),
                rate_bps: 4_000_000,
            }],
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, 8, t0);
        let (_, mut got) = saturate(&mut link, t0, 16_000_000, size, Duration::from_secs(1));
        got.extend(drain(&mut link, t0 + Duration::from_secs(1)));
        let half = t0 + Duration::from_millis(500);
        let first = got.iter().filter(|p| p.0 <= half).count() as f64 * size as f64;
        let second = got.iter().filter(|p| p.0 > half).count() as f64 * size as f64;
        assert!((first - 500_000.0).abs() / 500_000.0 < 0.01, "first half {first}");
        assert!(
            (second - 250_000.0).abs() / 250_000.0 < 0.01,
            "second half {second}"
        );
        // Packets 1 ms apart at the new rate: 1000 bytes at 4 Mbit/s is 2 ms each.
        let late: Vec<Instant> = got.iter().rev().take(3).map(|p| p.0).collect();
        assert_eq!(late[0] - late[1], 2 * MS);
    }

    #[test]
    fn rate_change_from_unlimited_and_stall() {
        let t0 = origin();
        let config = LinkConfig {
            rate_bps: None,
            rate_changes: vec![
                RateChange {
                    at: 100 * MS,
                    rate_bps: 0,
                },
                RateChange {
                    at: 200 * MS,
                    rate_bps: 8_000_000,
                },
            ],
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, 9, t0);
        assert_eq!(link.send(t0 + 50 * MS, 1000, 1), Verdict::Queued);
        assert_eq!(link.deliver(t0 + 50 * MS), Some((t0 + 50 * MS, 1)));
        // Stalled from 100 ms: the packet waits for the line to come back at 200 ms, then takes 1 ms.
        assert_eq!(link.send(t0 + 150 * MS, 1000, 2), Verdict::Queued);
        assert_eq!(link.bytes_queued(t0 + 150 * MS), 1000);
        assert_eq!(link.next_delivery(), Some(t0 + 201 * MS));
        assert_eq!(link.deliver(t0 + 200 * MS), None);
        assert_eq!(link.deliver(t0 + 201 * MS), Some((t0 + 201 * MS, 2)));
        assert_eq!(link.queue_delay().max(), 50 * MS);
        // A line stalled for good drops everything as queue drops.
        let config = LinkConfig {
            rate_bps: Some(0),
            ..LinkConfig::default()
        };
        let mut dead = Link::new(config, 9, t0);
        assert_eq!(dead.send(t0, 10, ()), Verdict::QueueFull);
    }

    #[test]
    fn idle_line_takes_a_packet_bigger_than_the_queue() {
        let t0 = origin();
        let config = LinkConfig {
            rate_bps: Some(1_000_000),
            queue_bytes: 0,
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, 10, t0);
        assert_eq!(link.send(t0, 1250, 0), Verdict::Queued);
        assert_eq!(link.send(t0, 1250, 1), Verdict::QueueFull);
        assert_eq!(link.next_delivery(), Some(t0 + 10 * MS));
        assert_eq!(link.send(t0 + 10 * MS, 1250, 2), Verdict::Queued);
    }

    #[test]
    fn serialization_is_exact_over_a_run() {
        let t0 = origin();
        // 1000 bytes at 7 Mbit/s is 1142857.14 ns: truncating each packet would lose 0.14 ns a packet.
        let config = LinkConfig {
            rate_bps: Some(7_000_000),
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, 11, t0);
        for i in 0..7_000u64 {
            link.send(t0, 1000, i);
        }
        let last = drain(&mut link, t0 + Duration::from_secs(100)).pop().unwrap();
        assert_eq!(last.0 - t0, Duration::from_secs(8));
    }

    fn impaired() -> LinkConfig {
        LinkConfig {
            delay: 40 * MS,
            jitter: 5 * MS,
            reorder: true,
            loss: LossModel::GilbertElliott {
                p: 0.01,
                r: 0.3,
                loss_good: 0.001,
                loss_bad: 0.9,
            },
            duplicate: 0.01,
            rate_bps: Some(20_000_000),
            queue_bytes: 50_000,
            outages: vec![Outage {
                start: 300 * MS,
                duration: 100 * MS,
            }],
            rate_changes: vec![RateChange {
                at: 600 * MS,
                rate_bps: 12_000_000,
            }],
        }
    }

    fn run(seed: u64, t0: Instant) -> (Sent, Got, LinkStats, Duration) {
        let mut link = Link::new(impaired(), seed, t0);
        let (sent, mut got) = saturate(&mut link, t0, 25_000_000, 1200, Duration::from_secs(1));
        got.extend(drain(&mut link, t0 + Duration::from_secs(5)));
        (
            sent,
            got,
            link.stats().clone(),
            link.queue_delay().percentile(50.0),
        )
    }

    #[test]
    fn same_seed_same_run() {
        let t0 = origin();
        let a = run(77, t0);
        let b = run(77, t0);
        assert_eq!(a, b);
        let c = run(78, t0);
        assert_ne!(a.1, c.1);
        let s = &a.2;
        assert!(s.lost_packets > 0 && s.outage_packets > 0 && s.queue_drop_packets > 0);
        assert!(s.duplicated_packets > 0);
        assert_eq!(
            s.offered_packets + s.duplicated_packets,
            s.delivered_packets + s.lost_packets + s.outage_packets + s.queue_drop_packets
        );
    }
}
