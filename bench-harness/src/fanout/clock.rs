//! The one clock that publisher and players share: microseconds since a process-wide monotonic epoch.
//!
//! The publisher writes [`now_us`] into each video frame and the players read it back and subtract it from their
//! own [`now_us`]: both ends live in this process, so the difference is the time the frame spent in the server
//! and the sockets (plus this process's scheduling delay), with no clock synchronisation to get wrong.
//!
//! The wall clock is read once, at the epoch, so that a reading can be compared with the Unix times a server
//! writes (HLS's `EXT-X-PROGRAM-DATE-TIME`): [`at_unix_ms`].

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

static EPOCH: OnceLock<(Instant, u64)> = OnceLock::new();

fn epoch_pair() -> (Instant, u64) {
    *EPOCH.get_or_init(|| {
        let unix_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        (Instant::now(), unix_us)
    })
}

/// The process-wide epoch (the first call fixes it).
pub fn epoch() -> Instant {
    epoch_pair().0
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

/// The Unix time, in microseconds, of the clock's reading `us` (the wall clock as it was at the epoch, plus
/// the monotonic time since): what tests need to write a server's times.
#[cfg(test)]
pub fn unix_us(us: u64) -> u64 {
    epoch_pair().1.saturating_add(us)
}

/// The clock's reading at the Unix time `unix_ms` (0 for a time before the epoch).
pub fn at_unix_ms(unix_ms: u64) -> u64 {
    unix_ms.saturating_mul(1000).saturating_sub(epoch_pair().1)
}

/// A duration in milliseconds, as a float (for reports).
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_time_round_trips_to_the_millisecond() {
        let now = now_us() + 5_000_000;
        let unix_ms = unix_us(now) / 1000;
        let back = at_unix_ms(unix_ms);
        assert!(
            back <= now && now - back < 1000,
            "{now} -> {unix_ms} ms -> {back}"
        );
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(
            unix_us(now_us()).abs_diff(wall) < 1_000_000,
            "the wall clock did not jump"
        );
        assert_eq!(at_unix_ms(0), 0);
    }
}
