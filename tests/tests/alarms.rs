//! Alarms with real daemons in namespaces: loss injected by the link emulator fires the
//! loss alert on the receiving host, with the right labels, and resolves it once when the
//! loss stops; a killed peer fires the default "peer down"; a rules file with an error is
//! refused with file and line while the running rules stay.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmvpn_tests::{Lab, PORT};

/// The alerts of `h` named `name`, in `state`.
fn find<'a>(alerts: &'a Value, name: &str, state: &str) -> Vec<&'a Value> {
    alerts
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["alert"] == name && x["state"] == state)
                .collect()
        })
        .unwrap_or_default()
}

/// Poll `h`'s alerts until `name` is in `state`, at most `within`; how long it took.
fn wait_for(lab: &Lab, h: &str, name: &str, state: &str, within: Duration) -> (Duration, Value) {
    let t0 = Instant::now();
    loop {
        let a = lab.alerts(h);
        if let Some(x) = find(&a, name, state).first() {
            return (t0.elapsed(), (*x).clone());
        }
        assert!(
            t0.elapsed() < within,
            "{name} not {state} on {h} within {within:?}: {a:#}\n{}",
            lab.log(h)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A steady ping from a VM of `from` to one of `to` (bounded: `count` at 5 ms), stopped by
/// its PID when dropped.
struct Pinger(Child);

impl Pinger {
    fn start(lab: &Lab, from: &str, to: &str, count: u32) -> Self {
        let (a, b) = (lab.vm(from, "lan1", 0), lab.vm(to, "lan1", 0));
        let c = Command::new("ip")
            .args(["netns", "exec", &a.ns, "ping", "-n", "-q", "-i", "0.005"])
            .args(["-c", &count.to_string(), &b.ip.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping");
        Pinger(c)
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const RULES: &str = r#"
[[rule]]
alert = "TestLoss"
expr = "vmvpn_peer_rx_loss_ratio_10s > 0.02"
for = "5s"
clear = "vmvpn_peer_rx_loss_ratio_10s < 0.01"
keep_firing_for = "5s"
severity = "critical"
labels = { team = "net" }
annotations = { summary = "{{ $labels.name }} loses {{ $value }}" }
"#;

#[test]
fn loss_fires_on_the_receiver_within_its_hold_and_resolves_once_when_it_stops() {
    let mut lab = Lab::builder("alarm")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 74], &["h1", "h2"], 1)
        .emulate("h1", "", "")
        .alarm_rules(RULES)
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    lab.wait_tunnels("h2", "lan1", 1, Duration::from_secs(20));
    // 5 % of what h1 sends is lost from now on; 60 s of pings at most.
    let _ping = Pinger::start(&lab, "h1", "h2", 12_000);
    lab.impair("h1", "loss=0.05", "");
    let (took, alert) = wait_for(
        &lab,
        "h2",
        "TestLoss",
        "firing",
        Duration::from_secs(5 + 10),
    );
    eprintln!(
        "loss alert firing on h2 {:.1} s after the loss began",
        took.as_secs_f64()
    );
    assert_eq!(
        alert["labels"]["peer"],
        format!("{}:{PORT}", lab.host_ip("h1"))
    );
    assert_eq!(alert["labels"]["name"], "h1");
    assert_eq!(alert["labels"]["lan"], "lan1");
    assert_eq!(alert["labels"]["team"], "net");
    assert_eq!(alert["labels"]["severity"], "critical");
    let v = alert["value"].as_f64().expect("value");
    assert!((0.02..0.10).contains(&v), "{alert:#}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("h1 loses 0.0")),
        "{alert:#}"
    );
    // The sender's direction is clean: nothing on h1.
    assert!(find(&lab.alerts("h1"), "TestLoss", "firing").is_empty());
    // The loss stops: resolved after the 10 s window and keep_firing_for.
    lab.impair("h1", "", "");
    let (took, _) = wait_for(
        &lab,
        "h2",
        "TestLoss",
        "resolved",
        Duration::from_secs(10 + 5 + 5),
    );
    eprintln!(
        "resolved {:.1} s after the loss stopped",
        took.as_secs_f64()
    );
    let log = lab.log("h2");
    assert_eq!(log.matches("alert firing").count(), 1, "{log}");
    assert_eq!(log.matches("alert resolved").count(), 1, "{log}");
    // /metrics-style view in the table too.
    let t = lab.vmvpn_cli("h2", &["alerts"]);
    let t = String::from_utf8_lossy(&t.stdout);
    assert!(t.contains("resolved") && t.contains("TestLoss"), "{t}");
}

#[test]
fn a_killed_peer_fires_peer_down_and_a_broken_rules_file_leaves_the_running_rules() {
    let mut lab = Lab::builder("alarmdown")
        .subnet(&["h1", "h2"])
        .lan("lan1", [192, 168, 75], &["h1", "h2"], 0)
        .alarm_rules(&format!(
            "{}\n{}",
            RULES,
            vmvpn::alarms::rules::DEFAULT_RULES
        ))
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    // Probes answered first, so "down" can be told from "unknown".
    let t0 = Instant::now();
    while lab.peer("h1", "lan1", "h2")["health"] != "ok" {
        assert!(t0.elapsed() < Duration::from_secs(10), "no probe answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken file on SIGHUP: refused with file and line, the rules stay.
    std::fs::write(
        lab.alarm_rules_path(),
        "[[rule]]\nalert = \"X\"\nexpr = \"vmvpn_peer_upp == 0\"\n",
    )
    .expect("write rules");
    lab.hup("h1");
    let path = lab.alarm_rules_path().display().to_string();
    let t0 = Instant::now();
    while !lab.log("h1").contains("alarm rules refused") {
        assert!(t0.elapsed() < Duration::from_secs(5), "{}", lab.log("h1"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = lab.log("h1");
    assert!(log.contains(&format!("{path}:3: `rule[0].expr`")), "{log}");
    // `vmvpn check` refuses it the same way.
    let check = Command::new(vmvpn_tests::vmvpn_bin())
        .args(["check", "--config"])
        .arg(lab.config_path("h1"))
        .output()
        .expect("vmvpn check");
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stderr).contains(&format!("{path}:3:")),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The default rules still run: h2 is killed, h1 says it is down.
    lab.kill("h2");
    let (took, alert) = wait_for(
        &lab,
        "h1",
        "VmvpnPeerDown",
        "firing",
        Duration::from_secs(15),
    );
    eprintln!("peer down alert {:.1} s after SIGKILL", took.as_secs_f64());
    assert_eq!(
        alert["labels"]["peer"],
        format!("{}:{PORT}", lab.host_ip("h2"))
    );
    assert_eq!(alert["labels"]["severity"], "critical");
}
