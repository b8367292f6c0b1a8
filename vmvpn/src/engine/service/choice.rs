//! Choosing a new flow's backend among those up.
//!
//! `hash`: the flow's slot in the Maglev table, or the next slot whose backend is up.
//!
//! `least-load`: two candidates drawn from the table at two slots of the flow's hash (so
//! each is drawn in proportion to its weight), the one with the lower cost taken (the
//! power of two choices: two hosts deciding at once on the same stale figures split
//! between the two rather than all rushing to one). A backend's cost is
//!
//! ```text
//! (1 + load in Mbit/s both ways + open TCP connections
//!    + new flows this host gave it in the last 2 s)
//!     × (1 + max(0, RTT from this host in ms − 5) / 10) / weight
//! ```
//!
//! RTTs under 5 ms (one site; a busy host's probes wander within that) weigh nothing, so
//! jitter does not skew an even split; a backend 25 ms away costs three times a near one.
//!
//! The load and the connections are what its host measured and reported within the last
//! [`REPORT_FRESH_S`](super::REPORT_FRESH_S) seconds (a stale figure counts as 0: the choice
//! falls back to the new flows and the weights); the new flows count this host's own
//! choices at once, between two reports.

use super::{Policy, Service, TABLE_SIZE};

/// RTTs up to this weigh nothing in the cost.
const RTT_FREE_MS: f64 = 5.0;

/// Slots walked from a drawn one to find a backend that is up.
const WALK: usize = 64;

impl Service {
    /// The backend for a new flow with this hash; None when none is up.
    pub(super) fn choose(&self, hash: u64) -> Option<u16> {
        let slot = (hash % TABLE_SIZE as u64) as usize;
        // Suspects (hosts quiet a moment) only when nothing else is up.
        let (first, suspects) = match self.up_from(slot, None, false) {
            Some(b) => (b, false),
            None => (self.up_from(slot, None, true)?, true),
        };
        if self.spec.policy == Policy::Hash {
            return Some(first);
        }
        let slot2 = ((hash >> 32) % TABLE_SIZE as u64) as usize;
        let Some(second) = self.up_from(slot2, Some(first), suspects) else {
            return Some(first);
        };
        Some(if self.cost(second) < self.cost(first) {
            second
        } else {
            first
        })
    }

    /// The first backend up from `slot` on (other than `not`, and not a suspect unless
    /// `suspects`); any such one when the walk finds none (most of a large service down).
    fn up_from(&self, slot: usize, not: Option<u16>, suspects: bool) -> Option<u16> {
        let ok = |b: u16| {
            Some(b) != not
                && self
                    .backends
                    .get(usize::from(b))
                    .is_some_and(|b| b.up && b.mac.is_some() && (suspects || !b.suspect))
        };
        // The slots from `slot` on, wrapping: two ranges, so no division per slot (a
        // walk over a service whose backends are mostly down runs all 64).
        let n = self.table.len();
        let start = slot % n.max(1);
        let first = &self.table[start..n.min(start + WALK)];
        let wrapped = &self.table[..(start + WALK).saturating_sub(n).min(start)];
        first
            .iter()
            .chain(wrapped)
            .copied()
            .find(|&b| ok(b))
            .or_else(|| (0..self.backends.len() as u16).find(|&b| ok(b)))
    }

    /// A backend's cost (lower is better), as the module docs give it.
    pub(super) fn cost(&self, b: u16) -> f64 {
        let i = usize::from(b);
        let (Some(be), Some(spec)) = (self.backends.get(i), self.spec.backends.get(i)) else {
            return f64::MAX;
        };
        let load = f64::from(be.load_kbps) / 1000.0;
        let recent = f64::from(be.recent[0] + be.recent[1]) + f64::from(be.open_tcp);
        let rtt_ms = be.rtt_us as f64 / 1000.0;
        (1.0 + load + recent) * (1.0 + (rtt_ms - RTT_FREE_MS).max(0.0) / 10.0)
            / f64::from(spec.weight.max(1))
    }
}
