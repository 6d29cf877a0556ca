//! `engine`: the thread-per-core IO runtime of popline.
//!
//! This crate owns every socket, ring and syscall of the node: one thread per core, each with its own
//! io_uring (or epoll, where io_uring is refused), its UDP and TCP sockets and its timers. It is the only crate
//! of the workspace with `unsafe` code, and it knows no protocol and no media: the glue that runs a
//! `transport::Endpoint` on a core lives above it (`relay::link`), as the `quinn` crate sits above
//! quinn-proto and quinn-udp.
//!
//! - [`uring`]: io_uring rings, provided-buffer rings, [`uring::CoreIo`] (a core's TCP and UDP drivers on one
//!   shared [`uring::Ring`]), and [`uring::UringUdp`] and [`uring::UringTcp`] (one driver on a ring of its own);
//! - [`datagram_io`]: [`DatagramIo`], one UDP socket on io_uring or epoll behind one API;
//! - [`udp`]: a non-blocking UDP socket (socket2) with large, reported socket buffers;
//! - [`offload`]: UDP GSO/GRO control messages;
//! - [`batch`]: `sendmmsg`/`recvmmsg`, up to 64 datagrams per syscall (the plain-socket baseline);
//! - [`poller`]: a minimal epoll reactor with deadline-bounded waits;
//! - [`tcp`]: SO_REUSEPORT listeners (one per core) and non-blocking streams for the node's RTMP clients;
//! - [`waker`]: an eventfd to wake another core's poller; [`affinity`]: pinning a core's thread to a CPU;
//! - [`limits`]: the process's file-descriptor limit; [`seccomp`]: refusing io_uring (fallback tests).

pub mod affinity;
pub mod batch;
pub mod datagram_io;
pub mod limits;
pub mod offload;
pub mod poller;
pub mod seccomp;
pub mod tcp;
pub mod udp;
pub mod uring;
pub mod waker;

pub use datagram_io::{BackendChoice, DatagramIo, IoConfig, IoStats};
pub use poller::{Events, Interest, Poller, Readiness};
pub use tcp::{Listener, ListenerConfig, Liveness};
pub use udp::{BufferSizes, UdpConfig, UdpSocket};
pub use waker::Waker;

/// Which kernel interface a core uses for its IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring with provided buffer rings and multishot receive (the default).
    Uring,
    /// epoll readiness, the fallback where io_uring is refused (e.g. Docker's default seccomp profile).
    Epoll,
}

impl Backend {
    /// The backend a choice lands on where io_uring is available (`Auto` means io_uring).
    pub fn from_choice(choice: BackendChoice) -> Backend {
        match choice {
            BackendChoice::Epoll => Backend::Epoll,
            BackendChoice::Auto | BackendChoice::Uring => Backend::Uring,
        }
    }

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
