//! The service's URL list sources: one tokio task per source fetches it every
//! `refresh`, keeps its last good copy (on disk too), and tells the controller when
//! the copy in force changed. The controller reads the copies in force from here when
//! it applies a list.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use floodgate::{
    config::{Config, ListName, UrlSource},
    metrics::SourceMetrics,
    sources::{self, SourceStatus, UrlList},
};
use ipnet::IpNet;
use tokio::{
    runtime::Handle,
    sync::{mpsc, oneshot},
};

use super::Msg;

/// One source of one list of one interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub iface: String,
    pub list: ListName,
    pub url: String,
}

enum Cmd {
    /// Apply a copy held back for shrinking too much; answers with the copy in force
    /// when one was accepted.
    Accept(oneshot::Sender<Option<Arc<[IpNet]>>>),
}

struct Task {
    src: UrlSource,
    cmds: mpsc::Sender<Cmd>,
    handle: tokio::task::JoinHandle<()>,
}

/// Every source's copy in force and status (shared with the metrics).
#[derive(Default)]
pub struct Shared {
    pub entries: HashMap<Key, Arc<[IpNet]>>,
    pub status: HashMap<Key, SourceStatus>,
}

pub struct Urls {
    rt: Handle,
    cache_dir: PathBuf,
    client: reqwest::Client,
    tx: mpsc::Sender<Msg>,
    tasks: HashMap<Key, Task>,
    pub shared: Arc<Mutex<Shared>>,
}

impl Urls {
    pub fn new(rt: Handle, state_dir: &std::path::Path, tx: mpsc::Sender<Msg>) -> anyhow::Result<Self> {
        Ok(Urls {
            rt,
            cache_dir: sources::cache_dir(state_dir),
            client: sources::client()?,
            tx,
            tasks: HashMap::new(),
            shared: Arc::default(),
        })
    }

    /// The copy in force of every source of `iface`'s `list`, together.
    pub fn entries(&self, iface: &str, list: ListName) -> Vec<IpNet> {
        let shared = self.shared.lock().expect("url state");
        let mut out = Vec::new();
        for (k, v) in &shared.entries {
            if k.iface == iface && k.list == list {
                out.extend_from_slice(v);
            }
        }
        out
    }

    /// Starts a task for every source of `config` not running yet (its cached copy in
    /// force at once; without one, a first fetch is awaited, bounded by the client's
    /// timeouts), and stops the tasks of sources it no longer names. Called from the
    /// controller thread, never from the runtime.
    pub fn sync(&mut self, config: &Config) {
        let mut wanted: HashMap<Key, UrlSource> = HashMap::new();
        for iface in &config.interfaces {
            for list in ListName::ALL {
                for u in &iface.list(list).urls {
                    wanted.insert(Key { iface: iface.name.clone(), list, url: u.url.clone() }, u.clone());
                }
            }
        }
        self.tasks.retain(|k, t| {
            let keep = wanted.get(k) == Some(&t.src);
            if !keep {
                t.handle.abort();
                let mut shared = self.shared.lock().expect("url state");
                shared.entries.remove(k);
                shared.status.remove(k);
            }
            keep
        });
        for (key, src) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let mut list = UrlList::new(&src, &self.cache_dir);
            let fetched_now = list.status().entries == 0 && !list.status().from_cache;
            if fetched_now {
                // Nothing cached: the first copy is worth waiting for before the
                // list is applied.
                let outcome = self.rt.block_on(list.refresh(&self.client));
                tracing::info!(url = key.url.as_str(), "first fetch: {outcome:?}");
            }
            {
                let mut shared = self.shared.lock().expect("url state");
                shared.entries.insert(key.clone(), list.snapshot());
                shared.status.insert(key.clone(), list.status());
            }
            let (cmds, rx) = mpsc::channel(4);
            let handle = self.rt.spawn(run(
                list,
                key.clone(),
                self.client.clone(),
                self.tx.clone(),
                rx,
                self.shared.clone(),
                !fetched_now,
            ));
            self.tasks.insert(key, Task { src, cmds, handle });
        }
    }

    /// Reads every source's status for the metrics, at each scrape.
    pub fn metrics_reader(&self) -> floodgate::metrics::SourceReader {
        let shared = self.shared.clone();
        Arc::new(move || {
            let shared = shared.lock().expect("url state");
            let mut out: Vec<SourceMetrics> = shared
                .status
                .iter()
                .map(|(k, s)| SourceMetrics {
                    source: k.url.clone(),
                    list: k.list.name().to_string(),
                    interface: k.iface.clone(),
                    ok: s.last_error.is_none(),
                    last_success_unix: s.last_success_unix_secs,
                    entries: s.entries as u64,
                    pending: s.pending_entries.is_some(),
                    failures: s.fetches.http_error + s.fetches.parse_error + s.fetches.network_error,
                })
                .collect();
            out.sort_by(|a, b| (&a.interface, &a.list, &a.source).cmp(&(&b.interface, &b.list, &b.source)));
            out
        })
    }

    /// Applies every held-back copy; returns how many were accepted.
    pub fn accept_pending(&self) -> usize {
        let mut accepted = 0;
        for (key, task) in &self.tasks {
            let (done, wait) = oneshot::channel();
            if task.cmds.blocking_send(Cmd::Accept(done)).is_err() {
                continue;
            }
            if let Ok(Some(entries)) = wait.blocking_recv() {
                self.shared.lock().expect("url state").entries.insert(key.clone(), entries);
                accepted += 1;
            }
        }
        accepted
    }
}

async fn run(
    mut list: UrlList,
    key: Key,
    client: reqwest::Client,
    tx: mpsc::Sender<Msg>,
    mut cmds: mpsc::Receiver<Cmd>,
    shared: Arc<Mutex<Shared>>,
    fetch_first: bool,
) {
    let refresh: Duration = list.source().refresh;
    let mut fetch = fetch_first;
    loop {
        if fetch {
            let outcome = list.refresh(&client).await;
            let changed = outcome.changed();
            {
                let mut s = shared.lock().expect("url state");
                s.status.insert(key.clone(), list.status());
                if changed {
                    s.entries.insert(key.clone(), list.snapshot());
                }
            }
            if changed && tx.send(Msg::Source { key: key.clone() }).await.is_err() {
                return;
            }
        }
        fetch = true;
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Accept(done)) => {
                    let accepted = list.accept_pending();
                    shared.lock().expect("url state").status.insert(key.clone(), list.status());
                    let _ = done.send(accepted.then(|| list.snapshot()));
                    fetch = false;
                }
                None => return,
            }
        }
    }
}
