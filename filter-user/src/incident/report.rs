//! An incident's report: a folder a team can attach as it is to a mail to its hosting
//! provider or a CERT. `report.md` and `report.html` say the same (one [`doc::Doc`]
//! written twice), `timeline.svg` and `timeline.png` chart the packets per second by
//! verdict reason, and `ID.pcap` holds the sampled frames.
//!
//! Rendering is pure (a record in, text and bytes out); only [`write_report`] touches
//! the filesystem.

mod chart;
mod doc;

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use filter_common::Reason;
use thiserror::Error;

use self::doc::{Block, Doc, Span, code, text};
use super::record::{IncidentRecord, SIZE_BUCKETS, State, Top};
use crate::human::{bits_per_sec, bytes, grouped, si, utc};

pub use chart::FONT_PATHS;

pub const MARKDOWN_FILE: &str = "report.md";
pub const HTML_FILE: &str = "report.html";
pub const SVG_FILE: &str = "timeline.svg";
pub const PNG_FILE: &str = "timeline.png";
/// Rows of each top list in the report.
pub const TOP_ROWS: usize = 20;

/// What [`write_report`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportFiles {
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub svg: PathBuf,
    pub png: PathBuf,
    /// `ID.pcap`, when a capture was given.
    pub pcap: Option<PathBuf>,
    /// False when no font was found (see [`FONT_PATHS`]): the charts have no text.
    pub chart_text: bool,
}

impl ReportFiles {
    /// Every file written, the Markdown first.
    pub fn paths(&self) -> Vec<&Path> {
        let mut v =
            vec![self.markdown.as_path(), self.html.as_path(), self.svg.as_path(), self.png.as_path()];
        v.extend(self.pcap.as_deref());
        v
    }
}

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot copy {} to {}: {source}", from.display(), to.display())]
    Copy { from: PathBuf, to: PathBuf, source: io::Error },
    #[error("cannot draw {}: {message}", path.display())]
    Chart { path: PathBuf, message: String },
}

/// Writes the report of `rec` into `out_dir` (created if missing), copying `pcap` in
/// as `ID.pcap`. Files of an earlier report there are replaced.
pub fn write_report(
    rec: &IncidentRecord,
    pcap: Option<&Path>,
    out_dir: &Path,
) -> Result<ReportFiles, ReportError> {
    fs::create_dir_all(out_dir)
        .map_err(|source| ReportError::Write { path: out_dir.to_path_buf(), source })?;
    let files = ReportFiles {
        markdown: out_dir.join(MARKDOWN_FILE),
        html: out_dir.join(HTML_FILE),
        svg: out_dir.join(SVG_FILE),
        png: out_dir.join(PNG_FILE),
        pcap: pcap.map(|_| out_dir.join(pcap_name(rec))),
        chart_text: chart::font_ready(),
    };
    let svg = chart::svg(rec).map_err(chart_error(&files.svg))?;
    let png = chart::png(rec).map_err(chart_error(&files.png))?;
    let doc = document(rec, pcap.is_some());
    write(&files.svg, svg.as_bytes())?;
    write(&files.png, &png)?;
    write(&files.markdown, doc.markdown().as_bytes())?;
    write(&files.html, doc.html(&title(rec)).as_bytes())?;
    if let (Some(from), Some(to)) = (pcap, &files.pcap) {
        fs::copy(from, to).map_err(|source| ReportError::Copy {
            from: from.to_path_buf(),
            to: to.clone(),
            source,
        })?;
    }
    Ok(files)
}

fn chart_error(path: &Path) -> impl FnOnce(String) -> ReportError + '_ {
    move |message| ReportError::Chart { path: path.to_path_buf(), message }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    fs::write(path, bytes).map_err(|source| ReportError::Write { path: path.to_path_buf(), source })
}

fn pcap_name(rec: &IncidentRecord) -> String {
    format!("{}.pcap", rec.id)
}

/// The last moment the record covers: its end, or its latest point while open.
fn last_ms(rec: &IncidentRecord) -> u64 {
    let last_point = rec.timeline.points.last().map_or(0, |p| p.at_ms);
    rec.ended_ms.unwrap_or(last_point).max(rec.started_ms)
}

pub fn title(rec: &IncidentRecord) -> String {
    let span = match rec.state {
        State::Closed => format!("{} to {}", utc(rec.started_ms), utc(last_ms(rec))),
        State::Open => format!("since {} (ongoing)", utc(rec.started_ms)),
    };
    format!("Traffic flood on {} of {}, {span}", rec.interface, rec.hostname)
}

/// `part` as a percentage of `whole`, one decimal.
fn pct(part: u64, whole: u64) -> String {
    match (part, whole) {
        (_, 0) | (0, _) => "0%".to_string(),
        _ if part * 1000 < whole => "<0.1%".to_string(),
        _ => format!("{:.1}%", part as f64 * 100.0 / whole as f64),
    }
}

fn reason(key: &str) -> Option<Reason> {
    Reason::ALL.into_iter().find(|r| r.key() == key)
}

/// What floodgate did with a reason's packets, for people.
fn verdict(key: &str) -> &'static str {
    let Some(r) = reason(key) else { return "(a reason this floodgate does not know)" };
    match r {
        Reason::Passed => "passed to the network stack",
        Reason::Allowed => "passed: source on the allowlist",
        Reason::Malformed => "passed: malformed headers (the stack drops them)",
        Reason::NonIp => "passed: not IP (ARP, LLDP, ...)",
        Reason::AckRepaired => "passed: handshake ACK repaired",
        Reason::L4Unseen => "passed: transport header out of reach",
        Reason::SynProxy => "answered in the driver with a SYN cookie",
        Reason::Blocklist => "dropped: source on the blocklist",
        Reason::RateLimit => "dropped: source over its rate limit",
        Reason::SynLimit => "dropped: SYN over its rate limit",
        Reason::Rule => "dropped: protocol/port rule",
        Reason::Policy => "dropped: port not served",
        Reason::Fragment => "dropped: IP fragment",
        Reason::Unchecked => "dropped: could not be checked",
    }
}

/// The record as a document.
fn document(rec: &IncidentRecord, with_pcap: bool) -> Doc {
    let mut d = Doc::default();
    d.heading(1, title(rec));
    summary(&mut d, rec);
    chart_section(&mut d, rec);
    totals(&mut d, rec);
    profile(&mut d, rec);
    actions(&mut d, rec);
    detection(&mut d, rec);
    samples(&mut d, rec, with_pcap);
    d.para(vec![
        text(format!(
            "Made by floodgate {}, an XDP packet filter, from incident record ",
            env!("CARGO_PKG_VERSION")
        )),
        code(&rec.id),
        text(
            ". Totals are exact counters; sources, prefixes, ports, protocols, sizes and TTLs are estimates \
             from sampled packets. Times are UTC (ISO 8601).",
        ),
    ]);
    d
}

fn summary(d: &mut Doc, rec: &IncidentRecord) {
    let (start, end) = (rec.started_ms, last_ms(rec));
    let seen = rec.seen();
    let bytes_seen: u64 = rec.totals.values().map(|t| t.bytes).sum();
    let dropped = rec.dropped();
    let answered = rec.totals.get(Reason::SynProxy.key()).map_or(0, |t| t.packets);
    let passed = seen.saturating_sub(dropped + answered);
    let when = match rec.state {
        State::Closed => format!("From {} to {}", utc(start), utc(end)),
        State::Open => {
            format!("From {} to the last update at {} (the incident was still open)", utc(start), utc(end))
        }
    };
    let mut s = vec![text(format!(
        "{when}, {} in all, interface {} of {} received {} packets ({}), peaking at {} packets/s and {}. \
             floodgate dropped {} of them ({}) in the network driver, before the kernel's network stack spent \
             anything on them, ",
        crate::duration::format_duration(std::time::Duration::from_millis(end - start)),
        rec.interface,
        rec.hostname,
        grouped(seen),
        bytes(bytes_seen),
        si(rec.peak_pps),
        bits_per_sec(rec.peak_bps),
        grouped(dropped),
        pct(dropped, seen),
    ))];
    if answered > 0 {
        s.push(text(format!("answered {} SYNs with SYN cookies there, ", grouped(answered))));
    }
    s.push(text(format!("and passed {} ({}) to the stack.", grouped(passed), pct(passed, seen))));
    let mut main: Vec<(&String, u64)> =
        rec.totals.iter().map(|(k, t)| (k, t.packets)).filter(|(_, p)| *p > 0).collect();
    main.sort_by_key(|&(_, packets)| std::cmp::Reverse(packets));
    for (i, (key, packets)) in main.iter().take(3).enumerate() {
        s.push(text(if i == 0 { " Main reasons: " } else { ", " }));
        s.push(code(key.as_str()));
        s.push(text(format!(" ({} packets, {})", grouped(*packets), pct(*packets, seen))));
    }
    if !main.is_empty() {
        s.push(text("."));
    }
    let heaviest = rec.profile.prefixes_v4.iter().chain(&rec.profile.prefixes_v6).max_by_key(|t| t.packets);
    if let Some(t) = heaviest {
        s.push(text(" The heaviest source prefix in the samples was "));
        s.push(code(&t.key));
        s.push(text(format!(" (about {} packets).", si(t.packets))));
    }
    d.para(s);
}

fn chart_section(d: &mut Doc, rec: &IncidentRecord) {
    d.heading(2, "Packets per second");
    if rec.timeline.points.is_empty() {
        d.para(vec![text("No per-second figures were recorded for this incident.")]);
        return;
    }
    d.push(Block::Chart {
        png: PNG_FILE.to_string(),
        svg: SVG_FILE.to_string(),
        alt: format!("Packets per second by verdict reason on {}", rec.interface),
    });
    let step = rec.timeline.step_secs;
    d.para(vec![text(format!(
        "Packets per second by verdict reason, stacked: the top edge is everything the interface received. \
         Drops in warm colours, passed traffic in green and grey. One point per {} (longer incidents are \
         averaged over longer steps).",
        if step == 1 { "second".to_string() } else { format!("{step} seconds") }
    ))]);
}

fn totals(d: &mut Doc, rec: &IncidentRecord) {
    d.heading(2, "Totals by reason");
    d.para(vec![text("Exact, from floodgate's verdict counters in the driver, over the whole incident.")]);
    let seen = rec.seen();
    let mut rows: Vec<(&String, u64, u64)> =
        rec.totals.iter().map(|(k, t)| (k, t.packets, t.bytes)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut table: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(k, p, b)| vec![k.clone(), verdict(k).to_string(), grouped(p), grouped(b), pct(p, seen)])
        .collect();
    let all_bytes = rec.totals.values().map(|t| t.bytes).sum();
    table.push(vec!["all".into(), String::new(), grouped(seen), grouped(all_bytes), pct(seen, seen)]);
    d.table(&["reason", "what floodgate did", "packets", "bytes", "share"], 2, table);
}

fn profile(d: &mut Doc, rec: &IncidentRecord) {
    let p = &rec.profile;
    d.heading(2, "Sources and targets");
    if p.samples == 0 {
        d.para(vec![text(
            "No packets were sampled during this incident: there are no estimates of its sources, prefixes, \
             ports, protocols, sizes or TTLs.",
        )]);
        return;
    }
    let mut bound = format!(
        "Estimated from {} samples, standing for {} packets: each count is an upper bound",
        grouped(p.samples),
        grouped(p.estimated_packets)
    );
    if p.sketch_capacity > 0 {
        bound.push_str(&format!(
            ", at most {} above the truth",
            grouped(p.estimated_packets / u64::from(p.sketch_capacity))
        ));
    }
    bound.push_str(". \"At least\" is the lower bound of each entry.");
    d.para(vec![text(bound)]);
    let est = p.estimated_packets;
    top_table(d, "Top sources", "source", &p.sources, est);
    top_table(d, "Top IPv4 /24 prefixes", "prefix", &p.prefixes_v4, est);
    top_table(d, "Top IPv6 /48 prefixes", "prefix", &p.prefixes_v6, est);
    top_table(d, "Top destination ports", "port", &p.ports, est);

    d.heading(3, "Protocols");
    let mut protos: Vec<(&String, &u64)> = p.protocols.iter().collect();
    protos.sort_by(|a, b| b.1.cmp(a.1));
    let rows = protos.into_iter().map(|(k, n)| (k.clone(), *n)).collect();
    share_table(d, "protocol", rows, est);

    d.heading(3, "Frame sizes");
    let mut rows: Vec<(String, u64)> = SIZE_BUCKETS
        .iter()
        .map(|(_, l)| (format!("{l} bytes"), p.sizes.get(*l).copied().unwrap_or(0)))
        .collect();
    let known = |k: &str| SIZE_BUCKETS.iter().any(|(_, l)| *l == k);
    rows.extend(p.sizes.iter().filter(|(k, _)| !known(k)).map(|(k, n)| (k.clone(), *n)));
    share_table(d, "size", rows, est);

    ttl_section(d, rec);
}

fn top_table(d: &mut Doc, heading: &str, what: &str, tops: &[Top], est: u64) {
    d.heading(3, heading);
    if tops.is_empty() {
        d.para(vec![text("None in the samples.")]);
        return;
    }
    let rows = tops
        .iter()
        .take(TOP_ROWS)
        .map(|t| {
            vec![
                t.key.clone(),
                grouped(t.packets),
                grouped(t.packets.saturating_sub(t.error)),
                pct(t.packets, est),
            ]
        })
        .collect();
    d.table(&[what, "packets (at most)", "at least", "share"], 1, rows);
    if tops.len() > TOP_ROWS {
        d.para(vec![text(format!("The first {TOP_ROWS} of {}.", tops.len()))]);
    }
}

fn share_table(d: &mut Doc, what: &str, rows: Vec<(String, u64)>, est: u64) {
    if rows.is_empty() {
        d.para(vec![text("None in the samples.")]);
        return;
    }
    let rows = rows.into_iter().map(|(k, n)| vec![k, grouped(n), pct(n, est)]).collect();
    d.table(&[what, "packets (estimated)", "share"], 1, rows);
}

/// TTL ranges by the start value they usually come from.
const TTL_GROUPS: [(u8, u8, &str); 4] = [
    (0, 32, "32, or from far away"),
    (33, 64, "64: Linux, BSD, macOS"),
    (65, 128, "128: Windows"),
    (129, 255, "255: routers, some Unix stacks"),
];

fn ttl_section(d: &mut Doc, rec: &IncidentRecord) {
    let ttls = &rec.profile.ttls;
    d.heading(3, "TTL and hop limit");
    let total: u64 = ttls.values().sum();
    if total == 0 {
        d.para(vec![text("No TTL values in the samples.")]);
        return;
    }
    let rows = TTL_GROUPS
        .iter()
        .map(|&(lo, hi, origin)| {
            let n: u64 = ttls.range(lo..=hi).map(|(_, n)| n).sum();
            vec![format!("{lo}-{hi}"), origin.to_string(), grouped(n), pct(n, total)]
        })
        .collect();
    d.table(&["TTL", "usual start value", "packets (estimated)", "share"], 2, rows);
    let mut values: Vec<(u8, u64)> = ttls.iter().map(|(t, n)| (*t, *n)).collect();
    values.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut covered = 0;
    let needed = values
        .iter()
        .position(|(_, n)| {
            covered += n;
            covered * 10 >= total * 9
        })
        .map_or(values.len(), |i| i + 1);
    let frequent: Vec<String> =
        values.iter().take(5).map(|(t, n)| format!("{t} ({})", pct(*n, total))).collect();
    d.para(vec![text(format!(
        "Most frequent values: {}. {needed} of the {} values seen cover 90% of the sampled packets. \
         Hosts at different distances arrive with different TTLs: a flood from many source addresses that \
         shows one or a few TTL values most likely comes from a few machines forging those addresses.",
        frequent.join(", "),
        values.len()
    ))]);
}

fn actions(d: &mut Doc, rec: &IncidentRecord) {
    d.heading(2, "Actions taken");
    if rec.actions.is_empty() {
        d.para(vec![text(
            "None beyond filtering with the configuration in force: no hooks, webhooks or escalations ran.",
        )]);
        return;
    }
    let mut acts: Vec<_> = rec.actions.iter().collect();
    acts.sort_by_key(|a| a.at_ms);
    let rows = acts
        .into_iter()
        .map(|a| {
            vec![
                utc(a.at_ms),
                a.what.clone(),
                (if a.ok { "ok" } else { "failed" }).to_string(),
                a.detail.clone(),
            ]
        })
        .collect();
    d.table(&["time (UTC)", "action", "result", "detail"], 4, rows);
}

fn detection(d: &mut Doc, rec: &IncidentRecord) {
    d.heading(2, "Detection");
    let list = |items: &[String]| -> Vec<Span> {
        if items.is_empty() {
            return vec![text("none recorded")];
        }
        let mut v = Vec::new();
        for (i, t) in items.iter().enumerate() {
            if i > 0 {
                v.push(text(", "));
            }
            v.push(code(t));
        }
        v
    };
    let mut s = vec![text("Thresholds in force: ")];
    s.extend(list(&rec.thresholds));
    s.push(text(". Crossed: "));
    s.extend(list(&rec.crossed));
    s.push(text("."));
    d.para(s);
}

fn samples(d: &mut Doc, rec: &IncidentRecord, with_pcap: bool) {
    d.heading(2, "Packet samples");
    if !with_pcap {
        d.para(vec![text("No packet capture is attached to this report.")]);
        return;
    }
    let name = pcap_name(rec);
    let mut s = vec![
        Span::Link { text: name.clone(), href: name.clone() },
        text(format!(" holds {} sampled frames", grouped(rec.pcap_frames))),
    ];
    if rec.pcap_skipped > 0 {
        s.push(text(format!(
            "; {} more were left out once the file reached its size limit",
            grouped(rec.pcap_skipped)
        )));
    }
    s.push(text(
        ". They are samples of each verdict reason, not the whole flood. Open the file in Wireshark \
         (File, Open) or read it with tcpdump:",
    ));
    d.para(s);
    let mut cmds = vec![format!("tcpdump -nn -r {name}"), format!("tcpdump -nn -v -r {name} -c 20")];
    if let Some(t) = rec.profile.prefixes_v4.first().or(rec.profile.prefixes_v6.first()) {
        cmds.push(format!("tcpdump -nn -r {name} 'src net {}'", t.key));
    }
    d.push(Block::Commands(cmds));
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::record::{Action, Point, Profile, RECORD_VERSION, Timeline, Totals};

    /// 2026-03-04T05:06:07Z.
    pub const T0: u64 = 1_772_600_767_000;

    fn top(key: &str, packets: u64, error: u64) -> Top {
        Top { key: key.to_string(), packets, error }
    }

    /// Ten minutes of a blocklisted flood with a rate-limited tail, fully profiled.
    pub fn closed() -> IncidentRecord {
        let mut timeline = Timeline::default();
        for s in 1..=600u64 {
            let flood = (s.min(60) * 13_000).min(800_000);
            timeline.push_second(
                T0 + s * 1000,
                BTreeMap::from([
                    ("passed".to_string(), 1_000 + s % 7),
                    ("blocklist".to_string(), flood),
                    ("rate_limit".to_string(), if s > 300 { 50_000 } else { 0 }),
                ]),
            );
        }
        let t = |packets, bytes| Totals { packets, bytes };
        IncidentRecord {
            version: RECORD_VERSION,
            id: "20260304-050607-eth0".to_string(),
            interface: "eth0".to_string(),
            hostname: "web-1".to_string(),
            state: State::Closed,
            started_ms: T0,
            ended_ms: Some(T0 + 600_000),
            thresholds: vec!["pps > 100000".to_string(), "dropped_pps.blocklist > 50000".to_string()],
            crossed: vec!["pps".to_string(), "dropped_pps.blocklist".to_string()],
            peak_pps: 851_006,
            peak_bps: 6_808_048_000,
            totals: BTreeMap::from([
                ("passed".to_string(), t(601_800, 120_360_000)),
                ("blocklist".to_string(), t(456_000_000, 27_360_000_000)),
                ("rate_limit".to_string(), t(15_000_000, 900_000_000)),
            ]),
            timeline,
            profile: Profile {
                samples: 47_160,
                estimated_packets: 471_601_800,
                sketch_capacity: 256,
                sources: (0..25)
                    .map(|i| top(&format!("203.0.113.{i}"), 18_000_000 - i * 1000, i * 10))
                    .collect(),
                prefixes_v4: vec![
                    top("203.0.113.0/24", 450_000_000, 0),
                    top("198.51.100.0/24", 15_000_000, 1_200),
                ],
                prefixes_v6: Vec::new(),
                ports: vec![top("udp/53", 460_000_000, 0), top("tcp/443", 500_000, 1_000)],
                protocols: BTreeMap::from([("udp".to_string(), 470_000_000), ("tcp".to_string(), 1_601_800)]),
                sizes: BTreeMap::from([
                    ("0-64".to_string(), 460_000_000),
                    ("513-1024".to_string(), 11_601_800),
                ]),
                ttls: BTreeMap::from([(52, 400_000_000), (53, 60_000_000), (117, 11_601_800)]),
                reasons: BTreeMap::from([("blocklist".to_string(), 456_000_000)]),
            },
            actions: vec![
                Action {
                    at_ms: T0 + 2_000,
                    what: "webhook.open".to_string(),
                    ok: true,
                    detail: "HTTP 200".to_string(),
                },
                Action {
                    at_ms: T0 + 1_000,
                    what: "hook.open".to_string(),
                    ok: false,
                    detail: "exit status 1 | stderr: no route".to_string(),
                },
            ],
            pcap: Some("samples.pcap".to_string()),
            pcap_frames: 5_000,
            pcap_skipped: 12,
            counted_to: None,
        }
    }

    /// Still open, nothing sampled, a few seconds recorded.
    pub fn open() -> IncidentRecord {
        let mut rec = closed();
        rec.id = "20260304-050607-eth1".to_string();
        rec.interface = "eth1".to_string();
        rec.state = State::Open;
        rec.ended_ms = None;
        rec.profile = Profile::default();
        rec.actions.clear();
        rec.pcap = None;
        rec.timeline.points = (1..=5).map(|s| Point { at_ms: T0 + s * 1000, pps: BTreeMap::new() }).collect();
        rec
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("floodgate-report-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// Runs of spaces as one: table columns are padded to their widest cell.
    fn squeeze(s: &str) -> String {
        let mut out = String::new();
        for c in s.chars() {
            if !(c == ' ' && out.ends_with(' ')) {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn markdown_of_a_closed_incident() {
        let md = document(&closed(), true).markdown();
        let has = |s: &str| assert!(squeeze(&md).contains(s), "missing {s:?} in:\n{md}");
        has("# Traffic flood on eth0 of web-1, 2026-03-04T05:06:07Z to 2026-03-04T05:16:07Z\n");
        // The summary: duration, peaks, dropped vs passed, main reasons.
        has(
            "From 2026-03-04T05:06:07Z to 2026-03-04T05:16:07Z, 10m in all, interface eth0 of web-1 received 471,601,800 packets (28.4 GB), peaking at 851k packets/s and 6.8 Gbit/s.",
        );
        has("dropped 471,000,000 of them (99.9%) in the network driver");
        has(
            "passed 601,800 (0.1%) to the stack. Main reasons: `blocklist` (456,000,000 packets, 96.7%), `rate_limit` (15,000,000 packets, 3.2%), `passed`",
        );
        has("The heaviest source prefix in the samples was `203.0.113.0/24` (about 450M packets).");
        has("![Packets per second by verdict reason on eth0](timeline.png)");
        // Exact totals, with a total row.
        has("| blocklist | dropped: source on the blocklist | 456,000,000 | 27,360,000,000 | 96.7% |");
        has("| all | | 471,601,800 | 28,380,360,000 | 100.0% |");
        // Estimates with their bound, top lists capped.
        has(
            "Estimated from 47,160 samples, standing for 471,601,800 packets: each count is an upper bound, at most 1,842,194 above the truth.",
        );
        has("| 203.0.113.1 | 17,999,000 | 17,998,990 | 3.8% |");
        has("The first 20 of 25.");
        assert!(!md.contains("203.0.113.20 "), "rows past 20 left out");
        has("### Top IPv6 /48 prefixes\n\nNone in the samples.");
        has("| udp/53 | 460,000,000 | 460,000,000 | 97.5% |");
        has("| udp | 470,000,000 | 99.7% |");
        has("| 0-64 bytes | 460,000,000 | 97.5% |");
        has("| 1519+ bytes | 0 | 0% |");
        // TTLs grouped, with the spoofing hint.
        has("| 33-64 | 64: Linux, BSD, macOS | 460,000,000 | 97.5% |");
        has("Most frequent values: 52 (84.8%), 53 (12.7%), 117 (2.5%). 2 of the 3 values seen cover 90%");
        // Actions in time order, a pipe in a detail escaped.
        let hook = md.find("hook.open").unwrap();
        assert!(hook < md.find("webhook.open").unwrap());
        has("exit status 1 \\| stderr: no route");
        has(
            "Thresholds in force: `pps > 100000`, `dropped_pps.blocklist > 50000`. Crossed: `pps`, `dropped_pps.blocklist`.",
        );
        has(
            "[20260304-050607-eth0.pcap](20260304-050607-eth0.pcap) holds 5,000 sampled frames; 12 more were left out",
        );
        has("tcpdump -nn -r 20260304-050607-eth0.pcap 'src net 203.0.113.0/24'");
    }

    #[test]
    fn markdown_of_an_open_incident_without_samples() {
        let md = document(&open(), false).markdown();
        let has = |s: &str| assert!(squeeze(&md).contains(s), "missing {s:?} in:\n{md}");
        has("# Traffic flood on eth1 of web-1, since 2026-03-04T05:06:07Z (ongoing)\n");
        has("to the last update at 2026-03-04T05:06:12Z (the incident was still open), 5s in all");
        has("No packets were sampled during this incident");
        has("None beyond filtering");
        has("No packet capture is attached to this report.");
        assert!(!md.contains("heaviest source prefix"));
        assert!(!md.contains("### Top sources"));
    }

    #[test]
    fn percentages() {
        assert_eq!(pct(1, 3), "33.3%");
        assert_eq!(pct(0, 3), "0%");
        assert_eq!(pct(3, 0), "0%");
        assert_eq!(pct(1, 10_000), "<0.1%");
    }

    #[test]
    fn written_report() {
        let out = tmpdir("written");
        let pcap = tmpdir("written-pcap.pcap");
        fs::write(&pcap, b"\xd4\xc3\xb2\xa1 pcap bytes").unwrap();
        let rec = closed();
        let files = write_report(&rec, Some(&pcap), &out).unwrap();
        assert_eq!(files.paths().len(), 5);
        for p in files.paths() {
            assert!(p.starts_with(&out) && p.is_file(), "{}", p.display());
        }
        assert_eq!(files.pcap.as_deref(), Some(out.join("20260304-050607-eth0.pcap").as_path()));
        assert_eq!(fs::read(files.pcap.unwrap()).unwrap(), fs::read(&pcap).unwrap());
        assert!(fs::read(&files.png).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
        let svg = fs::read_to_string(&files.svg).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("blocklist") && svg.contains("rate_limit"));
        let html = fs::read_to_string(&files.html).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<img src=\"timeline.svg\""));
        assert!(html.contains(
            "<td>blocklist</td><td>dropped: source on the blocklist</td><td class=\"n\">456,000,000</td>"
        ));
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing fetched from elsewhere");
        let md = fs::read_to_string(&files.markdown).unwrap();
        assert_eq!(md, document(&rec, true).markdown());

        // An open incident, no capture, into the same folder.
        let files = write_report(&open(), None, &out).unwrap();
        assert_eq!(files.pcap, None);
        assert!(fs::read_to_string(&files.markdown).unwrap().contains("(ongoing)"));
        fs::remove_dir_all(&out).unwrap();
        fs::remove_file(&pcap).unwrap();
    }
}
