//! floodgate as a CrowdSec bouncer and reporter against a real CrowdSec LAPI (1.4.6,
//! unpacked by scripts/setup.sh, run in the server's namespace with its own config,
//! SQLite database and port: no agent, no system service). Decisions are driven with
//! cscli; traffic is real frames between namespaces.
//!
//! The VMs' initramfs carries no CrowdSec (two Go binaries of ~100 MB under TCG): these
//! tests run on the host, in CI too.

use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use floodgate_lab::Lapi;
use integration_tests::{
    live::Lab,
    service::{Service, TempDir, metric, scrape},
};
use serde_json::Value;

const PORT: u16 = 7100;
const HOUR: Duration = Duration::from_secs(3600);

/// A lab, a LAPI in its server namespace and the test's directory (None in the VM).
fn scene(tag: &str) -> Option<(Lab, Lapi, TempDir)> {
    if std::env::var_os("FLOODGATE_VM").is_some() {
        println!("skipped in the VM: CrowdSec runs on the host only");
        return None;
    }
    let mut lab = Lab::new(tag);
    let lapi = Lapi::start_in(&lab.srv).expect("a CrowdSec LAPI");
    let dir = TempDir::new(tag);
    // `status` reads the bouncer's state from the service's runtime directory.
    lab.env.push(("FLOODGATE_RUNTIME_DIR".into(), dir.path().join("run").display().to_string()));
    Some((lab, lapi, dir))
}

/// A config for the lab's interface with `[crowdsec]` pointing at `lapi` (key file
/// beside it), `extra` appended to the interface's section, `crowdsec_extra` to
/// `[crowdsec]`.
fn config(
    lab: &Lab,
    lapi: &Lapi,
    dir: &Path,
    metrics: &str,
    iface_extra: &str,
    crowdsec_extra: &str,
) -> String {
    lapi.write_bouncer_key(dir.join("bouncer.key")).unwrap();
    let path = dir.join("floodgate.toml");
    let text = format!(
        "[service]\nstate_dir = \"{state}\"\n[metrics]\nlisten = \"{metrics}\"\n\
         [interface.{iface}]\n{iface_extra}\n\
         [crowdsec]\nlapi_url = \"{url}\"\napi_key_file = \"bouncer.key\"\npoll = \"1s\"\n{crowdsec_extra}\n",
        state = dir.join("state").display(),
        iface = lab.srv_if,
        url = lapi.url(),
    );
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn start(lab: &Lab, dir: &Path, cfg: &str) -> Service {
    let runtime = dir.join("run");
    Service::start(lab, &["run", "--config", cfg], &runtime, &dir.join("run.log"))
}

/// The blocklist's entries (auto-bans left out): CIDR -> seconds left (None: permanent).
fn blocklist(lab: &Lab) -> std::collections::BTreeMap<String, Option<f64>> {
    let out = lab.ok(&["blocklist", "list", "-i", &lab.srv_if, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] != "auto-ban")
        .map(|e| match e {
            Value::String(s) => (s.clone(), None),
            e => (e["cidr"].as_str().unwrap().to_string(), e["expires_in_secs"].as_f64()),
        })
        .collect()
}

/// Waits until `ok` holds for the blocklist (at most `within`), or panics with it and
/// the service's log.
#[track_caller]
fn wait_list(
    lab: &Lab,
    svc: &Service,
    within: Duration,
    what: &str,
    ok: impl Fn(&std::collections::BTreeMap<String, Option<f64>>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let list = blocklist(lab);
        if ok(&list) {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}; blocklist {list:?}\n{}", svc.log());
        thread::sleep(Duration::from_millis(100));
    }
}

/// Sends 20 frames from each source and returns how many arrived from each.
fn reached(lab: &Lab, sources: &[&str]) -> Vec<u64> {
    let sink = lab.sink(PORT);
    let frames: Vec<Vec<u8>> = sources.iter().map(|s| lab.frame(s, PORT)).collect();
    lab.send(&frames, 20, 2000);
    sink.settle();
    sources.iter().map(|s| sink.count(s)).collect()
}

/// Decisions (address and range, IPv4 and IPv6) reach the blocklist with their time
/// left and drop traffic; deletions and expiries lift them; entries of other sources
/// (the config, the operator) that overlap stay; the LAPI stopped keeps what is in
/// force and a restarted LAPI is followed again; a restart of `run` resumes without a
/// gap and lifts what was deleted meanwhile; status and metrics tell.
#[test]
fn crowdsec_bouncer_follows_the_lapi() {
    let Some((lab, mut lapi, dir)) = scene("csb") else { return };
    // Already in force when the service starts: its startup pull takes them.
    lapi.add_ip("203.0.113.7", HOUR).unwrap();
    lapi.add_range("203.0.113.64/26", HOUR).unwrap();
    lapi.add_ip("2001:db8:9::7", HOUR).unwrap();
    // Another type and a decision on a prefix the config lists itself.
    lapi.cscli(&["decisions", "add", "--ip", "203.0.113.8", "--type", "captcha", "--duration", "1h"])
        .unwrap();
    lapi.add_range("192.0.2.0/24", HOUR).unwrap();
    let metrics = "127.0.0.1:9681";
    let cfg = config(&lab, &lapi, dir.path(), metrics, "blocklist = { entries = [\"192.0.2.0/24\"] }", "");
    let mut svc = start(&lab, dir.path(), &cfg);
    svc.wait_for("CrowdSec decisions applied", Duration::from_secs(30));

    let list = blocklist(&lab);
    for (cidr, ttl) in [
        ("203.0.113.7/32", true),
        ("203.0.113.64/26", true),
        ("2001:db8:9::7/128", true),
        ("192.0.2.0/24", false),
    ] {
        let left = list.get(cidr).unwrap_or_else(|| panic!("{cidr} not listed: {list:?}\n{}", svc.log()));
        assert_eq!(left.is_some(), ttl, "{cidr}: {left:?}");
        if let Some(s) = left {
            assert!((3500.0..=3600.0).contains(s), "{cidr}: {s} s left");
        }
    }
    assert!(!list.contains_key("203.0.113.8/32"), "a captcha decision is not a ban: {list:?}");
    assert_eq!(
        reached(&lab, &["203.0.113.7", "203.0.113.70", "2001:db8:9::7", "192.0.2.1", "203.0.113.9"]),
        [0, 0, 0, 0, 20]
    );

    // The operator lists an address inside CrowdSec's range, and one CrowdSec bans later.
    lab.ok(&["blocklist", "add", "-i", &lab.srv_if, "203.0.113.70", "203.0.113.20"]);
    lapi.add_ip("203.0.113.20", HOUR).unwrap();
    // A decision that expires by itself.
    lapi.add_ip("203.0.113.30", Duration::from_secs(3)).unwrap();
    wait_list(&lab, &svc, Duration::from_secs(10), "the short decision", |l| {
        l.contains_key("203.0.113.30/32")
    });
    assert_eq!(blocklist(&lab)["203.0.113.20/32"], None, "the operator's permanent entry stays permanent");

    // Deletions: each goes within a pull; the others' entries stay.
    lapi.delete_ip("203.0.113.7").unwrap();
    lapi.delete_range("203.0.113.64/26").unwrap();
    lapi.delete_ip("203.0.113.20").unwrap();
    lapi.delete_range("192.0.2.0/24").unwrap();
    let took = wait_list(&lab, &svc, Duration::from_secs(10), "deletions", |l| {
        !l.contains_key("203.0.113.7/32") && !l.contains_key("203.0.113.64/26")
    });
    println!("deletions lifted within {took:?}");
    let list = blocklist(&lab);
    for kept in ["203.0.113.70/32", "203.0.113.20/32", "192.0.2.0/24", "2001:db8:9::7/128"] {
        assert!(list.contains_key(kept), "{kept} must stay: {list:?}");
    }
    wait_list(&lab, &svc, Duration::from_secs(10), "expiry", |l| !l.contains_key("203.0.113.30/32"));
    assert_eq!(reached(&lab, &["203.0.113.7", "203.0.113.71", "203.0.113.70", "192.0.2.1"]), [20, 20, 0, 0]);

    // The LAPI goes away: what is in force stays, the state says so.
    lapi.stop();
    svc.wait_for("CrowdSec pull failed, the decisions in force stay", Duration::from_secs(10));
    assert!(blocklist(&lab).contains_key("2001:db8:9::7/128"));
    let status = lab.ok(&["status"]);
    assert!(status.contains("crowdsec bouncer: failing"), "{status}");
    let body = scrape(&lab, metrics);
    assert_eq!(metric(&body, "floodgate_crowdsec_lapi_up", &[]), 0.0, "{body}");
    assert_eq!(reached(&lab, &["2001:db8:9::7"]), [0]);
    lapi.restart().unwrap();
    lapi.add_ip("203.0.113.40", HOUR).unwrap();
    wait_list(&lab, &svc, Duration::from_secs(30), "after the LAPI's restart", |l| {
        l.contains_key("203.0.113.40/32")
    });

    // A restart of the service: the entries stay in force throughout; what was
    // deleted while it was down goes at its startup pull.
    svc.stop();
    assert!(
        blocklist(&lab).contains_key("203.0.113.40/32"),
        "the filter keeps CrowdSec's entries without a process"
    );
    lapi.delete_ip("203.0.113.40").unwrap();
    let mut svc = start(&lab, dir.path(), &cfg);
    svc.wait_for("CrowdSec decisions applied", Duration::from_secs(30));
    let list = blocklist(&lab);
    assert!(!list.contains_key("203.0.113.40/32"), "deleted while the service was down: {list:?}");
    assert!(list.contains_key("2001:db8:9::7/128") && list.contains_key("203.0.113.70/32"), "{list:?}");

    // The config drops a prefix a decision still bans: it stays listed, handed over
    // to CrowdSec (its TTL now), and goes with the decision.
    lapi.add_range("192.0.2.0/24", HOUR).unwrap();
    let decisions = || -> u64 {
        let status: Value = serde_json::from_str(&lab.ok(&["status", "--json"])).unwrap();
        let row = status.as_array().unwrap().iter().find(|r| r["interface"] == lab.srv_if.as_str()).cloned();
        row.and_then(|r| r["crowdsec"]["decisions"].as_u64()).unwrap_or(0)
    };
    let t = Instant::now();
    while decisions() < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "the new decision was not pulled:\n{}", svc.log());
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(blocklist(&lab)["192.0.2.0/24"], None, "the config's entry stays permanent while it lists it");
    config(&lab, &lapi, dir.path(), metrics, "", "");
    lab.ok(&["reload"]);
    let left = blocklist(&lab)["192.0.2.0/24"];
    assert!(
        left.is_some_and(|s| s > 3500.0),
        "handed over to CrowdSec with its TTL: {left:?}\n{}",
        svc.log()
    );
    lapi.delete_range("192.0.2.0/24").unwrap();
    wait_list(&lab, &svc, Duration::from_secs(10), "the handed-over entry lifted", |l| {
        !l.contains_key("192.0.2.0/24")
    });

    let status: Value = serde_json::from_str(&lab.ok(&["status", "--json"])).unwrap();
    let row = status.as_array().unwrap().iter().find(|r| r["interface"] == lab.srv_if.as_str()).unwrap();
    assert_eq!(row["crowdsec"]["state"], "ok", "{row}");
    assert_eq!(row["crowdsec"]["decisions"], 1, "{row}");
    let body = scrape(&lab, metrics);
    assert_eq!(metric(&body, "floodgate_crowdsec_lapi_up", &[]), 1.0, "{body}");
    assert_eq!(metric(&body, "floodgate_crowdsec_decisions_in_force", &[]), 1.0, "{body}");
    assert_eq!(
        metric(
            &body,
            "floodgate_crowdsec_decisions_skipped_total",
            &["reason=\"type\"", "value=\"captcha\""]
        ),
        1.0,
        "{body}"
    );
    assert!(metric(&body, "floodgate_crowdsec_pulls_total", &["result=\"success\""]) >= 1.0, "{body}");
    svc.stop();
}

/// 100,000 decisions at startup are all in force after the first pull; the time it
/// took (pull and apply, debug build) is printed. The figure for the README comes from
/// the bench (release build).
#[test]
fn crowdsec_startup_takes_100k_decisions() {
    let Some((lab, lapi, dir)) = scene("csk") else { return };
    // 100,000 addresses of 198.18.0.0/15 (the benchmarking range).
    let many = floodgate_lab::crowdsec::addresses(std::net::Ipv4Addr::new(198, 18, 0, 0), 100_000, HOUR);
    let t = Instant::now();
    lapi.add_many(&many).unwrap();
    println!("100,000 decisions imported into the LAPI in {:?}", t.elapsed());
    let cfg = config(&lab, &lapi, dir.path(), "127.0.0.1:9682", "", "");
    let mut svc = start(&lab, dir.path(), &cfg);
    svc.wait_for("CrowdSec decisions applied", Duration::from_secs(60));
    let log = svc.log();
    for l in log.lines().filter(|l| l.contains("CrowdSec entries written")) {
        println!("{l}");
    }
    let line = log.lines().find(|l| l.contains("CrowdSec decisions applied")).unwrap().to_string();
    println!("{line}");
    assert!(line.contains("received=100000"), "{line}");
    let list = blocklist(&lab);
    assert_eq!(list.len(), 100_000);
    assert!(list.values().all(|t| t.is_some_and(|s| s > 3000.0)));
    // A delta on top of them is a few single writes.
    lapi.add_ip("203.0.113.5", HOUR).unwrap();
    wait_list(&lab, &svc, Duration::from_secs(10), "a delta", |l| l.contains_key("203.0.113.5/32"));
    assert_eq!(reached(&lab, &["198.18.0.9", "198.19.134.159", "198.19.134.160"]), [0, 0, 20]);
    svc.stop();
}

/// An auto-ban of this floodgate reaches the LAPI as an alert with a ban decision
/// (scenario floodgate/rate-limit, the source, the rate), shows in `cscli alerts list`
/// and `cscli decisions list`, and comes back through the bouncer's stream; the time
/// from the ban to the decision listed is printed.
#[test]
fn crowdsec_reporter_shares_auto_bans() {
    let Some((lab, mut lapi, dir)) = scene("csr") else { return };
    lapi.write_credentials(dir.path().join("machine.yaml")).unwrap();
    let cfg = config(
        &lab,
        &lapi,
        dir.path(),
        "127.0.0.1:9683",
        &format!("[interface.{}.limits]\npps = 100\nban_after = \"1s\"\nban_for = \"10m\"", lab.srv_if),
        "[crowdsec.report]\ncredentials_file = \"machine.yaml\"",
    );
    let mut svc = start(&lab, dir.path(), &cfg);
    svc.wait_for("CrowdSec decisions applied", Duration::from_secs(30));
    // 3 s at 1,000 frames/s from one source: over its limit for more than ban_after.
    let frames = vec![lab.frame("203.0.113.50", PORT)];
    lab.send(&frames, 3000, 1000);
    svc.wait_for("auto-ban started", Duration::from_secs(10));
    let banned = Instant::now();
    svc.wait_for("auto-bans reported to the CrowdSec LAPI", Duration::from_secs(15));
    let reported = banned.elapsed();
    // Back through the stream: CrowdSec's entry for it (other servers' bouncers get the same).
    let back = wait_list(&lab, &svc, Duration::from_secs(15), "the decision back from the LAPI", |l| {
        l.contains_key("203.0.113.50/32")
    });
    println!(
        "auto-ban to alert sent: {reported:?}; to the decision back in the blocklist: {:?}",
        reported + back
    );

    let alerts = lapi.alerts_json().unwrap();
    let alert = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["scenario"] == "floodgate/rate-limit")
        .unwrap_or_else(|| panic!("no floodgate alert: {alerts}"));
    assert_eq!(alert["source"]["value"], "203.0.113.50", "{alert}");
    let d = &alert["decisions"][0];
    assert_eq!(
        (d["type"].as_str(), d["scope"].as_str(), d["origin"].as_str()),
        (Some("ban"), Some("Ip"), Some("floodgate")),
        "{alert}"
    );
    let left = floodgate::crowdsec::parse_go_duration(d["duration"].as_str().unwrap()).unwrap().1;
    assert!(left > Duration::from_secs(500) && left <= Duration::from_secs(600), "{left:?}");
    let msg = alert["message"].as_str().unwrap_or_default();
    assert!(msg.contains("packets/s observed") && msg.contains("100 pps"), "{msg}");
    let decisions = lapi.decisions_json().unwrap().to_string();
    assert!(decisions.contains("203.0.113.50") && decisions.contains("floodgate/rate-limit"), "{decisions}");
    // Reported once, however many sweeps see the ban.
    thread::sleep(Duration::from_secs(3));
    let n = lapi
        .alerts_json()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scenario"] == "floodgate/rate-limit")
        .count();
    assert_eq!(n, 1);
    let status = lab.ok(&["status"]);
    assert!(status.contains("reporter: 1 alerts sent"), "{status}");

    // The LAPI away: the next auto-ban waits in the queue, and goes when it is back.
    lapi.stop();
    let mark = svc.mark();
    lab.send(&[lab.frame("203.0.113.51", PORT)], 3000, 1000);
    svc.wait_for_since(mark, "auto-ban started", Duration::from_secs(10));
    svc.wait_for_since(
        mark,
        "reporting auto-bans to the CrowdSec LAPI failed, kept queued",
        Duration::from_secs(15),
    );
    let status = lab.ok(&["status"]);
    assert!(status.contains("1 alerts sent, 1 queued"), "{status}");
    lapi.restart().unwrap();
    svc.wait_for_since(mark, "auto-bans reported to the CrowdSec LAPI", Duration::from_secs(90));
    let alerts = lapi.alerts_json().unwrap().to_string();
    assert!(alerts.contains("203.0.113.51"), "{alerts}");
    svc.stop();
}
