//! Reading a config file into the model. The TOML is parsed into a tree that keeps
//! every key's and value's position ([`DeTable`]), then walked by hand rather than
//! through serde: serde stops at the first error, and `config check` reports them all.

use std::{
    net::SocketAddr,
    ops::{Range, RangeInclusive},
    path::{Path, PathBuf},
    time::Duration,
};

use filter_common::cidr::{echo, parse_cidr};
use toml::{
    Spanned,
    de::{DeString, DeTable, DeValue},
};

use super::{
    error::{ConfigError, ConfigErrors},
    incidents::{self, OwnPolicy},
    model::*,
    sources,
};
use crate::{
    duration::{parse_duration, parse_within},
    limits::{BPS_RANGE, BadLimits, LimitParams, PPS_RANGE},
    loader::{Capacity, MAX_MAX_ENTRIES, Mode},
    pins::check_iface_name,
    policy::{Ephemeral, Served, parse_serve, policy_config},
    rules::{RuleError, RuleSpec, reflection_preset},
    synproxy::parse_ports,
};

pub type Value<'i> = Spanned<DeValue<'i>>;

/// Where the service keeps its state (URL lists' cache) unless `service.state_dir` says.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/floodgate";
/// The Prometheus endpoint unless `metrics.listen` says: loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9669";
/// A URL list's refresh interval unless `refresh` says, and the shortest accepted.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
pub const MIN_REFRESH: Duration = Duration::from_secs(60);
/// The fraction of a URL list a fetch may remove before it is held back.
pub const DEFAULT_MAX_SHRINK: f64 = 0.5;
/// The rule presets a config may name, as `rule preset` takes them.
pub const PRESETS: &[&str] = &["reflection"];

/// The position bookkeeping and the errors found so far.
pub struct Ctx<'s> {
    file: String,
    src: &'s str,
    line_starts: Vec<usize>,
    /// Relative list paths are relative to the config file's directory.
    pub base: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl<'s> Ctx<'s> {
    pub fn new(path: &Path, src: &'s str) -> Self {
        let line_starts = std::iter::once(0).chain(src.match_indices('\n').map(|(i, _)| i + 1)).collect();
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ctx { file: path.display().to_string(), src, line_starts, base, errors: Vec::new() }
    }

    /// Line and column (from 1; the column in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column = self.src.get(start..offset).map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }

    pub fn error(&mut self, span: Range<usize>, reason: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.errors.push(ConfigError { file: self.file.clone(), line, column, reason: reason.into() });
    }

    /// An error in another file (a bad line of a list file).
    pub fn error_at(&mut self, file: &Path, line: usize, column: usize, reason: impl Into<String>) {
        self.errors.push(ConfigError {
            file: file.display().to_string(),
            line,
            column,
            reason: reason.into(),
        });
    }

    fn finish(mut self) -> ConfigErrors {
        // Config file first, then list files; each in order of position.
        let config_file = self.file.clone();
        self.errors.sort_by(|a, b| {
            (a.file != config_file, &a.file, a.line, a.column).cmp(&(
                b.file != config_file,
                &b.file,
                b.line,
                b.column,
            ))
        });
        ConfigErrors(self.errors)
    }

    // Typed values. Each reports a wrong type at the value and returns None.

    pub fn wrong_type(&mut self, key: &str, v: &Value, expected: &str) {
        let found = v.get_ref().type_str();
        let article = if found.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        self.error(v.span(), format!("{key}: expected {expected}, found {article} {found}"));
    }

    pub fn string<'v>(&mut self, key: &str, v: &'v Value) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s),
            _ => {
                self.wrong_type(key, v, "a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, key: &str, v: &Value) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(key, v, "true or false");
                None
            }
        }
    }

    pub fn integer(&mut self, key: &str, v: &Value, range: RangeInclusive<u64>) -> Option<u64> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.wrong_type(key, v, "an integer");
            return None;
        };
        let n = i128::from_str_radix(i.as_str(), i.radix()).ok();
        match n.and_then(|n| u64::try_from(n).ok()).filter(|n| range.contains(n)) {
            Some(n) => Some(n),
            None => {
                let text = echo(&self.src[v.span()]);
                self.error(
                    v.span(),
                    format!("{key} is {text}, out of range {}..={}", range.start(), range.end()),
                );
                None
            }
        }
    }

    /// An integer or a float.
    pub fn number(&mut self, key: &str, v: &Value) -> Option<f64> {
        match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok().map(|n| n as f64),
            DeValue::Float(f) => f.as_str().parse().ok(),
            _ => {
                self.wrong_type(key, v, "a number");
                None
            }
        }
    }

    pub fn array<'v, 'i>(&mut self, key: &str, v: &'v Value<'i>) -> Option<&'v [Value<'i>]> {
        match v.get_ref() {
            DeValue::Array(a) => Some(a),
            _ => {
                self.wrong_type(key, v, "an array");
                None
            }
        }
    }

    pub fn duration(&mut self, key: &str, v: &Value) -> Option<Duration> {
        let text = self.string(key, v)?;
        parse_duration(text).map_err(|e| self.error(v.span(), format!("{key}: {e}"))).ok()
    }

    /// A duration from `min` to `max`.
    pub fn duration_within(
        &mut self,
        key: &str,
        v: &Value,
        (min, max): (Duration, Duration),
    ) -> Option<Duration> {
        let text = self.string(key, v)?;
        parse_within(text, min, max).map_err(|e| self.error(v.span(), format!("{key}: {e}"))).ok()
    }

    /// One of fixed words.
    pub fn choice<T: Copy>(&mut self, key: &str, v: &Value, options: &[(&str, T)]) -> Option<T> {
        let text = self.string(key, v)?;
        match options.iter().find(|(name, _)| *name == text) {
            Some((_, t)) => Some(*t),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.error(
                    v.span(),
                    format!("{key}: unknown value '{}'; expected {}", echo(text), names.join(", ")),
                );
                None
            }
        }
    }

    /// A table whose keys must all be in `allowed`; None (reported) when `v` is no table.
    pub fn table<'v, 'i>(&mut self, path: &str, v: &'v Value<'i>, allowed: &[&str]) -> Option<Table<'v, 'i>> {
        match v.get_ref() {
            DeValue::Table(t) => {
                self.known_keys(path, t, allowed);
                Some(Table { path: path.to_string(), span: v.span(), table: t })
            }
            _ => {
                self.wrong_type(path, v, "a table");
                None
            }
        }
    }

    fn known_keys(&mut self, path: &str, t: &DeTable, allowed: &[&str]) {
        for (k, _) in t.iter() {
            if !allowed.contains(&k.get_ref().as_ref()) {
                let place =
                    if path.is_empty() { "at the top level".to_string() } else { format!("in [{path}]") };
                self.error(
                    k.span(),
                    format!(
                        "unknown key '{}' {place}; expected one of {}",
                        echo(k.get_ref()),
                        allowed.join(", ")
                    ),
                );
            }
        }
    }
}

/// A table being read: its dotted path (for messages), where it starts, its keys.
pub struct Table<'v, 'i> {
    pub path: String,
    pub span: Range<usize>,
    pub table: &'v DeTable<'i>,
}

impl<'v, 'i> Table<'v, 'i> {
    pub fn get(&self, key: &str) -> Option<&'v Value<'i>> {
        self.table.get(key)
    }

    /// The dotted path of one of its keys.
    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }
}

/// A key as TOML writes it: bare when it can be, quoted otherwise (`"eth0.5"`).
fn key_text(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        k.to_string()
    } else {
        format!("\"{}\"", echo(k).replace('"', "\\\""))
    }
}

const TOP_KEYS: &[&str] = &["service", "metrics", "log", "interface", "crowdsec"];
const INTERFACE_KEYS: &[&str] = &[
    "mode",
    "max_entries",
    "max_sources",
    "rule_presets",
    "blocklist",
    "allowlist",
    "watchlist",
    "limits",
    "rule",
    "policy",
    "synproxy",
    "incidents",
];

/// Checks a whole config file; `path` names it in errors and gives the directory
/// relative list paths start from.
pub fn check(path: &Path, src: &str) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx::new(path, src);
    let (root, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        // The tree after a syntax error is a guess: report the syntax and stop there.
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            let reason = match e.message() {
                "duplicate key" => format!(
                    "duplicate key '{}': a key or table is defined once (an interface has one [interface.NAME])",
                    echo(&src[span.clone()])
                ),
                m => format!("TOML syntax: {}", m.trim()),
            };
            ctx.error(span, reason);
        }
        return Err(ctx.finish());
    }
    let root = root.into_inner();
    ctx.known_keys("", &root, TOP_KEYS);
    let service = service(&mut ctx, &root);
    let mut interfaces = Vec::new();
    if let Some(v) = root.get("interface") {
        match v.get_ref() {
            DeValue::Table(t) => {
                // In file order (the tree keeps keys sorted).
                let mut named: Vec<_> = t.iter().collect();
                named.sort_by_key(|(_, v)| v.span().start);
                for (name, v) in named {
                    interfaces.push(interface(&mut ctx, name, v));
                }
            }
            _ => ctx.wrong_type("interface", v, "a table of interfaces ([interface.NAME])"),
        }
    }
    let names: Vec<String> = interfaces.iter().map(|i| i.name.clone()).collect();
    let crowdsec = root.get("crowdsec").and_then(|v| super::crowdsec::crowdsec(&mut ctx, v, &names));
    if ctx.errors.is_empty() {
        Ok(Config { path: path.to_path_buf(), service, interfaces, crowdsec })
    } else {
        Err(ctx.finish())
    }
}

fn service(ctx: &mut Ctx, root: &DeTable) -> Service {
    let mut s = Service {
        metrics_listen: Some(DEFAULT_METRICS_LISTEN.parse().expect("a valid address")),
        log_format: LogFormat::Text,
        bpf_log: None,
        state_dir: PathBuf::from(DEFAULT_STATE_DIR),
    };
    if let Some(t) = root.get("service").and_then(|v| ctx.table("service", v, &["state_dir"]))
        && let Some(v) = t.get("state_dir")
        && let Some(dir) = ctx.string("service.state_dir", v)
    {
        if Path::new(dir).is_absolute() {
            s.state_dir = PathBuf::from(dir);
        } else {
            ctx.error(v.span(), format!("service.state_dir: '{}' is not an absolute path", echo(dir)));
        }
    }
    if let Some(t) = root.get("metrics").and_then(|v| ctx.table("metrics", v, &["enabled", "listen"])) {
        if let Some(v) = t.get("listen")
            && let Some(text) = ctx.string("metrics.listen", v)
        {
            match text.parse::<SocketAddr>() {
                Ok(a) if a.port() != 0 => s.metrics_listen = Some(a),
                Ok(_) => ctx.error(v.span(), "metrics.listen: port 0 is not a port to scrape"),
                Err(_) => ctx.error(
                    v.span(),
                    format!(
                        "metrics.listen: '{}' is not ADDRESS:PORT, e.g. 127.0.0.1:9669 or [::1]:9669",
                        echo(text)
                    ),
                ),
            }
        }
        if let Some(v) = t.get("enabled")
            && ctx.boolean("metrics.enabled", v) == Some(false)
        {
            s.metrics_listen = None;
        }
    }
    if let Some(t) = root.get("log").and_then(|v| ctx.table("log", v, &["format", "bpf"])) {
        if let Some(v) = t.get("format") {
            let options = [("text", LogFormat::Text), ("json", LogFormat::Json)];
            s.log_format = ctx.choice("log.format", v, &options).unwrap_or_default();
        }
        if let Some(v) = t.get("bpf") {
            use BpfLogLevel::*;
            let options = [
                ("off", None),
                ("error", Some(Error)),
                ("warn", Some(Warn)),
                ("info", Some(Info)),
                ("debug", Some(Debug)),
                ("trace", Some(Trace)),
            ];
            s.bpf_log = ctx.choice("log.bpf", v, &options).flatten();
        }
    }
    s
}

fn interface(ctx: &mut Ctx, name: &Spanned<DeString>, v: &Value) -> Interface {
    let path = format!("interface.{}", key_text(name.get_ref()));
    if let Err(e) = check_iface_name(name.get_ref()) {
        ctx.error(name.span(), format!("{path}: {e}"));
    }
    let mut iface = Interface {
        name: name.get_ref().to_string(),
        mode: Mode::Auto,
        capacity: Capacity::default(),
        blocklist: ListSpec::default(),
        allowlist: ListSpec::default(),
        watchlist: ListSpec::default(),
        limits: None,
        rules: Vec::new(),
        policy: None,
        synproxy: None,
        incidents: None,
    };
    let Some(t) = ctx.table(&path, v, INTERFACE_KEYS) else { return iface };
    if let Some(v) = t.get("mode") {
        let options = [("auto", Mode::Auto), ("native", Mode::Native), ("skb", Mode::Skb)];
        iface.mode = ctx.choice(&t.key("mode"), v, &options).unwrap_or(Mode::Auto);
    }
    let max = u64::from(MAX_MAX_ENTRIES);
    if let Some(v) = t.get("max_entries")
        && let Some(n) = ctx.integer(&t.key("max_entries"), v, 1..=max)
    {
        iface.capacity.entries = n as u32;
    }
    if let Some(v) = t.get("max_sources")
        && let Some(n) = ctx.integer(&t.key("max_sources"), v, 1024..=max)
    {
        iface.capacity.sources = n as u32;
    }
    for (key, list) in [
        ("blocklist", &mut iface.blocklist),
        ("allowlist", &mut iface.allowlist),
        ("watchlist", &mut iface.watchlist),
    ] {
        if let Some(v) = t.get(key) {
            *list = sources::list(ctx, &t.key(key), v);
        }
    }
    iface.rules = rules(ctx, &t);
    if let Some(v) = t.get("limits") {
        iface.limits = limits(ctx, &t.key("limits"), v);
    }
    if let Some(v) = t.get("policy") {
        iface.policy = policy(ctx, &t.key("policy"), v);
    }
    if let Some(v) = t.get("synproxy") {
        iface.synproxy = synproxy(ctx, &t.key("synproxy"), v);
    }
    if let Some(v) = t.get("incidents") {
        let own = match (&iface.policy, t.get("policy")) {
            (Some(p), _) => OwnPolicy::Valid(p),
            (None, Some(_)) => OwnPolicy::Invalid,
            (None, None) => OwnPolicy::Absent,
        };
        iface.incidents = incidents::incidents(ctx, &t.key("incidents"), v, &path, own);
    }
    iface
}

/// Presets first, then the `[[...rule]]` tables in order. Names are unique and no
/// two rules overlap (as `rule add` refuses).
fn rules(ctx: &mut Ctx, t: &Table) -> Vec<RuleSpec> {
    // Each rule with where it was defined (for the errors about pairs).
    let mut out: Vec<(RuleSpec, Range<usize>)> = Vec::new();
    if let Some(v) = t.get("rule_presets")
        && let Some(items) = ctx.array(&t.key("rule_presets"), v)
    {
        let mut seen = Vec::new();
        for item in items {
            let key = t.key("rule_presets");
            let Some(name) = ctx.choice(&key, item, &PRESETS.iter().map(|p| (*p, *p)).collect::<Vec<_>>())
            else {
                continue;
            };
            if seen.contains(&name) {
                ctx.error(item.span(), format!("{key}: preset '{name}' is listed twice"));
                continue;
            }
            seen.push(name);
            // The only preset so far.
            out.extend(reflection_preset().into_iter().map(|r| (r, item.span())));
        }
    }
    let Some(v) = t.get("rule") else { return out.into_iter().map(|(r, _)| r).collect() };
    let path = t.key("rule");
    let items = match v.get_ref() {
        DeValue::Array(a) => &a[..],
        _ => {
            ctx.wrong_type(&path, v, &format!("an array of tables ([[{path}]])"));
            return Vec::new();
        }
    };
    for (i, item) in items.iter().enumerate() {
        let rpath = format!("{path}[{}]", i + 1);
        let Some(rt) = ctx.table(&rpath, item, &["name", "proto", "src_port", "dst_port", "action"]) else {
            continue;
        };
        let Some(spec) = rule(ctx, &rt) else { continue };
        if let Some((other, at)) = out.iter().find(|(o, _)| o.name == spec.name) {
            let (line, _) = ctx.position(at.start);
            let span = rt.get("name").map_or(rt.span.clone(), |v| v.span());
            ctx.error(
                span,
                format!("{rpath}: rule name '{}' is taken by the rule at line {line}", other.name),
            );
            continue;
        }
        if let Some((other, at)) = out.iter().find(|(o, _)| o.overlaps(&spec)) {
            let (line, _) = ctx.position(at.start);
            ctx.error(
                rt.span.clone(),
                format!(
                    "{rpath}: rule '{}' ({}) overlaps rule '{}' ({}) at line {line}: rules may not overlap \
                     within a protocol and direction",
                    spec.name,
                    spec.describe(),
                    other.name,
                    other.describe()
                ),
            );
            continue;
        }
        out.push((spec, rt.span.clone()));
    }
    out.into_iter().map(|(r, _)| r).collect()
}

fn rule(ctx: &mut Ctx, t: &Table) -> Option<RuleSpec> {
    let mut missing = false;
    for key in ["name", "proto"] {
        if t.get(key).is_none() {
            ctx.error(t.span.clone(), format!("[[{}]] has no '{key}'", t.path));
            missing = true;
        }
    }
    let name = t.get("name").and_then(|v| ctx.string(&t.key("name"), v));
    let proto = t.get("proto").and_then(|v| ctx.string(&t.key("proto"), v));
    // A port is a number (53) or a string ("53", "6000-6063").
    let mut port = |key: &str| -> Option<Option<String>> {
        let Some(v) = t.get(key) else { return Some(None) };
        match v.get_ref() {
            DeValue::String(s) => Some(Some(s.to_string())),
            // In decimal whatever the radix it was written in (0x35 is port 53).
            DeValue::Integer(i) => match i128::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(Some(n.to_string())),
                Err(_) => Some(Some(i.as_str().to_string())),
            },
            _ => {
                ctx.wrong_type(&t.key(key), v, "a port or \"LO-HI\"");
                None
            }
        }
    };
    let (src, dst) = (port("src_port")?, port("dst_port")?);
    let (drop, observe) = match t.get("action") {
        Some(v) => ctx.choice(
            &t.key("action"),
            v,
            &[("drop", (true, false)), ("pass", (false, false)), ("observe", (true, true))],
        )?,
        None => (true, false),
    };
    if missing {
        return None;
    }
    let (name, proto) = (name?, proto?);
    RuleSpec::parse(proto, src.as_deref(), dst.as_deref(), drop, Some(name))
        .map(|r| RuleSpec { observe, ..r })
        .map_err(|e| {
            let at = |key: &str| t.get(key).map(|v| v.span());
            let span = match e {
                RuleError::Proto(_) => at("proto"),
                RuleError::Name(_) => at("name"),
                _ => at("dst_port").or(at("src_port")),
            };
            let reason = match e {
                RuleError::NoPorts(p) => format!("{p} has no ports: leave out src_port and dst_port"),
                RuleError::BothPorts => {
                    "a rule matches src_port or dst_port, not both: write two rules".to_string()
                }
                e => e.to_string(),
            };
            ctx.error(span.unwrap_or(t.span.clone()), format!("{}: {reason}", t.path));
        })
        .ok()
}

const LIMIT_KEYS: &[&str] = &[
    "pps",
    "burst",
    "bps",
    "syn_pps",
    "global_syn_pps",
    "v4_prefix",
    "v6_prefix",
    "ban_after",
    "ban_for",
    "observe",
];

pub(super) fn limits(ctx: &mut Ctx, path: &str, v: &Value) -> Option<filter_common::limit::LimitConfig> {
    let t = ctx.table(path, v, LIMIT_KEYS)?;
    let before = ctx.errors.len();
    let mut p = LimitParams::default();
    let int = |ctx: &mut Ctx, key: &str, range: RangeInclusive<u64>| {
        t.get(key).and_then(|v| ctx.integer(&t.key(key), v, range))
    };
    p.pps = int(ctx, "pps", PPS_RANGE);
    p.burst = int(ctx, "burst", PPS_RANGE);
    p.bps = int(ctx, "bps", BPS_RANGE);
    p.syn_pps = int(ctx, "syn_pps", PPS_RANGE);
    p.global_syn_pps = int(ctx, "global_syn_pps", PPS_RANGE);
    p.v4_prefix = int(ctx, "v4_prefix", 0..=32).map_or(p.v4_prefix, |n| n as u32);
    p.v6_prefix = int(ctx, "v6_prefix", 0..=128).map_or(p.v6_prefix, |n| n as u32);
    p.ban_after = t.get("ban_after").and_then(|v| ctx.duration(&t.key("ban_after"), v));
    p.ban_for = t.get("ban_for").and_then(|v| ctx.duration(&t.key("ban_for"), v));
    p.observe = t.get("observe").and_then(|v| ctx.boolean(&t.key("observe"), v)).unwrap_or(false);
    if ctx.errors.len() > before {
        return None;
    }
    match p.build() {
        Ok(c) => Some(c),
        Err(e) => {
            let at = |key: &str| t.get(key).map(|v| v.span());
            let span = match e {
                BadLimits::BurstWithoutPps => at("burst"),
                BadLimits::HalfBan => at("ban_after").or(at("ban_for")),
                _ => None,
            };
            let reason = match e {
                BadLimits::Nothing => {
                    format!(
                        "[{path}] sets no limit: give at least one of pps, bps, syn_pps, global_syn_pps, or leave the section out"
                    )
                }
                e => format!("{path}: {e}"),
            };
            ctx.error(span.unwrap_or(t.span), reason);
            None
        }
    }
}

fn policy(ctx: &mut Ctx, path: &str, v: &Value) -> Option<Policy> {
    let t = ctx.table(path, v, &["serve", "ephemeral", "fragments", "observe"])?;
    let before = ctx.errors.len();
    let serve = t.get("serve");
    let served = serve.and_then(|v| served_ports(ctx, &t.key("serve"), v)).unwrap_or_default();
    let mut eph = None;
    let eph_value = t.get("ephemeral");
    let eph_text = match eph_value {
        Some(v) => ctx.string(&t.key("ephemeral"), v),
        None => Some("auto"),
    };
    if let Some(text) = eph_text {
        match Ephemeral::parse(text).and_then(Ephemeral::resolve) {
            Ok(e) => eph = e,
            Err(e) => {
                let span = eph_value.map_or(t.span.clone(), |v| v.span());
                ctx.error(span, format!("{}: {e}", t.key("ephemeral")))
            }
        }
    }
    let drop_fragments = match t.get("fragments") {
        Some(v) => ctx.choice(&t.key("fragments"), v, &[("pass", false), ("drop", true)]).unwrap_or(false),
        None => false,
    };
    let observe = t.get("observe").and_then(|v| ctx.boolean(&t.key("observe"), v)).unwrap_or(false);
    let mut config = policy_config(serve.is_some(), eph, drop_fragments);
    config.observe = observe as u8;
    (ctx.errors.len() == before).then_some(Policy { config, served })
}

/// Served ports as `[policy] serve` takes them: at least one.
pub(super) fn served_ports(ctx: &mut Ctx, key: &str, v: &Value) -> Option<Vec<Served>> {
    let text = ctx.string(key, v)?;
    match parse_serve(text) {
        Ok(s) if s.is_empty() => {
            ctx.error(v.span(), format!("{key}: lists no ports; to enforce nothing, leave it out"));
            None
        }
        Ok(s) => Some(s),
        Err(e) => {
            ctx.error(v.span(), format!("{key}: {e}"));
            None
        }
    }
}

/// TCP ports for SYN cookies, as `[synproxy] ports` takes them.
pub(super) fn syn_ports(ctx: &mut Ctx, key: &str, v: &Value) -> Option<Vec<(u16, u16)>> {
    let text = ctx.string(key, v)?;
    parse_ports(text).map_err(|e| ctx.error(v.span(), format!("{key}: {e}"))).ok()
}

fn synproxy(ctx: &mut Ctx, path: &str, v: &Value) -> Option<SynProxy> {
    let t = ctx.table(path, v, &["ports", "above_pps"])?;
    let Some(pv) = t.get("ports") else {
        ctx.error(t.span.clone(), format!("[{path}] has no 'ports' (e.g. ports = \"80,443\")"));
        return None;
    };
    let ports = syn_ports(ctx, &t.key("ports"), pv);
    let above_pps = above_pps(ctx, &t, "above_pps");
    Some(SynProxy { ports: ports?, above_pps: above_pps? })
}

/// `above_pps` of SYN cookies (0 when left out: answer every SYN).
pub(super) fn above_pps(ctx: &mut Ctx, t: &Table, key: &str) -> Option<u32> {
    match t.get(key) {
        Some(v) => ctx.integer(&t.key(key), v, 0..=u64::from(u32::MAX)).map(|n| n as u32),
        None => Some(0),
    }
}

/// A CIDR entry written in the config.
pub fn entry(ctx: &mut Ctx, key: &str, v: &Value) -> Option<ipnet::IpNet> {
    let text = ctx.string(key, v)?;
    parse_cidr(text).map_err(|e| ctx.error(v.span(), format!("{key}: {e}"))).ok()
}
