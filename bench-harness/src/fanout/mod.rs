//! `popline-bench fanout`: an RTMP fan-out load test that runs the same ramp against nginx-rtmp and the popline
//! node in one run and prints them side by side.
//!
//! One publisher pushes a live stream (synthetic or an FLV file) at real time, each video frame stamped with
//! its send time in an SEI unit; lightweight players (no decoding: [`chunk_reader`] skips payloads) join in
//! steps and measure time to first keyframe, lag (arrival at the player's socket, the kernel's receive
//! timestamp, - send, same process clock: [`arrival`]), read lag (the player's read - send) and missed frames; the
//! server's CPU and memory come from `/proc`. The ramp stops at the first failing step ([`ramp`]).
//!
//! Layout: [`cli`] flags; [`source`], [`flv`], [`sei`] what is sent; [`publisher`], [`send_log`],
//! [`player`], [`measure`], [`arrival`], [`rtmp_client`], [`chunk_reader`], [`clock`] the clients; [`server`], [`nginx`],
//! [`popline_server`] the servers; [`proc_stats`], [`cpus`], [`limits`] the host; [`ramp`] the steps;
//! [`report`], [`percentile`] the output. `popline-bench egress` ([`crate::egress`]) runs the same ramp with
//! HTTP-FLV players ([`setup`], [`ramp_server`]).
//!
//! Reading the numbers: everything runs over loopback on one machine. A player's cost is the kernel's TCP
//! receive path, one `recvmsg` per RTMP message (~68 a second at 25 fps + AAC), about what a server pays to
//! send it; so one load-generator CPU saturates near the viewer count one server CPU can serve, and the
//! report says when it did (`loadgen_limited`). Loopback receive processing also runs in softirq on the
//! *sender's* CPU, partly outside the server's own accounting: it shows as `others_on_server_cpus_cores`,
//! which on a busy shared machine also holds other people's work. To show a server beyond the load
//! generator's reach, give the load generator more CPUs than the server (`--server-cpus` on a bigger box);
//! meanwhile `cpu_cores_per_1000_viewers` compares cost per viewer.

pub mod arrival;
pub mod chunk_reader;
pub mod cli;
pub mod clock;
pub mod cpus;
pub mod flv;
pub mod limits;
pub mod measure;
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
pub mod send_log;
pub mod server;
pub mod source;
#[cfg(test)]
mod tests;

pub use cli::FanoutArgs;

use anyhow::{bail, Context, Result};
use cli::{RampArgs, ServerArgs, ServerKind};
use ramp::{RampSettings, SpawnPlayer};
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

/// The servers' side of a run: their binaries, CPUs and limits.
#[derive(Debug, Clone)]
pub struct Servers {
    /// CPUs every server is pinned to.
    pub cpus: Vec<usize>,
    /// The popline binary.
    pub popline_bin: PathBuf,
    /// The nginx binary.
    pub nginx_bin: PathBuf,
    /// The nginx-rtmp module.
    pub nginx_module: PathBuf,
    /// The open-file limit the servers inherit.
    pub nofile: u64,
    /// Where to keep each server's config and logs, if anywhere.
    pub keep_logs: Option<PathBuf>,
}

/// A ramp run resolved from its flags (`fanout` and `egress` alike): this process pinned to the load
/// generator's CPUs, its file limit raised, the source loaded.
pub struct Setup {
    /// What the publisher sends.
    pub source: Arc<MediaSource>,
    /// The ramp, for every server.
    pub settings: RampSettings,
    /// What the reports repeat about the run.
    pub run_info: RunInfo,
    /// The servers' binaries and CPUs.
    pub servers: Servers,
}

impl Setup {
    /// The popline node's settings for this run (`egress`: HTTP egress on, with these LL-HLS apps).
    pub fn popline_node(&self, egress: bool, low_latency_hls_apps: &[&str]) -> popline_server::NodeSettings {
        popline_server::NodeSettings {
            cores: self.servers.cpus.len().max(1),
            write_coalesce_ms: self.run_info.popline_write_coalesce_ms,
            backend: self.run_info.popline_backend.clone(),
            egress,
            low_latency_hls_apps: low_latency_hls_apps.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// Checks the flags, pins this process away from the server CPUs, raises its file limit and loads the
/// source: everything before the first server starts.
pub fn setup(ramp: &RampArgs, server: &ServerArgs) -> Result<Setup> {
    if ramp.viewers == 0 || ramp.step == 0 {
        bail!("--viewers and --step must be at least 1");
    }
    if !(ramp.step_seconds > 0.0 && ramp.step_seconds.is_finite()) {
        bail!("--step-seconds must be positive");
    }
    let bitrate_bps = crate::units::parse_rate_bps(&ramp.bitrate.replace('_', ""))?;
    let server_cpus = cpus::parse_cpu_list(&ramp.server_cpus)?;
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
    } else if !ramp.no_pin {
        // Before any thread exists: the runtime's workers and the publisher inherit the mask.
        cpus::pin_current_thread(&load_cpus)?;
    }
    let nofile = limits::raise_nofile(ramp.viewers as u64 + SPARE_FDS)?;
    if nofile < ramp.viewers as u64 + 64 {
        eprintln!(
            "warning: RLIMIT_NOFILE is {nofile}: fewer than --viewers {} sockets fit",
            ramp.viewers
        );
    }
    clock::epoch();
    let source = Arc::new(MediaSource::load(&ramp.source, bitrate_bps)?);
    let run_info = RunInfo {
        server_cpus: cpus::format_cpu_list(&server_cpus),
        loadgen_cpus: if ramp.no_pin {
            "any".into()
        } else {
            cpus::format_cpu_list(&load_cpus)
        },
        source: source.description.clone(),
        bitrate_bps: source.bitrate_bps(),
        step_viewers: ramp.step,
        step_seconds: ramp.step_seconds,
        max_viewers: ramp.viewers,
        max_lag_ms: ramp.max_lag_ms,
        popline_write_coalesce_ms: server.popline_write_coalesce_ms,
        popline_backend: server.popline_backend.clone(),
    };
    let settings = RampSettings {
        viewers: ramp.viewers,
        step: ramp.step,
        step_duration: Duration::from_secs_f64(ramp.step_seconds),
        join_timeout: Duration::from_secs_f64(ramp.join_timeout_seconds.max(0.1)),
        join_spread: Duration::from_millis(u64::from(source.gop_ms())),
        warmup: WARMUP,
        max_lag: Duration::from_secs_f64(ramp.max_lag_ms.max(0.0) / 1e3),
        max_failing: ramp.max_failing_percent / 100.0,
        max_missed: ramp.max_missed_percent / 100.0,
        cpu_saturation: CPU_SATURATION,
        server_cpus: server_cpus.clone(),
        load_cpus,
        app: APP.into(),
        stream: STREAM.into(),
        progress: true,
    };
    let servers = Servers {
        cpus: server_cpus,
        popline_bin: server
            .popline_bin
            .clone()
            .unwrap_or_else(popline_server::default_binary),
        nginx_bin: server.nginx_bin.clone(),
        nginx_module: server.nginx_module.clone(),
        nofile,
        keep_logs: server.keep_logs.clone(),
    };
    Ok(Setup {
        source,
        settings,
        run_info,
        servers,
    })
}

/// Runs `popline-bench fanout`.
pub fn run(args: &FanoutArgs) -> Result<()> {
    let kinds = cli::parse_servers(&args.servers)?;
    let setup = setup(&args.ramp, &args.server)?;
    let mut reports = Vec::new();
    for &kind in &kinds {
        let start = || match kind {
            ServerKind::Nginx => nginx::spawn(
                &setup.servers.nginx_bin,
                &setup.servers.nginx_module,
                &setup.servers.cpus,
                &setup.run_info.server_cpus,
                setup.servers.nofile,
                None,
            ),
            ServerKind::Popline => popline_server::spawn(
                &setup.servers.popline_bin,
                &setup.popline_node(false, &[]),
                &setup.run_info.server_cpus,
            ),
        };
        reports.push(ramp_server(kind.name(), start, rtmp_players, &setup));
    }
    if args.json {
        report::print_json(&reports)
    } else {
        report::print_table(&reports);
        Ok(())
    }
}

/// The RTMP players of the ramp's stream on `server`.
pub fn rtmp_players(server: &ServerProcess, settings: &RampSettings) -> Result<Box<SpawnPlayer>> {
    Ok(player::spawner(player::PlayerConfig {
        addr: server.addr,
        app: settings.app.clone(),
        stream: settings.stream.clone(),
        setup_timeout: settings.join_timeout,
    }))
}

/// Starts one server (`start`), ramps it with the players `players` makes for it, stops it; every failure
/// becomes a row (named `name`) that says why.
pub fn ramp_server(
    name: &str,
    start: impl FnOnce() -> Result<ServerProcess>,
    players: impl FnOnce(&ServerProcess, &RampSettings) -> Result<Box<SpawnPlayer>>,
    setup: &Setup,
) -> ServerReport {
    let run_info = &setup.run_info;
    let keep_logs = setup.servers.keep_logs.as_deref();
    eprintln!("[{name}] starting on CPU(s) {}", run_info.server_cpus);
    let mut process = match start() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("[{name}] failed to start: {e:#}");
            return ServerReport::failed_to_start(name, format!("{e:#}"), run_info);
        }
    };
    process.name = name.to_string();
    if let Err(e) = process.wait_ready(server::READY_TIMEOUT) {
        eprintln!("[{name}] failed to start: {e:#}");
        if let Err(e) = stop(process, keep_logs) {
            eprintln!("[{name}] stopping: {e:#}");
        }
        return ServerReport::failed_to_start(name, format!("{e:#}"), run_info);
    }
    let ramped = players(&process, &setup.settings)
        .and_then(|spawn| ramp::run(&mut process, setup.source.clone(), &setup.settings, &*spawn));
    let report = match ramped {
        Ok(result) => ServerReport::from_ramp(name, result, run_info, setup.servers.cpus.len()),
        Err(e) => ServerReport::failed_to_start(name, format!("the ramp failed: {e:#}"), run_info),
    };
    if let Some(e) = &report.error {
        eprintln!("[{name}] {}: {e}", report.status);
    }
    if let Err(e) = stop(process, keep_logs) {
        eprintln!("[{name}] stopping: {e:#}");
    }
    report
}

/// Stops `process`, keeping its logs under `keep_logs` if asked.
pub fn stop(process: ServerProcess, keep_logs: Option<&Path>) -> Result<()> {
    let name = process.name.clone();
    process
        .stop(keep_logs)
        .with_context(|| format!("stopping {name}"))
}
