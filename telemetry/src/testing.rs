//! Series with known properties for the estimators' tests: a small deterministic RNG and
//! fractional Gaussian noise of a chosen Hurst exponent (Hosking's exact method).

/// xorshift64*: deterministic, no dependency, good enough for test series.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// `n` samples of fractional Gaussian noise with Hurst exponent `h`: each sample drawn
/// from its exact conditional distribution given the ones before (Durbin-Levinson on the
/// autocovariance ½(|k+1|^2H − 2|k|^2H + |k−1|^2H)). O(n²), fine for test sizes.
pub(crate) fn fgn(n: usize, h: f64, seed: u64) -> Vec<f64> {
    let gamma = |k: usize| {
        let k = k as f64;
        0.5 * ((k + 1.0).powf(2.0 * h) - 2.0 * k.powf(2.0 * h) + (k - 1.0).abs().powf(2.0 * h))
    };
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(n);
    let mut phi: Vec<f64> = Vec::with_capacity(n);
    let mut v = gamma(0);
    x.push(rng.normal() * v.sqrt());
    for t in 1..n {
        // Update the partial autocorrelations for order t.
        let num = gamma(t)
            - phi
                .iter()
                .enumerate()
                .map(|(j, p)| p * gamma(t - 1 - j))
                .sum::<f64>();
        let k = num / v;
        let prev = phi.clone();
        for j in 0..phi.len() {
            phi[j] = prev[j] - k * prev[prev.len() - 1 - j];
        }
        phi.push(k);
        v *= 1.0 - k * k;
        let mean: f64 = phi.iter().enumerate().map(|(j, p)| p * x[t - 1 - j]).sum();
        x.push(mean + rng.normal() * v.sqrt());
    }
    x
}
