//! The service behind `run`: async edges (signals, the control socket, timers, list
//! fetches, metrics) on tokio, and one controller thread that alone changes the maps,
//! one request at a time, so reloads, sweeps and list refreshes never interleave.

mod control;
mod controller;
mod crowdsec;
mod incidents;
mod urls;

pub use control::{Request, request, runtime_dir};

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

use super::run::Args;
use controller::Controller;
pub use controller::load_config;
use floodgate::config::Config;
use floodgate::metrics::Exporter;

/// What the async side asks of the controller.
pub enum Msg {
    Reload {
        accept_shrink: bool,
        done: Option<oneshot::Sender<control::Reply>>,
    },
    Sweep,
    /// A URL list source's copy in force changed.
    Source {
        key: urls::Key,
    },
    /// An incident opened (`on`) or closed on `iface`: its escalations engage or
    /// are undone.
    Escalate {
        iface: String,
        on: bool,
        id: String,
        report: std::sync::mpsc::Sender<incidents::ActionReport>,
    },
    /// A pull of the CrowdSec LAPI's decisions (`startup`: all of them), asked at
    /// `started` and read (answer parsed) at `fetched`; `done` when applied.
    Decisions {
        stream: floodgate::crowdsec::Stream,
        startup: bool,
        started: std::time::Instant,
        fetched: std::time::Instant,
        done: oneshot::Sender<()>,
    },
    Stop {
        done: oneshot::Sender<anyhow::Result<()>>,
    },
}

/// Runs the service: `config` is the file `args.config` names, already read (None with
/// `-i`).
pub async fn serve(args: Args, config: Option<Config>) -> anyhow::Result<()> {
    // Caught from the start: a stop during the bring-up waits for it to finish rather
    // than cutting an attach or a takeover short.
    let mut hup = signal(SignalKind::hangup()).context("catching SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("catching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("catching SIGINT")?;
    let runtime = control::runtime_dir()?;
    // Bound first: a second service in the same namespace stops here, before it
    // touches any filter.
    let listener = control::bind(&runtime).await?;
    // Also before any filter is touched: a port in use stops the start.
    let listen = match &config {
        Some(c) => c.service.metrics_listen,
        None => args.metrics,
    };
    let metrics_listener = match listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics scrapes on {addr}"))?,
        ),
        None => None,
    };
    let exporter = Arc::new(Exporter::new(Vec::new(), Arc::default()));
    let (tx, mut rx) = mpsc::channel::<Msg>(16);

    let (rt, ctl_tx, ctl_exporter) = (tokio::runtime::Handle::current(), tx.clone(), exporter.clone());
    let mut ctl = tokio::task::spawn_blocking(move || {
        Controller::start(args, config, runtime, rt, ctl_tx, ctl_exporter)
    })
    .await
    .context("the controller panicked")??;
    let (metrics_stop, metrics_stopped) = oneshot::channel::<()>();
    let metrics_task = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!("serving metrics on http://{addr}/metrics");
        }
        tokio::spawn(floodgate::metrics::serve(l, exporter, async {
            let _ = metrics_stopped.await;
        }))
    });
    let notifier = floodgate::notify::Notifier::from_env().context("$NOTIFY_SOCKET")?;
    let notify = move |what: &str, r: Result<(), floodgate::notify::NotifyError>| {
        if let Err(e) = r {
            tracing::warn!("telling systemd {what}: {e}");
        }
    };
    // Only now, with every interface's config in force.
    if let Some(n) = &notifier {
        notify("READY=1", n.ready());
        notify("STATUS", n.status(&ctl.summary()));
    }
    tracing::info!("ready: {}", ctl.summary());

    // The controller thread: every map change happens here, in order.
    let thread = std::thread::Builder::new()
        .name("floodgate-ctl".into())
        .spawn(move || {
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Msg::Reload { accept_shrink, done } => {
                        if let Some(n) = &notifier {
                            notify("RELOADING=1", n.reloading());
                        }
                        let reply = ctl.reload(accept_shrink);
                        if let Some(n) = &notifier {
                            let status = if reply.ok { ctl.summary() } else { "last reload refused".into() };
                            notify("STATUS", n.status(&status));
                            notify("READY=1", n.ready());
                        }
                        if let Some(done) = done {
                            let _ = done.send(reply);
                        }
                    }
                    Msg::Sweep => ctl.sweep(),
                    Msg::Source { key } => ctl.source_changed(&key),
                    Msg::Decisions { stream, startup, started, fetched, done } => {
                        ctl.decisions(&stream, startup, started, fetched);
                        let _ = done.send(());
                    }
                    Msg::Escalate { iface, on, id, report } => ctl.escalate(&iface, on, &id, &report),
                    Msg::Stop { done } => {
                        if let Some(n) = &notifier {
                            notify("STOPPING=1", n.stopping());
                        }
                        let _ = done.send(ctl.stop());
                        return;
                    }
                }
            }
        })
        .context("starting the controller thread")?;

    tokio::spawn(control::serve(listener, tx.clone()));
    let ticker = tx.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            // A full queue (the controller busy with a long reload) skips this tick.
            if let Err(mpsc::error::TrySendError::Closed(_)) = ticker.try_send(Msg::Sweep) {
                return;
            }
        }
    });

    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = tx.send(Msg::Reload { accept_shrink: false, done: None }).await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping");
    let (done, result) = oneshot::channel();
    tx.send(Msg::Stop { done }).await.context("the controller stopped early")?;
    let result = result.await.context("the controller stopped early")?;
    let _ = thread.join();
    let _ = metrics_stop.send(());
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    result
}
