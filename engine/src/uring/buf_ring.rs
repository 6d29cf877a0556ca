//! A provided-buffer ring read in place: one allocation of `count x buffer_bytes`, whose buffers the kernel
//! picks for multishot receives and the application reads in place, then gives back.
//!
//! A buffer goes back to the ring as soon as its completion has been handled (see
//! [`ProvidedBuffers::recycle`]), so the ring runs dry only when more receives complete between two reaps than
//! it holds; the receive then ends with `ENOBUFS`, which the caller counts and re-arms.

use super::entry_ring::EntryRing;
use io_uring::IoUring;
use std::io;

/// A registered provided-buffer ring and the buffer memory behind it.
///
/// Unregister it ([`ProvidedBuffers::unregister`]) before dropping it while the ring it was registered with
/// lives: the kernel may write into the buffers until then.
#[derive(Debug)]
pub struct ProvidedBuffers {
    entries: EntryRing,
    buffer_bytes: usize,
    memory: Box<[u8]>,
    /// Buffers currently held by a completion not yet recycled.
    out: u32,
}

impl ProvidedBuffers {
    /// Allocates `count` buffers of `buffer_bytes` (count a power of two, at most 32,768) and registers them as
    /// buffer group `group` of `ring`.
    pub fn register(ring: &IoUring, group: u16, count: u16, buffer_bytes: usize) -> io::Result<Self> {
        let entries = EntryRing::register(ring, group, count, buffer_bytes)?;
        let memory = vec![0u8; usize::from(count) * buffer_bytes].into_boxed_slice();
        let mut this = ProvidedBuffers {
            entries,
            buffer_bytes,
            memory,
            out: 0,
        };
        for id in 0..count {
            this.push(id);
        }
        this.entries.publish();
        Ok(this)
    }

    /// The buffer group id to name in receive requests.
    pub fn group(&self) -> u16 {
        self.entries.group()
    }

    /// Size of each buffer, in bytes.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// Number of buffers in the ring.
    pub fn count(&self) -> u16 {
        self.entries.count()
    }

    /// Buffers not in the ring (being filled by the kernel's last completions, not yet recycled).
    pub fn outstanding(&self) -> u32 {
        self.out
    }

    /// The first `len` bytes of buffer `id`, as the kernel filled them; `None` for an id or length out of range.
    pub fn get(&self, id: u16, len: usize) -> Option<&[u8]> {
        if id >= self.count() || len > self.buffer_bytes {
            return None;
        }
        let start = usize::from(id) * self.buffer_bytes;
        self.memory.get(start..start + len)
    }

    /// Marks buffer `id` as taken by a completion (see [`Self::recycle`]).
    pub fn taken(&mut self, id: u16) {
        if id < self.count() {
            self.out = self.out.saturating_add(1);
        }
    }

    /// Gives buffer `id` back to the kernel (after its completion has been handled). Ids out of range are
    /// ignored.
    pub fn recycle(&mut self, id: u16) {
        if id < self.count() {
            self.push(id);
            self.entries.publish();
            self.out = self.out.saturating_sub(1);
        }
    }

    fn push(&mut self, id: u16) {
        let addr = self.memory.as_ptr() as u64 + (usize::from(id) * self.buffer_bytes) as u64;
        self.entries.push(id, addr, self.buffer_bytes as u32);
    }

    /// Unregisters the ring from `ring`; afterwards the kernel no longer touches the buffers.
    pub fn unregister(&mut self, ring: &IoUring) -> io::Result<()> {
        self.entries.unregister(ring)
    }
}

impl Drop for ProvidedBuffers {
    fn drop(&mut self) {
        if self.entries.is_registered() {
            // The kernel may still write into the buffers (the ring's owner must unregister first): leak them.
            std::mem::forget(std::mem::take(&mut self.memory));
        }
    }
}
