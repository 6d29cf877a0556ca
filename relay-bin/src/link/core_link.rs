//! [`CoreLink`]: a `transport::Endpoint` on one UDP socket of a core's shared ring ([`CoreIo`]), run as a
//! non-blocking step of the core's own loop. It owns no thread, no wait and no clock: the loop waits once on
//! the ring for everything (TCP viewers, PoP links, the cross-core waker), routes each datagram to
//! [`CoreLink::on_datagram`], calls [`CoreLink::step`] with its `now`, and puts [`CoreLink::poll_timeout`]
//! among its own deadlines. A frame that arrives on a PoP link can so reach a viewer's TCP connection on the
//! same thread, in the same loop iteration.

use super::driver::{DriverConfig, DriverStats};
use super::transmit::{deliver, CoreUdp, Transmitter};
use bytes::BytesMut;
use engine::uring::{CoreIo, UdpId};
use engine::UdpSocket;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;
use transport::{ConnectionHandle, Endpoint, Event};

/// One endpoint on one UDP socket of a [`CoreIo`].
#[derive(Debug)]
pub struct CoreLink {
    endpoint: Endpoint,
    socket: UdpId,
    local: SocketAddr,
    tx: Transmitter,
    stats: DriverStats,
    /// The last step stopped at the batch bound: the loop should not sleep.
    more_to_send: bool,
}

impl CoreLink {
    /// Puts `socket` on `io`'s ring (with `config.io`'s offloads and buffers) and runs `endpoint` on it.
    pub fn open(
        io: &mut CoreIo,
        socket: UdpSocket,
        mut endpoint: Endpoint,
        config: &DriverConfig,
    ) -> io::Result<CoreLink> {
        super::give_wall_clock(&mut endpoint);
        let local = socket.local_addr();
        let id = io.add_udp(socket, &config.io.uring_udp())?;
        let (gso, gro) = io.udp_ref(id).map_or((false, false), |u| (u.gso(), u.gro()));
        tracing::info!(%local, gso, gro, "transport link on the core's ring");
        Ok(CoreLink {
            endpoint,
            socket: id,
            local,
            tx: Transmitter::new(config),
            stats: DriverStats::default(),
            more_to_send: false,
        })
    }

    /// The socket's id on the core's ring: datagrams that arrive on it go to [`Self::on_datagram`].
    pub fn socket(&self) -> UdpId {
        self.socket
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The endpoint, for stats and inspection.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The endpoint, to connect, send frames or close; what it queues leaves on the next [`Self::step`].
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// The link's counters (datagrams and batches; `iterations` counts steps).
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Hands a receive from the link's socket (a datagram or a GRO run) to the endpoint.
    pub fn on_datagram(&mut self, now: Instant, from: SocketAddr, bytes: BytesMut, segment: Option<usize>) {
        deliver(&mut self.endpoint, &mut self.stats, now, from, bytes, segment);
    }

    /// The non-blocking step: runs the endpoint's due timers and hands what it has to send to the ring (the
    /// ring's next wait submits it). Call after the receives of a loop iteration, and after sending frames.
    pub fn step(&mut self, io: &mut CoreIo, now: Instant) -> io::Result<()> {
        self.stats.iterations += 1;
        if io.wait_batch().is_on() && io.features().min_wait {
            // The ring batches its waits: acknowledge what this wake-up brought now, not on a timer.
            self.endpoint.on_receive_batch_end(now);
        }
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        let mut sink = CoreUdp {
            io,
            socket: self.socket,
        };
        self.more_to_send = self
            .tx
            .flush(&mut self.endpoint, &mut sink, now, &mut self.stats)?;
        Ok(())
    }

    /// When the loop must call [`Self::step`] again at the latest: the endpoint's next timer, or `now` when
    /// the last step left datagrams ready to send. `None`: only a datagram or a new frame needs it.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.more_to_send {
            return Some(now);
        }
        self.endpoint.poll_timeout()
    }

    /// The socket's counters in the common form (`syscalls`: the whole ring's `io_uring_enter` calls).
    pub fn io_stats(&self, io: &CoreIo) -> engine::IoStats {
        let udp = io.udp_ref(self.socket).map(|u| u.stats()).unwrap_or_default();
        engine::IoStats::from(engine::uring::UringStats {
            enters: io.enters(),
            ..udp
        })
    }

    /// The endpoint's next event (a connection, a frame, a close), in order.
    pub fn poll_event(&mut self) -> Option<(ConnectionHandle, Event)> {
        self.endpoint.poll_event()
    }
}
