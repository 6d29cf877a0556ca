//! `GET /metrics`: the node's counters in the Prometheus text exposition format, version 0.0.4.
//!
//! Every name starts with `popline_`; counters end in `_total`; every family has `# HELP` and `# TYPE` lines
//! before its samples. Per-stream series carry a `stream="app/name"` label, escaped per the format.

use std::fmt::Write as _;

use crate::control::{NodeStats, StreamInfo};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a metric family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Renders the exposition of `stats`, `streams` and the number of active bans.
pub fn render(stats: &NodeStats, streams: &[StreamInfo], bans_active: usize) -> String {
    let mut out = String::with_capacity(4096 + streams.len() * 512);
    let mut exposition = Exposition { out: &mut out };

    exposition.family(
        "popline_info",
        Kind::Gauge,
        "Facts about this node, in labels; the value is always 1.",
    );
    exposition.sample(
        "popline_info",
        &[("backend", stats.backend), ("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
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
        ("popline_streams", "Live streams now.", streams.len() as u64),
        (
            "popline_bans_active",
            "Stream bans in force now.",
            bans_active as u64,
        ),
    ];
    for (name, help, value) in gauges {
        exposition.family(name, Kind::Gauge, help);
        exposition.sample(name, &[], value);
    }
    let counters: [(&str, &str, u64); 11] = [
        (
            "popline_connections_accepted_total",
            "Client connections accepted.",
            stats.connections_accepted,
        ),
        (
            "popline_connections_rejected_total",
            "Client connections refused or closed for bad input (protocol errors, hostile sizes, timeouts).",
            stats.connections_rejected,
        ),
        (
            "popline_requests_refused_total",
            "Publish or play requests refused (ban, auth, duplicate publisher, bad name).",
            stats.requests_refused,
        ),
        (
            "popline_clients_kicked_total",
            "Clients kicked by the API or by a ban.",
            stats.clients_kicked,
        ),
        (
            "popline_received_bytes_total",
            "Bytes read from clients.",
            stats.bytes_in,
        ),
        (
            "popline_sent_bytes_total",
            "Bytes written to clients.",
            stats.bytes_out,
        ),
        (
            "popline_frames_in_total",
            "Frames received from publishers.",
            stats.frames_in,
        ),
        (
            "popline_frames_out_total",
            "Frames queued to viewers.",
            stats.frames_out,
        ),
        (
            "popline_frames_dropped_total",
            "Frames dropped by viewer drop policies.",
            stats.frames_dropped,
        ),
        (
            "popline_viewers_overflowed_total",
            "Viewers disconnected because their queue hit its bound (drop policy none).",
            stats.viewers_overflowed,
        ),
        (
            "popline_inbox_full_total",
            "Cross-core messages dropped because a core's inbox was full.",
            stats.inbox_full,
        ),
    ];
    for (name, help, value) in counters {
        exposition.family(name, Kind::Counter, help);
        exposition.sample(name, &[], value);
    }

    // One series per stream: sorted for a stable page, and a stream listed twice is shown once (a duplicate
    // series would make the whole page invalid).
    let mut streams: Vec<&StreamInfo> = streams.iter().collect();
    streams.sort_by(|a, b| a.stream.cmp(&b.stream));
    streams.dedup_by(|a, b| a.stream == b.stream);
    type PerStream = fn(&StreamInfo) -> u64;
    let per_stream: [(&str, Kind, &str, PerStream); 5] = [
        (
            "popline_stream_viewers",
            Kind::Gauge,
            "Viewers of the stream now, on all cores.",
            |s| s.viewers,
        ),
        (
            "popline_stream_publishing",
            Kind::Gauge,
            "1 while the stream has a publisher, else 0.",
            |s| u64::from(s.publisher.is_some()),
        ),
        (
            "popline_stream_gop_cache_frames",
            Kind::Gauge,
            "Frames in the stream's GOP cache now.",
            |s| s.gop_cache_frames,
        ),
        (
            "popline_stream_frames_in_total",
            Kind::Counter,
            "Frames received from the stream's publisher.",
            |s| s.frames_in,
        ),
        (
            "popline_stream_received_bytes_total",
            Kind::Counter,
            "Payload bytes received from the stream's publisher.",
            |s| s.bytes_in,
        ),
    ];
    for (name, kind, help, value) in per_stream {
        exposition.family(name, kind, help);
        for stream in &streams {
            exposition.sample(name, &[("stream", stream.stream.as_str())], value(stream));
        }
    }
    out
}

struct Exposition<'a> {
    out: &'a mut String,
}

impl Exposition<'_> {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (index, (label, text)) in labels.iter().enumerate() {
                if index > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label_value(text));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A label value as the format wants it: `\` -> `\\`, `"` -> `\"`, newline -> `\n`.
fn escape_label_value(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A `# HELP` text as the format wants it: `\` -> `\\`, newline -> `\n`.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
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
        let text = render(&stats, &[stream("b", 2), stream(weird, 1), stream("b", 9)], 1);
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
        for (name, _, _) in &samples {
            let typed = text.contains(&format!("# TYPE {name} counter"));
            assert_eq!(typed, name.ends_with("_total"), "{name}");
        }
    }

    #[test]
    fn escaping_follows_the_format() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
        assert_eq!(
            parse_labels(r#"a="x\"y",b="\\""#).unwrap(),
            vec![
                ("a".to_string(), "x\"y".to_string()),
                ("b".to_string(), "\\".to_string())
            ]
        );
    }
}
