//! Backend health, from the backend's own host: a probe every [`PROBE_EVERY`] (ARP,
//! neighbour solicitation or a TCP connect: `probe.rs`); [`DOWN_AFTER`] probes in a row
//! unanswered take it down, [`UP_AFTER`] answered in a row bring it back. The verdict
//! reaches the other hosts in the service-state reports.

use std::time::{Duration, Instant};

/// Time between probes of one backend.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Probes unanswered in a row before a backend is down.
pub const DOWN_AFTER: u8 = 3;
/// Probes answered in a row before a down backend is up again.
pub const UP_AFTER: u8 = 3;

/// One local backend's probing.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    /// The verdict (a backend starts up: until probes say otherwise, it is trusted).
    pub healthy: bool,
    misses: u8,
    answers: u8,
    outstanding: bool,
    next: Option<Instant>,
    /// Probes sent.
    pub probes: u64,
    /// Times it went down.
    pub downs: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            healthy: true,
            misses: 0,
            answers: 0,
            outstanding: false,
            next: None,
            probes: 0,
            downs: 0,
        }
    }
}

impl Health {
    /// Whether a probe is due at `now`; if so the last one's fate is settled (a miss if
    /// unanswered) and the next is scheduled. True in the second value when the verdict
    /// changed.
    pub fn due(&mut self, now: Instant) -> (bool, bool) {
        if self.next.is_some_and(|t| now < t) {
            return (false, false);
        }
        let changed = self.outstanding && self.miss();
        self.outstanding = true;
        self.probes += 1;
        self.next = Some(now + PROBE_EVERY);
        (true, changed)
    }

    /// The outstanding probe was refused (a TCP reset): a miss now, not at the next
    /// probe; true when the verdict changed.
    pub fn refused(&mut self) -> bool {
        if !self.outstanding {
            return false;
        }
        self.outstanding = false;
        self.miss()
    }

    /// One probe missed; true when that takes it down.
    fn miss(&mut self) -> bool {
        self.answers = 0;
        self.misses = self.misses.saturating_add(1);
        if self.healthy && self.misses >= DOWN_AFTER {
            self.healthy = false;
            self.downs += 1;
            return true;
        }
        false
    }

    /// The answer to the outstanding probe came; true when the verdict changed.
    pub fn answered(&mut self) -> bool {
        if !self.outstanding {
            return false;
        }
        self.outstanding = false;
        self.misses = 0;
        self.answers = self.answers.saturating_add(1);
        if !self.healthy && self.answers >= UP_AFTER {
            self.healthy = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_misses_take_it_down_and_three_answers_bring_it_back() {
        let mut h = Health::default();
        let t0 = Instant::now();
        let at = |k: u32| t0 + PROBE_EVERY * k;
        assert_eq!(h.due(at(0)), (true, false));
        assert!(h.healthy);
        assert_eq!(h.due(at(0)), (false, false), "not due again yet");
        // Unanswered: the 2nd, 3rd and 4th probe each find the one before unanswered.
        assert_eq!(h.due(at(1)), (true, false));
        assert_eq!(h.due(at(2)), (true, false));
        assert_eq!(h.due(at(3)), (true, true));
        assert!(!h.healthy);
        assert_eq!(h.downs, 1);
        for k in 4..6 {
            assert!(!h.answered());
            assert_eq!(h.due(at(k)), (true, false));
        }
        assert!(h.answered(), "the third answer in a row");
        assert!(h.healthy);
        assert!(!h.answered(), "one answer per probe");
    }
}
