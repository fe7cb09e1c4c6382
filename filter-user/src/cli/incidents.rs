//! `incidents report|show|list`: the floods `floodgate run` detected, read from the
//! service's state directory (`STATE_DIR/incidents/ID/`).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use comfy_table::CellAlignment;
use filter_common::cidr::echo;
use floodgate::{
    config::{self, DEFAULT_STATE_DIR},
    duration::format_duration,
    human::{bits_per_sec, si, utc},
    incident::{
        record::{IncidentRecord, State, Top},
        report::{self, FONT_PATHS},
        store::{Store, StoreError},
    },
};
use serde::Serialize;

use super::{
    Format,
    output::{Report, emit, grouped, print_json, table},
};

#[derive(Subcommand, Debug)]
pub enum IncidentsCommand {
    /// Write an incident's report into a folder, to send as it is to a hosting
    /// provider or a CERT.
    ///
    /// The folder holds report.md and report.html (the same text: when, how hard, from
    /// where, what was dropped and done, the thresholds crossed), the chart of packets
    /// per second by verdict reason (timeline.png, timeline.svg), and the sampled
    /// frames as ID.pcap for tcpdump or Wireshark. DIR is created if missing; files of
    /// an earlier report there are replaced. Prints the paths written.
    ///
    /// Example: floodgate incidents report 20260304-050607-eth0 -o /tmp/flood-report
    Report(ReportArgs),
    /// One incident: its times, peaks, exact totals by reason, heaviest sources,
    /// prefixes and ports (estimated from samples), and the actions taken.
    ///
    /// --json prints the whole record as kept on disk, timeline included.
    ///
    /// Example: floodgate incidents show 20260304-050607-eth0
    Show(ShowArgs),
    /// The incidents recorded, newest first: id, state, interface, start, duration,
    /// peak packets/s, packets dropped and the heaviest source prefix.
    ///
    /// Example: floodgate incidents list --config /etc/floodgate/floodgate.toml
    List(ListArgs),
}

/// Where the incidents are: the service's state directory.
#[derive(clap::Args, Debug, Clone)]
pub struct StateDir {
    /// The service's state directory [default: /var/lib/floodgate].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Take the state directory from this config file (its service.state_dir), e.g.
    /// /etc/floodgate/floodgate.toml.
    #[arg(short, long, value_name = "FILE", conflicts_with = "state_dir")]
    pub config: Option<PathBuf>,
}

impl StateDir {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        match (&self.state_dir, &self.config) {
            (Some(dir), _) => Ok(dir.clone()),
            (None, Some(file)) => {
                let cfg = config::load(file).map_err(|e| anyhow!("{} is not valid:\n{e}", file.display()))?;
                Ok(cfg.service.state_dir)
            }
            (None, None) => Ok(PathBuf::from(DEFAULT_STATE_DIR)),
        }
    }

    fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::existing(&self.resolve()?))
    }
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The incident, as `floodgate incidents list` shows it.
    #[arg(value_name = "ID")]
    pub id: String,
    /// The folder to write the report into.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    #[command(flatten)]
    pub dir: StateDir,
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// The incident, as `floodgate incidents list` shows it.
    #[arg(value_name = "ID")]
    pub id: String,
    #[command(flatten)]
    pub dir: StateDir,
    #[command(flatten)]
    pub format: Format,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub dir: StateDir,
    #[command(flatten)]
    pub format: Format,
}

/// One incident's record, with what to do when the ID is unknown.
fn load(store: &Store, id: &str) -> anyhow::Result<IncidentRecord> {
    match store.load(id) {
        Err(StoreError::NotFound { .. }) => bail!(
            "no incident '{}' in {}: `floodgate incidents list` shows the ids (add --state-dir DIR or \
             --config FILE when the service keeps its state elsewhere)",
            echo(id),
            store.root().display()
        ),
        r => Ok(r?),
    }
}

/// The last moment a record covers: its end, or its latest point while open.
fn last_ms(rec: &IncidentRecord) -> u64 {
    let last_point = rec.timeline.points.last().map_or(rec.started_ms, |p| p.at_ms);
    rec.ended_ms.unwrap_or(last_point).max(rec.started_ms)
}

/// The heaviest source prefix of either family.
fn top_prefix(rec: &IncidentRecord) -> Option<&Top> {
    rec.profile.prefixes_v4.iter().chain(&rec.profile.prefixes_v6).max_by_key(|t| t.packets)
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Open => "open",
        State::Closed => "closed",
    }
}

/// One incident of `incidents list --json`.
#[derive(Serialize)]
struct Row {
    id: String,
    state: State,
    interface: String,
    hostname: String,
    started_ms: u64,
    ended_ms: Option<u64>,
    duration_secs: u64,
    peak_pps: u64,
    peak_bps: u64,
    seen: u64,
    dropped: u64,
    top_prefix: Option<String>,
}

impl Row {
    fn new(rec: &IncidentRecord) -> Self {
        Row {
            id: rec.id.clone(),
            state: rec.state,
            interface: rec.interface.clone(),
            hostname: rec.hostname.clone(),
            started_ms: rec.started_ms,
            ended_ms: rec.ended_ms,
            duration_secs: (last_ms(rec) - rec.started_ms) / 1000,
            peak_pps: rec.peak_pps,
            peak_bps: rec.peak_bps,
            seen: rec.seen(),
            dropped: rec.dropped(),
            top_prefix: top_prefix(rec).map(|t| t.key.clone()),
        }
    }
}

#[derive(Serialize)]
#[serde(transparent)]
struct ListReport {
    rows: Vec<Row>,
    #[serde(skip)]
    root: PathBuf,
}

impl Report for ListReport {
    fn text(&self) -> String {
        if self.rows.is_empty() {
            return format!("no incidents in {}\n", self.root.display());
        }
        let header = [
            "id",
            "state",
            "interface",
            "start (UTC)",
            "duration",
            "peak pps",
            "dropped",
            "top source prefix",
        ];
        let mut t = table(&header, 4);
        if let Some(c) = t.column_mut(7) {
            c.set_cell_alignment(CellAlignment::Left);
        }
        for r in &self.rows {
            t.add_row(vec![
                echo(&r.id),
                state_name(r.state).to_string(),
                echo(&r.interface),
                utc(r.started_ms),
                format_duration(Duration::from_secs(r.duration_secs)),
                si(r.peak_pps),
                grouped(r.dropped),
                r.top_prefix.as_deref().map_or_else(String::new, echo),
            ]);
        }
        format!("{t}\n")
    }
}

/// `incidents show` as text.
struct Shown<'a> {
    rec: &'a IncidentRecord,
    pcap: Option<PathBuf>,
}

/// Rows shown of each top list.
const SHOWN_TOP: usize = 5;

impl Shown<'_> {
    fn facts(&self) -> String {
        let r = self.rec;
        let seen = r.seen();
        let dropped = r.dropped();
        let share = if seen == 0 { 0.0 } else { dropped as f64 * 100.0 / seen as f64 };
        let until = match r.state {
            State::Closed => utc(last_ms(r)),
            State::Open => format!("open, last update {}", utc(last_ms(r))),
        };
        let mut lines = vec![
            format!("{}: {}", echo(&r.id), state_name(r.state)),
            format!("  interface  {} on {}", echo(&r.interface), echo(&r.hostname)),
            format!("  start      {}", utc(r.started_ms)),
            format!(
                "  end        {until} ({})",
                format_duration(Duration::from_millis(last_ms(r) - r.started_ms))
            ),
            format!("  peak       {} packets/s, {}", si(r.peak_pps), bits_per_sec(r.peak_bps)),
            format!(
                "  packets    {} seen, {} dropped in the driver ({share:.1}%)",
                grouped(seen),
                grouped(dropped)
            ),
            format!("  crossed    {}", echo(&r.crossed.join(", "))),
        ];
        match &self.pcap {
            Some(p) => {
                lines.push(format!("  samples    {} frames in {}", grouped(r.pcap_frames), p.display()))
            }
            None => lines.push("  samples    no pcap kept".to_string()),
        }
        lines.join("\n") + "\n"
    }

    fn totals(&self) -> String {
        let mut t = table(&["reason", "packets", "bytes"], 1);
        let mut rows: Vec<_> = self.rec.totals.iter().collect();
        rows.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.0.cmp(b.0)));
        for (k, v) in rows {
            t.add_row(vec![echo(k), grouped(v.packets), grouped(v.bytes)]);
        }
        format!("\nTotals by reason (exact):\n{t}\n")
    }

    fn tops(&self) -> String {
        let p = &self.rec.profile;
        if p.samples == 0 {
            return "\nNo packets sampled: no sources, prefixes or ports.\n".to_string();
        }
        let mut out = format!(
            "\nEstimated from {} samples (each count an upper bound, at most {} above the truth):\n",
            grouped(p.samples),
            grouped(p.estimated_packets / u64::from(p.sketch_capacity.max(1)))
        );
        let mut prefixes: Vec<&Top> = p.prefixes_v4.iter().chain(&p.prefixes_v6).collect();
        prefixes.sort_by_key(|t| std::cmp::Reverse(t.packets));
        for (what, list) in [
            ("source prefix", prefixes),
            ("source", p.sources.iter().collect()),
            ("destination port", p.ports.iter().collect()),
        ] {
            let mut t = table(&[what, "packets"], 1);
            for top in list.iter().take(SHOWN_TOP) {
                t.add_row(vec![echo(&top.key), grouped(top.packets)]);
            }
            out.push_str(&format!("{t}\n\n"));
        }
        out.pop();
        out
    }

    fn actions(&self) -> String {
        if self.rec.actions.is_empty() {
            return "\nNo actions taken.\n".to_string();
        }
        let mut t = table(&["time (UTC)", "action", "result", "detail"], 4);
        let mut acts: Vec<_> = self.rec.actions.iter().collect();
        acts.sort_by_key(|a| a.at_ms);
        for a in acts {
            let result = if a.ok { "ok" } else { "failed" };
            t.add_row(vec![utc(a.at_ms), echo(&a.what), result.to_string(), echo(&a.detail)]);
        }
        format!("\nActions:\n{t}\n")
    }

    fn text(&self) -> String {
        let hint = format!("\nReport to send: floodgate incidents report {} -o DIR\n", echo(&self.rec.id));
        [self.facts(), self.totals(), self.tops(), self.actions(), hint].concat()
    }
}

/// The incident's pcap, when the record names one and it is there.
fn pcap_of(store: &Store, rec: &IncidentRecord) -> Option<PathBuf> {
    let path = store.dir(&rec.id).join(rec.pcap.as_ref()?);
    if !path.is_file() {
        eprintln!("floodgate: warning: {} is missing: the report has no capture", path.display());
        return None;
    }
    Some(path)
}

fn write_report(a: &ReportArgs) -> anyhow::Result<()> {
    let store = a.dir.store()?;
    let rec = load(&store, &a.id)?;
    let pcap = pcap_of(&store, &rec);
    let files = report::write_report(&rec, pcap.as_deref(), &a.output)
        .with_context(|| format!("writing the report of {}", echo(&rec.id)))?;
    for p in files.paths() {
        println!("{}", p.display());
    }
    if !files.chart_text {
        eprintln!(
            "floodgate: warning: {} has no text: no font found (install fonts-dejavu-core for {})",
            files.png.display(),
            FONT_PATHS[0]
        );
    }
    Ok(())
}

fn show(a: &ShowArgs) -> anyhow::Result<()> {
    let store = a.dir.store()?;
    let rec = load(&store, &a.id)?;
    if a.format.json {
        return print_json(&rec);
    }
    let pcap = rec.pcap.as_ref().map(|p| store.dir(&rec.id).join(p)).filter(|p| p.is_file());
    print!("{}", Shown { rec: &rec, pcap }.text());
    Ok(())
}

fn list(a: &ListArgs) -> anyhow::Result<()> {
    let store = a.dir.store()?;
    let records = store.list()?;
    let report =
        ListReport { rows: records.iter().map(Row::new).collect(), root: store.root().to_path_buf() };
    emit(&report, a.format.json)
}

pub fn run(cmd: IncidentsCommand) -> anyhow::Result<()> {
    match cmd {
        IncidentsCommand::Report(a) => write_report(&a),
        IncidentsCommand::Show(a) => show(&a),
        IncidentsCommand::List(a) => list(&a),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, fs};

    use clap::Parser as _;
    use floodgate::incident::{
        record::{Action, Profile, RECORD_VERSION, Timeline, Totals},
        store::Limits,
    };

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<IncidentsCommand, clap::Error> {
        let cli = Cli::try_parse_from(["floodgate", "incidents"].iter().chain(args))?;
        match cli.command {
            Command::Incidents(c) => Ok(c),
            other => panic!("{other:?}"),
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("floodgate-cli-incidents-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn arguments() {
        let Ok(IncidentsCommand::List(a)) = parse(&["list"]) else { panic!() };
        assert_eq!(a.dir.resolve().unwrap(), PathBuf::from("/var/lib/floodgate"));
        let Ok(IncidentsCommand::List(a)) = parse(&["list", "--state-dir", "/srv/fg", "--json"]) else {
            panic!()
        };
        assert_eq!(a.dir.resolve().unwrap(), PathBuf::from("/srv/fg"));
        assert!(a.format.json);
        let Ok(IncidentsCommand::Show(a)) = parse(&["show", "20260304-050607-eth0", "-c", "/etc/fg.toml"])
        else {
            panic!()
        };
        assert_eq!(
            (a.id.as_str(), a.dir.config.as_deref()),
            ("20260304-050607-eth0", Some("/etc/fg.toml".as_ref()))
        );
        let Ok(IncidentsCommand::Report(a)) = parse(&["report", "X", "-o", "out"]) else { panic!() };
        assert_eq!(a.output, PathBuf::from("out"));

        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["report", "X"]), clap::error::ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["list", "--state-dir", "/a", "--config", "/b"]),
            clap::error::ErrorKind::ArgumentConflict
        );
        assert_eq!(kind(&["show"]), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn state_dir_from_a_config_file() {
        let d = tmpdir("config");
        let good = d.join("good.toml");
        fs::write(&good, "[service]\nstate_dir = \"/srv/fg\"\n").unwrap();
        let dir = StateDir { state_dir: None, config: Some(good) };
        assert_eq!(dir.resolve().unwrap(), PathBuf::from("/srv/fg"));
        let bad = d.join("bad.toml");
        fs::write(&bad, "[service]\nstate_dir = 1\n").unwrap();
        let err = StateDir { state_dir: None, config: Some(bad.clone()) }.resolve().unwrap_err();
        assert!(err.to_string().contains(&format!("{} is not valid", bad.display())), "{err}");
        fs::remove_dir_all(&d).unwrap();
    }

    fn record() -> IncidentRecord {
        let t0 = 1_772_600_767_000;
        let top = |key: &str, packets| Top { key: key.to_string(), packets, error: 0 };
        IncidentRecord {
            version: RECORD_VERSION,
            id: "20260304-050607-eth0".to_string(),
            interface: "eth0".to_string(),
            hostname: "web-1".to_string(),
            state: State::Closed,
            started_ms: t0,
            ended_ms: Some(t0 + 90_000),
            thresholds: vec!["pps > 100000".to_string()],
            crossed: vec!["pps".to_string()],
            peak_pps: 250_000,
            peak_bps: 120_000_000,
            totals: BTreeMap::from([
                ("blocklist".to_string(), Totals { packets: 20_000_000, bytes: 1_200_000_000 }),
                ("passed".to_string(), Totals { packets: 9_000, bytes: 900_000 }),
            ]),
            timeline: Timeline::default(),
            profile: Profile {
                samples: 2_000,
                estimated_packets: 20_009_000,
                sketch_capacity: 100,
                sources: vec![top("203.0.113.9", 900_000)],
                prefixes_v4: vec![top("203.0.113.0/24", 19_000_000)],
                prefixes_v6: vec![top("2001:db8:bad::/48", 1_000_000)],
                ports: vec![top("udp/53", 20_000_000)],
                ..Profile::default()
            },
            actions: vec![Action {
                at_ms: t0 + 1_000,
                what: "hook.open".to_string(),
                ok: true,
                detail: "exit status 0\x1b[31m".to_string(),
            }],
            pcap: Some("samples.pcap".to_string()),
            pcap_frames: 2_000,
            pcap_skipped: 0,
            counted_to: None,
        }
    }

    #[test]
    fn list_show_and_report_read_the_store() {
        let d = tmpdir("store");
        let store = Store::open(&d, Limits::default()).unwrap();
        let rec = record();
        store.save(&rec).unwrap();
        fs::write(store.pcap_path(&rec.id), b"pcap").unwrap();
        let dir = StateDir { state_dir: Some(d.clone()), config: None };

        let rows = dir.store().unwrap().list().unwrap().iter().map(Row::new).collect();
        let text = ListReport { rows, root: store.root().to_path_buf() }.text();
        for s in [
            "20260304-050607-eth0",
            "closed",
            "2026-03-04T05:06:07Z",
            "1m 30s",
            "250k",
            "20,000,000",
            "203.0.113.0/24",
        ] {
            assert!(text.contains(s), "{s} in\n{text}");
        }
        let empty = ListReport { rows: Vec::new(), root: "/nowhere".into() }.text();
        assert_eq!(empty, "no incidents in /nowhere\n");

        let shown = Shown { rec: &rec, pcap: pcap_of(&store, &rec) }.text();
        for s in [
            "20260304-050607-eth0: closed",
            "eth0 on web-1",
            "250k packets/s, 120 Mbit/s",
            "20,009,000 seen, 20,000,000 dropped in the driver (100.0%)",
            "2,000 frames in",
            "at most 200,090 above the truth",
            "2001:db8:bad::/48",
            "exit status 0\\u{1b}[31m",
            "floodgate incidents report 20260304-050607-eth0 -o DIR",
        ] {
            assert!(shown.contains(s), "{s} in\n{shown}");
        }
        // The heavier prefix of either family first.
        assert!(shown.find("203.0.113.0/24").unwrap() < shown.find("2001:db8:bad::/48").unwrap());

        let err = load(&store, "20260101-000000-eth9").unwrap_err().to_string();
        assert!(
            err.contains("no incident '20260101-000000-eth9'") && err.contains("`floodgate incidents list`"),
            "{err}"
        );

        let out = d.join("report");
        write_report(&ReportArgs { id: rec.id.clone(), output: out.clone(), dir }).unwrap();
        for f in ["report.md", "report.html", "timeline.svg", "timeline.png", "20260304-050607-eth0.pcap"] {
            assert!(out.join(f).is_file(), "{f}");
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
