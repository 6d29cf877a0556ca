//! Nearest-rank percentiles of samples.

/// The `p`-th percentile (0..=100) of `samples` by nearest rank, sorting them in place; `None` if empty.
pub fn percentile<T: Copy + Ord>(samples: &mut [T], p: f64) -> Option<T> {
    samples.sort_unstable();
    percentile_of_sorted(samples, p)
}

/// The `p`-th percentile (0..=100) of already sorted `samples` by nearest rank; `None` if empty.
pub fn percentile_of_sorted<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50));
        assert_eq!(percentile(&mut v, 99.0), Some(99));
        assert_eq!(percentile(&mut v, 100.0), Some(100));
        assert_eq!(percentile(&mut v, 0.0), Some(1));
        assert_eq!(percentile_of_sorted(&[7u32], 99.0), Some(7));
        assert_eq!(percentile::<u32>(&mut [], 50.0), None);
    }
}
