//! Putting overlay fragments back together (their layout is `proto::fragment`), with
//! bounded memory. The table keeps at most [`SLOTS`] frames in progress (at most
//! [`PER_SENDER`] from one sender), each for at most [`TIMEOUT`]; it delivers a frame only
//! whole, and drops (counting why) a frame whose pieces overlap, that would exceed the
//! TAP's frame size, that never completes, or that is pushed out by newer ones when the
//! table is full.

use std::time::{Duration, Instant};

use crate::proto::fragment::{FragHeader, MAX_FRAGMENTS};

/// Frames being reassembled at once, over all senders and LANs.
pub const SLOTS: usize = 64;
/// Frames being reassembled at once from one sender.
pub const PER_SENDER: usize = 16;
/// How long a frame may take to complete.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// Whose frame a fragment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// LAN index.
    pub lan: usize,
    /// Sender's host id.
    pub sender: u32,
    /// A flood's pieces (the sender's group stream) or unicast ones.
    pub flood: bool,
    /// Frame id.
    pub id: u32,
}

/// Why a fragment or its frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragDrop {
    /// The piece overlaps one already held (the whole frame is dropped).
    Overlap,
    /// The frame would be larger than the TAP allows, or the piece lies outside it.
    Oversize,
    /// The frame did not complete in time (counted when its slot is reclaimed).
    Timeout,
    /// Pushed out by newer frames when the table or the sender's share was full.
    Evicted,
}

/// What a fragment did.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Held; the frame is not complete yet.
    Held,
    /// The frame is complete: `frame()` returns it until the next call to `push`.
    Complete,
    /// Dropped for this reason (the frame it belonged to, if any, is gone).
    Drop(FragDrop),
}

struct Slot {
    key: Option<Key>,
    total: usize,
    got: usize,
    ranges: [(u16, u16); MAX_FRAGMENTS],
    nranges: usize,
    started: Instant,
    buf: Vec<u8>,
}

pub use crate::status::ReassemblyStats;

/// The reassembly table: [`SLOTS`] buffers of the largest frame, allocated once.
pub struct Reassembly {
    slots: Vec<Slot>,
    max_frame: usize,
    done: Option<usize>,
    stats: ReassemblyStats,
}

impl Reassembly {
    /// A table for frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Reassembly {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    key: None,
                    total: 0,
                    got: 0,
                    ranges: [(0, 0); MAX_FRAGMENTS],
                    nranges: 0,
                    started: Instant::now(),
                    buf: vec![0u8; max_frame],
                })
                .collect(),
            max_frame,
            done: None,
            stats: ReassemblyStats::default(),
        }
    }

    /// Take frames of up to `max_frame` bytes from now on (a LAN with a larger MTU was
    /// added); never shrinks. Allocates, so only on reconfiguration.
    pub fn grow(&mut self, max_frame: usize) {
        if max_frame <= self.max_frame {
            return;
        }
        for s in &mut self.slots {
            s.buf.resize(max_frame, 0);
        }
        self.max_frame = max_frame;
    }

    /// Forget the frames in progress on LAN `lan` and the LANs after it: a LAN was removed
    /// and those after it renumbered, so their keys would name the wrong LAN.
    pub fn forget_lans_from(&mut self, lan: usize) {
        self.done = None;
        for s in &mut self.slots {
            if s.key.is_some_and(|k| k.lan >= lan) {
                s.key = None;
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> ReassemblyStats {
        ReassemblyStats {
            in_progress: self.slots.iter().filter(|s| s.key.is_some()).count() as u64,
            ..self.stats
        }
    }

    /// Frames dropped so far, by reason (no scan of the slots: cheap per fragment).
    pub fn dropped(&self) -> [(FragDrop, u64); 4] {
        let s = &self.stats;
        [
            (FragDrop::Overlap, s.overlap_total),
            (FragDrop::Oversize, s.oversize_total),
            (FragDrop::Timeout, s.timeout_total),
            (FragDrop::Evicted, s.evicted_total),
        ]
    }

    /// The frame completed by the last `push` that returned [`Verdict::Complete`].
    pub fn frame(&self) -> &[u8] {
        match self.done.and_then(|i| self.slots.get(i)) {
            Some(s) => &s.buf[..s.total],
            None => &[],
        }
    }

    /// The completed frame, writable (for MSS clamping before delivery).
    pub fn frame_mut(&mut self) -> &mut [u8] {
        match self.done.and_then(|i| self.slots.get_mut(i)) {
            Some(s) => &mut s.buf[..s.total],
            None => &mut [],
        }
    }

    fn count(&mut self, why: FragDrop) -> Verdict {
        match why {
            FragDrop::Overlap => self.stats.overlap_total += 1,
            FragDrop::Oversize => self.stats.oversize_total += 1,
            FragDrop::Timeout => self.stats.timeout_total += 1,
            FragDrop::Evicted => self.stats.evicted_total += 1,
        }
        Verdict::Drop(why)
    }

    /// Reclaim the slots of frames older than [`TIMEOUT`] (counted as timeouts).
    pub fn expire(&mut self, now: Instant) {
        let mut timed_out = 0;
        for s in &mut self.slots {
            if s.key.is_some() && now.saturating_duration_since(s.started) >= TIMEOUT {
                s.key = None;
                timed_out += 1;
            }
        }
        self.stats.timeout_total += timed_out;
    }

    /// Take one fragment (its header parsed, `piece` the bytes after it).
    pub fn push(&mut self, key: Key, h: FragHeader, piece: &[u8], now: Instant) -> Verdict {
        if let Some(i) = self.done.take() {
            self.slots[i].key = None;
        }
        let (offset, total) = (usize::from(h.offset), usize::from(h.total));
        if total > self.max_frame || piece.is_empty() || offset + piece.len() > total {
            if let Some(i) = self.find(&key) {
                self.slots[i].key = None;
            }
            return self.count(FragDrop::Oversize);
        }
        let i = match self.find(&key) {
            Some(i) if self.slots[i].total != total => {
                // The same frame cannot change its length: a forgery or a bug; drop it.
                self.slots[i].key = None;
                return self.count(FragDrop::Overlap);
            }
            Some(i) => i,
            None => {
                let i = self.claim(&key, now);
                let s = &mut self.slots[i];
                s.key = Some(key);
                s.total = total;
                s.got = 0;
                s.nranges = 0;
                s.started = now;
                i
            }
        };
        let s = &mut self.slots[i];
        let (a, b) = (offset as u16, (offset + piece.len()) as u16);
        let overlaps = s.ranges[..s.nranges].iter().any(|&(x, y)| a < y && x < b);
        if overlaps || s.nranges == MAX_FRAGMENTS {
            s.key = None;
            return self.count(FragDrop::Overlap);
        }
        s.ranges[s.nranges] = (a, b);
        s.nranges += 1;
        s.buf[offset..offset + piece.len()].copy_from_slice(piece);
        s.got += piece.len();
        if s.got == s.total {
            self.done = Some(i);
            self.stats.reassembled_frames_total += 1;
            return Verdict::Complete;
        }
        Verdict::Held
    }

    fn find(&self, key: &Key) -> Option<usize> {
        self.slots.iter().position(|s| s.key.as_ref() == Some(key))
    }

    /// A slot for a new frame: a free one, else (counted) the oldest of this sender when
    /// it holds its share, else an expired one, else the oldest of all.
    fn claim(&mut self, key: &Key, now: Instant) -> usize {
        let same = |s: &Slot| {
            s.key
                .is_some_and(|k| k.lan == key.lan && k.sender == key.sender)
        };
        let mine = self.slots.iter().filter(|s| same(s)).count();
        let oldest = |f: &dyn Fn(&Slot) -> bool| {
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| f(s))
                .min_by_key(|(_, s)| s.started)
                .map(|(i, _)| i)
        };
        if mine >= PER_SENDER
            && let Some(i) = oldest(&same)
        {
            self.count(FragDrop::Evicted);
            return i;
        }
        if let Some(i) = self.slots.iter().position(|s| s.key.is_none()) {
            return i;
        }
        let i = oldest(&|_| true).unwrap_or(0);
        if now.saturating_duration_since(self.slots[i].started) >= TIMEOUT {
            self.count(FragDrop::Timeout);
        } else {
            self.count(FragDrop::Evicted);
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fragment::{FRAG_HEADER_LEN, PER_FRAGMENT, lay_out, plain_len, plan};
    use crate::proto::{HEADER_LEN, TAG_LEN};
    use proptest::prelude::*;

    fn key(sender: u32, id: u32) -> Key {
        Key {
            lan: 0,
            sender,
            flood: false,
            id,
        }
    }

    /// Cut `frame` as the sender does and return each fragment's plaintext.
    fn cut(frame: &[u8], max_piece: usize, id: u32) -> Vec<Vec<u8>> {
        let (count, piece) = plan(frame.len(), max_piece).expect("plan");
        let mut buf =
            vec![0xeeu8; HEADER_LEN + frame.len() + TAG_LEN + MAX_FRAGMENTS * PER_FRAGMENT];
        buf[HEADER_LEN..HEADER_LEN + frame.len()].copy_from_slice(frame);
        assert!(lay_out(&mut buf, frame.len(), piece, count, id));
        (0..count)
            .map(|i| {
                let at = i * (piece + PER_FRAGMENT) + HEADER_LEN;
                buf[at..at + plain_len(frame.len(), piece, i)].to_vec()
            })
            .collect()
    }

    fn push(r: &mut Reassembly, k: Key, plain: &[u8], now: Instant) -> Verdict {
        let h = FragHeader::parse(plain).expect("header");
        r.push(k, h, &plain[FRAG_HEADER_LEN..], now)
    }

    #[test]
    fn a_frame_is_delivered_whole_and_only_whole() {
        let frame: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let t = Instant::now();
        let mut r = Reassembly::new(9018);
        let pieces = cut(&frame, 1400, 7);
        assert_eq!(pieces.len(), 3);
        assert_eq!(push(&mut r, key(1, 7), &pieces[2], t), Verdict::Held);
        assert_eq!(push(&mut r, key(1, 7), &pieces[0], t), Verdict::Held);
        assert_eq!(r.frame(), &[] as &[u8]);
        assert_eq!(push(&mut r, key(1, 7), &pieces[1], t), Verdict::Complete);
        assert_eq!(r.frame(), &frame[..]);
        assert_eq!(r.stats().reassembled_frames_total, 1);
        // The slot is free again after the next push.
        assert_eq!(push(&mut r, key(1, 8), &pieces[0], t), Verdict::Held);
        assert_eq!(r.stats().in_progress, 1);
    }

    #[test]
    fn overlaps_oversize_and_timeouts_are_counted_drops() {
        let t = Instant::now();
        let mut r = Reassembly::new(1518);
        let f = |id, offset: u16, total: u16| FragHeader { id, offset, total };
        assert_eq!(
            r.push(key(1, 1), f(1, 0, 1000), &[1; 600], t),
            Verdict::Held
        );
        assert_eq!(
            r.push(key(1, 1), f(1, 500, 1000), &[2; 500], t),
            Verdict::Drop(FragDrop::Overlap)
        );
        assert_eq!(r.stats().in_progress, 0, "the whole frame went");
        assert_eq!(
            r.push(key(1, 2), f(2, 0, 9000), &[1; 100], t),
            Verdict::Drop(FragDrop::Oversize)
        );
        assert_eq!(
            r.push(key(1, 3), f(3, 900, 1000), &[1; 200], t),
            Verdict::Drop(FragDrop::Oversize)
        );
        assert_eq!(
            r.push(key(1, 4), f(4, 0, 1000), &[1; 500], t),
            Verdict::Held
        );
        r.expire(t + TIMEOUT);
        let s = r.stats();
        assert_eq!(
            (
                s.overlap_total,
                s.oversize_total,
                s.timeout_total,
                s.in_progress
            ),
            (1, 2, 1, 0)
        );
        // A later piece of the timed-out frame starts over and never completes it wrongly.
        assert_eq!(
            r.push(key(1, 4), f(4, 500, 1000), &[1; 500], t),
            Verdict::Held
        );
    }

    #[test]
    fn a_flood_of_fragments_costs_bounded_memory_and_spares_other_senders() {
        let t = Instant::now();
        let mut r = Reassembly::new(1518);
        let f = |id| FragHeader {
            id,
            offset: 0,
            total: 1500,
        };
        // One sender opens thousands of frames and never completes one.
        for id in 0..10_000 {
            assert_eq!(r.push(key(9, id), f(id), &[0; 100], t), Verdict::Held);
        }
        let s = r.stats();
        assert_eq!(s.in_progress, PER_SENDER as u64);
        assert_eq!(s.evicted_total, 10_000 - PER_SENDER as u64);
        // Another sender still gets its frames through.
        let frame = vec![5u8; 1500];
        let pieces = cut(&frame, 800, 1);
        for (i, p) in pieces.iter().enumerate() {
            let v = push(&mut r, key(2, 1), p, t);
            assert_eq!(
                v,
                if i + 1 == pieces.len() {
                    Verdict::Complete
                } else {
                    Verdict::Held
                }
            );
        }
        assert_eq!(r.frame(), &frame[..]);
        // Many senders together fill the table to its size and no further.
        for sender in 100..200 {
            for id in 0..PER_SENDER as u32 {
                let _ = r.push(key(sender, id), f(id), &[0; 100], t);
            }
        }
        assert_eq!(r.stats().in_progress, SLOTS as u64);
        assert_eq!(r.slots.len(), SLOTS, "no slot is ever added");
        assert!(
            r.slots.iter().all(|s| s.buf.len() == 1518),
            "no buffer grows"
        );
    }

    proptest! {
        #[test]
        fn any_frame_cut_and_shuffled_comes_back_whole(
            len in 14usize..9018,
            max_piece in 100usize..1500,
            order in proptest::collection::vec(any::<u16>(), 32),
            dup in any::<bool>(),
            lose in proptest::option::of(0usize..32),
        ) {
            prop_assume!(plan(len, max_piece).is_some());
            let frame: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut pieces = cut(&frame, max_piece, 42);
            let n = pieces.len();
            // Any arrival order.
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by_key(|&i| order[i]);
            let t = Instant::now();
            let mut r = Reassembly::new(9018);
            let lost = lose.filter(|l| *l < n && n > 1);
            let mut complete = 0;
            for (k, &i) in idx.iter().enumerate() {
                if Some(i) == lost { continue; }
                match push(&mut r, key(1, 42), &pieces[i], t) {
                    Verdict::Complete => {
                        complete += 1;
                        prop_assert_eq!(k + 1, n - usize::from(lost.is_some()));
                        prop_assert_eq!(r.frame(), &frame[..]);
                    }
                    Verdict::Held => {}
                    Verdict::Drop(d) => prop_assert!(false, "dropped: {:?}", d),
                }
                // A replayed piece never gets here (the replay window drops it first);
                // a duplicate that did would be an overlap, never a wrong frame.
                if dup && k == 0 && n > 2 {
                    let v = push(&mut r, key(1, 42), &pieces[i], t);
                    prop_assert_eq!(v, Verdict::Drop(FragDrop::Overlap));
                    break;
                }
            }
            if lost.is_some() {
                prop_assert_eq!(complete, 0, "never delivered partly");
            }
            pieces.clear();
        }
    }
}
