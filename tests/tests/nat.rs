//! Hosts behind NAT: two private subnets, each behind a router of its own that
//! masquerades (nftables) and drops new connections from outside, a public subnet with the
//! bulletin and one public host. Real `vmvpn` and `bulletin` processes in namespaces.
//! Each tunnel's path shows in the hosts' status, the bulletin's matrix and its dashboard
//! (in a real browser).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmvpn_tests::{BULLETIN_PORT, Browser, Lab, PORT, WEB_LOCAL};

const TTL_S: u64 = 6;
const HEARTBEAT_S: u64 = 2;
const UP_WITHIN: Duration = Duration::from_secs(15);

/// h1 public on subnet 1; h2 behind subnet 2's NAT, h3 behind subnet 3's.
fn behind_nats(tag: &str, options: &str) -> Lab {
    Lab::builder(tag)
        .subnet(&["h1"])
        .subnet(&["h2"])
        .subnet(&["h3"])
        .nat(2, options)
        .nat(3, options)
        .lan("lan1", [192, 168, 100], &["h1", "h2", "h3"], 1)
        .bulletin(TTL_S, HEARTBEAT_S)
        .telemetry("report_interval_s = 2\n")
        .web()
        .start()
}

/// Count, in the bulletin's namespace, unicast UDP to it that is not the bulletin's own
/// QUIC, and anything it forwards.
fn count_in_bulletin_ns(lab: &Lab) {
    let rules = format!(
        "table inet vmvtcount {{\n  chain input {{\n    type filter hook input priority 0;\n    meta pkttype host udp dport != {BULLETIN_PORT} counter\n  }}\n  chain forward {{\n    type filter hook forward priority 0;\n    counter\n  }}\n}}\n"
    );
    let out = lab.exec(
        lab.bulletin_ns(),
        &["sh", "-c", &format!("echo '{rules}' | nft -f -")],
    );
    assert!(out.status.success(), "{out:?}");
}

fn counted_in_bulletin_ns(lab: &Lab) -> u64 {
    let out = lab.exec(
        lab.bulletin_ns(),
        &["nft", "list", "table", "inet", "vmvtcount"],
    );
    String::from_utf8_lossy(&out.stdout)
        .split("packets ")
        .skip(1)
        .filter_map(|t| t.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Host `h`'s peer listed at `addr` (its name is unknown until it answers).
fn listed(lab: &Lab, h: &str, addr: &str) -> Value {
    let st = lab.status(h);
    st["lans"][0]["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["candidates"][0]["address"] == addr))
        .cloned()
        .unwrap_or_else(|| panic!("{h} has no peer listed at {addr}:\n{st:#}"))
}

fn vm<'a>(lab: &'a Lab, host: &str) -> &'a vmvpn_tests::Vm {
    lab.vms()
        .iter()
        .find(|v| v.host == host)
        .unwrap_or_else(|| panic!("no VM on {host}"))
}

/// The largest gap between answered pings in `ping` output (its icmp_seq numbers).
fn largest_gap(out: &str, count: u32) -> u32 {
    let mut seqs: Vec<u32> = out
        .split("icmp_seq=")
        .skip(1)
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut last = 0;
    let mut gap = 0;
    for s in seqs.iter().copied().chain([count + 1]) {
        gap = gap.max(s - last - 1);
        last = s;
    }
    gap
}

/// The bulletin's matrix has each tunnel's path as its host reported it (JSON and the
/// text grid), and its dashboard draws the punched tunnels as such in a real browser.
fn paths_in_the_matrix_and_the_dashboard(lab: &Lab) {
    let t0 = Instant::now();
    loop {
        let m: Value =
            serde_json::from_str(&lab.bulletin_cli(&["matrix", "--json"])).expect("matrix JSON");
        let links = m[0]["links"].as_array().cloned().unwrap_or_default();
        let path = |from: &str, to: &str| {
            links
                .iter()
                .find(|k| k["from"] == from && k["to"] == to)
                .map(|k| k["path"].clone())
        };
        if path("h2", "h3") == Some(json!("punched"))
            && path("h1", "h2") == Some(json!("punched"))
            && path("h2", "h1") == Some(json!("direct"))
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the matrix has no paths as the hosts see them: {m:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = lab.bulletin_cli(&["matrix"]);
    assert!(text.contains("path row -> column"), "{text}");
    eprintln!("nat: bulletin matrix:\n{text}");

    let mut browser = Browser::start(lab.bulletin_ns(), &lab.dir().join("chromium-profile"));
    let loaded = browser.ask(&format!("load http://{WEB_LOCAL}/"));
    assert_eq!(loaded["ok"], true, "{loaded}");
    let t0 = Instant::now();
    loop {
        let look = browser.ask("look");
        assert_eq!(look["errors"], json!([]), "{look:#}");
        let links = look["links"].as_array().cloned().unwrap_or_default();
        // Every pair has a NATed end here, so every line is drawn punched.
        if links.len() == 3
            && links
                .iter()
                .all(|l| l["cls"].as_str().is_some_and(|c| c.contains("punched")))
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the topology does not draw the punched tunnels: {look:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn hosts_behind_port_keeping_nat_punch_a_direct_path() {
    let lab = behind_nats("natc", "");
    count_in_bulletin_ns(&lab);
    for h in ["h1", "h2", "h3"] {
        lab.wait_tunnels(h, "lan1", 2, UP_WITHIN);
    }
    // Every VM reaches every other.
    let vms = lab.vms().to_vec();
    for a in &vms {
        for b in vms.iter().filter(|b| b.ns != a.ns) {
            assert!(lab.ping(a, b.ip), "{} -> {}", a.host, b.host);
        }
    }
    // h2 reaches h3 at h3's NAT's public address, not at its private one.
    let p: Value = lab.peer("h2", "lan1", "h3");
    assert_eq!(p["path"], "punched", "{p:#}");
    assert_eq!(p["address"], format!("10.77.1.243:{PORT}"), "{p:#}");
    assert_eq!(p["candidates"][0]["address"], format!("10.77.3.1:{PORT}"));
    assert_eq!(p["candidates"][0]["answered"], false, "{p:#}");
    assert_eq!(p["candidates"][1]["answered"], true, "{p:#}");
    // Its round trip as the punch timed it (namespaces on one machine: well under 1 s),
    // and none for the private address that never answered.
    let rtt = p["candidates"][1]["rtt_ms"].as_f64().expect("rtt_ms");
    assert!(rtt < 1000.0, "{p:#}");
    assert!(p["candidates"][0]["rtt_ms"].is_null(), "{p:#}");
    let open_ms = p["path_open_ms"].as_u64().expect("path_open_ms");
    eprintln!("nat: punched path h2 -> h3 opened in {open_ms} ms, its candidate's RTT {rtt:.2} ms");
    // The public host sees h2 through its NAT; h2 sees h1 at h1's own address.
    assert_eq!(lab.peer("h1", "lan1", "h2")["path"], "punched");
    assert_eq!(lab.peer("h2", "lan1", "h1")["path"], "direct");
    let table = lab.vmvpn_cli("h2", &["status"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("punched"),
        "{table:?}"
    );
    paths_in_the_matrix_and_the_dashboard(&lab);

    // The NAT mappings are flushed mid-transfer: the tunnel opens again within 5 s.
    let (a, b) = (vm(&lab, "h2").clone(), vm(&lab, "h3").clone());
    let count = 100;
    let pinger = std::thread::spawn({
        let ns = a.ns.clone();
        let to = b.ip.to_string();
        move || {
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "ping", "-n", "-i", "0.1", "-W", "1"])
                .args(["-c", &count.to_string(), &to])
                .output()
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    for s in [2, 3] {
        let out = lab.exec(lab.nat_ns(s), &["conntrack", "-F"]);
        assert!(out.status.success(), "conntrack -F: {out:?}");
    }
    let out = pinger.join().expect("ping thread").expect("ping in the VM");
    let text = String::from_utf8_lossy(&out.stdout);
    let gap = largest_gap(&text, count);
    eprintln!("nat: after conntrack -F, {gap} pings (0.1 s apart) unanswered in a row");
    assert!(gap < 50, "the tunnel did not recover within 5 s:\n{text}");
    assert!(lab.ping(&a, b.ip));
    assert_eq!(lab.peer("h2", "lan1", "h3")["state"], "up");

    // Nothing of the data plane went to or through the bulletin's namespace.
    assert_eq!(counted_in_bulletin_ns(&lab), 0);
}

#[test]
fn without_candidates_the_same_lab_has_no_path() {
    // The check that the test above can fail: a host that reports only its private
    // address (the bulletin sees it at that address: no NAT) is unreachable from behind
    // another NAT. Here: h2 and h3 behind NATs that change the source port of every
    // mapping (fully-random), so the public candidate (address + data port) is wrong.
    let lab = behind_nats("natr", "fully-random");
    for h in ["h1", "h2", "h3"] {
        lab.wait_tunnels(h, "lan1", 1, UP_WITHIN);
    }
    std::thread::sleep(Duration::from_secs(3));
    let p = listed(&lab, "h2", &format!("10.77.3.1:{PORT}"));
    assert_eq!(
        p["state"], "handshaking",
        "no direct path through two port-changing NATs (a relay is needed): {p:#}"
    );
}

#[test]
fn the_gap_finder_counts_missing_replies() {
    let out = "64 bytes from x: icmp_seq=1 ttl=64\n64 bytes: icmp_seq=2\n64 bytes: icmp_seq=9\n";
    assert_eq!(largest_gap(out, 10), 6);
    assert_eq!(largest_gap("", 10), 10);
}
