//! Part 7: what the sampler and observe mode cost per packet (BPF_PROG_TEST_RUN).
//!
//! The sampler off, on at the service's rate (1 in 100 per reason, most frames not
//! picked), and on for every frame (each copied into the ring buffer: the worst
//! case), on the pass and the drop path. Observe mode: nothing observed, a watchlist
//! the source is not on, a watched source, an observed rule, limits in observe mode,
//! each against the same frame's enforced cost.

use anyhow::Context as _;
use filter_common::{
    ListKind,
    rules::PolicyConfig,
    sample::{TAP_ADHOC, TAP_SERVICE},
};
use floodgate::{
    rules::RuleSpec,
    sampler::{Captured, Reader, SamplerMaps, TapSettings},
};
use serde_json::json;

use crate::{
    obj::{FLOODGATE, FLOOR, Obj, WRAP, limits, mixed, net, udp64, udp64_to},
    report::{Section, median, ns, ratio},
};

/// Frames per run while the ring buffer holds every sample (256 KiB: about 1,700).
const SMALL_REPEAT: u32 = 1_000;
const REPEAT: u32 = 1_000_000;

struct Case {
    name: String,
    frame: Vec<u8>,
    prog: &'static str,
    /// Through fgb_wrap into this program, a random source (198.18.0.0/15) per frame:
    /// a flood's cold lookups rather than one source's warm ones.
    random_into: Option<&'static str>,
    /// What the case sets before each run (and undoes after).
    set: Setting,
    repeat: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Setting {
    Nothing,
    /// The service's tap at 1 in `every` per reason, capped at `max_pps`.
    Sampler {
        every: u32,
        max_pps: u32,
    },
    Watchlist,
    ObservedRule,
    Limits {
        observe: bool,
    },
}

fn apply(obj: &mut Obj, sampler: &mut SamplerMaps, s: Setting, on: bool) -> anyhow::Result<()> {
    match s {
        Setting::Nothing => {}
        Setting::Sampler { every, max_pps } => {
            if on {
                let tap = TapSettings { every, reasons: Vec::new(), max_pps, trace: false };
                sampler.set(TAP_SERVICE, &tap.config(1))?;
            } else {
                sampler.off(TAP_SERVICE)?;
            }
        }
        Setting::Watchlist => {
            let mut list: Vec<_> = mixed(1000, 7);
            list.push(net("198.18.0.0/16"));
            if on {
                obj.maps.watch.replace(&list)?;
            } else {
                obj.maps.watch.replace(&[])?;
            }
        }
        Setting::ObservedRule => {
            for r in obj.maps.rules.rules()? {
                obj.maps.rules.remove_rule(&r.id.to_string())?;
            }
            if on {
                let spec = RuleSpec { observe: true, ..RuleSpec::parse("udp", None, Some("9"), true, None)? };
                obj.maps.rules.add_rules(&[spec])?;
            }
        }
        Setting::Limits { observe } => {
            let mut cfg = limits(1000);
            cfg.observe = observe as u32;
            obj.set_limits(on.then_some(&cfg))?;
        }
    }
    Ok(())
}

pub fn run(quick: bool) -> anyhow::Result<Vec<Section>> {
    let runs = if quick { 5 } else { 9 };
    let mut obj = Obj::load(16_384)?;
    let mut list = mixed(1000, 1);
    list.push(net("203.0.113.0/24"));
    obj.add(ListKind::Block, &list)?;
    obj.maps.policy.set_policy(PolicyConfig::default(), &[])?;
    let mut sampler = SamplerMaps::open(&mut obj.ebpf)?;
    sampler.off(TAP_SERVICE)?;
    sampler.off(TAP_ADHOC)?;
    let mut ring = Reader::open(&mut obj.ebpf, TAP_SERVICE)?;

    let pass = udp64("198.18.0.1");
    let drop = udp64("203.0.113.9");
    let to9 = udp64_to("198.18.0.1", [0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2], 9);
    let c = |name: &str, prog, frame: &[u8], set, repeat| Case {
        name: name.to_string(),
        frame: frame.to_vec(),
        prog,
        random_into: None,
        set,
        repeat,
    };
    // The same through fgb_wrap, a random source per frame; the floor is the wrapper's.
    let random =
        |name: &str, target, set| Case { random_into: Some(target), ..c(name, WRAP, &pass, set, REPEAT) };
    let service = Setting::Sampler { every: 100, max_pps: 10_000 };
    let every = Setting::Sampler { every: 1, max_pps: u32::MAX };
    let sampling = vec![
        c("empty XDP_PASS program (floor)", FLOOR, &pass, Setting::Nothing, REPEAT),
        c("pass path, sampler off", FLOODGATE, &pass, Setting::Nothing, REPEAT),
        c("pass path, sampler on: 1 in 100, cap 10,000/s", FLOODGATE, &pass, service, REPEAT),
        c("drop path (blocklist), sampler off", FLOODGATE, &drop, Setting::Nothing, REPEAT),
        c("drop path (blocklist), sampler on: 1 in 100, cap 10,000/s", FLOODGATE, &drop, service, REPEAT),
        c("floor, 1,000 frames per run", FLOOR, &pass, Setting::Nothing, SMALL_REPEAT),
        c("pass path, every frame sampled (copied to the ring)", FLOODGATE, &pass, every, SMALL_REPEAT),
        c("drop path, every frame sampled (copied to the ring)", FLOODGATE, &drop, every, SMALL_REPEAT),
        random("random sources: rewrite + XDP_PASS (wrapper floor)", FLOOR, Setting::Nothing),
        random("random sources, pass path, sampler off", FLOODGATE, Setting::Nothing),
        random("random sources, pass path, sampler on: 1 in 100, cap 10,000/s", FLOODGATE, service),
    ];
    let observe = vec![
        c("empty XDP_PASS program (floor)", FLOOR, &pass, Setting::Nothing, REPEAT),
        c("pass path, nothing observed", FLOODGATE, &pass, Setting::Nothing, REPEAT),
        c(
            "pass path, 1,001-entry watchlist, source not on it",
            FLOODGATE,
            &udp64("198.19.0.1"),
            Setting::Watchlist,
            REPEAT,
        ),
        c("pass path, watched source (counted as would_drop)", FLOODGATE, &pass, Setting::Watchlist, REPEAT),
        c("UDP to port 9, no rule", FLOODGATE, &to9, Setting::Nothing, REPEAT),
        c("UDP to port 9, a rule in observe mode matches", FLOODGATE, &to9, Setting::ObservedRule, REPEAT),
        c(
            "one source over 1000 pps, limits enforced (dropped)",
            FLOODGATE,
            &pass,
            Setting::Limits { observe: false },
            REPEAT,
        ),
        c(
            "one source over 1000 pps, limits in observe mode (passed)",
            FLOODGATE,
            &pass,
            Setting::Limits { observe: true },
            REPEAT,
        ),
        random("random sources: rewrite + XDP_PASS (wrapper floor)", FLOOR, Setting::Nothing),
        random("random sources, pass path, nothing observed", FLOODGATE, Setting::Nothing),
        random(
            "random sources, 1,001-entry watchlist holding half of them (198.18.0.0/16)",
            FLOODGATE,
            Setting::Watchlist,
        ),
    ];

    let mut sections = Vec::new();
    for (title, cases) in [
        ("7a. Sampling: ns/packet with the sampler off and on", &sampling),
        ("7b. Observe mode: ns/packet with nothing, and something, observed", &observe),
    ] {
        let mut samples = vec![Vec::new(); cases.len()];
        let mut drained = Vec::<Captured>::new();
        let mut sent = 0u64;
        for _ in 0..runs {
            for (i, case) in cases.iter().enumerate() {
                if let Some(target) = case.random_into {
                    obj.jump_to(target)?;
                    obj.set_mask(u32::MAX)?;
                    obj.set_v4_sources(0, 0)?;
                }
                apply(&mut obj, &mut sampler, case.set, true)?;
                samples[i]
                    .push(obj.time(case.prog, &case.frame, case.repeat).with_context(|| case.name.clone())?);
                apply(&mut obj, &mut sampler, case.set, false)?;
                // Empty the ring for the next run (every sample of a small run fits).
                ring.drain(&mut drained);
                sent += drained.len() as u64;
                drained.clear();
            }
        }
        let mut s = Section::new(title, &["case", "ns/packet (median)", "vs floor", "min..max ns"]);
        let mut j = Vec::new();
        let mut floor = median(&samples[0]);
        for (case, v) in cases.iter().zip(&samples) {
            let m = median(v);
            if case.prog == FLOOR || case.random_into == Some(FLOOR) {
                floor = m;
            }
            let (lo, hi) =
                (v.iter().copied().fold(f64::MAX, f64::min), v.iter().copied().fold(0.0, f64::max));
            s.rows.push(vec![case.name.clone(), ns(m), ratio(m / floor), format!("{}..{}", ns(lo), ns(hi))]);
            j.push(json!({"case": case.name, "repeat": case.repeat, "median_ns": m, "ratio_to_floor": m / floor, "samples_ns": v}));
        }
        s.notes.push(format!(
            "64-byte frames, BPF_PROG_TEST_RUN, median of {runs} interleaved runs of {REPEAT} frames (rows \
             after the 1,000-frame floor: runs of {SMALL_REPEAT}, so that the ring buffer holds every \
             sample; it is drained between runs). Ratios are to the floor above each row. \
             \"random sources\" rows: fgb_wrap rewrites each frame's source (random in 198.18.0.0/15) \
             and tail-calls the program; their floor is that wrapper into XDP_PASS."
        ));
        if title.starts_with("7a") {
            s.notes.push(format!("{sent} samples read from the ring over the runs."));
        }
        s.json = json!({"runs": runs, "cases": j});
        sections.push(s);
    }
    Ok(sections)
}
