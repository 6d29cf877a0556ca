//! The SRT baseline (live only): Haivision's `srt-live-transmit` (Debian's `srt-tools`) at each end, in live
//! mode with a fixed receiver latency, as SRT is deployed for contribution links.
//!
//! ```text
//! namespace A: feeder --UDP 1316 B--> srt-live-transmit udp://:4201 -> srt://169.254.77.2:4200?latency=L
//! namespace B: srt-live-transmit srt://:4200?mode=listener&latency=L -> udp://127.0.0.1:P --> receiver
//! ```
//!
//! The feeder cuts each frame into datagrams of 1,316 bytes (7 MPEG-TS packets: the payload size SRT's live
//! mode expects), each starting with the frame's number, capture time, the datagram's offset in the frame
//! and the frame's length, and paces them at the path's rate (so no datagram is lost in the local UDP socket
//! before SRT sees it; srt-live-transmit's UDP input also gets a 4 MB `rcvbuf`). The receiver reassembles
//! frames from these headers; a frame is delivered when all its bytes came (SRT drops packets that miss its
//! latency window: then the frame never completes). Every other SRT option is srt-live-transmit's default. CPU is the feeder's and receiver's threads plus both
//! srt-live-transmit processes (from `/proc/PID/stat`).

use super::live::{nanos_since, Arrivals, LiveStream, SentFrame};
use super::ns_thread::{join, spawn_in};
use super::run::{LiveTimeline, Outcome, RunSpec};
use crate::cpu::pid_cpu_seconds;
use crate::emulate::ADDR_B;
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::socket::{setsockopt, sockopt};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The program.
const PROGRAM: &str = "srt-live-transmit";
/// UDP payload per datagram: seven 188-byte TS packets, SRT live mode's payload size.
pub const DATAGRAM_BYTES: usize = 1316;
/// Bytes of our header at the start of each datagram.
const DGRAM_HEADER: usize = 24;
/// SRT listener port in namespace B.
const SRT_PORT: u16 = 4200;
/// Where srt-live-transmit reads the feed in namespace A.
const FEED_PORT: u16 = 4201;
/// How long the two srt-live-transmit processes get to start and connect before the stream starts.
const CONNECT_WAIT: Duration = Duration::from_millis(1500);
/// Receive buffer srt-live-transmit asks for on its UDP input (its `rcvbuf` option): a keyframe is a burst
/// of a few hundred datagrams, more than the default buffer holds while the process is not scheduled.
const FEED_RCVBUF: usize = 4_000_000;
/// Receive buffer of our UDP receiver.
const RECV_BUFFER: usize = 8 << 20;

/// Why SRT cannot run here, if it cannot (no `srt-live-transmit`).
pub fn unavailable() -> Option<String> {
    match Command::new(PROGRAM)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => None,
        Err(e) => Some(format!(
            "{PROGRAM} not found ({e}): install Debian's srt-tools (scripts/setup.sh does)"
        )),
    }
}

/// One datagram's header.
fn dgram_header(seq: u64, capture_ns: u64, offset: u32, len: u32) -> [u8; DGRAM_HEADER] {
    let mut b = [0u8; DGRAM_HEADER];
    b[0..8].copy_from_slice(&seq.to_be_bytes());
    b[8..16].copy_from_slice(&capture_ns.to_be_bytes());
    b[16..20].copy_from_slice(&offset.to_be_bytes());
    b[20..24].copy_from_slice(&len.to_be_bytes());
    b
}

/// Parses a datagram's header: `(seq, offset, frame length, payload bytes)`.
fn parse_dgram(d: &[u8]) -> Option<(u64, u32, u32, usize)> {
    let h = d.get(..DGRAM_HEADER)?;
    let be = |r: std::ops::Range<usize>| h[r].iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
    let (seq, offset, len) = (be(0..8), be(16..20) as u32, be(20..24) as u32);
    let payload = d.len() - DGRAM_HEADER;
    (u64::from(offset) + payload as u64 <= u64::from(len)).then_some((seq, offset, len, payload))
}

/// Reassembles frames from datagrams (SRT never delivers a packet twice; a repeat would be counted twice).
#[derive(Debug, Default)]
struct Reassembly {
    partial: HashMap<u64, u64>,
    arrivals: Arrivals,
    bytes: u64,
}

impl Reassembly {
    fn on_datagram(&mut self, d: &[u8], now: Instant) {
        let Some((seq, _offset, len, payload)) = parse_dgram(d) else {
            return;
        };
        self.bytes += payload as u64;
        let got = self.partial.entry(seq).or_insert(0);
        *got += payload as u64;
        if *got >= u64::from(len) {
            self.partial.remove(&seq);
            self.arrivals.record(seq, now);
        }
    }
}

/// A running srt-live-transmit; killed (after its CPU time is read) by [`Srt::finish`] or on drop.
struct Srt {
    child: Child,
}

impl Srt {
    fn start(mut cmd: Command, what: &str) -> Result<Srt> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {PROGRAM} ({what})"))?;
        Ok(Srt { child })
    }

    /// Its CPU seconds so far; then it is killed and reaped. Fails if it had already exited.
    fn finish(mut self) -> Result<f64> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{PROGRAM} exited early with {status}");
        }
        let cpu = pid_cpu_seconds(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        cpu
    }
}

impl Drop for Srt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the SRT processes' part of a run gives back: the feeder's timeline and frames, the feeder's CPU,
/// both srt-live-transmit processes' CPU, and the UDP drop counters.
type SrtRun = ((LiveTimeline, Vec<SentFrame>), f64, f64, String);

/// Runs the live stream over SRT with receiver latency `latency`.
pub fn run(spec: &RunSpec<'_>, latency: Duration) -> Result<Outcome> {
    let latency_ms = latency.as_millis().max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let (port_tx, port_rx) = mpsc::channel::<u16>();
    let receiver = {
        let stop = stop.clone();
        spawn_in(&spec.lab.ns_b, "srt-recv", move || receive(port_tx, &stop))?
    };
    let Ok(out_port) = port_rx.recv_timeout(Duration::from_secs(5)) else {
        stop.store(true, Ordering::Release);
        let _ = join(receiver, "srt receiver");
        bail!("the SRT receiver did not start");
    };
    let result = (|| -> Result<SrtRun> {
        let mut b = spec.lab.command_in_b(PROGRAM);
        b.args([
            format!("srt://:{SRT_PORT}?mode=listener&latency={latency_ms}"),
            format!("udp://127.0.0.1:{out_port}"),
            "-a:no".to_string(),
        ]);
        let srt_b = Srt::start(b, "receiver")?;
        std::thread::sleep(Duration::from_millis(200));
        let mut a = spec.lab.command_in_a(PROGRAM);
        a.args([
            format!("udp://127.0.0.1:{FEED_PORT}?rcvbuf={FEED_RCVBUF}"),
            format!("srt://{ADDR_B}:{SRT_PORT}?mode=caller&latency={latency_ms}"),
            "-a:no".to_string(),
        ]);
        let srt_a = Srt::start(a, "sender")?;
        std::thread::sleep(CONNECT_WAIT + spec.rtt * 4);
        let (epoch, bitrate, warmup, window) = (spec.epoch, spec.bitrate_bps, spec.warmup, spec.window);
        let rate_bps = spec.link_rate_bps.unwrap_or(1_000_000_000).max(1_000_000);
        let feeder = spawn_in(&spec.lab.ns_a, "srt-feed", move || {
            feed(epoch, bitrate, warmup, window, rate_bps)
        })?;
        let fed = join(feeder, "srt feeder");
        let drain_end = Instant::now() + spec.drain();
        std::thread::sleep(drain_end.saturating_duration_since(Instant::now()));
        let drops = format!(
            "UDP receive-buffer drops: A {}, B {}",
            udp_rcvbuf_errors(spec.lab.command_in_a("cat")),
            udp_rcvbuf_errors(spec.lab.command_in_b("cat"))
        );
        let cpu_a = srt_a.finish().context("the SRT sender");
        let cpu_b = srt_b.finish().context("the SRT receiver");
        let (sent, feed_cpu) = fed?;
        Ok((sent, feed_cpu, cpu_a? + cpu_b?, drops))
    })();
    stop.store(true, Ordering::Release);
    let (reassembly, recv_cpu) = join(receiver, "srt receiver")?;
    let ((timeline, sent), feed_cpu, srt_cpu, drops) = result?;
    let mut o = timeline.outcome(
        spec,
        &sent,
        &reassembly.arrivals,
        reassembly.bytes,
        feed_cpu + recv_cpu + srt_cpu,
    );
    o.note = Some(format!("srt latency {latency_ms} ms; {drops}"));
    Ok(o)
}

/// The `Udp: RcvbufErrors` counter of the namespace `cat` runs in (`/proc/net/snmp`), or `?`.
fn udp_rcvbuf_errors(mut cat: Command) -> String {
    let Ok(out) = cat.arg("/proc/net/snmp").output() else {
        return "?".to_string();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return "?".to_string();
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .map_or_else(|| "?".to_string(), |(_, v)| v.to_string())
}

/// The feeder, in namespace A: the live stream's frames as paced 1,316-byte datagrams to srt-live-transmit.
fn feed(
    epoch: Instant,
    bitrate: u64,
    warmup: Duration,
    window: Duration,
    rate_bps: u64,
) -> Result<(LiveTimeline, Vec<SentFrame>)> {
    let sock = UdpSocket::bind(("127.0.0.1", 0)).context("binding the SRT feeder")?;
    sock.connect(("127.0.0.1", FEED_PORT))
        .context("connecting the SRT feeder")?;
    let start = Instant::now();
    let timeline = LiveTimeline::starting(start, warmup, window);
    let mut stream = LiveStream::new(bitrate, epoch, start);
    let mut sent = Vec::new();
    let per_byte = Duration::from_secs_f64(8.0 / rate_bps as f64);
    let mut next_send = start;
    let mut buf = [0u8; DATAGRAM_BYTES];
    while stream.next_due() < timeline.end {
        let due = stream.next_due();
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        while let Some(f) = stream.poll(Instant::now()) {
            sent.push(SentFrame {
                seq: f.seq,
                capture: f.capture,
                len: f.bytes.len(),
            });
            let capture_ns = nanos_since(epoch, f.capture);
            let len = u32::try_from(f.bytes.len()).unwrap_or(u32::MAX);
            for (i, chunk) in f.bytes.chunks(DATAGRAM_BYTES - DGRAM_HEADER).enumerate() {
                let offset = u32::try_from(i * (DATAGRAM_BYTES - DGRAM_HEADER)).unwrap_or(u32::MAX);
                buf[..DGRAM_HEADER].copy_from_slice(&dgram_header(f.seq, capture_ns, offset, len));
                let n = DGRAM_HEADER + chunk.len();
                if let Some(dst) = buf.get_mut(DGRAM_HEADER..n) {
                    dst.copy_from_slice(chunk);
                }
                next_send = next_send.max(Instant::now() - Duration::from_millis(2)) + per_byte * n as u32;
                let ahead = next_send.saturating_duration_since(Instant::now());
                if ahead > Duration::from_millis(1) {
                    std::thread::sleep(ahead);
                }
                match sock.send(buf.get(..n).unwrap_or_default()) {
                    Ok(_) => {}
                    // srt-live-transmit not (yet) listening: the datagram is lost, as it would be.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(anyhow!("srt feeder send: {e}")),
                }
            }
        }
    }
    Ok((timeline, sent))
}

/// The receiver, in namespace B: reassembles frames from srt-live-transmit's UDP output until `stop`.
fn receive(port_tx: mpsc::Sender<u16>, stop: &AtomicBool) -> Result<Reassembly> {
    let sock = UdpSocket::bind(("127.0.0.1", 0)).context("binding the SRT receiver")?;
    setsockopt(&sock, sockopt::RcvBufForce, &RECV_BUFFER).context("SO_RCVBUFFORCE")?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    port_tx
        .send(sock.local_addr()?.port())
        .map_err(|_| anyhow!("the benchmark went away"))?;
    let mut r = Reassembly::default();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Acquire) {
        match sock.recv(&mut buf) {
            Ok(n) => r.on_datagram(buf.get(..n).unwrap_or_default(), Instant::now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(anyhow!("srt receiver: {e}")),
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reassemble_into_frames() {
        let t0 = Instant::now();
        let mut r = Reassembly::default();
        let len = 3000u32;
        let step = DATAGRAM_BYTES - DGRAM_HEADER;
        for offset in (0..len as usize).step_by(step) {
            let n = step.min(len as usize - offset);
            let mut d = dgram_header(9, 0, offset as u32, len).to_vec();
            d.resize(DGRAM_HEADER + n, 0);
            assert_eq!(r.arrivals.count(), 0);
            r.on_datagram(&d, t0);
        }
        assert_eq!(r.arrivals.count(), 1);
        // A datagram that claims bytes past its frame's end is refused.
        let mut bad = dgram_header(10, 0, 2990, 3000).to_vec();
        bad.resize(DGRAM_HEADER + 20, 0);
        assert!(parse_dgram(&bad).is_none());
    }
}
