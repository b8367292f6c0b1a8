//! Round-trip time of a tunnel from probe replies: recent percentiles, smoothed RTT
//! (RFC 6298) and jitter (RFC 3550's interarrival jitter, applied to successive RTTs).
//!
//! Fed by the forwarding core with RTTs it computed as `(t4 - t1) - hold`, the reflector's
//! hold time taken off (TWAMP-style), so no clocks need to agree.

use serde::Serialize;

/// Samples kept for percentiles (about a minute at one probe a second).
pub const RECENT: usize = 64;

/// RTT summary for status, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RttSummary {
    /// Fewest over the recent samples.
    pub rtt_min_us: Option<u64>,
    /// Median of the recent samples.
    pub rtt_p50_us: Option<u64>,
    /// 90th percentile of the recent samples.
    pub rtt_p90_us: Option<u64>,
    /// 99th percentile of the recent samples.
    pub rtt_p99_us: Option<u64>,
    /// Most over the recent samples.
    pub rtt_max_us: Option<u64>,
    /// Smoothed RTT (RFC 6298, gain 1/8).
    pub srtt_us: Option<u64>,
    /// Jitter (RFC 3550: J += (|D| - J) / 16 over successive RTTs).
    pub jitter_us: Option<u64>,
}

/// RTT estimator of one tunnel.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    recent: [u64; RECENT],
    len: usize,
    next: usize,
    srtt_ns: Option<f64>,
    jitter_ns: f64,
    last_ns: Option<u64>,
}

impl Default for RttEstimator {
    fn default() -> Self {
        RttEstimator {
            recent: [0; RECENT],
            len: 0,
            next: 0,
            srtt_ns: None,
            jitter_ns: 0.0,
            last_ns: None,
        }
    }
}

impl RttEstimator {
    /// Record one RTT in nanoseconds.
    pub fn record(&mut self, rtt_ns: u64) {
        self.recent[self.next] = rtt_ns;
        self.next = (self.next + 1) % RECENT;
        self.len = (self.len + 1).min(RECENT);
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
    }

    /// Samples recorded (up to [`RECENT`] are kept).
    pub fn samples(&self) -> usize {
        self.len
    }

    /// The summary (percentiles by nearest rank over the recent samples).
    pub fn summary(&self) -> RttSummary {
        if self.len == 0 {
            return RttSummary::default();
        }
        let mut v: [u64; RECENT] = self.recent;
        let s = &mut v[..self.len];
        s.sort_unstable();
        let rank =
            |p: f64| s[((p * self.len as f64).ceil() as usize).clamp(1, self.len) - 1] / 1000;
        RttSummary {
            rtt_min_us: Some(s[0] / 1000),
            rtt_p50_us: Some(rank(0.50)),
            rtt_p90_us: Some(rank(0.90)),
            rtt_p99_us: Some(rank(0.99)),
            rtt_max_us: Some(s[self.len - 1] / 1000),
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

    #[test]
    fn percentiles_over_recent_samples() {
        let mut e = RttEstimator::default();
        for ms in 1..=100u64 {
            e.record(ms * 1_000_000);
        }
        // Only the last 64 (37..=100 ms) are kept.
        let s = e.summary();
        assert_eq!(e.samples(), RECENT);
        assert_eq!(s.rtt_min_us, Some(37_000));
        assert_eq!(s.rtt_max_us, Some(100_000));
        assert_eq!(s.rtt_p50_us, Some(68_000));
        assert_eq!(s.rtt_p99_us, Some(100_000));
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
