//! `popline-bench udp`: a UDP blast on loopback, one sender thread to one receiver thread, for each IO
//! variant in the same run, so that the numbers stand side by side.
//!
//! Variants:
//! - `plain`: blocking socket2 sockets, one `sendto`/`recvfrom` per datagram;
//! - `mmsg`: blocking sockets with `sendmmsg`/`recvmmsg` in batches (the plain-socket baseline of issue 5),
//!   through `nix`'s safe wrappers (this crate forbids `unsafe`);
//! - `engine-uring-gso`: the engine's io_uring backend ([`engine::DatagramIo`]) with UDP GSO on send (up to
//!   `--segments` datagrams per `sendmsg` submission) and GRO + multishot `recvmsg` into a provided buffer ring;
//! - `engine-uring`: the same without GSO/GRO (one datagram per submission, multishot receive);
//! - `engine-epoll-gso`: the engine's epoll backend with GSO/GRO;
//! - `engine-epoll`: the engine's epoll backend, one datagram per syscall.
//!
//! Throughput is counted at the receiver: loopback drops datagrams when the receiver falls behind, and that
//! loss is reported. CPU is the process's user+system time around each run (both threads; the main thread
//! only waits), so run nothing else in the process while measuring.

use crate::cpu::process_cpu_seconds;
use crate::engine_args::EngineArgs;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use engine::{BackendChoice, DatagramIo, IoConfig, UdpConfig};
use nix::sys::socket::{recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn};
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Socket buffer size requested on both ends (the kernel may cap it at `rmem_max`/`wmem_max`).
const SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// How long the receiver waits for more after the sender stopped (the queue drains far faster).
const DRAIN_IDLE: Duration = Duration::from_millis(50);
/// The receiver's poll interval for noticing that the sender stopped.
const RECV_TICK: Duration = Duration::from_millis(20);
/// Most datagrams per `sendmmsg`/`recvmmsg` call.
const MAX_BATCH: usize = 64;
/// Receive buffer per datagram (larger than any payload the CLI accepts, so nothing is truncated).
const RECV_SLOT_BYTES: usize = 65_536;

/// Arguments of `popline-bench udp`.
#[derive(Debug, Args)]
pub struct UdpArgs {
    /// UDP payload per datagram, in bytes.
    #[arg(long, default_value_t = 1200)]
    payload: usize,
    /// Seconds of sending per variant.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Variants to run, comma-separated, in this order: plain, mmsg, engine-uring-gso, engine-uring,
    /// engine-epoll-gso, engine-epoll.
    #[arg(
        long,
        default_value = "plain,mmsg,engine-uring-gso,engine-uring,engine-epoll-gso,engine-epoll"
    )]
    variants: String,
    /// Datagrams per `sendmmsg`/`recvmmsg` call in the `mmsg` variant.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Datagrams per GSO send in the `-gso` variants (1..=64).
    #[arg(long, default_value_t = 64)]
    segments: usize,
    /// Print one JSON object per variant instead of a table.
    #[arg(long)]
    json: bool,
    /// Engine knobs for the engine variants (their backend and offloads come from the variant's name).
    #[command(flatten)]
    engine: EngineArgs,
}

/// One IO variant of the blast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// One `sendto`/`recvfrom` per datagram on blocking sockets.
    Plain,
    /// `sendmmsg`/`recvmmsg` in batches on blocking sockets.
    Mmsg,
    /// The engine's io_uring backend with GSO and GRO.
    EngineUringGso,
    /// The engine's io_uring backend, one datagram per submission.
    EngineUring,
    /// The engine's epoll backend with GSO and GRO.
    EngineEpollGso,
    /// The engine's epoll backend, one datagram per syscall.
    EngineEpoll,
}

/// Every variant, in the default order.
#[cfg(test)]
pub const ALL_VARIANTS: [Variant; 6] = [
    Variant::Plain,
    Variant::Mmsg,
    Variant::EngineUringGso,
    Variant::EngineUring,
    Variant::EngineEpollGso,
    Variant::EngineEpoll,
];

impl Variant {
    /// The variant's name in the CLI and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Mmsg => "mmsg",
            Variant::EngineUringGso => "engine-uring-gso",
            Variant::EngineUring => "engine-uring",
            Variant::EngineEpollGso => "engine-epoll-gso",
            Variant::EngineEpoll => "engine-epoll",
        }
    }

    /// Parses a variant name.
    pub fn parse(s: &str) -> Option<Variant> {
        match s {
            "plain" => Some(Variant::Plain),
            "mmsg" => Some(Variant::Mmsg),
            "engine-uring-gso" | "uring-gso" => Some(Variant::EngineUringGso),
            "engine-uring" | "uring" => Some(Variant::EngineUring),
            "engine-epoll-gso" | "epoll-gso" => Some(Variant::EngineEpollGso),
            "engine-epoll" | "epoll" => Some(Variant::EngineEpoll),
            _ => None,
        }
    }
}

/// What one variant measured.
#[derive(Debug, Clone, Serialize)]
pub struct UdpReport {
    /// Variant name.
    pub variant: &'static str,
    /// UDP payload per datagram.
    pub payload_bytes: usize,
    /// Payload Gbit/s received (1e9 bits).
    pub gbps: f64,
    /// Datagrams per second received.
    pub pps: f64,
    /// CPU seconds (user + system, both threads) per GB (1e9 bytes) of payload received.
    pub cpu_s_per_gb: f64,
    /// Fraction of the datagrams sent that never arrived.
    pub loss: f64,
    /// Datagrams the sender handed to the kernel.
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Seconds from the first send to the last datagram received.
    pub seconds: f64,
    /// CPU seconds used during the run.
    pub cpu_s: f64,
    /// Send calls that failed (other than a full buffer on a non-blocking socket).
    pub send_errors: u64,
    /// SO_RCVBUF granted to the receiver, in bytes.
    pub recv_buffer_bytes: usize,
    /// Datagrams per send call (GSO segments, or the mmsg batch; 1 otherwise).
    pub datagrams_per_send: usize,
    /// The engine knobs of an engine variant; absent for the baselines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<crate::engine_args::EngineKnobs>,
}

/// Counters of a sender thread.
#[derive(Debug, Default, Clone, Copy)]
struct SendCount {
    datagrams: u64,
    errors: u64,
}

/// Counters of a receiver thread.
#[derive(Debug, Clone, Copy)]
struct RecvCount {
    datagrams: u64,
    bytes: u64,
    /// When the last datagram arrived.
    last: Option<Instant>,
}

/// Runs `popline-bench udp`.
pub fn run(args: &UdpArgs) -> Result<()> {
    let variants = args
        .variants
        .split(',')
        .map(|v| {
            Variant::parse(v.trim())
                .ok_or_else(|| anyhow!("unknown variant {v:?}: plain, mmsg, engine-uring-gso, engine-uring, engine-epoll-gso, engine-epoll"))
        })
        .collect::<Result<Vec<_>>>()?;
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be positive");
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let mut reports = Vec::new();
    for v in variants {
        let r = measure(v, args.payload, duration, args.batch, args.segments, &args.engine)
            .with_context(|| format!("variant {}", v.name()))?;
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        }
        reports.push(r);
    }
    if !args.json {
        print_table(&reports);
    }
    Ok(())
}

fn print_table(reports: &[UdpReport]) {
    let base = reports
        .iter()
        .find(|r| r.variant == Variant::Mmsg.name())
        .map(|r| r.gbps);
    println!(
        "{:<18} {:>8} {:>6} {:>8} {:>8} {:>7} {:>10} {:>9}",
        "variant", "payload", "x/send", "Gbit/s", "Mpps", "loss", "cpu s/GB", "vs mmsg"
    );
    for r in reports {
        let ratio = base
            .filter(|b| *b > 0.0)
            .map_or_else(|| "-".to_string(), |b| format!("{:.2}x", r.gbps / b));
        println!(
            "{:<18} {:>8} {:>6} {:>8.2} {:>8.3} {:>6.2}% {:>10.2} {:>9}",
            r.variant,
            r.payload_bytes,
            r.datagrams_per_send,
            r.gbps,
            r.pps / 1e6,
            r.loss * 100.0,
            r.cpu_s_per_gb,
            ratio
        );
    }
}

/// Runs one variant: a receiver and a sender thread on 127.0.0.1 for `duration` of sending.
pub fn measure(
    variant: Variant,
    payload: usize,
    duration: Duration,
    batch: usize,
    segments: usize,
    engine_args: &EngineArgs,
) -> Result<UdpReport> {
    if payload == 0 || payload > 65_507 {
        bail!("--payload must be 1..=65507 bytes");
    }
    let batch = batch.clamp(1, MAX_BATCH);
    let segments = segments
        .clamp(1, engine::offload::MAX_GSO_SEGMENTS)
        .min((65_507 / payload).max(1));
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = process_cpu_seconds()?;
    let start = Instant::now();
    let mut knobs = None;
    let (send_count, recv_count, recv_buffer) = match variant {
        Variant::Plain | Variant::Mmsg => {
            let rx = blocking_socket(loopback)?;
            rx.set_read_timeout(Some(RECV_TICK))?;
            let recv_buffer = rx.recv_buffer_size()?;
            let tx = blocking_socket(loopback)?;
            let dest = socket_addr(&rx)?;
            let stop_rx = stop.clone();
            let receiver = thread::Builder::new()
                .name("udp-rx".into())
                .spawn(move || match variant {
                    Variant::Mmsg => recv_mmsg(&rx, &stop_rx, batch),
                    _ => recv_plain(&rx, &stop_rx),
                })?;
            let sender = thread::Builder::new()
                .name("udp-tx".into())
                .spawn(move || match variant {
                    Variant::Mmsg => send_mmsg(&tx, dest, payload, start + duration, batch),
                    _ => send_plain(&tx, dest, payload, start + duration),
                })?;
            let (s, r) = join(sender, receiver, &stop)?;
            (s, r, recv_buffer)
        }
        Variant::EngineUringGso | Variant::EngineUring | Variant::EngineEpollGso | Variant::EngineEpoll => {
            let mut cfg = UdpConfig {
                recv_buffer_bytes: SOCKET_BUFFER_BYTES,
                send_buffer_bytes: SOCKET_BUFFER_BYTES,
                ..UdpConfig::default()
            };
            let io = engine_io_config(variant, engine_args, &mut cfg)?;
            knobs = Some(crate::engine_args::knobs(
                &relay::link::DriverConfig {
                    io,
                    ..relay::link::DriverConfig::default()
                },
                &cfg,
            ));
            let rx = engine::UdpSocket::bind(loopback, &cfg)?;
            let recv_buffer = rx.buffer_sizes().recv_effective;
            let tx = engine::UdpSocket::bind(loopback, &cfg)?;
            let dest = rx.local_addr();
            let stop_rx = stop.clone();
            let per_send = if io.gso { segments } else { 1 };
            // Each thread opens its own backend: an io_uring belongs to the thread that uses it.
            let receiver = thread::Builder::new()
                .name("udp-rx".into())
                .spawn(move || recv_engine(rx, &io, &stop_rx))?;
            let sender = thread::Builder::new()
                .name("udp-tx".into())
                .spawn(move || send_engine(tx, &io, dest, payload, per_send, start + duration))?;
            let (s, r) = join(sender, receiver, &stop)?;
            (s, r, recv_buffer)
        }
    };
    let cpu_s = process_cpu_seconds()? - cpu0;
    let seconds = recv_count
        .last
        .map_or(duration, |t| t.saturating_duration_since(start))
        .as_secs_f64()
        .max(1e-9);
    let gb = recv_count.bytes as f64 / 1e9;
    Ok(UdpReport {
        variant: variant.name(),
        payload_bytes: payload,
        gbps: gb * 8.0 / seconds,
        pps: recv_count.datagrams as f64 / seconds,
        cpu_s_per_gb: if gb > 0.0 { cpu_s / gb } else { f64::INFINITY },
        loss: if send_count.datagrams > 0 {
            1.0 - (recv_count.datagrams as f64 / send_count.datagrams as f64).min(1.0)
        } else {
            0.0
        },
        sent: send_count.datagrams,
        received: recv_count.datagrams,
        seconds,
        cpu_s,
        send_errors: send_count.errors,
        recv_buffer_bytes: recv_buffer,
        datagrams_per_send: match variant {
            Variant::Mmsg => batch,
            Variant::EngineUringGso | Variant::EngineEpollGso => segments,
            _ => 1,
        },
        engine: knobs,
    })
}

/// The engine IO config of an engine variant: the variant's backend and offloads, the other knobs from the
/// flags.
fn engine_io_config(variant: Variant, args: &EngineArgs, udp: &mut UdpConfig) -> Result<IoConfig> {
    let (backend, offload) = match variant {
        Variant::EngineUringGso => (BackendChoice::Uring, true),
        Variant::EngineUring => (BackendChoice::Uring, false),
        Variant::EngineEpollGso => (BackendChoice::Epoll, true),
        _ => (BackendChoice::Epoll, false),
    };
    let mut driver = relay::link::DriverConfig {
        io: IoConfig {
            max_datagram_bytes: RECV_SLOT_BYTES.min(engine::offload::MAX_UDP_PAYLOAD),
            buffer_count: 512,
            ..IoConfig::default()
        },
        ..relay::link::DriverConfig::default()
    };
    args.apply(&mut driver, udp)?;
    driver.io.backend = backend;
    driver.io.gso = offload;
    driver.io.gro = offload;
    Ok(driver.io)
}

/// Waits for the sender, tells the receiver to drain and stop, and waits for it.
fn join(
    sender: thread::JoinHandle<Result<SendCount>>,
    receiver: thread::JoinHandle<Result<RecvCount>>,
    stop: &AtomicBool,
) -> Result<(SendCount, RecvCount)> {
    let sent = sender.join().map_err(|_| anyhow!("sender thread panicked"));
    // Whatever happened to the sender, the receiver must be told to stop.
    stop.store(true, Ordering::Release);
    let received = receiver.join().map_err(|_| anyhow!("receiver thread panicked"))?;
    Ok((sent??, received?))
}

fn blocking_socket(addr: SocketAddr) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Not fatal: the kernel default is used (and reported as `recv_buffer_bytes`).
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    s.bind(&SockAddr::from(addr))?;
    Ok(s)
}

fn socket_addr(s: &Socket) -> Result<SocketAddr> {
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| anyhow!("socket bound to a non-IP address"))
}

/// Counts a send error; `Err` once there are so many that the run is meaningless.
fn count_send_error(count: &mut SendCount, e: &io::Error) -> Result<()> {
    count.errors += 1;
    if count.errors > 1_000_000 {
        bail!("sender: too many errors, last: {e}");
    }
    Ok(())
}

fn send_plain(tx: &Socket, dest: SocketAddr, payload: usize, until: Instant) -> Result<SendCount> {
    let buf = vec![0xa5u8; payload];
    let dest = SockAddr::from(dest);
    let mut count = SendCount::default();
    loop {
        for _ in 0..256 {
            match tx.send_to(&buf, &dest) {
                Ok(_) => count.datagrams += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => count_send_error(&mut count, &e)?,
            }
        }
        if Instant::now() >= until {
            return Ok(count);
        }
    }
}

fn recv_plain(rx: &Socket, stop: &AtomicBool) -> Result<RecvCount> {
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); RECV_SLOT_BYTES];
    let mut count = RecvCount {
        datagrams: 0,
        bytes: 0,
        last: None,
    };
    loop {
        match rx.recv_from(&mut buf) {
            Ok((n, _)) => {
                count.datagrams += 1;
                count.bytes += n as u64;
                // Reading the clock per datagram would cost as much as the receive; once per 64 is enough.
                if count.datagrams % 64 == 0 {
                    count.last = Some(Instant::now());
                }
            }
            Err(e) if is_timeout(&e) => {
                if stopped_and_idle(stop, &mut count) {
                    return Ok(count);
                }
            }
            Err(e) => return Err(e).context("receiver"),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// After the sender stopped, the receiver stops once nothing has arrived for [`DRAIN_IDLE`].
fn stopped_and_idle(stop: &AtomicBool, count: &mut RecvCount) -> bool {
    if !stop.load(Ordering::Acquire) {
        return false;
    }
    match count.last {
        Some(t) => t.elapsed() >= DRAIN_IDLE,
        None => true,
    }
}

fn send_mmsg(
    tx: &Socket,
    dest: SocketAddr,
    payload: usize,
    until: Instant,
    batch: usize,
) -> Result<SendCount> {
    let SocketAddr::V4(dest) = dest else {
        bail!("mmsg variant is IPv4 only");
    };
    let buf = vec![0xa5u8; payload];
    let slices: Vec<[IoSlice<'_>; 1]> = (0..batch).map(|_| [IoSlice::new(&buf)]).collect();
    let addrs: Vec<Option<SockaddrIn>> = vec![Some(SockaddrIn::from(dest)); batch];
    let cmsgs: [ControlMessage<'_>; 0] = [];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let fd = tx.as_raw_fd();
    let mut count = SendCount::default();
    loop {
        for _ in 0..16 {
            match sendmmsg(fd, &mut headers, &slices, &addrs, cmsgs, MsgFlags::empty()) {
                Ok(sent) => count.datagrams += sent.count() as u64,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => count_send_error(&mut count, &io::Error::from(e))?,
            }
        }
        if Instant::now() >= until {
            return Ok(count);
        }
    }
}

fn recv_mmsg(rx: &Socket, stop: &AtomicBool, batch: usize) -> Result<RecvCount> {
    let mut bufs = vec![vec![0u8; RECV_SLOT_BYTES]; batch];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let fd = rx.as_raw_fd();
    let mut count = RecvCount {
        datagrams: 0,
        bytes: 0,
        last: None,
    };
    loop {
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        // Blocks for the first datagram (up to SO_RCVTIMEO), then takes what is queued, up to `batch`.
        match recvmmsg(fd, &mut headers, &mut slices, MsgFlags::MSG_WAITFORONE, None) {
            Ok(msgs) => {
                for m in msgs {
                    count.datagrams += 1;
                    count.bytes += m.bytes as u64;
                }
                count.last = Some(Instant::now());
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {
                if stopped_and_idle(stop, &mut count) {
                    return Ok(count);
                }
            }
            Err(e) => return Err(io::Error::from(e)).context("receiver"),
        }
    }
}

fn send_engine(
    tx: engine::UdpSocket,
    config: &IoConfig,
    dest: SocketAddr,
    payload: usize,
    per_send: usize,
    until: Instant,
) -> Result<SendCount> {
    let mut io = DatagramIo::open(tx, config)?;
    if config.gso && !io.gso() {
        bail!("the kernel refused UDP GSO on this socket");
    }
    let datagram = vec![0xa5u8; payload];
    let mut count = SendCount::default();
    loop {
        let mut queued = 0;
        // Queue up to 16 sends, then submit (io_uring) and reap completions that free their slots.
        while queued < 16 {
            let Some(buf) = io.send_buffer() else { break };
            buf.clear();
            for _ in 0..per_send {
                buf.extend_from_slice(&datagram);
            }
            io.queue_send(dest, payload)?;
            count.datagrams += per_send as u64;
            queued += 1;
        }
        let blocked = queued == 0;
        io.wait(Some(if blocked { RECV_TICK } else { Duration::ZERO }))?;
        io.receive(64, &mut |_, _, _| {});
        if Instant::now() >= until {
            break;
        }
    }
    // Let the last submissions complete (and a refused batch be retried).
    let drain = Instant::now() + Duration::from_millis(50);
    while Instant::now() < drain {
        io.wait(Some(Duration::from_millis(5)))?;
        io.receive(64, &mut |_, _, _| {});
    }
    let st = io.stats();
    count.errors = st.send_errors;
    count.datagrams = count.datagrams.saturating_sub(st.send_errors * per_send as u64);
    Ok(count)
}

fn recv_engine(rx: engine::UdpSocket, config: &IoConfig, stop: &AtomicBool) -> Result<RecvCount> {
    let mut io = DatagramIo::open(rx, config)?;
    let mut count = RecvCount {
        datagrams: 0,
        bytes: 0,
        last: None,
    };
    loop {
        io.wait(Some(RECV_TICK))?;
        let mut got = false;
        io.receive(256, &mut |_, bytes, segment| {
            let size = segment.unwrap_or(bytes.len()).max(1);
            count.datagrams += bytes.len().div_ceil(size).max(1) as u64;
            count.bytes += bytes.len() as u64;
            got = true;
        });
        if got {
            count.last = Some(Instant::now());
        } else if stopped_and_idle(stop, &mut count) {
            return Ok(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_moves_data_on_loopback() {
        let _turn = crate::HEAVY_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        for v in ALL_VARIANTS {
            let r = measure(
                v,
                1200,
                Duration::from_millis(150),
                32,
                16,
                &EngineArgs::default(),
            )
            .unwrap();
            assert!(r.received > 100, "{r:?}");
            assert!(r.sent >= r.received, "{r:?}");
            assert!(r.gbps > 0.0 && r.pps > 0.0, "{r:?}");
            assert!((0.0..=1.0).contains(&r.loss), "{r:?}");
            assert_eq!(Variant::parse(v.name()), Some(v));
        }
        assert!(measure(
            Variant::Plain,
            0,
            Duration::from_millis(10),
            1,
            1,
            &EngineArgs::default()
        )
        .is_err());
    }
}
