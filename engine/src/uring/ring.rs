//! One io_uring that several drivers share: a core's TCP listener and connections, its UDP sockets and its
//! cross-core waker all submit to it, and one `io_uring_enter` waits for all of them.
//!
//! Each driver gets a [`Tag`]; the top byte of every `user_data` it submits names it (the low 56 bits are
//! the driver's own), so the owner of the ring routes each [`Completion`] back to its driver. Each driver also
//! gets its own provided-buffer group id. The ring itself holds tag 0: its watch on a waker's eventfd (a
//! completion that only ends a wait) and cancellations whose answers nobody reads.
//!
//! Drivers never own the ring and never drop while they have operations in flight: the owner (a
//! [`super::UringTcp`], a [`super::UringUdp`] or a [`super::CoreIo`]) quiesces its drivers on this ring before
//! the ring goes, so no completion can name freed memory.

use super::{build_ring, RingConfig, RingFeatures, WaitBatch};
use io_uring::{cqueue, opcode, squeue, IoUring};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Bits of a `user_data` that belong to the driver that submitted it.
pub const LOW_BITS: u32 = 56;
/// The largest driver-owned `user_data` value.
pub const LOW_MAX: u64 = (1 << LOW_BITS) - 1;
/// The ring's own `user_data` for its watch.
const WATCH: u64 = 1;
/// The ring's own `user_data` for cancellations nobody waits for.
const IGNORE: u64 = 2;

/// Which driver on a [`Ring`] an operation belongs to: the top byte of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag(u8);

impl Tag {
    /// The tag of the ring itself.
    const RING: Tag = Tag(0);

    /// The full `user_data` of the driver's operation `low` (at most [`LOW_MAX`]).
    pub fn user_data(self, low: u64) -> u64 {
        (u64::from(self.0) << LOW_BITS) | (low & LOW_MAX)
    }

    /// The tag a `user_data` carries.
    pub fn of(user_data: u64) -> Tag {
        Tag((user_data >> LOW_BITS) as u8)
    }
}

/// One completion, copied out of the completion queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The driver it belongs to.
    pub tag: Tag,
    /// The driver's own part of the `user_data`.
    pub data: u64,
    /// The operation's result (negative: `-errno`).
    pub result: i32,
    /// The completion's flags (`MORE`, the selected buffer).
    pub flags: u32,
}

/// An io_uring shared by the drivers of one core.
pub struct Ring {
    ring: IoUring,
    features: RingFeatures,
    /// How waits gather completions.
    batch: WaitBatch,
    enabled: bool,
    /// `io_uring_enter` calls.
    enters: u64,
    /// The last [`Ring::submit_and_wait`] returned after submitting, without waiting (see there).
    returned_early: bool,
    next_tag: u8,
    next_group: u16,
    /// Completions taken off the queue while one driver quiesced alone, for the others, or set aside by a
    /// wait as quiet (see [`Ring::submit_and_wait_quiet`]).
    backlog: VecDeque<Completion>,
    /// Reused by [`Ring::submit_and_wait_quiet`] to look at what is ready.
    scratch: Vec<Completion>,
    watched: Option<RawFd>,
    watch_armed: bool,
    /// The watched fd became readable since [`Ring::take_woken`] last looked.
    woken: bool,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("features", &self.features)
            .field("enters", &self.enters)
            .field("drivers", &self.next_tag.saturating_sub(1))
            .finish()
    }
}

impl Ring {
    /// Builds a ring (see [`build_ring`]). It is enabled by its first submission, on the thread that makes it.
    pub fn new(config: &RingConfig) -> io::Result<Ring> {
        let (ring, features) = build_ring(config)?;
        Ok(Ring {
            ring,
            features,
            batch: config.batch,
            enabled: false,
            enters: 0,
            returned_early: false,
            next_tag: 1,
            next_group: 0,
            backlog: VecDeque::new(),
            scratch: Vec::new(),
            watched: None,
            watch_armed: false,
            woken: false,
        })
    }

    /// The setup flags the ring got.
    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// `io_uring_enter` calls so far (waits, and submissions forced by a full submission queue).
    pub fn enters(&self) -> u64 {
        self.enters
    }

    /// Whether anything was ever submitted (the ring is enabled then; before, nothing can be in flight).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// A tag and a provided-buffer group for a new driver. Fails past 255 drivers.
    pub fn new_driver(&mut self) -> io::Result<(Tag, u16)> {
        if self.next_tag == u8::MAX {
            return Err(io::Error::other("a ring holds at most 254 drivers"));
        }
        let tag = Tag(self.next_tag);
        let group = self.next_group;
        self.next_tag += 1;
        self.next_group += 1;
        Ok((tag, group))
    }

    /// The ring, to register or unregister provided buffers with.
    pub fn io_uring(&self) -> &IoUring {
        &self.ring
    }

    /// Makes each wait return when `fd` becomes readable (an eventfd another core writes to wake this one).
    /// The caller drains `fd` and keeps it open while the ring lives.
    pub fn watch(&mut self, fd: RawFd) {
        self.watched = Some(fd);
    }

    /// Queues `entry`, handing what is queued to the kernel first when the submission queue is full.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid, and the memory it names untouched by the caller, until the
    /// entry's completion has been handled or the ring has been quiesced.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        super::enable_once(&self.ring, &mut self.enabled)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { super::push(&mut self.ring, entry, &mut self.enters) }
    }

    /// Cancels the operation whose full `user_data` is `target`; its own completion follows (the
    /// cancellation's answer is dropped).
    pub fn cancel(&mut self, target: u64) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(Tag::RING.user_data(IGNORE));
        // SAFETY: a cancellation names no memory.
        unsafe { self.push(&entry) }
    }

    /// How this ring's waits gather completions (set at build from [`RingConfig::batch`]).
    pub fn batch(&self) -> WaitBatch {
        self.batch
    }

    /// Changes how the following waits gather completions (e.g. [`WaitBatch::for_train`] for one wait).
    pub fn set_batch(&mut self, batch: WaitBatch) {
        self.batch = batch;
    }

    /// Submits what is queued (arming the watch first) and waits until a completion is ready or `timeout`
    /// passes (`None`: no limit; zero: just submit). Returns at once when completions are already waiting.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.submit_and_wait_quiet(timeout, &|_| false)
    }

    /// [`Self::submit_and_wait`], where completions that `quiet` accepts (a successful send's: it only frees
    /// a slot) do not end a batched wait when they are ready as the wait begins: they are set aside for the
    /// next [`Self::drain`], which hands them out first, and the wait goes on until something else is ready or
    /// `timeout` passes. Any other completion ready then (a receive, a waker) ends it at once, as before.
    pub fn submit_and_wait_quiet(
        &mut self,
        timeout: Option<Duration>,
        quiet: &dyn Fn(&Completion) -> bool,
    ) -> io::Result<()> {
        if let (Some(fd), false) = (self.watched, self.watch_armed) {
            let entry = super::watch_entry(fd, Tag::RING.user_data(WATCH));
            // SAFETY: a poll names no memory.
            unsafe { self.push(&entry)? };
            self.watch_armed = true;
        }
        super::enable_once(&self.ring, &mut self.enabled)?;
        self.enters += 1;
        let timeout = if self.backlog.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let batching = self.batch.is_on() && self.features.min_wait;
        if batching
            && !self.returned_early
            && timeout != Some(Duration::ZERO)
            && !self.ring.submission().is_empty()
        {
            // A send usually completes while it is submitted. Its completion, ready before the wait begins,
            // would end a batched wait at the min-wait time (the kernel ends it then if anything is ready),
            // not at the timeout: a wake-up per send. So submit first, and hand such completions to the
            // caller before waiting; its next wait then sleeps until something arrives. At most once before
            // a real wait: a send refused at once (resubmitted by its driver) cannot make this spin, and the
            // real wait runs the ring's deferred work (receives, wake-ups).
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {}
                Err(e) => return Err(e),
            }
            if !self.ring.completion().is_empty() && !self.set_aside_quiet(quiet) {
                self.returned_early = true;
                return Ok(());
            }
            self.enters += 1;
        }
        self.returned_early = false;
        super::submit_and_wait(&self.ring, timeout, self.batch, self.features.min_wait)
    }

    /// Takes every ready completion off the queue into the backlog (the ring's own are handled here, as in
    /// [`Self::drain`]); true if `quiet` accepted each of them and none was the watch's, so a wait may go on.
    fn set_aside_quiet(&mut self, quiet: &dyn Fn(&Completion) -> bool) -> bool {
        let mut ready = std::mem::take(&mut self.scratch);
        let watch = self.take_ready(&mut ready);
        let all_quiet = !watch && ready.iter().all(quiet);
        self.backlog.extend(ready.drain(..));
        self.scratch = ready;
        all_quiet
    }

    /// Moves every ready completion into `out` (those set aside earlier first). The ring's own are handled
    /// here and not reported.
    pub fn drain(&mut self, out: &mut Vec<Completion>) {
        out.extend(self.backlog.drain(..));
        self.take_ready(out);
    }

    /// Moves the completions ready on the queue into `out`, handling the ring's own (the watch's sets
    /// `woken`). Returns whether the watch's was among them.
    fn take_ready(&mut self, out: &mut Vec<Completion>) -> bool {
        let mut watch = false;
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let c = Completion {
                tag: Tag::of(cqe.user_data()),
                data: cqe.user_data() & LOW_MAX,
                result: cqe.result(),
                flags: cqe.flags(),
            };
            if c.tag == Tag::RING {
                if c.data == WATCH {
                    watch = true;
                    self.woken |= c.result >= 0;
                    if !cqueue::more(c.flags) {
                        self.watch_armed = false;
                    }
                }
                continue;
            }
            out.push(c);
        }
        watch
    }

    /// Whether the watched fd became readable since the last call (a drain saw its poll complete): only then
    /// does the caller need to drain it.
    pub fn take_woken(&mut self) -> bool {
        std::mem::take(&mut self.woken)
    }

    /// Puts completions back for the next [`Ring::drain`] (those a driver took while quiescing alone that
    /// belong to another).
    pub fn set_aside(&mut self, completions: impl IntoIterator<Item = Completion>) {
        self.backlog.extend(completions);
    }

    /// Stops watching before the ring goes: cancels the watch's poll (its completion is read by a later
    /// drain) and arms it no more.
    pub fn begin_quiesce(&mut self) {
        self.watched = None;
        if self.watch_armed && self.cancel(Tag::RING.user_data(WATCH)).is_err() {
            tracing::warn!("could not cancel the ring's watch");
        }
    }

    /// Whether the ring's own operations (its watch) are still in flight.
    pub fn busy(&self) -> bool {
        self.watch_armed
    }
}

/// A driver's side of quiescing a [`Ring`]: what its owner calls before either goes.
pub trait Quiesce {
    /// The driver's tag: completions that carry it are its own.
    fn tag(&self) -> Tag;
    /// Cancels what is armed (receives, accepts) and shuts connections down.
    fn begin_quiesce(&mut self, ring: &mut Ring);
    /// Whether the kernel may still use the driver's memory.
    fn busy(&self) -> bool;
    /// Handles one of its completions while stopping (reporting nothing).
    fn discard(&mut self, ring: &mut Ring, c: &Completion);
    /// Unregisters its buffers once quiet; `false` when its memory must not be freed.
    fn end_quiesce(&mut self, ring: &Ring) -> bool;
    /// Leaks what the kernel may still touch, after a failed quiesce.
    fn leak(&mut self);
}

/// Quiesces `drivers` and the ring's own watch (at most 2 s), before the ring and the drivers go: cancels
/// what they have armed, handles their completions until none is busy, unregisters their buffers, and leaks,
/// loudly, the memory of any that could not be quieted.
pub fn quiesce(ring: &mut Ring, drivers: &mut [&mut dyn Quiesce]) {
    if ring.is_enabled() {
        for d in drivers.iter_mut() {
            d.begin_quiesce(ring);
        }
        ring.begin_quiesce();
        let mut ready = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while (ring.busy() || drivers.iter().any(|d| d.busy())) && std::time::Instant::now() < deadline {
            if ring.submit_and_wait(Some(Duration::from_millis(10))).is_err() {
                break;
            }
            ring.drain(&mut ready);
            for c in ready.drain(..) {
                if let Some(d) = drivers.iter_mut().find(|d| d.tag() == c.tag) {
                    d.discard(ring, &c);
                }
            }
        }
    }
    for d in drivers.iter_mut() {
        if !d.end_quiesce(ring) {
            d.leak();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_route_and_keep_the_drivers_bits() {
        let t = Tag(7);
        let ud = t.user_data(LOW_MAX - 1);
        assert_eq!(Tag::of(ud), t);
        assert_eq!(ud & LOW_MAX, LOW_MAX - 1);
        // A driver's value past 56 bits cannot spill into the tag.
        assert_eq!(Tag::of(t.user_data(u64::MAX)), t);
    }

    #[test]
    fn each_driver_gets_its_own_tag_and_group() {
        let mut ring = Ring::new(&RingConfig {
            entries: 8,
            ..RingConfig::default()
        })
        .unwrap();
        let (a, ga) = ring.new_driver().unwrap();
        let (b, gb) = ring.new_driver().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, Tag::RING);
        assert_ne!(ga, gb);
        for _ in 2..254 {
            ring.new_driver().unwrap();
        }
        assert!(ring.new_driver().is_err());
    }

    /// Pushes `n` no-ops and one last marked one, waits once, and says whether the marked one came back in
    /// the first drain.
    fn last_of_many_in_first_drain(config: &RingConfig, n: u64) -> bool {
        let mut ring = Ring::new(config).unwrap();
        let (tag, _) = ring.new_driver().unwrap();
        for i in 0..=n {
            let nop = opcode::Nop::new().build().user_data(tag.user_data(i));
            // SAFETY: a no-op names no memory.
            unsafe { ring.push(&nop).unwrap() };
        }
        ring.submit_and_wait(Some(Duration::from_secs(1))).unwrap();
        let mut out = Vec::new();
        ring.drain(&mut out);
        out.iter().any(|c| c.data == n)
    }

    #[test]
    fn a_completion_queue_sized_to_the_operations_returns_the_last_one_in_the_same_pass() {
        let small = RingConfig {
            entries: 64,
            ..RingConfig::default()
        };
        assert!(
            !last_of_many_in_first_drain(&small, 1000),
            "a 128-entry queue: the last of 1001 completions waits on the overflow list"
        );
        let sized = RingConfig {
            completion_entries: 2048,
            ..small
        };
        assert!(last_of_many_in_first_drain(&sized, 1000));
    }

    #[test]
    fn a_nop_completes_with_its_drivers_tag() {
        let mut ring = Ring::new(&RingConfig::default()).unwrap();
        let (tag, _) = ring.new_driver().unwrap();
        let nop = opcode::Nop::new().build().user_data(tag.user_data(42));
        // SAFETY: a no-op names no memory.
        unsafe { ring.push(&nop).unwrap() };
        ring.submit_and_wait(Some(Duration::from_secs(1))).unwrap();
        let mut out = Vec::new();
        ring.drain(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].tag, out[0].data, out[0].result), (tag, 42, 0));
        ring.set_aside(out.drain(..));
        ring.submit_and_wait(Some(Duration::from_secs(5))).unwrap();
        ring.drain(&mut out);
        assert_eq!(
            out.len(),
            1,
            "a set-aside completion comes back, and the wait did not block"
        );
    }
}
