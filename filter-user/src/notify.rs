//! The sd_notify protocol, without libsystemd: how `floodgate run` tells systemd it is
//! ready (only once the config is in force), reloading, or stopping.
//!
//! systemd passes the address of its notification socket in `$NOTIFY_SOCKET`: a
//! filesystem path (`/run/systemd/notify`) or, starting with `@`, a Linux abstract
//! socket. Each message is one datagram of `KEY=VALUE` lines (sd_notify(3)). Outside
//! systemd the variable is unset and [`Notifier::from_env`] returns `None`, so the
//! service runs the same from a shell.
//!
//! Unlike `sd_notify(unset_environment=1)`, nothing here unsets `$NOTIFY_SOCKET`: child
//! processes (`nft`) inherit it, which is harmless: they send nothing, and with the
//! unit's default `NotifyAccess=main` systemd would ignore them if they did.

use std::{
    io,
    os::{
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixDatagram},
    },
    time::Duration,
};

use thiserror::Error;

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

#[derive(Debug, Error)]
pub enum NotifyError {
    /// Neither a path nor `@name`: e.g. systemd ≥ 254's `vsock:` addresses, which a
    /// service on the host never gets.
    #[error("${NOTIFY_SOCKET_ENV} is '{0}': only a socket path or an @abstract name is supported")]
    Unsupported(String),
    #[error("${NOTIFY_SOCKET_ENV} '{addr}' is not a valid socket address")]
    BadAddress {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("creating the socket for sd_notify")]
    Socket(#[source] io::Error),
    #[error("sending '{message}' to systemd at {addr}")]
    Send {
        message: String,
        addr: String,
        #[source]
        source: io::Error,
    },
}

/// A handle on systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for messages.
    text: String,
}

impl Notifier {
    /// The notifier systemd asked for through `$NOTIFY_SOCKET`; `None` when it is unset
    /// or empty (not started by systemd, or not `Type=notify`). The variable is left
    /// set (see the module documentation).
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var_os(NOTIFY_SOCKET_ENV) {
            Some(v) if !v.is_empty() => Notifier::new(&v.to_string_lossy()).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier sending to `addr`, written as in `$NOTIFY_SOCKET`: `/path` or `@name`.
    pub fn new(addr: &str) -> Result<Notifier, NotifyError> {
        let bad = |source| NotifyError::BadAddress { addr: addr.into(), source };
        let sockaddr = if let Some(name) = addr.strip_prefix('@') {
            SocketAddr::from_abstract_name(name.as_bytes()).map_err(bad)?
        } else if addr.starts_with('/') {
            SocketAddr::from_pathname(addr).map_err(bad)?
        } else {
            return Err(NotifyError::Unsupported(addr.into()));
        };
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        // Never block the service on a listener that does not read (a full queue
        // fails the send, which the caller logs).
        socket.set_nonblocking(true).map_err(NotifyError::Socket)?;
        Ok(Notifier { socket, addr: sockaddr, text: addr.into() })
    }

    /// `READY=1`: startup finished (the config is in force), or a reload finished.
    /// systemd considers the service started, or the reload done, only on this.
    pub fn ready(&self) -> Result<(), NotifyError> {
        self.send("READY=1")
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=`: a reload began. Send [`Notifier::ready`]
    /// when it ends, whether it applied or was refused: the service runs on either way.
    /// systemd ≥ 253 wants the timestamp (CLOCK_MONOTONIC, µs) to tell this reload
    /// from an older one; older versions ignore it.
    pub fn reloading(&self) -> Result<(), NotifyError> {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
    }

    /// `STOPPING=1`: shutdown began (the filter itself stays in force).
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1")
    }

    /// `STATUS=text`: one line `systemctl status` shows. Line breaks become spaces, as
    /// a newline would start another assignment.
    pub fn status(&self, text: &str) -> Result<(), NotifyError> {
        let line: String = text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
        self.send(&format!("STATUS={line}"))
    }

    /// `EXTEND_TIMEOUT_USEC=`: asks systemd for `by` more time before it gives up on a
    /// start, reload or stop (e.g. while a large list loads).
    pub fn extend_timeout(&self, by: Duration) -> Result<(), NotifyError> {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()))
    }

    /// `WATCHDOG=1`: the keep-alive ping for units with `WatchdogSec=`; see
    /// [`watchdog_interval`] for how often.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1")
    }

    /// Sends one datagram: `message` as it stands (`KEY=VALUE` lines).
    pub fn send(&self, message: &str) -> Result<(), NotifyError> {
        match self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            Ok(n) if n == message.len() => Ok(()),
            Ok(n) => {
                Err(self
                    .send_error(message, io::Error::other(format!("sent {n} of {} bytes", message.len()))))
            }
            Err(e) => Err(self.send_error(message, e)),
        }
    }

    fn send_error(&self, message: &str, source: io::Error) -> NotifyError {
        NotifyError::Send { message: message.replace('\n', "\\n"), addr: self.text.clone(), source }
    }
}

/// How often systemd expects [`Notifier::watchdog`] when the unit sets `WatchdogSec=`
/// (`$WATCHDOG_USEC`, meant for this process when `$WATCHDOG_PID` is unset or ours):
/// None when no watchdog is asked for. Ping at half of it, as sd_watchdog_enabled(3)
/// advises.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd stamps reloads with.
fn monotonic_usec() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only make systemd ≥ 253 treat the
    // reload as unstamped.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::{os::unix::net::UnixDatagram, time::Duration};

    use super::*;

    /// A receiving socket standing in for systemd's.
    struct Systemd {
        sock: UnixDatagram,
        _dir: Option<TempDir>,
    }

    /// A directory removed when dropped (no tempfile crate in this workspace).
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl Systemd {
        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.sock.recv(&mut buf).expect("a datagram within the timeout");
            String::from_utf8(buf[..n].to_vec()).expect("utf-8")
        }

        fn nothing_more(&self) {
            self.sock.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 16];
            let r = self.sock.recv(&mut buf);
            assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock), "an unexpected datagram");
        }
    }

    fn path_socket(test: &str) -> (Systemd, String) {
        let dir = std::env::temp_dir().join(format!("floodgate-notify-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (Systemd { sock, _dir: Some(TempDir(dir)) }, path.to_str().unwrap().to_string())
    }

    fn check_monotonic(line: &str) -> u64 {
        let usec: u64 = line.strip_prefix("MONOTONIC_USEC=").expect("MONOTONIC_USEC=").parse().unwrap();
        let now = monotonic_usec();
        assert!(usec > 0 && usec <= now && now - usec < 10_000_000, "stamp {usec} vs now {now}");
        usec
    }

    /// The three lifecycle messages arrive as separate datagrams, exact and in order.
    #[test]
    fn lifecycle_over_a_path_socket() {
        let (systemd, path) = path_socket("path");
        let n = Notifier::new(&path).unwrap();
        n.ready().unwrap();
        n.reloading().unwrap();
        n.ready().unwrap();
        n.status("2 interfaces\nok").unwrap();
        n.stopping().unwrap();

        assert_eq!(systemd.recv(), "READY=1");
        let reload = systemd.recv();
        let mut lines = reload.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        check_monotonic(lines.next().expect("a second line"));
        assert_eq!(lines.next(), None);
        assert_eq!(systemd.recv(), "READY=1");
        assert_eq!(systemd.recv(), "STATUS=2 interfaces ok");
        assert_eq!(systemd.recv(), "STOPPING=1");
        systemd.nothing_more();
    }

    #[test]
    fn lifecycle_over_an_abstract_socket() {
        let name = format!("floodgate-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let systemd = Systemd { sock, _dir: None };

        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.ready().unwrap();
        n.reloading().unwrap();
        n.reloading().unwrap();
        n.stopping().unwrap();
        n.watchdog().unwrap();
        n.extend_timeout(Duration::from_secs(90)).unwrap();

        assert_eq!(systemd.recv(), "READY=1");
        let first = check_monotonic(systemd.recv().strip_prefix("RELOADING=1\n").expect("RELOADING=1 first"));
        let second =
            check_monotonic(systemd.recv().strip_prefix("RELOADING=1\n").expect("RELOADING=1 first"));
        assert!(second >= first, "stamps go forward: {first} then {second}");
        assert_eq!(systemd.recv(), "STOPPING=1");
        assert_eq!(systemd.recv(), "WATCHDOG=1");
        assert_eq!(systemd.recv(), "EXTEND_TIMEOUT_USEC=90000000");
        systemd.nothing_more();
    }

    /// `from_env` reads `$NOTIFY_SOCKET` and leaves it set. The only test touching the
    /// variable, so it races no other.
    #[test]
    fn from_env_reads_and_keeps_the_variable() {
        let (systemd, path) = path_socket("env");
        // SAFETY: set_var races only with getenv calls from C code in other threads;
        // the other tests of this binary read the environment through std (which takes
        // the same lock as set_var) and none reads NOTIFY_SOCKET.
        unsafe { std::env::remove_var(NOTIFY_SOCKET_ENV) };
        assert!(Notifier::from_env().unwrap().is_none());
        // SAFETY: as above.
        unsafe { std::env::set_var(NOTIFY_SOCKET_ENV, "") };
        assert!(Notifier::from_env().unwrap().is_none(), "empty means unset");
        // SAFETY: as above.
        unsafe { std::env::set_var(NOTIFY_SOCKET_ENV, &path) };
        let n = Notifier::from_env().unwrap().expect("a notifier");
        assert_eq!(std::env::var(NOTIFY_SOCKET_ENV).as_deref(), Ok(path.as_str()), "left set");
        n.ready().unwrap();
        assert_eq!(systemd.recv(), "READY=1");
        // SAFETY: as above.
        unsafe { std::env::remove_var(NOTIFY_SOCKET_ENV) };
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(matches!(Notifier::new("vsock:2:1234"), Err(NotifyError::Unsupported(_))));
        assert!(matches!(Notifier::new("relative/path"), Err(NotifyError::Unsupported(_))));
        let long = format!("/{}", "x".repeat(200));
        assert!(matches!(Notifier::new(&long), Err(NotifyError::BadAddress { .. })));
    }

    /// Nobody listening: the error names the message and the address.
    #[test]
    fn send_to_nobody_fails_with_context() {
        let (systemd, path) = path_socket("gone");
        drop(systemd);
        let err = Notifier::new(&path).unwrap().reloading().unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("sending 'RELOADING=1\\nMONOTONIC_USEC="), "{text}");
        assert!(text.ends_with(&format!("to systemd at {path}")), "{text}");
    }
}
