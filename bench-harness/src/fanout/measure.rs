//! What a player measures, whatever protocol brings it the stream (RTMP here, HTTP-FLV in
//! [`crate::egress::flv_player`]): the stats it shares with the ramp ([`PlayerShared`]) and the per-connection
//! meter that reads each video frame's first bytes ([`FrameMeter`]).
//!
//! Per player:
//! - time to first frame: from the start of the TCP connect to the first video *keyframe* (the first frame a
//!   decoder can show; inter frames a server sends before it do not count);
//! - lag: for every stamped video frame sent after the player asked to play, its arrival at the player's
//!   socket (the kernel's receive timestamp, [`super::arrival`]) minus the publisher's send time (both on
//!   [`super::clock`], in this process): the time the frame spent in the server and the sockets;
//! - read lag: the same frame's read time minus its send time, which adds the load generator's own delay in
//!   getting round to the read (it grows as the load generator nears saturation, whatever the server);
//! - missed frames: gaps in the publisher's frame numbers (servers drop frames for slow viewers).
//!
//! A video frame is an FLV video tag body (an RTMP video message's payload is the same bytes), of which the
//! meter needs the first [`super::sei::SEARCH_PREFIX_BYTES`].

use super::sei;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Most lag samples a player keeps between two collections (a step holds ~25/s; this bounds a stuck
/// controller's memory, not a normal step).
const MAX_LAG_SAMPLES: usize = 16 * 1024;

/// Where a player is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Connecting, handshaking or sending its request.
    Connecting,
    /// The server accepted the play request (or media arrived).
    Playing,
    /// The session ended: the reason (an error, or the server closing the connection).
    Ended(String),
}

/// What a player has measured, read and reset by the ramp between steps.
#[derive(Debug)]
pub struct PlayerStats {
    /// Where the player is.
    pub phase: Phase,
    /// Connect start to the first video keyframe, in microseconds.
    pub ttff_us: Option<u64>,
    /// Lags of stamped frames since the last collection (arrival at the socket - send), in microseconds.
    pub lags_us: Vec<u32>,
    /// The same frames' read lags (read - send), in microseconds.
    pub read_lags_us: Vec<u32>,
    /// Stamped frames the server skipped (gaps in frame numbers) since the last collection.
    pub missed_frames: u64,
}

/// A player's measurements, shared between its task and the ramp.
#[derive(Debug)]
pub struct PlayerShared {
    /// Bytes read from the socket so far.
    pub bytes: AtomicU64,
    /// Audio messages (tags) received so far.
    pub audio_messages: AtomicU64,
    /// Video messages (tags; sequence headers included) received so far.
    pub video_messages: AtomicU64,
    stats: Mutex<PlayerStats>,
}

impl Default for PlayerShared {
    fn default() -> Self {
        Self::new()
    }
}

impl PlayerShared {
    /// A player that has not started.
    pub fn new() -> Self {
        Self {
            bytes: AtomicU64::new(0),
            audio_messages: AtomicU64::new(0),
            video_messages: AtomicU64::new(0),
            stats: Mutex::new(PlayerStats {
                phase: Phase::Connecting,
                ttff_us: None,
                lags_us: Vec::new(),
                read_lags_us: Vec::new(),
                missed_frames: 0,
            }),
        }
    }

    /// The stats, locked (a panicked holder cannot leave them inconsistent: every update is one field).
    pub fn lock(&self) -> MutexGuard<'_, PlayerStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// When a read's bytes reached the socket and when they were read, in microseconds on [`super::clock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// Arrival at the socket (the read time where the kernel gave no timestamp).
    pub arrival_us: u64,
    /// The read.
    pub read_us: u64,
}

impl At {
    /// Arrival and read at the same instant (a read without a kernel timestamp; tests).
    pub fn read_at(us: u64) -> Self {
        Self {
            arrival_us: us,
            read_us: us,
        }
    }
}

/// One connection's measurement of the video frames it receives: time to first keyframe, lag of each
/// stamped frame, frames missed. Results gather here during a socket read and go to the shared stats in one
/// lock by [`FrameMeter::flush`].
#[derive(Debug)]
pub struct FrameMeter {
    connect_start: Instant,
    /// Frames stamped before this (microseconds on the clock) are old (a GOP cache) and not measured.
    play_sent_us: u64,
    got_keyframe: bool,
    last_seq: Option<u32>,
    /// Lags found in the current read, flushed to the shared stats after it.
    lags: Vec<u32>,
    /// Their read lags.
    read_lags: Vec<u32>,
    missed: u64,
}

impl FrameMeter {
    /// A meter for a connection whose TCP connect started at `connect_start`.
    pub fn new(connect_start: Instant) -> Self {
        Self {
            connect_start,
            play_sent_us: u64::MAX,
            got_keyframe: false,
            last_seq: None,
            lags: Vec::new(),
            read_lags: Vec::new(),
            missed: 0,
        }
    }

    /// The player asked to play at `at_us` (on the clock): frames the publisher sent before are not measured.
    pub fn play_requested(&mut self, at_us: u64) {
        self.play_sent_us = at_us;
    }

    /// A video frame reached the socket at `at.arrival_us` and was read at `at.read_us`: `prefix` is the
    /// first bytes of its FLV video tag body (at least [`sei::SEARCH_PREFIX_BYTES`] where the frame is that
    /// long).
    pub fn on_video(&mut self, shared: &PlayerShared, prefix: &[u8], at: At) {
        shared.video_messages.fetch_add(1, Ordering::Relaxed);
        let (Some(&first), Some(&second)) = (prefix.first(), prefix.get(1)) else {
            return;
        };
        let avc = first & 0x0f == 7;
        if avc && second == 0 {
            return; // sequence header: not a frame
        }
        if !self.got_keyframe && first >> 4 == 1 {
            self.got_keyframe = true;
            let ttff = self.connect_start.elapsed();
            shared.lock().ttff_us = Some(u64::try_from(ttff.as_micros()).unwrap_or(u64::MAX));
        }
        let Some(stamp) = sei::find_stamp(prefix) else {
            return;
        };
        if stamp.send_us < self.play_sent_us {
            return;
        }
        if let Some(last) = self.last_seq {
            if stamp.seq > last {
                self.missed += u64::from(stamp.seq - last - 1);
            }
        }
        self.last_seq = Some(stamp.seq);
        let lag = |t: u64| u32::try_from(t.saturating_sub(stamp.send_us)).unwrap_or(u32::MAX);
        self.lags.push(lag(at.arrival_us));
        self.read_lags.push(lag(at.read_us));
    }

    /// Moves what this read measured to the shared stats.
    pub fn flush(&mut self, shared: &PlayerShared) {
        if self.lags.is_empty() && self.missed == 0 {
            return;
        }
        let mut stats = shared.lock();
        let room = MAX_LAG_SAMPLES.saturating_sub(stats.lags_us.len());
        let take = self.lags.len().min(room);
        stats.lags_us.extend_from_slice(&self.lags[..take]);
        let room = MAX_LAG_SAMPLES.saturating_sub(stats.read_lags_us.len());
        let take = self.read_lags.len().min(room);
        stats.read_lags_us.extend_from_slice(&self.read_lags[..take]);
        stats.missed_frames += self.missed;
        drop(stats);
        self.lags.clear();
        self.read_lags.clear();
        self.missed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::sei::{write_sei_nal, Stamp, SEI_NAL_LEN};

    fn frame(key: bool, stamp: Stamp) -> Vec<u8> {
        let mut f = vec![if key { 0x17 } else { 0x27 }, 0x01, 0, 0, 0];
        f.extend_from_slice(&(SEI_NAL_LEN as u32).to_be_bytes());
        write_sei_nal(&mut f, stamp);
        f
    }

    #[test]
    fn measures_ttff_lag_and_gaps_after_the_play_request() {
        let shared = PlayerShared::new();
        let mut meter = FrameMeter::new(Instant::now());
        meter.play_requested(1_000);
        // The sequence header and an old (cached) frame: counted, not measured.
        meter.on_video(&shared, &[0x17, 0x00, 0, 0, 0, 1], At::read_at(1_100));
        meter.on_video(
            &shared,
            &frame(false, Stamp { send_us: 900, seq: 1 }),
            At::read_at(1_100),
        );
        assert!(
            shared.lock().ttff_us.is_none(),
            "an inter frame is no first frame"
        );
        meter.on_video(
            &shared,
            &frame(
                true,
                Stamp {
                    send_us: 1_200,
                    seq: 2,
                },
            ),
            At::read_at(1_250),
        );
        meter.on_video(
            &shared,
            &frame(
                false,
                Stamp {
                    send_us: 1_300,
                    seq: 5,
                },
            ),
            At {
                arrival_us: 1_400,
                read_us: 1_700,
            },
        );
        meter.flush(&shared);
        let st = shared.lock();
        assert!(st.ttff_us.is_some());
        assert_eq!(st.lags_us, vec![50, 100], "arrival - send");
        assert_eq!(st.read_lags_us, vec![50, 400], "read - send");
        assert_eq!(st.missed_frames, 2, "frames 3 and 4");
        drop(st);
        assert_eq!(shared.video_messages.load(Ordering::Relaxed), 4);
    }
}
