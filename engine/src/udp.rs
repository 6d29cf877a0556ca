//! A non-blocking UDP socket, set up for a high-rate datagram transport.
//!
//! Created through `socket2` so that options which must precede `bind` (SO_REUSEPORT) and the socket buffer
//! sizes can be set. The kernel silently caps SO_RCVBUF/SO_SNDBUF at `net.core.rmem_max`/`wmem_max`; the sizes
//! it actually granted are read back, reported in [`UdpSocket::buffer_sizes`] and logged with a warning when
//! they fall short of the request.

use crate::offload;
use bytes::BytesMut;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

/// How to create a [`UdpSocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpConfig {
    /// Set SO_REUSEPORT before binding (one socket per core on the same port).
    pub reuse_port: bool,
    /// Requested SO_RCVBUF, in bytes.
    pub recv_buffer_bytes: usize,
    /// Requested SO_SNDBUF, in bytes.
    pub send_buffer_bytes: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            reuse_port: false,
            recv_buffer_bytes: 8 << 20,
            send_buffer_bytes: 8 << 20,
        }
    }
}

/// Socket buffer sizes: what was asked for and what the kernel granted.
///
/// Linux doubles the requested value (room for its bookkeeping) and reports the doubled value, capped at twice
/// `net.core.rmem_max`/`wmem_max`; a request was capped when the reported value is below twice the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferSizes {
    /// Requested SO_RCVBUF, in bytes.
    pub recv_requested: usize,
    /// SO_RCVBUF as read back from the kernel, in bytes.
    pub recv_effective: usize,
    /// Requested SO_SNDBUF, in bytes.
    pub send_requested: usize,
    /// SO_SNDBUF as read back from the kernel, in bytes.
    pub send_effective: usize,
}

impl BufferSizes {
    /// Whether the kernel granted less receive buffer than requested.
    pub fn recv_capped(&self) -> bool {
        self.recv_effective < self.recv_requested.saturating_mul(2)
    }

    /// Whether the kernel granted less send buffer than requested.
    pub fn send_capped(&self) -> bool {
        self.send_effective < self.send_requested.saturating_mul(2)
    }
}

/// A non-blocking UDP socket. Closed when dropped.
#[derive(Debug)]
pub struct UdpSocket {
    socket: Socket,
    local: SocketAddr,
    buffers: BufferSizes,
}

impl UdpSocket {
    /// Creates a non-blocking socket bound to `addr` (port 0 picks an ephemeral port).
    pub fn bind(addr: SocketAddr, config: &UdpConfig) -> io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        if config.reuse_port {
            socket.set_reuse_port(true)?;
        }
        let buffers = set_buffer_sizes(&socket, config)?;
        socket.bind(&SockAddr::from(addr))?;
        let local = socket.local_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "bound address is not an IP address")
        })?;
        tracing::debug!(
            %local,
            recv_buffer = buffers.recv_effective,
            send_buffer = buffers.send_effective,
            "udp socket bound"
        );
        Ok(UdpSocket {
            socket,
            local,
            buffers,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The socket buffer sizes requested and granted.
    pub fn buffer_sizes(&self) -> BufferSizes {
        self.buffers
    }

    /// Receives one datagram, appending it to `buf` (after its current contents) without zeroing memory first.
    ///
    /// At most `max_len` bytes are read; a longer datagram is truncated (the kernel discards the rest). Returns
    /// the datagram's length and its source. `Err` with [`io::ErrorKind::WouldBlock`] means nothing is queued.
    pub fn recv_from(&self, buf: &mut BytesMut, max_len: usize) -> io::Result<(usize, SocketAddr)> {
        buf.reserve(max_len);
        let start = buf.len();
        let spare = buf.spare_capacity_mut();
        let limit = spare.len().min(max_len);
        let (n, from) = self.socket.recv_from(&mut spare[..limit])?;
        let n = n.min(limit);
        let from = from
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address"))?;
        // SAFETY: `recv_from` initialised the first `n` bytes of the spare capacity (it returns how many bytes
        // it wrote, and `n <= limit <= spare.len()`), so the first `start + n` bytes of `buf` are initialised
        // and within its capacity.
        unsafe { buf.set_len(start + n) };
        Ok((n, from))
    }

    /// Receives one datagram, or with UDP GRO on ([`crate::offload::set_gro`]) several coalesced ones,
    /// appending the bytes to `buf` like [`Self::recv_from`]. Returns the length, the source and the GRO
    /// segment size (`None`: one datagram). `Err` with [`io::ErrorKind::WouldBlock`] means nothing is queued.
    pub fn recv_coalesced(
        &self,
        buf: &mut BytesMut,
        max_len: usize,
    ) -> io::Result<(usize, SocketAddr, Option<usize>)> {
        buf.reserve(max_len);
        let start = buf.len();
        let spare = buf.spare_capacity_mut();
        let limit = spare.len().min(max_len);
        let mut name = [0u8; offload::NAME_BYTES];
        let mut control = [0u64; offload::RECV_CONTROL_BYTES / 8];
        let mut iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: limit,
        };
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths); the fields used are set below.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_name = name.as_mut_ptr().cast();
        hdr.msg_namelen = name.len() as libc::socklen_t;
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `hdr` points at `name`, `control` and one iovec over `limit` bytes of `buf`'s spare capacity,
        // all alive and unmoved for the call; the kernel writes at most the lengths given.
        let rc = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut hdr, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (rc as usize).min(limit);
        // SAFETY: recvmsg wrote `n` bytes at the start of the spare capacity (`n <= limit <= spare.len()`).
        unsafe { buf.set_len(start + n) };
        let name_len = (hdr.msg_namelen as usize).min(name.len());
        let from = offload::parse_name(&name[..name_len])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address"))?;
        let control_len = hdr.msg_controllen.min(std::mem::size_of_val(&control));
        // SAFETY: `control` is a u64 array; viewing its first `control_len` (<= its size) bytes as u8 is valid.
        let control_bytes = unsafe { std::slice::from_raw_parts(control.as_ptr().cast::<u8>(), control_len) };
        Ok((n, from, offload::gro_segment_size(control_bytes)))
    }

    /// Sends `data` to `to` as datagrams of `segment` bytes (the last may be shorter) in one `sendmsg` with
    /// UDP GSO; `segment >= data.len()` sends one plain datagram. `Err` with [`io::ErrorKind::WouldBlock`]
    /// means the send buffer is full (nothing was sent).
    pub fn send_segmented(&self, data: &[u8], segment: usize, to: SocketAddr) -> io::Result<usize> {
        let addr = offload::RawAddr::new(to);
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut control = offload::GsoControl::default();
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths); the fields used are set below.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = addr.len();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        if segment < data.len() {
            hdr.msg_controllen = control.set_segment(segment.min(u16::MAX as usize) as u16);
            hdr.msg_control = control.as_mut_ptr();
        }
        // SAFETY: `hdr` points at `addr`, `control` and one iovec over `data`, all alive and unmoved for the
        // call; the kernel only reads them.
        let rc = unsafe { libc::sendmsg(self.socket.as_raw_fd(), &hdr, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    /// Puts the socket in blocking mode (for completion-based IO, where the ring waits instead of the
    /// caller) or back in non-blocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.socket.set_nonblocking(nonblocking)
    }

    /// Sends one datagram to `to`. `Err` with [`io::ErrorKind::WouldBlock`] means the send buffer is full.
    pub fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.socket.send_to(datagram, &SockAddr::from(to))
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

fn set_buffer_sizes(socket: &Socket, config: &UdpConfig) -> io::Result<BufferSizes> {
    // A failure to set a size is not fatal: the kernel default is used and reported.
    if let Err(e) = socket.set_recv_buffer_size(config.recv_buffer_bytes) {
        tracing::warn!(error = %e, requested = config.recv_buffer_bytes, "SO_RCVBUF refused");
    }
    if let Err(e) = socket.set_send_buffer_size(config.send_buffer_bytes) {
        tracing::warn!(error = %e, requested = config.send_buffer_bytes, "SO_SNDBUF refused");
    }
    let sizes = BufferSizes {
        recv_requested: config.recv_buffer_bytes,
        recv_effective: socket.recv_buffer_size()?,
        send_requested: config.send_buffer_bytes,
        send_effective: socket.send_buffer_size()?,
    };
    if sizes.recv_capped() {
        tracing::warn!(
            requested = sizes.recv_requested,
            effective = sizes.recv_effective,
            "SO_RCVBUF capped by the kernel (raise net.core.rmem_max)"
        );
    }
    if sizes.send_capped() {
        tracing::warn!(
            requested = sizes.send_requested,
            effective = sizes.send_effective,
            "SO_SNDBUF capped by the kernel (raise net.core.wmem_max)"
        );
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn send_and_receive_one_datagram_appending_to_the_buffer() {
        let a = UdpSocket::bind(loopback(), &UdpConfig::default()).unwrap();
        let b = UdpSocket::bind(loopback(), &UdpConfig::default()).unwrap();
        assert_ne!(a.local_addr().port(), 0);
        let mut buf = BytesMut::from(&b"xy"[..]);
        let err = b.recv_from(&mut buf, 2048).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::WouldBlock,
            "non-blocking with nothing queued"
        );
        assert_eq!(&buf[..], b"xy");
        assert_eq!(a.send_to(b"hello", b.local_addr()).unwrap(), 5);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let (n, from) = loop {
            match b.recv_from(&mut buf, 2048) {
                Ok(r) => break r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "datagram never arrived");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(n, 5);
        assert_eq!(from, a.local_addr());
        assert_eq!(&buf[..], b"xyhello");
    }

    #[test]
    fn a_long_datagram_is_truncated_to_the_limit() {
        let a = UdpSocket::bind(loopback(), &UdpConfig::default()).unwrap();
        let b = UdpSocket::bind(loopback(), &UdpConfig::default()).unwrap();
        a.send_to(&[7u8; 3000], b.local_addr()).unwrap();
        let mut buf = BytesMut::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let n = loop {
            match b.recv_from(&mut buf, 1000) {
                Ok((n, _)) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(n, 1000);
        assert_eq!(buf.len(), 1000);
        assert!(buf.iter().all(|&x| x == 7));
    }

    #[test]
    fn buffer_sizes_are_read_back_and_small_requests_are_not_capped() {
        let cfg = UdpConfig {
            reuse_port: true,
            recv_buffer_bytes: 64 << 10,
            send_buffer_bytes: 64 << 10,
        };
        let s = UdpSocket::bind(loopback(), &cfg).unwrap();
        let sizes = s.buffer_sizes();
        assert_eq!(sizes.recv_requested, 64 << 10);
        // 64 KiB is below every Linux default rmem_max/wmem_max; Linux reports twice the request.
        assert!(!sizes.recv_capped(), "{sizes:?}");
        assert!(!sizes.send_capped(), "{sizes:?}");
        // A huge request is either granted or capped, and the effective size is reported either way.
        let big = UdpSocket::bind(
            loopback(),
            &UdpConfig {
                recv_buffer_bytes: 1 << 30,
                send_buffer_bytes: 1 << 30,
                ..UdpConfig::default()
            },
        )
        .unwrap();
        assert!(big.buffer_sizes().recv_effective > 0);
        assert!(big.buffer_sizes().send_effective > 0);
    }

    #[test]
    fn reuse_port_lets_two_sockets_share_a_port() {
        let cfg = UdpConfig {
            reuse_port: true,
            ..UdpConfig::default()
        };
        let a = UdpSocket::bind(loopback(), &cfg).unwrap();
        let b = UdpSocket::bind(a.local_addr(), &cfg).unwrap();
        assert_eq!(a.local_addr(), b.local_addr());
    }
}
