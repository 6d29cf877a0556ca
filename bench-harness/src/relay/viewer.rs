//! A lightweight RTMP viewer for the relay benchmark: handshake, `connect`, `createStream`, `play`, then read
//! media without decoding it ([`ChunkReader`] keeps a 64-byte prefix), recording for every stamped video
//! frame its number, kind and arrival time.
//!
//! It runs on one blocking thread that entered the PoP's network namespace, so its sockets are there; the
//! publisher's stamps and the arrival times are on the same [`clock`], in this process.

use super::stream::FrameKind;
use crate::fanout::chunk_reader::{message_type, ChunkReader, Message};
use crate::fanout::clock;
use crate::fanout::rtmp_client::{self, Command, CommandWriter, TX_CONNECT, TX_CREATE_STREAM};
use crate::fanout::sei;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long connecting and the command exchange may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a blocked read checks whether to stop.
const READ_TICK: Duration = Duration::from_millis(100);

/// One stamped video frame as a viewer got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The publisher's frame number.
    pub seq: u32,
    /// Its role in decoding.
    pub kind: FrameKind,
    /// When the publisher wrote it (microseconds on [`clock`]).
    pub send_us: u64,
    /// When the viewer had all of it.
    pub arrival_us: u64,
}

/// What a viewer returns when it stops.
#[derive(Debug, Default)]
pub struct ViewerLog {
    /// Every stamped video frame, in arrival order.
    pub arrivals: Vec<Arrival>,
    /// Why the session ended before it was stopped, if it did.
    pub ended: Option<String>,
}

/// Plays `app`/`stream` from `addr` until `stop` is set; call it on a thread in the PoP's namespace.
pub fn run(addr: SocketAddr, app: &str, stream: &str, stop: &Arc<AtomicBool>) -> Result<ViewerLog> {
    let mut log = ViewerLog::default();
    if let Err(e) = play(addr, app, stream, stop, &mut log) {
        log.ended = Some(format!("{e:#}"));
    }
    Ok(log)
}

/// Where the command exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    AwaitConnect,
    AwaitStream,
    Playing,
}

struct Session<'a> {
    stream: &'a str,
    writer: CommandWriter,
    out: Vec<u8>,
    step: Step,
    error: Option<anyhow::Error>,
    ack_window: Option<u64>,
    log: &'a mut ViewerLog,
}

impl Session<'_> {
    fn on_message(&mut self, m: &Message<'_>, now_us: u64) {
        if self.error.is_none() {
            if let Err(e) = self.handle(m, now_us) {
                self.error = Some(e);
            }
        }
    }

    fn handle(&mut self, m: &Message<'_>, now_us: u64) -> Result<()> {
        match m.type_id {
            message_type::VIDEO => {
                if let (Some(stamp), Some(kind)) =
                    (sei::find_stamp(m.payload), FrameKind::of_message(m.payload))
                {
                    self.log.arrivals.push(Arrival {
                        seq: stamp.seq,
                        kind,
                        send_us: stamp.send_us,
                        arrival_us: now_us,
                    });
                }
            }
            message_type::WINDOW_ACK_SIZE => {
                if let [a, b, c, d, ..] = *m.payload {
                    self.ack_window = Some(u64::from(u32::from_be_bytes([a, b, c, d])).max(1));
                }
            }
            message_type::USER_CONTROL => {
                if let [0, 6, a, b, c, d, ..] = *m.payload {
                    self.writer
                        .ping_response(&mut self.out, u32::from_be_bytes([a, b, c, d]))?;
                }
            }
            message_type::AMF0_COMMAND | message_type::AMF3_COMMAND => {
                let c = Command::parse(m.type_id, m.payload)?;
                match (c.name.as_str(), self.step) {
                    ("_result", Step::AwaitConnect) if c.transaction_id == TX_CONNECT => {
                        self.writer.create_stream(&mut self.out)?;
                        self.step = Step::AwaitStream;
                    }
                    ("_result", Step::AwaitStream) if c.transaction_id == TX_CREATE_STREAM => {
                        let id = c
                            .first_number()
                            .context("createStream's answer has no stream id")?;
                        self.writer.play(&mut self.out, id as u32, self.stream)?;
                        self.step = Step::Playing;
                    }
                    ("_error", _) => bail!("the server refused transaction {}", c.transaction_id),
                    ("onStatus", _) => {
                        let code = c.info("code").unwrap_or("");
                        if code.contains("Failed") || code.contains("NotFound") || code.contains("BadName") {
                            bail!("play refused: {code}");
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn play(addr: SocketAddr, app: &str, stream: &str, stop: &AtomicBool, log: &mut ViewerLog) -> Result<()> {
    let started = Instant::now();
    let mut sock =
        TcpStream::connect_timeout(&addr, SETUP_TIMEOUT).with_context(|| format!("connecting to {addr}"))?;
    sock.set_nodelay(true).context("TCP_NODELAY")?;
    sock.set_read_timeout(Some(SETUP_TIMEOUT))
        .context("SO_RCVTIMEO")?;
    sock.set_write_timeout(Some(SETUP_TIMEOUT))
        .context("SO_SNDTIMEO")?;
    let leftover = rtmp_client::handshake_blocking(&mut sock)?;
    sock.set_read_timeout(Some(READ_TICK)).context("SO_RCVTIMEO")?;
    let mut session = Session {
        stream,
        writer: CommandWriter::new(),
        out: Vec::with_capacity(512),
        step: Step::AwaitConnect,
        error: None,
        ack_window: None,
        log,
    };
    session
        .writer
        .connect(&mut session.out, app, &format!("rtmp://{addr}/{app}"))?;
    sock.write_all(&session.out).context("sending connect")?;
    session.out.clear();

    let mut reader = ChunkReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = leftover;
    let mut received = pending.len() as u64;
    let mut acked = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if pending.is_empty() {
            match sock.read(&mut buf) {
                Ok(0) => bail!("the server closed the connection"),
                Ok(n) => {
                    received += n as u64;
                    pending.extend_from_slice(&buf[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if session.step != Step::Playing && started.elapsed() > SETUP_TIMEOUT {
                        bail!("no answer to {:?} in time", session.step);
                    }
                    continue;
                }
                Err(e) => return Err(anyhow!(e).context("reading")),
            }
        }
        let now_us = clock::now_us();
        reader.feed(&pending, |m| session.on_message(m, now_us))?;
        pending.clear();
        if let Some(e) = session.error.take() {
            return Err(e);
        }
        if let Some(window) = session.ack_window {
            if received - acked >= window {
                session.writer.acknowledgement(&mut session.out, received)?;
                acked = received;
            }
        }
        if !session.out.is_empty() {
            sock.write_all(&session.out).context("writing")?;
            session.out.clear();
        }
    }
    Ok(())
}
