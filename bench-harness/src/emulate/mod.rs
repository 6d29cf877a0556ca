//! `popline-bench emulate`: a userspace link emulator for kernels without `sch_netem`.
//!
//! Two network namespaces, A and B, each get one end of a point-to-point path ([`netns::ADDR_A`] and
//! [`netns::ADDR_B`], link-local, reachable only between the two namespaces). The ends are TUN devices whose
//! file descriptors stay with this process, which forwards IP packets between them through one
//! [`transport::sim::Link`] per direction driven by the wall clock: the same netem model the simulator uses
//! (delay, jitter with or without reordering, Bernoulli or Gilbert-Elliott loss, duplication, rate with a bounded
//! queue, outages, rate changes), configured from a profile file in `netem-scripts/profiles/`.
//!
//! The command given after `--` runs in namespace A (e.g. `-- ping -c 10 169.254.77.2`); `--server` starts a
//! command in namespace B first, stopped when the run ends.

mod forward;
mod netns;
mod profile;
#[cfg(test)]
mod tests;
mod throughput;
mod trace;

pub use forward::{DirectionStats, Emulator};
pub use netns::{
    ip, move_tun_into, open_tun, process_runs, remove_stale_namespaces, unavailable as netns_unavailable,
    Lab, ADDR_A, ADDR_B,
};
pub use profile::Profile;

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Arguments of `popline-bench emulate`.
#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// The impairment profile (a `key=value` file, e.g. `netem-scripts/profiles/lossy-1pct.profile`).
    #[arg(long)]
    pub profile: PathBuf,
    /// Run for this many seconds; with a command, stop the command after this long.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// A shell command started in namespace B before the main command (e.g. a server), killed at the end.
    #[arg(long)]
    pub server: Option<String>,
    /// Overrides the profile's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Instead of a command: blast UDP through the path at each of these rates (e.g. `500mbit,1gbit`) and
    /// report what arrives and the emulator's CPU (is the emulator the bottleneck?); `--seconds` per rate.
    #[arg(long)]
    pub throughput: Option<String>,
    /// With `--throughput`: one JSON object per rate.
    #[arg(long)]
    pub json: bool,
    /// The command to run in namespace A; the emulator stops when it exits.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Runs `popline-bench emulate`: sets up the lab, forwards until the command exits or the time is up, prints
/// each direction's counters and tears everything down.
pub fn run(args: &EmulateArgs) -> Result<()> {
    let mut profile = Profile::load(&args.profile)?;
    if let Some(seed) = args.seed {
        profile.seed = seed;
    }
    if let Some(rates) = &args.throughput {
        let rates = rates
            .split(',')
            .map(|r| crate::units::parse_rate_bps(r.trim()))
            .collect::<Result<Vec<_>>>()?;
        return throughput::run(&profile, &rates, args.seconds.unwrap_or(5.0), args.json);
    }
    if args.command.is_empty() && args.seconds.is_none() {
        bail!("give --seconds N, or a command to run in namespace A after `--`");
    }
    let limit = match args.seconds {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => bail!("bad --seconds {s}: must be positive"),
        None => None,
    };
    if let Some(why) = netns::unavailable() {
        bail!("cannot build the emulation lab: {why}");
    }

    let (lab, ends) = Lab::create(profile.mtu)?;
    let emulator = Emulator::for_profile(ends.a, ends.b, &profile)?;
    eprintln!(
        "popline-bench emulate: profile {} between {} ({ADDR_A}) and {} ({ADDR_B})",
        profile.name, lab.ns_a, lab.ns_b
    );

    let mut server = match &args.server {
        Some(cmd) => Some(
            lab.command_in_b("sh")
                .args(["-c", &format!("exec {cmd}")])
                .spawn()
                .context("starting the --server command in namespace B")?,
        ),
        None => None,
    };
    let started = Instant::now();
    let outcome = if args.command.is_empty() {
        std::thread::sleep(limit.unwrap_or(Duration::ZERO));
        Ok(())
    } else {
        let mut cmd = lab.command_in_a(&args.command[0]);
        cmd.args(&args.command[1..]);
        run_until(cmd, limit)
    };
    if let Some(child) = server.as_mut() {
        stop_child(child);
    }
    let elapsed = started.elapsed();
    let stats = emulator.stop()?;
    drop(lab);
    for s in &stats {
        print_stats(s, elapsed);
    }
    outcome
}

/// Runs `cmd` to completion, or kills it after `limit`; fails if it fails.
fn run_until(mut cmd: Command, limit: Option<Duration>) -> Result<()> {
    let mut child = cmd.spawn().context("starting the command in namespace A")?;
    let deadline = limit.map(|l| Instant::now() + l);
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("the command in namespace A exited with {status}");
            }
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop_child(&mut child);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a child this process started, and reaps it.
fn stop_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn print_stats(s: &DirectionStats, elapsed: Duration) {
    let l = &s.link;
    let secs = elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "{}: offered {} pkts ({:.1} Mbit/s), delivered {} ({:.1} Mbit/s), lost {}, outage {}, queue drops {}, \
         limit drops {}, duplicated {}, read errors {}, write errors {}",
        s.name,
        l.offered_packets,
        l.offered_bytes as f64 * 8.0 / secs / 1e6,
        l.delivered_packets,
        l.delivered_bytes as f64 * 8.0 / secs / 1e6,
        l.lost_packets,
        l.outage_packets,
        l.queue_drop_packets,
        s.limit_drops,
        l.duplicated_packets,
        s.read_errors,
        s.write_errors,
    );
}
