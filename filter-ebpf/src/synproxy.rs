//! SYN cookies in the driver: `fg_synproxy`, tail-called by the entry for a SYN to a
//! protected port, rewrites the SYN in place into a SYN-ACK carrying a cookie from
//! the kernel's own secret and sends it back with XDP_TX. netfilter's SYNPROXY (set up
//! by `floodgate synproxy enable`) checks the client's ACK and opens the connection.
//!
//! A separate program so the verifier judges its option parsing and checksums apart
//! from the main path. Headers are copied to the stack (bpf_xdp_load_bytes) so the
//! cookie helper, which wants a header length it can check at its maximum, gets stack
//! buffers of the full size. Only plain headers are answered: IPv4 with options or
//! IPv6 with extension headers go to the stack as usual.
//!
//! The SYN-ACK announces window 0 (as SYNPROXY's own do), so a client whose ACK is
//! lost cannot resend it: it sends zero-window probes one sequence number lower,
//! whose cookie SYNPROXY rejects, and the connection hangs until the client gives up.
//! `fg_ackprobe`, tail-called by the entry for every small frame it passes, finds
//! such a probe (`probe_candidate`: TSecr carries the low bits of the client's ISN,
//! and the cookie checks out one sequence number up) and passes it repaired, so
//! SYNPROXY opens the connection (every other probe of a handshake: `repair_probe`).
//! A program of its own, so that neither the entry's nor the answerer's verification
//! grows (6.1's verifier is near its budget on the entry).

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::{
        bpf_ktime_get_ns, bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6,
        bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_tail,
        bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use filter_common::{
    PacketView, Reason, TAIL_PROGRAMS,
    limit::take,
    parse::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPV4_FRAG_MASK,
        IPV4_PLAIN_VIHL, MAX_VLAN_TAGS, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, VLAN_HLEN,
    },
    rules::{self, PORT_WORDS, port_bit},
    synproxy::{
        MAX_OPTS, MAX_PROBES, MAX_TCP_HLEN, OptScan, ProbeKey, SYNACK_LEN, SYNACK_SHORT, SynProxyConfig,
        build_synack, csum_add, csum_fold, csum_replace4, ipv4_csum, probe_candidate, pseudo_v4, pseudo_v6,
        repair_probe, ts_cookie,
    },
};

use crate::{clock::Clock, limiter::Shared, record, view::XdpView};

#[map(name = "FG_SYNPROXY")]
static CONFIG: Array<SynProxyConfig> = Array::with_max_entries(1, 0);
#[map(name = "FG_SYN_PORTS")]
static PORTS: Array<u64> = Array::with_max_entries(PORT_WORDS, 0);
#[map(name = "FG_SYN_RATE")]
static RATE: Array<u64> = Array::with_max_entries(rules::PORTS, 0);
#[map(name = "FG_TAILS")]
pub static TAILS: ProgramArray = ProgramArray::with_max_entries(TAIL_PROGRAMS.len() as u32, 0);
#[map(name = "FG_PROBES")]
static PROBES: LruHashMap<ProbeKey, u32> = LruHashMap::with_max_entries(MAX_PROBES, 0);

/// Whether SYN cookies are on at all.
#[inline(always)]
pub fn enabled() -> bool {
    CONFIG.get(0).is_some_and(|c| c.enabled != 0)
}

/// Whether SYN cookies are on for TCP `port`.
#[inline(always)]
pub fn cookie_port(port: u16) -> bool {
    CONFIG.get(0).is_some_and(|cfg| protected(cfg, port))
}

/// Whether `cfg` has SYN cookies on and `port` among the protected ones.
#[inline(always)]
fn protected(cfg: &SynProxyConfig, port: u16) -> bool {
    let (i, bit) = port_bit(port);
    cfg.enabled != 0 && PORTS.get(i).is_some_and(|w| w & bit != 0)
}

/// Whether a SYN to `port` is answered now: the port is protected and its SYN rate
/// is over `--above` (below it, SYNs reach the listener with every TCP option).
#[inline(always)]
pub fn answer_now(port: u16, clock: &Clock) -> bool {
    let Some(cfg) = CONFIG.get(0) else { return false };
    if !protected(cfg, port) {
        return false;
    }
    if cfg.above_pps == 0 {
        return true;
    }
    let Some(tat) = RATE.get_ptr_mut(port as u32) else { return true };
    !take(&cfg.above, &Shared(tat), clock.now(), cfg.above.cost)
}

// Inlined into the entry aya generates: a BPF-to-BPF call here made kernels before
// 6.3 mark every scalar precise (their precision tracking stops at subprograms), and
// the 6.1 verifier then ran out of its 1M-instruction budget.
#[xdp]
#[inline(always)]
pub fn fg_synproxy(ctx: XdpContext) -> u32 {
    let len = ctx.data_end() - ctx.data();
    if answer(&ctx).is_some() {
        record(Reason::SynProxy, len);
        xdp_action::XDP_TX
    } else {
        record(Reason::Passed, len);
        xdp_action::XDP_PASS
    }
}

/// Tail-called for every small frame the entry passed (see the module comment).
/// Inlined for the reason given above.
#[xdp]
#[inline(always)]
pub fn fg_ackprobe(ctx: XdpContext) -> u32 {
    let len = ctx.data_end() - ctx.data();
    if repair(&ctx).is_some() {
        record(Reason::AckRepaired, len);
    } else {
        record(Reason::Passed, len);
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn load<const N: usize>(md: *mut xdp_md, off: usize, buf: &mut [u8; N]) -> Option<()> {
    // SAFETY: the helper copies at most N bytes into our stack buffer.
    let r = unsafe { bpf_xdp_load_bytes(md, off as u32, buf.as_mut_ptr() as *mut _, N as u32) };
    (r == 0).then_some(())
}

#[inline(always)]
fn store(md: *mut xdp_md, off: usize, buf: &mut [u8], len: u32) -> Option<()> {
    // SAFETY: the helper copies `len` (<= buf.len()) bytes from our stack buffer.
    let r = unsafe { bpf_xdp_store_bytes(md, off as u32, buf.as_mut_ptr() as *mut _, len) };
    (r == 0).then_some(())
}

/// Offset and version of the IP header.
#[inline(always)]
fn locate(v: &XdpView) -> Option<(usize, bool)> {
    let mut proto = u16::from_be_bytes(v.bytes::<2>(12)?);
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        proto = u16::from_be_bytes(v.bytes::<2>(l3 + 2)?);
        l3 += VLAN_HLEN;
    }
    match proto {
        ETH_P_IP => Some((l3, false)),
        ETH_P_IPV6 => Some((l3, true)),
        _ => None,
    }
}

/// Per-CPU working memory: the headers do not fit the 512-byte BPF stack together.
#[repr(C)]
pub struct Scratch {
    ip: [u8; 40],
    syn: [u8; MAX_TCP_HLEN],
    opts: [u8; MAX_OPTS],
    out: [u8; MAX_TCP_HLEN],
    rip: [u8; 40],
    ip4: [u8; 20],
    scan: OptScan,
    macs: [u8; 12],
    swapped: [u8; 12],
}

#[map(name = "FG_SYN_SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Copies the client's TCP header into `s.syn` (zero-padded to 60 bytes); returns
/// its length (if it is a SYN, with `SYN`). Read in constant 4-byte steps straight from the packet:
/// a helper copy would need a length the verifier can prove non-zero, and LLVM tends
/// to check one copy of a variable and pass another.
#[inline(always)]
fn tcp_header<const SYN: bool>(v: &XdpView, l4: usize, s: &mut Scratch) -> Option<usize> {
    let th_len = ((v.bytes::<1>(l4 + 12)?[0] >> 4) as usize) * 4;
    if th_len < 20 {
        return None;
    }
    // Bytes past th_len are left as they were: nothing reads them.
    for i in 0..MAX_TCP_HLEN / 4 {
        if 4 * i >= th_len {
            break;
        }
        let w = v.bytes::<4>(l4 + 4 * i)?;
        s.syn[4 * i..4 * i + 4].copy_from_slice(&w);
    }
    // Checked here, not by the caller: 6.1's verifier is at its limit on the SYN path,
    // and the other order of the same code took it over.
    if SYN && s.syn[13] & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK) != TCP_SYN {
        return None;
    }
    Some(th_len)
}

/// The cookie helper's result for `s.syn` of `th_len` bytes behind IP header `ip`.
#[inline(always)]
fn cookie(ip: *mut u8, v6: bool, s: &mut Scratch, th_len: usize) -> i64 {
    let th = s.syn.as_mut_ptr() as *mut _;
    // Restates what th_len already is (a multiple of 4 from 20 to 60) in a form whose
    // bounds the verifier sees on the register it checks: 6.1 rejects a possible 0.
    let len = 20 + ((th_len as u32 - 20) & 0x3c);
    // SAFETY: buffers of the sizes the helper checks: the IP header, and up to 60
    // bytes of TCP header in the scratch map value.
    unsafe {
        if v6 {
            bpf_tcp_raw_gen_syncookie_ipv6(ip as *mut _, th, len)
        } else {
            bpf_tcp_raw_gen_syncookie_ipv4(ip as *mut _, th, len)
        }
    }
}

/// Writes the (40-byte) SYN-ACK's TCP header for `s.syn` into `s.out`; returns
/// whether the client sent timestamps (then only the full header carries what the
/// cookie needs), or `None` when the cookie helper failed.
#[inline(always)]
fn synack(s: &mut Scratch, th_len: usize, cookie: i64, cfg: &SynProxyConfig) -> Option<bool> {
    if cookie < 0 {
        return None;
    }
    for i in 0..MAX_OPTS {
        s.opts[i] = s.syn[20 + i];
    }
    // One step per byte position, straight-line with constant offsets, and the scan
    // state passed from step to step through the map value (volatile, so LLVM keeps
    // nothing in registers): the verifier does not track map memory, so all paths look
    // alike again at every step and it checks 40 steps instead of every combination
    // of option lengths (a loop, or bpf_loop, made it follow each one: too many).
    let st: *mut OptScan = &mut s.scan;
    // SAFETY: st points into this CPU's scratch value.
    unsafe { (*st).reset(th_len - 20) };
    macro_rules! scan {
        ($($p:literal)*) => {
            'scan: {
                $({
                    // SAFETY: as above.
                    let mut sc = unsafe { core::ptr::read_volatile(st) };
                    let go = sc.step($p, s.opts[$p]);
                    unsafe { core::ptr::write_volatile(st, sc) };
                    if !go {
                        break 'scan;
                    }
                })*
            }
        };
    }
    scan!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39);
    // SAFETY: as above.
    let o = unsafe { core::ptr::read_volatile(st) }.o;
    // SAFETY: a helper without arguments.
    let now_ms = (unsafe { bpf_ktime_get_ns() } / 1_000_000) as u32;
    let isn = u32::from_be_bytes([s.syn[4], s.syn[5], s.syn[6], s.syn[7]]);
    let ts = ts_cookie(now_ms, &o, isn);
    build_synack(&s.syn, &o, cookie as u32, (cookie >> 32) as u16, ts, cfg.wscale, &mut s.out);
    Some(o.ts_ok)
}

/// Shrinks (or grows) the frame to `len` bytes; false if it cannot grow that far.
#[inline(always)]
fn fit(ctx: &XdpContext, len: usize) -> bool {
    let delta = len as i32 - (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: the helper checks the new length against the buffer.
    delta == 0 || unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } == 0
}

/// Swaps the MAC addresses.
#[inline(always)]
fn swap_macs(ctx: &XdpContext, s: &mut Scratch) -> Option<()> {
    load(ctx.ctx, 0, &mut s.macs)?;
    for i in 0..6 {
        s.swapped[i] = s.macs[6 + i];
        s.swapped[6 + i] = s.macs[i];
    }
    store(ctx.ctx, 0, &mut s.swapped, 12)
}

/// Copies the plain IP header at `l3` into the scratch (`s.ip` for IPv6, `s.ip4` for
/// IPv4) if it carries TCP and is not a fragment; returns the TCP header's offset.
#[inline(always)]
fn ip_header(md: *mut xdp_md, l3: usize, v6: bool, s: &mut Scratch) -> Option<usize> {
    if v6 {
        load(md, l3, &mut s.ip)?;
        if s.ip[0] >> 4 != 6 || s.ip[6] != IPPROTO_TCP {
            return None;
        }
        Some(l3 + 40)
    } else {
        load(md, l3, &mut s.ip4)?;
        if s.ip4[0] != IPV4_PLAIN_VIHL
            || s.ip4[9] != IPPROTO_TCP
            || u16::from_be_bytes([s.ip4[6], s.ip4[7]]) & IPV4_FRAG_MASK != 0
        {
            return None;
        }
        Some(l3 + 20)
    }
}

/// If the frame is a zero-window probe for one of our cookies (`probe_candidate`,
/// and the cookie checks out one sequence number up) to a protected port, moves its
/// sequence number up by one in the packet (with the checksum) when `repair_probe`
/// says so for this handshake's count of probes.
#[inline(always)]
fn repair(ctx: &XdpContext) -> Option<()> {
    let cfg = CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; nothing else runs on this CPU meanwhile.
    let s = unsafe { &mut *s };
    let view = XdpView::new(ctx);
    let md = ctx.ctx;
    let (l3, v6) = locate(&view)?;
    let l4 = ip_header(md, l3, v6, s)?;
    let th_len = tcp_header::<false>(&view, l4, s)?;
    let ip_payload = if v6 {
        u16::from_be_bytes([s.ip[4], s.ip[5]]) as usize
    } else {
        (u16::from_be_bytes([s.ip4[2], s.ip4[3]]) as usize).wrapping_sub(20)
    };
    let seq = probe_candidate(&s.syn, th_len, ip_payload)?;
    if !cookie_port(u16::from_be_bytes([s.syn[2], s.syn[3]])) {
        return None;
    }
    let up = seq.wrapping_add(1);
    s.syn[4..8].copy_from_slice(&up.to_be_bytes());
    let th = s.syn.as_mut_ptr() as *mut _;
    // SAFETY: the IP header and (at least) the 20-byte TCP header the helper reads.
    let valid = unsafe {
        if v6 {
            bpf_tcp_raw_check_syncookie_ipv6(s.ip.as_mut_ptr() as *mut _, th)
        } else {
            bpf_tcp_raw_check_syncookie_ipv4(s.ip4.as_mut_ptr() as *mut _, th)
        }
    } == 0;
    if !valid {
        return None;
    }
    let mut key = ProbeKey::default();
    if v6 {
        key.src.copy_from_slice(&s.ip[8..24]);
        key.dst.copy_from_slice(&s.ip[24..40]);
    } else {
        key.src[..4].copy_from_slice(&s.ip4[12..16]);
        key.dst[..4].copy_from_slice(&s.ip4[16..20]);
    }
    key.ports.copy_from_slice(&s.syn[0..4]);
    key.ack.copy_from_slice(&s.syn[8..12]);
    let n = match PROBES.get_ptr_mut(&key) {
        // SAFETY: a value of the map; a lost race between CPUs only skips a count.
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => {
            // Written at run time: a constant behind a reference becomes a .rodata map.
            let mut one = 0u32;
            // SAFETY: a local.
            unsafe { core::ptr::write_volatile(&mut one, 1) };
            let _ = PROBES.insert(&key, &one, 0);
            1
        }
    };
    if !repair_probe(n) {
        return None;
    }
    let check = csum_replace4(u16::from_be_bytes([s.syn[16], s.syn[17]]), seq, up);
    s.out[..4].copy_from_slice(&up.to_be_bytes());
    store(md, l4 + 4, &mut s.out, 4)?;
    s.out[..2].copy_from_slice(&check.to_be_bytes());
    store(md, l4 + 16, &mut s.out, 2)
}

#[inline(always)]
fn answer(ctx: &XdpContext) -> Option<()> {
    let cfg = CONFIG.get(0)?;
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; nothing else runs on this CPU meanwhile.
    let s = unsafe { &mut *s };
    let view = XdpView::new(ctx);
    let md = ctx.ctx;
    let (l3, v6) = locate(&view)?;
    // The IP header into s.ip: plain (IPv4 without options, IPv6 without extension
    // headers), TCP, not a fragment. (Not through ip_header: the same code in another
    // shape took 6.1's verifier over its budget here.)
    let l4 = if v6 {
        load(md, l3, &mut s.ip)?;
        if s.ip[0] >> 4 != 6 || s.ip[6] != IPPROTO_TCP {
            return None;
        }
        l3 + 40
    } else {
        load(md, l3, &mut s.ip4)?;
        if s.ip4[0] != IPV4_PLAIN_VIHL
            || s.ip4[9] != IPPROTO_TCP
            || u16::from_be_bytes([s.ip4[6], s.ip4[7]]) & IPV4_FRAG_MASK != 0
        {
            return None;
        }
        l3 + 20
    };
    let th_len = tcp_header::<true>(&view, l4, s)?;
    let ip = if v6 { s.ip.as_mut_ptr() } else { s.ip4.as_mut_ptr() };
    let c = cookie(ip, v6, s, th_len);
    // Parsed and built once for both families: the option walk is the costly part
    // for the verifier.
    let ts_ok = synack(s, th_len, c, cfg)?;
    // The full 40-byte SYN-ACK; or, where the frame cannot grow that far (a SYN
    // without options in a buffer without tailroom, e.g. on veth), the MSS-only
    // 24-byte one when the client sent no timestamps (it then carries nothing more).
    let short = !fit(ctx, l4 + SYNACK_LEN);
    if short && (ts_ok || !fit(ctx, l4 + SYNACK_SHORT)) {
        return None;
    }
    if short {
        s.out[12] = ((SYNACK_SHORT / 4) as u8) << 4;
    }
    swap_macs(ctx, s)?;
    if v6 {
        // Byte by byte: a constant array would become a .rodata map.
        s.rip[0] = 0x60;
        s.rip[1] = 0;
        s.rip[2] = 0;
        s.rip[3] = 0;
        s.rip[4] = 0;
        s.rip[6] = 6;
        s.rip[7] = 64;
        for i in 0..16 {
            s.rip[8 + i] = s.ip[24 + i];
            s.rip[24 + i] = s.ip[8 + i];
        }
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&s.rip[8..24]);
        dst.copy_from_slice(&s.rip[24..40]);
        // Two constant lengths, so the verifier sees constant sizes everywhere.
        let c = if short {
            s.rip[5] = SYNACK_SHORT as u8;
            csum_fold(csum_add(pseudo_v6(&src, &dst, SYNACK_SHORT), &s.out, SYNACK_SHORT))
        } else {
            s.rip[5] = SYNACK_LEN as u8;
            csum_fold(csum_add(pseudo_v6(&src, &dst, SYNACK_LEN), &s.out, SYNACK_LEN))
        };
        s.out[16..18].copy_from_slice(&c.to_be_bytes());
        store(md, l3, &mut s.rip, 40)?;
    } else {
        let (src, dst) =
            ([s.ip4[16], s.ip4[17], s.ip4[18], s.ip4[19]], [s.ip4[12], s.ip4[13], s.ip4[14], s.ip4[15]]);
        let (c, total) = if short {
            (csum_fold(csum_add(pseudo_v4(src, dst, SYNACK_SHORT), &s.out, SYNACK_SHORT)), 20 + SYNACK_SHORT)
        } else {
            (csum_fold(csum_add(pseudo_v4(src, dst, SYNACK_LEN), &s.out, SYNACK_LEN)), 20 + SYNACK_LEN)
        };
        s.out[16..18].copy_from_slice(&c.to_be_bytes());
        // Don't Fragment, TTL 64.
        let mut rip = [
            IPV4_PLAIN_VIHL,
            0,
            0,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            IPPROTO_TCP,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        rip[12..16].copy_from_slice(&src);
        rip[16..20].copy_from_slice(&dst);
        let c = ipv4_csum(&rip);
        rip[10..12].copy_from_slice(&c.to_be_bytes());
        s.rip[..20].copy_from_slice(&rip);
        store(md, l3, &mut s.rip, 20)?;
    }
    if short {
        store(md, l4, &mut s.out, SYNACK_SHORT as u32)
    } else {
        store(md, l4, &mut s.out, SYNACK_LEN as u32)
    }
}
