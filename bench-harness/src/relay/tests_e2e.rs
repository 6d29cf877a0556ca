//! End to end in the lab (root): a short relay trial of popline (when its binary is built) and of nginx-rtmp
//! with BBR (when nginx-rtmp is installed) on the clean profile.

use super::*;
use crate::compare::load_profile;
use std::path::Path;

const NGINX: &str = "/usr/sbin/nginx";
const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// `popline` from this workspace's target directory, release or debug, if built.
fn popline_binary() -> Option<PathBuf> {
    ["release", "debug"]
        .iter()
        .map(|p| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target")
                .join(p)
                .join("popline")
        })
        .find(|p| p.exists())
}

#[test]
fn a_short_relay_run_judges_every_viewer_s_frames() {
    if let Some(why) = netns_unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let _turn = crate::HEAVY_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    clock::epoch();
    let profile = load_profile("clean").unwrap();
    let rtt = profile.a_to_b.delay + profile.b_to_a.delay;
    let mut trial = Trial {
        profile,
        rtt,
        // Generous: a debug-built node on a shared 2-core machine.
        budget: Duration::from_millis(500),
        viewers: 3,
        warmup: Duration::from_secs(2),
        seconds: Duration::from_secs(2),
        cpus: cpus::format_cpu_list(&cpus::allowed_cpus().unwrap()),
        popline_write_coalesce_ms: 0,
        popline_bin: PathBuf::new(),
        nginx_bin: NGINX.into(),
        nginx_module: MODULE.into(),
        keep_logs: None,
    };
    let mut ran = 0;
    if let Some(bin) = popline_binary() {
        trial.popline_bin = bin;
        let row = run::trial(Variant::Popline, 2, 2_000_000, &trial);
        assert!(row.error.is_none(), "{row:?}");
        assert_eq!(row.nodes, 2);
        assert!(row.frames_sent >= 50, "{row:?}");
        assert_eq!(row.frames_undecodable, 0, "{row:?}");
        assert!(row.on_time_ratio.unwrap() > 0.9, "{row:?}");
        ran += 1;
    } else {
        eprintln!("skipping popline: no target/{{release,debug}}/popline (cargo build -p relay)");
    }
    if Path::new(NGINX).exists() && Path::new(MODULE).exists() {
        let row = run::trial(Variant::NginxRtmpBbr, 2, 2_000_000, &trial);
        assert!(row.error.is_none(), "{row:?}");
        assert_eq!(row.tcp_cc.as_deref(), Some("bbr"), "{row:?}");
        assert!(row.on_time_ratio.unwrap() > 0.9, "{row:?}");
        assert!(row.e2e_latency_ms_p50.is_some() && row.stall_ratio.is_some());
        ran += 1;
    } else {
        eprintln!("skipping nginx-rtmp: {NGINX} or {MODULE} is missing");
    }
    eprintln!("{ran} variant(s) ran");
}
