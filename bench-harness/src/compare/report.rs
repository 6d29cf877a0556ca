//! The rows of `popline-bench compare`: one [`Row`] per variant and mode, printed as one JSON object a line or
//! as a table with popline's ratios to each baseline.

use serde::Serialize;
use std::fmt::Write as _;

/// What one variant measured in one mode on one profile. Live-only fields are `null` in bulk rows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// `popline`, `tcp-cubic`, `tcp-bbr`, `quinn` or `srt`.
    pub variant: &'static str,
    /// `bulk` or `live`.
    pub mode: &'static str,
    /// The impairment profile's name.
    pub profile: String,
    /// The path's round-trip propagation delay, ms.
    pub rtt_ms: f64,
    /// The A-to-B direction's mean random loss (0..1).
    pub loss: f64,
    /// The A-to-B bottleneck rate, bits per second (`null`: unlimited).
    pub link_bps: Option<u64>,
    /// Application payload delivered per second over the measured window, bits per second (live: bytes of
    /// the judged frames that arrived complete, on time or not).
    pub goodput_bps: f64,
    /// Live: median capture-to-arrival latency of the judged frames that arrived, ms.
    pub frame_latency_p50_ms: Option<f64>,
    /// Live: 99th percentile of the same, ms.
    pub frame_latency_p99_ms: Option<f64>,
    /// Live: frames captured in the measured window.
    pub frames_sent: u64,
    /// Live: of those, frames that arrived complete within `budget_ms`.
    pub frames_on_time: u64,
    /// Live: of those, frames that arrived complete at all.
    pub frames_delivered: u64,
    /// Live: `frames_on_time / frames_sent`.
    pub on_time_ratio: Option<f64>,
    /// Live: the budget frames were judged against, ms.
    pub budget_ms: Option<f64>,
    /// SRT: the receiver latency it ran with, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt_latency_ms: Option<f64>,
    /// 95th percentile of the A-to-B packets' one-way delay through the emulated path (propagation plus
    /// bottleneck queueing), ms, as Pantheon reports it.
    pub p95_one_way_delay_ms: f64,
    /// CPU seconds (user + system) of the variant's own threads and processes per GB (1e9 bytes) of payload
    /// delivered, over the whole run (`null` when nothing was delivered).
    pub cpu_s_per_gb: Option<f64>,
    /// The whole machine's busy CPU seconds (user, system, irq, softirq, every CPU) over the run, less the
    /// link emulator's user time and other processes' time, per GB of payload delivered: the variant's threads and the kernel's work on
    /// its packets wherever it ran (softirq in other threads, timers), plus the emulator's TUN reads and
    /// writes (the same per packet for every variant). Charges kernel TCP for its protocol work as
    /// `cpu_s_per_gb` cannot.
    pub machine_cpu_s_per_gb: Option<f64>,
    /// The link emulator's threads (user + system) per GB of payload delivered; their system time holds the
    /// kernel's processing of the packets they write into the TUN devices.
    pub emulator_cpu_s_per_gb: Option<f64>,
    /// Live: `cpu_s_per_gb` over the steady part of the run only (from a second after the live warm-up to the
    /// end of the judged window, the same instants for every variant), per GB of the frames that arrived in
    /// it: what a long-lived link pays, without the connection's one-off costs (handshake, first page faults,
    /// popline's startup priming).
    pub steady_cpu_s_per_gb: Option<f64>,
    /// Live: `machine_cpu_s_per_gb` over the same steady part.
    pub steady_machine_cpu_s_per_gb: Option<f64>,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// Anything worth knowing about the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why the variant did not run (its numbers are then zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Row {
    /// The row's label in tables and plots: the variant, with SRT's latency.
    pub fn label(&self) -> String {
        match self.srt_latency_ms {
            Some(l) => format!("{}@{l:.0}ms", self.variant),
            None => self.variant.to_string(),
        }
    }

    /// On-time percentage, if live and anything was sent.
    pub fn on_time_pct(&self) -> Option<f64> {
        self.on_time_ratio.map(|r| r * 100.0)
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

/// The rows as a text table, followed by popline's ratios to each baseline.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<5} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "variant",
        "mode",
        "Mbit/s",
        "p95 ms",
        "lat p50",
        "lat p99",
        "on time",
        "budget",
        "frames",
        "cpu s/GB",
        "mach s/GB"
    );
    for r in rows {
        if let Some(why) = &r.skipped {
            let _ = writeln!(out, "{:<16} {:<5} skipped: {why}", r.label(), r.mode);
            continue;
        }
        let _ = writeln!(
            out,
            "{:<16} {:<5} {:>9.2} {:>9.1} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9}",
            r.label(),
            r.mode,
            r.goodput_bps / 1e6,
            r.p95_one_way_delay_ms,
            opt(r.frame_latency_p50_ms, 1),
            opt(r.frame_latency_p99_ms, 1),
            r.on_time_pct()
                .map_or_else(|| "-".to_string(), |p| format!("{p:.2}%")),
            opt(r.budget_ms, 0),
            if r.mode == "live" {
                r.frames_sent.to_string()
            } else {
                "-".to_string()
            },
            opt(r.cpu_s_per_gb, 2),
            opt(r.machine_cpu_s_per_gb, 2),
        );
    }
    for mode in ["bulk", "live"] {
        let Some(p) = rows
            .iter()
            .find(|r| r.mode == mode && r.variant == "popline" && r.skipped.is_none())
        else {
            continue;
        };
        let mut ratios = Vec::new();
        for r in rows
            .iter()
            .filter(|r| r.mode == mode && r.variant != "popline" && r.skipped.is_none())
        {
            let g = if r.goodput_bps > 0.0 {
                format!("{:.1}x", p.goodput_bps / r.goodput_bps)
            } else {
                "inf".to_string()
            };
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.1}x", a / b),
                _ => "-".to_string(),
            };
            let cpu = format!(
                "cpu/GB {} (machine {})",
                ratio(p.cpu_s_per_gb, r.cpu_s_per_gb),
                ratio(p.machine_cpu_s_per_gb, r.machine_cpu_s_per_gb)
            );
            let steady = format!(
                "steady cpu/GB {} (machine {})",
                ratio(p.steady_cpu_s_per_gb, r.steady_cpu_s_per_gb),
                ratio(p.steady_machine_cpu_s_per_gb, r.steady_machine_cpu_s_per_gb)
            );
            ratios.push(match mode {
                "live" => format!(
                    "popline/{}: goodput {g}, on time {} vs {}, {cpu}, {steady}",
                    r.label(),
                    opt(p.on_time_pct(), 2),
                    opt(r.on_time_pct(), 2)
                ),
                _ => format!("popline/{}: goodput {g}, {cpu}", r.label()),
            });
        }
        if !ratios.is_empty() {
            let _ = writeln!(out, "{mode}: {}", ratios.join("; "));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A row for report tests.
    pub(crate) fn sample(variant: &'static str, mode: &'static str, goodput_bps: f64) -> Row {
        let live = mode == "live";
        Row {
            variant,
            mode,
            profile: "test".to_string(),
            rtt_ms: 100.0,
            loss: 0.01,
            link_bps: Some(100_000_000),
            goodput_bps,
            frame_latency_p50_ms: live.then_some(150.0),
            frame_latency_p99_ms: live.then_some(270.0),
            frames_sent: if live { 1000 } else { 0 },
            frames_on_time: if live { 999 } else { 0 },
            frames_delivered: if live { 1000 } else { 0 },
            on_time_ratio: live.then_some(0.999),
            budget_ms: live.then_some(280.0),
            srt_latency_ms: (variant == "srt").then_some(400.0),
            p95_one_way_delay_ms: 60.0,
            cpu_s_per_gb: Some(3.0),
            machine_cpu_s_per_gb: Some(5.0),
            emulator_cpu_s_per_gb: Some(4.0),
            steady_cpu_s_per_gb: None,
            steady_machine_cpu_s_per_gb: None,
            seconds: 20.0,
            note: None,
            skipped: None,
        }
    }

    #[test]
    fn the_table_has_every_row_and_popline_ratios() {
        let rows = vec![
            sample("popline", "bulk", 90e6),
            sample("tcp-cubic", "bulk", 3e6),
            sample("popline", "live", 6e6),
            sample("srt", "live", 6e6),
        ];
        let t = table(&rows);
        assert!(
            t.contains("popline/tcp-cubic: goodput 30.0x, cpu/GB 1.0x (machine 1.0x)"),
            "{t}"
        );
        assert!(t.contains("srt@400ms"), "{t}");
        assert!(t.contains("99.90%"), "{t}");
        let json = serde_json::to_value(&rows[0]).unwrap();
        for key in [
            "variant",
            "mode",
            "goodput_bps",
            "frame_latency_p50_ms",
            "frame_latency_p99_ms",
            "frames_sent",
            "frames_on_time",
            "p95_one_way_delay_ms",
            "cpu_s_per_gb",
            "machine_cpu_s_per_gb",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    }
}
