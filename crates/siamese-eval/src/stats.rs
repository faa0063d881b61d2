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
        return Err(EvalError::Invalid(format!(
            "quantile z = {z} must be positive"
        )));
    }
    let n = trials as f64;
    let p = correct as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let low = if correct == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let high = if correct == trials {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    Ok((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: (f64, f64), b: (f64, f64)) -> bool {
        (a.0 - b.0).abs() < 1e-12 && (a.1 - b.1).abs() < 1e-12
    }

    #[test]
    fn known_values() {
        // Computed once in Python from the closed form with z = 1.959964.
        for (c, n, expected) in [
            (245, 400, (0.5639027290586998, 0.6589570046826405)),
            (155, 400, (0.3410429953173596, 0.43609727094130035)),
            (1, 2, (0.09453120463920084, 0.9054687953607992)),
            (0, 10, (0.0, 0.2775328030260577)),
            (10, 10, (0.7224671969739421, 1.0)),
            (0, 400, (0.0, 0.009512294482932589)),
            (320, 320, (0.9881378409837756, 1.0)),
            (1, 1, (0.2065493117918027, 1.0)),
        ] {
            let got = wilson_interval(c, n, Z95).unwrap();
            assert!(close(got, expected), "{c}/{n}: {got:?}");
        }
        // Symmetric: c/n and (n−c)/n mirror each other.
        let (l, h) = wilson_interval(245, 400, Z95).unwrap();
        let (l2, h2) = wilson_interval(155, 400, Z95).unwrap();
        assert!((l - (1.0 - h2)).abs() < 1e-12 && (h - (1.0 - l2)).abs() < 1e-12);
        // A wider quantile gives a wider interval.
        let (l3, h3) = wilson_interval(245, 400, 2.575829).unwrap();
        assert!(l3 < l && h3 > h);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(wilson_interval(0, 7, Z95).unwrap().0, 0.0);
        assert_eq!(wilson_interval(7, 7, Z95).unwrap().1, 1.0);
        assert!(wilson_interval(0, 0, Z95).is_err());
        assert!(wilson_interval(5, 4, Z95).is_err());
        assert!(wilson_interval(1, 4, 0.0).is_err());
        assert!(wilson_interval(1, 4, f64::NAN).is_err());
    }
}
