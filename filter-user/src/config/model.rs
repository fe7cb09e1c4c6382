//! The desired state a config file describes, after every check passed: what the
//! service converges the kernel to. Parsing and checking live in the sibling modules;
//! applying it lives in `crate::reconcile`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use filter_common::limit::LimitConfig;
use ipnet::IpNet;

use crate::{loader::Capacity, loader::Mode, policy::Served, rules::RuleSpec};

/// A whole config file.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub service: Service,
    pub interfaces: Vec<Interface>,
    /// None: no CrowdSec bouncer.
    pub crowdsec: Option<CrowdSec>,
}

/// `[crowdsec]`: decisions of a CrowdSec Local API enforced in the blocklists.
#[derive(Clone, Debug, PartialEq)]
pub struct CrowdSec {
    /// The LAPI's base URL (`http://127.0.0.1:8080/`).
    pub lapi_url: String,
    /// Holds the bouncer's API key (`cscli bouncers add NAME`).
    pub api_key_file: Option<PathBuf>,
    /// CA certificate(s), PEM, trusted for the LAPI's TLS certificate (beside the
    /// Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, PEM (TLS authentication).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// How often deltas are pulled.
    pub poll: Duration,
    /// Decision types enforced (lowercase; default `ban`).
    pub types: Vec<String>,
    pub scopes: Vec<Scope>,
    /// Decisions of these origins are skipped (lowercase: `cscli`, `crowdsec`, `capi`, `lists`, ...).
    pub skip_origins: Vec<String>,
    /// The interfaces whose blocklists take the decisions; empty: every interface of the file.
    pub interfaces: Vec<String>,
    /// None: auto-bans are not reported.
    pub report: Option<CrowdSecReport>,
}

/// The decision scopes floodgate enforces: they name source addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Ip = 0,
    Range = 1,
}

impl Scope {
    pub const fn name(self) -> &'static str {
        match self {
            Scope::Ip => "Ip",
            Scope::Range => "Range",
        }
    }
}

/// `[crowdsec.report]`: auto-bans sent to the LAPI as alerts with a ban decision.
#[derive(Clone, Debug, PartialEq)]
pub struct CrowdSecReport {
    /// Machine credentials: `url`, `login`, `password` (as `cscli machines add -f` writes them).
    pub credentials_file: PathBuf,
    pub max_alerts_per_minute: u32,
    /// Alerts waiting while the LAPI is down, at most.
    pub queue: u32,
}

impl CrowdSec {
    /// Whether `iface`'s blocklist takes the decisions.
    pub fn covers(&self, iface: &str) -> bool {
        self.interfaces.is_empty() || self.interfaces.iter().any(|i| i == iface)
    }
}

/// Settings of the process rather than of a filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Where the Prometheus endpoint listens; None: no endpoint.
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// Level of the data path's own events (aya-log); None: off (pruned by the verifier).
    pub bpf_log: Option<BpfLogLevel>,
    /// Where fetched URL lists are cached (survives reboots).
    pub state_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BpfLogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The desired state of one interface's filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Interface {
    pub name: String,
    pub mode: Mode,
    pub capacity: Capacity,
    pub blocklist: ListSpec,
    pub allowlist: ListSpec,
    /// A blocklist in observe mode: counted under would_drop.blocklist, passed.
    pub watchlist: ListSpec,
    /// None: no limits (as `limit clear`).
    pub limits: Option<LimitConfig>,
    /// Rules in order, presets already expanded; every rule has a unique name.
    pub rules: Vec<RuleSpec>,
    /// None: no served-ports policy (as `policy clear`).
    pub policy: Option<Policy>,
    /// None: SYN cookies off.
    pub synproxy: Option<SynProxy>,
    /// None: no incident detection (and no sampling) on this interface.
    pub incidents: Option<Incidents>,
}

/// `[interface.NAME.incidents]`: when a flood becomes an incident, what is sampled,
/// and what is done when one opens and closes.
#[derive(Clone, Debug, PartialEq)]
pub struct Incidents {
    /// Any one crossed for `hold` opens an incident; all uncrossed for `quiet` close it.
    pub thresholds: crate::incident::detect::Thresholds,
    /// Sample 1 in this many frames per verdict reason (the evidence and the profile).
    pub sample_every: u32,
    /// At most this many samples per second over all CPUs.
    pub sample_max_pps: u32,
    /// Run on open and close with the incident as JSON on stdin and FLOODGATE_* in the
    /// environment: the program and its arguments (absolute program path).
    pub hook: Option<Vec<String>>,
    /// POSTed the incident as JSON on open and close.
    pub webhook: Option<String>,
    /// Turned on when an incident opens and undone when it closes.
    pub escalate: Escalate,
}

/// The built-in escalations. Each is undone when the incident closes, back to what the
/// config (as last reloaded) says.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Escalate {
    /// SYN cookies for these TCP ports (the policy's served TCP ports when written
    /// `syn_cookies = true`).
    pub syn_cookies: Option<SynProxy>,
    /// This served-ports policy enforced.
    pub policy: Option<Policy>,
    /// These (stricter) limits.
    pub limits: Option<LimitConfig>,
}

/// The lists a config fills, by their config keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListName {
    Blocklist,
    Allowlist,
    Watchlist,
}

impl ListName {
    pub const ALL: [ListName; 3] = [ListName::Blocklist, ListName::Allowlist, ListName::Watchlist];

    pub const fn name(self) -> &'static str {
        match self {
            ListName::Blocklist => "blocklist",
            ListName::Allowlist => "allowlist",
            ListName::Watchlist => "watchlist",
        }
    }
}

impl Interface {
    /// The sources of list `name`.
    pub fn list(&self, name: ListName) -> &ListSpec {
        match name {
            ListName::Blocklist => &self.blocklist,
            ListName::Allowlist => &self.allowlist,
            ListName::Watchlist => &self.watchlist,
        }
    }
}

/// One list's sources. Entries from every source together make the list's config part;
/// what an operator adds from the command line is kept apart and survives reloads.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ListSpec {
    /// Entries written in the config file itself.
    pub entries: Vec<IpNet>,
    /// Local list files, globs already expanded at check time (each file checked whole):
    /// every file to read, plain paths and glob matches, each once, relative paths
    /// joined to the config file's directory.
    pub files: Vec<PathBuf>,
    /// Globs as written but joined to the config file's directory (for messages; a
    /// reload loads the config again, which expands them again: a new file counts).
    pub globs: Vec<String>,
    pub urls: Vec<UrlSource>,
}

/// A list fetched over HTTP(S) and refreshed.
#[derive(Clone, Debug, PartialEq)]
pub struct UrlSource {
    pub url: String,
    pub refresh: Duration,
    /// A fetch that would remove more than this fraction (0..=1) of the source's entries
    /// is held back until `floodgate reload --accept-shrink`.
    pub max_shrink: f64,
    pub format: ListFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ListFormat {
    /// One address or CIDR per line; `#` and `;` comments (Spamhaus DROP/EDROP, FireHOL netset).
    #[default]
    Auto,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub config: filter_common::rules::PolicyConfig,
    pub served: Vec<Served>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SynProxy {
    pub ports: Vec<(u16, u16)>,
    pub above_pps: u32,
}
