//! Differential fuzzing of the data path: structurally generated frames (VLAN stacks,
//! IPv4 options, IPv6 extension-header chains, fragments, TCP options, truncation)
//! and random bytes, decided both by the real XDP program under BPF_PROG_TEST_RUN and
//! by `filter_common::classify` over a host model holding the same lists, rules,
//! policy, limits and SYN-cookie ports.

use std::{cell::RefCell, collections::HashMap, net::IpAddr};

use filter_common::{
    Limiter, Lists, Packet, Reason, Source,
    decide::Verdict,
    limit::SourceKey,
    rules::{Dir, PolicyConfig, Proto, Rules, observe_value, port_slot, rule_value, rules_in_force},
};
use ipnet::IpNet;

/// splitmix64: small, fast, and reproducible from a printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// Everything the host model knows: the same state the test writes into the maps.
#[derive(Default)]
pub struct Model {
    pub allow: Vec<IpNet>,
    pub block: Vec<IpNet>,
    /// The watchlist (a blocklist in observe mode).
    pub watch: Vec<IpNet>,
    /// Whether the limits are in observe mode.
    pub limits_observe: bool,
    /// Banned source keys (IPv4 /32, IPv6 /64), honoured while `bans_on`.
    pub bans: Vec<SourceKey>,
    pub bans_on: bool,
    pub policy: PolicyConfig,
    pub served: Vec<(Proto, u16, u16)>,
    pub port_rules: HashMap<u32, u32>,
    pub proto_rules: HashMap<Proto, u32>,
    pub rule_count: u32,
    pub observe_count: u32,
    pub syn_ports: Vec<(u16, u16)>,
    /// Rule id -> (packets, bytes) counted by the model.
    pub hits: RefCell<HashMap<u32, (u64, u64)>>,
}

fn ip_of(src: &Source) -> IpAddr {
    match *src {
        Source::V4(a) => IpAddr::from(a),
        Source::V6(a) => IpAddr::from(a),
    }
}

impl Lists for Model {
    fn allowed(&self, src: &Source) -> bool {
        self.allow.iter().any(|n| n.contains(&ip_of(src)))
    }
    fn blocked(&self, src: &Source) -> bool {
        self.block.iter().any(|n| n.contains(&ip_of(src)))
    }
    fn watched(&self, src: &Source) -> bool {
        self.watch.iter().any(|n| n.contains(&ip_of(src)))
    }
}

impl Limiter for Model {
    fn banned(&self, src: &Source) -> bool {
        let key = match *src {
            Source::V4(a) => SourceKey::v4(a, 32),
            Source::V6(a) => SourceKey::v6(a, 64),
        };
        self.bans_on && self.bans.contains(&key)
    }
    /// The fuzz sets limits no frame reaches (the limiter runs, never drops): its
    /// timing-dependent verdicts are covered by tests/tests/limiter.rs.
    fn police(&self, _: &Packet, _: u64) -> Reason {
        Reason::Passed
    }
    fn observing(&self) -> bool {
        self.limits_observe
    }
}

impl Rules for Model {
    fn policy(&self) -> PolicyConfig {
        self.policy
    }
    fn served(&self, proto: Proto, port: u16) -> bool {
        self.served.iter().any(|&(p, lo, hi)| p == proto && (lo..=hi).contains(&port))
    }
    fn port_rule(&self, slot: u32) -> u32 {
        self.port_rules.get(&slot).copied().unwrap_or(0)
    }
    fn proto_rule(&self, proto: Proto) -> u32 {
        self.proto_rules.get(&proto).copied().unwrap_or(0)
    }
    fn hit(&self, id: u32, len: u64) {
        let mut h = self.hits.borrow_mut();
        let e = h.entry(id).or_default();
        e.0 += 1;
        e.1 += len;
    }
    fn syn_answer(&self, port: u16) -> bool {
        self.syn_ports.iter().any(|&(lo, hi)| (lo..=hi).contains(&port))
    }
    fn rules_in_force(&self) -> u32 {
        rules_in_force(self.rule_count, self.observe_count)
    }
    fn syn_cookies(&self) -> bool {
        !self.syn_ports.is_empty()
    }
}

impl Model {
    /// Records a rule the way the controller lays it out in the maps.
    pub fn add_rule(&mut self, id: u32, r: &floodgate::rules::RuleSpec) {
        let observe = r.drop && r.observe;
        let v = if observe { observe_value(id) } else { rule_value(id, r.drop) };
        if r.dir == Dir::Any {
            self.proto_rules.insert(r.proto, v);
        } else {
            for p in r.lo..=r.hi {
                self.port_rules.insert(port_slot(r.proto, r.dir, p), v);
            }
        }
        if observe {
            self.observe_count += 1;
        } else {
            self.rule_count += 1;
        }
    }

    pub fn clear_rules(&mut self) {
        self.port_rules.clear();
        self.proto_rules.clear();
        self.rule_count = 0;
        self.observe_count = 0;
        self.hits.borrow_mut().clear();
    }

    /// The verdict of the host model for `frame`.
    pub fn decide(&self, frame: &[u8]) -> Reason {
        self.verdict(frame).reason
    }

    /// The verdict with what checks in observe mode would have dropped.
    pub fn verdict(&self, frame: &[u8]) -> Verdict {
        filter_common::classify(frame, self, self, self)
    }
}

/// Addresses and ports frames are drawn from: list members, their neighbours and
/// anything at all.
pub struct Pools {
    pub v4: Vec<[u8; 4]>,
    pub v6: Vec<[u8; 16]>,
    pub ports: Vec<u16>,
}

impl Pools {
    /// Addresses inside and around each net, plus the given extra sources.
    pub fn around(nets: &[IpNet], extra: &[IpAddr], ports: &[u16]) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let mut push = |a: IpAddr| match a {
            IpAddr::V4(a) => v4.push(a.octets()),
            IpAddr::V6(a) => v6.push(a.octets()),
        };
        for n in nets {
            push(n.network());
            push(n.broadcast());
            // Just outside on both sides.
            match n {
                IpNet::V4(n) => {
                    let lo = u32::from(n.network()).wrapping_sub(1);
                    let hi = u32::from(n.broadcast()).wrapping_add(1);
                    push(IpAddr::from(lo.to_be_bytes()));
                    push(IpAddr::from(hi.to_be_bytes()));
                }
                IpNet::V6(n) => {
                    let lo = u128::from(n.network()).wrapping_sub(1);
                    let hi = u128::from(n.broadcast()).wrapping_add(1);
                    push(IpAddr::from(lo.to_be_bytes()));
                    push(IpAddr::from(hi.to_be_bytes()));
                }
            }
        }
        for a in extra {
            push(*a);
        }
        Pools { v4, v6, ports: ports.to_vec() }
    }

    fn v4(&self, r: &mut Rng) -> [u8; 4] {
        let mut a = r.pick(&self.v4);
        if r.chance(30) {
            a[3] = r.byte();
        }
        if r.chance(5) {
            a = [r.byte(), r.byte(), r.byte(), r.byte()];
        }
        a
    }

    fn v6(&self, r: &mut Rng) -> [u8; 16] {
        let mut a = r.pick(&self.v6);
        if r.chance(30) {
            a[15] = r.byte();
            a[9] = r.byte();
        }
        if r.chance(5) {
            a.copy_from_slice(&r.bytes(16));
        }
        a
    }

    fn port(&self, r: &mut Rng) -> u16 {
        if r.chance(70) { r.pick(&self.ports) } else { r.next_u64() as u16 }
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const EXT_TYPES: [u8; 5] = [0, 43, 44, 51, 60];

/// A transport header and payload for `proto`.
fn transport(r: &mut Rng, p: &Pools, proto: u8, v6: bool) -> Vec<u8> {
    let payload = r.below(48);
    match proto {
        TCP => {
            let mut opts = Vec::new();
            if r.chance(60) {
                for _ in 0..r.below(8) {
                    match r.below(9) {
                        0 => opts.extend_from_slice(&[2, 4, 5, r.byte()]),
                        1 => opts.extend_from_slice(&[3, 3, r.below(16) as u8]),
                        2 => opts.extend_from_slice(&[4, 2]),
                        3 => {
                            opts.extend_from_slice(&[8, 10]);
                            opts.extend(r.bytes(8));
                        }
                        4 => opts.push(1),
                        5 => opts.push(0),
                        6 => opts.extend_from_slice(&[r.byte(), 0]),
                        7 => opts.extend_from_slice(&[r.byte(), r.byte()]),
                        _ => {
                            let n = r.below(6);
                            opts.extend(r.bytes(n));
                        }
                    }
                }
            }
            opts.truncate(40);
            let doff = if r.chance(90) { opts.len().div_ceil(4) + 5 } else { r.below(16) };
            opts.resize(doff.saturating_sub(5) * 4, 0);
            let flags = match r.below(10) {
                0..=3 => 0x02,
                4 => 0x12,
                5 | 6 => 0x10,
                _ => r.byte(),
            };
            let mut h = Vec::new();
            h.extend_from_slice(&p.port(r).to_be_bytes());
            h.extend_from_slice(&p.port(r).to_be_bytes());
            h.extend(r.bytes(8)); // seq, ack
            h.push(((doff as u8) & 0x0f) << 4);
            h.push(flags);
            h.extend(r.bytes(6)); // window, checksum, urgent
            h.extend(opts);
            let data = if flags & 0x02 != 0 && r.chance(80) { 0 } else { payload };
            h.extend(r.bytes(data));
            h
        }
        UDP => {
            let mut h = Vec::new();
            h.extend_from_slice(&p.port(r).to_be_bytes());
            h.extend_from_slice(&p.port(r).to_be_bytes());
            let len = if r.chance(90) { (8 + payload) as u16 } else { r.next_u64() as u16 };
            h.extend_from_slice(&len.to_be_bytes());
            h.extend(r.bytes(2 + payload));
            h
        }
        ICMP | ICMPV6 => {
            let ty = if v6 && r.chance(30) { 133 + r.below(5) as u8 } else { r.byte() };
            let mut h = vec![ty, r.byte()];
            h.extend(r.bytes(2 + payload));
            h
        }
        _ => r.bytes(payload),
    }
}

fn l4_proto(r: &mut Rng, v6: bool) -> u8 {
    match r.below(20) {
        0..=6 => TCP,
        7..=13 => UDP,
        14..=16 => {
            if v6 {
                ICMPV6
            } else {
                ICMP
            }
        }
        17 => r.pick(&[50, 59, 132, 135, 253]),
        _ => r.byte(),
    }
}

fn ipv4(r: &mut Rng, p: &Pools) -> Vec<u8> {
    let proto = l4_proto(r, false);
    let l4 = transport(r, p, proto, false);
    let ihl = match r.below(20) {
        0..=13 => 5,
        14..=18 => 6 + r.below(10),
        _ => r.below(5),
    };
    let hlen = ihl.max(5) * 4;
    let mut h = vec![0u8; 20];
    h[0] = if r.chance(97) { 0x40 } else { r.byte() & 0xf0 } | ihl as u8;
    h[1] = r.byte();
    let total = if r.chance(90) { (hlen + l4.len()) as u16 } else { r.next_u64() as u16 };
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&r.bytes(2));
    let frag: u16 = match r.below(20) {
        0..=11 => 0x4000 * r.below(2) as u16,             // DF or nothing
        12..=14 => 0x2000,                                // first fragment
        15..=17 => 0x2000 | (1 + r.below(0x1ffe)) as u16, // middle
        _ => (1 + r.below(0x1ffe)) as u16,                // last
    };
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = r.byte();
    h[9] = proto;
    h[12..16].copy_from_slice(&p.v4(r));
    h[16..20].copy_from_slice(&[198, 51, 100, 1]);
    for _ in 20..hlen {
        h.push(if r.chance(50) { 1 } else { r.byte() });
    }
    h.extend(l4);
    h
}

fn ipv6(r: &mut Rng, p: &Pools) -> Vec<u8> {
    let proto = l4_proto(r, true);
    let n = match r.below(10) {
        0..=4 => 0,
        5..=7 => 1 + r.below(6),
        _ => 7 + r.below(14),
    };
    let types: Vec<u8> = (0..n).map(|_| r.pick(&EXT_TYPES)).collect();
    let mut chain = Vec::new();
    for (i, ty) in types.iter().enumerate() {
        let next = types.get(i + 1).copied().unwrap_or(proto);
        match *ty {
            44 => {
                let off: u16 = if r.chance(60) { 0 } else { 1 + r.below(0x1ffe) as u16 };
                chain.push(next);
                chain.push(0);
                chain.extend_from_slice(&((off << 3) | r.below(2) as u16).to_be_bytes());
                chain.extend(r.bytes(4));
            }
            51 => {
                let words = 1 + r.below(5);
                chain.push(next);
                chain.push(words as u8);
                chain.extend(r.bytes((words + 2) * 4 - 2));
            }
            _ => {
                let units = r.below(3);
                chain.push(next);
                chain.push(units as u8);
                chain.extend(r.bytes((units + 1) * 8 - 2));
            }
        }
    }
    let first = types.first().copied().unwrap_or(proto);
    let l4 = transport(r, p, proto, true);
    let payload = chain.len() + l4.len();
    let mut h = vec![if r.chance(97) { 0x60 } else { r.byte() & 0xf0 }, r.byte(), r.byte(), r.byte()];
    let plen = if r.chance(90) { payload as u16 } else { r.next_u64() as u16 };
    h.extend_from_slice(&plen.to_be_bytes());
    h.push(first);
    h.push(r.byte());
    h.extend_from_slice(&p.v6(r));
    h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h.extend(chain);
    h.extend(l4);
    h
}

/// One frame: mostly structured, sometimes random bytes; at least 14 bytes (the
/// kernel's test_run refuses shorter frames).
pub fn frame(r: &mut Rng, p: &Pools) -> Vec<u8> {
    if r.chance(3) {
        let n = 14 + r.below(120);
        return r.bytes(n);
    }
    let mut f = r.bytes(12);
    let tags = match r.below(20) {
        0..=11 => 0,
        12..=14 => 1,
        15..=16 => 2,
        _ => 3 + r.below(3),
    };
    let l3 = match r.below(20) {
        0..=8 => 0x0800u16,
        9..=17 => 0x86dd,
        18 => r.pick(&[0x0806u16, 0x88cc, 0x8847, 0x9100]),
        _ => r.next_u64() as u16,
    };
    let mut types: Vec<u16> =
        (0..tags).map(|_| if r.chance(95) { r.pick(&[0x8100u16, 0x88a8]) } else { 0x9100 }).collect();
    types.push(l3);
    f.extend_from_slice(&types[0].to_be_bytes());
    for t in &types[1..] {
        let tci: u16 = if r.chance(50) { 0 } else { r.next_u64() as u16 };
        f.extend_from_slice(&tci.to_be_bytes());
        f.extend_from_slice(&t.to_be_bytes());
    }
    match l3 {
        0x0800 => f.extend(ipv4(r, p)),
        0x86dd => f.extend(ipv6(r, p)),
        _ => {
            let n = 28 + r.below(20);
            f.extend(r.bytes(n));
        }
    }
    if r.chance(15) {
        let cut = 14 + r.below(f.len() - 13);
        f.truncate(cut);
    } else if r.chance(10) {
        let pad = 1 + r.below(20);
        f.extend(r.bytes(pad));
    }
    f
}

pub fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}
