//! The per-packet decision, independent of where the lists live: the XDP program
//! implements [`Lists`] over its maps, the host tests over plain sets.

use crate::{
    Reason,
    parse::{Frame, PacketView, Source, parse},
};

/// Membership tests the decision needs. Implementations answer for the active
/// generation of each list.
pub trait Lists {
    fn allowed(&self, src: &Source) -> bool;
    fn blocked(&self, src: &Source) -> bool;
}

/// Decides one frame: allowlist hit passes, blocklist hit drops, anything else
/// passes. The allowlist is consulted first so that a source on both lists passes,
/// and the blocklist is not looked up at all for allowlisted sources.
#[inline(always)]
pub fn classify<V: PacketView + ?Sized, L: Lists>(frame: &V, lists: &L) -> Reason {
    match parse(frame) {
        Frame::NonIp => Reason::NonIp,
        Frame::Malformed => Reason::Malformed,
        Frame::Ip(src) => {
            if lists.allowed(&src) {
                Reason::Allowed
            } else if lists.blocked(&src) {
                Reason::Blocklist
            } else {
                Reason::Passed
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

    fn v4_frame(src: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[198, 51, 100, 1]);
        f
    }

    #[test]
    fn allow_wins_and_skips_the_blocklist() {
        let s = Source::V4([192, 0, 2, 1]);
        let lists = Fake {
            allow: Some(s),
            block: Some(s),
            block_lookups: Cell::new(0),
        };
        assert_eq!(
            classify(&v4_frame([192, 0, 2, 1])[..], &lists),
            Reason::Allowed
        );
        assert_eq!(lists.block_lookups.get(), 0);
    }

    #[test]
    fn block_and_pass() {
        let lists = Fake {
            allow: None,
            block: Some(Source::V4([192, 0, 2, 1])),
            block_lookups: Cell::new(0),
        };
        assert_eq!(
            classify(&v4_frame([192, 0, 2, 1])[..], &lists),
            Reason::Blocklist
        );
        assert_eq!(
            classify(&v4_frame([192, 0, 2, 2])[..], &lists),
            Reason::Passed
        );
        assert_eq!(classify(&[0u8; 10][..], &lists), Reason::Malformed);
        let mut arp = [0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(classify(&arp[..], &lists), Reason::NonIp);
    }

    #[test]
    fn only_block_and_rate_limit_drop() {
        let dropping: Vec<_> = Reason::ALL.into_iter().filter(|r| r.drops()).collect();
        assert_eq!(dropping, [Reason::Blocklist, Reason::RateLimit]);
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "Reason::ALL is in counter-index order");
        }
    }
}
