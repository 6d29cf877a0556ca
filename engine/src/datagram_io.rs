//! One UDP socket behind one API on either backend: io_uring ([`UringUdp`]) or epoll ([`EpollUdp`]).
//!
//! The caller builds each send (one datagram, or a GSO batch of same-size datagrams) in a buffer the backend
//! lends ([`DatagramIo::send_buffer`]), queues it, then waits ([`DatagramIo::wait`]) for data or its timer,
//! and takes what arrived ([`DatagramIo::receive`]) as owned `BytesMut` runs (one datagram, or a GRO run with
//! its segment size) split from one receive arena, so a datagram can be kept by the transport without a copy
//! on epoll, and with one copy out of the provided buffer on io_uring.
//!
//! [`DatagramIo::open`] picks the backend: io_uring unless config forces epoll, and epoll with a logged
//! warning where io_uring is refused (seccomp, `kernel.io_uring_disabled`, an old kernel).

use crate::offload::{self, MAX_UDP_PAYLOAD};
use crate::poller::{Events, Interest, Poller};
use crate::udp::UdpSocket;
use crate::uring::udp::UringUdpConfig;
use crate::uring::{self, RingConfig, RingFeatures, UringUdp};
use crate::Backend;
use bytes::BytesMut;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::time::Duration;

/// Which backend to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring, or epoll where io_uring is refused (the default).
    #[default]
    Auto,
    /// io_uring only: fail where it is refused.
    Uring,
    /// epoll only.
    Epoll,
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "uring" | "io_uring" => Ok(BackendChoice::Uring),
            "epoll" => Ok(BackendChoice::Epoll),
            other => Err(format!("unknown backend {other:?} (auto, uring, epoll)")),
        }
    }
}

/// The knobs of a [`DatagramIo`]: what a kernel-tuning sweep varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoConfig {
    /// Backend to use.
    pub backend: BackendChoice,
    /// Send GSO batches (where the kernel takes UDP_SEGMENT).
    pub gso: bool,
    /// Receive with UDP GRO.
    pub gro: bool,
    /// io_uring: ring size and SQPOLL.
    pub ring: RingConfig,
    /// io_uring: provided receive buffers (a power of two; see [`crate::uring::udp::DEFAULT_RECV_BUFFERS`]).
    pub buffer_count: u16,
    /// io_uring: sends in flight at once.
    pub send_slots: usize,
    /// `SO_BUSY_POLL` in microseconds (0: off).
    pub busy_poll_us: u32,
    /// Largest datagram received without GRO (bytes); longer ones are dropped (io_uring) or truncated (epoll).
    pub max_datagram_bytes: usize,
    /// Size of the receive arena datagrams are split from (reused once they have all been dropped).
    pub recv_arena_bytes: usize,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            backend: BackendChoice::Auto,
            gso: true,
            gro: true,
            ring: RingConfig::default(),
            buffer_count: crate::uring::udp::DEFAULT_RECV_BUFFERS,
            send_slots: 32,
            busy_poll_us: 0,
            max_datagram_bytes: 2048,
            recv_arena_bytes: 1 << 20,
        }
    }
}

/// Counters common to both backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoStats {
    /// Syscalls made for IO (`io_uring_enter`, or `epoll_wait` + `sendmsg` + `recvmsg`).
    pub syscalls: u64,
    /// Receives that returned data (one datagram or a GRO run).
    pub recv_runs: u64,
    /// io_uring: times the provided buffer ring ran dry (`ENOBUFS`).
    pub recv_no_buffers: u64,
    /// Datagrams dropped because they did not fit a buffer.
    pub recv_truncated: u64,
    /// Receives that failed.
    pub recv_errors: u64,
    /// Sends (one datagram or one GSO batch).
    pub send_batches: u64,
    /// Sends refused for a full socket buffer (kept and retried) or with every io_uring slot in flight.
    pub send_blocked: u64,
    /// Sends that failed (datagrams lost; the transport repairs).
    pub send_errors: u64,
    /// GSO sends the kernel refused (GSO then off).
    pub gso_refused: u64,
}

impl From<uring::UringStats> for IoStats {
    /// An io_uring socket's counters in the common form (`syscalls`: its ring's `io_uring_enter` calls, as
    /// `enters` holds them).
    fn from(s: uring::UringStats) -> IoStats {
        IoStats {
            syscalls: s.enters,
            recv_runs: s.recv_completions,
            recv_no_buffers: s.recv_no_buffers,
            recv_truncated: s.recv_truncated,
            recv_errors: s.recv_errors,
            send_batches: s.send_completions.saturating_sub(s.send_again),
            send_blocked: s.send_again + s.send_slots_exhausted,
            send_errors: s.send_errors,
            gso_refused: s.gso_refused,
        }
    }
}

/// What [`DatagramIo::receive`] calls for each receive: the source, the bytes (one datagram or a GRO run,
/// owned) and the GRO segment size (`None`: one datagram).
pub type OnRun<'a> = dyn FnMut(SocketAddr, BytesMut, Option<usize>) + 'a;

/// A UDP socket on an epoll reactor, with GSO sends and GRO receives where the kernel takes them.
#[derive(Debug)]
pub struct EpollUdp {
    socket: UdpSocket,
    poller: Poller,
    events: Events,
    buf: Vec<u8>,
    /// `buf` holds a batch the socket refused (`EWOULDBLOCK`): destination and segment size.
    pending: Option<(SocketAddr, usize)>,
    want_write: bool,
    gso: bool,
    gro: bool,
    stats: IoStats,
}

const SOCKET_TOKEN: u64 = 0;
const WATCH_TOKEN: u64 = 1;

impl EpollUdp {
    /// Registers `socket` with a new epoll instance.
    pub fn new(socket: UdpSocket, config: &IoConfig) -> io::Result<EpollUdp> {
        socket.set_nonblocking(true)?;
        let poller = Poller::new()?;
        poller.add(socket.as_raw_fd(), SOCKET_TOKEN, Interest::READABLE)?;
        let gso = config.gso && offload::gso_supported(socket.as_raw_fd());
        let gro = config.gro && offload::set_gro(socket.as_raw_fd(), true).is_ok();
        Ok(EpollUdp {
            socket,
            poller,
            events: Events::with_capacity(4),
            buf: Vec::with_capacity(MAX_UDP_PAYLOAD),
            pending: None,
            want_write: false,
            gso,
            gro,
            stats: IoStats::default(),
        })
    }

    fn send_buffer(&mut self) -> Option<&mut Vec<u8>> {
        if self.pending.is_some() {
            return None;
        }
        Some(&mut self.buf)
    }

    fn queue_send(&mut self, to: SocketAddr, segment: usize) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.try_send(to, segment)
    }

    fn try_send(&mut self, to: SocketAddr, segment: usize) -> io::Result<()> {
        let segment = if self.gso { segment } else { self.buf.len() };
        self.stats.syscalls += 1;
        match self.socket.send_segmented(&self.buf, segment, to) {
            Ok(_) => {
                self.stats.send_batches += 1;
                self.buf.clear();
                self.pending = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.stats.send_blocked += 1;
                self.pending = Some((to, segment));
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) && segment < self.buf.len() => {
                self.stats.gso_refused += 1;
                self.gso = false;
                tracing::warn!(local = %self.socket.local_addr(), "UDP GSO refused (EIO); turned off");
                self.buf.clear();
                self.pending = None;
            }
            Err(e) => {
                self.stats.send_errors += 1;
                tracing::debug!(error = %e, %to, "udp send failed; datagrams dropped");
                self.buf.clear();
                self.pending = None;
            }
        }
        self.set_write_interest(self.pending.is_some())
    }

    fn set_write_interest(&mut self, on: bool) -> io::Result<()> {
        if on != self.want_write {
            let interest = if on { Interest::BOTH } else { Interest::READABLE };
            self.poller
                .modify(self.socket.as_raw_fd(), SOCKET_TOKEN, interest)?;
            self.want_write = on;
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stats.syscalls += 1;
        self.poller.wait(&mut self.events, timeout)?;
        if self.events.iter().any(|r| r.writable) {
            if let Some((to, segment)) = self.pending {
                self.try_send(to, segment)?;
            }
        }
        Ok(())
    }

    fn receive(&mut self, arena: &mut RecvArena, max_runs: usize, on: &mut OnRun<'_>) -> usize {
        let max_len = if self.gro {
            MAX_UDP_PAYLOAD
        } else {
            arena.max_datagram
        };
        for n in 0..max_runs {
            arena.make_room(max_len);
            self.stats.syscalls += 1;
            match self.socket.recv_coalesced(&mut arena.buf, max_len) {
                Ok((len, from, segment)) => {
                    self.stats.recv_runs += 1;
                    on(from, arena.buf.split_to(len), segment);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. ECONNREFUSED from an ICMP error: it concerns an earlier send, not this socket.
                    self.stats.recv_errors += 1;
                    tracing::debug!(error = %e, "udp receive failed");
                }
            }
        }
        max_runs
    }
}

/// The arena received datagrams are split from (a `BytesMut` whose allocation is reused once every datagram
/// split from it has been dropped).
#[derive(Debug)]
struct RecvArena {
    buf: BytesMut,
    arena_bytes: usize,
    max_datagram: usize,
}

impl RecvArena {
    fn make_room(&mut self, len: usize) {
        self.buf.clear();
        if self.buf.capacity() < len {
            // Earlier datagrams split from the arena may still be alive (zero-copy delivery); reserving reuses
            // the allocation if they are gone and starts a fresh one otherwise.
            self.buf.reserve(self.arena_bytes.max(len));
        }
    }
}

#[derive(Debug)]
enum Inner {
    Epoll(Box<EpollUdp>),
    Uring(Box<UringUdp>),
}

/// A UDP socket on the backend [`DatagramIo::open`] chose.
#[derive(Debug)]
pub struct DatagramIo {
    inner: Inner,
    arena: RecvArena,
    /// Why io_uring is not in use when `Auto` fell back to epoll.
    fallback_reason: Option<String>,
}

impl DatagramIo {
    /// Puts `socket` on the configured backend. With [`BackendChoice::Auto`], an io_uring refusal (see
    /// [`uring::is_refused`]) or a missing io_uring feature falls back to epoll with a logged warning.
    pub fn open(socket: UdpSocket, config: &IoConfig) -> io::Result<DatagramIo> {
        if config.busy_poll_us > 0 {
            if let Err(e) = offload::set_busy_poll(socket.as_raw_fd(), config.busy_poll_us) {
                tracing::warn!(error = %e, "SO_BUSY_POLL refused");
            }
        }
        let arena = RecvArena {
            buf: BytesMut::with_capacity(config.recv_arena_bytes),
            arena_bytes: config.recv_arena_bytes.max(MAX_UDP_PAYLOAD),
            max_datagram: config.max_datagram_bytes.clamp(1, MAX_UDP_PAYLOAD),
        };
        let mut fallback_reason = None;
        let inner = match config.backend {
            BackendChoice::Epoll => Inner::Epoll(Box::new(EpollUdp::new(socket, config)?)),
            BackendChoice::Uring => Inner::Uring(Box::new(UringUdp::new(socket, &config.uring_udp())?)),
            BackendChoice::Auto => match uring::probe() {
                Ok(_) => Inner::Uring(Box::new(UringUdp::new(socket, &config.uring_udp())?)),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "io_uring is not available (refused by seccomp, kernel.io_uring_disabled or the kernel); \
                         using the epoll backend"
                    );
                    fallback_reason = Some(e.to_string());
                    Inner::Epoll(Box::new(EpollUdp::new(socket, config)?))
                }
            },
        };
        Ok(DatagramIo {
            inner,
            arena,
            fallback_reason,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Epoll(_) => Backend::Epoll,
            Inner::Uring(_) => Backend::Uring,
        }
    }

    /// Why `Auto` fell back to epoll, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// The io_uring setup flags (`None` on epoll).
    pub fn ring_features(&self) -> Option<RingFeatures> {
        match &self.inner {
            Inner::Epoll(_) => None,
            Inner::Uring(u) => Some(u.features()),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        match &self.inner {
            Inner::Epoll(e) => &e.socket,
            Inner::Uring(u) => u.socket(),
        }
    }

    /// Whether sends use GSO.
    pub fn gso(&self) -> bool {
        match &self.inner {
            Inner::Epoll(e) => e.gso,
            Inner::Uring(u) => u.gso(),
        }
    }

    /// Whether receives use GRO.
    pub fn gro(&self) -> bool {
        match &self.inner {
            Inner::Epoll(e) => e.gro,
            Inner::Uring(u) => u.gro(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> IoStats {
        match &self.inner {
            Inner::Epoll(e) => e.stats,
            Inner::Uring(u) => IoStats::from(u.stats()),
        }
    }

    /// An empty buffer to build the next send in, or `None` while the backend cannot take one (a refused
    /// batch is waiting for room, or every io_uring slot is in flight): back-pressure.
    pub fn send_buffer(&mut self) -> Option<&mut Vec<u8>> {
        match &mut self.inner {
            Inner::Epoll(e) => e.send_buffer(),
            Inner::Uring(u) => u.send_buffer(),
        }
    }

    /// Sends the buffer from [`Self::send_buffer`] to `to` as datagrams of `segment` bytes (the last may be
    /// shorter; one datagram when `segment >= len`). Socket errors are counted, not returned.
    pub fn queue_send(&mut self, to: SocketAddr, segment: usize) -> io::Result<()> {
        match &mut self.inner {
            Inner::Epoll(e) => e.queue_send(to, segment),
            Inner::Uring(u) => u.queue_send(to, segment),
        }
    }

    /// Makes [`Self::wait`] return when `fd` becomes readable (e.g. a [`crate::Waker`] another core writes
    /// to). The caller drains `fd` and keeps it open while this socket lives.
    pub fn watch(&mut self, fd: std::os::fd::RawFd) -> io::Result<()> {
        match &mut self.inner {
            Inner::Epoll(e) => e.poller.add(fd, WATCH_TOKEN, Interest::READABLE),
            Inner::Uring(u) => {
                u.watch(fd);
                Ok(())
            }
        }
    }

    /// Whether this socket's waits can gather several completions (io_uring where the kernel has `min_wait`,
    /// 6.12+); epoll, and older kernels, wake at the first event.
    pub fn can_batch_waits(&self) -> bool {
        match &self.inner {
            Inner::Epoll(_) => false,
            Inner::Uring(u) => u.features().min_wait,
        }
    }

    /// How the following waits gather completions (io_uring; epoll always wakes at the first event).
    pub fn set_wait_batch(&mut self, batch: crate::uring::WaitBatch) {
        if let Inner::Uring(u) = &mut self.inner {
            u.set_wait_batch(batch);
        }
    }

    /// Submits queued sends and waits for data, room to send, or `timeout` (`None`: no limit; zero: no wait).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match &mut self.inner {
            Inner::Epoll(e) => e.wait(timeout),
            Inner::Uring(u) => u.wait(timeout),
        }
    }

    /// Hands what has arrived to `on` (source, bytes, GRO segment size), at most `max_runs` receives; returns
    /// how many there were.
    pub fn receive(&mut self, max_runs: usize, on: &mut OnRun<'_>) -> usize {
        match &mut self.inner {
            Inner::Epoll(e) => e.receive(&mut self.arena, max_runs, on),
            // Zero copy: the buffer the kernel filled is handed over as is.
            Inner::Uring(u) => u.reap(on),
        }
    }
}

impl IoConfig {
    /// The io_uring socket settings these knobs make (for a socket on a shared ring, [`crate::uring::CoreIo`]).
    pub fn uring_udp(&self) -> UringUdpConfig {
        UringUdpConfig {
            ring: self.ring,
            buffer_count: self.buffer_count,
            buffer_bytes: self.max_datagram_bytes.clamp(1, MAX_UDP_PAYLOAD),
            gro: self.gro,
            gso: self.gso,
            send_slots: self.send_slots,
        }
    }
}
