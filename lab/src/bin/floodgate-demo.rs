//! `floodgate-demo` (run by scripts/demo.sh): a flood, a legitimate client, and the
//! filter stopping the flood at runtime, in namespaces this command creates and removes.
//!
//! Scene (no route leaves it):
//!
//! ```text
//!   fgdemo-cli [fgd-cli 198.51.100.2] --\
//!                                        br0 (fgdemo-net) -- [fgd-srv 198.51.100.1] fgdemo-srv
//!   fgdemo-atk [fgd-atk 198.51.100.3] --/                      floodgate attached here
//! ```
//!
//! The attacker sends UDP from spoofed sources in 203.0.113.0/24 and 2001:db8:bad::/48
//! (documentation ranges); the client sends echo requests and times the answers.
//! floodgate runs as the service (`floodgate run`, next to this binary) with incident
//! detection on, so the demo ends with the flood's incident report.

use std::{
    fs,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser as _;
use filter_common::{ListKind, Reason};
use floodgate::{
    human::grouped,
    loader,
    maps::PinDir,
    pins::{self, IfacePins},
    stats::Counters,
    store::ListMaps,
};
use floodgate_lab::{FrameSpec, Netns, RawSender, build, veth_pair};
use nix::sys::signal::{SigHandler, Signal, signal};

/// Run a self-contained demonstration: a server under a spoofed UDP flood, a
/// legitimate client, and floodgate blocking the flood's source range part-way through.
///
/// Creates network namespaces fgdemo-{srv,net,cli,atk} joined by veth pairs and a
/// bridge, with no route out; everything is removed at the end, on Ctrl-C, or on error.
/// Needs root.
#[derive(clap::Parser, Debug)]
#[command(name = "floodgate-demo")]
pub struct Args {
    /// Length of the demonstration, 6s to 10m, in whole seconds (e.g. `20s`, `1m`).
    #[arg(long, default_value = "20s", value_parser = parse_length)]
    pub duration: Duration,
    /// Flood rate in packets per second (bounded: the flood stops by itself).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=2_000_000))]
    pub flood_pps: u64,
}

const SRV_IF: &str = "fgd-srv";
const SRV_V4: &str = "198.51.100.1";
const SRV_V6: &str = "2001:db8:1::1";
const FLOOD_V4: &str = "203.0.113.0/24";
const FLOOD_V6: &str = "2001:db8:bad::/48";
const ECHO_PORT: u16 = 7;
const SINK_PORT: u16 = 9;

fn parse_length(s: &str) -> Result<Duration, String> {
    let d = floodgate::duration::parse_within(s, Duration::from_secs(6), Duration::from_secs(600))
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

/// What the scene's threads count, read once per second by the display.
#[derive(Default)]
struct Tally {
    legit_sent: AtomicU64,
    legit_answered: AtomicU64,
    legit_rtt_us_max: AtomicU64,
    flood_sent: AtomicU64,
    flood_reached: AtomicU64,
}

struct Scene {
    // Deleting a namespace deletes its veth ends; the bridge namespace goes too.
    srv: Netns,
    cli: Netns,
    atk: Netns,
    _net: Netns,
}

fn build_scene() -> anyhow::Result<Scene> {
    let net = Netns::create("fgdemo-net")?;
    let srv = Netns::create("fgdemo-srv")?;
    let cli = Netns::create("fgdemo-cli")?;
    let atk = Netns::create("fgdemo-atk")?;
    net.ip(&["link", "add", "br0", "type", "bridge"])?;
    net.ip(&["link", "set", "br0", "up"])?;
    let v4 = |host: u8| format!("198.51.100.{host}/24");
    let v6 = |host: u8| format!("2001:db8:1::{host}/64");
    for (ns, dev, peer, host) in
        [(&srv, SRV_IF, "br-srv", 1u8), (&cli, "fgd-cli", "br-cli", 2), (&atk, "fgd-atk", "br-atk", 3)]
    {
        veth_pair((ns, dev, &[&v4(host), &v6(host)]), (&net, peer, &[]))?;
        net.ip(&["link", "set", peer, "master", "br0"])?;
    }
    Ok(Scene { srv, cli, atk, _net: net })
}

fn run(args: Args) -> anyhow::Result<()> {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { signal(sig, SigHandler::Handler(on_signal)) }.context("installing a signal handler")?;
    }
    // Left by a demo that was killed: its namespace is gone (the link lost its
    // interface), its pins are not.
    for stale in pins::all()?.iter().filter(|p| p.iface == SRV_IF && pins::link_ifindex(&p.dir) == Some(0)) {
        loader::detach(stale).context("removing a previous demo's pins")?;
    }
    println!("floodgate demo: building the scene (namespaces fgdemo-srv, -net, -cli, -atk)");
    let scene = build_scene().context("building the demo's namespaces")?;
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
    fn start(scene: &Scene, args: &Args, work: &Path) -> anyhow::Result<Service> {
        let bin = std::env::current_exe()?.with_file_name("floodgate");
        if !bin.exists() {
            bail!(
                "{} is missing: build it next to floodgate-demo (cargo build --release --bin floodgate; scripts/demo.sh does)",
                bin.display()
            );
        }
        let (state, log) = (work.join("state"), work.join("run.log"));
        // An incident opens at half the flood's rate held for 1 s, closes 2 s after it.
        let pps = (args.flood_pps / 2).max(100).to_string();
        let cmd = [
            "run",
            "-i",
            SRV_IF,
            "--detach-on-exit",
            "--incident-pps",
            &pps,
            "--incident-hold",
            "1s",
            "--incident-quiet",
            "2s",
            "--sample-every",
            "16",
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

fn play_with_service(scene: &Scene, args: &Args, work: &Path) -> anyhow::Result<()> {
    let svc = Service::start(scene, args, work)?;
    let pins = scene.srv.enter(|| IfacePins::new(SRV_IF))??;
    let maps = Counters::open(&mut PinDir(&pins.dir))?;
    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));
    let finished = || done.load(Relaxed) || stopping();

    // Server: echo on 7 for the client, a sink on 9 that counts what the flood delivers.
    let srv_sockets = scene.srv.enter(|| -> std::io::Result<_> {
        let echo = UdpSocket::bind((SRV_V4, ECHO_PORT))?;
        let sink4 = UdpSocket::bind((SRV_V4, SINK_PORT))?;
        let sink6 = UdpSocket::bind((SRV_V6.parse::<IpAddr>().unwrap(), SINK_PORT))?;
        Ok((echo, sink4, sink6))
    })??;
    let srv_mac = scene.srv.mac(SRV_IF)?;
    let atk_mac = scene.atk.mac("fgd-atk")?;
    let client = scene.cli.enter(|| UdpSocket::bind("198.51.100.2:0"))??;
    let sender = scene.atk.enter(|| RawSender::open("fgd-atk"))??;

    let total = args.duration;
    let block_at = args.duration.as_secs() / 3;
    thread::scope(|s| -> anyhow::Result<()> {
        let (echo, sink4, sink6) = srv_sockets;
        s.spawn(|| serve_echo(echo, &finished));
        for sink in [sink4, sink6] {
            let tally = &tally;
            s.spawn(move || count_sink(sink, tally, &finished));
        }
        s.spawn(|| legit_client(client, &tally, &finished));
        let flood = s.spawn(|| flood(&sender, srv_mac, atk_mac, args, &tally, &finished));

        let result = display(&maps, &pins, &tally, total, block_at, &finished);
        done.store(true, Relaxed);
        flood.join().map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
        result
    })?;
    if stopping() {
        return Ok(());
    }
    let dir = svc.report().context("writing the flood's incident report")?;
    println!(
        "\nthe flood's incident report (for the hosting provider): {}/report.md\n  \
         with report.html, the timeline chart (timeline.png, timeline.svg) and the sampled frames (a pcap)",
        dir.display()
    );
    Ok(())
}

fn display(
    maps: &Counters,
    pins: &IfacePins,
    tally: &Tally,
    total: Duration,
    block_at: u64,
    finished: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    println!("the attacker floods UDP from {FLOOD_V4} and {FLOOD_V6}; the client sends 50 echo requests/s\n");
    println!(
        "{:>4}  {:>12} {:>10} {:>9}   {:>12} {:>16} {:>16}",
        "t", "legit sent", "answered", "max rtt", "flood sent", "flood reached", "dropped in XDP"
    );
    let start = Instant::now();
    let mut prev = (0u64, 0u64, 0u64, 0u64, maps.totals()?);
    let mut blocked = false;
    let (mut legit_sent, mut legit_ok, mut flood_reached_after) = (0u64, 0u64, 0u64);
    for second in 1..=total.as_secs() {
        let due = start + Duration::from_secs(second);
        while Instant::now() < due {
            if finished() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        let now = (
            tally.legit_sent.load(Relaxed),
            tally.legit_answered.load(Relaxed),
            tally.flood_sent.load(Relaxed),
            tally.flood_reached.load(Relaxed),
            maps.totals()?,
        );
        let rtt = tally.legit_rtt_us_max.swap(0, Relaxed);
        let dropped = now.4.since(&prev.4).get(Reason::Blocklist).packets;
        println!(
            "{:>3}s  {:>12} {:>10} {:>7.1}ms   {:>10}/s {:>14}/s {:>14}/s",
            second,
            now.0 - prev.0,
            now.1 - prev.1,
            rtt as f64 / 1000.0,
            grouped(now.2 - prev.2),
            grouped(now.3 - prev.3),
            grouped(dropped)
        );
        if blocked {
            flood_reached_after += now.3 - prev.3;
        }
        legit_sent += now.0 - prev.0;
        legit_ok += now.1 - prev.1;
        prev = now;
        if second == block_at {
            println!("      $ floodgate blocklist add {FLOOD_V4} {FLOOD_V6}");
            let nets = [FLOOD_V4.parse()?, FLOOD_V6.parse()?];
            let _lock = pins.lock()?;
            let mut writable = ListMaps::open(&mut PinDir(&pins.dir))?;
            writable.add(ListKind::Block, &nets, None, &mut |_, _| {})?;
            blocked = true;
            // Count from the moment the block is in force, not from before the command.
            prev.3 = tally.flood_reached.load(Relaxed);
        }
    }
    let t = maps.totals()?;
    println!(
        "\nlegitimate requests answered: {legit_ok} of {legit_sent}; flood packets dropped in the driver: {}; \
         flood packets that reached the server after the block: {flood_reached_after}",
        grouped(t.get(Reason::Blocklist).packets)
    );
    if blocked && flood_reached_after > 0 && !finished() {
        // The block is in place before the next second starts; a few packets in
        // flight at that moment may still arrive, so only a steady stream is an error.
        let after = total.as_secs() - block_at;
        if flood_reached_after > after * 10 {
            bail!("the flood kept reaching the server after the block ({flood_reached_after} packets)");
        }
    }
    Ok(())
}

fn serve_echo(sock: UdpSocket, finished: &dyn Fn() -> bool) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 2048];
    while !finished() {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

fn count_sink(sock: UdpSocket, tally: &Tally, finished: &dyn Fn() -> bool) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 2048];
    while !finished() {
        if sock.recv(&mut buf).is_ok() {
            tally.flood_reached.fetch_add(1, Relaxed);
        }
    }
}

fn legit_client(sock: UdpSocket, tally: &Tally, finished: &dyn Fn() -> bool) {
    let server = SocketAddr::new(SRV_V4.parse().unwrap(), ECHO_PORT);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 64];
    let mut seq = 0u64;
    let start = Instant::now();
    while !finished() {
        seq += 1;
        let sent_at = Instant::now();
        if sock.send_to(&seq.to_be_bytes(), server).is_ok() {
            tally.legit_sent.fetch_add(1, Relaxed);
            // Wait for this request's answer; late answers to older ones are skipped.
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                if n == 8 && buf[..8] == seq.to_be_bytes() {
                    tally.legit_answered.fetch_add(1, Relaxed);
                    tally.legit_rtt_us_max.fetch_max(sent_at.elapsed().as_micros() as u64, Relaxed);
                    break;
                }
            }
        }
        let due = start + Duration::from_millis(20 * seq);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
}

fn flood(
    sender: &RawSender,
    srv_mac: [u8; 6],
    atk_mac: [u8; 6],
    args: &Args,
    tally: &Tally,
    finished: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    // 254 IPv4 and 254 IPv6 spoofed sources, built once and cycled.
    let mut frames = Vec::with_capacity(508);
    for host in 1..=254u8 {
        for (src, dst) in [(format!("203.0.113.{host}"), SRV_V4), (format!("2001:db8:bad::{host:x}"), SRV_V6)]
        {
            let mut spec = FrameSpec::udp(src.parse()?, dst.parse()?, SINK_PORT);
            spec.src_mac = atk_mac;
            spec.dst_mac = srv_mac;
            spec.payload = vec![0x5a; 32];
            frames.push(build(&spec));
        }
    }
    let count = args.flood_pps * args.duration.as_secs();
    let mut i = 0usize;
    sender
        .send_paced(
            count,
            args.flood_pps,
            |_| {
                i = (i + 1) % frames.len();
                tally.flood_sent.fetch_add(1, Relaxed);
                frames[i].clone()
            },
            finished,
        )
        .context("sending the flood")?;
    Ok(())
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
    fn duration_takes_whole_seconds_from_6s_to_10m() {
        assert_eq!(super::parse_length("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(super::parse_length("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(super::parse_length("10m"), Ok(Duration::from_secs(600)));
        for bad in ["5s", "11m", "20.5s", "20", "soon"] {
            assert!(super::parse_length(bad).is_err(), "{bad}");
        }
    }
}
