//! The relay of last resort (`[host] relay = true`), sans-IO: which pair socket serves
//! which two hosts, where each of them is, what may pass and what it cost.
//!
//! Like a TURN server's channel, but per pair: two hosts of one LAN behind NATs that
//! change ports ask (`RelayRequest`, MAC'd under the LAN's relay key) for a socket of
//! their own; each tells it where it is (`RelayBind` sent to it, so the relay sees the
//! NAT mapping that socket's replies must go to); from then on whatever one of them sends
//! to it goes to the other, unopened. Each side sees its peer at the pair socket's
//! address, so its engine treats the relay as one more candidate address: hellos,
//! sessions, probes and telemetry are end to end. The relay checks only that a datagram
//! comes from a bound end and names that end's host and LAN in its header.

pub mod counters;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use counters::RelayCounters;

use crate::proto::relay::{RELAY_LEN, RelayKey, RelayMsg};
use crate::proto::{Kind, Packet};

/// A pair with nothing bound or forwarded for this long is closed (hosts bind every
/// keepalive interval, at most 2 minutes, while they use it).
pub const PAIR_IDLE: Duration = Duration::from_secs(300);
/// At most this many pairs; the least recently used goes first.
pub const MAX_PAIRS: usize = 4096;

/// The two hosts of a pair, in one LAN, the lower id first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairKey {
    /// The LAN id.
    pub lan: u32,
    /// The lower host id.
    pub lo: u32,
    /// The higher host id.
    pub hi: u32,
}

impl PairKey {
    fn of(lan: u32, a: u32, b: u32) -> Self {
        PairKey {
            lan,
            lo: a.min(b),
            hi: a.max(b),
        }
    }

    /// 0 for the lower id, 1 for the higher, None for neither.
    fn end(&self, host: u32) -> Option<usize> {
        if host == self.lo {
            Some(0)
        } else if host == self.hi {
            Some(1)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct End {
    addr: Option<SocketAddr>,
    /// The latest bind's clock: an older one (a replay) moves nothing.
    seq: u64,
}

#[derive(Debug)]
struct Pair {
    key: PairKey,
    ends: [End; 2],
    last_active: Instant,
    packets: u64,
    bytes: u64,
}

/// A request the relay accepted: the io opens a socket for it if it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Its pair.
    pub pair: PairKey,
    msg: RelayMsg,
}

/// Why a relay control message or a datagram on a pair socket was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDrop {
    /// Not a relay request, or malformed.
    Malformed,
    /// A LAN this relay serves no key of.
    UnknownLan,
    /// The MAC does not check.
    BadMac,
    /// A bind older than one already taken.
    Replay,
    /// From an address no end of the pair bound, or naming another host or LAN.
    Stranger,
    /// The other end has not bound yet.
    NoPeer,
    /// Over `relay_limit_mbps`.
    Limit,
}

/// What to do with a datagram that came to a pair socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairAction {
    /// Send it on, unchanged, from the same socket.
    Forward(SocketAddr),
    /// A bind: the end's address is noted.
    Bound,
    /// Dropped, counted.
    Drop(RelayDrop),
}

/// Bytes per second, refilled continuously, with a burst of a few milliseconds' worth.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn new(limit_mbps: u32) -> Self {
        let rate = f64::from(limit_mbps) * 125_000.0;
        // 20 ms of the rate, and room for a GSO batch of full datagrams at least.
        let burst = (rate * 0.02).max(128.0 * 1024.0);
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: None,
        }
    }

    fn take(&mut self, len: usize, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if let Some(t) = self.at {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.at = Some(now);
        let need = len as f64;
        if self.tokens >= need {
            self.tokens -= need;
            true
        } else {
            false
        }
    }
}

/// The relay's state.
pub struct RelayCore {
    keys: HashMap<u32, RelayKey>,
    pairs: HashMap<u16, Pair>,
    by_key: HashMap<PairKey, u16>,
    bucket: Bucket,
    counters: std::sync::Arc<RelayCounters>,
}

impl RelayCore {
    /// A relay serving the LANs whose relay keys these are (by LAN id), forwarding at most
    /// `limit_mbps` in all (0: no limit).
    pub fn new(
        keys: HashMap<u32, RelayKey>,
        limit_mbps: u32,
        counters: std::sync::Arc<RelayCounters>,
    ) -> Self {
        RelayCore {
            keys,
            pairs: HashMap::new(),
            by_key: HashMap::new(),
            bucket: Bucket::new(limit_mbps),
            counters,
        }
    }

    fn drop(&self, why: RelayDrop) -> RelayDrop {
        self.counters.count_drop(why);
        why
    }

    /// A datagram to the relay's own port: an authentic request, or why not.
    pub fn handle_request(&mut self, buf: &[u8]) -> Result<Request, RelayDrop> {
        let Ok(Some((msg, mac))) = RelayMsg::parse(buf) else {
            return Err(self.drop(RelayDrop::Malformed));
        };
        if msg.kind != Kind::RelayRequest || msg.peer == msg.sender {
            return Err(self.drop(RelayDrop::Malformed));
        }
        let Some(key) = self.keys.get(&msg.lan) else {
            return Err(self.drop(RelayDrop::UnknownLan));
        };
        if !msg.verify(key, &mac) {
            return Err(self.drop(RelayDrop::BadMac));
        }
        self.counters.requests.fetch_add(1, RELAXED);
        Ok(Request {
            pair: PairKey::of(msg.lan, msg.sender, msg.peer),
            msg,
        })
    }

    /// The port of the socket serving `pair`, if one is open.
    pub fn port_of(&self, pair: &PairKey) -> Option<u16> {
        self.by_key.get(pair).copied()
    }

    /// The io opened a socket at `port` for `pair`. Returns the port of a pair closed to
    /// make room (the io closes its socket).
    pub fn open_pair(&mut self, pair: PairKey, port: u16, now: Instant) -> Option<u16> {
        let evicted = if self.pairs.len() >= MAX_PAIRS {
            let oldest = self
                .pairs
                .iter()
                .min_by_key(|(_, p)| p.last_active)
                .map(|(port, _)| *port);
            oldest.inspect(|p| self.close(*p))
        } else {
            None
        };
        self.pairs.insert(
            port,
            Pair {
                key: pair,
                ends: [End::default(); 2],
                last_active: now,
                packets: 0,
                bytes: 0,
            },
        );
        self.by_key.insert(pair, port);
        self.counters
            .pairs_open
            .store(self.pairs.len() as u64, RELAXED);
        evicted
    }

    fn close(&mut self, port: u16) {
        if let Some(p) = self.pairs.remove(&port) {
            self.by_key.remove(&p.key);
        }
        self.counters
            .pairs_open
            .store(self.pairs.len() as u64, RELAXED);
    }

    /// The grant for an accepted request, to send back where it came from.
    pub fn grant(&mut self, req: &Request, port: u16) -> Option<[u8; RELAY_LEN]> {
        let key = self.keys.get(&req.pair.lan)?;
        self.counters.grants.fetch_add(1, RELAXED);
        Some(
            RelayMsg {
                kind: Kind::RelayGrant,
                lan: req.msg.lan,
                sender: req.msg.sender,
                seq: req.msg.seq,
                peer: req.msg.peer,
                port,
            }
            .emit(key),
        )
    }

    /// A datagram from `from` to the pair socket at `port`.
    pub fn handle_pair(
        &mut self,
        port: u16,
        from: SocketAddr,
        buf: &[u8],
        now: Instant,
    ) -> PairAction {
        let Some(pair) = self.pairs.get_mut(&port) else {
            return PairAction::Drop(self.drop(RelayDrop::Stranger));
        };
        let Ok(packet) = Packet::new_checked(buf) else {
            return PairAction::Drop(self.drop(RelayDrop::Malformed));
        };
        let h = *packet.header();
        let Some(end) = (h.lan == pair.key.lan)
            .then(|| pair.key.end(h.sender))
            .flatten()
        else {
            return PairAction::Drop(self.drop(RelayDrop::Stranger));
        };
        if h.kind == Kind::RelayBind {
            let Ok(Some((msg, mac))) = RelayMsg::parse(buf) else {
                return PairAction::Drop(self.drop(RelayDrop::Malformed));
            };
            let Some(key) = self.keys.get(&msg.lan) else {
                return PairAction::Drop(self.drop(RelayDrop::UnknownLan));
            };
            if !msg.verify(key, &mac) {
                return PairAction::Drop(self.drop(RelayDrop::BadMac));
            }
            let e = &mut pair.ends[end];
            if msg.seq <= e.seq {
                return PairAction::Drop(self.drop(RelayDrop::Replay));
            }
            e.seq = msg.seq;
            e.addr = Some(from);
            pair.last_active = now;
            self.counters.binds.fetch_add(1, RELAXED);
            return PairAction::Bound;
        }
        if pair.ends[end].addr != Some(from) {
            return PairAction::Drop(self.drop(RelayDrop::Stranger));
        }
        let Some(to) = pair.ends[1 - end].addr else {
            return PairAction::Drop(self.drop(RelayDrop::NoPeer));
        };
        if !self.bucket.take(buf.len(), now) {
            return PairAction::Drop(self.drop(RelayDrop::Limit));
        }
        pair.last_active = now;
        pair.packets += 1;
        pair.bytes += buf.len() as u64;
        self.counters.forwarded_packets.fetch_add(1, RELAXED);
        self.counters
            .forwarded_bytes
            .fetch_add(buf.len() as u64, RELAXED);
        PairAction::Forward(to)
    }

    /// Pairs idle for [`PAIR_IDLE`] are closed: their ports, for the io to close.
    pub fn poll_idle(&mut self, now: Instant) -> Vec<u16> {
        let idle: Vec<u16> = self
            .pairs
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_active) >= PAIR_IDLE)
            .map(|(port, _)| *port)
            .collect();
        for p in &idle {
            self.close(*p);
        }
        idle
    }

    /// The open pairs for status: (LAN id, host ids, port, packets, bytes, both ends bound).
    pub fn pairs(&self) -> Vec<counters::PairStatus> {
        let mut v: Vec<_> = self
            .pairs
            .iter()
            .map(|(port, p)| counters::PairStatus {
                lan_id: p.key.lan,
                hosts: [p.key.lo, p.key.hi],
                port: *port,
                packets: p.packets,
                bytes: p.bytes,
                bound: p.ends.iter().all(|e| e.addr.is_some()),
            })
            .collect();
        v.sort_by_key(|p| p.port);
        v
    }
}

const RELAXED: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

#[cfg(test)]
mod tests;
