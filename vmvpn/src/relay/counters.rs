//! What the relay did, shared with `vmvpn status` and `/metrics`: atomics the relay
//! thread adds to and status reads, and the list of pairs it publishes once a second.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::RelayDrop;
pub use crate::status::relay::{PairStatus, RelayDrops, RelayStatus};

/// Totals since start.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Authentic requests.
    pub requests: AtomicU64,
    /// Grants sent.
    pub grants: AtomicU64,
    /// Authentic binds.
    pub binds: AtomicU64,
    /// Datagrams passed on.
    pub forwarded_packets: AtomicU64,
    /// Their bytes (UDP payload).
    pub forwarded_bytes: AtomicU64,
    /// Pairs open now.
    pub pairs_open: AtomicU64,
    malformed: AtomicU64,
    unknown_lan: AtomicU64,
    bad_mac: AtomicU64,
    replay: AtomicU64,
    stranger: AtomicU64,
    no_peer: AtomicU64,
    limit: AtomicU64,
    pairs: Mutex<Vec<PairStatus>>,
}

impl RelayCounters {
    pub(super) fn count_drop(&self, why: RelayDrop) {
        let c = match why {
            RelayDrop::Malformed => &self.malformed,
            RelayDrop::UnknownLan => &self.unknown_lan,
            RelayDrop::BadMac => &self.bad_mac,
            RelayDrop::Replay => &self.replay,
            RelayDrop::Stranger => &self.stranger,
            RelayDrop::NoPeer => &self.no_peer,
            RelayDrop::Limit => &self.limit,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The relay thread's latest list of pairs.
    pub fn publish(&self, pairs: Vec<PairStatus>) {
        if let Ok(mut p) = self.pairs.lock() {
            *p = pairs;
        }
    }

    /// As status shows it.
    pub fn status(&self, port: u16, limit_mbps: u32, lans: usize) -> RelayStatus {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RelayStatus {
            port,
            limit_mbps,
            lans,
            requests_total: g(&self.requests),
            grants_total: g(&self.grants),
            binds_total: g(&self.binds),
            forwarded_packets_total: g(&self.forwarded_packets),
            forwarded_bytes_total: g(&self.forwarded_bytes),
            dropped: RelayDrops {
                malformed: g(&self.malformed),
                unknown_lan: g(&self.unknown_lan),
                bad_mac: g(&self.bad_mac),
                replay: g(&self.replay),
                stranger: g(&self.stranger),
                no_peer: g(&self.no_peer),
                limit: g(&self.limit),
            },
            pairs: self.pairs.lock().map(|p| p.clone()).unwrap_or_default(),
        }
    }
}

/// What status and `/metrics` read of a running relay.
#[derive(Debug, Clone)]
pub struct RelayView {
    /// The relay thread's counters.
    pub counters: std::sync::Arc<RelayCounters>,
    /// Its control port.
    pub port: u16,
    /// `[host] relay_limit_mbps`.
    pub limit_mbps: u32,
    /// LANs it holds a relay key of.
    pub lans: usize,
}

impl RelayView {
    /// As status shows it now.
    pub fn status(&self) -> RelayStatus {
        self.counters.status(self.port, self.limit_mbps, self.lans)
    }
}
