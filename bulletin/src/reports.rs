//! The telemetry hosts report: the latest report per (LAN, host), kept only while the host
//! is registered in that LAN. Sans-IO: the server feeds it and asks it; `now` is an argument.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::proto::{
    HostAlerts, HostPaths, HostReport, HostServices, HostVmNames, LanAlerts, LanPaths, LanReport,
    LanServices, LanVmNames, PeerPath, ServiceReport,
};

/// Peers and pairs kept per report (a host reports its busiest pairs first).
pub const MAX_PEERS: usize = 1024;
/// VM pairs kept per report.
pub const MAX_PAIRS: usize = 256;
/// Alerts kept per host and LAN.
pub const MAX_ALERTS: usize = 256;
/// VM names kept per host and LAN (as many as the pairs a report holds).
pub const MAX_NAMES: usize = 256;
/// Characters kept of a VM name or UUID (libvirt allows long names; views need short).
pub const MAX_NAME_LEN: usize = 128;
/// Services kept per host and LAN.
pub const MAX_SERVICES: usize = 64;
/// Backends kept per service (a service has at most 256).
pub const MAX_BACKENDS: usize = 256;

/// Latest reports.
#[derive(Default)]
pub struct Reports {
    latest: HashMap<(String, u32), Kept>,
    /// Reports stored so far: numbers each one, so a reader can tell a new one.
    count: u64,
    /// Each host's VM names per LAN (`VmNames`), kept and pruned with its reports.
    names: PerHost<crate::proto::VmName>,
    /// Each host's services per LAN (`Services`), kept and pruned with its reports.
    services: PerHost<ServiceReport>,
    /// Each host's path to each peer per LAN (`Paths`), kept and pruned with its reports.
    paths: PerHost<PeerPath>,
}

/// What each host last said of each of its LANs (its VM names, its services), with the
/// host's name: the latest replaces the one before.
struct PerHost<T>(HashMap<(String, u32), (String, Vec<T>)>);

impl<T> Default for PerHost<T> {
    fn default() -> Self {
        PerHost(HashMap::new())
    }
}

impl<T: Clone> PerHost<T> {
    /// Keep `lans` (LAN, items) from host `host_id` named `name`: LANs it is not a member
    /// of left out, at most `cap` items each, each item made safe to keep by `clip`. How
    /// many LANs were kept.
    fn put(
        &mut self,
        host_id: u32,
        name: &str,
        lans: impl Iterator<Item = (String, Vec<T>)>,
        member: impl Fn(&str) -> bool,
        cap: usize,
        clip: impl Fn(&mut T),
    ) -> usize {
        let mut kept = 0;
        for (lan, mut items) in lans {
            if !member(&lan) {
                continue;
            }
            items.truncate(cap);
            items.iter_mut().for_each(&clip);
            self.0.insert((lan, host_id), (name.to_string(), items));
            kept += 1;
        }
        kept
    }

    /// Of one LAN or all, each host's as `make(lan, host id, host name, items)` makes it,
    /// ordered by LAN then host name.
    fn list<V>(
        &self,
        lan: Option<&str>,
        make: impl Fn(String, u32, String, Vec<T>) -> V,
    ) -> Vec<V> {
        let mut v: Vec<(&String, &String, u32, &Vec<T>)> = self
            .0
            .iter()
            .filter(|((l, _), _)| lan.is_none_or(|x| x == l))
            .map(|((l, id), (name, items))| (l, name, *id, items))
            .collect();
        v.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        v.into_iter()
            .map(|(l, name, id, items)| make(l.clone(), id, name.clone(), items.clone()))
            .collect()
    }

    fn retain(&mut self, member: impl Fn(&str, u32) -> bool) {
        self.0.retain(|(lan, id), _| member(lan, *id));
    }
}

/// Cut `s` to [`MAX_NAME_LEN`] characters.
fn clip(s: &mut String) {
    if let Some((i, _)) = s.char_indices().nth(MAX_NAME_LEN) {
        s.truncate(i);
    }
}

struct Kept {
    at: Instant,
    /// Time since the report before it from the same host and LAN.
    interval: Option<std::time::Duration>,
    seq: u64,
    name: String,
    /// Shared with the dashboard's input, which takes every report once a second.
    report: Arc<LanReport>,
}

/// A report as the dashboard reads it: [`HostReport`] with the report shared, not copied.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedReport {
    /// Reporting host's id.
    pub host_id: u32,
    /// Reporting host's name.
    pub name: String,
    /// Age of the report.
    pub age_ms: u64,
    /// The report.
    pub report: Arc<LanReport>,
}

/// A stored report with what the dashboard needs besides: how often this host reports
/// (to tell an overdue report) and its number (to tell a new one).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReport {
    /// The report, as `Matrix` returns it (shared).
    pub host: SharedReport,
    /// Time between this host's last two reports on this LAN, ms.
    pub interval_ms: Option<u64>,
    /// Number of this report: larger for a later one.
    pub seq: u64,
}

impl Reports {
    /// Store a host's reports; LANs it is not a member of (`member` says) are ignored.
    /// Returns how many LAN reports were kept.
    pub fn put(
        &mut self,
        host_id: u32,
        name: &str,
        reports: Vec<LanReport>,
        member: impl Fn(&str) -> bool,
        now: Instant,
    ) -> usize {
        let mut kept = 0;
        for mut r in reports {
            if !member(&r.lan) {
                continue;
            }
            r.peers.truncate(MAX_PEERS);
            r.pairs.truncate(MAX_PAIRS);
            self.count += 1;
            let key = (r.lan.clone(), host_id);
            let interval = self
                .latest
                .get(&key)
                .map(|k| now.saturating_duration_since(k.at));
            self.latest.insert(
                key,
                Kept {
                    at: now,
                    interval,
                    seq: self.count,
                    name: name.to_string(),
                    report: Arc::new(r),
                },
            );
            kept += 1;
        }
        kept
    }

    /// Forget reports and VM names of hosts no longer in their LAN.
    pub fn retain(&mut self, member: impl Fn(&str, u32) -> bool) {
        self.latest.retain(|(lan, id), _| member(lan, *id));
        self.names.retain(&member);
        self.services.retain(&member);
        self.paths.retain(&member);
    }

    /// Store a host's paths (replacing its previous ones on each LAN named); LANs it is
    /// not a member of are ignored. Returns how many LANs were kept.
    pub fn put_paths(
        &mut self,
        host_id: u32,
        name: &str,
        lans: Vec<LanPaths>,
        member: impl Fn(&str) -> bool,
    ) -> usize {
        let lans = lans.into_iter().map(|l| (l.lan, l.peers));
        self.paths
            .put(host_id, name, lans, member, MAX_PEERS, |_| {})
    }

    /// Paths of one LAN or all, ordered by LAN then host name.
    pub fn paths(&self, lan: Option<&str>) -> Vec<HostPaths> {
        self.paths.list(lan, |lan, host_id, name, peers| HostPaths {
            host_id,
            name,
            paths: LanPaths { lan, peers },
        })
    }

    /// Store a host's services (replacing its previous ones on each LAN named); LANs it
    /// is not a member of are ignored. Returns how many LANs were kept.
    pub fn put_services(
        &mut self,
        host_id: u32,
        name: &str,
        lans: Vec<LanServices>,
        member: impl Fn(&str) -> bool,
    ) -> usize {
        let lans = lans.into_iter().map(|l| (l.lan, l.services));
        self.services
            .put(host_id, name, lans, member, MAX_SERVICES, |s| {
                s.backends.truncate(MAX_BACKENDS);
                for t in [&mut s.name, &mut s.address, &mut s.policy] {
                    clip(t);
                }
                for b in &mut s.backends {
                    for t in [&mut b.backend, &mut b.state, &mut b.location] {
                        clip(t);
                    }
                }
            })
    }

    /// Services of one LAN or all, ordered by LAN then host name.
    pub fn services(&self, lan: Option<&str>) -> Vec<HostServices> {
        self.services
            .list(lan, |lan, host_id, name, services| HostServices {
                host_id,
                name,
                services: LanServices { lan, services },
            })
    }

    /// Store a host's VM names (replacing its previous ones on each LAN named); LANs it
    /// is not a member of are ignored. Returns how many LANs were kept.
    pub fn put_names(
        &mut self,
        host_id: u32,
        name: &str,
        lans: Vec<LanVmNames>,
        member: impl Fn(&str) -> bool,
    ) -> usize {
        let lans = lans.into_iter().map(|l| (l.lan, l.vms));
        self.names.put(host_id, name, lans, member, MAX_NAMES, |v| {
            clip(&mut v.name);
            if let Some(u) = v.uuid.as_mut() {
                clip(u);
            }
        })
    }

    /// VM names of one LAN or all, ordered by LAN then host name.
    pub fn names(&self, lan: Option<&str>) -> Vec<HostVmNames> {
        self.names.list(lan, |lan, host_id, name, vms| HostVmNames {
            host_id,
            name,
            names: LanVmNames { lan, vms },
        })
    }

    /// Reports of one LAN or all, ordered by LAN then host name.
    pub fn matrix(&self, lan: Option<&str>, now: Instant) -> Vec<HostReport> {
        let mut v: Vec<HostReport> = self
            .latest
            .iter()
            .filter(|((l, _), _)| lan.is_none_or(|x| x == l))
            .map(|((_, id), k)| HostReport {
                host_id: *id,
                name: k.name.clone(),
                age_ms: now.saturating_duration_since(k.at).as_millis() as u64,
                report: (*k.report).clone(),
            })
            .collect();
        v.sort_by(|a, b| (&a.report.lan, &a.name).cmp(&(&b.report.lan, &b.name)));
        v
    }

    /// Every report with its interval and number, ordered as [`Reports::matrix`].
    pub fn stored(&self, now: Instant) -> Vec<StoredReport> {
        let mut v: Vec<StoredReport> = self
            .latest
            .iter()
            .map(|((_, id), k)| StoredReport {
                host: SharedReport {
                    host_id: *id,
                    name: k.name.clone(),
                    age_ms: now.saturating_duration_since(k.at).as_millis() as u64,
                    report: k.report.clone(),
                },
                interval_ms: k.interval.map(|d| d.as_millis() as u64),
                seq: k.seq,
            })
            .collect();
        v.sort_by(|a, b| {
            (&a.host.report.lan, &a.host.name).cmp(&(&b.host.report.lan, &b.host.name))
        });
        v
    }

    /// Reports held.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// No reports held.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// Latest alerts, per (LAN, host), kept like the reports.
#[derive(Default)]
pub struct Alerts {
    latest: HashMap<(String, u32), (Instant, String, LanAlerts)>,
}

impl Alerts {
    /// Store a host's alerts; LANs it is not a member of are ignored. A host with no
    /// alerts left on a LAN sends it empty, which clears it.
    pub fn put(
        &mut self,
        host_id: u32,
        name: &str,
        alerts: Vec<LanAlerts>,
        member: impl Fn(&str) -> bool,
        now: Instant,
    ) -> usize {
        let mut kept = 0;
        for mut a in alerts.into_iter().filter(|a| member(&a.lan)) {
            a.alerts.truncate(MAX_ALERTS);
            self.latest
                .insert((a.lan.clone(), host_id), (now, name.to_string(), a));
            kept += 1;
        }
        kept
    }

    /// Forget alerts of hosts no longer in their LAN.
    pub fn retain(&mut self, member: impl Fn(&str, u32) -> bool) {
        self.latest.retain(|(lan, id), _| member(lan, *id));
    }

    /// Alerts of one LAN or all, by LAN then host name; hosts with none left out.
    pub fn list(&self, lan: Option<&str>, now: Instant) -> Vec<HostAlerts> {
        let mut v: Vec<HostAlerts> = self
            .latest
            .iter()
            .filter(|((l, _), (_, _, a))| lan.is_none_or(|x| x == l) && !a.alerts.is_empty())
            .map(|((_, id), (at, name, a))| HostAlerts {
                host_id: *id,
                name: name.clone(),
                age_ms: now.saturating_duration_since(*at).as_millis() as u64,
                alerts: a.clone(),
            })
            .collect();
        v.sort_by(|a, b| (&a.alerts.lan, &a.name).cmp(&(&b.alerts.lan, &b.name)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lan: &str) -> LanReport {
        LanReport {
            lan: lan.into(),
            peers: Vec::new(),
            pairs: Vec::new(),
        }
    }

    #[test]
    fn latest_report_per_lan_and_host_members_only() {
        let mut r = Reports::default();
        let t0 = Instant::now();
        let kept = r.put(1, "h1", vec![report("a"), report("b")], |l| l == "a", t0);
        assert_eq!(kept, 1, "h1 is not in LAN b");
        r.put(2, "h2", vec![report("a")], |_| true, t0);
        let mut newer = report("a");
        newer.peers.push(crate::proto::PeerReport {
            host_id: Some(2),
            name: "h2".into(),
            tunnel: crate::proto::Tunnel {
                health: "ok".into(),
                rtt_p50_us: Some(1),
                rtt_p99_us: Some(2),
                loss_tx_ratio: 0.0,
                loss_rx_ratio: 0.0,
                tx_rate_bps: 0,
                rx_rate_bps: 0,
            },
        });
        let t1 = t0 + std::time::Duration::from_secs(3);
        r.put(1, "h1", vec![newer], |_| true, t1);
        let m = r.matrix(Some("a"), t1);
        assert_eq!(m.len(), 2);
        let s = r.stored(t1);
        assert_eq!(
            s.iter()
                .map(|x| (x.host.name.as_str(), x.interval_ms, x.seq))
                .collect::<Vec<_>>(),
            vec![("h1", Some(3000), 3), ("h2", None, 2)],
            "h1 reported twice, 3 s apart; every report has a new number"
        );
        assert_eq!(
            (m[0].name.as_str(), m[0].report.peers.len(), m[0].age_ms),
            ("h1", 1, 0)
        );
        assert_eq!((m[1].name.as_str(), m[1].age_ms), ("h2", 3000));
        assert!(r.matrix(Some("b"), t1).is_empty());
        // h2 left LAN a.
        r.retain(|_, id| id != 2);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn services_per_lan_and_host_members_only_clipped_capped_and_pruned() {
        use crate::proto::{ServiceBackendReport, ServiceReport};
        let service = |name: &str, backends: usize| ServiceReport {
            name: name.into(),
            address: "192.168.1.200".into(),
            policy: "hash".into(),
            no_backend_frames_total: 0,
            backends: (0..backends)
                .map(|i| ServiceBackendReport {
                    backend: format!("web{i}"),
                    state: "up".into(),
                    local: false,
                    location: "h9".into(),
                    weight: 1,
                    load_mbps: 0.0,
                    open_connections: 0,
                    rtt_ms: 0.0,
                    flows_total: 0,
                    active_flows: 0,
                    new_flows_last_minute: 0,
                })
                .collect(),
        };
        let lan = |l: &str, s: Vec<ServiceReport>| LanServices {
            lan: l.into(),
            services: s,
        };
        let mut r = Reports::default();
        let long = "x".repeat(MAX_NAME_LEN + 50);
        let kept = r.put_services(
            1,
            "h1",
            vec![
                lan("a", vec![service(&long, MAX_BACKENDS + 5)]),
                lan("b", vec![service("db", 1)]),
            ],
            |l| l == "a",
        );
        assert_eq!(kept, 1, "h1 is not in LAN b");
        r.put_services(2, "h2", vec![lan("a", vec![service("web", 1)])], |_| true);
        let v = r.services(Some("a"));
        assert_eq!(
            v.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["h1", "h2"]
        );
        let s = &v[0].services.services[0];
        assert_eq!(s.name.chars().count(), MAX_NAME_LEN);
        assert_eq!(s.backends.len(), MAX_BACKENDS);
        let many: Vec<ServiceReport> = (0..MAX_SERVICES + 3)
            .map(|i| service(&format!("s{i}"), 1))
            .collect();
        r.put_services(3, "h3", vec![lan("c", many)], |_| true);
        assert_eq!(
            r.services(Some("c"))[0].services.services.len(),
            MAX_SERVICES
        );
        // A host that left the LAN takes its services along.
        r.retain(|_, id| id != 2);
        assert_eq!(r.services(Some("a")).len(), 1);
    }

    #[test]
    fn vm_names_per_lan_and_host_members_only_clipped_and_pruned() {
        let lan = |l: &str, names: &[&str]| LanVmNames {
            lan: l.into(),
            vms: names
                .iter()
                .enumerate()
                .map(|(i, n)| crate::proto::VmName {
                    mac: [2, 0, 0, 0, 0, i as u8],
                    name: n.to_string(),
                    uuid: None,
                })
                .collect(),
        };
        let mut r = Reports::default();
        let long = "x".repeat(MAX_NAME_LEN + 50);
        let kept = r.put_names(
            1,
            "h1",
            vec![lan("a", &["web1", &long]), lan("b", &["db1"])],
            |l| l == "a",
        );
        assert_eq!(kept, 1, "h1 is not in LAN b");
        r.put_names(2, "h2", vec![lan("a", &["db2"])], |_| true);
        let n = r.names(Some("a"));
        assert_eq!(
            n.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["h1", "h2"]
        );
        assert_eq!(n[0].names.vms[0].name, "web1");
        assert_eq!(n[0].names.vms[1].name.chars().count(), MAX_NAME_LEN);
        // The latest replaces; a host that left the LAN takes its names along.
        r.put_names(1, "h1", vec![lan("a", &["web9"])], |_| true);
        assert_eq!(r.names(Some("a"))[0].names.vms.len(), 1);
        r.retain(|_, id| id != 2);
        assert_eq!(r.names(None).len(), 1);
        let many: Vec<String> = (0..MAX_NAMES + 10).map(|i| format!("vm{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        r.put_names(3, "h3", vec![lan("c", &many)], |_| true);
        assert_eq!(r.names(Some("c"))[0].names.vms.len(), MAX_NAMES);
    }

    #[test]
    fn paths_per_lan_and_host_members_only_latest_and_pruned() {
        use crate::proto::TunnelPath;
        let lan = |l: &str, path| LanPaths {
            lan: l.into(),
            peers: vec![PeerPath {
                host_id: 9,
                path,
                open_ms: Some(1),
            }],
        };
        let mut r = Reports::default();
        let kept = r.put_paths(
            1,
            "h1",
            vec![lan("a", TunnelPath::Direct), lan("b", TunnelPath::Direct)],
            |l| l == "a",
        );
        assert_eq!(kept, 1, "h1 is not in LAN b");
        r.put_paths(1, "h1", vec![lan("a", TunnelPath::Punched)], |_| true);
        let p = r.paths(Some("a"));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].paths.peers[0].path, TunnelPath::Punched, "the latest");
        r.retain(|_, id| id != 1);
        assert!(r.paths(None).is_empty(), "gone with its host");
    }

    #[test]
    fn latest_alerts_per_lan_and_host_members_only_and_empty_clears() {
        let lan = |l: &str, n: usize| LanAlerts {
            lan: l.into(),
            alerts: (0..n)
                .map(|i| crate::proto::AlertReport {
                    alert: format!("A{i}"),
                    state: "firing".into(),
                    severity: "warning".into(),
                    labels: Vec::new(),
                    summary: String::new(),
                    value: 0.0,
                    since_s: 0,
                })
                .collect(),
        };
        let mut a = Alerts::default();
        let t0 = Instant::now();
        assert_eq!(
            a.put(1, "h1", vec![lan("a", 2), lan("b", 1)], |l| l == "a", t0),
            1
        );
        a.put(2, "h2", vec![lan("a", 1)], |_| true, t0);
        let l = a.list(Some("a"), t0);
        assert_eq!(
            (l.len(), l[0].name.as_str(), l[0].alerts.alerts.len()),
            (2, "h1", 2)
        );
        a.put(1, "h1", vec![lan("a", 0)], |_| true, t0);
        assert_eq!(a.list(None, t0).len(), 1, "h1 has none left");
        a.retain(|_, id| id != 2);
        assert!(a.list(None, t0).is_empty());
        a.put(3, "h3", vec![lan("a", 1000)], |_| true, t0);
        assert_eq!(a.list(None, t0)[0].alerts.alerts.len(), MAX_ALERTS);
    }
}
