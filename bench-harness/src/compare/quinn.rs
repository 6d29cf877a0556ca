//! The QUIC baseline: quinn set up as its `perf` tool sets it up (rustls with ring, GSO on, 2 MiB socket
//! buffers, large stream/connection/send windows, CUBIC), from [`crate::quinn_baseline`], one current-thread
//! tokio runtime per side.
//!
//! Bulk: `quinn_baseline`'s own client and server (one unidirectional stream written in 128 KiB chunks),
//! bound to the namespaces' addresses. Live: one unidirectional stream per frame, opened when the frame is
//! captured, written and finished, as QUIC media mappings (RTP over QUIC, Media over QUIC) carry frames: no
//! head-of-line blocking between frames, each retransmitted reliably however late. Up to 1,024 streams open at
//! once. The receiver reads each stream to its end and stamps the frame's arrival.

use super::live::{Arrivals, LiveStream, SentFrame};
use super::ns_thread::{join, spawn_in};
use super::run::{bulk_window, LiveTimeline, Outcome, RunSpec};
use super::Mode;
use crate::emulate::{ADDR_A, ADDR_B};
use crate::quinn_baseline::{
    bind_socket, crypto_configs, run_client, run_server, runtime, server_endpoint, stopped, transport_config,
    DRAIN_TIMEOUT, HANDSHAKE_TIMEOUT, SERVER_NAME,
};
use anyhow::{anyhow, Context, Result};
use quinn::{ClientConfig, Endpoint, EndpointConfig, ServerConfig, TokioRuntime};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Bytes per bulk write (quinn `perf`'s default chunk size is larger than this; 128 KiB is the TCP rows' too).
const CHUNK_BYTES: usize = 128 * 1024;
/// Streams open at once in live mode (a stream per frame; more than a few RTTs of frames).
const LIVE_STREAMS: u32 = 1024;
/// Largest frame the live receiver reads.
const MAX_FRAME_BYTES: usize = 16 << 20;

fn addr(ip: &str) -> Result<SocketAddr> {
    let ip: IpAddr = ip.parse().with_context(|| format!("bad address {ip}"))?;
    Ok(SocketAddr::new(ip, 0))
}

/// Runs the quinn variant.
pub fn run(spec: &RunSpec<'_>) -> Result<Outcome> {
    match spec.mode {
        Mode::Bulk => run_bulk(spec),
        Mode::Live => run_live(spec),
    }
}

fn run_bulk(spec: &RunSpec<'_>) -> Result<Outcome> {
    let (server_cfg, client_cfg) = crypto_configs(transport_config(1))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));
    let (addr_tx, addr_rx) = mpsc::channel();
    let (bind_a, bind_b) = (addr(ADDR_A)?, addr(ADDR_B)?);
    let server = {
        let (stop, delivered) = (stop_rx.clone(), delivered.clone());
        spawn_in(&spec.lab.ns_b, "quinn-recv", move || {
            run_server(server_cfg, bind_b, addr_tx, stop, &delivered)
        })?
    };
    let server_addr = match addr_rx.recv_timeout(HANDSHAKE_TIMEOUT) {
        Ok(a) => a,
        Err(_) => Err(anyhow!("the quinn receiver did not start")),
    };
    let server_addr = match server_addr {
        Ok(a) => a,
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = join(server, "quinn receiver");
            return Err(e);
        }
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let client = {
        let stop = stop_rx.clone();
        spawn_in(&spec.lab.ns_a, "quinn-send", move || {
            run_client(client_cfg, bind_a, server_addr, CHUNK_BYTES, stop, ready_tx)
        })?
    };
    let window = match ready_rx.recv_timeout(HANDSHAKE_TIMEOUT * 2) {
        Ok(Ok(())) => Ok(bulk_window(&delivered, spec.warmup, spec.window)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow!("the quinn sender did not connect")),
    };
    let _ = stop_tx.send(true);
    let client = join(client, "quinn sender");
    let ((), recv_cpu) = join(server, "quinn receiver")?;
    let (summary, send_cpu) = client?;
    let (bytes, seconds) = window?;
    Ok(Outcome {
        window_bytes: bytes,
        window_s: seconds,
        total_bytes: delivered.load(Ordering::Relaxed),
        cpu_s: send_cpu + recv_cpu,
        live: None,
        note: Some(format!(
            "quinn lost {} of {} packets, rtt {} ms",
            summary.packets_lost,
            summary.packets_sent,
            summary.rtt.as_millis()
        )),
        delivered_at: Vec::new(),
    })
}

fn run_live(spec: &RunSpec<'_>) -> Result<Outcome> {
    let (server_cfg, client_cfg) = crypto_configs(transport_config(LIVE_STREAMS))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (addr_tx, addr_rx) = mpsc::channel::<Result<SocketAddr>>();
    let (bind_a, bind_b) = (addr(ADDR_A)?, addr(ADDR_B)?);
    let server = spawn_in(&spec.lab.ns_b, "quinn-recv", move || {
        receive_live(server_cfg, bind_b, addr_tx, stop_rx)
    })?;
    let server_addr = match addr_rx.recv_timeout(HANDSHAKE_TIMEOUT) {
        Ok(Ok(a)) => a,
        other => {
            let _ = stop_tx.send(true);
            let _ = join(server, "quinn receiver");
            return match other {
                Ok(Err(e)) => Err(e),
                _ => Err(anyhow!("the quinn receiver did not start")),
            };
        }
    };
    let (epoch, bitrate, warmup, window) = (spec.epoch, spec.bitrate_bps, spec.warmup, spec.window);
    let drain = spec.drain();
    let client = spawn_in(&spec.lab.ns_a, "quinn-send", move || {
        send_live(
            client_cfg,
            bind_a,
            server_addr,
            epoch,
            bitrate,
            warmup,
            window,
            drain,
        )
    })?;
    let sent = join(client, "quinn sender");
    let _ = stop_tx.send(true);
    let ((arrivals, total), recv_cpu) = join(server, "quinn receiver")?;
    let ((timeline, sent), send_cpu) = sent?;
    Ok(timeline.outcome(spec, &sent, &arrivals, total, send_cpu + recv_cpu))
}

/// The live sender: connects, then opens a stream per frame as each is captured; keeps the connection up
/// through the drain so that retransmissions go out.
#[allow(clippy::too_many_arguments)]
fn send_live(
    cfg: ClientConfig,
    bind: SocketAddr,
    server: SocketAddr,
    epoch: Instant,
    bitrate: u64,
    warmup: Duration,
    window: Duration,
    drain: Duration,
) -> Result<(LiveTimeline, Vec<SentFrame>)> {
    let rt = runtime()?;
    rt.block_on(async move {
        let mut endpoint = Endpoint::new(
            EndpointConfig::default(),
            None,
            bind_socket(bind)?,
            Arc::new(TokioRuntime),
        )?;
        endpoint.set_default_client_config(cfg);
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, endpoint.connect(server, SERVER_NAME)?)
            .await
            .map_err(|_| anyhow!("quinn handshake timed out"))?
            .context("quinn client handshake")?;
        let start = Instant::now();
        let timeline = LiveTimeline::starting(start, warmup, window);
        let mut stream = LiveStream::new(bitrate, epoch, start);
        let mut sent = Vec::new();
        while stream.next_due() < timeline.end {
            tokio::time::sleep_until(stream.next_due().into()).await;
            while let Some(f) = stream.poll(Instant::now()) {
                sent.push(SentFrame {
                    seq: f.seq,
                    capture: f.capture,
                    len: f.bytes.len(),
                });
                let mut s = conn.open_uni().await.context("opening a frame's stream")?;
                s.write_chunk(f.bytes)
                    .await
                    .map_err(|e| anyhow!("quinn write: {e}"))?;
                s.finish().map_err(|e| anyhow!("quinn finish: {e}"))?;
            }
        }
        tokio::time::sleep_until((timeline.end + drain).into()).await;
        conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, endpoint.wait_idle()).await;
        Ok((timeline, sent))
    })
}

/// The live receiver: accepts the connection, then every stream, each read to its end on its own task.
fn receive_live(
    cfg: ServerConfig,
    bind: SocketAddr,
    addr_tx: mpsc::Sender<Result<SocketAddr>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(Arrivals, u64)> {
    let rt = runtime()?;
    let arrivals = Arc::new(Mutex::new((Arrivals::default(), 0u64)));
    let record = arrivals.clone();
    rt.block_on(async move {
        let endpoint = server_endpoint(cfg, bind, &addr_tx)?;
        let incoming = tokio::select! {
            i = endpoint.accept() => i.ok_or_else(|| anyhow!("quinn server endpoint closed"))?,
            _ = stopped(&mut stop) => return Ok::<(), anyhow::Error>(()),
        };
        let conn = incoming.await.context("quinn server handshake")?;
        loop {
            let mut recv = tokio::select! {
                r = conn.accept_uni() => match r {
                    Ok(r) => r,
                    // The sender closes the connection after its drain.
                    Err(_) => break,
                },
                _ = stopped(&mut stop) => break,
            };
            let record = record.clone();
            tokio::spawn(async move {
                if let Ok(bytes) = recv.read_to_end(MAX_FRAME_BYTES).await {
                    let now = Instant::now();
                    if let Ok(mut g) = record.lock() {
                        g.1 += bytes.len() as u64;
                        // A malformed frame is not counted as arrived.
                        let _ = g.0.record_frame(&bytes, now);
                    }
                }
            });
        }
        conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, endpoint.wait_idle()).await;
        Ok(())
    })?;
    let mut g = arrivals
        .lock()
        .map_err(|_| anyhow!("a quinn receive task panicked"))?;
    let total = g.1;
    Ok((std::mem::take(&mut g.0), total))
}
