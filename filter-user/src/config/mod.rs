//! The service's config file: a TOML file describing the desired state of every
//! filtered interface (see `packaging/floodgate.toml`).

pub mod model;

pub use model::*;
