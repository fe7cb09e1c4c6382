//! Incidents (issue 16, groundwork): detecting a flood's start and end from the
//! counters ([`detect`]), keeping its heaviest sources in bounded memory ([`sketch`]),
//! the record kept of it ([`record`]) and telling others when one opens and closes
//! ([`actions`]: the hook and webhook). Host-tested; the service wiring comes next.

pub mod actions;
pub mod detect;
pub mod profile;
pub mod record;
pub mod sketch;
