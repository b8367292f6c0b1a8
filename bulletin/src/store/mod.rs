//! The shared registry: several bulletins serving one set of hosts through a store they
//! all read and write (etcd). Each bulletin keeps its own [`crate::board::Board`] as the
//! copy it serves from; the store holds, per host, the record of the bulletin that holds
//! the host's connection, under a lease of the host's lease length. A bulletin writes the
//! records of its own hosts and renews their leases as they heartbeat; every bulletin
//! watches the store and adopts the hosts the others hold, so all of them push the same
//! joins and leaves. A lease that lapses in the store removes the host everywhere.
//!
//! [`Store`] is what a store must do; [`memory::MemoryStore`] is its reference model (one
//! process, for tests), [`etcd::EtcdStore`] the real one. `replica` runs a store beside
//! the server.

pub mod etcd;
pub mod memory;
pub mod replica;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::proto::{LanAlerts, LanPaths, LanReport, LanServices, LanVmNames};

/// A host's registration as every bulletin of a shared registry sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedHost {
    /// Host id.
    pub host_id: u32,
    /// Host name.
    pub name: String,
    /// Underlay address.
    pub underlay: IpAddr,
    /// Underlay prefix length.
    pub prefix: u8,
    /// Data port.
    pub port: u16,
    /// The address the holding bulletin saw it connect from.
    pub observed: SocketAddr,
    /// LAN name → segment.
    pub lans: BTreeMap<String, String>,
}

/// What the store keeps per host: the record and which bulletin wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The writing bulletin's run (its epoch, in hex).
    pub by: String,
    /// The host.
    pub host: SharedHost,
}

/// One LAN's worth of what a host said (a report, its alerts, VM names or services),
/// shared so that every bulletin's matrix, alerts and dashboard show every host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SharedSaid {
    /// A telemetry report.
    Report(LanReport),
    /// Pending and firing alerts.
    Alerts(LanAlerts),
    /// VM names.
    Names(LanVmNames),
    /// Services.
    Services(LanServices),
    /// Paths to its peers.
    Paths(LanPaths),
}

impl SharedSaid {
    /// What it is, as its key names it.
    pub fn kind(&self) -> &'static str {
        match self {
            SharedSaid::Report(_) => "report",
            SharedSaid::Alerts(_) => "alerts",
            SharedSaid::Names(_) => "names",
            SharedSaid::Services(_) => "services",
            SharedSaid::Paths(_) => "paths",
        }
    }

    /// Its LAN.
    pub fn lan(&self) -> &str {
        match self {
            SharedSaid::Report(r) => &r.lan,
            SharedSaid::Alerts(a) => &a.lan,
            SharedSaid::Names(n) => &n.lan,
            SharedSaid::Services(s) => &s.lan,
            SharedSaid::Paths(p) => &p.lan,
        }
    }
}

/// What the store keeps of what a host said: it, the host and the writing bulletin. It
/// lives under the host's lease, so it goes with the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldSaid {
    /// The writing bulletin's run.
    pub by: String,
    /// The host that said it.
    pub host_id: u32,
    /// What it said, of one LAN.
    pub said: SharedSaid,
}

/// A store lease: what keeps a host's record alive.
pub type LeaseId = i64;

/// A change seen in the store, in the store's order.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreEvent {
    /// What a host said was written.
    Said(HeldSaid),
    /// A host's record was written.
    Put(Held),
    /// A host's record is gone (its lease lapsed, or its bulletin removed it).
    Delete(u32),
}

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed the request.
    #[error("registry store unreachable: {0}")]
    Unreachable(String),
    /// A record in the store is not one of ours.
    #[error("registry store holds a malformed record at {key}: {why}")]
    Malformed {
        /// Its key.
        key: String,
        /// What is wrong.
        why: String,
    },
}

/// Everything held now and the store revision it was read at.
#[derive(Debug, Default)]
pub struct Listing {
    /// The hosts.
    pub hosts: Vec<Held>,
    /// What they said.
    pub said: Vec<HeldSaid>,
    /// The revision read.
    pub revision: i64,
}

/// What a shared registry store does. Calls may be slow (a network round trip): the
/// server never awaits them while serving a host, only `replica` does.
pub trait Store: Clone + Send + Sync + 'static {
    /// A new lease of `ttl` (rounded up to whole seconds).
    fn grant(&self, ttl: Duration) -> impl Future<Output = Result<LeaseId, StoreError>> + Send;
    /// Write `held` under `lease` (replacing the record and its lease).
    fn put(
        &self,
        held: &Held,
        lease: LeaseId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Write what a host said under its `lease` (replacing what it said before of that
    /// kind and LAN).
    fn put_said(
        &self,
        said: &HeldSaid,
        lease: LeaseId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Renew a lease; false when it has lapsed already.
    fn renew(&self, lease: LeaseId) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Remove host `host_id`'s record if `lease` still holds it (another bulletin may have
    /// taken the host since).
    fn delete(
        &self,
        host_id: u32,
        lease: LeaseId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Everything held now.
    fn list(&self) -> impl Future<Output = Result<Listing, StoreError>> + Send;
    /// After a failure: reach the store again by what still answers (a client of the
    /// members that respond, for etcd).
    fn recover(&self) -> impl Future<Output = ()> + Send;
    /// Changes after revision `after`, in order, until the stream breaks (the receiver
    /// then ends: list again and watch from there).
    fn watch(
        &self,
        after: i64,
    ) -> impl Future<Output = Result<mpsc::Receiver<StoreEvent>, StoreError>> + Send;
}

/// Store lease length for a registry lease: whole seconds, at least 2 (etcd's floor).
pub fn lease_secs(ttl: Duration) -> i64 {
    (ttl.as_millis().div_ceil(1000) as i64).max(2)
}
