//! The compiled IPv4 lists' arrays (filter_common::compiled), mapped into this process:
//! a region is written with plain memory copies, a million prefixes in milliseconds,
//! instead of a syscall per entry.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::{Map, MapData, MapError};
use filter_common::compiled::{
    CompiledV4, DIR_BUCKETS, DIR_END, DIR_FULL, DIR_NESTED, DIR_NESTED_COUNT, DIR_REGION, DIR_TOP_COUNT,
    PrefixV4, REGIONS, SHORT_WORDS, decompile_v4,
};

/// A shared, writable mapping of a BPF array created with BPF_F_MMAPABLE.
struct Mapped<T> {
    ptr: NonNull<T>,
    len: usize,
    /// Keeps the map alive as long as the mapping (the mapping would too, but the fd
    /// is what other code expects to find).
    _map: MapData,
}

impl<T: Copy> Mapped<T> {
    /// Maps an array of u64 elements, seen as `T`s (u32 words: two to an element).
    fn new(map: MapData, name: &'static str) -> Result<Self, MapError> {
        let info = map.info()?;
        // The kernel stores every array element in at least 8 bytes, hence u64 elements.
        if info.value_size() != 8 {
            return Err(MapError::InvalidValueSize { size: info.value_size() as usize, expected: 8 });
        }
        let bytes = info.max_entries() as usize * 8;
        let len = bytes / size_of::<T>();
        // SAFETY: a fresh mapping of the map's fd; the kernel checks the size and flags.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MapError::SyscallError(aya::sys::SyscallError {
                call: "mmap",
                io_error: std::io::Error::other(format!("{name}: {}", std::io::Error::last_os_error())),
            }));
        }
        Ok(Self { ptr: NonNull::new(p.cast()).expect("mmap returned null"), len, _map: map })
    }

    /// Words per region (the array holds [`REGIONS`] of them).
    fn region_len(&self) -> usize {
        self.len / REGIONS as usize
    }

    /// Region `r`'s words.
    fn region(&self, r: u32) -> &[T] {
        let n = self.region_len();
        // SAFETY: the mapping is len elements long and lives as long as self. Other
        // writers are excluded by the interface lock; the data path only reads.
        let all = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) };
        &all[r as usize * n..][..n]
    }

    fn region_mut(&mut self, r: u32) -> &mut [T] {
        let n = self.region_len();
        // SAFETY: as above.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) };
        &mut all[r as usize * n..][..n]
    }
}

// SAFETY: the mapping belongs to the process, not to a thread; access goes through
// &self / &mut self like any owned buffer.
unsafe impl<T: Send> Send for Mapped<T> {}
unsafe impl<T: Sync> Sync for Mapped<T> {}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new().
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len * size_of::<T>()) };
    }
}

/// The three arrays of the compiled IPv4 lists.
pub struct CompiledMaps {
    dir: Mapped<u32>,
    ranges: Mapped<u32>,
    short: Mapped<u64>,
    /// Ranges per region (the list capacity set at attach).
    capacity: u32,
}

fn array(map: Map, name: &'static str) -> Result<MapData, MapError> {
    match map {
        Map::Array(m) => Ok(m),
        _ => Err(MapError::InvalidName { name: name.into() }),
    }
}

/// Whether directory word `i` is a range index (the rest are counts).
fn is_index(i: usize) -> bool {
    let i = i as u32;
    i <= DIR_END || (DIR_NESTED..=DIR_NESTED + DIR_BUCKETS).contains(&i)
}

impl CompiledMaps {
    pub fn new(dir: Map, ranges: Map, short: Map) -> Result<Self, (&'static str, MapError)> {
        use filter_common::map_names::{V4_DIR, V4_RANGES, V4_SHORT};
        let dir = array(dir, V4_DIR).and_then(|m| Mapped::new(m, V4_DIR)).map_err(|e| (V4_DIR, e))?;
        let ranges =
            array(ranges, V4_RANGES).and_then(|m| Mapped::new(m, V4_RANGES)).map_err(|e| (V4_RANGES, e))?;
        let short =
            array(short, V4_SHORT).and_then(|m| Mapped::new(m, V4_SHORT)).map_err(|e| (V4_SHORT, e))?;
        let bad = |name, what: String| (name, MapError::InvalidName { name: what });
        if dir.len != (REGIONS * DIR_REGION) as usize {
            return Err(bad(V4_DIR, format!("{V4_DIR} has {} entries", dir.len)));
        }
        if short.len != (REGIONS * SHORT_WORDS) as usize {
            return Err(bad(V4_SHORT, format!("{V4_SHORT} has {} entries", short.len)));
        }
        if ranges.len % REGIONS as usize != 0 {
            return Err(bad(V4_RANGES, format!("{V4_RANGES} has {} entries", ranges.len)));
        }
        let capacity = ranges.region_len() as u32;
        Ok(Self { dir, ranges, short, capacity })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Writes a compiled list into `region`. The region must not be the one packets
    /// search (the caller flips to it afterwards).
    pub fn write(&mut self, region: u32, c: &CompiledV4) {
        let base = region * self.capacity;
        self.ranges.region_mut(region)[..c.ranges.len()].copy_from_slice(&c.ranges);
        self.short.region_mut(region).copy_from_slice(&c.short);
        for (i, (out, &w)) in self.dir.region_mut(region).iter_mut().zip(&c.dir).enumerate() {
            // Range indices become absolute; the counts stay as they are.
            *out = if is_index(i) { ((w & !DIR_FULL) + base) | (w & DIR_FULL) } else { w };
        }
    }

    /// Empties `region`.
    pub fn clear(&mut self, region: u32) {
        self.dir.region_mut(region).fill(0);
        self.short.region_mut(region).fill(0);
    }

    /// The prefixes stored in `region`.
    pub fn read(&self, region: u32) -> Vec<PrefixV4> {
        let base = region * self.capacity;
        let d = self.dir.region(region);
        let n = (d[DIR_TOP_COUNT as usize] as usize + d[DIR_NESTED_COUNT as usize] as usize)
            .min(self.capacity as usize);
        // Clamped, so that a region cut short by a crash cannot index out of range
        // (recover clears inactive regions before anything reads them anyway).
        let dir: Vec<u32> = d
            .iter()
            .enumerate()
            .map(|(i, &w)| if is_index(i) { (w & !DIR_FULL).saturating_sub(base).min(n as u32) } else { w })
            .collect();
        decompile_v4(&dir, &self.ranges.region(region)[..n], self.short.region(region))
    }

    /// Whether `region` holds anything.
    pub fn is_empty(&self, region: u32) -> bool {
        let d = self.dir.region(region);
        d[DIR_TOP_COUNT as usize] == 0
            && d[DIR_NESTED_COUNT as usize] == 0
            && self.short.region(region).iter().all(|&w| w == 0)
    }
}
