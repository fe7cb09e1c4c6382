//! URL sources against a scripted HTTP server on 127.0.0.1. The server writes raw bytes
//! (not through hyper) so that it can also send what a broken mirror sends: a body cut
//! short of its Content-Length, or a header promising a huge body.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use ipnet::IpNet;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};

use super::*;
use crate::config::{ListFormat, UrlSource};

/// One scripted answer, written as is; the connection is closed after it. An empty one
/// is a server that accepts and never answers (the connection is held a while).
struct Reply(Vec<u8>);

impl Reply {
    fn ok(body: &str, headers: &[(&str, &str)]) -> Reply {
        Reply::status(200, body, headers)
    }

    fn status(code: u16, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut head =
            format!("HTTP/1.1 {code} X\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        Reply(bytes)
    }

    fn not_modified() -> Reply {
        Reply(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\nETag: \"v1\"\r\n\r\n".to_vec())
    }

    /// Promises `declared` bytes, sends `body`, closes.
    fn short(declared: usize, body: &str) -> Reply {
        let mut bytes = format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {declared}\r\n\r\n")
            .into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        Reply(bytes)
    }

    /// No Content-Length: the body ends when the connection closes.
    fn until_close(body: &[u8]) -> Reply {
        let mut bytes = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        bytes.extend_from_slice(body);
        Reply(bytes)
    }
}

struct Server {
    addr: SocketAddr,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    /// Request heads received, in order, header names lowercased.
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        Server::on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn on(listener: TcpListener) -> Server {
        let addr = listener.local_addr().unwrap();
        let replies: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, q) = (replies.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                q.lock().unwrap().push(String::from_utf8_lossy(&head).to_lowercase());
                let reply = r.lock().unwrap().pop_front().expect("a reply scripted for every request");
                if reply.0.is_empty() {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                let _ = conn.write_all(&reply.0).await;
                let _ = conn.shutdown().await;
            }
        });
        Server { addr, replies, requests, task }
    }

    fn url(&self) -> String {
        format!("http://{}/drop.txt", self.addr)
    }

    fn script(&self, reply: Reply) {
        self.replies.lock().unwrap().push_back(reply);
    }

    fn request(&self, i: usize) -> String {
        self.requests.lock().unwrap()[i].clone()
    }

    fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fg-sources-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn source(url: &str, max_shrink: f64) -> UrlSource {
    UrlSource {
        url: url.to_string(),
        refresh: Duration::from_secs(3600),
        max_shrink,
        format: ListFormat::Auto,
    }
}

fn test_client() -> reqwest::Client {
    client_with(Timeouts { connect: Duration::from_secs(2), total: Duration::from_secs(10) }).unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// A DROP-style body of `n` /24s from 10.0.0.0/24 on (sorted as they come).
fn drop_body(n: usize) -> String {
    let mut s = String::from("; Spamhaus DROP List - test\n; Last-Modified: x\n");
    for i in 0..n {
        s.push_str(&format!("10.{}.{}.0/24 ; SBL{i}\n", i / 256, i % 256));
    }
    s
}

const LIST: &str = "; Spamhaus DROP\n192.0.2.0/24 ; SBL1\n198.51.100.0/24 ; SBL2\n2001:db8::/32 ; SBL3\n";
const LIST_NETS: [&str; 3] = ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"];
const LM: &str = "Tue, 01 Dec 2026 05:17:00 GMT";

/// A list served with validators and taken: the state every failure test starts from.
async fn primed(tag: &str, max_shrink: f64) -> (Server, UrlList, PathBuf, reqwest::Client) {
    let server = Server::start().await;
    let dir = temp_dir(tag);
    let client = test_client();
    let mut list = UrlList::new(&source(&server.url(), max_shrink), &dir);
    server.script(Reply::ok(LIST, &[("ETag", "\"v1\""), ("Last-Modified", LM)]));
    let out = list.refresh(&client).await;
    assert!(matches!(out, Outcome::Updated { entries: 3, added: 3, removed: 0 }), "{out:?}");
    (server, list, dir, client)
}

/// The copy in force is still the first one, and the last attempt failed as `counter`.
fn assert_kept(list: &UrlList, failures: u64, error_has: &str) -> SourceStatus {
    assert_eq!(list.entries(), nets(&LIST_NETS));
    let st = list.status();
    assert_eq!(st.entries, 3);
    assert_eq!(st.consecutive_failures, failures);
    let err = st.last_error.clone().expect("an error recorded");
    assert!(err.contains(error_has), "{err}");
    assert!(st.last_success_unix_secs.is_some());
    assert!(st.last_attempt_unix_secs >= st.last_success_unix_secs);
    assert_eq!(st.pending_entries, None);
    st
}

#[tokio::test]
async fn new_list_then_304_with_validators() {
    let (server, mut list, dir, client) = primed("304", 0.5).await;
    let first = server.request(0);
    assert!(first.starts_with("get /drop.txt http/1.1\r\n"), "{first}");
    assert!(first.contains(&format!("user-agent: floodgate/{}\r\n", env!("CARGO_PKG_VERSION"))), "{first}");
    assert!(!first.contains("if-none-match") && !first.contains("if-modified-since"), "{first}");
    let st = list.status();
    assert_eq!(st.url, server.url());
    assert_eq!((st.entries, st.last_http_status, st.consecutive_failures), (3, Some(200), 0));
    assert_eq!(st.fetches, FetchCounts { ok: 1, ..Default::default() });
    assert!(!st.from_cache && st.last_error.is_none() && st.cache_error.is_none());
    assert_eq!(st.list_fetched_unix_secs, st.last_success_unix_secs);

    server.script(Reply::not_modified());
    let out = list.refresh(&client).await;
    assert!(matches!(out, Outcome::NotModified) && !out.changed(), "{out:?}");
    let second = server.request(1);
    assert!(second.contains("if-none-match: \"v1\"\r\n"), "{second}");
    assert!(second.contains(&format!("if-modified-since: {}\r\n", LM.to_lowercase())), "{second}");
    assert_eq!(list.entries(), nets(&LIST_NETS));
    let st = list.status();
    assert_eq!(st.fetches, FetchCounts { ok: 1, not_modified: 1, ..Default::default() });
    assert_eq!(st.last_http_status, Some(304));

    // A new body with the same entries is taken but changes nothing.
    server.script(Reply::ok(&LIST.replace("SBL1", "SBL9"), &[("ETag", "\"v2\"")]));
    assert!(matches!(list.refresh(&client).await, Outcome::Unchanged));
    // ...and its validators are the ones sent next.
    server.script(Reply::not_modified());
    list.refresh(&client).await;
    let fourth = server.request(3);
    assert!(
        fourth.contains("if-none-match: \"v2\"\r\n") && !fourth.contains("if-modified-since"),
        "{fourth}"
    );
    assert_eq!(list.status().fetches, FetchCounts { ok: 2, not_modified: 2, ..Default::default() });

    // A real change: one added, one removed.
    server.script(Reply::ok(&LIST.replace("198.51.100.0/24", "203.0.113.0/24"), &[]));
    let out = list.refresh(&client).await;
    assert!(matches!(out, Outcome::Updated { entries: 3, added: 1, removed: 1 }) && out.changed(), "{out:?}");
    assert_eq!(list.entries(), nets(&["192.0.2.0/24", "203.0.113.0/24", "2001:db8::/32"]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn http_500_keeps_the_list() {
    let (server, mut list, dir, client) = primed("500", 0.5).await;
    server.script(Reply::status(500, "oops", &[]));
    server.script(Reply::status(503, "<html>busy</html>", &[("Content-Type", "text/html")]));
    assert!(matches!(list.refresh(&client).await, Outcome::Failed(FetchError::Http(s)) if s.as_u16() == 500));
    let st = assert_kept(&list, 1, "HTTP status 500");
    assert_eq!(st.last_http_status, Some(500));
    assert!(!list.refresh(&client).await.changed());
    let st = assert_kept(&list, 2, "HTTP status 503");
    assert_eq!(st.fetches, FetchCounts { ok: 1, http_error: 2, ..Default::default() });
    // The next good answer clears the failure streak.
    server.script(Reply::not_modified());
    list.refresh(&client).await;
    let st = list.status();
    assert_eq!((st.consecutive_failures, st.last_error), (0, None));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn truncated_body_keeps_the_list() {
    let (server, mut list, dir, client) = primed("trunc", 0.5).await;
    // What a reset mid-transfer looks like: a cut line that would even parse.
    server.script(Reply::short(LIST.len() + 500, "192.0.2.0/24 ; SBL1\n198.51.100.0/2"));
    let out = list.refresh(&client).await;
    assert!(matches!(out, Outcome::Failed(FetchError::Network(_))), "{out:?}");
    let st = assert_kept(&list, 1, "end of file before message length reached");
    assert_eq!(st.last_http_status, Some(200));
    assert_eq!(st.fetches, FetchCounts { ok: 1, network_error: 1, ..Default::default() });
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn garbage_and_empty_bodies_keep_the_list() {
    let (server, mut list, dir, client) = primed("garbage", 0.5).await;
    server.script(Reply::ok("192.0.2.0/24\nhello world\n", &[]));
    server.script(Reply::until_close(b"\x00\x01\xff\xfe binary"));
    server.script(Reply::ok("", &[]));
    server.script(Reply::ok("# nothing today\n", &[]));
    list.refresh(&client).await;
    let st = assert_kept(&list, 1, "drop.txt:2:1: 'hello world' is not an IPv4 or IPv6 address");
    assert!(st.last_error.unwrap().starts_with(&server.url()));
    list.refresh(&client).await;
    assert_kept(&list, 2, "not UTF-8 text");
    list.refresh(&client).await;
    assert_kept(&list, 3, "empty body");
    list.refresh(&client).await;
    let st = assert_kept(&list, 4, "no entries");
    assert_eq!(st.fetches, FetchCounts { ok: 1, parse_error: 4, ..Default::default() });
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn html_error_page_with_200_keeps_the_list() {
    let (server, mut list, dir, client) = primed("html", 0.5).await;
    let page = "<!DOCTYPE html>\n<html><head><title>Maintenance</title></head></html>\n";
    server.script(Reply::ok(page, &[("Content-Type", "text/html; charset=utf-8")]));
    server.script(Reply::ok(page, &[("Content-Type", "text/plain")]));
    list.refresh(&client).await;
    assert_kept(&list, 1, "HTML page (Content-Type text/html)");
    list.refresh(&client).await;
    let st = assert_kept(&list, 2, "HTML page (it starts with '<')");
    assert_eq!(st.fetches, FetchCounts { ok: 1, parse_error: 2, ..Default::default() });
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (server, mut list, dir, client) = primed("big", 0.5).await;
    // Refused on the header alone: nothing of it is read.
    server.script(Reply::short(200 << 20, "192.0.2.0/24\n"));
    let out = list.refresh(&client).await;
    assert!(matches!(out, Outcome::Failed(FetchError::TooLarge { limit: MAX_BODY_BYTES })), "{out:?}");
    assert_kept(&list, 1, &format!("body larger than {MAX_BODY_BYTES} bytes"));
    // No length announced: refused as soon as the limit is passed.
    list.set_max_body(4096);
    server.script(Reply::until_close(drop_body(1000).as_bytes()));
    let out = list.refresh(&client).await;
    assert!(matches!(out, Outcome::Failed(FetchError::TooLarge { limit: 4096 })), "{out:?}");
    let st = assert_kept(&list, 2, "body larger than 4096 bytes");
    assert_eq!(st.fetches, FetchCounts { ok: 1, parse_error: 2, ..Default::default() });
    // Under the limit, the same kind of answer is fine.
    server.script(Reply::until_close(format!("{LIST}203.0.113.0/24\n").as_bytes()));
    let out = list.refresh(&client).await;
    assert!(matches!(out, Outcome::Updated { entries: 4, added: 1, removed: 0 }), "{out:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn shrink_beyond_max_is_held_until_accepted() {
    let server = Server::start().await;
    let dir = temp_dir("shrink");
    let client = test_client();
    let src = source(&server.url(), 0.25);
    let mut list = UrlList::new(&src, &dir);
    assert!(!list.accept_pending());
    server.script(Reply::ok(&drop_body(100), &[("ETag", "\"a\"")]));
    assert!(list.refresh(&client).await.changed());
    assert_eq!(list.entries().len(), 100);

    // 25 of 100 removed: at the limit, taken.
    server.script(Reply::ok(&drop_body(75), &[("ETag", "\"b\"")]));
    assert!(matches!(list.refresh(&client).await, Outcome::Updated { entries: 75, added: 0, removed: 25 }));

    // A mirror serving a stub: 2 of 75 left. Held, the 75 stay.
    server.script(Reply::ok(&drop_body(2), &[("ETag", "\"c\"")]));
    let out = list.refresh(&client).await;
    assert!(matches!(out, Outcome::Held { entries: 2, removed: 73 }) && !out.changed(), "{out:?}");
    assert_eq!(list.entries().len(), 75);
    let st = list.status();
    assert_eq!((st.entries, st.pending_entries, st.pending_removed), (75, Some(2), Some(73)));
    assert_eq!(st.fetches, FetchCounts { ok: 2, shrink_held: 1, ..Default::default() });
    assert_eq!((st.consecutive_failures, st.last_error), (0, None));
    // Held copies do not count as good: the validators sent are still the good copy's.
    server.script(Reply::ok(&drop_body(2), &[("ETag", "\"c\"")]));
    assert!(matches!(list.refresh(&client).await, Outcome::Held { entries: 2, removed: 73 }));
    assert!(server.request(3).contains("if-none-match: \"b\"\r\n"), "{}", server.request(3));

    // The operator confirms: the small list is in force, and cached.
    assert!(list.accept_pending());
    assert!(!list.accept_pending());
    assert_eq!(list.entries(), nets(&["10.0.0.0/24", "10.0.1.0/24"]));
    let st = list.status();
    assert_eq!((st.entries, st.pending_entries, st.pending_removed), (2, None, None));
    let restarted = UrlList::new(&src, &dir);
    assert_eq!(restarted.entries().len(), 2);
    // ...and its validators go with it.
    server.script(Reply::not_modified());
    list.refresh(&client).await;
    assert!(server.request(4).contains("if-none-match: \"c\"\r\n"), "{}", server.request(4));

    // A held copy is dropped when the server vouches again for the copy in force.
    server.script(Reply::ok("192.0.2.1\n", &[]));
    assert!(matches!(list.refresh(&client).await, Outcome::Held { entries: 1, removed: 2 }));
    server.script(Reply::not_modified());
    list.refresh(&client).await;
    assert_eq!(list.status().pending_entries, None);
    assert!(!list.accept_pending());
    assert_eq!(list.entries().len(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn cached_copy_survives_a_restart_without_network() {
    let (server, list, dir, client) = primed("cache", 0.5).await;
    let url = server.url();
    let addr = server.addr;
    drop(list);
    drop(server);
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1, "{files:?}");

    // "Restart" with the server gone: the cached copy is in force before any fetch.
    let mut list = UrlList::new(&source(&url, 0.5), &dir);
    assert_eq!(list.entries(), nets(&LIST_NETS));
    let st = list.status();
    assert!(st.from_cache && st.list_fetched_unix_secs.is_some() && st.last_attempt_unix_secs.is_none());
    let out = list.refresh(&client).await;
    assert!(matches!(out, Outcome::Failed(FetchError::Network(_))), "{out:?}");
    let st = list.status();
    assert_eq!((st.entries, st.from_cache, st.last_http_status, st.consecutive_failures), (3, true, None, 1));
    assert_eq!(st.fetches, FetchCounts { network_error: 1, ..Default::default() });
    assert!(st.last_error.unwrap().contains("onnect"));

    // The server is back: the first fetch is conditional on the cached validators.
    let server = Server::on(TcpListener::bind(addr).await.unwrap());
    server.script(Reply::not_modified());
    assert!(matches!(list.refresh(&client).await, Outcome::NotModified));
    let req = server.request(0);
    assert!(
        req.contains("if-none-match: \"v1\"\r\n") && req.contains("if-modified-since: tue, 01 dec"),
        "{req}"
    );
    assert!(!list.status().from_cache);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_corrupt_cache_is_reported_and_replaced() {
    let server = Server::start().await;
    let dir = temp_dir("corrupt");
    let src = source(&server.url(), 0.5);
    std::fs::create_dir_all(&dir).unwrap();
    let path = cache::path_for(&dir, &src.url);
    let header = r#"{"url":"x","etag":"\"e\"","last_modified":null,"fetched_unix_secs":1}"#;
    std::fs::write(&path, format!("{header}\n192.0.2.0/24\n")).unwrap();
    let mut list = UrlList::new(&src, &dir);
    assert!(list.entries().is_empty());
    let err = list.status().cache_error.unwrap();
    assert!(err.ends_with(".list: caches x, not this source"), "{err}");
    // The first fetch has no validators, and its copy replaces the bad file.
    server.script(Reply::ok(LIST, &[]));
    assert!(list.refresh(&test_client()).await.changed());
    assert!(!server.request(0).contains("if-"));
    assert_eq!(list.status().cache_error, None);
    assert_eq!(UrlList::new(&src, &dir).entries().len(), 3);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn first_fetch_failing_leaves_an_empty_source() {
    let server = Server::start().await;
    let dir = temp_dir("first");
    let mut list = UrlList::new(&source(&server.url(), 0.5), &dir);
    server.script(Reply::ok("not a list\n", &[]));
    server.script(Reply::not_modified());
    assert!(!list.refresh(&test_client()).await.changed());
    assert!(matches!(
        list.refresh(&test_client()).await,
        Outcome::Failed(FetchError::NotModifiedWithoutCopy)
    ));
    let st = list.status();
    assert_eq!((st.entries, st.consecutive_failures, st.last_success_unix_secs), (0, 2, None));
    assert_eq!(st.fetches, FetchCounts { parse_error: 1, http_error: 1, ..Default::default() });
    assert!(!dir.exists(), "nothing cached");
}

#[tokio::test]
async fn json_lines_and_redirects() {
    let server = Server::start().await;
    let dir = temp_dir("json");
    let client = test_client();
    let mut list = UrlList::new(&source(&server.url(), 0.5), &dir);
    let json = concat!(
        r#"{"cidr":"192.0.2.0/24","sblid":"SBL1","rir":"arin"}"#,
        "\n",
        r#"{"cidr":"2001:db8::/32","sblid":"SBL2","rir":"ripencc"}"#,
        "\n",
        r#"{"type":"metadata","timestamp":1764550000,"size":2,"records":2,"copyright":"c","terms":"t"}"#,
        "\n",
    );
    let moved = format!("http://{}/drop_v4.json", server.addr);
    server.script(Reply::status(301, "", &[("Location", &moved)]));
    server.script(Reply::ok(json, &[("Content-Type", "application/json")]));
    assert!(matches!(list.refresh(&client).await, Outcome::Updated { entries: 2, .. }));
    assert!(server.request(1).starts_with("get /drop_v4.json "));
    assert_eq!(list.entries(), nets(&["192.0.2.0/24", "2001:db8::/32"]));
    // A redirect loop ends after MAX_REDIRECTS, as a network error.
    for _ in 0..=MAX_REDIRECTS {
        server.script(Reply::status(302, "", &[("Location", &moved)]));
    }
    let out = list.refresh(&client).await;
    assert!(matches!(out, Outcome::Failed(FetchError::Network(ref e)) if e.contains("redirects")), "{out:?}");
    assert_eq!(server.request_count(), 2 + MAX_REDIRECTS + 1);
    assert_eq!(list.entries().len(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let (server, mut list, dir, _) = primed("silent", 0.5).await;
    let impatient =
        client_with(Timeouts { connect: Duration::from_secs(1), total: Duration::from_millis(300) }).unwrap();
    server.script(Reply(Vec::new()));
    let started = std::time::Instant::now();
    let out = list.refresh(&impatient).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(matches!(out, Outcome::Failed(FetchError::Network(_))), "{out:?}");
    let st = assert_kept(&list, 1, "timed out");
    assert_eq!((st.last_http_status, st.fetches.network_error), (None, 1));
    std::fs::remove_dir_all(dir).unwrap();
}
