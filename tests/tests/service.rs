//! `floodgate run` as a service: takeovers without a gap (restarts, upgrades), reloads,
//! the control socket. Real binary, real kernel, real packets.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread,
    time::Duration,
};

use std::{fs, os::unix::net::UnixDatagram};

use filter_common::map_names;
use integration_tests::{
    live::{Lab, packets},
    service::{Service, TempDir, example_config, metric, scrape},
};

const FLOOD_PORT: u16 = 7000;
/// The legitimate client's own address (the lab's client end).
const LEGIT: &str = "198.51.100.2";

/// A flood from 64 sources of 203.0.113.0/24 with a legitimate frame among every 16,
/// sent until stopped (or 10 minutes, a bound that stops it by itself).
struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<u64>>,
}

impl Flood {
    fn start(lab: &Lab, port: u16) -> Self {
        let mut frames: Vec<Vec<u8>> = (1..=64).map(|i| lab.frame(&format!("203.0.113.{i}"), port)).collect();
        for i in 0..4 {
            frames.insert(i * 16, lab.frame(LEGIT, port));
        }
        let sender = lab.sender();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let n = frames.len() as u64;
            sender
                .send_paced(20_000 * 600, 20_000, |i| frames[(i % n) as usize].clone(), || flag.load(Relaxed))
                .expect("flood")
        });
        Flood { stop, thread: Some(thread) }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flood_reached(sink: &integration_tests::live::Sink) -> u64 {
    (1..=64).map(|i| sink.count(&format!("203.0.113.{i}"))).sum()
}

/// Ten restarts of `run -i` and a takeover with a new capacity (new maps) while a
/// blocklisted range floods: not one of its packets reaches the server; what the
/// operator set by hand (list entries, limits) and the counters carry over.
#[test]
fn service_restarts_and_new_maps_let_nothing_through() {
    let lab = Lab::new("svr");
    let rt = TempDir::new("svr");
    let log = rt.path().join("run.log");
    let run = ["run", "-i", &lab.srv_if, "--mode", "native"];
    let mut svc = Service::start(&lab, &run, rt.path(), &log);
    lab.ok(&["blocklist", "add", "203.0.113.0/24", "192.0.2.7"]);
    lab.ok(&["blocklist", "add", "192.0.2.8", "--ttl", "1h"]);
    lab.ok(&["limit", "set", "--pps", "100000"]);
    let sink = lab.sink(FLOOD_PORT);
    let flood = Flood::start(&lab, FLOOD_PORT);
    thread::sleep(Duration::from_millis(500));
    let mut dropped = packets(&lab.stats(), "dropped.blocklist");
    assert!(dropped > 0, "the flood is dropped before the restarts");
    for i in 0..10 {
        svc.stop();
        svc = Service::start(&lab, &run, rt.path(), &log);
        assert!(svc.log().contains("took over the pinned filter"), "restart {i}: {}", svc.log());
        let now = packets(&lab.stats(), "dropped.blocklist");
        assert!(now >= dropped, "restart {i}: the counters carried over ({now} after {dropped})");
        dropped = now;
    }
    // A takeover that needs new maps (another capacity): filled before the swap.
    svc.stop();
    let bigger = ["run", "-i", &lab.srv_if, "--mode", "native", "--max-entries", "5000"];
    svc = Service::start(&lab, &bigger, rt.path(), &log);
    assert!(svc.log().contains("with new maps"), "{}", svc.log());
    thread::sleep(Duration::from_millis(500));
    let sent = flood.stop();
    sink.settle();
    assert!(lab.has_xdp());
    assert_eq!(flood_reached(&sink), 0, "flood packets reached the server across takeovers ({sent} sent)");
    assert!(
        sink.count(LEGIT) > sent / 20,
        "legitimate traffic kept flowing: {} of {sent}",
        sink.count(LEGIT)
    );
    let listed = lab.ok(&["blocklist", "list"]);
    assert!(listed.contains("203.0.113.0/24\n"), "{listed}");
    assert!(listed.contains("192.0.2.8/32  (expires in"), "the TTL carried over: {listed}");
    assert!(lab.ok(&["limit", "show"]).contains("100000 packets/s"), "the limits carried over");
    let status = lab.ok(&["status"]);
    assert!(status.contains("capacity 5,000 per family"), "{status}");
    let log = svc.stop();
    assert!(log.contains("leaving the filter in force"), "{log}");
    assert!(lab.has_xdp(), "stopping the service leaves the filter attached");
}

/// A second service in the same namespace refuses to start; `reload` without a config
/// says so; the first keeps running.
#[test]
fn service_is_alone_in_its_namespace() {
    let lab = Lab::new("svo");
    let rt = TempDir::new("svo");
    let svc = Service::start(&lab, &["run", "-i", &lab.srv_if], rt.path(), &rt.path().join("a.log"));
    let second = lab
        .srv
        .command(integration_tests::live::floodgate_bin().to_str().unwrap())
        .args(["run", "-i", &lab.srv_if])
        .env("FLOODGATE_RUNTIME_DIR", rt.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("another `floodgate run` serves this network namespace"), "{err}");
    let reload = lab
        .srv
        .command(integration_tests::live::floodgate_bin().to_str().unwrap())
        .args(["reload"])
        .env("FLOODGATE_RUNTIME_DIR", rt.path())
        .output()
        .unwrap();
    assert_eq!(reload.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&reload.stderr).contains("without a config"), "{reload:?}");
    svc.stop();
}

/// Reads what services send to the NOTIFY_SOCKET the test owns, as systemd does
/// (promptly: an unread queue fills after ten datagrams), first lines only.
struct Systemd {
    got: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Systemd {
    fn listen(sock: UnixDatagram) -> Self {
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let (g, s) = (got.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string();
                    g.lock().unwrap().push(line);
                }
            }
        });
        Systemd { got, stop }
    }

    fn messages(&self) -> Vec<String> {
        thread::sleep(Duration::from_millis(300));
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// Turns the running filter's pins into what the previous layout (version 6, before
/// the data path's log) left behind, the fixture of an upgrade: its 48-byte metadata,
/// without the log maps, with a map this layout no longer has. The running program
/// keeps its own maps (it holds them by descriptor): packets see no change.
fn previous_layout(lab: &Lab) {
    let pins = lab.pins_dir();
    let meta = lab.maps().core.meta.get(&0, 0).unwrap();
    let mut v6 = Vec::new();
    for w in [6, meta.mode, meta.ifindex, meta.max_entries] {
        v6.extend_from_slice(&w.to_ne_bytes());
    }
    for w in meta.counts.as_flattened() {
        v6.extend_from_slice(&w.to_ne_bytes());
    }
    v6.extend_from_slice(&meta.attached_at.to_ne_bytes());
    v6.extend_from_slice(&meta.max_sources.to_ne_bytes());
    v6.extend_from_slice(&0u32.to_ne_bytes());
    assert_eq!(v6.len(), 48);
    let staging = pins.join("fixture");
    fs::create_dir(&staging).unwrap();
    let bpftool = |args: &[&str]| {
        let out = std::process::Command::new("bpftool").args(args).output().unwrap();
        assert!(out.status.success(), "bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (old_meta, retired) = (staging.join("m"), staging.join("r"));
    let s = |p: &std::path::Path| p.display().to_string();
    bpftool(&[
        "map",
        "create",
        &s(&old_meta),
        "type",
        "array",
        "key",
        "4",
        "value",
        "48",
        "entries",
        "1",
        "name",
        "FG_META",
    ]);
    let meta_path = s(&old_meta);
    let mut args = vec!["map", "update", "pinned", meta_path.as_str(), "key", "0", "0", "0", "0", "value"];
    let bytes: Vec<String> = v6.iter().map(u8::to_string).collect();
    args.extend(bytes.iter().map(String::as_str));
    bpftool(&args);
    bpftool(&[
        "map",
        "create",
        &s(&retired),
        "type",
        "hash",
        "key",
        "8",
        "value",
        "8",
        "entries",
        "16",
        "name",
        "FG_RETIRED",
    ]);
    fs::rename(&old_meta, pins.join(map_names::META)).unwrap();
    fs::rename(&retired, pins.join("FG_RETIRED")).unwrap();
    fs::remove_dir(&staging).unwrap();
    for name in [map_names::LOG_AT, map_names::LOGS] {
        fs::remove_file(pins.join(name)).unwrap();
    }
}

/// The CIDRs of a `blocklist list` (without the remaining time of TTL entries, which
/// moves while a test runs).
fn cidrs(listed: &str) -> Vec<String> {
    listed.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

fn blocked(lab: &Lab) -> Vec<String> {
    cidrs(&lab.ok(&["blocklist", "list"]))
}

/// The shipped example config in force: a flood from its blocklisted range, to a
/// port it serves, through a restart and a takeover of pins the previous floodgate
/// version made (another layout, [`previous_layout`]: new maps, filled from the config
/// before the swap)
/// lets nothing through; reloads apply what changed and keep what operators added;
/// a bad file is refused whole; systemd hears READY, RELOADING, READY, STOPPING.
#[test]
fn service_config_upgrade_and_reloads() {
    let mut lab = Lab::new("svc");
    let rt = TempDir::new("svc");
    let cfg = example_config(rt.path(), &lab.srv_if, "127.0.0.1:9669");
    let cfg_s = cfg.display().to_string();
    let notify_path = rt.path().join("notify.sock");
    let systemd = Systemd::listen(UnixDatagram::bind(&notify_path).unwrap());
    lab.env.push(("NOTIFY_SOCKET".into(), notify_path.display().to_string()));
    lab.env.push(("FLOODGATE_RUNTIME_DIR".into(), rt.path().display().to_string()));
    let log = rt.path().join("run.log");
    let run = ["run", "--config", cfg_s.as_str()];
    let mut svc = Service::start(&lab, &run, rt.path(), &log);
    assert!(svc.log().contains("attached"), "{}", svc.log());
    let listed = lab.ok(&["blocklist", "list"]);
    for e in ["203.0.113.0/24", "192.0.2.66/32", "2001:db8:dead::/48", "198.51.100.128/25"] {
        assert!(listed.contains(e), "{e} from the config: {listed}");
    }
    assert!(lab.ok(&["rule", "list"]).contains("tftp"));
    assert!(lab.ok(&["limit", "show"]).contains("2000 packets/s"));
    assert!(lab.ok(&["synproxy", "show"]).contains("80"));

    let sink = lab.sink(53);
    let flood = Flood::start(&lab, 53);
    thread::sleep(Duration::from_millis(300));
    svc.stop();
    svc = Service::start(&lab, &run, rt.path(), &log);
    assert!(svc.log().contains("took over the pinned filter;"), "{}", svc.log());
    // Pins of another layout version, as a floodgate built with another map layout
    // leaves them: this floodgate cannot use those maps, so it builds its own.
    svc.stop();
    previous_layout(&lab);
    svc = Service::start(&lab, &run, rt.path(), &log);
    assert!(svc.log().contains("with new maps"), "{}", svc.log());
    let pins = lab.pins_dir();
    assert!(!pins.join("FG_RETIRED").exists(), "a map of the old layout only is unpinned");
    assert!(pins.join(map_names::LOG_AT).exists(), "a map new in this layout is pinned");
    let meta = lab.maps().core.meta.get(&0, 0).unwrap();
    assert_eq!(meta.version, filter_common::META_VERSION);
    thread::sleep(Duration::from_millis(300));
    let sent = flood.stop();
    sink.settle();
    assert_eq!(flood_reached(&sink), 0, "flood packets reached the server across takeovers ({sent} sent)");
    assert!(
        sink.count(LEGIT) > sent / 20,
        "legitimate traffic kept flowing: {} of {sent}",
        sink.count(LEGIT)
    );
    assert!(lab.ok(&["synproxy", "show"]).contains("80"), "SYN cookies re-applied on the new maps");

    // Operator entries survive reloads; config entries follow the file.
    lab.ok(&["blocklist", "add", "192.0.2.77", "--ttl", "1h"]);
    lab.ok(&["blocklist", "add", "192.0.2.78"]);
    lab.ok(&["limit", "set", "--pps", "5000"]);
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, text.replace("\"192.0.2.66\"", "\"192.0.2.99\"")).unwrap();
    let out = lab.ok(&["reload"]);
    assert!(out.contains("blocklist +1/-1"), "{out}");
    let listed = lab.ok(&["blocklist", "list"]);
    assert!(listed.contains("192.0.2.99/32") && !listed.contains("192.0.2.66/32"), "{listed}");
    assert!(listed.contains("192.0.2.77/32  (expires in") && listed.contains("192.0.2.78/32"), "{listed}");
    // The limits section did not change in the file: the operator's limits stay.
    assert!(lab.ok(&["limit", "show"]).contains("5000 packets/s"), "an unchanged section is left alone");

    // A bad file: refused whole, every error with its position, nothing changes.
    let good = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, good.replace("pps = 2000", "pps = 0").replace("mode = \"auto\"", "mode = \"fast\""))
        .unwrap();
    let r = lab.floodgate(&["reload"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains(&format!("{cfg_s}:")), "errors name the file: {}", r.stderr);
    assert!(r.stderr.lines().filter(|l| l.starts_with(&cfg_s)).count() >= 2, "every error: {}", r.stderr);
    assert_eq!(blocked(&lab), cidrs(&listed), "a refused reload changes nothing");

    // A changed section applies, through SIGHUP too.
    fs::write(&cfg, good.replace("pps = 2000", "pps = 3000")).unwrap();
    let mark = svc.mark();
    svc.signal(libc::SIGHUP);
    svc.wait_for_since(mark, "reload done", Duration::from_secs(20));
    assert!(lab.ok(&["limit", "show"]).contains("3000 packets/s"));

    // The config's metrics endpoint, as Prometheus would scrape it: this run's loads
    // (start, reload, SIGHUP) and the refused one, the filter's counters since the
    // new maps, the interface readable.
    let body = scrape(&lab, "127.0.0.1:9669");
    let iface = format!("interface=\"{}\"", lab.srv_if);
    assert_eq!(metric(&body, "floodgate_config_reloads_total", &["result=\"success\""]), 3.0, "{body}");
    assert_eq!(metric(&body, "floodgate_config_reloads_total", &["result=\"failure\""]), 1.0, "{body}");
    assert_eq!(metric(&body, "floodgate_config_last_reload_successful", &[]), 1.0, "{body}");
    assert_eq!(metric(&body, "floodgate_interface_up", &[&iface]), 1.0, "{body}");
    assert!(metric(&body, "floodgate_packets_total", &[&iface, "reason=\"blocklist\""]) > 0.0, "{body}");
    let listed = lab.ok(&["blocklist", "list"]).lines().filter(|l| l.contains('/')).count();
    assert_eq!(
        metric(&body, "floodgate_list_entries", &[&iface, "list=\"blocklist\""]) as usize,
        listed,
        "{body}"
    );

    let log = svc.stop();
    assert!(log.contains("leaving the filter in force"), "{log}");
    assert!(lab.has_xdp());
    // A start with a bad file stops before touching anything, every error listed.
    let before = blocked(&lab);
    fs::write(&cfg, good.replace("pps = 2000", "pps = 0")).unwrap();
    let r = lab.floodgate(&run);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains(&format!("{cfg_s}:")) && r.stderr.contains("pps"), "{}", r.stderr);
    assert_eq!(blocked(&lab), before);
    let sent: Vec<String> = systemd.messages().into_iter().filter(|l| !l.starts_with("STATUS=")).collect();
    let per_run = ["READY=1", "STOPPING=1"];
    let expected: Vec<&str> = per_run
        .iter()
        .chain(&per_run)
        .chain(&["READY=1"])
        .chain(&["RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1"])
        .chain(&["STOPPING=1"])
        .copied()
        .collect();
    assert_eq!(sent, expected, "sd_notify messages in order");
}

/// The config's `log.bpf` in force: the data path's record of an auto-ban reaches the
/// service's log, next to the service's own events of the ban's start and end; a
/// reload to "off" puts a program without records on the link.
#[test]
fn service_forwards_the_data_path_log() {
    let mut lab = Lab::new("svclog");
    let rt = TempDir::new("svclog");
    lab.env.push(("FLOODGATE_RUNTIME_DIR".into(), rt.path().display().to_string()));
    let cfg = example_config(rt.path(), &lab.srv_if, "127.0.0.1:9669");
    let text = fs::read_to_string(&cfg).unwrap();
    let with_log = text
        .replace("#bpf = \"off\"", "bpf = \"info\"")
        .replace("pps = 2000", "pps = 100")
        .replace("ban_after = \"30s\"", "ban_after = \"1s\"")
        .replace("ban_for = \"10m\"", "ban_for = \"30s\"")
        .replace("#max_entries = 1000000", "max_entries = 100");
    assert_ne!(with_log, text);
    fs::write(&cfg, &with_log).unwrap();
    let cfg_s = cfg.display().to_string();
    let log = rt.path().join("run.log");
    let mut svc = Service::start(&lab, &["run", "--config", cfg_s.as_str()], rt.path(), &log);
    let meta = lab.maps().core.meta.get(&0, 0).unwrap();
    assert_eq!(floodgate::bpflog::loaded_level(&meta), Some(floodgate::config::BpfLogLevel::Info));

    // One source over its limit for longer than ban_after, to a served port.
    let bad = lab.frame("192.0.2.72", 53);
    lab.send(std::slice::from_ref(&bad), 1_250, 500);
    assert_eq!(lab.stats()["auto_bans"], 1, "the flood was banned");
    svc.wait_for("auto-ban 192.0.2.72/32 for 30 s", Duration::from_secs(5));
    // The service's own events, whatever the data path's level: start and end.
    svc.wait_for("auto-ban started", Duration::from_secs(5));
    let started = svc.log().lines().find(|l| l.contains("auto-ban started")).unwrap().to_string();
    assert!(started.contains("192.0.2.72/32") && started.contains("seconds=30"), "{started}");
    let mark = svc.mark();
    lab.ok(&["limit", "clear"]);
    svc.wait_for_since(mark, "auto-ban ended (lifted)", Duration::from_secs(5));

    // A list file over max_entries: the whole reload is refused, also the sections
    // that would fit (limits), and says why.
    let listed = blocked(&lab);
    let list_file = rt.path().join("lists/block-example.txt");
    let kept = fs::read_to_string(&list_file).unwrap();
    let big: String = (0..150).map(|i| format!("198.18.0.{i}\n")).collect();
    fs::write(&list_file, format!("{kept}{big}")).unwrap();
    fs::write(&cfg, with_log.replace("pps = 100", "pps = 150")).unwrap();
    let r = lab.floodgate(&["reload"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("IPv4 entries, more than max_entries (100)"), "{}", r.stderr);
    assert_eq!(blocked(&lab), listed, "a refused reload changes nothing");
    assert!(lab.ok(&["limit", "show"]).contains("no limits set"), "the limits section is not applied either");
    fs::write(&list_file, kept).unwrap();

    fs::write(&cfg, with_log.replace("bpf = \"info\"", "bpf = \"off\"")).unwrap();
    let out = lab.ok(&["reload"]);
    assert!(out.contains("data path log: off"), "{out}");
    let meta = lab.maps().core.meta.get(&0, 0).unwrap();
    assert_eq!(floodgate::bpflog::loaded_level(&meta), None);
    assert_eq!(lab.stats()["auto_bans"], 1, "same maps: the counters stay");
    svc.stop();
}

/// A list server inside the server's namespace (where the service fetches from): every
/// request gets the current status and body.
struct ListServer {
    url: String,
    reply: Arc<std::sync::Mutex<(u16, String)>>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl ListServer {
    fn start(lab: &Lab, body: &str) -> Self {
        use std::io::{Read, Write};
        let listener = lab.srv.enter(|| std::net::TcpListener::bind("127.0.0.1:0")).unwrap().unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/drop.txt", listener.local_addr().unwrap());
        let reply = Arc::new(std::sync::Mutex::new((200, body.to_string())));
        let (hits, stop) =
            (Arc::new(std::sync::atomic::AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (r, h, s) = (reply.clone(), hits.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                h.fetch_add(1, Relaxed);
                let (code, body) = r.lock().unwrap().clone();
                let head = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(body.as_bytes()));
            }
        });
        ListServer { url, reply, hits, stop }
    }

    fn set(&self, code: u16, body: &str) {
        *self.reply.lock().unwrap() = (code, body.to_string());
    }
}

impl Drop for ListServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// A URL list source: its first copy fetched before the service is ready, reported in
/// the metrics, kept on disk so a restart whose fetch fails still has it (the failure
/// counted), and its entries gone once a reload drops the source.
#[test]
fn service_url_list_source_is_fetched_cached_and_dropped() {
    let mut lab = Lab::new("svcurl");
    let rt = TempDir::new("svcurl");
    lab.env.push(("FLOODGATE_RUNTIME_DIR".into(), rt.path().display().to_string()));
    let server =
        ListServer::start(&lab, "; Spamhaus DROP List\n192.0.2.192/26 ; SBL1\n198.51.100.64/27 ; SBL2\n");
    let cfg = example_config(rt.path(), &lab.srv_if, "127.0.0.1:9669");
    let text = fs::read_to_string(&cfg).unwrap();
    let sample = format!(
        "#[[interface.{}.blocklist.url]]\n# http:// or https:// only.\n#url = \"https://www.spamhaus.org/drop/drop.txt\"",
        lab.srv_if
    );
    assert!(text.contains(&sample), "the example's URL source");
    let with_url = text
        .replace(&sample, &format!("[[interface.{}.blocklist.url]]\nurl = \"{}\"", lab.srv_if, server.url));
    fs::write(&cfg, &with_url).unwrap();
    let cfg_s = cfg.display().to_string();
    let log = rt.path().join("run.log");
    let run = ["run", "--config", cfg_s.as_str()];

    let mut svc = Service::start(&lab, &run, rt.path(), &log);
    let listed = lab.ok(&["blocklist", "list"]);
    assert!(listed.contains("192.0.2.192/26") && listed.contains("198.51.100.64/27"), "{listed}");
    assert_eq!(server.hits.load(Relaxed), 1);
    let body = scrape(&lab, "127.0.0.1:9669");
    let src = format!("source=\"{}\"", server.url);
    assert_eq!(metric(&body, "floodgate_list_source_up", &[&src]), 1.0, "{body}");
    assert_eq!(metric(&body, "floodgate_list_source_entries", &[&src]), 2.0, "{body}");
    assert_eq!(metric(&body, "floodgate_list_source_failures_total", &[&src]), 0.0, "{body}");
    svc.stop();

    // The mirror now fails: the restarted service keeps the cached copy in force.
    server.set(500, "<html>oops</html>");
    svc = Service::start(&lab, &run, rt.path(), &log);
    let listed = lab.ok(&["blocklist", "list"]);
    assert!(listed.contains("192.0.2.192/26") && listed.contains("198.51.100.64/27"), "{listed}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let body = scrape(&lab, "127.0.0.1:9669");
        if metric(&body, "floodgate_list_source_failures_total", &[&src]) >= 1.0 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "no failed fetch counted: {body}");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(metric(&body, "floodgate_list_source_up", &[&src]), 0.0, "{body}");
    assert_eq!(metric(&body, "floodgate_list_source_entries", &[&src]), 2.0, "the cached copy: {body}");
    assert_eq!(blocked(&lab), cidrs(&listed), "a failed fetch changes nothing");

    // The source leaves the file: its entries leave the list.
    fs::write(&cfg, &text).unwrap();
    let out = lab.ok(&["reload"]);
    assert!(out.contains("blocklist +0/-2"), "{out}");
    let listed = lab.ok(&["blocklist", "list"]);
    assert!(!listed.contains("192.0.2.192/26") && !listed.contains("198.51.100.64/27"), "{listed}");
    assert!(listed.contains("192.0.2.66/32"), "the file's own entries stay: {listed}");
    svc.stop();
}
