//! The bulletin's dashboard view: the registry, the hosts' latest reports and alerts,
//! turned into an [`Overview`] once a second, feeding the history as reports arrive.
//! Sans-IO: the caller passes what the server holds and the time.

use std::collections::{BTreeMap, HashMap, HashSet};

use common::net::Subnet;
use common::text;

use crate::matrix::VmFlow;
use crate::proto::{AlertReport, HostAlerts, Record};
use crate::reports::StoredReport;
use crate::web::history::{History, SeriesKey};
use crate::web::view::{
    AlertRow, HistoryInfo, HostState, HostView, LanView, LinkView, Overview, PairView, Scope,
    SubnetView, VmView,
};

/// A report later than its host's interval by more than this marks the host down: about
/// two missed reports at the usual few seconds, so a killed host shows within the report
/// interval plus a few seconds, and a report held up by a busy second does not.
pub const REPORT_GRACE_MS: u64 = 2_000;
/// Before a host's second report its interval is unknown; this is assumed.
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// VM pairs shown per LAN.
pub const MAX_PAIRS_SHOWN: usize = 256;

/// What the server holds, as the view needs it.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// The bulletin's certificate fingerprint (names the view).
    pub name: String,
    /// Every registration.
    pub records: Vec<Record>,
    /// Every host's latest report per LAN.
    pub reports: Vec<StoredReport>,
    /// Every host's alerts per LAN.
    pub alerts: Vec<HostAlerts>,
    /// VM names by (LAN, MAC), from the hosts' libvirt.
    pub names: crate::matrix::Names,
    /// Each LAN's services, over every host that reports them.
    pub services: crate::services::Overlay,
    /// Each tunnel's path, as its host reported it.
    pub paths: crate::matrix::Paths,
}

type PairId = (String, u32, [u8; 6], [u8; 6]);

#[derive(Debug, Clone, Copy)]
struct PairMemo {
    bytes: u64,
    at_ms: u64,
    rate_bps: Option<u64>,
}

/// What the input holds of one LAN.
struct OfLan<'a> {
    lan: &'a str,
    records: &'a [&'a Record],
    reports: &'a [&'a StoredReport],
    names: &'a crate::matrix::Names,
    services: &'a crate::services::Overlay,
    paths: &'a crate::matrix::Paths,
}

/// The memory between views: which reports were seen, and the pairs' last byte counts.
#[derive(Default)]
pub struct Global {
    seen: HashMap<(String, u32), u64>,
    pairs: HashMap<PairId, PairMemo>,
}

fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|u| u as f64 / 1000.0)
}

impl Global {
    /// Build the view at `now_ms` (ms since the Unix epoch), adding the points of reports
    /// not seen before to `history`.
    pub fn update(&mut self, input: &Input, history: &mut History, now_ms: u64) -> Overview {
        let mut step = Vec::new();
        let mut fresh_lans = HashSet::new();
        let mut live_pairs = HashSet::new();
        for r in &input.reports {
            let h = &r.host;
            let lan = &h.report.lan;
            let at_ms = now_ms.saturating_sub(h.age_ms);
            step.extend(r.interval_ms);
            for q in &h.report.pairs {
                live_pairs.insert((lan.clone(), h.host_id, q.src_mac, q.dst_mac));
            }
            let key = (lan.clone(), h.host_id);
            if self.seen.get(&key) == Some(&r.seq) {
                continue;
            }
            self.seen.insert(key, r.seq);
            fresh_lans.insert(lan.clone());
            for p in &h.report.peers {
                let t = &p.tunnel;
                history.push(
                    SeriesKey::Tunnel {
                        lan: lan.clone(),
                        from: h.name.clone(),
                        to: peer_name(&p.name, p.host_id),
                    },
                    at_ms,
                    &[
                        ms(t.rtt_p50_us),
                        ms(t.rtt_p99_us),
                        Some(t.loss_tx_ratio),
                        Some(t.loss_rx_ratio),
                        Some(t.tx_rate_bps as f64),
                        Some(t.rx_rate_bps as f64),
                    ],
                );
            }
            for q in &h.report.pairs {
                let id = (lan.clone(), h.host_id, q.src_mac, q.dst_mac);
                let rate_bps = self.pairs.get(&id).and_then(|m| {
                    // A pair that restarted counting (aged out and back) has no rate yet.
                    (q.bytes >= m.bytes && at_ms > m.at_ms)
                        .then(|| (q.bytes - m.bytes) * 8 * 1000 / (at_ms - m.at_ms))
                });
                self.pairs.insert(
                    id,
                    PairMemo {
                        bytes: q.bytes,
                        at_ms,
                        rate_bps,
                    },
                );
            }
        }
        self.pairs.retain(|k, _| live_pairs.contains(k));
        let reporting: HashSet<(String, u32)> = input
            .reports
            .iter()
            .map(|r| (r.host.report.lan.clone(), r.host.host_id))
            .collect();
        self.seen.retain(|k, _| reporting.contains(k));
        step.sort_unstable();
        let step_ms = step
            .get(step.len() / 2)
            .copied()
            .unwrap_or(DEFAULT_INTERVAL_MS);

        let mut lans: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for r in &input.records {
            lans.entry(&r.lan).or_default().push(r);
        }
        for r in &input.reports {
            lans.entry(&r.host.report.lan).or_default();
        }
        let lans = lans
            .into_iter()
            .map(|(lan, records)| {
                let reports: Vec<&StoredReport> = input
                    .reports
                    .iter()
                    .filter(|r| r.host.report.lan == lan)
                    .collect();
                let of_lan = OfLan {
                    lan,
                    records: &records,
                    reports: &reports,
                    names: &input.names,
                    services: &input.services,
                    paths: &input.paths,
                };
                self.lan(of_lan, history, fresh_lans.contains(lan), now_ms)
            })
            .collect();
        let mut alerts = Vec::new();
        for h in &input.alerts {
            for a in &h.alerts.alerts {
                alerts.push(AlertRow {
                    lan: h.alerts.lan.clone(),
                    host: h.name.clone(),
                    alert: AlertReport {
                        labels: a
                            .labels
                            .iter()
                            .filter(|(k, _)| k != "lan")
                            .cloned()
                            .collect(),
                        since_s: a.since_s + h.age_ms / 1000,
                        ..a.clone()
                    },
                });
            }
        }
        Overview {
            scope: Scope::Overlay,
            name: input.name.clone(),
            at_ms: now_ms,
            history: HistoryInfo {
                points: history.capacity(),
                step_ms,
            },
            lans,
            alerts,
        }
    }

    fn lan(&self, of: OfLan<'_>, history: &mut History, fresh: bool, now_ms: u64) -> LanView {
        let OfLan {
            lan,
            records,
            reports,
            names,
            services,
            paths,
        } = of;
        let links: Vec<LinkView> = reports
            .iter()
            .flat_map(|r| {
                r.host.report.peers.iter().map(|p| LinkView {
                    from: r.host.name.clone(),
                    to: peer_name(&p.name, p.host_id),
                    tunnel: p.tunnel.clone(),
                    path: crate::matrix::path_of(paths, lan, r.host.host_id, p.host_id),
                })
            })
            .collect();
        let mut hosts: BTreeMap<String, HostView> = BTreeMap::new();
        for r in records {
            hosts.insert(
                r.name.clone(),
                HostView {
                    name: r.name.clone(),
                    id: Some(r.host_id),
                    underlay: r.underlay.to_string(),
                    subnet: Subnet::of(r.underlay, r.prefix).to_string(),
                    state: HostState::Unreported,
                    forwarder: false,
                    report_age_ms: None,
                    reported_at_ms: None,
                },
            );
        }
        for r in reports {
            let h = &r.host;
            let v = hosts.entry(h.name.clone()).or_insert_with(|| HostView {
                name: h.name.clone(),
                id: Some(h.host_id),
                underlay: String::new(),
                subnet: String::new(),
                state: HostState::Unreported,
                forwarder: false,
                report_age_ms: None,
                reported_at_ms: None,
            });
            v.report_age_ms = Some(h.age_ms);
            v.reported_at_ms = Some(now_ms.saturating_sub(h.age_ms));
            let due = r.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS) + REPORT_GRACE_MS;
            v.state = if h.age_ms > due {
                HostState::Down
            } else {
                HostState::Up
            };
        }
        // Down for every reporting peer that measures it: down, whatever it says. Counted
        // in one pass over the links (a LAN of 200 hosts has 40 000).
        let mut measured: HashMap<&str, (usize, usize)> = HashMap::new();
        for l in links.iter().filter(|l| l.from != l.to) {
            let c = measured.entry(l.to.as_str()).or_default();
            c.0 += 1;
            c.1 += usize::from(l.tunnel.health == "down");
        }
        for v in hosts.values_mut() {
            if measured
                .get(v.name.as_str())
                .is_some_and(|&(n, down)| n > 0 && down == n)
            {
                v.state = HostState::Down;
            }
        }
        // The designated forwarder: lowest id among the subnet's hosts that are not down,
        // the rule every host applies (vmvpn's engine/flood.rs).
        let mut subnets: BTreeMap<String, Option<(u32, String)>> = BTreeMap::new();
        for v in hosts.values() {
            if v.subnet.is_empty() {
                continue;
            }
            let best = subnets.entry(v.subnet.clone()).or_default();
            if v.state != HostState::Down
                && let Some(id) = v.id
                && best.as_ref().is_none_or(|(b, _)| id < *b)
            {
                *best = Some((id, v.name.clone()));
            }
        }
        for v in hosts.values_mut() {
            v.forwarder = subnets
                .get(&v.subnet)
                .and_then(|b| b.as_ref())
                .is_some_and(|(_, n)| *n == v.name);
        }

        let mut pairs = Vec::new();
        let mut vms: BTreeMap<String, VmView> = BTreeMap::new();
        for r in reports {
            let h = &r.host;
            for q in &h.report.pairs {
                let rate = self
                    .pairs
                    .get(&(lan.to_string(), h.host_id, q.src_mac, q.dst_mac))
                    .and_then(|m| m.rate_bps);
                let (src_mac, dst_mac) = (text::mac(&q.src_mac), text::mac(&q.dst_mac));
                let name = |m: &[u8; 6]| names.get(&(lan.to_string(), *m)).cloned();
                let (src_name, dst_name) = (name(&q.src_mac), name(&q.dst_mac));
                pairs.push(PairView {
                    flow: VmFlow {
                        src: q.src_ip.map_or_else(|| src_mac.clone(), |i| i.to_string()),
                        src_mac: src_mac.clone(),
                        src_host: h.name.clone(),
                        dst: q.dst_ip.map_or_else(|| dst_mac.clone(), |i| i.to_string()),
                        dst_mac: dst_mac.clone(),
                        src_name: src_name.clone(),
                        dst_name: dst_name.clone(),
                        packets: q.packets,
                        bytes: q.bytes,
                    },
                    rate_bps: rate,
                });
                let src = vms.entry(src_mac.clone()).or_insert_with(|| vm(&src_mac));
                src.host = h.name.clone();
                src.name = src_name;
                if let Some(ip) = q.src_ip {
                    src.ip = Some(ip.to_string());
                }
                src.tx_rate_bps += rate.unwrap_or(0);
                let dst = vms.entry(dst_mac.clone()).or_insert_with(|| vm(&dst_mac));
                if dst_name.is_some() {
                    dst.name = dst_name;
                }
                if let Some(ip) = q.dst_ip {
                    dst.ip.get_or_insert(ip.to_string());
                }
                dst.rx_rate_bps += rate.unwrap_or(0);
            }
        }
        pairs.sort_by_key(|p| std::cmp::Reverse((p.rate_bps.unwrap_or(0), p.flow.bytes)));
        pairs.truncate(MAX_PAIRS_SHOWN);
        let mut vms: Vec<VmView> = vms.into_values().collect();
        for v in &mut vms {
            let key = SeriesKey::Vm {
                lan: lan.to_string(),
                mac: v.mac.clone(),
            };
            if fresh {
                history.push(
                    key.clone(),
                    now_ms,
                    &[Some(v.tx_rate_bps as f64), Some(v.rx_rate_bps as f64)],
                );
            }
            v.peak_to_mean = history.peak_to_mean(&key);
        }
        vms.sort_by_key(|v| std::cmp::Reverse(v.tx_rate_bps + v.rx_rate_bps));
        LanView {
            lan: lan.to_string(),
            subnets: subnets
                .into_iter()
                .map(|(subnet, best)| SubnetView {
                    subnet,
                    forwarder: best.map(|(_, n)| n),
                })
                .collect(),
            hosts: hosts.into_values().collect(),
            links,
            pairs,
            vms,
            services: services.get(lan).cloned().unwrap_or_default(),
        }
    }
}

fn vm(mac: &str) -> VmView {
    VmView {
        mac: mac.to_string(),
        name: None,
        ip: None,
        host: String::new(),
        tx_rate_bps: 0,
        rx_rate_bps: 0,
        peak_to_mean: None,
    }
}

/// A peer's name, or its id while it has not said its name.
pub fn peer_name(name: &str, id: Option<u32>) -> String {
    if name.is_empty() {
        id.map_or("?".into(), |i| format!("{i:#010x}"))
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{AlertReport, LanAlerts, LanReport, PairReport, PeerReport, Tunnel};
    use std::net::IpAddr;

    fn record(id: u32, name: &str, ip: [u8; 4]) -> Record {
        let underlay = IpAddr::from(ip);
        Record {
            lan: "lan1".into(),
            segment: "192.168.7.0/24".into(),
            host_id: id,
            name: name.into(),
            underlay,
            prefix: 24,
            port: 7401,
            observed: std::net::SocketAddr::new(underlay, 7401),
            lease_ms: 30_000,
            heartbeat_ago_ms: 0,
        }
    }

    fn tunnel(to: &str, p50: u64, health: &str) -> PeerReport {
        PeerReport {
            host_id: None,
            name: to.into(),
            tunnel: Tunnel {
                health: health.into(),
                rtt_p50_us: Some(p50),
                rtt_p99_us: Some(2 * p50),
                loss_tx_ratio: 0.01,
                loss_rx_ratio: 0.0,
                tx_rate_bps: 1,
                rx_rate_bps: 2,
            },
        }
    }

    fn report(
        id: u32,
        name: &str,
        age_ms: u64,
        seq: u64,
        peers: Vec<PeerReport>,
        bytes: u64,
    ) -> StoredReport {
        StoredReport {
            host: crate::reports::SharedReport {
                host_id: id,
                name: name.into(),
                age_ms,
                report: std::sync::Arc::new(LanReport {
                    lan: "lan1".into(),
                    peers,
                    pairs: vec![PairReport {
                        src_mac: [2, 0, 0, 0, 0, id as u8],
                        src_ip: Some(IpAddr::from([192, 168, 7, id as u8])),
                        dst_mac: [2, 0, 0, 0, 0, 9],
                        dst_ip: None,
                        packets: 10,
                        bytes,
                    }],
                }),
            },
            interval_ms: Some(2000),
            seq,
        }
    }

    fn input(reports: Vec<StoredReport>) -> Input {
        Input {
            paths: Default::default(),
            name: "sha256:x".into(),
            records: vec![
                record(30, "h1", [10, 0, 1, 1]),
                record(20, "h2", [10, 0, 1, 2]),
                record(10, "h3", [10, 0, 2, 1]),
            ],
            reports,
            names: [(
                ("lan1".to_string(), [2, 0, 0, 0, 0, 30]),
                "web30".to_string(),
            )]
            .into(),
            services: Default::default(),
            alerts: vec![HostAlerts {
                host_id: 30,
                name: "h1".into(),
                age_ms: 3000,
                alerts: LanAlerts {
                    lan: "lan1".into(),
                    alerts: vec![AlertReport {
                        alert: "VmvpnPeerDown".into(),
                        state: "firing".into(),
                        severity: "critical".into(),
                        labels: vec![("lan".into(), "lan1".into()), ("peer".into(), "h3".into())],
                        summary: "h3 down".into(),
                        value: 1.0,
                        since_s: 4,
                    }],
                },
            }],
        }
    }

    #[test]
    fn hosts_subnets_forwarders_links_pairs_and_alerts() {
        let mut g = Global::default();
        let mut h = History::new(100, 100);
        let t = 1_000_000;
        let first = vec![
            report(
                30,
                "h1",
                0,
                1,
                vec![tunnel("h2", 300, "ok"), tunnel("h3", 900, "ok")],
                1000,
            ),
            report(20, "h2", 0, 2, vec![tunnel("h1", 310, "ok")], 0),
            report(10, "h3", 0, 3, vec![tunnel("h1", 880, "ok")], 0),
        ];
        let o = g.update(&input(first), &mut h, t);
        assert_eq!(o.scope, Scope::Overlay);
        let l = &o.lans[0];
        assert_eq!(
            l.subnets,
            vec![
                SubnetView {
                    subnet: "10.0.1.0/24".into(),
                    forwarder: Some("h2".into())
                },
                SubnetView {
                    subnet: "10.0.2.0/24".into(),
                    forwarder: Some("h3".into())
                },
            ],
            "the lowest id of each subnet"
        );
        assert!(l.hosts.iter().all(|x| x.state == HostState::Up), "{l:?}");
        assert_eq!(l.links.len(), 4);
        assert_eq!(l.pairs[0].rate_bps, None, "one sample: no rate yet");
        assert_eq!(o.alerts.len(), 1);
        assert_eq!(
            o.alerts[0].alert.since_s, 7,
            "4 s on the host + 3 s old report"
        );
        assert_eq!(o.alerts[0].alert.labels, vec![("peer".into(), "h3".into())]);

        // 2 s later: h1 counted 1000 more bytes; h3 fell silent and h1 finds it down.
        let second = vec![
            report(
                30,
                "h1",
                0,
                4,
                vec![tunnel("h2", 300, "ok"), tunnel("h3", 900, "down")],
                2000,
            ),
            report(20, "h2", 0, 5, vec![tunnel("h1", 310, "ok")], 0),
            report(10, "h3", 2000, 3, vec![tunnel("h1", 880, "ok")], 0),
        ];
        let o = g.update(&input(second.clone()), &mut h, t + 2000);
        let l = &o.lans[0];
        let h1_pair = l
            .pairs
            .iter()
            .find(|p| p.flow.src_host == "h1")
            .expect("h1's pair");
        assert_eq!(h1_pair.rate_bps, Some(4000), "1000 B in 2 s");
        let vm = l
            .vms
            .iter()
            .find(|v| v.mac == "02:00:00:00:00:1e")
            .expect("h1's VM");
        assert_eq!((vm.tx_rate_bps, vm.host.as_str()), (4000, "h1"));
        assert_eq!(vm.name.as_deref(), Some("web30"), "named by h1's libvirt");
        assert_eq!(h1_pair.flow.src_name.as_deref(), Some("web30"));
        let dst = l
            .vms
            .iter()
            .find(|v| v.mac == "02:00:00:00:00:09")
            .expect("dst VM");
        assert_eq!(dst.rx_rate_bps, 4000);
        let h3 = l.hosts.iter().find(|x| x.name == "h3").expect("h3");
        assert_eq!(
            h3.state,
            HostState::Down,
            "every peer measuring it finds it down"
        );
        assert_eq!(l.subnets[1].forwarder, None, "a down host forwards nothing");

        // A report seen again adds no point; an overdue one marks its host down.
        let key = SeriesKey::Tunnel {
            lan: "lan1".into(),
            from: "h1".into(),
            to: "h2".into(),
        };
        assert_eq!(h.get(&key).map(|d| d.t_ms.len()), Some(2));
        let o = g.update(&input(second), &mut h, t + 2500);
        assert_eq!(h.get(&key).map(|d| d.t_ms.len()), Some(2));
        let mut late = vec![report(20, "h2", 4001, 5, vec![], 0)];
        late[0].interval_ms = Some(2000);
        let o2 = g.update(&input(late), &mut h, t + 6000);
        let h2 = o2.lans[0]
            .hosts
            .iter()
            .find(|x| x.name == "h2")
            .expect("h2");
        assert_eq!(
            h2.state,
            HostState::Down,
            "report 4.0 s old at a 2 s interval"
        );
        assert_eq!(
            o.lans[0]
                .hosts
                .iter()
                .find(|x| x.name == "h2")
                .map(|x| x.state),
            Some(HostState::Up)
        );
        let unreported = g.update(
            &Input {
                reports: Vec::new(),
                ..input(Vec::new())
            },
            &mut h,
            t + 7000,
        );
        assert!(
            unreported.lans[0]
                .hosts
                .iter()
                .all(|x| x.state == HostState::Unreported)
        );
    }

    #[test]
    fn peers_without_a_name() {
        assert_eq!(peer_name("", Some(255)), "0x000000ff");
        assert_eq!(peer_name("", None), "?");
    }
}
