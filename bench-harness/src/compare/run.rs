//! One measured run of one variant in one mode: what the variant is given ([`RunSpec`]), what it gives back
//! ([`Outcome`]), and the two timelines every variant follows alike.
//!
//! Bulk: the receiver counts payload bytes into an atomic as it reads them; once the sender is connected the
//! run waits out the warm-up, then samples the counter over the measured window ([`bulk_window`]).
//! Live: once connected, the sender captures the [`LiveStream`](super::live::LiveStream) for warm-up + window;
//! frames captured in the window are judged ([`LiveTimeline`]); the receiver keeps reading for a drain period
//! after the sender's last frame, so a frame still in flight can arrive (late or not).

use super::live::{judge, Arrivals, LiveResult, SentFrame};
use super::Mode;
use crate::emulate::Lab;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a variant needs for one run.
#[derive(Debug)]
pub struct RunSpec<'a> {
    /// The two namespaces (sender in A, receiver in B).
    pub lab: &'a Lab,
    /// Bulk or live.
    pub mode: Mode,
    /// Bulk: transfer before the window; live: capture time before the judged frames.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// Live: a frame's latency budget from capture to arrival.
    pub budget: Duration,
    /// Live: the stream's bitrate, bits per second.
    pub bitrate_bps: u64,
    /// The emulated path's A-to-B rate, if limited.
    pub link_rate_bps: Option<u64>,
    /// The emulated path's round-trip propagation delay.
    pub rtt: Duration,
    /// The instant frame capture times count from (shared by every thread of the run).
    pub epoch: Instant,
    /// MTU of the emulated interfaces.
    pub mtu: u16,
    /// popline's settings that differ from the transport's defaults.
    pub popline_tuning: PoplineTuning,
}

/// popline's connection settings a run overrides (`None`: the transport's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoplineTuning {
    /// The pacer's round (`ConnectionConfig::pacing_round`).
    pub pacing_round: Option<Duration>,
    /// ACK after this many ack-eliciting packets (`ConnectionConfig::ack_every`).
    pub ack_every: Option<u32>,
    /// How each side's ring gathers completions into one wake-up (`engine::uring::WaitBatch`).
    pub wait_batch: Option<engine::uring::WaitBatch>,
    /// How long the connection may prime the path after its handshake (`ConnectionConfig::startup_priming`).
    pub startup_priming: Option<Duration>,
}

impl PoplineTuning {
    /// Applies the overrides to `config`.
    pub fn apply(&self, config: &mut transport::ConnectionConfig) {
        if let Some(round) = self.pacing_round {
            config.pacing_round = round;
        }
        if let Some(n) = self.ack_every {
            config.ack_every = n;
        }
        if let Some(t) = self.startup_priming {
            config.startup_priming = t;
        }
    }

    /// What the overrides are, for a row's `note` (`None` when there are none).
    pub fn note(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(round) = self.pacing_round {
            parts.push(format!("pacing round {} us", round.as_micros()));
        }
        if let Some(n) = self.ack_every {
            parts.push(format!("ACK every {n}"));
        }
        if let Some(t) = self.startup_priming {
            parts.push(format!("startup priming {} ms", t.as_millis()));
        }
        if let Some(b) = self.wait_batch {
            parts.push(format!(
                "wake batch {} or {} us",
                b.completions,
                b.max_delay.as_micros()
            ));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

impl RunSpec<'_> {
    /// How long a live receiver keeps reading after the last frame was captured.
    pub fn drain(&self) -> Duration {
        (self.budget + self.rtt * 2).max(Duration::from_secs(1))
    }

    /// Socket buffer bytes that hold several bandwidth-delay products of the path (at least 4 MiB, at most
    /// 64 MiB; 32 MiB when the rate is unlimited).
    pub fn buffer_bytes(&self) -> usize {
        let bdp = match self.link_rate_bps {
            Some(rate) => (rate as f64 / 8.0 * self.rtt.as_secs_f64()) as usize,
            None => 8 << 20,
        };
        (bdp * 4).clamp(4 << 20, 64 << 20)
    }
}

/// What a variant measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Payload bytes delivered in the window (bulk) or bytes of the judged frames delivered (live).
    pub window_bytes: u64,
    /// Length of the window, seconds.
    pub window_s: f64,
    /// Payload bytes delivered over the whole run: the denominator of CPU per GB.
    pub total_bytes: u64,
    /// CPU seconds of the variant's threads and processes over the whole run.
    pub cpu_s: f64,
    /// Live: how the judged frames fared.
    pub live: Option<LiveResult>,
    /// Anything the reader of the row should know (e.g. a setting the kernel refused).
    pub note: Option<String>,
    /// Live: when each delivered frame arrived complete, and its bytes (every frame, warm-up included).
    pub delivered_at: Vec<(Instant, usize)>,
}

/// Waits out `warmup`, then samples `delivered` over `window`: the bytes and seconds of the window.
pub fn bulk_window(delivered: &AtomicU64, warmup: Duration, window: Duration) -> (u64, f64) {
    std::thread::sleep(warmup);
    let (b0, t0) = (delivered.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(window);
    let (b1, t1) = (delivered.load(Ordering::Relaxed), Instant::now());
    (b1.saturating_sub(b0), (t1 - t0).as_secs_f64())
}

/// A live sender's timeline: frames captured in `[judged_from, end)` count.
#[derive(Debug, Clone, Copy)]
pub struct LiveTimeline {
    /// The first judged capture time.
    pub judged_from: Instant,
    /// Capture stops here.
    pub end: Instant,
}

impl LiveTimeline {
    /// A stream starting at `start`: `warmup` sent and not judged, then `window` judged.
    pub fn starting(start: Instant, warmup: Duration, window: Duration) -> LiveTimeline {
        LiveTimeline {
            judged_from: start + warmup,
            end: start + warmup + window,
        }
    }

    /// Judges what arrived.
    pub fn judge(&self, spec: &RunSpec<'_>, sent: &[SentFrame], arrivals: &Arrivals) -> LiveResult {
        judge(sent, arrivals, self.judged_from, self.end, spec.budget)
    }

    /// The outcome of a live run: the judged frames, and CPU per byte over every frame delivered.
    pub fn outcome(
        &self,
        spec: &RunSpec<'_>,
        sent: &[SentFrame],
        arrivals: &Arrivals,
        total_bytes: u64,
        cpu_s: f64,
    ) -> Outcome {
        let live = self.judge(spec, sent, arrivals);
        Outcome {
            window_bytes: live.bytes_delivered,
            window_s: (self.end - self.judged_from).as_secs_f64(),
            total_bytes,
            cpu_s,
            live: Some(live),
            note: None,
            delivered_at: sent
                .iter()
                .filter_map(|f| arrivals.arrival(f.seq).map(|at| (at, f.len)))
                .collect(),
        }
    }
}
