//! The series rules look at, from one status snapshot: the names and labels of `/metrics`
//! (so a rule reads like a Prometheus rule over them), plus `vmvpn_peer_down`, which is 1
//! while a peer that answered before has gone silent (health "down"), and
//! `vmvpn_peer_rx_loss_ratio_10s`, the loss from a peer over the last 10 s ([`Windows`]):
//! the status' own ratio counts since the tunnel came up, so it would keep an alert firing
//! long after a fault ended.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::engine::figures::{FigureNeeds, Figures};
use telemetry::VmLocation;

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
pub const METRICS: [(&str, &str); 22] = [
    ("vmvpn_peer_up", "1 while the tunnel is up"),
    (
        "vmvpn_peer_rx_loss_ratio_10s",
        "lost over expected, peer to this host, over the last 10 s",
    ),
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
        "vmvpn_peer_srtt_seconds",
        "smoothed RTT (RFC 6298): follows a change within a few probes",
    ),
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
        "vmvpn_service_backends_up",
        "backends of a service that take new flows (up, and located)",
    ),
    ("vmvpn_service_backends", "backends a service has"),
    (
        "vmvpn_vm_port_tx_rate_bytes_per_second",
        "send rate of a local VM port",
    ),
    (
        "vmvpn_vm_port_rx_rate_bytes_per_second",
        "receive rate of a local VM port",
    ),
    (
        "vmvpn_vm_tcp_syn_total",
        "TCP connections a local VM opened (use rate() for its new-connection rate)",
    ),
    (
        "vmvpn_vm_tx_drops_total",
        "frames of a local VM the overlay could not carry (use rate())",
    ),
];

/// Whether a rule may name this metric.
pub fn known(metric: &str) -> bool {
    METRICS.iter().any(|(m, _)| *m == metric)
}

/// How far back the windowed loss looks.
pub const LOSS_WINDOW: Duration = Duration::from_secs(10);

/// When, received, lost.
type Counts = (Instant, u64, u64);

/// Recent sequence counters of each peer, for the windowed loss.
#[derive(Debug, Default)]
pub struct Windows {
    /// (LAN, peer address) → (when, received, lost), oldest first.
    peers: HashMap<(String, String), VecDeque<Counts>>,
}

impl Windows {
    /// Loss over the last [`LOSS_WINDOW`] given the counters now (0 without traffic).
    fn loss(&mut self, lan: &str, peer: &str, received: u64, lost: u64, now: Instant) -> f64 {
        let w = self.peers.entry((lan.into(), peer.into())).or_default();
        // Counters that went back: the peer restarted and numbers from 0 again.
        if w.back().is_some_and(|(_, r, l)| received < *r || lost < *l) {
            w.clear();
        }
        w.push_back((now, received, lost));
        // Keep one entry at least a window old, as the base.
        while w.len() > 2
            && w.get(1)
                .is_some_and(|(t, _, _)| now.saturating_duration_since(*t) >= LOSS_WINDOW)
        {
            w.pop_front();
        }
        let Some(&(_, r0, l0)) = w.front() else {
            return 0.0;
        };
        let (dr, dl) = (received - r0, lost - l0);
        if dr + dl == 0 {
            0.0
        } else {
            dl as f64 / (dr + dl) as f64
        }
    }

    /// Forget peers not in this snapshot.
    fn retain(&mut self, seen: &[(String, String)]) {
        self.peers.retain(|k, _| seen.contains(k));
    }
}

/// What the figures must hold for `rules` (the data plane builds only that).
pub fn needs(rules: &[super::rules::Rule]) -> FigureNeeds {
    let mut n = FigureNeeds::default();
    for r in rules {
        let mut see = |m: &str| {
            n.peers |= m.starts_with("vmvpn_peer_");
            n.vms |= m.starts_with("vmvpn_vm_");
        };
        see(r.expr.lhs.metric());
        if let super::expr::Rhs::Baseline(_, m, _) = &r.expr.rhs {
            see(m);
        }
        if let Some(c) = &r.clear {
            see(c.lhs.metric());
        }
    }
    n
}

/// Every sample of the figures taken at `now`.
pub fn samples(f: &Figures, windows: &mut Windows, now: Instant) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for p in &f.peers {
        let lan = f.lans.get(p.lan.index()).map_or("", |l| l.name.as_str());
        let address = p.addr.to_string();
        let labels = vec![
            ("lan", lan.to_string()),
            ("name", p.name.as_str().to_string()),
            ("peer", address.clone()),
        ];
        let mut put = |metric: &'static str, value: f64| {
            out.push(Sample {
                metric,
                labels: labels.clone(),
                value,
            })
        };
        put("vmvpn_peer_up", f64::from(u8::from(p.up)));
        put("vmvpn_peer_down", f64::from(u8::from(p.down)));
        put("vmvpn_peer_rx_loss_ratio", p.loss_rx_ratio);
        let w = windows.loss(lan, &address, p.received, p.lost, now);
        put("vmvpn_peer_rx_loss_ratio_10s", w);
        put("vmvpn_peer_tx_loss_ratio", p.loss_tx_ratio);
        // RTT only once measured: an absent sample beats a false zero.
        for (metric, us) in [
            ("vmvpn_peer_rtt_p50_seconds", p.rtt.rtt_p50_us),
            ("vmvpn_peer_rtt_p99_seconds", p.rtt.rtt_p99_us),
            ("vmvpn_peer_jitter_seconds", p.rtt.jitter_us),
            ("vmvpn_peer_srtt_seconds", p.rtt.srtt_us),
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
        seen.push((lan.to_string(), address));
    }
    for l in &f.lans {
        let lan = || ("lan", l.name.clone());
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
            value: l.mac_moves as f64,
        });
        out.push(Sample {
            metric: "vmvpn_lan_tcp_syn_total",
            labels: vec![lan()],
            value: l.tcp_syn_total as f64,
        });
        for (name, up, all) in &l.services {
            let labels = vec![lan(), ("service", name.clone())];
            out.push(Sample {
                metric: "vmvpn_service_backends_up",
                labels: labels.clone(),
                value: f64::from(*up),
            });
            out.push(Sample {
                metric: "vmvpn_service_backends",
                labels,
                value: f64::from(*all),
            });
        }
    }
    windows.retain(&seen);
    for t in &f.traffic {
        for vm in t.vms.iter().filter(|v| v.location == VmLocation::Local) {
            let labels = vec![("lan", t.lan.clone()), ("mac", common::text::mac(&vm.mac))];
            out.push(Sample {
                metric: "vmvpn_vm_tcp_syn_total",
                labels: labels.clone(),
                value: vm.tcp_syn_total as f64,
            });
            out.push(Sample {
                metric: "vmvpn_vm_tx_drops_total",
                labels: labels.clone(),
                value: vm.tx_drops_total as f64,
            });
            let Some(r) = vm.rates else { continue };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_loss_forgets_a_fault_that_ended_and_survives_a_restart() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        // 100 packets a second; 5 lost a second from 10 s to 20 s.
        let (mut r, mut l) = (0u64, 0u64);
        let mut seen = Vec::new();
        for t in 0..40u32 {
            if (10..20).contains(&t) {
                r += 95;
                l += 5;
            } else {
                r += 100;
            }
            seen.push((t, w.loss("lan1", "p", r, l, t0 + s * t)));
        }
        let at = |t: u32| seen[t as usize].1;
        assert_eq!(at(9), 0.0);
        assert!((at(19) - 0.05).abs() < 0.006, "{}", at(19));
        assert_eq!(at(31), 0.0, "10 s after the fault the window is clean");
        // The peer restarts: its counters start from 0 again.
        assert_eq!(w.loss("lan1", "p", 50, 0, t0 + s * 41), 0.0);
        assert_eq!(w.loss("lan1", "p", 140, 10, t0 + s * 42), 10.0 / 100.0);
        w.retain(&[]);
        assert!(w.peers.is_empty());
    }

    #[test]
    fn every_name_a_rule_may_use_is_produced_and_nothing_else() {
        use crate::engine::LanId;
        use crate::engine::figures::{LanFigures, PeerFigures, ShortName};
        let rtt = telemetry::rtt::RttSummary {
            rtt_p50_us: Some(1),
            rtt_p99_us: Some(2),
            jitter_us: Some(1),
            srtt_us: Some(1),
            ..Default::default()
        };
        let peer = PeerFigures {
            lan: LanId(0),
            addr: "10.0.0.2:7401".parse().expect("addr"),
            name: ShortName::new("h2"),
            up: true,
            down: false,
            received: 1,
            lost: 0,
            loss_rx_ratio: 0.0,
            loss_tx_ratio: 0.0,
            rtt,
            rates: telemetry::Rates::default(),
            tx_utilisation_ratio: Some(0.1),
            rx_utilisation_ratio: Some(0.1),
        };
        let mut lan = LanFigures {
            name: "lan1".into(),
            services: vec![("web".into(), 1, 2)],
            ..LanFigures::default()
        };
        lan.drops.bump(telemetry::DropReason::Replay);
        let vm = telemetry::VmRow {
            location: VmLocation::Local,
            rates: Some(telemetry::Rates::default()),
            ..telemetry::VmRow::default()
        };
        let f = Figures {
            lans: vec![lan],
            peers: vec![peer],
            traffic: vec![crate::status::LanTraffic {
                lan: "lan1".into(),
                vms: vec![vm],
                ..Default::default()
            }],
        };
        let got: std::collections::BTreeSet<&str> =
            samples(&f, &mut Windows::default(), Instant::now())
                .iter()
                .map(|s| s.metric)
                .collect();
        let known: std::collections::BTreeSet<&str> = METRICS.iter().map(|(m, _)| *m).collect();
        assert_eq!(got, known);
    }

    #[test]
    fn the_default_rules_need_no_vm_table() {
        let n = needs(&super::super::rules::defaults());
        assert!(n.peers && !n.vms, "{n:?}");
    }
}
