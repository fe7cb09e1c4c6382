//! Sending crafted frames on an interface with an AF_PACKET socket.

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::{
    errno::Errno,
    libc,
    net::if_::if_nametoindex,
    setsockopt_impl, sockopt_impl,
    sys::socket::{
        AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike as _, bind, send, setsockopt,
        socket,
    },
};

sockopt_impl!(
    /// PACKET_QDISC_BYPASS: frames skip the qdisc.
    QdiscBypass,
    SetOnly,
    libc::SOL_PACKET,
    libc::PACKET_QDISC_BYPASS,
    bool
);

/// A raw sender bound to one interface (of the namespace it was opened in).
pub struct RawSender {
    fd: OwnedFd,
}

impl RawSender {
    /// Opens the socket in the calling thread's network namespace (use `Netns::enter`).
    pub fn open(iface: &str) -> anyhow::Result<Self> {
        let index = if_nametoindex(iface).with_context(|| format!("no interface {iface} here"))?;
        // Protocol 0: this socket only sends, it receives nothing.
        let fd = socket(AddressFamily::Packet, SockType::Raw, SockFlag::empty(), None)
            .context("socket(AF_PACKET)")?;
        // Skip the qdisc: the sender is not what is being measured.
        setsockopt(&fd, QdiscBypass, &true).context("PACKET_QDISC_BYPASS")?;
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: 0,
            sll_ifindex: index as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: a complete sockaddr_ll of its own size.
        let addr = unsafe {
            LinkAddr::from_raw(
                (&raw const sll).cast(),
                Some(size_of::<libc::sockaddr_ll>() as libc::socklen_t),
            )
        }
        .context("sockaddr_ll")?;
        bind(fd.as_raw_fd(), &addr).context("bind(AF_PACKET)")?;
        Ok(Self { fd })
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            match send(self.fd.as_raw_fd(), frame, MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                // A full device queue: wait for it rather than lose the frame.
                Err(Errno::ENOBUFS | Errno::EINTR) => std::thread::yield_now(),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends `count` frames made by `frame(i)` at about `pps` per second (0: as fast as
    /// possible), stopping early if `stop()` turns true. Returns frames sent.
    pub fn send_paced(
        &self,
        count: u64,
        pps: u64,
        mut frame: impl FnMut(u64) -> Vec<u8>,
        stop: impl Fn() -> bool,
    ) -> io::Result<u64> {
        let start = Instant::now();
        for i in 0..count {
            if i % 64 == 0 && stop() {
                return Ok(i);
            }
            // Paced frame by frame, not in batches: a rate limiter must see a steady
            // source as steady. A late frame goes at once, so the average holds.
            if pps > 0 {
                let due = start + Duration::from_secs_f64(i as f64 / pps as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            self.send(&frame(i))?;
        }
        Ok(count)
    }
}
