//! A core's IO on one io_uring: its TCP listeners and connections, its UDP sockets and its cross-core waker
//! share one ring, and one `io_uring_enter` per loop iteration submits for all of them and waits for any.
//!
//! This is what lets a frame that arrives on a PoP link (UDP) reach a viewer's TCP connection on the same
//! thread with no hand-off: both drivers are reaped by the same [`CoreIo::reap`], which routes each
//! completion by its [`super::Tag`] to the driver that submitted it and reports a [`CoreEvent`].

use super::ring::{quiesce, Completion, Quiesce, Ring};
use super::tcp::{OnTcpEvent, TcpDriver, TcpEvent};
use super::udp::{UdpDriver, UringUdpConfig};
use super::{RingConfig, RingFeatures, UringTcpConfig};
use crate::udp::UdpSocket;
use bytes::BytesMut;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::RawFd;
use std::time::Duration;

/// A UDP socket of a [`CoreIo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpId(usize);

/// A TCP listener (and its connections) of a [`CoreIo`]: a core may serve several ports (RTMP, HTTP), each
/// with its own driver, and a connection is known by its listener and its [`super::TcpConnId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpId(usize);

/// What [`CoreIo::reap`] reports.
#[derive(Debug)]
pub enum CoreEvent<'a> {
    /// Something happened on a TCP listener or one of its connections.
    Tcp(TcpId, TcpEvent<'a>),
    /// A datagram (or a GRO run of datagrams of `segment` bytes each) arrived on a UDP socket.
    Datagram {
        /// The socket it arrived on.
        socket: UdpId,
        /// Its source.
        from: SocketAddr,
        /// The bytes (taken out of the receive buffer: the caller may keep them).
        bytes: BytesMut,
        /// The GRO segment size (`None`: one datagram).
        segment: Option<usize>,
    },
}

/// One core's TCP and UDP on one ring.
pub struct CoreIo {
    tcp: Vec<TcpDriver>,
    udp: Vec<UdpDriver>,
    // After the drivers: dropped last (and only after `Drop` quiesced them).
    ring: Ring,
    ready: Vec<Completion>,
}

impl std::fmt::Debug for CoreIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreIo")
            .field("ring", &self.ring)
            .field("tcp", &self.tcp)
            .field("udp", &self.udp)
            .finish()
    }
}

impl CoreIo {
    /// A ring with no drivers yet. Fails where io_uring is refused (see [`super::is_refused`]).
    pub fn new(config: &RingConfig) -> io::Result<CoreIo> {
        Ok(CoreIo {
            tcp: Vec::new(),
            udp: Vec::new(),
            ring: Ring::new(config)?,
            ready: Vec::new(),
        })
    }

    /// The flags the ring got.
    pub fn features(&self) -> RingFeatures {
        self.ring.features()
    }

    /// `io_uring_enter` calls so far.
    pub fn enters(&self) -> u64 {
        self.ring.enters()
    }

    /// Serves `listener` (bound and listening) on this ring, with a driver (and receive buffers) of its
    /// own; its events come as [`CoreEvent::Tcp`] with the returned id.
    pub fn listen(&mut self, listener: TcpListener, config: UringTcpConfig) -> io::Result<TcpId> {
        let driver = TcpDriver::new(&mut self.ring, listener, config)?;
        self.tcp.push(driver);
        Ok(TcpId(self.tcp.len() - 1))
    }

    /// Puts a UDP socket on this ring.
    pub fn add_udp(&mut self, socket: UdpSocket, config: &UringUdpConfig) -> io::Result<UdpId> {
        let driver = UdpDriver::new(&mut self.ring, socket, config)?;
        self.udp.push(driver);
        Ok(UdpId(self.udp.len() - 1))
    }

    /// A TCP listener's driver (sends, closes, counters).
    pub fn tcp(&mut self, id: TcpId) -> Option<&mut TcpDriver> {
        self.tcp.get_mut(id.0)
    }

    /// A TCP listener's driver, read-only.
    pub fn tcp_ref(&self, id: TcpId) -> Option<&TcpDriver> {
        self.tcp.get(id.0)
    }

    /// A UDP socket's driver (its send buffer, counters).
    pub fn udp(&mut self, id: UdpId) -> Option<&mut UdpDriver> {
        self.udp.get_mut(id.0)
    }

    /// A UDP socket's driver, read-only.
    pub fn udp_ref(&self, id: UdpId) -> Option<&UdpDriver> {
        self.udp.get(id.0)
    }

    /// Queues the batch built in `id`'s send buffer (see [`UdpDriver::queue_send`]).
    pub fn udp_queue_send(&mut self, id: UdpId, to: SocketAddr, segment: usize) -> io::Result<()> {
        match self.udp.get_mut(id.0) {
            Some(d) => d.queue_send(&mut self.ring, to, segment),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such udp socket")),
        }
    }

    /// Makes each wait return when `fd` becomes readable (a cross-core waker's eventfd, which the caller
    /// drains and keeps open while this ring lives).
    pub fn watch(&mut self, fd: RawFd) {
        self.ring.watch(fd);
    }

    /// Whether the watched fd (see [`Self::watch`]) became readable since the last call: only then does the
    /// caller need to drain it (no `read` per loop iteration).
    pub fn take_woken(&mut self) -> bool {
        self.ring.take_woken()
    }

    /// How the ring's waits gather completions: set at build (`RingConfig::batch`), read back here.
    pub fn wait_batch(&self) -> super::WaitBatch {
        self.ring.batch()
    }

    /// Changes how the following waits gather completions (see [`super::Ring::set_batch`]).
    pub fn set_wait_batch(&mut self, batch: super::WaitBatch) {
        self.ring.set_batch(batch);
    }

    /// Arms and flushes what every driver has queued, submits, and waits until a completion is ready or
    /// `timeout` passes (`None`: no limit; zero: just submit). One `io_uring_enter`.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        for t in &mut self.tcp {
            t.prepare(&mut self.ring)?;
        }
        for u in &mut self.udp {
            u.prepare(&mut self.ring)?;
        }
        // A UDP send's completion does not end the wait (a TCP write's still does: it may free room a
        // viewer's queue waits for).
        let udp = &self.udp;
        self.ring
            .submit_and_wait_quiet(timeout, &|c| udp.iter().any(|u| u.is_quiet(c)))
    }

    /// Handles every ready completion, reporting each event to `on`. Returns the number of completions.
    pub fn reap(&mut self, on: &mut dyn FnMut(CoreEvent<'_>)) -> usize {
        for (i, t) in self.tcp.iter_mut().enumerate() {
            t.report_closes(&mut |e| on(CoreEvent::Tcp(TcpId(i), e)));
        }
        self.ring.drain(&mut self.ready);
        let n = self.ready.len();
        for c in self.ready.drain(..) {
            route(&mut self.ring, &mut self.tcp, &mut self.udp, &c, on);
        }
        n
    }
}

/// Hands `c` to the driver its tag names (a stale tag, which cannot happen, is dropped).
fn route(
    ring: &mut Ring,
    tcp: &mut [TcpDriver],
    udp: &mut [UdpDriver],
    c: &Completion,
    on: &mut dyn FnMut(CoreEvent<'_>),
) {
    if let Some((i, t)) = tcp.iter_mut().enumerate().find(|(_, t)| t.tag() == c.tag) {
        let on_tcp: &mut OnTcpEvent<'_> = &mut |e| on(CoreEvent::Tcp(TcpId(i), e));
        t.complete(ring, c, on_tcp);
        return;
    }
    if let Some((i, u)) = udp.iter_mut().enumerate().find(|(_, u)| u.tag() == c.tag) {
        u.complete(c, &mut |from, bytes, segment| {
            on(CoreEvent::Datagram {
                socket: UdpId(i),
                from,
                bytes,
                segment,
            })
        });
    }
}

impl Drop for CoreIo {
    fn drop(&mut self) {
        let mut drivers: Vec<&mut dyn Quiesce> = Vec::with_capacity(self.udp.len() + self.tcp.len());
        for t in &mut self.tcp {
            drivers.push(t);
        }
        for u in &mut self.udp {
            drivers.push(u);
        }
        quiesce(&mut self.ring, &mut drivers);
    }
}
