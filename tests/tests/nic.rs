//! floodgate in native mode on a real NIC driver: two virtio-net NICs that
//! `cargo xtask integration-test vm` joins on a QEMU hub, each moved into its own
//! namespace so frames cross the hub (and virtio_net's XDP path), not loopback.
//!
//! The NICs are found by the MAC addresses the xtask gives them, so this test never
//! touches any other interface. Without them (on the host) it prints why and returns;
//! in the VM (`FLOODGATE_VM` set) their absence is a failure.

use std::path::Path;

use floodgate_lab::Netns;
use integration_tests::live::{Lab, SRV_V4, SRV_V6, packets};

/// Kept in step with NIC_MACS in xtask/src/vm.rs.
const NIC_MACS: [&str; 2] = ["52:54:00:f1:00:01", "52:54:00:f1:00:02"];
const PORT: u16 = 5003;

/// The interface with `mac` driven by virtio_net, in this namespace.
fn virtio_nic(mac: &str) -> Option<String> {
    std::fs::read_dir("/sys/class/net").ok()?.flatten().find_map(|e| {
        let dir = e.path();
        let addr = std::fs::read_to_string(dir.join("address")).ok()?;
        let driver = std::fs::read_link(dir.join("device/driver")).ok()?;
        let is_virtio = driver.file_name().is_some_and(|d| d == "virtio_net");
        (addr.trim() == mac && is_virtio).then(|| e.file_name().to_string_lossy().into_owned())
    })
}

#[test]
fn native_mode_on_virtio_net_drops_blocklisted_sources_across_the_hub() {
    let nics: Vec<_> = NIC_MACS.iter().map(|m| virtio_nic(m)).collect();
    let (Some(srv_if), Some(cli_if)) = (nics[0].clone(), nics[1].clone()) else {
        let why = format!(
            "no virtio_net NIC pair with MACs {} (the NICs `cargo xtask integration-test vm` puts on a QEMU hub)",
            NIC_MACS.join(" and ")
        );
        assert!(std::env::var_os("FLOODGATE_VM").is_none(), "in the VM: {why}");
        println!("nic: skipped: {why}");
        return;
    };
    assert!(Path::new("/sys/class/net").join(&srv_if).exists());

    let srv = Netns::create("fgt-nic-s").expect("server namespace");
    let cli = Netns::create("fgt-nic-c").expect("client namespace");
    for (ns, dev, addrs) in [
        (&srv, &srv_if, [format!("{SRV_V4}/24"), format!("{SRV_V6}/64")]),
        (&cli, &cli_if, ["198.51.100.2/24".into(), "2001:db8:1::2/64".into()]),
    ] {
        floodgate_lab::ip(&["link", "set", dev, "netns", &ns.name]).expect("move NIC");
        for a in &addrs {
            let mut args = vec!["addr", "add", a.as_str(), "dev", dev.as_str()];
            if a.contains(':') {
                args.push("nodad");
            }
            ns.ip(&args).expect("address");
        }
        ns.ip(&["link", "set", dev, "up"]).expect("link up");
    }
    let srv_mac = srv.mac(&srv_if).expect("mac");
    let cli_mac = cli.mac(&cli_if).expect("mac");
    // Dropping the lab detaches floodgate and deletes the namespaces, which returns the
    // NICs to the root namespace.
    let lab = Lab { srv, cli, srv_if, cli_if, srv_mac, cli_mac, env: Vec::new() };

    let out = lab.attach("native");
    assert!(out.contains("native mode"), "virtio_net should take XDP in driver mode: {out}");
    assert!(lab.has_xdp());
    lab.ok(&["blocklist", "add", "-i", &lab.srv_if, "203.0.113.0/24", "2001:db8:bad::/48"]);
    let sink = lab.sink(PORT);
    let before = lab.stats();
    assert_eq!(before["mode"], "native");
    let frames: Vec<Vec<u8>> = ["203.0.113.9", "2001:db8:bad::9", "192.0.2.9", "2001:db8:feed::9"]
        .iter()
        .map(|s| lab.frame(s, PORT))
        .collect();
    // Paced for TCG: the hub drops what the receiving ring cannot take.
    lab.send(&frames, 200, 2_000);
    sink.settle();
    let after = lab.stats();
    assert_eq!(sink.count("203.0.113.9"), 0, "blocked v4 reached the server");
    assert_eq!(sink.count("2001:db8:bad::9"), 0, "blocked v6 reached the server");
    assert_eq!(sink.count("192.0.2.9"), 200, "clean v4 lost");
    assert_eq!(sink.count("2001:db8:feed::9"), 200, "clean v6 lost");
    let dropped = packets(&after, "dropped.blocklist") - packets(&before, "dropped.blocklist");
    assert_eq!(dropped, 400, "exactly the blocked frames were dropped in the driver");

    lab.ok(&["detach", "-i", &lab.srv_if]);
    assert!(!lab.has_xdp(), "detach left an XDP program on {}", lab.srv_if);
}
