//! The periodic snapshot job: for every live stream of an app with `snapshot_interval_s` set, its latest
//! keyframe is saved as `snapshots.path/APP/STREAM/STREAM-<UTC>.jpg` every that many seconds (for review
//! later), through the same cache as the API (a moderator's request and the job share one decode). The
//! newest `snapshots.keep` files of each stream are kept. Runs on the admin API's runtime; the node's
//! cores only hand over a keyframe.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::service::SnapshotService;
use crate::control::NodeControl;
use crate::stream_key::StreamKey;

/// What the job does.
#[derive(Debug, Clone)]
pub struct PeriodicSettings {
    /// The folder (`APP/STREAM/STREAM-<UTC>.jpg` under it).
    pub dir: PathBuf,
    /// Seconds between snapshots, per app with its own `[apps.NAME]` table (0: none).
    pub intervals: HashMap<String, u64>,
    /// Seconds between snapshots of the other apps (`[fanout] snapshot_interval_s`; 0: none).
    pub default_interval: u64,
    /// Files kept per stream (the oldest are deleted).
    pub keep: usize,
    /// Width to scale to (`None`: the picture's own).
    pub width: Option<u32>,
}

/// Runs the job until the runtime stops.
pub async fn run(settings: PeriodicSettings, control: Arc<dyn NodeControl>, service: Arc<SnapshotService>) {
    let mut last: HashMap<StreamKey, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let listing = Arc::clone(&control);
        let Ok(streams) = tokio::task::spawn_blocking(move || listing.streams()).await else {
            continue;
        };
        let now = Instant::now();
        last.retain(|key, _| streams.iter().any(|s| &s.stream == key));
        for info in streams {
            let key = info.stream;
            let every = settings
                .intervals
                .get(key.app())
                .copied()
                .unwrap_or(settings.default_interval);
            if every == 0 {
                continue;
            }
            // Half a tick of slack: the job wakes once a second, and a decode may have delayed a wake-up.
            let due = Duration::from_secs(every).saturating_sub(Duration::from_millis(500));
            if last.get(&key).is_some_and(|at| now.duration_since(*at) < due) {
                continue;
            }
            last.insert(key.clone(), now);
            let asking = Arc::clone(&control);
            let asked = key.clone();
            let keyframe = match tokio::task::spawn_blocking(move || asking.keyframe(&asked)).await {
                Ok(Ok(keyframe)) => keyframe,
                Ok(Err(error)) => {
                    debug!(stream = %key, %error, "periodic snapshot: no keyframe");
                    continue;
                }
                Err(_) => continue,
            };
            let snapshot = match service.live(&key, keyframe, settings.width).await {
                Ok(snapshot) => snapshot,
                Err(error) => {
                    warn!(stream = %key, %error, "periodic snapshot failed");
                    continue;
                }
            };
            let (dir, keep) = (settings.dir.clone(), settings.keep);
            let saved =
                tokio::task::spawn_blocking(move || save(&dir, &key, &snapshot.jpeg.bytes, keep)).await;
            if let Ok(Err((path, error))) = saved {
                warn!(path = %path.display(), %error, "periodic snapshot: cannot write the file");
            }
        }
    }
}

/// Writes `jpeg` as `dir/APP/STREAM/STREAM-<UTC now>.jpg` (whole or not at all: written aside, then
/// renamed) and deletes the stream's oldest files beyond `keep`.
pub fn save(
    dir: &Path,
    key: &StreamKey,
    jpeg: &[u8],
    keep: usize,
) -> Result<PathBuf, (PathBuf, std::io::Error)> {
    let folder = dir.join(key.app()).join(key.stream());
    std::fs::create_dir_all(&folder).map_err(|e| (folder.clone(), e))?;
    let stamp = crate::recording::recorder::file_stamp_now();
    let path = folder.join(format!("{}-{stamp}.jpg", key.stream()));
    let partial = folder.join(format!(".{}-{stamp}.jpg.partial", key.stream()));
    std::fs::write(&partial, jpeg).map_err(|e| (partial.clone(), e))?;
    std::fs::rename(&partial, &path).map_err(|e| (path.clone(), e))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .map_err(|e| (folder.clone(), e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    // The names sort by time (a fixed-width UTC stamp after the same prefix).
    files.sort();
    let excess = files.len().saturating_sub(keep.max(1));
    for old in &files[..excess] {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_time_and_the_oldest_beyond_keep_go() {
        let dir = std::env::temp_dir().join(format!("popline-periodic-{}", std::process::id()));
        let key = StreamKey::new("live", "s").unwrap();
        let mut saved = Vec::new();
        for _ in 0..4 {
            saved.push(save(&dir, &key, b"\xff\xd8jpeg", 2).unwrap());
            std::thread::sleep(Duration::from_millis(3));
        }
        let name = saved[3].file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("s-20") && name.ends_with("Z.jpg"), "{name}");
        let mut left: Vec<_> = std::fs::read_dir(dir.join("live/s"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        left.sort();
        assert_eq!(left, saved[2..].to_vec());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
