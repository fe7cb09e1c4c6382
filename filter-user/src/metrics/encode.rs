//! What a scrape exports, and its text: a prometheus-client [`Collector`] over one
//! [`Snapshot`] (read from the maps at scrape time), encoded by prometheus-client and
//! served in Prometheus' classic text format (0.0.4), which `promtool check metrics`
//! checks and every Prometheus scrapes.
//!
//! Every metric is declared once in [`ALL`]; the encoder refuses (panics in tests,
//! see `every_family_is_declared`) to emit a name that is not declared there, and the
//! shipped Grafana dashboard is checked against the same list.

use std::fmt::Write as _;

use filter_common::{Reason, limit::Event};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

use super::{ServiceSample, read::InterfaceSample};

/// A metric's name as exported (counters with their `_total`), type and help text.
#[derive(Debug)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

macro_rules! defs {
    ($($id:ident: $kind:ident $name:literal $help:literal;)*) => {
        $(pub const $id: Def = Def { name: $name, kind: Kind::$kind, help: $help };)*
        /// Every metric floodgate exports.
        pub const ALL: &[&Def] = &[$(&$id),*];
    };
}

defs! {
    BUILD_INFO: Gauge "floodgate_build_info" "Always 1; the version label names the floodgate build.";
    SCRAPE_READ: Gauge "floodgate_scrape_read_duration_seconds" "Time this scrape spent reading the filters' maps.";
    IFACE_UP: Gauge "floodgate_interface_up" "1 if the filter's pinned maps could be read in this scrape, else 0.";
    IFACE_INFO: Gauge "floodgate_interface_info" "Always 1; the mode label tells how the XDP program is attached.";
    ATTACHED: Gauge "floodgate_interface_attached_timestamp_seconds" "When the filter was attached (Unix time).";
    PACKETS: Counter "floodgate_packets_total" "Packets seen by the filter, by verdict reason (the stats --json keys) and action (drop, pass, tx).";
    BYTES: Counter "floodgate_bytes_total" "Bytes of whole frames seen by the filter, by verdict reason and action.";
    WOULD_DROP: Counter "floodgate_would_drop_packets_total" "Packets a check in observe mode (watchlist, rule, policy, limits) would have dropped, by reason; they were passed.";
    RULE_PACKETS: Counter "floodgate_rule_packets_total" "Packets matched by each protocol/port rule.";
    RULE_BYTES: Counter "floodgate_rule_bytes_total" "Bytes of the frames matched by each protocol/port rule.";
    LIST_ENTRIES: Gauge "floodgate_list_entries" "Entries of each list per address family (hosts and prefixes).";
    LIST_CAPACITY: Gauge "floodgate_list_capacity_entries" "Capacity of each list per address family (attach --max-entries).";
    LIMITER_ENTRIES: Gauge "floodgate_limiter_table_entries" "Entries in the limiter's tables: rate (recent sources, LRU), heavy (over-limit sources), bans.";
    LIMITER_CAPACITY: Gauge "floodgate_limiter_table_capacity_entries" "Capacity of the limiter's tables.";
    TRACKED: Gauge "floodgate_limiter_tracked_sources" "Distinct sources the limiter tracks.";
    AUTOBANS_ACTIVE: Gauge "floodgate_autobans_active" "Auto-bans in force.";
    AUTOBANS: Counter "floodgate_autobans_total" "Auto-bans decided by the data path.";
    TABLE_FULL: Counter "floodgate_limiter_table_full_total" "Times a limiter table was full: a ban or an over-limit source that could not be stored.";
    SYNCOOKIE_ENABLED: Gauge "floodgate_syncookie_enabled" "1 if SYN cookies answer SYNs to protected ports (answered SYNs: floodgate_packets_total with reason syn_answered).";
    SYNCOOKIE_ACKS: Counter "floodgate_syncookie_acks_total" "ACKs netfilter's SYNPROXY rule checked for a cookie (its nftables counter; restarts when SYN cookies are enabled again).";
    RELOAD_OK: Gauge "floodgate_config_last_reload_successful" "1 if the last load or reload of the config file applied, else 0.";
    RELOAD_TIME: Gauge "floodgate_config_last_reload_success_timestamp_seconds" "When the config file was last applied (Unix time).";
    RELOADS: Counter "floodgate_config_reloads_total" "Loads and reloads of the config file, by result (success, failure).";
    SOURCE_UP: Gauge "floodgate_list_source_up" "1 if the last fetch of a URL list source succeeded (or was unchanged), else 0.";
    SOURCE_TIME: Gauge "floodgate_list_source_last_success_timestamp_seconds" "When a URL list source was last fetched successfully (Unix time).";
    SOURCE_ENTRIES: Gauge "floodgate_list_source_entries" "Entries of the last good copy of a URL list source.";
    SOURCE_PENDING: Gauge "floodgate_list_source_shrink_pending" "1 if a fetched copy that shrank too much is held back until reload --accept-shrink.";
    SOURCE_FAILURES: Counter "floodgate_list_source_failures_total" "Failed fetches of a URL list source (download, HTTP error or unparsable body).";
    CS_UP: Gauge "floodgate_crowdsec_lapi_up" "1 if the last pull of CrowdSec decisions from the LAPI succeeded, else 0.";
    CS_LAST_PULL: Gauge "floodgate_crowdsec_last_pull_success_timestamp_seconds" "When CrowdSec decisions were last pulled and applied (Unix time).";
    CS_PULL_SECONDS: Gauge "floodgate_crowdsec_last_pull_duration_seconds" "How long the last successful pull took, from the request to the decisions in force.";
    CS_PULLS: Counter "floodgate_crowdsec_pulls_total" "Pulls of the LAPI's decision stream, by result (success, failure).";
    CS_DECISIONS: Gauge "floodgate_crowdsec_decisions_in_force" "Enforceable CrowdSec decisions in force.";
    CS_RECEIVED: Counter "floodgate_crowdsec_decisions_received_total" "CrowdSec decisions received, by action (new: enforceable and taken; deleted).";
    CS_APPLIED: Counter "floodgate_crowdsec_entries_applied_total" "Blocklist entries the bouncer wrote (added, lengthened or lifted).";
    CS_SKIPPED: Counter "floodgate_crowdsec_decisions_skipped_total" "CrowdSec decisions not enforced, by reason (type, scope, origin, value) and its value.";
    CS_HELD: Gauge "floodgate_crowdsec_blocklist_entries" "Blocklist entries the CrowdSec bouncer holds, per interface.";
    CS_ALERTS: Counter "floodgate_crowdsec_alerts_total" "Auto-bans for the CrowdSec LAPI, by outcome (sent, duplicate, dropped).";
    CS_ALERTS_QUEUED: Gauge "floodgate_crowdsec_alerts_queued" "Auto-bans waiting to be sent to the CrowdSec LAPI.";
    CS_ALERT_ERRORS: Counter "floodgate_crowdsec_alert_errors_total" "Failed sends of alerts to the CrowdSec LAPI (each retried).";
}

/// Everything one scrape exports.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub version: &'static str,
    /// Each configured interface: what its maps held, or the error that kept them
    /// from being read.
    pub interfaces: Vec<(String, Result<InterfaceSample, String>)>,
    pub service: ServiceSample,
    pub read_seconds: f64,
}

/// What `floodgate_packets_total`'s action label says of a reason.
pub fn action(r: Reason) -> &'static str {
    if r == Reason::SynProxy {
        // Answered with XDP_TX: neither passed to the stack nor silently dropped.
        "tx"
    } else if r.drops() {
        "drop"
    } else {
        "pass"
    }
}

/// A label value, escaped as both text formats want (prometheus-client writes label
/// values as they are: an interface or URL with a quote would break the line).
#[derive(Clone, Debug)]
struct Esc(String);

impl EncodeLabelValue for Esc {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

type Labels = Vec<(&'static str, Esc)>;

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k, Esc(v.to_string()))).collect()
}

#[derive(Clone, Copy, Debug)]
enum Value {
    Count(u64),
    Int(i64),
    Float(f64),
}

/// Writes one metric family; a family without samples is left out altogether.
fn family(enc: &mut DescriptorEncoder, def: &Def, samples: Vec<(Labels, Value)>) -> std::fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let (name, ty) = match def.kind {
        // prometheus-client adds `_total` to a counter's samples itself.
        Kind::Counter => {
            (def.name.strip_suffix("_total").expect("a counter's name ends in _total"), MetricType::Counter)
        }
        Kind::Gauge => (def.name, MetricType::Gauge),
    };
    let mut m = enc.encode_descriptor(name, def.help, None, ty)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            // An empty label set would be written as `{}`.
            sample(&mut m, def, v)?;
        } else {
            sample(&mut m.encode_family(&labels)?, def, v)?;
        }
    }
    Ok(())
}

fn sample(m: &mut MetricEncoder, def: &Def, v: Value) -> std::fmt::Result {
    match (def.kind, v) {
        (Kind::Counter, Value::Count(c)) => m.encode_counter::<NoLabelSet, _, u64>(&c, None),
        (Kind::Gauge, Value::Int(i)) => m.encode_gauge(&i),
        (Kind::Gauge, Value::Float(x)) => m.encode_gauge(&x),
        (kind, v) => panic!("{}: a {kind:?} cannot hold {v:?}", def.name),
    }
}

fn bool_value(b: bool) -> Value {
    Value::Int(b as i64)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let enc = &mut enc;
        family(enc, &BUILD_INFO, vec![(labels([("version", self.version)]), Value::Int(1))])?;
        family(enc, &SCRAPE_READ, vec![(Vec::new(), Value::Float(self.read_seconds))])?;
        self.encode_interfaces(enc)?;
        self.service.encode(enc)
    }
}

impl Snapshot {
    fn encode_interfaces(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let read: Vec<&InterfaceSample> =
            self.interfaces.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
        let per = |f: &dyn Fn(&InterfaceSample) -> Vec<(Labels, Value)>| -> Vec<(Labels, Value)> {
            read.iter().flat_map(|s| f(s)).collect()
        };
        let iface = |s: &InterfaceSample| labels([("interface", &s.interface)]);
        let up =
            self.interfaces.iter().map(|(name, r)| (labels([("interface", name)]), bool_value(r.is_ok())));
        family(enc, &IFACE_UP, up.collect())?;
        family(
            enc,
            &IFACE_INFO,
            per(&|s| vec![(labels([("interface", &s.interface), ("mode", s.mode)]), Value::Int(1))]),
        )?;
        family(enc, &ATTACHED, per(&|s| vec![(iface(s), Value::Int(s.attached_at as i64))]))?;
        let by_reason = |bytes: bool| {
            per(&|s| {
                Reason::ALL
                    .iter()
                    .map(|&r| {
                        let c = s.totals.get(r);
                        let l =
                            labels([("interface", &s.interface), ("reason", r.key()), ("action", action(r))]);
                        (l, Value::Count(if bytes { c.bytes } else { c.packets }))
                    })
                    .collect()
            })
        };
        family(enc, &PACKETS, by_reason(false))?;
        family(enc, &BYTES, by_reason(true))?;
        family(
            enc,
            &WOULD_DROP,
            per(&|s| {
                Reason::OBSERVABLE
                    .iter()
                    .map(|&r| {
                        let l = labels([("interface", &s.interface), ("reason", r.key())]);
                        (l, Value::Count(s.would_drop.get(r).packets))
                    })
                    .collect()
            }),
        )?;
        let by_rule = |bytes: bool| {
            per(&|s| {
                s.rules
                    .iter()
                    .map(|r| {
                        let l =
                            labels([("interface", &s.interface), ("rule", &r.name), ("action", r.action)]);
                        (l, Value::Count(if bytes { r.hits.bytes } else { r.hits.packets }))
                    })
                    .collect()
            })
        };
        family(enc, &RULE_PACKETS, by_rule(false))?;
        family(enc, &RULE_BYTES, by_rule(true))?;
        let by_list = |capacity: bool| {
            per(&|s| {
                let Some(l) = s.lists else { return Vec::new() };
                let mut out = Vec::new();
                for (kind, list) in [(0, "blocklist"), (1, "allowlist")] {
                    for (fam, family) in [(0, "ipv4"), (1, "ipv6")] {
                        let v = if capacity { l.capacity } else { l.counts[kind][fam] };
                        let ls = labels([("interface", &s.interface), ("list", list), ("family", family)]);
                        out.push((ls, Value::Int(v as i64)));
                    }
                }
                out
            })
        };
        family(enc, &LIST_ENTRIES, by_list(false))?;
        family(enc, &LIST_CAPACITY, by_list(true))?;
        let by_table = |capacity: bool| {
            per(&|s| {
                s.tables
                    .iter()
                    .map(|t| {
                        let v = if capacity { t.capacity } else { t.entries };
                        (labels([("interface", &s.interface), ("table", t.table)]), Value::Int(v as i64))
                    })
                    .collect()
            })
        };
        family(enc, &LIMITER_ENTRIES, by_table(false))?;
        family(enc, &LIMITER_CAPACITY, by_table(true))?;
        family(enc, &TRACKED, per(&|s| vec![(iface(s), Value::Int(s.tracked_sources as i64))]))?;
        family(enc, &AUTOBANS_ACTIVE, per(&|s| vec![(iface(s), Value::Int(s.autobans_active as i64))]))?;
        family(enc, &AUTOBANS, per(&|s| vec![(iface(s), Value::Count(s.events[Event::AutoBan as usize]))]))?;
        let full = per(&|s| {
            [(Event::BanMapFull, "bans"), (Event::HeavyMapFull, "heavy")]
                .into_iter()
                .map(|(e, t)| {
                    (labels([("interface", &s.interface), ("table", t)]), Value::Count(s.events[e as usize]))
                })
                .collect()
        });
        family(enc, &TABLE_FULL, full)?;
        family(enc, &SYNCOOKIE_ENABLED, per(&|s| vec![(iface(s), bool_value(s.syncookies_enabled))]))?;
        let acks = per(&|s| s.syncookie_acks.map(|n| (iface(s), Value::Count(n))).into_iter().collect());
        family(enc, &SYNCOOKIE_ACKS, acks)
    }
}

impl ServiceSample {
    fn encode(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        if let Some(ok) = self.last_reload_ok {
            family(enc, &RELOAD_OK, vec![(Vec::new(), bool_value(ok))])?;
        }
        if let Some(t) = self.last_success_unix {
            family(enc, &RELOAD_TIME, vec![(Vec::new(), Value::Float(t))])?;
        }
        if self.reloads != [0, 0] {
            let r = vec![
                (labels([("result", "success")]), Value::Count(self.reloads[0])),
                (labels([("result", "failure")]), Value::Count(self.reloads[1])),
            ];
            family(enc, &RELOADS, r)?;
        }
        let per = |f: &dyn Fn(&super::SourceMetrics) -> Option<Value>| -> Vec<(Labels, Value)> {
            self.sources
                .iter()
                .filter_map(|s| {
                    let l = labels([("interface", &s.interface), ("list", &s.list), ("source", &s.source)]);
                    Some((l, f(s)?))
                })
                .collect()
        };
        family(enc, &SOURCE_UP, per(&|s| Some(bool_value(s.ok))))?;
        family(enc, &SOURCE_TIME, per(&|s| s.last_success_unix.map(|t| Value::Int(t as i64))))?;
        family(enc, &SOURCE_ENTRIES, per(&|s| Some(Value::Int(s.entries as i64))))?;
        family(enc, &SOURCE_PENDING, per(&|s| Some(bool_value(s.pending))))?;
        family(enc, &SOURCE_FAILURES, per(&|s| Some(Value::Count(s.failures))))?;
        match &self.crowdsec {
            Some(cs) => encode_crowdsec(cs, enc),
            None => Ok(()),
        }
    }
}

fn encode_crowdsec(cs: &crate::crowdsec::status::Status, enc: &mut DescriptorEncoder) -> std::fmt::Result {
    let one = |v: Value| vec![(Vec::new(), v)];
    family(enc, &CS_UP, one(bool_value(cs.state == "ok")))?;
    if let Some(t) = cs.last_pull_unix {
        family(enc, &CS_LAST_PULL, one(Value::Float(t)))?;
    }
    if let Some(d) = cs.last_pull_seconds {
        family(enc, &CS_PULL_SECONDS, one(Value::Float(d)))?;
    }
    let pulls = vec![
        (labels([("result", "success")]), Value::Count(cs.pulls)),
        (labels([("result", "failure")]), Value::Count(cs.pull_errors)),
    ];
    family(enc, &CS_PULLS, pulls)?;
    family(enc, &CS_DECISIONS, one(Value::Int(cs.decisions as i64)))?;
    let received = vec![
        (labels([("action", "new")]), Value::Count(cs.received)),
        (labels([("action", "deleted")]), Value::Count(cs.deleted)),
    ];
    family(enc, &CS_RECEIVED, received)?;
    family(enc, &CS_APPLIED, one(Value::Count(cs.applied)))?;
    let skipped = cs
        .skipped
        .iter()
        .map(|(k, n)| {
            let (reason, value) = k.split_once('=').unwrap_or((k, ""));
            (labels([("reason", reason), ("value", value)]), Value::Count(*n))
        })
        .collect();
    family(enc, &CS_SKIPPED, skipped)?;
    let held =
        cs.interfaces.iter().map(|(i, n)| (labels([("interface", i)]), Value::Int(*n as i64))).collect();
    family(enc, &CS_HELD, held)?;
    if let Some(r) = &cs.report {
        let alerts = vec![
            (labels([("outcome", "sent")]), Value::Count(r.sent)),
            (labels([("outcome", "duplicate")]), Value::Count(r.duplicates)),
            (labels([("outcome", "dropped")]), Value::Count(r.dropped)),
        ];
        family(enc, &CS_ALERTS, alerts)?;
        family(enc, &CS_ALERTS_QUEUED, one(Value::Int(r.queued as i64)))?;
        family(enc, &CS_ALERT_ERRORS, one(Value::Count(r.errors)))?;
    }
    Ok(())
}

/// The snapshot in Prometheus' classic text format.
pub fn encode(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut om = String::new();
    prometheus_client::encoding::text::encode(&mut om, &registry).expect("writing to a String cannot fail");
    to_text_format(&om)
}

/// OpenMetrics text (as prometheus-client writes it) to the classic format: a counter
/// family is named with its `_total` in HELP and TYPE, an info family becomes a gauge
/// named `_info`, and the OpenMetrics-only `# UNIT` and `# EOF` lines go. Samples and
/// label escaping are the same in both.
pub fn to_text_format(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').map_or("", |(_, text)| text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                kind => (name.to_string(), kind),
            };
            if let Some(text) = help.take() {
                let _ = writeln!(out, "# HELP {name} {text}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
        } else if !line.starts_with("# UNIT ") && line != "# EOF" {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
