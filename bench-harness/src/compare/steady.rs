//! CPU over the steady part of a live run, next to the whole run's.
//!
//! The whole run's CPU per GB charges a connection's one-off costs to a short stream: its handshake, its
//! buffers' first page faults and, for popline, startup priming (a cold connection fills the window with
//! padding until the controller has found the path's rate; on `lossy-1pct` that is about 10 MB, more than a
//! 12 s stream of 6 Mbit/s carries). A PoP link pays those once a connection, and lives for days, so what it
//! costs per GB is the steady part. A sampler thread reads the variant's CPU (its threads and child processes,
//! see [`crate::cpu::variant_cpu_seconds`]) and the machine's at two instants fixed from the run's start:
//! [`SETTLE`] after the live warm-up, and the end of the judged window, both counted from the run's start (the
//! same instants for every variant). A variant whose stream starts well after the run does (SRT, which waits
//! for its connection; `popline-primed`, which primes first) has its window earlier in its stream: it may hold
//! part of its warm-up. The bytes are those of the frames whose last byte arrived between the two instants.

use super::MachineCpu;
use anyhow::{anyhow, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long after the live warm-up the steady window starts: past the connection's setup and priming.
pub const SETTLE: Duration = Duration::from_secs(1);
/// The sampler's thread name (its own CPU is not the variant's).
const SAMPLER: &str = "cpu-window";
/// How often a waiting sampler looks whether the run was given up.
const POLL: Duration = Duration::from_millis(50);

/// What the sampler read over the steady window.
#[derive(Debug, Clone, Copy)]
pub struct SteadyCpu {
    /// The window's start.
    pub from: Instant,
    /// The window's end.
    pub to: Instant,
    /// CPU seconds of the variant's threads and processes in the window.
    pub own_s: f64,
    /// The machine's charged CPU seconds in the window (as the whole run's machine measure), less the
    /// sampler's own.
    pub machine_s: f64,
}

impl SteadyCpu {
    /// CPU seconds per GB of the bytes of `delivered` (arrival, length) that arrived in the window: (own,
    /// machine); `None` when none did.
    pub fn per_gb(&self, delivered: &[(Instant, usize)]) -> Option<(f64, f64)> {
        let bytes: usize = delivered
            .iter()
            .filter(|(at, _)| *at >= self.from && *at < self.to)
            .map(|(_, len)| *len)
            .sum();
        let gb = bytes as f64 / 1e9;
        (bytes > 0).then(|| (self.own_s / gb, self.machine_s / gb))
    }
}

/// A running sampler; [`SteadySampler::finish`] collects it.
#[derive(Debug)]
pub struct SteadySampler {
    handle: JoinHandle<Result<Option<SteadyCpu>>>,
    give_up: Arc<AtomicBool>,
}

impl SteadySampler {
    /// Starts sampling the window `[epoch + warmup + SETTLE, epoch + warmup + window)`; the calling thread
    /// (the one that runs the variant and only waits for it) is not the variant's. `None` when the window is
    /// no longer than [`SETTLE`].
    pub fn start(epoch: Instant, warmup: Duration, window: Duration) -> Result<Option<SteadySampler>> {
        let Some(length) = window.checked_sub(SETTLE).filter(|l| !l.is_zero()) else {
            return Ok(None);
        };
        let from = epoch + warmup + SETTLE;
        let to = from + length;
        let caller = nix::unistd::gettid().as_raw();
        let give_up = Arc::new(AtomicBool::new(false));
        let flag = give_up.clone();
        let handle = std::thread::Builder::new()
            .name(SAMPLER.to_string())
            .spawn(move || sample(from, to, caller, &flag))?;
        Ok(Some(SteadySampler { handle, give_up }))
    }

    /// Waits for the window's end and returns what was read (`None` only after [`Self::abandon`]).
    pub fn finish(self) -> Result<Option<SteadyCpu>> {
        self.handle
            .join()
            .map_err(|_| anyhow!("the CPU sampler panicked"))?
    }

    /// Stops a sampler whose run failed, without waiting for its window.
    pub fn abandon(self) {
        self.give_up.store(true, Ordering::Release);
        let _ = self.handle.join();
    }
}

/// Sleeps until `at` or until `give_up`; true if `at` was reached.
fn sleep_until(at: Instant, give_up: &AtomicBool) -> bool {
    loop {
        if give_up.load(Ordering::Acquire) {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        std::thread::sleep((at - now).min(POLL));
    }
}

fn sample(from: Instant, to: Instant, caller: i32, give_up: &AtomicBool) -> Result<Option<SteadyCpu>> {
    let me = nix::unistd::gettid().as_raw();
    let skip_tids = [caller, me];
    let read = || -> Result<(f64, MachineCpu, f64)> {
        Ok((
            crate::cpu::variant_cpu_seconds(&["emu-"], &skip_tids)?,
            MachineCpu::read()?,
            crate::cpu::thread_cpu_seconds()?,
        ))
    };
    if !sleep_until(from, give_up) {
        return Ok(None);
    }
    let (own0, machine0, mine0) = read()?;
    if !sleep_until(to, give_up) {
        return Ok(None);
    }
    let (own1, machine1, mine1) = read()?;
    Ok(Some(SteadyCpu {
        from,
        to,
        own_s: (own1 - own0).max(0.0),
        machine_s: (machine1.since(&machine0).charged_s() - (mine1 - mine0)).max(0.0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_frames_that_arrived_in_the_window_count() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let w = SteadyCpu {
            from: t + ms(1000),
            to: t + ms(2000),
            own_s: 0.5,
            machine_s: 1.0,
        };
        let delivered = [
            (t + ms(999), 7_000_000),
            (t + ms(1000), 250_000_000),
            (t + ms(1999), 250_000_000),
            (t + ms(2000), 9_000_000),
        ];
        assert_eq!(w.per_gb(&delivered), Some((1.0, 2.0)));
        assert_eq!(w.per_gb(&delivered[..1]), None);
    }

    #[test]
    fn a_window_no_longer_than_the_settling_time_is_not_sampled() {
        let none = SteadySampler::start(Instant::now(), Duration::ZERO, SETTLE).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn a_sampler_reads_the_window_and_an_abandoned_one_returns_at_once() {
        let start = Instant::now();
        let s = SteadySampler::start(start, Duration::ZERO, SETTLE + Duration::from_millis(100))
            .unwrap()
            .unwrap();
        let w = s.finish().unwrap().unwrap();
        assert_eq!(w.from, start + SETTLE);
        assert!(Instant::now() >= w.to && w.own_s >= 0.0 && w.machine_s >= 0.0);
        let s = SteadySampler::start(Instant::now(), Duration::from_secs(60), Duration::from_secs(60))
            .unwrap()
            .unwrap();
        let t = Instant::now();
        s.abandon();
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
