//! Taking over a pinned filter without a gap: a new `floodgate run` (a restart, or a
//! newer floodgate after an upgrade) swaps its own program in on the pinned XDP link
//! with one BPF_LINK_UPDATE. The interface is never without a program: packets see
//! the old program until the update, the new one after it; nothing is detached.
//!
//! - Same layout (the pinned metadata is this floodgate's version and the maps fit):
//!   the new program is loaded over the pinned maps themselves ([`replace_program`]),
//!   so lists, limits, counters, tracked sources and bans carry over untouched.
//! - Another layout (another version's pins, or a capacity the maps cannot hold):
//!   a new set of maps is made and filled first ([`rebuild`]), then the program is
//!   swapped in and the pins replaced. Counters restart from zero; list entries are
//!   carried over when the old maps are readable by this floodgate, and the config's
//!   lists are written before the swap, so a blocklisted source is dropped throughout.
//!
//! Callers hold the interface's lock.

use std::{fs, io, path::Path};

use aya::{
    Ebpf,
    programs::{
        ProgramError,
        links::{FdLink, LinkError, PinnedLink},
        loaded_programs,
        xdp::XdpLink,
    },
};
use filter_common::{MODE_NATIVE, Meta, map_names};
use thiserror::Error;

use crate::{
    bpflog,
    config::BpfLogLevel,
    loader::{self, AttachError, Capacity},
    maps::Core,
    pins::{self, IfacePins},
};

/// Subdirectory of an interface's pins where a rebuild pins its new maps before they
/// replace the old ones.
pub const STAGING: &str = "next";

#[derive(Debug, Error)]
pub enum TakeoverError {
    #[error(transparent)]
    Load(#[from] AttachError),
    #[error("opening the pinned XDP link {path}")]
    Link {
        path: String,
        #[source]
        source: LinkError,
    },
    #[error("reading the running program's id")]
    Info(#[source] LinkError),
    #[error("swapping the program on the XDP link (BPF_LINK_UPDATE)")]
    Update(#[source] ProgramError),
    #[error("{what} {path}")]
    Pins {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("recording the new program's log level in the pinned metadata")]
    Meta(#[source] AttachError),
    #[error("filling the new maps before the swap")]
    Populate(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What a takeover did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Same layout; `changed` is false when the program swapped in is the same code
    /// (same tag) as the one it replaced.
    Replaced { changed: bool },
    /// Another layout, and why.
    Rebuilt { why: String },
}

fn pins_err<'a>(what: &'static str, path: &'a Path) -> impl Fn(io::Error) -> TakeoverError + 'a {
    move |source| TakeoverError::Pins { what, path: path.display().to_string(), source }
}

/// The pinned link, as a link a program can be swapped onto.
fn pinned_link(pins: &IfacePins) -> Result<FdLink, TakeoverError> {
    let path = pins.link();
    PinnedLink::from_pin(&path)
        .map(FdLink::from)
        .map_err(|source| TakeoverError::Link { path: path.display().to_string(), source })
}

/// The tag (hash of the instructions, map references left out) of the program a link runs.
fn running_tag(link: &FdLink) -> Result<Option<u64>, TakeoverError> {
    let id = link.info().map_err(TakeoverError::Info)?.program_id();
    Ok(loaded_programs().filter_map(Result::ok).find(|p| p.id() == id).map(|p| p.tag()))
}

/// Swaps `ebpf`'s entry program onto the pinned link (BPF_LINK_UPDATE): atomic for
/// packets. Returns whether the code differs from what ran before.
fn swap(ebpf: &mut Ebpf, pins: &IfacePins) -> Result<bool, TakeoverError> {
    let link = pinned_link(pins)?;
    let old = running_tag(&link)?;
    let prog = loader::program(ebpf)?;
    let new = prog.info().map_err(TakeoverError::Update)?.tag();
    let link = XdpLink::try_from(link).map_err(TakeoverError::Info)?;
    // The program now owns a handle on the link; the pin keeps it attached after
    // `ebpf` is dropped.
    prog.attach_to_link(link).map_err(TakeoverError::Update)?;
    Ok(old != Some(new))
}

/// Pins `ebpf`'s map `name` over the pin of that name in `pins` (pinned in the staging
/// directory, then renamed: bpffs names cannot carry a suffix, dots are refused).
fn pin_over(ebpf: &Ebpf, name: &str, pins: &IfacePins) -> Result<(), TakeoverError> {
    let map = ebpf.map(name).ok_or_else(|| TakeoverError::Pins {
        what: "the new object has no map",
        path: name.to_string(),
        source: io::ErrorKind::NotFound.into(),
    })?;
    let staging = pins.dir.join(STAGING);
    let _ = remove_dir_all_pins(&staging);
    fs::create_dir(&staging).map_err(pins_err("creating", &staging))?;
    let tmp = staging.join(name);
    let pinned = map
        .pin(&tmp)
        .map_err(|e| TakeoverError::Pins {
            what: "pinning",
            path: tmp.display().to_string(),
            source: io::Error::other(e),
        })
        .and_then(|()| {
            fs::rename(&tmp, pins.map(name)).map_err(pins_err("replacing the pin", &pins.map(name)))
        });
    let _ = remove_dir_all_pins(&staging);
    pinned
}

/// Same layout: loads this build's program over the pinned maps and swaps it in.
/// Fails with [`AttachError::Load`] when a map does not fit (another layout): then
/// nothing changed and [`rebuild`] is the way.
/// `bpf_log` is the new program's log level, recorded in the (shared) metadata once
/// it runs.
pub fn replace_program(
    pins: &IfacePins,
    cap: Capacity,
    bpf_log: Option<BpfLogLevel>,
) -> Result<Outcome, TakeoverError> {
    let mut ebpf = loader::load_reusing(cap, bpf_log, Some(&pins.dir))?;
    let changed = swap(&mut ebpf, pins)?;
    let record = |ebpf: &mut Ebpf| -> Result<(), AttachError> {
        let mut core = Core::open(ebpf)?;
        let meta = core.read()?;
        core.write(&Meta { bpf_log: bpflog::level_number(bpf_log).into(), ..meta })?;
        Ok(())
    };
    record(&mut ebpf).map_err(TakeoverError::Meta)?;
    // The old tail-call table keeps the old programs loaded: the new table replaces
    // its pin (the new entry program already calls through the new one).
    pin_over(&ebpf, map_names::TAILS, pins)?;
    Ok(Outcome::Replaced { changed })
}

/// What the old pins say of the attach (mode, ifindex), read without assuming their
/// layout beyond its first words (every `Meta` so far starts with version, mode, ifindex).
fn old_attach(pins: &IfacePins) -> (u32, u32) {
    let v = pins::pinned_array_value(&pins.map(map_names::META)).unwrap_or_default();
    let word = |i: usize| v.get(i * 4..i * 4 + 4).map(|b| u32::from_ne_bytes(b.try_into().unwrap()));
    (word(1).unwrap_or(MODE_NATIVE), word(2).unwrap_or(0))
}

/// Another layout: loads a new object with new maps (sized by `cap`), lets `populate`
/// fill them (the config, and what it carries over), swaps the program in, then
/// replaces the pins. Until the swap the old filter runs untouched; a failure before
/// it leaves everything as it was.
pub fn rebuild(
    pins: &IfacePins,
    cap: Capacity,
    bpf_log: Option<BpfLogLevel>,
    why: String,
    populate: loader::Populate<'_>,
) -> Result<Outcome, TakeoverError> {
    let mut ebpf = loader::load(cap, bpf_log)?;
    let (mode, ifindex) = old_attach(pins);
    let ifindex = pins::link_ifindex(&pins.dir).unwrap_or(ifindex);
    loader::init_meta(&mut ebpf, mode, ifindex, cap, bpf_log)?;
    populate(&mut ebpf).map_err(TakeoverError::Populate)?;

    let staging = pins.dir.join(STAGING);
    let _ = remove_dir_all_pins(&staging);
    fs::create_dir(&staging).map_err(pins_err("creating", &staging))?;
    let names: Vec<String> =
        ebpf.maps().map(|(n, _)| n.to_string()).filter(|n| !n.starts_with('.')).collect();
    let staged = (|| {
        for name in &names {
            let path = staging.join(name);
            ebpf.map(name).expect("listed").pin(&path).map_err(|e| TakeoverError::Pins {
                what: "pinning",
                path: path.display().to_string(),
                source: io::Error::other(e),
            })?;
        }
        Ok(())
    })();
    if let Err(e) = staged {
        let _ = remove_dir_all_pins(&staging);
        return Err(e);
    }
    if let Err(e) = swap(&mut ebpf, pins) {
        let _ = remove_dir_all_pins(&staging);
        return Err(e);
    }
    // Packets run the new program from here: its pins replace the old ones.
    for name in &names {
        let to = pins.map(name);
        fs::rename(staging.join(name), &to).map_err(pins_err("replacing the pin", &to))?;
    }
    fs::remove_dir(&staging).map_err(pins_err("removing", &staging))?;
    // Maps of the old layout that this one does not have.
    for entry in fs::read_dir(&pins.dir).map_err(pins_err("reading", &pins.dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != pins::LINK_PIN && !names.contains(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(Outcome::Rebuilt { why })
}

fn remove_dir_all_pins(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        fs::remove_file(entry?.path())?;
    }
    fs::remove_dir(dir)
}
