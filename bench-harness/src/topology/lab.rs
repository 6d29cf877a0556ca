//! A running topology: the network ([`super::net::Net`]) and a `popline` node in each namespace, started with
//! `ip netns exec` (through [`crate::relay::nodes`]), ready once every node listens and every link of the mesh
//! is up. Dropping it stops the nodes, then the emulators, then deletes the namespaces.

use super::api;
use super::config::{self, NodeSettings, Peer};
use super::net::Net;
use super::spec::Spec;
use crate::fanout::cpus;
use crate::relay::nodes::{self, Launch, Node};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Node directories are `popline-bench-fanout-PID-relay-` + this + the namespace (see [`nodes::node_dir`]).
const DIR_TAG: &str = "topo-";

/// How long the mesh's links have to come up.
const LINKS_TIMEOUT: Duration = Duration::from_secs(15);

/// One node of the topology.
pub struct TopoNode {
    /// Its id (`a`, `b`, ...).
    pub id: String,
    /// Its namespace.
    pub ns: String,
    /// Its RTMP address, on the namespace's loopback.
    pub rtmp: SocketAddr,
    /// Its admin API address, on the namespace's loopback.
    pub http: SocketAddr,
    /// Its process id (the `popline` process itself).
    pub pid: u32,
    /// The process; `None` once stopped.
    node: Option<Node>,
}

impl TopoNode {
    /// `rtmp://HOST:PORT` (append `/APP/STREAM`).
    pub fn rtmp_url(&self) -> String {
        format!("rtmp://{}", self.rtmp)
    }

    /// `http://HOST:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }
}

/// The nodes and the network of a topology.
pub struct Topology {
    /// The nodes, in the spec's order (dropped first).
    pub nodes: Vec<TopoNode>,
    /// The admin API's token on every node.
    pub token: String,
    /// The spec it was built from.
    pub spec: Spec,
    /// The network (dropped after the nodes).
    net: Net,
}

impl Topology {
    /// Builds the network, writes each node's config and key, starts the nodes and waits until every link
    /// of the mesh is up. On failure everything started so far is stopped and removed.
    pub fn start(spec: &Spec, binary: &Path, settings: &NodeSettings) -> Result<Topology> {
        if !binary.exists() {
            bail!(
                "{} not found (cargo build --release -p relay, or --popline-bin)",
                binary.display()
            );
        }
        remove_stale_dirs();
        let net = Net::create(spec)?;
        let mut topo = Topology {
            nodes: Vec::new(),
            token: settings.token.clone(),
            spec: spec.clone(),
            net,
        };
        let mut dirs = Vec::new();
        match topo.start_nodes(binary, settings, &mut dirs) {
            Ok(()) => Ok(topo),
            Err(e) => {
                // The nodes first (each removes its own directory), then what no node owned yet.
                drop(topo);
                for d in dirs {
                    let _ = std::fs::remove_dir_all(d);
                }
                Err(e)
            }
        }
    }

    /// Writes each node's key and config into a directory of its own (listed in `dirs` as it is made),
    /// starts the nodes and waits for the mesh's links.
    fn start_nodes(
        &mut self,
        binary: &Path,
        settings: &NodeSettings,
        dirs: &mut Vec<std::path::PathBuf>,
    ) -> Result<()> {
        let spec = self.spec.clone();
        let cpus = cpus::format_cpu_list(&cpus::allowed_cpus()?);
        let mut keys = Vec::new();
        for id in &spec.nodes {
            // The namespace's name is unique to this topology.
            let ns = self.net.namespace(id).context("a node without a namespace")?;
            let dir = nodes::node_dir(&format!("{DIR_TAG}{ns}"))?;
            dirs.push(dir.clone());
            keys.push(config::keygen(binary, &dir)?);
        }
        for (i, (id, dir)) in spec.nodes.iter().zip(dirs.iter().cloned()).enumerate() {
            let peers = spec
                .neighbours(id)
                .into_iter()
                .map(|(peer, k)| {
                    let index = spec.nodes.iter().position(|n| *n == peer).unwrap_or(0);
                    let (_, addr) = spec.addresses(k, id).context("a link without its node")?;
                    Ok(Peer {
                        id: peer,
                        addr,
                        public_key: keys.get(index).cloned().unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let (rtmp, http) = config::loopback_addrs(i)?;
            let conf = dir.join("popline.toml");
            std::fs::write(&conf, config::config(&dir, id, rtmp, http, &peers, settings))
                .with_context(|| format!("writing {}", conf.display()))?;
            let ns = self
                .net
                .namespace(id)
                .context("a node without a namespace")?
                .to_string();
            let node = nodes::spawn_in_ns(
                Launch {
                    name: format!("popline-{id}"),
                    ns: ns.clone(),
                    program: binary.to_path_buf(),
                    args: vec!["--config".into(), conf.display().to_string()],
                    rtmp,
                    dir,
                    logs: Vec::new(),
                },
                &cpus,
            )?;
            self.nodes.push(TopoNode {
                id: id.clone(),
                ns,
                rtmp,
                http,
                pid: node.process.pid(),
                node: Some(node),
            });
        }
        self.wait_links_up()
    }

    /// Waits until each node reports all its links up.
    fn wait_links_up(&mut self) -> Result<()> {
        let deadline = Instant::now() + LINKS_TIMEOUT;
        for i in 0..self.nodes.len() {
            let want = self.spec.neighbours(&self.nodes[i].id).len();
            loop {
                let (_, body) = self.api(&self.nodes[i].id, "GET", "/api/v1/links", None)?;
                if api::links_up(&body) >= want {
                    break;
                }
                self.check_alive()?;
                if Instant::now() > deadline {
                    bail!("node {}'s mesh links did not come up: {body}", self.nodes[i].id);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Node `id`.
    pub fn node(&self, id: &str) -> Result<&TopoNode> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    /// A request to node `id`'s admin API (see [`api::request`]).
    pub fn api(&self, id: &str, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let n = self.node(id)?;
        api::request(&n.ns, n.http, &self.token, method, path, body)
    }

    /// Fails, with its logs, if a node that was not stopped on purpose has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            if let Some(node) = n.node.as_mut() {
                if let Some(why) = node.process.exited() {
                    bail!(
                        "{} exited ({why}): {}",
                        node.process.name,
                        node.process.log_tails()
                    );
                }
            }
        }
        Ok(())
    }

    /// Kills node `id` with SIGKILL, as a crash would (its directory goes when the topology stops).
    #[cfg(test)]
    pub fn kill9(&mut self, id: &str) -> Result<()> {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))?;
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let pid = i32::try_from(n.pid).context("pid")?;
        kill(Pid::from_raw(pid), Signal::SIGKILL).with_context(|| format!("killing node {id}"))?;
        Ok(())
    }

    /// The last lines of node `id`'s logs.
    #[cfg(test)]
    pub fn log(&self, id: &str) -> String {
        self.node(id)
            .ok()
            .and_then(|n| n.node.as_ref())
            .map(|node| node.process.log_tails())
            .unwrap_or_default()
    }

    /// Stops every node (last first; logs kept in `keep_logs/popline-ID/` if given), then the network.
    pub fn stop(mut self, keep_logs: Option<&Path>) {
        for n in self.nodes.iter_mut().rev() {
            if let Some(node) = n.node.take() {
                let name = node.process.name.clone();
                if let Err(e) = node.process.stop(keep_logs) {
                    eprintln!("[{name}] stopping: {e:#}");
                }
            }
        }
    }

    /// Each link's profile name, in the spec's link order.
    pub fn profile_names(&self) -> Vec<String> {
        self.net.profiles.iter().map(|p| p.name.clone()).collect()
    }

    /// The largest round-trip propagation delay of any link.
    pub fn slowest_rtt(&self) -> Duration {
        self.net
            .profiles
            .iter()
            .map(|p| p.a_to_b.delay + p.b_to_a.delay)
            .max()
            .unwrap_or_default()
    }
}

/// Removes node directories left by topology runs whose process no longer runs (killed before they could
/// clean up).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("popline-bench-fanout-")
            .filter(|rest| rest.contains(&format!("-relay-{DIR_TAG}")))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !crate::emulate::process_runs(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
