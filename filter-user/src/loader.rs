//! Loading, attaching, pinning and detaching the XDP program.

use std::{
    fs, io,
    time::{SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, ProgramArray},
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
    },
};
use filter_common::{
    DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SOURCES, META_VERSION, MODE_NATIVE, MODE_SKB, Meta, PROGRAM_NAME,
    TAIL_PROGRAMS, map_names,
};
use thiserror::Error;

use crate::{
    bpflog,
    config::BpfLogLevel,
    limits::{LimitError, LimiterMaps},
    maps::{Core, MapSource, MetaError, OpenError},
    object,
    pins::{self, IfacePins, PinsError},
};

/// Largest `--max-entries`: the compiled arrays hold four regions of this many
/// ranges, indexed with 31 bits (the directory's top bit marks a full /16).
pub const MAX_MAX_ENTRIES: u32 = 1 << 28;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Native (driver) mode, falling back to skb mode with a warning.
    Auto,
    Native,
    Skb,
}

#[derive(Debug, Error)]
pub enum AttachError {
    #[error("unknown interface '{iface}' in this network namespace{}", list_hint(.available))]
    UnknownInterface { iface: String, available: Vec<String> },
    #[error("floodgate is already attached to {0} (run `floodgate detach -i {0}` first)")]
    AlreadyAttached(String),
    #[error(
        "pins named {iface} are left in this network namespace but {why}: run `floodgate detach -i {detach}` first"
    )]
    Stale { iface: String, why: String, detach: String },
    #[error("{iface} already has an XDP program that floodgate does not manage: {source}")]
    Busy {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("--max-entries must be between 1 and {MAX_MAX_ENTRIES}, not {0}")]
    BadMaxEntries(u32),
    #[error("--max-sources must be between 1024 and {MAX_MAX_ENTRIES}, not {0}")]
    BadMaxSources(u32),
    #[error("{mode} XDP attach to {iface} failed")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("loading the XDP object")]
    Load(#[source] aya::EbpfError),
    #[error("the kernel rejected the XDP program")]
    Verify(#[source] ProgramError),
    #[error("installing the tail-called programs in the tail-call map")]
    Tails(#[source] std::io::Error),
    #[error(
        "the kernel attached {0} without a BPF link (kernel older than 5.9?): floodgate needs links to stay attached after it exits"
    )]
    NoLink(String),
    #[error("pinning {what} under {path}")]
    Pin {
        what: String,
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Pins(#[from] PinsError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("filling the maps before attaching")]
    Populate(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn list_hint(available: &[String]) -> String {
    if available.is_empty() { String::new() } else { format!(" (interfaces here: {})", available.join(", ")) }
}

/// What `attach` did.
#[derive(Debug)]
pub struct Attached {
    pub pins: IfacePins,
    /// [`MODE_NATIVE`] or [`MODE_SKB`].
    pub mode: u32,
    /// Set when auto mode fell back to skb: why native failed.
    pub native_error: Option<String>,
    /// Whether a bpffs had to be mounted.
    pub mounted_bpffs: bool,
}

/// Names of the interfaces in this network namespace.
pub fn interfaces() -> Vec<String> {
    nix::net::if_::if_nameindex()
        .map(|list| list.iter().map(|i| i.name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// The index of `iface` in this network namespace.
pub fn ifindex(iface: &str) -> Result<u32, AttachError> {
    pins::check_iface_name(iface)?;
    match pins::nametoindex(iface) {
        0 => Err(AttachError::UnknownInterface { iface: iface.to_string(), available: interfaces() }),
        i => Ok(i),
    }
}

/// Loads the program (list maps sized for `max_entries` per list and family), attaches
/// it to `iface`, and pins link and maps so it stays attached after this process exits.
/// `bpf_log` is the data path's log level (None: off), fixed for this load.
pub fn attach(
    iface: &str,
    mode: Mode,
    cap: Capacity,
    bpf_log: Option<BpfLogLevel>,
) -> Result<Attached, AttachError> {
    attach_filled(iface, mode, cap, bpf_log, &mut |_| Ok(()))
}

/// What fills a filter's maps before its program sees a packet.
pub type Populate<'a> = &'a mut dyn FnMut(&mut Ebpf) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// [`attach`], with `populate` filling the maps (the service's config) before the
/// program is attached: the first packet already meets the lists.
pub fn attach_filled(
    iface: &str,
    mode: Mode,
    cap: Capacity,
    bpf_log: Option<BpfLogLevel>,
    populate: Populate<'_>,
) -> Result<Attached, AttachError> {
    cap.check()?;
    let index = ifindex(iface)?;
    let mut pins = IfacePins::new(iface)?;
    let mounted_bpffs = pins::ensure_bpffs()?;
    // The path really used: the root may be relative or reached through symlinks.
    if let Ok(root) = fs::canonicalize(pins::root())
        && let (Some(ns), Some(name)) = (pins.netns, pins.dir.file_name())
    {
        pins.dir = root.join(ns.dir_name()).join(name);
    }
    check_free(&pins)?;
    let mut ebpf = load(cap, bpf_log)?;

    // The pins go in place before packets flow, so a half-done attach is always
    // visible (and removable with `detach`) rather than a program nobody can find.
    let mut made = Err(io::ErrorKind::NotFound.into());
    for _ in 0..3 {
        // A detach in this namespace may remove the (empty) namespace directory
        // between the two steps: then create it again.
        pins::create_netns_dir(&pins)?;
        made = pins::create_iface_dir(&pins);
        if !matches!(&made, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            break;
        }
    }
    made.map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            // Another attach to the same interface won the race.
            AttachError::AlreadyAttached(iface.to_string())
        } else {
            pin_err("directory", &pins.dir.display().to_string(), e)
        }
    })?;
    let result = (|| {
        for (name, map) in ebpf.maps() {
            // Our maps only: a compiler-made `.rodata`/`.bss` map is frozen or private
            // to this load, and some kernels refuse to pin it.
            if name.starts_with('.') {
                continue;
            }
            let path = pins.map(name);
            map.pin(&path).map_err(|e| pin_err(&format!("map {name}"), &path.display().to_string(), e))?;
        }
        // The mode is rewritten below once known; the seed and empty lists must be in
        // place before the first packet.
        init_meta(&mut ebpf, MODE_NATIVE, index, cap, bpf_log)?;
        populate(&mut ebpf).map_err(AttachError::Populate)?;
        let prog = program(&mut ebpf)?;
        let (link_id, mode, native_error) = match mode {
            Mode::Native => (attach_mode(prog, index, iface, XdpMode::Driver)?, MODE_NATIVE, None),
            Mode::Skb => (attach_mode(prog, index, iface, XdpMode::Skb)?, MODE_SKB, None),
            Mode::Auto => match attach_mode(prog, index, iface, XdpMode::Driver) {
                Ok(id) => (id, MODE_NATIVE, None),
                Err(AttachError::Attach { source, .. }) => {
                    let why = error_chain(&source);
                    (attach_mode(prog, index, iface, XdpMode::Skb)?, MODE_SKB, Some(why))
                }
                Err(e) => return Err(e),
            },
        };
        let link = prog.take_link(link_id).map_err(AttachError::Verify)?;
        let mut core = Core::open(&mut ebpf)?;
        let meta = core.read()?;
        core.write(&Meta { mode, ..meta })?;
        let link: FdLink = link.try_into().map_err(|_| AttachError::NoLink(iface.to_string()))?;
        let path = pins.link();
        link.pin(&path).map_err(|e| pin_err("the XDP link", &path.display().to_string(), e))?;
        Ok((mode, native_error))
    })();
    match result {
        Ok((mode, native_error)) => Ok(Attached { pins, mode, native_error, mounted_bpffs }),
        Err(e) => {
            // Dropping `ebpf` detaches an unpinned link; the pins are ours to remove.
            let _ = remove_pins(&pins);
            pins::remove_netns_dir_if_empty(&pins);
            Err(e)
        }
    }
}

/// Refuses to attach over existing pins of the same name in this namespace, saying
/// what they are.
fn check_free(pins: &IfacePins) -> Result<(), AttachError> {
    if let Some(dir) = pins::legacy_dir(&pins.iface) {
        return Err(PinsError::Legacy { iface: pins.iface.clone(), dir: dir.display().to_string() }.into());
    }
    if !pins.exists() {
        return Ok(());
    }
    pins.check_secure()?;
    let iface = pins.iface.clone();
    Err(match pins.state() {
        pins::State::Live(_) => AttachError::AlreadyAttached(iface),
        pins::State::Renamed { now, .. } => AttachError::Stale {
            iface,
            why: format!("they belong to the interface now named {now}"),
            detach: now,
        },
        pins::State::Gone => AttachError::Stale {
            detach: iface.clone(),
            iface,
            why: "their interface was deleted or moved since".into(),
        },
        pins::State::Unknown => {
            AttachError::Stale { detach: iface.clone(), iface, why: "they are incomplete".into() }
        }
    })
}

/// Sizes fixed at attach time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Entries per list and address family.
    pub entries: u32,
    /// Sources the limiter tracks in its LRU map.
    pub sources: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity { entries: DEFAULT_MAX_ENTRIES, sources: DEFAULT_MAX_SOURCES }
    }
}

impl Capacity {
    pub fn entries(entries: u32) -> Self {
        Capacity { entries, ..Default::default() }
    }

    fn check(&self) -> Result<(), AttachError> {
        if self.entries == 0 || self.entries > MAX_MAX_ENTRIES {
            return Err(AttachError::BadMaxEntries(self.entries));
        }
        if self.sources < 1024 || self.sources > MAX_MAX_ENTRIES {
            return Err(AttachError::BadMaxSources(self.sources));
        }
        Ok(())
    }
}

/// Loads the object with its maps sized by `cap`, and the program into the kernel
/// (this is where the verifier runs). Nothing is attached. `bpf_log` is the level of
/// the data path's log records (None: off): a constant of the loaded program, so the
/// verifier removes the statements of the levels that are off.
pub fn load(cap: Capacity, bpf_log: Option<BpfLogLevel>) -> Result<Ebpf, AttachError> {
    load_reusing(cap, bpf_log, None)
}

/// [`load`], with every map but the tail-call table taken from the pins in `reuse`
/// (same names, same layout; the kernel and aya refuse a map whose type or sizes
/// differ): the program a takeover swaps in keeps the running filter's lists,
/// limits, counters and tracked sources. The tail-call table is always new, so the
/// running entry program keeps calling its own generation until the link switches.
pub fn load_reusing(
    cap: Capacity,
    bpf_log: Option<BpfLogLevel>,
    reuse: Option<&std::path::Path>,
) -> Result<Ebpf, AttachError> {
    cap.check()?;
    raise_memlock();
    let level = bpflog::level_number(bpf_log);
    let mut loader = EbpfLoader::new();
    loader.override_global(aya_log::LEVEL, &level, true);
    if let Some(dir) = reuse {
        for name in map_names::ALL {
            if name != map_names::TAILS && fs::symlink_metadata(dir.join(name)).is_ok() {
                loader.map_pin_path(name, dir.join(name));
            }
        }
    }
    // Room for both generations of a replace.
    for name in map_names::LISTS {
        loader.map_max_entries(name, cap.entries * 2);
    }
    loader.map_max_entries(map_names::EXPIRY, cap.entries * 2);
    // A region of ranges per list and generation (filter_common::compiled), two u32
    // words to an element.
    loader.map_max_entries(map_names::V4_RANGES, cap.entries * filter_common::compiled::REGIONS / 2);
    loader.map_max_entries(map_names::RATE, cap.sources);
    let mut ebpf = loader.load(object::bytes()).map_err(AttachError::Load)?;
    program(&mut ebpf)?.load().map_err(AttachError::Verify)?;
    // The programs reached by tail call: loaded always (the pinned program array keeps
    // them), at work once `synproxy enable` protects a port.
    for (slot, name) in TAIL_PROGRAMS.into_iter().enumerate() {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(OpenError::Missing(name))?
            .try_into()
            .map_err(AttachError::Verify)?;
        prog.load().map_err(AttachError::Verify)?;
        let fd = prog.fd().map_err(AttachError::Verify)?.try_clone().map_err(AttachError::Tails)?;
        let map = ebpf.map_mut(map_names::TAILS).ok_or(OpenError::Missing(map_names::TAILS))?;
        let mut tails: ProgramArray<&mut MapData> = ProgramArray::try_from(map)
            .map_err(|source| OpenError::Type { name: map_names::TAILS, source })?;
        tails.set(slot as u32, &fd, 0).map_err(|e| AttachError::Tails(std::io::Error::other(e)))?;
    }
    Ok(ebpf)
}

/// The XDP program of a loaded object.
pub fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, AttachError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(OpenError::Missing(PROGRAM_NAME))?
        .try_into()
        .map_err(AttachError::Verify)
}

/// Writes the bookkeeping of a fresh attach (or test load): empty lists, the
/// limiter's seed, and the log level the program was loaded with.
pub fn init_meta(
    src: &mut impl MapSource,
    mode: u32,
    ifindex: u32,
    cap: Capacity,
    bpf_log: Option<BpfLogLevel>,
) -> Result<(), AttachError> {
    LimiterMaps::open(src)?.init_seed()?;
    Core::open(src)?.write(&Meta {
        version: META_VERSION,
        mode,
        ifindex,
        max_entries: cap.entries,
        counts: [[0; 2]; 2],
        attached_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        max_sources: cap.sources,
        _pad: 0,
        bpf_log: bpflog::level_number(bpf_log).into(),
        _reserved: 0,
    })?;
    Ok(())
}

fn attach_mode(
    prog: &mut Xdp,
    index: u32,
    iface: &str,
    mode: XdpMode,
) -> Result<aya::programs::xdp::XdpLinkId, AttachError> {
    let name = if mode == XdpMode::Skb { "skb" } else { "native" };
    prog.attach(index, mode).map_err(|source| {
        if is_busy(&source) {
            AttachError::Busy { iface: iface.to_string(), source }
        } else {
            AttachError::Attach { iface: iface.to_string(), mode: name, source }
        }
    })
}

fn is_busy(e: &ProgramError) -> bool {
    let text = error_chain(e);
    text.contains("File exists") || text.contains("Device or resource busy")
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn pin_err(what: &str, path: &str, e: impl std::error::Error + Send + Sync + 'static) -> AttachError {
    AttachError::Pin { what: what.to_string(), path: path.to_string(), source: Box::new(e) }
}

/// Without CAP_SYS_RESOURCE this fails; kernels >= 5.11 charge BPF memory to the
/// cgroup instead of RLIMIT_MEMLOCK, so the failure does not matter there.
fn raise_memlock() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    let _ = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY);
}

/// Detaches the program and removes every pin of the interface, whatever version of
/// floodgate made them: nothing here reads the maps.
pub fn detach(pins: &IfacePins) -> Result<(), AttachError> {
    let _lock = pins.lock()?;
    detach_locked(pins)
}

/// [`detach`] for a caller that holds the interface's lock.
pub fn detach_locked(pins: &IfacePins) -> Result<(), AttachError> {
    match PinnedLink::from_pin(pins.link()) {
        // Unpinning drops the last reference to the link: the kernel detaches the program.
        Ok(link) => drop(
            link.unpin()
                .map_err(|e| pin_err("removing the link pin", &pins.link().display().to_string(), e))?,
        ),
        Err(_) if fs::symlink_metadata(pins.link()).is_err() => {}
        // Not a link we can open (another object pinned there?): unlinking it still
        // drops the pin's reference.
        Err(_) => fs::remove_file(pins.link())
            .map_err(|e| pin_err("removing the link pin", &pins.link().display().to_string(), e))?,
    }
    remove_pins(pins).map_err(|e| pin_err("removing pins", &pins.dir.display().to_string(), e))?;
    pins::remove_netns_dir_if_empty(pins);
    Ok(())
}

fn remove_pins(pins: &IfacePins) -> io::Result<()> {
    for entry in fs::read_dir(&pins.dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            // Not something floodgate makes; empty ones go, anything else stays.
            fs::remove_dir(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    fs::remove_dir(&pins.dir)
}
