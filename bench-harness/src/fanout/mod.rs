//! `popline-bench fanout`: an RTMP fan-out load test that runs the same ramp against nginx-rtmp and the popline
//! node in one run and prints them side by side.
//!
//! One publisher pushes a live stream (synthetic or an FLV file) at real time, each video frame stamped with
//! its send time in an SEI unit; lightweight players (no decoding: [`chunk_reader`] skips payloads) join in
//! steps and measure time to first keyframe, lag (receive - send, same process clock) and missed frames; the
//! server's CPU and memory come from `/proc`. The ramp stops at the first failing step ([`ramp`]).
//!
//! Layout: [`cli`] flags; [`source`], [`flv`], [`sei`] what is sent; [`publisher`], [`player`],
//! [`rtmp_client`], [`chunk_reader`], [`clock`] the clients; [`server`], [`nginx`], [`popline_server`] the
//! servers; [`proc_stats`], [`cpus`], [`limits`] the host; [`ramp`] the steps; [`report`], [`percentile`] the
//! output.
//!
//! Reading the numbers: everything runs over loopback on one machine. A player's cost is the kernel's TCP
//! receive path, one `recvfrom` per RTMP message (~68 a second at 25 fps + AAC), about what a server pays to
//! send it; so one load-generator CPU saturates near the viewer count one server CPU can serve, and the
//! report says when it did (`loadgen_limited`). Loopback receive processing also runs in softirq on the
//! *sender's* CPU, partly outside the server's own accounting: it shows as `others_on_server_cpus_cores`,
//! which on a busy shared machine also holds other people's work. To show a server beyond the load
//! generator's reach, give the load generator more CPUs than the server (`--server-cpus` on a bigger box);
//! meanwhile `cpu_cores_per_1000_viewers` compares cost per viewer.

pub mod chunk_reader;
pub mod cli;
pub mod clock;
pub mod cpus;
pub mod flv;
pub mod limits;
pub mod nginx;
pub mod percentile;
pub mod player;
pub mod popline_server;
pub mod proc_stats;
pub mod publisher;
pub mod ramp;
pub mod report;
pub mod rtmp_client;
pub mod sei;
pub mod server;
pub mod source;
#[cfg(test)]
mod tests;

pub use cli::FanoutArgs;

use anyhow::{bail, Context, Result};
use cli::ServerKind;
use ramp::RampSettings;
use report::{RunInfo, ServerReport};
use server::ServerProcess;
use source::MediaSource;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// RTMP application the publisher and players use.
const APP: &str = "live";
/// Stream key the publisher and players use.
const STREAM: &str = "fanout";
/// Time between the publish and the first viewers (a GOP cache holds a keyframe by then).
const WARMUP: Duration = Duration::from_millis(1500);
/// Fraction of its CPUs at which a process counts as saturated.
const CPU_SATURATION: f64 = 0.95;
/// File descriptors kept beyond one per viewer (the server's listener, logs, the runtime...).
const SPARE_FDS: u64 = 1024;

/// Everything a server run needs besides the ramp settings.
struct Plan {
    servers: Vec<ServerKind>,
    server_cpus: Vec<usize>,
    popline_bin: PathBuf,
    nginx_bin: PathBuf,
    nginx_module: PathBuf,
    nofile: u64,
    keep_logs: Option<PathBuf>,
}

/// Runs `popline-bench fanout`.
pub fn run(args: &FanoutArgs) -> Result<()> {
    let servers = cli::parse_servers(&args.servers)?;
    if args.viewers == 0 || args.step == 0 {
        bail!("--viewers and --step must be at least 1");
    }
    if !(args.step_seconds > 0.0 && args.step_seconds.is_finite()) {
        bail!("--step-seconds must be positive");
    }
    let bitrate_bps = crate::units::parse_rate_bps(&args.bitrate.replace('_', ""))?;
    let server_cpus = cpus::parse_cpu_list(&args.server_cpus)?;
    let allowed = cpus::allowed_cpus()?;
    if let Some(c) = server_cpus.iter().find(|c| !allowed.contains(c)) {
        bail!("--server-cpus: CPU {c} is not available here (this process may use {allowed:?})");
    }
    let mut load_cpus: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|c| !server_cpus.contains(c))
        .collect();
    if load_cpus.is_empty() {
        eprintln!("warning: --server-cpus takes every CPU; the load generator shares them with the server");
        load_cpus = allowed.clone();
    } else if !args.no_pin {
        // Before any thread exists: the runtime's workers and the publisher inherit the mask.
        cpus::pin_current_thread(&load_cpus)?;
    }
    let nofile = limits::raise_nofile(args.viewers as u64 + SPARE_FDS)?;
    if nofile < args.viewers as u64 + 64 {
        eprintln!(
            "warning: RLIMIT_NOFILE is {nofile}: fewer than --viewers {} sockets fit",
            args.viewers
        );
    }
    clock::epoch();
    let source = Arc::new(MediaSource::load(&args.source, bitrate_bps)?);
    let run_info = RunInfo {
        server_cpus: cpus::format_cpu_list(&server_cpus),
        loadgen_cpus: if args.no_pin {
            "any".into()
        } else {
            cpus::format_cpu_list(&load_cpus)
        },
        source: source.description.clone(),
        bitrate_bps: source.bitrate_bps(),
        step_viewers: args.step,
        step_seconds: args.step_seconds,
        max_viewers: args.viewers,
        max_lag_ms: args.max_lag_ms,
        popline_write_coalesce_ms: args.popline_write_coalesce_ms,
        popline_backend: args.popline_backend.clone(),
    };
    let settings = RampSettings {
        viewers: args.viewers,
        step: args.step,
        step_duration: Duration::from_secs_f64(args.step_seconds),
        join_timeout: Duration::from_secs_f64(args.join_timeout_seconds.max(0.1)),
        join_spread: Duration::from_millis(u64::from(source.gop_ms())),
        warmup: WARMUP,
        max_lag: Duration::from_secs_f64(args.max_lag_ms.max(0.0) / 1e3),
        max_failing: args.max_failing_percent / 100.0,
        max_missed: args.max_missed_percent / 100.0,
        cpu_saturation: CPU_SATURATION,
        server_cpus: server_cpus.clone(),
        load_cpus: load_cpus.clone(),
        app: APP.into(),
        stream: STREAM.into(),
        progress: true,
    };
    let plan = Plan {
        servers,
        server_cpus,
        popline_bin: args
            .popline_bin
            .clone()
            .unwrap_or_else(popline_server::default_binary),
        nginx_bin: args.nginx_bin.clone(),
        nginx_module: args.nginx_module.clone(),
        nofile,
        keep_logs: args.keep_logs.clone(),
    };
    let mut reports = Vec::new();
    for &kind in &plan.servers {
        reports.push(run_server(kind, &plan, &source, &settings, &run_info));
    }
    if args.json {
        report::print_json(&reports)
    } else {
        report::print_table(&reports);
        Ok(())
    }
}

/// Starts one server, ramps it, stops it; every failure becomes a row that says why.
fn run_server(
    kind: ServerKind,
    plan: &Plan,
    source: &Arc<MediaSource>,
    settings: &RampSettings,
    run_info: &RunInfo,
) -> ServerReport {
    let name = kind.name();
    eprintln!("[{name}] starting on CPU(s) {}", run_info.server_cpus);
    let spawned = match kind {
        ServerKind::Nginx => nginx::spawn(
            &plan.nginx_bin,
            &plan.nginx_module,
            &plan.server_cpus,
            &run_info.server_cpus,
            plan.nofile,
        ),
        ServerKind::Popline => popline_server::spawn(
            &plan.popline_bin,
            &popline_server::NodeSettings {
                cores: plan.server_cpus.len().max(1),
                write_coalesce_ms: run_info.popline_write_coalesce_ms,
                backend: run_info.popline_backend.clone(),
            },
            &run_info.server_cpus,
        ),
    };
    let mut process = match spawned {
        Ok(p) => p,
        Err(e) => {
            eprintln!("[{name}] failed to start: {e:#}");
            return ServerReport::failed_to_start(name, format!("{e:#}"), run_info);
        }
    };
    if let Err(e) = process.wait_ready(server::READY_TIMEOUT) {
        eprintln!("[{name}] failed to start: {e:#}");
        if let Err(e) = stop(process, plan.keep_logs.as_deref()) {
            eprintln!("[{name}] stopping: {e:#}");
        }
        return ServerReport::failed_to_start(name, format!("{e:#}"), run_info);
    }
    let report = match ramp::run(&mut process, source.clone(), settings) {
        Ok(result) => ServerReport::from_ramp(name, result, run_info, plan.server_cpus.len()),
        Err(e) => ServerReport::failed_to_start(name, format!("the ramp failed: {e:#}"), run_info),
    };
    if let Some(e) = &report.error {
        eprintln!("[{name}] {}: {e}", report.status);
    }
    if let Err(e) = stop(process, plan.keep_logs.as_deref()) {
        eprintln!("[{name}] stopping: {e:#}");
    }
    report
}

fn stop(process: ServerProcess, keep_logs: Option<&Path>) -> Result<()> {
    let name = process.name.clone();
    process
        .stop(keep_logs)
        .with_context(|| format!("stopping {name}"))
}
