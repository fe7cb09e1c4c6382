//! A real CrowdSec Local API (LAPI) for the bouncer and reporter tests: Debian
//! bookworm's crowdsec 1.4.6, unpacked by scripts/setup.sh (its package cannot be
//! installed here: the post-install script registers with the online Central API), run
//! with `-no-cs` (the API only, no log processing) on a free loopback port. Its config,
//! SQLite database and logs live in a directory of their own; one machine (watcher)
//! and one bouncer are registered before it starts. Killed and the directory removed
//! on drop.
//!
//! Behaviour of 1.4.6 worth knowing when using it (measured, not documented upstream):
//! - `cscli decisions list` and `alerts list` hide decisions whose origin is not
//!   `crowdsec` or `cscli` unless given `-a`, and stop at 100 (50) alerts unless
//!   `-l 0`: [`Lapi::decisions_json`] and [`Lapi::alerts_json`] pass both.
//! - Scopes are case-sensitive: the bouncer stream (default `scopes=ip,range`) only
//!   returns scope `Ip` and `Range`; a decision stored as `range` is never streamed.
//!   The helpers here always store `Ip` and `Range`.

use std::{
    collections::{BTreeMap, hash_map::RandomState},
    fmt::Display,
    fs,
    hash::{BuildHasher, Hasher},
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
// What `--duration` and the import's `duration` column parse.
use floodgate::crowdsec::lapi::go_duration;

/// The machine (watcher) and the bouncer registered in every LAPI started here.
pub const MACHINE_ID: &str = "floodgate-test";
pub const BOUNCER_NAME: &str = "floodgate-test";
/// How long [`Lapi::start`] and [`Lapi::restart`] wait for the API to answer (it takes
/// ~0.2 s, also on a database of 100,000 decisions).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or, after [`Lapi::stop`], stopped) CrowdSec LAPI.
pub struct Lapi {
    /// The unpacked package (`usr/bin/crowdsec`, `usr/bin/cscli`, ...).
    root: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    bouncer_key: String,
    machine_password: String,
    child: Option<Child>,
    /// The network namespace it runs in (its loopback), None: the caller's.
    netns: Option<PathBuf>,
}

/// Where scripts/setup.sh unpacks the package: `$FLOODGATE_CROWDSEC_DIR`, else
/// `$FLOODGATE_TOOLS/crowdsec`, else `~/.cache/floodgate-tools/crowdsec`.
pub fn crowdsec_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FLOODGATE_CROWDSEC_DIR") {
        return d.into();
    }
    let tools = std::env::var_os("FLOODGATE_TOOLS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/floodgate-tools")
    });
    tools.join("crowdsec")
}

impl Lapi {
    /// Writes a config into a new temporary directory, registers the machine and the
    /// bouncer, starts the LAPI on a free 127.0.0.1 port and waits until it answers.
    pub fn start() -> anyhow::Result<Lapi> {
        Self::start_with(None)
    }

    /// As [`Lapi::start`], inside network namespace `ns` (on its loopback: for a
    /// floodgate service running there); cscli runs there too.
    pub fn start_in(ns: &crate::Netns) -> anyhow::Result<Lapi> {
        Self::start_with(Some(ns.path()))
    }

    fn start_with(netns: Option<PathBuf>) -> anyhow::Result<Lapi> {
        let root = crowdsec_dir();
        if !root.join("usr/bin/crowdsec").is_file() {
            bail!(
                "no crowdsec in {} (scripts/setup.sh unpacks it there; FLOODGATE_CROWDSEC_DIR overrides)",
                root.display()
            );
        }
        // Unique within the process (several LAPIs per test binary) and across
        // processes; a leftover of a killed run that had the same pid goes first.
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("floodgate-crowdsec-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["data", "hub", "config/notifications"] {
            fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Built before anything can fail, so that its drop removes the directory.
        let mut lapi = Lapi {
            config: dir.join("config.yaml"),
            dir,
            root,
            port: in_netns(netns.as_deref(), free_port)?,
            bouncer_key: random_hex(40),
            machine_password: random_hex(32),
            child: None,
            netns,
        };
        lapi.write_config()?;
        // Both go straight into the database, so they can precede the LAPI. The
        // credentials file is the one the config names: cscli logs in with it for
        // `decisions add/delete/list/import`.
        let creds = lapi.credentials_path();
        let creds = creds.to_str().context("temp dir path is not UTF-8")?;
        lapi.cscli(&["machines", "add", MACHINE_ID, "--password", &lapi.machine_password, "-f", creds])?;
        lapi.cscli(&["bouncers", "add", BOUNCER_NAME, "-k", &lapi.bouncer_key])?;
        lapi.spawn()?;
        Ok(lapi)
    }

    /// `http://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bouncer's API key (header `X-Api-Key`).
    pub fn bouncer_key(&self) -> &str {
        &self.bouncer_key
    }

    /// The machine's login for `POST /v1/watchers/login`.
    pub fn machine_id(&self) -> &str {
        MACHINE_ID
    }

    pub fn machine_password(&self) -> &str {
        &self.machine_password
    }

    /// The directory holding the config, the database (`data/crowdsec.db`) and the logs
    /// (`crowdsec.log`, `crowdsec_api.log`: the access log, `crowdsec.out`: stdout and
    /// stderr).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config file, for running crowdsec or cscli by hand (`cscli -c CONFIG ...`).
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Writes the bouncer key, newline-terminated, to `path` (what `api_key_file` names).
    pub fn write_bouncer_key(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        fs::write(path, format!("{}\n", self.bouncer_key))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Writes the machine credentials to `path` in the format `cscli machines add NAME
    /// -f FILE` writes (YAML: `url`, `login`, `password`), which is also what crowdsec
    /// itself reads from /etc/crowdsec/local_api_credentials.yaml.
    pub fn write_credentials(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        fs::copy(self.credentials_path(), path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Runs `cscli -c CONFIG ARGS...` and returns its stdout (cscli logs to stderr,
    /// which a failure's error carries).
    pub fn cscli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(&self.root.join("usr/bin/cscli"))
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .context("running cscli")?;
        if !out.status.success() {
            bail!(
                "cscli {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A ban on one address (scope `Ip`, origin `cscli`).
    pub fn add_ip(&self, ip: impl Display, duration: Duration) -> anyhow::Result<()> {
        self.cscli(&["decisions", "add", "--ip", &ip.to_string(), "--duration", &go_duration(duration)])
            .map(drop)
    }

    /// A ban on a prefix (scope `Range`, origin `cscli`).
    pub fn add_range(&self, cidr: impl Display, duration: Duration) -> anyhow::Result<()> {
        self.cscli(&["decisions", "add", "--range", &cidr.to_string(), "--duration", &go_duration(duration)])
            .map(drop)
    }

    /// Deletes the decisions on exactly this address (1.4.6 ends them: they expire now
    /// and show in the stream's `deleted`). By value: `--ip` would also delete every
    /// range decision containing the address.
    pub fn delete_ip(&self, ip: impl Display) -> anyhow::Result<()> {
        self.cscli(&["decisions", "delete", "--value", &ip.to_string()]).map(drop)
    }

    /// Deletes the decisions on exactly this prefix. By value: `--range` would also
    /// delete every range containing it (and `--contained` every one inside it).
    pub fn delete_range(&self, cidr: impl Display) -> anyhow::Result<()> {
        self.cscli(&["decisions", "delete", "--value", &cidr.to_string()]).map(drop)
    }

    /// `cscli decisions list -a -l 0 -o json`: the active decisions of every origin, no
    /// limit. 1.4.6 prints alerts, each with its `decisions` (an import is one alert
    /// holding all of them); `null` when there are none becomes `[]`.
    pub fn decisions_json(&self) -> anyhow::Result<serde_json::Value> {
        self.cscli_json(&["decisions", "list", "-a", "-l", "0", "-o", "json"])
    }

    /// `cscli alerts list -a -l 0 -o json`: every alert, with its decisions also when
    /// they have expired (negative `duration`); `[]` for none.
    pub fn alerts_json(&self) -> anyhow::Result<serde_json::Value> {
        self.cscli_json(&["alerts", "list", "-a", "-l", "0", "-o", "json"])
    }

    fn cscli_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = self.cscli(args)?;
        let v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("cscli {}: not JSON", args.join(" ")))?;
        Ok(if v.is_null() { serde_json::Value::Array(Vec::new()) } else { v })
    }

    /// Adds many ban decisions at once: `(value, scope, duration)` with scope `Ip` or
    /// `Range` (any case; other scopes are stored as given). Through `cscli decisions
    /// import`, one run per scope: 1.4.6's import ignores a per-row scope and applies
    /// its `--scope` (default `Ip`) to every row. 100,000 take ~7 s. The decisions have
    /// origin `cscli-import` and scenario `manual`.
    pub fn add_many(&self, decisions: &[(String, String, Duration)]) -> anyhow::Result<()> {
        let mut by_scope: BTreeMap<String, String> = BTreeMap::new();
        for (value, scope, duration) in decisions {
            if value.contains([',', '\n', '"']) {
                bail!("add_many: {value:?} is no address or prefix");
            }
            let csv = by_scope.entry(normal_scope(scope)).or_insert_with(|| "duration,value\n".to_string());
            csv.push_str(&format!("{},{value}\n", go_duration(*duration)));
        }
        for (scope, csv) in by_scope {
            let file = self.dir.join(format!("import-{scope}.csv"));
            fs::write(&file, csv).with_context(|| format!("writing {}", file.display()))?;
            let file_arg = file.to_str().context("temp dir path is not UTF-8")?;
            let result = self.cscli(&["decisions", "import", "-i", file_arg, "--scope", &scope]);
            let _ = fs::remove_file(&file);
            result?;
        }
        Ok(())
    }

    /// Kills the LAPI (SIGKILL, as a crash would); the directory and database stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the LAPI again on the same port and database and waits until it answers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// The last lines of the LAPI's logs, for error messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["crowdsec.out", "crowdsec.log"] {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {name}:\n"));
            for line in &lines[lines.len().saturating_sub(20)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn credentials_path(&self) -> PathBuf {
        self.dir.join("local_api_credentials.yaml")
    }

    /// 1.4.6's packaged config with every path in the directory, minus what the API
    /// alone does not use or what would reach out: no `online_client` (Central API), no
    /// Prometheus listener (a fixed port: parallel LAPIs would collide), no flush of
    /// old alerts (a test's decisions stay until it deletes them).
    fn write_config(&self) -> anyhow::Result<()> {
        let dir = |sub: &str| yaml_str(&format!("{}/", self.dir.join(sub).display()));
        let file = |sub: &str| yaml_str(&self.dir.join(sub).display().to_string());
        let config = format!(
            "common:
  daemonize: false
  log_media: file
  log_level: info
  log_dir: {log_dir}
  working_dir: .
config_paths:
  config_dir: {config_dir}
  data_dir: {data_dir}
  simulation_path: {simulation}
  hub_dir: {hub_dir}
  index_path: {index}
  notification_dir: {notifications}
  plugin_dir: {plugins}
cscli:
  output: human
  color: 'no'
db_config:
  log_level: info
  type: sqlite
  db_path: {db}
  # WAL: imports of many decisions are several times faster.
  use_wal: true
api:
  client:
    insecure_skip_verify: false
    credentials_path: {creds}
  server:
    log_level: info
    listen_uri: 127.0.0.1:{port}
    profiles_path: {profiles}
    console_path: {console}
    trusted_ips:
      - 127.0.0.1
      - '::1'
prometheus:
  enabled: false
",
            log_dir = yaml_str(&format!("{}/", self.dir.display())),
            config_dir = dir("config"),
            data_dir = dir("data"),
            simulation = file("config/simulation.yaml"),
            hub_dir = dir("hub"),
            index = file("hub/.index.json"),
            notifications = dir("config/notifications"),
            plugins = yaml_str(&format!("{}/", self.root.join("usr/lib/crowdsec/plugins").display())),
            db = file("data/crowdsec.db"),
            creds = yaml_str(&self.credentials_path().display().to_string()),
            port = self.port,
            profiles = file("config/profiles.yaml"),
            console = file("config/console.yaml"),
        );
        // The packaged profile: an alert posted without decisions but with
        // `remediation: true` on an Ip gets a 4 h ban, as on a real installation.
        let profiles = "name: default_ip_remediation
filters:
 - Alert.Remediation == true && Alert.GetScope() == \"Ip\"
decisions:
 - type: ban
   duration: 4h
on_success: break
";
        for (name, text) in [
            ("config.yaml", config.as_str()),
            ("config/profiles.yaml", profiles),
            ("config/simulation.yaml", "simulation: off\n"),
        ] {
            let path = self.dir.join(name);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// `prog`, in the LAPI's network namespace.
    fn command(&self, prog: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(prog);
                c
            }
            None => Command::new(prog),
        }
    }

    /// Starts `crowdsec -no-cs` and waits until `GET /health` answers 200.
    fn spawn(&mut self) -> anyhow::Result<()> {
        // Appended: after a restart the earlier run's output stays readable.
        let out = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("crowdsec.out"))?;
        let child = self
            .command(&self.root.join("usr/bin/crowdsec"))
            .arg("-c")
            .arg(&self.config)
            .arg("-no-cs")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting crowdsec")?;
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                bail!("crowdsec exited ({status}) before its API answered\n{}", self.log_tail());
            }
            let port = self.port;
            let health = in_netns(self.netns.as_deref(), || http_get(port, "/health"));
            if health.is_ok_and(|(status, _)| status == 200) {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                self.stop();
                bail!(
                    "crowdsec's API on port {} did not answer in {READY_TIMEOUT:?}\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `n` consecutive addresses from `first` as `Ip` decisions of `duration`, for
/// [`Lapi::add_many`].
pub fn addresses(first: Ipv4Addr, n: u32, duration: Duration) -> Vec<(String, String, Duration)> {
    (0..n).map(|i| (Ipv4Addr::from(u32::from(first) + i).to_string(), "Ip".to_string(), duration)).collect()
}

/// Runs `f` in network namespace `ns` (a thread of its own), or here.
fn in_netns<T: Send>(ns: Option<&Path>, f: impl FnOnce() -> std::io::Result<T> + Send) -> std::io::Result<T> {
    let Some(ns) = ns else { return f() };
    thread::scope(|s| {
        s.spawn(|| {
            let fd = fs::File::open(ns)?;
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("thread in namespace panicked")))
    })
}

/// A port nothing listens on now (bound, read, released: another process could take it
/// before crowdsec does, which the start's error then shows).
fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    l.local_addr().map(|a| a.port())
}

/// Hex digits from std's randomly seeded hasher: unguessable enough for a test key,
/// without a random number crate.
fn random_hex(len: usize) -> String {
    let state = RandomState::new();
    let mut out = String::new();
    let mut i = 0u64;
    while out.len() < len {
        let mut h = state.build_hasher();
        h.write_u64(i);
        out.push_str(&format!("{:016x}", h.finish()));
        i += 1;
    }
    out.truncate(len);
    out
}

/// `Ip` and `Range` as the stream's scope filter wants them (it compares exactly).
fn normal_scope(scope: &str) -> String {
    match scope.to_ascii_lowercase().as_str() {
        "ip" => "Ip".to_string(),
        "range" => "Range".to_string(),
        _ => scope.to_string(),
    }
}

/// A single-quoted YAML string (paths with any characters).
fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A plain HTTP/1.0 GET on 127.0.0.1:port (no keep-alive, no chunking): the status
/// and the body. Enough for the readiness check and the smoke test.
fn http_get(port: u16, path_and_headers: &str) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let (path, headers) = path_and_headers.split_once('\n').unwrap_or((path_and_headers, ""));
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n")?;
    for h in headers.lines().filter(|h| !h.is_empty()) {
        write!(s, "{h}\r\n")?;
    }
    s.write_all(b"\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(go_duration(Duration::from_secs(3600)), "3600s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(
            (normal_scope("ip"), normal_scope("RANGE"), normal_scope("username")),
            ("Ip".into(), "Range".into(), "username".into())
        );
        assert_eq!(yaml_str("/tmp/a'b/"), "'/tmp/a''b/'");
        let (a, b) = (random_hex(40), random_hex(40));
        assert!(a.len() == 40 && a.bytes().all(|c| c.is_ascii_hexdigit()) && a != b);
    }

    /// The active decisions as `(id, scope, value)`, from `decisions_json`.
    fn active(lapi: &Lapi) -> anyhow::Result<Vec<(u64, String, String)>> {
        let mut out = Vec::new();
        for alert in lapi.decisions_json()?.as_array().into_iter().flatten() {
            for d in alert["decisions"].as_array().into_iter().flatten() {
                let text = |k: &str| d[k].as_str().unwrap_or_default().to_string();
                out.push((d["id"].as_u64().unwrap_or_default(), text("scope"), text("value")));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Against a real LAPI (needs scripts/setup.sh's crowdsec):
    /// `cargo test -p floodgate-lab lapi_smoke -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn lapi_smoke() -> anyhow::Result<()> {
        let t = Instant::now();
        let mut lapi = Lapi::start()?;
        eprintln!("started in {:?} at {}", t.elapsed(), lapi.url());
        let key = format!("X-Api-Key: {}", lapi.bouncer_key());
        let stream = |q: &str| -> anyhow::Result<serde_json::Value> {
            let (status, body) = http_get(lapi.port(), &format!("/v1/decisions/stream{q}\n{key}"))?;
            anyhow::ensure!(status == 200, "stream{q}: {status} {body}");
            Ok(serde_json::from_str(&body)?)
        };
        assert_eq!(stream("?startup=true")?, serde_json::json!({"new": null, "deleted": null}));

        let hour = Duration::from_secs(3600);
        lapi.add_ip("192.0.2.5", hour)?;
        lapi.add_range("198.51.100.0/24", hour)?;
        lapi.add_ip("198.51.100.7", hour)?;
        let new = stream("")?["new"].as_array().cloned().unwrap_or_default();
        let mut got: Vec<(&str, &str)> =
            new.iter().map(|d| (d["scope"].as_str().unwrap(), d["value"].as_str().unwrap())).collect();
        got.sort();
        assert_eq!(got, [("Ip", "192.0.2.5"), ("Ip", "198.51.100.7"), ("Range", "198.51.100.0/24")]);
        // Exactly the address: the /24 around it stays.
        lapi.delete_ip("198.51.100.7")?;
        let delta = stream("")?;
        assert_eq!(delta["deleted"][0]["value"], "198.51.100.7", "{delta}");
        let values =
            |l: &Lapi| -> anyhow::Result<Vec<String>> { Ok(active(l)?.into_iter().map(|d| d.2).collect()) };
        assert_eq!(values(&lapi)?, ["192.0.2.5", "198.51.100.0/24"]);
        lapi.delete_range("198.51.100.0/24")?;
        assert_eq!(values(&lapi)?, ["192.0.2.5"]);

        let day = Duration::from_secs(86400);
        let many: Vec<(String, String, Duration)> = (0..100_000u32)
            .map(|i| {
                let [_, a, b, c] = i.to_be_bytes();
                // One in ten a prefix, given in lower case: stored as `Range` all the same.
                if i % 10 == 0 {
                    (format!("10.{}.{b}.{c}/32", 100 + a), "range".into(), day)
                } else {
                    (format!("10.{a}.{b}.{c}"), "Ip".into(), day)
                }
            })
            .collect();
        let t = Instant::now();
        lapi.add_many(&many)?;
        eprintln!("add_many(100,000) in {:?}", t.elapsed());
        let t = Instant::now();
        let (status, body) = http_get(lapi.port(), &format!("/v1/decisions/stream?startup=true\n{key}"))?;
        let all: serde_json::Value = serde_json::from_str(&body)?;
        let new = all["new"].as_array().cloned().unwrap_or_default();
        eprintln!(
            "startup stream: {status}, {} bytes, {} decisions in {:?}",
            body.len(),
            new.len(),
            t.elapsed()
        );
        assert_eq!(new.len(), 100_001);
        assert_eq!(new.iter().filter(|d| d["scope"] == "Range").count(), 10_000);

        let before = active(&lapi)?;
        lapi.stop();
        assert!(http_get(lapi.port(), "/health").is_err());
        let t = Instant::now();
        lapi.restart()?;
        eprintln!("restart answered in {:?}", t.elapsed());
        assert_eq!(active(&lapi)?, before, "the same decisions and ids after a restart");

        let creds = lapi.dir().join("copy.yaml");
        lapi.write_credentials(&creds)?;
        let text = fs::read_to_string(&creds)?;
        assert!(
            text.contains(&format!("login: {MACHINE_ID}")) && text.contains(lapi.machine_password()),
            "{text}"
        );
        let dir = lapi.dir().to_path_buf();
        drop(lapi);
        assert!(!dir.exists());
        Ok(())
    }
}
