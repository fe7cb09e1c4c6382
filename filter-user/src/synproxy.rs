//! `synproxy enable|disable`: the XDP side (ports, rate threshold, window scale in the
//! pinned maps) and the netfilter side floodgate owns: the nftables table
//! `inet floodgate` whose `synproxy` statement checks the cookie in the client's ACK
//! and opens the connection to the listener, and the two sysctls that needs.
//!
//! Everything runs in the current network namespace (the interface's, when floodgate
//! is run through `nsenter --net`). Enable is all or nothing: a failed step undoes the
//! earlier ones.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use filter_common::{
    limit::Bucket,
    synproxy::{SynProxyConfig, kernel_wscale},
};
use thiserror::Error;

use crate::{maps::FilterMaps, portmap, rules::parse_range};

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
    #[error("bad port list '{0}': expected ports or ranges separated by commas, e.g. 80,443")]
    Ports(String),
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
}

/// "80,443,8000-8010".
pub fn parse_ports(s: &str) -> Result<Vec<(u16, u16)>, SynProxyError> {
    let ports: Vec<_> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| parse_range(p).map_err(|_| SynProxyError::Ports(s.into())))
        .collect::<Result<_, _>>()?;
    if ports.is_empty() {
        return Err(SynProxyError::Ports(s.into()));
    }
    Ok(ports)
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
        use std::os::fd::AsRawFd as _;
        let ns = std::fs::File::open("/proc/1/ns/net").ok()?;
        // SAFETY: setns on a namespace fd we hold; it affects this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
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

/// The table: ACKs to the protected ports that conntrack does not know (the answers
/// to floodgate's SYN-ACKs) go to SYNPROXY, which checks the cookie and opens the
/// connection to the listener. SYNs that reach the stack (below `--above`) are
/// tracked as usual and never touch it.
pub fn nft_script(ports: &[(u16, u16)], wscale: u8) -> String {
    let set: Vec<String> = ports.iter().map(|&(lo, hi)| portmap::range_text(lo, hi)).collect();
    format!(
        "table inet {NFT_TABLE} {{}}\n\
         delete table inet {NFT_TABLE}\n\
         table inet {NFT_TABLE} {{\n\
         \tchain cookies {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\ttcp dport {{ {} }} ct state invalid,untracked counter synproxy mss {NFT_MSS} wscale {wscale} timestamp sack-perm\n\
         \t}}\n\
         }}\n",
        set.join(", ")
    )
}

/// Removes floodgate's table if it exists.
fn delete_table() -> Result<(), SynProxyError> {
    nft(&format!("table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\n")).map(drop)
}

/// The SYNPROXY rule's `{packets, bytes}`, if the table exists.
pub fn nft_counter() -> Option<(u64, u64)> {
    let out = Command::new("nft").args(["-j", "list", "table", "inet", NFT_TABLE]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["nftables"].as_array()?.iter().find_map(|item| {
        item["rule"]["expr"].as_array()?.iter().find_map(|e| {
            let c = &e["counter"];
            Some((c["packets"].as_u64()?, c["bytes"].as_u64()?))
        })
    })
}

impl FilterMaps {
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

    /// Protects `ports`: netfilter first (so every answered SYN's ACK finds SYNPROXY),
    /// then the maps that make XDP answer. Re-enabling replaces the ports and rate.
    pub fn enable_synproxy(
        &mut self,
        ports: &[(u16, u16)],
        above_pps: u32,
    ) -> Result<SynProxyConfig, SynProxyError> {
        let wscale = listener_wscale()?;
        let prev = self.synproxy_config()?;
        nft(&nft_script(ports, wscale))?;
        let undo_nft = |e: SynProxyError| {
            if prev.enabled == 0 {
                let _ = delete_table();
            }
            e
        };
        // The conntrack sysctl exists once the table has pulled in nf_conntrack.
        let (old_loose, old_cookies) = if prev.enabled != 0 {
            (prev.old_tcp_loose, prev.old_syncookies)
        } else {
            (read_int(TCP_LOOSE).map_err(undo_nft)?, read_int(SYNCOOKIES).map_err(undo_nft)?)
        };
        let restore = |e: SynProxyError| {
            let _ = write_int(TCP_LOOSE, old_loose);
            let _ = write_int(SYNCOOKIES, old_cookies);
            undo_nft(e)
        };
        write_int(TCP_LOOSE, 0).map_err(restore)?;
        if old_cookies == 0 {
            write_int(SYNCOOKIES, 1).map_err(restore)?;
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
            old_tcp_loose: old_loose,
            old_syncookies: old_cookies,
        };
        // Ports before the switch, so XDP never answers for a port SYNPROXY lacks.
        self.write_ports(ports)
            .and_then(|()| self.synproxy.set(0, &cfg, 0).map_err(SynProxyError::Map))
            .map_err(restore)?;
        Ok(cfg)
    }

    /// Stops answering, removes the table and restores the sysctls. Returns whether
    /// anything was enabled.
    pub fn disable_synproxy(&mut self) -> Result<bool, SynProxyError> {
        let cfg = self.synproxy_config()?;
        if cfg.enabled == 0 {
            return Ok(false);
        }
        self.synproxy.set(0, &SynProxyConfig::default(), 0).map_err(SynProxyError::Map)?;
        self.write_ports(&[])?;
        delete_table()?;
        if cfg.old_tcp_loose >= 0 {
            write_int(TCP_LOOSE, cfg.old_tcp_loose)?;
        }
        write_int(SYNCOOKIES, cfg.old_syncookies)?;
        Ok(true)
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
        let s = nft_script(&[(80, 80), (8000, 8010)], 10);
        assert!(s.contains("tcp dport { 80, 8000-8010 } ct state invalid,untracked counter synproxy"), "{s}");
        assert!(s.contains("wscale 10 timestamp sack-perm"), "{s}");
        assert!(s.starts_with("table inet floodgate {}\ndelete table inet floodgate\n"), "{s}");
    }
}
