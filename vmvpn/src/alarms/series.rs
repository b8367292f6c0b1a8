//! The series rules look at, from one status snapshot: the names and labels of `/metrics`
//! (so a rule reads like a Prometheus rule over them), plus `vmvpn_peer_down`, which is 1
//! while a peer that answered before has gone silent (health "down").

use crate::status::{Health, LanTraffic, PeerState, Status};
use telemetry::VmLocation;
use telemetry::vms::fmt_mac;

/// One value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub metric: &'static str,
    /// Labels, sorted by name.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

/// Every metric name a rule may use, with what it is.
pub const METRICS: [(&str, &str); 16] = [
    ("vmvpn_peer_up", "1 while the tunnel is up"),
    (
        "vmvpn_peer_down",
        "1 while a peer that answered before is silent (health down)",
    ),
    (
        "vmvpn_peer_rx_loss_ratio",
        "lost over expected, peer to this host",
    ),
    (
        "vmvpn_peer_tx_loss_ratio",
        "lost over expected, this host to the peer",
    ),
    (
        "vmvpn_peer_rtt_p50_seconds",
        "median RTT of the last 64 probes",
    ),
    (
        "vmvpn_peer_rtt_p99_seconds",
        "99th percentile RTT of the last 64 probes",
    ),
    ("vmvpn_peer_jitter_seconds", "RTT jitter"),
    (
        "vmvpn_peer_tx_rate_bytes_per_second",
        "send rate, last second",
    ),
    (
        "vmvpn_peer_rx_rate_bytes_per_second",
        "receive rate, last second",
    ),
    (
        "vmvpn_peer_tx_utilisation_ratio",
        "send rate over the link speed",
    ),
    (
        "vmvpn_peer_rx_utilisation_ratio",
        "receive rate over the link speed",
    ),
    (
        "vmvpn_lan_drops_total",
        "drops on a LAN, by reason (use rate())",
    ),
    (
        "vmvpn_lan_mac_moves_total",
        "MACs that moved to another host (use rate())",
    ),
    (
        "vmvpn_lan_tcp_syn_total",
        "TCP connection attempts between VMs (use rate())",
    ),
    (
        "vmvpn_vm_port_tx_rate_bytes_per_second",
        "send rate of a local VM port",
    ),
    (
        "vmvpn_vm_port_rx_rate_bytes_per_second",
        "receive rate of a local VM port",
    ),
];

/// Whether a rule may name this metric.
pub fn known(metric: &str) -> bool {
    METRICS.iter().any(|(m, _)| *m == metric)
}

/// Every sample of a snapshot.
pub fn samples(st: &Status, traffic: &[LanTraffic]) -> Vec<Sample> {
    let mut out = Vec::new();
    for l in &st.lans {
        let lan = || ("lan", l.name.clone());
        for p in &l.peers {
            let labels = vec![lan(), ("name", p.name.clone()), ("peer", p.address.clone())];
            let mut put = |metric: &'static str, value: f64| {
                out.push(Sample {
                    metric,
                    labels: labels.clone(),
                    value,
                })
            };
            put(
                "vmvpn_peer_up",
                f64::from(u8::from(p.state == PeerState::Up)),
            );
            put(
                "vmvpn_peer_down",
                f64::from(u8::from(p.health == Health::Down)),
            );
            put("vmvpn_peer_rx_loss_ratio", p.loss_rx_ratio);
            put("vmvpn_peer_tx_loss_ratio", p.loss_tx_ratio);
            // RTT only once measured: an absent sample beats a false zero.
            for (metric, us) in [
                ("vmvpn_peer_rtt_p50_seconds", p.rtt.rtt_p50_us),
                ("vmvpn_peer_rtt_p99_seconds", p.rtt.rtt_p99_us),
                ("vmvpn_peer_jitter_seconds", p.rtt.jitter_us),
            ] {
                if let Some(us) = us {
                    put(metric, us as f64 / 1e6);
                }
            }
            put(
                "vmvpn_peer_tx_rate_bytes_per_second",
                p.rates.tx_rate_bps as f64 / 8.0,
            );
            put(
                "vmvpn_peer_rx_rate_bytes_per_second",
                p.rates.rx_rate_bps as f64 / 8.0,
            );
            if let Some(r) = p.tx_utilisation_ratio {
                put("vmvpn_peer_tx_utilisation_ratio", r);
            }
            if let Some(r) = p.rx_utilisation_ratio {
                put("vmvpn_peer_rx_utilisation_ratio", r);
            }
        }
        for (reason, n) in l.drops.nonzero() {
            out.push(Sample {
                metric: "vmvpn_lan_drops_total",
                labels: vec![lan(), ("reason", reason.name().to_string())],
                value: n as f64,
            });
        }
        out.push(Sample {
            metric: "vmvpn_lan_mac_moves_total",
            labels: vec![lan()],
            value: l.mac_stats.moves as f64,
        });
        out.push(Sample {
            metric: "vmvpn_lan_tcp_syn_total",
            labels: vec![lan()],
            value: l.flow_table.tcp_syn_total as f64,
        });
    }
    for t in traffic {
        for vm in t.vms.iter().filter(|v| v.location == VmLocation::Local) {
            let Some(r) = vm.rates else { continue };
            let labels = vec![("lan", t.lan.clone()), ("mac", fmt_mac(&vm.mac))];
            out.push(Sample {
                metric: "vmvpn_vm_port_tx_rate_bytes_per_second",
                labels: labels.clone(),
                value: r.tx_rate_bps as f64 / 8.0,
            });
            out.push(Sample {
                metric: "vmvpn_vm_port_rx_rate_bytes_per_second",
                labels,
                value: r.rx_rate_bps as f64 / 8.0,
            });
        }
    }
    out
}
