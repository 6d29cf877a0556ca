//! What the cores share: configuration, bans, the publisher registry, mailboxes and counters.
//!
//! Nothing here is touched per frame: the registry and bans are read when a client asks to publish or play,
//! counters are relaxed atomics each written by one core.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::bans::BanStore;
use crate::config::Config;
use crate::control::ClientId;
use crate::node::mailbox::Mailbox;
use crate::stream_key::StreamKey;

/// Counters of one core, written by that core only (relaxed), read by the admin API.
#[derive(Debug, Default)]
pub struct CoreCounters {
    /// Connections open now.
    pub connections: AtomicU64,
    /// Publishers now.
    pub publishers: AtomicU64,
    /// Viewers now (every protocol).
    pub viewers: AtomicU64,
    /// Of them, HTTP viewers (HTTP-FLV) now.
    pub http_viewers: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections ended for bad input, limits or timeouts.
    pub rejected: AtomicU64,
    /// Publish/play requests refused.
    pub refused: AtomicU64,
    /// Clients kicked.
    pub kicked: AtomicU64,
    /// Bytes read.
    pub bytes_in: AtomicU64,
    /// Bytes written.
    pub bytes_out: AtomicU64,
    /// Frames ingested.
    pub frames_in: AtomicU64,
    /// Frames queued to viewers.
    pub frames_out: AtomicU64,
    /// Frames dropped by viewer policies.
    pub frames_dropped: AtomicU64,
    /// Viewers closed at their queue bound.
    pub viewers_overflowed: AtomicU64,
    /// Media messages lost to full inboxes.
    pub inbox_full: AtomicU64,
    /// Streams from the mesh that resumed after their source failed (failovers), on their owner core.
    pub mesh_failovers: AtomicU64,
    /// The failovers' gaps (source lost to its next frame), summed, in milliseconds.
    pub mesh_failover_gap_ms: AtomicU64,
    /// How often each hardening limit was hit.
    pub limits: LimitCounters,
}

/// How often each hardening limit was hit on one core (see [`crate::control::LimitHits`]).
#[derive(Debug, Default)]
pub struct LimitCounters {
    /// Clients closed with more than `rtmp.max_control_queue_bytes` of unread protocol answers.
    pub control_queue: AtomicU64,
    /// Sequence headers or metadata replaced in a viewer's queue by a newer one before being written.
    pub headers_replaced: AtomicU64,
    /// Sessions ended for a `WindowAcknowledgementSize` below `rtmp.min_window_ack_bytes`.
    pub window_ack: AtomicU64,
    /// Players told `NetStream.Play.StreamNotFound` after `rtmp.play_wait_ms`.
    pub play_wait: AtomicU64,
    /// Clients closed after `rtmp.write_stall_timeout_ms` without write progress.
    pub write_stall: AtomicU64,
    /// Connections refused at `rtmp.max_connections_per_ip`.
    pub per_ip: AtomicU64,
    /// Connections refused to keep `rtmp.fd_reserve` descriptors free.
    pub fd_reserve: AtomicU64,
    /// Publishes refused at once: `auth.on_publish_max_pending` hook calls already waiting or in flight.
    pub hook_busy: AtomicU64,
}

impl CoreCounters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` from a gauge.
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
}

/// State shared by all cores and the admin API.
#[derive(Debug)]
pub struct Shared {
    /// The node's configuration.
    pub config: Config,
    /// Stream bans, checked on every publish and play request.
    pub bans: Arc<BanStore>,
    /// Who publishes each stream now (one publisher per stream on this node).
    pub publishers: Mutex<HashMap<StreamKey, ClientId>>,
    /// Each core's inbox.
    pub mailboxes: Vec<Mailbox>,
    /// Each core's counters.
    pub counters: Vec<Arc<CoreCounters>>,
    /// When the node started.
    pub started: Instant,
    /// The wall clock at `started`: the cores tell Unix time (publish token expiry) from their `now`.
    pub started_wall: SystemTime,
    /// The `on_publish` callback runner, when one is configured.
    pub hooks: Option<crate::node::hooks::HookRunner>,
    /// The process's open file limit (RLIMIT_NOFILE), set when the node starts (`u64::MAX` until then):
    /// clients are refused within `rtmp.fd_reserve` of it.
    pub fd_limit: AtomicU64,
    /// Connections open per client IP address (only with `rtmp.max_connections_per_ip`); touched on accept
    /// and close, never per frame.
    ip_connections: Mutex<HashMap<IpAddr, usize>>,
    /// Seeded at random when the node starts: clients cannot choose stream names that pile onto one core.
    hasher: foldhash::fast::RandomState,
    /// Cores whose thread panicked, with the panic's message ([`Shared::health`]).
    dead_cores: Mutex<Vec<(usize, String)>>,
    /// The core that runs the PoP mesh, when the mesh is on ([`crate::node::mesh_port::MESH_CORE`]).
    pub mesh_core: Option<usize>,
    /// Where the owner cores send the events of streams that static pushes carry (when any is configured).
    pub relay_events: Option<crossbeam_channel::Sender<crate::relays::RelayEvent>>,
    /// The recording thread's queue, once the node started it.
    pub recorder: Option<crate::recording::RecorderHandle>,
    /// Streams the admin API asked to record (read when a stream starts, not per frame).
    pub record_requests: Mutex<std::collections::HashSet<StreamKey>>,
    /// The renditions a transcode makes of each stream now, and their audio bitrate (kbit/s), for the
    /// stream's HLS multivariant playlist.
    pub renditions: Mutex<HashMap<StreamKey, (Vec<crate::transcode::ladder::Rendition>, u32)>>,
}

impl Shared {
    /// The renditions a transcode makes of `key` now (and their audio bitrate), if any.
    pub fn renditions_of(&self, key: &StreamKey) -> Option<(Vec<crate::transcode::ladder::Rendition>, u32)> {
        lock(&self.renditions).get(key).cloned()
    }

    /// Shared state for `mailboxes.len()` cores.
    pub fn new(config: Config, bans: Arc<BanStore>, mailboxes: Vec<Mailbox>) -> Shared {
        let counters = mailboxes
            .iter()
            .map(|_| Arc::new(CoreCounters::default()))
            .collect();
        Shared {
            config,
            bans,
            publishers: Mutex::new(HashMap::new()),
            mailboxes,
            counters,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            hooks: None,
            fd_limit: AtomicU64::new(u64::MAX),
            ip_connections: Mutex::new(HashMap::new()),
            hasher: foldhash::fast::RandomState::default(),
            dead_cores: Mutex::new(Vec::new()),
            mesh_core: None,
            relay_events: None,
            recorder: None,
            record_requests: Mutex::new(std::collections::HashSet::new()),
            renditions: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a connection from `ip` if fewer than `cap` are open from it; `false` (nothing counted) at the cap.
    pub fn admit_ip(&self, ip: IpAddr, cap: usize) -> bool {
        let mut open = lock(&self.ip_connections);
        let count = open.entry(ip).or_insert(0);
        if *count >= cap {
            return false;
        }
        *count += 1;
        true
    }

    /// A connection [`Shared::admit_ip`] counted closed.
    pub fn release_ip(&self, ip: IpAddr) {
        let mut open = lock(&self.ip_connections);
        if let Some(count) = open.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }

    /// Connections open on every core now.
    pub fn connections(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.connections.load(Ordering::Relaxed))
            .sum()
    }

    /// Records that core `core`'s thread panicked with `message`: [`Shared::health`] fails from now on.
    pub fn core_died(&self, core: usize, message: String) {
        lock(&self.dead_cores).push((core, message));
    }

    /// `Ok` while every core runs; else which cores died and why.
    pub fn health(&self) -> Result<(), String> {
        let dead = lock(&self.dead_cores);
        if dead.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = dead
            .iter()
            .map(|(core, message)| format!("core {core} panicked: {message}"))
            .collect();
        Err(list.join("; "))
    }

    /// Unix time in seconds at `now` (the wall clock at start plus the monotonic time since).
    pub fn unix_time_s(&self, now: Instant) -> u64 {
        let since_start = now.saturating_duration_since(self.started);
        self.started_wall
            .checked_add(since_start)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    }

    /// Whether `key` is to be recorded: its app records, or the admin API asked.
    pub fn record_wanted(&self, key: &StreamKey) -> bool {
        self.recorder.is_some()
            && (self.config.fanout_for(key.app()).record || lock(&self.record_requests).contains(key))
    }

    /// Wall-clock time (Unix milliseconds) of `instant`, from the node's start.
    pub fn unix_time_ms(&self, instant: Instant) -> u64 {
        let since_start = instant.saturating_duration_since(self.started);
        self.started_wall
            .checked_add(since_start)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// Number of data-plane cores.
    pub fn cores(&self) -> usize {
        self.mailboxes.len()
    }

    /// The core that owns `key`: its hash (foldhash, seeded at random per process) modulo the core count.
    pub fn owner_of(&self, key: &StreamKey) -> usize {
        let cores = self.cores().max(1) as u64;
        (self.hasher.hash_one(key.as_str()) % cores) as usize
    }

    /// Claims `key` for `publisher`; `Err` with the current publisher when someone already publishes it.
    pub fn claim(&self, key: &StreamKey, publisher: ClientId) -> Result<(), ClientId> {
        let mut publishers = match self.publishers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match publishers.get(key) {
            Some(current) if *current != publisher => Err(*current),
            _ => {
                publishers.insert(key.clone(), publisher);
                Ok(())
            }
        }
    }

    /// Who publishes `key` now, if anyone.
    pub fn publisher_of(&self, key: &StreamKey) -> Option<ClientId> {
        lock(&self.publishers).get(key).copied()
    }

    /// Releases `key` if `publisher` holds it.
    pub fn release(&self, key: &StreamKey, publisher: ClientId) {
        let mut publishers = match self.publishers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if publishers.get(key) == Some(&publisher) {
            publishers.remove(key);
        }
    }
}

/// Locks `mutex`, through a poisoned lock (the data is plain counts: still valid).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn shared(cores: usize) -> Shared {
        let mailboxes = (0..cores)
            .map(|_| Mailbox::new(64, Arc::new(engine::Waker::new().unwrap())).0)
            .collect();
        Shared::new(
            Config::default(),
            Arc::new(BanStore::open(None).unwrap()),
            mailboxes,
        )
    }

    #[test]
    fn stream_owners_are_seeded_per_process() {
        // Issue 17, item 17: a fixed seed let clients pick names that all hash to one core. Two `Shared`
        // stand for two processes: the same names land on different cores.
        let (a, b) = (shared(8), shared(8));
        let keys: Vec<StreamKey> = (0..64)
            .map(|i| StreamKey::new("live", &format!("s{i}")).unwrap())
            .collect();
        let differ = keys.iter().filter(|k| a.owner_of(k) != b.owner_of(k)).count();
        assert!(differ > 0, "64 streams on the same cores under two seeds");
        // Within one process the owner never changes.
        assert!(keys.iter().all(|k| a.owner_of(k) == a.owner_of(k)));
    }
}
