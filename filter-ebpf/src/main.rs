//! floodgate's XDP program: a thin entry that classifies each frame with the shared
//! logic in filter-common, counts the verdict and returns it.
// no_std only for the bpf target: on the host (cargo clippy --workspace) the crate
// links std through filter-common's `user` feature and gets a dummy main.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The atomic add intrinsic (see limiter.rs); the bpf build runs with RUSTC_BOOTSTRAP=1.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

mod clock;
mod limiter;
mod lists;
mod log;
mod rules;
mod sample;
mod synproxy;
mod view;

use aya_ebpf::{bindings::xdp_action, macros::map, macros::xdp, maps::PerCpuArray, programs::XdpContext};
use filter_common::{
    Counter, Frame, Reason, Source, TAIL_ACKPROBE, TAIL_DECIDE, TAIL_SYNPROXY,
    decide::{Observer, decide},
    parse::{PacketRecord, parse},
    synproxy::MAX_PURE_ACK_FRAME,
};

use crate::{
    clock::Clock, limiter::MapLimiter, lists::MapLists, rules::MapRules, sample::Src, view::XdpView,
};

#[map(name = "FG_COUNTERS")]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Reason::COUNT, 0);
#[map(name = "FG_WOULD_DROP")]
static WOULD_DROP: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

/// The parsed packet, handed from `floodgate` to `fg_decide` on the same CPU (a
/// program and the programs it tail-calls run without migrating).
#[map(name = "FG_PACKET")]
pub(crate) static PACKET: PerCpuArray<PacketRecord> = PerCpuArray::with_max_entries(1, 0);

/// The entry: parses the frame and hands an IP packet to `fg_decide`. Parsing and
/// deciding live in two programs because the verifier walks every parse path (VLAN
/// tags, IPv4 options, IPv6 extension headers) through all the code after it; split,
/// it checks the decision once, from a packet it knows nothing about.
#[xdp]
pub fn floodgate(ctx: XdpContext) -> u32 {
    let view = XdpView::new(&ctx);
    let pkt = match parse(&view) {
        Frame::Ip(pkt) => pkt,
        Frame::NonIp => return verdict(&ctx, Reason::NonIp, Src::None, view.frame_len()),
        Frame::Malformed => return verdict(&ctx, Reason::Malformed, Src::None, view.frame_len()),
        Frame::TooDeep => return verdict(&ctx, Reason::Unchecked, Src::None, view.frame_len()),
    };
    // The common shape of a flood from a listed range, decided here.
    if let Source::V4(a) = &pkt.src
        && lists::blocked_by_full_bucket(a)
    {
        return verdict(&ctx, Reason::Blocklist, Src::V4(*a), view.frame_len());
    }
    if let Some(slot) = PACKET.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; nothing else runs on this CPU until we return.
        unsafe { *slot = PacketRecord { frame_len: view.frame_len() as u32, ..pkt.record() } };
        // SAFETY: a tail call with this program's own context.
        #[allow(clippy::let_unit_value)]
        let _ = unsafe { synproxy::TAILS.tail_call(&ctx, TAIL_DECIDE) };
        log::decide_empty();
    }
    // Only when fg_decide is not in its slot (`attach` fills it before it attaches):
    // the frame was never checked against the lists, so it must not pass.
    verdict(&ctx, Reason::Unchecked, Src::None, view.frame_len())
}

/// The decision on a parsed IP packet: lists, rules, policy, limiter.
#[xdp]
pub fn fg_decide(ctx: XdpContext) -> u32 {
    let view = XdpView::new(&ctx);
    let Some(slot) = PACKET.get_ptr_mut(0) else {
        return verdict(&ctx, Reason::Unchecked, Src::None, view.frame_len());
    };
    // SAFETY: this CPU's slot, valid while the program runs.
    let pkt = unsafe { (*slot).packet() };
    let clock = Clock::new();
    let reason = decide(
        pkt,
        view.frame_len() as u64,
        &MapLists { clock: &clock },
        &MapRules::new(&clock),
        &MapLimiter::new(&clock),
        &Noted,
    );
    // SAFETY: as above; the entry zeroed it with the rest of the record.
    let would_drop = unsafe { (*slot).would_drop };
    // fg_synproxy answers (and counts) the SYN; fg_ackprobe looks for a zero-window
    // probe among small passed frames while SYN cookies are on (and counts the frame).
    // Either returns here only if its slot is empty, and then the frame goes on as usual.
    // Sampled here, before a tail call can rewrite the frame: a SYN answered with a
    // cookie is sampled as it came in (syn_answered), a repaired probe as passed.
    sample::offer(&ctx, reason, would_drop, Src::Parsed, view.frame_len());
    let tail = if reason == Reason::SynProxy {
        Some(TAIL_SYNPROXY)
    } else if reason == Reason::Passed && view.frame_len() <= MAX_PURE_ACK_FRAME && synproxy::enabled() {
        Some(TAIL_ACKPROBE)
    } else {
        None
    };
    if let Some(tail) = tail {
        // SAFETY: a tail call with this program's own context.
        // (Its result type differs between the bpf and host builds.)
        #[allow(clippy::let_unit_value)]
        let _ = unsafe { synproxy::TAILS.tail_call(&ctx, tail) };
        log::tail_empty(tail);
        record(Reason::Passed, view.frame_len());
        return xdp_action::XDP_PASS;
    }
    count(reason, view.frame_len())
}

/// Where checks in observe mode note what they would have dropped: each note counts
/// under its reason at once; the first (its reason plus one, a number: a lookup in a
/// table of reasons is an access the verifier cannot always bound) is kept in this
/// CPU's `FG_PACKET` record for the sample. Holds nothing, so it takes no stack.
struct Noted;

impl Observer for Noted {
    #[inline(always)]
    fn would_drop(&self, reason: Reason) {
        note(reason as u32);
    }
}

/// Out of line: the verifier then sees the same few registers after every note,
/// which keeps the decision's paths few enough for its limit with the log on.
#[inline(never)]
fn note(reason: u32) {
    let Some(slot) = PACKET.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's FG_PACKET value, valid while the program runs.
    unsafe {
        add(&WOULD_DROP, reason, (*slot).frame_len as usize);
        if (*slot).would_drop == 0 {
            (*slot).would_drop = reason + 1;
        }
    }
}

/// Samples the frame, counts the verdict and returns its action.
#[inline(always)]
fn verdict(ctx: &XdpContext, reason: Reason, src: Src, bytes: usize) -> u32 {
    sample::offer(ctx, reason, 0, src, bytes);
    count(reason, bytes)
}

/// Counts the verdict and returns its action (the frame was sampled already).
#[inline(always)]
fn count(reason: Reason, bytes: usize) -> u32 {
    record(reason, bytes);
    if reason.drops() { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// Every verdict goes through here, so the counters always add up to the traffic seen.
#[inline(always)]
pub(crate) fn record(reason: Reason, bytes: usize) {
    add(&COUNTERS, reason as u32, bytes);
}

#[inline(always)]
fn add(counters: &PerCpuArray<Counter>, index: u32, bytes: usize) {
    if let Some(c) = counters.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it, so plain adds are exact.
        // SAFETY: `c` points to this CPU's counter, valid while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
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
