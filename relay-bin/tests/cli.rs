//! The binary's command line: `--help` explains the flags, `--print-config` shows every field, bad config
//! files fail with a message that names the file and the problem.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn popline(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_popline"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn help_explains_each_flag() {
    let (ok, out, _) = popline(&["--help"]);
    assert!(ok);
    for flag in [
        "--config",
        "--print-config",
        "--rtmp-listen",
        "--http-listen",
        "--cores",
        "--bans-path",
        "--http-token",
    ] {
        assert!(out.contains(flag), "--help must explain {flag}:\n{out}");
    }
    assert!(out.contains("rtmp://"), "--help says how to publish and play");
}

#[test]
fn print_config_shows_the_embedded_defaults_and_flags_override_them() {
    let (ok, out, _) = popline(&[
        "--print-config",
        "--rtmp-listen",
        "127.0.0.1:19350",
        "--cores",
        "3",
    ]);
    assert!(ok);
    let config: relay::config::Config = toml::from_str(&out).unwrap();
    assert_eq!(config.rtmp.listen.to_string(), "127.0.0.1:19350");
    assert_eq!(config.engine.cores, 3);
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn a_bad_config_file_fails_with_the_file_and_the_problem() {
    let dir = std::env::temp_dir().join(format!("popline-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[rtmp]\nchunk_sise = 4096\n").unwrap();
    let (ok, _, err) = popline(&["--config", path.to_str().unwrap(), "--print-config"]);
    assert!(!ok);
    assert!(err.contains("bad.toml") && err.contains("chunk_sise"), "{err}");
    std::fs::write(&path, "[rtmp]\nchunk_size = 1\n").unwrap();
    let (ok, _, err) = popline(&["--config", path.to_str().unwrap(), "--print-config"]);
    assert!(!ok);
    assert!(err.contains("rtmp.chunk_size"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
