//! Static relays (`[relays]`): pushes of streams published here to other RTMP servers, and pulls of streams
//! from an RTMP origin published here. They run on threads of their own, outside the data-plane cores
//! (each is one blocking outbound RTMP connection, as ffmpeg would make):
//!
//! - [`config`]: the `[[relays.push]]` / `[[relays.pull]]` entries, checked at start;
//! - [`rtmp_client`]: a blocking RTMP client (rml_rtmp's sans-IO session over a `std` socket);
//! - [`push`]: a worker per (stream, target) while the stream's publisher is live, fed by the stream's owner
//!   core through the manager ([`RelayEvent`]) with bounded queues: a frame lost to a full queue makes that
//!   push skip video to the next keyframe;
//! - [`pull`]: a worker per configured origin stream, publishing it here as a publisher would.

pub mod config;
pub mod pull;
pub mod push;
pub mod rtmp_client;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tracing::warn;

use self::config::{RelaysConfig, RtmpUrl};
use self::push::PushMsg;
use crate::media::Frame;
use crate::node::shared::Shared;
use crate::stream_key::StreamKey;

/// Events the owner cores queue for the push manager.
const EVENT_QUEUE: usize = 8192;
/// Frames queued for one push worker (a slow target loses frames, never memory).
const PUSH_QUEUE: usize = 2048;

/// What a stream's owner core tells the static pushes.
#[derive(Debug)]
pub enum RelayEvent {
    /// A publisher started on a stream some push rule matches.
    Published(StreamKey),
    /// One of its frames.
    Frame(StreamKey, Frame),
    /// A frame to the manager was lost: the pushes skip video to the next keyframe.
    Lost(StreamKey),
    /// Its publisher left.
    Unpublished(StreamKey),
}

/// The channel the owner cores feed, when some push is configured.
pub fn channel(config: &RelaysConfig) -> Option<(Sender<RelayEvent>, Receiver<RelayEvent>)> {
    (!config.push.is_empty()).then(|| crossbeam_channel::bounded(EVENT_QUEUE))
}

/// The running static relays.
#[derive(Debug)]
pub struct Relays {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Relays {
    /// Starts the push manager (reading `events`) and one worker per pull.
    pub fn start(events: Option<Receiver<RelayEvent>>, shared: &Arc<Shared>) -> io::Result<Relays> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let config = &shared.config.relays;
        if let Some(events) = events {
            let rules: Vec<(self::config::PushConfig, RtmpUrl)> = config
                .push
                .iter()
                .filter_map(|p| RtmpUrl::parse(&p.url).ok().map(|u| (p.clone(), u)))
                .collect();
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("popline-pushes".into())
                    .spawn(move || manage(&rules, &events, &stop))?,
            );
        }
        for (index, pull) in config.pull.iter().enumerate() {
            let (Ok(url), Ok(key)) = (RtmpUrl::parse(&pull.url), StreamKey::parse(&pull.stream)) else {
                continue;
            };
            threads.push(pull::spawn(index, url, key, shared.clone(), stop.clone())?);
        }
        Ok(Relays { stop, threads })
    }

    /// Stops every relay and waits for the threads (pushes end with their streams' publishers).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// One running push worker.
struct Active {
    tx: Sender<PushMsg>,
    /// A frame to it was lost: tell it before the next one.
    lost: bool,
}

/// The push manager: starts a worker per matching rule when a stream's publisher starts, hands each its
/// frames, and lets them go when the publisher leaves.
fn manage(rules: &[(self::config::PushConfig, RtmpUrl)], events: &Receiver<RelayEvent>, stop: &AtomicBool) {
    let mut active: HashMap<StreamKey, Vec<Active>> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let event = match events.recv_timeout(Duration::from_millis(200)) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match event {
            RelayEvent::Published(key) => {
                let workers = rules
                    .iter()
                    .filter(|(rule, _)| rule.matches(&key))
                    .filter_map(|(_, url)| {
                        let (tx, rx) = crossbeam_channel::bounded(PUSH_QUEUE);
                        match push::spawn(url.clone(), key.clone(), rx) {
                            Ok(_) => Some(Active { tx, lost: false }),
                            Err(error) => {
                                warn!(stream = %key, %error, "cannot start a static push thread");
                                None
                            }
                        }
                    })
                    .collect();
                // A worker of an earlier publication ends when its sender is dropped here.
                active.insert(key, workers);
            }
            RelayEvent::Frame(key, frame) => {
                for worker in active.get_mut(&key).into_iter().flatten() {
                    if worker.lost {
                        match worker.tx.try_send(PushMsg::Lost) {
                            Ok(()) => worker.lost = false,
                            Err(_) => continue,
                        }
                    }
                    if let Err(TrySendError::Full(_)) = worker.tx.try_send(PushMsg::Frame(frame.clone())) {
                        worker.lost = true;
                    }
                }
            }
            RelayEvent::Lost(key) => {
                for worker in active.get_mut(&key).into_iter().flatten() {
                    worker.lost = true;
                }
            }
            RelayEvent::Unpublished(key) => {
                for worker in active.remove(&key).into_iter().flatten() {
                    // Dropping the sender ends the worker after the frames it has; `End` says so sooner.
                    let _ = worker.tx.try_send(PushMsg::End);
                }
            }
        }
    }
}
