//! Prometheus text exposition (format 0.0.4) of a status snapshot, and its route on the
//! HTTP server of `[host] metrics` (`bulletin::http`).
//!
//! Written directly rather than through prometheus-client: that crate emits OpenMetrics
//! (`# TYPE x counter` with `x_total` samples), which `promtool check metrics`, the check
//! CI runs, does not accept as 0.0.4 text. Labels are bounded: LAN names, peer addresses
//! (one per peer) and drop reasons (a fixed set). Units are in the names.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::alerting::SharedAlerts;
use crate::io::dataplane::{Handle, Request};
use crate::status::{AlertState, MetricsExtra, PeerState, Status};
use telemetry::rtt::BUCKETS_US;
use telemetry::{DropCounters, DropReason};

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every family of the exposition, in the order written: its name, type and help. The
/// index is a [`F`].
const FAMILIES: [(&str, &str, &str); F::COUNT] = [
    ("vmvpn_up", "gauge", "1 while the daemon answers."),
    (
        "vmvpn_host_drops_total",
        "counter",
        "Datagrams dropped before a LAN was known, by reason.",
    ),
    (
        "vmvpn_lan_drops_total",
        "counter",
        "Frames and datagrams dropped on a LAN, by reason.",
    ),
    ("vmvpn_lan_macs", "gauge", "MACs in the LAN's database."),
    (
        "vmvpn_rx_queue_sojourn_seconds",
        "gauge",
        "How long the last datagrams read had waited in the data socket's receive queue.",
    ),
    (
        "vmvpn_aqm_drops_total",
        "counter",
        "Bulk frames CoDel dropped to keep the receive queue short.",
    ),
    (
        "vmvpn_limit_rate_bits_per_second",
        "gauge",
        "A rate limit's rate (vm=\"all\": the LAN's limit on this host).",
    ),
    (
        "vmvpn_limit_passed_bytes_total",
        "counter",
        "Bytes a rate limit let through, by direction (in: to the VM).",
    ),
    (
        "vmvpn_limit_dropped_bytes_total",
        "counter",
        "Bytes a rate limit dropped, by direction.",
    ),
    (
        "vmvpn_limit_dropped_frames_total",
        "counter",
        "Frames a rate limit dropped, by direction.",
    ),
    (
        "vmvpn_aqm_marks_total",
        "counter",
        "Bulk frames CoDel marked CE instead of dropping (ECN-capable flows).",
    ),
    (
        "vmvpn_service_connections_total",
        "counter",
        "TCP connections this host's VMs opened to a service, by backend.",
    ),
    (
        "vmvpn_service_no_backend_frames_total",
        "counter",
        "Frames to a service that found no backend (dropped).",
    ),
    (
        "vmvpn_service_backends_up",
        "gauge",
        "Backends of a service up now, as this host sees them (0: the service answers nothing).",
    ),
    (
        "vmvpn_service_backend_up",
        "gauge",
        "1 if a backend takes new flows (its host's probes answered, its host up), else 0.",
    ),
    (
        "vmvpn_service_backend_flows_total",
        "counter",
        "New flows this host gave a backend.",
    ),
    (
        "vmvpn_service_backend_load_mbps",
        "gauge",
        "A backend's traffic both ways in Mbit/s, as its host measured and reported it.",
    ),
    (
        "vmvpn_service_backend_open_connections",
        "gauge",
        "TCP connections open with a backend, as its host's flow table holds them.",
    ),
    (
        "vmvpn_lan_flood_frames_total",
        "counter",
        "Frames flooded from this host's TAP.",
    ),
    (
        "vmvpn_peer_up",
        "gauge",
        "1 when the tunnel to the peer is up.",
    ),
    (
        "vmvpn_peer_tx_packets_total",
        "counter",
        "Frames sent to the peer.",
    ),
    (
        "vmvpn_peer_tx_bytes_total",
        "counter",
        "Ethernet frame bytes sent to the peer.",
    ),
    (
        "vmvpn_peer_rx_packets_total",
        "counter",
        "Frames received from the peer.",
    ),
    (
        "vmvpn_peer_rx_bytes_total",
        "counter",
        "Ethernet frame bytes received from the peer.",
    ),
    (
        "vmvpn_peer_rx_lost_packets_total",
        "counter",
        "Sequence numbers from the peer never received.",
    ),
    (
        "vmvpn_peer_rx_reordered_packets_total",
        "counter",
        "Datagrams from the peer that arrived out of order.",
    ),
    (
        "vmvpn_peer_rx_duplicate_packets_total",
        "counter",
        "Authenticated duplicates from the peer dropped by the replay window.",
    ),
    (
        "vmvpn_peer_path_mtu_bytes",
        "gauge",
        "Path MTU to the peer found by the overlay's own probes (IP packet bytes).",
    ),
    (
        "vmvpn_peer_unauthenticated_drops_total",
        "counter",
        "Datagrams claiming to be the peer's, dropped before they authenticated (spoofable).",
    ),
    (
        "vmvpn_peer_rx_loss_ratio",
        "gauge",
        "Lost over expected, peer to this host.",
    ),
    (
        "vmvpn_peer_tx_loss_ratio",
        "gauge",
        "Lost over expected, this host to the peer, as the peer counted.",
    ),
    (
        "vmvpn_peer_rtt_p50_seconds",
        "gauge",
        "Median RTT of the last 64 probes.",
    ),
    (
        "vmvpn_peer_rtt_p99_seconds",
        "gauge",
        "99th percentile RTT of the last 64 probes.",
    ),
    (
        "vmvpn_peer_srtt_seconds",
        "gauge",
        "Smoothed RTT (RFC 6298).",
    ),
    (
        "vmvpn_peer_jitter_seconds",
        "gauge",
        "RTT jitter (RFC 3550 estimator).",
    ),
    (
        "vmvpn_peer_tx_rate_bytes_per_second",
        "gauge",
        "Send rate over the last complete second.",
    ),
    (
        "vmvpn_peer_rx_rate_bytes_per_second",
        "gauge",
        "Receive rate over the last complete second.",
    ),
    (
        "vmvpn_peer_probes_sent_total",
        "counter",
        "Probes sent to the peer.",
    ),
    (
        "vmvpn_peer_probes_answered_total",
        "counter",
        "Probes the peer answered.",
    ),
    (
        "vmvpn_peer_tx_utilisation_ratio",
        "gauge",
        "Send rate over the configured link speed ([telemetry] link_speed_mbps).",
    ),
    (
        "vmvpn_peer_rx_utilisation_ratio",
        "gauge",
        "Receive rate over the configured link speed.",
    ),
    ("vmvpn_lan_vms", "gauge", "VMs in the LAN's traffic table."),
    (
        "vmvpn_lan_vm_evictions_total",
        "counter",
        "VMs evicted from the full traffic table.",
    ),
    ("vmvpn_lan_flows", "gauge", "Flows in the LAN's flow table."),
    (
        "vmvpn_lan_flow_evictions_total",
        "counter",
        "Flows evicted from the full flow table.",
    ),
    (
        "vmvpn_lan_tcp_connections",
        "gauge",
        "TCP connections between VMs open now (SYN seen or picked up, no FIN/RST).",
    ),
    (
        "vmvpn_lan_tcp_syn_total",
        "counter",
        "TCP connection attempts (SYN without ACK) between VMs.",
    ),
    ("vmvpn_lan_tcp_fin_total", "counter", "TCP FIN segments."),
    ("vmvpn_lan_tcp_rst_total", "counter", "TCP RST segments."),
    (
        "vmvpn_vm_port_tx_bytes_total",
        "counter",
        "Bytes sent by a local VM port (frames read from the TAP).",
    ),
    (
        "vmvpn_vm_port_rx_bytes_total",
        "counter",
        "Unicast bytes to a local VM port.",
    ),
    (
        "vmvpn_vm_port_tx_rate_bytes_per_second",
        "gauge",
        "Send rate of a local VM port over the last complete second.",
    ),
    (
        "vmvpn_vm_port_rx_rate_bytes_per_second",
        "gauge",
        "Receive rate of a local VM port over the last complete second.",
    ),
];

/// A family's place in [`FAMILIES`].
#[derive(Clone, Copy)]
enum F {
    Up,
    HostDrops,
    LanDrops,
    Macs,
    Sojourn,
    AqmDrops,
    LimRate,
    LimPassBytes,
    LimDropBytes,
    LimDropFrames,
    AqmMarks,
    SvcConns,
    SvcNoBackend,
    SvcUp,
    SvcBackendUp,
    SvcFlows,
    SvcLoad,
    SvcOpen,
    Flood,
    PeerUp,
    TxPk,
    TxB,
    RxPk,
    RxB,
    Lost,
    Reord,
    Dup,
    Pmtu,
    Unauth,
    LossRx,
    LossTx,
    Rtt50,
    Rtt99,
    Srtt,
    Jitter,
    TxRate,
    RxRate,
    Probes,
    Answered,
    TxUtil,
    RxUtil,
    Vms,
    VmEv,
    Flows,
    FlowEv,
    TcpOpen,
    TcpSyn,
    TcpFin,
    TcpRst,
    PortTx,
    PortRx,
    PortTxRate,
    PortRxRate,
}

impl F {
    const COUNT: usize = 53;
}

/// Render a status snapshot as Prometheus text.
pub fn render(status: &Status, extra: &MetricsExtra) -> String {
    // The samples of each family, labels first.
    let mut fam: [Vec<(String, f64)>; F::COUNT] = std::array::from_fn(|_| Vec::new());
    // Reasons by name: the order the exposition has always had.
    let by_name = |c: &DropCounters| {
        let mut v: Vec<(&'static str, u64)> = DropReason::ALL
            .iter()
            .map(|r| (r.name(), c.get(*r)))
            .collect();
        v.sort_unstable();
        v
    };
    fam[F::Up as usize].push((String::new(), 1.0));
    let q = &status.queue;
    fam[F::Sojourn as usize].push((String::new(), q.rx_sojourn_ms / 1e3));
    fam[F::AqmDrops as usize].push((String::new(), q.aqm_drops_total as f64));
    fam[F::AqmMarks as usize].push((String::new(), q.aqm_marks_total as f64));
    for (reason, c) in by_name(&status.drops) {
        fam[F::HostDrops as usize].push((format!("reason=\"{}\"", esc(reason)), c as f64));
    }
    for l in &status.lans {
        let lan = format!("lan=\"{}\"", esc(&l.name));
        for (reason, c) in by_name(&l.drops) {
            fam[F::LanDrops as usize].push((format!("{lan},reason=\"{}\"", esc(reason)), c as f64));
        }
        fam[F::Macs as usize].push((lan.clone(), l.macs as f64));
        for lim in &l.limits {
            let vm = lim.mac.as_deref().unwrap_or("all");
            fam[F::LimRate as usize].push((format!("{lan},vm=\"{vm}\""), lim.rate_bps as f64));
            for (dir, c) in [("in", lim.rx), ("out", lim.tx)] {
                let Some(c) = c else { continue };
                let labels = format!("{lan},vm=\"{vm}\",direction=\"{dir}\"");
                for (f, v) in [
                    (F::LimPassBytes, c.passed_bytes_total),
                    (F::LimDropBytes, c.dropped_bytes_total),
                    (F::LimDropFrames, c.dropped_frames_total),
                ] {
                    fam[f as usize].push((labels.clone(), v as f64));
                }
            }
        }
        for sv in &l.services {
            let svc = format!("{lan},service=\"{}\"", esc(&sv.name));
            fam[F::SvcNoBackend as usize].push((svc.clone(), sv.no_backend_frames_total as f64));
            fam[F::SvcUp as usize].push((svc.clone(), sv.backends_up as f64));
            for b in &sv.backends {
                let labels = format!("{svc},backend=\"{}\"", esc(&b.backend));
                for (f, v) in [
                    (F::SvcConns, b.connections_total as f64),
                    (F::SvcBackendUp, f64::from(u8::from(b.state == "up"))),
                    (F::SvcFlows, b.flows_total as f64),
                    (F::SvcLoad, b.load_mbps),
                    (F::SvcOpen, f64::from(b.open_connections)),
                ] {
                    fam[f as usize].push((labels.clone(), v));
                }
            }
        }
        let (vt, ft) = (&l.vm_table, &l.flow_table);
        for (i, x) in [
            (F::Vms, vt.vms as f64),
            (F::VmEv, vt.vm_evictions_total as f64),
            (F::Flows, ft.flows as f64),
            (F::FlowEv, ft.flows_evicted_total as f64),
            (F::TcpOpen, ft.tcp_active as f64),
            (F::TcpSyn, ft.tcp_syn_total as f64),
            (F::TcpFin, ft.tcp_fin_total as f64),
            (F::TcpRst, ft.tcp_rst_total as f64),
        ] {
            fam[i as usize].push((lan.clone(), x));
        }
        fam[F::Flood as usize].push((lan.clone(), l.flood_tx_frames as f64));
        for p in &l.peers {
            let labels = format!("{lan},peer=\"{}\"", esc(&p.address));
            let mut put = |f: F, x: f64| fam[f as usize].push((labels.clone(), x));
            put(F::PeerUp, if p.state == PeerState::Up { 1.0 } else { 0.0 });
            put(F::TxPk, p.traffic.tx_packets as f64);
            put(F::TxB, p.traffic.tx_bytes as f64);
            put(F::RxPk, p.traffic.rx_packets as f64);
            put(F::RxB, p.traffic.rx_bytes as f64);
            put(F::Lost, p.sequence.lost as f64);
            put(F::Reord, p.sequence.reordered as f64);
            put(F::Dup, p.sequence.duplicates as f64);
            put(F::Unauth, p.unauthenticated_drops_total as f64);
            put(F::Pmtu, f64::from(p.path_mtu_bytes));
            put(F::LossRx, p.loss_rx_ratio);
            put(F::LossTx, p.loss_tx_ratio);
            // Prometheus' base unit is bytes (promtool insists).
            put(F::TxRate, p.rates.tx_rate_bps as f64 / 8.0);
            put(F::RxRate, p.rates.rx_rate_bps as f64 / 8.0);
            if let (Some(t), Some(r)) = (p.tx_utilisation_ratio, p.rx_utilisation_ratio) {
                put(F::TxUtil, t);
                put(F::RxUtil, r);
            }
            put(F::Probes, p.probes_sent_total as f64);
            put(F::Answered, p.probes_answered_total as f64);
            // RTT figures only once measured: an absent series beats a false zero.
            for (i, us) in [
                (F::Rtt50, p.rtt.rtt_p50_us),
                (F::Rtt99, p.rtt.rtt_p99_us),
                (F::Srtt, p.rtt.srtt_us),
                (F::Jitter, p.rtt.jitter_us),
            ] {
                if let Some(us) = us {
                    put(i, us as f64 / 1e6);
                }
            }
        }
    }
    for t in &extra.traffic {
        let lan = format!("lan=\"{}\"", esc(&t.lan));
        for vm in t
            .vms
            .iter()
            .filter(|v| v.location == telemetry::VmLocation::Local)
        {
            let labels = format!("{lan},mac=\"{}\"", common::text::mac(&vm.mac));
            fam[F::PortTx as usize].push((labels.clone(), vm.tx_bytes as f64));
            fam[F::PortRx as usize].push((labels.clone(), vm.rx_bytes as f64));
            if let Some(r) = vm.rates {
                fam[F::PortTxRate as usize].push((labels.clone(), r.tx_rate_bps as f64 / 8.0));
                fam[F::PortRxRate as usize].push((labels, r.rx_rate_bps as f64 / 8.0));
            }
        }
    }
    let mut out = String::new();
    for ((name, kind, help), samples) in FAMILIES.iter().zip(&fam) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    }
    let h = "vmvpn_peer_rtt_seconds";
    let _ = writeln!(
        out,
        "# HELP {h} RTT of probes inside the tunnel, since start."
    );
    let _ = writeln!(out, "# TYPE {h} histogram");
    for (lan, peer, b) in &extra.rtt {
        let labels = format!("lan=\"{}\",peer=\"{}\"", esc(lan), esc(peer));
        for (bound, c) in BUCKETS_US.iter().zip(b.le) {
            let _ = writeln!(
                out,
                "{h}_bucket{{{labels},le=\"{}\"}} {c}",
                *bound as f64 / 1e6
            );
        }
        let _ = writeln!(out, "{h}_bucket{{{labels},le=\"+Inf\"}} {}", b.count);
        let _ = writeln!(out, "{h}_sum{{{labels}}} {}", b.sum_ns as f64 / 1e9);
        let _ = writeln!(out, "{h}_count{{{labels}}} {}", b.count);
    }
    // Like Prometheus' own ALERTS: one sample per pending or firing alert.
    let _ = writeln!(
        out,
        "# HELP vmvpn_alerts Pending and firing alerts of this host's alarm rules."
    );
    let _ = writeln!(out, "# TYPE vmvpn_alerts gauge");
    for a in &extra.alerts {
        let mut labels = vec![format!("alertstate=\"{}\"", a.state)];
        labels.extend(a.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))));
        let _ = writeln!(out, "vmvpn_alerts{{{}}} 1", labels.join(","));
    }
    exports(&mut out, &status.export);
    out
}

/// The exporters' counts (families only for what is configured).
fn exports(out: &mut String, e: &crate::status::ExportStatus) {
    let mut fam = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    };
    let (sf, ix, rd) = (e.sflow.as_ref(), e.ipfix.as_ref(), e.redis.as_ref());
    let mut dgrams = Vec::new();
    let mut errors = Vec::new();
    let mut dropped = Vec::new();
    if let Some(x) = sf {
        dgrams.push(("exporter=\"sflow\"", x.datagrams_total));
        errors.push(("exporter=\"sflow\"", x.send_errors_total));
        dropped.push(("exporter=\"sflow\"", x.dropped_samples_total));
    }
    if let Some(x) = ix {
        dgrams.push(("exporter=\"ipfix\"", x.messages_total));
        errors.push(("exporter=\"ipfix\"", x.send_errors_total));
        dropped.push(("exporter=\"ipfix\"", x.dropped_records_total));
    }
    if let Some(x) = rd {
        errors.push(("exporter=\"redis\"", x.errors_total));
        dropped.push(("exporter=\"redis\"", x.dropped_events_total));
    }
    fam(
        "vmvpn_export_datagrams_total",
        "counter",
        "sFlow datagrams and IPFIX messages sent, each collector counted.",
        &dgrams,
    );
    fam(
        "vmvpn_export_errors_total",
        "counter",
        "Sends, connections or writes of an exporter that failed.",
        &errors,
    );
    fam(
        "vmvpn_export_dropped_total",
        "counter",
        "Samples, records or events an exporter lost for want of room.",
        &dropped,
    );
    if let Some(x) = sf {
        fam(
            "vmvpn_export_sflow_samples_total",
            "counter",
            "sFlow samples sent, by kind.",
            &[
                ("kind=\"flow\"", x.flow_samples_total),
                ("kind=\"counter\"", x.counter_samples_total),
            ],
        );
    }
    if let Some(x) = ix {
        fam(
            "vmvpn_export_ipfix_records_total",
            "counter",
            "IPFIX flow records sent.",
            &[("", x.records_total)],
        );
        fam(
            "vmvpn_export_ipfix_vm_name_records_total",
            "counter",
            "IPFIX options records naming VMs (libvirt) sent.",
            &[("", x.vm_name_records_total)],
        );
    }
    if let Some(x) = rd {
        fam(
            "vmvpn_export_redis_connected",
            "gauge",
            "1 while the Redis sink is connected.",
            &[("", u64::from(x.connected))],
        );
        fam(
            "vmvpn_export_redis_writes_total",
            "counter",
            "Writes of the live state to Redis.",
            &[("", x.writes_total)],
        );
        fam(
            "vmvpn_export_redis_events_total",
            "counter",
            "Events added to the Redis stream.",
            &[("", x.events_total)],
        );
    }
}

/// `GET /metrics`: a snapshot from the data plane and the alerts, as Prometheus text.
pub async fn scrape(
    State((dp, alerts, export)): State<(Handle, SharedAlerts, crate::export::SharedExport)>,
) -> Response {
    match dp.call(Request::Scrape).await {
        Some((mut s, mut extra)) => {
            if let Ok(e) = export.lock() {
                s.export = e.clone();
            }
            if let Ok(a) = alerts.lock() {
                extra.alerts = a
                    .iter()
                    .filter(|a| a.state != AlertState::Resolved)
                    .cloned()
                    .collect();
            }
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                render(&s, &extra),
            )
                .into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

/// The routes of `[host] metrics`.
pub fn router(dp: Handle, alerts: SharedAlerts, export: crate::export::SharedExport) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only GET /metrics is served here\n") })
        .with_state((dp, alerts, export))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{HostStatus, Status};
    use telemetry::DropCounters;

    #[test]
    fn renders_help_type_and_labelled_samples() {
        let s = Status {
            host: HostStatus {
                name: "h1".into(),
                id: 1,
                listen: "0.0.0.0:7401".into(),
                uptime_s: 3,
                version: "0".into(),
                realtime: false,
            },
            drops: DropCounters::default(),
            lans: Vec::new(),
            bulletin: None,
            libvirt: None,
            reassembly: Default::default(),
            offload: Default::default(),
            queue: Default::default(),
            export: Default::default(),
        };
        let mut b = telemetry::RttBuckets::default();
        b.le[3] = 2; // two samples <= 1 ms
        b.le[4..].iter_mut().for_each(|x| *x = 3);
        b.count = 4;
        b.sum_ns = 9_000_000_000;
        let extra = MetricsExtra {
            traffic: Vec::new(),
            rtt: vec![("lan1".into(), "10.0.0.2:7401".into(), b)],
            alerts: vec![crate::status::AlertView {
                alert: "VmvpnPeerLoss".into(),
                state: AlertState::Firing,
                labels: [("alertname", "VmvpnPeerLoss"), ("peer", "10.0.0.2:7401")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }],
        };
        let t = render(&s, &extra);
        assert!(t.contains("# TYPE vmvpn_peer_rtt_seconds histogram"), "{t}");
        assert!(
            t.contains(
                "vmvpn_peer_rtt_seconds_bucket{lan=\"lan1\",peer=\"10.0.0.2:7401\",le=\"0.001\"} 2"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "vmvpn_peer_rtt_seconds_bucket{lan=\"lan1\",peer=\"10.0.0.2:7401\",le=\"+Inf\"} 4"
            ) && t.contains("vmvpn_peer_rtt_seconds_sum{lan=\"lan1\",peer=\"10.0.0.2:7401\"} 9"),
            "{t}"
        );
        assert!(t.contains("# TYPE vmvpn_up gauge\nvmvpn_up 1\n"), "{t}");
        assert!(
            t.contains(
                "vmvpn_alerts{alertstate=\"firing\",alertname=\"VmvpnPeerLoss\",peer=\"10.0.0.2:7401\"} 1"
            ),
            "{t}"
        );
        assert!(
            t.contains("vmvpn_host_drops_total{reason=\"auth_failure\"} 0"),
            "{t}"
        );
        // Every family has HELP and TYPE, counters end in _total.
        for line in t.lines().filter(|l| l.starts_with("# TYPE")) {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 4, "{line}");
            assert!(t.contains(&format!("# HELP {} ", parts[2])), "{line}");
            if parts[3] == "counter" {
                assert!(parts[2].ends_with("_total"), "{line}");
            }
        }
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
