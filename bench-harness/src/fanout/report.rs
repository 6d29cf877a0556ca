//! The result per server, side by side: a table for people, a JSON array (one object per server) for machines.

use super::percentile::percentile;
use super::ramp::{RampResult, StepReport};
use anyhow::{Context, Result};
use serde::Serialize;

/// What every server's report repeats about the run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// CPUs the servers were pinned to (`taskset -c` list).
    pub server_cpus: String,
    /// CPUs the load generator ran on.
    pub loadgen_cpus: String,
    /// What the publisher sent.
    pub source: String,
    /// The stream's bitrate, in bits/s (what one viewer receives).
    pub bitrate_bps: u64,
    /// Players added per step.
    pub step_viewers: usize,
    /// Seconds each step was held and measured.
    pub step_seconds: f64,
    /// Upper bound of the ramp.
    pub max_viewers: usize,
    /// Lag threshold of a late frame, in ms.
    pub max_lag_ms: f64,
    /// The popline node's `rtmp.write_coalesce_ms`.
    pub popline_write_coalesce_ms: u64,
    /// The popline node's `engine.backend` (`auto`, `uring`, `epoll`).
    pub popline_backend: String,
}

/// One server's row.
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    /// `nginx-rtmp` or `popline`.
    pub server: String,
    /// `ok` (at least one step passed), `failed_first_step`, `publish_failed` or `failed_to_start`.
    pub status: &'static str,
    /// Why the server could not be measured, when it could not.
    pub error: Option<String>,
    /// Players of the last step that passed (0 if none did).
    pub viewers_sustained: usize,
    /// `viewers_sustained` per CPU the server was pinned to.
    pub viewers_per_server_cpu: f64,
    /// Server CPU in the last passing step, in cores.
    pub cpu_cores_used: Option<f64>,
    /// Server CPU per 1000 viewers in the last passing step, in cores: the cost per viewer, comparable
    /// between servers even when the ramp stopped at the load generator's limit.
    pub cpu_cores_per_1000_viewers: Option<f64>,
    /// Server resident memory at the end of the last passing step, in MiB.
    pub rss_mb: Option<f64>,
    /// Time to first keyframe, p50 over the players of all passing steps, in ms.
    pub time_to_first_frame_ms_p50: Option<f64>,
    /// Time to first keyframe, p99 over the players of all passing steps, in ms.
    pub time_to_first_frame_ms_p99: Option<f64>,
    /// Lag (receive - send) p50 in the last passing step, in ms.
    pub added_latency_ms_p50: Option<f64>,
    /// Lag (receive - send) p99 in the last passing step, in ms.
    pub added_latency_ms_p99: Option<f64>,
    /// What all players received in the last passing step, in Mbit/s.
    pub received_mbit_s: Option<f64>,
    /// Players of passing steps that never got a keyframe (not in the TTFF percentiles).
    pub players_without_first_frame: usize,
    /// Steps run, the failing one included.
    pub steps_tried: usize,
    /// Why the ramp stopped.
    pub stop_reason: String,
    /// The failing step had the load generator saturated: the limit found may be the load generator's.
    pub loadgen_limited: bool,
    /// Largest delay of a publisher send behind its schedule, in ms.
    pub publisher_max_late_ms: f64,
    /// Most CPU other processes took on the server's CPUs in any step, in cores (see
    /// [`StepReport::others_on_server_cpus_cores`]); above [`NOISY_CORES`] the numbers are a lower bound.
    pub max_others_on_server_cpus_cores: f64,
    /// The run's settings.
    pub run: RunInfo,
    /// Every step.
    pub steps: Vec<StepReport>,
}

impl ServerReport {
    /// A server that could not be started.
    pub fn failed_to_start(server: &str, error: String, run: &RunInfo) -> Self {
        Self {
            server: server.into(),
            status: "failed_to_start",
            error: Some(error),
            viewers_sustained: 0,
            viewers_per_server_cpu: 0.0,
            cpu_cores_used: None,
            cpu_cores_per_1000_viewers: None,
            rss_mb: None,
            time_to_first_frame_ms_p50: None,
            time_to_first_frame_ms_p99: None,
            added_latency_ms_p50: None,
            added_latency_ms_p99: None,
            received_mbit_s: None,
            players_without_first_frame: 0,
            steps_tried: 0,
            stop_reason: "the server did not start".into(),
            loadgen_limited: false,
            publisher_max_late_ms: 0.0,
            max_others_on_server_cpus_cores: 0.0,
            run: run.clone(),
            steps: Vec::new(),
        }
    }

    /// A server's ramp, summarised.
    pub fn from_ramp(server: &str, mut ramp: RampResult, run: &RunInfo, server_cpus: usize) -> Self {
        let mut report = Self::failed_to_start(server, String::new(), run);
        report.error = ramp.publish_error.clone();
        report.stop_reason = ramp.stop_reason.clone();
        report.steps_tried = ramp.steps.len();
        report.publisher_max_late_ms = ramp.publisher_max_late_ms;
        report.max_others_on_server_cpus_cores = ramp
            .steps
            .iter()
            .map(|s| s.others_on_server_cpus_cores)
            .fold(0.0, f64::max);
        report.loadgen_limited = ramp
            .steps
            .last()
            .is_some_and(|s| !s.passed && s.loadgen_saturated);
        let ms = |us: u64| us as f64 / 1e3;
        report.time_to_first_frame_ms_p50 = percentile(&mut ramp.ttff_us, 50.0).map(ms);
        report.time_to_first_frame_ms_p99 = percentile(&mut ramp.ttff_us, 99.0).map(ms);
        report.players_without_first_frame = ramp.ttff_missing;
        report.status = if ramp.publish_error.is_some() {
            "publish_failed"
        } else if let Some(last) = ramp.last_passed() {
            report.viewers_sustained = last.viewers;
            report.viewers_per_server_cpu = last.viewers as f64 / server_cpus.max(1) as f64;
            report.cpu_cores_used = Some(last.server_cpu_cores);
            report.cpu_cores_per_1000_viewers =
                Some(last.server_cpu_cores * 1000.0 / last.viewers.max(1) as f64);
            report.rss_mb = Some(last.server_rss_mb);
            report.added_latency_ms_p50 = last.lag_ms_p50;
            report.added_latency_ms_p99 = last.lag_ms_p99;
            report.received_mbit_s = Some(last.received_mbit_s);
            "ok"
        } else {
            "failed_first_step"
        };
        if report.status == "failed_first_step" {
            report.error = ramp.steps.first().and_then(|s| s.fail_reason.clone());
        }
        report.steps = ramp.steps;
        report
    }
}

/// CPU (in cores) that other processes may take on the server's CPUs before a report calls the run noisy.
pub const NOISY_CORES: f64 = 0.05;

/// How a table row formats one server's value.
type Cell = Box<dyn Fn(&ServerReport) -> String>;

/// Prints the reports as a JSON array on stdout.
pub fn print_json(reports: &[ServerReport]) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(reports).context("serializing the report")?
    );
    Ok(())
}

/// Prints the reports side by side, then each server's steps and why it stopped.
pub fn print_table(reports: &[ServerReport]) {
    let Some(first) = reports.first() else { return };
    println!("RTMP fan-out: {}", describe_run(&first.run));
    print_columns(reports);
}

/// The run's settings in one line, for a table's heading.
pub fn describe_run(run: &RunInfo) -> String {
    format!(
        "{} ({:.0} kbit/s), +{} viewers per {:.0} s step up to {}, lag threshold {:.0} ms, \
         server on CPU(s) {}, load generator on CPU(s) {}",
        run.source,
        run.bitrate_bps as f64 / 1e3,
        run.step_viewers,
        run.step_seconds,
        run.max_viewers,
        run.max_lag_ms,
        run.server_cpus,
        run.loadgen_cpus
    )
}

/// Prints the reports side by side (a column each), then each one's steps and why it stopped.
pub fn print_columns(reports: &[ServerReport]) {
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    let rows: Vec<(&str, Cell)> = vec![
        ("status", Box::new(|r| r.status.to_string())),
        ("viewers sustained", Box::new(|r| r.viewers_sustained.to_string())),
        (
            "viewers per server CPU",
            Box::new(|r| format!("{:.0}", r.viewers_per_server_cpu)),
        ),
        ("server CPU (cores)", Box::new(move |r| opt(r.cpu_cores_used, 2))),
        (
            "server cores / 1000 viewers",
            Box::new(move |r| opt(r.cpu_cores_per_1000_viewers, 3)),
        ),
        ("server RSS (MB)", Box::new(move |r| opt(r.rss_mb, 1))),
        (
            "TTFF p50 (ms)",
            Box::new(move |r| opt(r.time_to_first_frame_ms_p50, 0)),
        ),
        (
            "TTFF p99 (ms)",
            Box::new(move |r| opt(r.time_to_first_frame_ms_p99, 0)),
        ),
        (
            "added latency p50 (ms)",
            Box::new(move |r| opt(r.added_latency_ms_p50, 1)),
        ),
        (
            "added latency p99 (ms)",
            Box::new(move |r| opt(r.added_latency_ms_p99, 1)),
        ),
        ("received (Mbit/s)", Box::new(move |r| opt(r.received_mbit_s, 0))),
        ("steps tried", Box::new(|r| r.steps_tried.to_string())),
    ];
    let width = reports.iter().map(|r| r.server.len()).max().unwrap_or(0).max(16);
    print!("{:<28}", "");
    for r in reports {
        print!(" {:>width$}", r.server);
    }
    println!();
    for (label, cell) in &rows {
        print!("{label:<28}");
        for r in reports {
            print!(" {:>width$}", cell(r));
        }
        println!();
    }
    let ok: Vec<&ServerReport> = reports.iter().filter(|r| r.status == "ok").collect();
    if let (Some(p), Some(n)) = (
        ok.iter().find(|r| r.server == "popline"),
        ok.iter().find(|r| r.server == "nginx-rtmp"),
    ) {
        println!(
            "popline / nginx-rtmp viewers sustained: {:.2}x",
            p.viewers_sustained as f64 / n.viewers_sustained.max(1) as f64
        );
    }
    for r in reports {
        println!();
        println!("{}: stopped: {}", r.server, r.stop_reason);
        if let Some(e) = &r.error {
            println!("{}: error: {e}", r.server);
        }
        if r.max_others_on_server_cpus_cores > NOISY_CORES {
            println!(
                "{}: other processes took up to {:.2} cores of the server's CPUs: the machine was shared, \
                 the numbers are a lower bound",
                r.server, r.max_others_on_server_cpus_cores
            );
        }
        if r.loadgen_limited {
            println!(
                "{}: the load generator was saturated in the failing step; the limit may be its own",
                r.server
            );
        }
        if !r.steps.is_empty() {
            println!(
                "  {:>7} {:>6} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
                "viewers",
                "pass",
                "srv cores",
                "others",
                "RSS MB",
                "lag p50",
                "lag p99",
                "read p99",
                "gen cores",
                "failing",
                "missed%"
            );
            for s in &r.steps {
                println!(
                    "  {:>7} {:>6} {:>9.2} {:>8.2} {:>8.1} {:>9} {:>9} {:>9} {:>9.2} {:>8} {:>8.2}",
                    s.viewers,
                    if s.passed { "yes" } else { "no" },
                    s.server_cpu_cores,
                    s.others_on_server_cpus_cores,
                    s.server_rss_mb,
                    opt(s.lag_ms_p50, 1),
                    opt(s.lag_ms_p99, 1),
                    opt(s.read_lag_ms_p99, 1),
                    s.loadgen_cpu_cores,
                    s.players_failing,
                    s.frames_missed_percent
                );
            }
        }
    }
}
