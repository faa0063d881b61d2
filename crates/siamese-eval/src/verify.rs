//! Verification: binary same/different accuracy on balanced pairs (Koch et al.'s
//! Table 1 style, and the PyTorch reference's "92%" metric), at the probability
//! threshold 0.5 and at the threshold that is best on the validation alphabets.

use serde::Serialize;
use siamese_data::sample::{NegativeFrom, Pair, sample_pairs};
use siamese_data::{Dataset, GrayImage, seeded_rng};

use crate::runner::{EvalOptions, score_image_pairs};
use crate::stats::{Z95, wilson_interval};
use crate::{EvalError, OneShotScorer};

/// Accuracy of one threshold on one set of pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdAccuracy {
    /// On the probability p = σ(score): "same" when p > threshold.
    pub threshold: f64,
    pub correct: usize,
    pub pairs: usize,
    pub accuracy: f64,
    pub ci95_low: f64,
    pub ci95_high: f64,
}

/// Verification on the test pairs, with the threshold chosen on validation pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub method: String,
    pub seed: u64,
    pub negatives: NegativeFrom,
    /// Test pairs at p > 0.5.
    pub at_half: ThresholdAccuracy,
    /// Test pairs at the threshold that is most accurate on the validation pairs.
    pub at_validation_threshold: ThresholdAccuracy,
    /// That threshold's accuracy on the validation pairs themselves.
    pub validation: ThresholdAccuracy,
}

/// Scores `pairs` balanced same/different pairs of `validation` and of `test` (drawn
/// with `seeded_rng(seed)` and `seeded_rng(seed + 1)`; negatives as `negatives`),
/// each image embedded once. The scorer's scores are taken as logits.
pub fn verify<S: OneShotScorer + ?Sized>(
    scorer: &S,
    validation: &Dataset,
    test: &Dataset,
    pairs: usize,
    negatives: NegativeFrom,
    seed: u64,
    options: &EvalOptions,
) -> Result<VerifyReport, EvalError> {
    if pairs == 0 {
        return Err(EvalError::Invalid(
            "verification needs at least one pair".into(),
        ));
    }
    let probabilities = |data: &Dataset, seed: u64| -> Result<(Vec<f64>, Vec<bool>), EvalError> {
        let (logits, same) = pair_logits(scorer, data, pairs, negatives, seed, options)?;
        Ok((logits.into_iter().map(sigmoid).collect(), same))
    };
    let (val_p, val_same) = probabilities(validation, seed)?;
    let (test_p, test_same) = probabilities(test, seed.wrapping_add(1))?;
    let threshold = best_threshold(&val_p, &val_same);
    Ok(VerifyReport {
        method: scorer.name(),
        seed,
        negatives,
        at_half: accuracy_at(&test_p, &test_same, 0.5)?,
        at_validation_threshold: accuracy_at(&test_p, &test_same, threshold)?,
        validation: accuracy_at(&val_p, &val_same, threshold)?,
    })
}

/// The scorer's logits on `pairs` balanced same/different pairs of `data` (drawn
/// with `seeded_rng(seed)`; negatives as `negatives`), each image embedded once, and
/// whether each pair is "same".
pub fn pair_logits<S: OneShotScorer + ?Sized>(
    scorer: &S,
    data: &Dataset,
    pairs: usize,
    negatives: NegativeFrom,
    seed: u64,
    options: &EvalOptions,
) -> Result<(Vec<f64>, Vec<bool>), EvalError> {
    let drawn = sample_pairs(data.index(), pairs, negatives, &mut seeded_rng(seed))?;
    let (images, index_pairs) = distinct_images(data, &drawn);
    let scored = score_image_pairs(scorer, &images, &index_pairs, options)?;
    Ok((scored.scores, drawn.iter().map(|p| p.same).collect()))
}

/// Platt scaling: the `(scale, shift)` that make `σ(scale · logit + shift)` the
/// maximum-likelihood probability of "same" on these pairs (logistic regression on
/// the one logit, by Newton's method). A positive scale keeps every ranking, so
/// one-shot accuracy is unchanged; only the probabilities move. NaN logits are
/// skipped; an error if fewer than one pair of each kind remains.
pub fn fit_platt(logits: &[f64], same: &[bool]) -> Result<(f64, f64), EvalError> {
    let data: Vec<(f64, f64)> = logits
        .iter()
        .zip(same)
        .filter(|(l, _)| l.is_finite())
        .map(|(&l, &s)| (l, if s { 1.0 } else { 0.0 }))
        .collect();
    let positives = data.iter().filter(|d| d.1 == 1.0).count();
    if positives == 0 || positives == data.len() {
        return Err(EvalError::Invalid(
            "calibration needs pairs of both kinds".into(),
        ));
    }
    let (mut a, mut b) = (1.0f64, 0.0f64);
    for _ in 0..100 {
        // Gradient and Hessian of the mean negative log-likelihood, with a tiny ridge
        // that keeps the Newton step defined on separable data.
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
        for &(x, y) in &data {
            let p = sigmoid(a * x + b);
            let w = p * (1.0 - p);
            ga += (p - y) * x;
            gb += p - y;
            haa += w * x * x;
            hab += w * x;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-300 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        // Damped: at most a doubling of the scale per step.
        let limit = (a.abs().max(1.0)) / (da.abs().max(1e-300));
        let t = limit.min(1.0);
        a -= t * da;
        b -= t * db;
        if (t * da).abs() < 1e-10 && (t * db).abs() < 1e-10 {
            break;
        }
    }
    if !(a.is_finite() && b.is_finite()) {
        return Err(EvalError::Invalid(format!(
            "calibration did not converge (scale {a}, shift {b})"
        )));
    }
    Ok((a, b))
}

/// The logistic function: the head's probability of "same character" for a logit.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The distinct images of `pairs` and the pairs as indices into them.
fn distinct_images<'a>(
    data: &'a Dataset,
    pairs: &[Pair],
) -> (Vec<&'a GrayImage>, Vec<(usize, usize)>) {
    let mut row_of = vec![usize::MAX; data.len()];
    let mut images = Vec::new();
    let mut row = |i: usize, images: &mut Vec<&'a GrayImage>| {
        if row_of[i] == usize::MAX {
            row_of[i] = images.len();
            images.push(data.image(i));
        }
        row_of[i]
    };
    let index_pairs = pairs
        .iter()
        .map(|p| (row(p.a, &mut images), row(p.b, &mut images)))
        .collect();
    (images, index_pairs)
}

/// Accuracy when "same" is predicted for p > threshold. NaN is never correct.
pub fn accuracy_at(
    p: &[f64],
    same: &[bool],
    threshold: f64,
) -> Result<ThresholdAccuracy, EvalError> {
    let correct = p
        .iter()
        .zip(same)
        .filter(|&(&p, &s)| !p.is_nan() && (p > threshold) == s)
        .count();
    let (ci95_low, ci95_high) = wilson_interval(correct, p.len(), Z95)?;
    Ok(ThresholdAccuracy {
        threshold,
        correct,
        pairs: p.len(),
        accuracy: correct as f64 / p.len() as f64,
        ci95_low,
        ci95_high,
    })
}

/// The threshold with the highest accuracy: candidates are the midpoints between
/// consecutive distinct probabilities (and 0.5); ties go to the one nearest 0.5.
pub fn best_threshold(p: &[f64], same: &[bool]) -> f64 {
    let mut sorted: Vec<f64> = p.iter().copied().filter(|x| !x.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    let candidates = std::iter::once(0.5).chain(sorted.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    let score = |t: f64| {
        p.iter()
            .zip(same)
            .filter(|&(&p, &s)| !p.is_nan() && (p > t) == s)
            .count()
    };
    let mut best: (usize, f64) = (score(0.5), 0.5);
    for t in candidates {
        let s = score(t);
        if s > best.0 || (s == best.0 && (t - 0.5).abs() < (best.1 - 0.5).abs()) {
            best = (s, t);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_scaling_recovers_a_known_calibration() {
        // Logits x whose true probability of "same" is σ(2x − 1): the fit finds (2, −1).
        let (mut logits, mut same) = (Vec::new(), Vec::new());
        let mut state = 3u64;
        for i in 0..20_000 {
            let x = (i % 400) as f64 / 100.0 - 2.0;
            let p = sigmoid(2.0 * x - 1.0);
            // A uniform draw in [0, 1) from a linear congruential generator.
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            logits.push(x);
            same.push(u < p);
        }
        let (a, b) = fit_platt(&logits, &same).unwrap();
        assert!((a - 2.0).abs() < 0.1 && (b + 1.0).abs() < 0.1, "{a} {b}");
        assert!(fit_platt(&[1.0, 2.0], &[true, true]).is_err());
        // Separable data: a large but finite scale, the order kept.
        let (a, _) = fit_platt(&[-1.0, -0.5, 0.5, 1.0], &[false, false, true, true]).unwrap();
        assert!(a > 0.0 && a.is_finite());
    }

    #[test]
    fn threshold_is_chosen_for_accuracy() {
        let p = [0.1, 0.2, 0.3, 0.35, 0.9];
        let same = [false, false, true, true, true];
        let t = best_threshold(&p, &same);
        assert!(t > 0.2 && t < 0.3, "{t}");
        assert_eq!(accuracy_at(&p, &same, t).unwrap().correct, 5);
        assert_eq!(accuracy_at(&p, &same, 0.5).unwrap().correct, 3);
        // NaN is wrong at any threshold.
        assert_eq!(accuracy_at(&[f64::NAN], &[false], 0.5).unwrap().correct, 0);
    }
}
