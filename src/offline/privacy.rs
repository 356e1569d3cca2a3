//! Differentially private training (`tandem train --dp-epsilon E`): every shopper's
//! contribution is bounded (at most `max_baskets_per_shopper` baskets, their most recent, of at
//! most `max_items_per_basket` items each), then the co-occurrence counts EASE is built from
//! (the Gram matrix `XᵀX`, item counts on its diagonal) are released once through the Gaussian
//! mechanism, calibrated exactly for any ε by the analytic method of Balle and Wang (ICML 2018).
//! Everything after the release (thresholding pairs, EASE, popularity) is post-processing.
//! Nothing else about the baskets may shape the model: under privacy the item universe and
//! the dense set of EASE do not depend on how often items sold, and training statistics that
//! would count baskets or name their dates are withheld.
//!
//! Sensitivity: one basket of `c` items adds 1 to `c` diagonal and `c(c-1)/2` pair entries of
//! the upper triangle, an L2 norm of `sqrt(c + c(c-1)/2)`; a shopper adds at most
//! `max_baskets_per_shopper` such baskets. Baskets without a customer id count as shoppers of
//! their own (nothing links them).

use std::collections::HashMap;

use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Privacy parameters of a training run (stored with the version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpParams {
    /// Privacy loss ε (smaller is more private).
    pub epsilon: f64,
    /// Failure probability δ.
    pub delta: f64,
    /// Baskets kept per shopper (the most recent).
    pub max_baskets_per_shopper: usize,
    /// Items kept per basket (a seeded random subset of larger ones).
    pub max_items_per_basket: usize,
    /// Noisy pair counts below this many standard deviations of the noise are dropped.
    pub threshold_sigmas: f64,
    /// Seed of the noise: drawn from the operating system for every run and never stored,
    /// since whoever knows it can subtract the noise again. Tests set it to be repeatable.
    #[serde(skip)]
    pub seed: u64,
}

impl DpParams {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err("dp epsilon must be a positive number".into());
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err("dp delta must be in (0, 1)".into());
        }
        if self.max_baskets_per_shopper == 0 || self.max_items_per_basket < 2 {
            return Err("dp bounds: at least 1 basket per shopper and 2 items per basket".into());
        }
        if !(self.threshold_sigmas >= 0.0 && self.threshold_sigmas.is_finite()) {
            return Err("dp threshold must be a non-negative number".into());
        }
        Ok(())
    }

    /// L2 sensitivity of the upper-triangular Gram matrix to one shopper.
    pub fn sensitivity(&self) -> f64 {
        let c = self.max_items_per_basket as f64;
        self.max_baskets_per_shopper as f64 * (c + c * (c - 1.0) / 2.0).sqrt()
    }

    /// Standard deviation of the Gaussian noise for (ε, δ)-differential privacy.
    pub fn sigma(&self) -> f64 {
        analytic_gaussian_sigma(self.epsilon, self.delta, self.sensitivity())
    }
}

/// Standard normal CDF.
fn phi(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// The δ that Gaussian noise of deviation `sigma` achieves for ε and L2 sensitivity `delta_f`
/// (Balle and Wang 2018, Theorem 8).
fn delta_of(sigma: f64, epsilon: f64, delta_f: f64) -> f64 {
    let a = delta_f / (2.0 * sigma);
    let b = epsilon * sigma / delta_f;
    phi(a - b) - epsilon.exp() * phi(-a - b)
}

/// The smallest deviation whose δ is at most `delta` (bisection; δ falls as σ grows).
pub fn analytic_gaussian_sigma(epsilon: f64, delta: f64, delta_f: f64) -> f64 {
    let (mut low, mut high) = (1e-6 * delta_f, delta_f);
    while delta_of(high, epsilon, delta_f) > delta {
        high *= 2.0;
    }
    for _ in 0..100 {
        let mid = (low + high) / 2.0;
        if delta_of(mid, epsilon, delta_f) > delta {
            low = mid;
        } else {
            high = mid;
        }
    }
    high
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// What the release did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DpReport {
    /// ε.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Deviation of the noise added to every count.
    pub sigma: f64,
    /// Item pairs whose noisy count passed the threshold (only these are used). How many
    /// pairs co-occur in the raw data is not reported: it is not part of the release.
    pub pairs_kept: u64,
}

/// Adds noise to every upper-triangle entry of the symmetric Gram matrix, mirrors it, and
/// zeroes pairs whose noisy count is below the threshold; item counts (the diagonal) are
/// clamped at 0. Every entry gets noise, zero or not, as the mechanism requires.
pub fn release_gram(gram: &mut Mat<f64>, params: &DpParams) -> DpReport {
    let m = gram.nrows();
    let sigma = params.sigma();
    let threshold = params.threshold_sigmas * sigma;
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut report = DpReport {
        epsilon: params.epsilon,
        delta: params.delta,
        sigma,
        ..DpReport::default()
    };
    for b in 0..m {
        for a in 0..=b {
            let count = gram[(a, b)];
            let noisy = count + sigma * normal(&mut rng);
            if a == b {
                gram[(a, a)] = noisy.max(0.0);
                continue;
            }
            let released = if noisy >= threshold.max(f64::MIN_POSITIVE) {
                report.pairs_kept += 1;
                noisy
            } else {
                0.0
            };
            gram[(a, b)] = released;
            gram[(b, a)] = released;
        }
    }
    report
}

/// Keeps at most `max_baskets_per_shopper` baskets per shopper (the latest in `order`, which
/// lists basket numbers oldest first with their shopper, `None` for an unknown one) and at
/// most `max_items_per_basket` items of each (a seeded random subset). Returns the baskets
/// kept, oldest first, with their items.
pub fn bound_contributions<'b>(
    order: impl DoubleEndedIterator<Item = (Option<u32>, &'b [u32])>,
    params: &DpParams,
) -> Vec<Vec<u32>> {
    let mut per_shopper: HashMap<u32, usize> = HashMap::new();
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed ^ 0xb0b);
    let mut kept: Vec<Vec<u32>> = Vec::new();
    for (shopper, basket) in order.rev() {
        if let Some(shopper) = shopper {
            let seen = per_shopper.entry(shopper).or_default();
            if *seen >= params.max_baskets_per_shopper {
                continue;
            }
            *seen += 1;
        }
        let mut items = basket.to_vec();
        if items.len() > params.max_items_per_basket {
            // Partial Fisher–Yates: a uniform subset of the allowed size.
            for i in 0..params.max_items_per_basket {
                let j = rng.random_range(i..items.len());
                items.swap(i, j);
            }
            items.truncate(params.max_items_per_basket);
            items.sort_unstable();
        }
        kept.push(items);
    }
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(epsilon: f64) -> DpParams {
        DpParams {
            epsilon,
            delta: 1e-6,
            max_baskets_per_shopper: 1,
            max_items_per_basket: 20,
            threshold_sigmas: 2.0,
            seed: 1,
        }
    }

    #[test]
    fn calibration_meets_delta_and_needs_less_noise_for_a_larger_epsilon() {
        let p = params(1.0);
        let sigma = p.sigma();
        assert!(delta_of(sigma, 1.0, p.sensitivity()) <= 1e-6);
        assert!(delta_of(sigma * 0.99, 1.0, p.sensitivity()) > 1e-6, "tight");
        let looser = params(5.0).sigma();
        assert!(looser < sigma / 2.0, "{looser} vs {sigma}");
        // Sensitivity of one basket of 20 items: sqrt(20 + 190).
        assert!((p.sensitivity() - 210f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn every_shopper_contributes_at_most_the_bounds() {
        let baskets: Vec<(Option<u32>, Vec<u32>)> = vec![
            (Some(1), (0..30).collect()),
            (Some(1), vec![1, 2]),
            (Some(2), vec![3, 4]),
            (None, vec![5, 6]),
            (None, vec![7, 8]),
        ];
        let mut p = params(1.0);
        p.max_items_per_basket = 10;
        let kept = bound_contributions(baskets.iter().map(|(s, b)| (*s, b.as_slice())), &p);
        // Shopper 1 keeps only the latest basket; unknown shoppers keep theirs.
        assert_eq!(kept, [vec![1, 2], vec![3, 4], vec![5, 6], vec![7, 8]]);
        let many = [(Some(9), (0..30).collect::<Vec<u32>>())];
        let kept = bound_contributions(many.iter().map(|(s, b)| (*s, b.as_slice())), &p);
        assert_eq!(kept[0].len(), 10);
    }

    #[test]
    fn the_release_keeps_strong_pairs_and_drops_rare_ones() {
        let mut gram = Mat::<f64>::zeros(3, 3);
        for (a, b, count) in [(0, 1, 10_000.0), (0, 2, 1.0)] {
            gram[(a, b)] = count;
            gram[(b, a)] = count;
        }
        for a in 0..3 {
            gram[(a, a)] = 10_000.0;
        }
        let report = release_gram(&mut gram, &params(5.0));
        assert_eq!(report.pairs_kept, 1);
        assert!(gram[(0, 1)] > 9_000.0 && gram[(0, 1)] == gram[(1, 0)]);
        assert_eq!(gram[(0, 2)], 0.0);
        assert!(gram[(2, 2)] >= 0.0);
    }
}
