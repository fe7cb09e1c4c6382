//! SYN cookies answered in the driver: the pure parts of turning a client's SYN into
//! a SYN-ACK (option parsing, the timestamp that carries the client's options, the
//! SYN-ACK's TCP header, checksums), shared by the XDP program and host tests.
//!
//! The cookie itself comes from the kernel (`bpf_tcp_raw_gen_syncookie_ipv4/6`, the
//! kernel's own secret), and netfilter's SYNPROXY validates the client's ACK and opens
//! the connection to the listener, so the SYN-ACK must look exactly like one the
//! kernel's cookie code would send: MSS from the cookie, and when the client sent
//! timestamps, its window scale and SACK-permitted in the low bits of TSval
//! (`cookie_init_timestamp`).

use crate::parse::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

/// What `synproxy enable` set, one entry in `FG_SYNPROXY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynProxyConfig {
    /// 1: answer SYNs to the ports in `FG_SYN_PORTS`.
    pub enabled: u8,
    /// The window scale announced (the listener's and SYNPROXY's).
    pub wscale: u8,
    pub _pad: u16,
    /// SYNs per second per port that go to the listener unanswered (0: none).
    pub above_pps: u32,
    /// Per-port bucket for `above_pps` (see [`crate::limit::Bucket`]).
    pub above: crate::limit::Bucket,
    /// Sysctl values before `enable` changed them, restored by `disable` (-1: untouched).
    pub old_tcp_loose: i32,
    pub old_syncookies: i32,
}

/// Length of every SYN-ACK's TCP header.
pub const SYNACK_LEN: usize = 40;
/// The SYN-ACK cut after its MSS option (for a client without timestamps, whose
/// SYN-ACK carries nothing else), where the frame cannot grow to the full length.
pub const SYNACK_SHORT: usize = 24;

/// Bytes of TCP options a header can carry.
pub const MAX_OPTS: usize = 40;
/// Bytes of the longest TCP header.
pub const MAX_TCP_HLEN: usize = 60;

/// Low TSval bits that carry options (the kernel's TSBITS).
const TS_BITS: u32 = 6;
const TS_OPT_WSCALE_MASK: u32 = 0xf;
const TS_OPT_SACK: u32 = 1 << 4;
/// TSval bits above the options that carry the low bits of the client's ISN.
const TS_ISN_BITS: u32 = 2;
const TS_ISN_MASK: u32 = (1 << TS_ISN_BITS) - 1;

const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WSCALE: u8 = 3;
const OPT_SACK_PERM: u8 = 4;
const OPT_TIMESTAMP: u8 = 8;

/// [`SynOptions::wscale`] when the client offered no window scaling.
pub const NO_WSCALE: u8 = 0xff;

/// What the client's SYN asked for. Plain fields rather than `Option`s: every byte
/// is written on every path, which the verifier insists on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynOptions {
    /// 0: none given.
    pub mss: u16,
    /// The client's window scale, or [`NO_WSCALE`].
    pub wscale: u8,
    pub sack_ok: bool,
    /// Whether it sent timestamps, and its TSval.
    pub ts_ok: bool,
    pub tsval: u32,
}

impl Default for SynOptions {
    fn default() -> Self {
        Self { mss: 0, wscale: NO_WSCALE, sack_ok: false, ts_ok: false, tsval: 0 }
    }
}

/// The option parser's state between bytes: a scan over byte positions with a little
/// state machine. The XDP program runs one step per byte position, straight-line, and
/// keeps this state in map memory between steps, which the verifier does not track:
/// it checks 40 steps instead of every sequence of option lengths.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OptScan {
    /// Bytes of options present.
    pub len: u64,
    /// Bytes left in the current option's body.
    rem: u64,
    olen: u64,
    /// The body's last eight bytes, shifted in: no indexed store, which would make
    /// the verifier track the index exactly.
    acc: u64,
    phase: u8,
    kind: u8,
    _pad: [u8; 6],
    pub o: SynOptions,
}

const PHASE_KIND: u8 = 0;
const PHASE_LENGTH: u8 = 1;
const PHASE_BODY: u8 = 2;

impl OptScan {
    pub fn new(len: usize) -> Self {
        let len = if len > MAX_OPTS { MAX_OPTS } else { len } as u64;
        Self {
            len,
            rem: 0,
            olen: 0,
            acc: 0,
            phase: PHASE_KIND,
            kind: 0,
            _pad: [0; 6],
            o: SynOptions::default(),
        }
    }

    /// Starts over for `len` bytes of options, field by field (no struct-wide copy).
    #[inline(always)]
    pub fn reset(&mut self, len: usize) {
        let len = if len > MAX_OPTS { MAX_OPTS } else { len } as u64;
        // Volatile: LLVM would merge plain stores of zeros into a memset call.
        // SAFETY: writes to fields of `self`.
        unsafe {
            core::ptr::write_volatile(&mut self.len, len);
            core::ptr::write_volatile(&mut self.rem, 0);
            core::ptr::write_volatile(&mut self.olen, 0);
            core::ptr::write_volatile(&mut self.acc, 0);
            core::ptr::write_volatile(&mut self.phase, PHASE_KIND);
            core::ptr::write_volatile(&mut self.kind, 0);
            core::ptr::write_volatile(&mut self.o.mss, 0);
            core::ptr::write_volatile(&mut self.o.wscale, NO_WSCALE);
            core::ptr::write_volatile(&mut self.o.sack_ok, false);
            core::ptr::write_volatile(&mut self.o.ts_ok, false);
            core::ptr::write_volatile(&mut self.o.tsval, 0);
        }
    }

    /// Feeds the byte `b` at position `p`; false when the list has ended.
    #[inline(always)]
    pub fn step(&mut self, p: u64, b: u8) -> bool {
        if p >= self.len {
            return false;
        }
        match self.phase {
            PHASE_KIND => match b {
                OPT_EOL => return false,
                OPT_NOP => return true,
                _ => {
                    self.kind = b;
                    self.phase = PHASE_LENGTH;
                    return true;
                }
            },
            PHASE_LENGTH => {
                self.olen = b as u64;
                // The kind byte was at p - 1; a truncated option ends the list.
                if self.olen < 2 || p - 1 + self.olen > self.len {
                    return false;
                }
                self.acc = 0;
                self.rem = self.olen - 2;
                if self.rem > 0 {
                    self.phase = PHASE_BODY;
                    return true;
                }
            }
            _ => {
                self.acc = (self.acc << 8) | b as u64;
                self.rem -= 1;
                if self.rem > 0 {
                    return true;
                }
            }
        }
        // The option's last byte was just read.
        let acc = self.acc;
        match (self.kind, self.olen) {
            (OPT_MSS, 4) => self.o.mss = acc as u16,
            // RFC 7323: values above 14 are treated as 14.
            (OPT_WSCALE, 3) => self.o.wscale = if acc as u8 > 14 { 14 } else { acc as u8 },
            (OPT_SACK_PERM, 2) => self.o.sack_ok = true,
            (OPT_TIMESTAMP, 10) => {
                // TSval, then TSecr.
                self.o.ts_ok = true;
                self.o.tsval = (acc >> 32) as u32;
            }
            _ => {}
        }
        self.phase = PHASE_KIND;
        true
    }
}

/// Parses the options of a SYN (`opts[..len]`). Unknown options are skipped; a
/// truncated or malformed option ends the list, keeping what came before (as the
/// kernel's `tcp_parse_options` does).
pub fn parse_options(opts: &[u8; MAX_OPTS], len: usize) -> SynOptions {
    let mut scan = OptScan::new(len);
    for (p, b) in opts.iter().enumerate() {
        if !scan.step(p as u64, *b) {
            break;
        }
    }
    scan.o
}

/// The SYN-ACK's TSval: the current TCP timestamp (ms) with its low 6 bits replaced
/// by the client's window scale (0xf: none) and SACK-permitted, as the kernel's own
/// cookies (SYNPROXY reads only these), and the next 2 by the low bits of the client's
/// sequence number `isn`, never in the future. The client echoes it in every ACK, so
/// a zero-window probe (sequence number `isn`) can be told from the handshake ACK
/// (`isn` + 1) by [`probe_seq`]: the cookie itself cannot, it validates either.
#[inline(always)]
pub fn ts_cookie(now_ms: u32, o: &SynOptions, isn: u32) -> u32 {
    let mut options = if o.wscale == NO_WSCALE { TS_OPT_WSCALE_MASK } else { o.wscale as u32 };
    if o.sack_ok {
        options |= TS_OPT_SACK;
    }
    options |= (isn & TS_ISN_MASK) << TS_BITS;
    let bits = TS_BITS + TS_ISN_BITS;
    let mut ts = ((now_ms >> bits) << bits) | options;
    if ts > now_ms {
        ts = ts.wrapping_sub(1 << bits);
    }
    ts
}

/// Whether an ACK with sequence number `seq` echoing `tsecr` (our SYN-ACK's TSval)
/// has the client's initial sequence number, as a zero-window probe does, rather than
/// the one after it, as the handshake ACK does.
#[inline(always)]
pub fn probe_seq(seq: u32, tsecr: u32) -> bool {
    seq & TS_ISN_MASK == (tsecr >> TS_BITS) & TS_ISN_MASK
}

/// Writes the SYN-ACK answering the SYN header `syn` into `out` and returns its
/// length. Ports are swapped, seq is the cookie, ack the client's seq + 1, window 0
/// (as SYNPROXY's own SYN-ACK: the window opens once the listener has answered).
/// Options: MSS, then SACK-permitted and timestamps if the client sent timestamps
/// (without timestamps the cookie cannot carry more than the MSS), then the window
/// scale `our_wscale` if the client offered scaling and timestamps; the rest of the
/// 40-byte header is End-of-Options padding. Always [`SYNACK_LEN`] bytes: a length
/// that depends on the client's options would make the verifier track every option
/// combination separately. The checksum is left 0.
#[inline(always)]
pub fn build_synack(
    syn: &[u8; MAX_TCP_HLEN],
    o: &SynOptions,
    cookie: u32,
    mss: u16,
    tsval: u32,
    our_wscale: u8,
    out: &mut [u8; MAX_TCP_HLEN],
) -> usize {
    // Every byte of the 40 written one by one (no array-wide zeroing): a memset of
    // this size becomes a call to a BPF subprogram, which older verifiers handle
    // far less well.
    out[0] = syn[2];
    out[1] = syn[3];
    out[2] = syn[0];
    out[3] = syn[1];
    out[4..8].copy_from_slice(&cookie.to_be_bytes());
    let ack = u32::from_be_bytes([syn[4], syn[5], syn[6], syn[7]]).wrapping_add(1);
    out[8..12].copy_from_slice(&ack.to_be_bytes());
    // Data offset, SYN | ACK, window 0, checksum (filled in later), urgent pointer;
    // volatile so LLVM does not merge these stores into a memset call.
    // (Byte by byte: a constant array here would land in .rodata, a map of its own.)
    // SAFETY: bytes of `out`.
    unsafe {
        core::ptr::write_volatile(&mut out[12], ((SYNACK_LEN / 4) as u8) << 4);
        core::ptr::write_volatile(&mut out[13], TCP_SYN | TCP_ACK);
        for b in &mut out[14..20] {
            core::ptr::write_volatile(b, 0);
        }
    }
    out[20..24].copy_from_slice(&[OPT_MSS, 4, (mss >> 8) as u8, mss as u8]);
    // Options after the MSS: 16 bytes, End-of-Options where nothing goes.
    let (first, ts, second) = if o.ts_ok {
        let sack = if o.sack_ok { [OPT_SACK_PERM, 2] } else { [OPT_NOP, OPT_NOP] };
        let ws = if o.wscale != NO_WSCALE { [OPT_NOP, OPT_WSCALE, 3, our_wscale] } else { [0; 4] };
        ([sack[0], sack[1], OPT_TIMESTAMP, 10], tsval, (o.tsval, ws))
    } else {
        ([0; 4], 0, (0, [0; 4]))
    };
    out[24..28].copy_from_slice(&first);
    out[28..32].copy_from_slice(&ts.to_be_bytes());
    out[32..36].copy_from_slice(&second.0.to_be_bytes());
    out[36..40].copy_from_slice(&second.1);
    SYNACK_LEN
}

/// Adds `bytes[..len]` (len even, at most 60) to a ones' complement sum.
#[inline(always)]
pub fn csum_add(mut sum: u32, bytes: &[u8; MAX_TCP_HLEN], len: usize) -> u32 {
    for i in 0..MAX_TCP_HLEN / 2 {
        if 2 * i >= len {
            break;
        }
        sum += u16::from_be_bytes([bytes[2 * i], bytes[2 * i + 1]]) as u32;
    }
    sum
}

/// Folds a sum into the 16-bit checksum field value.
#[inline(always)]
pub fn csum_fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Capacity of the probe map: handshakes whose ACK was lost within the last moments
/// (an entry is only made for a probe carrying a valid cookie, so spoofed floods
/// cannot fill it; the LRU forgets old ones).
pub const MAX_PROBES: u32 = 8192;

/// One cookie handshake: addresses (IPv4 in the first 4 bytes of each half), both
/// ports, and the ACK number (the cookie + 1), which tells attempts on one tuple apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub ports: [u8; 4],
    pub ack: [u8; 4],
}

/// The largest frame a bare ACK can be: Ethernet, two VLAN tags, an IPv6 header and a
/// 60-byte TCP header. Longer frames carry data and are not looked at.
pub const MAX_PURE_ACK_FRAME: usize = 14 + 8 + 40 + MAX_TCP_HLEN;

/// For a TCP header `th` of `th_len` bytes with `ip_payload` bytes behind the IP
/// header: its sequence number if it may be a zero-window probe after our SYN-ACK, a
/// bare ACK (no SYN, FIN, RST, PSH) without data whose only options are NOP, NOP,
/// timestamps (as Linux, BSD and macOS send them) and whose TSecr says its sequence
/// number is the client's initial one ([`probe_seq`]). The cookie is checked apart.
#[inline(always)]
pub fn probe_candidate(th: &[u8; MAX_TCP_HLEN], th_len: usize, ip_payload: usize) -> Option<u32> {
    if th[13] & (TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK) != TCP_ACK
        || th_len != 32
        || ip_payload != th_len
    {
        return None;
    }
    if th[20] != OPT_NOP || th[21] != OPT_NOP || th[22] != OPT_TIMESTAMP || th[23] != 10 {
        return None;
    }
    let seq = u32::from_be_bytes([th[4], th[5], th[6], th[7]]);
    let tsecr = u32::from_be_bytes([th[28], th[29], th[30], th[31]]);
    probe_seq(seq, tsecr).then_some(seq)
}

/// Whether the `n`th zero-window probe (from 1) of a handshake is repaired. The odd
/// ones are: SYNPROXY drops a probe as it is, unless its connection is already open
/// (the handshake ACK arrived, the window update back was lost); then the listener
/// must see the probe unchanged to answer it, and XDP cannot tell which case it is.
/// Alternating settles either case within two probes.
#[inline(always)]
pub fn repair_probe(n: u32) -> bool {
    n % 2 == 1
}

/// The checksum field after a 32-bit word it covers changed from `old` to `new`
/// (RFC 1624: HC' = ~(~HC + ~m + m')), without summing the rest again.
#[inline(always)]
pub fn csum_replace4(check: u16, old: u32, new: u32) -> u16 {
    let mut sum = (!check) as u32;
    sum += (!(old >> 16) & 0xffff) + (!old & 0xffff);
    sum += (new >> 16) + (new & 0xffff);
    csum_fold(sum)
}

/// The TCP pseudo-header sum for IPv4 addresses and a TCP length.
#[inline(always)]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], tcp_len: usize) -> u32 {
    u16::from_be_bytes([src[0], src[1]]) as u32
        + u16::from_be_bytes([src[2], src[3]]) as u32
        + u16::from_be_bytes([dst[0], dst[1]]) as u32
        + u16::from_be_bytes([dst[2], dst[3]]) as u32
        + 6
        + tcp_len as u32
}

/// The TCP pseudo-header sum for IPv6 addresses and a TCP length.
#[inline(always)]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], tcp_len: usize) -> u32 {
    let mut sum = 6 + tcp_len as u32;
    for i in 0..8 {
        sum += u16::from_be_bytes([src[2 * i], src[2 * i + 1]]) as u32;
        sum += u16::from_be_bytes([dst[2 * i], dst[2 * i + 1]]) as u32;
    }
    sum
}

/// The IPv4 header checksum of a 20-byte header (its checksum field zeroed).
#[inline(always)]
pub fn ipv4_csum(h: &[u8; 20]) -> u16 {
    let mut sum = 0u32;
    for i in 0..10 {
        sum += u16::from_be_bytes([h[2 * i], h[2 * i + 1]]) as u32;
    }
    csum_fold(sum)
}

/// Window scale the kernel gives a listener (tcp_select_initial_window): from the
/// largest receive buffer it may grow to.
pub fn kernel_wscale(tcp_rmem_max: u64, rmem_max: u64) -> u8 {
    let space = tcp_rmem_max.max(rmem_max).min(u32::MAX as u64).max(1);
    let log = 63 - space.leading_zeros() as i64;
    (log - 15).clamp(0, 14) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(bytes: &[u8]) -> ([u8; MAX_OPTS], usize) {
        let mut o = [0u8; MAX_OPTS];
        o[..bytes.len()].copy_from_slice(bytes);
        (o, bytes.len())
    }

    const LINUX_SYN: &[u8] = &[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 1, 0, 0, 0, 0, 0, 1, 3, 3, 7];

    #[test]
    fn options_in_linux_order_and_others() {
        let want = SynOptions { mss: 1460, wscale: 7, sack_ok: true, ts_ok: true, tsval: 256 };
        let (o, n) = opts(LINUX_SYN);
        assert_eq!(parse_options(&o, n), want);
        // Reordered, with NOPs and an unknown option (kind 30, MPTCP-like) in between.
        let (o, n) =
            opts(&[1, 3, 3, 7, 30, 4, 0, 0, 8, 10, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 4, 2, 2, 4, 5, 0xb4]);
        assert_eq!(parse_options(&o, n), want);
        // No options at all, and EOL ending the list early.
        let (o, n) = opts(&[]);
        assert_eq!(parse_options(&o, n), SynOptions::default());
        let (o, n) = opts(&[2, 4, 2, 0x18, 0, 1, 3, 3, 7]);
        assert_eq!(parse_options(&o, n), SynOptions { mss: 536, ..Default::default() });
        // Window scale above 14 is 14.
        let (o, n) = opts(&[3, 3, 200]);
        assert_eq!(parse_options(&o, n).wscale, 14);
    }

    #[test]
    fn truncated_and_malformed_lists_keep_what_came_before() {
        for cut in 0..LINUX_SYN.len() {
            let (o, _) = opts(LINUX_SYN);
            let got = parse_options(&o, cut);
            assert_eq!(got.mss, if cut >= 4 { 1460 } else { 0 }, "cut {cut}");
            assert_eq!(got.sack_ok, cut >= 6, "cut {cut}");
            assert_eq!(got.ts_ok, cut >= 16, "cut {cut}");
            assert_eq!(got.wscale != NO_WSCALE, cut >= 20, "cut {cut}");
        }
        // A zero length would loop forever: it ends the list.
        let (o, n) = opts(&[2, 4, 5, 0xb4, 30, 0, 3, 3, 7]);
        assert_eq!(parse_options(&o, n), SynOptions { mss: 1460, ..Default::default() });
        // Wrong lengths for known kinds are skipped.
        let (o, n) = opts(&[2, 3, 5, 4, 2]);
        assert_eq!(parse_options(&o, n), SynOptions { sack_ok: true, ..Default::default() });
    }

    #[test]
    fn ts_cookie_matches_the_kernel_layout() {
        let o = SynOptions { mss: 1460, wscale: 7, sack_ok: true, ts_ok: true, tsval: 1 };
        let ts = ts_cookie(1_000_000, &o, 0x1234_5677);
        assert_eq!(ts & 0xf, 7);
        assert_eq!(ts & 0x10, 0x10);
        assert_eq!((ts >> 6) & 3, 3, "low bits of the ISN");
        assert!(ts <= 1_000_000 && 1_000_000 - ts < 512);
        let none = SynOptions { ts_ok: true, tsval: 1, ..Default::default() };
        assert_eq!(ts_cookie(1_000_000, &none, 0) & 0xff, 0xf);
        // Just after a 256 ms boundary the low bits would be in the future: one step back.
        assert_eq!(ts_cookie(256 * 1000, &o, 2), 256 * 999 + 0x97);

        // The probe carries the ISN, the handshake ACK the ISN + 1.
        for isn in [0u32, 1, 2, 3, 0xffff_ffff, 0x8000_0001] {
            let ts = ts_cookie(5_000_000, &o, isn);
            assert!(probe_seq(isn, ts), "{isn:#x}");
            assert!(!probe_seq(isn.wrapping_add(1), ts), "{isn:#x}");
            assert!(!probe_seq(isn.wrapping_sub(1), ts), "{isn:#x}");
        }
    }

    #[test]
    fn probe_candidates() {
        let o = SynOptions { mss: 1460, wscale: 7, sack_ok: true, ts_ok: true, tsval: 1 };
        let isn = 0x0102_0304u32;
        let tsecr = ts_cookie(9_000_000, &o, isn);
        let ack = |seq: u32, flags: u8| {
            let mut th = [0u8; MAX_TCP_HLEN];
            th[4..8].copy_from_slice(&seq.to_be_bytes());
            th[12] = 0x80;
            th[13] = flags;
            th[20..24].copy_from_slice(&[1, 1, 8, 10]);
            th[28..32].copy_from_slice(&tsecr.to_be_bytes());
            th
        };
        assert_eq!(probe_candidate(&ack(isn, 0x10), 32, 32), Some(isn));
        assert_eq!(probe_candidate(&ack(isn, 0x50), 32, 32), Some(isn), "ECE/CWR do not matter");
        assert_eq!(probe_candidate(&ack(isn + 1, 0x10), 32, 32), None, "the handshake ACK");
        assert_eq!(probe_candidate(&ack(isn, 0x10), 32, 37), None, "carries data");
        for flags in [0x18, 0x11, 0x14, 0x12] {
            assert_eq!(probe_candidate(&ack(isn, flags), 32, 32), None, "flags {flags:#x}");
        }
        let mut sack = ack(isn, 0x10);
        sack[20..24].copy_from_slice(&[1, 1, 5, 10]);
        assert_eq!(probe_candidate(&sack, 32, 32), None, "other options");
        assert_eq!(probe_candidate(&ack(isn, 0x10), 20, 20), None, "no timestamps");
        assert!(repair_probe(1) && !repair_probe(2) && repair_probe(3));
    }

    #[test]
    fn synack_headers() {
        let mut syn = [0u8; MAX_TCP_HLEN];
        syn[..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
        syn[4..8].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
        syn[12] = 0xa0;
        syn[13] = 0x02;
        let mut out = [0u8; MAX_TCP_HLEN];
        let full = SynOptions { mss: 1460, wscale: 7, sack_ok: true, ts_ok: true, tsval: 0xdead };
        let n = build_synack(&syn, &full, 0x1234_5678, 1460, 0xbeef, 10, &mut out);
        assert_eq!(n, 40);
        assert_eq!(&out[..4], &[0, 80, 0x9c, 0x40]);
        assert_eq!(&out[4..8], &0x1234_5678u32.to_be_bytes());
        assert_eq!(&out[8..12], &[0, 0, 0, 0], "ack wraps");
        assert_eq!((out[12], out[13]), (0xa0, 0x12));
        assert_eq!(&out[20..24], &[2, 4, 0x05, 0xb4]);
        assert_eq!(&out[24..28], &[4, 2, 8, 10]);
        assert_eq!(&out[28..36], &[0, 0, 0xbe, 0xef, 0, 0, 0xde, 0xad]);
        assert_eq!(&out[36..40], &[1, 3, 3, 10]);
        let plain = SynOptions { mss: 1460, ..Default::default() };
        assert_eq!(build_synack(&syn, &plain, 1, 536, 0, 10, &mut out), 40);
        assert_eq!((out[12], &out[20..24]), (0xa0, &[2, 4, 2, 0x18][..]));
        assert_eq!(&out[24..40], &[0; 16], "End-of-Options padding");
        let no_sack = SynOptions { ts_ok: true, tsval: 5, ..Default::default() };
        assert_eq!(build_synack(&syn, &no_sack, 1, 536, 0, 10, &mut out), 40);
        assert_eq!(&out[24..28], &[1, 1, 8, 10]);
        assert_eq!(&out[36..40], &[0; 4], "no window scale");
    }

    #[test]
    fn checksums_verify() {
        let mut h = [0u8; MAX_TCP_HLEN];
        for (i, b) in h.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7);
        }
        h[16] = 0;
        h[17] = 0;
        let (s, d) = ([192, 0, 2, 1], [198, 51, 100, 1]);
        let c = csum_fold(csum_add(pseudo_v4(s, d, 40), &h, 40));
        h[16..18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(csum_fold(csum_add(pseudo_v4(s, d, 40), &h, 40)), 0);
        let mut ip = [0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 51, 100, 1, 192, 0, 2, 1];
        let c = ipv4_csum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(ipv4_csum(&ip), 0);

        // Moving the sequence number up by one, incrementally, gives what a full sum
        // over the new header gives, also across a carry and a wrap to zero.
        for seq in [0x1234_5678u32, 0x0000_ffff, 0xffff_ffff, 0x8000_0000, 0] {
            h[4..8].copy_from_slice(&seq.to_be_bytes());
            h[16] = 0;
            h[17] = 0;
            let c = csum_fold(csum_add(pseudo_v4(s, d, 40), &h, 40));
            h[4..8].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
            let full = csum_fold(csum_add(pseudo_v4(s, d, 40), &h, 40));
            assert_eq!(csum_replace4(c, seq, seq.wrapping_add(1)), full, "seq {seq:#x}");
        }
    }

    #[test]
    fn kernel_window_scale() {
        // Debian defaults: tcp_rmem max 6 MiB, rmem_max 208 KiB: ilog2(6291456) - 15 = 7.
        assert_eq!(kernel_wscale(6_291_456, 212_992), 7);
        // This machine's 32 MiB: 10.
        assert_eq!(kernel_wscale(33_554_432, 212_992), 10);
        assert_eq!(kernel_wscale(4096, 4096), 0);
        assert_eq!(kernel_wscale(u64::MAX, 0), 14);
    }
}
