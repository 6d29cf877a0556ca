//! CPU lists (`--server-cpus 1`, `0-3,6`) and pinning the load generator away from the server.
//!
//! The server runs under `taskset -c <server CPUs>`; this process pins itself to every other CPU it may run
//! on, before it starts any thread, so that the players, the publisher and the runtime's workers inherit the
//! mask and never compete with the server for its CPUs. On a 2-CPU machine that is one CPU each: the server's
//! CPU use is then measured against exactly the CPUs it owns, and a server at 100% of them is saturated,
//! not starved by its own load.

use anyhow::{bail, Context, Result};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Parses a CPU list as `taskset -c` takes it: `1`, `0,2`, `0-3,6`. Sorted, without duplicates.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: usize = lo.parse().with_context(|| format!("bad CPU {lo:?} in {s:?}"))?;
        let hi: usize = hi.parse().with_context(|| format!("bad CPU {hi:?} in {s:?}"))?;
        if hi < lo || hi >= CpuSet::count() {
            bail!("bad CPU range {part:?} in {s:?}");
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        bail!("empty CPU list {s:?}");
    }
    Ok(cpus)
}

/// Formats a CPU list for `taskset -c`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// The CPUs this thread may run on now.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Pins the calling thread (and every thread it starts later) to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> Result<()> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).with_context(|| format!("CPU {c}"))?;
    }
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPUs {cpus:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_taskset() {
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert_eq!(parse_cpu_list("0-3,6,2").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(format_cpu_list(&[0, 2]), "0,2");
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(!allowed_cpus().unwrap().is_empty());
    }
}
