//! HLS in a real browser: real ffmpeg publishes the 720p sample into the real `popline`, and headless
//! Chromium (Debian's build, which plays H.264/AAC through Media Source Extensions) plays
//! `http://EGRESS/live/STREAM/index.m3u8` with hls.js (from the npm registry), plain and LL-HLS. The video
//! element must play at least 3 s of media at 1280x720 without a fatal hls.js error.
//!
//! The page is served by the test itself on 127.0.0.1 (so the playlist and segments are fetched
//! cross-origin, as a web page on another host would, and need popline's CORS header), and it POSTs its
//! state back to the same server: a progress report each second and a final one when playback reached the
//! target, hls.js raised a fatal error, or the media element failed. Chromium and hls.js come from
//! `scripts/setup.sh`; without them the tests fail and say so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Where `scripts/setup.sh` installs hls.js (`npm install --prefix DIR hls.js@VERSION`).
const DEFAULT_WEB_DIR: &str = "/opt/popline-test-web";
/// Media the video element must play (seconds of its own timeline, seeks not counted).
const TARGET_PLAYED_S: f64 = 3.0;
/// How long Chromium may take, from its start, to play the target (generous: a loaded 2-core machine).
const PLAYBACK_LIMIT: Duration = Duration::from_secs(60);

const SETUP_HINT: &str = "run scripts/setup.sh (it installs Debian's chromium and hls.js from the npm \
                          registry; CI runs it first)";

/// The hls.js build the page loads: `$POPLINE_TEST_WEB` (default [`DEFAULT_WEB_DIR`]) `/node_modules/hls.js`.
fn hlsjs_file() -> PathBuf {
    let dir =
        std::env::var_os("POPLINE_TEST_WEB").map_or_else(|| PathBuf::from(DEFAULT_WEB_DIR), PathBuf::from);
    let file = dir.join("node_modules/hls.js/dist/hls.min.js");
    assert!(
        file.is_file(),
        "hls.js is missing ({} not found): {SETUP_HINT}",
        file.display()
    );
    file
}

/// `$POPLINE_CHROMIUM`, or `chromium` on the PATH.
fn chromium_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("POPLINE_CHROMIUM") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("chromium"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| panic!("chromium is not installed (not on the PATH): {SETUP_HINT}"))
}

/// `chromium --version`, for the test's output.
fn chromium_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|e| panic!("cannot run {} --version: {e}: {SETUP_HINT}", binary.display()))
}

/// One request the page server received: a report POSTed by the page.
struct Report {
    kind: String,
    state: Value,
}

/// The test's own HTTP server on 127.0.0.1: serves the page and hls.js, and passes on what the page POSTs
/// to `/report`. One request per connection; stops (and its thread ends) on drop.
struct PageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PageServer {
    fn start(page: String, hlsjs: Vec<u8>, reports: Sender<Report>) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for socket in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(socket) = socket else { continue };
                // A broken request from the browser only loses that request.
                let _ = serve(socket, &page, &hlsjs, &reports);
            }
        });
        PageServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(socket: TcpStream, page: &str, hlsjs: &[u8], reports: &Sender<Report>) -> std::io::Result<()> {
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(socket);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; content_length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, answer): (&str, &str, &[u8]) = match (method, path) {
        ("GET", "/" | "/index.html") => ("200 OK", "text/html; charset=utf-8", page.as_bytes()),
        ("GET", "/hls.min.js") => ("200 OK", "text/javascript", hlsjs),
        ("POST", "/report") => {
            let state: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let kind = state["kind"].as_str().unwrap_or("?").to_string();
            let _ = reports.send(Report { kind, state });
            ("204 No Content", "text/plain", b"")
        }
        _ => ("404 Not Found", "text/plain", b"not found"),
    };
    let mut socket = reader.into_inner();
    write!(
        socket,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        answer.len()
    )?;
    socket.write_all(answer)?;
    socket.flush()
}

/// The page: hls.js on a muted autoplaying `<video>`, reporting its state to `/report`.
fn page(playlist_url: &str, low_latency: bool) -> String {
    const SCRIPT: &str = r#"
const started = performance.now();
const video = document.getElementById("video");
const state = {
  kind: "progress", why: null, hlsjs: typeof Hls === "undefined" ? null : Hls.version,
  userAgent: navigator.userAgent,
  mse: typeof MediaSource !== "undefined"
    && MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f,mp4a.40.2"'),
  startTime: null, currentTime: 0, played: 0, seeks: 0, playingAfterMs: null,
  videoWidth: 0, videoHeight: 0, readyState: 0, paused: true, ended: false, buffered: [],
  fatal: null, errors: [], mediaError: null, playError: null, levels: null, details: null,
  fragments: 0, parts: 0, initFetches: 0, initAppends: 0, playlistFetches: 0, latency: null, elapsedMs: 0,
};
let finished = false;
// What the page fetched, from the browser's own resource timing.
performance.setResourceTimingBufferSize(100000);
function countFetches() {
  const names = performance.getEntriesByType("resource").map((e) => e.name);
  state.initFetches = names.filter((n) => /\/init-\d+\.mp4/.test(n)).length;
  state.playlistFetches = names.filter((n) => /\/index\.m3u8/.test(n)).length;
}
function post(kind) {
  countFetches();
  state.kind = kind;
  state.elapsedMs = Math.round(performance.now() - started);
  return fetch("/report", { method: "POST", body: JSON.stringify(state) }).catch(() => {});
}
function finish(why) {
  if (finished) return;
  finished = true;
  state.why = why;
  console.log("popline-test: " + why + " " + JSON.stringify(state));
  post("done");
}
function describe(data) {
  return {
    type: data.type, details: data.details, fatal: data.fatal, reason: data.reason || null,
    error: data.error ? String(data.error) : null,
    url: (data.frag && data.frag.url) || (data.part && data.part.url) || (data.context && data.context.url)
      || data.url || null,
    response: data.response ? { code: data.response.code, text: data.response.text } : null,
    mimeType: data.mimeType || null, sourceBufferName: data.sourceBufferName || null,
    parent: data.parent || null, level: data.level === undefined ? null : data.level,
  };
}
video.addEventListener("playing", () => {
  if (state.startTime === null) {
    state.startTime = video.currentTime;
    state.playingAfterMs = Math.round(performance.now() - started);
  }
});
video.addEventListener("seeking", () => { state.seeks += 1; });
video.addEventListener("ended", () => { state.ended = true; });
video.addEventListener("error", () => {
  state.mediaError = video.error ? { code: video.error.code, message: video.error.message } : "unknown";
  finish("media element error");
});
let hls = null;
try {
  if (typeof Hls === "undefined") {
    state.fatal = { details: "hls.js did not load" };
    finish("no hls.js");
  } else if (!Hls.isSupported()) {
    state.fatal = { details: "Hls.isSupported() is false (no Media Source Extensions for H.264/AAC)" };
    finish("unsupported");
  } else {
    hls = new Hls({ lowLatencyMode: LOW_LATENCY });
    hls.on(Hls.Events.ERROR, (_event, data) => {
      const error = describe(data);
      console.log("popline-test: hls.js error " + JSON.stringify(error));
      if (data.fatal) {
        state.fatal = error;
        finish("fatal hls.js error");
      } else if (state.errors.length < 50) {
        state.errors.push(error);
      }
    });
    hls.on(Hls.Events.MANIFEST_PARSED, (_event, data) => {
      state.levels = data.levels.map((l) => ({
        width: l.width, height: l.height, bitrate: l.bitrate, videoCodec: l.videoCodec || null,
        audioCodec: l.audioCodec || null,
      }));
      video.play().catch((e) => { state.playError = String(e); });
    });
    hls.on(Hls.Events.LEVEL_LOADED, (_event, data) => {
      const d = data.details;
      state.details = {
        live: d.live, targetduration: d.targetduration, partTarget: d.partTarget || 0,
        canBlockReload: d.canBlockReload, fragments: d.fragments.length,
        partList: d.partList ? d.partList.length : 0,
      };
    });
    hls.on(Hls.Events.FRAG_LOADED, (_event, data) => {
      if (data.part) state.parts += 1; else state.fragments += 1;
    });
    hls.on(Hls.Events.BUFFER_APPENDED, (_event, data) => {
      if (data.frag && data.frag.sn === "initSegment") state.initAppends += 1;
    });
    hls.loadSource(PLAYLIST);
    hls.attachMedia(video);
  }
} catch (e) {
  state.fatal = { details: "exception", error: String(e) };
  finish("exception");
}
// Media time advanced by playing, not by seeks: a step counts when it is no longer than the wall-clock
// time since the last look (plus slack), so the jump to hls.js's start position is not "playback".
let lastTime = null, lastLook = performance.now(), ticks = 0;
setInterval(() => {
  if (finished) return;
  const now = performance.now();
  const time = video.currentTime;
  if (lastTime !== null && time > lastTime && time - lastTime <= (now - lastLook) / 1000 + 0.1) {
    state.played += time - lastTime;
  }
  lastTime = time;
  lastLook = now;
  state.currentTime = time;
  state.videoWidth = video.videoWidth;
  state.videoHeight = video.videoHeight;
  state.readyState = video.readyState;
  state.paused = video.paused;
  state.buffered = [];
  for (let i = 0; i < video.buffered.length; i++) {
    state.buffered.push([video.buffered.start(i), video.buffered.end(i)]);
  }
  if (hls) state.latency = hls.latency;
  if (state.played >= TARGET_PLAYED_S && video.videoWidth > 0) {
    finish("played");
  } else if (state.ended) {
    finish("the video ended before the target");
  } else if (++ticks % 4 === 0) {
    post("progress");
  }
}, 250);
"#;
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>popline hls.js test</title>\n\
         <script src=\"/hls.min.js\"></script></head>\n<body>\n\
         <video id=\"video\" muted autoplay playsinline></video>\n<script>\n\
         const PLAYLIST = {};\nconst LOW_LATENCY = {low_latency};\n\
         const TARGET_PLAYED_S = {TARGET_PLAYED_S:.1};\n\
         {SCRIPT}</script>\n</body></html>\n",
        serde_json::to_string(playlist_url).unwrap()
    )
}

/// Headless Chromium in a process group of its own; the whole group is killed on drop.
struct Browser {
    child: Child,
    log: PathBuf,
    /// How Chromium ended, when it ended on its own (then it is reaped).
    exited: Option<std::process::ExitStatus>,
}

impl Browser {
    fn start(scratch: &Scratch, url: &str) -> Browser {
        let binary = chromium_binary();
        let log = scratch.path("chromium.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required",
                "--mute-audio",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                // Chromium throttles timers and media of pages it thinks are hidden; this one is watched.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                // Console messages (the page's and hls.js's) go to the log.
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!(
                "--user-data-dir={}",
                scratch.path("chromium-profile").display()
            ))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}: {SETUP_HINT}", binary.display()));
        Browser {
            child,
            log,
            exited: None,
        }
    }

    /// Whether Chromium is still running (it is reaped when it is not).
    fn running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited.is_none()
    }

    /// The page's console lines from Chromium's log, and its last lines.
    fn console(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let console: Vec<&str> = text.lines().filter(|l| l.contains("CONSOLE")).collect();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        format!(
            "console:\n{}\nlast lines of chromium's log:\n{}",
            console.join("\n"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.exited.is_some() {
            // Reaped: its id may no longer be ours, and its processes end with it.
            return;
        }
        // The group's leader is not reaped before the group is killed, so its id (the group's) is still
        // ours: the kill reaches Chromium's renderer, GPU and zygote processes and nothing else.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (and reaped) on drop: the publisher, on every path out of the test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` (one request per connection, as popline answers); the status, 0 when it failed.
fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let Ok(mut socket) = TcpStream::connect(addr) else {
        return 0;
    };
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if socket
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: pop\r\nConnection: close\r\n\r\n").as_bytes())
        .is_err()
    {
        return 0;
    }
    let mut all = Vec::new();
    let _ = socket.read_to_end(&mut all);
    String::from_utf8_lossy(&all)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The node's `popline_stream_hls_sessions` gauge for `live/STREAM` (0 when it is not listed).
fn hls_sessions(node: &Popline, stream: &str) -> u64 {
    let (_, metrics) = node.api("GET", "/metrics", None);
    let series = format!("popline_stream_hls_sessions{{stream=\"live/{stream}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits for the page's final report. Otherwise, when `limit` passed or Chromium ended first: why, and the
/// page's last progress report (or none).
fn final_report(
    reports: &Receiver<Report>,
    browser: &mut Browser,
    limit: Duration,
) -> Result<Value, (String, Option<Value>)> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match reports.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(report) if report.kind == "done" => return Ok(report.state),
            Ok(report) => last = Some(report.state),
            Err(RecvTimeoutError::Timeout) if left.is_zero() => {
                return Err((format!("no result within {limit:?}"), last));
            }
            Err(RecvTimeoutError::Timeout) if !browser.running() => {
                return Err((format!("Chromium ended ({:?})", browser.exited), last));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err(("the page server stopped".into(), last)),
        }
    }
}

fn plays_in_chromium(stream: &str, low_latency: bool) {
    let hlsjs = std::fs::read(hlsjs_file()).unwrap();
    let chromium = chromium_binary();
    let chromium_version = chromium_version(&chromium);
    let scratch = Scratch::new("hls-browser");
    let mut config = base_config(&scratch.0);
    if low_latency {
        config.push_str("[apps.live]\nlow_latency_hls = true\n");
    }
    let node = Popline::start(&scratch.0, &config);
    let egress = node.egress.unwrap();
    let playlist_path = format!("/live/{stream}/index.m3u8");
    let publisher = KillOnDrop(publish(
        &media("h264-aac-720p30-bframes.flv"),
        &node.url(&format!("live/{stream}")),
    ));
    let published = Instant::now();
    let playlist_ready = || get_status(egress, &playlist_path) == 200;
    assert!(
        wait_until(Duration::from_secs(30), playlist_ready),
        "the playlist never answered 200\n{}",
        node.log_text()
    );
    let playlist_after = published.elapsed();

    let page_text = page(&format!("http://{egress}{playlist_path}"), low_latency);
    std::fs::write(scratch.path("index.html"), &page_text).unwrap();
    let (reports_tx, reports) = std::sync::mpsc::channel();
    let server = PageServer::start(page_text, hlsjs, reports_tx);
    let started = Instant::now();
    let mut browser = Browser::start(&scratch, &format!("http://{}/index.html", server.addr));
    let result = final_report(&reports, &mut browser, PLAYBACK_LIMIT);
    let took = started.elapsed();
    let sessions = hls_sessions(&node, stream);
    let console = browser.console();
    drop(browser);
    drop(server);
    drop(publisher);

    let report = match result {
        Ok(report) => report,
        Err((why, last)) => panic!(
            "hls.js in {} did not play {TARGET_PLAYED_S} s: {why}; the page's last report: {}\n{console}\n\
             popline's log:\n{}",
            chromium.display(),
            last.map_or("none (the page never reported)".to_string(), |l| l.to_string()),
            node.log_text()
        ),
    };
    let mode = if low_latency { "LL-HLS" } else { "HLS" };
    let number = |name: &str| report[name].as_f64().unwrap_or(f64::NAN);
    println!(
        "{mode} in headless {chromium_version}, hls.js {}: {} after {:.1} s of Chromium (playing {} ms \
         after the page started): {:.2} s played, currentTime {:.2} from {:.2}, {}x{}, seeks {}, latency \
         {:.2} s; the playlist answered 200 {:.1} s after the publish started",
        report["hlsjs"],
        report["why"],
        took.as_secs_f64(),
        report["playingAfterMs"],
        number("played"),
        number("currentTime"),
        number("startTime"),
        report["videoWidth"],
        report["videoHeight"],
        report["seeks"],
        number("latency"),
        playlist_after.as_secs_f64(),
    );
    println!(
        "  {} segments and {} parts loaded; {} playlist and {} init segment fetches, {} init segment \
         appends; {sessions} HLS sessions counted by the node (the test's own first request included); \
         hls.js's playlist: {}; non-fatal hls.js errors: {}",
        report["fragments"],
        report["parts"],
        report["playlistFetches"],
        report["initFetches"],
        report["initAppends"],
        report["details"],
        report["errors"],
    );
    let context = || format!("the page's report: {report}\n{console}");
    assert!(
        report["fatal"].is_null(),
        "hls.js raised a fatal error: {}\n{}",
        report["fatal"],
        context()
    );
    assert!(
        report["mediaError"].is_null(),
        "the video element failed: {}\n{}",
        report["mediaError"],
        context()
    );
    assert_eq!(report["why"], "played", "{}", context());
    assert!(
        report["played"].as_f64().unwrap_or(0.0) >= TARGET_PLAYED_S,
        "{}",
        context()
    );
    // One viewer is one session (the test's own first request makes at most one more): the variant it
    // reloads carries its session, and the init segment is fetched and appended once.
    assert!(
        sessions <= 2,
        "one hls.js viewer counted as {sessions} sessions: {}",
        context()
    );
    assert_eq!(report["initAppends"], 1, "{}", context());
    assert_eq!(report["videoWidth"], 1280, "{}", context());
    assert_eq!(report["videoHeight"], 720, "{}", context());
    if low_latency {
        assert!(
            report["details"]["partTarget"].as_f64().unwrap_or(0.0) > 0.0,
            "hls.js saw no LL-HLS parts in the playlist: {}",
            context()
        );
        assert!(
            report["parts"].as_u64().unwrap_or(0) > 0,
            "hls.js loaded no LL-HLS part: {}",
            context()
        );
    }
}

#[test]
fn hlsjs_plays_hls_in_headless_chromium() {
    plays_in_chromium("browser", false);
}

#[test]
fn hlsjs_plays_ll_hls_in_headless_chromium() {
    plays_in_chromium("browser-ll", true);
}
