//! The compiled IPv4 list: the permanent IPv4 entries of a list, compiled by the
//! controller into arrays the data path searches in two or three cache lines however
//! long the list is, and written into the kernel whole.
//!
//! - The directory has one word per /16 (65,536 buckets). A bucket covered by a
//!   listed prefix of /16 or shorter is marked [`DIR_FULL`]: a source there is a hit
//!   after one read. Otherwise the word is the index of the bucket's first range in the
//!   range array, and the next bucket's word ends it.
//! - The range array holds, per bucket and sorted, the listed prefixes longer than /16
//!   as `first << 16 | last` (the low 16 bits of their first and last address). The
//!   ones searched never overlap: a prefix inside another listed prefix is not needed
//!   for matching, and is stored after them, with a directory of its own that only
//!   the controller reads.
//!   A bucket holds at most 32,768 searched ranges, so a search takes at most 16 steps.
//! - Prefixes of /16 and shorter (at most 131,071 exist) are kept as bits of a bitmap
//!   that only the controller reads; the data path sees them as full buckets.
//!
//! So the arrays give back the list exactly as it was written. Each list has two
//! regions in each array (one per generation, like the tries), so a new compilation
//! is written while packets search the old one, and one write of the list's active
//! word switches them.

/// Buckets of the directory: one per /16.
pub const DIR_BUCKETS: u32 = 1 << 16;
/// Directory word of the end of the last bucket's searched ranges.
pub const DIR_END: u32 = DIR_BUCKETS;
/// First word of the directory of nested ranges (same shape, ends at
/// `DIR_NESTED + DIR_BUCKETS`).
pub const DIR_NESTED: u32 = DIR_BUCKETS + 1;
/// Directory word holding the number of searched ranges.
pub const DIR_TOP_COUNT: u32 = 2 * DIR_BUCKETS + 2;
/// Directory word holding the number of nested ranges.
pub const DIR_NESTED_COUNT: u32 = 2 * DIR_BUCKETS + 3;
/// Words of one directory region.
pub const DIR_REGION: u32 = 2 * DIR_BUCKETS + 8;
/// A bucket covered whole by a listed prefix.
pub const DIR_FULL: u32 = 1 << 31;
/// Words of one region of the bitmap of prefixes of /16 and shorter: bit
/// `(1 << len) + (addr >> (32 - len))` for each.
pub const SHORT_WORDS: u32 = (2 << 16) / 64;
/// Steps of the binary search: enough for 65,536 ranges in a bucket.
pub const SEARCH_STEPS: usize = 17;

/// Regions per array: two lists, two generations each.
pub const REGIONS: u32 = 4;

/// The region of a list's generation.
#[inline(always)]
pub const fn region(kind: u32, generation: u32) -> u32 {
    (kind & 1) * 2 + (generation & 1)
}

/// Where a list generation's region starts in the directory.
#[inline(always)]
pub const fn dir_base(kind: u32, generation: u32) -> u32 {
    region(kind, generation) * DIR_REGION
}

/// Read access to the two arrays, over kernel maps in the data path and over slices
/// on the host. Indices are absolute (regions included).
pub trait V4Table {
    fn dir(&self, i: u32) -> Option<u32>;
    fn range(&self, i: u32) -> Option<u32>;
}

/// Whether `addr` (host order) lies in a bucket covered whole (by a listed prefix of
/// /16 or shorter): the first step of [`contains_v4`], alone.
#[inline(always)]
pub fn in_full_bucket<T: V4Table>(t: &T, dir_base: u32, addr: u32) -> bool {
    t.dir(dir_base + (addr >> 16)).is_some_and(|d| d & DIR_FULL != 0)
}

/// Whether `addr` (host order) is covered by the compiled list in the directory region
/// starting at `dir_base`.
#[inline(always)]
pub fn contains_v4<T: V4Table>(t: &T, dir_base: u32, addr: u32) -> bool {
    let bucket = addr >> 16;
    let low = addr & 0xffff;
    let Some(d) = t.dir(dir_base + bucket) else { return false };
    if d & DIR_FULL != 0 {
        return true;
    }
    let Some(e) = t.dir(dir_base + bucket + 1) else { return false };
    let end = e & !DIR_FULL;
    if end <= d {
        return false;
    }
    let mut start = d;
    let mut n = end - d;
    // The last range starting at or before `low`: halve [start, start + n) keeping
    // `range(start) <= low` whenever some range qualifies.
    for _ in 0..SEARCH_STEPS {
        if n <= 1 {
            break;
        }
        let half = n / 2;
        let Some(r) = t.range(start + half) else { return false };
        if r >> 16 <= low {
            start += half;
        }
        n -= half;
    }
    let Some(r) = t.range(start) else { return false };
    r >> 16 <= low && low <= r & 0xffff
}

#[cfg(feature = "user")]
pub use user::*;

#[cfg(feature = "user")]
mod user {
    use super::*;

    /// An IPv4 prefix: network address (host order) and length.
    pub type PrefixV4 = (u32, u8);

    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    pub enum CompileError {
        #[error(
            "{have} IPv4 prefixes longer than /16 exceed the list's capacity of {capacity}; nothing was changed"
        )]
        Ranges { have: usize, capacity: u32 },
    }

    /// One region's contents, ready to be written.
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    pub struct CompiledV4 {
        /// [`DIR_REGION`] words; range indices are relative to the region's start in
        /// the range array (the writer adds the base).
        pub dir: Vec<u32>,
        /// Searched ranges, then nested ones.
        pub ranges: Vec<u32>,
        /// [`SHORT_WORDS`] words.
        pub short: Vec<u64>,
    }

    /// The last address of a prefix.
    fn last(p: PrefixV4) -> u32 {
        let (a, l) = p;
        a | u32::MAX.checked_shr(u32::from(l)).unwrap_or(0)
    }

    fn short_bit(p: PrefixV4) -> usize {
        let (a, l) = p;
        (1usize << l) + a.checked_shr(32 - u32::from(l)).unwrap_or(0) as usize
    }

    /// Bucket start words for ranges grouped by bucket (`bucket_of` ascending).
    fn starts(dir: &mut [u32], bucket_of: &[u16], offset: u32) {
        let mut i = 0usize;
        for (b, w) in dir.iter_mut().enumerate().take(DIR_BUCKETS as usize) {
            *w = offset + i as u32;
            while i < bucket_of.len() && bucket_of[i] as usize == b {
                i += 1;
            }
        }
        dir[DIR_BUCKETS as usize] = offset + i as u32;
    }

    /// Compiles a set of IPv4 prefixes (networks with no host bits set; duplicates
    /// allowed) for a region of `capacity` ranges.
    pub fn compile_v4(prefixes: &[PrefixV4], capacity: u32) -> Result<CompiledV4, CompileError> {
        let mut sorted = prefixes.to_vec();
        // A covering prefix sorts before the prefixes inside it.
        sorted.sort_unstable();
        sorted.dedup();
        let mut dir = vec![0u32; DIR_REGION as usize];
        let mut short = vec![0u64; SHORT_WORDS as usize];
        let mut top: Vec<u32> = Vec::with_capacity(sorted.len());
        let mut top_bucket: Vec<u16> = Vec::with_capacity(sorted.len());
        let mut nested: Vec<u32> = Vec::new();
        let mut nested_bucket: Vec<u16> = Vec::new();
        // Last address covered by the latest prefix kept for matching.
        let mut covered: Option<u32> = None;
        for &p in &sorted {
            let (a, l) = p;
            let inside = covered.is_some_and(|c| a <= c);
            if !inside {
                covered = Some(last(p));
            }
            if l <= 16 {
                let bit = short_bit(p);
                short[bit / 64] |= 1 << (bit % 64);
                if !inside {
                    for b in (a >> 16)..=(last(p) >> 16) {
                        dir[b as usize] = DIR_FULL;
                    }
                }
                continue;
            }
            let r = ((a & 0xffff) << 16) | (last(p) & 0xffff);
            if inside {
                nested.push(r);
                nested_bucket.push((a >> 16) as u16);
            } else {
                top.push(r);
                top_bucket.push((a >> 16) as u16);
            }
        }
        if top.len() + nested.len() > capacity as usize {
            return Err(CompileError::Ranges { have: top.len() + nested.len(), capacity });
        }
        let full: Vec<bool> = dir[..DIR_BUCKETS as usize].iter().map(|&w| w & DIR_FULL != 0).collect();
        starts(&mut dir[..=DIR_END as usize], &top_bucket, 0);
        for (w, f) in dir.iter_mut().zip(full) {
            if f {
                *w |= DIR_FULL;
            }
        }
        let n_top = top.len() as u32;
        starts(&mut dir[DIR_NESTED as usize..=(DIR_NESTED + DIR_BUCKETS) as usize], &nested_bucket, n_top);
        dir[DIR_TOP_COUNT as usize] = n_top;
        dir[DIR_NESTED_COUNT as usize] = nested.len() as u32;
        top.extend_from_slice(&nested);
        Ok(CompiledV4 { dir, ranges: top, short })
    }

    /// The prefixes a region holds (relative directory words), in any order.
    pub fn decompile_v4(dir: &[u32], ranges: &[u32], short: &[u64]) -> Vec<PrefixV4> {
        let mut out = Vec::with_capacity(ranges.len());
        for first in [0, DIR_NESTED as usize] {
            for b in 0..DIR_BUCKETS as usize {
                let start = (dir[first + b] & !DIR_FULL) as usize;
                let end = (dir[first + b + 1] & !DIR_FULL) as usize;
                for &r in ranges.get(start..end).unwrap_or(&[]) {
                    let (lo, hi) = (r >> 16, r & 0xffff);
                    let len = 32 - (hi.wrapping_sub(lo).wrapping_add(1)).trailing_zeros();
                    out.push((((b as u32) << 16) | lo, len as u8));
                }
            }
        }
        for (i, &w) in short.iter().enumerate() {
            let mut w = w;
            while w != 0 {
                let bit = i * 64 + w.trailing_zeros() as usize;
                w &= w - 1;
                // bit = 2^len + index
                let len = usize::BITS - 1 - bit.leading_zeros();
                let index = (bit - (1 << len)) as u32;
                let addr = if len == 0 { 0 } else { index << (32 - len) };
                out.push((addr, len as u8));
            }
        }
        out
    }

    impl V4Table for CompiledV4 {
        fn dir(&self, i: u32) -> Option<u32> {
            self.dir.get(i as usize).copied()
        }
        fn range(&self, i: u32) -> Option<u32> {
            self.ranges.get(i as usize).copied()
        }
    }
}

#[cfg(all(test, feature = "user"))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(a: u32, l: u8) -> PrefixV4 {
        let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
        (a & mask, l)
    }

    fn covered(list: &[PrefixV4], x: u32) -> bool {
        list.iter().any(|&(a, l)| {
            let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
            x & mask == a
        })
    }

    #[test]
    fn small_cases() {
        let list =
            vec![net(0xC000_0200, 24), net(0xC000_0207, 32), net(0xC612_0000, 15), net(0x0A00_0000, 8)];
        let c = compile_v4(&list, 10).unwrap();
        for x in [0xC000_0200, 0xC000_02FF, 0xC612_1234, 0xC613_FFFF, 0x0A12_3456] {
            assert!(contains_v4(&c, 0, x), "{x:#x}");
        }
        for x in [0xC000_01FF, 0xC000_0300, 0xC614_0000, 0x0B00_0000, 0] {
            assert!(!contains_v4(&c, 0, x), "{x:#x}");
        }
        let mut back = decompile_v4(&c.dir, &c.ranges, &c.short);
        back.sort();
        let mut want = list.clone();
        want.sort();
        assert_eq!(back, want);
        assert!(compile_v4(&list, 0).is_err());
        assert!(contains_v4(&compile_v4(&[net(0, 0)], 0).unwrap(), 0, 0xFFFF_FFFF));
    }

    #[test]
    fn a_full_bucket_of_alternating_hosts() {
        // The worst bucket: every other address listed, 32,768 ranges.
        let list: Vec<PrefixV4> = (0..32_768u32).map(|i| (0xC000_0000 | (i * 2), 32)).collect();
        let c = compile_v4(&list, 40_000).unwrap();
        for i in 0..65_536u32 {
            assert_eq!(contains_v4(&c, 0, 0xC000_0000 | i), i % 2 == 0, "{i}");
        }
    }

    #[test]
    fn nested_and_short_prefixes_come_back() {
        // Every prefix length, nested in one another, plus the whole space.
        let list: Vec<PrefixV4> = (0..=32).map(|l| net(0xC000_02FF, l)).collect();
        let c = compile_v4(&list, 100).unwrap();
        assert_eq!(c.dir[DIR_TOP_COUNT as usize], 0);
        assert_eq!(c.dir[DIR_NESTED_COUNT as usize], 16);
        let mut back = decompile_v4(&c.dir, &c.ranges, &c.short);
        back.sort();
        assert_eq!(back, list);
        assert!(contains_v4(&c, 0, 0x0102_0304));
        assert_eq!(compile_v4(&list, 15), Err(CompileError::Ranges { have: 16, capacity: 15 }));
    }

    fn prefix() -> impl Strategy<Value = PrefixV4> {
        // Clustered addresses, so prefixes nest and share buckets.
        (0u32..4, any::<u32>(), prop_oneof![0u8..=32, 14u8..=18, 24u8..=32])
            .prop_map(|(hi, a, l)| net((0xC000_0000 | (hi << 16)) ^ (a & 0x0003_FFFF), l.max(8)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn matches_the_list_and_gives_it_back(list in prop::collection::vec(prefix(), 0..200),
                                               probes in prop::collection::vec(any::<u32>(), 200)) {
            let c = compile_v4(&list, 1000).unwrap();
            for p in probes.iter().map(|p| 0xC000_0000 ^ (p & 0x0007_FFFF)).chain(list.iter().map(|p| p.0)) {
                prop_assert_eq!(contains_v4(&c, 0, p), covered(&list, p), "{:#x}", p);
            }
            let mut back = decompile_v4(&c.dir, &c.ranges, &c.short);
            back.sort();
            let mut want = list.clone();
            want.sort();
            want.dedup();
            prop_assert_eq!(back, want);
        }
    }
}
