//! Protocol and port rules, the served-ports policy and the fragment setting: the
//! step between the lists and the rate limiter.
//!
//! Cost per packet does not depend on the number of rules: every port of every
//! (protocol, direction) has a slot in one array ([`port_slot`]) holding the id and
//! action of the rule covering it, so a packet costs at most three array lookups
//! (source port, destination port, whole protocol), whatever the rule count.

use crate::{
    Reason,
    decide::Observer,
    parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L4, Packet},
};

/// Rules held at once (ids 1..=MAX_RULES; 0 means "no rule").
pub const MAX_RULES: u32 = 4096;

/// Ports of one protocol.
pub const PORTS: u32 = 1 << 16;

/// Slots of the port table: tcp/udp x source/destination x 65,536 ports.
pub const PORT_TABLE_ENTRIES: u32 = 4 * PORTS;

/// Words of a 65,536-bit port bitmap (served ports, SYN-cookie ports).
pub const PORT_WORDS: u32 = PORTS / 64;

/// Index in the served map of the first word of `proto`'s (tcp or udp) bitmap in
/// policy slot `slot` (0 or 1): slots of two bitmaps, tcp then udp.
#[inline(always)]
pub const fn served_base(slot: u32, proto: Proto) -> u32 {
    (slot * 2 + (proto as u32 & 1)) * PORT_WORDS
}

/// Word index and bit of `port` in a port bitmap.
#[inline(always)]
pub const fn port_bit(port: u16) -> (u32, u64) {
    ((port >> 6) as u32, 1u64 << (port & 63))
}
/// Entries of the served map: two policy slots x tcp/udp x one bitmap.
pub const SERVED_ENTRIES: u32 = 2 * 2 * PORT_WORDS;

/// Entries of the whole-protocol rules map: one per [`Proto`], then
/// [`RULES_IN_FORCE`].
pub const PROTO_RULE_ENTRIES: u32 = 5;
/// Slot of the whole-protocol rules map holding how many rules are in force: the
/// enforcing ones in the low 16 bits, those in observe mode above, so one read tells
/// whether the port table is worth reading and whether a packet whose ports cannot be
/// seen could be dropped by a rule.
pub const RULES_IN_FORCE: u32 = 4;
/// The [`RULES_IN_FORCE`] word for these counts.
pub const fn rules_in_force(enforcing: u32, observing: u32) -> u32 {
    (enforcing & 0xffff) | (observing & 0xffff) << 16
}

/// Bit of a port-table value that makes the rule drop (clear: pass).
pub const RULE_DROP: u32 = 1 << 16;
/// Bit of a port-table value of a drop rule in observe mode: matching frames are
/// counted under `would_drop.rule` and go on as if it were not there.
pub const RULE_OBSERVE: u32 = 1 << 17;
const RULE_ID_MASK: u32 = 0xffff;

/// The protocols rules match.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp = 0,
    Udp = 1,
    Icmp = 2,
    Icmpv6 = 3,
}

impl Proto {
    pub const ALL: [Proto; 4] = [Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Icmpv6];

    /// The rule protocol of an IP protocol number, if rules can match it. ICMP only
    /// counts on IPv4 and ICMPv6 only on IPv6.
    #[inline(always)]
    pub fn of(ip_proto: u8, v6: bool) -> Option<Proto> {
        match (ip_proto, v6) {
            (IPPROTO_TCP, _) => Some(Proto::Tcp),
            (IPPROTO_UDP, _) => Some(Proto::Udp),
            (IPPROTO_ICMP, false) => Some(Proto::Icmp),
            (IPPROTO_ICMPV6, true) => Some(Proto::Icmpv6),
            _ => None,
        }
    }

    pub fn from_u8(v: u8) -> Option<Proto> {
        Self::ALL.get(v as usize).copied()
    }

    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmpv6 => "icmpv6",
        }
    }

    /// Whether packets of this protocol carry ports.
    pub const fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

/// Which port a rule matches.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    Src = 0,
    Dst = 1,
    /// No port: every packet of the protocol.
    Any = 2,
}

/// A rule's direction as stored in [`RuleInfo::dir`].
impl TryFrom<u8> for Dir {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(Dir::Src),
            1 => Ok(Dir::Dst),
            2 => Ok(Dir::Any),
            _ => Err(v),
        }
    }
}

/// Index of `port` for `proto` (tcp or udp) and `dir` (Src or Dst) in the port table.
#[inline(always)]
pub fn port_slot(proto: Proto, dir: Dir, port: u16) -> u32 {
    (((proto as u32 & 1) << 1 | (dir as u32 & 1)) << 16) | port as u32
}

/// A port-table (or whole-protocol) value for rule `id`.
pub const fn rule_value(id: u32, drop: bool) -> u32 {
    (id & RULE_ID_MASK) | if drop { RULE_DROP } else { 0 }
}

/// The value of a drop rule in observe mode.
pub const fn observe_value(id: u32) -> u32 {
    (id & RULE_ID_MASK) | RULE_OBSERVE
}

/// [`RuleInfo::drop`] of a pass rule, a drop rule, and a drop rule in observe mode.
pub const ACTION_PASS: u8 = 0;
pub const ACTION_DROP: u8 = 1;
pub const ACTION_OBSERVE: u8 = 2;

/// A rule as stored in the rules map (index = id), for controllers: the data path
/// reads only the port table and the whole-protocol array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleInfo {
    /// 0: free slot.
    pub in_use: u8,
    pub proto: u8,
    pub dir: u8,
    /// [`ACTION_PASS`], [`ACTION_DROP`] or [`ACTION_OBSERVE`].
    pub drop: u8,
    pub lo: u16,
    pub hi: u16,
    /// NUL-padded UTF-8.
    pub name: [u8; 32],
}

/// The policy's settings, one of two slots picked by `ACTIVE[ACTIVE_POLICY]` (the
/// served bitmaps of the same slot are written first, then the slot is flipped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    /// 1: drop TCP/UDP to ports neither served nor ephemeral.
    pub enforce: u8,
    /// 1: drop non-first fragments.
    pub drop_fragments: u8,
    /// 1: an ephemeral range is set.
    pub ephemeral: u8,
    /// 1: observe mode: what `enforce` and `drop_fragments` would drop is counted
    /// under `would_drop.policy` / `would_drop.fragment` and passed.
    pub observe: u8,
    pub eph_lo: u16,
    pub eph_hi: u16,
}

/// What the rules and policy step needs from its maps.
pub trait Rules {
    /// The policy in force (all zero when none is set).
    fn policy(&self) -> PolicyConfig;
    /// Whether `port` is served for `proto` (tcp or udp) under the active policy.
    fn served(&self, proto: Proto, port: u16) -> bool;
    /// The port-table value at `slot` (0: no rule).
    fn port_rule(&self, slot: u32) -> u32;
    /// The whole-protocol rule of `proto` (0: none).
    fn proto_rule(&self, proto: Proto) -> u32;
    /// Counts a packet of `len` bytes against rule `id`.
    fn hit(&self, id: u32, len: u64);
    /// Whether a SYN to TCP `port` is answered with a cookie now (`synproxy enable`,
    /// and the port's SYN rate above `--above`).
    fn syn_answer(&self, port: u16) -> bool;
    /// The [`RULES_IN_FORCE`] word: nonzero while any rule is in force.
    fn rules_in_force(&self) -> u32;
    /// Whether SYN cookies are enabled (for any port).
    fn syn_cookies(&self) -> bool;
}

/// Whether anything in force would look at the transport header (ports, protocol,
/// flags, fragment offset): a packet whose transport header cannot be reached is then
/// dropped ([`Reason::Unchecked`]) rather than passed unseen.
#[inline(always)]
pub fn needs_l4<R: Rules>(r: &R) -> bool {
    // What only observes never drops, not even a frame it cannot see into.
    let p = r.policy();
    (p.observe == 0 && (p.enforce != 0 || p.drop_fragments != 0))
        || r.rules_in_force() & 0xffff != 0
        || r.syn_cookies()
}

/// ICMPv6 types of neighbour discovery (router/neighbour solicitation and
/// advertisement, redirect): never dropped by a rule, or IPv6 itself stops working.
#[inline(always)]
fn is_nd(proto: Proto, first: [u8; 4]) -> bool {
    proto == Proto::Icmpv6 && (133..=137).contains(&first[0])
}

/// Rules, policy, fragments and SYN cookies for a packet that passed the lists.
/// `Some(reason)` decides it (a drop, or [`Reason::SynProxy`]); `None` hands it on to
/// the rate limiter. A check in observe mode that would have dropped the frame sets
/// `would` (when not set yet) and does not decide.
#[inline(always)]
pub fn check<R: Rules, O: Observer>(r: &R, pkt: &Packet, len: u64, would: &O) -> Option<Reason> {
    let policy = r.policy();
    // The policy's drops, or what they would be in observe mode.
    let policy_drop = |reason: Reason, would: &O| {
        if policy.observe == 0 {
            return Some(reason);
        }
        would.would_drop(reason);
        None
    };
    let head = match pkt.l4 {
        L4::LaterFragment => {
            // No ports to match: the fragment setting decides alone.
            return if policy.drop_fragments != 0 { policy_drop(Reason::Fragment, would) } else { None };
        }
        // Hidden and truncated headers are decided in classify, before this step.
        L4::None | L4::Hidden | L4::Truncated => return None,
        L4::Head(h) => h,
    };
    let proto = Proto::of(pkt.proto, pkt.src.is_v6())?;
    let (sport, dport) = (u16::from_be_bytes([head[0], head[1]]), u16::from_be_bytes([head[2], head[3]]));
    // Rules never overlap within a (protocol, direction): at most a source-port and a
    // destination-port rule match, or one whole-protocol rule. Drop beats pass; an
    // observed drop is noted whatever else matches (enforced, it would beat a pass).
    let (mut pass_id, mut drop_id, mut observe_id) = (0, 0, 0);
    let mut consider = |v: u32| {
        if v & RULE_DROP != 0 {
            if drop_id == 0 {
                drop_id = v & RULE_ID_MASK;
            }
        } else if v & RULE_OBSERVE != 0 {
            if observe_id == 0 {
                observe_id = v & RULE_ID_MASK;
            }
        } else if v != 0 && pass_id == 0 {
            pass_id = v & RULE_ID_MASK;
        }
    };
    // The port table is 2 MiB: with random ports every lookup would miss the cache,
    // so it is read only while some rule exists.
    if r.rules_in_force() != 0 {
        if proto.has_ports() {
            consider(r.port_rule(port_slot(proto, Dir::Src, sport)));
            consider(r.port_rule(port_slot(proto, Dir::Dst, dport)));
        }
        consider(r.proto_rule(proto));
    }
    let nd = is_nd(proto, head);
    if drop_id != 0 && !nd {
        r.hit(drop_id, len);
        return Some(Reason::Rule);
    }
    if observe_id != 0 && !nd {
        r.hit(observe_id, len);
        would.would_drop(Reason::Rule);
    }
    if pass_id != 0 {
        // A pass rule exempts the packet from the policy (not from the limiter).
        r.hit(pass_id, len);
        return None;
    }
    if policy.enforce != 0 && proto.has_ports() {
        let ephemeral = policy.ephemeral != 0 && dport >= policy.eph_lo && dport <= policy.eph_hi;
        if !ephemeral
            && !r.served(proto, dport)
            && let Some(reason) = policy_drop(Reason::Policy, would)
        {
            return Some(reason);
        }
    }
    if proto == Proto::Tcp && pkt.is_syn() && r.syn_answer(dport) {
        return Some(Reason::SynProxy);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Source;
    use std::{cell::RefCell, collections::HashMap};

    #[test]
    fn stored_codes_decode_to_what_was_stored() {
        for d in [Dir::Src, Dir::Dst, Dir::Any] {
            assert_eq!(Dir::try_from(d as u8), Ok(d));
        }
        assert_eq!(Dir::try_from(3), Err(3));
        for k in crate::ListKind::ALL {
            assert_eq!(crate::ListKind::try_from(k as u32), Ok(k));
        }
        assert_eq!(crate::ListKind::try_from(2), Err(2));
        for f in [crate::Family::V4, crate::Family::V6] {
            assert_eq!(crate::Family::from_ip_version(f.ip_version()), Some(f));
        }
        assert_eq!(crate::Family::from_ip_version(0), None);
    }

    #[test]
    fn served_bitmaps_tile_the_served_map() {
        let mut bases = Vec::new();
        for slot in 0..2 {
            for proto in [Proto::Tcp, Proto::Udp] {
                bases.push(served_base(slot, proto));
            }
        }
        assert_eq!(bases, [0, PORT_WORDS, 2 * PORT_WORDS, 3 * PORT_WORDS]);
        assert_eq!(served_base(1, Proto::Udp) + PORT_WORDS, SERVED_ENTRIES);
    }

    #[derive(Default)]
    struct Tables {
        policy: PolicyConfig,
        served: Vec<(Proto, u16)>,
        ports: HashMap<u32, u32>,
        protos: HashMap<Proto, u32>,
        hits: RefCell<Vec<u32>>,
        syn_ports: Vec<u16>,
    }

    impl Rules for Tables {
        fn policy(&self) -> PolicyConfig {
            self.policy
        }
        fn served(&self, proto: Proto, port: u16) -> bool {
            self.served.contains(&(proto, port))
        }
        fn port_rule(&self, slot: u32) -> u32 {
            self.ports.get(&slot).copied().unwrap_or(0)
        }
        fn proto_rule(&self, proto: Proto) -> u32 {
            self.protos.get(&proto).copied().unwrap_or(0)
        }
        fn hit(&self, id: u32, _: u64) {
            self.hits.borrow_mut().push(id);
        }
        fn syn_answer(&self, port: u16) -> bool {
            self.syn_ports.contains(&port)
        }
        fn rules_in_force(&self) -> u32 {
            u32::from(!self.ports.is_empty() || !self.protos.is_empty())
        }
        fn syn_cookies(&self) -> bool {
            !self.syn_ports.is_empty()
        }
    }

    /// The decision alone, for tests without observe mode.
    fn check<R: Rules>(r: &R, pkt: &Packet, len: u64) -> Option<Reason> {
        let notes = crate::decide::Notes::default();
        let out = super::check(r, pkt, len, &notes);
        assert_eq!(notes.all.get(), 0, "nothing observes here");
        out
    }

    fn udp(sport: u16, dport: u16) -> Packet {
        let [a, b] = sport.to_be_bytes();
        let [c, d] = dport.to_be_bytes();
        Packet {
            src: Source::V4([192, 0, 2, 1]),
            tcp_flags: 0,
            proto: IPPROTO_UDP,
            l4: L4::Head([a, b, c, d]),
        }
    }

    #[test]
    fn port_slots_are_distinct_per_protocol_and_direction() {
        let mut seen = std::collections::HashSet::new();
        for p in [Proto::Tcp, Proto::Udp] {
            for d in [Dir::Src, Dir::Dst] {
                for port in [0u16, 1, 65535] {
                    let s = port_slot(p, d, port);
                    assert!(s < PORT_TABLE_ENTRIES);
                    assert!(seen.insert(s));
                }
            }
        }
    }

    #[test]
    fn drop_beats_pass_and_the_deciding_rule_counts() {
        let mut t = Tables::default();
        t.ports.insert(port_slot(Proto::Udp, Dir::Src, 53), rule_value(1, false));
        t.ports.insert(port_slot(Proto::Udp, Dir::Dst, 9999), rule_value(2, true));
        assert_eq!(check(&t, &udp(53, 9999), 60), Some(Reason::Rule));
        assert_eq!(check(&t, &udp(53, 80), 60), None);
        assert_eq!(check(&t, &udp(54, 9999), 60), Some(Reason::Rule));
        assert_eq!(*t.hits.borrow(), [2, 1, 2]);
    }

    #[test]
    fn policy_drops_unserved_ports_but_not_ephemeral_or_pass_ruled_ones() {
        let mut t = Tables {
            policy: PolicyConfig {
                enforce: 1,
                ephemeral: 1,
                eph_lo: 32768,
                eph_hi: 60999,
                ..Default::default()
            },
            served: vec![(Proto::Udp, 53)],
            ..Default::default()
        };
        assert_eq!(check(&t, &udp(1000, 53), 60), None);
        assert_eq!(check(&t, &udp(1000, 54), 60), Some(Reason::Policy));
        assert_eq!(check(&t, &udp(1000, 32768), 60), None);
        assert_eq!(check(&t, &udp(1000, 60999), 60), None);
        assert_eq!(check(&t, &udp(1000, 61000), 60), Some(Reason::Policy));
        assert_eq!(check(&t, &udp(1000, 32767), 60), Some(Reason::Policy));
        t.ports.insert(port_slot(Proto::Udp, Dir::Src, 123), rule_value(7, false));
        assert_eq!(check(&t, &udp(123, 54), 60), None, "a pass rule exempts from the policy");
    }

    #[test]
    fn syns_to_protected_ports_are_answered_after_rules_and_policy() {
        let mut t = Tables { syn_ports: vec![80], ..Default::default() };
        let tcp = |dport: u16, flags: u8| {
            let [c, d] = dport.to_be_bytes();
            Packet {
                src: Source::V4([192, 0, 2, 1]),
                tcp_flags: flags,
                proto: IPPROTO_TCP,
                l4: L4::Head([0x9c, 0x40, c, d]),
            }
        };
        assert_eq!(check(&t, &tcp(80, 0x02), 60), Some(Reason::SynProxy));
        assert_eq!(check(&t, &tcp(80, 0x12), 60), None, "SYN-ACK");
        assert_eq!(check(&t, &tcp(80, 0x10), 60), None, "ACK");
        assert_eq!(check(&t, &tcp(443, 0x02), 60), None, "unprotected port");
        t.ports.insert(port_slot(Proto::Tcp, Dir::Dst, 80), rule_value(1, true));
        assert_eq!(check(&t, &tcp(80, 0x02), 60), Some(Reason::Rule), "a drop rule comes first");
    }

    #[test]
    fn fragments_and_neighbour_discovery() {
        let mut t = Tables::default();
        let later = Packet { l4: L4::LaterFragment, ..udp(1, 2) };
        assert_eq!(check(&t, &later, 60), None);
        t.policy.drop_fragments = 1;
        assert_eq!(check(&t, &later, 60), Some(Reason::Fragment));
        t.protos.insert(Proto::Icmpv6, rule_value(3, true));
        let icmp6 = |ty: u8| Packet {
            src: Source::V6([0; 16]),
            tcp_flags: 0,
            proto: IPPROTO_ICMPV6,
            l4: L4::Head([ty, 0, 0, 0]),
        };
        assert_eq!(check(&t, &icmp6(128), 60), Some(Reason::Rule));
        assert_eq!(check(&t, &icmp6(135), 60), None, "neighbour solicitation always passes");
    }

    #[test]
    fn observed_rules_and_policy_note_what_they_would_drop_and_decide_nothing() {
        let mut t = Tables {
            policy: PolicyConfig { enforce: 1, observe: 1, drop_fragments: 1, ..Default::default() },
            served: vec![(Proto::Udp, 53)],
            ..Default::default()
        };
        let run = |t: &Tables, pkt: &Packet| {
            let notes = crate::decide::Notes::default();
            (super::check(t, pkt, 60, &notes), notes.first.get())
        };
        assert_eq!(run(&t, &udp(1000, 53)), (None, None), "served");
        assert_eq!(run(&t, &udp(1000, 54)), (None, Some(Reason::Policy)));
        assert_eq!(run(&t, &Packet { l4: L4::LaterFragment, ..udp(1, 2) }), (None, Some(Reason::Fragment)));
        t.ports.insert(port_slot(Proto::Udp, Dir::Dst, 53), observe_value(4));
        assert_eq!(run(&t, &udp(1000, 53)), (None, Some(Reason::Rule)));
        // An observed rule next to a pass rule: noted (enforced, drop beats pass), and
        // the pass rule still exempts from the policy.
        t.ports.insert(port_slot(Proto::Udp, Dir::Src, 7), rule_value(5, false));
        assert_eq!(run(&t, &udp(7, 53)), (None, Some(Reason::Rule)));
        // An enforcing drop rule still drops, whatever observes.
        t.ports.insert(port_slot(Proto::Udp, Dir::Src, 9), rule_value(6, true));
        assert_eq!(run(&t, &udp(9, 53)), (Some(Reason::Rule), None));
        assert_eq!(*t.hits.borrow(), [4, 4, 5, 6]);
        // With the policy enforced, its drop decides again.
        t.policy.observe = 0;
        assert_eq!(run(&t, &udp(1000, 54)), (Some(Reason::Policy), None));
    }

    #[test]
    fn only_enforcing_rules_and_policy_need_the_transport_header() {
        struct Words(u32, PolicyConfig);
        impl Rules for Words {
            fn policy(&self) -> PolicyConfig {
                self.1
            }
            fn served(&self, _: Proto, _: u16) -> bool {
                false
            }
            fn port_rule(&self, _: u32) -> u32 {
                0
            }
            fn proto_rule(&self, _: Proto) -> u32 {
                0
            }
            fn hit(&self, _: u32, _: u64) {}
            fn syn_answer(&self, _: u16) -> bool {
                false
            }
            fn rules_in_force(&self) -> u32 {
                self.0
            }
            fn syn_cookies(&self) -> bool {
                false
            }
        }
        let off = PolicyConfig::default();
        let enforce = PolicyConfig { enforce: 1, ..off };
        assert!(!needs_l4(&Words(0, off)));
        assert!(needs_l4(&Words(rules_in_force(1, 0), off)));
        assert!(!needs_l4(&Words(rules_in_force(0, 3), off)));
        assert!(needs_l4(&Words(0, enforce)));
        assert!(!needs_l4(&Words(0, PolicyConfig { observe: 1, ..enforce })));
    }
}
