//! Publish authorisation: HMAC tokens with expiry in the stream URL, and the on_publish HTTP callback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use relay::auth::sign_publish;
use relay::stream_key::StreamKey;

/// A tiny on_publish endpoint: 403 for the stream "denied", 200 otherwise. Counts calls.
fn hook_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read headers and the JSON body (Content-Length is small; one or two reads).
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
            }
            let text = String::from_utf8_lossy(&request);
            let status = if text.contains("\"stream\":\"denied\"") {
                "403 Forbidden"
            } else {
                "200 OK"
            };
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
            );
        }
    });
    (addr, calls)
}

#[test]
fn publish_needs_a_valid_token_and_the_hooks_consent() {
    let scratch = Scratch::new("auth");
    let (hook, calls) = hook_server();
    let config = format!(
        "{}[auth]\npublish_secret = \"s3cret\"\non_publish = \"http://{hook}/on_publish\"\non_publish_timeout_ms = 2000\n",
        base_config(&scratch.0)
    );
    let node = Popline::start(&scratch.0, &config);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token_for = |stream: &str, expires: u64| {
        sign_publish(b"s3cret", &StreamKey::new("live", stream).unwrap(), expires)
    };

    let mut client = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(!client.try_publish("allowed"), "no token must be refused");
    let mut client = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(
        !client.try_publish(&format!("allowed?{}", token_for("allowed", now - 10))),
        "expired token"
    );
    let mut client = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(
        !client.try_publish(&format!("allowed?{}", token_for("other", now + 60))),
        "token of another stream"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the hook is asked only after the token checks out"
    );

    let mut client = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(
        client.try_publish(&format!("allowed?{}", token_for("allowed", now + 60))),
        "valid token + hook 200"
    );
    let mut denied = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(
        !denied.try_publish(&format!("denied?{}", token_for("denied", now + 60))),
        "hook 403 must refuse"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let log = node.log_text();
    assert!(
        log.contains("refused by on_publish"),
        "the log must say why: {log}"
    );
    assert!(log.contains("not authorised"), "{log}");
    drop(client);
}
