//! Popline's unit tests, with a tiny packet-level model of a path: random loss (before the queue, as netem
//! applies it), a FIFO bottleneck of rate C with a finite buffer, and a fixed propagation RTT, driven in virtual
//! time. Flows run any [`Controller`] with the real [`Pacer`], so CUBIC can share the bottleneck.

use std::collections::VecDeque;

use super::*;
use crate::congestion::cubic::Cubic;
use crate::congestion::{AckedPacket, LostPacket, Pacer, RttSnapshot};

const MSS: u64 = MAX_DATAGRAM_BYTES;
const NEVER: u64 = u64::MAX;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Outstanding {
    pn: u64,
    sent_ns: u64,
    snapshot: RateSnapshot,
    acked: bool,
}

/// A live-video-like application source: after `bulk_until_ns` of unlimited data, `rate` bytes per second plus
/// a keyframe of `keyframe_bytes` every `gop_ns` (the first at `bulk_until_ns`).
#[derive(Clone, Copy)]
struct Source {
    bulk_until_ns: u64,
    rate: u64,
    keyframe_bytes: u64,
    gop_ns: u64,
}

impl Source {
    /// Bytes the application has produced by `t_ns` (after the bulk phase, counted from its end).
    fn produced(&self, t_ns: u64) -> u64 {
        let t = t_ns.saturating_sub(self.bulk_until_ns);
        let keyframes = t / self.gop_ns + 1;
        keyframes * self.keyframe_bytes + (u128::from(t) * u128::from(self.rate) / 1_000_000_000) as u64
    }
}

struct Flow {
    cc: Box<dyn Controller>,
    /// None: always has data.
    source: Option<Source>,
    /// Bytes sent after the source's bulk phase.
    source_sent: u64,
    pacer: Pacer,
    outstanding: VecDeque<Outstanding>,
    /// (ack arrival time, packet number), in arrival order.
    acks: VecDeque<(u64, u64)>,
    next_pn: u64,
    bytes_in_flight: u64,
    srtt_ns: u64,
    min_rtt_ns: u64,
    last_progress_ns: u64,
    acked_bytes_measured: u64,
}

impl Flow {
    fn new(cc: Box<dyn Controller>) -> Self {
        Flow {
            cc,
            source: None,
            source_sent: 0,
            pacer: Pacer::default(),
            outstanding: VecDeque::new(),
            acks: VecDeque::new(),
            next_pn: 0,
            bytes_in_flight: 0,
            srtt_ns: 0,
            min_rtt_ns: u64::MAX,
            last_progress_ns: 0,
            acked_bytes_measured: 0,
        }
    }
}

struct Path {
    rtt_ns: u64,
    loss: f64,
    buffer_bytes: u64,
    /// (from time, rate in bytes per second).
    rates: Vec<(u64, u64)>,
}

impl Path {
    fn rate_at(&self, t_ns: u64) -> u64 {
        self.rates
            .iter()
            .rev()
            .find(|(from, _)| *from <= t_ns)
            .map_or(self.rates[0].1, |r| r.1)
    }
}

struct Outcome {
    /// Goodput of each flow over the measurement window, bytes per second.
    goodput: Vec<f64>,
    /// Time-averaged pacing rate of flow 0 over the measurement window.
    mean_pacing: f64,
    /// (time, pacing rate of flow 0) every 10 ms.
    pacing_trace: Vec<(u64, u64)>,
    /// 95th percentile queueing delay seen by packets entering the queue in the measurement window.
    p95_queue_ns: u64,
    /// (time, bandwidth estimate of flow 0) every 10 ms.
    bw_trace: Vec<(u64, u64)>,
}

fn simulate(path: &Path, mut flows: Vec<Flow>, duration_ns: u64, measure_from_ns: u64, seed: u64) -> Outcome {
    let t0 = Instant::now();
    let at = |ns: u64| t0 + Duration::from_nanos(ns);
    let mut rng = Rng(seed | 1);
    let mut now = 0u64;
    let mut link_free_ns = 0u64; // when the bottleneck finishes its queue
    let mut queue_samples = Vec::new();
    let mut pacing_trace = Vec::new();
    let mut bw_trace = Vec::new();
    let mut next_trace = 0u64;
    while now < duration_ns {
        // Earliest event over all flows: an ACK, a send, or a timeout.
        let mut best = (NEVER, 0usize, 0u8);
        for (i, f) in flows.iter_mut().enumerate() {
            if let Some(&(t, _)) = f.acks.front() {
                if t < best.0 {
                    best = (t, i, 0);
                }
            }
            if f.bytes_in_flight + MSS <= f.cc.window() {
                let mut t = match f.pacer.delay(at(now), MSS, f.cc.pacing_rate()) {
                    None => now,
                    Some(t) => now + (t - at(now)).as_nanos() as u64,
                };
                if let Some(src) = f.source.filter(|s| t >= s.bulk_until_ns) {
                    // Not before the application has produced the next datagram.
                    let need = f.source_sent + MSS;
                    if src.produced(t) < need {
                        let t0 = t.max(src.bulk_until_ns);
                        let by_rate = t0 + (need - src.produced(t0)) * 1_000_000_000 / src.rate.max(1) + 1;
                        let next_gop =
                            src.bulk_until_ns + ((t0 - src.bulk_until_ns) / src.gop_ns + 1) * src.gop_ns;
                        t = by_rate.min(next_gop).max(t);
                    }
                }
                if t < best.0 {
                    best = (t, i, 1);
                }
            }
            if !f.outstanding.is_empty() {
                let rto = f.last_progress_ns + (3 * f.srtt_ns).max(200_000_000);
                if rto < best.0 {
                    best = (rto, i, 2);
                }
            }
        }
        let (t, i, kind) = best;
        if t == NEVER {
            break;
        }
        now = now.max(t);
        while next_trace <= now {
            pacing_trace.push((next_trace, flows[0].cc.pacing_rate()));
            bw_trace.push((next_trace, flows[0].cc.stats().bandwidth_estimate_bytes_per_s));
            if std::env::var("POPLINE_TRACE").is_ok() && next_trace % 500_000_000 == 0 {
                let st: Vec<_> = flows
                    .iter()
                    .map(|f| (f.cc.stats(), f.srtt_ns / 1_000_000))
                    .collect();
                eprintln!("t={} {:?}", next_trace / 1_000_000, st);
            }
            next_trace += 10_000_000;
        }
        let f = &mut flows[i];
        match kind {
            1 => {
                let mut app_limited = false;
                if let Some(src) = f.source.filter(|s| now >= s.bulk_until_ns) {
                    if src.produced(now) < f.source_sent + MSS {
                        continue; // woke up early: the data is not there yet
                    }
                    f.source_sent += MSS;
                    app_limited = src.produced(now) < f.source_sent + MSS;
                }
                let pn = f.next_pn;
                f.next_pn += 1;
                let snapshot = f.cc.on_sent(&SentPacket {
                    now: at(now),
                    bytes: MSS,
                    bytes_in_flight: f.bytes_in_flight,
                    app_limited,
                });
                f.pacer.on_sent(at(now), MSS);
                f.bytes_in_flight += MSS;
                if f.outstanding.is_empty() {
                    f.last_progress_ns = now;
                }
                f.outstanding.push_back(Outstanding {
                    pn,
                    sent_ns: now,
                    snapshot,
                    acked: false,
                });
                if rng.next_f64() < path.loss {
                    continue; // random loss before the queue
                }
                let rate = path.rate_at(now);
                let backlog_ns = link_free_ns.saturating_sub(now);
                let backlog_bytes = (backlog_ns as u128 * rate as u128 / 1_000_000_000) as u64;
                if backlog_bytes + MSS > path.buffer_bytes {
                    continue; // tail drop
                }
                if now >= measure_from_ns {
                    queue_samples.push(backlog_ns);
                }
                let departure = link_free_ns.max(now) + MSS * 1_000_000_000 / rate;
                link_free_ns = departure;
                f.acks.push_back((departure + path.rtt_ns, pn));
            }
            0 => {
                let Some((_, pn)) = f.acks.pop_front() else {
                    continue;
                };
                let Some(base) = f.outstanding.front().map(|o| o.pn) else {
                    continue;
                };
                if pn < base {
                    continue; // already declared lost
                }
                let idx = (pn - base) as usize;
                let sent_ns = f.outstanding[idx].sent_ns;
                f.outstanding[idx].acked = true;
                let rtt_ns = now - sent_ns;
                f.min_rtt_ns = f.min_rtt_ns.min(rtt_ns);
                f.srtt_ns = if f.srtt_ns == 0 {
                    rtt_ns
                } else {
                    (7 * f.srtt_ns + rtt_ns) / 8
                };
                f.last_progress_ns = now;
                let acked = [AckedPacket {
                    sent_time: at(sent_ns),
                    bytes: MSS,
                    snapshot: f.outstanding[idx].snapshot,
                }];
                f.bytes_in_flight -= MSS;
                if now >= measure_from_ns {
                    f.acked_bytes_measured += MSS;
                }
                // Loss detection: packet threshold 3, time threshold 9/8 RTT, for packets older than this one.
                let time_threshold = 9 * f.srtt_ns.max(rtt_ns) / 8;
                let mut lost = Vec::new();
                for o in f.outstanding.iter_mut().take(idx) {
                    if !o.acked && (o.pn + 3 <= pn || o.sent_ns + time_threshold <= now) {
                        o.acked = true; // settled
                        lost.push(LostPacket {
                            sent_time: at(o.sent_ns),
                            bytes: MSS,
                        });
                    }
                }
                f.bytes_in_flight -= MSS * lost.len() as u64;
                while f.outstanding.front().is_some_and(|o| o.acked) {
                    f.outstanding.pop_front();
                }
                let rtt = RttSnapshot {
                    latest: Some(Duration::from_nanos(rtt_ns)),
                    min: Duration::from_nanos(f.min_rtt_ns),
                    smoothed: Duration::from_nanos(f.srtt_ns),
                };
                f.cc.on_ack(&AckEvent {
                    now: at(now),
                    acked: &acked,
                    lost: &lost,
                    rtt,
                    bytes_in_flight: f.bytes_in_flight,
                });
            }
            _ => {
                // Retransmission timeout: everything outstanding is lost.
                f.cc.on_retransmission_timeout(at(now));
                let lost: Vec<LostPacket> = f
                    .outstanding
                    .drain(..)
                    .filter(|o| !o.acked)
                    .map(|o| LostPacket {
                        sent_time: at(o.sent_ns),
                        bytes: MSS,
                    })
                    .collect();
                f.bytes_in_flight = 0;
                f.last_progress_ns = now;
                let rtt = RttSnapshot {
                    latest: None,
                    min: Duration::from_nanos(f.min_rtt_ns.min(path.rtt_ns)),
                    smoothed: Duration::from_nanos(f.srtt_ns.max(1)),
                };
                f.cc.on_ack(&AckEvent {
                    now: at(now),
                    acked: &[],
                    lost: &lost,
                    rtt,
                    bytes_in_flight: 0,
                });
            }
        }
    }
    let measured_s = (duration_ns - measure_from_ns) as f64 / 1e9;
    let goodput = flows
        .iter()
        .map(|f| f.acked_bytes_measured as f64 / measured_s)
        .collect();
    let window: Vec<u64> = pacing_trace
        .iter()
        .filter(|(t, _)| *t >= measure_from_ns)
        .map(|(_, r)| *r)
        .collect();
    let mean_pacing = window.iter().map(|r| *r as f64).sum::<f64>() / window.len().max(1) as f64;
    queue_samples.sort_unstable();
    let p95_queue_ns = queue_samples
        .get(queue_samples.len() * 95 / 100)
        .copied()
        .unwrap_or(0);
    Outcome {
        goodput,
        mean_pacing,
        pacing_trace,
        p95_queue_ns,
        bw_trace,
    }
}

const C_100_MBIT: u64 = 12_500_000;
const RTT_100_MS: u64 = 100_000_000;
const SECOND: u64 = 1_000_000_000;

fn popline() -> Flow {
    Flow::new(Box::new(Popline::new(Instant::now())))
}

fn single_flow(loss: f64, seed: u64) -> Outcome {
    let path = Path {
        rtt_ns: RTT_100_MS,
        loss,
        buffer_bytes: C_100_MBIT / 10,
        rates: vec![(0, C_100_MBIT)],
    };
    simulate(&path, vec![popline()], 20 * SECOND, 5 * SECOND, seed)
}

#[test]
fn converges_to_the_link_rate_under_random_loss() {
    let c = C_100_MBIT as f64;
    for (loss, min_pacing, min_goodput) in [
        (0.0, 0.9, 0.9),
        (0.01, 0.9, 0.9),
        (0.05, 0.9, 0.9),
        (0.10, 0.8, 0.75),
    ] {
        let o = single_flow(loss, 7);
        let pacing = o.mean_pacing / c;
        let goodput = o.goodput[0] / ((1.0 - loss) * c);
        eprintln!(
            "loss {loss}: pacing {pacing:.3} C, goodput {goodput:.3} (1-p)C, p95 queue {} ms",
            o.p95_queue_ns / 1_000_000
        );
        // Paced at up to C / (1 - p): the random loss thins it to C before the bottleneck, no queue builds.
        let offered = pacing * (1.0 - loss);
        assert!(
            pacing >= min_pacing && offered <= 1.1,
            "loss {loss}: pacing {pacing:.3} C"
        );
        assert!(goodput >= min_goodput, "loss {loss}: goodput {goodput:.3} (1-p)C");
    }
}

#[test]
fn keeps_the_queue_short_without_loss() {
    let o = single_flow(0.0, 3);
    eprintln!("p95 queue {:.1} ms", o.p95_queue_ns as f64 / 1e6);
    assert!(o.p95_queue_ns <= 10_000_000, "p95 queue {} ns", o.p95_queue_ns);
}

#[test]
fn follows_a_rate_drop_within_ten_rtts() {
    let drop_at = 8 * SECOND;
    let path = Path {
        rtt_ns: RTT_100_MS,
        loss: 0.01,
        buffer_bytes: C_100_MBIT / 10,
        rates: vec![(0, C_100_MBIT), (drop_at, C_100_MBIT * 6 / 10)],
    };
    let o = simulate(&path, vec![popline()], 14 * SECOND, 10 * SECOND, 11);
    let new_rate = C_100_MBIT as f64 * 0.6;
    let followed = o
        .pacing_trace
        .iter()
        .find(|(t, r)| *t >= drop_at && (*r as f64) <= new_rate * 1.1)
        .map(|(t, _)| t - drop_at);
    eprintln!(
        "rate drop followed after {:?} ms; later mean pacing {:.3} x new rate",
        followed.map(|t| t / 1_000_000),
        o.mean_pacing / new_rate
    );
    let followed = followed.expect("pacing never followed the drop");
    assert!(followed <= 10 * RTT_100_MS, "followed after {followed} ns");
    let mean = o.mean_pacing / new_rate;
    assert!((0.85..=1.15).contains(&mean), "mean pacing {mean:.3} x new rate");
}

#[test]
fn shares_with_cubic() {
    for rtt_ms in [20u64, 50, 100] {
        // One BDP of buffer, no random loss.
        let buffer_bytes = C_100_MBIT * rtt_ms / 1_000;
        let path = Path {
            rtt_ns: rtt_ms * 1_000_000,
            loss: 0.0,
            buffer_bytes,
            rates: vec![(0, C_100_MBIT)],
        };
        let flows = vec![popline(), Flow::new(Box::new(Cubic::new(Instant::now())))];
        let o = simulate(&path, flows, 40 * SECOND, 10 * SECOND, 5);
        let ratio = o.goodput[0] / o.goodput[1];
        eprintln!(
            "rtt {rtt_ms} ms: popline {:.1} Mbit/s, cubic {:.1} Mbit/s, ratio {ratio:.2}",
            o.goodput[0] * 8e-6,
            o.goodput[1] * 8e-6
        );
        assert!(
            (0.5..=2.0).contains(&ratio),
            "rtt {rtt_ms} ms: popline/cubic = {ratio:.2}"
        );
    }
}

#[test]
fn retransmission_timeout_holds_the_window_until_an_ack() {
    let t0 = Instant::now();
    let mut c = Popline::new(t0);
    assert_eq!(c.window(), INITIAL_CWND_PACKETS * MSS);
    c.on_retransmission_timeout(t0 + Duration::from_secs(1));
    assert_eq!(c.window(), MIN_CWND_PACKETS * MSS);
    assert_eq!(c.stats().congestion_events, 1);
}

/// A live stream after bulk warm-up: 6 Mbit/s with a 300 kB keyframe every 2 s, app-limited except in the
/// keyframe bursts (which fit in one round trip, so even those samples are app-limited).
fn live_source(bulk_until_ns: u64) -> Source {
    Source {
        bulk_until_ns,
        rate: 750_000,
        keyframe_bytes: 300_000,
        gop_ns: 2 * SECOND,
    }
}

#[test]
fn app_limited_rounds_keep_the_bandwidth_estimate() {
    let warmup = 5 * SECOND;
    let path = Path {
        rtt_ns: RTT_100_MS,
        loss: 0.03,
        buffer_bytes: C_100_MBIT / 10,
        rates: vec![(0, C_100_MBIT)],
    };
    let mut flow = popline();
    flow.source = Some(live_source(warmup));
    let o = simulate(&path, vec![flow], 25 * SECOND, warmup, 21);
    let at_warmup_end = o.bw_trace.iter().find(|(t, _)| *t >= warmup).map_or(0, |r| r.1);
    let lowest = o
        .bw_trace
        .iter()
        .filter(|(t, _)| *t >= warmup)
        .map(|r| r.1)
        .min()
        .unwrap_or(0);
    eprintln!(
        "estimate at the end of warm-up {:.1} Mbit/s, lowest while app-limited {:.1} Mbit/s",
        at_warmup_end as f64 * 8e-6,
        lowest as f64 * 8e-6
    );
    assert!(at_warmup_end as f64 >= 0.8 * C_100_MBIT as f64);
    // Twenty seconds of app-limited rounds: the estimate is what the last path-limited rounds measured.
    assert!(lowest >= at_warmup_end * 9 / 10, "estimate fell to {lowest} B/s");
}

#[test]
fn probing_escalates_when_the_rate_comes_back() {
    // A bulk flow settled on a 3.6 Mbit/s path (a squeezed link) that goes back to 100 Mbit/s.
    let squeezed = 450_000;
    let restore = 8 * SECOND;
    let path = Path {
        rtt_ns: RTT_100_MS,
        loss: 0.01,
        buffer_bytes: squeezed / 10,
        rates: vec![(0, squeezed), (restore, C_100_MBIT)],
    };
    let o = simulate(&path, vec![popline()], 14 * SECOND, 10 * SECOND, 31);
    let before = o
        .bw_trace
        .iter()
        .filter(|(t, _)| *t + SECOND / 2 >= restore && *t < restore)
        .map(|r| r.1)
        .max()
        .unwrap_or(0);
    let recovered = o
        .bw_trace
        .iter()
        .find(|(t, bw)| *t >= restore && *bw as f64 >= 0.8 * C_100_MBIT as f64)
        .map(|(t, _)| t - restore);
    eprintln!(
        "estimate {:.1} Mbit/s before, back to 80 % of 100 Mbit/s after {:?} ms",
        before as f64 * 8e-6,
        recovered.map(|t| t / 1_000_000)
    );
    assert!(
        before <= squeezed * 3 / 2,
        "not settled on the squeezed rate: {before} B/s"
    );
    let recovered = recovered.expect("never recovered");
    // Without escalation one 25 ms probe per 8-RTT cycle gains a few percent: 28x would take minutes.
    assert!(recovered <= 20 * RTT_100_MS, "recovered after {recovered} ns");
    let later_max = o
        .bw_trace
        .iter()
        .filter(|(t, _)| *t >= restore)
        .map(|r| r.1)
        .max()
        .unwrap_or(0);
    assert!(
        (later_max as f64) <= 1.3 * C_100_MBIT as f64,
        "estimate overshot to {later_max} B/s"
    );
    // Then steady again: the queue stays short.
    eprintln!("p95 queue after recovery {:.1} ms", o.p95_queue_ns as f64 / 1e6);
    assert!(o.p95_queue_ns <= 10_000_000, "p95 queue {} ns", o.p95_queue_ns);
}
