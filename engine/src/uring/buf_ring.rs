//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): buffers the kernel picks from for multishot receives.
//!
//! The ring is a page-aligned array of `io_uring_buf` entries shared with the kernel; the application
//! publishes free buffers by writing entries and advancing the ring's tail, and the kernel consumes them as
//! datagrams arrive, naming the buffer it used (its id) in each completion. A buffer goes back to the ring as
//! soon as its datagram has been copied out (see [`ProvidedBuffers::recycle`]), so the ring runs dry only
//! when more datagrams arrive between two reaps than it holds; the receive then ends with `ENOBUFS`, which
//! the caller counts and re-arms.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// A registered provided-buffer ring and the buffer memory behind it.
///
/// Unregister it ([`ProvidedBuffers::unregister`]) before dropping it while the ring it was registered with
/// lives: the kernel may write into the buffers until then.
#[derive(Debug)]
pub struct ProvidedBuffers {
    /// The mmap'd entry array (page aligned, as the kernel requires).
    entries: *mut BufRingEntry,
    entries_bytes: usize,
    count: u16,
    /// Where the next free buffer is written (the application's tail, published with release ordering).
    tail: u16,
    buffer_bytes: usize,
    memory: Box<[u8]>,
    group: u16,
    registered: bool,
    /// Buffers currently held by the kernel or a completion not yet recycled.
    out: u32,
}

// SAFETY: the raw pointer is to memory this value owns (its mmap), used only through `&mut self`; the
// value can move to another thread as a whole (a core's thread takes it at start).
unsafe impl Send for ProvidedBuffers {}

impl ProvidedBuffers {
    /// Allocates `count` buffers of `buffer_bytes` (count a power of two, at most 32,768) and registers them as
    /// buffer group `group` of `ring`.
    pub fn register(ring: &IoUring, group: u16, count: u16, buffer_bytes: usize) -> io::Result<Self> {
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
        let memory = vec![0u8; usize::from(count) * buffer_bytes].into_boxed_slice();
        let mut this = ProvidedBuffers {
            entries: map.cast(),
            entries_bytes,
            count,
            tail: 0,
            buffer_bytes,
            memory,
            group,
            registered: false,
            out: 0,
        };
        // SAFETY: the entry array is page aligned (mmap), `count` entries long, and lives (in `this`) until
        // it is unregistered: `Drop` and `unregister` keep that order.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(map as u64, count, group, 0)?
        };
        this.registered = true;
        for id in 0..count {
            this.push(id);
        }
        this.publish();
        Ok(this)
    }

    /// The buffer group id to name in receive requests.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Size of each buffer, in bytes.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// Number of buffers in the ring.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Buffers not in the ring (being filled by the kernel's last completions, not yet recycled).
    pub fn outstanding(&self) -> u32 {
        self.out
    }

    /// The first `len` bytes of buffer `id`, as the kernel filled them; `None` for an id or length out of range.
    pub fn get(&self, id: u16, len: usize) -> Option<&[u8]> {
        if id >= self.count || len > self.buffer_bytes {
            return None;
        }
        let start = usize::from(id) * self.buffer_bytes;
        self.memory.get(start..start + len)
    }

    /// Marks buffer `id` as taken by a completion (see [`Self::recycle`]).
    pub fn taken(&mut self, id: u16) {
        if id < self.count {
            self.out = self.out.saturating_add(1);
        }
    }

    /// Gives buffer `id` back to the kernel (after its completion has been handled). Ids out of range are
    /// ignored.
    pub fn recycle(&mut self, id: u16) {
        if id < self.count {
            self.push(id);
            self.publish();
            self.out = self.out.saturating_sub(1);
        }
    }

    fn push(&mut self, id: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        let addr = self.memory.as_ptr() as u64 + (usize::from(id) * self.buffer_bytes) as u64;
        // SAFETY: `slot < count`, so the entry is inside the mapping; the kernel reads entries only between
        // its head and the published tail, and this one is at or past the tail until `publish`.
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(addr);
        entry.set_len(self.buffer_bytes as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&mut self) {
        // SAFETY: the ring's tail lives in the first entry's reserved field (the kernel's layout); the mapping
        // is live and page aligned, so the u16 there is aligned for an atomic store, which is how the kernel
        // expects it to be written (release: the entries written before are visible first).
        let tail = unsafe { &*(BufRingEntry::tail(self.entries) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Unregisters the ring from `ring`; afterwards the kernel no longer touches the buffers.
    pub fn unregister(&mut self, ring: &IoUring) -> io::Result<()> {
        if self.registered {
            ring.submitter().unregister_buf_ring(self.group)?;
            self.registered = false;
        }
        Ok(())
    }
}

impl Drop for ProvidedBuffers {
    fn drop(&mut self) {
        if self.registered {
            // Still registered: the ring was not told. Leaking the memory is the only safe choice, since the
            // kernel may still write into it (the owner of the ring must unregister first; see `UringUdp`).
            tracing::error!(
                group = self.group,
                "provided buffer ring dropped while registered; leaking it"
            );
            let memory = std::mem::take(&mut self.memory);
            std::mem::forget(memory);
            return;
        }
        // SAFETY: the mapping was created in `register` with this length and is no longer registered, so
        // neither the kernel nor this value uses it after this point.
        unsafe { libc::munmap(self.entries.cast(), self.entries_bytes) };
    }
}
