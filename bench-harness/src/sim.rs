//! `popline-bench sim`: the transport over `transport::sim` in virtual time, one run or the standard matrix,
//! with the loss-based controllers measured in the same invocation for comparison.

use crate::units::{parse_duration, parse_rate_bps};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::time::{Duration, Instant};
use transport::congestion::ControllerKind;
use transport::sim::link::{Outage, RateChange};
use transport::sim::media::LiveParams;
use transport::sim::scenario::{self, Mode, Report, Scenario};
use transport::sim::LossModel;

/// Arguments of `popline-bench sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// `bulk` (as much reliable data as the path takes) or `live` (a media stream with deadlines).
    #[arg(long, default_value = "bulk")]
    mode: String,
    /// Bottleneck rate.
    #[arg(long, default_value = "100mbit")]
    rate: String,
    /// Base round-trip time.
    #[arg(long, default_value = "100ms")]
    rtt: String,
    /// Random (Bernoulli) loss per direction, e.g. `1%` or `0.01`.
    #[arg(long, default_value = "0")]
    loss: String,
    /// Gilbert-Elliott burst loss instead of `--loss`: `GE:p,r` (good->bad, bad->good per packet).
    #[arg(long)]
    burst: Option<String>,
    /// Jitter per direction (uniform, without reordering unless `--reorder`).
    #[arg(long, default_value = "0ms")]
    jitter: String,
    /// Let jitter reorder packets.
    #[arg(long)]
    reorder: bool,
    /// Bottleneck queue: `1bdp`, `0.5bdp`, or bytes.
    #[arg(long, default_value = "1bdp")]
    queue: String,
    /// Virtual duration of each run.
    #[arg(long, default_value = "30s")]
    duration: String,
    /// Congestion controllers to run, comma-separated: popline, newreno, cubic.
    #[arg(long, default_value = "popline")]
    cc: String,
    /// Live stream bitrate.
    #[arg(long, default_value = "6mbit")]
    bitrate: String,
    /// Live stream GOP.
    #[arg(long, default_value = "2s")]
    gop: String,
    /// Live stream frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// B-frames between reference frames in the live stream.
    #[arg(long, default_value_t = 2)]
    b_frames: u32,
    /// End-to-end latency budget of live frames.
    #[arg(long, default_value = "280ms")]
    budget: String,
    /// A forward-direction outage: `DURATION@START`, e.g. `500ms@10s`.
    #[arg(long)]
    outage: Option<String>,
    /// Forward-direction rate changes, comma-separated `RATE@TIME` (time from the start of the run, warm-up
    /// included), e.g. `3.6mbit@12s,100mbit@17s` for a 5 s squeeze.
    #[arg(long)]
    rate_change: Option<String>,
    /// A competing bulk flow on the same bottleneck with this controller (e.g. `cubic`): the fairness test.
    #[arg(long)]
    competitor: Option<String>,
    /// Seed of the link's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run the standard matrix (RTT 20/100/200 ms x loss 0/0.1/1/2/5/10%, plus a GE burst and a 500 ms outage)
    /// for every `--cc`.
    #[arg(long)]
    matrix: bool,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
    /// Send packets unencrypted (experiments only).
    #[arg(long)]
    plaintext: bool,
    /// Worker threads for `--matrix` (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Live mode: low-priority bulk traffic on the connection for this long before the stream starts, as on a
    /// PoP-to-PoP connection that already carries other streams. `0s` measures a cold start.
    #[arg(long, default_value = "2s")]
    warmup: String,
    /// Print the measured flow's state (goodput, pacing rate, cwnd, RTT) every interval, e.g. `500ms`.
    #[arg(long)]
    trace: Option<String>,
}

fn parse_controllers(s: &str) -> Result<Vec<ControllerKind>> {
    s.split(',')
        .map(|n| {
            ControllerKind::parse(n.trim())
                .ok_or_else(|| anyhow!("unknown --cc {n:?}: popline, newreno, cubic"))
        })
        .collect()
}

fn parse_queue_bdp(s: &str, rate_bps: u64, rtt: Duration) -> Result<f64> {
    let t = s.trim().to_ascii_lowercase();
    if let Some(n) = t.strip_suffix("bdp") {
        let v: f64 = n.trim().parse().map_err(|_| anyhow!("bad --queue {s:?}"))?;
        return Ok(v);
    }
    let bytes: f64 = t
        .parse()
        .map_err(|_| anyhow!("bad --queue {s:?}: e.g. 1bdp or 150000"))?;
    let bdp = rate_bps as f64 / 8.0 * rtt.as_secs_f64();
    if bdp <= 0.0 {
        bail!("--queue in bytes needs a positive rate and RTT");
    }
    Ok(bytes / bdp)
}

fn parse_outage(s: &str) -> Result<Outage> {
    let (d, at) = s
        .split_once('@')
        .ok_or_else(|| anyhow!("bad --outage {s:?}: DURATION@START, e.g. 500ms@10s"))?;
    Ok(Outage {
        start: parse_duration(at)?,
        duration: parse_duration(d)?,
    })
}

fn parse_rate_changes(s: &str) -> Result<Vec<RateChange>> {
    s.split(',')
        .map(|part| {
            let (rate, at) = part
                .split_once('@')
                .ok_or_else(|| anyhow!("bad --rate-change {part:?}: RATE@TIME, e.g. 3.6mbit@12s"))?;
            Ok(RateChange {
                at: parse_duration(at)?,
                rate_bps: parse_rate_bps(rate)?,
            })
        })
        .collect()
}

fn base_scenario(a: &SimArgs) -> Result<Scenario> {
    let mode = match a.mode.as_str() {
        "bulk" => Mode::Bulk,
        "live" => Mode::Live,
        m => bail!("unknown --mode {m:?}: bulk or live"),
    };
    let rate_bps = parse_rate_bps(&a.rate)?;
    let rtt = parse_duration(&a.rtt)?;
    let loss = match &a.burst {
        Some(b) => LossModel::parse(b).map_err(|e| anyhow!("bad --burst: {e}"))?,
        None => LossModel::parse(&a.loss).map_err(|e| anyhow!("bad --loss: {e}"))?,
    };
    Ok(Scenario {
        mode,
        cc: ControllerKind::Popline,
        rate_bps,
        rtt,
        loss,
        jitter: parse_duration(&a.jitter)?,
        reorder: a.reorder,
        queue_bdp: parse_queue_bdp(&a.queue, rate_bps, rtt)?,
        duration: parse_duration(&a.duration)?,
        outages: a
            .outage
            .as_deref()
            .map(parse_outage)
            .transpose()?
            .into_iter()
            .collect(),
        rate_changes: a
            .rate_change
            .as_deref()
            .map(parse_rate_changes)
            .transpose()?
            .unwrap_or_default(),
        live: LiveParams {
            bitrate_bps: parse_rate_bps(&a.bitrate)?,
            fps: a.fps,
            gop: parse_duration(&a.gop)?,
            b_frames: a.b_frames,
            budget: parse_duration(&a.budget)?,
            ..LiveParams::default()
        },
        competitor: a
            .competitor
            .as_deref()
            .map(|n| ControllerKind::parse(n).ok_or_else(|| anyhow!("unknown --competitor {n:?}")))
            .transpose()?,
        encryption: !a.plaintext,
        seed: a.seed,
        trace_interval: a.trace.as_deref().map(parse_duration).transpose()?,
        warmup: if mode == Mode::Live {
            parse_duration(&a.warmup)?
        } else {
            Duration::ZERO
        },
    })
}

/// The standard matrix for one controller.
fn matrix(base: &Scenario) -> Vec<(String, Scenario)> {
    let mut out = Vec::new();
    for rtt_ms in [20u64, 100, 200] {
        let rtt = Duration::from_millis(rtt_ms);
        for loss in [0.0, 0.001, 0.01, 0.02, 0.05, 0.10] {
            let s = Scenario {
                rtt,
                loss: LossModel::Bernoulli { p: loss },
                ..base.clone()
            };
            out.push((format!("{:.1}%", loss * 100.0), s));
        }
        let ge = LossModel::GilbertElliott {
            p: 0.001,
            r: 0.1,
            loss_good: 0.0,
            loss_bad: 1.0,
        };
        out.push((
            "GE:0.1%,10%".to_string(),
            Scenario {
                rtt,
                loss: ge,
                ..base.clone()
            },
        ));
        let outage = Outage {
            start: base.duration / 3,
            duration: Duration::from_millis(500),
        };
        out.push((
            "outage 500ms".to_string(),
            Scenario {
                rtt,
                loss: LossModel::None,
                outages: vec![outage],
                ..base.clone()
            },
        ));
    }
    out
}

struct Row {
    label: String,
    report: Report,
    wall: Duration,
}

fn run_all(jobs: Vec<(String, Scenario)>, threads: usize, progress: bool) -> Result<Vec<Row>> {
    let total = jobs.len();
    let jobs = std::sync::Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let results = std::sync::Mutex::new(Vec::new());
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let job = jobs.lock().ok().and_then(|mut j| j.pop());
                let Some((idx, (label, s))) = job else { break };
                let t0 = Instant::now();
                let r = scenario::run(&s).with_context(|| format!("scenario {label}"));
                let wall = t0.elapsed();
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if progress {
                    eprintln!(
                        "[{n}/{total}] {} {} rtt {} ms {label}: {:.1} s",
                        s.cc.name(),
                        s.mode.name(),
                        s.rtt.as_millis(),
                        wall.as_secs_f64()
                    );
                }
                if let Ok(mut res) = results.lock() {
                    res.push((idx, r.map(|report| Row { label, report, wall })));
                }
            });
        }
    });
    let mut res = results.into_inner().map_err(|_| anyhow!("a worker panicked"))?;
    res.sort_by_key(|(i, _)| *i);
    res.into_iter().map(|(_, r)| r).collect()
}

fn loss_value(l: &LossModel) -> f64 {
    l.mean_loss()
}

fn to_json(row: &Row) -> serde_json::Value {
    let r = &row.report;
    let s = &r.scenario;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    json!({
        "cc": s.cc.name(),
        "mode": s.mode.name(),
        "link_bps": s.rate_bps,
        "loss": loss_value(&s.loss),
        "loss_model": row.label,
        "rtt_ms": s.rtt.as_millis() as u64,
        "jitter_ms": ms(s.jitter),
        "queue_bdp": s.queue_bdp,
        "duration_s": s.duration.as_secs_f64(),
        "seed": s.seed,
        "goodput_bps": r.goodput_bps.round() as u64,
        "goodput_ratio_of_ideal": r.goodput_bps / ((1.0 - loss_value(&s.loss)) * s.rate_bps as f64),
        "overhead_ratio": r.overhead_ratio,
        "frames_sent": r.frames_sent,
        "frames_on_time": r.frames_on_time,
        "frames_dropped": r.frames_dropped,
        "frames_undecodable_delivered": r.frames_undecodable_delivered,
        "frame_latency_p50_ms": ms(r.frame_latency_p50),
        "frame_latency_p99_ms": ms(r.frame_latency_p99),
        "p95_queue_delay_ms": ms(r.p95_queue_delay),
        "min_queue_delay_ms": ms(r.min_queue_delay),
        "packets_lost": r.flows.first().map_or(0, |f| f.sender.packets_lost),
        "competitor_cc": r.flows.get(1).map(|f| f.cc.name()),
        "competitor_goodput_bps": r.flows.get(1).map(|f| f.goodput_bps.round() as u64),
        "share_of_fair": r.flows.get(1).map(|f| 2.0 * r.goodput_bps / (r.goodput_bps + f.goodput_bps).max(1.0)),
        "wall_s": row.wall.as_secs_f64(),
    })
}

fn print_table(rows: &[Row], ccs: &[ControllerKind]) {
    let live = rows.first().is_some_and(|r| r.report.scenario.mode == Mode::Live);
    let mut header = format!("{:>6} {:>14}", "rtt", "loss");
    for cc in ccs {
        if live {
            header += &format!(" | {:>8} on-time  p99 ms  ovh", cc.name());
        } else {
            header += &format!(" | {:>8} Mbit/s x(1-p)C   ovh  q95ms", cc.name());
        }
    }
    if !live && ccs.len() > 1 {
        header += &format!(" | {}/{}", ccs[0].name(), ccs[1].name());
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    let per_cc = rows.len() / ccs.len().max(1);
    for i in 0..per_cc {
        let first = &rows[i].report;
        let mut line = format!("{:>4}ms {:>14}", first.scenario.rtt.as_millis(), rows[i].label);
        for c in 0..ccs.len() {
            let Some(row) = rows.get(c * per_cc + i) else {
                continue;
            };
            let r = &row.report;
            if live {
                let pct = if r.frames_sent == 0 {
                    0.0
                } else {
                    100.0 * r.frames_on_time as f64 / r.frames_sent as f64
                };
                line += &format!(
                    " | {:>7.3}% {:>14.1} {:>4.1}%",
                    pct,
                    r.frame_latency_p99.as_secs_f64() * 1e3,
                    r.overhead_ratio * 100.0
                );
            } else {
                let ideal = (1.0 - r.scenario.loss.mean_loss()) * r.scenario.rate_bps as f64;
                line += &format!(
                    " | {:>15.2} {:>7.3} {:>5.1}% {:>6.1}",
                    r.goodput_bps / 1e6,
                    r.goodput_bps / ideal,
                    r.overhead_ratio * 100.0,
                    r.p95_queue_delay.as_secs_f64() * 1e3
                );
            }
        }
        if !live && ccs.len() > 1 {
            if let (Some(a), Some(b)) = (rows.get(i), rows.get(per_cc + i)) {
                line += &format!(
                    " | {:>8.1}x",
                    a.report.goodput_bps / b.report.goodput_bps.max(1.0)
                );
            }
        }
        println!("{line}");
    }
}

/// Runs `popline-bench sim`.
pub fn run(a: &SimArgs) -> Result<()> {
    let base = base_scenario(a)?;
    let ccs = parse_controllers(&a.cc)?;
    let mut jobs = Vec::new();
    for cc in &ccs {
        let s = Scenario {
            cc: *cc,
            ..base.clone()
        };
        if a.matrix {
            jobs.extend(matrix(&s));
        } else {
            let label = match &a.burst {
                Some(b) => b.clone(),
                None => format!("{:.1}%", s.loss.mean_loss() * 100.0),
            };
            jobs.push((label, s));
        }
    }
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let t0 = Instant::now();
    let rows = run_all(jobs, threads, a.matrix)?;
    let wall = t0.elapsed();
    for row in rows.iter().filter(|r| !r.report.trace.is_empty()) {
        eprintln!("trace of {} ({}):", row.report.scenario.cc.name(), row.label);
        eprintln!(
            "{:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8} {:>7}",
            "t_s", "good_Mb", "send_Mb", "pace_Mb", "bw_Mb", "cwnd_B", "inflight_B", "srtt_ms", "lost"
        );
        for t in &row.report.trace {
            eprintln!(
                "{:>7.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10} {:>10} {:>8.1} {:>7} {}",
                t.t.as_secs_f64(),
                t.goodput_bps / 1e6,
                t.send_bps / 1e6,
                t.pacing_bps / 1e6,
                t.bandwidth_bps / 1e6,
                t.cwnd_bytes,
                t.in_flight_bytes,
                t.srtt.as_secs_f64() * 1e3,
                t.packets_lost,
                t.phase
            );
        }
    }
    if a.json {
        for row in &rows {
            println!("{}", to_json(row));
        }
    } else {
        print_table(&rows, &ccs);
        for row in rows.iter().filter(|r| r.report.flows.len() > 1) {
            let (a, b) = (&row.report.flows[0], &row.report.flows[1]);
            println!(
                "shared bottleneck: {} {:.1} Mbit/s vs {} {:.1} Mbit/s: {:.2}x its fair share",
                a.cc.name(),
                a.goodput_bps / 1e6,
                b.cc.name(),
                b.goodput_bps / 1e6,
                2.0 * a.goodput_bps / (a.goodput_bps + b.goodput_bps).max(1.0)
            );
        }
        let virt: f64 = rows
            .iter()
            .map(|r| r.report.scenario.duration.as_secs_f64())
            .sum();
        println!(
            "\n{} runs, {:.0} s of virtual time in {:.1} s of wall time ({} threads)",
            rows.len(),
            virt,
            wall.as_secs_f64(),
            threads
        );
    }
    Ok(())
}
