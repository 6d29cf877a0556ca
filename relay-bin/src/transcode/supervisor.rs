//! [`Transcoder`]: the thread that runs the [`Planner`]'s ffmpeg workers. Every 500 ms it lists the node's
//! live streams, reaps workers that ended (the planner schedules their restart), performs the planner's
//! actions, and publishes what runs (`GET /api/v1/transcodes`, stats, `/metrics`): each worker's
//! renditions, process, CPU time, restarts and lag (its source's newest frame less its renditions' oldest
//! newest frame, on the timeline both share: `-copyts`).
//!
//! A worker is one ffmpeg process that plays the source from this node over RTMP and publishes each
//! rendition back to it (`rtmp://127.0.0.1:PORT/APP/STREAM_720p`, signed when publishing needs a token), so
//! renditions are streams like any other: RTMP, HTTP-FLV, HLS, recording, mesh. Its log lines go to the
//! node's log (the last few are kept for the API).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use tracing::{info, warn};

use super::ladder::{ffmpeg_args, EncoderSettings, Rendition};
use super::plan::{Action, Planner, Source};
use crate::control::NodeControl;
use crate::stream_key::StreamKey;

/// How often the thread looks (each look lists the node's streams, a query of every core).
const TICK: Duration = Duration::from_millis(500);

/// Log lines of a worker kept for the API.
const KEPT_LINES: usize = 5;

/// One worker, as `GET /api/v1/transcodes` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TranscodeInfo {
    /// The source.
    pub stream: StreamKey,
    /// The renditions' stream names.
    pub renditions: Vec<String>,
    /// `running`, or `restarting` (waiting out its pause).
    pub state: &'static str,
    /// The ffmpeg process, while running.
    pub pid: Option<u32>,
    /// CPU seconds of the running process.
    pub cpu_s: f64,
    /// CPU seconds of this stream's workers that ended, and of the running one.
    pub cpu_s_total: f64,
    /// Times the worker was started again after it ended.
    pub restarts: u64,
    /// The source's newest frame less the slowest rendition's newest frame, in ms (`None` until every
    /// rendition is live).
    pub lag_ms: Option<i64>,
    /// The worker's last log lines.
    pub last_log: Vec<String>,
}

/// What the transcoder did, for stats and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TranscodeStats {
    /// Workers running now.
    pub workers: u64,
    /// Worker restarts since the node started.
    pub restarts: u64,
    /// Automatic starts refused because every worker was taken.
    pub refused: u64,
    /// CPU seconds of every worker since the node started.
    pub cpu_s: f64,
    /// Each worker.
    pub transcodes: Vec<TranscodeInfo>,
}

/// How the transcoder runs.
#[derive(Debug, Clone)]
pub struct TranscoderSettings {
    /// The ffmpeg program.
    pub ffmpeg: PathBuf,
    /// The node's RTMP address (the workers play and publish there).
    pub rtmp: SocketAddr,
    /// How the renditions are encoded.
    pub encoder: EncoderSettings,
    /// The publish token secret (`auth.publish_secret`), to sign the renditions' publishes.
    pub publish_secret: Option<String>,
}

type Reply = Sender<Result<(), String>>;

/// The running transcoder; dropping it stops every worker.
pub struct Transcoder {
    requests: Sender<(StreamKey, bool, Reply)>,
    stats: Arc<Mutex<TranscodeStats>>,
    stop: Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Transcoder {
    /// Starts the thread.
    pub fn start(
        settings: TranscoderSettings,
        planner: Planner,
        control: Arc<dyn NodeControl>,
    ) -> std::io::Result<Transcoder> {
        let (requests, requested) = crossbeam_channel::bounded(64);
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let stats = Arc::new(Mutex::new(TranscodeStats::default()));
        let shared = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("popline-transcode".into())
            .spawn(move || {
                let mut runner = Runner {
                    settings,
                    planner,
                    control,
                    workers: HashMap::new(),
                    cpu_ended: HashMap::new(),
                    cpu_last: HashMap::new(),
                    cpu_gone: 0.0,
                    listed: HashMap::new(),
                    restarts: 0,
                    stats: shared,
                };
                runner.run(&requested, &stopped);
            })?;
        Ok(Transcoder {
            requests,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    /// Turns transcoding of `key` on or off (`Err`: why not, e.g. no ladder or no free worker).
    pub fn request(&self, key: &StreamKey, on: bool) -> Result<(), String> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.requests
            .try_send((key.clone(), on, reply))
            .map_err(|_| "the transcoder is busy; try again".to_string())?;
        answer
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| "the transcoder did not answer in time".to_string())?
    }

    /// What runs now.
    pub fn stats(&self) -> TranscodeStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Transcoder {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One worker process.
struct Worker {
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

struct Runner {
    settings: TranscoderSettings,
    planner: Planner,
    control: Arc<dyn NodeControl>,
    workers: HashMap<StreamKey, Worker>,
    /// CPU seconds of each stream's ended workers (while the stream has a worker).
    cpu_ended: HashMap<StreamKey, f64>,
    /// The last CPU reading of each running worker.
    cpu_last: HashMap<StreamKey, f64>,
    /// CPU seconds of workers of streams no longer transcoded.
    cpu_gone: f64,
    /// The renditions each source's HLS multivariant playlist lists now (those live), with the audio
    /// bitrate (0: the source has no audio).
    listed: HashMap<StreamKey, (Vec<Rendition>, u32)>,
    restarts: u64,
    stats: Arc<Mutex<TranscodeStats>>,
}

impl Runner {
    fn run(&mut self, requests: &Receiver<(StreamKey, bool, Reply)>, stopped: &Receiver<()>) {
        loop {
            match stopped.recv_timeout(TICK) {
                Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            while let Ok((key, on, reply)) = requests.try_recv() {
                let result = self.planner.request(&key, on);
                if let Err(error) = &result {
                    warn!(stream = %key, on, %error, "transcode request refused");
                } else {
                    info!(stream = %key, on, "transcode turned {} by the API", if on { "on" } else { "off" });
                }
                let _ = reply.send(result);
            }
            self.tick();
        }
        for (key, worker) in self.workers.drain() {
            stop(key, worker, "the node stops");
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let streams = self.control.streams();
        // Reap the workers that ended.
        let ended: Vec<StreamKey> = self
            .workers
            .iter_mut()
            .filter_map(|(key, w)| matches!(w.child.try_wait(), Ok(Some(_)) | Err(_)).then(|| key.clone()))
            .collect();
        for key in ended {
            if let Some(mut worker) = self.workers.remove(&key) {
                let cpu = self.cpu_last.remove(&key).unwrap_or(0.0);
                *self.cpu_ended.entry(key.clone()).or_default() += cpu;
                let status = worker
                    .child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                let last = worker
                    .log
                    .lock()
                    .map(|l| l.iter().cloned().collect::<Vec<_>>())
                    .unwrap_or_default();
                let pause = self.planner.exited(&key, now);
                warn!(
                    stream = %key,
                    %status,
                    last_log = ?last,
                    restart_in_ms = pause.map(|p| p.as_millis() as u64),
                    "transcode worker ended"
                );
            }
        }
        let sources: Vec<Source> = streams
            .iter()
            .filter(|s| s.publisher.is_some() || s.origin.is_some())
            .map(|s| Source {
                key: s.stream.clone(),
                height: s.media.height,
            })
            .collect();
        for action in self.planner.step(&sources, now) {
            match action {
                Action::Start { key, renditions } => self.start(key, renditions),
                Action::Stop { key, why } => {
                    if self.listed.remove(&key).is_some() {
                        self.control.set_renditions(&key, None);
                    }
                    self.cpu_gone += self.cpu_ended.remove(&key).unwrap_or(0.0)
                        + self.cpu_last.remove(&key).unwrap_or(0.0);
                    if let Some(worker) = self.workers.remove(&key) {
                        stop(key, worker, why);
                    }
                }
                Action::Refused { key } => warn!(
                    stream = %key,
                    max_workers = self.workers.len(),
                    "not transcoded: every transcode worker is taken (transcode.max_workers)"
                ),
            }
        }
        self.publish(&streams);
    }

    fn start(&mut self, key: StreamKey, renditions: Vec<Rendition>) {
        let host = self.settings.rtmp;
        let base = format!("rtmp://{host}/{}", key.app());
        let outputs: Vec<(Rendition, String)> = renditions
            .iter()
            .map(|r| {
                let name = r.stream_name(key.stream());
                let mut url = format!("{base}/{name}");
                if let Some(secret) = &self.settings.publish_secret {
                    if let Ok(rendition_key) = StreamKey::new(key.app(), &name) {
                        let expires = crate::bans::unix_now_ms() / 1000 + 7 * 86_400;
                        let query = crate::auth::sign_publish(secret.as_bytes(), &rendition_key, expires);
                        url = format!("{url}?{query}");
                    }
                }
                (r.clone(), url)
            })
            .collect();
        let input = format!("{base}/{}", key.stream());
        let args = ffmpeg_args(&input, &outputs, &self.settings.encoder);
        let spawned = Command::new(&self.settings.ffmpeg)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                warn!(stream = %key, %error, ffmpeg = %self.settings.ffmpeg.display(), "cannot start a transcode worker");
                self.planner.exited(&key, Instant::now());
                return;
            }
        };
        let log = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let (log, stream) = (Arc::clone(&log), key.clone());
            let _ = std::thread::Builder::new()
                .name("popline-transcode-log".into())
                .spawn(move || keep_log(stderr, &log, &stream));
        }
        if self.planner.workers().any(|(k, w)| k == &key && w.restarts > 0) {
            self.restarts += 1;
        }
        info!(
            stream = %key,
            pid = child.id(),
            renditions = %renditions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            "transcode worker started"
        );
        self.workers.insert(key, Worker { child, log });
    }

    fn publish(&mut self, streams: &[crate::control::StreamInfo]) {
        let newest = |name: &str, app: &str| {
            streams
                .iter()
                .find(|s| s.stream.app() == app && s.stream.stream() == name)
                .and_then(|s| s.media.newest_dts_ms)
        };
        let mut transcodes = Vec::new();
        let mut cpu_total = self.cpu_gone + self.cpu_ended.values().sum::<f64>();
        for (key, state) in self.planner.workers() {
            let worker = self.workers.get(key);
            let pid = worker.map(|w| w.child.id());
            let cpu_s = pid
                .and_then(crate::admin::metrics::ProcessStats::of_pid)
                .map_or(0.0, |p| p.cpu_seconds);
            cpu_total += cpu_s;
            let renditions: Vec<String> = state
                .renditions
                .iter()
                .map(|r| r.stream_name(key.stream()))
                .collect();
            let source = newest(key.stream(), key.app());
            let slowest = renditions
                .iter()
                .map(|r| newest(r, key.app()))
                .collect::<Option<Vec<u64>>>();
            let lag_ms = match (source, slowest) {
                (Some(source), Some(all)) => all.iter().min().map(|&r| source as i64 - r as i64),
                _ => None,
            };
            transcodes.push(TranscodeInfo {
                stream: key.clone(),
                renditions,
                state: if state.running { "running" } else { "restarting" },
                pid,
                cpu_s,
                cpu_s_total: self.cpu_ended.get(key).copied().unwrap_or(0.0) + cpu_s,
                restarts: state.restarts,
                lag_ms,
                last_log: worker
                    .and_then(|w| w.log.lock().ok().map(|l| l.iter().cloned().collect()))
                    .unwrap_or_default(),
            });
        }
        // The multivariant playlists list the renditions that are live (a rendition not yet or no longer
        // published would send players to a playlist that answers 404).
        let live = |app: &str, name: &str| {
            streams
                .iter()
                .any(|s| s.stream.app() == app && s.stream.stream() == name && s.publisher.is_some())
        };
        let mut changes = Vec::new();
        for (key, state) in self.planner.workers() {
            let audio = streams
                .iter()
                .find(|s| &s.stream == key)
                .is_some_and(|s| s.media.audio_codec.is_some());
            let audio_kbps = if audio {
                self.settings.encoder.audio_kbps
            } else {
                0
            };
            let up: Vec<Rendition> = state
                .renditions
                .iter()
                .filter(|r| live(key.app(), &r.stream_name(key.stream())))
                .cloned()
                .collect();
            let now = (!up.is_empty()).then_some((up, audio_kbps));
            if self.listed.get(key) != now.as_ref() {
                changes.push((key.clone(), now));
            }
        }
        for (key, now) in changes {
            self.control.set_renditions(&key, now.clone());
            match now {
                Some(listed) => self.listed.insert(key, listed),
                None => self.listed.remove(&key),
            };
        }
        // A process's CPU time can be read only while it lives: the last reading stands for it when it ends.
        for info in &transcodes {
            if info.pid.is_some() {
                self.cpu_last.insert(info.stream.clone(), info.cpu_s);
            }
        }
        if let Ok(mut stats) = self.stats.lock() {
            *stats = TranscodeStats {
                workers: self.workers.len() as u64,
                restarts: self.restarts,
                refused: self.planner.refusals,
                cpu_s: cpu_total,
                transcodes,
            };
        }
    }
}

/// Ends a worker (SIGKILL: it holds nothing that needs a clean end; its renditions' publishes end with it).
fn stop(key: StreamKey, mut worker: Worker, why: &str) {
    let _ = worker.child.kill();
    let _ = worker.child.wait();
    info!(stream = %key, why, "transcode worker stopped");
}

/// Keeps the last lines of a worker's stderr, and logs each.
fn keep_log(stderr: std::process::ChildStderr, log: &Mutex<VecDeque<String>>, stream: &StreamKey) {
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let line: String = line.chars().take(500).collect();
        tracing::debug!(%stream, "ffmpeg: {line}");
        if let Ok(mut log) = log.lock() {
            if log.len() == KEPT_LINES {
                log.pop_front();
            }
            log.push_back(line);
        }
    }
}
