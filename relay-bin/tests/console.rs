//! The moderation console in a real browser: Debian's headless Chromium driven over WebDriver (Debian's
//! chromium-driver; the client is the few HTTP+JSON calls below). ffmpeg publishes the 720p sample into the
//! real `popline`; the test signs in with the admin token, sees the stream on the wall with its snapshot,
//! watches it (hls.js plays it from the egress port), forbids it through the confirmation dialog (the
//! publisher is kicked and the stream leaves the wall, the ban is listed), checks the phone-sized layout and
//! lifts the ban. Screenshots of the page are kept in `target/tmp/console-*.png` as the run's artifacts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{json, Value};

const SETUP_HINT: &str = "run scripts/setup.sh (it installs Debian's chromium and chromium-driver)";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver and one browser session.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One WebDriver call: (HTTP status, JSON body). The answer is read by its `Content-Length` (chromedriver
/// keeps connections open).
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 65536];
    let (head_end, length) = loop {
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break (response.len(), None);
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..at]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            break (at + 4, length);
        }
    };
    if let Some(length) = length {
        while response.len() < head_end + length {
            let n = stream.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
        }
    }
    let head = String::from_utf8_lossy(&response[..head_end.min(response.len())]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.get(head_end..).unwrap_or_default();
    (status, serde_json::from_slice(body).unwrap_or(Value::Null))
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver ({e}): {SETUP_HINT}"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || TcpStream::connect(addr).is_ok()
                && call(addr, "GET", "/status", None).1["value"]["ready"] == true),
            "chromedriver is not ready"
        );
        let chromium = std::env::var("POPLINE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,960", "--autoplay-policy=no-user-gesture-required",
                         "--no-first-run", "--disable-extensions"]
            }
        }}});
        let (status, answer) = call(addr, "POST", "/session", Some(&capabilities));
        assert_eq!(status, 200, "a browser session: {answer}");
        let session = answer["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            driver,
            addr,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = call(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        );
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT].as_str().unwrap().to_string()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Polls `script` (a JS expression's `return`) until it is `true`.
    fn until(&self, what: &str, limit: Duration, script: &str) {
        let deadline = Instant::now() + limit;
        loop {
            if self.js(script) == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let status = self.js("return document.getElementById('status').textContent");
                self.screenshot("failure");
                panic!("{what}: not within {limit:?} (console status: {status})");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Saves a screenshot as `target/tmp/console-NAME.png`; returns its path.
    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("console-{name}.png"));
        std::fs::write(&path, &bytes).unwrap();
        println!("screenshot: {} ({} bytes)", path.display(), bytes.len());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = call(self.addr, "DELETE", &format!("/session/{}", self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn a_moderator_sees_the_stream_watches_it_and_forbids_it() {
    let scratch = Scratch::new("console");
    let node = Popline::start(&scratch.0, &base_config(&scratch.0));
    let mut publisher = publish(&media("h264-aac-720p30-bframes.flv"), &node.url("live/cam"));
    let browser = Browser::start();
    let console = format!("http://{}/console", node.http.unwrap());

    // Sign in with the admin token.
    browser.go(&console);
    browser.until(
        "the sign-in form",
        Duration::from_secs(10),
        "return !document.getElementById('login').hidden",
    );
    browser.type_into("#token", "test-token");
    browser.click("#login-go");
    browser.until(
        "the console",
        Duration::from_secs(10),
        "return !document.getElementById('console').hidden",
    );

    // The wall shows the stream with its snapshot (a decoded JPEG in an <img>).
    let card = "document.querySelector('#wall .card[data-stream=\"live/cam\"]')";
    browser.until(
        "the stream's card with its snapshot",
        Duration::from_secs(30),
        &format!("const c = {card}; const i = c && c.querySelector('img'); return !!i && i.complete && i.naturalWidth === 480"),
    );
    let meta = browser.js(&format!("return {card}.querySelector('.meta').textContent"));
    println!("card: {meta}");
    assert!(meta.as_str().unwrap().contains("1280x720"), "{meta}");

    // Watch it: hls.js plays it from the egress port.
    browser.click("#wall .card[data-stream=\"live/cam\"] .watch");
    browser.until(
        "the player playing",
        Duration::from_secs(40),
        "const v = document.getElementById('player-video'); return v.readyState >= 2 && v.currentTime > 1 && v.videoWidth === 1280",
    );
    let artifact = browser.screenshot("wall-and-player");
    assert!(std::fs::metadata(&artifact).unwrap().len() > 10_000);
    browser.click("#player-close");

    // A phone-sized screen: one column, nothing wider than the screen.
    browser.call("POST", "/window/rect", Some(json!({"width": 390, "height": 844})));
    browser.until(
        "one column, no sideways scrolling",
        Duration::from_secs(5),
        "return getComputedStyle(document.getElementById('wall')).gridTemplateColumns.split(' ').length === 1 \
         && document.documentElement.scrollWidth <= window.innerWidth",
    );
    browser.screenshot("phone");
    browser.call(
        "POST",
        "/window/rect",
        Some(json!({"width": 1280, "height": 960})),
    );

    // Forbid it: confirm in the dialog; the publisher is kicked and the stream leaves the wall.
    browser.click("#wall .card[data-stream=\"live/cam\"] .forbid");
    browser.until(
        "the dialog",
        Duration::from_secs(5),
        "return document.getElementById('forbid-dialog').open",
    );
    browser.type_into("#forbid-reason", "console test");
    browser.screenshot("forbid-dialog");
    let forbidden_at = Instant::now();
    browser.click("#forbid-confirm");
    assert!(
        wait_until(Duration::from_secs(5), || matches!(
            publisher.try_wait(),
            Ok(Some(_))
        )),
        "the publisher is kicked"
    );
    println!("publisher gone {:?} after the click", forbidden_at.elapsed());
    browser.until(
        "the stream leaves the wall",
        Duration::from_secs(10),
        &format!("return {card} === null"),
    );
    browser.until(
        "the ban is listed",
        Duration::from_secs(10),
        "return !!document.querySelector('#bans tr[data-stream=\"live/cam\"]')",
    );
    browser.screenshot("forbidden");
    let (_, bans) = node.api("GET", "/api/v1/bans", None);
    assert!(bans.contains("console test"), "{bans}");

    // Lift the ban from the list.
    browser.click("#bans tr[data-stream=\"live/cam\"] .unforbid");
    browser.until(
        "the ban is lifted",
        Duration::from_secs(10),
        "return !document.querySelector('#bans tr[data-stream=\"live/cam\"]')",
    );
    let (_, bans) = node.api("GET", "/api/v1/bans", None);
    assert_eq!(bans.trim(), "[]");
}

#[test]
fn the_console_files_need_no_token_and_its_data_does() {
    let scratch = Scratch::new("console-auth");
    let node = Popline::start(&scratch.0, &base_config(&scratch.0));
    let api = node.http.unwrap();
    for path in [
        "/console",
        "/console/console.js",
        "/console/console.css",
        "/console/hls.light.min.js",
    ] {
        let (status, body) = http_request(api, "GET", path, None, None);
        assert_eq!(status, 200, "{path}");
        assert!(!body.is_empty());
    }
    assert_eq!(http_request(api, "GET", "/api/v1/console", None, None).0, 401);
    let (status, body) = node.api("GET", "/api/v1/console", None);
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["egress_port"], node.egress.unwrap().port());
}
