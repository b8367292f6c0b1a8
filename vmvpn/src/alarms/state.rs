//! One alert's life, as Prometheus lives it: inactive → pending (the condition holds, for
//! less than `for`) → firing → resolved (inactive again). Hysteresis: once firing, an alert
//! stays firing until its clear condition holds (by default, until the fire condition does
//! not) for `keep_firing_for`. So input that flaps faster than `for` never fires, and a
//! firing alert whose input dips for less than `keep_firing_for` never resolves and fires
//! again: nobody is notified twice for one fault.

use std::time::{Duration, Instant};

/// Hold times of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hold {
    /// The condition must hold this long before the alert fires.
    pub pending_for: Duration,
    /// Once firing, the clear condition must hold this long before it resolves.
    pub keep_firing_for: Duration,
}

/// Where an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing wrong.
    Inactive,
    /// The condition holds since then; not long enough yet.
    Pending {
        /// Since when.
        since: Instant,
    },
    /// Firing since `since`; `clear_since` is when its clear condition began to hold.
    Firing {
        /// Since when.
        since: Instant,
        /// When the clear condition began to hold (None: it does not).
        clear_since: Option<Instant>,
    },
}

/// What one evaluation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing to tell.
    None,
    /// Became pending.
    Pending,
    /// Started firing: notify.
    Fired,
    /// Stopped firing: notify that it is resolved.
    Resolved,
}

impl Phase {
    /// One evaluation at `now`: `fire` is the rule's condition, `clear` its clear condition
    /// (pass `!fire` without hysteresis).
    pub fn step(&mut self, fire: bool, clear: bool, hold: Hold, now: Instant) -> Transition {
        match *self {
            Phase::Inactive if fire => {
                if hold.pending_for.is_zero() {
                    *self = Phase::Firing {
                        since: now,
                        clear_since: None,
                    };
                    Transition::Fired
                } else {
                    *self = Phase::Pending { since: now };
                    Transition::Pending
                }
            }
            Phase::Inactive => Transition::None,
            Phase::Pending { .. } if !fire => {
                *self = Phase::Inactive;
                Transition::None
            }
            Phase::Pending { since } => {
                if now.saturating_duration_since(since) >= hold.pending_for {
                    *self = Phase::Firing {
                        since: now,
                        clear_since: None,
                    };
                    Transition::Fired
                } else {
                    Transition::None
                }
            }
            Phase::Firing { since, clear_since } => {
                if !clear || fire {
                    *self = Phase::Firing {
                        since,
                        clear_since: None,
                    };
                    return Transition::None;
                }
                let began = clear_since.unwrap_or(now);
                if now.saturating_duration_since(began) >= hold.keep_firing_for {
                    *self = Phase::Inactive;
                    Transition::Resolved
                } else {
                    *self = Phase::Firing {
                        since,
                        clear_since: Some(began),
                    };
                    Transition::None
                }
            }
        }
    }

    /// "inactive", "pending" or "firing".
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Inactive => "inactive",
            Phase::Pending { .. } => "pending",
            Phase::Firing { .. } => "firing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn hold(pending: u64, keep: u64) -> Hold {
        Hold {
            pending_for: S * pending as u32,
            keep_firing_for: S * keep as u32,
        }
    }

    /// Run `input` (one sample a second) and collect the transitions that notify.
    fn run(input: &[bool], h: Hold) -> Vec<(usize, Transition)> {
        let t0 = Instant::now();
        let mut p = Phase::Inactive;
        input
            .iter()
            .enumerate()
            .map(|(i, &x)| (i, p.step(x, !x, h, t0 + S * i as u32)))
            .filter(|(_, t)| matches!(t, Transition::Fired | Transition::Resolved))
            .collect()
    }

    #[test]
    fn inactive_pending_firing_resolved() {
        let t0 = Instant::now();
        let h = hold(30, 0);
        let mut p = Phase::Inactive;
        assert_eq!(p.step(false, true, h, t0), Transition::None);
        assert_eq!(p.step(true, false, h, t0), Transition::Pending);
        assert_eq!(p.name(), "pending");
        assert_eq!(p.step(true, false, h, t0 + S * 29), Transition::None);
        assert_eq!(p.step(true, false, h, t0 + S * 30), Transition::Fired);
        assert_eq!(p.name(), "firing");
        assert_eq!(p.step(true, false, h, t0 + S * 31), Transition::None);
        assert_eq!(p.step(false, true, h, t0 + S * 32), Transition::Resolved);
        assert_eq!(p, Phase::Inactive);
    }

    #[test]
    fn a_pending_alert_that_recovers_never_fires() {
        let mut input = vec![true; 10];
        input.push(false);
        input.extend([true; 10]);
        assert_eq!(run(&input, hold(15, 0)), []);
    }

    #[test]
    fn flapping_input_notifies_once_each_way() {
        // Bad for 40 s, then flapping every second for 20 s, then good.
        let mut input = vec![true; 40];
        input.extend((0..20).map(|i| i % 2 == 0));
        input.extend([false; 20]);
        let got = run(&input, hold(30, 5));
        assert_eq!(
            got,
            [(30, Transition::Fired), (64, Transition::Resolved)],
            "{got:?}"
        );
        // Without keep_firing_for it resolves at the first dip, while the fault goes on...
        assert_eq!(
            run(&input, hold(30, 0)),
            [(30, Transition::Fired), (41, Transition::Resolved)]
        );
        // ...and without any hold every flap is a notification.
        assert_eq!(run(&input, hold(0, 0)).len(), 20);
    }

    #[test]
    fn hysteresis_keeps_firing_between_the_two_thresholds() {
        // Fires above 2 %, clears only below 1 %.
        let t0 = Instant::now();
        let h = hold(0, 0);
        let mut p = Phase::Inactive;
        let step =
            |p: &mut Phase, loss: f64, t: u32| p.step(loss > 0.02, loss < 0.01, h, t0 + S * t);
        assert_eq!(step(&mut p, 0.03, 0), Transition::Fired);
        assert_eq!(step(&mut p, 0.015, 1), Transition::None);
        assert_eq!(p.name(), "firing", "between the thresholds it stays firing");
        assert_eq!(step(&mut p, 0.005, 2), Transition::Resolved);
        assert_eq!(step(&mut p, 0.015, 3), Transition::None);
        assert_eq!(p, Phase::Inactive, "and does not fire again in between");
    }

    #[test]
    fn zero_hold_fires_and_resolves_at_once() {
        assert_eq!(
            run(&[false, true, false], hold(0, 0)),
            [(1, Transition::Fired), (2, Transition::Resolved)]
        );
    }
}
