//! Reports to the bulletin for its global view (`bulletin matrix`): per LAN, each tunnel's
//! health, RTT, loss and rates, and the busiest VM pairs whose source VM is local (so the
//! bulletin's sum counts every pair once).

use bulletin::proto::{
    AlertReport, LanAlerts, LanPaths, LanReport, LanServices, LanVmNames, PairReport, PeerPath,
    PeerReport, ServiceBackendReport, ServiceReport, Tunnel, TunnelPath, VmName,
};
use bulletin::reports::{MAX_NAMES, MAX_PAIRS, MAX_PEERS};
use telemetry::vms::{VmLocation, VmNamer};

use crate::io::dataplane::Handle;
use crate::status::{AlertState, AlertView, LanStatus, LanTraffic, PathKind, PeerState};

/// The report from a status snapshot and the traffic tables.
pub fn build(lans: &[LanStatus], traffic: &[LanTraffic]) -> Vec<LanReport> {
    lans.iter()
        .map(|l| {
            let peers = l
                .peers
                .iter()
                .take(MAX_PEERS)
                .map(|p| PeerReport {
                    host_id: p.id,
                    name: p.name.clone(),
                    tunnel: Tunnel {
                        // Already "down" for a tunnel that answered and died.
                        health: p.health.to_string(),
                        rtt_p50_us: p.rtt.rtt_p50_us,
                        rtt_p99_us: p.rtt.rtt_p99_us,
                        loss_tx_ratio: p.loss_tx_ratio,
                        loss_rx_ratio: p.loss_rx_ratio,
                        tx_rate_bps: p.rates.tx_rate_bps,
                        rx_rate_bps: p.rates.rx_rate_bps,
                    },
                })
                .collect();
            let pairs = traffic
                .iter()
                .find(|t| t.lan == l.name)
                .map(|t| {
                    t.pairs
                        .iter()
                        .filter(|p| p.at_source)
                        .map(|p| PairReport {
                            src_mac: p.src_mac,
                            src_ip: p.src_ip,
                            dst_mac: p.dst_mac,
                            dst_ip: p.dst_ip,
                            packets: p.packets,
                            bytes: p.bytes,
                        })
                        .take(MAX_PAIRS)
                        .collect()
                })
                .unwrap_or_default();
            LanReport {
                lan: l.name.clone(),
                peers,
                pairs,
            }
        })
        .collect()
}

/// The pending and firing alerts of each of `lans` (every LAN, empty ones too, so that
/// the bulletin forgets what cleared).
pub fn alerts(lans: &[&str], all: &[AlertView]) -> Vec<LanAlerts> {
    lans.iter()
        .map(|lan| LanAlerts {
            lan: lan.to_string(),
            alerts: all
                .iter()
                .filter(|a| {
                    a.state != AlertState::Resolved && a.labels.get("lan").is_some_and(|l| l == lan)
                })
                .map(|a| AlertReport {
                    alert: a.alert.clone(),
                    state: a.state.name().into(),
                    severity: a.severity.name().into(),
                    labels: a
                        .series_labels()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    summary: a.annotations.get("summary").cloned().unwrap_or_default(),
                    value: a.value,
                    since_s: a.since_s,
                })
                .collect(),
        })
        .collect()
}

/// Name the VMs of `traffic` that libvirt knows (through `namer`).
pub fn label(traffic: &mut [LanTraffic], namer: &VmNamer) {
    for t in traffic {
        namer(&mut t.vms);
    }
}

/// The names of this host's own VMs on each LAN (rows named by [`label`]), for the
/// bulletin: the VMs behind other hosts are theirs to name.
pub fn names(traffic: &[LanTraffic]) -> Vec<LanVmNames> {
    traffic
        .iter()
        .map(|t| LanVmNames {
            lan: t.lan.clone(),
            vms: t
                .vms
                .iter()
                .filter(|v| v.location == VmLocation::Local)
                .filter_map(|v| {
                    Some(VmName {
                        mac: v.mac,
                        name: v.name.clone()?,
                        uuid: v.uuid.clone(),
                    })
                })
                .take(MAX_NAMES)
                .collect(),
        })
        .collect()
}

/// How this host reaches each peer it has a tunnel up with, per LAN, for the bulletin's
/// matrix and topology.
pub fn paths(lans: &[LanStatus]) -> Vec<LanPaths> {
    lans.iter()
        .map(|l| LanPaths {
            lan: l.name.clone(),
            peers: l
                .peers
                .iter()
                .filter(|p| p.state == PeerState::Up)
                .filter_map(|p| {
                    Some(PeerPath {
                        host_id: p.id?,
                        path: match p.path {
                            PathKind::Direct => TunnelPath::Direct,
                            PathKind::Punched => TunnelPath::Punched,
                            PathKind::Relayed => TunnelPath::Relayed,
                        },
                        open_ms: p.path_open_ms,
                    })
                })
                .take(MAX_PEERS)
                .collect(),
        })
        .collect()
}

/// The services of each LAN that has any, as this host sends to them, for the bulletin's
/// overlay-wide view.
pub fn services(lans: &[LanStatus]) -> Vec<LanServices> {
    lans.iter()
        .filter(|l| !l.services.is_empty())
        .map(|l| LanServices {
            lan: l.name.clone(),
            services: l
                .services
                .iter()
                .map(|s| ServiceReport {
                    name: s.name.clone(),
                    address: s.address.clone(),
                    policy: s.policy.clone(),
                    no_backend_frames_total: s.no_backend_frames_total,
                    backends: s
                        .backends
                        .iter()
                        .map(|b| ServiceBackendReport {
                            backend: b.backend.clone(),
                            state: b.state.clone(),
                            local: b.location == "local",
                            location: b.location.clone(),
                            weight: b.weight,
                            load_mbps: b.load_mbps,
                            open_connections: b.open_connections,
                            rtt_ms: b.rtt_ms,
                            flows_total: b.flows_total,
                            active_flows: b.active_flows,
                            new_flows_last_minute: b.new_flows_last_minute,
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

/// What a report tick sends: the report, the VM names (with a namer) and the services.
pub struct Collected {
    /// Tunnels and VM pairs per LAN.
    pub reports: Vec<LanReport>,
    /// This host's VM names per LAN, when libvirt names them.
    pub names: Option<Vec<LanVmNames>>,
    /// Services per LAN (LANs with none left out).
    pub services: Vec<LanServices>,
    /// Paths to its peers per LAN.
    pub paths: Vec<LanPaths>,
}

/// Ask the data plane and build the report, with a `namer` the VM names, and the
/// services (None while the data plane shuts down).
pub async fn collect(dp: &Handle, namer: Option<&VmNamer>) -> Option<Collected> {
    let (status, mut traffic) = dp.snapshot().await?;
    let names = namer.map(|n| {
        label(&mut traffic, n);
        names(&traffic)
    });
    Some(Collected {
        reports: build(&status.lans, &traffic),
        names,
        services: services(&status.lans),
        paths: paths(&status.lans),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pairs_counted_at_their_source_are_reported() {
        use telemetry::vms::PairRow;
        let pair = |at_source| PairRow {
            src_mac: [2, 0, 0, 0, 0, 1],
            src_ip: Some([10, 0, 0, 1].into()),
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst_ip: None,
            packets: 2,
            bytes: 120,
            at_source,
        };
        let t = LanTraffic {
            lan: "lan1".into(),
            vms: Vec::new(),
            pairs: vec![pair(true), pair(false)],
            flows: Vec::new(),
            vm_table: Default::default(),
            flow_table: Default::default(),
            limits: Vec::new(),
        };
        let l = {
            LanStatus {
                name: "lan1".into(),
                id: 1,
                segment: String::new(),
                tap: String::new(),
                mtu: 1418,
                macs: 0,
                mac_stats: Default::default(),
                flood_tx_frames: 0,
                flood: crate::status::FloodStatus {
                    mode: crate::status::FloodMode::Auto,
                    group: None,
                    forwarder: false,
                    subnets: Vec::new(),
                    stats: Default::default(),
                },
                drops: Default::default(),
                vm_table: Default::default(),
                flow_table: Default::default(),
                fragmented_frames_total: 0,
                fragments_sent_total: 0,
                peers: Vec::new(),
                limits: Vec::new(),
                services: Vec::new(),
            }
        };
        let r = build(&[l], &[t]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].pairs.len(), 1);
        assert_eq!(r[0].pairs[0].src_ip, Some([10, 0, 0, 1].into()));
        assert_eq!(r[0].pairs[0].dst_ip, None);
    }
}
