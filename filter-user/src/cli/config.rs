//! `config check`: read and check a config file, apply nothing.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use filter_common::cidr::{echo, list_lines};
use floodgate::config::{self, Config, ConfigError, Incidents, Interface, ListSpec};
use serde::Serialize;

use super::{Exit, Format, output::print_json};

/// The exit status of `config check` when the file has errors (1 is any other failure,
/// 2 a command-line error).
pub const EXIT_INVALID: u8 = 3;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check a config file: every error as FILE:LINE:COLUMN: reason, nothing applied.
    ///
    /// Reads the file and every list file it names (globs expanded, each file read
    /// whole); URLs are checked as URLs, not fetched. Needs no root and no attached
    /// filter. Exit status: 0 when the file is good, 3 when it has errors (one per line
    /// on stderr, or in the JSON), 1 for any other failure.
    ///
    /// Example: floodgate config check /etc/floodgate/floodgate.toml
    Check {
        /// The config file, e.g. /etc/floodgate/floodgate.toml.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        format: Format,
    },
}

/// The entries of a list's sources, as far as they can be counted without fetching.
#[derive(Serialize)]
struct ListSummary {
    entries: usize,
    files: usize,
    file_entries: usize,
    globs: usize,
    urls: usize,
}

impl ListSummary {
    fn new(l: &ListSpec) -> Self {
        // The check read them a moment ago; counting again keeps the model free of counts.
        let file_entries = l
            .files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|text| list_lines(&text).count())
            .sum();
        ListSummary {
            entries: l.entries.len(),
            files: l.files.len(),
            file_entries,
            globs: l.globs.len(),
            urls: l.urls.len(),
        }
    }

    fn text(&self) -> String {
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut parts = vec![plural(self.entries, "entry", "entries")];
        if self.files > 0 {
            parts.push(format!(
                "{} ({})",
                plural(self.files, "file", "files"),
                plural(self.file_entries, "entry", "entries")
            ));
        }
        if self.urls > 0 {
            parts.push(plural(self.urls, "url", "urls"));
        }
        parts.join(" + ")
    }
}

/// What opens an incident and what is done then.
#[derive(Serialize)]
struct IncidentsSummary {
    /// `pps > 500000`, `dropped_pps.any > 50000`, ...
    thresholds: Vec<String>,
    hook: bool,
    webhook: bool,
    /// The escalations: `syn_cookies`, `policy`, `limits`.
    escalate: Vec<&'static str>,
}

impl IncidentsSummary {
    fn new(i: &Incidents) -> Self {
        let e = &i.escalate;
        let escalate = [
            ("syn_cookies", e.syn_cookies.is_some()),
            ("policy", e.policy.is_some()),
            ("limits", e.limits.is_some()),
        ];
        IncidentsSummary {
            thresholds: i.thresholds.describe(),
            hook: i.hook.is_some(),
            webhook: i.webhook.is_some(),
            escalate: escalate.into_iter().filter(|(_, on)| *on).map(|(name, _)| name).collect(),
        }
    }

    /// `pps > 500000, dropped_pps.any > 50000; tells hook, webhook; escalates limits`.
    fn text(&self) -> String {
        let mut parts = vec![self.thresholds.join(", ")];
        let tells: Vec<&str> = [("hook", self.hook), ("webhook", self.webhook)]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n)
            .collect();
        if !tells.is_empty() {
            parts.push(format!("tells {}", tells.join(", ")));
        }
        if !self.escalate.is_empty() {
            parts.push(format!("escalates {}", self.escalate.join(", ")));
        }
        parts.join("; ")
    }
}

/// One interface of `config check`'s summary.
#[derive(Serialize)]
struct InterfaceSummary {
    name: String,
    mode: &'static str,
    max_entries: u32,
    max_sources: u32,
    blocklist: ListSummary,
    allowlist: ListSummary,
    rules: usize,
    limits: bool,
    policy: bool,
    synproxy: bool,
    /// None: no incident detection.
    incidents: Option<IncidentsSummary>,
}

impl InterfaceSummary {
    fn new(i: &Interface) -> Self {
        InterfaceSummary {
            name: i.name.clone(),
            mode: match i.mode {
                floodgate::loader::Mode::Auto => "auto",
                floodgate::loader::Mode::Native => "native",
                floodgate::loader::Mode::Skb => "skb",
            },
            max_entries: i.capacity.entries,
            max_sources: i.capacity.sources,
            blocklist: ListSummary::new(&i.blocklist),
            allowlist: ListSummary::new(&i.allowlist),
            rules: i.rules.len(),
            limits: i.limits.is_some(),
            policy: i.policy.is_some(),
            synproxy: i.synproxy.is_some(),
            incidents: i.incidents.as_ref().map(IncidentsSummary::new),
        }
    }

    fn text(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        let incidents = match &self.incidents {
            Some(i) => format!("on ({})", i.text()),
            None => "off".to_string(),
        };
        format!(
            "{}: mode {}; blocklist {}; allowlist {}; {} rule{}; limits {}; policy {}; synproxy {}; incidents {}",
            echo(&self.name),
            self.mode,
            self.blocklist.text(),
            self.allowlist.text(),
            self.rules,
            if self.rules == 1 { "" } else { "s" },
            on(self.limits),
            on(self.policy),
            on(self.synproxy),
            incidents
        )
    }
}

/// `config check --json`.
#[derive(Serialize)]
struct CheckReport<'a> {
    file: String,
    ok: bool,
    errors: &'a [ConfigError],
    interfaces: Vec<InterfaceSummary>,
}

fn check(file: &Path, json: bool) -> anyhow::Result<()> {
    let result = config::load(file);
    let (errors, interfaces) = match &result {
        Ok(Config { interfaces, .. }) => (&[][..], interfaces.iter().map(InterfaceSummary::new).collect()),
        Err(e) => (&e.0[..], Vec::new()),
    };
    if json {
        print_json(&CheckReport {
            file: file.display().to_string(),
            ok: result.is_ok(),
            errors,
            interfaces,
        })?;
    } else if result.is_ok() {
        println!("{}: ok", echo(&file.display().to_string()));
        if interfaces.is_empty() {
            println!("  no interfaces");
        }
        for i in &interfaces {
            println!("  {}", i.text());
        }
    } else {
        for e in errors {
            eprintln!("{e}");
        }
    }
    if result.is_err() {
        return Err(Exit(EXIT_INVALID).into());
    }
    Ok(())
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check { file, format } => check(&file, format.json),
    }
}
