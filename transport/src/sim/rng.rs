//! [`SimRng`]: the simulator's small, fast, deterministic random number generator.
//!
//! xoshiro256** (Blackman and Vigna), seeded through splitmix64 so that any `u64`, zero included, gives a
//! well-mixed state. It is not cryptographic; it exists so that a scenario is a pure function of its seed and
//! a failing seed can be replayed.

/// Advances a splitmix64 state and returns its next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A deterministic pseudo-random stream (xoshiro256**). Same seed, same sequence, on every platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRng {
    s: [u64; 4],
}

impl SimRng {
    /// Creates a stream from `seed`; every seed, including 0, is valid.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        // splitmix64 is a bijection of its counter, so four consecutive outputs are never all zero.
        SimRng { s }
    }

    /// Returns the next 64 uniformly distributed bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Returns a float uniformly distributed in `[0, 1)`, with 53 bits of precision.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Returns `true` with probability `p`. `p <= 0` (or NaN) is never, `p >= 1` always; neither draws.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        if p >= 1.0 {
            true
        } else if p > 0.0 {
            self.next_f64() < p
        } else {
            false
        }
    }

    /// Returns an integer uniformly distributed in `[0, n)`; `n == 0` returns 0 without drawing.
    ///
    /// Lemire's multiply-and-reject: unbiased, and usually one draw.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            // Reject the few low products that would bias the result.
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Splits off an independent child stream (for example one per link direction), advancing this one.
    pub fn fork(&mut self) -> SimRng {
        SimRng::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SimRng::new(42);
        let mut b = SimRng::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c = SimRng::new(43);
        let mut a = SimRng::new(42);
        assert!((0..10).any(|_| a.next_u64() != c.next_u64()));
    }

    #[test]
    fn zero_seed_is_usable() {
        let mut r = SimRng::new(0);
        let xs: Vec<u64> = (0..8).map(|_| r.next_u64()).collect();
        assert!(xs.iter().all(|&x| x != 0));
        assert!(xs.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn f64_is_in_unit_interval_and_uniform() {
        let mut r = SimRng::new(7);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        let mean = sum / f64::from(n);
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn chance_edges_and_rate() {
        let mut r = SimRng::new(1);
        let before = r.clone();
        assert!(!r.chance(0.0));
        assert!(!r.chance(-1.0));
        assert!(!r.chance(f64::NAN));
        assert!(r.chance(1.0));
        assert!(r.chance(2.0));
        assert_eq!(r, before, "edge probabilities must not consume the stream");
        let hits = (0..100_000).filter(|_| r.chance(0.3)).count();
        assert!((29_000..31_000).contains(&hits), "hits {hits}");
    }

    #[test]
    fn below_is_in_range_and_uniform() {
        let mut r = SimRng::new(3);
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            let x = r.below(7);
            counts[x as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "counts {counts:?}");
        }
        for _ in 0..1000 {
            assert!(r.below(u64::MAX) < u64::MAX);
        }
    }

    #[test]
    fn fork_is_independent_and_deterministic() {
        let mut a = SimRng::new(9);
        let mut b = SimRng::new(9);
        let mut ca = a.fork();
        let mut cb = b.fork();
        let xa: Vec<u64> = (0..16).map(|_| ca.next_u64()).collect();
        let xb: Vec<u64> = (0..16).map(|_| cb.next_u64()).collect();
        assert_eq!(xa, xb);
        let parent: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        assert_ne!(xa, parent);
        let mut ca2 = a.fork();
        let second: Vec<u64> = (0..16).map(|_| ca2.next_u64()).collect();
        assert_ne!(xa, second);
    }
}
