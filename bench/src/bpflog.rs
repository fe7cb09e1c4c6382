//! Part 6: what the data path's aya-log statements cost. The object is loaded twice,
//! with the log level off (the default: the verifier prunes the statements) and at
//! trace (everything compiled in and live), and the pass path of each is timed with
//! BPF_PROG_TEST_RUN, interleaved round by round. The log statements sit on rare
//! branches only (a ban, a full table, an empty tail-call slot), so neither load
//! should cost the pass path anything; the xlated programs show what the verifier
//! kept of them.

use std::process::Command;

use anyhow::Context as _;
use floodgate::config::BpfLogLevel;
use serde_json::json;

use crate::{
    obj::{FLOODGATE, FLOOR, Obj},
    report::{Section, median, ns, ratio},
    testrun::{Case, case, measure, wrap},
};

pub fn run(quick: bool) -> anyhow::Result<Vec<Section>> {
    let runs = if quick { 7 } else { 15 };
    let mut off = Obj::load_with(16_384, None)?;
    let mut trace = Obj::load_with(16_384, Some(BpfLogLevel::Trace))?;
    let cases: Vec<Case> = vec![
        case("empty XDP_PASS program (floor)", FLOOR, "198.18.0.1"),
        case("pass path, IPv4, one source, limiter off", FLOODGATE, "198.18.0.1"),
        wrap("pass path, IPv4 random sources (198.18.0.0/15), limiter 1000 pps", FLOODGATE, true, Some(1000)),
    ];
    let (mut s_off, mut s_trace) = (vec![Vec::new(); cases.len()], vec![Vec::new(); cases.len()]);
    for _ in 0..runs {
        for (obj, all) in [(&mut off, &mut s_off), (&mut trace, &mut s_trace)] {
            for (v, new) in all.iter_mut().zip(measure(obj, &cases, 1)?) {
                v.extend(new);
            }
        }
    }
    let mut s = Section::new(
        "6a. Data-path logging (aya-log): pass path with the log level off and at trace, ns/packet",
        &["case", "level off (median)", "level trace (median)", "trace / off"],
    );
    let mut j = Vec::new();
    for ((c, a), b) in cases.iter().zip(&s_off).zip(&s_trace) {
        let (ma, mb) = (median(a), median(b));
        s.rows.push(vec![c.name.clone(), ns(ma), ns(mb), ratio(mb / ma)]);
        j.push(
            json!({"case": c.name, "off_median_ns": ma, "trace_median_ns": mb, "off_ns": a, "trace_ns": b}),
        );
    }
    s.notes.push(format!(
        "BPF_PROG_TEST_RUN, 64-byte frames, repeat 1,000,000, median of {runs} rounds; the two loads \
         interleaved in every round. The floor row is the same program in both columns (host noise)."
    ));
    s.json = json!({"runs": runs, "cases": j});

    let mut x = Section::new(
        "6b. Data-path logging: what the verifier kept (xlated instructions, ring-buffer calls)",
        &[
            "program",
            "xlated insns off",
            "xlated insns trace",
            "ringbuf calls off",
            "ringbuf calls trace",
            "verified insns off",
            "verified insns trace",
        ],
    );
    let mut xj = Vec::new();
    let mut names = vec![filter_common::PROGRAM_NAME];
    names.extend(filter_common::TAIL_PROGRAMS);
    for name in names {
        let (a, b) = (shape(&off, name)?, shape(&trace, name)?);
        x.rows.push(vec![
            name.to_string(),
            a.insns.to_string(),
            b.insns.to_string(),
            a.ringbuf.map_or("-".into(), |n| n.to_string()),
            b.ringbuf.map_or("-".into(), |n| n.to_string()),
            a.verified.map_or("-".into(), |n| n.to_string()),
            b.verified.map_or("-".into(), |n| n.to_string()),
        ]);
        xj.push(json!({"program": name, "off": a.json(), "trace": b.json()}));
    }
    x.notes.push(
        "Off, the level is a constant of the loaded program (aya_log::LEVEL set at load time), so the \
         verifier walks none of the log statements and removes them as dead code: no ring-buffer call \
         is left, which is the program built without them (the rate limiter's timestamp map and the level \
         test are pruned with them). ringbuf calls: `bpf_ringbuf_reserve` in `bpftool prog dump xlated`."
            .into(),
    );
    x.json = json!(xj);
    Ok(vec![s, x])
}

struct Shape {
    insns: u32,
    ringbuf: Option<usize>,
    verified: Option<u32>,
}

impl Shape {
    fn json(&self) -> serde_json::Value {
        json!({"xlated_insns": self.insns, "ringbuf_calls": self.ringbuf, "verified_insns": self.verified})
    }
}

/// The loaded program `name` as the kernel holds it.
fn shape(obj: &Obj, name: &str) -> anyhow::Result<Shape> {
    let info = obj.prog(name)?.info().with_context(|| format!("program info of {name}"))?;
    let insns = info.size_translated().unwrap_or(0) / 8;
    // bpftool (scripts/setup.sh installs it) prints helper calls by name.
    let ringbuf = Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &info.id().to_string()])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).matches("bpf_ringbuf_reserve").count());
    Ok(Shape { insns, ringbuf, verified: info.verified_instruction_count() })
}
