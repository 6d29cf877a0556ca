//! `popline-bench compare`: popline against TCP CUBIC, TCP BBR, quinn and SRT across the same emulated path,
//! in one run, bulk and live.
//!
//! Each (variant, mode) run gets a fresh lab from [`crate::emulate`] (two namespaces joined by the userspace
//! link emulator, configured from the profile), so no run inherits another's queue or state. The sender runs in
//! namespace A and the receiver in namespace B, on threads of this process ([`ns_thread`]). Per run:
//!
//! - bulk: as much data as the variant moves for `--seconds` after `--warmup`; goodput at the receiver.
//! - live: the 6 Mbit/s stream of [`live`] (30 fps, GOP 2 s, B-frames, audio) for `--live-warmup` +
//!   `--live-seconds`; the frames captured after the warm-up are judged against `--budget` (default
//!   2.5 x RTT + 30 ms: 280 ms at RTT 100 ms, the design's target). SRT delivers each packet its latency
//!   setting after the sender took it plus the one-way delay (measured: p50 456 ms at latency 400 ms, RTT
//!   100 ms), so an SRT row with latency L is judged at L + RTT/2 + 30 ms (`budget_ms` says which): the same
//!   30 ms allowance the budget gives popline. SRT runs twice: at the latency Haivision advises (4 x RTT),
//!   and at the latency that fits our budget (budget - RTT/2 - 30 ms).
//!
//! `popline-primed` (opt-in, not in the default variants) is popline with the simulator's live warm-up: before
//! the stream, the connection carries low-priority bulk traffic (as a PoP-to-PoP connection that already
//! carries other streams does), so the controller knows the path's bandwidth before the first keyframe.
//!
//! The one-way delay of every row is the A-to-B packets' delay through the emulated path (propagation plus
//! bottleneck queueing, 95th percentile), the same measure for every variant. CPU is the variant's own
//! threads (and, for SRT, its processes), not the emulator's, over the whole run and, live, over its steady
//! part ([`steady`]: without the connection's one-off costs).
//! `--matrix` sweeps RTT x loss ([`matrix`]) and writes a Markdown report with SVG plots ([`svg`]).

mod live;
mod matrix;
pub mod ns_thread;
mod popline;
mod quinn;
mod report;
mod run;
mod srt;
mod steady;
pub mod svg;
mod tcp;
#[cfg(test)]
mod tests;

use crate::emulate::{netns_unavailable, Emulator, Lab, Profile};
use crate::units::{parse_duration, parse_rate_bps};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use report::Row;
use run::{Outcome, PoplineTuning, RunSpec};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Extra latency every live row is allowed over its transport's own delay: the budget is 2.5 x RTT plus this
/// by default, and an SRT row with latency L is judged at L plus this.
const LATENCY_ALLOWANCE: Duration = Duration::from_millis(30);
/// SRT's smallest latency setting we run (SRT's own default is 120 ms).
const SRT_MIN_LATENCY: Duration = Duration::from_millis(20);

/// Arguments of `popline-bench compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The impairment profile: a file, or a name in `netem-scripts/profiles/` (e.g. `lossy-1pct`).
    #[arg(long, required_unless_present = "matrix")]
    pub profile: Option<String>,
    /// Bulk: seconds measured per variant (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Bulk: seconds of transfer before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Live: seconds of stream judged per variant (after the live warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub live_seconds: f64,
    /// Live: seconds of stream before the judged frames (sent, not judged; the same for every variant).
    #[arg(long, default_value_t = 2.0)]
    pub live_warmup: f64,
    /// Live: a frame's budget from capture to complete arrival (default 2.5 x RTT + 30 ms).
    #[arg(long)]
    pub budget: Option<String>,
    /// Live: the stream's bitrate.
    #[arg(long, default_value = "6mbit")]
    pub bitrate: String,
    /// Variants, comma-separated: popline, tcp-cubic, tcp-bbr, quinn, srt (live only), popline-primed (live
    /// only, opt-in: popline on a connection that carried bulk traffic before the stream).
    #[arg(long, default_value = "popline,tcp-cubic,tcp-bbr,quinn,srt")]
    pub variants: String,
    /// Modes, comma-separated: bulk, live.
    #[arg(long, default_value = "bulk,live")]
    pub modes: String,
    /// Print one JSON object per variant and mode instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Sweep the standard matrix (RTT 20/100/200 ms x loss 0/1/3%, 100 Mbit/s, 1-BDP queue) and write
    /// `report.md` and SVG plots into `--out`.
    #[arg(long)]
    pub matrix: bool,
    /// Where `--matrix` writes its report.
    #[arg(long, default_value = "compare-report")]
    pub out: PathBuf,
    /// Overrides the profile's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// popline: its pacer's round, microseconds (`ConnectionConfig::pacing_round`; the transport's default
    /// when not given; 0 paces packet by packet). Shown in the rows' `note` when given.
    #[arg(long)]
    pub popline_pacing_round_us: Option<u64>,
    /// popline: ACK after this many ack-eliciting packets (`ConnectionConfig::ack_every`; the transport's
    /// default when not given). Shown in the rows' `note` when given.
    #[arg(long)]
    pub popline_ack_every: Option<u32>,
    /// popline: each side's wait ends once this many completions are ready or `--popline-wait-batch-us`
    /// have passed (`engine::uring::WaitBatch`; the node's default, 16 or 200 us, when neither is given).
    #[arg(long)]
    pub popline_wait_batch: Option<u32>,
    /// popline: the longest a wait goes on once a completion is ready, microseconds (0: no batching).
    #[arg(long)]
    pub popline_wait_batch_us: Option<u64>,
    /// popline: how long a new connection may prime the path with padding while its controller is in
    /// startup, milliseconds (`ConnectionConfig::startup_priming`; 0: none). Its bytes cost CPU that a
    /// long-lived PoP link pays once, and a short run charges to its stream.
    #[arg(long)]
    pub popline_startup_priming_ms: Option<u64>,
}

/// A transport under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The popline transport on the engine.
    Popline,
    /// TCP with the kernel's CUBIC.
    TcpCubic,
    /// TCP with the kernel's BBR.
    TcpBbr,
    /// quinn (QUIC), set up as its perf tool.
    Quinn,
    /// SRT (srt-live-transmit), live only.
    Srt,
    /// popline whose connection carried bulk traffic before the stream (live only, opt-in).
    PoplinePrimed,
}

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 6] = [
        Variant::Popline,
        Variant::TcpCubic,
        Variant::TcpBbr,
        Variant::Quinn,
        Variant::Srt,
        Variant::PoplinePrimed,
    ];

    /// The name in the CLI and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Popline => "popline",
            Variant::TcpCubic => "tcp-cubic",
            Variant::TcpBbr => "tcp-bbr",
            Variant::Quinn => "quinn",
            Variant::Srt => "srt",
            Variant::PoplinePrimed => "popline-primed",
        }
    }

    /// Parses a variant name.
    pub fn parse(s: &str) -> Result<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| {
            anyhow!("unknown variant {s:?}: popline, tcp-cubic, tcp-bbr, quinn, srt, popline-primed")
        })
    }

    /// Whether the variant runs in `mode` (SRT is a live protocol only; priming is about live streams).
    pub fn runs_in(self, mode: Mode) -> bool {
        mode == Mode::Live || !matches!(self, Variant::Srt | Variant::PoplinePrimed)
    }
}

/// What a run carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As much data as the variant moves.
    Bulk,
    /// The live stream, frames judged against the budget.
    Live,
}

impl Mode {
    /// The name in the CLI and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Bulk => "bulk",
            Mode::Live => "live",
        }
    }

    /// Parses a mode name.
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "bulk" => Ok(Mode::Bulk),
            "live" => Ok(Mode::Live),
            _ => bail!("unknown mode {s:?}: bulk, live"),
        }
    }
}

/// The comparison's settings, parsed from the CLI.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Variants, in order.
    pub variants: Vec<Variant>,
    /// Modes, in order.
    pub modes: Vec<Mode>,
    /// Bulk measured window.
    pub seconds: Duration,
    /// Bulk warm-up.
    pub warmup: Duration,
    /// Live judged window.
    pub live_seconds: Duration,
    /// Live warm-up.
    pub live_warmup: Duration,
    /// Live budget; `None`: 2.5 x RTT + 30 ms of each profile.
    pub budget: Option<Duration>,
    /// Live bitrate, bits per second.
    pub bitrate_bps: u64,
    /// popline's settings that differ from the transport's defaults.
    pub popline_tuning: PoplineTuning,
}

impl Settings {
    /// Parses and checks the CLI's settings.
    pub fn from_args(args: &CompareArgs) -> Result<Settings> {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        };
        let variants = list(&args.variants)
            .iter()
            .map(|v| Variant::parse(v))
            .collect::<Result<Vec<_>>>()?;
        let modes = list(&args.modes)
            .iter()
            .map(|m| Mode::parse(m))
            .collect::<Result<Vec<_>>>()?;
        if variants.is_empty() || modes.is_empty() {
            bail!("give at least one variant and one mode");
        }
        Ok(Settings {
            variants,
            modes,
            seconds: seconds(args.seconds, "--seconds", false)?,
            warmup: seconds(args.warmup, "--warmup", true)?,
            live_seconds: seconds(args.live_seconds, "--live-seconds", false)?,
            live_warmup: seconds(args.live_warmup, "--live-warmup", true)?,
            budget: args.budget.as_deref().map(parse_duration).transpose()?,
            bitrate_bps: parse_rate_bps(&args.bitrate)?,
            popline_tuning: PoplineTuning {
                pacing_round: args.popline_pacing_round_us.map(Duration::from_micros),
                ack_every: args.popline_ack_every,
                wait_batch: crate::engine_args::wait_batch(
                    args.popline_wait_batch,
                    args.popline_wait_batch_us,
                ),
                startup_priming: args.popline_startup_priming_ms.map(Duration::from_millis),
            },
        })
    }

    /// The live budget on a path of round-trip time `rtt`.
    pub fn budget_for(&self, rtt: Duration) -> Duration {
        self.budget.unwrap_or(rtt * 5 / 2 + LATENCY_ALLOWANCE)
    }

    /// The runs one profile takes: (variant, mode, SRT latency), in table order.
    pub fn runs(&self, rtt: Duration) -> Vec<(Variant, Mode, Option<Duration>)> {
        let mut runs = Vec::new();
        for &mode in &self.modes {
            for &v in self.variants.iter().filter(|v| v.runs_in(mode)) {
                if v == Variant::Srt {
                    let advised = (rtt * 4).max(SRT_MIN_LATENCY);
                    let ours = self
                        .budget_for(rtt)
                        .saturating_sub(rtt / 2 + LATENCY_ALLOWANCE)
                        .max(SRT_MIN_LATENCY);
                    runs.push((v, mode, Some(advised)));
                    if ours != advised {
                        runs.push((v, mode, Some(ours)));
                    }
                } else {
                    runs.push((v, mode, None));
                }
            }
        }
        runs
    }
}

fn seconds(s: f64, name: &str, zero_ok: bool) -> Result<Duration> {
    if !s.is_finite() || s < 0.0 || (!zero_ok && s == 0.0) {
        bail!("bad {name} {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

/// Reads `--profile`: a file, or the name of one in `netem-scripts/profiles/`.
pub fn load_profile(arg: &str) -> Result<Profile> {
    let path = Path::new(arg);
    if path.exists() {
        return Profile::load(path);
    }
    for dir in [
        PathBuf::from("netem-scripts/profiles"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../netem-scripts/profiles"),
    ] {
        let p = dir.join(format!("{arg}.profile"));
        if p.exists() {
            return Profile::load(&p);
        }
    }
    bail!("no profile {arg:?} (neither a file nor a name in netem-scripts/profiles/)")
}

/// Runs `popline-bench compare`.
pub fn run(args: &CompareArgs) -> Result<()> {
    let settings = Settings::from_args(args)?;
    if let Some(why) = netns_unavailable() {
        bail!("cannot build the emulation lab: {why}");
    }
    if args.matrix {
        return matrix::run(args, &settings);
    }
    let name = args
        .profile
        .as_deref()
        .ok_or_else(|| anyhow!("give --profile (or --matrix)"))?;
    let mut profile = load_profile(name)?;
    if let Some(seed) = args.seed {
        profile.seed = seed;
    }
    let rows = compare_profile(&profile, &settings, &mut |r, done, total| {
        eprintln!(
            "compare: {} {} done ({done}/{total}){}",
            r.label(),
            r.mode,
            r.skipped
                .as_deref()
                .map_or_else(String::new, |s| format!(": skipped: {s}"))
        );
        if args.json {
            match serde_json::to_string(r) {
                Ok(j) => println!("{j}"),
                Err(e) => eprintln!("compare: cannot print a row as JSON: {e}"),
            }
        }
    });
    if !args.json {
        print!("{}", report::table(&rows));
    }
    Ok(())
}

/// Runs every (variant, mode) of `settings` on `profile`; calls `on_row(row, done, total)` after each.
pub fn compare_profile(
    profile: &Profile,
    settings: &Settings,
    on_row: &mut dyn FnMut(&Row, usize, usize),
) -> Vec<Row> {
    let rtt = profile.a_to_b.delay + profile.b_to_a.delay;
    let runs = settings.runs(rtt);
    let mut rows = Vec::new();
    for (i, &(variant, mode, srt_latency)) in runs.iter().enumerate() {
        let row = measure(profile, settings, variant, mode, srt_latency);
        on_row(&row, i + 1, runs.len());
        rows.push(row);
    }
    rows
}

/// One run on a fresh lab; a variant that cannot run gives a row that says why.
fn measure(
    profile: &Profile,
    settings: &Settings,
    variant: Variant,
    mode: Mode,
    srt_latency: Option<Duration>,
) -> Row {
    let rtt = profile.a_to_b.delay + profile.b_to_a.delay;
    let budget = match srt_latency {
        Some(l) => l + rtt / 2 + LATENCY_ALLOWANCE,
        None => settings.budget_for(rtt),
    };
    let (window, warmup) = match mode {
        Mode::Bulk => (settings.seconds, settings.warmup),
        Mode::Live => (settings.live_seconds, settings.live_warmup),
    };
    let mut row = Row {
        variant: variant.name(),
        mode: mode.name(),
        profile: profile.name.clone(),
        rtt_ms: rtt.as_secs_f64() * 1e3,
        loss: profile.a_to_b.loss.mean_loss(),
        link_bps: profile.a_to_b.rate_bps,
        goodput_bps: 0.0,
        frame_latency_p50_ms: None,
        frame_latency_p99_ms: None,
        frames_sent: 0,
        frames_on_time: 0,
        frames_delivered: 0,
        on_time_ratio: None,
        budget_ms: (mode == Mode::Live).then_some(budget.as_secs_f64() * 1e3),
        srt_latency_ms: srt_latency.map(|l| l.as_secs_f64() * 1e3),
        p95_one_way_delay_ms: 0.0,
        cpu_s_per_gb: None,
        machine_cpu_s_per_gb: None,
        emulator_cpu_s_per_gb: None,
        steady_cpu_s_per_gb: None,
        steady_machine_cpu_s_per_gb: None,
        seconds: window.as_secs_f64(),
        note: None,
        skipped: None,
    };
    if variant == Variant::Srt {
        if let Some(why) = srt::unavailable() {
            row.skipped = Some(why);
            return row;
        }
    }
    match run_on_lab(
        profile,
        settings,
        variant,
        mode,
        srt_latency,
        budget,
        warmup,
        window,
    ) {
        Ok((o, p95, machine, steady)) => {
            row.goodput_bps = o.window_bytes as f64 * 8.0 / o.window_s.max(1e-9);
            row.p95_one_way_delay_ms = p95.as_secs_f64() * 1e3;
            let per_gb = |s: f64| (o.total_bytes > 0).then(|| s / (o.total_bytes as f64 / 1e9));
            row.cpu_s_per_gb = per_gb(o.cpu_s);
            row.machine_cpu_s_per_gb = per_gb(machine.charged_s());
            row.emulator_cpu_s_per_gb = per_gb(machine.emulator_user_s + machine.emulator_system_s);
            if let Some((own, machine)) = steady.and_then(|s| s.per_gb(&o.delivered_at)) {
                row.steady_cpu_s_per_gb = Some(own);
                row.steady_machine_cpu_s_per_gb = Some(machine);
            }
            row.note = o.note;
            if let Some(l) = o.live {
                row.frames_sent = l.frames_sent;
                row.frames_on_time = l.frames_on_time;
                row.frames_delivered = l.frames_delivered;
                row.on_time_ratio =
                    (l.frames_sent > 0).then(|| l.frames_on_time as f64 / l.frames_sent as f64);
                row.frame_latency_p50_ms = Some(l.latency_p50_ms);
                row.frame_latency_p99_ms = Some(l.latency_p99_ms);
            }
        }
        Err(e) => row.skipped = Some(format!("{e:#}")),
    }
    row
}

/// Builds the lab, runs the variant, stops the emulator: the outcome, the A-to-B p95 one-way delay and the
/// machine's CPU over the run.
#[allow(clippy::too_many_arguments)]
fn run_on_lab(
    profile: &Profile,
    settings: &Settings,
    variant: Variant,
    mode: Mode,
    srt_latency: Option<Duration>,
    budget: Duration,
    warmup: Duration,
    window: Duration,
) -> Result<(Outcome, Duration, MachineCpu, Option<steady::SteadyCpu>)> {
    let (lab, ends) = Lab::create(profile.mtu)?;
    let emulator = Emulator::for_profile(ends.a, ends.b, profile)?;
    for ns in [&lab.ns_a, &lab.ns_b] {
        tcp::tune_namespace(ns)?;
    }
    let spec = RunSpec {
        lab: &lab,
        mode,
        warmup,
        window,
        budget,
        bitrate_bps: settings.bitrate_bps,
        link_rate_bps: profile.a_to_b.rate_bps,
        rtt: profile.a_to_b.delay + profile.b_to_a.delay,
        epoch: Instant::now(),
        mtu: profile.mtu,
        popline_tuning: settings.popline_tuning,
    };
    let before = MachineCpu::read()?;
    let sampler = match mode {
        Mode::Live => steady::SteadySampler::start(spec.epoch, warmup, window)?,
        Mode::Bulk => None,
    };
    let outcome = match (variant, srt_latency) {
        (Variant::Popline, _) => popline::run(&spec, false),
        (Variant::PoplinePrimed, _) => popline::run(&spec, true),
        (Variant::TcpCubic, _) => tcp::run(&spec, "cubic"),
        (Variant::TcpBbr, _) => tcp::run(&spec, "bbr"),
        (Variant::Quinn, _) => quinn::run(&spec),
        (Variant::Srt, Some(latency)) => srt::run(&spec, latency),
        (Variant::Srt, None) => Err(anyhow!("an SRT run needs a latency")),
    };
    let outcome = match (outcome, sampler) {
        (Ok(o), Some(s)) => {
            let steady = s.finish()?;
            Ok((o, steady))
        }
        (Ok(o), None) => Ok((o, None)),
        (Err(e), sampler) => {
            if let Some(s) = sampler {
                s.abandon();
            }
            Err(e)
        }
    };
    let (outcome, steady) = outcome?;
    // Read before the emulator's threads exit (a thread's times go with it).
    let machine = MachineCpu::read()?.since(&before);
    let stats = emulator.stop()?;
    let queue_p95 = stats
        .iter()
        .find(|s| s.name == "a2b")
        .map_or(Duration::ZERO, |s| s.queue_delay_p95);
    drop(lab);
    Ok((outcome, profile.a_to_b.delay + queue_p95, machine, steady))
}

/// CPU of the whole machine and of the link emulator's threads (`emu-*`), over a run.
#[derive(Debug, Clone, Default)]
struct MachineCpu {
    /// Busy seconds of every CPU (user, nice, system, irq, softirq).
    busy_s: f64,
    /// Every other process's CPU seconds (kernel threads but `ksoftirqd` included), by pid (over a run: what they used in it).
    others: std::collections::HashMap<u32, f64>,
    /// The emulator threads' user seconds (the link model).
    emulator_user_s: f64,
    /// The emulator threads' system seconds: their TUN reads and writes, and the kernel's processing of each
    /// packet they write into a TUN device (IP, UDP or TCP receive, TCP's ACKs and ACK-clocked sends).
    emulator_system_s: f64,
}

impl MachineCpu {
    fn read() -> Result<MachineCpu> {
        let (emulator_user_s, emulator_system_s) = crate::cpu::threads_cpu_seconds("emu-")?;
        Ok(MachineCpu {
            busy_s: crate::cpu::machine_busy_seconds()?,
            others: crate::cpu::other_processes_cpu_seconds()?,
            emulator_user_s,
            emulator_system_s,
        })
    }

    fn since(&self, before: &MachineCpu) -> MachineCpu {
        MachineCpu {
            busy_s: (self.busy_s - before.busy_s).max(0.0),
            // A process that started during the run: all of its time is in the run.
            others: self
                .others
                .iter()
                .map(|(pid, s)| {
                    (
                        *pid,
                        (s - before.others.get(pid).copied().unwrap_or(0.0)).max(0.0),
                    )
                })
                .collect(),
            emulator_user_s: (self.emulator_user_s - before.emulator_user_s).max(0.0),
            emulator_system_s: (self.emulator_system_s - before.emulator_system_s).max(0.0),
        }
    }

    /// Everything the machine spent but the emulator's link model and other processes: the variant's threads
    /// and processes, and the kernel's work on its packets wherever it ran (the emulator's threads, softirq,
    /// timers, ksoftirqd).
    fn charged_s(&self) -> f64 {
        (self.busy_s - self.emulator_user_s - self.others.values().sum::<f64>()).max(0.0)
    }
}
