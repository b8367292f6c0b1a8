//! The registry, sans-IO: hosts, their LANs and leases. Every call takes `now`; the server
//! turns the returned [`Outbound`] events into messages on the hosts' connections.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::proof::Verifier;
use crate::proto::{Event, Record, RefuseCode, Register};
use crate::store::SharedHost;

/// Identifies a connection inside the server.
pub type ConnId = u64;

/// An event for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The connection of the host to tell.
    pub to: ConnId,
    /// What to tell it.
    pub event: Event,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Kind.
    pub code: RefuseCode,
    /// Text for people.
    pub reason: String,
}

fn refuse(code: RefuseCode, reason: String) -> Refusal {
    Refusal { code, reason }
}

/// Who holds a host's connection: this bulletin (on which connection), or another
/// bulletin of the same shared registry (its record came from the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Here(ConnId),
    Elsewhere,
}

#[derive(Debug, Clone)]
struct HostEntry {
    /// The host as it registered (LANs: name → segment), as the shared store keeps it.
    host: SharedHost,
    expires: Instant,
    last_heartbeat: Instant,
    holder: Holder,
}

/// The registry.
pub struct Registry {
    lans: HashMap<String, Verifier>,
    hosts: BTreeMap<u32, HostEntry>,
    ttl: Duration,
}

impl Registry {
    /// A registry serving these LANs with this lease length.
    pub fn new(lans: HashMap<String, Verifier>, ttl: Duration) -> Self {
        Registry {
            lans,
            hosts: BTreeMap::new(),
            ttl,
        }
    }

    /// Serve these LANs from now on (a reload): a LAN removed takes its hosts out of it,
    /// and the others of the LAN are told each one left; a LAN added takes registrations
    /// at once. A LAN whose verifier changed keeps its hosts until they register again
    /// (then they must prove the new secret). Returns the leave events.
    pub fn set_lans(&mut self, lans: HashMap<String, Verifier>) -> Vec<Outbound> {
        let gone: Vec<String> = self
            .lans
            .keys()
            .filter(|l| !lans.contains_key(*l))
            .cloned()
            .collect();
        self.lans = lans;
        let mut out = Vec::new();
        for lan in gone {
            let members: Vec<u32> = self
                .hosts
                .iter()
                .filter(|(_, h)| h.host.lans.contains_key(&lan))
                .map(|(id, _)| *id)
                .collect();
            for id in members {
                out.extend(self.tell_lan(&lan, id, |_| Event::Leave {
                    lan: lan.clone(),
                    host_id: id,
                    reason: "LAN no longer served by the bulletin".into(),
                }));
            }
            for h in self.hosts.values_mut() {
                h.host.lans.remove(&lan);
            }
        }
        out
    }

    /// Lease length.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// LANs served.
    pub fn lan_names(&self) -> impl Iterator<Item = &str> {
        self.lans.keys().map(String::as_str)
    }

    /// Register (or re-register) a host whose proofs are over `nonce`.
    ///
    /// Returns the events for the other hosts; the registering host gets snapshots via
    /// [`Registry::snapshots`].
    pub fn register(
        &mut self,
        conn: ConnId,
        nonce: &[u8; 32],
        req: &Register,
        observed: SocketAddr,
        now: Instant,
    ) -> Result<Vec<Outbound>, Refusal> {
        if req.lans.is_empty() {
            return Err(refuse(
                RefuseCode::Protocol,
                "registration names no LAN".into(),
            ));
        }
        for l in &req.lans {
            let Some(v) = self.lans.get(&l.name) else {
                return Err(refuse(
                    RefuseCode::UnknownLan,
                    format!(
                        "this bulletin does not serve LAN {:?}: add it to the bulletin's config",
                        l.name
                    ),
                ));
            };
            if !v.verify(nonce, req.host_id, &l.name, &l.proof) {
                return Err(refuse(
                    RefuseCode::BadProof,
                    format!(
                        "wrong secret for LAN {:?}: the host's secret_file differs from the bulletin's",
                        l.name
                    ),
                ));
            }
        }
        if let Some(old) = self.hosts.get(&req.host_id)
            && now < old.expires
            && (old.host.name != req.name || old.host.underlay != req.underlay)
        {
            return Err(refuse(
                RefuseCode::DuplicateId,
                format!(
                    "host id {:#010x} is held by host {:?} at {} (lease left {} s): give one of them another [host] name or id",
                    req.host_id,
                    old.host.name,
                    old.host.underlay,
                    old.expires.saturating_duration_since(now).as_secs()
                ),
            ));
        }
        // Same host again (a restart, or a reconnect): replace at once, no lock-out.
        let old_lans = self
            .hosts
            .remove(&req.host_id)
            .map(|o| o.host.lans)
            .unwrap_or_default();
        let entry = HostEntry {
            host: SharedHost {
                host_id: req.host_id,
                name: req.name.clone(),
                underlay: req.underlay,
                prefix: req.prefix,
                port: req.port,
                observed,
                lans: req
                    .lans
                    .iter()
                    .map(|l| (l.name.clone(), l.segment.clone()))
                    .collect(),
            },
            expires: later(now, self.ttl),
            last_heartbeat: now,
            holder: Holder::Here(conn),
        };
        let mut out = Vec::new();
        for lan in old_lans
            .keys()
            .filter(|l| !entry.host.lans.contains_key(*l))
        {
            out.extend(self.tell_lan(lan, req.host_id, |_| Event::Leave {
                lan: lan.clone(),
                host_id: req.host_id,
                reason: "left the LAN".into(),
            }));
        }
        self.hosts.insert(req.host_id, entry);
        let lans: Vec<String> = req.lans.iter().map(|l| l.name.clone()).collect();
        for lan in lans {
            if let Some(rec) = self.record(req.host_id, &lan, now) {
                out.extend(self.tell_lan(&lan, req.host_id, |_| Event::Join(rec.clone())));
            }
        }
        Ok(out)
    }

    /// The snapshot events for a host, one per LAN it is in.
    pub fn snapshots(&self, host_id: u32, now: Instant) -> Vec<Event> {
        let Some(h) = self.hosts.get(&host_id) else {
            return Vec::new();
        };
        h.host
            .lans
            .keys()
            .map(|lan| Event::Snapshot {
                lan: lan.clone(),
                records: self.records(Some(lan), now),
            })
            .collect()
    }

    /// Renew a lease.
    pub fn heartbeat(
        &mut self,
        host_id: u32,
        conn: ConnId,
        now: Instant,
    ) -> Result<Duration, Refusal> {
        match self.hosts.get_mut(&host_id) {
            Some(h) if h.holder == Holder::Here(conn) && now < h.expires => {
                h.expires = later(now, self.ttl);
                h.last_heartbeat = now;
                Ok(self.ttl)
            }
            _ => Err(refuse(
                RefuseCode::NotRegistered,
                "not registered (lease lapsed?): register again".into(),
            )),
        }
    }

    /// Remove a host now; its LANs' other hosts are told.
    pub fn unregister(&mut self, host_id: u32, conn: ConnId) -> Vec<Outbound> {
        match self.hosts.get(&host_id) {
            Some(h) if h.holder == Holder::Here(conn) => self.remove(host_id, "unregistered"),
            _ => Vec::new(),
        }
    }

    fn remove(&mut self, host_id: u32, reason: &str) -> Vec<Outbound> {
        let Some(h) = self.hosts.remove(&host_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for lan in h.host.lans.keys() {
            out.extend(self.tell_lan(lan, host_id, |_| Event::Leave {
                lan: lan.clone(),
                host_id,
                reason: reason.into(),
            }));
        }
        out
    }

    /// The hosts this bulletin holds whose lease has lapsed by `now`.
    pub fn lapsed(&self, now: Instant) -> Vec<u32> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.holder != Holder::Elsewhere && now >= h.expires)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Remove lapsed leases; returns the leave events.
    pub fn expire(&mut self, now: Instant) -> Vec<Outbound> {
        self.lapsed(now)
            .into_iter()
            .flat_map(|id| self.remove(id, "lease expired"))
            .collect()
    }

    /// When the next lease lapses.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.hosts
            .values()
            .filter(|h| h.holder != Holder::Elsewhere)
            .map(|h| h.expires)
            .min()
    }

    fn tell_lan(&self, lan: &str, except: u32, event: impl Fn(u32) -> Event) -> Vec<Outbound> {
        self.hosts
            .iter()
            .filter(|(id, h)| **id != except && h.host.lans.contains_key(lan))
            .filter_map(|(id, h)| match h.holder {
                Holder::Here(to) => Some(Outbound {
                    to,
                    event: event(*id),
                }),
                Holder::Elsewhere => None,
            })
            .collect()
    }

    fn record(&self, host_id: u32, lan: &str, now: Instant) -> Option<Record> {
        let h = self.hosts.get(&host_id)?;
        Some(Record {
            lan: lan.to_string(),
            segment: h.host.lans.get(lan)?.clone(),
            host_id,
            name: h.host.name.clone(),
            underlay: h.host.underlay,
            prefix: h.host.prefix,
            port: h.host.port,
            observed: h.host.observed,
            lease_ms: h.expires.saturating_duration_since(now).as_millis() as u64,
            heartbeat_ago_ms: now.saturating_duration_since(h.last_heartbeat).as_millis() as u64,
        })
    }

    /// A host as the shared store keeps it (several bulletins on one registry), or
    /// none when it is not registered here or is held by another bulletin.
    pub fn shared(&self, host_id: u32) -> Option<SharedHost> {
        let h = self.hosts.get(&host_id)?;
        matches!(h.holder, Holder::Here(_)).then(|| h.host.clone())
    }

    /// The hosts another bulletin holds.
    pub fn elsewhere(&self) -> Vec<u32> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.holder == Holder::Elsewhere)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether this bulletin holds the host's connection.
    pub fn holds(&self, host_id: u32) -> bool {
        self.hosts
            .get(&host_id)
            .is_some_and(|h| matches!(h.holder, Holder::Here(_)))
    }

    /// A host another bulletin of the shared registry holds: kept as it says (its lease
    /// is the store's; it lapses there, not here), and this bulletin's hosts in its LANs
    /// hear that it joined, or left the LANs it no longer names. A host this bulletin
    /// held moved to the other one: its connection here no longer speaks for it. LANs
    /// this bulletin does not serve are left out.
    pub fn adopt(&mut self, host: SharedHost, now: Instant) -> Vec<Outbound> {
        let lans: BTreeMap<String, String> = host
            .lans
            .into_iter()
            .filter(|(l, _)| self.lans.contains_key(l))
            .collect();
        let old = self.hosts.remove(&host.host_id);
        let same = old.as_ref().is_some_and(|o| {
            o.host.lans == lans
                && o.host.underlay == host.underlay
                && o.host.port == host.port
                && o.host.observed == host.observed
                && o.holder == Holder::Elsewhere
        });
        let old_lans = old.map(|o| o.host.lans).unwrap_or_default();
        let mut out = Vec::new();
        for lan in old_lans.keys().filter(|l| !lans.contains_key(*l)) {
            out.extend(self.tell_lan(lan, host.host_id, |_| Event::Leave {
                lan: lan.clone(),
                host_id: host.host_id,
                reason: "left the LAN".into(),
            }));
        }
        if lans.is_empty() {
            return out;
        }
        self.hosts.insert(
            host.host_id,
            HostEntry {
                host: SharedHost { lans, ..host },
                expires: later(now, self.ttl),
                last_heartbeat: now,
                holder: Holder::Elsewhere,
            },
        );
        if same {
            return out;
        }
        let names: Vec<String> = self.hosts[&host.host_id]
            .host
            .lans
            .keys()
            .cloned()
            .collect();
        for lan in names {
            if let Some(rec) = self.record(host.host_id, &lan, now) {
                out.extend(self.tell_lan(&lan, host.host_id, |_| Event::Join(rec.clone())));
            }
        }
        out
    }

    /// The store no longer has this host (its lease lapsed there, or it unregistered at
    /// another bulletin): removed, and this bulletin's hosts in its LANs are told. A host
    /// this bulletin holds is kept (the caller writes it to the store again).
    pub fn forget(&mut self, host_id: u32) -> Vec<Outbound> {
        match self.hosts.get(&host_id) {
            Some(h) if h.holder == Holder::Elsewhere => self.remove(host_id, "lease expired"),
            _ => Vec::new(),
        }
    }

    /// Records of one LAN or all, ordered by LAN then host id.
    pub fn records(&self, lan: Option<&str>, now: Instant) -> Vec<Record> {
        let mut out: Vec<Record> = self
            .hosts
            .iter()
            .flat_map(|(id, h)| h.host.lans.keys().map(move |l| (*id, l)))
            .filter(|(_, l)| lan.is_none_or(|want| want == l.as_str()))
            .filter_map(|(id, l)| self.record(id, l, now))
            .collect();
        out.sort_by(|a, b| (&a.lan, a.host_id).cmp(&(&b.lan, b.host_id)));
        out
    }

    /// Whether this host, on this connection, is registered in this LAN.
    pub fn is_member(&self, host_id: u32, conn: Option<ConnId>, lan: &str) -> bool {
        self.hosts.get(&host_id).is_some_and(|h| {
            h.host.lans.contains_key(lan) && conn.is_none_or(|c| h.holder == Holder::Here(c))
        })
    }

    /// Whether `proof` proves the secret of `lan` over `nonce` (false for unknown LANs).
    pub fn verify_proof(
        &self,
        lan: &str,
        nonce: &[u8; 32],
        host_id: u32,
        proof: &[u8; 32],
    ) -> bool {
        self.lans
            .get(lan)
            .is_some_and(|v| v.verify(nonce, host_id, lan, proof))
    }

    /// A registered host's name.
    pub fn name_of(&self, host_id: u32) -> Option<&str> {
        self.hosts.get(&host_id).map(|h| h.host.name.as_str())
    }

    /// Number of registered hosts.
    pub fn lan_count(&self) -> usize {
        self.lans.len()
    }

    /// Hosts registered now.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }
}

/// `now + d`, saturating: a duration from a config can never overflow a deadline.
pub fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(1 << 30))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::LanJoin;
    use std::net::IpAddr;

    /// The nonce the test registrations prove over.
    pub(crate) const NONCE: [u8; 32] = [4; 32];

    /// lan1 (secret all 1s) and lan2 (all 2s).
    pub(crate) fn lans() -> HashMap<String, Verifier> {
        [("lan1", 1u8), ("lan2", 2)]
            .into_iter()
            .map(|(n, s)| (n.to_string(), Verifier::from_secret(&[s; 32])))
            .collect()
    }

    fn registry() -> Registry {
        Registry::new(lans(), Duration::from_secs(30))
    }

    /// Host `id` (`h{id}`, 10.77.1.id) joining `lans` with the right secrets.
    pub(crate) fn reg(id: u32, lans: &[&str]) -> Register {
        Register {
            host_id: id,
            name: format!("h{id}"),
            underlay: IpAddr::from([10, 77, 1, id as u8]),
            prefix: 24,
            port: 7401,
            lans: lans
                .iter()
                .map(|l| {
                    let secret = if *l == "lan1" { 1u8 } else { 2 };
                    LanJoin {
                        name: l.to_string(),
                        segment: "192.168.0.0/16".into(),
                        proof: Verifier::from_secret(&[secret; 32]).prove(&NONCE, id, l),
                    }
                })
                .collect(),
        }
    }

    /// Where host `id`'s registration comes from.
    pub(crate) fn obs(id: u32) -> SocketAddr {
        SocketAddr::from(([10, 77, 1, id as u8], 50000))
    }

    #[test]
    fn joins_fan_out_only_to_the_lans_hosts() {
        let t0 = Instant::now();
        let mut r = registry();
        assert!(
            r.register(1, &NONCE, &reg(1, &["lan1"]), obs(1), t0)
                .expect("ok")
                .is_empty()
        );
        assert!(
            r.register(2, &NONCE, &reg(2, &["lan2"]), obs(2), t0)
                .expect("ok")
                .is_empty()
        );
        let out = r
            .register(3, &NONCE, &reg(3, &["lan1", "lan2"]), obs(3), t0)
            .expect("ok");
        let mut to: Vec<(ConnId, String)> = out
            .iter()
            .map(|o| match &o.event {
                Event::Join(rec) => (o.to, rec.lan.clone()),
                e => panic!("{e:?}"),
            })
            .collect();
        to.sort();
        assert_eq!(to, vec![(1, "lan1".to_string()), (2, "lan2".to_string())]);
        // Snapshots: host 3 sees both LANs, each with its members.
        let snaps = r.snapshots(3, t0);
        assert_eq!(snaps.len(), 2);
        match &snaps[0] {
            Event::Snapshot { lan, records } => {
                assert_eq!(lan, "lan1");
                assert_eq!(
                    records.iter().map(|r| r.host_id).collect::<Vec<_>>(),
                    vec![1, 3]
                );
                assert_eq!(records[0].underlay, IpAddr::from([10, 77, 1, 1]));
                assert_eq!(records[0].observed, obs(1));
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_lan_removed_by_a_reload_takes_its_hosts_out_and_one_added_takes_registrations() {
        let t0 = Instant::now();
        let mut r = registry();
        r.register(1, &NONCE, &reg(1, &["lan1", "lan2"]), obs(1), t0)
            .expect("ok");
        r.register(2, &NONCE, &reg(2, &["lan1", "lan2"]), obs(2), t0)
            .expect("ok");
        let lan3 = Verifier::from_secret(&[3; 32]);
        let mut lans: HashMap<String, Verifier> = [
            ("lan1".to_string(), Verifier::from_secret(&[1; 32])),
            ("lan3".to_string(), lan3.clone()),
        ]
        .into_iter()
        .collect();
        let mut out = r.set_lans(lans.clone());
        out.sort_by_key(|o| o.to);
        let leave = |to, host_id| Outbound {
            to,
            event: Event::Leave {
                lan: "lan2".into(),
                host_id,
                reason: "LAN no longer served by the bulletin".into(),
            },
        };
        assert_eq!(out, vec![leave(1, 2), leave(2, 1)]);
        assert!(!r.is_member(1, None, "lan2") && r.is_member(1, None, "lan1"));
        assert_eq!(r.records(Some("lan2"), t0), vec![]);
        assert_eq!(r.lan_count(), 2);
        // lan3 takes a registration now; lan2 refuses one.
        let mut join3 = reg(3, &["lan1"]);
        join3.lans.push(LanJoin {
            name: "lan3".into(),
            segment: "192.168.0.0/16".into(),
            proof: lan3.prove(&NONCE, 3, "lan3"),
        });
        assert!(r.register(3, &NONCE, &join3, obs(3), t0).is_ok());
        assert!(
            r.register(4, &NONCE, &reg(4, &["lan2"]), obs(4), t0)
                .is_err()
        );
        // The same LANs again change nothing.
        lans.insert("lan3".into(), lan3);
        assert_eq!(r.set_lans(lans), vec![]);
    }

    #[test]
    fn lapsed_leases_are_removed_and_announced_with_a_mocked_clock() {
        let t0 = Instant::now();
        let mut r = registry();
        r.register(1, &NONCE, &reg(1, &["lan1"]), obs(1), t0)
            .expect("ok");
        r.register(2, &NONCE, &reg(2, &["lan1"]), obs(2), t0)
            .expect("ok");
        assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(30)));
        // Host 2 heartbeats at 20 s; host 1 goes silent.
        assert_eq!(
            r.heartbeat(2, 2, t0 + Duration::from_secs(20)),
            Ok(Duration::from_secs(30))
        );
        assert!(r.expire(t0 + Duration::from_secs(29)).is_empty());
        let out = r.expire(t0 + Duration::from_secs(30));
        assert_eq!(
            out,
            vec![Outbound {
                to: 2,
                event: Event::Leave {
                    lan: "lan1".into(),
                    host_id: 1,
                    reason: "lease expired".into()
                }
            }]
        );
        assert_eq!(r.host_count(), 1);
        assert_eq!(
            r.heartbeat(1, 1, t0 + Duration::from_secs(31))
                .map_err(|e| e.code),
            Err(RefuseCode::NotRegistered)
        );
        assert_eq!(
            r.records(None, t0 + Duration::from_secs(31))[0].lease_ms,
            19_000
        );
    }

    #[test]
    fn unregister_is_announced_at_once_and_only_by_the_owner() {
        let t0 = Instant::now();
        let mut r = registry();
        r.register(1, &NONCE, &reg(1, &["lan1"]), obs(1), t0)
            .expect("ok");
        r.register(2, &NONCE, &reg(2, &["lan1"]), obs(2), t0)
            .expect("ok");
        assert!(
            r.unregister(1, 99).is_empty(),
            "another connection cannot unregister host 1"
        );
        let out = r.unregister(1, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, 2);
        assert!(
            matches!(&out[0].event, Event::Leave { host_id: 1, reason, .. } if reason == "unregistered")
        );
    }

    #[test]
    fn wrong_secret_unknown_lan_and_replayed_proof_are_refused() {
        let t0 = Instant::now();
        let mut r = registry();
        let mut bad = reg(1, &["lan1"]);
        bad.lans[0].proof = Verifier::from_secret(&[9; 32]).prove(&NONCE, 1, "lan1");
        assert_eq!(
            r.register(1, &NONCE, &bad, obs(1), t0).map_err(|e| e.code),
            Err(RefuseCode::BadProof)
        );
        let mut unknown = reg(1, &["lan1"]);
        unknown.lans[0].name = "lan9".into();
        assert_eq!(
            r.register(1, &NONCE, &unknown, obs(1), t0)
                .map_err(|e| e.code),
            Err(RefuseCode::UnknownLan)
        );
        // A proof made for another connection's nonce.
        assert_eq!(
            r.register(1, &[5; 32], &reg(1, &["lan1"]), obs(1), t0)
                .map_err(|e| e.code),
            Err(RefuseCode::BadProof)
        );
        assert_eq!(r.host_count(), 0);
    }

    #[test]
    fn duplicate_id_is_refused_but_a_restarted_host_is_accepted_at_once() {
        let t0 = Instant::now();
        let mut r = registry();
        r.register(1, &NONCE, &reg(1, &["lan1"]), obs(1), t0)
            .expect("ok");
        let mut imposter = reg(1, &["lan1"]);
        imposter.name = "other".into();
        let e = r
            .register(2, &NONCE, &imposter, obs(2), t0)
            .expect_err("duplicate");
        assert_eq!(e.code, RefuseCode::DuplicateId);
        assert!(e.reason.contains("\"h1\""), "{}", e.reason);
        // The same host from a new connection (it crashed and restarted): accepted now.
        r.register(
            3,
            &NONCE,
            &reg(1, &["lan1"]),
            obs(1),
            t0 + Duration::from_secs(1),
        )
        .expect("restart");
        assert_eq!(
            r.heartbeat(1, 3, t0 + Duration::from_secs(2)),
            Ok(Duration::from_secs(30))
        );
        assert!(
            r.heartbeat(1, 1, t0 + Duration::from_secs(2)).is_err(),
            "the old connection no longer owns it"
        );
        // After the lease lapsed, the id is free for another name.
        r.register(4, &NONCE, &imposter, obs(2), t0 + Duration::from_secs(40))
            .expect("free again");
    }

    #[test]
    fn leaving_a_lan_on_reregistration_tells_that_lan() {
        let t0 = Instant::now();
        let mut r = registry();
        r.register(1, &NONCE, &reg(1, &["lan1", "lan2"]), obs(1), t0)
            .expect("ok");
        r.register(2, &NONCE, &reg(2, &["lan2"]), obs(2), t0)
            .expect("ok");
        let out = r
            .register(1, &NONCE, &reg(1, &["lan1"]), obs(1), t0)
            .expect("ok");
        assert!(out.iter().any(|o| o.to == 2
            && matches!(&o.event, Event::Leave { lan, host_id: 1, .. } if lan == "lan2")));
    }
}
