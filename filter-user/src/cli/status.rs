use anyhow::Context as _;
use filter_common::ListKind;
use floodgate::{maps::FilterMaps, pins};
use serde_json::{Value, json};

use super::output::{grouped, mode_name, print_json};

/// Show where floodgate is attached, in which mode, and how full its lists are.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for iface in pins::attached()? {
        let p = pins::IfacePins::new(&iface)?;
        let maps = FilterMaps::from_pins(&p.dir).with_context(|| format!("opening the maps of {iface}"))?;
        let meta = maps.read_meta().with_context(|| format!("reading the state of {iface}"))?;
        let lists: serde_json::Map<String, Value> = ListKind::ALL
            .iter()
            .map(|k| {
                let c = meta.counts[*k as usize];
                (k.name().to_string(), json!({ "ipv4": c[0], "ipv6": c[1] }))
            })
            .collect();
        rows.push(json!({
            "interface": iface,
            "ifindex": meta.ifindex,
            "mode": mode_name(meta.mode),
            "link_pinned": p.link().exists(),
            "max_entries": meta.max_entries,
            "attached_at": meta.attached_at,
            "lists": lists,
            "pins": p.dir.display().to_string(),
        }));
    }
    if args.json {
        return print_json(&Value::Array(rows));
    }
    if rows.is_empty() {
        println!("floodgate is not attached to any interface");
        return Ok(());
    }
    for r in &rows {
        let lists = &r["lists"];
        println!(
            "{}: {} mode{}, blocklist {} v4 + {} v6, allowlist {} v4 + {} v6 (capacity {} per family)",
            r["interface"].as_str().unwrap_or("?"),
            r["mode"].as_str().unwrap_or("?"),
            if r["link_pinned"].as_bool() == Some(true) {
                ""
            } else {
                " (LINK PIN MISSING: not filtering; detach and attach again)"
            },
            lists["blocklist"]["ipv4"],
            lists["blocklist"]["ipv6"],
            lists["allowlist"]["ipv4"],
            lists["allowlist"]["ipv6"],
            grouped(r["max_entries"].as_u64().unwrap_or(0)),
        );
    }
    Ok(())
}
