//! The receiving side of reliability: which packet numbers arrived, and when to say so.
//!
//! A gap in packet numbers triggers an immediate ACK (our NAK: the ranges name what is missing), and while a
//! gap is fresh the ACK is repeated every `nak_interval` even if nothing else arrives (the periodic NAK), so a
//! lost ACK never leaves a lost packet unrepaired.
//!
//! A short train (a live frame's datagrams, a few milliseconds of them) is acknowledged once, when its last
//! datagram is in, instead of every `ack_interval` or `ack_every` packets along the way: the connection holds
//! the regular ACK until the train should be complete ([`AckTracker::hold_for_train`]), at most
//! `max_ack_delay` after the first packet it leaves unacknowledged (the sender's loss timers allow that
//! much). A gap, a filled hole or a tail probe that reveals one is never held, nor is anything while a gap
//! is fresh. A long train (bulk, a large keyframe) is not held at all: its sender needs the ACKs along the way
//! to clock its window.

use crate::wire::frame::{AckFrame, MAX_ACK_RANGES};
use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// Times a fresh gap is re-reported by the periodic NAK when nothing else triggers an ACK.
const NAK_REPEATS: u32 = 3;

/// Tracks received packet numbers and decides when an ACK is due.
#[derive(Debug)]
pub struct AckTracker {
    /// Disjoint, non-adjacent ranges in ascending order; at most `MAX_ACK_RANGES` kept.
    ranges: VecDeque<RangeInclusive<u64>>,
    largest_received_at: Option<Instant>,
    eliciting_since_ack: u32,
    ack_due: Option<Instant>,
    max_ack_delay: Duration,
    ack_every: u32,
    ack_interval: Duration,
    last_ack_sent: Option<Instant>,
    nak_interval: Duration,
    nak_repeats_left: u32,
    next_nak: Option<Instant>,
    /// When the first ack-eliciting packet not yet acknowledged arrived.
    first_unacked_at: Option<Instant>,
    /// The regular ACK waits until then (the arriving train should be in; see [`Self::hold_for_train`]).
    hold: Option<Instant>,
    /// An ACK is owed at once for what the ranges show (a gap opened, a hole filled): never held.
    urgent: bool,
}

impl AckTracker {
    /// `ack_every`: ACK after this many ack-eliciting packets; `max_ack_delay`: or after this long;
    /// `nak_interval`: spacing of the periodic NAK. ACKs every second packet, as RFC 9000 suggests, while
    /// packets come slower than one per `ack_interval / 2`; faster, one ACK per `ack_interval` or per
    /// `ack_every` packets, whichever comes first (see [`Self::with_ack_interval`]).
    pub fn new(ack_every: u32, max_ack_delay: Duration, nak_interval: Duration) -> Self {
        AckTracker {
            ranges: VecDeque::new(),
            largest_received_at: None,
            eliciting_since_ack: 0,
            ack_due: None,
            max_ack_delay,
            ack_every: ack_every.max(1),
            ack_interval: Duration::ZERO,
            last_ack_sent: None,
            nak_interval,
            nak_repeats_left: 0,
            next_nak: None,
            first_unacked_at: None,
            hold: None,
            urgent: false,
        }
    }

    /// With two or more ack-eliciting packets unacknowledged, ACK once `interval` has passed since the last ACK
    /// (zero, the default here: at once, so every second packet). Each ACK wakes the sender; at 100 Mbit/s a
    /// packet arrives every ~110 us, and an ACK per two is 4,500 wake-ups a second.
    pub fn with_ack_interval(mut self, interval: Duration) -> Self {
        self.ack_interval = interval;
        self
    }

    /// The largest packet number received.
    pub fn largest(&self) -> Option<u64> {
        self.ranges.back().map(|r| *r.end())
    }

    /// Records an authenticated packet.
    pub fn on_packet(&mut self, now: Instant, pn: u64, ack_eliciting: bool) {
        self.record(now, pn, ack_eliciting, false);
    }

    /// Records an authenticated packet that carried a tail probe and nothing ack-eliciting: acknowledged at
    /// once if it reveals a gap (the burst before it lost its last packets) or a gap is still fresh (the
    /// NAK is repeated a little after the burst, in case the first was lost), else with the next ACK.
    pub fn on_tail_probe(&mut self, now: Instant, pn: u64) {
        let fresh_gap = self.gap_is_fresh();
        self.record(now, pn, false, true);
        if fresh_gap {
            self.ack_due = Some(now);
            self.urgent = true;
        }
    }

    /// A gap is open and not yet named `NAK_REPEATS` times since it opened.
    fn gap_is_fresh(&self) -> bool {
        self.ranges.len() > 1 && self.nak_repeats_left > 0
    }

    /// Until when the regular ACK is held for the arriving train, if it is.
    pub fn held_until(&self) -> Option<Instant> {
        self.hold.filter(|_| !self.urgent && self.eliciting_since_ack > 0)
    }

    /// The train arriving now should be complete at `train_end` (`None`: no train is arriving, or it stalled):
    /// the regular ACK waits until then, if that is at most `max_hold` after the first packet it leaves
    /// unacknowledged (the caller bounds `max_hold` by `max_ack_delay` and a fraction of the RTT). A later
    /// end, a long train, holds nothing. ACKs for gaps are never held, and nothing is held while a gap is
    /// fresh (not yet named `NAK_REPEATS` times): the ACKs along a train then repeat a NAK that may be lost.
    pub fn hold_for_train(&mut self, now: Instant, train_end: Option<Instant>, max_hold: Duration) {
        let since = self.first_unacked_at.unwrap_or(now);
        let fresh_gap = self.gap_is_fresh();
        self.hold = train_end
            .filter(|&end| !fresh_gap && since.checked_add(max_hold).is_some_and(|limit| end <= limit));
    }

    fn record(&mut self, now: Instant, pn: u64, ack_eliciting: bool, tail_probe: bool) {
        let in_order = self.largest().map_or(pn == 0, |l| l.checked_add(1) == Some(pn));
        self.insert(pn);
        if self.largest() == Some(pn) {
            self.largest_received_at = Some(now);
        }
        if !in_order && (ack_eliciting || tail_probe) {
            // A gap opened or a hole was filled: tell the sender at once. (Packets that carry only ACKs never
            // trigger an ACK by themselves, or two receivers would acknowledge each other's ACKs forever.)
            self.ack_due = Some(now);
            self.urgent = true;
            if self.ranges.len() > 1 {
                self.nak_repeats_left = NAK_REPEATS;
            }
        }
        if ack_eliciting {
            if self.eliciting_since_ack == 0 {
                self.first_unacked_at = Some(now);
            }
            self.eliciting_since_ack += 1;
            let due = if self.eliciting_since_ack >= self.ack_every {
                now
            } else if self.eliciting_since_ack >= 2 {
                let spaced = self.last_ack_sent.map_or(now, |t| t + self.ack_interval);
                spaced.max(now).min(now + self.max_ack_delay)
            } else {
                now + self.max_ack_delay
            };
            self.ack_due = Some(self.ack_due.map_or(due, |d| d.min(due)));
        }
    }

    /// The end of a receive batch (a driver that gathers several datagrams per wake-up, see
    /// `Endpoint::on_receive_batch_end`): what arrived is acknowledged now, not on a timer that would wake the
    /// receiver again for it (a lone packet's `max_ack_delay`), unless an ACK went out less than the ACK
    /// interval ago; then at that interval, as before.
    pub fn on_receive_batch_end(&mut self, now: Instant) {
        if self.eliciting_since_ack == 0 {
            return;
        }
        let due = self.last_ack_sent.map_or(now, |t| t + self.ack_interval).max(now);
        self.ack_due = Some(self.ack_due.map_or(due, |d| d.min(due)));
    }

    fn insert(&mut self, pn: u64) {
        // Fast path: extends the newest range or starts a newer one.
        match self.ranges.back_mut() {
            None => {
                self.ranges.push_back(pn..=pn);
                return;
            }
            Some(last) if last.end().checked_add(1) == Some(pn) => {
                *last = *last.start()..=pn;
                return;
            }
            Some(last) if pn > last.end().saturating_add(1) => {
                self.ranges.push_back(pn..=pn);
                self.trim();
                return;
            }
            _ => {}
        }
        // Slow path: a late packet lands inside the known span.
        let idx = self.ranges.partition_point(|r| *r.end() < pn);
        if let Some(r) = self.ranges.get(idx) {
            if r.contains(&pn) {
                return;
            }
        }
        let joins_prev = idx > 0
            && self
                .ranges
                .get(idx - 1)
                .is_some_and(|r| r.end().checked_add(1) == Some(pn));
        let joins_next = self
            .ranges
            .get(idx)
            .is_some_and(|r| pn.checked_add(1) == Some(*r.start()));
        match (joins_prev, joins_next) {
            (true, true) => {
                if let Some(next) = self.ranges.remove(idx) {
                    if let Some(prev) = self.ranges.get_mut(idx - 1) {
                        *prev = *prev.start()..=*next.end();
                    }
                }
            }
            (true, false) => {
                if let Some(prev) = self.ranges.get_mut(idx - 1) {
                    *prev = *prev.start()..=pn;
                }
            }
            (false, true) => {
                if let Some(next) = self.ranges.get_mut(idx) {
                    *next = pn..=*next.end();
                }
            }
            (false, false) => {
                if idx == 0 && self.ranges.len() >= MAX_ACK_RANGES {
                    return; // older than anything we still report
                }
                self.ranges.insert(idx, pn..=pn);
                self.trim();
            }
        }
    }

    fn trim(&mut self) {
        while self.ranges.len() > MAX_ACK_RANGES {
            self.ranges.pop_front();
        }
    }

    /// When the next ACK should go out, if one is owed.
    pub fn next_deadline(&self) -> Option<Instant> {
        let ack_due = match self.held_until() {
            Some(hold) => self.ack_due.map(|due| due.max(hold)),
            None => self.ack_due,
        };
        match (ack_due, self.next_nak) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True if an ACK should be sent now.
    pub fn wants_ack(&self, now: Instant) -> bool {
        self.next_deadline().is_some_and(|t| t <= now)
    }

    /// Builds the ACK frame for now and marks the ACK as sent.
    pub fn build_ack(&mut self, now: Instant) -> Option<AckFrame> {
        let received_at = self.largest_received_at?;
        let ack = AckFrame {
            ack_delay_us: now.saturating_duration_since(received_at).as_micros() as u64,
            ranges: self.ranges.iter().rev().cloned().collect(),
        };
        self.eliciting_since_ack = 0;
        self.ack_due = None;
        self.first_unacked_at = None;
        self.urgent = false;
        self.last_ack_sent = Some(now);
        if self.ranges.len() > 1 && self.nak_repeats_left > 0 {
            self.nak_repeats_left -= 1;
            self.next_nak = Some(now + self.nak_interval);
        } else {
            self.next_nak = None;
        }
        Some(ack)
    }

    /// Sets the periodic NAK spacing (e.g. from the RTT once known).
    pub fn set_nak_interval(&mut self, interval: Duration) {
        self.nak_interval = interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> AckTracker {
        AckTracker::new(2, Duration::from_millis(5), Duration::from_millis(20))
    }

    #[test]
    fn a_receive_batch_ends_with_an_ack_unless_one_went_out_within_the_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut t =
            AckTracker::new(8, Duration::from_millis(5), Duration::from_millis(20)).with_ack_interval(ms);
        // Nothing received: nothing owed.
        t.on_receive_batch_end(t0);
        assert_eq!(t.next_deadline(), None);
        // A lone packet waits for max_ack_delay, unless its batch ended: then it is acknowledged at once.
        t.on_packet(t0, 0, true);
        assert_eq!(t.next_deadline(), Some(t0 + 5 * ms));
        t.on_receive_batch_end(t0);
        assert!(t.wants_ack(t0));
        t.build_ack(t0).unwrap();
        // The next batch, 300 us after that ACK: its ACK waits for the interval.
        let now = t0 + Duration::from_micros(300);
        t.on_packet(now, 1, true);
        t.on_receive_batch_end(now);
        assert_eq!(t.next_deadline(), Some(t0 + ms));
        // Packets that elicit no ACK owe none.
        let mut quiet = tracker();
        quiet.on_packet(t0, 0, false);
        quiet.on_receive_batch_end(t0);
        assert_eq!(quiet.next_deadline(), None);
    }

    #[test]
    fn fast_packets_share_an_ack_per_interval_and_slow_ones_get_one_per_two() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut t =
            AckTracker::new(8, Duration::from_millis(5), Duration::from_millis(20)).with_ack_interval(ms);
        // The first two packets: no ACK sent yet, so the second is acknowledged at once.
        t.on_packet(t0, 0, true);
        t.on_packet(t0, 1, true);
        assert!(t.wants_ack(t0));
        t.build_ack(t0).unwrap();
        // Packets 100 us apart: the next ACK is due 1 ms after the last, not at the second packet...
        let mut pn = 2;
        let mut now = t0;
        for _ in 0..4 {
            now += Duration::from_micros(100);
            t.on_packet(now, pn, true);
            pn += 1;
        }
        assert!(!t.wants_ack(now));
        assert_eq!(t.next_deadline(), Some(t0 + ms));
        // ...or at the 8th packet, whichever is first.
        for _ in 0..4 {
            now += Duration::from_micros(10);
            t.on_packet(now, pn, true);
            pn += 1;
        }
        assert!(t.wants_ack(now), "8 packets");
        t.build_ack(now).unwrap();
        // Packets 3 ms apart (a squeezed path): every second one is acknowledged at once.
        now += 3 * ms;
        t.on_packet(now, pn, true);
        assert!(!t.wants_ack(now));
        now += 3 * ms;
        t.on_packet(now, pn + 1, true);
        assert!(t.wants_ack(now));
    }

    #[test]
    fn a_short_trains_ack_waits_for_its_end_but_a_gap_or_a_long_train_does_not() {
        let t0 = Instant::now();
        let us = Duration::from_micros(1);
        let ms = Duration::from_millis(1);
        let max_hold = 5 * ms;
        let mut t = AckTracker::new(8, 5 * ms, 20 * ms).with_ack_interval(ms);
        // A 16-packet train, 100 us apart, expected in at t0 + 2.5 ms: nothing is due before then, neither the
        // 8th packet nor the ACK interval, and the ACK goes when the train is complete (the hold is cleared).
        let train_end = Some(t0 + 2_500 * us);
        let mut now = t0;
        for pn in 0..15 {
            now = t0 + 100 * us * pn as u32;
            t.on_packet(now, pn, true);
            t.hold_for_train(now, train_end, max_hold);
            t.on_receive_batch_end(now);
            assert!(!t.wants_ack(now), "packet {pn} of a short train");
        }
        assert_eq!(t.held_until(), train_end);
        assert_eq!(
            t.next_deadline(),
            train_end,
            "a stalled train is acknowledged at its expected end"
        );
        now += 100 * us;
        t.on_packet(now, 15, true);
        t.hold_for_train(now, None, max_hold);
        assert!(t.wants_ack(now), "the train is in");
        assert_eq!(t.build_ack(now).map(|a| a.ranges), Some(vec![0..=15]));
        // The next train loses a packet: the gap is named at once, and while it is fresh nothing is held.
        now += 10 * ms;
        let train_end = Some(now + 2 * ms);
        t.on_packet(now, 16, true);
        t.hold_for_train(now, train_end, max_hold);
        t.on_packet(now, 18, true);
        t.hold_for_train(now, train_end, max_hold);
        assert!(t.wants_ack(now), "a gap is never held");
        t.build_ack(now);
        t.on_packet(now + 100 * us, 19, true);
        t.on_packet(now + 200 * us, 20, true);
        t.hold_for_train(now + 200 * us, train_end, max_hold);
        assert_eq!(t.held_until(), None, "no hold while the gap is fresh");
        assert!(t.wants_ack(now + ms), "the ACK interval applies again");
        // A long train (its end further than the longest hold from its first unacknowledged packet) is
        // acknowledged along the way, as before.
        let mut long = AckTracker::new(8, 5 * ms, 20 * ms).with_ack_interval(ms);
        for pn in 0..8 {
            let at = t0 + 100 * us * pn as u32;
            long.on_packet(at, pn, true);
            long.hold_for_train(at, Some(t0 + 20 * ms), max_hold);
        }
        assert_eq!(long.held_until(), None);
        assert!(long.wants_ack(t0 + 700 * us), "8 packets");
    }

    #[test]
    fn in_order_packets_are_acked_every_second_packet_or_after_the_delay() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.on_packet(t0, 0, true);
        assert!(!t.wants_ack(t0));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(5)));
        t.on_packet(t0, 1, true);
        assert!(t.wants_ack(t0));
        let ack = t.build_ack(t0).unwrap();
        assert_eq!(ack.ranges, vec![0..=1]);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_tail_probe_is_acknowledged_at_once_only_when_it_reveals_a_gap() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.on_packet(t0, 0, true);
        t.on_packet(t0, 1, true);
        assert!(t.build_ack(t0).is_some());
        // In order: nothing due because of it, and the next ACK covers it.
        t.on_tail_probe(t0, 2);
        assert_eq!(
            t.next_deadline(),
            None,
            "a probe after a whole burst asks for nothing"
        );
        assert!(!t.wants_ack(t0 + Duration::from_secs(1)));
        t.on_packet(t0, 3, true);
        t.on_packet(t0, 4, true);
        let ack = t.build_ack(t0).expect("two eliciting packets");
        assert_eq!(ack.largest(), Some(4));
        assert_eq!(
            ack.ranges.len(),
            1,
            "the probe's number is acknowledged with them"
        );
        // Packet 5, the burst's last, is lost; the probe (6) reveals it at once.
        t.on_tail_probe(t0, 6);
        assert!(
            t.wants_ack(t0),
            "a probe that reveals a gap is acknowledged at once"
        );
        let ack = t.build_ack(t0).expect("a NAK");
        assert_eq!(ack.largest(), Some(6));
        assert_eq!(ack.ranges.len(), 2, "5 is named missing");
        // While that gap is fresh, the next burst's probe repeats the NAK at once.
        t.on_packet(t0, 7, true);
        t.on_packet(t0, 8, true);
        t.build_ack(t0).expect("two eliciting packets");
        t.on_tail_probe(t0, 9);
        assert!(t.wants_ack(t0), "a fresh gap is named again when a probe comes");
    }

    #[test]
    fn a_gap_is_nakked_at_once_and_repeated() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.on_packet(t0, 0, true);
        t.build_ack(t0);
        t.on_packet(t0, 2, true);
        assert!(t.wants_ack(t0), "gap must trigger an immediate ACK");
        assert_eq!(t.build_ack(t0).unwrap().ranges, vec![2..=2, 0..=0]);
        let mut repeats = 0;
        let mut now = t0;
        while let Some(next) = t.next_deadline() {
            now = next;
            t.build_ack(now).unwrap();
            repeats += 1;
        }
        assert_eq!(repeats, NAK_REPEATS);
        assert!(now - t0 >= Duration::from_millis(20));
        t.on_packet(now, 1, true);
        assert!(t.wants_ack(now), "a filled hole is acked at once");
        assert_eq!(t.build_ack(now).unwrap().ranges, vec![0..=2]);
    }

    #[test]
    fn ranges_merge_and_stay_bounded() {
        let t0 = Instant::now();
        let mut t = tracker();
        for pn in (0..1000).step_by(2) {
            t.on_packet(t0, pn, true);
        }
        assert_eq!(t.ranges.len(), MAX_ACK_RANGES);
        for pn in (1..1000).step_by(2) {
            t.on_packet(t0, pn, false);
        }
        let ack = t.build_ack(t0).unwrap();
        assert_eq!(ack.largest(), Some(999));
        assert!(ack.ranges.len() <= MAX_ACK_RANGES);
        for w in ack.ranges.windows(2) {
            assert!(*w[1].end() + 1 < *w[0].start());
        }
        t.on_packet(t0, 998, true); // duplicate: no change
        assert_eq!(t.largest(), Some(999));
    }
}
