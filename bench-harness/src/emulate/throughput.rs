//! `popline-bench emulate --throughput RATES`: is the emulator the bottleneck? For each offered rate, a
//! paced UDP sender in namespace A blasts 1400-byte datagrams through the emulated path to a receiver in
//! namespace B for `--seconds`, and the received rate, the loss, and the CPU of the emulator's threads (the
//! process's CPU minus the sender's and receiver's own) are reported side by side with the offered rate.

use super::{netns, Emulator, Lab, Profile, ADDR_B};
use crate::compare::ns_thread;
use crate::cpu::process_cpu_seconds;
use anyhow::{bail, Result};
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// UDP payload per datagram (1428 bytes of IP on the 1500-byte emulated MTU).
const PAYLOAD: usize = 1400;
/// Port the receiver listens on in namespace B.
const PORT: u16 = 47_700;

/// One offered rate's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    /// Profile name.
    pub profile: String,
    /// UDP payload rate offered, Mbit/s.
    pub offered_mbps: f64,
    /// UDP payload rate received, Mbit/s.
    pub received_mbps: f64,
    /// Received over offered.
    pub ratio: f64,
    /// Datagrams sent and not received (of all sent).
    pub loss: f64,
    /// Drops the link model made on purpose (its loss, queue and outages).
    pub model_drops: u64,
    /// CPU seconds per second of the emulator's forwarding threads (cores).
    pub emulator_cores: f64,
}

/// Runs the throughput check for each rate in `rates_bps`.
pub fn run(profile: &Profile, rates_bps: &[u64], seconds: f64, json: bool) -> Result<()> {
    if let Some(why) = netns::unavailable() {
        bail!("cannot build the emulation lab: {why}");
    }
    let mut rows = Vec::new();
    for &rate in rates_bps {
        let row = measure(profile, rate, Duration::from_secs_f64(seconds))?;
        if json {
            println!("{}", serde_json::to_string(&row)?);
        }
        rows.push(row);
    }
    if !json {
        println!(
            "{:<16} {:>12} {:>13} {:>7} {:>8} {:>11} {:>15}",
            "profile", "offered Mb/s", "received Mb/s", "ratio", "loss", "model drops", "emulator cores"
        );
        for r in &rows {
            println!(
                "{:<16} {:>12.1} {:>13.1} {:>7.3} {:>7.3}% {:>11} {:>15.2}",
                r.profile,
                r.offered_mbps,
                r.received_mbps,
                r.ratio,
                r.loss * 100.0,
                r.model_drops,
                r.emulator_cores
            );
        }
    }
    Ok(())
}

fn measure(profile: &Profile, rate_bps: u64, duration: Duration) -> Result<ThroughputRow> {
    let (lab, ends) = Lab::create(profile.mtu)?;
    let emulator = Emulator::for_profile(ends.a, ends.b, profile)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop_rx = stop.clone();
    let receiver = ns_thread::spawn_in(&lab.ns_b, "tput-rx", move || {
        let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], PORT)))?;
        socket2::SockRef::from(&s).set_recv_buffer_size(32 << 20)?;
        s.set_read_timeout(Some(Duration::from_millis(20)))?;
        let _ = ready_tx.send(());
        let mut buf = vec![0u8; 2048];
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut first_last: Option<(Instant, Instant)> = None;
        loop {
            match s.recv(&mut buf) {
                Ok(len) => {
                    n += 1;
                    bytes += len as u64;
                    let now = Instant::now();
                    first_last = Some(first_last.map_or((now, now), |(f, _)| (f, now)));
                }
                Err(_) if stop_rx.load(Ordering::Acquire) => break,
                Err(_) => {}
            }
        }
        Ok((n, bytes, first_last))
    })?;
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    let sender = ns_thread::spawn_in(&lab.ns_a, "tput-tx", move || {
        let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0)))?;
        socket2::SockRef::from(&s).set_send_buffer_size(8 << 20)?;
        let to: SocketAddr = format!("{ADDR_B}:{PORT}").parse()?;
        let datagram = vec![0x5au8; PAYLOAD];
        let interval_s = PAYLOAD as f64 * 8.0 / rate_bps.max(1) as f64;
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < duration {
            // Paced in bursts of 16 so the sender's timer is not the limit.
            let due = start + Duration::from_secs_f64(interval_s * sent as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            for _ in 0..16 {
                if s.send_to(&datagram, to).is_ok() {
                    sent += 1;
                }
            }
        }
        Ok(sent)
    })?;
    let cpu0 = process_cpu_seconds()?;
    let t0 = Instant::now();
    let (sent, tx_cpu) = ns_thread::join(sender, "sender")?;
    std::thread::sleep(Duration::from_millis(300) + profile.a_to_b.delay * 2);
    stop.store(true, Ordering::Release);
    let ((received, bytes, first_last), rx_cpu) = ns_thread::join(receiver, "receiver")?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds()? - cpu0;
    let stats = emulator.stop()?;
    drop(lab);
    let span = first_last.map_or(0.0, |(f, l)| (l - f).as_secs_f64()).max(1e-9);
    let received_mbps = bytes as f64 * 8.0 / span / 1e6;
    let offered_mbps = rate_bps as f64 / 1e6;
    let model_drops = stats.iter().find(|s| s.name == "a2b").map_or(0, |s| {
        s.link.lost_packets + s.link.queue_drop_packets + s.link.outage_packets
    });
    Ok(ThroughputRow {
        profile: profile.name.clone(),
        offered_mbps,
        received_mbps,
        ratio: received_mbps / offered_mbps.max(1e-9),
        loss: 1.0 - received as f64 / sent.max(1) as f64,
        model_drops,
        emulator_cores: (cpu - tx_cpu - rx_cpu).max(0.0) / wall.max(1e-9),
    })
}
