//! The data path's log records (aya-log) through floodgate's forwarder: loaded at
//! each level and off, an auto-ban over real packets reaching a test logger, a full
//! ban table and an empty tail-call slot on crafted frames (BPF_PROG_TEST_RUN), at
//! most once per second where an event can repeat per packet.

use std::{
    sync::{Arc, Mutex},
    thread::sleep,
    time::{Duration, Instant},
};

use aya::maps::{HashMap, ProgramArray};
use filter_common::{
    BAN_ENTRIES, Reason, TAIL_DECIDE,
    limit::{Ban, Event, SourceKey},
    map_names,
};
use floodgate::{
    bpflog::{self, Forwarder},
    config::BpfLogLevel,
    loader::{self, Capacity},
    maps::{Core, PinDir},
};
use integration_tests::{
    frames::udp_from,
    harness::{Harness, limits},
    live::Lab,
};

/// A record as the logger saw it.
#[derive(Clone, Debug)]
struct Line {
    level: log::Level,
    target: String,
    text: String,
}

/// A `log` logger that keeps every record.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Line>>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        let line = Line { level: r.level(), target: r.target().to_string(), text: r.args().to_string() };
        self.0.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

impl Capture {
    fn lines(&self) -> Vec<Line> {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn bpf_log_every_level_and_off_pass_the_verifier() {
    let cap = Capacity::entries(64);
    for level in [
        None,
        Some(BpfLogLevel::Error),
        Some(BpfLogLevel::Warn),
        Some(BpfLogLevel::Info),
        Some(BpfLogLevel::Debug),
        Some(BpfLogLevel::Trace),
    ] {
        let mut ebpf = loader::load(cap, level).unwrap_or_else(|e| {
            panic!("loading at {level:?}: {}", loader::error_chain(&e));
        });
        loader::init_meta(&mut ebpf, 0, 0, cap, level).expect("meta");
        let meta = Core::open(&mut ebpf).unwrap().read().unwrap();
        assert_eq!(bpflog::loaded_level(&meta), level, "level recorded in the bookkeeping");
        assert!(!bpflog::needs_reload(&meta, level));
        assert_eq!(bpflog::needs_reload(&meta, Some(BpfLogLevel::Trace)), level != Some(BpfLogLevel::Trace));
    }
}

/// Starts a forwarder for the program attached in `lab` on a tokio runtime of its own
/// (as the service does), capturing its records.
fn forward(lab: &Lab) -> (Capture, tokio::runtime::Runtime) {
    let id = bpflog::program_id_of_link(&lab.pins_dir().join("link")).expect("program id of the pinned link");
    let capture = Capture::default();
    let fwd = Forwarder::for_program_with(id, capture.clone()).expect("forwarder");
    // A worker thread drives the task, so records arrive while the test sends.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_io().build().unwrap();
    let _in_rt = rt.enter();
    fwd.spawn().expect("spawn");
    drop(_in_rt);
    (capture, rt)
}

/// Floods from one source over its limit for longer than --ban-after (the auto-ban
/// test's traffic), with the data path's log at `level` ("off" or a level).
fn ban_with_log(tag: &str, level: &str, src: &str) -> (Lab, Capture, tokio::runtime::Runtime) {
    let lab = Lab::new(tag);
    lab.ok(&["attach", "-i", &lab.srv_if, "--mode", "native", "--bpf-log", level]);
    let (capture, rt) = forward(&lab);
    lab.ok(&["limit", "set", "--pps", "100", "--burst", "10", "--ban-after", "1s", "--ban-for", "30s"]);
    let bad = lab.frame(src, 5003);
    lab.send(std::slice::from_ref(&bad), 1_250, 500);
    assert_eq!(lab.stats()["auto_bans"], 1, "the flood was banned");
    (lab, capture, rt)
}

fn bans_of<'a>(lines: &'a [Line], src: &str) -> Vec<&'a Line> {
    lines.iter().filter(|l| l.text.starts_with("auto-ban") && l.text.contains(src)).collect()
}

#[test]
fn bpf_log_info_reports_an_auto_ban_with_its_source() {
    let (lab, capture, _rt) = ban_with_log("blog", "info", "192.0.2.72");
    let meta = Core::open(&mut PinDir(&lab.pins_dir())).unwrap().read().unwrap();
    assert_eq!(bpflog::loaded_level(&meta), Some(BpfLogLevel::Info));
    let deadline = Instant::now() + Duration::from_secs(3);
    while bans_of(&capture.lines(), "192.0.2.72").is_empty() && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    let lines = capture.lines();
    let bans = bans_of(&lines, "192.0.2.72");
    assert_eq!(bans.len(), 1, "one record per ban: {lines:?}");
    let ban = bans[0];
    assert_eq!(ban.text, "auto-ban 192.0.2.72/32 for 30 s");
    assert_eq!((ban.level, ban.target.as_str()), (log::Level::Info, bpflog::TARGET));
    assert_eq!(lines.len(), 1, "nothing else logged: {lines:?}");
}

#[test]
fn bpf_log_off_reports_nothing() {
    let (lab, capture, _rt) = ban_with_log("blogoff", "off", "192.0.2.73");
    let meta = Core::open(&mut PinDir(&lab.pins_dir())).unwrap().read().unwrap();
    assert_eq!(bpflog::loaded_level(&meta), None);
    // Time for a record to come through, had there been one.
    sleep(Duration::from_millis(500));
    assert!(capture.lines().is_empty(), "records with logging off: {:?}", capture.lines());
}

/// The forwarder of a program loaded in this process, drained by hand.
fn loaded(level: Option<BpfLogLevel>) -> (Harness, Forwarder<Capture>, Capture) {
    let mut h = Harness::with_bpf_log(64, level);
    let id = loader::program(&mut h.ebpf).unwrap().info().unwrap().id();
    let capture = Capture::default();
    let fwd = Forwarder::for_program_with(id, capture.clone()).expect("forwarder");
    (h, fwd, capture)
}

#[test]
fn bpf_log_empty_tail_call_slot_is_reported_once_a_second() {
    let (mut h, mut fwd, capture) = loaded(Some(BpfLogLevel::Error));
    let mut tails = ProgramArray::try_from(h.ebpf.map_mut(map_names::TAILS).unwrap()).unwrap();
    tails.clear_index(&TAIL_DECIDE).unwrap();
    let frame = udp_from("192.0.2.1");
    for i in 0..50 {
        h.expect(&frame, Reason::Unchecked, &format!("frame {i} without fg_decide"));
    }
    fwd.flush();
    let lines = capture.lines();
    // One per CPU at most; the test runs on one CPU at a time but may migrate.
    assert!(!lines.is_empty() && lines.len() <= 2, "{lines:?}");
    assert_eq!(
        lines[0].text,
        "tail-call slot of fg_decide is empty: frames are dropped as unchecked (at most one record per second per CPU)"
    );
    assert_eq!(lines[0].level, log::Level::Error);
    sleep(Duration::from_millis(1_100));
    h.expect(&frame, Reason::Unchecked, "a second later");
    fwd.flush();
    assert_eq!(capture.lines().len(), lines.len() + 1, "again after a second: {:?}", capture.lines());
}

#[test]
fn bpf_log_full_ban_table_is_reported_at_warn_not_at_error() {
    for (level, want) in [(BpfLogLevel::Warn, 1), (BpfLogLevel::Error, 0)] {
        let (mut h, mut fwd, capture) = loaded(Some(level));
        let mut cfg = limits(1, 1);
        cfg.ban_after_ns = 1; // the second drop bans
        cfg.ban_for_ns = 60_000_000_000;
        h.set_limits(&cfg);
        // Fill the ban table with sources from another range.
        let mut bans: HashMap<_, SourceKey, Ban> =
            HashMap::try_from(h.ebpf.map_mut(map_names::BANS).unwrap()).unwrap();
        for i in 0..BAN_ENTRIES {
            let key = SourceKey::v4([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 32);
            bans.insert(&key, &Ban { expires: u64::MAX, banned_at: 0 }, 0).unwrap();
        }
        for i in 0..20u8 {
            // A source with its own episode: burst, drop, drop that is due to ban.
            let frame = udp_from(&format!("192.0.2.{}", 100 + i));
            h.tally(&frame, 6);
        }
        // Every source reached its ban at least once (a failed ban starts a new episode).
        assert!(h.maps.limiter.event(Event::BanMapFull).unwrap() >= 20);
        fwd.flush();
        let lines = capture.lines();
        let full: Vec<_> = lines.iter().filter(|l| l.text.starts_with("table full: FG_BANS")).collect();
        assert!(
            if want == 0 { full.is_empty() } else { (1..=2).contains(&full.len()) },
            "at {level:?}: {lines:?}"
        );
        if want == 1 {
            assert_eq!(full[0].level, log::Level::Warn);
        }
    }
}
