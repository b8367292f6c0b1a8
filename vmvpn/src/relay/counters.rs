//! What the relay did, shared with `vmvpn status` and `/metrics`: atomics the relay
//! thread adds to and status reads, and the list of pairs it publishes once a second.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::RelayDrop;

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

/// One pair as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairStatus {
    /// The LAN's id.
    pub lan_id: u32,
    /// The two host ids.
    pub hosts: [u32; 2],
    /// Its socket's port.
    pub port: u16,
    /// Datagrams passed on.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Both ends have told it where they are.
    pub bound: bool,
}

/// The relay in `vmvpn status` (JSON `relay`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayStatus {
    /// Its control port.
    pub port: u16,
    /// `relay_limit_mbps` (0: none).
    pub limit_mbps: u32,
    /// LANs it holds a relay key of.
    pub lans: usize,
    /// Authentic requests.
    pub requests_total: u64,
    /// Grants sent.
    pub grants_total: u64,
    /// Authentic binds.
    pub binds_total: u64,
    /// Datagrams passed on.
    pub forwarded_packets_total: u64,
    /// Their bytes.
    pub forwarded_bytes_total: u64,
    /// Dropped, by reason.
    pub dropped: RelayDrops,
    /// Pairs open now.
    pub pairs: Vec<PairStatus>,
}

/// The relay's drops by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RelayDrops {
    /// Not a relay message, or malformed.
    pub malformed: u64,
    /// For a LAN it serves not.
    pub unknown_lan: u64,
    /// A MAC that does not check.
    pub bad_mac: u64,
    /// An older bind.
    pub replay: u64,
    /// From an address no end bound, or naming another host.
    pub stranger: u64,
    /// The other end not bound yet.
    pub no_peer: u64,
    /// Over the limit.
    pub limit: u64,
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
