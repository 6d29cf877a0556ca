//! The PoP mesh between real `popline` processes on loopback: a stream published to PoP A crosses to its
//! home B and on to PoP C, where ffmpeg plays and decodes it; a forbid on C stops the publisher on A.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Writes a key pair for a node into `dir/NAME.key`; returns its public key.
fn keygen(dir: &Path, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_popline"))
        .arg("keygen")
        .arg("--out")
        .arg(dir.join(format!("{name}.key")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A free UDP port on loopback (bound and released: the node binds it right after).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct MeshNode {
    id: &'static str,
    port: u16,
    public_key: String,
}

/// The config of node `me` in a full mesh of `nodes`, where the streams of app `live` have their home on
/// `origins` (TOML list items, e.g. `"b"`).
fn mesh_config(dir: &Path, me: &MeshNode, nodes: &[MeshNode], origins: &str) -> String {
    let node_dir = dir.join(me.id);
    std::fs::create_dir_all(&node_dir).unwrap();
    // Viewers wait up to 3 s for a stream that stopped arriving (a failover takes under a second). Links
    // are declared down after 600 ms of silence (the default is 800 ms), leaving the failover test a margin
    // for a loaded machine.
    let mut config = base_config(&node_dir).replace("unpublish_grace_ms = 300", "unpublish_grace_ms = 3000");
    config.push_str(&format!(
        "[mesh]\nid = \"{}\"\nlisten = \"127.0.0.1:{}\"\nkey_file = \"{}\"\nframe_budget_ms = 2000\nlink_timeout_ms = 600\n\
         [mesh.app_origins]\nlive = [{origins}]\n",
        me.id,
        me.port,
        dir.join(format!("{}.key", me.id)).display()
    ));
    for peer in nodes.iter().filter(|n| n.id != me.id) {
        config.push_str(&format!(
            "[[mesh.peers]]\nid = \"{}\"\naddr = \"127.0.0.1:{}\"\npublic_key = \"{}\"\n",
            peer.id, peer.port, peer.public_key
        ));
    }
    config
}

/// Three nodes `a`, `b`, `c` in a full mesh, app `live` homed on `origins`.
fn three_nodes(scratch: &Scratch, origins: &str) -> (Popline, Popline, Popline) {
    let nodes: Vec<MeshNode> = ["a", "b", "c"]
        .into_iter()
        .map(|id| MeshNode {
            id,
            port: free_udp_port(),
            public_key: keygen(&scratch.0, id),
        })
        .collect();
    let start = |i: usize| {
        let config = mesh_config(&scratch.0, &nodes[i], &nodes, origins);
        Popline::start(&scratch.0.join(nodes[i].id), &config)
    };
    let (a, b, c) = (start(0), start(1), start(2));
    assert!(
        wait_until(Duration::from_secs(10), || {
            links_up(&a) == 2 && links_up(&b) == 2 && links_up(&c) == 2
        }),
        "the links never all came up:\nA: {}\nB: {}\nC: {}",
        a.api("GET", "/api/v1/links", None).1,
        b.api("GET", "/api/v1/links", None).1,
        c.api("GET", "/api/v1/links", None).1
    );
    (a, b, c)
}

fn links_up(node: &Popline) -> usize {
    let (_, body) = node.api("GET", "/api/v1/links", None);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    body["links"]
        .as_array()
        .map_or(0, |links| links.iter().filter(|l| l["state"] == "up").count())
}

/// The stream's entry in the node's `GET /api/v1/streams`, if listed.
fn stream(node: &Popline, key: &str) -> Option<serde_json::Value> {
    let (_, body) = node.api("GET", "/api/v1/streams", None);
    let streams: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    streams
        .as_array()
        .and_then(|a| a.iter().find(|s| s["stream"] == key).cloned())
}

#[test]
fn a_stream_crosses_three_pops_and_a_forbid_on_the_edge_stops_the_publisher_at_the_origin() {
    let scratch = Scratch::new("mesh");
    let (a, b, c) = three_nodes(&scratch, "\"b\"");

    // Published at A, home B (the only origin of app `live`), played at C: two hops.
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &a.url("live/shop"));
    assert!(
        wait_until(Duration::from_secs(20), || stream(&a, "live/shop")
            .is_some_and(|s| !s["publisher"].is_null())),
        "the publisher never went live at A"
    );
    let out = scratch.path("played-at-c.flv");
    let player = play(&c.url("live/shop"), &out);
    assert!(
        wait_until(Duration::from_secs(10), || stream(&c, "live/shop")
            .is_some_and(|s| s["origin"] == "a" && s["viewers"] == 1)),
        "C never got the stream from A: {:?}\nC's log:\n{}",
        stream(&c, "live/shop"),
        c.log_text()
    );
    let at_c = stream(&c, "live/shop").unwrap();
    assert_eq!(at_c["hops"], 2, "A -> B -> C: {at_c}");
    assert_eq!(at_c["home"], "b", "{at_c}");
    let at_b = stream(&b, "live/shop").unwrap();
    assert_eq!(
        (at_b["origin"].as_str(), at_b["hops"].as_u64()),
        (Some("a"), Some(1)),
        "{at_b}"
    );
    let (_, links) = c.api("GET", "/api/v1/links", None);
    println!("C's links while playing: {links}");

    // The publisher's file ends (20 s); the end crosses the mesh and the player at C ends too.
    let (published, err) = wait(publisher, Duration::from_secs(40));
    assert!(published, "ffmpeg publish failed: {err}");
    let (_, err) = wait(player, Duration::from_secs(15));
    let got = probe(&out);
    println!("played at C through B: {got:?}");
    assert_eq!(got.video_codec, "h264", "{err}");
    assert_eq!((got.width, got.height), (1280, 720));
    assert!(
        got.first_video_is_key,
        "the edge's first video frame is a keyframe"
    );
    assert!(got.monotonic, "timestamps go forward");
    // The player joined a second or two after the publisher started; the rest of the 600 frames arrive.
    assert!(
        got.video_packets >= 400,
        "{} video frames at C",
        got.video_packets
    );
    assert!(got.audio_packets > 0);
    let errors = decode_errors(&out);
    assert!(errors.is_empty(), "every frame at C decodes: {errors}");

    // Forbid at the edge C: the publisher at A is kicked, and A and B hold the ban.
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &a.url("live/unlawful"));
    assert!(
        wait_until(Duration::from_secs(20), || stream(&a, "live/unlawful")
            .is_some_and(|s| !s["publisher"].is_null())),
        "the second publisher never went live at A"
    );
    let viewer_out = scratch.path("unlawful-at-c.flv");
    let viewer = play(&c.url("live/unlawful"), &viewer_out);
    assert!(
        wait_until(Duration::from_secs(10), || stream(&c, "live/unlawful")
            .is_some_and(|s| s["viewers"] == 1)),
        "C never served the second stream"
    );
    let asked = Instant::now();
    let (status, body) = c.api(
        "POST",
        "/api/v1/streams/live/unlawful/forbid",
        Some(r#"{"permanent":true,"reason":"unlawful"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let kicked_at_a = wait_until(Duration::from_secs(5), || {
        stream(&a, "live/unlawful").is_none_or(|s| s["publisher"].is_null())
    });
    let took = asked.elapsed();
    assert!(
        kicked_at_a,
        "A's publisher was not kicked; A's log:\n{}",
        a.log_text()
    );
    println!("forbid at C stopped the publisher at A {took:?} after the request");
    assert!(took < Duration::from_secs(1), "forbid propagation took {took:?}");
    for (name, node) in [("A", &a), ("B", &b)] {
        let (_, bans) = node.api("GET", "/api/v1/bans", None);
        assert!(bans.contains("live/unlawful"), "{name} holds the ban: {bans}");
    }
    let (publisher_done, _) = wait(publisher, Duration::from_secs(5));
    assert!(!publisher_done, "the kicked publisher fails");
    let _ = wait(viewer, Duration::from_secs(5));
    // A refuses the stream from now on.
    let mut again = common::rtmp_client::Client::connect(a.rtmp, "live", None);
    assert!(
        !again.try_publish("unlawful"),
        "A refuses a new publish of the banned stream"
    );

    // Lifted at B: every node lifts it, and A takes the stream again.
    let (status, body) = b.api("DELETE", "/api/v1/streams/live/unlawful/forbid", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        wait_until(Duration::from_secs(2), || {
            [&a, &c]
                .iter()
                .all(|n| !n.api("GET", "/api/v1/bans", None).1.contains("live/unlawful"))
        }),
        "the lift at B did not reach A and C within 2 s; A's log:\n{}\nB's log:\n{}\nC's log:\n{}",
        a.log_text(),
        b.log_text(),
        c.log_text()
    );
    let mut again = common::rtmp_client::Client::connect(a.rtmp, "live", None);
    assert!(
        again.try_publish("unlawful"),
        "A takes the stream again once the ban is lifted"
    );
}

#[test]
fn when_the_home_dies_the_edge_resumes_within_a_second_and_every_frame_decodes() {
    use relay::mesh::placement::{home_among, Origin};
    let scratch = Scratch::new("mesh-failover");
    let (a, b, c) = three_nodes(&scratch, "\"a\", \"b\", \"c\"");
    // A stream whose home is B among the three; A publishes it, C plays it.
    let origins = [Origin::new("a"), Origin::new("b"), Origin::new("c")];
    let name = (0..1000)
        .map(|i| format!("shop{i}"))
        .find(|n| home_among(&format!("live/{n}"), &origins, |_| true).is_some_and(|o| o.id == "b"))
        .unwrap();
    let key = format!("live/{name}");
    let next = home_among(&key, &origins, |o| o.id != "b").unwrap().id.clone();
    let publisher = publish(&media("h264-aac-720p30-bframes.flv"), &a.url(&key));
    assert!(
        wait_until(Duration::from_secs(20), || stream(&a, &key)
            .is_some_and(|s| !s["publisher"].is_null())),
        "the publisher never went live at A"
    );
    let out = scratch.path("played-at-c.flv");
    let player = play(&c.url(&key), &out);
    assert!(
        wait_until(Duration::from_secs(10), || stream(&c, &key)
            .is_some_and(|s| s["hops"] == 2 && s["viewers"] == 1)),
        "C never got the stream through B: {:?}",
        stream(&c, &key)
    );
    std::thread::sleep(Duration::from_secs(3));

    // SIGKILL the home. C's viewer stays connected; the stream comes back through the next home.
    let frames_in = |node: &Popline| {
        stream(node, &key)
            .and_then(|s| s["frames_in"].as_u64())
            .unwrap_or(0)
    };
    let killed = Instant::now();
    b.kill9();
    let mut last = (killed, frames_in(&c));
    let mut longest = Duration::ZERO;
    while killed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        let now = (Instant::now(), frames_in(&c));
        if now.1 != last.1 {
            longest = longest.max(now.0 - last.0);
            last = now;
        }
    }
    let at_c = stream(&c, &key).unwrap();
    println!(
        "home B killed: C's longest stall {longest:?}; next home {next}; C now gets it from {} in {} hops",
        at_c["origin"], at_c["hops"]
    );
    assert!(
        longest < Duration::from_secs(1),
        "the edge stalled {longest:?} after the home died"
    );
    assert!(
        last.0.elapsed() < Duration::from_millis(500),
        "frames flow again at C"
    );
    assert_eq!(at_c["origin"], "a");
    assert_eq!(
        at_c["home"].as_str(),
        Some(next.as_str()),
        "C sees the next home: {at_c}"
    );
    let (_, stats) = c.api("GET", "/api/v1/stats", None);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    println!(
        "C counted {} failover(s), gaps {} ms in all (from the link declared down)",
        stats["mesh_failovers"], stats["mesh_failover_gap_ms"]
    );
    assert!(
        stats["mesh_failovers"].as_u64() >= Some(1),
        "the failover is counted: {stats}"
    );
    assert!(c.log_text().contains("mesh link down"), "the failure is logged");

    let (published, err) = wait(publisher, Duration::from_secs(40));
    assert!(published, "ffmpeg publish failed: {err}");
    let (_, err) = wait(player, Duration::from_secs(15));
    let got = probe(&out);
    println!("played at C across the failover: {got:?}");
    assert_eq!((got.width, got.height), (1280, 720), "{err}");
    assert!(got.first_video_is_key);
    assert!(got.monotonic, "no timestamp goes back across the failover");
    assert!(
        got.video_packets >= 400,
        "{} video frames at C",
        got.video_packets
    );
    let errors = decode_errors(&out);
    assert!(
        errors.is_empty(),
        "every frame at C decodes across the failover: {errors}"
    );
}
