//! Incidents (issue 16): detecting a flood's start and end from the counters
//! ([`detect`]), what its samples say ([`profile`], with heavy hitters kept in bounded
//! memory by [`sketch`]), the record of it ([`record`]) kept on disk ([`store`]),
//! telling others when one opens and closes ([`actions`]: the hook and webhook), and
//! the report a team sends its provider ([`report`]). The service's side lives in
//! the binary (`cli/service/incidents.rs`).

pub mod actions;
pub mod detect;
pub mod profile;
pub mod record;
pub mod report;
pub mod sketch;
pub mod store;
