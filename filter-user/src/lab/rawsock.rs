//! Sending crafted frames on an interface with an AF_PACKET socket.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// A raw sender bound to one interface (of the namespace it was opened in).
pub struct RawSender {
    fd: OwnedFd,
}

impl RawSender {
    /// Opens the socket in the calling thread's network namespace (use `Netns::enter`).
    pub fn open(iface: &str) -> anyhow::Result<Self> {
        let c = std::ffi::CString::new(iface)?;
        // SAFETY: plain libc calls with valid arguments; the fd is owned right away.
        unsafe {
            let index = libc::if_nametoindex(c.as_ptr());
            if index == 0 {
                anyhow::bail!("no interface {iface} here");
            }
            // Protocol 0: this socket only sends, it receives nothing.
            let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if raw < 0 {
                return Err(io::Error::last_os_error()).context("socket(AF_PACKET)");
            }
            let fd = OwnedFd::from_raw_fd(raw);
            // Skip the qdisc: the sender is not what is being measured.
            let one: libc::c_int = 1;
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &one as *const _ as *const _,
                4,
            );
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = index as i32;
            if libc::bind(
                raw,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                return Err(io::Error::last_os_error()).context("bind(AF_PACKET)");
            }
            Ok(Self { fd })
        }
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: sending from a valid buffer on our socket.
            let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr() as *const _, frame.len(), 0) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOBUFS) && e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            std::thread::yield_now();
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
