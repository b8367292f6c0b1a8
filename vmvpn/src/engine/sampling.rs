//! sFlow's packet sampling (sflow_version_5.txt §3.1): 1 in N frames crossing a LAN's
//! TAP, either way, chosen at random. Per frame it costs a countdown (no lock, no
//! allocation); a chosen frame's first 128 bytes go into a queue of fixed capacity that
//! the exporter swaps out. Skipped entirely when sFlow is not configured.
//!
//! Interface indexes (sFlow's ifIndex, 24 bits): LAN `k` (0-based, in config order) has
//! the block `(k + 1) << 16`. Its TAP is the block itself; the tunnel to a peer is
//! `block | 0x8000 | (peer id & 0x7fff)`; a VM port is `block | 1 + hash(MAC) % 0x7ffe`.
//! Both are stable across restarts; two peers or VMs of one LAN may share an index in
//! rare cases (1 in 32 767 a pair), which only merges their lines at the collector.

use telemetry::frame::Mac;
use telemetry::sflow::{FlowSample, MAX_HEADER};

use super::ids::LanId;

/// Samples held until the exporter takes them: every 250 ms, and as soon as
/// [`WAKE_AT`] wait. One saturating stream at 1 in 64 makes 6 000–10 000 samples a
/// second, more than a queue of 1024 taken four times a second held (a quarter of the
/// samples were dropped); the room above `WAKE_AT` covers the exporter's wake-up.
pub const QUEUE: usize = 4096;
/// Samples waiting at which the data plane wakes the exporter early. Small, so that the
/// agent sends as it samples, in bursts of about 18 datagrams: sFlow is UDP, and bursts
/// of a thousand samples overflowed a collector's default socket buffer (sfacctd lost a
/// quarter of them, at full speed in a release build).
pub const WAKE_AT: usize = 128;

/// The data source (and TAP interface) of LAN `lan`.
pub fn tap_index(lan: LanId) -> u32 {
    ((lan.index() as u32 & 0xff) + 1) << 16
}

/// The interface of the tunnel to the peer with this host id on LAN `lan`.
pub fn tunnel_index(lan: LanId, peer_id: u32) -> u32 {
    tap_index(lan) | 0x8000 | (peer_id & 0x7fff)
}

/// The interface of the VM port with this MAC on LAN `lan`.
pub fn vm_index(lan: LanId, mac: &Mac) -> u32 {
    // FNV-1a: small, and spreads neighbouring MACs.
    let h = mac.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    tap_index(lan) | (1 + h % 0x7ffe)
}

/// Per LAN: the countdown, the pool and the sample sequence.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LanSampling {
    skip: u32,
    pool: u32,
    sequence: u32,
}

/// The sampler of the whole engine.
pub(crate) struct Sampler {
    rate: u32,
    rng: u64,
    samples: Vec<FlowSample>,
    drops: u32,
    /// The exporter was told to come early for the samples now waiting.
    woken: bool,
}

impl Sampler {
    pub(crate) fn new(rate: u32, seed: u64) -> Self {
        Sampler {
            rate: rate.max(1),
            rng: seed | 1,
            samples: Vec::with_capacity(QUEUE),
            drops: 0,
            woken: false,
        }
    }

    /// The next skip: uniform on 1..=2N-1, so 1 in N on average without a pattern a
    /// periodic traffic could hide in.
    fn next_skip(&mut self) -> u32 {
        // xorshift64*: fast and good enough to pick frames.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        if self.rate == 1 {
            1
        } else {
            1 + (r % u64::from(2 * self.rate - 1)) as u32
        }
    }

    /// Count one frame on `lan`; true when it is to be sampled.
    #[inline]
    pub(crate) fn tick(&mut self, s: &mut LanSampling) -> bool {
        s.pool = s.pool.wrapping_add(1);
        if s.skip > 1 {
            s.skip -= 1;
            return false;
        }
        s.skip = self.next_skip();
        true
    }

    /// Keep a sample of `frame` (the caller decided with [`Sampler::tick`]).
    pub(crate) fn take(
        &mut self,
        lan: LanId,
        s: &mut LanSampling,
        frame: &[u8],
        input: u32,
        output: u32,
    ) {
        s.sequence = s.sequence.wrapping_add(1);
        if self.samples.len() == self.samples.capacity() {
            self.drops = self.drops.wrapping_add(1);
            return;
        }
        let n = frame.len().min(MAX_HEADER);
        let mut sample = FlowSample {
            sequence: s.sequence,
            source_index: tap_index(lan),
            sampling_rate: self.rate,
            sample_pool: s.pool,
            drops: self.drops,
            input,
            output,
            frame_length: frame.len() as u32,
            header_len: n as u8,
            ..FlowSample::default()
        };
        sample.header[..n].copy_from_slice(&frame[..n]);
        self.samples.push(sample);
    }

    /// True once when [`WAKE_AT`] samples wait, until they are taken.
    pub(crate) fn wants_taking(&mut self) -> bool {
        if self.woken || self.samples.len() < WAKE_AT {
            return false;
        }
        self.woken = true;
        true
    }

    /// Swap the samples with `empty` (cleared; the next ones go there); the samples
    /// dropped for want of room so far.
    pub(crate) fn swap(&mut self, empty: &mut Vec<FlowSample>) -> u32 {
        self.woken = false;
        empty.clear();
        empty.reserve(QUEUE);
        std::mem::swap(&mut self.samples, empty);
        self.drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exporter_is_woken_once_per_filling_and_nothing_is_dropped_below_the_queue() {
        let mut s = Sampler::new(1, 7);
        let mut l = LanSampling::default();
        let lan = LanId(0);
        let mut woken = 0;
        // 20 000 samples, taken whenever the sampler asks: none is dropped.
        for _ in 0..20_000 {
            assert!(s.tick(&mut l));
            s.take(lan, &mut l, &[0u8; 60], 1, 2);
            if s.wants_taking() {
                woken += 1;
                assert!(!s.wants_taking(), "once per filling");
                let mut buf = Vec::new();
                assert_eq!(s.swap(&mut buf), 0);
                assert_eq!(buf.len(), WAKE_AT);
            }
        }
        assert_eq!(woken, 20_000 / WAKE_AT);
        assert_eq!(s.drops, 0);
    }

    #[test]
    fn one_in_n_on_average_and_every_frame_in_the_pool() {
        let mut s = Sampler::new(64, 7);
        let mut l = LanSampling::default();
        let n = 640_000;
        let picked = (0..n).filter(|_| s.tick(&mut l)).count();
        assert_eq!(l.pool, n as u32);
        let want = n / 64;
        assert!(
            picked.abs_diff(want) < want / 20,
            "{picked} picked, {want} expected"
        );
        let mut one = Sampler::new(1, 7);
        let mut fresh = LanSampling::default();
        assert!(
            (0..100).all(|_| one.tick(&mut fresh)),
            "1 in 1 takes every frame"
        );
    }

    #[test]
    fn samples_keep_the_first_128_bytes_and_a_full_queue_counts_drops() {
        let mut s = Sampler::new(10, 1);
        let mut l = LanSampling::default();
        let frame: Vec<u8> = (0..1514u32).map(|i| i as u8).collect();
        s.tick(&mut l);
        s.take(LanId(0), &mut l, &frame, vm_index(LanId(0), &[2; 6]), 7);
        let mut got = Vec::new();
        assert_eq!(s.swap(&mut got), 0);
        let x = got[0];
        assert_eq!((x.frame_length, x.header_len, x.sequence), (1514, 128, 1));
        assert_eq!(&x.header[..], &frame[..128]);
        assert_eq!(
            (x.source_index, x.sampling_rate, x.output),
            (0x1_0000, 10, 7)
        );
        for _ in 0..QUEUE + 5 {
            s.take(LanId(0), &mut l, &frame[..60], 0, 0);
        }
        assert_eq!(s.swap(&mut got), 5);
        assert_eq!(got.len(), QUEUE);
        assert_eq!(got[0].header_len, 60);
    }

    #[test]
    fn indexes_are_in_their_lan_block() {
        let l = LanId(2);
        assert_eq!(tap_index(l), 3 << 16);
        assert_eq!(tunnel_index(l, 0xdead_beef), (3 << 16) | 0x8000 | 0x3eef);
        let v = vm_index(l, &[2, 0, 0, 0, 0, 1]);
        assert!(v > tap_index(l) && v < tap_index(l) | 0x8000, "{v:#x}");
        assert_ne!(v, vm_index(l, &[2, 0, 0, 0, 0, 2]));
    }
}
