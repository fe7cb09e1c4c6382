//! What is done when an incident opens and closes, beyond the filter itself: the
//! operator's hook program and webhook. Each returns the [`Action`] to record, never an
//! error: a failed notification is part of the incident's story, not a reason to stop.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Stdio,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use filter_common::cidr::echo;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use serde::Serialize;
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    process::Command,
    time::Instant,
};

use super::record::{Action, IncidentRecord, Top};
use crate::{duration::format_exact, loader::error_chain};

/// Bytes of a hook's stderr kept (its first line goes into the action's detail).
const MAX_STDERR: usize = 4096;

/// The pause before a webhook's one retry.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Open,
    Close,
}

impl Event {
    /// `open` or `close`: the JSON's `event` and `FLOODGATE_EVENT`.
    pub fn name(self) -> &'static str {
        match self {
            Event::Open => "open",
            Event::Close => "close",
        }
    }
}

/// Why a hook program is refused when the config is checked.
#[derive(Debug, Error)]
pub enum BadProgram {
    #[error("'{}' is not an absolute path (a hook is run without a PATH search)", echo(.0))]
    NotAbsolute(String),
    #[error("{}: {error}", echo(.path))]
    Unreadable { path: String, error: std::io::Error },
    #[error("{} is not a file", echo(.0))]
    NotFile(String),
    #[error("{} is not executable (chmod +x it)", echo(.0))]
    NotExecutable(String),
}

/// Whether `path` can be run as a hook: absolute, an existing file, executable.
pub fn check_program(path: &str) -> Result<(), BadProgram> {
    if !Path::new(path).is_absolute() {
        return Err(BadProgram::NotAbsolute(path.into()));
    }
    let meta =
        std::fs::metadata(path).map_err(|error| BadProgram::Unreadable { path: path.into(), error })?;
    if !meta.is_file() {
        return Err(BadProgram::NotFile(path.into()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(BadProgram::NotExecutable(path.into()));
    }
    Ok(())
}

#[derive(Serialize)]
struct Payload<'a> {
    event: &'static str,
    incident: &'a IncidentRecord,
}

/// `{"event":"open","incident":{...}}`: a hook's stdin and a webhook's body.
pub fn payload(event: Event, rec: &IncidentRecord) -> Vec<u8> {
    serde_json::to_vec(&Payload { event: event.name(), incident: rec })
        .expect("a record serializes: its maps have string or integer keys")
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The heavier of the top IPv4 and IPv6 prefixes.
fn top_prefix(rec: &IncidentRecord) -> Option<&Top> {
    let p = &rec.profile;
    p.prefixes_v4.iter().chain(&p.prefixes_v6).max_by_key(|t| t.packets)
}

/// The `FLOODGATE_*` variables a hook gets, so a one-line script needs no JSON parser.
pub fn hook_env(event: Event, rec: &IncidentRecord) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("FLOODGATE_EVENT", event.name().to_string()),
        ("FLOODGATE_INCIDENT_ID", rec.id.clone()),
        ("FLOODGATE_INTERFACE", rec.interface.clone()),
        ("FLOODGATE_STARTED", rfc3339(rec.started_ms)),
        ("FLOODGATE_PEAK_PPS", rec.peak_pps.to_string()),
        ("FLOODGATE_PEAK_BPS", rec.peak_bps.to_string()),
        ("FLOODGATE_DROPPED", rec.dropped().to_string()),
        ("FLOODGATE_CROSSED", rec.crossed.join(",")),
    ];
    if let (Event::Close, Some(end)) = (event, rec.ended_ms) {
        env.push(("FLOODGATE_ENDED", rfc3339(end)));
    }
    if let Some(top) = rec.profile.sources.first() {
        env.push(("FLOODGATE_TOP_SOURCE", top.key.clone()));
    }
    if let Some(top) = top_prefix(rec) {
        env.push(("FLOODGATE_TOP_PREFIX", top.key.clone()));
    }
    env
}

/// Runs the hook `argv` (program first) for `event`: the payload on stdin, the
/// [`hook_env`] variables. Killed, with anything it started, once `timeout` is up.
pub async fn run_hook(argv: &[String], event: Event, rec: &IncidentRecord, timeout: Duration) -> Action {
    let at_ms = unix_ms(SystemTime::now());
    let (ok, detail) = match hook(argv, event, rec, timeout).await {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    Action { at_ms, what: format!("hook.{}", event.name()), ok, detail }
}

async fn hook(
    argv: &[String],
    event: Event,
    rec: &IncidentRecord,
    timeout: Duration,
) -> Result<String, String> {
    let Some((program, args)) = argv.split_first() else { return Err("no program to run".into()) };
    let mut child = Command::new(program)
        .args(args)
        .envs(hook_env(event, rec))
        // Only the service may talk to systemd (NotifyAccess=main or not).
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what a script started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", echo(program)))?;
    let (stdin, stderr) = (child.stdin.take(), child.stderr.take());
    let body = payload(event, rec);
    let run = async {
        // Fed and drained at once: a large record fills the pipe before the hook exits.
        let feed = async move {
            if let Some(mut s) = stdin {
                // A hook that exits without reading its stdin is fine.
                let _ = s.write_all(&body).await;
            }
        };
        let drain = async move {
            let mut kept = Vec::new();
            if let Some(mut s) = stderr {
                // Read to the end, not just what is kept: a closed pipe would kill a
                // chatty hook with SIGPIPE.
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut chunk).await {
                    let room = MAX_STDERR.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
            kept
        };
        let ((), err, status) = tokio::join!(feed, drain, child.wait());
        (err, status)
    };
    let outcome = tokio::time::timeout(timeout, run).await;
    match outcome {
        Ok((_, Ok(status))) if status.success() => Ok(status.to_string()),
        Ok((err, Ok(status))) => Err(with_first_line(status.to_string(), &err)),
        Ok((_, Err(e))) => Err(format!("waiting for it: {e}")),
        Err(_) => {
            if let Some(pid) = child.id() {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Err(format!("killed after {} (the hook timeout)", format_exact(timeout)))
        }
    }
}

/// `detail` with the first non-blank line of `stderr`, if any.
fn with_first_line(detail: String, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!("{detail}: {}", echo(line)),
        None => detail,
    }
}

/// One POST's outcome.
enum Attempt {
    Done {
        ok: bool,
        detail: String,
    },
    /// A connection error or a 5xx: worth one more try.
    Retry(String),
}

/// POSTs the payload for `event` to `url`; ok on a 2xx. A connection error or a 5xx
/// is retried once after a second. Within `timeout` in all, the retry included.
pub async fn post_webhook(
    client: &reqwest::Client,
    url: &str,
    event: Event,
    rec: &IncidentRecord,
    timeout: Duration,
) -> Action {
    let at_ms = unix_ms(SystemTime::now());
    let deadline = Instant::now() + timeout;
    let body = payload(event, rec);
    let (ok, detail) = match post(client, url, &body, timeout).await {
        Attempt::Done { ok, detail } => (ok, detail),
        Attempt::Retry(first) if deadline.saturating_duration_since(Instant::now()) > RETRY_AFTER => {
            tokio::time::sleep(RETRY_AFTER).await;
            let left = deadline.saturating_duration_since(Instant::now());
            let (ok, second) = match post(client, url, &body, left).await {
                Attempt::Done { ok, detail } => (ok, detail),
                Attempt::Retry(detail) => (false, detail),
            };
            (ok, format!("{second} (retried; first attempt: {first})"))
        }
        Attempt::Retry(first) => (false, first),
    };
    Action { at_ms, what: format!("webhook.{}", event.name()), ok, detail }
}

async fn post(client: &reqwest::Client, url: &str, body: &[u8], timeout: Duration) -> Attempt {
    let sent = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, crate::sources::USER_AGENT)
        .timeout(timeout)
        .body(body.to_vec())
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_server_error() => Attempt::Retry(format!("HTTP status {}", r.status())),
        Ok(r) => Attempt::Done { ok: r.status().is_success(), detail: format!("HTTP status {}", r.status()) },
        Err(e) if e.is_connect() => Attempt::Retry(error_chain(&e)),
        Err(e) => Attempt::Done { ok: false, detail: error_chain(&e) },
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        path::PathBuf,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use tokio::{net::TcpListener, task::JoinHandle};

    use super::*;
    use crate::incident::record::{Profile, RECORD_VERSION, State, Timeline, Totals};

    /// A directory of its own per test, removed afterwards.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "floodgate-actions-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }

        /// A shell script, run as `/bin/sh SCRIPT`: exec'ing a file just written races
        /// with other tests' forks holding it open for writing (ETXTBSY).
        fn script(&self, text: &str) -> Vec<String> {
            let p = self.0.join("hook.sh");
            std::fs::write(&p, text).unwrap();
            vec!["/bin/sh".into(), p.display().to_string(), self.0.display().to_string()]
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn record() -> IncidentRecord {
        let top = |key: &str, packets| Top { key: key.into(), packets, error: 0 };
        IncidentRecord {
            version: RECORD_VERSION,
            id: "20260301-120000-eth0".into(),
            interface: "eth0".into(),
            hostname: "edge1".into(),
            state: State::Closed,
            started_ms: 1_772_366_400_000,
            ended_ms: Some(1_772_366_460_500),
            thresholds: vec!["dropped_pps.any > 1000".into()],
            crossed: vec!["pps".into(), "dropped_pps.any".into()],
            peak_pps: 120_000,
            peak_bps: 57_600_000,
            totals: BTreeMap::from([
                ("blocklist".into(), Totals { packets: 900, bytes: 54_000 }),
                ("passed".into(), Totals { packets: 50, bytes: 3_000 }),
                ("rate_limit".into(), Totals { packets: 100, bytes: 6_000 }),
            ]),
            timeline: Timeline::default(),
            profile: Profile {
                sources: vec![top("203.0.113.7", 500)],
                prefixes_v4: vec![top("203.0.113.0/24", 700)],
                prefixes_v6: vec![top("2001:db8:bad::/48", 800)],
                ..Default::default()
            },
            actions: Vec::new(),
            pcap: None,
            pcap_frames: 0,
            pcap_skipped: 0,
            counted_to: None,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_hook_gets_the_record_on_stdin_and_in_its_environment() {
        let dir = Dir::new();
        let argv = dir.script("cat > \"$1/stdin.json\"\nenv > \"$1/env.txt\"\n");
        let a = run_hook(&argv, Event::Close, &record(), 10 * SECOND).await;
        assert!(a.ok, "{a:?}");
        assert_eq!((a.what.as_str(), a.detail.as_str()), ("hook.close", "exit status: 0"));
        assert!(a.at_ms > 1_700_000_000_000);

        let stdin: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.0.join("stdin.json")).unwrap()).unwrap();
        assert_eq!(stdin["event"], "close");
        assert_eq!(serde_json::from_value::<IncidentRecord>(stdin["incident"].clone()).unwrap(), record());

        let env = std::fs::read_to_string(dir.0.join("env.txt")).unwrap();
        for line in [
            "FLOODGATE_EVENT=close",
            "FLOODGATE_INCIDENT_ID=20260301-120000-eth0",
            "FLOODGATE_INTERFACE=eth0",
            "FLOODGATE_STARTED=2026-03-01T12:00:00Z",
            "FLOODGATE_ENDED=2026-03-01T12:01:00Z",
            "FLOODGATE_PEAK_PPS=120000",
            "FLOODGATE_PEAK_BPS=57600000",
            "FLOODGATE_DROPPED=1000",
            "FLOODGATE_TOP_SOURCE=203.0.113.7",
            "FLOODGATE_TOP_PREFIX=2001:db8:bad::/48",
            "FLOODGATE_CROSSED=pps,dropped_pps.any",
        ] {
            assert!(env.lines().any(|l| l == line), "no {line} in\n{env}");
        }
    }

    #[test]
    fn open_has_no_end_and_an_empty_profile_no_top() {
        let mut rec = record();
        rec.profile = Profile::default();
        let env = hook_env(Event::Open, &rec);
        let names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
        for absent in ["FLOODGATE_ENDED", "FLOODGATE_TOP_SOURCE", "FLOODGATE_TOP_PREFIX"] {
            assert!(!names.contains(&absent), "{names:?}");
        }
        assert!(env.contains(&("FLOODGATE_EVENT", "open".into())));
    }

    #[tokio::test]
    async fn a_failing_hook_reports_its_status_and_first_stderr_line() {
        let dir = Dir::new();
        let argv = dir.script("echo '' >&2\necho 'pager: no route to host' >&2\necho more >&2\nexit 3\n");
        let a = run_hook(&argv, Event::Open, &record(), 10 * SECOND).await;
        assert!(!a.ok);
        assert_eq!(a.what, "hook.open");
        assert_eq!(a.detail, "exit status: 3: pager: no route to host");
    }

    #[tokio::test]
    async fn a_large_record_and_a_hook_that_reads_none_of_it() {
        let mut rec = record();
        for s in 0..3600 {
            rec.timeline.push_second(s * 1000, BTreeMap::from([("blocklist".to_string(), s)]));
        }
        assert!(payload(Event::Open, &rec).len() > 64 << 10, "more than a pipe holds");
        let dir = Dir::new();
        let a = run_hook(&dir.script("exit 0\n"), Event::Open, &rec, 10 * SECOND).await;
        assert!(a.ok, "{a:?}");
        let a = run_hook(&dir.script("wc -c > \"$1/n\"\n"), Event::Open, &rec, 10 * SECOND).await;
        assert!(a.ok, "{a:?}");
        let n: usize = std::fs::read_to_string(dir.0.join("n")).unwrap().trim().parse().unwrap();
        assert_eq!(n, payload(Event::Open, &rec).len());
    }

    #[tokio::test]
    async fn a_chatty_hook_is_not_cut_short() {
        let dir = Dir::new();
        // About 400 KB on stderr: far more than is kept, and than a pipe holds.
        let argv = dir.script(
            "i=0\nwhile [ $i -lt 20000 ]; do echo \"line $i of chatter\" >&2; i=$((i+1)); done\nexit 1\n",
        );
        let a = run_hook(&argv, Event::Open, &record(), 10 * SECOND).await;
        assert_eq!(a.detail, "exit status: 1: line 0 of chatter");
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_what_it_started() {
        let dir = Dir::new();
        // The sleep holds stderr open: the hook is only over once it dies too.
        let argv = dir.script("sleep 30\n");
        let started = std::time::Instant::now();
        let a = run_hook(&argv, Event::Open, &record(), Duration::from_millis(300)).await;
        assert!(started.elapsed() < 5 * SECOND, "{:?}", started.elapsed());
        assert!(!a.ok);
        assert_eq!(a.detail, "killed after 300ms (the hook timeout)");
    }

    #[tokio::test]
    async fn a_missing_program_says_so() {
        let argv = vec!["/nonexistent/floodgate-hook".to_string()];
        let a = run_hook(&argv, Event::Open, &record(), SECOND).await;
        assert!(!a.ok);
        assert!(
            a.detail.starts_with("cannot run /nonexistent/floodgate-hook: No such file or directory"),
            "{}",
            a.detail
        );
    }

    #[test]
    fn programs_are_checked() {
        let dir = Dir::new();
        let text = |r: Result<(), BadProgram>| r.unwrap_err().to_string();
        assert!(text(check_program("notify")).contains("'notify' is not an absolute path"));
        assert!(text(check_program("/nonexistent/x")).starts_with("/nonexistent/x: No such file"));
        let d = dir.0.display().to_string();
        assert_eq!(text(check_program(&d)), format!("{d} is not a file"));
        let f = dir.0.join("notify");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        let f = f.display().to_string();
        assert_eq!(text(check_program(&f)), format!("{f} is not executable (chmod +x it)"));
        assert!(check_program("/bin/sh").is_ok());
    }

    /// A server on 127.0.0.1 answering one request per connection with each status in
    /// turn; the handle gives the requests as received.
    async fn server(statuses: &[u16]) -> (String, JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/incident", l.local_addr().unwrap());
        let statuses = statuses.to_vec();
        let handle = tokio::spawn(async move {
            let mut seen = Vec::new();
            for code in statuses {
                let (mut s, _) = l.accept().await.unwrap();
                seen.push(read_request(&mut s).await);
                let reply = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                s.write_all(reply.as_bytes()).await.unwrap();
            }
            seen
        });
        (url, handle)
    }

    /// One request: the head, then as many body bytes as its Content-Length says.
    async fn read_request(s: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_string))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if buf.len() >= end + 4 + len {
                    return text;
                }
            }
            assert!(n > 0, "connection closed mid-request: {text}");
        }
    }

    fn body(request: &str) -> serde_json::Value {
        serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap()
    }

    #[tokio::test]
    async fn a_webhook_posts_the_record_as_json() {
        let (url, seen) = server(&[204]).await;
        let client = crate::sources::client().unwrap();
        let a = post_webhook(&client, &url, Event::Open, &record(), 10 * SECOND).await;
        assert!(a.ok, "{a:?}");
        assert_eq!((a.what.as_str(), a.detail.as_str()), ("webhook.open", "HTTP status 204 No Content"));
        let seen = seen.await.unwrap();
        let head = seen[0].split_once("\r\n\r\n").unwrap().0.to_ascii_lowercase();
        assert!(head.starts_with("post /incident http/1.1\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: application/json\r\n"), "{head}");
        let agent = format!("\r\nuser-agent: floodgate/{}\r\n", env!("CARGO_PKG_VERSION"));
        assert!(head.contains(&agent), "{head}");
        let b = body(&seen[0]);
        assert_eq!(b["event"], "open");
        assert_eq!(b["incident"]["id"], "20260301-120000-eth0");
    }

    #[tokio::test]
    async fn a_5xx_is_retried_once() {
        let (url, seen) = server(&[503, 200]).await;
        let client = crate::sources::client().unwrap();
        let a = post_webhook(&client, &url, Event::Close, &record(), 10 * SECOND).await;
        assert!(a.ok, "{a:?}");
        assert_eq!(
            a.detail,
            "HTTP status 200 OK (retried; first attempt: HTTP status 503 Service Unavailable)"
        );
        let seen = seen.await.unwrap();
        assert_eq!(body(&seen[0]), body(&seen[1]));
        // A 4xx is the receiver's answer: no retry.
        let (url, seen) = server(&[404]).await;
        let a = post_webhook(&client, &url, Event::Close, &record(), 10 * SECOND).await;
        assert_eq!((a.ok, a.detail.as_str()), (false, "HTTP status 404 Not Found"));
        assert_eq!(seen.await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_reported() {
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let client = crate::sources::client().unwrap();
        let started = std::time::Instant::now();
        let url = format!("http://127.0.0.1:{port}/");
        let a = post_webhook(&client, &url, Event::Open, &record(), 10 * SECOND).await;
        assert!(started.elapsed() >= RETRY_AFTER, "retried after a pause");
        assert!(!a.ok);
        assert!(a.detail.contains("Connection refused"), "{}", a.detail);
        assert!(a.detail.contains("(retried; first attempt: "), "{}", a.detail);
        // No time left for a retry: one attempt.
        let started = std::time::Instant::now();
        let a = post_webhook(&client, &url, Event::Open, &record(), SECOND).await;
        assert!(started.elapsed() < RETRY_AFTER && !a.ok && !a.detail.contains("retried"), "{a:?}");
    }
}
