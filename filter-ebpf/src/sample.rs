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
        TRACE_ENTRIES, TapState,
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

/// Offers the frame to both taps. `src` is None for frames without a readable IP
/// source (they cannot be traced).
#[inline(always)]
pub fn offer(ctx: &XdpContext, reason: Reason, src: Option<&Source>, len: usize) {
    tap(ctx, TAP_SERVICE, reason, None, len);
    tap(ctx, TAP_ADHOC, reason, src, len);
}

#[inline(always)]
fn tap(ctx: &XdpContext, tap: u32, reason: Reason, src: Option<&Source>, len: usize) {
    let Some(cfg) = CONFIG.get(tap) else { return };
    if cfg.on == 0 {
        return;
    }
    let flags = if cfg.trace != 0 && src.is_some_and(traced) { FLAG_TRACED } else { 0 };
    // SAFETY: a helper without arguments.
    if flags == 0 && !cfg.picks(reason, unsafe { bpf_get_prandom_u32() }) {
        return;
    }
    // One word for reason and flags: a BPF function takes at most five arguments.
    send(ctx, tap, cfg.per_cpu_per_sec, reason as u32 | u32::from(flags) << 8, len);
}

fn traced(src: &Source) -> bool {
    match src {
        Source::V4(a) => TRACE_V4.get(&Key::new(32, *a)).is_some(),
        Source::V6(a) => TRACE_V6.get(&Key::new(128, *a)).is_some(),
    }
}

/// Sends one sample, if the tap's cap allows. Out of line: the copy is rare, so the
/// per-frame path stays small.
#[inline(never)]
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
