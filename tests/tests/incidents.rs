//! Incidents end to end: `floodgate run` with `[incidents]` watching a scripted flood
//! between namespaces. Real binary, real kernel, real packets.

use std::{
    fs,
    io::{Read, Write},
    net::TcpListener,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use integration_tests::{
    live::{Lab, SRV_V4},
    service::{Service, TempDir},
};
use serde_json::Value;

const FLOOD_PORT: u16 = 7000;
const WEBHOOK_PORT: u16 = 8089;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A webhook receiver in the server's namespace: keeps every request body.
fn webhook(lab: &Lab) -> Arc<Mutex<Vec<String>>> {
    let listener = lab.srv.enter(|| TcpListener::bind((SRV_V4, WEBHOOK_PORT))).unwrap().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            // Headers, then as much body as Content-Length says.
            loop {
                let n = conn.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        g.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
                        break;
                    }
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    got
}

/// 64 sources of 203.0.113.0/24 at 20,000 frames/s until stopped (10 minutes at most).
fn flood(lab: &Lab) -> (Arc<AtomicBool>, thread::JoinHandle<u64>) {
    let frames: Vec<Vec<u8>> = (1..=64).map(|i| lab.frame(&format!("203.0.113.{i}"), FLOOD_PORT)).collect();
    let sender = lab.sender();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let t = thread::spawn(move || {
        sender
            .send_paced(20_000 * 600, 20_000, |i| frames[(i % 64) as usize].clone(), || flag.load(Relaxed))
            .unwrap()
    });
    (stop, t)
}

fn json(lab: &Lab, args: &[&str]) -> Value {
    serde_json::from_str(&lab.ok(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// One flood, one incident: opened and closed within 2 s of the flood's start and end
/// (hold 1 s, quiet 2 s), its top prefix the flood's, its pcap the flood's frames; the
/// hook and the webhook hear of it, the stricter limits engage and are undone; a
/// restart in its middle keeps it; the report renders.
#[test]
fn a_flood_makes_one_incident_with_its_evidence_and_report() {
    let lab = Lab::new("inc");
    let dir = TempDir::new("inc");
    let d = dir.path();
    let hook = d.join("hook.sh");
    fs::write(&hook, format!("#!/bin/sh\ncat > {}/hook-$FLOODGATE_EVENT.json\necho \"$FLOODGATE_INCIDENT_ID\" > {}/hook-$FLOODGATE_EVENT.id\n", d.display(), d.display())).unwrap();
    let cfg = d.join("floodgate.toml");
    fs::write(
        &cfg,
        format!(
            r#"[service]
state_dir = "{state}"
[metrics]
enabled = false
[interface.{iface}]
mode = "native"
[interface.{iface}.blocklist]
entries = ["203.0.113.0/24"]
[interface.{iface}.limits]
pps = 100000
[interface.{iface}.incidents]
dropped_pps = {{ blocklist = 2000 }}
hold = "1s"
quiet = "2s"
sample_every = 20
hook = ["/bin/sh", "{hook}"]
webhook = "http://{srv}:{port}/incident"
[interface.{iface}.incidents.escalate]
limits = {{ pps = 777 }}
"#,
            state = d.join("state").display(),
            iface = lab.srv_if,
            hook = hook.display(),
            srv = SRV_V4,
            port = WEBHOOK_PORT,
        ),
    )
    .unwrap();
    let posted = webhook(&lab);
    let log = d.join("run.log");
    let run = ["run", "--config", cfg.to_str().unwrap()];
    let mut svc = Service::start(&lab, &run, d, &log);
    let cfg_arg = ["--config", cfg.to_str().unwrap()];

    let started = now_ms();
    let (stop, sender) = flood(&lab);
    svc.wait_for("incident opened", Duration::from_secs(10));
    svc.wait_for("incident escalate", Duration::from_secs(10));
    assert!(lab.ok(&["limit", "show"]).contains("777 packets/s"), "the stricter limits are in force");
    thread::sleep(Duration::from_secs(2));
    // A restart in the middle: the same incident goes on.
    svc.stop();
    svc = Service::start(&lab, &run, d, &log);
    svc.wait_for("resuming the open incident", Duration::from_secs(10));
    svc.wait_for("counted what the data path saw while the service was down", Duration::from_secs(10));
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Relaxed);
    let sent = sender.join().unwrap();
    let ended = now_ms();
    svc.wait_for("incident closed", Duration::from_secs(10));
    svc.wait_for("incident undo", Duration::from_secs(10));
    assert!(lab.ok(&["limit", "show"]).contains("100000 packets/s"), "the config's limits are back");
    thread::sleep(Duration::from_secs(1)); // the close's hook and webhook

    let mut list = [&["incidents", "list", "--json"][..], &cfg_arg].concat();
    let all = json(&lab, &list);
    let all = all.as_array().expect("a list");
    assert_eq!(all.len(), 1, "exactly one incident: {all:?}");
    let id = all[0]["id"].as_str().unwrap().to_string();
    list = [&["incidents", "show", &id, "--json"][..], &cfg_arg].concat();
    let rec = json(&lab, &list);
    assert_eq!(rec["state"], "closed");
    let (start, end) = (rec["started_ms"].as_u64().unwrap(), rec["ended_ms"].as_u64().unwrap());
    assert!(start + 2000 >= started && start <= started + 2000, "opened {start}, flood from {started}");
    assert!(end + 2000 >= ended && end <= ended + 2000, "ended {end}, flood until {ended}");
    let blocked = rec["totals"]["blocklist"]["packets"].as_u64().unwrap();
    // Including what the data path dropped while the service restarted.
    assert!(blocked >= sent * 3 / 4 && blocked <= sent, "{blocked} of {sent} counted in the incident");
    assert_eq!(rec["profile"]["prefixes_v4"][0]["key"], "203.0.113.0/24", "{}", rec["profile"]);
    assert!(rec["profile"]["samples"].as_u64().unwrap() > 100);
    let actions: Vec<String> = rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["ok"], true, "{a}");
            a["what"].as_str().unwrap().to_string()
        })
        .collect();
    for what in ["escalate", "undo", "hook.open", "hook.close", "webhook.open", "webhook.close"] {
        assert!(actions.iter().any(|a| a == what), "{what} missing from {actions:?}");
    }

    // The hook and the webhook got the incident as JSON.
    let opened: Value = serde_json::from_str(&fs::read_to_string(d.join("hook-open.json")).unwrap()).unwrap();
    assert_eq!(opened["event"], "open");
    assert_eq!(opened["incident"]["id"], id.as_str());
    assert_eq!(fs::read_to_string(d.join("hook-close.id")).unwrap().trim(), id);
    let bodies = posted.lock().unwrap().clone();
    let events: Vec<String> = bodies
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).unwrap()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["open", "close"]);

    // The pcap holds the flood's frames, with their original length.
    let pcap = d.join("state/incidents").join(&id).join(rec["pcap"].as_str().unwrap());
    let frames = floodgate::sampler::pcap::read(&fs::read(&pcap).unwrap()).expect("a pcap");
    assert_eq!(frames.len() as u64, rec["pcap_frames"].as_u64().unwrap());
    assert!(frames.iter().all(|(_, len, data)| *len as usize >= data.len()));
    let flood_frames =
        frames.iter().filter(|(_, _, data)| data.get(26..29) == Some(&[203, 0, 113][..])).count();
    assert!(flood_frames > 100, "{flood_frames} of {} frames from the flood", frames.len());
    if which("tcpdump") {
        let out = std::process::Command::new("tcpdump").args(["-nn", "-r"]).arg(&pcap).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.lines().filter(|l| l.contains("203.0.113.")).count() > 100, "{text}");
    }

    // The report: Markdown, HTML, chart, pcap.
    let out = d.join("report");
    let report = [&["incidents", "report", &id, "-o", out.to_str().unwrap()][..], &cfg_arg].concat();
    lab.ok(&report);
    let md = fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("203.0.113.0/24") && md.contains(&lab.srv_if), "{md}");
    assert!(fs::read_to_string(out.join("timeline.svg")).unwrap().contains("<svg"));
    assert!(fs::read(out.join("timeline.png")).unwrap().starts_with(b"\x89PNG"));
    assert!(out.join("report.html").exists() && out.join(format!("{id}.pcap")).exists());
    // The README's example report is this one (FLOODGATE_REPORT_EXAMPLE=DIR).
    if let Some(keep) = std::env::var_os("FLOODGATE_REPORT_EXAMPLE") {
        let keep = std::path::Path::new(&keep);
        fs::create_dir_all(keep).unwrap();
        for f in ["report.md", "timeline.svg", "timeline.png"] {
            fs::copy(out.join(f), keep.join(f)).unwrap();
        }
    }
    svc.stop();
}

fn which(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
