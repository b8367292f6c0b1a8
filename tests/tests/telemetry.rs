//! Telemetry accuracy against ground truth, with real daemons in namespaces: `ping` and
//! iperf3 between VMs, and the link emulator (`vmvpn-linkem`) on a host's underlay for
//! delay and loss (this kernel has no netem).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmvpn_tests::Lab;

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "no samples");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// RTTs in ms from `ping` output lines (`time=20.4 ms`).
fn ping_times(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next())
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// The RTT test holds this alone, every other test shares it. Its ground truth is `ping`
/// from a VM, which crosses both daemons twice (four wakeups) where a probe crosses one; on
/// 2 cores, beside the loss test's 3000-ping burst and the iperf3 stream, those wakeups
/// waited: a CI run saw ping's median at 22.4 ms against the probes' 21.3.
static QUIET: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    // A test that failed while holding it poisoned it; the lock itself is still good.
    QUIET.write().unwrap_or_else(|p| p.into_inner())
}

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    QUIET.read().unwrap_or_else(|p| p.into_inner())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Two subnets, one host each, one VM each; `h1`'s underlay goes through the emulator.
fn two_hosts(tag: &str, out: &str, inbound: &str) -> Lab {
    let lab = Lab::builder(tag)
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 70], &["h1", "h2"], 1)
        .emulate("h1", out, inbound)
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    lab.wait_tunnels("h2", "lan1", 1, Duration::from_secs(20));
    lab
}

#[test]
fn rtt_with_20ms_added_matches_ping_within_1ms() {
    let _quiet = alone();
    let lab = two_hosts("rtt", "delay=20ms", "");
    let (a, b) = (lab.vm("h1", "lan1", 0), lab.vm("h2", "lan1", 0));
    // Let the probes fill the window while ping measures the same path (1 probe/s).
    let ping = lab.exec(
        &a.ns,
        &["ping", "-n", "-c", "40", "-i", "0.25", &b.ip.to_string()],
    );
    let ping_ms = median(ping_times(&String::from_utf8_lossy(&ping.stdout)));
    let p = lab.peer("h1", "lan1", "h2");
    let probe_ms = f(&p["rtt_p50_us"]) / 1000.0;
    assert!(
        p["rtt_samples"].as_u64().unwrap_or(0) >= 8,
        "too few probes: {p:#}"
    );
    eprintln!("RTT p50: vmvpn {probe_ms:.3} ms, ping {ping_ms:.3} ms");
    assert!(
        (probe_ms - ping_ms).abs() <= 1.0,
        "vmvpn reports {probe_ms:.3} ms, ping measured {ping_ms:.3} ms"
    );
    assert!(probe_ms >= 20.0, "the 20 ms delay must show: {probe_ms}");
    // The other side measures the same round trip.
    let q = lab.peer("h2", "lan1", "h1");
    assert!(
        (f(&q["rtt_p50_us"]) / 1000.0 - ping_ms).abs() <= 1.0,
        "{q:#}"
    );
    // `vmvpn ping` to the VM's address goes to the peer behind it, through the delay.
    // Its median is compared, as ping's is: one sample can land on a moment when the
    // parallel iperf3 test holds both cores (a CI run saw 23.2 ms against ping's 21.1).
    let out = lab.vmvpn_cli(
        "h1",
        &["ping", &b.ip.to_string(), "-c", "9", "-i", "0.2", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 9);
    let mut samples = Vec::new();
    for l in &lines {
        assert_eq!(l["peer"], "h2", "{l}");
        assert_eq!(l["via_vm"], b.mac.as_str(), "{l}");
        let ms = f(&l["rtt_us"]) / 1000.0;
        assert!(ms >= 20.0, "the 20 ms delay must show: {l}");
        samples.push(ms);
    }
    let ms = median(samples.clone());
    assert!(
        (ms - ping_ms).abs() <= 1.0,
        "vmvpn ping median {ms:.3} ms ({samples:?}) vs ping {ping_ms:.3} ms"
    );
    let text = lab.vmvpn_cli("h1", &["ping", "h2", "-c", "2", "-i", "0.1"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("pong from h2") && text.contains("2 probes, 2 answered"),
        "{text}"
    );
}

#[test]
fn five_percent_loss_one_way_is_reported_in_that_direction_only() {
    let _quiet = shared();
    let lab = two_hosts("loss", "loss=0.05", "");
    let (a, b) = (lab.vm("h1", "lan1", 0), lab.vm("h2", "lan1", 0));
    // 3000 echo requests h1 -> h2 (5 % lost on the way) and replies back (not impaired).
    let _ = lab.ping_burst(a, b.ip, 3000, "0.002");
    std::thread::sleep(Duration::from_millis(2500)); // probe replies carry the counts back
    let truth = lab.linkem_stats("h1");
    let (dropped, sent_in) = (
        f(&truth["a_to_b"]["dropped"]),
        f(&truth["a_to_b"]["frames_in"]),
    );
    let actual = dropped / sent_in;
    assert_eq!(f(&truth["b_to_a"]["dropped"]), 0.0);
    // Seen by the receiver (h2, from h1) and by the sender (h1, from h2's probe replies).
    let at_h2 = lab.peer("h2", "lan1", "h1");
    let at_h1 = lab.peer("h1", "lan1", "h2");
    let expected = f(&at_h2["rx_sequenced_total"]) + f(&at_h2["rx_lost_total"]);
    assert!(expected >= 2000.0, "only {expected} packets: {at_h2:#}");
    let rx = f(&at_h2["loss_rx_ratio"]);
    let tx = f(&at_h1["loss_tx_ratio"]);
    eprintln!(
        "emulator dropped {:.2} %; h2 counted {:.2} % from h1; h1 was told {:.2} %",
        actual * 100.0,
        rx * 100.0,
        tx * 100.0
    );
    for (what, r) in [("h2 rx from h1", rx), ("h1 tx to h2", tx)] {
        assert!((r - 0.05).abs() <= 0.015, "{what}: {r}");
        // And close to what the emulator really dropped.
        assert!(
            (r - actual).abs() <= 0.005,
            "{what}: {r} vs dropped {actual}"
        );
    }
    // The other direction saw no loss.
    assert!(f(&at_h1["loss_rx_ratio"]) < 0.005, "{at_h1:#}");
    assert!(f(&at_h2["loss_tx_ratio"]) < 0.005, "{at_h2:#}");
    assert_eq!(at_h2["health"], "degraded");
    // The table shows both directions.
    let t = lab.vmvpn_cli("h1", &["status"]);
    let t = String::from_utf8_lossy(&t.stdout);
    assert!(
        t.contains("LOSS tx/rx") && t.contains("up (degraded)"),
        "{t}"
    );
}

#[test]
fn a_killed_peer_is_down_everywhere_within_5s() {
    let _quiet = shared();
    let mut lab = Lab::builder("down")
        .subnet(&["h1", "h2"])
        .subnet(&["h3"])
        .lan("lan1", [192, 168, 71], &["h1", "h2", "h3"], 0)
        .start();
    for h in ["h1", "h2", "h3"] {
        lab.wait_tunnels(h, "lan1", 2, Duration::from_secs(20));
    }
    // Probes answered first, so health is known.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ["h1", "h2"]
        .iter()
        .any(|h| lab.peer(h, "lan1", "h3")["health"] != "ok")
    {
        assert!(
            Instant::now() < deadline,
            "{:#}",
            lab.peer("h1", "lan1", "h3")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.kill("h3");
    let killed = Instant::now();
    let mut pending = vec!["h1", "h2"];
    while !pending.is_empty() {
        pending.retain(|h| lab.peer(h, "lan1", "h3")["health"] != "down");
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "still not down after 5 s on {pending:?}: {:#}",
            lab.peer(pending[0], "lan1", "h3")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "h3 down everywhere {:.2} s after SIGKILL",
        killed.elapsed().as_secs_f64()
    );
    // The survivors are still fine with each other.
    assert_eq!(lab.peer("h1", "lan1", "h2")["health"], "ok");
}

#[test]
fn iperf3_throughput_vm_matrix_and_flow_table() {
    let _quiet = shared();
    // Two data-plane threads, the default from 4 cores (`auto`), whatever this machine has:
    // the counts are made in the loop, the send thread only seals and sends.
    let lab = Lab::builder("iperf")
        .threads(2)
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 72], &["h1", "h2"], 1)
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    let (a, b) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    // The server answers one test and exits; its PID is recorded and it is killed if not.
    let mut server = Command::new("ip")
        .args(["netns", "exec", &b.ns, "iperf3", "-s", "-1", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 is missing: run scripts/deps.sh");
    std::thread::sleep(Duration::from_millis(500));
    // A paced UDP stream (steady per second), 8 s, datagrams that fit the VM MTU (1418)
    // unfragmented: 1360 + 8 + 20 = 1388.
    let (ns, ip) = (a.ns.clone(), b.ip.to_string());
    let client = std::thread::spawn(move || {
        Command::new("ip")
            .args([
                "netns", "exec", &ns, "iperf3", "-c", &ip, "-p", "5201", "-u", "-b", "40M",
            ])
            .args(["-l", "1360", "-t", "8", "-J"])
            .output()
            .expect("iperf3 client")
    });
    // vmvpn's 1-second rate for the tunnel, sampled mid-run (seconds 3 to 7).
    std::thread::sleep(Duration::from_millis(3000));
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.push(f(&lab.peer("h1", "lan1", "h2")["tx_rate_bps"]));
        std::thread::sleep(Duration::from_millis(900));
    }
    let out = client.join().expect("client thread");
    let _ = server.kill();
    let _ = server.wait();
    let report: Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    let iperf_bps = f(&report["end"]["sum"]["bits_per_second"]);
    // iperf3 counts UDP payload; vmvpn counts Ethernet frames: 1360 + 8 + 20 + 14 bytes.
    let iperf_frame_bps = iperf_bps * 1402.0 / 1360.0;
    let vmvpn_bps = median(samples.clone());
    eprintln!(
        "iperf3 {:.2} Mbit/s payload = {:.2} Mbit/s frames; vmvpn {:.2} Mbit/s (samples {samples:?})",
        iperf_bps / 1e6,
        iperf_frame_bps / 1e6,
        vmvpn_bps / 1e6
    );
    assert!(iperf_bps > 10e6, "iperf3 ran too slowly: {report:#}");
    assert!(
        (vmvpn_bps / iperf_frame_bps - 1.0).abs() <= 0.05,
        "vmvpn {vmvpn_bps} vs iperf3 {iperf_frame_bps}"
    );
    // The VM matrix has the pair, at its source host.
    let vms = lab.vmvpn_cli("h1", &["vms", "--json"]);
    let vms: Value = serde_json::from_slice(&vms.stdout).expect("vms JSON");
    let pair = vms[0]["pairs"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["src_mac"] == a.mac.as_str() && p["dst_mac"] == b.mac.as_str())
        })
        .unwrap_or_else(|| panic!("no pair {} -> {}: {vms:#}", a.mac, b.mac))
        .clone();
    assert_eq!(pair["at_source"], true);
    assert!(f(&pair["bytes"]) > 30e6, "{pair}");
    let local = vms[0]["vms"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["mac"] == a.mac.as_str()))
        .cloned()
        .expect("VM a");
    assert_eq!(
        (local["location"].clone(), local["ip"].clone()),
        ("local".into(), a.ip.to_string().into())
    );
    // `vmvpn top --once`: the tunnel, the local port and the flow on one screen.
    let top = lab.vmvpn_cli("h1", &["top", "--once"]);
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.contains("h2") && top.contains(&a.mac) && top.contains(&format!("{}:", a.ip)),
        "{top}"
    );
    // The flow table has the UDP stream and the TCP control connection (closed by now).
    let flows = lab.vmvpn_cli("h1", &["flows", "--json", "--top", "5"]);
    let flows: Value = serde_json::from_slice(&flows.stdout).expect("flows JSON");
    let rows = flows[0]["flows"].as_array().cloned().unwrap_or_default();
    assert!(rows.len() <= 5);
    let udp = rows
        .iter()
        .find(|r| r["proto"] == "udp" && r["dst_port"] == 5201)
        .unwrap_or_else(|| panic!("no UDP flow: {flows:#}"));
    assert_eq!(udp["src"], a.ip.to_string());
    assert!(f(&udp["tx_packets"]) > 20_000.0, "{udp}");
    let tcp = rows
        .iter()
        .find(|r| r["proto"] == "tcp" && r["dst_port"] == 5201)
        .unwrap_or_else(|| panic!("no TCP control connection: {flows:#}"));
    assert!(
        tcp["tcp_state"] == "closed" || tcp["tcp_state"] == "closing",
        "{tcp}"
    );
    assert!(f(&flows[0]["flow_table"]["tcp_syn_total"]) >= 1.0);
    // The same from the receiving host: the flow, seen from its initiator.
    let flows2 = lab.vmvpn_cli("h2", &["flows", "--json"]);
    let flows2: Value = serde_json::from_slice(&flows2.stdout).expect("flows JSON");
    assert!(
        flows2[0]["flows"].as_array().is_some_and(|r| r
            .iter()
            .any(|r| r["proto"] == "udp" && r["src"] == a.ip.to_string())),
        "{flows2:#}"
    );
}

#[test]
fn the_bulletin_matrix_shows_every_pair_and_the_vm_traffic() {
    let _quiet = shared();
    let lab = Lab::builder("matrix")
        .subnet(&["h1", "h2"])
        .subnet(&["h3"])
        .lan("lan1", [192, 168, 73], &["h1", "h2", "h3"], 1)
        .bulletin(6, 2)
        .telemetry("report_interval_s = 1\n")
        .start();
    for h in ["h1", "h2", "h3"] {
        lab.wait_tunnels(h, "lan1", 2, Duration::from_secs(20));
    }
    let (a, c) = (lab.vm("h1", "lan1", 0), lab.vm("h3", "lan1", 0));
    assert!(lab.ping(a, c.ip));
    let _ = lab.exec(
        &a.ns,
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            "20",
            "-i",
            "0.05",
            &c.ip.to_string(),
        ],
    );
    // Reports every second; RTTs once probes are answered.
    let deadline = Instant::now() + Duration::from_secs(15);
    let m = loop {
        let m: Value =
            serde_json::from_str(&lab.bulletin_cli(&["matrix", "--json"])).expect("matrix JSON");
        let links = m[0]["links"].as_array().cloned().unwrap_or_default();
        let measured = links.iter().filter(|l| l["rtt_p50_us"].is_u64()).count();
        let has_pair = m[0]["vms"].as_array().is_some_and(|v| {
            v.iter()
                .any(|v| v["src"] == a.ip.to_string() && v["packets"].as_u64() >= Some(20))
        });
        if measured == 6 && has_pair {
            break m;
        }
        assert!(Instant::now() < deadline, "matrix incomplete: {m:#}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(m[0]["lan"], "lan1");
    assert_eq!(m[0]["hosts"].as_array().map(Vec::len), Some(3));
    let pair = m[0]["vms"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["src"] == a.ip.to_string()))
        .cloned()
        .expect("pair");
    assert_eq!(pair["dst"], c.ip.to_string());
    assert_eq!(pair["src_host"], "h1");
    assert!(f(&pair["packets"]) >= 20.0, "{pair}");
    let text = lab.bulletin_cli(&["matrix", "--lan", "lan1"]);
    assert!(
        text.contains("LAN lan1  3 hosts reporting")
            && text.contains("RTT p50 (ms), row -> column")
            && text.contains(&c.ip.to_string()),
        "{text}"
    );
}
