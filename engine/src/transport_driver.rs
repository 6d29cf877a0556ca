//! Runs one sans-IO `transport::Endpoint` over one UDP socket, with an epoll reactor.
//!
//! The loop of [`TransportDriver::poll`]: send what the endpoint has ready, wait for the socket to become
//! readable or for the endpoint's next timer (`poll_timeout`), receive a bounded burst of datagrams into a
//! reused buffer arena and hand each to `handle_datagram`, run due timers, send again (ACKs go out at once),
//! and queue the endpoint's events for the caller. The clock is read here (`Instant::now()`); the transport
//! never reads one.
//!
//! A datagram the socket refuses with `EWOULDBLOCK` (send buffer full) is kept and retried when the socket is
//! writable; until then nothing else is taken from the endpoint, so the send side applies back-pressure
//! instead of growing a queue.

use crate::poller::{Events, Interest, Poller};
use crate::udp::{UdpConfig, UdpSocket};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use transport::{ConnectionHandle, Endpoint, Event, Transmit};

/// The token of the driver's socket in its poller.
const SOCKET_TOKEN: u64 = 0;

/// Bounds and buffer sizes of a [`TransportDriver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// Most datagrams received per loop iteration (the rest wait for the next iteration; level-triggered
    /// readiness wakes it at once).
    pub max_recv_per_iteration: usize,
    /// Most datagrams sent per flush.
    pub max_send_per_iteration: usize,
    /// Longest datagram received; longer ones are truncated (and then fail authentication).
    pub max_datagram_bytes: usize,
    /// Size of the receive arena that datagrams are read into and split from (`BytesMut`, reused once every
    /// datagram split from it has been dropped).
    pub recv_arena_bytes: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            max_recv_per_iteration: 64,
            max_send_per_iteration: 64,
            max_datagram_bytes: 65_535,
            recv_arena_bytes: 256 << 10,
        }
    }
}

/// Counters of a [`TransportDriver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DriverStats {
    /// Loop iterations ([`TransportDriver::poll`] calls).
    pub iterations: u64,
    /// Datagrams received and handed to the endpoint.
    pub datagrams_received: u64,
    /// Bytes in those datagrams.
    pub bytes_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Bytes in those datagrams.
    pub bytes_sent: u64,
    /// Times a send met a full socket buffer (the datagram was kept and retried).
    pub send_blocked: u64,
    /// Sends that failed for another reason (the datagram was dropped; the transport repairs losses).
    pub send_errors: u64,
    /// Receives that failed for a reason other than an empty queue.
    pub recv_errors: u64,
    /// Iterations that stopped receiving at `max_recv_per_iteration` with data possibly still queued.
    pub recv_capped: u64,
}

/// One `transport::Endpoint` on one UDP socket.
#[derive(Debug)]
pub struct TransportDriver {
    endpoint: Endpoint,
    socket: UdpSocket,
    poller: Poller,
    poll_events: Events,
    config: DriverConfig,
    recv_arena: BytesMut,
    send_buf: Vec<u8>,
    /// A datagram in `send_buf` that the socket refused with `EWOULDBLOCK`.
    pending: Option<Transmit>,
    /// The socket is registered for writability (only while `pending` is set).
    want_write: bool,
    /// The last flush stopped at `max_send_per_iteration`: there may be more to send right away.
    more_to_send: bool,
    ready: VecDeque<(ConnectionHandle, Event)>,
    stats: DriverStats,
}

impl TransportDriver {
    /// Drives `endpoint` on `socket`.
    pub fn new(endpoint: Endpoint, socket: UdpSocket, config: DriverConfig) -> io::Result<TransportDriver> {
        let poller = Poller::new()?;
        poller.add(socket.as_raw_fd(), SOCKET_TOKEN, Interest::READABLE)?;
        Ok(TransportDriver {
            endpoint,
            socket,
            poller,
            poll_events: Events::with_capacity(8),
            config,
            recv_arena: BytesMut::with_capacity(config.recv_arena_bytes.max(config.max_datagram_bytes)),
            send_buf: Vec::with_capacity(2048),
            pending: None,
            want_write: false,
            more_to_send: false,
            ready: VecDeque::new(),
            stats: DriverStats::default(),
        })
    }

    /// Binds a socket to `addr` with `udp` and drives `endpoint` on it.
    pub fn bind(
        addr: SocketAddr,
        udp: &UdpConfig,
        endpoint: Endpoint,
        config: DriverConfig,
    ) -> io::Result<TransportDriver> {
        let socket = UdpSocket::bind(addr, udp)?;
        TransportDriver::new(endpoint, socket, config)
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// The socket (for its buffer sizes and address).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The endpoint, for stats and inspection.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The endpoint, to connect, send frames or close; what it queues leaves on the next [`Self::poll`].
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// The driver's counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// The next event the endpoint produced, in order.
    pub fn poll_event(&mut self) -> Option<(ConnectionHandle, Event)> {
        self.ready.pop_front()
    }

    /// One loop iteration: sends what is ready, waits at most `max_wait` (less if a timer of the endpoint is
    /// due sooner, nothing if there is more to send), receives at most `max_recv_per_iteration` datagrams,
    /// runs due timers, sends again and queues the endpoint's events for [`Self::poll_event`].
    ///
    /// Errors are those of the poller; socket errors on single datagrams are counted, not returned.
    pub fn poll(&mut self, max_wait: Duration) -> io::Result<()> {
        self.stats.iterations += 1;
        let now = Instant::now();
        self.flush(now)?;

        let mut deadline = now.checked_add(max_wait);
        if let Some(t) = self.endpoint.poll_timeout() {
            deadline = Some(deadline.map_or(t, |d| d.min(t)));
        }
        let timeout = if self.more_to_send || !self.ready.is_empty() {
            Some(Duration::ZERO)
        } else {
            deadline.map(|d| d.saturating_duration_since(Instant::now()))
        };
        self.poller.wait(&mut self.poll_events, timeout)?;
        // Readiness reports are not needed one by one: there is one socket, and a receive tells what it has.
        let writable = self.poll_events.iter().any(|r| r.writable);

        let now = Instant::now();
        self.receive(now);
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        if writable || self.pending.is_none() {
            self.flush(now)?;
        }
        while let Some(e) = self.endpoint.poll_event() {
            self.ready.push_back(e);
        }
        Ok(())
    }

    /// Runs the loop until `deadline`, handing each event to `on_event` with the endpoint (to send frames in
    /// response). Returns `Ok(true)` when `on_event` returned `Break` (events after it stay queued for
    /// [`Self::poll_event`]), `Ok(false)` at the deadline.
    pub fn run_until<F>(&mut self, deadline: Instant, mut on_event: F) -> io::Result<bool>
    where
        F: FnMut(&mut Endpoint, ConnectionHandle, Event) -> ControlFlow<()>,
    {
        loop {
            while let Some((ch, e)) = self.ready.pop_front() {
                if on_event(&mut self.endpoint, ch, e).is_break() {
                    return Ok(true);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            self.poll(deadline - now)?;
        }
    }

    fn receive(&mut self, now: Instant) {
        for _ in 0..self.config.max_recv_per_iteration {
            // The arena is empty here: each datagram is split off whole.
            self.recv_arena.clear();
            if self.recv_arena.capacity() < self.config.max_datagram_bytes {
                // Every earlier datagram split from the arena may still be alive (zero-copy delivery); reserving
                // reuses the allocation if they are gone and starts a fresh arena otherwise.
                self.recv_arena
                    .reserve(self.config.recv_arena_bytes.max(self.config.max_datagram_bytes));
            }
            match self
                .socket
                .recv_from(&mut self.recv_arena, self.config.max_datagram_bytes)
            {
                Ok((n, from)) => {
                    let datagram = self.recv_arena.split_to(n);
                    self.stats.datagrams_received += 1;
                    self.stats.bytes_received += n as u64;
                    self.endpoint.handle_datagram(now, from, datagram);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. ECONNREFUSED from an ICMP error: it concerns an earlier send, not this socket.
                    self.stats.recv_errors += 1;
                    tracing::debug!(error = %e, "udp receive failed");
                }
            }
        }
        self.stats.recv_capped += 1;
    }

    /// Sends the pending datagram, then up to `max_send_per_iteration` from the endpoint, stopping at a full
    /// socket buffer (the datagram is kept and the socket watched for writability).
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        self.more_to_send = false;
        if let Some(t) = self.pending.take() {
            if !self.send(t) {
                return Ok(());
            }
        }
        for _ in 0..self.config.max_send_per_iteration {
            let Some(t) = self.endpoint.poll_transmit(now, &mut self.send_buf) else {
                return self.set_write_interest(false);
            };
            if !self.send(t) {
                return self.set_write_interest(true);
            }
        }
        self.more_to_send = true;
        self.set_write_interest(false)
    }

    /// Sends the datagram in `send_buf`; `false` if the socket buffer is full (it is then kept as pending).
    fn send(&mut self, t: Transmit) -> bool {
        let datagram = self.send_buf.get(..t.size).unwrap_or(&self.send_buf[..]);
        match self.socket.send_to(datagram, t.destination) {
            Ok(n) => {
                self.stats.datagrams_sent += 1;
                self.stats.bytes_sent += n as u64;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.stats.send_blocked += 1;
                self.pending = Some(t);
                false
            }
            Err(e) => {
                self.stats.send_errors += 1;
                tracing::debug!(error = %e, to = %t.destination, "udp send failed; datagram dropped");
                true
            }
        }
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
}
