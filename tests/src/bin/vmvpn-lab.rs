//! `vmvpn-lab`: the namespace lab for people (the tests use the same `Lab`).
//!
//! `vmvpn-lab demo` builds three hosts in two routed subnets with two VMs each, pings every
//! VM from every other, prints `vmvpn status` of each host, and removes everything.
//! `vmvpn-lab up` builds the same lab and keeps it until Ctrl-C or SIGTERM.

use std::process::{Command, ExitCode};
use std::time::Duration;

use vmvpn_tests::{Lab, Vm, cpu_ticks, rss_kib, set_int, vmvpn_bin};

const USAGE: &str =
    "usage: vmvpn-lab demo | up | quiet | flood-cost | soak | soak-churn | telemetry-cost | uso-cost | peers-cost | relay-cost

  demo  build 3 hosts (h1, h2 in 10.77.1.0/24; h3 in 10.77.2.0/24 behind a router) and
        a bulletin, 2 VMs each on LAN lan1 (192.168.100.0/24); ping all 30 VM pairs; run
        iperf3 for 3 s; print `vmvpn status` of every host, `vmvpn vms`, `flows`, `ping`
        and `bulletin matrix`; remove everything. Exit 1 if a ping fails.
  up    build the same lab and keep it running until Ctrl-C; prints how to use it.
  quiet [MINUTES]  the demo's lab, ping matrix and full-speed iperf3 (8 s), then MINUTES
        (default 10) of quiet with a few pings every 10 s, under the default alarm rules;
        prints every alert that went pending or fired on any host. Exit 1 if one did.
  flood-cost  underlay datagrams and bytes per flooded frame for 2 subnets x 5 hosts and
        4 subnets x 10 hosts, flood = auto (multicast + forwarders) and unicast; a markdown
        table on stdout, JSON to the file if given.
  soak [JSON-FILE [MINUTES]]  RSS of a daemon with 100 peers, idle and over a soak of
        pings (default 10 minutes).
  soak-churn [JSON-FILE [MINUTES]]  two stable hosts ping each other (20 a second) while
        four others join, leave (SIGTERM) and crash (SIGKILL) every 3 s through a bulletin;
        loss between the stable pair and RSS of their daemons and the bulletin each minute.
  telemetry-cost [JSON-FILE]  iperf3 TCP VM -> VM with telemetry on and off
        ([telemetry] probes/flows = false), 3 interleaved rounds; a markdown table.
  uso-cost [JSON-FILE]  a VM sends 1200-byte datagrams in UDP_SEGMENT sends of 40, as fast
        as it can for 3 s, to a VM of another host, with USO on the sending host's TAP and
        off (ethtool: the kernel cuts the sends before the TAP), 3 interleaved rounds: the
        datagrams that arrived per second and the sending daemon's CPU per datagram.
  peers-cost [JSON-FILE]  a VM sends 64-byte datagrams to VMs of three other hosts in
        turn, as fast as it can for 3 s, with the sending daemon's runs to its peers
        leaving many to a sendmmsg and one by one (VMVPN_NO_MMSG=1), 3 interleaved rounds
        of a fresh lab each: the datagrams that arrived per second and the sending
        daemon's CPU per datagram.
  relay-cost [JSON-FILE]  two hosts each behind a masquerading router, a public relay
        host: iperf3 TCP VM -> VM and ping RTT over a punched path (port-keeping NATs)
        and a relayed one (fully-random NATs), 3 interleaved rounds; the time each path
        took to open; a markdown table.

Needs root (network namespaces, TAP devices). Set VMVPN_LAB_KEEP=1 to keep logs.";

fn build() -> Lab {
    vmvpn_tests::demo_lab("lab", [192, 168, 100])
}

fn cli(lab: &Lab, h: &str, args: &[&str]) -> String {
    let out = Command::new(vmvpn_bin())
        .args(args)
        .arg("--socket")
        .arg(lab.socket(h))
        .output();
    match out {
        Ok(o) => {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        }
        Err(e) => format!("cannot run vmvpn: {e}"),
    }
}

fn demo() -> ExitCode {
    let lab = build();
    let vms = lab.vms().to_vec();
    println!(
        "== lab: hosts h1, h2 (10.77.1.0/24) and h3 (10.77.2.0/24), routed; 2 VMs per host on lan1\n"
    );
    println!("== ping matrix (row pings column; ok = echo reply over the overlay)\n");
    print!("{:>18}", "");
    for b in &vms {
        print!(" {:>18}", format!("{}:{}", b.host, b.ip));
    }
    println!();
    let mut failed = 0;
    for a in &vms {
        print!("{:>18}", format!("{}:{}", a.host, a.ip));
        for b in &vms {
            let cell = if a.ns == b.ns {
                "-"
            } else if lab.ping(a, b.ip) {
                "ok"
            } else {
                failed += 1;
                "FAIL"
            };
            print!(" {cell:>18}");
        }
        println!();
    }
    println!();
    // Some traffic for the telemetry views: a 4 s TCP stream from a VM of h1 to one of h3;
    // the status of h1 is taken while it runs, so its rates show.
    let (a, z) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h3", "lan1", 1).clone(),
    );
    let (r, during) = std::thread::scope(|s| {
        let run = s.spawn(|| lab.iperf3(&a, &z, &["-t", "4"]));
        std::thread::sleep(Duration::from_millis(3000));
        let during = cli(&lab, "h1", &["status"]);
        (run.join(), during)
    });
    let bps = r
        .ok()
        .and_then(|r| r["end"]["sum_received"]["bits_per_second"].as_f64())
        .unwrap_or(0.0);
    println!("== iperf3 {} -> {}: {:.1} Mbit/s\n", a.ip, z.ip, bps / 1e6);
    println!("== vmvpn status on h1, during the iperf3 run\n{during}");
    std::thread::sleep(Duration::from_millis(1500)); // reports reach the bulletin
    for h in ["h2", "h3"] {
        println!("== vmvpn status on {h}\n{}", cli(&lab, h, &["status"]));
    }
    println!("== vmvpn macs on h1\n{}", cli(&lab, "h1", &["macs"]));
    println!("== vmvpn vms on h1\n{}", cli(&lab, "h1", &["vms"]));
    println!(
        "== vmvpn flows --top 5 on h1\n{}",
        cli(&lab, "h1", &["flows", "--top", "5"])
    );
    println!(
        "== vmvpn ping {} on h1 (the host behind that VM)\n{}",
        z.ip,
        cli(
            &lab,
            "h1",
            &["ping", &z.ip.to_string(), "-c", "3", "-i", "0.2"]
        )
    );
    println!("== bulletin matrix\n{}", lab.bulletin_cli(&["matrix"]));
    if failed > 0 {
        eprintln!("demo: {failed} of 30 pings failed");
        return ExitCode::FAILURE;
    }
    println!("demo: all 30 VM pairs reach each other; removing the lab");
    ExitCode::SUCCESS
}

fn up() -> ExitCode {
    let lab = build();
    println!("lab is up (files in {}).", lab.dir().display());
    for h in ["h1", "h2", "h3"] {
        println!(
            "  host {h}: namespace {}  underlay {}  status: {} status --socket {}",
            lab.host_ns(h),
            lab.host_ip(h),
            vmvpn_bin().display(),
            lab.socket(h).display()
        );
    }
    for v in lab.vms() {
        println!(
            "  VM on {}: namespace {}  {}  ({})",
            v.host, v.ns, v.ip, v.mac
        );
    }
    if let Some(v) = lab.vms().first() {
        println!(
            "\ntry: ip netns exec {} ping {}",
            v.ns,
            lab.vms().last().map_or(v.ip, |w| w.ip)
        );
    }
    if let Some((addr, fp)) = lab.bulletin_addr() {
        println!(
            "\nbulletin: ip netns exec {} {} ls --server {addr} --fingerprint {fp} --token-file {}",
            lab.router_ns(),
            vmvpn_bin().with_file_name("bulletin").display(),
            lab.operator_token().display()
        );
    }
    println!("\nCtrl-C (or SIGTERM) removes everything.");
    // Block SIGINT/SIGTERM only now: the daemons, already started, keep default handling.
    // SAFETY: plain signal-mask calls on a local, initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
    println!("removing the lab");
    drop(lab);
    ExitCode::SUCCESS
}

fn flood_cost(json: Option<String>) -> ExitCode {
    let mut rows = Vec::new();
    println!(
        "| subnets x hosts | mode | underlay datagrams per flooded frame | underlay bytes per frame |"
    );
    println!("| --- | --- | --- | --- |");
    for (subnets, per) in [(2usize, 5usize), (4, 10)] {
        for mode in ["auto", "unicast"] {
            let names: Vec<Vec<String>> = (0..subnets)
                .map(|s| (0..per).map(|k| format!("s{}h{}", s + 1, k + 1)).collect())
                .collect();
            let all: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
            let mut b = Lab::builder("cost")
                .lan("lan1", [192, 168, 100], &all, 1)
                .bulletin(30, 10)
                .flood(mode);
            for n in &names {
                b = b.subnet(&n.iter().map(String::as_str).collect::<Vec<_>>());
            }
            let lab = b.start();
            for h in &all {
                lab.wait_tunnels(h, "lan1", all.len() - 1, Duration::from_secs(60));
            }
            std::thread::sleep(Duration::from_secs(3));
            let from = lab.vm(all[0], "lan1", 0).clone();
            let (d, by) = lab.flood_cost(&from, 2000, Duration::from_millis(5));
            let st = lab.status(all[0]);
            let (drops, sent) = (
                &st["lans"][0]["drops"]["udp_send_error"],
                &st["lans"][0]["flood"]["frames_total"],
            );
            eprintln!(
                "{subnets}x{per} {mode}: sender flooded {sent} frames, udp_send_error {drops}"
            );
            let label = if mode == "auto" {
                "multicast + forwarders"
            } else {
                "unicast replication"
            };
            println!("| {subnets} x {per} | {label} | {d:.2} | {by:.0} |");
            rows.push(
                serde_json::json!({"subnets": subnets, "hosts_per_subnet": per, "mode": mode,
                                         "datagrams_per_frame": d, "bytes_per_frame": by}),
            );
        }
    }
    if !save(json, &serde_json::Value::from(rows)) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Throughput with telemetry on (default) and off (`probes = false`, `flows = false`),
/// iperf3 TCP VM -> VM across two routed subnets, interleaved rounds in one run.
fn telemetry_cost(json: Option<String>, rounds: usize) -> ExitCode {
    let mut results: Vec<(String, Vec<f64>)> =
        vec![("on".into(), Vec::new()), ("off".into(), Vec::new())];
    for round in 0..rounds {
        for (mode, samples) in results.iter_mut() {
            let mut b = Lab::builder("tcost").subnet(&["h1"]).subnet(&["h2"]).lan(
                "lan1",
                [192, 168, 100],
                &["h1", "h2"],
                1,
            );
            if mode == "off" {
                b = b.telemetry("probes = false\nflows = false\n");
            }
            let lab = b.start();
            lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
            let (a, z) = (
                lab.vm("h1", "lan1", 0).clone(),
                lab.vm("h2", "lan1", 0).clone(),
            );
            let _ = lab.ping(&a, z.ip);
            let r = lab.iperf3(&a, &z, &["-t", "8", "-O", "1"]);
            let bps = r["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0);
            eprintln!(
                "round {}: telemetry {mode}: {:.3} Gbit/s",
                round + 1,
                bps / 1e9
            );
            samples.push(bps);
        }
    }
    let (on, off) = (median(&results[0].1), median(&results[1].1));
    println!("| telemetry | iperf3 TCP VM -> VM, median of {rounds} (Gbit/s) | runs |");
    println!("| --- | --- | --- |");
    for (mode, v) in &results {
        println!(
            "| {mode} | {:.3} | {} |",
            median(v) / 1e9,
            v.iter()
                .map(|x| format!("{:.3}", x / 1e9))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "\ncost of telemetry: {:.1} % of throughput (on / off = {:.3})",
        (1.0 - on / off.max(1.0)) * 100.0,
        on / off.max(1.0)
    );
    let v = serde_json::json!({
        "bench": "telemetry-cost",
        "binary": vmvpn_bin().display().to_string(),
        "rounds": rounds,
        "on_bps": results[0].1, "off_bps": results[1].1,
        "on_median_bps": on, "off_median_bps": off, "on_over_off": on / off.max(1.0),
    });
    if !save(json, &v) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// What a relayed path costs against a punched one, in one run: h2 and h3 each behind a
/// masquerading router, h1 public and the relay; port-keeping NATs punch, fully-random
/// ones need the relay.
fn relay_cost(json: Option<String>, rounds: usize) -> ExitCode {
    #[derive(Default)]
    struct Runs {
        bps: Vec<f64>,
        rtt_ms: Vec<f64>,
        open_ms: Vec<f64>,
    }
    let modes = [("punched", ""), ("relayed", "fully-random")];
    let mut runs: Vec<Runs> = modes.iter().map(|_| Runs::default()).collect();
    for round in 0..rounds {
        for (i, (mode, nat)) in modes.iter().enumerate() {
            let relays = "relays = [\"10.77.1.1:7402\"]";
            let lab = Lab::builder("rcost")
                .subnet(&["h1"])
                .subnet(&["h2"])
                .subnet(&["h3"])
                .nat(2, nat)
                .nat(3, nat)
                .lan("lan1", [192, 168, 100], &["h1", "h2", "h3"], 1)
                .bulletin(6, 2)
                .host_line("h1", "relay = true")
                .host_line("h2", relays)
                .host_line("h3", relays)
                .start();
            lab.wait_tunnels("h2", "lan1", 2, Duration::from_secs(30));
            let p = lab.peer("h2", "lan1", "h3");
            if p["path"] != *mode {
                eprintln!("round {}: expected a {mode} path: {p:#}", round + 1);
                return ExitCode::FAILURE;
            }
            let (a, z) = (
                lab.vm("h2", "lan1", 0).clone(),
                lab.vm("h3", "lan1", 0).clone(),
            );
            let ping = lab.exec(
                &a.ns,
                &[
                    "ping",
                    "-n",
                    "-q",
                    "-c",
                    "20",
                    "-i",
                    "0.05",
                    &z.ip.to_string(),
                ],
            );
            // rtt min/avg/max/mdev = 0.301/0.402/0.613/0.071 ms
            let text = String::from_utf8_lossy(&ping.stdout);
            let avg = text
                .split(" = ")
                .nth(1)
                .and_then(|t| t.split('/').nth(1))
                .and_then(|t| t.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
            let r = lab.iperf3(&a, &z, &["-t", "8", "-O", "1"]);
            let bps = r["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0);
            let open = p["path_open_ms"].as_f64().unwrap_or(f64::NAN);
            eprintln!(
                "round {}: {mode}: {:.3} Gbit/s, ping avg {avg:.3} ms, opened in {open} ms",
                round + 1,
                bps / 1e9
            );
            runs[i].bps.push(bps);
            runs[i].rtt_ms.push(avg);
            runs[i].open_ms.push(open);
        }
    }
    println!(
        "| path | iperf3 TCP VM -> VM, median of {rounds} (Gbit/s) | ping avg (ms) | opened in (ms, from the first hello) | runs (Gbit/s) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for ((mode, _), r) in modes.iter().zip(&runs) {
        println!(
            "| {mode} | {:.3} | {:.3} | {:.0} | {} |",
            median(&r.bps) / 1e9,
            median(&r.rtt_ms),
            median(&r.open_ms),
            r.bps
                .iter()
                .map(|x| format!("{:.3}", x / 1e9))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let ratio = median(&runs[1].bps) / median(&runs[0].bps).max(1.0);
    println!("\nrelayed / punched throughput = {ratio:.3}");
    let v = serde_json::json!({
        "bench": "relay-cost",
        "binary": vmvpn_bin().display().to_string(),
        "rounds": rounds,
        "punched_bps": runs[0].bps, "relayed_bps": runs[1].bps,
        "punched_ping_ms": runs[0].rtt_ms, "relayed_ping_ms": runs[1].rtt_ms,
        "punched_open_ms": runs[0].open_ms, "relayed_open_ms": runs[1].open_ms,
        "relayed_over_punched": ratio,
    });
    if !save(json, &v) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Each round's figure, scaled, for a table's cell.
fn list(v: &[f64], scale: f64) -> String {
    v.iter()
        .map(|x| format!("{:.2}", x * scale))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Datagrams per send of the UDP_SEGMENT sender, and their size.
const USO_BURST: usize = 40;
const USO_SIZE: usize = 1200;

/// What USO on the TAP buys a VM that sends with UDP_SEGMENT: h1's VM sends to h2's VM
/// in two subnets, with h1's TAP taking the sends whole (USO) and with the kernel cutting
/// them before the TAP (`tx-udp-segmentation off`), alternately in one lab.
fn uso_cost(json: Option<String>, rounds: usize) -> ExitCode {
    let lab = Lab::builder("usocost")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 100], &["h1", "h2"], 1)
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    let (a, z) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    let _ = lab.ping(&a, z.ip);
    let sender = lab.pid("h1");
    // Per mode: datagrams per second that arrived, CPU µs of h1's daemon per datagram.
    let mut runs = [
        ("on", Vec::new(), Vec::new()),
        ("off", Vec::new(), Vec::new()),
    ];
    for round in 0..rounds {
        for (mode, rates, cpu) in runs.iter_mut() {
            let set = ["ethtool", "-K", "tap0", "tx-udp-segmentation", mode];
            let out = lab.exec(lab.host_ns("h1"), &set);
            if !out.status.success() {
                eprintln!("{set:?}: {}", String::from_utf8_lossy(&out.stderr));
                return ExitCode::FAILURE;
            }
            let ticks = cpu_ticks(&[sender]);
            let (arrived, secs) = udp_segment_blast(&lab, &a, &z, Duration::from_secs(3));
            let us = (cpu_ticks(&[sender]) - ticks) as f64 * 1e4 / arrived.max(1) as f64;
            let rate = arrived as f64 / secs.max(1e-3);
            eprintln!(
                "round {}: USO {mode}: {:.0} k datagrams/s arrived, {us:.2} µs of the sending daemon's CPU each",
                round + 1,
                rate / 1e3
            );
            rates.push(rate);
            cpu.push(us);
        }
    }
    println!(
        "| USO | k datagrams/s arrived, median of {rounds} | sending daemon's CPU per datagram (µs) | runs (k/s) | runs (µs) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (mode, rates, cpu) in &runs {
        println!(
            "| {mode} | {:.0} | {:.2} | {} | {} |",
            median(rates) / 1e3,
            median(cpu),
            list(rates, 1e-3),
            list(cpu, 1.0)
        );
    }
    let ratio = median(&runs[0].1) / median(&runs[1].1).max(1.0);
    println!(
        "
with USO / without = {ratio:.2}"
    );
    let v = serde_json::json!({
        "bench": "uso-cost",
        "binary": vmvpn_bin().display().to_string(),
        "rounds": rounds, "datagram_bytes": USO_SIZE, "datagrams_per_send": USO_BURST,
        "on_per_s": runs[0].1, "off_per_s": runs[1].1,
        "on_cpu_us": runs[0].2, "off_cpu_us": runs[1].2,
        "on_over_off": ratio,
    });
    if !save(json, &v) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Bytes of each datagram of `peers_cost`.
const SMALL: usize = 64;

/// What batching across peers buys small frames: h1's VM sends 64-byte datagrams to the
/// VMs of h2, h3 and h4 in turn, so h1's daemon has runs of one datagram to peers in turn;
/// they leave many to a `sendmmsg` (default) or one per call (`VMVPN_NO_MMSG=1`), in a
/// fresh lab each, interleaved.
fn peers_cost(json: Option<String>, rounds: usize) -> ExitCode {
    let modes = ["sendmmsg", "one by one"];
    // Per mode: datagrams per second that arrived, CPU µs of h1's daemon per datagram,
    // and the runs each sendmmsg carried.
    let mut runs: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); 2];
    for round in 0..rounds {
        for (m, mode) in modes.iter().enumerate() {
            let mut b = Lab::builder("peerscost")
                .subnet(&["h1"])
                .subnet(&["h2", "h3", "h4"])
                .lan("lan1", [192, 168, 100], &["h1", "h2", "h3", "h4"], 1);
            if m == 1 {
                b = b.daemon_env("VMVPN_NO_MMSG", "1");
            }
            let lab = b.start();
            lab.wait_tunnels("h1", "lan1", 3, Duration::from_secs(20));
            let a = lab.vm("h1", "lan1", 0).clone();
            let to: Vec<Vm> = ["h2", "h3", "h4"]
                .iter()
                .map(|h| lab.vm(h, "lan1", 0).clone())
                .collect();
            for z in &to {
                let _ = lab.ping(&a, z.ip);
            }
            let sender = lab.pid("h1");
            let ticks = cpu_ticks(&[sender]);
            let (arrived, secs) = small_to_peers(&lab, &a, &to, Duration::from_secs(3));
            let us = (cpu_ticks(&[sender]) - ticks) as f64 * 1e4 / arrived.max(1) as f64;
            let rate = arrived as f64 / secs.max(1e-3);
            let off = &lab.status("h1")["offload"];
            let per_call = off["mmsg_runs_total"].as_f64().unwrap_or(0.0)
                / off["mmsg_sends_total"].as_f64().unwrap_or(0.0).max(1.0);
            eprintln!(
                "round {}: {mode}: {:.0} k datagrams/s arrived, {us:.2} µs of the sending daemon's CPU each, {per_call:.1} runs per sendmmsg",
                round + 1,
                rate / 1e3
            );
            runs[m].0.push(rate);
            runs[m].1.push(us);
            runs[m].2.push(per_call);
        }
    }
    println!(
        "| runs to peers | k datagrams/s arrived, median of {rounds} | sending daemon's CPU per datagram (µs) | runs per sendmmsg | rounds (k/s) | rounds (µs) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (mode, (rates, cpu, per)) in modes.iter().zip(&runs) {
        println!(
            "| {mode} | {:.0} | {:.2} | {:.1} | {} | {} |",
            median(rates) / 1e3,
            median(cpu),
            median(per),
            list(rates, 1e-3),
            list(cpu, 1.0)
        );
    }
    let ratio = median(&runs[0].0) / median(&runs[1].0).max(1.0);
    let cpu_ratio = median(&runs[0].1) / median(&runs[1].1).max(1e-9);
    println!("\nsendmmsg / one by one: {ratio:.2}x the datagrams, {cpu_ratio:.2}x the CPU each");
    let v = serde_json::json!({
        "bench": "peers-cost",
        "binary": vmvpn_bin().display().to_string(),
        "rounds": rounds, "datagram_bytes": SMALL, "peers": 3,
        "mmsg_per_s": runs[0].0, "one_by_one_per_s": runs[1].0,
        "mmsg_cpu_us": runs[0].1, "one_by_one_cpu_us": runs[1].1,
        "runs_per_mmsg": runs[0].2,
        "rate_ratio": ratio, "cpu_ratio": cpu_ratio,
    });
    if !save(json, &v) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `from` sends 64-byte datagrams to each of `to` in turn, as fast as it can for `secs`;
/// the datagrams that arrived (all receivers) and the seconds from the first to the last.
fn small_to_peers(lab: &Lab, from: &Vm, to: &[Vm], secs: Duration) -> (u64, f64) {
    let dsts: Vec<std::net::SocketAddr> = to
        .iter()
        .map(|z| std::net::SocketAddr::from((z.ip, 5004)))
        .collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receivers: Vec<_> = to
        .iter()
        .zip(&dsts)
        .map(|(z, &dst)| {
            let ready = ready_tx.clone();
            lab.in_ns(&z.ns, move || {
                let s = std::net::UdpSocket::bind(dst).expect("bind");
                set_int(&s, libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20);
                s.set_read_timeout(Some(Duration::from_secs(1)))
                    .expect("timeout");
                let _ = ready.send(());
                let mut buf = [0u8; 2048];
                let (mut n, mut first, mut last) = (0u64, None, std::time::Instant::now());
                while s.recv(&mut buf).is_ok() {
                    n += 1;
                    last = std::time::Instant::now();
                    first.get_or_insert(last);
                }
                (n, first, last)
            })
        })
        .collect();
    for _ in &dsts {
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    }
    let sender = lab.in_ns(&from.ns, move || {
        let s = std::net::UdpSocket::bind(("0.0.0.0", 0)).expect("bind");
        let payload = [0x5a_u8; SMALL];
        let end = std::time::Instant::now() + secs;
        // Bounded by time; a full queue (ENOBUFS) is the load this measures, not an error.
        'send: loop {
            for d in &dsts {
                if std::time::Instant::now() >= end {
                    break 'send;
                }
                let _ = s.send_to(&payload, d);
            }
        }
    });
    let _ = sender.join();
    let mut total = 0;
    let (mut first, mut last): (Option<std::time::Instant>, Option<std::time::Instant>) =
        (None, None);
    for r in receivers {
        if let Ok((n, f, l)) = r.join() {
            total += n;
            if let Some(f) = f {
                first = Some(first.map_or(f, |x| x.min(f)));
                last = Some(last.map_or(l, |x| x.max(l)));
            }
        }
    }
    let secs = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    (total, secs)
}

/// `from` sends UDP_SEGMENT sends as fast as it can for `secs` to `to`, which reads them
/// with UDP_GRO (merged, as vmvpn writes them); the datagrams that arrived and the seconds
/// from the first to the last.
fn udp_segment_blast(lab: &Lab, from: &Vm, to: &Vm, secs: Duration) -> (u64, f64) {
    let dst = std::net::SocketAddr::from((to.ip, 5003));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = lab.in_ns(&to.ns, move || {
        let s = std::net::UdpSocket::bind(dst).expect("bind");
        set_int(&s, libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20);
        set_int(&s, libc::SOL_UDP, libc::UDP_GRO, 1);
        s.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let _ = ready_tx.send(());
        let mut buf = vec![0u8; 65_536];
        let (mut bytes, mut first, mut last) = (0usize, None, std::time::Instant::now());
        while let Ok(n) = s.recv(&mut buf) {
            bytes += n;
            last = std::time::Instant::now();
            first.get_or_insert(last);
        }
        let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
        ((bytes / USO_SIZE) as u64, secs)
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    let sender = lab.in_ns(&from.ns, move || {
        let s = std::net::UdpSocket::bind(("0.0.0.0", 0)).expect("bind");
        s.connect(dst).expect("connect");
        set_int(
            &s,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            USO_SIZE as libc::c_int,
        );
        let burst = vec![0x5a_u8; USO_SIZE * USO_BURST];
        let end = std::time::Instant::now() + secs;
        // Bounded by time; a full queue (ENOBUFS) is the load this measures, not an error.
        while std::time::Instant::now() < end {
            let _ = s.send(&burst);
        }
    });
    let _ = sender.join();
    receiver.join().unwrap_or((0, 0.0))
}

/// Memory with one LAN and 100 peers (1 up, 99 listed but unreachable), idle and then
/// over a soak of `minutes` with pings between two VMs (bounded: 20 per second).
fn soak(json: Option<String>, minutes: u64) -> ExitCode {
    let lab = Lab::builder("soak")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 100], &["h1", "h2"], 1)
        .extra_peers(99)
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    let pid = lab.pid("h1");
    let peers = lab.status("h1")["lans"][0]["peers"]
        .as_array()
        .map_or(0, Vec::len);
    std::thread::sleep(Duration::from_secs(5));
    let idle = rss_kib(pid);
    println!(
        "h1: {peers} peers, idle RSS {:.1} MiB",
        idle as f64 / 1024.0
    );
    let (a, z) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    let mut samples = vec![(0u64, idle)];
    for m in 1..=minutes {
        // One minute of pings, 20 a second: 1200 per minute.
        let _ = lab.ping_burst(&a, z.ip, 1200, "0.05");
        let r = rss_kib(pid);
        println!("after {m} min: RSS {:.1} MiB", r as f64 / 1024.0);
        samples.push((m, r));
    }
    let last = samples.last().map_or(idle, |s| s.1);
    let first_loaded = samples.get(1).map_or(idle, |s| s.1);
    println!(
        "\nidle RSS with {peers} peers: {:.1} MiB; growth from minute 1 to {minutes}: {:+.1} MiB",
        idle as f64 / 1024.0,
        (last as f64 - first_loaded as f64) / 1024.0
    );
    let v = serde_json::json!({
        "bench": "soak", "peers": peers, "minutes": minutes,
        "idle_rss_kib": idle, "rss_kib_by_minute": samples,
    });
    if !save(json, &v) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn soak_churn(json: Option<String>, minutes: u64) -> ExitCode {
    vmvpn_tests::soak::heap_log_env();
    let soak = vmvpn_tests::soak::churn_soak(minutes);
    println!("stable pair: {}", soak.ping);
    println!(
        "churn: {} graceful leaves, {} crashes, {} joins in {minutes} min",
        soak.leaves, soak.crashes, soak.joins
    );
    // The last five sixths: the hour's last 50 minutes.
    let drift = soak.drift(minutes / 6);
    for d in &drift {
        println!(
            "{}: from minute {} RSS {} -> {} KiB (range {:.2} %), heap in use {:?} -> {:?} B ({})",
            d.process,
            d.from_minute,
            d.rss_kib.0,
            d.rss_kib.1,
            d.rss_range_pct,
            d.heap_in_use.0,
            d.heap_in_use.1,
            d.heap_growth_pct
                .map_or("unknown".into(), |g| format!("{g:+.2} %"))
        );
    }
    let v = serde_json::json!({ "bench": "soak-churn", "soak": soak, "drift": drift });
    if !save(json, &v) {
        return ExitCode::FAILURE;
    }
    if soak.lost {
        eprintln!("the stable pair lost pings during the churn");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The demo's traffic, then `minutes` of quiet, while every host's alerts are watched.
fn quiet(minutes: u64) -> ExitCode {
    let lab = build();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let watch = s.spawn(|| lab.watch_alerts(&["h1", "h2", "h3"], &stop));
        vmvpn_tests::demo_traffic(&lab);
        let until = std::time::Instant::now() + Duration::from_secs(60 * minutes);
        let vms = lab.vms().to_vec();
        let mut k = 0;
        while std::time::Instant::now() < until {
            let (a, b) = (&vms[k % vms.len()], &vms[(k + 3) % vms.len()]);
            let _ = lab.ping_burst(a, b.ip, 3, "0.2");
            k += 1;
            std::thread::sleep(Duration::from_secs(10));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        watch.join()
    });
    let Ok(seen) = seen else {
        eprintln!("the alert watcher failed");
        return ExitCode::FAILURE;
    };
    println!(
        "{} polls of 3 hosts over the demo's traffic and {minutes} quiet minutes: {} alerts went pending or fired",
        seen.polls,
        seen.lines.len()
    );
    for l in &seen.lines {
        println!("  {l}");
    }
    if seen.lines.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The median (upper middle) of `v`; 0 when empty.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Write `v` to the JSON file, if one was named; false (and why, on stderr) if it failed.
fn save(json: Option<String>, v: &serde_json::Value) -> bool {
    let Some(p) = json else { return true };
    match std::fs::write(&p, serde_json::to_string_pretty(v).unwrap_or_default()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("cannot write {p}: {e}");
            false
        }
    }
}

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("demo") => demo(),
        Some("quiet") => quiet(
            std::env::args()
                .nth(2)
                .and_then(|m| m.parse().ok())
                .unwrap_or(10),
        ),
        Some("up") => up(),
        Some("flood-cost") => flood_cost(std::env::args().nth(2)),
        Some("telemetry-cost") => telemetry_cost(std::env::args().nth(2), 3),
        Some("uso-cost") => uso_cost(std::env::args().nth(2), 3),
        Some("peers-cost") => peers_cost(std::env::args().nth(2), 3),
        Some("relay-cost") => relay_cost(std::env::args().nth(2), 3),
        Some("soak") => soak(
            std::env::args().nth(2),
            std::env::args()
                .nth(3)
                .and_then(|m| m.parse().ok())
                .unwrap_or(10),
        ),
        Some("soak-churn") => soak_churn(
            std::env::args().nth(2),
            std::env::args()
                .nth(3)
                .and_then(|m| m.parse().ok())
                .unwrap_or(10),
        ),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
