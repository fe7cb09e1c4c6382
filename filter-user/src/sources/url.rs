//! One list source fetched over HTTP(S): the good copy in force, a copy held back for
//! shrinking too much, the disk cache and the fetch status.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use ipnet::IpNet;
use reqwest::{
    StatusCode,
    header::{self, HeaderMap},
};
use thiserror::Error;

use super::{
    MAX_BODY_BYTES,
    cache::{self, Cached, Validators, unix_secs},
    parse::{BodyError, parse_body},
    status::{FetchCounts, SourceStatus},
};
use crate::config::UrlSource;

/// Why a fetch left the list in force as it was.
#[derive(Debug, Error)]
pub enum FetchError {
    /// No complete response (the text carries reqwest's error and its causes).
    #[error("{0}")]
    Network(String),
    #[error("HTTP status {0}")]
    Http(StatusCode),
    #[error("304 Not Modified, but there is no copy to keep")]
    NotModifiedWithoutCopy,
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Body(#[from] BodyError),
}

impl FetchError {
    fn network(e: &reqwest::Error) -> Self {
        FetchError::Network(super::error_text(e))
    }
}

/// What one [`UrlList::refresh`] did.
#[derive(Debug)]
pub enum Outcome {
    /// A new copy is in force: re-apply the list.
    Updated { entries: usize, added: usize, removed: usize },
    /// A new body with the same entries (validators and cache refreshed).
    Unchanged,
    /// 304: the copy in force is current.
    NotModified,
    /// The fetched copy would remove `removed` of the entries in force, more than
    /// `max_shrink` allows: held back until [`UrlList::accept_pending`].
    Held { entries: usize, removed: usize },
    /// The copy in force stays.
    Failed(FetchError),
}

impl Outcome {
    /// Whether the entries in force changed (the list must be re-applied).
    pub fn changed(&self) -> bool {
        matches!(self, Outcome::Updated { .. })
    }
}

struct Good {
    entries: Arc<[IpNet]>,
    validators: Validators,
    fetched: SystemTime,
}

struct Pending {
    entries: Arc<[IpNet]>,
    removed: usize,
    copy: Cached,
}

enum Fetched {
    NotModified,
    Body { body: Vec<u8>, content_type: Option<String>, validators: Validators },
}

/// A list source fetched from a URL. Create it with [`UrlList::new`] (which loads the
/// cached copy), then call [`UrlList::refresh`] every `src.refresh`.
pub struct UrlList {
    src: UrlSource,
    cache_path: PathBuf,
    max_body: u64,
    good: Option<Good>,
    pending: Option<Pending>,
    from_cache: bool,
    last_attempt: Option<SystemTime>,
    last_success: Option<SystemTime>,
    last_http_status: Option<u16>,
    last_error: Option<String>,
    consecutive_failures: u64,
    cache_error: Option<String>,
    fetches: FetchCounts,
}

impl UrlList {
    /// The source `src`, with the good copy cached in `cache_dir` (see
    /// [`super::cache_dir`]) in force if there is one. A cache that cannot be read or
    /// parsed is reported in [`SourceStatus::cache_error`] and logged; the list then
    /// starts empty until the first fetch.
    pub fn new(src: &UrlSource, cache_dir: &Path) -> Self {
        let cache_path = cache::path_for(cache_dir, &src.url);
        let mut list = UrlList {
            src: src.clone(),
            cache_path,
            max_body: MAX_BODY_BYTES,
            good: None,
            pending: None,
            from_cache: false,
            last_attempt: None,
            last_success: None,
            last_http_status: None,
            last_error: None,
            consecutive_failures: 0,
            cache_error: None,
            fetches: FetchCounts::default(),
        };
        let loaded =
            cache::load(&list.cache_path, &src.url).map_err(|e| e.to_string()).and_then(|c| match c {
                None => Ok(None),
                Some(c) => match parse_body(&list.cache_path.to_string_lossy(), &c.body, None) {
                    Ok((nets, _)) => Ok(Some((c, nets))),
                    Err(e) => Err(e.to_string()),
                },
            });
        match loaded {
            Ok(None) => {}
            Ok(Some((c, nets))) => {
                tracing::info!(url = %src.url, entries = nets.len(), cache = %list.cache_path.display(),
                    "list source: cached copy loaded");
                list.good = Some(Good { entries: nets.into(), validators: c.validators, fetched: c.fetched });
                list.from_cache = true;
            }
            Err(e) => {
                tracing::warn!(url = %src.url, error = %e, "list source: cached copy not usable");
                list.cache_error = Some(e);
            }
        }
        list
    }

    /// Sets the body size limit (default [`MAX_BODY_BYTES`]).
    pub fn set_max_body(&mut self, bytes: u64) {
        self.max_body = bytes;
    }

    pub fn source(&self) -> &UrlSource {
        &self.src
    }

    /// The good copy in force, sorted (IPv4 first), each prefix once.
    pub fn entries(&self) -> &[IpNet] {
        self.good.as_ref().map_or(&[], |g| &g.entries)
    }

    /// The same entries, shared without copying (for a task that applies them).
    pub fn snapshot(&self) -> Arc<[IpNet]> {
        self.good.as_ref().map_or_else(|| Arc::from(Vec::new()), |g| g.entries.clone())
    }

    /// Puts the copy held back for shrinking in force (and in the cache). False when
    /// nothing was held. Writes the cache file: call it where blocking I/O is fine.
    pub fn accept_pending(&mut self) -> bool {
        let Some(p) = self.pending.take() else {
            return false;
        };
        tracing::info!(url = %self.src.url, entries = p.entries.len(), removed = p.removed,
            "list source: shrunk copy accepted");
        self.store_cache(&p.copy);
        self.good = Some(Good { entries: p.entries, validators: p.copy.validators, fetched: p.copy.fetched });
        self.from_cache = false;
        true
    }

    pub fn status(&self) -> SourceStatus {
        SourceStatus {
            url: self.src.url.clone(),
            entries: self.entries().len(),
            from_cache: self.from_cache,
            list_fetched_unix_secs: self.good.as_ref().map(|g| unix_secs(g.fetched)),
            last_attempt_unix_secs: self.last_attempt.map(unix_secs),
            last_success_unix_secs: self.last_success.map(unix_secs),
            last_http_status: self.last_http_status,
            last_error: self.last_error.clone(),
            consecutive_failures: self.consecutive_failures,
            pending_entries: self.pending.as_ref().map(|p| p.entries.len()),
            pending_removed: self.pending.as_ref().map(|p| p.removed),
            cache_error: self.cache_error.clone(),
            fetches: self.fetches,
        }
    }

    /// Fetches the source once (conditionally, with the validators of the copy in
    /// force) and puts a good new copy in force. Whatever fails, the copy in force stays.
    pub async fn refresh(&mut self, client: &reqwest::Client) -> Outcome {
        let now = SystemTime::now();
        self.last_attempt = Some(now);
        self.last_http_status = None;
        let result = self.fetch(client).await;
        let outcome = match result {
            Err(e) => Outcome::Failed(e),
            Ok(Fetched::NotModified) if self.good.is_none() => {
                Outcome::Failed(FetchError::NotModifiedWithoutCopy)
            }
            Ok(Fetched::NotModified) => {
                // The server vouches for the copy in force: a held copy is stale.
                self.pending = None;
                Outcome::NotModified
            }
            Ok(Fetched::Body { body, content_type, validators }) => {
                match parse_body(&self.src.url, &body, content_type.as_deref()) {
                    Err(e) => Outcome::Failed(e.into()),
                    Ok((nets, _)) => self.take(nets, Cached { validators, fetched: now, body }).await,
                }
            }
        };
        self.record(&outcome, now);
        outcome
    }

    async fn fetch(&mut self, client: &reqwest::Client) -> Result<Fetched, FetchError> {
        let mut req = client.get(&self.src.url);
        if let Some(g) = &self.good {
            if let Some(etag) = &g.validators.etag {
                req = req.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &g.validators.last_modified {
                req = req.header(header::IF_MODIFIED_SINCE, lm);
            }
        }
        let mut resp = req.send().await.map_err(|e| FetchError::network(&e))?;
        let status = resp.status();
        self.last_http_status = Some(status.as_u16());
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Http(status));
        }
        let limit = self.max_body;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(FetchError::TooLarge { limit });
        }
        let headers = resp.headers();
        let content_type = text_header(headers, header::CONTENT_TYPE);
        let validators = Validators {
            etag: text_header(headers, header::ETAG),
            last_modified: text_header(headers, header::LAST_MODIFIED),
        };
        let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
        // Chunk by chunk, so a body past the limit is dropped before it is held whole.
        while let Some(chunk) = resp.chunk().await.map_err(|e| FetchError::network(&e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body { body, content_type, validators })
    }

    /// A parsed new copy: in force, or held back when it removes too much.
    async fn take(&mut self, nets: Vec<IpNet>, copy: Cached) -> Outcome {
        let (added, removed) = match &self.good {
            None => (nets.len(), 0),
            Some(g) => diff(&g.entries, &nets),
        };
        let old = self.good.as_ref().map_or(0, |g| g.entries.len());
        if old > 0 && removed as f64 > self.src.max_shrink * old as f64 {
            let entries = nets.len();
            self.pending = Some(Pending { entries: nets.into(), removed, copy });
            return Outcome::Held { entries, removed };
        }
        self.pending = None;
        let path = self.cache_path.clone();
        let url = self.src.url.clone();
        let validators = copy.validators.clone();
        let fetched = copy.fetched;
        // The cache write (up to the body limit, with fsync) stays off the runtime's threads.
        let written =
            tokio::task::spawn_blocking(move || cache::store(&path, &url, &copy)).await.unwrap_or_else(|e| {
                Err(cache::CacheError::Write {
                    path: self.cache_path.clone(),
                    source: std::io::Error::other(e),
                })
            });
        self.note_cache(written);
        let unchanged = added == 0 && removed == 0;
        let entries = nets.len();
        self.good = Some(Good { entries: nets.into(), validators, fetched });
        if unchanged { Outcome::Unchanged } else { Outcome::Updated { entries, added, removed } }
    }

    fn store_cache(&mut self, copy: &Cached) {
        let written = cache::store(&self.cache_path, &self.src.url, copy);
        self.note_cache(written);
    }

    fn note_cache(&mut self, written: Result<(), cache::CacheError>) {
        match written {
            Ok(()) => self.cache_error = None,
            Err(e) => {
                tracing::warn!(url = %self.src.url, error = %e, "list source: cache not written");
                self.cache_error = Some(e.to_string());
            }
        }
    }

    fn record(&mut self, outcome: &Outcome, now: SystemTime) {
        let url = &self.src.url;
        let c = &mut self.fetches;
        match outcome {
            Outcome::Failed(e) => {
                match e {
                    FetchError::Network(_) => c.network_error += 1,
                    FetchError::Http(_) | FetchError::NotModifiedWithoutCopy => c.http_error += 1,
                    FetchError::TooLarge { .. } | FetchError::Body(_) => c.parse_error += 1,
                }
                self.consecutive_failures += 1;
                self.last_error = Some(e.to_string());
                let entries = self.good.as_ref().map_or(0, |g| g.entries.len());
                tracing::warn!(url, error = %e, failures = self.consecutive_failures, entries,
                    "list source: fetch failed, the list in force stays");
                return;
            }
            Outcome::Updated { entries, added, removed } => {
                c.ok += 1;
                tracing::info!(url, entries, added, removed, "list source: updated");
            }
            Outcome::Unchanged => {
                c.ok += 1;
                tracing::debug!(url, "list source: same entries");
            }
            Outcome::NotModified => {
                c.not_modified += 1;
                tracing::debug!(url, "list source: not modified");
            }
            Outcome::Held { entries, removed } => {
                c.shrink_held += 1;
                tracing::warn!(
                    url,
                    entries,
                    removed,
                    max_shrink = self.src.max_shrink,
                    "list source: shrunk copy held back until `floodgate reload --accept-shrink`"
                );
            }
        }
        // A held copy leaves the cached copy in force unconfirmed.
        if !matches!(outcome, Outcome::Held { .. }) {
            self.from_cache = false;
        }
        self.consecutive_failures = 0;
        self.last_error = None;
        self.last_success = Some(now);
    }
}

fn text_header(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// (added, removed) going from `old` to `new` (each without duplicates).
fn diff(old: &[IpNet], new: &[IpNet]) -> (usize, usize) {
    let old_set: HashSet<&IpNet> = old.iter().collect();
    let kept = new.iter().filter(|n| old_set.contains(n)).count();
    (new.len() - kept, old.len() - kept)
}
