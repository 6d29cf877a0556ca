//! A provided-buffer ring whose buffers are handed over, not copied: each buffer is its own `BytesMut`
//! allocation, and the completion that filled it gives the caller the filled bytes as a `BytesMut` (which the
//! transport may keep, e.g. as a single-packet frame), while a fresh or reclaimed allocation takes its place
//! in the ring.
//!
//! Reuse without a copy and without a pool protocol: after the filled bytes are split off, the empty rest of
//! the allocation waits in a short queue; once every handle to the filled bytes has been dropped (the
//! datagram was decrypted, reassembled or delivered), `BytesMut::try_reclaim` takes the whole allocation back
//! and it returns to the ring. A datagram kept long only means one more allocation; the queue is bounded, so
//! memory held for reuse stays bounded too.
//!
//! Copy-break, as NIC drivers do (`rx_copybreak`): a completion that filled at most [`COPYBREAK`] bytes (one
//! datagram, where a GRO run fills tens of kilobytes) is copied into an allocation of its own size and the
//! buffer goes straight back into the ring. A 64 KiB buffer is not pinned by a 1.4 kB datagram that waits
//! an RTT for its frame's repair, and a paced stream's one-datagram receives cost no 64 KiB allocation each
//! (which, once the allocator has given the memory back, is faulted in again and zeroed).

use super::entry_ring::EntryRing;
use bytes::BytesMut;
use io_uring::IoUring;
use std::collections::VecDeque;
use std::io;

/// Counters of an [`OwnedBufferRing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnedBufferStats {
    /// Completions handed to the caller (their buffer handed over, or copied: see `copied`).
    pub taken: u64,
    /// Replacements that reused a reclaimed allocation.
    pub reclaimed: u64,
    /// Replacements that needed a new allocation.
    pub allocated: u64,
    /// Completions of at most [`COPYBREAK`] bytes, copied out (their buffer went straight back).
    pub copied: u64,
}

/// Filled bytes (the kernel's header and the datagram) up to which a completion is copied out rather than
/// handed over: one datagram of a 1500-byte MTU and its header fit.
pub const COPYBREAK: usize = 2048;

/// A registered provided-buffer ring of individually owned `BytesMut` buffers.
#[derive(Debug)]
pub struct OwnedBufferRing {
    entries: EntryRing,
    buffer_bytes: usize,
    /// The allocation currently in the ring under each buffer id.
    slots: Vec<Option<BytesMut>>,
    /// Empty rests of handed-over allocations, waiting for their filled part to be dropped.
    spares: VecDeque<BytesMut>,
    stats: OwnedBufferStats,
}

/// How many spares one refill looks at before allocating.
const RECLAIM_TRIES: usize = 4;

impl OwnedBufferRing {
    /// Allocates `count` buffers of `buffer_bytes` (count a power of two, at most 32,768) and registers them
    /// as buffer group `group` of `ring`.
    pub fn register(ring: &IoUring, group: u16, count: u16, buffer_bytes: usize) -> io::Result<Self> {
        let entries = EntryRing::register(ring, group, count, buffer_bytes)?;
        let mut this = OwnedBufferRing {
            entries,
            buffer_bytes,
            slots: (0..count).map(|_| None).collect(),
            spares: VecDeque::new(),
            stats: OwnedBufferStats::default(),
        };
        for id in 0..count {
            let buf = BytesMut::with_capacity(buffer_bytes);
            this.provide(id, buf);
        }
        this.entries.publish();
        Ok(this)
    }

    /// The buffer group id to name in receive requests.
    pub fn group(&self) -> u16 {
        self.entries.group()
    }

    /// The counters.
    pub fn stats(&self) -> OwnedBufferStats {
        self.stats
    }

    /// Takes the first `len` bytes the kernel wrote into buffer `id` and puts a replacement in the ring.
    /// `None` for an id not in the ring or a length beyond the buffer.
    pub fn take(&mut self, id: u16, len: usize) -> Option<BytesMut> {
        if len > self.buffer_bytes {
            // Not ours to hand out; give the same buffer back.
            self.recycle(id);
            return None;
        }
        let mut buf = self.slots.get_mut(usize::from(id))?.take()?;
        // SAFETY: the completion for buffer `id` reports that the kernel wrote `len` bytes at its start, and
        // `len <= buffer_bytes <= capacity` (checked above; the buffer was allocated with that capacity).
        unsafe { buf.set_len(len) };
        if len <= COPYBREAK {
            let copy = BytesMut::from(&buf[..]);
            self.stats.taken += 1;
            self.stats.copied += 1;
            self.provide(id, buf);
            self.entries.publish();
            return Some(copy);
        }
        let filled = buf.split_to(len);
        self.stats.taken += 1;
        self.spares.push_back(buf);
        let replacement = self.replacement();
        self.provide(id, replacement);
        self.entries.publish();
        Some(filled)
    }

    /// Gives buffer `id` back to the ring unused (e.g. after an error completion that named it).
    pub fn recycle(&mut self, id: u16) {
        if let Some(buf) = self.slots.get_mut(usize::from(id)).and_then(Option::take) {
            self.provide(id, buf);
            self.entries.publish();
        }
    }

    fn replacement(&mut self) -> BytesMut {
        for _ in 0..self.spares.len().min(RECLAIM_TRIES) {
            let Some(mut spare) = self.spares.pop_front() else {
                break;
            };
            if spare.try_reclaim(self.buffer_bytes) {
                self.stats.reclaimed += 1;
                return spare;
            }
            self.spares.push_back(spare);
        }
        // Keep at most one ring's worth of spares: older ones are simply dropped (their memory goes when the
        // datagram that still uses it does).
        while self.spares.len() > usize::from(self.entries.count()) {
            self.spares.pop_front();
        }
        self.stats.allocated += 1;
        BytesMut::with_capacity(self.buffer_bytes)
    }

    fn provide(&mut self, id: u16, mut buf: BytesMut) {
        buf.clear();
        let addr = buf.spare_capacity_mut().as_mut_ptr() as u64;
        let len = buf.capacity().min(self.buffer_bytes) as u32;
        self.entries.push(id, addr, len);
        if let Some(s) = self.slots.get_mut(usize::from(id)) {
            *s = Some(buf);
        }
    }

    /// Unregisters the ring from `ring`; afterwards the kernel no longer touches the buffers.
    pub fn unregister(&mut self, ring: &IoUring) -> io::Result<()> {
        self.entries.unregister(ring)
    }
}

impl Drop for OwnedBufferRing {
    fn drop(&mut self) {
        if self.entries.is_registered() {
            // The kernel may still write into the buffers in the ring: leak them rather than free them.
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}
