//! The open-file limit: every player is a socket, so thousands of viewers need more than the usual 1024.

use anyhow::{Context, Result};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises this process's `RLIMIT_NOFILE` soft limit to `want` (and the hard limit with it, where the
/// process may: root with `CAP_SYS_RESOURCE`), or as far as the hard limit allows. Returns the soft limit now
/// in force; children (the servers) inherit it.
pub fn raise_nofile(want: u64) -> Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft >= want {
        return Ok(soft);
    }
    if want > hard && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return Ok(want);
    }
    let soft_now = want.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, soft_now, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    Ok(soft_now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_lowers_the_limit() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert!(raise_nofile(16).unwrap() >= soft.min(16));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, soft);
    }
}
