//! The link emulator's core (sans-IO): per-direction delay, jitter and loss over a timer
//! wheel. This kernel has no netem, so the accuracy tests put `vmvpn-linkem` (the runtime
//! around this core: two AF_PACKET sockets) on a host's underlay link.
//!
//! Frames wait in a hashed timer wheel of 100 µs slots (65536 slots, 6.5 s per lap): insert
//! and expiry are O(1) per frame, and the runtime sleeps until the next slot boundary, not
//! once per frame.

use std::time::Duration;

/// Impairment of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// Added one-way delay.
    pub delay: Duration,
    /// Uniform jitter: each frame's delay is `delay ± jitter` (never below zero).
    pub jitter: Duration,
    /// Probability of dropping a frame, 0..=1.
    pub loss: f64,
}

impl Impairment {
    /// Parse `delay=20ms,jitter=1ms,loss=0.05` (any subset; units ns, us, ms, s).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut imp = Impairment::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected key=value"))?;
            match k {
                "delay" => imp.delay = duration(v)?,
                "jitter" => imp.jitter = duration(v)?,
                "loss" => {
                    imp.loss = v
                        .parse::<f64>()
                        .ok()
                        .filter(|l| (0.0..=1.0).contains(l))
                        .ok_or_else(|| format!("loss={v}: expected a ratio from 0 to 1"))?
                }
                _ => return Err(format!("unknown key {k:?} (delay, jitter, loss)")),
            }
        }
        Ok(imp)
    }
}

fn duration(v: &str) -> Result<Duration, String> {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{v:?}: expected a number with a unit, e.g. 20ms"))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => return Err(format!("{v:?}: unit must be ns, us, ms or s")),
    };
    if !(n >= 0.0 && n * scale < 60.0) {
        return Err(format!("{v:?}: must be between 0 and 60 s"));
    }
    Ok(Duration::from_secs_f64(n * scale))
}

/// A small deterministic generator (xorshift64*): reproducible runs from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A hashed timer wheel of items due at nanosecond times.
pub struct Wheel<T> {
    slot_ns: u64,
    slots: Vec<Vec<(u64, T)>>,
    /// The slot (absolute) up to which everything due has been taken.
    cursor: u64,
    len: usize,
}

impl<T> Wheel<T> {
    /// `n` slots of `slot` each.
    pub fn new(slot: Duration, n: usize) -> Self {
        Wheel {
            slot_ns: (slot.as_nanos() as u64).max(1),
            slots: (0..n.max(1)).map(|_| Vec::new()).collect(),
            cursor: 0,
            len: 0,
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add an item due at `due_ns` (a past time is due at the next advance).
    pub fn insert(&mut self, due_ns: u64, item: T) {
        let slot = (due_ns / self.slot_ns).max(self.cursor);
        let n = self.slots.len() as u64;
        self.slots[(slot % n) as usize].push((due_ns, item));
        self.len += 1;
    }

    /// Take every item due at or before `now_ns`, in slot order, into `out`.
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<T>) {
        let target = now_ns / self.slot_ns;
        let n = self.slots.len() as u64;
        // At most one lap: beyond that every slot has been visited once.
        let first = self.cursor.max(target.saturating_sub(n - 1));
        for s in first..=target {
            let slot = &mut self.slots[(s % n) as usize];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].0 <= now_ns {
                    let (_, item) = slot.swap_remove(i);
                    out.push(item);
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
        }
        self.cursor = target;
    }

    /// When the next advance may find something: the next slot boundary (None if empty).
    pub fn next_wake(&self, now_ns: u64) -> Option<u64> {
        (self.len > 0).then(|| (now_ns / self.slot_ns + 1) * self.slot_ns)
    }
}

/// One direction of the link: decides each frame's fate.
pub struct Direction {
    /// Its impairment.
    pub imp: Impairment,
    rng: Rng,
    /// Frames in, dropped by the loss model, sent.
    pub stats: DirStats,
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirStats {
    /// Frames received from the input interface.
    pub frames_in: u64,
    /// Frames dropped by the loss model.
    pub dropped: u64,
    /// Frames sent on.
    pub sent: u64,
    /// Frames too big for the output (GSO super-frames), dropped.
    pub too_big: u64,
    /// Frames whose L4 checksum had to be completed.
    pub checksummed: u64,
}

impl Direction {
    /// A direction with this impairment and seed.
    pub fn new(imp: Impairment, seed: u64) -> Self {
        Direction {
            imp,
            rng: Rng::new(seed),
            stats: DirStats::default(),
        }
    }

    /// A frame arrived at `now_ns`: `Some(due_ns)` to send it then, or `None` (lost).
    pub fn admit(&mut self, now_ns: u64) -> Option<u64> {
        self.stats.frames_in += 1;
        if self.imp.loss > 0.0 && self.rng.unit() < self.imp.loss {
            self.stats.dropped += 1;
            return None;
        }
        let base = self.imp.delay.as_nanos() as i128;
        let j = self.imp.jitter.as_nanos() as f64;
        let off = if j > 0.0 {
            ((self.rng.unit() * 2.0 - 1.0) * j) as i128
        } else {
            0
        };
        Some(now_ns + (base + off).max(0) as u64)
    }
}

/// Complete the TCP or UDP checksum of an Ethernet/IPv4 frame (the kernel leaves it
/// partial for offload; a frame re-injected by a packet socket must carry the full sum).
/// Returns whether the frame was IPv4 TCP/UDP and fixed.
pub fn complete_l4_checksum(frame: &mut [u8]) -> bool {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return false;
    }
    let ip = 14;
    let ihl = usize::from(frame[ip] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
    if ihl < 20 || total < ihl || frame.len() < ip + total {
        return false;
    }
    let proto = frame[ip + 9];
    let l4 = ip + ihl;
    let l4_len = total - ihl;
    let off = match proto {
        6 if l4_len >= 20 => 16,
        17 if l4_len >= 8 => 6,
        _ => return false,
    };
    frame[l4 + off] = 0;
    frame[l4 + off + 1] = 0;
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    };
    add(&frame[ip + 12..ip + 20]);
    add(&[0, proto]);
    add(&(l4_len as u16).to_be_bytes());
    add(&frame[l4..l4 + l4_len]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[l4 + off..l4 + off + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_impairments() {
        let i = Impairment::parse("delay=20ms,jitter=500us,loss=0.05").expect("ok");
        assert_eq!(i.delay, Duration::from_millis(20));
        assert_eq!(i.jitter, Duration::from_micros(500));
        assert_eq!(i.loss, 0.05);
        assert_eq!(Impairment::parse("").expect("ok"), Impairment::default());
        assert!(Impairment::parse("loss=2").is_err());
        assert!(Impairment::parse("delay=5").is_err());
        assert!(Impairment::parse("lag=5ms").is_err());
    }

    #[test]
    fn wheel_releases_items_when_due_in_order_of_slots() {
        let mut w = Wheel::new(Duration::from_micros(100), 16);
        let ms = 1_000_000;
        w.insert(5 * ms, 'a');
        w.insert(ms / 2, 'b');
        w.insert(5 * ms + 50_000, 'c');
        let mut out = Vec::new();
        w.advance(ms, &mut out);
        assert_eq!(out, ['b']);
        out.clear();
        // 5 ms is several laps of a 1.6 ms wheel: items stay until their own time.
        w.advance(4 * ms, &mut out);
        assert!(out.is_empty());
        w.advance(5 * ms, &mut out);
        assert_eq!(out, ['a']);
        out.clear();
        assert_eq!(w.next_wake(5 * ms), Some(5 * ms + 100_000));
        w.advance(6 * ms, &mut out);
        assert_eq!((out.as_slice(), w.len()), (&['c'][..], 0));
        assert_eq!(w.next_wake(6 * ms), None);
        // A time already past goes out at the next advance.
        w.insert(0, 'd');
        w.advance(6 * ms, &mut out);
        assert_eq!(out.last(), Some(&'d'));
    }

    #[test]
    fn loss_rate_and_delay_bounds() {
        let imp = Impairment {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(2),
            loss: 0.05,
        };
        let mut d = Direction::new(imp, 7);
        let mut lost = 0;
        for i in 0..100_000u64 {
            match d.admit(i * 1000) {
                None => lost += 1,
                Some(due) => {
                    let delay = due - i * 1000;
                    assert!((18_000_000..=22_000_000).contains(&delay), "{delay}");
                }
            }
        }
        assert!((4_700..=5_300).contains(&lost), "{lost}");
        assert_eq!(d.stats.dropped, lost);
    }

    #[test]
    fn checksum_matches_a_known_udp_datagram() {
        // Ethernet + IPv4 10.0.0.1 -> 10.0.0.2 + UDP 1234 -> 80, payload "hi".
        let mut f = vec![0u8; 14];
        f[12] = 8;
        f.extend_from_slice(&[
            0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0x04, 0xd2, 0, 80, 0, 10, 0xaa, 0xbb, b'h', b'i']);
        assert!(complete_l4_checksum(&mut f));
        // Verify: the one's complement sum over pseudo-header and datagram is 0xffff.
        let mut sum: u32 = 0;
        for c in [&f[26..34], &[0, 17, 0, 10][..], &f[34..44]] {
            for w in c.chunks(2) {
                sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert!(!complete_l4_checksum(&mut [0u8; 20]));
    }
}
