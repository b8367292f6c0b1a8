//! Throughput over time: bounded rings of per-second and per-minute byte counts, rates over
//! 1 s and 60 s, and the peak-to-mean ratio of the last minute.
//!
//! Fed from cumulative counters on the timer tick (never per packet), so the hot path only
//! adds to the counters it already has. Memory is fixed at creation: 600 seconds and 1440
//! minutes of (tx, rx) bytes, about 32 KB per series.

use serde::{Deserialize, Serialize};

/// Seconds kept (10 minutes).
pub const SECONDS: usize = 600;
/// Minutes kept (24 hours).
pub const MINUTES: usize = 1440;
/// Seconds a Hurst estimate looks back.
pub const HURST_SECONDS: usize = 512;

#[derive(Debug, Clone)]
struct Ring {
    buf: Vec<(u64, u64)>,
    /// Index of the next slot to write.
    next: usize,
    len: usize,
}

impl Ring {
    fn new(n: usize) -> Self {
        Ring {
            buf: vec![(0, 0); n],
            next: 0,
            len: 0,
        }
    }

    fn push(&mut self, v: (u64, u64)) {
        self.buf[self.next] = v;
        self.next = (self.next + 1) % self.buf.len();
        self.len = (self.len + 1).min(self.buf.len());
    }

    /// The newest `n` samples, newest first.
    fn last(&self, n: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
        let cap = self.buf.len();
        (0..n.min(self.len)).map(move |k| self.buf[(self.next + cap - 1 - k) % cap])
    }
}

/// Rates for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Bits per second sent, over the last complete second.
    pub tx_rate_bps: u64,
    /// Bits per second received, over the last complete second.
    pub rx_rate_bps: u64,
    /// Bits per second sent, mean of the last 60 complete seconds.
    pub tx_rate_60s_bps: u64,
    /// Bits per second received, mean of the last 60 complete seconds.
    pub rx_rate_60s_bps: u64,
    /// Busiest second of the last 60 over their mean (tx + rx); null when idle.
    pub peak_to_mean_60s: Option<f64>,
}

/// The time series of one tunnel (or VM port).
#[derive(Debug, Clone)]
pub struct Series {
    seconds: Ring,
    minutes: Ring,
    /// The second (since the owner's epoch) being accumulated, and its minute.
    current: Option<u64>,
    /// Cumulative counters at the start of the current second.
    mark: (u64, u64),
    /// Bytes of the current minute's complete seconds.
    minute_acc: (u64, u64),
}

impl Default for Series {
    fn default() -> Self {
        Series {
            seconds: Ring::new(SECONDS),
            minutes: Ring::new(MINUTES),
            current: None,
            mark: (0, 0),
            minute_acc: (0, 0),
        }
    }
}

impl Series {
    /// Feed the cumulative byte counters at time `second` (whole seconds since an epoch).
    /// Seconds that passed without a call count as idle.
    pub fn update(&mut self, second: u64, tx_total: u64, rx_total: u64) {
        let Some(cur) = self.current else {
            self.current = Some(second);
            self.mark = (tx_total, rx_total);
            return;
        };
        if second <= cur {
            return;
        }
        // The second `cur` is complete: everything since the mark belongs to it.
        let delta = (
            tx_total.saturating_sub(self.mark.0),
            rx_total.saturating_sub(self.mark.1),
        );
        self.close_second(cur, delta);
        // Seconds with no update in between were idle (bounded: at most a full ring).
        let idle = (second - cur - 1).min((SECONDS + MINUTES * 60) as u64);
        for k in 1..=idle {
            self.close_second(cur + k, (0, 0));
        }
        self.current = Some(second);
        self.mark = (tx_total, rx_total);
    }

    fn close_second(&mut self, second: u64, delta: (u64, u64)) {
        self.seconds.push(delta);
        self.minute_acc.0 += delta.0;
        self.minute_acc.1 += delta.1;
        if second % 60 == 59 {
            self.minutes.push(self.minute_acc);
            self.minute_acc = (0, 0);
        }
    }

    /// The Hurst exponent of the last [`HURST_SECONDS`] seconds of traffic (both ways), by
    /// rescaled range: how bursty it is across time scales (None with too little traffic).
    pub fn hurst(&self) -> Option<f64> {
        let xs: Vec<f64> = self
            .seconds
            .last(HURST_SECONDS)
            .map(|(t, r)| (t + r) as f64)
            .collect();
        if xs.iter().filter(|x| **x > 0.0).count() < crate::burstiness::MIN_SAMPLES {
            return None;
        }
        crate::burstiness::hurst_rs(&xs)
    }

    /// The rates.
    pub fn rates(&self) -> Rates {
        let mut r = Rates::default();
        if let Some((tx, rx)) = self.seconds.last(1).next() {
            r.tx_rate_bps = tx * 8;
            r.rx_rate_bps = rx * 8;
        }
        let n = self.seconds.len.min(60);
        if n > 0 {
            let (tx, rx, peak) = self
                .seconds
                .last(60)
                .fold((0u64, 0u64, 0u64), |(t, x, p), (a, b)| {
                    (t + a, x + b, p.max(a + b))
                });
            r.tx_rate_60s_bps = tx * 8 / n as u64;
            r.rx_rate_60s_bps = rx * 8 / n as u64;
            let mean = (tx + rx) as f64 / n as f64;
            r.peak_to_mean_60s = (mean > 0.0).then(|| peak as f64 / mean);
        }
        r
    }

    /// Per-second (tx, rx) bytes, newest first, up to `n` (at most 600).
    pub fn seconds(&self, n: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.seconds.last(n)
    }

    /// Per-minute (tx, rx) bytes, newest first, up to `n` (at most 1440).
    pub fn minutes(&self, n: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.minutes.last(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_one_and_sixty_seconds() {
        let mut s = Series::default();
        let (mut tx, mut rx) = (0u64, 0u64);
        for sec in 0..=60u64 {
            s.update(sec, tx, rx);
            tx += 1000;
            rx += if sec % 2 == 0 { 500 } else { 1500 };
        }
        let r = s.rates();
        // The last complete second (59): 1000 B sent, 1500 B received.
        assert_eq!((r.tx_rate_bps, r.rx_rate_bps), (8000, 12_000));
        assert_eq!(r.tx_rate_60s_bps, 8000);
        assert_eq!(r.rx_rate_60s_bps, 8000);
        // Busiest second 2500 B over a mean of 2000 B.
        assert_eq!(r.peak_to_mean_60s, Some(1.25));
        assert_eq!(s.minutes(5).collect::<Vec<_>>(), vec![(60_000, 60_000)]);
    }

    #[test]
    fn gaps_count_as_idle_and_memory_is_bounded() {
        let mut s = Series::default();
        s.update(0, 0, 0);
        s.update(1, 4000, 0);
        s.update(11, 4000, 0); // nine idle seconds in between
        let v: Vec<_> = s.seconds(11).collect();
        assert_eq!(v.len(), 11);
        assert_eq!(v[10], (4000, 0));
        assert!(v[..10].iter().all(|x| *x == (0, 0)));
        // Hours later: the rings hold at most their size.
        s.update(100_000, 4000, 0);
        assert_eq!(s.seconds(10_000).count(), SECONDS);
        assert_eq!(s.minutes(10_000).count(), MINUTES);
        assert_eq!(s.rates().peak_to_mean_60s, None, "idle");
    }

    #[test]
    fn repeated_or_backward_times_are_ignored() {
        let mut s = Series::default();
        s.update(5, 0, 0);
        s.update(5, 100, 0);
        s.update(4, 200, 0);
        assert_eq!(s.seconds(10).count(), 0);
        s.update(6, 300, 0);
        assert_eq!(s.seconds(10).collect::<Vec<_>>(), vec![(300, 0)]);
    }

    #[test]
    fn hurst_of_a_port_needs_traffic_and_reads_noise_as_memoryless() {
        let mut s = Series::default();
        s.update(0, 0, 0);
        for t in 1..100 {
            s.update(t, 0, 0);
        }
        assert_eq!(s.hurst(), None, "idle");
        let mut rng = crate::testing::Rng::new(9);
        let (mut tx, mut rx) = (0u64, 0u64);
        for t in 100..700 {
            tx += (50_000.0 + 10_000.0 * rng.normal()).max(0.0) as u64;
            rx += 1000;
            s.update(t, tx, rx);
        }
        let h = s.hurst().expect("enough traffic");
        assert!((0.4..0.7).contains(&h), "H of noise {h}");
    }
}
