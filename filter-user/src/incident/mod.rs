//! Incidents (issue 16): detecting a flood's start and end from the counters
//! ([`detect`]), keeping its heaviest sources in bounded memory ([`sketch`]), the
//! record of it ([`record`]) kept on disk ([`store`]), and the report a team sends
//! its provider ([`report`]).

pub mod detect;
pub mod record;
pub mod report;
pub mod sketch;
pub mod store;
