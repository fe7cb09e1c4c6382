//! Shared output: JSON or text from one typed report, tables, the progress bar.

use comfy_table::{CellAlignment, Table, presets::NOTHING};
use filter_common::Counter;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

pub use filter_common::mode_name;
pub use floodgate::human::grouped;

/// Packets and bytes, as every JSON counter is written.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl From<Counter> for Count {
    fn from(c: Counter) -> Self {
        Count { packets: c.packets, bytes: c.bytes }
    }
}

/// A command's result: one value, printed as JSON or as text.
pub trait Report: Serialize {
    /// The text form, newline-terminated lines.
    fn text(&self) -> String;
}

pub fn emit(report: &impl Report, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    print!("{}", report.text());
    Ok(())
}

pub fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A borderless table; columns from `right_from` on are right-aligned (numbers).
pub fn table(header: &[&str], right_from: usize) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.to_vec());
    for i in right_from..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// A progress bar on stderr; indicatif draws it only when stderr is a terminal.
pub fn progress_bar(label: &'static str) -> impl FnMut(u64, u64) {
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({percent}%)")
        .expect("a valid template")
        .progress_chars("## ");
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        .with_style(style)
        .with_message(label);
    move |done, total| {
        bar.set_length(total);
        bar.set_position(done);
        if done >= total {
            bar.finish();
        }
    }
}
