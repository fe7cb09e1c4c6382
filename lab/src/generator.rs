//! A flood as a NIC delivers one: `fgb_gen` (bench-ebpf) run by BPF_PROG_TEST_RUN in
//! live-frames mode on one end of a veth pair. Each frame leaves by XDP_TX and reaches
//! the peer (the server's interface) as an `xdp_frame`, through its driver path, at a
//! rate one CPU can generate: far more than the server's stack takes. The generator
//! restores each frame from a template and draws its source at random from a prefix
//! (keeping every checksum valid). Also: the server veth's threaded NAPI kthreads,
//! which do the whole receive work, found, pinned and timed.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};

/// The generator program of the `fgb` object.
pub const GEN: &str = "fgb_gen";
/// Longest frame the generator restores (bench-ebpf's TEMPLATE_LEN).
pub const TEMPLATE_LEN: usize = 128;

/// The bench-ebpf object (empty when built without bpf-linker: see ebpf-build).
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fgb"))
}

pub struct Generator {
    ebpf: Ebpf,
    cfg: Array<MapData, u32>,
    template: Array<MapData, [u8; TEMPLATE_LEN]>,
    pace: Array<MapData, u64>,
}

impl Generator {
    pub fn load() -> anyhow::Result<Self> {
        ensure!(
            !object().is_empty(),
            "built without bpf-linker, so there is no generator: run scripts/setup.sh, then build again"
        );
        let mut ebpf = Ebpf::load(object()).context("loading the generator's XDP object")?;
        let p: &mut Xdp = ebpf.program_mut(GEN).ok_or_else(|| anyhow!("no {GEN}"))?.try_into()?;
        p.load().with_context(|| format!("loading {GEN}"))?;
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| anyhow!("no {name}"));
        let cfg = Array::try_from(take("FGB_CFG")?)?;
        let template = Array::try_from(take("FGB_TEMPLATE")?)?;
        let pace = Array::try_from(take("FGB_PACE")?)?;
        Ok(Generator { ebpf, cfg, template, pace })
    }

    /// Every frame restored to `frame` before it is sent (its source then drawn).
    pub fn set_frame(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        ensure!(frame.len() <= TEMPLATE_LEN, "a frame of {} bytes (at most {TEMPLATE_LEN})", frame.len());
        let mut t = [0u8; TEMPLATE_LEN];
        t[..frame.len()].copy_from_slice(frame);
        self.template.set(0, &t, 0).context("FGB_TEMPLATE")?;
        self.cfg.set(1, &(frame.len() as u32), 0).context("FGB_CFG")
    }

    /// IPv4 sources drawn at random from `addr/len` (a /31 or shorter); IPv6 frames
    /// get a random /64 of 2001:db8::/32.
    pub fn set_sources(&mut self, addr: std::net::Ipv4Addr, len: u8) -> anyhow::Result<()> {
        ensure!(len <= 31, "a source prefix of at least 2 addresses");
        let span = u32::MAX >> len;
        let base = u32::from(addr) & !span;
        self.cfg.set(0, &u32::MAX, 0).context("FGB_CFG")?;
        self.cfg.set(2, &base, 0).context("FGB_CFG")?;
        self.cfg.set(3, &span, 0).context("FGB_CFG")
    }

    /// Whether an IPv4 frame keeps its source port (the change of source address is
    /// then absorbed in the UDP checksum): for floods whose source port matters.
    pub fn keep_source_port(&mut self, keep: bool) -> anyhow::Result<()> {
        self.cfg.set(4, &(if keep { 40 } else { 0 }), 0).context("FGB_CFG")
    }

    /// At most `pps` frames a second, evenly spaced within each run (None: flat out).
    /// A run of `count` frames then sends only those its time allows, and the others
    /// cost about what an empty XDP_DROP does: size runs by time, not by frames.
    pub fn set_rate(&mut self, pps: Option<u64>) -> anyhow::Result<()> {
        let every = pps.map_or(0, |p| 1_000_000_000 / p.max(1));
        self.pace.set(0, &every, 0).context("FGB_PACE")
    }

    /// Frames sent since the generator was loaded.
    pub fn sent(&self) -> anyhow::Result<u64> {
        self.pace.get(&2, 0).context("FGB_PACE")
    }

    /// Runs the generator `count` times on interface `ifindex` (of the calling
    /// thread's namespace), as fast as the calling CPU can; each run sends its frame
    /// (see [`Generator::sent`]) unless the pace holds it back. Returns how long it took.
    pub fn send(&self, ifindex: u32, count: u32) -> anyhow::Result<Duration> {
        let prog: &Xdp = self.ebpf.program(GEN).ok_or_else(|| anyhow!("no {GEN}"))?.try_into()?;
        let len = self.cfg.get(&1, 0).context("FGB_CFG")? as usize;
        ensure!(len > 0, "no frame set");
        send_live(prog, &vec![0u8; len], ifindex, count)
    }
}

/// Runs `prog` `count` times in live-frames mode on `frame`, as received on interface
/// `ifindex` (of the calling thread's namespace); returns how long it took.
pub fn send_live(prog: &Xdp, frame: &[u8], ifindex: u32, count: u32) -> anyhow::Result<Duration> {
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
}

/// `fgb_sink` attached to `iface` (in the calling thread's namespace): IPv4 frames
/// addressed outside `net` dropped in its driver. Detached when the returned object is
/// dropped (or the interface deleted).
pub fn attach_sink(iface: &str, net: std::net::Ipv4Addr, len: u8) -> anyhow::Result<Ebpf> {
    let name = std::ffi::CString::new(iface).context("an interface name")?;
    let mut ebpf = Ebpf::load(object()).context("loading the bench-ebpf object")?;
    {
        let mut sink: Array<&mut MapData, u32> =
            Array::try_from(ebpf.map_mut("FGB_SINK").ok_or_else(|| anyhow!("no FGB_SINK"))?)?;
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        sink.set(0, &(u32::from(net) & mask), 0).context("FGB_SINK")?;
        sink.set(1, &mask, 0).context("FGB_SINK")?;
    }
    let p: &mut Xdp = ebpf.program_mut("fgb_sink").ok_or_else(|| anyhow!("no fgb_sink"))?.try_into()?;
    p.load().context("loading fgb_sink")?;
    p.attach(name.as_c_str(), XdpMode::Driver).with_context(|| format!("attaching fgb_sink to {iface}"))?;
    Ok(ebpf)
}

/// The pids of `iface`'s threaded NAPI kthreads (`napi/IFACE-N`); they are re-created
/// when an XDP program is attached or detached.
pub fn napi_threads(iface: &str) -> Vec<i32> {
    let prefix = format!("napi/{iface}-");
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.trim().starts_with(&prefix) {
                out.push(pid);
            }
        }
    }
    out
}

/// Pins `iface`'s NAPI kthreads to `cpu`; returns how many there were.
pub fn pin_napi(iface: &str, cpu: usize) -> usize {
    let pids = napi_threads(iface);
    for pid in &pids {
        crate::pin_thread(*pid, cpu);
    }
    pids.len()
}

/// CPU time (ns) `iface`'s NAPI kthreads have run: the whole receive path, filter and
/// stack included.
pub fn napi_ns(iface: &str) -> u64 {
    napi_threads(iface)
        .iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
            stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .sum()
}
