//! End to end against a real nginx-rtmp: one short step with a few players (skipped where nginx or its RTMP
//! module is not installed).

use super::ramp::{self, RampSettings};
use super::source::MediaSource;
use super::{cpus, nginx, report, server};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const NGINX: &str = "/usr/sbin/nginx";
const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

#[test]
fn one_step_against_nginx_rtmp_gives_every_player_frames() {
    for path in [NGINX, MODULE] {
        if !Path::new(path).exists() {
            eprintln!("skipping: {path} is missing (apt-get install nginx libnginx-mod-rtmp)");
            return;
        }
    }
    let _heavy = crate::HEAVY_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    // The server gets one CPU (the last), the test's players whatever the harness gives them: no pinning here.
    let allowed = cpus::allowed_cpus().unwrap();
    let server_cpu = vec![*allowed.last().unwrap()];
    let list = cpus::format_cpu_list(&server_cpu);
    let mut server = nginx::spawn(
        Path::new(NGINX),
        Path::new(MODULE),
        &server_cpu,
        &list,
        1024,
        None,
    )
    .unwrap();
    server.wait_ready(server::READY_TIMEOUT).unwrap();
    let settings = RampSettings {
        viewers: 20,
        step: 20,
        step_duration: Duration::from_secs(2),
        join_timeout: Duration::from_secs(3),
        join_spread: Duration::from_millis(500),
        warmup: Duration::from_millis(300),
        max_lag: Duration::from_secs(1),
        max_failing: 0.01,
        max_missed: 0.01,
        cpu_saturation: 0.95,
        server_cpus: server_cpu.clone(),
        load_cpus: allowed.clone(),
        app: "live".into(),
        stream: "test".into(),
        progress: true,
    };
    let source = Arc::new(MediaSource::synthetic(600_000).unwrap());
    let players = super::rtmp_players(&server, &settings).unwrap();
    let result = ramp::run(&mut server, source, &settings, &*players).unwrap();
    server.stop(None).unwrap();

    assert!(result.publish_error.is_none(), "{:?}", result.publish_error);
    let step = &result.steps[0];
    assert_eq!(step.viewers, 20);
    assert_eq!(step.players_disconnected, 0, "{:?}", step.disconnect_example);
    assert_eq!(step.players_no_frame, 0, "{step:?}");
    assert_eq!(step.players_stalled, 0, "{step:?}");
    assert!(step.lag_ms_p99.is_some(), "{step:?}");
    assert!(step.received_mbit_s > 0.0);
    assert!(step.passed, "{step:?}");
    assert_eq!(result.ttff_us.len(), 20);
    assert!(
        result.ttff_us.iter().all(|&t| t > 0 && t < 10_000_000),
        "{:?}",
        result.ttff_us
    );
    let info = report::RunInfo {
        server_cpus: list,
        loadgen_cpus: "any".into(),
        source: "synthetic".into(),
        bitrate_bps: 600_000,
        step_viewers: 20,
        step_seconds: 2.0,
        max_viewers: 20,
        max_lag_ms: 1000.0,
        popline_write_coalesce_ms: 100,
        popline_backend: "auto".into(),
    };
    let row = report::ServerReport::from_ramp("nginx-rtmp", result, &info, 1);
    assert_eq!((row.status, row.viewers_sustained), ("ok", 20));
    assert!(row.time_to_first_frame_ms_p99.is_some_and(f64::is_finite));
}
