//! `popline-bench placement`: how evenly rendezvous (HRW) hashing spreads stream keys over an app's origins,
//! and what moves when one origin leaves, next to a plain `hash(key) % n` in the same run.
//!
//! For each node count: `--keys` stream keys (`live/stream-<i>`) get a home among `pop-00 ..` by
//! [`relay::mesh::placement::home`] and by [`relay::mesh::placement::modulo_home`]; the balance is the most
//! loaded node's count over the mean (1.0 is perfect). Then one node (the middle one) leaves: the share of keys
//! whose home changed, and how many of those were not on the node that left (HRW: none). Counts, not timings,
//! so the numbers do not depend on the machine; the lookup cost is timed on the side.

use anyhow::{bail, Result};
use clap::Args;
use relay::mesh::placement::{home, modulo_home, Origin};
use serde::Serialize;
use std::time::Instant;

/// Flags of `popline-bench placement`.
#[derive(Debug, Args)]
pub struct PlacementArgs {
    /// Stream keys placed.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Node counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    nodes: Vec<usize>,
    /// Print one JSON object per node count instead of a table.
    #[arg(long)]
    json: bool,
}

/// One node count's results.
#[derive(Debug, Serialize, PartialEq)]
struct Row {
    nodes: usize,
    keys: usize,
    /// Most loaded node / mean, HRW.
    hrw_max_over_mean: f64,
    /// Least loaded node / mean, HRW.
    hrw_min_over_mean: f64,
    /// Most loaded node / mean, modulo.
    modulo_max_over_mean: f64,
    /// Share of keys whose home changed when one node left, HRW (ideal: 1/nodes).
    hrw_moved_share: f64,
    /// Of those, keys that were not on the node that left (HRW: 0).
    hrw_moved_needlessly: usize,
    /// Share of keys whose home changed when one node left, modulo.
    modulo_moved_share: f64,
    /// Nanoseconds per HRW lookup (one hash per node).
    hrw_ns_per_lookup: f64,
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("live/stream-{i}")).collect()
}

fn measure(nodes: usize, keys: &[String]) -> Result<Row> {
    if nodes < 2 {
        bail!("--nodes: each count must be at least 2 (one leaves), got {nodes}");
    }
    let all: Vec<Origin> = (0..nodes).map(|i| Origin::new(format!("pop-{i:02}"))).collect();
    let leaver = all[nodes / 2].id.clone();
    let rest: Vec<Origin> = all.iter().filter(|o| o.id != leaver).cloned().collect();
    let index = |o: &Origin| all.iter().position(|x| x.id == o.id).unwrap_or(0);
    let (mut hrw, mut modulo) = (vec![0usize; nodes], vec![0usize; nodes]);
    let (mut hrw_moved, mut needless, mut mod_moved) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    let mut homes = Vec::with_capacity(keys.len());
    for k in keys {
        homes.push(home(k, &all).map(|o| o.id.as_str()));
    }
    let ns = started.elapsed().as_nanos() as f64 / keys.len().max(1) as f64;
    for (k, h) in keys.iter().zip(&homes) {
        let (Some(h), Some(m)) = (
            h.and_then(|id| all.iter().find(|o| o.id == id)),
            modulo_home(k, &all),
        ) else {
            bail!("no home for {k}");
        };
        hrw[index(h)] += 1;
        modulo[index(m)] += 1;
        if home(k, &rest).is_some_and(|after| after.id != h.id) {
            hrw_moved += 1;
            if h.id != leaver {
                needless += 1;
            }
        }
        if modulo_home(k, &rest).is_some_and(|after| after.id != m.id) {
            mod_moved += 1;
        }
    }
    let mean = keys.len() as f64 / nodes as f64;
    let max = |v: &[usize]| v.iter().copied().max().unwrap_or(0) as f64 / mean;
    let min = |v: &[usize]| v.iter().copied().min().unwrap_or(0) as f64 / mean;
    let share = |n: usize| n as f64 / keys.len().max(1) as f64;
    Ok(Row {
        nodes,
        keys: keys.len(),
        hrw_max_over_mean: max(&hrw),
        hrw_min_over_mean: min(&hrw),
        modulo_max_over_mean: max(&modulo),
        hrw_moved_share: share(hrw_moved),
        hrw_moved_needlessly: needless,
        modulo_moved_share: share(mod_moved),
        hrw_ns_per_lookup: ns,
    })
}

/// Runs the benchmark and prints it.
pub fn run(args: &PlacementArgs) -> Result<()> {
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    let keys = keys(args.keys);
    let mut rows = Vec::new();
    for &n in &args.nodes {
        rows.push(measure(n, &keys)?);
    }
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{:>6} {:>8} {:>10} {:>10} {:>10} {:>11} {:>10} {:>11} {:>9}",
        "nodes", "keys", "hrw max", "hrw min", "mod max", "hrw moved", "needless", "mod moved", "ns/look"
    );
    for r in &rows {
        println!(
            "{:>6} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>10.2}% {:>10} {:>10.2}% {:>9.0}",
            r.nodes,
            r.keys,
            r.hrw_max_over_mean,
            r.hrw_min_over_mean,
            r.modulo_max_over_mean,
            100.0 * r.hrw_moved_share,
            r.hrw_moved_needlessly,
            100.0 * r.modulo_moved_share,
            r.hrw_ns_per_lookup
        );
    }
    println!("(max/min: node load over the mean; moved: keys whose home changed when one node left; ideal 1/nodes)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrw_moves_only_the_leavers_keys_and_modulo_moves_most() {
        let keys = keys(20_000);
        let r = measure(10, &keys).unwrap();
        assert_eq!(r.hrw_moved_needlessly, 0, "{r:?}");
        assert!((r.hrw_moved_share - 0.1).abs() < 0.02, "{r:?}");
        assert!(r.modulo_moved_share > 0.8, "{r:?}");
        assert!(r.hrw_max_over_mean < 1.1 && r.hrw_min_over_mean > 0.9, "{r:?}");
        assert!(measure(1, &keys).is_err());
    }
}
