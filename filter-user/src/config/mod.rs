//! The service's config file: a TOML file describing the desired state of every
//! filtered interface (see `packaging/floodgate.toml`, which documents every key).
//!
//! [`load`] reads and checks a file whole: every error is collected, each with its
//! file, line and column, so `config check` and a refused reload can report them all.
//! List files it names are read and checked too (a bad line is reported at its own
//! file, line and column); URLs are checked as URLs, not fetched.

mod check;
mod crowdsec;
mod error;
mod incidents;
pub mod model;
mod sources;

use std::path::Path;

pub use check::{
    DEFAULT_MAX_SHRINK, DEFAULT_METRICS_LISTEN, DEFAULT_REFRESH, DEFAULT_STATE_DIR, MIN_REFRESH, PRESETS,
};
pub use crowdsec::{DEFAULT_ALERT_QUEUE, DEFAULT_ALERTS_PER_MINUTE, DEFAULT_POLL, POLL_RANGE};
pub use error::{ConfigError, ConfigErrors};
pub use incidents::{
    DEFAULT_HOLD, DEFAULT_QUIET, DEFAULT_SAMPLE_EVERY, DEFAULT_SAMPLE_MAX_PPS, HOLD_RANGE, QUIET_RANGE,
    SAMPLE_EVERY_RANGE, SAMPLE_MAX_PPS_RANGE, THRESHOLD_BPS_RANGE, THRESHOLD_PPS_RANGE,
};
pub use model::*;
pub use sources::MAX_ERRORS_PER_FILE;

/// Where the service reads its config unless told otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/floodgate/floodgate.toml";

/// Reads and checks a config file. Relative list paths are relative to its directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let unreadable = |(line, column), reason: String| {
        ConfigErrors(vec![ConfigError { file: path.display().to_string(), line, column, reason }])
    };
    let bytes =
        std::fs::read(path).map_err(|e| unreadable((1, 1), format!("cannot read the config file: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = error::utf8_position(e.as_bytes(), e.utf8_error().valid_up_to());
        unreadable(at, "not UTF-8 text".to_string())
    })?;
    load_str(path, &text)
}

/// Checks config text as if read from `path` (named in errors; its directory is where
/// relative list paths start).
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    check::check(path, text)
}

#[cfg(test)]
mod tests;
