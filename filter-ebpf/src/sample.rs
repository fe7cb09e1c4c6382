//! The sampler (see filter_common::sample): 1 in N frames per verdict reason, and every
//! frame of a traced source, copied with their verdict into a tap's ring buffer under
//! a per-CPU per-second cap.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_xdp_load_bytes},
    macros::map,
    maps::{Array, LpmTrie, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use filter_common::{
    Reason, Source,
    sample::{
        FLAG_TRACED, RING_BYTES, SAMPLE_BYTES, Sample, SampleConfig, TAP_ADHOC, TAP_SERVICE, TAPS,
        TRACE_ENTRIES, TapState, WOULD_DROP_SHIFT,
    },
};

#[map(name = "FG_SAMPLE_CFG")]
static CONFIG: Array<SampleConfig> = Array::with_max_entries(TAPS, 0);
#[map(name = "FG_SAMPLE_ST")]
static STATE: PerCpuArray<TapState> = PerCpuArray::with_max_entries(TAPS, 0);
#[map(name = "FG_SAMPLES")]
static SAMPLES: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map(name = "FG_CAPTURE")]
static CAPTURE: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map(name = "FG_TRACE_V4")]
static TRACE_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(TRACE_ENTRIES, 0);
#[map(name = "FG_TRACE_V6")]
static TRACE_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(TRACE_ENTRIES, 0);

/// Where the sampled frame's source is, for tracing.
#[derive(Clone, Copy)]
pub enum Src {
    /// Not an IP frame with a readable source.
    None,
    /// An IPv4 source (the entry's verdicts), in network order.
    V4([u8; 4]),
    /// The packet the entry handed to `fg_decide` (this CPU's `FG_PACKET`).
    Parsed,
}

/// Offers the frame to both taps. Inline only the check whether either tap is on:
/// the rest is one out-of-line function, so that the verifier walks it once per
/// call rather than through every path after it (the programs stay under its
/// complexity limit with the data path's log on).
/// `would` is the reason a check in observe mode would have dropped the frame for,
/// plus one (0: none): such a frame is picked at that reason's rate and carries it in
/// its flags.
#[inline(always)]
pub fn offer(ctx: &XdpContext, reason: Reason, would: u32, src: Src, len: usize) {
    let on = |tap| CONFIG.get(tap).is_some_and(|c| c.on != 0);
    if !on(TAP_SERVICE) && !on(TAP_ADHOC) {
        return;
    }
    let (kind, v4) = match src {
        Src::None => (0, 0),
        Src::V4(a) => (1, u32::from_ne_bytes(a)),
        Src::Parsed => (2, 0),
    };
    // One word for reason and flags: a BPF function takes at most five arguments.
    // Reasons stay numbers from here on: the verifier bounds a map value's index but
    // not always a lookup in a table of reasons.
    let flags = (would & 0xf) << WOULD_DROP_SHIFT;
    offer_slow(ctx, reason as u32 | flags << 8, len, kind, v4);
}

#[inline(never)]
fn offer_slow(ctx: &XdpContext, what: u32, len: usize, src_kind: u32, v4: u32) {
    // A would-drop frame is picked as often as frames of the reason it would be dropped for.
    let pick = match (what >> (8 + WOULD_DROP_SHIFT)) & 0xf {
        0 => what & 0xff,
        n => n - 1,
    };
    tap(ctx, TAP_SERVICE, what, pick, 0, 0, len);
    tap(ctx, TAP_ADHOC, what, pick, src_kind, v4, len);
}

#[inline(always)]
fn tap(ctx: &XdpContext, tap: u32, what: u32, pick: u32, src_kind: u32, v4: u32, len: usize) {
    let Some(cfg) = CONFIG.get(tap) else { return };
    if cfg.on == 0 {
        return;
    }
    let traced = cfg.trace != 0 && traced(src_kind, v4);
    // SAFETY: a helper without arguments.
    if !traced && !cfg.picks_index(pick, unsafe { bpf_get_prandom_u32() }) {
        return;
    }
    let flags = if traced { u32::from(FLAG_TRACED) << 8 } else { 0 };
    send(ctx, tap, cfg.per_cpu_per_sec, what | flags, len);
}

#[inline(always)]
fn traced(src_kind: u32, v4: u32) -> bool {
    match src_kind {
        1 => TRACE_V4.get(&Key::new(32, v4.to_ne_bytes())).is_some(),
        2 => match crate::PACKET.get(0).map(|r| r.packet().src) {
            Some(Source::V4(a)) => TRACE_V4.get(&Key::new(32, a)).is_some(),
            Some(Source::V6(a)) => TRACE_V6.get(&Key::new(128, a)).is_some(),
            None => false,
        },
        _ => false,
    }
}

/// Sends one sample, if the tap's cap allows. Inline in `offer_slow`: a third level
/// of calls would put the stacks of the three over the kernel's 512 bytes together.
#[inline(always)]
fn send(ctx: &XdpContext, tap: u32, per_sec: u32, what: u32, len: usize) {
    let Some(state) = STATE.get_ptr_mut(tap) else { return };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot, valid while the program runs.
    let state = unsafe { &mut *state };
    if !state.admit(now, per_sec) {
        return;
    }
    let ring = if tap == TAP_SERVICE { &SAMPLES } else { &CAPTURE };
    let Some(mut entry) = ring.reserve::<Sample>(0) else {
        state.lost += 1;
        return;
    };
    let s = entry.as_mut_ptr();
    // The verifier needs the copy's length in 1..=SAMPLE_BYTES in the register it
    // checks: the volatile read keeps LLVM from folding the clamp, and the mask gives
    // the bound in a form the verifier follows (SAMPLE_BYTES is a power of two).
    let cap = core::cmp::min(len, SAMPLE_BYTES) as u32;
    // SAFETY: reads a local.
    let cap = (unsafe { core::ptr::read_volatile(&cap) }.wrapping_sub(1) & (SAMPLE_BYTES as u32 - 1)) + 1;
    // SAFETY: `s` is the reserved, writable entry; `data` lies inside it and holds
    // SAMPLE_BYTES >= cap bytes.
    unsafe {
        (*s).ts_ns = now;
        (*s).frame_len = len as u32;
        (*s).reason = what as u8;
        (*s).flags = (what >> 8) as u8;
        let data = (*s).data.as_mut_ptr();
        // Fails (and copies nothing) only for a frame shorter than `cap`, i.e. empty.
        let copied = bpf_xdp_load_bytes(ctx.ctx, 0, data.cast(), cap) == 0;
        (*s).cap_len = if copied { cap as u16 } else { 0 };
    }
    entry.submit(0);
    state.sent += 1;
}
