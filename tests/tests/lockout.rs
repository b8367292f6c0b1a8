//! No single client locks others out (slot exhaustion, "slowloris"): an attacker's
//! namespace holds hundreds of silent QUIC connections to the bulletin, then hundreds of
//! idle TCP connections to its HTTPS dashboard, each re-opened as soon as it is closed,
//! while an operator's namespace reads the registry and the dashboard, a stopped host
//! joins again, and two VMs ping across the overlay. Every process is stopped by its PID
//! and the lab's namespaces are removed, even on failure.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vmvpn_tests::{Lab, WEB_PASSWORD, WEB_REMOTE, bulletin_bin, vmvpn_bin};

/// How long each attack lasts.
const ATTACK: Duration = Duration::from_secs(30);
/// The longest an operator's request or a registration may take under attack.
const WITHIN: Duration = Duration::from_secs(2);

/// A process stopped by its PID when dropped (the attacker, if a check fails first).
struct Proc(Option<Child>);

impl Proc {
    fn output(mut self) -> Output {
        let c = self.0.take().unwrap_or_else(|| panic!("no child"));
        c.wait_with_output().unwrap_or_else(|e| panic!("wait: {e}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn abuse(ns: &str, args: &[&str]) -> Proc {
    let bin = vmvpn_bin().with_file_name("bulletin-abuse");
    Proc(Some(
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("bulletin-abuse: {e}")),
    ))
}

fn report(p: Proc) -> serde_json::Value {
    let out = p.output();
    assert!(
        out.status.success(),
        "bulletin-abuse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `bulletin ARGS --json` from `ns` with the operator token: (success, stdout, time).
fn bulletin_from(lab: &Lab, ns: &str, args: &[&str]) -> (bool, String, Duration) {
    let (addr, fp) = lab.bulletin_addr().unwrap_or_else(|| panic!("no bulletin"));
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bulletin_bin())
        .args(args)
        .args(["--json", "--server", addr, "--fingerprint", fp])
        .arg("--token-file")
        .arg(lab.operator_token())
        .output()
        .unwrap_or_else(|e| panic!("bulletin {args:?}: {e}"));
    let took = t.elapsed();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        text = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    (out.status.success(), text, took)
}

/// One authenticated dashboard request from `ns`: (HTTP status, seconds).
fn dashboard_from(lab: &Lab, ns: &str, path: &str) -> (u16, f64, String) {
    let url = format!("https://{WEB_REMOTE}{path}");
    let user = format!("admin:{WEB_PASSWORD}");
    let out = lab.exec(
        ns,
        &[
            "curl",
            "-sk",
            "--max-time",
            "20",
            "-u",
            &user,
            "-w",
            "\n%{http_code} %{time_total}",
            &url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = text.lines().last().unwrap_or("").to_string();
    let mut w = last.split_whitespace();
    let code = w.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let secs = w.next().and_then(|c| c.parse().ok()).unwrap_or(f64::MAX);
    (code, secs, text)
}

#[test]
fn silent_quic_and_idle_tcp_connections_from_one_address_lock_nobody_out() {
    let mut lab = Lab::builder("lock")
        .subnet(&["h1", "h2", "h3"])
        .lan("lan1", [192, 168, 121], &["h1", "h2", "h3"], 1)
        .bulletin(10, 2)
        .web()
        .start();
    lab.wait_tunnels("h1", "lan1", 2, Duration::from_secs(15));
    // h3 leaves; it comes back during the attack as "a new host".
    lab.stop("h3");
    let atk = lab.add_client("atk", 1, 200);
    let op = lab.add_client("op", 1, 201);
    let (addr, fp) = lab
        .bulletin_addr()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .unwrap_or_else(|| panic!("no bulletin"));
    let (h1vm, h2vm) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    assert!(
        lab.ping(&h1vm, h2vm.ip),
        "the overlay works before the attack"
    );

    // 1. Silent QUIC connections, kept re-opened.
    let secs = ATTACK.as_secs().to_string();
    let attacker = abuse(
        &atk,
        &[
            "silent",
            "--reopen",
            "--connections",
            "600",
            "--seconds",
            &secs,
            "--server",
            &addr,
            "--fingerprint",
            &fp,
        ],
    );
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let ping = vmvpn_tests::ping_in_background(h1vm.ns.clone(), h2vm.ip, 500);
    let mut ls_times = Vec::new();
    let mut failures = Vec::new();
    let mut join_time = None;
    // When h3 was restarted, counted from the first echo.
    let mut join_at = None;
    while start.elapsed() < ATTACK - Duration::from_secs(2) {
        let (ok, text, took) = bulletin_from(&lab, &op, &["ls"]);
        ls_times.push(took);
        if !ok || took > WITHIN {
            failures.push(format!(
                "ls at {:?}: ok={ok} in {took:?}: {text}",
                start.elapsed()
            ));
        }
        if join_time.is_none() && start.elapsed() > Duration::from_secs(10) {
            let t = Instant::now();
            join_at = Some(start.elapsed().saturating_sub(Duration::from_secs(2)));
            lab.restart("h3");
            loop {
                let st = lab.try_status("h3");
                if st
                    .as_ref()
                    .is_some_and(|s| s["bulletin"]["state"] == "registered")
                {
                    join_time = Some(t.elapsed());
                    break;
                }
                if t.elapsed() > Duration::from_secs(15) {
                    failures.push(format!("h3 did not register within 15 s: {st:?}"));
                    join_time = Some(t.elapsed());
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (sent, received, missing) = ping.join().unwrap_or_else(|_| panic!("ping thread"));
    let quic = report(attacker);
    let worst_ls = ls_times.iter().max().copied().unwrap_or_default();
    eprintln!(
        "QUIC attack: {quic}; {} ls from the operator, worst {worst_ls:?}; h3 registered in {join_time:?}; ping {received}/{sent}",
        ls_times.len()
    );
    let (ok, st, _) = bulletin_from(&lab, &op, &["status"]);
    assert!(ok, "bulletin status: {st}");
    eprintln!("bulletin status after the QUIC attack: {st}");
    assert!(failures.is_empty(), "under the QUIC attack: {failures:#?}");
    assert!(ls_times.len() >= 20, "{} reads", ls_times.len());
    let join = join_time.unwrap_or_else(|| panic!("h3 never restarted"));
    assert!(join < WITHIN, "h3 registered after {join:?}");
    assert_eq!(
        received, sent,
        "the tunnels lost pings under the attack: echoes {missing:?} (echo N left N × 50 ms after the first; h3 restarted {join_at:?} after it)"
    );
    assert!(sent >= 500, "{sent}");
    let st: serde_json::Value = serde_json::from_str(&st).unwrap_or_else(|e| panic!("{e}: {st}"));
    let q = quic["opened"].as_u64().unwrap_or(0) + quic["refused"].as_u64().unwrap_or(0);
    assert!(q >= 600, "the attack ran: {quic}");
    assert!(
        st["admission"]["refused_unauthenticated_per_ip"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{st}"
    );
    assert_eq!(st["hosts"], 3, "{st}");
    lab.wait_tunnels("h1", "lan1", 2, Duration::from_secs(10));

    // 2. Idle TCP connections to the HTTPS dashboard, kept re-opened.
    let attacker = abuse(
        &atk,
        &[
            "tcp-idle",
            "--connections",
            "300",
            "--seconds",
            &secs,
            "--target",
            WEB_REMOTE,
        ],
    );
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let mut times = Vec::new();
    let mut failures = Vec::new();
    while start.elapsed() < ATTACK - Duration::from_secs(2) {
        let (code, secs, text) = dashboard_from(&lab, &op, "/api/v1/overview");
        times.push(secs);
        if code != 200 || secs > WITHIN.as_secs_f64() {
            failures.push(format!(
                "dashboard at {:?}: {code} in {secs} s: {}",
                start.elapsed(),
                text.chars().take(200).collect::<String>()
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let tcp = report(attacker);
    let worst = times.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "TCP attack: {tcp}; {} dashboard requests from the operator, worst {worst:.3} s",
        times.len()
    );
    assert!(failures.is_empty(), "under the TCP attack: {failures:#?}");
    assert!(times.len() >= 20, "{} requests", times.len());
    assert!(
        tcp["opened"].as_u64().unwrap_or(0) >= 300,
        "the attack ran: {tcp}"
    );
    // The listener counted what it refused, in /metrics and in `bulletin status`.
    let text = {
        let url = format!("https://{WEB_REMOTE}/metrics");
        let user = format!("admin:{WEB_PASSWORD}");
        let out = lab.exec(&op, &["curl", "-sfk", "-u", &user, &url]);
        assert!(out.status.success(), "GET /metrics: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let refused_line = format!("bulletin_web_connections_refused_total{{listen=\"{WEB_REMOTE}\"}}");
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&refused_line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {refused_line} in:\n{text}"));
    assert!(refused > 0, "{text}");
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut i) = c.stdin.take() {
                i.write_all(text.as_bytes())?;
            }
            c.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    assert!(
        promtool.status.success() && promtool.stdout.is_empty() && promtool.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    let (ok, st, _) = bulletin_from(&lab, &op, &["status"]);
    assert!(ok, "{st}");
    let st: serde_json::Value = serde_json::from_str(&st).unwrap_or_else(|e| panic!("{e}: {st}"));
    let web = st["web"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["listen"] == WEB_REMOTE))
        .unwrap_or_else(|| panic!("{st}"));
    assert!(
        web["counts"]["refused_per_ip"].as_u64().unwrap_or(0) > 0,
        "{st}"
    );
}
