//! Path MTU of one tunnel, found by the overlay itself (packetization-layer PMTUD in the
//! manner of RFC 8899): padded probes sent with DF that the peer acknowledges. It needs no
//! ICMP, so a path that drops "fragmentation needed" (a PMTU black hole) is found too.
//!
//! The search starts from `base` (1280, or the underlay MTU if smaller), which data uses
//! until something larger is confirmed. It first tries the underlay MTU itself (the common
//! answer), then halves the interval between what was confirmed and what failed until the
//! two are within [`RESOLUTION`] bytes. A size fails after [`TRIES`] unanswered probes.
//! Once done, the current size is confirmed every [`CONFIRM_EVERY`], and at once when the
//! peer reports new loss of our datagrams; [`TRIES`] failed
//! confirmations in a row (the path shrank, e.g. a reroute) drop back to `base` and search
//! again, and every [`RAISE_EVERY`] a search looks whether the path grew. Sizes are IP
//! packet sizes on the underlay.

use std::time::{Duration, Instant};

/// The smallest path MTU assumed for any underlay (IPv6's minimum).
pub const BASE: u16 = 1280;
/// Unanswered probes before a size counts as failed.
pub const TRIES: u32 = 3;
/// How long a probe waits for its ack.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The search stops when confirmed and failed sizes are this close.
pub const RESOLUTION: u16 = 8;
/// How often the current size is confirmed.
pub const CONFIRM_EVERY: Duration = Duration::from_secs(15);
/// How often a completed search looks for a larger path.
pub const RAISE_EVERY: Duration = Duration::from_secs(600);

/// Where the search stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Looking for the largest size between `current` (confirmed) and `failed`.
    Searching {
        /// Smallest size known to fail (or the underlay MTU + 1).
        failed: u16,
    },
    /// Done: `current` is the path MTU.
    Complete,
}

/// The path MTU state of one tunnel.
#[derive(Debug, Clone)]
pub struct PathMtu {
    base: u16,
    max: u16,
    current: u16,
    phase: Phase,
    /// The probe in flight: its size, when it left, and how many of that size went.
    probe: Option<(u16, Instant)>,
    tries: u32,
    /// When the next confirmation or raise is due (in `Complete`).
    next_confirm: Option<Instant>,
    next_raise: Option<Instant>,
    /// Probes sent and acknowledged, searches completed, black holes found.
    pub probes_sent: u64,
    /// Acks received.
    pub acks: u64,
    /// Times the confirmed size stopped working and the search restarted.
    pub black_holes: u64,
}

impl PathMtu {
    /// A path of at most `max` bytes (the underlay MTU), assuming `min(BASE, max)` first.
    pub fn new(max: u16) -> Self {
        let base = BASE.min(max);
        PathMtu {
            base,
            max,
            current: base,
            phase: if max > base {
                Phase::Searching { failed: max + 1 }
            } else {
                Phase::Complete
            },
            probe: None,
            tries: 0,
            next_confirm: None,
            next_raise: None,
            probes_sent: 0,
            acks: 0,
            black_holes: 0,
        }
    }

    /// The confirmed path MTU: data never leaves in larger datagrams.
    pub fn current(&self) -> u16 {
        self.current
    }

    /// Where the search stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The size to try next while searching.
    fn candidate(&self, failed: u16) -> u16 {
        if failed > self.max {
            // First the underlay MTU itself: most paths carry it.
            self.max
        } else {
            self.current + (failed - self.current) / 2
        }
    }

    /// A probe to send now, of this size, if one is due. Call about every 100 ms.
    pub fn poll_probe(&mut self, now: Instant) -> Option<u16> {
        if let Some((size, sent)) = self.probe {
            if now.saturating_duration_since(sent) < PROBE_TIMEOUT {
                return None;
            }
            // Timed out.
            self.probe = None;
            self.tries += 1;
            if self.tries < TRIES {
                return Some(self.send(size, now));
            }
            self.tries = 0;
            match self.phase {
                Phase::Searching { .. } => {
                    let failed = size;
                    self.phase = if failed.saturating_sub(self.current) <= RESOLUTION {
                        self.complete(now)
                    } else {
                        Phase::Searching { failed }
                    };
                }
                Phase::Complete if size == self.current => {
                    // The confirmed size no longer passes: a black hole. Fall back and
                    // search again from the base.
                    self.black_holes += 1;
                    self.current = self.base;
                    self.phase = Phase::Searching { failed: size };
                    if size.saturating_sub(self.current) <= RESOLUTION {
                        self.phase = self.complete(now);
                    }
                }
                Phase::Complete => {
                    // A raise attempt failed: the path did not grow.
                    self.next_raise = Some(now + RAISE_EVERY);
                }
            }
        }
        match self.phase {
            Phase::Searching { failed } => Some(self.send(self.candidate(failed), now)),
            Phase::Complete => {
                if self.max > self.current && self.next_raise.is_some_and(|t| now >= t) {
                    self.next_raise = None;
                    return Some(self.send(self.max, now));
                }
                if self.next_confirm.is_some_and(|t| now >= t) && self.current > self.base {
                    self.next_confirm = Some(now + CONFIRM_EVERY);
                    return Some(self.send(self.current, now));
                }
                None
            }
        }
    }

    fn send(&mut self, size: u16, now: Instant) -> u16 {
        self.probe = Some((size, now));
        self.probes_sent += 1;
        size
    }

    fn complete(&mut self, now: Instant) -> Phase {
        self.next_confirm = Some(now + CONFIRM_EVERY);
        self.next_raise = Some(now + RAISE_EVERY);
        Phase::Complete
    }

    /// The peer reports new loss of what we sent: confirm the current size now rather
    /// than at the next confirmation (a path that shrank loses every large datagram).
    pub fn on_loss(&mut self, now: Instant) {
        if self.phase == Phase::Complete && self.probe.is_none() && self.current > self.base {
            self.next_confirm = Some(now);
        }
    }

    /// The peer acknowledged a probe of `size` bytes.
    pub fn on_ack(&mut self, size: u16, now: Instant) {
        self.acks += 1;
        let Some((sent, _)) = self.probe else {
            return;
        };
        if size != sent {
            // A late ack of an earlier probe still proves that size passes.
            if size > self.current && size <= self.max {
                self.current = size;
            }
            return;
        }
        self.probe = None;
        self.tries = 0;
        if size > self.current {
            self.current = size;
        }
        self.phase = match self.phase {
            Phase::Searching { failed }
                if failed.saturating_sub(self.current) > RESOLUTION && self.current < self.max =>
            {
                Phase::Searching { failed }
            }
            _ => self.complete(now),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the search against a path that carries `path` bytes; the final size and the
    /// probes it took.
    fn search(pm: &mut PathMtu, path: u16, t: &mut Instant) -> u32 {
        let mut probes = 0;
        for _ in 0..400 {
            *t += Duration::from_millis(100);
            if let Some(size) = pm.poll_probe(*t) {
                probes += 1;
                if size <= path {
                    pm.on_ack(size, *t);
                }
            }
            if pm.phase() == Phase::Complete && pm.probe.is_none() {
                return probes;
            }
        }
        panic!("no convergence: {pm:?}");
    }

    #[test]
    fn a_full_path_is_confirmed_with_one_probe() {
        let mut t = Instant::now();
        let mut pm = PathMtu::new(1500);
        assert_eq!(pm.current(), 1280, "data starts at the base");
        assert_eq!(search(&mut pm, 1500, &mut t), 1);
        assert_eq!(pm.current(), 1500);
    }

    #[test]
    fn a_smaller_path_without_icmp_is_found_within_the_resolution() {
        for path in [1280u16, 1300, 1400, 1450, 1492, 1499] {
            let mut t = Instant::now();
            let mut pm = PathMtu::new(1500);
            let probes = search(&mut pm, path, &mut t);
            assert!(
                pm.current() <= path && path - pm.current() <= RESOLUTION,
                "{path}: {pm:?}"
            );
            assert!(probes <= 30, "{path}: {probes} probes");
        }
    }

    #[test]
    fn a_path_that_shrinks_is_noticed_and_searched_again() {
        let mut t = Instant::now();
        let mut pm = PathMtu::new(1500);
        search(&mut pm, 1500, &mut t);
        // The path now carries only 1400 (a reroute through a tunnel), and no ICMP says so.
        let mut sizes = Vec::new();
        for _ in 0..600 {
            t += Duration::from_millis(100);
            if let Some(s) = pm.poll_probe(t) {
                sizes.push(s);
                if s <= 1400 {
                    pm.on_ack(s, t);
                }
            }
        }
        assert_eq!(pm.black_holes, 1);
        assert!(
            pm.current() <= 1400 && pm.current() > 1400 - RESOLUTION,
            "{pm:?}"
        );
        assert!(
            sizes.iter().take(TRIES as usize).all(|&s| s == 1500),
            "{sizes:?}"
        );
    }

    #[test]
    fn loss_brings_the_confirmation_forward() {
        let mut t = Instant::now();
        let mut pm = PathMtu::new(1500);
        search(&mut pm, 1500, &mut t);
        t += Duration::from_secs(1);
        assert_eq!(pm.poll_probe(t), None, "no confirmation due yet");
        pm.on_loss(t);
        assert_eq!(pm.poll_probe(t), Some(1500), "confirmed at once after loss");
        // Loss while a probe is out changes nothing.
        pm.on_loss(t);
        assert_eq!(pm.poll_probe(t), None);
    }

    #[test]
    fn a_path_that_grows_is_found_on_the_next_raise() {
        let mut t = Instant::now();
        let mut pm = PathMtu::new(1500);
        search(&mut pm, 1400, &mut t);
        let before = pm.current();
        t += RAISE_EVERY;
        search(&mut pm, 1500, &mut t);
        assert_eq!((before < 1500, pm.current()), (true, 1500));
    }

    #[test]
    fn an_underlay_at_or_below_the_base_never_probes() {
        let mut pm = PathMtu::new(1000);
        assert_eq!(pm.current(), 1000);
        assert_eq!(pm.poll_probe(Instant::now()), None);
        assert_eq!(pm.phase(), Phase::Complete);
    }
}
