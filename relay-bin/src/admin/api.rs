//! The admin API's routes and handlers (axum).
//!
//! Every call into the node ([`NodeControl`]) and every ban-file write runs on the blocking pool under a
//! deadline, so a slow core or disk answers 503 instead of stalling the API's two worker threads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::auth_token::{require_token, BearerToken};
use super::error::ApiError;
use super::metrics;
use crate::bans::{unix_now_ms, BanStore, BanView};
use crate::control::{ClientId, ClientInfo, NodeControl, NodeStats, StreamInfo};
use crate::snapshot::recorded::{self, RecordingInfo};
use crate::snapshot::{Snapshot, SnapshotError, SnapshotService};
use crate::stream_key::StreamKey;

/// Most bytes of a request body; a bigger one is answered 413.
pub const MAX_BODY_BYTES: usize = 4 << 10;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The running node.
    pub control: Arc<dyn NodeControl>,
    /// The ban table.
    pub bans: Arc<BanStore>,
    /// The bearer token every route but `/healthz` needs, if one is configured.
    pub token: Option<Arc<BearerToken>>,
    /// How long a call into the node (or a ban-file write) may take before the API answers 503.
    pub deadline: Duration,
    /// Snapshots, when on.
    pub snapshots: Option<Arc<SnapshotService>>,
    /// The recording folder (recordings' snapshots), when recording is on.
    pub recordings: Option<PathBuf>,
    /// The transcoder, when some app has renditions.
    pub transcoder: Option<Arc<crate::transcode::Transcoder>>,
    /// The apps' ladders: a forbid of a source forbids its renditions too.
    pub ladders: Arc<crate::transcode::ladder::Ladders>,
    /// The node's HTTP egress address (the console's player), when egress is on.
    pub egress: Option<SocketAddr>,
    /// Recording scans at once (a recording's snapshot reads its file on the blocking pool, which the rest
    /// of the API needs too).
    pub recording_scans: Arc<tokio::sync::Semaphore>,
}

/// Recordings read for snapshots at once; more are answered 503.
pub const MAX_RECORDING_SCANS: usize = 2;

/// The body of `POST /api/v1/streams/{app}/{stream}/forbid`: how long is required, either `duration_s` or
/// `"permanent": true` (an empty body is refused: a ban until lifted must be asked for by name).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForbidRequest {
    /// Seconds the ban lasts.
    duration_s: Option<u64>,
    /// `true`: the ban lasts until it is lifted (`DELETE .../forbid`).
    permanent: Option<bool>,
    /// Why (kept with the ban, cut to 1 KiB).
    reason: Option<String>,
}

/// The answer to a forbid: the ban in force, how many clients were closed, and whether the ban is on disk.
#[derive(Debug, Serialize)]
struct ForbidResponse {
    ban: BanView,
    kicked: u64,
    /// `false`: the ban applies (in memory) but the ban file could not be written; the node retries, and
    /// `/healthz` and `popline_bans_unsaved` say so until it succeeds.
    saved: bool,
    /// Why the ban is not saved, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    save_error: Option<String>,
}

/// The answer to an unforbid: the lifted ban, and whether the ban file says so yet.
#[derive(Debug, Serialize)]
struct LiftResponse {
    #[serde(flatten)]
    ban: BanView,
    saved: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    save_error: Option<String>,
}

/// The whole API: `/api/v1/...` and `/metrics` behind the token, `/healthz` open.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/api/v1/streams", get(list_streams))
        .route("/api/v1/clients", get(list_clients))
        .route("/api/v1/clients/{id}", delete(kick_client))
        .route("/api/v1/stats", get(stats))
        .route(
            "/api/v1/streams/{app}/{stream}/forbid",
            post(forbid).delete(unforbid),
        )
        .route(
            "/api/v1/streams/{app}/{stream}/record",
            post(record_start).delete(record_stop),
        )
        .route("/api/v1/streams/{app}/{stream}/snapshot.jpg", get(live_snapshot))
        .route("/api/v1/recordings", get(list_recordings))
        .route(
            "/api/v1/streams/{app}/{stream}/transcode",
            post(transcode_start).delete(transcode_stop),
        )
        .route("/api/v1/transcodes", get(list_transcodes))
        .route("/api/v1/console", get(super::console::info))
        .route("/api/v1/recordings/{name}/snapshot.jpg", get(recording_snapshot))
        .route("/api/v1/bans", get(list_bans))
        .route("/api/v1/links", get(list_links))
        .route("/metrics", get(metrics_page))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.token.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/console", get(super::console::index))
        .route("/console/", get(super::console::index))
        .route("/console/console.js", get(super::console::script))
        .route("/console/console.css", get(super::console::style))
        .route("/console/hls.light.min.js", get(super::console::hls_js))
        .merge(protected)
        .with_state(state)
}

/// Runs `work` on the blocking pool; 503 if it takes longer than `deadline`.
async fn blocking<T: Send + 'static>(
    deadline: Duration,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(join)) => Err(ApiError::internal(format!("{what} failed: {join}"))),
        Err(_) => Err(ApiError::unavailable(format!(
            "{what} did not finish within {} ms",
            deadline.as_millis()
        ))),
    }
}

fn stream_key(path: Result<Path<(String, String)>, PathRejection>) -> Result<StreamKey, ApiError> {
    let Path((app, stream)) = path.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    StreamKey::new(&app, &stream)
        .map_err(|e| ApiError::bad_request(format!("bad stream name {app}/{stream}: {e}")))
}

/// The answer to `GET /api/v1/links`.
#[derive(Debug, Serialize)]
struct LinksResponse {
    /// Whether this node is part of a mesh (`[mesh] id` set).
    mesh: bool,
    /// One entry per configured peer.
    links: Vec<crate::node::mesh_port::LinkInfo>,
}

async fn list_links(State(state): State<ApiState>) -> Result<Json<LinksResponse>, ApiError> {
    let control = Arc::clone(&state.control);
    let links = blocking(state.deadline, "listing the mesh links", move || control.links()).await?;
    Ok(Json(LinksResponse {
        mesh: links.is_some(),
        links: links.unwrap_or_default(),
    }))
}

/// The answer to `POST` / `DELETE /api/v1/streams/{app}/{stream}/record`.
#[derive(Debug, Serialize)]
struct RecordResponse {
    stream: StreamKey,
    /// Recording is on (it starts at once when `live`, else when the stream starts).
    recording: bool,
    /// The stream is live on this node now.
    live: bool,
}

async fn record_start(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<RecordResponse>, ApiError> {
    record(state, peer, path, true).await
}

async fn record_stop(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<RecordResponse>, ApiError> {
    record(state, peer, path, false).await
}

async fn record(
    state: ApiState,
    peer: SocketAddr,
    path: Result<Path<(String, String)>, PathRejection>,
    on: bool,
) -> Result<Json<RecordResponse>, ApiError> {
    let key = stream_key(path)?;
    let control = Arc::clone(&state.control);
    let asked = key.clone();
    let live = blocking(state.deadline, "asking the stream's core", move || {
        control.record(&asked, on)
    })
    .await?
    .map_err(ApiError::unavailable)?;
    info!(%peer, stream = %key, on, live, "admin: recording {}", if on { "on" } else { "off" });
    Ok(Json(RecordResponse {
        stream: key,
        recording: on,
        live,
    }))
}

async fn list_streams(State(state): State<ApiState>) -> Result<Json<Vec<StreamInfo>>, ApiError> {
    let control = Arc::clone(&state.control);
    let mut streams = blocking(state.deadline, "listing streams", move || control.streams()).await?;
    streams.sort_by(|a, b| a.stream.cmp(&b.stream));
    Ok(Json(streams))
}

async fn list_clients(State(state): State<ApiState>) -> Result<Json<Vec<ClientInfo>>, ApiError> {
    let control = Arc::clone(&state.control);
    let mut clients = blocking(state.deadline, "listing clients", move || control.clients()).await?;
    clients.sort_by_key(|client| client.id);
    Ok(Json(clients))
}

/// The answer to `GET /api/v1/stats`: the node's counters and, when on, the snapshot service's.
#[derive(Debug, Serialize)]
struct StatsResponse {
    #[serde(flatten)]
    node: NodeStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshots: Option<crate::snapshot::service::SnapshotStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transcode: Option<crate::transcode::TranscodeStats>,
}

async fn stats(State(state): State<ApiState>) -> Result<Json<StatsResponse>, ApiError> {
    let control = Arc::clone(&state.control);
    let node = blocking(state.deadline, "reading stats", move || control.stats()).await?;
    Ok(Json(StatsResponse {
        node,
        snapshots: state.snapshots.as_ref().map(|s| s.stats()),
        transcode: state.transcoder.as_ref().map(|t| t.stats()),
    }))
}

/// The answer to `POST` / `DELETE /api/v1/streams/{app}/{stream}/transcode`.
#[derive(Debug, Serialize)]
struct TranscodeResponse {
    stream: StreamKey,
    /// Transcoding is on (a worker starts within a second while the stream is live).
    transcode: bool,
    /// The renditions' stream names.
    renditions: Vec<String>,
}

async fn transcode_start(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<TranscodeResponse>, ApiError> {
    transcode(state, peer, path, true).await
}

async fn transcode_stop(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<TranscodeResponse>, ApiError> {
    transcode(state, peer, path, false).await
}

async fn transcode(
    state: ApiState,
    peer: SocketAddr,
    path: Result<Path<(String, String)>, PathRejection>,
    on: bool,
) -> Result<Json<TranscodeResponse>, ApiError> {
    let key = stream_key(path)?;
    let Some(transcoder) = state.transcoder.clone() else {
        return Err(ApiError::unavailable(
            "transcoding is off on this node: no app has renditions = [...] (or transcode.enabled = false)",
        ));
    };
    let asked = key.clone();
    blocking(state.deadline, "asking the transcoder", move || {
        transcoder.request(&asked, on)
    })
    .await?
    .map_err(|why| {
        warn!(%peer, stream = %key, on, %why, "admin: transcode refused");
        ApiError::unavailable(why)
    })?;
    info!(%peer, stream = %key, on, "admin: transcode {}", if on { "on" } else { "off" });
    let renditions = state
        .ladders
        .rendition_keys(&key)
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(Json(TranscodeResponse {
        stream: key,
        transcode: on,
        renditions,
    }))
}

/// `GET /api/v1/transcodes`: every transcode worker: source, renditions, state, pid, CPU, restarts, lag.
async fn list_transcodes(State(state): State<ApiState>) -> Json<Vec<crate::transcode::TranscodeInfo>> {
    Json(
        state
            .transcoder
            .as_ref()
            .map(|t| t.stats().transcodes)
            .unwrap_or_default(),
    )
}

/// The query of a snapshot request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotQuery {
    /// Scale to this width (aspect kept; never above the picture's own).
    width: Option<u32>,
    /// A recording's snapshot: seconds of media from the file's start.
    t: Option<f64>,
}

fn snapshot_query(
    query: Result<Query<SnapshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<SnapshotQuery, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{} (want ?width=PIXELS, and ?t=SECONDS for a recording)",
            rejection.body_text()
        ))
    })?;
    if let Some(width) = query.width {
        if !(crate::snapshot::picture::MIN_WIDTH..=7_680).contains(&width) {
            return Err(ApiError::bad_request(format!(
                "width = {width} (allowed {}..=7680)",
                crate::snapshot::picture::MIN_WIDTH
            )));
        }
    }
    if let Some(t) = query.t {
        if !t.is_finite() || !(0.0..=1e9).contains(&t) {
            return Err(ApiError::bad_request(format!(
                "t = {t} (want seconds from the recording's start, 0 or more)"
            )));
        }
    }
    Ok(query)
}

fn snapshot_error(service: &SnapshotService, error: SnapshotError) -> ApiError {
    service.count_error();
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiError::new(status, error.to_string())
}

fn snapshot_service(state: &ApiState) -> Result<Arc<SnapshotService>, ApiError> {
    state
        .snapshots
        .clone()
        .ok_or_else(|| ApiError::unavailable("snapshots are off on this node (snapshots.enabled = false)"))
}

/// The JPEG answer: never cached by the client (the next keyframe makes a new picture), with the keyframe's
/// timestamps and whether the node's cache served it.
fn jpeg_response(snapshot: Snapshot) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg".to_string()),
            (header::CACHE_CONTROL, "no-cache".to_string()),
            (
                header::HeaderName::from_static("x-popline-keyframe-dts-ms"),
                snapshot.dts_ms.to_string(),
            ),
            (
                header::HeaderName::from_static("x-popline-keyframe-pts-ms"),
                snapshot.pts_ms.to_string(),
            ),
            (
                header::HeaderName::from_static("x-popline-snapshot-cache"),
                if snapshot.cached { "hit" } else { "miss" }.to_string(),
            ),
        ],
        snapshot.jpeg.bytes,
    )
        .into_response()
}

/// `GET /api/v1/streams/{app}/{stream}/snapshot.jpg[?width=N]`: the stream's latest keyframe as a JPEG.
async fn live_snapshot(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<SnapshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let key = stream_key(path)?;
    let query = snapshot_query(query)?;
    let service = snapshot_service(&state)?;
    let control = Arc::clone(&state.control);
    let asked = key.clone();
    let keyframe = blocking(state.deadline, "asking the stream's core", move || {
        control.keyframe(&asked)
    })
    .await?
    .map_err(|e| snapshot_error(&service, e))?;
    let snapshot = service
        .live(&key, keyframe, query.width)
        .await
        .map_err(|e| snapshot_error(&service, e))?;
    Ok(jpeg_response(snapshot))
}

/// `GET /api/v1/recordings`: the recordings on this node's disk, newest first.
async fn list_recordings(State(state): State<ApiState>) -> Result<Json<Vec<RecordingInfo>>, ApiError> {
    let Some(root) = state.recordings.clone() else {
        return Ok(Json(Vec::new()));
    };
    blocking(state.deadline, "listing recordings", move || {
        recorded::list(&root)
    })
    .await?
    .map(Json)
    .map_err(|e| ApiError::internal(format!("cannot list the recording folder: {e}")))
}

/// `GET /api/v1/recordings/{name}/snapshot.jpg?t=SECONDS[&width=N]`: the recording's keyframe at or
/// before `t` as a JPEG (`name` as the listing gives it, each `/` written `%2F`).
async fn recording_snapshot(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SnapshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let query = snapshot_query(query)?;
    let service = snapshot_service(&state)?;
    let Some(root) = state.recordings.clone() else {
        return Err(ApiError::not_found(
            "recording is off on this node: no recordings",
        ));
    };
    let at_ms = (query.t.unwrap_or(0.0) * 1000.0) as u64;
    let Ok(scan) = Arc::clone(&state.recording_scans).try_acquire_owned() else {
        return Err(snapshot_error(
            &service,
            SnapshotError::Busy(format!(
                "{MAX_RECORDING_SCANS} recordings are being read for snapshots already; try again"
            )),
        ));
    };
    let keyframe = blocking(state.deadline, "reading the recording", move || {
        // Held until the scan ends, even one that outlives the API's deadline.
        let _scan = scan;
        recorded::resolve(&root, &name).and_then(|path| recorded::keyframe_at(&path, at_ms))
    })
    .await?
    .map_err(|e| snapshot_error(&service, e))?;
    let snapshot = service
        .uncached(&keyframe, query.width)
        .await
        .map_err(|e| snapshot_error(&service, e))?;
    Ok(jpeg_response(snapshot))
}

async fn kick_client(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(raw) = path.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let id = raw
        .parse::<u64>()
        .map(ClientId)
        .map_err(|_| ApiError::bad_request(format!("bad client id {raw:?}: want a decimal integer")))?;
    let control = Arc::clone(&state.control);
    let result = blocking(state.deadline, "kicking the client", move || {
        control.kick_client(id)
    })
    .await;
    match result {
        Ok(true) => {
            info!(%peer, client = id.0, "admin: client kicked");
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => {
            info!(%peer, client = id.0, "admin: kick of an unknown client");
            Err(ApiError::not_found(format!("no client {}", id.0)))
        }
        Err(error) => {
            warn!(%peer, client = id.0, %error, "admin: kick failed");
            Err(error)
        }
    }
}

async fn forbid(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ForbidResponse>, ApiError> {
    let key = stream_key(path)?;
    let body = body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    const WANT: &str =
        r#"want {"duration_s": seconds} or {"permanent": true}, and optionally "reason": text"#;
    let request: ForbidRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ForbidRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("bad forbid body: {e} ({WANT})")))?
    };
    let duration = match (request.duration_s, request.permanent.unwrap_or(false)) {
        (Some(0), _) => {
            return Err(ApiError::bad_request(
                "duration_s must be at least 1 (or ask for {\"permanent\": true})",
            ))
        }
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "give duration_s or \"permanent\": true, not both",
            ))
        }
        (Some(seconds), false) => Some(Duration::from_secs(seconds)),
        (None, true) => None,
        (None, false) => {
            return Err(ApiError::bad_request(format!(
                "how long? a ban needs a duration: {WANT}"
            )))
        }
    };
    let reason = request.reason.unwrap_or_default();

    // The ban applies at once, before anyone is kicked (a client that reconnects at once is refused), even if
    // the ban file cannot be written: the write is retried, and reported until it succeeds.
    let bans = Arc::clone(&state.bans);
    let ban_key = key.clone();
    let saved = match blocking(state.deadline, "writing the ban", move || {
        bans.forbid(ban_key, duration, reason)
    })
    .await
    {
        Ok(Ok(saved)) => saved,
        Ok(Err(error)) => {
            warn!(%peer, stream = %key, %error, "admin: forbid refused");
            return Err(ApiError::bad_request(format!("ban of {key} refused: {error}")));
        }
        Err(error) => {
            warn!(%peer, stream = %key, %error, "admin: forbid timed out");
            return Err(ApiError::new(
                error.status,
                format!("{}; the ban of {key} may still take effect", error.message),
            ));
        }
    };
    let ban = saved.value;
    let save_error = saved.unsaved.map(|error| error.to_string());
    // Every node of the mesh gets the ban on its links' control stream (at once, before the kick here).
    let control = Arc::clone(&state.control);
    let (mesh_key, until, mesh_reason) = (key.clone(), ban.until_unix_ms, ban.reason.clone());
    let _ = blocking(state.deadline, "sending the ban to the mesh", move || {
        control.forbid_everywhere(&mesh_key, until, &mesh_reason)
    })
    .await;
    if let Some(save_error) = &save_error {
        error!(%peer, stream = %key, ban = ban.id, error = %save_error,
            "admin: stream forbidden, but the ban file cannot be written: the ban applies now and is lost on restart \
             until a retry succeeds (every {} s)", crate::bans::RETRY_INTERVAL.as_secs());
    }
    // A source's renditions are forbidden with it (same end, the source's reason), everywhere.
    let renditions = state.ladders.rendition_keys(&key);
    if !renditions.is_empty() {
        let (bans, control) = (Arc::clone(&state.bans), Arc::clone(&state.control));
        let (until, why) = (ban.until_unix_ms, format!("rendition of {key}: {}", ban.reason));
        let source = key.clone();
        let _ = blocking(state.deadline, "forbidding the renditions", move || {
            for rendition in renditions {
                let left = until.map(|u| Duration::from_millis(u.saturating_sub(unix_now_ms())));
                if let Err(error) = bans.forbid(rendition.clone(), left, why.clone()) {
                    warn!(stream = %rendition, %source, %error, "admin: the rendition's ban was refused");
                }
                control.forbid_everywhere(&rendition, until, &why);
                control.kick_stream(&rendition);
            }
        })
        .await;
    }
    let control = Arc::clone(&state.control);
    let kick_key = key.clone();
    match blocking(state.deadline, "kicking the stream's clients", move || {
        control.kick_stream(&kick_key)
    })
    .await
    {
        Ok(kicked) => {
            let view = ban.view_at(unix_now_ms());
            let remaining_s = view
                .remaining_s
                .map_or_else(|| "none (permanent)".to_string(), |s| s.to_string());
            info!(%peer, stream = %key, ban = ban.id, until = %ban.until_text(), remaining_s = %remaining_s,
                reason = %ban.reason, kicked, saved = save_error.is_none(), "admin: stream forbidden");
            Ok(Json(ForbidResponse {
                ban: view,
                kicked,
                saved: save_error.is_none(),
                save_error,
            }))
        }
        Err(error) => {
            warn!(%peer, stream = %key, ban = ban.id, %error, "admin: stream forbidden but the kick did not finish");
            Err(ApiError::new(
                error.status,
                format!(
                    "ban {} of {key} is in force and refuses new requests, but {}",
                    ban.id, error.message
                ),
            ))
        }
    }
}

async fn unforbid(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<LiftResponse>, ApiError> {
    let key = stream_key(path)?;
    let bans = Arc::clone(&state.bans);
    let lift_key = key.clone();
    let result = blocking(state.deadline, "writing the ban file", move || {
        bans.unforbid(&lift_key)
    })
    .await;
    match result {
        Ok(Ok(saved)) => match saved.value {
            Some(ban) => {
                let save_error = saved.unsaved.map(|error| error.to_string());
                // The source's renditions were forbidden with it: lifted with it.
                let (bans, control) = (Arc::clone(&state.bans), Arc::clone(&state.control));
                let renditions = state.ladders.rendition_keys(&key);
                let _ = blocking(state.deadline, "lifting the renditions' bans", move || {
                    for rendition in renditions {
                        if let Ok(lifted) = bans.unforbid(&rendition) {
                            if lifted.value.is_some() {
                                control.unforbid_everywhere(&rendition);
                            }
                        }
                    }
                })
                .await;
                let control = Arc::clone(&state.control);
                let mesh_key = key.clone();
                let _ = blocking(state.deadline, "sending the lift to the mesh", move || {
                    control.unforbid_everywhere(&mesh_key)
                })
                .await;
                match &save_error {
                    None => info!(%peer, stream = %key, ban = ban.id, "admin: ban lifted"),
                    Some(save_error) => error!(%peer, stream = %key, ban = ban.id, error = %save_error,
                        "admin: ban lifted, but the ban file cannot be written (retried; until then a restart \
                         would bring the ban back)"),
                }
                Ok(Json(LiftResponse {
                    ban: ban.view_at(unix_now_ms()),
                    saved: save_error.is_none(),
                    save_error,
                }))
            }
            None => {
                info!(%peer, stream = %key, "admin: unforbid of a stream without a ban");
                Err(ApiError::not_found(format!("stream {key} has no active ban")))
            }
        },
        Ok(Err(error)) => {
            warn!(%peer, stream = %key, %error, "admin: unforbid failed");
            Err(ApiError::internal(format!("ban of {key} not lifted: {error}")))
        }
        Err(error) => {
            warn!(%peer, stream = %key, %error, "admin: unforbid timed out");
            Err(error)
        }
    }
}

async fn list_bans(State(state): State<ApiState>) -> Json<Vec<BanView>> {
    let now = unix_now_ms();
    Json(state.bans.list().iter().map(|ban| ban.view_at(now)).collect())
}

async fn metrics_page(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let control = Arc::clone(&state.control);
    let (stats, streams, links) = blocking(state.deadline, "reading metrics", move || {
        (control.stats(), control.streams(), control.links())
    })
    .await?;
    let text = metrics::render(
        stats,
        streams,
        links.unwrap_or_default(),
        state.bans.active_count(),
        &state.bans.save_status(),
        state.snapshots.as_ref().map(|s| s.stats()),
        state.transcoder.as_ref().map(|t| t.stats()),
    )
    .map_err(|_| ApiError::internal("cannot encode the metrics page"))?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

/// `GET /healthz`: `200 ok`, or `503` with the reason when the node cannot do its job in full: `unhealthy`
/// once a core has died; `degraded` while the ban file lags behind the bans in force (they apply, but a
/// restart would lose them).
async fn healthz(State(state): State<ApiState>) -> Response {
    if let Err(why) = state.control.health() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}\n")).into_response();
    }
    let status = state.bans.save_status();
    match status.unsaved_since_unix_ms {
        None => "ok".into_response(),
        Some(since) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "degraded: bans not saved to {} since {}: {} (they apply; retried every {} s)\n",
                state
                    .bans
                    .path()
                    .map_or_else(|| "-".to_string(), |p| p.display().to_string()),
                crate::bans::rfc3339_ms(since),
                status.last_error.unwrap_or_default(),
                crate::bans::RETRY_INTERVAL.as_secs()
            ),
        )
            .into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
