//! `bulletin matrix`: the all-pairs tunnel matrix (Pingmesh-style: each row is what one
//! host measured towards each other host) and the VM traffic matrix, from the hosts'
//! latest reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use common::text;
use serde::{Deserialize, Serialize};

use crate::proto::{HostPaths, HostReport, HostVmNames, Tunnel, TunnelPath};

/// One measured direction: `from` probed `to`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Link {
    /// Reporting host.
    pub from: String,
    /// Peer.
    pub to: String,
    /// Health, RTT, loss (`loss_tx_ratio` is from `from` to `to`) and rates, as `from`
    /// measured them.
    #[serde(flatten)]
    pub tunnel: Tunnel,
    /// Which path the tunnel takes, as `from` reported it (none from an older host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<TunnelPath>,
}

/// Traffic between two VMs, summed over the hosts that saw it at its source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmFlow {
    /// Source VM (IP when known, else MAC).
    pub src: String,
    /// Source MAC.
    pub src_mac: String,
    /// Host the source VM is behind.
    pub src_host: String,
    /// Destination VM (IP when known, else MAC).
    pub dst: String,
    /// Destination MAC.
    pub dst_mac: String,
    /// Source VM's libvirt name, when its host knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_name: Option<String>,
    /// Destination VM's libvirt name, when its host knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_name: Option<String>,
    /// Frames.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The matrices of one LAN.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LanMatrix {
    /// LAN name.
    pub lan: String,
    /// Hosts that reported, with the age of their report in ms.
    pub hosts: Vec<(String, u64)>,
    /// Every measured direction.
    pub links: Vec<Link>,
    /// VM pairs, busiest first.
    pub vms: Vec<VmFlow>,
    /// Service addresses, merged over the hosts (see `services.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<crate::web::view::ServiceView>,
}

/// Put each LAN's services in its matrix (a LAN with services but no report yet gets
/// one of its own).
pub fn add_services(m: &mut Vec<LanMatrix>, mut services: crate::services::Overlay) {
    for l in m.iter_mut() {
        l.services = services.remove(&l.lan).unwrap_or_default();
    }
    let mut rest: Vec<_> = services.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    m.extend(rest.into_iter().map(|(lan, services)| LanMatrix {
        lan,
        hosts: Vec::new(),
        links: Vec::new(),
        vms: Vec::new(),
        services,
    }));
}

/// VM names by (LAN, MAC), from every host's libvirt.
pub type Names = std::collections::HashMap<(String, [u8; 6]), String>;

/// Index the hosts' VM names by (LAN, MAC).
pub fn names(all: &[HostVmNames]) -> Names {
    all.iter()
        .flat_map(|h| {
            h.names
                .vms
                .iter()
                .map(|v| ((h.names.lan.clone(), v.mac), v.name.clone()))
        })
        .collect()
}

/// Each tunnel's path by LAN, then (reporting host id, peer host id): a view's lookup per
/// link (40 000 links in a LAN of 200 hosts) allocates nothing.
pub type Paths =
    std::collections::HashMap<String, std::collections::HashMap<(u32, u32), TunnelPath>>;

/// Index the hosts' paths by LAN, host and peer.
pub fn paths(all: &[HostPaths]) -> Paths {
    let mut m = Paths::new();
    for h in all {
        let lan = m.entry(h.paths.lan.clone()).or_default();
        for p in &h.paths.peers {
            lan.insert((h.host_id, p.host_id), p.path);
        }
    }
    m
}

/// The path `from` reported for its tunnel to `to` on `lan`.
pub fn path_of(paths: &Paths, lan: &str, from: u32, to: Option<u32>) -> Option<TunnelPath> {
    paths.get(lan)?.get(&(from, to?)).copied()
}

/// Group the reports by LAN, VMs named where a host's libvirt knows them, each tunnel
/// with its path where its host reported one.
pub fn build(reports: &[HostReport], names: &Names, paths: &Paths) -> Vec<LanMatrix> {
    let mut by_lan: BTreeMap<&str, Vec<&HostReport>> = BTreeMap::new();
    for r in reports {
        by_lan.entry(r.report.lan.as_str()).or_default().push(r);
    }
    by_lan
        .into_iter()
        .map(|(lan, rs)| {
            let mut links = Vec::new();
            let mut vms = Vec::new();
            for r in &rs {
                for p in &r.report.peers {
                    links.push(Link {
                        from: r.name.clone(),
                        to: if p.name.is_empty() {
                            p.host_id.map_or("?".into(), |i| format!("{i:#010x}"))
                        } else {
                            p.name.clone()
                        },
                        tunnel: p.tunnel.clone(),
                        path: path_of(paths, lan, r.host_id, p.host_id),
                    });
                }
                for q in &r.report.pairs {
                    let name = |m: &[u8; 6]| names.get(&(lan.to_string(), *m)).cloned();
                    vms.push(VmFlow {
                        src: q
                            .src_ip
                            .map_or_else(|| text::mac(&q.src_mac), |i| i.to_string()),
                        src_mac: text::mac(&q.src_mac),
                        src_host: r.name.clone(),
                        dst: q
                            .dst_ip
                            .map_or_else(|| text::mac(&q.dst_mac), |i| i.to_string()),
                        dst_mac: text::mac(&q.dst_mac),
                        src_name: name(&q.src_mac),
                        dst_name: name(&q.dst_mac),
                        packets: q.packets,
                        bytes: q.bytes,
                    });
                }
            }
            vms.sort_by_key(|v| std::cmp::Reverse(v.bytes));
            LanMatrix {
                lan: lan.to_string(),
                hosts: rs.iter().map(|r| (r.name.clone(), r.age_ms)).collect(),
                links,
                vms,
                services: Vec::new(),
            }
        })
        .collect()
}

fn ms(us: Option<u64>) -> String {
    us.map_or("-".into(), |u| format!("{:.2}", u as f64 / 1000.0))
}

/// Tables for people: per LAN, an RTT grid (p50 in ms), a loss grid (loss from row to
/// column, %), then the VM pairs.
pub fn render(m: &[LanMatrix]) -> String {
    let mut o = String::new();
    if m.is_empty() {
        o.push_str("(no reports yet: hosts report every few seconds after registering)\n");
    }
    for l in m {
        let names: Vec<&str> = l.hosts.iter().map(|(n, _)| n.as_str()).collect();
        let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(8);
        let _ = writeln!(
            o,
            "LAN {}  {} hosts reporting (oldest report {:.1}s)",
            l.lan,
            names.len(),
            l.hosts.iter().map(|(_, a)| *a).max().unwrap_or(0) as f64 / 1000.0
        );
        let cell = |from: &str, to: &str| l.links.iter().find(|k| k.from == from && k.to == to);
        type Grid<'a> = (&'a str, &'a dyn Fn(&Link) -> String);
        let mut grids: Vec<Grid<'_>> = vec![
            ("RTT p50 (ms), row -> column", &|k: &Link| {
                ms(k.tunnel.rtt_p50_us)
            }),
            ("loss row -> column (%)", &|k: &Link| {
                format!("{:.2}", k.tunnel.loss_tx_ratio * 100.0)
            }),
        ];
        // Where some host is reached through a NAT: how each row reaches each column.
        if l.links
            .iter()
            .any(|k| k.path.is_some_and(|p| p != TunnelPath::Direct))
        {
            grids.push(("path row -> column", &|k: &Link| {
                k.path.map_or("?", TunnelPath::as_str).to_string()
            }));
        }
        for (title, f) in grids {
            let _ = write!(o, "  {title}\n  {:<w$}", "");
            for n in &names {
                let _ = write!(o, " {n:>w$}");
            }
            o.push('\n');
            for from in &names {
                let _ = write!(o, "  {from:<w$}");
                for to in &names {
                    let c = if from == to {
                        ".".to_string()
                    } else {
                        cell(from, to).map_or("?".into(), |k| {
                            if k.tunnel.health == "down" {
                                "down".into()
                            } else {
                                f(k)
                            }
                        })
                    };
                    let _ = write!(o, " {c:>w$}");
                }
                o.push('\n');
            }
        }
        if !l.vms.is_empty() {
            let _ = writeln!(o, "  VM traffic (counted at the source host)");
            let _ = writeln!(
                o,
                "    {:<26} {:<12} {:<26} {:>9} {:>9}",
                "FROM", "HOST", "TO", "PKTS", "BYTES"
            );
            // A VM libvirt names shows as "name (address)".
            let who = |name: &Option<String>, addr: &str| match name {
                Some(n) => format!("{n} ({addr})"),
                None => addr.to_string(),
            };
            for v in &l.vms {
                let _ = writeln!(
                    o,
                    "    {:<26} {:<12} {:<26} {:>9} {:>8}B",
                    who(&v.src_name, &v.src),
                    v.src_host,
                    who(&v.dst_name, &v.dst),
                    text::human(v.packets),
                    text::human(v.bytes)
                );
            }
        }
        for s in &l.services {
            let _ = writeln!(
                o,
                "  service {} at {} ({}): {} of {} backends up",
                s.service,
                s.address,
                s.policy,
                s.backends_up,
                s.backends.len()
            );
            let _ = writeln!(
                o,
                "    {:<20} {:<7} {:<12} {:>6} {:>12} {:>5} {:>9} {:>9}",
                "BACKEND", "STATE", "HOST", "WEIGHT", "LOAD", "OPEN", "FLOWS", "SHARE/1m"
            );
            for b in &s.backends {
                let _ = writeln!(
                    o,
                    "    {:<20} {:<7} {:<12} {:>6} {:>12} {:>5} {:>9} {:>9}",
                    b.backend,
                    b.state,
                    b.location,
                    b.weight,
                    format!("{:.1} Mbit/s", b.load_mbps),
                    b.open_connections,
                    b.flows_total,
                    format!("{:.0} %", b.share_last_minute * 100.0)
                );
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{LanReport, PairReport, PeerReport, Tunnel};

    fn peer(name: &str, p50: u64, loss: f64, health: &str) -> PeerReport {
        PeerReport {
            host_id: Some(1),
            name: name.into(),
            tunnel: Tunnel {
                health: health.into(),
                rtt_p50_us: Some(p50),
                rtt_p99_us: Some(p50 * 2),
                loss_tx_ratio: loss,
                loss_rx_ratio: 0.0,
                tx_rate_bps: 0,
                rx_rate_bps: 0,
            },
        }
    }

    #[test]
    fn grids_and_vm_pairs() {
        let reports = vec![
            HostReport {
                host_id: 1,
                name: "h1".into(),
                age_ms: 500,
                report: LanReport {
                    lan: "lan1".into(),
                    peers: vec![
                        peer("h2", 20_400, 0.05, "degraded"),
                        peer("h3", 300, 0.0, "down"),
                    ],
                    pairs: vec![PairReport {
                        src_mac: [2, 0, 0, 0, 0, 1],
                        src_ip: Some([10, 0, 0, 1].into()),
                        dst_mac: [2, 0, 0, 0, 0, 2],
                        dst_ip: None,
                        packets: 1500,
                        bytes: 2_000_000,
                    }],
                },
            },
            HostReport {
                host_id: 2,
                name: "h2".into(),
                age_ms: 2500,
                report: LanReport {
                    lan: "lan1".into(),
                    peers: vec![peer("h1", 20_500, 0.0, "ok")],
                    pairs: Vec::new(),
                },
            },
        ];
        let m = build(&reports, &Names::new(), &Paths::new());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].vms[0].src_name, None);
        assert_eq!(m[0].links.len(), 3);
        let t = render(&m);
        for want in [
            "2 hosts reporting (oldest report 2.5s)",
            "20.40",
            "20.50",
            "5.00",
            "10.0.0.1",
            "02:00:00:00:00:02",
            "2.0MB",
        ] {
            assert!(t.contains(want), "{want} missing:\n{t}");
        }
        // h3 did not report, so it has no row or column; h2 -> h1 loss is 0.
        assert!(!t.contains("h3 "), "{t}");
        // No host reported a path through a NAT: no path grid.
        assert!(!t.contains("path row"), "{t}");
        assert!(render(&[]).contains("no reports yet"));
        // Named by the hosts' libvirt: the pair shows the names, on that LAN only.
        let names = names(&[crate::proto::HostVmNames {
            host_id: 1,
            name: "h1".into(),
            names: crate::proto::LanVmNames {
                lan: "lan1".into(),
                vms: vec![crate::proto::VmName {
                    mac: [2, 0, 0, 0, 0, 1],
                    name: "web1".into(),
                    uuid: None,
                }],
            },
        }]);
        let m = build(&reports, &names, &Paths::new());
        let v = &m[0].vms[0];
        assert_eq!(
            (v.src_name.as_deref(), v.dst_name.as_deref()),
            (Some("web1"), None)
        );
        let t = render(&m);
        assert!(t.contains("web1 (10.0.0.1)"), "{t}");
        let json = serde_json::to_value(v).unwrap_or_default();
        assert_eq!(json["src_name"], "web1");
        assert!(json.get("dst_name").is_none(), "unnamed: no key: {json}");
    }

    #[test]
    fn paths_show_per_tunnel_and_as_a_grid_once_a_nat_is_crossed() {
        use crate::proto::{LanPaths, PeerPath};
        let with_id = |id, name| PeerReport {
            host_id: Some(id),
            ..peer(name, 400, 0.0, "ok")
        };
        let report = |id, name: &str, peers| HostReport {
            host_id: id,
            name: name.into(),
            age_ms: 0,
            report: LanReport {
                lan: "lan1".into(),
                peers,
                pairs: Vec::new(),
            },
        };
        let reports = vec![
            report(1, "h1", vec![with_id(2, "h2")]),
            report(2, "h2", vec![with_id(1, "h1")]),
        ];
        let paths = paths(&[crate::proto::HostPaths {
            host_id: 1,
            name: "h1".into(),
            paths: LanPaths {
                lan: "lan1".into(),
                peers: vec![PeerPath {
                    host_id: 2,
                    path: TunnelPath::Punched,
                    open_ms: Some(2),
                }],
            },
        }]);
        let m = build(&reports, &Names::new(), &paths);
        let link = |from: &str| m[0].links.iter().find(|k| k.from == from).cloned();
        assert_eq!(link("h1").and_then(|k| k.path), Some(TunnelPath::Punched));
        // h2 reported no paths (an older vmvpn): unknown, not direct.
        assert_eq!(link("h2").and_then(|k| k.path), None);
        let json = serde_json::to_value(link("h1")).unwrap_or_default();
        assert_eq!(json["path"], "punched", "{json}");
        let t = render(&m);
        assert!(t.contains("path row -> column"), "{t}");
        let row = t
            .lines()
            .skip_while(|l| !l.contains("path row"))
            // h1's row, not the header: the row holds the diagonal's dot.
            .find(|l| l.trim_start().starts_with("h1") && l.contains('.'))
            .unwrap_or_default();
        assert!(row.contains("punched"), "{t}");
    }
}
