//! `popline-bench compare --matrix`: the comparison over the standard matrix of paths, and its report.
//!
//! The matrix: 100 Mbit/s with a 1-BDP queue, RTT 20/100/200 ms x random loss 0/1/3% each way (the design's
//! range of PoP-to-PoP paths), profiles synthesised from the same `key=value` text the profile files hold.
//! The report, in the manner of Pantheon's: `report.md` with summary tables and every row, and SVG plots per
//! RTT: bulk goodput vs loss, bulk throughput vs p95 one-way delay, and live frames on time vs loss.

use super::report::Row;
use super::svg::{self, Plot, Series, Style};
use super::{compare_profile, CompareArgs, Settings};
use crate::emulate::Profile;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Round-trip times of the matrix, ms.
pub const RTTS_MS: [u64; 3] = [20, 100, 200];
/// Random loss rates of the matrix, percent each way.
pub const LOSSES_PCT: [f64; 3] = [0.0, 1.0, 3.0];
/// The bottleneck rate of every cell.
const RATE: &str = "100mbit";

/// The matrix's profiles, RTT-major.
pub fn profiles() -> Result<Vec<Profile>> {
    let mut out = Vec::new();
    for rtt in RTTS_MS {
        for loss in LOSSES_PCT {
            let text = format!(
                "rate={RATE}\ndelay={}ms\nloss={loss}%\nqueue=1bdp\n",
                rtt as f64 / 2.0
            );
            out.push(Profile::parse(&format!("rtt{rtt}ms-loss{loss}pct"), &text)?);
        }
    }
    Ok(out)
}

/// Runs the matrix with a progress bar and writes the report into `--out`.
pub fn run(args: &CompareArgs, settings: &Settings) -> Result<()> {
    let mut profiles = profiles()?;
    if let Some(seed) = args.seed {
        for p in &mut profiles {
            p.seed = seed;
        }
    }
    let total: usize = profiles
        .iter()
        .map(|p| settings.runs(p.a_to_b.delay + p.b_to_a.delay).len())
        .sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs, eta {eta} {msg}")
            .context("the progress bar's template")?
            .progress_chars("=> "),
    );
    let mut rows = Vec::new();
    for p in &profiles {
        bar.set_message(p.name.clone());
        rows.extend(compare_profile(p, settings, &mut |r, _, _| {
            bar.inc(1);
            if args.json {
                if let Ok(j) = serde_json::to_string(r) {
                    bar.println(j);
                }
            }
        }));
    }
    bar.finish_with_message("done");
    let files = write_report(&args.out, &rows)?;
    for f in files {
        eprintln!("compare: wrote {}", f.display());
    }
    Ok(())
}

/// Writes `report.md` and the SVG plots for `rows` into `dir`; returns the files written.
pub fn write_report(dir: &Path, rows: &[Row]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    let mut md = String::new();
    let _ = writeln!(md, "# popline-bench compare: the matrix\n");
    let _ = writeln!(
        md,
        "Each cell is a fresh pair of namespaces joined by the userspace link emulator. Goodput is \
         application payload at the receiver; p95 delay is the A-to-B packets' one-way delay through the \
         emulated path; live frames are on time when complete within the row's budget.\n"
    );
    let labels = |mode: &str| -> Vec<String> {
        let mut seen = Vec::new();
        for r in rows.iter().filter(|r| r.mode == mode) {
            if !seen.contains(&r.label()) {
                seen.push(r.label());
            }
        }
        seen
    };
    let profiles: Vec<String> = {
        let mut seen = Vec::new();
        for r in rows {
            if !seen.contains(&r.profile) {
                seen.push(r.profile.clone());
            }
        }
        seen
    };
    for (mode, title, cell) in [
        (
            "bulk",
            "Bulk goodput, Mbit/s",
            (|r: &Row| format!("{:.2}", r.goodput_bps / 1e6)) as fn(&Row) -> String,
        ),
        (
            "live",
            "Live frames on time, % (budget ms)",
            (|r: &Row| {
                format!(
                    "{} ({})",
                    r.on_time_pct()
                        .map_or_else(|| "-".to_string(), |p| format!("{p:.2}")),
                    r.budget_ms.map_or_else(|| "-".to_string(), |b| format!("{b:.0}"))
                )
            }) as fn(&Row) -> String,
        ),
    ] {
        let cols = labels(mode);
        if cols.is_empty() {
            continue;
        }
        let _ = writeln!(md, "## {title}\n");
        let _ = writeln!(md, "| profile | {} |", cols.join(" | "));
        let _ = writeln!(md, "|---|{}", "---|".repeat(cols.len()));
        for p in &profiles {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| {
                    rows.iter()
                        .find(|r| &r.profile == p && r.mode == mode && &r.label() == c)
                        .map_or_else(
                            || "-".to_string(),
                            |r| match &r.skipped {
                                Some(_) => "skipped".to_string(),
                                None => cell(r),
                            },
                        )
                })
                .collect();
            let _ = writeln!(md, "| {p} | {} |", cells.join(" | "));
        }
        let _ = writeln!(md);
    }

    let rtts: BTreeSet<u64> = rows.iter().map(|r| r.rtt_ms.round() as u64).collect();
    for rtt in &rtts {
        let at_rtt = |r: &&Row| r.rtt_ms.round() as u64 == *rtt && r.skipped.is_none();
        let series = |mode: &str, point: &dyn Fn(&Row) -> (f64, f64)| -> Vec<Series> {
            labels(mode)
                .into_iter()
                .map(|label| {
                    let mut points: Vec<(f64, f64)> = rows
                        .iter()
                        .filter(at_rtt)
                        .filter(|r| r.mode == mode && r.label() == label)
                        .map(point)
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Series { label, points }
                })
                .filter(|s| !s.points.is_empty())
                .collect()
        };
        let goodput = series("bulk", &|r| (r.loss * 100.0, r.goodput_bps / 1e6));
        let delay = series("bulk", &|r| (r.p95_one_way_delay_ms, r.goodput_bps / 1e6));
        let on_time = series("live", &|r| (r.loss * 100.0, r.on_time_pct().unwrap_or(0.0)));
        let title_g = format!("Bulk goodput vs loss, RTT {rtt} ms");
        let title_d = format!("Throughput vs p95 one-way delay, RTT {rtt} ms (bulk)");
        let title_l = format!("Live frames on time vs loss, RTT {rtt} ms");
        for (name, title, x, y, style, s) in [
            (
                format!("goodput-vs-loss-rtt{rtt}ms.svg"),
                &title_g,
                "random loss each way (%)",
                "goodput (Mbit/s)",
                Style::Lines,
                &goodput,
            ),
            (
                format!("throughput-vs-delay-rtt{rtt}ms.svg"),
                &title_d,
                "p95 one-way delay (ms)",
                "goodput (Mbit/s)",
                Style::Points,
                &delay,
            ),
            (
                format!("live-on-time-vs-loss-rtt{rtt}ms.svg"),
                &title_l,
                "random loss each way (%)",
                "frames on time (%)",
                Style::Lines,
                &on_time,
            ),
        ] {
            if s.is_empty() {
                continue;
            }
            let path = dir.join(&name);
            svg::draw(
                &path,
                &Plot {
                    title,
                    x_desc: x,
                    y_desc: y,
                    style,
                    series: s,
                },
            )?;
            let _ = writeln!(md, "![{title}]({name})\n");
            files.push(path);
        }
    }

    let _ = writeln!(md, "## Every row\n");
    let _ = writeln!(
        md,
        "| profile | variant | mode | goodput Mbit/s | p95 delay ms | latency p50/p99 ms | on time | frames | \
         cpu s/GB | machine cpu s/GB | note |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} |",
            r.profile,
            r.label(),
            r.mode,
            r.goodput_bps / 1e6,
            r.p95_one_way_delay_ms,
            match (r.frame_latency_p50_ms, r.frame_latency_p99_ms) {
                (Some(a), Some(b)) => format!("{a:.0}/{b:.0}"),
                _ => "-".to_string(),
            },
            r.on_time_pct()
                .map_or_else(|| "-".to_string(), |p| format!("{p:.2}%")),
            if r.mode == "live" {
                r.frames_sent.to_string()
            } else {
                "-".to_string()
            },
            r.cpu_s_per_gb
                .map_or_else(|| "-".to_string(), |c| format!("{c:.2}")),
            r.machine_cpu_s_per_gb
                .map_or_else(|| "-".to_string(), |c| format!("{c:.2}")),
            r.skipped
                .as_deref()
                .map(|s| format!("skipped: {s}"))
                .or_else(|| r.note.clone())
                .unwrap_or_default()
                .replace('|', "/"),
        );
    }
    let path = dir.join("report.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    files.push(path);
    Ok(files)
}
