//! Rate limits with real daemons, TAPs and iperf3 in namespaces: a VM limited to
//! 50 Mbit/s, shaped as it sends and policed as it receives, gets 50 Mbit/s of a
//! 200 Mbit/s UDP stream each way (±5 %) and its TCP settles within ±10 % each way, while
//! another VM of the same host is not touched by the limit (its counts do not move); the
//! limit's counts show in `vmvpn vms` (text and JSON), and not among the LAN's drops.
//!
//! The limit counts whole Ethernet frames, iperf3 only its payload, so each rate is
//! compared with what 50 Mbit/s of frames carries of payload: 1400 of 1442 bytes for
//! UDP, about 1400 of 1466 for TCP (Ethernet 14, IP 20, TCP with timestamps 32).

use std::time::Duration;

use serde_json::Value;
use vmvpn_tests::{Lab, Vm};

const RATE_MBPS: f64 = 50.0;

/// Mbit/s that reached the receiver.
fn received(r: &Value) -> f64 {
    let end = &r["end"];
    end["sum_received"]["bits_per_second"]
        .as_f64()
        .or_else(|| end["sum"]["bits_per_second"].as_f64())
        .unwrap_or_else(|| panic!("no rate in {r}"))
        / 1e6
}

fn udp(lab: &Lab, from: &Vm, to: &Vm, mbps: u32) -> f64 {
    received(&lab.iperf3(
        from,
        to,
        &["-u", "-b", &format!("{mbps}M"), "-l", "1400", "-t", "6"],
    ))
}

/// TCP over 8 seconds after 2 left out: those are the window finding the rate.
/// Also, for a failure message, the rate of each second and the sender's retransmits.
fn tcp(lab: &Lab, from: &Vm, to: &Vm) -> (f64, String) {
    let r = lab.iperf3(from, to, &["-t", "8", "-O", "2"]);
    let seconds: Vec<String> = r["intervals"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|i| {
                    format!(
                        "{:.1}",
                        i["sum"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let detail = format!(
        "per second (Mbit/s, the first two omitted from the rate): {}; retransmits {}",
        seconds.join(" "),
        r["end"]["sum_sent"]["retransmits"]
    );
    (received(&r), detail)
}

/// The value once two reads half a second apart agree (at most 10 s).
fn settled(read: impl Fn() -> Value) -> Value {
    let mut last = read();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the limit's counts kept moving for 10 s with no traffic of the limited VM: {last}");
}

#[test]
fn a_vm_limited_to_50_mbits_gets_50_and_its_neighbour_is_untouched() {
    vmvpn_tests::require_root();
    let limited_mac = "02:00:00:01:00:00";
    let lab = Lab::builder("limit")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 81], &["h1", "h2"], 2)
        .config_tail(
            "h1",
            &format!(
                "[[lan.limit]]\nmac = \"{limited_mac}\"\nrate_mbps = {RATE_MBPS}\nshape_ms = 50\n"
            ),
        )
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    lab.wait_tunnels("h2", "lan1", 1, Duration::from_secs(20));
    let (a, free, z) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h1", "lan1", 1).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    assert_eq!(a.mac, limited_mac, "the lab's MAC scheme changed");
    assert!(lab.ping(&a, z.ip) && lab.ping(&free, z.ip) && lab.ping(&z, a.ip));

    let out_udp = udp(&lab, &a, &z, 200);
    let in_udp = udp(&lab, &z, &a, 200);
    let (out_tcp, out_detail) = tcp(&lab, &a, &z);
    let (in_tcp, in_detail) = tcp(&lab, &z, &a);
    let limit_counts = |lab: &Lab| -> Value {
        let out = lab.vmvpn_cli("h1", &["vms", "--json"]);
        let vms: Value = serde_json::from_slice(&out.stdout).expect("vms --json");
        let lim = &vms[0]["limits"][0];
        serde_json::json!([lim["tx"], lim["rx"], lim["delayed_frames_total"]])
    };
    // The TCP runs end with data still in flight: the sender's kernel drains its buffer
    // and retransmits through the limit after iperf3 has returned (32 frames were seen
    // arriving during the neighbour's run). Wait until the counts stand still.
    let before = settled(|| limit_counts(&lab));
    let free_udp = udp(&lab, &free, &z, 200);
    // The neighbour's frames never touched the limit: its counts did not move.
    assert_eq!(
        limit_counts(&lab),
        before,
        "the neighbour's traffic went through the limit"
    );
    eprintln!(
        "limited VM: UDP out (shaped) {out_udp:.1}, UDP in (policed) {in_udp:.1}, TCP out {out_tcp:.1}, TCP in {in_tcp:.1} Mbit/s; its neighbour: UDP out {free_udp:.1} Mbit/s"
    );
    let (udp_rate, tcp_rate) = (RATE_MBPS * 1400.0 / 1442.0, RATE_MBPS * 1400.0 / 1466.0);
    let within = |x: f64, rate: f64, tol: f64| (x - rate).abs() <= rate * tol;
    assert!(
        within(out_udp, udp_rate, 0.05),
        "UDP out at 200 Mbit/s: {out_udp:.1} of {udp_rate:.1}"
    );
    assert!(
        within(in_udp, udp_rate, 0.05),
        "UDP in at 200 Mbit/s: {in_udp:.1} of {udp_rate:.1}"
    );
    assert!(
        within(out_tcp, tcp_rate, 0.10),
        "TCP out (shaped) settled at {out_tcp:.1} of {tcp_rate:.1}: {out_detail}"
    );
    // Policed: TCP sees drops rather than delay (about 750 retransmits a second here) yet
    // settles at 47.5-47.7 on a quiet machine; 45.0 was seen on a faster CI machine.
    if !within(in_tcp, tcp_rate, 0.10) {
        // Seen once in CI (7.6, a quiet machine here gives 47.4-47.6 and 46.1 with both
        // cores busy): say where the frames went.
        panic!(
            "TCP in (policed) settled at {in_tcp:.1} of {tcp_rate:.1}: {in_detail}\nthe limit: {}\n{}",
            serde_json::from_slice::<Value>(&lab.vmvpn_cli("h1", &["vms", "--json"]).stdout)
                .map(|v| v[0]["limits"].clone())
                .unwrap_or_default(),
            lab.loss_report("h1")
        );
    }
    // Not 200: a debug build on 2 shared cores loses 1-8 % of 200 Mbit/s of UDP with no
    // limit configured at all (the receiving daemon is descheduled for up to 100 ms, its
    // socket buffer overflows). Three times the limit is far from any policing.
    assert!(
        free_udp >= 3.0 * RATE_MBPS,
        "the unlimited neighbour got {free_udp:.1} of 200 Mbit/s"
    );

    // The limit counted what it did; the LAN's drops did not (a limit is not a fault).
    let out = lab.vmvpn_cli("h1", &["vms", "--json"]);
    let vms: Value = serde_json::from_slice(&out.stdout).expect("vms --json");
    let lim = &vms[0]["limits"][0];
    assert_eq!(lim["mac"], limited_mac, "{vms}");
    assert_eq!(lim["direction"], "both");
    assert_eq!(lim["shape_ms"], 50);
    assert!(lim["delayed_frames_total"].as_u64() > Some(1000), "{lim}");
    assert_eq!(lim["rate_bps"], 50_000_000);
    for dir in ["tx", "rx"] {
        let c = &lim[dir];
        assert!(
            c["dropped_frames_total"].as_u64() > Some(100)
                && c["passed_bytes_total"].as_u64() > Some(10_000_000),
            "{dir}: {c}"
        );
    }
    let drops = &lab.status("h1")["lans"][0]["drops"];
    let total: u64 = drops
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert!(
        total < 10,
        "policed frames leaked into the LAN's drops: {drops}"
    );
    let text = String::from_utf8_lossy(&lab.vmvpn_cli("h1", &["vms"]).stdout).to_string();
    assert!(
        text.contains("Rate limits") && text.contains(limited_mac),
        "{text}"
    );
}
