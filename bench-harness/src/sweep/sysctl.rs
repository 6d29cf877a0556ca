//! sysctl profiles (`netem-scripts/sysctl/NAME.conf`: `key = value` lines, `#` comments), applied through
//! `/proc/sys` and restored when the guard drops, on every exit path that unwinds.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One profile: its name and its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysctlProfile {
    /// The file's stem (`big-buffers`), or `none` for no change.
    pub name: String,
    /// `(key, value)` in file order.
    pub settings: Vec<(String, String)>,
}

impl SysctlProfile {
    /// The profile that changes nothing.
    pub fn none() -> SysctlProfile {
        SysctlProfile {
            name: "none".into(),
            settings: Vec::new(),
        }
    }

    /// Parses a profile's text.
    pub fn parse(name: &str, text: &str) -> Result<SysctlProfile> {
        let mut settings = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                bail!(
                    "sysctl profile {name}, line {}: expected `key = value`, got {line:?}",
                    i + 1
                );
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                bail!("sysctl profile {name}, line {}: bad key {k:?}", i + 1);
            }
            settings.push((k.to_string(), v.to_string()));
        }
        Ok(SysctlProfile {
            name: name.to_string(),
            settings,
        })
    }

    /// Loads `NAME` from `dir` (`none` needs no file).
    pub fn load(dir: &Path, name: &str) -> Result<SysctlProfile> {
        if name == "none" {
            return Ok(SysctlProfile::none());
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            bail!("bad sysctl profile name {name:?}");
        }
        let path = dir.join(format!("{name}.conf"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        SysctlProfile::parse(name, &text)
    }
}

/// `/proc/sys` path of a dotted key.
fn proc_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Values changed by [`apply`]; dropping it writes the old values back.
#[derive(Debug)]
pub struct Applied {
    restore: Vec<(String, String)>,
}

/// Applies `profile`, remembering each old value. A key that cannot be read or written is an error, after
/// restoring what was already changed.
pub fn apply(profile: &SysctlProfile) -> Result<Applied> {
    let mut applied = Applied { restore: Vec::new() };
    for (k, v) in &profile.settings {
        let path = proc_path(k);
        let old = std::fs::read_to_string(&path)
            .with_context(|| format!("reading sysctl {k} (profile {})", profile.name))?;
        std::fs::write(&path, v).with_context(|| format!("setting sysctl {k} = {v} (needs root)"))?;
        applied.restore.push((k.clone(), old.trim().to_string()));
    }
    Ok(applied)
}

impl Drop for Applied {
    fn drop(&mut self) {
        for (k, old) in self.restore.iter().rev() {
            if let Err(e) = std::fs::write(proc_path(k), old) {
                eprintln!("sweep: could not restore sysctl {k} = {old}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_bad_lines_are_refused() {
        let p = SysctlProfile::parse("t", "# c\nnet.core.rmem_max = 1\n\n net.core.wmem_max=2 \n").unwrap();
        assert_eq!(
            p.settings,
            vec![
                ("net.core.rmem_max".to_string(), "1".to_string()),
                ("net.core.wmem_max".to_string(), "2".to_string())
            ]
        );
        assert!(SysctlProfile::parse("t", "no equals sign").is_err());
        assert!(SysctlProfile::parse("t", "../../etc/passwd = x").is_err());
        assert!(SysctlProfile::load(Path::new("/nonexistent"), "../x").is_err());
        assert_eq!(
            SysctlProfile::load(Path::new("/nonexistent"), "none").unwrap(),
            SysctlProfile::none()
        );
    }

    #[test]
    fn the_shipped_profiles_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../netem-scripts/sysctl");
        for name in ["big-buffers", "busy-poll", "small-buffers"] {
            let p = SysctlProfile::load(&dir, name).unwrap();
            assert!(!p.settings.is_empty(), "{name}");
        }
    }

    #[test]
    fn applying_restores_on_drop() {
        if !is_root() {
            eprintln!("skipped: needs root to write /proc/sys");
            return;
        }
        let key = "net.core.netdev_max_backlog";
        let before = std::fs::read_to_string(proc_path(key)).unwrap();
        let want = if before.trim() == "12345" {
            "12346"
        } else {
            "12345"
        };
        let p = SysctlProfile::parse("t", &format!("{key} = {want}")).unwrap();
        {
            let _g = apply(&p).unwrap();
            assert_eq!(std::fs::read_to_string(proc_path(key)).unwrap().trim(), want);
        }
        assert_eq!(std::fs::read_to_string(proc_path(key)).unwrap(), before);
    }

    /// Whether this process runs as root (the owner of `/proc/self`).
    fn is_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
}
