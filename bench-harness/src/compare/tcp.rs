//! The TCP baselines: the kernel's CUBIC and BBR on plain sockets, set up as a performance-minded author
//! would (iperf3 `-C cubic|bbr -w`): the congestion control set per socket with `TCP_CONGESTION`, socket
//! buffers of several BDPs set with `SO_SNDBUFFORCE`/`SO_RCVBUFFORCE` (the global `net.core.*mem_max` cannot
//! be raised from inside a namespace, and must not be raised for the whole host), and the per-namespace
//! `net.ipv4.tcp_rmem`/`tcp_wmem` limits raised to 64 MiB ([`tune_namespace`]). `TCP_NODELAY` on both sides.
//!
//! Bulk: the sender writes 128 KiB buffers as fast as the socket takes them; the receiver counts bytes read.
//! Live: the sender writes each frame (its header carries its length) when it is captured, as an RTMP
//! publisher does; the receiver splits the byte stream into frames and stamps each arrival.

use super::live::{Arrivals, LiveStream, SentFrame, StreamFramer};
use super::ns_thread::{join, spawn_in};
use super::run::{bulk_window, LiveTimeline, Outcome, RunSpec};
use super::Mode;
use crate::emulate::{ADDR_A, ADDR_B};
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, SockAddr, Socket, Type};
use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How long a blocked read or write waits before looking at the stop flag.
const IO_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes per bulk write.
const WRITE_BYTES: usize = 128 * 1024;

/// Raises the per-namespace TCP buffer limits in `ns` (`net.ipv4.tcp_rmem`/`tcp_wmem` max to 64 MiB).
pub fn tune_namespace(ns: &str) -> Result<()> {
    for kv in [
        "net.ipv4.tcp_rmem=4096 131072 67108864",
        "net.ipv4.tcp_wmem=4096 16384 67108864",
    ] {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-q", "-w", kv])
            .output()
            .context("running sysctl in the namespace")?;
        if !out.status.success() {
            bail!(
                "sysctl -w {kv} in {ns} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Whether the kernel offers congestion control `cc` (`net.ipv4.tcp_available_congestion_control`).
pub fn available(cc: &str) -> Result<bool> {
    let list = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .context("reading tcp_available_congestion_control")?;
    Ok(list.split_whitespace().any(|c| c == cc))
}

/// A TCP socket with congestion control `cc` and `buffer` bytes of send and receive buffer.
fn socket(cc: &str, buffer: usize) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    setsockopt(&s, sockopt::TcpCongestion, &OsString::from(cc))
        .with_context(|| format!("setting TCP_CONGESTION {cc}"))?;
    setsockopt(&s, sockopt::SndBufForce, &buffer).context("SO_SNDBUFFORCE")?;
    setsockopt(&s, sockopt::RcvBufForce, &buffer).context("SO_RCVBUFFORCE")?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Runs one TCP variant (`cc` is `cubic` or `bbr`).
pub fn run(spec: &RunSpec<'_>, cc: &'static str) -> Result<Outcome> {
    if !available(cc)? {
        bail!("the kernel has no TCP congestion control {cc:?} (try `modprobe tcp_{cc}`)");
    }
    let buffer = spec.buffer_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let mode = spec.mode;
    let receiver = {
        let (stop, delivered) = (stop.clone(), delivered.clone());
        spawn_in(&spec.lab.ns_b, "tcp-recv", move || {
            receive(cc, buffer, mode, addr_tx, &stop, &delivered)
        })?
    };
    let Ok(server) = addr_rx.recv_timeout(CONNECT_TIMEOUT) else {
        stop.store(true, Ordering::Release);
        let _ = join(receiver, "tcp receiver")?;
        bail!("the TCP receiver did not start");
    };
    let result = match spec.mode {
        Mode::Bulk => run_bulk(spec, cc, buffer, server, &stop, &delivered),
        Mode::Live => run_live(spec, cc, buffer, server),
    };
    stop.store(true, Ordering::Release);
    let ((arrivals, total), recv_cpu) = join(receiver, "tcp receiver")?;
    let (outcome, send_cpu, timeline, sent) = result?;
    Ok(match timeline {
        Some(t) => t.outcome(spec, &sent, &arrivals, total, send_cpu + recv_cpu),
        None => Outcome {
            cpu_s: send_cpu + recv_cpu,
            total_bytes: total,
            ..outcome
        },
    })
}

/// What the sending side of a run gives back: the bulk outcome so far, its CPU, and (live) its timeline and
/// frames.
type SendResult = (Outcome, f64, Option<LiveTimeline>, Vec<SentFrame>);

fn run_bulk(
    spec: &RunSpec<'_>,
    cc: &'static str,
    buffer: usize,
    server: SocketAddr,
    stop: &Arc<AtomicBool>,
    delivered: &AtomicU64,
) -> Result<SendResult> {
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let sender = {
        let stop = stop.clone();
        spawn_in(&spec.lab.ns_a, "tcp-send", move || {
            let mut s = connect(cc, buffer, server)?;
            let _ = ready_tx.send(());
            let buf = vec![0xb0u8; WRITE_BYTES];
            while !stop.load(Ordering::Acquire) {
                match s.write(&buf) {
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => {}
                    Err(_) if stop.load(Ordering::Acquire) => break,
                    Err(e) => return Err(anyhow!("tcp write: {e}")),
                }
            }
            Ok(())
        })?
    };
    let window = match ready_rx.recv_timeout(CONNECT_TIMEOUT) {
        Ok(()) => Ok(bulk_window(delivered, spec.warmup, spec.window)),
        Err(_) => Err(anyhow!("the TCP sender did not connect")),
    };
    stop.store(true, Ordering::Release);
    let ((), cpu) = join(sender, "tcp sender")?;
    let (bytes, seconds) = window?;
    Ok((
        Outcome {
            window_bytes: bytes,
            window_s: seconds,
            ..Outcome::default()
        },
        cpu,
        None,
        Vec::new(),
    ))
}

fn run_live(spec: &RunSpec<'_>, cc: &'static str, buffer: usize, server: SocketAddr) -> Result<SendResult> {
    let (epoch, bitrate, warmup, window) = (spec.epoch, spec.bitrate_bps, spec.warmup, spec.window);
    let drain = spec.drain();
    let sender = spawn_in(&spec.lab.ns_a, "tcp-send", move || {
        let mut s = connect(cc, buffer, server)?;
        let start = Instant::now();
        let timeline = LiveTimeline::starting(start, warmup, window);
        let mut stream = LiveStream::new(bitrate, epoch, start);
        let mut sent = Vec::new();
        // A writer blocked behind a full socket buffer gives up at the end of the run plus the drain; the
        // frames captured after that still count as sent (the encoder made them; TCP could not take them).
        let give_up = timeline.end + drain;
        let mut blocked = false;
        while stream.next_due() < timeline.end {
            let due = stream.next_due();
            let now = Instant::now();
            if due > now && !blocked {
                std::thread::sleep(due - now);
            }
            let now = if blocked { due } else { Instant::now() };
            while let Some(f) = stream.poll(now) {
                sent.push(SentFrame {
                    seq: f.seq,
                    capture: f.capture,
                    len: f.bytes.len(),
                });
                if !blocked && !write_all_until(&mut s, &f.bytes, give_up)? {
                    blocked = true;
                }
            }
        }
        Ok((timeline, sent))
    })?;
    let ((timeline, sent), cpu) = join(sender, "tcp sender")?;
    // Frames in flight (or in the socket buffers) may still arrive.
    let left = (timeline.end + drain).saturating_duration_since(Instant::now());
    std::thread::sleep(left);
    Ok((Outcome::default(), cpu, Some(timeline), sent))
}

/// Writes all of `buf` unless `give_up` passes first; returns whether it did.
fn write_all_until(s: &mut TcpStream, mut buf: &[u8], give_up: Instant) -> Result<bool> {
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(0) => bail!("tcp write: connection closed"),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(e) if is_timeout(&e) => {
                if Instant::now() >= give_up {
                    return Ok(false);
                }
            }
            Err(e) => return Err(anyhow!("tcp write: {e}")),
        }
    }
    Ok(true)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Connects from namespace A's address to `server`.
fn connect(cc: &str, buffer: usize, server: SocketAddr) -> Result<TcpStream> {
    let s = socket(cc, buffer)?;
    s.bind(&SockAddr::from(SocketAddr::from((parse_ip(ADDR_A)?, 0))))?;
    s.connect_timeout(&server.into(), CONNECT_TIMEOUT)
        .with_context(|| format!("tcp connect to {server}"))?;
    let s: TcpStream = s.into();
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn parse_ip(s: &str) -> Result<std::net::Ipv4Addr> {
    s.parse().with_context(|| format!("bad address {s}"))
}

/// The receiving side: listens on namespace B's address, accepts one connection and reads until `stop`.
/// Bulk counts bytes into `delivered`; live stamps frame arrivals. Returns the arrivals and the bytes read.
fn receive(
    cc: &str,
    buffer: usize,
    mode: Mode,
    addr_tx: mpsc::Sender<SocketAddr>,
    stop: &AtomicBool,
    delivered: &AtomicU64,
) -> Result<(Arrivals, u64)> {
    let l = socket(cc, buffer)?;
    l.set_reuse_address(true)?;
    l.bind(&SockAddr::from(SocketAddr::from((parse_ip(ADDR_B)?, 0))))?;
    l.listen(1)?;
    let l: TcpListener = l.into();
    l.set_nonblocking(true)?;
    addr_tx
        .send(l.local_addr()?)
        .map_err(|_| anyhow!("the benchmark went away"))?;
    let mut conn = loop {
        match l.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if stop.load(Ordering::Acquire) {
                    return Ok((Arrivals::default(), 0));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(anyhow!("tcp accept: {e}")),
        }
    };
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut arrivals = Arrivals::default();
    let mut framer = StreamFramer::default();
    let mut total = 0u64;
    while !stop.load(Ordering::Acquire) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                match mode {
                    Mode::Bulk => {
                        delivered.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Mode::Live => {
                        framer.feed(buf.get(..n).unwrap_or_default(), Instant::now(), &mut arrivals)?;
                    }
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) if stop.load(Ordering::Acquire) => break,
            Err(e) => return Err(anyhow!("tcp read: {e}")),
        }
    }
    Ok((arrivals, total))
}
