//! Batched datagram IO: `sendmmsg(2)` and `recvmmsg(2)` move up to [`MAX_BATCH`] datagrams per syscall.
//!
//! The syscall count, not the copy, dominates small-datagram UDP cost; batching is the plain-socket baseline
//! the io_uring backend is measured against, and the epoll backend's fast path.

use crate::udp::UdpSocket;
use socket2::SockAddr;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Most datagrams one call moves.
pub const MAX_BATCH: usize = 64;

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is a plain C struct of integers and raw pointers; all-zero is a valid value (null
    // pointers, zero lengths, no flags) that every field of it is then set from before use.
    unsafe { std::mem::zeroed() }
}

/// Sends up to [`MAX_BATCH`] datagrams to `to` in one syscall; returns how many the kernel took (fewer than
/// asked when its send buffer filled; `WouldBlock` when it took none).
pub fn send_batch(socket: &UdpSocket, datagrams: &[&[u8]], to: SocketAddr) -> io::Result<usize> {
    let n = datagrams.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let addr = SockAddr::from(to);
    // The iovecs must not move once the headers point at them: fully built before the headers are.
    let mut iovs: Vec<libc::iovec> = datagrams[..n]
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut m = zeroed_mmsghdr();
            m.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_namelen = addr.len();
            m.msg_hdr.msg_iov = iov as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: `msgs` holds `n` initialised headers; each points at one iovec in `iovs` and at `addr`, all of
    // which outlive the call and are not moved during it; the iovecs point into the caller's datagrams, which
    // are borrowed for the call and only read by the kernel.
    let rc = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// Receives up to `bufs.len()` (at most [`MAX_BATCH`]) datagrams in one syscall, one into each buffer (a
/// longer datagram is truncated to its buffer's length). Appends `(length, source)` for each to `out` and
/// returns how many arrived; `WouldBlock` when none was queued.
pub fn recv_batch(
    socket: &UdpSocket,
    bufs: &mut [Vec<u8>],
    out: &mut Vec<(usize, SocketAddr)>,
) -> io::Result<usize> {
    let n = bufs.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: `sockaddr_storage` is plain data; all-zero is a valid (AF_UNSPEC) value.
    let mut names: Vec<libc::sockaddr_storage> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut iovs: Vec<libc::iovec> = bufs[..n]
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(names.iter_mut())
        .map(|(iov, name)| {
            let mut m = zeroed_mmsghdr();
            m.msg_hdr.msg_name = name as *mut libc::sockaddr_storage as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iov as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: `msgs` holds `n` initialised headers, each pointing at its own iovec (into a distinct caller
    // buffer of `iov_len` writable, initialised bytes) and its own `sockaddr_storage` of the size given; none
    // of them moves during the call; MSG_DONTWAIT keeps the call non-blocking and a null timeout is allowed.
    let rc = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = rc as usize;
    for ((m, name), iov) in msgs.iter().zip(names.iter()).zip(iovs.iter()).take(got) {
        let len = (m.msg_len as usize).min(iov.iov_len);
        // SAFETY: the kernel wrote a socket address of `msg_namelen` bytes into `name`, a `sockaddr_storage`
        // large enough for any address family.
        let addr = unsafe { SockAddr::new(*name, m.msg_hdr.msg_namelen) };
        if let Some(from) = addr.as_socket() {
            out.push((len, from));
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::UdpConfig;

    #[test]
    fn a_batch_goes_out_in_one_call_and_comes_back_in_one_call() {
        let cfg = UdpConfig::default();
        let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + i as usize]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        assert_eq!(send_batch(&a, &refs, b.local_addr()).unwrap(), 40);
        let mut bufs: Vec<Vec<u8>> = (0..MAX_BATCH).map(|_| vec![0; 2048]).collect();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 40 && std::time::Instant::now() < deadline {
            let before = got.len();
            match recv_batch(&b, &mut bufs[..40 - before], &mut got) {
                Ok(_) => {
                    for (k, (len, from)) in got[before..].iter().enumerate() {
                        assert_eq!(*from, a.local_addr());
                        assert_eq!(&bufs[k][..*len], &payloads[before + k][..]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("recv_batch: {e}"),
            }
        }
        assert_eq!(got.len(), 40);
        let mut none = Vec::new();
        let err = recv_batch(&b, &mut bufs, &mut none).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(send_batch(&a, &[], b.local_addr()).unwrap(), 0);
    }
}
