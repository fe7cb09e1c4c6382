//! List sources beyond the config file's own entries: lists fetched from URLs
//! (refreshed, cached on disk, guarded against shrinking) and local files and globs.
//!
//! The service runs one task per URL source: [`UrlList::new`] at start (the cached copy
//! is in force at once), then [`UrlList::refresh`] every `refresh`, re-applying the
//! list when [`Outcome::changed`]. Whatever goes wrong with a fetch, the last good copy
//! stays in force; see README, "Lists from URLs".

mod cache;
mod local;
mod parse;
mod status;
mod url;

#[cfg(test)]
mod tests;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use filter_common::cidr::echo;
use thiserror::Error;

pub use cache::{CacheError, Validators};
pub use local::{LocalError, read_local};
pub use parse::{BodyError, BodyFormat, parse_body};
pub use status::{FetchCounts, SourceStatus};
pub use url::{FetchError, Outcome, UrlList};

/// A body larger than this is refused unread: a list is a few MiB at most, and a
/// broken or hostile mirror must not exhaust memory.
pub const MAX_BODY_BYTES: u64 = 64 << 20;

/// Redirects followed at most; one from https to http is refused.
pub const MAX_REDIRECTS: usize = 5;

/// The User-Agent of every fetch.
pub const USER_AGENT: &str = concat!("floodgate/", env!("CARGO_PKG_VERSION"));

/// The directory of the URL lists' cache under the service's state directory.
pub fn cache_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("lists")
}

/// How long a fetch may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// To set up the connection (TCP and TLS).
    pub connect: Duration,
    /// For the whole fetch, body included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(10), total: Duration::from_secs(120) }
    }
}

/// Why a URL (a list source, a webhook) is refused before anything is fetched.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BadUrl {
    #[error("'{}' is not a URL: {}", echo(.0), .1)]
    Syntax(String, String),
    #[error("'{}' is not http:// or https://", echo(.0))]
    Scheme(String),
    #[error("'{}' has no host", echo(.0))]
    NoHost(String),
}

/// An http:// or https:// URL with a host: what the service can fetch or POST to.
pub fn parse_http_url(text: &str) -> Result<reqwest::Url, BadUrl> {
    let u = reqwest::Url::parse(text).map_err(|e| BadUrl::Syntax(text.into(), e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(BadUrl::Scheme(text.into()));
    }
    if u.host().is_none() {
        return Err(BadUrl::NoHost(text.into()));
    }
    Ok(u)
}

#[derive(Debug, Error)]
#[error("setting up the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

/// A reqwest error with its causes: reqwest's own text is terse ("error sending
/// request"), the causes say why.
pub fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The HTTP client for every URL source, with the default [`Timeouts`].
pub fn client() -> Result<reqwest::Client, ClientError> {
    client_with(Timeouts::default())
}

/// The HTTP client: rustls with the webpki roots, `floodgate/VERSION` as User-Agent,
/// at most [`MAX_REDIRECTS`] redirects and none from https down to http.
pub fn client_with(timeouts: Timeouts) -> Result<reqwest::Client, ClientError> {
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.previous().last().is_some_and(|u| u.scheme() == "https")
            && attempt.url().scheme() != "https";
        if downgrade {
            attempt.error("redirect from https to http refused")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    });
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(USER_AGENT)
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.total)
        .redirect(redirects)
        .build()?)
}
