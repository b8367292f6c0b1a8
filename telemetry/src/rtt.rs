//! Round-trip time of a tunnel from probe replies: recent percentiles, smoothed RTT
//! (RFC 6298) and jitter (RFC 3550's interarrival jitter, applied to successive RTTs).
//!
//! Percentiles come from HDR histograms (2 significant digits) over a sliding pair of
//! 60 s windows; a cumulative bucket histogram feeds Prometheus.
//!
//! Fed by the forwarding core with RTTs it computed as `(t4 - t1) - hold`, the reflector's
//! hold time taken off (TWAMP-style), so no clocks need to agree.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Length of one percentile window. The summary covers the current window and the one
/// before it, so it always spans between one and two windows of probes.
pub const WINDOW_S: u64 = 60;
/// Largest RTT the histogram holds (10 s, in µs); larger samples count as this.
const HIGHEST_US: u64 = 10_000_000;
/// Bucket bounds of the cumulative Prometheus histogram, in µs.
pub const BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// RTT summary for status, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RttSummary {
    /// Fewest in the window.
    pub rtt_min_us: Option<u64>,
    /// Median of the window.
    pub rtt_p50_us: Option<u64>,
    /// 90th percentile of the window.
    pub rtt_p90_us: Option<u64>,
    /// 99th percentile of the window.
    pub rtt_p99_us: Option<u64>,
    /// Most in the window.
    pub rtt_max_us: Option<u64>,
    /// Probe answers in the window.
    pub rtt_samples: u64,
    /// Smoothed RTT (RFC 6298, gain 1/8).
    pub srtt_us: Option<u64>,
    /// Jitter (RFC 3550: J += (|D| - J) / 16 over successive RTTs).
    pub jitter_us: Option<u64>,
}

/// Cumulative RTT histogram since start, for Prometheus (`le` buckets of [`BUCKETS_US`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RttBuckets {
    /// Samples at or below each bound (cumulative, as Prometheus wants them).
    pub le: [u64; BUCKETS_US.len()],
    /// All samples.
    pub count: u64,
    /// Sum of all samples in ns.
    pub sum_ns: u64,
}

/// One window: an HDR histogram (2 significant digits, so about 9 KB) plus the exact
/// extremes, which the histogram would round.
#[derive(Debug, Clone)]
struct Window {
    hist: Histogram<u32>,
    min_ns: u64,
    max_ns: u64,
}

impl Window {
    fn new() -> Self {
        Window {
            // Bounds and precision are constants within hdrhistogram's limits.
            hist: Histogram::new_with_bounds(1, HIGHEST_US, 2)
                .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid")),
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    fn record(&mut self, rtt_ns: u64) {
        let us = (rtt_ns / 1000).clamp(1, HIGHEST_US);
        // Saturating record of an in-range value cannot fail.
        self.hist.saturating_record(us);
        self.min_ns = self.min_ns.min(rtt_ns);
        self.max_ns = self.max_ns.max(rtt_ns);
    }

    fn reset(&mut self) {
        self.hist.reset();
        self.min_ns = u64::MAX;
        self.max_ns = 0;
    }
}

/// RTT estimator of one tunnel.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    current: Window,
    previous: Window,
    /// The window (`second / WINDOW_S`) `current` belongs to.
    window: u64,
    srtt_ns: Option<f64>,
    jitter_ns: f64,
    last_ns: Option<u64>,
    buckets: RttBuckets,
    /// The summary as of the last change (a sample or a window's turn): snapshots read it
    /// once a second for every tunnel, and computing it merges two 9 KB histograms.
    summary: RttSummary,
}

impl Default for RttEstimator {
    fn default() -> Self {
        RttEstimator {
            current: Window::new(),
            previous: Window::new(),
            window: 0,
            srtt_ns: None,
            jitter_ns: 0.0,
            last_ns: None,
            buckets: RttBuckets::default(),
            summary: RttSummary::default(),
        }
    }
}

impl RttEstimator {
    /// Record one RTT in nanoseconds.
    pub fn record(&mut self, rtt_ns: u64) {
        self.current.record(rtt_ns);
        let us = rtt_ns / 1000;
        for (le, bound) in self.buckets.le.iter_mut().zip(BUCKETS_US) {
            *le += u64::from(us <= bound);
        }
        self.buckets.count += 1;
        self.buckets.sum_ns = self.buckets.sum_ns.saturating_add(rtt_ns);
        let r = rtt_ns as f64;
        self.srtt_ns = Some(match self.srtt_ns {
            None => r,
            Some(s) => s + (r - s) / 8.0,
        });
        if let Some(last) = self.last_ns {
            let d = (rtt_ns as f64 - last as f64).abs();
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.last_ns = Some(rtt_ns);
        self.summary = self.compute();
    }

    /// Move the window on: call with the owner's clock in seconds (on its tick).
    pub fn rotate(&mut self, second: u64) {
        let w = second / WINDOW_S;
        if w == self.window {
            return;
        }
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.reset();
        if w > self.window + 1 {
            // A whole window passed without a tick: the previous one is empty too.
            self.previous.reset();
        }
        self.window = w;
        self.summary = self.compute();
    }

    /// Samples in the summary's span (current and previous window).
    pub fn samples(&self) -> u64 {
        self.current.hist.len() + self.previous.hist.len()
    }

    /// Cumulative histogram since start.
    pub fn buckets(&self) -> &RttBuckets {
        &self.buckets
    }

    /// The summary over the current and previous window (percentiles to 2 significant
    /// digits; min and max exact), as of the last sample or window turn.
    pub fn summary(&self) -> RttSummary {
        self.summary
    }

    fn compute(&self) -> RttSummary {
        let n = self.samples();
        if n == 0 {
            return RttSummary {
                srtt_us: self.srtt_ns.map(|x| (x / 1000.0).round() as u64),
                ..RttSummary::default()
            };
        }
        let mut h = self.current.hist.clone();
        // Same bounds on both sides: adding cannot fail.
        let _ = h.add(&self.previous.hist);
        let q = |p: f64| Some(h.median_equivalent(h.value_at_quantile(p)));
        RttSummary {
            rtt_min_us: Some(self.current.min_ns.min(self.previous.min_ns) / 1000),
            rtt_p50_us: q(0.50),
            rtt_p90_us: q(0.90),
            rtt_p99_us: q(0.99),
            rtt_max_us: Some(self.current.max_ns.max(self.previous.max_ns) / 1000),
            rtt_samples: n,
            srtt_us: self.srtt_ns.map(|x| (x / 1000.0).round() as u64),
            jitter_us: Some((self.jitter_ns / 1000.0).round() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_figures() {
        assert_eq!(RttEstimator::default().summary(), RttSummary::default());
    }

    /// Within the histogram's 2 significant digits (1/128 relative).
    fn close(got: Option<u64>, want: u64) -> bool {
        got.is_some_and(|g| g.abs_diff(want) * 128 <= want)
    }

    #[test]
    fn percentiles_over_the_window() {
        let mut e = RttEstimator::default();
        for ms in 1..=100u64 {
            e.record(ms * 1_000_000);
        }
        let s = e.summary();
        assert_eq!(e.samples(), 100);
        assert_eq!(s.rtt_min_us, Some(1_000));
        assert_eq!(s.rtt_max_us, Some(100_000));
        assert!(close(s.rtt_p50_us, 50_000), "{s:?}");
        assert!(close(s.rtt_p90_us, 90_000), "{s:?}");
        assert!(close(s.rtt_p99_us, 99_000), "{s:?}");
    }

    #[test]
    fn windows_roll_over() {
        let mut e = RttEstimator::default();
        e.rotate(0);
        e.record(50_000_000);
        // Next window: the old samples still count (previous window).
        e.rotate(WINDOW_S);
        e.record(1_000_000);
        assert_eq!(e.samples(), 2);
        assert_eq!(e.summary().rtt_max_us, Some(50_000));
        // One more: the 50 ms sample is gone.
        e.rotate(2 * WINDOW_S + 5);
        e.record(1_000_000);
        let s = e.summary();
        assert_eq!((s.rtt_samples, s.rtt_max_us), (2, Some(1_000)));
        // A long silence empties both windows; srtt stays.
        e.rotate(10 * WINDOW_S);
        let s = e.summary();
        assert_eq!((s.rtt_samples, s.rtt_p50_us), (0, None));
        assert!(s.srtt_us.is_some());
    }

    #[test]
    fn cumulative_buckets_for_prometheus() {
        let mut e = RttEstimator::default();
        for us in [50u64, 300, 300, 4_000, 20_000_000] {
            e.record(us * 1000);
        }
        let b = e.buckets();
        assert_eq!(b.count, 5);
        assert_eq!(b.le[0], 1); // <= 100 us
        assert_eq!(b.le[2], 3); // <= 500 us
        assert_eq!(b.le[5], 4); // <= 5 ms
        assert_eq!(b.le[BUCKETS_US.len() - 1], 4); // 20 s is only in +Inf
        assert!(b.le.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(b.sum_ns, (50 + 600 + 4_000 + 20_000_000) * 1000);
    }

    proptest::proptest! {
        /// The median is within the histogram's precision of the exact median.
        #[test]
        fn median_matches_exact(mut v in proptest::collection::vec(1u64..5_000_000, 1..200)) {
            let mut e = RttEstimator::default();
            for &x in &v {
                e.record(x * 1000);
            }
            v.sort_unstable();
            let exact = v[v.len().div_ceil(2) - 1];
            let got = e.summary().rtt_p50_us.unwrap_or(0);
            proptest::prop_assert!(got.abs_diff(exact) * 64 <= exact.max(64), "{got} vs {exact}");
        }
    }

    #[test]
    fn constant_rtt_has_no_jitter_and_srtt_converges() {
        let mut e = RttEstimator::default();
        e.record(10_000_000);
        for _ in 0..200 {
            e.record(2_000_000);
        }
        let s = e.summary();
        assert_eq!(s.srtt_us, Some(2_000));
        assert!(s.jitter_us.is_some_and(|j| j < 5), "{s:?}");
    }

    #[test]
    fn jitter_follows_rfc3550() {
        // Alternating 1 ms and 3 ms: |D| = 2 ms each time; J tends to 2 ms.
        let mut e = RttEstimator::default();
        for i in 0..500 {
            e.record(if i % 2 == 0 { 1_000_000 } else { 3_000_000 });
        }
        assert_eq!(e.summary().jitter_us, Some(2_000));
        // After one step from J = 0: J = |D| / 16.
        let mut e = RttEstimator::default();
        e.record(1_000_000);
        e.record(1_160_000);
        assert_eq!(e.summary().jitter_us, Some(10));
    }
}
