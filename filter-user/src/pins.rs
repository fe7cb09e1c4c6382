//! Every bpffs path floodgate uses, the per-interface lock, and finding which
//! interface a command means.
//!
//! Layout: `/sys/fs/bpf/floodgate/IFACE/` holds `link` (the XDP link: while it is
//! pinned the filter stays attached with no process running) and one file per map,
//! named as in the object (filter_common::map_names).

use std::{
    ffi::CString,
    fs::{self, File},
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Where bpffs is expected.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Directory under bpffs that holds one directory per attached interface.
pub const PIN_SUBDIR: &str = "floodgate";
/// Name of the link pin inside an interface directory.
pub const LINK_PIN: &str = "link";
/// Overrides the pin root (tests use it to keep their pins apart).
pub const PIN_ROOT_ENV: &str = "FLOODGATE_PIN_ROOT";

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, Error)]
pub enum PinsError {
    #[error("floodgate is not attached to {iface}{}", attached_hint(.attached))]
    NotAttached { iface: String, attached: Vec<String> },
    #[error("floodgate is not attached to any interface (run `floodgate attach -i IFACE` first)")]
    NoneAttached,
    #[error("floodgate is attached to several interfaces ({}): choose one with -i", .0.join(", "))]
    Ambiguous(Vec<String>),
    #[error("'{0}' is not a valid interface name")]
    BadName(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

fn attached_hint(attached: &[String]) -> String {
    if attached.is_empty() { String::new() } else { format!(" (attached: {})", attached.join(", ")) }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PinsError {
    let path = path.display().to_string();
    move |source| PinsError::Io { what, path, source }
}

/// The directory holding all of floodgate's pins.
pub fn root() -> PathBuf {
    std::env::var_os(PIN_ROOT_ENV).map(PathBuf::from).unwrap_or_else(|| Path::new(BPFFS).join(PIN_SUBDIR))
}

/// Checks that an interface name is one the kernel could have and safe as a path part.
pub fn check_iface_name(name: &str) -> Result<(), PinsError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b.is_ascii_whitespace() || b == 0);
    if ok { Ok(()) } else { Err(PinsError::BadName(name.to_string())) }
}

/// Pins of one interface.
#[derive(Clone, Debug)]
pub struct IfacePins {
    pub iface: String,
    pub dir: PathBuf,
}

impl IfacePins {
    pub fn new(iface: &str) -> Result<Self, PinsError> {
        check_iface_name(iface)?;
        Ok(Self { iface: iface.to_string(), dir: root().join(iface) })
    }

    pub fn link(&self) -> PathBuf {
        self.dir.join(LINK_PIN)
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    /// Takes the interface's lock: one writer at a time, and no detach while a
    /// command works on the maps. Released when the returned value is dropped.
    pub fn lock(&self) -> Result<Lock, PinsError> {
        Lock::take(&self.dir)
    }
}

/// An exclusive `flock` on a pin directory.
pub struct Lock(#[allow(dead_code)] File);

impl Lock {
    fn take(dir: &Path) -> Result<Self, PinsError> {
        let f = File::open(dir).map_err(io_err("opening", dir))?;
        // SAFETY: plain flock on a file descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err("locking", dir)(io::Error::last_os_error()));
        }
        Ok(Self(f))
    }
}

/// Interfaces with a pin directory, sorted.
pub fn attached() -> Result<Vec<String>, PinsError> {
    let root = root();
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("reading", &root)(e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// The interface a command means: the one named, which must be attached, or the only
/// attached one when none is named.
pub fn resolve(iface: Option<&str>) -> Result<IfacePins, PinsError> {
    let attached = attached()?;
    match iface {
        Some(name) => {
            let pins = IfacePins::new(name)?;
            if pins.exists() {
                Ok(pins)
            } else {
                Err(PinsError::NotAttached { iface: name.to_string(), attached })
            }
        }
        None => match attached.as_slice() {
            [] => Err(PinsError::NoneAttached),
            [one] => IfacePins::new(one),
            _ => Err(PinsError::Ambiguous(attached)),
        },
    }
}

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Makes sure the pin root sits on a bpffs, mounting one at /sys/fs/bpf if none is
/// there. Returns true if it mounted one.
pub fn ensure_bpffs() -> Result<bool, PinsError> {
    let root = root();
    let base = root.parent().unwrap_or(Path::new(BPFFS)).to_path_buf();
    let mut mounted = false;
    if !is_bpffs(&base) {
        fs::create_dir_all(&base).map_err(io_err("creating", &base))?;
        let target = CString::new(base.as_os_str().as_encoded_bytes()).expect("no NUL in path");
        // SAFETY: constant C strings, no data argument.
        let rc =
            unsafe { libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(io_err("mounting bpffs at", &base)(io::Error::last_os_error()));
        }
        mounted = true;
    }
    fs::create_dir_all(&root).map_err(io_err("creating", &root))?;
    Ok(mounted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in ["eth0", "veth-fg1", "a", "enp0s31f6.100", "123456789012345"] {
            assert!(check_iface_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "has space", "1234567890123456"] {
            assert!(check_iface_name(bad).is_err(), "{bad}");
        }
    }
}
