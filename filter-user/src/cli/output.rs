//! Shared formatting helpers.

use std::io::IsTerminal as _;

use filter_common::{Counter, MODE_NATIVE, MODE_SKB};
use serde_json::{Value, json};

pub fn mode_name(mode: u32) -> &'static str {
    match mode {
        MODE_NATIVE => "native",
        MODE_SKB => "skb",
        _ => "unknown",
    }
}

pub fn counter_json(c: Counter) -> Value {
    json!({ "packets": c.packets, "bytes": c.bytes })
}

pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A progress line on stderr, only when stderr is a terminal.
pub fn progress_bar(label: &str) -> impl FnMut(u64, u64) + '_ {
    let tty = std::io::stderr().is_terminal();
    move |done, total| {
        if tty && total > 0 {
            let pct = done * 100 / total;
            let width = 30;
            let filled = (done * width / total) as usize;
            eprint!(
                "\r{label} [{}{}] {done}/{total} ({pct}%)",
                "#".repeat(filled),
                " ".repeat(width as usize - filled)
            );
            if done == total {
                eprintln!();
            }
        }
    }
}

/// Thousands separators for humans.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
