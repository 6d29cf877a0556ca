//! Part `hls`: glass-to-playlist latency of popline's HLS and LL-HLS and of nginx-rtmp's HLS, measured at
//! once, on the same stream, for the same time.
//!
//! The popline node (HTTP egress on) gets two publishers of the same source: app [`POPLINE_HLS_APP`] (plain
//! HLS) and app [`POPLINE_LL_APP`] (`low_latency_hls = true`); nginx-rtmp (`hls on`, set up as its docs show:
//! [`crate::fanout::nginx::HlsSettings`]) gets a third. Each publisher is the fanout publisher logging when it
//! sent which media time ([`crate::fanout::send_log`]); each playlist has its poller ([`super::poller`]: every
//! `--poll-ms` for plain HLS, blocking reload for LL-HLS) and its tracker ([`super::glass`]), which also notes
//! each read's newest unit for freshness ([`super::freshness`]). Both servers run on the server CPUs side by
//! side; at 600 kbit/s their packaging costs a few percent of a core.

use super::glass::{Anchor, GlassTracker, Unit};
use super::poller::{self, PollMode, PollReport};
use super::report::{HlsRunInfo, LatencyRow};
use crate::fanout::nginx::{self, HlsSettings};
use crate::fanout::publisher::Publisher;
use crate::fanout::send_log::SendLog;
use crate::fanout::server::{self, ServerProcess};
use crate::fanout::{popline_server, Setup};
use anyhow::{anyhow, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The stream key every publisher uses.
pub const STREAM: &str = "glass";
/// popline's app with plain HLS.
pub const POPLINE_HLS_APP: &str = "hls";
/// popline's app with low-latency HLS.
pub const POPLINE_LL_APP: &str = "llhls";
/// How often the hold checks on the servers and publishers.
const CHECK: Duration = Duration::from_millis(100);

/// What part `hls` does (resolved from the CLI).
#[derive(Debug, Clone, Copy)]
pub struct HlsPlan {
    /// How long it measures.
    pub duration: Duration,
    /// The plain-HLS pollers' interval.
    pub poll: Duration,
    /// nginx-rtmp's `hls_fragment` and `hls_playlist_length` (its HTTP port is chosen at start).
    pub nginx: HlsSettings,
}

/// Which server a variant plays from (its index in the run's list of servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerId {
    Popline = 0,
    Nginx = 1,
}

/// One playlist measured.
#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    server: ServerId,
    app: &'static str,
    unit: Unit,
    anchor: Anchor,
    low_latency: bool,
}

impl Variant {
    fn playlist_path(&self) -> String {
        match self.server {
            // With a session token the node answers the media playlist (a request without one gets the
            // multivariant playlist that hands out a session), and the poller counts as one viewer.
            ServerId::Popline => format!("/{}/{STREAM}/index.m3u8?session=be0c", self.app),
            ServerId::Nginx => format!("{}/{STREAM}.m3u8", nginx::HLS_LOCATION),
        }
    }

    fn mode(&self, plan: &HlsPlan) -> PollMode {
        if self.low_latency {
            PollMode::BlockingReload
        } else {
            PollMode::Every(plan.poll)
        }
    }
}

/// The variants, in report order.
const VARIANTS: [Variant; 3] = [
    Variant {
        name: "popline-hls",
        server: ServerId::Popline,
        app: POPLINE_HLS_APP,
        unit: Unit::Segment,
        anchor: Anchor::ProgramDateTime,
        low_latency: false,
    },
    Variant {
        name: "popline-ll-hls",
        server: ServerId::Popline,
        app: POPLINE_LL_APP,
        unit: Unit::Part,
        anchor: Anchor::ProgramDateTime,
        low_latency: true,
    },
    Variant {
        // nginx-rtmp's first fragment (0) starts at the stream's first keyframe, media time 0; its playlist
        // has no PROGRAM-DATE-TIME.
        name: "nginx-rtmp-hls",
        server: ServerId::Nginx,
        app: nginx::APP,
        unit: Unit::Segment,
        anchor: Anchor::Msn { msn: 0, start_ms: 0 },
        low_latency: false,
    },
];

/// A variant under way: its publisher and poller, or why it could not start.
struct Running {
    variant: Variant,
    publisher: Option<Publisher>,
    poller: Option<JoinHandle<PollReport>>,
    error: Option<String>,
}

/// Runs part `hls`: one row per variant, each with its error if it could not be measured.
pub fn run(setup: &Setup, plan: &HlsPlan) -> Vec<LatencyRow> {
    let info = HlsRunInfo::new(setup, plan);
    let popline = start(ServerId::Popline, setup, plan);
    let nginx = start(ServerId::Nginx, setup, plan);
    let mut servers = [(ServerId::Popline, popline), (ServerId::Nginx, nginx)];
    let stop = Arc::new(AtomicBool::new(false));
    let mut running: Vec<Running> = VARIANTS
        .iter()
        .map(|v| {
            let (_, server) = &servers[v.server as usize];
            match server {
                Ok(process) => launch(*v, process, setup, plan, &stop),
                Err(e) => Running {
                    variant: *v,
                    publisher: None,
                    poller: None,
                    error: Some(e.clone()),
                },
            }
        })
        .collect();

    let t0 = Instant::now();
    eprintln!(
        "[hls] measuring for {:.0} s: {}",
        plan.duration.as_secs_f64(),
        VARIANTS.map(|v| v.name).join(", ")
    );
    while t0.elapsed() < plan.duration {
        std::thread::sleep(CHECK.min(plan.duration.saturating_sub(t0.elapsed())));
        for (id, server) in &mut servers {
            let Ok(process) = server else { continue };
            if let Some(how) = process.exited() {
                let why = format!("{} exited ({how}): {}", process.name, process.log_tails());
                for r in running.iter_mut().filter(|r| r.variant.server == *id) {
                    r.error.get_or_insert_with(|| why.clone());
                }
            }
        }
        for r in &mut running {
            if let Some(why) = r.publisher.as_ref().and_then(|p| p.stats.failure()) {
                r.error
                    .get_or_insert_with(|| format!("the publisher stopped: {why}"));
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut rows = Vec::new();
    for r in running {
        let report = r
            .poller
            .map(|p| p.join().map_err(|_| anyhow!("the poller panicked")));
        if let Some(p) = r.publisher {
            p.stop();
        }
        let row = match report {
            Some(Ok(report)) => LatencyRow::from_poll(r.variant.name, &report, r.error, seconds, &info),
            Some(Err(e)) => LatencyRow::failed(r.variant.name, format!("{e:#}"), &info),
            None => LatencyRow::failed(
                r.variant.name,
                r.error.unwrap_or_else(|| "did not start".into()),
                &info,
            ),
        };
        rows.push(row.with_unit(r.variant.unit, r.variant.mode(plan)));
    }
    for (_, server) in servers {
        if let Ok(process) = server {
            if let Err(e) = crate::fanout::stop(process, setup.servers.keep_logs.as_deref()) {
                eprintln!("[hls] stopping: {e:#}");
            }
        }
    }
    LatencyRow::compare(&mut rows);
    rows
}

/// Starts one server and waits until it listens; an error is the row's reason.
fn start(id: ServerId, setup: &Setup, plan: &HlsPlan) -> Result<ServerProcess, String> {
    let s = &setup.servers;
    let spawned = match id {
        ServerId::Popline => popline_server::spawn(
            &s.popline_bin,
            &setup.popline_node(true, &[POPLINE_LL_APP]),
            &setup.run_info.server_cpus,
        ),
        ServerId::Nginx => nginx::spawn(
            &s.nginx_bin,
            &s.nginx_module,
            &s.cpus,
            &setup.run_info.server_cpus,
            s.nofile,
            Some(plan.nginx),
        ),
    };
    let mut process = spawned.map_err(|e| format!("{e:#}"))?;
    eprintln!(
        "[hls] {} starting on CPU(s) {}",
        process.name, setup.run_info.server_cpus
    );
    match process.wait_ready(server::READY_TIMEOUT) {
        Ok(()) => Ok(process),
        Err(e) => {
            let why = format!("{e:#}");
            let _ = crate::fanout::stop(process, s.keep_logs.as_deref());
            Err(why)
        }
    }
}

/// Starts a variant's publisher and, right after, its poller.
fn launch(
    v: Variant,
    process: &ServerProcess,
    setup: &Setup,
    plan: &HlsPlan,
    stop: &Arc<AtomicBool>,
) -> Running {
    let mut running = Running {
        variant: v,
        publisher: None,
        poller: None,
        error: None,
    };
    let Some(http) = process.http else {
        running.error = Some(format!("{} serves no HTTP", process.name));
        return running;
    };
    let log = Arc::new(SendLog::new());
    match Publisher::start_logged(
        process.addr,
        v.app,
        STREAM,
        setup.source.clone(),
        Some(log.clone()),
    ) {
        Ok(p) => running.publisher = Some(p),
        Err(e) => {
            running.error = Some(format!("publishing {}/{STREAM}: {e:#}", v.app));
            return running;
        }
    }
    let tracker = GlassTracker::new(v.unit, v.anchor, log);
    match poller::spawn(
        v.name,
        http,
        v.playlist_path(),
        v.mode(plan),
        tracker,
        stop.clone(),
    ) {
        Ok(handle) => running.poller = Some(handle),
        Err(e) => running.error = Some(format!("{e:#}")),
    }
    running
}
