//! The real XDP object, loaded through floodgate's own loader, next to the bench's
//! helper programs (bench-ebpf, built by build.rs), plus frame and list builders.

use std::net::IpAddr;

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{Array, MapData, ProgramArray},
    programs::{TestRun, TestRunOptions, Xdp},
};
use filter_common::{ListKind, limit::LimitConfig};
use floodgate::{
    config::BpfLogLevel,
    loader::{self, Capacity},
    maps::FilterMaps,
};
use floodgate_lab::{FrameSpec, build};
use ipnet::IpNet;

pub const FLOOR: &str = "fgb_pass";
pub const DROP: &str = "fgb_drop";
pub const GEN: &str = "fgb_gen";
pub const WRAP: &str = "fgb_wrap";
pub const FLOODGATE: &str = filter_common::PROGRAM_NAME;

pub struct Obj {
    /// floodgate's object, as production loads it.
    pub ebpf: Ebpf,
    /// The `fgb_*` programs.
    bench: Ebpf,
    pub maps: FilterMaps,
    cfg: Array<MapData, u32>,
    template: Array<MapData, [u8; TEMPLATE_LEN]>,
    jump: ProgramArray<MapData>,
}

/// Longest frame the generator restores (bench-ebpf).
const TEMPLATE_LEN: usize = 128;

/// The bench-ebpf object (empty when built without bpf-linker: see ebpf-build).
fn bench_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fgb"))
}

impl Obj {
    /// Loads floodgate (lists of `entries` per family) and the bench programs.
    pub fn load(entries: u32) -> anyhow::Result<Self> {
        Self::load_with(entries, None)
    }

    /// As [`Obj::load`], with the data path's log level `bpf_log` (None: off).
    pub fn load_with(entries: u32, bpf_log: Option<BpfLogLevel>) -> anyhow::Result<Self> {
        let cap = Capacity::entries(entries);
        let mut ebpf = loader::load(cap, bpf_log).context("loading the XDP object (as root?)")?;
        loader::init_meta(&mut ebpf, 0, 0, cap, bpf_log)?;
        let maps = FilterMaps::open(&mut ebpf)?;
        anyhow::ensure!(
            !bench_object().is_empty(),
            "the bench was built without bpf-linker, so it holds no fgb_* programs: run scripts/setup.sh, then build again"
        );
        let mut bench = Ebpf::load(bench_object()).context("loading the bench's XDP object")?;
        for name in [FLOOR, DROP, GEN, WRAP] {
            let p: &mut Xdp = bench
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the bench object"))?
                .try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        let mut take = |name: &str| bench.take_map(name).ok_or_else(|| anyhow!("no {name}"));
        let cfg = Array::try_from(take("FGB_CFG")?)?;
        let template = Array::try_from(take("FGB_TEMPLATE")?)?;
        let jump = ProgramArray::try_from(take("FGB_JUMP")?)?;
        Ok(Self { ebpf, bench, maps, cfg, template, jump })
    }

    /// The object holding `name`: the bench's (fgb_*) or floodgate's.
    fn object(&self, name: &str) -> &Ebpf {
        if name.starts_with("fgb_") { &self.bench } else { &self.ebpf }
    }

    pub fn prog(&self, name: &str) -> anyhow::Result<&Xdp> {
        Ok(self.object(name).program(name).ok_or_else(|| anyhow!("no program {name}"))?.try_into()?)
    }

    pub fn prog_mut(&mut self, name: &str) -> anyhow::Result<&mut Xdp> {
        let obj = if name.starts_with("fgb_") { &mut self.bench } else { &mut self.ebpf };
        Ok(obj.program_mut(name).ok_or_else(|| anyhow!("no program {name}"))?.try_into()?)
    }

    /// Where `fgb_wrap` tail-calls to: a program of either object (both are XDP, so
    /// the program array takes floodgate's entry too).
    pub fn jump_to(&mut self, name: &str) -> anyhow::Result<()> {
        let fd = self.prog(name)?.fd()?.try_clone()?;
        self.jump.set(0, &fd, 0).context("setting the tail call")
    }

    /// 0: the rewrite repeats one source; u32::MAX: a random source per frame.
    pub fn set_mask(&mut self, mask: u32) -> anyhow::Result<()> {
        self.cfg.set(0, &mask, 0).context("FGB_CFG")
    }

    /// IPv4 sources of the rewrite: the bits of `span` drawn at random (under the
    /// mask of [`Obj::set_mask`]), the others from `base`. `span` 0 restores the
    /// default, 198.18.0.0/15; (0, u32::MAX) draws from the whole 32-bit space.
    pub fn set_v4_sources(&mut self, base: u32, span: u32) -> anyhow::Result<()> {
        self.cfg.set(2, &base, 0).context("FGB_CFG")?;
        self.cfg.set(3, &span, 0).context("FGB_CFG")
    }

    /// Has the generator restore every frame to `frame` before sending it (None: it
    /// sends whatever the recycled page holds, which is the frame as long as nobody
    /// rewrote it).
    pub fn set_template(&mut self, frame: Option<&[u8]>) -> anyhow::Result<()> {
        let f = frame.unwrap_or_default();
        anyhow::ensure!(f.len() <= TEMPLATE_LEN, "template frame of {} bytes", f.len());
        let mut t = [0u8; TEMPLATE_LEN];
        t[..f.len()].copy_from_slice(f);
        self.template.set(0, &t, 0).context("FGB_TEMPLATE")?;
        self.cfg.set(1, &(f.len() as u32), 0).context("FGB_CFG")
    }

    /// ns per run of `prog` on `frame`, as the kernel measured it over `repeat` runs.
    pub fn time(&self, prog: &str, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
        let opts = TestRunOptions { data_in: Some(frame), repeat, ..Default::default() };
        let r = self.prog(prog)?.test_run(opts).with_context(|| format!("test_run {prog}"))?;
        Ok(r.duration.as_nanos() as f64)
    }

    pub fn add(&mut self, kind: ListKind, nets: &[IpNet]) -> anyhow::Result<()> {
        self.maps.lists.add(kind, nets, None, &mut |_, _| {}).context("filling the list")?;
        Ok(())
    }

    pub fn set_limits(&mut self, cfg: Option<&LimitConfig>) -> anyhow::Result<()> {
        let off = LimitConfig::default();
        self.maps.limiter.set_limits(cfg.unwrap_or(&off)).context("setting limits")
    }
}

/// A limiter on at `pps` per source (/32, /64), burst `pps`.
pub fn limits(pps: u64) -> LimitConfig {
    use filter_common::limit::Bucket;
    LimitConfig {
        enabled: 1,
        v4_prefix: 32,
        v6_prefix: 64,
        packets: Bucket::per_second(pps, pps),
        given: [pps, 0, 0, 0],
        ..Default::default()
    }
}

pub const SRV_V4: &str = "198.51.100.1";
pub const SRV_V6: &str = "2001:db8:1::1";

/// A 64-byte UDP frame from `src` to the lab server (port 9).
pub fn udp64(src: &str) -> Vec<u8> {
    udp64_to(src, [0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2], 9)
}

pub fn udp64_to(src: &str, dst_mac: [u8; 6], src_mac: [u8; 6], port: u16) -> Vec<u8> {
    let src: IpAddr = src.parse().expect("bench address");
    let dst: IpAddr = if src.is_ipv4() { SRV_V4.parse().unwrap() } else { SRV_V6.parse().unwrap() };
    let mut spec = FrameSpec::udp(src, dst, port);
    spec.dst_mac = dst_mac;
    spec.src_mac = src_mac;
    // 14 + 20 + 8 or 14 + 40 + 8 bytes of headers.
    spec.payload = vec![0u8; if src.is_ipv4() { 22 } else { 2 }];
    let f = build(&spec);
    debug_assert_eq!(f.len(), 64);
    f
}

/// A TCP SYN (54 bytes, no options) from `src` to the server's `port`.
pub fn syn(src: &str, dst_mac: [u8; 6], src_mac: [u8; 6], port: u16) -> Vec<u8> {
    let src: IpAddr = src.parse().expect("bench address");
    let dst: IpAddr = if src.is_ipv4() { SRV_V4.parse().unwrap() } else { SRV_V6.parse().unwrap() };
    let mut spec = FrameSpec::tcp(src, dst, port, 0x02);
    spec.dst_mac = dst_mac;
    spec.src_mac = src_mac;
    build(&spec)
}

/// xorshift64*: deterministic lists, the same in every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A random IPv4 prefix of mixed length, never inside the ranges the bench sends
/// from (192/8, 198/8, 203/8 and the 0/8, 127/8, 224/3 specials).
pub fn v4_prefix(rng: &mut Rng) -> IpNet {
    let r = rng.next();
    let len = match r % 10 {
        0..=4 => 32,
        5..=7 => 24,
        // Short prefixes stay few and small, so disjoint lists of millions exist.
        _ => 20 + (r >> 8) as u8 % 11,
    };
    let mut first = 1 + ((r >> 16) % 222) as u8;
    if matches!(first, 127 | 192 | 198 | 203) {
        first = 10;
    }
    let addr = u32::from(first) << 24 | ((r >> 24) as u32 & 0x00ff_ffff);
    IpNet::new(IpAddr::V4(addr.into()), len).unwrap().trunc()
}

/// A random IPv6 prefix of mixed length in 2400::/6-ish space, never 2001:db8::/32.
pub fn v6_prefix(rng: &mut Rng) -> IpNet {
    let (a, b) = (rng.next(), rng.next());
    let len = match a % 10 {
        0..=3 => 128,
        4..=6 => 48,
        7..=8 => 64,
        _ => 32 + (a >> 8) as u8 % 25,
    };
    let hi = (0x2400u128 + u128::from((a >> 16) as u16 % 0x600)) << 112;
    let addr = hi | (u128::from(a >> 32) << 80) | u128::from(b);
    IpNet::new(IpAddr::V6(addr.into()), len).unwrap().trunc()
}

/// `n` mixed entries, three quarters IPv4.
pub fn mixed(n: usize, seed: u64) -> Vec<IpNet> {
    let mut rng = Rng::new(seed);
    (0..n).map(|i| if i % 4 == 3 { v6_prefix(&mut rng) } else { v4_prefix(&mut rng) }).collect()
}

pub fn net(s: &str) -> IpNet {
    filter_common::cidr::parse_cidr(s).expect("bench CIDR")
}

/// Ranges no realistic list touches: the live flood's sources (198.18.0.0/15, so
/// that listing the flood is a decision of the case, not of the list), the lab's
/// server net and the hot entries of part 1.
pub const AVOID: [&str; 4] = ["198.18.0.0/15", "198.51.100.0/24", "192.0.2.0/24", "203.0.113.0/24"];

/// How many prefixes of each length a realistic list of `n` holds: 2% /16, 8% /20,
/// 30% /24, 60% /32 (issue 13's mix), except that the short prefixes stop at the
/// 1M list's counts (20,000 /16 and 80,000 /20): 2% of 10M would be 200,000 disjoint
/// /16s, three times as many as IPv4 has. What they leave goes 2:1 to /32 and /24.
pub fn realistic_mix(n: usize) -> [(u8, usize); 4] {
    let (w16, w20) = (n / 50, n * 2 / 25);
    let (n16, n20) = (w16.min(20_000), w20.min(80_000));
    let n24 = n * 3 / 10 + (w16 - n16 + w20 - n20) / 3;
    [(16, n16), (20, n20), (24, n24), (32, n - n16 - n20 - n24)]
}

/// Share of the 2^32 IPv4 addresses that `list` covers (disjoint lists only).
pub fn v4_coverage(list: &[IpNet]) -> f64 {
    let covered: u64 = list
        .iter()
        .filter_map(|p| match p {
            IpNet::V4(v) => Some(1u64 << (32 - v.prefix_len())),
            IpNet::V6(_) => None,
        })
        .sum();
    covered as f64 / (1u64 << 32) as f64
}

/// `n` disjoint IPv4 prefixes in the [`realistic_mix`], at random places in the
/// unicast space (1.0.0.0 to 223.255.255.255 without 127/8) outside [`AVOID`],
/// sorted by address; the same for the same seed. Placed longest-first: each prefix
/// lands on a random aligned spot not yet covered; hosts never fall inside a listed
/// prefix. 10M takes a few seconds.
pub fn realistic_v4(n: usize, seed: u64) -> Vec<IpNet> {
    assert!(n <= 12_000_000, "realistic_v4 fills IPv4 to two thirds at 10M prefixes");
    // One byte per /24: 0 free, 1 covered by a listed (or avoided) prefix.
    let mut blocks = vec![0u8; 1 << 24];
    for a in AVOID {
        let IpNet::V4(v) = net(a) else { unreachable!("AVOID is IPv4") };
        let first = (u32::from(v.network()) >> 8) as usize;
        blocks[first..first + (1usize << 24u8.saturating_sub(v.prefix_len()))].fill(1);
    }
    let mut rng = Rng::new(seed);
    let draw = |rng: &mut Rng| loop {
        let r = rng.next();
        let first = 1 + (r >> 40) as u32 % 223;
        if first != 127 {
            break first << 24 | (r as u32 & 0x00ff_ffff);
        }
    };
    let v4 = |addr: u32, len: u8| IpNet::V4(ipnet::Ipv4Net::new(addr.into(), len).expect("prefix length"));
    let mut out = Vec::with_capacity(n);
    for (len, count) in realistic_mix(n) {
        if len == 32 {
            let mut hosts: Vec<u32> = Vec::with_capacity(count);
            while hosts.len() < count {
                while hosts.len() < count {
                    let a = draw(&mut rng);
                    if blocks[(a >> 8) as usize] == 0 {
                        hosts.push(a);
                    }
                }
                hosts.sort_unstable();
                hosts.dedup();
            }
            out.extend(hosts.into_iter().map(|a| v4(a, 32)));
            continue;
        }
        let width = 1usize << (24 - len);
        let mut placed = 0;
        while placed < count {
            let addr = draw(&mut rng) & (u32::MAX << (32 - len));
            let b = (addr >> 8) as usize;
            if blocks[b..b + width].iter().all(|&s| s == 0) {
                blocks[b..b + width].fill(1);
                out.push(v4(addr, len));
                placed += 1;
            }
        }
    }
    out.sort_unstable_by_key(|p| match p {
        IpNet::V4(v) => (u32::from(v.network()), v.prefix_len()),
        IpNet::V6(_) => (0, 0),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realistic_lists_are_disjoint_mixed_and_avoid_the_bench_ranges() {
        for n in [1_000, 200_000] {
            let list = realistic_v4(n, 3);
            assert_eq!(list.len(), n);
            assert_eq!(list, realistic_v4(n, 3));
            for w in list.windows(2) {
                assert!(!w[0].contains(&w[1].network()), "{} covers {}", w[0], w[1]);
            }
            for (len, count) in realistic_mix(n) {
                assert_eq!(list.iter().filter(|p| p.prefix_len() == len).count(), count);
            }
            let avoid: Vec<IpNet> = AVOID.iter().map(|a| net(a)).collect();
            for p in &list {
                assert!(avoid.iter().all(|a| !a.contains(&p.network()) && !p.contains(&a.network())), "{p}");
                let first = match p {
                    IpNet::V4(v) => v.network().octets()[0],
                    IpNet::V6(_) => panic!("IPv6 in {p}"),
                };
                assert!((1..=223).contains(&first) && first != 127, "{p}");
            }
        }
        assert_eq!(realistic_mix(1_000_000), [(16, 20_000), (20, 80_000), (24, 300_000), (32, 600_000)]);
        let m = realistic_mix(10_000_000);
        assert_eq!(m.iter().map(|x| x.1).sum::<usize>(), 10_000_000);
        assert_eq!((m[0].1, m[1].1), (20_000, 80_000));
    }
}

#[cfg(test)]
mod slow {
    /// `cargo test --release -p floodgate-bench -- --ignored`: the full run's 10M list.
    #[test]
    #[ignore]
    fn ten_million_realistic_prefixes_in_seconds() {
        let t = std::time::Instant::now();
        let list = super::realistic_v4(10_000_000, 41);
        assert_eq!(list.len(), 10_000_000);
        eprintln!(
            "10M realistic prefixes in {:.1} s, coverage {:.1}%",
            t.elapsed().as_secs_f64(),
            super::v4_coverage(&list) * 100.0
        );
        assert!(t.elapsed().as_secs() < 30);
    }
}
