//! Threads that live in one of the lab's network namespaces.
//!
//! A socket belongs to the network namespace its creating thread was in, and `setns(CLONE_NEWNET)` moves only
//! the calling thread; so each side of a variant runs on a thread of this process that enters namespace A or B
//! first and creates its sockets after. Sender and receiver then share one process and one `CLOCK_MONOTONIC`:
//! a receiver compares an [`std::time::Instant`] the sender stamped directly, with no clock sync. This is
//! chosen over re-executing `popline-bench` under `ip netns exec` because results (frame arrival times, byte
//! counts) stay in memory, and each side's CPU time is its own thread's.

use crate::cpu::thread_cpu_seconds;
use anyhow::{anyhow, Context, Result};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::thread::{self, JoinHandle};

/// What a namespace thread returns: the closure's value and the CPU seconds the thread used.
pub type Joined<T> = JoinHandle<Result<(T, f64)>>;

/// Moves the calling thread into network namespace `ns` (a name under `/var/run/netns`, as `ip netns` makes).
pub fn enter(ns: &str) -> Result<()> {
    let path = format!("/var/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering network namespace {ns}"))
}

/// Spawns a thread named `name` that enters namespace `ns` and runs `f`; the thread's own CPU time (user +
/// system, from its start to `f`'s end) comes back with `f`'s result.
pub fn spawn_in<T, F>(ns: &str, name: &str, f: F) -> Result<Joined<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let ns = ns.to_string();
    thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            enter(&ns)?;
            let value = f()?;
            Ok((value, thread_cpu_seconds()?))
        })
        .with_context(|| format!("spawning thread {name}"))
}

/// Joins a namespace thread: its value and CPU seconds, or its error (a panic becomes an error naming it).
pub fn join<T>(handle: Joined<T>, what: &str) -> Result<(T, f64)> {
    handle
        .join()
        .map_err(|_| anyhow!("the {what} thread panicked"))?
        .with_context(|| what.to_string())
}
