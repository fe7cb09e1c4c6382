//! The per-packet decision, independent of where the lists live: the XDP program
//! implements [`Lists`] over its maps, the host tests over plain sets.

use crate::{
    Reason,
    parse::{Frame, Packet, PacketView, Source, parse},
    rules::{self, Rules},
};

/// Membership tests the decision needs. Implementations answer for the active
/// generation of each list, ignoring expired entries.
pub trait Lists {
    fn allowed(&self, src: &Source) -> bool;
    fn blocked(&self, src: &Source) -> bool;
}

/// The rate limiter as the decision sees it.
pub trait Limiter {
    /// Whether the source is under an (unexpired) auto-ban.
    fn banned(&self, src: &Source) -> bool;
    /// [`Reason::Passed`], [`Reason::RateLimit`] or [`Reason::SynLimit`] for a packet
    /// of `len` bytes; always `Passed` while no limit is set.
    fn police(&self, pkt: &Packet, len: u64) -> Reason;
}

/// Decides one frame. Order: allowlist hit passes (nothing else is consulted, so a
/// source on both lists passes); blocklist or auto-ban hit drops; then protocol/port
/// rules, the served-ports policy and the fragment setting; then the rate limiter;
/// anything left passes.
#[inline(always)]
pub fn classify<V: PacketView + ?Sized, L: Lists, P: Rules, R: Limiter>(
    frame: &V,
    lists: &L,
    rules: &P,
    limiter: &R,
) -> Reason {
    match parse(frame) {
        Frame::NonIp => Reason::NonIp,
        Frame::Malformed => Reason::Malformed,
        Frame::Ip(pkt) => {
            if lists.allowed(&pkt.src) {
                Reason::Allowed
            } else if lists.blocked(&pkt.src) || limiter.banned(&pkt.src) {
                Reason::Blocklist
            } else if let Some(drop) = rules::check(rules, &pkt, frame.len() as u64) {
                drop
            } else {
                limiter.police(&pkt, frame.len() as u64)
            }
        }
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
                Reason::Fragment
            ]
        );
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "Reason::ALL is in counter-index order");
        }
    }
}
