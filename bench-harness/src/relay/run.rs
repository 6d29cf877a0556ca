//! One trial: a fresh lab, the variant's relay nodes, the publisher in namespace A, the viewers in the last
//! node's namespace, a measured window, then everything torn down.
//!
//! Timeline: nodes up (popline: every mesh link up); the publisher starts; after [`JOIN_DELAY`] (the stream
//! has reached the last node) the viewers join; after `warmup` the window opens (frame numbers and CPU
//! read), lasts `seconds`, and closes; the viewers keep reading for `budget` + [`TAIL`] so that the window's
//! last frames can arrive in time; then viewers, publisher, nodes, emulator and lab stop, in that order.

use super::judge::{self, ViewerVerdict};
use super::report::Row;
use super::tcp_cc::{self, CcGuard};
use super::viewer::{self, ViewerLog};
use super::{nginx_relay, popline_mesh, stream, Trial, Variant};
use crate::compare::ns_thread;
use crate::emulate::{Emulator, Lab, ADDR_B};
use crate::fanout::publisher::Publisher;
use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Between the publish and the viewers' joining: the stream reaches the last node.
const JOIN_DELAY: Duration = Duration::from_millis(1500);
/// Reading time after the window beyond the budget.
const TAIL: Duration = Duration::from_millis(500);
/// The RTMP application and stream key.
pub const APP: &str = "live";
/// The stream key.
pub const STREAM: &str = "relay";

/// Runs one trial of `variant` at `bitrate_bps` with `nodes` relay nodes; a failure becomes a row that says
/// why.
pub fn trial(variant: Variant, nodes: usize, bitrate_bps: u64, t: &Trial) -> Row {
    let rtt_ms = t.rtt.as_secs_f64() * 1e3;
    match run(variant, nodes, bitrate_bps, t) {
        Ok(row) => row,
        Err(e) => Row::failed(
            variant.name(),
            &t.profile.name,
            rtt_ms,
            bitrate_bps,
            format!("{e:#}"),
        ),
    }
}

fn run(variant: Variant, node_count: usize, bitrate_bps: u64, t: &Trial) -> Result<Row> {
    let source = Arc::new(stream::source(bitrate_bps)?);
    let _cc_guard = variant.tcp_cc().map(CcGuard::allow).transpose()?;
    let (lab, ends) = Lab::create(t.profile.mtu)?;
    let emulator = Emulator::for_profile(ends.a, ends.b, &t.profile)?;
    let outcome = with_lab(variant, node_count, &source, &lab, t);
    let stats = emulator.stop();
    drop(lab);
    stats?;
    outcome
}

fn with_lab(
    variant: Variant,
    node_count: usize,
    source: &Arc<crate::fanout::source::MediaSource>,
    lab: &Lab,
    t: &Trial,
) -> Result<Row> {
    let mut nodes = match variant {
        Variant::Popline => popline_mesh::spawn(
            &t.popline_bin,
            &lab.ns_a,
            &lab.ns_b,
            &popline_mesh::MeshSettings {
                nodes: node_count,
                frame_budget_ms: t.budget.as_millis() as u64,
                write_coalesce_ms: t.popline_write_coalesce_ms,
                app: APP.into(),
            },
            &t.cpus,
        )?,
        Variant::NginxRtmp | Variant::NginxRtmpBbr => {
            if let Some(cc) = variant.tcp_cc() {
                tcp_cc::set_default(&lab.ns_a, cc)?;
                tcp_cc::set_default(&lab.ns_b, cc)?;
            }
            nginx_relay::spawn(&t.nginx_bin, &t.nginx_module, &lab.ns_a, &lab.ns_b, APP, &t.cpus)?
        }
    };
    let outcome = measure(variant, &mut nodes, source, lab, t);
    nodes.stop(t.keep_logs.as_deref());
    outcome
}

fn measure(
    variant: Variant,
    nodes: &mut super::nodes::Nodes,
    source: &Arc<crate::fanout::source::MediaSource>,
    lab: &Lab,
    t: &Trial,
) -> Result<Row> {
    let publish = nodes.first()?.rtmp;
    let play = nodes.last()?.rtmp;
    let play_ns = nodes.last()?.ns.clone();
    let src = source.clone();
    let publisher = ns_thread::spawn_in(&lab.ns_a, "relay-pub-setup", move || {
        Publisher::start(publish, APP, STREAM, src)
    })?;
    let publisher = ns_thread::join(publisher, "publisher")?.0;
    std::thread::sleep(JOIN_DELAY);

    let stop = Arc::new(AtomicBool::new(false));
    let mut viewers = Vec::new();
    for i in 0..t.viewers {
        let stop = stop.clone();
        viewers.push(ns_thread::spawn_in(
            &play_ns,
            &format!("relay-viewer-{i}"),
            move || viewer::run(play, APP, STREAM, &stop),
        )?);
    }
    let result = window(variant, nodes, &publisher, t);
    std::thread::sleep(t.budget + TAIL);
    stop.store(true, Ordering::Relaxed);
    let mut logs: Vec<ViewerLog> = Vec::new();
    for v in viewers {
        logs.push(ns_thread::join(v, "viewer")?.0);
    }
    let failure = publisher.stats.failure();
    let max_late_ms = publisher.stats.max_late_us.load(Ordering::Relaxed) as f64 / 1e3;
    publisher.stop();
    let w = result?;
    if let Some(f) = failure {
        bail!("the publisher failed: {f}");
    }

    let mut arrivals: Vec<Vec<viewer::Arrival>> =
        logs.iter_mut().map(|l| std::mem::take(&mut l.arrivals)).collect();
    judge::to_capture_times(&mut arrivals, |seq| stream::due_ms(seq) * 1000);
    let budget_us = t.budget.as_micros() as u64;
    let verdicts: Vec<ViewerVerdict> = arrivals
        .iter()
        .map(|a| judge::judge_viewer(a, w.first, w.end, budget_us, stream::kind_of))
        .collect();
    let refs: Vec<&[viewer::Arrival]> = arrivals.iter().map(Vec::as_slice).collect();
    let missing_ms = (t.budget + TAIL).as_secs_f64() * 1e3;
    let mut lat = judge::latencies_ms(&refs, w.first, w.end, missing_ms);
    let sent = u64::from(w.end.saturating_sub(w.first));
    let n = verdicts.len().max(1) as f64;
    let worst = verdicts.iter().map(|v| v.on_time).min().unwrap_or(0);
    let mut notes = Vec::new();
    let ended: Vec<&str> = logs.iter().filter_map(|l| l.ended.as_deref()).collect();
    if let Some(first) = ended.first() {
        notes.push(format!("{} viewer(s) ended early: {first}", ended.len()));
    }
    if max_late_ms > 50.0 {
        notes.push(format!(
            "the publisher fell up to {max_late_ms:.0} ms behind its schedule"
        ));
    }
    Ok(Row {
        variant: variant.name(),
        profile: t.profile.name.clone(),
        rtt_ms: t.rtt.as_secs_f64() * 1e3,
        nodes: nodes.nodes.len(),
        stream_bps: source.bitrate_bps(),
        viewers: t.viewers,
        frames_sent: sent,
        frames_on_time: worst,
        on_time_ratio: (sent > 0).then(|| worst as f64 / sent as f64),
        frames_on_time_mean: verdicts.iter().map(|v| v.on_time as f64).sum::<f64>() / n,
        frames_undecodable: verdicts.iter().map(|v| v.undecodable).sum(),
        e2e_latency_ms_p50: judge::percentile(&mut lat, 50.0),
        e2e_latency_ms_p99: judge::percentile(&mut lat, 99.0),
        stall_ratio: (sent > 0).then(|| {
            verdicts
                .iter()
                .map(|v| 1.0 - v.shown as f64 / sent as f64)
                .sum::<f64>()
                / n
        }),
        budget_ms: t.budget.as_secs_f64() * 1e3,
        cpu_s_per_gb: (w.bytes > 0).then(|| w.cpu_s / (w.bytes as f64 / 1e9)),
        tcp_cc: w.tcp_cc,
        max_bitrate_bps: None,
        added_latency_per_hop_ms_p99: None,
        seconds: w.elapsed.as_secs_f64(),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        error: None,
    })
}

/// What the measured window saw.
struct Window {
    /// First judged frame number.
    first: u32,
    /// One past the last.
    end: u32,
    /// Relay CPU seconds over the window.
    cpu_s: f64,
    /// Bytes the publisher sent in the window.
    bytes: u64,
    /// The controller of the relay's TCP connection, if it has one.
    tcp_cc: Option<String>,
    elapsed: Duration,
}

fn window(
    variant: Variant,
    nodes: &mut super::nodes::Nodes,
    publisher: &Publisher,
    t: &Trial,
) -> Result<Window> {
    std::thread::sleep(t.warmup);
    nodes.check_alive()?;
    let stats = &publisher.stats;
    let first = stats.video_frames.load(Ordering::Relaxed) as u32;
    let bytes0 = stats.bytes.load(Ordering::Relaxed);
    let cpu0 = nodes.cpu_seconds();
    let start = Instant::now();
    let mut tcp_cc = None;
    if variant.tcp_cc().is_some() {
        std::thread::sleep(t.seconds.min(Duration::from_secs(1)));
        let ns_a = nodes.first()?.ns.clone();
        tcp_cc = tcp_cc::observed(&ns_a, &format!("{ADDR_B}:{}", nginx_relay::PORT))
            .context("reading the relay connection's controller")?;
    }
    std::thread::sleep(t.seconds.saturating_sub(start.elapsed()));
    nodes.check_alive()?;
    let end = stats.video_frames.load(Ordering::Relaxed) as u32;
    let bytes = stats.bytes.load(Ordering::Relaxed) - bytes0;
    let cpu_s = nodes.cpu_seconds() - cpu0;
    Ok(Window {
        first,
        end,
        cpu_s,
        bytes,
        tcp_cc,
        elapsed: start.elapsed(),
    })
}
