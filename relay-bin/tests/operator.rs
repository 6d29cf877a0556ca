//! What an operator meets when starting and running the real `popline` binary: a port another process holds,
//! an admin API open to the network without a token, a log pipe that closes, a bans file that cannot be
//! written (issue 17: items 14, 15, 19, 20, 22).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{http_request, ready_field, ready_lines, rtmp_client, wait_until, Scratch};

/// A running popline, killed when dropped (a failing test leaves no process behind).
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a `popline` start ended: it printed its ready line, or it exited.
enum Start {
    Ready {
        child: Node,
        rtmp: SocketAddr,
        http: Option<SocketAddr>,
    },
    Exited {
        status: ExitStatus,
        stderr: String,
    },
}

impl Start {
    fn exited(self, what: &str) -> (ExitStatus, String) {
        match self {
            Start::Exited { status, stderr } => (status, stderr),
            Start::Ready { rtmp, .. } => {
                panic!("{what}: popline started (rtmp={rtmp}) instead of refusing to");
            }
        }
    }

    fn ready(self, what: &str) -> (Node, SocketAddr, Option<SocketAddr>) {
        match self {
            Start::Ready { child, rtmp, http } => (child, rtmp, http),
            Start::Exited { status, stderr } => panic!("{what}: popline exited ({status}): {stderr}"),
        }
    }
}

/// Starts popline on `config` (written to `dir/NAME.toml`) with `args`; the log goes to `dir/NAME.log`.
fn start(dir: &Path, name: &str, config: &str, args: &[&str]) -> Start {
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, config).unwrap();
    let log = dir.join(format!("{name}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_popline"))
        .arg("--config")
        .arg(&config_path)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let rx = ready_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
            return Start::Ready {
                child: Node(child),
                rtmp: ready_field(&line, "rtmp").unwrap().parse().unwrap(),
                http: ready_field(&line, "admin").and_then(|h| h.parse().ok()),
            };
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Start::Exited {
                status,
                stderr: std::fs::read_to_string(&log).unwrap_or_default(),
            };
        }
        assert!(Instant::now() < deadline, "popline neither started nor exited");
    }
}

fn config(rtmp: &str, http: &str, token: Option<&str>, bans: &Path) -> String {
    let token = token.map_or(String::new(), |t| format!("token = \"{t}\"\n"));
    format!(
        "[rtmp]\nlisten = \"{rtmp}\"\n[admin]\nlisten = \"{http}\"\n{token}[egress]\nlisten = \"127.0.0.1:0\"\n[engine]\ncores = 2\n\
         [bans]\npath = \"{}\"\n",
        bans.display()
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stop(node: Node) {
    drop(node);
}

/// Item 19: the cores share their port with SO_REUSEPORT, and so would a second popline, silently taking half
/// of the new connections. It must refuse to start, naming the port.
#[test]
fn a_second_node_on_the_same_port_refuses_to_start() {
    let scratch = Scratch::new("second-node");
    let port = free_port();
    let rtmp = format!("127.0.0.1:{port}");
    let first = start(
        &scratch.0,
        "first",
        &config(&rtmp, "127.0.0.1:0", Some("t"), &scratch.path("a.json")),
        &[],
    );
    let (mut first, _, first_http) = first.ready("the first node");

    let second = start(
        &scratch.0,
        "second",
        &config(&rtmp, "127.0.0.1:0", Some("t"), &scratch.path("b.json")),
        &[],
    );
    let (status, stderr) = second.exited("a second node on the same RTMP port");
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("RTMP port {port} is already in use")) && stderr.contains("another popline"),
        "the error names the port and the likely cause: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");

    // The admin port too.
    let http = first_http.unwrap();
    let third = start(
        &scratch.0,
        "third",
        &config(
            "127.0.0.1:0",
            &http.to_string(),
            Some("t"),
            &scratch.path("c.json"),
        ),
        &[],
    );
    let (status, stderr) = third.exited("a second node on the same HTTP port");
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("admin HTTP port {} is already in use", http.port())),
        "{stderr}"
    );
    assert!(
        matches!(first.0.try_wait(), Ok(None)),
        "the first node keeps running"
    );
    stop(first);
}

/// Item 14: an admin API that other machines can reach must have a token.
#[test]
fn an_admin_api_open_to_the_network_needs_a_token() {
    let scratch = Scratch::new("open-admin");
    let open = start(
        &scratch.0,
        "open",
        &config("127.0.0.1:0", "0.0.0.0:0", None, &scratch.path("bans.json")),
        &[],
    );
    let (status, stderr) = open.exited("an admin API on 0.0.0.0 without a token");
    assert!(!status.success());
    assert!(
        stderr.contains("admin.token") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );
    // With a token (here from the flag, by its old name, which still works) it starts; on loopback no
    // token is needed.
    let (child, _, _) = start(
        &scratch.0,
        "tokened",
        &config("127.0.0.1:0", "0.0.0.0:0", None, &scratch.path("bans.json")),
        &["--http-token", "s3cret"],
    )
    .ready("0.0.0.0 with a token");
    stop(child);
}

/// Item 20: `popline 2>&1 | head -3`: once the reader of its output goes, the node must keep serving.
#[test]
fn a_closed_log_pipe_does_not_end_the_node() {
    let scratch = Scratch::new("closed-pipe");
    let config_path = scratch.path("pop.toml");
    std::fs::write(
        &config_path,
        config(
            "127.0.0.1:0",
            "127.0.0.1:0",
            Some("t"),
            &scratch.path("bans.json"),
        ),
    )
    .unwrap();
    let mut child = Node(
        Command::new(env!("CARGO_BIN_EXE_popline"))
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    let http: SocketAddr = ready
        .split_whitespace()
        .find_map(|part| part.strip_prefix("admin="))
        .unwrap()
        .parse()
        .unwrap();
    // Read the how-to lines too, then hang up on both pipes, as `head` does.
    let mut rest = String::new();
    stdout.read_line(&mut rest).unwrap();
    stdout.read_line(&mut rest).unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let mut log = [0u8; 4096];
    let _ = stderr.read(&mut log).unwrap();
    drop(stdout);
    drop(stderr);
    // Make it log: API requests, a forbid, RTMP connections.
    for _ in 0..3 {
        let (status, body) = http_request(
            http,
            "POST",
            "/api/v1/streams/live/cam/forbid",
            Some(r#"{"duration_s": 60, "reason": "log me"}"#),
            Some("t"),
        );
        assert_eq!(status, 200, "{body}");
        let _ = http_request(http, "GET", "/api/v1/nope", None, Some("t"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let exited = child.0.try_wait().unwrap();
    let alive = exited.is_none();
    let (health, _) = if alive {
        http_request(http, "GET", "/healthz", None, None)
    } else {
        (0, String::new())
    };
    stop(child);
    assert!(alive, "popline died once its output pipes closed: {exited:?}");
    assert_eq!(health, 200);
}

/// Item 15: a bans path that cannot be written is found at start, not at the first forbid.
#[test]
fn a_bans_path_that_cannot_be_written_stops_the_start() {
    let scratch = Scratch::new("bad-bans-path");
    let path = scratch.0.join("no-such-dir").join("bans.json");
    let (status, stderr) = start(
        &scratch.0,
        "pop",
        &config("127.0.0.1:0", "127.0.0.1:0", Some("t"), &path),
        &[],
    )
    .exited("a bans path in a missing directory");
    assert!(!status.success());
    assert!(
        stderr.contains("no-such-dir") && stderr.contains("bans.path"),
        "the error names the path and the setting: {stderr}"
    );
}

/// Items 15 and 22: a ban whose file cannot be written still takes the stream down at once, and says so
/// (answer, log, metric, health) until a retry writes it; the log and the API show readable times.
#[test]
fn a_ban_that_cannot_be_saved_still_takes_the_stream_down() {
    let scratch = Scratch::new("unsaved-ban");
    let state = scratch.0.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let (child, rtmp, http) = start(
        &scratch.0,
        "pop",
        &config("127.0.0.1:0", "127.0.0.1:0", Some("t"), &state.join("bans.json")),
        &[],
    )
    .ready("a writable bans path");
    let http = http.unwrap();
    let api =
        |method: &str, path: &str, body: Option<&str>| http_request(http, method, path, body, Some("t"));
    std::fs::remove_dir_all(&state).unwrap();

    let (status, body) = api(
        "POST",
        "/api/v1/streams/live/cam/forbid",
        Some(r#"{"duration_s": 600, "reason": "disk gone"}"#),
    );
    assert_eq!(
        status, 200,
        "the ban applies even when it cannot be saved: {body}"
    );
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["saved"], false, "{body}");
    assert_eq!(answer["ban"]["remaining_s"], 600, "{body}");
    assert!(answer["ban"]["until"].as_str().unwrap().ends_with('Z'), "{body}");
    let mut client = rtmp_client::Client::connect(rtmp, "live", None);
    assert!(!client.try_publish("cam"), "the unsaved ban refuses publishing");
    let (status, health) = http_request(http, "GET", "/healthz", None, None);
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("bans not saved"), "{health}");
    let (_, metrics) = api("GET", "/metrics", None);
    assert!(metrics.contains("popline_bans_unsaved 1"), "{metrics}");
    let log = std::fs::read_to_string(scratch.path("pop.log")).unwrap();
    assert!(
        log.contains("ERROR") && log.contains("cannot be written"),
        "{log}"
    );
    assert!(
        log.contains("until=20") && log.contains("remaining_s=600") && !log.contains("=Some("),
        "readable times in the log: {log}"
    );

    // The disk comes back: a retry writes the ban and the node is healthy again.
    std::fs::create_dir_all(&state).unwrap();
    assert!(
        wait_until(Duration::from_secs(8), || http_request(
            http, "GET", "/healthz", None, None
        )
        .0 == 200),
        "the ban file was not written again"
    );
    let saved = std::fs::read_to_string(state.join("bans.json")).unwrap();
    assert!(
        saved.contains("live/cam") && saved.contains("disk gone"),
        "{saved}"
    );
    stop(child);
}

/// Item 25: `GET /api/v1/streams` says what a stream carries: codecs, picture size, frame rate, bitrate;
/// `/metrics` has the process's CPU and memory.
#[test]
fn streams_show_codecs_resolution_and_bitrate() {
    let scratch = Scratch::new("stream-media");
    let (node, rtmp, http) = start(
        &scratch.0,
        "pop",
        &config(
            "127.0.0.1:0",
            "127.0.0.1:0",
            Some("t"),
            &scratch.path("bans.json"),
        ),
        &[],
    )
    .ready("the node");
    let http = http.unwrap();
    let mut publisher = common::publish(
        &common::media("h264-aac-360p25-baseline.flv"),
        &format!("rtmp://{rtmp}/live/cam"),
    );
    let mut stream = serde_json::Value::Null;
    let described = wait_until(Duration::from_secs(15), || {
        let (_, body) = http_request(http, "GET", "/api/v1/streams", None, Some("t"));
        stream = serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()[0].clone();
        stream["bitrate_kbps"].as_u64().is_some_and(|kbps| kbps > 0)
    });
    let (_, metrics) = http_request(http, "GET", "/metrics", None, Some("t"));
    let _ = publisher.kill();
    let _ = publisher.wait();
    drop(node);
    assert!(described, "no bitrate: {stream}");
    assert_eq!(stream["video_codec"], "h264", "{stream}");
    assert_eq!(stream["audio_codec"], "aac", "{stream}");
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(640), Some(360)),
        "{stream}"
    );
    assert_eq!(stream["frame_rate"].as_f64(), Some(25.0), "{stream}");
    let kbps = stream["bitrate_kbps"].as_u64().unwrap();
    assert!((200..5_000).contains(&kbps), "{stream}");
    for name in [
        "popline_process_cpu_seconds_total",
        "popline_process_resident_memory_bytes",
        "popline_stream_bitrate_kbps{stream=\"live/cam\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}
