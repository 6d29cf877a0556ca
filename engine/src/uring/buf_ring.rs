//! A provided-buffer ring read in place: one allocation of `count x buffer_bytes`, whose buffers the kernel
//! picks for multishot receives and the application reads in place, then gives back.
//!
//! A buffer goes back to the ring as soon as its completion has been handled (see
//! [`ProvidedBuffers::recycle`]), so the ring runs dry only when more receives complete between two reaps than
//! it holds; the receive then ends with `ENOBUFS`, which the caller counts and re-arms.
//!
//! The kernel writes into the buffers behind Rust's back, so their memory is a raw allocation
//! ([`KernelMemory`]) that Rust never holds a reference into except for the span of one filled buffer,
//! between its completion and its recycling, when the kernel does not write it. (It was a `Box<[u8]>` read
//! through `&self`: Rust may assume a boxed slice it can reach only through a shared reference does not
//! change.)

use super::entry_ring::EntryRing;
use io_uring::IoUring;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;

/// Memory the kernel writes into: a zeroed raw allocation, freed on drop (leak it with `mem::forget` while
/// the kernel may still write).
#[derive(Debug)]
pub struct KernelMemory {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the allocation is owned exclusively by this value (no aliases are handed out beyond the borrows of
// `slice`); moving it to another thread moves that ownership.
unsafe impl Send for KernelMemory {}

impl KernelMemory {
    /// Allocates `len` zeroed bytes (at least one).
    pub fn zeroed(len: usize) -> io::Result<KernelMemory> {
        let layout = Layout::from_size_align(len.max(1), 64)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(KernelMemory { ptr, layout })
    }

    /// The address of byte `offset`, for the kernel.
    pub fn addr(&self, offset: usize) -> u64 {
        self.ptr.as_ptr() as u64 + offset as u64
    }

    /// Bytes `start..start + len`, or `None` past the end.
    ///
    /// # Safety
    /// The kernel must not write these bytes while the returned slice lives.
    pub unsafe fn slice(&self, start: usize, len: usize) -> Option<&[u8]> {
        let end = start.checked_add(len)?;
        if end > self.layout.size() {
            return None;
        }
        // SAFETY: in bounds of the live allocation (checked above); the caller guarantees no concurrent write.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) })
    }
}

impl Drop for KernelMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A registered provided-buffer ring and the buffer memory behind it.
///
/// Unregister it ([`ProvidedBuffers::unregister`]) before dropping it while the ring it was registered with
/// lives: the kernel may write into the buffers until then.
#[derive(Debug)]
pub struct ProvidedBuffers {
    entries: EntryRing,
    buffer_bytes: usize,
    /// Freed in `Drop` only once the ring is unregistered (leaked otherwise: the kernel may still write it).
    memory: ManuallyDrop<KernelMemory>,
    /// Buffers currently held by a completion not yet recycled.
    out: u32,
}

impl ProvidedBuffers {
    /// Allocates `count` buffers of `buffer_bytes` (count a power of two, at most 32,768) and registers them as
    /// buffer group `group` of `ring`.
    pub fn register(ring: &IoUring, group: u16, count: u16, buffer_bytes: usize) -> io::Result<Self> {
        let entries = EntryRing::register(ring, group, count, buffer_bytes)?;
        let memory = ManuallyDrop::new(KernelMemory::zeroed(usize::from(count) * buffer_bytes)?);
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
        // SAFETY: buffer `id` was filled by a completion the caller is handling and has not recycled: the kernel
        // does not write it until `recycle(id)`, which takes `&mut self` and so ends this borrow first.
        unsafe { self.memory.slice(start, len) }
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
        let addr = self.memory.addr(usize::from(id) * self.buffer_bytes);
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
            return;
        }
        // SAFETY: dropped once, here, and `self.memory` is not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.memory) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No kernel involved: runs under Miri (`scripts/miri.sh`), which checks the raw allocation's bounds,
    /// alignment, initialisation and release.
    #[test]
    fn kernel_memory_is_zeroed_bounded_and_freed() {
        let m = KernelMemory::zeroed(4096).unwrap();
        assert_eq!(m.addr(0) % 64, 0, "aligned for the kernel");
        assert_eq!(m.addr(100) - m.addr(0), 100);
        // SAFETY: no kernel writes this memory.
        let all = unsafe { m.slice(0, 4096) }.unwrap();
        assert!(all.iter().all(|&b| b == 0));
        // SAFETY: as above.
        unsafe {
            assert_eq!(m.slice(4000, 96).map(<[u8]>::len), Some(96));
            assert!(m.slice(4000, 97).is_none(), "past the end");
            assert!(m.slice(usize::MAX, 2).is_none(), "overflowing range");
        }
        let moved = std::thread::spawn(move || m.addr(0)).join().unwrap();
        assert_ne!(moved, 0);
        assert!(
            KernelMemory::zeroed(0).is_ok(),
            "an empty request still allocates one byte"
        );
    }
}
