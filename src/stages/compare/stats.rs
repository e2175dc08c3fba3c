//! The statistics of `compare`: a mean and its percentile-bootstrap interval over the seeds of a
//! group, from a resampling stream that depends only on the seed and what is summarised, so
//! the interval of one group never moves when another group is added.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The mean of some values with a bootstrap confidence interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct Summary {
    pub(super) n: usize,
    pub(super) mean: f64,
    pub(super) ci_low: f64,
    pub(super) ci_high: f64,
}

/// How intervals are drawn.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bootstrap {
    pub(super) resamples: usize,
    pub(super) confidence: f64,
    pub(super) seed: u64,
}

impl Bootstrap {
    /// The mean of `values` (not empty) and the percentile interval of the means of
    /// `resamples` resamples with replacement. `label` picks the resampling stream.
    pub(super) fn summarise(&self, values: &[f64], label: &str) -> Summary {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Summary { n, mean, ci_low: mean, ci_high: mean };
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let h = blake3::hash(label.as_bytes());
        rng.set_stream(u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes")));
        let mut means: Vec<f64> = (0..self.resamples)
            .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
            .collect();
        means.sort_by(f64::total_cmp);
        let tail = (1.0 - self.confidence) / 2.0;
        let at = |q: f64| means[((means.len() - 1) as f64 * q).round() as usize];
        Summary { n, mean, ci_low: at(tail), ci_high: at(1.0 - tail) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bootstrap = Bootstrap { resamples: 2000, confidence: 0.95, seed: 1 };

    #[test]
    fn one_value_is_its_own_interval_and_equal_values_have_no_width() {
        assert_eq!(B.summarise(&[2.5], "x"), Summary { n: 1, mean: 2.5, ci_low: 2.5, ci_high: 2.5 });
        let s = B.summarise(&[3.0, 3.0, 3.0], "x");
        assert_eq!((s.mean, s.ci_low, s.ci_high), (3.0, 3.0, 3.0));
    }

    #[test]
    fn the_interval_holds_the_mean_stays_within_the_values_and_narrows_with_more_seeds() {
        let few = [1.0, 2.0, 4.0];
        let s = B.summarise(&few, "loss");
        assert!((s.mean - 7.0 / 3.0).abs() < 1e-12);
        assert!(1.0 <= s.ci_low && s.ci_low < s.mean && s.mean < s.ci_high && s.ci_high <= 4.0, "{s:?}");
        // The same spread over many seeds: the interval of the mean is narrower.
        let many: Vec<f64> = (0..30).map(|i| few[i % 3]).collect();
        let m = B.summarise(&many, "loss");
        assert!(m.ci_high - m.ci_low < (s.ci_high - s.ci_low) / 2.0, "{m:?} vs {s:?}");
        // For 30 values the percentile interval is close to mean ± 1.96·sd/√n.
        let sd = (many.iter().map(|x| (x - m.mean).powi(2)).sum::<f64>() / 29.0).sqrt();
        let half = 1.96 * sd / 30f64.sqrt();
        assert!(((m.ci_high - m.ci_low) / 2.0 - half).abs() < 0.2 * half, "{m:?}, normal half-width {half}");
    }

    #[test]
    fn intervals_are_a_function_of_the_seed_and_the_label() {
        let v = [0.5, 1.5, 0.75, 2.0, 3.1, 0.2, 1.1];
        assert_eq!(B.summarise(&v, "a"), B.summarise(&v, "a"));
        assert_ne!(B.summarise(&v, "a").ci_low, B.summarise(&v, "b").ci_low);
    }
}
