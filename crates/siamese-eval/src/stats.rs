//! Confidence intervals of accuracies.

use crate::EvalError;

/// The two-sided 95% normal quantile, Φ⁻¹(0.975).
pub const Z95: f64 = 1.959964;

/// The Wilson score interval of a binomial proportion `correct / trials` with normal
/// quantile `z` (use [`Z95`] for 95%):
///
/// ```text
/// centre = (p + z²/2n) / (1 + z²/n)
/// half   = z / (1 + z²/n) · √(p(1−p)/n + z²/4n²)
/// ```
///
/// Unlike the normal ("Wald") interval it stays inside [0, 1] and does not collapse
/// to a point at 0/n or n/n: 0/n gives exactly (0, ·) and n/n exactly (·, 1).
///
/// Zero trials carry no information, so `trials == 0` is an error (as are
/// `correct > trials` and a `z` that is not finite and positive) rather than the
/// uninformative (0, 1).
pub fn wilson_interval(correct: usize, trials: usize, z: f64) -> Result<(f64, f64), EvalError> {
    if trials == 0 {
        return Err(EvalError::Invalid(
            "no confidence interval for 0 trials".into(),
        ));
    }
    if correct > trials {
        return Err(EvalError::Invalid(format!(
            "{correct} correct out of {trials} trials"
        )));
    }
    if !(z.is_finite() && z > 0.0) {
        return Err(EvalError::Invalid(format!("quantile z = {z} must be positive")));
    }
    let n = trials as f64;
    let p = correct as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let low = if correct == 0 { 0.0 } else { (centre - half).max(0.0) };
    let high = if correct == trials { 1.0 } else { (centre + half).min(1.0) };
    Ok((low, high))
}
