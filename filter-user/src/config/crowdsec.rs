//! `[crowdsec]`: floodgate as a CrowdSec bouncer (decisions from a Local API go into
//! the blocklists) and, with `[crowdsec.report]`, as a reporter (its auto-bans go to
//! the LAPI as alerts), checked like the rest of the file. Secrets stay in files the
//! config names: the check looks at those files, the service reads them.

use std::{path::PathBuf, time::Duration};

use super::{
    check::{Ctx, Value},
    model::{CrowdSec, CrowdSecReport, Scope},
};
use crate::sources::parse_http_url;
use filter_common::cidr::echo;

pub const DEFAULT_POLL: Duration = Duration::from_secs(10);
pub const POLL_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
pub const DEFAULT_ALERTS_PER_MINUTE: u32 = 120;
pub const DEFAULT_ALERT_QUEUE: u32 = 10_000;

const KEYS: &[&str] = &[
    "lapi_url",
    "api_key_file",
    "ca_file",
    "cert_file",
    "key_file",
    "poll",
    "types",
    "scopes",
    "skip_origins",
    "interfaces",
    "report",
];
const REPORT_KEYS: &[&str] = &["credentials_file", "max_alerts_per_minute", "queue"];

/// `[crowdsec]`; `ifaces` are the interfaces the file names (`interfaces` must be
/// among them).
pub fn crowdsec(ctx: &mut Ctx, v: &Value, ifaces: &[String]) -> Option<CrowdSec> {
    let t = ctx.table("crowdsec", v, KEYS)?;
    let before = ctx.errors.len();
    let lapi_url = match t.get("lapi_url") {
        Some(v) => ctx.string("crowdsec.lapi_url", v).and_then(|text| match parse_http_url(text) {
            Ok(u) => Some(u.to_string()),
            Err(e) => {
                ctx.error(v.span(), format!("crowdsec.lapi_url: {e}"));
                None
            }
        }),
        None => {
            ctx.error(
                t.span.clone(),
                "[crowdsec] needs lapi_url, e.g. lapi_url = \"http://127.0.0.1:8080/\"",
            );
            None
        }
    };
    let file = |ctx: &mut Ctx, key: &str| t.get(key).and_then(|v| secret_file(ctx, &t.key(key), v));
    let api_key_file = file(ctx, "api_key_file");
    let ca_file = file(ctx, "ca_file");
    let cert_file = file(ctx, "cert_file");
    let key_file = file(ctx, "key_file");
    if cert_file.is_some() != key_file.is_some() {
        ctx.error(
            t.span.clone(),
            "crowdsec: cert_file and key_file go together (a client certificate and its key)",
        );
    }
    if t.get("api_key_file").is_none() && t.get("cert_file").is_none() {
        ctx.error(
            t.span.clone(),
            "[crowdsec] needs api_key_file (a file holding the key `cscli bouncers add NAME` printed) \
             or cert_file and key_file (TLS authentication)",
        );
    }
    if let Some(url) = &lapi_url
        && url.starts_with("http://")
        && (t.get("ca_file").is_some() || t.get("cert_file").is_some())
    {
        ctx.error(
            t.get("lapi_url").map_or(t.span.clone(), |v| v.span()),
            "crowdsec.lapi_url: ca_file and cert_file need an https:// URL",
        );
    }
    let poll = match t.get("poll") {
        Some(v) => ctx.duration_within("crowdsec.poll", v, POLL_RANGE),
        None => Some(DEFAULT_POLL),
    };
    let words = |ctx: &mut Ctx, key: &str| -> Option<Vec<(String, std::ops::Range<usize>)>> {
        let v = t.get(key)?;
        let items = ctx.array(&t.key(key), v)?;
        let mut out = Vec::new();
        for item in items {
            if let Some(s) = ctx.string(&t.key(key), item) {
                if s.trim().is_empty() {
                    ctx.error(item.span(), format!("crowdsec.{key}: an empty string"));
                } else {
                    out.push((s.trim().to_ascii_lowercase(), item.span()));
                }
            }
        }
        Some(out)
    };
    let types = match words(ctx, "types") {
        Some(list) if list.is_empty() => {
            ctx.error(
                t.get("types").map_or(0..0, |v| v.span()),
                "crowdsec.types: empty: nothing would be enforced",
            );
            None
        }
        Some(list) => Some(list.into_iter().map(|(w, _)| w).collect()),
        None => Some(vec!["ban".to_string()]),
    };
    let scopes = match words(ctx, "scopes") {
        Some(list) => {
            let mut out = Vec::new();
            for (w, span) in list {
                match w.as_str() {
                    "ip" => out.push(Scope::Ip),
                    "range" => out.push(Scope::Range),
                    other => ctx.error(
                        span,
                        format!(
                            "crowdsec.scopes: '{}' cannot be enforced by source address; expected ip, range",
                            echo(other)
                        ),
                    ),
                }
            }
            if out.is_empty() && ctx.errors.len() == before {
                ctx.error(
                    t.get("scopes").map_or(0..0, |v| v.span()),
                    "crowdsec.scopes: empty: nothing would be enforced",
                );
            }
            out.dedup();
            out
        }
        None => vec![Scope::Ip, Scope::Range],
    };
    let skip_origins = words(ctx, "skip_origins").unwrap_or_default().into_iter().map(|(w, _)| w).collect();
    let mut interfaces = Vec::new();
    for (name, span) in words_raw(ctx, &t, "interfaces") {
        if ifaces.contains(&name) {
            interfaces.push(name);
        } else {
            ctx.error(
                span,
                format!("crowdsec.interfaces: '{}' is no [interface.NAME] of this file", echo(&name)),
            );
        }
    }
    let report = t.get("report").and_then(|v| report(ctx, v));
    if ctx.errors.len() > before {
        return None;
    }
    Some(CrowdSec {
        lapi_url: lapi_url?,
        api_key_file,
        ca_file,
        cert_file,
        key_file,
        poll: poll?,
        types: types?,
        scopes,
        skip_origins,
        interfaces,
        report,
    })
}

/// An array of strings as written (interface names are case-sensitive).
fn words_raw(ctx: &mut Ctx, t: &super::check::Table, key: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let Some(v) = t.get(key) else { return Vec::new() };
    let Some(items) = ctx.array(&t.key(key), v) else { return Vec::new() };
    items.iter().filter_map(|i| ctx.string(&t.key(key), i).map(|s| (s.to_string(), i.span()))).collect()
}

fn report(ctx: &mut Ctx, v: &Value) -> Option<CrowdSecReport> {
    let t = ctx.table("crowdsec.report", v, REPORT_KEYS)?;
    let before = ctx.errors.len();
    let credentials_file = match t.get("credentials_file") {
        Some(v) => secret_file(ctx, "crowdsec.report.credentials_file", v),
        None => {
            ctx.error(
                t.span.clone(),
                "[crowdsec.report] needs credentials_file (the file `cscli machines add NAME --auto -f FILE` writes)",
            );
            None
        }
    };
    let int = |ctx: &mut Ctx, key: &str, range, default: u32| match t.get(key) {
        Some(v) => ctx.integer(&t.key(key), v, range).map(|n| n as u32),
        None => Some(default),
    };
    let per_minute = int(ctx, "max_alerts_per_minute", 1..=60_000, DEFAULT_ALERTS_PER_MINUTE);
    let queue = int(ctx, "queue", 1..=1_000_000, DEFAULT_ALERT_QUEUE);
    if ctx.errors.len() > before {
        return None;
    }
    Some(CrowdSecReport {
        credentials_file: credentials_file?,
        max_alerts_per_minute: per_minute?,
        queue: queue?,
    })
}

/// A path to a file holding a secret or a certificate: relative to the config's
/// directory; it must exist and be a file. Its content is read by the service (it may
/// be readable by root only, and `config check` needs no root).
fn secret_file(ctx: &mut Ctx, key: &str, v: &Value) -> Option<PathBuf> {
    let text = ctx.string(key, v)?;
    let path = ctx.base.join(text);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Some(path),
        Ok(_) => {
            ctx.error(v.span(), format!("{key}: {} is not a file", path.display()));
            None
        }
        Err(e) => {
            ctx.error(v.span(), format!("{key}: {}: {e}", path.display()));
            None
        }
    }
}
