//! Part 2: live drop rate. An attacker namespace floods the server's veth with the
//! XDP_TX generator (`fgb_gen` run by BPF_PROG_TEST_RUN in live-frames mode, pinned
//! to CPU0): frames reach the server veth as `xdp_frame`s, as from a NIC driver. The
//! server's receive work runs in its threaded NAPI kthread, pinned to CPU1, so the
//! filter's cost per packet is CPU1's busy time divided by the frames it received.
//! Every case gets the same delivery: an XDP program on the server veth (floodgate
//! itself, the empty `fgb_drop`, or the empty `fgb_pass` in front of nftables,
//! iptables or no filter).
//!
//! Cases (issue 13): a bare XDP_DROP as the floor; floodgate, ipset and nftables with
//! the same realistic list of 1M prefixes plus the flood's /15, and floodgate's miss
//! path (the /15 not listed, the served-ports policy drops); and the same filters with
//! the 1K list. Each list is loaded once per run.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::programs::{XdpMode, xdp::XdpLinkId};
use filter_common::{ListKind, Reason};
use floodgate_lab::{Netns, veth_pair};
use ipnet::IpNet;
use serde_json::json;

use crate::{
    obj::{DROP, FLOODGATE, FLOOR, GEN, Obj, Rng, net, realistic_v4, udp64_to},
    report::{Section, count, median, ns, ratio},
    sys::{self, CpuTimes, cpu_times, pin_to_cpu, run_in},
};

pub const SRV_IF: &str = "fgbs";
pub const ATK_IF: &str = "fgba";
/// The random flood's sources, on every filter's list (but for the miss case).
pub const FLOOD_NET: &str = "198.18.0.0/15";
pub const NFT_TABLE: &str = "fgb";
pub const IPSET: &str = "fgb-block";

/// Server and attacker namespaces joined by a veth pair (GRO and threaded NAPI on
/// the server end). Dropping it deletes both namespaces, and with them every veth,
/// nft table, iptables rule, ipset and XDP link made inside.
pub struct Lab {
    pub srv: Netns,
    pub atk: Netns,
    pub srv_mac: [u8; 6],
    pub atk_mac: [u8; 6],
}

impl Lab {
    pub fn new() -> anyhow::Result<Self> {
        let srv = Netns::create("fgb-srv")?;
        let atk = Netns::create("fgb-atk")?;
        veth_pair(
            (&srv, SRV_IF, &["198.51.100.1/24", "2001:db8:1::1/64"]),
            (&atk, ATK_IF, &["198.51.100.2/24", "2001:db8:1::2/64"]),
        )?;
        run_in(&srv.name, "ethtool", &["-K", SRV_IF, "gro", "on"]).context("GRO on the server veth")?;
        // The namespace's own /sys (ip netns exec mounts it) holds its devices.
        let cmd = format!("echo 1 > /sys/class/net/{SRV_IF}/threaded");
        sys::run("ip", &["netns", "exec", &srv.name, "sh", "-c", &cmd]).context("threaded NAPI")?;
        let (srv_mac, atk_mac) = (srv.mac(SRV_IF)?, atk.mac(ATK_IF)?);
        Ok(Lab { srv, atk, srv_mac, atk_mac })
    }

    /// A 64-byte UDP frame from `src` to the server, to flood with.
    pub fn udp(&self, src: &str, port: u16) -> Vec<u8> {
        udp64_to(src, self.srv_mac, self.atk_mac, port)
    }

    /// Pins the server veth's NAPI kthreads to CPU1 (they are re-created when an XDP
    /// program is attached or detached).
    pub fn pin_napi(&self) -> anyhow::Result<usize> {
        Ok(floodgate_lab::generator::pin_napi(SRV_IF, 1))
    }

    /// CPU time (ns) the server veth's NAPI kthreads have run: the whole receive path,
    /// filter and stack included, and nothing else that shares the CPU.
    pub fn napi_ns(&self) -> anyhow::Result<u64> {
        Ok(floodgate_lab::generator::napi_ns(SRV_IF))
    }

    /// Frames the server veth has taken off its ring (every one passes its NAPI poll,
    /// whatever then happens to it).
    pub fn rx_frames(&self) -> anyhow::Result<u64> {
        let out = run_in(&self.srv.name, "ethtool", &["-S", SRV_IF])?;
        let mut total = 0;
        for l in out.lines() {
            let l = l.trim();
            if let Some(v) = l.strip_prefix("rx_queue_0_xdp_packets:") {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Attaches `prog` of `obj` to the server veth.
    pub fn attach(&self, obj: &mut Obj, prog: &str, mode: XdpMode) -> anyhow::Result<XdpLinkId> {
        let p = obj.prog_mut(prog)?;
        let id = self
            .srv
            .enter(move || p.attach(c"fgbs", mode))?
            .with_context(|| format!("attaching {prog} ({mode:?}) to {SRV_IF}"))?;
        self.pin_napi()?;
        Ok(id)
    }

    /// Floods the server with `count` copies of `frame` from the attacker namespace,
    /// pinned to CPU0; returns how long the generator took.
    pub fn flood(&self, obj: &Obj, frame: &[u8], count: u32) -> anyhow::Result<Duration> {
        let prog = obj.prog(GEN)?;
        self.atk
            .enter(|| -> anyhow::Result<Duration> {
                pin_to_cpu(0);
                let ifindex = floodgate::loader::ifindex(ATK_IF).context("the attacker's veth")?;
                floodgate_lab::generator::send_live(prog, frame, ifindex, count)
            })?
            .map_err(|e| anyhow!("{e:#}"))
    }
}

/// Disjoint IPv4 prefixes of mixed lengths (no two overlap, as nft interval sets
/// without auto-merge require), none inside 192/8, 198/8 or 203/8.
pub fn disjoint_v4(n: usize, seed: u64) -> Vec<IpNet> {
    let mut rng = Rng::new(seed);
    let mut out: Vec<IpNet> = Vec::with_capacity(n);
    while out.len() < n {
        let mut more: Vec<IpNet> =
            (0..(n - out.len()) * 11 / 10 + 16).map(|_| crate::obj::v4_prefix(&mut rng)).collect();
        more.append(&mut out);
        more.sort_by_key(|p| match p {
            IpNet::V4(v) => (u32::from(v.network()), v.prefix_len()),
            _ => (0, 0),
        });
        for p in more {
            if out.last().is_none_or(|l: &IpNet| !l.contains(&p.network())) {
                out.push(p);
            }
        }
    }
    out.truncate(n);
    out
}

/// One case of part 2: what sits on the server veth.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Filter {
    /// `fgb_drop`: the least a driver-level drop can cost on this path.
    BareDrop,
    /// floodgate, the 1M list with the flood's /15 on it: every frame a blocklist hit.
    Native1M,
    /// floodgate, the same 1M list without the /15: every lookup misses, and the
    /// served-ports policy drops the frame (UDP to a port not served).
    Miss1M,
    Nft1M,
    Ipt1M,
    Native,
    Skb,
    Nft,
    Ipt,
    None,
}

impl Filter {
    const ALL: [Filter; 10] = [
        Filter::BareDrop,
        Filter::Native1M,
        Filter::Miss1M,
        Filter::Nft1M,
        Filter::Ipt1M,
        Filter::Native,
        Filter::Skb,
        Filter::Nft,
        Filter::Ipt,
        Filter::None,
    ];

    fn name(self) -> &'static str {
        match self {
            Filter::BareDrop => "bare XDP_DROP (fgb_drop, native)",
            Filter::Native1M => "floodgate native, 1M list: hit (/15 listed)",
            Filter::Miss1M => "floodgate native, 1M list: miss (policy drops)",
            Filter::Nft1M => "nftables netdev ingress, 1M interval set",
            Filter::Ipt1M => "iptables raw PREROUTING + ipset hash:net, 1M",
            Filter::Native => "floodgate native, 1K list",
            Filter::Skb => "floodgate skb, 1K list",
            Filter::Nft => "nftables netdev ingress, 1K set",
            Filter::Ipt => "iptables raw PREROUTING + ipset hash:net, 1K",
            Filter::None => "no filter (XDP_PASS; the stack drops)",
        }
    }

    /// The nft table or ipset the case uses.
    fn set(self) -> &'static str {
        match self {
            Filter::Nft1M => NFT_TABLE_1M,
            Filter::Ipt1M => IPSET_1M,
            Filter::Ipt => IPSET,
            _ => NFT_TABLE,
        }
    }
}

/// The big list's nft table and ipset (the 1K list's: [`NFT_TABLE`], [`IPSET`]).
pub const NFT_TABLE_1M: &str = "fgbm";
pub const IPSET_1M: &str = "fgb-block1m";

/// nft table `name`: an interval set and a regular chain dropping its sources. No
/// base chain, so it sees no traffic until [`nft_on`] hooks it to the server veth.
pub fn nft_script(name: &str, list: &[IpNet]) -> String {
    let mut s = String::with_capacity(list.len() * 20 + 256);
    let _ =
        write!(s, "table netdev {name} {{\n  set block {{ type ipv4_addr; flags interval; elements = {{ ");
    for (i, p) in list.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{p}");
    }
    s.push_str(" } }\n  chain filt { ip saddr @block drop; }\n}\n");
    s
}

/// Hooks table `name` to the server veth's ingress, or unhooks it. Neither command
/// makes nft fetch the set's elements (any `nft list` would, taking minutes with 1M
/// of them): a base chain holding one jump is added or deleted; the set stays.
fn nft_hook(ns: &str, name: &str, on: bool) -> anyhow::Result<()> {
    let script = if on {
        format!(
            "add chain netdev {name} ingress {{ type filter hook ingress device \"{SRV_IF}\" priority -500; policy accept; }}\n\
             add rule netdev {name} ingress jump filt\n"
        )
    } else {
        format!("delete chain netdev {name} ingress\n")
    };
    let path = std::env::temp_dir().join(format!("fgb-live-{name}-{}.nft", if on { "on" } else { "off" }));
    std::fs::write(&path, script)?;
    let r = run_in(ns, "nft", &["-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    r.map(drop)
}

/// `ipset restore` input for a hash:net set.
pub fn ipset_script(name: &str, list: &[IpNet]) -> String {
    let mut s =
        format!("create {name} hash:net family inet hashsize 65536 maxelem {}\n", list.len().max(65536) * 2);
    for p in list {
        let _ = writeln!(s, "add {name} {p}");
    }
    s
}

fn ipt_counter(ns: &str) -> anyhow::Result<u64> {
    let out = run_in(ns, "iptables", &["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"])?;
    let line = out.lines().nth(2).ok_or_else(|| anyhow!("no rule in {out}"))?;
    Ok(line.split_whitespace().next().unwrap_or("0").parse()?)
}

/// IPv4 packets the server namespace's IP layer has received (`Ip: InReceives` of
/// its /proc/net/snmp): a frame dropped at XDP or in netdev ingress never counts.
/// This is how the nft cases are checked, instead of an nft counter: reading one
/// means `nft list`, which fetches the whole 1M-element set first (minutes).
fn ip_in_receives(ns: &str) -> anyhow::Result<u64> {
    let snmp = run_in(ns, "cat", &["/proc/net/snmp"])?;
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip: "));
    let (names, values) = (ip.next().unwrap_or(""), ip.next().unwrap_or(""));
    let at = names
        .split_whitespace()
        .position(|n| n == "InReceives")
        .ok_or_else(|| anyhow!("no Ip: InReceives in /proc/net/snmp"))?;
    Ok(values.split_whitespace().nth(at).unwrap_or("0").parse()?)
}

/// The XDP objects: `small` (maps for 16,384 entries per family, the 1K list with the
/// /15; also the generator and the bare programs), `big` (floodgate's default
/// capacity, the 1M list, the served-ports policy on).
struct Objs {
    small: Obj,
    big: Obj,
    /// Whether the flood's /15 is on the big list now.
    big_has_flood: bool,
}

/// Puts `f` in place on the server veth; returns the XDP link to detach afterwards.
fn enable(lab: &Lab, o: &mut Objs, f: Filter) -> anyhow::Result<XdpLinkId> {
    let ns = &lab.srv.name;
    let flood = [net(FLOOD_NET)];
    match f {
        Filter::BareDrop => lab.attach(&mut o.small, DROP, XdpMode::Driver),
        Filter::Native1M | Filter::Miss1M => {
            // One entry in or out: a single map write into the active generation.
            let want = f == Filter::Native1M;
            if want && !o.big_has_flood {
                o.big.add(ListKind::Block, &flood)?;
            } else if !want && o.big_has_flood {
                o.big.maps.lists.remove(ListKind::Block, &flood).context("unlisting the /15")?;
            }
            o.big_has_flood = want;
            lab.attach(&mut o.big, FLOODGATE, XdpMode::Driver)
        }
        Filter::Native => lab.attach(&mut o.small, FLOODGATE, XdpMode::Driver),
        Filter::Skb => lab.attach(&mut o.small, FLOODGATE, XdpMode::Skb),
        Filter::Nft | Filter::Nft1M => {
            nft_hook(ns, f.set(), true)?;
            lab.attach(&mut o.small, FLOOR, XdpMode::Driver)
        }
        Filter::Ipt | Filter::Ipt1M => {
            let set = f.set();
            run_in(
                ns,
                "iptables",
                &["-t", "raw", "-A", "PREROUTING", "-m", "set", "--match-set", set, "src", "-j", "DROP"],
            )?;
            lab.attach(&mut o.small, FLOOR, XdpMode::Driver)
        }
        Filter::None => lab.attach(&mut o.small, FLOOR, XdpMode::Driver),
    }
}

fn disable(lab: &Lab, o: &mut Objs, f: Filter, link: XdpLinkId) -> anyhow::Result<()> {
    let ns = &lab.srv.name;
    let (obj, prog) = match f {
        Filter::BareDrop => (&mut o.small, DROP),
        Filter::Native1M | Filter::Miss1M => (&mut o.big, FLOODGATE),
        Filter::Native | Filter::Skb => (&mut o.small, FLOODGATE),
        _ => (&mut o.small, FLOOR),
    };
    obj.prog_mut(prog)?.detach(link).context("detaching")?;
    match f {
        Filter::Nft | Filter::Nft1M => nft_hook(ns, f.set(), false)?,
        Filter::Ipt | Filter::Ipt1M => drop(run_in(ns, "iptables", &["-t", "raw", "-F", "PREROUTING"])?),
        _ => {}
    }
    Ok(())
}

/// Frames dropped so far, as the case itself can tell; `rx` (frames received) and
/// `ip_in` (IPv4 packets the IP layer took) for the cases that cannot.
fn drops(lab: &Lab, o: &Objs, f: Filter, rx: u64, ip_in: u64) -> anyhow::Result<u64> {
    let fg = |obj: &Obj, r: Reason| -> anyhow::Result<u64> { Ok(obj.maps.counters.totals()?.get(r).packets) };
    Ok(match f {
        Filter::Native | Filter::Skb => fg(&o.small, Reason::Blocklist)?,
        Filter::Native1M => fg(&o.big, Reason::Blocklist)?,
        Filter::Miss1M => fg(&o.big, Reason::Policy)?,
        Filter::BareDrop | Filter::Nft | Filter::Nft1M => rx.saturating_sub(ip_in),
        Filter::Ipt | Filter::Ipt1M => ipt_counter(&lab.srv.name)?,
        // The stack drops them all (no socket on the port), after doing its work.
        Filter::None => rx,
    })
}

struct Sample {
    gen_pps: f64,
    rx_pps: f64,
    drop_pps: f64,
    /// Share of the frames sent that the server received (the rest overflowed its ring).
    delivered: f64,
    /// Share of the frames received that the case dropped.
    dropped: f64,
    /// CPU1 busy share (everything on it).
    busy: f64,
    /// NAPI kthread CPU time per received frame.
    ns_per_pkt: f64,
}

fn sample(lab: &Lab, o: &mut Objs, f: Filter, frame: &[u8], n: u32) -> anyhow::Result<Sample> {
    let link = enable(lab, o, f)?;
    let result = (|| {
        // Let the attach settle (NAPI re-created, kthread pinned).
        std::thread::sleep(Duration::from_millis(50));
        let (rx0, ip0) = (lab.rx_frames()?, ip_in_receives(&lab.srv.name)?);
        let (d0, c0, t0) = (drops(lab, o, f, rx0, ip0)?, cpu_times(1)?, lab.napi_ns()?);
        let took = lab.flood(&o.small, frame, n)?;
        std::thread::sleep(Duration::from_millis(30));
        let t1 = lab.napi_ns()?;
        let c1: CpuTimes = cpu_times(1)?;
        let (rx1, ip1) = (lab.rx_frames()?, ip_in_receives(&lab.srv.name)?);
        let d1 = drops(lab, o, f, rx1, ip1)?;
        let cpu = c1.since(&c0);
        let rx = (rx1 - rx0) as f64;
        let secs = took.as_secs_f64();
        let d = d1.saturating_sub(d0) as f64;
        Ok(Sample {
            gen_pps: f64::from(n) / secs,
            rx_pps: rx / secs,
            drop_pps: d / secs,
            delivered: rx / f64::from(n),
            dropped: d / rx.max(1.0),
            busy: cpu.busy as f64 / cpu.total.max(1) as f64,
            ns_per_pkt: (t1 - t0) as f64 / rx.max(1.0),
        })
    })();
    disable(lab, o, f, link)?;
    result
}

/// Loads `list` into the server namespace as nft table `name` and as ipset `set`;
/// returns the seconds each took.
fn load_kernel_sets(lab: &Lab, name: &str, set: &str, list: &[IpNet]) -> anyhow::Result<(f64, f64)> {
    let ns = &lab.srv.name;
    let path = std::env::temp_dir().join(format!("fgb-live-{set}.ipset"));
    std::fs::write(&path, ipset_script(set, list))?;
    let t = Instant::now();
    let r = run_in(ns, "ipset", &["restore", "-file", path.to_str().unwrap()]).context("ipset restore");
    let _ = std::fs::remove_file(&path);
    r?;
    let t_ipset = t.elapsed().as_secs_f64();
    let path = std::env::temp_dir().join(format!("fgb-live-{name}.nft"));
    std::fs::write(&path, nft_script(name, list))?;
    let t = Instant::now();
    let r = run_in(ns, "nft", &["-f", path.to_str().unwrap()]).context("nft -f");
    let _ = std::fs::remove_file(&path);
    r?;
    Ok((t_ipset, t.elapsed().as_secs_f64()))
}

pub fn run(quick: bool) -> anyhow::Result<Vec<Section>> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("part 2 needs two CPUs (generator on CPU0, receiver on CPU1)");
    }
    let (rounds, n) = if quick { (4, 3_000_000) } else { (6, 10_000_000) };
    let t_start = Instant::now();
    let lab = Lab::new()?;
    let flood = net(FLOOD_NET);

    // The 1K list (the /15 among it), as before.
    let mut small_list = disjoint_v4(1000, 5);
    small_list.push(flood);
    let mut small = Obj::load(16_384)?;
    small.add(ListKind::Block, &small_list)?;
    small.set_mask(u32::MAX)?;

    // The 1M list (issue 13's mix, none of it inside the /15). Each tool loads it once
    // per run; per case only a hook, a rule or an XDP link changes.
    let big_list = realistic_v4(1_000_000, 21);
    let t = Instant::now();
    let mut big = Obj::load(1_000_000 + 1024)?;
    big.maps.lists.replace(ListKind::Block, &big_list, &mut |_, _| {}).context("loading the 1M list")?;
    let t_fg = t.elapsed().as_secs_f64();
    {
        use filter_common::rules::PolicyConfig;
        // Served: TCP 80 and 443 only, no ephemeral range: the flood (UDP to port 9)
        // is dropped by the policy once its source misses the lists. A blocklist hit
        // is decided before the policy is looked at, so it costs the hit case nothing.
        let cfg = PolicyConfig { enforce: 1, ephemeral: 0, ..Default::default() };
        big.maps.policy.set_policy(cfg, &floodgate::policy::parse_serve("tcp/80,tcp/443")?)?;
    }
    let mut big_kernel = big_list.clone();
    big_kernel.push(flood);
    drop(big_list);
    let (t_ipset_1m, t_nft_1m) = load_kernel_sets(&lab, NFT_TABLE_1M, IPSET_1M, &big_kernel)?;
    load_kernel_sets(&lab, NFT_TABLE, IPSET, &small_list)?;
    eprintln!(
        "bench: 1M list loaded: floodgate {t_fg:.1} s (library replace), ipset restore {t_ipset_1m:.1} s, \
         nft -f {t_nft_1m:.1} s"
    );
    let big_entries = big_kernel.len();
    drop(big_kernel);
    let mut o = Objs { small, big, big_has_flood: false };

    let frame = lab.udp("198.18.0.1", 9);
    let filters = Filter::ALL;
    let mut samples: Vec<Vec<Sample>> = filters.iter().map(|_| Vec::new()).collect();
    let t_rounds = Instant::now();
    for round in 0..rounds {
        // Interleaved, each round starting one case later: no case always follows the same one.
        for k in 0..filters.len() {
            let i = (k + round) % filters.len();
            let f = filters[i];
            let s = sample(&lab, &mut o, f, &frame, n).with_context(|| f.name())?;
            eprintln!(
                "bench: live round {round} {}: gen {:.2} Mpps, rx {:.2} Mpps ({:.0}%), dropped {:.1}%, CPU1 {:.0}%, {:.0} ns/frame",
                f.name(),
                s.gen_pps / 1e6,
                s.rx_pps / 1e6,
                s.delivered * 100.0,
                s.dropped * 100.0,
                s.busy * 100.0,
                s.ns_per_pkt
            );
            samples[i].push(s);
        }
    }
    let rounds_secs = t_rounds.elapsed().as_secs_f64();

    let idx = |f: Filter| filters.iter().position(|&x| x == f).expect("case");
    let med = |v: &[Sample], f: fn(&Sample) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let ns_of = |f: Filter| med(&samples[idx(f)], |s| s.ns_per_pkt);
    let bare_ns = ns_of(Filter::BareDrop);
    let mut sec = Section::new(
        "2. Live drop cost: random-source UDP flood (198.18.0.0/15) over a veth pair, CPU1 ns per received frame",
        &[
            "case",
            "CPU ns/frame",
            "min..max",
            "vs bare XDP_DROP",
            "dropped",
            "received/s (of sent)",
            "generator/s",
            "capacity/core",
            "CPU1 busy",
        ],
    );
    let mut j = Vec::new();
    let mut gen_bound = Vec::new();
    let mut leaks = Vec::new();
    for (f, v) in filters.iter().zip(&samples) {
        let (rx, gen_pps, busy, nspp, delivered, dropped) = (
            med(v, |s| s.rx_pps),
            med(v, |s| s.gen_pps),
            med(v, |s| s.busy),
            med(v, |s| s.ns_per_pkt),
            med(v, |s| s.delivered),
            med(v, |s| s.dropped),
        );
        let lo = v.iter().map(|s| s.ns_per_pkt).fold(f64::MAX, f64::min);
        let hi = v.iter().map(|s| s.ns_per_pkt).fold(0.0, f64::max);
        if delivered > 0.98 {
            gen_bound.push(f.name());
        }
        if v.iter().any(|s| s.dropped < 0.99) {
            leaks.push(f.name());
        }
        sec.rows.push(vec![
            f.name().into(),
            ns(nspp),
            format!("{}..{}", ns(lo), ns(hi)),
            ratio(nspp / bare_ns),
            format!("{:.1}%", dropped * 100.0),
            format!("{} ({:.0}%)", count(rx), delivered * 100.0),
            count(gen_pps),
            count(1e9 / nspp),
            format!("{:.0}%", busy * 100.0),
        ]);
        j.push(json!({
            "filter": f.name(), "received_pps": rx, "generator_pps": gen_pps, "dropped_pps": med(v, |s| s.drop_pps),
            "delivered_share": delivered, "dropped_share": dropped, "cpu1_busy": busy, "cpu_ns_per_packet": nspp,
            "ratio_to_bare_drop": nspp / bare_ns,
            "samples": v.iter().map(|s| json!({"gen_pps": s.gen_pps, "rx_pps": s.rx_pps, "drop_pps": s.drop_pps,
                "delivered": s.delivered, "dropped": s.dropped, "cpu1_busy": s.busy, "ns_per_packet": s.ns_per_pkt}))
                .collect::<Vec<_>>(),
        }));
    }
    sec.notes.push(format!(
        "{} 64-byte frames per sample, {rounds} rounds, the {} cases interleaved (each round starts one case later), \
         medians and min..max over the rounds. Sources: random in 198.18.0.0/15 for every frame. 1M list: {} \
         disjoint IPv4 prefixes (2% /16, 8% /20, 30% /24, 60% /32 at random places in the unicast space, plus the \
         flood's /15), the same for floodgate, ipset and nft, each loaded once per run (floodgate {t_fg:.1} s through \
         the library's replace, ipset restore {t_ipset_1m:.1} s, nft -f {t_nft_1m:.1} s); per case only an XDP link, an \
         iptables rule or nft's base chain changes. floodgate 1M runs with its default capacity (1M per family) and the \
         served-ports policy on (tcp/80, tcp/443): \"hit\" lists the /15 (blocklist drop), \"miss\" takes it off the list \
         (one map write), so every lookup misses and the policy drops the frame (UDP to port 9). 1K list: {} disjoint \
         prefixes with the /15, floodgate's maps sized for 16,384 entries.",
        count(f64::from(n)),
        filters.len(),
        count(big_entries as f64),
        count(small_list.len() as f64),
    ));
    sec.notes.push(
        "Generator: fgb_gen (XDP_TX, live-frames BPF_PROG_TEST_RUN) on CPU0; receiver: the server veth's threaded \
         NAPI kthread on CPU1. CPU ns/frame = that kthread's own CPU time (schedstat) / frames received (veth xdp \
         counters): the whole receive path, filter and stack; capacity/core = 1e9 / it. Every case has an XDP program \
         on the veth (floodgate, fgb_drop, or fgb_pass in front of nft, iptables or nothing), so delivery is the same. \
         \"dropped\" = share of received frames the case dropped: floodgate's own counters (blocklist; policy for \
         miss), the iptables rule's counter, and for bare drop and nft the frames that never reached the namespace's \
         IP layer (received - Ip InReceives of its /proc/net/snmp; no nft counter is read, since any `nft list` \
         fetches the 1M-element set first). No filter: the stack drops the frames (no socket on the port)."
            .into(),
    );
    if !leaks.is_empty() {
        sec.notes.push(format!(
            "WARNING: in some round under 99% of the frames were dropped for: {}.",
            leaks.join(", ")
        ));
    }
    if gen_bound.is_empty() {
        sec.notes
            .push("The generator was faster than every case: the server's ring overflowed in each.".into());
    } else {
        sec.notes.push(format!(
            "The generator was the bottleneck for: {} (the server received over 98% of the frames): there, \
             received/s is the generator's rate, and capacity/core estimates the filter's.",
            gen_bound.join(", ")
        ));
    }
    sec.notes.push(format!(
        "Part 2 took {:.0} s: {:.0} s loading, {rounds_secs:.0} s measuring.",
        t_start.elapsed().as_secs_f64(),
        t_start.elapsed().as_secs_f64() - rounds_secs
    ));
    sec.json = json!({"frames_per_sample": n, "rounds": rounds, "list_entries_1m": big_entries,
        "list_entries_1k": small_list.len(), "load_seconds": {"floodgate_replace": t_fg, "ipset_restore": t_ipset_1m,
        "nft_f": t_nft_1m}, "filters": j});

    // Ratios from the same run: of the medians, and their range over the rounds (each
    // round's pair measured minutes apart at most).
    let mut goals = Section::new(
        "2b. Live ratios (issue 13), same run",
        &["ratio", "median", "per round min..max", "goal"],
    );
    /// A goal on a ratio: (at most, bound) or (at least, bound).
    type Goal = Option<(bool, f64)>;
    let pairs: [(&str, Filter, Filter, Goal); 8] = [
        ("floodgate 1M hit / bare XDP_DROP", Filter::Native1M, Filter::BareDrop, Some((true, 1.5))),
        ("nftables 1M / floodgate 1M hit", Filter::Nft1M, Filter::Native1M, Some((false, 8.0))),
        ("ipset 1M / floodgate 1M hit", Filter::Ipt1M, Filter::Native1M, None),
        ("floodgate 1M miss / hit", Filter::Miss1M, Filter::Native1M, Some((true, 1.3))),
        ("floodgate 1M miss / bare XDP_DROP", Filter::Miss1M, Filter::BareDrop, None),
        ("floodgate 1K / bare XDP_DROP", Filter::Native, Filter::BareDrop, None),
        ("nftables 1K / floodgate 1K", Filter::Nft, Filter::Native, None),
        ("ipset 1K / floodgate 1K", Filter::Ipt, Filter::Native, None),
    ];
    let mut gj = Vec::new();
    for (name, a, b, goal) in pairs {
        let m = ns_of(a) / ns_of(b);
        let per: Vec<f64> =
            samples[idx(a)].iter().zip(&samples[idx(b)]).map(|(x, y)| x.ns_per_pkt / y.ns_per_pkt).collect();
        let (lo, hi) =
            (per.iter().copied().fold(f64::MAX, f64::min), per.iter().copied().fold(0.0, f64::max));
        let g = match goal {
            Some((at_most, x)) => {
                let met = if at_most { m <= x } else { m >= x };
                format!(
                    "{} {x:.1}x: {}",
                    if at_most { "<=" } else { ">=" },
                    if met { "met" } else { "NOT met" }
                )
            }
            None => "-".into(),
        };
        goals.rows.push(vec![name.into(), ratio(m), format!("{}..{}", ratio(lo), ratio(hi)), g]);
        gj.push(json!({"ratio": name, "median_ratio": m, "per_round": per}));
    }
    goals.notes.push(
        "median = ratio of the two cases' median CPU ns/frame; per round = the same ratio within each round. \
         floodgate 1K and 1M differ in map capacity too (16,384 against 1M entries per family)."
            .into(),
    );
    goals.json = json!(gj);
    drop(o);
    drop(lab);
    Ok(vec![sec, goals])
}
