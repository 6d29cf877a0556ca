//! A server under test as a child process: started under `taskset -c <CPUs>` in its own temporary directory
//! (config, pid file, logs), waited for until its RTMP port (and HTTP port, if any) accepts, and stopped at
//! the end (SIGTERM, then SIGKILL of the whole tree after a grace period), its logs kept on request and its
//! directory removed.

use super::proc_stats;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server has to start listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(50);
/// Lines of a log quoted in an error.
const LOG_TAIL_LINES: usize = 8;

/// A fresh, empty temporary directory for one server of this run.
pub fn temp_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("popline-bench-fanout-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A loopback port that was free a moment ago (bound and released; the server binds it right after).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("local_addr")?.port())
}

/// The last lines of a log file, for an error message (empty if there is none).
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join(" | ")
}

/// A running server.
pub struct ServerProcess {
    /// What it is (`nginx-rtmp`, `popline`).
    pub name: String,
    /// Where it listens for RTMP.
    pub addr: SocketAddr,
    /// Where it serves HTTP (HTTP-FLV, HLS), if it does: the starter sets it, and [`ServerProcess::wait_ready`]
    /// waits for it too.
    pub http: Option<SocketAddr>,
    child: Option<Child>,
    dir: PathBuf,
    logs: Vec<PathBuf>,
}

impl ServerProcess {
    /// Starts `program args` under `taskset -c cpus` with its output in `dir/<name>.stdout.log` and
    /// `.stderr.log`; `logs` are the server's own log files, also quoted and kept.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        cpus: &str,
        addr: SocketAddr,
        dir: PathBuf,
        mut logs: Vec<PathBuf>,
    ) -> Result<Self> {
        let stdout = dir.join(format!("{name}.stdout.log"));
        let stderr = dir.join(format!("{name}.stderr.log"));
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cpus)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).context("creating the stdout log")?)
            .stderr(File::create(&stderr).context("creating the stderr log")?)
            .spawn()
            .with_context(|| {
                format!(
                    "starting `taskset -c {cpus} {}` (is taskset installed?)",
                    program.display()
                )
            })?;
        logs.push(stdout);
        logs.push(stderr);
        Ok(Self {
            name: name.into(),
            addr,
            http: None,
            child: Some(child),
            dir,
            logs,
        })
    }

    /// The server's pid (taskset execs the server, so it is the child's pid).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits until the RTMP port (and the HTTP port, if any) accepts a connection; fails early, with its logs,
    /// if the server exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(why) = self.exited() {
                bail!(
                    "{} exited before listening ({why}): {}",
                    self.name,
                    self.log_tails()
                );
            }
            let listening = |addr: &SocketAddr| TcpStream::connect_timeout(addr, READY_POLL).is_ok();
            if listening(&self.addr) && self.http.as_ref().is_none_or(listening) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let http = self.http.map_or(String::new(), |h| format!(" and {h}"));
                bail!(
                    "{} did not listen on {}{http} within {timeout:?}: {}",
                    self.name,
                    self.addr,
                    self.log_tails()
                );
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// If the server has exited, how.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(format!("cannot tell: {e}")),
            None => Some("stopped".into()),
        }
    }

    /// The last lines of every log, for an error message.
    pub fn log_tails(&self) -> String {
        let tails: Vec<String> = self
            .logs
            .iter()
            .map(|p| (p, log_tail(p)))
            .filter(|(_, t)| !t.is_empty())
            .map(|(p, t)| {
                format!(
                    "[{}] {t}",
                    p.file_name().and_then(|n| n.to_str()).unwrap_or("log")
                )
            })
            .collect();
        if tails.is_empty() {
            "no log output".into()
        } else {
            tails.join(" ")
        }
    }

    /// Stops the server (SIGTERM; SIGKILL to the whole tree after a grace period), copies its logs and
    /// config into `keep_logs/<name>/` if asked, and removes its directory.
    pub fn stop(mut self, keep_logs: Option<&Path>) -> Result<()> {
        self.terminate();
        if let Some(keep) = keep_logs {
            let into = keep.join(&self.name);
            std::fs::create_dir_all(&into).with_context(|| format!("creating {}", into.display()))?;
            for entry in
                std::fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))?
            {
                let path = entry?.path();
                if path.is_file() {
                    if let Some(file) = path.file_name() {
                        std::fs::copy(&path, into.join(file))
                            .with_context(|| format!("keeping {}", path.display()))?;
                    }
                }
            }
        }
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }

    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        // Remember the workers: once the master is gone they are no longer its children.
        let tree = tree_pids(pid);
        if let Ok(raw) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(READY_POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
        for p in tree {
            if let Ok(raw) = i32::try_from(p) {
                if p != pid && Path::new(&format!("/proc/{p}")).exists() {
                    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
                }
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Pids of `root` and its descendants now.
fn tree_pids(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Ok((ppid, _)) = proc_stats::parse_stat(&text) {
                    parents.push((pid, ppid));
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    tree
}
