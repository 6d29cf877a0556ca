//! `popline-bench snapshot`: what one snapshot costs with each decoder the node offers, in one run.
//!
//! The keyframes of a sample file (one per GOP, read as a recording's snapshot reads them) go through the
//! node's own [`relay::snapshot::SnapshotService`] without its cache, one at a time, `--count` times per
//! decoder: `openh264` (a long-lived `popline snapshot-worker` child, the binary `--popline-bin`) and
//! `ffmpeg` (one ffmpeg process per snapshot). For each: latency p50/p99 (keyframe in, JPEG out), CPU per
//! snapshot (this process's and the decoders' processes', user + system), and the decoder's peak resident
//! memory. A warm-up snapshot (which starts the worker) is not counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use relay::snapshot::decoders::{DecoderKind, PoolSettings};
use relay::snapshot::recorded::keyframe_at;
use relay::snapshot::{Keyframe, SnapshotService};
use serde::Serialize;

use crate::cpu;

/// Flags of `popline-bench snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The FLV file whose keyframes are decoded [default: ../shared/media/h264-aac-720p30-bframes.flv].
    #[arg(long)]
    file: Option<PathBuf>,
    /// Snapshots per decoder.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Decoders, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "openh264,ffmpeg")]
    decoders: Vec<String>,
    /// Scale to this width (0: the picture's own).
    #[arg(long, default_value_t = 0)]
    width: u32,
    /// The popline binary (the openh264 worker) [default: `popline` beside this executable].
    #[arg(long)]
    popline_bin: Option<PathBuf>,
    /// The ffmpeg binary.
    #[arg(long, default_value = "ffmpeg")]
    ffmpeg: PathBuf,
    /// One JSON object per decoder instead of a table.
    #[arg(long)]
    json: bool,
}

/// One decoder's numbers.
#[derive(Debug, Serialize)]
struct Row {
    decoder: &'static str,
    snapshots: usize,
    width: u32,
    height: u32,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_mean: f64,
    /// CPU per snapshot: the decoder's processes and this one, user + system.
    cpu_ms_per_snapshot: f64,
    /// Of that, this process (the pool's IO and the request's framing).
    cpu_ms_per_snapshot_caller: f64,
    /// Peak resident memory of one decoder process.
    decoder_peak_rss_mib: f64,
    /// This row's p50 over openh264's, when both ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_over_openh264: Option<f64>,
}

/// Runs the benchmark.
pub fn run(args: &SnapshotArgs) -> Result<()> {
    let file = args.file.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/media/h264-aac-720p30-bframes.flv")
    });
    let keyframes = keyframes_of(&file)?;
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rows: Vec<Row> = Vec::new();
    for name in &args.decoders {
        let (kind, program) = match name.as_str() {
            "openh264" => (
                DecoderKind::Openh264,
                args.popline_bin
                    .clone()
                    .unwrap_or_else(crate::fanout::popline_server::default_binary),
            ),
            "ffmpeg" => (DecoderKind::Ffmpeg, args.ffmpeg.clone()),
            other => bail!("--decoders: unknown decoder {other:?} (openh264, ffmpeg)"),
        };
        eprintln!(
            "snapshot: {name}: {} snapshots of {} keyframes of {}",
            args.count,
            keyframes.len(),
            file.display()
        );
        let row = runtime.block_on(measure(kind, program, &keyframes, args))?;
        rows.push(row);
    }
    if let Some(base) = rows
        .iter()
        .find(|r| r.decoder == "openh264")
        .map(|r| r.latency_ms_p50)
    {
        for row in &mut rows {
            row.p50_over_openh264 = Some(row.latency_ms_p50 / base);
        }
    }
    if args.json {
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
        }
    } else {
        println!(
            "{:<9} {:>6} {:>10} {:>9} {:>9} {:>9} {:>13} {:>11} {:>12}",
            "decoder",
            "shots",
            "picture",
            "p50 ms",
            "p99 ms",
            "mean ms",
            "cpu ms/shot",
            "(caller)",
            "peak RSS MiB"
        );
        for r in &rows {
            println!(
                "{:<9} {:>6} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>13.1} {:>11.1} {:>12.1}",
                r.decoder,
                r.snapshots,
                format!("{}x{}", r.width, r.height),
                r.latency_ms_p50,
                r.latency_ms_p99,
                r.latency_ms_mean,
                r.cpu_ms_per_snapshot,
                r.cpu_ms_per_snapshot_caller,
                r.decoder_peak_rss_mib
            );
        }
    }
    Ok(())
}

/// One keyframe per GOP of `file`, in order.
fn keyframes_of(file: &Path) -> Result<Vec<Keyframe>> {
    let mut found: Vec<Keyframe> = Vec::new();
    let mut at_ms = 0;
    loop {
        let keyframe = keyframe_at(file, at_ms).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        if found.last().is_some_and(|last| last.dts_ms == keyframe.dts_ms) {
            if at_ms > keyframe.dts_ms + 60_000 {
                break;
            }
        } else {
            found.push(keyframe);
        }
        at_ms += 500;
        if found.len() >= 1_000 {
            break;
        }
    }
    Ok(found)
}

async fn measure(
    kind: DecoderKind,
    program: PathBuf,
    keyframes: &[Keyframe],
    args: &SnapshotArgs,
) -> Result<Row> {
    let service = Arc::new(SnapshotService::new(
        PoolSettings {
            kind,
            program,
            workers: 1,
            queue: 0,
            timeout: Duration::from_secs(10),
        },
        80,
        1,
    ));
    let width = (args.width > 0).then_some(args.width);
    let first = keyframes.first().context("no keyframes")?;
    let warm = service
        .uncached(first, width)
        .await
        .map_err(|e| anyhow!("{}: {e}", kind.name()))?;
    let children_before = children_cpu_seconds()?;
    let workers_before: f64 = service
        .pool()
        .worker_pids()
        .iter()
        .filter_map(|&p| cpu::pid_cpu_seconds(p).ok())
        .sum();
    let self_before = cpu::process_cpu_seconds()?;
    let mut latencies = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let keyframe = &keyframes[i % keyframes.len()];
        let started = Instant::now();
        service
            .uncached(keyframe, width)
            .await
            .map_err(|e| anyhow!("{} on the keyframe at {} ms: {e}", kind.name(), keyframe.dts_ms))?;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let self_cpu = cpu::process_cpu_seconds()? - self_before;
    let pids = service.pool().worker_pids();
    let workers_cpu: f64 = pids
        .iter()
        .filter_map(|&p| cpu::pid_cpu_seconds(p).ok())
        .sum::<f64>()
        - workers_before;
    let children_cpu = children_cpu_seconds()? - children_before;
    let peak_rss_kib = match kind {
        DecoderKind::Openh264 => pids.iter().filter_map(|&p| peak_rss_kib(p)).max().unwrap_or(0),
        DecoderKind::Ffmpeg => children_peak_rss_kib()?,
    };
    latencies.sort_by(f64::total_cmp);
    let pick =
        |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
    let n = args.count as f64;
    Ok(Row {
        decoder: kind.name(),
        snapshots: args.count,
        width: warm.jpeg.width,
        height: warm.jpeg.height,
        latency_ms_p50: pick(0.50),
        latency_ms_p99: pick(0.99),
        latency_ms_mean: latencies.iter().sum::<f64>() / n,
        cpu_ms_per_snapshot: (self_cpu + workers_cpu + children_cpu) * 1e3 / n,
        cpu_ms_per_snapshot_caller: self_cpu * 1e3 / n,
        decoder_peak_rss_mib: peak_rss_kib as f64 / 1024.0,
        p50_over_openh264: None,
    })
}

/// CPU seconds of this process's children that ended and were reaped (the ffmpeg processes).
fn children_cpu_seconds() -> Result<f64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

/// The largest peak resident memory of this process's reaped children, in KiB.
fn children_peak_rss_kib() -> Result<u64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    Ok(usage.max_rss().max(0) as u64)
}

/// Peak resident memory (`VmHWM`) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
