//! [`Recorder`]: the node's recording thread. The owner core of a recorded stream hands it the stream's
//! frames (shared, no copy) over a bounded queue; the thread writes each stream to FLV files in
//! `recording.path/APP/STREAM/STREAM-<UTC start>.flv`, rolled at the first keyframe past
//! `recording.roll_s` or `recording.roll_bytes`. Disk writes never run on a core: a full queue loses frames
//! (the core then skips video to the next keyframe, so the file stays decodable) and a failed write (disk
//! full) stops that stream's recording with an error in the log, the stats and `/metrics`, while streaming
//! goes on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tracing::{error, info, warn};

use super::flv_file::FlvFile;
use crate::bans::rfc3339_ms;
use crate::media::{Frame, MediaKind, Track};
use crate::stream_key::StreamKey;

/// What the cores tell the recorder.
#[derive(Debug)]
pub enum RecordEvent {
    /// Record `key` from now on (its first file starts at the next keyframe; the core sends the GOP cache's
    /// frames first, so that is at once for a live stream).
    Start(StreamKey),
    /// One frame of a recorded stream.
    Frame(StreamKey, Frame),
    /// Stop recording `key` (the file is finished and kept), and why.
    Stop(StreamKey, &'static str),
    /// Finish every file and end the thread.
    Shutdown,
}

/// How the recorder writes.
#[derive(Debug, Clone)]
pub struct RecorderSettings {
    /// The folder recordings go under.
    pub dir: PathBuf,
    /// A file ends at the first keyframe at or past this much media time.
    pub roll_ms: u64,
    /// A file ends at the first keyframe at or past this size.
    pub roll_bytes: u64,
    /// Frames the queue holds.
    pub queue_frames: usize,
}

/// The recorder's counters, read by the admin API.
#[derive(Debug, Default)]
pub struct RecorderCounters {
    /// Streams being recorded now.
    pub active: AtomicU64,
    /// Files finished (closed and synced).
    pub files_finished: AtomicU64,
    /// Bytes written to recordings.
    pub bytes: AtomicU64,
    /// Recordings stopped by a write error (disk full, folder gone).
    pub errors: AtomicU64,
    /// Frames lost to a full queue.
    pub frames_lost: AtomicU64,
    /// The newest write error, for the stats.
    pub last_error: Mutex<Option<String>>,
}

/// The cores' side of the recorder: its queue and counters.
#[derive(Debug, Clone)]
pub struct RecorderHandle {
    tx: Sender<RecordEvent>,
    /// The counters.
    pub counters: Arc<RecorderCounters>,
}

impl RecorderHandle {
    /// Queues `event` without waiting; `false` if the queue is full (the frame is lost) or the thread is
    /// gone.
    pub fn send(&self, event: RecordEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(RecordEvent::Frame(..))) => {
                self.counters.frames_lost.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(_) => false,
        }
    }
}

/// The recording thread.
#[derive(Debug)]
pub struct Recorder {
    handle: RecorderHandle,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Starts the thread.
    pub fn start(settings: RecorderSettings) -> std::io::Result<Recorder> {
        let (tx, rx) = crossbeam_channel::bounded(settings.queue_frames.max(64));
        let counters = Arc::new(RecorderCounters::default());
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("popline-recorder".to_string())
            .spawn(move || run(settings, rx, &thread_counters))?;
        Ok(Recorder {
            handle: RecorderHandle { tx, counters },
            thread: Some(thread),
        })
    }

    /// The cores' side.
    pub fn handle(&self) -> RecorderHandle {
        self.handle.clone()
    }

    /// Finishes every file and ends the thread.
    pub fn stop(mut self) {
        let _ = self.handle.tx.send(RecordEvent::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One recorded stream.
#[derive(Debug, Default)]
struct Recording {
    file: Option<FlvFile>,
    /// The newest metadata and sequence headers: each file starts with them.
    headers: Vec<Frame>,
    /// A write failed: nothing more is written until the stream is started again.
    failed: bool,
    /// The stream has video (files start at a video keyframe).
    video: bool,
}

fn run(settings: RecorderSettings, rx: Receiver<RecordEvent>, counters: &RecorderCounters) {
    let mut streams: HashMap<StreamKey, Recording> = HashMap::new();
    while let Ok(event) = rx.recv() {
        match event {
            RecordEvent::Start(key) => {
                if !streams.contains_key(&key) {
                    counters.active.fetch_add(1, Ordering::Relaxed);
                    info!(stream = %key, dir = %settings.dir.display(), "recording starts");
                }
                let recording = streams.entry(key).or_default();
                recording.failed = false;
            }
            RecordEvent::Frame(key, frame) => {
                if let Some(recording) = streams.get_mut(&key) {
                    write_frame(&settings, counters, &key, recording, &frame);
                }
            }
            RecordEvent::Stop(key, reason) => {
                if let Some(mut recording) = streams.remove(&key) {
                    counters.active.fetch_sub(1, Ordering::Relaxed);
                    finish(counters, &key, &mut recording, reason);
                }
            }
            RecordEvent::Shutdown => break,
        }
    }
    for (key, mut recording) in streams {
        counters.active.fetch_sub(1, Ordering::Relaxed);
        finish(counters, &key, &mut recording, "node shutting down");
    }
}

fn finish(counters: &RecorderCounters, key: &StreamKey, recording: &mut Recording, reason: &str) {
    let Some(file) = recording.file.take() else {
        info!(stream = %key, reason, "recording stops (no file was started)");
        return;
    };
    let (bytes, duration_ms) = (file.bytes(), file.duration_ms());
    match file.finish() {
        Ok(path) => {
            counters.files_finished.fetch_add(1, Ordering::Relaxed);
            info!(stream = %key, path = %path.display(), bytes, duration_ms, reason, "recording file finished");
        }
        Err(e) => warn!(stream = %key, error = %e, "recording file could not be synced"),
    }
}

fn write_frame(
    settings: &RecorderSettings,
    counters: &RecorderCounters,
    key: &StreamKey,
    recording: &mut Recording,
    frame: &Frame,
) {
    if recording.failed {
        return;
    }
    if frame.kind.is_essential() {
        if frame.kind == MediaKind::SeqHeader && frame.track == Track::Video {
            recording.video = true;
        }
        recording
            .headers
            .retain(|h| !(h.track == frame.track && h.kind == frame.kind));
        recording.headers.push(frame.clone());
    }
    let starts_file = match frame.track {
        Track::Video => frame.kind == MediaKind::Key,
        Track::Audio => !recording.video && !frame.kind.is_essential(),
        Track::Data => false,
    };
    let roll = recording.file.as_ref().is_some_and(|f| {
        starts_file && (f.media_time_at(frame.dts_ms) >= settings.roll_ms || f.bytes() >= settings.roll_bytes)
    });
    if roll {
        finish(
            counters,
            key,
            recording,
            "rolled (recording.roll_s or recording.roll_bytes)",
        );
    }
    if recording.file.is_none() {
        if !starts_file {
            return;
        }
        match open_file(&settings.dir, key) {
            Ok(mut file) => {
                let mut result = Ok(());
                for header in &recording.headers {
                    result = result.and_then(|()| file.write(header));
                }
                if let Err(e) = result {
                    return fail(counters, key, recording, file.path(), &e);
                }
                info!(stream = %key, path = %file.path().display(), "recording file starts");
                recording.file = Some(file);
            }
            Err((path, e)) => return fail(counters, key, recording, &path, &e),
        }
        if frame.kind.is_essential() {
            return;
        }
    }
    let Some(file) = recording.file.as_mut() else {
        return;
    };
    let before = file.bytes();
    if let Err(e) = file.write(frame) {
        let path = file.path().to_path_buf();
        return fail(counters, key, recording, &path, &e);
    }
    counters.bytes.fetch_add(file.bytes() - before, Ordering::Relaxed);
}

/// A write failed: this stream's recording stops (the file so far is kept), the error is logged and
/// counted; streaming is not affected.
fn fail(
    counters: &RecorderCounters,
    key: &StreamKey,
    recording: &mut Recording,
    path: &Path,
    e: &std::io::Error,
) {
    error!(stream = %key, path = %path.display(), error = %e, "recording stops: write failed (disk full?)");
    counters.errors.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut last) = counters.last_error.lock() {
        *last = Some(format!("{key}: {} ({})", e, path.display()));
    }
    recording.failed = true;
    if let Some(file) = recording.file.take() {
        let _ = file.finish();
    }
}

/// The UTC time now as it goes into file names: `20261207T000512.345Z` (RFC 3339 without `-` and `:`,
/// so names sort by time). Recordings and the periodic snapshots are named with it.
pub fn file_stamp_now() -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    rfc3339_ms(now_ms)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

/// Creates `dir/APP/STREAM/STREAM-<UTC now>.flv`.
fn open_file(dir: &Path, key: &StreamKey) -> Result<FlvFile, (PathBuf, std::io::Error)> {
    let folder = dir.join(key.app()).join(key.stream());
    std::fs::create_dir_all(&folder).map_err(|e| (folder.clone(), e))?;
    let stamp = file_stamp_now();
    let mut path = folder.join(format!("{}-{stamp}.flv", key.stream()));
    let mut n = 1;
    while path.exists() {
        n += 1;
        path = folder.join(format!("{}-{stamp}-{n}.flv", key.stream()));
    }
    FlvFile::create(&path).map_err(|e| (path, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;
    use std::time::Instant;

    fn frame(kind: MediaKind, track: Track, dts: u64, body: &'static [u8]) -> Frame {
        Frame::new(kind, track, dts, dts, Bytes::from_static(body), Instant::now())
    }

    #[test]
    fn files_start_on_keyframes_with_the_headers_and_roll_at_the_first_keyframe_past_the_limit() {
        let dir = std::env::temp_dir().join(format!("popline-recorder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let recorder = Recorder::start(RecorderSettings {
            dir: dir.clone(),
            roll_ms: 1_000,
            roll_bytes: 1 << 30,
            queue_frames: 1_024,
        })
        .unwrap();
        let handle = recorder.handle();
        let key = StreamKey::new("live", "unit").unwrap();
        handle.send(RecordEvent::Start(key.clone()));
        let seq: &'static [u8] = &[0x17, 0, 0, 0, 0, 1, 2, 3];
        handle.send(RecordEvent::Frame(
            key.clone(),
            frame(MediaKind::SeqHeader, Track::Video, 0, seq),
        ));
        // Inter frames before the first keyframe are not written: a file starts on a keyframe.
        handle.send(RecordEvent::Frame(
            key.clone(),
            frame(MediaKind::Inter, Track::Video, 40, &[0x27, 1, 0, 0, 0, 9]),
        ));
        for (dts, key_frame) in [
            (80, true),
            (500, false),
            (1_000, false),
            (1_080, true),
            (1_500, false),
        ] {
            let (kind, body): (MediaKind, &'static [u8]) = if key_frame {
                (MediaKind::Key, &[0x17, 1, 0, 0, 0, 5])
            } else {
                (MediaKind::Inter, &[0x27, 1, 0, 0, 0, 1])
            };
            handle.send(RecordEvent::Frame(
                key.clone(),
                frame(kind, Track::Video, dts, body),
            ));
        }
        handle.send(RecordEvent::Stop(key.clone(), "test"));
        recorder.stop();
        let folder = dir.join("live/unit");
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}");
        for file in &files {
            let data = std::fs::read(file).unwrap();
            assert_eq!(&data[..3], b"FLV");
            // The first tag is the sequence header at 0, the second the keyframe at 0.
            assert_eq!(data[13], 9);
            assert_eq!(data[13 + 11 + 1], 0, "sequence header first");
            let second = 13 + 11 + seq.len() + 4;
            assert_eq!(
                &data[second + 4..second + 8],
                &[0, 0, 0, 0],
                "keyframe at timestamp 0"
            );
            assert_eq!(data[second + 11], 0x17);
        }
        assert_eq!(handle.counters.files_finished.load(Ordering::Relaxed), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
