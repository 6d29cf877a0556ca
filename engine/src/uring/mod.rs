//! The io_uring backend: ring setup with the best flags the kernel offers, provided buffer rings, a UDP
//! socket driven by multishot `recvmsg` and batched `sendmsg` (with GSO) submissions, TCP with multishot
//! accept and receive, and [`CoreIo`]: one core's TCP and UDP drivers on one shared [`Ring`].
//!
//! A ring belongs to one thread: it is created disabled (`IORING_SETUP_R_DISABLED`) and enabled by its first
//! use, so that `SINGLE_ISSUER` and `DEFER_TASKRUN` bind it to the thread that runs it (a core's thread), not
//! to the one that built it.

pub mod buf_ring;
pub mod core_io;
pub mod entry_ring;
pub mod owned_buffers;
pub mod ring;
pub mod tcp;
pub mod udp;

pub use buf_ring::ProvidedBuffers;
pub use core_io::{CoreEvent, CoreIo, TcpId, UdpId};
pub use ring::{Completion, Ring, Tag};
pub use tcp::{TcpConnId, TcpDriver, TcpEvent, TcpStats, UringTcp, UringTcpConfig};
pub use udp::{UdpDriver, UringStats, UringUdp};

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{squeue, IoUring};
use std::io;
use std::time::Duration;

/// The largest completion queue the kernel builds (`IORING_MAX_CQ_ENTRIES`).
pub const MAX_COMPLETION_ENTRIES: u32 = 65_536;

/// How to build a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Submission queue entries (at least 8, rounded up to a power of two by the kernel).
    pub entries: u32,
    /// Completion queue entries (0: twice `entries`, as the kernel defaults to; at most
    /// [`MAX_COMPLETION_ENTRIES`], rounded up to a power of two by the kernel). A ring with more operations in
    /// flight than its completion queue holds still loses none (the kernel keeps the rest on an overflow list),
    /// but they come back at most a queue's worth per wait, in order: a completion that finished after them,
    /// such as a publisher's bytes behind thousands of viewers' writes, waits several loop passes for its turn.
    /// So a ring that serves many connections sizes it to them.
    pub completion_entries: u32,
    /// Use a kernel submission-polling thread that idles after this many milliseconds (`None`: no SQPOLL; the
    /// application's `io_uring_enter` submits). SQPOLL costs a kernel thread per ring.
    pub sqpoll_idle_ms: Option<u32>,
    /// How a wait gathers completions into one wake-up (see [`WaitBatch`]).
    pub batch: WaitBatch,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            entries: 256,
            completion_entries: 0,
            sqpoll_idle_ms: None,
            batch: WaitBatch::OFF,
        }
    }
}

/// Wake-up coalescing, as a NIC's interrupt moderation (`rx-usecs`, `rx-frames`) does it: a wait that has
/// seen its first completion goes on until `completions` are ready or `max_delay` has passed since the wait
/// began, whichever comes first (the kernel's `min_wait`, `IORING_FEAT_MIN_TIMEOUT`, 6.12). A paced flow's
/// datagrams arrive one per ~100 us at 100 Mbit/s; without this each one is a wake-up of its own, and a
/// wake-up, not the datagram's bytes, is what a receive costs (measured: the transport spent more than half
/// its CPU in scheduling at 94 Mbit/s). The price is latency: a completion may wait up to `max_delay`.
/// A timer that is due sooner still ends the wait at its time. Kernels without the feature wait for one
/// completion, as with `completions` 1 or `max_delay` zero (off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitBatch {
    /// Completions that end a wait at once (1: off).
    pub completions: u32,
    /// The longest a wait goes on once a completion is ready (zero: off).
    pub max_delay: Duration,
}

impl WaitBatch {
    /// No coalescing: every wait ends at its first completion.
    pub const OFF: WaitBatch = WaitBatch {
        completions: 1,
        max_delay: Duration::ZERO,
    };

    /// 16 completions or 200 us: the node's default (`[engine] wake_batch`, `wake_batch_us`). Measured on a
    /// 94 Mbit/s, 1%-loss emulated path it took the transport's CPU per GB from ~21 to ~13-16 s with the
    /// pacing rounds and ACK spacing; on loopback at 10+ Gbit/s on one connection, where the round trip is
    /// tens of microseconds, waiting costs throughput, so a plain ring does not batch.
    pub const PACED: WaitBatch = WaitBatch {
        completions: 16,
        max_delay: Duration::from_micros(200),
    };

    /// Whether this batches anything.
    pub fn is_on(&self) -> bool {
        self.completions > 1 && !self.max_delay.is_zero()
    }

    /// This batch for a wait during which `train` = `(expected, delay)`: a train of `expected` datagrams is
    /// still to come, due in within `delay` (a transport's hint, e.g. `transport::Endpoint::receive_batch_hint`;
    /// `None`, no train, leaves this batch as it is). Once something is ready, the wait goes on until the
    /// longer of this batch's delay and `delay` has passed since it began, or until `expected` completions are
    /// (at most [`MAX_TRAIN_COMPLETIONS`]). The count rarely ends it early: with deferred task work
    /// (`IORING_SETUP_DEFER_TASKRUN`) a socket's arrivals while the task sleeps are one pending piece of task
    /// work, not counted one by one, so the delay is what bounds the wait, and it should be when the train is
    /// expected to be in. A batch that is off stays off (a plain ring never waits for more than one
    /// completion), and so does this one when fewer than 2 are expected.
    pub fn for_train(self, train: Option<(u32, Duration)>) -> WaitBatch {
        let Some((expected, delay)) = train else {
            return self;
        };
        if !self.is_on() || expected < 2 {
            return self;
        }
        WaitBatch {
            completions: expected.min(MAX_TRAIN_COMPLETIONS),
            max_delay: self.max_delay.max(delay),
        }
    }
}

/// The most completions a train's wait ([`WaitBatch::for_train`]) waits for.
pub const MAX_TRAIN_COMPLETIONS: u32 = 64;

impl Default for WaitBatch {
    /// [`WaitBatch::OFF`].
    fn default() -> Self {
        WaitBatch::OFF
    }
}

/// The setup flags a ring got (the kernel may refuse the newer ones; the builder then falls back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingFeatures {
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0).
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1): completions are processed only when the owner waits.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` (5.19): no interrupting IPIs for task work.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SQPOLL`.
    pub sqpoll: bool,
    /// `IORING_FEAT_MIN_TIMEOUT` (6.12): waits can batch completions ([`WaitBatch`]).
    pub min_wait: bool,
}

/// Whether an error from `io_uring_setup` means io_uring is refused here (seccomp, `kernel.io_uring_disabled`,
/// an old kernel) rather than that a flag was not understood.
pub fn is_refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS | libc::EACCES))
}

/// Builds a ring with the best flags the kernel takes: SINGLE_ISSUER + DEFER_TASKRUN (or SQPOLL when asked),
/// else COOP_TASKRUN, else none. Fails with the first error that [`is_refused`] (io_uring is not available),
/// or the last one if every combination was rejected.
pub fn build_ring(config: &RingConfig) -> io::Result<(IoUring, RingFeatures)> {
    let entries = config.entries.max(8);
    let attempts: &[RingFeatures] = if config.sqpoll_idle_ms.is_some() {
        &[
            RingFeatures {
                single_issuer: true,
                sqpoll: true,
                ..RingFeatures::default()
            },
            RingFeatures {
                sqpoll: true,
                ..RingFeatures::default()
            },
        ]
    } else {
        &[
            RingFeatures {
                single_issuer: true,
                defer_taskrun: true,
                ..RingFeatures::default()
            },
            RingFeatures {
                coop_taskrun: true,
                ..RingFeatures::default()
            },
            RingFeatures::default(),
        ]
    };
    let mut last = io::Error::new(io::ErrorKind::Unsupported, "no io_uring setup tried");
    for want in attempts {
        let mut b = IoUring::builder();
        b.setup_r_disabled();
        let cq = match config.completion_entries {
            0 => entries.saturating_mul(2),
            n => n.max(entries.saturating_mul(2)),
        };
        b.setup_cqsize(cq.min(MAX_COMPLETION_ENTRIES));
        if want.single_issuer {
            b.setup_single_issuer();
        }
        if want.defer_taskrun {
            b.setup_defer_taskrun();
        }
        if want.coop_taskrun {
            b.setup_coop_taskrun();
        }
        if want.sqpoll {
            b.setup_sqpoll(config.sqpoll_idle_ms.unwrap_or(0));
        }
        match b.build(entries) {
            Ok(ring) => {
                let min_wait = ring.params().is_feature_min_timeout();
                return Ok((ring, RingFeatures { min_wait, ..*want }));
            }
            Err(e) if is_refused(&e) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The timeout a batched wait with no limit is given (see [`submit_and_wait`]).
const FAR_TIMEOUT: Duration = Duration::from_secs(3_600);

/// Submits what is queued on `ring` and waits until a completion is ready or `timeout` passes (`None`: no
/// limit; zero: just submit and look), gathering completions as `batch` says where the kernel can (`min_wait`:
/// [`RingFeatures::min_wait`]). A timeout, a signal or a full completion queue end the wait normally.
pub fn submit_and_wait(
    ring: &IoUring,
    timeout: Option<Duration>,
    batch: WaitBatch,
    min_wait: bool,
) -> io::Result<()> {
    // The kernel ends a batched wait at the min-wait time even when the timeout is sooner, and with no
    // timeout at all it ends it there even with nothing ready: so the min wait is held to the timeout, and a
    // wait with no limit gets a far one.
    let min_wait_usec = match timeout {
        _ if !min_wait || !batch.is_on() => 0,
        None => batch.max_delay.as_micros(),
        Some(t) => batch.max_delay.min(t).as_micros(),
    };
    let min_wait_usec = u32::try_from(min_wait_usec).unwrap_or(u32::MAX);
    let result = match (timeout, min_wait_usec) {
        (None, 0) => ring.submitter().submit_and_wait(1),
        (timeout, 0) => {
            let ts = Timespec::from(timeout.unwrap_or(Duration::ZERO));
            ring.submitter()
                .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
        }
        (timeout, usec) => {
            let ts = Timespec::from(timeout.unwrap_or(FAR_TIMEOUT));
            let args = SubmitArgs::new().timespec(&ts).min_wait_usec(usec);
            ring.submitter()
                .submit_with_args(batch.completions as usize, &args)
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A multishot poll for readability of `fd` (a cross-core waker's eventfd): each completion ends a wait; the
/// caller drains `fd` and re-arms the poll when a completion comes without the MORE flag.
pub fn watch_entry(fd: std::os::fd::RawFd, user_data: u64) -> io_uring::squeue::Entry {
    io_uring::opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as u32)
        .multi(true)
        .build()
        .user_data(user_data)
}

/// Enables a ring built disabled (see the module docs), once: the calling thread becomes its single issuer.
pub fn enable_once(ring: &IoUring, enabled: &mut bool) -> io::Result<()> {
    if !*enabled {
        ring.submitter().register_enable_rings()?;
        *enabled = true;
    }
    Ok(())
}

/// Queues `entry` on `ring`, handing what is queued to the kernel first when the submission queue is full
/// (each such `io_uring_enter` is counted in `enters`).
///
/// # Safety
/// Every pointer in `entry` must stay valid, and the memory it names untouched by the caller, until the
/// entry's completion has been reaped or the ring has been quiesced.
pub unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry, enters: &mut u64) -> io::Result<()> {
    loop {
        // SAFETY: the caller guarantees what `entry` points at outlives its completion (this function's contract).
        let pushed = unsafe { ring.submission().push(entry) };
        if pushed.is_ok() {
            return Ok(());
        }
        *enters += 1;
        ring.submit()?;
    }
}

/// Whether this process may use io_uring: builds (and drops) a small ring. `Err` says why not.
pub fn probe() -> io::Result<RingFeatures> {
    build_ring(&RingConfig {
        entries: 8,
        ..RingConfig::default()
    })
    .map(|(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_gives_a_ring_with_the_modern_flags() {
        // Linux 6.1+ (every machine this project runs CI on) takes SINGLE_ISSUER + DEFER_TASKRUN.
        let f = probe().unwrap();
        assert!(f.single_issuer && f.defer_taskrun, "{f:?}");
        let (_ring, f) = build_ring(&RingConfig {
            entries: 64,
            sqpoll_idle_ms: Some(10),
            ..RingConfig::default()
        })
        .unwrap();
        assert!(f.sqpoll, "{f:?}");
    }

    #[test]
    fn refusal_is_told_apart_from_an_unknown_flag() {
        assert!(is_refused(&io::Error::from_raw_os_error(libc::EPERM)));
        assert!(is_refused(&io::Error::from_raw_os_error(libc::ENOSYS)));
        assert!(!is_refused(&io::Error::from_raw_os_error(libc::EINVAL)));
    }
}
