//! VMs at the standard MTU 1500 over the overlay, with defaults only: TCP at
//! full size, DF pings of 1472 bytes, 8000-byte pings, DF UDP datagrams of 1472 bytes. Then
//! the same over a path with a 1400-byte link that neither signals ("fragmentation
//! needed" never comes) nor passes IP fragments: a PMTU black hole.

use std::time::{Duration, Instant};

use serde_json::Value;
use vmvpn_tests::{Lab, Vm};

/// With the router's links at MTU 1400: no ICMP leaves it ("fragmentation needed" never
/// arrives) and no IP fragment passes it (as many clouds and firewalls do).
const BLACK_HOLE: &str = "
table ip vmvt_mtu {
  chain forward_filter {
    type filter hook forward priority 0; policy accept;
    ip frag-off & 0x3fff != 0 counter drop
  }
  chain output_filter {
    type filter hook output priority 0; policy accept;
    icmp type destination-unreachable counter drop
  }
}
";

fn lab(tag: &str, black_hole: Option<u32>) -> Lab {
    let mut b = Lab::builder(tag)
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 100], &["h1", "h2"], 1)
        .ipv6();
    if let Some(mtu) = black_hole {
        b = b.router_mtu(mtu).router_rules(BLACK_HOLE);
    }
    let lab = b.start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(10));
    lab
}

/// Wait until both ends finished their path MTU search; the path MTU h1 → h2.
fn settled_pmtu(lab: &Lab) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (a, b) = (lab.peer("h1", "lan1", "h2"), lab.peer("h2", "lan1", "h1"));
        if a["path_mtu_searching"] == false && b["path_mtu_searching"] == false {
            return a["path_mtu_bytes"].as_u64().unwrap_or(0);
        }
        assert!(
            Instant::now() < deadline,
            "path MTU search did not finish:\n{a:#}\n{b:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ping(lab: &Lab, from: &Vm, to: &Vm, args: &[&str]) -> bool {
    let ip = to.ip.to_string();
    let mut a = vec!["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2"];
    a.extend_from_slice(args);
    a.push(&ip);
    let out = lab.exec(&from.ns, &a);
    if !out.status.success() {
        eprintln!("ping {args:?}: {}", String::from_utf8_lossy(&out.stdout));
        for h in ["h1", "h2"] {
            let st = lab.status(h);
            eprintln!(
                "{h}: reassembly {} drops {} frag {} peers {}",
                st["reassembly"],
                lan_of(&st)["drops"],
                lan_of(&st)["fragments_sent_total"],
                lan_of(&st)["peers"][0]["path_mtu_bytes"]
            );
        }
        let rules = lab.exec(lab.router_ns(), &["nft", "list", "ruleset"]);
        eprintln!("{}", String::from_utf8_lossy(&rules.stdout));
    }
    out.status.success()
}

fn lan_of(st: &Value) -> &Value {
    &st["lans"][0]
}

/// Everything a VM at MTU 1500 does, checked in both directions.
fn full_size_traffic_arrives(lab: &Lab) {
    let (a, b) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    for (x, y) in [(&a, &b), (&b, &a)] {
        let mtu = lab.exec(&x.ns, &["cat", "/sys/class/net/eth0/mtu"]);
        assert_eq!(
            String::from_utf8_lossy(&mtu.stdout).trim(),
            "1500",
            "VMs at the standard MTU"
        );
        assert!(
            ping(lab, x, y, &["-M", "do", "-s", "1472"]),
            "DF ping of 1472 bytes"
        );
        assert!(
            ping(lab, x, y, &["-s", "8000"]),
            "8000-byte ping (IP fragments inside the VM LAN)"
        );
        // IPv6 inside the VM LAN: a full 1500-byte packet (IPv6 never fragments en route).
        let v6 = y.ip6.map(|ip| ip.to_string()).unwrap_or_default();
        let out = lab.exec(
            &x.ns,
            &[
                "ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s",
                "1452", &v6,
            ],
        );
        assert!(
            out.status.success(),
            "IPv6 ping of 1500 bytes: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // UDP datagrams of 1472 bytes with DF.
    let r = lab.iperf3(
        &a,
        &b,
        &[
            "-u",
            "-l",
            "1472",
            "--dont-fragment",
            "-b",
            "20M",
            "-t",
            "2",
        ],
    );
    let sum = &r["end"]["sum"];
    let (packets, lost) = (
        sum["packets"].as_u64().unwrap_or(0),
        sum["lost_packets"].as_u64().unwrap_or(u64::MAX),
    );
    eprintln!("UDP 1472 DF: {packets} datagrams, {lost} lost");
    assert!(packets > 1000 && lost * 100 <= packets, "{sum:#}");
    // TCP at full size: MSS clamped to the path, so its segments need no fragments.
    let frag_before = lan_of(&lab.status("h1"))["fragmented_frames_total"]
        .as_u64()
        .unwrap_or(0);
    let r = lab.iperf3(&a, &b, &["-t", "3"]);
    let recv = &r["end"]["sum_received"];
    let bytes = recv["bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "TCP: {:.2} Gbit/s, {bytes} bytes",
        recv["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9
    );
    assert!(bytes > 20 << 20, "TCP moved only {bytes} bytes: {r:#}");
    let st = lab.status("h1");
    let fragmented = lan_of(&st)["fragmented_frames_total"].as_u64().unwrap_or(0) - frag_before;
    assert!(
        fragmented < 50,
        "TCP needed {fragmented} fragmented frames: its MSS was not clamped"
    );
    // Nothing was dropped for size, and nothing waits in the reassembly table.
    let drops = &lan_of(&st)["drops"];
    for k in [
        "oversize",
        "fragment_overlap",
        "fragment_oversize",
        "fragment_timeout",
        "fragment_evicted",
    ] {
        assert_eq!(drops[k], 0, "{k}: {drops:#}");
    }
    assert!(
        st["reassembly"]["reassembled_frames_total"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
}

#[test]
fn vms_at_mtu_1500_just_work_across_two_subnets() {
    let lab = lab("mtu", None);
    assert_eq!(settled_pmtu(&lab), 1500);
    let st = lab.status("h1");
    assert_eq!(lan_of(&st)["mtu"], 1500, "the TAP is at the standard MTU");
    full_size_traffic_arrives(&lab);
    let text = lab.vmvpn_cli("h1", &["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("PMTU") && text.contains(" 1500 "), "{text}");
}

#[test]
fn a_1400_byte_path_that_sends_no_icmp_and_drops_fragments_still_carries_everything() {
    let lab = lab("mtub", Some(1400));
    let pmtu = settled_pmtu(&lab);
    eprintln!("path MTU found: {pmtu}");
    assert!(pmtu <= 1400 && pmtu > 1380, "path MTU {pmtu}");
    assert!(
        lab.peer("h2", "lan1", "h1")["path_mtu_bytes"]
            .as_u64()
            .unwrap_or(0)
            <= 1400
    );
    full_size_traffic_arrives(&lab);
    // The router really refused what was too large (the larger probes) and its ICMP
    // never left.
    let rules = lab.exec(lab.router_ns(), &["nft", "list", "table", "ip", "vmvt_mtu"]);
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        rules.contains("destination-unreachable counter packets")
            && !rules.contains("destination-unreachable counter packets 0 "),
        "no ICMP was suppressed: was anything too large?\n{rules}"
    );
}
