//! The raw bpf(2) call, for what aya does not expose (see `pins` and `grace`).

use std::io;

/// bpf(2) with a bpf_attr of 128 bytes; returns the call's non-negative result.
pub(crate) fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<libc::c_long> {
    // SAFETY: attr is a zero-filled bpf_attr-sized buffer; pointers in it are live.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128usize) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}
