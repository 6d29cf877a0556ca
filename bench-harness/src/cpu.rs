//! CPU time of this process, of the calling thread, or of another process.
//!
//! This process and the calling thread are read with `clock_gettime` on the CPU-time clocks (through `nix`,
//! safe), which the kernel brings up to date from its nanosecond run-time accounting on each call: a cheap
//! thread (a kernel-TCP sender moving a few megabytes) does not read as zero. (`getrusage` does not do that
//! update and, on a tick-accounted kernel, reads a fresh thread's first milliseconds as zero.) Other processes and the machine are
//! read from `/proc/.../stat`, whose resolution is one clock tick: `USER_HZ`, 100 on every mainstream Linux
//! architecture, so 10 ms; the benchmarks run for seconds, which keeps that error under a percent.

use anyhow::{anyhow, Context, Result};
use nix::time::{clock_gettime, ClockId};
use std::collections::HashMap;

/// Clock ticks per second of the `utime`/`stime` fields (`USER_HZ`; `sysconf(_SC_CLK_TCK)` needs `unsafe`).
const USER_HZ: f64 = 100.0;

/// User plus system CPU seconds used so far by every thread of this process (living or exited).
pub fn process_cpu_seconds() -> Result<f64> {
    cpu_clock_seconds(ClockId::CLOCK_PROCESS_CPUTIME_ID).context("clock_gettime(CLOCK_PROCESS_CPUTIME_ID)")
}

/// User plus system CPU seconds used so far by the calling thread.
pub fn thread_cpu_seconds() -> Result<f64> {
    cpu_clock_seconds(ClockId::CLOCK_THREAD_CPUTIME_ID).context("clock_gettime(CLOCK_THREAD_CPUTIME_ID)")
}

/// Seconds of a CPU-time clock.
fn cpu_clock_seconds(clock: ClockId) -> Result<f64> {
    let t = clock_gettime(clock)?;
    Ok(t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

/// User plus system CPU seconds used so far by every thread of process `pid` (e.g. a child this process
/// started); read it before the process is reaped.
pub fn pid_cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// Busy CPU seconds of the whole machine so far, every CPU together: the `cpu` line of `/proc/stat` (user,
/// nice, system, irq, softirq; not idle, iowait or steal). Softirq work counts here wherever it ran (in any
/// thread's context, in `ksoftirqd`, or interrupting the idle task), which per-thread times miss.
pub fn machine_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_machine_busy_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// User and system CPU seconds so far of this process's living threads whose name starts with `prefix`
/// (`/proc/self/task/*/comm`), e.g. the link emulator's `emu-` threads.
pub fn threads_cpu_seconds(prefix: &str) -> Result<(f64, f64)> {
    let mut user = 0u64;
    let mut system = 0u64;
    for_each_thread(|dir, _, comm| {
        if !comm.trim_end().starts_with(prefix) {
            return Ok(());
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            return Ok(());
        };
        let (u, s) = parse_stat_user_system(&stat)?;
        user += u;
        system += s;
        Ok(())
    })?;
    Ok((user as f64 / USER_HZ, system as f64 / USER_HZ))
}

/// Calls `f` with the directory, id and name of each living thread of this process (`/proc/self/task`); a
/// thread that exits between the listing and the read of its name is skipped.
fn for_each_thread(mut f: impl FnMut(&std::path::Path, Option<i32>, &str) -> Result<()>) -> Result<()> {
    for entry in std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        let dir = entry?.path();
        let tid = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i32>().ok());
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        f(&dir, tid, &comm)?;
    }
    Ok(())
}

/// Calls `f` with the pid and the `stat` line of each process on the machine (`/proc/<pid>/stat`); a
/// process that exits between the listing and the read is skipped.
fn for_each_process(mut f: impl FnMut(u32, &str)) -> Result<()> {
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        f(pid, &stat);
    }
    Ok(())
}

/// CPU seconds so far of this process's living threads, but those whose name starts with one of `skip_names`
/// or whose id is in `skip_tids` (each thread's `schedstat` run time, in nanoseconds), plus those of this
/// process's child processes (`stat`, in ticks): what a variant's threads and processes have used, read while
/// they run (a thread's own clock can only be read by itself).
pub fn variant_cpu_seconds(skip_names: &[&str], skip_tids: &[i32]) -> Result<f64> {
    let mut ns = 0u64;
    for_each_thread(|dir, tid, comm| {
        if tid.is_some_and(|t| skip_tids.contains(&t)) || skip_names.iter().any(|p| comm.starts_with(p)) {
            return Ok(());
        }
        if let Ok(schedstat) = std::fs::read_to_string(dir.join("schedstat")) {
            ns += parse_schedstat_run_ns(&schedstat)?;
        }
        Ok(())
    })?;
    let me = std::process::id();
    let mut ticks = 0u64;
    for_each_process(|_, stat| {
        if let Ok((ppid, _, user, system)) = parse_stat_owner(stat) {
            if ppid == me {
                ticks += user + system;
            }
        }
    })?;
    Ok(ns as f64 / 1e9 + ticks as f64 / USER_HZ)
}

/// The run time (nanoseconds on a CPU) of a task's `schedstat`: its first field.
fn parse_schedstat_run_ns(schedstat: &str) -> Result<u64> {
    schedstat
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("empty schedstat"))?
        .parse::<u64>()
        .context("schedstat run time")
}

/// CPU seconds so far of every other process on the machine (not this one, not its children, not
/// `ksoftirqd`), by pid: what [`machine_busy_seconds`] must not charge to this process. Each counts its own
/// user and system time and that of its children it reaped, so a short-lived process (a compiler run) that
/// starts and ends between two readings still shows, in its parent.
pub fn other_processes_cpu_seconds() -> Result<HashMap<u32, f64>> {
    let me = std::process::id();
    let mut out = HashMap::new();
    for_each_process(|pid, stat| {
        if pid == me {
            return;
        }
        let Ok((ppid, flags, user, system)) = parse_stat_owner(stat) else {
            return;
        };
        // ksoftirqd runs network softirq work that did not fit where it was raised: the run's own.
        let softirqd = flags & PF_KTHREAD != 0 && stat.contains("(ksoftirqd/");
        if ppid == me || softirqd {
            return;
        }
        out.insert(pid, (user + system) as f64 / USER_HZ);
    })?;
    Ok(out)
}

/// `PF_KTHREAD` in a `/proc/<pid>/stat` flags field: a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// `(ppid, flags, utime + cutime, stime + cstime)` of a `/proc/<pid>/stat` line.
fn parse_stat_owner(stat: &str) -> Result<(u32, u64, u64, u64)> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Result<u64> {
        f.get(i)
            .ok_or_else(|| anyhow!("short stat"))?
            .parse::<u64>()
            .context("stat field")
    };
    // After ")": state (3), ppid (4), ... flags (9), ... utime (14), stime (15), cutime (16), cstime (17).
    Ok((
        u32::try_from(num(1)?)?,
        num(6)?,
        num(11)? + num(13)?,
        num(12)? + num(14)?,
    ))
}

/// The busy ticks of the `cpu` line of `/proc/stat`: user, nice, system, irq, softirq (guest time is already
/// in user and nice; idle, iowait and steal are not busy here).
fn parse_machine_busy_ticks(stat: &str) -> Result<u64> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("/proc/stat has no cpu line"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse::<u64>().context("/proc/stat cpu field"))
        .collect::<Result<_>>()?;
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal ...
    Ok(at(0) + at(1) + at(2) + at(5) + at(6))
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    parse_stat_user_system(stat).map(|(u, s)| u + s)
}

/// `(utime, stime)` of a `/proc/<pid>/stat` line.
fn parse_stat_user_system(stat: &str) -> Result<(u64, u64)> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/self/stat"))?;
    // After ")": field 3 (state) is the first; utime is field 14, i.e. index 11 here.
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = |name: &str| -> Result<u64> {
        fields
            .next()
            .ok_or_else(|| anyhow!("/proc/self/stat has no {name}"))?
            .parse::<u64>()
            .with_context(|| format!("/proc/self/stat {name}"))
    };
    let utime = next("utime")?;
    let stime = next("stime")?;
    Ok((utime, stime))
}

#[cfg(test)]
mod tests {
    #[test]
    fn schedstat_run_time_is_its_first_field() {
        assert_eq!(
            super::parse_schedstat_run_ns("123456789 42 7\n").unwrap(),
            123_456_789
        );
        assert!(super::parse_schedstat_run_ns("").is_err());
        assert!(super::parse_schedstat_run_ns("x 1 2").is_err());
    }

    #[test]
    fn a_living_busy_thread_counts_in_the_variant_cpu_unless_skipped() {
        let before_all = super::variant_cpu_seconds(&[], &[]).unwrap();
        let before_skipped = super::variant_cpu_seconds(&["spin-skip"], &[]).unwrap();
        // The thread spins for 200 ms, then waits (alive: an exited thread's time is gone from /proc).
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let busy = std::thread::Builder::new()
            .name("spin-skip-b".into())
            .spawn(move || {
                let t = std::time::Instant::now();
                let mut x = 0u64;
                while t.elapsed() < std::time::Duration::from_millis(200) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                let _ = done_tx.send(());
                let _ = go_rx.recv();
                x
            })
            .unwrap();
        done_rx.recv().unwrap();
        let all = super::variant_cpu_seconds(&[], &[]).unwrap() - before_all;
        let skipped = super::variant_cpu_seconds(&["spin-skip"], &[]).unwrap() - before_skipped;
        go_tx.send(()).unwrap();
        busy.join().unwrap();
        assert!(all >= 0.15, "a thread busy for 200 ms counted {all:.3} s");
        assert!(skipped < all - 0.1, "skipped {skipped:.3} s of {all:.3} s");
    }

    use super::*;

    #[test]
    fn parses_fields_after_a_command_name_with_spaces_and_parens() {
        let line = "1234 (a b) c) R 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(line).unwrap(), 281);
        assert!(parse_stat_cpu_ticks("garbage").is_err());
        assert!(process_cpu_seconds().unwrap() >= 0.0);
        assert!(thread_cpu_seconds().unwrap() >= 0.0);
        assert!(pid_cpu_seconds(std::process::id()).unwrap() >= 0.0);
        assert!(machine_busy_seconds().unwrap() > 0.0);
        let stat = "cpu  10 1 20 500 7 3 4 9 0 0\ncpu0 5 0 10 250 3 1 2 4 0 0\n";
        assert_eq!(parse_machine_busy_ticks(stat).unwrap(), 38);
        let line = "77 (sh) S 1 2 3 4 5 4194560 7 8 9 10 250 31 5 2 20 0 1 0";
        assert_eq!(parse_stat_owner(line).unwrap(), (1, 4194560, 255, 33));
        assert!(!other_processes_cpu_seconds()
            .unwrap()
            .contains_key(&std::process::id()));
        let (user, system) = threads_cpu_seconds("").unwrap();
        assert!(user >= 0.0 && system >= 0.0);
    }

    /// Two milliseconds of work, well under one clock tick, still reads as CPU time of the thread.
    #[test]
    fn a_thread_that_works_a_little_reads_more_than_zero() {
        let work = std::thread::spawn(|| {
            let before = thread_cpu_seconds().unwrap();
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < std::time::Duration::from_millis(2) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            thread_cpu_seconds().unwrap() - before
        });
        let spent = work.join().unwrap();
        assert!(spent > 0.0 && spent < 1.0, "{spent}");
    }
}
