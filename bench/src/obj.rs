//! The real XDP object with the bench programs of filter-ebpf/src/bench.rs, loaded
//! through floodgate's own loader, plus frame and list builders.

use std::net::IpAddr;

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{Array, MapData, ProgramArray},
    programs::{TestRun, TestRunOptions, Xdp},
};
use filter_common::{ListKind, limit::LimitConfig};
use floodgate::{
    lab::{FrameSpec, build},
    loader::{self, Capacity},
    maps::FilterMaps,
};
use ipnet::IpNet;

pub const FLOOR: &str = "fgb_pass";
pub const GEN: &str = "fgb_gen";
pub const WRAP: &str = "fgb_wrap";
pub const FLOODGATE: &str = filter_common::PROGRAM_NAME;

pub struct Obj {
    pub ebpf: Ebpf,
    pub maps: FilterMaps,
    cfg: Array<MapData, u32>,
    template: Array<MapData, [u8; TEMPLATE_LEN]>,
    jump: ProgramArray<MapData>,
}

/// Longest frame the generator restores (filter-ebpf/src/bench.rs).
const TEMPLATE_LEN: usize = 128;

impl Obj {
    /// Loads floodgate (lists of `entries` per family) and the bench programs.
    pub fn load(entries: u32) -> anyhow::Result<Self> {
        let cap = Capacity::entries(entries);
        let mut ebpf = loader::load(cap).context("loading the XDP object (as root?)")?;
        let mut maps = FilterMaps::take(&mut ebpf)?;
        loader::init_meta(&mut maps, 0, 0, cap)?;
        for name in [FLOOR, GEN, WRAP] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object (rebuild filter-user)"))?
                .try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        let cfg = Array::try_from(ebpf.take_map("FGB_CFG").ok_or_else(|| anyhow!("no FGB_CFG"))?)?;
        let template =
            Array::try_from(ebpf.take_map("FGB_TEMPLATE").ok_or_else(|| anyhow!("no FGB_TEMPLATE"))?)?;
        let jump = ProgramArray::try_from(ebpf.take_map("FGB_JUMP").ok_or_else(|| anyhow!("no FGB_JUMP"))?)?;
        Ok(Self { ebpf, maps, cfg, template, jump })
    }

    pub fn prog(&self, name: &str) -> anyhow::Result<&Xdp> {
        Ok(self.ebpf.program(name).ok_or_else(|| anyhow!("no program {name}"))?.try_into()?)
    }

    pub fn prog_mut(&mut self, name: &str) -> anyhow::Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(name).ok_or_else(|| anyhow!("no program {name}"))?.try_into()?)
    }

    /// Where `fgb_wrap` tail-calls to.
    pub fn jump_to(&mut self, name: &str) -> anyhow::Result<()> {
        let fd = self.prog(name)?.fd()?.try_clone()?;
        self.jump.set(0, &fd, 0).context("setting the tail call")
    }

    /// 0: the rewrite repeats one source; u32::MAX: a random source per frame.
    pub fn set_mask(&mut self, mask: u32) -> anyhow::Result<()> {
        self.cfg.set(0, &mask, 0).context("FGB_CFG")
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
        self.maps.add(kind, nets, None, &mut |_, _| {}).context("filling the list")?;
        Ok(())
    }

    pub fn set_limits(&mut self, cfg: Option<&LimitConfig>) -> anyhow::Result<()> {
        let off = LimitConfig::default();
        self.maps.set_limits(cfg.unwrap_or(&off)).context("setting limits")
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
