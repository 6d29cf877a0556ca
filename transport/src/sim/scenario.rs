//! Whole-protocol scenarios on the virtual network: bulk transfer and a live stream, with the numbers the
//! benchmark prints and the tests assert.

use super::link::{LinkConfig, Outage, RateChange};
use super::loss::LossModel;
use super::media::{Checker, LiveParams, LiveSource};
use super::net::{App, End, Flow, Net, NetConfig};
use crate::congestion::ControllerKind;
use crate::connection::stats::ConnectionStats;
use crate::connection::Event;
use crate::endpoint::EndpointError;
use crate::media::{MediaFrame, MediaKind, StreamId};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// What a scenario moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As much reliable data as the path takes.
    Bulk,
    /// A live stream with deadlines.
    Live,
}

impl Mode {
    /// `bulk` or `live`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Bulk => "bulk",
            Mode::Live => "live",
        }
    }
}

/// One simulated run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Bulk or live.
    pub mode: Mode,
    /// Congestion controller of the measured flow.
    pub cc: ControllerKind,
    /// Bottleneck rate, bits per second.
    pub rate_bps: u64,
    /// Base round-trip time (split evenly between directions).
    pub rtt: Duration,
    /// Random loss, applied in both directions.
    pub loss: LossModel,
    /// Jitter per direction.
    pub jitter: Duration,
    /// Whether jitter may reorder packets.
    pub reorder: bool,
    /// Bottleneck queue in bandwidth-delay products.
    pub queue_bdp: f64,
    /// Virtual duration.
    pub duration: Duration,
    /// Outages of the forward direction.
    pub outages: Vec<Outage>,
    /// Rate changes of the forward direction.
    pub rate_changes: Vec<RateChange>,
    /// The live stream (live mode).
    pub live: LiveParams,
    /// A competing bulk flow on the same bottleneck, with this controller.
    pub competitor: Option<ControllerKind>,
    /// Encrypt packets.
    pub encryption: bool,
    /// Seed.
    pub seed: u64,
    /// Record a [`TraceRow`] of the measured flow this often (for plots and debugging).
    pub trace_interval: Option<Duration>,
    /// Live mode: before the stream starts, the connection carries this long of low-priority bulk data
    /// (disposable frames that stop, and expire, one RTT before the stream starts), as a PoP-to-PoP
    /// connection that already carries other streams would. The stream's frames are all counted; the warm-up's are not. Zero = a cold start.
    pub warmup: Duration,
}

/// The measured flow's state at one instant of a traced run.
#[derive(Debug, Clone, Copy)]
pub struct TraceRow {
    /// Time since the start.
    pub t: Duration,
    /// Goodput since the previous row, bits per second.
    pub goodput_bps: f64,
    /// Pacing rate, bits per second.
    pub pacing_bps: f64,
    /// Bandwidth estimate, bits per second.
    pub bandwidth_bps: f64,
    /// Congestion window, bytes.
    pub cwnd_bytes: u64,
    /// Bytes in flight.
    pub in_flight_bytes: u64,
    /// Smoothed RTT.
    pub srtt: Duration,
    /// Packets lost so far.
    pub packets_lost: u64,
    /// Congestion controller phase.
    pub phase: &'static str,
    /// Bytes the sender put on the wire since the previous row, as bits per second.
    pub send_bps: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            mode: Mode::Bulk,
            cc: ControllerKind::Popline,
            rate_bps: 100_000_000,
            rtt: Duration::from_millis(100),
            loss: LossModel::None,
            jitter: Duration::ZERO,
            reorder: false,
            queue_bdp: 1.0,
            duration: Duration::from_secs(30),
            outages: Vec::new(),
            rate_changes: Vec::new(),
            live: LiveParams::default(),
            competitor: None,
            encryption: true,
            seed: 1,
            trace_interval: None,
            warmup: Duration::ZERO,
        }
    }
}

/// Per-flow result.
#[derive(Debug, Clone)]
pub struct FlowReport {
    /// Controller.
    pub cc: ControllerKind,
    /// Application bytes delivered per second, bits.
    pub goodput_bps: f64,
    /// The sender's connection stats at the end.
    pub sender: ConnectionStats,
}

/// The numbers of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario.
    pub scenario: Scenario,
    /// Application bytes delivered per second, bits (measured flow).
    pub goodput_bps: f64,
    /// Repaired payload bytes over first-sent payload bytes.
    pub overhead_ratio: f64,
    /// Frames the source produced.
    pub frames_sent: u64,
    /// Frames delivered within budget.
    pub frames_on_time: u64,
    /// Frames never delivered.
    pub frames_dropped: u64,
    /// Frames delivered whose reference was not (must be 0).
    pub frames_undecodable_delivered: u64,
    /// Frames delivered twice or out of order (must be 0).
    pub frames_out_of_order: u64,
    /// Median capture-to-delivery latency.
    pub frame_latency_p50: Duration,
    /// 99th percentile capture-to-delivery latency.
    pub frame_latency_p99: Duration,
    /// 95th percentile queueing delay at the bottleneck.
    pub p95_queue_delay: Duration,
    /// Smallest queueing delay at the bottleneck.
    pub min_queue_delay: Duration,
    /// Every flow (the measured one first).
    pub flows: Vec<FlowReport>,
    /// Per-frame outcomes of the live stream (empty in bulk mode).
    pub outcomes: Vec<super::media::FrameOutcome>,
    /// Simulator loop iterations.
    pub steps: u64,
    /// Rows recorded when `trace_interval` is set.
    pub trace: Vec<TraceRow>,
    /// When the run began (the links' time zero: outages and rate changes count from here).
    pub started: Instant,
    /// When the stream (live mode) or the measurement (bulk mode) began.
    pub stream_started: Instant,
}

const BULK_FRAME: usize = 256 * 1024;
/// Longest a scenario waits for its handshake before starting the warm-up clock anyway.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(30);
/// The stream that carries warm-up traffic.
const WARMUP_STREAM: u32 = 1;

struct Driver {
    mode: Mode,
    bulk_payload: Bytes,
    source: Option<LiveSource>,
    checker: Checker,
    delivered_bytes: Vec<u64>,
    bulk_target_unsent: u64,
    trace_interval: Option<Duration>,
    next_trace: Option<Instant>,
    start: Instant,
    traced_bytes: u64,
    traced_sent: u64,
    trace: Vec<TraceRow>,
    warmup_end: Instant,
    /// Warm-up traffic stops (and expires) one RTT before the stream starts, so its last packets have left
    /// the bottleneck when the first keyframe arrives.
    warmup_traffic_end: Instant,
}

impl App for Driver {
    fn pump(&mut self, now: Instant, flows: &mut [Flow]) {
        if let (Some(every), Some(at)) = (self.trace_interval, self.next_trace) {
            if now >= at {
                self.next_trace = Some(at + every);
                if let Some(st) = flows.first().and_then(|f| f.client.connection_stats(f.conn)) {
                    let bytes = self.delivered_bytes.first().copied().unwrap_or(0);
                    let dt = every.as_secs_f64().max(1e-9);
                    self.trace.push(TraceRow {
                        t: now - self.start,
                        goodput_bps: (bytes - self.traced_bytes) as f64 * 8.0 / dt,
                        pacing_bps: st.congestion.pacing_rate_bytes_per_s as f64 * 8.0,
                        bandwidth_bps: st.congestion.bandwidth_estimate_bytes_per_s as f64 * 8.0,
                        cwnd_bytes: st.congestion.cwnd_bytes,
                        in_flight_bytes: st.bytes_in_flight,
                        srtt: st.rtt,
                        packets_lost: st.packets_lost,
                        phase: st.congestion_phase,
                        send_bps: (st.bytes_sent - self.traced_sent) as f64 * 8.0 / dt,
                    });
                    self.traced_bytes = bytes;
                    self.traced_sent = st.bytes_sent;
                }
            }
        }
        for (i, f) in flows.iter_mut().enumerate() {
            if f.connected_at.is_none() {
                if i == 0 && now >= self.warmup_end {
                    // Captured while there is no connection: lost (a source does not wait), and past due, so
                    // that the run's next wake-up is not a frame it can never send.
                    if let Some(src) = self.source.as_mut() {
                        while src.poll(now).is_some() {}
                    }
                }
                continue;
            }
            let live = i == 0 && self.mode == Mode::Live;
            if live && now < self.warmup_traffic_end {
                let unsent = f.client.connection(f.conn).map_or(u64::MAX, |c| c.unsent_bytes());
                if unsent < self.bulk_target_unsent {
                    let frame = MediaFrame {
                        kind: MediaKind::Disposable,
                        bytes: self.bulk_payload.clone(),
                        capture: now,
                        budget: Some(self.warmup_traffic_end.saturating_duration_since(now)),
                    };
                    let _ = f.client.send_frame(f.conn, StreamId(WARMUP_STREAM), frame);
                }
                continue;
            }
            if live {
                let Some(src) = self.source.as_mut() else { continue };
                while let Some(frame) = src.poll(now) {
                    if let Ok(seq) = f.client.send_frame(f.conn, StreamId(0), frame.clone()) {
                        self.checker.on_sent(seq, &frame);
                    }
                }
            } else {
                let unsent = f.client.connection(f.conn).map_or(u64::MAX, |c| c.unsent_bytes());
                let mut unsent = unsent;
                while unsent < self.bulk_target_unsent {
                    let frame = MediaFrame {
                        kind: MediaKind::Key,
                        bytes: self.bulk_payload.clone(),
                        capture: now,
                        budget: None,
                    };
                    if f.client.send_frame(f.conn, StreamId(0), frame).is_err() {
                        break;
                    }
                    unsent += BULK_FRAME as u64;
                }
            }
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let src = self
            .source
            .as_ref()
            .map(LiveSource::next_due)
            .map(|t| t.max(self.warmup_end));
        match (src, self.next_trace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_event(&mut self, now: Instant, flow: usize, end: End, event: Event) {
        if let (End::Server, Event::Frame(f)) = (end, event) {
            if f.stream == WARMUP_STREAM {
                return;
            }
            if let Some(d) = self.delivered_bytes.get_mut(flow) {
                *d += f.bytes.len() as u64;
            }
            if flow == 0 && self.mode == Mode::Live {
                self.checker.on_delivered(now, f.seq, f.bytes.len());
            }
        }
    }
}

/// Runs a scenario.
pub fn run(s: &Scenario) -> Result<Report, EndpointError> {
    let start = Instant::now();
    let warmup = if s.mode == Mode::Live {
        s.warmup
    } else {
        Duration::ZERO
    };
    let one_way = s.rtt / 2;
    let bdp_bytes = (s.rate_bps as f64 / 8.0 * s.rtt.as_secs_f64() * s.queue_bdp) as u64;
    let forward = LinkConfig {
        delay: one_way,
        jitter: s.jitter,
        reorder: s.reorder,
        loss: s.loss,
        rate_bps: Some(s.rate_bps),
        queue_bytes: bdp_bytes.max(16 * 1500),
        outages: s.outages.clone(),
        rate_changes: s.rate_changes.clone(),
        ..LinkConfig::default()
    };
    let reverse = LinkConfig {
        delay: one_way,
        jitter: s.jitter,
        reorder: s.reorder,
        loss: s.loss,
        ..LinkConfig::default()
    };
    let mut controllers = vec![s.cc];
    controllers.extend(s.competitor);
    let cfg = NetConfig {
        forward,
        reverse,
        controllers: controllers.clone(),
        encryption: s.encryption,
        seed: s.seed,
    };
    let mut net = Net::new(&cfg, start)?;
    let mut driver = Driver {
        mode: s.mode,
        bulk_payload: Bytes::from(vec![0xb0; BULK_FRAME]),
        source: None,
        checker: Checker::new(s.live.budget),
        delivered_bytes: vec![0; controllers.len()],
        bulk_target_unsent: (bdp_bytes * 2).max(4 * BULK_FRAME as u64),
        trace_interval: s.trace_interval,
        next_trace: s.trace_interval.map(|_| start),
        start,
        traced_bytes: 0,
        traced_sent: 0,
        trace: Vec::new(),
        warmup_end: start,
        warmup_traffic_end: start,
    };
    // The warm-up counts from the handshake's end (a lossy path can delay it by seconds); a cold start
    // (no warm-up) counts from the first Initial, as a viewer would see it.
    let mut anchor = start;
    if s.mode == Mode::Live && !warmup.is_zero() {
        driver.warmup_end = start + HANDSHAKE_LIMIT;
        driver.warmup_traffic_end = driver.warmup_end;
        while net.flows.first().is_some_and(|f| f.connected_at.is_none()) && net.now < start + HANDSHAKE_LIMIT
        {
            let step = net.now + Duration::from_millis(5);
            net.run_until(step, &mut driver);
        }
        anchor = net.flows.first().and_then(|f| f.connected_at).unwrap_or(net.now);
    }
    driver.warmup_end = anchor + warmup;
    driver.warmup_traffic_end = anchor + warmup.saturating_sub(s.rtt);
    if s.mode == Mode::Live {
        driver.source = Some(LiveSource::new(s.live, anchor + warmup));
    }
    let end = anchor + warmup + s.duration;
    net.run_until(end, &mut driver);
    let secs = s.duration.as_secs_f64().max(1e-9);
    let flows: Vec<FlowReport> = net
        .flows
        .iter()
        .zip(&controllers)
        .zip(&driver.delivered_bytes)
        .map(|((f, cc), bytes)| FlowReport {
            cc: *cc,
            goodput_bps: *bytes as f64 * 8.0 / secs,
            sender: f.client.connection_stats(f.conn).unwrap_or_default(),
        })
        .collect();
    let sender = flows.first().map(|f| f.sender.clone()).unwrap_or_default();
    // In live mode the overhead is the stream's own (the warm-up traffic is not the stream's cost).
    let overhead_ratio = match s.mode {
        Mode::Live => net
            .flows
            .first()
            .and_then(|f| f.client.connection(f.conn))
            .and_then(|c| c.stream_send_stats(0))
            .map_or(0.0, |st| st.overhead_ratio()),
        Mode::Bulk => sender.overhead_ratio(),
    };
    let c = &driver.checker;
    // Frames captured too late to possibly arrive before the run ended are not counted against anyone.
    let horizon = end.checked_sub(s.live.budget).unwrap_or(end);
    let counted: Vec<_> = c.frames.iter().filter(|f| f.capture <= horizon).collect();
    let frames_sent = counted.len() as u64;
    let frames_on_time = counted
        .iter()
        .filter(|f| {
            f.delivered
                .is_some_and(|d| d.saturating_duration_since(f.capture) <= s.live.budget)
        })
        .count() as u64;
    let frames_delivered = counted.iter().filter(|f| f.delivered.is_some()).count() as u64;
    Ok(Report {
        goodput_bps: flows.first().map_or(0.0, |f| f.goodput_bps),
        overhead_ratio,
        frames_sent,
        frames_on_time,
        frames_dropped: frames_sent - frames_delivered,
        frames_undecodable_delivered: c.undecodable_delivered,
        frames_out_of_order: c.out_of_order,
        frame_latency_p50: c.latency.percentile(50.0),
        frame_latency_p99: c.latency.percentile(99.0),
        p95_queue_delay: net.forward.queue_delay().percentile(95.0),
        min_queue_delay: net.forward.queue_delay().min(),
        flows,
        outcomes: c.frames.clone(),
        steps: net.steps,
        trace: driver.trace,
        started: start,
        stream_started: anchor + warmup,
        scenario: s.clone(),
    })
}
