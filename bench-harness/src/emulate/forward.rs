//! The forwarder: per direction, packets read from one TUN end go through a [`transport::sim::Link`] driven by
//! the wall clock and are written to the other end when the link delivers them.
//!
//! Each direction has two threads sharing the link under a mutex: an ingress thread that blocks reading the
//! source TUN device and offers each packet at `Instant::now()`, and an egress thread that sleeps on a condition
//! variable until the link's next delivery time (nanosecond timeout, so delivery is late only by the kernel's
//! timer slack) and writes what is due. The ingress thread wakes the egress thread only when a packet becomes
//! due earlier than what it is waiting for, so a steady stream costs no wake-up per packet. Memory is bounded
//! by the profile's packet limit plus the link's byte queue.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use transport::sim::{Link, LinkConfig, LinkStats};

/// How often a blocked thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Read buffer: larger than any MTU a TUN device without offloads can have.
const READ_BUF: usize = 65_536;

/// Counters of one direction, when the emulator stops.
#[derive(Debug, Clone, Default)]
pub struct DirectionStats {
    /// `a2b` or `b2a`.
    pub name: &'static str,
    /// The link model's counters.
    pub link: LinkStats,
    /// Packets dropped because the direction already held its limit.
    pub limit_drops: u64,
    /// Packets that could not be written to the destination TUN device.
    pub write_errors: u64,
    /// Failed reads from the source TUN device (other than timeouts).
    pub read_errors: u64,
    /// 95th percentile of the time packets waited in the bottleneck queue (zero without a rate limit): the
    /// path's 95th-percentile one-way delay is this plus the direction's propagation delay (and jitter).
    pub queue_delay_p95: Duration,
}

/// What the egress thread is waiting for, so ingress knows whether a new packet needs a wake-up.
#[derive(Debug, Clone, Copy)]
enum Waiting {
    /// Not waiting: it will look at the link before it sleeps again.
    No,
    /// Until this instant (the link's next delivery when it went to sleep).
    Until(Instant),
    /// For any packet (the link was empty).
    AnyPacket,
}

struct State {
    link: Link<Vec<u8>>,
    waiting: Waiting,
    limit_drops: u64,
    read_errors: u64,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking holder cannot leave the link half-updated in a way that matters to a test lab.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running emulator; stops and joins its threads when dropped (or by [`Emulator::stop`]).
pub struct Emulator {
    stop: Arc<AtomicBool>,
    directions: Vec<Direction>,
}

/// One direction's shared link and threads.
struct Direction {
    name: &'static str,
    shared: Arc<Shared>,
    ingress: JoinHandle<()>,
    /// Returns the count of failed writes.
    egress: JoinHandle<u64>,
}

impl Emulator {
    /// Starts forwarding between `a` and `b` with a profile's two directions, seed and packet limit.
    pub fn for_profile(a: tun::Device, b: tun::Device, profile: &super::Profile) -> Result<Emulator> {
        Emulator::start(
            a,
            b,
            profile.a_to_b.clone(),
            profile.b_to_a.clone(),
            profile.seed,
            profile.limit_packets,
        )
    }

    /// Starts forwarding between the TUN ends `a` and `b`: `a_to_b` shapes packets read from `a` and written to
    /// `b`, `b_to_a` the reverse. `seed` seeds the A-to-B link, `seed + 1` the other; each direction holds at most
    /// `limit_packets` packets.
    pub fn start(
        a: tun::Device,
        b: tun::Device,
        a_to_b: LinkConfig,
        b_to_a: LinkConfig,
        seed: u64,
        limit_packets: usize,
    ) -> Result<Emulator> {
        let (read_a, write_a) = a.split();
        let (read_b, write_b) = b.split();
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let mut emulator = Emulator {
            stop: stop.clone(),
            directions: Vec::new(),
        };
        for (name, config, seed, reader, writer) in [
            ("a2b", a_to_b, seed, read_a, write_b),
            ("b2a", b_to_a, seed.wrapping_add(1), read_b, write_a),
        ] {
            let shared = Arc::new(Shared {
                state: Mutex::new(State {
                    link: Link::new(config, seed, start),
                    waiting: Waiting::No,
                    limit_drops: 0,
                    read_errors: 0,
                }),
                wake: Condvar::new(),
            });
            let ingress = {
                let (shared, stop) = (shared.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("emu-{name}-in"))
                    .spawn(move || ingress(reader, &shared, &stop, limit_packets))
                    .context("spawning an ingress thread")?
            };
            let egress = {
                let (shared, stop) = (shared.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("emu-{name}-out"))
                    .spawn(move || egress(writer, &shared, &stop))
                    .context("spawning an egress thread")?
            };
            emulator.directions.push(Direction {
                name,
                shared,
                ingress,
                egress,
            });
        }
        Ok(emulator)
    }

    /// Stops forwarding, joins the threads and returns each direction's counters.
    pub fn stop(mut self) -> Result<Vec<DirectionStats>> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<Vec<DirectionStats>> {
        self.stop.store(true, Ordering::SeqCst);
        for d in &self.directions {
            d.shared.wake.notify_all();
        }
        let mut stats = Vec::new();
        let mut failed = None;
        for Direction {
            name,
            shared,
            ingress,
            egress,
        } in self.directions.drain(..)
        {
            if ingress.join().is_err() {
                failed = Some(anyhow!("the {name} ingress thread panicked"));
            }
            let write_errors = egress.join().unwrap_or_else(|_| {
                failed = Some(anyhow!("the {name} egress thread panicked"));
                0
            });
            let state = shared.lock();
            stats.push(DirectionStats {
                name,
                link: state.link.stats().clone(),
                limit_drops: state.limit_drops,
                write_errors,
                read_errors: state.read_errors,
                queue_delay_p95: state.link.queue_delay().percentile(95.0),
            });
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if !self.directions.is_empty() {
            let _ = self.shutdown();
        }
    }
}

/// Reads packets from the source device and offers them to the link.
fn ingress(reader: tun::Reader, shared: &Shared, stop: &AtomicBool, limit_packets: usize) {
    let mut buf = vec![0u8; READ_BUF];
    while !stop.load(Ordering::Relaxed) {
        let n = match reader.recv_timeout(&mut buf, STOP_POLL) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::TimedOut | ErrorKind::Interrupted | ErrorKind::WouldBlock
                ) =>
            {
                continue
            }
            Err(_) => {
                // The device went away (its namespace was deleted) or a transient error: count, back off.
                shared.lock().read_errors += 1;
                std::thread::sleep(STOP_POLL);
                continue;
            }
        };
        let now = Instant::now();
        let packet = buf[..n].to_vec();
        let mut state = shared.lock();
        if state.link.packets_in_flight() >= limit_packets {
            state.limit_drops += 1;
            continue;
        }
        state.link.send(now, n, packet);
        let wake = match (state.waiting, state.link.next_delivery()) {
            (Waiting::AnyPacket, Some(_)) => true,
            (Waiting::Until(t), Some(next)) => next < t,
            _ => false,
        };
        if wake {
            state.waiting = Waiting::No;
            drop(state);
            shared.wake.notify_one();
        }
    }
}

/// Writes packets to the destination device as the link delivers them; returns the count of failed writes.
fn egress(mut writer: tun::Writer, shared: &Shared, stop: &AtomicBool) -> u64 {
    let mut write_errors = 0u64;
    let mut due: Vec<Vec<u8>> = Vec::new();
    let mut state = shared.lock();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Some((_, packet)) = state.link.deliver(now) {
            due.push(packet);
        }
        if !due.is_empty() {
            drop(state);
            for packet in due.drain(..) {
                if writer.write(&packet).is_err() {
                    write_errors += 1;
                }
            }
            state = shared.lock();
            continue;
        }
        let timeout = match state.link.next_delivery() {
            Some(t) => {
                state.waiting = Waiting::Until(t);
                t.saturating_duration_since(now).min(STOP_POLL)
            }
            None => {
                state.waiting = Waiting::AnyPacket;
                STOP_POLL
            }
        };
        state = match shared.wake.wait_timeout(state, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
        state.waiting = Waiting::No;
    }
    write_errors
}
