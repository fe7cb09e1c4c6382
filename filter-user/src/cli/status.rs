use filter_common::ListKind;
use floodgate::{
    loader::error_chain,
    maps::Pinned,
    pins::{self, IfacePins, Layout, NetnsId, State},
    store::ListMaps,
};
use serde_json::{Value, json};

use super::output::{grouped, mode_name, print_json};

/// Show where floodgate is attached (in every network namespace), in which mode, and
/// how full its lists are. Reads only: takes no lock.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let here = NetnsId::current()?;
    let rows: Vec<Value> = pins::all()?.iter().map(|p| row(p, here)).collect();
    if args.json {
        return print_json(&Value::Array(rows));
    }
    if rows.is_empty() {
        println!("floodgate is not attached to any interface");
        return Ok(());
    }
    for r in &rows {
        let name = r["interface"].as_str().unwrap_or("?");
        let ns = if r["netns_here"] == true {
            String::new()
        } else {
            format!(" [netns {}]", r["netns"].as_str().unwrap_or("unknown"))
        };
        let problem = r["problem"].as_str().map(|p| format!(" ({p})")).unwrap_or_default();
        if r["lists"].is_null() {
            println!("{name}{ns}: {}{problem}", r["state"].as_str().unwrap_or("?"));
            continue;
        }
        let lists = &r["lists"];
        println!(
            "{name}{ns}: {}, {} mode{problem}, blocklist {} v4 + {} v6, allowlist {} v4 + {} v6 (capacity {} per family)",
            r["state"].as_str().unwrap_or("?"),
            r["mode"].as_str().unwrap_or("?"),
            lists["blocklist"]["ipv4"],
            lists["blocklist"]["ipv6"],
            lists["allowlist"]["ipv4"],
            lists["allowlist"]["ipv6"],
            grouped(r["max_entries"].as_u64().unwrap_or(0)),
        );
    }
    Ok(())
}

/// One filter: where it is, whether its interface is still there, and its lists when
/// its pins are this version's.
fn row(p: &IfacePins, here: NetnsId) -> Value {
    let is_here = p.netns == Some(here);
    let link = pins::link_ifindex(&p.dir);
    let mut problem = None;
    let state = if p.layout == Layout::Flat {
        problem = Some(format!(
            "pins of an older floodgate: run `floodgate detach -i {}` in its namespace",
            p.iface
        ));
        "old layout".to_string()
    } else if let Err(e) = p.check_secure() {
        problem = Some(e.to_string());
        "insecure pins".to_string()
    } else if is_here {
        match p.state() {
            State::Live(_) => "attached".to_string(),
            State::Gone => {
                problem = Some(format!("not filtering: run `floodgate detach -i {}`", p.iface));
                "interface gone".to_string()
            }
            State::Renamed { now, .. } => {
                problem = Some(format!("commands take -i {now}"));
                format!("interface renamed to {now}")
            }
            State::Unknown => {
                problem = Some(format!("not filtering: run `floodgate detach -i {}`", p.iface));
                "incomplete pins".to_string()
            }
        }
    } else {
        // Another namespace: its interface names mean nothing here, but a link that
        // lost its device says the interface is gone.
        match link {
            Some(0) => {
                problem = Some("not filtering: detach it from its namespace".to_string());
                "interface gone".to_string()
            }
            _ => "attached".to_string(),
        }
    };
    if link.is_none() && problem.is_none() {
        problem = Some(format!(
            "LINK PIN MISSING: not filtering; run `floodgate detach -i {}` and attach again",
            p.iface
        ));
    }
    let mut r = json!({
        "interface": p.iface,
        "netns": p.netns.map(|n| n.label()),
        "netns_here": is_here,
        "state": state,
        "link_pinned": link.is_some(),
        "pins": p.dir.display().to_string(),
        "problem": problem,
    });
    if p.layout == Layout::Flat || r["state"] == "insecure pins" {
        return r;
    }
    let meta = Pinned::open(p)
        .and_then(|mut src| ListMaps::open(&mut src))
        .map_err(|e| error_chain(&e))
        .and_then(|m| {
            let meta = m.read_meta().map_err(|e| error_chain(&e))?;
            Ok((meta, m.expired()))
        });
    match meta {
        Ok((meta, expired)) => {
            let lists: serde_json::Map<String, Value> = ListKind::ALL
                .iter()
                .map(|k| {
                    let (c, e) = (meta.counts[*k as usize], expired[*k as usize]);
                    let c = [c[0].saturating_sub(e[0]), c[1].saturating_sub(e[1])];
                    (k.name().to_string(), json!({ "ipv4": c[0], "ipv6": c[1] }))
                })
                .collect();
            r["ifindex"] = json!(meta.ifindex);
            r["mode"] = json!(mode_name(meta.mode));
            r["max_entries"] = json!(meta.max_entries);
            r["attached_at"] = json!(meta.attached_at);
            r["lists"] = Value::Object(lists);
        }
        Err(e) => {
            if r["problem"].is_null() {
                r["problem"] = json!(e);
            }
        }
    }
    r
}
