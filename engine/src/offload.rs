//! UDP segmentation offload: GSO (`UDP_SEGMENT`) on send and GRO (`UDP_GRO`) on receive, and the control
//! messages and socket addresses that `sendmsg`/`recvmsg` (plain or through io_uring) carry.
//!
//! With GSO one `sendmsg` hands the kernel a buffer of up to [`MAX_GSO_SEGMENTS`] datagrams of the same size
//! (the last may be shorter); the stack splits it as late as it can (in the NIC, or just before the device).
//! With GRO the kernel hands back consecutive datagrams of one flow glued into one buffer, with their size in
//! a control message. Both cut the per-datagram cost of the syscall and the stack walk, which is what limits
//! UDP on Linux.
//!
//! Everything here that reads bytes the kernel wrote (control messages, socket names) is parsed from byte
//! slices with explicit length checks: no pointer casts.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// `UDP_SEGMENT` (linux/udp.h): the GSO segment size, as a socket option or a `SOL_UDP` control message.
pub const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO` (linux/udp.h): enable receive coalescing; the control message carries the segment size.
pub const UDP_GRO: libc::c_int = 104;
/// Most segments one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS` on every kernel since 4.18).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload one send or one coalesced receive can hold (an IPv4 datagram's limit).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Bytes of a `cmsghdr` on this platform (the data of a control message starts at this offset).
const CMSG_HDR: usize = std::mem::size_of::<libc::cmsghdr>();
/// Control messages are aligned to this.
const CMSG_ALIGN: usize = std::mem::size_of::<usize>();
/// Bytes a control message with a 4-byte payload occupies (`CMSG_SPACE(sizeof(int))`).
pub const CMSG_INT_SPACE: usize = align(CMSG_HDR + 4);

const fn align(n: usize) -> usize {
    (n + CMSG_ALIGN - 1) & !(CMSG_ALIGN - 1)
}

/// Room for the control messages a receive may carry (UDP_GRO's segment size, with slack for one more).
pub const RECV_CONTROL_BYTES: usize = 2 * CMSG_INT_SPACE;

/// Whether the kernel accepts `UDP_SEGMENT` on this socket (it does since Linux 4.18 for UDP over IP).
///
/// The option is probed by setting it to 0 ("no segmentation by default"), which changes nothing for later
/// sends: segment sizes travel per send in a control message.
pub fn gso_supported(fd: RawFd) -> bool {
    set_int_option(fd, libc::SOL_UDP, UDP_SEGMENT, 0).is_ok()
}

/// Turns UDP GRO on (or off) for the socket; errors where the kernel does not know the option.
pub fn set_gro(fd: RawFd, on: bool) -> io::Result<()> {
    set_int_option(fd, libc::SOL_UDP, UDP_GRO, i32::from(on))
}

/// Sets `SO_BUSY_POLL` (microseconds of busy polling of the device queue on a blocking receive; 0 is off).
pub fn set_busy_poll(fd: RawFd, micros: u32) -> io::Result<()> {
    set_int_option(
        fd,
        libc::SOL_SOCKET,
        libc::SO_BUSY_POLL,
        micros.min(i32::MAX as u32) as i32,
    )
}

fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: i32) -> io::Result<()> {
    let v: libc::c_int = value;
    // SAFETY: `v` is a live c_int for the duration of the call and its size is passed as the option length;
    // the kernel only reads it. An invalid fd or option is reported as an error, not undefined behaviour.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Control-message storage, aligned for `cmsghdr`, for one `UDP_SEGMENT` message.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(8))]
pub struct GsoControl {
    bytes: [u8; CMSG_INT_SPACE],
}

impl GsoControl {
    /// Writes a `SOL_UDP`/`UDP_SEGMENT` control message for `segment_bytes`; returns the control length
    /// to put in `msg_controllen`.
    pub fn set_segment(&mut self, segment_bytes: u16) -> usize {
        let len = CMSG_HDR + std::mem::size_of::<u16>();
        self.bytes = [0; CMSG_INT_SPACE];
        write_cmsg_header(&mut self.bytes, len, libc::SOL_UDP, UDP_SEGMENT);
        self.bytes[CMSG_HDR..CMSG_HDR + 2].copy_from_slice(&segment_bytes.to_ne_bytes());
        align(len)
    }

    /// The storage's address, for `msg_control`.
    pub fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.bytes.as_mut_ptr().cast()
    }
}

fn write_cmsg_header(buf: &mut [u8], cmsg_len: usize, level: libc::c_int, kind: libc::c_int) {
    // cmsghdr on Linux: { cmsg_len: size_t, cmsg_level: int, cmsg_type: int }.
    let n = std::mem::size_of::<usize>();
    buf[..n].copy_from_slice(&cmsg_len.to_ne_bytes());
    buf[n..n + 4].copy_from_slice(&level.to_ne_bytes());
    buf[n + 4..n + 8].copy_from_slice(&kind.to_ne_bytes());
}

/// The GRO segment size in a received control buffer, if the kernel coalesced datagrams (`None`: one
/// datagram). Malformed or truncated messages are ignored.
pub fn gro_segment_size(control: &[u8]) -> Option<usize> {
    let n = std::mem::size_of::<usize>();
    let mut at = 0usize;
    while at + CMSG_HDR <= control.len() {
        let len = usize::from_ne_bytes(control[at..at + n].try_into().ok()?);
        let level = i32::from_ne_bytes(control[at + n..at + n + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(control[at + n + 4..at + n + 8].try_into().ok()?);
        if len < CMSG_HDR || at + len > control.len() {
            return None;
        }
        if level == libc::SOL_UDP && kind == UDP_GRO && len >= CMSG_HDR + 4 {
            let size = i32::from_ne_bytes(control[at + CMSG_HDR..at + CMSG_HDR + 4].try_into().ok()?);
            return usize::try_from(size).ok().filter(|&s| s > 0);
        }
        at += align(len);
    }
    None
}

/// Splits a received buffer into its datagrams: one when `segment` is `None`, else consecutive datagrams of
/// `segment` bytes with a shorter last one.
pub fn segments(payload: &[u8], segment: Option<usize>) -> impl Iterator<Item = &[u8]> {
    let size = segment.unwrap_or(payload.len()).max(1);
    payload.chunks(size)
}

/// A socket address in the C layout (`sockaddr_in` or `sockaddr_in6`), for `msg_name`.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub struct RawAddr {
    bytes: [u8; std::mem::size_of::<libc::sockaddr_in6>()],
    len: usize,
}

/// Bytes a receive reserves for the peer's name (`sockaddr_in6`, which also holds a `sockaddr_in`).
pub const NAME_BYTES: usize = std::mem::size_of::<libc::sockaddr_in6>();

impl RawAddr {
    /// The C form of `addr`.
    pub fn new(addr: SocketAddr) -> RawAddr {
        let mut bytes = [0u8; NAME_BYTES];
        let len = match addr {
            SocketAddr::V4(a) => {
                bytes[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                bytes[2..4].copy_from_slice(&a.port().to_be_bytes());
                bytes[4..8].copy_from_slice(&a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                bytes[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
                bytes[2..4].copy_from_slice(&a.port().to_be_bytes());
                bytes[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
                bytes[8..24].copy_from_slice(&a.ip().octets());
                bytes[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
                NAME_BYTES
            }
        };
        RawAddr { bytes, len }
    }

    /// The address's pointer, for `msg_name` (the kernel only reads it on send).
    pub fn as_ptr(&self) -> *const libc::c_void {
        self.bytes.as_ptr().cast()
    }

    /// Its length, for `msg_namelen`.
    pub fn len(&self) -> libc::socklen_t {
        self.len as libc::socklen_t
    }

    /// Whether the address is empty (never, for one built by [`RawAddr::new`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Parses a `sockaddr_in`/`sockaddr_in6` the kernel wrote; `None` for another family or a short name.
pub fn parse_name(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(name.get(..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET as u16 {
        let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if family == libc::AF_INET6 as u16 {
        let flow = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_round_trip_through_the_c_layout() {
        for addr in [
            "127.0.0.1:4433".parse::<SocketAddr>().unwrap(),
            "[::1]:9".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 65535, 7, 3)),
        ] {
            let raw = RawAddr::new(addr);
            assert_eq!(parse_name(&raw.bytes[..raw.len]), Some(addr));
        }
        assert_eq!(parse_name(&[]), None);
        assert_eq!(
            parse_name(&[0xff, 0xff, 0, 0, 1, 2, 3, 4]),
            None,
            "unknown family"
        );
        let v4 = RawAddr::new("10.0.0.1:1".parse().unwrap());
        assert_eq!(parse_name(&v4.bytes[..5]), None, "truncated");
    }

    #[test]
    fn the_gso_control_message_is_what_the_gro_parser_reads_back() {
        // A GRO message has the same layout with an int payload: build one by hand.
        let mut buf = [0u8; CMSG_INT_SPACE];
        write_cmsg_header(&mut buf, CMSG_HDR + 4, libc::SOL_UDP, UDP_GRO);
        buf[CMSG_HDR..CMSG_HDR + 4].copy_from_slice(&1400i32.to_ne_bytes());
        assert_eq!(gro_segment_size(&buf), Some(1400));
        let mut c = GsoControl::default();
        assert_eq!(c.set_segment(1200), CMSG_INT_SPACE);
        assert_eq!(gro_segment_size(&c.bytes), None, "UDP_SEGMENT is not UDP_GRO");
        // Garbage and truncation never panic.
        assert_eq!(gro_segment_size(&[0xff; 40]), None);
        assert_eq!(gro_segment_size(&buf[..CMSG_HDR + 2]), None);
        assert_eq!(gro_segment_size(&[]), None);
    }

    #[test]
    fn a_coalesced_buffer_splits_into_its_segments() {
        let data: Vec<u8> = (0..250u8).collect();
        let parts: Vec<&[u8]> = segments(&data, Some(100)).collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [100, 100, 50]);
        assert_eq!(segments(&data, None).count(), 1);
        assert_eq!(segments(&[], Some(100)).count(), 0);
    }

    #[test]
    fn loopback_udp_sockets_take_gso_and_gro() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        assert!(gso_supported(s.as_raw_fd()), "Linux >= 4.18 has UDP_SEGMENT");
        set_gro(s.as_raw_fd(), true).unwrap();
        assert!(set_gro(-1, true).is_err(), "a bad fd is an error");
    }
}
