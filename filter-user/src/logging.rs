//! The service's log: tracing events to stderr, where journald (or whatever started
//! floodgate) keeps them; text for people, or one JSON object per line for log shippers.
//!
//! - Filter: an explicit filter (a flag or the config) wins, then `$FLOODGATE_LOG`, then
//!   `$RUST_LOG`, else `info`; all in `tracing_subscriber::EnvFilter` syntax
//!   (`info,floodgate::reconcile=debug`).
//! - Text: ANSI colours only when stderr is a terminal; no timestamps when stderr is the
//!   journal (`$JOURNAL_STREAM` names stderr's device and inode, as systemd sets it for
//!   `StandardError=journal`), since journald stamps every line itself.
//! - JSON: `{"timestamp":…,"level":"INFO","message":…,<the event's fields>,"target":…}`,
//!   plus `"span":{…}` with the current span's name and fields. Always timestamped: a
//!   shipper parsing the objects reads the time from them.
//! - `log` records (aya-log forwards the XDP program's events through the `log` crate)
//!   are bridged into the same subscriber, so they are filtered and formatted alike.

use std::io::IsTerminal as _;

use thiserror::Error;
use tracing::Subscriber;
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::ParseError, fmt::MakeWriter, layer::SubscriberExt as _,
    util::SubscriberInitExt as _, util::TryInitError,
};

pub use crate::config::LogFormat;

/// The filter variable of floodgate's own (read before `RUST_LOG`).
pub const LOG_ENV: &str = "FLOODGATE_LOG";
/// The filter when nothing else is set.
pub const DEFAULT_FILTER: &str = "info";

#[derive(Debug, Error)]
pub enum LoggingError {
    #[error("bad log filter '{filter}' (from {origin}): {source}")]
    BadFilter {
        filter: String,
        origin: &'static str,
        #[source]
        source: ParseError,
    },
    #[error("a logger is already installed in this process")]
    AlreadyInstalled(#[source] TryInitError),
}

/// Everything that decides what the log looks like; [`Settings::for_stderr`] finds it
/// out for this process, tests spell it out.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub format: LogFormat,
    /// An `EnvFilter` directive string.
    pub filter: String,
    /// Where `filter` came from (for an error about it).
    pub filter_origin: &'static str,
    /// Colours in text output.
    pub ansi: bool,
    /// Timestamps in text output (JSON always has them).
    pub timestamps: bool,
}

impl Settings {
    /// The settings for logging to this process's stderr: `level_filter` if given, else
    /// the environment's (module documentation); colours and timestamps as stderr is a
    /// terminal or the journal.
    pub fn for_stderr(format: LogFormat, level_filter: Option<&str>) -> Settings {
        let env = |name| std::env::var(name).ok();
        let (filter, filter_origin) = choose_filter(level_filter, env(LOG_ENV), env("RUST_LOG"));
        Settings {
            format,
            filter,
            filter_origin,
            ansi: std::io::stderr().is_terminal(),
            timestamps: !stderr_is_journal(),
        }
    }
}

/// The filter in force and its origin: `explicit`, else the first set and non-empty of
/// `$FLOODGATE_LOG` and `$RUST_LOG`, else [`DEFAULT_FILTER`].
pub fn choose_filter(
    explicit: Option<&str>,
    floodgate_log: Option<String>,
    rust_log: Option<String>,
) -> (String, &'static str) {
    let set = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    if let Some(f) = explicit {
        (f.to_string(), "the command line or config")
    } else if let Some(f) = set(floodgate_log) {
        (f, "$FLOODGATE_LOG")
    } else if let Some(f) = set(rust_log) {
        (f, "$RUST_LOG")
    } else {
        (DEFAULT_FILTER.to_string(), "the default")
    }
}

/// Whether stderr is the journal: `$JOURNAL_STREAM` ("DEV:INODE") names the stream
/// systemd connected, and stderr is still that stream (not redirected by a wrapper).
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr()).is_ok_and(|st| journal_stream_is(&value, st.st_dev, st.st_ino))
}

/// Whether `$JOURNAL_STREAM`'s value names the file with this device and inode.
fn journal_stream_is(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// A subscriber writing events as `settings` says to `writer` (e.g. `std::io::stderr`,
/// or a buffer in tests). Use it with [`install`], or scoped with
/// `tracing::subscriber::with_default`.
pub fn subscriber<W>(
    settings: &Settings,
    writer: W,
) -> Result<Box<dyn Subscriber + Send + Sync>, LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&settings.filter).map_err(|source| LoggingError::BadFilter {
        filter: settings.filter.clone(),
        origin: settings.filter_origin,
        source,
    })?;
    let base = tracing_subscriber::fmt::layer().with_writer(writer);
    let layer = match settings.format {
        LogFormat::Json => base
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .boxed(),
        LogFormat::Text if settings.timestamps => base.with_ansi(settings.ansi).boxed(),
        LogFormat::Text => base.with_ansi(settings.ansi).without_time().boxed(),
    };
    Ok(Box::new(tracing_subscriber::registry().with(layer.with_filter(filter))))
}

/// Makes `subscriber` the process's, and bridges `log` records into it (up to its
/// most verbose enabled level). Once per process.
pub fn install(subscriber: Box<dyn Subscriber + Send + Sync>) -> Result<(), LoggingError> {
    subscriber.try_init().map_err(LoggingError::AlreadyInstalled)
}

/// Sets up the process's log on stderr: `format`, and `level_filter` if given, else
/// `$FLOODGATE_LOG`, `$RUST_LOG` or `info` (module documentation). Once per process.
pub fn init(format: LogFormat, level_filter: Option<&str>) -> Result<(), LoggingError> {
    install(subscriber(&Settings::for_stderr(format, level_filter), std::io::stderr)?)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

    /// A writer the tests read back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn settings(format: LogFormat, filter: &str, timestamps: bool) -> Settings {
        Settings { format, filter: filter.into(), filter_origin: "a test", ansi: false, timestamps }
    }

    /// Runs `f` with a subscriber writing into a fresh buffer; returns what it wrote.
    fn capture(s: &Settings, f: impl FnOnce()) -> String {
        let buf = Buffer::default();
        let w = buf.clone();
        let sub = subscriber(s, move || w.clone()).unwrap();
        tracing::subscriber::with_default(sub, f);
        buf.text()
    }

    #[test]
    fn json_lines_carry_level_target_message_fields_and_span() {
        let out = capture(&settings(LogFormat::Json, "info", true), || {
            let span = tracing::info_span!("reload", generation = 7);
            let _g = span.enter();
            tracing::info!(list = "blocklist", added = 3u64, removed = 1u64, "list changed");
            tracing::debug!("filtered out at info");
            tracing::warn!(target: "floodgate::fetch", url = "https://example.test/drop.txt", "kept the last good copy");
        });
        let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
        assert_eq!(lines.len(), 2, "{out}");

        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["target"], module_path!());
        assert_eq!(first["message"], "list changed");
        assert_eq!(first["list"], "blocklist");
        assert_eq!(first["added"], 3);
        assert_eq!(first["removed"], 1);
        assert_eq!(first["span"]["name"], "reload");
        assert_eq!(first["span"]["generation"], 7);
        let ts = first["timestamp"].as_str().expect("a timestamp");
        assert!(ts.len() >= 20 && ts.contains('T') && ts.ends_with('Z'), "RFC 3339 in UTC: {ts}");

        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["target"], "floodgate::fetch");
        assert_eq!(lines[1]["url"], "https://example.test/drop.txt");
    }

    #[test]
    fn text_lines_with_and_without_timestamps() {
        let event = || tracing::info!(interface = "eth0", "attached");
        let stamped = capture(&settings(LogFormat::Text, "info", true), event);
        let bare = capture(&settings(LogFormat::Text, "info", false), event);
        let expected = format!("INFO {}: attached interface=\"eth0\"\n", module_path!());
        assert_eq!(bare.trim_start(), expected, "journald's line: no timestamp");
        assert!(stamped.ends_with(&expected), "{stamped}");
        let stamp = stamped.split_whitespace().next().unwrap();
        assert!(stamp.contains('T') && stamp.ends_with('Z'), "a timestamp first: {stamped}");
        assert!(!stamped.contains('\x1b') && !bare.contains('\x1b'), "no colours");
    }

    #[test]
    fn filters_by_target_and_level() {
        let out = capture(&settings(LogFormat::Text, "warn,floodgate::fetch=debug", false), || {
            tracing::info!("dropped: info elsewhere");
            tracing::debug!(target: "floodgate::fetch", "kept: debug of fetch");
            tracing::warn!("kept: warn");
        });
        assert!(!out.contains("dropped"), "{out}");
        assert!(out.contains("kept: debug of fetch") && out.contains("kept: warn"), "{out}");
    }

    #[test]
    fn a_bad_filter_names_its_origin() {
        let mut s = settings(LogFormat::Text, "info,floodgate=loud", false);
        s.filter_origin = "$FLOODGATE_LOG";
        let err = subscriber(&s, std::io::sink).err().expect("refused");
        assert!(
            err.to_string().starts_with("bad log filter 'info,floodgate=loud' (from $FLOODGATE_LOG)"),
            "{err}"
        );
    }

    #[test]
    fn filter_precedence() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            choose_filter(Some("debug"), s("warn"), s("error")),
            ("debug".into(), "the command line or config")
        );
        assert_eq!(choose_filter(None, s("warn"), s("error")), ("warn".into(), "$FLOODGATE_LOG"));
        assert_eq!(choose_filter(None, s(" "), s("error")), ("error".into(), "$RUST_LOG"));
        assert_eq!(choose_filter(None, None, s("")), ("info".into(), "the default"));
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(journal_stream_is("8:123456", 8, 123456));
        assert!(!journal_stream_is("8:123456", 8, 123457), "another stream: stderr was redirected");
        assert!(!journal_stream_is("8:123456", 9, 123456));
        assert!(!journal_stream_is("garbage", 8, 123456));
        assert!(!journal_stream_is("", 0, 0));
    }
}
