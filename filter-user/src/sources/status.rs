//! What a URL source reports for metrics and logs.

use serde::Serialize;

/// The state of one URL source. Times are seconds since the Unix epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SourceStatus {
    pub url: String,
    /// Entries of the good copy in force (what the list holds from this source).
    pub entries: usize,
    /// The copy in force was loaded from the disk cache and no fetch has confirmed or
    /// replaced it since the start.
    pub from_cache: bool,
    /// When the copy in force was downloaded (kept across restarts by the cache).
    pub list_fetched_unix_secs: Option<u64>,
    pub last_attempt_unix_secs: Option<u64>,
    /// Last fetch that reached the server and got a usable answer (new list, same list,
    /// 304, or a shrink held back).
    pub last_success_unix_secs: Option<u64>,
    /// HTTP status of the last attempt; None when it got no response.
    pub last_http_status: Option<u16>,
    /// Why the last attempt failed; None after a success.
    pub last_error: Option<String>,
    pub consecutive_failures: u64,
    /// Entries of a fetched copy held back for shrinking too much; None when nothing is held.
    pub pending_entries: Option<usize>,
    /// Entries of the copy in force that the held copy would remove.
    pub pending_removed: Option<usize>,
    /// Why the disk cache could not be read or written (the list in force is unaffected).
    pub cache_error: Option<String>,
    pub fetches: FetchCounts,
}

/// Fetches since the start, by outcome (each attempt counts once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FetchCounts {
    /// A new body parsed and applied (also when its entries were the same).
    pub ok: u64,
    /// 304 Not Modified: the copy in force is current.
    pub not_modified: u64,
    /// An HTTP status other than 2xx and 304.
    pub http_error: u64,
    /// A body refused: unparseable line, empty, HTML page, too large.
    pub parse_error: u64,
    /// No complete response: DNS, connect, TLS, timeout, truncated body, redirects.
    pub network_error: u64,
    /// A body that parsed but would shrink the list past `max_shrink`: held back.
    pub shrink_held: u64,
}
