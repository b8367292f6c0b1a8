//! The store's reference model, in one process: what [`super::etcd::EtcdStore`] must do,
//! kept simple enough to trust (the same contract tests run against both).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Held, HeldSaid, LeaseId, Listing, Store, StoreError, StoreEvent, lease_secs};

#[derive(Default)]
struct Inner {
    records: BTreeMap<u32, (Held, LeaseId)>,
    said: BTreeMap<(u32, &'static str, String), (HeldSaid, LeaseId)>,
    leases: HashMap<LeaseId, (Instant, Duration)>,
    next_lease: LeaseId,
    /// Every change, by revision (the model keeps all; etcd compacts).
    history: Vec<StoreEvent>,
    watchers: Vec<mpsc::Sender<StoreEvent>>,
}

impl Inner {
    fn emit(&mut self, ev: StoreEvent) {
        self.history.push(ev.clone());
        self.watchers.retain(|w| w.try_send(ev.clone()).is_ok());
    }

    /// Lapse the leases past their deadline, with their records.
    fn reap(&mut self, now: Instant) {
        let lapsed: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, (until, _))| *until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in lapsed {
            self.leases.remove(&id);
            let gone: Vec<u32> = self
                .records
                .iter()
                .filter(|(_, (_, l))| *l == id)
                .map(|(h, _)| *h)
                .collect();
            for h in gone {
                self.records.remove(&h);
                self.emit(StoreEvent::Delete(h));
            }
            // What hosts said goes quietly, as etcd's deletes of those keys are not events
            // a bulletin acts on (the host's own delete is).
            self.said.retain(|_, (_, l)| *l != id);
        }
    }
}

/// An in-process store with leases that lapse on tokio's clock.
#[derive(Clone, Default)]
pub struct MemoryStore(Arc<Mutex<Inner>>);

impl MemoryStore {
    /// An empty store; its leases lapse while a tokio runtime runs.
    pub fn new() -> Self {
        let s = MemoryStore::default();
        let weak = Arc::downgrade(&s.0);
        tokio::spawn(async move {
            while let Some(inner) = weak.upgrade() {
                lock(&inner).reap(Instant::now());
                drop(inner);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        s
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.0)
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store for MemoryStore {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let mut s = self.inner();
        s.next_lease += 1;
        let id = s.next_lease;
        let ttl = Duration::from_secs(lease_secs(ttl) as u64);
        s.leases.insert(id, (Instant::now() + ttl, ttl));
        Ok(id)
    }

    async fn put(&self, held: &Held, lease: LeaseId) -> Result<(), StoreError> {
        let mut s = self.inner();
        if !s.leases.contains_key(&lease) {
            return Err(StoreError::Unreachable(format!("lease {lease} not found")));
        }
        s.records.insert(held.host.host_id, (held.clone(), lease));
        s.emit(StoreEvent::Put(held.clone()));
        Ok(())
    }

    async fn put_said(&self, said: &HeldSaid, lease: LeaseId) -> Result<(), StoreError> {
        let mut s = self.inner();
        if !s.leases.contains_key(&lease) {
            return Err(StoreError::Unreachable(format!("lease {lease} not found")));
        }
        let key = (said.host_id, said.said.kind(), said.said.lan().to_string());
        s.said.insert(key, (said.clone(), lease));
        s.emit(StoreEvent::Said(said.clone()));
        Ok(())
    }

    async fn renew(&self, lease: LeaseId) -> Result<bool, StoreError> {
        let mut s = self.inner();
        s.reap(Instant::now());
        Ok(match s.leases.get_mut(&lease) {
            Some((until, ttl)) => {
                *until = Instant::now() + *ttl;
                true
            }
            None => false,
        })
    }

    async fn delete(&self, host_id: u32, lease: LeaseId) -> Result<(), StoreError> {
        let mut s = self.inner();
        if s.records.get(&host_id).is_some_and(|(_, l)| *l == lease) {
            s.records.remove(&host_id);
            s.emit(StoreEvent::Delete(host_id));
        }
        Ok(())
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let s = self.inner();
        Ok(Listing {
            hosts: s.records.values().map(|(h, _)| h.clone()).collect(),
            said: s.said.values().map(|(h, _)| h.clone()).collect(),
            revision: s.history.len() as i64,
        })
    }

    async fn recover(&self) {}

    async fn watch(&self, after: i64) -> Result<mpsc::Receiver<StoreEvent>, StoreError> {
        let mut s = self.inner();
        let (tx, rx) = mpsc::channel(4096);
        for ev in s.history.iter().skip(after.max(0) as usize) {
            tx.try_send(ev.clone())
                .map_err(|_| StoreError::Unreachable("watch backlog too long".into()))?;
        }
        s.watchers.push(tx);
        Ok(rx)
    }
}
