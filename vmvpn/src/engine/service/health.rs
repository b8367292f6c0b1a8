//! Backend health, from the backend's own host: an ARP probe for its address every
//! [`PROBE_EVERY`], written to the TAP as if from the service's virtual MAC (sender
//! address 0.0.0.0, RFC 5227's probe, so the VM's neighbour table is not touched);
//! [`DOWN_AFTER`] probes in a row unanswered take it down, [`UP_AFTER`] answered in a
//! row bring it back. The verdict reaches the other hosts in the service-state reports.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::engine::macdb::Mac;

/// Time between probes of one backend.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Probes unanswered in a row before a backend is down.
pub const DOWN_AFTER: u8 = 3;
/// Probes answered in a row before a down backend is up again.
pub const UP_AFTER: u8 = 3;
/// An ARP frame, padded to Ethernet's minimum.
pub const PROBE_LEN: usize = 60;

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
        let mut changed = false;
        if self.outstanding {
            self.answers = 0;
            self.misses = self.misses.saturating_add(1);
            if self.healthy && self.misses >= DOWN_AFTER {
                self.healthy = false;
                self.downs += 1;
                changed = true;
            }
        }
        self.outstanding = true;
        self.probes += 1;
        self.next = Some(now + PROBE_EVERY);
        (true, changed)
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

/// Write an ARP probe for `ip` (at `mac`) from `vmac` into `out` (≥ [`PROBE_LEN`]).
pub fn write_probe(out: &mut [u8], vmac: &Mac, mac: &Mac, ip: Ipv4Addr) -> usize {
    let f = &mut out[..PROBE_LEN];
    f.fill(0);
    f[..6].copy_from_slice(mac);
    f[6..12].copy_from_slice(vmac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(vmac);
    // Sender address 0.0.0.0 (bytes 28..32), target MAC zero (32..38).
    f[38..42].copy_from_slice(&ip.octets());
    PROBE_LEN
}

/// The answer to a probe from one of `vmacs`: (the service's MAC, the answering VM's).
pub fn probe_answer(frame: &[u8]) -> Option<(Mac, Mac)> {
    const ARP: usize = 14;
    if frame.len() < ARP + 28
        || frame[12..14] != [0x08, 0x06]
        || frame[ARP..ARP + 6] != [0, 1, 8, 0, 6, 4]
        || frame[ARP + 6..ARP + 8] != [0, 2]
    {
        return None;
    }
    let mut to = [0u8; 6];
    to.copy_from_slice(&frame[..6]);
    let mut from = [0u8; 6];
    from.copy_from_slice(&frame[ARP + 8..ARP + 14]);
    Some((to, from))
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

    #[test]
    fn a_probe_and_its_answer() {
        let vmac = [2, 0x5e, 1, 2, 3, 4];
        let vm = [2, 0, 0, 1, 0, 0];
        let mut f = [0u8; PROBE_LEN];
        assert_eq!(
            write_probe(&mut f, &vmac, &vm, Ipv4Addr::new(10, 0, 0, 2)),
            60
        );
        assert_eq!(&f[38..42], &[10, 0, 0, 2]);
        assert_eq!(probe_answer(&f), None, "a request, not an answer");
        // What Linux sends back: to the asker, op 2, sender the VM.
        let mut r = f;
        r[..6].copy_from_slice(&vmac);
        r[6..12].copy_from_slice(&vm);
        r[21] = 2;
        r[22..28].copy_from_slice(&vm);
        assert_eq!(probe_answer(&r), Some((vmac, vm)));
        assert_eq!(probe_answer(&r[..30]), None);
    }
}
