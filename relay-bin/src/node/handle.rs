//! [`Node`]: starts the data-plane cores; [`NodeHandle`]: the control plane's [`NodeControl`] over them.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::{Listener, ListenerConfig, Waker};
use tracing::{error, info, warn};

use crate::bans::BanStore;
use crate::config::{Config, IoBackend};
use crate::control::{ClientId, ClientInfo, NodeControl, NodeStats, StreamInfo};
use crate::node::hooks::HookRunner;
use crate::node::io_loop::CoreLoop;
use crate::node::mailbox::{CoreMsg, CoreReport, Mailbox};
use crate::node::mesh_port::{LinkInfo, MeshInput, MESH_CORE};
use crate::node::shared::Shared;
use crate::node::uring_loop::UringLoop;
use crate::stream_key::StreamKey;

/// How long the control plane waits for a core's answer.
const CORE_REPLY_WAIT: Duration = Duration::from_millis(500);

/// The running node's data plane.
pub struct Node {
    handle: Arc<NodeHandle>,
    threads: Vec<JoinHandle<()>>,
    rtmp_addr: SocketAddr,
    egress_addr: Option<SocketAddr>,
    /// The static relays' threads.
    relays: Option<crate::relays::Relays>,
    /// The recording thread.
    recorder: Option<crate::recording::Recorder>,
}

/// The control plane's handle on the cores (implements [`NodeControl`]).
#[derive(Debug)]
pub struct NodeHandle {
    shared: Arc<Shared>,
    /// The cores' IO backend (`uring` or `epoll`).
    backend: &'static str,
}

/// One core's IO loop, on the backend the node runs (boxed: built and run on the core's thread).
enum CoreIo {
    Uring(Box<UringLoop>),
    Epoll(Box<CoreLoop>),
}

impl CoreIo {
    fn run(self) {
        match self {
            CoreIo::Uring(core) => core.run(),
            CoreIo::Epoll(core) => core.run(),
        }
    }
}

impl Node {
    /// Binds one RTMP listener per core (so a bind error surfaces here) and starts the cores.
    pub fn start(config: Config, bans: Arc<BanStore>) -> io::Result<Node> {
        let fd_limit = match engine::limits::raise_nofile_limit() {
            Ok(limit) => {
                info!(
                    limit,
                    reserve = config.rtmp.fd_reserve,
                    "open file limit (clients are refused within rtmp.fd_reserve of it)"
                );
                limit
            }
            Err(error) => {
                warn!(%error, "cannot raise the open file limit");
                u64::MAX
            }
        };
        let allowed = engine::affinity::allowed_cpus().unwrap_or_default();
        let cores = match config.engine.cores {
            0 => allowed.len().max(1),
            n => n,
        };
        // Bind the first listener, then the others on the port it got (port 0 picks one for all).
        let listener_config = ListenerConfig {
            liveness: config.liveness(),
            ..ListenerConfig::default()
        };
        let first = Listener::bind(config.rtmp.listen, listener_config)?;
        let rtmp_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..cores {
            listeners.push(Listener::bind(rtmp_addr, listener_config)?);
        }
        // HTTP egress: one listener per core as well, on the port the first got.
        let mut egress_listeners: Vec<Option<Listener>> = Vec::with_capacity(cores);
        let mut egress_addr = None;
        if config.egress.enabled {
            let first = Listener::bind(config.egress.listen, listener_config).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on egress.listen = {}: {e}", config.egress.listen),
                )
            })?;
            let addr = first.local_addr()?;
            egress_addr = Some(addr);
            egress_listeners.push(Some(first));
            for _ in 1..cores {
                egress_listeners.push(Some(Listener::bind(addr, listener_config)?));
            }
        } else {
            egress_listeners.resize_with(cores, || None);
        }
        let mut mailboxes = Vec::with_capacity(cores);
        let mut inboxes = Vec::with_capacity(cores);
        let mut wakers = Vec::with_capacity(cores);
        for _ in 0..cores {
            let waker = Arc::new(Waker::new()?);
            let (mailbox, inbox) = Mailbox::new(config.engine.inbox_capacity, waker.clone());
            mailboxes.push(mailbox);
            inboxes.push(inbox);
            wakers.push(waker);
        }
        let pin = config.engine.pin;
        let backend_setting = config.engine.backend;
        let hooks = match &config.auth.on_publish {
            Some(url) => {
                let timeout = Duration::from_millis(config.auth.on_publish_timeout_ms.unwrap_or(3_000));
                Some(HookRunner::start(
                    url.clone(),
                    timeout,
                    config.auth.on_publish_max_pending,
                    mailboxes.clone(),
                )?)
            }
            None => None,
        };
        let mesh_setup = config
            .mesh
            .resolve()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        // Every core runs the same backend. `auto` probes io_uring once here and falls back to epoll, for all
        // cores, where it is refused; `uring` makes a refused ring a start-up error.
        let use_uring = match backend_setting {
            IoBackend::Epoll => false,
            IoBackend::Uring => true,
            IoBackend::Auto => match engine::uring::probe() {
                Ok(_) => true,
                Err(error) => {
                    warn!(
                        %error,
                        "io_uring is not available (refused by seccomp, kernel.io_uring_disabled or the kernel); \
                         the cores use epoll"
                    );
                    false
                }
            },
        };
        let backend = if use_uring { "uring" } else { "epoll" };
        if mesh_setup.is_some() && !use_uring {
            return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the mesh ([mesh] id is set) runs on io_uring, and the cores use epoll (engine.backend = \"epoll\", \
                     or io_uring is refused here): set engine.backend = \"auto\" on a kernel with io_uring, or \
                     leave [mesh] id empty",
                ));
        }
        let recording = &config.recording;
        let recorder = crate::recording::Recorder::start(crate::recording::RecorderSettings {
            dir: recording.path.clone(),
            roll_ms: recording.roll_s.saturating_mul(1_000),
            roll_bytes: recording.roll_bytes,
            queue_frames: recording.queue_frames,
        })?;
        let mut shared = Shared::new(config, bans, mailboxes);
        shared.recorder = Some(recorder.handle());
        shared.hooks = hooks;
        shared.fd_limit = std::sync::atomic::AtomicU64::new(fd_limit);
        shared.mesh_core = mesh_setup.as_ref().map(|_| MESH_CORE);
        let relay_channel = crate::relays::channel(&shared.config.relays);
        let (relay_events, relay_queue) = relay_channel.unzip();
        shared.relay_events = relay_events;
        let shared = Arc::new(shared);
        let mut mesh_setup = mesh_setup;
        // A ring is built on the thread that runs it (it is not Send, and its first use binds it to that
        // thread); each core reports whether its loop started before the node does.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<(usize, io::Result<()>)>();
        let mut threads = Vec::with_capacity(cores);
        let per_core = listeners
            .into_iter()
            .zip(egress_listeners)
            .zip(inboxes)
            .zip(wakers);
        for (index, (((listener, egress), inbox), waker)) in per_core.enumerate() {
            let cpu = (pin && !allowed.is_empty())
                .then(|| allowed.get(index % allowed.len()).copied())
                .flatten();
            let shared = shared.clone();
            let supervised = shared.clone();
            let ready = ready_tx.clone();
            let mesh = if index == MESH_CORE {
                mesh_setup.take()
            } else {
                None
            };
            let thread = std::thread::Builder::new()
                .name(format!("popline-core-{index}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(error) = engine::affinity::pin_current_thread(cpu) {
                            warn!(core = index, cpu, %error, "cannot pin core thread");
                        }
                    }
                    let core = if use_uring {
                        UringLoop::new(index, shared, listener, egress, inbox, waker, mesh)
                            .map(|c| CoreIo::Uring(Box::new(c)))
                    } else {
                        CoreLoop::new(index, shared, listener, egress, inbox, waker)
                            .map(|c| CoreIo::Epoll(Box::new(c)))
                    };
                    match core {
                        Ok(core) => {
                            let _ = ready.send((index, Ok(())));
                            let run = std::panic::AssertUnwindSafe(|| core.run());
                            if let Err(panic) = std::panic::catch_unwind(run) {
                                core_panicked(&supervised, index, panic.as_ref());
                            }
                        }
                        Err(error) => {
                            let _ = ready.send((index, Err(error)));
                        }
                    }
                })?;
            threads.push(thread);
        }
        drop(ready_tx);
        let mut failure = None;
        for (index, result) in ready_rx.iter().take(cores) {
            if let Err(error) = result {
                failure.get_or_insert(io::Error::new(
                    error.kind(),
                    format!("core {index} cannot start its {backend} loop: {error}"),
                ));
            }
        }
        if let Some(error) = failure {
            for mailbox in &shared.mailboxes {
                let _ = mailbox.send(CoreMsg::Shutdown);
            }
            for thread in threads {
                let _ = thread.join();
            }
            return Err(error);
        }
        info!(%rtmp_addr, cores, backend, pinned = pin, "RTMP listening");
        if let Some(addr) = egress_addr {
            info!(%addr, "HTTP egress listening (HTTP-FLV: GET /APP/STREAM.flv)");
        }
        let relays = crate::relays::Relays::start(relay_queue, &shared)?;
        Ok(Node {
            handle: Arc::new(NodeHandle { shared, backend }),
            threads,
            rtmp_addr,
            egress_addr,
            relays: Some(relays),
            recorder: Some(recorder),
        })
    }

    /// The address the HTTP egress listeners are bound to, when egress is on.
    pub fn egress_addr(&self) -> Option<SocketAddr> {
        self.egress_addr
    }

    /// The address the RTMP listeners are bound to.
    pub fn rtmp_addr(&self) -> SocketAddr {
        self.rtmp_addr
    }

    /// The control plane's handle.
    pub fn handle(&self) -> Arc<NodeHandle> {
        self.handle.clone()
    }

    /// Stops every core (their clients are closed) and waits for them.
    pub fn shutdown(mut self) {
        if let Some(relays) = self.relays.take() {
            relays.stop();
        }
        for mailbox in &self.handle.shared.mailboxes {
            let _ = mailbox.send(CoreMsg::Shutdown);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        // After the cores: every file in progress is finished and synced.
        if let Some(recorder) = self.recorder.take() {
            recorder.stop();
        }
    }
}

/// A core's thread panicked: its clients and the streams it owns are gone. Logged, and `/healthz` fails from
/// now on; with `engine.exit_on_core_panic` (the default) the process then exits with status 70, so its
/// service manager restarts a whole node rather than leaving one that serves some streams and not others.
fn core_panicked(shared: &Shared, core: usize, panic: &(dyn std::any::Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    error!(
        core,
        panic = %message,
        "core panicked: its clients and the streams it owns are gone; /healthz fails from now on"
    );
    shared.core_died(core, message);
    if shared.config.engine.exit_on_core_panic {
        error!(
            core,
            "exiting (status 70) so the service manager restarts the node (engine.exit_on_core_panic)"
        );
        std::process::exit(70);
    }
}

impl NodeHandle {
    fn query_all(&self) -> Vec<CoreReport> {
        let mut waiting = Vec::new();
        for mailbox in &self.shared.mailboxes {
            let (reply, answer) = crossbeam_channel::bounded(1);
            if mailbox.send(CoreMsg::Query { reply }).is_ok() {
                waiting.push(answer);
            }
        }
        let deadline = Instant::now() + CORE_REPLY_WAIT;
        waiting
            .into_iter()
            .filter_map(|answer| answer.recv_deadline(deadline).ok())
            .collect()
    }
}

impl NodeControl for NodeHandle {
    fn streams(&self) -> Vec<StreamInfo> {
        let reports = self.query_all();
        let mut viewers: HashMap<StreamKey, (u64, u64)> = HashMap::new();
        for report in &reports {
            for (key, count, bytes_out) in &report.viewers {
                let v = viewers.entry(key.clone()).or_default();
                v.0 += count;
                v.1 += bytes_out;
            }
        }
        // A session's requests may land on several cores: each is counted once.
        let mut sessions: HashMap<StreamKey, std::collections::HashSet<String>> = HashMap::new();
        for report in &reports {
            for (key, ids) in &report.hls_sessions {
                sessions
                    .entry(key.clone())
                    .or_default()
                    .extend(ids.iter().cloned());
            }
        }
        let mut streams: Vec<StreamInfo> = reports.into_iter().flat_map(|r| r.owned).collect();
        for stream in &mut streams {
            (stream.viewers, stream.bytes_out) = viewers.get(&stream.stream).copied().unwrap_or((0, 0));
            stream.hls_sessions = sessions.get(&stream.stream).map_or(0, |s| s.len() as u64);
        }
        streams.sort_by(|a, b| a.stream.cmp(&b.stream));
        if let Some(mailbox) = self.shared.mesh_core.and_then(|c| self.shared.mailboxes.get(c)) {
            let (reply, answer) = crossbeam_channel::bounded(1);
            let keys = streams.iter().map(|s| s.stream.clone()).collect();
            if mailbox
                .send(CoreMsg::Mesh(MeshInput::Homes { keys, reply }))
                .is_ok()
            {
                if let Ok(homes) = answer.recv_timeout(CORE_REPLY_WAIT) {
                    for (stream, home) in streams.iter_mut().zip(homes) {
                        stream.home = home;
                    }
                }
            }
        }
        streams
    }

    fn clients(&self) -> Vec<ClientInfo> {
        let mut clients: Vec<ClientInfo> = self.query_all().into_iter().flat_map(|r| r.clients).collect();
        clients.sort_by_key(|c| c.id);
        clients
    }

    fn stats(&self) -> NodeStats {
        let mut stats = NodeStats {
            backend: self.backend,
            cores: self.shared.cores(),
            uptime_s: self.shared.started.elapsed().as_secs(),
            ..NodeStats::default()
        };
        for c in &self.shared.counters {
            let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
            stats.connections += get(&c.connections);
            stats.publishers += get(&c.publishers);
            stats.viewers += get(&c.viewers);
            stats.http_viewers += get(&c.http_viewers);
            stats.connections_accepted += get(&c.accepted);
            stats.connections_rejected += get(&c.rejected);
            stats.requests_refused += get(&c.refused);
            stats.clients_kicked += get(&c.kicked);
            stats.bytes_in += get(&c.bytes_in);
            stats.bytes_out += get(&c.bytes_out);
            stats.frames_in += get(&c.frames_in);
            stats.frames_out += get(&c.frames_out);
            stats.frames_dropped += get(&c.frames_dropped);
            stats.viewers_overflowed += get(&c.viewers_overflowed);
            stats.inbox_full += get(&c.inbox_full);
            stats.mesh_failovers += get(&c.mesh_failovers);
            stats.mesh_failover_gap_ms += get(&c.mesh_failover_gap_ms);
            let (l, hits) = (&c.limits, &mut stats.limit_hits);
            hits.control_queue += get(&l.control_queue);
            hits.headers_replaced += get(&l.headers_replaced);
            hits.window_ack += get(&l.window_ack);
            hits.play_wait += get(&l.play_wait);
            hits.write_stall += get(&l.write_stall);
            hits.per_ip += get(&l.per_ip);
            hits.fd_reserve += get(&l.fd_reserve);
            hits.hook_busy += get(&l.hook_busy);
        }
        if let Some(recorder) = &self.shared.recorder {
            let c = &recorder.counters;
            let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
            stats.recordings = get(&c.active);
            stats.recording_files = get(&c.files_finished);
            stats.recording_bytes = get(&c.bytes);
            stats.recording_errors = get(&c.errors);
            stats.recording_frames_lost = get(&c.frames_lost);
            stats.recording_last_error = c.last_error.lock().ok().and_then(|e| e.clone());
        }
        stats
    }

    fn record(&self, stream: &StreamKey, on: bool) -> Result<bool, String> {
        if self.shared.recorder.is_none() {
            return Err("recording is not running on this node".to_string());
        }
        if let Ok(mut requests) = self.shared.record_requests.lock() {
            if on {
                requests.insert(stream.clone());
            } else {
                requests.remove(stream);
            }
        }
        let owner = self.shared.owner_of(stream);
        let mailbox = self.shared.mailboxes.get(owner).ok_or("no such core")?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        mailbox
            .send(CoreMsg::Record {
                key: stream.clone(),
                on,
                reply,
            })
            .map_err(|_| "the stream's core is not taking messages".to_string())?;
        answer
            .recv_timeout(CORE_REPLY_WAIT)
            .map_err(|_| "the stream's core did not answer in time".to_string())
    }

    fn keyframe(
        &self,
        stream: &StreamKey,
    ) -> Result<crate::snapshot::Keyframe, crate::snapshot::SnapshotError> {
        use crate::snapshot::SnapshotError;
        let owner = self.shared.owner_of(stream);
        let mailbox = self
            .shared
            .mailboxes
            .get(owner)
            .ok_or_else(|| SnapshotError::Unavailable("no such core".into()))?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        mailbox
            .send(CoreMsg::Keyframe {
                key: stream.clone(),
                reply,
            })
            .map_err(|_| SnapshotError::Unavailable("the stream's core is not taking messages".into()))?;
        match answer.recv_timeout(CORE_REPLY_WAIT) {
            Ok(Some(Some(keyframe))) => Ok(keyframe),
            Ok(Some(None)) => Err(SnapshotError::NoKeyframe(format!(
                "{stream} holds no keyframe yet (or its GOP outgrew fanout.gop_cache_bytes): try again after the next one"
            ))),
            Ok(None) => Err(SnapshotError::NotFound(format!("no stream {stream} is live here"))),
            Err(_) => Err(SnapshotError::Unavailable("the stream's core did not answer in time".into())),
        }
    }

    fn set_renditions(
        &self,
        stream: &StreamKey,
        renditions: Option<(Vec<crate::transcode::ladder::Rendition>, u32)>,
    ) {
        if let Ok(mut map) = self.shared.renditions.lock() {
            match renditions {
                Some(renditions) => map.insert(stream.clone(), renditions),
                None => map.remove(stream),
            };
        }
    }

    fn health(&self) -> Result<(), String> {
        self.shared.health()
    }

    fn kick_client(&self, id: ClientId) -> bool {
        let Some(mailbox) = self.shared.mailboxes.get(id.core()) else {
            return false;
        };
        let (reply, answer) = crossbeam_channel::bounded(1);
        if mailbox.send(CoreMsg::Kick { id, reply }).is_err() {
            return false;
        }
        answer.recv_timeout(CORE_REPLY_WAIT).unwrap_or(false)
    }

    fn kick_stream(&self, stream: &StreamKey) -> u64 {
        let mut waiting = Vec::new();
        for mailbox in &self.shared.mailboxes {
            let (reply, answer) = crossbeam_channel::bounded(1);
            if mailbox
                .send(CoreMsg::KickStream {
                    key: stream.clone(),
                    reply,
                })
                .is_ok()
            {
                waiting.push(answer);
            }
        }
        let deadline = Instant::now() + CORE_REPLY_WAIT;
        waiting
            .into_iter()
            .filter_map(|a| a.recv_deadline(deadline).ok())
            .sum()
    }

    fn forbid_everywhere(&self, stream: &StreamKey, until_unix_ms: Option<u64>, reason: &str) {
        let Some(mailbox) = self.shared.mesh_core.and_then(|c| self.shared.mailboxes.get(c)) else {
            return;
        };
        let input = MeshInput::Forbid {
            key: stream.clone(),
            until_unix_ms,
            reason: reason.to_string(),
        };
        if mailbox.send(CoreMsg::Mesh(input)).is_err() {
            warn!(%stream, "forbid not sent to the mesh: the mesh core's inbox is full or gone");
        }
    }

    fn unforbid_everywhere(&self, stream: &StreamKey) {
        let Some(mailbox) = self.shared.mesh_core.and_then(|c| self.shared.mailboxes.get(c)) else {
            return;
        };
        let input = MeshInput::Unforbid { key: stream.clone() };
        if mailbox.send(CoreMsg::Mesh(input)).is_err() {
            warn!(%stream, "lift of a ban not sent to the mesh: the mesh core's inbox is full or gone");
        }
    }

    fn links(&self) -> Option<Vec<LinkInfo>> {
        let mailbox = self.shared.mesh_core.and_then(|c| self.shared.mailboxes.get(c))?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        mailbox.send(CoreMsg::Mesh(MeshInput::Links { reply })).ok()?;
        answer.recv_timeout(CORE_REPLY_WAIT).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_panicked_core_makes_the_node_unhealthy() {
        // Issue 17, item 17: a core's thread died silently and /healthz kept saying ok.
        let mut config = Config::default();
        config.rtmp.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.egress.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.engine.cores = 2;
        config.engine.pin = false;
        config.engine.exit_on_core_panic = false;
        let bans = Arc::new(BanStore::open(None).unwrap());
        let node = Node::start(config, bans).unwrap();
        let handle = node.handle();
        assert_eq!(handle.health(), Ok(()));
        handle.shared.mailboxes[1].send(CoreMsg::PanicForTest).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while handle.health().is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let why = handle.health().unwrap_err();
        assert!(
            why.contains("core 1 panicked: core 1 was asked to panic"),
            "{why}"
        );
        // The admin API's /healthz says so.
        let http = crate::config::AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..crate::config::AdminConfig::default()
        };
        let bans = Arc::new(BanStore::open(None).unwrap());
        let admin = crate::admin::AdminServer::spawn(&http, handle.clone(), bans).unwrap();
        let mut socket = std::net::TcpStream::connect(admin.local_addr()).unwrap();
        std::io::Write::write_all(
            &mut socket,
            b"GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut socket, &mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("core 1 panicked"), "{answer}");
        admin.shutdown();
        node.shutdown();
    }
}
