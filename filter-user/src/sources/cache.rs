//! The last good copy of each URL source on disk, so that a restart without network
//! still has the list and the first fetch can be conditional.
//!
//! One file per URL under the cache directory, named `SLUG-HASH.list`: a readable slug
//! of the URL and 16 hex digits of its FNV-1a hash (stable across builds, unlike std's
//! hasher). The file is one JSON line of metadata (the URL, the validators, the fetch
//! time), then the body exactly as served. Written atomically: a temporary file in the
//! same directory, fsync, rename, fsync of the directory.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Characters of the URL the file name keeps at most.
const SLUG_MAX: usize = 48;

/// The conditional-GET validators of a fetched body, as the server sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A cached copy: the body as served and what came with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    pub validators: Validators,
    pub fetched: SystemTime,
    pub body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    fetched_unix_secs: u64,
}

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("reading {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{}: not a list cache file ({reason})", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: caches {found}, not this source", .path.display())]
    OtherUrl { path: PathBuf, found: String },
}

/// The cache file of `url` in `dir`.
pub fn path_for(dir: &Path, url: &str) -> PathBuf {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let mut slug = String::new();
    for c in rest.chars().take(SLUG_MAX) {
        slug.push(if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' });
    }
    let slug = slug.trim_matches(['_', '.']);
    dir.join(format!("{slug}-{:016x}.list", fnv1a(url.as_bytes())))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The cached copy of `url` at `path`; None when there is none.
pub fn load(path: &Path, url: &str) -> Result<Option<Cached>, CacheError> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CacheError::Read { path: path.into(), source }),
    };
    let corrupt = |reason: String| CacheError::Corrupt { path: path.into(), reason };
    let nl = data.iter().position(|&b| b == b'\n').ok_or_else(|| corrupt("no header line".into()))?;
    let header: Header = serde_json::from_slice(&data[..nl]).map_err(|e| corrupt(format!("header: {e}")))?;
    if header.url != url {
        return Err(CacheError::OtherUrl { path: path.into(), found: header.url });
    }
    Ok(Some(Cached {
        validators: Validators { etag: header.etag, last_modified: header.last_modified },
        fetched: UNIX_EPOCH + Duration::from_secs(header.fetched_unix_secs),
        body: data[nl + 1..].to_vec(),
    }))
}

/// Replaces the cached copy of `url` at `path` with `copy`, atomically.
pub fn store(path: &Path, url: &str, copy: &Cached) -> Result<(), CacheError> {
    let write_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CacheError::Write { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    let header = Header {
        url: url.to_string(),
        etag: copy.validators.etag.clone(),
        last_modified: copy.validators.last_modified.clone(),
        fetched_unix_secs: unix_secs(copy.fetched),
    };
    crate::atomic::write_atomic(path, |f| {
        serde_json::to_writer(&mut *f, &header)?;
        f.write_all(b"\n")?;
        f.write_all(&copy.body)
    })
    .map_err(write_err(path))
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_stable_and_distinct() {
        let d = Path::new("/var/lib/floodgate/lists");
        let a = path_for(d, "https://www.spamhaus.org/drop/drop.txt");
        assert_eq!(a, path_for(d, "https://www.spamhaus.org/drop/drop.txt"));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("www.spamhaus.org_drop_drop.txt-"), "{name}");
        assert!(name.ends_with(".list") && name.len() == "www.spamhaus.org_drop_drop.txt-".len() + 16 + 5);
        assert_ne!(a, path_for(d, "https://www.spamhaus.org/drop/edrop.txt"));
        assert_ne!(a, path_for(d, "http://www.spamhaus.org/drop/drop.txt"));
        let odd = path_for(d, "https://h/../../etc/passwd?x=/..");
        assert_eq!(odd.parent(), Some(d));
        assert!(!odd.file_name().unwrap().to_str().unwrap().contains('/'));
    }

    #[test]
    fn round_trip_and_other_url() {
        let dir = std::env::temp_dir().join(format!("fg-cache-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let url = "http://127.0.0.1:1/l";
        let path = path_for(&dir, url);
        assert!(load(&path, url).unwrap().is_none());
        let copy = Cached {
            validators: Validators { etag: Some("\"v1\"".into()), last_modified: None },
            fetched: UNIX_EPOCH + Duration::from_secs(1_764_000_000),
            body: b"192.0.2.0/24\n\n; x\n".to_vec(),
        };
        store(&path, url, &copy).unwrap();
        assert_eq!(load(&path, url).unwrap(), Some(copy));
        assert!(matches!(load(&path, "http://other/"), Err(CacheError::OtherUrl { .. })));
        fs::write(&path, b"garbage").unwrap();
        assert!(matches!(load(&path, url), Err(CacheError::Corrupt { .. })));
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
