//! How bursty a VM's traffic is (for sizing links and limits): the peak-to-mean ratio of its rate,
//! and the Hurst exponent H of the rate series, by rescaled range (R/S) and by aggregated
//! variance. H near 0.5 is memoryless traffic; towards 1 it is self-similar, bursty at every
//! time scale, and averages out slowly, so a link sized for the mean fills up.
//!
//! They describe; they never fire an alarm by themselves. Both estimators fit a line to
//! log-log points over block sizes that double from [`MIN_BLOCK`] to a quarter of the
//! series, and need at least [`MIN_SAMPLES`] samples.

/// The smallest block size fitted.
pub const MIN_BLOCK: usize = 8;
/// Samples needed for a Hurst estimate.
pub const MIN_SAMPLES: usize = 64;

/// Peak over mean (None for an empty or all-zero series).
pub fn peak_to_mean(xs: &[f64]) -> Option<f64> {
    let n = xs.len();
    if n == 0 {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let peak = xs.iter().copied().fold(f64::MIN, f64::max);
    (mean > 0.0).then(|| peak / mean)
}

/// Block sizes: doubling from `MIN_BLOCK` to n/4.
fn blocks(n: usize) -> impl Iterator<Item = usize> {
    std::iter::successors(Some(MIN_BLOCK), |b| Some(b * 2)).take_while(move |b| *b <= n / 4)
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

/// H by rescaled range: E[R/S] over blocks of size n grows as n^H.
pub fn hurst_rs(xs: &[f64]) -> Option<f64> {
    if xs.len() < MIN_SAMPLES || xs.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut points = Vec::new();
    for b in blocks(xs.len()) {
        let mut sum = 0.0;
        let mut count = 0;
        for chunk in xs.chunks_exact(b) {
            let mean = chunk.iter().sum::<f64>() / b as f64;
            let (mut cum, mut lo, mut hi, mut ss) = (0.0f64, 0.0f64, 0.0f64, 0.0);
            for x in chunk {
                cum += x - mean;
                lo = lo.min(cum);
                hi = hi.max(cum);
                ss += (x - mean) * (x - mean);
            }
            let s = (ss / b as f64).sqrt();
            if s > 0.0 {
                sum += (hi - lo) / s;
                count += 1;
            }
        }
        if count > 0 {
            points.push(((b as f64).ln(), (sum / count as f64).ln()));
        }
    }
    slope(&points).map(|h| h.clamp(0.0, 1.0))
}

/// H by aggregated variance: the variance of block means falls as m^(2H − 2).
pub fn hurst_aggregated_variance(xs: &[f64]) -> Option<f64> {
    if xs.len() < MIN_SAMPLES || xs.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut points = Vec::new();
    // At least 8 block means per point: with fewer their variance is mostly noise.
    for m in blocks(xs.len()).take_while(|m| xs.len() / m >= 8) {
        let means: Vec<f64> = xs
            .chunks_exact(m)
            .map(|c| c.iter().sum::<f64>() / m as f64)
            .collect();
        let k = means.len() as f64;
        let mu = means.iter().sum::<f64>() / k;
        let var = means.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / (k - 1.0);
        if var > 0.0 {
            points.push(((m as f64).ln(), var.ln()));
        }
    }
    slope(&points).map(|beta| (1.0 + beta / 2.0).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Rng, fgn};

    #[test]
    fn peak_to_mean_of_flat_bursty_and_empty_series() {
        assert_eq!(peak_to_mean(&[5.0; 60]), Some(1.0));
        let mut burst = vec![1.0; 60];
        burst[10] = 61.0;
        assert_eq!(peak_to_mean(&burst), Some(61.0 / 2.0));
        assert_eq!(peak_to_mean(&[]), None);
        assert_eq!(peak_to_mean(&[0.0; 5]), None);
    }

    #[test]
    fn white_noise_has_h_near_one_half() {
        let mut rng = Rng::new(1);
        let xs: Vec<f64> = (0..8192).map(|_| rng.normal()).collect();
        let rs = hurst_rs(&xs).expect("rs");
        let av = hurst_aggregated_variance(&xs).expect("av");
        // R/S is known to read high on short blocks (Anis-Lloyd): about 0.55 here.
        assert!((0.45..0.65).contains(&rs), "R/S {rs}");
        assert!((0.4..0.6).contains(&av), "aggregated variance {av}");
    }

    #[test]
    fn self_similar_series_of_known_h_are_recognised() {
        let mut last_av = 0.5;
        for (h, seed) in [(0.7, 2), (0.85, 3)] {
            let xs = fgn(4096, h, seed);
            let rs = hurst_rs(&xs).expect("rs");
            let av = hurst_aggregated_variance(&xs).expect("av");
            assert!((rs - h).abs() < 0.12, "H {h}: R/S {rs}");
            // Aggregated variance reads low for long memory (the sample mean absorbs part
            // of it), a known bias: within 0.15, and in the right order.
            assert!((av - h).abs() < 0.15, "H {h}: aggregated variance {av}");
            assert!(av > last_av + 0.05, "H {h}: {av} not above {last_av}");
            last_av = av;
        }
    }

    #[test]
    fn short_or_broken_series_give_no_estimate() {
        assert_eq!(hurst_rs(&[1.0; 10]), None);
        assert_eq!(hurst_aggregated_variance(&[1.0; 63]), None);
        let mut xs = vec![1.0; 100];
        xs[3] = f64::NAN;
        assert_eq!(hurst_rs(&xs), None);
        assert_eq!(hurst_rs(&[2.0; 256]), None, "a constant has no range");
    }
}
