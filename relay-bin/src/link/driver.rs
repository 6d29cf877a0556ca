//! Runs one sans-IO `transport::Endpoint` over one UDP socket, on either backend ([`DatagramIo`]).
//!
//! The loop of [`TransportDriver::poll`]: send what the endpoint has ready, wait for data or for the
//! endpoint's next timer (`poll_timeout`), hand each received datagram (GRO runs split into their datagrams,
//! slices of one arena: no copy on epoll) to `handle_datagram`, run due timers, send again (ACKs go out at
//! once), and queue the endpoint's events for the caller. The clock is read here (`Instant::now()`); the
//! transport never reads one.
//!
//! Sends are batched: consecutive datagrams of the same size to the same peer are built back to back in one
//! buffer the backend lends and leave in one GSO `sendmsg` (up to `gso_max_segments`). When the backend has
//! no buffer to lend (a batch the socket refused waits for room, or every io_uring send slot is in flight),
//! nothing more is taken from the endpoint: the send side applies back-pressure instead of growing a queue.

use super::transmit::{deliver, Transmitter};
use engine::offload::MAX_GSO_SEGMENTS;
use engine::{Backend, DatagramIo, IoConfig, IoStats, UdpConfig, UdpSocket};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};
use transport::{ConnectionHandle, Endpoint, Event};

/// Bounds and IO knobs of a [`TransportDriver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// Most receives (datagrams, or GRO runs) handled per loop iteration; the rest wait for the next one.
    pub max_recv_per_iteration: usize,
    /// Most sends (datagrams, or GSO batches) per flush.
    pub max_send_per_iteration: usize,
    /// Most datagrams in one GSO batch (1 turns batching off; at most 64).
    pub gso_max_segments: usize,
    /// The socket's backend, offloads and buffers.
    pub io: IoConfig,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            max_recv_per_iteration: 64,
            max_send_per_iteration: 64,
            gso_max_segments: MAX_GSO_SEGMENTS,
            io: IoConfig::default(),
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
    /// Datagrams sent (handed to the backend).
    pub datagrams_sent: u64,
    /// Bytes in those datagrams.
    pub bytes_sent: u64,
    /// Sends (datagrams or GSO batches) handed to the backend.
    pub send_batches: u64,
    /// Flushes that stopped because the backend had no room (a refused batch or all slots in flight).
    pub send_blocked: u64,
    /// Iterations that stopped receiving at `max_recv_per_iteration` with data possibly still queued.
    pub recv_capped: u64,
    /// Waits widened to gather a train the peer was in the middle of sending
    /// (`Endpoint::receive_batch_hint`, `engine::uring::WaitBatch::for_train`).
    pub train_waits: u64,
}

/// One `transport::Endpoint` on one UDP socket.
#[derive(Debug)]
pub struct TransportDriver {
    endpoint: Endpoint,
    io: DatagramIo,
    config: DriverConfig,
    tx: Transmitter,
    /// The last flush stopped at `max_send_per_iteration`: there may be more to send right away.
    more_to_send: bool,
    ready: VecDeque<(ConnectionHandle, Event)>,
    stats: DriverStats,
    /// Microseconds the last `poll` spent after its wait (receive, timers, send).
    last_work_us: u64,
}

impl TransportDriver {
    /// Drives `endpoint` on `socket`, on the backend `config.io` asks for (see [`DatagramIo::open`]).
    pub fn new(
        mut endpoint: Endpoint,
        socket: UdpSocket,
        config: DriverConfig,
    ) -> io::Result<TransportDriver> {
        let io = DatagramIo::open(socket, &config.io)?;
        super::give_wall_clock(&mut endpoint);
        tracing::info!(
            local = %io.socket().local_addr(),
            backend = io.backend().name(),
            gso = io.gso(),
            gro = io.gro(),
            "transport driver started"
        );
        Ok(TransportDriver {
            endpoint,
            io,
            config,
            tx: Transmitter::new(&config),
            more_to_send: false,
            ready: VecDeque::new(),
            stats: DriverStats::default(),
            last_work_us: 0,
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
        self.io.socket().local_addr()
    }

    /// The socket (for its buffer sizes and address).
    pub fn socket(&self) -> &UdpSocket {
        self.io.socket()
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.io.backend()
    }

    /// The socket's IO (backend, offloads in use, fallback reason).
    pub fn io(&self) -> &DatagramIo {
        &self.io
    }

    /// Makes the driver's waits end when `fd` becomes readable (a [`engine::Waker`] other threads write to
    /// after posting work for this one). The caller drains it and keeps it open while the driver lives.
    pub fn watch(&mut self, fd: std::os::fd::RawFd) -> io::Result<()> {
        self.io.watch(fd)
    }

    /// The backend's counters.
    pub fn io_stats(&self) -> IoStats {
        self.io.stats()
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
    /// due sooner, nothing if there is more to send), receives at most `max_recv_per_iteration` times,
    /// runs due timers, sends again and queues the endpoint's events for [`Self::poll_event`].
    ///
    /// Errors are those of the backend's wait; socket errors on single sends or receives are counted.
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
        // A train the peer is in the middle of sending: let the wait gather it rather than wake per datagram.
        let base = self.config.io.ring.batch;
        let batch = base.for_train(self.endpoint.receive_batch_hint(now));
        if batch != base {
            self.stats.train_waits += 1;
        }
        self.io.set_wait_batch(batch);
        self.io.wait(timeout)?;

        let now = Instant::now();
        self.receive(now);
        if self.config.io.ring.batch.is_on() && self.io.can_batch_waits() {
            self.endpoint.on_receive_batch_end(now);
        }
        let work_started = now;
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.flush(now)?;
        while let Some(e) = self.endpoint.poll_event() {
            self.ready.push_back(e);
        }
        self.last_work_us = work_started.elapsed().as_micros() as u64;
        Ok(())
    }

    /// Microseconds the last [`Self::poll`] spent after its wait: receiving, running timers and sending.
    pub fn last_work_us(&self) -> u64 {
        self.last_work_us
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
        let endpoint = &mut self.endpoint;
        let stats = &mut self.stats;
        let runs = self
            .io
            .receive(self.config.max_recv_per_iteration, &mut |from, bytes, segment| {
                deliver(endpoint, stats, now, from, bytes, segment)
            });
        if runs >= self.config.max_recv_per_iteration {
            self.stats.recv_capped += 1;
        }
    }

    /// Sends what the endpoint has ready (see [`Transmitter::flush`]).
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        self.more_to_send = self
            .tx
            .flush(&mut self.endpoint, &mut self.io, now, &mut self.stats)?;
        Ok(())
    }
}
