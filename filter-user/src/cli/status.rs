use std::collections::BTreeMap;

use filter_common::ListKind;
use floodgate::{
    loader::error_chain,
    maps::Pinned,
    pins::{self, IfacePins, Layout, NetnsId, State},
    store::ListMaps,
};
use serde::Serialize;

use super::{
    Format,
    output::{Report, emit, grouped, mode_name},
};

/// Where floodgate is attached, in which mode, and how full its lists are.
///
/// Lists the filters of every network namespace. Reads only: takes no lock.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub format: Format,
}

/// Entries of one list, by family.
#[derive(Clone, Copy, Serialize)]
struct Families {
    ipv4: u32,
    ipv6: u32,
}

/// What a filter whose pins are this version's says of itself.
#[derive(Serialize)]
struct Filter {
    ifindex: u32,
    mode: &'static str,
    max_entries: u32,
    attached_at: u64,
    lists: BTreeMap<&'static str, Families>,
}

/// One attached filter in `status --json`.
#[derive(Serialize)]
struct Row {
    interface: String,
    netns: Option<String>,
    netns_here: bool,
    state: String,
    link_pinned: bool,
    pins: String,
    problem: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    filter: Option<Filter>,
    /// The CrowdSec bouncer feeding this interface's blocklist (its service's state).
    #[serde(skip_serializing_if = "Option::is_none")]
    crowdsec: Option<floodgate::crowdsec::status::Status>,
}

#[derive(Serialize)]
#[serde(transparent)]
struct StatusReport(Vec<Row>);

impl Report for StatusReport {
    fn text(&self) -> String {
        if self.0.is_empty() {
            return "floodgate is not attached to any interface\n".to_string();
        }
        let mut out = String::new();
        for r in &self.0 {
            let ns = if r.netns_here {
                String::new()
            } else {
                format!(" [netns {}]", r.netns.as_deref().unwrap_or("unknown"))
            };
            let problem = r.problem.as_ref().map(|p| format!(" ({p})")).unwrap_or_default();
            let (name, state) = (&r.interface, &r.state);
            let Some(f) = &r.filter else {
                out.push_str(&format!("{name}{ns}: {state}{problem}\n"));
                continue;
            };
            let list = |k: ListKind| f.lists.get(k.name()).copied().unwrap_or(Families { ipv4: 0, ipv6: 0 });
            let (b, a) = (list(ListKind::Block), list(ListKind::Allow));
            out.push_str(&format!(
                "{name}{ns}: {state}, {} mode{problem}, blocklist {} v4 + {} v6, allowlist {} v4 + {} v6 (capacity {} per family)\n",
                f.mode,
                b.ipv4,
                b.ipv6,
                a.ipv4,
                a.ipv6,
                grouped(f.max_entries.into()),
            ));
        }
        // The bouncer serves the whole namespace: shown once.
        if let Some(cs) = self.0.iter().find_map(|r| r.crowdsec.as_ref()) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            out.push_str(&cs.text(now));
            out.push('\n');
        }
        out
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let here = NetnsId::current()?;
    let crowdsec =
        super::service::runtime_dir().ok().and_then(|d| floodgate::crowdsec::status::Status::load(&d));
    let mut rows: Vec<Row> = pins::all()?.iter().map(|p| row(p, here)).collect();
    for r in &mut rows {
        if r.netns_here
            && let Some(cs) = crowdsec.as_ref().filter(|cs| cs.interfaces.contains_key(&r.interface))
        {
            r.crowdsec = Some(cs.clone());
        }
    }
    emit(&StatusReport(rows), args.format.json)
}

/// One filter: where it is, whether its interface is still there, and its lists when
/// its pins are this version's.
fn row(p: &IfacePins, here: NetnsId) -> Row {
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
    let mut r = Row {
        interface: p.iface.clone(),
        netns: p.netns.map(|n| n.label()),
        netns_here: is_here,
        state,
        link_pinned: link.is_some(),
        pins: p.dir.display().to_string(),
        problem,
        filter: None,
        crowdsec: None,
    };
    if p.layout == Layout::Flat || r.state == "insecure pins" {
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
            let lists = ListKind::ALL
                .iter()
                .map(|k| {
                    let (c, e) = (meta.counts[*k as usize], expired[*k as usize]);
                    let families =
                        Families { ipv4: c[0].saturating_sub(e[0]), ipv6: c[1].saturating_sub(e[1]) };
                    (k.name(), families)
                })
                .collect();
            r.filter = Some(Filter {
                ifindex: meta.ifindex,
                mode: mode_name(meta.mode),
                max_entries: meta.max_entries,
                attached_at: meta.attached_at,
                lists,
            });
        }
        Err(e) => {
            r.problem.get_or_insert(e);
        }
    }
    r
}
