//! The bulletin's state as one whole, sans-IO: the registry (hosts, LANs, leases) and
//! what hosts say of their LANs (reports, alerts, VM names, services). It keeps them
//! consistent itself: what a host says of a LAN is kept only while it is a member, and
//! every call that can end a membership (unregister, expiry, re-registration, a LAN no
//! longer served) drops what that host said there before it returns. A reader never sees
//! a host that left, without pruning anything itself.
//!
//! The server holds one `Board` behind its mutex and owns none of this logic; this is
//! also the seam where shared storage (several bulletins on one store) would go.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::proof::Verifier;
use crate::proto::{LanAlerts, LanPaths, LanReport, LanServices, LanVmNames, Register};
use crate::registry::{ConnId, Outbound, Refusal, Registry};
use crate::reports::{Alerts, Reports};
use crate::store::{SharedHost, SharedSaid};

/// The registry and what its hosts said, kept consistent.
pub struct Board {
    registry: Registry,
    reports: Reports,
    alerts: Alerts,
}

/// What a host said of its LANs, as one of the `put_*` calls takes it.
#[derive(Debug, Clone)]
pub enum Said {
    /// Telemetry reports (`Report`).
    Reports(Vec<LanReport>),
    /// Pending and firing alerts (`Alerts`).
    Alerts(Vec<LanAlerts>),
    /// VM names from libvirt (`VmNames`).
    VmNames(Vec<LanVmNames>),
    /// Service addresses and backends (`Services`).
    Services(Vec<LanServices>),
    /// How it reaches its peers (`Paths`).
    Paths(Vec<LanPaths>),
}

impl Said {
    /// One entry per LAN, as the shared registry keeps it.
    pub fn shared(&self) -> Vec<SharedSaid> {
        match self {
            Said::Reports(v) => v.iter().cloned().map(SharedSaid::Report).collect(),
            Said::Alerts(v) => v.iter().cloned().map(SharedSaid::Alerts).collect(),
            Said::VmNames(v) => v.iter().cloned().map(SharedSaid::Names).collect(),
            Said::Services(v) => v.iter().cloned().map(SharedSaid::Services).collect(),
            Said::Paths(v) => v.iter().cloned().map(SharedSaid::Paths).collect(),
        }
    }
}

impl From<SharedSaid> for Said {
    fn from(s: SharedSaid) -> Self {
        match s {
            SharedSaid::Report(r) => Said::Reports(vec![r]),
            SharedSaid::Alerts(a) => Said::Alerts(vec![a]),
            SharedSaid::Names(n) => Said::VmNames(vec![n]),
            SharedSaid::Services(s) => Said::Services(vec![s]),
            SharedSaid::Paths(p) => Said::Paths(vec![p]),
        }
    }
}

impl Board {
    /// A board serving these LANs with this lease length, empty.
    pub fn new(lans: HashMap<String, Verifier>, ttl: Duration) -> Self {
        Board {
            registry: Registry::new(lans, ttl),
            reports: Reports::default(),
            alerts: Alerts::default(),
        }
    }

    /// The registry, to read.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The reports, VM names and services, to read (only members' are held).
    pub fn reports(&self) -> &Reports {
        &self.reports
    }

    /// The alerts, to read (only members' are held).
    pub fn alerts(&self) -> &Alerts {
        &self.alerts
    }

    /// Serve these LANs from now on: see [`Registry::set_lans`].
    pub fn set_lans(&mut self, lans: HashMap<String, Verifier>) -> Vec<Outbound> {
        let out = self.registry.set_lans(lans);
        self.prune();
        out
    }

    /// Register (or re-register) a host: see [`Registry::register`]. A host that
    /// registers again with fewer LANs loses what it said of the others.
    pub fn register(
        &mut self,
        conn: ConnId,
        nonce: &[u8; 32],
        req: &Register,
        observed: SocketAddr,
        now: Instant,
    ) -> Result<Vec<Outbound>, Refusal> {
        let again = self.registry.name_of(req.host_id).is_some();
        let out = self.registry.register(conn, nonce, req, observed, now)?;
        if again {
            self.prune();
        }
        Ok(out)
    }

    /// Renew a lease: see [`Registry::heartbeat`].
    pub fn heartbeat(
        &mut self,
        host_id: u32,
        conn: ConnId,
        now: Instant,
    ) -> Result<Duration, Refusal> {
        self.registry.heartbeat(host_id, conn, now)
    }

    /// Remove a host now, with what it said.
    pub fn unregister(&mut self, host_id: u32, conn: ConnId) -> Vec<Outbound> {
        let out = self.registry.unregister(host_id, conn);
        self.prune();
        out
    }

    /// Remove the hosts whose lease lapsed, with what they said.
    pub fn expire(&mut self, now: Instant) -> Vec<Outbound> {
        let before = self.registry.host_count();
        let out = self.registry.expire(now);
        // Not `out.is_empty()`: a host alone in its LANs leaves without an event.
        if self.registry.host_count() != before {
            self.prune();
        }
        out
    }

    /// Keep what host `host_id`, registered over connection `conn`, said of its LANs;
    /// LANs it is not a member of are left out, and nothing is kept from a connection
    /// that is not the host's. How many LANs were kept.
    pub fn put(&mut self, host_id: u32, conn: ConnId, said: Said, now: Instant) -> usize {
        let reg = &self.registry;
        let Some(name) = reg.name_of(host_id) else {
            return 0;
        };
        let member = |lan: &str| reg.is_member(host_id, Some(conn), lan);
        match said {
            Said::Reports(r) => self.reports.put(host_id, name, r, member, now),
            Said::Alerts(a) => self.alerts.put(host_id, name, a, member, now),
            Said::VmNames(n) => self.reports.put_names(host_id, name, n, member),
            Said::Services(s) => self.reports.put_services(host_id, name, s, member),
            Said::Paths(p) => self.reports.put_paths(host_id, name, p, member),
        }
    }

    /// A host another bulletin of the shared registry holds: see [`Registry::adopt`].
    pub fn adopt(&mut self, host: SharedHost, now: Instant) -> Vec<Outbound> {
        let out = self.registry.adopt(host, now);
        self.prune();
        out
    }

    /// A host gone from the shared registry: see [`Registry::forget`].
    pub fn forget(&mut self, host_id: u32) -> Vec<Outbound> {
        let out = self.registry.forget(host_id);
        self.prune();
        out
    }

    /// Keep what a host another bulletin holds said there (ignored for hosts this one
    /// holds: their own word comes here directly). How many LANs were kept.
    pub fn put_shared(&mut self, host_id: u32, said: SharedSaid, now: Instant) -> usize {
        let reg = &self.registry;
        let Some(name) = reg.name_of(host_id).filter(|_| !reg.holds(host_id)) else {
            return 0;
        };
        let member = |lan: &str| reg.is_member(host_id, None, lan);
        match Said::from(said) {
            Said::Reports(r) => self.reports.put(host_id, name, r, member, now),
            Said::Alerts(a) => self.alerts.put(host_id, name, a, member, now),
            Said::VmNames(n) => self.reports.put_names(host_id, name, n, member),
            Said::Services(s) => self.reports.put_services(host_id, name, s, member),
            Said::Paths(p) => self.reports.put_paths(host_id, name, p, member),
        }
    }

    /// Drop what hosts said of LANs they are no longer members of.
    fn prune(&mut self) {
        let reg = &self.registry;
        self.reports.retain(|l, h| reg.is_member(h, None, l));
        self.alerts.retain(|l, h| reg.is_member(h, None, l));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AlertReport;
    use crate::registry::tests::{NONCE, lans, obs, reg};

    fn board() -> Board {
        Board::new(lans(), Duration::from_secs(30))
    }

    fn report(lan: &str) -> LanReport {
        LanReport {
            lan: lan.into(),
            peers: Vec::new(),
            pairs: Vec::new(),
        }
    }

    fn alerts(lan: &str) -> LanAlerts {
        LanAlerts {
            lan: lan.into(),
            alerts: vec![AlertReport {
                alert: "VmvpnPeerLoss".into(),
                state: "firing".into(),
                severity: "warning".into(),
                labels: Vec::new(),
                summary: String::new(),
                value: 1.0,
                since_s: 0,
            }],
        }
    }

    /// Host `id` (conn `id`) in `lans`, with a report and an alert on each.
    fn join(b: &mut Board, id: u32, lans: &[&str], now: Instant) {
        b.register(u64::from(id), &NONCE, &reg(id, lans), obs(id), now)
            .expect("register");
        let said = lans.iter().map(|l| report(l)).collect();
        assert_eq!(
            b.put(id, u64::from(id), Said::Reports(said), now),
            lans.len()
        );
        let said = lans.iter().map(|l| alerts(l)).collect();
        assert_eq!(
            b.put(id, u64::from(id), Said::Alerts(said), now),
            lans.len()
        );
    }

    /// (LAN, host) pairs.
    type Held = Vec<(String, u32)>;

    /// (LAN, host) of every report and of every alert held.
    fn held(b: &Board, now: Instant) -> (Held, Held) {
        let r = b.reports().matrix(None, now);
        let a = b.alerts().list(None, now);
        (
            r.into_iter().map(|x| (x.report.lan, x.host_id)).collect(),
            a.into_iter().map(|x| (x.alerts.lan, x.host_id)).collect(),
        )
    }

    fn pairs(v: &[(&str, u32)]) -> Held {
        v.iter().map(|(l, h)| (l.to_string(), *h)).collect()
    }

    #[test]
    fn what_a_host_said_goes_when_its_membership_ends() {
        let t0 = Instant::now();
        let mut b = board();
        join(&mut b, 1, &["lan1", "lan2"], t0);
        join(&mut b, 2, &["lan1"], t0);
        join(&mut b, 3, &["lan2"], t0);
        let all = pairs(&[("lan1", 1), ("lan1", 2), ("lan2", 1), ("lan2", 3)]);
        assert_eq!(held(&b, t0), (all.clone(), all));
        // Re-registration without lan2: host 1's lan2 reports and alerts go.
        b.register(1, &NONCE, &reg(1, &["lan1"]), obs(1), t0)
            .expect("register");
        let v = pairs(&[("lan1", 1), ("lan1", 2), ("lan2", 3)]);
        assert_eq!(held(&b, t0), (v.clone(), v));
        // Unregistering: all of host 2's.
        b.unregister(2, 2);
        let v = pairs(&[("lan1", 1), ("lan2", 3)]);
        assert_eq!(held(&b, t0), (v.clone(), v));
        // A LAN no longer served: its hosts' go.
        let lan1 = [("lan1".to_string(), Verifier::from_secret(&[1; 32]))];
        b.set_lans(lan1.into_iter().collect());
        let v = pairs(&[("lan1", 1)]);
        assert_eq!(held(&b, t0), (v.clone(), v));
        // A lapsed lease: the rest.
        b.expire(t0 + Duration::from_secs(31));
        assert_eq!(held(&b, t0), (vec![], vec![]));
        assert_eq!(b.registry().host_count(), 0);
    }

    #[test]
    fn nothing_is_kept_from_a_non_member_or_another_connection() {
        let t0 = Instant::now();
        let mut b = board();
        join(&mut b, 1, &["lan1"], t0);
        // A LAN it is not in, a connection that is not its own, a host never registered.
        assert_eq!(b.put(1, 1, Said::Reports(vec![report("lan2")]), t0), 0);
        assert_eq!(b.put(1, 9, Said::Alerts(vec![alerts("lan1")]), t0), 0);
        assert_eq!(b.put(7, 7, Said::Reports(vec![report("lan1")]), t0), 0);
        let v = pairs(&[("lan1", 1)]);
        assert_eq!(held(&b, t0), (v.clone(), v));
    }
}
