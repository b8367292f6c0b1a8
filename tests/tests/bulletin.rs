//! Dynamic membership through the bulletin: real `bulletin` and `vmvpn` processes in
//! namespaces, two physical subnets joined by a router that also runs the bulletin.

use std::time::{Duration, Instant};

use serde_json::Value;
use vmvpn_tests::{BULLETIN_PORT, Lab, PORT};

/// Short terms so the lease tests run in seconds (production default: 30 s / 10 s).
const TTL_S: u64 = 6;
const HEARTBEAT_S: u64 = 2;
const UP_WITHIN: Duration = Duration::from_secs(15);

fn ls_hosts(lab: &Lab) -> Vec<String> {
    let mut v: Vec<String> = lab
        .bulletin_ls()
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn peer_names(lab: &Lab, h: &str) -> Vec<String> {
    let st = lab.status(h);
    let mut v: Vec<String> = st["lans"][0]["peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Poll until `cond` holds; returns how long it took, or panics with `what` after `within`.
fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if cond() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn five_hosts(tag: &str) -> Lab {
    let lab = Lab::builder(tag)
        .subnet(&["h1", "h2", "h3"])
        .subnet(&["h4", "h5"])
        .lan("lan1", [192, 168, 100], &["h1", "h2", "h3", "h4", "h5"], 1)
        .bulletin(TTL_S, HEARTBEAT_S)
        .start();
    for h in ["h1", "h2", "h3", "h4", "h5"] {
        lab.wait_tunnels(h, "lan1", 4, UP_WITHIN);
    }
    lab
}

#[test]
fn hosts_find_each_other_through_the_bulletin_and_leave_on_time() {
    let mut lab = five_hosts("bb5");
    // No static peers anywhere: every VM reaches every other.
    let vms = lab.vms().to_vec();
    let mut failed = Vec::new();
    for a in &vms {
        for b in vms.iter().filter(|b| b.ns != a.ns) {
            if !lab.ping(a, b.ip) {
                failed.push(format!("{}->{}", a.host, b.host));
            }
        }
    }
    assert!(failed.is_empty(), "pings failed: {failed:?}");

    // `bulletin ls` is the paper's Table 1 plus port, observed address and lease.
    let ls = lab.bulletin_ls();
    let rows = ls.as_array().expect("records");
    assert_eq!(rows.len(), 5, "{ls:#}");
    let h4 = rows.iter().find(|r| r["name"] == "h4").expect("h4 listed");
    assert_eq!(h4["lan"], "lan1");
    assert_eq!(h4["segment"], "192.168.100.0/24");
    assert_eq!(h4["underlay"], lab.host_ip("h4").to_string());
    assert_eq!(h4["mask"], "255.255.255.0");
    assert_eq!(h4["port"], PORT);
    assert!(
        h4["observed"]
            .as_str()
            .is_some_and(|o| o.starts_with(&format!("{}:", lab.host_ip("h4")))),
        "{h4:#}"
    );
    assert!(
        h4["lease_ms"]
            .as_u64()
            .is_some_and(|l| l > 0 && l <= TTL_S * 1000),
        "{h4:#}"
    );

    // Each host's status shows where peers came from and the bulletin connection.
    let st = lab.status("h1");
    assert_eq!(
        st["bulletin"]["state"], "registered",
        "{:#}",
        st["bulletin"]
    );
    assert_eq!(st["bulletin"]["peers"], 4);
    for p in st["lans"][0]["peers"].as_array().expect("peers") {
        assert_eq!(p["source"], "bulletin", "{p:#}");
    }

    // SIGTERM: unregistered, gone everywhere within 2 s.
    assert!(lab.stop("h5").success());
    let took = wait_for(Duration::from_secs(2), "h5 gone after SIGTERM", || {
        !ls_hosts(&lab).contains(&"h5".to_string())
            && ["h1", "h2", "h3", "h4"]
                .iter()
                .all(|h| !peer_names(&lab, h).contains(&"h5".to_string()))
    });
    eprintln!("SIGTERM: h5 gone everywhere after {took:?}");

    // SIGKILL: no unregister; the lease lapses; gone everywhere within TTL + 2 s.
    lab.kill("h4");
    let within = Duration::from_secs(TTL_S + 2);
    let took = wait_for(within, "h4 gone after SIGKILL", || {
        !ls_hosts(&lab).contains(&"h4".to_string())
            && ["h1", "h2", "h3"]
                .iter()
                .all(|h| !peer_names(&lab, h).contains(&"h4".to_string()))
    });
    eprintln!("SIGKILL: h4 gone everywhere after {took:?}");
    assert_eq!(ls_hosts(&lab), vec!["h1", "h2", "h3"]);
    // The others still talk.
    assert!(lab.ping(lab.vm("h1", "lan1", 0), lab.vm("h3", "lan1", 0).ip));
}

#[test]
fn a_bulletin_restart_loses_no_packet_and_everyone_is_back() {
    let mut lab = Lab::builder("bbr")
        .subnet(&["h1", "h2"])
        .subnet(&["h3"])
        .lan("lan1", [192, 168, 100], &["h1", "h2", "h3"], 1)
        .bulletin(TTL_S, HEARTBEAT_S)
        .start();
    for h in ["h1", "h2", "h3"] {
        lab.wait_tunnels(h, "lan1", 2, UP_WITHIN);
    }
    let (a, b) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h3", "lan1", 0).clone(),
    );
    assert!(lab.ping(&a, b.ip));
    // A ping across subnets runs through the bulletin's crash and restart: 200 × 50 ms.
    let ns = a.ns.clone();
    let target = b.ip.to_string();
    let pinger = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &ns, "ping", "-c", "200", "-i", "0.05", "-W", "1", "-q", &target,
            ])
            .output()
            .expect("ping")
    });
    std::thread::sleep(Duration::from_secs(1));
    lab.kill_bulletin();
    std::thread::sleep(Duration::from_secs(2));
    lab.start_bulletin();
    let restarted = Instant::now();
    // Back within one heartbeat, the answer timeout and the first backoff (with jitter).
    let within = Duration::from_secs(HEARTBEAT_S + 1 + 2);
    let took = wait_for(within, "all hosts re-registered", || {
        ls_hosts_quiet(&lab) == ["h1", "h2", "h3"]
    });
    eprintln!(
        "all hosts back in bulletin ls {took:?} after the restart ({:?} since)",
        restarted.elapsed()
    );
    let out = pinger.join().expect("pinger");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("200 packets transmitted, 200 received"),
        "packets lost across the restart: {text}"
    );
    // Nobody dropped a peer while the new bulletin was still empty.
    for h in ["h1", "h2", "h3"] {
        assert_eq!(peer_names(&lab, h).len(), 2, "{h}");
        let st = lab.status(h);
        assert_eq!(
            st["bulletin"]["state"], "registered",
            "{h}: {:#}",
            st["bulletin"]
        );
    }
}

/// `bulletin ls` that tolerates the bulletin not answering yet.
/// Seconds since the epoch, as `ping -D` prints them.
fn epoch_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[test]
fn a_host_whose_lease_lapsed_is_listed_again_and_reached_at_once() {
    let lab = Lab::builder("bll")
        .subnet(&["h1", "h2"])
        .lan("lan1", [192, 168, 104], &["h1", "h2"], 1)
        .bulletin(TTL_S, HEARTBEAT_S)
        .start();
    lab.wait_tunnels("h1", "lan1", 1, UP_WITHIN);
    let (a, b) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    assert!(lab.ping(&a, b.ip));
    // 400 pings × 50 ms, stamped, through h2's lease lapsing and h2 coming back.
    let (ns, target) = (a.ns.clone(), b.ip.to_string());
    let pinger = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &ns, "ping", "-D", "-n", "-c", "400", "-i", "0.05", "-W", "1",
                &target,
            ])
            .output()
            .expect("ping")
    });
    std::thread::sleep(Duration::from_secs(1));
    // h2 loses the bulletin (its tunnel to h1 does not): its lease lapses, h1 drops it.
    let h2 = lab.host_ns("h2").to_string();
    let rule = format!(
        "add table inet cut; add chain inet cut out {{ type filter hook output priority 0; }}; \
         add rule inet cut out udp dport {BULLETIN_PORT} drop"
    );
    let out = lab.exec(&h2, &["nft", &rule]);
    assert!(out.status.success(), "nft: {out:?}");
    wait_for(
        Duration::from_secs(TTL_S + HEARTBEAT_S + 5),
        "h1 dropped h2",
        || peer_names(&lab, "h1").is_empty(),
    );
    let dropped = epoch_s();
    let out = lab.exec(&h2, &["nft", "delete table inet cut"]);
    assert!(out.status.success(), "nft: {out:?}");
    wait_for(UP_WITHIN, "h1 lists h2 again, up", || {
        lab.status("h1")["lans"][0]["peers"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["state"] == "up"))
    });
    let relisted = epoch_s();
    let out = pinger.join().expect("pinger");
    let text = String::from_utf8_lossy(&out.stdout);
    // (sequence, when the echo came back) of every answered ping.
    let echoes: Vec<(u64, f64)> = text
        .lines()
        .filter_map(|l| {
            let t = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
            let seq = l.split("icmp_seq=").nth(1)?.split_whitespace().next()?;
            Some((seq.parse().ok()?, t))
        })
        .collect();
    let gap = echoes
        .windows(2)
        .max_by_key(|w| w[1].0 - w[0].0)
        .map(|w| (w[0], w[1]))
        .unwrap_or_else(|| panic!("no echoes: {text}"));
    let ((last_seq, last_t), (next_seq, next_t)) = gap;
    eprintln!(
        "h1 dropped h2 at {dropped:.2}, listed it up again at {relisted:.2}; echoes stopped \
         after #{last_seq} at {last_t:.2}, came back with #{next_seq} at {next_t:.2}"
    );
    // Before the fix, h1's new counters started at 0 under the same keys: h2's replay
    // window dropped every frame until they caught up (6 s here), and nonces repeated.
    assert!(
        next_t < relisted + 1.0,
        "the VMs talked again {:.2} s after h1 listed h2 up again",
        next_t - relisted
    );
    assert!(
        last_t > dropped - 3.0,
        "pings failed before h1 dropped h2 ({last_t:.2} vs {dropped:.2})"
    );
    assert!(echoes.len() > 300, "{} of 400 answered", echoes.len());
}

fn ls_hosts_quiet(lab: &Lab) -> Vec<String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ls_hosts(lab))).unwrap_or_default()
}

#[test]
fn wrong_secret_and_wrong_fingerprint_are_refused_clearly() {
    let mut lab = Lab::builder("bbx")
        .subnet(&["h1", "h2"])
        .subnet(&["h3"])
        .lan("lan1", [192, 168, 100], &["h1", "h2", "h3"], 1)
        .bulletin(TTL_S, HEARTBEAT_S)
        .wrong_secret("h2", "lan1")
        .wrong_fingerprint("h3")
        .expect_exit("h2")
        .expect_exit("h3")
        .start();
    let st = lab.wait_exit("h2", Duration::from_secs(10));
    assert!(!st.success());
    let log = lab.log("h2");
    assert!(log.contains("wrong secret for LAN \"lan1\""), "{log}");
    let st = lab.wait_exit("h3", Duration::from_secs(10));
    assert!(!st.success());
    let log = lab.log("h3");
    assert!(
        log.contains("presents certificate") && log.contains("pins"),
        "{log}"
    );
    // Neither got in; the good host is registered alone.
    assert_eq!(ls_hosts(&lab), vec!["h1"]);
    let v: Value = lab.status("h1");
    assert_eq!(v["bulletin"]["state"], "registered");
}

#[test]
fn the_load_generator_runs_and_every_lapsed_host_is_announced() {
    // Small and bounded (loopback only); the figures come from scripts/bench-bulletin.sh.
    let bin = vmvpn_tests::vmvpn_bin().with_file_name("bulletin-load");
    assert!(
        bin.exists(),
        "{} missing: cargo build --workspace --bins",
        bin.display()
    );
    let out = std::process::Command::new(&bin)
        .args([
            "--hosts",
            "60",
            "--per-lan",
            "20",
            "--lapse",
            "3",
            "--ttl-s",
            "4",
            "--heartbeat-s",
            "1",
            "--window-s",
            "2",
        ])
        .output()
        .expect("run bulletin-load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&text).expect("JSON result");
    assert_eq!(v["hosts"], 60);
    assert_eq!(v["leaves_seen"], 3);
    assert_eq!(v["unexpected_leaves"], 0);
    // 3 LANs of 20: each registration announced to the hosts already there: 3 × (0+…+19),
    // then one newcomer per lapsing LAN announced to its 20 (the fan-out measured).
    assert_eq!(v["join_events_delivered"], 3 * 190 + 3 * 20);
    assert!(
        v["join_fanout_ms_p50"].as_f64().is_some_and(|ms| ms > 0.0),
        "{v}"
    );
    assert!(v["register_per_s"].as_f64().is_some_and(|r| r > 0.0));
}
