//! Admission of QUIC connections: caps in total, per source address, and on connections
//! that have not yet proven anything (registered or authenticated), with a smaller cap
//! per source address on those. When the table of unproven connections is full, the
//! oldest one gives way to the newcomer instead of the newcomer being refused, so a
//! client that opens connections and says nothing can never lock the others out: from
//! one address it holds at most `unauthenticated_per_ip` slots, and from many it only
//! pushes its own oldest out. Above half full, new sources must answer a QUIC Retry
//! first (see `server::accept_loop`), so spoofed addresses cannot take slots at all.
//!
//! The table is plain data; eviction is a [`Notify`] that the evicted connection's task
//! waits on (it then closes the connection, or abandons its handshake).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::Limits;

/// Which admission limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections`.
    Total,
    /// `max_connections_per_ip`.
    PerIp,
    /// `max_unauthenticated_per_ip`.
    UnauthenticatedPerIp,
}

impl Refusal {
    /// The config key that sets this limit.
    pub fn key(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
            Refusal::UnauthenticatedPerIp => "max_unauthenticated_per_ip",
        }
    }
}

/// What admission has done since start (`bulletin status`, `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionCounters {
    /// Connections admitted.
    pub admitted: u64,
    /// Refused at `max_connections`.
    pub refused_total: u64,
    /// Refused at `max_connections_per_ip`.
    pub refused_per_ip: u64,
    /// Refused at `max_unauthenticated_per_ip`.
    pub refused_unauthenticated_per_ip: u64,
    /// Unproven connections closed to make room for a newcomer.
    pub evicted: u64,
    /// New connections asked to validate their address (QUIC Retry).
    pub retries: u64,
}

#[derive(Default)]
struct PerIp {
    total: usize,
    unauthenticated: usize,
}

/// A connection's place in the table: its id, and the signal that it was evicted.
pub struct Ticket {
    /// Its id in the table (admission order).
    pub id: u64,
    /// Notified once if the connection is evicted.
    pub evicted: Arc<Notify>,
}

/// The admission table.
pub struct Admission {
    limits: Limits,
    total: usize,
    per_ip: HashMap<IpAddr, PerIp>,
    /// Unproven connections by admission order: the first is the oldest.
    unproven: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
    next: u64,
    counters: AdmissionCounters,
}

impl Admission {
    /// An empty table under `limits`.
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            total: 0,
            per_ip: HashMap::new(),
            unproven: BTreeMap::new(),
            next: 0,
            counters: AdmissionCounters::default(),
        }
    }

    /// Admit a new, unproven connection from `ip`, evicting the oldest unproven one when
    /// their table is full; or say which limit refuses it.
    pub fn admit(&mut self, ip: IpAddr) -> Result<Ticket, Refusal> {
        let refusal = if self.total >= self.limits.connections {
            Some(Refusal::Total)
        } else {
            let p = self.per_ip.get(&ip);
            if p.is_some_and(|p| p.total >= self.limits.per_ip) {
                Some(Refusal::PerIp)
            } else if p.is_some_and(|p| p.unauthenticated >= self.limits.unauthenticated_per_ip) {
                Some(Refusal::UnauthenticatedPerIp)
            } else {
                None
            }
        };
        if let Some(r) = refusal {
            let c = &mut self.counters;
            *match r {
                Refusal::Total => &mut c.refused_total,
                Refusal::PerIp => &mut c.refused_per_ip,
                Refusal::UnauthenticatedPerIp => &mut c.refused_unauthenticated_per_ip,
            } += 1;
            return Err(r);
        }
        while self.unproven.len() >= self.limits.unauthenticated {
            let Some((_, (old_ip, notify))) = self.unproven.pop_first() else {
                break;
            };
            self.forget_unproven(old_ip);
            notify.notify_one();
            self.counters.evicted += 1;
        }
        let id = self.next;
        self.next += 1;
        let evicted = Arc::new(Notify::new());
        self.unproven.insert(id, (ip, evicted.clone()));
        let p = self.per_ip.entry(ip).or_default();
        p.total += 1;
        p.unauthenticated += 1;
        self.total += 1;
        self.counters.admitted += 1;
        Ok(Ticket { id, evicted })
    }

    /// The connection proved a credential: it leaves the unproven table for good.
    pub fn proven(&mut self, id: u64) {
        if let Some((ip, _)) = self.unproven.remove(&id) {
            self.forget_unproven(ip);
        }
    }

    /// The connection is gone (closed, failed or evicted).
    pub fn release(&mut self, id: u64, ip: IpAddr) {
        if let Some((ip, _)) = self.unproven.remove(&id) {
            self.forget_unproven(ip);
        }
        self.total = self.total.saturating_sub(1);
        if let Some(p) = self.per_ip.get_mut(&ip) {
            p.total = p.total.saturating_sub(1);
            if p.total == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn forget_unproven(&mut self, ip: IpAddr) {
        if let Some(p) = self.per_ip.get_mut(&ip) {
            p.unauthenticated = p.unauthenticated.saturating_sub(1);
        }
    }

    /// Whether a new connection from an unvalidated address must answer a Retry first:
    /// when more than half the unproven table is taken.
    pub fn wants_retry(&self) -> bool {
        self.unproven.len() * 2 > self.limits.unauthenticated
    }

    /// Count a Retry sent.
    pub fn count_retry(&mut self) {
        self.counters.retries += 1;
    }

    /// Connections admitted and not yet gone.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Those among them that have proven nothing yet.
    pub fn unauthenticated(&self) -> usize {
        self.unproven.len()
    }

    /// Counters since start.
    pub fn counters(&self) -> AdmissionCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize, unauth: usize, unauth_ip: usize) -> Limits {
        Limits {
            connections: total,
            per_ip,
            unauthenticated: unauth,
            unauthenticated_per_ip: unauth_ip,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_unproven_slots() {
        let mut a = Admission::new(limits(4096, 256, 256, 16));
        let held: Vec<Ticket> = (0..16).map(|_| a.admit(ip(1)).expect("admit")).collect();
        for _ in 0..100 {
            assert_eq!(a.admit(ip(1)).err(), Some(Refusal::UnauthenticatedPerIp));
        }
        // Another address is not affected, and nothing was evicted.
        assert!(a.admit(ip(2)).is_ok());
        assert_eq!(a.counters().evicted, 0);
        assert_eq!(a.counters().refused_unauthenticated_per_ip, 100);
        // Proving frees the unproven slot but keeps the connection counted.
        a.proven(held[0].id);
        assert!(a.admit(ip(1)).is_ok());
        assert_eq!(a.total(), 18);
        assert_eq!(a.unauthenticated(), 17);
    }

    #[test]
    fn a_full_table_evicts_its_oldest_unproven_connection_for_a_newcomer() {
        let mut a = Admission::new(limits(4096, 256, 8, 2));
        let t: Vec<Ticket> = (1..=8).map(|n| a.admit(ip(n)).expect("admit")).collect();
        a.proven(t[0].id); // proven connections are never evicted
        let _ = a.admit(ip(20)).expect("room after proof");
        let newcomer = a.admit(ip(21)).expect("admitted by eviction");
        assert_eq!(a.counters().evicted, 1);
        // The oldest unproven (the second admitted) was told; no other was.
        let told =
            |t: &Ticket| futures_util::FutureExt::now_or_never(t.evicted.notified()).is_some();
        assert!(!told(&t[0]));
        assert!(told(&t[1]));
        assert!(t[2..].iter().all(|t| !told(t)));
        assert!(!told(&newcomer));
        assert_eq!(a.unauthenticated(), 8);
        // Its task releases it later; the counts stay consistent.
        a.release(t[1].id, ip(2));
        assert_eq!(a.total(), 9);
        assert_eq!(a.unauthenticated(), 8);
        for (i, t) in t.iter().enumerate().skip(2) {
            a.release(t.id, ip(i as u8 + 1));
        }
        assert_eq!(a.unauthenticated(), 2);
    }

    #[test]
    fn totals_refuse_and_retries_start_above_half() {
        let mut a = Admission::new(limits(3, 2, 10, 10));
        let x = a.admit(ip(1)).expect("1");
        let _ = a.admit(ip(1)).expect("2");
        assert_eq!(a.admit(ip(1)).err(), Some(Refusal::PerIp));
        let _ = a.admit(ip(2)).expect("3");
        assert_eq!(a.admit(ip(3)).err(), Some(Refusal::Total));
        a.release(x.id, ip(1));
        assert!(a.admit(ip(3)).is_ok());
        let mut b = Admission::new(limits(100, 100, 10, 10));
        for n in 0..5 {
            assert!(!b.wants_retry());
            let _ = b.admit(ip(n)).expect("admit");
        }
        let _ = b.admit(ip(9)).expect("admit");
        assert!(b.wants_retry());
    }

    proptest::proptest! {
        /// Whatever the order of admits, proofs and releases, the counts match a replay
        /// and no address ever holds more unproven slots than its cap.
        #[test]
        fn counts_stay_consistent(ops in proptest::collection::vec((0u8..4, 0u8..5, 0usize..64), 1..300)) {
            let lim = limits(40, 12, 10, 4);
            let mut a = Admission::new(lim);
            let mut live: Vec<(u64, IpAddr, bool)> = Vec::new();
            for (op, who, pick) in ops {
                match op {
                    0 | 1 => if let Ok(t) = a.admit(ip(who)) { live.push((t.id, ip(who), false)); },
                    2 if !live.is_empty() => { let i = pick % live.len(); a.proven(live[i].0); live[i].2 = true; }
                    _ if !live.is_empty() => { let i = pick % live.len(); let (id, w, _) = live.remove(i); a.release(id, w); }
                    _ => {}
                }
                proptest::prop_assert_eq!(a.total(), live.len());
                proptest::prop_assert!(a.unauthenticated() <= lim.unauthenticated);
                for p in a.per_ip.values() {
                    proptest::prop_assert!(p.unauthenticated <= lim.unauthenticated_per_ip);
                    proptest::prop_assert!(p.total <= lim.per_ip);
                }
                let unproven: usize = a.per_ip.values().map(|p| p.unauthenticated).sum();
                proptest::prop_assert_eq!(unproven, a.unauthenticated());
            }
        }
    }
}
