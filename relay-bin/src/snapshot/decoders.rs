//! [`DecoderPool`]: the processes that turn keyframes into JPEGs, bounded and supervised.
//!
//! Two kinds, chosen by `snapshots.decoder`:
//! - `openh264` (the default): `snapshots.workers` long-lived `popline snapshot-worker` children, each
//!   decoding one keyframe at a time in process with OpenH264 ([`super::worker`]);
//! - `ffmpeg`: one `ffmpeg` process per snapshot, at most `snapshots.workers` at once.
//!
//! Either way the decoding runs outside the node's process, so a decoder fault on hostile video costs one
//! child. Requests beyond the workers wait in a queue of `snapshots.queue` (more are refused with 503), each
//! for at most `snapshots.timeout_ms`, and a decode gets `snapshots.timeout_ms` of its own; a worker that
//! dies, hangs or answers out of frame is killed and started again, at once the first time and then after a
//! growing pause (100 ms doubling to 5 s) while it keeps failing. A worker is out of its slot while it
//! decodes, so a request dropped midway (its client gone) ends that worker instead of leaving its answer in
//! the pipe for the next request.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};

use super::access_unit::AccessUnit;
use super::error::SnapshotError;
use super::picture::{jpeg_size, scaled_size, Jpeg};
use super::worker;

/// Which decoder makes snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderKind {
    /// OpenH264 in long-lived `popline snapshot-worker` children.
    Openh264,
    /// One `ffmpeg` process per snapshot.
    Ffmpeg,
}

impl DecoderKind {
    /// The name in config and logs.
    pub fn name(self) -> &'static str {
        match self {
            DecoderKind::Openh264 => "openh264",
            DecoderKind::Ffmpeg => "ffmpeg",
        }
    }
}

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// The decoder.
    pub kind: DecoderKind,
    /// The program: the `popline` binary for `openh264` workers, `ffmpeg` for `ffmpeg`.
    pub program: PathBuf,
    /// Decoders at once.
    pub workers: usize,
    /// Requests that may wait for a decoder.
    pub queue: usize,
    /// Longest a request may wait and decode.
    pub timeout: Duration,
}

/// What the pool did, for stats and `/metrics`.
#[derive(Debug, Default)]
pub struct DecoderCounters {
    /// Keyframes decoded into a JPEG.
    pub decodes: AtomicU64,
    /// Keyframes that did not decode (the decoder's error, or its death on one).
    pub failures: AtomicU64,
    /// Requests refused because every decoder was busy and the queue full, or that timed out.
    pub busy: AtomicU64,
    /// Workers started again after one died or hung.
    pub restarts: AtomicU64,
    /// Microseconds spent decoding (waiting excluded), over every decode.
    pub decode_us: AtomicU64,
}

/// A live `popline snapshot-worker`.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// One decoder's place in the pool.
#[derive(Default)]
struct Slot {
    worker: Option<Worker>,
    /// Failures in a row.
    failures: u32,
    /// No new worker before this.
    retry_at: Option<Instant>,
}

/// The pool.
pub struct DecoderPool {
    settings: PoolSettings,
    slots: Vec<Mutex<Slot>>,
    permits: Semaphore,
    waiting: AtomicUsize,
    /// What it did.
    pub counters: DecoderCounters,
}

impl DecoderPool {
    /// A pool with no process started yet (the first request starts one).
    pub fn new(settings: PoolSettings) -> DecoderPool {
        let workers = settings.workers.max(1);
        DecoderPool {
            slots: (0..workers).map(|_| Mutex::new(Slot::default())).collect(),
            permits: Semaphore::new(workers),
            waiting: AtomicUsize::new(0),
            settings,
            counters: DecoderCounters::default(),
        }
    }

    /// The decoder's kind.
    pub fn kind(&self) -> DecoderKind {
        self.settings.kind
    }

    /// Process ids of the live `openh264` workers (for the benchmark's CPU and memory accounting).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .filter_map(|slot| slot.try_lock().ok()?.worker.as_ref()?.child.id())
            .collect()
    }

    /// Decodes `unit` into a JPEG of quality `quality`, scaled to `width` when given.
    pub async fn decode(
        &self,
        unit: &AccessUnit,
        width: Option<u32>,
        quality: u8,
    ) -> Result<Jpeg, SnapshotError> {
        let waiting = self.waiting.fetch_add(1, Ordering::Relaxed);
        if waiting >= self.slots.len() + self.settings.queue {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            self.counters.busy.fetch_add(1, Ordering::Relaxed);
            return Err(SnapshotError::Busy(format!(
                "all {} snapshot decoders are busy and {} requests wait (snapshots.workers, snapshots.queue)",
                self.slots.len(),
                self.settings.queue
            )));
        }
        let result = tokio::time::timeout(self.settings.timeout, self.permits.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let Ok(Ok(_permit)) = result else {
            self.counters.busy.fetch_add(1, Ordering::Relaxed);
            return Err(SnapshotError::Busy(format!(
                "no snapshot decoder was free within {} ms",
                self.settings.timeout.as_millis()
            )));
        };
        // The permit guarantees a free slot.
        let mut slot = None;
        for candidate in &self.slots {
            if let Ok(guard) = candidate.try_lock() {
                slot = Some(guard);
                break;
            }
        }
        // A slot's lock is held briefly by `worker_pids` too: then wait for one.
        let mut slot = match slot {
            Some(slot) => slot,
            None => match self.slots.first() {
                Some(first) => first.lock().await,
                None => return Err(SnapshotError::Unavailable("no snapshot decoders".into())),
            },
        };
        // Decoding gets a budget of its own (waiting for a decoder had its own above): a keyframe that
        // needs longer is the keyframe's fault, not the queue's.
        let started = Instant::now();
        let run = async {
            match self.settings.kind {
                DecoderKind::Openh264 => self.run_worker(&mut slot, unit, width, quality).await,
                DecoderKind::Ffmpeg => self.run_ffmpeg(unit, width, quality).await,
            }
        };
        let result = match tokio::time::timeout(self.settings.timeout, run).await {
            Ok(result) => result,
            Err(_) => {
                // The worker was taken out of its slot for the exchange and ended when the exchange was
                // dropped (kill on drop); it is started again after a pause.
                warn!(
                    timeout_ms = self.settings.timeout.as_millis() as u64,
                    "snapshot decoder did not finish a keyframe in time; killed"
                );
                self.failed(&mut slot);
                Err(SnapshotError::Decode(format!(
                    "the decoder did not finish within {} ms (snapshots.timeout_ms) and was stopped",
                    self.settings.timeout.as_millis()
                )))
            }
        };
        match &result {
            Ok(_) => {
                self.counters.decodes.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .decode_us
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            Err(SnapshotError::Decode(_)) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        result
    }

    async fn run_worker(
        &self,
        slot: &mut Slot,
        unit: &AccessUnit,
        width: Option<u32>,
        quality: u8,
    ) -> Result<Jpeg, SnapshotError> {
        // A worker that died while idle (killed, OOM) is replaced before it is given a keyframe.
        if let Some(worker) = slot.worker.as_mut() {
            if let Ok(Some(status)) = worker.child.try_wait() {
                warn!(%status, "snapshot worker ended while idle; starting another");
                slot.worker = None;
                slot.failures = slot.failures.max(1);
                slot.retry_at = None;
            }
        }
        if slot.worker.is_none() {
            if let Some(at) = slot.retry_at {
                let now = Instant::now();
                if now < at {
                    return Err(SnapshotError::Unavailable(format!(
                        "the snapshot worker failed {} times in a row; next start in {} ms",
                        slot.failures,
                        (at - now).as_millis()
                    )));
                }
            }
            match self.spawn_worker() {
                Ok(worker) => {
                    if slot.failures > 0 {
                        self.counters.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    info!(pid = worker.child.id(), "snapshot worker started");
                    slot.worker = Some(worker);
                }
                Err(error) => {
                    self.failed(slot);
                    return Err(SnapshotError::Unavailable(format!(
                        "cannot start the snapshot worker ({} snapshot-worker): {error}",
                        self.settings.program.display()
                    )));
                }
            }
        }
        // Out of its slot while it works: if this future is dropped midway (the client went away, the
        // deadline passed), the worker is dropped with it and killed, never left holding an answer that the
        // next request would read as its own.
        let Some(mut worker) = slot.worker.take() else {
            return Err(SnapshotError::Unavailable("no snapshot worker".into()));
        };
        match exchange(&mut worker, &worker::request(&unit.data, width, quality)).await {
            Ok(answer) => {
                slot.worker = Some(worker);
                slot.failures = 0;
                slot.retry_at = None;
                answer
            }
            Err(error) => {
                let _ = worker.child.start_kill();
                let status = worker
                    .child
                    .wait()
                    .await
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                warn!(%error, %status, "snapshot worker failed on a keyframe; it is started again");
                self.failed(slot);
                Err(SnapshotError::Decode(format!(
                    "the decoder process failed on this keyframe ({error}; {status})"
                )))
            }
        }
    }

    fn failed(&self, slot: &mut Slot) {
        slot.failures = slot.failures.saturating_add(1);
        slot.retry_at = (slot.failures > 1).then(|| {
            let pause =
                Duration::from_millis(100u64 << (slot.failures - 2).min(6)).min(Duration::from_secs(5));
            Instant::now() + pause
        });
    }

    fn spawn_worker(&self) -> std::io::Result<Worker> {
        let mut child = Command::new(&self.settings.program)
            .arg("snapshot-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the worker's pipes are missing"));
        };
        Ok(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    async fn run_ffmpeg(
        &self,
        unit: &AccessUnit,
        width: Option<u32>,
        quality: u8,
    ) -> Result<Jpeg, SnapshotError> {
        let mut command = Command::new(&self.settings.program);
        command.args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-threads",
            "1",
            "-f",
            "h264",
            "-i",
            "pipe:0",
        ]);
        command.args(["-frames:v", "1"]);
        if let Some(asked) = width {
            let (w, h) = scaled_size(unit.width, unit.height, asked);
            if w < unit.width {
                command.args(["-vf", &format!("scale={w}:{h}:flags=bilinear")]);
            }
        }
        // ffmpeg's MJPEG scale: 2 (best) ..= 31 (worst).
        let q = 2 + (100 - u32::from(quality.clamp(1, 100))) * 29 / 100;
        command.args(["-q:v", &q.to_string(), "-f", "mjpeg", "pipe:1"]);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                SnapshotError::Unavailable(format!(
                    "cannot start {} for a snapshot: {e}",
                    self.settings.program.display()
                ))
            })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SnapshotError::Unavailable("ffmpeg's pipes are missing".into()));
        };
        let feed = async move {
            // ffmpeg may stop reading once it has its frame: a broken pipe then is not an error.
            let _ = stdin.write_all(&unit.data).await;
            drop(stdin);
        };
        let mut jpeg = Vec::new();
        let mut text = Vec::new();
        let mut stdout = stdout.take(worker::MAX_ANSWER_BYTES as u64);
        let mut stderr = stderr.take(4096);
        let read = stdout.read_to_end(&mut jpeg);
        let read_errors = stderr.read_to_end(&mut text);
        let ((), read, _) = tokio::join!(feed, read, read_errors);
        let status = child.wait().await;
        read.map_err(|e| SnapshotError::Decode(format!("reading ffmpeg's picture: {e}")))?;
        match jpeg_size(&jpeg) {
            Some((w, h)) => Ok(Jpeg {
                bytes: jpeg.into(),
                width: w,
                height: h,
            }),
            None => Err(SnapshotError::Decode(format!(
                "ffmpeg made no picture ({}): {}",
                status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                String::from_utf8_lossy(&text).trim()
            ))),
        }
    }
}

/// Sends one request to a worker and reads its answer. `Err`: the worker is broken (dead, or out of frame).
async fn exchange(worker: &mut Worker, request: &[u8]) -> Result<Result<Jpeg, SnapshotError>, String> {
    worker
        .stdin
        .write_all(request)
        .await
        .map_err(|e| format!("writing to the worker: {e}"))?;
    worker
        .stdin
        .flush()
        .await
        .map_err(|e| format!("writing to the worker: {e}"))?;
    let mut head = [0u8; 5];
    worker
        .stdout
        .read_exact(&mut head)
        .await
        .map_err(|e| format!("reading the worker's answer: {e}"))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > worker::MAX_ANSWER_BYTES {
        return Err(format!("an answer of {len} bytes"));
    }
    let mut payload = vec![0; len];
    worker
        .stdout
        .read_exact(&mut payload)
        .await
        .map_err(|e| format!("reading the worker's answer: {e}"))?;
    worker::parse_answer(head[0], payload)
}
