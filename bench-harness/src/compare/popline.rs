//! The popline transport across the emulated path: a `transport::Endpoint` on an [`relay::link::TransportDriver`]
//! per side, encrypted, the default (model-based) congestion control, set up as `popline-bench transport` does.
//!
//! Bulk: the sender keeps its send queue topped up with 256 KiB frames that have no deadline; the receiver
//! counts the frame bytes delivered. Live: the sender hands each frame to `send_frame` with its kind, capture
//! time and the run's budget, so the transport may drop what can no longer arrive in time (whole frames,
//! GOP-aware); after the last capture it keeps driving the connection for the drain period, so repairs still go
//! out. The receiver stamps each frame the transport delivers.
//!
//! Primed (`popline-primed`): before the stream, the sender keeps the queue topped up for the live warm-up
//! with low-priority bulk on another stream (disposable frames whose budget ends one RTT before the stream
//! starts, so they are gone from the path when the first keyframe comes), as `transport::sim::scenario`'s
//! live warm-up does; the receiver ignores that stream.

use super::live::{Arrivals, LiveStream, SentFrame};
use super::ns_thread::{join, spawn_in};
use super::run::{bulk_window, LiveTimeline, Outcome, RunSpec};
use super::Mode;
use crate::emulate::{ADDR_A, ADDR_B};
use crate::transport_bench::{handshake, top_up};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use engine::uring::WaitBatch;
use engine::UdpConfig;
use relay::link::{DriverConfig, TransportDriver};
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use transport::crypto::StaticKeypair;
use transport::{ConnectionHandle, Endpoint, EndpointConfig, Event, MediaFrame, MediaKind, StreamId};

/// How long the handshake may take (a lossy path can lose a handshake packet or two).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a driver thread's wait may last when nothing arrives and no timer of the transport is due: how
/// often an idle thread looks at the stop flag (and the bulk sender at its queue), as the TCP baseline's
/// blocked reads and writes do (its `IO_TIMEOUT`). The driver wakes for datagrams and the transport's timers
/// on its own; a shorter tick only adds wake-ups (it was 5 ms: 200 a second per thread, charged to popline).
const TICK: Duration = Duration::from_millis(100);
/// Bytes per bulk frame (as `popline-bench transport`).
const BULK_FRAME_BYTES: usize = 256 * 1024;
/// The stream the frames travel on.
const STREAM: StreamId = StreamId(0);
/// The stream the priming traffic travels on.
const PRIME_STREAM: StreamId = StreamId(1);

/// Runs the popline variant; `primed`: with bulk traffic on the connection before a live stream.
pub fn run(spec: &RunSpec<'_>, primed: bool) -> Result<Outcome> {
    let server_key = StaticKeypair::generate()?;
    let server_pub = server_key.public;
    // Datagrams as large as the path takes (IPv4 + UDP headers under the MTU), as TCP's segments are: a PoP
    // link's MTU is known, and the transport's 1400-byte default leaves room for tunnels this path has not.
    let datagram = usize::from(spec.mtu).saturating_sub(28).max(1200);
    let client_key = StaticKeypair::generate()?;
    let mut server_cfg = EndpointConfig::new(server_key);
    server_cfg.authorized_peers = vec![client_key.public];
    server_cfg.connection.max_datagram_bytes = datagram;
    spec.popline_tuning.apply(&mut server_cfg.connection);
    let mut client_cfg = EndpointConfig::new(client_key);
    client_cfg.accept_incoming = false;
    client_cfg.connection.max_datagram_bytes = datagram;
    spec.popline_tuning.apply(&mut client_cfg.connection);
    let note = spec.popline_tuning.note();

    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let mode = spec.mode;
    let batch = spec.popline_tuning.wait_batch;
    let receiver = {
        let (stop, delivered) = (stop.clone(), delivered.clone());
        spawn_in(&spec.lab.ns_b, "popline-recv", move || {
            receive(server_cfg, batch, mode, addr_tx, &stop, &delivered)
        })?
    };
    let Ok(server) = addr_rx.recv_timeout(HANDSHAKE_TIMEOUT) else {
        stop.store(true, Ordering::Release);
        let _ = join(receiver, "popline receiver")?;
        bail!("the popline receiver did not start");
    };
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let sender = {
        let stop = stop.clone();
        let (epoch, bitrate, warmup, window, budget) = (
            spec.epoch,
            spec.bitrate_bps,
            spec.warmup,
            spec.window,
            spec.budget,
        );
        let drain = spec.drain();
        let prime = primed.then_some((warmup, spec.rtt));
        spawn_in(&spec.lab.ns_a, "popline-send", move || {
            let (mut d, ch) = connect(client_cfg, batch, server, server_pub)?;
            let _ = ready_tx.send(());
            match mode {
                Mode::Bulk => send_bulk(&mut d, ch, &stop).map(|()| None),
                Mode::Live => {
                    if let Some((length, rtt)) = prime {
                        send_priming(&mut d, ch, length, rtt)?;
                    }
                    let start = Instant::now();
                    let timeline = LiveTimeline::starting(start, warmup, window);
                    let stream = LiveStream::new(bitrate, epoch, start);
                    send_live(&mut d, ch, stream, timeline, budget, drain).map(|sent| Some((timeline, sent)))
                }
            }
        })?
    };
    let connected = ready_rx.recv_timeout(HANDSHAKE_TIMEOUT + Duration::from_secs(1));
    let window = match (connected, mode) {
        (Ok(()), Mode::Bulk) => Ok(Some(bulk_window(&delivered, spec.warmup, spec.window))),
        (Ok(()), Mode::Live) => Ok(None),
        (Err(_), _) => Err(anyhow!("the popline sender did not connect")),
    };
    if window.is_err() || mode == Mode::Bulk {
        stop.store(true, Ordering::Release);
    }
    let sent = join(sender, "popline sender");
    stop.store(true, Ordering::Release);
    let ((arrivals, total), recv_cpu) = join(receiver, "popline receiver")?;
    let (live, send_cpu) = sent?;
    let window = window?;
    let cpu_s = send_cpu + recv_cpu;
    match (window, live) {
        (Some((bytes, seconds)), _) => Ok(Outcome {
            window_bytes: bytes,
            window_s: seconds,
            total_bytes: total,
            cpu_s,
            live: None,
            note,
            delivered_at: Vec::new(),
        }),
        (None, Some((timeline, sent))) => Ok(Outcome {
            note,
            ..timeline.outcome(spec, &sent, &arrivals, total, cpu_s)
        }),
        (None, None) => bail!("the popline live sender returned no timeline"),
    }
}

fn bind(cfg: EndpointConfig, batch: Option<WaitBatch>, ip: &str) -> Result<TransportDriver> {
    let ip: IpAddr = ip.parse().with_context(|| format!("bad address {ip}"))?;
    let ep = Endpoint::new(cfg, Instant::now())?;
    // A PoP link runs on a node core's ring, which batches its waits by default (`[engine] wake_batch`).
    let mut driver = DriverConfig::default();
    driver.io.ring.batch = batch.unwrap_or(WaitBatch::PACED);
    Ok(TransportDriver::bind(
        SocketAddr::new(ip, 0),
        &UdpConfig::default(),
        ep,
        driver,
    )?)
}

/// Connects from namespace A to the receiver and completes the handshake.
fn connect(
    cfg: EndpointConfig,
    batch: Option<WaitBatch>,
    server: SocketAddr,
    server_pub: [u8; 32],
) -> Result<(TransportDriver, ConnectionHandle)> {
    let mut d = bind(cfg, batch, ADDR_A)?;
    let ch = handshake(&mut d, server, server_pub).context("popline")?;
    Ok((d, ch))
}

/// Keeps the send queue topped up with bulk frames until `stop`.
fn send_bulk(d: &mut TransportDriver, ch: ConnectionHandle, stop: &AtomicBool) -> Result<()> {
    let payload = Bytes::from(vec![0xb0u8; BULK_FRAME_BYTES]);
    let target = (4 * BULK_FRAME_BYTES as u64).max(4 << 20);
    while !stop.load(Ordering::Acquire) {
        top_up(d, ch, STREAM, &payload, target);
        d.poll(TICK)?;
        drain_events(d)?;
    }
    Ok(())
}

/// Priming: `length` of low-priority bulk whose frames expire one `rtt` before the end.
fn send_priming(
    d: &mut TransportDriver,
    ch: ConnectionHandle,
    length: Duration,
    rtt: Duration,
) -> Result<()> {
    let end = Instant::now() + length;
    let traffic_end = end.checked_sub(rtt).unwrap_or(end);
    let payload = Bytes::from(vec![0xb1u8; BULK_FRAME_BYTES]);
    let target = (4 * BULK_FRAME_BYTES as u64).max(4 << 20);
    while Instant::now() < end {
        let now = Instant::now();
        if now < traffic_end {
            let mut unsent = d.endpoint().connection(ch).map_or(u64::MAX, |c| c.unsent_bytes());
            while unsent < target {
                let frame = MediaFrame {
                    kind: MediaKind::Disposable,
                    bytes: payload.clone(),
                    capture: now,
                    budget: Some(traffic_end.saturating_duration_since(now)),
                };
                if d.endpoint_mut().send_frame(ch, PRIME_STREAM, frame).is_err() {
                    break;
                }
                unsent += BULK_FRAME_BYTES as u64;
            }
        }
        d.poll(TICK)?;
        drain_events(d)?;
    }
    Ok(())
}

/// Sends the live stream's frames as they are captured, then drives the connection through the drain.
fn send_live(
    d: &mut TransportDriver,
    ch: ConnectionHandle,
    mut stream: LiveStream,
    timeline: LiveTimeline,
    budget: Duration,
    drain: Duration,
) -> Result<Vec<SentFrame>> {
    let mut sent = Vec::new();
    let finish = timeline.end + drain;
    loop {
        let now = Instant::now();
        if now >= finish {
            break;
        }
        while stream.next_due() < timeline.end {
            let Some(f) = stream.poll(now) else { break };
            sent.push(SentFrame {
                seq: f.seq,
                capture: f.capture,
                len: f.bytes.len(),
            });
            let frame = MediaFrame {
                kind: f.kind,
                bytes: f.bytes,
                capture: f.capture,
                budget: Some(budget),
            };
            // A refused frame (queue full) is simply not delivered: the judge counts it as missing.
            let _ = d.endpoint_mut().send_frame(ch, STREAM, frame);
        }
        let next = if stream.next_due() < timeline.end {
            stream.next_due()
        } else {
            finish
        };
        d.poll(next.saturating_duration_since(Instant::now()).min(TICK))?;
        drain_events(d)?;
    }
    Ok(sent)
}

/// Handles the sender's events: a closed connection ends the run.
fn drain_events(d: &mut TransportDriver) -> Result<()> {
    while let Some((_, e)) = d.poll_event() {
        if let Event::Closed { reason } = e {
            bail!("popline sender's connection closed: {reason:?}");
        }
    }
    Ok(())
}

/// The receiving side, in namespace B: accepts one connection and takes its frames until `stop`.
fn receive(
    cfg: EndpointConfig,
    batch: Option<WaitBatch>,
    mode: Mode,
    addr_tx: mpsc::Sender<SocketAddr>,
    stop: &AtomicBool,
    delivered: &AtomicU64,
) -> Result<(Arrivals, u64)> {
    let mut d = bind(cfg, batch, ADDR_B)?;
    addr_tx
        .send(d.local_addr())
        .map_err(|_| anyhow!("the benchmark went away"))?;
    let mut arrivals = Arrivals::default();
    let mut total = 0u64;
    let mut failure: Option<anyhow::Error> = None;
    while !stop.load(Ordering::Acquire) {
        d.run_until(Instant::now() + TICK, |_, _, e| {
            match e {
                Event::Frame(f) if f.stream == PRIME_STREAM.0 => {}
                Event::Frame(f) => {
                    total += f.bytes.len() as u64;
                    match mode {
                        Mode::Bulk => {
                            delivered.fetch_add(f.bytes.len() as u64, Ordering::Relaxed);
                        }
                        Mode::Live => {
                            if let Err(e) = arrivals.record_frame(&f.bytes, Instant::now()) {
                                failure = Some(e);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                }
                Event::Closed { reason } => {
                    failure = Some(anyhow!("popline receiver's connection closed: {reason:?}"));
                    return ControlFlow::Break(());
                }
                Event::Connected { .. } | Event::Gap(_) => {}
            }
            ControlFlow::Continue(())
        })?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    Ok((arrivals, total))
}
