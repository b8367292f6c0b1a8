//! A store beside the server: writes this bulletin's hosts to the shared registry and
//! applies what the other bulletins wrote. It runs in a task of its own, so a slow or
//! absent store never holds up the server: the server hands it [`Change`]s without
//! waiting, and it calls back into the server's board through [`Apply`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Held, HeldSaid, LeaseId, SharedHost, SharedSaid, Store, StoreError, StoreEvent};

/// What the server tells the replica of its own hosts.
#[derive(Debug)]
pub enum Change {
    /// A host registered here (or again): write it.
    Hold(SharedHost),
    /// A host heartbeat here: renew its lease.
    Renew(u32),
    /// A host unregistered here: remove it (if this bulletin still holds it).
    Release(u32),
    /// A host held here said this (one entry per LAN).
    Said(u32, Vec<SharedSaid>),
}

/// How the replica changes the server's board (the server locks, applies and pushes the
/// events to its hosts).
pub trait Apply: Send + Sync + 'static {
    /// A host another bulletin holds, as the store has it.
    fn adopt(&self, host: SharedHost);
    /// The store lost a host: true when this bulletin holds it (it is written again).
    fn forget(&self, host_id: u32) -> bool;
    /// The store holds exactly these hosts of other bulletins now (after a fresh read):
    /// hosts adopted earlier and not among them are gone.
    fn resync(&self, others: Vec<SharedHost>);
    /// What a host another bulletin holds said.
    fn said(&self, host_id: u32, said: SharedSaid);
}

/// The server's handle on its replica.
#[derive(Clone)]
pub struct Replica {
    tx: mpsc::UnboundedSender<Change>,
    healthy: Arc<AtomicBool>,
}

impl Replica {
    /// Hand a change to the replica (never waits).
    pub fn tell(&self, c: Change) {
        let _ = self.tx.send(c);
    }

    /// Whether the store answered lately (registrations are refused while it does not).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// How long to wait before reading the store again after it failed.
const RETRY: Duration = Duration::from_secs(1);

/// Start the replica task for the bulletin run `me` (its epoch in hex), leases of `ttl`.
pub fn start<S: Store>(store: S, me: String, ttl: Duration, apply: impl Apply) -> Replica {
    let (tx, rx) = mpsc::unbounded_channel();
    let healthy = Arc::new(AtomicBool::new(false));
    let task = Task {
        store,
        me,
        ttl,
        mine: HashMap::new(),
        healthy: healthy.clone(),
        down: false,
    };
    tokio::spawn(task.run(rx, apply));
    Replica { tx, healthy }
}

struct Task<S> {
    store: S,
    me: String,
    ttl: Duration,
    /// This bulletin's hosts and the lease holding each in the store (none: not written).
    mine: HashMap<u32, (SharedHost, Option<LeaseId>)>,
    healthy: Arc<AtomicBool>,
    /// The store failed and that was logged.
    down: bool,
}

impl<S: Store> Task<S> {
    async fn run(mut self, mut changes: mpsc::UnboundedReceiver<Change>, apply: impl Apply) {
        loop {
            match self.session(&mut changes, &apply).await {
                Ok(()) => return,
                Err(e) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    if !self.down {
                        warn!(error = %e, "registry store unreachable: serving what this bulletin has, refusing registrations until it returns");
                    }
                    self.down = true;
                    for (_, lease) in self.mine.values_mut() {
                        *lease = None;
                    }
                    self.store.recover().await;
                }
            }
            // Changes that came meanwhile are kept in `mine` by `change` (writes fail).
            let deadline = tokio::time::sleep(RETRY);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => break,
                    c = changes.recv() => match c {
                        Some(c) => self.note(c),
                        None => return,
                    },
                }
            }
        }
    }

    /// Remember a change without writing it (the store is away).
    fn note(&mut self, c: Change) {
        match c {
            Change::Hold(h) => {
                self.mine.insert(h.host_id, (h, None));
            }
            Change::Renew(_) | Change::Said(..) => {}
            Change::Release(id) => {
                self.mine.remove(&id);
            }
        }
    }

    /// Read everything, write this bulletin's hosts, then follow changes both ways until
    /// the store fails (Err) or the server is gone (Ok).
    async fn session(
        &mut self,
        changes: &mut mpsc::UnboundedReceiver<Change>,
        apply: &impl Apply,
    ) -> Result<(), StoreError> {
        let listing = self.store.list().await?;
        let rev = listing.revision;
        let others = listing
            .hosts
            .into_iter()
            .filter(|h| h.by != self.me && !self.mine.contains_key(&h.host.host_id))
            .map(|h| h.host)
            .collect();
        apply.resync(others);
        for s in listing.said.into_iter().filter(|s| s.by != self.me) {
            apply.said(s.host_id, s.said);
        }
        let ids: Vec<u32> = self.mine.keys().copied().collect();
        for id in ids {
            self.write(id).await?;
        }
        let mut events = self.store.watch(rev).await?;
        self.healthy.store(true, Ordering::Relaxed);
        if std::mem::take(&mut self.down) {
            info!(
                hosts = self.mine.len(),
                "registry store reachable again: resynced"
            );
        }
        loop {
            tokio::select! {
                c = changes.recv() => match c {
                    Some(c) => self.change(c).await?,
                    None => return Ok(()),
                },
                ev = events.recv() => match ev {
                    Some(ev) => self.event(ev, apply).await?,
                    None => return Err(StoreError::Unreachable("the watch ended".into())),
                },
            }
        }
    }

    /// Write one of this bulletin's hosts under a fresh lease.
    async fn write(&mut self, id: u32) -> Result<(), StoreError> {
        let Some((host, _)) = self.mine.get(&id) else {
            return Ok(());
        };
        let held = Held {
            by: self.me.clone(),
            host: host.clone(),
        };
        let lease = self.store.grant(self.ttl).await?;
        self.store.put(&held, lease).await?;
        if let Some(e) = self.mine.get_mut(&id) {
            e.1 = Some(lease);
        }
        Ok(())
    }

    async fn change(&mut self, c: Change) -> Result<(), StoreError> {
        match c {
            Change::Hold(h) => {
                let id = h.host_id;
                self.mine.insert(id, (h, None));
                self.write(id).await
            }
            Change::Renew(id) => match self.mine.get(&id).map(|e| e.1) {
                Some(Some(lease)) if self.store.renew(lease).await? => Ok(()),
                // Lapsed in the store (or never written): write it again.
                Some(_) => self.write(id).await,
                None => Ok(()),
            },
            Change::Release(id) => match self.mine.remove(&id) {
                Some((_, Some(lease))) => self.store.delete(id, lease).await,
                _ => Ok(()),
            },
            Change::Said(id, said) => {
                let Some(Some(lease)) = self.mine.get(&id).map(|e| e.1) else {
                    return Ok(());
                };
                for said in said {
                    let held = HeldSaid {
                        by: self.me.clone(),
                        host_id: id,
                        said,
                    };
                    self.store.put_said(&held, lease).await?;
                }
                Ok(())
            }
        }
    }

    async fn event(&mut self, ev: StoreEvent, apply: &impl Apply) -> Result<(), StoreError> {
        match ev {
            StoreEvent::Said(s) => {
                if s.by != self.me {
                    apply.said(s.host_id, s.said);
                }
                Ok(())
            }
            StoreEvent::Put(h) if h.by == self.me => Ok(()),
            StoreEvent::Put(h) => {
                // Another bulletin holds the host now: this one no longer writes it.
                self.mine.remove(&h.host.host_id);
                apply.adopt(h.host);
                Ok(())
            }
            StoreEvent::Delete(id) => {
                if apply.forget(id) && self.mine.contains_key(&id) {
                    // Still connected here, though its lease lapsed in the store.
                    self.write(id).await
                } else {
                    self.mine.remove(&id);
                    Ok(())
                }
            }
        }
    }
}
