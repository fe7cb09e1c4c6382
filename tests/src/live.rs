//! Live scenes: two namespaces joined by a veth pair, the `floodgate` binary run in the
//! server namespace with `nsenter --net` (as operators do), real frames sent from the
//! client namespace, and UDP sinks counting what reached the server's stack.

use std::{
    collections::HashMap,
    net::{IpAddr, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    process::Output,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use floodgate::maps::{FilterMaps, PinDir};
use floodgate_lab::{FrameSpec, Netns, RawSender, build, veth_pair_queues};
use serde_json::Value;

pub const SRV_V4: &str = "198.51.100.1";
pub const SRV_V6: &str = "2001:db8:1::1";

/// The `floodgate` binary under test: `FLOODGATE_BIN`, or the one cargo built next to
/// this test executable (target/<profile>/floodgate).
pub fn floodgate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOODGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("floodgate");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo xtask integration-test local`",
        bin.display()
    );
    bin
}

/// A finished `floodgate` run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Server namespace `fgt-TAG-s` (interface `TAGs`) and client namespace `fgt-TAG-c`
/// (interface `TAGc`), joined by a veth pair. Dropping it detaches floodgate if it is
/// still attached and deletes both namespaces.
pub struct Lab {
    pub srv: Netns,
    pub cli: Netns,
    pub srv_if: String,
    pub cli_if: String,
    pub srv_mac: [u8; 6],
    pub cli_mac: [u8; 6],
    /// Extra environment for every floodgate run (e.g. FLOODGATE_PIN_ROOT).
    pub env: Vec<(String, String)>,
}

impl Lab {
    /// `tag`: a few characters unique to the test, so tests never share names.
    pub fn new(tag: &str) -> Self {
        Self::with_queues(tag, 1)
    }

    /// As [`Lab::new`] with `queues` queues per veth end (traffic sent from several
    /// CPUs is then filtered on several CPUs).
    pub fn with_queues(tag: &str, queues: u32) -> Self {
        assert!(tag.len() <= 8, "tag too long for interface names");
        let srv = Netns::create(&format!("fgt-{tag}-s")).expect("server namespace");
        let cli = Netns::create(&format!("fgt-{tag}-c")).expect("client namespace");
        let (srv_if, cli_if) = (format!("{tag}s"), format!("{tag}c"));
        veth_pair_queues(
            (&srv, &srv_if, &[&format!("{SRV_V4}/24"), &format!("{SRV_V6}/64")]),
            (&cli, &cli_if, &["198.51.100.2/24", "2001:db8:1::2/64"]),
            queues,
        )
        .expect("veth pair");
        if queues > 1 {
            // XPS: frames sent from CPU n leave by queue n, so the server's XDP program
            // runs on the sender's CPU (veth schedules the peer queue's NAPI there).
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            for q in 0..queues as usize {
                let mask = 1u64 << (q % cpus);
                let path = format!("/sys/class/net/{cli_if}/queues/tx-{q}/xps_cpus");
                // `ip netns exec` mounts the namespace's own /sys for the command.
                let cmd = format!("echo {mask:x} > {path}");
                floodgate_lab::ip(&["netns", "exec", &cli.name, "sh", "-c", &cmd]).expect("xps");
            }
        }
        let srv_mac = srv.mac(&srv_if).expect("mac");
        let cli_mac = cli.mac(&cli_if).expect("mac");
        let lab = Lab { srv, cli, srv_if, cli_if, srv_mac, cli_mac, env: Vec::new() };
        // Leftovers of a killed earlier run of this test would make attach fail.
        if lab.pins_dir().exists() {
            lab.floodgate(&["detach", "-i", &lab.srv_if.clone()]);
        }
        lab
    }

    pub fn pins_dir(&self) -> PathBuf {
        let root = self
            .env
            .iter()
            .find(|(k, _)| k == floodgate::pins::PIN_ROOT_ENV)
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(floodgate::pins::root);
        floodgate::pins::dir_in(&root, &self.srv.path(), &self.srv_if).expect("server namespace")
    }

    /// Runs `floodgate ARGS` in the server namespace.
    pub fn floodgate(&self, args: &[&str]) -> Run {
        let mut c = self.srv.command(floodgate_bin().to_str().unwrap());
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.output().expect("running floodgate").into()
    }

    /// Runs `floodgate ARGS`, which must succeed; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.floodgate(args);
        assert_eq!(r.code, Some(0), "floodgate {args:?} failed: {}", r.stderr);
        r.stdout
    }

    /// Runs `floodgate ARGS`, which must fail with one error line; returns it.
    #[track_caller]
    pub fn err(&self, args: &[&str]) -> String {
        let r = self.floodgate(args);
        assert_eq!(r.code, Some(1), "floodgate {args:?} should fail: {r:?}");
        assert!(r.stderr.starts_with("floodgate: error: "), "error line: {:?}", r.stderr);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "one line: {:?}", r.stderr);
        r.stderr
    }

    pub fn attach(&self, mode: &str) -> String {
        self.ok(&["attach", "-i", &self.srv_if, "--mode", mode])
    }

    pub fn stats(&self) -> Value {
        serde_json::from_str(&self.ok(&["stats", "-i", &self.srv_if, "--json"])).expect("stats JSON")
    }

    pub fn list(&self, which: &str) -> Vec<String> {
        let out = self.ok(&[which, "list", "-i", &self.srv_if, "--json"]);
        serde_json::from_str(&out).expect("list JSON")
    }

    /// A UDP frame from `src` to the server (on its address family) at `port`.
    pub fn frame(&self, src: &str, port: u16) -> Vec<u8> {
        build(&self.spec(src.parse().expect("address"), port))
    }

    /// A UDP frame description from `src` to the server at `port`, with the lab's MACs,
    /// to adjust (source port, TCP flags) before `build`.
    pub fn spec(&self, src: IpAddr, port: u16) -> FrameSpec {
        let dst: IpAddr = if src.is_ipv4() { SRV_V4.parse().unwrap() } else { SRV_V6.parse().unwrap() };
        let mut spec = FrameSpec::udp(src, dst, port);
        spec.src_mac = self.cli_mac;
        spec.dst_mac = self.srv_mac;
        spec
    }

    /// A raw sender on the client's end of the veth pair.
    pub fn sender(&self) -> RawSender {
        let iface = self.cli_if.clone();
        self.cli.enter(move || RawSender::open(&iface)).expect("enter").expect("raw socket")
    }

    /// Sends each frame `count` times, interleaved, at about `pps` frames per second.
    pub fn send(&self, frames: &[Vec<u8>], count: u64, pps: u64) {
        let s = self.sender();
        let n = frames.len() as u64;
        let sent =
            s.send_paced(count * n, pps, |i| frames[(i % n) as usize].clone(), || false).expect("send");
        assert_eq!(sent, count * n);
    }

    /// UDP sockets on `port` (IPv4 and IPv6) in the server namespace, counting arrivals
    /// per source address.
    pub fn sink(&self, port: u16) -> Sink {
        let (s4, s6) = self
            .srv
            .enter(move || -> std::io::Result<(UdpSocket, UdpSocket)> {
                Ok((
                    UdpSocket::bind((SRV_V4, port))?,
                    UdpSocket::bind((SRV_V6.parse::<IpAddr>().unwrap(), port))?,
                ))
            })
            .expect("enter")
            .expect("bind sink");
        Sink::start(vec![s4, s6])
    }

    /// The attached interface's maps, opened from its pins.
    pub fn maps(&self) -> FilterMaps {
        FilterMaps::open(&mut PinDir(&self.pins_dir())).expect("pinned maps")
    }

    /// Whether the server's interface has an XDP program attached.
    pub fn has_xdp(&self) -> bool {
        let out = self.srv.ip(&["-d", "link", "show", "dev", &self.srv_if]).expect("ip link");
        out.contains("prog/xdp")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.pins_dir().exists() {
            let _ = self.floodgate(&["detach", "-i", &self.srv_if.clone()]);
        }
    }
}

/// Counts UDP datagrams per source address until dropped.
pub struct Sink {
    counts: Arc<Mutex<HashMap<IpAddr, u64>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Sink {
    fn start(sockets: Vec<UdpSocket>) -> Self {
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = sockets
            .into_iter()
            .map(|s| {
                // Room for bursts, so the sink never drops what the filter passed.
                let size: libc::c_int = 32 << 20;
                // SAFETY: setsockopt with a valid int on our socket.
                unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUFFORCE,
                        &size as *const _ as *const _,
                        4,
                    );
                }
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let (counts, stop) = (counts.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Relaxed) {
                        if let Ok((_, from)) = s.recv_from(&mut buf) {
                            *counts.lock().unwrap().entry(from.ip()).or_insert(0) += 1;
                        }
                    }
                })
            })
            .collect();
        Sink { counts, stop, threads }
    }

    pub fn count(&self, src: &str) -> u64 {
        let ip: IpAddr = src.parse().unwrap();
        self.counts.lock().unwrap().get(&ip).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.counts.lock().unwrap().values().sum()
    }

    /// Waits until nothing new has arrived for 300 ms (at most 10 s).
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.total();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.total();
            if now == last {
                return;
            }
            last = now;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads `{packets, bytes}` at a dotted path of `stats --json`.
pub fn packets(stats: &Value, path: &str) -> u64 {
    let mut v = stats;
    for part in path.split('.') {
        v = &v[part];
    }
    v["packets"].as_u64().unwrap_or_else(|| panic!("no {path}.packets in {stats}"))
}

pub use floodgate_lab::pin_to_cpu;
