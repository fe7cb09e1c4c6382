//! The per-packet decision, independent of where the lists live: the XDP program
//! implements [`Lists`] over its maps, the host tests over plain sets.

use crate::{
    Reason,
    parse::{Frame, L4, Packet, PacketView, Source, parse},
    rules::{self, Rules},
};

/// Membership tests the decision needs. Implementations answer for the active
/// generation of each list, ignoring expired entries.
pub trait Lists {
    fn allowed(&self, src: &Source) -> bool;
    fn blocked(&self, src: &Source) -> bool;
    /// Whether the source is on the watchlist: a blocklist in observe mode.
    fn watched(&self, _src: &Source) -> bool {
        false
    }
}

/// The rate limiter as the decision sees it.
pub trait Limiter {
    /// Whether the source is under an (unexpired) auto-ban.
    fn banned(&self, src: &Source) -> bool;
    /// [`Reason::Passed`], [`Reason::RateLimit`] or [`Reason::SynLimit`] for a packet
    /// of `len` bytes; always `Passed` while no limit is set.
    fn police(&self, pkt: &Packet, len: u64) -> Reason;
    /// Whether the limits are in observe mode: what [`Limiter::police`] drops is then
    /// only noted, and it makes no auto-bans.
    fn observing(&self) -> bool {
        false
    }
}

/// Where checks in observe mode note what they would have dropped: called once by
/// each such check that would have (so each reason at most once per frame). Every
/// note counts under its reason, so each check's count says what it alone would
/// drop; the first (in the order the checks run: were everything enforced, the
/// reason the frame would be dropped for) goes with the frame's sample.
pub trait Observer {
    fn would_drop(&self, reason: Reason);
}

/// The host's observer: the first note and every note.
#[derive(Default)]
pub struct Notes {
    pub first: core::cell::Cell<Option<Reason>>,
    /// Bit `1 << reason` per note.
    pub all: core::cell::Cell<u32>,
}

impl Observer for Notes {
    fn would_drop(&self, reason: Reason) {
        if self.first.get().is_none() {
            self.first.set(Some(reason));
        }
        self.all.set(self.all.get() | 1 << reason as u32);
    }
}

/// A decision: the verdict, and the first check in observe mode that would have
/// dropped the frame, in the order the checks run (so, were everything enforced, the
/// reason the frame would have been dropped for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: Reason,
    pub would_drop: Option<Reason>,
    /// Every reason a check in observe mode would have dropped the frame for, as bits
    /// `1 << reason`.
    pub observed: u32,
}

/// Decides one frame. Order: allowlist hit passes (nothing else is consulted, so a
/// source on both lists passes); blocklist or auto-ban hit drops; then protocol/port
/// rules, the fragment setting and the served-ports policy; then SYN cookies (a SYN to
/// a protected port is [`Reason::SynProxy`]: answered in the driver, before the rate
/// limiter sees it); then the rate limiter; anything left passes.
///
/// The lists and the limiter decide on the source address whenever the IP header is
/// reachable, whatever follows it. A frame whose IP header is out of reach is dropped
/// ([`Reason::Unchecked`]); one whose transport header is out of reach (a long IPv6
/// extension-header chain) is dropped as `Unchecked` when rules, the policy, the
/// fragment setting or SYN cookies would need it, and otherwise passed as
/// [`Reason::L4Unseen`]; one whose transport header is cut short is passed as
/// [`Reason::Malformed`] (the stack drops it) once the lists and limiter passed it.
///
/// Checks in observe mode (the watchlist, rules with action observe, the policy and
/// the limits with `observe` set) decide nothing: each that would have dropped the
/// frame is reported in [`Verdict::observed`], the first in [`Verdict::would_drop`].
#[inline(always)]
pub fn classify<V: PacketView + ?Sized, L: Lists, P: Rules, R: Limiter>(
    frame: &V,
    lists: &L,
    rules: &P,
    limiter: &R,
) -> Verdict {
    let only = |reason| Verdict { reason, would_drop: None, observed: 0 };
    match parse(frame) {
        Frame::NonIp => only(Reason::NonIp),
        Frame::Malformed => only(Reason::Malformed),
        Frame::TooDeep => only(Reason::Unchecked),
        Frame::Ip(pkt) => {
            let notes = Notes::default();
            let reason = decide(pkt, frame.len() as u64, lists, rules, limiter, &notes);
            Verdict { reason, would_drop: notes.first.get(), observed: notes.all.get() }
        }
    }
}

/// [`classify`] after parsing: the verdict for an IP packet of `len` bytes. The XDP
/// program runs it in a program of its own (see filter-ebpf's main.rs), so the
/// verifier checks it once rather than once per parse path.
#[inline(always)]
pub fn decide<L: Lists, P: Rules, R: Limiter, O: Observer>(
    pkt: Packet,
    len: u64,
    lists: &L,
    rules: &P,
    limiter: &R,
    would: &O,
) -> Reason {
    if lists.allowed(&pkt.src) {
        return Reason::Allowed;
    }
    if lists.blocked(&pkt.src) || limiter.banned(&pkt.src) {
        return Reason::Blocklist;
    }
    if lists.watched(&pkt.src) {
        would.would_drop(Reason::Blocklist);
    }
    let unseen = match pkt.l4 {
        L4::Truncated => Reason::Malformed,
        L4::Hidden if rules::needs_l4(rules) => return Reason::Unchecked,
        L4::Hidden => Reason::L4Unseen,
        _ => {
            if let Some(r) = rules::check(rules, &pkt, len, would) {
                return r;
            }
            Reason::Passed
        }
    };
    match limiter.police(&pkt, len) {
        Reason::Passed => unseen,
        r if limiter.observing() => {
            would.would_drop(r);
            unseen
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Fake {
        allow: Option<Source>,
        block: Option<Source>,
        block_lookups: Cell<u32>,
    }

    impl Lists for Fake {
        fn allowed(&self, src: &Source) -> bool {
            self.allow == Some(*src)
        }
        fn blocked(&self, src: &Source) -> bool {
            self.block_lookups.set(self.block_lookups.get() + 1);
            self.block == Some(*src)
        }
    }

    /// A limiter that drops everything from one source.
    struct DropOne(Option<Source>);
    impl Limiter for DropOne {
        fn banned(&self, _: &Source) -> bool {
            false
        }
        fn police(&self, pkt: &Packet, _: u64) -> Reason {
            if Some(pkt.src) == self.0 { Reason::RateLimit } else { Reason::Passed }
        }
    }
    const OFF: DropOne = DropOne(None);

    /// No rules, or (true) a whole-protocol drop rule for every protocol.
    struct NoRules(bool);
    impl Rules for NoRules {
        fn policy(&self) -> crate::rules::PolicyConfig {
            Default::default()
        }
        fn served(&self, _: crate::rules::Proto, _: u16) -> bool {
            false
        }
        fn port_rule(&self, _: u32) -> u32 {
            0
        }
        fn proto_rule(&self, _: crate::rules::Proto) -> u32 {
            if self.0 { crate::rules::rule_value(1, true) } else { 0 }
        }
        fn hit(&self, _: u32, _: u64) {}
        fn syn_answer(&self, _: u16) -> bool {
            false
        }
        fn rules_in_force(&self) -> u32 {
            u32::from(self.0)
        }
        fn syn_cookies(&self) -> bool {
            false
        }
    }

    /// The verdict alone, where nothing observes.
    fn classify<L: Lists, P: Rules, R: Limiter>(frame: &[u8], lists: &L, rules: &P, limiter: &R) -> Reason {
        let v = super::classify(frame, lists, rules, limiter);
        assert_eq!(v.would_drop, None, "nothing observes here");
        v.reason
    }

    fn udp_frame(src: [u8; 4]) -> Vec<u8> {
        let mut f = v4_frame(src);
        f[14 + 3] = 28;
        f[14 + 9] = 17;
        f.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
        f
    }

    fn v4_frame(src: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 253, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[198, 51, 100, 1]);
        f
    }

    #[test]
    fn allow_wins_and_skips_the_blocklist() {
        let s = Source::V4([192, 0, 2, 1]);
        let lists = Fake { allow: Some(s), block: Some(s), block_lookups: Cell::new(0) };
        assert_eq!(classify(&v4_frame([192, 0, 2, 1])[..], &lists, &NoRules(false), &OFF), Reason::Allowed);
        assert_eq!(lists.block_lookups.get(), 0);
    }

    #[test]
    fn block_and_pass() {
        let lists =
            Fake { allow: None, block: Some(Source::V4([192, 0, 2, 1])), block_lookups: Cell::new(0) };
        assert_eq!(classify(&v4_frame([192, 0, 2, 1])[..], &lists, &NoRules(false), &OFF), Reason::Blocklist);
        assert_eq!(classify(&v4_frame([192, 0, 2, 2])[..], &lists, &NoRules(false), &OFF), Reason::Passed);
        assert_eq!(classify(&[0u8; 10][..], &lists, &NoRules(false), &OFF), Reason::Malformed);
        let mut arp = [0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(classify(&arp[..], &lists, &NoRules(false), &OFF), Reason::NonIp);
    }

    #[test]
    fn limiter_comes_after_the_lists() {
        let s = Source::V4([192, 0, 2, 1]);
        let limiter = DropOne(Some(s));
        let none = Fake { allow: None, block: None, block_lookups: Cell::new(0) };
        assert_eq!(
            classify(&v4_frame([192, 0, 2, 1])[..], &none, &NoRules(false), &limiter),
            Reason::RateLimit
        );
        assert_eq!(classify(&v4_frame([192, 0, 2, 2])[..], &none, &NoRules(false), &limiter), Reason::Passed);
        let allowed = Fake { allow: Some(s), block: None, block_lookups: Cell::new(0) };
        assert_eq!(
            classify(&v4_frame([192, 0, 2, 1])[..], &allowed, &NoRules(false), &limiter),
            Reason::Allowed
        );
        let blocked = Fake { allow: None, block: Some(s), block_lookups: Cell::new(0) };
        assert_eq!(
            classify(&v4_frame([192, 0, 2, 1])[..], &blocked, &NoRules(false), &limiter),
            Reason::Blocklist
        );
    }

    #[test]
    fn rules_come_after_the_lists_and_before_the_limiter() {
        let s = Source::V4([192, 0, 2, 1]);
        let f = udp_frame([192, 0, 2, 1]);
        let limiter = DropOne(Some(s));
        let none = Fake { allow: None, block: None, block_lookups: Cell::new(0) };
        assert_eq!(classify(&f[..], &none, &NoRules(true), &limiter), Reason::Rule);
        assert_eq!(classify(&f[..], &none, &NoRules(false), &limiter), Reason::RateLimit);
        let allowed = Fake { allow: Some(s), block: None, block_lookups: Cell::new(0) };
        assert_eq!(classify(&f[..], &allowed, &NoRules(true), &limiter), Reason::Allowed);
        let blocked = Fake { allow: None, block: Some(s), block_lookups: Cell::new(0) };
        assert_eq!(classify(&f[..], &blocked, &NoRules(true), &limiter), Reason::Blocklist);
    }

    /// An IPv6 UDP packet from `src` behind `n` destination-options headers.
    fn v6_behind_dest_opts(src: [u8; 16], n: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((n * 8 + 8) as u16).to_be_bytes());
        f.push(if n == 0 { 17 } else { 60 });
        f.push(64);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        for i in 0..n {
            f.extend_from_slice(&[if i + 1 == n { 17 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
        }
        f.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
        f
    }

    /// `v4_frame` behind `tags` VLAN tags with VLAN ID 0 (priority tags).
    fn v4_tagged(src: [u8; 4], tags: usize) -> Vec<u8> {
        let f = v4_frame(src);
        let mut out = f[..12].to_vec();
        for _ in 0..tags {
            out.extend_from_slice(&[0x81, 0x00, 0, 0]);
        }
        out.extend_from_slice(&f[12..]);
        out
    }

    #[test]
    fn a_listed_source_is_dropped_behind_any_extension_chain() {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0xba, 0xd0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let other = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let blocked = Fake { allow: None, block: Some(Source::V6(src)), block_lookups: Cell::new(0) };
        for n in [0, 6, 7, 20] {
            let f = v6_behind_dest_opts(src, n);
            assert_eq!(classify(&f[..], &blocked, &NoRules(false), &OFF), Reason::Blocklist, "{n} headers");
            // An unlisted source: the ports matter only when something needs them.
            let f = v6_behind_dest_opts(other, n);
            let (quiet, strict) = if n > crate::parse::MAX_EXT_HEADERS {
                (Reason::L4Unseen, Reason::Unchecked)
            } else {
                (Reason::Passed, Reason::Rule)
            };
            assert_eq!(classify(&f[..], &blocked, &NoRules(false), &OFF), quiet, "{n} headers, no rules");
            assert_eq!(classify(&f[..], &blocked, &NoRules(true), &OFF), strict, "{n} headers, rules");
            // The limiter decides on the source too.
            let limiter = DropOne(Some(Source::V6(other)));
            assert_eq!(classify(&f[..], &blocked, &NoRules(false), &limiter), Reason::RateLimit, "{n}");
        }
    }

    #[test]
    fn vlan_stacks_deeper_than_the_walk_are_dropped() {
        let src = [192, 0, 2, 1];
        let blocked = Fake { allow: None, block: Some(Source::V4(src)), block_lookups: Cell::new(0) };
        let allowed = Fake { allow: Some(Source::V4(src)), block: None, block_lookups: Cell::new(0) };
        for tags in 0..=crate::parse::MAX_VLAN_TAGS {
            let f = v4_tagged(src, tags);
            assert_eq!(classify(&f[..], &blocked, &NoRules(false), &OFF), Reason::Blocklist, "{tags}");
            assert_eq!(classify(&f[..], &allowed, &NoRules(false), &OFF), Reason::Allowed, "{tags}");
        }
        for tags in crate::parse::MAX_VLAN_TAGS + 1..=5 {
            let f = v4_tagged(src, tags);
            // Not even an allowlisted source: what is behind the tags cannot be read.
            assert_eq!(classify(&f[..], &allowed, &NoRules(false), &OFF), Reason::Unchecked, "{tags}");
        }
    }

    #[test]
    fn a_listed_source_with_a_cut_transport_header_is_still_dropped() {
        let src = [192, 0, 2, 1];
        let mut f = udp_frame(src);
        f[14 + 3] = 24; // 4 bytes of UDP header
        f.truncate(14 + 24);
        let blocked = Fake { allow: None, block: Some(Source::V4(src)), block_lookups: Cell::new(0) };
        let none = Fake { allow: None, block: None, block_lookups: Cell::new(0) };
        assert_eq!(classify(&f[..], &blocked, &NoRules(true), &OFF), Reason::Blocklist);
        assert_eq!(classify(&f[..], &none, &NoRules(true), &OFF), Reason::Malformed);
    }

    #[test]
    fn only_lists_limits_rules_and_policy_drop() {
        let dropping: Vec<_> = Reason::ALL.into_iter().filter(|r| r.drops()).collect();
        assert_eq!(
            dropping,
            [
                Reason::Blocklist,
                Reason::RateLimit,
                Reason::SynLimit,
                Reason::Rule,
                Reason::Policy,
                Reason::Fragment,
                Reason::Unchecked
            ]
        );
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "Reason::ALL is in counter-index order");
        }
        // Every check that drops can observe instead, except the frames nothing could check.
        let observable: Vec<_> = dropping.iter().copied().filter(|r| *r != Reason::Unchecked).collect();
        assert_eq!(Reason::OBSERVABLE[..], observable[..]);
    }

    /// Lists with a watchlist, and a limiter in observe mode.
    struct Watching {
        block: Option<Source>,
        watch: Option<Source>,
    }
    impl Lists for Watching {
        fn allowed(&self, _: &Source) -> bool {
            false
        }
        fn blocked(&self, src: &Source) -> bool {
            self.block == Some(*src)
        }
        fn watched(&self, src: &Source) -> bool {
            self.watch == Some(*src)
        }
    }
    struct Observing(DropOne);
    impl Limiter for Observing {
        fn banned(&self, s: &Source) -> bool {
            self.0.banned(s)
        }
        fn police(&self, pkt: &Packet, len: u64) -> Reason {
            self.0.police(pkt, len)
        }
        fn observing(&self) -> bool {
            true
        }
    }

    #[test]
    fn observed_checks_pass_the_frame_and_name_the_first_that_would_drop_it() {
        let (a, b) = ([192, 0, 2, 1], [192, 0, 2, 2]);
        let v = |reason, would_drop: Option<Reason>| Verdict {
            reason,
            would_drop,
            observed: would_drop.map_or(0, |r| 1 << r as u32),
        };
        let watching = Watching { block: Some(Source::V4(b)), watch: Some(Source::V4(a)) };
        let f = udp_frame(a);
        assert_eq!(
            super::classify(&f[..], &watching, &NoRules(false), &OFF),
            v(Reason::Passed, Some(Reason::Blocklist))
        );
        // Enforcing checks after it still drop; the note says what came first.
        assert_eq!(
            super::classify(&f[..], &watching, &NoRules(true), &OFF),
            v(Reason::Rule, Some(Reason::Blocklist))
        );
        // A source on the blocklist and the watchlist is dropped.
        let both = Watching { block: Some(Source::V4(a)), watch: Some(Source::V4(a)) };
        assert_eq!(super::classify(&f[..], &both, &NoRules(false), &OFF), v(Reason::Blocklist, None));
        // Limits in observe mode pass what they would drop.
        let none = Watching { block: None, watch: None };
        let limiter = Observing(DropOne(Some(Source::V4(a))));
        assert_eq!(
            super::classify(&f[..], &none, &NoRules(false), &limiter),
            v(Reason::Passed, Some(Reason::RateLimit))
        );
        assert_eq!(
            super::classify(&udp_frame(b)[..], &none, &NoRules(false), &limiter),
            v(Reason::Passed, None)
        );
        // Two checks would drop it: the first goes with the sample, both count.
        let both = super::classify(&f[..], &watching, &NoRules(false), &limiter);
        assert_eq!((both.reason, both.would_drop), (Reason::Passed, Some(Reason::Blocklist)));
        assert_eq!(both.observed, 1 << Reason::Blocklist as u32 | 1 << Reason::RateLimit as u32);
    }
}
