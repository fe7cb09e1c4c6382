//! The data path's own log records (aya-log) forwarded to the `log` crate.
//!
//! The XDP program reports its rare events (an auto-ban decided, a table full, a
//! tail-call slot empty) through aya-log-ebpf under the target [`TARGET`]. Which levels
//! it emits is fixed when the program is loaded ([`crate::loader::load`] sets
//! `aya_log::LEVEL` as a constant the verifier sees, and records it in
//! [`Meta::bpf_log`]); with logging off the verifier prunes the log statements.
//!
//! A [`Forwarder`] reads aya-log's ring buffer of one loaded program, found by program
//! id: the same way for a program this process just loaded and for one pinned by an
//! earlier run. [`Forwarder::spawn`] drains it on a tokio task.

use std::{io, path::Path};

use aya::{
    Ebpf,
    programs::{
        ProgramError,
        links::{LinkError, PinnedLink},
    },
};
use aya_log::EbpfLogger;
use filter_common::{BPF_LOG_OFF, Meta};
use log::Log;
use thiserror::Error;

use crate::{config::BpfLogLevel, loader, pins::IfacePins};

/// The `log` target of the data path's records.
pub const TARGET: &str = "floodgate::bpf";

#[derive(Debug, Error)]
pub enum BpfLogError {
    #[error("opening the pinned link {path}")]
    Link {
        path: String,
        #[source]
        source: LinkError,
    },
    #[error("reading the loaded program's id")]
    Program(#[source] ProgramError),
    #[error("opening the log buffer of program {id}")]
    Logger {
        id: u32,
        #[source]
        source: aya_log::Error,
    },
    #[error("watching the log buffer")]
    Register(#[source] io::Error),
    #[error(transparent)]
    Attach(#[from] loader::AttachError),
}

/// aya-log's level number (the value of `aya_log::LEVEL`) for `level`: a statement
/// of level L is emitted when L <= this; 0 (off) emits nothing.
pub fn level_number(level: Option<BpfLogLevel>) -> u8 {
    use aya_log::Level;
    let l = match level {
        None => return BPF_LOG_OFF as u8,
        Some(BpfLogLevel::Error) => Level::Error,
        Some(BpfLogLevel::Warn) => Level::Warn,
        Some(BpfLogLevel::Info) => Level::Info,
        Some(BpfLogLevel::Debug) => Level::Debug,
        Some(BpfLogLevel::Trace) => Level::Trace,
    };
    l as u8
}

/// The level a filter was loaded with, from its bookkeeping.
pub fn loaded_level(meta: &Meta) -> Option<BpfLogLevel> {
    Some(match meta.bpf_log {
        BPF_LOG_OFF => return None,
        1 => BpfLogLevel::Error,
        2 => BpfLogLevel::Warn,
        3 => BpfLogLevel::Info,
        4 => BpfLogLevel::Debug,
        // aya-log emits every level at or below the number.
        _ => BpfLogLevel::Trace,
    })
}

/// Whether the program behind `meta` must be loaded again to log at `wanted`: the
/// level is a constant of the loaded program.
pub fn needs_reload(meta: &Meta, wanted: Option<BpfLogLevel>) -> bool {
    loaded_level(meta) != wanted
}

/// The id of the program attached through the link pinned at `path`.
pub fn program_id_of_link(path: &Path) -> Result<u32, BpfLogError> {
    let link_err = |source| BpfLogError::Link { path: path.display().to_string(), source };
    let link = PinnedLink::from_pin(path).map_err(link_err)?;
    let info = aya::programs::links::FdLink::from(link).info().map_err(link_err)?;
    Ok(info.program_id())
}

/// Reads one program's log records and hands them to a `log` logger.
pub struct Forwarder<T: Log = &'static dyn Log> {
    logger: EbpfLogger<T>,
}

impl Forwarder {
    /// Forwards the records of the program with id `id` to the global logger
    /// ([`log::logger`]).
    pub fn for_program(id: u32) -> Result<Self, BpfLogError> {
        Self::for_program_with(id, log::logger())
    }

    /// Forwards the records of a program loaded by this process (its maps stay in
    /// `ebpf`, so pinning them afterwards still pins the log buffer).
    pub fn for_loaded(ebpf: &mut Ebpf) -> Result<Self, BpfLogError> {
        Self::for_program(loaded_id(ebpf)?)
    }

    /// Forwards the records of the program attached (and pinned) under `pins`, e.g.
    /// one adopted from an earlier run.
    pub fn for_pins(pins: &IfacePins) -> Result<Self, BpfLogError> {
        Self::for_program(program_id_of_link(&pins.link())?)
    }
}

impl<T: Log> Forwarder<T> {
    /// As [`Forwarder::for_program`], to a logger of the caller's (tests capture
    /// records with one).
    pub fn for_program_with(id: u32, logger: T) -> Result<Self, BpfLogError> {
        let logger = EbpfLogger::init_from_id_with_logger(id, logger)
            .map_err(|source| BpfLogError::Logger { id, source })?;
        Ok(Forwarder { logger })
    }

    /// Hands every record waiting in the buffer to the logger, without blocking.
    pub fn flush(&mut self) {
        self.logger.flush();
    }
}

impl<T: Log + Send + 'static> Forwarder<T> {
    /// Drains the buffer on a tokio task whenever the kernel signals records; runs
    /// until the task is aborted (or the runtime stops). Must be called from within a
    /// tokio runtime.
    pub fn spawn(self) -> Result<tokio::task::JoinHandle<()>, BpfLogError> {
        // SAFETY: the EbpfLogger owns the ring buffer's fd; it stays open, and the same,
        // for as long as the AsyncFd owns the logger (flush only reads through it).
        let mut fd =
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(self, tokio::io::Interest::READABLE) }
                .map_err(|e| BpfLogError::Register(e.into()))?;
        Ok(tokio::spawn(async move {
            loop {
                let mut guard = match fd.readable_mut().await {
                    Ok(g) => g,
                    Err(e) => {
                        log::error!(target: TARGET, "reading the data path's log buffer failed: {e}");
                        return;
                    }
                };
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }))
    }
}

impl<T: Log> std::os::fd::AsRawFd for Forwarder<T> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.logger)
    }
}

/// The entry program's id of a loaded object.
fn loaded_id(ebpf: &mut Ebpf) -> Result<u32, BpfLogError> {
    let prog = loader::program(ebpf)?;
    Ok(prog.info().map_err(BpfLogError::Program)?.id())
}
