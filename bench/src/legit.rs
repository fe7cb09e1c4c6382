//! Part 4: legitimate HTTP under flood. nginx runs in the server namespace; a client
//! namespace (its own veth into the server) sends HTTP/1.0 requests, one at a time,
//! while the attacker floods the server's other veth with a random-source SYN flood
//! to port 80 (198.18.0.0/15) and a UDP flood from blocklisted sources (random in
//! 2001:db8::/32), alternating in chunks from one generator on CPU0. The filter on the
//! flooded veth: floodgate (blocklist) or nftables (the same set), or none. The SYN
//! flood is no list's business: it reaches the stack (SYN cookies) in every case.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::programs::{XdpMode, xdp::XdpLinkId};
use filter_common::{ListKind, Reason};
use floodgate_lab::{Netns, Nginx, veth_pair};
use serde_json::json;

use crate::{
    live::{FLOOD_NET, Lab, NFT_TABLE, SRV_IF},
    obj::{FLOODGATE, FLOOR, Obj, net, syn},
    report::{Section, count, median},
    sys::{run_in, wait_for},
};

const SRV_ADDR: &str = "192.0.2.1";
const CLI_ADDR: &str = "192.0.2.2";
const V6_FLOOD: &str = "2001:db8::/32";

/// One GET; the latency when a 200 came back within the timeout.
fn get(addr: SocketAddr) -> Option<Duration> {
    let t = Instant::now();
    let timeout = Duration::from_secs(1);
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout.saturating_sub(t.elapsed()).max(Duration::from_millis(1)))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n").ok()?;
    let mut buf = Vec::with_capacity(512);
    s.read_to_end(&mut buf).ok()?;
    let took = t.elapsed();
    (buf.starts_with(b"HTTP/1.1 200") && took <= timeout).then_some(took)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Filter {
    Floodgate,
    Nft,
    None,
    /// No flood at all: the baseline.
    Calm,
    /// Part 5: SYNs answered with cookies by floodgate in XDP (SYNPROXY completes).
    SynProxy,
    /// Part 5: the flood's SYNs reach the stack; the kernel's own SYN cookies.
    KernelCookies,
    /// Part 5: nftables' own synproxy (notrack SYNs, SYNPROXY answers them).
    NftSynproxy,
}

impl Filter {
    fn name(self) -> &'static str {
        match self {
            Filter::Floodgate => "floodgate (native, blocklist)",
            Filter::Nft => "nftables (netdev ingress, set)",
            Filter::None => "no filter",
            Filter::Calm => "no flood (baseline)",
            Filter::SynProxy => "floodgate synproxy (cookies in XDP)",
            Filter::KernelCookies => "kernel SYN cookies (no filter)",
            Filter::NftSynproxy => "nftables synproxy",
        }
    }
}

struct Outcome {
    sent: usize,
    ok: Vec<f64>,
    flood_pps: f64,
    dropped_pps: f64,
}

/// One case's rounds together: requests, latencies of the successful ones, medians
/// of the flood rate and of what the filter dropped (or answered) per second.
struct Summary {
    sent: usize,
    ok: Vec<f64>,
    rate: f64,
    p50: f64,
    p99: f64,
    flood: f64,
    handled: f64,
}

impl Summary {
    fn of(v: &[Outcome]) -> Self {
        let sent: usize = v.iter().map(|o| o.sent).sum();
        let ok: Vec<f64> = v.iter().flat_map(|o| o.ok.iter().copied()).collect();
        let flood = median(&v.iter().map(|o| o.flood_pps).collect::<Vec<_>>());
        let handled = median(&v.iter().map(|o| o.dropped_pps).collect::<Vec<_>>());
        let rate = ok.len() as f64 / sent.max(1) as f64;
        let (p50, p99) = (pct(&ok, 0.5), pct(&ok, 0.99));
        Summary { sent, ok, rate, p50, p99, flood, handled }
    }
}

/// Every case of `filters`, `rounds` times, interleaved; logged as `bench: TAG ...`.
fn rounds_of(
    lab: &Lab,
    cli: &Netns,
    obj: &mut Obj,
    filters: &[Filter],
    rounds: usize,
    secs: f64,
    tag: &str,
) -> anyhow::Result<Vec<Vec<Outcome>>> {
    let mut out: Vec<Vec<Outcome>> = filters.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, f) in filters.iter().enumerate() {
            let o = one(lab, cli, obj, *f, secs).with_context(|| f.name())?;
            eprintln!(
                "bench: {tag} {}: {}/{} ok, p50 {:.2} ms, p99 {:.2} ms, flood {:.2} Mpps",
                f.name(),
                o.ok.len(),
                o.sent,
                pct(&o.ok, 0.5),
                pct(&o.ok, 0.99),
                o.flood_pps / 1e6
            );
            out[i].push(o);
        }
    }
    Ok(out)
}

fn nft_script() -> String {
    format!(
        "table netdev {NFT_TABLE} {{\n  set b4 {{ type ipv4_addr; flags interval; elements = {{ 203.0.113.0/24 }} }}\n  \
         set b6 {{ type ipv6_addr; flags interval; elements = {{ {V6_FLOOD} }} }}\n  chain ingress {{ type filter hook \
         ingress device \"{SRV_IF}\" priority -500; policy accept; ip saddr @b4 counter drop; ip6 saddr @b6 counter \
         drop; }}\n}}\n"
    )
}

/// nftables' own SYN proxy for port 80, the recipe from nft(8).
fn nft_synproxy_script(wscale: u8) -> String {
    format!(
        "table inet {NFT_TABLE} {{\n  chain pre {{ type filter hook prerouting priority raw; policy accept; \
         tcp dport 80 tcp flags syn notrack; }}\n  chain in {{ type filter hook input priority filter; policy \
         accept; tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale {wscale} timestamp sack-perm; \
         ct state invalid drop; }}\n}}\n"
    )
}

fn one(lab: &Lab, cli: &Netns, obj: &mut Obj, f: Filter, secs: f64) -> anyhow::Result<Outcome> {
    let link: XdpLinkId = match f {
        Filter::Floodgate => lab.attach(obj, FLOODGATE, XdpMode::Driver)?,
        Filter::SynProxy => {
            // Inside the server namespace: nft and the sysctls are per namespace.
            let maps = &mut obj.maps;
            lab.srv.enter(|| maps.synproxy.enable_synproxy(&[(80, 80)], 0))??;
            lab.attach(obj, FLOODGATE, XdpMode::Driver)?
        }
        Filter::NftSynproxy => {
            let wscale = lab.srv.enter(floodgate::synproxy::listener_wscale)??;
            let path = std::env::temp_dir().join("fgb-legit-synproxy.nft");
            std::fs::write(&path, nft_synproxy_script(wscale))?;
            run_in(&lab.srv.name, "nft", &["-f", path.to_str().unwrap()])?;
            // SYNPROXY needs ACKs of unknown connections marked invalid (the recipe's
            // companion setting); restored after the case.
            lab.srv.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0")?;
            lab.attach(obj, FLOOR, XdpMode::Driver)?
        }
        Filter::KernelCookies => lab.attach(obj, FLOOR, XdpMode::Driver)?,
        Filter::Nft => {
            let path = std::env::temp_dir().join("fgb-legit.nft");
            std::fs::write(&path, nft_script())?;
            run_in(&lab.srv.name, "nft", &["-f", path.to_str().unwrap()])?;
            lab.attach(obj, FLOOR, XdpMode::Driver)?
        }
        Filter::None | Filter::Calm => lab.attach(obj, FLOOR, XdpMode::Driver)?,
    };
    let result = (|| -> anyhow::Result<Outcome> {
        std::thread::sleep(Duration::from_millis(50));
        let synf = syn("198.18.0.1", lab.srv_mac, lab.atk_mac, 80);
        let udpf = lab.udp("2001:db8::1", 9);
        let before = obj.maps.counters.totals()?.get(Reason::Blocklist).packets;
        let before_syn = obj.maps.counters.totals()?.get(Reason::SynProxy).packets;
        let nft_before = if f == Filter::Nft { nft_drops(&lab.srv.name) } else { 0 };
        let stop = AtomicBool::new(false);
        let sent_frames = AtomicU64::new(0);
        let addr: SocketAddr = format!("{SRV_ADDR}:80").parse().unwrap();
        let t0 = Instant::now();
        let (stop_r, sent_r, gen_obj) = (&stop, &sent_frames, &mut *obj);
        let (synf_r, udpf_r) = (&synf, &udpf);
        let (sent, ok) = std::thread::scope(|s| -> anyhow::Result<(usize, Vec<f64>)> {
            let flood = s.spawn(move || -> anyhow::Result<()> {
                if f == Filter::Calm {
                    return Ok(());
                }
                // Chunks keep the flood bounded by `stop` (and by time: at most secs + 2 s).
                let end = Instant::now() + Duration::from_secs_f64(secs + 2.0);
                let mut i = 0u64;
                while !stop_r.load(Relaxed) && Instant::now() < end {
                    let syn_only =
                        matches!(f, Filter::SynProxy | Filter::KernelCookies | Filter::NftSynproxy);
                    let frame = if syn_only || i.is_multiple_of(2) { synf_r } else { udpf_r };
                    // floodgate's SYN cookies rewrite the SYN in place into their answer:
                    // without the template the recycled pages would carry that.
                    gen_obj.set_template(Some(frame))?;
                    lab.flood(gen_obj, frame, 300_000)?;
                    sent_r.fetch_add(300_000, Relaxed);
                    i += 1;
                }
                gen_obj.set_template(None)
            });
            let client = cli.enter(|| {
                let (mut sent, mut ok) = (0, Vec::new());
                let end = Instant::now() + Duration::from_secs_f64(secs);
                while Instant::now() < end {
                    sent += 1;
                    if let Some(d) = get(addr) {
                        ok.push(d.as_secs_f64() * 1e3);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                (sent, ok)
            });
            stop.store(true, Relaxed);
            flood.join().map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
            client
        })?;
        let took = t0.elapsed().as_secs_f64();
        let dropped = match f {
            Filter::Floodgate => obj.maps.counters.totals()?.get(Reason::Blocklist).packets - before,
            Filter::SynProxy => obj.maps.counters.totals()?.get(Reason::SynProxy).packets - before_syn,
            Filter::Nft => nft_drops(&lab.srv.name) - nft_before,
            _ => 0,
        };
        Ok(Outcome {
            sent,
            ok,
            flood_pps: sent_frames.load(Relaxed) as f64 / took,
            dropped_pps: dropped as f64 / took,
        })
    })();
    let prog = if matches!(f, Filter::Floodgate | Filter::SynProxy) { FLOODGATE } else { FLOOR };
    obj.prog_mut(prog)?.detach(link)?;
    if f == Filter::Nft {
        run_in(&lab.srv.name, "nft", &["delete", "table", "netdev", NFT_TABLE])?;
    }
    if f == Filter::NftSynproxy {
        run_in(&lab.srv.name, "nft", &["delete", "table", "inet", NFT_TABLE])?;
        lab.srv.sysctl("net.netfilter.nf_conntrack_tcp_loose", "1")?;
    }
    if f == Filter::SynProxy {
        let maps = &mut obj.maps;
        lab.srv.enter(|| maps.synproxy.disable_synproxy())??;
    }
    result
}

fn nft_drops(ns: &str) -> u64 {
    run_in(ns, "nft", &["list", "chain", "netdev", NFT_TABLE, "ingress"])
        .unwrap_or_default()
        .split("counter packets ")
        .skip(1)
        .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Parts 4 and 5 (those of them in `parts`): one set-up, two tables.
pub fn run(quick: bool, parts: &[u8]) -> anyhow::Result<Vec<Section>> {
    let (rounds, secs) = if quick { (1, 3.0) } else { (3, 6.0) };
    let lab = Lab::new()?;
    let cli = Netns::create("fgb-cli")?;
    veth_pair(
        (&lab.srv, "fgbk", &[&format!("{SRV_ADDR}/24")]),
        (&cli, "fgbc", &[&format!("{CLI_ADDR}/24")]),
    )?;
    // SYN-ACKs to the flood's sources go back to the attacker namespace (one
    // neighbour), as they would go out to the internet.
    lab.srv.ip(&["route", "add", FLOOD_NET, "via", "198.51.100.2"])?;
    let server = "server { listen 80 backlog=4096; location / { return 200 \"ok\\n\"; } }";
    let _nginx = Nginx::start(&lab.srv, std::env::temp_dir().join("fgb-nginx"), server)
        .context("starting nginx (scripts/setup.sh installs it)")?;
    let addr: SocketAddr = format!("{SRV_ADDR}:80").parse().unwrap();
    if !wait_for(Duration::from_secs(5), || cli.enter(|| get(addr).is_some()).unwrap_or(false)) {
        bail!("nginx did not answer in the server namespace");
    }
    let mut obj = Obj::load(16_384)?;
    obj.add(ListKind::Block, &[net("203.0.113.0/24"), net(V6_FLOOD)])?;
    obj.set_mask(u32::MAX)?;
    let mut sections = Vec::new();
    if parts.contains(&4) {
        let filters = [Filter::Calm, Filter::Floodgate, Filter::Nft, Filter::None];
        let out = rounds_of(&lab, &cli, &mut obj, &filters, rounds, secs, "legit")?;
        let mut sec = Section::new(
            "4. Legitimate HTTP under a SYN flood plus a blocklisted UDP flood",
            &["filter", "requests", "success", "p50 ms", "p99 ms", "flood frames/s", "dropped by filter/s"],
        );
        let mut j = Vec::new();
        for (f, v) in filters.iter().zip(&out) {
            let Summary { sent, rate, p50, p99, flood, handled: dropped, .. } = Summary::of(v);
            sec.rows.push(vec![
                f.name().into(),
                sent.to_string(),
                format!("{:.1}%", rate * 100.0),
                format!("{p50:.2}"),
                format!("{p99:.2}"),
                if *f == Filter::Calm { "-".into() } else { count(flood) },
                if matches!(f, Filter::Floodgate | Filter::Nft) { count(dropped) } else { "-".into() },
            ]);
            j.push(
                json!({"filter": f.name(), "requests": sent, "success_rate": rate, "p50_ms": p50, "p99_ms": p99,
                "flood_pps": flood, "dropped_pps": dropped}),
            );
        }
        sec.notes.push(format!(
            "{rounds} round(s) of {secs:.0} s per case, cases interleaved. The client sends one request at a time with \
             5 ms pauses; a request succeeds when a 200 arrives within 1 s (a lost SYN waits 1 s to be resent, so it \
             fails). The generator alternates 300,000-frame chunks of both floods on CPU0."
        ));
        sec.json = json!({"rounds": rounds, "seconds_per_case": secs, "filters": j});
        sections.push(sec);
    }
    if parts.contains(&5) {
        sections.push(table(
            "5. Legitimate HTTP under a random-source SYN flood: SYN cookies in XDP, in the kernel, in nftables",
            &[Filter::Calm, Filter::SynProxy, Filter::KernelCookies, Filter::NftSynproxy],
            &lab,
            &cli,
            &mut obj,
            rounds,
            secs,
        )?);
    }
    Ok(sections)
}

/// Part 5: the same client against a SYN-only flood, per way of answering it.
fn table(
    title: &str,
    filters: &[Filter],
    lab: &Lab,
    cli: &Netns,
    obj: &mut Obj,
    rounds: usize,
    secs: f64,
) -> anyhow::Result<Section> {
    let out = rounds_of(lab, cli, obj, filters, rounds, secs, "syn")?;
    let mut sec = Section::new(
        title,
        &[
            "case",
            "requests",
            "success",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "SYN flood frames/s",
            "answered in XDP/s",
        ],
    );
    let mut j = Vec::new();
    for (f, v) in filters.iter().zip(&out) {
        let Summary { sent, ok, rate, p50, p99, flood, handled: answered } = Summary::of(v);
        let rps = ok.len() as f64 / (secs * rounds as f64);
        sec.rows.push(vec![
            f.name().into(),
            sent.to_string(),
            format!("{:.1}%", rate * 100.0),
            format!("{rps:.0}"),
            format!("{p50:.2}"),
            format!("{p99:.2}"),
            if *f == Filter::Calm { "-".into() } else { count(flood) },
            if *f == Filter::SynProxy { count(answered) } else { "-".into() },
        ]);
        j.push(json!({"case": f.name(), "requests": sent, "success_rate": rate, "requests_per_s": rps,
            "p50_ms": p50, "p99_ms": p99, "flood_pps": flood, "answered_pps": answered}));
    }
    sec.notes.push(format!(
        "{rounds} round(s) of {secs:.0} s per case, interleaved; the flood is SYNs to port 80 from random sources \
         in 198.18.0.0/15 on the server's veth, the client connects over its own veth (so what differs is the CPU \
         the flood costs the server). floodgate answers SYNs in XDP and netfilter's SYNPROXY completes the \
         handshakes; the kernel case leaves SYNs to the listener's own cookies; nftables uses its synproxy recipe."
    ));
    sec.json = json!({"rounds": rounds, "seconds_per_case": secs, "cases": j});
    Ok(sec)
}
