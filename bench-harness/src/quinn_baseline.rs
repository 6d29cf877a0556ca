//! The quinn baseline of `popline-bench transport`: quinn set up as its own `perf` tool sets it up.
//!
//! Per connection, a server endpoint and a client endpoint on 127.0.0.1, each on its own thread with a
//! current-thread tokio runtime (as the popline rows run one driver thread per side per connection).
//! TLS 1.3 through rustls with the ring provider and a self-signed rcgen certificate; UDP GSO on (quinn's
//! default); 2 MiB socket buffers and large flow-control and send windows, as `perf` configures them. The
//! client opens one unidirectional stream and writes `chunk_bytes` chunks continuously; the server reads
//! and counts the bytes. Warm-up, measured window and CPU accounting are the same as the popline rows.

use crate::transport_bench::{join_all, per, sample_window, TransportReport};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{ClientConfig, Endpoint, EndpointConfig, ServerConfig, TokioRuntime, TransportConfig};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;
use tokio::sync::watch;

/// The name of the row.
pub const VARIANT_NAME: &str = "quinn";
/// How long a connection may take to complete its handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an endpoint waits for its connection to drain at the end.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Socket buffer sizes (`perf`'s `--send-buffer-size` / `--recv-buffer-size` defaults: 2 MiB).
const SOCKET_BUFFER_BYTES: usize = 2 << 20;
/// Per-stream receive window (large: flow control never limits a loopback transfer).
const STREAM_RECEIVE_WINDOW: u32 = 64 << 20;
/// Connection receive window.
const RECEIVE_WINDOW: u32 = 128 << 20;
/// Send window (bytes the sender buffers unacknowledged).
const SEND_WINDOW: u64 = 128 << 20;
/// The server name in the certificate.
pub(crate) const SERVER_NAME: &str = "localhost";

/// What a client thread reports when it ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSummary {
    /// Packets the client sent.
    pub(crate) packets_sent: u64,
    /// Packets the client declared lost.
    pub(crate) packets_lost: u64,
    /// The client's RTT estimate at the end.
    pub(crate) rtt: Duration,
    /// Datagrams the client received (ACKs, flow-control updates).
    pub(crate) packets_received: u64,
    /// The path MTU quinn had found at the end (its UDP payload size).
    pub(crate) mtu: u16,
}

/// The transport config both sides use: large windows, as `perf` sets them up; `max_uni_streams` open at
/// once (1 for one bulk stream; more for a stream per frame).
pub(crate) fn transport_config(max_uni_streams: u32) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(RECEIVE_WINDOW.into())
        .send_window(SEND_WINDOW)
        .max_concurrent_uni_streams(max_uni_streams.into())
        .max_concurrent_bidi_streams(0u32.into())
        .enable_segmentation_offload(true);
    Arc::new(t)
}

/// A self-signed certificate for [`SERVER_NAME`]: the server's config and a client config trusting it, both
/// with `transport`.
pub(crate) fn crypto_configs(transport: Arc<TransportConfig>) -> Result<(ServerConfig, ClientConfig)> {
    let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .context("generating the self-signed certificate")?;
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let mut server =
        ServerConfig::with_single_cert(vec![cert.clone()], key.into()).context("quinn server config")?;
    server.transport_config(transport.clone());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).context("trusting the self-signed certificate")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("rustls client protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let quic = QuicClientConfig::try_from(tls).context("quinn client crypto config")?;
    let mut client = ClientConfig::new(Arc::new(quic));
    client.transport_config(transport);
    Ok((server, client))
}

/// A UDP socket bound to `addr` with `perf`'s buffer sizes (capped by the kernel's `rmem_max`/`wmem_max`).
pub(crate) fn bind_socket(addr: SocketAddr) -> Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    s.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    s.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A quinn server endpoint on `bind` (call inside the runtime): its address, or the error, goes to
/// `addr_tx` so the benchmark waiting for it never hangs.
pub(crate) fn server_endpoint(
    cfg: ServerConfig,
    bind: SocketAddr,
    addr_tx: &mpsc::Sender<Result<SocketAddr>>,
) -> Result<Endpoint> {
    let endpoint = match bind_socket(bind).and_then(|socket| {
        Ok(Endpoint::new(
            EndpointConfig::default(),
            Some(cfg),
            socket,
            Arc::new(TokioRuntime),
        )?)
    }) {
        Ok(e) => e,
        Err(e) => {
            let _ = addr_tx.send(Err(anyhow!("{e:#}")));
            return Err(e);
        }
    };
    addr_tx
        .send(endpoint.local_addr().map_err(anyhow::Error::from))
        .map_err(|_| anyhow!("the benchmark went away"))?;
    Ok(endpoint)
}

/// Resolves once the benchmark says stop (or went away).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: stop as well.
    let _ = stop.wait_for(|s| *s).await;
}

/// A current-thread tokio runtime for one side of one connection.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs `connections` quinn bulk connections on loopback: `warmup`, then `window` measured.
pub fn measure(
    connections: usize,
    chunk_bytes: usize,
    warmup: Duration,
    window: Duration,
) -> Result<TransportReport> {
    if chunk_bytes == 0 {
        bail!("--frame-bytes must be positive");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    let mut servers = Vec::new();
    let mut clients = Vec::new();

    let started = (|| -> Result<()> {
        for i in 0..connections {
            let (server_cfg, client_cfg) = crypto_configs(transport_config(1))?;
            let (addr_tx, addr_rx) = mpsc::channel();
            let (stop_s, delivered_s) = (stop_rx.clone(), delivered.clone());
            servers.push(
                thread::Builder::new()
                    .name(format!("quinn-srv-{i}"))
                    .spawn(move || run_server(server_cfg, loopback(), addr_tx, stop_s, &delivered_s))?,
            );
            let server_addr = addr_rx
                .recv_timeout(HANDSHAKE_TIMEOUT)
                .map_err(|_| anyhow!("quinn server {i} did not start"))??;
            let (stop_c, ready) = (stop_rx.clone(), ready_tx.clone());
            clients.push(
                thread::Builder::new()
                    .name(format!("quinn-cli-{i}"))
                    .spawn(move || {
                        run_client(client_cfg, loopback(), server_addr, chunk_bytes, stop_c, ready)
                    })?,
            );
        }
        for _ in 0..connections {
            ready_rx
                .recv_timeout(HANDSHAKE_TIMEOUT * 2)
                .map_err(|_| anyhow!("a quinn connection did not become ready"))??;
        }
        Ok(())
    })();

    let window_result = started.and_then(|()| sample_window(&delivered, warmup, window));
    // Receivers may be gone already (a thread that failed): nothing to tell them then.
    let _ = stop_tx.send(true);

    let (summaries, first_err) = join_all(clients, servers, "quinn ");
    let (bytes, cpu_s, seconds) = window_result?;
    if let Some(e) = first_err {
        return Err(e);
    }
    let gb = bytes as f64 / 1e9;
    Ok(TransportReport {
        variant: VARIANT_NAME,
        connections,
        gbps: gb * 8.0 / seconds.max(1e-9),
        cpu_s_per_gb: if gb > 0.0 { cpu_s / gb } else { f64::INFINITY },
        frame_bytes: chunk_bytes,
        seconds,
        cpu_s,
        bytes,
        packets_lost: summaries.iter().map(|s| s.packets_lost).sum(),
        packets_sent: summaries.iter().map(|s| s.packets_sent).sum(),
        acks_per_packet: per(
            summaries.iter().map(|s| s.packets_received).sum(),
            summaries.iter().map(|s| s.packets_sent).sum(),
        ),
        datagram_bytes: summaries.first().map_or(0, |s| usize::from(s.mtu)),
        send_blocked: None,
        srtt_us: summaries
            .first()
            .map_or(0, |s| s.rtt.as_micros().try_into().unwrap_or(u64::MAX)),
        datagrams_per_iteration: None,
        datagrams_per_batch: None,
        backend: None,
        engine: None,
    })
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The receiving side, on a socket bound to `bind`: accepts one connection and its one unidirectional stream,
/// and counts the bytes read until `stop`.
pub(crate) fn run_server(
    cfg: ServerConfig,
    bind: SocketAddr,
    addr_tx: mpsc::Sender<Result<SocketAddr>>,
    mut stop: watch::Receiver<bool>,
    delivered: &AtomicU64,
) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        let endpoint = server_endpoint(cfg, bind, &addr_tx)?;
        let result = async {
            let incoming = tokio::select! {
                i = endpoint.accept() => i.ok_or_else(|| anyhow!("quinn server endpoint closed"))?,
                _ = stopped(&mut stop) => return Ok(()),
            };
            let conn = incoming.await.context("quinn server handshake")?;
            let mut recv = tokio::select! {
                r = conn.accept_uni() => r.context("accepting the bulk stream")?,
                _ = stopped(&mut stop) => return Ok(()),
            };
            loop {
                tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => break,
                    r = recv.read_chunk(usize::MAX, true) => match r {
                        Ok(Some(chunk)) => {
                            delivered.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
                        }
                        Ok(None) => break,
                        // The client closes the connection once told to stop.
                        Err(_) if *stop.borrow() => break,
                        Err(e) => return Err(anyhow!("quinn server read: {e}")),
                    },
                }
            }
            conn.close(0u32.into(), b"done");
            Ok(())
        }
        .await;
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, endpoint.wait_idle()).await;
        result
    })
}

/// The sending side, on a socket bound to `bind`: connects, opens one unidirectional stream, reports ready,
/// and writes chunks until `stop`.
pub(crate) fn run_client(
    cfg: ClientConfig,
    bind: SocketAddr,
    server: SocketAddr,
    chunk_bytes: usize,
    mut stop: watch::Receiver<bool>,
    ready: mpsc::Sender<Result<()>>,
) -> Result<ClientSummary> {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(anyhow!("{e:#}")));
            return Err(e);
        }
    };
    rt.block_on(async move {
        let connected = async {
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
            let send = conn.open_uni().await.context("opening the bulk stream")?;
            Ok::<_, anyhow::Error>((endpoint, conn, send))
        }
        .await;
        let (endpoint, conn, mut send) = match connected {
            Ok(x) => {
                let _ = ready.send(Ok(()));
                x
            }
            Err(e) => {
                let _ = ready.send(Err(anyhow!("{e:#}")));
                return Err(e);
            }
        };
        let payload = Bytes::from(vec![0xb0u8; chunk_bytes]);
        let result = loop {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break Ok(()),
                r = send.write_chunk(payload.clone()) => {
                    match r {
                        Ok(()) => {}
                        // The server may close first once told to stop.
                        Err(_) if *stop.borrow() => break Ok(()),
                        Err(e) => break Err(anyhow!("quinn client write: {e}")),
                    }
                }
            }
        };
        let stats = conn.stats();
        let summary = ClientSummary {
            packets_sent: stats.path.sent_packets,
            packets_lost: stats.path.lost_packets,
            rtt: conn.rtt(),
            packets_received: stats.udp_rx.datagrams,
            mtu: stats.path.current_mtu,
        };
        conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, endpoint.wait_idle()).await;
        result.map(|()| summary)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quinn_moves_data_on_loopback() {
        let _turn = crate::HEAVY_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let r = measure(
            1,
            64 * 1024,
            Duration::from_millis(100),
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(r.bytes > 0, "{r:?}");
        assert!(r.gbps > 0.0, "{r:?}");
        assert_eq!(r.variant, "quinn");
        assert_eq!(r.connections, 1);
        assert!(r.packets_sent > 0, "{r:?}");
    }
}
