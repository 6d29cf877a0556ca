//! Shared test harness: start the real `popline` binary, publish and play with real ffmpeg, check with ffprobe.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod rtmp_client;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "popline-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `popline` process.
pub struct Popline {
    child: Child,
    pub rtmp: SocketAddr,
    /// The admin API.
    pub http: Option<SocketAddr>,
    /// HTTP egress (HTTP-FLV).
    pub egress: Option<SocketAddr>,
    pub log: PathBuf,
    pub config: PathBuf,
}

/// The base config of tests: ephemeral ports, two cores, short grace and timeouts, bans in `dir`.
pub fn base_config(dir: &Path) -> String {
    base_config_on(dir, "auto")
}

/// [`base_config`] with the cores on IO backend `backend` (`auto`, `uring`, `epoll`).
pub fn base_config_on(dir: &Path, backend: &str) -> String {
    format!(
        "[rtmp]\nlisten = \"127.0.0.1:0\"\nunpublish_grace_ms = 300\nhandshake_timeout_ms = 3000\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"test-token\"\n\
         [egress]\nlisten = \"127.0.0.1:0\"\n\
         [engine]\ncores = 2\nbackend = \"{backend}\"\n\
         [bans]\npath = \"{}\"\n",
        dir.join("bans.json").display()
    )
}

/// Reads `child`'s stdout (piped) on a thread and passes on its `popline ready: ...` line.
pub fn ready_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("popline ready:") {
                let _ = tx.send(line);
            }
        }
    });
    rx
}

/// The value of `name=` in a ready line (`rtmp`, `admin`, `egress`).
pub fn ready_field(line: &str, name: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .map(str::to_string)
}

impl Popline {
    /// Starts popline with `config` (TOML) written to `dir/pop.toml`; waits for its ready line.
    pub fn start(dir: &Path, config: &str) -> Popline {
        let config_path = dir.join("pop.toml");
        std::fs::write(&config_path, config).unwrap();
        Popline::start_with_file(dir, &config_path)
    }

    pub fn start_with_file(dir: &Path, config_path: &Path) -> Popline {
        let log = dir.join(format!("popline-{}.log", Instant::now().elapsed().as_nanos()));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_popline"))
            .arg("--config")
            .arg(config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("start popline");
        let rx = ready_lines(&mut child);
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "popline did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let rtmp = ready_field(&line, "rtmp").unwrap().parse().unwrap();
        let http = ready_field(&line, "admin").and_then(|h| h.parse().ok());
        let egress = ready_field(&line, "egress").and_then(|h| h.parse().ok());
        Popline {
            child,
            rtmp,
            http,
            egress,
            log,
            config: config_path.to_path_buf(),
        }
    }

    pub fn url(&self, app_stream: &str) -> String {
        format!("rtmp://{}/{}", self.rtmp, app_stream)
    }

    /// One HTTP request to the admin API with the test token; returns (status, body).
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http_request(self.http.unwrap(), method, path, body, Some("test-token"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory of the process, in KiB.
    /// io_uring instances the node's process holds (`anon_inode:[io_uring]` descriptors).
    pub fn io_uring_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|dir| {
                dir.flatten()
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|target| target.to_string_lossy().contains("io_uring"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Popline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or("");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A sample file from `../shared/media`, or an equivalent generated with ffmpeg when the checkout lacks it.
pub fn media(name: &str) -> PathBuf {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/media")
        .join(name);
    // POPLINE_GENERATED_MEDIA=1 uses the generated stand-ins even where the samples exist (what a
    // checkout without ../shared/media gets), to reproduce such a run.
    if shared.exists() && std::env::var_os("POPLINE_GENERATED_MEDIA").is_none() {
        return shared;
    }
    let generated = std::env::temp_dir().join(format!("popline-generated-{name}"));
    if generated.exists() {
        return generated;
    }
    let (size, rate, seconds, bframes, bitrate) = if name.contains("720p30") {
        ("1280x720", "30", "20", "3", "3000k")
    } else {
        ("640x360", "25", "10", "0", "800k")
    };
    let partial = generated.with_extension("partial.flv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate={rate}"))
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            seconds,
        ])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-b:v", bitrate, "-bf", bframes,
        ])
        .arg("-g")
        .arg(format!("{}", rate.parse::<u32>().unwrap() * 2))
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv"])
        .arg(&partial)
        .status()
        .expect("ffmpeg must be installed (scripts/setup.sh installs it)");
    assert!(status.success(), "cannot generate {name}");
    std::fs::rename(&partial, &generated).unwrap();
    generated
}

/// `ffmpeg -re -i FILE -c copy -f flv URL`.
pub fn publish(file: &Path, url: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg must be installed")
}

/// Plays `url` into `out` (FLV, stream copy) until the server ends the stream.
pub fn play(url: &str, out: &Path) -> Child {
    play_with(url, &["-rw_timeout", "30000000"], out, "flv")
}

/// Plays `url` (with ffmpeg input options `input`) into `out` in container `format`, stream copy, until
/// the server ends the stream.
pub fn play_with(url: &str, input: &[&str], out: &Path, format: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(input)
        .args(["-i", url, "-c", "copy", "-f", format, "-y"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg must be installed")
}

/// Waits for `child` up to `limit`; kills it past that. Returns its exit success and stderr.
pub fn wait(mut child: Child, limit: Duration) -> (bool, String) {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut err);
                }
                return (status.success(), err);
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut err);
                }
                return (false, format!("killed after {limit:?}; stderr: {err}"));
            }
        }
    }
}

/// What ffprobe says about a media file.
#[derive(Debug, Default)]
pub struct Probe {
    pub video_codec: String,
    pub audio_codec: String,
    pub width: u32,
    pub height: u32,
    pub video_packets: usize,
    pub audio_packets: usize,
    pub first_video_is_key: bool,
    /// Per stream, dts never went backwards.
    pub monotonic: bool,
}

pub fn probe(file: &Path) -> Probe {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=index,codec_type,codec_name,width,height",
        ])
        .args([
            "-show_entries",
            "packet=stream_index,dts,flags",
            "-of",
            "compact=p=1:nk=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe must be installed");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut probe = Probe {
        monotonic: true,
        ..Probe::default()
    };
    let mut video_index = None;
    let mut packets: Vec<(u32, i64, bool)> = Vec::new();
    for line in text.lines() {
        let fields: std::collections::HashMap<&str, &str> =
            line.split('|').filter_map(|kv| kv.split_once('=')).collect();
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<i64>().ok());
        if line.starts_with("stream|") {
            let codec = fields.get("codec_name").copied().unwrap_or("").to_string();
            match fields.get("codec_type").copied() {
                Some("video") => {
                    video_index = number("index").map(|i| i as u32);
                    probe.video_codec = codec;
                    probe.width = number("width").unwrap_or(0) as u32;
                    probe.height = number("height").unwrap_or(0) as u32;
                }
                Some("audio") => probe.audio_codec = codec,
                _ => {}
            }
        } else if line.starts_with("packet|") {
            let key = fields.get("flags").is_some_and(|f| f.starts_with('K'));
            packets.push((
                number("stream_index").unwrap_or(0) as u32,
                number("dts").unwrap_or(i64::MIN),
                key,
            ));
        }
    }
    let mut last_dts: std::collections::HashMap<u32, i64> = Default::default();
    for (index, dts, key) in packets {
        if let Some(last) = last_dts.insert(index, dts) {
            if dts < last {
                probe.monotonic = false;
            }
        }
        if Some(index) == video_index {
            if probe.video_packets == 0 {
                probe.first_video_is_key = key;
            }
            probe.video_packets += 1;
        } else {
            probe.audio_packets += 1;
        }
    }
    probe
}

/// Checks a whole playback of a sample file: H.264 and AAC at `width`x`height`, starting on a keyframe,
/// monotonic timestamps, `expected` video frames within 2%, and a clean full decode.
pub fn assert_whole_playback(recording: &Path, expected: usize, width: u32, height: u32) -> Probe {
    let probe = probe(recording);
    assert_eq!(probe.video_codec, "h264");
    assert_eq!(probe.audio_codec, "aac");
    assert_eq!((probe.width, probe.height), (width, height));
    assert!(probe.first_video_is_key, "playback must start on a keyframe");
    assert!(probe.monotonic, "timestamps went backwards");
    assert!(
        probe.video_packets >= expected * 98 / 100 && probe.video_packets <= expected + expected / 50,
        "{} video frames played, expected {expected} within 2%",
        probe.video_packets
    );
    let errors = decode_errors(recording);
    assert!(errors.trim().is_empty(), "decode errors: {errors}");
    probe
}

/// ffprobe's duration of `file` in seconds, or its error.
pub fn duration_s(file: &Path) -> Result<f64, String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    text.parse().map_err(|_| format!("no duration: {text:?}"))
}

/// Decodes `file` fully; returns ffmpeg's error output (empty when it decoded cleanly).
pub fn decode_errors(file: &Path) -> String {
    // `-enc_time_base -1`: frames keep the file's time base. With the default (1/frame rate), ms timestamps
    // offset by half a frame round onto each other and the null muxer complains of timestamps that are fine.
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(file)
        .args(["-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .expect("ffmpeg must be installed");
    let mut errors = String::from_utf8_lossy(&output.stderr).to_string();
    if !output.status.success() {
        errors.push_str(&format!(" (exit {})", output.status));
    }
    errors
}

/// Waits until `check` holds or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Whether the server closes `socket` within `limit` (what it sends meanwhile is read and discarded).
pub fn closed_within(socket: &mut TcpStream, limit: Duration) -> bool {
    socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The codec types ffprobe finds on a live URL (`video`, `audio`, and any phantom `data`/`subtitle` tracks).
pub fn live_stream_types(url: &str) -> Vec<String> {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "10000000",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
            url,
        ])
        .output()
        .expect("ffprobe must be installed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}
