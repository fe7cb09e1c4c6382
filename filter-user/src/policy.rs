//! The served-ports policy and the fragment setting, as the controller writes them:
//! bitmaps and settings go into the unused slot, then one 4-byte write switches.

use aya::maps::{Array, MapData};
use filter_common::{
    ACTIVE_POLICY,
    cidr::echo,
    map_names,
    rules::{PolicyConfig, Proto, served_base},
};
use thiserror::Error;

use crate::{
    maps::{MapSource, OpenError},
    portmap,
    rules::{RuleError, parse_range},
};

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error(transparent)]
    Serve(#[from] portmap::BadPortList),
    #[error("bad ephemeral range '{}': expected auto, LO-HI or none", echo(.0))]
    Ephemeral(String),
    #[error("reading the ephemeral port range from {path}")]
    LocalRange {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("writing the policy maps")]
    Map(#[source] aya::maps::MapError),
}

/// Where replies to the host's own connections arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ephemeral {
    /// `net.ipv4.ip_local_port_range` of the current network namespace.
    Auto,
    Range(u16, u16),
    None,
}

pub const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

impl Ephemeral {
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        match s {
            "auto" => Ok(Ephemeral::Auto),
            "none" => Ok(Ephemeral::None),
            _ => {
                let (lo, hi) = parse_range(s).map_err(|_| PolicyError::Ephemeral(s.into()))?;
                if lo == hi && !s.contains('-') {
                    return Err(PolicyError::Ephemeral(s.into()));
                }
                Ok(Ephemeral::Range(lo, hi))
            }
        }
    }

    /// The range to enforce (reading the sysctl for `Auto`).
    pub fn resolve(self) -> Result<Option<(u16, u16)>, PolicyError> {
        match self {
            Ephemeral::None => Ok(None),
            Ephemeral::Range(lo, hi) => Ok(Some((lo, hi))),
            Ephemeral::Auto => {
                let text = std::fs::read_to_string(LOCAL_PORT_RANGE)
                    .map_err(|source| PolicyError::LocalRange { path: LOCAL_PORT_RANGE, source })?;
                let mut it = text.split_whitespace().map(str::parse::<u16>);
                match (it.next(), it.next()) {
                    (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Ok(Some((lo, hi))),
                    _ => Err(PolicyError::LocalRange {
                        path: LOCAL_PORT_RANGE,
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, text.trim().to_string()),
                    }),
                }
            }
        }
    }
}

/// A served port or range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    pub proto: Proto,
    pub lo: u16,
    pub hi: u16,
}

impl std::fmt::Display for Served {
    /// "tcp/443", "udp/6000-6063".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.proto.name(), portmap::range_text(self.lo, self.hi))
    }
}

/// The served ports: a [`portmap::PORT_LIST`]; an item without `tcp/` or `udp/` is
/// served on both ("53" is "tcp/53,udp/53"). A list of nothing serves nothing (the CLI
/// refuses it: that is `policy clear`).
pub fn parse_serve(list: &str) -> Result<Vec<Served>, PolicyError> {
    let mut served = Vec::new();
    if list.split(',').all(|item| item.trim().is_empty()) {
        return Ok(served);
    }
    for item in portmap::parse_port_list(list)? {
        let (lo, hi) = (item.lo, item.hi);
        match item.proto {
            Some(proto) => served.push(Served { proto, lo, hi }),
            None => served.extend([Proto::Tcp, Proto::Udp].map(|proto| Served { proto, lo, hi })),
        }
    }
    Ok(served)
}

/// The settings `policy set` installs: `enforce` when served ports were given,
/// `ephemeral` already resolved ([`Ephemeral::resolve`]).
pub fn policy_config(enforce: bool, ephemeral: Option<(u16, u16)>, drop_fragments: bool) -> PolicyConfig {
    PolicyConfig {
        enforce: enforce as u8,
        drop_fragments: drop_fragments as u8,
        ephemeral: ephemeral.is_some() as u8,
        observe: 0,
        eph_lo: ephemeral.map_or(0, |e| e.0),
        eph_hi: ephemeral.map_or(0, |e| e.1),
    }
}

/// What `policy show` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    pub config: PolicyConfig,
    pub served: Vec<Served>,
}

/// The policy's group: its two configuration slots, their served-port bitmaps, and
/// its word in `FG_ACTIVE`. The fields are the raw maps (tests inspect them).
pub struct PolicyMaps {
    /// Only `ACTIVE_POLICY` is touched here.
    pub active: Array<MapData, u32>,
    pub policy: Array<MapData, PolicyConfig>,
    pub served: Array<MapData, u64>,
}

impl PolicyMaps {
    pub fn open(src: &mut impl MapSource) -> Result<Self, OpenError> {
        Ok(PolicyMaps {
            active: src.typed(map_names::ACTIVE)?,
            policy: src.typed(map_names::POLICY)?,
            served: src.typed(map_names::SERVED)?,
        })
    }

    fn policy_slot(&self) -> Result<u32, PolicyError> {
        Ok(self.active.get(&ACTIVE_POLICY, 0).map_err(PolicyError::Map)? & 1)
    }

    /// Installs a policy: bitmaps and settings into the unused slot, then the switch.
    pub fn set_policy(&mut self, config: PolicyConfig, served: &[Served]) -> Result<(), PolicyError> {
        let next = self.policy_slot()? ^ 1;
        for proto in [Proto::Tcp, Proto::Udp] {
            let words = portmap::bitmap(served.iter().filter(|s| s.proto == proto).map(|s| (s.lo, s.hi)));
            let base = served_base(next, proto);
            for (i, w) in words.iter().enumerate() {
                self.served.set(base + i as u32, w, 0).map_err(PolicyError::Map)?;
            }
        }
        self.policy.set(next, &config, 0).map_err(PolicyError::Map)?;
        self.active.set(ACTIVE_POLICY, &next, 0).map_err(PolicyError::Map)?;
        // The next install writes the slot just left: not while a program reads it.
        crate::grace::wait_for_readers();
        Ok(())
    }

    /// The policy packets see now, with its served ports as ranges.
    pub fn policy_state(&self) -> Result<PolicyState, PolicyError> {
        let slot = self.policy_slot()?;
        let config = self.policy.get(&slot, 0).map_err(PolicyError::Map)?;
        let mut served = Vec::new();
        for proto in [Proto::Tcp, Proto::Udp] {
            let base = served_base(slot, proto);
            let runs = portmap::ranges(|i| self.served.get(&(base + i), 0)).map_err(PolicyError::Map)?;
            served.extend(runs.into_iter().map(|(lo, hi)| Served { proto, lo, hi }));
        }
        Ok(PolicyState { config, served })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_lists() {
        let s = parse_serve("tcp/443, tcp/80,udp/53,tcp/8000-8100").unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[3], Served { proto: Proto::Tcp, lo: 8000, hi: 8100 });
        assert_eq!(parse_serve(" , ").unwrap(), vec![]);
        for bad in ["icmp/1", "tcp/x", "sctp/9", "tcp/9-3", ",80,x"] {
            assert!(parse_serve(bad).unwrap_err().to_string().contains(&format!("'{bad}'")), "{bad}");
        }
        // A port without tcp/ or udp/ is served on both.
        assert_eq!(parse_serve("443").unwrap().len(), 2);
    }

    #[test]
    fn ephemeral_settings() {
        assert_eq!(Ephemeral::parse("auto").unwrap(), Ephemeral::Auto);
        assert_eq!(Ephemeral::parse("none").unwrap(), Ephemeral::None);
        assert_eq!(Ephemeral::parse("32768-60999").unwrap(), Ephemeral::Range(32768, 60999));
        assert!(Ephemeral::parse("5000").is_err());
        assert!(Ephemeral::parse("9-3").is_err());
        let (lo, hi) = Ephemeral::Auto.resolve().unwrap().unwrap();
        assert!(lo <= hi);
    }
}
