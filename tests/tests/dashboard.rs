//! The web dashboard with real daemons in namespaces, looked at in a real browser (Debian's
//! headless Chromium, driven by chromedriver through `tests/browser/dashboard.py`): three
//! hosts in two subnets with traffic running; the page loads without a console error, the
//! heat map has one cell per host pair carrying the value the bulletin reports, the
//! topology shows every host and each subnet's forwarder, a cell opens its series, a
//! killed host turns down without a reload and up again when restarted; the listener off
//! loopback asks for the login over HTTPS only; a host serves its own view.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmvpn_tests::{Browser, Lab, WEB_LOCAL, WEB_PASSWORD, WEB_REMOTE};

/// Seconds between the hosts' reports in this lab.
const REPORT_S: u64 = 2;

/// `curl` in `ns`: (HTTP status, body); status 0 when no HTTP answer came.
fn curl(lab: &Lab, ns: &str, args: &[&str]) -> (u16, String) {
    let mut a = vec![
        "curl",
        "-s",
        "-k",
        "--max-time",
        "5",
        "-w",
        "\n%{http_code}",
    ];
    a.extend_from_slice(args);
    let out = lab.exec(ns, &a);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The bulletin's figure for `from` -> `to`, as the heat map prints it.
fn reported_p50(matrix: &Value, from: &str, to: &str) -> Option<String> {
    matrix[0]["links"]
        .as_array()?
        .iter()
        .find(|l| l["from"] == from && l["to"] == to)
        .and_then(|l| l["rtt_p50_us"].as_u64())
        .map(|us| format!("RTT p50 {:.3} ms", us as f64 / 1000.0))
}

#[test]
fn the_dashboard_shows_the_overlay_live_in_a_real_browser() {
    let mut lab = Lab::builder("dash")
        .subnet(&["h1", "h2"])
        .subnet(&["h3"])
        .lan("lan1", [192, 168, 77], &["h1", "h2", "h3"], 1)
        // A long lease: the killed host stays registered, so only its silence tells.
        .bulletin(120, 2)
        .telemetry(&format!("report_interval_s = {REPORT_S}\n"))
        .web()
        .start();
    for h in ["h1", "h2", "h3"] {
        lab.wait_tunnels(h, "lan1", 2, Duration::from_secs(30));
    }
    let router = lab.router_ns().to_string();
    // Traffic between VMs of both subnets while the page is looked at (bounded: 12 s).
    let (a, b) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h3", "lan1", 0).clone(),
    );
    let pings = {
        let (ns, to) = (a.ns.clone(), b.ip.to_string());
        std::thread::spawn(move || {
            Command::new("ip")
                .args(["netns", "exec", &ns, "ping", "-n", "-q", "-c", "600"])
                .args(["-i", "0.02", "-W", "1", &to])
                .output()
        })
    };
    // Every host has reported every tunnel with an RTT.
    let t0 = Instant::now();
    let matrix = loop {
        let m: Value =
            serde_json::from_str(&lab.bulletin_cli(&["matrix", "--json"])).expect("matrix JSON");
        let n = m[0]["links"]
            .as_array()
            .map_or(0, |l| l.iter().filter(|x| x["rtt_p50_us"].is_u64()).count());
        if n == 6 && m[0]["vms"].as_array().is_some_and(|v| !v.is_empty()) {
            break m;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no full matrix: {m:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!(
        "matrix: {}",
        serde_json::to_string(&matrix[0]["links"]).unwrap_or_default()
    );

    // --- the login off loopback, HTTPS only, from another host's namespace -------------
    let remote = format!("https://{WEB_REMOTE}/api/v1/overview");
    let h1 = lab.host_ns("h1").to_string();
    assert_eq!(
        curl(&lab, &h1, &[&remote]).0,
        401,
        "no login: 401 off loopback"
    );
    let head = lab.exec(
        &h1,
        &["curl", "-s", "-k", "-D", "-", "-o", "/dev/null", &remote],
    );
    assert!(
        String::from_utf8_lossy(&head.stdout).contains("www-authenticate: Basic realm="),
        "a browser is asked to log in: {}",
        String::from_utf8_lossy(&head.stdout)
    );
    assert_eq!(
        curl(&lab, &h1, &["-u", "admin:wrong password!!", &remote]).0,
        401
    );
    assert_eq!(
        curl(&lab, &h1, &["-u", &format!("root:{WEB_PASSWORD}"), &remote]).0,
        401
    );
    let (code, body) = curl(
        &lab,
        &h1,
        &["-u", &format!("admin:{WEB_PASSWORD}"), &remote],
    );
    assert_eq!(code, 200, "{body}");
    let ov: Value = serde_json::from_str(&body).expect("overview JSON");
    assert_eq!(ov["scope"], "overlay");
    let bearer = format!("Authorization: Bearer {WEB_PASSWORD}");
    assert_eq!(curl(&lab, &h1, &["-H", &bearer, &remote]).0, 200);
    let plain = format!("http://{WEB_REMOTE}/api/v1/overview");
    assert_eq!(
        curl(&lab, &h1, &[&plain]).0,
        0,
        "no plain HTTP off loopback"
    );
    // Never a LAN secret, nor its verifier, in what the dashboard serves.
    let secret = std::fs::read_to_string(lab.dir().join("lan1.key")).expect("lan1.key");
    let secret = secret.trim();
    let verifier = bulletin::proof::Verifier::from_secret(
        &bulletin::proof::parse_secret(secret).expect("secret"),
    )
    .to_base64();
    for path in ["/api/v1/overview", "/", "/app.js"] {
        let (code, body) = curl(&lab, &router, &[&format!("http://{WEB_LOCAL}{path}")]);
        assert_eq!(code, 200, "{path} on loopback needs no login");
        assert!(
            !body.contains(secret) && !body.contains(&verifier),
            "{path} serves a LAN secret"
        );
    }
    assert_eq!(
        curl(
            &lab,
            &router,
            &["-X", "POST", &format!("http://{WEB_LOCAL}/api/v1/overview")]
        )
        .0,
        405,
        "read-only"
    );

    // --- a host's own view ------------------------------------------------------------
    let (code, body) = curl(&lab, &h1, &[&format!("http://{WEB_LOCAL}/api/v1/overview")]);
    assert_eq!(code, 200, "{body}");
    let mine: Value = serde_json::from_str(&body).expect("host overview JSON");
    assert_eq!(
        (mine["scope"].as_str(), mine["name"].as_str()),
        (Some("host"), Some("h1"))
    );
    let hosts: Vec<&str> = mine["lans"][0]["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["name"].as_str())
        .collect();
    assert_eq!(hosts, vec!["h1", "h2", "h3"], "{mine:#}");
    assert_eq!(
        mine["lans"][0]["links"].as_array().map(Vec::len),
        Some(2),
        "h1 measures its two tunnels"
    );

    // --- the page, in Chromium ----------------------------------------------------------
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("output dir");
    let mut browser = Browser::start(&router, &lab.dir().join("chromium-profile"));
    let loaded = browser.ask(&format!("load http://{WEB_LOCAL}/"));
    assert_eq!(loaded["ok"], true, "{loaded}");
    let look = browser.ask("look");
    assert_eq!(
        look["errors"],
        serde_json::json!([]),
        "console errors: {look:#}"
    );
    assert_eq!(look["live"], "live", "{look:#}");
    let mut names: Vec<(String, String)> = look["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or("").to_string(),
                h["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["h1", "h2", "h3"].map(|h| (h.to_string(), "up".to_string())),
        "{look:#}"
    );
    let forwarders = look["hosts"]
        .as_array()
        .map_or(0, |h| h.iter().filter(|h| h["forwarder"] == true).count());
    assert_eq!(
        forwarders, 2,
        "one designated forwarder per subnet: {look:#}"
    );
    assert_eq!(look["links"].as_array().map(Vec::len), Some(3), "{look:#}");
    // No NAT here: no tunnel is drawn as punched.
    assert!(
        look["links"]
            .as_array()
            .is_some_and(|l| l.iter().all(|l| !l["cls"].to_string().contains("punched"))),
        "{look:#}"
    );
    let subnets = look["subnets"].to_string();
    assert!(
        subnets.contains("10.77.1.0/24") && subnets.contains("10.77.2.0/24"),
        "{subnets}"
    );
    assert!(look["vms"].as_u64().unwrap_or(0) >= 2, "VM rows: {look:#}");
    // One cell per ordered host pair, each with the value the bulletin reports. Reports
    // change every 2 s, so the page and the CLI are compared until they agree once.
    let mut agreed = false;
    for _ in 0..10 {
        let look = browser.ask("look");
        let m: Value =
            serde_json::from_str(&lab.bulletin_cli(&["matrix", "--json"])).expect("matrix JSON");
        let cells = look["cells"].as_array().cloned().unwrap_or_default();
        assert_eq!(cells.len(), 6, "{look:#}");
        let ok = cells.iter().all(|c| {
            let (f, t) = (
                c["from"].as_str().unwrap_or(""),
                c["to"].as_str().unwrap_or(""),
            );
            reported_p50(&m, f, t)
                .is_some_and(|want| c["title"].as_str().unwrap_or("").contains(&want))
        });
        if ok {
            eprintln!(
                "heat map titles agree with `bulletin matrix`: {}",
                look["cells"]
            );
            agreed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(agreed, "the heat map never showed the reported RTTs");
    let series = browser.ask("click-cell h1 h3");
    assert!(series["charts"].as_u64().unwrap_or(0) >= 3, "{series:#}");
    assert!(
        series["title"].as_str().unwrap_or("").contains("h1 → h3"),
        "{series:#}"
    );
    // A few more reports, so the series and the VM rates have points in the picture.
    std::thread::sleep(Duration::from_secs(3 * REPORT_S));
    let shot = out.join("dashboard.png");
    browser.ask(&format!("shot {}", shot.display()));
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot: {e}"));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a screenshot of the page ({} bytes)",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());

    // --- a host killed turns down without a reload -----------------------------------------
    lab.kill("h3");
    let killed = Instant::now();
    let limit = REPORT_S + 5;
    let down = browser.ask(&format!("wait-down h3 {}", limit + 2));
    let after = killed.elapsed();
    eprintln!(
        "h3 shown {} {:.1} s after SIGKILL (report interval {REPORT_S} s)",
        down["state"],
        after.as_secs_f64()
    );
    assert!(
        down["state"] == "down" || down["state"] == "gone",
        "{down:#}"
    );
    assert!(
        after <= Duration::from_secs(limit),
        "h3 turned down after {after:?}, more than the report interval + 5 s"
    );
    assert_eq!(down["marker"], "same page", "the page was reloaded");
    assert_eq!(
        down["errors"],
        serde_json::json!([]),
        "console errors: {down:#}"
    );
    // It comes back: shown up again, on the same page.
    lab.restart("h3");
    let back = browser.ask("wait-up h3 30");
    eprintln!(
        "h3 shown {} again {} s after its restart",
        back["state"], back["after_s"]
    );
    assert_eq!(back["state"], "up", "{back:#}");
    assert_eq!(back["marker"], "same page", "the page was reloaded");
    assert_eq!(
        back["errors"],
        serde_json::json!([]),
        "console errors: {back:#}"
    );
    drop(browser);
    let _ = pings.join();
}

#[test]
fn a_dashboard_off_loopback_without_a_login_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("vmvpn-dash-refuse-{}", std::process::id()));
    let out = Command::new(vmvpn_tests::bulletin_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&dir)
        .args(["--web", "192.0.2.1:8443"])
        .output()
        .expect("run bulletin");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("192.0.2.1:8443") && err.contains("[web]"),
        "says why and what to do: {err}"
    );
}

#[test]
fn a_hosts_https_dashboard_keeps_its_certificate_across_restarts() {
    let pw = std::env::temp_dir().join(format!("vmvpn-dash-pw-{}", std::process::id()));
    std::fs::write(&pw, format!("{WEB_PASSWORD}\n")).expect("password file");
    let mut lab = Lab::builder("dashcert")
        .subnet(&["h1", "h2"])
        .lan("lan1", [192, 168, 83], &["h1", "h2"], 0)
        .host_line("h1", "web = \"10.77.1.1:8443\"")
        .host_line("h1", "state_dir = \"{dir}/h1-state\"")
        .config_tail(
            "h1",
            &format!(
                "[web]\nuser = \"admin\"\npassword_file = \"{}\"",
                pw.display()
            ),
        )
        .start();
    // The fingerprint each start logged.
    let fingerprints = |lab: &Lab| -> Vec<String> {
        lab.log("h1")
            .lines()
            .filter(|l| l.contains("dashboard certificate"))
            .filter_map(|l| l.split("fingerprint=").nth(1))
            .filter_map(|f| f.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    let first = fingerprints(&lab);
    assert_eq!(first.len(), 1, "{}", lab.log("h1"));
    assert!(lab.dir().join("h1-state/web/cert.der").exists());
    lab.stop("h1");
    lab.restart("h1");
    let both = fingerprints(&lab);
    assert_eq!(both.len(), 2, "{}", lab.log("h1"));
    assert_eq!(both[0], both[1], "a new certificate at the second start");
    // And it is the one served.
    let out = lab.exec(
        lab.host_ns("h2"),
        &[
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            &format!("admin:{WEB_PASSWORD}"),
            "https://10.77.1.1:8443/api/v1/overview",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let _ = std::fs::remove_file(&pw);
}

/// A host's own dashboard shows its services in a real browser: the panel appears only
/// where the LAN has services, a backend not seen yet is "unknown", and it turns "up" on
/// the open page (an event-stream delta, no reload) once its VM is heard from.
#[test]
fn a_hosts_dashboard_shows_its_services_in_a_real_browser() {
    let b2 = "02:00:00:02:00:00";
    let lab = Lab::builder("dashsvc")
        .subnet(&["h1", "h2"])
        .lan("lan1", [192, 168, 86], &["h1", "h2"], 1)
        .host_line("h1", &format!("web = \"{WEB_LOCAL}\""))
        .config_tail(
            "h1",
            &format!(
                "[[lan.service]]\nname = \"web\"\naddress = \"192.168.86.200\"\n\
                 backends = [\"{b2}\"]\n"
            ),
        )
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    let h1 = lab.host_ns("h1").to_string();
    let mut browser = Browser::start(&h1, &lab.dir().join("chromium-profile"));
    let loaded = browser.ask(&format!("load http://{WEB_LOCAL}/"));
    assert_eq!(loaded["ok"], true, "{loaded}");
    let look = browser.ask("look");
    assert_eq!(look["errors"], serde_json::json!([]), "{look:#}");
    assert_eq!(look["services_shown"], true, "{look:#}");
    let rows = look["services"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{look:#}");
    assert_eq!(rows[0]["service"], "web");
    assert_eq!(rows[0]["backend"], b2);
    assert_eq!(
        rows[0]["state"], "unknown",
        "no frame from it yet: {look:#}"
    );
    // Its VM speaks: h1 learns where it is; the open page follows.
    let (v1, v2) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    assert!(lab.ping(&v1, v2.ip));
    let t0 = Instant::now();
    loop {
        let look = browser.ask("look");
        let row = look["services"][0].clone();
        if row["state"] == "up" {
            assert!(row["text"].as_str().unwrap_or("").contains("h2"), "{row}");
            assert_eq!(look["marker"], "same page", "no reload: {look:#}");
            assert_eq!(look["errors"], serde_json::json!([]), "{look:#}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the backend never showed up: {look:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A namespace of the test's own with loopback up; deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("vmvt-{}-{tag}", std::process::id());
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let ok = Command::new("ip")
                .args(&args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?} failed");
        }
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child stopped by its PID when dropped.
struct Stopped(Option<Child>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_lan_of_200_hosts_renders_aggregated_in_a_real_browser() {
    vmvpn_tests::require_root();
    let ns = Netns::new("dash200");
    // A real bulletin with 200 simulated hosts in one LAN, each reporting its 199 tunnels
    // every 5 s, churning, and one page on the event stream (bulletin-load's own checks:
    // every join and leave reaches every other host).
    let load = vmvpn_tests::vmvpn_bin().with_file_name("bulletin-load");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(&load)
        .args(["--mode", "dashboard", "--hosts", "200", "--per-lan", "200"])
        .args(["--pages", "1", "--warmup-s", "15", "--steady-s", "30"])
        .args(["--web", WEB_LOCAL])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", load.display()));
    let mut load_run = Stopped(Some(child));
    // Every host's report in: the LAN has (nearly) all its 39 800 tunnel directions.
    let t0 = Instant::now();
    let links = loop {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.0, "curl", "-s", "--max-time", "5"])
            .arg(format!("http://{WEB_LOCAL}/api/v1/overview"))
            .output()
            .expect("curl");
        let n = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|o| o["lans"][0]["links"].as_array().map(Vec::len))
            .unwrap_or(0);
        if n >= 195 * 194 {
            break n;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the LAN never had its tunnels reported ({n})"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let profile =
        std::env::temp_dir().join(format!("vmvt-{}-dash200-chromium", std::process::id()));
    let mut browser = Browser::start(&ns.0, &profile);
    let loaded = browser.ask(&format!("load http://{WEB_LOCAL}/"));
    assert_eq!(loaded["ok"], true, "{loaded}");
    let look = browser.ask("look");
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
    assert_eq!(look["errors"], serde_json::json!([]), "console errors");
    assert_eq!(look["live"], "live");
    let hosts = look["first_render_hosts"].as_u64().unwrap_or(0);
    let cells = look["heat_canvas_cells"].as_u64().unwrap_or(0);
    let shown = look["hosts"].as_array().map_or(0, Vec::len) as u64;
    eprintln!(
        "200-host LAN: first picture {} ms after navigation, {hosts} hosts, {cells} heat-map cells ({links} links reported)",
        look["first_render_ms"]
    );
    assert!(
        hosts >= 195 && shown >= 195,
        "every host drawn: {hosts}, {shown}"
    );
    assert!(
        cells >= 195 * 194,
        "the heat map on its canvas has a cell per tunnel: {cells}"
    );
    assert!(
        look["cells"].as_array().is_some_and(Vec::is_empty),
        "no SVG cells for a large LAN"
    );
    let out = load_run
        .0
        .take()
        .and_then(|c| c.wait_with_output().ok())
        .expect("bulletin-load's output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bulletin-load: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&text).expect("bulletin-load JSON");
    eprintln!(
        "page: {} B/s of deltas, snapshot {:?} B; fan-out p99 {} ms",
        r["page_bytes_per_s_max"], r["page_snapshot_bytes"], r["fanout_ms_p99"]
    );
    assert!(
        r["page_delta_events"][0].as_u64().unwrap_or(0) > 0,
        "the page got deltas: {r:#}"
    );
}
