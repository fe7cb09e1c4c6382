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

use integration_tests::{
    live::{Lab, packets},
    service::{Service, TempDir},
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
    fn start(lab: &Lab) -> Self {
        let mut frames: Vec<Vec<u8>> = (1..=64).map(|i| lab.frame(&format!("203.0.113.{i}"), FLOOD_PORT)).collect();
        for i in 0..4 {
            frames.insert(i * 16, lab.frame(LEGIT, FLOOD_PORT));
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
    let flood = Flood::start(&lab);
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
    assert!(sink.count(LEGIT) > sent / 20, "legitimate traffic kept flowing: {} of {sent}", sink.count(LEGIT));
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
