//! The CrowdSec Local API over HTTP(S): the bouncer's decision stream (API key or TLS
//! client certificate) and the machine's side (login, alerts) for the reporter.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Stream;
use crate::config::CrowdSec;

#[derive(Debug, Error)]
pub enum LapiError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("setting up the HTTP client: {0}")]
    Client(String),
    /// No complete answer (the text carries reqwest's error and its causes).
    #[error("{url}: {why}")]
    Network { url: String, why: String },
    #[error("{url}: HTTP status {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Http { url: String, status: StatusCode, body: String },
    #[error("{url}: an answer that is not the LAPI's JSON: {why}")]
    Json { url: String, why: String },
}

/// Everything but the stream's body: a startup pull of many decisions takes longer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A file's content, trimmed; an error names the file.
fn read_secret(path: &Path) -> Result<String, LapiError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LapiError::File { path: path.to_path_buf(), why: e.to_string() })?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(LapiError::File { path: path.to_path_buf(), why: "empty".into() });
    }
    Ok(text)
}

fn read_file(path: &Path) -> Result<Vec<u8>, LapiError> {
    std::fs::read(path).map_err(|e| LapiError::File { path: path.to_path_buf(), why: e.to_string() })
}

/// The HTTP client for a LAPI: its CA and client certificate when the config names them.
fn http_client(cfg: &CrowdSec) -> Result<reqwest::Client, LapiError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(crate::sources::USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &cfg.ca_file {
        for cert in reqwest::Certificate::from_pem_bundle(&read_file(ca)?)
            .map_err(|e| LapiError::File { path: ca.clone(), why: format!("not PEM certificates: {e}") })?
        {
            b = b.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
        let mut pem = read_file(cert)?;
        pem.push(b'\n');
        pem.extend(read_file(key)?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| LapiError::File {
            path: cert.clone(),
            why: format!("not a PEM certificate and key: {e}"),
        })?;
        b = b.identity(id);
    }
    b.build().map_err(|e| LapiError::Client(crate::sources::error_text(&e)))
}

fn base_url(text: &str) -> Result<Url, LapiError> {
    let mut u = Url::parse(text).map_err(|e| LapiError::Client(format!("{text}: {e}")))?;
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    Ok(u)
}

async fn send(url: &Url, req: reqwest::RequestBuilder) -> Result<Vec<u8>, LapiError> {
    let net =
        |e: reqwest::Error| LapiError::Network { url: url.to_string(), why: crate::sources::error_text(&e) };
    let resp = req.send().await.map_err(net)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(net)?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let body: String = text.trim().chars().take(300).collect();
        return Err(LapiError::Http { url: url.to_string(), status, body });
    }
    Ok(body.to_vec())
}

fn with_json<T: Serialize + ?Sized>(req: reqwest::RequestBuilder, body: &T) -> reqwest::RequestBuilder {
    let bytes = serde_json::to_vec(body).expect("plain structs serialize");
    req.header(reqwest::header::CONTENT_TYPE, "application/json").body(bytes)
}

fn json<T: for<'de> Deserialize<'de>>(url: &Url, body: &[u8]) -> Result<T, LapiError> {
    serde_json::from_slice(body).map_err(|e| LapiError::Json { url: url.to_string(), why: e.to_string() })
}

/// The bouncer's side: pulls of the decision stream.
pub struct Bouncer {
    http: reqwest::Client,
    stream: Url,
    api_key: Option<String>,
}

impl Bouncer {
    /// Reads the key and certificates the config names (the service's start and
    /// reloads: a rotated key is read again).
    pub fn new(cfg: &CrowdSec) -> Result<Self, LapiError> {
        let api_key = cfg.api_key_file.as_deref().map(read_secret).transpose()?;
        let stream = base_url(&cfg.lapi_url)?
            .join("v1/decisions/stream")
            .map_err(|e| LapiError::Client(e.to_string()))?;
        Ok(Bouncer { http: http_client(cfg)?, stream, api_key })
    }

    /// `GET /v1/decisions/stream`: every decision in force (`startup`), or what
    /// changed since this bouncer's last pull. Asks for every scope: the ones not
    /// enforced are counted as skipped.
    pub async fn pull(&self, startup: bool) -> Result<Stream, LapiError> {
        let mut url = self.stream.clone();
        url.query_pairs_mut().append_pair("startup", if startup { "true" } else { "false" });
        let mut req = self.http.get(url.clone());
        if let Some(k) = &self.api_key {
            req = req.header("X-Api-Key", k);
        }
        let body = send(&url, req).await?;
        json(&url, &body)
    }
}

/// Machine credentials as `cscli machines add NAME -f FILE` writes them (YAML with
/// `url`, `login` and `password`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub url: Option<String>,
    pub login: String,
    pub password: String,
}

impl Credentials {
    pub fn read(path: &Path) -> Result<Self, LapiError> {
        let text = read_secret(path)?;
        Self::parse(&text).map_err(|why| LapiError::File { path: path.to_path_buf(), why })
    }

    /// The three flat `key: value` lines of that file (values may be quoted).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (mut url, mut login, mut password) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v)
                .to_string();
            match k.trim() {
                "url" => url = Some(v),
                "login" => login = Some(v),
                "password" => password = Some(v),
                _ => {}
            }
        }
        match (login, password) {
            (Some(login), Some(password)) if !login.is_empty() && !password.is_empty() => {
                Ok(Credentials { url, login, password })
            }
            _ => Err("no `login:` and `password:` lines (expected the file `cscli machines add NAME --auto -f FILE` writes)".into()),
        }
    }
}

#[derive(Serialize)]
struct Login<'a> {
    machine_id: &'a str,
    password: &'a str,
    scenarios: Vec<&'a str>,
}

#[derive(Deserialize)]
struct Token {
    token: String,
}

/// An alert as `POST /v1/alerts` takes it (CrowdSec's `models.Alert`; every field its
/// validation requires is here).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Alert {
    pub scenario: String,
    pub scenario_hash: String,
    pub scenario_version: String,
    pub message: String,
    pub events_count: i32,
    pub start_at: String,
    pub stop_at: String,
    pub capacity: i32,
    pub leakspeed: String,
    pub simulated: bool,
    pub events: Vec<serde_json::Value>,
    pub source: Source,
    pub decisions: Vec<AlertDecision>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Source {
    pub scope: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertDecision {
    pub duration: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub scope: String,
    pub value: String,
    pub origin: String,
    pub scenario: String,
}

/// The machine's side: logs in, then posts alerts with the token.
pub struct Machine {
    http: reqwest::Client,
    login_url: Url,
    alerts_url: Url,
    creds: Credentials,
    token: Option<(String, SystemTime)>,
}

/// Tokens are renewed this long before the LAPI's default lifetime (1 h) ends, and
/// after any 401.
const TOKEN_LIFETIME: Duration = Duration::from_secs(45 * 60);

impl Machine {
    pub fn new(cfg: &CrowdSec, creds: Credentials) -> Result<Self, LapiError> {
        let base = base_url(&cfg.lapi_url)?;
        let join = |p: &str| base.join(p).map_err(|e| LapiError::Client(e.to_string()));
        Ok(Machine {
            http: http_client(cfg)?,
            login_url: join("v1/watchers/login")?,
            alerts_url: join("v1/alerts")?,
            creds,
            token: None,
        })
    }

    async fn token(&mut self) -> Result<String, LapiError> {
        if let Some((t, at)) = &self.token
            && at.elapsed().is_ok_and(|e| e < TOKEN_LIFETIME)
        {
            return Ok(t.clone());
        }
        let body =
            Login { machine_id: &self.creds.login, password: &self.creds.password, scenarios: Vec::new() };
        let req = with_json(self.http.post(self.login_url.clone()), &body);
        let t: Token = json(&self.login_url, &send(&self.login_url, req).await?)?;
        self.token = Some((t.token.clone(), SystemTime::now()));
        Ok(t.token)
    }

    /// `POST /v1/alerts` with these alerts; logs in first (again after a 401).
    pub async fn post(&mut self, alerts: &[Alert]) -> Result<(), LapiError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let req = with_json(self.http.post(self.alerts_url.clone()).bearer_auth(token), alerts);
            match send(&self.alerts_url, req).await {
                Err(LapiError::Http { status: StatusCode::UNAUTHORIZED, .. }) if attempt == 0 => {
                    self.token = None;
                }
                other => return other.map(drop),
            }
        }
        unreachable!("the second attempt returns")
    }
}

/// Go's duration text: whole seconds, or milliseconds ("600s", "1500ms"; Go parses
/// both).
pub fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_as_cscli_writes_them() {
        let c = Credentials::parse("url: http://127.0.0.1:8080\nlogin: web1\npassword: s3cr3t:x\n").unwrap();
        assert_eq!(
            c,
            Credentials {
                url: Some("http://127.0.0.1:8080".into()),
                login: "web1".into(),
                password: "s3cr3t:x".into()
            }
        );
        let c = Credentials::parse("login: \"a b\"\npassword: 'p'\n").unwrap();
        assert_eq!((c.login.as_str(), c.password.as_str()), ("a b", "p"));
        let e = Credentials::parse("url: http://x\n").unwrap_err();
        assert!(e.starts_with("no `login:` and `password:` lines"), "{e}");
    }

    #[test]
    fn base_url_ends_with_a_slash() {
        assert_eq!(base_url("http://127.0.0.1:8080").unwrap().as_str(), "http://127.0.0.1:8080/");
        assert_eq!(
            base_url("https://lapi.example/crowdsec").unwrap().join("v1/alerts").unwrap().as_str(),
            "https://lapi.example/crowdsec/v1/alerts"
        );
    }
}
