//! The node's configuration: one serde tree, every field defaulted, mirrored by the TOML file
//! (`popline --config pop.toml`). `popline` with no file serves RTMP on 127.0.0.1:1935, HTTP-FLV and HLS
//! on 127.0.0.1:8080 and the admin API on 127.0.0.1:1985.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// RTMP listener and protocol limits.
    pub rtmp: RtmpConfig,
    /// The admin HTTP API (`[admin]`; `[http]`, its name before egress came, is still read).
    #[serde(alias = "http")]
    pub admin: AdminConfig,
    /// Media egress over HTTP on the cores: HTTP-FLV (`GET /APP/STREAM.flv`) and HLS.
    pub egress: EgressConfig,
    /// Data-plane threads.
    pub engine: EngineConfig,
    /// Fan-out defaults, for every app without its own entry in `apps`.
    pub fanout: FanoutConfig,
    /// Per-app fan-out overrides, keyed by app name (`[apps.live]`).
    pub apps: BTreeMap<String, FanoutConfig>,
    /// Stream bans (forbid).
    pub bans: BansConfig,
    /// Publish authorisation.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// The PoP mesh: this node's id, key and UDP address, its peers, and where each app's streams live
    /// (off while `mesh.id` is empty).
    pub mesh: crate::mesh::config::MeshConfig,
    /// Static relays: pushes to other RTMP servers, pulls from RTMP origins.
    pub relays: crate::relays::config::RelaysConfig,
    /// Recording (DVR): where and how streams are written.
    pub recording: RecordingConfig,
    /// Snapshots: JPEGs of live streams' latest keyframes and of recordings (admin API), and the periodic
    /// job of apps with `snapshot_interval_s`.
    pub snapshots: SnapshotsConfig,
    /// Transcoding into the apps' ABR ladders (`renditions`): supervised ffmpeg workers.
    pub transcode: TranscodeConfig,
}

/// Transcoding (`[apps.NAME] renditions = [...]`, `transcode = true` or `POST .../transcode`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodeConfig {
    /// Run transcodes at all.
    pub enabled: bool,
    /// The ffmpeg program (with libx264).
    pub ffmpeg: PathBuf,
    /// Workers (one ffmpeg per transcoded stream, making all its renditions) at once; more are refused.
    pub max_workers: usize,
    /// x264's preset (`ultrafast` .. `veryslow`): CPU per stream against quality per bit.
    pub preset: String,
    /// Audio bitrate of every rendition (AAC-LC), kbit/s.
    pub audio_kbps: u32,
    /// First pause before a worker that ended is started again; it doubles while the worker keeps failing.
    pub restart_backoff_ms: u64,
    /// Longest pause before a restart.
    pub restart_backoff_max_ms: u64,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        TranscodeConfig {
            enabled: true,
            ffmpeg: PathBuf::from("ffmpeg"),
            max_workers: 2,
            preset: "veryfast".to_string(),
            audio_kbps: 96,
            restart_backoff_ms: 1_000,
            restart_backoff_max_ms: 30_000,
        }
    }
}

/// Snapshots (`GET /api/v1/streams/APP/STREAM/snapshot.jpg`, `GET /api/v1/recordings/NAME/snapshot.jpg`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotsConfig {
    /// Serve snapshots (and run the periodic job).
    pub enabled: bool,
    /// `openh264`: OpenH264 in long-lived `popline snapshot-worker` children (about 35 ms for a 720p
    /// keyframe); `ffmpeg`: one `ffmpeg` process per snapshot (about 110 ms, most of it starting ffmpeg).
    pub decoder: crate::snapshot::decoders::DecoderKind,
    /// The ffmpeg program (decoder `ffmpeg`).
    pub ffmpeg: PathBuf,
    /// Decoders at once (worker processes).
    pub workers: usize,
    /// Requests that may wait for a decoder; more are answered 503.
    pub queue: usize,
    /// Longest a snapshot may wait and decode before a 503 (a worker that hangs is killed).
    pub timeout_ms: u64,
    /// JPEG quality, 1..=100.
    pub quality: u8,
    /// Pictures cached (one per stream and width, until the stream's next keyframe).
    pub cache_entries: usize,
    /// The periodic job's folder (`APP/STREAM/STREAM-<UTC>.jpg`); relative: under `$STATE_DIRECTORY` when
    /// set, else the working directory.
    pub path: PathBuf,
    /// Files the periodic job keeps per stream (the oldest are deleted).
    pub keep: usize,
    /// Width the periodic job scales to (0: the picture's own).
    pub width: u32,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        SnapshotsConfig {
            enabled: true,
            decoder: crate::snapshot::decoders::DecoderKind::Openh264,
            ffmpeg: PathBuf::from("ffmpeg"),
            workers: 2,
            queue: 64,
            timeout_ms: 2_000,
            quality: 80,
            cache_entries: 1_024,
            path: PathBuf::from("snapshots"),
            keep: 1_000,
            width: 0,
        }
    }
}

/// Recording (DVR). Which streams: `record = true` in an app's table, or
/// `POST /api/v1/streams/APP/STREAM/record`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// The folder recordings go under (`APP/STREAM/STREAM-<UTC start>.flv`); relative: under
    /// `$STATE_DIRECTORY` when set, else the working directory.
    pub path: PathBuf,
    /// A file ends at the first keyframe at or past this many seconds of media.
    pub roll_s: u64,
    /// A file ends at the first keyframe at or past this many bytes.
    pub roll_bytes: u64,
    /// Frames waiting for the recording thread (a full queue loses frames; video resumes at a keyframe).
    pub queue_frames: usize,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            path: PathBuf::from("recordings"),
            roll_s: 600,
            roll_bytes: 1 << 30,
            queue_frames: 8_192,
        }
    }
}

/// RTMP listener and protocol limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    /// Address the RTMP listener binds (one SO_REUSEPORT socket per core): `IP:PORT`, `[IPv6]:PORT` or
    /// `HOST:PORT` (resolved at start, e.g. `localhost:1935`). The node refuses to start when another process
    /// listens on the port.
    #[serde(deserialize_with = "crate::startup::deserialize_listen_addr")]
    pub listen: SocketAddr,
    /// Outbound RTMP chunk size in bytes (sent to every client with SetChunkSize).
    pub chunk_size: u32,
    /// Largest audio/video message a publisher may send, in bytes (a bigger one ends its session).
    pub max_message_bytes: usize,
    /// Largest command or data (AMF) message a client may send, in bytes.
    pub max_command_bytes: usize,
    /// Milliseconds a client has to finish the handshake and start publishing or playing.
    pub handshake_timeout_ms: u64,
    /// Milliseconds without a byte from a publisher (or an idle connection) before it is closed.
    pub idle_timeout_ms: u64,
    /// Most client connections per core; more are accepted and closed at once (counted).
    pub max_connections_per_core: usize,
    /// Milliseconds viewers wait for a publisher to come back before they are closed.
    pub unpublish_grace_ms: u64,
    /// Viewers' writes are gathered for up to this many milliseconds, so the frames of that interval leave
    /// in one `writev` (fewer syscalls and TCP segments per viewer: the kernel's per-write cost dominates
    /// fan-out); a frame after a quiet interval leaves at once. It adds at most this much latency to viewers
    /// (SRS's "merged write" does the same, 350 ms by default). A core's viewers are written on 8 phases of
    /// the interval, not all at once, so the core's writes do not come in one burst. 0 writes every frame as
    /// soon as it arrives.
    pub write_coalesce_ms: u64,
    /// Most bytes of protocol answers (acknowledgements, ping responses, command results) queued for a client
    /// that does not read them; a client past it is closed (counted in `limit_hits.control_queue`).
    pub max_control_queue_bytes: usize,
    /// Smallest `WindowAcknowledgementSize` a client may set, in bytes (a tiny window makes the node queue an
    /// acknowledgement per read); a smaller one ends the session (counted in `limit_hits.window_ack`).
    pub min_window_ack_bytes: u32,
    /// Milliseconds a player of a stream nobody publishes waits for a publisher; then it is told
    /// `NetStream.Play.StreamNotFound`, logged, and closed (counted in `limit_hits.play_wait`). 0 answers
    /// at the next housekeeping tick (50 ms).
    pub play_wait_ms: u64,
    /// Milliseconds a client's writes may make no progress (it stopped reading, its bytes stay queued) before
    /// it is closed (counted in `limit_hits.write_stall`); 0 never closes it for that.
    pub write_stall_timeout_ms: u64,
    /// Seconds an accepted connection may be idle before TCP keepalive probes it (6 probes, a tenth of this
    /// apart, at least 1 s), so a peer gone without a word is noticed; 0 turns keepalive off.
    pub tcp_keepalive_s: u64,
    /// TCP_USER_TIMEOUT of accepted connections, in ms: the kernel drops a connection whose sent data stays
    /// unacknowledged this long (instead of retrying for about 15 minutes); 0 keeps the kernel's default.
    pub tcp_user_timeout_ms: u64,
    /// Most connections from one IP address on the whole node; more are accepted and closed at once (counted
    /// in `limit_hits.per_ip`). 0 = no cap.
    pub max_connections_per_ip: usize,
    /// File descriptors kept free for the node's own use (the bans file, `on_publish` calls, the admin API):
    /// clients are refused (counted in `limit_hits.fd_reserve`) once the open connections come within this
    /// many of the open file limit (RLIMIT_NOFILE, raised to its hard limit at start).
    pub fd_reserve: u64,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1935)),
            chunk_size: 4096,
            max_message_bytes: 8 << 20,
            max_command_bytes: 64 << 10,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_connections_per_core: 20_000,
            unpublish_grace_ms: 5_000,
            write_coalesce_ms: 100,
            max_control_queue_bytes: 64 << 10,
            min_window_ack_bytes: 4096,
            play_wait_ms: 30_000,
            write_stall_timeout_ms: 30_000,
            tcp_keepalive_s: 60,
            tcp_user_timeout_ms: 30_000,
            max_connections_per_ip: 4_096,
            fd_reserve: 256,
        }
    }
}

/// The admin HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address the admin API binds (written as `rtmp.listen`). An address other than loopback needs `token`.
    #[serde(deserialize_with = "crate::startup::deserialize_listen_addr")]
    pub listen: SocketAddr,
    /// Serve the admin API at all.
    pub enabled: bool,
    /// Bearer token required on every `/api/v1` request (and `/metrics`) when set.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1985)),
            enabled: true,
            token: None,
        }
    }
}

/// Media egress over HTTP, served by the data-plane cores (not the admin API's runtime): HTTP-FLV and HLS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// Address of the cores' HTTP listeners (one SO_REUSEPORT listener per core, as `rtmp.listen`).
    #[serde(deserialize_with = "crate::startup::deserialize_listen_addr")]
    pub listen: SocketAddr,
    /// Serve HTTP egress at all.
    pub enabled: bool,
    /// `Access-Control-Allow-Origin` of every answer (web players on other origins need it); empty: none.
    pub cors_allow_origin: String,
    /// Largest request head (request line and headers) a viewer may send; more is answered 431. Also the most
    /// a client may send ahead (pipelined) while its request waits for its answer.
    pub max_request_bytes: usize,
    /// A kept-alive connection (HTTP/1.1, or HTTP/1.0 with `Connection: keep-alive`) with no request for this
    /// many milliseconds after its last answer is closed; 0: no keep-alive (every answer closes).
    pub keepalive_idle_ms: u64,
    /// Most requests one connection may make; the answer to the last says `Connection: close`.
    pub keepalive_max_requests: u32,
    /// Serve HLS: `/APP/STREAM/index.m3u8`, fMP4 segments (and LL-HLS parts where the app asks for them).
    pub hls: bool,
    /// HLS segment target duration: a segment ends at the first keyframe at or past it.
    pub hls_target_ms: u64,
    /// LL-HLS part target duration (parts are at most this long).
    pub hls_part_ms: u64,
    /// Segments in an HLS playlist's window (older ones are dropped).
    pub hls_window: usize,
    /// A stream's HLS packaging on a core stops when no request for it came this long; a viewer session
    /// counts as gone after it too.
    pub hls_idle_ms: u64,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            enabled: true,
            cors_allow_origin: "*".to_string(),
            max_request_bytes: 8_192,
            keepalive_idle_ms: 15_000,
            keepalive_max_requests: 1_000,
            hls: true,
            hls_target_ms: 2_000,
            hls_part_ms: 500,
            hls_window: 6,
            hls_idle_ms: 30_000,
        }
    }
}

/// Data-plane threads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Data-plane cores (threads); 0 = one per CPU the process may run on.
    pub cores: usize,
    /// Pin each core's thread to one CPU.
    pub pin: bool,
    /// Capacity of each core's inbox of cross-core messages.
    pub inbox_capacity: usize,
    /// The cores' IO backend: `auto` (io_uring, or epoll where io_uring is refused, e.g. by Docker's
    /// seccomp profile), `uring` (fail to start without it) or `epoll`.
    pub backend: IoBackend,
    /// When a core's thread panics (its clients and streams are gone; `/healthz` fails at once), exit the
    /// process with status 70 so the service manager restarts the node; `false` keeps the rest running.
    pub exit_on_core_panic: bool,
    /// io_uring only: a core's wait, once its first completion is ready, goes on until this many are ready
    /// or `wake_batch_us` has passed since it began (wake-up coalescing, `engine::uring::WaitBatch`; Linux
    /// 6.12+). 1 turns it off.
    pub wake_batch: u32,
    /// The longest a core's wait goes on once a completion is ready, microseconds (0: off). What a frame
    /// may wait for more completions to share its wake-up.
    pub wake_batch_us: u64,
}

impl EngineConfig {
    /// The wake-up coalescing of a core's ring.
    pub fn wait_batch(&self) -> engine::uring::WaitBatch {
        engine::uring::WaitBatch {
            completions: self.wake_batch.max(1),
            max_delay: std::time::Duration::from_micros(self.wake_batch_us),
        }
    }
}

/// The cores' IO backend (`engine.backend`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum IoBackend {
    /// io_uring where the kernel allows it, else epoll (logged).
    #[default]
    Auto,
    /// io_uring only.
    Uring,
    /// epoll only.
    Epoll,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cores: 0,
            pin: true,
            inbox_capacity: 16_384,
            backend: IoBackend::Auto,
            exit_on_core_panic: true,
            wake_batch: engine::uring::WaitBatch::PACED.completions,
            wake_batch_us: engine::uring::WaitBatch::PACED.max_delay.as_micros() as u64,
        }
    }
}

/// How a viewer's queue behaves when the viewer cannot keep up.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Never drop: disconnect the viewer when its queue hits its bound.
    None,
    /// Drop frames older than the latency budget (whole GOP remainder once a reference frame goes).
    Latency,
    /// When behind, drop disposable then inter frames up to the next keyframe; audio last.
    Gop,
}

/// Fan-out behaviour of one app (or the default).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutConfig {
    /// What a slow viewer's queue does.
    pub drop_policy: DropPolicy,
    /// Most bytes queued for one viewer (its memory bound): each frame counts its RTMP bytes and 128 bytes of
    /// bookkeeping (`media::frame::FRAME_OVERHEAD_BYTES`), so tiny frames cannot pile up under it.
    pub viewer_queue_bytes: usize,
    /// Latency budget for policy `latency`, and the lag at which policy `gop` starts dropping, in ms.
    pub latency_budget_ms: u64,
    /// Most bytes of the current GOP kept for instant start (each frame counts its body and 128 bytes of
    /// bookkeeping).
    pub gop_cache_bytes: usize,
    /// Low-latency HLS for the app's streams: parts of `egress.hls_part_ms`, blocking playlist reload,
    /// preload hints (plain HLS when off).
    pub low_latency_hls: bool,
    /// Record the app's streams (see `[recording]`).
    pub record: bool,
    /// Save a snapshot of each of the app's live streams every this many seconds (see `[snapshots]`;
    /// 0: never).
    pub snapshot_interval_s: u64,
    /// The ABR ladder the app's streams are transcoded into, e.g. `["720p 2500k", "480p 1000k",
    /// "360p 600k"]`: renditions published as `STREAM_720p`, ... (see `[transcode]`).
    pub renditions: Vec<String>,
    /// Transcode every live stream of the app (else only those `POST .../transcode` asks for).
    pub transcode: bool,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            drop_policy: DropPolicy::Gop,
            viewer_queue_bytes: 4 << 20,
            latency_budget_ms: 3_000,
            gop_cache_bytes: 16 << 20,
            low_latency_hls: false,
            record: false,
            snapshot_interval_s: 0,
            renditions: Vec::new(),
            transcode: false,
        }
    }
}

/// `Ok` when `value` is in `range`, else the error naming `name`.
fn in_range(name: &str, value: u64, range: std::ops::RangeInclusive<u64>) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{name} = {value} (allowed {}..={})",
            range.start(),
            range.end()
        )))
    }
}

/// Stream bans.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BansConfig {
    /// File the bans persist to (written atomically, fsynced); none keeps them in memory only.
    pub path: Option<PathBuf>,
}

impl Default for BansConfig {
    fn default() -> Self {
        BansConfig {
            path: Some(PathBuf::from("popline-bans.json")),
        }
    }
}

/// Publish authorisation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Shared secret of publish tokens (`?expires=UNIX&token=HEX`); when set every publish needs a valid one.
    pub publish_secret: Option<String>,
    /// `http://` URL called (POST) before a publish is accepted; a non-2xx answer refuses the publish.
    pub on_publish: Option<String>,
    /// Milliseconds to wait for `on_publish` before refusing.
    pub on_publish_timeout_ms: Option<u64>,
    /// Most `on_publish` calls waiting or in flight; a publish beyond is refused at once (fail closed,
    /// counted in `limit_hits.hook_busy`).
    pub on_publish_max_pending: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            publish_secret: None,
            on_publish: None,
            on_publish_timeout_ms: None,
            on_publish_max_pending: 256,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter (`info`, `relay=debug`, ...); `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".to_string(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this tree.
    #[error("invalid config file {path}: {source}{hint}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        source: Box<toml::de::Error>,
        /// What to do instead, for mistakes worth a word (empty otherwise).
        hint: &'static str,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::read(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads `path` without [`Config::validate`] (for a caller that applies overrides, such as command-line
    /// flags, and validates the result).
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            hint: parse_hint(source.message()),
            source: Box::new(source),
        })?;
        Ok(config)
    }

    /// TCP keepalive and TCP_USER_TIMEOUT for accepted connections (`rtmp.tcp_keepalive_s`,
    /// `rtmp.tcp_user_timeout_ms`).
    pub fn liveness(&self) -> engine::Liveness {
        let rtmp = &self.rtmp;
        engine::Liveness {
            keepalive: (rtmp.tcp_keepalive_s > 0)
                .then(|| std::time::Duration::from_secs(rtmp.tcp_keepalive_s)),
            user_timeout: (rtmp.tcp_user_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(rtmp.tcp_user_timeout_ms)),
        }
    }

    /// Checks ranges the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rtmp = &self.rtmp;
        if !(128..=65_536).contains(&rtmp.chunk_size) {
            return Err(ConfigError::Invalid(format!(
                "rtmp.chunk_size = {} (allowed 128..=65536)",
                rtmp.chunk_size
            )));
        }
        if rtmp.max_message_bytes == 0 || rtmp.max_message_bytes > 0xFF_FFFF {
            return Err(ConfigError::Invalid(format!(
                "rtmp.max_message_bytes = {} (allowed 1..=16777215, the RTMP maximum)",
                rtmp.max_message_bytes
            )));
        }
        let admin = &self.admin;
        if admin.enabled && admin.token.is_none() && !admin.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "admin.listen = {} is reachable from other machines but admin.token is not set: anyone who \
                 reaches the port could kick clients and forbid streams. Set admin.token (or --admin-token), \
                 or listen on 127.0.0.1",
                admin.listen
            )));
        }
        let egress = &self.egress;
        in_range(
            "egress.max_request_bytes",
            egress.max_request_bytes as u64,
            1_024..=65_536,
        )?;
        in_range(
            "egress.keepalive_idle_ms",
            egress.keepalive_idle_ms,
            0..=3_600_000,
        )?;
        in_range(
            "egress.keepalive_max_requests",
            u64::from(egress.keepalive_max_requests),
            1..=1_000_000,
        )?;
        in_range("egress.hls_target_ms", egress.hls_target_ms, 1_000..=20_000)?;
        if !(100..=egress.hls_target_ms / 2).contains(&egress.hls_part_ms) {
            return Err(ConfigError::Invalid(format!(
                "egress.hls_part_ms = {} (allowed 100..=egress.hls_target_ms / 2 = {})",
                egress.hls_part_ms,
                egress.hls_target_ms / 2
            )));
        }
        in_range("egress.hls_window", egress.hls_window as u64, 3..=100)?;
        in_range("egress.hls_idle_ms", egress.hls_idle_ms, 1_000..=3_600_000)?;
        let recording = &self.recording;
        in_range("recording.roll_s", recording.roll_s, 1..=86_400)?;
        in_range("recording.roll_bytes", recording.roll_bytes, 1 << 20..=1 << 40)?;
        in_range(
            "recording.queue_frames",
            recording.queue_frames as u64,
            64..=1 << 20,
        )?;
        if egress.cors_allow_origin.bytes().any(|b| b.is_ascii_control()) {
            return Err(ConfigError::Invalid(
                "egress.cors_allow_origin holds a control character (it goes into a header line)".to_string(),
            ));
        }
        if egress.enabled && admin.enabled && egress.listen == admin.listen && egress.listen.port() != 0 {
            return Err(ConfigError::Invalid(format!(
                "egress.listen and admin.listen are both {}: the media port (viewers) and the admin API need \
                 ports of their own",
                egress.listen
            )));
        }
        if egress.enabled && egress.listen == self.rtmp.listen && egress.listen.port() != 0 {
            return Err(ConfigError::Invalid(format!(
                "egress.listen and rtmp.listen are both {}",
                egress.listen
            )));
        }
        // Durations become `Instant` arithmetic in the cores: an absurd one would overflow it (a panic, not a
        // start-up error). A day bounds every timeout; the coalescing interval is latency, 10 s at most.
        const DAY_MS: u64 = 86_400_000;
        in_range("rtmp.write_coalesce_ms", rtmp.write_coalesce_ms, 0..=10_000)?;
        in_range("rtmp.handshake_timeout_ms", rtmp.handshake_timeout_ms, 1..=DAY_MS)?;
        in_range("rtmp.idle_timeout_ms", rtmp.idle_timeout_ms, 1..=DAY_MS)?;
        in_range("rtmp.unpublish_grace_ms", rtmp.unpublish_grace_ms, 0..=DAY_MS)?;
        in_range("rtmp.play_wait_ms", rtmp.play_wait_ms, 0..=DAY_MS)?;
        in_range(
            "rtmp.write_stall_timeout_ms",
            rtmp.write_stall_timeout_ms,
            0..=DAY_MS,
        )?;
        // The kernel's TCP_KEEPIDLE is at most 32767 s.
        in_range("rtmp.tcp_keepalive_s", rtmp.tcp_keepalive_s, 0..=32_767)?;
        in_range("rtmp.tcp_user_timeout_ms", rtmp.tcp_user_timeout_ms, 0..=DAY_MS)?;
        in_range(
            "rtmp.max_connections_per_core",
            rtmp.max_connections_per_core as u64,
            1..=1 << 24,
        )?;
        in_range(
            "rtmp.max_control_queue_bytes",
            rtmp.max_control_queue_bytes as u64,
            4096..=1 << 30,
        )?;
        in_range(
            "rtmp.min_window_ack_bytes",
            u64::from(rtmp.min_window_ack_bytes),
            1..=0x7FFF_FFFF,
        )?;
        in_range("engine.cores", self.engine.cores as u64, 0..=4096)?;
        in_range(
            "auth.on_publish_timeout_ms",
            self.auth.on_publish_timeout_ms.unwrap_or(3_000),
            1..=DAY_MS,
        )?;
        in_range(
            "auth.on_publish_max_pending",
            self.auth.on_publish_max_pending as u64,
            1..=1 << 20,
        )?;
        in_range("mesh.frame_budget_ms", self.mesh.frame_budget_ms, 1..=60_000)?;
        in_range("mesh.link_timeout_ms", self.mesh.link_timeout_ms, 100..=600_000)?;
        in_range("mesh.pull_grace_ms", self.mesh.pull_grace_ms, 0..=DAY_MS)?;
        in_range("mesh.retry_ms", self.mesh.retry_ms, 1..=DAY_MS)?;
        self.relays.check().map_err(ConfigError::Invalid)?;
        // Every mistake in `[mesh]` (an unreadable key, a peer listed twice, an origin that is no node) is a
        // start-up error naming its field.
        self.mesh
            .resolve()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.engine.inbox_capacity < 64 {
            return Err(ConfigError::Invalid("engine.inbox_capacity below 64".to_string()));
        }
        // A wait held for more than a few ms would be felt by every client of the core.
        in_range("engine.wake_batch", u64::from(self.engine.wake_batch), 0..=1_024)?;
        in_range("engine.wake_batch_us", self.engine.wake_batch_us, 0..=5_000)?;
        for (app, fanout) in std::iter::once(("(default)", &self.fanout))
            .chain(self.apps.iter().map(|(name, f)| (name.as_str(), f)))
        {
            if fanout.viewer_queue_bytes < 64 << 10 {
                return Err(ConfigError::Invalid(format!(
                    "fanout.viewer_queue_bytes of app {app} below 64 KiB"
                )));
            }
            in_range(
                &format!("latency_budget_ms of app {app}"),
                fanout.latency_budget_ms,
                1..=DAY_MS,
            )?;
            in_range(
                &format!("snapshot_interval_s of app {app}"),
                fanout.snapshot_interval_s,
                0..=86_400,
            )?;
            crate::transcode::ladder::parse_ladder(&fanout.renditions)
                .map_err(|e| ConfigError::Invalid(format!("renditions of app {app}: {e}")))?;
            if fanout.transcode && fanout.renditions.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "app {app} says transcode = true but has no renditions = [...]"
                )));
            }
        }
        let snapshots = &self.snapshots;
        in_range("snapshots.workers", snapshots.workers as u64, 1..=64)?;
        in_range("snapshots.queue", snapshots.queue as u64, 0..=65_536)?;
        in_range("snapshots.timeout_ms", snapshots.timeout_ms, 100..=60_000)?;
        in_range("snapshots.quality", u64::from(snapshots.quality), 1..=100)?;
        in_range(
            "snapshots.cache_entries",
            snapshots.cache_entries as u64,
            1..=1 << 20,
        )?;
        in_range("snapshots.keep", snapshots.keep as u64, 1..=1 << 20)?;
        in_range("snapshots.width", u64::from(snapshots.width), 0..=7_680)?;
        let transcode = &self.transcode;
        in_range("transcode.max_workers", transcode.max_workers as u64, 1..=256)?;
        in_range("transcode.audio_kbps", u64::from(transcode.audio_kbps), 16..=512)?;
        in_range(
            "transcode.restart_backoff_ms",
            transcode.restart_backoff_ms,
            100..=600_000,
        )?;
        in_range(
            "transcode.restart_backoff_max_ms",
            transcode.restart_backoff_max_ms,
            transcode.restart_backoff_ms..=3_600_000,
        )?;
        const PRESETS: [&str; 10] = [
            "ultrafast",
            "superfast",
            "veryfast",
            "faster",
            "fast",
            "medium",
            "slow",
            "slower",
            "veryslow",
            "placebo",
        ];
        if !PRESETS.contains(&transcode.preset.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "transcode.preset = {:?} (one of {})",
                transcode.preset,
                PRESETS.join(", ")
            )));
        }
        Ok(())
    }

    /// The fan-out settings of `app`.
    pub fn fanout_for(&self, app: &str) -> &FanoutConfig {
        self.apps.get(app).unwrap_or(&self.fanout)
    }

    /// The sample configuration file: every field at its default, as TOML.
    pub fn sample_toml() -> String {
        toml::to_string_pretty(&Config::default()).unwrap_or_default()
    }
}

/// A word of advice for a parse error whose usual cause we know.
fn parse_hint(message: &str) -> &'static str {
    if message.contains("unknown field `write_coalesce_ms`") {
        // `[apps.NAME]` takes the `[fanout]` fields; the write interval is the cores' (one pass per interval
        // over every viewer they serve), so it is set for the node.
        "\nhint: write_coalesce_ms is node-wide: set it in [rtmp] (0 writes every frame at once)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladders_and_transcode_settings_are_checked_with_their_names() {
        let error = |toml_text: &str| {
            let config: Config = toml::from_str(toml_text).unwrap();
            config.validate().unwrap_err().to_string()
        };
        let e = error("[apps.shop]\nrenditions = [\"721p 1000k\"]\n");
        assert!(
            e.contains("renditions of app shop") && e.contains("721p 1000k"),
            "{e}"
        );
        let e = error("[apps.shop]\ntranscode = true\n");
        assert!(
            e.contains("app shop says transcode = true but has no renditions"),
            "{e}"
        );
        let e = error("[transcode]\npreset = \"quick\"\n");
        assert!(e.contains("transcode.preset") && e.contains("veryfast"), "{e}");
        let e = error("[snapshots]\nworkers = 0\n");
        assert!(e.contains("snapshots.workers = 0"), "{e}");
        let ok: Config =
            toml::from_str("[apps.shop]\nrenditions = [\"720p 2500k\", \"360p 600k\"]\ntranscode = true\n")
                .unwrap();
        ok.validate().unwrap();
    }

    /// The commented sample `relay-bin/pop.toml` parses, and shows every field at its default.
    #[test]
    fn the_sample_pop_toml_is_the_defaults() {
        let sample: Config = toml::from_str(include_str!("../pop.toml")).unwrap();
        assert_eq!(sample, Config::default());
        sample.validate().unwrap();
    }

    #[test]
    fn write_coalesce_ms_in_an_app_points_to_rtmp() {
        let dir = std::env::temp_dir().join(format!("popline-config-hint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pop.toml");
        std::fs::write(&path, "[apps.live]\nwrite_coalesce_ms = 0\n").unwrap();
        let error = Config::load(&path).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            error.contains("write_coalesce_ms is node-wide: set it in [rtmp]"),
            "{error}"
        );
    }

    #[test]
    fn an_admin_api_off_loopback_needs_a_token() {
        let mut config = Config::default();
        config.admin.listen = "0.0.0.0:1985".parse().unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("admin.token"), "{error}");
        config.admin.token = Some("t".to_string());
        config.validate().unwrap();
        config.admin.token = None;
        config.admin.enabled = false;
        config.validate().unwrap();
    }

    #[test]
    fn the_old_http_section_still_configures_the_admin_api() {
        let config: Config = toml::from_str("[http]\nlisten = \"127.0.0.1:9999\"\n").unwrap();
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9999");
    }

    #[test]
    fn egress_mistakes_are_named() {
        let mut config = Config::default();
        config.egress.listen = config.admin.listen;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("egress.listen and admin.listen"), "{error}");
        let mut config = Config::default();
        config.egress.max_request_bytes = 10;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("egress.max_request_bytes"), "{error}");
        let mut config = Config::default();
        config.egress.cors_allow_origin = "x\r\nSet-Cookie: a".to_string();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("egress.cors_allow_origin"), "{error}");
        let mut config = Config::default();
        config.egress.keepalive_max_requests = 0;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("egress.keepalive_max_requests"), "{error}");
        let mut config = Config::default();
        config.egress.keepalive_idle_ms = 9_223_372_036_854_775_807;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("egress.keepalive_idle_ms"), "{error}");
    }

    #[test]
    fn defaults_serve_on_localhost() {
        let config = Config::default();
        assert_eq!(config.rtmp.listen.to_string(), "127.0.0.1:1935");
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:1985");
        assert_eq!(config.egress.listen.to_string(), "127.0.0.1:8080");
        config.validate().unwrap();
    }

    #[test]
    fn sample_round_trips() {
        let text = Config::sample_toml();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, Config::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults_and_unknown_fields_are_errors() {
        let config: Config =
            toml::from_str("[rtmp]\nlisten = \"0.0.0.0:1936\"\n[apps.live]\ndrop_policy = \"latency\"\n")
                .unwrap();
        assert_eq!(config.rtmp.listen.port(), 1936);
        assert_eq!(config.rtmp.chunk_size, 4096);
        assert_eq!(config.fanout_for("live").drop_policy, DropPolicy::Latency);
        assert_eq!(config.fanout_for("other").drop_policy, DropPolicy::Gop);
        assert!(toml::from_str::<Config>("[rtmp]\nlisten_typo = 1\n").is_err());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let mut config = Config::default();
        config.rtmp.chunk_size = 10;
        assert!(config.validate().is_err());
    }

    #[test]
    fn durations_that_would_overflow_an_instant_are_refused_with_the_field_named() {
        // Issue 17, item 17: `write_coalesce_ms = 9223372036854775807` passed, and the first core to add it
        // to `now` panicked.
        let text = "[rtmp]\nwrite_coalesce_ms = 9223372036854775807\n";
        let config: Config = toml::from_str(text).unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("rtmp.write_coalesce_ms"), "{error}");
        for field in [
            "handshake_timeout_ms",
            "idle_timeout_ms",
            "unpublish_grace_ms",
            "play_wait_ms",
            "write_stall_timeout_ms",
            "tcp_user_timeout_ms",
        ] {
            let text = format!("[rtmp]\n{field} = 9223372036854775807\n");
            let config: Config = toml::from_str(&text).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(field), "{field}: {error}");
        }
        let config: Config = toml::from_str("[fanout]\nlatency_budget_ms = 9223372036854775807\n").unwrap();
        assert!(config.validate().is_err());
    }
}
