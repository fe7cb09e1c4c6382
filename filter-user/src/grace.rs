//! Waiting out the XDP programs that may still read what a switch just left.
//!
//! A writer switches packets to a new generation (or configuration slot) with one
//! word, then clears or rewrites the old one. A program that read the word before the
//! switch still reads the old one until it returns: microseconds on bare metal, but a
//! virtual CPU its host deschedules stays there for milliseconds (seen under QEMU: an
//! address on both lists passed while a replace cleared the old generation). XDP
//! programs run inside RCU read-side sections, so one RCU grace period after the
//! switch is exactly the wait: afterwards no program can hold the old word.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::OnceLock,
    time::Duration,
};

use crate::sys::bpf;

/// Returns once every XDP program running at the call has returned. Never fails: a
/// kernel refusing both ways below gets a sleep far longer than any program run.
pub fn wait_for_readers() {
    if map_in_map_update().is_ok() || membarrier_global().is_ok() {
        return;
    }
    std::thread::sleep(Duration::from_millis(100));
}

/// An update of an array of maps: the kernel calls synchronize_rcu() before it
/// returns (`maybe_wait_bpf_programs`, since Linux 4.19) so that userspace knows no
/// program still uses the old inner map. The arrays are made once per process.
pub fn map_in_map_update() -> io::Result<()> {
    static MAPS: OnceLock<Result<(OwnedFd, OwnedFd), i32>> = OnceLock::new();
    let (outer, inner) = match MAPS.get_or_init(|| create().map_err(|e| e.raw_os_error().unwrap_or(0))) {
        Ok(m) => m,
        Err(code) => return Err(io::Error::from_raw_os_error(*code)),
    };
    let key = 0u32;
    let value = inner.as_raw_fd() as u32;
    let mut attr = [0u64; 16];
    attr[0] = outer.as_raw_fd() as u64;
    attr[1] = &key as *const u32 as u64;
    attr[2] = &value as *const u32 as u64;
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `membarrier(MEMBARRIER_CMD_GLOBAL)`: synchronize_rcu() on machines with more
/// than one CPU; refused under nohz_full.
pub fn membarrier_global() -> io::Result<()> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u64 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u64 = 12;

/// bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries,
/// map_flags, inner_map_fd (u32 each).
fn create_map(map_type: u64, inner: Option<&OwnedFd>) -> io::Result<OwnedFd> {
    let mut attr = [0u64; 16];
    attr[0] = map_type | 4 << 32;
    attr[1] = 4 | 1 << 32;
    attr[2] = inner.map_or(0, |f| (f.as_raw_fd() as u64) << 32);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn create() -> io::Result<(OwnedFd, OwnedFd)> {
    let inner = create_map(BPF_MAP_TYPE_ARRAY, None)?;
    let outer = create_map(BPF_MAP_TYPE_ARRAY_OF_MAPS, Some(&inner))?;
    Ok((outer, inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Both ways work on the kernels floodgate supports (the tests run as root).
    #[test]
    fn both_ways_to_wait_are_accepted_by_the_kernel() {
        map_in_map_update().expect("array-of-maps update");
        map_in_map_update().expect("a second update with the same arrays");
        membarrier_global().expect("membarrier");
    }
}
