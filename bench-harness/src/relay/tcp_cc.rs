//! The congestion controller of the nginx-rtmp relay's TCP connection.
//!
//! nginx cannot set `TCP_CONGESTION` on its sockets, so a variant sets the default of the lab's namespaces
//! (`net.ipv4.tcp_congestion_control` is per network namespace). Which controllers a namespace may use is
//! the machine-wide `net.ipv4.tcp_allowed_congestion_control` (here `reno bbr`): [`CcGuard`] adds the one the
//! variant needs for the run and puts the list back when dropped. [`observed`] reads what the connection
//! actually ran with from `ss -ti`, for the report.

use anyhow::{bail, Context, Result};
use std::process::Command;

/// The machine-wide list of controllers a namespace may choose.
const ALLOWED: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";
/// The controllers this kernel has.
const AVAILABLE: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";

/// Restores `tcp_allowed_congestion_control` when dropped.
#[derive(Debug)]
pub struct CcGuard {
    before: String,
}

impl CcGuard {
    /// Allows `cc` (if the kernel has it) for the guard's lifetime.
    pub fn allow(cc: &str) -> Result<CcGuard> {
        let available = std::fs::read_to_string(AVAILABLE).with_context(|| format!("reading {AVAILABLE}"))?;
        if !available.split_whitespace().any(|c| c == cc) {
            bail!("this kernel has no TCP {cc} (available: {})", available.trim());
        }
        let before = std::fs::read_to_string(ALLOWED).with_context(|| format!("reading {ALLOWED}"))?;
        let before = before.trim().to_string();
        if !before.split_whitespace().any(|c| c == cc) {
            std::fs::write(ALLOWED, format!("{before} {cc}"))
                .with_context(|| format!("writing {ALLOWED}"))?;
        }
        Ok(CcGuard { before })
    }
}

impl Drop for CcGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(ALLOWED, &self.before) {
            eprintln!(
                "popline-bench relay: could not restore {ALLOWED} to {:?}: {e}",
                self.before
            );
        }
    }
}

/// Sets namespace `ns`'s default congestion controller to `cc` (for sockets created after).
pub fn set_default(ns: &str, cc: &str) -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-q", "-w"])
        .arg(format!("net.ipv4.tcp_congestion_control={cc}"))
        .output()
        .context("running sysctl in the namespace")?;
    if !out.status.success() {
        bail!(
            "setting TCP {cc} in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The controller of the first TCP connection to `peer` (`IP:PORT`) that `ss -ti` lists in namespace `ns`.
pub fn observed(ns: &str, peer: &str) -> Result<Option<String>> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-tin", "dst", peer])
        .output()
        .context("running ss in the namespace")?;
    if !out.status.success() {
        bail!("ss failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(parse_ss(&String::from_utf8_lossy(&out.stdout)))
}

/// The controller named on the first connection's info line of `ss -tin` output.
fn parse_ss(text: &str) -> Option<String> {
    const KNOWN: [&str; 8] = ["cubic", "bbr", "bbr2", "bbr3", "reno", "dctcp", "htcp", "vegas"];
    text.lines()
        .filter(|l| l.starts_with(char::is_whitespace))
        .find_map(|l| {
            l.split_whitespace()
                .find(|t| KNOWN.contains(t))
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controller_comes_from_ss_s_info_line() {
        let text = "State Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n\
ESTAB 0      0      169.254.77.1:40312 169.254.77.2:1935\n\
\t cubic wscale:7,7 rto:304 rtt:101.2/0.5 mss:1448 cwnd:10 bytes_sent:123\n";
        assert_eq!(parse_ss(text).as_deref(), Some("cubic"));
        let bbr = text.replace("cubic", "bbr");
        assert_eq!(parse_ss(&bbr).as_deref(), Some("bbr"));
        assert_eq!(parse_ss("State Recv-Q\n"), None);
    }
}
