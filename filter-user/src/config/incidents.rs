//! `[interface.NAME.incidents]`: what opens an incident, what is sampled, who is told
//! (a hook, a webhook) and what is escalated, checked like the rest of the file.

use std::{ops::RangeInclusive, time::Duration};

use filter_common::{Reason, rules::Proto};
use toml::de::DeValue;

use super::{
    check::{Ctx, Table, Value, above_pps, limits, served_ports, syn_ports},
    model::{Escalate, Incidents, Policy, SynProxy},
};
use crate::{
    incident::{actions::check_program, detect::Thresholds},
    policy::{Ephemeral, policy_config},
    sources::parse_http_url,
};

/// Packets per second a threshold may name.
pub const THRESHOLD_PPS_RANGE: RangeInclusive<u64> = 1..=1_000_000_000;
/// Bits per second a threshold may name (up to 10 Tbit/s).
pub const THRESHOLD_BPS_RANGE: RangeInclusive<u64> = 1..=10_000_000_000_000;
/// How long a threshold stays crossed before an incident opens.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(2);
pub const HOLD_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(600));
/// How long every threshold stays uncrossed before the incident closes.
pub const DEFAULT_QUIET: Duration = Duration::from_secs(10);
pub const QUIET_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// 1 in this many frames per verdict reason is sampled.
pub const DEFAULT_SAMPLE_EVERY: u32 = 64;
pub const SAMPLE_EVERY_RANGE: RangeInclusive<u64> = 1..=1_000_000;
/// Samples per second at most, over all CPUs.
pub const DEFAULT_SAMPLE_MAX_PPS: u32 = 1000;
pub const SAMPLE_MAX_PPS_RANGE: RangeInclusive<u64> = 1..=100_000;

const KEYS: &[&str] = &[
    "pps",
    "bps",
    "dropped_pps",
    "syn_pps",
    "hold",
    "quiet",
    "sample_every",
    "sample_max_pps",
    "hook",
    "webhook",
    "escalate",
];
const THRESHOLD_KEYS: [&str; 4] = ["pps", "bps", "dropped_pps", "syn_pps"];
const ESCALATE_KEYS: &[&str] = &["syn_cookies", "syn_cookies_above_pps", "policy", "limits"];

/// The interface's own `[policy]` as far as the check got: escalations start from it.
#[derive(Clone, Copy)]
pub enum OwnPolicy<'a> {
    Absent,
    /// Written, with errors (already reported).
    Invalid,
    Valid(&'a Policy),
}

/// `path` is the section's (`interface.eth0.incidents`), `iface` the interface's.
pub fn incidents(ctx: &mut Ctx, path: &str, v: &Value, iface: &str, own: OwnPolicy) -> Option<Incidents> {
    let t = ctx.table(path, v, KEYS)?;
    let before = ctx.errors.len();
    if !THRESHOLD_KEYS.iter().any(|k| t.get(k).is_some()) {
        ctx.error(
            t.span.clone(),
            format!(
                "[{path}] needs at least one threshold: pps, bps, dropped_pps or syn_pps \
                 (e.g. dropped_pps = {{ any = 100000 }}), or leave the section out"
            ),
        );
    }
    let thresholds = thresholds(ctx, &t);
    let int = |ctx: &mut Ctx, key: &str, range: RangeInclusive<u64>, default: u32| match t.get(key) {
        Some(v) => ctx.integer(&t.key(key), v, range).map(|n| n as u32),
        None => Some(default),
    };
    let sample_every = int(ctx, "sample_every", SAMPLE_EVERY_RANGE, DEFAULT_SAMPLE_EVERY);
    let sample_max_pps = int(ctx, "sample_max_pps", SAMPLE_MAX_PPS_RANGE, DEFAULT_SAMPLE_MAX_PPS);
    let hook = t.get("hook").and_then(|v| hook(ctx, &t.key("hook"), v));
    let webhook = t.get("webhook").and_then(|v| webhook(ctx, &t.key("webhook"), v));
    let escalate = match t.get("escalate") {
        Some(v) => escalate(ctx, &t.key("escalate"), v, iface, own),
        None => Some(Escalate::default()),
    };
    if ctx.errors.len() > before {
        return None;
    }
    Some(Incidents {
        thresholds,
        sample_every: sample_every?,
        sample_max_pps: sample_max_pps?,
        hook,
        webhook,
        escalate: escalate?,
    })
}

fn thresholds(ctx: &mut Ctx, t: &Table) -> Thresholds {
    let int = |ctx: &mut Ctx, key: &str, range: RangeInclusive<u64>| {
        t.get(key).and_then(|v| ctx.integer(&t.key(key), v, range))
    };
    let mut th = Thresholds {
        pps: int(ctx, "pps", THRESHOLD_PPS_RANGE),
        bps: int(ctx, "bps", THRESHOLD_BPS_RANGE),
        syn_pps: int(ctx, "syn_pps", THRESHOLD_PPS_RANGE),
        hold: DEFAULT_HOLD,
        quiet: DEFAULT_QUIET,
        ..Default::default()
    };
    if let Some(v) = t.get("dropped_pps") {
        dropped(ctx, &t.key("dropped_pps"), v, &mut th);
    }
    if let Some(v) = t.get("hold") {
        th.hold = ctx.duration_within(&t.key("hold"), v, HOLD_RANGE).unwrap_or(DEFAULT_HOLD);
    }
    if let Some(v) = t.get("quiet") {
        th.quiet = ctx.duration_within(&t.key("quiet"), v, QUIET_RANGE).unwrap_or(DEFAULT_QUIET);
    }
    th
}

/// `dropped_pps = { blocklist = N, ..., any = N }`: per reason that drops, and all together.
fn dropped(ctx: &mut Ctx, path: &str, v: &Value, th: &mut Thresholds) {
    let reasons: Vec<Reason> = Reason::ALL.into_iter().filter(|r| r.drops()).collect();
    let keys: Vec<&str> = reasons.iter().map(|r| r.key()).chain(["any"]).collect();
    let Some(t) = ctx.table(path, v, &keys) else { return };
    if t.table.iter().next().is_none() {
        ctx.error(
            t.span.clone(),
            format!("{path}: names no reason: give e.g. {{ any = 100000 }}, or leave it out"),
        );
        return;
    }
    for r in reasons {
        if let Some(v) = t.get(r.key())
            && let Some(n) = ctx.integer(&t.key(r.key()), v, THRESHOLD_PPS_RANGE)
        {
            th.dropped_pps.push((r, n));
        }
    }
    th.dropped_any_pps = t.get("any").and_then(|v| ctx.integer(&t.key("any"), v, THRESHOLD_PPS_RANGE));
}

/// `["/usr/local/bin/notify", "ARG", ...]`: the program must be there when checked.
fn hook(ctx: &mut Ctx, key: &str, v: &Value) -> Option<Vec<String>> {
    let items = ctx.array(key, v)?;
    let Some(first) = items.first() else {
        ctx.error(
            v.span(),
            format!("{key}: empty: give the program and its arguments, e.g. [\"/usr/local/bin/notify\", \"--page\"]"),
        );
        return None;
    };
    let argv: Vec<String> = items.iter().filter_map(|i| ctx.string(key, i).map(str::to_string)).collect();
    if argv.len() < items.len() {
        return None;
    }
    check_program(&argv[0]).map_err(|e| ctx.error(first.span(), format!("{key}: {e}"))).ok()?;
    Some(argv)
}

fn webhook(ctx: &mut Ctx, key: &str, v: &Value) -> Option<String> {
    let text = ctx.string(key, v)?;
    parse_http_url(text).map_err(|e| ctx.error(v.span(), format!("{key}: {e}"))).ok()?;
    Some(text.to_string())
}

fn escalate(ctx: &mut Ctx, path: &str, v: &Value, iface: &str, own: OwnPolicy) -> Option<Escalate> {
    let t = ctx.table(path, v, ESCALATE_KEYS)?;
    let before = ctx.errors.len();
    let ports = t.get("syn_cookies").and_then(|v| cookie_ports(ctx, &t.key("syn_cookies"), v, iface, own));
    let above = above_pps(ctx, &t, "syn_cookies_above_pps");
    if let (Some(v), None) = (t.get("syn_cookies_above_pps"), t.get("syn_cookies")) {
        ctx.error(v.span(), format!("{}: needs syn_cookies", t.key("syn_cookies_above_pps")));
    }
    let policy = t.get("policy").and_then(|v| escalated_policy(ctx, &t.key("policy"), v, own));
    let limits = t.get("limits").and_then(|v| limits(ctx, &t.key("limits"), v));
    if ctx.errors.len() > before {
        return None;
    }
    let syn_cookies = match (ports, above) {
        (Some(ports), Some(above_pps)) => Some(SynProxy { ports, above_pps }),
        _ => None,
    };
    Some(Escalate { syn_cookies, policy, limits })
}

/// `syn_cookies = "80,443"`, or `true`: the TCP ports the interface's policy serves
/// (None and no error for `false`).
fn cookie_ports(ctx: &mut Ctx, key: &str, v: &Value, iface: &str, own: OwnPolicy) -> Option<Vec<(u16, u16)>> {
    match v.get_ref() {
        DeValue::Boolean(false) => None,
        DeValue::Boolean(true) => {
            let policy = match own {
                OwnPolicy::Valid(p) => p,
                OwnPolicy::Invalid => return None,
                OwnPolicy::Absent => {
                    ctx.error(
                        v.span(),
                        format!(
                            "{key} = true takes the TCP ports [{iface}.policy] serves, and there is no \
                             [{iface}.policy]: name the ports, e.g. {key} = \"80,443\""
                        ),
                    );
                    return None;
                }
            };
            let tcp: Vec<(u16, u16)> =
                policy.served.iter().filter(|s| s.proto == Proto::Tcp).map(|s| (s.lo, s.hi)).collect();
            if tcp.is_empty() {
                ctx.error(
                    v.span(),
                    format!(
                        "{key} = true takes the TCP ports [{iface}.policy] serves, and it serves none: \
                         name the ports, e.g. {key} = \"80,443\""
                    ),
                );
                return None;
            }
            Some(tcp)
        }
        DeValue::String(_) => syn_ports(ctx, key, v),
        _ => {
            ctx.wrong_type(key, v, "TCP ports (e.g. \"80,443\") or true");
            None
        }
    }
}

/// The served ports given, with the interface policy's ephemeral range and fragment
/// setting (the defaults without one).
fn escalated_policy(ctx: &mut Ctx, key: &str, v: &Value, own: OwnPolicy) -> Option<Policy> {
    let served = served_ports(ctx, key, v)?;
    let config = match own {
        OwnPolicy::Valid(p) => filter_common::rules::PolicyConfig { enforce: 1, ..p.config },
        OwnPolicy::Invalid => return None,
        OwnPolicy::Absent => match Ephemeral::Auto.resolve() {
            Ok(eph) => policy_config(true, eph, false),
            Err(e) => {
                ctx.error(v.span(), format!("{key}: {e}"));
                return None;
            }
        },
    };
    Some(Policy { config, served })
}
