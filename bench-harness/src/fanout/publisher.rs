//! The publisher: one RTMP client (rml_rtmp's `ClientSession`) that pushes a [`MediaSource`] at real time,
//! stamping each video frame with its send time just before the write.
//!
//! It runs on its own OS thread with a blocking socket, not on the players' runtime, so that its pacing does not
//! wait behind thousands of player tasks; a second thread drains what the server sends back (acknowledgements).
//! On request it logs each tag's media time and send time ([`SendLog`]).

use super::clock;
use super::flv::TAG_VIDEO;
use super::rtmp_client;
use super::sei::Stamp;
use super::send_log::{SendLog, Sent};
use super::source::MediaSource;
use anyhow::{anyhow, bail, Context, Result};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long connecting and the publish handshake may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the drain thread checks whether to stop.
const DRAIN_TICK: Duration = Duration::from_millis(200);

/// What the publisher has done so far, read by the ramp.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Video frames sent (sequence headers excluded).
    pub video_frames: AtomicU64,
    /// Bytes written to the socket.
    pub bytes: AtomicU64,
    /// Largest delay of a send behind its schedule, in microseconds (a blocked socket shows here).
    pub max_late_us: AtomicU64,
    /// Why the publisher stopped, if it stopped on its own.
    pub failure: Mutex<Option<String>>,
}

impl PublisherStats {
    /// Why the publisher stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A running publisher.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    /// A handle on the connection, to unblock both threads when stopping.
    control: TcpStream,
    threads: Vec<JoinHandle<()>>,
    /// Its progress and failure.
    pub stats: Arc<PublisherStats>,
}

impl Publisher {
    /// Connects to `addr`, publishes `app`/`stream` (live) and starts sending `source` at real time. Returns
    /// once the server accepted the publish, or with the reason it did not.
    pub fn start(addr: SocketAddr, app: &str, stream: &str, source: Arc<MediaSource>) -> Result<Self> {
        Self::start_logged(addr, app, stream, source, None)
    }

    /// [`Publisher::start`], recording each tag it sends (after the sequence headers) in `log`.
    pub fn start_logged(
        addr: SocketAddr,
        app: &str,
        stream: &str,
        source: Arc<MediaSource>,
        log: Option<Arc<SendLog>>,
    ) -> Result<Self> {
        let mut sock = TcpStream::connect_timeout(&addr, SETUP_TIMEOUT)
            .with_context(|| format!("connecting to {addr}"))?;
        sock.set_nodelay(true).context("TCP_NODELAY")?;
        sock.set_read_timeout(Some(SETUP_TIMEOUT))
            .context("SO_RCVTIMEO")?;
        let leftover = rtmp_client::handshake_blocking(&mut sock)?;
        let mut session = publish(&mut sock, leftover, addr, app, stream)?;
        let metadata = session
            .publish_metadata(&source.metadata)
            .map_err(|e| anyhow!("serializing metadata: {e:?}"))?;
        send(&mut sock, vec![metadata])?;

        // A server that stops reading must not hang the publisher (and the run) forever.
        sock.set_write_timeout(Some(SETUP_TIMEOUT))
            .context("SO_SNDTIMEO")?;
        let control = sock.try_clone().context("cloning the publisher's socket")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(PublisherStats::default());
        let mut drain_sock = sock.try_clone().context("cloning the publisher's socket")?;
        drain_sock
            .set_read_timeout(Some(DRAIN_TICK))
            .context("SO_RCVTIMEO")?;
        let drain_stop = stop.clone();
        let drain = std::thread::Builder::new()
            .name("fanout-pub-drain".into())
            .spawn(move || drain_loop(&mut drain_sock, &drain_stop))
            .context("spawning the publisher's drain thread")?;
        let send_stop = stop.clone();
        let send_stats = stats.clone();
        let sender = std::thread::Builder::new()
            .name("fanout-publisher".into())
            .spawn(move || {
                let sent = SendLoop {
                    source: &source,
                    stop: &send_stop,
                    stats: &send_stats,
                    log: log.as_deref(),
                };
                if let Err(e) = sent.run(&mut sock, &mut session) {
                    *send_stats.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
                }
                // Unblocks the drain thread's read and tells the server the stream ended.
                let _ = sock.shutdown(std::net::Shutdown::Both);
            })
            .context("spawning the publisher thread")?;
        Ok(Self {
            stop,
            control,
            threads: vec![sender, drain],
            stats,
        })
    }

    /// Stops sending, closes the connection and waits for the threads.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.control.shutdown(std::net::Shutdown::Both);
    }
}

fn send(sock: &mut TcpStream, results: Vec<ClientSessionResult>) -> Result<Vec<ClientSessionEvent>> {
    let mut events = Vec::new();
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => sock.write_all(&p.bytes).context("writing")?,
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    Ok(events)
}

/// `connect`, `createStream` and `publish`, driven by rml_rtmp's session.
fn publish(
    sock: &mut TcpStream,
    leftover: Vec<u8>,
    addr: SocketAddr,
    app: &str,
    stream: &str,
) -> Result<ClientSession> {
    let mut config = ClientSessionConfig::new();
    config.tc_url = Some(format!("rtmp://{addr}/{app}"));
    let (mut session, initial) = ClientSession::new(config).map_err(|e| anyhow!("client session: {e:?}"))?;
    send(sock, initial)?;
    let request = session
        .request_connection(app.into())
        .map_err(|e| anyhow!("connect: {e:?}"))?;
    send(sock, vec![request])?;
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut input = leftover;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !input.is_empty() {
            let results = session
                .handle_input(&input)
                .map_err(|e| anyhow!("from the server: {e:?}"))?;
            input.clear();
            for event in send(sock, results)? {
                match event {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let r = session
                            .request_publishing(stream.into(), PublishRequestType::Live)
                            .map_err(|e| anyhow!("publish: {e:?}"))?;
                        send(sock, vec![r])?;
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        bail!("connect refused: {description}")
                    }
                    ClientSessionEvent::PublishRequestAccepted => return Ok(session),
                    ClientSessionEvent::UnhandleableOnStatusCode { code } if code.contains("Publish") => {
                        bail!("publish refused: {code}")
                    }
                    _ => {}
                }
            }
        }
        if Instant::now() > deadline {
            bail!("the server did not accept the publish within {SETUP_TIMEOUT:?}");
        }
        let n = sock
            .read(&mut buf)
            .context("reading the server's answer to publish")?;
        if n == 0 {
            bail!("the server closed the connection before accepting the publish");
        }
        input.extend_from_slice(&buf[..n]);
    }
}

fn drain_loop(sock: &mut TcpStream, stop: &AtomicBool) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// What the sending thread works with.
struct SendLoop<'a> {
    source: &'a MediaSource,
    stop: &'a AtomicBool,
    stats: &'a PublisherStats,
    log: Option<&'a SendLog>,
}

impl SendLoop<'_> {
    fn run(&self, sock: &mut TcpStream, session: &mut ClientSession) -> Result<()> {
        let Self {
            source,
            stop,
            stats,
            log,
        } = *self;
        let start = Instant::now();
        for tag in &source.headers {
            let packet = if tag.tag_type == TAG_VIDEO {
                session.publish_video_data(tag.data.clone(), RtmpTimestamp::new(0), false)
            } else {
                session.publish_audio_data(tag.data.clone(), RtmpTimestamp::new(0), false)
            }
            .map_err(|e| anyhow!("serializing a sequence header: {e:?}"))?;
            send(sock, vec![packet])?;
        }
        let mut seq = 0u32;
        for pass in 0u64.. {
            let offset_ms = pass * u64::from(source.loop_ms);
            for tag in &source.body {
                let ts_ms = offset_ms + u64::from(tag.timestamp_ms);
                let due = start + Duration::from_millis(ts_ms);
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let now = Instant::now();
                    if now >= due {
                        let late = u64::try_from((now - due).as_micros()).unwrap_or(u64::MAX);
                        stats.max_late_us.fetch_max(late, Ordering::Relaxed);
                        break;
                    }
                    std::thread::sleep((due - now).min(Duration::from_millis(50)));
                }
                // RTMP timestamps are 32-bit milliseconds and wrap (after 49 days).
                let ts = RtmpTimestamp::new(ts_ms as u32);
                let send_us = clock::now_us();
                let packet = if tag.tag_type == TAG_VIDEO {
                    let data = source.stamped(tag, Stamp { send_us, seq });
                    if tag.is_avc_nalu() {
                        seq = seq.wrapping_add(1);
                        stats.video_frames.fetch_add(1, Ordering::Relaxed);
                    }
                    session.publish_video_data(data, ts, false)
                } else {
                    session.publish_audio_data(tag.data.clone(), ts, false)
                }
                .map_err(|e| anyhow!("serializing a frame: {e:?}"))?;
                if let ClientSessionResult::OutboundResponse(packet) = packet {
                    // Logged before the write: the server cannot have the tag before the log has it.
                    if let Some(log) = log {
                        log.record(Sent {
                            ts_ms,
                            send_us,
                            keyframe: tag.is_keyframe() && !tag.is_sequence_header(),
                        });
                    }
                    stats
                        .bytes
                        .fetch_add(packet.bytes.len() as u64, Ordering::Relaxed);
                    sock.write_all(&packet.bytes).context("sending media")?;
                }
            }
        }
        Ok(())
    }
}
