//! `popline-bench egress`: popline's HTTP egress measured against its own RTMP and against nginx-rtmp's HLS
//! in one run (issue 19's benchmark contract). Two parts, each can run alone (`--only flv|hls`):
//!
//! - `flv`, viewers per core ([`per_core`]): the fanout harness's ramp ([`crate::fanout`]: the same publisher
//!   with SEI send stamps, steps, pass rules, `/proc` CPU) against the popline node with RTMP players, then
//!   against a fresh node of the same build and config with HTTP-FLV players ([`flv_player`]: a chunked FLV
//!   body read by [`chunked`] and [`flv_stream`], measured by the same [`crate::fanout::measure`]). Reported
//!   side by side with their ratio; target: HTTP-FLV viewers per core >= 0.8x RTMP's.
//! - `hls`, glass-to-playlist latency ([`hls_latency`]): the same stream published into popline twice (an
//!   app with plain HLS, an app with LL-HLS) and into nginx-rtmp with `hls on` as its docs set it up; a
//!   poller per playlist ([`poller`], [`http_get`], [`playlist`]) notes when each segment or part first
//!   appears, and [`glass`] places it on the publisher's media timeline ([`crate::fanout::send_log`]) to
//!   find the capture time of its newest frame. Targets: LL-HLS p99 under 1 s, popline's HLS below
//!   nginx-rtmp's. Beside it, [`freshness`]: the age of the newest media a player can fetch from each
//!   playlist, sampled over the run.
//!
//! [`report`] prints both parts as tables, or one JSON array with an object per variant of each part.

pub mod chunked;
pub mod cli;
pub mod flv_player;
pub mod flv_stream;
pub mod freshness;
pub mod glass;
pub mod hls_latency;
pub mod http_get;
pub mod per_core;
pub mod playlist;
pub mod poller;
pub mod report;
#[cfg(test)]
mod tests;

pub use cli::EgressArgs;

use crate::fanout::{self, nginx::HlsSettings};
use anyhow::{bail, Result};
use cli::Only;
use hls_latency::HlsPlan;
use report::Row;
use std::time::Duration;

/// Runs `popline-bench egress`.
pub fn run(args: &EgressArgs) -> Result<()> {
    if !(args.hls_seconds > 0.0 && args.hls_seconds.is_finite()) {
        bail!("--hls-seconds must be positive");
    }
    if args.poll_ms == 0 {
        bail!("--poll-ms must be at least 1");
    }
    let plan = HlsPlan {
        duration: Duration::from_secs_f64(args.hls_seconds),
        poll: Duration::from_millis(args.poll_ms),
        nginx: HlsSettings {
            fragment_ms: args.nginx_hls_fragment_ms,
            playlist_ms: args.nginx_hls_playlist_length_ms,
            http_port: 0,
        },
    };
    let setup = fanout::setup(&args.ramp, &args.server)?;
    let viewers = if args.only == Some(Only::Hls) {
        Vec::new()
    } else {
        per_core::run(&setup)
    };
    let latency = if args.only == Some(Only::Flv) {
        Vec::new()
    } else {
        hls_latency::run(&setup, &plan)
    };
    if args.json {
        let rows: Vec<Row> = viewers
            .into_iter()
            .map(|r| Row::Viewers(Box::new(r)))
            .chain(latency.into_iter().map(|r| Row::Latency(Box::new(r))))
            .collect();
        return report::print_json(&rows);
    }
    report::print_viewers(&viewers);
    if !viewers.is_empty() && !latency.is_empty() {
        println!();
    }
    report::print_latency(&latency);
    Ok(())
}
