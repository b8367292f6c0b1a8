//! The bulletin's global memory budget for what waits to be sent (`max_buffered_mb`):
//! every connection's outbox is bounded on its own (`server::OUTBOX_BYTES`), but thousands
//! of connections that stop reading would add up to gigabytes. The budget counts the
//! outboxes' bytes exactly, and QUIC's own send buffer as one send window for each
//! connection whose writer waits on it (quinn says no more than that it is full). Over the
//! budget, the server closes the most backlogged connections first; a host reconnects and
//! resyncs from a snapshot, as after any lost connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The budget and what is charged to it now.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    /// QUIC's send window per connection: what a waiting writer counts for.
    window: usize,
    buffered: AtomicUsize,
    waiting: AtomicUsize,
    shed: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes, where a waiting writer counts `window` bytes.
    pub fn new(limit: usize, window: usize) -> Arc<Self> {
        Arc::new(Budget {
            limit,
            window,
            buffered: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
        })
    }

    /// Charge `n` bytes queued for a writer, until the charge is dropped.
    pub fn charge(self: &Arc<Self>, n: usize) -> Charge {
        self.buffered.fetch_add(n, Ordering::Relaxed);
        Charge {
            budget: self.clone(),
            n,
        }
    }

    /// A writer waits on QUIC until the guard is dropped.
    pub fn waiting(self: &Arc<Self>) -> Waiting {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self.clone())
    }

    /// Bytes charged now (outboxes, plus a window per waiting writer).
    pub fn used(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
            + self
                .waiting
                .load(Ordering::Relaxed)
                .saturating_mul(self.window)
    }

    /// How far over the budget it is (0 within it).
    pub fn excess(&self) -> usize {
        self.used().saturating_sub(self.limit)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What one waiting writer counts for.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Count a connection closed for the budget.
    pub fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed for the budget since start.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

/// Bytes charged to the budget, given back when dropped (when the writer took them).
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    n: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.buffered.fetch_sub(self.n, Ordering::Relaxed);
    }
}

/// A writer waiting on QUIC; the count drops with it.
#[derive(Debug)]
pub struct Waiting(Arc<Budget>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_and_waiting_writers_come_and_go() {
        let b = Budget::new(1000, 300);
        let c1 = b.charge(400);
        let w = b.waiting();
        assert_eq!(b.used(), 700);
        assert_eq!(b.excess(), 0);
        let c2 = b.charge(500);
        assert_eq!(b.excess(), 200);
        drop(c1);
        drop(w);
        assert_eq!(b.used(), 500);
        drop(c2);
        assert_eq!(b.used(), 0);
    }
}
