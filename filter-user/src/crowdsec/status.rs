//! The bouncer's and the reporter's state as `floodgate status` and the metrics show
//! it. The service keeps it in memory (metrics) and in `RUNTIME/crowdsec.json`
//! (`status`, which runs as another process).

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub lapi_url: String,
    /// `starting` (no pull yet), `ok` (the last pull worked), `failing`.
    pub state: String,
    /// The last successful pull (Unix seconds) and how long it took, apply included.
    pub last_pull_unix: Option<f64>,
    pub last_pull_seconds: Option<f64>,
    pub last_error: Option<String>,
    /// Failed pulls in a row (the retry backs off with them).
    pub failing_for: u64,
    pub pulls: u64,
    pub pull_errors: u64,
    /// Enforceable decisions in force, and the distinct prefixes they ban.
    pub decisions: u64,
    pub prefixes: u64,
    /// Enforceable decisions received (new), deletions received, and entries written
    /// to blocklists (added, lengthened or lifted), since the service started.
    pub received: u64,
    pub deleted: u64,
    pub applied: u64,
    /// Decisions not enforced, by `reason=value` (`type=captcha`, `scope=country`,
    /// `origin=capi`, `value=invalid`).
    pub skipped: BTreeMap<String, u64>,
    /// Per interface: blocklist entries the bouncer holds.
    pub interfaces: BTreeMap<String, u64>,
    /// None: no reporter.
    pub report: Option<ReportStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportStatus {
    /// Alerts the LAPI accepted.
    pub sent: u64,
    /// Waiting to be sent.
    pub queued: u64,
    /// Left out: the same source already reported for as long, or the queue full.
    pub duplicates: u64,
    pub dropped: u64,
    /// Failed sends (each retried while the queue holds the alerts).
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_sent_unix: Option<f64>,
}

pub const FILE: &str = "crowdsec.json";

impl Status {
    pub fn save(&self, runtime: &Path) -> std::io::Result<()> {
        crate::atomic::write_json(&runtime.join(FILE), self)
    }

    /// The state the service of `runtime` saved last, if it runs a bouncer.
    pub fn load(runtime: &Path) -> Option<Self> {
        crate::atomic::read_json(&runtime.join(FILE)).ok().flatten()
    }

    /// One line per part, for `floodgate status`.
    pub fn text(&self, now_unix: f64) -> String {
        let g = |n: u64| crate::human::grouped(n);
        let mut s = format!("crowdsec bouncer: {} ({})", self.state, self.lapi_url);
        match (self.last_pull_unix, self.last_pull_seconds) {
            (Some(t), Some(d)) => s.push_str(&format!(
                "\n  last pull {:.0}s ago, took {:.3}s; {} decisions in force ({} prefixes)",
                (now_unix - t).max(0.0),
                d,
                g(self.decisions),
                g(self.prefixes)
            )),
            _ => s.push_str("\n  no successful pull yet"),
        }
        if let Some(e) = &self.last_error {
            s.push_str(&format!("\n  last error ({} failed pulls in a row): {e}", self.failing_for));
        }
        let held: Vec<String> = self.interfaces.iter().map(|(i, n)| format!("{i} {}", g(*n))).collect();
        if !held.is_empty() {
            s.push_str(&format!("\n  blocklist entries held: {}", held.join(", ")));
        }
        if !self.skipped.is_empty() {
            let sk: Vec<String> = self.skipped.iter().map(|(k, n)| format!("{k} {}", g(*n))).collect();
            s.push_str(&format!("\n  skipped: {}", sk.join(", ")));
        }
        if let Some(r) = &self.report {
            s.push_str(&format!(
                "\n  reporter: {} alerts sent, {} queued, {} duplicates, {} dropped, {} send errors",
                g(r.sent),
                g(r.queued),
                g(r.duplicates),
                g(r.dropped),
                g(r.errors)
            ));
            if let Some(e) = &r.last_error {
                s.push_str(&format!("\n  reporter's last error: {e}"));
            }
        }
        s
    }
}
