//! `popline-bench sweep`: one benchmark (`udp`, `transport` or `compare`) run across engine and socket knobs
//! and sysctl profiles, every combination, each run a fresh `popline-bench` process (so a knob never leaks
//! from one run into the next), with a table on the terminal and JSON + markdown + SVG in `--out`.
//!
//! `--knob NAME=v1,v2` maps to the benchmark's flag `--NAME v` (the engine knobs of
//! [`crate::engine_args::EngineArgs`], and `cores`, which sets `--connections` for `transport`: one server
//! core per connection). `--sysctl none,big-buffers` applies each profile from `netem-scripts/sysctl/` for
//! its runs and restores every value afterwards; the values applied are in the report.

mod report;
pub mod sysctl;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::PathBuf;
use std::process::Command;
use sysctl::SysctlProfile;

/// Arguments of `popline-bench sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The benchmark to run: udp, transport or compare.
    #[arg(long, default_value = "transport")]
    pub bench: String,
    /// A knob and its values, `NAME=v1,v2,...`; repeat for more knobs (every combination runs).
    #[arg(long = "knob")]
    pub knobs: Vec<String>,
    /// sysctl profiles (files in --sysctl-dir, without `.conf`), comma-separated; `none` changes nothing.
    #[arg(long, default_value = "none")]
    pub sysctl: String,
    /// Where the sysctl profiles are.
    #[arg(long, default_value = "netem-scripts/sysctl")]
    pub sysctl_dir: PathBuf,
    /// Seconds per run (passed as the benchmark's `--seconds`).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Where the report goes (`sweep.json`, `sweep.md`, `sweep.svg`).
    #[arg(long, default_value = "sweep-report")]
    pub out: PathBuf,
    /// More arguments for the benchmark, after `--` (e.g. `-- --variants popline,quinn`).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// The knobs a sweep may vary, and the benchmark flag each one sets.
const KNOBS: &[(&str, &str)] = &[
    ("backend", "--backend"),
    ("gso", "--gso"),
    ("gro", "--gro"),
    ("gso-segments", "--gso-segments"),
    ("ring-entries", "--ring-entries"),
    ("buffers", "--buffers"),
    ("send-slots", "--send-slots"),
    ("sqpoll-ms", "--sqpoll-ms"),
    ("busy-poll-us", "--busy-poll-us"),
    ("socket-buffer", "--socket-buffer"),
    ("loop-batch", "--loop-batch"),
    ("mmsg-batch", "--batch"),
    ("segments", "--segments"),
    ("cores", "--connections"),
    ("payload", "--payload"),
    ("variants", "--variants"),
];

/// One knob with the values to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knob {
    /// The knob's name.
    pub name: String,
    /// The benchmark flag it sets.
    pub flag: &'static str,
    /// Values, in order.
    pub values: Vec<String>,
}

/// Parses `NAME=v1,v2`.
pub fn parse_knob(s: &str) -> Result<Knob> {
    let Some((name, values)) = s.split_once('=') else {
        bail!("--knob takes NAME=v1,v2,..., not {s:?}");
    };
    let Some(&(_, flag)) = KNOBS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = KNOBS.iter().map(|(n, _)| *n).collect();
        bail!("unknown knob {name:?}; knobs: {}", names.join(", "));
    };
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        bail!("knob {name} has no values");
    }
    Ok(Knob {
        name: name.to_string(),
        flag,
        values,
    })
}

/// Every combination of the knobs' values, first knob slowest.
pub fn combinations(knobs: &[Knob]) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for k in knobs {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                k.values.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push((k.name.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    out
}

/// One row of the report: a benchmark's JSON object with the knobs and sysctl profile it ran under.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    /// The sysctl profile.
    pub sysctl: String,
    /// The knobs, in `--knob` order.
    pub knobs: Vec<(String, String)>,
    /// What the benchmark printed for this run (one object per variant).
    pub result: serde_json::Value,
}

/// Runs `popline-bench sweep`.
pub fn run(args: &SweepArgs) -> Result<()> {
    if !matches!(args.bench.as_str(), "udp" | "transport" | "compare") {
        bail!("--bench must be udp, transport or compare, not {:?}", args.bench);
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be positive");
    }
    let knobs = args
        .knobs
        .iter()
        .map(|k| parse_knob(k))
        .collect::<Result<Vec<_>>>()?;
    let profiles = args
        .sysctl
        .split(',')
        .map(|n| SysctlProfile::load(&args.sysctl_dir, n.trim()))
        .collect::<Result<Vec<_>>>()?;
    let combos = combinations(&knobs);
    let exe = std::env::current_exe().context("finding the popline-bench binary")?;
    let total = (combos.len() * profiles.len()) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs, eta {eta} {msg}")
            .context("the progress bar's template")?
            .progress_chars("=> "),
    );
    let mut rows = Vec::new();
    for profile in &profiles {
        // Applied for this profile's runs only; restored when `_applied` drops, errors included.
        let _applied = sysctl::apply(profile)?;
        for combo in &combos {
            let label = report::label(&profile.name, combo);
            bar.set_message(label.clone());
            let mut cmd = Command::new(&exe);
            cmd.arg(&args.bench)
                .arg("--json")
                .arg("--seconds")
                .arg(args.seconds.to_string());
            for (name, value) in combo {
                let flag = knobs.iter().find(|k| &k.name == name).map_or("", |k| k.flag);
                cmd.arg(flag).arg(value);
            }
            cmd.args(&args.extra);
            let out = cmd
                .output()
                .with_context(|| format!("running {} for {label}", args.bench))?;
            bar.inc(1);
            if !out.status.success() {
                // Not through the bar: a hidden bar (no terminal) drops its lines.
                bar.suspend(|| {
                    eprintln!(
                        "sweep: {label}: {} failed ({}): {}",
                        args.bench,
                        out.status,
                        String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
                    )
                });
                continue;
            }
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Ok(result) = serde_json::from_str::<serde_json::Value>(line) {
                    rows.push(SweepRow {
                        sysctl: profile.name.clone(),
                        knobs: combo.clone(),
                        result,
                    });
                }
            }
        }
    }
    bar.finish_with_message("done");
    report::print_table(&rows);
    let files = report::write(&args.out, &args.bench, &profiles, &rows)?;
    for f in files {
        eprintln!("sweep: wrote {}", f.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_parse_and_combine() {
        let a = parse_knob("gso=on,off").unwrap();
        assert_eq!((a.flag, a.values.len()), ("--gso", 2));
        let b = parse_knob("cores=1,2,4").unwrap();
        assert_eq!(b.flag, "--connections");
        assert!(parse_knob("nonsense=1").is_err());
        assert!(parse_knob("gso").is_err());
        assert!(parse_knob("gso=").is_err());
        let c = combinations(&[a, b]);
        assert_eq!(c.len(), 6);
        assert_eq!(
            c[0],
            vec![("gso".into(), "on".into()), ("cores".into(), "1".into())]
        );
        assert_eq!(
            c[5],
            vec![("gso".into(), "off".into()), ("cores".into(), "4".into())]
        );
        assert_eq!(combinations(&[]), vec![Vec::<(String, String)>::new()]);
    }
}
