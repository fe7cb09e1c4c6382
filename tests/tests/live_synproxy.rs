//! SYN cookies in the driver with real programs: nginx behind `synproxy enable`, curl
//! from the client over IPv4 and IPv6 with and without TCP timestamps, a bounded
//! random-source SYN flood while curl keeps working, a transfer of several MiB (window
//! scaling right), and `disable`/`detach` leaving nothing behind.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    thread,
    time::{Duration, Instant},
};

use floodgate_lab::{Netns, Nginx, build};
use integration_tests::live::{Lab, SRV_V4, SRV_V6, floodgate_bin, packets};
use serde_json::Value;

const BIG: usize = 6 << 20;
/// What a visitor loads during the flood: the handshake is the point there, and the
/// MiB transfers are checked before and after it.
const PAGE: &str = "<html><body>floodgate test page</body></html>\n";

/// Starts nginx in the lab's server namespace serving `www/big` (6 MiB) and
/// `www/index.html` on port 80, and waits until the client reaches it.
fn serve(lab: &Lab) -> Nginx {
    let dir = PathBuf::from(format!("/tmp/fgt-nginx-{}", lab.srv.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let big: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("www/big"), big).unwrap();
    std::fs::write(dir.join("www/index.html"), PAGE).unwrap();
    let server =
        format!("server {{ listen {SRV_V4}:80; listen [{SRV_V6}]:80; root {}/www; }}", dir.display());
    let nginx = Nginx::start(&lab.srv, dir, &server).expect("nginx (scripts/setup.sh installs nginx-light)");
    let deadline = Instant::now() + Duration::from_secs(5);
    while curl(&lab.cli, &format!("http://{SRV_V4}/index.html")).is_none() {
        assert!(Instant::now() < deadline, "nginx did not start");
        thread::sleep(Duration::from_millis(100));
    }
    nginx
}

/// `curl` from `ns`: the HTTP status and bytes received, or why it failed (curl's exit
/// code names the stage: 7 connect, 28 timeout, 56 receive).
fn try_curl(ns: &Netns, url: &str) -> Result<(u16, usize), String> {
    let t0 = Instant::now();
    let out = ns
        .command("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_connect} %{time_total}"])
        .args(["--max-time", "30", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = text.split_whitespace();
    let code = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let size = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    if out.status.success() && code != 0 {
        println!("curl {url}: {} in {:.2?}", text.trim(), t0.elapsed());
        return Ok((code, size));
    }
    Err(format!(
        "curl {url}: exit {:?}, \"{}\" (code size connect total), {}",
        out.status.code(),
        text.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

fn curl(ns: &Netns, url: &str) -> Option<(u16, usize)> {
    try_curl(ns, url).ok()
}

/// A sysctl of `ns`, or "absent" (conntrack's appear once its module is loaded).
fn sysctl(ns: &Netns, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.enter(move || std::fs::read_to_string(path)).unwrap().map_or("absent".into(), |s| s.trim().to_string())
}

/// The listener's own SYN cookies sent, from the server namespace's counters.
fn cookies_sent(ns: &Netns) -> u64 {
    let out = ns.command("nstat").args(["-az", "TcpExtSyncookiesSent"]).output().expect("nstat");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("TcpExtSyncookiesSent"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no TcpExtSyncookiesSent in {text}"))
}

fn nft_tables(ns: &Netns) -> String {
    let out = ns.command("nft").args(["list", "tables"]).output().expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Frames `iface` in `ns` could not hand to its veth peer because the peer's receive
/// ring was full, from the namespace's own /proc/net/dev (sysfs shows the namespace it
/// was mounted in).
fn tx_drops(ns: &Netns, iface: &str) -> u64 {
    let prefix = format!("{iface}:");
    let dev = ns.enter(|| std::fs::read_to_string("/proc/thread-self/net/dev")).unwrap().expect("net/dev");
    let line = dev.lines().map(str::trim_start).find(|l| l.starts_with(&prefix)).expect("iface in net/dev");
    // 8 receive fields, then transmit: bytes packets errs drop ...
    line[prefix.len()..].split_whitespace().nth(11).and_then(|v| v.parse().ok()).expect("tx drop field")
}

/// XDP_TX on a veth reaches the peer only if the peer has an XDP program: floodgate on
/// the client's end too (with empty lists it passes everything). Detached on drop.
struct ClientXdp<'a>(&'a Lab);

impl<'a> ClientXdp<'a> {
    fn attach(lab: &'a Lab) -> Self {
        let out = lab
            .cli
            .command(floodgate_bin().to_str().unwrap())
            .args(["attach", "-i", &lab.cli_if])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ClientXdp(lab)
    }
}

impl Drop for ClientXdp<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .cli
            .command(floodgate_bin().to_str().unwrap())
            .args(["detach", "-i", &self.0.cli_if])
            .output();
    }
}

#[test]
fn syn_cookies_in_the_driver_keep_nginx_reachable_through_a_syn_flood() {
    let lab = Lab::new("syn");
    let _nginx = serve(&lab);
    let _client_xdp = ClientXdp::attach(&lab);
    let urls = [format!("http://{SRV_V4}/big"), format!("http://[{SRV_V6}]/big")];
    let before = (
        sysctl(&lab.srv, "net.ipv4.tcp_syncookies"),
        sysctl(&lab.srv, "net.netfilter.nf_conntrack_tcp_loose"),
    );

    lab.attach("native");
    let out = lab.ok(&["synproxy", "enable", "-i", &lab.srv_if, "--ports", "80"]);
    assert!(out.contains("tcp port(s) 80"), "{out}");
    assert!(nft_tables(&lab.srv).contains("table inet floodgate"));
    assert_eq!(sysctl(&lab.srv, "net.netfilter.nf_conntrack_tcp_loose"), "0");
    let shown: Value =
        serde_json::from_str(&lab.ok(&["synproxy", "show", "-i", &lab.srv_if, "--json"])).unwrap();
    assert_eq!((shown["enabled"].clone(), shown["ports"].clone()), (Value::from(true), Value::from("80")));
    let cookies_before = cookies_sent(&lab.srv);

    // Both families, with the client's timestamps on and off; several MiB each.
    let mut answered = 0;
    for ts in ["1", "0"] {
        lab.cli.sysctl("net.ipv4.tcp_timestamps", ts).unwrap();
        for url in &urls {
            assert_eq!(curl(&lab.cli, url), Some((200, BIG)), "{url} with timestamps {ts}");
            answered += 1;
        }
    }
    lab.cli.sysctl("net.ipv4.tcp_timestamps", "1").unwrap();
    let stats = lab.stats();
    assert!(packets(&stats, "synproxy.syn_answered") >= answered, "{stats}");
    assert!(stats["synproxy"]["synproxy_rule"]["packets"].as_u64().unwrap() >= answered, "{stats}");

    // A bounded random-source SYN flood (203.0.113.0/24, random ports) while curl runs.
    // The sender retries while the server's receive ring is full, so a slow (TCG) guest
    // whose XDP cannot keep up loses the client's own segments to the full ring too, as
    // a saturated NIC would: TCP resends them, and a lost handshake ACK is what
    // floodgate repairs (see the next test). The ring's drops are printed to tell such
    // losses apart from a handshake floodgate got wrong.
    let stop = AtomicBool::new(false);
    let flood_sent = AtomicU64::new(0);
    let drops_before = tx_drops(&lab.cli, &lab.cli_if);
    let started = Instant::now();
    let (ok, flood_time) = thread::scope(|s| {
        let flood = s.spawn(|| {
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let base = lab.spec("203.0.113.1".parse().unwrap(), 80);
            let n = lab
                .sender()
                .send_paced(
                    60_000,
                    20_000,
                    |_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let mut spec = base.clone();
                        spec.src = std::net::IpAddr::from([203, 0, 113, (seed % 254 + 1) as u8]);
                        spec.sport = 1024 + (seed >> 16) as u16 % 60000;
                        spec.tcp_flags = Some(0x02);
                        spec.payload = Vec::new();
                        build(&spec)
                    },
                    || stop.load(Relaxed),
                )
                .unwrap();
            flood_sent.store(n, Relaxed);
            started.elapsed()
        });
        thread::sleep(Duration::from_millis(300));
        let mut ok = 0;
        for i in 0..10 {
            let url = format!("{}/index.html", urls[i % 2].trim_end_matches("/big"));
            match try_curl(&lab.cli, &url) {
                Ok((200, n)) if n == PAGE.len() => ok += 1,
                other => println!("during the flood: {other:?}"),
            }
        }
        stop.store(true, Relaxed);
        (ok, flood.join().unwrap())
    });
    let stats = lab.stats();
    let flood = flood_sent.load(Relaxed);
    println!(
        "flood {flood} SYNs in {flood_time:.1?}; curl {ok}/10 in {:.1?}; ring full {} times; {}",
        started.elapsed(),
        tx_drops(&lab.cli, &lab.cli_if) - drops_before,
        stats["synproxy"]
    );
    assert_eq!(ok, 10, "curl failed during the SYN flood");
    assert!(packets(&stats, "synproxy.syn_answered") >= answered + flood, "{stats}");
    assert_eq!(cookies_sent(&lab.srv), cookies_before, "the listener sent cookies of its own");

    // disable leaves nothing floodgate made.
    lab.ok(&["synproxy", "disable", "-i", &lab.srv_if]);
    assert!(!nft_tables(&lab.srv).contains("floodgate"));
    let after = (
        sysctl(&lab.srv, "net.ipv4.tcp_syncookies"),
        sysctl(&lab.srv, "net.netfilter.nf_conntrack_tcp_loose"),
    );
    assert_eq!(after.0, before.0, "tcp_syncookies restored");
    if before.1 != "absent" {
        assert_eq!(after.1, before.1, "nf_conntrack_tcp_loose restored");
    }
    assert_eq!(curl(&lab.cli, &urls[0]), Some((200, BIG)), "plain connections after disable");
    // detach undoes enable too.
    lab.ok(&["synproxy", "enable", "-i", &lab.srv_if, "--ports", "80,443"]);
    lab.ok(&["detach", "-i", &lab.srv_if]);
    assert!(!nft_tables(&lab.srv).contains("floodgate"), "detach left the table");
    assert_eq!(sysctl(&lab.srv, "net.netfilter.nf_conntrack_tcp_loose"), after.1);
}

/// The client's handshake ACK is lost (here: its client-side nftables drops every
/// connection's second packet). SYNPROXY alone would reject the zero-window probes that
/// follow and every connection would hang; floodgate repairs the first probe of each.
#[test]
fn connections_whose_handshake_ack_is_lost_still_open() {
    let lab = Lab::new("ack");
    let _nginx = serve(&lab);
    let _client_xdp = ClientXdp::attach(&lab);
    lab.attach("native");
    lab.ok(&["synproxy", "enable", "-i", &lab.srv_if, "--ports", "80"]);
    let rules = "table inet fgtest {\n\
                 \tchain out {\n\
                 \t\ttype filter hook output priority filter; policy accept;\n\
                 \t\ttcp dport 80 ct original packets 2 counter drop\n\
                 \t}\n\
                 }\n";
    let mut nft = lab.cli.command("nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn().expect("nft");
    use std::io::Write as _;
    nft.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success(), "client-side nftables rule");

    let urls = [format!("http://{SRV_V4}/index.html"), format!("http://[{SRV_V6}]/index.html")];
    let mut ok = 0;
    for i in 0..6 {
        match try_curl(&lab.cli, &urls[i % 2]) {
            Ok((200, n)) if n == PAGE.len() => ok += 1,
            other => println!("{other:?}"),
        }
    }
    let out = lab.cli.command("nft").args(["list", "table", "inet", "fgtest"]).output().expect("nft");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let stats = lab.stats();
    println!("{table}{}", stats["synproxy"]);
    assert!(table.contains("counter packets 6 "), "every handshake lost its ACK: {table}");
    assert_eq!(ok, 6, "connections after a lost handshake ACK");
    assert!(packets(&stats, "synproxy.ack_repaired") >= 6, "{stats}");
}
