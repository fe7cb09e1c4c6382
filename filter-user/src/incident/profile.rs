//! An incident's profile built from its samples: heaviest sources, prefixes and
//! ports in Space-Saving summaries, and exact histograms of the rest, each sample
//! weighted by how many frames of its reason it stands for.

use std::{collections::BTreeMap, net::IpAddr};

use filter_common::Reason;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    record::{Profile, Top, size_bucket},
    sketch::SpaceSaving,
};
use crate::sampler::{Captured, decode::decode};

/// Counters each summary keeps: an estimate is off by at most 1/1024 of the
/// incident's sampled traffic.
pub const SKETCH_CAPACITY: usize = 1024;
/// Entries each top list of the record shows.
pub const TOP_N: usize = 20;

/// The summaries of one incident as samples come in.
pub struct Builder {
    samples: u64,
    estimated: u64,
    sources: SpaceSaving<IpAddr>,
    v4: SpaceSaving<Ipv4Net>,
    v6: SpaceSaving<Ipv6Net>,
    ports: SpaceSaving<String>,
    protocols: BTreeMap<String, u64>,
    sizes: BTreeMap<String, u64>,
    ttls: BTreeMap<u8, u64>,
    reasons: BTreeMap<String, u64>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            samples: 0,
            estimated: 0,
            sources: SpaceSaving::new(SKETCH_CAPACITY),
            v4: SpaceSaving::new(SKETCH_CAPACITY),
            v6: SpaceSaving::new(SKETCH_CAPACITY),
            ports: SpaceSaving::new(SKETCH_CAPACITY),
            protocols: BTreeMap::new(),
            sizes: BTreeMap::new(),
            ttls: BTreeMap::new(),
            reasons: BTreeMap::new(),
        }
    }
}

impl Builder {
    /// Picks up a profile saved before a restart: its tops and histograms count again
    /// as they were (the summaries' tails are gone, so estimates stay upper bounds
    /// only for what was on the tops).
    pub fn resume(p: &Profile) -> Self {
        let mut b = Builder { samples: p.samples, estimated: p.estimated_packets, ..Default::default() };
        for t in &p.sources {
            if let Ok(a) = t.key.parse() {
                b.sources.add(a, t.packets);
            }
        }
        for t in p.prefixes_v4.iter().chain(&p.prefixes_v6) {
            match t.key.parse::<IpNet>() {
                Ok(IpNet::V4(n)) => b.v4.add(n, t.packets),
                Ok(IpNet::V6(n)) => b.v6.add(n, t.packets),
                Err(_) => {}
            }
        }
        for t in &p.ports {
            b.ports.add(t.key.clone(), t.packets);
        }
        b.protocols = p.protocols.clone();
        b.sizes = p.sizes.clone();
        b.ttls = p.ttls.clone();
        b.reasons = p.reasons.clone();
        b
    }

    /// One sample standing for `weight` frames.
    pub fn add(&mut self, c: &Captured, weight: u64) {
        let weight = weight.max(1);
        self.samples += 1;
        self.estimated += weight;
        let d = decode(c.bytes());
        if let Some(src) = d.src {
            self.sources.add(src, weight);
            match src {
                IpAddr::V4(a) => self.v4.add(Ipv4Net::new(a, 24).expect("24 <= 32").trunc(), weight),
                IpAddr::V6(a) => self.v6.add(Ipv6Net::new(a, 48).expect("48 <= 128").trunc(), weight),
            }
        }
        if let Some(p) = d.dst_port_key() {
            self.ports.add(p, weight);
        }
        *self.protocols.entry(d.proto_name().to_string()).or_default() += weight;
        *self.sizes.entry(size_bucket(c.sample.frame_len).to_string()).or_default() += weight;
        if let Some(ttl) = d.ttl {
            *self.ttls.entry(ttl).or_default() += weight;
        }
        let reason = c.reason().map_or("unknown", Reason::key);
        *self.reasons.entry(reason.to_string()).or_default() += weight;
    }

    pub fn profile(&self) -> Profile {
        Profile {
            samples: self.samples,
            estimated_packets: self.estimated,
            sketch_capacity: SKETCH_CAPACITY as u32,
            sources: tops(&self.sources),
            prefixes_v4: tops(&self.v4),
            prefixes_v6: tops(&self.v6),
            ports: tops(&self.ports),
            protocols: self.protocols.clone(),
            sizes: self.sizes.clone(),
            ttls: self.ttls.clone(),
            reasons: self.reasons.clone(),
        }
    }
}

fn tops<K: Clone + Eq + std::hash::Hash + ToString>(s: &SpaceSaving<K>) -> Vec<Top> {
    s.top(TOP_N)
        .into_iter()
        .map(|c| Top { key: c.key.to_string(), packets: c.count, error: c.error })
        .collect()
}

/// Per reason: how many frames each sample of this second stands for (the reason's
/// frames counted by the data path over the samples of it that arrived).
pub fn weights(packets: &[u64], samples: &[Captured]) -> [u64; Reason::COUNT as usize] {
    let mut n = [0u64; Reason::COUNT as usize];
    for c in samples {
        if let Some(r) = c.reason() {
            n[r as usize] += 1;
        }
    }
    let mut w = [0u64; Reason::COUNT as usize];
    for r in 0..w.len() {
        if n[r] > 0 {
            w[r] = packets.get(r).copied().unwrap_or(0).div_ceil(n[r]).max(1);
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use filter_common::sample::Sample;

    use super::*;

    fn sample(src: [u8; 4], reason: Reason, ttl: u8) -> Captured {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, ttl, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[10, 0, 0, 1, 0x30, 0x39, 0, 53, 0, 8, 0, 0]);
        let mut s = Sample {
            frame_len: f.len() as u32,
            cap_len: f.len() as u16,
            reason: reason as u8,
            ..Default::default()
        };
        s.data[..f.len()].copy_from_slice(&f);
        Captured { unix_ns: 0, sample: s }
    }

    #[test]
    fn a_random_source_flood_from_one_range_tops_the_prefixes() {
        let mut b = Builder::default();
        // 20,000 samples from 203.0.113.0/24 (random hosts), 200 from elsewhere.
        for i in 0..20_000u32 {
            b.add(&sample([203, 0, 113, (i % 250) as u8], Reason::Blocklist, 51), 100);
        }
        for i in 0..200u32 {
            b.add(&sample([198, 51, (i % 200) as u8, 1], Reason::Passed, 64), 1);
        }
        let p = b.profile();
        assert_eq!(p.prefixes_v4[0].key, "203.0.113.0/24");
        assert_eq!(p.prefixes_v4[0].packets, 2_000_000);
        assert_eq!(p.ports[0].key, "udp/53");
        assert_eq!(p.ttls[&51], 2_000_000);
        assert_eq!(p.reasons["blocklist"], 2_000_000);
        assert_eq!(p.estimated_packets, 2_000_200);
        let r = Builder::resume(&p).profile();
        assert_eq!(r.prefixes_v4[0], p.prefixes_v4[0]);
    }

    #[test]
    fn weights_scale_samples_to_the_counters() {
        let s = vec![sample([192, 0, 2, 1], Reason::Blocklist, 64); 10];
        let mut packets = [0u64; Reason::COUNT as usize];
        packets[Reason::Blocklist as usize] = 1000;
        let w = weights(&packets, &s);
        assert_eq!(w[Reason::Blocklist as usize], 100);
        assert_eq!(w[Reason::Passed as usize], 0);
    }
}
