//! TCP on an io_uring: one multishot `accept` on a listener, one multishot `recv` per connection into a
//! provided buffer ring, and vectored sends of queued `Bytes` with a per-connection byte bound.
//!
//! The payloads a caller sends are `Bytes` shared by reference (the same frame for every viewer): a send
//! queues the handle, and one `writev` per connection takes up to [`MAX_IOVECS`] of them at a time. A peer
//! that does not read fills its socket buffer, then its queue up to `max_queued_bytes`; past that
//! [`UringTcp::send`] refuses with [`SendError::Full`] and the caller applies its policy (drop frames,
//! disconnect). Memory per connection stays bounded whatever the peer does.
//!
//! [`TcpDriver`] is the listener's side of a [`Ring`] that other drivers may share (a core's UDP sockets);
//! [`UringTcp`] is one driver on a ring of its own.

use super::buf_ring::ProvidedBuffers;
use super::ring::{quiesce, Completion, Quiesce, Ring, Tag, LOW_MAX};
use super::{RingConfig, RingFeatures};
use bytes::{Buf, Bytes};
use io_uring::types::Fd;
use io_uring::{cqueue, opcode, squeue};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long accepts stay paused after one failed (out of descriptors or memory): the listener would fail
/// again at once, so re-arming it at every wait would spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Most buffers one `writev` takes from a connection's queue.
pub const MAX_IOVECS: usize = 64;
/// `user_data` (the driver's bits) of the multishot accept.
const ACCEPT: u64 = LOW_MAX;
/// Low bits of a connection's `user_data`: which operation completed.
const OP_RECV: u64 = 0;
const OP_SEND: u64 = 1;

/// A connection's id: its slot and the slot's generation (a stale id never reaches a newer connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpConnId {
    index: u32,
    generation: u32,
}

/// How to set up a [`UringTcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringTcpConfig {
    /// The ring.
    pub ring: RingConfig,
    /// Provided receive buffers (a power of two), shared by every connection.
    pub buffer_count: u16,
    /// Bytes per receive buffer.
    pub buffer_bytes: usize,
    /// Bytes queued per connection beyond which [`UringTcp::send`] refuses (a buffer sent to an empty queue
    /// is always taken, whatever its size).
    pub max_queued_bytes: usize,
    /// Connections at once; accepts beyond are closed at once and counted.
    pub max_connections: usize,
    /// TCP keepalive and TCP_USER_TIMEOUT set on each accepted connection.
    pub liveness: crate::tcp::Liveness,
}

impl Default for UringTcpConfig {
    fn default() -> Self {
        UringTcpConfig {
            ring: RingConfig::default(),
            buffer_count: 512,
            buffer_bytes: 16 << 10,
            max_queued_bytes: 4 << 20,
            max_connections: 65_536,
            liveness: crate::tcp::Liveness::default(),
        }
    }
}

/// Why [`UringTcp::send`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection's queue is at its bound (the peer is not reading fast enough).
    #[error("send queue full")]
    Full,
    /// No such connection (closed).
    #[error("connection closed")]
    Closed,
}

/// What [`TcpDriver::complete`] reports.
#[derive(Debug)]
pub enum TcpEvent<'a> {
    /// A new connection.
    Accepted(TcpConnId, SocketAddr),
    /// Bytes from a connection (valid for the call only; the buffer goes back to the ring after it).
    Data(TcpConnId, &'a [u8]),
    /// A connection's queue drained below half its bound after a refused send.
    Writable(TcpConnId),
    /// A connection ended (peer closed, error, or [`TcpDriver::close`]); its id is dead.
    Closed(TcpConnId, Option<io::Error>),
}

/// What [`TcpDriver::complete`] calls with each event.
pub type OnTcpEvent<'a> = dyn FnMut(TcpEvent<'_>) + 'a;

/// Counters of a [`UringTcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Accepts closed at once (over `max_connections`) or failed.
    pub accept_refused: u64,
    /// Times a failed accept paused accepting for [`ACCEPT_BACKOFF`].
    pub accept_pauses: u64,
    /// Connections closed.
    pub closed: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Sends refused at the queue bound.
    pub send_full: u64,
    /// Times the buffer ring ran dry (a connection's receive was re-armed later).
    pub recv_no_buffers: u64,
    /// `io_uring_enter` calls.
    pub enters: u64,
}

struct Conn {
    generation: u32,
    fd: Option<OwnedFd>,
    peer: SocketAddr,
    recv_armed: bool,
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    /// The iovecs of the send in flight (boxed: the kernel reads them until the completion).
    iovecs: Box<[libc::iovec; MAX_IOVECS]>,
    sending: bool,
    /// Listed in `to_send`: its queue goes out in one `writev` at the next wait.
    send_listed: bool,
    /// A send was refused: report `Writable` when the queue drains.
    refused: bool,
    /// Close once the queue is written ([`TcpDriver::close_after_flush`]).
    close_when_drained: bool,
    closing: bool,
    error: Option<io::Error>,
}

/// A TCP listener's and its connections' operations on a shared [`Ring`]. It has no `Drop` of its own: its
/// owner quiesces it on the ring ([`super::ring::quiesce`]) before either goes.
pub struct TcpDriver {
    tag: Tag,
    listener: TcpListener,
    accept_armed: bool,
    /// A failed accept paused accepting until then.
    accept_paused_until: Option<Instant>,
    /// Open connections (slots in use).
    open: usize,
    bufs: ProvidedBuffers,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    generations: Vec<u32>,
    /// Connections whose receive is to be re-armed (new, or after ENOBUFS).
    rearm: Vec<u32>,
    /// Connections closed by [`TcpDriver::close`] whose end is to be reported, by id: one that ended
    /// meanwhile may have freed its slot to a new connection, which this must never close.
    pending_close: Vec<TcpConnId>,
    /// Connections with queued bytes and no send in flight: one `writev` each at the next wait, so the
    /// buffers queued between two waits leave together.
    to_send: Vec<u32>,
    config: UringTcpConfig,
    stats: TcpStats,
}

impl std::fmt::Debug for TcpDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpDriver")
            .field("connections", &self.connection_count())
            .field("stats", &self.stats)
            .finish()
    }
}

fn user_data(index: u32, op: u64) -> u64 {
    (u64::from(index) << 1) | op
}

impl TcpDriver {
    /// Serves `listener` (already bound and listening) on `ring` (`config.ring` is not used: the ring exists).
    pub fn new(ring: &mut Ring, listener: TcpListener, config: UringTcpConfig) -> io::Result<TcpDriver> {
        let (tag, group) = ring.new_driver()?;
        listener.set_nonblocking(false)?;
        let bufs =
            ProvidedBuffers::register(ring.io_uring(), group, config.buffer_count, config.buffer_bytes)?;
        Ok(TcpDriver {
            tag,
            listener,
            accept_armed: false,
            accept_paused_until: None,
            open: 0,
            bufs,
            conns: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            rearm: Vec::new(),
            pending_close: Vec::new(),
            to_send: Vec::new(),
            config,
            stats: TcpStats::default(),
        })
    }

    /// The driver's tag on its ring: completions that carry it go to [`Self::complete`].
    pub fn tag(&self) -> Tag {
        self.tag
    }

    /// The listener's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The counters.
    pub fn stats(&self) -> TcpStats {
        self.stats
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.open
    }

    /// Bytes queued for `id` and not yet written to its socket.
    pub fn queued_bytes(&self, id: TcpConnId) -> Option<usize> {
        self.conn(id).map(|c| c.queued_bytes)
    }

    /// The peer of `id`.
    pub fn peer(&self, id: TcpConnId) -> Option<SocketAddr> {
        self.conn(id).map(|c| c.peer)
    }

    fn conn(&self, id: TcpConnId) -> Option<&Conn> {
        self.conns
            .get(id.index as usize)?
            .as_ref()
            .filter(|c| c.generation == id.generation && !c.closing)
    }

    /// Queues `data` for `id` (the same `Bytes` may go to many connections). Refuses with
    /// [`SendError::Full`] when the queue would pass `max_queued_bytes` (nothing is queued then).
    pub fn send(&mut self, id: TcpConnId, data: Bytes) -> Result<(), SendError> {
        let max = self.config.max_queued_bytes;
        let c = self
            .conns
            .get_mut(id.index as usize)
            .and_then(|c| c.as_mut())
            .filter(|c| c.generation == id.generation && !c.closing)
            .ok_or(SendError::Closed)?;
        if c.queued_bytes > 0 && c.queued_bytes + data.len() > max {
            c.refused = true;
            self.stats.send_full += 1;
            return Err(SendError::Full);
        }
        c.queued_bytes += data.len();
        c.queue.push_back(data);
        if !c.sending && !c.send_listed {
            c.send_listed = true;
            self.to_send.push(id.index);
        }
        Ok(())
    }

    /// Closes `id` once what is queued for it is written (at once if nothing is): a refusal's last message
    /// reaches the peer before the close. A peer that never reads is closed when the caller gives up on it
    /// with [`TcpDriver::close`]. A `Closed` event follows.
    pub fn close_after_flush(&mut self, id: TcpConnId) {
        let drained = match self
            .conns
            .get_mut(id.index as usize)
            .and_then(|c| c.as_mut())
            .filter(|c| c.generation == id.generation && !c.closing)
        {
            Some(c) if !c.queue.is_empty() => {
                c.close_when_drained = true;
                false
            }
            Some(_) => true,
            None => false,
        };
        if drained {
            self.close(id);
        }
    }

    /// Closes `id` once its in-flight operations finish (queued data is dropped, and the buffers of a send in
    /// flight are kept until it completes); a `Closed` event follows.
    pub fn close(&mut self, id: TcpConnId) {
        if let Some(c) = self
            .conns
            .get_mut(id.index as usize)
            .and_then(|c| c.as_mut())
            .filter(|c| c.generation == id.generation)
        {
            c.closing = true;
            c.queued_bytes = 0;
            if !c.sending {
                c.queue.clear();
            }
            // Else a `writev` in flight reads iovecs that point into the queue's buffers: they stay until its
            // completion, after which the connection finishes (`finish_close`) and drops them.
            if let Some(fd) = &c.fd {
                // SAFETY: `fd` is an open socket owned by the connection; shutdown takes no pointers. It ends the
                // multishot receive (it completes with 0) and any send in flight, after which the fd is closed.
                unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
            }
            self.pending_close.push(id);
        }
    }

    fn submit_send(&mut self, ring: &mut Ring, index: u32) -> io::Result<()> {
        let Some(Some(c)) = self.conns.get_mut(index as usize) else {
            return Ok(());
        };
        let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return Ok(());
        };
        let mut n = 0;
        for (slot, b) in c.iovecs.iter_mut().zip(c.queue.iter()) {
            *slot = libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            };
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        c.sending = true;
        let entry = opcode::Writev::new(Fd(fd), c.iovecs.as_ptr(), n as u32)
            .build()
            .user_data(self.tag.user_data(user_data(index, OP_SEND)));
        Self::push(ring, &entry)
    }

    fn push(ring: &mut Ring, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: entries point only at memory that outlives their completion: a connection's boxed iovecs
        // and the `Bytes` they name stay in its queue until the send completes (the queue is only popped
        // then, and a closing connection keeps its slot until every operation has completed), the provided
        // buffers are unregistered only after the driver is quiet.
        unsafe { ring.push(entry) }
    }

    /// What to do before the ring waits: arm the accept, re-arm receives, and start one `writev` per
    /// connection with bytes queued since the last wait.
    pub fn prepare(&mut self, ring: &mut Ring) -> io::Result<()> {
        if self
            .accept_paused_until
            .is_some_and(|until| Instant::now() >= until)
        {
            self.accept_paused_until = None;
        }
        if !self.accept_armed && !self.at_capacity() && self.accept_paused_until.is_none() {
            let entry = opcode::AcceptMulti::new(Fd(self.listener.as_raw_fd()))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(self.tag.user_data(ACCEPT));
            Self::push(ring, &entry)?;
            self.accept_armed = true;
        }
        let rearm = std::mem::take(&mut self.rearm);
        for index in rearm {
            self.arm_recv(ring, index)?;
        }
        let to_send = std::mem::take(&mut self.to_send);
        for index in to_send {
            if let Some(Some(c)) = self.conns.get_mut(index as usize) {
                c.send_listed = false;
                if !c.sending && !c.closing {
                    self.submit_send(ring, index)?;
                }
            }
        }
        Ok(())
    }

    fn at_capacity(&self) -> bool {
        self.connection_count() >= self.config.max_connections
    }

    fn arm_recv(&mut self, ring: &mut Ring, index: u32) -> io::Result<()> {
        let group = self.bufs.group();
        let Some(Some(c)) = self.conns.get_mut(index as usize) else {
            return Ok(());
        };
        if c.recv_armed || c.closing {
            return Ok(());
        }
        let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return Ok(());
        };
        c.recv_armed = true;
        let entry = opcode::RecvMulti::new(Fd(fd), group)
            .build()
            .user_data(self.tag.user_data(user_data(index, OP_RECV)));
        Self::push(ring, &entry)
    }

    /// Reports the end of the connections [`Self::close`] closed that have nothing in flight: call once per
    /// round of completions, before them.
    pub fn report_closes(&mut self, on: &mut OnTcpEvent<'_>) {
        for id in std::mem::take(&mut self.pending_close) {
            // A connection that ended since (its last operation completed in the same round of completions as
            // its close) is gone; its slot may hold a newer connection, which is not this one to close.
            let same = self
                .conns
                .get(id.index as usize)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.generation == id.generation);
            if same {
                self.finish_or_wait(id.index, on);
            }
        }
    }

    /// Handles one of this driver's completions, reporting what it means to `on`.
    pub fn complete(&mut self, ring: &mut Ring, c: &Completion, on: &mut OnTcpEvent<'_>) {
        match c.data {
            ACCEPT => self.on_accept(c.result, c.flags, on),
            d => {
                let index = (d >> 1) as u32;
                if d & 1 == OP_SEND {
                    self.on_send(ring, index, c.result, on);
                } else {
                    self.on_recv(index, c.result, c.flags, on);
                }
            }
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32, on: &mut OnTcpEvent<'_>) {
        if !cqueue::more(flags) {
            self.accept_armed = false;
        }
        if res == -libc::ECANCELED {
            // Our own cancellation (the driver is quiescing): not a failed accept.
            return;
        }
        if res < 0 {
            self.stats.accept_refused += 1;
            if !self.accept_armed {
                // The listener stays readable while the cause lasts (EMFILE, ENFILE, ENOMEM): wait before
                // asking again instead of failing at every wait.
                self.stats.accept_pauses += 1;
                self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                tracing::warn!(
                    error = %io::Error::from_raw_os_error(-res),
                    pause_ms = ACCEPT_BACKOFF.as_millis() as u64,
                    "accept failed; accepts paused"
                );
            }
            return;
        }
        // SAFETY: a successful accept completion's result is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        if self.at_capacity() {
            self.stats.accept_refused += 1;
            return; // dropped: closed at once
        }
        let peer = peer_addr(fd.as_raw_fd()).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let _ = socket2::SockRef::from(&fd).set_nodelay(true);
        if let Err(error) = crate::tcp::set_liveness(&fd, self.config.liveness) {
            tracing::debug!(%error, "cannot set keepalive or TCP_USER_TIMEOUT on an accepted connection");
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.generations.push(0);
                (self.conns.len() - 1) as u32
            }
        };
        let generation = self.generations[index as usize].wrapping_add(1);
        self.generations[index as usize] = generation;
        self.conns[index as usize] = Some(Conn {
            generation,
            fd: Some(fd),
            peer,
            recv_armed: false,
            queue: VecDeque::new(),
            queued_bytes: 0,
            iovecs: Box::new(
                [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; MAX_IOVECS],
            ),
            sending: false,
            send_listed: false,
            refused: false,
            close_when_drained: false,
            closing: false,
            error: None,
        });
        self.stats.accepted += 1;
        self.open += 1;
        self.rearm.push(index);
        on(TcpEvent::Accepted(TcpConnId { index, generation }, peer));
    }

    fn on_recv(&mut self, index: u32, res: i32, flags: u32, on: &mut OnTcpEvent<'_>) {
        let bid = cqueue::buffer_select(flags);
        let more = cqueue::more(flags);
        let Some(Some(c)) = self.conns.get_mut(index as usize) else {
            if let Some(b) = bid {
                self.bufs.recycle(b);
            }
            return;
        };
        if !more {
            c.recv_armed = false;
        }
        let id = TcpConnId {
            index,
            generation: c.generation,
        };
        if res > 0 {
            if let Some(b) = bid {
                self.bufs.taken(b);
                self.stats.bytes_received += res as u64;
                if !c.closing {
                    // Read in place: the buffer goes back to the ring right after the callback.
                    if let Some(data) = self.bufs.get(b, res as usize) {
                        on(TcpEvent::Data(id, data));
                    }
                }
                self.bufs.recycle(b);
            }
            if !more {
                self.rearm.push(index);
            }
            return;
        }
        if let Some(b) = bid {
            self.bufs.recycle(b);
        }
        if res == -libc::ENOBUFS {
            self.stats.recv_no_buffers += 1;
            if c.closing {
                self.pending_close.push(id);
            } else {
                self.rearm.push(index);
            }
            return;
        }
        // 0: the peer closed (or our shutdown); < 0: an error.
        if res < 0 {
            c.error.get_or_insert(io::Error::from_raw_os_error(-res));
        }
        c.closing = true;
        if !more {
            self.finish_or_wait(index, on);
        }
    }

    fn on_send(&mut self, ring: &mut Ring, index: u32, res: i32, on: &mut OnTcpEvent<'_>) {
        let half = self.config.max_queued_bytes / 2;
        let Some(Some(c)) = self.conns.get_mut(index as usize) else {
            return;
        };
        c.sending = false;
        let id = TcpConnId {
            index,
            generation: c.generation,
        };
        if res < 0 {
            if res == -libc::EAGAIN || res == -libc::EINTR {
                let _ = self.submit_send(ring, index);
                return;
            }
            c.error.get_or_insert(io::Error::from_raw_os_error(-res));
            c.closing = true;
            c.queue.clear();
            c.queued_bytes = 0;
            self.finish_or_wait(index, on);
            return;
        }
        let mut written = res as usize;
        self.stats.bytes_sent += written as u64;
        c.queued_bytes = c.queued_bytes.saturating_sub(written);
        while written > 0 {
            let Some(front) = c.queue.front_mut() else { break };
            if front.len() <= written {
                written -= front.len();
                c.queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
        if c.closing {
            self.finish_or_wait(index, on);
            return;
        }
        let report = c.refused && c.queued_bytes <= half;
        if report {
            c.refused = false;
        }
        if c.queue.is_empty() && c.close_when_drained {
            self.close(id);
            return;
        }
        if !c.queue.is_empty() {
            let _ = self.submit_send(ring, index);
        }
        if report {
            on(TcpEvent::Writable(id));
        }
    }

    /// Ends a closing connection once it has no receive or send in flight.
    fn finish_or_wait(&mut self, index: u32, on: &mut OnTcpEvent<'_>) {
        let Some(Some(c)) = self.conns.get(index as usize) else {
            return;
        };
        if c.recv_armed || c.sending {
            if let Some(fd) = &c.fd {
                // SAFETY: see `close`: ends the pending receive so the connection can finish.
                unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
            }
            return;
        }
        let id = TcpConnId {
            index,
            generation: c.generation,
        };
        if let Some(mut c) = self.finish_close(index) {
            on(TcpEvent::Closed(id, c.error.take()));
        }
    }

    fn finish_close(&mut self, index: u32) -> Option<Conn> {
        let c = self.conns.get_mut(index as usize)?.take()?;
        self.open -= 1;
        self.free.push(index);
        self.stats.closed += 1;
        Some(c)
    }
}

/// One [`TcpDriver`] on a [`Ring`] of its own.
pub struct UringTcp {
    driver: TcpDriver,
    ring: Ring,
    ready: Vec<Completion>,
}

impl std::fmt::Debug for UringTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringTcp")
            .field("driver", &self.driver)
            .field("ring", &self.ring)
            .finish()
    }
}

impl UringTcp {
    /// Serves `listener` (already bound and listening) on a new ring.
    pub fn new(listener: TcpListener, config: UringTcpConfig) -> io::Result<UringTcp> {
        let mut ring = Ring::new(&config.ring)?;
        let driver = TcpDriver::new(&mut ring, listener, config)?;
        Ok(UringTcp {
            driver,
            ring,
            ready: Vec::new(),
        })
    }

    /// The flags the ring got.
    pub fn features(&self) -> RingFeatures {
        self.ring.features()
    }

    /// The listener's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.driver.local_addr()
    }

    /// The counters (with the ring's `io_uring_enter` calls).
    pub fn stats(&self) -> TcpStats {
        TcpStats {
            enters: self.ring.enters(),
            ..self.driver.stats()
        }
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.driver.connection_count()
    }

    /// See [`TcpDriver::queued_bytes`].
    pub fn queued_bytes(&self, id: TcpConnId) -> Option<usize> {
        self.driver.queued_bytes(id)
    }

    /// See [`TcpDriver::peer`].
    pub fn peer(&self, id: TcpConnId) -> Option<SocketAddr> {
        self.driver.peer(id)
    }

    /// See [`TcpDriver::send`].
    pub fn send(&mut self, id: TcpConnId, data: Bytes) -> Result<(), SendError> {
        self.driver.send(id, data)
    }

    /// See [`TcpDriver::close_after_flush`].
    pub fn close_after_flush(&mut self, id: TcpConnId) {
        self.driver.close_after_flush(id);
    }

    /// See [`TcpDriver::close`].
    pub fn close(&mut self, id: TcpConnId) {
        self.driver.close(id);
    }

    /// Makes [`UringTcp::wait`] return when `fd` becomes readable (an eventfd another core writes to wake
    /// this one). The caller drains `fd` and keeps it open while this ring lives.
    pub fn watch(&mut self, fd: RawFd) {
        self.ring.watch(fd);
    }

    /// Arms what needs arming, submits, and waits for a completion or `timeout`.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.driver.prepare(&mut self.ring)?;
        self.ring.submit_and_wait(timeout)
    }

    /// Handles the ready completions, reporting each to `on`.
    pub fn reap(&mut self, on: &mut OnTcpEvent<'_>) {
        self.driver.report_closes(on);
        self.ring.drain(&mut self.ready);
        for c in self.ready.drain(..) {
            self.driver.complete(&mut self.ring, &c, on);
        }
    }
}

impl Drop for UringTcp {
    fn drop(&mut self) {
        quiesce(&mut self.ring, &mut [&mut self.driver]);
    }
}

impl Quiesce for TcpDriver {
    fn tag(&self) -> Tag {
        self.tag
    }

    fn begin_quiesce(&mut self, ring: &mut Ring) {
        if self.accept_armed && ring.cancel(self.tag.user_data(ACCEPT)).is_err() {
            tracing::warn!("could not cancel the tcp accept");
        }
        for c in self.conns.iter().flatten() {
            if let Some(fd) = &c.fd {
                // SAFETY: see `close`.
                unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
            }
        }
    }

    fn busy(&self) -> bool {
        self.accept_armed || self.conns.iter().flatten().any(|c| c.recv_armed || c.sending)
    }

    fn discard(&mut self, ring: &mut Ring, c: &Completion) {
        // Nothing is armed again (no `prepare`) and no close reported while stopping.
        self.complete(ring, c, &mut |_| {});
    }

    fn end_quiesce(&mut self, ring: &Ring) -> bool {
        self.rearm.clear();
        self.to_send.clear();
        self.pending_close.clear();
        !self.busy() && self.bufs.unregister(ring.io_uring()).is_ok()
    }

    fn leak(&mut self) {
        tracing::error!("io_uring TCP did not quiesce; leaking its connections' buffers");
        std::mem::forget(std::mem::take(&mut self.conns));
    }
}

fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    let mut name = [0u8; crate::offload::NAME_BYTES];
    let mut len = name.len() as libc::socklen_t;
    // SAFETY: `name` is writable for `len` bytes, both outlive the call; the kernel writes at most `len`.
    let rc = unsafe { libc::getpeername(fd, name.as_mut_ptr().cast(), &mut len) };
    if rc < 0 {
        return None;
    }
    crate::offload::parse_name(name.get(..len as usize)?)
}
