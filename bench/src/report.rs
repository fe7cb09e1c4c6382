//! Tables for the terminal and report.md, and report.json.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::Context as _;
use serde_json::{Value, json};

/// One table of the report.
pub struct Section {
    pub title: String,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
    pub json: Value,
}

impl Section {
    pub fn new(title: &str, columns: &[&'static str]) -> Self {
        Section {
            title: title.to_string(),
            columns: columns.to_vec(),
            rows: Vec::new(),
            notes: Vec::new(),
            json: Value::Null,
        }
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        let _ = writeln!(s, "| {} |", self.columns.join(" | "));
        let _ = writeln!(s, "|{}|", self.columns.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        for n in &self.notes {
            let _ = write!(s, "\n{n}\n");
        }
        s
    }
}

/// Median of the samples (NaN for none).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

pub fn ns(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

pub fn ratio(x: f64) -> String {
    if x.is_nan() { "-".into() } else { format!("{x:.2}x") }
}

/// 12,345,678
pub fn count(x: f64) -> String {
    if x.is_nan() {
        return "-".into();
    }
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn first_line(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|| "not installed".into())
}

/// Kernel, CPU and tool versions.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "kernel": first_line("uname", &["-r"]),
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "memory_gib": (mem_kb as f64 / 1048576.0 * 10.0).round() / 10.0,
        "floodgate": env!("CARGO_PKG_VERSION"),
        "commit": first_line("git", &["rev-parse", "--short", "HEAD"]),
        "nft": first_line("nft", &["--version"]),
        "iptables": first_line("iptables", &["--version"]),
        "ipset": first_line("ipset", &["--version"]),
        "nginx": first_line("nginx", &["-v"]),
        "date": first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    })
}

pub fn machine_line(m: &Value) -> String {
    let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
    format!(
        "Machine: kernel {}, {} x {}, {} GiB; floodgate {} ({}); {}; {}; {}; {}. Run {}.",
        s("kernel"),
        m["cpus"],
        s("cpu"),
        m["memory_gib"],
        s("floodgate"),
        s("commit"),
        s("nft"),
        s("iptables"),
        s("ipset"),
        s("nginx"),
        s("date"),
    )
}

pub fn write(
    dir: &Path,
    quick: bool,
    machine: &Value,
    sections: &[Section],
    secs: f64,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut md = format!(
        "## floodgate benchmark{}\n\n{}\nWhole run: {:.0} s.\n\n",
        if quick { " (--quick)" } else { "" },
        machine_line(machine),
        secs
    );
    for s in sections {
        md.push_str(&s.markdown());
        md.push('\n');
    }
    std::fs::write(dir.join("report.md"), &md).context("writing report.md")?;
    let j = json!({
        "quick": quick,
        "machine": machine,
        "seconds": secs,
        "sections": sections.iter().map(|s| json!({
            "title": s.title,
            "columns": s.columns,
            "rows": s.rows,
            "notes": s.notes,
            "data": s.json,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&j)?)
        .context("writing report.json")?;
    Ok(md)
}
