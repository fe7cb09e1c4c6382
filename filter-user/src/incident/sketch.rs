//! Heavy hitters in bounded memory: the Space-Saving summary (Metwally, Agrawal and
//! El Abbadi, "Efficient computation of frequent and top-k elements in data streams",
//! 2005), weighted.
//!
//! It keeps at most `capacity` counters. A key already counted adds its weight; a new
//! key, when the summary is full, takes over the smallest counter, starting from that
//! counter's value (its `error` records how much of the count may belong to the keys
//! it evicted). For a stream of total weight `N` and `capacity` k:
//!
//! - a key's estimate never undercounts: `true <= estimate <= true + error`, and
//!   `error <= N / k`;
//! - every key whose true weight is above `N / k` is in the summary.
//!
//! So an incident's top sources are exact for heavy sources and bounded for the rest,
//! whatever the number of distinct sources (a random-source flood included).

use std::{collections::HashMap, hash::Hash};

/// One monitored key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter<K> {
    pub key: K,
    /// Upper bound of the key's weight.
    pub count: u64,
    /// How much of `count` may have come from evicted keys: the true weight is at
    /// least `count - error`.
    pub error: u64,
}

/// The Space-Saving summary over keys `K`.
#[derive(Clone, Debug)]
pub struct SpaceSaving<K> {
    capacity: usize,
    /// A binary min-heap on `count`.
    heap: Vec<Counter<K>>,
    /// Where each key sits in `heap`.
    pos: HashMap<K, usize>,
    total: u64,
}

impl<K: Clone + Eq + Hash> SpaceSaving<K> {
    /// A summary of at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        SpaceSaving {
            capacity,
            heap: Vec::with_capacity(capacity),
            pos: HashMap::with_capacity(capacity),
            total: 0,
        }
    }

    /// Adds `weight` to `key`.
    pub fn add(&mut self, key: K, weight: u64) {
        if weight == 0 {
            return;
        }
        self.total = self.total.saturating_add(weight);
        if let Some(&i) = self.pos.get(&key) {
            self.heap[i].count = self.heap[i].count.saturating_add(weight);
            self.sift_down(i);
        } else if self.heap.len() < self.capacity {
            let i = self.heap.len();
            self.heap.push(Counter { key: key.clone(), count: weight, error: 0 });
            self.pos.insert(key, i);
            self.sift_up(i);
        } else {
            // The smallest counter changes hands.
            let min = &mut self.heap[0];
            self.pos.remove(&min.key);
            min.error = min.count;
            min.count = min.count.saturating_add(weight);
            min.key = key.clone();
            self.pos.insert(key, 0);
            self.sift_down(0);
        }
    }

    /// The weight added so far (`N`).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The most any key's estimate can exceed its true weight: `N / capacity` (0
    /// while the summary has never been full).
    pub fn max_error(&self) -> u64 {
        self.heap.iter().map(|c| c.error).max().unwrap_or(0)
    }

    /// The `n` largest counters, largest first (ties by smaller error).
    pub fn top(&self, n: usize) -> Vec<Counter<K>> {
        let mut all = self.heap.clone();
        all.sort_by(|a, b| b.count.cmp(&a.count).then(a.error.cmp(&b.error)));
        all.truncate(n);
        all
    }

    /// The counter of `key`, if it is monitored.
    pub fn get(&self, key: &K) -> Option<&Counter<K>> {
        self.pos.get(key).map(|&i| &self.heap[i])
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        *self.pos.get_mut(&self.heap[a].key).expect("indexed") = a;
        *self.pos.get_mut(&self.heap[b].key).expect("indexed") = b;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].count <= self.heap[i].count {
                break;
            }
            self.swap(parent, i);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.heap[l].count < self.heap[least].count {
                least = l;
            }
            if r < self.heap.len() && self.heap[r].count < self.heap[least].count {
                least = r;
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn exact_while_it_fits() {
        let mut s = SpaceSaving::new(4);
        for (k, w) in [("a", 5), ("b", 1), ("a", 2), ("c", 9)] {
            s.add(k, w);
        }
        let top = s.top(10);
        let got: Vec<(&str, u64, u64)> = top.iter().map(|c| (c.key, c.count, c.error)).collect();
        assert_eq!(got, [("c", 9, 0), ("a", 7, 0), ("b", 1, 0)]);
        assert_eq!((s.total(), s.max_error()), (17, 0));
    }

    #[test]
    fn a_heavy_source_survives_a_random_source_flood() {
        // 1,000 packets from one source among 100,000 one-packet sources.
        let mut s = SpaceSaving::new(256);
        for i in 0u32..100_000 {
            s.add(i + 1, 1);
            if i % 100 == 0 {
                s.add(0, 1);
            }
        }
        let top = s.top(1);
        assert_eq!(top[0].key, 0, "{top:?}");
        assert!(top[0].count - top[0].error <= 1_000 && top[0].count >= 1_000, "{top:?}");
        assert!(s.max_error() <= s.total() / 256);
    }

    proptest! {
        /// The guarantees, against exact counts, on streams with many more keys than
        /// counters.
        #[test]
        fn bounds_hold(stream in prop::collection::vec((0u16..300, 1u64..50), 0..3000), k in 1usize..64) {
            let mut s = SpaceSaving::new(k);
            let mut exact: HashMap<u16, u64> = HashMap::new();
            for &(key, w) in &stream {
                s.add(key, w);
                *exact.entry(key).or_default() += w;
            }
            let n = s.total();
            prop_assert_eq!(n, exact.values().sum::<u64>());
            prop_assert!(s.max_error() <= n / k as u64);
            for (key, &truth) in &exact {
                match s.get(key) {
                    Some(c) => {
                        prop_assert!(c.count >= truth && c.count - c.error <= truth);
                        prop_assert!(c.error <= n / k as u64);
                    }
                    None => prop_assert!(truth <= n / k as u64, "heavy key {} ({}) lost", key, truth),
                }
            }
        }
    }
}
