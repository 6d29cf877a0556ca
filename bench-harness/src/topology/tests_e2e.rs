//! Issue 18's real-process test (root): three PoPs `a`, `b`, `c`, each a `popline` process in its own
//! namespace, joined by emulated links with a lab profile (`lossy-1pct` unless `POPLINE_TOPOLOGY_PROFILE`
//! names another). App `live` has origins `b` and `c`, and the stream's name puts `b` first in rendezvous
//! order. ffmpeg publishes the 720p sample to `a` (in `a`'s namespace) and plays it from `c` (in `c`'s)
//! through the home `b`; `b` is killed with SIGKILL mid-stream and `c`'s longest stall is measured from its
//! `frames_in`; what `c` played must decode whole. Then a forbid on `c` must stop a publisher on `a`.
//! Skipped, with the reason, when not root, without `ip netns`, without a built `popline` or without ffmpeg.

use super::*;
use crate::emulate::netns_unavailable;
use relay::mesh::placement::{home_among, Origin};
use std::path::Path;
use std::process::Stdio;

/// The sample every relay test plays (20 s, 600 video frames, B-frames).
const SAMPLE: &str = "h264-aac-720p30-bframes.flv";
/// The issue's failover target.
const FAILOVER_TARGET: Duration = Duration::from_secs(1);
/// What the forbid is asserted against on a shared 2-core machine (the target, one RTT + 50 ms of the
/// slowest link, is printed next to the measure).
const FORBID_BOUND: Duration = Duration::from_secs(1);

/// `popline` from this workspace's target directory, the newest of release and debug, if built.
fn popline_binary() -> Option<PathBuf> {
    ["release", "debug"]
        .iter()
        .map(|p| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target")
                .join(p)
                .join("popline")
        })
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
}

/// The sample from `../shared/media`, or an equivalent (20 s of 720p30 with B-frames) generated with ffmpeg.
fn sample() -> PathBuf {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/media")
        .join(SAMPLE);
    if shared.exists() {
        return shared;
    }
    let generated = std::env::temp_dir().join(format!("popline-generated-{SAMPLE}"));
    if !generated.exists() {
        let partial = generated.with_extension("partial.flv");
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .args(["testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i"])
            .args(["sine=frequency=440:sample_rate=44100", "-t", "20"])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-b:v", "3000k", "-bf", "3",
            ])
            .args(["-g", "60", "-c:a", "aac", "-b:a", "64k", "-f", "flv"])
            .arg(&partial)
            .status()
            .unwrap();
        assert!(status.success(), "cannot generate {SAMPLE}");
        std::fs::rename(&partial, &generated).unwrap();
    }
    generated
}

/// A directory removed when dropped, the test passing or not.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// ffmpeg with `args` in namespace `ns` (`ip netns exec` execs it: the child is ffmpeg).
fn ffmpeg_in(ns: &str, args: &[&str]) -> Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg must be installed")
}

/// Publishes the sample at its own rate, stream copy, to `url`.
fn publish(ns: &str, file: &Path, url: &str) -> Child {
    let file = file.display().to_string();
    ffmpeg_in(ns, &["-re", "-i", &file, "-c", "copy", "-f", "flv", url])
}

/// Plays `url` into `out` (FLV, stream copy) until the server ends the stream.
fn play(ns: &str, url: &str, out: &Path) -> Child {
    let out = out.display().to_string();
    ffmpeg_in(
        ns,
        &[
            "-rw_timeout",
            "30000000",
            "-i",
            url,
            "-c",
            "copy",
            "-f",
            "flv",
            "-y",
            &out,
        ],
    )
}

/// Waits for `child` up to `limit` (killed past that): whether it succeeded, and its stderr.
fn wait(mut child: Child, limit: Duration) -> (bool, String) {
    let deadline = Instant::now() + limit;
    let ok = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                stop_child(&mut child);
                break false;
            }
        }
    };
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
    }
    (ok, err)
}

/// Waits until `check` holds or `limit` passes.
fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// The stream's entry in node `id`'s `GET /api/v1/streams`, if listed.
fn stream(topo: &Topology, id: &str, key: &str) -> Option<serde_json::Value> {
    let (_, body) = topo.api(id, "GET", "/api/v1/streams", None).ok()?;
    let streams: serde_json::Value = serde_json::from_str(&body).ok()?;
    streams
        .as_array()
        .and_then(|a| a.iter().find(|s| s["stream"] == key).cloned())
}

/// What ffprobe finds in a played file.
#[derive(Debug, Default)]
struct Probe {
    width: u64,
    height: u64,
    video_frames: usize,
    audio_frames: usize,
    first_video_is_key: bool,
    /// The largest step between two consecutive video dts (ms): where frames are missing.
    largest_video_step_ms: i64,
    /// The dts (ms) after that step.
    largest_video_step_at_ms: i64,
    /// The first and last video dts (ms).
    video_dts_range: (i64, i64),
    /// Per stream, dts never went back.
    monotonic: bool,
}

fn probe(file: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=index,codec_type,width,height",
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
    let mut p = Probe {
        monotonic: true,
        ..Probe::default()
    };
    let mut video = None;
    // ffprobe prints the packets before the streams: sort them out once both are read.
    let mut packets: Vec<(i64, i64, bool)> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: std::collections::HashMap<&str, &str> =
            line.split('|').filter_map(|kv| kv.split_once('=')).collect();
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
        if line.starts_with("stream|") && f.get("codec_type") == Some(&"video") {
            video = num("index");
            p.width = num("width").unwrap_or(0) as u64;
            p.height = num("height").unwrap_or(0) as u64;
        } else if line.starts_with("packet|") {
            let key = f.get("flags").is_some_and(|fl| fl.starts_with('K'));
            packets.push((
                num("stream_index").unwrap_or(0),
                num("dts").unwrap_or(i64::MIN),
                key,
            ));
        }
    }
    let mut last: std::collections::HashMap<i64, i64> = Default::default();
    for (index, dts, key) in packets {
        if last.insert(index, dts).is_some_and(|prev| dts < prev) {
            p.monotonic = false;
        }
        if Some(index) == video {
            if p.video_frames == 0 {
                p.first_video_is_key = key;
                p.video_dts_range.0 = dts;
            } else {
                if dts - p.video_dts_range.1 > p.largest_video_step_ms {
                    p.largest_video_step_ms = dts - p.video_dts_range.1;
                    p.largest_video_step_at_ms = dts;
                }
            }
            p.video_dts_range.1 = dts;
            p.video_frames += 1;
        } else {
            p.audio_frames += 1;
        }
    }
    p
}

/// Decodes `file` whole; ffmpeg's errors (empty when every frame decoded).
fn decode_errors(file: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg must be installed");
    let mut errors = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        errors.push_str(&format!(" (exit {})", out.status));
    }
    errors
}

#[test]
fn three_pops_across_impaired_links_fail_over_within_a_second_and_a_forbid_reaches_the_publisher() {
    if let Some(why) = netns_unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let Some(binary) = popline_binary() else {
        eprintln!("skipping: no target/{{release,debug}}/popline (cargo build -p relay)");
        return;
    };
    if Command::new("ffmpeg").arg("-version").output().is_err()
        || Command::new("ffprobe").arg("-version").output().is_err()
    {
        eprintln!("skipping: ffmpeg and ffprobe are not installed");
        return;
    }
    let _turn = crate::HEAVY_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let profile = std::env::var("POPLINE_TOPOLOGY_PROFILE").unwrap_or_else(|_| "lossy-1pct".into());
    let spec = Spec::parse(3, &[], &profile, false, &["live=b,c".into()]).unwrap();
    let settings = NodeSettings {
        cores: 1,
        token: "topology-test".into(),
        frame_budget_ms: Some(2000),
        // 600 ms of silence declares a link down (the default is 800): a margin for a loaded machine.
        link_timeout_ms: Some(600),
        pull_grace_ms: None,
        // C's viewer waits through the failover.
        unpublish_grace_ms: Some(3000),
        app_origins: spec.app_origins.clone(),
    };
    let started = Instant::now();
    let mut topo = Topology::start(&spec, &binary, &settings).unwrap();
    let rtt = topo.slowest_rtt();
    eprintln!(
        "topology up in {:?} with {binary:?}: links {} (slowest RTT {rtt:?})",
        started.elapsed(),
        spec.links_line()
    );
    let (ns_a, url_a) = (
        topo.node("a").unwrap().ns.clone(),
        topo.node("a").unwrap().rtmp_url(),
    );
    let (ns_c, url_c) = (
        topo.node("c").unwrap().ns.clone(),
        topo.node("c").unwrap().rtmp_url(),
    );

    // A stream whose home is B among the origins B and C; after B, C.
    let origins = [Origin::new("b"), Origin::new("c")];
    let name = (0..1000)
        .map(|i| format!("shop{i}"))
        .find(|n| home_among(&format!("live/{n}"), &origins, |_| true).is_some_and(|o| o.id == "b"))
        .unwrap();
    let key = format!("live/{name}");
    let scratch = Scratch(crate::fanout::server::temp_dir("topology-e2e").unwrap());
    let scratch = &scratch.0;
    let out = scratch.join("played-at-c.flv");
    let media = sample();

    let publish_started = Instant::now();
    let publisher = publish(&ns_a, &media, &format!("{url_a}/{key}"));
    assert!(
        wait_until(Duration::from_secs(20), || stream(&topo, "a", &key)
            .is_some_and(|s| !s["publisher"].is_null())),
        "the publisher never went live at A: {}",
        topo.log("a")
    );
    let player = play(&ns_c, &format!("{url_c}/{key}"), &out);
    assert!(
        wait_until(Duration::from_secs(10), || stream(&topo, "c", &key)
            .is_some_and(|s| s["hops"] == 2 && s["viewers"] == 1)),
        "C never got the stream through B: {:?}\nC: {}",
        stream(&topo, "c", &key),
        topo.log("c")
    );
    let at_b = stream(&topo, "b", &key).unwrap();
    assert_eq!(at_b["origin"], "a", "B is the home, fed by A: {at_b}");
    std::thread::sleep(Duration::from_secs(3));

    // SIGKILL the home: C's viewer stays connected and the stream comes back through C, the next home.
    let frames_in = |topo: &Topology| {
        stream(topo, "c", &key)
            .and_then(|s| s["frames_in"].as_u64())
            .unwrap_or(0)
    };
    let killed = Instant::now();
    topo.kill9("b").unwrap();
    let mut last = (killed, frames_in(&topo));
    let mut gap = Duration::ZERO;
    while killed.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(10));
        let now = (Instant::now(), frames_in(&topo));
        if now.1 != last.1 {
            gap = gap.max(now.0 - last.0);
            last = now;
        }
    }
    let at_c = stream(&topo, "c", &key).unwrap();
    println!(
        "topology ({profile}): home B killed {} ms into the stream; C's longest stall (failover gap) {} ms; \
         C now gets the stream from {} in {} hop(s)",
        (killed - publish_started).as_millis(),
        gap.as_millis(),
        at_c["origin"],
        at_c["hops"]
    );
    assert!(
        last.0.elapsed() < Duration::from_millis(500),
        "frames flow again at C: {at_c}"
    );
    assert!(gap < FAILOVER_TARGET, "C stalled {gap:?} after the home died");

    let (published, err) = wait(publisher, Duration::from_secs(40));
    assert!(published, "ffmpeg publish at A failed: {err}");
    let (_, err) = wait(player, Duration::from_secs(15));
    let got = probe(&out);
    println!("played at C across the failover: {got:?}");
    assert_eq!((got.width, got.height), (1280, 720), "{err}");
    assert!(got.first_video_is_key, "C's first video frame is a keyframe");
    assert!(got.monotonic, "no timestamp goes back across the failover");
    assert!(
        got.video_frames >= 400,
        "{} of 600 video frames at C",
        got.video_frames
    );
    assert!(got.audio_frames > 0);
    let errors = decode_errors(&out);
    assert!(errors.is_empty(), "every frame at C decodes: {errors}");

    // A forbid on C stops a publisher on A.
    let banned = "live/unlawful";
    let publisher = publish(&ns_a, &media, &format!("{url_a}/{banned}"));
    assert!(
        wait_until(Duration::from_secs(20), || stream(&topo, "a", banned)
            .is_some_and(|s| !s["publisher"].is_null())),
        "the second publisher never went live at A"
    );
    let viewer = play(&ns_c, &format!("{url_c}/{banned}"), &scratch.join("unlawful.flv"));
    assert!(
        wait_until(Duration::from_secs(10), || stream(&topo, "c", banned)
            .is_some_and(|s| s["viewers"] == 1)),
        "C never served the second stream"
    );
    let asked = Instant::now();
    let (status, body) = topo
        .api(
            "c",
            "POST",
            &format!("/api/v1/streams/{banned}/forbid"),
            Some(r#"{"permanent":true,"reason":"x"}"#),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let kicked = wait_until(Duration::from_secs(5), || {
        stream(&topo, "a", banned).is_none_or(|s| s["publisher"].is_null())
    });
    let took = asked.elapsed();
    assert!(kicked, "A's publisher was not kicked: {}", topo.log("a"));
    let target = rtt + Duration::from_millis(50);
    println!(
        "topology ({profile}): forbid at C stopped the publisher at A {} ms after the request (target {} ms: \
         one RTT + 50 ms of the slowest link)",
        took.as_millis(),
        target.as_millis()
    );
    assert!(took < FORBID_BOUND, "forbid propagation took {took:?}");
    let (_, bans) = topo.api("a", "GET", "/api/v1/bans", None).unwrap();
    assert!(bans.contains(banned), "A holds the ban: {bans}");
    let (publisher_done, _) = wait(publisher, Duration::from_secs(5));
    assert!(!publisher_done, "the kicked publisher fails");
    let _ = wait(viewer, Duration::from_secs(5));

    topo.stop(None);
    let left: Vec<String> = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .filter(|l| l.contains(&format!("popline-topo-{}-", std::process::id())))
    .map(str::to_string)
    .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    eprintln!("the whole test took {:?}", started.elapsed());
}

/// A viewer who comes to an edge after the stream's first GOP must get the video's sequence header (the AVC
/// decoder configuration) with the pull from the home, as viewers at the publisher's node and the home do.
/// Found with `netem-scripts/topology.sh`: at the edge C, `video_codec` stays null and ffmpeg finds no codec
/// parameters ("missing picture in access unit"), on `clean` as on `lossy-1pct`; a viewer who joins within
/// the first GOP played. The cause: the home primed the edge with the stream's sequence headers and GOP as
/// they came, with their capture times seconds old, and the link dropped them as past their deadline. Now
/// headers go reliably and the priming GOP gets the link's budget from when it is sent.
#[test]
fn an_edge_viewer_joining_after_the_first_gop_gets_the_video_sequence_header() {
    if let Some(why) = netns_unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let Some(binary) = popline_binary() else {
        eprintln!("skipping: no target/{{release,debug}}/popline (cargo build -p relay)");
        return;
    };
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        eprintln!("skipping: ffmpeg is not installed");
        return;
    }
    let _turn = crate::HEAVY_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let spec = Spec::parse(3, &[], "clean", false, &["live=b".into()]).unwrap();
    let settings = NodeSettings {
        cores: 1,
        token: "topology-test".into(),
        frame_budget_ms: None,
        link_timeout_ms: None,
        pull_grace_ms: None,
        unpublish_grace_ms: None,
        app_origins: spec.app_origins.clone(),
    };
    let mut topo = Topology::start(&spec, &binary, &settings).unwrap();
    let (ns_a, url_a) = (
        topo.node("a").unwrap().ns.clone(),
        topo.node("a").unwrap().rtmp_url(),
    );
    let (ns_c, url_c) = (
        topo.node("c").unwrap().ns.clone(),
        topo.node("c").unwrap().rtmp_url(),
    );
    let scratch = Scratch(crate::fanout::server::temp_dir("topology-late-viewer").unwrap());
    let out = scratch.0.join("late-at-c.flv");
    let file = sample().display().to_string();
    let publisher = ffmpeg_in(
        &ns_a,
        &[
            "-re",
            "-i",
            &file,
            "-t",
            "9",
            "-c",
            "copy",
            "-f",
            "flv",
            &format!("{url_a}/live/late"),
        ],
    );
    // Past the first keyframe interval (2 s) of the sample.
    std::thread::sleep(Duration::from_secs(3));
    let out_s = out.display().to_string();
    let player = ffmpeg_in(
        &ns_c,
        &[
            "-rw_timeout",
            "10000000",
            "-i",
            &format!("{url_c}/live/late"),
            "-t",
            "3",
            "-c",
            "copy",
            "-f",
            "flv",
            "-y",
            &out_s,
        ],
    );
    let (played, err) = wait(player, Duration::from_secs(20));
    let at_c = stream(&topo, "c", "live/late");
    let _ = wait(publisher, Duration::from_secs(15));
    topo.check_alive().unwrap();
    topo.stop(None);
    let got = probe(&out);
    println!("a viewer joining C 3 s in: {got:?}; C's stream: {at_c:?}");
    assert!(played, "ffmpeg at C failed: {err}");
    assert_eq!((got.width, got.height), (1280, 720));
    assert!(got.first_video_is_key && got.video_frames > 0);
}
