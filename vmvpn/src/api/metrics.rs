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
use crate::relay::counters::RelayView;
use crate::status::metric::{Exposed, Kind};
use crate::status::{
    AlertState, BackendStatus, LanStatus, LimitCounters, LimitStatus, MetricsExtra, PeerStatus,
    QueueStats, ServiceStatus, Status,
};
use telemetry::VmRow;
use telemetry::rtt::BUCKETS_US;
use telemetry::{DropCounters, DropReason};

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition as it is gathered: families in the order first met, each with its
/// samples, so a family's samples stand together whatever order the walk finds them in.
#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
}

struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    /// (labels, value).
    samples: Vec<(String, f64)>,
}

impl Exposition {
    /// The family `name`, made on first use. Two declarations of one name must agree
    /// (checked by the tests over every table).
    fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) -> &mut Family {
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name,
                    kind,
                    help,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// `T`'s families, with no samples yet: HELP and TYPE stand even when nothing of
    /// that kind exists (no LAN, no peer), as scrapers and `promtool` expect.
    fn declare<T: Exposed>(&mut self) {
        for m in T::METRICS {
            self.family(m.name, m.kind, m.help);
        }
    }

    /// The samples of `v`, each labelled with `labels` (which value it is) and the
    /// metric's own constant labels.
    fn put<T: Exposed>(&mut self, labels: &str, v: &T) {
        for m in T::METRICS {
            let Some(x) = (m.value)(v) else { continue };
            let labels = match (labels.is_empty(), m.labels.is_empty()) {
                (_, true) => labels.to_string(),
                (true, false) => m.labels.to_string(),
                (false, false) => format!("{labels},{}", m.labels),
            };
            self.family(m.name, m.kind, m.help)
                .samples
                .push((labels, x));
        }
    }

    fn write(&self, out: &mut String) {
        for f in &self.families {
            let (name, kind) = (f.name, f.kind.name());
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &f.samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        }
    }
}

/// Render a status snapshot as Prometheus text. Which fields appear, and how, is each
/// status type's [`Exposed`] table; what is written here is only which value is which
/// (its labels), and the families no single field makes (drops by reason, the RTT
/// histogram, alerts).
pub fn render(status: &Status, extra: &MetricsExtra) -> String {
    let mut ex = Exposition::default();
    ex.declare::<Status>();
    ex.declare::<QueueStats>();
    ex.put("", status);
    ex.put("", &status.queue);
    // Reasons by name: the order the exposition has always had.
    let by_name = |c: &DropCounters| {
        let mut v: Vec<(&'static str, u64)> = DropReason::ALL
            .iter()
            .map(|r| (r.name(), c.get(*r)))
            .collect();
        v.sort_unstable();
        v
    };
    let host_drops = ex.family(
        "vmvpn_host_drops_total",
        Kind::Counter,
        "Datagrams dropped before a LAN was known, by reason.",
    );
    for (reason, c) in by_name(&status.drops) {
        host_drops
            .samples
            .push((format!("reason=\"{}\"", esc(reason)), c as f64));
    }
    ex.family(LAN_DROPS, Kind::Counter, LAN_DROPS_HELP);
    ex.declare::<LanStatus>();
    ex.declare::<LimitStatus>();
    ex.declare::<LimitCounters>();
    ex.declare::<ServiceStatus>();
    ex.declare::<BackendStatus>();
    ex.declare::<PeerStatus>();
    ex.declare::<VmRow>();
    for l in &status.lans {
        let lan = format!("lan=\"{}\"", esc(&l.name));
        let drops = ex.family(LAN_DROPS, Kind::Counter, LAN_DROPS_HELP);
        for (reason, c) in by_name(&l.drops) {
            drops
                .samples
                .push((format!("{lan},reason=\"{}\"", esc(reason)), c as f64));
        }
        ex.put(&lan, l);
        for lim in &l.limits {
            let vm = format!("{lan},vm=\"{}\"", esc(lim.mac.as_deref().unwrap_or("all")));
            ex.put(&vm, lim);
            for (dir, c) in [("in", &lim.rx), ("out", &lim.tx)] {
                if let Some(c) = c {
                    ex.put(&format!("{vm},direction=\"{dir}\""), c);
                }
            }
        }
        for sv in &l.services {
            let svc = format!("{lan},service=\"{}\"", esc(&sv.name));
            ex.put(&svc, sv);
            for b in &sv.backends {
                ex.put(&format!("{svc},backend=\"{}\"", esc(&b.backend)), b);
            }
        }
        for p in &l.peers {
            ex.put(&format!("{lan},peer=\"{}\"", esc(&p.address)), p);
        }
    }
    for t in &extra.traffic {
        let lan = format!("lan=\"{}\"", esc(&t.lan));
        for vm in t
            .vms
            .iter()
            .filter(|v| v.location == telemetry::VmLocation::Local)
        {
            ex.put(&format!("{lan},mac=\"{}\"", common::text::mac(&vm.mac)), vm);
        }
    }
    // The exporters' families only for what is configured.
    let e = &status.export;
    if let Some(x) = &e.sflow {
        ex.put("", x);
    }
    if let Some(x) = &e.ipfix {
        ex.put("", x);
    }
    if let Some(x) = &e.redis {
        ex.put("", x);
    }
    if let Some(r) = &status.relay {
        ex.put("", r);
    }
    let mut out = String::new();
    ex.write(&mut out);
    histogram(&mut out, extra);
    alerts(&mut out, extra);
    out
}

const LAN_DROPS: &str = "vmvpn_lan_drops_total";
const LAN_DROPS_HELP: &str = "Frames and datagrams dropped on a LAN, by reason.";

/// The RTT histogram of each tunnel.
fn histogram(out: &mut String, extra: &MetricsExtra) {
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
}

/// Like Prometheus' own ALERTS: one sample per pending or firing alert.
fn alerts(out: &mut String, extra: &MetricsExtra) {
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
}

/// What a scrape reads besides the data plane.
#[derive(Clone)]
pub struct MetricsState {
    dp: Handle,
    alerts: SharedAlerts,
    export: crate::export::SharedExport,
    relay: Option<RelayView>,
}

/// `GET /metrics`: a snapshot from the data plane and the alerts, as Prometheus text.
pub async fn scrape(
    State(MetricsState {
        dp,
        alerts,
        export,
        relay,
    }): State<MetricsState>,
) -> Response {
    match dp.call(Request::Scrape).await {
        Some((mut s, mut extra)) => {
            s.relay = relay.as_ref().map(|r| r.status());
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
pub fn router(
    dp: Handle,
    alerts: SharedAlerts,
    export: crate::export::SharedExport,
    relay: Option<RelayView>,
) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only GET /metrics is served here\n") })
        .with_state(MetricsState {
            dp,
            alerts,
            export,
            relay,
        })
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
                threads: 1,
                flow_ports: 0,
            },
            drops: DropCounters::default(),
            lans: Vec::new(),
            bulletin: None,
            libvirt: None,
            relay: None,
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
    /// Every table's (name, kind, help, constant labels).
    fn all_tables() -> Vec<(&'static str, Kind, &'static str, &'static str)> {
        fn of<T: Exposed>(v: &mut Vec<(&'static str, Kind, &'static str, &'static str)>) {
            v.extend(
                T::METRICS
                    .iter()
                    .map(|m| (m.name, m.kind, m.help, m.labels)),
            );
        }
        let mut v = Vec::new();
        of::<Status>(&mut v);
        of::<QueueStats>(&mut v);
        of::<LanStatus>(&mut v);
        of::<LimitStatus>(&mut v);
        of::<LimitCounters>(&mut v);
        of::<ServiceStatus>(&mut v);
        of::<BackendStatus>(&mut v);
        of::<PeerStatus>(&mut v);
        of::<VmRow>(&mut v);
        of::<crate::status::SflowStatus>(&mut v);
        of::<crate::status::IpfixStatus>(&mut v);
        of::<crate::status::RedisStatus>(&mut v);
        v
    }

    #[test]
    fn the_declared_families_follow_prometheus_rules_and_agree() {
        let all = all_tables();
        assert!(all.len() > 50, "{}", all.len());
        let mut seen: std::collections::BTreeMap<&str, (Kind, &str)> = Default::default();
        let mut series = std::collections::BTreeSet::new();
        for (name, kind, help, labels) in all {
            assert!(name.starts_with("vmvpn_"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert!(!help.is_empty() && help.ends_with('.'), "{name}: {help}");
            // One name, one meaning: tables that share a family say the same of it.
            let first = *seen.entry(name).or_insert((kind, help));
            assert_eq!(first, (kind, help), "{name} declared twice, differently");
            // And no two entries write the same series.
            assert!(series.insert((name, labels)), "{name}{{{labels}}} twice");
        }
    }

    #[test]
    fn a_peer_field_reaches_metrics_through_its_table_alone() {
        // A peer with RTT measured and one without: the table's entries decide which
        // series exist, with the labels the walk gives.
        let mut up = crate::status::PeerStatus {
            address: "10.0.0.2:7401".into(),
            state: crate::status::PeerState::Up,
            flows_spread: true,
            ..Default::default()
        };
        up.traffic.tx_packets = 7;
        up.rtt.rtt_p50_us = Some(1500);
        let quiet = crate::status::PeerStatus {
            address: "10.0.0.3:7401".into(),
            ..Default::default()
        };
        let s = Status {
            lans: vec![LanStatus {
                name: "lan1".into(),
                peers: vec![up, quiet],
                ..Default::default()
            }],
            ..Default::default()
        };
        let t = render(&s, &MetricsExtra::default());
        let up = "lan=\"lan1\",peer=\"10.0.0.2:7401\"";
        let quiet = "lan=\"lan1\",peer=\"10.0.0.3:7401\"";
        assert!(t.contains(&format!("vmvpn_peer_up{{{up}}} 1\n")), "{t}");
        assert!(t.contains(&format!("vmvpn_peer_up{{{quiet}}} 0\n")), "{t}");
        assert!(
            t.contains(&format!("vmvpn_peer_flows_spread{{{up}}} 1\n"))
                && t.contains(&format!("vmvpn_peer_flows_spread{{{quiet}}} 0\n")),
            "{t}"
        );
        assert!(
            t.contains(&format!("vmvpn_peer_tx_packets_total{{{up}}} 7\n")),
            "{t}"
        );
        assert!(
            t.contains(&format!("vmvpn_peer_rtt_p50_seconds{{{up}}} 0.0015\n")),
            "{t}"
        );
        assert!(
            !t.contains(&format!("vmvpn_peer_rtt_p50_seconds{{{quiet}}}")),
            "{t}"
        );
        // Every declared family has its HELP and TYPE once, its samples together.
        for (name, kind, _, _) in all_tables() {
            let exporter = name.starts_with("vmvpn_export_");
            let n = t
                .matches(&format!("# TYPE {name} {}\n", kind.name()))
                .count();
            assert_eq!(
                n,
                usize::from(!exporter),
                "{name}: exporters only when configured"
            );
        }
        let mut ended = std::collections::BTreeSet::new();
        let mut current = "";
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            if name != current {
                assert!(ended.insert(name), "{name}'s samples are split: {t}");
                current = name;
            }
        }
    }

    #[test]
    fn exporters_share_families_by_label() {
        let mut s = Status::default();
        s.export.sflow = Some(crate::status::SflowStatus {
            datagrams_total: 3,
            flow_samples_total: 2,
            ..Default::default()
        });
        s.export.ipfix = Some(crate::status::IpfixStatus {
            messages_total: 5,
            ..Default::default()
        });
        let t = render(&s, &MetricsExtra::default());
        assert_eq!(
            t.matches("# TYPE vmvpn_export_datagrams_total counter")
                .count(),
            1
        );
        assert!(
            t.contains(
                "vmvpn_export_datagrams_total{exporter=\"sflow\"} 3\nvmvpn_export_datagrams_total{exporter=\"ipfix\"} 5\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("vmvpn_export_sflow_samples_total{kind=\"flow\"} 2\n"),
            "{t}"
        );
        assert!(!t.contains("vmvpn_export_redis"), "{t}");
    }
}
