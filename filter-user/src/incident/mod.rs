//! Incidents (issue 16, groundwork): detecting a flood's start and end from the
//! counters ([`detect`]) and keeping its heaviest sources in bounded memory
//! ([`sketch`]). Pure logic, host-tested; the service wiring comes next.

pub mod detect;
pub mod profile;
pub mod record;
pub mod sketch;
