//! The maps behind filter_common::rules: the port table, whole-protocol rules,
//! per-rule counters, and the served-ports policy (two slots, flipped atomically).

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use filter_common::{
    ACTIVE_POLICY, Counter,
    rules::{
        MAX_RULES, PORT_TABLE_ENTRIES, PROTO_RULE_ENTRIES, PolicyConfig, Proto, RULES_IN_FORCE, Rules,
        SERVED_ENTRIES, port_bit, served_base,
    },
};

use crate::{clock::Clock, lists::ACTIVE};

#[map(name = "FG_PORT_RULES")]
static PORT_RULES: Array<u32> = Array::with_max_entries(PORT_TABLE_ENTRIES, 0);
#[map(name = "FG_PROTO_RULES")]
static PROTO_RULES: Array<u32> = Array::with_max_entries(PROTO_RULE_ENTRIES, 0);
#[map(name = "FG_RULE_COUNTERS")]
static RULE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_RULES + 1, 0);
#[map(name = "FG_POLICY")]
static POLICY: Array<PolicyConfig> = Array::with_max_entries(2, 0);
#[map(name = "FG_SERVED")]
static SERVED: Array<u64> = Array::with_max_entries(SERVED_ENTRIES, 0);
// Written and read by controllers only; declared here so the object carries it.
#[map(name = "FG_RULES")]
static RULES: Array<filter_common::rules::RuleInfo> = Array::with_max_entries(MAX_RULES + 1, 0);

pub struct MapRules<'a> {
    slot: u32,
    clock: &'a Clock,
}

impl<'a> MapRules<'a> {
    #[inline(always)]
    pub fn new(clock: &'a Clock) -> Self {
        Self { slot: ACTIVE.get(ACTIVE_POLICY).copied().unwrap_or(0) & 1, clock }
    }
}

impl Rules for MapRules<'_> {
    #[inline(always)]
    fn policy(&self) -> PolicyConfig {
        POLICY.get(self.slot).copied().unwrap_or_default()
    }

    #[inline(always)]
    fn served(&self, proto: Proto, port: u16) -> bool {
        let (i, bit) = port_bit(port);
        SERVED.get(served_base(self.slot, proto) + i).is_some_and(|w| w & bit != 0)
    }

    #[inline(always)]
    fn port_rule(&self, slot: u32) -> u32 {
        PORT_RULES.get(slot).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn proto_rule(&self, proto: Proto) -> u32 {
        PROTO_RULES.get(proto as u32).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn syn_answer(&self, port: u16) -> bool {
        crate::synproxy::answer_now(port, self.clock)
    }

    #[inline(always)]
    fn rules_in_force(&self) -> u32 {
        PROTO_RULES.get(RULES_IN_FORCE).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn syn_cookies(&self) -> bool {
        crate::synproxy::enabled()
    }

    #[inline(always)]
    fn hit(&self, id: u32, len: u64) {
        if let Some(c) = RULE_COUNTERS.get_ptr_mut(id) {
            // SAFETY: this CPU's slot.
            unsafe {
                (*c).packets += 1;
                (*c).bytes += len;
            }
        }
    }
}
