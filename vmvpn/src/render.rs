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
        "host {} (id {:#010x})  listening {}  up {}s  vmvpn {}",
        s(&h["name"]),
        n(&h["id"]),
        s(&h["listen"]),
        n(&h["uptime_s"]),
        s(&h["version"])
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
            "  {:<12} {:<10} {:<22} {:<8} {:<16} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>8}  DROPS",
            "PEER",
            "ID",
            "ADDRESS",
            "SOURCE",
            "STATE",
            "LAST HEARD",
            "TX PKTS",
            "TX BYTES",
            "RX PKTS",
            "RX BYTES",
            "RX LOSS",
            "RTT p50",
            "JITTER"
        );
        for p in l["peers"].as_array().into_iter().flatten() {
            let name = s(&p["name"]);
            let id = p["id"]
                .as_u64()
                .map_or("-".to_string(), |i| format!("{i:#010x}"));
            let _ = writeln!(
                o,
                "  {:<12} {:<10} {:<22} {:<8} {:<16} {:>10} {:>9} {:>9} {:>9} {:>9} {:>6.2}% {:>9} {:>8}  {}",
                if name.is_empty() { "?".into() } else { name },
                id,
                s(&p["address"]),
                s(&p["source"]),
                match p["health"].as_str() {
                    Some(h) if p["state"] == "up" => format!("up ({h})"),
                    _ => s(&p["state"]),
                },
                ago(&p["last_heard_ago_ms"]),
                human(n(&p["tx_packets"])),
                human(n(&p["tx_bytes"])),
                human(n(&p["rx_packets"])),
                human(n(&p["rx_bytes"])),
                p["loss_rx_ratio"].as_f64().unwrap_or(0.0) * 100.0,
                micros(&p["rtt_p50_us"]),
                micros(&p["jitter_us"]),
                drops(&p["drops"])
            );
        }
    }
    o
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
            t.contains("h2")
                && t.contains("1.5s")
                && t.contains("1.2M")
                && t.contains("auth_failure=3"),
            "{t}"
        );
        assert_eq!(micros(&json!(1234)), "1.23ms");
        assert_eq!(micros(&json!(56)), "56µs");
        assert_eq!(micros(&Value::Null), "-");
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
