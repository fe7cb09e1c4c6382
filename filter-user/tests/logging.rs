//! The process-wide log set-up: `floodgate::logging::install` makes the subscriber the
//! global one and bridges `log` records (aya-log forwards the XDP program's events
//! through the `log` crate) into it. Global state: its own test binary, one test.

use std::sync::{Arc, Mutex};

use floodgate::logging::{self, LogFormat, LoggingError, Settings};
use serde_json::Value;

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

#[test]
fn log_records_reach_the_global_subscriber_as_json() {
    let settings = Settings {
        format: LogFormat::Json,
        filter: "info,filter_ebpf=debug".into(),
        filter_origin: "the test",
        ansi: false,
        timestamps: true,
    };
    let buf = Buffer::default();
    let w = buf.clone();
    logging::install(logging::subscriber(&settings, move || w.clone()).unwrap()).unwrap();

    // As aya-log forwards a record of the eBPF crate (its target is the program's module).
    log::debug!(target: "filter_ebpf", "auto-ban of 192.0.2.7 for 60s");
    log::debug!(target: "other", "below the filter");
    log::error!("a log error");
    tracing::info!(interface = "veth0", "adopted");

    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["level"], "DEBUG");
    assert_eq!(lines[0]["target"], "filter_ebpf");
    assert_eq!(lines[0]["message"], "auto-ban of 192.0.2.7 for 60s");
    assert_eq!(lines[1]["level"], "ERROR");
    assert_eq!(lines[1]["message"], "a log error");
    assert_eq!(lines[2]["interface"], "veth0");
    assert!(lines.iter().all(|l| l["timestamp"].is_string()), "{text}");

    // A second set-up in the same process is an error, not a silent no-op.
    let again = logging::init(LogFormat::Text, None);
    assert!(matches!(again, Err(LoggingError::AlreadyInstalled(_))), "{again:?}");
}
