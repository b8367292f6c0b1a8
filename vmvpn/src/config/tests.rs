use super::*;

const GOOD: &str = r#"
[host]
name = "h1"
address = "10.77.1.1/24"
control_socket = "/tmp/h1.sock"

[[lan]]
name = "lan1"
segment = "192.168.100.0/24"
tap = "vl1"
secret_file = "/etc/vmvpn/lan1.key"
peers = ["10.77.1.2:7401", "10.77.1.3:7401"]
"#;

fn err(text: &str) -> String {
    Config::parse(text, Path::new("host.toml"))
        .expect_err("must fail")
        .to_string()
}

#[test]
fn parses_the_documented_example() {
    let c = Config::parse(GOOD, Path::new("host.toml")).expect("valid");
    assert_eq!(c.host.name.0, "h1");
    assert_eq!(*c.host.port.get_ref(), DEFAULT_PORT);
    assert_eq!(c.host.address.prefix, 24);
    assert_eq!(c.lans[0].peers.len(), 2);
    assert_eq!(c.lans[0].tap.get_ref().0, "vl1");
    assert_eq!(c.host_id(), crate::proto::crypto::host_id("h1"));
    assert_eq!(c.control_socket(), PathBuf::from("/tmp/h1.sock"));
    assert_eq!(c.mac_age(0), Duration::from_secs(300));
    assert_eq!(c.lans[0].flood, crate::engine::flood::FloodMode::Auto);
    let g = c.multicast_group(0, 0x0102_0304, 7401).expect("group");
    assert_eq!(g, SocketAddr::from(([239, 77, 3, 4], 7401)));
    let t = c.telemetry.accounting();
    assert!(t.probes && t.flows && t.link_speed_bps.is_none());
    assert!(
        c.host.offload && !c.host.realtime,
        "offloads on, real-time off by default"
    );
    let c = Config::parse(
        &GOOD.replace("[host]\n", "[host]\nrealtime = true\n"),
        Path::new("host.toml"),
    )
    .expect("valid");
    assert!(c.host.realtime);
    // Data-plane threads: "auto" by default (cores - 1, from 1 to 4), a count of 1 to 4.
    use super::host::Threads;
    let threads = |v: &str| {
        Config::parse(
            &GOOD.replace("[host]\n", &format!("[host]\nthreads = {v}\n")),
            Path::new("host.toml"),
        )
        .map(|c| c.host.threads)
    };
    assert_eq!(
        Config::parse(GOOD, Path::new("host.toml"))
            .expect("valid")
            .host
            .threads,
        Threads::Auto
    );
    assert_eq!(threads("\"auto\"").expect("auto"), Threads::Auto);
    assert_eq!(threads("2").expect("2"), Threads::Count(2));
    assert_eq!(threads("4").expect("4"), Threads::Count(4));
    assert_eq!(
        [0, 1, 2, 3, 4, 5, 16].map(|c| Threads::Auto.resolve(c)),
        [1, 1, 1, 2, 3, 4, 4]
    );
    assert_eq!(Threads::Count(1).resolve(16), 1);
    for bad in ["0", "5", "-1", "\"many\"", "true"] {
        let e = threads(bad).expect_err("refused").to_string();
        assert!(
            e.contains("1, 2, 3, 4 or \"auto\"") && e.contains("line 3"),
            "threads = {bad}: {e}"
        );
    }
    // Flow ports: 15 by default, 0 to 15.
    let flow_ports = |v: &str| {
        Config::parse(
            &GOOD.replace("[host]\n", &format!("[host]\nflow_ports = {v}\n")),
            Path::new("host.toml"),
        )
        .map(|c| *c.host.flow_ports.get_ref())
    };
    assert_eq!(
        *Config::parse(GOOD, Path::new("host.toml"))
            .expect("valid")
            .host
            .flow_ports
            .get_ref(),
        15
    );
    assert_eq!(flow_ports("0").expect("0"), 0);
    assert_eq!(flow_ports("15").expect("15"), 15);
    for bad in ["16", "300"] {
        let e = flow_ports(bad).expect_err("refused").to_string();
        assert!(
            e.contains("host.flow_ports") && e.contains("0") && e.contains("15"),
            "flow_ports = {bad}: {e}"
        );
    }
    let c = Config::parse(
        &format!("{GOOD}\n[telemetry]\nprobes = false\nlink_speed_mbps = 1000\n"),
        Path::new("host.toml"),
    )
    .expect("valid");
    let t = c.telemetry.accounting();
    assert!(!t.probes && t.flows && t.link_speed_bps == Some(1_000_000_000));
    for (name, want) in [
        ("aes-256-gcm", crate::proto::crypto::Cipher::Aes256Gcm),
        ("none", crate::proto::crypto::Cipher::None),
    ] {
        let text = GOOD.replace(
            "tap = \"vl1\"",
            &format!("tap = \"vl1\"\ncipher = \"{name}\""),
        );
        let c = Config::parse(&text, Path::new("host.toml")).expect("valid");
        assert_eq!((c.lans[0].cipher, c.lans[0].cipher.name()), (want, name));
    }
    let e = err(&GOOD.replace("tap = \"vl1\"", "tap = \"vl1\"\ncipher = \"rot13\""));
    assert!(e.contains("aes-256-gcm") && e.contains("none"), "{e}");
    let e = err(&format!("{GOOD}\n[telemetry]\nflow = false\n"));
    assert!(e.contains("unknown field `flow`"), "{e}");
    let e = err(&GOOD.replace("[host]\n", "[host]\nmulticast_range = \"10.0.0.0/8\"\n"));
    assert!(e.contains("not an IPv4 multicast range"), "{e}");
    let e = err(&GOOD.replace("tap = \"vl1\"", "tap = \"vl1\"\nflood = \"sometimes\""));
    assert!(
        e.contains("unknown variant `sometimes`") && e.contains("line 11"),
        "{e}"
    );
}

#[test]
fn every_number_out_of_range_is_refused_with_its_line_and_range() {
    let cases: &[(&str, &str, &str)] = &[
        ("[host]\n", "[host]\nport = 0\n", "`host.port`"),
        (
            "[host]\n",
            "[host]\nunderlay_mtu = 100\n",
            "`host.underlay_mtu`",
        ),
        (
            "[host]\n",
            "[host]\nmulticast_range = \"239.0.0.0/4\"\n",
            "`host.multicast_range`",
        ),
        (
            "tap = \"vl1\"",
            "tap = \"vl1\"\nmac_capacity = 1000000000000",
            "`lan[0].mac_capacity`",
        ),
        (
            "tap = \"vl1\"",
            "tap = \"vl1\"\nmac_capacity = 0",
            "`lan[0].mac_capacity`",
        ),
        (
            "tap = \"vl1\"",
            "tap = \"vl1\"\nmac_age_s = 18446744073709551615",
            "`lan[0].mac_age_s`",
        ),
        ("tap = \"vl1\"", "tap = \"vl1\"\nmtu = 9001", "`lan[0].mtu`"),
    ];
    for (from, to, key) in cases {
        let e = err(&GOOD.replace(from, to));
        assert!(
            e.contains(key) && (e.contains("out of range") || e.contains("prefix of")),
            "{key}: {e}"
        );
        assert!(e.starts_with("host.toml:"), "{e}");
    }
    for (t, key) in [
        ("vm_table_size = 1000000000000", "`telemetry.vm_table_size`"),
        (
            "flow_table_size = 1000000000000",
            "`telemetry.flow_table_size`",
        ),
        ("flow_table_size = 0", "`telemetry.flow_table_size`"),
        ("flow_idle_s = 0", "`telemetry.flow_idle_s`"),
        (
            "report_interval_s = 18446744073709551615",
            "`telemetry.report_interval_s`",
        ),
        ("link_speed_mbps = 0", "`telemetry.link_speed_mbps`"),
    ] {
        let e = err(&format!("{GOOD}\n[telemetry]\n{t}\n"));
        assert!(
            e.contains(&format!("host.toml:15: {key}")) && e.contains("out of range"),
            "{e}"
        );
    }
    // The edges of each range are accepted.
    let edges = format!(
        "{}\n[telemetry]\nvm_table_size = 65536\nflow_table_size = 1048576\nreport_interval_s = 0\nflow_idle_s = 86400\n",
        GOOD.replace("[host]\n", "[host]\nport = 65535\nunderlay_mtu = 9000\n")
            .replace(
                "tap = \"vl1\"",
                "tap = \"vl1\"\nmac_capacity = 1048576\nmac_age_s = 86400\nmtu = 9000"
            )
    );
    let c = Config::parse(&edges, Path::new("host.toml")).expect("edges are valid");
    assert_eq!(c.telemetry.report_every(), None);
    assert_eq!(c.mac_capacity(0), 1_048_576);
}

#[test]
fn alarm_receivers_take_https_an_internal_ca_and_never_an_empty_recipient_list() {
    let with = |alarms: &str| format!("{GOOD}\n[alarms]\n{alarms}\n");
    let c = Config::parse(
        &with("alertmanager = [\"https://am.example:9093\"]\nwebhook = [\"http://10.0.0.1:80/x\"]"),
        Path::new("host.toml"),
    )
    .expect("https and http");
    assert_eq!(
        c.alarms.receivers().alertmanager[0].scheme_str(),
        Some("https")
    );
    let e = err(&with("webhook = [\"ftp://10.0.0.1/x\"]"));
    assert!(e.contains("https://HOST:PORT"), "{e}");
    let e = err(&with(
        "[alarms.email]\nsmtp = \"10.0.0.7:25\"\nfrom = \"v@example.org\"\nto = []",
    ));
    assert!(e.contains("no recipient") && e.contains("host.toml"), "{e}");
    let e = err(&with("ca_file = \"/nonexistent/ca.pem\""));
    assert!(
        e.contains("`alarms.ca_file`") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
    let dir = std::env::temp_dir().join(format!("vmvpn-cfg-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").expect("write");
    let e = err(&with(&format!("ca_file = \"{}\"", ca.display())));
    assert!(e.contains("no certificate"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_dashboard_off_loopback_needs_the_login_of_web() {
    let local = GOOD.replace("[host]\n", "[host]\nweb = \"127.0.0.1:8080\"\n");
    let c = Config::parse(&local, Path::new("host.toml")).expect("loopback: no login");
    assert!(c.web_credentials().is_none());
    let remote = GOOD.replace("[host]\n", "[host]\nweb = \"0.0.0.0:8443\"\n");
    let e = err(&remote);
    assert!(
        e.contains("`host.web`") && e.contains("[web]") && e.contains("host.toml:"),
        "{e}"
    );
    let dir = std::env::temp_dir().join(format!("vmvpn-cfg-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pw = dir.join("web.password");
    std::fs::write(&pw, "twelve chars or more\n").expect("write");
    let with = format!(
        "{remote}\n[web]\nuser = \"ops\"\npassword_file = \"{}\"\n",
        pw.display()
    );
    let c = Config::parse(&with, Path::new("host.toml")).expect("with [web]");
    assert!(c.web_credentials().is_some());
    std::fs::write(&pw, "short\n").expect("write");
    let e = err(&with);
    assert!(
        e.contains("`web.password_file`") && e.contains("at least 12"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn long_values_are_cut_in_errors() {
    let e = err(&GOOD.replace(
        "name = \"h1\"",
        &format!("name = \"{}\"", "h".repeat(100_000)),
    ));
    assert!(
        e.len() < 2000 && e.contains("100000 characters"),
        "{} bytes",
        e.len()
    );
    let e = err(&GOOD.replace("vl1", &"v".repeat(100_000)));
    assert!(e.len() < 2000, "{} bytes", e.len());
    let e = err(&format!("{GOOD}\nbogus = \"{}\"\n", "x".repeat(100_000)));
    assert!(
        e.len() < 2000 && e.contains("more characters"),
        "{} bytes",
        e.len()
    );
}

#[test]
fn secret_files_must_be_small_regular_files() {
    for (path, want) in [
        ("/dev/zero", "not a regular file"),
        ("/tmp", "not a regular file"),
    ] {
        let c = Config::parse(
            &GOOD.replace("/etc/vmvpn/lan1.key", path),
            Path::new("host.toml"),
        )
        .expect("valid");
        let e = c
            .read_secret(0, Some(GOOD))
            .map(|_| ())
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("host.toml:11: `lan[0].secret_file`") && e.contains(want),
            "{e}"
        );
    }
}

#[test]
fn unknown_key_names_line_and_expected_keys() {
    let e = err(&GOOD.replace("tap = \"vl1\"", "tap = \"vl1\"\ntpa = 1"));
    assert!(
        e.contains("line 11") && e.contains("unknown field `tpa`") && e.contains("expected one of"),
        "{e}"
    );
}

#[test]
fn bad_values_say_what_is_expected() {
    let e = err(&GOOD.replace("10.77.1.1/24", "10.77.1.1"));
    assert!(e.contains("line 4") && e.contains("prefix length"), "{e}");
    let e = err(&GOOD.replace("\"10.77.1.3:7401\"", "\"10.77.1.3\""));
    assert!(e.contains("line 12"), "{e}");
    let e = err(&GOOD.replace("vl1", "a-very-long-tap-name"));
    assert!(e.contains("line 10") && e.contains("1 to 15"), "{e}");
    let e = err(&GOOD.replace("name = \"h1\"", "name = \"h 1\""));
    assert!(e.contains("line 3") && e.contains("A-Z a-z 0-9"), "{e}");
}

#[test]
fn duplicate_lans_and_taps_are_refused_with_their_line() {
    let two = format!(
        "{GOOD}\n[[lan]]\nname = \"lan1\"\nsegment = \"10.0.0.0/8\"\ntap = \"vl2\"\nsecret_file = \"x\"\n"
    );
    let e = err(&two);
    assert!(
        e.contains("host.toml:15: `lan[1].name`") && e.contains("already defined"),
        "{e}"
    );
    let two = two.replace(
        "name = \"lan1\"\nsegment = \"10.0.0.0/8\"\ntap = \"vl2\"",
        "name = \"lan2\"\nsegment = \"10.0.0.0/8\"\ntap = \"vl1\"",
    );
    let e = err(&two);
    assert!(e.contains("host.toml:17: `lan[1].tap`"), "{e}");
}

#[test]
fn no_lan_and_bad_bulletin_fingerprint_are_clear_errors() {
    let e = err("[host]\nname = \"h1\"\naddress = \"10.0.0.1/24\"\n");
    assert!(e.contains("no [[lan]]"), "{e}");
    let e = err(&format!(
        "{GOOD}\n[bulletin]\nserver = \"10.0.0.1:7400\"\nfingerprint = \"sha256:12\"\n"
    ));
    assert!(e.contains("line 16") && e.contains("64 hex digits"), "{e}");
    let fp = format!("sha256:{}", "ab".repeat(32));
    let c = Config::parse(
        &format!("{GOOD}\n[bulletin]\nserver = \"10.0.0.1:7400\"\nfingerprint = \"{fp}\"\n"),
        Path::new("h.toml"),
    )
    .expect("valid");
    assert_eq!(
        c.bulletin.and_then(|b| b.fingerprint).map(|f| f.0),
        Some(fp.clone())
    );
    // Several bulletins: one fingerprint for all, or one each; mismatches are explained.
    let several = |tail: &str| {
        format!("{GOOD}\n[bulletin]\nservers = [\"10.0.0.1:7400\", \"10.0.0.2:7400\"]\n{tail}")
    };
    let fp2 = format!("sha256:{}", "cd".repeat(32));
    let c = Config::parse(
        &several(&format!(
            "fingerprints = [\"{fp}\", \"{fp2}\"]\nreturn_after_s = 5\n"
        )),
        Path::new("h.toml"),
    )
    .expect("valid");
    let b = c.bulletin.expect("bulletin");
    assert_eq!(b.return_after_s, 5);
    assert_eq!(
        b.servers(),
        [
            ("10.0.0.1:7400".parse().expect("addr"), fp.clone()),
            ("10.0.0.2:7400".parse().expect("addr"), fp2)
        ]
    );
    for (tail, says) in [
        (
            format!("fingerprints = [\"{fp}\"]\n"),
            "1 entries for 2 servers",
        ),
        (String::new(), "pin the bulletin's certificate"),
        (
            format!("fingerprint = \"{fp}\"\nfingerprints = [\"{fp}\", \"{fp}\"]\n"),
            "not both",
        ),
        (
            format!("fingerprint = \"{fp}\"\nserver = \"10.0.0.3:7400\"\n"),
            "server or servers",
        ),
    ] {
        let e = err(&several(&tail));
        assert!(e.contains(says) && e.contains("`bulletin`"), "{tail}: {e}");
    }
}

#[test]
fn secrets_round_trip_and_bad_ones_are_explained() {
    let s = generate_secret().expect("rng");
    assert_eq!(s.len(), 44);
    assert!(parse_secret(&format!("{s}\n")).is_ok());
    assert!(
        parse_secret("not base64!")
            .unwrap_err()
            .contains("not base64")
    );
    assert!(
        parse_secret("AAAA")
            .unwrap_err()
            .contains("3 bytes, expected 32")
    );
    let c = Config::parse(GOOD, Path::new("host.toml")).expect("valid");
    let e = c
        .read_secret(0, Some(GOOD))
        .map(|_| ())
        .expect_err("missing file")
        .to_string();
    assert!(
        e.contains("host.toml:11") && e.contains("vmvpn keygen >"),
        "{e}"
    );
}

#[test]
fn rate_limits_parse_with_defaults_and_bad_ones_name_their_line_and_key() {
    use crate::engine::limits::Direction;
    let text = format!(
        "{GOOD}\n[[lan.limit]]\nmac = \"02:00:00:00:00:01\"\nrate_mbps = 50\ndirection = \"out\"\n\n[[lan.limit]]\nrate_mbps = 400\nburst_kb = 256\n"
    );
    let c = Config::parse(&text, Path::new("host.toml")).expect("valid");
    let s = c.lans[0].limit_specs();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].mac, Some([2, 0, 0, 0, 0, 1]));
    assert_eq!(
        (s[0].rate_bps, s[0].direction),
        (50_000_000, Direction::Out)
    );
    // 20 ms at 50 Mbit/s is 125 000 bytes, over the 64 KiB floor.
    assert_eq!(s[0].burst_bytes, 125_000);
    assert_eq!(s[1].mac, None);
    assert_eq!(
        (s[1].burst_bytes, s[1].direction),
        (256 * 1024, Direction::Both)
    );
    assert_eq!((s[0].shape_ms, s[1].shape_ms), (0, 0));
    let shaped = text.replace("direction = \"out\"", "direction = \"out\"\nshape_ms = 50");
    let c = Config::parse(&shaped, Path::new("host.toml")).expect("valid");
    assert_eq!(c.lans[0].limit_specs()[0].shape_ms, 50);
    let small = format!("{GOOD}\n[[lan.limit]]\nrate_mbps = 1\n");
    let c = Config::parse(&small, Path::new("host.toml")).expect("valid");
    assert_eq!(c.lans[0].limit_specs()[0].burst_bytes, 64 * 1024);
    let limit = |body: &str| format!("{GOOD}\n[[lan.limit]]\n{body}\n");
    for (body, want) in [
        ("rate_mbps = 0", "lan[0].limit[0].rate_mbps"),
        ("rate_mbps = 0", "out of range: expected 1 to 10000000"),
        ("rate_mbps = 10\nburst_kb = 1", "lan[0].limit[0].burst_kb"),
        (
            "rate_mbps = 10\nmac = \"02:00:00:00:01\"",
            "expected a MAC address",
        ),
        (
            "rate_mbps = 10\nmac = \"01:00:5e:00:00:01\"",
            "is a group (multicast) address",
        ),
        (
            "rate_mbps = 10\nvm = \"web1\"",
            "add [libvirt] uri, or give the VM's mac",
        ),
        (
            "rate_mbps = 10\ndirection = \"sideways\"",
            "unknown variant `sideways`",
        ),
        ("rate = 10", "unknown field `rate`"),
        ("rate_mbps = 10\nshape_ms = 20", "shaping is per VM"),
        (
            "rate_mbps = 10\nmac = \"02:00:00:00:00:01\"\ndirection = \"in\"\nshape_ms = 20",
            "direction \"out\" or \"both\"",
        ),
        (
            "rate_mbps = 10\nmac = \"02:00:00:00:00:01\"\nshape_ms = 5000",
            "expected 0 to 1000",
        ),
        (
            "rate_mbps = 10000\nmac = \"02:00:00:00:00:01\"\nshape_ms = 100",
            "queue of 119 MiB; at most 64 MiB",
        ),
    ] {
        let e = err(&limit(body));
        assert!(e.contains(want), "{body}: {e}");
        assert!(e.contains("host.toml:"), "{body}: {e}");
    }
    let twice = format!(
        "{GOOD}\n[[lan.limit]]\nmac = \"02:00:00:00:00:01\"\nrate_mbps = 5\n[[lan.limit]]\nmac = \"02-00-00-00-00-01\"\nrate_mbps = 6\n"
    );
    let e = err(&twice);
    assert!(
        e.contains("lan[0].limit[1].mac") && e.contains("already lan[0].limit[0]"),
        "{e}"
    );
    let e = err(&format!(
        "{GOOD}\n[[lan.limit]]\nrate_mbps = 5\n[[lan.limit]]\nrate_mbps = 6\n"
    ));
    assert!(e.contains("the whole LAN"), "{e}");
}

#[test]
fn the_readme_host_example_parses() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("```toml\n[host]").expect("the example") + "```toml\n".len();
    let end = start + readme[start..].find("```").expect("its end");
    // The one placeholder: a fingerprint is what `bulletin fingerprint` prints.
    let text = readme[start..end].replace("sha256:…", &format!("sha256:{}", "ab".repeat(32)));
    let c = Config::parse(&text, Path::new("README.md"))
        .unwrap_or_else(|e| panic!("the README's example: {e}"));
    let limits = c.lans[0].limit_specs();
    assert_eq!(limits.len(), 1);
    assert_eq!(limits[0].rate_bps, 50_000_000);
}

#[test]
fn libvirt_takes_a_uri_and_refuses_what_is_not_one() {
    let c = Config::parse(
        &format!("{GOOD}\n[libvirt]\nuri = \"test:///default\"\n"),
        Path::new("host.toml"),
    )
    .expect("valid");
    let l = c.libvirt.as_ref().expect("[libvirt]");
    assert_eq!(
        (l.uri.get_ref().as_str(), *l.refresh_s.get_ref()),
        ("test:///default", 30)
    );
    assert_eq!(l.virsh, "virsh");
    for (body, want) in [
        ("uri = \"qemu\"", "expected a libvirt URI"),
        (
            "uri = \"qemu:///system\"\nrefresh_s = 0",
            "libvirt.refresh_s",
        ),
        (
            "uri = \"qemu:///system\"\nevents = true",
            "unknown field `events`",
        ),
        ("refresh_s = 5", "missing field `uri`"),
    ] {
        let e = err(&format!("{GOOD}\n[libvirt]\n{body}\n"));
        assert!(e.contains(want), "{body}: {e}");
    }
}

#[test]
fn a_relay_takes_verifiers_and_hosts_take_relays_with_ports() {
    let verifier = bulletin::proof::Verifier::from_secret(&[7; 32]).to_base64();
    let host = |lines: &str| GOOD.replace("control_socket", &format!("{lines}\ncontrol_socket"));
    let text = host(&format!(
        "relays = [\"203.0.113.7:7402\"]\nrelay = true\nrelay_limit_mbps = 200\n\
         relay_lans = [{{ name = \"lan9\", verifier = \"{verifier}\" }}]"
    ));
    let c = Config::parse(&text, Path::new("host.toml")).expect("valid");
    assert_eq!(
        *c.host.relays[0].get_ref(),
        SocketAddr::from(([203, 0, 113, 7], 7402))
    );
    assert!(c.host.relay);
    assert_eq!(*c.host.relay_port.get_ref(), DEFAULT_RELAY_PORT);
    assert_eq!(*c.host.relay_limit_mbps.get_ref(), 200);
    // Its own LAN from the secret, the other from the verifier, by LAN id.
    let keys = c.relay_keys(&[LanSecret([1; 32])]);
    assert!(keys.contains_key(&crate::proto::crypto::lan_id("lan1")));
    // The key from the verifier is the one a member derives from the secret.
    let member = crate::engine::relays::relay_key_of(&LanSecret([7; 32]));
    let msg = crate::proto::relay::RelayMsg {
        kind: crate::proto::Kind::RelayRequest,
        lan: crate::proto::crypto::lan_id("lan9"),
        sender: 1,
        seq: 1,
        peer: 2,
        port: 0,
    };
    assert_eq!(
        msg.emit(&keys[&crate::proto::crypto::lan_id("lan9")]),
        msg.emit(&member)
    );
    // Off by default.
    let c = Config::parse(GOOD, Path::new("host.toml")).expect("valid");
    assert!(!c.host.relay && c.host.relays.is_empty());

    let e = err(&host(
        "relay = true\nrelay_lans = [{ name = \"lan9\", verifier = \"nope\" }]",
    ));
    assert!(
        e.contains("host.relay_lans[0].verifier") && e.contains("vmvpn verifier"),
        "{e}"
    );
    let e = err(&host("relay = true\nrelay_port = 7401"));
    assert!(
        e.contains("host.relay_port") && e.contains("data port"),
        "{e}"
    );
    let e = err(&host("relay = true\nrelay_limit_mbps = 100001"));
    assert!(
        e.contains("host.relay_limit_mbps") && e.contains("out of range"),
        "{e}"
    );
    let e = err(&host("relays = [\"203.0.113.7\"]"));
    assert!(e.contains("relays"), "{e}");
    let e = err(&host(&format!(
        "relay = true\nrelay_lans = [{{ name = \"lan1\", verifier = \"{verifier}\" }}]"
    )));
    assert!(e.contains("named twice"), "{e}");
}
