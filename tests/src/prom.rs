//! A real Prometheus server for the metrics tests (Debian's `prometheus`, installed by
//! scripts/setup.sh): its own config and data directory in a temp dir, on a free
//! loopback port, scraping the given targets every second. Dropping it kills the
//! server and removes the directory. Also `promtool check metrics` and a minimal HTTP
//! GET over loopback.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering::Relaxed},
    time::{Duration, Instant},
};

use serde_json::Value;

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    /// Its HTTP API.
    pub addr: SocketAddr,
}

/// A free port on 127.0.0.1 (free when asked: bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = PathBuf::from(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is missing: install Debian's prometheus package (scripts/setup.sh)");
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, path /metrics) every second
    /// as job `floodgate`; returns once it is ready to answer queries.
    pub fn start(targets: &[SocketAddr]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir =
            std::env::temp_dir().join(format!("fg-prom-{}-{}", std::process::id(), N.fetch_add(1, Relaxed)));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).expect("Prometheus' temp dir");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: floodgate\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        fs::write(dir.join("prometheus.yml"), config).expect("Prometheus' config");
        let log = fs::File::create(dir.join("log")).expect("Prometheus' log");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let mut p = Prometheus { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(addr, "/-/ready") {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", p.log());
            }
            assert!(Instant::now() < deadline, "prometheus not ready after 30 s:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of Prometheus' own graph page for `expr` over the last minute, taken
    /// with headless chromium (not installed by setup.sh: for the README's picture only).
    pub fn screenshot(&self, expr: &str, path: &std::ffi::OsStr) {
        let q: String = expr
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!("http://{}/graph/?g0.expr={q}&g0.tab=0&g0.range_input=1m&g0.stacked=0", self.addr);
        let mut shot = std::ffi::OsString::from("--screenshot=");
        shot.push(path);
        let out = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
            .args(["--window-size=1200,840", "--virtual-time-budget=8000"])
            .arg(shot)
            .arg(&url)
            .output()
            .expect("running chromium (apt-get install chromium)");
        assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Its log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// An instant query: each series' labels and value.
    pub fn query(&self, expr: &str) -> Vec<(Value, f64)> {
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={}", url_encode(expr)))
            .expect("querying prometheus");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("query answer {body:?}: {e}"));
        assert_eq!((status, &v["status"]), (200, &Value::from("success")), "query {expr}: {body}");
        v["data"]["result"]
            .as_array()
            .expect("a vector result")
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().and_then(|x| x.parse().ok()).expect("a sample value");
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// Queries `expr` until `done` accepts the result or `timeout` passes; returns the
    /// last result and whether it was accepted.
    pub fn wait_for(
        &self,
        expr: &str,
        timeout: Duration,
        done: impl Fn(&[(Value, f64)]) -> bool,
    ) -> (Vec<(Value, f64)>, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(expr);
            if done(&r) {
                return (r, true);
            }
            if Instant::now() >= deadline {
                return (r, false);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `promtool check metrics` on a scraped body: Ok, or what it reported.
pub fn promtool_check(body: &str) -> Result<(), String> {
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    child.stdin.take().unwrap().write_all(body.as_bytes()).expect("feeding promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {said}", out.status))
    }
}

/// GET `path` over HTTP/1.1 (one request, connection closed): status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other("no HTTP head"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.into()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the sample `line_start` (`name{labels}` exactly as written) in a
/// text-format body.
pub fn sample(body: &str, line_start: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
}
