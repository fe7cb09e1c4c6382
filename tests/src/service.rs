//! `floodgate run` as a service under test: started in a lab's server namespace with
//! its own runtime directory, its log kept in a file the test reads.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::live::{Lab, floodgate_bin};

/// A running `floodgate run`. Stopped (SIGTERM) when dropped, if still running.
pub struct Service {
    child: Option<Child>,
    log: PathBuf,
}

/// A directory of the test's own under /tmp, removed (with what is in it) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fg-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Service {
    /// Starts `floodgate ARGS` (`run ...`) in the server namespace with `runtime` as
    /// its runtime directory, and waits until it says it is ready (or fails).
    #[track_caller]
    pub fn start(lab: &Lab, args: &[&str], runtime: &Path, log: &Path) -> Self {
        let mut c = lab.srv.command(floodgate_bin().to_str().unwrap());
        let out = fs::File::create(log).expect("log file");
        c.args(args)
            .env("FLOODGATE_RUNTIME_DIR", runtime)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out);
        for (k, v) in &lab.env {
            c.env(k, v);
        }
        let child = c.spawn().expect("spawning floodgate run");
        let mut s = Service { child: Some(child), log: log.to_path_buf() };
        s.wait_for("ready", Duration::from_secs(60));
        s
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until the log contains `text`; panics with the log if the process exits
    /// or time runs out.
    #[track_caller]
    pub fn wait_for(&mut self, text: &str, within: Duration) {
        self.wait_for_since(0, text, within);
    }

    /// Where the log ends now: with [`Service::wait_for_since`], waits for a line
    /// written after this point.
    pub fn mark(&self) -> usize {
        self.log().len()
    }

    /// Waits for `text` in the log after `mark` (bytes).
    pub fn wait_for_since(&mut self, mark: usize, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.log().get(mark..).is_some_and(|l| l.contains(text)) {
                return;
            }
            if let Some(status) = self.child.as_mut().expect("running").try_wait().expect("wait") {
                panic!("floodgate run exited ({status}) before '{text}':\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no '{text}' within {within:?}:\n{}", self.log());
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        unsafe { libc::kill(self.pid() as libc::c_int, sig) };
    }

    /// SIGTERM, then the exit status must be success; returns the log.
    #[track_caller]
    pub fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let status = self.child.take().expect("running").wait().expect("wait");
        let log = self.log();
        assert!(status.success(), "floodgate run exited with {status}:\n{log}");
        log
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(c.id() as libc::c_int, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// The shipped example config and the list files it names, built into the tests (the
/// VMs carry no checkout).
const EXAMPLE: &str = include_str!("../../packaging/floodgate.toml");
const EXAMPLE_LISTS: [(&str, &str); 2] = [
    ("block-example.txt", include_str!("../../packaging/lists/block-example.txt")),
    ("allow-example.txt", include_str!("../../packaging/lists/allow-example.txt")),
];

/// The shipped example config (packaging/floodgate.toml) made this lab's: its interface
/// renamed to `iface`, its state kept in `dir`, metrics on `metrics` (ADDRESS:PORT),
/// written with its list files into `dir`. Returns the config's path.
pub fn example_config(dir: &Path, iface: &str, metrics: &str) -> PathBuf {
    let text = EXAMPLE
        .replace("[interface.eth0", &format!("[interface.{iface}"))
        .replace("[service]\n", &format!("[service]\nstate_dir = \"{}\"\n", dir.join("state").display()))
        .replace("[metrics]\n", &format!("[metrics]\nlisten = \"{metrics}\"\n"));
    assert!(text.contains(&format!("[interface.{iface}]")), "the example names eth0");
    fs::create_dir_all(dir.join("lists")).expect("lists dir");
    for (name, body) in EXAMPLE_LISTS {
        assert!(text.contains(&format!("lists/{name}")), "the example names lists/{name}");
        fs::write(dir.join("lists").join(name), body).expect("write list");
    }
    let path = dir.join("floodgate.toml");
    fs::write(&path, text).expect("write config");
    path
}

/// The service's metrics endpoint, fetched inside the server's namespace.
pub fn scrape(lab: &Lab, addr: &str) -> String {
    let out = lab
        .srv
        .command("curl")
        .args(["-sf", "--max-time", "10", &format!("http://{addr}/metrics")])
        .output()
        .unwrap();
    assert!(out.status.success(), "scraping {addr}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
pub fn metric(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (lbls, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|want| lbls.split(',').any(|l| l == *want))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
