//! Protocol and port rules as the controller manages them: parsing, overlap checks,
//! the `reflection` preset, and writing the data path's port table.
//!
//! A rule's ports are written slot by slot into the port table; the rules map holds
//! what `rule list` shows. Rules never overlap within a (protocol, direction), so
//! every slot belongs to at most one rule and removing a rule clears exactly its own.

use std::fmt;

use aya::maps::{Array, MapData, MapError, PerCpuArray, PerCpuValues};
use filter_common::cidr::echo;
use filter_common::{
    Counter, map_names,
    rules::{
        ACTION_DROP, ACTION_OBSERVE, ACTION_PASS, Dir, MAX_RULES, Proto, RULES_IN_FORCE, RuleInfo,
        observe_value, port_slot, rule_value, rules_in_force,
    },
};
use thiserror::Error;

use crate::maps::{MapSource, OpenError};

/// The rules' group: the port and protocol tables packets read, the rules'
/// descriptions and their per-CPU counters. The fields are the raw maps (tests
/// inspect them); everything else goes through the methods.
pub struct RuleMaps {
    pub port_rules: Array<MapData, u32>,
    pub proto_rules: Array<MapData, u32>,
    pub rules: Array<MapData, RuleInfo>,
    pub rule_counters: PerCpuArray<MapData, Counter>,
}

#[derive(Debug, Error)]
pub enum RuleError {
    #[error("unknown protocol '{}': expected tcp, udp, icmp or icmpv6", echo(.0))]
    Proto(String),
    #[error("bad port '{}': expected a port 0-65535 or a range LO-HI with LO <= HI", echo(.0))]
    Port(String),
    #[error("{0} has no ports: leave out --src-port and --dst-port")]
    NoPorts(&'static str),
    #[error("a rule matches a source port or a destination port, not both: add two rules")]
    BothPorts,
    #[error(
        "rule name '{}' is not usable: 1 to 31 characters of letters, digits, '-', '_' or '.', not all digits",
        echo(.0)
    )]
    Name(String),
    #[error("a rule named '{}' exists already", echo(.0))]
    NameTaken(String),
    #[error("{new} overlaps rule {id} '{name}' ({existing}); remove it first or narrow the ports")]
    Overlap { new: String, id: u32, name: String, existing: String },
    #[error("no rule with name or id '{}' (see `floodgate rule list`)", echo(.0))]
    NotFound(String),
    #[error("all {0} rule slots are in use")]
    Full(u32),
    #[error("{op} failed on the rule maps")]
    Map {
        op: &'static str,
        #[source]
        source: MapError,
    },
}

fn map_err(op: &'static str) -> impl Fn(MapError) -> RuleError {
    move |source| RuleError::Map { op, source }
}

/// What a rule matches and does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub proto: Proto,
    pub dir: Dir,
    pub lo: u16,
    pub hi: u16,
    pub drop: bool,
    /// A drop rule in observe mode (`drop` is set too): what it would drop is counted
    /// under would_drop.rule and passed on.
    pub observe: bool,
    pub name: String,
}

impl RuleSpec {
    /// A rule from CLI-shaped parts; `name` None means "rule-ID" once it has an id.
    pub fn parse(
        proto: &str,
        src_port: Option<&str>,
        dst_port: Option<&str>,
        drop: bool,
        name: Option<&str>,
    ) -> Result<Self, RuleError> {
        let proto = parse_proto(proto)?;
        let (dir, (lo, hi)) = match (src_port, dst_port) {
            (Some(_), Some(_)) => return Err(RuleError::BothPorts),
            (Some(p), None) => (Dir::Src, parse_range(p)?),
            (None, Some(p)) => (Dir::Dst, parse_range(p)?),
            (None, None) => (Dir::Any, (0, u16::MAX)),
        };
        if dir != Dir::Any && !proto.has_ports() {
            return Err(RuleError::NoPorts(proto.name()));
        }
        let name = name.map(str::to_string).unwrap_or_default();
        if !name.is_empty() {
            check_name(&name)?;
        }
        Ok(Self { proto, dir, lo, hi, drop, observe: false, name })
    }

    /// Both match some packet: two such rules are refused (`add_rules`, a config file).
    pub fn overlaps(&self, other: &RuleSpec) -> bool {
        self.proto == other.proto
            && (self.dir == Dir::Any
                || other.dir == Dir::Any
                || (self.dir == other.dir && self.lo <= other.hi && other.lo <= self.hi))
    }

    fn info(&self) -> RuleInfo {
        let mut name = [0u8; 32];
        name[..self.name.len()].copy_from_slice(self.name.as_bytes());
        RuleInfo {
            in_use: 1,
            proto: self.proto as u8,
            dir: self.dir as u8,
            drop: match (self.drop, self.observe) {
                (false, _) => ACTION_PASS,
                (true, false) => ACTION_DROP,
                (true, true) => ACTION_OBSERVE,
            },
            lo: self.lo,
            hi: self.hi,
            name,
        }
    }

    fn from_info(i: &RuleInfo) -> Option<Self> {
        let dir = Dir::try_from(i.dir).ok()?;
        let len = i.name.iter().position(|b| *b == 0).unwrap_or(32);
        Some(Self {
            proto: Proto::from_u8(i.proto)?,
            dir,
            lo: i.lo,
            hi: i.hi,
            drop: i.drop != ACTION_PASS,
            observe: i.drop == ACTION_OBSERVE,
            name: String::from_utf8_lossy(&i.name[..len]).into_owned(),
        })
    }

    /// "pass", "drop" or "observe".
    pub fn action(&self) -> &'static str {
        match (self.drop, self.observe) {
            (false, _) => "pass",
            (true, false) => "drop",
            (true, true) => "observe",
        }
    }

    /// The value packets see in its slots.
    fn value(&self, id: u32) -> u32 {
        if self.drop && self.observe { observe_value(id) } else { rule_value(id, self.drop) }
    }

    /// "udp from port 11211", "tcp to ports 6000-6063", "icmp".
    pub fn describe(&self) -> String {
        let plural = if self.lo == self.hi { "" } else { "s" };
        let ports = format!("port{plural} {}", crate::portmap::range_text(self.lo, self.hi));
        match self.dir {
            Dir::Src => format!("{} from {ports}", self.proto.name()),
            Dir::Dst => format!("{} to {ports}", self.proto.name()),
            Dir::Any => format!("all {}", self.proto.name()),
        }
    }

    fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        (self.lo..=self.hi).map(|p| port_slot(self.proto, self.dir, p))
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.describe(), self.action())
    }
}

pub fn parse_proto(s: &str) -> Result<Proto, RuleError> {
    Proto::ALL
        .into_iter()
        .find(|p| p.name() == s.to_ascii_lowercase())
        .ok_or_else(|| RuleError::Proto(s.into()))
}

/// "443" or "6000-6063".
pub fn parse_range(s: &str) -> Result<(u16, u16), RuleError> {
    let bad = || RuleError::Port(s.to_string());
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?),
        None => {
            let p = s.trim().parse().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn check_name(name: &str) -> Result<(), RuleError> {
    let ok = (1..32).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.chars().all(|c| c.is_ascii_digit());
    if ok { Ok(()) } else { Err(RuleError::Name(name.to_string())) }
}

/// A stored rule with its counters (summed over CPUs).
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: u32,
    pub spec: RuleSpec,
    pub hits: Counter,
}

/// The well-known UDP reflection/amplification vectors: source port and service.
pub const REFLECTION: &[(u16, &str)] = &[
    (17, "qotd"),
    (19, "chargen"),
    (53, "dns"),
    (111, "portmap"),
    (123, "ntp"),
    (137, "netbios"),
    (161, "snmp"),
    (389, "cldap"),
    (1900, "ssdp"),
    (3283, "ard"),
    (3702, "ws-discovery"),
    (5353, "mdns"),
    (5683, "coap"),
    (10001, "ubiquiti"),
    (11211, "memcached"),
];

/// The rules of the `reflection` preset, named `reflection-SERVICE`.
pub fn reflection_preset() -> Vec<RuleSpec> {
    REFLECTION
        .iter()
        .map(|(port, service)| RuleSpec {
            proto: Proto::Udp,
            dir: Dir::Src,
            lo: *port,
            hi: *port,
            drop: true,
            observe: false,
            name: format!("reflection-{service}"),
        })
        .collect()
}

impl RuleMaps {
    pub fn open(src: &mut impl MapSource) -> Result<Self, OpenError> {
        use map_names::*;
        Ok(RuleMaps {
            port_rules: src.typed(PORT_RULES)?,
            proto_rules: src.typed(PROTO_RULES)?,
            rules: src.typed(RULES)?,
            rule_counters: src.typed(RULE_COUNTERS)?,
        })
    }

    /// Every rule, by id.
    pub fn rules(&self) -> Result<Vec<Rule>, RuleError> {
        let mut out = Vec::new();
        for id in 1..=MAX_RULES {
            let info = self.rules.get(&id, 0).map_err(map_err("reading a rule"))?;
            if info.in_use == 0 {
                continue;
            }
            let Some(spec) = RuleSpec::from_info(&info) else { continue };
            let per_cpu = self.rule_counters.get(&id, 0).map_err(map_err("reading rule counters"))?;
            let hits = per_cpu.iter().fold(Counter::default(), |a, c| Counter {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            });
            out.push(Rule { id, spec, hits });
        }
        Ok(out)
    }

    /// Adds rules, all or none: every one is checked against the stored rules and
    /// the others first. A rule identical to a stored one (same match, action and
    /// name) is skipped, so a preset can be applied twice. Returns the rules added.
    pub fn add_rules(&mut self, specs: &[RuleSpec]) -> Result<Vec<Rule>, RuleError> {
        let existing = self.rules()?;
        let mut free = (1..=MAX_RULES).filter(|id| !existing.iter().any(|r| r.id == *id));
        let mut planned: Vec<Rule> = Vec::new();
        for spec in specs {
            if existing.iter().any(|r| same(&r.spec, spec)) {
                continue;
            }
            for r in existing.iter().chain(&planned) {
                if !spec.name.is_empty() && r.spec.name == spec.name {
                    return Err(RuleError::NameTaken(spec.name.clone()));
                }
                if r.spec.overlaps(spec) {
                    return Err(RuleError::Overlap {
                        new: spec.to_string(),
                        id: r.id,
                        name: r.spec.name.clone(),
                        existing: r.spec.to_string(),
                    });
                }
            }
            let id = free.next().ok_or(RuleError::Full(MAX_RULES))?;
            let mut spec = spec.clone();
            if spec.name.is_empty() {
                spec.name = format!("rule-{id}");
            }
            planned.push(Rule { id, spec, hits: Counter::default() });
        }
        // The count first: from now on packets whose ports cannot be seen are dropped.
        let all: Vec<&RuleSpec> = existing.iter().chain(&planned).map(|r| &r.spec).collect();
        self.set_rules_in_force(&all)?;
        for r in &planned {
            self.write_rule(r)?;
        }
        Ok(planned)
    }

    /// Records how many rules are in force, enforcing and observing, read by the data
    /// path ([`filter_common::rules::needs_l4`]).
    fn set_rules_in_force(&mut self, rules: &[&RuleSpec]) -> Result<(), RuleError> {
        let observing = rules.iter().filter(|r| r.drop && r.observe).count() as u32;
        let n = rules_in_force(rules.len() as u32 - observing, observing);
        self.proto_rules.set(RULES_IN_FORCE, &n, 0).map_err(map_err("storing the rule count"))
    }

    fn write_rule(&mut self, r: &Rule) -> Result<(), RuleError> {
        // Counters first (a reused id starts at zero), then the description, then the
        // slots packets see.
        let cpus = self.rule_counters.get(&r.id, 0).map_err(map_err("reading rule counters"))?.iter().count();
        let zero = PerCpuValues::try_from(vec![Counter::default(); cpus])
            .map_err(|e| RuleError::Map { op: "resetting rule counters", source: MapError::IoError(e) })?;
        self.rule_counters.set(r.id, zero, 0).map_err(map_err("resetting rule counters"))?;
        self.rules.set(r.id, &r.spec.info(), 0).map_err(map_err("storing a rule"))?;
        let value = r.spec.value(r.id);
        if r.spec.dir == Dir::Any {
            self.proto_rules.set(r.spec.proto as u32, &value, 0).map_err(map_err("storing a rule"))?;
        } else {
            for slot in r.spec.slots() {
                self.port_rules.set(slot, &value, 0).map_err(map_err("storing a rule"))?;
            }
        }
        Ok(())
    }

    /// Removes the rule named `which` (or with that id). Returns it.
    pub fn remove_rule(&mut self, which: &str) -> Result<Rule, RuleError> {
        let rules = self.rules()?;
        let pos = rules
            .iter()
            .position(|r| r.spec.name == which || which.parse::<u32>().is_ok_and(|id| id == r.id))
            .ok_or_else(|| RuleError::NotFound(which.to_string()))?;
        let mut rules = rules;
        let r = rules.remove(pos);
        let rules_left: Vec<&RuleSpec> = rules.iter().map(|r| &r.spec).collect();
        // Slots first, so no packet is counted against a rule that is going away.
        if r.spec.dir == Dir::Any {
            self.proto_rules.set(r.spec.proto as u32, &0, 0).map_err(map_err("removing a rule"))?;
        } else {
            for slot in r.spec.slots() {
                self.port_rules.set(slot, &0, 0).map_err(map_err("removing a rule"))?;
            }
        }
        self.rules.set(r.id, &RuleInfo::default(), 0).map_err(map_err("removing a rule"))?;
        self.set_rules_in_force(&rules_left)?;
        Ok(r)
    }
}

/// Same match, action and (given) name.
fn same(a: &RuleSpec, b: &RuleSpec) -> bool {
    a.proto == b.proto
        && a.dir == b.dir
        && a.lo == b.lo
        && a.hi == b.hi
        && a.drop == b.drop
        && a.observe == b.observe
        && (b.name.is_empty() || a.name == b.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(proto: &str, src: Option<&str>, dst: Option<&str>) -> RuleSpec {
        RuleSpec::parse(proto, src, dst, true, None).unwrap()
    }

    #[test]
    fn parsing_and_its_errors() {
        let r = spec("udp", Some("11211"), None);
        assert_eq!((r.proto, r.dir, r.lo, r.hi), (Proto::Udp, Dir::Src, 11211, 11211));
        let r = spec("TCP", None, Some("6000-6063"));
        assert_eq!((r.proto, r.dir, r.lo, r.hi), (Proto::Tcp, Dir::Dst, 6000, 6063));
        assert_eq!(spec("icmp", None, None).dir, Dir::Any);
        let err = |p, s, d, n| RuleSpec::parse(p, s, d, true, n).unwrap_err().to_string();
        assert!(err("gre", None, None, None).contains("unknown protocol 'gre'"));
        assert!(err("udp", Some("70000"), None, None).contains("bad port '70000'"));
        assert!(err("udp", Some("9-3"), None, None).contains("bad port '9-3'"));
        assert!(err("icmp", Some("1"), None, None).contains("icmp has no ports"));
        assert!(err("udp", Some("1"), Some("2"), None).contains("not both"));
        assert!(err("udp", None, None, Some("has space")).contains("not usable"));
        assert!(err("udp", None, None, Some("42")).contains("not usable"));
    }

    #[test]
    fn overlaps() {
        let a = spec("udp", Some("100-200"), None);
        assert!(a.overlaps(&spec("udp", Some("200-300"), None)));
        assert!(a.overlaps(&spec("udp", Some("150"), None)));
        assert!(!a.overlaps(&spec("udp", Some("201-300"), None)));
        assert!(!a.overlaps(&spec("udp", None, Some("150"))), "other direction");
        assert!(!a.overlaps(&spec("tcp", Some("150"), None)), "other protocol");
        assert!(a.overlaps(&spec("udp", None, None)), "whole protocol");
    }

    #[test]
    fn reflection_preset_has_no_overlaps_and_names_each_service() {
        let p = reflection_preset();
        for (i, a) in p.iter().enumerate() {
            for b in &p[i + 1..] {
                assert!(!a.overlaps(b), "{a} / {b}");
            }
            check_name(&a.name).unwrap();
        }
        assert!(p.iter().any(|r| r.lo == 11211 && r.name == "reflection-memcached"));
    }
}
