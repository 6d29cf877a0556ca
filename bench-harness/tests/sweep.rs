//! `popline-bench sweep` end to end: the real binary runs a benchmark for every knob combination and sysctl
//! profile, writes the report, and puts the sysctls back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::MetadataExt;
use std::process::Command;

const KEY: &str = "/proc/sys/net/core/netdev_max_backlog";

#[test]
fn sweep_runs_every_combination_and_restores_sysctls() {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let dir = std::env::temp_dir().join(format!("popline-sweep-it-{}", std::process::id()));
    let profiles = dir.join("sysctl");
    std::fs::create_dir_all(&profiles).unwrap();
    let before = std::fs::read_to_string(KEY).unwrap();
    let want = if before.trim() == "4321" { "4322" } else { "4321" };
    std::fs::write(
        profiles.join("test.conf"),
        format!("# test\nnet.core.netdev_max_backlog = {want}\n"),
    )
    .unwrap();
    let sysctl = if root { "none,test" } else { "none" };
    let out = Command::new(env!("CARGO_BIN_EXE_popline-bench"))
        .args([
            "sweep",
            "--bench",
            "udp",
            "--seconds",
            "0.2",
            "--knob",
            "payload=600,1200",
            "--sysctl",
            sysctl,
        ])
        .arg("--sysctl-dir")
        .arg(&profiles)
        .arg("--out")
        .arg(dir.join("report"))
        .args(["--", "--variants", "mmsg,engine-uring-gso"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/sweep.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    let profiles_run = if root { 2 } else { 1 };
    assert_eq!(
        rows.len(),
        2 * 2 * profiles_run,
        "2 payloads x 2 variants x profiles: {rows:?}"
    );
    for r in rows {
        let payload = r["knobs"][0][1].as_str().unwrap();
        assert_eq!(
            r["result"]["payload_bytes"].as_u64().unwrap().to_string(),
            payload,
            "{r}"
        );
        assert!(r["result"]["gbps"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(std::fs::read_to_string(dir.join("report/sweep.svg"))
        .unwrap()
        .starts_with("<svg"));
    let md = std::fs::read_to_string(dir.join("report/sweep.md")).unwrap();
    if root {
        assert!(
            md.contains(&format!("net.core.netdev_max_backlog = {want}")),
            "{md}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(KEY).unwrap(),
        before,
        "the sysctl was restored"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
