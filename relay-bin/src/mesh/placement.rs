//! A stream's home PoP: weighted rendezvous (highest random weight, HRW) hashing over an app's origin set.
//!
//! Every node computes the same answer from the stream key and the origin list alone, with no coordination:
//! each origin scores the key, and the highest score wins. When an origin leaves, only the streams it was home
//! to move (each to its next-highest origin, so the load it carried spreads over all the others); every other
//! stream keeps its home. A plain `hash(key) % n` moves almost every stream when `n` changes. The failover
//! order of a stream is its origins sorted by score ([`rank`]): when its home dies, the next live one takes
//! over ([`home_among`]), and every node agrees which.
//!
//! Weights: an origin of weight `w` scores `w / -ln(u)`, where `u` in (0, 1) is uniform in the hash of (key,
//! origin). The maximum over origins then falls on origin `i` with probability `w_i / sum(w)` (the
//! exponential-race form of weighted rendezvous hashing, as Ceph's straw2 buckets), so a node with twice the
//! capacity is home to twice the streams, and changing one weight moves streams only to or from that node.
//!
//! The hash is XXH3-64 (`xxhash-rust`), a specified and frozen algorithm: nodes of different versions and
//! architectures agree. A (key, origin) pair hashes the key with the origin id's own hash as the seed.

use std::cmp::Ordering;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// A node that may be home to an app's streams, with its share of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// The node's id in the mesh.
    pub id: String,
    /// Its relative capacity (> 0; a non-positive or non-finite weight never wins).
    pub weight: f64,
}

impl Origin {
    /// An origin of weight 1.
    pub fn new(id: impl Into<String>) -> Origin {
        Origin {
            id: id.into(),
            weight: 1.0,
        }
    }

    /// An origin of weight `weight`.
    pub fn weighted(id: impl Into<String>, weight: f64) -> Origin {
        Origin {
            id: id.into(),
            weight,
        }
    }
}

/// The 64-bit hash of (stream key, origin id): the key hashed with the origin id's hash as the seed (no
/// allocation, no ambiguity between where the key ends and the id begins).
fn pair_hash(key: &str, origin: &str) -> u64 {
    xxh3_64_with_seed(key.as_bytes(), xxh3_64(origin.as_bytes()))
}

/// `origin`'s score for `key` (higher wins). Origins with a weight that is not positive and finite score
/// negative infinity.
pub fn score(key: &str, origin: &Origin) -> f64 {
    if !(origin.weight.is_finite() && origin.weight > 0.0) {
        return f64::NEG_INFINITY;
    }
    // The top 53 bits as a uniform in (0, 1): never 0 (the half step) and never 1.
    let u = ((pair_hash(key, &origin.id) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    origin.weight / -u.ln()
}

/// Orders two (score, origin) pairs: higher score first, ties (equal ids aside, practically never) by id.
fn by_score(a: &(f64, &Origin), b: &(f64, &Origin)) -> Ordering {
    b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id))
}

/// `key`'s origins in failover order: its home first, then the one that takes over if the home is gone, and so
/// on. Origins that can never win (bad weight) come last.
pub fn rank<'a>(key: &str, origins: &'a [Origin]) -> Vec<&'a Origin> {
    let mut scored: Vec<(f64, &Origin)> = origins.iter().map(|o| (score(key, o), o)).collect();
    scored.sort_by(by_score);
    scored.into_iter().map(|(_, o)| o).collect()
}

/// `key`'s home among `origins`; `None` when there is none with a usable weight.
pub fn home<'a>(key: &str, origins: &'a [Origin]) -> Option<&'a Origin> {
    home_among(key, origins, |_| true)
}

/// `key`'s home among the origins `alive` accepts: the first live origin in [`rank`] order, found in one pass.
pub fn home_among<'a>(
    key: &str,
    origins: &'a [Origin],
    alive: impl Fn(&Origin) -> bool,
) -> Option<&'a Origin> {
    origins
        .iter()
        .filter(|o| alive(o))
        .map(|o| (score(key, o), o))
        .filter(|(s, _)| s.is_finite())
        .min_by(by_score)
        .map(|(_, o)| o)
}

/// The baseline placement benchmarks compare with: `hash(key) % n`.
pub fn modulo_home<'a>(key: &str, origins: &'a [Origin]) -> Option<&'a Origin> {
    if origins.is_empty() {
        return None;
    }
    let i = (xxh3_64(key.as_bytes()) % origins.len() as u64) as usize;
    origins.get(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Origin> {
        (0..n).map(|i| Origin::new(format!("pop-{i:02}"))).collect()
    }

    fn keys(n: usize) -> impl Iterator<Item = String> {
        (0..n).map(|i| format!("live/stream-{i}"))
    }

    fn loads(origins: &[Origin], n_keys: usize, f: impl Fn(&str) -> usize) -> Vec<usize> {
        let mut load = vec![0; origins.len()];
        for k in keys(n_keys) {
            load[f(&k)] += 1;
        }
        load
    }

    fn index_of(origins: &[Origin], o: &Origin) -> usize {
        origins.iter().position(|x| x.id == o.id).unwrap()
    }

    /// Cross-node and cross-version agreement rests on the hash: these answers must never change.
    #[test]
    fn the_same_key_has_the_same_home_on_every_node_and_version() {
        let o = nodes(10);
        let homes: Vec<&str> = ["live/a", "live/b", "shop/sale-2026", ""]
            .iter()
            .map(|k| home(k, &o).unwrap().id.as_str())
            .collect();
        assert_eq!(
            homes, GOLDEN_HOMES,
            "the placement hash changed: nodes of different versions would disagree"
        );
        let reordered: Vec<Origin> = o.iter().rev().cloned().collect();
        assert_eq!(
            home("live/a", &reordered).unwrap().id,
            home("live/a", &o).unwrap().id,
            "order-independent"
        );
    }

    /// Recorded from this implementation (XXH3-64 of the key, seeded with XXH3-64 of the id).
    const GOLDEN_HOMES: [&str; 4] = ["pop-05", "pop-05", "pop-02", "pop-09"];

    #[test]
    fn the_hash_is_the_specified_xxh3() {
        // XXH3_64bits of the empty input with seed 0, from the xxHash reference (`xxhsum -H3`).
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
    }

    #[test]
    fn when_a_node_leaves_only_its_streams_move_and_they_spread() {
        let all = nodes(10);
        let without: Vec<Origin> = all.iter().filter(|o| o.id != "pop-03").cloned().collect();
        let mut moved = 0;
        let mut went_to = std::collections::HashSet::new();
        for k in keys(20_000) {
            let before = home(&k, &all).unwrap();
            let after = home(&k, &without).unwrap();
            if before.id != after.id {
                moved += 1;
                assert_eq!(before.id, "pop-03", "{k} moved from a node that stayed");
                assert_eq!(after.id, rank(&k, &all)[1].id, "{k} went to its second choice");
                went_to.insert(after.id.clone());
            }
            // The same answer by skipping the dead node.
            assert_eq!(home_among(&k, &all, |o| o.id != "pop-03").unwrap().id, after.id);
        }
        assert!((1500..2500).contains(&moved), "about a tenth moved: {moved}");
        assert_eq!(went_to.len(), 9, "its streams spread over every other node");
    }

    #[test]
    fn load_is_balanced_and_follows_weights() {
        let o = nodes(10);
        let load = loads(&o, 100_000, |k| index_of(&o, home(k, &o).unwrap()));
        let (max, min) = (*load.iter().max().unwrap(), *load.iter().min().unwrap());
        // 10,000 expected each; a binomial's sd is ~95.
        assert!(max < 10_500 && min > 9_500, "{load:?}");

        let mut w = nodes(4);
        w[0].weight = 2.0;
        w[3].weight = 0.0; // never home
        let load = loads(&w, 100_000, |k| index_of(&w, home(k, &w).unwrap()));
        assert_eq!(load[3], 0, "a zero weight never wins");
        let share = load[0] as f64 / 100_000.0;
        assert!((share - 0.5).abs() < 0.01, "weight 2 of 4 takes half: {share}");
    }

    #[test]
    fn rank_is_a_permutation_with_the_home_first() {
        let o = nodes(7);
        for k in keys(500) {
            let r = rank(&k, &o);
            assert_eq!(r.len(), 7);
            assert_eq!(r[0].id, home(&k, &o).unwrap().id);
            let mut ids: Vec<&str> = r.iter().map(|x| x.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 7);
        }
        assert!(home("x", &[]).is_none());
        assert!(home("x", &[Origin::weighted("a", f64::NAN)]).is_none());
        assert!(modulo_home("x", &[]).is_none());
    }

    #[test]
    fn a_modulo_hash_moves_almost_everything() {
        let all = nodes(10);
        let without: Vec<Origin> = all.iter().filter(|o| o.id != "pop-03").cloned().collect();
        let moved = keys(10_000)
            .filter(|k| modulo_home(k, &all).unwrap().id != modulo_home(k, &without).unwrap().id)
            .count();
        assert!(moved > 8_000, "{moved}");
    }
}
