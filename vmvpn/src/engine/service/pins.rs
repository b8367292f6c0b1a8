//! Flow pins: which backend each flow of a service went to, so its later frames follow
//! (a connection already being served stays with its VM, or it breaks) whatever the load
//! figures or the table do meanwhile. A fixed table, set-associative: a flow's key picks
//! a set of [`WAYS`] slots; a new flow takes a free or idle slot of its set, else the
//! set's least recently used one (counted). Allocated once per service; a lookup reads
//! one set.

/// Slots per set.
const WAYS: usize = 8;
/// Slots in all (a power of two), 16 bytes each: 256 KiB per service.
pub(super) const SLOTS: usize = 16_384;
/// A pin not used for this long is free (the kernel's established-TCP timeout is days,
/// but a flow idle this long is rare and re-chosen then, not reset by us).
pub(super) const IDLE_S: u32 = 600;

#[derive(Debug, Clone, Copy, Default)]
struct Pin {
    /// The flow's hash with bit 0 set (0: an empty slot).
    key: u64,
    backend: u16,
    /// The owner's clock (s) at its last frame.
    last_s: u32,
    /// The client sent a FIN or RST on it: a SYN on the same 5-tuple is a new connection.
    closed: bool,
}

/// One service's pins.
#[derive(Debug)]
pub(super) struct Pins {
    slots: Vec<Pin>,
    /// Pins pushed out by newer flows while still in use.
    pub(super) evicted: u64,
}

impl Pins {
    pub(super) fn new() -> Self {
        Pins {
            slots: vec![Pin::default(); SLOTS],
            evicted: 0,
        }
    }

    fn set(&self, key: u64) -> std::ops::Range<usize> {
        let start = (key as usize >> 1) % (SLOTS / WAYS) * WAYS;
        start..start + WAYS
    }

    /// The backend `hash`'s flow is pinned to, and whether that connection was closed;
    /// its use noted at `now_s`.
    pub(super) fn get(&mut self, hash: u64, now_s: u32) -> Option<(u16, bool)> {
        let key = hash | 1;
        let range = self.set(key);
        let p = self.slots[range]
            .iter_mut()
            .find(|p| p.key == key && now_s.wrapping_sub(p.last_s) < IDLE_S)?;
        p.last_s = now_s;
        Some((p.backend, p.closed))
    }

    /// The client closed `hash`'s connection (FIN or RST).
    pub(super) fn close(&mut self, hash: u64) {
        let key = hash | 1;
        let range = self.set(key);
        if let Some(p) = self.slots[range].iter_mut().find(|p| p.key == key) {
            p.closed = true;
        }
    }

    /// Pin `hash`'s flow to `backend` (a pin it had is replaced).
    pub(super) fn put(&mut self, hash: u64, backend: u16, now_s: u32) {
        let key = hash | 1;
        let range = self.set(key);
        let set = &mut self.slots[range];
        let i = set
            .iter()
            .position(|p| p.key == key)
            .or_else(|| {
                set.iter()
                    .position(|p| p.key == 0 || now_s.wrapping_sub(p.last_s) >= IDLE_S)
            })
            .unwrap_or_else(|| {
                self.evicted += 1;
                (0..WAYS)
                    .max_by_key(|&i| now_s.wrapping_sub(set[i].last_s))
                    .unwrap_or(0)
            });
        set[i] = Pin {
            key,
            backend,
            last_s: now_s,
            closed: false,
        };
    }

    /// The backends were renumbered (a reload): pin `i` moves to `map[i]`; pins of a
    /// backend that is gone are freed, so their flows choose again on their next frame.
    pub(super) fn remap(&mut self, map: &[Option<u16>]) {
        for p in self.slots.iter_mut().filter(|p| p.key != 0) {
            match map.get(usize::from(p.backend)).copied().flatten() {
                Some(b) => p.backend = b,
                None => *p = Pin::default(),
            }
        }
    }

    /// Per backend (index), the flows with a frame in the last `within_s` seconds.
    pub(super) fn active(&self, backends: usize, now_s: u32, within_s: u32) -> Vec<u64> {
        let mut n = vec![0u64; backends];
        for p in &self.slots {
            if p.key != 0
                && now_s.wrapping_sub(p.last_s) < within_s
                && let Some(c) = n.get_mut(usize::from(p.backend))
            {
                *c += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_holds_until_idle_and_a_full_set_evicts_its_oldest() {
        let mut p = Pins::new();
        p.put(42, 3, 100);
        assert_eq!(p.get(42, 150), Some((3, false)));
        assert_eq!(p.get(44, 150), None);
        assert_eq!(p.get(42, 150 + IDLE_S), None, "idle too long");
        // Keys of one set: the same bits above bit 0 modulo the sets.
        let sets = (SLOTS / WAYS) as u64;
        let same_set = |i: u64| (i * sets) << 1;
        for i in 0..WAYS as u64 {
            p.put(same_set(i + 1), i as u16, 1000 + i as u32);
        }
        assert_eq!(p.evicted, 0);
        p.put(same_set(100), 9, 1010);
        assert_eq!(p.evicted, 1);
        assert_eq!(p.get(same_set(1), 1010), None, "the oldest went");
        assert_eq!(p.get(same_set(2), 1010), Some((1, false)));
        assert_eq!(p.get(same_set(100), 1010), Some((9, false)));
        assert_eq!(p.active(10, 1010, 5)[9], 1);
        // Renumbered: backend 9 is now 0, backend 1 is gone.
        let mut map = vec![None; 10];
        map[9] = Some(0);
        p.remap(&map);
        assert_eq!(p.get(same_set(100), 1010), Some((0, false)));
        p.close(same_set(100));
        assert_eq!(p.get(same_set(100), 1010), Some((0, true)));
        assert_eq!(p.get(same_set(2), 1010), None);
        // Idle pins make room without an eviction.
        p.put(same_set(200), 4, 1010 + IDLE_S + 10);
        assert_eq!(p.evicted, 1);
    }
}
