//! Differential fuzz of the data path: every frame goes through the real XDP program
//! (BPF_PROG_TEST_RUN) and through `filter_common::classify` over a host model with
//! the same lists, rules, policy, limits and SYN-cookie ports (enforced, and in
//! observe mode with a watchlist); the verdicts, the verdict and would-drop counters
//! and the rule counters must agree, and nothing may abort.
//!
//! FLOODGATE_FUZZ_FRAMES sets the number of generated frames (default 1,000,000 on
//! the host, 100,000 in the VMs); FLOODGATE_FUZZ_SEED replays a run. The frames in
//! tests/corpus/xdp.hex (found bugs, one hex frame per line) run first in every
//! configuration. A disagreement prints the frame as hex for that file.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use aya::programs::{TestRun as _, TestRunOptions};
use filter_common::{
    Counter, ListKind, Reason,
    limit::{Ban, SourceKey},
    rules::{Dir, PolicyConfig, Proto},
    synproxy::SynProxyConfig,
};
use floodgate::{policy::Served, rules::RuleSpec, stats::Totals};
use integration_tests::{
    fuzz::{Model, Pools, Rng, frame, hex, unhex},
    harness::{self, Harness, XDP_DROP, XDP_PASS},
};
use ipnet::IpNet;

const XDP_ABORTED: u32 = 0;
const XDP_TX: u32 = 3;
/// Frames between two comparisons of the verdict counters.
const BATCH: usize = 2048;

const BLOCK: [&str; 7] = [
    "203.0.113.0/24",
    "192.0.2.7/32",
    "198.51.100.0/25",
    "2001:db8:bad::/48",
    "2001:db8::7/128",
    "2001:db8:dead:beef::/64",
    "100.64.0.0/10",
];
/// The watchlist of the observe configuration: beside, inside and around the lists.
const WATCH: [&str; 5] =
    ["198.51.100.128/25", "192.0.2.0/24", "203.0.113.128/25", "2001:db8:cafe::/48", "2001:db8:bad::/47"];
const ALLOW: [&str; 4] = ["203.0.113.128/26", "198.51.100.53/32", "2001:db8:bad:1::/64", "192.0.2.200/32"];
const BANNED: [&str; 3] = ["192.0.2.99", "2001:db8:99::1", "198.18.0.1"];
const PORTS: [u16; 16] =
    [53, 80, 443, 123, 11211, 1900, 6000, 6063, 6064, 4000, 32768, 60999, 61000, 0, 65535, 22];

/// Which features are in force in one configuration.
#[derive(Clone, Copy, Debug)]
struct Config {
    name: &'static str,
    rules: bool,
    policy: bool,
    fragments: bool,
    limiter: bool,
    syn: bool,
    /// The rules, policy and limits in observe mode, and the watchlist filled.
    observe: bool,
}

/// Nothing in force: each configuration turns on what its name says.
const OFF: Config = Config {
    name: "",
    rules: false,
    policy: false,
    fragments: false,
    limiter: false,
    syn: false,
    observe: false,
};

const CONFIGS: [Config; 8] = [
    Config { name: "lists only", ..OFF },
    Config { name: "limiter and bans", limiter: true, ..OFF },
    Config { name: "rules", rules: true, ..OFF },
    Config { name: "policy", policy: true, ..OFF },
    Config { name: "fragments drop", fragments: true, ..OFF },
    Config { name: "syn cookies", syn: true, ..OFF },
    Config {
        name: "everything",
        rules: true,
        policy: true,
        fragments: true,
        limiter: true,
        syn: true,
        ..OFF
    },
    Config {
        name: "observe",
        rules: true,
        policy: true,
        fragments: true,
        limiter: true,
        syn: true,
        observe: true,
    },
];

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().expect("test CIDR")).collect()
}

fn ban_key(a: IpAddr) -> SourceKey {
    match a {
        IpAddr::V4(a) => SourceKey::v4(a.octets(), 32),
        IpAddr::V6(a) => SourceKey::v6(a.octets(), 64),
    }
}

fn configure(h: &mut Harness, m: &mut Model, c: &Config) {
    for r in h.maps.rules.rules().expect("rules") {
        h.maps.rules.remove_rule(&r.id.to_string()).expect("remove rule");
    }
    m.clear_rules();
    if c.rules {
        let mut specs = floodgate::rules::reflection_preset();
        for r in &mut specs {
            r.observe = c.observe;
        }
        let rule = |proto, dir, lo, hi, drop, name: &str| RuleSpec {
            proto,
            dir,
            lo,
            hi,
            drop,
            observe: false,
            name: name.into(),
        };
        specs.push(RuleSpec { observe: c.observe, ..rule(Proto::Tcp, Dir::Dst, 6000, 6063, true, "x11") });
        specs.push(rule(Proto::Udp, Dir::Dst, 4000, 4000, false, "pass-4000"));
        specs.push(rule(Proto::Tcp, Dir::Src, 22, 22, false, "pass-ssh"));
        specs.push(rule(Proto::Icmp, Dir::Any, 0, 0, true, "icmp"));
        specs.push(rule(Proto::Icmpv6, Dir::Any, 0, 0, true, "icmpv6"));
        for r in h.maps.rules.add_rules(&specs).expect("add rules") {
            m.add_rule(r.id, &r.spec);
        }
    }
    let policy = PolicyConfig {
        enforce: c.policy as u8,
        drop_fragments: c.fragments as u8,
        ephemeral: c.policy as u8,
        observe: c.observe as u8,
        eph_lo: 32768,
        eph_hi: 60999,
    };
    let served =
        [(Proto::Tcp, 80, 80), (Proto::Tcp, 443, 443), (Proto::Udp, 53, 53), (Proto::Tcp, 6000, 6001)];
    let served_maps: Vec<Served> = served.iter().map(|&(proto, lo, hi)| Served { proto, lo, hi }).collect();
    h.maps.policy.set_policy(policy, if c.policy { &served_maps } else { &[] }).expect("policy");
    m.policy = policy;
    m.served = if c.policy { served.to_vec() } else { Vec::new() };

    // Limits no frame reaches, with auto-ban on so that the ban map is consulted.
    let mut limits = harness::limits(1_000_000_000, 1_000_000_000);
    limits.ban_after_ns = 30_000_000_000;
    limits.ban_for_ns = 600_000_000_000;
    limits.observe = c.observe as u32;
    m.limits_observe = c.observe && c.limiter;
    let watch = if c.observe { nets(&WATCH) } else { Vec::new() };
    h.maps.watch.replace(&watch).expect("watchlist");
    m.watch = watch;
    h.set_limits(&if c.limiter { limits } else { Default::default() });
    m.bans_on = c.limiter;
    if c.limiter {
        for k in &m.bans {
            let ban = Ban { expires: u64::MAX / 2, banned_at: 1 };
            h.maps.limiter.bans.insert(k, &ban, 0).expect("ban");
        }
    }

    let syn_ports = [(80, 80), (443, 443), (8000, 8080)];
    let cfg = SynProxyConfig {
        enabled: c.syn as u8,
        wscale: 10,
        old_tcp_loose: -1,
        old_syncookies: 1,
        ..Default::default()
    };
    h.maps.synproxy.write_synproxy(&cfg, if c.syn { &syn_ports } else { &[] }).expect("synproxy");
    m.syn_ports = if c.syn { syn_ports.to_vec() } else { Vec::new() };
}

/// The program's action for the model's verdict. SYNs the model would answer go to
/// fg_synproxy, which answers (XDP_TX) or, for headers it does not rewrite, passes.
fn acceptable(want: Reason, action: u32) -> Option<Reason> {
    match (want, action) {
        (Reason::SynProxy, XDP_TX) => Some(Reason::SynProxy),
        (Reason::SynProxy, XDP_PASS) => Some(Reason::Passed),
        (r, XDP_DROP) if r.drops() => Some(r),
        (r, XDP_PASS) if !r.drops() && r != Reason::SynProxy => Some(r),
        _ => None,
    }
}

fn run(h: &mut Harness, f: &[u8]) -> u32 {
    let opts = TestRunOptions { data_in: Some(f), repeat: 1, ..Default::default() };
    h.program().test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
}

fn reason_of(delta: &Totals) -> Option<Reason> {
    let moved: Vec<Reason> = Reason::ALL.into_iter().filter(|r| delta.get(*r).packets != 0).collect();
    (moved.len() == 1 && delta.packets() == 1).then(|| moved[0])
}

/// A batch whose counters disagreed: rerun it frame by frame to name the frame.
fn bisect(h: &mut Harness, m: &Model, batch: &[Vec<u8>], c: &Config, seed: u64) -> String {
    for f in batch {
        let want = m.decide(f);
        let out = h.run(f);
        let got = reason_of(&out.delta);
        let ok = acceptable(want, out.action).is_some_and(|r| Some(r) == got);
        if !ok {
            return format!(
                "[{}] seed {seed}: model says {want:?}, program returned {} and counted {got:?} (deltas {:?})\n\
                 frame {}",
                c.name,
                out.action,
                out.delta,
                hex(f)
            );
        }
    }
    format!("[{}] seed {seed}: the batch's counters disagreed but no single frame does on replay", c.name)
}

/// The regression corpus, compiled in so that the VM guests (which have no source
/// tree) replay it too.
const CORPUS: &str = include_str!("../corpus/xdp.hex");

fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (n, line) in CORPUS.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f = unhex(line).unwrap_or_else(|| panic!("tests/corpus/xdp.hex:{}: not hex", n + 1));
        assert!(f.len() >= 14, "tests/corpus/xdp.hex:{}: shorter than an Ethernet header", n + 1);
        out.push(f);
    }
    out
}

#[test]
fn program_and_model_agree_on_every_frame() {
    let in_vm = std::env::var_os("FLOODGATE_VM").is_some();
    let total: usize = std::env::var("FLOODGATE_FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if in_vm { 100_000 } else { 1_000_000 });
    let seed: u64 =
        std::env::var("FLOODGATE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        });
    eprintln!("fuzz: {total} frames, seed {seed} (FLOODGATE_FUZZ_SEED={seed} replays this run)");
    let mut rng = Rng(seed);

    let mut h = Harness::new(1024);
    let mut m = Model { block: nets(&BLOCK), allow: nets(&ALLOW), ..Default::default() };
    h.add(ListKind::Block, &BLOCK);
    h.add(ListKind::Allow, &ALLOW);
    let banned: Vec<IpAddr> = BANNED.iter().map(|s| s.parse().unwrap()).collect();
    m.bans = banned.iter().map(|a| ban_key(*a)).collect();
    let mut all = m.block.clone();
    all.extend(&m.allow);
    all.extend(nets(&WATCH));
    let pools = Pools::around(&all, &banned, &PORTS);
    let corpus = corpus();
    assert!(!corpus.is_empty(), "the regression corpus is empty");

    let per_config = total.div_ceil(CONFIGS.len());
    let (mut frames, mut seen) = (0usize, HashMap::<Reason, u64>::new());
    let mut seen_would = HashMap::<Reason, u64>::new();
    let started = Instant::now();
    for c in &CONFIGS {
        configure(&mut h, &mut m, c);
        let rules_before: HashMap<u32, Counter> =
            h.maps.rules.rules().expect("rules").into_iter().map(|r| (r.id, r.hits)).collect();
        let mut before = h.maps.counters.totals().expect("counters");
        let mut would_before = h.maps.counters.would_drop().expect("would-drop counters");
        let (mut want, mut want_would) = (Totals::default(), Totals::default());
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        let mut generated = 0;
        let mut replay = corpus.iter();
        loop {
            let f = match replay.next() {
                Some(f) => f.clone(),
                None if generated < per_config => {
                    generated += 1;
                    frame(&mut rng, &pools)
                }
                None => break,
            };
            let verdict = m.verdict(&f);
            let expect = verdict.reason;
            for w in Reason::ALL.into_iter().filter(|r| verdict.observed & 1 << *r as u32 != 0) {
                want_would.0[w as usize].packets += 1;
                want_would.0[w as usize].bytes += f.len() as u64;
                *seen_would.entry(w).or_default() += 1;
            }
            let action = run(&mut h, &f);
            assert_ne!(action, XDP_ABORTED, "[{}] seed {seed}: XDP_ABORTED on frame {}", c.name, hex(&f));
            let Some(counted) = acceptable(expect, action) else {
                panic!(
                    "[{}] seed {seed}: model says {expect:?}, program returned action {action}\nframe {}",
                    c.name,
                    hex(&f)
                );
            };
            let slot = &mut want.0[counted as usize];
            slot.packets += 1;
            slot.bytes += f.len() as u64;
            *seen.entry(counted).or_default() += 1;
            frames += 1;
            batch.push(f);
            if batch.len() == BATCH || (replay.len() == 0 && generated == per_config) {
                let after = h.maps.counters.totals().expect("counters");
                let got = after.since(&before);
                if got != want {
                    panic!(
                        "{}\ncounters: program {got:?}\nmodel {want:?}",
                        bisect(&mut h, &m, &batch, c, seed)
                    );
                }
                assert_eq!(got.packets(), batch.len() as u64, "counters add up to the frames run");
                let would_after = h.maps.counters.would_drop().expect("would-drop counters");
                let got_would = would_after.since(&would_before);
                assert_eq!(
                    got_would, want_would,
                    "[{}] seed {seed}: would-drop counters, program (left) and model (right)",
                    c.name
                );
                before = after;
                would_before = would_after;
                want = Totals::default();
                want_would = Totals::default();
                batch.clear();
            }
        }
        // Rule counters: what the model counted against each rule, the program did.
        let hits = m.hits.borrow();
        for r in h.maps.rules.rules().expect("rules") {
            let was = rules_before.get(&r.id).copied().unwrap_or_default();
            let (p, b) = hits.get(&r.id).copied().unwrap_or_default();
            assert_eq!(
                (r.hits.packets - was.packets, r.hits.bytes - was.bytes),
                (p, b),
                "[{}] seed {seed}: counters of rule {} ({})",
                c.name,
                r.id,
                r.spec.name
            );
        }
        drop(hits);
        m.hits.borrow_mut().clear();
    }
    let mut tally: Vec<_> = seen.into_iter().collect();
    tally.sort_by_key(|(r, _)| *r as u32);
    eprintln!(
        "fuzz: {frames} frames agreed in {:.1} s over {} configurations: {tally:?}",
        started.elapsed().as_secs_f64(),
        CONFIGS.len()
    );
    // Every verdict the data path can reach from these configurations was reached.
    for r in [
        Reason::Passed,
        Reason::Allowed,
        Reason::Blocklist,
        Reason::Malformed,
        Reason::NonIp,
        Reason::Rule,
        Reason::Policy,
        Reason::Fragment,
        Reason::SynProxy,
        Reason::Unchecked,
        Reason::L4Unseen,
    ] {
        assert!(tally.iter().any(|(t, n)| *t == r && *n > 0) || frames < 10_000, "no frame reached {r:?}");
    }
    // And every would-drop reason the observe configuration can reach (its limits are
    // out of reach: tests/tests/observe.rs drives them).
    eprintln!("fuzz: would-drop verdicts {seen_would:?}");
    for r in [Reason::Blocklist, Reason::Rule, Reason::Policy, Reason::Fragment] {
        assert!(
            seen_would.get(&r).is_some_and(|n| *n > 0) || frames < 10_000,
            "no frame would be dropped for {r:?}"
        );
    }
}
