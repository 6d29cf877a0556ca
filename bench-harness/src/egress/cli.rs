//! The flags of `popline-bench egress`.

use crate::fanout::cli::{RampArgs, ServerArgs};
use clap::{Args, ValueEnum};

/// One part of the benchmark (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Only {
    /// HTTP-FLV viewers per core next to RTMP's.
    Flv,
    /// HLS and LL-HLS glass-to-playlist latency next to nginx-rtmp's HLS.
    Hls,
}

/// Arguments of `popline-bench egress`: popline's HTTP egress against its RTMP and nginx-rtmp's HLS, in one
/// run (issue 19's benchmark contract).
///
/// Part `flv`: the fanout ramp (same stream, same steps, same pass rules) against the popline node twice,
/// once with RTMP players and once with HTTP-FLV players; viewers per core and CPU per viewer of each, and
/// their ratio. Part `hls`: one publisher per stream into popline (an app with plain HLS, an app with
/// LL-HLS) and into nginx-rtmp (`hls on`), all at once for `--hls-seconds`; a poller per playlist measures
/// when each new segment (or part) appears against the capture time of its newest frame.
///
/// Servers run under `taskset -c <--server-cpus>` and this process on the other CPUs, as in `fanout`.
#[derive(Debug, Args)]
pub struct EgressArgs {
    /// Run one part alone: `flv` (viewers per core) or `hls` (glass-to-playlist latency).
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// The ramp of part `flv` (and the stream of both parts: `--source`, `--bitrate`).
    #[command(flatten)]
    pub ramp: RampArgs,
    /// The servers' binaries and the popline node's settings.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Seconds part `hls` measures (a sample per new segment, 2 s of media, or per new LL-HLS part).
    #[arg(long, default_value_t = 60.0)]
    pub hls_seconds: f64,
    /// Interval at which the plain-HLS playlists (popline's HLS app, nginx-rtmp's) are polled, in ms: a
    /// segment is seen up to this late, so it bounds the measurement's resolution (LL-HLS uses blocking
    /// reload instead).
    #[arg(long, default_value_t = 50)]
    pub poll_ms: u64,
    /// nginx-rtmp's `hls_fragment`, in ms (fragments end at the first keyframe past it; the stream's GOP is
    /// 2 s, as popline's `egress.hls_target_ms`).
    #[arg(long, default_value_t = 2000)]
    pub nginx_hls_fragment_ms: u64,
    /// nginx-rtmp's `hls_playlist_length`, in ms (six fragments, as popline's `egress.hls_window`).
    #[arg(long, default_value_t = 12_000)]
    pub nginx_hls_playlist_length_ms: u64,
    /// Print a JSON array (one object per variant of each part) instead of the tables.
    #[arg(long)]
    pub json: bool,
}
