//! `engine`: the thread-per-core IO runtime of popline.
//!
//! This crate will own every socket, ring and syscall of the node: one thread per core, each with its own
//! io_uring (or epoll, where io_uring is refused), its UDP and TCP sockets and its timers. It is the only crate
//! of the workspace with `unsafe` code. The runtime itself lands with its own issue; until then this crate only
//! names the backends so that configuration and stats can refer to them.

/// Which kernel interface a core uses for its IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring with provided buffer rings and multishot receive (the default).
    Uring,
    /// epoll readiness, the fallback where io_uring is refused (e.g. Docker's default seccomp profile).
    Epoll,
}

impl Backend {
    /// The backend's name as it appears in logs, stats and config.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_are_the_config_spelling() {
        assert_eq!(Backend::Uring.name(), "uring");
        assert_eq!(Backend::Epoll.name(), "epoll");
    }
}
