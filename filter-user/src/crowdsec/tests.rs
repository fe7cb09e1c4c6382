use std::time::Duration;

use super::*;

fn cfg() -> CrowdSec {
    CrowdSec {
        lapi_url: "http://127.0.0.1:8080/".into(),
        api_key_file: None,
        ca_file: None,
        cert_file: None,
        key_file: None,
        poll: Duration::from_secs(10),
        types: vec!["ban".into()],
        scopes: vec![Scope::Ip, Scope::Range],
        skip_origins: vec!["capi".into()],
        interfaces: Vec::new(),
        report: None,
    }
}

fn d(id: i64, scope: &str, value: &str, duration: &str) -> Decision {
    Decision {
        id,
        origin: "cscli".into(),
        kind: "ban".into(),
        scope: scope.into(),
        value: value.into(),
        duration: duration.into(),
        scenario: "manual".into(),
    }
}

const S: u64 = 1_000_000_000;

#[test]
fn go_durations() {
    let ok = |t: &str| parse_go_duration(t).unwrap();
    assert_eq!(ok("3h59m55.5s"), (false, Duration::from_secs_f64(3.0 * 3600.0 + 59.0 * 60.0 + 55.5)));
    assert_eq!(ok("250ms"), (false, Duration::from_millis(250)));
    assert_eq!(ok("1m0s"), (false, Duration::from_secs(60)));
    assert_eq!(ok("-1.5s"), (true, Duration::from_millis(1500)));
    assert_eq!(ok("0s"), (false, Duration::ZERO));
    assert_eq!(ok("0"), (false, Duration::ZERO));
    assert_eq!(ok("1.5µs"), (false, Duration::from_nanos(1500)));
    for bad in ["", "5", "h", "1x", "1.2.3s", "--1s"] {
        assert_eq!(parse_go_duration(bad), None, "{bad}");
    }
    assert_eq!(remaining(&d(1, "Ip", "192.0.2.1", "-3s")), None);
    assert_eq!(remaining(&d(1, "Ip", "192.0.2.1", "0s")), None);
    assert_eq!(remaining(&d(1, "Ip", "192.0.2.1", "2s")), Some(Duration::from_secs(2)));
}

#[test]
fn the_stream_as_the_lapi_sends_it() {
    let body = r#"{"deleted":null,"new":[{"duration":"3h59m59.8s","id":1,"origin":"cscli",
        "scenario":"manual 'ban' from 'x'","scope":"Ip","type":"ban","value":"192.0.2.5","uuid":"u"}]}"#;
    let s: Stream = serde_json::from_str(body).unwrap();
    assert!(s.deleted.is_empty());
    assert_eq!(s.new.len(), 1);
    assert_eq!((s.new[0].id, s.new[0].value.as_str(), s.new[0].kind.as_str()), (1, "192.0.2.5", "ban"));
    let empty: Stream = serde_json::from_str(r#"{"new":null,"deleted":null}"#).unwrap();
    assert!(empty.new.is_empty() && empty.deleted.is_empty());
}

#[test]
fn the_filter_takes_bans_on_addresses_and_ranges_only() {
    let f = Filter::new(&cfg());
    let ok = |scope, net: &str| Ok((scope, net.parse().unwrap()));
    assert_eq!(f.accept(&d(1, "Ip", "192.0.2.5", "1h")), ok(Scope::Ip, "192.0.2.5/32"));
    assert_eq!(f.accept(&d(1, "ip", "2001:DB8:0::1", "1h")), ok(Scope::Ip, "2001:db8::1/128"));
    // The IPv4 source an IPv4-mapped address names.
    assert_eq!(f.accept(&d(1, "Ip", "::ffff:192.0.2.1", "1h")), ok(Scope::Ip, "192.0.2.1/32"));
    // Host bits of a range are cleared, as the blocklist stores it.
    assert_eq!(f.accept(&d(1, "Range", "198.51.100.7/24", "1h")), ok(Scope::Range, "198.51.100.0/24"));
    assert_eq!(f.accept(&d(1, "Country", "FR", "1h")), Err(Skip::Scope("country".into())));
    let captcha = Decision { kind: "captcha".into(), ..d(1, "Ip", "192.0.2.5", "1h") };
    assert_eq!(f.accept(&captcha), Err(Skip::Type("captcha".into())));
    let capi = Decision { origin: "CAPI".into(), ..d(1, "Ip", "192.0.2.5", "1h") };
    assert_eq!(f.accept(&capi), Err(Skip::Origin("capi".into())));
    for bad in ["192.0.2.0/24", "example.org", ""] {
        assert_eq!(f.accept(&d(1, "Ip", bad, "1h")), Err(Skip::Value), "{bad}");
    }
    assert_eq!(f.accept(&d(1, "Range", "192.0.2.5", "1h")), Err(Skip::Value));
    let only_ip = Filter::new(&CrowdSec { scopes: vec![Scope::Ip], ..cfg() });
    assert_eq!(only_ip.accept(&d(1, "Range", "198.51.100.0/24", "1h")), Err(Skip::Scope("range".into())));
}

#[test]
fn decisions_are_keyed_by_what_they_ban_not_by_id() {
    let f = Filter::new(&cfg());
    let mut t = Table::default();
    let net: IpNet = "192.0.2.5/32".parse().unwrap();
    let delta =
        t.apply(&Stream { new: vec![d(1, "Ip", "192.0.2.5", "10s")], deleted: vec![] }, true, &f, 100 * S);
    assert_eq!((delta.received, delta.touched.clone()), (1, vec![net]));
    assert_eq!(t.want(&net, 100 * S), Some(110 * S));
    // A longer decision on the same value replaces it (the LAPI sends the longest).
    let _ =
        t.apply(&Stream { new: vec![d(2, "Ip", "192.0.2.5", "1m")], deleted: vec![] }, false, &f, 101 * S);
    assert_eq!(t.want(&net, 101 * S), Some(161 * S));
    // A range decision on the same prefix is its own: the prefix stays banned while
    // either lasts.
    let _ = t.apply(
        &Stream { new: vec![d(3, "Range", "192.0.2.5/32", "2m")], deleted: vec![] },
        false,
        &f,
        101 * S,
    );
    assert_eq!((t.len(), t.prefixes()), (2, 1));
    // Deleted under another id than sent: by value it goes.
    let gone = Stream { new: vec![], deleted: vec![d(7, "Range", "192.0.2.5/32", "-1s")] };
    let delta = t.apply(&gone, false, &f, 102 * S);
    assert_eq!((delta.deleted, delta.touched.clone()), (1, vec![net]));
    assert_eq!(t.want(&net, 102 * S), Some(161 * S));
    // The same deletion again (the LAPI repeats recent ones) changes nothing.
    let delta = t.apply(&gone, false, &f, 103 * S);
    assert_eq!(delta.deleted, 0);
    // A deletion of a value never banned changes nothing.
    let other = Stream { new: vec![], deleted: vec![d(9, "Ip", "192.0.2.9", "-1s")] };
    assert!(t.apply(&other, false, &f, 103 * S).touched.is_empty());
    // Expiry removes it from the table.
    assert_eq!(t.expire(162 * S), vec![net]);
    assert!(t.is_empty());
}

#[test]
fn a_startup_pull_replaces_the_table_and_skips_are_counted() {
    let f = Filter::new(&cfg());
    let mut t = Table::default();
    let first =
        Stream { new: vec![d(1, "Ip", "192.0.2.1", "1h"), d(2, "Ip", "192.0.2.2", "1h")], deleted: vec![] };
    let _ = t.apply(&first, true, &f, 0);
    let s = Stream {
        new: vec![
            d(2, "Ip", "192.0.2.2", "1h"),
            d(3, "Range", "198.51.100.0/24", "1h"),
            d(4, "AS", "64496", "1h"),
        ],
        // A startup pull's deletions are every expired decision stored: ignored.
        deleted: vec![d(2, "Ip", "192.0.2.2", "-5s")],
    };
    let delta = t.apply(&s, true, &f, 0);
    // The one the startup pull no longer carries is touched (to be lifted).
    let nets: Vec<String> = delta.touched.iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["192.0.2.1/32", "192.0.2.2/32", "198.51.100.0/24"]);
    assert_eq!(t.want(&"192.0.2.1/32".parse().unwrap(), 0), None);
    assert!(t.want(&"192.0.2.2/32".parse().unwrap(), 0).is_some());
    assert_eq!(delta.skipped, vec![Skip::Scope("as".into())]);
    assert_eq!((t.len(), t.prefixes()), (2, 2));
    assert_eq!(t.wanted(0).len(), 2);
}
