//! The default alarm rules in the demo's lab, alone on the machine: its own test binary,
//! because cargo runs the tests of one binary side by side, and another lab's daemons and
//! iperf3 on the same two cores starve this lab's (a ping between VMs under one saturating
//! stream went from p99 17 ms alone to 34 ms beside two busy loops; in CI, beside another
//! alarm test, the probes' RTT reached 120 ms). A healthy lab is one with its CPU.

use std::time::Duration;

#[test]
fn the_default_rules_stay_quiet_through_the_demos_traffic_and_a_quiet_minute() {
    // The demo's lab and traffic (every VM pings every other, a full-speed iperf3), then a
    // minute of a few pings: no default rule may go pending, let alone fire.
    let lab = vmvpn_tests::demo_lab("quiet", [192, 168, 79]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (seen, failed) = std::thread::scope(|s| {
        let watch = s.spawn(|| lab.watch_alerts(&["h1", "h2", "h3"], &stop));
        let failed = vmvpn_tests::demo_traffic(&lab);
        let vms = lab.vms().to_vec();
        for k in 0..6 {
            let _ = lab.ping_burst(&vms[k], vms[(k + 3) % vms.len()].ip, 3, "0.2");
            std::thread::sleep(Duration::from_secs(10));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (watch.join(), failed)
    });
    for h in ["h1", "h2", "h3"] {
        // How long datagrams waited in each daemon's receive queue, and what CoDel did.
        eprintln!("{h} queue: {}", lab.status(h)["queue"]);
    }
    let seen = seen.unwrap_or_else(|_| panic!("the alert watcher failed"));
    eprintln!("{} polls: {:#?}", seen.polls, seen.lines);
    assert_eq!(failed, 0, "pings failed in the demo's matrix");
    assert!(seen.polls >= 60, "{} polls", seen.polls);
    assert!(
        seen.lines.is_empty(),
        "default rules went pending in a healthy lab: {:#?}",
        seen.lines
    );
}
