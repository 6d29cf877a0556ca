//! A playlist poller: a thread that reads one media playlist over and over until told to stop, handing each
//! copy to its [`GlassTracker`] with the time it arrived whole.
//!
//! Plain HLS (popline's, nginx-rtmp's) is polled at a fixed interval, as a player without blocking reload
//! would: a segment is seen up to one interval after it appeared, so the interval bounds the measurement's
//! resolution (and adds half of it on average). The grid of polls moves by a random fraction of the interval
//! after the first playlist and after each one with something new: segments come at the stream's GOP (2 s),
//! a multiple of the interval, so a fixed grid would see every segment at the same phase and report that one
//! wait for all of them (the first short run did: every sample within 5 ms) instead of a spread over the
//! interval. Each sample also gets a lower bound: the request time of the read before, which did not list it. LL-HLS is read with blocking playlist reload, as LL-HLS
//! players read it: each request names the part after the last one listed (`_HLS_msn`, `_HLS_part`), and the
//! server answers once that part exists, so the answer's arrival is the part's appearance (plus the
//! loopback's and the server's own delay).

use super::glass::GlassTracker;
use super::http_get;
use super::playlist;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport::sim::SimRng;

/// How long one request may take: more than a blocking reload's longest hold (three target durations, 6 s
/// at popline's defaults) and a first playlist's wait for the first segment.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed request or an answer without parts, before asking again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How a poller asks for its playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Every interval (fixed rate, from the start of one request to the next).
    Every(Duration),
    /// Blocking playlist reload (LL-HLS): ask for the next part and wait for it.
    BlockingReload,
}

impl PollMode {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            PollMode::Every(_) => "interval",
            PollMode::BlockingReload => "blocking_reload",
        }
    }

    /// The interval, for an interval poller, in ms.
    pub fn interval_ms(self) -> Option<u64> {
        match self {
            PollMode::Every(d) => Some(d.as_millis() as u64),
            PollMode::BlockingReload => None,
        }
    }
}

/// What a poller did.
#[derive(Debug)]
pub struct PollReport {
    /// Its tracker, with the samples.
    pub tracker: GlassTracker,
    /// Requests made.
    pub requests: u64,
    /// Answers `404` (the playlist not there yet).
    pub not_found: u64,
    /// Requests that failed otherwise (another status, an error).
    pub failed: u64,
    /// The first such failure.
    pub first_failure: Option<String>,
    /// Why the measurement stopped early (the tracker refused a playlist), if it did.
    pub error: Option<String>,
}

/// Starts polling `path` on `addr` until `stop` is set.
pub fn spawn(
    name: &str,
    addr: SocketAddr,
    path: String,
    mode: PollMode,
    tracker: GlassTracker,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<PollReport>> {
    std::thread::Builder::new()
        .name(format!("poll-{name}"))
        .spawn(move || poll(addr, &path, mode, tracker, &stop))
        .context("spawning a playlist poller")
}

fn poll(
    addr: SocketAddr,
    path: &str,
    mode: PollMode,
    tracker: GlassTracker,
    stop: &AtomicBool,
) -> PollReport {
    let mut report = PollReport {
        tracker,
        requests: 0,
        not_found: 0,
        failed: 0,
        first_failure: None,
        error: None,
    };
    let mut next_part: Option<(u64, usize)> = None;
    let mut previous_request_us: Option<u64> = None;
    let mut tick = Instant::now();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = SimRng::new(seed ^ path.len() as u64);
    while !stop.load(Ordering::Relaxed) {
        let target = match (mode, next_part) {
            (PollMode::BlockingReload, Some((msn, part))) => {
                let join = if path.contains('?') { '&' } else { '?' };
                format!("{path}{join}_HLS_msn={msn}&_HLS_part={part}")
            }
            _ => path.to_string(),
        };
        report.requests += 1;
        let outcome = http_get::get(addr, &target, REQUEST_TIMEOUT).and_then(|r| match r.status {
            200 => {
                let text = String::from_utf8_lossy(&r.body);
                let parsed = playlist::parse(&text).with_context(|| format!("reading {target}"))?;
                Ok(Some((parsed, r.sent_us, r.done_us)))
            }
            404 => Ok(None),
            status => {
                let body = String::from_utf8_lossy(&r.body);
                anyhow::bail!(
                    "GET {target}: HTTP {status}: {}",
                    body.lines().next().unwrap_or("").trim()
                )
            }
        });
        let mut pause = RETRY_PAUSE;
        let mut shift_phase = false;
        match outcome {
            Ok(Some((parsed, sent_us, done_us))) => {
                let before = report.tracker.samples().len();
                if let Err(e) = report.tracker.observe(&parsed, done_us, previous_request_us) {
                    report.error = Some(format!("{e:#}"));
                    break;
                }
                previous_request_us = Some(sent_us);
                shift_phase = report.tracker.samples().len() > before || report.tracker.playlists() == 1;
                next_part = parsed.next_part();
                if next_part.is_some() {
                    pause = Duration::ZERO;
                }
            }
            Ok(None) => report.not_found += 1,
            Err(e) => {
                report.failed += 1;
                report.first_failure.get_or_insert_with(|| format!("{e:#}"));
                next_part = None;
            }
        }
        match mode {
            PollMode::Every(interval) => {
                tick += interval;
                if shift_phase {
                    tick += interval.mul_f64(rng.next_f64());
                }
                let now = Instant::now();
                if tick > now {
                    std::thread::sleep(tick - now);
                } else {
                    tick = now; // behind (a slow answer): the next request goes at once
                }
            }
            PollMode::BlockingReload => std::thread::sleep(pause),
        }
    }
    report
}
