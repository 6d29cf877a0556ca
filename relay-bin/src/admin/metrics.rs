//! `GET /metrics`: the node's counters in the Prometheus text exposition format, version 0.0.4, encoded by
//! `prometheus-client` (`encoding::prometheus_text`).
//!
//! Every name starts with `popline_`; counters end in `_total` (the encoder appends it: counter families are
//! named here without it); every family has `# HELP` and `# TYPE` lines before its samples. Per-stream series
//! carry a `stream="app/name"` label, escaped per the format by the encoder.
//!
//! Nothing is kept between scrapes: each scrape builds a [`Registry`] holding one [`Collector`] that owns a
//! snapshot of the node's stats, streams and bans and encodes it straight into the page (no metric objects,
//! no atomics, no locks).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::bans::SaveStatus;
use crate::control::{NodeStats, StreamInfo};
use crate::node::mesh_port::LinkInfo;
use crate::snapshot::service::SnapshotStats;

/// The `Content-Type` of the exposition (the Prometheus text format, version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Renders the exposition of `stats`, `streams`, the number of active bans, whether the ban file is up to
/// date, and this process's CPU time and memory ([`ProcessStats::read`]).
///
/// Fails only if the encoder does (writing into a `String` does not), which the caller answers with a 500.
pub fn render(
    stats: NodeStats,
    streams: Vec<StreamInfo>,
    links: Vec<LinkInfo>,
    bans_active: usize,
    bans_saved: &SaveStatus,
    snapshots: Option<SnapshotStats>,
    transcode: Option<crate::transcode::TranscodeStats>,
) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(4096 + streams.len() * 512);
    let mut registry = Registry::default();
    let mut snapshot = Snapshot::new(stats, streams, bans_active);
    snapshot.links = links;
    snapshot.bans_unsaved = u64::from(bans_saved.unsaved_since_unix_ms.is_some());
    snapshot.bans_save_failures = bans_saved.failures;
    snapshot.process = ProcessStats::read();
    registry.register_collector(Box::new(snapshot));
    if let Some(stats) = snapshots {
        registry.register_collector(Box::new(SnapshotMetrics(stats)));
    }
    if let Some(stats) = transcode {
        registry.register_collector(Box::new(TranscodeMetrics(stats)));
    }
    prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The snapshot service's counters.
#[derive(Debug)]
struct SnapshotMetrics(SnapshotStats);

impl Collector for SnapshotMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let counters: [(&str, &str, u64); 7] = [
            (
                "popline_snapshots_served",
                "Snapshots answered (live and recorded).",
                s.served,
            ),
            (
                "popline_snapshots_cache_hits",
                "Snapshots answered from the per-keyframe cache.",
                s.cache_hits,
            ),
            (
                "popline_snapshots_errors",
                "Snapshot requests that ended in an error.",
                s.errors,
            ),
            (
                "popline_snapshot_decodes",
                "Keyframes decoded for snapshots.",
                s.decodes,
            ),
            (
                "popline_snapshot_decode_failures",
                "Keyframes that did not decode.",
                s.decode_failures,
            ),
            (
                "popline_snapshot_busy",
                "Snapshot requests refused or timed out: every decoder busy.",
                s.busy,
            ),
            (
                "popline_snapshot_worker_restarts",
                "Snapshot worker processes started again after a failure.",
                s.worker_restarts,
            ),
        ];
        unlabelled_counters(&mut encoder, &counters)?;
        let mut seconds = encoder.encode_descriptor(
            "popline_snapshot_decode_seconds",
            "Time spent decoding keyframes for snapshots, summed.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(s.decode_us as f64 / 1e6).encode(seconds.encode_family(&NO_LABELS)?)?;
        family(
            &mut encoder,
            "popline_snapshots_cached",
            MetricType::Gauge,
            "Snapshot pictures in the cache.",
            [(NO_LABELS, s.cached)],
        )
    }
}

/// The transcoder's workers.
#[derive(Debug)]
struct TranscodeMetrics(crate::transcode::TranscodeStats);

impl Collector for TranscodeMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        family(
            &mut encoder,
            "popline_transcode_workers",
            MetricType::Gauge,
            "Transcode workers (ffmpeg processes) running now.",
            [(NO_LABELS, s.workers)],
        )?;
        unlabelled_counters(
            &mut encoder,
            &[
                (
                    "popline_transcode_restarts",
                    "Transcode workers started again after they ended.",
                    s.restarts,
                ),
                (
                    "popline_transcode_refused",
                    "Automatic transcodes refused: every worker taken.",
                    s.refused,
                ),
            ],
        )?;
        let mut cpu = encoder.encode_descriptor(
            "popline_transcode_cpu_seconds",
            "CPU time of every transcode worker, user and system.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(s.cpu_s).encode(cpu.encode_family(&NO_LABELS)?)?;
        let lags: Vec<([(&str, String); 1], u64)> = s
            .transcodes
            .iter()
            .filter_map(|t| Some(([("stream", t.stream.to_string())], t.lag_ms?.max(0) as u64)))
            .collect();
        family(
            &mut encoder,
            "popline_transcode_lag_milliseconds",
            MetricType::Gauge,
            "A transcode's lag: its source's newest frame less its slowest rendition's.",
            lags,
        )
    }
}

/// What one scrape shows, encoded family by family when the registry is encoded.
#[derive(Debug)]
struct Snapshot {
    stats: NodeStats,
    /// Sorted by name, each stream once.
    streams: Vec<StreamInfo>,
    /// Streams the node listed (`popline_streams`), counted before duplicates were removed.
    streams_listed: u64,
    bans_active: u64,
    /// 1 while the ban file lags behind the bans in force.
    bans_unsaved: u64,
    /// Failed writes of the ban file since start.
    bans_save_failures: u64,
    /// This process's CPU time and memory, when `/proc` could be read.
    process: Option<ProcessStats>,
    /// The PoP mesh's links (none when the mesh is off).
    links: Vec<LinkInfo>,
}

/// This process's resources, from `/proc/self` (Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time of every thread, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors (sockets included).
    pub open_fds: u64,
}

/// Clock ticks per second of `/proc/self/stat`'s `utime`/`stime` (`USER_HZ`, 100 on every Linux ABI;
/// `sysconf(_SC_CLK_TCK)` would need `unsafe`).
const USER_HZ: f64 = 100.0;

impl ProcessStats {
    /// Reads `/proc/self/stat`, `/proc/self/status` and `/proc/self/fd`; `None` where there is no `/proc`.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let mut stats = ProcessStats::parse_stat(&stat)?;
        stats.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
        // VmRSS in kB, exact whatever the page size (`rss` in `stat` counts pages).
        if let Some(kib) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        {
            stats.resident_bytes = kib.saturating_mul(1024);
        }
        Some(stats)
    }

    /// The CPU time and memory of process `pid` (another process, e.g. a worker this one started) while it
    /// lives; its open descriptors are not counted.
    pub fn of_pid(pid: u32) -> Option<ProcessStats> {
        ProcessStats::parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// The fields of a `/proc/PID/stat` line (after the command name, which may hold spaces and parentheses).
    fn parse_stat(stat: &str) -> Option<ProcessStats> {
        let (_, rest) = stat.rsplit_once(')')?;
        // Fields from 3 (state) on; utime is field 14, stime 15, num_threads 20, vsize 23, rss 24 (pages).
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        const PAGE_BYTES: u64 = 4096;
        Some(ProcessStats {
            cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
            threads: field(20)?,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)?.saturating_mul(PAGE_BYTES),
            open_fds: 0,
        })
    }
}

impl Snapshot {
    fn new(stats: NodeStats, mut streams: Vec<StreamInfo>, bans_active: usize) -> Snapshot {
        let streams_listed = streams.len() as u64;
        // Sorted for a stable page, and a stream listed twice is shown once (a duplicate series would make the
        // whole page invalid).
        streams.sort_by(|a, b| a.stream.cmp(&b.stream));
        streams.dedup_by(|a, b| a.stream == b.stream);
        Snapshot {
            stats,
            streams,
            streams_listed,
            bans_active: bans_active as u64,
            bans_unsaved: 0,
            bans_save_failures: 0,
            process: None,
            links: Vec::new(),
        }
    }
}

/// No labels: a sample with this label set has no `{...}`.
const NO_LABELS: [(&str, &str); 0] = [];

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let stats = &self.stats;
        family(
            &mut encoder,
            "popline_info",
            MetricType::Gauge,
            "Facts about this node, in labels; the value is always 1.",
            [(
                [("backend", stats.backend), ("version", env!("CARGO_PKG_VERSION"))],
                1,
            )],
        )?;
        let gauges: [(&str, &str, u64); 10] = [
            ("popline_cores", "Data-plane cores.", stats.cores as u64),
            ("popline_recordings", "Streams being recorded now.", stats.recordings),
            (
                "popline_uptime_seconds",
                "Seconds since the node started.",
                stats.uptime_s,
            ),
            (
                "popline_connections",
                "Client connections open now.",
                stats.connections,
            ),
            ("popline_publishers", "Publishers now.", stats.publishers),
            ("popline_viewers", "Viewers now, on all cores.", stats.viewers),
            (
                "popline_http_viewers",
                "HTTP (HTTP-FLV) viewers now, on all cores; part of popline_viewers.",
                stats.http_viewers,
            ),
            ("popline_streams", "Live streams now.", self.streams_listed),
            (
                "popline_bans_active",
                "Stream bans in force now.",
                self.bans_active,
            ),
            (
                "popline_bans_unsaved",
                "1 while the ban file cannot be written and lags behind the bans in force (they apply; retried).",
                self.bans_unsaved,
            ),
        ];
        for (name, help, value) in gauges {
            family(&mut encoder, name, MetricType::Gauge, help, [(NO_LABELS, value)])?;
        }
        // Counter families are named without `_total`: the encoder appends it.
        let counters: [(&str, &str, u64); 18] = [
            (
                "popline_connections_accepted",
                "Client connections accepted.",
                stats.connections_accepted,
            ),
            (
                "popline_connections_rejected",
                "Client connections refused or closed for bad input (protocol errors, hostile sizes, timeouts).",
                stats.connections_rejected,
            ),
            (
                "popline_requests_refused",
                "Publish or play requests refused (ban, auth, duplicate publisher, bad name).",
                stats.requests_refused,
            ),
            (
                "popline_clients_kicked",
                "Clients kicked by the API or by a ban.",
                stats.clients_kicked,
            ),
            (
                "popline_received_bytes",
                "Bytes read from clients.",
                stats.bytes_in,
            ),
            (
                "popline_sent_bytes",
                "Bytes written to clients.",
                stats.bytes_out,
            ),
            (
                "popline_frames_in",
                "Frames received from publishers.",
                stats.frames_in,
            ),
            (
                "popline_frames_out",
                "Frames queued to viewers.",
                stats.frames_out,
            ),
            (
                "popline_frames_dropped",
                "Frames dropped by viewer drop policies.",
                stats.frames_dropped,
            ),
            (
                "popline_viewers_overflowed",
                "Viewers disconnected because their queue hit its bound (drop policy none).",
                stats.viewers_overflowed,
            ),
            (
                "popline_inbox_full",
                "Cross-core messages dropped because a core's inbox was full.",
                stats.inbox_full,
            ),
            (
                "popline_mesh_failovers",
                "Streams from the PoP mesh that resumed after their source failed.",
                stats.mesh_failovers,
            ),
            (
                "popline_mesh_failover_gap_milliseconds",
                "The mesh failovers' gaps (source lost to its next frame), summed.",
                stats.mesh_failover_gap_ms,
            ),
            (
                "popline_bans_save_failures",
                "Writes of the ban file that failed.",
                self.bans_save_failures,
            ),
            (
                "popline_recording_files",
                "Recording files finished (closed and synced).",
                stats.recording_files,
            ),
            (
                "popline_recording_bytes",
                "Bytes written to recordings.",
                stats.recording_bytes,
            ),
            (
                "popline_recording_errors",
                "Recordings stopped by a write error (disk full, folder gone); streaming went on.",
                stats.recording_errors,
            ),
            (
                "popline_recording_frames_lost",
                "Frames lost to the recorder's full queue (video resumed at a keyframe).",
                stats.recording_frames_lost,
            ),
        ];
        unlabelled_counters(&mut encoder, &counters)?;
        family(
            &mut encoder,
            "popline_limit_hits",
            MetricType::Counter,
            "Times each hardening limit was hit (connections refused or closed, queued headers replaced).",
            stats
                .limit_hits
                .pairs()
                .into_iter()
                .map(|(limit, value)| ([("limit", limit)], value)),
        )?;

        if let Some(process) = &self.process {
            let mut cpu = encoder.encode_descriptor(
                "popline_process_cpu_seconds",
                "User and system CPU time of the process, in seconds.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(process.cpu_seconds).encode(cpu.encode_family(&NO_LABELS)?)?;
            let gauges: [(&str, &str, u64); 4] = [
                (
                    "popline_process_resident_memory_bytes",
                    "Resident memory of the process, in bytes.",
                    process.resident_bytes,
                ),
                (
                    "popline_process_virtual_memory_bytes",
                    "Virtual memory of the process, in bytes.",
                    process.virtual_bytes,
                ),
                (
                    "popline_process_threads",
                    "Threads of the process.",
                    process.threads,
                ),
                (
                    "popline_process_open_fds",
                    "Open file descriptors of the process (sockets included).",
                    process.open_fds,
                ),
            ];
            for (name, help, value) in gauges {
                family(&mut encoder, name, MetricType::Gauge, help, [(NO_LABELS, value)])?;
            }
        }

        self.encode_links(&mut encoder)?;
        type PerStream = fn(&StreamInfo) -> u64;
        let per_stream: [(&str, MetricType, &str, PerStream); 9] = [
            (
                "popline_stream_hops",
                MetricType::Gauge,
                "Mesh links the stream crossed to reach this node (0: published here).",
                |s| u64::from(s.hops),
            ),
            (
                "popline_stream_viewers",
                MetricType::Gauge,
                "Viewers of the stream now, on all cores.",
                |s| s.viewers,
            ),
            (
                "popline_stream_hls_sessions",
                MetricType::Gauge,
                "HLS viewer sessions of the stream seen within egress.hls_idle_ms, on all cores.",
                |s| s.hls_sessions,
            ),
            (
                "popline_stream_publishing",
                MetricType::Gauge,
                "1 while the stream has a publisher, else 0.",
                |s| u64::from(s.publisher.is_some()),
            ),
            (
                "popline_stream_gop_cache_frames",
                MetricType::Gauge,
                "Frames in the stream's GOP cache now.",
                |s| s.gop_cache_frames,
            ),
            (
                "popline_stream_frames_in",
                MetricType::Counter,
                "Frames received from the stream's publisher.",
                |s| s.frames_in,
            ),
            (
                "popline_stream_bitrate_kbps",
                MetricType::Gauge,
                "Bitrate received from the stream's publisher over its current GOP, in kbit/s (0 until measured).",
                |s| s.media.bitrate_kbps.unwrap_or(0),
            ),
            (
                "popline_stream_received_bytes",
                MetricType::Counter,
                "Payload bytes received from the stream's publisher.",
                |s| s.bytes_in,
            ),
            (
                "popline_stream_sent_bytes",
                MetricType::Counter,
                "Bytes sent to the stream's viewers on every core, those that left included.",
                |s| s.bytes_out,
            ),
        ];
        for (name, kind, help, value) in per_stream {
            let samples = self
                .streams
                .iter()
                .map(|stream| ([("stream", stream.stream.as_str())], value(stream)));
            family(&mut encoder, name, kind, help, samples)?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// The mesh's links, one series per peer (`peer="id"`); dropped frames also by `reason`. A link's
    /// counters start again from zero when it reconnects (`popline_mesh_link_ups` counts the times).
    fn encode_links(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        type PerLink = fn(&LinkInfo) -> u64;
        let per_link: [(&str, MetricType, &str, PerLink); 11] = [
            (
                "popline_mesh_link_up",
                MetricType::Gauge,
                "1 while the link to the peer is up.",
                |l| u64::from(l.state == "up"),
            ),
            (
                "popline_mesh_link_ups",
                MetricType::Counter,
                "Times the link came up.",
                |l| l.ups,
            ),
            (
                "popline_mesh_link_rtt_microseconds",
                MetricType::Gauge,
                "The link's smoothed round-trip time, in microseconds.",
                |l| (l.rtt_ms * 1000.0) as u64,
            ),
            (
                "popline_mesh_link_bandwidth_bps",
                MetricType::Gauge,
                "The link sender's estimate of the path's bandwidth, in bit/s.",
                |l| l.bandwidth_bps,
            ),
            (
                "popline_mesh_link_payload_bytes",
                MetricType::Counter,
                "Frame bytes sent on the link for the first time (goodput).",
                |l| l.payload_bytes,
            ),
            (
                "popline_mesh_link_repair_bytes",
                MetricType::Counter,
                "Frame bytes sent again on the link after a loss.",
                |l| l.repair_bytes,
            ),
            (
                "popline_mesh_link_packets_sent",
                MetricType::Counter,
                "Datagrams sent on the link.",
                |l| l.packets_sent,
            ),
            (
                "popline_mesh_link_packets_lost",
                MetricType::Counter,
                "Datagrams the link declared lost.",
                |l| l.packets_lost,
            ),
            (
                "popline_mesh_link_deadline_misses",
                MetricType::Counter,
                "Frames whose end-to-end deadline passed before the peer acknowledged them.",
                |l| l.deadline_misses,
            ),
            (
                "popline_mesh_link_streams_out",
                MetricType::Gauge,
                "Streams sent to the peer now.",
                |l| l.streams_out,
            ),
            (
                "popline_mesh_link_streams_in",
                MetricType::Gauge,
                "Streams arriving from the peer now.",
                |l| l.streams_in,
            ),
        ];
        for (name, kind, help, value) in per_link {
            let samples = self.links.iter().map(|l| ([("peer", l.peer.as_str())], value(l)));
            family(encoder, name, kind, help, samples)?;
        }
        let dropped = self.links.iter().flat_map(|l| {
            l.dropped.iter().map(|d| {
                (
                    [("peer", l.peer.as_str()), ("kind", d.kind), ("reason", d.reason)],
                    d.frames,
                )
            })
        });
        family(
            encoder,
            "popline_mesh_link_frames_dropped",
            MetricType::Counter,
            "Frames the link's sender dropped, by kind and reason: past their deadline, after a lost reference, or \
             over its queue bound (series appear once non-zero).",
            dropped,
        )
    }
}

/// Encodes one family (`kind` is a counter or a gauge): its `# HELP` and `# TYPE` lines, then one sample per
/// label set.
/// One family per `(name, help, value)`: an unlabelled counter each.
fn unlabelled_counters(encoder: &mut DescriptorEncoder, counters: &[(&str, &str, u64)]) -> fmt::Result {
    for &(name, help, value) in counters {
        family(encoder, name, MetricType::Counter, help, [(NO_LABELS, value)])?;
    }
    Ok(())
}

fn family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    kind: MetricType,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let sample = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value).encode(sample)?,
            _ => ConstGauge::new(value).encode(sample)?,
        }
    }
    Ok(())
}
/// One parsed sample: name, labels, value.
#[cfg(test)]
pub(crate) type Sample = (String, Vec<(String, String)>, f64);

/// Checks an exposition the way a scraper would, for tests: every non-comment line is `name value` or
/// `name{label="value",...} value`, with a `# TYPE` line for its family before it.
#[cfg(test)]
pub(crate) fn parse_for_test(text: &str) -> Result<Vec<Sample>, String> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    let valid_name = |name: &str| {
        !name.is_empty()
            && name.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some("counter" | "gauge")) if valid_name(name) => {
                    if !typed.insert(name.to_string()) {
                        return Err(format!("family {name} typed twice"));
                    }
                }
                (Some("HELP"), Some(name), Some(_)) if valid_name(name) => {}
                _ => return Err(format!("bad comment line {line:?}")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value in {line:?}"))?;
        let value: f64 = value.parse().map_err(|_| format!("bad value in {line:?}"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or(format!("unclosed labels in {line:?}"))?;
                (name, parse_labels(body).ok_or(format!("bad labels in {line:?}"))?)
            }
        };
        if !valid_name(name) || !name.starts_with("popline_") {
            return Err(format!("bad name in {line:?}"));
        }
        if !typed.contains(name) {
            return Err(format!("sample {name} before its # TYPE"));
        }
        samples.push((name.to_string(), labels, value));
    }
    Ok(samples)
}

#[cfg(test)]
fn parse_labels(mut body: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !body.is_empty() {
        let (name, rest) = body.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    _ => return None,
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        body = &rest[end + 1..];
        body = body.strip_prefix(',').unwrap_or(body);
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ClientId;
    use crate::stream_key::StreamKey;

    fn stream(name: &str, viewers: u64) -> StreamInfo {
        StreamInfo {
            stream: StreamKey::new("live", name).unwrap(),
            owner_core: 0,
            publisher: Some(ClientId(7)),
            origin: None,
            hops: 0,
            home: None,
            viewers,
            hls_sessions: 0,
            bytes_out: 42_000,
            frames_in: 100,
            bytes_in: 5_000,
            gop_cache_frames: 30,
            publishing_ms: 1_000,
            media: Default::default(),
        }
    }

    #[test]
    fn exposition_parses_and_escapes_labels() {
        let stats = NodeStats {
            backend: "epoll",
            cores: 4,
            connections: 3,
            frames_in: 200,
            ..NodeStats::default()
        };
        let weird = r#"we"ird\name"#;
        let text = render(
            stats,
            vec![stream("b", 2), stream(weird, 1), stream("b", 9)],
            vec![LinkInfo {
                peer: "mnl-1".into(),
                state: "up",
                rtt_ms: 101.5,
                packets_lost: 4,
                dropped_deadline: 3,
                dropped: vec![crate::node::mesh_port::DroppedFrames {
                    kind: "disposable",
                    reason: "deadline",
                    frames: 3,
                }],
                ..LinkInfo::default()
            }],
            1,
            &SaveStatus::default(),
            Some(SnapshotStats {
                served: 5,
                decode_us: 1_500_000,
                ..SnapshotStats::default()
            }),
            None,
        )
        .unwrap();
        let samples = parse_for_test(&text).unwrap();
        let find = |name: &str, label: Option<&str>| {
            samples
                .iter()
                .filter(|(n, labels, _)| n == name && labels.iter().map(|(_, v)| v.as_str()).next() == label)
                .map(|(_, _, v)| *v)
                .collect::<Vec<f64>>()
        };
        assert_eq!(find("popline_connections", None), vec![3.0]);
        assert_eq!(find("popline_snapshots_served_total", None), vec![5.0]);
        assert_eq!(find("popline_snapshot_decode_seconds_total", None), vec![1.5]);
        assert_eq!(find("popline_frames_in_total", None), vec![200.0]);
        assert_eq!(find("popline_bans_active", None), vec![1.0]);
        assert_eq!(find("popline_bans_unsaved", None), vec![0.0]);
        assert!(find("popline_process_cpu_seconds_total", None)[0] >= 0.0);
        assert!(find("popline_process_resident_memory_bytes", None)[0] > 1e6);
        assert!(find("popline_process_open_fds", None)[0] >= 3.0);
        assert_eq!(find("popline_stream_viewers", Some("live/b")), vec![2.0]);
        assert_eq!(find("popline_mesh_link_up", Some("mnl-1")), vec![1.0]);
        assert_eq!(
            find("popline_mesh_link_rtt_microseconds", Some("mnl-1")),
            vec![101_500.0]
        );
        assert_eq!(
            find("popline_mesh_link_packets_lost_total", Some("mnl-1")),
            vec![4.0]
        );
        assert!(
            text.contains("popline_mesh_link_frames_dropped_total{peer=\"mnl-1\",kind=\"disposable\",reason=\"deadline\"} 3\n")
        );
        let weird_key = format!("live/{weird}");
        assert_eq!(find("popline_stream_viewers", Some(&weird_key)), vec![1.0]);
        assert!(
            text.contains(r#"popline_stream_viewers{stream="live/we\"ird\\name"} 1"#),
            "{text}"
        );
        assert!(text.contains("# TYPE popline_stream_frames_in_total counter\n"));
        assert!(text.contains(&format!(
            "popline_info{{backend=\"epoll\",version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        for (name, _, _) in &samples {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has no # HELP");
            let typed = text.contains(&format!("# TYPE {name} counter"));
            assert_eq!(typed, name.ends_with("_total"), "{name}");
        }
        // prometheus-client adds a full stop to the help of metrics it registers; this page's help is as written.
        assert!(
            text.contains("# HELP popline_cores Data-plane cores.\n"),
            "{text}"
        );
    }

    #[test]
    fn proc_stat_parses_with_odd_command_names() {
        let line =
            "42 (pop line) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 123456789 2048 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stats = ProcessStats::parse_stat(line).unwrap();
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!((stats.threads, stats.virtual_bytes), (7, 123_456_789));
        assert_eq!(stats.resident_bytes, 2048 * 4096);
        assert!(ProcessStats::parse_stat("42 (x").is_none());
    }

    #[test]
    fn escaping_follows_the_format() {
        /// One family with a help text and a label value that both need escaping.
        #[derive(Debug)]
        struct Odd;
        impl Collector for Odd {
            fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
                family(
                    &mut encoder,
                    "popline_odd",
                    MetricType::Gauge,
                    "x\\y\nz",
                    [([("a", "a\"b\\c\nd")], 1)],
                )
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Odd));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).unwrap();
        assert_eq!(
            text,
            "# HELP popline_odd x\\\\y\\nz\n# TYPE popline_odd gauge\npopline_odd{a=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
        assert_eq!(
            parse_for_test(&text).unwrap(),
            vec![(
                "popline_odd".to_string(),
                vec![("a".to_string(), "a\"b\\c\nd".to_string())],
                1.0
            )]
        );
        assert_eq!(
            parse_labels(r#"a="x\"y",b="\\""#).unwrap(),
            vec![
                ("a".to_string(), "x\"y".to_string()),
                ("b".to_string(), "\\".to_string())
            ]
        );
    }
}
