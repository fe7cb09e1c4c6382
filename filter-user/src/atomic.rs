//! Files replaced whole or not at all: written to a temporary file beside them,
//! synced, renamed over, and the directory synced so the rename survives a crash.

use std::{
    fs::{self, File},
    io,
    path::Path,
};

/// Replaces `path` with what `write` writes (its directory is created if missing).
/// On failure the old file is untouched and the temporary file removed.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces `path` with `value` as JSON, whole or not at all.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> io::Result<()> {
    write_atomic(path, |f| {
        use io::Write as _;
        let mut w = io::BufWriter::new(f);
        serde_json::to_writer(&mut w, value)?;
        w.flush()
    })
}

/// The JSON value [`write_json`] saved at `path`, or None when there is no file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
