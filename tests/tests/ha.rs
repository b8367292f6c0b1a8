//! Two bulletins serving one registry in a 3-member etcd cluster (`bulletin serve
//! --store`), hosts listing both (`[bulletin] servers`). The bulletin the hosts use is
//! SIGKILLed while VMs ping 20 times a second (nothing lost) and the hosts move to the
//! survivor; a new host joins through the survivor and every host learns of it within
//! 2 s; the killed bulletin comes back, the new host joins again through it, and the hosts
//! on the other bulletin learn of it within 2 s through etcd, then return to it
//! (`return_after_s`); either bulletin's matrix holds every host's report.
//! With one etcd member SIGKILLed nothing visible changes: a host SIGKILLed is gone from the
//! others within the lease (6 s) + 2 s. With etcd stopped (SIGSTOP) both bulletins still
//! answer at once. With etcd entirely down the tunnels keep
//! forwarding, and the registry takes a new host within 10 s of etcd's return. Real etcd
//! (Debian's etcd-server), real bulletins and daemons in the lab's namespaces.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vmvpn_tests::{Lab, RETURN_AFTER_S, bulletin_bin};

const TTL_S: u64 = 6;

/// How many peers `h` knows on its first LAN.
fn peers(lab: &Lab, h: &str) -> usize {
    lab.try_status(h)
        .and_then(|s| s["lans"][0]["peers"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// The bulletin `h` is registered with, if it is.
fn registered_with(lab: &Lab, h: &str) -> Option<String> {
    let s: Value = lab.try_status(h)?;
    (s["bulletin"]["state"] == "registered")
        .then(|| s["bulletin"]["server"].as_str().unwrap_or("").to_string())
}

/// `bulletin ARGS --json` of the bulletin at `addr` (null if it does not answer).
fn cli_at(lab: &Lab, addr: &str, args: &[&str]) -> Value {
    let fp = lab
        .bulletin_addr()
        .map(|(_, f)| f.to_string())
        .unwrap_or_default();
    let out = Command::new("ip")
        .args(["netns", "exec", lab.bulletin_ns()])
        .arg(bulletin_bin())
        .args(args)
        .args(["--json", "--server", addr, "--fingerprint", &fp])
        .arg("--token-file")
        .arg(lab.operator_token())
        .output()
        .unwrap_or_else(|e| panic!("bulletin {args:?}: {e}"));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Whether `bulletin status` of every one of `bulletins` says its store is `state`.
fn store_is(lab: &Lab, bulletins: &[&str], state: &str) -> bool {
    bulletins
        .iter()
        .all(|b| cli_at(lab, b, &["status"])["store"] == state)
}

/// Host ids in `bulletin ls` of the bulletin at `addr`.
fn listed(lab: &Lab, addr: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = cli_at(lab, addr, &["ls"])
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["host_id"].as_u64()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Tunnels with an RTT in `bulletin matrix` of the bulletin at `addr`.
fn measured_links(lab: &Lab, addr: &str) -> usize {
    cli_at(lab, addr, &["matrix"])[0]["links"]
        .as_array()
        .map_or(0, |l| l.iter().filter(|x| x["rtt_p50_us"].is_u64()).count())
}

/// Poll `f` every 50 ms until it holds; how long that took (panics past `within`).
fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

#[test]
fn two_bulletins_on_etcd_survive_losing_one_and_etcd_itself() {
    vmvpn_tests::require_root();
    let mut lab = Lab::builder("ha")
        .subnet(&["h1", "h2"])
        .subnet(&["h3"])
        .lan("lan1", [192, 168, 131], &["h1", "h2", "h3"], 1)
        .bulletin(TTL_S, 1)
        .shared_bulletins()
        .telemetry("report_interval_s = 1\n")
        .start();
    lab.wait_tunnels("h1", "lan1", 2, Duration::from_secs(20));
    let (first, second) = (
        lab.bulletin_addr()
            .map(|(a, _)| a.to_string())
            .unwrap_or_default(),
        lab.second_bulletin_addr().unwrap_or_default().to_string(),
    );
    for h in ["h1", "h2", "h3"] {
        assert_eq!(
            registered_with(&lab, h),
            Some(first.clone()),
            "{h} prefers the first"
        );
    }
    // h3 leaves; it comes back through the survivor as the new host.
    lab.stop("h3");
    until("h1 forgets h3", Duration::from_secs(5), || {
        peers(&lab, "h1") == 1
    });
    let (v1, v2) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    assert!(lab.ping(&v1, v2.ip));

    // 1. SIGKILL the bulletin every host uses, under a 20/s ping.
    let ping = vmvpn_tests::ping_in_background(v1.ns.clone(), v2.ip, 400);
    std::thread::sleep(Duration::from_secs(1));
    lab.kill_bulletin();
    let moved = until(
        "h1 and h2 move to the survivor",
        Duration::from_secs(15),
        || {
            ["h1", "h2"]
                .iter()
                .all(|h| registered_with(&lab, h).as_deref() == Some(second.as_str()))
        },
    );
    // A new host joins through the survivor (its first bulletin does not answer: it
    // moves on after the connection times out); every host learns of it.
    lab.restart("h3");
    until(
        "h3 registers through the survivor",
        Duration::from_secs(20),
        || registered_with(&lab, "h3").as_deref() == Some(second.as_str()),
    );
    let joined = until("h1 and h2 learn of h3", Duration::from_secs(2), || {
        peers(&lab, "h1") == 2 && peers(&lab, "h2") == 2
    });
    // The killed bulletin comes back; h3 leaves and joins again, now through it (its
    // preferred one) while h1 and h2 stay with the other: they learn of it only through
    // etcd, and so does the other bulletin.
    lab.start_bulletin();
    lab.stop("h3");
    until("h1 and h2 forget h3", Duration::from_secs(5), || {
        peers(&lab, "h1") == 1 && peers(&lab, "h2") == 1
    });
    lab.restart("h3");
    until(
        "h3 registers with the first bulletin",
        Duration::from_secs(20),
        || registered_with(&lab, "h3").as_deref() == Some(first.as_str()),
    );
    let learned = until(
        "h1, h2 and the other bulletin learn of h3",
        Duration::from_secs(2),
        || peers(&lab, "h1") == 2 && peers(&lab, "h2") == 2 && listed(&lab, &second).len() == 3,
    );
    for h in ["h1", "h2"] {
        assert_eq!(registered_with(&lab, h), Some(second.clone()), "{h} stayed");
    }
    // The first answers again: after `return_after_s` on the second, they go back to it.
    let back = until(
        "h1 and h2 return to the first",
        Duration::from_secs(RETURN_AFTER_S + 8),
        || {
            ["h1", "h2"]
                .iter()
                .all(|h| registered_with(&lab, h).as_deref() == Some(first.as_str()))
        },
    );
    eprintln!("h1 and h2 back on the first bulletin {back:?} after h3 joined there");
    let (sent, received, missing) = ping.join().unwrap_or_else(|_| panic!("ping thread"));
    eprintln!(
        "bulletin killed: hosts moved in {moved:?}; a new host through the survivor known to all in {joined:?}, at the other bulletin in {learned:?} of registering; ping {received}/{sent}"
    );
    assert_eq!(
        received, sent,
        "VMs lost pings while the bulletin failed over: echoes {missing:?}"
    );
    lab.wait_tunnels("h1", "lan1", 2, Duration::from_secs(5));
    // Either bulletin's matrix holds every host's report (h3 reports to the first, h1
    // and h2 to the second): 3 hosts, 2 tunnels each.
    let full = until(
        "both matrices hold all 6 tunnels",
        Duration::from_secs(15),
        || measured_links(&lab, &first) == 6 && measured_links(&lab, &second) == 6,
    );
    eprintln!("both bulletins' matrices held every host's report {full:?} after h3 joined");

    // 2. One etcd member SIGKILLed (the first the bulletins list) changes nothing visible:
    // the ping goes on, and a host SIGKILLed is gone from every host within the lease + 2 s.
    let ping = vmvpn_tests::ping_in_background(v1.ns.clone(), v2.ip, 180);
    lab.kill_etcd_member(0);
    lab.kill("h3");
    let gone = until(
        "h3 gone from h1 and h2",
        Duration::from_secs(TTL_S + 2),
        || peers(&lab, "h1") == 1 && peers(&lab, "h2") == 1 && listed(&lab, &second).len() == 2,
    );
    let (sent, received, missing) = ping.join().unwrap_or_else(|_| panic!("ping thread"));
    eprintln!(
        "one etcd member down: a SIGKILLed host left every host in {gone:?} (lease {TTL_S} s); ping {received}/{sent}"
    );
    assert_eq!(
        received, sent,
        "VMs lost pings with one etcd member down: echoes {missing:?}"
    );

    // 2b. etcd stops answering (SIGSTOP, connections stay open): both bulletins go on
    // answering at once and the hosts stay registered.
    lab.pause_etcd(true);
    let paused = Instant::now();
    let mut slowest = Duration::ZERO;
    while paused.elapsed() < Duration::from_secs(3) {
        for b in [&first, &second] {
            let t = Instant::now();
            let n = listed(&lab, b).len();
            slowest = slowest.max(t.elapsed());
            assert_eq!(n, 2, "{b} answered ls with etcd paused");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for h in ["h1", "h2"] {
        assert!(registered_with(&lab, h).is_some(), "{h} stayed registered");
    }
    lab.pause_etcd(false);
    eprintln!("etcd paused 3 s: the slowest bulletin ls took {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    until(
        "both bulletins say etcd is up again",
        Duration::from_secs(10),
        || store_is(&lab, &[&first, &second], "up"),
    );

    // 3. etcd down: the tunnels keep forwarding; the registry catches up when it returns.
    lab.kill_etcd();
    let ping = vmvpn_tests::ping_in_background(v1.ns.clone(), v2.ip, 60);
    until(
        "bulletin status says etcd is away",
        Duration::from_secs(5),
        || store_is(&lab, &[&second], "unreachable"),
    );
    let (sent, received, missing) = ping.join().unwrap_or_else(|_| panic!("ping thread"));
    assert_eq!(
        received, sent,
        "VMs lost pings with etcd down: echoes {missing:?}"
    );
    assert_eq!(peers(&lab, "h1"), 1, "h1 kept its peer");
    lab.start_etcd();
    let back = Instant::now();
    lab.restart("h3");
    until(
        "h3 registers after etcd's return",
        Duration::from_secs(10),
        || registered_with(&lab, "h3").is_some(),
    );
    until(
        "h1 learns of h3 after etcd's return",
        Duration::from_secs(10),
        || peers(&lab, "h1") == 2,
    );
    let caught_up = back.elapsed();
    let up = until(
        "both bulletins say etcd is up",
        Duration::from_secs(10),
        || store_is(&lab, &[&first, &second], "up"),
    );
    eprintln!("both bulletins said etcd was up {up:?} later");
    eprintln!("etcd back: the registry took a new host in {caught_up:?}");
    assert!(caught_up < Duration::from_secs(10), "{caught_up:?}");
    assert!(
        lab.second_bulletin_log()
            .contains("registry store unreachable"),
        "the survivor said the store was away:\n{}",
        lab.second_bulletin_log()
    );
}
