//! The entry array of a provided-buffer ring (`IORING_REGISTER_PBUF_RING`), shared with the kernel: the
//! application writes `(address, length, buffer id)` entries and publishes them by advancing the ring's tail;
//! the kernel takes them from its head as receives complete. Both buffer rings
//! ([`super::buf_ring::ProvidedBuffers`], [`super::owned_buffers::OwnedBufferRing`]) sit on this one.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// A registered entry array. Unregister it ([`EntryRing::unregister`]) before the buffer memory it names is
/// freed: until then the kernel may write into that memory.
#[derive(Debug)]
pub struct EntryRing {
    entries: *mut BufRingEntry,
    entries_bytes: usize,
    count: u16,
    tail: u16,
    group: u16,
    registered: bool,
}

// SAFETY: the raw pointer is to the mapping this value owns, used only through `&mut self`; the value moves
// between threads only as a whole, before its ring is first used.
unsafe impl Send for EntryRing {}

impl EntryRing {
    /// Maps an array of `count` entries (a power of two, at most 32,768) and registers it as buffer group
    /// `group` of `ring`; no entry is published yet.
    pub fn register(ring: &IoUring, group: u16, count: u16, buffer_bytes: usize) -> io::Result<EntryRing> {
        if !count.is_power_of_two() || count > 32_768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("buffer ring size {count} must be a power of two of at most 32768"),
            ));
        }
        if buffer_bytes == 0 || buffer_bytes > u32::MAX as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad buffer size"));
        }
        let entries_bytes = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping with no address hint; the result is checked for MAP_FAILED.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut this = EntryRing {
            entries: map.cast(),
            entries_bytes,
            count,
            tail: 0,
            group,
            registered: false,
        };
        // SAFETY: the entry array is page aligned (mmap), `count` entries long, and lives (in `this`) until it
        // is unregistered: `Drop` and `unregister` keep that order.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(map as u64, count, group, 0)?
        };
        this.registered = true;
        Ok(this)
    }

    /// The buffer group id.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Number of entries.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Whether the kernel may still use the buffers named by the entries.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Writes an entry for buffer `id` at `addr` of `len` bytes at the tail (visible after [`Self::publish`]).
    pub fn push(&mut self, id: u16, addr: u64, len: u32) {
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot < count`, so the entry is inside the mapping; the kernel reads entries only between its
        // head and the published tail, and this one is at or past the tail until `publish`.
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(addr);
        entry.set_len(len);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries pushed so far visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: the ring's tail lives in the first entry's reserved field (the kernel's layout); the mapping
        // is live and page aligned, so the u16 there is aligned for the atomic release store the kernel expects
        // (the entries written before it become visible first).
        let tail = unsafe { &*(BufRingEntry::tail(self.entries) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Unregisters the array from `ring`; afterwards the kernel no longer touches the buffers.
    pub fn unregister(&mut self, ring: &IoUring) -> io::Result<()> {
        if self.registered {
            ring.submitter().unregister_buf_ring(self.group)?;
            self.registered = false;
        }
        Ok(())
    }
}

impl Drop for EntryRing {
    fn drop(&mut self) {
        if self.registered {
            // The owner must unregister first (and leak its buffers if it cannot); the mapping is leaked too,
            // since the kernel may still read it.
            tracing::error!(
                group = self.group,
                "buffer ring entries dropped while registered; leaking them"
            );
            return;
        }
        // SAFETY: the mapping was created in `register` with this length and is no longer registered.
        unsafe { libc::munmap(self.entries.cast(), self.entries_bytes) };
    }
}
