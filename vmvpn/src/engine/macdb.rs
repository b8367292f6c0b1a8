//! The MAC database of one LAN: which MAC lives behind which peer, or on this host.
//!
//! Bounded by capacity (least recently learned entries are evicted, counted), and entries
//! age out after `max_age` without traffic from that MAC (default 300 s, as a Linux
//! bridge). A MAC that shows up somewhere else moves there at once (VM migration),
//! counted as a move.

use std::cell::Cell;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::ids::PeerId;

// One MAC type, group test and formatter for the whole workspace: telemetry's.
pub use telemetry::frame::{Mac, is_group};

/// Where a MAC was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Behind this host's TAP (a local VM).
    Local,
    /// Behind this peer of the LAN.
    Peer(PeerId),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Location,
    last_seen: Instant,
}

pub use crate::status::MacDbStats;

/// The MAC database of one LAN.
pub struct MacDb {
    table: LruCache<Mac, Entry>,
    max_age: Duration,
    stats: MacDbStats,
    /// The latest learn: the frames of one batch share a `now`, and a run of them from one
    /// VM would each hash the MAC and promote an entry that is already the newest (about
    /// 3 % of a receiving daemon's time in a TCP transfer). Repeating the latest learn at
    /// the same `now` changes nothing, so it is skipped.
    learned_last: Option<(Mac, Location, Instant)>,
    /// The latest lookup that found a MAC, for the segments of one TSO frame (the same
    /// destination, the same `now`). Forgotten at any learn but a repeat, and at a sweep
    /// or a departure.
    looked_up: Cell<Option<(Mac, Location, Instant)>>,
}

/// What [`MacDb::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// First time this MAC is seen.
    New,
    /// Already known at the same place; refreshed.
    Refreshed,
    /// Was known elsewhere; moved here.
    Moved {
        /// The previous location.
        from: Location,
    },
}

/// One row of [`MacDb::entries`].
#[derive(Debug, Clone, Copy)]
pub struct MacEntry {
    /// The address.
    pub mac: Mac,
    /// Where it lives.
    pub at: Location,
    /// Time since it was last seen.
    pub age: Duration,
}

/// Default ageing time, as a Linux bridge.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// Default capacity per LAN.
pub const DEFAULT_CAPACITY: usize = 8192;

impl MacDb {
    /// An empty database of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        MacDb {
            table: LruCache::new(cap),
            max_age,
            stats: MacDbStats::default(),
            learned_last: None,
            looked_up: Cell::new(None),
        }
    }

    /// The memos no longer hold (an entry was added, moved or removed).
    fn forget_memos(&mut self) {
        self.learned_last = None;
        self.looked_up.set(None);
    }

    /// Record that `mac` was seen at `at`. Group addresses are never learned.
    pub fn learn(&mut self, mac: Mac, at: Location, now: Instant) -> Option<Learned> {
        if is_group(&mac) {
            return None;
        }
        if self.learned_last == Some((mac, at, now)) {
            // Already the newest entry, seen at this very `now`.
            return Some(Learned::Refreshed);
        }
        // Any other learn may change a lookup's answer (even a refresh, were `now` older).
        self.looked_up.set(None);
        if let Some(e) = self.table.get_mut(&mac) {
            let prev = e.at;
            e.at = at;
            e.last_seen = now;
            if prev == at {
                self.learned_last = Some((mac, at, now));
                return Some(Learned::Refreshed);
            }
            self.stats.moves += 1;
            self.learned_last = Some((mac, at, now));
            return Some(Learned::Moved { from: prev });
        }
        if self.table.push(mac, Entry { at, last_seen: now }).is_some() {
            // push returns the evicted LRU entry when full (a new key never replaces).
            self.stats.evicted += 1;
        }
        self.stats.learned += 1;
        self.learned_last = Some((mac, at, now));
        Some(Learned::New)
    }

    /// Where `mac` lives, if known and not aged out. Does not change recency: forwarding
    /// lookups must not keep a silent MAC alive.
    pub fn lookup(&self, mac: &Mac, now: Instant) -> Option<Location> {
        if let Some((m, at, t)) = self.looked_up.get()
            && m == *mac
            && t == now
        {
            return Some(at);
        }
        let e = self.table.peek(mac)?;
        let at = (now.saturating_duration_since(e.last_seen) < self.max_age).then_some(e.at)?;
        self.looked_up.set(Some((*mac, at, now)));
        Some(at)
    }

    /// Remove aged entries; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.forget_memos();
        let max_age = self.max_age;
        let before = self.table.len();
        self.table
            .retain(|_, e| now.saturating_duration_since(e.last_seen) < max_age);
        let n = before - self.table.len();
        self.stats.aged_out += n as u64;
        n
    }

    /// Forget every MAC behind a peer (the peer left), and shift indexes above it down.
    pub fn forget_peer(&mut self, peer: PeerId) {
        self.forget_memos();
        self.table.retain(|_, e| e.at != Location::Peer(peer));
        for (_, e) in self.table.iter_mut() {
            if let Location::Peer(p) = e.at
                && p > peer
            {
                e.at = Location::Peer(PeerId(p.0 - 1));
            }
        }
    }

    /// Current entries, most recently learned first.
    pub fn entries(&self, now: Instant) -> impl Iterator<Item = MacEntry> + '_ {
        self.table.iter().map(move |(mac, e)| MacEntry {
            mac: *mac,
            at: e.at,
            age: now.saturating_duration_since(e.last_seen),
        })
    }

    /// Number of entries (including aged ones not yet swept).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> MacDbStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [2, 0, 0, 0, 0, 1];
    const B: Mac = [2, 0, 0, 0, 0, 2];
    const C: Mac = [2, 0, 0, 0, 0, 3];

    #[test]
    fn learns_and_looks_up() {
        let t0 = Instant::now();
        let mut db = MacDb::new(16, DEFAULT_MAX_AGE);
        assert_eq!(db.lookup(&A, t0), None);
        assert_eq!(
            db.learn(A, Location::Peer(PeerId(1)), t0),
            Some(Learned::New)
        );
        assert_eq!(
            db.learn(A, Location::Peer(PeerId(1)), t0),
            Some(Learned::Refreshed)
        );
        assert_eq!(db.lookup(&A, t0), Some(Location::Peer(PeerId(1))));
        assert_eq!(db.stats().learned, 1);
    }

    #[test]
    fn group_addresses_are_never_learned() {
        let mut db = MacDb::new(16, DEFAULT_MAX_AGE);
        assert_eq!(
            db.learn([0xff; 6], Location::Peer(PeerId(0)), Instant::now()),
            None
        );
        assert_eq!(
            db.learn(
                [0x01, 0, 0x5e, 0, 0, 1],
                Location::Peer(PeerId(0)),
                Instant::now()
            ),
            None
        );
        assert!(db.is_empty());
    }

    #[test]
    fn entries_age_out_after_max_age() {
        let t0 = Instant::now();
        let mut db = MacDb::new(16, Duration::from_secs(300));
        db.learn(A, Location::Peer(PeerId(0)), t0);
        db.learn(B, Location::Peer(PeerId(0)), t0 + Duration::from_secs(200));
        let t1 = t0 + Duration::from_secs(299);
        assert_eq!(db.lookup(&A, t1), Some(Location::Peer(PeerId(0))));
        let t2 = t0 + Duration::from_secs(300);
        assert_eq!(
            db.lookup(&A, t2),
            None,
            "aged entries are not used even before a sweep"
        );
        assert_eq!(db.expire(t2), 1);
        assert_eq!(db.len(), 1);
        assert_eq!(db.lookup(&B, t2), Some(Location::Peer(PeerId(0))));
        assert_eq!(db.stats().aged_out, 1);
    }

    #[test]
    fn traffic_refreshes_age_but_lookups_do_not() {
        let t0 = Instant::now();
        let mut db = MacDb::new(16, Duration::from_secs(10));
        db.learn(A, Location::Peer(PeerId(0)), t0);
        for s in 1..20 {
            let _ = db.lookup(&A, t0 + Duration::from_secs(s));
        }
        assert_eq!(db.lookup(&A, t0 + Duration::from_secs(10)), None);
        db.learn(A, Location::Peer(PeerId(0)), t0 + Duration::from_secs(9));
        assert!(db.lookup(&A, t0 + Duration::from_secs(18)).is_some());
    }

    #[test]
    fn capacity_evicts_least_recently_learned() {
        let t0 = Instant::now();
        let mut db = MacDb::new(2, DEFAULT_MAX_AGE);
        db.learn(A, Location::Peer(PeerId(0)), t0);
        db.learn(B, Location::Peer(PeerId(0)), t0);
        db.learn(A, Location::Peer(PeerId(0)), t0); // A is now the most recent
        db.learn(C, Location::Peer(PeerId(0)), t0);
        assert_eq!(db.len(), 2);
        assert_eq!(db.lookup(&B, t0), None, "B was least recently learned");
        assert!(db.lookup(&A, t0).is_some() && db.lookup(&C, t0).is_some());
        assert_eq!(db.stats().evicted, 1);
    }

    #[test]
    fn a_mac_that_appears_elsewhere_moves_at_once() {
        let t0 = Instant::now();
        let mut db = MacDb::new(16, DEFAULT_MAX_AGE);
        db.learn(A, Location::Peer(PeerId(0)), t0);
        assert_eq!(
            db.learn(A, Location::Peer(PeerId(2)), t0),
            Some(Learned::Moved {
                from: Location::Peer(PeerId(0))
            })
        );
        assert_eq!(db.lookup(&A, t0), Some(Location::Peer(PeerId(2))));
        assert_eq!(
            db.learn(A, Location::Local, t0),
            Some(Learned::Moved {
                from: Location::Peer(PeerId(2))
            })
        );
        assert_eq!(db.lookup(&A, t0), Some(Location::Local));
        assert_eq!(db.stats().moves, 2);
    }

    #[test]
    fn forgetting_a_peer_drops_its_macs_and_renumbers() {
        let t0 = Instant::now();
        let mut db = MacDb::new(16, DEFAULT_MAX_AGE);
        db.learn(A, Location::Peer(PeerId(0)), t0);
        db.learn(B, Location::Peer(PeerId(1)), t0);
        db.learn(C, Location::Peer(PeerId(2)), t0);
        db.forget_peer(PeerId(1));
        assert_eq!(db.lookup(&A, t0), Some(Location::Peer(PeerId(0))));
        assert_eq!(db.lookup(&B, t0), None);
        assert_eq!(db.lookup(&C, t0), Some(Location::Peer(PeerId(1))));
    }

    /// The reference model: a list, most recently learned first, without memos.
    #[derive(Default)]
    struct Model {
        rows: Vec<(Mac, Location, Instant)>,
    }

    impl Model {
        fn learn(&mut self, cap: usize, mac: Mac, at: Location, now: Instant) -> Option<Learned> {
            if is_group(&mac) {
                return None;
            }
            if let Some(i) = self.rows.iter().position(|r| r.0 == mac) {
                let (_, prev, _) = self.rows.remove(i);
                self.rows.insert(0, (mac, at, now));
                return Some(if prev == at {
                    Learned::Refreshed
                } else {
                    Learned::Moved { from: prev }
                });
            }
            self.rows.insert(0, (mac, at, now));
            self.rows.truncate(cap);
            Some(Learned::New)
        }

        fn lookup(&self, mac: &Mac, now: Instant, max_age: Duration) -> Option<Location> {
            let r = self.rows.iter().find(|r| r.0 == *mac)?;
            (now.saturating_duration_since(r.2) < max_age).then_some(r.1)
        }
    }

    proptest::proptest! {
        /// The memos never change an answer: learns, lookups, sweeps and departures in any
        /// order (few MACs, peers and instants, so that repeats are common) give what a
        /// plain list gives, and leave the same entries in the same order.
        #[test]
        fn memos_change_no_answer(ops in proptest::collection::vec((0u8..5, 0u8..4, 0u8..3, 0u64..6), 1..200)) {
            let t0 = Instant::now();
            let max_age = Duration::from_secs(3);
            let cap = 3;
            let mut db = MacDb::new(cap, max_age);
            let mut model = Model::default();
            for (op, m, p, t) in ops {
                let mac: Mac = [2, 0, 0, 0, 0, m];
                let at = if p == 0 { Location::Local } else { Location::Peer(PeerId(u32::from(p))) };
                let now = t0 + Duration::from_secs(t);
                match op {
                    0 | 1 => proptest::prop_assert_eq!(db.learn(mac, at, now), model.learn(cap, mac, at, now)),
                    2 | 3 => proptest::prop_assert_eq!(db.lookup(&mac, now), model.lookup(&mac, now, max_age)),
                    _ if p == 0 => {
                        db.expire(now);
                        model.rows.retain(|r| now.saturating_duration_since(r.2) < max_age);
                    }
                    _ => {
                        let gone = PeerId(u32::from(p));
                        db.forget_peer(gone);
                        model.rows.retain(|r| r.1 != Location::Peer(gone));
                        for r in &mut model.rows {
                            if let Location::Peer(q) = r.1 && q > gone {
                                r.1 = Location::Peer(PeerId(q.0 - 1));
                            }
                        }
                    }
                }
            }
            let got: Vec<(Mac, Location)> = db.entries(t0).map(|e| (e.mac, e.at)).collect();
            let want: Vec<(Mac, Location)> = model.rows.iter().map(|r| (r.0, r.1)).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
