//! One lightweight RTMP player: handshake, `connect`, `createStream`, `play`, then read media without decoding
//! it, measuring what a viewer would see.
//!
//! What it measures (time to first keyframe, lag, missed frames) is [`super::measure`]'s, shared with the
//! HTTP-FLV player. A player costs one task, one 16 KiB read buffer and a [`ChunkReader`]; it takes its
//! shared lock once per socket read that completed a stamped frame.

use super::arrival::StampedReader;
use super::chunk_reader::{message_type, ChunkReader, Message};
use super::clock;
use super::measure::{At, FrameMeter, Phase, PlayerShared};
use super::ramp::SpawnPlayer;
use super::rtmp_client::{self, Command, CommandWriter, TX_CONNECT, TX_CREATE_STREAM};
use anyhow::{anyhow, bail, Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Where to play from.
#[derive(Debug, Clone)]
pub struct PlayerConfig {
    /// The server's RTMP address.
    pub addr: SocketAddr,
    /// RTMP application (`live`).
    pub app: String,
    /// Stream key.
    pub stream: String,
    /// How long connect, handshake, `connect`, `createStream` and `play` may take together.
    pub setup_timeout: Duration,
}

impl PlayerConfig {
    fn tc_url(&self) -> String {
        format!("rtmp://{}/{}", self.addr, self.app)
    }
}

/// How the ramp starts RTMP players of `config`'s stream.
pub fn spawner(config: PlayerConfig) -> Box<SpawnPlayer> {
    let config = Arc::new(config);
    Box::new(move |rt, shared, delay| {
        rt.spawn(run(config.clone(), shared, delay));
    })
}

/// Runs one player, after `start_delay`, until its connection ends (or the runtime drops it), recording why
/// it ended.
pub async fn run(config: Arc<PlayerConfig>, shared: Arc<PlayerShared>, start_delay: Duration) {
    tokio::time::sleep(start_delay).await;
    let reason = match play(&config, &shared).await {
        Ok(()) => "the server closed the connection".to_string(),
        Err(e) => format!("{e:#}"),
    };
    shared.lock().phase = Phase::Ended(reason);
}

/// Where the command exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    AwaitConnect,
    AwaitStream,
    AwaitPlay,
    Playing,
}

/// The per-connection state that the chunk reader's callback updates.
struct Session<'a> {
    config: &'a PlayerConfig,
    shared: &'a PlayerShared,
    writer: CommandWriter,
    out: Vec<u8>,
    step: Step,
    error: Option<anyhow::Error>,
    meter: FrameMeter,
    ack_window: Option<u64>,
}

impl Session<'_> {
    fn on_message(&mut self, m: &Message<'_>, at: At) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.handle(m, at) {
            self.error = Some(e);
        }
    }

    fn handle(&mut self, m: &Message<'_>, at: At) -> Result<()> {
        match m.type_id {
            message_type::VIDEO => self.on_video(m.payload, at),
            message_type::AUDIO => {
                self.shared.audio_messages.fetch_add(1, Ordering::Relaxed);
                self.mark_playing();
                Ok(())
            }
            message_type::WINDOW_ACK_SIZE => {
                if let [a, b, c, d, ..] = *m.payload {
                    self.ack_window = Some(u64::from(u32::from_be_bytes([a, b, c, d])).max(1));
                }
                Ok(())
            }
            message_type::USER_CONTROL => {
                // Event 6 is a ping request; answer with its timestamp or the server may drop us.
                if let [0, 6, a, b, c, d, ..] = *m.payload {
                    self.writer
                        .ping_response(&mut self.out, u32::from_be_bytes([a, b, c, d]))?;
                }
                Ok(())
            }
            message_type::AMF0_COMMAND | message_type::AMF3_COMMAND => {
                let command = Command::parse(m.type_id, m.payload)?;
                self.on_command(&command)
            }
            _ => Ok(()),
        }
    }

    fn on_command(&mut self, c: &Command) -> Result<()> {
        match (c.name.as_str(), self.step) {
            ("_result", Step::AwaitConnect) if c.transaction_id == TX_CONNECT => {
                self.writer.create_stream(&mut self.out)?;
                self.step = Step::AwaitStream;
            }
            ("_result", Step::AwaitStream) if c.transaction_id == TX_CREATE_STREAM => {
                let id = c
                    .first_number()
                    .context("createStream's answer has no stream id")?;
                self.writer.play(&mut self.out, id as u32, &self.config.stream)?;
                self.meter.play_requested(clock::now_us());
                self.step = Step::AwaitPlay;
            }
            ("_error", _) => {
                bail!(
                    "the server refused transaction {}: {}",
                    c.transaction_id,
                    c.info("description")
                        .or(c.info("code"))
                        .unwrap_or("no description")
                );
            }
            ("onStatus", _) => {
                let code = c.info("code").unwrap_or("");
                if code == "NetStream.Play.Start" {
                    self.mark_playing();
                } else if code.contains("Failed") || code.contains("NotFound") || code.contains("BadName") {
                    bail!("play refused: {code} ({})", c.info("description").unwrap_or(""));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn mark_playing(&mut self) {
        if self.step == Step::AwaitPlay {
            self.step = Step::Playing;
            self.shared.lock().phase = Phase::Playing;
        }
    }

    fn on_video(&mut self, payload: &[u8], at: At) -> Result<()> {
        self.mark_playing();
        self.meter.on_video(self.shared, payload, at);
        Ok(())
    }
}

async fn play(config: &PlayerConfig, shared: &PlayerShared) -> Result<()> {
    let connect_start = Instant::now();
    let setup_deadline = tokio::time::Instant::from_std(connect_start + config.setup_timeout);
    let mut sock = tokio::time::timeout_at(setup_deadline, TcpStream::connect(config.addr))
        .await
        .map_err(|_| anyhow!("connect timed out"))?
        .with_context(|| format!("connecting to {}", config.addr))?;
    sock.set_nodelay(true).context("TCP_NODELAY")?;
    let leftover = tokio::time::timeout_at(setup_deadline, rtmp_client::handshake_async(&mut sock))
        .await
        .map_err(|_| anyhow!("handshake timed out"))??;

    let mut session = Session {
        config,
        shared,
        writer: CommandWriter::new(),
        out: Vec::with_capacity(512),
        step: Step::AwaitConnect,
        error: None,
        meter: FrameMeter::new(connect_start),
        ack_window: None,
    };
    let tc_url = config.tc_url();
    session.writer.connect(&mut session.out, &config.app, &tc_url)?;
    sock.write_all(&session.out).await.context("sending connect")?;
    session.out.clear();

    let mut reader = ChunkReader::new();
    let mut stamped = StampedReader::new(&sock);
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let mut received = leftover.len() as u64;
    let mut acked = 0u64;
    let mut pending: &[u8] = &leftover;
    let mut at = At::read_at(clock::now_us());
    loop {
        if pending.is_empty() {
            let got = if session.step == Step::Playing {
                stamped.read(&sock, &mut buf).await
            } else {
                tokio::time::timeout_at(setup_deadline, stamped.read(&sock, &mut buf))
                    .await
                    .map_err(|_| anyhow!("no answer to {:?} in time", session.step))?
            }
            .context("reading")?;
            let n = got.bytes;
            if n == 0 {
                return Ok(());
            }
            received += n as u64;
            shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
            pending = &buf[..n];
            at = got.at();
        }
        reader.feed(pending, |m| session.on_message(m, at))?;
        pending = &[];
        if let Some(e) = session.error.take() {
            return Err(e);
        }
        session.meter.flush(shared);
        if let Some(window) = session.ack_window {
            if received - acked >= window {
                session.writer.acknowledgement(&mut session.out, received)?;
                acked = received;
            }
        }
        if !session.out.is_empty() {
            sock.write_all(&session.out).await.context("writing")?;
            session.out.clear();
        }
    }
}
