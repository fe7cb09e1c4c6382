//! Helpers for floodgate's integration tests: the real XDP object under
//! BPF_PROG_TEST_RUN ([`harness`]), and live scenes in network namespaces driving the
//! real `floodgate` binary ([`live`]). The tests need root (CAP_BPF, CAP_NET_ADMIN);
//! run them with `cargo xtask integration-test local`.

pub mod frames;
pub mod fuzz;
pub mod harness;
pub mod live;
pub mod prom;
pub mod service;

/// Sets its flag when dropped: a thread told to stop by that flag stops however the
/// code holding this ends, a failed assertion included (a scoped thread that never
/// stops would hang the test instead of failing it).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
