//! `popline-bench topology`: N `popline` nodes joined by the PoP mesh across emulated links (root).
//!
//! Each node (`a`, `b`, `c`, ...) gets a network namespace ([`net`]); each link (every pair by default, or the
//! pairs given with `--link x-y=PROFILE`) is a point-to-point subnet `169.254.(100+k).0/30` between two
//! namespaces, carried by the userspace emulator with its impairment profile (this kernel has no
//! `sch_netem`). Each namespace runs a `popline` node ([`lab`]) with a generated config and key ([`config`]):
//! RTMP and the admin API on the namespace's loopback, the mesh on UDP port 7000 with one peer per link at the
//! peer's address on it. When every link of the mesh is up it prints one line per node (namespace, RTMP URL,
//! admin URL, pid) and then waits for SIGINT/SIGTERM, or runs the command after `--` (in this namespace, with
//! the topology in its environment: [`env()`]). Everything is removed on every exit that unwinds (namespaces,
//! nodes, their directories); namespaces left by a killed run are removed by the next one.

mod api;
pub(crate) mod config;
mod lab;
mod net;
mod signals;
mod spec;
#[cfg(test)]
mod tests_e2e;

pub use config::NodeSettings;
pub use lab::Topology;
pub use spec::Spec;

use crate::emulate::netns_unavailable;
use crate::fanout::popline_server;
use anyhow::{bail, Context, Result};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long the command has to exit after SIGTERM before it is killed.
const COMMAND_GRACE: Duration = Duration::from_secs(3);
/// How often the wait loop looks at signals and the command.
const POLL: Duration = Duration::from_millis(50);

/// Arguments of `popline-bench topology`.
#[derive(Debug, Args)]
pub struct TopologyArgs {
    /// How many nodes (2 to 26), named `a`, `b`, `c`, ...
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// A link's profile, `x-y=PROFILE` (a file or a name in `netem-scripts/profiles/`); repeatable.
    #[arg(long = "link", value_name = "X-Y=PROFILE")]
    pub links: Vec<String>,
    /// The profile of every pair not given with `--link`.
    #[arg(long, default_value = "clean")]
    pub profile: String,
    /// Only the pairs given with `--link` are linked (default: every pair, a full mesh).
    #[arg(long)]
    pub only_listed: bool,
    /// `[mesh.app_origins]`: `APP=x,y` (the nodes that may be home to the app's streams); repeatable.
    #[arg(long = "origins", value_name = "APP=X,Y")]
    pub origins: Vec<String>,
    /// `engine.cores` of each node.
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// `mesh.frame_budget_ms` (default: the node's).
    #[arg(long)]
    pub frame_budget_ms: Option<u64>,
    /// `mesh.link_timeout_ms` (default: the node's, 800).
    #[arg(long)]
    pub link_timeout_ms: Option<u64>,
    /// `mesh.pull_grace_ms` (default: the node's).
    #[arg(long)]
    pub pull_grace_ms: Option<u64>,
    /// `rtmp.unpublish_grace_ms` (default: the node's).
    #[arg(long)]
    pub unpublish_grace_ms: Option<u64>,
    /// The admin API's bearer token on every node.
    #[arg(long, default_value = "popline-topology")]
    pub token: String,
    /// The popline binary (default: `popline` beside this executable).
    #[arg(long)]
    pub popline_bin: Option<PathBuf>,
    /// Keep each node's config and logs in this directory.
    #[arg(long)]
    pub keep_logs: Option<PathBuf>,
    /// The command to run once the topology is up (in this namespace); the topology goes when it exits.
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl TopologyArgs {
    fn settings(&self, spec: &Spec) -> NodeSettings {
        NodeSettings {
            cores: self.cores,
            token: self.token.clone(),
            frame_budget_ms: self.frame_budget_ms,
            link_timeout_ms: self.link_timeout_ms,
            pull_grace_ms: self.pull_grace_ms,
            unpublish_grace_ms: self.unpublish_grace_ms,
            app_origins: spec.app_origins.clone(),
        }
    }
}

/// Runs `popline-bench topology`.
pub fn run(args: &TopologyArgs) -> Result<()> {
    // From here on SIGINT/SIGTERM only set a flag: every exit path tears the topology down.
    let arrived = signals::watch()?;
    let spec = Spec::parse(
        args.nodes,
        &args.links,
        &args.profile,
        args.only_listed,
        &args.origins,
    )?;
    if let Some(why) = netns_unavailable() {
        bail!("cannot build the topology: {why}");
    }
    let binary = args
        .popline_bin
        .clone()
        .unwrap_or_else(popline_server::default_binary);
    let mut topo = Topology::start(&spec, &binary, &args.settings(&spec))?;
    for (link, profile) in spec.links.iter().zip(topo.profile_names()) {
        eprintln!("link {}-{}: {profile}", link.a, link.b);
    }
    eprintln!("slowest link RTT (propagation): {:?}", topo.slowest_rtt());
    for n in &topo.nodes {
        println!(
            "node {}: ns={} rtmp={} http={} pid={}",
            n.id,
            n.ns,
            n.rtmp_url(),
            n.http_url(),
            n.pid
        );
    }
    let outcome = if args.command.is_empty() {
        eprintln!("popline-bench topology: ready; Ctrl-C (SIGINT) or SIGTERM removes it");
        wait_for_signal(&arrived, &mut topo);
        Ok(())
    } else {
        let mut cmd = Command::new(&args.command[0]);
        cmd.args(&args.command[1..]).envs(env(&topo));
        run_command(cmd, &arrived)
    };
    topo.stop(args.keep_logs.as_deref());
    outcome
}

/// The topology as environment variables: `POPLINE_NODES=a,b,c`, `POPLINE_LINKS=a-b=PROFILE,...`,
/// `POPLINE_TOKEN`, and per node `POPLINE_NS_A`, `POPLINE_RTMP_A` (`rtmp://127.0.0.1:1935`, in the node's
/// namespace), `POPLINE_HTTP_A`, `POPLINE_PID_A`.
pub fn env(topo: &Topology) -> Vec<(String, String)> {
    let mut vars = vec![
        ("POPLINE_NODES".to_string(), topo.spec.nodes.join(",")),
        ("POPLINE_LINKS".to_string(), topo.spec.links_line()),
        ("POPLINE_TOKEN".to_string(), topo.token.clone()),
    ];
    for n in &topo.nodes {
        let id = n.id.to_ascii_uppercase();
        vars.push((format!("POPLINE_NS_{id}"), n.ns.clone()));
        vars.push((format!("POPLINE_RTMP_{id}"), n.rtmp_url()));
        vars.push((format!("POPLINE_HTTP_{id}"), n.http_url()));
        vars.push((format!("POPLINE_PID_{id}"), n.pid.to_string()));
    }
    vars
}

/// Waits until SIGINT or SIGTERM; says once if a node exits meanwhile.
fn wait_for_signal(arrived: &signals::Arrived, topo: &mut Topology) {
    let mut reported = false;
    while arrived.get().is_none() {
        if !reported {
            if let Err(e) = topo.check_alive() {
                eprintln!("popline-bench topology: {e:#}");
                reported = true;
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Runs the command to its end; a SIGINT or SIGTERM to this process is passed on to it (SIGTERM, then
/// SIGKILL after a grace period). Fails if the command fails.
fn run_command(mut cmd: Command, arrived: &signals::Arrived) -> Result<()> {
    let mut child = cmd.spawn().context("starting the command")?;
    let mut signalled: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() && signalled.is_none() {
                bail!("the command exited with {status}");
            }
            return Ok(());
        }
        match (arrived.get(), signalled) {
            (Some(signal), None) => {
                eprintln!("popline-bench topology: {signal}: stopping the command");
                terminate(&child);
                signalled = Some(Instant::now());
            }
            (Some(_), Some(at)) if at.elapsed() > COMMAND_GRACE => {
                stop_child(&mut child);
                return Ok(());
            }
            _ => {}
        }
        std::thread::sleep(POLL);
    }
}

/// SIGTERM to a child this process started.
fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Kills a child this process started, and reaps it.
fn stop_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
