//! Pins scoped to their network namespace, pins of older versions, ownership of the
//! pin tree, and locks: the `floodgate` binary run in namespaces this test creates
//! (named `fgp-*`), with a pin root of its own under /sys/fs/bpf.

use std::{
    ffi::CString,
    fs,
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::programs::{XdpMode, links::FdLink};
use filter_common::{META_VERSION, map_names};
use floodgate::{
    loader::{self, Capacity},
    maps::{FilterMaps, PinDir},
    pins::{self, PIN_ROOT_ENV},
};
use floodgate_lab::Netns;
use integration_tests::live::{Run, floodgate_bin};
use serde_json::Value;

/// A namespace holding a veth pair `IF` / `IFp` (no route anywhere).
struct Ns {
    ns: Netns,
    iface: String,
}

impl Ns {
    fn new(name: &str, iface: &str) -> Self {
        let ns = Netns::create(name).expect("namespace");
        let peer = format!("{iface}p");
        ns.ip(&["link", "add", iface, "type", "veth", "peer", "name", &peer]).expect("veth");
        ns.ip(&["link", "set", iface, "up"]).unwrap();
        ns.ip(&["link", "set", &peer, "up"]).unwrap();
        Ns { ns, iface: iface.to_string() }
    }

    fn has_xdp(&self, iface: &str) -> bool {
        self.ns.ip(&["-d", "link", "show", "dev", iface]).map(|o| o.contains("prog/xdp")).unwrap_or(false)
    }
}

/// A pin root of the test's own on the host's bpffs, removed (with every pin in it,
/// which detaches what they hold) on drop.
struct Root(PathBuf);

impl Root {
    fn new(name: &str) -> Self {
        let bpffs = Path::new(pins::BPFFS);
        if !pins::is_bpffs(bpffs) {
            fs::create_dir_all(bpffs).unwrap();
            let target = CString::new(pins::BPFFS).unwrap();
            // SAFETY: constant C strings.
            let rc = unsafe {
                libc::mount(
                    c"bpf".as_ptr(),
                    target.as_ptr(),
                    c"bpf".as_ptr(),
                    0,
                    c"mode=0700".as_ptr().cast(),
                )
            };
            assert_eq!(rc, 0, "mounting bpffs: {}", std::io::Error::last_os_error());
        }
        let path = bpffs.join(name);
        remove_tree(&path);
        Root(path)
    }

    fn create(&self) -> &Self {
        fs::DirBuilder::new().mode(0o700).create(&self.0).unwrap();
        self
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        remove_tree(&self.0);
    }
}

fn remove_tree(path: &Path) {
    if fs::symlink_metadata(path).is_ok() {
        let _ = chown(path, 0);
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
        let _ = fs::remove_dir_all(path);
    }
}

fn chown(path: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `floodgate ARGS` in `ns` with the pin root `root` (None: the default), killing
/// it after `timeout`.
fn fg_env(ns: &Ns, root: Option<&str>, args: &[&str], timeout: Duration) -> (Run, Duration) {
    let mut c = ns.ns.command(floodgate_bin().to_str().unwrap());
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    match root {
        Some(r) => c.env(PIN_ROOT_ENV, r),
        None => c.env_remove(PIN_ROOT_ENV),
    };
    let start = Instant::now();
    let child = c.spawn().expect("running floodgate");
    let pid = child.id() as i32;
    // Output is read while the command runs (a full pipe would block it).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(timeout) {
        Ok(out) => (out.unwrap().into(), start.elapsed()),
        Err(_) => {
            // SAFETY: killing our own child (nsenter execs floodgate: same pid).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let r = Run::from(rx.recv().unwrap().unwrap());
            panic!("floodgate {args:?} still running after {timeout:?}; stderr: {}", r.stderr);
        }
    }
}

fn fg(ns: &Ns, root: &Root, args: &[&str]) -> Run {
    fg_env(ns, Some(root.path()), args, Duration::from_secs(60)).0
}

#[track_caller]
fn ok(ns: &Ns, root: &Root, args: &[&str]) -> String {
    let r = fg(ns, root, args);
    assert_eq!(r.code, Some(0), "floodgate {args:?} in {} failed: {}", ns.ns.name, r.stderr);
    r.stdout
}

/// Must fail with one error line; returns it.
#[track_caller]
fn err(ns: &Ns, root: &Root, args: &[&str]) -> String {
    let r = fg(ns, root, args);
    assert_eq!(r.code, Some(1), "floodgate {args:?} in {} should fail: {r:?}", ns.ns.name);
    assert!(r.stderr.starts_with("floodgate: error: "), "error line: {:?}", r.stderr);
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "one line: {:?}", r.stderr);
    r.stderr
}

fn list(ns: &Ns, root: &Root, iface: &str) -> Vec<String> {
    serde_json::from_str(&ok(ns, root, &["blocklist", "list", "-i", iface, "--json"])).unwrap()
}

fn status(ns: &Ns, root: &Root) -> Vec<Value> {
    serde_json::from_str(&ok(ns, root, &["status", "--json"])).unwrap()
}

#[test]
fn pins_are_scoped_to_the_network_namespace() {
    let root = Root::new("fgp-test-ns");
    let a = Ns::new("fgp-3a", "fgp3x");
    let b = Ns::new("fgp-3b", "fgp3x");
    let out = ok(&a, &root, &["attach", "-i", "fgp3x", "--mode", "skb"]);

    // From the other namespace, the same interface name is not attached.
    let e = err(&b, &root, &["blocklist", "add", "-i", "fgp3x", "192.0.2.1"]);
    assert!(e.contains("not attached to fgp3x in this network namespace"), "{e}");
    assert!(e.contains("fgp-3a"), "names where it is attached: {e}");
    let e = err(&b, &root, &["detach", "-i", "fgp3x"]);
    assert!(e.contains("not attached to fgp3x in this network namespace"), "{e}");
    let e = err(&b, &root, &["stats"]);
    assert!(e.contains("not attached to any interface"), "{e}");
    assert!(a.has_xdp("fgp3x"), "a detach from another namespace removed the filter");
    assert!(list(&a, &root, "fgp3x").is_empty(), "an add from another namespace changed the list");
    let a_dir = pins::dir_in(&root.0, &a.ns.path(), "fgp3x").unwrap();
    assert!(out.contains(a_dir.to_str().unwrap()), "attach names its pins: {out}");
    assert!(a_dir.join("link").exists());

    // status lists every filter with its namespace.
    let s = status(&b, &root);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["interface"], "fgp3x");
    assert_eq!(s[0]["netns"], "fgp-3a");
    assert_eq!(s[0]["netns_here"], false);
    assert_eq!(s[0]["state"], "attached");
    let s = status(&a, &root);
    assert_eq!(s[0]["netns_here"], true);
    assert_eq!(s[0]["state"], "attached");

    // Each namespace has its own filter on its own fgp3x.
    ok(&b, &root, &["attach", "-i", "fgp3x", "--mode", "skb"]);
    ok(&b, &root, &["blocklist", "add", "192.0.2.2"]);
    assert_eq!(list(&b, &root, "fgp3x"), ["192.0.2.2/32"]);
    assert!(list(&a, &root, "fgp3x").is_empty());
    assert_eq!(status(&a, &root).len(), 2);
    ok(&b, &root, &["detach", "-i", "fgp3x"]);
    assert!(!b.has_xdp("fgp3x"));
    assert!(a.has_xdp("fgp3x"), "b's detach removed a's filter");

    // Renamed: the filter follows its interface (ifindex), not the old name.
    // Kernels before 6.2 rename only an interface that is down.
    a.ns.ip(&["link", "set", "fgp3x", "down"]).unwrap();
    a.ns.ip(&["link", "set", "fgp3x", "name", "fgp3r"]).unwrap();
    a.ns.ip(&["link", "set", "fgp3r", "up"]).unwrap();
    let s = status(&a, &root);
    assert_eq!(s[0]["state"], "interface renamed to fgp3r", "{s:?}");
    let e = err(&a, &root, &["stats", "-i", "fgp3x"]);
    assert!(e.contains("now named fgp3r"), "{e}");
    ok(&a, &root, &["blocklist", "add", "-i", "fgp3r", "192.0.2.3"]);
    assert_eq!(list(&a, &root, "fgp3r"), ["192.0.2.3/32"]);

    // Gone: deleting the interface leaves pins that no longer filter anything.
    a.ns.ip(&["link", "del", "fgp3r"]).unwrap();
    let s = status(&a, &root);
    assert_eq!(s[0]["state"], "interface gone", "{s:?}");
    assert_eq!(status(&b, &root)[0]["state"], "interface gone");
    let e = err(&a, &root, &["blocklist", "list", "-i", "fgp3x"]);
    assert!(e.contains("no longer exists") && e.contains("`floodgate detach -i fgp3x`"), "{e}");
    // A new interface of the old name is not the filter's.
    a.ns.ip(&["link", "add", "fgp3x", "type", "veth", "peer", "name", "fgp3xp"]).unwrap();
    let e = err(&a, &root, &["blocklist", "add", "-i", "fgp3x", "192.0.2.4"]);
    assert!(e.contains("no longer exists"), "{e}");
    let e = err(&a, &root, &["attach", "-i", "fgp3x", "--mode", "skb"]);
    assert!(e.contains("floodgate detach -i fgp3x"), "{e}");
    ok(&a, &root, &["detach", "-i", "fgp3x"]);
    assert!(!a_dir.exists(), "pins left in {}", a_dir.display());
    assert!(status(&a, &root).is_empty());
}

/// A fixture of the previous layout: `ROOT/IFACE` (no namespace level), the program
/// attached and every map pinned, but META a 24-byte value of layout 3.
/// Pins left by an interface deleted since (a veth of a test killed midway, a
/// container gone) do not make commands without -i ambiguous; `status` still shows
/// them and `detach -i` removes them.
#[test]
fn pins_of_a_deleted_interface_leave_the_live_filter_the_default() {
    let root = Root::new("fgp-test-gone");
    let ns = Ns::new("fgp-5", "fgp5a");
    ns.ns.ip(&["link", "add", "fgp5b", "type", "veth", "peer", "name", "fgp5bp"]).unwrap();
    ns.ns.ip(&["link", "set", "fgp5b", "up"]).unwrap();
    ok(&ns, &root, &["attach", "-i", "fgp5a", "--mode", "skb"]);
    ok(&ns, &root, &["attach", "-i", "fgp5b", "--mode", "skb"]);
    let e = err(&ns, &root, &["blocklist", "add", "192.0.2.5"]);
    assert!(e.contains("several interfaces (fgp5a, fgp5b)"), "{e}");

    ns.ns.ip(&["link", "del", "fgp5b"]).unwrap();
    ok(&ns, &root, &["blocklist", "add", "192.0.2.5"]);
    assert_eq!(list(&ns, &root, "fgp5a"), ["192.0.2.5/32"]);
    let s = status(&ns, &root);
    assert_eq!(s.len(), 2, "status still shows the stale pins: {s:?}");
    ok(&ns, &root, &["detach", "-i", "fgp5b"]);
    assert_eq!(status(&ns, &root).len(), 1);
    ok(&ns, &root, &["detach", "-i", "fgp5a"]);
    assert!(!ns.has_xdp("fgp5a"));
}

fn pin_old_layout(ns: &Ns, dir: &Path) {
    let dir = dir.to_path_buf();
    let iface = ns.iface.clone();
    ns.ns
        .enter(move || {
            let index = loader::ifindex(&iface).unwrap();
            let mut ebpf = loader::load(Capacity::entries(1024), None).unwrap();
            fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
            for (name, map) in ebpf.maps() {
                if !name.starts_with('.') && name != map_names::META {
                    map.pin(dir.join(name)).unwrap();
                }
            }
            let mut old_meta = [0u8; 24];
            old_meta[..4].copy_from_slice(&3u32.to_ne_bytes());
            old_meta[8..12].copy_from_slice(&index.to_ne_bytes());
            raw::pin_array(&dir.join(map_names::META), &old_meta);
            let prog = loader::program(&mut ebpf).unwrap();
            let id = prog.attach(index, XdpMode::Skb).unwrap();
            let link: FdLink = prog.take_link(id).unwrap().try_into().unwrap();
            link.pin(dir.join(pins::LINK_PIN)).unwrap();
        })
        .unwrap();
}

#[test]
fn pins_of_old_versions_detach_and_other_commands_name_the_way_out() {
    let root = Root::new("fgp-test-old");
    root.create();
    let a = Ns::new("fgp-7a", "fgp7x");

    // The previous layout, with a META of another size.
    let old = root.0.join("fgp7x");
    let dir = pins::dir_in(&root.0, &a.ns.path(), "fgp7x").unwrap();
    pin_old_layout(&a, &old);
    assert!(a.has_xdp("fgp7x"), "fixture attached");
    for args in [&["stats", "-i", "fgp7x"][..], &["blocklist", "add", "-i", "fgp7x", "192.0.2.1"], &["stats"]]
    {
        let e = err(&a, &root, args);
        assert!(e.contains("`floodgate detach -i fgp7x`") && e.contains("older floodgate"), "{args:?}: {e}");
    }
    let e = err(&a, &root, &["attach", "-i", "fgp7x", "--mode", "skb"]);
    assert!(e.contains("floodgate detach -i fgp7x"), "{e}");
    let s = status(&a, &root);
    assert_eq!(s[0]["state"], "old layout", "{s:?}");
    let r = fg(&a, &root, &["detach", "-i", "fgp7x"]);
    assert_eq!(r.code, Some(0), "detach of old pins: {r:?}");
    assert!(!a.has_xdp("fgp7x"), "still attached after detach");
    assert!(!old.exists(), "pins left in {}", old.display());

    // This layout, an older META version.
    ok(&a, &root, &["attach", "-i", "fgp7x", "--mode", "skb"]);
    let mut maps = FilterMaps::open(&mut PinDir(&dir)).unwrap();
    let mut meta = maps.core.meta.get(&0, 0).unwrap();
    assert_eq!(meta.version, META_VERSION);
    meta.version = META_VERSION - 1;
    maps.core.meta.set(0, &meta, 0).unwrap();
    drop(maps);
    for args in
        [&["blocklist", "add", "192.0.2.1"][..], &["stats"], &["blocklist", "list"], &["synproxy", "show"]]
    {
        let e = err(&a, &root, args);
        assert!(
            e.contains("`floodgate detach -i fgp7x`")
                && e.contains(&format!("layout version {}", META_VERSION - 1)),
            "{args:?}: {e}"
        );
    }
    let s = status(&a, &root);
    assert!(s[0]["problem"].as_str().unwrap_or("").contains("floodgate detach -i fgp7x"), "{s:?}");
    ok(&a, &root, &["detach", "-i", "fgp7x"]);
    assert!(!a.has_xdp("fgp7x"), "still attached after detach");
    assert!(!dir.exists(), "pins left in {}", dir.display());

    // A current-layout dir whose maps have other value sizes: detach still works.
    ok(&a, &root, &["attach", "-i", "fgp7x", "--mode", "skb"]);
    fs::remove_file(dir.join(map_names::META)).unwrap();
    let mut small = [0u8; 16];
    small[..4].copy_from_slice(&META_VERSION.to_ne_bytes());
    raw::pin_array(&dir.join(map_names::META), &small);
    let e = err(&a, &root, &["blocklist", "add", "192.0.2.1"]);
    assert!(e.contains("metadata of 16 bytes") && e.contains("`floodgate detach -i fgp7x`"), "{e}");
    ok(&a, &root, &["detach", "-i", "fgp7x"]);
    assert!(!a.has_xdp("fgp7x"));
    assert!(!dir.exists());
}

#[test]
fn pins_tree_must_be_roots_and_closed() {
    let a = Ns::new("fgp-6a", "fgp6x");

    // A root pre-created by someone else.
    let root = Root::new("fgp-test-own");
    root.create();
    chown(&root.0, 65534).unwrap();
    let e = err(&a, &root, &["attach", "-i", "fgp6x", "--mode", "skb"]);
    assert!(e.contains("refusing the pin directory") && e.contains("owned by uid 65534"), "{e}");
    assert!(!a.has_xdp("fgp6x"));
    chown(&root.0, 0).unwrap();
    chmod(&root.0, 0o777);
    let e = err(&a, &root, &["attach", "-i", "fgp6x", "--mode", "skb"]);
    assert!(e.contains("writable by group or others"), "{e}");
    assert!(!a.has_xdp("fgp6x"));
    chmod(&root.0, 0o1777);
    let e = err(&a, &root, &["attach", "-i", "fgp6x", "--mode", "skb"]);
    assert!(e.contains("writable by group or others"), "{e}");
    chmod(&root.0, 0o755);

    // Attached, then a directory of the tree handed to another user.
    let out = ok(&a, &root, &["attach", "-i", "fgp6x", "--mode", "skb"]);
    let dir = pins::dir_in(&root.0, &a.ns.path(), "fgp6x").unwrap();
    assert!(out.contains(&format!("pins in {}", dir.display())), "{out}");
    let ns_dir = dir.parent().unwrap();
    assert_eq!(fs::metadata(ns_dir).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    for (d, how) in [(ns_dir, "uid"), (dir.as_path(), "uid"), (dir.as_path(), "mode")] {
        if how == "uid" {
            chown(d, 65534).unwrap();
        } else {
            chmod(d, 0o757);
        }
        for args in
            [&["blocklist", "add", "192.0.2.1"][..], &["stats", "-i", "fgp6x"], &["detach", "-i", "fgp6x"]]
        {
            let e = err(&a, &root, args);
            assert!(e.contains(&format!("refusing the pin directory {}", d.display())), "{args:?}: {e}");
        }
        chown(d, 0).unwrap();
        chmod(d, 0o700);
    }
    assert!(a.has_xdp("fgp6x"));
    ok(&a, &root, &["detach", "-i", "fgp6x"]);

    // FLOODGATE_PIN_ROOT off a bpffs: refused, and nothing mounted over its parent.
    let tmp = PathBuf::from("/tmp/fgp-test-notbpf");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).unwrap();
    let pins_root = tmp.join("pins");
    let (r, _) =
        fg_env(&a, Some(pins_root.to_str().unwrap()), &["attach", "-i", "fgp6x"], Duration::from_secs(60));
    let mounted = pins::is_bpffs(&tmp);
    if mounted {
        // SAFETY: unmounting what the command under test wrongly mounted.
        unsafe { libc::umount2(CString::new(tmp.to_str().unwrap()).unwrap().as_ptr(), libc::MNT_DETACH) };
    }
    let _ = fs::remove_dir_all(&tmp);
    assert!(!mounted, "a bpffs was mounted over {}", tmp.display());
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("is not on a bpffs"), "{}", r.stderr);
    assert!(!a.has_xdp("fgp6x"));

    // The default root: floodgate mounts bpffs with mode 0700. In a mount namespace of
    // its own, with whatever is at /sys/fs/bpf unmounted there only.
    let bin = floodgate_bin();
    let script = format!(
        "while umount -l /sys/fs/bpf 2>/dev/null; do :; done; \
         {bin} attach -i fgp6x --mode skb >/dev/null || exit 1; \
         stat -c %a /sys/fs/bpf; stat -c %a /sys/fs/bpf/floodgate; \
         {bin} detach -i fgp6x >/dev/null",
        bin = bin.display()
    );
    let out = Command::new("nsenter")
        .arg(format!("--net={}", a.ns.path().display()))
        .args(["--", "unshare", "--mount", "--propagation", "private", "sh", "-c", &script])
        .env_remove(PIN_ROOT_ENV)
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, Some(0), "{r:?}");
    // The kernel always adds the sticky bit to a bpffs root (1700).
    let modes: Vec<u32> =
        r.stdout.split_whitespace().map(|m| u32::from_str_radix(m, 8).unwrap() & 0o777).collect();
    assert_eq!(modes, [0o700, 0o700], "{r:?}");
    assert!(!a.has_xdp("fgp6x"));
}

#[test]
fn pins_lock_readers_never_wait_and_writers_name_the_holder() {
    let root = Root::new("fgp-test-lock");
    let a = Ns::new("fgp-5a", "fgp5x");
    ok(&a, &root, &["attach", "-i", "fgp5x", "--mode", "skb"]);
    ok(&a, &root, &["blocklist", "add", "--ttl", "1s", "192.0.2.50"]);
    ok(&a, &root, &["blocklist", "add", "192.0.2.51"]);
    ok(&a, &root, &["limit", "set", "--pps", "100000"]);
    std::thread::sleep(Duration::from_millis(1500));
    let mut dir = pins::dir_in(&root.0, &a.ns.path(), "fgp5x").unwrap();
    if !dir.exists() {
        // floodgate before namespace scoping (to see this test fail on it).
        dir = root.0.join("fgp5x");
    }

    // This test process holds the writer lock, as a stopped writer would.
    let held = fs::File::open(&dir).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);

    let quick = Duration::from_secs(5);
    for args in [
        &["stats", "--json"][..],
        &["blocklist", "list", "--json"],
        &["allowlist", "list"],
        &["top", "--json"],
        &["status"],
        &["limit", "show"],
        &["rule", "list"],
        &["policy", "show"],
        &["synproxy", "show"],
    ] {
        let (r, took) = fg_env(&a, Some(root.path()), args, quick);
        assert_eq!(r.code, Some(0), "{args:?} under a held lock: {r:?}");
        assert!(took < quick, "{args:?} took {took:?}");
    }
    assert_eq!(list(&a, &root, "fgp5x"), ["192.0.2.51/32"], "the expired entry is not listed");
    // ... and still stored: readers do not sweep.
    let maps = FilterMaps::open(&mut PinDir(&dir)).unwrap();
    assert_eq!(maps.lists.expiry.keys().count(), 1, "a reader swept the expired entry");

    // A writer waits for the lock, a bounded time, then names who holds it.
    let (r, took) =
        fg_env(&a, Some(root.path()), &["blocklist", "add", "192.0.2.9"], Duration::from_secs(30));
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains(&format!("pid {}", std::process::id())), "names the holder: {}", r.stderr);
    assert!(r.stderr.contains("locked by another floodgate command"), "{}", r.stderr);
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(20), "waited {took:?}");
    drop(held);

    ok(&a, &root, &["blocklist", "add", "192.0.2.9"]);
    let mut now = list(&a, &root, "fgp5x");
    now.sort();
    assert_eq!(now, ["192.0.2.51/32", "192.0.2.9/32"]);
    assert_eq!(maps.lists.expiry.keys().count(), 0, "the writer swept the expired entry");

    // A real writer stopped (SIGSTOP) while it holds the lock, in the middle of a load.
    let file = std::env::temp_dir().join("fgp-test-lock-load.txt");
    // Long enough to be caught holding the lock; TCG (FLOODGATE_VM) loads far slower.
    let n = if std::env::var_os("FLOODGATE_VM").is_some() { 60_000u32 } else { 300_000 };
    let text: String = (0..n).map(|i| format!("10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255)).collect();
    fs::write(&file, text).unwrap();
    let mut c = a.ns.command(floodgate_bin().to_str().unwrap());
    c.args(["blocklist", "load", "-i", "fgp5x", file.to_str().unwrap()])
        .env(PIN_ROOT_ENV, root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut writer = c.spawn().unwrap();
    // nsenter execs floodgate in its own process: the child's pid is floodgate's.
    let pid = writer.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !holds_flock(pid) {
        assert!(Instant::now() < deadline, "the load never took the lock");
        assert!(writer.try_wait().unwrap().is_none(), "the load finished before it could be stopped");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    for args in [&["stats", "--json"][..], &["blocklist", "list", "--json"], &["status"]] {
        let (r, _) = fg_env(&a, Some(root.path()), args, quick);
        assert_eq!(r.code, Some(0), "{args:?} with a stopped writer: {r:?}");
    }
    let (r, took) =
        fg_env(&a, Some(root.path()), &["allowlist", "add", "192.0.2.10"], Duration::from_secs(30));
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains(&format!("pid {pid}")), "names the stopped writer: {}", r.stderr);
    assert!(took < Duration::from_secs(20), "waited {took:?}");
    assert!(writer.wait().unwrap().success(), "the load failed after SIGCONT");
    let _ = fs::remove_file(&file);
    let s = status(&a, &root);
    assert_eq!(s[0]["lists"]["blocklist"]["ipv4"], n + 2, "{s:?}");
    ok(&a, &root, &["detach", "-i", "fgp5x"]);
}

/// Whether `pid` holds a flock, per /proc/locks.
fn holds_flock(pid: u32) -> bool {
    let text = fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"FLOCK") && f.get(4) == Some(&pid.to_string().as_str())
    })
}

/// Raw bpf(2): an array map with a value size of the test's choosing, pinned.
mod raw {
    use super::*;

    fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> i64 {
        // SAFETY: a zeroed bpf_attr-sized buffer whose pointers are live.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128usize) };
        assert!(rc >= 0, "bpf({cmd}): {}", std::io::Error::last_os_error());
        rc
    }

    pub fn pin_array(path: &Path, value: &[u8]) {
        let mut attr = [0u64; 16];
        // map_type ARRAY (2), key_size 4; value_size, max_entries 1.
        attr[0] = 2 | (4 << 32);
        attr[1] = value.len() as u64 | (1 << 32);
        let fd = bpf(0, &mut attr) as i32;
        let key = 0u32;
        let mut attr = [0u64; 16];
        attr[0] = fd as u64;
        attr[1] = &key as *const u32 as u64;
        attr[2] = value.as_ptr() as u64;
        bpf(2, &mut attr);
        let c = CString::new(path.to_str().unwrap()).unwrap();
        let mut attr = [0u64; 16];
        attr[0] = c.as_ptr() as u64;
        attr[1] = fd as u64;
        bpf(6, &mut attr);
        // SAFETY: our fd; the pin keeps the map.
        unsafe { libc::close(fd) };
    }
}
