//! Live traffic between namespaces through the real `floodgate` binary: attach in
//! native and skb mode, list changes from separate processes while packets flow,
//! atomic replace, clean detach, and bad inputs that must change nothing.
//!
//! Sources are documentation addresses sent as raw frames from the client namespace;
//! the server counts what its UDP sockets receive.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::Stdio,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    thread,
    time::Duration,
};

use integration_tests::live::{Lab, packets};

const PORT: u16 = 5001;

#[test]
fn native_and_skb_drop_blocklisted_sources_and_pass_the_rest() {
    for (tag, mode) in [("nat", "native"), ("skb", "skb")] {
        let lab = Lab::new(tag);
        let out = lab.attach(mode);
        assert!(out.contains(&format!("{mode} mode")), "{out}");
        assert!(lab.has_xdp());
        lab.ok(&["blocklist", "add", "-i", &lab.srv_if, "203.0.113.0/24", "2001:db8:bad::/48"]);
        let sink = lab.sink(PORT);
        let before = lab.stats();
        assert_eq!(before["mode"], mode);
        assert_eq!(before["interface"], lab.srv_if.as_str());
        let frames: Vec<Vec<u8>> = ["203.0.113.7", "2001:db8:bad::7", "192.0.2.7", "2001:db8:feed::7"]
            .iter()
            .map(|s| lab.frame(s, PORT))
            .collect();
        lab.send(&frames, 500, 20_000);
        sink.settle();
        let after = lab.stats();
        assert_eq!(sink.count("203.0.113.7"), 0, "{mode}: blocked v4 reached the server");
        assert_eq!(sink.count("2001:db8:bad::7"), 0, "{mode}: blocked v6 reached the server");
        assert_eq!(sink.count("192.0.2.7"), 500, "{mode}: clean v4 lost");
        assert_eq!(sink.count("2001:db8:feed::7"), 500, "{mode}: clean v6 lost");
        let dropped = packets(&after, "dropped.blocklist") - packets(&before, "dropped.blocklist");
        assert_eq!(dropped, 1000, "{mode}: exactly the blocked frames were counted as dropped");
        let passed = packets(&after, "passed") - packets(&before, "passed");
        assert!(passed >= 1000, "{mode}: passed counter {passed}");
        assert_eq!(packets(&after, "dropped.rate_limit"), 0);
        let bytes = after["dropped"]["blocklist"]["bytes"].as_u64().unwrap();
        let expected: u64 = 500 * (frames[0].len() + frames[1].len()) as u64;
        assert_eq!(bytes, expected, "{mode}: dropped bytes are whole frames");
    }
}

#[test]
fn add_and_remove_from_other_processes_while_traffic_flows() {
    let lab = Lab::new("addrm");
    lab.attach("native");
    let sink = lab.sink(PORT);
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let frame = lab.frame("192.0.2.44", PORT);
    thread::scope(|s| {
        s.spawn(|| {
            let tx = lab.sender();
            // Bounded: at most 60 s at 2,000 frames/s, usually stopped much earlier.
            let n = tx.send_paced(120_000, 2_000, |_| frame.clone(), || stop.load(Relaxed)).unwrap();
            sent.store(n, Relaxed);
        });
        let wait_for = |cond: &dyn Fn() -> bool, what: &str| {
            for _ in 0..100 {
                if cond() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            panic!("timed out waiting for {what}");
        };
        wait_for(&|| sink.count("192.0.2.44") > 200, "traffic to arrive");
        lab.ok(&["blocklist", "add", "192.0.2.44"]);
        // Nothing arrives once the add has returned (allow a moment for frames in flight).
        thread::sleep(Duration::from_millis(200));
        let at_block = sink.count("192.0.2.44");
        thread::sleep(Duration::from_millis(800));
        assert_eq!(sink.count("192.0.2.44"), at_block, "frames passed after the block");
        let dropped = packets(&lab.stats(), "dropped.blocklist");
        assert!(dropped >= 1000, "about 2,000/s should be dropped, saw {dropped}");
        lab.ok(&["blocklist", "remove", "192.0.2.44"]);
        wait_for(&|| sink.count("192.0.2.44") > at_block + 200, "traffic to resume after remove");
        stop.store(true, Relaxed);
    });
    sink.settle();
    let stats = lab.stats();
    assert_eq!(
        packets(&stats, "dropped.blocklist") + sink.count("192.0.2.44"),
        sent.load(Relaxed),
        "every frame was either dropped by floodgate or delivered"
    );
}

#[test]
fn replace_while_traffic_flows_never_passes_a_listed_source_or_drops_a_clean_one() {
    let lab = Lab::new("repl");
    lab.attach("native");
    // Bulk entries make each replace take a while, so traffic overlaps the switch.
    let bulk = |third: u8| -> String {
        (0..20_000u32).map(|i| format!("10.{third}.{}.{}\n", i / 256, i % 256)).collect()
    };
    let dir = tempdir("repl");
    let list_a = dir.join("a.txt");
    let list_b = dir.join("b.txt");
    std::fs::write(&list_a, format!("203.0.113.1\n203.0.113.2\n2001:db8:bad::1\n{}", bulk(1))).unwrap();
    std::fs::write(&list_b, format!("203.0.113.1\n203.0.113.3\n2001:db8:bad::1\n{}", bulk(2))).unwrap();
    lab.ok(&["blocklist", "load", list_a.to_str().unwrap()]);
    let sink = lab.sink(PORT);
    let both = [lab.frame("203.0.113.1", PORT), lab.frame("2001:db8:bad::1", PORT)];
    let clean = [lab.frame("192.0.2.50", PORT), lab.frame("2001:db8:feed::50", PORT)];
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    thread::scope(|s| {
        let sender = s.spawn(|| {
            let tx = lab.sender();
            let all = [&both[0], &clean[0], &both[1], &clean[1]];
            let mut n = 0u64;
            // Bounded: stops after the replaces or after 400,000 frames.
            while !stop.load(Relaxed) && n < 400_000 {
                n += tx.send_paced(400, 8_000, |i| all[(i % 4) as usize].clone(), || false).unwrap();
                sent.store(n, Relaxed);
            }
            n
        });
        // At least six replaces, and on until traffic has flowed through them (a
        // replace of 20,000 entries takes milliseconds), ending on list A.
        let started = std::time::Instant::now();
        let mut i = 0;
        while i < 6 || sent.load(Relaxed) < 8_000 || i % 2 == 1 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the sender sent {} frames",
                sent.load(Relaxed)
            );
            let file = if i % 2 == 0 { &list_b } else { &list_a };
            lab.ok(&["blocklist", "load", "--replace", file.to_str().unwrap()]);
            rounds.fetch_add(1, Relaxed);
            i += 1;
        }
        stop.store(true, Relaxed);
        let n = sender.join().unwrap();
        sink.settle();
        assert_eq!(n % 4, 0);
        let per_source = n / 4;
        assert!(per_source >= 1000, "traffic should overlap the replaces ({per_source} per source)");
        assert_eq!(sink.count("203.0.113.1"), 0, "an address on both lists passed during a replace");
        assert_eq!(sink.count("2001:db8:bad::1"), 0, "an address on both lists passed during a replace");
        assert_eq!(sink.count("192.0.2.50"), per_source, "a clean v4 source lost packets during a replace");
        assert_eq!(
            sink.count("2001:db8:feed::50"),
            per_source,
            "a clean v6 source lost packets during a replace"
        );
    });
    assert!(rounds.load(Relaxed) >= 6);
    // The last replace loaded list A: exactly its entries remain.
    let entries = lab.list("blocklist");
    assert_eq!(entries.len(), 20_003);
    assert!(entries.contains(&"203.0.113.2/32".to_string()));
    assert!(!entries.contains(&"203.0.113.3/32".to_string()));
    assert!(!entries.iter().any(|e| e.starts_with("10.2.")), "entries of list B left behind");
}

#[test]
fn detach_leaves_nothing_behind() {
    let lab = Lab::new("det");
    let before = lab.srv.ip(&["-d", "link", "show", "dev", &lab.srv_if]).unwrap();
    lab.attach("native");
    lab.ok(&["blocklist", "add", "203.0.113.0/24"]);
    let link = lab.srv.ip(&["-d", "link", "show", "dev", &lab.srv_if]).unwrap();
    let prog_id = link
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("program id in ip link output")
        .to_string();
    // Attach exits: the filter stays in place with no floodgate process running.
    assert!(lab.has_xdp());
    let out = lab.ok(&["detach", "-i", &lab.srv_if]);
    assert!(out.contains("detached"));
    assert!(!lab.has_xdp(), "XDP program still attached");
    assert!(!lab.pins_dir().exists(), "pins left in {}", lab.pins_dir().display());
    let after = lab.srv.ip(&["-d", "link", "show", "dev", &lab.srv_if]).unwrap();
    assert_eq!(strip_counters(&before), strip_counters(&after), "interface not as it was");
    let prog = std::process::Command::new("bpftool").args(["prog", "show", "id", &prog_id]).output().unwrap();
    assert!(!prog.status.success(), "program {prog_id} still loaded");
    let err = lab.err(&["detach", "-i", &lab.srv_if]);
    assert!(err.contains("not attached"), "{err}");
}

/// `ip -d link` output without the parts that change on their own.
fn strip_counters(s: &str) -> String {
    s.lines().filter(|l| !l.contains("prog/xdp")).collect::<Vec<_>>().join("\n")
}

#[test]
fn bad_inputs_give_their_error_and_change_nothing() {
    let lab = Lab::new("bad");
    let err = lab.err(&["attach", "-i", "nosuch0"]);
    assert!(err.contains("unknown interface 'nosuch0'") && err.contains(&lab.srv_if), "{err}");
    lab.ok(&["attach", "-i", &lab.srv_if, "--max-entries", "100"]);
    let err = lab.err(&["attach", "-i", &lab.srv_if]);
    assert!(err.contains("already attached"), "{err}");
    lab.ok(&["blocklist", "add", "192.0.2.1", "198.51.100.0/24"]);
    let snapshot = lab.list("blocklist");

    let err = lab.err(&["blocklist", "add", "192.0.2.9", "192.0.2.300"]);
    assert!(err.contains("'192.0.2.300' is not an IPv4 or IPv6 address"), "{err}");
    let err = lab.err(&["blocklist", "add", "203.0.113.7/24"]);
    assert!(err.contains("did you mean 203.0.113.0/24"), "{err}");
    let err = lab.err(&["blocklist", "remove", "192.0.2.1", "192.0.2.2"]);
    assert!(err.contains("192.0.2.2/32") && err.contains("nothing was removed"), "{err}");
    assert_eq!(lab.list("blocklist"), snapshot);

    // A bad line deep in a large file: reported with its line, nothing loaded.
    let dir = tempdir("bad");
    let file = dir.join("big.txt");
    let mut text = String::new();
    for i in 0..50_000u32 {
        text.push_str(&format!("10.{}.{}.0/24 ; entry {i}\n", i / 256 % 256, i % 256));
    }
    text.push_str("10.250.0.0/33\n");
    std::fs::write(&file, &text).unwrap();
    for replace in [false, true] {
        let mut args = vec!["blocklist", "load", file.to_str().unwrap()];
        if replace {
            args.push("--replace");
        }
        let err = lab.err(&args);
        assert!(
            err.contains(&format!("{}:50001:1: '10.250.0.0/33' has prefix length 33", file.display())),
            "{err}"
        );
        assert_eq!(lab.list("blocklist"), snapshot, "a bad file changed the list");
    }

    // Full list: capacity 100 per family, 2 IPv4 entries used.
    let fill: Vec<String> = (0..98).map(|i| format!("198.18.0.{i}")).collect();
    let mut args = vec!["blocklist", "add"];
    args.extend(fill.iter().map(String::as_str));
    lab.ok(&args);
    let full = lab.list("blocklist");
    let err = lab.err(&["blocklist", "add", "198.18.1.1", "198.18.1.2"]);
    assert!(err.contains("full") && err.contains("capacity is 100"), "{err}");
    std::fs::write(dir.join("more.txt"), "198.18.2.1\n198.18.2.2\n").unwrap();
    let err = lab.err(&["blocklist", "load", dir.join("more.txt").to_str().unwrap()]);
    assert!(err.contains("full"), "{err}");
    assert_eq!(lab.list("blocklist"), full, "a refused add changed the list");
    // IPv6 has its own capacity.
    lab.ok(&["blocklist", "add", "2001:db8::1"]);

    let err = lab.err(&["blocklist", "add", "-i", "nosuch0", "192.0.2.1"]);
    assert!(err.contains("not attached to nosuch0"), "{err}");
    let err = lab.err(&["attach", "-i", &lab.cli_if, "--max-entries", "0"]);
    assert!(err.contains("--max-entries must be between"), "{err}");
}

#[test]
fn auto_mode_falls_back_to_skb_with_a_warning() {
    // Loopback has no native XDP support.
    let ns = floodgate_lab::Netns::create("fgt-lo").unwrap();
    let run = |args: &[&str]| -> integration_tests::live::Run {
        let mut c = ns.command(integration_tests::live::floodgate_bin().to_str().unwrap());
        c.args(args);
        c.env(floodgate::pins::PIN_ROOT_ENV, "/sys/fs/bpf/floodgate-test-lo");
        c.output().unwrap().into()
    };
    let r = run(&["attach", "-i", "lo", "--mode", "native"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("native XDP attach to lo failed"), "{}", r.stderr);
    let r = run(&["attach", "-i", "lo"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("warning: native XDP is not available on lo"), "{}", r.stderr);
    assert!(r.stdout.contains("skb mode"), "{}", r.stdout);
    let stats: serde_json::Value = serde_json::from_str(&run(&["stats", "--json"]).stdout).unwrap();
    assert_eq!(stats["mode"], "skb");
    let r = run(&["detach", "-i", "lo"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let _ = std::fs::remove_dir("/sys/fs/bpf/floodgate-test-lo");
}

#[test]
fn interface_may_be_omitted_only_when_one_is_attached() {
    let mut lab = Lab::new("omit");
    let root = "/sys/fs/bpf/floodgate-test-omit";
    lab.env.push((floodgate::pins::PIN_ROOT_ENV.into(), root.into()));
    let err = lab.err(&["stats"]);
    assert!(err.contains("not attached to any interface"), "{err}");
    lab.attach("skb");
    lab.ok(&["blocklist", "add", "192.0.2.1"]);
    assert_eq!(lab.list("blocklist"), ["192.0.2.1/32"]);
    let status: serde_json::Value = serde_json::from_str(&lab.ok(&["status", "--json"])).unwrap();
    assert_eq!(status[0]["interface"], lab.srv_if.as_str());
    assert_eq!(status[0]["lists"]["blocklist"]["ipv4"], 1);
    // A second attached interface makes -i necessary.
    lab.ok(&["attach", "-i", "lo", "--mode", "skb"]);
    let err = lab.err(&["blocklist", "list"]);
    assert!(err.contains("choose one with -i"), "{err}");
    lab.ok(&["detach", "-i", "lo"]);
    lab.ok(&["blocklist", "list"]);
    drop(lab);
    let _ = std::fs::remove_dir(root);
}

#[test]
fn stats_watch_prints_rates_until_stopped() {
    let lab = Lab::new("watch");
    lab.attach("native");
    let mut child = lab
        .srv
        .command(integration_tests::live::floodgate_bin().to_str().unwrap())
        .args(["stats", "--watch", "200ms", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let frames = [lab.frame("192.0.2.9", PORT)];
    lab.send(&frames, 300, 3_000);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut saw_rate = false;
    for _ in 0..10 {
        let line = lines.next().expect("a line per interval").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v["rates"]["passed"]["pps"].is_number(), "{line}");
        if v["passed"]["packets"].as_u64().unwrap() >= 300 {
            saw_rate = true;
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(saw_rate, "watch never showed the traffic");
    let _ = std::io::stdout().flush();
}

#[test]
fn a_million_entries_load_and_replace() {
    // A million on the host; in the VMs (TCG, FLOODGATE_VM) a tenth, at a tenth of the
    // capacity, which tests the same paths in a fraction of the time.
    let n: u32 = if std::env::var_os("FLOODGATE_VM").is_some() { 100_000 } else { 1_000_000 };
    let lab = Lab::new("mil");
    lab.ok(&["attach", "-i", &lab.srv_if, "--mode", "native", "--max-entries", &n.to_string()]);
    let dir = tempdir("mil");
    let file = dir.join("million.txt");
    let mut text = String::with_capacity(20 * n as usize);
    // 80% IPv4 hosts and 20% IPv4 /24 prefixes.
    for i in 0..n / 5 * 4 {
        let a = 0x0b00_0000 + i;
        text.push_str(&format!("{}.{}.{}.{}\n", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255));
    }
    for i in 0..n / 5 {
        let a = 0x2000_0000 + (i << 8);
        text.push_str(&format!("{}.{}.{}.0/24\n", a >> 24, (a >> 16) & 255, (a >> 8) & 255));
    }
    std::fs::write(&file, text).unwrap();
    let out = lab.ok(&["blocklist", "load", file.to_str().unwrap()]);
    assert!(out.contains(&format!("added {n}")), "{out}");
    let out = lab.ok(&["blocklist", "load", "--replace", file.to_str().unwrap()]);
    assert!(out.contains(&format!("replaced with {n}")), "{out}");
    let status: serde_json::Value = serde_json::from_str(&lab.ok(&["status", "--json"])).unwrap();
    let row = status.as_array().unwrap().iter().find(|r| r["interface"] == lab.srv_if.as_str()).unwrap();
    assert_eq!(row["lists"]["blocklist"]["ipv4"], n);
    // One more does not fit.
    let err = lab.err(&["blocklist", "add", "192.0.2.1"]);
    assert!(err.contains("full"), "{err}");
    let sink = lab.sink(PORT);
    lab.send(
        &[lab.frame("11.0.0.5", PORT), lab.frame("32.0.1.9", PORT), lab.frame("192.0.2.1", PORT)],
        100,
        10_000,
    );
    sink.settle();
    assert_eq!(sink.count("11.0.0.5"), 0);
    assert_eq!(sink.count("32.0.1.9"), 0);
    assert_eq!(sink.count("192.0.2.1"), 100);
}

/// A fresh directory for test files, removed first if a killed run left it.
fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("floodgate-test-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
