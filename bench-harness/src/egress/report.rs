//! The rows of `popline-bench egress`, each with its part and variant: tables for people, a JSON array for
//! machines. Each row that has a target of issue 19 says it (`target`) and whether it was met
//! (`target_met`).

use super::freshness::Freshness;
use super::glass::Unit;
use super::hls_latency::HlsPlan;
use super::poller::{PollMode, PollReport};
use crate::fanout::percentile::percentile_of_sorted;
use crate::fanout::report::{self, ServerReport};
use crate::fanout::Setup;
use anyhow::{Context, Result};
use serde::Serialize;

/// Part `flv`'s name in the JSON.
pub const PART_VIEWERS: &str = "viewers_per_core";
/// Part `hls`'s name in the JSON.
pub const PART_LATENCY: &str = "hls_latency";
/// Issue 19: HTTP-FLV viewers per core at least this share of RTMP's.
pub const FLV_TARGET_RATIO: f64 = 0.8;
/// Issue 19: LL-HLS glass-to-playlist p99 under this, in ms.
pub const LL_HLS_TARGET_P99_MS: f64 = 1000.0;

/// One protocol's ramp in part `flv`: the fanout report and what the comparison needs.
#[derive(Debug, Clone, Serialize)]
pub struct ViewersRow {
    /// [`PART_VIEWERS`].
    pub part: &'static str,
    /// `popline-rtmp` or `popline-http-flv`.
    pub variant: String,
    /// `rtmp` or `http-flv`.
    pub protocol: &'static str,
    /// Viewers sustained per CPU the server was pinned to.
    pub viewers_per_core: f64,
    /// Viewers per core of CPU the server used in the last passing step (1000 / `cpu_cores_per_1000_viewers`).
    pub viewers_per_core_used: Option<f64>,
    /// HTTP-FLV row: its viewers per core over RTMP's, on `ratio_basis`.
    pub ratio_to_rtmp: Option<f64>,
    /// `sustained` when both ramps stopped at the server's limit (viewers per core compare capacities);
    /// `cpu_cost` otherwise (a ramp reached `--viewers` or the load generator's limit first: viewers per core
    /// *used* compare costs, at the viewer counts each ramp last passed).
    pub ratio_basis: Option<&'static str>,
    /// HTTP-FLV row: viewers sustained per core over RTMP's.
    pub ratio_to_rtmp_sustained: Option<f64>,
    /// HTTP-FLV row: viewers per core used over RTMP's.
    pub ratio_to_rtmp_cpu_cost: Option<f64>,
    /// The issue's target for this row, if it has one.
    pub target: Option<String>,
    /// Whether it was met (`None`: not measured).
    pub target_met: Option<bool>,
    /// The ramp, as `popline-bench fanout` reports it.
    #[serde(flatten)]
    pub ramp: ServerReport,
}

impl ViewersRow {
    fn new(ramp: ServerReport, protocol: &'static str, server_cpus: usize) -> Self {
        Self {
            part: PART_VIEWERS,
            variant: ramp.server.clone(),
            protocol,
            viewers_per_core: ramp.viewers_sustained as f64 / server_cpus.max(1) as f64,
            viewers_per_core_used: ramp
                .cpu_cores_per_1000_viewers
                .filter(|c| *c > 0.0)
                .map(|c| 1000.0 / c),
            ratio_to_rtmp: None,
            ratio_basis: None,
            ratio_to_rtmp_sustained: None,
            ratio_to_rtmp_cpu_cost: None,
            target: None,
            target_met: None,
            ramp,
        }
    }

    /// The RTMP and HTTP-FLV rows, the comparison on the HTTP-FLV one.
    pub fn pair(rtmp: ServerReport, flv: ServerReport, server_cpus: usize) -> Vec<ViewersRow> {
        let rtmp = Self::new(rtmp, "rtmp", server_cpus);
        let mut flv = Self::new(flv, "http-flv", server_cpus);
        let both_ok = rtmp.ramp.status == "ok" && flv.ramp.status == "ok";
        flv.ratio_to_rtmp_sustained =
            both_ok.then(|| flv.viewers_per_core / rtmp.viewers_per_core.max(f64::MIN_POSITIVE));
        flv.ratio_to_rtmp_cpu_cost = match (flv.viewers_per_core_used, rtmp.viewers_per_core_used) {
            (Some(f), Some(r)) if both_ok => Some(f / r),
            _ => None,
        };
        let (ratio, basis) = if found_capacity(&rtmp.ramp) && found_capacity(&flv.ramp) {
            (flv.ratio_to_rtmp_sustained, "sustained")
        } else {
            (flv.ratio_to_rtmp_cpu_cost, "cpu_cost")
        };
        flv.ratio_to_rtmp = ratio;
        flv.ratio_basis = ratio.map(|_| basis);
        flv.target = Some(format!("HTTP-FLV viewers per core >= {FLV_TARGET_RATIO}x RTMP's"));
        flv.target_met = ratio.map(|r| r >= FLV_TARGET_RATIO);
        vec![rtmp, flv]
    }
}

/// Whether a ramp stopped at the server's limit: a step failed with the load generator not saturated.
fn found_capacity(r: &ServerReport) -> bool {
    r.status == "ok" && !r.loadgen_limited && r.steps.last().is_some_and(|s| !s.passed)
}

/// What part `hls`'s rows repeat about the run.
#[derive(Debug, Clone, Serialize)]
pub struct HlsRunInfo {
    /// CPUs the servers were pinned to.
    pub server_cpus: String,
    /// CPUs the publishers and pollers ran on.
    pub loadgen_cpus: String,
    /// What the publishers sent.
    pub source: String,
    /// The stream's bitrate, in bits/s.
    pub bitrate_bps: u64,
    /// The stream's keyframe interval, in ms.
    pub gop_ms: u32,
    /// Seconds the part was set to measure.
    pub planned_seconds: f64,
    /// The popline node's `rtmp.write_coalesce_ms`.
    pub popline_write_coalesce_ms: u64,
    /// The popline node's `engine.backend`.
    pub popline_backend: String,
    /// nginx-rtmp's `hls_fragment`, in ms.
    pub nginx_hls_fragment_ms: u64,
    /// nginx-rtmp's `hls_playlist_length`, in ms.
    pub nginx_hls_playlist_length_ms: u64,
}

impl HlsRunInfo {
    /// The run's settings.
    pub fn new(setup: &Setup, plan: &HlsPlan) -> Self {
        Self {
            server_cpus: setup.run_info.server_cpus.clone(),
            loadgen_cpus: setup.run_info.loadgen_cpus.clone(),
            source: setup.run_info.source.clone(),
            bitrate_bps: setup.run_info.bitrate_bps,
            gop_ms: setup.source.gop_ms(),
            planned_seconds: plan.duration.as_secs_f64(),
            popline_write_coalesce_ms: setup.run_info.popline_write_coalesce_ms,
            popline_backend: setup.run_info.popline_backend.clone(),
            nginx_hls_fragment_ms: plan.nginx.fragment_ms,
            nginx_hls_playlist_length_ms: plan.nginx.playlist_ms,
        }
    }
}

/// One playlist's glass-to-playlist latency in part `hls`.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    /// [`PART_LATENCY`].
    pub part: &'static str,
    /// `popline-hls`, `popline-ll-hls` or `nginx-rtmp-hls`.
    pub variant: String,
    /// `ok` (samples taken, no error) or `failed`.
    pub status: &'static str,
    /// Why it failed or stopped early.
    pub error: Option<String>,
    /// What was sampled: `segment` or `part`.
    pub unit: &'static str,
    /// How the playlist was read: `interval` or `blocking_reload`.
    pub poll: &'static str,
    /// The poll interval, in ms (interval polling: a unit is seen up to this late, so it bounds the
    /// resolution; about half of it is in every sample on average).
    pub poll_ms: Option<u64>,
    /// Units that appeared after the first playlist read (one sample each).
    pub samples: usize,
    /// Capture of a unit's newest frame to its first appearance in the playlist, p50, in ms.
    pub glass_to_playlist_ms_p50: Option<f64>,
    /// The same, p99.
    pub glass_to_playlist_ms_p99: Option<f64>,
    /// The same, largest.
    pub glass_to_playlist_ms_max: Option<f64>,
    /// The same, smallest.
    pub glass_to_playlist_ms_min: Option<f64>,
    /// The same, mean (interval polling adds half the interval to it on average, alike for every variant
    /// polled so: differences of means compare servers finer than the interval does).
    pub glass_to_playlist_ms_mean: Option<f64>,
    /// The mean's standard error (sample standard deviation / sqrt(samples)), in ms.
    pub glass_to_playlist_ms_mean_stderr: Option<f64>,
    /// p50 of each sample's lower bound (the read before it, which did not list it, was requested then): the
    /// latency is between this and the sample, so for interval polling the two bracket the poll's
    /// uncertainty, in ms.
    pub glass_to_playlist_lower_bound_ms_p50: Option<f64>,
    /// The same, p99.
    pub glass_to_playlist_lower_bound_ms_p99: Option<f64>,
    /// Mean duration of the units sampled, in ms.
    pub unit_duration_ms_mean: Option<f64>,
    /// popline: the largest |EXT-X-PROGRAM-DATE-TIME - send time of the segment's first frame as placed by
    /// the accumulated durations|, in ms (the placement's cross-check; about 1 ms when they agree).
    pub program_date_time_check_ms_max: Option<f64>,
    /// Freshness, the age of the newest media a player can fetch (now - capture of the newest frame of the
    /// newest unit the last playlist read listed: complete segment for plain HLS, part for LL-HLS), sampled
    /// every ms of the run, p50, in ms.
    pub freshness_ms_p50: Option<f64>,
    /// The same, p99.
    pub freshness_ms_p99: Option<f64>,
    /// The same, mean.
    pub freshness_ms_mean: Option<f64>,
    /// The same, largest.
    pub freshness_ms_max: Option<f64>,
    /// Playlist reads that listed a unit placed on the publisher's timeline (the steps of the freshness
    /// sawtooth).
    pub freshness_reads: usize,
    /// Playlists read.
    pub playlists: u64,
    /// Requests made.
    pub requests: u64,
    /// Requests that failed (not `200`, not `404`).
    pub requests_failed: u64,
    /// The first failed request.
    pub first_request_failure: Option<String>,
    /// Seconds measured.
    pub seconds: f64,
    /// The issue's target for this row, if it has one.
    pub target: Option<String>,
    /// Whether it was met (`None`: not measured).
    pub target_met: Option<bool>,
    /// The run's settings.
    pub run: HlsRunInfo,
}

impl LatencyRow {
    /// A variant that could not be measured.
    pub fn failed(variant: &str, error: String, run: &HlsRunInfo) -> Self {
        Self {
            part: PART_LATENCY,
            variant: variant.into(),
            status: "failed",
            error: Some(error),
            unit: "",
            poll: "",
            poll_ms: None,
            samples: 0,
            glass_to_playlist_ms_p50: None,
            glass_to_playlist_ms_p99: None,
            glass_to_playlist_ms_max: None,
            glass_to_playlist_ms_min: None,
            glass_to_playlist_ms_mean: None,
            glass_to_playlist_ms_mean_stderr: None,
            glass_to_playlist_lower_bound_ms_p50: None,
            glass_to_playlist_lower_bound_ms_p99: None,
            unit_duration_ms_mean: None,
            program_date_time_check_ms_max: None,
            freshness_ms_p50: None,
            freshness_ms_p99: None,
            freshness_ms_mean: None,
            freshness_ms_max: None,
            freshness_reads: 0,
            playlists: 0,
            requests: 0,
            requests_failed: 0,
            first_request_failure: None,
            seconds: 0.0,
            target: None,
            target_met: None,
            run: run.clone(),
        }
    }

    /// A poller's measurements (`error`: what stopped the variant besides the poller's own error).
    pub fn from_poll(
        variant: &str,
        poll: &PollReport,
        error: Option<String>,
        seconds: f64,
        run: &HlsRunInfo,
    ) -> Self {
        let mut row = Self::failed(variant, String::new(), run);
        row.error = poll.error.clone().or(error);
        let tracker = &poll.tracker;
        let mut latencies: Vec<u64> = tracker.samples().iter().map(|s| s.latency_us).collect();
        latencies.sort_unstable();
        let ms = |us: u64| us as f64 / 1e3;
        row.samples = latencies.len();
        row.glass_to_playlist_ms_p50 = percentile_of_sorted(&latencies, 50.0).map(ms);
        row.glass_to_playlist_ms_p99 = percentile_of_sorted(&latencies, 99.0).map(ms);
        row.glass_to_playlist_ms_max = latencies.last().copied().map(ms);
        row.glass_to_playlist_ms_min = latencies.first().copied().map(ms);
        (
            row.glass_to_playlist_ms_mean,
            row.glass_to_playlist_ms_mean_stderr,
        ) = mean_and_stderr(&latencies.iter().map(|&us| ms(us)).collect::<Vec<f64>>());
        let mut lower: Vec<u64> = tracker.samples().iter().filter_map(|s| s.lower_us).collect();
        lower.sort_unstable();
        row.glass_to_playlist_lower_bound_ms_p50 = percentile_of_sorted(&lower, 50.0).map(ms);
        row.glass_to_playlist_lower_bound_ms_p99 = percentile_of_sorted(&lower, 99.0).map(ms);
        let durations = tracker.durations_ms();
        row.unit_duration_ms_mean =
            (!durations.is_empty()).then(|| durations.iter().sum::<u64>() as f64 / durations.len() as f64);
        row.program_date_time_check_ms_max = tracker
            .program_date_time_offsets_us()
            .iter()
            .map(|o| o.unsigned_abs())
            .max()
            .map(ms);
        row.freshness_reads = tracker.newest_seen().len();
        if let Some(f) = Freshness::of(tracker.newest_seen()) {
            row.freshness_ms_p50 = Some(f.p50_ms);
            row.freshness_ms_p99 = Some(f.p99_ms);
            row.freshness_ms_mean = Some(f.mean_ms);
            row.freshness_ms_max = Some(f.max_ms);
        }
        row.playlists = tracker.playlists();
        row.requests = poll.requests;
        row.requests_failed = poll.failed;
        row.first_request_failure = poll.first_failure.clone();
        row.seconds = seconds;
        if row.error.is_none() && row.samples == 0 {
            row.error = Some(match &poll.first_failure {
                Some(f) => format!("no new segment or part appeared; a request failed: {f}"),
                None => "no new segment or part appeared".into(),
            });
        }
        row.status = if row.error.is_none() { "ok" } else { "failed" };
        row
    }

    /// The row with what it sampled and how it polled.
    pub fn with_unit(mut self, unit: Unit, mode: PollMode) -> Self {
        self.unit = unit.name();
        self.poll = mode.name();
        self.poll_ms = mode.interval_ms();
        self
    }

    /// Sets the targets: LL-HLS p99 under [`LL_HLS_TARGET_P99_MS`]; popline's HLS below nginx-rtmp's, on the
    /// mean (both are polled alike, so the poll's wait cancels out of the difference), unresolved (`None`)
    /// while the difference is within twice its standard error.
    pub fn compare(rows: &mut [LatencyRow]) {
        let ok = |rows: &[LatencyRow], name: &str| {
            rows.iter()
                .find(|r| r.variant == name && r.status == "ok")
                .map(|r| {
                    (
                        r.glass_to_playlist_ms_p99,
                        r.glass_to_playlist_ms_mean,
                        r.glass_to_playlist_ms_mean_stderr,
                    )
                })
        };
        let nginx = ok(rows, "nginx-rtmp-hls");
        let popline = ok(rows, "popline-hls");
        let ll = ok(rows, "popline-ll-hls").and_then(|(p99, _, _)| p99);
        for row in rows.iter_mut() {
            match row.variant.as_str() {
                "popline-ll-hls" => {
                    row.target = Some(format!("glass-to-playlist p99 < {LL_HLS_TARGET_P99_MS:.0} ms"));
                    row.target_met = ll.map(|p| p < LL_HLS_TARGET_P99_MS);
                }
                "popline-hls" => {
                    let mut target = "glass-to-playlist mean below nginx-rtmp-hls's".to_string();
                    row.target_met = None;
                    if let (Some((_, Some(p), Some(p_se))), Some((_, Some(n), Some(n_se)))) = (popline, nginx)
                    {
                        let se = (p_se * p_se + n_se * n_se).sqrt();
                        let diff = n - p;
                        target.push_str(&format!(
                            " ({p:.1} vs {n:.1} ms, difference {diff:+.1} +- {se:.1} ms)"
                        ));
                        if diff.abs() < 2.0 * se {
                            target.push_str(": unresolved, within twice the standard error");
                        } else {
                            row.target_met = Some(diff > 0.0);
                        }
                    }
                    row.target = Some(target);
                }
                _ => {}
            }
        }
    }
}

/// The mean of `values` and its standard error (`None` for the error below two values).
fn mean_and_stderr(values: &[f64]) -> (Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (Some(mean), None);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (Some(mean), Some((variance / n).sqrt()))
}

/// A row of either part (the JSON array holds both kinds).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Row {
    /// Part `flv`.
    Viewers(Box<ViewersRow>),
    /// Part `hls`.
    Latency(Box<LatencyRow>),
}

/// Prints the rows as a JSON array on stdout.
pub fn print_json(rows: &[Row]) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(rows).context("serializing the report")?
    );
    Ok(())
}

/// Prints part `flv`'s rows: the fanout table (one column per protocol) and the comparison.
pub fn print_viewers(rows: &[ViewersRow]) {
    let Some(first) = rows.first() else { return };
    println!(
        "HTTP-FLV vs RTMP viewers per core (popline, the fanout ramp): {}",
        report::describe_run(&first.ramp.run)
    );
    let reports: Vec<ServerReport> = rows.iter().map(|r| r.ramp.clone()).collect();
    report::print_columns(&reports);
    println!();
    for r in rows {
        println!(
            "{}: {:.0} viewers per core, {} viewers per core used",
            r.variant,
            r.viewers_per_core,
            r.viewers_per_core_used
                .map_or("-".to_string(), |v| format!("{v:.0}"))
        );
        if let Some(ratio) = r.ratio_to_rtmp {
            println!(
                "HTTP-FLV / RTMP viewers per core: {ratio:.2}x ({}; sustained {}, by CPU cost {}); target: {} -> {}",
                r.ratio_basis.unwrap_or("-"),
                fmt_ratio(r.ratio_to_rtmp_sustained),
                fmt_ratio(r.ratio_to_rtmp_cpu_cost),
                r.target.as_deref().unwrap_or("-"),
                verdict(r.target_met)
            );
        } else if r.protocol == "http-flv" {
            println!("HTTP-FLV / RTMP viewers per core: not measured (a ramp failed)");
        }
    }
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.2}x"))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "undecided",
    }
}

/// How a row's playlist was read, for the tables.
fn poll_label(r: &LatencyRow) -> String {
    match r.poll_ms {
        Some(ms) => format!("every {ms} ms"),
        None if r.poll == "blocking_reload" => "blocking reload".to_string(),
        None => "-".to_string(),
    }
}

/// Prints part `hls`'s rows: glass-to-playlist latency and freshness, one line per variant each, then the
/// errors and the resolution note.
pub fn print_latency(rows: &[LatencyRow]) {
    let Some(first) = rows.first() else { return };
    let run = &first.run;
    println!(
        "HLS glass-to-playlist latency (capture of the newest frame of a segment or part to its first appearance \
         in the playlist): {} ({:.0} kbit/s, GOP {} ms), {:.0} s, servers on CPU(s) {}, publishers and pollers \
         on CPU(s) {}; popline write_coalesce_ms {}, nginx-rtmp hls_fragment {} ms, hls_playlist_length {} ms",
        run.source,
        run.bitrate_bps as f64 / 1e3,
        run.gop_ms,
        run.planned_seconds,
        run.server_cpus,
        run.loadgen_cpus,
        run.popline_write_coalesce_ms,
        run.nginx_hls_fragment_ms,
        run.nginx_hls_playlist_length_ms
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{:<16} {:<8} {:<16} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8}  target",
        "variant",
        "unit",
        "poll",
        "samples",
        "p50 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "lower p50",
        "lower p99",
        "unit ms",
        "PDT chk"
    );
    for r in rows {
        let poll = poll_label(r);
        println!(
            "{:<16} {:<8} {:<16} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8}  {}",
            r.variant,
            r.unit,
            poll,
            r.samples,
            opt(r.glass_to_playlist_ms_p50),
            opt(r.glass_to_playlist_ms_p99),
            opt(r.glass_to_playlist_ms_max),
            opt(r.glass_to_playlist_ms_mean),
            opt(r.glass_to_playlist_lower_bound_ms_p50),
            opt(r.glass_to_playlist_lower_bound_ms_p99),
            opt(r.unit_duration_ms_mean),
            opt(r.program_date_time_check_ms_max),
            r.target
                .as_deref()
                .map_or(String::new(), |t| format!("{t}: {}", verdict(r.target_met)))
        );
    }
    println!();
    println!(
        "HLS freshness (the age of the newest media a player can fetch: now - capture of the newest frame of the \
         newest segment (HLS) or part (LL-HLS) the last playlist read listed, sampled every ms of the run)"
    );
    println!(
        "{:<16} {:<8} {:<16} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "variant", "unit", "poll", "reads", "p50 ms", "p99 ms", "mean ms", "max ms"
    );
    for r in rows {
        println!(
            "{:<16} {:<8} {:<16} {:>7} {:>8} {:>8} {:>8} {:>8}",
            r.variant,
            r.unit,
            poll_label(r),
            r.freshness_reads,
            opt(r.freshness_ms_p50),
            opt(r.freshness_ms_p99),
            opt(r.freshness_ms_mean),
            opt(r.freshness_ms_max)
        );
    }
    for r in rows {
        if let Some(e) = &r.error {
            println!("{}: {}: {e}", r.variant, r.status);
        } else if let Some(f) = &r.first_request_failure {
            println!(
                "{}: {} request(s) failed, e.g.: {f}",
                r.variant, r.requests_failed
            );
        }
    }
    if let Some(ms) = rows.iter().find_map(|r| r.poll_ms) {
        println!(
            "note: interval polling sees a new segment up to {ms} ms after it appeared (about {} ms on average): \
             the poll interval bounds the resolution of those rows (each sample's latency lies between its lower \
             bound, the request time of the read before, and its value); LL-HLS is read with blocking reload.",
            ms / 2
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::report::RunInfo;

    fn ramp(name: &str, viewers: usize, cores: f64, limit_found: bool) -> ServerReport {
        let run = RunInfo {
            server_cpus: "1".into(),
            loadgen_cpus: "0".into(),
            source: "synthetic".into(),
            bitrate_bps: 600_000,
            step_viewers: 1000,
            step_seconds: 4.0,
            max_viewers: 16_000,
            max_lag_ms: 1000.0,
            popline_write_coalesce_ms: 100,
            popline_backend: "auto".into(),
        };
        let mut r = ServerReport::failed_to_start(name, String::new(), &run);
        r.status = "ok";
        r.viewers_sustained = viewers;
        r.cpu_cores_used = Some(cores);
        r.cpu_cores_per_1000_viewers = Some(cores * 1000.0 / viewers as f64);
        if limit_found {
            // The ramp's last step failed (with the load generator not saturated).
            r.steps.push(crate::fanout::ramp::StepReport::default());
        }
        r
    }

    #[test]
    fn http_flv_is_compared_on_capacity_when_both_ramps_found_it_else_on_cpu_cost() {
        // Both ramps stopped at the server's limit: 6000 vs 8000 viewers on one CPU.
        let rows = ViewersRow::pair(ramp("r", 8000, 0.9, true), ramp("f", 6000, 0.9, true), 1);
        let flv = &rows[1];
        assert_eq!(
            (flv.ratio_basis, flv.ratio_to_rtmp),
            (Some("sustained"), Some(0.75))
        );
        assert_eq!(flv.target_met, Some(false));
        assert!(rows[0].ratio_to_rtmp.is_none() && rows[0].target.is_none());
        // Both reached --viewers: by cost, 0.5 vs 0.4 cores for 4000 viewers.
        let rows = ViewersRow::pair(ramp("r", 4000, 0.4, false), ramp("f", 4000, 0.5, false), 1);
        let flv = &rows[1];
        assert_eq!(flv.ratio_basis, Some("cpu_cost"));
        assert!((flv.ratio_to_rtmp.unwrap() - 0.8).abs() < 1e-9, "{flv:?}");
        assert_eq!(flv.ratio_to_rtmp_sustained, Some(1.0));
        assert_eq!(flv.target_met, Some(true));
        // A failed ramp: no ratio.
        let mut failed = ramp("f", 0, 0.0, false);
        failed.status = "failed_first_step";
        let rows = ViewersRow::pair(ramp("r", 4000, 0.4, false), failed, 1);
        assert_eq!((rows[1].ratio_to_rtmp, rows[1].target_met), (None, None));
    }

    fn row(variant: &str, latencies_ms: &[f64]) -> LatencyRow {
        let info = HlsRunInfo {
            server_cpus: "1".into(),
            loadgen_cpus: "0".into(),
            source: "synthetic".into(),
            bitrate_bps: 600_000,
            gop_ms: 2000,
            planned_seconds: 60.0,
            popline_write_coalesce_ms: 100,
            popline_backend: "auto".into(),
            nginx_hls_fragment_ms: 2000,
            nginx_hls_playlist_length_ms: 12_000,
        };
        let mut r = LatencyRow::failed(variant, String::new(), &info);
        r.status = "ok";
        r.error = None;
        let mut sorted = latencies_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        r.glass_to_playlist_ms_p99 = sorted.last().copied();
        (r.glass_to_playlist_ms_mean, r.glass_to_playlist_ms_mean_stderr) = mean_and_stderr(latencies_ms);
        r
    }

    #[test]
    fn targets_are_judged_and_a_difference_within_the_noise_is_not() {
        let mut rows = vec![
            row("popline-hls", &[5.0, 30.0, 55.0, 20.0]),
            row("popline-ll-hls", &[8.0, 12.0, 900.0]),
            row("nginx-rtmp-hls", &[10.0, 35.0, 50.0, 25.0]),
        ];
        LatencyRow::compare(&mut rows);
        assert_eq!(rows[1].target_met, Some(true));
        assert_eq!(rows[0].target_met, None, "{:?}", rows[0].target);
        assert!(rows[0].target.as_deref().unwrap().contains("unresolved"));
        assert_eq!(rows[2].target, None);
        let mut rows = vec![
            row("popline-hls", &[5.0, 6.0, 7.0, 6.0]),
            row("popline-ll-hls", &[8.0, 1200.0]),
            row("nginx-rtmp-hls", &[30.0, 31.0, 29.0, 30.0]),
        ];
        LatencyRow::compare(&mut rows);
        assert_eq!(
            (rows[0].target_met, rows[1].target_met),
            (Some(true), Some(false))
        );
        assert_eq!(mean_and_stderr(&[]), (None, None));
        assert_eq!(mean_and_stderr(&[3.0]), (Some(3.0), None));
    }
}
