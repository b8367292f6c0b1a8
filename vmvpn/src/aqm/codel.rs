//! CoDel (RFC 8289) for a queue we only see from its head: the kernel's receive queue of
//! the data-plane socket. Each batch read from it tells how long its newest datagram
//! waited (the socket's receive timestamp); CoDel turns that sojourn time into drops at
//! the rate its control law sets (`interval / sqrt(count)`), so a TCP flow that fills the
//! queue backs off until the queue stands under `target` again.

use std::time::{Duration, Instant};

/// RFC 8289's defaults: 5 ms of standing queue is tolerated; above it for 100 ms, drop.
pub const TARGET: Duration = Duration::from_millis(5);
/// See [`TARGET`].
pub const INTERVAL: Duration = Duration::from_millis(100);

/// CoDel's state for one queue.
#[derive(Debug, Clone)]
pub struct Codel {
    target: Duration,
    interval: Duration,
    /// When the sojourn time went above target and stayed there, plus one interval.
    first_above: Option<Instant>,
    dropping: bool,
    drop_next: Option<Instant>,
    count: u32,
    last_count: u32,
}

impl Default for Codel {
    fn default() -> Self {
        Codel::new(TARGET, INTERVAL)
    }
}

impl Codel {
    /// A CoDel with its target sojourn time and interval.
    pub fn new(target: Duration, interval: Duration) -> Self {
        Codel {
            target,
            interval,
            first_above: None,
            dropping: false,
            drop_next: None,
            count: 0,
            last_count: 0,
        }
    }

    /// In the dropping state (the queue stood above target for an interval or more).
    pub fn dropping(&self) -> bool {
        self.dropping
    }

    /// A batch left the queue at `now`; its newest packet waited `sojourn`, and `drained`
    /// says the read emptied the queue. Returns how many of its packets to drop (or
    /// mark), at most `packets`.
    pub fn handle_dequeue(
        &mut self,
        sojourn: Duration,
        drained: bool,
        packets: u32,
        now: Instant,
    ) -> u32 {
        let ok_to_drop = self.ok_to_drop(sojourn, drained, now);
        let mut drops = 0;
        if self.dropping {
            if !ok_to_drop {
                self.dropping = false;
                return 0;
            }
            while drops < packets {
                let Some(next) = self.drop_next else { break };
                if now < next {
                    break;
                }
                drops += 1;
                self.count = self.count.saturating_add(1);
                self.drop_next = Some(self.control_law(next));
            }
        } else if ok_to_drop && packets > 0 {
            drops = 1;
            self.dropping = true;
            // Coming back soon after the last dropping state: start at the rate that
            // state had reached (RFC 8289 §5.6), not from one drop per interval.
            let delta = self.count.saturating_sub(self.last_count);
            let recent = self
                .drop_next
                .is_some_and(|n| now.saturating_duration_since(n) < 16 * self.interval);
            self.count = if delta > 1 && recent { delta } else { 1 };
            self.drop_next = Some(self.control_law(now));
            self.last_count = self.count;
        }
        drops
    }

    fn ok_to_drop(&mut self, sojourn: Duration, drained: bool, now: Instant) -> bool {
        if sojourn < self.target || drained {
            self.first_above = None;
            return false;
        }
        match self.first_above {
            None => {
                self.first_above = Some(now + self.interval);
                false
            }
            Some(t) => now >= t,
        }
    }

    fn control_law(&self, t: Instant) -> Instant {
        t + self.interval.div_f64(f64::from(self.count.max(1)).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds one batch a millisecond for `ms` milliseconds; returns the drops.
    fn run(c: &mut Codel, t0: Instant, from_ms: u64, ms: u64, sojourn: Duration) -> u32 {
        (from_ms..from_ms + ms)
            .map(|i| c.handle_dequeue(sojourn, false, 32, t0 + MS * i as u32))
            .sum()
    }

    #[test]
    fn a_queue_under_target_is_never_touched() {
        let mut c = Codel::default();
        let t0 = Instant::now();
        assert_eq!(run(&mut c, t0, 0, 10_000, 4 * MS), 0);
        assert!(!c.dropping());
    }

    #[test]
    fn a_short_burst_above_target_passes() {
        let mut c = Codel::default();
        let t0 = Instant::now();
        assert_eq!(run(&mut c, t0, 0, 99, 50 * MS), 0);
        assert_eq!(c.handle_dequeue(MS, false, 32, t0 + 99 * MS), 0);
        assert_eq!(run(&mut c, t0, 100, 99, 50 * MS), 0);
    }

    #[test]
    fn a_standing_queue_drops_at_a_rising_rate_then_stops() {
        let mut c = Codel::default();
        let t0 = Instant::now();
        // Nothing in the first interval, one drop when it ends.
        assert_eq!(run(&mut c, t0, 0, 100, 20 * MS), 0);
        assert_eq!(run(&mut c, t0, 100, 1, 20 * MS), 1);
        assert!(c.dropping());
        // The next second drops more than one per interval: interval / sqrt(count).
        let second = run(&mut c, t0, 101, 1000, 20 * MS);
        assert!((11..=40).contains(&second), "{second} drops in a second");
        let next = run(&mut c, t0, 1101, 1000, 20 * MS);
        assert!(next > second, "the rate rises: {second} then {next}");
        // The queue goes under target: no more drops, the state ends.
        assert_eq!(c.handle_dequeue(2 * MS, false, 32, t0 + 2101 * MS), 0);
        assert!(!c.dropping());
        assert_eq!(run(&mut c, t0, 2102, 50, 2 * MS), 0);
    }

    #[test]
    fn an_emptied_queue_resets_the_clock() {
        let mut c = Codel::default();
        let t0 = Instant::now();
        for i in 0..1000u32 {
            // Above target, but the read emptied the queue each time.
            assert_eq!(c.handle_dequeue(30 * MS, true, 32, t0 + MS * i), 0);
        }
    }

    #[test]
    fn drops_never_exceed_the_batch() {
        let mut c = Codel::default();
        let t0 = Instant::now();
        run(&mut c, t0, 0, 101, 20 * MS);
        // A long pause, then one batch: many drops are due, the batch holds one packet.
        assert_eq!(c.handle_dequeue(20 * MS, false, 1, t0 + 5000 * MS), 1);
        assert_eq!(c.handle_dequeue(20 * MS, false, 0, t0 + 5001 * MS), 0);
    }

    #[test]
    fn a_quick_return_resumes_the_last_rate() {
        let mut c = Codel::default();
        let t0 = Instant::now();
        run(&mut c, t0, 0, 2000, 20 * MS);
        let reached = c.count;
        assert!(reached > 10);
        c.handle_dequeue(MS, false, 32, t0 + 2000 * MS);
        // Above target again for an interval, soon after: count starts near where it was.
        run(&mut c, t0, 2001, 101, 20 * MS);
        assert!(c.dropping());
        assert!(c.count > 1, "count {} restarted from 1", c.count);
    }
}
