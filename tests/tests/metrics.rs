//! The Prometheus endpoint: a live scrape from a running daemon passes the real
//! `promtool check metrics` and carries the tunnel's figures.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use vmvpn_tests::{Lab, METRICS_PORT};

fn get(lab: &Lab, host: &str, path: &str) -> String {
    let path = path.to_string();
    lab.in_ns(lab.host_ns(host), move || {
        let mut s = TcpStream::connect(("127.0.0.1", METRICS_PORT)).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        out
    })
    .join()
    .expect("scrape thread")
}

#[test]
fn a_live_scrape_passes_promtool_and_shows_the_tunnel() {
    let lab = Lab::builder("prom")
        .subnet(&["h1", "h2"])
        .lan("lan1", [192, 168, 100], &["h1", "h2"], 1)
        .metrics()
        .host_line("h1", "relay = true\nrelay_limit_mbps = 100")
        // Exporters with nobody listening: their families (and counted errors) are linted.
        .config_tail(
            "h1",
            "[export.sflow]\ncollectors = [\"127.0.0.1:6343\"]\nsampling_rate = 1\n\
             [export.ipfix]\ncollectors = [\"127.0.0.1:4739\"]\n\
             [export.redis]\nurl = \"redis://127.0.0.1:1\"\ninterval_s = 1\n",
        )
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(10));
    assert!(lab.ping(lab.vm("h1", "lan1", 0), lab.vm("h2", "lan1", 0).ip));
    std::thread::sleep(Duration::from_millis(1500)); // a probe answered, a second closed
    let resp = get(&lab, "h1", "/metrics");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && head.contains("text/plain; version=0.0.4"),
        "{head}"
    );
    let h2 = format!("{}:7401", lab.host_ip("h2"));
    for family in [
        "vmvpn_export_datagrams_total{exporter=\"sflow\"}",
        "vmvpn_export_sflow_samples_total{kind=\"flow\"}",
        "vmvpn_export_errors_total{exporter=\"redis\"}",
    ] {
        let v: f64 = body
            .lines()
            .find(|l| l.starts_with(family))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {family} in:\n{body}"));
        assert!(v > 0.0, "{family} {v}");
    }
    assert!(body.contains("vmvpn_export_redis_connected 0"), "{body}");
    // The relay's families (it relays nothing here: both hosts reach each other).
    for line in [
        "vmvpn_relay_pairs 0",
        "vmvpn_relay_forwarded_packets_total 0",
        "vmvpn_relay_drops_total{reason=\"bad_mac\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in:\n{body}");
    }
    for metric in [
        "vmvpn_peer_up",
        // Both hosts of this version, at their listed addresses: flows spread by default.
        "vmvpn_peer_flows_spread",
        "vmvpn_peer_tx_packets_total",
        "vmvpn_peer_rtt_p50_seconds",
    ] {
        let line = body
            .lines()
            .find(|l| l.starts_with(metric) && l.contains(&h2))
            .unwrap_or_else(|| panic!("no {metric} for {h2} in:\n{body}"));
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number");
        assert!(value > 0.0, "{line}");
    }
    // The real linter, on the real scrape: no finding at all.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/deps.sh installs Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = promtool.wait_with_output().expect("promtool");
    let findings =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics:\n{findings}"
    );
    // Anything else is a 404.
    assert!(get(&lab, "h1", "/").starts_with("HTTP/1.1 404"));
}
