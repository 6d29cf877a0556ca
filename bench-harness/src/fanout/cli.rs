//! The flags of `popline-bench fanout`.

use super::source::SourceSpec;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

/// A server the ramp can run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// The popline node (`--popline-bin`).
    Popline,
    /// nginx with nginx-rtmp (`--nginx-bin`, `--nginx-module`).
    Nginx,
}

impl ServerKind {
    /// The server's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Popline => "popline",
            ServerKind::Nginx => "nginx-rtmp",
        }
    }
}

/// Parses `--servers`: `popline`, `nginx` (or `nginx-rtmp`), comma-separated, run in that order.
pub fn parse_servers(s: &str) -> Result<Vec<ServerKind>> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = match name {
            "popline" => ServerKind::Popline,
            "nginx" | "nginx-rtmp" => ServerKind::Nginx,
            other => bail!("unknown server {other:?} in --servers (expected popline, nginx)"),
        };
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    if out.is_empty() {
        bail!("--servers names no server");
    }
    Ok(out)
}

/// Arguments of `popline-bench fanout`: an RTMP fan-out ramp against each server in turn, one publisher and
/// up to `--viewers` players, reported side by side.
///
/// The servers run under `taskset -c <--server-cpus>`; this process pins itself (players, publisher and all)
/// to the remaining CPUs, so server and load never share a CPU and the server's CPU use is measured against
/// exactly the CPUs it owns. On a 2-CPU machine: server on CPU 1, load generator on CPU 0.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Servers to test, comma-separated, in this order: popline, nginx.
    #[arg(long, default_value = "popline,nginx")]
    pub servers: String,
    /// The ramp.
    #[command(flatten)]
    pub ramp: RampArgs,
    /// The servers' binaries and the popline node's settings.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print a JSON array (one object per server) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The ramp's flags, shared by `popline-bench fanout` and `popline-bench egress`.
#[derive(Debug, Args)]
pub struct RampArgs {
    /// Upper bound of the ramp, in viewers. The ramp stops earlier at the first failing step: lag p99 over
    /// --max-lag-ms, more than --max-failing-percent of viewers failing, or the server at 95% of its CPUs.
    #[arg(long, default_value_t = 2000)]
    pub viewers: usize,
    /// Viewers added per step.
    #[arg(long, default_value_t = 100)]
    pub step: usize,
    /// Seconds each step is held and measured (after its new viewers joined).
    #[arg(long, default_value_t = 5.0)]
    pub step_seconds: f64,
    /// Stream bitrate in bits/s for the synthetic source (`600000`, `600kbit`, `1.5mbit`).
    #[arg(long, default_value = "600000")]
    pub bitrate: String,
    /// What the publisher sends: `synthetic` (H.264 25 fps, keyframe every 2 s, AAC) or the path of an FLV
    /// file (looped, timestamps continued).
    #[arg(long, default_value = "synthetic")]
    pub source: SourceSpec,
    /// CPUs the server is pinned to (`taskset -c` list: `1`, `1-3`). This process (players, publisher) pins
    /// itself to all the other CPUs, so server and load never share a CPU and the server's CPU is measured
    /// against exactly the CPUs it owns; on a 2-CPU machine: server on CPU 1, load generator on CPU 0.
    #[arg(long, default_value = "1")]
    pub server_cpus: String,
    /// Lag (receive time - publisher send time) above which a viewer falls behind real time, in ms.
    #[arg(long, default_value_t = 1000.0)]
    pub max_lag_ms: f64,
    /// Percent of viewers that may fail (disconnected, no frame, stalled, behind, dropping) in a passing step.
    #[arg(long, default_value_t = 1.0)]
    pub max_failing_percent: f64,
    /// Percent of the frames of a step a viewer may miss (servers drop for slow viewers) before it fails.
    #[arg(long, default_value_t = 1.0)]
    pub max_missed_percent: f64,
    /// Seconds new viewers have (after joining, which is spread over one GOP) to get their first keyframe
    /// before the step's hold starts anyway.
    #[arg(long, default_value_t = 10.0)]
    pub join_timeout_seconds: f64,
    /// Do not pin the load generator to the CPUs the server does not use.
    #[arg(long)]
    pub no_pin: bool,
}

/// The servers' binaries and the popline node's settings, shared by `popline-bench fanout` and
/// `popline-bench egress`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The popline binary [default: `popline` beside this executable, i.e. target/release/popline].
    #[arg(long)]
    pub popline_bin: Option<PathBuf>,
    /// The nginx binary.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    pub nginx_bin: PathBuf,
    /// The nginx-rtmp dynamic module.
    #[arg(long, default_value = "/usr/lib/nginx/modules/ngx_rtmp_module.so")]
    pub nginx_module: PathBuf,
    /// The popline node's `rtmp.write_coalesce_ms`: viewers' frames leave in one write per interval (0 = each
    /// frame at once, the setting to compare latency with nginx-rtmp's at).
    #[arg(long, default_value_t = 100)]
    pub popline_write_coalesce_ms: u64,
    /// The popline node's `engine.backend`: auto, uring or epoll.
    #[arg(long, default_value = "auto", value_parser = ["auto", "uring", "epoll"])]
    pub popline_backend: String,
    /// Keep each server's config and logs in `DIR/<server>/`.
    #[arg(long, value_name = "DIR")]
    pub keep_logs: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_in_order() {
        assert_eq!(
            parse_servers("popline,nginx").unwrap(),
            vec![ServerKind::Popline, ServerKind::Nginx]
        );
        assert_eq!(
            parse_servers("nginx-rtmp, nginx").unwrap(),
            vec![ServerKind::Nginx]
        );
        assert!(parse_servers("srs").is_err());
        assert!(parse_servers(",").is_err());
    }
}
