//! What one page's event stream sends: a [`Snapshot`] of the LAN it shows, then only what
//! changed ([`Delta`]). Sans-IO: the stream hands each new [`Overview`] to its [`Page`],
//! which remembers what it sent. Ages are not changes (a page works them out from the
//! times it has), so a quiet LAN sends nothing.
//!
//! In a LAN with more than [`EXACT_LINKS`] tunnel directions (over 32 hosts in a full
//! mesh), figures that jitter are sent again only when they move by more than a dead
//! band (RTT and rates 10 %, loss 0.1 point) or the health changes: at 200 hosts every
//! report would otherwise resend 40 000 tunnels, most with an RTT a few µs off. What is
//! sent stays as sent until it moves past the band, so a slow drift still shows.

use std::collections::HashMap;

use crate::web::view::{
    AlertRow, Delta, HistoryInfo, HostView, LanDelta, LanSummary, LanView, LinkView, Overview,
    PairView, ServiceView, Snapshot, SubnetView, VmView,
};

/// Tunnel directions a LAN may have before figures are sent with a dead band.
pub const EXACT_LINKS: usize = 1024;
/// The dead band's relative width for RTT, rates and byte counts.
const BAND: f64 = 0.10;

/// One page's stream.
pub struct Page {
    /// The LAN asked for (`?lan=`), or none for the first (also when it is not there).
    want: Option<String>,
    /// The LAN shown, once a snapshot went out.
    shown: Option<Option<String>>,
    lans: Vec<LanSummary>,
    alerts: Vec<AlertRow>,
    history: Option<HistoryInfo>,
    subnets: Vec<SubnetView>,
    hosts: Keyed<String, HostView>,
    /// Host names of the links, numbered as first met (a LAN's hosts, and peers named
    /// only by id): links are keyed by two numbers, not two strings.
    names: HashMap<String, u32>,
    named: Vec<String>,
    /// (from, to) → the figures sent (no strings: 10 pages of a 200-host LAN hold
    /// 400 000 of these).
    links: HashMap<(u32, u32), (Figures, u64)>,
    pairs: Keyed<[String; 3], PairView>,
    vms: Keyed<String, VmView>,
    services: Vec<ServiceView>,
    /// Counts passes, to find entries a pass did not see.
    pass: u64,
}

/// What was sent, by key, with the pass that last saw it.
type Keyed<K, T> = HashMap<K, (T, u64)>;

/// What a stream sends for one overview.
#[derive(Debug, Clone, PartialEq)]
pub enum Send {
    /// The first event, or the LAN shown changed.
    Snapshot(Box<Snapshot>),
    /// What changed.
    Delta(Box<Delta>),
}

impl Page {
    /// A page showing `lan` (none: the first LAN there is).
    pub fn new(lan: Option<String>) -> Self {
        Page {
            want: lan,
            shown: None,
            lans: Vec::new(),
            alerts: Vec::new(),
            history: None,
            subnets: Vec::new(),
            hosts: HashMap::new(),
            names: HashMap::new(),
            named: Vec::new(),
            links: HashMap::new(),
            pairs: HashMap::new(),
            vms: HashMap::new(),
            services: Vec::new(),
            pass: 0,
        }
    }

    /// What to send for `o`; none when nothing the page shows changed.
    pub fn handle_overview(&mut self, o: &Overview) -> Option<Send> {
        let lan = match &self.want {
            // A LAN that is not (or no longer) there: the first, as a page opened plain.
            Some(w) => o.lans.iter().find(|l| &l.lan == w).or(o.lans.first()),
            None => o.lans.first(),
        };
        let name = lan.map(|l| l.lan.clone());
        let lans: Vec<LanSummary> = o.lans.iter().map(LanSummary::of).collect();
        if self.shown.as_ref() != Some(&name) {
            self.shown = Some(name);
            self.forget();
            self.lans = lans.clone();
            self.alerts = o.alerts.clone();
            self.history = Some(o.history);
            if let Some(l) = lan {
                // Remember it as sent.
                let _ = self.lan_delta(l, false);
            }
            return Some(Send::Snapshot(Box::new(Snapshot {
                scope: o.scope,
                name: o.name.clone(),
                at_ms: o.at_ms,
                history: o.history,
                lans,
                lan: lan.cloned(),
                alerts: o.alerts.clone(),
            })));
        }
        let mut d = Delta {
            at_ms: o.at_ms,
            ..Delta::default()
        };
        if lans != self.lans {
            self.lans = lans.clone();
            d.lans = Some(lans);
        }
        if !same_alerts(&o.alerts, &self.alerts) {
            self.alerts = o.alerts.clone();
            d.alerts = Some(o.alerts.clone());
        }
        if self.history != Some(o.history) {
            self.history = Some(o.history);
            d.history = Some(o.history);
        }
        if let Some(l) = lan {
            let banded = l.links.len() > EXACT_LINKS;
            let ld = self.lan_delta(l, banded);
            if !ld.is_empty() {
                d.lan = Some(ld);
            }
        }
        let empty =
            d.lans.is_none() && d.alerts.is_none() && d.history.is_none() && d.lan.is_none();
        (!empty).then(|| Send::Delta(Box::new(d)))
    }

    fn forget(&mut self) {
        self.subnets.clear();
        self.hosts.clear();
        self.names.clear();
        self.named.clear();
        self.links.clear();
        self.pairs.clear();
        self.vms.clear();
        self.services.clear();
    }

    /// Compare `l` with what was sent, remember what is sent now.
    fn lan_delta(&mut self, l: &LanView, banded: bool) -> LanDelta {
        self.pass += 1;
        let pass = self.pass;
        let mut d = LanDelta::default();
        if l.subnets != self.subnets {
            self.subnets = l.subnets.clone();
            d.subnets = Some(l.subnets.clone());
        }
        d.hosts = upsert(
            &mut self.hosts,
            &l.hosts,
            pass,
            |h| h.name.clone(),
            same_host,
        );
        d.hosts_gone = sweep(&mut self.hosts, pass);
        for k in &l.links {
            let key = (self.number(&k.from), self.number(&k.to));
            let f = Figures::of(k);
            match self.links.get_mut(&key) {
                Some((sent, seen)) => {
                    *seen = pass;
                    if !sent.same(&f, banded) {
                        *sent = f;
                        d.links.push(k.clone());
                    }
                }
                None => {
                    self.links.insert(key, (f, pass));
                    d.links.push(k.clone());
                }
            }
        }
        let named = &self.named;
        self.links.retain(|(from, to), (_, seen)| {
            let keep = *seen == pass;
            if !keep {
                d.links_gone
                    .push([named[*from as usize].clone(), named[*to as usize].clone()]);
            }
            keep
        });
        d.pairs = upsert(&mut self.pairs, &l.pairs, pass, pair_key, |a, b| {
            same_pair(a, b, banded)
        });
        d.pairs_gone = sweep(&mut self.pairs, pass);
        d.vms = upsert(
            &mut self.vms,
            &l.vms,
            pass,
            |v| v.mac.clone(),
            |a, b| same_vm(a, b, banded),
        );
        d.vms_gone = sweep(&mut self.vms, pass);
        if l.services != self.services {
            self.services = l.services.clone();
            d.services = Some(l.services.clone());
        }
        d
    }
}

impl Page {
    /// The number of host `name` in link keys.
    fn number(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.names.get(name) {
            return n;
        }
        let n = self.named.len() as u32;
        self.names.insert(name.to_string(), n);
        self.named.push(name.to_string());
        n
    }
}

/// What a link showed, without its names.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Figures {
    /// The health word (at most 8 bytes: "ok", "degraded", "down", "unknown").
    health: [u8; 8],
    p50: Option<u64>,
    p99: Option<u64>,
    loss_tx: f64,
    loss_rx: f64,
    tx: u64,
    rx: u64,
    path: Option<crate::proto::TunnelPath>,
}

impl Figures {
    fn of(k: &LinkView) -> Self {
        let t = &k.tunnel;
        let mut health = [0u8; 8];
        for (d, s) in health.iter_mut().zip(t.health.bytes()) {
            *d = s;
        }
        Figures {
            health,
            p50: t.rtt_p50_us,
            p99: t.rtt_p99_us,
            loss_tx: t.loss_tx_ratio,
            loss_rx: t.loss_rx_ratio,
            tx: t.tx_rate_bps,
            rx: t.rx_rate_bps,
            path: k.path,
        }
    }

    fn same(&self, b: &Figures, banded: bool) -> bool {
        if !banded {
            return self == b;
        }
        self.health == b.health
            && self.path == b.path
            && near_opt(self.p50, b.p50, 20.0)
            && near_opt(self.p99, b.p99, 20.0)
            && (self.loss_tx - b.loss_tx).abs() <= 0.001
            && (self.loss_rx - b.loss_rx).abs() <= 0.001
            && near(self.tx as f64, b.tx as f64, 8000.0)
            && near(self.rx as f64, b.rx as f64, 8000.0)
    }
}

/// `[src_host, src_mac, dst_mac]`, as `pairs_gone` names a pair.
fn pair_key(p: &PairView) -> [String; 3] {
    [
        p.flow.src_host.clone(),
        p.flow.src_mac.clone(),
        p.flow.dst_mac.clone(),
    ]
}

/// Entries of `now` not sent or changed past `same`; marks every entry seen in `pass`.
fn upsert<K: std::hash::Hash + Eq, T: Clone>(
    sent: &mut Keyed<K, T>,
    now: &[T],
    pass: u64,
    key: impl Fn(&T) -> K,
    same: impl Fn(&T, &T) -> bool,
) -> Vec<T> {
    let mut out = Vec::new();
    for x in now {
        let k = key(x);
        match sent.get_mut(&k) {
            Some((s, seen)) => {
                *seen = pass;
                if !same(s, x) {
                    *s = x.clone();
                    out.push(x.clone());
                }
            }
            None => {
                sent.insert(k, (x.clone(), pass));
                out.push(x.clone());
            }
        }
    }
    out
}

/// Keys not seen in `pass`, removed.
fn sweep<K: std::hash::Hash + Eq + Clone, T>(sent: &mut Keyed<K, T>, pass: u64) -> Vec<K> {
    let gone: Vec<K> = sent
        .iter()
        .filter(|(_, (_, seen))| *seen != pass)
        .map(|(k, _)| k.clone())
        .collect();
    for k in &gone {
        sent.remove(k);
    }
    gone
}

fn same_host(a: &HostView, b: &HostView) -> bool {
    a.id == b.id
        && a.underlay == b.underlay
        && a.subnet == b.subnet
        && a.state == b.state
        && a.forwarder == b.forwarder
        // A report arriving is not news; starting or stopping to report is.
        && a.reported_at_ms.is_some() == b.reported_at_ms.is_some()
}

/// Within the band of each other (relative to the larger, at least `floor`).
fn near(a: f64, b: f64, floor: f64) -> bool {
    (a - b).abs() <= (BAND * a.abs().max(b.abs())).max(floor)
}

fn near_opt(a: Option<u64>, b: Option<u64>, floor: f64) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => near(x as f64, y as f64, floor),
        (None, None) => true,
        _ => false,
    }
}

fn same_pair(a: &PairView, b: &PairView, banded: bool) -> bool {
    if !banded {
        return a == b;
    }
    let (f, g) = (&a.flow, &b.flow);
    f.src == g.src
        && f.dst == g.dst
        && near_opt(a.rate_bps, b.rate_bps, 8000.0)
        && near(f.bytes as f64, g.bytes as f64, 0.0)
}

fn same_vm(a: &VmView, b: &VmView, banded: bool) -> bool {
    if !banded {
        return a == b;
    }
    a.ip == b.ip
        && a.host == b.host
        && near(a.tx_rate_bps as f64, b.tx_rate_bps as f64, 8000.0)
        && near(a.rx_rate_bps as f64, b.rx_rate_bps as f64, 8000.0)
        && match (a.peak_to_mean, b.peak_to_mean) {
            (Some(x), Some(y)) => (x - y).abs() <= 0.1,
            (x, y) => x.is_none() == y.is_none(),
        }
}

/// The same alerts, in the same states, whatever their age.
fn same_alerts(a: &[AlertRow], b: &[AlertRow]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.lan == y.lan
                && x.host == y.host
                && x.alert.alert == y.alert.alert
                && x.alert.state == y.alert.state
                && x.alert.severity == y.alert.severity
                && x.alert.labels == y.alert.labels
                && x.alert.summary == y.alert.summary
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Tunnel;
    use crate::web::view::{HostState, Scope};

    fn host(name: &str, state: HostState, at: u64) -> HostView {
        HostView {
            name: name.into(),
            id: Some(1),
            underlay: "10.0.0.1".into(),
            subnet: "10.0.0.0/24".into(),
            state,
            forwarder: false,
            report_age_ms: Some(10),
            reported_at_ms: Some(at),
        }
    }

    fn link(from: &str, to: &str, p50: u64) -> LinkView {
        LinkView {
            from: from.into(),
            to: to.into(),
            tunnel: Tunnel {
                health: "ok".into(),
                rtt_p50_us: Some(p50),
                rtt_p99_us: Some(2 * p50),
                loss_tx_ratio: 0.0,
                loss_rx_ratio: 0.0,
                tx_rate_bps: 1000,
                rx_rate_bps: 1000,
            },
            path: None,
        }
    }

    fn overview(lans: Vec<LanView>, at: u64) -> Overview {
        Overview {
            scope: Scope::Overlay,
            name: "b".into(),
            at_ms: at,
            history: HistoryInfo {
                points: 10,
                step_ms: 1000,
            },
            lans,
            alerts: Vec::new(),
        }
    }

    fn lan(name: &str, hosts: usize, p50: u64, at: u64) -> LanView {
        let names: Vec<String> = (0..hosts).map(|i| format!("h{i}")).collect();
        LanView {
            lan: name.into(),
            subnets: Vec::new(),
            hosts: names.iter().map(|n| host(n, HostState::Up, at)).collect(),
            links: names
                .iter()
                .flat_map(|a| {
                    names
                        .iter()
                        .filter(move |b| *b != a)
                        .map(move |b| link(a, b, p50))
                })
                .collect(),
            pairs: Vec::new(),
            vms: Vec::new(),
            services: Vec::new(),
        }
    }

    fn delta(s: Option<Send>) -> Option<Delta> {
        match s {
            Some(Send::Delta(d)) => Some(*d),
            Some(Send::Snapshot(_)) => panic!("a snapshot where a delta was due"),
            None => None,
        }
    }

    #[test]
    fn a_snapshot_of_the_lan_asked_for_then_only_changes() {
        let mut p = Page::new(Some("b".into()));
        let o = overview(vec![lan("a", 2, 100, 0), lan("b", 3, 100, 0)], 1);
        let Some(Send::Snapshot(s)) = p.handle_overview(&o) else {
            panic!("a snapshot first");
        };
        assert_eq!(s.lan.as_ref().map(|l| l.lan.as_str()), Some("b"));
        assert_eq!(s.lans.len(), 2);
        // The time and the reports' arrival alone: nothing to send.
        let o2 = overview(vec![lan("a", 2, 100, 5), lan("b", 3, 100, 5)], 2);
        assert_eq!(p.handle_overview(&o2), None);
        // One link changes and a host goes down.
        let mut l = lan("b", 3, 100, 5);
        l.links[0].tunnel.rtt_p50_us = Some(101);
        l.hosts[2].state = HostState::Down;
        let d =
            delta(p.handle_overview(&overview(vec![lan("a", 2, 100, 5), l], 3))).expect("a delta");
        let ld = d.lan.expect("the LAN changed");
        assert_eq!(ld.links.len(), 1, "an exact LAN sends every change");
        assert_eq!(ld.hosts.len(), 1);
        assert_eq!(ld.hosts[0].state, HostState::Down);
        assert_eq!(d.lans.map(|l| l[1].down), Some(1));
        // A host leaves: it and its links are named gone.
        let d =
            delta(p.handle_overview(&overview(vec![lan("a", 2, 100, 5), lan("b", 2, 100, 5)], 4)))
                .expect("a delta");
        let ld = d.lan.expect("the LAN changed");
        assert_eq!(ld.hosts_gone, vec!["h2".to_string()]);
        let mut gone = ld.links_gone.clone();
        gone.sort();
        assert_eq!(
            gone,
            vec![
                ["h0".to_string(), "h2".to_string()],
                ["h1".into(), "h2".into()],
                ["h2".into(), "h0".into()],
                ["h2".into(), "h1".into()]
            ]
        );
        // A LAN that is not there: the first is shown.
        let mut r = Page::new(Some("nope".into()));
        assert!(matches!(
            r.handle_overview(&overview(vec![lan("a", 2, 100, 0)], 1)),
            Some(Send::Snapshot(s)) if s.lan.as_ref().is_some_and(|l| l.lan == "a")
        ));
        // No LAN at all, then one: a new snapshot.
        let mut q = Page::new(None);
        assert!(
            matches!(q.handle_overview(&overview(vec![], 1)), Some(Send::Snapshot(s)) if s.lan.is_none())
        );
        assert!(matches!(
            q.handle_overview(&overview(vec![lan("a", 2, 100, 0)], 2)),
            Some(Send::Snapshot(s)) if s.lan.as_ref().is_some_and(|l| l.lan == "a")
        ));
    }

    #[test]
    fn services_are_sent_whole_when_one_changes() {
        use crate::web::view::ServiceBackendView;
        let with = |state: &str| {
            let mut l = lan("a", 2, 100, 0);
            l.services = vec![ServiceView {
                service: "web".into(),
                address: "192.168.1.200".into(),
                policy: "least-load".into(),
                backends_up: usize::from(state == "up"),
                no_backend_frames_total: 0,
                backends: vec![ServiceBackendView {
                    backend: "192.168.1.2".into(),
                    state: state.into(),
                    location: "h1".into(),
                    weight: 1,
                    load_mbps: 0.0,
                    open_connections: 0,
                    rtt_ms: 0.3,
                    flows_total: 0,
                    active_flows: 0,
                    share_last_minute: 0.0,
                }],
            }];
            l
        };
        let mut p = Page::new(None);
        let Some(Send::Snapshot(s)) = p.handle_overview(&overview(vec![with("up")], 1)) else {
            panic!("a snapshot first");
        };
        assert_eq!(s.lan.map(|l| l.services.len()), Some(1));
        assert_eq!(p.handle_overview(&overview(vec![with("up")], 2)), None);
        let d = delta(p.handle_overview(&overview(vec![with("down")], 3))).expect("a delta");
        let sv = d.lan.and_then(|l| l.services).expect("services sent");
        assert_eq!(sv[0].backends[0].state, "down");
    }

    #[test]
    fn a_large_lan_sends_figures_past_the_dead_band_only() {
        let mut p = Page::new(None);
        assert!(matches!(
            p.handle_overview(&overview(vec![lan("a", 40, 1000, 0)], 1)),
            Some(Send::Snapshot(_))
        ));
        // 5 % jitter on every link: nothing.
        assert_eq!(
            p.handle_overview(&overview(vec![lan("a", 40, 1050, 0)], 2)),
            None
        );
        // A slow drift: sent once it is 10 % from what was sent, not from the last view.
        assert_eq!(
            p.handle_overview(&overview(vec![lan("a", 40, 1090, 0)], 3)),
            None
        );
        let d =
            delta(p.handle_overview(&overview(vec![lan("a", 40, 1120, 0)], 4))).expect("a delta");
        assert_eq!(d.lan.map(|l| l.links.len()), Some(40 * 39));
        // A health change is sent at once.
        let mut l = lan("a", 40, 1120, 0);
        l.links[7].tunnel.health = "degraded".into();
        let d = delta(p.handle_overview(&overview(vec![l], 5))).expect("a delta");
        let ld = d.lan.expect("changed");
        assert_eq!(ld.links.len(), 1);
        assert_eq!(d.lans.map(|s| s[0].unhealthy), Some(1));
        // So is a path that becomes known (reported after the tunnel's first figures).
        let mut l = lan("a", 40, 1120, 0);
        l.links[7].tunnel.health = "degraded".into();
        l.links[9].path = Some(crate::proto::TunnelPath::Punched);
        let d = delta(p.handle_overview(&overview(vec![l], 6))).expect("a delta");
        let ld = d.lan.expect("changed");
        assert_eq!(ld.links.len(), 1);
        assert_eq!(ld.links[0].path, Some(crate::proto::TunnelPath::Punched));
    }

    #[test]
    fn a_pair_gone_is_named_by_its_three_keys() {
        let pair = PairView {
            flow: crate::matrix::VmFlow {
                src: "192.168.1.1".into(),
                src_mac: "02:00:00:00:00:01".into(),
                src_host: "h|0".into(),
                dst: "192.168.1.2".into(),
                dst_mac: "02:00:00:00:00:02".into(),
                src_name: None,
                dst_name: None,
                packets: 1,
                bytes: 100,
            },
            rate_bps: Some(800),
        };
        let mut with = lan("a", 2, 100, 0);
        with.pairs = vec![pair];
        let mut p = Page::new(None);
        let _ = p.handle_overview(&overview(vec![with], 1));
        let d = delta(p.handle_overview(&overview(vec![lan("a", 2, 100, 0)], 2))).expect("a delta");
        assert_eq!(
            d.lan.map(|l| l.pairs_gone),
            Some(vec![[
                "h|0".to_string(),
                "02:00:00:00:00:01".into(),
                "02:00:00:00:00:02".into()
            ]]),
            "a host name may hold any character"
        );
    }

    #[test]
    fn alerts_are_sent_when_they_change_not_as_they_age() {
        use crate::proto::AlertReport;
        let row = |since_s, state: &str| AlertRow {
            lan: "a".into(),
            host: "h0".into(),
            alert: AlertReport {
                alert: "VmvpnPeerDown".into(),
                state: state.into(),
                severity: "critical".into(),
                labels: Vec::new(),
                summary: "down".into(),
                value: 1.0,
                since_s,
            },
        };
        let mut p = Page::new(None);
        let mut o = overview(vec![lan("a", 2, 100, 0)], 1);
        let _ = p.handle_overview(&o);
        o.alerts = vec![row(1, "pending")];
        assert!(delta(p.handle_overview(&o)).is_some_and(|d| d.alerts.is_some()));
        o.alerts = vec![row(2, "pending")];
        assert_eq!(p.handle_overview(&o), None);
        o.alerts = vec![row(3, "firing")];
        assert!(delta(p.handle_overview(&o)).is_some_and(|d| d.alerts.is_some()));
    }
}
