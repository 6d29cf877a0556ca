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

use crate::control::{NodeStats, StreamInfo};

/// The `Content-Type` of the exposition (the Prometheus text format, version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Renders the exposition of `stats`, `streams` and the number of active bans.
///
/// Fails only if the encoder does (writing into a `String` does not), which the caller answers with a 500.
pub fn render(stats: NodeStats, streams: Vec<StreamInfo>, bans_active: usize) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(4096 + streams.len() * 512);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot::new(stats, streams, bans_active)));
    prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
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
        let gauges: [(&str, &str, u64); 7] = [
            ("popline_cores", "Data-plane cores.", stats.cores as u64),
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
            ("popline_streams", "Live streams now.", self.streams_listed),
            (
                "popline_bans_active",
                "Stream bans in force now.",
                self.bans_active,
            ),
        ];
        for (name, help, value) in gauges {
            family(&mut encoder, name, MetricType::Gauge, help, [(NO_LABELS, value)])?;
        }
        // Counter families are named without `_total`: the encoder appends it.
        let counters: [(&str, &str, u64); 11] = [
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
        ];
        for (name, help, value) in counters {
            family(
                &mut encoder,
                name,
                MetricType::Counter,
                help,
                [(NO_LABELS, value)],
            )?;
        }
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

        type PerStream = fn(&StreamInfo) -> u64;
        let per_stream: [(&str, MetricType, &str, PerStream); 5] = [
            (
                "popline_stream_viewers",
                MetricType::Gauge,
                "Viewers of the stream now, on all cores.",
                |s| s.viewers,
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
                "popline_stream_received_bytes",
                MetricType::Counter,
                "Payload bytes received from the stream's publisher.",
                |s| s.bytes_in,
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

/// Encodes one family (`kind` is a counter or a gauge): its `# HELP` and `# TYPE` lines, then one sample per
/// label set.
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
            viewers,
            frames_in: 100,
            bytes_in: 5_000,
            gop_cache_frames: 30,
            publishing_ms: 1_000,
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
        let text = render(stats, vec![stream("b", 2), stream(weird, 1), stream("b", 9)], 1).unwrap();
        let samples = parse_for_test(&text).unwrap();
        let find = |name: &str, label: Option<&str>| {
            samples
                .iter()
                .filter(|(n, labels, _)| n == name && labels.iter().map(|(_, v)| v.as_str()).next() == label)
                .map(|(_, _, v)| *v)
                .collect::<Vec<f64>>()
        };
        assert_eq!(find("popline_connections", None), vec![3.0]);
        assert_eq!(find("popline_frames_in_total", None), vec![200.0]);
        assert_eq!(find("popline_bans_active", None), vec![1.0]);
        assert_eq!(find("popline_stream_viewers", Some("live/b")), vec![2.0]);
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
