//! [`Waker`]: an eventfd that lets one thread wake another core's poller without spinning.
//!
//! The sender pushes into the core's bounded queue, then calls [`Waker::wake`]; the core has the waker's fd
//! registered in its poller and calls [`Waker::drain`] when it reports readable. Wakes coalesce: many wakes
//! before a drain cost one wake-up.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An eventfd in non-blocking, close-on-exec mode. Share it between threads behind an `Arc`.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// Creates the eventfd.
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; the return value is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created, valid descriptor owned by nothing else; OwnedFd closes it once.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd })
    }

    /// Makes the eventfd readable (wakes the core polling it). Never blocks: a counter at its maximum
    /// (EAGAIN) is already a pending wake.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: the fd is a valid eventfd owned by `self`; the buffer is 8 readable bytes that outlive the call.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears pending wakes; returns how many there were.
    pub fn drain(&self) -> u64 {
        let mut count: u64 = 0;
        // SAFETY: the fd is a valid eventfd owned by `self`; `count` is 8 writable bytes that outlive the call.
        let rc = unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        if rc == 8 {
            count
        } else {
            0
        }
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Events, Interest, Poller};
    use std::time::Duration;

    #[test]
    fn wakes_coalesce_and_drain_clears() {
        let waker = Waker::new().unwrap();
        let mut poller = Poller::new().unwrap();
        poller.add(waker.as_raw_fd(), 7, Interest::READABLE).unwrap();
        let mut events = Events::with_capacity(4);
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
        waker.wake();
        waker.wake();
        assert_eq!(
            poller
                .wait(&mut events, Some(Duration::from_millis(100)))
                .unwrap(),
            1
        );
        assert_eq!(waker.drain(), 2);
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
        assert_eq!(waker.drain(), 0);
    }

    #[test]
    fn wake_from_another_thread() {
        let waker = std::sync::Arc::new(Waker::new().unwrap());
        let mut poller = Poller::new().unwrap();
        poller.add(waker.as_raw_fd(), 1, Interest::READABLE).unwrap();
        let remote = waker.clone();
        let thread = std::thread::spawn(move || remote.wake());
        let mut events = Events::with_capacity(4);
        let n = poller.wait(&mut events, Some(Duration::from_secs(5))).unwrap();
        thread.join().unwrap();
        assert_eq!(n, 1);
    }
}
