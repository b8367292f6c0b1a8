//! Service addresses with real daemons: two backend VMs on two hosts hold the service
//! address on their loopback (direct server return, as LVS-DR backends do) and run an
//! HTTP server that answers with its own name; a client VM on a third host opens 1200
//! new connections to the address. Its host answers ARP for the address with the service's
//! virtual MAC and sends each new connection to a backend by Maglev hashing: the split
//! follows the weights within ±15 %, every connection is answered, and each backend
//! answers the client directly. A long transfer keeps its backend through a reload that
//! moves nearly every slot of the table away from it. A second lab runs the default
//! policy, least-load, against a backend loaded by iperf3 and one whose link goes down.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmvpn_tests::{Lab, Vm};

/// HTTP servers started in the backends' namespaces, stopped by their PIDs.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Give `vm` the service address on its loopback, keep it from answering ARP for it, and
/// serve `name` over HTTP on it (port 80).
fn backend(lab: &Lab, vm: &Vm, vip: &str, name: &str, servers: &mut Servers) {
    let dir = lab.dir().join(format!("www-{name}"));
    std::fs::create_dir_all(&dir).expect("www dir");
    std::fs::write(dir.join("index.html"), name).expect("index");
    // For the long transfer: 24 MiB.
    std::fs::write(dir.join("big"), vec![0u8; 24 << 20]).expect("big file");
    // The two lines and the address the README gives for every backend.
    for sysctl in [
        "net.ipv4.conf.all.arp_ignore=1",
        "net.ipv4.conf.all.arp_announce=2",
    ] {
        let out = lab.exec(&vm.ns, &["sysctl", "-q", "-w", sysctl]);
        assert!(out.status.success(), "{sysctl}: {out:?}");
    }
    let v6 = vip.contains(':');
    let prefix = if v6 { 128 } else { 32 };
    let out = lab.exec(
        &vm.ns,
        &["ip", "addr", "add", &format!("{vip}/{prefix}"), "dev", "lo"],
    );
    assert!(out.status.success(), "{out:?}");
    serve(lab, vm, vip, name, servers);
}

/// Serve `name` over HTTP on `vip` port 80 in `vm` (its files made by [`backend`]), and
/// wait until it answers.
fn serve(lab: &Lab, vm: &Vm, vip: &str, name: &str, servers: &mut Servers) {
    let dir = lab.dir().join(format!("www-{name}"));
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &vm.ns,
            "/usr/bin/python3",
            "-m",
            "http.server",
        ])
        .args(["80", "--bind", vip, "--directory"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server (scripts/deps.sh installs python3)");
    servers.0.push(child);
    // Listening: asked from its own VM, over its loopback (bounded: 10 s). Without this
    // wait, the first connections to a backend still starting were refused.
    let t0 = Instant::now();
    while lab
        .exec(&vm.ns, &["curl", "-sg", "--max-time", "1", &url(vip)])
        .stdout
        != name.as_bytes()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{name} does not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The URL of the service at `vip` (brackets around an IPv6 address).
fn url(vip: &str) -> String {
    if vip.contains(':') {
        format!("http://[{vip}]/")
    } else {
        format!("http://{vip}/")
    }
}

/// Three hosts (h1 and h2 on one subnet, h3 on another) on `lan1` (`net`), `vms` VMs
/// each, every host carrying `service`, tunnels up: the lab, the backends (the first VM of
/// h1 and of h2: MACs 02:00:00:01:00:00 and 02:00:00:02:00:00) and the client (h3's),
/// each backend heard by every host.
fn service_lab(
    tag: &str,
    net: [u8; 3],
    vms: usize,
    ipv6: bool,
    service: &str,
) -> (Lab, Vm, Vm, Vm) {
    let mut b = Lab::builder(tag).subnet(&["h1", "h2"]).subnet(&["h3"]).lan(
        "lan1",
        net,
        &["h1", "h2", "h3"],
        vms,
    );
    if ipv6 {
        b = b.ipv6();
    }
    let lab = b
        .config_tail("h1", service)
        .config_tail("h2", service)
        .config_tail("h3", service)
        .start();
    for h in ["h1", "h2", "h3"] {
        lab.wait_tunnels(h, "lan1", 2, Duration::from_secs(20));
    }
    let (v1, v2, client) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
        lab.vm("h3", "lan1", 0).clone(),
    );
    assert_eq!(
        (v1.mac.as_str(), v2.mac.as_str()),
        ("02:00:00:01:00:00", "02:00:00:02:00:00"),
        "the lab's MACs changed"
    );
    assert!(lab.ping(&v1, client.ip) && lab.ping(&v2, client.ip));
    (lab, v1, v2, client)
}

/// `vmvpn services` on host `h`, for failure messages.
fn services_of(lab: &Lab, h: &str) -> String {
    String::from_utf8_lossy(&lab.vmvpn_cli(h, &["services"]).stdout).into_owned()
}

#[test]
fn new_connections_to_a_service_split_by_weight_and_are_answered_directly() {
    vmvpn_tests::require_root();
    let vip = "192.168.90.200";
    let (b1, b2) = ("02:00:00:01:00:00", "02:00:00:02:00:00");
    let service = format!(
        "[[lan.service]]\nname = \"web\"\naddress = \"{vip}\"\nbackends = [\"{b1}\", \"{b2}\"]\nweights = [1, 2]\nports = [80]\npolicy = \"hash\"\nprobe_from = \"192.168.90.250\"\n"
    );
    let (lab, v1, v2, client) = service_lab("svc", [192, 168, 90], 1, false, &service);
    let mut servers = Servers(Vec::new());
    backend(&lab, &v1, vip, "b1", &mut servers);
    backend(&lab, &v2, vip, "b2", &mut servers);

    // New connections, one curl each (bounded: 2 s each). Hashing splits them as coin
    // flips weighted 1:2 would: 1200 keep ±15 % at 3.7 standard deviations (300 would
    // miss it one run in 14).
    let n = 1200;
    let (n1, n2, failed) = curls(&lab, &client, vip, n, 2);
    eprintln!("{n} connections: b1 {n1}, b2 {n2}, failed {failed}");
    assert_eq!(
        failed,
        0,
        "connections not answered:\n{}",
        services_of(&lab, "h3")
    );
    assert_eq!(n1 + n2, n);
    // Weights 1 and 2: a third and two thirds, each within ±15 %.
    let (w1, w2) = (n / 3, n * 2 / 3);
    assert!(
        n1.abs_diff(w1) * 100 <= w1 * 15,
        "b1 took {n1} of {n}, weight 1 of 3"
    );
    assert!(
        n2.abs_diff(w2) * 100 <= w2 * 15,
        "b2 took {n2} of {n}, weight 2 of 3"
    );

    // `vmvpn services --json` on the client's host counted the same connections (plus
    // the few that waited for the servers above) and the ARP answers.
    let out = lab.vmvpn_cli("h3", &["services", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("services JSON");
    let svc = &v[0]["services"][0];
    assert_eq!(svc["name"], "web", "{v}");
    assert!(svc["arp_answered_total"].as_u64().unwrap_or(0) >= 1, "{v}");
    for (i, n) in [(0, n1), (1, n2)] {
        let c = svc["backends"][i]["connections_total"]
            .as_u64()
            .unwrap_or(0) as usize;
        assert!(
            (n..=n + 60).contains(&c),
            "backend {i}: {c} connections for {n}: {v}"
        );
        // The curls took well under a minute: the share of the last minute is theirs.
        let share = svc["backends"][i]["share_last_minute"]
            .as_f64()
            .unwrap_or(0.0);
        assert!(
            (share - n as f64 / 1200.0).abs() < 0.05,
            "backend {i}: share {share} for {n} of 1200"
        );
    }
    let text = String::from_utf8_lossy(&lab.vmvpn_cli("h3", &["services"]).stdout).to_string();
    assert!(text.contains("service web at 192.168.90.200"), "{text}");

    // The client's ARP entry for the address is the service's virtual MAC, not a
    // backend's: the backends never answered ARP for it.
    let neigh = lab.exec(&client.ns, &["ip", "neigh", "show", vip]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    assert!(neigh.contains("02:5e:"), "{neigh}");
    // Direct server return: the answers came from the backends' hosts, not through h3's
    // service: h1 and h2 each sent to h3 about as much as their share.
    for (h, n) in [("h1", n1), ("h2", n2)] {
        let tx = lab.peer(h, "lan1", "h3")["tx_packets"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            tx >= n as u64 * 3,
            "{h} sent {tx} packets to h3 for {n} connections"
        );
    }

    // A long transfer (24 MiB at 3 MB/s, 8 s) keeps its backend while the weights
    // change under it: every host reloads with the transfer's backend at weight 1 and
    // the other at 50, so nearly every slot of the table moves away from it. Direct
    // return means a frame sent to the other backend would be answered with a reset.
    std::thread::scope(|sc| {
        let long = sc.spawn(|| {
            lab.exec(
                &client.ns,
                &[
                    "curl",
                    "-sS",
                    "--limit-rate",
                    "3M",
                    "--max-time",
                    "30",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download}",
                    &format!("http://{vip}/big"),
                ],
            )
        });
        // Which backend serves it: the one whose load h3 sees climb.
        let t0 = Instant::now();
        let serving = loop {
            let v = lab.vmvpn_cli("h3", &["services", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&v.stdout).expect("JSON");
            let load = |i: usize| {
                v[0]["services"][0]["backends"][i]["load_mbps"]
                    .as_f64()
                    .unwrap_or(0.0)
            };
            if let Some(i) = (0..2).find(|&i| load(i) > 8.0) {
                break i;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no transfer seen: {v}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let weights = if serving == 0 { "[1, 50]" } else { "[50, 1]" };
        for h in ["h1", "h2", "h3"] {
            let path = lab.config_path(h);
            let text = std::fs::read_to_string(&path).expect("config");
            std::fs::write(
                &path,
                text.replace("weights = [1, 2]", &format!("weights = {weights}")),
            )
            .expect("config");
            let out = lab.vmvpn_cli(h, &["reload", "--json"]);
            assert!(out.status.success(), "reload on {h}: {out:?}");
        }
        let out = long.join().expect("curl");
        let got = String::from_utf8_lossy(&out.stdout).to_string();
        eprintln!(
            "long transfer on b{}: {got} B, weights now {weights}",
            serving + 1
        );
        assert!(
            out.status.success() && got == (24 << 20).to_string(),
            "the long transfer broke: {got} {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            services_of(&lab, "h3")
        );
    });
    // New connections follow the new weights: nearly all go to the other backend.
    let (n1, n2, failed) = curls(&lab, &client, vip, 50, 2);
    eprintln!("after the reload: b1 {n1}, b2 {n2}, failed {failed}");
    assert_eq!(failed, 0);
    assert!(n1.min(n2) <= 5, "{n1}/{n2}");

    // The TCP check (ports and probe_from): b2's host connects to port 80 of the
    // service address at b2 twice a second and resets each answer, so b2 keeps no
    // half-open connection of it.
    let b = backend_json(&lab, "h2", 1);
    assert_eq!(b["state"], "up", "{b}");
    let text = services_of(&lab, "h2");
    assert!(
        text.contains("checked by tcp from 192.168.90.250 to port 80"),
        "{text}"
    );
    let half_open = lab.exec(&v2.ns, &["ss", "-Htn", "state", "syn-recv"]);
    let half_open = String::from_utf8_lossy(&half_open.stdout).to_string();
    assert!(half_open.lines().count() <= 1, "half-open: {half_open}");
    // Its server stops while its VM stays up (ARP still answers): only the TCP check
    // sees it. Down within 3 s on every host, and new connections avoid it.
    let mut b2 = servers.0.remove(1);
    let _ = b2.kill();
    let _ = b2.wait();
    let down = wait_state(&lab, "h3", 1, "down", Duration::from_secs(6));
    eprintln!("b2's server stopped: down on h3 after {down:.2} s");
    assert!(
        down <= 3.0,
        "b2 was called down {down:.2} s after its server stopped\n{}",
        services_of(&lab, "h2")
    );
    assert!(lab.ping(&client, v2.ip), "b2's VM itself is up");
    let (n1, n2, failed) = curls(&lab, &client, vip, 20, 2);
    assert_eq!((n1, n2, failed), (20, 0, 0), "{}", services_of(&lab, "h3"));
    // Serving again: up within 3 s.
    let start_at = Instant::now();
    serve(&lab, &v2, vip, "b2", &mut servers);
    let up = wait_state(&lab, "h3", 1, "up", Duration::from_secs(6));
    eprintln!(
        "b2's server back: up on h3 {up:.2} s after it listened ({:.2} s after start)",
        start_at.elapsed().as_secs_f64()
    );
    assert!(up <= 3.0, "{}", services_of(&lab, "h2"));
}

/// Wait (up to `max`) until backend `i` of host `h`'s first service is in `state`: the
/// seconds it took. Fails the test at `max`.
fn wait_state(lab: &Lab, h: &str, i: usize, state: &str, max: Duration) -> f64 {
    let t0 = Instant::now();
    loop {
        let b = backend_json(lab, h, i);
        if b["state"] == state {
            return t0.elapsed().as_secs_f64();
        }
        assert!(
            t0.elapsed() < max,
            "backend {i} on {h} not {state} after {max:?}: {b}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n` curls to `vip` one after another (each bounded by `max_s`): how many each backend
/// answered, and how many failed.
fn curls(lab: &Lab, client: &Vm, vip: &str, n: usize, max_s: u32) -> (usize, usize, usize) {
    let script = format!(
        "for i in $(seq 1 {n}); do s=$(date +%s.%N); curl -sSg --max-time {max_s} '{}' 2>&1 \
         || {{ echo FAIL; echo \"curl: #$i of {n}, started at $s, failed\"; }}; echo; done",
        url(vip)
    );
    let out = lab.exec(&client.ns, &["sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |w: &str| text.lines().filter(|l| l.trim() == w).count();
    // What curl said of each failure.
    for l in text.lines().filter(|l| l.starts_with("curl:")) {
        eprintln!("{} {l}", client.ns);
    }
    (count("b1"), count("b2"), count("FAIL"))
}

/// Curls of at most 1 s each to `vip`, one after another, for `secs` seconds: when each
/// started (Unix seconds) and who answered ("FAIL" when none).
fn timed(lab: &Lab, client: &Vm, vip: &str, secs: u32) -> Vec<(f64, String)> {
    let script = format!(
        "end=$(($(date +%s) + {secs})); while [ $(date +%s) -lt $end ]; do \
         s=$(date +%s.%N); r=$(curl -sg --max-time 1 '{}' || echo FAIL); \
         echo \"$s $r\"; done",
        url(vip)
    );
    let out = lab.exec(&client.ns, &["sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (t, r) = l.split_once(' ')?;
            Some((t.parse::<f64>().ok()?, r.trim().to_string()))
        })
        .collect()
}

/// A VM's counts of SYNs its kernel dropped for a full accept queue, and of SYNs it
/// sent again (one line, for a failure message).
fn listen_drops(lab: &Lab, vm: &Vm) -> String {
    let out = lab.exec(
        &vm.ns,
        &[
            "nstat",
            "-azs",
            "TcpExtListenOverflows",
            "TcpExtListenDrops",
            "TcpExtTCPSynRetrans",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Backend `i` of host `h`'s first service, from `vmvpn services --json`.
fn backend_json(lab: &Lab, h: &str, i: usize) -> serde_json::Value {
    let out = lab.vmvpn_cli(h, &["services", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("services JSON");
    v[0]["services"][0]["backends"][i].clone()
}

/// The default policy, least-load, with real load and a real failure: idle backends of
/// equal weight share 300 new connections within ±15 %; while a bulk transfer from
/// another VM loads one, at least 70 % of new connections go to the other; when a
/// backend's VM link goes down, new connections succeed again within 3 s and none go
/// to it until it is back (and it is back within 3 s of its link); when its host dies,
/// within 3 s too; with no backend left, the default alert fires.
#[test]
fn least_load_shares_avoids_a_loaded_backend_and_fails_over_within_3_s() {
    vmvpn_tests::require_root();
    let vip = "192.168.91.201";
    let (b1, b2) = ("02:00:00:01:00:00", "02:00:00:02:00:00");
    let service = format!(
        "[[lan.service]]\nname = \"app\"\naddress = \"{vip}\"\nbackends = [\"{b1}\", \"{b2}\"]\nports = [80]\n"
    );
    let (mut lab, v1, v2, client) = service_lab("svl", [192, 168, 91], 2, false, &service);
    let loader = lab.vm("h2", "lan1", 1).clone();
    assert!(lab.ping(&loader, v1.ip));
    let mut servers = Servers(Vec::new());
    backend(&lab, &v1, vip, "b1", &mut servers);
    backend(&lab, &v2, vip, "b2", &mut servers);

    // Idle, equal weights: least-load counts this host's own new flows at once, so the
    // split is close to even.
    let (n1, n2, failed) = curls(&lab, &client, vip, 300, 2);
    eprintln!("idle: b1 {n1}, b2 {n2}, failed {failed}");
    assert_eq!(failed, 0, "{}", services_of(&lab, "h3"));
    for n in [n1, n2] {
        assert!(n.abs_diff(150) * 100 <= 150 * 15, "idle split {n1}/{n2}");
    }

    // Loaded: another VM (on b2's host) streams to b1 for 10 s; its host measures b1's
    // traffic and reports it, and the client's host steers new connections away.
    std::thread::scope(|s| {
        let bulk = s.spawn(|| lab.iperf3(&loader, &v1, &["-t", "10"]));
        let t0 = Instant::now();
        loop {
            let load = backend_json(&lab, "h3", 0)["load_mbps"]
                .as_f64()
                .unwrap_or(0.0);
            if load > 20.0 {
                eprintln!("b1's load as h3 sees it: {load:.0} Mbit/s");
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "h3 never saw b1's load:\n{}",
                services_of(&lab, "h3")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // iperf3's control and data connections to b1, counted by b1's host (h1) and
        // reported to h3 (b1 is the server: its flow table holds both).
        let open = backend_json(&lab, "h3", 0)["open_connections"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            (1..=4).contains(&open),
            "b1's open connections as h3 sees them: {open}\n{}",
            services_of(&lab, "h1")
        );
        let (n1, n2, failed) = curls(&lab, &client, vip, 100, 3);
        eprintln!("b1 loaded: b1 {n1}, b2 {n2}, failed {failed} (open connections {open})");
        let table = services_of(&lab, "h3");
        let sent = bulk.join().expect("iperf3")["end"]["sum_sent"]["bytes"]
            .as_u64()
            .unwrap_or(0);
        assert!(sent > 10_000_000, "the bulk transfer ran: {sent} B");
        assert_eq!(failed, 0, "{table}");
        assert!(n2 >= 70, "b1 loaded, b2 idle: {n1}/{n2}\n{table}");
    });

    // Failover: b2's VM link goes down on its host (its bridge port, as a VM that
    // stops). Curls of at most 1 s each, one after another, for 6 s, each noting when
    // it started: the last failure starts within 3 s of the link going down.
    let h2ns = lab.host_ns("h2").to_string();
    let now_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let down_at = now_s();
    let out = lab.exec(&h2ns, &["ip", "link", "set", "v0x0", "down"]);
    assert!(out.status.success(), "{out:?}");
    let seen = timed(&lab, &client, vip, 6);
    let last_fail = seen
        .iter()
        .filter(|(_, r)| r != "b1")
        .map(|(t, _)| t - down_at)
        .fold(0.0, f64::max);
    eprintln!(
        "b2 down: {} connections in 6 s, last failure started {last_fail:.2} s after",
        seen.len()
    );
    assert!(seen.len() >= 10, "{seen:?}");
    assert!(
        last_fail <= 3.0,
        "a connection failed {last_fail:.2} s after b2's link went down: {seen:?}\n{}",
        services_of(&lab, "h3")
    );
    let b = backend_json(&lab, "h3", 1);
    assert_eq!(b["state"], "down", "{b}");
    // None go to it while it is down.
    let flows_down = b["flows_total"].as_u64().unwrap_or(0);
    let (n1, n2, failed) = curls(&lab, &client, vip, 20, 1);
    assert_eq!((n1, n2, failed), (20, 0, 0));
    let after = backend_json(&lab, "h3", 1)["flows_total"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(flows_down, after, "new flows went to b2 while it was down");

    // Back: its link up, three answered probes; new connections reach it again.
    let up_at = now_s();
    let out = lab.exec(&h2ns, &["ip", "link", "set", "v0x0", "up"]);
    assert!(out.status.success(), "{out:?}");
    let seen = timed(&lab, &client, vip, 5);
    let back = seen.iter().find(|(_, r)| r == "b2").map(|(t, _)| t - up_at);
    eprintln!("b2 up again: first answer {back:?} s after its link");
    assert!(
        back.is_some_and(|t| t <= 3.0),
        "b2 never came back: {seen:?}\n{}",
        services_of(&lab, "h3")
    );
    assert!(seen.iter().all(|(_, r)| r != "FAIL"), "{seen:?}");

    // b2's host dies (SIGKILL): new connections succeed again within 3 s (its host is
    // quiet after 1.5 s, and called down by the tunnel's probes after about 3).
    let killed_at = now_s();
    lab.kill("h2");
    let seen = timed(&lab, &client, vip, 6);
    let last_fail = seen
        .iter()
        .filter(|(_, r)| r != "b1")
        .map(|(t, _)| t - killed_at)
        .fold(0.0, f64::max);
    eprintln!(
        "h2 killed: {} connections in 6 s, last failure started {last_fail:.2} s after; b1's listen queue: {}",
        seen.len(),
        listen_drops(&lab, &v1)
    );
    assert!(
        last_fail <= 3.0,
        "a connection failed {last_fail:.2} s after h2 died (at {killed_at:.2}): {seen:?}\n{}\n{}\n{}",
        services_of(&lab, "h3"),
        lab.loss_report("h1"),
        lab.loss_report("h3")
    );

    // Both down (b1's link too): the default rule VmvpnServiceDown fires (5 s after the
    // verdict), and frames to the address are dropped and counted, not sent to a dead
    // MAC.
    let h1ns = lab.host_ns("h1").to_string();
    let out = lab.exec(&h1ns, &["ip", "link", "set", "v0x0", "down"]);
    assert!(out.status.success(), "{out:?}");
    let t0 = Instant::now();
    loop {
        let alerts = lab.alerts("h3");
        let firing = alerts.as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["alert"] == "VmvpnServiceDown"
                    && x["state"] == "firing"
                    && x["labels"]["service"] == "app"
            })
        });
        if firing {
            eprintln!(
                "VmvpnServiceDown firing {:.1} s after both links went down",
                t0.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no VmvpnServiceDown: {alerts}\n{}",
            services_of(&lab, "h3")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (n1, n2, failed) = curls(&lab, &client, vip, 2, 1);
    assert_eq!((n1, n2, failed), (0, 0, 2));
    let out = lab.vmvpn_cli("h3", &["services", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("services JSON");
    let svc = &v[0]["services"][0];
    assert_eq!(svc["backends_up"], 0, "{svc}");
    assert!(
        svc["no_backend_frames_total"].as_u64().unwrap_or(0) >= 2,
        "{svc}"
    );
}

/// An IPv6 service address: the client's host answers its neighbour solicitation with
/// the service's virtual MAC, and connections to it reach both backends, which answer
/// directly (an IPv6 address on a backend's loopback is not advertised on its eth0, so
/// no sysctl is needed).
#[test]
fn an_ipv6_service_address_is_resolved_by_neighbour_discovery_and_served() {
    vmvpn_tests::require_root();
    let vip = "fd00:100::200";
    let (b1, b2) = ("02:00:00:01:00:00", "02:00:00:02:00:00");
    let service = format!(
        "[[lan.service]]\nname = \"web6\"\naddress = \"{vip}\"\nbackends = [\"{b1}\", \"{b2}\"]\npolicy = \"hash\"\n"
    );
    let (lab, v1, v2, client) = service_lab("sv6", [192, 168, 92], 1, true, &service);
    let mut servers = Servers(Vec::new());
    backend(&lab, &v1, vip, "b1", &mut servers);
    backend(&lab, &v2, vip, "b2", &mut servers);
    let n = 200;
    let (n1, n2, failed) = curls(&lab, &client, vip, n, 2);
    eprintln!("IPv6: {n} connections: b1 {n1}, b2 {n2}, failed {failed}");
    if n1 + n2 != n {
        // A connection that timed out (seen in CI, 1 of 200, always the first: a backend
        // still in IPv6 duplicate address detection, which the lab now waits out): what
        // each end and each host counted, to say where its packets went.
        for vm in [&client, &v1, &v2] {
            let nstat = lab.exec(&vm.ns, &["nstat", "-as"]);
            let neigh = lab.exec(&vm.ns, &["ip", "-6", "neigh"]);
            eprintln!(
                "---- {}: {}{}",
                vm.ns,
                String::from_utf8_lossy(&nstat.stdout),
                String::from_utf8_lossy(&neigh.stdout)
            );
        }
        for h in ["h1", "h2", "h3"] {
            eprintln!("---- {h} LAN drops: {}", lab.status(h)["lans"][0]["drops"]);
            eprintln!("{}", lab.loss_report(h));
        }
    }
    assert_eq!(n1 + n2, n, "{}", services_of(&lab, "h3"));
    // Hashing 1:1: each within ±25 % of half (200 keep it at 3.5 standard deviations).
    for k in [n1, n2] {
        assert!(k.abs_diff(n / 2) * 100 <= (n / 2) * 25, "{n1}/{n2}");
    }
    let neigh = lab.exec(&client.ns, &["ip", "-6", "neigh", "show", vip]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    assert!(
        neigh.contains("02:5e:"),
        "the client's neighbour entry: {neigh}"
    );
    let table = services_of(&lab, "h3");
    assert!(table.contains(&format!("service web6 at {vip}")), "{table}");
}
