//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, §3.4), with weights.
//!
//! Each backend gets a permutation of the table's slots from two hashes of its identity
//! (`offset`, `skip`; the table size is prime so every `skip` visits every slot). Backends then
//! take turns claiming their next unclaimed preferred slot until the table is full. Weights: in
//! each round a backend earns its weight in credit and claims one slot per `max_weight` of
//! credit (Katran's MaglevV2 scheme), so shares follow weights while the permutations still
//! limit how many slots move when a backend comes or goes.
//!
//! The table is built here, in userspace; the XDP program only indexes it.

use xdp_lb_common::hash::murmur3_32;

/// One input of [`build`]: a stable identity (hashed into the backend's permutation, so it must
/// not depend on ordering or ids) and a weight. Weight 0 gets no slots.
#[derive(Debug, Clone, Copy)]
pub struct MaglevBackend<'a> {
    pub identity: &'a [u8],
    pub weight: u32,
}

const OFFSET_SEED: u32 = 0x4d61_676c; // "Magl"
const SKIP_SEED: u32 = 0x6576_2121; // "ev!!"

/// Builds a table of `size` entries (a prime). Each entry is an index into `backends`.
/// Returns `None` when no backend has a positive weight.
pub fn build(backends: &[MaglevBackend<'_>], size: u32) -> Option<Vec<u32>> {
    debug_assert!(size >= 2);
    let live: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].weight > 0)
        .collect();
    if live.is_empty() {
        return None;
    }
    let m = size as u64;
    let max_weight = live.iter().map(|&i| backends[i].weight).max().unwrap_or(1) as u64;
    let (offsets, skips): (Vec<u64>, Vec<u64>) = live
        .iter()
        .map(|&i| {
            let id = backends[i].identity;
            let offset = murmur3_32(id, OFFSET_SEED) as u64 % m;
            let skip = murmur3_32(id, SKIP_SEED) as u64 % (m - 1) + 1;
            (offset, skip)
        })
        .unzip();

    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; size as usize];
    let mut next = vec![0u64; live.len()];
    let mut credit = vec![0u64; live.len()];
    let mut filled = 0u64;
    loop {
        for (k, &i) in live.iter().enumerate() {
            credit[k] += backends[i].weight as u64;
            if credit[k] < max_weight {
                continue;
            }
            credit[k] -= max_weight;
            // Walk this backend's permutation to its next unclaimed slot. It always finds one
            // while the table is not full, because the permutation visits every slot.
            loop {
                let slot = ((offsets[k] + next[k] * skips[k]) % m) as usize;
                next[k] += 1;
                if table[slot] == EMPTY {
                    table[slot] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                return Some(table);
            }
        }
    }
}

/// How many entries of `table` each of `n` backends holds.
pub fn shares(table: &[u32], n: usize) -> Vec<usize> {
    let mut counts = vec![0usize; n];
    for &b in table {
        counts[b as usize] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SIZE: u32 = 65_537;

    fn identities(n: usize) -> Vec<[u8; 4]> {
        (0..n)
            .map(|i| Ipv4Addr::new(198, 18, (i / 250) as u8 + 1, (i % 250) as u8 + 1).octets())
            .collect()
    }

    /// Deterministic pseudo-random weights in 1..=10.
    fn weights(n: usize, seed: u32) -> Vec<u32> {
        (0..n)
            .map(|i| murmur3_32(&(i as u32).to_le_bytes(), seed) % 10 + 1)
            .collect()
    }

    fn inputs<'a>(ids: &'a [[u8; 4]], w: &[u32]) -> Vec<MaglevBackend<'a>> {
        ids.iter()
            .zip(w)
            .map(|(id, &weight)| MaglevBackend {
                identity: id,
                weight,
            })
            .collect()
    }

    #[test]
    fn shares_follow_weights_within_one_percent() {
        for n in 3..=100usize {
            for (label, w) in [("equal", vec![1; n]), ("weighted", weights(n, n as u32))] {
                let ids = identities(n);
                let table = build(&inputs(&ids, &w), SIZE).unwrap();
                let total_w: u32 = w.iter().sum();
                for (i, &count) in shares(&table, n).iter().enumerate() {
                    let got = count as f64 / SIZE as f64;
                    let want = w[i] as f64 / total_w as f64;
                    assert!(
                        (got - want).abs() <= 0.01,
                        "{label} n={n} backend {i}: share {got:.4}, weight share {want:.4}"
                    );
                }
            }
        }
    }

    #[test]
    fn removing_one_backend_moves_few_other_entries() {
        for n in 3..=100usize {
            let ids = identities(n);
            let w = vec![1; n];
            let before = build(&inputs(&ids, &w), SIZE).unwrap();
            let removed = n / 2;
            let mut ids_after = ids.clone();
            ids_after.remove(removed);
            let after = build(&inputs(&ids_after, &vec![1; n - 1]), SIZE).unwrap();
            // Map "after" indexes back to the original backend indexes.
            let original = |i: u32| if (i as usize) < removed { i } else { i + 1 };
            let (mut others, mut moved) = (0usize, 0usize);
            for (b, a) in before.iter().zip(&after) {
                if *b as usize == removed {
                    continue;
                }
                others += 1;
                if original(*a) != *b {
                    moved += 1;
                }
            }
            let fraction = moved as f64 / others as f64;
            let bound = 1.0 / n as f64 + 0.02;
            assert!(
                fraction <= bound,
                "n={n}: {fraction:.4} of other entries moved (bound {bound:.4})"
            );
        }
    }

    #[test]
    fn zero_weight_gets_nothing_and_all_zero_is_none() {
        let ids = identities(3);
        let table = build(&inputs(&ids, &[1, 0, 1]), 251).unwrap();
        assert_eq!(shares(&table, 3)[1], 0);
        assert!(build(&inputs(&ids, &[0, 0, 0]), 251).is_none());
        assert!(build(&[], 251).is_none());
    }

    #[test]
    fn table_is_deterministic_and_independent_of_input_order() {
        let ids = identities(5);
        let w = weights(5, 7);
        let a = build(&inputs(&ids, &w), 4093).unwrap();
        let b = build(&inputs(&ids, &w), 4093).unwrap();
        assert_eq!(a, b);
        // Reversing the input order maps each slot to the same identity.
        let rev_ids: Vec<_> = ids.iter().rev().copied().collect();
        let rev_w: Vec<_> = w.iter().rev().copied().collect();
        let c = build(&inputs(&rev_ids, &rev_w), 4093).unwrap();
        let same = a
            .iter()
            .zip(&c)
            .filter(|(x, y)| **x as usize == 4 - **y as usize)
            .count();
        // Ties in a round are broken by order, so a few slots may differ; nearly all match.
        assert!(same as f64 / 4093.0 > 0.97, "{same}");
    }
}
