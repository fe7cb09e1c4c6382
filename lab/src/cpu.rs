//! Pinning threads to CPUs, for measurements that need sender and receiver apart.

use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};

/// Pins thread `tid` (0: the calling thread) to `cpu`. Best effort, as the callers
/// only measure better with it: a CPU that does not exist leaves the thread as it was.
pub fn pin_thread(tid: i32, cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(tid), &set);
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) {
    pin_thread(0, cpu);
}
