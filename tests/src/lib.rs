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
