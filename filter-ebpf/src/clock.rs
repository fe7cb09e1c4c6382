//! `bpf_ktime_get_ns`, read at most once per packet and only when something needs it.

use core::cell::Cell;

use aya_ebpf::helpers::bpf_ktime_get_ns;

pub struct Clock(Cell<u64>);

impl Clock {
    #[inline(always)]
    pub fn new() -> Self {
        Clock(Cell::new(0))
    }

    #[inline(always)]
    pub fn now(&self) -> u64 {
        let t = self.0.get();
        if t != 0 {
            return t;
        }
        // SAFETY: a helper without arguments.
        let t = unsafe { bpf_ktime_get_ns() };
        self.0.set(t);
        t
    }
}
