//! Tests of `popline-bench compare`: the report writer, the settings, and a short comparison on a small lossy
//! path (root, `ip netns` and `/dev/net/tun`; without them it prints why and passes).

use super::report::tests::sample;
use super::*;

fn settings(variants: &str, modes: &str) -> Settings {
    Settings::from_args(&CompareArgs {
        profile: Some("x".to_string()),
        seconds: 3.0,
        warmup: 0.5,
        live_seconds: 2.0,
        live_warmup: 0.5,
        budget: None,
        bitrate: "6mbit".to_string(),
        variants: variants.to_string(),
        modes: modes.to_string(),
        json: true,
        matrix: false,
        out: PathBuf::from("unused"),
        seed: None,
        popline_pacing_round_us: None,
        popline_ack_every: None,
        popline_wait_batch: None,
        popline_wait_batch_us: None,
        popline_startup_priming_ms: None,
    })
    .unwrap()
}

#[test]
fn settings_give_srt_two_latencies_and_the_default_budget() {
    let s = settings("popline,srt", "bulk,live");
    let rtt = Duration::from_millis(100);
    assert_eq!(s.budget_for(rtt), Duration::from_millis(280));
    let runs = s.runs(rtt);
    assert_eq!(
        runs,
        vec![
            (Variant::Popline, Mode::Bulk, None),
            (Variant::Popline, Mode::Live, None),
            (Variant::Srt, Mode::Live, Some(Duration::from_millis(400))),
            (Variant::Srt, Mode::Live, Some(Duration::from_millis(200))),
        ]
    );
    assert!(Variant::parse("tcp").is_err());
    let primed = settings("popline-primed", "bulk,live").runs(rtt);
    assert_eq!(primed, vec![(Variant::PoplinePrimed, Mode::Live, None)]);
    assert!(Mode::parse("stream").is_err());
}

#[test]
fn the_matrix_has_nine_cells() {
    let p = matrix::profiles().unwrap();
    assert_eq!(p.len(), 9);
    let rtts: Vec<u128> = p
        .iter()
        .map(|p| (p.a_to_b.delay + p.b_to_a.delay).as_millis())
        .collect();
    assert_eq!(rtts, vec![20, 20, 20, 100, 100, 100, 200, 200, 200]);
    assert!((p[4].a_to_b.loss.mean_loss() - 0.01).abs() < 1e-12);
    assert_eq!(p[4].a_to_b.rate_bps, Some(100_000_000));
}

#[test]
fn the_report_and_its_svg_plots_are_written() {
    let dir = std::env::temp_dir().join(format!("popline-compare-report-{}", std::process::id()));
    let mut rows = Vec::new();
    for (rtt, loss) in [(20.0, 0.0), (20.0, 0.01), (100.0, 0.01)] {
        for (v, mode, g) in [
            ("popline", "bulk", 95e6),
            ("tcp-cubic", "bulk", 5e6),
            ("popline", "live", 6e6),
            ("srt", "live", 6e6),
        ] {
            let mut r = sample(v, mode, g);
            r.rtt_ms = rtt;
            r.loss = loss;
            r.profile = format!("rtt{rtt}-loss{loss}");
            rows.push(r);
        }
    }
    let mut skipped = sample("tcp-bbr", "bulk", 0.0);
    skipped.skipped = Some("no bbr".to_string());
    rows.push(skipped);
    let files = matrix::write_report(&dir, &rows).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| rtt20-loss0.01 | 95.00 | 5.00 |"), "{md}");
    assert!(md.contains("skipped: no bbr"), "{md}");
    for name in [
        "goodput-vs-loss-rtt20ms.svg",
        "throughput-vs-delay-rtt100ms.svg",
        "live-on-time-vs-loss-rtt20ms.svg",
    ] {
        let svg = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("popline"), "{name}: {svg}");
        assert!(md.contains(name), "{md}");
    }
    assert!(files.iter().any(|f| f.ends_with("report.md")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every variant moves data on a small lossy path (20 Mbit/s, RTT 20 ms, 1% loss), every row has the keys of
/// the issue, and popline's bulk goodput beats TCP CUBIC's.
#[test]
fn a_short_comparison_on_a_lossy_path() {
    if let Some(why) = netns_unavailable() {
        println!("skipping the comparison test: {why}");
        return;
    }
    let _turn = crate::HEAVY_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let profile = Profile::parse(
        "small-lossy",
        "rate=20mbit\ndelay=10ms\nloss=1%\nqueue=1bdp\nseed=3\n",
    )
    .unwrap();
    let s = settings("popline,tcp-cubic,tcp-bbr,quinn,srt", "bulk,live");
    let rows = compare_profile(&profile, &s, &mut |r, done, total| {
        println!("{done}/{total}: {}", serde_json::to_string(r).unwrap());
    });
    println!("{}", report::table(&rows));
    assert_eq!(rows.len(), 10, "4 bulk rows, 4 live rows and 2 SRT rows");
    for r in &rows {
        if let Some(why) = &r.skipped {
            // Only what the machine may lack is allowed to be missing.
            let missing_tool = r.variant == "srt" && srt::unavailable().is_some();
            let missing_cc = r.variant == "tcp-bbr" && why.contains("no TCP congestion control");
            assert!(
                missing_tool || missing_cc,
                "{} {} failed: {why}",
                r.variant,
                r.mode
            );
            continue;
        }
        assert!(r.goodput_bps > 0.0, "{r:?}");
        assert!(r.cpu_s_per_gb.is_some_and(|c| c > 0.0), "{r:?}");
        // Tick-granular and less other processes' time: zero is possible on a short, cheap run.
        assert!(r.machine_cpu_s_per_gb.is_some_and(|c| c >= 0.0), "{r:?}");
        assert!(r.p95_one_way_delay_ms >= 10.0, "{r:?}");
        if r.mode == "live" {
            assert!(r.frames_sent > 0 && r.frames_delivered > 0, "{r:?}");
            assert!(r.frames_on_time <= r.frames_delivered, "{r:?}");
            // The steady window (a second after the warm-up to the window's end) holds frames and CPU.
            assert!(r.steady_cpu_s_per_gb.is_some_and(|c| c > 0.0), "{r:?}");
            assert!(r.steady_machine_cpu_s_per_gb.is_some_and(|c| c >= 0.0), "{r:?}");
        }
        let json = serde_json::to_value(r).unwrap();
        for key in [
            "variant",
            "mode",
            "goodput_bps",
            "frame_latency_p50_ms",
            "frame_latency_p99_ms",
            "frames_sent",
            "frames_on_time",
            "p95_one_way_delay_ms",
            "cpu_s_per_gb",
            "machine_cpu_s_per_gb",
            "emulator_cpu_s_per_gb",
            "steady_cpu_s_per_gb",
            "steady_machine_cpu_s_per_gb",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    }
    let bulk = |v: &str| {
        rows.iter()
            .find(|r| r.variant == v && r.mode == "bulk")
            .map_or(0.0, |r| r.goodput_bps)
    };
    assert!(
        bulk("popline") > bulk("tcp-cubic"),
        "popline {} <= tcp-cubic {}",
        bulk("popline"),
        bulk("tcp-cubic")
    );
}
