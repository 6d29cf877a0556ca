//! The two halves every driver of a `transport::Endpoint` shares, whatever runs its socket: taking the
//! endpoint's datagrams into a backend's send buffers in GSO batches ([`Transmitter`]), and handing received
//! datagrams to the endpoint with GRO runs split by reference ([`deliver`]).
//!
//! A backend is anything that lends a send buffer and queues it ([`DatagramSink`]): a socket with a ring or
//! an epoll of its own ([`DatagramIo`]), or one UDP socket of a core's shared ring ([`CoreUdp`]).

use super::driver::{DriverConfig, DriverStats};
use bytes::BytesMut;
use engine::offload::{MAX_GSO_SEGMENTS, MAX_UDP_PAYLOAD};
use engine::uring::{CoreIo, UdpId};
use engine::DatagramIo;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;
use transport::{Endpoint, Transmit};

/// Where batches of datagrams go.
pub trait DatagramSink {
    /// Whether sends may carry several datagrams (GSO).
    fn gso(&self) -> bool;
    /// An empty buffer to build the next batch in, or `None` while the backend has no room (back-pressure).
    fn send_buffer(&mut self) -> Option<&mut Vec<u8>>;
    /// Queues the batch built in the buffer for `to`, as datagrams of `segment` bytes.
    fn queue_send(&mut self, to: SocketAddr, segment: usize) -> io::Result<()>;
}

impl DatagramSink for DatagramIo {
    fn gso(&self) -> bool {
        DatagramIo::gso(self)
    }

    fn send_buffer(&mut self) -> Option<&mut Vec<u8>> {
        DatagramIo::send_buffer(self)
    }

    fn queue_send(&mut self, to: SocketAddr, segment: usize) -> io::Result<()> {
        DatagramIo::queue_send(self, to, segment)
    }
}

/// One UDP socket of a core's shared ring, as a [`DatagramSink`].
#[derive(Debug)]
pub struct CoreUdp<'a> {
    /// The core's ring.
    pub io: &'a mut CoreIo,
    /// The socket.
    pub socket: UdpId,
}

impl DatagramSink for CoreUdp<'_> {
    fn gso(&self) -> bool {
        // `CoreIo::udp` lends mutably only; read the flag through a shared borrow of the driver list.
        self.io.udp_ref(self.socket).is_some_and(|u| u.gso())
    }

    fn send_buffer(&mut self) -> Option<&mut Vec<u8>> {
        self.io.udp(self.socket)?.send_buffer()
    }

    fn queue_send(&mut self, to: SocketAddr, segment: usize) -> io::Result<()> {
        self.io.udp_queue_send(self.socket, to, segment)
    }
}

/// Takes datagrams from an endpoint into a sink's buffers.
#[derive(Debug)]
pub struct Transmitter {
    /// Where `poll_transmit` writes one datagram that did not join a batch.
    scratch: Vec<u8>,
    /// A datagram in `scratch` taken from the endpoint that did not fit the last batch.
    carry: Option<Transmit>,
    gso_max_segments: usize,
    max_send_per_iteration: usize,
}

impl Transmitter {
    /// A transmitter with `config`'s batch bounds.
    pub fn new(config: &DriverConfig) -> Transmitter {
        Transmitter {
            scratch: Vec::with_capacity(2048),
            carry: None,
            gso_max_segments: config.gso_max_segments,
            max_send_per_iteration: config.max_send_per_iteration,
        }
    }

    /// Takes datagrams from `endpoint` and hands them to `sink` in batches (GSO: same peer, same size, a
    /// shorter one last), at most `max_send_per_iteration` batches; stops when the endpoint has nothing ready
    /// or the sink has no room (the datagram in hand is kept for the next flush). Returns whether it stopped
    /// at the batch bound (there may be more to send right away).
    ///
    /// The endpoint appends each datagram straight into the sink's send buffer: no copy per datagram. Only a
    /// datagram that cannot join the batch it was written into (another peer, a larger size, no room) is
    /// copied out, into `scratch`, to start the next one.
    pub fn flush(
        &mut self,
        endpoint: &mut Endpoint,
        sink: &mut dyn DatagramSink,
        now: Instant,
        stats: &mut DriverStats,
    ) -> io::Result<bool> {
        let max_segments = if sink.gso() {
            self.gso_max_segments.clamp(1, MAX_GSO_SEGMENTS)
        } else {
            1
        };
        for _ in 0..self.max_send_per_iteration {
            let Some(buf) = sink.send_buffer() else {
                // No room: hold one datagram (if there is any) to know there was work the socket refused.
                if self.carry.is_none() {
                    self.carry = endpoint.poll_transmit(now, &mut self.scratch);
                }
                if self.carry.is_some() {
                    stats.send_blocked += 1;
                }
                return Ok(false);
            };
            buf.clear();
            let first = match self.carry.take() {
                Some(t) => {
                    buf.extend_from_slice(self.scratch.get(..t.size).unwrap_or(&self.scratch));
                    t
                }
                None => match endpoint.poll_transmit_append(now, buf) {
                    Some(t) => t,
                    None => return Ok(false),
                },
            };
            let (to, segment) = (first.destination, first.size);
            let mut count = 1u64;
            while (count as usize) < max_segments && buf.len() + segment <= MAX_UDP_PAYLOAD {
                let before = buf.len();
                let Some(t) = endpoint.poll_transmit_append(now, buf) else {
                    break;
                };
                if t.destination != to || t.size > segment || buf.len() > MAX_UDP_PAYLOAD {
                    // It starts the next batch instead.
                    self.scratch.clear();
                    self.scratch
                        .extend_from_slice(buf.get(before..).unwrap_or_default());
                    buf.truncate(before);
                    self.carry = Some(t);
                    break;
                }
                count += 1;
                if t.size < segment {
                    break;
                }
            }
            let bytes = buf.len() as u64;
            sink.queue_send(to, segment)?;
            stats.send_batches += 1;
            stats.datagrams_sent += count;
            stats.bytes_sent += bytes;
        }
        Ok(true)
    }
}

/// Hands one receive (a datagram, or a GRO run of datagrams of `segment` bytes) to `endpoint`, each datagram
/// a slice of the same allocation.
pub fn deliver(
    endpoint: &mut Endpoint,
    stats: &mut DriverStats,
    now: Instant,
    from: SocketAddr,
    mut bytes: BytesMut,
    segment: Option<usize>,
) {
    let size = segment.unwrap_or(bytes.len()).max(1);
    // An empty datagram is still one datagram (the endpoint counts it as malformed).
    loop {
        let datagram = bytes.split_to(size.min(bytes.len()));
        stats.datagrams_received += 1;
        stats.bytes_received += datagram.len() as u64;
        endpoint.handle_datagram(now, from, datagram);
        if bytes.is_empty() {
            break;
        }
    }
}
