//! What the `popline` binary checks and prints around its start: listen addresses as operators write them
//! (`localhost:1935`, a port out of range named as such), ports another process already holds, secrets kept
//! out of `--print-config`, one readable error line, and a log writer that a closed pipe cannot kill.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::config::Config;

/// What `--print-config` shows in place of a secret.
pub const REDACTED: &str = "(redacted)";

/// Parses a listen address: `IP:PORT`, `[IPv6]:PORT` or `HOSTNAME:PORT` (resolved now, IPv4 first, e.g.
/// `localhost:1935`). Port 0 picks a free port. The error says what is wrong (`port 99999 is out of range`).
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "listen address {text:?} has no port: want HOST:PORT, e.g. 127.0.0.1:1935 or [::]:1935"
        ));
    };
    let port: u16 = match port.parse::<u64>() {
        Ok(port) => u16::try_from(port).map_err(|_| {
            format!("listen address {text:?}: port {port} is out of range (0-65535; 0 picks a free port)")
        })?,
        Err(_) => {
            return Err(format!(
                "listen address {text:?}: port {port:?} is not a number (want HOST:PORT, e.g. 127.0.0.1:1935)"
            ))
        }
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!(
            "listen address {text:?} has no host: want e.g. 0.0.0.0:{port} (every interface) or 127.0.0.1:{port}"
        ));
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("listen address {text:?}: cannot resolve host {host:?}: {e}"))?
        .collect();
    resolved
        .iter()
        .find(|addr| addr.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| format!("listen address {text:?}: host {host:?} resolves to no address"))
}

/// The media services of the admin API from `config`: snapshots (decoding in `popline snapshot-worker`
/// children of this very binary, or in `ffmpeg`), the periodic snapshot job of the apps that ask for one,
/// and the recording folder.
pub fn admin_media(config: &crate::config::Config) -> std::io::Result<crate::admin::Media> {
    use crate::snapshot::decoders::{DecoderKind, PoolSettings};
    let snapshots = &config.snapshots;
    let service = if snapshots.enabled {
        let program = match snapshots.decoder {
            DecoderKind::Openh264 => std::env::current_exe()?,
            DecoderKind::Ffmpeg => snapshots.ffmpeg.clone(),
        };
        Some(std::sync::Arc::new(crate::snapshot::SnapshotService::new(
            PoolSettings {
                kind: snapshots.decoder,
                program,
                workers: snapshots.workers,
                queue: snapshots.queue,
                timeout: std::time::Duration::from_millis(snapshots.timeout_ms),
            },
            snapshots.quality,
            snapshots.cache_entries,
        )))
    } else {
        None
    };
    let intervals: std::collections::HashMap<String, u64> = config
        .apps
        .iter()
        .map(|(name, app)| (name.clone(), app.snapshot_interval_s))
        .collect();
    let default_interval = config.fanout.snapshot_interval_s;
    let any = default_interval > 0 || intervals.values().any(|&s| s > 0);
    let periodic = (service.is_some() && any).then(|| crate::snapshot::periodic::PeriodicSettings {
        dir: snapshots.path.clone(),
        intervals,
        default_interval,
        keep: snapshots.keep,
        width: (snapshots.width > 0).then_some(snapshots.width),
    });
    Ok(crate::admin::Media {
        snapshots: service,
        periodic,
        recordings: Some(config.recording.path.clone()),
        transcoder: None,
        ladders: std::sync::Arc::new(crate::transcode::ladder::Ladders::from_config(config)),
        egress: None,
    })
}

/// Starts the transcoder when `[transcode]` is on and some app has renditions: its workers play and publish
/// on the node's RTMP address `rtmp` (an unspecified address becomes loopback).
pub fn start_transcoder(
    config: &crate::config::Config,
    rtmp: std::net::SocketAddr,
    control: std::sync::Arc<dyn crate::control::NodeControl>,
) -> std::io::Result<Option<crate::transcode::Transcoder>> {
    use crate::transcode::ladder::{EncoderSettings, Ladders};
    use crate::transcode::plan::{AppLadder, PlanSettings, Planner};
    let ladders = Ladders::from_config(config);
    let any = !ladders.default.0.is_empty() || ladders.by_app.values().any(|(r, _)| !r.is_empty());
    if !config.transcode.enabled || !any {
        return Ok(None);
    }
    let app_ladder = |(renditions, auto): &(Vec<crate::transcode::ladder::Rendition>, bool)| AppLadder {
        renditions: renditions.clone(),
        auto: *auto,
    };
    let transcode = &config.transcode;
    let planner = Planner::new(
        PlanSettings {
            max_workers: transcode.max_workers,
            backoff_min: std::time::Duration::from_millis(transcode.restart_backoff_ms),
            backoff_max: std::time::Duration::from_millis(transcode.restart_backoff_max_ms),
            stable_after: std::time::Duration::from_secs(30),
        },
        ladders
            .by_app
            .iter()
            .map(|(app, l)| (app.clone(), app_ladder(l)))
            .collect(),
        Some(app_ladder(&ladders.default)),
    );
    let mut rtmp = rtmp;
    if rtmp.ip().is_unspecified() {
        rtmp.set_ip(match rtmp {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    crate::transcode::Transcoder::start(
        crate::transcode::supervisor::TranscoderSettings {
            ffmpeg: transcode.ffmpeg.clone(),
            rtmp,
            encoder: EncoderSettings {
                preset: transcode.preset.clone(),
                audio_kbps: transcode.audio_kbps,
            },
            publish_secret: config.auth.publish_secret.clone(),
        },
        planner,
        control,
    )
    .map(Some)
}

/// Where a relative state file (`bans.path`) lives: under `state_directory` (systemd's `$STATE_DIRECTORY`,
/// its first entry when it lists several) when given, else under the working directory; made absolute so
/// that the log and errors show the real place. An absolute path is kept.
pub fn resolve_state_path(path: &Path, state_directory: Option<&OsStr>) -> PathBuf {
    let joined = match state_directory
        .and_then(|dirs| dirs.to_str())
        .and_then(|dirs| dirs.split(':').find(|dir| !dir.is_empty()))
    {
        Some(dir) if path.is_relative() => Path::new(dir).join(path),
        _ => path.to_path_buf(),
    };
    std::path::absolute(&joined).unwrap_or(joined)
}

/// Serde's side of [`parse_listen_addr`], for the config's `listen` fields.
pub fn deserialize_listen_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_listen_addr(&text).map_err(serde::de::Error::custom)
}

/// `config` with its secrets (`http.token`, `auth.publish_secret`) replaced by [`REDACTED`], for printing.
pub fn redacted(config: &Config) -> Config {
    let mut config = config.clone();
    if config.admin.token.is_some() {
        config.admin.token = Some(REDACTED.to_string());
    }
    if config.auth.publish_secret.is_some() {
        config.auth.publish_secret = Some(REDACTED.to_string());
    }
    config
}

/// Fails when another process (often another popline) already listens on `addr`'s port.
///
/// The node's own cores share their RTMP port through SO_REUSEPORT, and so would any other process that sets
/// it as the same user: a second node would start and silently take part of the first one's connections. A
/// plain bind (SO_REUSEADDR only, as `std` does, no SO_REUSEPORT) fails on a port anyone listens on, so the
/// node tries one, closes it at once, and only then binds its own listeners. Port 0 (any free port) passes.
pub fn check_port_free(addr: SocketAddr, what: &str) -> Result<(), String> {
    if addr.port() == 0 {
        return Ok(());
    }
    match TcpListener::bind(addr) {
        Ok(probe) => {
            drop(probe);
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => Err(format!(
            "{what} port {port} is already in use ({addr}): another process listens there, most likely \
             another popline (or the previous one still shutting down). Stop it, or give this node another \
             port ({what} listen address in the config, or its command-line flag). Find the process with: \
             ss -ltnp 'sport = :{port}'",
            port = addr.port()
        )),
        Err(error) => Err(format!("{what} cannot listen on {addr}: {error}")),
    }
}

/// Listening TCP sockets of other processes that share `addr`'s port and overlap its address (the same
/// address, or either side a wildcard), read from `/proc/net/tcp` and `/proc/net/tcp6` and told apart from
/// this process's own sockets (`/proc/self/fd`) by inode. Run after the node bound its listeners, it closes
/// the window [`check_port_free`] leaves (two nodes starting at the same instant both see a free port, then
/// both join one SO_REUSEPORT group): each finds the other. Each entry is `ADDRESS (socket inode N)`.
pub fn foreign_listeners(addr: SocketAddr) -> io::Result<Vec<String>> {
    let mut ours = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")?.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            if let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            {
                ours.insert(inode);
            }
        }
    }
    let mut foreign = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for (listener, inode) in text.lines().skip(1).filter_map(parse_listen_line) {
            if listener.port() == addr.port() && overlaps(listener, addr) && !ours.contains(&inode) {
                foreign.push(format!("{listener} (socket inode {inode})"));
            }
        }
    }
    Ok(foreign)
}

/// A `/proc/net/tcp{,6}` line's local address and inode, when the socket listens (state `0A`).
fn parse_listen_line(line: &str) -> Option<(SocketAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(3) != Some(&"0A") {
        return None;
    }
    let (ip_hex, port_hex) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    // The address is the kernel's in-memory bytes: 32-bit words, each printed in host (little-endian) order.
    let mut bytes = Vec::with_capacity(16);
    for word in 0..ip_hex.len() / 8 {
        let word = u32::from_str_radix(ip_hex.get(word * 8..word * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?),
        _ => return None,
    };
    let inode = fields.get(9)?.parse().ok()?;
    Some((SocketAddr::new(ip, port), inode))
}

/// Whether two listeners on one port take the same connections: the same address, or either a wildcard
/// (IPv6 `::` takes IPv4 too unless the socket is IPv6-only, which is not told here: assumed to).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    };
    let (a, b) = (canonical(a.ip()), canonical(b.ip()));
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// One line for an error and its causes, each cause written once: a cause whose text the line already holds
/// (an error that prints its source in its own message) is left out.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(text.trim()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text.trim());
    }
    line
}

/// Writes `text` to stdout, ignoring errors (a closed pipe must not end the node, as `println!` would).
pub fn print_quietly(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The log's writer: stderr, every error ignored (a reader that went away, `popline 2>&1 | head`, must
/// never stop the node; `tracing-subscriber` would otherwise report the failed write with `eprintln!`, which
/// panics on a closed pipe).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QuietStderr {
    type Writer = QuietStderr;

    fn make_writer(&'a self) -> Self::Writer {
        QuietStderr
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn listen_addresses_as_operators_write_them() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:1935").unwrap().to_string(),
            "127.0.0.1:1935"
        );
        assert_eq!(parse_listen_addr("[::1]:0").unwrap().to_string(), "[::1]:0");
        assert_eq!(parse_listen_addr("localhost:1935").unwrap().port(), 1935);
        assert!(parse_listen_addr("localhost:1935").unwrap().ip().is_loopback());
        let error = parse_listen_addr("127.0.0.1:99999").unwrap_err();
        assert!(error.contains("port 99999 is out of range"), "{error}");
        assert!(parse_listen_addr("127.0.0.1").unwrap_err().contains("no port"));
        assert!(parse_listen_addr(":1935").unwrap_err().contains("no host"));
        assert!(parse_listen_addr("127.0.0.1:rtmp")
            .unwrap_err()
            .contains("not a number"));
    }

    #[test]
    fn relative_state_paths_go_under_the_state_directory() {
        let file = Path::new("popline-bans.json");
        assert_eq!(
            resolve_state_path(file, Some(OsStr::new("/var/lib/popline:/other"))),
            PathBuf::from("/var/lib/popline/popline-bans.json")
        );
        assert_eq!(
            resolve_state_path(Path::new("/etc/b.json"), Some(OsStr::new("/var/lib/popline"))),
            PathBuf::from("/etc/b.json")
        );
        let here = resolve_state_path(file, None);
        assert!(
            here.is_absolute() && here.ends_with("popline-bans.json"),
            "{here:?}"
        );
    }

    #[test]
    fn proc_net_tcp_lines_and_overlaps() {
        let v4 = "   0: 0100007F:0787 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0";
        assert_eq!(
            parse_listen_line(v4),
            Some(("127.0.0.1:1927".parse().unwrap(), 4242))
        );
        let v6 = "   1: 00000000000000000000000001000000:078F 00000000000000000000000000000000:0000 0A \
                  00000000:00000000 00:00000000 00000000     0        0 77 1 0";
        assert_eq!(parse_listen_line(v6), Some(("[::1]:1935".parse().unwrap(), 77)));
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(parse_listen_line(&established), None);
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(at("0.0.0.0:1"), at("127.0.0.1:1")));
        assert!(overlaps(at("[::ffff:127.0.0.1]:1"), at("127.0.0.1:1")));
        assert!(overlaps(at("[::]:1"), at("10.0.0.1:1")));
        assert!(!overlaps(at("10.0.0.1:1"), at("127.0.0.1:1")));
    }

    #[test]
    fn our_own_listeners_are_not_foreign() {
        let ours = engine::Listener::bind("127.0.0.1:0".parse().unwrap(), engine::ListenerConfig::default())
            .unwrap();
        let addr = ours.local_addr().unwrap();
        let _second = engine::Listener::bind(addr, engine::ListenerConfig::default()).unwrap();
        assert_eq!(foreign_listeners(addr).unwrap(), Vec::<String>::new());
    }

    /// Another process that joins our SO_REUSEPORT group (here python, as a second node would) is found.
    #[test]
    fn another_process_in_our_reuseport_group_is_found() {
        let ours = engine::Listener::bind("127.0.0.1:0".parse().unwrap(), engine::ListenerConfig::default())
            .unwrap();
        let addr = ours.local_addr().unwrap();
        let script = format!(
            "import socket, sys, time\n\
             s = socket.socket()\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n\
             s.bind(('127.0.0.1', {}))\n\
             s.listen()\n\
             print('ready', flush=True)\n\
             time.sleep(10)\n",
            addr.port()
        );
        let Ok(mut child) = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("skipped: no python3");
            return;
        };
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        );
        let foreign = foreign_listeners(addr).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(line.trim(), "ready");
        assert_eq!(foreign.len(), 1, "{foreign:?}");
        assert!(foreign[0].starts_with(&addr.to_string()), "{foreign:?}");
    }

    #[test]
    fn error_line_says_each_cause_once() {
        let inner = std::io::Error::other("disk on fire");
        let error = anyhow::Error::new(inner)
            .context("cannot write x: disk on fire")
            .context("start");
        assert_eq!(error_line(&error), "start: cannot write x: disk on fire");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config = Config::default();
        config.admin.token = Some("hunter2".to_string());
        config.auth.publish_secret = Some("s3cret".to_string());
        let text = toml::to_string(&redacted(&config)).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("s3cret"), "{text}");
        assert_eq!(text.matches(REDACTED).count(), 2);
        assert!(redacted(&Config::default()).admin.token.is_none());
    }

    #[test]
    fn a_port_someone_listens_on_is_refused() {
        let taken = engine::Listener::bind("127.0.0.1:0".parse().unwrap(), engine::ListenerConfig::default())
            .unwrap();
        let addr = taken.local_addr().unwrap();
        let error = check_port_free(addr, "RTMP").unwrap_err();
        assert!(error.contains(&format!("port {}", addr.port())), "{error}");
        drop(taken);
        check_port_free(addr, "RTMP").unwrap();
    }
}
