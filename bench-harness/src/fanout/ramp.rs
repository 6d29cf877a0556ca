//! The ramp against one running server: one publisher, then `step` more players per step until a step fails
//! or the viewer bound is reached.
//!
//! A step: start the new players spread evenly over one GOP (so their times to first frame sample every
//! phase of the GOP, and the connects arrive as a stream rather than a burst) and wait until each has its
//! first keyframe (or the join timeout); then hold for the step duration, measuring the server's CPU and
//! memory, this process's CPU, what else ran on either's CPUs, and every player's lag, missed frames and
//! state. The step fails when any of these holds:
//! - the lag p99 over all stamped frames of the hold exceeds `max_lag`;
//! - more than `max_failing` of the players failed: disconnected, no keyframe yet, no stamped frame during
//!   the hold (stalled), their own lag p99 over `max_lag` (behind), or missing more than `max_missed` of the
//!   frames sent during the hold (servers drop frames for viewers they cannot serve);
//! - the server used at least `cpu_saturation` of the CPUs it is pinned to;
//! - the server exited, or the publisher stopped.
//!
//! A failing step's reason carries notes when the load generator's CPUs were saturated (the limit found may
//! be the load generator's) or when other processes took the server's CPUs (the limit is the share the
//! server got, not its capacity).

use super::clock;
use super::measure::{Phase, PlayerShared};
use super::percentile::{percentile, percentile_of_sorted};
use super::proc_stats::{self, TreeSample};
use super::publisher::Publisher;
use super::server::ServerProcess;
use super::source::MediaSource;
use anyhow::{Context, Result};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often joins and the hold check on the players, the server and the publisher.
const POLL: Duration = Duration::from_millis(100);

/// Starts one player of the ramp on the players' runtime: a task that waits the given delay, then plays
/// until its connection ends, recording into the shared stats (the RTMP player's [`super::player::spawner`],
/// the HTTP-FLV player's [`crate::egress::flv_player::spawner`]).
pub type SpawnPlayer = dyn Fn(&tokio::runtime::Handle, Arc<PlayerShared>, Duration) + Send + Sync;

/// What a ramp does (resolved from the CLI).
#[derive(Debug, Clone)]
pub struct RampSettings {
    /// Upper bound of the ramp, in players.
    pub viewers: usize,
    /// Players added per step.
    pub step: usize,
    /// How long each step is held and measured.
    pub step_duration: Duration,
    /// How long new players have (after the spread) to get their first keyframe before the hold starts anyway.
    pub join_timeout: Duration,
    /// New players of a step start spread evenly over this time (one GOP: so that their times to first
    /// frame sample every phase of the GOP instead of all waiting for the same keyframe).
    pub join_spread: Duration,
    /// Time between the publish and the first players (lets a GOP cache fill).
    pub warmup: Duration,
    /// Lag (receive time - send time) above which a frame is late.
    pub max_lag: Duration,
    /// Fraction of players that may fail in a passing step.
    pub max_failing: f64,
    /// Fraction of frames a player may miss in a step before it counts as failing.
    pub max_missed: f64,
    /// Fraction of its CPUs at which the server counts as saturated.
    pub cpu_saturation: f64,
    /// CPUs the server is pinned to.
    pub server_cpus: Vec<usize>,
    /// CPUs the load generator runs on.
    pub load_cpus: Vec<usize>,
    /// RTMP application.
    pub app: String,
    /// Stream key.
    pub stream: String,
    /// Print a progress line per step on stderr.
    pub progress: bool,
}

/// The measurements of one step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepReport {
    /// Players in this step (all started so far, failed ones included).
    pub viewers: usize,
    /// Whether the step passed.
    pub passed: bool,
    /// Why it failed.
    pub fail_reason: Option<String>,
    /// Seconds from starting the new players until each got its first keyframe (or the join timeout).
    pub join_seconds: f64,
    /// Seconds of the measured hold.
    pub hold_seconds: f64,
    /// Server CPU during the hold, in cores.
    pub server_cpu_cores: f64,
    /// CPU that other processes (not the server) took on the server's CPUs during the hold, in cores: a
    /// machine shared with other work shows here, and the step's numbers are then a lower bound.
    pub others_on_server_cpus_cores: f64,
    /// Server resident memory at the end of the hold, in MiB.
    pub server_rss_mb: f64,
    /// Processes in the server's tree.
    pub server_processes: usize,
    /// Load generator (this process) CPU during the hold, in cores.
    pub loadgen_cpu_cores: f64,
    /// CPU that other processes took on the load generator's CPUs during the hold, in cores.
    pub others_on_loadgen_cpus_cores: f64,
    /// The load generator's CPUs were busy (with it or anything else) at least the saturation fraction of
    /// the time: it may not have kept up.
    pub loadgen_saturated: bool,
    /// Lag p50 over all stamped frames of the hold, in ms: arrival at the player's socket - send, the
    /// server's added latency ([`super::arrival`]).
    pub lag_ms_p50: Option<f64>,
    /// Lag p99 over all stamped frames of the hold, in ms.
    pub lag_ms_p99: Option<f64>,
    /// Largest lag of the hold, in ms.
    pub lag_ms_max: Option<f64>,
    /// Read lag p50 (the player's read - send: the load generator's own delay included), in ms.
    pub read_lag_ms_p50: Option<f64>,
    /// Read lag p99, in ms.
    pub read_lag_ms_p99: Option<f64>,
    /// Players failing for any reason below (each counted once).
    pub players_failing: usize,
    /// Players whose connection ended (or never got through setup).
    pub players_disconnected: usize,
    /// Players without a keyframe yet.
    pub players_no_frame: usize,
    /// Players that got no stamped frame during the hold.
    pub players_stalled: usize,
    /// Players whose own lag p99 exceeded the threshold.
    pub players_behind: usize,
    /// Players that missed more than the allowed fraction of frames.
    pub players_dropping: usize,
    /// Frames missed over all players, in percent of frames due.
    pub frames_missed_percent: f64,
    /// What all players received during the hold, in Mbit/s.
    pub received_mbit_s: f64,
    /// Video messages per second one player received during the hold, on average.
    pub video_fps_per_player: f64,
    /// Audio messages per second one player received during the hold, on average.
    pub audio_fps_per_player: f64,
    /// What the publisher sent during the hold, in Mbit/s (times `viewers`: what the players should get).
    pub published_mbit_s: f64,
    /// The first disconnect reason seen, if any player disconnected.
    pub disconnect_example: Option<String>,
}

/// The outcome of a ramp.
#[derive(Debug, Clone, Default)]
pub struct RampResult {
    /// Every step run, in order.
    pub steps: Vec<StepReport>,
    /// Why the ramp stopped.
    pub stop_reason: String,
    /// Time to first frame of the players started in passing steps, in microseconds.
    pub ttff_us: Vec<u64>,
    /// Players started in passing steps that never got a keyframe.
    pub ttff_missing: usize,
    /// Set when the publisher could not publish: no step ran.
    pub publish_error: Option<String>,
    /// Largest delay of a publisher send behind schedule, in ms.
    pub publisher_max_late_ms: f64,
}

impl RampResult {
    /// The last step that passed.
    pub fn last_passed(&self) -> Option<&StepReport> {
        self.steps.iter().rev().find(|s| s.passed)
    }
}

/// Runs the ramp against `server` with `source` as the stream (published over RTMP), its players started by
/// `spawn`.
pub fn run(
    server: &mut ServerProcess,
    source: Arc<MediaSource>,
    s: &RampSettings,
    spawn: &SpawnPlayer,
) -> Result<RampResult> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.load_cpus.len().max(1))
        .thread_name("fanout-player")
        .enable_all()
        .build()
        .context("building the players' runtime")?;
    let publisher = match Publisher::start(server.addr, &s.app, &s.stream, source) {
        Ok(p) => p,
        Err(e) => {
            return Ok(RampResult {
                stop_reason: "the publisher could not publish".into(),
                publish_error: Some(format!("{e:#}")),
                ..RampResult::default()
            })
        }
    };
    std::thread::sleep(s.warmup);
    let mut players: Vec<(Arc<PlayerShared>, usize)> = Vec::new();
    let mut result = RampResult::default();
    loop {
        let step_index = result.steps.len();
        let target = (players.len() + s.step).min(s.viewers);
        let first_new = players.len();
        let joining = (target - first_new).max(1) as u32;
        for i in first_new..target {
            let shared = Arc::new(PlayerShared::new());
            let delay = s.join_spread * (i - first_new) as u32 / joining;
            spawn(rt.handle(), shared.clone(), delay);
            players.push((shared, step_index));
        }
        let (step, abort) = run_step(server, &publisher, &players, first_new, s)?;
        if s.progress {
            eprintln!("{}", progress_line(&server.name, step_index, &step, s));
        }
        let passed = step.passed;
        let reason = step.fail_reason.clone();
        result.steps.push(step);
        if !passed || abort {
            result.stop_reason = reason.unwrap_or_else(|| "aborted".into());
            break;
        }
        if players.len() >= s.viewers {
            result.stop_reason = format!("reached --viewers {}", s.viewers);
            break;
        }
    }
    let last_passing_step = result.steps.iter().rposition(|st| st.passed);
    if let Some(last) = last_passing_step {
        for (p, step) in &players {
            if *step <= last {
                match p.lock().ttff_us {
                    Some(t) => result.ttff_us.push(t),
                    None => result.ttff_missing += 1,
                }
            }
        }
    }
    result.publisher_max_late_ms = publisher.stats.max_late_us.load(Ordering::Relaxed) as f64 / 1e3;
    publisher.stop();
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(result)
}

/// One step's join and hold; the flag says the ramp cannot go on (server or publisher gone).
fn run_step(
    server: &mut ServerProcess,
    publisher: &Publisher,
    players: &[(Arc<PlayerShared>, usize)],
    first_new: usize,
    s: &RampSettings,
) -> Result<(StepReport, bool)> {
    let join_start = Instant::now();
    while join_start.elapsed() < s.join_spread + s.join_timeout {
        // Joined: ended, or playing with a first keyframe (so the hold measures every player's steady state).
        let joining = players[first_new..]
            .iter()
            .filter(|(p, _)| {
                let st = p.lock();
                match st.phase {
                    Phase::Connecting => true,
                    Phase::Playing => st.ttff_us.is_none(),
                    Phase::Ended(_) => false,
                }
            })
            .count();
        if joining == 0 {
            break;
        }
        std::thread::sleep(POLL);
    }
    let join_seconds = join_start.elapsed().as_secs_f64();

    for (p, _) in players {
        let mut st = p.lock();
        st.lags_us.clear();
        st.read_lags_us.clear();
        st.missed_frames = 0;
    }
    let pid = server.pid();
    let server0 = proc_stats::sample_tree(pid).unwrap_or_default();
    let self0 = proc_stats::sample_self()?;
    let bytes0: u64 = players.iter().map(|(p, _)| p.bytes.load(Ordering::Relaxed)).sum();
    let counts0 = message_counts(players);
    let published0 = publisher.stats.bytes.load(Ordering::Relaxed);
    let busy0 = proc_stats::cpus_busy_seconds(&s.server_cpus)?;
    let load_busy0 = proc_stats::cpus_busy_seconds(&s.load_cpus)?;
    let t0 = Instant::now();
    let mut abort = None;
    while t0.elapsed() < s.step_duration {
        std::thread::sleep(POLL.min(s.step_duration.saturating_sub(t0.elapsed())));
        if let Some(how) = server.exited() {
            abort = Some(format!("the server exited ({how}): {}", server.log_tails()));
            break;
        }
        if let Some(why) = publisher.stats.failure() {
            abort = Some(format!("the publisher stopped: {why}"));
            break;
        }
    }
    let hold = t0.elapsed().as_secs_f64().max(1e-3);
    let server1: TreeSample = proc_stats::sample_tree(pid).unwrap_or(server0);
    let self1 = proc_stats::sample_self()?;
    let bytes1: u64 = players.iter().map(|(p, _)| p.bytes.load(Ordering::Relaxed)).sum();
    let counts1 = message_counts(players);
    let published1 = publisher.stats.bytes.load(Ordering::Relaxed);
    let busy1 = proc_stats::cpus_busy_seconds(&s.server_cpus)?;
    let load_busy1 = proc_stats::cpus_busy_seconds(&s.load_cpus)?;

    let mut step = StepReport {
        viewers: players.len(),
        passed: false,
        fail_reason: None,
        join_seconds,
        hold_seconds: hold,
        server_cpu_cores: (server1.cpu_seconds - server0.cpu_seconds).max(0.0) / hold,
        others_on_server_cpus_cores: 0.0,
        server_rss_mb: server1.rss_mb,
        server_processes: server1.processes,
        loadgen_cpu_cores: (self1.cpu_seconds - self0.cpu_seconds).max(0.0) / hold,
        others_on_loadgen_cpus_cores: 0.0,
        loadgen_saturated: false,
        lag_ms_p50: None,
        lag_ms_p99: None,
        lag_ms_max: None,
        read_lag_ms_p50: None,
        read_lag_ms_p99: None,
        players_failing: 0,
        players_disconnected: 0,
        players_no_frame: 0,
        players_stalled: 0,
        players_behind: 0,
        players_dropping: 0,
        frames_missed_percent: 0.0,
        received_mbit_s: bytes1.saturating_sub(bytes0) as f64 * 8.0 / hold / 1e6,
        video_fps_per_player: (counts1.0 - counts0.0) as f64 / hold / players.len().max(1) as f64,
        audio_fps_per_player: (counts1.1 - counts0.1) as f64 / hold / players.len().max(1) as f64,
        published_mbit_s: published1.saturating_sub(published0) as f64 * 8.0 / hold / 1e6,
        disconnect_example: None,
    };
    let server_cpus_busy = (busy1 - busy0) / hold;
    let load_cpus_busy = (load_busy1 - load_busy0) / hold;
    step.others_on_server_cpus_cores = (server_cpus_busy - step.server_cpu_cores).max(0.0);
    // The server's CPUs are disjoint from the load generator's unless pinning is off.
    step.others_on_loadgen_cpus_cores = (load_cpus_busy - step.loadgen_cpu_cores).max(0.0);
    step.loadgen_saturated = load_cpus_busy >= s.cpu_saturation * s.load_cpus.len().max(1) as f64;

    let max_lag_us = u32::try_from(s.max_lag.as_micros()).unwrap_or(u32::MAX);
    let mut all_lags: Vec<u32> = Vec::new();
    let mut all_read_lags: Vec<u32> = Vec::new();
    let (mut received, mut missed) = (0u64, 0u64);
    for (p, _) in players {
        let mut st = p.lock();
        let mut lags = std::mem::take(&mut st.lags_us);
        all_read_lags.append(&mut st.read_lags_us);
        let player_missed = std::mem::take(&mut st.missed_frames);
        received += lags.len() as u64;
        missed += player_missed;
        let due = lags.len() as u64 + player_missed;
        let failing = if let Phase::Ended(why) = &st.phase {
            step.players_disconnected += 1;
            step.disconnect_example.get_or_insert_with(|| why.clone());
            true
        } else if st.ttff_us.is_none() {
            step.players_no_frame += 1;
            true
        } else if lags.is_empty() {
            step.players_stalled += 1;
            true
        } else if percentile(&mut lags, 99.0).is_some_and(|l| l > max_lag_us) {
            step.players_behind += 1;
            true
        } else if due > 0 && player_missed as f64 > s.max_missed * due as f64 {
            step.players_dropping += 1;
            true
        } else {
            false
        };
        drop(st);
        step.players_failing += usize::from(failing);
        all_lags.extend_from_slice(&lags);
    }
    all_lags.sort_unstable();
    let ms = |us: u32| f64::from(us) / 1e3;
    step.lag_ms_p50 = percentile_of_sorted(&all_lags, 50.0).map(ms);
    step.lag_ms_p99 = percentile_of_sorted(&all_lags, 99.0).map(ms);
    step.lag_ms_max = all_lags.last().copied().map(ms);
    all_read_lags.sort_unstable();
    step.read_lag_ms_p50 = percentile_of_sorted(&all_read_lags, 50.0).map(ms);
    step.read_lag_ms_p99 = percentile_of_sorted(&all_read_lags, 99.0).map(ms);
    if received + missed > 0 {
        step.frames_missed_percent = missed as f64 * 100.0 / (received + missed) as f64;
    }

    let mut reasons = Vec::new();
    if let Some(why) = &abort {
        reasons.push(why.clone());
    }
    if step.lag_ms_p99.is_some_and(|l| l > clock::ms(s.max_lag)) {
        reasons.push(format!(
            "lag p99 {:.0} ms > {:.0} ms",
            step.lag_ms_p99.unwrap_or(0.0),
            clock::ms(s.max_lag)
        ));
    }
    if step.players_failing as f64 > s.max_failing * players.len() as f64 {
        reasons.push(format!(
            "{} of {} players failing (> {:.1}%: {} disconnected, {} no keyframe, {} stalled, {} behind, {} dropping frames)",
            step.players_failing,
            players.len(),
            s.max_failing * 100.0,
            step.players_disconnected,
            step.players_no_frame,
            step.players_stalled,
            step.players_behind,
            step.players_dropping
        ));
    }
    let server_limit = s.cpu_saturation * s.server_cpus.len().max(1) as f64;
    if step.server_cpu_cores >= server_limit {
        reasons.push(format!(
            "server CPU {:.2} cores >= {:.0}% of its {} CPU(s)",
            step.server_cpu_cores,
            s.cpu_saturation * 100.0,
            s.server_cpus.len()
        ));
    }
    if !reasons.is_empty() && step.loadgen_saturated {
        reasons.push(format!(
            "note: the load generator's CPUs were saturated ({:.2} cores by it, {:.2} by other processes, of {}): \
             the limit may be the load generator's",
            step.loadgen_cpu_cores,
            step.others_on_loadgen_cpus_cores,
            s.load_cpus.len()
        ));
    }
    if !reasons.is_empty()
        && step.server_cpu_cores < server_limit
        && server_cpus_busy >= server_limit
        && step.others_on_server_cpus_cores > 0.0
    {
        reasons.push(format!(
            "note: the server's CPUs were saturated, {:.2} cores of them by other processes: the limit is the \
             CPU share the server got, not its capacity",
            step.others_on_server_cpus_cores
        ));
    }
    step.passed = reasons.is_empty();
    if !step.passed {
        step.fail_reason = Some(reasons.join("; "));
    }
    Ok((step, abort.is_some()))
}

/// Video and audio messages received by all players so far.
fn message_counts(players: &[(Arc<PlayerShared>, usize)]) -> (u64, u64) {
    players.iter().fold((0, 0), |(v, a), (p, _)| {
        (
            v + p.video_messages.load(Ordering::Relaxed),
            a + p.audio_messages.load(Ordering::Relaxed),
        )
    })
}

fn progress_line(server: &str, index: usize, st: &StepReport, s: &RampSettings) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    format!(
        "[{server}] step {}: {} viewers | lag p50 {} p99 {} ms (at the read: p50 {} p99 {}) | server CPU {:.2}/{} cores (others {:.2}), RSS {:.0} MB | \
         loadgen CPU {:.2}/{} | {:.0} Mbit/s ({:.0}% of published), {:.1} video + {:.1} audio fps | failing {} (disc {}, no kf {}, stalled {}, behind {}, dropping {}; \
         missed {:.2}%){} | {}",
        index + 1,
        st.viewers,
        opt(st.lag_ms_p50),
        opt(st.lag_ms_p99),
        opt(st.read_lag_ms_p50),
        opt(st.read_lag_ms_p99),
        st.server_cpu_cores,
        s.server_cpus.len(),
        st.others_on_server_cpus_cores,
        st.server_rss_mb,
        st.loadgen_cpu_cores,
        s.load_cpus.len(),
        st.received_mbit_s,
        st.received_mbit_s * 100.0 / (st.published_mbit_s * st.viewers as f64).max(1e-9),
        st.video_fps_per_player,
        st.audio_fps_per_player,
        st.players_failing,
        st.players_disconnected,
        st.players_no_frame,
        st.players_stalled,
        st.players_behind,
        st.players_dropping,
        st.frames_missed_percent,
        st.disconnect_example.as_deref().map_or(String::new(), |e| format!(" | disconnect e.g.: {e}")),
        st.fail_reason.as_deref().map_or("pass".to_string(), |r| format!("FAIL: {r}")),
    )
}
