//! `popline-bench relay`: a live stream relayed from PoP A to PoP B across the lab's emulated link, popline's
//! mesh against nginx-rtmp relaying over TCP (CUBIC and BBR), in one run (issue 18's benchmark contract).
//!
//! The fanout harness's publisher ([`crate::fanout::publisher`]) pushes [`stream`] (default 6 Mbit/s, 30 fps,
//! GOP 2 s, B-frames; each frame stamped with its send time) to node A in namespace A; `--viewers`
//! lightweight players ([`viewer`]) play from node B in namespace B; the A-B link is the emulator with the
//! profile ([`crate::emulate`]). Every trial gets a fresh lab and fresh nodes ([`mod@run`]). Variants:
//!
//! - `popline`: two popline nodes joined by the mesh over the popline transport ([`popline_mesh`]);
//! - `nginx-rtmp`: nginx-rtmp on A with `push` to nginx-rtmp on B, TCP CUBIC ([`nginx_relay`], [`tcp_cc`]);
//! - `nginx-rtmp-bbr`: the same with TCP BBR.
//!
//! Frames are judged per viewer against `--budget` (default 2.5 x RTT + 30 ms from capture) by [`judge`];
//! rows are [`report::Row`]s. `--max-bitrate` searches each variant's highest bitrate with >= 99.9% of the
//! frames on time at every viewer ([`search`]); `--hops 1,2,3` runs popline chains of that many nodes and
//! reports the latency each node adds.

pub mod judge;
pub mod nginx_relay;
pub mod nodes;
pub mod popline_mesh;
pub mod report;
pub mod run;
pub mod search;
pub mod stream;
pub mod tcp_cc;
#[cfg(test)]
mod tests_e2e;
pub mod viewer;

use crate::compare::load_profile;
use crate::emulate::{netns_unavailable, Profile};
use crate::fanout::{clock, cpus, popline_server};
use crate::units::{parse_duration, parse_rate_bps};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use report::Row;
use std::path::PathBuf;
use std::time::Duration;

/// Extra latency the default budget allows over 2.5 x RTT.
const LATENCY_ALLOWANCE: Duration = Duration::from_millis(30);
/// Share of frames on time (at every viewer) that `--max-bitrate` requires.
pub const MAX_BITRATE_ON_TIME: f64 = 0.999;
/// Lowest bitrate `--max-bitrate` tries.
const MIN_SEARCH_BPS: u64 = 100_000;

/// Arguments of `popline-bench relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// The A-B link's impairment profile: a file, or a name in `netem-scripts/profiles/` (e.g. `lossy-1pct`).
    #[arg(long)]
    pub profile: String,
    /// Variants, comma-separated: popline, nginx-rtmp (TCP CUBIC), nginx-rtmp-bbr.
    #[arg(long, default_value = "popline,nginx-rtmp,nginx-rtmp-bbr")]
    pub variants: String,
    /// Viewers playing from PoP B.
    #[arg(long, default_value_t = 10)]
    pub viewers: usize,
    /// The stream's bitrate (and `--max-bitrate`'s starting point).
    #[arg(long, default_value = "6mbit")]
    pub bitrate: String,
    /// A frame's budget from capture to arrival at a viewer (default 2.5 x RTT + 30 ms); also the playout
    /// delay of the stall measure and popline's `mesh.frame_budget_ms`.
    #[arg(long)]
    pub budget: Option<String>,
    /// Seconds of stream judged per trial.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Seconds the viewers play before the judged window (alike for every variant).
    #[arg(long, default_value_t = 4.0)]
    pub warmup: f64,
    /// Search each variant's highest bitrate with >= 99.9% of frames on time at every viewer.
    #[arg(long)]
    pub max_bitrate: bool,
    /// `--max-bitrate`: geometric bisections after the bracket.
    #[arg(long, default_value_t = 3)]
    pub search_steps: u32,
    /// `--max-bitrate`: the highest bitrate tried.
    #[arg(long, default_value = "64mbit")]
    pub search_max: String,
    /// Chains of popline nodes to run instead of the variants (comma-separated, 1 to 3, e.g. `1,2,3`): the
    /// latency each node adds (run it on `clean`).
    #[arg(long)]
    pub hops: Option<String>,
    /// Print one JSON object per row instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Overrides the profile's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// popline's `rtmp.write_coalesce_ms` (0: each frame goes to the viewers as it comes, as nginx-rtmp
    /// sends it).
    #[arg(long, default_value_t = 0)]
    pub popline_write_coalesce_ms: u64,
    /// The popline binary (default: `popline` beside this executable).
    #[arg(long)]
    pub popline_bin: Option<PathBuf>,
    /// The nginx binary.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    pub nginx_bin: PathBuf,
    /// The nginx-rtmp dynamic module.
    #[arg(long, default_value = "/usr/lib/nginx/modules/ngx_rtmp_module.so")]
    pub nginx_module: PathBuf,
    /// Keep each node's config and logs in this directory.
    #[arg(long)]
    pub keep_logs: Option<PathBuf>,
}

/// A relay under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// popline nodes joined by the mesh.
    Popline,
    /// nginx-rtmp pushing over TCP CUBIC.
    NginxRtmp,
    /// nginx-rtmp pushing over TCP BBR.
    NginxRtmpBbr,
}

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 3] = [Variant::Popline, Variant::NginxRtmp, Variant::NginxRtmpBbr];

    /// The name in the CLI and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Popline => "popline",
            Variant::NginxRtmp => "nginx-rtmp",
            Variant::NginxRtmpBbr => "nginx-rtmp-bbr",
        }
    }

    /// Parses a variant name.
    pub fn parse(s: &str) -> Result<Variant> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| anyhow!("unknown variant {s:?}: popline, nginx-rtmp, nginx-rtmp-bbr"))
    }

    /// The kernel TCP controller the variant's relay connection runs with, if it is TCP.
    pub fn tcp_cc(self) -> Option<&'static str> {
        match self {
            Variant::Popline => None,
            Variant::NginxRtmp => Some("cubic"),
            Variant::NginxRtmpBbr => Some("bbr"),
        }
    }
}

/// What every trial of a run shares.
#[derive(Debug, Clone)]
pub struct Trial {
    /// The A-B link.
    pub profile: Profile,
    /// The path's round-trip propagation delay.
    pub rtt: Duration,
    /// The frames' budget.
    pub budget: Duration,
    /// Viewers.
    pub viewers: usize,
    /// Viewer warm-up before the window.
    pub warmup: Duration,
    /// The judged window.
    pub seconds: Duration,
    /// CPUs the nodes may run on (`taskset -c`).
    pub cpus: String,
    /// popline's `rtmp.write_coalesce_ms`.
    pub popline_write_coalesce_ms: u64,
    /// The popline binary.
    pub popline_bin: PathBuf,
    /// The nginx binary.
    pub nginx_bin: PathBuf,
    /// The nginx-rtmp module.
    pub nginx_module: PathBuf,
    /// Where to keep the nodes' logs.
    pub keep_logs: Option<PathBuf>,
}

/// The default budget on a path of round-trip time `rtt`: 2.5 x RTT + 30 ms.
pub fn default_budget(rtt: Duration) -> Duration {
    rtt * 5 / 2 + LATENCY_ALLOWANCE
}

fn positive_seconds(s: f64, name: &str) -> Result<Duration> {
    if !(s.is_finite() && s > 0.0) {
        bail!("--{name} must be positive");
    }
    Ok(Duration::from_secs_f64(s))
}

/// Runs `popline-bench relay`.
pub fn run(args: &RelayArgs) -> Result<()> {
    if let Some(why) = netns_unavailable() {
        bail!("cannot build the emulation lab: {why}");
    }
    let mut profile = load_profile(&args.profile)?;
    if let Some(seed) = args.seed {
        profile.seed = seed;
    }
    let rtt = profile.a_to_b.delay + profile.b_to_a.delay;
    let budget = match &args.budget {
        Some(b) => parse_duration(b)?,
        None => default_budget(rtt),
    };
    if args.viewers == 0 {
        bail!("--viewers must be at least 1");
    }
    let bitrate = parse_rate_bps(&args.bitrate)?;
    let trial = Trial {
        profile,
        rtt,
        budget,
        viewers: args.viewers,
        warmup: positive_seconds(args.warmup, "warmup")?,
        seconds: positive_seconds(args.seconds, "seconds")?,
        cpus: cpus::format_cpu_list(&cpus::allowed_cpus()?),
        popline_write_coalesce_ms: args.popline_write_coalesce_ms,
        popline_bin: args
            .popline_bin
            .clone()
            .unwrap_or_else(popline_server::default_binary),
        nginx_bin: args.nginx_bin.clone(),
        nginx_module: args.nginx_module.clone(),
        keep_logs: args.keep_logs.clone(),
    };
    clock::epoch();
    let mut rows = Vec::new();
    if let Some(hops) = &args.hops {
        for k in parse_hops(hops)? {
            eprintln!("[popline x{k}] {} on {}", args.bitrate, trial.profile.name);
            let mut row = run::trial(Variant::Popline, k, bitrate, &trial);
            row.added_latency_per_hop_ms_p99 = added_per_hop(&row, &trial);
            rows.push(row);
        }
    } else {
        let variants = args
            .variants
            .split(',')
            .map(|v| Variant::parse(v.trim()))
            .collect::<Result<Vec<_>>>()?;
        let search_max = parse_rate_bps(&args.search_max)?;
        for v in variants {
            rows.push(if args.max_bitrate {
                max_bitrate(v, bitrate, search_max, args.search_steps, &trial)
            } else {
                eprintln!("[{}] {} on {}", v.name(), args.bitrate, trial.profile.name);
                run::trial(v, 2, bitrate, &trial)
            });
        }
    }
    if args.json {
        report::print_json(&rows)
    } else {
        report::print_table(&rows);
        Ok(())
    }
}

/// `--hops`: chain lengths.
fn parse_hops(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|h| match h.trim().parse::<usize>() {
            Ok(k @ 1..=3) => Ok(k),
            _ => bail!("--hops takes chain lengths 1 to 3, e.g. 1,2,3 (got {h:?})"),
        })
        .collect()
}

/// The p99 latency each node of a chain adds: the p99 less the one crossing of the emulated link (chains
/// of two or three nodes cross it once, A to B; one node does not cross it), over the nodes.
fn added_per_hop(row: &Row, t: &Trial) -> Option<f64> {
    let p99 = row.e2e_latency_ms_p99?;
    let link_ms = if row.nodes > 1 {
        t.profile.a_to_b.delay.as_secs_f64() * 1e3
    } else {
        0.0
    };
    (row.nodes > 0).then(|| (p99 - link_ms).max(0.0) / row.nodes as f64)
}

/// `--max-bitrate` for one variant: the row of the highest passing trial (or the last one) with
/// `max_bitrate_bps` set.
fn max_bitrate(v: Variant, start: u64, max: u64, steps: u32, t: &Trial) -> Row {
    let mut best: Option<Row> = None;
    let mut last: Option<Row> = None;
    let (found, tried) = search::search(start, MIN_SEARCH_BPS, max, steps, |bps| {
        eprintln!("[{}] trying {:.2} Mbit/s", v.name(), bps as f64 / 1e6);
        let row = run::trial(v, 2, bps, t);
        let pass = row.passes(MAX_BITRATE_ON_TIME);
        eprintln!(
            "[{}] {:.2} Mbit/s: {}",
            v.name(),
            bps as f64 / 1e6,
            match (&row.error, row.on_time_ratio) {
                (Some(e), _) => format!("failed: {e}"),
                (None, Some(r)) => format!("{:.2}% on time", r * 100.0),
                (None, None) => "nothing judged".into(),
            }
        );
        if pass && best.as_ref().is_none_or(|b| b.stream_bps < row.stream_bps) {
            best = Some(row.clone());
        }
        last = Some(row);
        pass
    });
    let rtt_ms = t.rtt.as_secs_f64() * 1e3;
    // The stream's measured bitrate at the passing trial (the synthetic stream is within ~1% of the ask).
    let max_bps = best
        .as_ref()
        .map_or(0, |b| if found > 0 { b.stream_bps } else { 0 });
    let mut row = best
        .or(last)
        .unwrap_or_else(|| Row::failed(v.name(), &t.profile.name, rtt_ms, start, "no trial ran".into()));
    row.max_bitrate_bps = Some(max_bps);
    let tried: Vec<String> = tried.iter().map(|b| format!("{:.2}", *b as f64 / 1e6)).collect();
    let note = format!("max-bitrate trials (Mbit/s): {}", tried.join(", "));
    row.note = Some(match row.note.take() {
        Some(n) => format!("{n}; {note}"),
        None => note,
    });
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_is_two_and_a_half_rtts_plus_30_ms() {
        assert_eq!(
            default_budget(Duration::from_millis(100)),
            Duration::from_millis(280)
        );
        assert_eq!(
            default_budget(Duration::from_millis(1)),
            Duration::from_micros(32_500)
        );
        assert_eq!(Variant::parse("nginx-rtmp-bbr").unwrap().tcp_cc(), Some("bbr"));
        assert_eq!(Variant::parse("nginx-rtmp").unwrap().tcp_cc(), Some("cubic"));
        assert!(Variant::parse("srt").is_err());
        assert_eq!(parse_hops("1,2,3").unwrap(), vec![1, 2, 3]);
        assert!(parse_hops("4").is_err());
    }
}
