//! [`FlushSchedule`]: when a core writes its viewers under `rtmp.write_coalesce_ms`.
//!
//! Coalescing gathers a viewer's frames for an interval and writes them at once. If every viewer of a core
//! were written at the same instant, the core would spend that instant in one burst of thousands of writes
//! (tens of milliseconds at 10,000 viewers), during which a publisher's next frame and new viewers' handshakes
//! wait, and the burst's last viewer gets its frames that much later. So a core's viewers are split into
//! [`FLUSH_GROUPS`] groups by their slot, and each group is written on its own phase of the interval: group
//! `g` at `epoch + (g / FLUSH_GROUPS + n) x interval`. The core's writes come in [`FLUSH_GROUPS`] smaller
//! bursts an interval, each viewer is still written once an interval, and a frame still waits at most one
//! interval. A group with nothing to write keeps no schedule: the first frame after an idle spell goes at
//! once, and its group then returns to its phase.

use crate::node::clients::Token;
use std::time::{Duration, Instant};

/// Phases an interval is split into.
pub const FLUSH_GROUPS: usize = 8;

/// One group's viewers waiting for its phase.
#[derive(Debug)]
struct Group {
    waiting: Vec<Token>,
    /// Its next phase (in the past: the next write goes at once).
    next: Instant,
}

/// The viewers of a core waiting to be written, by group, and when each group is due.
#[derive(Debug)]
pub struct FlushSchedule {
    interval: Duration,
    epoch: Instant,
    groups: Vec<Group>,
}

impl FlushSchedule {
    /// A schedule writing each viewer once per `interval` (zero: no coalescing, [`FlushSchedule::coalesces`]
    /// is false and the caller writes at once), with phases counted from `epoch`.
    pub fn new(interval: Duration, epoch: Instant) -> FlushSchedule {
        FlushSchedule {
            interval,
            epoch,
            groups: (0..FLUSH_GROUPS)
                .map(|_| Group {
                    waiting: Vec::new(),
                    next: epoch,
                })
                .collect(),
        }
    }

    /// Whether viewers wait for their phase (a non-zero interval).
    pub fn coalesces(&self) -> bool {
        !self.interval.is_zero()
    }

    /// Lists viewer `token` for its group's next phase (the caller lists each token once until it is taken).
    pub fn push(&mut self, token: Token) {
        let g = group_of(token);
        if let Some(group) = self.groups.get_mut(g) {
            group.waiting.push(token);
        }
    }

    /// Moves the viewers of every group due at `now` into `out`, and sets those groups' next phase.
    pub fn take_due(&mut self, now: Instant, out: &mut Vec<Token>) {
        for (g, group) in self.groups.iter_mut().enumerate() {
            if group.waiting.is_empty() || now < group.next {
                continue;
            }
            out.append(&mut group.waiting);
            group.next = next_phase(self.epoch, self.interval, g, now);
        }
    }

    /// When the next group with viewers waiting is due (`None`: none waits).
    pub fn next_due(&self) -> Option<Instant> {
        self.groups
            .iter()
            .filter(|g| !g.waiting.is_empty())
            .map(|g| g.next)
            .min()
    }
}

/// The group of a token: its slot index (the low 32 bits) modulo [`FLUSH_GROUPS`].
fn group_of(token: Token) -> usize {
    (token & 0xffff_ffff) as usize % FLUSH_GROUPS
}

/// Group `g`'s first phase strictly after `now`: `epoch + (g / FLUSH_GROUPS + n) x interval`.
fn next_phase(epoch: Instant, interval: Duration, g: usize, now: Instant) -> Instant {
    let interval_ns = interval.as_nanos().max(1);
    let offset_ns = interval_ns * g as u128 / FLUSH_GROUPS as u128;
    let since_ns = now.saturating_duration_since(epoch).as_nanos();
    let n = if since_ns < offset_ns {
        0
    } else {
        (since_ns - offset_ns) / interval_ns + 1
    };
    let at_ns = offset_ns + n * interval_ns;
    let at = Duration::from_nanos(u64::try_from(at_ns).unwrap_or(u64::MAX));
    epoch.checked_add(at).unwrap_or(now + interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn each_group_is_written_on_its_own_phase_once_an_interval() {
        let t0 = Instant::now();
        let mut s = FlushSchedule::new(80 * MS, t0);
        let mut out = Vec::new();
        // Two viewers in group 1 and one in group 2 (phases 10 and 20 ms into each 80 ms interval).
        for token in [1, 9, 2] {
            s.push(token);
        }
        // Idle until now: everyone waiting goes at once.
        s.take_due(t0 + 35 * MS, &mut out);
        assert_eq!(out, vec![1, 9, 2]);
        out.clear();
        for token in [1, 9, 2] {
            s.push(token);
        }
        assert_eq!(s.next_due(), Some(t0 + 90 * MS), "group 1's next phase");
        s.take_due(t0 + 89 * MS, &mut out);
        assert!(out.is_empty(), "not due yet: {out:?}");
        s.take_due(t0 + 90 * MS, &mut out);
        assert_eq!(out, vec![1, 9], "group 1 alone");
        out.clear();
        assert_eq!(s.next_due(), Some(t0 + 100 * MS), "group 2's phase");
        s.take_due(t0 + 100 * MS, &mut out);
        assert_eq!(out, vec![2]);
        assert_eq!(s.next_due(), None, "nothing waits");
        // A late loop pass keeps the phase: group 1, written at 175 (due 170), is next due at 250.
        out.clear();
        s.push(1);
        s.take_due(t0 + 175 * MS, &mut out);
        assert_eq!(out, vec![1]);
        s.push(1);
        assert_eq!(s.next_due(), Some(t0 + 250 * MS));
    }

    #[test]
    fn a_token_s_group_is_its_slot_whatever_its_generation() {
        assert_eq!(group_of(3), 3);
        assert_eq!(group_of((7 << 32) | 3), 3);
        assert_eq!(group_of(FLUSH_GROUPS as u64 + 5), 5);
    }

    #[test]
    fn a_zero_interval_does_not_coalesce() {
        let t0 = Instant::now();
        assert!(!FlushSchedule::new(Duration::ZERO, t0).coalesces());
        assert!(FlushSchedule::new(MS, t0).coalesces());
        assert!(next_phase(t0, Duration::ZERO, 3, t0 + MS) > t0);
    }
}
