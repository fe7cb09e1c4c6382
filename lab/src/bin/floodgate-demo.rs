//! `floodgate-demo` (run by scripts/demo.sh): a flood that hurts a server, legitimate
//! users who suffer from it, and floodgate's cure applied at runtime, in namespaces
//! this command creates and removes. One scenario per kind of flood.
//!
//! Scene (no route leaves it):
//!
//! ```text
//!   fgdemo-out [fgd-out 198.51.100.2] ---- [fgd-srv 198.51.100.1] fgdemo-srv
//!   the Internet: legitimate clients,        the server: floodgate attached, its
//!   the flood generator (XDP_TX), and        receive path and its service on one
//!   a sink for answers to spoofed sources    CPU (the last)
//! ```
//!
//! The flood is the bench's generator (`fgb_gen` in live-frames BPF_PROG_TEST_RUN on
//! the first CPU), paced within each run so that frames reach the server's veth
//! steadily, as a NIC delivers a flood, from spoofed sources. The legitimate requests
//! share that receive path and the service the flood aims at: a UDP service that
//! spends 20 µs of CPU per request (or nginx, for the SYN flood). Before the cure the
//! flood takes the server's CPU and fills its socket, and legitimate requests are lost
//! or answered only after a retry; after it, floodgate drops (or answers) the flood in
//! the driver. floodgate runs as the service (`floodgate run`) from the start, with
//! nothing in force and incident detection on, so the demo ends with the flood's
//! incident report.

use std::{
    collections::HashMap,
    fs,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser as _, ValueEnum};
use filter_common::Reason;
use floodgate::{
    human::grouped,
    loader,
    maps::PinDir,
    pins::{self, IfacePins},
    stats::Counters,
};
use floodgate_lab::{
    FrameSpec, Netns, build,
    generator::{self, Generator},
    ip, pin_thread, pin_to_cpu, veth_pair,
};
use nix::sys::signal::{SigHandler, Signal, signal};
use serde_json::json;

/// Run a self-contained demonstration: a flood that hurts a server and its
/// legitimate users, then floodgate's cure applied at runtime while the flood goes on.
///
/// Each scenario is one kind of flood and its cure. The live table shows, every
/// second, the legitimate requests sent and answered with their p99 latency, the
/// flood's frames, what reached the server's stack and what floodgate stopped in the
/// driver, and how busy the server's CPU was; the run ends with a verdict (legitimate
/// success and p99 before and after the cure, frames stopped in the driver, CPU given
/// back) and the path of the flood's incident report.
///
/// Creates network namespaces fgdemo-srv and fgdemo-out joined by a veth pair, with no
/// route out; everything is removed at the end, on Ctrl-C, or on error. Needs root.
#[derive(clap::Parser, Debug)]
#[command(name = "floodgate-demo")]
pub struct Args {
    /// Which flood, and which cure.
    #[arg(long, value_enum, default_value_t = Scenario::Blocklist)]
    pub scenario: Scenario,
    /// Length of the demonstration, 15s to 10m, in whole seconds (e.g. `20s`, `1m`);
    /// the cure comes a little before the middle.
    #[arg(long, default_value = "21s", value_parser = parse_length)]
    pub duration: Duration,
    /// The flood's rate in frames per second. Default: 400,000 for the UDP floods,
    /// eight times what the service answers at most on any machine (a request costs
    /// it 20 µs); 850,000 SYNs, more than one CPU of the stack answers.
    /// What the generator's CPU makes is the ceiling.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1000..=100_000_000))]
    pub flood_pps: Option<u64>,
    /// Also print the verdict as one JSON object, on the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// A UDP flood at the server's service from random sources of a range known to
    /// attack (203.0.113.0/24), blocked at runtime with `blocklist add`.
    Blocklist,
    /// 1,024 sources (198.18.0.0/22), each far over a fair rate, stopped by
    /// `limit set` (a per-source limit) and its auto-bans.
    Botnet,
    /// Random-source SYNs at the server's web server (nginx), answered in the driver
    /// with SYN cookies by `synproxy enable`; legitimate HTTP connections complete.
    Synflood,
    /// Reflected DNS, NTP and memcached answers from spoofed reflectors
    /// (192.0.2.0/24), stopped by `rule preset reflection`, with the server's own
    /// resolver allowlisted first: its answers (from port 53 too) keep coming.
    Reflection,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Blocklist => "blocklist",
            Scenario::Botnet => "botnet",
            Scenario::Synflood => "synflood",
            Scenario::Reflection => "reflection",
        }
    }

    /// The flood's source ports (one frame template each, taken in turn); empty: any
    /// (the generator varies it).
    fn source_ports(self) -> &'static [u16] {
        match self {
            Scenario::Reflection => &[53, 123, 11211],
            _ => &[],
        }
    }

    /// The flood's sources: a prefix the generator draws from.
    fn sources(self) -> (Ipv4Addr, u8) {
        match self {
            Scenario::Blocklist => (Ipv4Addr::new(203, 0, 113, 0), 24),
            Scenario::Botnet => (Ipv4Addr::new(198, 18, 0, 0), 22),
            Scenario::Synflood => (Ipv4Addr::new(198, 18, 0, 0), 15),
            Scenario::Reflection => (Ipv4Addr::new(192, 0, 2, 0), 24),
        }
    }

    fn story(self) -> &'static str {
        match self {
            Scenario::Blocklist => {
                "UDP at the service from random sources of 203.0.113.0/24, a range known to attack"
            }
            Scenario::Botnet => {
                "UDP at the service from 1,024 bots of 198.18.0.0/22, each sending hundreds of frames/s"
            }
            Scenario::Synflood => {
                "TCP SYNs to nginx (port 80) from random sources of 198.18.0.0/15, every one new"
            }
            Scenario::Reflection => {
                "DNS, NTP and memcached answers nobody asked for (source ports 53, 123, 11211), from reflectors in 192.0.2.0/24"
            }
        }
    }

    /// The commands that cure it (floodgate's arguments).
    fn cure(self) -> Vec<Vec<&'static str>> {
        match self {
            Scenario::Blocklist => vec![vec!["blocklist", "add", "-i", SRV_IF, "203.0.113.0/24"]],
            Scenario::Botnet => {
                vec![vec![
                    "limit",
                    "set",
                    "-i",
                    SRV_IF,
                    "--pps",
                    "200",
                    "--ban-after",
                    "1s",
                    "--ban-for",
                    "10m",
                ]]
            }
            Scenario::Synflood => vec![vec!["synproxy", "enable", "-i", SRV_IF, "--ports", "80"]],
            Scenario::Reflection => vec![
                vec!["allowlist", "add", "-i", SRV_IF, RESOLVER_V4],
                vec!["rule", "preset", "reflection", "-i", SRV_IF],
            ],
        }
    }
}

const SRV_IF: &str = "fgd-srv";
const OUT_IF: &str = "fgd-out";
const SRV_V4: &str = "198.51.100.1";
const CLI_V4: &str = "198.51.100.2";
/// The outside's network: frames to anywhere else (answers to spoofed sources) are
/// carried away (dropped by `fgb_sink`).
const OUT_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 51, 100, 0), 24);
/// The server's resolver, in the outside namespace.
const RESOLVER_V4: &str = "198.51.100.53";
const DNS_PORT: u16 = 53;
const HTTP_PORT: u16 = 80;
/// HTTP client threads (each one request at a time).
const HTTP_CLIENTS: u64 = 10;
/// The server's UDP service, and what a request costs it.
const SERVICE_PORT: u16 = 7;
const SERVICE_COST: Duration = Duration::from_micros(20);
/// A legitimate request's size: padded to 1,200 bytes, as QUIC's first packets are.
/// (Smaller ones would be favoured by the socket's memory check over the flood's
/// frames, which the driver hands on in whole pages.)
const REQUEST_SIZE: usize = 1200;
/// Legitimate requests per second; the server's own resolver queries (reflection).
const LEGIT_RATE: u64 = 100;
const RESOLVER_RATE: u64 = 20;
/// A legitimate client asks again after RETRY_AFTER and gives up after GIVE_UP (as a
/// DNS client does; TCP's first SYN retransmission is after 1 s too).
const RETRY_AFTER: Duration = Duration::from_secs(1);
const GIVE_UP: Duration = Duration::from_secs(2);
/// Generator runs per syscall (each sends a frame when the pace allows): about 0.1 s.
const RUN: u32 = 1_000_000;

fn parse_length(s: &str) -> Result<Duration, String> {
    let d = floodgate::duration::parse_within(s, Duration::from_secs(15), Duration::from_secs(600))
        .map_err(|e| e.to_string())?;
    if d.subsec_nanos() != 0 {
        return Err(format!("'{s}': expected whole seconds"));
    }
    Ok(d)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floodgate-demo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: std::ffi::c_int) {
    STOP.store(true, Relaxed);
}

fn stopping() -> bool {
    STOP.load(Relaxed)
}

/// Phases of a run, as the legitimate clients tag their requests. Requests whose
/// retries would straddle the cure, or the end, are tagged OUT and not judged.
const WARMUP: u8 = 0;
const BEFORE: u8 = 1;
const OUT: u8 = 2;
const AFTER: u8 = 3;

/// What one kind of legitimate traffic saw, read once per second by the display.
#[derive(Default)]
struct Tally {
    phase: AtomicU8,
    /// All requests sent and answered, for the table.
    sent_total: AtomicU64,
    answered_total: AtomicU64,
    /// Per phase: requests sent, and the latencies of those answered (µs, from the
    /// first try).
    sent: [AtomicU64; 4],
    latencies: [Mutex<Vec<u64>>; 4],
    /// This second's latencies (µs), for the table.
    second: Mutex<Vec<u64>>,
}

impl Tally {
    fn sent(&self, phase: u8) {
        self.sent_total.fetch_add(1, Relaxed);
        self.sent[phase as usize].fetch_add(1, Relaxed);
    }

    /// An answer to a request of `phase`, `latency` after its first try.
    fn answered(&self, phase: u8, latency: Duration) {
        let us = latency.as_micros() as u64;
        self.answered_total.fetch_add(1, Relaxed);
        self.latencies[phase as usize].lock().unwrap().push(us);
        self.second.lock().unwrap().push(us);
    }
}

struct Scene {
    // Deleting a namespace deletes its veth end (and so the pair).
    srv: Netns,
    out: Netns,
}

fn build_scene() -> anyhow::Result<Scene> {
    let srv = Netns::create("fgdemo-srv")?;
    let out = Netns::create("fgdemo-out")?;
    veth_pair(
        (&srv, SRV_IF, &[&format!("{SRV_V4}/24")]),
        (&out, OUT_IF, &[&format!("{CLI_V4}/24"), &format!("{RESOLVER_V4}/24")]),
    )?;
    // Each side's receive work in a NAPI kthread of its own (pinned later), apart
    // from the CPU that runs the generator. A veth has NAPI, which can be threaded,
    // with GRO on.
    for (ns, iface) in [(&srv, SRV_IF), (&out, OUT_IF)] {
        ip(&["netns", "exec", &ns.name, "ethtool", "-K", iface, "gro", "on"])
            .with_context(|| format!("GRO on {iface}"))?;
        ip(&["netns", "exec", &ns.name, "sh", "-c", &format!("echo 1 > /sys/class/net/{iface}/threaded")])
            .with_context(|| format!("threaded NAPI on {iface}"))?;
    }
    Ok(Scene { srv, out })
}

fn run(args: Args) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the demo creates network namespaces and loads XDP programs: run it as root (sudo ./scripts/demo.sh)"
        );
    }
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { signal(sig, SigHandler::Handler(on_signal)) }.context("installing a signal handler")?;
    }
    // Left by a demo that was killed: its namespace is gone (the link lost its
    // interface), its pins are not.
    for stale in pins::all()?.iter().filter(|p| p.iface == SRV_IF && pins::link_ifindex(&p.dir) == Some(0)) {
        loader::detach(stale).context("removing a previous demo's pins")?;
    }
    println!(
        "floodgate demo, scenario {}: building the scene (namespaces fgdemo-srv, fgdemo-out)",
        args.scenario.name()
    );
    let scene = build_scene().context(
        "building the demo's network namespaces (this needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN, \
         and a kernel with network namespaces and veth)",
    )?;
    let pins = scene.srv.enter(|| IfacePins::new(SRV_IF))??;
    let result = play(&scene, &args);
    if pins.exists() {
        loader::detach(&pins).context("detaching the demo's filter")?;
    }
    drop(scene);
    println!("removed the demo's namespaces and pins");
    if stopping() && result.is_ok() {
        println!("(interrupted)");
    }
    result
}

/// `floodgate run` in the server's namespace, with incident detection: it attaches the
/// filter, and records the flood. Stopped (and the filter detached) when dropped.
struct Service {
    bin: PathBuf,
    child: Child,
    state: PathBuf,
    log: PathBuf,
}

impl Service {
    fn start(scene: &Scene, work: &Path) -> anyhow::Result<Service> {
        let bin = std::env::current_exe()?.with_file_name("floodgate");
        if !bin.exists() {
            bail!(
                "{} is missing: build it next to floodgate-demo (cargo build --release --bin floodgate; scripts/demo.sh does)",
                bin.display()
            );
        }
        let (state, log) = (work.join("state"), work.join("run.log"));
        // An incident opens at 100,000 frames/s held for 1 s (the flood is far above),
        // and closes 2 s after it.
        let cmd = [
            "run",
            "-i",
            SRV_IF,
            "--detach-on-exit",
            "--incident-pps",
            "100000",
            "--incident-hold",
            "1s",
            "--incident-quiet",
            "2s",
            "--sample-every",
            "64",
            "--state-dir",
        ];
        println!("$ nsenter --net=/run/netns/fgdemo-srv floodgate {} {} &", cmd.join(" "), state.display());
        let out = fs::File::create(&log)?;
        let child = scene
            .srv
            .command(bin.to_str().context("binary path")?)
            .args(cmd)
            .arg(&state)
            .env("FLOODGATE_RUNTIME_DIR", work.join("run"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting floodgate run")?;
        let mut svc = Service { bin, child, state, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !fs::read_to_string(&svc.log).unwrap_or_default().contains("ready") {
            if let Some(status) = svc.child.try_wait()? {
                bail!(
                    "floodgate run exited ({status}):\n{}",
                    fs::read_to_string(&svc.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline || stopping() {
                bail!(
                    "floodgate run did not get ready:\n{}",
                    fs::read_to_string(&svc.log).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(svc)
    }

    /// `floodgate ARGS` (in the caller's namespace: the incident commands read files).
    fn floodgate(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bin).args(args).output().context("running floodgate")?;
        if !out.status.success() {
            bail!("floodgate {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits for the flood's incident to close, writes its report, returns where.
    fn report(&self) -> anyhow::Result<PathBuf> {
        let state = self.state.to_str().context("state path")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let id = loop {
            let list: serde_json::Value = serde_json::from_str(&self.floodgate(&[
                "incidents",
                "list",
                "--json",
                "--state-dir",
                state,
            ])?)?;
            let first = list.as_array().and_then(|a| a.first()).cloned();
            match first {
                Some(i) if i["state"] == "closed" || Instant::now() > deadline => {
                    break i["id"].as_str().context("incident id")?.to_string();
                }
                None if Instant::now() > deadline => bail!("no incident was recorded"),
                _ => thread::sleep(Duration::from_millis(250)),
            }
        };
        let dir = std::env::temp_dir().join(format!("floodgate-demo-{id}"));
        let out = dir.to_str().context("report path")?;
        self.floodgate(&["incidents", "report", &id, "-o", out, "--state-dir", state])?;
        Ok(dir)
    }
}

impl Service {
    /// `floodgate ARGS` in the server's namespace, as the operator types it there.
    fn command(&self, scene: &Scene, args: &[&str]) -> anyhow::Result<String> {
        let out = scene.srv.command(self.bin.to_str().context("binary path")?).args(args).output()?;
        if !out.status.success() {
            bail!("floodgate {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // SIGTERM: the service detaches (--detach-on-exit) and exits.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn play(scene: &Scene, args: &Args) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("floodgate-demo-run-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let result = play_with_service(scene, args, &work);
    let _ = fs::remove_dir_all(&work);
    result
}

/// The CPUs: the generator on the first, the server's receive path and service on
/// the last.
fn cpus() -> (usize, usize) {
    let n = thread::available_parallelism().map_or(1, |n| n.get());
    (0, n - 1)
}

/// The flood's frames (one per source port of the scenario, else one).
fn flood_frames(scene: &Scene, scenario: Scenario) -> anyhow::Result<Vec<Vec<u8>>> {
    let (srv_mac, out_mac) = (scene.srv.mac(SRV_IF)?, scene.out.mac(OUT_IF)?);
    let (addr, _) = scenario.sources();
    let frame = |sport: Option<u16>| -> anyhow::Result<Vec<u8>> {
        let dport = if scenario == Scenario::Synflood { HTTP_PORT } else { SERVICE_PORT };
        let mut spec = FrameSpec::udp(addr.into(), SRV_V4.parse()?, dport);
        if scenario == Scenario::Synflood {
            spec.tcp_flags = Some(0x02);
            spec.payload = Vec::new();
        } else {
            spec.payload = vec![0u8; 64];
        }
        if let Some(p) = sport {
            spec.sport = p;
        }
        spec.src_mac = out_mac;
        spec.dst_mac = srv_mac;
        Ok(build(&spec))
    };
    let ports = scenario.source_ports();
    if ports.is_empty() { Ok(vec![frame(None)?]) } else { ports.iter().map(|p| frame(Some(*p))).collect() }
}

fn play_with_service(scene: &Scene, args: &Args, work: &Path) -> anyhow::Result<()> {
    let svc = Service::start(scene, work)?;
    let pins = scene.srv.enter(|| IfacePins::new(SRV_IF))??;
    let maps = Counters::open(&mut PinDir(&pins.dir))?;
    let (gen_cpu, srv_cpu) = cpus();
    let _sink = scene.out.enter(|| generator::attach_sink(OUT_IF, OUT_NET.0, OUT_NET.1))??;
    let mut flood_gen = Generator::load()?;
    let frames = flood_frames(scene, args.scenario)?;
    let (addr, len) = args.scenario.sources();
    flood_gen.set_frame(&frames[0])?;
    flood_gen.set_sources(addr, len)?;
    flood_gen.keep_source_port(frames.len() > 1)?;
    let rate = args.flood_pps.unwrap_or(default_rate(args.scenario));
    flood_gen.set_rate(Some(rate))?;
    pin_napi(gen_cpu, srv_cpu);

    let http = args.scenario == Scenario::Synflood;
    let _nginx = if http {
        Some(
            floodgate_lab::Nginx::start(
                &scene.srv,
                work.join("nginx"),
                &format!("server {{ listen {SRV_V4}:{HTTP_PORT} backlog=4096; location / {{ return 200 \"ok\\n\"; }} }}"),
            )
            .context("starting nginx in the server's namespace (scripts/setup.sh installs nginx-light)")?,
        )
    } else {
        None
    };
    if http {
        wait_http(scene)?;
    }
    // The service and its clients; the server's resolver and its queries.
    let service = scene.srv.enter(|| UdpSocket::bind((SRV_V4, SERVICE_PORT)))??;
    let client = scene.out.enter(|| UdpSocket::bind((CLI_V4, 0)))??;
    let resolver = scene.out.enter(|| UdpSocket::bind((RESOLVER_V4, DNS_PORT)))??;
    let asker = scene.srv.enter(|| UdpSocket::bind((SRV_V4, 0)))??;
    let legit = Tally::default();
    let dns = Tally::default();
    let flood_sent = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let finished = || done.load(Relaxed) || stopping();
    let verdict = thread::scope(|s| -> anyhow::Result<Option<Verdict>> {
        s.spawn(|| {
            pin_to_cpu(srv_cpu);
            serve(&service, SERVICE_COST, &finished)
        });
        s.spawn(|| serve(&resolver, Duration::ZERO, &finished));
        if http {
            for i in 0..HTTP_CLIENTS {
                let (legit, finished) = (&legit, &finished);
                s.spawn(move || scene.out.enter(|| http_client(i, legit, finished)));
            }
        } else {
            let to = SocketAddr::new(SRV_V4.parse()?, SERVICE_PORT);
            let (client, legit, finished) = (&client, &legit, &finished);
            s.spawn(move || ask(client, to, LEGIT_RATE, legit, finished));
        }
        if args.scenario == Scenario::Reflection {
            let to = SocketAddr::new(RESOLVER_V4.parse()?, DNS_PORT);
            let (asker, dns, finished) = (&asker, &dns, &finished);
            s.spawn(move || ask(asker, to, RESOLVER_RATE, dns, finished));
        }
        let (frames, flood_sent, finished) = (&frames, &flood_sent, &finished);
        let flood = s.spawn(move || {
            scene.out.enter(|| -> anyhow::Result<()> {
                pin_to_cpu(gen_cpu);
                let ifindex = loader::ifindex(OUT_IF).context("the generator's veth")?;
                flood(&mut flood_gen, frames, ifindex, flood_sent, finished)
            })?
        });
        let scene_state = Watch { scene, svc: &svc, maps: &maps, legit: &legit, dns: &dns, flood_sent };
        let result = display(&scene_state, args, rate, &finished);
        done.store(true, Relaxed);
        flood.join().map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
        result
    })?;
    let Some(verdict) = verdict.filter(|_| !stopping()) else { return Ok(()) };
    println!("\n{}", verdict.text(args.scenario));
    let dir = svc.report().context("writing the flood's incident report")?;
    println!(
        "\nthe flood's incident report (for the hosting provider): {}/report.md\n  \
         with report.html, the timeline chart (timeline.png, timeline.svg) and the sampled frames (a pcap)",
        dir.display()
    );
    if args.json {
        println!("{}", verdict.json(args.scenario, &dir));
    }
    Ok(())
}

/// The flood's default rate. UDP: eight times what the service answers at most (one
/// request per SERVICE_COST: 50,000/s), whatever the machine's speed. SYNs: more than
/// one CPU of the stack answers with SYN cookies (about 550,000/s on the 2-core
/// machine of the README), where the generator's CPU, which also takes the server's
/// answers, keeps up.
fn default_rate(scenario: Scenario) -> u64 {
    match scenario {
        Scenario::Synflood => 850_000,
        _ => 8 * (1_000_000 / SERVICE_COST.as_micros() as u64),
    }
}

/// The NAPI kthreads on their CPUs (they are made again when an XDP program changes),
/// with the priority a driver's receive work has on a server: the server's at the
/// highest nice level (as a NIC's softirq, it comes before the service, which then
/// gets what the flood leaves), the outside's at real-time priority (it stands for
/// the rest of the Internet, which takes the server's answers whatever the generator
/// does on that CPU).
fn pin_napi(gen_cpu: usize, srv_cpu: usize) {
    for pid in generator::napi_threads(SRV_IF) {
        pin_thread(pid, srv_cpu);
        // SAFETY: plain syscalls on a pid, with valid arguments.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, -20) };
    }
    for pid in generator::napi_threads(OUT_IF) {
        pin_thread(pid, gen_cpu);
        let param = libc::sched_param { sched_priority: 50 };
        // SAFETY: as above.
        unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) };
    }
}

/// Answers every datagram on `sock` with itself, after spending `cost` of CPU on it.
fn serve(sock: &UdpSocket, cost: Duration, finished: &(dyn Fn() -> bool + Sync)) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 2048];
    while !finished() {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let t = Instant::now();
            while t.elapsed() < cost {
                std::hint::spin_loop();
            }
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

/// Process-wide monotonic microseconds.
fn now_us() -> u64 {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    T0.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A request waiting for its answer.
struct Pending {
    phase: u8,
    first: u64,
    tries: u32,
}

/// `rate` requests a second to `to`, each asked again after RETRY_AFTER and given up
/// after GIVE_UP; a request carries its number. Answers are read on a thread of its
/// own.
fn ask(sock: &UdpSocket, to: SocketAddr, rate: u64, tally: &Tally, finished: &(dyn Fn() -> bool + Sync)) {
    let pending: Mutex<HashMap<u64, Pending>> = Mutex::new(HashMap::new());
    thread::scope(|s| {
        s.spawn(|| {
            let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = [0u8; 2048];
            while !finished() {
                let Ok((n, _)) = sock.recv_from(&mut buf) else { continue };
                let Some(id) =
                    buf.get(..8).filter(|_| n >= 8).map(|b| u64::from_be_bytes(b.try_into().unwrap()))
                else {
                    continue;
                };
                // Only the first answer counts (a retry may be answered too).
                if let Some(p) = pending.lock().unwrap().remove(&id) {
                    tally.answered(p.phase, Duration::from_micros(now_us() - p.first));
                }
            }
        });
        let send = |id: u64| {
            let mut req = [0u8; REQUEST_SIZE];
            req[..8].copy_from_slice(&id.to_be_bytes());
            let _ = sock.send_to(&req, to);
        };
        let start = Instant::now();
        let mut next_id = 0u64;
        while !finished() {
            let now = now_us();
            let due = start.elapsed().as_micros() as u64 * rate / 1_000_000;
            while next_id < due {
                let phase = tally.phase.load(Relaxed);
                pending.lock().unwrap().insert(next_id, Pending { phase, first: now, tries: 1 });
                tally.sent(phase);
                send(next_id);
                next_id += 1;
            }
            let mut again = Vec::new();
            pending.lock().unwrap().retain(|id, p| {
                let age = now.saturating_sub(p.first);
                if age >= GIVE_UP.as_micros() as u64 {
                    return false;
                }
                if age >= RETRY_AFTER.as_micros() as u64 * u64::from(p.tries) {
                    p.tries += 1;
                    again.push(*id);
                }
                true
            });
            for id in again {
                send(id);
            }
            thread::sleep(Duration::from_millis(2));
        }
    });
}

/// Waits until nginx answers (it starts in the background).
fn wait_http(scene: &Scene) -> anyhow::Result<()> {
    let to = SocketAddr::new(SRV_V4.parse()?, HTTP_PORT);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = scene.out.enter(|| http_get(to).is_ok())?;
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nginx in the server's namespace did not answer on {to}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP request on a new connection, whole within GIVE_UP (the kernel retries
/// the SYN after 1 s).
fn http_get(to: SocketAddr) -> std::io::Result<()> {
    use std::io::{Read as _, Write as _};
    let start = Instant::now();
    let mut c = std::net::TcpStream::connect_timeout(&to, GIVE_UP)?;
    let left = GIVE_UP.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
    c.set_read_timeout(Some(left))?;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut body = Vec::new();
    c.read_to_end(&mut body)?;
    if body.starts_with(b"HTTP/1.1 200") { Ok(()) } else { Err(std::io::Error::other("not a 200")) }
}

/// Client `i` of HTTP_CLIENTS: its share of LEGIT_RATE requests a second, in turn.
fn http_client(i: u64, tally: &Tally, finished: &(dyn Fn() -> bool + Sync)) {
    let to = SocketAddr::new(SRV_V4.parse().unwrap(), HTTP_PORT);
    let every = Duration::from_micros(1_000_000 * HTTP_CLIENTS / LEGIT_RATE);
    // Spread over the period, so that requests do not start together.
    thread::sleep(every.mul_f64(i as f64 / HTTP_CLIENTS as f64));
    let start = Instant::now();
    let mut n = 0u32;
    while !finished() {
        n += 1;
        let phase = tally.phase.load(Relaxed);
        tally.sent(phase);
        let t = Instant::now();
        if http_get(to).is_ok() {
            tally.answered(phase, t.elapsed());
        }
        if let Some(wait) = (start + every * n).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
}

/// Runs the generator until the demo ends, at the rate set; counts what it sent.
fn flood(
    flood_gen: &mut Generator,
    frames: &[Vec<u8>],
    ifindex: u32,
    sent: &AtomicU64,
    finished: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<()> {
    let mut turn = 0;
    while !finished() {
        if frames.len() > 1 {
            turn = (turn + 1) % frames.len();
            flood_gen.set_frame(&frames[turn])?;
        }
        flood_gen.send(ifindex, RUN)?;
        sent.store(flood_gen.sent()?, Relaxed);
    }
    Ok(())
}

/// Busy time (ns) of `cpu` so far, from /proc/stat (all but idle and iowait).
fn cpu_busy_ns(cpu: usize) -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let tag = format!("cpu{cpu} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&tag)) else { return 0 };
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let busy: u64 = f.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    // USER_HZ is 100 on every Linux architecture.
    busy * 10_000_000
}

/// What the display reads.
struct Watch<'a> {
    scene: &'a Scene,
    svc: &'a Service,
    maps: &'a Counters,
    legit: &'a Tally,
    dns: &'a Tally,
    flood_sent: &'a AtomicU64,
}

/// What one side of the cure looked like.
#[derive(Debug, Default)]
struct Side {
    sent: u64,
    answered: u64,
    /// p99 latency (ms, from the first try); None when more than 1% got no answer.
    p99_ms: Option<f64>,
    /// How busy the server's CPU was, 0 to 1.
    cpu: f64,
}

impl Side {
    fn of(tally: &Tally, phase: u8, cpu: &[f64]) -> Side {
        let sent = tally.sent[phase as usize].load(Relaxed);
        let mut lat = tally.latencies[phase as usize].lock().unwrap().clone();
        lat.sort_unstable();
        let answered = lat.len() as u64;
        // Unanswered requests count as infinitely slow.
        let k = (sent * 99).div_ceil(100) as usize;
        let p99_ms = (k > 0 && k <= lat.len()).then(|| lat[k - 1] as f64 / 1000.0);
        let cpu = if cpu.is_empty() { 0.0 } else { cpu.iter().sum::<f64>() / cpu.len() as f64 };
        Side { sent, answered, p99_ms, cpu }
    }

    fn success(&self) -> f64 {
        if self.sent == 0 { 0.0 } else { self.answered as f64 / self.sent as f64 }
    }

    fn p99_text(&self) -> String {
        match self.p99_ms {
            Some(ms) => format!("p99 {}", ms_text(ms)),
            None => format!("p99 beyond the {} s a client waits: lost", GIVE_UP.as_secs()),
        }
    }
}

fn ms_text(ms: f64) -> String {
    if ms >= 1000.0 { format!("{:.1} s", ms / 1000.0) } else { format!("{ms:.1} ms") }
}

struct Verdict {
    before: Side,
    after: Side,
    /// The server's own resolver queries after the cure (reflection only).
    resolver: Option<Side>,
    dropped: u64,
    flood_fps: f64,
    cure: String,
}

impl Verdict {
    fn text(&self, scenario: Scenario) -> String {
        let (b, a) = (&self.before, &self.after);
        let mut text = format!(
            "verdict ({}): before the cure, {:.0}% of legitimate requests were answered ({} of {}; {}). \
             After `{}`, {:.0}% ({} of {}; {}) while the flood kept coming at {} frames/s: floodgate \
             stopped {} of its frames in the driver, and the server's CPU went from {:.0}% busy to {:.0}%.",
            scenario.name(),
            b.success() * 100.0,
            grouped(b.answered),
            grouped(b.sent),
            b.p99_text(),
            self.cure,
            a.success() * 100.0,
            grouped(a.answered),
            grouped(a.sent),
            a.p99_text(),
            grouped(self.flood_fps as u64),
            grouped(self.dropped),
            b.cpu * 100.0,
            a.cpu * 100.0,
        );
        if let Some(r) = &self.resolver {
            text += &format!(
                " The server's own resolver, allowlisted, answered {} of its {} queries after the cure.",
                grouped(r.answered),
                grouped(r.sent)
            );
        }
        text
    }

    fn json(&self, scenario: Scenario, report: &Path) -> String {
        let side = |s: &Side| {
            json!({
                "sent": s.sent,
                "answered": s.answered,
                "success": s.success(),
                "p99_ms": s.p99_ms,
                "server_cpu": s.cpu,
            })
        };
        json!({
            "scenario": scenario.name(),
            "cure": self.cure,
            "before": side(&self.before),
            "after": side(&self.after),
            "resolver_after": self.resolver.as_ref().map(side),
            "stopped_in_driver": self.dropped,
            "flood_frames_per_second": self.flood_fps,
            "report": report.join("report.md"),
        })
        .to_string()
    }
}

/// When the cure comes, a little before the middle: the before side needs GIVE_UP
/// less of its window than the after side needs of its own.
fn cure_at(total: u64) -> u64 {
    (total * 9).div_ceil(20)
}

fn display(
    w: &Watch,
    args: &Args,
    rate: u64,
    finished: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<Option<Verdict>> {
    let total = args.duration.as_secs();
    let cure_at = cure_at(total);
    let give_up = GIVE_UP.as_secs();
    let (gen_cpu, srv_cpu) = cpus();
    println!("the flood: {}, {} frames/s", args.scenario.story(), grouped(rate));
    if args.scenario == Scenario::Synflood {
        println!(
            "the legitimate clients: {LEGIT_RATE} HTTP requests/s to nginx on the server ({SRV_V4}:{HTTP_PORT}), a new TCP connection each"
        );
    } else {
        println!(
            "the legitimate clients: {LEGIT_RATE} requests/s to the server's UDP service ({SRV_V4}:{SERVICE_PORT}, {} µs of CPU per request)",
            SERVICE_COST.as_micros()
        );
    }
    if args.scenario == Scenario::Reflection {
        println!(
            "the server's own queries: {RESOLVER_RATE}/s to its resolver ({RESOLVER_V4}), answered from port 53"
        );
    }
    println!(
        "a client asks again after {} s and gives up after {give_up} s; the server's receive path and service run on CPU {srv_cpu}\n",
        RETRY_AFTER.as_secs()
    );
    println!(
        "{:>4}  {:>6} {:>8} {:>10}   {:>11} {:>14} {:>14} {:>11}",
        "t", "legit", "answered", "p99", "flood", "to the stack", "stopped (XDP)", "server CPU"
    );
    // Stopped in the driver: dropped, or (SYN cookies) answered there.
    let stopped = |t: &floodgate::stats::Totals| -> u64 {
        Reason::ALL.iter().filter(|r| r.drops() || **r == Reason::SynProxy).map(|r| t.get(*r).packets).sum()
    };
    let legit = w.legit;
    let start = Instant::now();
    let mut prev = (
        legit.sent_total.load(Relaxed),
        legit.answered_total.load(Relaxed),
        0u64,
        w.maps.totals()?,
        cpu_busy_ns(srv_cpu),
    );
    let (mut cpu_before, mut cpu_after) = (Vec::new(), Vec::new());
    let (mut dropped_after, mut flood_total, mut flood_secs) = (0u64, 0u64, 0u64);
    let mut cure_text = String::new();
    let set_phase = |p: u8| {
        legit.phase.store(p, Relaxed);
        w.dns.phase.store(p, Relaxed);
    };
    set_phase(WARMUP);
    for second in 1..=total {
        let due = start + Duration::from_secs(second);
        while Instant::now() < due {
            if finished() {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
        pin_napi(gen_cpu, srv_cpu);
        let now = (
            legit.sent_total.load(Relaxed),
            legit.answered_total.load(Relaxed),
            w.flood_sent.load(Relaxed),
            w.maps.totals()?,
            cpu_busy_ns(srv_cpu),
        );
        let mut lat = std::mem::take(&mut *legit.second.lock().unwrap());
        lat.sort_unstable();
        let p99 = lat.get((lat.len() * 99).div_ceil(100).saturating_sub(1)).map(|us| *us as f64 / 1000.0);
        let since = now.3.since(&prev.3);
        let dropped = stopped(&since);
        let cpu = ((now.4 - prev.4) as f64 / 1e9).min(1.0);
        let flood = now.2 - prev.2;
        println!(
            "{:>3}s  {:>6} {:>8} {:>10}   {:>9}/s {:>12}/s {:>12}/s {:>10.0}%",
            second,
            now.0 - prev.0,
            now.1 - prev.1,
            p99.map_or("-".to_string(), ms_text),
            grouped(flood),
            grouped(since.get(Reason::Passed).packets),
            grouped(dropped),
            cpu * 100.0
        );
        // The second just shown, by the window it fell in.
        if (3..cure_at).contains(&second) {
            cpu_before.push(cpu);
        }
        if (cure_at + give_up + 1..=total).contains(&second) {
            cpu_after.push(cpu);
            dropped_after += dropped;
        }
        if second >= 2 {
            flood_total += flood;
            flood_secs += 1;
        }
        prev = now;
        // Windows: 2 s to settle; requests judged before the cure are those whose
        // every try precedes it; those after it start once it has taken hold (the
        // auto-bans need their ban-after) and are answered or given up before the end.
        match second {
            2 => set_phase(BEFORE),
            s if s == cure_at - give_up => set_phase(OUT),
            s if s == cure_at => {
                let mut done = Vec::new();
                for cmd in args.scenario.cure() {
                    println!("      $ floodgate {}", cmd.join(" "));
                    w.svc.command(w.scene, &cmd)?;
                    done.push(format!("floodgate {}", cmd.join(" ")));
                }
                cure_text = done.join("` and `");
            }
            s if s == cure_at + give_up => set_phase(AFTER),
            s if s == total - give_up => set_phase(OUT),
            _ => {}
        }
    }
    Ok(Some(Verdict {
        before: Side::of(legit, BEFORE, &cpu_before),
        after: Side::of(legit, AFTER, &cpu_after),
        resolver: (args.scenario == Scenario::Reflection).then(|| Side::of(w.dns, AFTER, &cpu_after)),
        dropped: dropped_after,
        flood_fps: flood_total as f64 / flood_secs.max(1) as f64,
        cure: cure_text,
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory as _;

    #[test]
    fn arguments_are_well_formed() {
        super::Args::command().debug_assert();
    }

    #[test]
    fn duration_takes_whole_seconds_from_15s_to_10m() {
        assert_eq!(super::parse_length("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(super::parse_length("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(super::parse_length("10m"), Ok(Duration::from_secs(600)));
        for bad in ["14s", "11m", "20.5s", "20", "soon"] {
            assert!(super::parse_length(bad).is_err(), "{bad}");
        }
    }

    /// Each judged window holds at least a second of requests at the shortest run.
    #[test]
    fn the_cure_leaves_room_on_both_sides() {
        for total in [15, 21, 60, 600] {
            let c = super::cure_at(total);
            let g = super::GIVE_UP.as_secs();
            assert!(c - g > 2 + 1, "{total}: before window");
            assert!(total - g > c + g + 1, "{total}: after window");
        }
    }
}
