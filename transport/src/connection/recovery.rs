//! The sending side of reliability: sent-packet records, ACK processing and loss detection (RFC 9002 §6:
//! packet and time thresholds, and the probe timeout for tails).

use super::rtt::RttEstimator;
use crate::congestion::RateSnapshot;
use crate::wire::frame::{AckFrame, DroppedNotice};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A packet is lost once a packet this many numbers later is acknowledged.
pub const PACKET_THRESHOLD: u64 = 3;
/// ... or once it is older than the RTT plus a reordering allowance and a later packet was acknowledged.
/// The allowance starts at RTT/16 (a deadline-bound repair cannot afford RFC 9002's fixed RTT/8 on every tail
/// loss) and doubles, up to RTT/2, each time a packet declared lost turns out to have arrived (reordering).
const MIN_REORDER_SHIFT: u32 = 4;
const MAX_REORDER_SHIFT: u32 = 1;
/// Packet numbers recently declared lost, kept to notice spurious loss declarations.
const LOST_MEMORY: usize = 512;
/// Never declare loss faster than this after sending (timer granularity).
const GRANULARITY: Duration = Duration::from_millis(1);

/// Something a packet carried that must be repaired if the packet is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// One fragment of a media frame.
    Fragment {
        /// Stream id.
        stream: u32,
        /// Frame sequence number.
        seq: u64,
        /// Fragment index within the frame.
        index: u32,
    },
    /// A dropped-frame notice.
    Notice(DroppedNotice),
}

/// The chunks one packet carried.
pub type Chunks = smallvec::SmallVec<[Chunk; 2]>;

/// The record of one sent packet.
#[derive(Debug, Clone)]
pub struct SentRecord {
    /// Packet number.
    pub pn: u64,
    /// When it was sent.
    pub sent_time: Instant,
    /// Size on the wire, in bytes.
    pub bytes: u64,
    /// True if it counts toward bytes in flight (carried something besides ACKs).
    pub in_flight: bool,
    /// The congestion controller's per-packet state.
    pub snapshot: RateSnapshot,
    /// What it carried (inline up to two chunks: a packet carries one fragment, or the end of one frame and
    /// the start of the next).
    pub chunks: Chunks,
}

/// What one ACK frame resolved.
#[derive(Debug, Default)]
pub struct AckOutcome {
    /// Packets newly acknowledged.
    pub acked: Vec<SentRecord>,
    /// Packets declared lost.
    pub lost: Vec<SentRecord>,
    /// The RTT sample this ACK produced, less the peer's ACK delay (not below the minimum RTT).
    pub rtt_sample: Option<Duration>,
}

/// Sent packets awaiting acknowledgement, indexed by packet number.
#[derive(Debug)]
pub struct Recovery {
    /// Slot `i` holds packet `base + i`; `None` once acknowledged or lost.
    sent: VecDeque<Option<SentRecord>>,
    base: u64,
    largest_acked: Option<u64>,
    bytes_in_flight: u64,
    ack_eliciting_in_flight: u64,
    loss_time: Option<Instant>,
    last_ack_eliciting_sent: Option<Instant>,
    /// Consecutive probe timeouts without an ACK.
    pub pto_count: u32,
    /// The reordering allowance is RTT >> this.
    reorder_shift: u32,
    /// Packet-count threshold; disabled (time threshold only, as RACK does) once reordering was seen.
    packet_threshold: u64,
    /// Recently declared lost, ascending.
    recently_lost: VecDeque<u64>,
    /// Packets declared lost that were acknowledged later.
    pub spurious_losses: u64,
    /// The RTT estimator.
    pub rtt: RttEstimator,
}

impl Recovery {
    /// Starts empty with `initial_rtt` as the RTT guess.
    pub fn new(initial_rtt: Duration) -> Self {
        Recovery {
            sent: VecDeque::new(),
            base: 0,
            largest_acked: None,
            bytes_in_flight: 0,
            ack_eliciting_in_flight: 0,
            loss_time: None,
            last_ack_eliciting_sent: None,
            pto_count: 0,
            reorder_shift: MIN_REORDER_SHIFT,
            packet_threshold: PACKET_THRESHOLD,
            recently_lost: VecDeque::new(),
            spurious_losses: 0,
            rtt: RttEstimator::new(initial_rtt),
        }
    }

    /// Bytes sent and neither acknowledged nor lost.
    pub fn bytes_in_flight(&self) -> u64 {
        self.bytes_in_flight
    }

    /// Records a sent packet. Packet numbers must increase by one.
    pub fn on_sent(&mut self, record: SentRecord) {
        if self.sent.is_empty() {
            self.base = record.pn;
        }
        // Packet numbers are contiguous; pad defensively if a caller skipped some.
        while self.base + (self.sent.len() as u64) < record.pn {
            self.sent.push_back(None);
        }
        if record.in_flight {
            self.bytes_in_flight += record.bytes;
            self.ack_eliciting_in_flight += 1;
            self.last_ack_eliciting_sent = Some(record.sent_time);
        }
        self.sent.push_back(Some(record));
    }

    fn take(&mut self, pn: u64) -> Option<SentRecord> {
        let idx = usize::try_from(pn.checked_sub(self.base)?).ok()?;
        let rec = self.sent.get_mut(idx)?.take()?;
        if rec.in_flight {
            self.bytes_in_flight -= rec.bytes;
            self.ack_eliciting_in_flight -= 1;
        }
        Some(rec)
    }

    fn compact(&mut self) {
        while let Some(None) = self.sent.front() {
            self.sent.pop_front();
            self.base += 1;
        }
    }

    /// Processes an ACK frame. `max_ack_delay` bounds the peer's claimed ACK delay.
    pub fn on_ack(&mut self, now: Instant, ack: &AckFrame, max_ack_delay: Duration) -> AckOutcome {
        let mut out = AckOutcome::default();
        self.on_ack_into(now, ack, max_ack_delay, &mut out);
        out
    }

    /// [`Self::on_ack`] into `out` (cleared first), whose vectors a caller keeps from one ACK to the next:
    /// no allocation per ACK.
    pub fn on_ack_into(
        &mut self,
        now: Instant,
        ack: &AckFrame,
        max_ack_delay: Duration,
        out: &mut AckOutcome,
    ) {
        out.acked.clear();
        out.lost.clear();
        out.rtt_sample = None;
        let Some(largest) = ack.largest() else { return };
        let next_pn = self.base + self.sent.len() as u64;
        if largest >= next_pn {
            return; // acknowledges packets never sent: ignore (the caller counts it)
        }
        self.check_spurious(ack);
        let newly_largest = self.largest_acked.is_none_or(|l| largest > l);
        if newly_largest {
            self.largest_acked = Some(largest);
        }
        // Room for what this ACK can resolve at most (it covers only tracked packets), reserved once.
        let covered: u64 = ack
            .ranges
            .iter()
            .map(|r| {
                r.end()
                    .saturating_sub((*r.start()).max(self.base))
                    .saturating_add(1)
            })
            .fold(0u64, u64::saturating_add);
        out.acked.reserve(
            usize::try_from(covered)
                .unwrap_or(usize::MAX)
                .min(self.sent.len()),
        );
        for range in &ack.ranges {
            let lo = (*range.start()).max(self.base);
            let hi = *range.end();
            if hi < lo {
                continue;
            }
            for pn in lo..=hi {
                if let Some(rec) = self.take(pn) {
                    out.acked.push(rec);
                }
            }
        }
        if out.acked.is_empty() {
            return;
        }
        // Packet numbers are unique: an unstable sort is the same order, and sorts in place (a stable one
        // allocates scratch for more than 20 records, on every such ACK).
        out.acked.sort_unstable_by_key(|r| r.pn);
        if let Some(newest) = out.acked.last() {
            if newest.pn == largest && newly_largest {
                let sample = now.saturating_duration_since(newest.sent_time);
                let delay = Duration::from_micros(ack.ack_delay_us).min(max_ack_delay);
                self.rtt.update(sample, delay);
                // The controller sees the path's RTT: the receiver's deliberate ACK delay is taken out (but
                // never below the minimum), or a delayed ACK would read as queueing on a short path.
                let min = self.rtt.min();
                out.rtt_sample = Some(sample.saturating_sub(delay).max(min.min(sample)));
            }
        }
        self.pto_count = 0;
        self.detect_lost_into(now, &mut out.lost);
    }

    /// Widens the reordering allowance when an ACK covers a packet already declared lost.
    fn check_spurious(&mut self, ack: &AckFrame) {
        if self.recently_lost.is_empty() {
            return;
        }
        let mut spurious = false;
        for range in &ack.ranges {
            let i = self.recently_lost.partition_point(|&pn| pn < *range.start());
            while self.recently_lost.get(i).is_some_and(|&pn| pn <= *range.end()) {
                self.recently_lost.remove(i);
                self.spurious_losses += 1;
                spurious = true;
            }
        }
        if spurious {
            // The path reorders: counting packets misfires, so only time decides from now on, with a
            // wider allowance each time it still misfires.
            self.packet_threshold = u64::MAX;
            if self.reorder_shift > MAX_REORDER_SHIFT {
                self.reorder_shift -= 1;
            }
        }
    }

    /// The reordering allowance in use (a fraction of the RTT).
    pub fn reorder_allowance(&self) -> Duration {
        let rtt = self.rtt.latest().max(self.rtt.smoothed());
        // rtt / 2^shift as a shift, not a division: this runs for every packet sent.
        Duration::from_nanos(u64::try_from(rtt.as_nanos() >> self.reorder_shift).unwrap_or(u64::MAX))
    }

    /// Declares lost what the thresholds say is lost, and arms the loss timer for the rest.
    pub fn detect_lost(&mut self, now: Instant) -> Vec<SentRecord> {
        let mut lost = Vec::new();
        self.detect_lost_into(now, &mut lost);
        lost
    }

    /// [`Self::detect_lost`], appending to `lost`.
    pub fn detect_lost_into(&mut self, now: Instant, lost: &mut Vec<SentRecord>) {
        self.loss_time = None;
        let Some(largest) = self.largest_acked else {
            return;
        };
        let rtt = self.rtt.latest().max(self.rtt.smoothed());
        let loss_delay = (rtt + rtt / (1 << self.reorder_shift)).max(GRANULARITY);
        let end = largest.saturating_sub(self.base).min(self.sent.len() as u64) as usize;
        for idx in 0..end {
            let Some(Some(rec)) = self.sent.get(idx) else {
                continue;
            };
            let pn = rec.pn;
            let sent_time = rec.sent_time;
            if largest >= pn.saturating_add(self.packet_threshold) || sent_time + loss_delay <= now {
                if let Some(rec) = self.take(pn) {
                    if rec.in_flight {
                        if self.recently_lost.len() >= LOST_MEMORY {
                            self.recently_lost.pop_front();
                        }
                        self.recently_lost.push_back(pn);
                    }
                    lost.push(rec);
                }
            } else {
                let t = sent_time + loss_delay;
                self.loss_time = Some(self.loss_time.map_or(t, |l| l.min(t)));
            }
        }
        self.compact();
    }

    /// When the loss-detection timer (or, with nothing to time, the probe timer) fires.
    pub fn timer(&self, max_ack_delay: Duration) -> Option<Instant> {
        if self.loss_time.is_some() {
            return self.loss_time;
        }
        if self.ack_eliciting_in_flight == 0 {
            return None;
        }
        let base = self.last_ack_eliciting_sent?;
        let backoff = 1u32 << self.pto_count.min(10);
        Some(base + self.rtt.pto_base(max_ack_delay) * backoff)
    }

    /// True if the timer that fired is the loss timer (otherwise it is a probe timeout).
    pub fn loss_timer_armed(&self) -> bool {
        self.loss_time.is_some()
    }

    /// The oldest unacknowledged in-flight packets' chunks, to re-send as a probe.
    pub fn oldest_outstanding(&self, max: usize) -> Vec<Chunk> {
        self.sent
            .iter()
            .flatten()
            .filter(|r| r.in_flight)
            .flat_map(|r| r.chunks.iter().copied())
            .take(max)
            .collect()
    }

    /// Counts a probe timeout.
    pub fn on_pto(&mut self) {
        self.pto_count = self.pto_count.saturating_add(1);
    }

    /// Number of packets still tracked.
    pub fn tracked(&self) -> usize {
        self.sent.iter().filter(|r| r.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pn: u64, t: Instant) -> SentRecord {
        SentRecord {
            pn,
            sent_time: t,
            bytes: 1000,
            in_flight: true,
            snapshot: RateSnapshot::default(),
            chunks: Chunks::new(),
        }
    }

    #[test]
    fn packet_threshold_and_time_threshold_declare_loss() {
        let t0 = Instant::now();
        let mut r = Recovery::new(Duration::from_millis(100));
        for pn in 0..10 {
            r.on_sent(record(pn, t0));
        }
        assert_eq!(r.bytes_in_flight(), 10_000);
        let t1 = t0 + Duration::from_millis(100);
        // ACK 3..=9 and 1: packet 0 and 2 missing; 0 is 9 behind, 2 is 7 behind the largest.
        let ack = AckFrame {
            ack_delay_us: 0,
            ranges: vec![3..=9, 1..=1],
        };
        let out = r.on_ack(t1, &ack, Duration::from_millis(25));
        assert_eq!(out.acked.len(), 8);
        assert_eq!(out.lost.iter().map(|p| p.pn).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(out.rtt_sample, Some(Duration::from_millis(100)));
        assert_eq!(r.bytes_in_flight(), 0);
        assert_eq!(r.tracked(), 0);

        // Tail: 10, 11 sent; only 11 acked; 10 is within the packet threshold, so it waits for time.
        let t2 = t1 + Duration::from_millis(10);
        r.on_sent(record(10, t2));
        r.on_sent(record(11, t2));
        let out = r.on_ack(
            t2 + Duration::from_millis(100),
            &AckFrame {
                ack_delay_us: 0,
                ranges: vec![11..=11],
            },
            Duration::ZERO,
        );
        assert!(out.lost.is_empty());
        let deadline = r.timer(Duration::ZERO).unwrap();
        assert!(deadline > t2 + Duration::from_millis(100));
        let lost = r.detect_lost(deadline);
        assert_eq!(lost.iter().map(|p| p.pn).collect::<Vec<_>>(), vec![10]);
    }

    #[test]
    fn acks_for_unsent_packets_are_ignored() {
        let t0 = Instant::now();
        let mut r = Recovery::new(Duration::from_millis(100));
        r.on_sent(record(0, t0));
        let out = r.on_ack(
            t0,
            &AckFrame {
                ack_delay_us: 0,
                ranges: vec![0..=5],
            },
            Duration::ZERO,
        );
        assert!(out.acked.is_empty());
        assert_eq!(r.bytes_in_flight(), 1000);
    }

    #[test]
    fn probe_timer_backs_off() {
        let t0 = Instant::now();
        let mut r = Recovery::new(Duration::from_millis(100));
        r.on_sent(record(0, t0));
        let a = r.timer(Duration::ZERO).unwrap();
        r.on_pto();
        let b = r.timer(Duration::ZERO).unwrap();
        assert_eq!(b - t0, (a - t0) * 2);
    }
}
