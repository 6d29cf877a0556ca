//! [`SnapshotService`]: snapshots of live streams, cached per keyframe, and of recordings.
//!
//! A live stream's snapshot is its latest keyframe as a JPEG. The JPEG is made once per keyframe and width
//! and served from the cache until the stream's next keyframe, so a thousand moderators watching one stream
//! cost one decode per GOP; requests that arrive while it is being made wait for that one decode
//! (single flight). The cache holds at most `snapshots.cache_entries` pictures and [`MAX_CACHE_BYTES`] of
//! keyframes (the least recently used goes first); a failure that may pass (busy decoders) is not cached, a
//! keyframe that does not decode (or not in time) is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OnceCell;

use super::access_unit::Keyframe;
use super::decoders::{DecoderPool, PoolSettings};
use super::error::SnapshotError;
use super::picture::Jpeg;
use crate::stream_key::StreamKey;

/// One snapshot and where it came from.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The picture.
    pub jpeg: Jpeg,
    /// The keyframe's decode timestamp on the stream's timeline (ms).
    pub dts_ms: u64,
    /// The keyframe's presentation timestamp (ms).
    pub pts_ms: u64,
    /// Served from the cache (or from another request's decode of the same keyframe).
    pub cached: bool,
}

/// What snapshots cost and served, for stats and `/metrics`.
#[derive(Debug, Default)]
pub struct SnapshotCounters {
    /// Snapshots answered (live and recorded).
    pub served: AtomicU64,
    /// Of those, answered from the cache without a decode of their own.
    pub cache_hits: AtomicU64,
    /// Requests that ended in an error.
    pub errors: AtomicU64,
}

/// What the snapshot service did since start (`GET /api/v1/stats` and `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotStats {
    /// The decoder (`openh264`, `ffmpeg`).
    pub decoder: &'static str,
    /// Snapshots answered.
    pub served: u64,
    /// Of those, from the cache.
    pub cache_hits: u64,
    /// Requests that ended in an error (no stream, no keyframe, codec, busy, decode failure).
    pub errors: u64,
    /// Keyframes decoded.
    pub decodes: u64,
    /// Keyframes that did not decode.
    pub decode_failures: u64,
    /// Requests refused or timed out because the decoders were busy.
    pub busy: u64,
    /// Worker processes started again after a failure.
    pub worker_restarts: u64,
    /// Microseconds spent decoding, summed over `decodes`.
    pub decode_us: u64,
    /// Pictures in the cache now.
    pub cached: u64,
}

type Made = Arc<OnceCell<Result<Jpeg, SnapshotError>>>;

/// Most bytes of keyframes the cache holds (each entry keeps its keyframe, to know it again); beyond it the
/// least recently used entries go, whatever `snapshots.cache_entries` allows.
pub const MAX_CACHE_BYTES: usize = 256 << 20;

/// One cached picture.
struct Entry {
    keyframe: Keyframe,
    made: Made,
    used: Instant,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.keyframe.body.len() + self.keyframe.header.len()
    }
}

/// The snapshot service of a node.
pub struct SnapshotService {
    pool: DecoderPool,
    quality: u8,
    max_entries: usize,
    cache: Mutex<HashMap<(StreamKey, u32), Entry>>,
    /// What it served.
    pub counters: SnapshotCounters,
}

impl SnapshotService {
    /// A service decoding with `pool` settings, JPEG `quality` (1..=100), caching `max_entries` pictures.
    pub fn new(pool: PoolSettings, quality: u8, max_entries: usize) -> SnapshotService {
        SnapshotService {
            pool: DecoderPool::new(pool),
            quality,
            max_entries: max_entries.max(1),
            cache: Mutex::new(HashMap::new()),
            counters: SnapshotCounters::default(),
        }
    }

    /// The decoders.
    pub fn pool(&self) -> &DecoderPool {
        &self.pool
    }

    /// Pictures in the cache.
    pub fn cached(&self) -> usize {
        self.cache.lock().map_or(0, |cache| cache.len())
    }

    /// What it did since start.
    pub fn stats(&self) -> SnapshotStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let pool = &self.pool.counters;
        SnapshotStats {
            decoder: self.pool.kind().name(),
            served: get(&self.counters.served),
            cache_hits: get(&self.counters.cache_hits),
            errors: get(&self.counters.errors),
            decodes: get(&pool.decodes),
            decode_failures: get(&pool.failures),
            busy: get(&pool.busy),
            worker_restarts: get(&pool.restarts),
            decode_us: get(&pool.decode_us),
            cached: self.cached() as u64,
        }
    }

    /// The snapshot of `stream`'s latest keyframe `keyframe`, scaled to `width` when given: from the cache
    /// when this keyframe was already made at this width.
    pub async fn live(
        &self,
        stream: &StreamKey,
        keyframe: Keyframe,
        width: Option<u32>,
    ) -> Result<Snapshot, SnapshotError> {
        let slot = (stream.clone(), width.unwrap_or(0));
        let made = self.cache_cell(&slot, &keyframe);
        let decoded_here = AtomicBool::new(false);
        let result = made
            .get_or_init(|| async {
                decoded_here.store(true, Ordering::Relaxed);
                self.make(&keyframe, width).await
            })
            .await
            .clone();
        if matches!(
            result,
            Err(SnapshotError::Busy(_) | SnapshotError::Unavailable(_))
        ) {
            // Worth another try: forget it (unless a newer keyframe replaced it meanwhile).
            if let Ok(mut cache) = self.cache.lock() {
                if cache.get(&slot).is_some_and(|e| Arc::ptr_eq(&e.made, &made)) {
                    cache.remove(&slot);
                }
            }
        }
        let cached = !decoded_here.load(Ordering::Relaxed);
        self.count(&result, cached);
        result.map(|jpeg| Snapshot {
            jpeg,
            dts_ms: keyframe.dts_ms,
            pts_ms: keyframe.pts_ms,
            cached,
        })
    }

    /// A snapshot of a keyframe that is not cached (a recording's).
    pub async fn uncached(&self, keyframe: &Keyframe, width: Option<u32>) -> Result<Snapshot, SnapshotError> {
        let result = self.make(keyframe, width).await;
        self.count(&result, false);
        result.map(|jpeg| Snapshot {
            jpeg,
            dts_ms: keyframe.dts_ms,
            pts_ms: keyframe.pts_ms,
            cached: false,
        })
    }

    /// Counts an error that happened before a keyframe was at hand (no such stream, no keyframe).
    pub fn count_error(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }

    async fn make(&self, keyframe: &Keyframe, width: Option<u32>) -> Result<Jpeg, SnapshotError> {
        let unit = keyframe.annex_b()?;
        self.pool.decode(&unit, width, self.quality).await
    }

    fn count(&self, result: &Result<Jpeg, SnapshotError>, cached: bool) {
        let counters = &self.counters;
        match result {
            Ok(_) => {
                counters.served.fetch_add(1, Ordering::Relaxed);
                if cached {
                    counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The cache's cell for `keyframe` at `slot`: the one made or being made, else a new one (which replaces
    /// an older keyframe's, and may push out the least recently used entry).
    fn cache_cell(&self, slot: &(StreamKey, u32), keyframe: &Keyframe) -> Made {
        let now = Instant::now();
        let Ok(mut cache) = self.cache.lock() else {
            return Made::default();
        };
        if let Some(entry) = cache.get_mut(slot) {
            if entry.keyframe.same_as(keyframe) {
                entry.used = now;
                return Arc::clone(&entry.made);
            }
        }
        cache.remove(slot);
        let adding = keyframe.body.len() + keyframe.header.len();
        let mut held: usize = cache.values().map(Entry::bytes).sum();
        while !cache.is_empty() && (cache.len() >= self.max_entries || held + adding > MAX_CACHE_BYTES) {
            let Some(oldest) = cache.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(gone) = cache.remove(&oldest) {
                held = held.saturating_sub(gone.bytes());
            }
        }
        let made = Made::default();
        cache.insert(
            slot.clone(),
            Entry {
                keyframe: keyframe.clone(),
                made: Arc::clone(&made),
                used: now,
            },
        );
        made
    }
}
