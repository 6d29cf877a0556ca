//! Parsing of the human units the CLI takes: `100mbit`, `100ms`, `30s`, `1%`.

use anyhow::{anyhow, bail, Result};
use std::time::Duration;

/// Parses a rate like `100mbit`, `6mbit`, `1gbit`, `500kbit` or a plain number of bits per second.
pub fn parse_rate_bps(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("/s")
        .unwrap_or(&t)
        .strip_suffix("ps")
        .unwrap_or(&t)
        .to_string();
    let (num, mult) = if let Some(n) = t.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix("kbit") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix("bit") {
        (n, 1.0)
    } else {
        (t.as_str(), 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow!("bad rate {s:?}: expected e.g. 100mbit"))?;
    if !(v > 0.0 && v.is_finite()) {
        bail!("bad rate {s:?}: must be positive");
    }
    Ok((v * mult) as u64)
}

/// Parses a duration like `100ms`, `30s`, `2s`, `500us`, `1.5s`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        bail!("bad duration {s:?}: give a unit, e.g. 100ms or 30s");
    };
    let v: f64 = num.trim().parse().map_err(|_| anyhow!("bad duration {s:?}"))?;
    if !(v >= 0.0 && v.is_finite()) {
        bail!("bad duration {s:?}: must not be negative");
    }
    Ok(Duration::from_secs_f64(v * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations_parse() {
        assert_eq!(parse_rate_bps("100mbit").unwrap(), 100_000_000);
        assert_eq!(parse_rate_bps("1.5Gbit").unwrap(), 1_500_000_000);
        assert_eq!(parse_rate_bps("600kbit").unwrap(), 600_000);
        assert!(parse_rate_bps("fast").is_err());
        assert!(parse_rate_bps("-1mbit").is_err());
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("100").is_err());
    }
}
