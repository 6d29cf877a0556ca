//! A UDP socket on an io_uring: one multishot `recvmsg` into a provided buffer ring, and `sendmsg`
//! submissions (one GSO batch each) from a fixed pool of send slots.
//!
//! [`UdpDriver`] is the socket's side of a [`Ring`] that other drivers may share (a core's TCP, its other
//! sockets); [`UringUdp`] is one driver on a ring of its own.
//!
//! Receive: one armed request yields a completion per datagram (or per GRO-coalesced run of datagrams), each
//! naming the provided buffer it filled; [`UdpDriver::complete`] hands the peer's address, the bytes and the GRO
//! segment size to the caller, and gives the buffer back at once. When the ring runs dry the request ends with
//! `ENOBUFS` (counted) and is re-armed on the next wait.
//!
//! Send: the caller builds a batch in a free slot's buffer ([`UringUdp::send_buffer`]) and queues it
//! ([`UringUdp::queue_send`]); the slot (buffer, `msghdr`, iovec, address and GSO control message, all in one
//! box that never moves) stays untouched until its completion. With every slot in flight there is no buffer
//! to build in: that is the back-pressure, and memory stays bounded by `send_slots` x 64 KiB.

use super::owned_buffers::{OwnedBufferRing, OwnedBufferStats};
use super::ring::{quiesce, Completion, Quiesce, Ring, Tag, LOW_MAX};
use super::{RingConfig, RingFeatures};
use crate::offload::{self, GsoControl, RawAddr, MAX_UDP_PAYLOAD, NAME_BYTES, RECV_CONTROL_BYTES};
use crate::udp::UdpSocket;
use bytes::BytesMut;
use io_uring::types::{Fd, RecvMsgOut};
use io_uring::{cqueue, opcode, squeue};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// `user_data` (the driver's bits) of the multishot receive; a send's is its slot index.
const RECV: u64 = LOW_MAX;
/// Header the kernel writes in front of each multishot receive (`struct io_uring_recvmsg_out`).
const RECVMSG_OUT_BYTES: usize = 16;

/// Provided receive buffers by default: 32. The kernel fills them in ring order, so every buffer is
/// touched once per lap; with GRO each holds up to 64 KiB, and 32 of them (2 MiB) stay in cache where 256
/// (16 MiB) do not: the kernel's copy into them and the reassembly copy out of them both miss less. Measured
/// on loopback, one connection, 5-6 alternating runs: 256 -> 32 buffers, median 7.42 -> 8.07 and 7.08 ->
/// 7.31 Gbit/s, 2.01 -> 1.82 and 2.12 -> 1.98 cpu s/GB. A ring that runs dry only re-arms its receive (the
/// datagrams wait in the socket buffer), counted as `recv_no_buffers`.
pub const DEFAULT_RECV_BUFFERS: u16 = 32;

/// How to set up a [`UringUdp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringUdpConfig {
    /// The ring.
    pub ring: RingConfig,
    /// Provided receive buffers (a power of two). See [`DEFAULT_RECV_BUFFERS`].
    pub buffer_count: u16,
    /// Payload bytes of each receive buffer (64 KiB with GRO, so a coalesced run fits; else the largest
    /// datagram). The kernel's header, the name and the control message are added to this.
    pub buffer_bytes: usize,
    /// Receive with UDP GRO.
    pub gro: bool,
    /// Send with UDP GSO (batches of same-size datagrams in one `sendmsg`).
    pub gso: bool,
    /// Send slots (batches in flight at once).
    pub send_slots: usize,
}

impl Default for UringUdpConfig {
    fn default() -> Self {
        UringUdpConfig {
            ring: RingConfig::default(),
            buffer_count: DEFAULT_RECV_BUFFERS,
            buffer_bytes: MAX_UDP_PAYLOAD,
            gro: true,
            gso: true,
            send_slots: 32,
        }
    }
}

/// Counters of a [`UringUdp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UringStats {
    /// Receive completions carrying data.
    pub recv_completions: u64,
    /// Times the buffer ring ran dry (`ENOBUFS`); the receive was re-armed.
    pub recv_no_buffers: u64,
    /// Receives re-armed (after `ENOBUFS` or any other end of the multishot request).
    pub recv_rearmed: u64,
    /// Receives that failed otherwise, or whose buffer could not be parsed.
    pub recv_errors: u64,
    /// Datagrams cut short because they did not fit a buffer (dropped).
    pub recv_truncated: u64,
    /// Send completions (one per batch).
    pub send_completions: u64,
    /// Sends the kernel answered `EAGAIN` (resubmitted).
    pub send_again: u64,
    /// Sends that failed (their datagrams are lost; the transport repairs).
    pub send_errors: u64,
    /// Times a batch could not be built because every send slot was in flight.
    pub send_slots_exhausted: u64,
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// GSO sends the kernel refused with `EIO` (the device cannot segment): GSO was then turned off.
    pub gso_refused: u64,
}

/// What [`UringUdp::reap`] calls for each receive: the source, the bytes (one datagram or a GRO run) and the
/// GRO segment size (`None`: one datagram).
pub type OnDatagram<'a> = dyn FnMut(SocketAddr, BytesMut, Option<usize>) + 'a;

/// One send in flight: everything the kernel reads until the completion, at a fixed address.
struct SendSlot {
    buf: Vec<u8>,
    iov: libc::iovec,
    hdr: libc::msghdr,
    addr: RawAddr,
    control: GsoControl,
    segment: usize,
}

/// A UDP socket's operations on a shared [`Ring`]. It has no `Drop` of its own: its owner quiesces it on the
/// ring ([`super::ring::quiesce`]) before either goes.
pub struct UdpDriver {
    tag: Tag,
    socket: UdpSocket,
    bufs: OwnedBufferRing,
    /// The multishot receive's template (only `msg_namelen`/`msg_controllen` are read); boxed: the kernel
    /// keeps its address while the request is armed.
    recv_hdr: Box<libc::msghdr>,
    recv_armed: bool,
    /// Never resized: each slot keeps its address while the kernel reads it.
    slots: Box<[SendSlot]>,
    free: Vec<usize>,
    /// Slot handed out by `send_buffer` and not yet queued.
    building: Option<usize>,
    /// Slots whose send the kernel answered `EAGAIN`: resubmitted before anything new.
    again: VecDeque<usize>,
    in_flight: usize,
    gso: bool,
    gro: bool,
    stats: UringStats,
}

impl std::fmt::Debug for UdpDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpDriver")
            .field("local", &self.socket.local_addr())
            .field("gso", &self.gso)
            .field("gro", &self.gro)
            .field("in_flight", &self.in_flight)
            .field("stats", &self.stats)
            .finish()
    }
}

impl UdpDriver {
    /// Puts `socket` on `ring` (`config.ring` is not used: the ring exists). Fails where a needed feature
    /// (provided buffer rings: Linux 5.19; multishot recvmsg: 6.0) is missing.
    pub fn new(ring: &mut Ring, socket: UdpSocket, config: &UringUdpConfig) -> io::Result<UdpDriver> {
        let (tag, group) = ring.new_driver()?;
        // The ring waits for the socket; a non-blocking socket would make sends fail with EAGAIN instead.
        socket.set_nonblocking(false)?;
        let gso = config.gso && offload::gso_supported(socket.as_raw_fd());
        let gro = config.gro && offload::set_gro(socket.as_raw_fd(), true).is_ok();
        let payload = if gro {
            config.buffer_bytes.max(MAX_UDP_PAYLOAD)
        } else {
            config.buffer_bytes
        };
        let buffer_bytes = RECVMSG_OUT_BYTES + NAME_BYTES + RECV_CONTROL_BYTES + payload;
        let bufs = OwnedBufferRing::register(ring.io_uring(), group, config.buffer_count, buffer_bytes)?;
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths); the two lengths the multishot
        // receive reads are set below.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = NAME_BYTES as libc::socklen_t;
        recv_hdr.msg_controllen = RECV_CONTROL_BYTES;
        let slots: Box<[SendSlot]> = (0..config.send_slots.max(1))
            .map(|_| {
                SendSlot {
                    buf: Vec::with_capacity(MAX_UDP_PAYLOAD),
                    iov: libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    },
                    // SAFETY: as above; every field used is set before a send is queued.
                    hdr: unsafe { std::mem::zeroed() },
                    addr: RawAddr::new(SocketAddr::from(([0, 0, 0, 0], 0))),
                    control: GsoControl::default(),
                    segment: 0,
                }
            })
            .collect();
        let free = (0..slots.len()).rev().collect();
        tracing::debug!(local = %socket.local_addr(), gso, gro, "udp socket on io_uring");
        Ok(UdpDriver {
            tag,
            socket,
            bufs,
            recv_hdr,
            recv_armed: false,
            slots,
            free,
            building: None,
            again: VecDeque::new(),
            in_flight: 0,
            gso,
            gro,
            stats: UringStats::default(),
        })
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The driver's tag on its ring: completions that carry it go to [`Self::complete`].
    pub fn tag(&self) -> Tag {
        self.tag
    }

    /// Whether sends use GSO (turned off if the kernel refuses it for this path).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Whether receives use GRO.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// The counters.
    pub fn stats(&self) -> UringStats {
        self.stats
    }

    /// The receive buffers' counters (handed over, reclaimed, newly allocated).
    pub fn buffer_stats(&self) -> OwnedBufferStats {
        self.bufs.stats()
    }

    /// Batches submitted and not yet completed.
    pub fn sends_in_flight(&self) -> usize {
        self.in_flight
    }

    /// An empty buffer to build the next batch in (capacity 64 KiB), or `None` while every slot is in
    /// flight. The batch goes out with [`Self::queue_send`]; asking again before that returns the same slot.
    pub fn send_buffer(&mut self) -> Option<&mut Vec<u8>> {
        if self.building.is_none() {
            if !self.again.is_empty() {
                return None;
            }
            match self.free.pop() {
                Some(i) => self.building = Some(i),
                None => {
                    self.stats.send_slots_exhausted += 1;
                    return None;
                }
            }
        }
        let i = self.building?;
        let slot = self.slots.get_mut(i)?;
        Some(&mut slot.buf)
    }

    /// Queues the batch built in [`Self::send_buffer`] for `to`, as datagrams of `segment` bytes (GSO) or as
    /// one datagram when `segment >= len`. Submitted by the ring's next wait.
    pub fn queue_send(&mut self, ring: &mut Ring, to: SocketAddr, segment: usize) -> io::Result<()> {
        let Some(i) = self.building.take() else {
            return Ok(());
        };
        let Some(slot) = self.slots.get_mut(i) else {
            return Ok(());
        };
        if slot.buf.is_empty() {
            self.free.push(i);
            return Ok(());
        }
        slot.addr = RawAddr::new(to);
        slot.segment = segment;
        self.submit_slot(ring, i)
    }

    fn submit_slot(&mut self, ring: &mut Ring, i: usize) -> io::Result<()> {
        let Some(slot) = self.slots.get_mut(i) else {
            return Ok(());
        };
        slot.iov = libc::iovec {
            iov_base: slot.buf.as_mut_ptr().cast(),
            iov_len: slot.buf.len(),
        };
        slot.hdr.msg_name = slot.addr.as_ptr() as *mut libc::c_void;
        slot.hdr.msg_namelen = slot.addr.len();
        slot.hdr.msg_iov = &mut slot.iov;
        slot.hdr.msg_iovlen = 1;
        if self.gso && slot.segment < slot.buf.len() {
            slot.hdr.msg_controllen = slot
                .control
                .set_segment(slot.segment.min(u16::MAX as usize) as u16);
            slot.hdr.msg_control = slot.control.as_mut_ptr();
        } else {
            slot.hdr.msg_control = std::ptr::null_mut();
            slot.hdr.msg_controllen = 0;
        }
        let entry = opcode::SendMsg::new(Fd(self.socket.as_raw_fd()), &slot.hdr)
            .build()
            .user_data(self.tag.user_data(i as u64));
        Self::push(ring, &entry)?;
        self.in_flight += 1;
        Ok(())
    }

    fn push(ring: &mut Ring, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: every entry pushed points only at memory owned by the driver at a fixed address (a boxed
        // send slot that is not touched until its completion, the boxed receive header, the provided
        // buffers), which stays valid until the completion is handled or the driver's owner has quiesced it.
        unsafe { ring.push(entry) }
    }

    fn arm_recv(&mut self, ring: &mut Ring) -> io::Result<()> {
        if !self.recv_armed {
            let entry = opcode::RecvMsgMulti::new(
                Fd(self.socket.as_raw_fd()),
                &*self.recv_hdr as *const libc::msghdr,
                self.bufs.group(),
            )
            .build()
            .user_data(self.tag.user_data(RECV));
            Self::push(ring, &entry)?;
            self.recv_armed = true;
        }
        Ok(())
    }

    /// What to do before the ring waits: re-arm the receive, resend the batches the kernel answered `EAGAIN`.
    pub fn prepare(&mut self, ring: &mut Ring) -> io::Result<()> {
        self.arm_recv(ring)?;
        while let Some(i) = self.again.pop_front() {
            self.submit_slot(ring, i)?;
        }
        Ok(())
    }

    /// Splits a filled receive buffer (kernel header, name, control, payload) and hands the payload on.
    fn deliver(
        stats: &mut UringStats,
        recv_hdr: &libc::msghdr,
        filled: &mut BytesMut,
        on_datagram: &mut OnDatagram<'_>,
    ) {
        let parsed = RecvMsgOut::parse(filled, recv_hdr).ok().map(|out| {
            let offset = out.payload_data().as_ptr() as usize - filled.as_ptr() as usize;
            (
                out.is_payload_truncated(),
                offload::gro_segment_size(out.control_data()),
                offload::parse_name(out.name_data()),
                offset,
                out.payload_data().len(),
            )
        });
        match parsed {
            Some((true, ..)) => stats.recv_truncated += 1,
            Some((false, segment, Some(from), offset, len)) => {
                let mut payload = filled.split_off(offset);
                payload.truncate(len);
                on_datagram(from, payload, segment);
            }
            _ => stats.recv_errors += 1,
        }
    }

    /// Whether `c` is this driver's and needs no prompt handling: a send that went out (it only frees its
    /// slot) while the driver still has a free slot, so no sender waits for it. A receive, a send to retry or
    /// that failed, or any send while every slot is taken (the caller's flush was refused and this frees
    /// room) is not (see [`Ring::submit_and_wait_quiet`]).
    pub fn is_quiet(&self, c: &Completion) -> bool {
        c.tag == self.tag && c.data != RECV && c.result >= 0 && self.again.is_empty() && !self.free.is_empty()
    }

    /// Handles one of this driver's completions: a received datagram (or GRO run) goes to `on_datagram` with
    /// its source and segment size, and its buffer back to the ring; a finished send frees its slot.
    pub fn complete(&mut self, c: &Completion, on_datagram: &mut OnDatagram<'_>) {
        let (data, res, flags) = (c.data, c.result, c.flags);
        {
            match data {
                RECV => {
                    if !cqueue::more(flags) {
                        self.recv_armed = false;
                        self.stats.recv_rearmed += 1;
                    }
                    let bid = cqueue::buffer_select(flags);
                    if res < 0 {
                        if let Some(b) = bid {
                            self.bufs.recycle(b);
                        }
                        if res == -libc::ENOBUFS {
                            self.stats.recv_no_buffers += 1;
                        } else if res == -libc::ECANCELED {
                            // Our own cancellation (quiescing): not a receive error.
                        } else {
                            self.stats.recv_errors += 1;
                            tracing::debug!(error = %io::Error::from_raw_os_error(-res), "udp receive failed");
                        }
                    } else if let Some(bid) = bid {
                        self.stats.recv_completions += 1;
                        // The filled buffer is ours now (a replacement took its place in the ring).
                        match self.bufs.take(bid, res as usize) {
                            Some(mut filled) => {
                                Self::deliver(&mut self.stats, &self.recv_hdr, &mut filled, on_datagram)
                            }
                            None => self.stats.recv_errors += 1,
                        }
                    } else {
                        self.stats.recv_errors += 1;
                    }
                }
                i => {
                    let i = i as usize;
                    if i >= self.slots.len() {
                        return;
                    }
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.stats.send_completions += 1;
                    if res == -libc::EAGAIN || res == -libc::ENOBUFS {
                        self.stats.send_again += 1;
                        self.again.push_back(i);
                        return;
                    }
                    if res == -libc::EIO && self.gso {
                        // The device cannot segment (or checksum) GSO sends: send plain datagrams from now on.
                        self.stats.gso_refused += 1;
                        self.gso = false;
                        tracing::warn!(local = %self.socket.local_addr(), "UDP GSO refused (EIO); turned off");
                    } else if res < 0 {
                        self.stats.send_errors += 1;
                        tracing::debug!(error = %io::Error::from_raw_os_error(-res), "udp send failed");
                    }
                    if let Some(slot) = self.slots.get_mut(i) {
                        slot.buf.clear();
                    }
                    self.free.push(i);
                }
            }
        }
    }
}

/// One [`UdpDriver`] on a [`Ring`] of its own.
pub struct UringUdp {
    driver: UdpDriver,
    ring: Ring,
    ready: Vec<Completion>,
}

impl std::fmt::Debug for UringUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringUdp")
            .field("driver", &self.driver)
            .field("ring", &self.ring)
            .finish()
    }
}

impl UringUdp {
    /// Puts `socket` on a new ring. Fails where io_uring is refused (see [`super::is_refused`]) or a needed
    /// feature (provided buffer rings: Linux 5.19; multishot recvmsg: 6.0) is missing.
    pub fn new(socket: UdpSocket, config: &UringUdpConfig) -> io::Result<UringUdp> {
        let mut ring = Ring::new(&config.ring)?;
        let driver = UdpDriver::new(&mut ring, socket, config)?;
        Ok(UringUdp {
            driver,
            ring,
            ready: Vec::new(),
        })
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        self.driver.socket()
    }

    /// The flags the ring got.
    pub fn features(&self) -> RingFeatures {
        self.ring.features()
    }

    /// Whether sends use GSO (turned off if the kernel refuses it for this path).
    pub fn gso(&self) -> bool {
        self.driver.gso()
    }

    /// Whether receives use GRO.
    pub fn gro(&self) -> bool {
        self.driver.gro()
    }

    /// The counters (with the ring's `io_uring_enter` calls).
    pub fn stats(&self) -> UringStats {
        UringStats {
            enters: self.ring.enters(),
            ..self.driver.stats()
        }
    }

    /// The receive buffers' counters (handed over, reclaimed, newly allocated).
    pub fn buffer_stats(&self) -> OwnedBufferStats {
        self.driver.buffer_stats()
    }

    /// Batches submitted and not yet completed.
    pub fn sends_in_flight(&self) -> usize {
        self.driver.sends_in_flight()
    }

    /// See [`UdpDriver::send_buffer`].
    pub fn send_buffer(&mut self) -> Option<&mut Vec<u8>> {
        self.driver.send_buffer()
    }

    /// See [`UdpDriver::queue_send`].
    pub fn queue_send(&mut self, to: SocketAddr, segment: usize) -> io::Result<()> {
        self.driver.queue_send(&mut self.ring, to, segment)
    }

    /// Makes [`Self::wait`] return when `fd` becomes readable (an eventfd another core writes to wake this
    /// one). The caller drains `fd` and keeps it open while this socket lives.
    pub fn watch(&mut self, fd: RawFd) {
        self.ring.watch(fd);
    }

    /// How the ring's waits gather completions (see [`Ring::set_batch`]).
    pub fn set_wait_batch(&mut self, batch: super::WaitBatch) {
        self.ring.set_batch(batch);
    }

    /// Submits what is queued (re-arming the receive and resending `EAGAIN` batches first) and waits until a
    /// completion is ready or `timeout` passes (`None`: no limit; zero: do not wait).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.driver.prepare(&mut self.ring)?;
        let driver = &self.driver;
        self.ring.submit_and_wait_quiet(timeout, &|c| driver.is_quiet(c))
    }

    /// Handles every completion ready (see [`UdpDriver::complete`]). Returns the number of completions.
    pub fn reap(&mut self, on_datagram: &mut OnDatagram<'_>) -> usize {
        self.ring.drain(&mut self.ready);
        let n = self.ready.len();
        for c in self.ready.drain(..) {
            self.driver.complete(&c, on_datagram);
        }
        n
    }
}

impl Drop for UringUdp {
    fn drop(&mut self) {
        quiesce(&mut self.ring, &mut [&mut self.driver]);
    }
}

impl Quiesce for UdpDriver {
    fn tag(&self) -> Tag {
        self.tag
    }

    fn begin_quiesce(&mut self, ring: &mut Ring) {
        if self.recv_armed && ring.cancel(self.tag.user_data(RECV)).is_err() {
            tracing::warn!(local = %self.socket.local_addr(), "could not cancel the udp receive");
        }
        self.again.clear();
    }

    fn busy(&self) -> bool {
        self.recv_armed || self.in_flight > 0
    }

    fn discard(&mut self, _ring: &mut Ring, c: &Completion) {
        self.complete(c, &mut |_, _, _| {});
        // Nothing is resent while stopping.
        self.again.clear();
    }

    fn end_quiesce(&mut self, ring: &Ring) -> bool {
        self.again.clear();
        !self.busy() && self.bufs.unregister(ring.io_uring()).is_ok()
    }

    fn leak(&mut self) {
        tracing::error!(local = %self.socket.local_addr(), "io_uring did not quiesce; leaking a udp socket's buffers");
        std::mem::forget(std::mem::take(&mut self.slots));
        let copy = *self.recv_hdr;
        let old = std::mem::replace(&mut self.recv_hdr, Box::new(copy));
        std::mem::forget(old);
    }
}
