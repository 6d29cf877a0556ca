//! `popline-bench transport`: the encrypted popline transport over [`relay::link::TransportDriver`] on loopback,
//! bulk, with 1 and N connections in the same run.
//!
//! Each connection is a client driver thread and a server driver thread on their own sockets (one thread
//! per side per connection for now; the thread-per-core engine will put several on one core). The client
//! keeps its send queue topped up with big frames that have no deadline, as `transport::sim::scenario`'s
//! bulk mode does (through `Connection::unsent_bytes`), and the server counts the frame bytes delivered.
//! After a warm-up (handshake, congestion-control ramp) the delivered bytes and the process's CPU time are
//! sampled over the measured window.
//!
//! The `quinn` variant is the baseline of issue 5: quinn set up as its `perf` tool does (GSO, large
//! windows, one bulk unidirectional stream per connection, the same payload size, in the same run), in
//! [`crate::quinn_baseline`], with the same warm-up, window and CPU accounting.

use crate::quinn_baseline;

use crate::cpu::process_cpu_seconds;
use crate::engine_args::{self, EngineArgs, EngineKnobs};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use engine::{BackendChoice, IoConfig, UdpConfig};
use relay::link::{CoresConfig, DriverConfig, DriverStats, TransportCores, TransportDriver};
use serde::Serialize;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};
use transport::crypto::StaticKeypair;
use transport::{ConnectionStats, Endpoint, EndpointConfig, Event, MediaFrame, MediaKind, StreamId};

/// How long a connection may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often driver threads look at the stop flag (at most).
const TICK: Duration = Duration::from_millis(5);
/// The stream the bulk frames travel on.
const BULK_STREAM: StreamId = StreamId(0);

/// Arguments of `popline-bench transport`.
#[derive(Debug, Args)]
pub struct TransportArgs {
    /// Seconds measured per run (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of transfer before measuring (handshake and congestion-control ramp-up).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Connection counts to run, comma-separated.
    #[arg(long, default_value = "1,2")]
    connections: String,
    /// Bytes per bulk frame.
    #[arg(long, default_value_t = 256 * 1024)]
    frame_bytes: usize,
    /// The popline rows' `max_datagram_bytes`. The default is quinn's: its MTU discovery goes up to 1452 bytes
    /// and reaches that on loopback (the quinn row reports the MTU it reached), so both carry the same UDP
    /// payload size. popline's own default (1400) leaves room for tunnels a PoP link may have.
    #[arg(long, default_value_t = QUINN_MAX_DATAGRAM_BYTES)]
    datagram_bytes: usize,
    /// Variants, comma-separated: `popline` (encrypted, io_uring with GSO/GRO), `popline-epoll` (the epoll
    /// backend with GSO/GRO), `popline-nogso` (io_uring, one datagram per send), `popline-plaintext`
    /// (encryption off, for the cost of the AEAD), `quinn` (the baseline: quinn with rustls, set up as its
    /// `perf` tool).
    #[arg(long, default_value = "popline")]
    variants: String,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
    /// Engine knobs for the popline variants (override the variant's backend and offloads).
    #[command(flatten)]
    engine: EngineArgs,
}

/// quinn's MTU discovery upper bound (`MtuDiscoveryConfig`'s default, not readable through its API).
pub const QUINN_MAX_DATAGRAM_BYTES: usize = 1452;

/// A transport under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The popline transport, encrypted (the default and the one the targets are about).
    Popline,
    /// The popline transport with encryption turned off (an experiment: the AEAD's share of the cost).
    PoplinePlaintext,
    /// The popline transport on the engine's epoll backend (GSO/GRO on).
    PoplineEpoll,
    /// The popline transport on io_uring without GSO/GRO (one datagram per send).
    PoplineNoGso,
    /// quinn over rustls (ring), one bulk unidirectional stream per connection: the baseline.
    Quinn,
}

impl Variant {
    /// The name in the CLI and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Popline => "popline",
            Variant::PoplinePlaintext => "popline-plaintext",
            Variant::PoplineEpoll => "popline-epoll",
            Variant::PoplineNoGso => "popline-nogso",
            Variant::Quinn => quinn_baseline::VARIANT_NAME,
        }
    }

    /// The engine IO setup of a popline variant.
    pub fn io_config(self) -> IoConfig {
        let (backend, offload) = match self {
            Variant::PoplineEpoll => (BackendChoice::Epoll, true),
            Variant::PoplineNoGso => (BackendChoice::Uring, false),
            _ => (BackendChoice::Auto, true),
        };
        IoConfig {
            backend,
            gso: offload,
            gro: offload,
            ..IoConfig::default()
        }
    }

    /// Parses a variant name.
    pub fn parse(s: &str) -> Result<Variant> {
        match s {
            "popline" => Ok(Variant::Popline),
            "popline-plaintext" => Ok(Variant::PoplinePlaintext),
            "popline-epoll" => Ok(Variant::PoplineEpoll),
            "popline-nogso" => Ok(Variant::PoplineNoGso),
            "quinn" => Ok(Variant::Quinn),
            _ => bail!(
                "unknown variant {s:?}: popline, popline-epoll, popline-nogso, popline-plaintext, quinn"
            ),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct TransportReport {
    /// `popline`, `popline-plaintext` or `quinn`.
    pub variant: &'static str,
    /// Connections in parallel.
    pub connections: usize,
    /// Frame payload delivered, in Gbit/s (1e9 bits), all connections together.
    pub gbps: f64,
    /// CPU seconds (user + system, every thread of both sides) per GB (1e9 bytes) delivered.
    pub cpu_s_per_gb: f64,
    /// Bytes per bulk frame.
    pub frame_bytes: usize,
    /// Length of the measured window, in seconds.
    pub seconds: f64,
    /// CPU seconds used in the window.
    pub cpu_s: f64,
    /// Frame bytes delivered in the window.
    pub bytes: u64,
    /// Packets the senders declared lost (whole run, all connections).
    pub packets_lost: u64,
    /// Packets the senders sent (whole run, all connections).
    pub packets_sent: u64,
    /// UDP payload bytes of a full-size datagram: popline's `ConnectionConfig::full_packet_bytes`, quinn's
    /// path MTU at the end (its MTU discovery goes up to 1452 bytes).
    pub datagram_bytes: usize,
    /// Packets the senders received (ACKs) per packet they sent (whole run): the receiver's ACK rate, which
    /// costs the sender a receive and an AEAD open per ACK.
    pub acks_per_packet: f64,
    /// Times a sender's socket buffer was full (whole run); absent for `quinn`, which does not count it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_blocked: Option<u64>,
    /// Smoothed RTT of the first connection at the end, in microseconds.
    pub srtt_us: u64,
    /// Datagrams sent per sender driver loop iteration (whole run, all connections): low values mean the
    /// sender wakes often for little work (pacer or ACK clocked), high values mean it sends in bursts.
    /// Absent for `quinn`, whose driver loop is tokio's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datagrams_per_iteration: Option<f64>,
    /// Datagrams per send call (a GSO batch), senders only: the kernel's send path costs per call, so the
    /// fuller the batches the fewer CPU seconds per GB. Absent for `quinn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datagrams_per_batch: Option<f64>,
    /// The backend the popline server cores ran on (`uring`, `epoll`); absent for `quinn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// The engine knobs of the popline variants; absent for `quinn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineKnobs>,
}

/// Runs `popline-bench transport`.
pub fn run(args: &TransportArgs) -> Result<()> {
    let variants = args
        .variants
        .split(',')
        .map(|v| Variant::parse(v.trim()))
        .collect::<Result<Vec<_>>>()?;
    let counts = args
        .connections
        .split(',')
        .map(|c| {
            c.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| anyhow!("bad --connections entry {c:?}: 1..=64"))
        })
        .collect::<Result<Vec<_>>>()?;
    let seconds = positive_duration(args.seconds, "--seconds")?;
    let warmup = Duration::try_from_secs_f64(args.warmup).map_err(|_| anyhow!("bad --warmup"))?;
    let mut reports = Vec::new();
    for &v in &variants {
        for &n in &counts {
            let r = measure_with(
                v,
                n,
                (args.frame_bytes, args.datagram_bytes),
                warmup,
                seconds,
                &args.engine,
            )
            .with_context(|| format!("{} with {n} connection(s)", v.name()))?;
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
            }
            reports.push(r);
        }
    }
    if !args.json {
        print_table(&reports);
    }
    Ok(())
}

/// Waits out `warmup`, then samples delivered bytes, process CPU and time over `window`: returns the bytes
/// delivered, the CPU seconds spent and the seconds elapsed in the window.
pub(crate) fn sample_window(
    delivered: &AtomicU64,
    warmup: Duration,
    window: Duration,
) -> Result<(u64, f64, f64)> {
    thread::sleep(warmup);
    let (b0, c0, t0) = (
        delivered.load(Ordering::Relaxed),
        process_cpu_seconds()?,
        Instant::now(),
    );
    thread::sleep(window);
    let (b1, c1, t1) = (
        delivered.load(Ordering::Relaxed),
        process_cpu_seconds()?,
        Instant::now(),
    );
    Ok((b1 - b0, c1 - c0, (t1 - t0).as_secs_f64()))
}

/// Joins every client thread (collecting its summary) and every server thread; returns the summaries and the
/// first error any of them met. `what` prefixes the panic messages (e.g. `"quinn "`).
pub(crate) fn join_all<S, T>(
    clients: Vec<thread::JoinHandle<Result<S>>>,
    servers: Vec<thread::JoinHandle<Result<T>>>,
    what: &str,
) -> (Vec<S>, Option<anyhow::Error>) {
    let mut summaries = Vec::new();
    let mut first_err = None;
    for c in clients {
        match c
            .join()
            .map_err(|_| anyhow!("{what}client thread panicked"))
            .and_then(|r| r)
        {
            Ok(s) => summaries.push(s),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    for s in servers {
        if let Err(e) = s
            .join()
            .map_err(|_| anyhow!("{what}server thread panicked"))
            .and_then(|r| r)
        {
            first_err.get_or_insert(e);
        }
    }
    (summaries, first_err)
}

/// `count` per `unit` (0 units count as 1: a run that sent nothing reports 0, not NaN).
pub(crate) fn per(count: u64, units: u64) -> f64 {
    count as f64 / units.max(1) as f64
}

fn positive_duration(s: f64, name: &str) -> Result<Duration> {
    if !(s > 0.0 && s.is_finite()) {
        bail!("{name} must be positive");
    }
    Ok(Duration::from_secs_f64(s))
}

fn print_table(reports: &[TransportReport]) {
    println!(
        "{:<18} {:>5} {:>8} {:>10} {:>9} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "variant",
        "conns",
        "Gbit/s",
        "cpu s/GB",
        "lost",
        "blocked",
        "srtt us",
        "dgram/it",
        "dgram/gso",
        "ack/pkt"
    );
    for r in reports {
        println!(
            "{:<18} {:>5} {:>8.2} {:>10.2} {:>8.3}% {:>8} {:>8} {:>9} {:>9} {:>8.3}",
            r.variant,
            r.connections,
            r.gbps,
            r.cpu_s_per_gb,
            if r.packets_sent > 0 {
                r.packets_lost as f64 * 100.0 / r.packets_sent as f64
            } else {
                0.0
            },
            r.send_blocked.map_or_else(|| "-".to_string(), |b| b.to_string()),
            r.srtt_us,
            r.datagrams_per_iteration
                .map_or_else(|| "-".to_string(), |d| format!("{d:.1}")),
            r.datagrams_per_batch
                .map_or_else(|| "-".to_string(), |d| format!("{d:.1}")),
            r.acks_per_packet
        );
    }
    println!(
        "(Gbit/s of frame payload delivered; cpu over every thread of both ends; loopback, same process)"
    );
}

/// What a client thread reports when it ends.
#[derive(Debug, Clone)]
struct ClientSummary {
    conn: Option<ConnectionStats>,
    driver: DriverStats,
}

/// Runs `connections` bulk connections of `variant` on loopback, sending frames of `frame_bytes` in
/// datagrams of at most `datagram_bytes` (popline; quinn finds its own): `warmup`, then `window` measured,
/// with `engine_args` on top of the variant's own engine setup.
pub fn measure_with(
    variant: Variant,
    connections: usize,
    (frame_bytes, datagram_bytes): (usize, usize),
    warmup: Duration,
    window: Duration,
    engine_args: &EngineArgs,
) -> Result<TransportReport> {
    if frame_bytes == 0 {
        bail!("--frame-bytes must be positive");
    }
    if !(1200..=engine::offload::MAX_UDP_PAYLOAD).contains(&datagram_bytes) {
        bail!(
            "--datagram-bytes must be 1200..={}",
            engine::offload::MAX_UDP_PAYLOAD
        );
    }
    if variant == Variant::Quinn {
        // The baseline has its own module; the popline variants run on the engine below.
        return quinn_baseline::measure(connections, frame_bytes, warmup, window);
    }
    let encryption = variant != Variant::PoplinePlaintext;
    // The clients and server below keep the default connection config but for these two.
    let connection = transport::ConnectionConfig {
        encryption,
        max_datagram_bytes: datagram_bytes,
        ..transport::ConnectionConfig::default()
    };
    let full_packet_bytes = connection.full_packet_bytes();
    let mut driver_cfg = DriverConfig {
        io: variant.io_config(),
        ..DriverConfig::default()
    };
    let mut udp_cfg = UdpConfig::default();
    engine_args.apply(&mut driver_cfg, &mut udp_cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    let mut clients = Vec::new();

    // The receiving side: one endpoint per core on one shared port (thread per core, SO_REUSEPORT), as a
    // PoP runs it; as many cores as connections, up to the CPUs this process may use.
    let server_key = StaticKeypair::generate()?;
    let server_pub = server_key.public;
    let client_keys = (0..connections)
        .map(|_| StaticKeypair::generate())
        .collect::<Result<Vec<_>, _>>()?;
    let client_pubs: Vec<[u8; 32]> = client_keys.iter().map(|k| k.public).collect();
    let cpus = engine::affinity::allowed_cpus()?.len().max(1);
    let server_cores = connections.clamp(1, cpus);
    let delivered_s = delivered.clone();
    let server_connection = connection.clone();
    let mut server = TransportCores::start(
        loopback(),
        CoresConfig {
            cores: server_cores,
            // The clients share these CPUs: let the scheduler place both.
            pin: false,
            driver: driver_cfg,
            udp: udp_cfg,
            ..CoresConfig::default()
        },
        move |_core| {
            let mut cfg = EndpointConfig::new(server_key.clone());
            cfg.authorized_peers = client_pubs.clone();
            cfg.connection = server_connection.clone();
            let ep = Endpoint::new(cfg, Instant::now()).map_err(std::io::Error::other)?;
            let delivered = delivered_s.clone();
            Ok((ep, move |_: &mut Endpoint, _, e: Event| match e {
                Event::Frame(f) => {
                    delivered.fetch_add(f.bytes.len() as u64, Ordering::Relaxed);
                }
                Event::Closed { reason } => tracing::warn!(?reason, "benchmark connection closed"),
                _ => {}
            }))
        },
    )?;
    let server_addr = server.local_addr();

    let started = (|| -> Result<()> {
        for (i, client_key) in client_keys.into_iter().enumerate() {
            let mut client_cfg = EndpointConfig::new(client_key);
            client_cfg.accept_incoming = false;
            client_cfg.connection = connection.clone();
            let (stop_c, ready) = (stop.clone(), ready_tx.clone());
            clients.push(thread::Builder::new().name(format!("cli-{i}")).spawn(move || {
                run_client(
                    client_cfg,
                    (driver_cfg, udp_cfg),
                    server_addr,
                    server_pub,
                    frame_bytes,
                    &stop_c,
                    ready,
                )
            })?);
        }
        for _ in 0..connections {
            ready_rx
                .recv_timeout(HANDSHAKE_TIMEOUT * 2)
                .map_err(|_| anyhow!("a connection did not become ready"))??;
        }
        Ok(())
    })();

    let window_result = started.and_then(|()| sample_window(&delivered, warmup, window));
    stop.store(true, Ordering::Release);

    let servers: Vec<thread::JoinHandle<Result<()>>> = Vec::new();
    let (summaries, mut first_err) = join_all(clients, servers, "");
    let core_reports = server.stop();
    let backend = core_reports.first().map(|r| r.backend.name());
    for r in core_reports {
        if let Some(e) = r.error {
            first_err.get_or_insert(anyhow!("server core {}: {e}", r.core));
        }
    }
    let (bytes, cpu_s, seconds) = window_result?;
    if let Some(e) = first_err {
        return Err(e);
    }
    let gb = bytes as f64 / 1e9;
    let conn_sum = |f: fn(&ConnectionStats) -> u64| -> u64 {
        summaries.iter().filter_map(|s| s.conn.as_ref()).map(f).sum()
    };
    let driver_sum = |f: fn(&DriverStats) -> u64| -> u64 { summaries.iter().map(|s| f(&s.driver)).sum() };
    let packets_sent = conn_sum(|c| c.packets_sent);
    let datagrams_sent = driver_sum(|d| d.datagrams_sent);
    Ok(TransportReport {
        variant: variant.name(),
        connections,
        gbps: gb * 8.0 / seconds.max(1e-9),
        cpu_s_per_gb: if gb > 0.0 { cpu_s / gb } else { f64::INFINITY },
        frame_bytes,
        seconds,
        cpu_s,
        bytes,
        packets_lost: conn_sum(|c| c.packets_lost),
        packets_sent,
        datagram_bytes: full_packet_bytes,
        acks_per_packet: per(conn_sum(|c| c.packets_received), packets_sent),
        send_blocked: Some(driver_sum(|d| d.send_blocked)),
        srtt_us: summaries
            .first()
            .and_then(|s| s.conn.as_ref())
            .map_or(0, |c| c.rtt.as_micros() as u64),
        datagrams_per_iteration: Some(per(datagrams_sent, driver_sum(|d| d.iterations))),
        datagrams_per_batch: Some(per(datagrams_sent, driver_sum(|d| d.send_batches))),
        backend,
        engine: Some(engine_args::knobs(&driver_cfg, &udp_cfg)),
    })
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn bind(cfg: EndpointConfig, (driver, udp): (DriverConfig, UdpConfig)) -> Result<TransportDriver> {
    let ep = Endpoint::new(cfg, Instant::now())?;
    Ok(TransportDriver::bind(loopback(), &udp, ep, driver)?)
}

/// Connects `d` to `server` and runs it until the handshake completes (or fails, or times out).
pub(crate) fn handshake(
    d: &mut TransportDriver,
    server: SocketAddr,
    server_pub: [u8; 32],
) -> Result<transport::ConnectionHandle> {
    let ch = d.endpoint_mut().connect(Instant::now(), server, server_pub)?;
    let mut closed = None;
    let ok = d.run_until(Instant::now() + HANDSHAKE_TIMEOUT, |_, _, e| match e {
        Event::Connected { .. } => ControlFlow::Break(()),
        Event::Closed { reason } => {
            closed = Some(reason);
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })?;
    if let Some(reason) = closed {
        bail!("handshake failed: {reason:?}");
    }
    if !ok {
        bail!("handshake timed out");
    }
    Ok(ch)
}

/// Queues bulk frames of `payload` (shared, not copied) on `stream` until `target` bytes are unsent.
pub(crate) fn top_up(
    d: &mut TransportDriver,
    ch: transport::ConnectionHandle,
    stream: StreamId,
    payload: &Bytes,
    target: u64,
) {
    let mut unsent = d.endpoint().connection(ch).map_or(u64::MAX, |c| c.unsent_bytes());
    while unsent < target {
        let frame = MediaFrame {
            kind: MediaKind::Key,
            bytes: payload.clone(),
            capture: Instant::now(),
            budget: None,
        };
        if d.endpoint_mut().send_frame(ch, stream, frame).is_err() {
            break;
        }
        unsent += payload.len() as u64;
    }
}

/// The sending side: connects, reports ready, and keeps the send queue topped up with bulk frames.
fn run_client(
    cfg: EndpointConfig,
    io: (DriverConfig, UdpConfig),
    server: SocketAddr,
    server_pub: [u8; 32],
    frame_bytes: usize,
    stop: &AtomicBool,
    ready: mpsc::Sender<Result<()>>,
) -> Result<ClientSummary> {
    let connected = (|| -> Result<(TransportDriver, transport::ConnectionHandle)> {
        let mut d = bind(cfg, io)?;
        let ch = handshake(&mut d, server, server_pub)?;
        Ok((d, ch))
    })();
    let (mut d, ch) = match connected {
        Ok(x) => {
            let _ = ready.send(Ok(()));
            x
        }
        Err(e) => {
            let _ = ready.send(Err(anyhow!("{e:#}")));
            return Err(e);
        }
    };

    let payload = Bytes::from(vec![0xb0u8; frame_bytes]);
    // Enough queued that the sender never runs dry between two top-ups (one per loop iteration).
    let target = (4 * frame_bytes as u64).max(4 << 20);
    while !stop.load(Ordering::Acquire) {
        top_up(&mut d, ch, BULK_STREAM, &payload, target);
        d.poll(TICK)?;
        while let Some((_, e)) = d.poll_event() {
            if let Event::Closed { reason } = e {
                bail!("client side closed: {reason:?}");
            }
        }
    }
    Ok(ClientSummary {
        conn: d.endpoint().connection_stats(ch),
        driver: d.stats(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_two_connections_move_data_on_loopback() {
        let _turn = crate::HEAVY_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let none = EngineArgs::default();
        for (v, n) in [
            (Variant::Popline, 1),
            (Variant::Popline, 2),
            (Variant::PoplineEpoll, 1),
        ] {
            let r = measure_with(
                v,
                n,
                (64 * 1024, QUINN_MAX_DATAGRAM_BYTES),
                Duration::from_millis(100),
                Duration::from_millis(300),
                &none,
            )
            .unwrap();
            assert!(r.bytes > 0, "{r:?}");
            assert!(r.gbps > 0.0, "{r:?}");
            assert_eq!(r.connections, n);
            let expected = if v == Variant::PoplineEpoll {
                "epoll"
            } else {
                "uring"
            };
            assert_eq!(r.backend, Some(expected), "{r:?}");
            let json = serde_json::to_value(&r).unwrap();
            assert!(json["engine"]["gso"].as_bool().unwrap(), "{json}");
        }
        assert_eq!(Variant::parse("quinn").unwrap(), Variant::Quinn);
        assert!(Variant::parse("tcp").is_err());
        assert_eq!(Variant::parse("popline").unwrap(), Variant::Popline);
        // The baseline, through the same dispatch as the CLI: a fraction of a second must move data.
        let q = measure_with(
            Variant::Quinn,
            2,
            (64 * 1024, QUINN_MAX_DATAGRAM_BYTES),
            Duration::from_millis(100),
            Duration::from_millis(300),
            &none,
        )
        .unwrap();
        assert!(q.bytes > 0, "{q:?}");
        assert_eq!((q.variant, q.connections), ("quinn", 2));
        let json = serde_json::to_value(&q).unwrap();
        for key in ["variant", "connections", "gbps", "cpu_s_per_gb"] {
            assert!(json.get(key).is_some(), "{json}");
        }
    }
}
