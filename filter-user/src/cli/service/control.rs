//! The service's control socket: `floodgate reload` asks the running service of its
//! network namespace to re-read its config, and waits for the outcome.
//!
//! One socket per network namespace (filters are per namespace, and so is the
//! service that keeps them): `RUNTIME/netns-DEV-INO/control.sock`, mode 0600. The
//! protocol is one JSON line each way.

use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use floodgate::pins::NetnsId;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::Msg;

/// Overrides the runtime directory (tests keep theirs apart).
pub const RUNTIME_ENV: &str = "FLOODGATE_RUNTIME_DIR";
const RUNTIME_DEFAULT: &str = "/run/floodgate";

/// This network namespace's runtime directory: the control socket, and what the
/// config owns in each filter (it lives as long as the pins: both go at reboot).
pub fn runtime_dir() -> anyhow::Result<PathBuf> {
    let root = std::env::var_os(RUNTIME_ENV).map(PathBuf::from).unwrap_or_else(|| RUNTIME_DEFAULT.into());
    Ok(root.join(NetnsId::current()?.dir_name()))
}

pub fn socket_path(runtime: &Path) -> PathBuf {
    runtime.join("control.sock")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub reload: bool,
    /// Apply fetched lists held back because they shrank too much.
    pub accept_shrink: bool,
}

/// The outcome of a reload, as `floodgate reload` prints it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// Every error, one per line as `config check` gives them.
    pub errors: Vec<String>,
    /// Per interface: what changed ("no change" when nothing did).
    pub changes: Vec<(String, String)>,
    pub seconds: f64,
}

/// Binds the socket, refusing to start when another service answers on it.
pub async fn bind(runtime: &Path) -> anyhow::Result<UnixListener> {
    std::fs::create_dir_all(runtime).with_context(|| format!("creating {}", runtime.display()))?;
    let path = socket_path(runtime);
    if UnixStream::connect(&path).await.is_ok() {
        bail!(
            "another `floodgate run` serves this network namespace (it answers on {}): stop it first",
            path.display()
        );
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing the stale socket {}", path.display())),
    }
    let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(listener)
}

/// Answers requests until the service stops.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Msg>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: a pause, not a busy loop.
                tracing::warn!("control socket: accepting a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, tx).await {
                tracing::warn!("control socket: {e:#}");
            }
        });
    }
}

async fn answer(stream: UnixStream, tx: mpsc::Sender<Msg>) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let req: Request = serde_json::from_str(&line).context("a request that is not floodgate's")?;
    let reply = if req.reload {
        let (done, wait) = oneshot::channel();
        tx.send(Msg::Reload { accept_shrink: req.accept_shrink, done: Some(done) })
            .await
            .context("the service is stopping")?;
        wait.await.context("the service is stopping")?
    } else {
        Reply { ok: false, errors: vec!["unknown request".into()], ..Default::default() }
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

/// `floodgate reload`'s side.
pub fn request(req: &Request) -> anyhow::Result<Reply> {
    use std::io::{BufRead as _, Write as _};
    let path = socket_path(&runtime_dir()?);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "no floodgate service answers in this network namespace (connecting to {}): is `floodgate run --config` running?",
            path.display()
        )
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    std::io::BufReader::new(stream).read_line(&mut reply).context("reading the service's answer")?;
    serde_json::from_str(&reply).context("the service's answer")
}
