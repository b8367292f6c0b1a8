//! Tables for people, from the same JSON that `--json` prints.

use std::fmt::Write;

use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// 1234567 -> "1.2M".
fn human(x: u64) -> String {
    const UNITS: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut f = x as f64;
    let mut u = 0;
    while f >= 1000.0 && u < UNITS.len() - 1 {
        f /= 1000.0;
        u += 1;
    }
    if u == 0 {
        x.to_string()
    } else {
        format!("{f:.1}{}", UNITS[u])
    }
}

fn ago(ms: &Value) -> String {
    match ms.as_u64() {
        None => "never".into(),
        Some(ms) if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("{}s", ms / 1000),
    }
}

/// 1234 -> "1.23ms", 56 -> "56µs", null -> "-".
fn micros(v: &Value) -> String {
    match v.as_u64() {
        None => "-".into(),
        Some(us) if us >= 1000 => format!("{:.2}ms", us as f64 / 1000.0),
        Some(us) => format!("{us}µs"),
    }
}

/// A ratio as a percentage with two decimals ("-" when null).
fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |r| format!("{:.2}%", r * 100.0))
}

/// Bits per second: "12.3M" (bit/s).
fn rate(v: &Value) -> String {
    human(n(v))
}

/// Non-zero drop counters as `reason=count`, or "none".
fn drops(v: &Value) -> String {
    let parts: Vec<String> = v
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, c)| n(c) > 0)
                .map(|(k, c)| format!("{k}={}", n(c)))
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

/// `vmvpn status`.
pub fn status(v: &Value) -> String {
    let mut o = String::new();
    let h = &v["host"];
    let _ = writeln!(
        o,
        "host {} (id {:#010x})  listening {}  up {}s  vmvpn {}  data plane {}",
        s(&h["name"]),
        n(&h["id"]),
        s(&h["listen"]),
        n(&h["uptime_s"]),
        s(&h["version"]),
        if h["realtime"] == true {
            "real-time"
        } else {
            "normal priority"
        }
    );
    let b = &v["bulletin"];
    if b.is_null() {
        let _ = writeln!(o, "bulletin: none (static peers only)");
    } else {
        let _ = writeln!(
            o,
            "bulletin {} {}  epoch {}  registered {}  peers {}",
            s(&b["server"]),
            s(&b["state"]),
            s(&b["epoch"]),
            b["registered_ago_s"]
                .as_u64()
                .map_or("-".to_string(), |x| format!("{x}s ago")),
            n(&b["peers"])
        );
        if let Some(e) = b["last_error"].as_str() {
            let _ = writeln!(o, "  last error: {e}");
        }
    }
    let _ = writeln!(o, "unattributed drops: {}", drops(&v["drops"]));
    let off = &v["offload"];
    if !off.is_null() {
        let _ = writeln!(
            o,
            "offload: TAP TSO {}, {} large frames split into {} segments, {} merged from {} received; UDP GSO up to {} datagrams per send, {} sends carried {}",
            if off["tap_offload"] == true {
                "on"
            } else {
                "off"
            },
            n(&off["tso_frames_total"]),
            n(&off["tso_segments_total"]),
            n(&off["gro_frames_total"]),
            n(&off["gro_segments_total"]),
            n(&off["gso_max_segments"]),
            n(&off["gso_sends_total"]),
            n(&off["gso_datagrams_total"])
        );
    }
    let re = &v["reassembly"];
    if !re.is_null() {
        let _ = writeln!(
            o,
            "reassembly: {} frames put together from overlay fragments, {} in progress; dropped {} overlapping, {} oversize, {} timed out, {} evicted",
            n(&re["reassembled_frames_total"]),
            n(&re["in_progress"]),
            n(&re["overlap_total"]),
            n(&re["oversize_total"]),
            n(&re["timeout_total"]),
            n(&re["evicted_total"])
        );
    }
    for l in v["lans"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "\nLAN {}  segment {}  TAP {} mtu {}  macs {}  flooded {}  drops: {}",
            s(&l["name"]),
            s(&l["segment"]),
            s(&l["tap"]),
            n(&l["mtu"]),
            n(&l["macs"]),
            n(&l["flood_tx_frames"]),
            drops(&l["drops"])
        );
        let f = &l["flood"];
        if !f.is_null() {
            let _ = writeln!(
                o,
                "  flood {} group {}  {}  sent: {} multicast, {} unicast, {} relay; relayed {}, duplicates {}",
                s(&f["mode"]),
                s(&f["group"]),
                if f["forwarder"].as_bool() == Some(true) {
                    "forwarder of this subnet"
                } else {
                    "not forwarder"
                },
                n(&f["multicast_datagrams_total"]),
                n(&f["unicast_datagrams_total"]),
                n(&f["relay_datagrams_total"]),
                n(&f["relayed_frames_total"]),
                n(&f["duplicates_suppressed_total"])
            );
            for sn in f["subnets"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    o,
                    "    {:<18} {} host(s)  {:<9} forwarder {}  ({})",
                    s(&sn["subnet"]),
                    n(&sn["hosts"]),
                    s(&sn["mode"]),
                    s(&sn["forwarder"]),
                    s(&sn["reason"])
                );
            }
        }
        let _ = writeln!(
            o,
            "  {:<12} {:<21} {:<8} {:<15} {:>6} {:>5} {:>8} {:>8} {:>8} {:>13} {:>8} {:>8} {:>7} {:>7}  DROPS",
            "PEER",
            "ADDRESS",
            "SOURCE",
            "STATE",
            "HEARD",
            "PMTU",
            "RTT p50",
            "RTT p99",
            "JITTER",
            "LOSS tx/rx",
            "TX bit/s",
            "RX bit/s",
            "TX",
            "RX"
        );
        for p in l["peers"].as_array().into_iter().flatten() {
            let name = s(&p["name"]);
            let _ = writeln!(
                o,
                "  {:<12} {:<21} {:<8} {:<15} {:>6} {:>5} {:>8} {:>8} {:>8} {:>13} {:>8} {:>8} {:>7} {:>7}  {}",
                if name.is_empty() { "?".into() } else { name },
                s(&p["address"]),
                s(&p["source"]),
                match p["health"].as_str() {
                    Some(h) if p["state"] == "up" => format!("up ({h})"),
                    _ => s(&p["state"]),
                },
                ago(&p["last_heard_ago_ms"]),
                // A search still running shows what data uses meanwhile, marked.
                format!(
                    "{}{}",
                    n(&p["path_mtu_bytes"]),
                    if p["path_mtu_searching"] == true {
                        "?"
                    } else {
                        ""
                    }
                ),
                micros(&p["rtt_p50_us"]),
                micros(&p["rtt_p99_us"]),
                micros(&p["jitter_us"]),
                format!("{}/{}", pct(&p["loss_tx_ratio"]), pct(&p["loss_rx_ratio"])),
                rate(&p["tx_rate_bps"]),
                rate(&p["rx_rate_bps"]),
                human(n(&p["tx_bytes"])) + "B",
                human(n(&p["rx_bytes"])) + "B",
                drops(&p["drops"])
            );
        }
        if n(&l["fragmented_frames_total"]) > 0 {
            let _ = writeln!(
                o,
                "  frames larger than a datagram to their peer: {} cut into {} overlay fragments",
                n(&l["fragmented_frames_total"]),
                n(&l["fragments_sent_total"])
            );
        }
        let (vt, ft) = (&l["vm_table"], &l["flow_table"]);
        if !vt.is_null() {
            let _ = writeln!(
                o,
                "  VMs {} (evicted {})  pairs {}  flows {} (evicted {})  TCP open {}  SYN {} FIN {} RST {}",
                n(&vt["vms"]),
                n(&vt["vm_evictions_total"]),
                n(&vt["pairs"]),
                n(&ft["flows"]),
                n(&ft["flows_evicted_total"]),
                n(&ft["tcp_active"]),
                n(&ft["tcp_syn_total"]),
                n(&ft["tcp_fin_total"]),
                n(&ft["tcp_rst_total"])
            );
        }
    }
    o
}

/// `vmvpn vms`: per-VM traffic of each LAN, busiest first.
pub fn vms(v: &Value) -> String {
    let mut o = String::new();
    for l in v.as_array().into_iter().flatten() {
        let t = &l["vm_table"];
        let _ = writeln!(
            o,
            "LAN {}  {} VMs (evicted {})",
            s(&l["lan"]),
            n(&t["vms"]),
            n(&t["vm_evictions_total"])
        );
        let _ = writeln!(
            o,
            "  {:<18} {:<26} {:<7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
            "MAC", "IP", "WHERE", "TX PKTS", "TX", "RX PKTS", "RX", "TX RATE", "RX RATE", "IDLE"
        );
        for r in l["vms"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  {:<18} {:<26} {:<7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5}s",
                s(&r["mac"]),
                s(&r["ip"]),
                s(&r["location"]),
                human(n(&r["tx_packets"])),
                human(n(&r["tx_bytes"])) + "B",
                human(n(&r["rx_packets"])),
                human(n(&r["rx_bytes"])) + "B",
                r["rates"].get("tx_rate_bps").map_or("-".into(), rate),
                r["rates"].get("rx_rate_bps").map_or("-".into(), rate),
                n(&r["idle_s"])
            );
        }
        let pairs = l["pairs"].as_array().map_or(&[][..], |a| a.as_slice());
        if !pairs.is_empty() {
            let _ = writeln!(o, "  VM matrix (seen here; * counted at the source host)");
            let _ = writeln!(
                o,
                "    {:<26} {:<26} {:>8} {:>8}",
                "FROM", "TO", "PKTS", "BYTES"
            );
            for r in pairs {
                let end = |mac: &Value, ip: &Value| {
                    if ip.is_null() { s(mac) } else { s(ip) }
                };
                let _ = writeln!(
                    o,
                    "    {:<26} {:<26} {:>8} {:>8}{}",
                    end(&r["src_mac"], &r["src_ip"]),
                    end(&r["dst_mac"], &r["dst_ip"]),
                    human(n(&r["packets"])),
                    human(n(&r["bytes"])) + "B",
                    if r["at_source"] == true { " *" } else { "" }
                );
            }
        }
    }
    o
}

/// `vmvpn flows`: flows of each LAN, busiest first.
pub fn flows(v: &Value) -> String {
    let mut o = String::new();
    for l in v.as_array().into_iter().flatten() {
        let t = &l["flow_table"];
        let _ = writeln!(
            o,
            "LAN {}  {} flows (evicted {}, expired {})  TCP open {}  SYN {} FIN {} RST {}",
            s(&l["lan"]),
            n(&t["flows"]),
            n(&t["flows_evicted_total"]),
            n(&t["flows_expired_total"]),
            n(&t["tcp_active"]),
            n(&t["tcp_syn_total"]),
            n(&t["tcp_fin_total"]),
            n(&t["tcp_rst_total"])
        );
        let _ = writeln!(
            o,
            "  {:<6} {:<30} {:<30} {:<11} {:>8} {:>8} {:>8} {:>8} {:>6} {:>5}",
            "PROTO", "FROM", "TO", "TCP", "TX PKTS", "TX", "RX PKTS", "RX", "AGE", "IDLE"
        );
        for r in l["flows"].as_array().into_iter().flatten() {
            let ep = |ip: &Value, port: &Value| match n(port) {
                0 => s(ip),
                p if s(ip).contains(':') => format!("[{}]:{p}", s(ip)),
                p => format!("{}:{p}", s(ip)),
            };
            let _ = writeln!(
                o,
                "  {:<6} {:<30} {:<30} {:<11} {:>8} {:>8} {:>8} {:>8} {:>5}s {:>4}s",
                s(&r["proto"]),
                ep(&r["src"], &r["src_port"]),
                ep(&r["dst"], &r["dst_port"]),
                s(&r["tcp_state"]),
                human(n(&r["tx_packets"])),
                human(n(&r["tx_bytes"])) + "B",
                human(n(&r["rx_packets"])),
                human(n(&r["rx_bytes"])) + "B",
                n(&r["age_s"]),
                n(&r["idle_s"])
            );
        }
    }
    o
}

/// `vmvpn top`: one screen of tunnels and the busiest VMs and flows.
pub fn top(status_v: &Value, traffic: &Value, rows: usize) -> String {
    let mut o = String::new();
    let h = &status_v["host"];
    let _ = writeln!(
        o,
        "vmvpn top — host {}  up {}s  (Ctrl-C to quit)\n",
        s(&h["name"]),
        n(&h["uptime_s"])
    );
    let _ = writeln!(
        o,
        "{:<10} {:<12} {:<15} {:>8} {:>8} {:>8} {:>13} {:>9} {:>9}",
        "LAN", "PEER", "STATE", "RTT p50", "RTT p99", "JITTER", "LOSS tx/rx", "TX RATE", "RX RATE"
    );
    let mut peers: Vec<(String, &Value)> = Vec::new();
    for l in status_v["lans"].as_array().into_iter().flatten() {
        for p in l["peers"].as_array().into_iter().flatten() {
            peers.push((s(&l["name"]), p));
        }
    }
    peers.sort_by_key(|(_, p)| std::cmp::Reverse(n(&p["tx_rate_bps"]) + n(&p["rx_rate_bps"])));
    for (lan, p) in peers.iter().take(rows) {
        let _ = writeln!(
            o,
            "{:<10} {:<12} {:<15} {:>8} {:>8} {:>8} {:>13} {:>9} {:>9}",
            lan,
            s(&p["name"]),
            match p["health"].as_str() {
                Some(h) if p["state"] == "up" => format!("up ({h})"),
                _ => s(&p["state"]),
            },
            micros(&p["rtt_p50_us"]),
            micros(&p["rtt_p99_us"]),
            micros(&p["jitter_us"]),
            format!("{}/{}", pct(&p["loss_tx_ratio"]), pct(&p["loss_rx_ratio"])),
            rate(&p["tx_rate_bps"]) + "b/s",
            rate(&p["rx_rate_bps"]) + "b/s"
        );
    }
    let _ = writeln!(
        o,
        "\n{:<10} {:<18} {:<26} {:>9} {:>9}",
        "LAN", "LOCAL VM", "IP", "TX RATE", "RX RATE"
    );
    let mut ports: Vec<(String, &Value)> = Vec::new();
    for l in traffic.as_array().into_iter().flatten() {
        for r in l["vms"].as_array().into_iter().flatten() {
            if r["location"] == "local" {
                ports.push((s(&l["lan"]), r));
            }
        }
    }
    let busy = |r: &Value| n(&r["rates"]["tx_rate_bps"]) + n(&r["rates"]["rx_rate_bps"]);
    ports.sort_by_key(|(_, r)| std::cmp::Reverse(busy(r)));
    for (lan, r) in ports.iter().take(rows) {
        let _ = writeln!(
            o,
            "{:<10} {:<18} {:<26} {:>9} {:>9}",
            lan,
            s(&r["mac"]),
            s(&r["ip"]),
            rate(&r["rates"]["tx_rate_bps"]) + "b/s",
            rate(&r["rates"]["rx_rate_bps"]) + "b/s"
        );
    }
    let _ = writeln!(
        o,
        "\n{:<10} {:<6} {:<26} {:<26} {:>9} {:>9}",
        "LAN", "PROTO", "FROM", "TO", "TX", "RX"
    );
    let mut fl: Vec<(String, &Value)> = Vec::new();
    for l in traffic.as_array().into_iter().flatten() {
        for r in l["flows"].as_array().into_iter().flatten() {
            fl.push((s(&l["lan"]), r));
        }
    }
    fl.sort_by_key(|(_, r)| std::cmp::Reverse(n(&r["tx_bytes"]) + n(&r["rx_bytes"])));
    for (lan, r) in fl.iter().take(rows) {
        let _ = writeln!(
            o,
            "{:<10} {:<6} {:<26} {:<26} {:>9} {:>9}",
            lan,
            s(&r["proto"]),
            format!("{}:{}", s(&r["src"]), n(&r["src_port"])),
            format!("{}:{}", s(&r["dst"]), n(&r["dst_port"])),
            human(n(&r["tx_bytes"])) + "B",
            human(n(&r["rx_bytes"])) + "B"
        );
    }
    o
}

/// One `vmvpn ping` line.
pub fn pong(v: &Value, seq: u32) -> String {
    let who = match (v["peer"].as_str(), v["via_vm"].as_str()) {
        (Some(p), Some(vm)) if !p.is_empty() => format!("{p} (VM {vm})"),
        (Some(p), None) if !p.is_empty() => p.to_string(),
        _ => "?".to_string(),
    };
    match v["rtt_us"].as_f64() {
        Some(us) => format!(
            "pong from {who} at {} on {}: seq={seq} time={:.3} ms",
            s(&v["address"]),
            s(&v["lan"]),
            us / 1000.0
        ),
        None => format!(
            "no answer from {who} at {} on {}: seq={seq} (timeout)",
            s(&v["address"]),
            s(&v["lan"])
        ),
    }
}

/// `vmvpn macs`.
pub fn macs(v: &Value) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<10} {:<18} {:<22} {:<12} {:>8}",
        "LAN", "MAC", "WHERE", "PEER", "AGE"
    );
    for r in v.as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "{:<10} {:<18} {:<22} {:<12} {:>7}s",
            s(&r["lan"]),
            s(&r["mac"]),
            s(&r["location"]),
            s(&r["peer_name"]),
            n(&r["age_ms"]) / 1000
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_table_shows_peers_and_nonzero_drops() {
        let v = json!({
            "host": {"name": "h1", "id": 305419896, "listen": "0.0.0.0:7401", "uptime_s": 5, "version": "0.1.0"},
            "drops": {"bad_header": 2, "unknown_lan": 0},
            "lans": [{"name": "lan1", "segment": "192.168.100.0/24", "tap": "vl1", "mtu": 1418, "macs": 3,
                      "flood_tx_frames": 4, "drops": {"replay": 0},
                      "peers": [{"id": 1, "name": "h2", "address": "10.77.1.2:7401", "source": "static",
                                 "state": "up", "last_heard_ago_ms": 1500, "tx_packets": 1234567,
                                 "tx_bytes": 10, "rx_packets": 0, "rx_bytes": 0,
                                 "drops": {"auth_failure": 3}}]}]
        });
        let t = status(&v);
        assert!(t.contains("host h1 (id 0x12345678)"), "{t}");
        assert!(t.contains("unattributed drops: bad_header=2"), "{t}");
        assert!(t.contains("bulletin: none"), "{t}");
        let mut v2 = v.clone();
        v2["lans"][0]["flood"] = json!({"mode": "auto", "group": "239.77.0.1:7401", "forwarder": true,
            "multicast_datagrams_total": 5, "unicast_datagrams_total": 0, "relay_datagrams_total": 5,
            "relayed_frames_total": 2, "duplicates_suppressed_total": 0,
            "subnets": [{"subnet": "10.77.1.0/24", "hosts": 2, "mode": "multicast", "forwarder": "self",
                         "reason": "beacons heard from every host here"}]});
        let t2 = status(&v2);
        assert!(
            t2.contains("flood auto group 239.77.0.1:7401  forwarder of this subnet")
                && t2.contains("10.77.1.0/24"),
            "{t2}"
        );
        let mut v = v;
        v["bulletin"] = json!({"server": "10.77.0.254:7400", "state": "unreachable", "epoch": "00ff",
                               "registered_ago_s": null, "last_error": "timed out", "peers": 4});
        let t = status(&v);
        assert!(
            t.contains("bulletin 10.77.0.254:7400 unreachable")
                && t.contains("last error: timed out"),
            "{t}"
        );
        assert!(t.contains("LAN lan1") && t.contains("drops: none"), "{t}");
        assert!(
            t.contains("h2") && t.contains("1.5s") && t.contains("auth_failure=3"),
            "{t}"
        );
        assert_eq!(micros(&json!(1234)), "1.23ms");
        assert_eq!(micros(&json!(56)), "56µs");
        assert_eq!(micros(&Value::Null), "-");
    }

    #[test]
    fn peer_columns_show_rtt_loss_and_rates() {
        let v = json!({"host": {}, "drops": {}, "lans": [{"name": "lan1", "drops": {},
            "vm_table": {"vms": 4, "vm_evictions_total": 0, "pairs": 2},
            "flow_table": {"flows": 3, "tcp_active": 1, "tcp_syn_total": 2, "tcp_fin_total": 1,
                           "tcp_rst_total": 0, "flows_evicted_total": 0},
            "peers": [{"name": "h2", "address": "10.77.1.2:7401", "state": "up", "health": "ok",
                       "rtt_p50_us": 20400, "rtt_p99_us": 25100, "jitter_us": 80,
                       "loss_tx_ratio": 0.05, "loss_rx_ratio": 0.0, "tx_rate_bps": 512000000,
                       "rx_rate_bps": 1200, "tx_bytes": 1234567, "drops": {}}]}]});
        let t = status(&v);
        for want in [
            "up (ok)",
            "20.40ms",
            "25.10ms",
            "80µs",
            "5.00%/0.00%",
            "512.0M",
            "1.2k",
            "1.2MB",
            "TCP open 1",
        ] {
            assert!(t.contains(want), "{want} missing in\n{t}");
        }
    }

    #[test]
    fn traffic_views_and_ping_lines() {
        let v = json!([{"lan": "lan1", "vm_table": {"vms": 2}, "flow_table": {"flows": 1, "tcp_active": 1},
            "vms": [{"mac": "02:00:00:00:00:01", "ip": "10.0.0.1", "location": "local", "tx_packets": 10,
                     "tx_bytes": 15000, "rx_packets": 5, "rx_bytes": 300, "idle_s": 0,
                     "rates": {"tx_rate_bps": 8000000, "rx_rate_bps": 0}}],
            "pairs": [{"src_mac": "02:00:00:00:00:01", "src_ip": "10.0.0.1", "dst_mac": "02:00:00:00:00:02",
                       "dst_ip": null, "packets": 10, "bytes": 15000, "at_source": true}],
            "flows": [{"proto": "tcp", "src": "10.0.0.1", "src_port": 40000, "dst": "10.0.0.2",
                       "dst_port": 5201, "tx_packets": 10, "tx_bytes": 15000, "rx_packets": 5,
                       "rx_bytes": 300, "age_s": 3, "idle_s": 0, "tcp_state": "established"}]}]);
        let t = vms(&v);
        assert!(
            t.contains("10.0.0.1")
                && t.contains("8.0M")
                && t.contains("02:00:00:00:00:02")
                && t.contains(" *"),
            "{t}"
        );
        let t = flows(&v);
        assert!(
            t.contains("10.0.0.1:40000")
                && t.contains("10.0.0.2:5201")
                && t.contains("established"),
            "{t}"
        );
        let st = json!({"host": {"name": "h1"}, "lans": [{"name": "lan1", "peers": [{"name": "h2", "state": "up", "health": "ok", "tx_rate_bps": 5}]}]});
        let t = top(&st, &v, 5);
        assert!(
            t.contains("h2") && t.contains("10.0.0.1:40000") && t.contains("8.0Mb/s"),
            "{t}"
        );
        let p = json!({"lan": "lan1", "peer": "h2", "address": "10.77.2.1:7401", "via_vm": null, "rtt_us": 412.5});
        assert_eq!(
            pong(&p, 1),
            "pong from h2 at 10.77.2.1:7401 on lan1: seq=1 time=0.412 ms"
        );
        let p = json!({"lan": "lan1", "peer": "h2", "address": "a", "via_vm": "02:00:00:00:00:02", "rtt_us": null});
        assert!(pong(&p, 2).contains("no answer from h2 (VM 02:00:00:00:00:02)"));
    }

    #[test]
    fn macs_table_lists_rows() {
        let v = json!([{"lan": "lan1", "mac": "02:00:00:00:00:01", "location": "local", "peer_name": null, "age_ms": 2500}]);
        let t = macs(&v);
        assert!(
            t.contains("02:00:00:00:00:01") && t.contains("local") && t.contains("2s"),
            "{t}"
        );
    }
}
