//! Host tests: naming, rendering from fake samples, the HTTP endpoint, the dashboard.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use filter_common::{Counter, Reason};

use super::{
    encode::{ALL, Kind, Snapshot, encode, to_text_format},
    read::{InterfaceSample, ListSample, RuleSample, TableSample},
    *,
};
use crate::stats::Totals;

fn sample(name: &str) -> InterfaceSample {
    let mut totals = Totals::default();
    totals.0[Reason::Blocklist as usize] = Counter { packets: 5, bytes: 300 };
    totals.0[Reason::Passed as usize] = Counter { packets: 7, bytes: 700 };
    totals.0[Reason::SynProxy as usize] = Counter { packets: 2, bytes: 120 };
    InterfaceSample {
        interface: name.to_string(),
        mode: "native",
        ifindex: 3,
        attached_at: 1_700_000_000,
        totals,
        would_drop: Totals::default(),
        rules: vec![
            RuleSample {
                id: 1,
                name: "reflection-dns".into(),
                action: "drop",
                hits: Counter { packets: 9, bytes: 900 },
            },
            RuleSample { id: 2, name: "rule-2".into(), action: "pass", hits: Counter::default() },
        ],
        lists: Some(ListSample { capacity: 1000, counts: [[10, 2], [3, 0]] }),
        tables: vec![
            TableSample { table: "rate", entries: 40, capacity: 131_072 },
            TableSample { table: "heavy", entries: 4, capacity: 65_536 },
            TableSample { table: "bans", entries: 2, capacity: 65_536 },
        ],
        tracked_sources: 42,
        autobans_active: 1,
        events: [6, 0, 1],
        syncookies_enabled: true,
        syncookie_acks: Some(11),
    }
}

fn service() -> ServiceSample {
    let state = ServiceState::default();
    state.record_reload(false, UNIX_EPOCH + Duration::from_secs(50));
    state.record_reload(true, UNIX_EPOCH + Duration::from_secs(100));
    state.set_sources(vec![SourceMetrics {
        source: "https://example.invalid/drop.txt".into(),
        list: "blocklist".into(),
        interface: "eth0".into(),
        ok: false,
        last_success_unix: Some(90),
        entries: 1234,
        pending: true,
        failures: 3,
    }]);
    state.set_crowdsec(Some(std::sync::Arc::new(std::sync::Mutex::new(crowdsec_status()))));
    state.sample()
}

fn crowdsec_status() -> crate::crowdsec::status::Status {
    crate::crowdsec::status::Status {
        lapi_url: "http://127.0.0.1:8080/".into(),
        state: "ok".into(),
        last_pull_unix: Some(120.5),
        last_pull_seconds: Some(0.25),
        pulls: 7,
        pull_errors: 2,
        decisions: 1000,
        prefixes: 990,
        received: 1200,
        deleted: 200,
        applied: 1400,
        skipped: [("type=captcha".to_string(), 3)].into(),
        interfaces: [("eth0".to_string(), 990)].into(),
        report: Some(crate::crowdsec::status::ReportStatus {
            sent: 4,
            queued: 1,
            duplicates: 2,
            dropped: 0,
            errors: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn crowdsec_state_is_exported() {
    let text = encode(full());
    for line in [
        "floodgate_crowdsec_lapi_up 1\n",
        "floodgate_crowdsec_decisions_in_force 1000\n",
        "floodgate_crowdsec_pulls_total{result=\"failure\"} 2\n",
        "floodgate_crowdsec_decisions_received_total{action=\"deleted\"} 200\n",
        "floodgate_crowdsec_decisions_skipped_total{reason=\"type\",value=\"captcha\"} 3\n",
        "floodgate_crowdsec_blocklist_entries{interface=\"eth0\"} 990\n",
        "floodgate_crowdsec_alerts_total{outcome=\"sent\"} 4\n",
        "floodgate_crowdsec_alerts_queued 1\n",
        "floodgate_crowdsec_last_pull_duration_seconds 0.25\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}

fn full() -> Snapshot {
    Snapshot {
        version: "9.9.9",
        interfaces: vec![("eth0".into(), Ok(sample("eth0"))), ("eth1".into(), Err("gone".into()))],
        service: service(),
        read_seconds: 0.25,
    }
}

/// The metric names of a text body (sample lines, with `_total` and all).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn names_follow_the_prometheus_conventions() {
    let mut seen = BTreeSet::new();
    for d in ALL {
        assert!(seen.insert(d.name), "{} declared twice", d.name);
        assert!(d.name.starts_with("floodgate_"), "{}", d.name);
        assert!(
            d.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{}",
            d.name
        );
        assert_eq!(
            d.kind == Kind::Counter,
            d.name.ends_with("_total"),
            "{}: _total is for counters only",
            d.name
        );
        // Base units only (seconds, bytes), never ms or kB.
        for bad in ["_milliseconds", "_ms", "_kb", "_mb", "_bits"] {
            assert!(!d.name.contains(bad), "{}", d.name);
        }
        assert!(!d.help.is_empty() && !d.help.contains(['\\', '\n']), "{}: help text", d.name);
    }
}

#[test]
fn every_declared_metric_is_rendered_and_nothing_else() {
    let text = encode(full());
    let declared: BTreeSet<String> = ALL.iter().map(|d| d.name.to_string()).collect();
    assert_eq!(sample_names(&text), declared, "{text}");
    for d in ALL {
        let kind = if d.kind == Kind::Counter { "counter" } else { "gauge" };
        assert!(text.contains(&format!("# TYPE {} {kind}\n", d.name)), "{}: {text}", d.name);
        assert!(text.contains(&format!("# HELP {} {}\n", d.name, d.help)), "{}", d.name);
    }
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
}

#[test]
fn rendered_values() {
    let text = encode(full());
    for line in [
        "floodgate_build_info{version=\"9.9.9\"} 1",
        "floodgate_interface_up{interface=\"eth0\"} 1",
        "floodgate_interface_up{interface=\"eth1\"} 0",
        "floodgate_interface_info{interface=\"eth0\",mode=\"native\"} 1",
        "floodgate_packets_total{interface=\"eth0\",reason=\"blocklist\",action=\"drop\"} 5",
        "floodgate_bytes_total{interface=\"eth0\",reason=\"blocklist\",action=\"drop\"} 300",
        "floodgate_packets_total{interface=\"eth0\",reason=\"passed\",action=\"pass\"} 7",
        "floodgate_packets_total{interface=\"eth0\",reason=\"syn_answered\",action=\"tx\"} 2",
        "floodgate_packets_total{interface=\"eth0\",reason=\"rate_limit\",action=\"drop\"} 0",
        "floodgate_rule_packets_total{interface=\"eth0\",rule=\"reflection-dns\",action=\"drop\"} 9",
        "floodgate_rule_bytes_total{interface=\"eth0\",rule=\"rule-2\",action=\"pass\"} 0",
        "floodgate_list_entries{interface=\"eth0\",list=\"blocklist\",family=\"ipv6\"} 2",
        "floodgate_list_entries{interface=\"eth0\",list=\"allowlist\",family=\"ipv4\"} 3",
        "floodgate_list_capacity_entries{interface=\"eth0\",list=\"allowlist\",family=\"ipv6\"} 1000",
        "floodgate_limiter_table_entries{interface=\"eth0\",table=\"heavy\"} 4",
        "floodgate_limiter_table_capacity_entries{interface=\"eth0\",table=\"rate\"} 131072",
        "floodgate_limiter_tracked_sources{interface=\"eth0\"} 42",
        "floodgate_autobans_active{interface=\"eth0\"} 1",
        "floodgate_autobans_total{interface=\"eth0\"} 6",
        "floodgate_limiter_table_full_total{interface=\"eth0\",table=\"heavy\"} 1",
        "floodgate_syncookie_enabled{interface=\"eth0\"} 1",
        "floodgate_syncookie_acks_total{interface=\"eth0\"} 11",
        "floodgate_config_last_reload_successful 1",
        "floodgate_config_last_reload_success_timestamp_seconds 100.0",
        "floodgate_config_reloads_total{result=\"failure\"} 1",
        "floodgate_list_source_shrink_pending{interface=\"eth0\",list=\"blocklist\",source=\"https://example.invalid/drop.txt\"} 1",
        "floodgate_list_source_last_success_timestamp_seconds{interface=\"eth0\",list=\"blocklist\",source=\"https://example.invalid/drop.txt\"} 90",
        "floodgate_list_source_failures_total{interface=\"eth0\",list=\"blocklist\",source=\"https://example.invalid/drop.txt\"} 3",
        "floodgate_scrape_read_duration_seconds 0.25",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // Every reason once per counter family and interface, and nothing of the
    // unreadable interface but its up gauge.
    let n = text.lines().filter(|l| l.starts_with("floodgate_packets_total{")).count();
    assert_eq!(n, Reason::ALL.len());
    assert_eq!(text.matches("\"eth1\"").count(), 1, "{text}");
}

#[test]
fn families_without_samples_are_left_out() {
    let mut s = sample("eth0");
    s.rules.clear();
    s.lists = None;
    s.syncookie_acks = None;
    let snap = Snapshot {
        version: "1",
        interfaces: vec![("eth0".into(), Ok(s))],
        service: ServiceSample::default(),
        read_seconds: 0.0,
    };
    let names = sample_names(&encode(snap.clone()));
    for gone in [
        "floodgate_rule_packets_total",
        "floodgate_list_entries",
        "floodgate_list_capacity_entries",
        "floodgate_syncookie_acks_total",
        "floodgate_config_last_reload_successful",
        "floodgate_config_reloads_total",
        "floodgate_list_source_up",
    ] {
        assert!(!names.contains(gone), "{gone}");
    }
    let text = encode(snap);
    assert!(!text.contains("# TYPE floodgate_rule_packets_total"), "{text}");
    assert!(names.contains("floodgate_packets_total"));
}

#[test]
fn label_values_are_escaped() {
    let snap = Snapshot {
        version: "1",
        interfaces: vec![("a\"b\\c\nd".into(), Err("x".into()))],
        service: ServiceSample::default(),
        read_seconds: 0.0,
    };
    let text = encode(snap);
    assert!(text.contains("floodgate_interface_up{interface=\"a\\\"b\\\\c\\nd\"} 0\n"), "{text}");
}

#[test]
fn openmetrics_to_classic_text() {
    let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{a=\"1\"} 3\n\
              # HELP x_build Build.\n# TYPE x_build info\nx_build_info{v=\"1\"} 1\n\
              # HELP x_up_seconds Up.\n# TYPE x_up_seconds gauge\n# UNIT x_up_seconds seconds\nx_up_seconds 1.5\n# EOF\n";
    assert_eq!(
        to_text_format(om),
        "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{a=\"1\"} 3\n\
         # HELP x_build_info Build.\n# TYPE x_build_info gauge\nx_build_info{v=\"1\"} 1\n\
         # HELP x_up_seconds Up.\n# TYPE x_up_seconds gauge\nx_up_seconds 1.5\n"
    );
}

#[test]
fn reloads_and_sources_are_recorded() {
    let state = ServiceState::default();
    assert_eq!(state.sample(), ServiceSample::default());
    state.record_reload(true, UNIX_EPOCH + Duration::from_secs(10));
    state.record_reload(false, UNIX_EPOCH + Duration::from_secs(20));
    let s = state.sample();
    assert_eq!(s.last_reload_ok, Some(false));
    assert_eq!(s.last_success_unix, Some(10.0), "a failed reload keeps the last success's time");
    assert_eq!(s.reloads, [1, 1]);
    let src = |url: &str, entries| SourceMetrics {
        source: url.into(),
        list: "blocklist".into(),
        interface: "eth0".into(),
        ok: true,
        last_success_unix: None,
        entries,
        pending: false,
        failures: 0,
    };
    state.update_source(src("a", 1));
    state.update_source(src("b", 2));
    state.update_source(src("a", 3));
    assert_eq!(state.sample().sources, vec![src("a", 3), src("b", 2)]);
    state.set_sources(vec![src("c", 4)]);
    assert_eq!(state.sample().sources, vec![src("c", 4)]);
}

/// A whole HTTP/1.1 exchange on a fresh connection: (status, head, body).
fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

#[test]
fn the_endpoint_serves_metrics_an_index_and_404() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let state = Arc::new(ServiceState::default());
    state.record_reload(true, UNIX_EPOCH);
    let exporter = Arc::new(Exporter::new(Vec::new(), state));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(listener, exporter, async {
        let _ = stopped.await;
    }));

    let (status, head, body) = get(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("content-type: {CONTENT_TYPE}")), "{head}");
    assert!(body.contains("floodgate_build_info{version=\""), "{body}");
    assert!(body.contains("floodgate_config_last_reload_successful 1\n"), "{body}");
    let (status, head, body) = get(addr, "GET", "/");
    assert_eq!(status, 200);
    assert!(head.contains("text/html") && body.contains("href=\"/metrics\""), "{head}{body}");
    assert_eq!(get(addr, "GET", "/metricsx").0, 404);
    let (status, head, _) = get(addr, "POST", "/metrics");
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: get, head"), "{head}");

    // An idle keep-alive connection does not hold the shutdown up.
    let idle = TcpStream::connect(addr).unwrap();
    stop.send(()).unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(3), server).await })
        .expect("stops")
        .unwrap();
    assert!(TcpStream::connect(addr).is_err(), "still listening after shutdown");
    drop(idle);
}

/// The shipped dashboard queries only metrics the exporter emits, through the
/// `${DS_PROMETHEUS}` input.
#[test]
fn the_grafana_dashboard_uses_only_exported_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/grafana-dashboard.json");
    let text = std::fs::read_to_string(path).expect("packaging/grafana-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    let declared: BTreeSet<&str> = ALL.iter().map(|d| d.name).collect();
    let panels = dash["panels"].as_array().expect("panels");
    let mut used = BTreeSet::new();
    let mut graphs = 0;
    for p in panels {
        if p["type"] == "row" {
            continue;
        }
        graphs += 1;
        let title = p["title"].as_str().unwrap_or("?");
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}: datasource");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: a target without expr"));
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr} names no floodgate metric");
            for n in names {
                assert!(
                    declared.contains(n.as_str()),
                    "{title}: {expr} uses {n}, which floodgate does not export"
                );
                used.insert(n);
            }
        }
    }
    assert!(graphs >= 9, "{graphs} panels");
    for v in dash["templating"]["list"].as_array().expect("templating") {
        let q = v["query"]["query"].as_str().or(v["query"].as_str()).expect("a variable's query");
        assert_eq!(v["datasource"]["uid"], "${DS_PROMETHEUS}", "variable {}", v["name"]);
        for n in metric_names(q) {
            assert!(declared.contains(n.as_str()), "variable {}: {q} uses {n}", v["name"]);
        }
    }
    // The panels the dashboard promises.
    for n in [
        "floodgate_packets_total",
        "floodgate_bytes_total",
        "floodgate_list_entries",
        "floodgate_list_capacity_entries",
        "floodgate_limiter_tracked_sources",
        "floodgate_autobans_active",
        "floodgate_rule_packets_total",
        "floodgate_syncookie_acks_total",
        "floodgate_config_last_reload_successful",
        "floodgate_list_source_last_success_timestamp_seconds",
    ] {
        assert!(used.contains(n), "no panel shows {n}");
    }
}

/// The `floodgate_*` identifiers of a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("floodgate_") {
        let before = rest[..i].chars().next_back();
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn metric_names_in_promql() {
    assert_eq!(
        metric_names(
            "sum by (reason) (rate(floodgate_packets_total{interface=~\"$iface\"}[1m])) / floodgate_x"
        ),
        vec!["floodgate_packets_total", "floodgate_x"]
    );
    assert!(metric_names("rate(up[1m])").is_empty());
}
