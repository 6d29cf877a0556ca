//! A static push: one worker thread per (stream, target) re-publishing a stream published here to another
//! RTMP server while its publisher is live. A connection that fails is made again with a backoff; the new
//! one gets the stream's sequence headers first and then waits for a keyframe, so the far side never gets
//! a frame whose reference it lacks.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tracing::{info, warn};

use super::config::RtmpUrl;
use super::rtmp_client::{RelayError, RtmpClient};
use crate::media::{Frame, MediaKind};
use crate::node::streams::passes_after_loss;
use crate::stream_key::StreamKey;

/// How long connecting and each answer may take.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// The first wait before connecting again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the server's messages (acknowledgements, pings) are read while publishing.
const READ_EVERY: Duration = Duration::from_millis(500);

/// What a push worker is told.
#[derive(Debug)]
pub enum PushMsg {
    /// A frame of the stream.
    Frame(Frame),
    /// A frame (or more) was lost before the worker: skip video to the next keyframe.
    Lost,
    /// The publisher left: unpublish and stop.
    End,
}

/// Starts the worker pushing `key` to `url` (`rtmp://HOST[:PORT]/APP`, the stream's name appended).
pub fn spawn(url: RtmpUrl, key: StreamKey, rx: Receiver<PushMsg>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("popline-push-{}", key.stream()))
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| Worker::new(url, key.clone()).run(&rx));
            if std::panic::catch_unwind(run).is_err() {
                warn!(stream = %key, "static push worker panicked; the push stops");
            }
        })
}

struct Worker {
    url: RtmpUrl,
    key: StreamKey,
    /// The newest sequence header per track: a new connection gets them first.
    headers: Vec<Frame>,
    backoff: Duration,
}

impl Worker {
    fn new(url: RtmpUrl, key: StreamKey) -> Worker {
        Worker {
            url,
            key,
            headers: Vec::new(),
            backoff: FIRST_BACKOFF,
        }
    }

    fn remember(&mut self, frame: &Frame) {
        if frame.kind == MediaKind::SeqHeader {
            self.headers.retain(|h| h.track != frame.track);
            self.headers.push(frame.clone());
        }
    }

    fn run(mut self, rx: &Receiver<PushMsg>) {
        let target = format!(
            "rtmp://{}/{}/{}",
            self.url.authority,
            self.url.app,
            self.key.stream()
        );
        loop {
            match self.connect() {
                Ok(client) => {
                    info!(stream = %self.key, %target, "static push connected");
                    self.backoff = FIRST_BACKOFF;
                    match self.publish(client, rx) {
                        Ok(()) => {
                            info!(stream = %self.key, %target, "static push ended with the stream");
                            return;
                        }
                        Err(error) => {
                            warn!(stream = %self.key, %target, %error, "static push lost; connecting again")
                        }
                    }
                }
                Err(error) => {
                    warn!(stream = %self.key, %target, %error, retry_in = ?self.backoff, "static push cannot connect")
                }
            }
            // Wait out the backoff, keeping the sequence headers up to date; the stream may end meanwhile.
            let until = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            loop {
                match rx.recv_deadline(until) {
                    Ok(PushMsg::Frame(frame)) => self.remember(&frame),
                    Ok(PushMsg::Lost) => {}
                    Ok(PushMsg::End) | Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
        }
    }

    fn connect(&self) -> Result<RtmpClient, RelayError> {
        let mut client = RtmpClient::connect(&self.url, ANSWER_WAIT)?;
        client.publish(self.key.stream(), ANSWER_WAIT)?;
        Ok(client)
    }

    /// Publishes until the stream ends (`Ok`) or the connection fails.
    fn publish(&mut self, mut client: RtmpClient, rx: &Receiver<PushMsg>) -> Result<(), RelayError> {
        for header in self.headers.clone() {
            client.send_frame(&header)?;
        }
        let mut needs_key = true;
        let mut next_read = Instant::now() + READ_EVERY;
        loop {
            match rx.recv_timeout(READ_EVERY) {
                Ok(PushMsg::Frame(frame)) => {
                    self.remember(&frame);
                    if passes_after_loss(&mut needs_key, &frame) {
                        client.send_frame(&frame)?;
                    }
                }
                Ok(PushMsg::Lost) => needs_key = true,
                Ok(PushMsg::End) | Err(RecvTimeoutError::Disconnected) => {
                    return client.finish_publishing(ANSWER_WAIT);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_read {
                client.poll_input(Duration::from_millis(1))?;
                next_read = Instant::now() + READ_EVERY;
            }
        }
    }
}
