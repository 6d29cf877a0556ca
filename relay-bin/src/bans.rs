//! Stream bans ("forbid"): a small persistent table of streams that may not be published or played.
//!
//! The admin API writes it ([`BanStore::forbid`], [`BanStore::unforbid`]); every data-plane core reads it on
//! each publish or play request ([`BanStore::check`]). Reads take a shared lock for one hash lookup and never
//! wait for the disk. A writer (one at a time, under the writers' mutex) applies its change to the table under
//! a short exclusive lock, at once, and then writes and fsyncs the file under a shared lock. A change that
//! could not be written stays applied (a ban that cannot be saved must still take the stream down): it is
//! reported ([`Saved::unsaved`] to the caller; [`BanStore::save_status`] for the error log, `/metrics` and
//! `/healthz`) and written again by [`BanStore::retry_save`] (the admin API calls it every
//! [`RETRY_INTERVAL`]) until the disk takes it.
//!
//! File format (JSON): `{ "version": 1, "next_id": N, "bans": [Ban, ...] }`, replaced atomically
//! (`<path>.tmp`, fsync, rename, fsync of the directory).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foldhash::{HashMap, HashMapExt};
use serde::{Deserialize, Serialize};

use crate::stream_key::StreamKey;

/// The file format version this code reads and writes.
pub const FILE_VERSION: u32 = 1;

/// Most active bans the store holds; a new ban beyond it is refused.
pub const MAX_BANS: usize = 100_000;

/// Most bytes of a ban's reason; a longer one is cut at a character boundary.
pub const MAX_REASON_BYTES: usize = 1024;

/// How often the admin API writes the table again while the last write failed.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// One ban: `stream` may not be published or played until `until_unix_ms` (or until lifted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// The ban's id, unique in this store (never reused, even after the ban is lifted).
    pub id: u64,
    /// The banned stream.
    pub stream: StreamKey,
    /// When the ban was made, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// When the ban ends, in milliseconds since the Unix epoch; `None` bans until it is lifted.
    pub until_unix_ms: Option<u64>,
    /// Why (free text, at most [`MAX_REASON_BYTES`] bytes).
    pub reason: String,
}

impl Ban {
    /// Whether the ban is in force at `now_unix_ms`.
    pub fn is_active_at(&self, now_unix_ms: u64) -> bool {
        self.until_unix_ms.is_none_or(|until| now_unix_ms < until)
    }
}

/// A ban as the admin API shows it: the stored fields, the times in RFC 3339 (UTC), whether it is permanent,
/// and the seconds it has left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BanView {
    /// The stored ban (`until_unix_ms` and `created_unix_ms` stay for machines).
    #[serde(flatten)]
    pub ban: Ban,
    /// `created_unix_ms` in RFC 3339, e.g. `2026-12-06T18:00:00.000Z`.
    pub created: String,
    /// `until_unix_ms` in RFC 3339; `null` for a permanent ban.
    pub until: Option<String>,
    /// The ban lasts until it is lifted (`DELETE .../forbid`).
    pub permanent: bool,
    /// Whole seconds left (rounded up); `null` for a permanent ban.
    pub remaining_s: Option<u64>,
}

impl Ban {
    /// The ban as the API shows it at `now_unix_ms`.
    pub fn view_at(&self, now_unix_ms: u64) -> BanView {
        BanView {
            ban: self.clone(),
            created: rfc3339_ms(self.created_unix_ms),
            until: self.until_unix_ms.map(rfc3339_ms),
            permanent: self.until_unix_ms.is_none(),
            remaining_s: self
                .until_unix_ms
                .map(|until| until.saturating_sub(now_unix_ms).div_ceil(1000)),
        }
    }

    /// When the ban ends, for a log line: RFC 3339, or `never (until lifted)`.
    pub fn until_text(&self) -> String {
        self.until_unix_ms
            .map_or_else(|| "never (until lifted)".to_string(), rfc3339_ms)
    }
}

/// `unix_ms` (milliseconds since the Unix epoch) as RFC 3339 in UTC with milliseconds:
/// `2026-12-06T18:00:00.000Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let days = unix_ms / 86_400_000;
    let ms_of_day = unix_ms % 86_400_000;
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`), in unsigned arithmetic:
    // shifted to 0000-03-01 so that every era is positive.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000
    )
}

/// A change of the table: what it did, and why it is not on disk yet if it is not.
#[derive(Debug)]
pub struct Saved<T> {
    /// What the change returned (the new ban, the lifted one, how many were purged).
    pub value: T,
    /// The write that failed; `None` once the change is on disk (or the store keeps no file). The change
    /// is applied either way, and [`BanStore::retry_save`] writes it later.
    pub unsaved: Option<BanError>,
}

/// Whether the table on disk is the one in memory, for `/healthz` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SaveStatus {
    /// Since when (Unix ms) the file lags behind memory; `None` when it is up to date.
    pub unsaved_since_unix_ms: Option<u64>,
    /// The last write error while the file lags.
    pub last_error: Option<String>,
    /// Writes of the file that failed since start.
    pub failures: u64,
}

/// Why the ban table could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum BanError {
    /// The ban file exists but could not be read.
    #[error("cannot read ban file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The ban file is not valid JSON of the expected shape.
    #[error("corrupt ban file {path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        source: serde_json::Error,
    },
    /// The ban file was written by a version of popline this one does not understand.
    #[error("ban file {path} has version {version}; this popline reads version {FILE_VERSION}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version the file claims.
        version: u32,
    },
    /// The ban file could not be written (the change is applied in memory and written again later).
    #[error("cannot write ban file {path}: {source}")]
    Write {
        /// The file (or its temporary sibling, or its directory) that failed.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The table could not be serialised (should not happen).
    #[error("cannot serialise the ban table: {0}")]
    Serialize(serde_json::Error),
    /// The store already holds [`MAX_BANS`] active bans.
    #[error("too many bans: at most {MAX_BANS} may be active")]
    TooMany,
    /// The ban file holds more than [`MAX_BANS`] bans.
    #[error("ban file {path} holds {count} bans, more than the {MAX_BANS} allowed")]
    TooManyInFile {
        /// The file.
        path: PathBuf,
        /// How many bans it holds.
        count: usize,
    },
    /// A ban of zero duration was asked for.
    #[error("a ban's duration must be longer than zero")]
    ZeroDuration,
}

/// The table of bans, shared by the admin thread and the data-plane cores (`Send + Sync`).
#[derive(Debug)]
pub struct BanStore {
    /// Where the table persists; `None` keeps it in memory only.
    path: Option<PathBuf>,
    /// Serialises writers (forbid, unforbid, purge) across the whole build-persist-apply sequence.
    writer: Mutex<()>,
    /// What readers see; changed only by a writer holding `writer`, before the change is written.
    table: RwLock<Table>,
    /// Whether the file lags behind `table`, and why (written under `writer`).
    status: Mutex<SaveStatus>,
    /// Failed writes since start (also in `status`; an atomic so that `/metrics` never waits).
    failures: AtomicU64,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    bans: HashMap<StreamKey, Ban>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    next_id: u64,
    bans: Vec<&'a Ban>,
}

#[derive(Deserialize)]
struct FileIn {
    version: u32,
    next_id: u64,
    bans: Vec<Ban>,
}

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970).
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    })
}

/// Cuts `reason` to at most [`MAX_REASON_BYTES`] bytes, at a character boundary.
fn clamp_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

impl BanStore {
    /// Opens the store persisted at `path` (or an in-memory one for `None`).
    ///
    /// A missing file is an empty table; an unreadable or corrupt file is an error naming the file.
    pub fn open(path: Option<PathBuf>) -> Result<BanStore, BanError> {
        let table = match &path {
            Some(path) => load(path)?,
            None => Table::default(),
        };
        Ok(BanStore {
            path,
            writer: Mutex::new(()),
            table: RwLock::new(table),
            status: Mutex::new(SaveStatus::default()),
            failures: AtomicU64::new(0),
        })
    }

    /// Checks that the file can be written where it lives (its directory exists and takes a new file): a
    /// start-up check, so that a bad `bans.path` is found before the first forbid needs it. Writes and removes
    /// `<path>.tmp`; the ban file itself is not touched. No-op for an in-memory store.
    pub fn check_writable(&self) -> Result<(), BanError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = tmp_path(path);
        let probe = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(b"{}")?;
            file.sync_all()
        };
        let result = probe();
        let _ = std::fs::remove_file(&tmp);
        result.map_err(|source| BanError::Write { path: tmp, source })
    }

    /// Whether the file is up to date, the last error if not, and how many writes failed since start.
    pub fn save_status(&self) -> SaveStatus {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner).clone();
        status.failures = self.failures.load(Ordering::Relaxed);
        status
    }

    /// Writes the table again if the last write failed; `Ok(false)` when there was nothing to write,
    /// `Ok(true)` when the file has now caught up.
    pub fn retry_save(&self) -> Result<bool, BanError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unsaved_since_unix_ms
            .is_none()
        {
            return Ok(false);
        }
        match self.save_locked(unix_now_ms()) {
            None => Ok(true),
            Some(error) => Err(error),
        }
    }

    /// Writes the table's active bans (the caller holds `writer`) and records the outcome in `status`.
    fn save_locked(&self, now_unix_ms: u64) -> Option<BanError> {
        let result = {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            let active = table.bans.values().filter(|ban| ban.is_active_at(now_unix_ms));
            self.persist(table.next_id, active)
        };
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(()) => {
                status.unsaved_since_unix_ms = None;
                status.last_error = None;
                None
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                status.unsaved_since_unix_ms.get_or_insert(now_unix_ms);
                status.last_error = Some(error.to_string());
                Some(error)
            }
        }
    }

    /// The file the store persists to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Bans `stream` for `duration` (`None`: until lifted), replacing any ban of it, at once; then writes the
    /// table (see [`Saved`]: a failed write does not undo the ban).
    pub fn forbid(
        &self,
        stream: StreamKey,
        duration: Option<Duration>,
        reason: String,
    ) -> Result<Saved<Ban>, BanError> {
        self.forbid_at(unix_now_ms(), stream, duration, reason)
    }

    /// [`BanStore::forbid`] with the clock given (milliseconds since the Unix epoch).
    pub fn forbid_at(
        &self,
        now_unix_ms: u64,
        stream: StreamKey,
        duration: Option<Duration>,
        reason: String,
    ) -> Result<Saved<Ban>, BanError> {
        let until_unix_ms = match duration {
            Some(duration) if duration.is_zero() => return Err(BanError::ZeroDuration),
            Some(duration) => {
                let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1);
                Some(now_unix_ms.saturating_add(millis))
            }
            None => None,
        };
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let ban = {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            let replaced = table
                .bans
                .get(&stream)
                .is_some_and(|old| old.is_active_at(now_unix_ms));
            // The table may hold expired bans (dropped by `purge_expired`): count the active ones only when it
            // matters.
            if !replaced
                && table.bans.len() >= MAX_BANS
                && table
                    .bans
                    .values()
                    .filter(|old| old.is_active_at(now_unix_ms))
                    .count()
                    >= MAX_BANS
            {
                return Err(BanError::TooMany);
            }
            let ban = Ban {
                id: table.next_id,
                stream,
                created_unix_ms: now_unix_ms,
                until_unix_ms,
                reason: clamp_reason(reason),
            };
            table.next_id = table.next_id.saturating_add(1);
            table.bans.insert(ban.stream.clone(), ban.clone());
            ban
        };
        let unsaved = self.save_locked(now_unix_ms);
        Ok(Saved { value: ban, unsaved })
    }

    /// Lifts the ban of `stream` at once, then writes the table; the lifted ban, or `None` if it had no
    /// active ban (then nothing is written).
    pub fn unforbid(&self, stream: &StreamKey) -> Result<Saved<Option<Ban>>, BanError> {
        self.unforbid_at(unix_now_ms(), stream)
    }

    /// [`BanStore::unforbid`] with the clock given (milliseconds since the Unix epoch).
    pub fn unforbid_at(&self, now_unix_ms: u64, stream: &StreamKey) -> Result<Saved<Option<Ban>>, BanError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let lifted = {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            match table.bans.get(stream) {
                Some(ban) if ban.is_active_at(now_unix_ms) => table.bans.remove(stream),
                _ => None,
            }
        };
        let unsaved = match lifted {
            Some(_) => self.save_locked(now_unix_ms),
            None => None,
        };
        Ok(Saved {
            value: lifted,
            unsaved,
        })
    }

    /// The active ban of `stream`, if any. Cheap: a shared lock and one hash lookup (a clone only when banned).
    pub fn check(&self, stream: &StreamKey) -> Option<Ban> {
        self.check_at(unix_now_ms(), stream)
    }

    /// [`BanStore::check`] with the clock given (milliseconds since the Unix epoch).
    pub fn check_at(&self, now_unix_ms: u64, stream: &StreamKey) -> Option<Ban> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table
            .bans
            .get(stream)
            .filter(|ban| ban.is_active_at(now_unix_ms))
            .cloned()
    }

    /// Every active ban, oldest first.
    pub fn list(&self) -> Vec<Ban> {
        self.list_at(unix_now_ms())
    }

    /// [`BanStore::list`] with the clock given (milliseconds since the Unix epoch).
    pub fn list_at(&self, now_unix_ms: u64) -> Vec<Ban> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let mut active: Vec<Ban> = table
            .bans
            .values()
            .filter(|ban| ban.is_active_at(now_unix_ms))
            .cloned()
            .collect();
        active.sort_by_key(|ban| ban.id);
        active
    }

    /// How many bans are active now.
    pub fn active_count(&self) -> usize {
        let now_unix_ms = unix_now_ms();
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table
            .bans
            .values()
            .filter(|ban| ban.is_active_at(now_unix_ms))
            .count()
    }

    /// Drops expired bans from the table and rewrites the file without them; returns how many were dropped.
    ///
    /// Expired bans are ignored by every read and left out of every write anyway; this frees their memory.
    pub fn purge_expired(&self) -> Result<usize, BanError> {
        self.purge_expired_at(unix_now_ms())
    }

    /// [`BanStore::purge_expired`] with the clock given (milliseconds since the Unix epoch).
    pub fn purge_expired_at(&self, now_unix_ms: u64) -> Result<usize, BanError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            let before = table.bans.len();
            table.bans.retain(|_, ban| ban.is_active_at(now_unix_ms));
            before - table.bans.len()
        };
        if expired == 0 {
            return Ok(0);
        }
        match self.save_locked(now_unix_ms) {
            None => Ok(expired),
            Some(error) => Err(error),
        }
    }

    /// Writes the table (`next_id` and `bans`) to the file atomically and durably (no-op for an in-memory
    /// store).
    fn persist<'a>(&self, next_id: u64, bans: impl Iterator<Item = &'a Ban>) -> Result<(), BanError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut bans: Vec<&Ban> = bans.collect();
        bans.sort_by_key(|ban| ban.id);
        let file = FileOut {
            version: FILE_VERSION,
            next_id,
            bans,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(BanError::Serialize)?;
        write_atomically(path, &bytes)
    }
}

fn load(path: &Path) -> Result<Table, BanError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Table::default()),
        Err(source) => {
            return Err(BanError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let file: FileIn = serde_json::from_slice(&bytes).map_err(|source| BanError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    if file.version != FILE_VERSION {
        return Err(BanError::UnsupportedVersion {
            path: path.to_path_buf(),
            version: file.version,
        });
    }
    if file.bans.len() > MAX_BANS {
        return Err(BanError::TooManyInFile {
            path: path.to_path_buf(),
            count: file.bans.len(),
        });
    }
    let mut table = Table {
        next_id: file.next_id,
        bans: HashMap::with_capacity(file.bans.len()),
    };
    for mut ban in file.bans {
        // Ids are never reused, even if the file's counter was edited by hand.
        table.next_id = table.next_id.max(ban.id.saturating_add(1));
        ban.reason = clamp_reason(ban.reason);
        // Two bans of one stream (a hand-edited file): the later one wins, as a replacing forbid would.
        if table.bans.get(&ban.stream).is_none_or(|old| old.id < ban.id) {
            table.bans.insert(ban.stream.clone(), ban);
        }
    }
    Ok(table)
}

/// Replaces `path` with `bytes`: write `<path>.tmp`, fsync it, rename it over `path`, fsync the directory.
/// On failure the temporary file is removed (best effort) and `path` is unchanged.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BanError> {
    let tmp = tmp_path(path);
    let write_tmp = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(source) = write_tmp() {
        let _ = std::fs::remove_file(&tmp);
        return Err(BanError::Write { path: tmp, source });
    }
    if let Err(source) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(BanError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The rename is durable only once the directory entry is.
    File::open(&dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| BanError::Write { path: dir, source })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("popline-bans-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("bans.json")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn key(name: &str) -> StreamKey {
        StreamKey::new("live", name).unwrap()
    }

    #[test]
    fn forbid_persists_and_reloads() {
        let dir = TempDir::new("reload");
        let store = BanStore::open(Some(dir.file())).unwrap();
        let ban = store.forbid(key("a"), None, "spam".to_string()).unwrap().value;
        store
            .forbid(key("b"), Some(Duration::from_secs(3600)), "later".to_string())
            .unwrap();
        assert_eq!(store.check(&key("a")), Some(ban.clone()));

        let reopened = BanStore::open(Some(dir.file())).unwrap();
        assert_eq!(reopened.check(&key("a")), Some(ban));
        assert_eq!(reopened.list().len(), 2);
        // Ids keep counting after a reload.
        let third = reopened.forbid(key("c"), None, String::new()).unwrap().value;
        assert_eq!(third.id, 2);

        assert!(reopened.unforbid(&key("a")).unwrap().value.is_some());
        assert!(reopened.unforbid(&key("a")).unwrap().value.is_none());
        let again = BanStore::open(Some(dir.file())).unwrap();
        assert!(again.check(&key("a")).is_none());
        assert_eq!(again.list().len(), 2);
    }

    #[test]
    fn replacing_a_ban_keeps_one_per_stream() {
        let store = BanStore::open(None).unwrap();
        let first = store.forbid(key("a"), None, "one".to_string()).unwrap().value;
        let second = store.forbid(key("a"), None, "two".to_string()).unwrap().value;
        assert_ne!(first.id, second.id);
        assert_eq!(store.list(), vec![second]);
    }

    #[test]
    fn expired_bans_are_ignored_and_purged() {
        let dir = TempDir::new("expiry");
        let store = BanStore::open(Some(dir.file())).unwrap();
        let t0 = 1_000_000;
        store
            .forbid_at(t0, key("short"), Some(Duration::from_secs(10)), String::new())
            .unwrap();
        store.forbid_at(t0, key("forever"), None, String::new()).unwrap();
        assert!(store.check_at(t0 + 9_999, &key("short")).is_some());
        assert!(store.check_at(t0 + 10_000, &key("short")).is_none());
        assert_eq!(store.list_at(t0 + 10_000).len(), 1);
        // Lifting an expired ban finds nothing.
        assert!(store
            .unforbid_at(t0 + 20_000, &key("short"))
            .unwrap()
            .value
            .is_none());

        let store = BanStore::open(Some(dir.file())).unwrap();
        assert_eq!(store.purge_expired_at(t0 + 10_000).unwrap(), 1);
        assert_eq!(store.purge_expired_at(t0 + 10_000).unwrap(), 0);
        let reopened = BanStore::open(Some(dir.file())).unwrap();
        assert_eq!(reopened.list_at(t0).len(), 1);
        assert!(matches!(
            store.forbid_at(t0, key("x"), Some(Duration::ZERO), String::new()),
            Err(BanError::ZeroDuration)
        ));
    }

    #[test]
    fn atomic_write_leaves_no_tmp_file() {
        let dir = TempDir::new("tmp");
        let store = BanStore::open(Some(dir.file())).unwrap();
        store.forbid(key("a"), None, String::new()).unwrap();
        store.unforbid(&key("a")).unwrap();
        let names: Vec<String> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["bans.json".to_string()]);
        let text = std::fs::read_to_string(dir.file()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["version"], 1);
        assert_eq!(value["next_id"], 1);
        assert_eq!(value["bans"], serde_json::json!([]));
    }

    #[test]
    fn a_ban_that_cannot_be_saved_is_applied_reported_and_saved_later() {
        let dir = TempDir::new("fail");
        let sub = dir.0.join("missing-dir");
        let path = sub.join("bans.json");
        let store = BanStore::open(Some(path.clone())).unwrap();
        assert!(matches!(store.check_writable(), Err(BanError::Write { .. })));
        let saved = store.forbid(key("a"), None, String::new()).unwrap();
        assert!(matches!(saved.unsaved, Some(BanError::Write { .. })), "{saved:?}");
        // Applied at once all the same.
        assert_eq!(store.check(&key("a")), Some(saved.value));
        let status = store.save_status();
        assert!(
            status.unsaved_since_unix_ms.is_some() && status.failures == 1,
            "{status:?}"
        );
        assert!(status.last_error.unwrap().contains("missing-dir"));
        assert!(store.retry_save().is_err());
        assert_eq!(store.save_status().failures, 2);
        // The disk comes back: the retry writes the table, and the status clears.
        std::fs::create_dir_all(&sub).unwrap();
        store.check_writable().unwrap();
        assert!(store.retry_save().unwrap());
        assert!(!store.retry_save().unwrap(), "nothing left to write");
        let status = store.save_status();
        assert_eq!((status.unsaved_since_unix_ms, status.failures), (None, 2));
        assert!(BanStore::open(Some(path)).unwrap().check(&key("a")).is_some());
    }

    #[test]
    fn times_read_as_rfc3339_with_seconds_left() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        let store = BanStore::open(None).unwrap();
        let t0 = 1_700_000_000_000;
        let timed = store
            .forbid_at(t0, key("t"), Some(Duration::from_secs(600)), String::new())
            .unwrap()
            .value;
        let view = timed.view_at(t0 + 1_500);
        assert_eq!(view.created, "2023-11-14T22:13:20.000Z");
        assert_eq!(view.until.as_deref(), Some("2023-11-14T22:23:20.000Z"));
        assert_eq!((view.permanent, view.remaining_s), (false, Some(599)));
        let forever = store.forbid_at(t0, key("f"), None, String::new()).unwrap().value;
        let view = forever.view_at(t0);
        assert_eq!((view.permanent, view.until, view.remaining_s), (true, None, None));
        assert_eq!(forever.until_text(), "never (until lifted)");
        let json = serde_json::to_value(timed.view_at(t0)).unwrap();
        assert_eq!(json["until_unix_ms"], t0 + 600_000);
        assert_eq!(json["remaining_s"], 600);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = TempDir::new("corrupt");
        std::fs::write(dir.file(), b"{ \"version\": 1, \"next_id\": ").unwrap();
        let error = BanStore::open(Some(dir.file())).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, BanError::Corrupt { .. }));
        assert!(text.contains("bans.json"), "{text}");

        std::fs::write(dir.file(), br#"{"version":1,"next_id":0,"bans":[{"id":0,"stream":"nope","created_unix_ms":0,"until_unix_ms":null,"reason":""}]}"#).unwrap();
        assert!(matches!(
            BanStore::open(Some(dir.file())),
            Err(BanError::Corrupt { .. })
        ));

        std::fs::write(dir.file(), br#"{"version":2,"next_id":0,"bans":[]}"#).unwrap();
        assert!(matches!(
            BanStore::open(Some(dir.file())),
            Err(BanError::UnsupportedVersion { version: 2, .. })
        ));
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = TempDir::new("missing");
        let store = BanStore::open(Some(dir.file())).unwrap();
        assert!(store.list().is_empty());
        assert!(!dir.file().exists());
    }

    #[test]
    fn long_reason_is_cut_at_a_char_boundary() {
        let store = BanStore::open(None).unwrap();
        let ban = store
            .forbid(key("a"), None, "é".repeat(MAX_REASON_BYTES))
            .unwrap()
            .value;
        assert!(ban.reason.len() <= MAX_REASON_BYTES);
        assert_eq!(ban.reason.len(), MAX_REASON_BYTES);
        let ban = store
            .forbid(key("b"), None, format!("x{}", "é".repeat(600)))
            .unwrap()
            .value;
        assert_eq!(ban.reason.len(), MAX_REASON_BYTES - 1);
    }

    #[test]
    fn ban_count_is_bounded() {
        let store = BanStore::open(None).unwrap();
        for i in 0..MAX_BANS {
            store.forbid(key(&format!("s{i}")), None, String::new()).unwrap();
        }
        assert!(matches!(
            store.forbid(key("one-more"), None, String::new()),
            Err(BanError::TooMany)
        ));
        // Replacing an existing ban is still allowed at the limit.
        store.forbid(key("s0"), None, "again".to_string()).unwrap();
    }

    #[test]
    fn concurrent_forbids_all_persist() {
        let dir = TempDir::new("concurrent");
        let store = Arc::new(BanStore::open(Some(dir.file())).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..10 {
                        store
                            .forbid(key(&format!("t{t}-{i}")), None, String::new())
                            .unwrap();
                        assert!(store.check(&key(&format!("t{t}-{i}"))).is_some());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let reopened = BanStore::open(Some(dir.file())).unwrap();
        let bans = reopened.list();
        assert_eq!(bans.len(), 80);
        let mut ids: Vec<u64> = bans.iter().map(|ban| ban.id).collect();
        ids.dedup();
        assert_eq!(ids, (0..80).collect::<Vec<u64>>());
    }
}
