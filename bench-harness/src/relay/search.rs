//! `--max-bitrate`: the highest stream bitrate a variant carries with enough frames on time, by trials.
//!
//! From the starting bitrate, doubling while trials pass (halving while they fail) brackets the answer
//! between a passing and a failing bitrate; then `steps` geometric bisections narrow the bracket. The answer
//! is the highest bitrate that passed (0 when even the lowest failed).

/// Searches with `trial(bps) -> passed`, from `start` within `[min, max]`, `steps` bisections; returns the
/// highest passing bitrate (0 if none) and the bitrates tried, in order.
pub fn search(
    start: u64,
    min: u64,
    max: u64,
    steps: u32,
    mut trial: impl FnMut(u64) -> bool,
) -> (u64, Vec<u64>) {
    let mut tried = Vec::new();
    let mut run = |bps: u64, tried: &mut Vec<u64>| {
        tried.push(bps);
        trial(bps)
    };
    let start = start.clamp(min, max);
    let (mut lo, mut hi);
    if run(start, &mut tried) {
        lo = start;
        hi = None;
        while lo < max {
            let next = lo.saturating_mul(2).min(max);
            if run(next, &mut tried) {
                lo = next;
            } else {
                hi = Some(next);
                break;
            }
        }
    } else {
        hi = Some(start);
        lo = 0;
        let mut b = start;
        while b > min {
            b = (b / 2).max(min);
            if run(b, &mut tried) {
                lo = b;
                break;
            }
            hi = Some(b);
        }
    }
    if let Some(mut hi) = hi {
        if lo > 0 {
            for _ in 0..steps {
                let mid = ((lo as f64) * (hi as f64)).sqrt() as u64;
                if mid <= lo || mid >= hi {
                    break;
                }
                if run(mid, &mut tried) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
        }
    }
    (lo, tried)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_brackets_then_bisects() {
        // Passes up to 20 Mbit/s.
        let (best, tried) = search(6_000_000, 100_000, 64_000_000, 3, |b| b <= 20_000_000);
        assert_eq!(&tried[..3], &[6_000_000, 12_000_000, 24_000_000]);
        assert!(best <= 20_000_000 && best > 12_000_000, "{best}");
        assert_eq!(tried.len(), 6);
        // Fails from 1.4 Mbit/s.
        let (best, tried) = search(6_000_000, 100_000, 64_000_000, 2, |b| b < 1_400_000);
        assert_eq!(&tried[..4], &[6_000_000, 3_000_000, 1_500_000, 750_000]);
        assert!((750_000..1_400_000).contains(&best), "{best}");
        // Nothing passes; everything passes.
        assert_eq!(search(6_000_000, 1_000_000, 64_000_000, 3, |_| false).0, 0);
        assert_eq!(
            search(6_000_000, 1_000_000, 20_000_000, 3, |_| true).0,
            20_000_000
        );
    }
}
