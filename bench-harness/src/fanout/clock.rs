//! The one clock that publisher and players share: microseconds since a process-wide monotonic epoch.
//!
//! The publisher writes [`now_us`] into each video frame and the players read it back and subtract it from their
//! own [`now_us`]: both ends live in this process, so the difference is the time the frame spent in the server
//! and the sockets (plus this process's scheduling delay), with no clock synchronisation to get wrong.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process-wide epoch (the first call fixes it).
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds from the epoch to `t` (0 for an instant before the epoch).
pub fn us_at(t: Instant) -> u64 {
    let d = t.saturating_duration_since(epoch());
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds from the epoch to now.
pub fn now_us() -> u64 {
    us_at(Instant::now())
}

/// A duration in milliseconds, as a float (for reports).
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
