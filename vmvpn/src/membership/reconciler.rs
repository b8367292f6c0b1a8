//! The bulletin's view of the LANs turned into peer-table changes, sans-IO: it takes the
//! registration's epoch, events, snapshots and full answers with `now`, and hands out
//! [`PeerChange`]s for the data plane. `client` does the QUIC around it.
//!
//! A restarted bulletin (a new epoch) knows nobody at first, so for one grace period
//! after reconnecting to a new epoch nothing is removed for being absent from a snapshot;
//! when the grace ends ([`Reconciler::handle_timeout`] says so) the client asks for
//! everything and [`Reconciler::handle_records`] reconciles fully. Explicit leave events
//! always apply.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bulletin::proto::{Event, Record};
use tracing::info;

/// A change for the data plane's peer table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// A peer to add (or whose address changed).
    Add {
        /// LAN name.
        lan: String,
        /// Its data address.
        addr: SocketAddr,
        /// Its underlay prefix length.
        prefix: u8,
        /// Its host id (its hellos say so, from wherever they come).
        host_id: u32,
        /// Further addresses it may answer at: its NAT's public mapping, when the
        /// bulletin saw it register from another address than the one it reports.
        others: Vec<SocketAddr>,
    },
    /// A peer that left (or moved away from this address).
    Remove {
        /// LAN name.
        lan: String,
        /// The address it had.
        addr: SocketAddr,
    },
}

/// The membership state of this host.
#[derive(Debug)]
pub struct Reconciler {
    me: u32,
    lans: Vec<String>,
    /// LAN → host id → data address and other candidates, as the data plane was told.
    known: HashMap<String, HashMap<u32, (SocketAddr, Vec<SocketAddr>)>>,
    last_epoch: Option<u64>,
    grace_until: Option<Instant>,
    changes: VecDeque<PeerChange>,
}

impl Reconciler {
    /// For host `me` in `lans`.
    pub fn new(me: u32, lans: Vec<String>) -> Self {
        Reconciler {
            me,
            lans,
            known: HashMap::new(),
            last_epoch: None,
            grace_until: None,
            changes: VecDeque::new(),
        }
    }

    /// This host is now in `lans` (a reload): what it knew of a LAN it left is forgotten
    /// (the data plane dropped that LAN whole, so no change is handed out for it).
    pub fn set_lans(&mut self, lans: Vec<String>) {
        self.known.retain(|l, _| lans.contains(l));
        self.changes.retain(|c| match c {
            PeerChange::Add { lan, .. } | PeerChange::Remove { lan, .. } => lans.contains(lan),
        });
        self.lans = lans;
    }

    /// Registered with a bulletin of this `epoch`. A different epoch than before is a
    /// restarted bulletin: removals wait for `grace` (its lease plus a heartbeat). True
    /// when that grace began.
    pub fn handle_registered(&mut self, epoch: u64, grace: Duration, now: Instant) -> bool {
        let restarted = self.last_epoch.is_some_and(|e| e != epoch);
        if restarted {
            self.grace_until = Some(now + grace);
        }
        self.last_epoch = Some(epoch);
        restarted
    }

    /// When the grace period ends (then call [`handle_timeout`](Self::handle_timeout)).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.grace_until
    }

    /// The grace period is over at `now`: true once, when the client should ask for every
    /// record to reconcile fully.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.grace_until.is_some_and(|t| now >= t) {
            self.grace_until = None;
            return true;
        }
        false
    }

    /// One event from the watch stream.
    pub fn handle_event(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Snapshot { lan, records } => {
                let removal = self.removal(now);
                self.reconcile(&lan, &records, removal);
            }
            Event::Join(r) => self.add(&r),
            Event::Leave {
                lan,
                host_id,
                reason,
            } => {
                info!(%lan, id = format_args!("{host_id:#010x}"), %reason, "bulletin: host left");
                self.remove(&lan, host_id);
            }
        }
    }

    /// The answer to a full query: every record of every LAN.
    pub fn handle_records(&mut self, records: Vec<Record>, now: Instant) {
        let removal = self.removal(now);
        for lan in self.lans.clone() {
            let rs: Vec<Record> = records.iter().filter(|r| r.lan == lan).cloned().collect();
            self.reconcile(&lan, &rs, removal);
        }
    }

    /// The next change for the data plane.
    pub fn poll_change(&mut self) -> Option<PeerChange> {
        self.changes.pop_front()
    }

    /// Peers known, over all LANs.
    pub fn peers(&self) -> usize {
        self.known.values().map(HashMap::len).sum()
    }

    fn removal(&self, now: Instant) -> bool {
        self.grace_until.is_none_or(|t| now >= t)
    }

    fn reconcile(&mut self, lan: &str, records: &[Record], removal: bool) {
        for r in records {
            self.add(r);
        }
        if removal {
            let gone: Vec<u32> = self
                .known
                .get(lan)
                .map(|m| {
                    m.keys()
                        .filter(|id| !records.iter().any(|r| r.host_id == **id))
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            for id in gone {
                self.remove(lan, id);
            }
        }
    }

    fn add(&mut self, r: &Record) {
        if r.host_id == self.me {
            return;
        }
        let addr = r.data_addr();
        let others = candidates(r);
        let prev = self
            .known
            .entry(r.lan.clone())
            .or_default()
            .insert(r.host_id, (addr, others.clone()));
        if let Some((old, _)) = prev.as_ref().filter(|(old, _)| *old != addr) {
            self.changes.push_back(PeerChange::Remove {
                lan: r.lan.clone(),
                addr: *old,
            });
        }
        if prev.as_ref() != Some(&(addr, others.clone())) {
            info!(lan = %r.lan, peer = %addr, name = %r.name, ?others, "bulletin: peer added");
            self.changes.push_back(PeerChange::Add {
                lan: r.lan.clone(),
                addr,
                prefix: r.prefix,
                host_id: r.host_id,
                others,
            });
        }
    }

    fn remove(&mut self, lan: &str, host_id: u32) {
        if let Some((addr, _)) = self.known.get_mut(lan).and_then(|m| m.remove(&host_id)) {
            self.changes.push_back(PeerChange::Remove {
                lan: lan.to_string(),
                addr,
            });
        }
    }
}

/// Where else a host may answer than at the address it reports: behind NAT, the
/// bulletin saw its control connection come from the NAT's public address. The data
/// socket's own mapping is not seen (the control connection has a socket of its own), so
/// the candidate is that public address with the data port, which is the data socket's
/// mapping wherever the NAT keeps source ports (Linux masquerade does, when the port is
/// free; see the README's "Behind NAT").
fn candidates(r: &Record) -> Vec<SocketAddr> {
    let public = SocketAddr::new(r.observed.ip(), r.port);
    if r.observed.ip() == r.underlay || public == r.data_addr() {
        Vec::new()
    } else {
        vec![public]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn rec(lan: &str, id: u32, last: u8) -> Record {
        Record {
            lan: lan.into(),
            host_id: id,
            name: format!("h{id}"),
            underlay: IpAddr::from([10, 0, 0, last]),
            prefix: 24,
            port: 7401,
            segment: "192.168.0.0/24".into(),
            observed: SocketAddr::from(([10, 0, 0, last], 7401)),
            lease_ms: 30_000,
            heartbeat_ago_ms: 0,
        }
    }

    fn drain(r: &mut Reconciler) -> Vec<PeerChange> {
        std::iter::from_fn(|| r.poll_change()).collect()
    }

    fn add(lan: &str, id: u32, last: u8) -> PeerChange {
        PeerChange::Add {
            lan: lan.into(),
            addr: SocketAddr::from(([10, 0, 0, last], 7401)),
            prefix: 24,
            host_id: id,
            others: Vec::new(),
        }
    }

    fn remove(lan: &str, last: u8) -> PeerChange {
        PeerChange::Remove {
            lan: lan.into(),
            addr: SocketAddr::from(([10, 0, 0, last], 7401)),
        }
    }

    #[test]
    fn a_host_behind_nat_gets_its_public_address_as_a_candidate() {
        let now = Instant::now();
        let mut r = Reconciler::new(1, vec!["a".into()]);
        let mut behind = rec("a", 2, 2);
        // It registered from its NAT's address, the control connection on some port.
        behind.observed = SocketAddr::from(([203, 0, 113, 9], 51234));
        r.handle_event(Event::Join(behind.clone()), now);
        let public = SocketAddr::from(([203, 0, 113, 9], 7401));
        assert_eq!(
            drain(&mut r),
            [PeerChange::Add {
                lan: "a".into(),
                addr: SocketAddr::from(([10, 0, 0, 2], 7401)),
                prefix: 24,
                host_id: 2,
                others: vec![public],
            }],
            "its data port at its public address"
        );
        // It moves behind another NAT (same private address): the candidate follows.
        behind.observed = SocketAddr::from(([198, 51, 100, 7], 40000));
        r.handle_event(Event::Join(behind), now);
        let changes = drain(&mut r);
        assert!(
            matches!(&changes[..], [PeerChange::Add { others, .. }] if others == &[SocketAddr::from(([198, 51, 100, 7], 7401))]),
            "{changes:?}"
        );
    }

    #[test]
    fn joins_moves_and_leaves_become_peer_changes_once() {
        let now = Instant::now();
        let mut r = Reconciler::new(1, vec!["a".into()]);
        r.handle_event(Event::Join(rec("a", 1, 1)), now);
        r.handle_event(Event::Join(rec("a", 2, 2)), now);
        r.handle_event(Event::Join(rec("a", 2, 2)), now);
        assert_eq!(
            drain(&mut r),
            [add("a", 2, 2)],
            "ourselves and repeats are no change"
        );
        r.handle_event(Event::Join(rec("a", 2, 3)), now);
        assert_eq!(drain(&mut r), [remove("a", 2), add("a", 2, 3)]);
        r.handle_event(
            Event::Leave {
                lan: "a".into(),
                host_id: 2,
                reason: "unregistered".into(),
            },
            now,
        );
        assert_eq!(drain(&mut r), [remove("a", 3)]);
        assert_eq!(r.peers(), 0);
    }

    #[test]
    fn a_snapshot_removes_the_absent_but_not_during_a_restarted_bulletins_grace() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(1, vec!["a".into(), "b".into()]);
        assert!(!r.handle_registered(7, Duration::from_secs(30), t0));
        let all = vec![rec("a", 2, 2), rec("a", 3, 3), rec("b", 4, 4)];
        r.handle_records(all, t0);
        assert_eq!(drain(&mut r).len(), 3);
        // The bulletin restarts and knows only host 2 so far: nobody is removed.
        assert!(r.handle_registered(8, Duration::from_secs(30), t0));
        r.handle_event(
            Event::Snapshot {
                lan: "a".into(),
                records: vec![rec("a", 2, 2)],
            },
            t0 + Duration::from_secs(1),
        );
        assert_eq!(drain(&mut r), []);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        assert!(!r.handle_timeout(t0 + Duration::from_secs(29)));
        assert!(r.handle_timeout(t0 + Duration::from_secs(30)));
        assert!(!r.handle_timeout(t0 + Duration::from_secs(31)), "once");
        // The full answer after the grace: host 3 is gone from a, host 4 from b.
        r.handle_records(vec![rec("a", 2, 2)], t0 + Duration::from_secs(31));
        let mut got = drain(&mut r);
        got.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(got, [remove("a", 3), remove("b", 4)]);
        assert_eq!(r.peers(), 1);
    }
}
