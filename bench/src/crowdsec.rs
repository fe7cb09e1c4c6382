//! Part 8: CrowdSec decisions at startup. 100,000 bans (addresses of 198.18.0.0/15) in
//! a real CrowdSec LAPI (1.4.6, in a namespace of the bench's own); `floodgate run`
//! with `[crowdsec]` starts cold (nothing attached) and its first pull puts them all in
//! force. Timed from the service's own log: the pull (the LAPI's answer, read and
//! parsed) and the apply (probe, one generation switch, the held record saved); and
//! the LAPI's answer alone, fetched with curl.

use std::{
    fs,
    net::Ipv4Addr,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use floodgate_lab::{Lapi, Netns, veth_pair};
use serde_json::json;

use crate::{
    report::{Section, median},
    sys::{NS_PREFIX, run_in},
};

const DECISIONS: u32 = 100_000;

pub fn run(quick: bool, floodgate: &Path) -> anyhow::Result<Vec<Section>> {
    let reps = if quick { 1 } else { 3 };
    let ns = Netns::create(&format!("{NS_PREFIX}cs"))?;
    veth_pair((&ns, "fgbcs0", &["10.99.0.1/24"]), (&ns, "fgbcs1", &["10.99.0.2/24"]))?;
    let lapi = Lapi::start_in(&ns).context("starting a CrowdSec LAPI")?;
    let many = floodgate_lab::crowdsec::addresses(
        Ipv4Addr::new(198, 18, 0, 0),
        DECISIONS,
        Duration::from_secs(3600),
    );
    lapi.add_many(&many)?;

    let url = format!("{}v1/decisions/stream?startup=true", lapi.url());
    let key = format!("X-Api-Key: {}", lapi.bouncer_key());
    let mut lapi_alone = Vec::new();
    for _ in 0..reps {
        let out =
            run_in(&ns.name, "curl", &["-sf", "-o", "/dev/null", "-w", "%{time_total}", "-H", &key, &url])?;
        lapi_alone.push(out.trim().parse::<f64>().context("curl's time")?);
    }

    let dir = std::env::temp_dir().join(format!("floodgate-bench-cs-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    lapi.write_bouncer_key(dir.join("bouncer.key"))?;
    let cfg = dir.join("floodgate.toml");
    fs::write(
        &cfg,
        format!(
            "[service]\nstate_dir = \"{}\"\n[metrics]\nenabled = false\n[interface.fgbcs0]\n\
             [crowdsec]\nlapi_url = \"{}\"\napi_key_file = \"bouncer.key\"\n",
            dir.join("state").display(),
            lapi.url()
        ),
    )?;
    let (mut pull, mut apply, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let log = dir.join(format!("run-{rep}.log"));
        let mut svc = start(&ns, floodgate, &cfg, &dir.join("run"), &log)?;
        let line = wait_line(&mut svc, &log, "CrowdSec decisions applied", Duration::from_secs(120));
        // SIGTERM leaves the filter in force; detached so that every rep starts cold.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(svc.id() as libc::c_int, libc::SIGTERM) };
        let _ = svc.wait();
        run_in(&ns.name, &floodgate.display().to_string(), &["detach", "-i", "fgbcs0"])?;
        let _ = fs::remove_dir_all(dir.join("run"));
        let line = line?;
        if !line.contains(&format!("received={DECISIONS}")) {
            bail!("the first pull did not take every decision: {line}");
        }
        pull.push(field(&line, "pull_seconds")?);
        apply.push(field(&line, "apply_seconds")?);
        total.push(field(&line, "seconds")?);
    }
    let _ = fs::remove_dir_all(&dir);

    let mut s = Section::new(
        "8. CrowdSec: 100,000 decisions at startup, pulled from a real LAPI and put in force (s, median)",
        &["what", "seconds"],
    );
    let row = |s: &mut Section, what: &str, v: &[f64]| {
        s.rows.push(vec![what.to_string(), format!("{:.2}", median(v))])
    };
    row(&mut s, "the LAPI's answer alone (curl, startup=true)", &lapi_alone);
    row(&mut s, "floodgate's pull (the answer read and parsed)", &pull);
    row(&mut s, "floodgate's apply (probe, one switch, record saved)", &apply);
    row(&mut s, "pull to in force", &total);
    s.notes.push(format!(
        "{reps} cold starts of `floodgate run` (nothing attached before), release build; the LAPI is CrowdSec 1.4.6 \
         with SQLite; its answer is about 13.8 MB of JSON, the first byte after it has built all of it."
    ));
    s.json = json!({
        "decisions": DECISIONS,
        "lapi_answer_seconds": lapi_alone,
        "pull_seconds": pull,
        "apply_seconds": apply,
        "total_seconds": total,
    });
    Ok(vec![s])
}

fn start(ns: &Netns, floodgate: &Path, cfg: &Path, runtime: &Path, log: &Path) -> anyhow::Result<Child> {
    let out = fs::File::create(log)?;
    ns.command(&floodgate.display().to_string())
        .args(["run", "--config", &cfg.display().to_string()])
        .env("FLOODGATE_RUNTIME_DIR", runtime)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting floodgate run")
}

/// The first log line with `text`, waiting for it.
fn wait_line(svc: &mut Child, log: &Path, text: &str, within: Duration) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        let content = fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = content.lines().find(|l| l.contains(text)) {
            return Ok(l.to_string());
        }
        if let Some(status) = svc.try_wait()? {
            bail!("floodgate run exited ({status}):\n{content}");
        }
        if start.elapsed() > within {
            bail!("no '{text}' within {within:?}:\n{content}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `name=VALUE` of a log line.
fn field(line: &str, name: &str) -> anyhow::Result<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {name} in {line}"))
}
