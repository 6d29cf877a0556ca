//! Impairment profiles: the small `key=value` files in `netem-scripts/profiles/`, read into one
//! [`LinkConfig`] per direction.
//!
//! The same files drive `netem-scripts/apply-profile.sh` (with `tc netem`), so a key means the same thing there.
//! Format: one `key=value` a line, `#` starts a comment. A key applies to both directions unless it is
//! prefixed with `a2b.` (from namespace A to B only) or `b2a.` (B to A only); a prefixed key overrides the
//! plain one for its direction.
//!
//! | key | meaning | example |
//! |---|---|---|
//! | `delay` | one-way propagation delay | `50ms` |
//! | `jitter` | extra delay, uniform in `[0, jitter]` | `2ms` |
//! | `reorder` | whether jitter may reorder packets | `no` |
//! | `loss` | random loss: a probability or Gilbert-Elliott `GE:p,r[,loss_good,loss_bad]` | `1%`, `GE:0.5%,25%` |
//! | `duplicate` | probability a packet is delivered twice | `0.1%` |
//! | `rate` | bottleneck rate; absent means unlimited | `100mbit` |
//! | `queue` | bottleneck queue (tail drop): bytes or a multiple of the path's BDP; default `1bdp` | `1bdp`, `150000` |
//! | `outage` | windows that drop everything, `DURATION@START`, comma-separated | `500ms@10s` |
//! | `rate_change` | bottleneck rate changes, `RATE@TIME`, comma-separated | `5mbit@10s,100mbit@15s` |
//! | `trace` | trace-driven rate: a mahimahi trace (one line per 1500-byte delivery opportunity, its time in ms; the trace repeats), relative to the profile's folder | `../traces/cellular.trace` |
//! | `trace_seconds` | how much of the repeated trace to lay out (default 300 s) | `120s` |
//! | `seed` | seed of the random choices (global) | `1` |
//! | `limit` | packets held per direction, queue and delay line together (global) | `50000` |
//! | `mtu` | MTU of the emulated interfaces (global) | `1500` |
//! | `description` | free text, ignored | |

use crate::units::{parse_duration, parse_rate_bps};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use transport::sim::{LinkConfig, LossModel, Outage, RateChange};

/// Keys that take a value per direction.
const LINK_KEYS: &[&str] = &[
    "delay",
    "jitter",
    "reorder",
    "loss",
    "duplicate",
    "rate",
    "queue",
    "outage",
    "rate_change",
    "trace",
    "trace_seconds",
];

/// Keys that apply to the whole emulated path.
const GLOBAL_KEYS: &[&str] = &["seed", "limit", "mtu", "description"];

/// Default packets held per direction (bottleneck queue and delay line together): bounds memory at about
/// 75 MB per direction with 1500-byte packets, and holds a 1 Gbit/s x 300 ms path.
pub const DEFAULT_LIMIT_PACKETS: usize = 50_000;

/// Smallest bottleneck queue a `Nbdp` queue is rounded up to, in bytes (ten full-size packets).
const MIN_QUEUE_BYTES: u64 = 15_000;

/// An impairment profile: the two directions of an emulated path and the emulator's own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The profile's name: its file name without `.profile`, or what the caller gave.
    pub name: String,
    /// Packets from namespace A to namespace B.
    pub a_to_b: LinkConfig,
    /// Packets from namespace B to namespace A.
    pub b_to_a: LinkConfig,
    /// Seed of the A-to-B link; the B-to-A link uses `seed + 1`.
    pub seed: u64,
    /// Most packets held per direction; a packet arriving when this many are held is dropped.
    pub limit_packets: usize,
    /// MTU of the two emulated interfaces.
    pub mtu: u16,
}

impl Profile {
    /// Reads a profile file; its name is the file name without the `.profile` extension.
    pub fn load(path: &Path) -> Result<Profile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading profile {}", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "profile".to_string());
        Profile::parse_in(&name, &text, path.parent())
            .with_context(|| format!("in profile {}", path.display()))
    }

    /// Parses a profile's text (see the module docs for the keys); trace files are found from the current
    /// directory.
    pub fn parse(name: &str, text: &str) -> Result<Profile> {
        Profile::parse_in(name, text, None)
    }

    /// Parses a profile's text, with trace files relative to `dir`.
    pub fn parse_in(name: &str, text: &str, dir: Option<&Path>) -> Result<Profile> {
        let mut common: BTreeMap<String, String> = BTreeMap::new();
        let mut a2b: BTreeMap<String, String> = BTreeMap::new();
        let mut b2a: BTreeMap<String, String> = BTreeMap::new();
        for (number, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| anyhow!("line {}: expected key=value, got {line:?}", number + 1))?;
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim().to_string());
            let (map, bare) = if let Some(k) = key.strip_prefix("a2b.") {
                (&mut a2b, k.to_string())
            } else if let Some(k) = key.strip_prefix("b2a.") {
                (&mut b2a, k.to_string())
            } else {
                (&mut common, key.clone())
            };
            let known =
                LINK_KEYS.contains(&bare.as_str()) || (GLOBAL_KEYS.contains(&bare.as_str()) && bare == key);
            if !known {
                bail!("line {}: unknown key {key:?}", number + 1);
            }
            if map.insert(bare, value).is_some() {
                bail!("line {}: {key:?} given twice", number + 1);
            }
        }

        let merged = |dir: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            let mut m: BTreeMap<String, String> = common
                .iter()
                .filter(|(k, _)| LINK_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            m.extend(dir.iter().map(|(k, v)| (k.clone(), v.clone())));
            m
        };
        let (ab, ba) = (merged(&a2b), merged(&b2a));
        let rtt = delay_of(&ab)?.saturating_add(delay_of(&ba)?);
        let a_to_b = link_config(&ab, rtt, dir).context("direction a2b")?;
        let b_to_a = link_config(&ba, rtt, dir).context("direction b2a")?;

        let seed = match common.get("seed") {
            Some(v) => v.parse().map_err(|_| anyhow!("bad seed {v:?}"))?,
            None => 1,
        };
        let limit_packets = match common.get("limit") {
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => bail!("bad limit {v:?}: a positive number of packets"),
            },
            None => DEFAULT_LIMIT_PACKETS,
        };
        let mtu = match common.get("mtu") {
            Some(v) => match v.parse::<u16>() {
                Ok(n) if n >= 576 => n,
                _ => bail!("bad mtu {v:?}: 576 to 65535"),
            },
            None => 1500,
        };
        Ok(Profile {
            name: name.to_string(),
            a_to_b,
            b_to_a,
            seed,
            limit_packets,
            mtu,
        })
    }
}

fn delay_of(m: &BTreeMap<String, String>) -> Result<Duration> {
    m.get("delay")
        .map(|v| parse_duration(v))
        .transpose()
        .map(|d| d.unwrap_or(Duration::ZERO))
}

/// One direction's [`LinkConfig`] from its merged keys; `rtt` sizes a queue given in BDPs.
fn link_config(m: &BTreeMap<String, String>, rtt: Duration, dir: Option<&Path>) -> Result<LinkConfig> {
    let mut c = LinkConfig {
        delay: delay_of(m)?,
        ..LinkConfig::default()
    };
    if let Some(v) = m.get("jitter") {
        c.jitter = parse_duration(v)?;
    }
    if let Some(v) = m.get("reorder") {
        c.reorder = parse_bool(v)?;
    }
    if let Some(v) = m.get("loss") {
        c.loss = LossModel::parse(v).map_err(|e| anyhow!("loss: {e}"))?;
    }
    if let Some(v) = m.get("duplicate") {
        c.duplicate = parse_probability(v)?;
    }
    if let Some(v) = m.get("rate") {
        c.rate_bps = Some(parse_rate_bps(v)?);
    }
    if let Some(v) = m.get("outage") {
        c.outages = parse_list(v, |d, at| {
            Ok(Outage {
                start: parse_duration(at)?,
                duration: parse_duration(d)?,
            })
        })?;
    }
    if let Some(v) = m.get("rate_change") {
        c.rate_changes = parse_list(v, |r, at| {
            Ok(RateChange {
                at: parse_duration(at)?,
                rate_bps: if r.trim() == "0" { 0 } else { parse_rate_bps(r)? },
            })
        })?;
    }
    if let Some(v) = m.get("trace") {
        if m.contains_key("rate") || m.contains_key("rate_change") {
            bail!("trace sets the rate: give it without rate or rate_change");
        }
        let path = dir.map_or_else(|| Path::new(v).to_path_buf(), |d| d.join(v));
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("reading trace {}", path.display()))?;
        let horizon = match m.get("trace_seconds") {
            Some(v) => parse_duration(v)?,
            None => Duration::from_secs(300),
        };
        let trace = super::trace::Trace::parse(&text).with_context(|| format!("trace {}", path.display()))?;
        let (first, changes) = trace.rate_schedule(horizon);
        // The queue's BDP is that of the trace's mean rate.
        c.rate_bps = Some(trace.mean_rate_bps());
        let queue = m.get("queue").map(String::as_str).unwrap_or("1bdp");
        c.queue_bytes = parse_queue_bytes(queue, &c, rtt)?;
        c.rate_bps = Some(first);
        c.rate_changes = changes;
        return Ok(c);
    }
    let queue = m.get("queue").map(String::as_str).unwrap_or("1bdp");
    c.queue_bytes = parse_queue_bytes(queue, &c, rtt)?;
    Ok(c)
}

/// `yes`/`no`, `true`/`false`, `on`/`off`, `1`/`0`.
fn parse_bool(s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => bail!("{s:?} is not yes or no"),
    }
}

/// `0.01` or `1%`, in `[0, 1]` (the simulator's own parser, so profiles and `--loss` read alike).
fn parse_probability(s: &str) -> Result<f64> {
    transport::sim::loss::parse_fraction(s).map_err(|e| anyhow!(e))
}

/// A comma-separated list of `X@T` items.
fn parse_list<T>(s: &str, item: impl Fn(&str, &str) -> Result<T>) -> Result<Vec<T>> {
    s.split(',')
        .filter(|i| !i.trim().is_empty())
        .map(|i| {
            let (x, at) = i
                .split_once('@')
                .ok_or_else(|| anyhow!("{i:?}: expected VALUE@TIME"))?;
            item(x.trim(), at.trim()).with_context(|| format!("in {i:?}"))
        })
        .collect()
}

/// `1bdp`, `0.5bdp` (of the direction's initial rate over the path's RTT, at least ten full packets) or bytes.
/// Without a rate the queue is unused and unlimited.
fn parse_queue_bytes(s: &str, c: &LinkConfig, rtt: Duration) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    if let Some(n) = t.strip_suffix("bdp") {
        let k: f64 = n
            .trim()
            .parse()
            .map_err(|_| anyhow!("bad queue {s:?}: e.g. 1bdp or 150000"))?;
        if !(k > 0.0 && k.is_finite()) {
            bail!("bad queue {s:?}: must be positive");
        }
        if c.rate_bps.is_none() {
            return Ok(u64::MAX);
        }
        let bytes = (c.bdp_bytes(rtt) as f64 * k) as u64;
        return Ok(bytes.max(MIN_QUEUE_BYTES));
    }
    t.parse::<u64>()
        .map_err(|_| anyhow!("bad queue {s:?}: e.g. 1bdp or 150000 (bytes)"))
}
