//! [`PacketView`] over the XDP context: every read is checked against `data_end` in
//! the form the verifier recognises.

use aya_ebpf::programs::XdpContext;
use filter_common::PacketView;

pub struct XdpView {
    data: usize,
    data_end: usize,
}

impl XdpView {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self { data: ctx.data(), data_end: ctx.data_end() }
    }

    #[inline(always)]
    pub fn frame_len(&self) -> usize {
        self.data_end - self.data
    }
}

impl PacketView for XdpView {
    #[inline(always)]
    fn len(&self) -> usize {
        self.frame_len()
    }

    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let start = self.data + offset;
        // The volatile read hides data_end's relation to len(): otherwise LLVM proves
        // this check redundant from earlier length arithmetic (e.g. IPv4 total length
        // within the frame) and drops it, and the verifier, which cannot follow that
        // arithmetic, then rejects the read.
        // SAFETY: reads a field of `self`.
        let end = unsafe { core::ptr::read_volatile(&self.data_end) };
        if start + N > end {
            return None;
        }
        // SAFETY: [start, start + N) was just checked to lie inside the frame.
        Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
    }
}
