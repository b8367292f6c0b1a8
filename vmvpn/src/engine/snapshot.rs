//! Snapshots for the status contract (`crate::status`): built on request, off the
//! packet path, from the engine's tables.

use std::time::Instant;

use telemetry::DropCounters;

use super::macdb::Location;
use super::reassembly::ReassemblyStats;
use super::{Engine, pmtu};
use crate::status::{
    FloodStatus, LanStatus, LanTraffic, MacRow, PeerState, PeerStatus, SubnetStatus,
};

impl Engine {
    /// The reassembly table's counters (all LANs).
    pub fn reassembly_stats(&self) -> ReassemblyStats {
        self.reassembly.stats()
    }

    /// Drops not tied to a LAN.
    pub fn host_drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Status of every LAN.
    pub fn lan_status(&self, now: Instant) -> Vec<LanStatus> {
        self.lans
            .iter()
            .map(|l| LanStatus {
                name: l.spec.name.clone(),
                id: l.spec.id,
                segment: l.spec.segment.clone(),
                tap: l.spec.tap.clone(),
                mtu: l.spec.mtu,
                macs: l.macs.len(),
                mac_stats: l.macs.stats(),
                flood_tx_frames: l.flood.frames,
                flood: FloodStatus {
                    mode: l.spec.flood,
                    group: l.spec.group.map(|g| g.to_string()),
                    forwarder: l.plan.forwarder,
                    subnets: l
                        .plan
                        .subnets
                        .iter()
                        .map(|sp| SubnetStatus {
                            subnet: sp.subnet.to_string(),
                            hosts: sp.hosts,
                            forwarder: sp.forwarder.clone(),
                            mode: sp.mode,
                            reason: sp.reason.clone(),
                        })
                        .collect(),
                    stats: l.flood,
                },
                drops: l.drops.clone(),
                vm_table: l.measure.vms.stats(),
                flow_table: l.measure.flows.stats(),
                fragmented_frames_total: l.frags.frames,
                fragments_sent_total: l.frags.fragments,
                peers: l
                    .peers
                    .iter()
                    .map(|p| PeerStatus {
                        id: p.id,
                        name: p.name.clone(),
                        address: p.addr.to_string(),
                        source: p.source,
                        state: if p.tunnel.is_up() {
                            PeerState::Up
                        } else {
                            PeerState::Handshaking
                        },
                        path: p.reach.path(p.addr),
                        flows_spread: p.spread_over(self.flow_ports),
                        candidates: p.reach.status(),
                        path_open_ms: p.reach.opened_in.map(|d| d.as_millis() as u64),
                        last_heard_ago_ms: p
                            .link
                            .last_heard
                            .map(|h| now.saturating_duration_since(h).as_millis() as u64),
                        traffic: p.count.traffic,
                        sequence: p.count.rx_seq.stats(),
                        rtt: p.probe.rtt.summary(),
                        probes_sent_total: p.probe.sent,
                        probes_answered_total: p.probe.answered,
                        loss_tx_ratio: match p.probe.tx_seen {
                            (0, 0) => 0.0,
                            (rx, lost) => lost as f64 / (rx + lost) as f64,
                        },
                        health: p.health(now),
                        rates: p.count.series.rates(),
                        tx_utilisation_ratio: self
                            .measure
                            .accounting
                            .link_speed_bps
                            .map(|b| p.count.series.rates().tx_rate_bps as f64 / b.max(1) as f64),
                        rx_utilisation_ratio: self
                            .measure
                            .accounting
                            .link_speed_bps
                            .map(|b| p.count.series.rates().rx_rate_bps as f64 / b.max(1) as f64),
                        loss_rx_ratio: p.count.rx_seq.stats().loss_ratio(),
                        drops: p.count.drops.clone(),
                        unauthenticated_drops_total: p.count.unauthenticated_drops,
                        aqm_marks_total: p.count.aqm_marks,
                        path_mtu_bytes: p.path.mtu.current(),
                        path_mtu_searching: matches!(
                            p.path.mtu.phase(),
                            pmtu::Phase::Searching { .. }
                        ),
                        path_mtu_black_holes_total: p.path.mtu.black_holes,
                    })
                    .collect(),
                limits: l.limits.status(),
                services: l.services.status(|pi| {
                    l.peers.get(pi.index()).map_or_else(String::new, |p| {
                        if p.name.is_empty() {
                            p.addr.to_string()
                        } else {
                            p.name.clone()
                        }
                    })
                }),
            })
            .collect()
    }

    /// The MAC databases, optionally of one LAN.
    pub fn mac_rows(&self, lan: Option<&str>, now: Instant) -> Vec<MacRow> {
        let mut rows = Vec::new();
        for l in self
            .lans
            .iter()
            .filter(|l| lan.is_none_or(|n| n == l.spec.name))
        {
            for e in l.macs.entries(now) {
                let (location, peer_name) = match e.at {
                    Location::Local => ("local".to_string(), None),
                    Location::Peer(i) => match l.peers.get(i.index()) {
                        Some(p) => (
                            p.addr.to_string(),
                            Some(p.name.clone()).filter(|n| !n.is_empty()),
                        ),
                        None => ("?".to_string(), None),
                    },
                };
                rows.push(MacRow {
                    lan: l.spec.name.clone(),
                    mac: common::text::mac(&e.mac),
                    location,
                    peer_name,
                    age_ms: e.age.as_millis() as u64,
                });
            }
        }
        rows
    }

    /// Per-VM traffic, the VM matrix as this host saw it, and flows (at most `top` per
    /// LAN, busiest first), optionally of one LAN.
    pub fn traffic(&self, lan: Option<&str>, top: Option<usize>) -> Vec<LanTraffic> {
        let now_s = self.measure.last_second.unwrap_or(0);
        self.lans
            .iter()
            .filter(|l| lan.is_none_or(|n| n == l.spec.name))
            .map(|l| LanTraffic {
                lan: l.spec.name.clone(),
                vms: l.measure.vms.rows(now_s),
                pairs: l.measure.vms.pairs(),
                flows: l.measure.flows.rows(now_s, top),
                vm_table: l.measure.vms.stats(),
                flow_table: l.measure.flows.stats(),
                limits: l.limits.status(),
            })
            .collect()
    }

    /// Cumulative RTT histograms per (LAN, peer address), for Prometheus.
    pub fn rtt_buckets(&self) -> Vec<(String, String, telemetry::RttBuckets)> {
        self.lans
            .iter()
            .flat_map(|l| {
                l.peers.iter().map(|p| {
                    (
                        l.spec.name.clone(),
                        p.addr.to_string(),
                        *p.probe.rtt.buckets(),
                    )
                })
            })
            .collect()
    }
}
