//! Loss and reordering from one sender's sequence numbers (passive, on the hot path).
//!
//! Each tunnel direction numbers its datagrams 0, 1, 2, …, so gaps are losses, if they stay
//! gaps. A missing number counts as lost only once it falls `WINDOW` behind the newest one
//! seen; until then it may still arrive, reordered. One that arrives later still is "late":
//! it was counted lost, so it is taken off the loss count again (the count is of numbers
//! never received, as RFC 3550's cumulative loss). Duplicates never get here: the replay
//! window drops them before, and counts them with [`SeqTracker::duplicate`].

use serde::{Deserialize, Serialize};

/// How far behind the newest a missing sequence number may still arrive before it counts as
/// lost.
pub const WINDOW: u64 = 64;

/// Counters of one direction of one tunnel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqStats {
    /// Datagrams received (authenticated).
    #[serde(rename = "rx_sequenced_total")]
    pub received: u64,
    /// Sequence numbers never received, once out of the reorder window.
    #[serde(rename = "rx_lost_total")]
    pub lost: u64,
    /// Datagrams that arrived after a higher sequence number.
    #[serde(rename = "rx_reordered_total")]
    pub reordered: u64,
    /// Of those, the ones so late they had been counted lost.
    #[serde(rename = "rx_late_total")]
    pub late: u64,
    /// Copies of a datagram already received (counted by the replay window).
    #[serde(rename = "rx_duplicates_total")]
    pub duplicates: u64,
}

impl SeqStats {
    /// Lost / (received + lost): the loss ratio of this direction so far.
    pub fn loss_ratio(&self) -> f64 {
        let expected = self.received + self.lost;
        if expected == 0 {
            0.0
        } else {
            self.lost as f64 / expected as f64
        }
    }
}

/// Tracks one sender's sequence numbers.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    /// The first number seen (numbers before it were never expected).
    base: u64,
    /// The newest number seen; None before the first.
    highest: Option<u64>,
    /// Bit k: `highest - k` was received (k < WINDOW).
    seen: u64,
    stats: SeqStats,
}

impl SeqTracker {
    /// Record an authenticated datagram with sequence number `seq` (not a duplicate).
    #[inline]
    pub fn observe(&mut self, seq: u64) {
        self.stats.received += 1;
        let Some(high) = self.highest else {
            self.base = seq;
            self.highest = Some(seq);
            self.seen = 1;
            return;
        };
        if seq > high {
            let d = seq - high;
            // Numbers leaving the window unseen are lost: bits that shift past WINDOW - 1,
            // plus any gap so large its numbers never entered the window at all.
            let leaving = if d >= WINDOW {
                u64::MAX
            } else {
                u64::MAX << (WINDOW - d)
            };
            let valid = valid_mask(high - self.base);
            self.stats.lost += (!self.seen & leaving & valid).count_ones() as u64;
            if d > WINDOW {
                self.stats.lost += d - WINDOW;
            }
            self.seen = if d >= WINDOW { 1 } else { (self.seen << d) | 1 };
            self.highest = Some(seq);
            return;
        }
        self.stats.reordered += 1;
        let behind = high - seq;
        if behind < WINDOW {
            self.seen |= 1 << behind;
        } else if seq >= self.base {
            // Counted lost when it left the window; it did arrive after all.
            self.stats.late += 1;
            self.stats.lost = self.stats.lost.saturating_sub(1);
        }
    }

    /// Count a duplicate the replay window dropped.
    #[inline]
    pub fn duplicate(&mut self) {
        self.stats.duplicates += 1;
    }

    /// The counters.
    pub fn stats(&self) -> SeqStats {
        self.stats
    }

    /// Start over (the sender restarted: its numbering starts again), keeping the counts.
    pub fn restart(&mut self) {
        self.highest = None;
        self.seen = 0;
    }
}

/// Bits of positions 0..=span (numbers from `highest - span` up), capped at the window.
fn valid_mask(span: u64) -> u64 {
    if span >= WINDOW - 1 {
        u64::MAX
    } else {
        (1u64 << (span + 1)) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn in_order_has_no_loss_and_no_reordering() {
        let mut t = SeqTracker::default();
        for s in 100..1000 {
            t.observe(s);
        }
        assert_eq!(
            t.stats(),
            SeqStats {
                received: 900,
                ..SeqStats::default()
            }
        );
        assert_eq!(t.stats().loss_ratio(), 0.0);
    }

    #[test]
    fn a_gap_counts_as_lost_only_once_it_leaves_the_window() {
        let mut t = SeqTracker::default();
        t.observe(0);
        t.observe(2); // 1 is missing, maybe late
        for s in 3..=WINDOW {
            t.observe(s);
        }
        assert_eq!(t.stats().lost, 0, "1 is still within the window");
        t.observe(WINDOW + 1);
        assert_eq!(t.stats().lost, 1, "now 1 is out of the window");
        // 1 arrives after all: late, and no longer lost.
        t.observe(1);
        assert_eq!(
            (t.stats().lost, t.stats().late, t.stats().reordered),
            (0, 1, 1)
        );
    }

    #[test]
    fn reordering_within_the_window_is_not_loss() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 3, 2, 5, 4, 6] {
            t.observe(s);
        }
        for s in 7..200 {
            t.observe(s);
        }
        assert_eq!((t.stats().lost, t.stats().reordered), (0, 2));
    }

    #[test]
    fn a_long_outage_counts_every_missing_number() {
        let mut t = SeqTracker::default();
        t.observe(10);
        t.observe(1010);
        t.observe(1011 + WINDOW);
        // 11..=1009 and 1011 are out of the window; 1012..=1074 may still come.
        assert_eq!(t.stats().lost, 999 + 1);
        assert!((t.stats().loss_ratio() - 1000.0 / 1003.0).abs() < 1e-9);
    }

    #[test]
    fn duplicates_and_restarts() {
        let mut t = SeqTracker::default();
        t.observe(5);
        t.duplicate();
        t.restart();
        t.observe(0);
        t.observe(1);
        assert_eq!(
            (t.stats().received, t.stats().duplicates, t.stats().lost),
            (3, 1, 0)
        );
    }

    proptest! {
        /// Against a model that remembers every number: lost is the count of numbers from the
        /// first seen up to `WINDOW` behind the newest that never arrived.
        #[test]
        fn matches_a_set_model(
            start in 0u64..1_000_000,
            steps in proptest::collection::vec((0u64..3, 0u64..80), 1..300),
        ) {
            // Build distinct arrivals: mostly forward, some jumps back (reordering), some skips.
            let mut arrivals = Vec::new();
            let mut seen = BTreeSet::new();
            let mut cursor = start;
            for (kind, n) in steps {
                let s = match kind {
                    0 => { cursor += 1; cursor }
                    1 => { cursor += 1 + n; cursor }
                    _ => cursor.saturating_sub(n).max(start),
                };
                if seen.insert(s) {
                    arrivals.push(s);
                }
            }
            let mut t = SeqTracker::default();
            let mut got = BTreeSet::new();
            // Numbers before the first one seen were never expected.
            let base = arrivals[0];
            for s in arrivals {
                t.observe(s);
                got.insert(s);
                let high = *got.iter().next_back().expect("non-empty");
                let lost = if high >= base + WINDOW {
                    (base..=high - WINDOW).filter(|x| !got.contains(x)).count() as u64
                } else {
                    0
                };
                prop_assert_eq!(t.stats().lost, lost, "after {}", s);
                prop_assert_eq!(t.stats().received, got.len() as u64);
            }
        }
    }
}
