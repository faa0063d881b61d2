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
        let drawn = sample_pairs(data.index(), pairs, negatives, &mut seeded_rng(seed))?;
        let (images, index_pairs) = distinct_images(data, &drawn);
        let scored = score_image_pairs(scorer, &images, &index_pairs, options)?;
        let p = scored.scores.iter().map(|&s| sigmoid(s)).collect();
        Ok((p, drawn.iter().map(|p| p.same).collect()))
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

fn sigmoid(x: f64) -> f64 {
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
