//! The Prometheus exporter on a live filter: the metrics endpoint served in this
//! process (tokio) over the pins of a filter the real `floodgate` binary attached,
//! read while a blocklisted flood runs, by the test and by a real Prometheus server.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use filter_common::Meta;
use floodgate::{
    maps::Core,
    metrics::{Exporter, ServiceState, SourceMetrics, Target, read::ReadOnlyPins, render, serve},
    pins::{IfacePins, Layout, NetnsId},
};
use integration_tests::{
    StopOnDrop,
    live::Lab,
    prom::{Prometheus, http_get, promtool_check, sample},
};

const PORT: u16 = 5001;

/// The lab's filter as the exporter sees it from this process (root namespace).
fn target(lab: &Lab) -> Target {
    let pins = IfacePins {
        iface: lab.srv_if.clone(),
        dir: lab.pins_dir(),
        netns: Some(NetnsId::of_path(&lab.srv.path()).expect("server namespace")),
        layout: Layout::Scoped,
    };
    Target { name: lab.srv_if.clone(), pins }
}

fn state() -> Arc<ServiceState> {
    let state = Arc::new(ServiceState::default());
    state.record_reload(true, SystemTime::now());
    state.set_sources(vec![SourceMetrics {
        source: "http://127.0.0.1:1/drop.txt".into(),
        list: "blocklist".into(),
        interface: "x".into(),
        ok: true,
        last_success_unix: Some(1_700_000_000),
        entries: 1,
        pending: false,
        failures: 0,
    }]);
    state
}

/// The endpoint on 127.0.0.1 (a free port) in a tokio runtime of its own; stopped
/// and joined on drop.
struct Endpoint {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Endpoint {
    fn start(exporter: Arc<Exporter>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener =
            rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("binding the endpoint");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            rt.block_on(serve(listener, exporter, async {
                let _ = stopped.await;
            }))
        });
        Endpoint { addr, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Blocked sources 203.0.113.1-64, to the server's sink port.
fn flood_frames(lab: &Lab) -> Vec<Vec<u8>> {
    (1..=64).map(|i| lab.frame(&format!("203.0.113.{i}"), PORT)).collect()
}

/// Reads the live filter's maps through read-only descriptors, without the lock (a
/// writer holding it does not delay a scrape), and renders what they hold.
#[test]
fn metrics_read_a_live_filter_read_only_and_lock_free() {
    let lab = Lab::new("mtr");
    lab.attach("native");
    lab.ok(&["blocklist", "add", "-i", &lab.srv_if, "203.0.113.0/24", "2001:db8:bad::/48"]);
    lab.ok(&["allowlist", "add", "-i", &lab.srv_if, "192.0.2.9"]);
    lab.ok(&["rule", "add", "-i", &lab.srv_if, "--proto", "udp", "--dst-port", "5002", "--name", "no-5002"]);
    let frames = flood_frames(&lab);
    lab.send(&frames[..10], 100, 20_000);
    lab.send(&[lab.frame("192.0.2.7", 5002)], 30, 20_000);
    thread::sleep(Duration::from_millis(200));

    let t = target(&lab);
    // A writer holds the interface's lock for the whole read.
    let lock = t.pins.lock().expect("the interface's lock");
    let exporter = Exporter::new(vec![t.clone()], state());
    let start = Instant::now();
    let body = render(&exporter);
    let took = start.elapsed();
    drop(lock);
    assert!(took < Duration::from_secs(2), "a scrape took {took:?}");
    println!("scrape of an idle filter: {took:?}");

    let i = &lab.srv_if;
    let v = |series: &str| sample(&body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"));
    assert_eq!(v(&format!("floodgate_interface_up{{interface=\"{i}\"}}")), 1.0);
    assert_eq!(v(&format!("floodgate_interface_info{{interface=\"{i}\",mode=\"native\"}}")), 1.0);
    let blocked =
        format!("floodgate_packets_total{{interface=\"{i}\",reason=\"blocklist\",action=\"drop\"}}");
    assert_eq!(v(&blocked), 1000.0);
    let bytes = format!("floodgate_bytes_total{{interface=\"{i}\",reason=\"blocklist\",action=\"drop\"}}");
    assert_eq!(v(&bytes), (100 * frames[..10].iter().map(Vec::len).sum::<usize>()) as f64);
    assert_eq!(
        v(&format!("floodgate_rule_packets_total{{interface=\"{i}\",rule=\"no-5002\",action=\"drop\"}}")),
        30.0
    );
    let list = |l: &str, f: &str| {
        v(&format!("floodgate_list_entries{{interface=\"{i}\",list=\"{l}\",family=\"{f}\"}}"))
    };
    assert_eq!((list("blocklist", "ipv4"), list("blocklist", "ipv6")), (1.0, 1.0));
    assert_eq!((list("allowlist", "ipv4"), list("allowlist", "ipv6")), (1.0, 0.0));
    let meta: Meta = Core::open(&mut ReadOnlyPins::open(&t.pins).unwrap()).unwrap().read().unwrap();
    let cap = v(&format!(
        "floodgate_list_capacity_entries{{interface=\"{i}\",list=\"blocklist\",family=\"ipv4\"}}"
    ));
    assert_eq!(cap, meta.max_entries as f64);
    let rate_cap =
        v(&format!("floodgate_limiter_table_capacity_entries{{interface=\"{i}\",table=\"rate\"}}"));
    assert_eq!(rate_cap, meta.max_sources as f64, "the LRU's size as attach set it");
    assert_eq!(v(&format!("floodgate_syncookie_enabled{{interface=\"{i}\"}}")), 0.0);
    promtool_or_vm(&body);

    // The descriptors a scrape reads through refuse writes.
    let mut core = Core::open(&mut ReadOnlyPins::open(&t.pins).unwrap()).unwrap();
    let e = core.write(&meta).expect_err("a write through a scrape's descriptor");
    assert!(floodgate::loader::error_chain(&e).contains("not permitted"), "{e:?}");

    // A filter that is gone is reported down, and the rest still rendered.
    lab.ok(&["detach", "-i", &lab.srv_if]);
    let body = render(&exporter);
    assert_eq!(sample(&body, &format!("floodgate_interface_up{{interface=\"{i}\"}}")), Some(0.0), "{body}");
    let e = floodgate::metrics::read_interface(&t.pins).expect_err("a detached filter");
    assert!(e.to_string().starts_with(&format!("floodgate is not attached to {i}")), "{e}");
    assert!(body.contains("floodgate_config_last_reload_successful 1\n"), "{body}");
}

/// promtool is on the host (scripts/setup.sh), not in the VM's initramfs.
fn promtool_or_vm(body: &str) {
    if std::env::var_os("FLOODGATE_VM").is_some() {
        return;
    }
    if let Err(e) = promtool_check(body) {
        panic!("promtool check metrics: {e}\n{body}");
    }
}

/// A real Prometheus scraping the endpoint every second sees the blocklist's drop
/// rate during a flood; `promtool check metrics` accepts what it scraped. With
/// FLOODGATE_SCREENSHOT=FILE.png (and chromium installed), the flood runs 15 s longer
/// and Prometheus' graph of it is saved there (the README's picture).
#[test]
fn metrics_reach_a_real_prometheus_during_a_flood() {
    if std::env::var_os("FLOODGATE_VM").is_some() {
        // The VM's initramfs carries no Prometheus (a 100 MB Go binary under TCG).
        println!("skipped in the VM: Prometheus runs on the host only");
        return;
    }
    let lab = Lab::new("prom");
    lab.attach("native");
    lab.ok(&["blocklist", "add", "-i", &lab.srv_if, "203.0.113.0/24"]);
    let exporter = Arc::new(Exporter::new(vec![target(&lab)], state()));
    let endpoint = Endpoint::start(exporter.clone());
    let prom = Prometheus::start(&[endpoint.addr]);
    let frames = flood_frames(&lab);
    let stop = AtomicBool::new(false);
    let i = lab.srv_if.clone();

    let (mut scrapes, body) = thread::scope(|s| {
        // Stops the flood however this scope ends (a failed assertion included).
        let _stop = StopOnDrop(&stop);
        let flood = s.spawn(|| {
            let tx = lab.sender();
            // At most 30 s at 50,000 frames/s; stopped once Prometheus has seen it.
            tx.send_paced(1_500_000, 50_000, |n| frames[(n % 64) as usize].clone(), || stop.load(Relaxed))
                .expect("flood")
        });
        let expr = format!("rate(floodgate_packets_total{{reason=\"blocklist\",interface=\"{i}\"}}[5s])");
        let (result, seen) = prom.wait_for(&expr, Duration::from_secs(20), |r| r.len() == 1 && r[0].1 > 0.0);
        let screenshot = std::env::var_os("FLOODGATE_SCREENSHOT");
        if screenshot.is_some() {
            // A longer flood, so the graph shows it (still within the sender's bound).
            thread::sleep(Duration::from_secs(15));
        }
        // Scrape times under the flood, as this test sees them.
        let mut scrapes = Vec::new();
        let mut body = String::new();
        for _ in 0..10 {
            let start = Instant::now();
            let (status, b) = http_get(endpoint.addr, "/metrics").expect("scraping");
            scrapes.push(start.elapsed());
            assert_eq!(status, 200);
            body = b;
        }
        stop.store(true, Relaxed);
        let sent = flood.join().unwrap();
        if let Some(path) = &screenshot {
            thread::sleep(Duration::from_secs(5));
            let expr = format!(
                "sum by (reason) (rate(floodgate_packets_total{{interface=\"{i}\",reason=~\"blocklist|passed\"}}[5s]))"
            );
            prom.screenshot(&expr, path);
        }
        assert!(seen, "Prometheus never saw a positive drop rate (sent {sent}): {result:?}\n{}", prom.log());
        println!("Prometheus: {expr} = {:.0} packets/s (flood of {sent} frames at 50,000/s)", result[0].1);
        (scrapes, body)
    });

    scrapes.sort();
    println!(
        "scrape under the flood (endpoint, 10 scrapes): min {:?}, median {:?}, max {:?}",
        scrapes[0], scrapes[5], scrapes[9]
    );
    let own = prom.query("max_over_time(scrape_duration_seconds{job=\"floodgate\"}[1m])");
    let read = prom.query("max_over_time(floodgate_scrape_read_duration_seconds[1m])");
    println!("Prometheus' scrape_duration_seconds, max over the run: {own:?}; map reads: {read:?}");
    assert!(scrapes[9] < Duration::from_secs(1), "a scrape under the flood took {:?}", scrapes[9]);
    let up = prom.query("up{job=\"floodgate\"}");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0, "Prometheus' own verdict on the target");
    let blocked =
        format!("floodgate_packets_total{{interface=\"{i}\",reason=\"blocklist\",action=\"drop\"}}");
    assert!(sample(&body, &blocked).unwrap_or(0.0) > 0.0, "{body}");
    if let Err(e) = promtool_check(&body) {
        panic!("promtool check metrics: {e}\n{body}");
    }
    // Prometheus stored the service metrics too.
    let reload = prom.query("floodgate_config_last_reload_successful");
    assert_eq!(reload.first().map(|r| r.1), Some(1.0), "{reload:?}");
}

/// The worst case of a scrape: the limiter's LRU table full (attach's default of
/// 131,072 sources), walked key by key. Prints the scrape time for the closing note.
#[test]
fn metrics_scrape_time_with_a_full_limiter_table() {
    let lab = Lab::new("mfull");
    lab.attach("native");
    lab.ok(&["limit", "set", "-i", &lab.srv_if, "--pps", "1000", "--v6-prefix", "128"]);
    // 150,000 sources from 2001:db8::/32, two frames each (the doorkeeper tracks a
    // source from its second frame on): more than the table holds.
    let base = lab.spec("2001:db8::1".parse().unwrap(), PORT);
    let n = if std::env::var_os("FLOODGATE_VM").is_some() { 20_000u64 } else { 150_000 };
    let sent = lab
        .sender()
        .send_paced(
            2 * n,
            0,
            |i| {
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                o[8..].copy_from_slice(&(i / 2 + 1).to_be_bytes());
                let mut spec = base.clone();
                spec.src = std::net::IpAddr::V6(std::net::Ipv6Addr::from(o));
                floodgate_lab::build(&spec)
            },
            || false,
        )
        .expect("sending");
    assert_eq!(sent, 2 * n);
    thread::sleep(Duration::from_millis(200));
    let exporter = Exporter::new(vec![target(&lab)], state());
    let mut times = Vec::new();
    let mut body = String::new();
    for _ in 0..5 {
        let start = Instant::now();
        body = render(&exporter);
        times.push(start.elapsed());
    }
    times.sort();
    let i = &lab.srv_if;
    let v = |series: &str| sample(&body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"));
    let entries = v(&format!("floodgate_limiter_table_entries{{interface=\"{i}\",table=\"rate\"}}"));
    let cap = v(&format!("floodgate_limiter_table_capacity_entries{{interface=\"{i}\",table=\"rate\"}}"));
    let tracked = v(&format!("floodgate_limiter_tracked_sources{{interface=\"{i}\"}}"));
    println!(
        "scrape with {entries} of {cap} sources tracked: min {:?}, median {:?}, max {:?}",
        times[0], times[2], times[4]
    );
    // The LRU keeps per-CPU free lists: it evicts somewhat before it is full.
    assert!(entries >= (n as f64).min(cap) * 0.5, "{entries} of {cap} sources tracked");
    assert!(entries <= cap);
    assert!(tracked >= entries, "{tracked} tracked, {entries} in the rate table");
    assert!(times[2] < Duration::from_secs(5), "a scrape took {:?}", times[2]);
}
