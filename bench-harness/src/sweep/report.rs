//! The sweep's report: a terminal table, `sweep.json` (every row), `sweep.md` (the table, the sysctl values
//! applied) and `sweep.svg` (throughput per run, one series per variant).

use super::sysctl::SysctlProfile;
use super::SweepRow;
use crate::compare::svg::{self, Plot, Series, Style};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `sysctl=none gso=on cores=2`.
pub fn label(sysctl: &str, knobs: &[(String, String)]) -> String {
    let mut s = format!("sysctl={sysctl}");
    for (k, v) in knobs {
        let _ = write!(s, " {k}={v}");
    }
    s
}

/// Throughput of a row in Gbit/s: `gbps` (udp, transport) or `goodput_bps` (compare).
fn gbps(r: &SweepRow) -> Option<f64> {
    r.result.get("gbps").and_then(|v| v.as_f64()).or_else(|| {
        r.result
            .get("goodput_bps")
            .and_then(|v| v.as_f64())
            .map(|b| b / 1e9)
    })
}

fn field<'a>(r: &'a SweepRow, key: &str) -> &'a serde_json::Value {
    r.result.get(key).unwrap_or(&serde_json::Value::Null)
}

fn variant(r: &SweepRow) -> String {
    let v = field(r, "variant").as_str().unwrap_or("-");
    match field(r, "mode").as_str() {
        Some(m) => format!("{v}/{m}"),
        None => v.to_string(),
    }
}

fn table(rows: &[SweepRow]) -> Vec<[String; 5]> {
    rows.iter()
        .map(|r| {
            [
                label(&r.sysctl, &r.knobs),
                variant(r),
                field(r, "connections")
                    .as_u64()
                    .map_or("-".into(), |c| c.to_string()),
                gbps(r).map_or("-".into(), |g| format!("{g:.3}")),
                field(r, "cpu_s_per_gb")
                    .as_f64()
                    .map_or("-".into(), |c| format!("{c:.2}")),
            ]
        })
        .collect()
}

const HEADER: [&str; 5] = ["run", "variant", "conns", "Gbit/s", "cpu s/GB"];

/// Prints the rows as a table.
pub fn print_table(rows: &[SweepRow]) {
    let t = table(rows);
    let w0 = t.iter().map(|r| r[0].len()).max().unwrap_or(3).max(3);
    println!(
        "{:<w0$}  {:<22} {:>5} {:>9} {:>9}",
        HEADER[0], HEADER[1], HEADER[2], HEADER[3], HEADER[4]
    );
    for r in &t {
        println!("{:<w0$}  {:<22} {:>5} {:>9} {:>9}", r[0], r[1], r[2], r[3], r[4]);
    }
}

/// Writes the report files into `dir`; returns their paths.
pub fn write(dir: &Path, bench: &str, profiles: &[SysctlProfile], rows: &[SweepRow]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("sweep.json");
    std::fs::write(&json, serde_json::to_string_pretty(rows)?)
        .with_context(|| format!("writing {}", json.display()))?;

    let mut md = format!("# popline-bench sweep: {bench}\n\n");
    md.push_str("| run | variant | conns | Gbit/s | cpu s/GB |\n|---|---|---|---|---|\n");
    for r in table(rows) {
        let _ = writeln!(md, "| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
    }
    md.push_str("\n## sysctl profiles\n\n");
    for p in profiles {
        let _ = writeln!(md, "- `{}`", p.name);
        for (k, v) in &p.settings {
            let _ = writeln!(md, "  - `{k} = {v}`");
        }
    }
    md.push_str("\nValues were applied for each profile's runs and restored afterwards.\n");
    let md_path = dir.join("sweep.md");
    std::fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;

    // One series per variant; x is the run's index in the sweep (the table says which run it is).
    let mut series: Vec<Series> = Vec::new();
    let mut runs: Vec<String> = Vec::new();
    for r in rows {
        let run = label(&r.sysctl, &r.knobs);
        let x = match runs.iter().position(|l| *l == run) {
            Some(i) => i,
            None => {
                runs.push(run);
                runs.len() - 1
            }
        };
        let Some(y) = gbps(r) else { continue };
        let v = variant(r);
        match series.iter_mut().find(|s| s.label == v) {
            Some(s) => s.points.push((x as f64 + 1.0, y)),
            None => series.push(Series {
                label: v,
                points: vec![(x as f64 + 1.0, y)],
            }),
        }
    }
    let svg_path = dir.join("sweep.svg");
    let title = format!("sweep: {bench}");
    svg::draw(
        &svg_path,
        &Plot {
            title: &title,
            x_desc: "run (see sweep.md)",
            y_desc: "Gbit/s",
            style: Style::Lines,
            series: &series,
        },
    )?;
    Ok(vec![json, md_path, svg_path])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_every_row_and_a_plot() {
        let dir = std::env::temp_dir().join(format!("popline-sweep-test-{}", std::process::id()));
        let rows = vec![
            SweepRow {
                sysctl: "none".into(),
                knobs: vec![("gso".into(), "on".into())],
                result: serde_json::json!({"variant": "popline", "connections": 1, "gbps": 5.0, "cpu_s_per_gb": 2.5}),
            },
            SweepRow {
                sysctl: "none".into(),
                knobs: vec![("gso".into(), "off".into())],
                result: serde_json::json!({"variant": "popline", "connections": 1, "gbps": 2.0, "cpu_s_per_gb": 7.0}),
            },
        ];
        let files = write(&dir, "transport", &[SysctlProfile::none()], &rows).unwrap();
        assert_eq!(files.len(), 3);
        let md = std::fs::read_to_string(dir.join("sweep.md")).unwrap();
        assert!(
            md.contains("| sysctl=none gso=off | popline | 1 | 2.000 | 7.00 |"),
            "{md}"
        );
        let svg = std::fs::read_to_string(dir.join("sweep.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("popline"), "{svg}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
