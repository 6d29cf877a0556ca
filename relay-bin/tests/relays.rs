//! Static relays against a real nginx-rtmp, both ways: a stream published to popline is pushed to nginx-rtmp
//! and plays from there; a stream published to nginx-rtmp is pulled by popline and plays from popline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// nginx with the RTMP module, configured as its docs configure live streaming (`live on`), on loopback.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &Path) -> Nginx {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let config = format!(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\ndaemon off;\nmaster_process off;\n\
             pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
             rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n    chunk_size 4096;\n    \
             application live {{\n      live on;\n    }}\n  }}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx with the RTMP module must be installed (scripts/setup.sh installs it)");
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "nginx-rtmp did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        Nginx { child, port }
    }

    fn url(&self, app_stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app_stream}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Decodes `file` up to `tail` before its end; returns ffmpeg's error output.
fn decode_errors_before_tail(file: &Path, tail: f64) -> String {
    let duration = duration_s(file).unwrap_or(0.0);
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(file)
        .args([
            "-t",
            &format!("{:.3}", (duration - tail).max(0.0)),
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Checks what a player recorded; frames in the last `tail` seconds are not decoded (nginx-rtmp cuts short
/// the frame it is sending to its players when their publisher leaves: ffmpeg publishing to it straight
/// shows the same).
fn check_played(out: &Path, err: &str, min_video: usize, tail: f64) {
    let got = probe(out);
    println!("{}: {got:?}", out.display());
    assert_eq!(got.video_codec, "h264", "{err}");
    assert_eq!(got.audio_codec, "aac");
    assert!(got.first_video_is_key, "the first video frame is a keyframe");
    assert!(got.monotonic);
    assert!(
        got.video_packets >= min_video,
        "{} video frames",
        got.video_packets
    );
    let errors = if tail > 0.0 {
        decode_errors_before_tail(out, tail)
    } else {
        decode_errors(out)
    };
    assert!(errors.is_empty(), "every frame decodes: {errors}");
}

#[test]
fn a_stream_published_to_popline_is_pushed_to_nginx_rtmp_and_plays_there() {
    let scratch = Scratch::new("relay-push");
    let nginx_dir = scratch.path("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = Nginx::start(&nginx_dir);
    let mut config = base_config(&scratch.0);
    config.push_str(&format!(
        "[[relays.push]]\napp = \"live\"\nurl = \"rtmp://127.0.0.1:{}/live\"\n",
        nginx.port
    ));
    let node = Popline::start(&scratch.0, &config);
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &node.url("live/pushed"));
    assert!(
        wait_until(Duration::from_secs(20), || node
            .log_text()
            .contains("static push connected")),
        "the push never connected:\n{}",
        node.log_text()
    );
    // nginx-rtmp keeps no GOP: its player starts at the next keyframe (every 2 s).
    let out = scratch.path("from-nginx.flv");
    let player = play(&nginx.url("live/pushed"), &out);
    let (published, err) = wait(publisher, Duration::from_secs(40));
    assert!(published, "ffmpeg publish failed: {err}");
    // nginx-rtmp keeps its players connected after the publisher left: stop ours as a user would (SIGINT:
    // ffmpeg writes out what it has).
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(player.id().to_string())
        .status();
    let (_, err) = wait(player, Duration::from_secs(15));
    check_played(&out, &err, 400, 1.0);
    assert!(node.log_text().contains("static push ended with the stream"));
}

#[test]
fn a_stream_published_to_nginx_rtmp_is_pulled_by_popline_and_plays_from_it() {
    let scratch = Scratch::new("relay-pull");
    let nginx_dir = scratch.path("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = Nginx::start(&nginx_dir);
    let mut config = base_config(&scratch.0);
    config.push_str(&format!(
        "[[relays.pull]]\nurl = \"{}\"\nstream = \"live/pulled\"\n",
        nginx.url("live/origin")
    ));
    let node = Popline::start(&scratch.0, &config);
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &nginx.url("live/origin"));
    let live = || {
        let (_, body) = node.api("GET", "/api/v1/streams", None);
        let streams: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        streams.as_array().is_some_and(|a| {
            a.iter().any(|s| {
                s["stream"] == "live/pulled" && !s["publisher"].is_null() && s["frames_in"].as_u64() > Some(0)
            })
        })
    };
    assert!(
        wait_until(Duration::from_secs(20), live),
        "popline never published the pulled stream:\n{}",
        node.log_text()
    );
    let out = scratch.path("from-popline.flv");
    let player = play(&node.url("live/pulled"), &out);
    let (published, err) = wait(publisher, Duration::from_secs(40));
    assert!(published, "ffmpeg publish to nginx failed: {err}");
    let (played, err) = wait(player, Duration::from_secs(15));
    assert!(
        played,
        "the player at popline ends with the origin's stream: {err}"
    );
    check_played(&out, &err, 400, 0.0);
    assert!(
        wait_until(Duration::from_secs(5), || node
            .log_text()
            .contains("the origin's publisher stopped")),
        "the pull saw the origin's stream end:\n{}",
        node.log_text()
    );
}
