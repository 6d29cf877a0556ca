//! A minimal epoll reactor: the readiness backend of the engine (its `epoll` fallback to come).
//!
//! Level-triggered registrations keyed by a caller-chosen token, and a wait bounded by a timeout or a deadline.
//! Timeouts have nanosecond resolution through `epoll_pwait2` (Linux 5.11+); where the kernel lacks it (or a
//! seccomp filter refuses it) the poller falls back to `epoll_wait`, rounding the timeout *up* to the next
//! millisecond so that a wait never ends before its deadline.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Which readiness a registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// Wake when the fd is readable.
    pub readable: bool,
    /// Wake when the fd is writable.
    pub writable: bool,
}

impl Interest {
    /// Readable only.
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
    };
    /// Writable only.
    pub const WRITABLE: Interest = Interest {
        readable: false,
        writable: true,
    };
    /// Readable and writable.
    pub const BOTH: Interest = Interest {
        readable: true,
        writable: true,
    };

    fn bits(self) -> u32 {
        let mut bits = 0;
        if self.readable {
            bits |= libc::EPOLLIN as u32;
        }
        if self.writable {
            bits |= libc::EPOLLOUT as u32;
        }
        bits
    }
}

/// One readiness report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The token the fd was registered with.
    pub token: u64,
    /// Readable (or hung up / in error: a read will tell).
    pub readable: bool,
    /// Writable (or in error: a write will tell).
    pub writable: bool,
}

/// A reusable buffer of readiness reports, filled by [`Poller::wait`].
#[derive(Debug)]
pub struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    /// A buffer for up to `capacity` reports per wait (at least one).
    pub fn with_capacity(capacity: usize) -> Events {
        Events {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.clamp(1, i32::MAX as usize)],
            len: 0,
        }
    }

    /// The reports of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Readiness> + '_ {
        self.buf.iter().take(self.len).map(|e| {
            let bits = e.events;
            let err = bits & (libc::EPOLLERR as u32 | libc::EPOLLHUP as u32) != 0;
            Readiness {
                token: e.u64,
                readable: err || bits & (libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32) != 0,
                writable: err || bits & libc::EPOLLOUT as u32 != 0,
            }
        })
    }

    /// How many reports the last wait produced.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last wait produced no report (it timed out or was interrupted).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An epoll instance. Its fd is closed when dropped.
#[derive(Debug)]
pub struct Poller {
    epoll: OwnedFd,
    /// `epoll_pwait2` is available (cleared the first time the kernel refuses it).
    pwait2: bool,
}

impl Poller {
    /// Creates an epoll instance (close-on-exec).
    pub fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers; any return value is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created, valid descriptor that nothing else owns; `OwnedFd` takes sole
        // ownership and closes it exactly once.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Poller { epoll, pwait2: true })
    }

    /// Registers `fd` with `token`. The fd must stay open while registered (closing it unregisters it).
    pub fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    /// Changes the token or interest of a registered `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// Unregisters `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, Interest::default())
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest.bits(),
            u64: token,
        };
        // SAFETY: `self.epoll` is a valid epoll fd owned by `self`; `event` is a valid, initialised
        // epoll_event that outlives the call (the kernel copies it). An invalid `fd` yields EBADF, not UB.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until `deadline` (`None`: indefinitely) for readiness; fills `events` and returns how many
    /// reports it holds. A wait interrupted by a signal returns `Ok(0)`.
    pub fn wait_until(&mut self, events: &mut Events, deadline: Option<Instant>) -> io::Result<usize> {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        self.wait(events, timeout)
    }

    /// Waits up to `timeout` (`None`: indefinitely; zero: just checks) for readiness; fills `events` and
    /// returns how many reports it holds. A wait interrupted by a signal returns `Ok(0)`.
    pub fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        events.len = 0;
        let max = i32::try_from(events.buf.len()).unwrap_or(i32::MAX);
        let rc = if self.pwait2 {
            let rc = self.pwait2(events, max, timeout);
            let refused = rc < 0
                && matches!(
                    io::Error::last_os_error().raw_os_error(),
                    Some(libc::ENOSYS) | Some(libc::EPERM)
                );
            if refused {
                tracing::debug!("epoll_pwait2 refused; falling back to epoll_wait (millisecond timeouts)");
                self.pwait2 = false;
                self.wait_ms(events, max, timeout)
            } else {
                rc
            }
        } else {
            self.wait_ms(events, max, timeout)
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(err);
        }
        events.len = usize::try_from(rc).unwrap_or(0).min(events.buf.len());
        Ok(events.len)
    }

    fn pwait2(&self, events: &mut Events, max: i32, timeout: Option<Duration>) -> libc::c_int {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `self.epoll` is a valid epoll fd; `events.buf` has room for `max` (<= its length) entries
        // and is exclusively borrowed for the call; `ts_ptr` is null (wait forever) or points to a timespec
        // that lives until the call returns; a null sigmask means "do not change the mask".
        unsafe {
            libc::epoll_pwait2(
                self.epoll.as_raw_fd(),
                events.buf.as_mut_ptr(),
                max,
                ts_ptr,
                std::ptr::null(),
            )
        }
    }

    fn wait_ms(&self, events: &mut Events, max: i32, timeout: Option<Duration>) -> libc::c_int {
        let ms = match timeout {
            None => -1,
            // Round up: waking a fraction of a millisecond early would make the caller spin until its deadline.
            Some(t) => {
                let ms = t.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        // SAFETY: `self.epoll` is a valid epoll fd; `events.buf` has room for `max` (<= its length) entries
        // and is exclusively borrowed for the call.
        unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.buf.as_mut_ptr(), max, ms) }
    }

    /// Forces the millisecond-resolution `epoll_wait` path (for tests and for kernels known to lack
    /// `epoll_pwait2`).
    pub fn force_epoll_wait(&mut self) {
        self.pwait2 = false;
    }
}

impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::{UdpConfig, UdpSocket};
    use std::net::SocketAddr;

    fn socket() -> UdpSocket {
        UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &UdpConfig::default()).unwrap()
    }

    fn times_out_and_then_sees_a_datagram(mut poller: Poller) {
        let s = socket();
        poller.add(s.as_raw_fd(), 7, Interest::READABLE).unwrap();
        let mut events = Events::with_capacity(8);
        let start = Instant::now();
        let n = poller
            .wait_until(&mut events, Some(start + Duration::from_millis(20)))
            .unwrap();
        assert_eq!(n, 0);
        assert!(events.is_empty());
        assert!(
            start.elapsed() >= Duration::from_millis(20),
            "never wakes before the deadline"
        );

        let other = socket();
        other.send_to(b"ping", s.local_addr()).unwrap();
        let n = poller.wait(&mut events, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(n, 1);
        let r = events.iter().next().unwrap();
        assert_eq!(r.token, 7);
        assert!(r.readable);
        assert!(!r.writable);

        // Level-triggered: still readable until drained; interest can be changed; writable is immediate.
        poller.modify(s.as_raw_fd(), 9, Interest::BOTH).unwrap();
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 1);
        let r = events.iter().next().unwrap();
        assert_eq!((r.token, r.readable, r.writable), (9, true, true));

        poller.delete(s.as_raw_fd()).unwrap();
        assert_eq!(
            poller.wait(&mut events, Some(Duration::from_millis(1))).unwrap(),
            0
        );
        assert!(poller.delete(s.as_raw_fd()).is_err(), "not registered any more");
    }

    #[test]
    fn epoll_pwait2_path() {
        times_out_and_then_sees_a_datagram(Poller::new().unwrap());
    }

    #[test]
    fn epoll_wait_path_rounds_timeouts_up() {
        let mut p = Poller::new().unwrap();
        p.force_epoll_wait();
        times_out_and_then_sees_a_datagram(p);
        let mut p = Poller::new().unwrap();
        p.force_epoll_wait();
        let mut events = Events::with_capacity(1);
        let start = Instant::now();
        p.wait(&mut events, Some(Duration::from_micros(300))).unwrap();
        assert!(start.elapsed() >= Duration::from_micros(300));
    }
}
