//! Local list files and globs, read again at every reload.

use std::{collections::BTreeSet, io, path::PathBuf};

use filter_common::cidr::{self, ListFileError};
use ipnet::IpNet;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LocalError {
    #[error("reading {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Parse(#[from] ListFileError),
    #[error("glob '{pattern}': {reason}")]
    Glob { pattern: String, reason: String },
}

/// The entries of `files` and of every file the `globs` match now (a glob matching no
/// file adds nothing; directories are skipped), sorted (IPv4 first), each prefix once.
/// Each file is read once and checked whole: one bad line fails the whole read, so
/// nothing of a bad file is ever applied.
pub fn read_local(files: &[PathBuf], globs: &[String]) -> Result<Vec<IpNet>, LocalError> {
    let mut paths: BTreeSet<PathBuf> = files.iter().cloned().collect();
    for pattern in globs {
        let glob_err = |reason: String| LocalError::Glob { pattern: pattern.clone(), reason };
        for entry in glob::glob(pattern).map_err(|e| glob_err(e.to_string()))? {
            let path = entry.map_err(|e| glob_err(e.to_string()))?;
            if !path.is_dir() {
                paths.insert(path);
            }
        }
    }
    let mut nets = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|source| LocalError::Read { path: path.clone(), source })?;
        nets.extend(cidr::parse_list(&path.to_string_lossy(), &text)?);
    }
    nets.sort_by(crate::store::net_order);
    nets.dedup();
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn files_and_globs_read_again() {
        let dir = std::env::temp_dir().join(format!("fg-local-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("d.d/sub")).unwrap();
        let one = dir.join("one.txt");
        fs::write(&one, "192.0.2.0/24\n2001:db8::/32 ; x\n").unwrap();
        fs::write(dir.join("d.d/a.list"), "198.51.100.0/24\n192.0.2.0/24\n").unwrap();
        let pattern = format!("{}/d.d/*", dir.display());
        let nets = read_local(std::slice::from_ref(&one), std::slice::from_ref(&pattern)).unwrap();
        let want: Vec<IpNet> =
            ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(nets, want);
        // A file that appears later is picked up by the same glob.
        fs::write(dir.join("d.d/b.list"), "203.0.113.9\n").unwrap();
        assert_eq!(read_local(&[], std::slice::from_ref(&pattern)).unwrap().len(), 3);
        fs::write(dir.join("d.d/c.list"), "203.0.113.9/24\n").unwrap();
        let err = read_local(&[], std::slice::from_ref(&pattern)).unwrap_err().to_string();
        assert!(
            err.ends_with("c.list:1:1: '203.0.113.9/24' has host bits set; did you mean 203.0.113.0/24?"),
            "{err}"
        );
        assert!(matches!(read_local(&[dir.join("missing")], &[]), Err(LocalError::Read { .. })));
        assert!(matches!(read_local(&[], &["[".to_string()]), Err(LocalError::Glob { .. })));
        assert_eq!(read_local(&[], &[format!("{}/none/*", dir.display())]).unwrap(), vec![]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
