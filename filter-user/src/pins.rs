//! Every bpffs path floodgate uses, the per-interface lock, and finding which
//! filter a command means.
//!
//! Layout: `/sys/fs/bpf/floodgate/netns-DEV-INO/IFACE/` holds `link` (the XDP link:
//! while it is pinned the filter stays attached with no process running) and one file
//! per map, named as in the object (filter_common::map_names). `DEV-INO` identify the
//! network namespace (`stat /proc/self/ns/net`): bpffs is shared by every namespace,
//! and an interface name means a different interface in each, so a command only
//! ever sees the filters of its own namespace. The interface's ifindex is checked as
//! well (against the XDP link's, else the one recorded at attach), so a filter whose
//! interface was deleted or renamed is reported as such rather than acted on.
//!
//! floodgate before namespace scoping pinned at `/sys/fs/bpf/floodgate/IFACE/`
//! ([`Layout::Flat`]): such pins are found for `detach` and `status` only.
//!
//! Every directory of the tree must be owned by root (or the caller) and not writable
//! by group or others, as sshd's StrictModes demands of a home directory: whoever can
//! write there can swap the pins under floodgate's feet.

use std::{
    ffi::CString,
    fs::{self, DirBuilder, File, OpenOptions, TryLockError},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{fcntl::OFlag, mount::MsFlags, sys::statfs::FsType};
use thiserror::Error;

/// Where bpffs is expected.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Directory under bpffs that holds one directory per network namespace.
pub const PIN_SUBDIR: &str = "floodgate";
/// Name of the link pin inside an interface directory.
pub const LINK_PIN: &str = "link";
/// Overrides the pin root (tests use it to keep their pins apart). It must be on a
/// bpffs already (or be creatable in one); floodgate mounts one only at /sys/fs/bpf.
pub const PIN_ROOT_ENV: &str = "FLOODGATE_PIN_ROOT";
/// Prefix of the per-namespace directories.
pub const NETNS_PREFIX: &str = "netns-";
/// How long a writer waits for another writer's lock before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// f_type of a bpffs (linux/magic.h).
const BPF_FS_MAGIC: FsType = FsType(0xcafe4a11);

#[derive(Debug, Error)]
pub enum PinsError {
    #[error("floodgate is not attached to {iface} in this network namespace{}", attached_hint(.attached, .elsewhere))]
    NotAttached { iface: String, attached: Vec<String>, elsewhere: Vec<String> },
    #[error(
        "floodgate is not attached to any interface in this network namespace (run `floodgate attach -i IFACE` first)"
    )]
    NoneAttached,
    #[error("floodgate is attached to several interfaces ({}): choose one with -i", .0.join(", "))]
    Ambiguous(Vec<String>),
    #[error("'{0}' is not a valid interface name")]
    BadName(String),
    #[error(
        "the filter of {iface} is on an interface that no longer exists here (deleted or moved): \
         run `floodgate detach -i {iface}` to remove its pins, then attach again"
    )]
    Gone { iface: String },
    #[error(
        "the filter pinned as {iface} is on the interface now named {now} (ifindex {ifindex}): \
         use -i {now}"
    )]
    Renamed { iface: String, now: String, ifindex: u32 },
    #[error(
        "{iface} has pins of an older floodgate in {dir} (layout without network namespaces): \
         run `floodgate detach -i {iface}`, then `floodgate attach -i {iface}`"
    )]
    Legacy { iface: String, dir: String },
    #[error(
        "the old-layout pins in {dir} belong to an interface with ifindex {ifindex}, not to {iface} \
         of this network namespace: run the detach in the namespace of that filter"
    )]
    LegacyElsewhere { iface: String, dir: String, ifindex: u32 },
    #[error(
        "the pins of {iface} in {dir} are incomplete (no XDP link, no readable metadata): \
         run `floodgate detach -i {iface}`, then attach again"
    )]
    Incomplete { iface: String, dir: String },
    #[error(
        "refusing the pin directory {path}: {why}; it must be a directory owned by root and \
         not writable by group or others (fix it with chown root and chmod go-w, or remove it)"
    )]
    Insecure { path: String, why: String },
    #[error(
        "{path} is not on a bpffs: mount one there first (mount -t bpf -o mode=0700 bpf DIR) \
         or unset {PIN_ROOT_ENV} (floodgate mounts a bpffs only at {BPFFS})"
    )]
    NotBpffs { path: String },
    #[error(
        "{iface} is locked by another floodgate command ({holder}); gave up after {secs} s: \
         wait for it to finish, or stop it"
    )]
    Locked { iface: String, holder: String, secs: u64 },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

fn attached_hint(attached: &[String], elsewhere: &[String]) -> String {
    let mut s = String::new();
    if !attached.is_empty() {
        s.push_str(&format!(" (attached here: {})", attached.join(", ")));
    }
    if !elsewhere.is_empty() {
        s.push_str(&format!(
            " (an interface of that name is attached in another network namespace: {}; \
             run floodgate there, e.g. with nsenter --net=/run/netns/NAME)",
            elsewhere.join(", ")
        ));
    }
    s
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PinsError {
    let path = path.display().to_string();
    move |source| PinsError::Io { what, path, source }
}

/// The directory holding all of floodgate's pins (absolute).
pub fn root() -> PathBuf {
    match std::env::var_os(PIN_ROOT_ENV) {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p) }
        }
        None => Path::new(BPFFS).join(PIN_SUBDIR),
    }
}

fn custom_root() -> bool {
    std::env::var_os(PIN_ROOT_ENV).is_some()
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

/// A network namespace, identified as `stat` identifies its nsfs file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl NetnsId {
    /// The namespace of the calling thread (`nsenter --net` and `setns` both count).
    pub fn current() -> Result<Self, PinsError> {
        Self::of_path(Path::new("/proc/thread-self/ns/net"))
    }

    /// The namespace of an nsfs file (`/run/netns/NAME`, `/proc/PID/ns/net`).
    pub fn of_path(path: &Path) -> Result<Self, PinsError> {
        let m = fs::metadata(path).map_err(io_err("reading the network namespace of", path))?;
        Ok(NetnsId { dev: m.dev(), ino: m.ino() })
    }

    /// The name of this namespace's pin directory.
    pub fn dir_name(&self) -> String {
        format!("{NETNS_PREFIX}{}-{}", self.dev, self.ino)
    }

    fn parse(name: &str) -> Option<Self> {
        let (dev, ino) = name.strip_prefix(NETNS_PREFIX)?.split_once('-')?;
        Some(NetnsId { dev: dev.parse().ok()?, ino: ino.parse().ok()? })
    }

    /// How to show it: its name under /run/netns when it has one, else `net:[INO]` (as
    /// `ls -l /proc/PID/ns/net` shows it).
    pub fn label(&self) -> String {
        named_netns()
            .into_iter()
            .find(|(_, id)| id == self)
            .map(|(name, _)| name)
            .unwrap_or_else(|| format!("net:[{}]", self.ino))
    }
}

fn named_netns() -> Vec<(String, NetnsId)> {
    let Ok(entries) = fs::read_dir("/run/netns") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, NetnsId::of_path(&e.path()).ok()?)))
        .collect()
}

/// How the pin directory of a filter is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `ROOT/netns-DEV-INO/IFACE`.
    Scoped,
    /// `ROOT/IFACE`: floodgate before namespace scoping.
    Flat,
}

/// Pins of one filter.
#[derive(Clone, Debug)]
pub struct IfacePins {
    /// The interface, as the command named it.
    pub iface: String,
    pub dir: PathBuf,
    /// `None` for [`Layout::Flat`] pins, whose namespace is unknown.
    pub netns: Option<NetnsId>,
    pub layout: Layout,
}

/// `ROOT/netns-DEV-INO/IFACE` for the namespace of `ns_path` (e.g. `/run/netns/NAME`):
/// where an attach run in that namespace pins.
pub fn dir_in(root: &Path, ns_path: &Path, iface: &str) -> Result<PathBuf, PinsError> {
    Ok(root.join(NetnsId::of_path(ns_path)?.dir_name()).join(iface))
}

impl IfacePins {
    /// The pins `iface` of the calling thread's network namespace has or would have.
    pub fn new(iface: &str) -> Result<Self, PinsError> {
        check_iface_name(iface)?;
        let ns = NetnsId::current()?;
        Ok(Self {
            iface: iface.to_string(),
            dir: root().join(ns.dir_name()).join(iface),
            netns: Some(ns),
            layout: Layout::Scoped,
        })
    }

    pub fn link(&self) -> PathBuf {
        self.dir.join(LINK_PIN)
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn exists(&self) -> bool {
        fs::symlink_metadata(&self.dir).is_ok()
    }

    /// Takes the interface's lock: one writer at a time, and no detach while a
    /// command changes the maps. Waits up to [`LOCK_WAIT`], then fails naming the pid
    /// that holds it. Released when the returned value is dropped.
    pub fn lock(&self) -> Result<Lock, PinsError> {
        self.lock_within(LOCK_WAIT)
    }

    pub fn lock_within(&self, wait: Duration) -> Result<Lock, PinsError> {
        self.check_secure()?;
        Lock::take(&self.dir, &self.iface, wait)
    }

    /// Checks every directory from the root down to this one (see the module doc).
    pub fn check_secure(&self) -> Result<(), PinsError> {
        let root = root();
        check_dir(&root)?;
        if let Some(ns) = self.netns
            && self.layout == Layout::Scoped
        {
            check_dir(&root.join(ns.dir_name()))?;
        }
        check_dir(&self.dir)
    }

    /// Where the filter stands against the interfaces of this namespace.
    pub fn state(&self) -> State {
        let name = self.dir.file_name().and_then(|n| n.to_str()).unwrap_or(&self.iface);
        state_of(&self.dir, name)
    }
}

/// Refuses a directory that is not one, not owned by root (or us), or writable by
/// group or others.
pub fn check_dir(path: &Path) -> Result<(), PinsError> {
    let m = fs::symlink_metadata(path).map_err(io_err("reading", path))?;
    let insecure = |why: String| PinsError::Insecure { path: path.display().to_string(), why };
    if !m.file_type().is_dir() {
        return Err(insecure("not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if m.uid() != 0 && m.uid() != me {
        return Err(insecure(format!("owned by uid {}", m.uid())));
    }
    if m.mode() & 0o022 != 0 {
        return Err(insecure(format!("mode {:o} is writable by group or others", m.mode() & 0o7777)));
    }
    Ok(())
}

/// A filter's standing against the interfaces of the caller's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Attached to the interface of that name, at this ifindex.
    Live(u32),
    /// Its interface no longer exists (the XDP link lost its device).
    Gone,
    /// Its interface is still here under another name.
    Renamed { now: String, ifindex: u32 },
    /// Neither a link nor readable metadata to tell.
    Unknown,
}

fn state_of(dir: &Path, name: &str) -> State {
    let current = nametoindex(name);
    match recorded_ifindex(dir) {
        None => State::Unknown,
        Some(0) => State::Gone,
        Some(r) if r == current => State::Live(r),
        Some(r) => match indextoname(r) {
            Some(now) => State::Renamed { now, ifindex: r },
            None => State::Gone,
        },
    }
}

/// The ifindex of a filter's pinned XDP link (0 once its device is gone), if it has one.
pub fn link_ifindex(dir: &Path) -> Option<u32> {
    let fd = sys::obj_get(&dir.join(LINK_PIN)).ok()?;
    sys::link_xdp_ifindex(&fd).ok()
}

/// The ifindex a filter is on: its XDP link's (0 once the device is gone), or the one
/// recorded in its metadata at attach when there is no link pin.
pub fn recorded_ifindex(dir: &Path) -> Option<u32> {
    if let Ok(fd) = sys::obj_get(&dir.join(LINK_PIN)) {
        return sys::link_xdp_ifindex(&fd).ok();
    }
    // Meta starts with version, mode, ifindex (u32 each) in every layout so far.
    let v = pinned_array_value(&dir.join(filter_common::map_names::META)).ok()?;
    Some(u32::from_ne_bytes(v.get(8..12)?.try_into().ok()?))
}

/// The ifindex of `name` in this namespace, 0 if there is none.
pub fn nametoindex(name: &str) -> u32 {
    nix::net::if_::if_nametoindex(name).unwrap_or(0)
}

/// The name of the interface with this index in this namespace.
pub fn indextoname(index: u32) -> Option<String> {
    nix::net::if_::if_indextoname(index).ok().map(|c| c.to_string_lossy().into_owned())
}

/// An exclusive `flock` on a pin directory.
pub struct Lock(#[allow(dead_code)] File);

impl Lock {
    fn take(dir: &Path, iface: &str, wait: Duration) -> Result<Self, PinsError> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
            .open(dir)
            .map_err(io_err("opening", dir))?;
        let start = Instant::now();
        loop {
            // flock(2): held by the open file, so released however the process ends.
            match f.try_lock() {
                Ok(()) => return Ok(Self(f)),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(TryLockError::Error(e)) => return Err(io_err("locking", dir)(e)),
            }
            if start.elapsed() >= wait {
                let holder = match lock_holder(&f) {
                    Some(pid) => describe_pid(pid),
                    None => "pid unknown".to_string(),
                };
                return Err(PinsError::Locked { iface: iface.to_string(), holder, secs: wait.as_secs() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The pid holding a flock on the file of `f`, from /proc/locks.
fn lock_holder(f: &File) -> Option<u32> {
    let m = f.metadata().ok()?;
    let (major, minor) = (nix::sys::stat::major(m.dev()), nix::sys::stat::minor(m.dev()));
    let want = format!("{major:02x}:{minor:02x}:{}", m.ino());
    let text = fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"; waiters have "->" after "1:".
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") || f.get(5) != Some(&want.as_str()) {
            return None;
        }
        f[4].parse().ok()
    })
}

fn describe_pid(pid: u32) -> String {
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(c) if !c.is_empty() => {
            let cmd: Vec<String> = c
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into())
                .collect();
            let mut cmd = cmd.join(" ");
            if cmd.len() > 80 {
                let mut cut = 77;
                while !cmd.is_char_boundary(cut) {
                    cut -= 1;
                }
                cmd.truncate(cut);
                cmd.push_str("...");
            }
            format!("pid {pid}: {}", cmd.escape_debug())
        }
        _ => format!("pid {pid}"),
    }
}

fn subdirs(dir: &Path) -> Result<Vec<String>, PinsError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("reading", dir)(e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Interfaces with a pin directory in this network namespace, sorted.
pub fn attached() -> Result<Vec<String>, PinsError> {
    let ns = NetnsId::current()?;
    let dir = root().join(ns.dir_name());
    if fs::symlink_metadata(&dir).is_ok() {
        check_dir(&root())?;
        check_dir(&dir)?;
    }
    subdirs(&dir)
}

/// Every filter under the pin root, in every namespace, and old-layout ones; this
/// namespace's first.
pub fn all() -> Result<Vec<IfacePins>, PinsError> {
    let root = root();
    if fs::symlink_metadata(&root).is_err() {
        return Ok(Vec::new());
    }
    check_dir(&root)?;
    let here = NetnsId::current().ok();
    let mut out = Vec::new();
    for name in subdirs(&root)? {
        match NetnsId::parse(&name) {
            Some(ns) => {
                for iface in subdirs(&root.join(&name))? {
                    let dir = root.join(&name).join(&iface);
                    out.push(IfacePins { iface, dir, netns: Some(ns), layout: Layout::Scoped });
                }
            }
            None => {
                let dir = root.join(&name);
                out.push(IfacePins { iface: name, dir, netns: None, layout: Layout::Flat });
            }
        }
    }
    out.sort_by_key(|p| (p.netns != here || here.is_none(), p.netns, p.iface.clone()));
    Ok(out)
}

/// What a command may act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Reading or changing the maps: the filter must be on the named interface.
    Use,
    /// Removing the filter: also allowed when its interface is gone, its pins are
    /// incomplete or of the old layout (as long as they are not another namespace's).
    Detach,
}

/// The filter a command means: the one on the interface named, in this network
/// namespace, or the only one in this namespace when none is named.
pub fn resolve(iface: Option<&str>) -> Result<IfacePins, PinsError> {
    resolve_for(iface, Purpose::Use)
}

pub fn resolve_for(iface: Option<&str>, purpose: Purpose) -> Result<IfacePins, PinsError> {
    let attached = attached()?;
    let name = match iface {
        Some(name) => name.to_string(),
        None => match attached.as_slice() {
            [] => return Err(legacy_only(purpose).unwrap_or(PinsError::NoneAttached)),
            [one] => one.clone(),
            _ => {
                // Pins whose interface is gone (a deleted veth, or a dead namespace whose
                // inode a new one reuses) are nothing to work on: the one live filter is
                // meant. Removing them still takes their name.
                let live: Vec<&String> = attached
                    .iter()
                    .filter(|n| {
                        purpose == Purpose::Detach
                            || IfacePins::new(n).map_or(true, |p| p.state() != State::Gone)
                    })
                    .collect();
                match live.as_slice() {
                    [one] => (*one).clone(),
                    _ => return Err(PinsError::Ambiguous(attached)),
                }
            }
        },
    };
    let pins = IfacePins::new(&name)?;
    if pins.exists() {
        pins.check_secure()?;
        return match (pins.state(), purpose) {
            (State::Live(_), _) => Ok(pins),
            (State::Gone | State::Unknown, Purpose::Detach) => Ok(pins),
            (State::Gone, Purpose::Use) => Err(PinsError::Gone { iface: name }),
            (State::Unknown, Purpose::Use) => {
                Err(PinsError::Incomplete { iface: name, dir: pins.dir.display().to_string() })
            }
            (State::Renamed { now, ifindex }, _) => Err(PinsError::Renamed { iface: name, now, ifindex }),
        };
    }
    // Renamed since attach: the pins are under the old name, the link on this ifindex.
    let index = nametoindex(&name);
    if index != 0 {
        for other in &attached {
            let dir = pins.dir.with_file_name(other);
            if recorded_ifindex(&dir) == Some(index) {
                let p = IfacePins { dir, ..pins.clone() };
                p.check_secure()?;
                return Ok(p);
            }
        }
    }
    // Pins of floodgate before namespace scoping.
    if let Some(flat) = legacy_dir(&name) {
        let p = IfacePins { iface: name.clone(), dir: flat, netns: None, layout: Layout::Flat };
        p.check_secure()?;
        let dir = p.dir.display().to_string();
        return match (purpose, recorded_ifindex(&p.dir)) {
            (Purpose::Use, _) => Err(PinsError::Legacy { iface: name, dir }),
            (Purpose::Detach, Some(r)) if r != 0 && r != index => {
                Err(PinsError::LegacyElsewhere { iface: name, dir, ifindex: r })
            }
            (Purpose::Detach, _) => Ok(p),
        };
    }
    let elsewhere = all()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.layout == Layout::Scoped && p.iface == name && p.netns != pins.netns)
        .filter_map(|p| p.netns.map(|n| n.label()))
        .collect();
    Err(PinsError::NotAttached { iface: name, attached, elsewhere })
}

/// The old-layout pin directory of `iface` (`ROOT/IFACE`), if there is one.
pub fn legacy_dir(iface: &str) -> Option<PathBuf> {
    let flat = root().join(iface);
    (NetnsId::parse(iface).is_none() && fs::symlink_metadata(&flat).is_ok()).then_some(flat)
}

/// With no interface named and none attached here: old-layout pins, if any, get the
/// way out rather than "not attached".
fn legacy_only(purpose: Purpose) -> Option<PinsError> {
    let flat: Vec<IfacePins> = all().ok()?.into_iter().filter(|p| p.layout == Layout::Flat).collect();
    match (purpose, flat.as_slice()) {
        (Purpose::Use, [one]) => {
            Some(PinsError::Legacy { iface: one.iface.clone(), dir: one.dir.display().to_string() })
        }
        _ => None,
    }
}

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// Makes sure the pin root exists on a bpffs, owned by root and closed to others.
/// With the default root, mounts a bpffs (mode 0700) at /sys/fs/bpf if none is there;
/// with [`PIN_ROOT_ENV`] set, mounts nothing elsewhere: the root, or its nearest
/// existing parent, must already be on a bpffs. Returns true if it mounted one.
pub fn ensure_bpffs() -> Result<bool, PinsError> {
    let root = root();
    let mut mounted = false;
    let bpffs = Path::new(BPFFS);
    if (!custom_root() || root.starts_with(bpffs)) && !is_bpffs(bpffs) {
        fs::create_dir_all(bpffs).map_err(io_err("creating", bpffs))?;
        nix::mount::mount(Some("bpf"), bpffs, Some("bpf"), MsFlags::empty(), Some("mode=0700"))
            .map_err(|e| io_err("mounting bpffs at", bpffs)(e.into()))?;
        mounted = true;
    }
    create_secure(&root)?;
    Ok(mounted)
}

/// Creates `dir` (mode 0700) and its missing parents inside a bpffs, and checks it.
fn create_secure(dir: &Path) -> Result<(), PinsError> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while fs::symlink_metadata(cur).is_err() {
        missing.push(cur);
        cur = cur.parent().ok_or_else(|| PinsError::NotBpffs { path: dir.display().to_string() })?;
    }
    if !is_bpffs(cur) {
        return Err(PinsError::NotBpffs { path: dir.display().to_string() });
    }
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("creating", d)(e)),
        }
    }
    check_dir(dir)
}

/// Creates the namespace directory of `pins` under the (existing) root.
pub fn create_netns_dir(pins: &IfacePins) -> Result<(), PinsError> {
    let root = root();
    check_dir(&root)?;
    if let Some(ns) = pins.netns {
        create_secure(&root.join(ns.dir_name()))?;
    }
    Ok(())
}

/// Creates the interface directory itself (mode 0700): fails with `AlreadyExists`
/// when another attach got there first.
pub fn create_iface_dir(pins: &IfacePins) -> io::Result<()> {
    DirBuilder::new().mode(0o700).create(&pins.dir)
}

/// Removes the namespace directory of `pins` if it is empty (after a detach).
pub fn remove_netns_dir_if_empty(pins: &IfacePins) {
    if pins.layout == Layout::Scoped
        && let Some(parent) = pins.dir.parent()
    {
        let _ = fs::remove_dir(parent);
    }
}

/// Raw bpf(2) calls for what aya does not expose: reading a pinned link's ifindex and
/// a pinned map's bytes whatever their layout.
mod sys {
    use super::*;
    use crate::sys::bpf;

    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_TYPE_XDP: u32 = 6;

    pub(super) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        let mut attr = [0u64; 16];
        attr[0] = c.as_ptr() as u64;
        let fd = bpf(BPF_OBJ_GET, &mut attr)?;
        // SAFETY: the kernel returned a new fd that we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn info(fd: &OwnedFd, buf: &mut [u64; 32]) -> io::Result<()> {
        let mut attr = [0u64; 16];
        attr[0] = fd.as_raw_fd() as u32 as u64 | ((size_of_val(buf) as u64) << 32);
        attr[1] = buf.as_mut_ptr() as u64;
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
    }

    /// bpf_link_info: type, id, prog_id (u32), then the union at offset 16.
    pub(super) fn link_xdp_ifindex(fd: &OwnedFd) -> io::Result<u32> {
        let mut buf = [0u64; 32];
        info(fd, &mut buf)?;
        if buf[0] as u32 != BPF_LINK_TYPE_XDP {
            return Err(io::Error::other("not an XDP link"));
        }
        Ok(buf[2] as u32)
    }

    /// bpf_map_info: type, id, key_size, value_size (u32 each).
    pub(super) fn map_value_size(fd: &OwnedFd) -> io::Result<u32> {
        let mut buf = [0u64; 32];
        info(fd, &mut buf)?;
        Ok((buf[1] >> 32) as u32)
    }

    pub(super) fn map_lookup(fd: &OwnedFd, key: &[u8], value: &mut [u8]) -> io::Result<()> {
        let mut attr = [0u64; 16];
        attr[0] = fd.as_raw_fd() as u32 as u64;
        attr[1] = key.as_ptr() as u64;
        attr[2] = value.as_mut_ptr() as u64;
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
    }
}

/// The bytes of key 0 of a pinned array map, whatever its value size (for layout checks on maps
/// pinned by any version).
pub fn pinned_array_value(path: &Path) -> io::Result<Vec<u8>> {
    let fd = sys::obj_get(path)?;
    let size = sys::map_value_size(&fd)? as usize;
    let mut v = vec![0u8; size];
    sys::map_lookup(&fd, &0u32.to_ne_bytes(), &mut v)?;
    Ok(v)
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

    #[test]
    fn netns_dir_names_round_trip() {
        let id = NetnsId { dev: 4, ino: 4026531840 };
        assert_eq!(id.dir_name(), "netns-4-4026531840");
        assert_eq!(NetnsId::parse(&id.dir_name()), Some(id));
        for bad in ["eth0", "netns-", "netns-4", "netns-a-1", "netns-1-"] {
            assert_eq!(NetnsId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_current_namespace_has_an_identity() {
        let a = NetnsId::current().unwrap();
        let b = NetnsId::of_path(Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.ino, 0);
    }

    #[test]
    fn insecure_directories_are_refused() {
        let base = std::env::temp_dir().join(format!("fgp-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        DirBuilder::new().mode(0o700).create(&base).unwrap();
        assert!(check_dir(&base).is_ok());
        fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let e = check_dir(&base).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let link = base.with_extension("link");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&base, &link).unwrap();
        let e = check_dir(&link).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        fs::remove_file(&link).unwrap();
        fs::remove_dir(&base).unwrap();
    }
}
