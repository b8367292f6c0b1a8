//! The status contract: the keys the README documents, and a round trip through JSON.

use super::sim::*;

/// Every key path of a JSON value, arrays as `[]`, sorted.
fn key_paths(v: &serde_json::Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                key_paths(x, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                key_paths(x, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_status_json_keys_are_the_documented_ones() {
    // The README documents these keys and scripts read them: adding one means updating
    // the README and this list together; removing or renaming one breaks users.
    let mut net = Net::subnets(&[2, 1], FloodMode::Auto);
    net.tick();
    net.advance(Duration::from_secs(2));
    net.send(0, &frame(BCAST, mac(1), b"hello"));
    // The whole status, with a bulletin, so every key is there.
    let (_, st) = sample_status(&net);
    let v = serde_json::to_value(&st).expect("json");
    let mut keys = BTreeSet::new();
    key_paths(&v, "", &mut keys);
    let got: Vec<&str> = keys.iter().map(String::as_str).collect();
    let golden: Vec<&str> = include_str!("../../status/keys.golden").lines().collect();
    if std::env::var_os("VMVPN_BLESS").is_some() {
        // A new field: `VMVPN_BLESS=1 cargo test -p vmvpn contract` writes the key file,
        // and the diff shows what changed for the README.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/status/keys.golden");
        let text: String = got.iter().map(|k| format!("{k}\n")).collect();
        std::fs::write(path, text).expect("write status/keys.golden");
        return;
    }
    let missing: Vec<_> = golden.iter().filter(|k| !keys.contains(**k)).collect();
    let extra: Vec<_> = got.iter().filter(|k| !golden.contains(k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "status keys changed: missing {missing:?}, new {extra:?}"
    );
}

#[test]
fn the_status_contract_reads_back_what_it_writes() {
    // The CLI, /metrics and the reports read the daemon's JSON back into these types: every
    // key must come back, with its value.
    let mut net = Net::subnets(&[2, 1], FloodMode::Auto);
    net.tick();
    net.advance(Duration::from_secs(2));
    net.send(0, &frame(BCAST, mac(1), b"hello"));
    net.advance(Duration::from_secs(2));
    let (st, st2) = sample_status(&net);
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(x: &T) {
        let v = serde_json::to_value(x).expect("json");
        let back: T = serde_json::from_value(v.clone()).expect("reads back");
        assert_eq!(serde_json::to_value(&back).expect("json"), v);
    }
    round_trip(&st);
    round_trip(&st2);
    round_trip(&net.hosts[0].traffic(None, None));
    round_trip(&net.hosts[0].mac_rows(None, net.now));
    // A renamed or missing key is an error, not a zero.
    let mut v = serde_json::to_value(&st).expect("json");
    v["lans"][0]["peers"][0]
        .as_object_mut()
        .expect("peer")
        .remove("path_mtu_bytes");
    let e = serde_json::from_value::<crate::status::Status>(v).expect_err("missing key");
    assert!(e.to_string().contains("path_mtu_bytes"), "{e}");
}

/// Host 0's whole status, without and with a bulletin, as the daemon would report it.
fn sample_status(net: &Net) -> (crate::status::Status, crate::status::Status) {
    let mut lans = net.hosts[0].lan_status(net.now);
    // A limit, so its keys are pinned too (the simulation sets none).
    lans[0].limits = crate::engine::limits::Limits::new(
        &[crate::engine::limits::LimitSpec {
            mac: Some([2, 0, 0, 0, 0, 1]),
            rate_bps: 1_000_000,
            burst_bytes: 65_536,
            direction: crate::engine::limits::Direction::Both,
            shape_ms: 50,
            vm: Some("web1".into()),
        }],
        1514,
    )
    .status();
    // A service, so its keys are pinned too.
    lans[0].services =
        crate::engine::service::Services::new(&[crate::engine::service::ServiceSpec {
            name: "web".into(),
            vip: std::net::IpAddr::from([192, 168, 100, 200]),
            vmac: crate::engine::service::virtual_mac("lan1", "web"),
            backends: vec![crate::engine::service::BackendSpec {
                mac: Some([2, 0, 0, 0, 0, 1]),
                ip: None,
                vm: None,
                weight: 1,
            }],
            ports: Vec::new(),
            policy: crate::engine::service::Policy::LeastLoad,
            probe_from: None,
        }])
        .status(|_| String::new());
    let st = crate::status::Status {
        host: crate::status::HostStatus {
            name: "h0".into(),
            id: 100,
            listen: "0.0.0.0:7401".into(),
            uptime_s: 5,
            version: "x".into(),
            realtime: false,
            threads: 1,
            flow_ports: 8,
        },
        drops: net.hosts[0].host_drops().clone(),
        lans,
        bulletin: None,
        offload: crate::status::OffloadStats::default(),
        queue: crate::status::QueueStats::default(),
        reassembly: net.hosts[0].reassembly_stats(),
        export: Default::default(),
        libvirt: None,
        relay: None,
    };
    let st2 = crate::status::Status {
        bulletin: Some(crate::status::BulletinStatus {
            server: "10.0.0.1:7400".into(),
            state: crate::status::BulletinState::Registered,
            epoch: Some("00ff".into()),
            registered_ago_s: Some(3),
            last_error: None,
            peers: 2,
        }),
        libvirt: Some(crate::status::LibvirtStatus {
            uri: "test:///default".into(),
            domains: 1,
            macs: 1,
            refreshed_ago_s: Some(3),
            refreshes_total: 1,
            errors_total: 0,
            events_total: 0,
            last_error: None,
            unresolved_limits: vec!["web9".into()],
        }),
        export: crate::status::ExportStatus {
            sflow: Some(crate::status::SflowStatus {
                collectors: vec!["10.0.0.9:6343".into()],
                sampling_rate: 512,
                last_error: Some("x".into()),
                ..Default::default()
            }),
            ipfix: Some(crate::status::IpfixStatus {
                collectors: vec!["10.0.0.9:4739".into()],
                records_total: 3,
                ..Default::default()
            }),
            redis: Some(crate::status::RedisStatus {
                server: "redis://10.0.0.9:6379/0".into(),
                connected: true,
                ..Default::default()
            }),
        },
        relay: Some(crate::status::relay::RelayStatus {
            port: 7402,
            pairs: vec![crate::status::relay::PairStatus {
                lan_id: 7,
                hosts: [1, 2],
                port: 40000,
                bound: true,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..st.clone()
    };
    (st, st2)
}
