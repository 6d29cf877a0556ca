//! Forbid: the admin API kicks a stream's publisher and viewers at once, refuses them while the ban lasts,
//! and the ban survives a kill -9.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn forbid_kicks_both_sides_refuses_again_and_survives_kill_9() {
    let scratch = Scratch::new("forbid");
    let config = base_config(&scratch.0);
    let node = Popline::start(&scratch.0, &config);
    let url = node.url("live/banned");
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &url);
    // Waits on the node's word, not a fixed sleep: ffmpeg can take seconds to start on a loaded machine.
    let stream_state = |node: &Popline, key: &str| -> (bool, u64) {
        let (_, body) = node.api("GET", "/api/v1/streams", None);
        let streams: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        streams
            .as_array()
            .and_then(|a| a.iter().find(|s| s["stream"] == key))
            .map_or((false, 0), |s| {
                (!s["publisher"].is_null(), s["viewers"].as_u64().unwrap_or(0))
            })
    };
    assert!(
        wait_until(Duration::from_secs(20), || stream_state(&node, "live/banned").0),
        "the publisher never went live"
    );
    let mut viewers: Vec<_> = (0..4)
        .map(|_| {
            let mut client = rtmp_client::Client::connect(node.rtmp, "live", None);
            client.play("banned");
            client
        })
        .collect();
    // Another stream on the same node is not touched by the ban.
    let other_url = node.url("live/other");
    let other_publisher = publish(&media("h264-aac-360p25-baseline.flv"), &other_url);
    assert!(
        wait_until(Duration::from_secs(20), || {
            stream_state(&node, "live/banned") == (true, 4) && stream_state(&node, "live/other").0
        }),
        "the 4 viewers and the other publisher never showed"
    );

    let asked = Instant::now();
    let (status, body) = node.api(
        "POST",
        "/api/v1/streams/live/banned/forbid",
        Some(r#"{"permanent":true,"reason":"test ban"}"#),
    );
    let answered = asked.elapsed();
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["kicked"].as_u64().unwrap() >= 5,
        "publisher and 4 viewers kicked: {body}"
    );
    for viewer in &mut viewers {
        assert!(
            viewer.closed_within(Duration::from_millis(200)),
            "a viewer was not kicked"
        );
    }
    let all_closed = asked.elapsed();
    let (publisher_done, _) = wait(publisher, Duration::from_secs(5));
    assert!(!publisher_done, "the kicked ffmpeg publisher must fail");
    println!("forbid answered in {answered:?}; all viewers closed {all_closed:?} after the request");

    // While banned: publish and play are refused.
    let mut again = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(!again.try_publish("banned"), "re-publish must be refused");
    // The refusal reaches the client before the connection closes (on io_uring, the default backend: the
    // connection is closed only once its last bytes are written).
    let mut refused = rtmp_client::Client::connect(node.rtmp, "live", None);
    let answer = refused.publish_until_closed("banned");
    assert!(
        answer.contains("NetStream.Publish.Rejected") && answer.contains("forbidden"),
        "no refusal before the close: {answer:?}"
    );
    let (status, bans) = node.api("GET", "/api/v1/bans", None);
    assert_eq!(status, 200);
    assert!(
        bans.contains("live/banned") && bans.contains("test ban"),
        "{bans}"
    );

    // The other stream kept going.
    let (other_ok, err) = wait(other_publisher, Duration::from_secs(30));
    assert!(other_ok, "the other stream's publisher failed: {err}");

    // kill -9 and restart on the same bans file: still refused.
    let config_path = node.config.clone();
    node.kill9();
    let node = Popline::start_with_file(&scratch.0, &config_path);
    let mut after_restart = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(
        !after_restart.try_publish("banned"),
        "the ban must survive kill -9"
    );

    // Lifted: publishing works again.
    let (status, body) = node.api("DELETE", "/api/v1/streams/live/banned/forbid", None);
    assert_eq!(status, 200, "{body}");
    let mut lifted = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(
        lifted.try_publish("banned"),
        "unforbid must allow publishing again"
    );
}

#[test]
fn a_timed_ban_expires_and_the_api_needs_the_token() {
    let scratch = Scratch::new("timed-ban");
    let node = Popline::start(&scratch.0, &base_config(&scratch.0));
    let (status, _) = http_request(node.http.unwrap(), "GET", "/api/v1/streams", None, None);
    assert_eq!(status, 401, "no token must be refused");
    let (status, _) = http_request(node.http.unwrap(), "GET", "/api/v1/streams", None, Some("wrong"));
    assert_eq!(status, 401, "a wrong token must be refused");
    let (status, body) = node.api(
        "POST",
        "/api/v1/streams/live/short/forbid",
        Some(r#"{"duration_s":1}"#),
    );
    assert_eq!(status, 200, "{body}");
    let mut client = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(!client.try_publish("short"));
    std::thread::sleep(Duration::from_millis(1_300));
    let mut client = rtmp_client::Client::connect(node.rtmp, "live", None);
    assert!(client.try_publish("short"), "an expired ban must not refuse");
    let (status, metrics) = node.api("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("popline_requests_refused_total") || metrics.contains("popline_"),
        "{metrics}"
    );
}
