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

/// Wait until `peer` answers the probes of each of `hosts` on lan1 (health "ok"), so that
/// "down" can be told from "unknown".
fn wait_healthy(lab: &Lab, hosts: &[&str], peer: &str) {
    let t0 = Instant::now();
    while hosts
        .iter()
        .any(|h| lab.peer(h, "lan1", peer)["health"] != "ok")
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "no probe answered");
        std::thread::sleep(Duration::from_millis(100));
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
    let t = lab.vmvpn_cli("h2", &["status"]);
    let t = String::from_utf8_lossy(&t.stdout);
    assert!(t.contains("alerts: 1 firing (TestLoss)"), "{t}");
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
    wait_healthy(&lab, &["h1"], "h2");
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

/// What a local webhook receiver got: (when, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Instant, Value)>>>;

/// A webhook receiver on 127.0.0.1:`port` in `ns`, for `secs` seconds: answers 200 to each
/// POST and keeps its JSON body.
fn webhook_receiver(lab: &Lab, ns: &str, port: u16, secs: u64) -> Received {
    use std::io::{BufRead, BufReader, Read, Write};
    let got: Received = Default::default();
    let keep = got.clone();
    let ready = std::sync::Arc::new(std::sync::Barrier::new(2));
    let r2 = ready.clone();
    let _ = lab.in_ns(ns, move || {
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind webhook port");
        l.set_nonblocking(true).expect("nonblocking");
        r2.wait();
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            let Ok((s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(s);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len.min(1 << 20)];
            if r.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                keep.lock().expect("lock").push((Instant::now(), v));
            }
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    ready.wait();
    got
}

/// GET `path` from 127.0.0.1:`port` in `ns`: the JSON body.
fn get_json(lab: &Lab, ns: &str, port: u16, path: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let path = path.to_string();
    lab.in_ns(ns, move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let body = out.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    })
    .join()
    .ok()
    .flatten()
}

/// Debian's aiosmtpd as an SMTP sink on 127.0.0.1:`port` in `ns`, printing each message
/// to `log`; stopped by its PID when dropped.
struct SmtpSink(Child);

impl SmtpSink {
    fn start(ns: &str, port: u16, log: &std::path::Path) -> Self {
        Self::start_with(ns, port, log, &[])
    }

    /// With `--tlscert`/`--tlskey`: STARTTLS offered and required before any mail.
    fn start_with(ns: &str, port: u16, log: &std::path::Path, tls: &[&str]) -> Self {
        // Debian's interpreter: the `python3` first on PATH may be another one.
        let out = std::fs::File::create(log).expect("smtp log");
        let c = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "/usr/bin/python3",
                "-u",
                "-m",
                "aiosmtpd",
                "-n",
            ])
            .args(["-l", &format!("127.0.0.1:{port}")])
            .args(tls)
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("python3-aiosmtpd is missing: run scripts/deps.sh");
        std::thread::sleep(Duration::from_millis(1500));
        SmtpSink(c)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's Alertmanager on 127.0.0.1:`port` in `ns`, stopped by its PID when dropped.
struct Alertmanager(Child);

impl Alertmanager {
    fn start(lab: &Lab, ns: &str, dir: &std::path::Path, port: u16) -> Self {
        Self::spawn(ns, dir, port, None, || {
            get_json(lab, ns, port, "/api/v2/status").is_some()
        })
    }

    /// The same over HTTPS with `dir`'s cert.pem and key.pem (see [`make_certs`]); ready
    /// once its API answers curl checking the test CA.
    fn start_tls(lab: &Lab, ns: &str, dir: &std::path::Path, port: u16) -> Self {
        let web = dir.join("am-web.yml");
        std::fs::write(
            &web,
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            ),
        )
        .expect("alertmanager web config");
        Self::spawn(ns, dir, port, Some(&web), || {
            am_tls_alerts(lab, ns, dir, port).is_some()
        })
    }

    fn spawn(
        ns: &str,
        dir: &std::path::Path,
        port: u16,
        web: Option<&std::path::Path>,
        ready: impl Fn() -> bool,
    ) -> Self {
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(
            &cfg,
            "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
        )
        .expect("alertmanager config");
        let log = std::fs::File::create(dir.join("alertmanager.log")).expect("log");
        let c = Command::new("ip")
            .args(["netns", "exec", ns, "prometheus-alertmanager"])
            .arg(format!("--config.file={}", cfg.display()))
            .args(web.map(|w| format!("--web.config.file={}", w.display())))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus-alertmanager is missing: run scripts/deps.sh");
        let am = Alertmanager(c);
        let t0 = Instant::now();
        while !ready() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "alertmanager not ready: {}",
                std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        am
    }
}

/// The alerts an HTTPS Alertmanager holds, read with curl trusting only the test CA.
fn am_tls_alerts(lab: &Lab, ns: &str, dir: &std::path::Path, port: u16) -> Option<Value> {
    let ca = dir.join("ca.pem").display().to_string();
    let url = format!("https://127.0.0.1:{port}/api/v2/alerts");
    let out = lab.exec(
        ns,
        &["curl", "-sf", "--max-time", "5", "--cacert", &ca, &url],
    );
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_loss_alert_reaches_alertmanager_a_webhook_email_and_the_exec_hook_once_each_way() {
    const AM: u16 = 19093;
    const HOOK: u16 = 19099;
    const SMTP: u16 = 19025;
    let mut lab = Lab::builder("alarmnote")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 76], &["h1", "h2"], 1)
        .emulate("h1", "", "")
        .alarm_rules(RULES)
        .alarms(&format!(
            "alertmanager = [\"http://127.0.0.1:{AM}\"]\nwebhook = [\"http://127.0.0.1:{HOOK}/hook\"]\nexec = \"{{dir}}/hook.sh\"\n\n[alarms.email]\nsmtp = \"127.0.0.1:{SMTP}\"\nfrom = \"vmvpn@lab.example\"\nto = [\"ops@lab.example\"]\n"
        ))
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    lab.wait_tunnels("h2", "lan1", 1, Duration::from_secs(20));
    let dir = lab
        .alarm_rules_path()
        .parent()
        .expect("lab dir")
        .to_path_buf();
    let ns = lab.host_ns("h2").to_string();
    let _am = Alertmanager::start(&lab, &ns, &dir, AM);
    let hooks = webhook_receiver(&lab, &ns, HOOK, 90);
    let smtp_log = dir.join("smtp.log");
    let _smtp = SmtpSink::start(&ns, SMTP, &smtp_log);
    let mails = |state: &str| -> usize {
        std::fs::read_to_string(&smtp_log)
            .unwrap_or_default()
            .matches(&format!("Subject: [{state}:1] TestLoss on h2"))
            .count()
    };
    let script = dir.join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > {}/exec-$(date +%s%N).json\n",
            dir.display()
        ),
    )
    .expect("hook script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let execs = |status: &str| -> Vec<Value> {
        let mut v: Vec<Value> = std::fs::read_dir(&dir)
            .expect("lab dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("exec-"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        v.retain(|j: &Value| j["status"] == status);
        v
    };
    let hooks_in = |status: &str| -> Vec<(Instant, Value)> {
        hooks
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, j)| j["status"] == status && j["groupLabels"]["alertname"] == "TestLoss")
            .cloned()
            .collect()
    };
    let _ping = Pinger::start(&lab, "h1", "h2", 16_000);
    lab.impair("h1", "loss=0.05", "");
    let fault = Instant::now();
    // Each channel, as soon as it has the alert.
    let (mut webhook, mut am, mut exec, mut email) = (None, None, None, None);
    while webhook.is_none() || am.is_none() || exec.is_none() || email.is_none() {
        assert!(
            fault.elapsed() < Duration::from_secs(5 + 10 + 5),
            "not delivered everywhere: webhook {webhook:?} alertmanager {am:?} exec {exec:?} email {email:?}\n{}",
            lab.log("h2")
        );
        if email.is_none() && mails("FIRING") > 0 {
            email = Some(fault.elapsed());
        }
        if webhook.is_none()
            && let Some((t, _)) = hooks_in("firing").first()
        {
            webhook = Some(t.duration_since(fault));
        }
        if am.is_none()
            && get_json(&lab, &ns, AM, "/api/v2/alerts").is_some_and(|a| {
                a.as_array().is_some_and(|a| {
                    a.iter().any(|x| {
                        x["labels"]["alertname"] == "TestLoss"
                            && x["labels"]["name"] == "h1"
                            && x["status"]["state"] == "active"
                    })
                })
            })
        {
            am = Some(fault.elapsed());
        }
        if exec.is_none() && !execs("firing").is_empty() {
            exec = Some(fault.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "fault to notification: webhook {:.1} s, alertmanager {:.1} s (as listed by its API), exec {:.1} s, email {:.1} s",
        webhook.map_or(0.0, |d| d.as_secs_f64()),
        am.map_or(0.0, |d| d.as_secs_f64()),
        exec.map_or(0.0, |d| d.as_secs_f64()),
        email.map_or(0.0, |d| d.as_secs_f64())
    );
    let first = hooks_in("firing");
    let msg = &first[0].1;
    assert_eq!(msg["version"], "4");
    assert_eq!(
        msg["commonLabels"]["peer"],
        format!("{}:{PORT}", lab.host_ip("h1"))
    );
    assert_eq!(msg["alerts"][0]["labels"]["severity"], "critical");
    // The loss stops: resolved, once, everywhere.
    lab.impair("h1", "", "");
    let healed = Instant::now();
    while hooks_in("resolved").is_empty() || execs("resolved").is_empty() || mails("RESOLVED") == 0
    {
        assert!(
            healed.elapsed() < Duration::from_secs(10 + 5 + 10),
            "not resolved"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hooks_in("firing").len(), 1, "one firing message");
    assert_eq!(hooks_in("resolved").len(), 1, "one resolved message");
    assert_eq!((execs("firing").len(), execs("resolved").len()), (1, 1));
    assert_eq!(
        (mails("FIRING"), mails("RESOLVED")),
        (1, 1),
        "one email each way"
    );
    // Alertmanager took the resolution: the alert is no longer active there.
    let active = get_json(&lab, &ns, AM, "/api/v2/alerts")
        .and_then(|a| a.as_array().cloned())
        .unwrap_or_default();
    assert!(
        !active
            .iter()
            .any(|x| x["labels"]["alertname"] == "TestLoss" && x["status"]["state"] == "active"),
        "{active:#?}"
    );
}

#[test]
fn the_bulletin_shows_the_alerts_of_the_whole_overlay() {
    // A long lease: the dead host stays registered while its peers raise the alarm.
    let mut lab = Lab::builder("alarmbull")
        .subnet(&["h1", "h2"])
        .subnet(&["h3"])
        .lan("lan1", [192, 168, 77], &["h1", "h2", "h3"], 0)
        .bulletin(120, 2)
        .start();
    for h in ["h1", "h2", "h3"] {
        lab.wait_tunnels(h, "lan1", 2, Duration::from_secs(30));
    }
    wait_healthy(&lab, &["h1", "h2"], "h3");
    lab.kill("h3");
    let killed = Instant::now();
    let h3 = format!("{}:{PORT}", lab.host_ip("h3"));
    loop {
        let out = lab.bulletin_cli(&["alerts", "--json"]);
        let v: Value = serde_json::from_str(&out).expect("bulletin alerts JSON");
        let raisers: Vec<&str> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| {
                h["alerts"]["alerts"].as_array().is_some_and(|a| {
                    a.iter().any(|x| {
                        x["alert"] == "VmvpnPeerDown"
                            && x["state"] == "firing"
                            && x["labels"]
                                .as_array()
                                .is_some_and(|l| l.iter().any(|kv| kv[1] == h3.as_str()))
                    })
                })
            })
            .filter_map(|h| h["name"].as_str())
            .collect();
        if raisers.len() == 2 {
            eprintln!(
                "bulletin shows h3 down, from h1 and h2, {:.1} s after SIGKILL",
                killed.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "bulletin alerts after {:?}: {v:#}",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let table = lab.bulletin_cli(&["alerts"]);
    assert!(
        table.contains("VmvpnPeerDown") && table.contains("h1") && table.contains("h2"),
        "{table}"
    );
}

#[test]
fn an_rtt_step_of_20ms_trips_the_anomaly_rule_without_a_threshold() {
    // Only the default anomaly rule (as in rules.rs): no threshold says what RTT is too
    // much; its band is at least 3 ms wide per deviation, so +20 ms scores 6.7.
    let rule = r#"
[[rule]]
alert = "VmvpnPeerRttAnomaly"
expr = "anomaly(vmvpn_peer_srtt_seconds, 0.003) > 4"
for = "10s"
severity = "warning"
"#;
    let mut lab = Lab::builder("alarmrtt")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 78], &["h1", "h2"], 0)
        .emulate("h1", "", "")
        .alarm_rules(rule)
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    // The baseline learns the usual RTT first (warm-up: 10 samples).
    let t0 = Instant::now();
    while lab.peer("h1", "lan1", "h2")["rtt_samples"]
        .as_u64()
        .unwrap_or(0)
        < 15
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "too few probes");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(find(&lab.alerts("h1"), "VmvpnPeerRttAnomaly", "firing").is_empty());
    lab.impair("h1", "delay=20ms", "");
    let (took, alert) = wait_for(
        &lab,
        "h1",
        "VmvpnPeerRttAnomaly",
        "firing",
        Duration::from_secs(30),
    );
    eprintln!(
        "RTT anomaly firing {:.1} s after +20 ms",
        took.as_secs_f64()
    );
    assert_eq!(alert["labels"]["name"], "h2");
    assert!(
        alert["value"].as_f64().is_some_and(|z| z > 4.0),
        "{alert:#}"
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl in `dir`.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is missing: run scripts/deps.sh");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=vmvpn test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
}

/// A directory removed when dropped, even if the test fails.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn alarm_email_goes_over_starttls_and_alertmanager_over_https_with_an_internal_ca() {
    const SMTP: u16 = 19026;
    const AM: u16 = 19093;
    let certs =
        TempDir(std::env::temp_dir().join(format!("vmvpn-smtp-tls-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&certs.0);
    std::fs::create_dir_all(&certs.0).expect("cert dir");
    make_certs(&certs.0);
    let mut lab = Lab::builder("alarmtls")
        .subnet(&["h1", "h2"])
        .lan("lan1", [192, 168, 79], &["h1", "h2"], 0)
        .alarms(&format!(
            "alertmanager = [\"https://127.0.0.1:{AM}\"]\nca_file = \"{ca}\"\n\n[alarms.email]\nsmtp = \"127.0.0.1:{SMTP}\"\nfrom = \"vmvpn@lab.example\"\nto = [\"ops@lab.example\"]\nca_file = \"{ca}\"\n",
            ca = certs.0.join("ca.pem").display()
        ))
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    wait_healthy(&lab, &["h1"], "h2");
    let log = certs.0.join("smtp.log");
    let cert = certs.0.join("cert.pem").display().to_string();
    let key = certs.0.join("key.pem").display().to_string();
    let ns = lab.host_ns("h1").to_string();
    let _smtp = SmtpSink::start_with(&ns, SMTP, &log, &["--tlscert", &cert, "--tlskey", &key]);
    let _am = Alertmanager::start_tls(&lab, &ns, &certs.0, AM);
    lab.kill("h2");
    let killed = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Subject: [FIRING:1] VmvpnPeerDown on h1")
    {
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "no mail over STARTTLS: {}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            lab.log("h1")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "mail over STARTTLS {:.1} s after SIGKILL",
        killed.elapsed().as_secs_f64()
    );
    // The same alert reached Alertmanager over HTTPS, its certificate checked against
    // `[alarms] ca_file`.
    loop {
        let got = am_tls_alerts(&lab, &ns, &certs.0, AM).unwrap_or_default();
        if got.as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["labels"]["alertname"] == "VmvpnPeerDown")
        }) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no alert in Alertmanager over HTTPS: {got}\n{}",
            lab.log("h1")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "Alertmanager over HTTPS has it {:.1} s after SIGKILL",
        killed.elapsed().as_secs_f64()
    );
}
