//! `synproxy enable|disable`: the XDP side (ports, rate threshold, window scale in the
//! pinned maps) and the netfilter side floodgate owns: the nftables table
//! `inet floodgate` whose `synproxy` statement checks the cookie in the client's ACK
//! and opens the connection to the listener, and the two sysctls that needs.
//!
//! Everything runs in the current network namespace (the interface's, when floodgate
//! is run through `nsenter --net`). Enable is all or nothing: a failed step undoes the
//! earlier ones.
//!
//! Netfilter state is per namespace, not per interface: the table holds one base
//! chain per protected interface (`if<IFINDEX>`, commented with the interface's name,
//! matching `iif`), and the table's comment records the sysctl values from before
//! the first `enable` in the namespace. The chains are the reference count: the
//! sysctls are restored and the table removed only when the last one goes. Intent is
//! recorded before acting: `enable` creates its chain (and the table with the saved
//! values) in one nft transaction before it touches a sysctl or a map, and `disable`
//! works from the chains and the table, not from the maps, so a process killed at any
//! step leaves something the next `disable` or `detach` finds and undoes. A namespace
//! lock (flock on the namespace's nsfs file) serialises these steps between
//! interfaces.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use aya::maps::{Array, MapData};
use filter_common::{
    cidr::echo,
    limit::Bucket,
    map_names,
    rules::Proto,
    synproxy::{SynProxyConfig, kernel_wscale},
};
use thiserror::Error;

use crate::{
    maps::{Core, MapSource, MetaError, OpenError},
    portmap,
};

/// The nftables table floodgate creates and removes; nothing else is touched.
pub const NFT_TABLE: &str = "floodgate";
const TCP_LOOSE: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_loose";
const SYNCOOKIES: &str = "/proc/sys/net/ipv4/tcp_syncookies";
const WINDOW_SCALING: &str = "/proc/sys/net/ipv4/tcp_window_scaling";
const TCP_RMEM: &str = "/proc/sys/net/ipv4/tcp_rmem";
const RMEM_MAX: &str = "/proc/sys/net/core/rmem_max";
/// MSS SYNPROXY would announce in SYN-ACKs of its own (floodgate's carry the cookie's).
const NFT_MSS: u16 = 1460;

#[derive(Debug, Error)]
pub enum SynProxyError {
    #[error(transparent)]
    Ports(#[from] crate::portmap::BadPortList),
    #[error("'{}' names udp: SYN cookies are for TCP ports only (write 80,443 or tcp/80,tcp/443)", echo(.0))]
    NotTcp(String),
    #[error(
        "net.ipv4.tcp_window_scaling is 0 in this namespace: the listener would not scale its window \
         while SYN cookies announce scaling; enable window scaling first"
    )]
    NoWindowScaling,
    #[error("reading {path}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("setting {path} to {value}")]
    Write {
        path: &'static str,
        value: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("nft failed: {0} (is nftables installed and the nft_synproxy module available?)")]
    Nft(String),
    #[error("writing the SYN-cookie maps")]
    Map(#[source] aya::maps::MapError),
    #[error(transparent)]
    Core(#[from] MetaError),
    #[error("taking the namespace's SYN-cookie lock {path}")]
    Lock {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The SYN-cookie ports: a [`portmap::PORT_LIST`] of TCP ports ("80,443,8000-8010" or
/// "tcp/443").
pub fn parse_ports(s: &str) -> Result<Vec<(u16, u16)>, SynProxyError> {
    let items = crate::portmap::parse_port_list(s)?;
    // SYN cookies are TCP's: a udp/ item is a mistake, not something to drop silently.
    match items.iter().find(|i| i.proto.is_some_and(|p| p != Proto::Tcp)) {
        Some(_) => Err(SynProxyError::NotTcp(s.into())),
        None => Ok(items.iter().map(|i| (i.lo, i.hi)).collect()),
    }
}

fn read_sysctl(path: &'static str) -> Result<String, SynProxyError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SynProxyError::Read { path, source })
}

fn read_int(path: &'static str) -> Result<i32, SynProxyError> {
    read_sysctl(path)?.parse().map_err(|_| SynProxyError::Read {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number"),
    })
}

fn write_int(path: &'static str, value: i32) -> Result<(), SynProxyError> {
    std::fs::write(path, value.to_string()).map_err(|source| SynProxyError::Write { path, value, source })
}

/// The window scale this namespace's listeners use, as the kernel computes it; an
/// error when they would not scale at all.
pub fn listener_wscale() -> Result<u8, SynProxyError> {
    if read_int(WINDOW_SCALING)? == 0 {
        return Err(SynProxyError::NoWindowScaling);
    }
    let rmem = read_sysctl(TCP_RMEM)?;
    let tcp_max = rmem.split_whitespace().nth(2).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(kernel_wscale(tcp_max, rmem_max()))
}

/// net.core.rmem_max. Kernels before 6.x show it only in the initial network
/// namespace (it is global there): read it from a thread that joins that namespace.
fn rmem_max() -> u64 {
    if let Ok(v) = read_sysctl(RMEM_MAX) {
        return v.parse().unwrap_or(0);
    }
    std::thread::spawn(|| -> Option<u64> {
        let ns = std::fs::File::open("/proc/1/ns/net").ok()?;
        // Affects this thread only.
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        std::fs::read_to_string(RMEM_MAX).ok()?.trim().parse().ok()
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or(0)
}

/// Runs `nft -f -` with `script` on stdin.
fn nft(script: &str) -> Result<String, SynProxyError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SynProxyError::Nft(format!("running nft: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| SynProxyError::Nft(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| SynProxyError::Nft(e.to_string()))?;
    if !out.status.success() {
        return Err(SynProxyError::Nft(String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The base chain of the interface with this ifindex.
pub fn chain_name(ifindex: u32) -> String {
    format!("if{ifindex}")
}

/// Sysctl values from before the first `enable` in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saved {
    /// None: conntrack was not loaded yet, so the sysctl did not exist; it is put
    /// back to conntrack's default, 1.
    pub tcp_loose: Option<i32>,
    pub syncookies: i32,
}

impl Saved {
    fn comment(&self) -> String {
        let loose = self.tcp_loose.map_or("default".to_string(), |v| v.to_string());
        format!("floodgate: nf_conntrack_tcp_loose={loose} tcp_syncookies={}", self.syncookies)
    }

    fn parse(comment: &str) -> Option<Saved> {
        let rest = comment.strip_prefix("floodgate: ")?;
        let (mut loose, mut cookies) = (None, None);
        for part in rest.split_whitespace() {
            match part.split_once('=')? {
                ("nf_conntrack_tcp_loose", "default") => loose = Some(None),
                ("nf_conntrack_tcp_loose", v) => loose = Some(Some(v.parse().ok()?)),
                ("tcp_syncookies", v) => cookies = Some(v.parse().ok()?),
                _ => {}
            }
        }
        Some(Saved { tcp_loose: loose?, syncookies: cookies? })
    }

    /// Puts the sysctls back.
    fn restore(&self) -> Result<(), SynProxyError> {
        if std::path::Path::new(TCP_LOOSE).exists() {
            write_int(TCP_LOOSE, self.tcp_loose.unwrap_or(1))?;
        }
        write_int(SYNCOOKIES, self.syncookies)
    }

    /// The values now, before floodgate changes them.
    fn current() -> Result<Saved, SynProxyError> {
        Ok(Saved { tcp_loose: read_int(TCP_LOOSE).ok(), syncookies: read_int(SYNCOOKIES)? })
    }
}

/// floodgate's table in this namespace, as `nft list table` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableState {
    pub exists: bool,
    /// From the table's comment; None in a table made by an older floodgate.
    pub saved: Option<Saved>,
    /// Chains, each with its SYNPROXY rule's `{packets, bytes}`.
    pub chains: Vec<(String, Option<(u64, u64)>)>,
}

impl TableState {
    /// Parses `nft list table inet floodgate`.
    pub fn parse(listing: &str) -> TableState {
        let mut st = TableState { exists: true, ..TableState::default() };
        let mut depth = 0usize;
        for line in listing.lines().map(str::trim) {
            if line.ends_with('{') {
                depth += 1;
                if depth == 2
                    && let Some(name) = line.strip_prefix("chain ").and_then(|l| l.strip_suffix('{'))
                {
                    st.chains.push((name.trim().to_string(), None));
                }
                continue;
            }
            if line == "}" {
                depth = depth.saturating_sub(1);
                continue;
            }
            if depth == 1
                && let Some(c) = line.strip_prefix("comment \"").and_then(|c| c.strip_suffix('"'))
            {
                st.saved = Saved::parse(c);
            }
            if depth == 2
                && let Some(i) = line.find("counter packets ")
                && let Some(last) = st.chains.last_mut()
            {
                let mut words = line[i..].split_whitespace().skip(2);
                let packets = words.next().and_then(|w| w.parse().ok());
                let bytes = words.nth(1).and_then(|w| w.parse().ok());
                if let (Some(p), Some(b)) = (packets, bytes) {
                    last.1 = Some((p, b));
                }
            }
        }
        st
    }

    fn has(&self, chain: &str) -> bool {
        self.chains.iter().any(|(c, _)| c == chain)
    }
}

/// Reads floodgate's table in this namespace (absent: `exists` false).
pub fn table_state() -> Result<TableState, SynProxyError> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", NFT_TABLE])
        .output()
        .map_err(|e| SynProxyError::Nft(format!("running nft: {e}")))?;
    if out.status.success() {
        return Ok(TableState::parse(&String::from_utf8_lossy(&out.stdout)));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such file or directory") {
        return Ok(TableState::default());
    }
    Err(SynProxyError::Nft(err.trim().replace('\n', "; ")))
}

/// The transaction that creates (or updates) one interface's chain, and the table
/// with the saved sysctls when `saved` is given (a table without it is recreated).
pub fn nft_script(
    ifindex: u32,
    iface: &str,
    ports: &[(u16, u16)],
    wscale: u8,
    saved: Option<&Saved>,
) -> String {
    let set: Vec<String> = ports.iter().map(|&(lo, hi)| portmap::range_text(lo, hi)).collect();
    let chain = chain_name(ifindex);
    // ifindex 0: maps loaded but not attached (tests, the bench): the whole namespace.
    let iif = if ifindex == 0 { String::new() } else { format!("iif {ifindex} ") };
    let table = match saved {
        Some(s) => format!(
            "table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{ comment \"{}\"; }}\n",
            s.comment()
        ),
        None => format!("table inet {NFT_TABLE} {{}}\n"),
    };
    // Interface names are shown in a comment only: keep quotes and controls out.
    let name: String = iface.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').collect();
    format!(
        "{table}\
         add chain inet {NFT_TABLE} {chain} {{ comment \"{name}\"; type filter hook input priority filter; policy accept; }}\n\
         flush chain inet {NFT_TABLE} {chain}\n\
         add rule inet {NFT_TABLE} {chain} {iif}tcp dport {{ {} }} ct state invalid,untracked counter \
         synproxy mss {NFT_MSS} wscale {wscale} timestamp sack-perm\n",
        set.join(", ")
    )
}

/// The SYNPROXY rules' `{packets, bytes}` summed over the namespace's chains, if the
/// table exists.
pub fn nft_counter() -> Option<(u64, u64)> {
    let st = table_state().ok()?;
    if !st.exists {
        return None;
    }
    Some(st.chains.iter().filter_map(|(_, c)| *c).fold((0, 0), |(p, b), (p2, b2)| (p + p2, b + b2)))
}

/// The interface's SYNPROXY rule's `{packets, bytes}`, if its chain exists.
pub fn nft_counter_for(ifindex: u32) -> Option<(u64, u64)> {
    let chain = chain_name(ifindex);
    table_state().ok()?.chains.into_iter().find(|(c, _)| *c == chain).map(|(_, n)| n.unwrap_or((0, 0)))
}

/// An exclusive lock per network namespace, held while the table and sysctls
/// change: flock on the namespace's own nsfs inode, which every process in the
/// namespace opens as the same file, so nothing is created or left behind.
struct NsLock(#[allow(dead_code)] std::fs::File);

impl NsLock {
    fn take() -> Result<NsLock, SynProxyError> {
        // thread-self: a thread that joined another namespace (setns) locks that one.
        const NS: &str = "/proc/thread-self/ns/net";
        let err = |source| SynProxyError::Lock { path: NS.into(), source };
        let f = std::fs::File::open(NS).map_err(err)?;
        f.lock().map_err(err)?;
        Ok(NsLock(f))
    }
}

/// The interface's name in this namespace, for the chain's comment.
fn iface_name(ifindex: u32) -> String {
    crate::pins::indextoname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"))
}

/// Removes one interface's chain; the last one out restores the sysctls (while the
/// table still holds their saved values) and then removes the table. `fallback`: the
/// saved values when the table has none (made by an older floodgate).
fn remove_chain(st: &TableState, chain: &str, fallback: Option<Saved>) -> Result<(), SynProxyError> {
    let others = st.chains.iter().filter(|(c, _)| c != chain && c.starts_with("if")).count();
    if others > 0 && st.saved.is_some() {
        nft(&format!("delete chain inet {NFT_TABLE} {chain}\n")).map(drop)
    } else {
        if let Some(saved) = st.saved.or(fallback) {
            saved.restore()?;
        }
        delete_table()
    }
}

/// Removes floodgate's table if it exists.
fn delete_table() -> Result<(), SynProxyError> {
    nft(&format!("table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\n")).map(drop)
}

/// The SYN cookies' group: the configuration and the protected ports, with the
/// bookkeeping for the interface's ifindex (which names its nftables chain). The
/// fields are the raw maps (tests inspect them).
pub struct SynProxyMaps {
    pub core: Core,
    pub synproxy: Array<MapData, SynProxyConfig>,
    pub syn_ports: Array<MapData, u64>,
}

impl SynProxyMaps {
    pub fn open(src: &mut impl MapSource) -> Result<Self, OpenError> {
        Ok(SynProxyMaps {
            core: Core::open(src)?,
            synproxy: src.typed(map_names::SYNPROXY)?,
            syn_ports: src.typed(map_names::SYN_PORTS)?,
        })
    }

    pub fn synproxy_config(&self) -> Result<SynProxyConfig, SynProxyError> {
        self.synproxy.get(&0, 0).map_err(SynProxyError::Map)
    }

    /// The protected ports as ranges.
    pub fn synproxy_ports(&self) -> Result<Vec<(u16, u16)>, SynProxyError> {
        portmap::ranges(|i| self.syn_ports.get(&i, 0)).map_err(SynProxyError::Map)
    }

    /// Writes the data path's side only (ports, then the configuration); `enable`
    /// does this after the netfilter side is in place. Tests use it directly.
    pub fn write_synproxy(
        &mut self,
        cfg: &SynProxyConfig,
        ports: &[(u16, u16)],
    ) -> Result<(), SynProxyError> {
        self.write_ports(ports)?;
        self.synproxy.set(0, cfg, 0).map_err(SynProxyError::Map)
    }

    fn write_ports(&mut self, ports: &[(u16, u16)]) -> Result<(), SynProxyError> {
        for (i, w) in portmap::bitmap(ports.iter().copied()).iter().enumerate() {
            self.syn_ports.set(i as u32, w, 0).map_err(SynProxyError::Map)?;
        }
        Ok(())
    }

    fn ifindex(&self) -> Result<u32, SynProxyError> {
        Ok(self.core.read()?.ifindex)
    }

    /// This interface's chain in the namespace's table, if present (left by an
    /// `enable` or `disable` that did not finish, when the maps say off).
    pub fn synproxy_chain(&self) -> Result<Option<(u64, u64)>, SynProxyError> {
        let chain = chain_name(self.ifindex()?);
        Ok(table_state()?.chains.into_iter().find(|(c, _)| *c == chain).map(|(_, n)| n.unwrap_or((0, 0))))
    }

    /// Protects `ports`: netfilter first (so every answered SYN's ACK finds SYNPROXY),
    /// then the maps that make XDP answer. Re-enabling replaces the ports and rate.
    /// Other interfaces of the namespace keep theirs.
    pub fn enable_synproxy(
        &mut self,
        ports: &[(u16, u16)],
        above_pps: u32,
    ) -> Result<SynProxyConfig, SynProxyError> {
        let ifindex = self.ifindex()?;
        let _lock = NsLock::take()?;
        let wscale = listener_wscale()?;
        let prev = self.synproxy_config()?;
        let st = table_state()?;
        let chain = chain_name(ifindex);
        let had_chain = st.has(&chain);
        // The values to restore when the namespace's last chain goes: recorded with
        // the table, before anything changes.
        let (saved, new_table) = match st.saved {
            Some(s) => (s, None),
            None if st.exists && prev.enabled != 0 => {
                let s = Saved {
                    tcp_loose: (prev.old_tcp_loose >= 0).then_some(prev.old_tcp_loose),
                    syncookies: prev.old_syncookies,
                };
                (s, Some(s))
            }
            None => {
                let s = Saved::current()?;
                (s, Some(s))
            }
        };
        nft(&nft_script(ifindex, &iface_name(ifindex), ports, wscale, new_table.as_ref()))?;
        let undo = |e: SynProxyError| {
            if !had_chain
                && prev.enabled == 0
                && let Ok(st) = table_state()
            {
                let _ = remove_chain(&st, &chain, None);
            }
            e
        };
        write_int(TCP_LOOSE, 0).map_err(undo)?;
        if saved.syncookies == 0 {
            write_int(SYNCOOKIES, 1).map_err(undo)?;
        }
        let above = if above_pps == 0 {
            Bucket::default()
        } else {
            Bucket::per_second(above_pps as u64, (above_pps as u64 / 10).max(5))
        };
        let cfg = SynProxyConfig {
            enabled: 1,
            wscale,
            _pad: 0,
            above_pps,
            above,
            old_tcp_loose: saved.tcp_loose.unwrap_or(-1),
            old_syncookies: saved.syncookies,
        };
        // Ports before the switch, so XDP never answers for a port SYNPROXY lacks.
        let written =
            self.write_ports(ports).and_then(|()| self.synproxy.set(0, &cfg, 0).map_err(SynProxyError::Map));
        if let Err(e) = written {
            if prev.enabled == 0 {
                let _ = self.synproxy.set(0, &SynProxyConfig::default(), 0);
                let _ = self.write_ports(&[]);
            }
            return Err(undo(e));
        }
        Ok(cfg)
    }

    /// Stops answering, removes this interface's chain, and when it was the
    /// namespace's last, restores the sysctls and removes the table. Works from what
    /// is in place (the chain), not only from the maps, so it also undoes an `enable`
    /// or `disable` that was killed halfway. Returns whether anything was enabled.
    pub fn disable_synproxy(&mut self) -> Result<bool, SynProxyError> {
        let ifindex = self.ifindex()?;
        let _lock = NsLock::take()?;
        let cfg = self.synproxy_config()?;
        // XDP stops answering first: from now on no SYN-ACK goes out whose ACK would
        // find no SYNPROXY. The saved values stay in the map as the fallback for a
        // table made by an older floodgate.
        if cfg.enabled != 0 {
            self.synproxy.set(0, &SynProxyConfig { enabled: 0, ..cfg }, 0).map_err(SynProxyError::Map)?;
            self.write_ports(&[])?;
        }
        let st = table_state()?;
        let chain = chain_name(ifindex);
        let legacy = st.exists && st.saved.is_none();
        let fallback = (cfg.old_syncookies >= 0 && (cfg.enabled != 0 || legacy)).then_some(Saved {
            tcp_loose: (cfg.old_tcp_loose >= 0).then_some(cfg.old_tcp_loose),
            syncookies: cfg.old_syncookies,
        });
        let present = st.has(&chain) || (legacy && cfg.enabled != 0);
        if present {
            remove_chain(&st, &chain, fallback)?;
        }
        Ok(cfg.enabled != 0 || present)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_script() {
        assert_eq!(parse_ports("80, 443,8000-8010").unwrap(), vec![(80, 80), (443, 443), (8000, 8010)]);
        for bad in ["", "http", "80,,x", "9-3"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
        let saved = Saved { tcp_loose: None, syncookies: 0 };
        let s = nft_script(7, "eth\"0", &[(80, 80), (8000, 8010)], 10, Some(&saved));
        assert!(
            s.contains("iif 7 tcp dport { 80, 8000-8010 } ct state invalid,untracked counter synproxy"),
            "{s}"
        );
        assert!(s.contains("wscale 10 timestamp sack-perm"), "{s}");
        assert!(s.contains("add chain inet floodgate if7 { comment \"eth0\";"), "{s}");
        assert!(
            s.starts_with(
                "table inet floodgate {}\ndelete table inet floodgate\ntable inet floodgate { comment \"floodgate: \
                 nf_conntrack_tcp_loose=default tcp_syncookies=0\"; }\n"
            ),
            "{s}"
        );
        let s = nft_script(7, "eth0", &[(80, 80)], 10, None);
        assert!(s.starts_with("table inet floodgate {}\nadd chain"), "{s}");
    }

    #[test]
    fn table_listing_and_saved_values() {
        let listing = "table inet floodgate {\n\tcomment \"floodgate: nf_conntrack_tcp_loose=1 tcp_syncookies=0\"\n\
            \tchain if7 {\n\t\tcomment \"a\"\n\t\ttype filter hook input priority filter; policy accept;\n\
            \t\tiif \"a\" tcp dport 80 ct state invalid,untracked counter packets 12 bytes 720 synproxy mss 1460\n\t}\n\
            \tchain if9 {\n\t\tcomment \"b\"\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n";
        let st = TableState::parse(listing);
        assert!(st.exists);
        assert_eq!(st.saved, Some(Saved { tcp_loose: Some(1), syncookies: 0 }));
        assert_eq!(st.chains, vec![("if7".to_string(), Some((12, 720))), ("if9".to_string(), None)]);
        for s in [Saved { tcp_loose: None, syncookies: 1 }, Saved { tcp_loose: Some(0), syncookies: 2 }] {
            assert_eq!(Saved::parse(&s.comment()), Some(s));
        }
        assert_eq!(Saved::parse("something else"), None);
        // An older floodgate's table: no comment, one chain.
        let st = TableState::parse("table inet floodgate {\n\tchain cookies {\n\t}\n}\n");
        assert_eq!((st.saved, st.chains.len()), (None, 1));
    }
}
