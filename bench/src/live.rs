//! Part 2: live drop rate. An attacker namespace floods the server's veth with the
//! XDP_TX generator (`fgb_gen` run by BPF_PROG_TEST_RUN in live-frames mode, pinned
//! to CPU0): frames reach the server veth as `xdp_frame`s, as from a NIC driver. The
//! server's receive work runs in its threaded NAPI kthread, pinned to CPU1, so the
//! filter's cost per packet is CPU1's busy time divided by the frames it received.
//! Every case gets the same delivery: an XDP program on the server veth (floodgate
//! itself, or the empty `fgb_pass` in front of nftables, iptables or no filter).

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::programs::{TestRun, TestRunOptions, xdp::XdpLinkId};
use aya::programs::{TestRunAttrs, XdpMode};
use filter_common::{ListKind, Reason};
use floodgate::lab::{Netns, veth_pair};
use ipnet::IpNet;
use serde_json::json;

use crate::{
    obj::{FLOODGATE, FLOOR, GEN, Obj, Rng, net, udp64_to},
    report::{Section, count, median, ns, ratio},
    sys::{self, CpuTimes, cpu_times, pin_to_cpu, run_in},
};

pub const SRV_IF: &str = "fgbs";
pub const ATK_IF: &str = "fgba";
/// The random flood's sources, on every filter's list.
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
            &srv,
            SRV_IF,
            &["198.51.100.1/24", "2001:db8:1::1/64"],
            &atk,
            ATK_IF,
            &["198.51.100.2/24", "2001:db8:1::2/64"],
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
        let prefix = format!("napi/{SRV_IF}-");
        let mut n = 0;
        for e in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.trim().starts_with(&prefix) {
                // SAFETY: a zeroed cpu_set_t with CPU1 set, for that thread.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(1, &mut set);
                    libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                n += 1;
            }
        }
        Ok(n)
    }

    /// CPU time (ns) the server veth's NAPI kthreads have run: the whole receive path,
    /// filter and stack included, and nothing else that shares the CPU.
    pub fn napi_ns(&self) -> anyhow::Result<u64> {
        let prefix = format!("napi/{SRV_IF}-");
        let mut total = 0;
        for e in std::fs::read_dir("/proc")?.flatten() {
            if e.file_name().to_string_lossy().parse::<i32>().is_err() {
                continue;
            }
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.trim().starts_with(&prefix) {
                let stat = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
                total += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        Ok(total)
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
                let name = std::ffi::CString::new(ATK_IF).unwrap();
                // SAFETY: a valid C string.
                let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                if ifindex == 0 {
                    bail!("no {ATK_IF} in the attacker namespace");
                }
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
                // egress_ifindex.
                let mut ctx = [0u8; 24];
                ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
                ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
                let opts = TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&ctx),
                    repeat: count,
                    attrs: TestRunAttrs::new().xdp_live_frames(0),
                    ..Default::default()
                };
                let t = Instant::now();
                prog.test_run(opts).context("live-frames test_run (the generator)")?;
                Ok(t.elapsed())
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Filter {
    Native,
    Skb,
    Nft,
    Ipt,
    None,
}

impl Filter {
    fn name(self) -> &'static str {
        match self {
            Filter::Native => "floodgate native",
            Filter::Skb => "floodgate skb",
            Filter::Nft => "nftables netdev ingress, set",
            Filter::Ipt => "iptables raw PREROUTING + ipset",
            Filter::None => "no filter",
        }
    }
}

/// nft script: a netdev ingress chain on the server veth dropping sources in a set.
pub fn nft_script(list: &[IpNet]) -> String {
    let mut s =
        format!("table netdev {NFT_TABLE} {{\n  set block {{ type ipv4_addr; flags interval; elements = {{ ");
    for (i, p) in list.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{p}");
    }
    let _ = write!(
        s,
        " }} }}\n  chain ingress {{ type filter hook ingress device \"{SRV_IF}\" priority -500; policy accept; \
         ip saddr @block counter drop; }}\n}}\n"
    );
    s
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

pub fn nft_counter(ns: &str) -> anyhow::Result<u64> {
    let out = run_in(ns, "nft", &["list", "chain", "netdev", NFT_TABLE, "ingress"])?;
    let at = out.find("counter packets ").ok_or_else(|| anyhow!("no counter in {out}"))?;
    let rest = &out[at + "counter packets ".len()..];
    Ok(rest.split_whitespace().next().unwrap_or("0").parse()?)
}

fn ipt_counter(ns: &str) -> anyhow::Result<u64> {
    let out = run_in(ns, "iptables", &["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"])?;
    let line = out.lines().nth(2).ok_or_else(|| anyhow!("no rule in {out}"))?;
    Ok(line.split_whitespace().next().unwrap_or("0").parse()?)
}

/// Puts `f` in place on the server veth; returns the XDP link to detach afterwards.
fn enable(lab: &Lab, obj: &mut Obj, f: Filter, list: &[IpNet]) -> anyhow::Result<XdpLinkId> {
    let ns = &lab.srv.name;
    match f {
        Filter::Native => lab.attach(obj, FLOODGATE, XdpMode::Driver),
        Filter::Skb => lab.attach(obj, FLOODGATE, XdpMode::Skb),
        Filter::Nft => {
            let path = std::env::temp_dir().join("fgb-live.nft");
            std::fs::write(&path, nft_script(list))?;
            run_in(ns, "nft", &["-f", path.to_str().unwrap()])?;
            lab.attach(obj, FLOOR, XdpMode::Driver)
        }
        Filter::Ipt => {
            run_in(
                ns,
                "iptables",
                &["-t", "raw", "-A", "PREROUTING", "-m", "set", "--match-set", IPSET, "src", "-j", "DROP"],
            )?;
            lab.attach(obj, FLOOR, XdpMode::Driver)
        }
        Filter::None => lab.attach(obj, FLOOR, XdpMode::Driver),
    }
}

fn disable(lab: &Lab, obj: &mut Obj, f: Filter, link: XdpLinkId) -> anyhow::Result<()> {
    let ns = &lab.srv.name;
    let prog = if matches!(f, Filter::Native | Filter::Skb) { FLOODGATE } else { FLOOR };
    obj.prog_mut(prog)?.detach(link).context("detaching")?;
    match f {
        Filter::Nft => drop(run_in(ns, "nft", &["delete", "table", "netdev", NFT_TABLE])?),
        Filter::Ipt => drop(run_in(ns, "iptables", &["-t", "raw", "-F", "PREROUTING"])?),
        _ => {}
    }
    Ok(())
}

fn drops(lab: &Lab, obj: &Obj, f: Filter) -> anyhow::Result<u64> {
    Ok(match f {
        Filter::Native | Filter::Skb => obj.maps.totals()?.get(Reason::Blocklist).packets,
        Filter::Nft => nft_counter(&lab.srv.name)?,
        Filter::Ipt => ipt_counter(&lab.srv.name)?,
        // The stack drops them all (no socket on the port), after doing its work.
        Filter::None => 0,
    })
}

struct Sample {
    gen_pps: f64,
    rx_pps: f64,
    drop_pps: f64,
    /// Share of the frames sent that the server received (the rest overflowed its ring).
    delivered: f64,
    /// CPU1 busy share (everything on it).
    busy: f64,
    /// NAPI kthread CPU time per received frame.
    ns_per_pkt: f64,
}

fn sample(
    lab: &Lab,
    obj: &mut Obj,
    f: Filter,
    list: &[IpNet],
    frame: &[u8],
    n: u32,
) -> anyhow::Result<Sample> {
    let link = enable(lab, obj, f, list)?;
    let result = (|| {
        // Let the attach settle (NAPI re-created, kthread pinned).
        std::thread::sleep(Duration::from_millis(50));
        let (rx0, d0, c0, t0) = (lab.rx_frames()?, drops(lab, obj, f)?, cpu_times(1)?, lab.napi_ns()?);
        let took = lab.flood(obj, frame, n)?;
        std::thread::sleep(Duration::from_millis(30));
        let (rx1, d1, c1): (u64, u64, CpuTimes) = (lab.rx_frames()?, drops(lab, obj, f)?, cpu_times(1)?);
        let t1 = lab.napi_ns()?;
        let cpu = c1.since(&c0);
        let rx = (rx1 - rx0) as f64;
        let secs = took.as_secs_f64();
        let d = if f == Filter::None { rx } else { (d1 - d0) as f64 };
        Ok(Sample {
            gen_pps: f64::from(n) / secs,
            rx_pps: rx / secs,
            drop_pps: d / secs,
            delivered: rx / f64::from(n),
            busy: cpu.busy as f64 / cpu.total.max(1) as f64,
            ns_per_pkt: (t1 - t0) as f64 / rx.max(1.0),
        })
    })();
    disable(lab, obj, f, link)?;
    result
}

pub fn run(quick: bool) -> anyhow::Result<Vec<Section>> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("part 2 needs two CPUs (generator on CPU0, receiver on CPU1)");
    }
    let (rounds, n) = if quick { (5, 3_000_000) } else { (7, 10_000_000) };
    let lab = Lab::new()?;
    let mut list = disjoint_v4(1000, 5);
    list.push(net(FLOOD_NET));
    let mut obj = Obj::load(16_384)?;
    obj.add(ListKind::Block, &list)?;
    obj.set_mask(u32::MAX)?;
    let path = std::env::temp_dir().join("fgb-live.ipset");
    std::fs::write(&path, ipset_script(IPSET, &list))?;
    run_in(&lab.srv.name, "ipset", &["restore", "-file", path.to_str().unwrap()]).context("ipset restore")?;
    let frame = lab.udp("198.18.0.1", 9);
    let filters = [Filter::Native, Filter::Skb, Filter::Nft, Filter::Ipt, Filter::None];
    let mut samples: Vec<Vec<Sample>> = filters.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, f) in filters.iter().enumerate() {
            let s = sample(&lab, &mut obj, *f, &list, &frame, n).with_context(|| f.name())?;
            eprintln!(
                "bench: live round {round} {}: gen {:.2} Mpps, rx {:.2} Mpps ({:.0}%), drop {:.2} Mpps, CPU1 {:.0}%, {:.0} ns/pkt",
                f.name(),
                s.gen_pps / 1e6,
                s.rx_pps / 1e6,
                s.delivered * 100.0,
                s.drop_pps / 1e6,
                s.busy * 100.0,
                s.ns_per_pkt
            );
            samples[i].push(s);
        }
    }
    let mut sec = Section::new(
        "2. Live drop rate: random-source UDP flood (198.18.0.0/15) over a veth pair",
        &[
            "filter",
            "dropped/s",
            "received/s",
            "generator/s",
            "CPU ns/packet",
            "vs floodgate native",
            "capacity/core",
            "CPU1 busy",
            "bound by",
        ],
    );
    let med = |v: &[Sample], f: fn(&Sample) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let native_ns = med(&samples[0], |s| s.ns_per_pkt);
    let mut j = Vec::new();
    let mut gen_bound = Vec::new();
    for (f, v) in filters.iter().zip(&samples) {
        let (drop, rx, gen_pps, busy, nspp, delivered) = (
            med(v, |s| s.drop_pps),
            med(v, |s| s.rx_pps),
            med(v, |s| s.gen_pps),
            med(v, |s| s.busy),
            med(v, |s| s.ns_per_pkt),
            med(v, |s| s.delivered),
        );
        // The server took nearly every frame: the generator, not the filter, set the rate.
        let bound = if delivered > 0.98 { "generator" } else { "receiver (ring overflowed)" };
        if delivered > 0.98 {
            gen_bound.push(f.name());
        }
        sec.rows.push(vec![
            f.name().into(),
            count(drop),
            format!("{} ({:.0}%)", count(rx), delivered * 100.0),
            count(gen_pps),
            ns(nspp),
            ratio(nspp / native_ns),
            count(1e9 / nspp),
            format!("{:.0}%", busy * 100.0),
            bound.into(),
        ]);
        j.push(json!({
            "filter": f.name(), "dropped_pps": drop, "received_pps": rx, "generator_pps": gen_pps,
            "delivered_share": delivered, "cpu1_busy": busy, "cpu_ns_per_packet": nspp, "bound_by": bound,
            "samples": v.iter().map(|s| json!({"gen_pps": s.gen_pps, "rx_pps": s.rx_pps, "drop_pps": s.drop_pps, "delivered": s.delivered,
                "cpu1_busy": s.busy, "ns_per_packet": s.ns_per_pkt})).collect::<Vec<_>>(),
        }));
    }
    sec.notes.push(format!(
        "{n} 64-byte frames per sample, {rounds} rounds, filters interleaved, medians. Every filter holds the same \
         {} IPv4 prefixes (the flood's /15 among them). Generator: fgb_gen (XDP_TX, live-frames BPF_PROG_TEST_RUN) \
         on CPU0; receiver: the server veth's threaded NAPI kthread on CPU1. CPU ns/packet = that kthread's own CPU time \
         (schedstat) / frames received: the whole receive path, filter and stack, without other load sharing CPU1; \
         capacity/core = 1e9 / it. dropped/s and received/s are what this run achieved (other load on CPU1 \
         lowers them). \"vs floodgate native\" is the CPU cost ratio. No filter: the stack drops the frames (no socket on the port) after doing its work.",
        list.len()
    ));
    if gen_bound.is_empty() {
        sec.notes.push(
            "The generator was faster than every filter: in every case the server's ring overflowed.".into(),
        );
    } else {
        sec.notes.push(format!(
            "The generator was the bottleneck for: {} (the server received over 98% of the frames): there, \
             received/s is the generator's rate, and capacity/core estimates the filter's.",
            gen_bound.join(", ")
        ));
    }
    sec.json = json!({"frames_per_sample": n, "rounds": rounds, "list_entries": list.len(), "filters": j});
    drop(obj);
    drop(lab);
    Ok(vec![sec])
}
