//! A baseline that learns what is normal for one series (a peer's RTT, a VM's rate) and
//! says how far a new sample is from it: an exponentially weighted mean and variance
//! (West's EWMA form), and the sample's z-score against them. Why: a fixed
//! threshold cannot know that 40 ms is normal on one tunnel and a fault on another.
//!
//! A sample is scored against the baseline *before* it is learned, so a step shows up in
//! full at once and then fades as the baseline follows it; outliers are learned slowly
//! ([`OUTLIER_Z`]).

/// EWMA mean and variance of one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    alpha: f64,
    mean: f64,
    var: f64,
    samples: u64,
}

/// Where one sample stands against the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The baseline's mean before this sample.
    pub mean: f64,
    /// Its standard deviation before this sample.
    pub sd: f64,
    /// (sample − mean) / sd; 0 while the baseline is still warming up.
    pub z: f64,
}

/// Samples before a baseline scores anything: with fewer, its variance means little.
pub const WARM_UP: u64 = 10;
/// A sample this many deviations out is learned at a tenth of the rate: a fault must not
/// teach the baseline that it is normal within a few samples (the variance would grow to
/// swallow it). A lasting change still becomes the new normal, ten times slower.
pub const OUTLIER_Z: f64 = 3.0;

impl Ewma {
    /// A baseline whose memory is about `span` samples (alpha = 2 / (span + 1)).
    pub fn with_span(span: f64) -> Self {
        Ewma {
            alpha: (2.0 / (span.max(1.0) + 1.0)).clamp(1e-6, 1.0),
            mean: 0.0,
            var: 0.0,
            samples: 0,
        }
    }

    /// Score `x` against the baseline, then learn it.
    pub fn update(&mut self, x: f64) -> Score {
        if !x.is_finite() {
            return self.score(self.mean);
        }
        let s = self.score(x);
        if self.samples == 0 {
            self.mean = x;
        } else {
            let alpha = if s.z.abs() > OUTLIER_Z {
                self.alpha / 10.0
            } else {
                self.alpha
            };
            let d = x - self.mean;
            let incr = alpha * d;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + d * incr);
        }
        self.samples += 1;
        s
    }

    /// Where `x` would stand, without learning it.
    pub fn score(&self, x: f64) -> Score {
        let sd = self.var.max(0.0).sqrt();
        // A perfectly flat history (sd 0) would make any change infinitely far: use a
        // floor of 1 % of the mean's size, so a constant series still needs a real step.
        let floor = (self.mean.abs() * 0.01).max(f64::MIN_POSITIVE);
        let z = if self.samples < WARM_UP {
            0.0
        } else {
            (x - self.mean) / sd.max(floor)
        };
        Score {
            mean: self.mean,
            sd,
            z,
        }
    }

    /// Samples learned.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The mean.
    pub fn mean(&self) -> f64 {
        self.mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    #[test]
    fn a_step_scores_high_at_once_then_fades_as_the_baseline_follows() {
        let mut b = Ewma::with_span(30.0);
        let mut rng = Rng::new(7);
        for _ in 0..200 {
            b.update(20.0 + rng.normal());
        }
        let s = b.update(40.0);
        assert!(s.z > 10.0, "a 20-sd step: z = {}", s.z);
        let mut last = s.z;
        for _ in 0..100 {
            last = b.update(40.0 + rng.normal()).z;
        }
        assert!(
            last.abs() < 3.0,
            "after 100 samples the step is normal: z = {last}"
        );
        assert!((b.mean() - 40.0).abs() < 1.0);
    }

    #[test]
    fn white_noise_stays_inside_a_three_sigma_band() {
        let mut b = Ewma::with_span(100.0);
        let mut rng = Rng::new(11);
        let mut outside = 0;
        for i in 0..10_000 {
            let z = b.update(5.0 + 2.0 * rng.normal()).z;
            if i > 200 && z.abs() > 3.0 {
                outside += 1;
            }
        }
        // Gaussian: 0.27 % beyond 3 sd; the EWMA's own noise adds a little.
        assert!(outside < 100, "{outside} of 9800 outside the band");
    }

    #[test]
    fn warm_up_flat_series_and_garbage_input_do_not_fire() {
        let mut b = Ewma::with_span(10.0);
        for _ in 0..(WARM_UP - 1) {
            assert_eq!(b.update(100.0).z, 0.0);
        }
        assert_eq!(b.update(1e9).z, 0.0, "still warming up");
        let mut flat = Ewma::with_span(10.0);
        for _ in 0..50 {
            flat.update(100.0);
        }
        assert!(flat.score(100.5).z < 1.0, "half a percent on a flat series");
        assert!(flat.score(110.0).z > 5.0, "ten percent is a step");
        assert_eq!(flat.update(f64::NAN).z, 0.0);
        assert_eq!(flat.samples(), 50, "NaN is not learned");
    }

    #[test]
    fn a_ramp_is_followed_with_a_bounded_lag() {
        let mut b = Ewma::with_span(10.0);
        let mut z = 0.0;
        for i in 0..500 {
            z = b.update(i as f64).z;
        }
        // A ramp lags by about span/2 slopes: z stays bounded, not growing.
        assert!(
            z.abs() < 10.0 && b.mean() > 490.0,
            "z {z}, mean {}",
            b.mean()
        );
    }
}
