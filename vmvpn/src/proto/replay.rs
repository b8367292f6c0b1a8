//! Sliding anti-replay window over 64-bit sequence numbers (RFC 6479 style bitmap).
//!
//! `check` is cheap and done before decrypting; `update` is done only after the packet
//! authenticated, so forged sequence numbers cannot move the window.

/// Bits in the window: packets up to this far behind the newest are still accepted.
pub const WINDOW: u64 = 2048;
const WORDS: usize = (WINDOW / 64) as usize;

/// Verdict of [`ReplayWindow::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Newer than anything seen.
    New,
    /// Within the window and not yet seen (reordered).
    Reordered,
    /// Already seen.
    Duplicate,
    /// Older than the window.
    TooOld,
}

impl Replay {
    /// Whether the packet may be accepted.
    pub fn is_ok(self) -> bool {
        matches!(self, Replay::New | Replay::Reordered)
    }
}

/// Per-sender record of which sequence numbers were accepted.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest accepted sequence + 1 (0: nothing accepted yet).
    next: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            next: 0,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    fn bit(seq: u64) -> (usize, u64) {
        (((seq / 64) % WORDS as u64) as usize, 1u64 << (seq % 64))
    }

    /// Classify `seq` without changing the window.
    pub fn check(&self, seq: u64) -> Replay {
        if seq == u64::MAX {
            // Reserved: `next` could not move past it, so a repeat would look new.
            return Replay::TooOld;
        }
        if seq >= self.next {
            return Replay::New;
        }
        if self.next - seq > WINDOW - 64 {
            // The oldest word is recycled when the window advances, so stay a word short.
            return Replay::TooOld;
        }
        let (w, m) = Self::bit(seq);
        if self.bits[w] & m != 0 {
            Replay::Duplicate
        } else {
            Replay::Reordered
        }
    }

    /// Record `seq` as accepted. Call only after `check` said ok and the packet opened.
    pub fn update(&mut self, seq: u64) {
        if seq >= self.next {
            // Clear the words the window slides over.
            let cur_word = if self.next == 0 {
                None
            } else {
                Some((self.next - 1) / 64)
            };
            let new_word = seq / 64;
            match cur_word {
                Some(c) if new_word > c => {
                    let n = (new_word - c).min(WORDS as u64);
                    for i in 1..=n {
                        self.bits[((c + i) % WORDS as u64) as usize] = 0;
                    }
                }
                None => self.bits = [0; WORDS],
                _ => {}
            }
            self.next = seq.saturating_add(1);
        }
        let (w, m) = Self::bit(seq);
        self.bits[w] |= m;
    }

    /// `check` then `update` in one step; returns the verdict.
    pub fn accept(&mut self, seq: u64) -> Replay {
        let v = self.check(seq);
        if v.is_ok() {
            self.update(seq);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn in_order_reordered_duplicate_and_too_old() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(0), Replay::New);
        assert_eq!(w.accept(1), Replay::New);
        assert_eq!(w.accept(5), Replay::New);
        assert_eq!(w.accept(3), Replay::Reordered);
        assert_eq!(w.accept(3), Replay::Duplicate);
        assert_eq!(w.accept(5), Replay::Duplicate);
        assert_eq!(w.accept(4), Replay::Reordered);
        assert_eq!(w.accept(10_000), Replay::New);
        assert_eq!(w.accept(10_000 - (WINDOW - 65)), Replay::Reordered);
        assert_eq!(w.accept(10_000 - (WINDOW - 64)), Replay::TooOld);
        assert_eq!(w.accept(10_000 - WINDOW), Replay::TooOld);
        assert_eq!(w.accept(2), Replay::TooOld);
    }

    #[test]
    fn first_packet_may_start_anywhere() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(u64::MAX - 1), Replay::New);
        assert_eq!(w.accept(u64::MAX - 1), Replay::Duplicate);
        assert_eq!(w.accept(u64::MAX), Replay::TooOld, "u64::MAX is reserved");
    }

    #[test]
    fn check_does_not_move_the_window() {
        let mut w = ReplayWindow::default();
        w.accept(100);
        assert_eq!(w.check(5000), Replay::New);
        assert_eq!(w.check(100), Replay::Duplicate);
        assert_eq!(w.check(99), Replay::Reordered);
    }

    proptest! {
        /// Against a model that remembers everything: a sequence is accepted at most once,
        /// and anything within the guaranteed window that was never seen is accepted.
        #[test]
        fn matches_a_set_model(seqs in proptest::collection::vec(0u64..6000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = BTreeSet::new();
            let mut max: Option<u64> = None;
            for s in seqs {
                let v = w.accept(s);
                if seen.contains(&s) {
                    prop_assert!(!v.is_ok(), "{s} accepted twice");
                } else if max.is_none_or(|m| s > m || m - s < WINDOW - 64) {
                    prop_assert!(v.is_ok(), "{s} wrongly refused as {v:?} (max {max:?})");
                } else {
                    prop_assert_eq!(v, Replay::TooOld);
                }
                if v.is_ok() {
                    seen.insert(s);
                    max = Some(max.map_or(s, |m| m.max(s)));
                }
            }
        }
    }
}
