//! A small network lab: namespaces joined by veth pairs, crafted frames, and a raw
//! sender. The demo and the integration tests build their scenes with it. Everything
//! created here is removed on drop, also when a test fails.

pub mod netns;
pub mod nginx;
pub mod packet;
pub mod rawsock;

pub use netns::{Netns, ip, veth_pair, veth_pair_queues};
pub use nginx::Nginx;
pub use packet::{FrameSpec, build};
pub use rawsock::RawSender;
