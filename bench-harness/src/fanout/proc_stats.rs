//! CPU time and resident memory of a server's process tree (nginx: the master and its workers; popline: one
//! process with many threads), and of this process, from `/proc`.
//!
//! CPU is `utime + stime` from `/proc/PID/stat` (every thread of the process, in clock ticks of `USER_HZ`, 100
//! per second on every mainstream Linux: 10 ms resolution, under 1% of a 5 s step at one core); memory is
//! `VmRSS` from `/proc/PID/status`. Children are found by scanning `/proc/*/stat` for their parent pid.

use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;

/// Clock ticks per second of the `utime`/`stime` fields (`USER_HZ`; `sysconf(_SC_CLK_TCK)` needs `unsafe`).
pub const USER_HZ: f64 = 100.0;

/// One reading of a process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TreeSample {
    /// User plus system CPU of every process in the tree, in seconds.
    pub cpu_seconds: f64,
    /// Sum of `VmRSS` over the tree, in MiB.
    pub rss_mb: f64,
    /// Processes in the tree.
    pub processes: usize,
}

/// `(ppid, utime + stime)` of a `/proc/PID/stat` line. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(stat: &str) -> Result<(u32, u64)> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed stat line"))?;
    // After ")": field 3 (state) is index 0, ppid (4) is 1, utime (14) is 11, stime (15) is 12.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize, name: &str| -> Result<u64> {
        fields
            .get(i)
            .ok_or_else(|| anyhow!("stat has no {name}"))?
            .parse::<u64>()
            .with_context(|| format!("stat {name}"))
    };
    let ppid = u32::try_from(field(1, "ppid")?).context("ppid")?;
    Ok((ppid, field(11, "utime")? + field(12, "stime")?))
}

/// `VmRSS` of a `/proc/PID/status` text, in KiB (0 for a process without one, e.g. a zombie).
pub fn parse_rss_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads the tree rooted at `root`: the process and all its descendants living now.
pub fn sample_tree(root: u32) -> Result<TreeSample> {
    let mut stats: HashMap<u32, (u32, u64)> = HashMap::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Ok(parsed) = parse_stat(&text) {
                stats.insert(pid, parsed);
            }
        }
    }
    if !stats.contains_key(&root) {
        return Err(anyhow!("process {root} is gone"));
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            stats
                .iter()
                .filter(|(_, (ppid, _))| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    let mut sample = TreeSample {
        processes: tree.len(),
        ..TreeSample::default()
    };
    for pid in tree {
        sample.cpu_seconds += stats.get(&pid).map_or(0.0, |(_, ticks)| *ticks as f64 / USER_HZ);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        sample.rss_mb += parse_rss_kib(&status) as f64 / 1024.0;
    }
    Ok(sample)
}

/// Busy CPU seconds (everything but idle and iowait) of each CPU in `cpus`, summed, from `/proc/stat`: with
/// the server's own CPU time subtracted, what other processes took from the server's CPUs.
pub fn cpus_busy_seconds(cpus: &[usize]) -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    Ok(parse_cpus_busy_ticks(&stat, cpus) as f64 / USER_HZ)
}

/// Busy ticks of the `cpuN` lines of a `/proc/stat` text for N in `cpus` (user, nice, system, irq, softirq,
/// steal; guest time is already inside user and nice).
pub fn parse_cpus_busy_ticks(stat: &str, cpus: &[usize]) -> u64 {
    stat.lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let cpu: usize = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            if !cpus.contains(&cpu) {
                return None;
            }
            let v: Vec<u64> = fields.map(|f| f.parse().unwrap_or(0)).collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
        })
        .sum()
}

/// Reads this process (the load generator).
pub fn sample_self() -> Result<TreeSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let (_, ticks) = parse_stat(&stat)?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    Ok(TreeSample {
        cpu_seconds: ticks as f64 / USER_HZ,
        rss_mb: parse_rss_kib(&status) as f64 / 1024.0,
        processes: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status_and_finds_children() {
        let line = "1234 (nginx: worker (x)) S 77 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1 0";
        assert_eq!(parse_stat(line).unwrap(), (77, 281));
        assert!(parse_stat("garbage").is_err());
        assert_eq!(parse_rss_kib("Name:\tx\nVmRSS:\t  2048 kB\n"), 2048);
        assert_eq!(parse_rss_kib("Name:\tzombie\n"), 0);
        let stat =
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 1 2 3 100 5 6 7 8 0 0\ncpu1 10 20 30 1000 50 60 70 80 0 0\n";
        assert_eq!(parse_cpus_busy_ticks(stat, &[1]), 10 + 20 + 30 + 60 + 70 + 80);
        assert_eq!(parse_cpus_busy_ticks(stat, &[0, 1]), 1 + 2 + 3 + 6 + 7 + 8 + 270);
        assert!(cpus_busy_seconds(&[0]).unwrap() > 0.0);

        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let me = sample_tree(std::process::id()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(me.processes >= 2, "{me:?}");
        assert!(me.rss_mb > 0.0);
        assert!(sample_self().unwrap().cpu_seconds >= 0.0);
        assert!(sample_tree(u32::MAX).is_err());
    }
}
