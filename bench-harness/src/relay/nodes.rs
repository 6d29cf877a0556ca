//! The relay nodes of a run, as child processes in the lab's namespaces: started with `ip netns exec NS`
//! (which execs the server, so the pid is the server's), waited for from a thread in that namespace, their
//! CPU time read from `/proc`, stopped (and their directories removed) when dropped.

use crate::compare::ns_thread;
use crate::fanout::proc_stats;
use crate::fanout::server::{self, ServerProcess};
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a node has to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(100);

/// One relay node.
pub struct Node {
    /// The process (stopped on drop).
    pub process: ServerProcess,
    /// The namespace it runs in.
    pub ns: String,
    /// Its RTMP address, in `ns`.
    pub rtmp: SocketAddr,
}

/// A run's relay chain: the publisher pushes to the first node, the viewers play from the last.
pub struct Nodes {
    /// The nodes, first to last.
    pub nodes: Vec<Node>,
}

impl Nodes {
    /// The node the publisher pushes to.
    pub fn first(&self) -> Result<&Node> {
        self.nodes.first().context("no relay node")
    }

    /// The node the viewers play from.
    pub fn last(&self) -> Result<&Node> {
        self.nodes.last().context("no relay node")
    }

    /// CPU seconds (user + system) of every node's process tree so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.nodes
            .iter()
            .filter_map(|n| proc_stats::sample_tree(n.process.pid()).ok())
            .map(|s| s.cpu_seconds)
            .sum()
    }

    /// Fails, with its logs, if a node has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            if let Some(why) = n.process.exited() {
                bail!("{} exited ({why}): {}", n.process.name, n.process.log_tails());
            }
        }
        Ok(())
    }

    /// Stops every node, last first; copies logs into `keep_logs` if given.
    pub fn stop(self, keep_logs: Option<&Path>) {
        for n in self.nodes.into_iter().rev() {
            let name = n.process.name.clone();
            if let Err(e) = n.process.stop(keep_logs) {
                eprintln!("[{name}] stopping: {e:#}");
            }
        }
    }
}

/// A fresh directory for node `name` of this run.
pub fn node_dir(name: &str) -> Result<PathBuf> {
    server::temp_dir(&format!("relay-{name}"))
}

/// How to start one node.
pub struct Launch {
    /// Its name in logs and errors (`popline-a`, `nginx-rtmp-b`).
    pub name: String,
    /// The namespace it runs in.
    pub ns: String,
    /// The server binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its RTMP address, in `ns`.
    pub rtmp: SocketAddr,
    /// Its directory (config, logs), removed when it stops.
    pub dir: PathBuf,
    /// Its own log files, quoted in errors.
    pub logs: Vec<PathBuf>,
}

/// Starts a node under `taskset -c cpus` in its namespace and waits until its RTMP port accepts there.
pub fn spawn_in_ns(launch: Launch, cpus: &str) -> Result<Node> {
    let Launch {
        name,
        ns,
        program,
        args,
        rtmp,
        dir,
        logs,
    } = launch;
    let (name, ns) = (name.as_str(), ns.as_str());
    if !program.exists() {
        bail!("{} not found", program.display());
    }
    let mut full = vec![
        "netns".to_string(),
        "exec".into(),
        ns.into(),
        program.display().to_string(),
    ];
    full.extend(args);
    let mut process = ServerProcess::spawn(name, Path::new("ip"), &full, cpus, rtmp, dir, logs)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(why) = process.exited() {
            bail!("{name} exited before listening ({why}): {}", process.log_tails());
        }
        if accepts(ns, rtmp)? {
            return Ok(Node {
                process,
                ns: ns.to_string(),
                rtmp,
            });
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not listen on {rtmp} within {READY_TIMEOUT:?}: {}",
                process.log_tails()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Whether a TCP connection to `addr` from namespace `ns` succeeds.
pub fn accepts(ns: &str, addr: SocketAddr) -> Result<bool> {
    let probe = ns_thread::spawn_in(ns, "relay-probe", move || {
        Ok(TcpStream::connect_timeout(&addr, POLL).is_ok())
    })?;
    Ok(ns_thread::join(probe, "readiness probe")?.0)
}
