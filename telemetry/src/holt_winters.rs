//! Holt-Winters forecasting, additive form, for rates with a daily (or any periodic) shape,
//! which a fixed threshold or a plain mean would flag every morning: level, trend and one seasonal term per position in the period. Each
//! sample is compared with the forecast made before it; the forecast errors get their own
//! EWMA deviation, so "outside the band" means "further from the forecast than this series
//! usually is", not a fixed number.
//!
//! The first period only learns the shape (the seasonal terms start as that period's
//! deviations from its mean); scoring starts with the second.

/// How fast the error band follows the errors: slower than the model, so one lucky
/// stretch of small errors does not narrow the band and make the next ordinary one an
/// anomaly.
const DEV_RATE: f64 = 0.05;

/// One series' Holt-Winters state.
#[derive(Debug, Clone, PartialEq)]
pub struct HoltWinters {
    alpha: f64,
    beta: f64,
    gamma: f64,
    level: f64,
    trend: f64,
    season: Vec<f64>,
    /// The first period's samples, until it is complete.
    first: Vec<f64>,
    /// Position in the period of the next sample.
    at: usize,
    /// EWMA of |forecast error|, the band's unit.
    dev: f64,
    samples: u64,
}

/// One sample against its forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// What was expected (the sample itself while learning the first period).
    pub expected: f64,
    /// The usual size of a forecast error so far.
    pub deviation: f64,
    /// (sample − expected) / deviation; 0 while learning.
    pub score: f64,
}

impl HoltWinters {
    /// A model with `period` samples per cycle and smoothing factors in (0, 1]: `alpha`
    /// for the level, `beta` the trend, `gamma` the seasonal terms.
    pub fn new(period: usize, alpha: f64, beta: f64, gamma: f64) -> Self {
        let period = period.max(1);
        let f = |x: f64| x.clamp(1e-4, 1.0);
        HoltWinters {
            alpha: f(alpha),
            beta: f(beta),
            gamma: f(gamma),
            level: 0.0,
            trend: 0.0,
            season: vec![0.0; period],
            first: Vec::with_capacity(period),
            at: 0,
            dev: 0.0,
            samples: 0,
        }
    }

    /// The period.
    pub fn period(&self) -> usize {
        self.season.len()
    }

    /// The forecast for the next sample (None while the first period is learned).
    pub fn expected(&self) -> Option<f64> {
        (self.first.is_empty() && self.samples > 0)
            .then(|| self.level + self.trend + self.season[self.at])
    }

    /// Score `x` against the forecast, then learn it.
    pub fn update(&mut self, x: f64) -> Forecast {
        if !x.is_finite() {
            let e = self.expected().unwrap_or(0.0);
            return Forecast {
                expected: e,
                deviation: self.dev,
                score: 0.0,
            };
        }
        self.samples += 1;
        let m = self.season.len();
        if self.samples <= m as u64 {
            self.first.push(x);
            if self.first.len() == m {
                let mean = self.first.iter().sum::<f64>() / m as f64;
                for (s, v) in self.season.iter_mut().zip(&self.first) {
                    *s = v - mean;
                }
                self.level = mean;
                self.trend = 0.0;
                self.first.clear();
                self.first.shrink_to_fit();
            }
            self.at = (self.at + 1) % m;
            return Forecast {
                expected: x,
                deviation: 0.0,
                score: 0.0,
            };
        }
        let i = self.at;
        let expected = self.level + self.trend + self.season[i];
        let err = x - expected;
        // The deviation is scored before it learns this error, as a baseline is.
        let floor = (expected.abs() * 0.01).max(f64::MIN_POSITIVE);
        let score = if self.samples <= 2 * m as u64 {
            0.0
        } else {
            err / self.dev.max(floor)
        };
        let deviation = self.dev;
        let last_level = self.level;
        self.level =
            self.alpha * (x - self.season[i]) + (1.0 - self.alpha) * (self.level + self.trend);
        self.trend = self.beta * (self.level - last_level) + (1.0 - self.beta) * self.trend;
        self.season[i] = self.gamma * (x - self.level) + (1.0 - self.gamma) * self.season[i];
        // Mean absolute error × 1.25 estimates the standard deviation of Gaussian errors.
        let a = 1.25 * err.abs();
        self.dev = if self.samples == m as u64 + 1 {
            a
        } else {
            self.dev + DEV_RATE * (a - self.dev)
        };
        self.at = (i + 1) % m;
        Forecast {
            expected,
            deviation,
            score,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// A daily shape in 24 samples: quiet at night, busy in the afternoon.
    fn day(h: usize) -> f64 {
        100.0 + 80.0 * ((h as f64 - 6.0) / 24.0 * std::f64::consts::TAU).sin()
    }

    #[test]
    fn a_daily_shape_is_learned_and_its_peaks_are_not_anomalies() {
        let mut hw = HoltWinters::new(24, 0.2, 0.05, 0.3);
        let mut rng = Rng::new(3);
        let mut worst: f64 = 0.0;
        for i in 0..24 * 20 {
            let f = hw.update(day(i % 24) + 3.0 * rng.normal());
            if i >= 24 * 5 {
                worst = worst.max(f.score.abs());
            }
        }
        assert!(worst < 5.0, "a known daily peak scored {worst}");
        // The same jump off the shape is an anomaly, at a quiet hour and at a busy one.
        let e = hw.expected().expect("forecast");
        let f = hw.update(e + 60.0);
        assert!(f.score > 5.0, "a 60-unit jump scored {}", f.score);
    }

    #[test]
    fn a_ramp_is_followed_by_its_trend() {
        let mut hw = HoltWinters::new(4, 0.5, 0.3, 0.1);
        let mut last = None;
        for i in 0..400 {
            last = Some(hw.update(10.0 + 2.0 * i as f64));
        }
        let f = last.expect("one");
        assert!((f.expected - (10.0 + 2.0 * 399.0)).abs() < 1.0, "{f:?}");
    }

    #[test]
    fn a_step_scores_high_then_becomes_the_new_normal() {
        let mut hw = HoltWinters::new(12, 0.3, 0.01, 0.2);
        let mut rng = Rng::new(5);
        for _ in 0..12 * 10 {
            hw.update(50.0 + rng.normal());
        }
        let first = hw.update(80.0 + rng.normal());
        assert!(first.score > 10.0, "{first:?}");
        let mut s = first;
        for _ in 0..12 * 20 {
            s = hw.update(80.0 + rng.normal());
        }
        assert!(s.score.abs() < 4.0, "{s:?}");
    }

    #[test]
    fn the_first_two_periods_never_score_and_nan_is_ignored() {
        let mut hw = HoltWinters::new(5, 0.3, 0.1, 0.3);
        for i in 0..10 {
            assert_eq!(hw.update(if i % 2 == 0 { 1.0 } else { 1e6 }).score, 0.0);
        }
        assert!(hw.expected().is_some());
        assert_eq!(hw.update(f64::NAN).score, 0.0);
        assert_eq!(hw.period(), 5);
    }
}
