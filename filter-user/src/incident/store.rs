//! Incidents on disk: one directory per incident under the service's state directory,
//! `STATE_DIR/incidents/ID/`, holding `incident.json` (the record, replaced whole on
//! every save) and `samples.pcap` (written by the service beside it).
//!
//! IDs are `YYYYMMDD-HHMMSS-IFACE` of the start (UTC), so a directory listing sorts by
//! time; a second incident starting in the same second on the same interface gets
//! `-2`, `-3`, ... ([`Store::unique_id`]).

use std::{
    collections::HashSet,
    fs::{self, DirBuilder},
    io,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use thiserror::Error;

use super::record::{IncidentRecord, RECORD_VERSION, State};

/// The directory under the state directory holding one directory per incident.
pub const INCIDENTS_DIR: &str = "incidents";
/// The record in an incident's directory.
pub const RECORD_FILE: &str = "incident.json";
/// The sampled frames in an incident's directory.
pub const PCAP_FILE: &str = "samples.pcap";

/// What [`Store::prune`] keeps. Open incidents are never removed, whatever these say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Incidents kept at most (open ones included in the count).
    pub max_incidents: usize,
    /// Closed incidents that ended longer ago than this are removed.
    pub max_age: Duration,
    /// Bytes all incident directories may take together (pcaps dominate).
    pub max_bytes: u64,
}

impl Default for Limits {
    /// 200 incidents, 90 days, 2 GiB: a quarter's history on a host flooded daily,
    /// within a disk budget no server notices.
    fn default() -> Self {
        Limits { max_incidents: 200, max_age: Duration::from_secs(90 * 86_400), max_bytes: 2 << 30 }
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot remove {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
    #[error("no incident '{id}' in {}", path.display())]
    NotFound { id: String, path: PathBuf },
    #[error("'{id}' is not an incident id (no '/', no '..'), in {}", path.display())]
    BadId { id: String, path: PathBuf },
    #[error("{}: not an incident record: {source}", path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("{}: record version {found}, newer than this floodgate reads ({RECORD_VERSION})", path.display())]
    Version { path: PathBuf, found: u32 },
}

/// The incident ID of a start: `YYYYMMDD-HHMMSS-IFACE` (UTC).
pub fn new_id(started_ms: u64, interface: &str) -> String {
    // `2026-03-04T05:06:07Z` -> `20260304-050607`.
    let iso = crate::human::utc(started_ms);
    let digits: String = iso.chars().filter(char::is_ascii_digit).collect();
    format!("{}-{}-{interface}", &digits[..8], &digits[8..14])
}

/// Whether `id` can name a directory under the store and nothing else.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains('/') && !id.contains("..") && !id.starts_with('.') && !id.contains('\0')
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The incidents kept under one state directory.
#[derive(Clone, Debug)]
pub struct Store {
    /// `STATE_DIR/incidents`.
    root: PathBuf,
    limits: Limits,
}

impl Store {
    /// The store of the service: creates `STATE_DIR/incidents` (mode 0700: the records
    /// name sources and hold their packets) if missing.
    pub fn open(state_dir: &Path, limits: Limits) -> Result<Store, StoreError> {
        let root = state_dir.join(INCIDENTS_DIR);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|source| StoreError::Create { path: root.clone(), source })?;
        Ok(Store { root, limits })
    }

    /// The store as it is, for readers (the CLI): nothing is created, and a missing
    /// directory lists no incidents.
    pub fn existing(state_dir: &Path) -> Store {
        Store { root: state_dir.join(INCIDENTS_DIR), limits: Limits::default() }
    }

    /// `STATE_DIR/incidents`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The incident's directory (created by [`Store::save`]).
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Where the service writes the incident's sampled frames.
    pub fn pcap_path(&self, id: &str) -> PathBuf {
        self.dir(id).join(PCAP_FILE)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir(id).join(RECORD_FILE)
    }

    fn check_id(&self, id: &str) -> Result<(), StoreError> {
        if valid_id(id) {
            return Ok(());
        }
        Err(StoreError::BadId { id: id.to_string(), path: self.root.clone() })
    }

    /// Writes the record whole (a crash leaves the previous one), creating its
    /// directory (mode 0700) if needed.
    pub fn save(&self, rec: &IncidentRecord) -> Result<(), StoreError> {
        self.check_id(&rec.id)?;
        let dir = self.dir(&rec.id);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| StoreError::Create { path: dir.clone(), source })?;
        let path = self.record_path(&rec.id);
        // Compact: the service saves a growing timeline every few seconds.
        let mut json = serde_json::to_vec(rec).expect("a record serializes");
        json.push(b'\n');
        crate::atomic::write_atomic(&path, |f| io::Write::write_all(f, &json))
            .map_err(|source| StoreError::Write { path, source })
    }

    /// Reads one incident's record.
    pub fn load(&self, id: &str) -> Result<IncidentRecord, StoreError> {
        self.check_id(id)?;
        let path = self.record_path(id);
        let bytes = fs::read(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound { id: id.to_string(), path: self.root.clone() },
            _ => StoreError::Read { path: path.clone(), source },
        })?;
        let rec: IncidentRecord = serde_json::from_slice(&bytes)
            .map_err(|source| StoreError::Corrupt { path: path.clone(), source })?;
        if rec.version > RECORD_VERSION {
            return Err(StoreError::Version { path, found: rec.version });
        }
        Ok(rec)
    }

    /// Every readable record, newest first. A record that cannot be read is skipped
    /// with a warning: one bad file must not hide the others.
    pub fn list(&self) -> Result<Vec<IncidentRecord>, StoreError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Read { path: self.root.clone(), source }),
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Read { path: self.root.clone(), source })?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if !valid_id(&id) || !entry.path().is_dir() {
                continue;
            }
            match self.load(&id) {
                Ok(rec) => records.push(rec),
                Err(e) => tracing::warn!("incident {id} skipped: {e}"),
            }
        }
        records.sort_by(|a, b| (b.started_ms, &b.id).cmp(&(a.started_ms, &a.id)));
        Ok(records)
    }

    /// The newest incident still open on `interface`: the one to resume after a
    /// restart.
    pub fn open_of(&self, interface: &str) -> Option<IncidentRecord> {
        let records = self.list().map_err(|e| tracing::warn!("{e}")).ok()?;
        records.into_iter().find(|r| r.state == State::Open && r.interface == interface)
    }

    /// An ID for an incident starting at `started_ms` on `interface`: [`new_id`], or
    /// with `-2`, `-3`, ... when that one is taken by an incident of another start.
    pub fn unique_id(&self, started_ms: u64, interface: &str) -> String {
        let base = new_id(started_ms, interface);
        for n in 1.. {
            let id = if n == 1 { base.clone() } else { format!("{base}-{n}") };
            if !self.dir(&id).exists() {
                return id;
            }
            // The same incident saved before (a resumed one) keeps its ID.
            if self.load(&id).is_ok_and(|r| r.started_ms == started_ms && r.interface == interface) {
                return id;
            }
        }
        unreachable!("an unbounded range ends only by returning")
    }

    /// Removes closed incidents, oldest first, until the limits hold: those ended
    /// longer than `max_age` ago, then as many as needed to get under `max_incidents`
    /// and `max_bytes`. Returns the IDs removed.
    pub fn prune(&self) -> Result<Vec<String>, StoreError> {
        self.prune_at(now_ms())
    }

    fn prune_at(&self, now_ms: u64) -> Result<Vec<String>, StoreError> {
        let mut records = self.list()?;
        records.reverse(); // oldest first
        let mut count = records.len();
        let mut sizes: Vec<u64> = records.iter().map(|r| dir_size(&self.dir(&r.id))).collect();
        let mut bytes: u64 = sizes.iter().sum();
        let max_age_ms = self.limits.max_age.as_millis() as u64;
        let mut removed = Vec::new();
        for (rec, size) in records.iter().zip(sizes.iter_mut()) {
            if rec.state == State::Open {
                continue;
            }
            let ended = rec.ended_ms.unwrap_or(rec.started_ms);
            let too_old = now_ms.saturating_sub(ended) > max_age_ms;
            if !too_old && count <= self.limits.max_incidents && bytes <= self.limits.max_bytes {
                continue;
            }
            let dir = self.dir(&rec.id);
            fs::remove_dir_all(&dir).map_err(|source| StoreError::Remove { path: dir, source })?;
            count -= 1;
            bytes -= *size;
            *size = 0;
            removed.push(rec.id.clone());
        }
        Ok(removed)
    }
}

/// Bytes of the files under `dir` (each inode once), 0 for what cannot be read.
fn dir_size(dir: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let Ok(entries) = fs::read_dir(dir) else { return 0 };
        let mut total = 0;
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                total += walk(&entry.path(), seen);
            } else if seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
        total
    }
    walk(dir, &mut HashSet::new())
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, os::unix::fs::PermissionsExt as _};

    use super::*;
    use crate::incident::record::{Profile, Timeline, Totals};

    const T0: u64 = 1_772_600_767_000; // 2026-03-04T05:06:07Z

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("floodgate-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn record(id: &str, iface: &str, started_ms: u64, ended_ms: Option<u64>) -> IncidentRecord {
        IncidentRecord {
            version: RECORD_VERSION,
            id: id.to_string(),
            interface: iface.to_string(),
            hostname: "web-1".to_string(),
            state: if ended_ms.is_some() { State::Closed } else { State::Open },
            started_ms,
            ended_ms,
            thresholds: vec!["pps > 100000".to_string()],
            crossed: vec!["pps".to_string()],
            peak_pps: 1_000_000,
            peak_bps: 8_000_000_000,
            totals: BTreeMap::from([("blocklist".to_string(), Totals { packets: 10, bytes: 600 })]),
            timeline: Timeline::default(),
            profile: Profile::default(),
            actions: Vec::new(),
            pcap: None,
            pcap_frames: 0,
            pcap_skipped: 0,
            counted_to: None,
        }
    }

    #[test]
    fn ids() {
        assert_eq!(new_id(T0 + 999, "eth0"), "20260304-050607-eth0");
        assert_eq!(new_id(0, "eth0.100"), "19700101-000000-eth0.100");
        for bad in ["", "a/b", "..", "x..y", ".hidden"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn save_load_list_and_open_of() {
        let state = tmpdir("basic");
        let store = Store::open(&state, Limits::default()).unwrap();
        let mode = fs::metadata(store.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let old = record(&new_id(T0, "eth0"), "eth0", T0, Some(T0 + 60_000));
        let open = record(&new_id(T0 + 3_600_000, "eth0"), "eth0", T0 + 3_600_000, None);
        let other = record(&new_id(T0 + 7_200_000, "eth1"), "eth1", T0 + 7_200_000, None);
        for r in [&old, &open, &other] {
            store.save(r).unwrap();
        }
        assert_eq!(store.load(&old.id).unwrap(), old);
        let ids: Vec<String> = store.list().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, [other.id.clone(), open.id.clone(), old.id.clone()]);
        assert_eq!(store.open_of("eth0").unwrap().id, open.id);
        assert!(store.open_of("eth2").is_none());
        assert!(store.pcap_path(&open.id).ends_with(format!("incidents/{}/samples.pcap", open.id)));

        // Saving again replaces the record; nothing else is left beside it.
        let mut closed = open.clone();
        closed.state = State::Closed;
        closed.ended_ms = Some(T0 + 3_700_000);
        store.save(&closed).unwrap();
        assert!(store.open_of("eth0").is_none());
        let files: Vec<_> =
            fs::read_dir(store.dir(&open.id)).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(files, [RECORD_FILE]);
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn bad_records_and_ids() {
        let state = tmpdir("bad");
        let store = Store::open(&state, Limits::default()).unwrap();
        let good = record(&new_id(T0, "eth0"), "eth0", T0, None);
        store.save(&good).unwrap();
        // A corrupt record and a stray directory are skipped, not fatal.
        fs::create_dir_all(store.dir("20260101-000000-eth9")).unwrap();
        fs::write(store.dir("20260101-000000-eth9").join(RECORD_FILE), "{not json").unwrap();
        fs::create_dir_all(store.dir("empty")).unwrap();
        assert_eq!(store.list().unwrap(), std::slice::from_ref(&good));

        let err = store.load("20260101-000000-eth9").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("20260101-000000-eth9/incident.json"), "{err}");
        let err = store.load("nope").unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains(&store.root().display().to_string()), "{err}");

        for id in ["../escape", "a/b", ".."] {
            let bad = record(id, "eth0", T0, None);
            let err = store.save(&bad).unwrap_err();
            assert!(matches!(err, StoreError::BadId { .. }), "{err}");
            assert!(matches!(store.load(id), Err(StoreError::BadId { .. })));
        }
        assert!(!state.join("escape").exists());

        let mut newer = good.clone();
        newer.version = RECORD_VERSION + 1;
        store.save(&newer).unwrap();
        assert!(
            matches!(store.load(&good.id), Err(StoreError::Version { found, .. }) if found == RECORD_VERSION + 1)
        );
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn missing_store_lists_nothing() {
        let store = Store::existing(&tmpdir("missing"));
        assert!(store.list().unwrap().is_empty());
        assert!(!store.root().exists());
    }

    #[test]
    fn unique_ids() {
        let state = tmpdir("unique");
        let store = Store::open(&state, Limits::default()).unwrap();
        let first = store.unique_id(T0, "eth0");
        assert_eq!(first, "20260304-050607-eth0");
        store.save(&record(&first, "eth0", T0, Some(T0 + 500))).unwrap();
        // The same start keeps its ID (a resumed incident); another start in the same
        // second gets the next free one.
        assert_eq!(store.unique_id(T0, "eth0"), first);
        let second = store.unique_id(T0 + 700, "eth0");
        assert_eq!(second, "20260304-050607-eth0-2");
        store.save(&record(&second, "eth0", T0 + 700, None)).unwrap();
        assert_eq!(store.unique_id(T0 + 900, "eth0"), "20260304-050607-eth0-3");
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn prune_removes_closed_incidents_oldest_first() {
        let state = tmpdir("prune");
        let day = 86_400_000;
        let limits =
            Limits { max_incidents: 3, max_age: Duration::from_secs(10 * 86_400), max_bytes: u64::MAX };
        let store = Store::open(&state, limits).unwrap();
        let now = T0 + 100 * day;
        // Oldest first: an open one older than everything, then closed ones.
        let open = record(&new_id(T0, "eth0"), "eth0", T0, None);
        let stale = record(&new_id(T0 + day, "eth0"), "eth0", T0 + day, Some(T0 + day + 1));
        let recent: Vec<IncidentRecord> = (0..4)
            .map(|i| {
                let start = now - (5 - i) * day;
                record(&new_id(start, "eth0"), "eth0", start, Some(start + 1000))
            })
            .collect();
        for r in [&open, &stale].into_iter().chain(&recent) {
            store.save(r).unwrap();
        }
        // The stale one goes for its age; then two of the recent ones for the count
        // (the open one counts but is never removed).
        let removed = store.prune_at(now).unwrap();
        assert_eq!(removed, [stale.id.clone(), recent[0].id.clone(), recent[1].id.clone()]);
        let left: Vec<String> = store.list().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(left, [recent[3].id.clone(), recent[2].id.clone(), open.id.clone()]);
        assert!(store.prune_at(now).unwrap().is_empty());

        // The byte budget: a large pcap beside the older of the two closed ones.
        fs::write(store.pcap_path(&recent[2].id), vec![0u8; 100_000]).unwrap();
        let tight = Store::open(&state, Limits { max_bytes: 50_000, ..limits }).unwrap();
        assert_eq!(tight.prune_at(now).unwrap(), [recent[2].id.clone()]);
        // Only open ones and the budget met: nothing more goes.
        assert!(tight.prune_at(now).unwrap().is_empty());
        assert!(store.dir(&open.id).exists());
        fs::remove_dir_all(&state).unwrap();
    }
}
