//! The admin HTTP API: list streams and clients, stats, Prometheus `/metrics`, kick, and forbid (ban).
//!
//! It runs on its own small tokio runtime (two worker threads, a bounded blocking pool) in its own thread;
//! the data plane never runs on it. It reaches the cores only through [`NodeControl`], whose calls it makes
//! on the blocking pool under a deadline ([`api`]).
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/streams` | JSON array of [`StreamInfo`](crate::control::StreamInfo) |
//! | `GET /api/v1/clients` | JSON array of [`ClientInfo`](crate::control::ClientInfo) |
//! | `GET /api/v1/stats` | [`NodeStats`](crate::control::NodeStats) |
//! | `DELETE /api/v1/clients/{id}` | 204, or 404 when no such client |
//! | `POST /api/v1/streams/{app}/{stream}/forbid` | body `{"duration_s": n}` or `{"permanent": true}`, and `"reason"?`: the ban applies, then the stream's clients are kicked: `{"ban": BanView, "kicked": n, "saved": bool}` |
//! | `DELETE /api/v1/streams/{app}/{stream}/forbid` | the lifted ban ([`BanView`](crate::bans::BanView) and `saved`), or 404 |
//! | `GET /api/v1/bans` | JSON array of active bans ([`BanView`](crate::bans::BanView): RFC 3339 times, `remaining_s`) |
//! | `POST`/`DELETE /api/v1/streams/{app}/{stream}/record` | recording on or off: `{"stream", "recording", "live"}` |
//! | `GET /api/v1/streams/{app}/{stream}/snapshot.jpg[?width=N]` | the latest keyframe as `image/jpeg` ([`crate::snapshot`]); 404 no stream or keyframe, 415 not H.264, 503 decoders busy |
//! | `GET /api/v1/recordings` | JSON array of recordings on disk (`name`, `bytes`, `modified_unix_ms`), newest first |
//! | `GET /api/v1/recordings/{name}/snapshot.jpg?t=SECONDS[&width=N]` | a recording's keyframe at or before `t` as `image/jpeg` |
//! | `GET /api/v1/links` | the PoP mesh's links |
//! | `GET /metrics` | Prometheus text format 0.0.4 ([`metrics`]) |
//! | `GET /console` | the moderation console ([`console`]; its files need no token, its data does) |
//! | `GET /api/v1/console` | where the node's HTTP egress is, for the console's player |
//! | `GET /healthz` | `200 ok`, or 503 `unhealthy: ...` once a core has died, or `degraded: ...` while the ban file cannot be written (never needs the token) |
//!
//! With `http.token` set, every route but `/healthz` needs `Authorization: Bearer <token>` ([`auth_token`]).
//! Errors are JSON `{"error": "..."}` ([`error`]). The server also drops expired bans from memory and the ban
//! file once a minute, and writes the ban file again every [`RETRY_INTERVAL`](crate::bans::RETRY_INTERVAL)
//! while its last write failed.

pub mod api;
pub mod auth_token;
pub mod console;
pub mod error;
pub mod metrics;
#[cfg(test)]
mod testing;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::bans::BanStore;
use crate::config::AdminConfig;
use crate::control::NodeControl;

use self::api::ApiState;
use self::auth_token::{BearerToken, TokenError};

/// How long a call into the node or a ban-file write may take before the API answers 503.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How long [`AdminServer::shutdown`] lets open requests finish before it closes their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often expired bans are purged.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Threads of the blocking pool (node calls, ban writes); more concurrent calls wait, then time out.
const MAX_BLOCKING_THREADS: usize = 8;

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from `http.listen`.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// The configured token cannot be used.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The runtime or its thread could not be started.
    #[error("cannot start the admin runtime: {0}")]
    Runtime(std::io::Error),
}

/// What the API serves beside the node's own state.
#[derive(Default)]
pub struct Media {
    /// Snapshots (off: `None`, and the snapshot routes answer 503).
    pub snapshots: Option<Arc<crate::snapshot::SnapshotService>>,
    /// The periodic snapshot job (needs `snapshots`).
    pub periodic: Option<crate::snapshot::periodic::PeriodicSettings>,
    /// The recording folder, for `GET /api/v1/recordings` and recordings' snapshots.
    pub recordings: Option<std::path::PathBuf>,
    /// The transcoder, when some app has renditions.
    pub transcoder: Option<Arc<crate::transcode::Transcoder>>,
    /// The apps' ladders (a forbid of a source forbids its renditions too).
    pub ladders: Arc<crate::transcode::ladder::Ladders>,
    /// The node's HTTP egress address (the console's player).
    pub egress: Option<SocketAddr>,
}

/// The running admin API. Dropping it stops it too (as [`AdminServer::shutdown`] does).
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `config.listen` (port 0 picks a free port) and serves the API on its own thread; returns once
    /// the listener is bound, so a bind error is reported here. Does not look at `config.enabled`: the
    /// caller decides whether to start the API at all.
    pub fn spawn(
        config: &AdminConfig,
        control: Arc<dyn NodeControl>,
        bans: Arc<BanStore>,
    ) -> Result<AdminServer, AdminError> {
        AdminServer::spawn_with_deadline(config, control, bans, DEADLINE, Media::default())
    }

    /// As [`AdminServer::spawn`], with the media services the API serves (snapshots, recordings) and the
    /// periodic snapshot job, which runs on the API's runtime.
    pub fn spawn_with_media(
        config: &AdminConfig,
        control: Arc<dyn NodeControl>,
        bans: Arc<BanStore>,
        media: Media,
    ) -> Result<AdminServer, AdminError> {
        AdminServer::spawn_with_deadline(config, control, bans, DEADLINE, media)
    }

    fn spawn_with_deadline(
        config: &AdminConfig,
        control: Arc<dyn NodeControl>,
        bans: Arc<BanStore>,
        deadline: Duration,
        media: Media,
    ) -> Result<AdminServer, AdminError> {
        let token = config
            .token
            .as_deref()
            .map(BearerToken::new)
            .transpose()?
            .map(Arc::new);
        let bind_error = |source| AdminError::Bind {
            addr: config.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name("popline-admin")
            .enable_all()
            .build()
            .map_err(AdminError::Runtime)?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(bind_error)?
        };
        let periodic = match (&media.snapshots, media.periodic) {
            (Some(service), Some(settings)) => Some(crate::snapshot::periodic::run(
                settings,
                Arc::clone(&control),
                Arc::clone(service),
            )),
            _ => None,
        };
        let app = api::router(ApiState {
            control,
            bans: Arc::clone(&bans),
            token,
            deadline,
            snapshots: media.snapshots,
            recordings: media.recordings,
            transcoder: media.transcoder,
            ladders: media.ladders,
            egress: media.egress,
            recording_scans: Arc::new(tokio::sync::Semaphore::new(api::MAX_RECORDING_SCANS)),
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("popline-admin".to_string())
            .spawn(move || {
                if let Some(job) = periodic {
                    runtime.spawn(job);
                }
                serve(runtime, listener, app, bans, stopped)
            })
            .map_err(AdminError::Runtime)?;
        Ok(AdminServer {
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the API listens on (the real port when `http.listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets open requests finish (up to [`SHUTDOWN_GRACE`]), and joins the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("admin API thread panicked");
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The admin thread: serves until `stopped` fires (or its sender is dropped), then shuts down gracefully.
fn serve(
    runtime: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    bans: Arc<BanStore>,
    stopped: oneshot::Receiver<()>,
) {
    runtime.block_on(async move {
        let (drain, draining) = oneshot::channel::<()>();
        let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = draining.await;
            });
        let server = tokio::spawn(server.into_future());
        let purger = tokio::spawn(purge_expired_bans(Arc::clone(&bans)));
        let retrier = tokio::spawn(retry_ban_saves(bans));
        let _ = stopped.await;
        purger.abort();
        retrier.abort();
        let _ = drain.send(());
        match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(Ok(Ok(()))) => info!("admin API stopped"),
            Ok(Ok(Err(error))) => warn!(%error, "admin API server failed"),
            Ok(Err(error)) => warn!(%error, "admin API server task failed"),
            Err(_) => warn!(
                grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
                "admin API requests still open after the grace period; closing them"
            ),
        }
    });
    // A node call stuck on the blocking pool must not hold the process's shutdown.
    runtime.shutdown_timeout(Duration::from_secs(1));
}

async fn purge_expired_bans(bans: Arc<BanStore>) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let bans = Arc::clone(&bans);
        match tokio::task::spawn_blocking(move || bans.purge_expired()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(purged)) => info!(purged, "expired bans dropped"),
            Ok(Err(error)) => warn!(%error, "cannot purge expired bans"),
            Err(error) => warn!(%error, "ban purge task failed"),
        }
    }
}

/// Writes the ban file again while its last write failed (the bans apply in memory meanwhile).
async fn retry_ban_saves(bans: Arc<BanStore>) {
    let mut tick = tokio::time::interval(crate::bans::RETRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let bans = Arc::clone(&bans);
        match tokio::task::spawn_blocking(move || bans.retry_save()).await {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => info!("ban file written again: the bans in force are on disk"),
            Ok(Err(error)) => {
                tracing::error!(%error, "ban file still cannot be written; the bans apply, retrying")
            }
            Err(error) => warn!(%error, "ban save task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{request, FakeControl};
    use super::*;
    use crate::control::ClientId;
    use crate::stream_key::StreamKey;
    use std::path::PathBuf;
    use std::sync::atomic::Ordering;

    const TOKEN: &str = "t0ken";

    /// A fresh directory for a ban file, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("popline-admin-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Fixture {
        server: AdminServer,
        control: Arc<FakeControl>,
        bans_path: Option<PathBuf>,
        _dir: TempDir,
    }

    fn start(token: Option<&str>, persist: bool, deadline: Duration) -> Fixture {
        let dir = TempDir::new("api");
        let bans_path = persist.then(|| dir.0.join("bans.json"));
        let config = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            enabled: true,
            token: token.map(str::to_string),
        };
        let control = Arc::new(FakeControl::default());
        let bans = Arc::new(BanStore::open(bans_path.clone()).unwrap());
        let server =
            AdminServer::spawn_with_deadline(&config, control.clone(), bans, deadline, Media::default())
                .unwrap();
        Fixture {
            server,
            control,
            bans_path,
            _dir: dir,
        }
    }

    #[test]
    fn token_is_required_except_for_healthz() {
        let fixture = start(Some(TOKEN), false, DEADLINE);
        let addr = fixture.server.local_addr();
        assert_ne!(addr.port(), 0);
        for path in ["/api/v1/streams", "/api/v1/stats", "/metrics", "/api/v1/nope"] {
            let answer = request(addr, "GET", path, None, None);
            assert_eq!(answer.status, 401, "{path}");
            assert!(answer.json()["error"].as_str().unwrap().contains("bearer token"));
            assert_eq!(
                answer.header("www-authenticate"),
                Some("Bearer realm=\"popline\"")
            );
            assert_eq!(
                request(addr, "GET", path, Some("wrong"), None).status,
                401,
                "{path}"
            );
        }
        let forbid = request(
            addr,
            "POST",
            "/api/v1/streams/live/cam/forbid",
            Some("t0ke"),
            None,
        );
        assert_eq!(forbid.status, 401);
        assert!(fixture.control.kicked_streams.lock().unwrap().is_empty());

        let health = request(addr, "GET", "/healthz", None, None);
        assert_eq!((health.status, health.body.as_str()), (200, "ok"));

        let streams = request(addr, "GET", "/api/v1/streams", Some(TOKEN), None);
        assert_eq!(streams.status, 200);
        assert_eq!(streams.json()[0]["stream"], "live/cam");
        let clients = request(addr, "GET", "/api/v1/clients", Some(TOKEN), None);
        assert_eq!(clients.json()[0]["role"], "publisher");
        let stats = request(addr, "GET", "/api/v1/stats", Some(TOKEN), None);
        assert_eq!(stats.json()["backend"], "epoll");
        let unknown = request(addr, "GET", "/api/v1/nope", Some(TOKEN), None);
        assert_eq!(unknown.status, 404);
        assert!(unknown.json()["error"].as_str().unwrap().contains("/api/v1/nope"));
        let wrong_method = request(addr, "PUT", "/api/v1/streams", Some(TOKEN), None);
        assert_eq!(wrong_method.status, 405);
        assert!(wrong_method.json()["error"].is_string());
        fixture.server.shutdown();
    }

    #[test]
    fn no_token_configured_means_open() {
        let fixture = start(None, false, DEADLINE);
        let answer = request(fixture.server.local_addr(), "GET", "/api/v1/stats", None, None);
        assert_eq!(answer.status, 200);
    }

    #[test]
    fn forbid_persists_then_kicks_and_unforbid_lifts() {
        let fixture = start(Some(TOKEN), true, DEADLINE);
        let addr = fixture.server.local_addr();
        let path = "/api/v1/streams/live/cam/forbid";

        let answer = request(
            addr,
            "POST",
            path,
            Some(TOKEN),
            Some(r#"{"duration_s": 3600, "reason": "spam"}"#),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        let json = answer.json();
        assert_eq!(json["saved"], true);
        assert_eq!(json["ban"]["remaining_s"], 3600);
        assert_eq!(json["ban"]["permanent"], false);
        assert!(json["ban"]["until"].as_str().unwrap().ends_with('Z'));
        assert_eq!(json["kicked"], 2);
        assert_eq!(json["ban"]["stream"], "live/cam");
        assert_eq!(json["ban"]["reason"], "spam");
        let created = json["ban"]["created_unix_ms"].as_u64().unwrap();
        assert_eq!(
            json["ban"]["until_unix_ms"].as_u64().unwrap(),
            created + 3_600_000
        );
        let key = StreamKey::new("live", "cam").unwrap();
        assert_eq!(*fixture.control.kicked_streams.lock().unwrap(), vec![key.clone()]);

        // On disk: a fresh store over the same file sees it.
        let reopened = BanStore::open(fixture.bans_path.clone()).unwrap();
        assert_eq!(reopened.check(&key).unwrap().reason, "spam");

        let bans = request(addr, "GET", "/api/v1/bans", Some(TOKEN), None);
        assert_eq!(bans.json().as_array().unwrap().len(), 1);

        // A ban until lifted is asked for by name; an empty body is refused (it says how long is needed).
        let empty = request(
            addr,
            "POST",
            "/api/v1/streams/live/other/forbid",
            Some(TOKEN),
            None,
        );
        assert_eq!(empty.status, 400, "{}", empty.body);
        assert!(empty.json()["error"].as_str().unwrap().contains("permanent"));
        let other = request(
            addr,
            "POST",
            "/api/v1/streams/live/other/forbid",
            Some(TOKEN),
            Some(r#"{"permanent": true}"#),
        );
        assert_eq!(other.status, 200, "{}", other.body);
        assert!(other.json()["ban"]["until_unix_ms"].is_null());
        assert_eq!(other.json()["ban"]["permanent"], true);

        let lifted = request(addr, "DELETE", path, Some(TOKEN), None);
        assert_eq!(lifted.status, 200);
        assert_eq!(lifted.json()["stream"], "live/cam");
        assert!(BanStore::open(fixture.bans_path.clone())
            .unwrap()
            .check(&key)
            .is_none());
        let again = request(addr, "DELETE", path, Some(TOKEN), None);
        assert_eq!(again.status, 404);
        assert!(again.json()["error"].as_str().unwrap().contains("live/cam"));
    }

    #[test]
    fn bad_forbid_requests_are_400_or_413() {
        let fixture = start(None, false, DEADLINE);
        let addr = fixture.server.local_addr();
        let path = "/api/v1/streams/live/cam/forbid";
        for body in [
            "{",
            r#"{"duration_s": "long"}"#,
            r#"{"reasn": "x"}"#,
            r#"{"duration_s": 0}"#,
            r#"{"reason": "no duration"}"#,
            r#"{"duration_s": 5, "permanent": true}"#,
            r#"{"permanent": false}"#,
        ] {
            let answer = request(addr, "POST", path, None, Some(body));
            assert_eq!(answer.status, 400, "{body}");
            assert!(answer.json()["error"].is_string());
        }
        let bad_name = request(addr, "POST", "/api/v1/streams/live/a%2Fb/forbid", None, None);
        assert_eq!(bad_name.status, 400);
        assert!(bad_name.json()["error"].as_str().unwrap().contains("stream name"));
        let huge = format!(r#"{{"reason": "{}"}}"#, "x".repeat(api::MAX_BODY_BYTES));
        let answer = request(addr, "POST", path, None, Some(&huge));
        assert_eq!(answer.status, 413);
        assert!(answer.json()["error"].is_string());
        assert!(fixture.control.kicked_streams.lock().unwrap().is_empty());
    }

    #[test]
    fn a_ban_that_cannot_be_saved_applies_kicks_and_is_reported() {
        let dir = TempDir::new("fail");
        let config = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            enabled: true,
            token: None,
        };
        let control = Arc::new(FakeControl::default());
        let bans = Arc::new(BanStore::open(Some(dir.0.join("no-such-dir").join("bans.json"))).unwrap());
        let server = AdminServer::spawn(&config, control.clone(), Arc::clone(&bans)).unwrap();
        let addr = server.local_addr();
        assert_eq!(request(addr, "GET", "/healthz", None, None).status, 200);
        let answer = request(
            addr,
            "POST",
            "/api/v1/streams/live/cam/forbid",
            None,
            Some(r#"{"permanent": true}"#),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        let json = answer.json();
        assert_eq!(json["saved"], false);
        assert!(
            json["save_error"]
                .as_str()
                .unwrap()
                .contains("cannot write ban file"),
            "{}",
            answer.body
        );
        assert_eq!(control.kicked_streams.lock().unwrap().len(), 1);
        assert!(bans.check(&StreamKey::new("live", "cam").unwrap()).is_some());
        let health = request(addr, "GET", "/healthz", None, None);
        assert_eq!(health.status, 503);
        assert!(health.body.contains("bans not saved"), "{}", health.body);
        let metrics = metrics::parse_for_test(&request(addr, "GET", "/metrics", None, None).body).unwrap();
        let value = |name: &str| metrics.iter().find(|(n, _, _)| n == name).map(|(_, _, v)| *v);
        assert_eq!(value("popline_bans_unsaved"), Some(1.0));
        // One failed write, or more if the retry ran meanwhile.
        assert!(value("popline_bans_save_failures_total").unwrap() >= 1.0);
    }

    #[test]
    fn kick_client_answers_204_or_404() {
        let fixture = start(Some(TOKEN), false, DEADLINE);
        let addr = fixture.server.local_addr();
        assert_eq!(
            request(addr, "DELETE", "/api/v1/clients/7", Some(TOKEN), None).status,
            204
        );
        let missing = request(addr, "DELETE", "/api/v1/clients/8", Some(TOKEN), None);
        assert_eq!(missing.status, 404);
        assert_eq!(missing.json()["error"], "no client 8");
        assert_eq!(
            request(addr, "DELETE", "/api/v1/clients/x", Some(TOKEN), None).status,
            400
        );
        assert_eq!(
            *fixture.control.kicked_clients.lock().unwrap(),
            vec![ClientId(7), ClientId(8)]
        );
    }

    #[test]
    fn metrics_page_parses() {
        let fixture = start(Some(TOKEN), false, DEADLINE);
        let addr = fixture.server.local_addr();
        let answer = request(addr, "GET", "/metrics", Some(TOKEN), None);
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-type"), Some(metrics::CONTENT_TYPE));
        let samples = metrics::parse_for_test(&answer.body).unwrap();
        assert!(samples
            .iter()
            .any(|(name, labels, value)| name == "popline_stream_viewers"
                && labels == &[("stream".to_string(), "live/cam".to_string())]
                && *value == 1.0));
        assert!(samples
            .iter()
            .any(|(name, _, value)| name == "popline_uptime_seconds" && *value == 60.0));
        for line in answer.body.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.starts_with("popline_"), "{line}");
        }
    }

    #[test]
    fn slow_node_is_503() {
        let fixture = start(None, false, Duration::from_millis(100));
        fixture.control.stall.store(true, Ordering::SeqCst);
        let answer = request(fixture.server.local_addr(), "GET", "/api/v1/stats", None, None);
        assert_eq!(answer.status, 503);
        assert!(answer.json()["error"].as_str().unwrap().contains("within 100 ms"));
        // Shutdown does not wait for the stuck call.
        fixture.server.shutdown();
    }

    #[test]
    fn bind_error_is_reported_at_spawn() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = AdminConfig {
            listen: taken.local_addr().unwrap(),
            enabled: true,
            token: None,
        };
        let bans = Arc::new(BanStore::open(None).unwrap());
        let error = AdminServer::spawn(&config, Arc::new(FakeControl::default()), bans).unwrap_err();
        assert!(matches!(error, AdminError::Bind { .. }), "{error}");
        let empty_token = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            enabled: true,
            token: Some(String::new()),
        };
        let bans = Arc::new(BanStore::open(None).unwrap());
        let error = AdminServer::spawn(&empty_token, Arc::new(FakeControl::default()), bans).unwrap_err();
        assert!(matches!(error, AdminError::Token(TokenError::Empty)));
    }
}
