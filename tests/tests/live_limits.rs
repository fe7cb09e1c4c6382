//! The rate limiter, TTL entries and auto-bans with real packets between namespaces,
//! driven through the `floodgate` binary: accuracy at twice the limit on both CPUs, a
//! random-source flood that must not cost a legitimate source anything, expiry
//! enforced by the data path, limits changed while traffic flows, `top` and `run`.

use std::{
    io::Read as _,
    net::{IpAddr, Ipv6Addr},
    process::Stdio,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    thread,
    time::{Duration, Instant},
};

use floodgate::stats::Totals;
use floodgate_lab::build;
use integration_tests::live::{Lab, packets, pin_to_cpu};
use serde_json::Value;

const PORT: u16 = 5002;

/// Packets a reason saw between two per-CPU samples, per CPU.
fn per_cpu(before: &[Totals], after: &[Totals]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a.since(b).packets()).collect()
}

fn dropped(lab: &Lab, reason: &str) -> u64 {
    packets(&lab.stats(), &format!("dropped.{reason}"))
}

#[test]
fn source_at_twice_its_limit_loses_half_on_both_cpus() {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let lab = Lab::with_queues("acc", cpus.min(2) as u32);
    lab.attach("native");
    lab.ok(&["limit", "set", "--pps", "1000", "--burst", "10"]);
    let sink = lab.sink(PORT);
    let maps = lab.maps();
    let cpu_before = maps.counters.totals_per_cpu().unwrap();
    let before = dropped(&lab, "rate_limit");
    let src: IpAddr = "192.0.2.10".parse().unwrap();
    // One source at 2,000 frames/s for 10 s: 1,000/s from each CPU (distinct source
    // ports, so the flows are distinct too).
    let (per_thread, pps) = (10_000u64, 1_000u64);
    let start = Instant::now();
    let sent: u64 = thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let lab = &lab;
                s.spawn(move || {
                    pin_to_cpu(i % cpus);
                    let mut spec = lab.spec(src, PORT);
                    spec.sport = 40_000 + i as u16;
                    let frame = build(&spec);
                    lab.sender().send_paced(per_thread, pps, |_| frame.clone(), || false).unwrap()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let secs = start.elapsed().as_secs_f64();
    sink.settle();
    let drops = dropped(&lab, "rate_limit") - before;
    let split = per_cpu(&cpu_before, &maps.counters.totals_per_cpu().unwrap());
    let fraction = drops as f64 / sent as f64;
    println!(
        "sent {sent} in {secs:.2}s ({:.0}/s), dropped {drops} ({:.1}%), received {}, per CPU {split:?}",
        sent as f64 / secs,
        fraction * 100.0,
        sink.count("192.0.2.10")
    );
    assert_eq!(sent, 2 * per_thread);
    let rate = sent as f64 / secs;
    assert!((1_800.0..=2_200.0).contains(&rate), "sender missed its rate: {rate:.0}/s");
    assert!((0.40..=0.60).contains(&fraction), "drop fraction {fraction:.3} outside 50% +/- 10%");
    // Everything not dropped reached the server: the limiter loses nothing else.
    assert_eq!(sink.count("192.0.2.10"), sent - drops);
    if cpus >= 2 {
        let total: u64 = split.iter().sum();
        for (cpu, n) in split.iter().enumerate().take(2) {
            assert!(*n * 5 >= total, "CPU {cpu} filtered only {n} of {total} frames: {split:?}");
        }
    }
}

/// Small xorshift: random spoofed sources, reproducible across runs.
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn random_source_flood_neither_hurts_a_legit_source_nor_frees_a_heavy_one() {
    let lab = Lab::new("rnd");
    // A small limiter table, so the flood overflows it many times over.
    lab.ok(&["attach", "-i", &lab.srv_if, "--mode", "native", "--max-sources", "4096"]);
    lab.ok(&["limit", "set", "--pps", "100", "--burst", "20", "--v6-prefix", "128"]);
    let sink = lab.sink(PORT);
    let (legit, heavy) = ("192.0.2.50", "203.0.113.9");
    let stop = AtomicBool::new(false);
    let (legit_sent, heavy_sent, flood_sent) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let legit_frame = lab.frame(legit, PORT);
    let heavy_frame = lab.frame(heavy, PORT);
    let heavy_elapsed = thread::scope(|s| {
        s.spawn(|| {
            // 50/s, half its limit; bounded at 15 s.
            let n = lab.sender().send_paced(750, 50, |_| legit_frame.clone(), || stop.load(Relaxed)).unwrap();
            legit_sent.store(n, Relaxed);
        });
        let heavy_thread = s.spawn(|| {
            let start = Instant::now();
            // 400/s, four times its limit; bounded at 15 s.
            let n =
                lab.sender().send_paced(6_000, 400, |_| heavy_frame.clone(), || stop.load(Relaxed)).unwrap();
            heavy_sent.store(n, Relaxed);
            start.elapsed()
        });
        // The heavy source is over its limit before the flood begins.
        thread::sleep(Duration::from_secs(1));
        let flood = s.spawn(|| {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let base = lab.spec("2001:db8::1".parse().unwrap(), PORT);
            // 200,000 frames from random 2001:db8::/32 sources, as fast as the
            // raw socket goes (a few seconds).
            let n = lab
                .sender()
                .send_paced(
                    200_000,
                    0,
                    |_| {
                        let r = xorshift(&mut seed);
                        let mut o = [0u8; 16];
                        o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                        o[4..12].copy_from_slice(&r.to_be_bytes());
                        o[12..].copy_from_slice(&(r as u32).rotate_left(7).to_be_bytes());
                        let mut spec = base.clone();
                        spec.src = IpAddr::V6(Ipv6Addr::from(o));
                        build(&spec)
                    },
                    || false,
                )
                .unwrap();
            flood_sent.store(n, Relaxed);
        });
        flood.join().unwrap();
        thread::sleep(Duration::from_secs(1));
        stop.store(true, Relaxed);
        heavy_thread.join().unwrap()
    });
    sink.settle();
    let stats = lab.stats();
    let (legit_n, heavy_n, flood_n) =
        (legit_sent.load(Relaxed), heavy_sent.load(Relaxed), flood_sent.load(Relaxed));
    let heavy_got = sink.count(heavy);
    // burst + rate x elapsed, plus one per CPU (the limiter's documented error bound).
    let heavy_bound = 20 + (100.0 * heavy_elapsed.as_secs_f64()).ceil() as u64 + 2;
    let rate_map: usize = lab.maps().limiter.rate.keys().count();
    println!(
        "flood {flood_n} frames; legit {}/{legit_n}; heavy {heavy_got}/{heavy_n} (bound {heavy_bound}); \
         tracked sources {rate_map}; limiter {}",
        sink.count(legit),
        stats["limiter"]
    );
    assert_eq!(flood_n, 200_000);
    assert!(legit_n > 100);
    assert_eq!(sink.count(legit), legit_n, "the legitimate source lost packets");
    assert!(heavy_got <= heavy_bound, "the heavy source escaped its limit: {heavy_got} > {heavy_bound}");
    assert!(heavy_got >= heavy_bound / 2, "the heavy source got far less than its limit: {heavy_got}");
    assert!(rate_map <= 4096, "the limiter table grew past its bound: {rate_map}");
    assert_eq!(stats["limiter"]["heavy_map_full"], 0);
}

#[test]
fn ttl_entries_stop_matching_without_a_controller() {
    let lab = Lab::new("ttl");
    lab.attach("native");
    let sink = lab.sink(PORT);
    lab.ok(&["blocklist", "add", "192.0.2.60", "2001:db8:60::/48", "--ttl", "2s"]);
    lab.ok(&["blocklist", "add", "192.0.2.61"]);
    let list: Value = serde_json::from_str(&lab.ok(&["blocklist", "list", "--json"])).unwrap();
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 3, "{list}");
    // Permanent entries are plain strings; expiring ones objects with their time left.
    assert!(items.contains(&Value::from("192.0.2.61/32")), "{list}");
    let ttl = items.iter().find(|v| v["cidr"] == "192.0.2.60/32").expect("ttl entry listed");
    assert_eq!(ttl["reason"], "ttl");
    let left = ttl["expires_in_secs"].as_f64().unwrap();
    assert!(left > 0.0 && left <= 2.0, "{ttl}");
    let frames: Vec<_> =
        ["192.0.2.60", "2001:db8:60::9", "192.0.2.61"].iter().map(|s| lab.frame(s, PORT)).collect();
    lab.send(&frames, 20, 2_000);
    sink.settle();
    assert_eq!(sink.total(), 0, "blocked while the TTL runs");
    // No floodgate process runs while the entries expire: the data path checks.
    thread::sleep(Duration::from_millis(2_300));
    let before = dropped(&lab, "blocklist");
    lab.send(&frames, 20, 2_000);
    sink.settle();
    assert_eq!(sink.count("192.0.2.60"), 20, "expired v4 entry still matched");
    assert_eq!(sink.count("2001:db8:60::9"), 20, "expired v6 entry still matched");
    assert_eq!(sink.count("192.0.2.61"), 0, "the permanent entry stops matching");
    assert_eq!(dropped(&lab, "blocklist") - before, 20);
    // The next command removed the expired entries from the maps.
    assert_eq!(lab.list("blocklist"), vec!["192.0.2.61/32"]);
    let status: Value = serde_json::from_str(&lab.ok(&["status", "--json"])).unwrap();
    assert_eq!(status[0]["lists"]["blocklist"]["ipv4"], 1, "{status}");
    assert_eq!(status[0]["lists"]["blocklist"]["ipv6"], 0, "{status}");
}

#[test]
fn auto_ban_is_listed_counted_and_expires() {
    let lab = Lab::new("ban");
    lab.attach("native");
    lab.ok(&["limit", "set", "--pps", "100", "--burst", "10", "--ban-after", "1s", "--ban-for", "3s"]);
    let sink = lab.sink(PORT);
    let bad = lab.frame("192.0.2.70", PORT);
    // 500/s for 2.5 s: over the limit for longer than ban-after.
    lab.send(std::slice::from_ref(&bad), 1_250, 500);
    sink.settle();
    let stats = lab.stats();
    assert_eq!(stats["auto_bans"], 1, "{stats}");
    assert!(packets(&stats, "dropped.blocklist") > 0, "the ban dropped nothing: {stats}");
    let list: Value = serde_json::from_str(&lab.ok(&["blocklist", "list", "--json"])).unwrap();
    let ban = &list[0];
    assert_eq!(ban["cidr"], "192.0.2.70/32", "{list}");
    assert_eq!(ban["reason"], "auto-ban");
    let left = ban["expires_in_secs"].as_f64().unwrap();
    assert!(left > 0.5 && left <= 3.0, "{ban}");
    let text = lab.ok(&["blocklist", "list"]);
    assert!(text.contains("192.0.2.70/32") && text.contains("auto-ban"), "{text}");
    // Banned: nothing passes, even at a rate under the limit.
    let got = sink.count("192.0.2.70");
    lab.send(std::slice::from_ref(&bad), 10, 50);
    sink.settle();
    assert_eq!(sink.count("192.0.2.70"), got, "a banned source got through");
    // After the ban: a polite rate passes again in full.
    thread::sleep(Duration::from_secs_f64(left + 0.3));
    lab.send(std::slice::from_ref(&bad), 20, 50);
    sink.settle();
    assert_eq!(sink.count("192.0.2.70"), got + 20, "traffic after the ban expired was dropped");
    assert_eq!(lab.list("blocklist"), Vec::<String>::new());
}

#[test]
fn limit_changes_apply_to_traffic_in_flight() {
    let lab = Lab::new("lset");
    lab.attach("native");
    let sink = lab.sink(PORT);
    let stop = AtomicBool::new(false);
    let frame = lab.frame("192.0.2.80", PORT);
    thread::scope(|s| {
        s.spawn(|| {
            // 500/s, bounded at 40 s; stopped after the last phase.
            lab.sender().send_paced(20_000, 500, |_| frame.clone(), || stop.load(Relaxed)).unwrap();
        });
        // Samples the drop counter over `secs` seconds of traffic.
        let phase = |secs: f64| {
            let before = dropped(&lab, "rate_limit");
            let got = sink.count("192.0.2.80");
            thread::sleep(Duration::from_secs_f64(secs));
            (dropped(&lab, "rate_limit") - before, sink.count("192.0.2.80") - got)
        };
        thread::sleep(Duration::from_millis(300));
        let (d, p) = phase(1.0);
        assert_eq!(d, 0, "no limit yet");
        assert!(p > 300, "traffic flows: {p}");
        lab.ok(&["limit", "set", "--pps", "100", "--burst", "10"]);
        thread::sleep(Duration::from_millis(200));
        let (d, p) = phase(2.0);
        println!("at 100/s: dropped {d}, passed {p}");
        assert!(d > 600, "limit 100/s did not take effect: dropped {d}");
        assert!((150..=260).contains(&p), "about 100/s passed, got {p} in 2 s");
        lab.ok(&["limit", "set", "--pps", "1000"]);
        thread::sleep(Duration::from_millis(200));
        let (d, _) = phase(1.0);
        assert_eq!(d, 0, "raised limit still dropped");
        let shown: Value = serde_json::from_str(&lab.ok(&["limit", "show", "--json"])).unwrap();
        assert_eq!(shown["packets"]["per_second"], 1000, "{shown}");
        lab.ok(&["limit", "set", "--pps", "100"]);
        thread::sleep(Duration::from_millis(200));
        assert!(phase(1.0).0 > 200);
        lab.ok(&["limit", "clear"]);
        thread::sleep(Duration::from_millis(200));
        assert_eq!(phase(1.0).0, 0, "cleared limit still dropped");
        stop.store(true, Relaxed);
    });
}

#[test]
fn top_shows_the_heaviest_sources_first() {
    let lab = Lab::new("top");
    lab.attach("native");
    lab.ok(&["limit", "set", "--pps", "200"]);
    let stop = AtomicBool::new(false);
    let (hot, warm) = (lab.frame("203.0.113.20", PORT), lab.frame("192.0.2.21", PORT));
    thread::scope(|s| {
        s.spawn(|| lab.sender().send_paced(12_000, 1_000, |_| hot.clone(), || stop.load(Relaxed)).unwrap());
        s.spawn(|| lab.sender().send_paced(1_200, 100, |_| warm.clone(), || stop.load(Relaxed)).unwrap());
        thread::sleep(Duration::from_secs(2));
        let top: Value = serde_json::from_str(&lab.ok(&["top", "-n", "5", "--json"])).unwrap();
        stop.store(true, Relaxed);
        println!("{top}");
        // The kernel's own IPv6 link-local chatter on the veth (fe80::/64) may be a row.
        let rows: Vec<&Value> = top
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !r["source"].as_str().unwrap().starts_with("fe80:"))
            .collect();
        assert_eq!(rows.len(), 2, "{top}");
        assert_eq!(rows[0]["source"], "203.0.113.20/32");
        assert_eq!(rows[0]["over_limit"], true);
        let pps = rows[0]["pps"].as_f64().unwrap();
        assert!((700.0..=1300.0).contains(&pps), "measured {pps}/s for a 1,000/s source");
        assert!(rows[0]["dropped_pps"].as_f64().unwrap() > 500.0, "{top}");
        assert_eq!(rows[1]["source"], "192.0.2.21/32");
        assert_eq!(rows[1]["over_limit"], false);
        assert_eq!(rows[1]["dropped"], 0);
    });
}

#[test]
fn run_attaches_sweeps_and_detaches_on_sigterm() {
    let lab = Lab::new("run");
    let rt = integration_tests::service::TempDir::new("run");
    let mut child = lab
        .srv
        .command(integration_tests::live::floodgate_bin().to_str().unwrap())
        .args(["run", "-i", &lab.srv_if, "--mode", "native", "--detach-on-exit"])
        .env("FLOODGATE_RUNTIME_DIR", rt.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.has_xdp() {
        assert!(Instant::now() < deadline, "run did not attach");
        thread::sleep(Duration::from_millis(50));
    }
    lab.ok(&["blocklist", "add", "192.0.2.90", "--ttl", "1s"]);
    lab.ok(&["blocklist", "add", "192.0.2.91"]);
    let ttl_key = || {
        let maps = lab.maps();
        maps.lists.block.v4_net.keys().count() + maps.lists.expiry.keys().count()
    };
    assert_eq!(ttl_key(), 3, "two hosts and one expiry record stored");
    // Within about two seconds of expiry, `run` (not this test) deletes the entry.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ttl_key() != 1 {
        assert!(Instant::now() < deadline, "run did not remove the expired entry");
        thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "run exited with {status}: {out}");
    assert!(out.contains("detached from"), "{out}");
    assert!(!lab.has_xdp(), "still attached after SIGTERM");
    assert!(!lab.pins_dir().exists(), "pins left behind");
}
