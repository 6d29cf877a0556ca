//! A static pull: one worker thread per configured origin stream. It plays the stream from the origin and
//! publishes it on this node under its local name, as a publisher would (the same owner core, GOP cache,
//! viewers, mesh and pushes), reconnecting with a backoff for as long as the node runs. A forbidden stream
//! is not pulled while the ban lasts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rml_rtmp::sessions::ClientSessionEvent;
use tracing::{info, warn};

use super::config::RtmpUrl;
use super::rtmp_client::{RelayError, RtmpClient};
use crate::control::ClientId;
use crate::media::Frame;
use crate::node::mailbox::CoreMsg;
use crate::node::shared::Shared;
use crate::node::streams::passes_after_loss;
use crate::rtmp::ingest::Ingest;
use crate::stream_key::StreamKey;

/// How long connecting and each answer may take.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often a running pull looks at the bans and the stop flag.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// A publication from the origin ends after this long without a frame (nginx-rtmp tells its players a
/// publisher left with a StreamEOF that rml_rtmp does not report, or with `NetStream.Play.UnpublishNotify`).
const ORIGIN_IDLE: Duration = Duration::from_secs(2);
/// The "core" in the client ids of pulls: no core has it, so the API's kick of one finds nothing to close
/// (forbid stops a pull; removing it from the config does too).
pub const PULL_CORE: usize = 0xffff;

/// Starts pull number `index`: `url` (`rtmp://HOST[:PORT]/APP/STREAM`) published here as `key`.
pub fn spawn(
    index: usize,
    url: RtmpUrl,
    key: StreamKey,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("popline-pull-{index}"))
        .spawn(move || {
            let worker = Worker {
                id: ClientId::new(PULL_CORE, index as u64 + 1),
                url,
                key: key.clone(),
                shared,
                stop,
            };
            let run = std::panic::AssertUnwindSafe(|| worker.run());
            if std::panic::catch_unwind(run).is_err() {
                warn!(stream = %key, "static pull worker panicked; the pull stops");
            }
        })
}

struct Worker {
    id: ClientId,
    url: RtmpUrl,
    key: StreamKey,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn source(&self) -> String {
        format!(
            "rtmp://{}/{}/{}",
            self.url.authority,
            self.url.app,
            self.url.stream.as_deref().unwrap_or("")
        )
    }

    fn run(&self) {
        let mut backoff = FIRST_BACKOFF;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(ban) = self.shared.bans.check(&self.key) {
                info!(stream = %self.key, reason = %ban.reason, "static pull paused: the stream is forbidden");
                self.sleep(Duration::from_secs(1));
                continue;
            }
            match self.connect() {
                Ok(client) => {
                    backoff = FIRST_BACKOFF;
                    match self.pull(client) {
                        Ok(why) => {
                            info!(stream = %self.key, source = %self.source(), why, "static pull ended")
                        }
                        Err(error) => {
                            warn!(stream = %self.key, source = %self.source(), %error, "static pull lost")
                        }
                    }
                }
                Err(error) => {
                    warn!(stream = %self.key, source = %self.source(), %error, retry_in = ?backoff, "static pull cannot connect")
                }
            }
            self.sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn sleep(&self, total: Duration) {
        let until = Instant::now() + total;
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(CHECK_EVERY.min(until.saturating_duration_since(Instant::now())));
        }
    }

    fn connect(&self) -> Result<RtmpClient, RelayError> {
        let mut client = RtmpClient::connect(&self.url, ANSWER_WAIT)?;
        client.play(self.url.stream.as_deref().unwrap_or(""), ANSWER_WAIT)?;
        Ok(client)
    }

    fn post(&self, message: CoreMsg) -> bool {
        let owner = self.shared.owner_of(&self.key);
        self.shared
            .mailboxes
            .get(owner)
            .is_some_and(|m| m.send(message).is_ok())
    }

    /// Publishes what the origin sends (from its first frame on) until it stops (`Ok` with why), the stream
    /// is forbidden, or the node stops.
    fn pull(&self, mut client: RtmpClient) -> Result<&'static str, RelayError> {
        info!(stream = %self.key, source = %self.source(), "static pull playing the origin");
        let mut published = false;
        let result = self.relay(&mut client, &mut published);
        if published {
            self.post(CoreMsg::PublishEnd {
                key: self.key.clone(),
                publisher: self.id,
            });
            self.shared.release(&self.key, self.id);
        }
        result
    }

    /// Claims the stream here and starts its publication (at the origin's first frame).
    fn start(&self) -> Result<(), RelayError> {
        if let Err(current) = self.shared.claim(&self.key, self.id) {
            return Err(RelayError::Rtmp(format!(
                "the stream is published here by client {} already",
                current.0
            )));
        }
        info!(stream = %self.key, source = %self.source(), "static pull: the origin's stream is published here");
        self.post(CoreMsg::PublishStart {
            key: self.key.clone(),
            publisher: self.id,
        });
        Ok(())
    }

    fn relay(&self, client: &mut RtmpClient, published: &mut bool) -> Result<&'static str, RelayError> {
        let mut ingest = Ingest::new();
        let mut needs_key = false;
        let mut next_check = Instant::now() + CHECK_EVERY;
        let mut last_frame = Instant::now();
        loop {
            if *published && last_frame.elapsed() >= ORIGIN_IDLE {
                return Ok("the origin's publisher stopped (no frame for 2 s)");
            }
            if Instant::now() >= next_check {
                if self.stop.load(Ordering::Relaxed) {
                    return Ok("the node is stopping");
                }
                if self.shared.bans.check(&self.key).is_some() {
                    return Ok("the stream is forbidden");
                }
                next_check = Instant::now() + CHECK_EVERY;
            }
            let Some(event) = client.next_event(CHECK_EVERY)? else {
                continue;
            };
            let now = Instant::now();
            let frame: Option<Frame> = match event {
                ClientSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                    ingest.video(data, timestamp.value, now).ok()
                }
                ClientSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                    ingest.audio(data, timestamp.value, now).ok()
                }
                ClientSessionEvent::StreamMetadataReceived { metadata, .. } => {
                    Some(ingest.metadata(&metadata, now))
                }
                ClientSessionEvent::UnhandleableOnStatusCode { code }
                    if code == "NetStream.Play.UnpublishNotify" || code == "NetStream.Play.Stop" =>
                {
                    return Ok("the origin's publisher stopped");
                }
                _ => None,
            };
            let Some(frame) = frame else {
                continue;
            };
            if !*published {
                self.start()?;
                *published = true;
            }
            last_frame = now;
            if !passes_after_loss(&mut needs_key, &frame) {
                continue;
            }
            let owner = self.shared.owner_of(&self.key);
            let Some(mailbox) = self.shared.mailboxes.get(owner) else {
                return Ok("the node is stopping");
            };
            let message = CoreMsg::Ingest {
                key: self.key.clone(),
                frame,
            };
            if mailbox.send(message).is_err() {
                needs_key = true;
            }
        }
    }
}
