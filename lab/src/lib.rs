//! floodgate's lab, test and demo scaffolding (not part of the product): namespaces
//! joined by veth pairs, crafted frames, a raw sender, nginx and a CrowdSec Local API.
//! The demo (`floodgate-demo`), the integration tests and the bench build their scenes
//! with it. Everything created here is removed on drop, also when a test fails.

pub mod cpu;
pub mod crowdsec;
pub mod generator;
pub mod netns;
pub mod nginx;
pub mod packet;
pub mod rawsock;

pub use cpu::{pin_thread, pin_to_cpu};
pub use crowdsec::Lapi;
pub use netns::{End, Netns, ip, veth_pair, veth_pair_queues};
pub use nginx::Nginx;
pub use packet::{FrameSpec, build};
pub use rawsock::RawSender;
