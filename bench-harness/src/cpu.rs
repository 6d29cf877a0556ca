//! CPU time of this process, of the calling thread, or of another process, read from `/proc/.../stat` (safe: no `getrusage`, which would need `unsafe`).
//!
//! Resolution is one clock tick: `USER_HZ`, which is 100 on every mainstream Linux architecture, so
//! 10 ms; the benchmarks run for seconds, which keeps the error under a percent.

use anyhow::{anyhow, Context, Result};

/// Clock ticks per second of the `utime`/`stime` fields (`USER_HZ`; `sysconf(_SC_CLK_TCK)` needs `unsafe`).
const USER_HZ: f64 = 100.0;

/// User plus system CPU seconds used so far by every thread of this process (living or exited).
pub fn process_cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    parse_stat_cpu_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// User plus system CPU seconds used so far by the calling thread (`/proc/thread-self/stat`).
pub fn thread_cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").context("reading /proc/thread-self/stat")?;
    parse_stat_cpu_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// User plus system CPU seconds used so far by every thread of process `pid` (e.g. a child this process
/// started); read it before the process is reaped.
pub fn pid_cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
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
    Ok(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_after_a_command_name_with_spaces_and_parens() {
        let line = "1234 (a b) c) R 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(line).unwrap(), 281);
        assert!(parse_stat_cpu_ticks("garbage").is_err());
        assert!(process_cpu_seconds().unwrap() >= 0.0);
        assert!(thread_cpu_seconds().unwrap() >= 0.0);
        assert!(pid_cpu_seconds(std::process::id()).unwrap() >= 0.0);
    }
}
