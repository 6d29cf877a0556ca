//! Anti-replay sliding window over packet numbers, a bitmap of the kind RFC 6479 describes.
//!
//! The bitmap is a ring of 64-bit blocks; moving the window forward clears whole blocks, so a jump costs at
//! most one pass over the ring and an ordinary packet costs a shift and a mask.

/// Number of 64-bit blocks in the ring (a power of two so the index is a mask).
const BLOCKS: usize = 256;
const BLOCK_BITS: u64 = 64;
const INDEX_MASK: u64 = BLOCKS as u64 - 1;

/// How far below the highest packet number seen a packet may still be accepted: packet numbers lower than
/// `highest - REPLAY_WINDOW` are rejected. One block is kept as slack, as RFC 6479 does.
pub const REPLAY_WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

/// Which packet numbers of one receive direction have been seen.
///
/// [`ReplayWindow::check`] before decrypting (cheap), [`ReplayWindow::record`] after the packet authenticated,
/// so that forged packets cannot move the window.
#[derive(Clone)]
pub struct ReplayWindow {
    bitmap: [u64; BLOCKS],
    /// `None` until the first packet is recorded.
    highest: Option<u64>,
}

impl ReplayWindow {
    /// An empty window: every packet number is new.
    pub fn new() -> Self {
        Self {
            bitmap: [0; BLOCKS],
            highest: None,
        }
    }

    /// True if `pn` has not been recorded and is not older than the window. Does not record it.
    pub fn check(&self, pn: u64) -> bool {
        let Some(highest) = self.highest else {
            return true;
        };
        if pn > highest {
            return true;
        }
        if highest - pn >= REPLAY_WINDOW {
            return false;
        }
        let (block, bit) = position(pn);
        self.bitmap[block] & bit == 0
    }

    /// Records `pn` as seen. Call only after the packet authenticated. A packet number older than the window
    /// is ignored (it cannot pass [`ReplayWindow::check`] anyway).
    pub fn record(&mut self, pn: u64) {
        match self.highest {
            None => {
                self.bitmap = [0; BLOCKS];
                self.highest = Some(pn);
            }
            Some(highest) if pn > highest => {
                let old_block = highest / BLOCK_BITS;
                let new_block = pn / BLOCK_BITS;
                let advance = new_block - old_block;
                if advance >= BLOCKS as u64 {
                    self.bitmap = [0; BLOCKS];
                } else {
                    for b in old_block + 1..=new_block {
                        self.bitmap[(b & INDEX_MASK) as usize] = 0;
                    }
                }
                self.highest = Some(pn);
            }
            Some(highest) if highest - pn >= REPLAY_WINDOW => return,
            Some(_) => {}
        }
        let (block, bit) = position(pn);
        self.bitmap[block] |= bit;
    }

    /// The highest packet number recorded, if any.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("highest", &self.highest)
            .finish_non_exhaustive()
    }
}

/// Block index (always `< BLOCKS`) and bit mask of `pn`.
#[inline]
fn position(pn: u64) -> (usize, u64) {
    (((pn / BLOCK_BITS) & INDEX_MASK) as usize, 1 << (pn % BLOCK_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn accept(w: &mut ReplayWindow, pn: u64) -> bool {
        let ok = w.check(pn);
        if ok {
            w.record(pn);
        }
        ok
    }

    #[test]
    fn window_is_large_enough() {
        const { assert!(REPLAY_WINDOW >= 8192) };
    }

    #[test]
    fn duplicates_rejected() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.highest(), None);
        assert!(accept(&mut w, 0));
        assert!(!accept(&mut w, 0));
        for pn in 1..1000 {
            assert!(accept(&mut w, pn));
        }
        for pn in 0..1000 {
            assert!(!w.check(pn), "{pn}");
        }
        assert_eq!(w.highest(), Some(999));
    }

    #[test]
    fn out_of_order_within_window_accepted_once() {
        let mut w = ReplayWindow::new();
        assert!(accept(&mut w, 100_000));
        assert!(accept(&mut w, 100_000 - 1));
        assert!(accept(&mut w, 100_000 - 5000));
        assert!(accept(&mut w, 100_000 - REPLAY_WINDOW + 1));
        assert!(!accept(&mut w, 100_000 - REPLAY_WINDOW + 1));
        assert!(
            !accept(&mut w, 100_000 - REPLAY_WINDOW),
            "exactly at the edge is too old"
        );
        assert!(accept(&mut w, 100_000 + 3));
        assert!(accept(&mut w, 100_000 + 2));
        assert_eq!(w.highest(), Some(100_003));
    }

    #[test]
    fn old_beyond_window_rejected_and_not_recorded() {
        let mut w = ReplayWindow::new();
        w.record(100_000);
        assert!(!w.check(0));
        assert!(!w.check(100_000 - REPLAY_WINDOW - 1));
        w.record(5);
        assert_eq!(w.highest(), Some(100_000));
        assert!(w.check(100_000 - 1));
    }

    #[test]
    fn big_jumps_clear_stale_bits() {
        let mut w = ReplayWindow::new();
        for pn in 0..200 {
            assert!(accept(&mut w, pn));
        }
        // Jump by exactly the ring size so that stale blocks alias the new ones.
        let base = BLOCKS as u64 * BLOCK_BITS;
        assert!(accept(&mut w, base + 199));
        for pn in base..base + 199 {
            assert!(w.check(pn), "{pn} must not look seen through a stale bit");
        }
        // Jump just under the ring size.
        let mut w = ReplayWindow::new();
        for pn in 0..64 * 3 {
            w.record(pn);
        }
        let target = (BLOCKS as u64 - 1) * BLOCK_BITS + 10;
        assert!(accept(&mut w, target));
        for pn in target - 10..target {
            assert!(w.check(pn), "{pn}");
        }
        assert!(!w.check(0));
        // Huge jump and the top of the number space.
        assert!(accept(&mut w, u64::MAX - 1));
        assert!(accept(&mut w, u64::MAX));
        assert!(!accept(&mut w, u64::MAX));
        assert!(accept(&mut w, u64::MAX - 2));
        assert!(!w.check(target));
    }

    #[test]
    fn first_packet_may_be_anything() {
        let mut w = ReplayWindow::new();
        assert!(accept(&mut w, 1 << 40));
        assert!(accept(&mut w, (1 << 40) - 3));
        assert!(!w.check(0));
    }

    proptest! {
        /// Against a model: accept iff unseen and within the window of the highest accepted so far.
        #[test]
        fn matches_model(steps in proptest::collection::vec((0u64..40_000, any::<bool>()), 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut highest: Option<u64> = None;
            for (pn, authentic) in steps {
                let expect = !seen.contains(&pn) && highest.is_none_or(|h| pn > h || h - pn < REPLAY_WINDOW);
                prop_assert_eq!(w.check(pn), expect, "pn {}", pn);
                if expect && authentic {
                    w.record(pn);
                    seen.insert(pn);
                    highest = Some(highest.map_or(pn, |h| h.max(pn)));
                }
                prop_assert_eq!(w.highest(), highest);
            }
        }
    }
}
