//! Live reconfiguration with real daemons: while two VMs ping each other 20 times a
//! second across subnets, `vmvpn reload` puts a rate limit and a `[telemetry]` change in
//! force and adds a static peer, SIGHUP removes it again, and a port change is refused
//! (exit status 1, the reason named, the running port kept). `vmvpn check` shows what a
//! reload would do. The tunnel between the two hosts never re-keys and loses no ping.
//! The bulletin, on SIGHUP, stops serving a LAN removed from its config (its hosts leave
//! it, a ping on another LAN loses nothing), serves one added, and refuses anything else.
//! A reload that adds a LAN and removes another, on hosts that meet through the bulletin,
//! creates and removes their TAPs while a ping on a third LAN loses nothing; a broken one
//! (a file with an error, a bridge that does not exist) is refused and changes nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vmvpn_tests::Lab;

/// A static peer that never answers (inside the lab's own underlay range).
const GHOST: &str = "10.77.9.9:7401";

fn edit(lab: &Lab, h: &str, f: impl FnOnce(String) -> String) {
    let path = lab.config_path(h);
    let text = std::fs::read_to_string(&path).expect("read config");
    std::fs::write(&path, f(text)).expect("write config");
}

fn check(lab: &Lab, h: &str) -> (bool, String) {
    let out = Command::new(vmvpn_tests::vmvpn_bin())
        .args(["check", "--config"])
        .arg(lab.config_path(h))
        .output()
        .expect("vmvpn check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn peers(lab: &Lab, h: &str) -> Vec<String> {
    lab.status(h)["lans"][0]["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["address"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// h1's first VM on lan1 pings h2's `count` times, 20 a second, on a thread of its own
/// (bounded: `count` pings, 1 s wait each at most): the VM, and the ping's output to come.
fn ping_across(
    lab: &Lab,
    count: u32,
) -> (
    vmvpn_tests::Vm,
    std::thread::JoinHandle<std::process::Output>,
) {
    let (a, b) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    assert!(lab.ping(&a, b.ip));
    let (ns, target, count) = (a.ns.clone(), b.ip.to_string(), count.to_string());
    let pinger = std::thread::spawn(move || {
        Command::new("ip")
            .args(["netns", "exec", &ns, "ping", "-n", "-q", "-c", &count])
            .args(["-i", "0.05", "-W", "1", &target])
            .output()
            .expect("ping")
    });
    (a, pinger)
}

#[test]
fn reload_applies_peers_limits_and_telemetry_live_and_refuses_a_port_change() {
    vmvpn_tests::require_root();
    let lab = Lab::builder("reload")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 82], &["h1", "h2"], 1)
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    lab.wait_tunnels("h2", "lan1", 1, Duration::from_secs(20));
    let (a, pinger) = ping_across(&lab, 300);
    std::thread::sleep(Duration::from_secs(1));
    let rx_before = lab.peer("h1", "lan1", "h2")["rx_packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(rx_before > 0, "{}", lab.peer("h1", "lan1", "h2"));

    // Nothing changed yet: check says so.
    let (ok, text) = check(&lab, "h1");
    assert!(
        ok && text.contains("no change from the running config"),
        "{text}"
    );

    // A limit, a telemetry setting and a static peer, applied live.
    edit(&lab, "h1", |t| {
        let t = t.replacen("peers = [", &format!("peers = [\"{GHOST}\", "), 1);
        format!("{t}\n[[lan.limit]]\nmac = \"{}\"\nrate_mbps = 20\n", a.mac)
    });
    let (ok, text) = check(&lab, "h1");
    assert!(ok, "{text}");
    assert!(
        text.contains("would apply") && text.contains("lan.lan1.limit: added, applied live"),
        "{text}"
    );
    assert!(
        text.contains("lan.lan1.peers: changed, applied live"),
        "{text}"
    );
    let out = lab.vmvpn_cli("h1", &["reload", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("reload --json");
    assert!(
        out.status.success(),
        "{report} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["applied"], true, "{report}");
    let vms: Value =
        serde_json::from_slice(&lab.vmvpn_cli("h1", &["vms", "--json"]).stdout).expect("vms");
    let lim = &vms[0]["limits"][0];
    assert_eq!(lim["mac"], a.mac.as_str(), "{vms}");
    assert_eq!(lim["rate_bps"], 20_000_000, "{vms}");
    let t0 = Instant::now();
    while !peers(&lab, "h1").iter().any(|p| p == GHOST) {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{:?}",
            peers(&lab, "h1")
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGHUP: the static peer goes again, the limit stays.
    edit(&lab, "h1", |t| t.replacen(&format!("\"{GHOST}\", "), "", 1));
    lab.hup("h1");
    let t0 = Instant::now();
    while peers(&lab, "h1").iter().any(|p| p == GHOST) {
        assert!(t0.elapsed() < Duration::from_secs(3), "{}", lab.log("h1"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        lab.log("h1").contains("reload applied"),
        "{}",
        lab.log("h1")
    );

    // A port change needs a restart: refused whole, with the reason; the port stays.
    let listen = lab.status("h1")["host"]["listen"].clone();
    edit(&lab, "h1", |t| t.replacen("port = 7401", "port = 7499", 1));
    let (ok, text) = check(&lab, "h1");
    assert!(ok, "the file itself is valid: {text}");
    assert!(
        text.contains("would be refused") && text.contains("[host] port"),
        "{text}"
    );
    let out = lab.vmvpn_cli("h1", &["reload"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "a refused reload exits 0: {stdout}");
    assert!(
        stderr.contains("reload refused") && stderr.contains("host.port"),
        "{stdout}{stderr}"
    );
    assert_eq!(lab.status("h1")["host"]["listen"], listen);

    let ping = pinger.join().expect("pinger");
    let summary = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(
        summary.contains("300 packets transmitted, 300 received"),
        "pings lost across the reloads: {summary}"
    );
    // The tunnel to h2 is the one it was: its counters did not start over and it came up
    // once.
    let rx_after = lab.peer("h1", "lan1", "h2")["rx_packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(rx_after > rx_before + 250, "{rx_before} -> {rx_after}");
    let log = lab.log("h1");
    let ups = log
        .lines()
        .filter(|l| l.contains("tunnel up") && l.contains("name=h2"))
        .count();
    assert_eq!(ups, 1, "the tunnel to h2 re-keyed: {log}");
}

/// The bulletin's records of `lan`: host names, sorted.
fn ls_lan(lab: &Lab, lan: &str) -> Vec<String> {
    let mut v: Vec<String> = lab
        .bulletin_ls()
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| r["lan"] == lan)
                .filter_map(|r| r["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn hup_bulletin(lab: &Lab) {
    let pid = lab.bulletin_pid().expect("the bulletin runs");
    // SAFETY: kill(2) on the PID of the bulletin this lab started and still holds.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    assert_eq!(r, 0, "SIGHUP the bulletin ({pid})");
}

fn wait_log(lab: &Lab, what: &str, n: usize) {
    let t0 = Instant::now();
    while lab.bulletin_log().matches(what).count() < n {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no {what:?} in {}",
            lab.bulletin_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_bulletin_reloads_its_lans_on_sighup_and_refuses_the_rest() {
    vmvpn_tests::require_root();
    let mut lab = Lab::builder("breload")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 83], &["h1", "h2"], 1)
        .lan("lan2", [192, 168, 84], &["h1", "h2"], 0)
        .bulletin(6, 2)
        .start();
    for (h, lan) in [
        ("h1", "lan1"),
        ("h2", "lan1"),
        ("h1", "lan2"),
        ("h2", "lan2"),
    ] {
        lab.wait_tunnels(h, lan, 1, Duration::from_secs(20));
    }
    assert_eq!(ls_lan(&lab, "lan2"), ["h1", "h2"]);
    let (_, pinger) = ping_across(&lab, 100);
    let path = lab.dir().join("bulletin.toml");
    let full = std::fs::read_to_string(&path).expect("bulletin config");
    let at = full.rfind("[[lan]]").expect("two LANs");
    let without_lan2 = full[..at].to_string();
    assert!(full[at..].contains("lan2"), "{full}");

    // A change beside the LANs needs a restart: refused, both LANs stay.
    std::fs::write(
        &path,
        without_lan2.replacen("lease_ttl_s = 6", "lease_ttl_s = 60", 1),
    )
    .expect("write");
    hup_bulletin(&lab);
    wait_log(&lab, "reload refused", 1);
    assert!(lab.bulletin_log().contains("lease_ttl_s: cannot change"));
    // So is a file that does not parse.
    std::fs::write(&path, format!("{full}\nlease_ttl_s = \"x\"\n")).expect("write");
    hup_bulletin(&lab);
    wait_log(&lab, "reload refused", 2);
    assert_eq!(ls_lan(&lab, "lan2"), ["h1", "h2"]);

    // lan2 removed: its hosts leave it, and each hears that the other left.
    std::fs::write(&path, &without_lan2).expect("write");
    hup_bulletin(&lab);
    wait_log(&lab, "config reloaded", 1);
    assert!(ls_lan(&lab, "lan2").is_empty(), "{}", lab.bulletin_ls());
    let t0 = Instant::now();
    let from_bulletin = |h: &str| {
        lab.status(h)["lans"][1]["peers"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["source"] == "bulletin").count())
            .unwrap_or(0)
    };
    while from_bulletin("h1") + from_bulletin("h2") > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{}",
            lab.status("h1")["lans"][1]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ls_lan(&lab, "lan1"), ["h1", "h2"]);
    let ping = pinger.join().expect("pinger");
    let summary = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(
        summary.contains("100 packets transmitted, 100 received"),
        "lan1 lost pings across the bulletin's reloads: {summary}"
    );

    // lan2 served again: a host that registers now joins it.
    std::fs::write(&path, &full).expect("write");
    hup_bulletin(&lab);
    wait_log(&lab, "config reloaded", 2);
    lab.kill("h2");
    lab.restart("h2");
    let t0 = Instant::now();
    while ls_lan(&lab, "lan2") != ["h2"] {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{}",
            lab.bulletin_ls()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The LAN names in `h`'s status, in order.
fn lan_names(lab: &Lab, h: &str) -> Vec<String> {
    lab.status(h)["lans"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn has_link(lab: &Lab, h: &str, dev: &str) -> bool {
    Command::new("ip")
        .args(["-n", lab.host_ns(h), "link", "show", dev])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn a_reload_adds_a_lan_and_removes_another_while_a_third_loses_nothing() {
    vmvpn_tests::require_root();
    let lab = Lab::builder("lanreload")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 85], &["h1", "h2"], 1)
        .lan("lan2", [192, 168, 86], &["h1", "h2"], 1)
        .lan("lan3", [192, 168, 87], &["h1", "h2"], 1)
        .lan_later("lan3")
        .bulletin(6, 2)
        .start();
    for (h, lan) in [
        ("h1", "lan1"),
        ("h2", "lan1"),
        ("h1", "lan2"),
        ("h2", "lan2"),
    ] {
        lab.wait_tunnels(h, lan, 1, Duration::from_secs(20));
    }
    assert_eq!(lan_names(&lab, "h1"), ["lan1", "lan2"]);
    assert!(has_link(&lab, "h1", "tap1") && !has_link(&lab, "h1", "tap2"));
    let (_, pinger) = ping_across(&lab, 300);
    let rx_before = lab.peer("h1", "lan1", "h2")["rx_packets"]
        .as_u64()
        .unwrap_or(0);
    let added = |h: &str| {
        std::fs::read_to_string(lab.dir().join(format!("{h}-lan3.toml"))).expect("lan3 section")
    };
    let without_lan2 = |t: String| {
        let at = t
            .find("\n[[lan]]\nname = \"lan2\"")
            .expect("lan2 in the config");
        let end = t[at + 1..].find("\n[").map_or(t.len(), |e| at + 1 + e);
        format!("{}{}", &t[..at], &t[end..])
    };
    let original = std::fs::read_to_string(lab.config_path("h1")).expect("config");

    // Broken: a file with an error is refused whole; nothing changes.
    edit(&lab, "h1", |t| {
        format!(
            "{}{}\n[telemetry]\nprobes = \"maybe\"\n",
            without_lan2(t),
            added("h1")
        )
    });
    let out = lab.vmvpn_cli("h1", &["reload"]);
    assert!(!out.status.success(), "a file with an error was applied");
    // Broken at apply time: the new LAN's bridge does not exist, so its TAP cannot be set
    // up; refused before lan2 is touched.
    std::fs::write(lab.config_path("h1"), &original).expect("write");
    edit(&lab, "h1", |t| {
        format!(
            "{}{}",
            without_lan2(t),
            added("h1").replace("br2", "br-none")
        )
    });
    let out = lab.vmvpn_cli("h1", &["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "a LAN on a missing bridge was applied"
    );
    assert!(
        stderr.contains("lan3") && stderr.contains("br-none"),
        "the reason names the LAN and its bridge: {stderr}"
    );
    assert_eq!(lan_names(&lab, "h1"), ["lan1", "lan2"]);
    assert!(
        has_link(&lab, "h1", "tap1"),
        "lan2's TAP went on a refused reload"
    );
    assert!(
        !has_link(&lab, "h1", "tap2"),
        "the refused LAN's TAP stayed"
    );

    // The real change on both hosts: lan2 out, lan3 in (h1 by `vmvpn reload`, h2 by SIGHUP).
    std::fs::write(lab.config_path("h1"), &original).expect("write");
    for h in ["h1", "h2"] {
        edit(&lab, h, |t| format!("{}{}", without_lan2(t), added(h)));
    }
    let (ok, text) = check(&lab, "h1");
    assert!(
        ok && text.contains("lan.lan2: removed, applied live")
            && text.contains("lan.lan3: added, applied live"),
        "{text}"
    );
    let out = lab.vmvpn_cli("h1", &["reload", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("reload --json");
    assert!(out.status.success(), "{report}");
    assert_eq!(report["applied"], true, "{report}");
    lab.hup("h2");
    for h in ["h1", "h2"] {
        let t0 = Instant::now();
        while lan_names(&lab, h) != ["lan1", "lan3"] {
            assert!(t0.elapsed() < Duration::from_secs(5), "{h}: {}", lab.log(h));
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !has_link(&lab, h, "tap1"),
            "{h}: the removed LAN's TAP is still there"
        );
        assert!(has_link(&lab, h, "tap2"), "{h}: no TAP for the LAN added");
    }
    // The new LAN works: the hosts find each other through the bulletin, VMs ping.
    lab.wait_tunnels("h1", "lan3", 1, Duration::from_secs(10));
    lab.wait_tunnels("h2", "lan3", 1, Duration::from_secs(10));
    let (a, b) = (lab.vm("h1", "lan3", 0), lab.vm("h2", "lan3", 0));
    assert!(lab.ping(a, b.ip), "no ping on the LAN added");
    // The bulletin heard: both hosts are in lan3, none in lan2.
    let t0 = Instant::now();
    while ls_lan(&lab, "lan3") != ["h1", "h2"] || !ls_lan(&lab, "lan2").is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{}",
            lab.bulletin_ls()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let ping = pinger.join().expect("pinger");
    let summary = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(
        summary.contains("300 packets transmitted, 300 received"),
        "lan1 lost pings while LANs came and went: {summary}"
    );
    let rx_after = lab.peer("h1", "lan1", "h2")["rx_packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(rx_after > rx_before + 250, "{rx_before} -> {rx_after}");
    for h in ["h1", "h2"] {
        let other = if h == "h1" { "h2" } else { "h1" };
        let ups = lab
            .log(h)
            .lines()
            .filter(|l| {
                l.contains("tunnel up")
                    && l.contains("lan=lan1")
                    && l.contains(&format!("name={other}"))
            })
            .count();
        assert_eq!(ups, 1, "{h}: the lan1 tunnel re-keyed:\n{}", lab.log(h));
    }
}
