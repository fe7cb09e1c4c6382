//! The XDP helper programs of `cargo xtask bench` (object `fgb`), built apart from
//! floodgate's object so that production never loads or pins them; the bench loads
//! this object next to floodgate's.
//!
//! - `fgb_pass`: an empty XDP_PASS, the floor of BPF_PROG_TEST_RUN costs, and the
//!   program on the receiving veth when measuring nftables, iptables or no filter.
//! - `fgb_drop`: an empty XDP_DROP, the floor of the live drop path (the least any
//!   filter dropping in the driver can cost per frame).
//! - `fgb_sink`: the rest of the Internet beside the demo's generator: drops frames
//!   addressed outside one network (`FGB_SINK`).
//! - `fgb_gen`: the live-frames generator, flat out or paced (`FGB_PACE`): restores the frame from `FGB_TEMPLATE` if
//!   one is set (live-frames mode recycles pages without restoring them, and a
//!   receiver that rewrites frames in place, as floodgate's SYN cookies do, would
//!   otherwise turn the flood into copies of its answers), rewrites the source,
//!   returns XDP_TX.
//! - `fgb_wrap`: the same rewrite, then a tail call into slot 0 of `FGB_JUMP`
//!   (floodgate or `fgb_pass`), so test_run with a large repeat sees a new source per
//!   frame.
//!
//! The rewrite draws the source from `bpf_get_prandom_u32() & FGB_CFG[0]`, so a mask
//! of 0 repeats one source at exactly the same cost: random and repeated sources are
//! compared on equal work. Sources: 2001:db8::/32 for IPv6; for IPv4 the bits of
//! `FGB_CFG[3]` come from that draw and the others from `FGB_CFG[2]` (both 0, the
//! default: 198.18.0.0/15; base 0 and span u32::MAX: the whole 32-bit space).
// no_std only for the bpf target: on the host (cargo clippy --workspace) the crate
// links std and gets a dummy main, as filter-ebpf does.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_xdp_store_bytes},
    macros::{map, xdp},
    maps::{Array, ProgramArray},
    programs::XdpContext,
};
use filter_common::synproxy::csum_fold;

/// 0: the source mask; 1: the template's length (0: no template); 2: the IPv4
/// source's fixed bits; 3: its random bits (0: base 198.18.0.0, span 0x1ffff); 4: where
/// an IPv4 frame's L4 change is absorbed (0: the source port, at 34; else that offset,
/// e.g. 40, the UDP checksum, when the source port must stay).
#[map(name = "FGB_CFG")]
static CFG: Array<u32> = Array::with_max_entries(5, 0);

/// The IPv4 sources when `FGB_CFG[3]` is 0: 198.18.0.0/15.
const V4_BASE: u32 = 0xc612_0000;
const V4_SPAN: u32 = 0x0001_ffff;

/// Longest frame `fgb_gen` restores.
const TEMPLATE_LEN: usize = 128;

#[map(name = "FGB_TEMPLATE")]
static TEMPLATE: Array<[u8; TEMPLATE_LEN]> = Array::with_max_entries(1, 0);

#[map(name = "FGB_JUMP")]
static JUMP: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[xdp]
pub fn fgb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn fgb_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// `fgb_sink`'s network (0) and mask (1), host order; mask 0: every frame passes.
#[map(name = "FGB_SINK")]
static SINK: Array<u32> = Array::with_max_entries(2, 0);

/// The rest of the Internet, on the outside veth of the demo: drops IPv4 frames
/// addressed outside `FGB_SINK`'s network (a server's answers to spoofed sources,
/// which the real Internet carries away), passes the rest. So those answers cost the
/// outside's CPU (the generator's) a driver drop, not a trip through its stack.
#[xdp]
pub fn fgb_sink(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 34 > end {
        return xdp_action::XDP_PASS;
    }
    let p = data as *const u8;
    // SAFETY: 34 bytes checked above.
    let (ethertype, dst) = unsafe { (get16(p, 12), get16(p, 30) << 16 | get16(p, 32)) };
    let (net, mask) = (SINK.get(0).copied().unwrap_or(0), SINK.get(1).copied().unwrap_or(0));
    if ethertype == 0x0800 && dst & mask != net & mask { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// `fgb_gen`'s pace: 0: nanoseconds between frames sent (0: every frame, flat out);
/// 1: when the next one may go (ns, bpf_ktime_get_ns); 2: frames sent. One generator
/// thread at a time (the updates are not atomic).
#[map(name = "FGB_PACE")]
static PACE: Array<u64> = Array::with_max_entries(3, 0);

/// Frames a paced generator may send at once after a pause (the syscall between two
/// runs): a NIC's interrupt batch, not a burst that overflows the receiver's ring.
const PACE_BURST: u64 = 32;

#[xdp]
pub fn fgb_gen(ctx: XdpContext) -> u32 {
    // Paced, the frames between two sent ones are dropped here (recycled at once): so
    // the rate is steady within a run, as a NIC delivers a flood, instead of one
    // burst per run at whatever one CPU makes.
    if !paced() {
        return xdp_action::XDP_DROP;
    }
    restore(&ctx);
    rewrite(&ctx);
    xdp_action::XDP_TX
}

/// Whether this frame goes out now (and counts it when it does).
#[inline(always)]
fn paced() -> bool {
    let (Some(&every), Some(next), Some(sent)) = (PACE.get(0), PACE.get_ptr_mut(1), PACE.get_ptr_mut(2))
    else {
        return true;
    };
    // SAFETY: pointers to this map's values, which live as long as the map.
    unsafe {
        if every != 0 {
            let now = bpf_ktime_get_ns();
            if now < *next {
                return false;
            }
            let floor = now.saturating_sub(PACE_BURST * every);
            *next = if *next > floor { *next } else { floor } + every;
        }
        *sent += 1;
    }
    true
}

/// Writes the template over the frame's first bytes (the frame has its length).
#[inline(always)]
fn restore(ctx: &XdpContext) {
    let n = CFG.get(1).copied().unwrap_or(0);
    if n == 0 || n as usize > TEMPLATE_LEN {
        return;
    }
    let Some(t) = TEMPLATE.get_ptr_mut(0) else { return };
    // The same length in a form whose bounds (1..=128) the verifier sees on the
    // register it checks.
    let len = ((n - 1) & (TEMPLATE_LEN as u32 - 1)) + 1;
    // SAFETY: at most TEMPLATE_LEN bytes from the map value; the helper checks the frame.
    unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, t as *mut _, len) };
}

#[xdp]
pub fn fgb_wrap(ctx: XdpContext) -> u32 {
    rewrite(&ctx);
    // SAFETY: the context is the one this program was called with.
    unsafe { JUMP.tail_call(&ctx, 0) };
    xdp_action::XDP_ABORTED
}

/// Ones' complement sum, folded to 16 bits (not complemented, unlike a checksum field).
#[inline(always)]
fn fold(s: u32) -> u32 {
    u32::from(!csum_fold(s))
}

/// # Safety
/// `p + off` and `p + off + 1` lie inside the frame.
#[inline(always)]
unsafe fn get16(p: *const u8, off: usize) -> u32 {
    // SAFETY: the caller's promise.
    unsafe { u32::from(u16::from_be_bytes([*p.add(off), *p.add(off + 1)])) }
}

/// # Safety
/// As [`get16`].
#[inline(always)]
unsafe fn put16(p: *mut u8, off: usize, v: u32) {
    let b = (v as u16).to_be_bytes();
    // SAFETY: the caller's promise.
    unsafe {
        *p.add(off) = b[0];
        *p.add(off + 1) = b[1];
    }
}

/// Subtracts `d` (ones' complement) from the 16-bit field at `off`.
///
/// # Safety
/// As [`get16`].
#[inline(always)]
unsafe fn compensate(p: *mut u8, off: usize, d: u32) {
    // SAFETY: the caller's promise.
    unsafe { put16(p, off, fold(get16(p, off) + (!d & 0xffff))) }
}

/// Rewrites two 16-bit source words at `a` and `b` and compensates in the fields at
/// `c1` and `c2`, so every checksum over the frame stays valid without recomputing
/// it. Relative to what the frame holds now: live-frames mode recycles pages without
/// restoring their contents.
///
/// # Safety
/// Every offset in `words` and `comp` (but a 0 in `comp`) is a 16-bit field inside the frame.
#[inline(always)]
unsafe fn swap_words(p: *mut u8, words: [(usize, u32); 2], comp: [usize; 2]) {
    let mut d = 0u32;
    for (off, new) in words {
        // SAFETY: the caller's promise.
        unsafe {
            d += (!get16(p, off) & 0xffff) + new;
            put16(p, off, new);
        }
    }
    let d = fold(d);
    for off in comp {
        if off != 0 {
            // SAFETY: the caller's promise.
            unsafe { compensate(p, off, d) };
        }
    }
}

/// Untagged Ethernet, IPv4 without options or IPv6, UDP or TCP (both start with the
/// source port, which absorbs the change of the L4 checksum's pseudo-header).
#[inline(always)]
fn rewrite(ctx: &XdpContext) {
    let mask = CFG.get(0).copied().unwrap_or(0);
    let (base, span) = match CFG.get(3).copied().unwrap_or(0) {
        0 => (V4_BASE, V4_SPAN),
        span => (CFG.get(2).copied().unwrap_or(0), span),
    };
    let (data, end) = (ctx.data(), ctx.data_end());
    let p = data as *mut u8;
    if data + 14 > end {
        return;
    }
    // SAFETY: every access below lies within a length just checked against data_end.
    unsafe {
        let ethertype = get16(p, 12);
        let r = bpf_get_prandom_u32() & mask;
        if ethertype == 0x0800 && data + 42 <= end {
            // Source 26..30, IP id 18 (IP header checksum), source port 34 or the
            // offset configured (L4).
            let src = (base & !span) | (r & span);
            let l4 = match CFG.get(4).copied().unwrap_or(0) {
                40 => 40,
                _ => 34,
            };
            swap_words(p, [(26, src >> 16), (28, src & 0xffff)], [18, l4]);
        } else if ethertype == 0x86dd && data + 56 <= end {
            // Source 22..38: bytes 4..8 of it (the /64 varies); source port 54.
            swap_words(p, [(26, r >> 16), (28, r & 0xffff)], [54, 0]);
        }
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
