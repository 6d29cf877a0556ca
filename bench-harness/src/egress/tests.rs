//! End to end against a real popline node and a real nginx-rtmp: part `flv` with one short step of a few
//! players per protocol, and part `hls` for a few GOPs. It needs the popline binary built beside this test
//! (`cargo build -p relay`; `cargo test --workspace` builds it) and nginx with its RTMP module, and fails
//! saying so when one is missing.

use super::hls_latency::{self, HlsPlan};
use super::per_core;
use crate::fanout::cli::{RampArgs, ServerArgs};
use crate::fanout::nginx::HlsSettings;
use crate::fanout::{self, cpus, source::SourceSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

const NGINX: &str = "/usr/sbin/nginx";
const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// `popline` of the build this test belongs to (`target/<profile>/popline`, this test being
/// `target/<profile>/deps/bench_harness-*`), else of the workspace's other profile.
fn popline_binary() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|profile| profile.join("popline")));
    let workspace = ["debug", "release"].iter().map(|p| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(p)
            .join("popline")
    });
    let found = beside.into_iter().chain(workspace).find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!(
            "no popline binary beside this test or in target/{{debug,release}}: build it first \
             (cargo build -p relay, or cargo test --workspace)"
        )
    })
}

#[test]
fn a_short_run_of_both_parts_measures_every_variant() {
    for path in [NGINX, MODULE] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: install nginx and its RTMP module (apt-get install nginx libnginx-mod-rtmp, \
             as scripts/setup.sh does)"
        );
    }
    let popline = popline_binary();
    let _heavy = crate::HEAVY_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    // The servers get one CPU (the last), the test's clients whatever the harness gives them: no pinning.
    let allowed = cpus::allowed_cpus().unwrap();
    let ramp = RampArgs {
        viewers: 20,
        step: 20,
        step_seconds: 2.0,
        bitrate: "600kbit".into(),
        source: SourceSpec::Synthetic,
        server_cpus: allowed.last().unwrap().to_string(),
        max_lag_ms: 1000.0,
        max_failing_percent: 1.0,
        max_missed_percent: 1.0,
        join_timeout_seconds: 3.0,
        no_pin: true,
    };
    let server = ServerArgs {
        popline_bin: Some(popline),
        nginx_bin: NGINX.into(),
        nginx_module: MODULE.into(),
        popline_write_coalesce_ms: 100,
        popline_backend: "auto".into(),
        keep_logs: None,
    };
    let mut setup = fanout::setup(&ramp, &server).unwrap();
    setup.settings.warmup = Duration::from_millis(300);
    setup.settings.join_spread = Duration::from_millis(500);

    let viewers = per_core::run(&setup);
    assert_eq!(viewers.len(), 2);
    for row in &viewers {
        assert_eq!(row.ramp.status, "ok", "{row:?}");
        assert_eq!(row.ramp.viewers_sustained, 20, "{row:?}");
        let step = &row.ramp.steps[0];
        assert_eq!(step.players_failing, 0, "{step:?}");
        assert!(step.lag_ms_p99.is_some(), "{step:?}");
        assert!(row.ramp.time_to_first_frame_ms_p99.is_some(), "{row:?}");
    }
    let flv = &viewers[1];
    assert_eq!(
        (flv.variant.as_str(), flv.protocol),
        (per_core::HTTP_FLV_VARIANT, "http-flv")
    );
    // 20 viewers leave a ramp of 20 without a failing step: compared by CPU cost, if /proc saw any (its
    // resolution is 10 ms of CPU per 2 s step).
    if viewers
        .iter()
        .all(|r| r.ramp.cpu_cores_used.is_some_and(|c| c > 0.0))
    {
        assert_eq!(flv.ratio_basis, Some("cpu_cost"), "{flv:?}");
        assert!(flv.ratio_to_rtmp.is_some_and(f64::is_finite), "{flv:?}");
        assert!(flv.target_met.is_some());
    } else {
        assert_eq!((flv.ratio_to_rtmp, flv.target_met), (None, None), "{flv:?}");
    }

    let plan = HlsPlan {
        duration: Duration::from_secs(9),
        poll: Duration::from_millis(50),
        nginx: HlsSettings {
            fragment_ms: 2000,
            playlist_ms: 12_000,
            http_port: 0,
        },
    };
    let latency = hls_latency::run(&setup, &plan);
    let names: Vec<&str> = latency.iter().map(|r| r.variant.as_str()).collect();
    assert_eq!(names, ["popline-hls", "popline-ll-hls", "nginx-rtmp-hls"]);
    for row in &latency {
        assert_eq!(row.status, "ok", "{row:?}");
        // Segments every 2 s after the first playlist (at about 2 s); LL-HLS parts of at most 500 ms.
        let least = if row.unit == "part" { 6 } else { 2 };
        assert!(row.samples >= least, "{row:?}");
        assert!(row.glass_to_playlist_ms_min.is_some_and(|m| m >= 0.0), "{row:?}");
        // Freshness: every read placed its newest unit, and the age was sampled between them.
        assert!(row.freshness_reads >= 2, "{row:?}");
        assert!(row.freshness_ms_p50.is_some_and(|m| m >= 0.0), "{row:?}");
    }
    assert_eq!(latency[1].poll, "blocking_reload");
    assert!(
        latency[1].unit_duration_ms_mean.is_some_and(|d| d <= 500.0),
        "{:?}",
        latency[1]
    );
    assert!(latency[2]
        .unit_duration_ms_mean
        .is_some_and(|d| (1900.0..2100.0).contains(&d)));
    // popline's segments were placed by accumulated durations and checked against their PROGRAM-DATE-TIME.
    assert!(
        latency[0].program_date_time_check_ms_max.is_some(),
        "{:?}",
        latency[0]
    );
    assert!(latency[2].program_date_time_check_ms_max.is_none());
}
