//! The real XDP object loaded into the kernel and run on crafted frames with
//! BPF_PROG_TEST_RUN, with list updates going through the controller's own store.

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use filter_common::{Counter, ListKind, Reason};
use floodgate::{
    config::BpfLogLevel,
    loader::{self, Capacity},
    maps::FilterMaps,
    stats::Totals,
};
use ipnet::IpNet;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

pub struct Harness {
    pub ebpf: Ebpf,
    pub maps: FilterMaps,
}

/// The outcome of one frame: the program's action and how every counter moved.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub action: u32,
    pub delta: Totals,
}

impl Harness {
    /// Loads the object (verifier included) with lists of `max_entries` per family.
    pub fn new(max_entries: u32) -> Self {
        Self::with_bpf_log(max_entries, None)
    }

    /// As [`Harness::new`], with the data path's log records at `level` (None: off).
    pub fn with_bpf_log(max_entries: u32, level: Option<BpfLogLevel>) -> Self {
        let cap = Capacity::entries(max_entries);
        let mut ebpf = loader::load(cap, level).expect("loading the XDP object (are you root?)");
        loader::init_meta(&mut ebpf, 0, 0, cap, level).expect("meta");
        let maps = FilterMaps::open(&mut ebpf).expect("maps");
        Self { ebpf, maps }
    }

    pub fn program(&mut self) -> &mut Xdp {
        loader::program(&mut self.ebpf).expect("program")
    }

    /// Runs one frame through the program once.
    pub fn run(&mut self, frame: &[u8]) -> Outcome {
        let before = self.maps.counters.totals().expect("counters");
        let opts = TestRunOptions { data_in: Some(frame), repeat: 1, ..Default::default() };
        let r = self.program().test_run(opts).expect("BPF_PROG_TEST_RUN");
        let after = self.maps.counters.totals().expect("counters");
        Outcome { action: r.return_value, delta: after.since(&before) }
    }

    /// Runs one frame and also returns the frame as the program left it (for XDP_TX).
    pub fn run_out(&mut self, frame: &[u8]) -> (Outcome, Vec<u8>) {
        let before = self.maps.counters.totals().expect("counters");
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        };
        let r = self.program().test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        let after = self.maps.counters.totals().expect("counters");
        (Outcome { action: r.return_value, delta: after.since(&before) }, out)
    }

    /// Runs `frame` and asserts the action and that exactly the counter of `reason`
    /// moved, by one packet of the frame's length.
    pub fn expect(&mut self, frame: &[u8], reason: Reason, what: &str) {
        let out = self.run(frame);
        let action = if reason.drops() { XDP_DROP } else { XDP_PASS };
        assert_eq!(out.action, action, "{what}: action (frame of {} bytes)", frame.len());
        let mut want = Totals::default();
        want.0[reason as usize] = Counter { packets: 1, bytes: frame.len() as u64 };
        assert_eq!(out.delta, want, "{what}: counter deltas");
    }

    pub fn add(&mut self, kind: ListKind, cidrs: &[&str]) {
        let nets = parse(cidrs);
        self.maps.lists.add(kind, &nets, None, &mut |_, _| {}).expect("add");
    }

    pub fn remove(&mut self, kind: ListKind, cidrs: &[&str]) {
        let nets = parse(cidrs);
        self.maps.lists.remove(kind, &nets).expect("remove");
    }

    pub fn replace(&mut self, kind: ListKind, cidrs: &[&str]) {
        let nets = parse(cidrs);
        self.maps.lists.replace(kind, &nets, &mut |_, _| {}).expect("replace");
    }
}

fn parse(cidrs: &[&str]) -> Vec<IpNet> {
    cidrs.iter().map(|c| filter_common::cidr::parse_cidr(c).expect("test CIDR")).collect()
}

/// A limiter configuration for tests: `pps`/`burst` per source, /32 and /64 grouping.
pub fn limits(pps: u64, burst: u64) -> filter_common::limit::LimitConfig {
    use filter_common::limit::{Bucket, LimitConfig};
    LimitConfig {
        enabled: 1,
        v4_prefix: 32,
        v6_prefix: 64,
        packets: Bucket::per_second(pps, burst),
        given: [pps, 0, 0, 0],
        ..Default::default()
    }
}

impl Harness {
    pub fn set_limits(&mut self, cfg: &filter_common::limit::LimitConfig) {
        self.maps.limiter.set_limits(cfg).expect("set limits");
    }

    pub fn add_ttl(&mut self, kind: ListKind, cidrs: &[&str], ttl: std::time::Duration) {
        let nets = parse(cidrs);
        self.maps.lists.add(kind, &nets, Some(ttl), &mut |_, _| {}).expect("add with ttl");
    }

    /// Runs `frame` `n` times (one test run each) and counts each reason.
    pub fn tally(&mut self, frame: &[u8], n: usize) -> std::collections::HashMap<Reason, usize> {
        let mut out = std::collections::HashMap::new();
        for _ in 0..n {
            let o = self.run(frame);
            let r =
                Reason::ALL.into_iter().find(|r| o.delta.get(*r).packets == 1).expect("one counter moved");
            *out.entry(r).or_insert(0) += 1;
        }
        out
    }
}
