//! The binary's command line: `--help` explains the flags, `--print-config` shows every field, bad config
//! files fail with a message that names the file and the problem.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn popline(args: &[&str]) -> (bool, String, String) {
    popline_env(args, &[])
}

#[test]
fn help_explains_each_flag() {
    let (ok, out, _) = popline(&["--help"]);
    assert!(ok);
    for flag in [
        "--config",
        "--print-config",
        "--rtmp-listen",
        "--admin-listen",
        "--egress-listen",
        "--cores",
        "--bans-path",
        "--admin-token",
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
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:1985");
    assert_eq!(config.egress.listen.to_string(), "127.0.0.1:8080");
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

/// Runs popline with `args` and the environment `env`; returns (success, stdout, stderr).
fn popline_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_popline"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// Item 24: a config error is said once, in a few lines, without a stack trace even under RUST_BACKTRACE.
#[test]
fn a_config_error_is_said_once_without_a_backtrace() {
    let dir = std::env::temp_dir().join(format!("popline-cli-once-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[rtmp]\nchunk_sise = 4096\n").unwrap();
    let (ok, _, err) = popline_env(
        &["--config", path.to_str().unwrap(), "--print-config"],
        &[("RUST_BACKTRACE", "1")],
    );
    assert!(!ok);
    assert_eq!(err.matches("unknown field").count(), 1, "said once: {err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert!(err.lines().count() <= 8, "a few lines: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Item 24: listen addresses as operators write them: a port out of range is named, `localhost` resolves.
#[test]
fn listen_addresses_say_what_is_wrong_and_accept_hostnames() {
    let dir = std::env::temp_dir().join(format!("popline-cli-addr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pop.toml");
    std::fs::write(&path, "[rtmp]\nlisten = \"127.0.0.1:99999\"\n").unwrap();
    let (ok, _, err) = popline(&["--config", path.to_str().unwrap(), "--print-config"]);
    assert!(!ok);
    assert!(err.contains("port 99999 is out of range"), "{err}");
    let (ok, _, err) = popline(&["--rtmp-listen", "127.0.0.1:99999", "--print-config"]);
    assert!(!ok);
    assert!(err.contains("port 99999 is out of range"), "{err}");

    std::fs::write(&path, "[rtmp]\nlisten = \"localhost:1936\"\n").unwrap();
    let (ok, out, err) = popline(&["--config", path.to_str().unwrap(), "--print-config"]);
    assert!(ok, "{err}");
    let config: relay::config::Config = toml::from_str(&out).unwrap();
    assert!(config.rtmp.listen.ip().is_loopback() && config.rtmp.listen.port() == 1936);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Item 24: `--version` names the binary; `--help` shows each example on its own line.
#[test]
fn version_names_popline_and_help_examples_are_one_per_line() {
    let (ok, out, _) = popline(&["--version"]);
    assert!(ok);
    assert!(out.starts_with("popline "), "{out}");
    let (_, help, _) = popline(&["--help"]);
    let publish = help.lines().find(|l| l.contains("ffmpeg")).unwrap();
    assert!(
        !publish.contains("ffplay"),
        "publish and play run into one line: {publish}"
    );
    assert!(
        help.lines()
            .any(|l| l.trim_start().starts_with("Play:") && l.contains("ffplay")),
        "{help}"
    );
    assert!(help.contains("sign-publish"), "{help}");
}

/// Item 24: `--print-config` does not print secrets.
#[test]
fn print_config_redacts_secrets() {
    let dir = std::env::temp_dir().join(format!("popline-cli-redact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pop.toml");
    std::fs::write(&path, "[auth]\npublish_secret = \"pub-s3cret\"\n").unwrap();
    let (ok, out, err) = popline(&[
        "--config",
        path.to_str().unwrap(),
        "--http-token",
        "admin-s3cret",
        "--print-config",
    ]);
    assert!(ok, "{err}");
    assert!(
        !out.contains("pub-s3cret") && !out.contains("admin-s3cret"),
        "{out}"
    );
    assert_eq!(out.matches("(redacted)").count(), 2, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Item 25: `popline sign-publish` makes a token the node accepts.
#[test]
fn sign_publish_makes_a_token_the_node_accepts() {
    let (ok, out, err) = popline(&[
        "sign-publish",
        "--secret",
        "s3cret",
        "--stream",
        "live/cam",
        "--expires-in",
        "600",
    ]);
    assert!(ok, "{err}");
    let query = out.trim();
    let key = relay::stream_key::StreamKey::new("live", "cam").unwrap();
    let now = relay::bans::unix_now_ms() / 1000;
    relay::auth::verify_publish(b"s3cret", &key, Some(query), now).unwrap();
    assert!(relay::auth::verify_publish(b"other", &key, Some(query), now).is_err());
    let expires: u64 = query
        .strip_prefix("expires=")
        .and_then(|rest| rest.split('&').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((now + 590..=now + 610).contains(&expires), "{query}");
    let (ok, _, err) = popline(&["sign-publish", "--stream", "live/cam"]);
    assert!(!ok);
    assert!(err.contains("--secret"), "{err}");
}

#[test]
fn keygen_writes_a_private_key_and_prints_its_public_key() {
    let dir = std::env::temp_dir().join(format!("popline-keygen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mesh.key");
    let (ok, out, err) = popline(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let public = out.trim();
    assert_eq!(public.len(), 44, "base64 of 32 bytes: {out:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let keypair = relay::mesh::config::read_key(&path).unwrap();
    assert_eq!(relay::mesh::config::encode_key(&keypair.public), public);
    // Never overwritten: the node's identity would change under its peers.
    let (ok, _, err) = popline(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("cannot write a new key") && err.contains("exists"),
        "{err}"
    );
    assert_eq!(
        relay::mesh::config::read_key(&path).unwrap().public,
        keypair.public
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mesh_mistakes_are_refused_at_start_with_the_field_named() {
    let dir = std::env::temp_dir().join(format!("popline-cli-mesh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("a.key");
    let (ok, public_key, err) = popline(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(ok, "{err}");
    let base = format!(
        "[rtmp]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[egress]\nlisten = \"127.0.0.1:0\"\n[bans]\npath = \"{}\"\n",
        dir.join("bans.json").display()
    );
    let cases = [
        // No key file where it says.
        (
            "[mesh]\nid = \"a\"\nkey_file = \"/nonexistent/a.key\"\n".to_string(),
            "mesh.key_file",
        ),
        // A peer with this node's own key.
        (
            format!(
                "[mesh]\nid = \"a\"\nkey_file = \"{}\"\n[[mesh.peers]]\nid = \"b\"\naddr = \"127.0.0.1:4434\"\npublic_key = \"{}\"\n",
                key.display(),
                public_key.trim()
            ),
            "mesh.peers[0].public_key",
        ),
        // The mesh needs io_uring.
        (
            format!(
                "[engine]\nbackend = \"epoll\"\n[mesh]\nid = \"a\"\nlisten = \"127.0.0.1:0\"\nkey_file = \"{}\"\n",
                key.display()
            ),
            "runs on io_uring",
        ),
        // A static pull must name its stream.
        (
            "[[relays.pull]]\nurl = \"rtmp://127.0.0.1/live\"\nstream = \"live/x\"\n".to_string(),
            "relays.pull[0].url",
        ),
    ];
    for (i, (section, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("pop-{i}.toml"));
        std::fs::write(&path, format!("{base}{section}")).unwrap();
        let (ok, _, err) = popline(&["--config", path.to_str().unwrap()]);
        assert!(!ok, "case {i} must be refused");
        assert!(err.contains(want), "case {i}: the error names {want}:\n{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
