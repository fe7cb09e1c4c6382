//! floodgate's XDP program: a thin entry that classifies each frame with the shared
//! logic in filter-common, counts the verdict and returns it.
// no_std only for the bpf target: on the host (cargo clippy --workspace) the crate
// links std through filter-common's `user` feature and gets a dummy main.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The atomic add intrinsic (see limiter.rs); the bpf build runs with RUSTC_BOOTSTRAP=1.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

mod bench;
mod clock;
mod limiter;
mod lists;
mod rules;
mod synproxy;
mod view;

use aya_ebpf::{bindings::xdp_action, macros::map, macros::xdp, maps::PerCpuArray, programs::XdpContext};
use filter_common::{Counter, Reason, TAIL_ACKPROBE, TAIL_SYNPROXY, classify, synproxy::MAX_PURE_ACK_FRAME};

use crate::{clock::Clock, limiter::MapLimiter, lists::MapLists, rules::MapRules, view::XdpView};

#[map(name = "FG_COUNTERS")]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

#[xdp]
pub fn floodgate(ctx: XdpContext) -> u32 {
    let view = XdpView::new(&ctx);
    let clock = Clock::new();
    let reason =
        classify(&view, &MapLists { clock: &clock }, &MapRules::new(&clock), &MapLimiter::new(&clock));
    // fg_synproxy answers (and counts) the SYN; fg_ackprobe looks for a zero-window
    // probe among small passed frames while SYN cookies are on (and counts the frame). Either returns here only
    // if its slot is empty, and then the frame goes on as usual.
    let tail = if reason == Reason::SynProxy {
        TAIL_SYNPROXY
    } else if reason == Reason::Passed && view.frame_len() <= MAX_PURE_ACK_FRAME && synproxy::enabled() {
        TAIL_ACKPROBE
    } else {
        u32::MAX
    };
    if tail != u32::MAX {
        // SAFETY: a tail call with this program's own context.
        // (Its result type differs between the bpf and host builds.)
        #[allow(clippy::let_unit_value)]
        let _ = unsafe { synproxy::TAILS.tail_call(&ctx, tail) };
        record(Reason::Passed, view.frame_len());
        return xdp_action::XDP_PASS;
    }
    record(reason, view.frame_len());
    if reason.drops() { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// Every verdict goes through here, so the counters always add up to the traffic seen.
#[inline(always)]
pub(crate) fn record(reason: Reason, bytes: usize) {
    if let Some(c) = COUNTERS.get_ptr_mut(reason as u32) {
        // Per-CPU slot: no other CPU writes it, so plain adds are exact.
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
