//! floodgate's controller library: loading and attaching the XDP program, the pinned
//! maps, and list operations. The `floodgate` binary is a CLI over this; the
//! integration tests use it to drive the real object with BPF_PROG_TEST_RUN.
pub mod atomic;
pub mod bpflog;
pub mod compiled;
pub mod config;
pub mod crowdsec;
pub mod duration;
pub mod grace;
pub mod human;
pub mod incident;
pub mod limits;
pub mod loader;
pub mod logging;
pub mod maps;
pub mod metrics;
pub mod notify;
pub mod object;
pub mod pins;
pub mod policy;
pub mod portmap;
pub mod reconcile;
pub mod rules;
pub mod sampler;
pub mod sources;
pub mod stats;
pub mod store;
pub mod synproxy;
mod sys;
pub mod takeover;
pub mod watch;
