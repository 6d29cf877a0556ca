//! The lab's topology: two network namespaces, each holding one end of the emulated path as a TUN device whose
//! file descriptor stays with this process. Set up and torn down with `ip`; [`Lab`] deletes what it created when
//! dropped, so every exit path that unwinds cleans up. A process killed by a signal cannot; the next [`Lab::create`]
//! removes namespaces left by processes that no longer exist.

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Address of namespace A's end (link-local, never routed outside the two namespaces).
pub const ADDR_A: &str = "169.254.77.1";
/// Address of namespace B's end.
pub const ADDR_B: &str = "169.254.77.2";
/// Prefix length of the point-to-point subnet.
const PREFIX_LEN: u8 = 30;
/// Every namespace this module creates is named `popline-emu-PID-N-{a,b}`.
const NS_PREFIX: &str = "popline-emu-";

/// Labs created by this process, for unique names.
static LABS: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by the emulator; the namespaces are deleted when this is dropped.
#[derive(Debug)]
pub struct Lab {
    /// Name of namespace A (`ip netns exec` it).
    pub ns_a: String,
    /// Name of namespace B.
    pub ns_b: String,
    /// Namespaces created so far, deleted on drop.
    created: Vec<String>,
}

/// The two TUN ends of a [`Lab`], still open in this process.
pub struct Ends {
    /// The TUN device in namespace A.
    pub a: tun::Device,
    /// The TUN device in namespace B.
    pub b: tun::Device,
}

/// Runs `ip ARGS`, failing with its stderr if it fails.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Why the lab cannot be built here, if it cannot: not root, or no working `ip netns`.
pub fn unavailable() -> Option<String> {
    match Command::new("id").arg("-u").output() {
        Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == "0" => {}
        Ok(out) => {
            return Some(format!(
                "not root (uid {}): namespaces and TUN devices need root",
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        }
        Err(e) => return Some(format!("cannot run id: {e}")),
    }
    if let Err(e) = ip(&["netns", "list"]) {
        return Some(format!("`ip netns` is unavailable: {e:#}"));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".to_string());
    }
    None
}

impl Lab {
    /// Creates the namespaces and the two TUN ends, addressed [`ADDR_A`] and [`ADDR_B`] and up, with `mtu`.
    pub fn create(mtu: u16) -> Result<(Lab, Ends)> {
        remove_stale();
        let pid = std::process::id();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let mut lab = Lab {
            ns_a: format!("{NS_PREFIX}{pid}-{n}-a"),
            ns_b: format!("{NS_PREFIX}{pid}-{n}-b"),
            created: Vec::new(),
        };
        for ns in [lab.ns_a.clone(), lab.ns_b.clone()] {
            ip(&["netns", "add", &ns])?;
            lab.created.push(ns);
        }
        // Interface names have at most 15 bytes: `pe` + pid (<= 7 digits) + `x` + n + a/b.
        let a = open_tun(&format!("pe{pid}x{}a", n % 1000))?;
        let b = open_tun(&format!("pe{pid}x{}b", n % 1000))?;
        for (ns, dev, local) in [(&lab.ns_a, &a, ADDR_A), (&lab.ns_b, &b, ADDR_B)] {
            ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
            // Up; the /30's connected route reaches the peer.
            move_tun_into(ns, dev, &format!("{local}/{PREFIX_LEN}"), mtu)?;
        }
        Ok((lab, Ends { a, b }))
    }

    /// A command that runs `program` in namespace A (`ip netns exec`).
    pub fn command_in_a(&self, program: &str) -> Command {
        in_ns(&self.ns_a, program)
    }

    /// A command that runs `program` in namespace B.
    pub fn command_in_b(&self, program: &str) -> Command {
        in_ns(&self.ns_b, program)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("popline-bench emulate: could not delete namespace {ns}: {e:#}");
            }
        }
    }
}

/// Moves TUN device `dev` into namespace `ns`, gives it `cidr` and `mtu` (and a 1000-packet transmit queue),
/// and brings it up. It gets no IPv6 link-local address: no router solicitations or MLD reports mixed into the
/// measurements.
pub fn move_tun_into(ns: &str, dev: &tun::Device, cidr: &str, mtu: u16) -> Result<()> {
    let name = tun::AbstractDevice::tun_name(dev).context("reading the TUN device's name")?;
    ip(&["link", "set", "dev", &name, "netns", ns])?;
    ip(&["-n", ns, "link", "set", "dev", &name, "addrgenmode", "none"])?;
    let mtu = mtu.to_string();
    ip(&[
        "-n",
        ns,
        "link",
        "set",
        "dev",
        &name,
        "mtu",
        &mtu,
        "txqueuelen",
        "1000",
    ])?;
    ip(&["-n", ns, "addr", "add", cidr, "dev", &name])?;
    ip(&["-n", ns, "link", "set", "dev", &name, "up"])
}

fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Opens a new TUN device (layer 3, no packet information header) in this namespace; it disappears when the
/// returned device is dropped.
pub fn open_tun(name: &str) -> Result<tun::Device> {
    let mut config = tun::Configuration::default();
    config.tun_name(name).platform_config(|p| {
        // Configured with `ip` after the move into the namespace instead.
        p.ensure_root_privileges(false);
    });
    tun::create(&config).with_context(|| format!("creating TUN device {name}"))
}

/// Deletes namespaces named by this module for processes that no longer run (killed before they could clean up).
fn remove_stale() {
    remove_stale_namespaces(NS_PREFIX);
}

/// Deletes namespaces named `PREFIX<pid>-...` whose process `pid` no longer runs (the topology lab names its
/// namespaces the same way with a prefix of its own), after killing what still runs in them (`ip netns pids`:
/// a server or node the dead process had started).
pub fn remove_stale_namespaces(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_runs(pid) {
            kill_processes_in(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// SIGKILLs every process in namespace `ns` (as `ip netns pids` lists them).
fn kill_processes_in(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Whether process `pid` runs (exists and is not a zombie waiting to be reaped).
pub fn process_runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself hold `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
