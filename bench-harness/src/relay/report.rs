//! The rows of `popline-bench relay`: one [`Row`] per variant (and, with `--hops`, per chain length), printed
//! as one JSON object a line or as a table.

use serde::Serialize;

/// What one variant measured on one profile.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// `popline`, `nginx-rtmp` or `nginx-rtmp-bbr`.
    pub variant: &'static str,
    /// The impairment profile's name (of the A-B link).
    pub profile: String,
    /// The A-B path's round-trip propagation delay, ms.
    pub rtt_ms: f64,
    /// Relay nodes between the publisher and the viewers (`--hops`; 2 for A and B).
    pub nodes: usize,
    /// The stream's bitrate (FLV payloads, stamps included), bits per second.
    pub stream_bps: u64,
    /// Viewers playing from the last node.
    pub viewers: usize,
    /// Video frames the publisher sent in the measured window.
    pub frames_sent: u64,
    /// Frames that reached the *worst* viewer within `budget_ms` of their capture (every viewer is judged;
    /// the worst one is reported).
    pub frames_on_time: u64,
    /// `frames_on_time / frames_sent` (of the worst viewer).
    pub on_time_ratio: Option<f64>,
    /// Mean over the viewers of their frames on time.
    pub frames_on_time_mean: f64,
    /// Frames delivered, summed over the viewers, although a reference they need (an earlier key or P frame
    /// of their GOP) was not: a relay must never deliver one (0 for popline).
    pub frames_undecodable: u64,
    /// Median send-stamp-to-arrival latency of the judged frames that arrived, over every viewer, ms.
    pub e2e_latency_ms_p50: Option<f64>,
    /// 99th percentile of the same, ms (frames still missing when the viewers stopped are not in it).
    pub e2e_latency_ms_p99: Option<f64>,
    /// Share of the measured window in which a player at a fixed playout delay of `budget_ms` had nothing new
    /// to show (a frame, or one of its references, missed the budget), mean over the viewers.
    pub stall_ratio: Option<f64>,
    /// The budget frames were judged against, ms.
    pub budget_ms: f64,
    /// CPU seconds (user + system) of the relay processes (every node, workers included) over the window
    /// per GB (1e9 bytes) the publisher sent in it; each node also serves its clients (the publisher, the
    /// viewers). Kernel TCP work in softirq outside the relays' threads is not in it.
    pub cpu_s_per_gb: Option<f64>,
    /// The congestion controller `ss -ti` showed on the relay's A-to-B TCP connection (nginx-rtmp rows).
    pub tcp_cc: Option<String>,
    /// `--max-bitrate`: the highest stream bitrate found with >= 99.9% of frames on time at every viewer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bitrate_bps: Option<u64>,
    /// `--hops`: p99 latency added per relay node over the direct path, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_latency_per_hop_ms_p99: Option<f64>,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// Anything worth knowing about the run (viewers that ended early, the publisher falling behind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why the variant did not run or failed (its numbers are then zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Row {
    /// A row for a variant that could not run.
    pub fn failed(variant: &'static str, profile: &str, rtt_ms: f64, stream_bps: u64, why: String) -> Row {
        Row {
            variant,
            profile: profile.to_string(),
            rtt_ms,
            nodes: 0,
            stream_bps,
            viewers: 0,
            frames_sent: 0,
            frames_on_time: 0,
            on_time_ratio: None,
            frames_on_time_mean: 0.0,
            frames_undecodable: 0,
            e2e_latency_ms_p50: None,
            e2e_latency_ms_p99: None,
            stall_ratio: None,
            budget_ms: 0.0,
            cpu_s_per_gb: None,
            tcp_cc: None,
            max_bitrate_bps: None,
            added_latency_per_hop_ms_p99: None,
            seconds: 0.0,
            note: None,
            error: Some(why),
        }
    }

    /// Whether the worst viewer got at least `ratio` of the frames on time (and the run did not fail).
    pub fn passes(&self, ratio: f64) -> bool {
        self.error.is_none() && self.frames_sent > 0 && self.on_time_ratio.is_some_and(|r| r >= ratio)
    }
}

/// Prints one JSON object per row, a line each.
pub fn print_json(rows: &[Row]) -> anyhow::Result<()> {
    for row in rows {
        println!("{}", serde_json::to_string(row)?);
    }
    Ok(())
}

/// Prints the rows as a table.
pub fn print_table(rows: &[Row]) {
    let opt = |v: Option<f64>, scale: f64, digits: usize| {
        v.map_or_else(|| "-".to_string(), |x| format!("{:.*}", digits, x * scale))
    };
    println!(
        "{:<16} {:>5} {:>9} {:>9} {:>10} {:>7} {:>8} {:>8} {:>7} {:>8} {:>6} {:>11}",
        "variant",
        "nodes",
        "Mbit/s",
        "on time",
        "on time %",
        "undec",
        "p50 ms",
        "p99 ms",
        "stall",
        "cpu s/GB",
        "cc",
        "max Mbit/s"
    );
    for r in rows {
        if let Some(e) = &r.error {
            println!("{:<16} failed: {e}", r.variant);
            continue;
        }
        println!(
            "{:<16} {:>5} {:>9.2} {:>9} {:>10} {:>7} {:>8} {:>8} {:>7} {:>8} {:>6} {:>11}",
            r.variant,
            r.nodes,
            r.stream_bps as f64 / 1e6,
            format!("{}/{}", r.frames_on_time, r.frames_sent),
            opt(r.on_time_ratio, 100.0, 2),
            r.frames_undecodable,
            opt(r.e2e_latency_ms_p50, 1.0, 1),
            opt(r.e2e_latency_ms_p99, 1.0, 1),
            opt(r.stall_ratio, 1.0, 4),
            opt(r.cpu_s_per_gb, 1.0, 1),
            r.tcp_cc.as_deref().unwrap_or("-"),
            opt(r.max_bitrate_bps.map(|b| b as f64), 1e-6, 2),
        );
        if let Some(h) = r.added_latency_per_hop_ms_p99 {
            println!("{:<16} added latency per node, p99: {h:.2} ms", "");
        }
        if let Some(n) = &r.note {
            println!("{:<16} note: {n}", "");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_has_the_contract_s_json_fields() {
        let mut row = Row::failed("popline", "lossy-1pct", 100.0, 6_000_000, "x".into());
        row.error = None;
        row.frames_sent = 1000;
        row.frames_on_time = 999;
        row.on_time_ratio = Some(0.999);
        let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&row).unwrap()).unwrap();
        for key in [
            "variant",
            "profile",
            "stream_bps",
            "frames_sent",
            "frames_on_time",
            "frames_undecodable",
            "e2e_latency_ms_p50",
            "e2e_latency_ms_p99",
            "stall_ratio",
            "cpu_s_per_gb",
            "tcp_cc",
            "budget_ms",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert!(v.get("max_bitrate_bps").is_none(), "only with --max-bitrate");
        assert_eq!(v["variant"], "popline");
        assert!(row.passes(0.999));
        assert!(!row.passes(0.9995));
        row.error = Some("failed".into());
        assert!(!row.passes(0.5));
    }
}
